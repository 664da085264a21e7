//! Snapshots of the audit's text report from recorded results (no host): the audit after a
//! clean harden, and a fleet with a baseline failure, an error and a host not audited. A change
//! of the output is a diff of a committed file under `tests/snapshots/`; `UPDATE_SNAPSHOTS=1`
//! rewrites the files instead of comparing (then review the diff and commit it).

use super::command::{ControlResult, HostAudit, Outcome, exit_code};
use super::render::{json, text};
use super::{ControlError, Finding, Severity, Status, catalogue};
use crate::fleet::RunInfo;
use crate::snapshot::assert_snapshot;

/// A recorded host: every control of the catalogue passes except the ones listed, which carry
/// the status and evidence the audit recorded. `waived` are reported as waived with their
/// recorded status.
fn recorded(
    name: &str,
    address: &str,
    not_pass: &[(&str, Status, &[&str])],
    waived: &[&str],
) -> HostAudit {
    let results = catalogue()
        .into_iter()
        .map(|c| {
            let (status, evidence) = not_pass.iter().find(|(id, _, _)| *id == c.id).map_or(
                (Status::Pass, vec!["recorded pass".to_string()]),
                |(_, s, e)| (*s, e.iter().map(|l| l.to_string()).collect()),
            );
            let finding = Finding { status, evidence };
            ControlResult::new(c, finding, waived.contains(&c.id), Some("/etc/freeswitch"))
        })
        .collect();
    HostAudit {
        name: name.into(),
        address: address.into(),
        status: "audited".into(),
        error: None,
        elapsed_ms: 300,
        results,
    }
}

/// fs01 after `fsfleet harden` on the stock 1.10.12 config, with `sip_allow_from` set (so
/// FS-SIP-06 passes) and FS-MOD-01 waived: the baseline passes, the dialplan and directory risks
/// (the operator's) are as FreeSWITCH ships them. The evidence lines are the testbed's.
fn after_harden(name: &str, address: &str) -> HostAudit {
    recorded(
        name,
        address,
        &[
            (
                "FS-SIP-03",
                Status::Fail,
                &["stock users still defined in directory/default/: 1000-1019, brian, default"],
            ),
            (
                "FS-SIP-04",
                Status::Fail,
                &["21 users share $${default_password}: 1000-1019, brian"],
            ),
            (
                "FS-SIP-05",
                Status::Fail,
                &["voicemail PIN equals the extension for 20 users: 1000-1019"],
            ),
            (
                "FS-SIP-07",
                Status::Fail,
                &["TLS is off on every profile (external-ipv6, external, internal-ipv6, internal)"],
            ),
            (
                "FS-DP-01",
                Status::Fail,
                &[
                    "dialplan/default.xml:347: extension sip_uri bridges any dialled sip: URI out (sofia/${use_profile}/$1)",
                ],
            ),
            (
                "FS-DP-02",
                Status::Fail,
                &[
                    "dialplan/default/01_example.com.xml:3: example extension local.example.com routes to the default gateway",
                    "dialplan/default/01_example.com.xml:12: example extension domestic.example.com routes to the default gateway",
                ],
            ),
            (
                "FS-DP-03",
                Status::Fail,
                &["20 users have international in toll_allow: 1000-1019"],
            ),
            (
                "FS-MOD-01",
                Status::Fail,
                &["mod_verto is loaded (WebRTC signalling on 8081/8082)"],
            ),
            // The stand-in is FreeSWITCH 1.10.12 (tests/vuln_e2e.rs): the advisories fixed in
            // 1.11.1 and 1.11.2 apply, and mod_verto is loaded.
            (
                "FS-VULN-03",
                Status::Fail,
                &[
                    "FreeSWITCH 1.10.12 (freeswitch -version of /usr/bin/freeswitch, which the running process started from) is affected by CVE-2026-49841 (GHSA-wfrq-qvg2-f88f): fixed in 1.11.1",
                    "autoload_configs/modules.conf.xml: mod_verto is loaded",
                    "not mitigated (it is when mod_verto is not loaded): until the upgrade, remove or comment out `<load module=\"mod_verto\"/>` in autoload_configs/modules.conf.xml and restart FreeSWITCH",
                ],
            ),
            (
                "FS-VULN-04",
                Status::Fail,
                &[
                    "FreeSWITCH 1.10.12 (freeswitch -version of /usr/bin/freeswitch, which the running process started from) is affected by CVE-2026-116574 (GHSA-r6vh-qmwm-h3cc): fixed in 1.11.2",
                    "no mitigating setting is known: upgrade FreeSWITCH to 1.11.2 or later",
                ],
            ),
            (
                "FS-VULN-05",
                Status::Fail,
                &[
                    "FreeSWITCH 1.10.12 (freeswitch -version of /usr/bin/freeswitch, which the running process started from) is affected by CVE-2026-116780 (GHSA-2p6g-9c8q-232p): fixed in 1.11.2",
                    "no mitigating setting is known: upgrade FreeSWITCH to 1.11.2 or later",
                ],
            ),
            (
                "FS-VULN-09",
                Status::Fail,
                &[
                    "FreeSWITCH 1.10.12 (freeswitch -version of /usr/bin/freeswitch, which the running process started from) is affected by CVE-2026-116779: fixed in 1.11.3",
                    "no mitigating setting is known: upgrade FreeSWITCH to 1.11.3 or later",
                ],
            ),
            (
                "FS-VULN-10",
                Status::Pass,
                &[
                    "mitigated by mod_xml_rpc is not loaded (the flaw is in mod_xml_rpc: a FreeSWITCH that does not load it does not run the code)",
                    "FreeSWITCH 1.10.12 (freeswitch -version of /usr/bin/freeswitch, which the running process started from) is affected by CVE-2026-116785 (GHSA-jj89-q47c-gh94): fixed in 1.11.2",
                    "autoload_configs/modules.conf.xml: mod_xml_rpc is not loaded",
                ],
            ),
        ],
        &["FS-MOD-01"],
    )
}

