//! Faults during `fsfleet harden`, checked afterwards on the hosts and in the vault:
//! - the SSH connection cut at each step boundary in turn (before the backup, at the config
//!   edits, after the firewall just before the reload, between reload and fs_cli, before verify,
//!   during a rotation): the configs are all old or all new, every Event Socket password
//!   FreeSWITCH accepts is in the vault, and a re-run completes the host;
//! - the controller SIGKILLed mid-run: the vault is intact JSON holding every pending and active
//!   secret; a re-run completes every host.
//!
//! The faults are real: the host's sshd session processes are killed (every connection of fsfleet
//! drops at once), or the fsfleet process is killed, when fsfleet prints the stage line at -v.

mod common;
mod reliability_support;

use common::Fleet;
use reliability_support::{
    EDITED, Fault, STOCK_ESL, active_esl_passwords, check_complete, check_consistent,
    run_with_faults, sums, vault,
};

#[test]
fn a_cut_connection_at_any_step_boundary_never_mixes_configs_or_loses_a_password() {
    let fleet = Fleet::fresh("reliability-cut", 3);
    let _ = std::fs::remove_dir_all(fleet.dir.join(".fsfleet"));
    let names: Vec<&str> = fleet.hosts.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["fs01", "fs02", "fs03"]);

    // Round 1, stock hosts: cut before the backup, at the config edits, and after the firewall
    // (the reload stage starts once packages, fail2ban and ufw are done).
    let before: Vec<Vec<String>> = fleet.hosts.iter().map(|h| sums(&fleet, h)).collect();
    let cut = run_with_faults(
        &fleet,
        &["harden", "--format", "json"],
        &[
            ("fs01", "backing up the config", Fault::CutSsh),
            ("fs02", "writing config files", Fault::CutSsh),
            (
                "fs03",
                "reloading FreeSWITCH over the Event Socket",
                Fault::CutSsh,
            ),
        ],
    );
    eprintln!("round 1 with cuts: {:?}", cut.elapsed);
    assert_eq!(cut.code, Some(4), "{}", cut.text());
    for (name, status) in cut.statuses() {
        assert!(
            status == "failed" || status == "unreachable",
            "{name} was cut but is {status}:\n{}",
            cut.text()
        );
    }
    for (h, b) in fleet.hosts.iter().zip(&before) {
        check_consistent(&fleet, h, b, EDITED, STOCK_ESL);
    }
    let again = run_with_faults(&fleet, &["harden", "--format", "json"], &[]);
    eprintln!("round 1 re-run: {:?}", again.elapsed);
    assert_eq!(again.code, Some(0), "re-run after cuts:\n{}", again.text());
    for h in &fleet.hosts {
        check_complete(&fleet, h);
    }

    // Round 2, a rotation of hardened hosts: cut between reload and fs_cli, before verify, and
    // at the config edits.
    let old = active_esl_passwords(&fleet);
    let before: Vec<Vec<String>> = fleet.hosts.iter().map(|h| sums(&fleet, h)).collect();
    let cut = run_with_faults(
        &fleet,
        &["harden", "--rotate", "--format", "json"],
        &[
            ("fs01", "writing fs_cli configs", Fault::CutSsh),
            ("fs02", "verifying", Fault::CutSsh),
            ("fs03", "writing config files", Fault::CutSsh),
        ],
    );
    eprintln!("round 2 with cuts: {:?}", cut.elapsed);
    assert_eq!(cut.code, Some(4), "{}", cut.text());
    let rotated = ["vars.xml", "autoload_configs/event_socket.conf.xml"];
    for ((h, b), o) in fleet.hosts.iter().zip(&before).zip(&old) {
        check_consistent(&fleet, h, b, &rotated, o);
    }
    let again = run_with_faults(&fleet, &["harden", "--format", "json"], &[]);
    assert_eq!(again.code, Some(0), "re-run after cuts:\n{}", again.text());
    for h in &fleet.hosts {
        check_complete(&fleet, h);
    }
    // No stage file of the cut runs is left in the config dirs.
    for h in &fleet.hosts {
        let left = fleet.ssh_root(
            h,
            &format!("find {} -name '*.fsfleet-stage-*' | wc -l", h.conf_dir),
        );
        assert_eq!(left.trim(), "0", "{}: stage files left behind", h.name);
    }
}

