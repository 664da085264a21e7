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
    // The verdict splits baseline from operator-owned results and ends with why the exit is 4.
    assert!(text.contains("\nRESULT: baseline: "), "{text}");
    assert!(text.contains("; not audited: pbx-down\n"), "{text}");
    assert!(
        text.ends_with("\nEXIT 4: 1 host could not be audited\n"),
        "{text}"
    );
    // The known-vulnerability summary heads the host (no FreeSWITCH here: versions unknown).
    let vulns = controls
        .iter()
        .filter(|c| c.starts_with("FS-VULN-"))
        .count();
    assert!(vulns > 0, "{controls:?}");
    assert!(
        text.contains(&format!(
            "pbx-1 (127.0.0.1)\n  0 known vulnerabilities, 0 mitigated, {vulns} undecided \
             (version unknown) (FS-VULN: `fsfleet audit --list-advisories`)\n  baseline: "
        )),
        "{text}"
    );
    assert!(text.contains("\n  operator-owned: "), "{text}");
    // The same split in JSON: per host, per result and for the fleet.
    assert_eq!(
        doc["verdict"]["not_audited"],
        serde_json::json!(["pbx-down"])
    );
    assert_eq!(doc["verdict"]["exit_reason"], "1 host could not be audited");
    for side in ["baseline", "operator"] {
        assert!(
            up["summary"][side]["failed_by_severity"].is_object(),
            "{up}"
        );
        assert!(doc["verdict"][side]["controls"].as_u64().unwrap() > 0);
    }
    assert!(
        up["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["baseline"].is_boolean())
    );

    // SARIF: every result names the host; files only under a base the run defines.
    let out = fsfleet(&["audit", "inventory.toml", "--format", "sarif"], d);
    assert_eq!(out.status.code(), Some(4));
    let sarif: serde_json::Value = serde_json::from_slice(&out.stdout).expect("SARIF is JSON");
    assert_eq!(sarif["version"], "2.1.0");
    let run = &sarif["runs"][0];
    for r in run["results"].as_array().unwrap() {
        for l in r["locations"].as_array().unwrap() {
            assert_eq!(l["logicalLocations"][0]["name"], "pbx-1", "{r}");
            if let Some(base) = l["physicalLocation"]["artifactLocation"]["uriBaseId"].as_str() {
                assert_eq!(run["originalUriBaseIds"][base]["uri"], "file:///", "{r}");
            }
        }
    }

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

/// An OS error reaches the operator once, with the path it is about, on the inventory path of
/// `audit` and `inventory check` and for a `--limit @FILE` (errors::chain at the CLI edge).
#[test]
fn an_os_error_is_printed_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("dir.toml")).unwrap();
    std::fs::write(
        d.join("inventory.toml"),
        "[[hosts]]\nname = \"a\"\naddress = \"127.0.0.1\"\n",
    )
    .unwrap();
    for (args, os_error) in [
        (vec!["audit", "missing.toml"], "(os error 2)"),
        (vec!["inventory", "check", "missing.toml"], "(os error 2)"),
        (vec!["audit", "dir.toml"], "(os error 21)"),
        (
            vec!["audit", "inventory.toml", "--limit", "@missing"],
            "(os error 2)",
        ),
    ] {
        let out = fsfleet(&args, d);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.matches(os_error).count(), 1, "{args:?}: {err}");
        assert_eq!(err.matches("fsfleet: ").count(), 1, "{args:?}: {err}");
        let what = if os_error.contains("21") {
            "Is a directory"
        } else {
            "No such file or directory"
        };
        assert_eq!(err.matches(what).count(), 1, "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}
