//! Firewall controls: active with default deny, Event Socket port closed, RTP open.

use super::evidence::{Evidence, IptablesInput};
use super::{Control, ControlError, Finding, Severity};
use crate::model::ufw::{self, UfwState};

pub const CONTROLS: &[Control] = &[
    Control {
        id: "FS-FW-01",
        family: "Firewall",
        severity: Severity::High,
        title: "A host firewall is active with default deny for incoming traffic",
        rationale: "Without a default-deny firewall every service FreeSWITCH or the OS starts on a \
                    public address is reachable, including ones nobody meant to expose.",
        remediation: "Run `fsfleet harden` (ufw with default deny, SSH on its real ports, SIP and RTP \
                      allowed), or configure ufw by hand keeping your SSH port open.",
        baseline: true,
        eval: active_default_deny,
    },
    Control {
        id: "FS-FW-02",
        family: "Firewall",
        severity: Severity::High,
        title: "The firewall does not allow the Event Socket port",
        rationale: "The Event Socket controls the whole switch; it is reached through SSH, never \
                    through a firewall opening.",
        remediation: "Where a rule allows the port, delete it (ufw: `ufw status numbered`, then \
                      `ufw delete N`; iptables: `iptables -D INPUT` with the rule's words); where no \
                      firewall is active there is no rule to delete: turn on a default-deny \
                      firewall (FS-FW-01, `fsfleet harden` does). Reach the Event Socket through \
                      an SSH tunnel.",
        baseline: true,
        eval: esl_port_closed,
    },
    Control {
        id: "FS-FW-03",
        family: "Firewall",
        severity: Severity::Medium,
        title: "The RTP port range is allowed (UDP)",
        rationale: "A firewall that blocks RTP lets calls connect with no audio: the classic \
                    one-way or silent call after hardening.",
        remediation: "Allow the rtp-start-port..rtp-end-port range of switch.conf.xml over UDP, \
                      e.g. `ufw allow 16384:32768/udp` (fsfleet harden does).",
        baseline: true,
        eval: rtp_allowed,
    },
];

/// ufw's state from the host model (the one harden plans from). Ok(None): ufw is not
/// installed. Err: the status probe did not run.
pub fn ufw(ev: &Evidence) -> Result<Option<UfwState>, ControlError> {
    if !ev.facts.get::<crate::facts::UfwStatus>()?.ran {
        return Err(ControlError::ProbeNotRun {
            probe: "ufw status".into(),
            status: None,
        });
    }
    let state = UfwState::from_facts(&ev.facts);
    Ok(state.installed.then_some(state))
}

/// The INPUT policy of `iptables -S INPUT` (`-P INPUT DROP`).
fn iptables_policy(ev: &Evidence) -> Option<String> {
    ev.facts.get::<IptablesInput>().ok()?.policy
}

fn active_default_deny(ev: &Evidence) -> Result<Finding, ControlError> {
    Ok(match ufw(ev)? {
        Some(ufw) if ufw.active => {
            let d = ufw.incoming.as_str();
            let line = format!("ufw is active, default {d} (incoming)");
            if matches!(d, "deny" | "reject") {
                Finding::pass(vec![line])
            } else {
                Finding::fail(vec![line])
            }
        }
        ufw => {
            let what = if ufw.is_some() {
                "ufw is installed but inactive"
            } else {
                "ufw is not installed"
            };
            match iptables_policy(ev).as_deref() {
                Some(p @ ("DROP" | "REJECT")) => {
                    Finding::pass(vec![format!("{what}; the iptables INPUT policy is {p}")])
                }
                Some(p) => Finding::fail(vec![format!("{what}; the iptables INPUT policy is {p}")]),
                None => Finding::fail(vec![format!("{what}; no iptables INPUT policy found")]),
            }
        }
    })
}

fn esl_port_closed(ev: &Evidence) -> Result<Finding, ControlError> {
    let port = ev.esl_port();
    Ok(match ufw(ev)? {
        Some(ufw) if ufw.active => {
            let rules = ufw.admitting(port, "tcp");
            if rules.is_empty() {
                Finding::pass(vec![format!("ufw: no rule allows TCP port {port}")])
            } else {
                Finding::fail(
                    rules
                        .iter()
                        .map(|r| {
                            // The rules file names where the rule to delete lives (SARIF's
                            // physical location).
                            let file = if r.v6 {
                                ufw::USER6_RULES
                            } else {
                                ufw::USER_RULES
                            };
                            format!("{file}: TCP port {port} allowed by `{}`", r.describe())
                        })
                        .collect(),
                )
            }
        }
        _ => {
            let iptables = ev.facts.get::<IptablesInput>().unwrap_or_default();
            let opened = iptables.accepting(port);
            match iptables_policy(ev).as_deref() {
                Some("DROP" | "REJECT") if opened.is_empty() => Finding::pass(vec![format!(
                    "ufw not active; the iptables INPUT policy drops and no rule accepts port {port}"
                )]),
                Some("DROP" | "REJECT") => {
                    Finding::fail(opened.iter().map(|l| format!("iptables: {l}")).collect())
                }
                _ => Finding::fail(vec![format!(
                    "no firewall is active, so nothing blocks TCP port {port}: there is no rule \
                     to delete, a default-deny firewall closes it (FS-FW-01)"
                )]),
            }
        }
    })
}