#[test]
fn sigkill_of_the_controller_keeps_the_vault_whole_and_a_re_run_completes() {
    let fleet = Fleet::fresh("reliability-kill", 2);
    let _ = std::fs::remove_dir_all(fleet.dir.join(".fsfleet"));
    // The system steps are not what this is about; skipping them keeps the runs short.
    let args = [
        "harden",
        "--skip",
        "packages,fail2ban,firewall",
        "--format",
        "json",
    ];
    let before: Vec<Vec<String>> = fleet.hosts.iter().map(|h| sums(&fleet, h)).collect();
    let killed = run_with_faults(
        &fleet,
        &args,
        &[("fs01", "writing config files", Fault::KillController)],
    );
    assert_eq!(
        killed.code,
        None,
        "fsfleet was not killed:\n{}",
        killed.text()
    );
    for (h, b) in fleet.hosts.iter().zip(&before) {
        check_consistent(&fleet, h, b, EDITED, STOCK_ESL);
    }
    let v = vault(&fleet);
    let pending = &v["hosts"]["fs01"]["creds"]["esl_password"]["pending"]["value"];
    assert!(
        pending.as_str().is_some_and(|p| p.len() >= 28),
        "fs01 reached the config stage: its new password must be pending in the vault: {}",
        v["hosts"]["fs01"]["creds"]["esl_password"]["active"]["run_id"]
    );

    // Killed again, during the reload of a rotation.
    let mut rotate = args.to_vec();
    rotate.push("--rotate");
    let again = run_with_faults(&fleet, &args, &[]);
    assert_eq!(again.code, Some(0), "{}", again.text());
    let before: Vec<Vec<String>> = fleet.hosts.iter().map(|h| sums(&fleet, h)).collect();
    let old = active_esl_passwords(&fleet);
    let killed = run_with_faults(
        &fleet,
        &rotate,
        &[(
            "fs02",
            "reloading FreeSWITCH over the Event Socket",
            Fault::KillController,
        )],
    );
    assert_eq!(killed.code, None, "{}", killed.text());
    let rotated = ["vars.xml", "autoload_configs/event_socket.conf.xml"];
    for ((h, b), o) in fleet.hosts.iter().zip(&before).zip(&old) {
        check_consistent(&fleet, h, b, &rotated, o);
    }
    let done = run_with_faults(&fleet, &args, &[]);
    assert_eq!(done.code, Some(0), "{}", done.text());
    for h in &fleet.hosts {
        check_complete(&fleet, h);
    }
    // The vault is private.
    let mode = std::fs::metadata(fleet.dir.join(".fsfleet/vault.json")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.permissions().mode() & 0o777, 0o600);
}

/// `fsfleet rollback` cut while it writes the files and while FreeSWITCH reloads: each host's
/// configs are all the hardened ones or all the stock ones, and the next rollback finishes the
/// job (files, FreeSWITCH on the restored password, fs_cli, the vault).
#[test]
fn a_cut_rollback_leaves_old_or_new_and_the_next_one_finishes() {
    let fleet = Fleet::fresh("reliability-rollback", 2);
    let _ = std::fs::remove_dir_all(fleet.dir.join(".fsfleet"));
    let stock: Vec<Vec<String>> = fleet.hosts.iter().map(|h| sums(&fleet, h)).collect();
    let run = run_with_faults(&fleet, &["harden", "--format", "json"], &[]);
    assert_eq!(run.code, Some(0), "{}", run.text());
    let hardened: Vec<Vec<String>> = fleet.hosts.iter().map(|h| sums(&fleet, h)).collect();

    let cut = run_with_faults(
        &fleet,
        &["rollback", "--format", "json"],
        &[
            ("fs01", "restoring the files", Fault::CutSsh),
            (
                "fs02",
                "reloading FreeSWITCH over the Event Socket",
                Fault::CutSsh,
            ),
        ],
    );
    assert_eq!(cut.code, Some(4), "{}", cut.text());
    for (name, status) in cut.statuses() {
        assert!(
            status == "failed" || status == "unreachable",
            "{name} was cut but is {status}:\n{}",
            cut.text()
        );
    }
    for ((h, s), hd) in fleet.hosts.iter().zip(&stock).zip(&hardened) {
        let now = sums(&fleet, h);
        assert!(
            now == *s || now == *hd,
            "{}: a mix of stock and hardened files after the cut",
            h.name
        );
    }

    let again = run_with_faults(&fleet, &["rollback", "--format", "json"], &[]);
    assert_eq!(again.code, Some(0), "{}", again.text());
    let v = vault(&fleet);
    for (h, s) in fleet.hosts.iter().zip(&stock) {
        assert_eq!(sums(&fleet, h), *s, "{}: not back to stock", h.name);
        let status = fleet.ssh_root(h, "fs_cli -x status");
        assert!(status.contains("is ready"), "{}: {status}", h.name);
        assert_eq!(
            v["hosts"][&h.name]["creds"]["esl_password"]["active"]["value"], STOCK_ESL,
            "{}",
            h.name
        );
    }
}
