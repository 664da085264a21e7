//! The SSH connection cut during `fsfleet harden --level production`, at each stage where a
//! production step acts, on one fleet of three hosts reused across rounds (each round puts the
//! hosts back to the baseline behind fsfleet's back: the config tree from a tarball, FreeSWITCH
//! restarted so it runs that tree and loads every module again).
//!
//! Every production step (remove-stock-users, dialplan, voicemail-pins, per-user-passwords,
//! sip-protocol, modules, file-modes, tls with a certificate made by `--self-signed`) is a config
//! step: its edits go out in the run's one
//! all-or-nothing config write ("writing config files"), its new PINs and passwords to the vault
//! as pending just before it, and its reloads come in the reload stage, one progress line per
//! command (`reloadxml`, `sofia profile NAME rescan`, `sofia profile NAME restart`, `unload
//! mod_x`). [`CUTS`] names each of
//! those stages, plus before the backup and before verify; the rounds cut each in turn, one host
//! per stage, with fsfleet held still while the connection drops ([`Fault::CutSshAtStage`]), so
//! the cut lands within milliseconds of the stage line. A reload command takes less than that on
//! the stand-in: a cut at `reloadxml` stops the run at the rescan after it, one at a rescan at
//! the unload after it, one at an unload at its `module_exists` (the test prints each cut run's
//! error, which names where it stopped), and the cut before the reload stops it before any
//! command: every gap between the reload's commands is cut.
//!
//! After each cut, on every host: the config tree (content, owner, mode of every file) is
//! entirely the old one or entirely what the completing run writes, never a mix; every PIN and
//! password the directory holds that the run changed is in the vault (the operator never loses
//! a phone's credential). A re-run without faults then exits 0, leaves nothing pending in the
//! vault (its values are the files'), a `--check` plans nothing, the audit's production controls
//! pass (FS-SIP-03 names only the users the inventory keeps, so the PIN and password steps have
//! users to act on), and FreeSWITCH runs what is on disk: the unused modules are unloaded, a
//! disabled stock user is refused at REGISTER, a kept user registers with the vault's password
//! and not with the shared one.
//!
//! The last pass cuts a run whose production steps set no secret (the PIN and password steps
//! skipped, as when only the dialplan or the users change): nothing pending in the vault then
//! says the run was interrupted, yet the re-run must still make FreeSWITCH reload what the cut
//! run wrote.
//!
//! The baseline's system steps (packages, fail2ban, firewall) are skipped: they are not
//! production steps, and tests/reliability_cut.rs cuts them.

mod common;
mod reliability_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use common::{Fleet, Register, TestHost};
use reliability_support::{Fault, run_with_faults, vault};

const FLEET: &str = "rel-prod-cut";
/// Stock users remove-stock-users keeps (inventory `keep_users`): the users the PIN and
/// password steps then change.
const KEEP: [&str; 3] = ["1000", "1001", "1002"];
const SYSTEM: &str = "packages,fail2ban,firewall";

/// Where a production run is cut: the stage line (fsfleet -v), and which steps' work it
/// interrupts. Rounds take them one per host, in order; a new step's stage is one more line.
const CUTS: &[(&str, &str)] = &[
    (
        "backing up the config",
        "every step, before anything changes",
    ),
    (
        "writing config files",
        "every step's edits (the one write), PINs and passwords pending in the vault",
    ),
    (
        "reloading FreeSWITCH over the Event Socket",
        "every reload, before the Event Socket is reached",
    ),
    (
        "reloading FreeSWITCH: reloadxml",
        "remove-stock-users, dialplan, voicemail-pins, per-user-passwords",
    ),
    (
        "reloading FreeSWITCH: sofia profile internal rescan",
        "sip-protocol",
    ),
    ("reloading FreeSWITCH: unload mod_verto", "modules"),
    ("verifying", "pending PINs and passwords made active"),
    (
        "reloading FreeSWITCH: sofia profile internal-ipv6 rescan",
        "sip-protocol (a profile the testbed does not run)",
    ),
    ("reloading FreeSWITCH: unload mod_signalwire", "modules"),
    (
        "reloading FreeSWITCH: sofia profile internal restart",
        "tls (the profile binds its TLS port on restart)",
    ),
    (
        "reloading FreeSWITCH: sofia profile external restart",
        "tls",
    ),
];

