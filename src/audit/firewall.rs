//! Firewall controls: active with default deny, Event Socket port closed, RTP open.

use super::evidence::Evidence;
use super::{Control, Finding, Severity};

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
        remediation: "Delete the rule (`ufw status numbered`, then `ufw delete N`) and reach the \
                      Event Socket through an SSH tunnel.",
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

/// One rule line of `ufw status verbose`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub line: String,
    /// Port ranges; empty means any port.
    pub ports: Vec<(u16, u16)>,
    /// `tcp`, `udp`, or None for both.
    pub proto: Option<String>,
    pub allow: bool,
    pub from: String,
    /// The `To` names an application profile fsfleet cannot resolve.
    pub unknown_to: bool,
}

impl Rule {
    pub fn from_anywhere(&self) -> bool {
        self.from.starts_with("Anywhere")
    }

    pub fn covers(&self, port: u16, proto: &str) -> bool {
        !self.unknown_to
            && self.proto.as_deref().is_none_or(|p| p == proto)
            && (self.ports.is_empty() || self.ports.iter().any(|(a, b)| (*a..=*b).contains(&port)))
    }
}

/// What `ufw status verbose` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ufw {
    pub active: bool,
    /// `deny`, `reject`, `allow` (incoming), when shown.
    pub default_incoming: Option<String>,
    pub rules: Vec<Rule>,
}

impl Ufw {
    pub fn parse(text: &str) -> Ufw {
        let mut ufw = Ufw {
            active: false,
            default_incoming: None,
            rules: Vec::new(),
        };
        let mut in_rules = false;
        ufw.active = crate::model::ufw_status_active(text);
        for line in text.lines() {
            let l = line.trim_end();
            if l.starts_with("Status: ") {
                continue;
            } else if let Some(d) = l.strip_prefix("Default: ") {
                ufw.default_incoming = d
                    .split(',')
                    .find(|p| p.contains("(incoming)"))
                    .and_then(|p| p.split_whitespace().next())
                    .map(str::to_string);
            } else if l.starts_with("--") {
                in_rules = true;
            } else if in_rules
                && !l.trim().is_empty()
                && let Some(r) = parse_rule(l)
            {
                ufw.rules.push(r);
            }
        }
        ufw
    }

    /// Allow/limit rules that let `port/proto` in.
    pub fn allowing(&self, port: u16, proto: &str) -> Vec<&Rule> {
        self.rules
            .iter()
            .filter(|r| r.allow && r.covers(port, proto))
            .collect()
    }

    /// Ok(None): ufw is not installed. Err: the snippet did not run.
    pub fn from_evidence(ev: &Evidence) -> Result<Option<Ufw>, String> {
        match ev.section("audit_ufw") {
            (_, Some(3)) => Ok(None),
            (text, Some(0)) => Ok(Some(Ufw::parse(text))),
            (text, status) => Err(format!(
                "`ufw status verbose` failed on the host (status {status:?}): {}",
                text.lines().next().unwrap_or("no output")
            )),
        }
    }
}

fn parse_rule(line: &str) -> Option<Rule> {
    // Columns are separated by two or more spaces; a trailing `# comment` is not a column.
    let body = line.split(" # ").next().unwrap_or(line);
    let cols: Vec<&str> = body
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    let [to, action, from, ..] = cols.as_slice() else {
        return None;
    };
    if action.contains("OUT") {
        return None;
    }
    let to = to.trim_end_matches(" (v6)");
    let to = to.split(" on ").next().unwrap_or(to);
    let (spec, proto) = match to.rsplit_once('/') {
        Some((s, p)) => (s, Some(p.to_string())),
        None => (to, None),
    };
    let mut ports = Vec::new();
    let mut unknown_to = false;
    if spec == "Anywhere" {
    } else if spec == "OpenSSH" {
        ports.push((22, 22));
    } else {
        for part in spec.split(',') {
            let r = match part.split_once(':') {
                Some((a, b)) => a.parse().ok().zip(b.parse().ok()),
                None => part.parse().ok().map(|p| (p, p)),
            };
            match r {
                Some(r) => ports.push(r),
                None => unknown_to = true,
            }
        }
    }
    Some(Rule {
        line: line.split_whitespace().collect::<Vec<_>>().join(" "),
        ports,
        proto,
        allow: action.starts_with("ALLOW") || action.starts_with("LIMIT"),
        from: from.to_string(),
        unknown_to,
    })
}

