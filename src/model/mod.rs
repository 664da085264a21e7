//! The FreeSWITCH host model: what a host's configuration means, computed once from the facts
//! harden and audit share ([`HostFacts`]), so the two can never read the same host differently.
//!
//! Every question about FreeSWITCH's settings goes through here: `$${variables}`, the SIP
//! profiles with their SIP and TLS ports and TLS state, the RTP range, the Event Socket settings,
//! the password policy, ufw's state and the host's TCP listeners. The firewall plan, the
//! fail2ban jail, verify and the audit controls all ask this module; none of them parses these
//! settings itself.
//!
//! Where a setting is unusable (a port that is no number, an inverted RTP range) the model takes
//! what FreeSWITCH falls back to and says so in a warning; harden prints the warning and audit
//! shows it as evidence, and both act on the same value.

use std::collections::BTreeSet;
use std::fmt;

use crate::conf::{ConfError, vars, xml};
use crate::facts::{FileFact, Files, Listener, Sections};
use crate::harden::HostFacts;
use crate::secret::Secret;

pub mod fail2ban;
pub mod listeners;
pub mod pickle;
mod profile_params;
pub use profile_params::{ProfileParam, ProfileParams};
#[cfg(test)]
mod property_tests;
pub mod registrations;
pub mod ufw;

pub use listeners::ListenersError;

/// Where the Event Socket settings live, relative to the config dir.
pub const ESL_CONF: &str = "autoload_configs/event_socket.conf.xml";
/// Where the RTP range lives, relative to the config dir.
pub const SWITCH_CONF: &str = "autoload_configs/switch.conf.xml";
/// FreeSWITCH's own RTP range when switch.conf.xml does not set one.
pub const DEFAULT_RTP: (u16, u16) = (16384, 32768);
/// mod_sofia's ports for a profile that sets none.
pub const DEFAULT_SIP_PORT: u16 = 5060;
pub const DEFAULT_TLS_PORT: u16 = 5061;
/// mod_event_socket's defaults (FACTS §1): empty password means ClueCon, empty listen-ip
/// means 127.0.0.1.
pub const DEFAULT_ESL_PORT: u16 = 8021;
pub const ESL_DEFAULT_PASSWORD: &str = "ClueCon";
pub const ESL_DEFAULT_LISTEN_IP: &str = "127.0.0.1";

/// Why a part of the model cannot be built; the message names the file.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("no FreeSWITCH configuration found")]
    NoConfDir,
    #[error("{0} does not exist")]
    Missing(String),
    #[error("{0} is too large or not UTF-8 text")]
    Unreadable(String),
    #[error("{path}")]
    Conf {
        path: String,
        #[source]
        source: ConfError,
    },
    #[error("{path}: {param} {value:?} is not a port number")]
    BadPort {
        path: String,
        param: &'static str,
        value: String,
    },
}

// ---------------------------------------------------------------------------------------------
// Variables

/// The `$${variables}` of vars.xml (its X-PRE-PROCESS `set` lines, the last set of a name wins).
#[derive(Debug, Clone, Default)]
pub struct Vars {
    sets: Vec<(String, String)>,
}

/// A value after FreeSWITCH's preprocessor substitution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expanded {
    /// What FreeSWITCH reads: each `$${name}` replaced by its value, and by NOTHING when no
    /// `set` defines it (switch_xml.c `expand_vars` copies no text for an unknown variable).
    pub text: String,
    /// Names used that vars.xml does not set. FreeSWITCH may still know them (core variables
    /// such as `local_ip_v4` are set at startup), so a value using one is not known for sure.
    pub unset: Vec<String>,
}

