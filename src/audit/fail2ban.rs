//! fail2ban controls: running, a FreeSWITCH jail on the real log, a filter that matches THIS
//! host's log format (proved with fail2ban-regex on the host), enforceable bans, sshd jail.

use super::evidence::Evidence;
use super::{Control, ControlError, Finding, Severity};
use crate::model::fail2ban::{
    Fail2banState, JAIL_FILE, JailSettings, JailStatus, PROBE_IP, PROOF_SECTION, Proof,
};

pub const CONTROLS: &[Control] = &[
    Control {
        id: "FS-F2B-01",
        family: "fail2ban",
        severity: Severity::High,
        title: "fail2ban is installed and running",
        rationale: "SIP password guessing and SSH brute force never stop; fail2ban turns the logged \
                    failures into bans.",
        remediation: "Run `fsfleet harden` (installs and configures fail2ban), or `apt-get install \
                      fail2ban` and `systemctl enable --now fail2ban`.",
        baseline: true,
        eval: running,
    },
    Control {
        id: "FS-F2B-02",
        family: "fail2ban",
        severity: Severity::High,
        title: "A FreeSWITCH jail is enabled and watches the log FreeSWITCH writes",
        rationale: "Debian's stock [freeswitch] jail is disabled and points at \
                    /var/log/freeswitch.log, a file FreeSWITCH never writes.",
        remediation: "Run `fsfleet harden` (jail.d/fsfleet-freeswitch.local with the host's real \
                      log), or enable [freeswitch] with logpath = <log_dir>/freeswitch.log.",
        baseline: true,
        eval: jail,
    },
    Control {
        id: "FS-F2B-03",
        family: "fail2ban",
        severity: Severity::High,
        title: "The freeswitch filter matches an auth failure in this host's log format",
        rationale: "Debian's packaged filter does not match FreeSWITCH 1.10.7+ lines (idle-cpu \
                    percent field), so the jail runs and never bans anyone.",
        remediation: "Run `fsfleet harden` (installs filter.d/freeswitch.local), then check with \
                      `fail2ban-regex /var/log/freeswitch/freeswitch.log freeswitch`.",
        baseline: true,
        eval: filter_matches,
    },
    Control {
        id: "FS-F2B-04",
        family: "fail2ban",
        severity: Severity::High,
        title: "fail2ban bans are enforceable (iptables or nft present)",
        rationale: "iptables is only a Recommends of fail2ban: on a minimal host bans are logged \
                    but never enforced.",
        remediation: "Install iptables (or configure an nftables banaction), then restart fail2ban \
                      (fsfleet harden installs iptables before fail2ban).",
        baseline: true,
        eval: enforceable,
    },
    Control {
        id: "FS-F2B-05",
        family: "fail2ban",
        severity: Severity::Medium,
        title: "The sshd jail reads a log source that exists",
        rationale: "Minimal images log sshd only to journald; an [sshd] jail on /var/log/auth.log \
                    then watches nothing.",
        remediation: "Set `backend = systemd` for [sshd] (needs python3-systemd) or install rsyslog; \
                      fsfleet harden does the former.",
        baseline: true,
        eval: sshd_jail,
    },
];

fn running(ev: &Evidence) -> Result<Finding, ControlError> {
    let b = &ev.facts.base;
    Ok(match (b.packages.get("fail2ban"), b.fail2ban_active) {
        (Some(v), true) => Finding::pass(vec![format!("fail2ban {v} is installed and active")]),
        (Some(v), false) => Finding::fail(vec![format!(
            "fail2ban {v} is installed but not active (systemctl is-active fail2ban)"
        )]),
        (None, true) => Finding::pass(vec![
            "fail2ban is active (not from a Debian package)".into(),
        ]),
        (None, false) => Finding::fail(vec!["fail2ban is not installed".into()]),
    })
}

/// What systemd says of fail2ban, for a finding about a server that is not running.
fn server_hint(ev: &Evidence) -> &'static str {
    if ev.facts.base.fail2ban_active {
        ""
    } else {
        " (systemctl is-active fail2ban: not active)"
    }
}

/// The `Currently banned` / `Total failed` counters of a running jail.
fn counters(st: &JailStatus) -> String {
    let n = |v: Option<u64>| v.map_or_else(|| "?".to_string(), |v| v.to_string());
    format!(
        "currently banned {}, total failed {}",
        n(st.currently_banned),
        n(st.total_failed)
    )
}

