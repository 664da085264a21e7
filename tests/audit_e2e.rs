//! `fsfleet audit` end to end on the shared fleet of fresh stock hosts (docker/testbed): every
//! host fails the ESL, SIP password, auth-logging, fail2ban and firewall controls with the right
//! evidence (exit 3); the JSON parses and names every control for every host; waivers and
//! --fail-on change the exit code; and the audit changes nothing under /etc nor any service state.
//! (The "after harden every baseline control passes" half is the lead's, with harden's fleet.)

mod common;

use std::process::{Command, Output};

use common::{Fleet, TestHost, shared_fleet};

fn audit(fleet: &Fleet, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fsfleet"))
        .arg("audit")
        .arg(fleet.inventory())
        .args(["--no-progress"])
        .args(args)
        .output()
        .expect("run fsfleet audit")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Checksum of every file under /etc plus the state of the services audit must not touch.
fn state(fleet: &Fleet, h: &TestHost) -> String {
    fleet.ssh_root(
        h,
        "find /etc -xdev -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum; \
         for s in freeswitch ssh fail2ban ufw; do echo \"$s $(systemctl is-active $s)\"; done; \
         ufw status 2>/dev/null | head -n 1; iptables -S 2>/dev/null | sha256sum",
    )
}

fn result<'a>(host: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    host["results"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["id"] == id))
        .unwrap_or_else(|| panic!("{id} missing for host {}", host["name"]))
}