/// The range checked is the host model's, the one harden opens: an unusable or inverted range
/// in switch.conf.xml is FreeSWITCH's default, with a note.
fn rtp_allowed(ev: &Evidence) -> Result<Finding, ControlError> {
    ev.conf_dir()?;
    let rtp = ev.model().rtp();
    let (lo, hi) = (rtp.ports.first, rtp.ports.last);
    let notes: Vec<String> = rtp.warnings.iter().map(|w| format!("note: {w}")).collect();
    let finding = match ufw(ev)? {
        Some(ufw) if ufw.active => {
            // Each family ufw filters must let RTP in: IPv4 packets meet only user.rules.
            let open =
                |p: u16, v6: bool| ufw.tuples.iter().any(|t| t.v6 == v6 && t.admits(p, "udp"));
            let missing: Vec<u16> = (lo..=hi)
                .filter(|p| !open(*p, false) || (ufw.ipv6 && !open(*p, true)))
                .collect();
            match (missing.first(), missing.last()) {
                (None, _) | (_, None) => {
                    Finding::pass(vec![format!("ufw allows the RTP range {lo}:{hi}/udp")])
                }
                (Some(a), Some(b)) => Finding::fail(vec![format!(
                    "ufw does not allow {} of the RTP ports {lo}:{hi}/udp (first {a}, last {b}): calls will have no audio",
                    missing.len()
                )]),
            }
        }
        _ => Finding::pass(vec![format!(
            "ufw is not active: nothing blocks the RTP range {lo}:{hi}/udp (see FS-FW-01)"
        )]),
    };
    Ok(finding.with_notes(notes))
}

#[cfg(test)]
mod tests {
    use super::super::evidence::testing::*;
    use super::super::{Live, Status};
    use super::*;

    /// What ufw writes for fsfleet's rules (comments hex-encoded).
    const HARDENED: &str = "### tuple ### allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in comment=6673666c656574\n\
        ### tuple ### allow udp 16384:32768 0.0.0.0/0 any 0.0.0.0/0 in comment=6673666c656574\n\
        ### tuple ### allow udp 5060 0.0.0.0/0 any 0.0.0.0/0 in comment=6673666c656574\n";
    const HARDENED6: &str = "### tuple ### allow tcp 22 ::/0 any ::/0 in comment=6673666c656574\n\
        ### tuple ### allow udp 16384:32768 ::/0 any ::/0 in comment=6673666c656574\n";
    const ACTIVE: (&str, &str, i32) = ("ufw_status", "Status: active", 0);

    fn ufw_ev(status: (&str, &str, i32), rules: &str, input: &str) -> Evidence {
        let mut ev = evidence(&stock_files(), &[status], Live::default());
        ufw_files(&mut ev, rules, HARDENED6, input);
        ev
    }

    #[test]
    fn fresh_host_without_firewall_fails() {
        let ev = evidence(
            &stock_files(),
            &[
                ("ufw_status", "", 1),
                ("audit_iptables", "-P INPUT ACCEPT\n", 0),
            ],
            Live::default(),
        );
        let f = eval("FS-FW-01", &ev);
        assert_eq!(f.status, Status::Fail);
        assert_eq!(
            f.evidence,
            ["ufw is not installed; the iptables INPUT policy is ACCEPT"]
        );
        assert_eq!(
            eval("FS-FW-02", &ev).evidence,
            [
                "no firewall is active, so nothing blocks TCP port 8021: there is no rule to \
                 delete, a default-deny firewall closes it (FS-FW-01)"
            ]
        );
        let f = eval("FS-FW-03", &ev);
        assert_eq!(f.status, Status::Pass);
        assert!(f.evidence[0].contains("nothing blocks the RTP range 16384:32768/udp"));
        // The fix fits each state FS-FW-02 fails in: a ufw rule, an iptables rule, no firewall.
        let fix = crate::audit::control("FS-FW-02").unwrap().remediation;
        for words in [
            "`ufw delete N`",
            "`iptables -D INPUT`",
            "no firewall is active there is no rule to delete",
        ] {
            assert!(fix.contains(words), "{words}: {fix}");
        }
    }

