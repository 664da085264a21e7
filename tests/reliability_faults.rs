//! Faults around `fsfleet harden`, each on a fleet of its own, checked on the hosts afterwards:
//! a host unreachable from the start, FreeSWITCH stopped, a changed host key, the config dir's
//! disk full, the apt lock held by another process. All faults are real (docker stop, systemctl
//! stop, recreated containers, a full tmpfs, a process holding dpkg's lock).

mod common;
mod reliability_support;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Fleet, TestHost};
use reliability_support::{
    EDITED, all_old_or_all_new, check_complete, docker, esl_accepts, fsfleet, sums,
};

/// The system steps are not what most of these tests are about; skipping them keeps runs short.
const FAST: &[&str] = &["--skip", "packages,fail2ban,firewall"];

fn run(fleet: &Fleet, args: &[&str]) -> (Option<i32>, String, String) {
    let out = fsfleet(fleet, args)
        .current_dir(&fleet.dir)
        .output()
        .expect("run fsfleet");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn harden(fleet: &Fleet, extra: &[&str]) -> (Option<i32>, String, String) {
    let mut args = vec!["harden"];
    args.extend_from_slice(FAST);
    args.extend_from_slice(extra);
    run(fleet, &args)
}

/// Wait until the host answers SSH and its FreeSWITCH is active (after a container restart).
fn wait_booted(fleet: &Fleet, h: &TestHost) {
    let t = Instant::now();
    loop {
        let out = fleet.ssh(h, "systemctl is-active freeswitch");
        if String::from_utf8_lossy(&out.stdout).trim() == "active" {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "{} did not come back",
            h.name
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn an_unreachable_host_fails_alone_and_the_retry_file_completes_it() {
    let fleet = Fleet::fresh("reliability-unreach", 2);
    let _ = std::fs::remove_dir_all(fleet.dir.join(".fsfleet"));
    let down = fleet.host("fs02");
    docker(&["stop", "-t", "1", &down.container]);
    let (code, out, err) = harden(&fleet, &[]);
    assert_eq!(code, Some(4), "{out}\n{err}");
    let recap = out
        .lines()
        .skip_while(|l| !l.starts_with("RECAP"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        recap
            .lines()
            .any(|l| l.starts_with("fs02") && l.contains("unreachable")),
        "recap: {recap}"
    );
    assert!(
        recap
            .lines()
            .any(|l| l.starts_with("fs01") && l.contains("changed")),
        "the reachable host finishes: {recap}"
    );
    let retry = std::fs::read_to_string(fleet.dir.join(".fsfleet/retry")).expect("retry file");
    assert_eq!(retry.lines().collect::<Vec<_>>(), ["fs02"], "retry file");

    docker(&["start", &down.container]);
    wait_booted(&fleet, down);
    let fs01_before = sums(&fleet, fleet.host("fs01"));
    let (code, out, err) = harden(&fleet, &["--limit", "@.fsfleet/retry", "--format", "json"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let names: Vec<&str> = doc["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["fs02"], "only the retried host runs");
    assert_eq!(sums(&fleet, fleet.host("fs01")), fs01_before);
    check_complete(&fleet, down);
    assert!(
        !fleet.dir.join(".fsfleet/retry").exists(),
        "a stale retry file is removed once every host succeeded"
    );
}

#[test]
fn freeswitch_stopped_is_refused_untouched_unless_offline_ok() {
    let fleet = Fleet::fresh("reliability-offline", 1);
    let _ = std::fs::remove_dir_all(fleet.dir.join(".fsfleet"));
    let h = &fleet.hosts[0];
    fleet.ssh_root(h, "systemctl stop freeswitch");
    let before = sums(&fleet, h);
    let (code, out, err) = harden(&fleet, &[]);
    assert_eq!(code, Some(4), "{out}\n{err}");
    assert!(
        out.contains("FreeSWITCH is not running") && out.contains("--offline-ok"),
        "clear reason and what to do: {out}"
    );
    assert_eq!(sums(&fleet, h), before, "nothing edited");
    assert_eq!(
        fleet
            .ssh_root(h, "ls /var/backups/fsfleet 2>/dev/null | wc -l")
            .trim(),
        "0",
        "no backup either: nothing was to change"
    );

    let (code, out, err) = harden(&fleet, &["--offline-ok", "--format", "json"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let steps = doc["hosts"][0]["steps"].as_array().unwrap();
    let reload = steps.iter().find(|s| s["name"] == "reload").unwrap();
    assert_eq!(reload["status"], "skipped", "{reload}");
    assert!(
        reload["message"].as_str().unwrap().contains("--offline-ok"),
        "the report says why: {reload}"
    );
    assert!(all_old_or_all_new(
        &h.name,
        &before,
        &sums(&fleet, h),
        EDITED
    ));

    // Once FreeSWITCH is back, it runs the new configs and a re-run completes the host.
    fleet.ssh_root(h, "systemctl start freeswitch");
    wait_booted(&fleet, h);
    let (code, out, err) = harden(&fleet, &[]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    check_complete(&fleet, h);
}

#[test]
fn a_changed_host_key_is_refused_before_authentication_naming_host_file_line_and_key() {
    let fleet = Fleet::fresh("reliability-hostkey", 1);
    let old = fleet.dir.join("known_hosts.old");
    std::fs::copy(fleet.known_hosts(), &old).unwrap();
    // Recreate: same address, new host keys; the inventory below still trusts the old ones.
    let fleet = Fleet::fresh("reliability-hostkey", 1);
    let h = &fleet.hosts[0];
    let inv = std::fs::read_to_string(fleet.inventory()).unwrap().replace(
        "known_hosts = \"known_hosts\"",
        "known_hosts = \"known_hosts.old\"",
    );
    let inv_path = fleet.dir.join("inventory-old-keys.toml");
    std::fs::write(&inv_path, inv).unwrap();
    let accepted_before = fleet.ssh_root(
        h,
        "journalctl -u ssh --no-pager -o cat | grep -c -E 'Accepted|Failed|Invalid' || true",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_fsfleet"))
        .args(["facts"])
        .arg(&inv_path)
        .args(["--no-progress"])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(4), "{text}");
    let new_fp = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(fleet.known_hosts())
        .output()
        .unwrap();
    let fps: Vec<String> = String::from_utf8_lossy(&new_fp.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect();
    assert!(
        text.contains("HOST KEY CHANGED for fs01"),
        "names the host: {text}"
    );
    assert!(
        text.contains(&format!("{}:", old.display())),
        "names the file: {text}"
    );
    let after_file = text
        .split(&format!("{}:", old.display()))
        .nth(1)
        .unwrap_or("");
    assert!(
        after_file.starts_with(|c: char| c.is_ascii_digit()),
        "names the line: {text}"
    );
    assert!(
        fps.iter().any(|fp| text.contains(fp.as_str())),
        "names the new fingerprint ({fps:?}): {text}"
    );
    let accepted_after = fleet.ssh_root(
        h,
        "journalctl -u ssh --no-pager -o cat | grep -c -E 'Accepted|Failed|Invalid' || true",
    );
    // Our own ssh_root above is accepted once; fsfleet must add nothing.
    let b: u32 = accepted_before.trim().parse().unwrap_or(0);
    let a: u32 = accepted_after.trim().parse().unwrap_or(0);
    assert_eq!(
        a,
        b + 1,
        "fsfleet authenticated (or tried) despite the changed key"
    );
}

#[test]
fn a_full_disk_under_the_config_dir_fails_the_edit_and_keeps_the_old_files() {
    let fleet = Fleet::fresh("reliability-diskfull", 1);
    let _ = std::fs::remove_dir_all(fleet.dir.join(".fsfleet"));
    let h = &fleet.hosts[0];
    let before = sums(&fleet, h);
    fleet.ssh_root(
        h,
        &format!(
            "set -e; c={c}; cp -a $c /root/conf-copy; kb=$(du -sk /root/conf-copy | cut -f1); \
             mount -t tmpfs -o size=$((kb + 64))k,mode=0755 tmpfs $c; cp -a /root/conf-copy/. $c/; \
             dd if=/dev/zero of=$c/.fill bs=1k 2>/dev/null || true; df -k $c",
            c = h.conf_dir
        ),
    );
    let (code, out, err) = harden(&fleet, &[]);
    assert_eq!(code, Some(4), "{out}\n{err}");
    assert!(
        out.contains("writing the config files failed")
            && out.contains("no config file was changed"),
        "{out}"
    );
    assert_eq!(sums(&fleet, h), before, "old files intact");
    assert!(esl_accepts(h, "ClueCon"), "FreeSWITCH untouched");
    let left = fleet.ssh_root(
        h,
        &format!("find {} -name '*.fsfleet-*' | wc -l", h.conf_dir),
    );
    assert_eq!(left.trim(), "0", "no temp files left in the full dir");
    // Space again: the re-run completes.
    fleet.ssh_root(h, &format!("rm -f {}/.fill", h.conf_dir));
    let (code, out, err) = harden(&fleet, &[]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    check_complete(&fleet, h);
}

#[test]
fn a_held_apt_lock_is_waited_for_then_the_packages_install() {
    let fleet = Fleet::fresh("reliability-aptlock", 1);
    let _ = std::fs::remove_dir_all(fleet.dir.join(".fsfleet"));
    let h = &fleet.hosts[0];
    // A real fcntl lock on dpkg's frontend lock, as apt/unattended-upgrades hold it (flock(1)
    // takes a different kind of lock that apt does not see).
    const HOLD: u64 = 25;
    hold_apt_lock(&fleet, h, HOLD);
    let (code, out, err) = run(&fleet, &["harden", "--format", "json"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    // dpkg only ran after the holder let go: fsfleet waited instead of failing.
    let order = fleet.ssh_root(
        h,
        "r=$(stat -c %Y /run/lock-released); i=$(date -d \"$(grep ' install iptables:' /var/log/dpkg.log | tail -n 1 | cut -d' ' -f1,2)\" +%s); echo $r $i",
    );
    let v: Vec<i64> = order
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    assert!(
        v.len() == 2 && v[1] >= v[0],
        "dpkg installed while the lock was held, or no install: {order}"
    );
}

/// A lock held longer than the inventory's `apt_lock_timeout`: the packages step gives up with a
/// message that says what holds it and what to do, and the config files written before it are
/// put back (no reload happened, so FreeSWITCH and its files still agree).
#[test]
fn an_apt_lock_held_past_the_limit_fails_the_step_clearly_and_restores_the_configs() {
    let fleet = Fleet::fresh("reliability-aptlimit", 1);
    let _ = std::fs::remove_dir_all(fleet.dir.join(".fsfleet"));
    let h = &fleet.hosts[0];
    let inv = std::fs::read_to_string(fleet.inventory()).unwrap();
    std::fs::write(
        fleet.inventory(),
        inv.replacen("[defaults]\n", "[defaults]\napt_lock_timeout = 3\n", 1),
    )
    .unwrap();
    let before = fleet.ssh_root(
        h,
        &format!(
            "cd {} && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum",
            h.conf_dir
        ),
    );
    hold_apt_lock(&fleet, h, 90);
    let started = Instant::now();
    let (code, out, err) = run(&fleet, &["harden", "--format", "json"]);
    assert_eq!(code, Some(4), "{out}\n{err}");
    assert!(
        started.elapsed() < Duration::from_secs(80),
        "gave up within the limit, not after the holder"
    );
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let host = &json["hosts"][0];
    let pkg = host["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "packages")
        .unwrap();
    assert_eq!(pkg["status"], "failed", "{host}");
    let msg = pkg["message"].as_str().unwrap();
    assert!(
        msg.contains("held the package lock for more than 3 s") && msg.contains("apt_lock_timeout"),
        "{msg}"
    );
    assert!(
        host["error"].as_str().unwrap().contains("restored"),
        "{host}"
    );
    let after = fleet.ssh_root(
        h,
        &format!(
            "cd {} && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum",
            h.conf_dir
        ),
    );
    assert_eq!(before, after, "the config files were put back");
    let st = fleet.ssh_root(h, "fs_cli -x status");
    assert!(
        st.contains("is ready"),
        "FreeSWITCH still runs on its old settings: {st}"
    );
    docker(&["exec", &h.container, "pkill", "-f", "lock-released"]);
}

/// Hold dpkg's frontend lock on the host for `secs` the way apt and unattended-upgrades do (a
/// real fcntl lock: flock(1) takes a kind apt does not see); returns once it is held.
/// `/run/lock-released` appears when it is let go.
fn hold_apt_lock(fleet: &Fleet, h: &TestHost, secs: u64) {
    docker(&[
        "exec",
        "-d",
        &h.container,
        "perl",
        "-e",
        &format!(
            "use Fcntl; open(my $f, '>>', '/var/lib/dpkg/lock-frontend') or die; \
             my $l = pack('s s x4 q q i x4', F_WRLCK, 0, 0, 0, 0); fcntl($f, F_SETLKW, $l) or die; \
             open(my $m, '>', '/run/lock-held') or die; close $m; sleep {secs}; \
             open($m, '>', '/run/lock-released') or die; close $m"
        ),
    ]);
    let t = Instant::now();
    while fleet
        .ssh_root(h, "ls /run/lock-held 2>/dev/null || true")
        .trim()
        .is_empty()
    {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "lock holder did not start"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
