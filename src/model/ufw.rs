//! ufw's state, one representation for harden and audit: the rules of /etc/ufw/user.rules and
//! user6.rules (the `### tuple ###` lines ufw itself reloads from), the default policies of
//! /etc/default/ufw, and whether ufw is active from the base facts (asked without starting
//! ufw's Python, see [`crate::facts::UFW_STATUS_SNIPPET`]).

use std::net::IpAddr;

use ipnet::IpNet;

use super::Ports;
use crate::harden::HostFacts;

pub const USER_RULES: &str = "/etc/ufw/user.rules";
pub const USER6_RULES: &str = "/etc/ufw/user6.rules";
pub const UFW_DEFAULTS: &str = "/etc/default/ufw";
/// Comments of the rules fsfleet adds start with this word.
pub const COMMENT_TAG: &str = "fsfleet";

/// One rule of /etc/ufw/user.rules or user6.rules (its `### tuple ###` line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tuple {
    pub action: String,
    pub proto: String,
    pub dport: String,
    pub dst: String,
    pub sport: String,
    pub src: String,
    /// `in`, `out`, or `in_eth0` style with an interface.
    pub direction: String,
    /// Decoded comment.
    pub comment: Option<String>,
    pub v6: bool,
}

impl Tuple {
    pub fn is_fsfleet(&self) -> bool {
        self.comment
            .as_deref()
            .is_some_and(|c| c == COMMENT_TAG || c.starts_with("fsfleet "))
    }

    pub fn describe(&self) -> String {
        let src = if is_any(&self.src) {
            "anywhere".to_string()
        } else {
            self.src.clone()
        };
        let dport = if self.dport == "any" {
            "any port".to_string()
        } else {
            self.dport.clone()
        };
        let comment = self
            .comment
            .as_deref()
            .map(|c| format!(" # {c}"))
            .unwrap_or_default();
        format!(
            "{} {dport}/{} from {src}{}{comment}",
            self.action,
            self.proto,
            if self.v6 { " (v6)" } else { "" }
        )
    }

    /// A plain inbound rule to any local address from any source port: the only shape fsfleet
    /// writes and the only one it counts as opening a port.
    pub fn plain_inbound(&self) -> bool {
        self.direction == "in" && is_any(&self.dst) && self.sport == "any"
    }

    pub fn src_net(&self) -> Option<IpNet> {
        parse_net(&self.src)
    }

    /// Does this tuple deny/reject tcp to `port` from anywhere (an SSH lock-out waiting)?
    pub fn blocks_tcp(&self, port: u16) -> bool {
        (self.action.starts_with("deny") || self.action.starts_with("reject"))
            && self.direction == "in"
            && is_any(&self.dst)
            && is_any(&self.src)
            && self.sport == "any"
            && (self.proto == "tcp" || self.proto == "any")
            && (self.dport == "any" || dport_covers(&self.dport, Ports::one(port)))
    }

    /// `ufw delete ...` arguments for this tuple (fsfleet's rules only have the plain shape).
    pub fn delete_args(&self) -> Option<String> {
        if !self.plain_inbound() || self.action != "allow" {
            return None;
        }
        // These words come from a file on the host and go into a root shell line: only the
        // shapes ufw itself writes (a protocol name, an address or network, port numbers and
        // ranges) are used; anything else leaves the rule alone.
        let proto_ok = !self.proto.is_empty()
            && self
                .proto
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let src_ok = is_any(&self.src) || parse_net(&self.src).is_some();
        let dport_ok = self.dport == "any"
            || (!self.dport.is_empty()
                && self
                    .dport
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == ':' || c == ','));
        if !(proto_ok && src_ok && dport_ok) {
            return None;
        }
        let mut s = String::from("delete allow");
        if self.proto != "any" {
            s.push_str(&format!(" proto {}", self.proto));
        }
        if !is_any(&self.src) {
            s.push_str(&format!(" from {}", self.src));
        }
        s.push_str(" to any");
        if self.dport != "any" {
            s.push_str(&format!(" port {}", self.dport));
        }
        Some(s)
    }
}

pub(crate) fn is_any(addr: &str) -> bool {
    matches!(addr, "0.0.0.0/0" | "::/0" | "any")
}

pub(crate) fn parse_net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

/// ufw's dport field: `any`, `5060`, `16384:32768`, `80,443,8000:8100`.
pub(crate) fn dport_covers(dport: &str, want: Ports) -> bool {
    dport.split(',').any(|part| {
        let (a, b) = part.split_once(':').unwrap_or((part, part));
        match (a.trim().parse::<u16>(), b.trim().parse::<u16>()) {
            (Ok(a), Ok(b)) => a <= want.first && want.last <= b,
            _ => false,
        }
    })
}