impl Vars {
    pub fn parse(vars_xml: Option<&str>) -> Vars {
        Vars {
            sets: vars_xml
                .map(|t| {
                    vars::set_lines(t)
                        .into_iter()
                        .map(|s| (s.name, s.value))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.sets
            .iter()
            .rfind(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// FreeSWITCH's substitution of `$${name}`: plain text, once, braces may nest; an
    /// unterminated `$${` stays as it is.
    pub fn expand(&self, value: &str) -> Expanded {
        let mut text = String::new();
        let mut unset = Vec::new();
        let mut rest = value;
        while let Some(at) = rest.find("$${") {
            text.push_str(&rest[..at]);
            let after = &rest[at + 3..];
            let Some(end) = closing_brace(after) else {
                text.push_str(&rest[at..]);
                return Expanded { text, unset };
            };
            let name = &after[..end];
            match self.get(name) {
                Some(v) => text.push_str(v),
                None => unset.push(name.to_string()),
            }
            rest = &after[end + 1..];
        }
        text.push_str(rest);
        Expanded { text, unset }
    }

    /// The text FreeSWITCH reads (see [`Expanded::text`]).
    pub fn expand_text(&self, value: &str) -> String {
        self.expand(value).text
    }
}

/// The `}` closing a `$${`, nested `{}` skipped (switch_find_end_paren).
fn closing_brace(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return Some(i),
            '}' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// FreeSWITCH's `switch_true`.
pub fn switch_true(v: &str) -> bool {
    let v = v.trim().to_ascii_lowercase();
    matches!(
        v.as_str(),
        "yes" | "on" | "true" | "t" | "enabled" | "active" | "allow"
    ) || v.parse::<i64>().is_ok_and(|n| n != 0)
}

// ---------------------------------------------------------------------------------------------
// Ports

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// A port or an inclusive range of ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ports {
    pub first: u16,
    pub last: u16,
}

impl Ports {
    pub fn one(p: u16) -> Ports {
        Ports { first: p, last: p }
    }
    pub fn contains(&self, p: u16) -> bool {
        self.first <= p && p <= self.last
    }
}

impl fmt::Display for Ports {
    /// ufw's own spelling: `5060` or `16384:32768`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}:{}", self.first, self.last)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The model

/// One SIP profile as FreeSWITCH loads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipProfile {
    /// The file that defines it (absolute path).
    pub file: String,
    /// `<profile name=...>`.
    pub name: String,
    /// `sip-port` (udp and tcp), 5060 when absent or unusable.
    pub sip_port: u16,
    /// `tls-sip-port` (tcp), 5061 when absent or unusable.
    pub tls_port: u16,
    /// `tls` is true.
    pub tls: bool,
    /// `log-auth-failures` as written, when set.
    pub log_auth_failures: Option<String>,
}

/// Every profile of sip_profiles/*.xml (sofia.conf.xml loads them all) and what had to be
/// assumed to read them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SipProfiles {
    pub profiles: Vec<SipProfile>,
    /// Files FreeSWITCH cannot load (not text, not well-formed): their profiles are missing.
    pub unloadable: Vec<String>,
    /// Ports that had to be assumed.
    pub warnings: Vec<String>,
}

/// The SIP and SIP-TLS ports of a host: the firewall opens exactly these, the fail2ban jail
/// bans on exactly these and audit FS-SIP-06 checks exactly these.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SipPorts {
    pub ports: BTreeSet<(Proto, u16)>,
    /// The Event Socket's listen-port (never opened, so never a SIP port here).
    pub esl_port: u16,
    pub warnings: Vec<String>,
}

impl SipPorts {
    /// Each port number once, ascending, whatever the protocol.
    pub fn numbers(&self) -> Vec<u16> {
        let set: BTreeSet<u16> = self.ports.iter().map(|(_, p)| *p).collect();
        set.into_iter().collect()
    }
}

/// The RTP range FreeSWITCH uses, with what had to be assumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rtp {
    pub ports: Ports,
    pub warnings: Vec<String>,
}

/// The Event Socket settings FreeSWITCH would use, from event_socket.conf.xml with `$${vars}`
/// expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSocket {
    /// Empty or absent in the file means ClueCon (FACTS §1).
    pub password: Secret,
    /// The file sets no (or an empty) password.
    pub password_defaulted: bool,
    /// Empty or absent in the file means 127.0.0.1.
    pub listen_ip: String,
    pub listen_ip_defaulted: bool,
    pub listen_port: u16,
    /// None: the built-in default `loopback.auto` applies.
    pub inbound_acl: Option<String>,
}

impl EventSocket {
    /// The settings of an event_socket.conf.xml text.
    pub fn parse(text: &str, path: &str, vars: &Vars) -> Result<EventSocket, ModelError> {
        let conf = |source| ModelError::Conf {
            path: path.to_string(),
            source,
        };
        let get = |name: &str| -> Result<Option<String>, ModelError> {
            Ok(xml::get_param(text, name)
                .map_err(conf)?
                .map(|v| vars.expand_text(&v)))
        };
        let password = get("password")?.filter(|p| !p.is_empty());
        let listen_ip = get("listen-ip")?.filter(|p| !p.is_empty());
        let listen_port = match get("listen-port")? {
            None => DEFAULT_ESL_PORT,
            Some(v) => port_number(&v).ok_or_else(|| ModelError::BadPort {
                path: path.to_string(),
                param: "listen-port",
                value: v,
            })?,
        };
        Ok(EventSocket {
            password_defaulted: password.is_none(),
            password: Secret::new(password.unwrap_or_else(|| ESL_DEFAULT_PASSWORD.into())),
            listen_ip_defaulted: listen_ip.is_none(),
            listen_ip: listen_ip.unwrap_or_else(|| ESL_DEFAULT_LISTEN_IP.into()),
            listen_port,
            inbound_acl: get("apply-inbound-acl")?.filter(|p| !p.is_empty()),
        })
    }