#[test]
fn fresh_fleet_fails_the_baseline_read_only_with_evidence() {
    let fleet = shared_fleet();
    let before: Vec<String> = fleet.hosts.iter().map(|h| state(fleet, h)).collect();

    let out = audit(fleet, &["--format", "json"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let doc: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("JSON: {e}\n{}", text(&out)));
    assert_eq!(doc["schema_version"], 1);
    assert_eq!(doc["exit_code"], 3);
    let ids: Vec<&str> = doc["controls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert!(ids.len() >= 25, "{ids:?}");
    let hosts = doc["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), fleet.hosts.len());
    for h in hosts {
        let name = h["name"].as_str().unwrap();
        assert_eq!(h["status"], "audited", "{name}: {h}");
        let got: Vec<&str> = h["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap())
            .collect();
        assert_eq!(got, ids, "{name}: every control, in catalogue order");
        let expect_fail = [
            (
                "FS-ESL-01",
                "live: `auth ClueCon` on 127.0.0.1:8021 was ACCEPTED",
            ),
            ("FS-ESL-02", "listen-ip is ::, not a loopback address"),
            (
                "FS-SIP-01",
                "vars.xml: default_password is 1234 (the stock default)",
            ),
            (
                "FS-SIP-02",
                "sip_profiles/internal.xml: log-auth-failures is false",
            ),
            ("FS-F2B-01", "fail2ban is not installed"),
            // Fresh hosts have neither fail2ban, ufw nor iptables (docs/testbed.md).
            ("FS-F2B-02", "fail2ban-client is not installed"),
            ("FS-F2B-03", "fail2ban-regex is not installed"),
            (
                "FS-FW-01",
                "ufw is not installed; no iptables INPUT policy found",
            ),
            ("FS-FW-02", "8021"),
            // No firewall: the evidence says there is no rule to delete (the fix covers it).
            ("FS-FW-02", "there is no rule to delete"),
        ];
        for (id, needle) in expect_fail {
            let r = result(h, id);
            assert_eq!(r["status"], "fail", "{name} {id}: {r}");
            let ev = r["evidence"].to_string();
            assert!(ev.contains(needle), "{name} {id}: {ev}");
        }
        // Evaluated, not guessed: the fresh stand-in answers fs_cli with the stock password.
        assert_eq!(result(h, "FS-CRED-04")["status"], "pass", "{name}");
        // No control is left unexplained.
        for r in h["results"].as_array().unwrap() {
            assert!(
                !r["evidence"].as_array().unwrap().is_empty(),
                "{name}: {} has no evidence",
                r["id"]
            );
        }
    }

    // Text: per-host failures with the fix, and the control x host table.
    let out = audit(fleet, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(t.contains("FAIL critical FS-ESL-01"), "{t}");
    assert!(t.contains("fix: Run `fsfleet harden`"), "{t}");
    assert!(t.contains("CONTROL     SEVERITY"), "{t}");
    // The verdict: the baseline fails on every host, and the exit is both sides'.
    let n = fleet.hosts.len();
    assert!(
        t.contains("\nRESULT: baseline: ") && t.contains(&format!(" on {n} of {n} hosts: ")),
        "{t}"
    );
    assert!(
        t.ends_with(
            "\nEXIT 3: baseline and operator-owned controls at or above high failed or could not \
             be evaluated\n"
        ),
        "{t}"
    );
    assert_eq!(
        doc["verdict"]["baseline"]["hosts_failing"]
            .as_array()
            .map(Vec::len),
        Some(n)
    );

    // SARIF: FS-SIP-01's result is at the host's vars.xml.
    let out = audit(fleet, &["--format", "sarif"]);
    assert_eq!(out.status.code(), Some(3));
    let sarif: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let run = &sarif["runs"][0];
    let sip1: Vec<&serde_json::Value> = run["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["ruleId"] == "FS-SIP-01")
        .collect();
    assert_eq!(sip1.len(), n);
    for r in sip1 {
        let a = &r["locations"][0]["physicalLocation"]["artifactLocation"];
        assert!(a["uri"].as_str().unwrap().ends_with("/vars.xml"), "{r}");
        let base = a["uriBaseId"].as_str().unwrap();
        assert_eq!(run["originalUriBaseIds"][base]["uri"], "file:///", "{r}");
    }

    // Waived criticals with --fail-on critical: nothing left at that level. The stand-in is
    // FreeSWITCH 1.10.12 with mod_verto loaded, so the critical advisories fixed in 1.11.1
    // (FS-VULN-03) and 1.11.3 (FS-VULN-09) apply too (tests/vuln_e2e.rs).
    let out = audit(
        fleet,
        &[
            "--fail-on",
            "critical",
            "--waive",
            "FS-ESL-01,FS-SIP-01,FS-VULN-03,FS-VULN-09",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("waived FS-ESL-01"));

    // A typo in a waiver is a usage error, before any host is touched.
    let out = audit(fleet, &["--waive", "FS-ESL-1"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean"));

    // JUnit for CI: one testcase per host x control.
    let out = audit(fleet, &["--format", "junit"]);
    assert_eq!(out.status.code(), Some(3));
    let x = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        x.matches("<testcase ").count(),
        ids.len() * fleet.hosts.len()
    );

    let after: Vec<String> = fleet.hosts.iter().map(|h| state(fleet, h)).collect();
    assert_eq!(before, after, "audit changed /etc or a service state");

    // Leftovers an operator forgets, each found with its mode and owner: a credentials file in
    // root's home and one at find's depth limit in /tmp (3), a readable copy of vars.xml, an fs_cli
    // config that is not 0600. Removed afterwards (the fleet is shared).
    let h = &fleet.hosts[0];
    let planted = format!(
        "umask 022; printf 'p\\n' >/root/credentials.txt; mkdir -p /tmp/fsfleet-e2e/a \
         && printf 'p\\n' >/tmp/fsfleet-e2e/a/FreeSWITCH_Passwords.txt \
         && cp {c}/vars.xml {c}/vars.xml.bak && chmod 644 {c}/vars.xml.bak \
         && if [ ! -e /root/.fs_cli_conf ]; then printf 'password => x\\n' >/root/.fs_cli_conf \
         && chmod 640 /root/.fs_cli_conf && touch /tmp/fsfleet-e2e/fscli; fi",
        c = h.conf_dir
    );
    fleet.ssh_root(h, &planted);
    let out = audit(fleet, &["--format", "json", "--limit", &h.name]);
    fleet.ssh_root(
        h,
        &format!(
            "rm -f /root/credentials.txt {c}/vars.xml.bak; \
             [ ! -e /tmp/fsfleet-e2e/fscli ] || rm -f /root/.fs_cli_conf; rm -rf /tmp/fsfleet-e2e",
            c = h.conf_dir
        ),
    );
    let doc: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("JSON: {e}\n{}", text(&out)));
    let host = &doc["hosts"][0];
    let ev = |id: &str| result(host, id)["evidence"].to_string();
    assert_eq!(result(host, "FS-CRED-01")["status"], "fail", "{host}");
    assert!(
        ev("FS-CRED-01").contains("credentials file /root/credentials.txt (mode 644, root:root)")
            && ev("FS-CRED-01")
                .contains("/tmp/fsfleet-e2e/a/FreeSWITCH_Passwords.txt (mode 644, root:root)"),
        "{}",
        ev("FS-CRED-01")
    );
    assert!(
        ev("FS-CRED-02").contains("vars.xml.bak (mode 644, root:root) is world-readable"),
        "{}",
        ev("FS-CRED-02")
    );
    assert!(
        ev("FS-CRED-03").contains("/root/.fs_cli_conf (mode 640, root:root) is not 0600"),
        "{}",
        ev("FS-CRED-03")
    );
}