/// The status of jail `name` from the model: `Ok(Err(finding))` when there is none (the failing
/// finding says why), `Err` when the host's answer does not tell.
fn running_jail<'a>(
    ev: &Evidence,
    st: &'a Fail2banState,
    name: &str,
) -> Result<Result<&'a JailStatus, Finding>, ControlError> {
    if !Fail2banState::gathered(&ev.facts) {
        return Err(ControlError::ProbeNotRun {
            probe: if name == "freeswitch" {
                "fail2ban jail".to_string()
            } else {
                format!("{name} jail")
            },
            status: None,
        });
    }
    if !st.installed {
        return Ok(Err(Finding::fail(vec![
            "fail2ban-client is not installed".into(),
        ])));
    }
    if st.server.is_none() {
        return Ok(Err(Finding::fail(vec![format!(
            "no jail named {name} is running: fail2ban-server is not running{}",
            server_hint(ev)
        )])));
    }
    match st.status.get(name) {
        Some(s) => Ok(Ok(s)),
        None if st.not_running.iter().any(|j| j == name) => Ok(Err(Finding::fail(vec![format!(
            "no jail named {name} is running (`fail2ban-client status {name}` failed)"
        )]))),
        None => Err(ControlError::Fail2banNoAnswer {
            pid: st.server.unwrap_or_default(),
            jail: name.to_string(),
        }),
    }
}

fn jail(ev: &Evidence) -> Result<Finding, ControlError> {
    let st = Fail2banState::from_facts(&ev.facts);
    let js = match running_jail(ev, &st, "freeswitch")? {
        Ok(s) => s,
        Err(f) => return Ok(f),
    };
    let mut bad = Vec::new();
    let mut ok = vec![format!("jail freeswitch is running: {}", counters(js))];
    let mut watched = Vec::new();
    for f in &js.files {
        if f.exists {
            watched.push(f.path.clone());
            ok.push(format!("watches {} (exists)", f.path));
        } else {
            bad.push(format!("watches {}, which does not exist", f.path));
        }
    }
    if watched.is_empty() && bad.is_empty() {
        bad.push("the jail watches no log file".into());
    }
    if let Some(dir) = ev
        .facts
        .base
        .freeswitch
        .as_ref()
        .and_then(|f| f.log_dir.as_deref())
    {
        let log = format!("{dir}/freeswitch.log");
        if !watched.contains(&log) {
            bad.push(format!(
                "FreeSWITCH logs to {log}, which the jail does not watch"
            ));
        }
    }
    // fsfleet's jail bans on the ports the firewall opens: the model's SIP and SIP-TLS ports.
    if let Some(set) = JailSettings::from_facts(&ev.facts, "freeswitch") {
        let want = ev.model().sip_ports().numbers();
        let list = |p: &[u16]| p.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
        if set.ports == want && set.port_names.is_empty() {
            ok.push(format!(
                "{JAIL_FILE} bans on ports {}, the SIP and SIP-TLS ports of the profiles",
                list(&set.ports)
            ));
        } else {
            let mut got = list(&set.ports);
            for n in &set.port_names {
                got.push_str(&format!("{}{n}", if got.is_empty() { "" } else { "," }));
            }
            bad.push(format!(
                "{JAIL_FILE} bans on ports {got}, but the profiles' SIP and SIP-TLS ports are {}",
                list(&want)
            ));
        }
    }
    Ok(Finding::fail_if(bad, ok))
}