    /// The address to reach the Event Socket at from the host itself.
    pub fn local_address(&self) -> String {
        match self.listen_ip.as_str() {
            "::" | "0.0.0.0" | "127.0.0.1" | "" => "127.0.0.1".into(),
            other => other
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
        }
    }
}

/// A port number as fsfleet accepts it from a config: digits only, 1-65535.
fn port_number(v: &str) -> Option<u16> {
    v.trim().parse::<u16>().ok().filter(|p| *p > 0)
}

/// The model of one host's FreeSWITCH configuration.
pub struct HostModel<'a> {
    files: &'a Files,
    /// The snippets' output, for the live parts (listeners); None for a model of files alone.
    sections: Option<&'a Sections>,
    vars: Vars,
}

impl<'a> HostModel<'a> {
    pub fn new(f: &'a HostFacts) -> HostModel<'a> {
        HostModel {
            sections: Some(&f.sections),
            ..HostModel::of_files(&f.files)
        }
    }

    pub fn of_files(files: &'a Files) -> HostModel<'a> {
        let vars = Vars::parse(files.conf("vars.xml").and_then(FileFact::text));
        HostModel {
            files,
            sections: None,
            vars,
        }
    }

    /// The host's TCP listeners ([`listeners::from_sections`]): what audit's FS-ESL-02 and the
    /// proof of whose Event Socket fsfleet talks to ([`crate::esl_target`]) both read.
    pub fn listeners(&self) -> Result<Vec<Listener>, ListenersError> {
        match self.sections {
            Some(s) => listeners::from_sections(s),
            None => Err(ListenersError::NotRun { status: None }),
        }
    }

    pub fn vars(&self) -> &Vars {
        &self.vars
    }

    /// A config file's text (relative to the config dir), with its absolute path.
    pub fn conf_text(&self, rel: &str) -> Result<(&'a str, &'a str), ModelError> {
        let dir = self
            .files
            .conf_dir
            .as_deref()
            .ok_or(ModelError::NoConfDir)?;
        let f = self
            .files
            .conf(rel)
            .ok_or_else(|| ModelError::Missing(format!("{dir}/{rel}")))?;
        let text = f
            .text()
            .ok_or_else(|| ModelError::Unreadable(f.path.clone()))?;
        Ok((f.path.as_str(), text))
    }

    /// A port param read with vars expanded; `default` when absent, and also (with a warning
    /// naming the file and the value) when unusable, as FreeSWITCH falls back to its default.
    fn port_param(
        &self,
        path: &str,
        param: &str,
        raw: Option<&str>,
        default: u16,
        warnings: &mut Vec<String>,
    ) -> u16 {
        let Some(raw) = raw else {
            return default;
        };
        let e = self.vars.expand(raw);
        if !e.unset.is_empty() {
            warnings.push(format!(
                "{path}: {param} '{raw}' uses a variable that vars.xml does not set; assumed {default}"
            ));
            return default;
        }
        port_number(&e.text).unwrap_or_else(|| {
            warnings.push(format!(
                "{path}: {param} '{raw}' is not a port number; assumed {default}"
            ));
            default
        })
    }

    /// Every SIP profile of sip_profiles/*.xml.
    pub fn sip_profiles(&self) -> SipProfiles {
        let mut out = SipProfiles::default();
        for file in self.files.conf_dir_files("sip_profiles", ".xml") {
            let Some(text) = file.text() else {
                out.unloadable.push(format!(
                    "{}: not readable as text; its SIP ports are not opened",
                    file.path
                ));
                continue;
            };
            let tags = match xml::scan(text) {
                Ok(t) => t,
                Err(e) => {
                    out.unloadable.push(format!(
                        "{}: {e}; its SIP ports are not opened (FreeSWITCH cannot load it either)",
                        file.path
                    ));
                    continue;
                }
            };
            // (name, [sip-port, tls-sip-port, tls, log-auth-failures]) per <profile>, raw.
            let mut raw: Vec<(String, [Option<String>; 4])> = Vec::new();
            for t in &tags {
                if t.name == "profile" && t.kind != xml::TagKind::End {
                    let name = t.attr("name").map(|a| a.value.clone()).unwrap_or_default();
                    raw.push((name, Default::default()));
                    continue;
                }
                if t.name != "param"
                    || t.kind == xml::TagKind::End
                    || t.parent() != Some("settings")
                    || !t.parents.iter().any(|p| p == "profile")
                {
                    continue;
                }
                let (Some(n), Some(v), Some((_, cur))) =
                    (t.attr("name"), t.attr("value"), raw.last_mut())
                else {
                    continue;
                };
                let slot = match n.value.trim() {
                    "sip-port" => 0,
                    "tls-sip-port" => 1,
                    "tls" => 2,
                    "log-auth-failures" => 3,
                    _ => continue,
                };
                // FreeSWITCH applies params in order: the last one wins.
                cur[slot] = Some(v.value.clone());
            }
            for (name, [sip, tls_port, tls, laf]) in raw {
                let w = &mut out.warnings;
                let sip_port =
                    self.port_param(&file.path, "sip-port", sip.as_deref(), DEFAULT_SIP_PORT, w);
                let tls_port = self.port_param(
                    &file.path,
                    "tls-sip-port",
                    tls_port.as_deref(),
                    DEFAULT_TLS_PORT,
                    w,
                );
                out.profiles.push(SipProfile {
                    file: file.path.clone(),
                    name,
                    sip_port,
                    tls_port,
                    tls: tls.is_some_and(|v| switch_true(&self.vars.expand_text(&v))),
                    log_auth_failures: laf,
                });
            }
        }
        out
    }

    /// The SIP (udp+tcp) and SIP-TLS (tcp) ports of every profile. The TLS port counts even
    /// while TLS is off: opening a port nothing listens on costs nothing, and turning TLS on
    /// later then just works (and is banned on). A port equal to the Event Socket's is left
    /// out with a warning: that port is never opened.
    pub fn sip_ports(&self) -> SipPorts {
        let profiles = self.sip_profiles();
        let mut out = SipPorts {
            esl_port: DEFAULT_ESL_PORT,
            warnings: profiles.unloadable,
            ..SipPorts::default()
        };
        out.warnings.extend(profiles.warnings);
        match self.event_socket() {
            Ok(es) => out.esl_port = es.listen_port,
            Err(ModelError::Missing(_)) => {}
            Err(e) => out.warnings.push(format!(
                "{}; assumed Event Socket port {DEFAULT_ESL_PORT}",
                crate::errors::chain(&e)
            )),
        }
        for p in &profiles.profiles {
            for (proto, port) in [
                (Proto::Udp, p.sip_port),
                (Proto::Tcp, p.sip_port),
                (Proto::Tcp, p.tls_port),
            ] {
                if proto == Proto::Tcp && port == out.esl_port {
                    let w = format!(
                        "a SIP profile is configured on {port}/tcp, the Event Socket port: not opened"
                    );
                    if !out.warnings.contains(&w) {
                        out.warnings.push(w);
                    }
                    continue;
                }
                out.ports.insert((proto, port));
            }
        }
        out
    }

    /// The RTP range of switch.conf.xml. Unset: FreeSWITCH's 16384-32768. Unusable or
    /// inverted: the same default, with a warning (harden opens it, audit checks it).
    pub fn rtp(&self) -> Rtp {
        let default = Ports {
            first: DEFAULT_RTP.0,
            last: DEFAULT_RTP.1,
        };
        let mut warnings = Vec::new();
        let Some(sw) = self.files.conf(SWITCH_CONF) else {
            return Rtp {
                ports: default,
                warnings,
            };
        };
        let Some(text) = sw.text() else {
            warnings.push(format!(
                "{}: not readable as text; assumed the RTP range {}-{}",
                sw.path, DEFAULT_RTP.0, DEFAULT_RTP.1
            ));
            return Rtp {
                ports: default,
                warnings,
            };
        };
        let mut get = |param: &str, default: u16| match xml::get_param(text, param) {
            Ok(v) => self.port_param(&sw.path, param, v.as_deref(), default, &mut warnings),
            Err(e) => {
                warnings.push(format!("{}: {e}; assumed {param} {default}", sw.path));
                default
            }
        };
        let first = get("rtp-start-port", DEFAULT_RTP.0);
        let last = get("rtp-end-port", DEFAULT_RTP.1);
        if first > last {
            warnings.push(format!(
                "{}: rtp-start-port {first} is above rtp-end-port {last}; assumed the default {}-{}",
                sw.path, DEFAULT_RTP.0, DEFAULT_RTP.1
            ));
            return Rtp {
                ports: default,
                warnings,
            };
        }
        Rtp {
            ports: Ports { first, last },
            warnings,
        }
    }

    /// The Event Socket settings: the one reader harden (preflight, the event-socket step,
    /// the firewall) and audit (FS-ESL-*, FS-FW-02, the probes) use.
    pub fn event_socket(&self) -> Result<EventSocket, ModelError> {
        let (path, text) = self.conf_text(ESL_CONF)?;
        EventSocket::parse(text, path, &self.vars)
    }

    /// vars.xml's `default_password` (Ok(None): vars.xml sets none).
    pub fn default_password(&self) -> Result<Option<Secret>, ModelError> {
        self.conf_text("vars.xml")?;
        Ok(self.vars.get(DEFAULT_PASSWORD_VAR).map(Secret::new))
    }
}

/// A directory user: id, raw password param, raw vm-password param, file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryUser {
    pub id: String,
    pub password: Option<String>,
    pub vm_password: Option<String>,
    /// The `toll_allow` variable, raw.
    pub toll_allow: Option<String>,
    /// Relative to the config dir.
    pub file: String,
    /// 1-based line of the `<user>` tag.
    pub line: usize,
}

impl DirectoryUser {
    /// The user logs in with `$${default_password}`: rotating it changes this user's password.
    pub fn uses_default_password(&self) -> bool {
        self.password
            .as_deref()
            .is_some_and(|p| p.contains("$${default_password}"))
    }
}

/// Directory ids as a reader scans them: runs of consecutive numbers as `1000-1019`.
pub fn compact_ids(ids: &[&str]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < ids.len() {
        let mut j = i;
        while let (Some(a), Some(b)) = (
            ids[j].parse::<u64>().ok(),
            ids.get(j + 1).and_then(|n| n.parse::<u64>().ok()),
        ) {
            if b != a + 1 {
                break;
            }
            j += 1;
        }
        if j > i + 1 {
            out.push(format!("{}-{}", ids[i], ids[j]));
        } else {
            out.extend(ids[i..=j].iter().map(|s| s.to_string()));
        }
        i = j + 1;
    }
    out.join(", ")
}

impl HostModel<'_> {
    /// The users of the config's directory files (directory/default.xml and
    /// directory/default/*.xml), params as written.
    pub fn directory_users(&self) -> Result<Vec<DirectoryUser>, ModelError> {
        use xml::TagKind;
        let dir = self
            .files
            .conf_dir
            .as_deref()
            .ok_or(ModelError::NoConfDir)?;
        let mut files: Vec<&FileFact> = self.files.conf_dir_files("directory/default", ".xml");
        if let Some(f) = self.files.conf("directory/default.xml") {
            files.insert(0, f);
        }
        let mut out = Vec::new();
        for f in files {
            let rel = f.rel_path(dir);
            let text = f
                .text()
                .ok_or_else(|| ModelError::Unreadable(f.path.clone()))?;
            let tags = xml::scan(text).map_err(|source| ModelError::Conf {
                path: f.path.clone(),
                source,
            })?;
            let user = |id: &str, pos: usize| DirectoryUser {
                id: id.to_string(),
                password: None,
                vm_password: None,
                toll_allow: None,
                file: rel.clone(),
                line: line_of(text, pos),
            };
            let mut current: Option<DirectoryUser> = None;
            for t in &tags {
                match (t.name.as_str(), t.kind) {
                    ("user", TagKind::Start) => {
                        current = t.attr("id").map(|a| user(&a.value, t.span.start));
                    }
                    // Group members (`type="pointer"`) refer to users defined elsewhere.
                    ("user", TagKind::Empty)
                        if t.attr("type").is_none_or(|a| a.value != "pointer") =>
                    {
                        if let Some(a) = t.attr("id") {
                            out.push(user(&a.value, t.span.start));
                        }
                    }
                    ("user", TagKind::End) => out.extend(current.take()),
                    ("param", TagKind::Start | TagKind::Empty) if t.parent() == Some("params") => {
                        if let (Some(u), Some(n), Some(v)) =
                            (current.as_mut(), t.attr("name"), t.attr("value"))
                        {
                            match n.value.as_str() {
                                "password" => u.password = Some(v.value.clone()),
                                "vm-password" => u.vm_password = Some(v.value.clone()),
                                _ => {}
                            }
                        }
                    }
                    ("variable", TagKind::Start | TagKind::Empty)
                        if t.parent() == Some("variables") =>
                    {
                        if let (Some(u), Some(n), Some(v)) =
                            (current.as_mut(), t.attr("name"), t.attr("value"))
                            && n.value == "toll_allow"
                        {
                            u.toll_allow = Some(v.value.clone());
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(out)
    }
}

/// 1-based line number of a byte offset.
pub fn line_of(text: &str, pos: usize) -> usize {
    text.get(..pos).map_or(0, |t| t.matches('\n').count()) + 1
}

/// The vars.xml variable every stock user registers with.
pub const DEFAULT_PASSWORD_VAR: &str = "default_password";

// ---------------------------------------------------------------------------------------------
// Password policy

/// The shortest password fsfleet accepts on a host: harden keeps a host's password only from
/// this length on (else it rotates it), and audit FS-SIP-01 / FS-ESL-01 pass exactly what harden
/// keeps. Shorter SIP passwords fall to online guessing within fail2ban's patience.
pub const MIN_PASSWORD_LEN: usize = 16;

/// Why a password read from a host is not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weakness {
    Stock1234,
    ClueCon,
    /// Shorter than [`MIN_PASSWORD_LEN`]; its length.
    Short(usize),
    /// Characters outside fsfleet's generated alphabet.
    Alphabet,
}

impl Weakness {
    /// The reason, never the value.
    pub fn as_str(self) -> &'static str {
        match self {
            Weakness::Stock1234 => "the stock 1234",
            Weakness::ClueCon => "the stock ClueCon",
            Weakness::Short(_) => SHORT,
            Weakness::Alphabet => "has characters fsfleet does not generate",
        }
    }
}

const SHORT: &str = "shorter than 16 characters";

impl fmt::Display for Weakness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a password read from a host must be rotated, or None when it may be kept. A host's value
/// is never trusted for being long: it is kept only when it is of the alphabet fsfleet generates
/// (so it can go into XML, fs_cli.conf, the vault and a shell export with no escaping anywhere)
/// and at least [`MIN_PASSWORD_LEN`] long.
pub fn password_weakness(p: &str) -> Option<Weakness> {
    let n = p.chars().count();
    if p == "1234" {
        Some(Weakness::Stock1234)
    } else if p == ESL_DEFAULT_PASSWORD {
        Some(Weakness::ClueCon)
    } else if n < MIN_PASSWORD_LEN {
        Some(Weakness::Short(n))
    } else if !crate::vault::is_generated_alphabet(p) {
        Some(Weakness::Alphabet)
    } else {
        None
    }
}

// ---------------------------------------------------------------------------------------------
// ufw

/// Whether `ufw status` output (or the base facts' one-line answer) says ufw is active: the one
/// place that reads "Status: active".
pub fn ufw_status_active(status: &str) -> bool {
    status.lines().any(|l| l.trim() == "Status: active")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_variables_expand_to_nothing_like_freeswitch_and_are_named() {
        let v = Vars::parse(Some(
            "<X-PRE-PROCESS cmd=\"set\" data=\"a=1\"/>\n<X-PRE-PROCESS cmd=\"set\" data=\"a=2\"/>\n",
        ));
        assert_eq!(v.expand_text("$${a}/x"), "2/x");
        let e = v.expand("p$${nope}q");
        assert_eq!(e.text, "pq");
        assert_eq!(e.unset, ["nope"]);
        // Unterminated: left as written.
        assert_eq!(v.expand_text("x$${a"), "x$${a");
        assert_eq!(v.expand_text("${a} $a"), "${a} $a");
        assert!(Vars::parse(None).expand("$${a}").unset == ["a"]);
    }

    #[test]
    fn a_host_password_is_kept_only_when_generated_alphabet_and_long() {
        let why = |p: &str| password_weakness(p).map(Weakness::as_str);
        assert_eq!(why("1234"), Some("the stock 1234"));
        assert_eq!(why("ClueCon"), Some("the stock ClueCon"));
        assert_eq!(why("hunter2"), Some("shorter than 16 characters"));
        assert!(SHORT.contains(&MIN_PASSWORD_LEN.to_string()));
        for hostile in [
            "';touch /tmp/fsfleet-pwned;'",
            "$(touch /tmp/fsfleet-pwned)xx",
            "aaaaaaaaaaaaaaaa\naction = x",
            "correct horse battery staple",
            "aaaaaaaaaaaaaaa\u{1b}",
            "ÄÄÄÄÄÄÄÄÄÄÄÄÄÄÄÄ",
        ] {
            assert_eq!(
                why(hostile),
                Some("has characters fsfleet does not generate"),
                "{hostile:?}"
            );
        }
        assert_eq!(why("abcdefghijklmnop"), None);
        assert_eq!(why("abcdefghijklmno"), Some("shorter than 16 characters"));
        let generated = crate::vault::generate_password(crate::vault::PASSWORD_LEN);
        assert_eq!(password_weakness(generated.expose()), None);
    }

    #[test]
    fn event_socket_defaults_and_variables() {
        let vars = Vars::parse(Some("<X-PRE-PROCESS cmd=\"set\" data=\"esl_port=8022\"/>"));
        let es = EventSocket::parse(
            "<c><settings><param name=\"listen-port\" value=\"$${esl_port}\"/><param name=\"password\" value=\"\"/></settings></c>",
            "/e.xml",
            &vars,
        )
        .unwrap();
        assert_eq!(es.listen_port, 8022);
        assert_eq!(es.password.expose(), "ClueCon");
        assert!(es.password_defaulted && es.listen_ip_defaulted);
        assert_eq!(es.listen_ip, "127.0.0.1");
        assert_eq!(es.inbound_acl, None);
        let bad = EventSocket::parse(
            "<c><settings><param name=\"listen-port\" value=\"x\"/></settings></c>",
            "/e.xml",
            &vars,
        )
        .unwrap_err();
        assert_eq!(
            bad.to_string(),
            "/e.xml: listen-port \"x\" is not a port number"
        );
    }

    #[test]
    fn ufw_status_is_read_in_one_place() {
        assert!(ufw_status_active("Status: active\nLogging: on\n"));
        assert!(!ufw_status_active("Status: inactive\n"));
        assert!(!ufw_status_active(""));
    }
}
