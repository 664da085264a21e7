//! FreeSWITCH configuration: what fsfleet reads and the surgical edits it makes.

pub mod vars;
pub mod xml;

#[derive(Debug, thiserror::Error)]
pub enum ConfError {
    #[error("not well-formed XML: {0}")]
    Malformed(String),
    #[error("no <settings> section to add the parameter to")]
    NoSettings,
    #[error("refusing to edit: {0} (cannot tell which one FreeSWITCH uses)")]
    Ambiguous(String),
    #[error("no X-PRE-PROCESS set line for {0}; add one by hand where it belongs, then re-run")]
    NoSuchVar(String),
    #[error("refusing to write a value with characters that could change the file's structure")]
    UnsafeValue,
}

pub mod diff;

use crate::secret::Secret;

/// The Event Socket settings FreeSWITCH would use, from event_socket.conf.xml.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSocket {
    /// Empty in the file means ClueCon (FACTS §1).
    pub password: Secret,
    /// Empty in the file means 127.0.0.1.
    pub listen_ip: String,
    pub listen_port: u16,
    /// None: the built-in default `loopback.auto` applies.
    pub inbound_acl: Option<String>,
}

pub const ESL_DEFAULT_PASSWORD: &str = "ClueCon";

impl EventSocket {
    pub fn parse(text: &str) -> Result<EventSocket, ConfError> {
        let password = xml::get_param(text, "password")?
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| ESL_DEFAULT_PASSWORD.into());
        let listen_ip = xml::get_param(text, "listen-ip")?
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "127.0.0.1".into());
        let port = xml::get_param(text, "listen-port")?.unwrap_or_else(|| "8021".into());
        let listen_port = port.trim().parse().map_err(|_| {
            ConfError::Malformed(format!("listen-port {port:?} is not a port number"))
        })?;
        let inbound_acl = xml::get_param(text, "apply-inbound-acl")?.filter(|p| !p.is_empty());
        Ok(EventSocket {
            password: Secret::new(password),
            listen_ip,
            listen_port,
            inbound_acl,
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

/// The shortest password read from a host that fsfleet keeps.
pub const MIN_KEPT_PASSWORD_LEN: usize = 16;

/// Why a password read from a host must be rotated, or None when it may be kept. A host's value
/// is never trusted for being long: it is kept only when it is of the alphabet fsfleet generates
/// (so it can go into XML, fs_cli.conf, the vault and a shell export with no escaping anywhere)
/// and at least [`MIN_KEPT_PASSWORD_LEN`] long. The reason never shows the value.
pub fn password_weakness(p: &str) -> Option<&'static str> {
    if p == "1234" {
        Some("the stock 1234")
    } else if p == ESL_DEFAULT_PASSWORD {
        Some("the stock ClueCon")
    } else if p.chars().count() < MIN_KEPT_PASSWORD_LEN {
        Some("shorter than 16 characters")
    } else if !crate::vault::is_generated_alphabet(p) {
        Some("has characters fsfleet does not generate")
    } else {
        None
    }
}

/// The profile name of a sip_profiles/*.xml file (`<profile name="...">`).
pub fn profile_name(text: &str) -> Result<Option<String>, ConfError> {
    Ok(xml::scan(text)?
        .into_iter()
        .find(|t| t.name == "profile" && t.kind != xml::TagKind::End)
        .and_then(|t| t.attr("name").map(|a| a.value.clone())))
}

/// Whether a directory file sets a SIP credential literally (`password` or `a1-hash` params
/// with a value that is not a `$${var}`): such a file holds a secret at rest.
pub fn holds_literal_password(text: &str) -> bool {
    xml::scan(text).is_ok_and(|tags| {
        tags.iter().any(|t| {
            t.name == "param"
                && t.attr("name")
                    .is_some_and(|n| n.value == "password" || n.value == "a1-hash")
                && t.attr("value")
                    .is_some_and(|v| !v.value.is_empty() && !v.value.starts_with("$${"))
        })
    })
}

#[cfg(test)]
mod password_tests {
    #[test]
    fn literal_directory_passwords_are_told_from_variables() {
        let stock = r#"<user id="1000"><params><param name="password" value="$${default_password}"/><param name="vm-password" value="1000"/></params></user>"#;
        assert!(!super::holds_literal_password(stock));
        let set = r#"<user id="1001"><params><param name="password" value="s3cret-by-hand"/></params></user>"#;
        assert!(super::holds_literal_password(set));
        let hash =
            r#"<user id="1002"><params><param name="a1-hash" value="0123abcd"/></params></user>"#;
        assert!(super::holds_literal_password(hash));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_password_is_kept_only_when_generated_alphabet_and_long() {
        assert_eq!(password_weakness("1234"), Some("the stock 1234"));
        assert_eq!(password_weakness("ClueCon"), Some("the stock ClueCon"));
        assert_eq!(
            password_weakness("hunter2"),
            Some("shorter than 16 characters")
        );
        for hostile in [
            "';touch /tmp/fsfleet-pwned;'",
            "$(touch /tmp/fsfleet-pwned)xx",
            "aaaaaaaaaaaaaaaa\naction = x",
            "correct horse battery staple",
            "aaaaaaaaaaaaaaa\u{1b}",
            "ÄÄÄÄÄÄÄÄÄÄÄÄÄÄÄÄ",
        ] {
            assert_eq!(
                password_weakness(hostile),
                Some("has characters fsfleet does not generate"),
                "{hostile:?}"
            );
        }
        assert_eq!(password_weakness("abcdefghijklmnop"), None);
        let generated = crate::vault::generate_password(crate::vault::PASSWORD_LEN);
        assert_eq!(password_weakness(generated.expose()), None);
    }
}