/// The INPUT policy of `iptables -S INPUT` (`-P INPUT DROP`).
fn iptables_policy(ev: &Evidence) -> Option<String> {
    let (text, status) = ev.section("audit_iptables");
    if status != Some(0) {
        return None;
    }
    text.lines()
        .find_map(|l| l.strip_prefix("-P INPUT "))
        .map(|p| p.trim().to_string())
}

fn active_default_deny(ev: &Evidence) -> Finding {
    match Ufw::from_evidence(ev) {
        Err(e) => Finding::error(e),
        Ok(Some(ufw)) if ufw.active => {
            let d = ufw.default_incoming.as_deref().unwrap_or("unknown");
            let line = format!("ufw is active, default {d} (incoming)");
            if matches!(d, "deny" | "reject") {
                Finding::pass(vec![line])
            } else {
                Finding::fail(vec![line])
            }
        }
        Ok(ufw) => {
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
    }
}

fn esl_port_closed(ev: &Evidence) -> Finding {
    let port = ev.esl_port();
    match Ufw::from_evidence(ev) {
        Err(e) => Finding::error(e),
        Ok(Some(ufw)) if ufw.active => {
            let rules = ufw.allowing(port, "tcp");
            if rules.is_empty() {
                Finding::pass(vec![format!("ufw: no rule allows TCP port {port}")])
            } else {
                Finding::fail(
                    rules
                        .iter()
                        .map(|r| format!("ufw: TCP port {port} allowed by `{}`", r.line))
                        .collect(),
                )
            }
        }
        Ok(_) => {
            let (text, _) = ev.section("audit_iptables");
            let opened: Vec<&str> = text
                .lines()
                .filter(|l| l.contains(&format!("--dport {port} ")) && l.contains("-j ACCEPT"))
                .collect();
            match iptables_policy(ev).as_deref() {
                Some("DROP" | "REJECT") if opened.is_empty() => Finding::pass(vec![format!(
                    "ufw not active; the iptables INPUT policy drops and no rule accepts port {port}"
                )]),
                Some("DROP" | "REJECT") => {
                    Finding::fail(opened.iter().map(|l| format!("iptables: {l}")).collect())
                }
                _ => Finding::fail(vec![format!(
                    "no firewall is active, so nothing blocks TCP port {port}"
                )]),
            }
        }
    }
}

/// The range checked is the host model's, the one harden opens: an unusable or inverted range
/// in switch.conf.xml is FreeSWITCH's default, with a note.
fn rtp_allowed(ev: &Evidence) -> Finding {
    if let Err(e) = ev.conf_dir() {
        return Finding::error(e);
    }
    let rtp = ev.model().rtp();
    let (lo, hi) = (rtp.ports.first, rtp.ports.last);
    let notes: Vec<String> = rtp.warnings.iter().map(|w| format!("note: {w}")).collect();
    let finding = match Ufw::from_evidence(ev) {
        Err(e) => Finding::error(e),
        Ok(Some(ufw)) if ufw.active => {
            let missing: Vec<u16> = (lo..=hi)
                .filter(|p| ufw.allowing(*p, "udp").is_empty())
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
        Ok(_) => Finding::pass(vec![format!(
            "ufw is not active: nothing blocks the RTP range {lo}:{hi}/udp (see FS-FW-01)"
        )]),
    };
    finding.with_notes(notes)
}

#[cfg(test)]
mod tests {
    use super::super::evidence::testing::*;
    use super::super::{Live, Status};
    use super::*;

    fn eval(id: &str, ev: &Evidence) -> Finding {
        (CONTROLS.iter().find(|c| c.id == id).unwrap().eval)(ev)
    }

    const HARDENED: &str = "Status: active\nLogging: on (low)\nDefault: deny (incoming), allow (outgoing), disabled (routed)\nNew profiles: skip\n\nTo                         Action      From\n--                         ------      ----\n22/tcp                     ALLOW IN    Anywhere                   # fsfleet\n16384:32768/udp            ALLOW IN    Anywhere                   # fsfleet\n5060/udp                   ALLOW IN    Anywhere                   # fsfleet\n22/tcp (v6)                ALLOW IN    Anywhere (v6)              # fsfleet\n";

    #[test]
    fn fresh_host_without_firewall_fails() {
        let ev = evidence(
            &stock_files(),
            &[
                ("audit_ufw", "", 3),
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
            ["no firewall is active, so nothing blocks TCP port 8021"]
        );
        let f = eval("FS-FW-03", &ev);
        assert_eq!(f.status, Status::Pass);
        assert!(f.evidence[0].contains("nothing blocks the RTP range 16384:32768/udp"));
    }

    #[test]
    fn hardened_ufw_passes_and_bad_rules_are_named() {
        let ev = evidence(
            &stock_files(),
            &[("audit_ufw", HARDENED, 0)],
            Live::default(),
        );
        for id in ["FS-FW-01", "FS-FW-02", "FS-FW-03"] {
            assert_eq!(eval(id, &ev).status, Status::Pass, "{id}");
        }
        let opened = format!("{HARDENED}8021/tcp                   ALLOW IN    Anywhere\n")
            .replace("16384:32768/udp", "16384:20000/udp");
        let ev = evidence(
            &stock_files(),
            &[("audit_ufw", &opened, 0)],
            Live::default(),
        );
        assert_eq!(
            eval("FS-FW-02", &ev).evidence,
            ["ufw: TCP port 8021 allowed by `8021/tcp ALLOW IN Anywhere`"]
        );
        assert_eq!(
            eval("FS-FW-03", &ev).evidence,
            [
                "ufw does not allow 12768 of the RTP ports 16384:32768/udp (first 20001, last 32768): calls will have no audio"
            ]
        );
        let inactive = "Status: inactive\n";
        let ev = evidence(
            &stock_files(),
            &[("audit_ufw", inactive, 0)],
            Live::default(),
        );
        assert_eq!(
            eval("FS-FW-01", &ev).evidence,
            ["ufw is installed but inactive; no iptables INPUT policy found"]
        );
        let allow = HARDENED.replace("deny (incoming)", "allow (incoming)");
        let ev = evidence(&stock_files(), &[("audit_ufw", &allow, 0)], Live::default());
        assert_eq!(eval("FS-FW-01", &ev).status, Status::Fail);
        let ev = evidence(&stock_files(), &[], Live::default());
        assert_eq!(eval("FS-FW-01", &ev).status, Status::Error);
    }

    #[test]
    fn parses_rule_shapes() {
        let u = Ufw::parse(
            "Status: active\nTo Action From\n-- ------ ----\nAnywhere                   ALLOW IN    10.0.0.0/8\n80,443/tcp                 ALLOW IN    Anywhere\nOpenSSH                    LIMIT IN    Anywhere\nApache Full                ALLOW IN    Anywhere\n5060 on eth0               ALLOW IN    Anywhere\nAnywhere                   ALLOW OUT   Anywhere on eth0\n",
        );
        assert_eq!(u.rules.len(), 5);
        assert!(u.rules[0].covers(8021, "tcp") && !u.rules[0].from_anywhere());
        assert!(u.rules[1].covers(443, "tcp") && !u.rules[1].covers(443, "udp"));
        assert!(u.rules[2].covers(22, "tcp") && u.rules[2].allow);
        assert!(!u.rules[3].covers(80, "tcp"), "unknown app profile");
        assert!(u.rules[4].covers(5060, "udp"));
    }
}