    #[test]
    fn hardened_ufw_passes_and_bad_rules_are_named() {
        let ev = ufw_ev(ACTIVE, HARDENED, "DROP");
        for id in ["FS-FW-01", "FS-FW-02", "FS-FW-03"] {
            assert_eq!(eval(id, &ev).status, Status::Pass, "{id}");
        }
        assert_eq!(
            eval("FS-FW-01", &ev).evidence,
            ["ufw is active, default deny (incoming)"]
        );
        let opened = format!("{HARDENED}### tuple ### allow tcp 8021 0.0.0.0/0 any 0.0.0.0/0 in\n")
            .replace("16384:32768", "16384:20000");
        let ev = ufw_ev(ACTIVE, &opened, "DROP");
        assert_eq!(
            eval("FS-FW-02", &ev).evidence,
            ["/etc/ufw/user.rules: TCP port 8021 allowed by `allow 8021/tcp from anywhere`"]
        );
        assert_eq!(
            eval("FS-FW-03", &ev).evidence,
            [
                "ufw does not allow 12768 of the RTP ports 16384:32768/udp (first 20001, last 32768): calls will have no audio"
            ]
        );
        let ev = ufw_ev(("ufw_status", "Status: inactive", 0), HARDENED, "DROP");
        assert_eq!(
            eval("FS-FW-01", &ev).evidence,
            ["ufw is installed but inactive; no iptables INPUT policy found"]
        );
        let ev = ufw_ev(ACTIVE, HARDENED, "ACCEPT");
        assert_eq!(eval("FS-FW-01", &ev).status, Status::Fail);
        let ev = evidence(&stock_files(), &[], Live::default());
        assert_eq!(eval("FS-FW-01", &ev).status, Status::Error);
    }

    #[test]
    fn rtp_range_is_the_one_harden_opens_with_what_was_assumed() {
        let mut files = stock_files();
        edit(&mut files, "autoload_configs/switch.conf.xml", |t| {
            t.replace(
                "<!-- <param name=\"rtp-start-port\" value=\"16384\"/> -->",
                "<param name=\"rtp-start-port\" value=\"40000\"/>",
            )
        });
        let mut ev = evidence(&files, &[ACTIVE], Live::default());
        ufw_files(&mut ev, HARDENED, HARDENED6, "DROP");
        let f = eval("FS-FW-03", &ev);
        assert_eq!(f.status, Status::Pass, "{:?}", f.evidence);
        assert_eq!(f.evidence[0], "ufw allows the RTP range 16384:32768/udp");
        assert!(
            f.evidence[1].starts_with("note: /etc/freeswitch/autoload_configs/switch.conf.xml: rtp-start-port 40000 is above rtp-end-port 32768"),
            "{:?}",
            f.evidence
        );
    }

    #[test]
    fn rule_shapes_of_user_rules() {
        let mut ev = evidence(&stock_files(), &[ACTIVE], Live::default());
        ufw_files(
            &mut ev,
            "### tuple ### allow any any 0.0.0.0/0 any 10.0.0.0/8 in\n\
             ### tuple ### allow tcp 80,443 0.0.0.0/0 any 0.0.0.0/0 in\n\
             ### tuple ### limit tcp 22 0.0.0.0/0 any 0.0.0.0/0 OpenSSH - in\n\
             ### tuple ### allow tcp 8080,8443 0.0.0.0/0 any 0.0.0.0/0 Apache%20Full - in\n\
             ### tuple ### allow any 5060 0.0.0.0/0 any 0.0.0.0/0 in_eth0\n\
             ### tuple ### allow any any 0.0.0.0/0 any 0.0.0.0/0 out_eth0\n",
            "",
            "DROP",
        );
        let u = ufw(&ev).unwrap().unwrap();
        let t = &u.tuples;
        assert_eq!(t.len(), 6);
        assert!(t[0].admits(8021, "tcp") && !t[0].from_anywhere());
        assert!(t[1].admits(443, "tcp") && !t[1].admits(443, "udp"));
        assert!(t[2].admits(22, "tcp") && t[2].action == "limit");
        // user.rules names an application profile's ports: they count.
        assert!(t[3].admits(8443, "tcp"));
        assert!(t[4].admits(5060, "udp"));
        assert!(!t[5].admits(5060, "udp"), "outbound");
        assert_eq!(u.admitting(5060, "udp").len(), 2);
    }

    #[test]
    fn rtp_must_be_open_in_each_family_ufw_filters() {
        let v6_only = ufw_ev(
            ACTIVE,
            &HARDENED.replace("16384:32768", "16384:16385"),
            "DROP",
        );
        let f = eval("FS-FW-03", &v6_only);
        assert_eq!(f.status, Status::Fail, "{:?}", f.evidence);
        let mut v4_only = evidence(&stock_files(), &[ACTIVE], Live::default());
        ufw_files(&mut v4_only, HARDENED, "", "DROP");
        assert_eq!(eval("FS-FW-03", &v4_only).status, Status::Fail);
    }
}