/// The same for a run that sets no secret (`--skip voicemail-pins,per-user-passwords`).
const CUTS_NO_SECRET: &[(&str, &str)] = &[
    (
        "reloading FreeSWITCH over the Event Socket",
        "remove-stock-users, dialplan: files written, nothing reloaded",
    ),
    (
        "reloading FreeSWITCH: sofia profile internal rescan",
        "sip-protocol",
    ),
    ("reloading FreeSWITCH: unload mod_verto", "modules"),
];

/// Content, owner and mode of every file of the config tree, by path (stage files aside: the
/// next run's preflight removes them; the end of the test checks that).
fn tree(fleet: &Fleet, h: &TestHost) -> BTreeMap<String, String> {
    let out = fleet.ssh_root(
        h,
        &format!(
            "cd {} && find . -type f ! -name '*.fsfleet-stage-*' -print0 | sort -z \
             | xargs -0 stat -c 'M %n %a %U:%G' && find . -type f ! -name '*.fsfleet-stage-*' \
             -print0 | sort -z | xargs -0 sha256sum",
            h.conf_dir
        ),
    );
    let mut t: BTreeMap<String, String> = BTreeMap::new();
    for l in out.lines() {
        if let Some(rest) = l.strip_prefix("M ") {
            let (path, meta) = rest.split_once(' ').expect("stat line");
            t.entry(path.to_string()).or_default().push_str(meta);
        } else if let Some((sum, path)) = l.split_once("  ") {
            t.entry(path.to_string())
                .or_default()
                .push_str(&format!(" {sum}"));
        }
    }
    t
}

fn changed(before: &BTreeMap<String, String>, now: &BTreeMap<String, String>) -> BTreeSet<String> {
    before
        .keys()
        .chain(now.keys())
        .filter(|p| before.get(*p) != now.get(*p))
        .cloned()
        .collect()
}

/// Every (user id, kind, value) of a `password` or `vm-password` param in directory/default/
/// (the user is the `<user id>` before the param: skinny-example.xml defines SEP001120AABBCC).
fn user_secrets(fleet: &Fleet, h: &TestHost) -> BTreeSet<(String, &'static str, String)> {
    let out = fleet.ssh_root(
        h,
        &format!(
            "cd {}/directory/default && grep -o '<user id=\"[^\"]*\"\\|name=\"[a-z-]*password\" value=\"[^\"]*\"' *.xml || true",
            h.conf_dir
        ),
    );
    let mut user = String::new();
    let mut out_set = BTreeSet::new();
    for l in out.lines() {
        let Some((_, item)) = l.split_once(':') else {
            continue;
        };
        if let Some(id) = item.strip_prefix("<user id=\"") {
            user = id.trim_end_matches('"').to_string();
            continue;
        }
        let kind = if item.starts_with("name=\"vm-password\"") {
            "vm_password"
        } else if item.starts_with("name=\"password\"") {
            "sip_password"
        } else {
            continue;
        };
        if let Some(value) = item
            .split("value=\"")
            .nth(1)
            .and_then(|v| v.strip_suffix('"'))
        {
            out_set.insert((user.clone(), kind, value.to_string()));
        }
    }
    out_set
}

/// Every value (pending, active, previous) the vault holds for a user's credential.
fn vault_user_values(v: &serde_json::Value, host: &str, user: &str, kind: &str) -> Vec<String> {
    let c = &v["hosts"][host]["users"][user][kind];
    ["pending", "active", "previous"]
        .iter()
        .filter_map(|s| c[*s]["value"].as_str().map(str::to_string))
        .collect()
}