fn filter_matches(ev: &Evidence) -> Result<Finding, ControlError> {
    let proof = match Proof::resolve(
        ev.facts.section(PROOF_SECTION),
        ev.facts.section_status(PROOF_SECTION),
        ev.proof_cache.as_ref(),
    ) {
        Ok(p) => p,
        Err(e @ crate::model::fail2ban::ProofError::NotInstalled) => {
            return Ok(Finding::fail(vec![e.to_string()]));
        }
        Err(e) => return Err(e.into()),
    };
    let log = proof.log.as_str();
    let format = match proof.format.as_str() {
        "percent" => format!("{log} has the 1.10.7+ idle-cpu percent field"),
        "plain" => format!("{log} has no percent field (before 1.10.7)"),
        _ if log.is_empty() => {
            "no FreeSWITCH log found; tested the 1.10.7+ format (idle-cpu percent field)".into()
        }
        _ => format!("{log} has no dated line yet; tested the 1.10.7+ format"),
    };
    let Some(lines) = proof.lines.as_deref() else {
        let err = proof.error.as_deref().unwrap_or("no result line");
        return Err(ControlError::RegexNoResult(err.to_string()));
    };
    let mut line = format!(
        "crafted auth failure from {PROBE_IP} in this host's format: fail2ban-regex says {lines}"
    );
    if let Some(at) = &proof.cached_at {
        line.push_str(&format!(
            " (proved at {at}; the filter files, fail2ban's version and the log format are unchanged since)"
        ));
    } else if let Some(known) = proof.proven {
        line.push_str(&format!(
            " (proved by fsfleet's test suite for fail2ban {} with {}, {} format: this host's filter files, version and format hash the same; --reprove runs it here)",
            known.fail2ban, known.filter, known.format
        ));
    }
    Ok(if proof.matched() >= 1 {
        Finding::pass(vec![format, line])
    } else {
        Finding::fail(vec![format, line])
    })
}

fn enforceable(ev: &Evidence) -> Result<Finding, ControlError> {
    let b = &ev.facts.base;
    Ok(match (b.iptables, b.nft) {
        (true, _) => Finding::pass(vec!["iptables is present".into()]),
        (false, true) => Finding::pass(vec![
            "nft is present (fail2ban needs an nftables banaction)".into(),
        ]),
        (false, false) => Finding::fail(vec![
            "neither iptables nor nft is installed: bans are logged, not enforced".into(),
        ]),
    })
}

fn sshd_jail(ev: &Evidence) -> Result<Finding, ControlError> {
    let st = Fail2banState::from_facts(&ev.facts);
    let js = match running_jail(ev, &st, "sshd")? {
        Ok(s) => s,
        Err(f) => return Ok(f),
    };
    if let Some(m) = &js.journal {
        return Ok(Finding::pass(vec![format!(
            "jail sshd reads the journal: {m}"
        )]));
    }
    let exists: Vec<&str> = js
        .files
        .iter()
        .filter(|f| f.exists)
        .map(|f| f.path.as_str())
        .collect();
    let missing: Vec<String> = js
        .files
        .iter()
        .filter(|f| !f.exists)
        .map(|f| format!("jail sshd watches {}, which does not exist", f.path))
        .collect();
    if exists.is_empty() && missing.is_empty() {
        return Ok(Finding::fail(vec![
            "jail sshd watches no log file and no journal".into(),
        ]));
    }
    Ok(Finding::fail_if(
        missing,
        vec![format!("jail sshd watches {}", exists.join(", "))],
    ))
}

#[cfg(test)]
mod tests {
    use super::super::evidence::testing::*;
    use super::super::{Live, Status};
    use super::*;
    use crate::model::fail2ban::{CachedProof, STATE_SECTION};

    fn eval(id: &str, ev: &Evidence) -> Finding {
        CONTROLS.iter().find(|c| c.id == id).unwrap().run(ev)
    }

    /// The evidence of control `id`, which must fail.
    fn fails(id: &str, ev: &Evidence) -> Vec<String> {
        let f = eval(id, ev);
        assert_eq!(f.status, Status::Fail, "{id}: {:?}", f.evidence);
        f.evidence
    }

    const JAIL: &str = "Status for the jail: freeswitch\n|- Filter\n|  |- Currently failed:\t0\n|  |- Total failed:\t3\n|  `- File list:\t/var/log/freeswitch/freeswitch.log\n`- Actions\n   |- Currently banned:\t1\n   |- Total banned:\t1\n   `- Banned IP list:\t203.0.113.9\n@exists /var/log/freeswitch/freeswitch.log\n";

    fn with(sections: &[(&str, &str, i32)]) -> Evidence {
        let mut s: Vec<(&str, &str, i32)> = vec![
            ("fs_conf", "/etc/freeswitch", 0),
            ("fs_log", "/var/log/freeswitch", 0),
        ];
        s.extend_from_slice(sections);
        evidence(&stock_files(), &s, Live::default())
    }