fn run_info() -> RunInfo {
    RunInfo {
        run_id: "20261129T220000Z-5447".into(),
        command: "audit".into(),
        started: chrono::DateTime::parse_from_rfc3339("2026-11-29T22:00:00Z")
            .unwrap()
            .to_utc(),
        elapsed_ms: 900,
        aborted: None,
        interrupted: false,
    }
}

fn outcome(hosts: Vec<HostAudit>) -> (Outcome, u8) {
    let o = Outcome {
        run: run_info(),
        hosts,
        fail_on: Severity::High,
    };
    let code = exit_code(&o.hosts, o.fail_on);
    (o, code)
}

/// Issue 14's "audit after harden": the baseline all passes, the exit code is 3 for the
/// operator's controls alone, and the report says so.
#[test]
fn audit_after_harden() {
    let (o, code) = outcome(vec![after_harden("fs01", "192.0.2.11")]);
    assert_eq!(code, 3);
    let t = text(&o, code);
    assert_snapshot("audit_after_harden.txt", &t);
    let v = json(&o, code);
    assert_eq!(v["verdict"]["baseline"]["fail"], 0);
    assert_eq!(v["verdict"]["operator"]["failed_by_severity"]["high"], 3);
    let baseline = catalogue().iter().filter(|c| c.baseline).count();
    assert_eq!(v["hosts"][0]["summary"]["baseline"]["pass"], baseline);
}

/// Two audited hosts (one clean after harden, one whose firewall is off and whose FreeSWITCH is
/// stopped) and one unreachable host.
#[test]
fn audit_of_a_fleet_with_a_baseline_failure_an_error_and_a_host_down() {
    let stopped = ControlError::EslUnavailable(
        "FreeSWITCH is not running (systemd: inactive); nothing listens on TCP port 8021".into(),
    )
    .evidence();
    let mut fs02 = after_harden("fs02", "192.0.2.12");
    let fs02_only = recorded(
        "fs02",
        "192.0.2.12",
        &[
            (
                "FS-FW-01",
                Status::Fail,
                &["ufw is installed but inactive; the iptables INPUT policy is ACCEPT"],
            ),
            (
                "FS-FW-02",
                Status::Fail,
                &[
                    "no firewall is active, so nothing blocks TCP port 8021: there is no rule to delete, a default-deny firewall closes it (FS-FW-01)",
                ],
            ),
            ("FS-ESL-01", Status::Error, &[stopped.as_str()]),
        ],
        &[],
    );
    for (r, own) in fs02.results.iter_mut().zip(fs02_only.results) {
        if r.baseline {
            *r = own;
        }
    }
    let fs03 = HostAudit {
        name: "fs03".into(),
        address: "192.0.2.13".into(),
        status: "unreachable".into(),
        error: Some("cannot connect to 192.0.2.13:22: connection refused".into()),
        elapsed_ms: 3000,
        results: vec![],
    };
    let (o, code) = outcome(vec![after_harden("fs01", "192.0.2.11"), fs02, fs03]);
    assert_eq!(code, 4);
    assert_snapshot("audit_fleet_failures.txt", &text(&o, code));
    // Without the unreachable host: exit 3, for both sides.
    let (o, code) = outcome(o.hosts[..2].to_vec());
    assert_eq!(code, 3);
    let t = text(&o, code);
    assert!(
        t.ends_with(
            "\nEXIT 3: baseline and operator-owned controls at or above high failed or could not \
             be evaluated\n"
        ),
        "{t}"
    );
    let v = json(&o, code);
    assert_eq!(
        v["verdict"]["baseline"]["hosts_failing"],
        serde_json::json!(["fs02"])
    );
    assert_eq!(v["verdict"]["baseline"]["error"], 1);
}

/// README and docs/audit.md show the verdict of the after-harden snapshot as it is.
#[test]
fn the_docs_show_the_verdict_of_the_snapshot() {
    let (o, code) = outcome(vec![after_harden("fs01", "192.0.2.11")]);
    let t = text(&o, code);
    let verdict: Vec<&str> = t.lines().rev().take(2).collect();
    for doc in ["README.md", "docs/audit.md"] {
        let path = format!("{}/{doc}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        for line in &verdict {
            assert!(
                text.lines().any(|l| l.trim() == *line),
                "{doc} does not show `{line}`: copy it from tests/snapshots/audit_after_harden.txt"
            );
        }
    }
}
