//! `fsfleet audit` end to end without a fleet: what the command makes of the hosts the runner
//! brings back (against a real sshd on 127.0.0.1 and a closed port).

mod support;

use support::cli::{fsfleet, reachable_and_down_inventory};
use support::sshd::TestSshd;

/// The audited host comes back with one result per control, the unreachable one with its
/// error and none; exit 4 and the retry file name the host not audited, and an audit of the
/// reachable host alone removes the stale retry file.
#[test]
fn audit_results_and_the_hosts_not_audited_come_back_from_the_runner() {
    let sshd = TestSshd::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_, closed) = reachable_and_down_inventory(&sshd, d);

    let out = fsfleet(&["audit", "inventory.toml", "--format", "json"], d);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(4),
        "one host not audited: exit 4\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value =
        serde_json::from_str(&stdout).expect("stdout is one JSON document");
    let controls: Vec<&str> = doc["controls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert!(controls.len() > 20, "{controls:?}");
    let hosts = doc["hosts"].as_array().unwrap();
    let names: Vec<&str> = hosts.iter().map(|h| h["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["pbx-1", "pbx-down"], "inventory order");

    let up = &hosts[0];
    assert_eq!(up["status"], "audited", "{up}");
    assert!(up["error"].is_null(), "{up}");
    let ids: Vec<&str> = up["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, controls, "one result per control, in catalogue order");

    let down = &hosts[1];
    assert_eq!(down["status"], "unreachable", "{down}");
    assert!(
        down["error"]
            .as_str()
            .unwrap()
            .contains(&format!("127.0.0.1:{closed}")),
        "{down}"
    );
    assert_eq!(down["results"], serde_json::json!([]));
    assert_eq!(
        std::fs::read_to_string(d.join(".fsfleet/retry")).unwrap(),
        "pbx-down\n"
    );

    // Text output says which host was not audited and why.
    let out = fsfleet(&["audit", "inventory.toml", "--no-progress"], d);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{text}");
    assert!(
        text.contains("NOT AUDITED (unreachable): cannot connect to 127.0.0.1:"),
        "{text}"
    );

    let out = fsfleet(
        &[
            "audit",
            "inventory.toml",
            "--limit",
            "pbx-1",
            "--no-progress",
        ],
        d,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_ne!(out.status.code(), Some(4), "{text}");
    assert!(!text.contains("NOT AUDITED"), "{text}");
    assert!(
        !d.join(".fsfleet/retry").exists(),
        "an audit of every host removes the stale retry file"
    );
}