    #[test]
    fn fresh_host_without_fail2ban_fails_each_control() {
        let ev = with(&[
            // No fail2ban-client on the host: the state snippet prints nothing.
            (STATE_SECTION, "", 0),
            (PROOF_SECTION, "", 3),
        ]);
        let got: Vec<(Status, String)> = CONTROLS
            .iter()
            .map(|c| {
                let f = c.run(&ev);
                (f.status, f.evidence.join(" | "))
            })
            .collect();
        assert_eq!(
            got,
            [
                (Status::Fail, "fail2ban is not installed".to_string()),
                (Status::Fail, "fail2ban-client is not installed".into()),
                (
                    Status::Fail,
                    "fail2ban-regex is not installed (fail2ban is missing)".into()
                ),
                (
                    Status::Fail,
                    "neither iptables nor nft is installed: bans are logged, not enforced".into()
                ),
                (Status::Fail, "fail2ban-client is not installed".into()),
            ]
        );
    }

    #[test]
    fn installed_but_stopped_fail2ban_fails_both_jails_naming_the_server() {
        let ev = with(&[(STATE_SECTION, "installed yes\nactive inactive\n", 0)]);
        for (id, jail) in [("FS-F2B-02", "freeswitch"), ("FS-F2B-05", "sshd")] {
            let f = eval(id, &ev);
            assert_eq!(f.status, Status::Fail);
            assert_eq!(
                f.evidence,
                [format!(
                    "no jail named {jail} is running: fail2ban-server is not running \
                     (systemctl is-active fail2ban: not active)"
                )]
            );
        }
    }

    #[test]
    fn debian_stock_jail_and_filter_fail_with_the_reason() {
        let ev = with(&[
            (
                STATE_SECTION,
                "installed yes\nserver 978\n@jail freeswitch\nStatus for the jail: freeswitch\n\
                 |  `- File list:\t/var/log/freeswitch.log\n@missing /var/log/freeswitch.log\n",
                0,
            ),
            (
                PROOF_SECTION,
                "log /var/log/freeswitch/freeswitch.log\nformat percent\nline 2026-01-01 00:00:00.000000 97.50% [WARNING] ...\nLines: 1 lines, 0 ignored, 0 matched, 1 missed\n",
                0,
            ),
        ]);
        let f = eval("FS-F2B-02", &ev);
        assert_eq!(f.status, Status::Fail);
        assert_eq!(
            f.evidence,
            [
                "watches /var/log/freeswitch.log, which does not exist",
                "FreeSWITCH logs to /var/log/freeswitch/freeswitch.log, which the jail does not watch"
            ]
        );
        let f = eval("FS-F2B-03", &ev);
        assert_eq!(f.status, Status::Fail);
        assert_eq!(
            f.evidence,
            [
                "/var/log/freeswitch/freeswitch.log has the 1.10.7+ idle-cpu percent field",
                "crafted auth failure from 192.0.2.77 in this host's format: fail2ban-regex says 1 lines, 0 ignored, 0 matched, 1 missed"
            ]
        );
    }

    #[test]
    fn hardened_fail2ban_passes() {
        let state = format!(
            "installed yes\nactive active\nenabled enabled\nserver 978\n@jail freeswitch\n{JAIL}\
             @jail sshd\nStatus for the jail: sshd\n|- Filter\n|  `- Journal matches:\t_SYSTEMD_UNIT=sshd.service + _COMM=sshd\n"
        );
        let mut ev = with(&[
            (STATE_SECTION, &state, 0),
            (
                PROOF_SECTION,
                "log /var/log/freeswitch/freeswitch.log\nformat percent\nLines: 1 lines, 0 ignored, 1 matched, 0 missed\n",
                0,
            ),
        ]);
        ev.facts.base.fail2ban_active = true;
        ev.facts
            .base
            .packages
            .insert("fail2ban".into(), "1.0.2-2".into());
        ev.facts.base.iptables = true;
        for c in CONTROLS {
            let f = c.run(&ev);
            assert_eq!(f.status, Status::Pass, "{}: {:?}", c.id, f.evidence);
        }
        assert_eq!(
            eval("FS-F2B-02", &ev).evidence,
            [
                "jail freeswitch is running: currently banned 1, total failed 3",
                "watches /var/log/freeswitch/freeswitch.log (exists)"
            ]
        );
        // A broken filter is an error, not a pass.
        let ev = with(&[(
            PROOF_SECTION,
            "log x\nformat plain\nERROR: No section: 'Definition'\n",
            0,
        )]);
        let f = eval("FS-F2B-03", &ev);
        assert_eq!(f.status, Status::Error);
        assert!(f.evidence[0].contains("No section"));
        // sshd jail on a file that is gone.
        let ev = with(&[(
            STATE_SECTION,
            "installed yes\nserver 978\n@jail sshd\nStatus for the jail: sshd\n|  `- File list:\t/var/log/auth.log\n@missing /var/log/auth.log\n",
            0,
        )]);
        assert_eq!(
            eval("FS-F2B-05", &ev).evidence,
            ["jail sshd watches /var/log/auth.log, which does not exist"]
        );
    }

