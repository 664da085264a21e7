//! fail2ban controls: running, a FreeSWITCH jail on the real log, a filter that matches THIS
//! host's log format (proved with fail2ban-regex on the host), enforceable bans, sshd jail.

use super::evidence::{Evidence, PROBE_IP};
use super::{Control, ControlError, Finding, Severity};

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

/// The `Currently banned` / `Total failed` counters of `fail2ban-client status JAIL`.
fn counters(status: &str) -> String {
    let get = |k: &str| {
        status
            .lines()
            .find_map(|l| l.split_once(k).map(|(_, v)| v.trim().to_string()))
            .unwrap_or_else(|| "?".into())
    };
    format!(
        "currently banned {}, total failed {}",
        get("Currently banned:"),
        get("Total failed:")
    )
}

fn jail(ev: &Evidence) -> Result<Finding, ControlError> {
    let (text, status) = ev.section("audit_f2b_jail");
    match status {
        Some(3) => {
            return Ok(Finding::fail(vec![
                "fail2ban-client is not installed".into(),
            ]));
        }
        Some(5) => {
            return Ok(Finding::fail(vec![format!(
                "no jail named freeswitch is running: fail2ban-server is not running{}",
                server_hint(ev)
            )]));
        }
        Some(4) => {
            return Ok(Finding::fail(vec![
                "no jail named freeswitch is running (`fail2ban-client status freeswitch` failed)"
                    .into(),
            ]));
        }
        Some(0) => {}
        other => {
            return Err(ControlError::ProbeNotRun {
                probe: "fail2ban jail".into(),
                status: other,
            });
        }
    }
    let mut bad = Vec::new();
    let mut ok = vec![format!("jail freeswitch is running: {}", counters(text))];
    let mut watched = Vec::new();
    for l in text.lines() {
        if let Some(p) = l.strip_prefix("@exists ") {
            watched.push(p.to_string());
            ok.push(format!("watches {p} (exists)"));
        } else if let Some(p) = l.strip_prefix("@missing ") {
            bad.push(format!("watches {p}, which does not exist"));
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
    Ok(Finding::fail_if(bad, ok))
}

fn filter_matches(ev: &Evidence) -> Result<Finding, ControlError> {
    let (text, status) = ev.section("audit_f2b_regex");
    match status {
        Some(3) => {
            return Ok(Finding::fail(vec![
                "fail2ban-regex is not installed (fail2ban is missing)".into(),
            ]));
        }
        Some(0) | Some(1) => {}
        other => {
            return Err(ControlError::ProbeNotRun {
                probe: "fail2ban-regex".into(),
                status: other,
            });
        }
    }
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(str::trim)
            .unwrap_or("")
    };
    let log = field("log ");
    let format = match field("format ") {
        "percent" => format!("{log} has the 1.10.7+ idle-cpu percent field"),
        "plain" => format!("{log} has no percent field (before 1.10.7)"),
        _ if log.is_empty() => {
            "no FreeSWITCH log found; tested the 1.10.7+ format (idle-cpu percent field)".into()
        }
        _ => format!("{log} has no dated line yet; tested the 1.10.7+ format"),
    };
    let Some(lines) = text.lines().find(|l| l.starts_with("Lines:")) else {
        let err = text
            .lines()
            .find(|l| l.contains("rror") || l.contains("No section"))
            .unwrap_or("no result line");
        return Err(ControlError::RegexNoResult(err.to_string()));
    };
    let matched = lines
        .split(',')
        .find_map(|p| p.trim().strip_suffix(" matched"))
        .and_then(|n| n.trim().parse::<u32>().ok())
        .unwrap_or(0);
    let line = format!(
        "crafted auth failure from {PROBE_IP} in this host's format: fail2ban-regex says {}",
        lines.trim_start_matches("Lines:").trim()
    );
    Ok(if matched >= 1 {
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
    let (text, status) = ev.section("audit_f2b_sshd");
    match status {
        Some(3) => {
            return Ok(Finding::fail(vec![
                "fail2ban-client is not installed".into(),
            ]));
        }
        Some(5) => {
            return Ok(Finding::fail(vec![format!(
                "no jail named sshd is running: fail2ban-server is not running{}",
                server_hint(ev)
            )]));
        }
        Some(4) => {
            return Ok(Finding::fail(vec![
                "no jail named sshd is running (`fail2ban-client status sshd` failed)".into(),
            ]));
        }
        Some(0) => {}
        other => {
            return Err(ControlError::ProbeNotRun {
                probe: "sshd jail".into(),
                status: other,
            });
        }
    }
    if let Some(m) = text
        .lines()
        .find_map(|l| l.split_once("Journal matches:").map(|(_, m)| m.trim()))
    {
        return Ok(Finding::pass(vec![format!(
            "jail sshd reads the journal: {m}"
        )]));
    }
    let exists: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("@exists "))
        .collect();
    let missing: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("@missing "))
        .map(|p| format!("jail sshd watches {p}, which does not exist"))
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
            ("audit_f2b_jail", "", 3),
            ("audit_f2b_regex", "", 3),
            ("audit_f2b_sshd", "", 3),
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
        let ev = with(&[("audit_f2b_jail", "", 5), ("audit_f2b_sshd", "", 5)]);
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
                "audit_f2b_jail",
                "Status for the jail: freeswitch\n@missing /var/log/freeswitch.log\n",
                0,
            ),
            (
                "audit_f2b_regex",
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
        let mut ev = with(&[
            ("audit_f2b_jail", JAIL, 0),
            (
                "audit_f2b_regex",
                "log /var/log/freeswitch/freeswitch.log\nformat percent\nLines: 1 lines, 0 ignored, 1 matched, 0 missed\n",
                0,
            ),
            (
                "audit_f2b_sshd",
                "Status for the jail: sshd\n|- Filter\n|  `- Journal matches:\t_SYSTEMD_UNIT=sshd.service + _COMM=sshd\n",
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
            "audit_f2b_regex",
            "log x\nformat plain\nERROR: No section: 'Definition'\n",
            0,
        )]);
        let f = eval("FS-F2B-03", &ev);
        assert_eq!(f.status, Status::Error);
        assert!(f.evidence[0].contains("No section"));
        // sshd jail on a file that is gone.
        let ev = with(&[(
            "audit_f2b_sshd",
            "Status for the jail: sshd\n|  `- File list:\t/var/log/auth.log\n@missing /var/log/auth.log\n",
            0,
        )]);
        assert_eq!(
            eval("FS-F2B-05", &ev).evidence,
            ["jail sshd watches /var/log/auth.log, which does not exist"]
        );
    }
}