pub(crate) fn hex_decode(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// The `### tuple ###` lines of a user.rules file.
pub fn parse_tuples(text: &str, v6: bool) -> Vec<Tuple> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("### tuple ###"))
        .filter_map(|rest| {
            let mut words: Vec<&str> = rest.split_whitespace().collect();
            let comment = match words.last() {
                Some(w) if w.starts_with("comment=") => {
                    let hex = &w["comment=".len()..];
                    let c = hex_decode(hex).unwrap_or_else(|| hex.to_string());
                    words.pop();
                    Some(c)
                }
                _ => None,
            };
            // 7 fields, or 9 with application names (dapp sapp) before the direction.
            let direction = match words.len() {
                7 => words[6],
                9 => words[8],
                _ => return None,
            };
            Some(Tuple {
                action: words[0].to_string(),
                proto: words[1].to_string(),
                dport: words[2].to_string(),
                dst: words[3].to_string(),
                sport: words[4].to_string(),
                src: words[5].to_string(),
                direction: direction.to_string(),
                comment,
                v6,
            })
        })
        .collect()
}

/// `KEY="value"` of /etc/default/ufw.
pub(crate) fn shell_var<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().rev().find_map(|l| {
        let (k, v) = l.trim().split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').trim_matches('\''))
    })
}

/// The default policies from /etc/default/ufw, spelled like `ufw status verbose`.
pub(crate) fn file_defaults(text: &str) -> (String, String) {
    let word = |v: Option<&str>| match v.map(str::to_ascii_uppercase).as_deref() {
        Some("DROP") => "deny".to_string(),
        Some("ACCEPT") => "allow".to_string(),
        Some("REJECT") => "reject".to_string(),
        _ => "unknown".to_string(),
    };
    (
        word(shell_var(text, "DEFAULT_INPUT_POLICY")),
        word(shell_var(text, "DEFAULT_OUTPUT_POLICY")),
    )
}

impl Tuple {
    /// Whether this rule lets `proto` traffic to `port` in: any inbound allow or limit rule,
    /// whatever its interface, destination or source (what the audit counts as open).
    pub fn admits(&self, port: u16, proto: &str) -> bool {
        (self.action.starts_with("allow") || self.action.starts_with("limit"))
            && self.direction.starts_with("in")
            && self.sport == "any"
            && (self.proto == proto || self.proto == "any")
            && (self.dport == "any" || dport_covers(&self.dport, Ports::one(port)))
    }

    pub fn from_anywhere(&self) -> bool {
        is_any(&self.src)
    }
}

/// What ufw looks like on the host now.
#[derive(Debug, Clone, Default)]
pub struct UfwState {
    pub installed: bool,
    pub active: bool,
    pub incoming: String,
    pub outgoing: String,
    pub ipv6: bool,
    pub tuples: Vec<Tuple>,
}

impl UfwState {
    pub fn from_facts(f: &HostFacts) -> UfwState {
        let status = f.get::<crate::facts::UfwStatus>().unwrap_or_default();
        let defaults_text = f.file_text(UFW_DEFAULTS).unwrap_or("");
        // The status section only says active or inactive (facts::UFW_STATUS_SNIPPET): the
        // default policies come from ufw's own file.
        let (incoming, outgoing) = file_defaults(defaults_text);
        let mut tuples = parse_tuples(f.file_text(USER_RULES).unwrap_or(""), false);
        tuples.extend(parse_tuples(f.file_text(USER6_RULES).unwrap_or(""), true));
        UfwState {
            installed: f.base.packages.contains_key("ufw") || status.installed,
            active: f.base.ufw_active || status.active,
            incoming,
            outgoing,
            // IPV6=yes is ufw's default; only an explicit "no" turns it off.
            ipv6: !shell_var(defaults_text, "IPV6").is_some_and(|v| v.eq_ignore_ascii_case("no")),
            tuples,
        }
    }

    /// The rules that let `proto` traffic to `port` in (see [`Tuple::admits`]).
    pub fn admitting(&self, port: u16, proto: &str) -> Vec<&Tuple> {
        self.tuples
            .iter()
            .filter(|t| t.admits(port, proto))
            .collect()
    }
}

#[cfg(test)]
mod delete_args_tests {
    use super::*;

    #[test]
    fn words_from_user_rules_reach_the_ufw_line_only_when_they_are_ufw_shaped() {
        let rules = "### tuple ### allow udp 5060 0.0.0.0/0 any 198.51.100.0/24 in\n\
                     ### tuple ### allow tcp 5060;touch${IFS}/x 0.0.0.0/0 any 0.0.0.0/0 in\n\
                     ### tuple ### allow udp 5060 0.0.0.0/0 any $(id) in\n\
                     ### tuple ### allow t`id` 5060 0.0.0.0/0 any 0.0.0.0/0 in\n";
        let args: Vec<Option<String>> = parse_tuples(rules, false)
            .iter()
            .map(Tuple::delete_args)
            .collect();
        assert_eq!(
            args[0].as_deref(),
            Some("delete allow proto udp from 198.51.100.0/24 to any port 5060")
        );
        assert_eq!(&args[1..], &[None, None, None]);
    }
}