/// Put a host back to the baseline: the config tree from the tarball, FreeSWITCH restarted
/// (it reads modules.conf.xml only at startup; the registrations go with it).
fn reset(fleet: &Fleet, h: &TestHost) {
    fleet.ssh_root(
        h,
        &format!(
            "rm -rf {c} && tar -C / -xpf /root/baseline-conf.tar && systemctl restart freeswitch \
             && for i in $(seq 1 100); do fs_cli -x status 2>/dev/null | grep -q 'is ready' && exit 0; sleep 0.1; done; \
             echo FreeSWITCH did not come back >&2; exit 1",
            c = h.conf_dir
        ),
    );
}

struct Pass {
    /// The steps the run skips (`--skip`).
    skip: String,
    /// The run sets PINs and per-user passwords.
    secrets: bool,
}

impl Pass {
    fn args(&self) -> Vec<&str> {
        vec![
            "harden",
            "--level",
            "production",
            // tls needs a certificate: one made on the controller, the same in every round.
            "--self-signed",
            "--skip",
            &self.skip,
            "--format",
            "json",
        ]
    }
}

/// One round: the hosts at the baseline, the production run cut on each host at its stage (a
/// host past the end of `cuts` runs uncut), the checks of the cut state, the re-run and the
/// checks of the complete host.
fn round(fleet: &Fleet, pass: &Pass, cuts: &[(&str, &str)], baseline: &[BTreeMap<String, String>]) {
    let t = Instant::now();
    let cut_of = |i: usize| cuts.get(i).copied().unwrap_or(("", "not cut"));
    let faults: Vec<(&str, &str, Fault)> = fleet
        .hosts
        .iter()
        .zip(cuts)
        .map(|(h, (stage, _))| (h.name.as_str(), *stage, Fault::CutSshAtStage))
        .collect();
    let secrets_before: Vec<_> = fleet.hosts.iter().map(|h| user_secrets(fleet, h)).collect();
    let cut = run_with_faults(fleet, &pass.args(), &faults);
    assert_eq!(cut.code, Some(4), "{}", cut.text());
    let st = cut.statuses();
    for (i, h) in fleet.hosts.iter().enumerate() {
        let (stage, _) = cut_of(i);
        let status = &st[&h.name];
        let ok = if i < cuts.len() {
            status == "failed" || status == "unreachable"
        } else {
            status == "changed"
        };
        assert!(
            ok,
            "{} (cut at {stage:?}) is {status}:\n{}",
            h.name,
            cut.text()
        );
    }
    let cut_secs = cut.elapsed;
    for h in cut.json()["hosts"].as_array().into_iter().flatten() {
        eprintln!(
            "  cut run: {} {} in {} ms: {}",
            h["name"].as_str().unwrap_or(""),
            h["status"].as_str().unwrap_or(""),
            h["elapsed_ms"],
            h["error"].as_str().unwrap_or("")
        );
    }

    // The cut state: what changed, and every changed PIN or password in the vault.
    let v = vault(fleet);
    let mut cut_changes = Vec::new();
    for ((h, base), before) in fleet.hosts.iter().zip(baseline).zip(&secrets_before) {
        cut_changes.push(changed(base, &tree(fleet, h)));
        for (user, kind, value) in user_secrets(fleet, h).difference(before) {
            assert!(
                vault_user_values(&v, &h.name, user, kind).contains(value),
                "{}: the {kind} of user {user} in the config is not in the vault",
                h.name
            );
        }
    }

    // The re-run completes every host.
    let again = run_with_faults(fleet, &pass.args(), &[]);
    assert_eq!(again.code, Some(0), "re-run after cuts:\n{}", again.text());
    for (i, ((h, base), was)) in fleet
        .hosts
        .iter()
        .zip(baseline)
        .zip(&cut_changes)
        .enumerate()
    {
        let (stage, what) = cut_of(i);
        let done = changed(base, &tree(fleet, h));
        assert!(!done.is_empty(), "{}: the re-run changed nothing", h.name);
        assert!(
            was.is_empty() || *was == done,
            "{}: cut at {stage:?} ({what}): a MIX of old and new config files: the cut run \
             changed {was:?}, the complete one {done:?}",
            h.name
        );
        eprintln!(
            "{}: cut at {stage:?} ({what}): left the {} config",
            h.name,
            if was.is_empty() { "old" } else { "new" }
        );
    }
    check_complete(fleet, pass);
    eprintln!(
        "round with cuts at {:?}: cut run {:?}, round {:?}",
        cuts.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        cut_secs,
        t.elapsed()
    );
}

