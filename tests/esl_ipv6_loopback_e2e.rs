//! An Event Socket an operator bound to `::1` (IPv6 loopback) is loopback only, so harden leaves
//! it there, as audit FS-ESL-02 passes it. On a real host that means the whole chain must work on
//! `::1`: preflight's proof of the listener and its login, the reload with the old password, the
//! reconnect and verify with the new one, fs_cli through the config harden writes, and the audit.

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::{Fleet, output_text as text};

const FLEET: &str = "eslv6";

fn fsfleet(fleet: &Fleet, args: &[&str]) -> Output {
    fleet.fsfleet(args)
}

/// The JSON report's object of step `name` on the fleet's one host.
fn step<'a>(doc: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    doc["hosts"][0]["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no step {name} in {doc}"))
}

#[test]
fn an_event_socket_on_ipv6_loopback_stays_there_and_everything_works_through_it() {
    let fleet = Fleet::fresh(FLEET, 1);
    let h = &fleet.hosts[0];
    let _ = std::fs::remove_dir_all(fleet.dir.join(".fsfleet"));

    let esl = format!("{}/autoload_configs/event_socket.conf.xml", h.conf_dir);
    fleet.ssh_root(
        h,
        &format!(
            "set -e\nsed -i 's|<param name=\"listen-ip\" value=\"::\"/>|<param name=\"listen-ip\" value=\"::1\"/>|' {esl}\n\
             grep -q '<param name=\"listen-ip\" value=\"::1\"/>' {esl}\nsystemctl restart freeswitch\n"
        ),
    );
    let start = Instant::now();
    loop {
        let ss = fleet.ssh_root(h, "ss -Hltn 'sport = :8021'");
        if ss.contains("[::1]:8021") {
            assert!(!ss.contains("127.0.0.1:8021"), "{ss}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "FreeSWITCH does not listen on [::1]:8021: {ss}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // -vv: each remote script's purpose and the script itself on stderr (checked below: never a
    // password).
    let run = fsfleet(&fleet, &["harden", "--format", "json", "-vv"]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    let doc: serde_json::Value =
        serde_json::from_slice(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&run)));
    let es = step(&doc, "event-socket");
    assert_eq!(es["status"], "changed", "{es}");
    let msg = es["message"].as_str().unwrap_or_default();
    assert!(msg.contains("rotated the Event Socket password"), "{msg}");
    assert!(!msg.contains("bound the Event Socket"), "{msg}");
    for name in ["reload", "verify", "fs-cli"] {
        let s = step(&doc, name);
        assert_ne!(s["status"], "failed", "{s}");
        assert_ne!(s["status"], "skipped", "{s}");
    }

    // Still on ::1 only, on the new password, and fs_cli gets in through the file harden wrote.
    let conf = fleet.ssh_root(h, &format!("cat {esl}; cat /etc/fs_cli.conf"));
    assert!(
        conf.contains("<param name=\"listen-ip\" value=\"::1\"/>"),
        "{conf}"
    );
    assert!(
        conf.contains("host => ::1\n"),
        "fs_cli.conf names the Event Socket's address"
    );
    assert!(!conf.contains("ClueCon\"/>"), "the password was rotated");
    // -vv showed what ran on the host, and none of the secrets it wrote there.
    let trace = String::from_utf8_lossy(&run.stderr);
    for want in [": facts (", ": hostfs (write ", ": as root, ", " in "] {
        assert!(trace.contains(want), "-vv lacks {want:?}:\n{trace}");
    }
    let vars = fleet.ssh_root(h, "cat /etc/freeswitch/vars.xml");
    let secrets: Vec<&str> = conf
        .lines()
        .chain(vars.lines())
        .filter_map(|l| {
            l.split("name=\"password\" value=\"")
                .nth(1)
                .or_else(|| l.split("data=\"default_password=").nth(1))
        })
        .filter_map(|rest| rest.split('"').next())
        .chain(conf.lines().filter_map(|l| l.strip_prefix("password => ")))
        .collect();
    assert!(secrets.len() >= 2, "passwords not found in {conf}{vars}");
    for secret in secrets {
        assert!(secret.len() >= 16, "{secret:?} is not a rotated password");
        assert!(!trace.contains(secret), "-vv printed a password");
        assert!(
            !text(&run).contains(secret),
            "the report printed a password"
        );
    }
    let ss = fleet.ssh_root(h, "ss -Hltn 'sport = :8021'");
    assert!(
        ss.contains("[::1]:8021") && !ss.contains("127.0.0.1:8021"),
        "{ss}"
    );
    let status = fleet.ssh_root(h, "HOME=/root fs_cli -x status");
    assert!(
        status.contains(") is ready"),
        "fs_cli through ::1: {status}"
    );

    // The audit agrees: loopback only, not reachable, fs_cli connects.
    let audit = fsfleet(&fleet, &["audit", "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_slice(&audit.stdout)
        .unwrap_or_else(|e| panic!("audit JSON: {e}\n{}", text(&audit)));
    let results = doc["hosts"][0]["results"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for id in ["FS-ESL-01", "FS-ESL-02", "FS-ESL-03", "FS-CRED-04"] {
        let r = results
            .iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("no {id} in {doc}"));
        assert_eq!(r["status"], "pass", "{id}: {r}");
    }

    // And a second run plans nothing.
    let check = fsfleet(&fleet, &["harden", "--check", "--format", "json"]);
    let doc: serde_json::Value =
        serde_json::from_slice(&check.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&check)));
    for s in doc["hosts"][0]["steps"].as_array().into_iter().flatten() {
        assert!(s["status"] == "ok" || s["status"] == "skipped", "{s}");
    }
}