    #[test]
    fn a_jail_that_does_not_answer_fails_and_a_missing_answer_is_an_error() {
        let ev = with(&[(
            STATE_SECTION,
            "installed yes\nserver 978\n@jail freeswitch\n",
            0,
        )]);
        assert_eq!(
            fails("FS-F2B-02", &ev),
            ["no jail named freeswitch is running (`fail2ban-client status freeswitch` failed)"]
        );
        // The state snippet did not run at all, or the client answered nothing: an error.
        assert_eq!(eval("FS-F2B-05", &with(&[])).status, Status::Error);
        let ev = with(&[(STATE_SECTION, "installed yes\nserver 978\n", 0)]);
        let f = eval("FS-F2B-05", &ev);
        assert_eq!(f.status, Status::Error);
        assert!(
            f.evidence[0].contains("no answer for jail sshd"),
            "{:?}",
            f.evidence
        );
    }

    #[test]
    fn a_cached_proof_passes_with_when_it_was_made_and_an_unknown_one_is_an_error() {
        let key = "ab".repeat(32);
        let mut ev = with(&[(
            PROOF_SECTION,
            &format!("log /var/log/freeswitch/freeswitch.log\nformat percent\ncached {key}\n"),
            0,
        )]);
        assert_eq!(eval("FS-F2B-03", &ev).status, Status::Error);
        ev.proof_cache = Some(CachedProof {
            key: key.clone(),
            lines: "1 lines, 0 ignored, 1 matched, 0 missed".into(),
            proved_at: "2026-11-29T21:00:00Z".into(),
        });
        let f = eval("FS-F2B-03", &ev);
        assert_eq!(f.status, Status::Pass);
        assert_eq!(
            f.evidence[1],
            "crafted auth failure from 192.0.2.77 in this host's format: fail2ban-regex says 1 lines, \
             0 ignored, 1 matched, 0 missed (proved at 2026-11-29T21:00:00Z; the filter files, \
             fail2ban's version and the log format are unchanged since)"
        );
        // A cached failure stays a failure.
        ev.proof_cache.as_mut().unwrap().lines = "1 lines, 0 ignored, 0 matched, 1 missed".into();
        assert_eq!(eval("FS-F2B-03", &ev).status, Status::Fail);
    }

    #[test]
    fn fsfleets_jail_must_ban_on_the_profiles_sip_ports() {
        let state = format!("installed yes\nserver 978\n@jail freeswitch\n{JAIL}");
        let mut ev = with(&[(STATE_SECTION, &state, 0)]);
        let jail = |ports: &str| {
            format!("[freeswitch]\nenabled = true\nport = {ports}\n[sshd]\nport = 22\n")
        };
        let put = |ev: &mut Evidence, text: String| put_file(ev, JAIL_FILE, text, 0o644);
        // The stock profiles: internal 5060/5061, external 5080/5081 (the ports the firewall opens).
        put(&mut ev, jail("5081,5060,5061,5080"));
        let f = eval("FS-F2B-02", &ev);
        assert_eq!(f.status, Status::Pass, "{:?}", f.evidence);
        assert!(
            f.evidence
                .iter()
                .any(|e| e.contains("bans on ports 5060,5061,5080,5081, the SIP"))
        );
        put(&mut ev, jail("5060"));
        assert_eq!(
            fails("FS-F2B-02", &ev),
            [format!(
                "{JAIL_FILE} bans on ports 5060, but the profiles' SIP and SIP-TLS ports are 5060,5061,5080,5081"
            )]
        );
    }
}