/// A complete host: the vault holds exactly the files' PINs and passwords (nothing pending), a
/// `--check` plans nothing, the audit's production controls pass, FreeSWITCH runs the files.
fn check_complete(fleet: &Fleet, pass: &Pass) {
    let v = vault(fleet);
    for h in &fleet.hosts {
        let users = v["hosts"][&h.name]["users"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for (user, creds) in &users {
            for (kind, c) in creds.as_object().into_iter().flatten() {
                assert!(
                    c["pending"].is_null(),
                    "{}: the {kind} of user {user} is left pending",
                    h.name
                );
            }
        }
        let secrets = user_secrets(fleet, h);
        for user in KEEP {
            for kind in ["vm_password", "sip_password"] {
                let file: Vec<&String> = secrets
                    .iter()
                    .filter(|(u, k, _)| u == user && *k == kind)
                    .map(|(_, _, v)| v)
                    .collect();
                let active = v["hosts"][&h.name]["users"][user][kind]["active"]["value"].as_str();
                if pass.secrets {
                    assert_eq!(
                        file.len(),
                        1,
                        "{}: user {user} has {} {kind}s",
                        h.name,
                        file.len()
                    );
                    assert_eq!(
                        active,
                        Some(file[0].as_str()),
                        "{}: the vault's active {kind} of user {user} is not the file's",
                        h.name
                    );
                }
            }
        }
    }
    let mut check = pass.args();
    check.push("--check");
    let plan = run_with_faults(fleet, &check, &[]);
    assert_eq!(plan.code, Some(0), "{}", plan.text());
    for (name, status) in plan.statuses() {
        assert_eq!(
            status,
            "ok",
            "{name}: --check after the re-run:\n{}",
            plan.text()
        );
    }

    let audit = run_with_faults(fleet, &["audit", "--format", "json"], &[]);
    let doc = audit.json();
    let mut fixed = vec!["FS-DP-01", "FS-DP-02", "FS-DP-03", "FS-MOD-01", "FS-SIP-07"];
    if pass.secrets {
        fixed.extend(["FS-SIP-04", "FS-SIP-05"]);
    }
    for host in doc["hosts"].as_array().expect("audit hosts") {
        let name = host["name"].as_str().unwrap_or("");
        let results = host["results"].as_array().expect("results");
        let result = |id: &str| {
            results
                .iter()
                .find(|r| r["id"] == id)
                .unwrap_or_else(|| panic!("{name}: no {id} in the audit"))
                .clone()
        };
        for id in &fixed {
            let r = result(id);
            assert_eq!(r["status"], "pass", "{name} {id}: {r}");
        }
        // The users the inventory keeps, and only they, are left of the stock ones.
        let r = result("FS-SIP-03");
        assert_eq!(r["status"], "fail", "{name}: {r}");
        assert_eq!(
            r["evidence"][0], "stock users still defined in directory/default/: 1000-1002",
            "{name}: FS-SIP-03 names {KEEP:?}, the kept users (a range)"
        );
    }

    // FreeSWITCH runs what is on disk.
    let attacker = fleet.attacker();
    let v = vault(fleet);
    for h in &fleet.hosts {
        let exists = fleet.ssh_root(
            h,
            "fs_cli -x 'module_exists mod_verto'; echo; fs_cli -x 'module_exists mod_signalwire'",
        );
        assert_eq!(
            exists.split_whitespace().collect::<Vec<_>>(),
            ["false", "false"],
            "{}: modules still loaded",
            h.name
        );
        let shared = v["hosts"][&h.name]["creds"]["sip_password"]["active"]["value"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: no shared SIP password in the vault", h.name))
            .to_string();
        assert_eq!(
            attacker.register(&h.address, 5060, "1019", &shared),
            Register::Forbidden,
            "{}: the disabled stock user 1019 still registers (FreeSWITCH did not reload the directory)",
            h.name
        );
        if pass.secrets {
            let own = v["hosts"][&h.name]["users"]["1001"]["sip_password"]["active"]["value"]
                .as_str()
                .unwrap_or_else(|| panic!("{}: no password of 1001 in the vault", h.name))
                .to_string();
            assert_eq!(
                attacker.register(&h.address, 5060, "1001", &shared),
                Register::Forbidden,
                "{}: 1001 still registers with the shared password",
                h.name
            );
            assert_eq!(
                attacker.register(&h.address, 5060, "1001", &own),
                Register::Ok,
                "{}: 1001 does not register with the vault's password",
                h.name
            );
        }
    }
}

#[test]
fn a_cut_connection_during_each_production_step_leaves_old_or_new_and_a_re_run_completes() {
    let started = Instant::now();
    let fleet = Fleet::fresh(FLEET, 3);
    let _ = std::fs::remove_dir_all(fleet.dir.join(".fsfleet"));
    // keep_users in [defaults]: the PIN and password steps need users to act on.
    let inv = std::fs::read_to_string(fleet.inventory()).expect("inventory");
    let keep = format!(
        "host_key_policy = \"strict\"\nkeep_users = [{}]",
        KEEP.map(|u| format!("\"{u}\"")).join(", ")
    );
    assert!(inv.contains("host_key_policy = \"strict\"\n"), "{inv}");
    std::fs::write(
        fleet.inventory(),
        inv.replacen("host_key_policy = \"strict\"", &keep, 1),
    )
    .expect("write inventory");

    // The baseline, once; its config tree is where every round starts.
    let base = run_with_faults(
        &fleet,
        &["harden", "--skip", SYSTEM, "--format", "json"],
        &[],
    );
    assert_eq!(base.code, Some(0), "{}", base.text());
    let baseline: Vec<BTreeMap<String, String>> = fleet
        .hosts
        .iter()
        .map(|h| {
            fleet.ssh_root(
                h,
                &format!(
                    "tar -C / -cpf /root/baseline-conf.tar {}",
                    h.conf_dir.trim_start_matches('/')
                ),
            );
            tree(&fleet, h)
        })
        .collect();
    eprintln!("fleet and baseline: {:?}", started.elapsed());

    let full = Pass {
        skip: SYSTEM.to_string(),
        secrets: true,
    };
    let no_secret = Pass {
        skip: format!("{SYSTEM},voicemail-pins,per-user-passwords"),
        secrets: false,
    };
    let n = fleet.hosts.len();
    let rounds = CUTS
        .chunks(n)
        .map(|c| (&full, c))
        .chain(CUTS_NO_SECRET.chunks(n).map(|c| (&no_secret, c)));
    for (i, (pass, cuts)) in rounds.enumerate() {
        if i > 0 {
            for (h, base) in fleet.hosts.iter().zip(&baseline) {
                reset(&fleet, h);
                assert_eq!(
                    tree(&fleet, h),
                    *base,
                    "{}: not back to the baseline",
                    h.name
                );
            }
        }
        round(&fleet, pass, cuts, &baseline);
    }

    // No stage file of the cut runs is left in the config dirs.
    for h in &fleet.hosts {
        let left = fleet.ssh_root(
            h,
            &format!("find {} -name '*.fsfleet-stage-*' | wc -l", h.conf_dir),
        );
        assert_eq!(left.trim(), "0", "{}: stage files left behind", h.name);
    }
    eprintln!("whole test: {:?}", started.elapsed());
}
