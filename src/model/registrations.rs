//! Who is registered right now: mod_sofia's `sofia xmlstatus profile NAME reg`, asked through
//! the Event Socket (the answer's shape is mod_sofia.c `cmd_xml_status` /
//! `show_reg_callback_xml`, see FACTS §2), and which directory users a `default_password`
//! rotation would lock out.
//!
//! The answer is host text, and parts of it are chosen by whoever registers: the Call-ID and
//! the To URI are printed as received (not escaped), and sofia-sip keeps a folded header's
//! CRLF and leading whitespace in the value, so a registered phone can put whole lines of its
//! own, at any indentation, into the answer. A row is therefore read only when its lines are
//! exactly mod_sofia's fields, each once and in mod_sofia's order, with nothing else between
//! `<registration>` and `</registration>` and nothing but rows between them: injected lines
//! either repeat a field, come out of order, or are not a field, and the whole answer is then an
//! error (the profile's registrations are unknown, which holds a rotation as a registration
//! would), never a forged row.

use std::collections::BTreeMap;
use std::net::IpAddr;

/// How the Event Socket command names a profile: a profile name from the host's config that is
/// not plain would shape the command line, so it is never sent.
pub fn plain_profile_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The Event Socket command that lists a profile's registrations.
pub fn command(profile: &str) -> Option<String> {
    plain_profile_name(profile).then(|| format!("sofia xmlstatus profile {profile} reg"))
}

/// One registration row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub profile: String,
    /// The directory user that authenticated (`sip-auth-user`, url-decoded).
    pub auth_user: String,
    /// The user part of the registered AOR (`<user>` before its last `@`).
    pub user: String,
    /// Where the phone registered from, when the answer gives a usable address.
    pub network_ip: Option<IpAddr>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegistrationsError {
    #[error("`sofia xmlstatus profile {profile} reg` answered something unexpected: {why}")]
    Unexpected { profile: String, why: String },
}

/// What a profile's answer said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileRegs {
    /// The profile is not running (`Invalid Profile!`): nothing can be registered on it.
    NotRunning,
    Rows(Vec<Registration>),
}

const ROW_START: &str = "    <registration>";
const ROW_END: &str = "    </registration>";
const FIELD_INDENT: &str = "        ";
/// mod_sofia's fields of a row, in the order `show_reg_callback_xml` prints them.
const FIELDS: &[&str] = &[
    "call-id",
    "user",
    "contact",
    "agent",
    "status",
    "ping-status",
    "host",
    "network-ip",
    "network-port",
    "sip-auth-user",
    "sip-auth-realm",
    "mwi-account",
];
/// The lines around the rows.
const FRAME: &[&str] = &[
    "<profile>",
    "  <registrations>",
    "  </registrations>",
    "</profile>",
];

/// Parse the body of `sofia xmlstatus profile NAME reg`.
pub fn parse(profile: &str, body: &str) -> Result<ProfileRegs, RegistrationsError> {
    let bad = |why: &str| RegistrationsError::Unexpected {
        profile: profile.to_string(),
        why: why.to_string(),
    };
    let trimmed = body.trim_end();
    if trimmed == "Invalid Profile!" {
        return Ok(ProfileRegs::NotRunning);
    }
    let mut lines = body.lines();
    if !lines.next().is_some_and(|l| l.starts_with("<?xml ")) || lines.next() != Some("<profile>") {
        return Err(bad("no <profile> document"));
    }
    if !trimmed.ends_with("</profile>") {
        return Err(bad("the document is cut short"));
    }
    let mut rows = Vec::new();
    let mut current: Option<BTreeMap<&str, &str>> = None;
    for line in lines {
        match line {
            ROW_START => {
                if current.is_some() {
                    return Err(bad("a registration inside another"));
                }
                current = Some(BTreeMap::new());
            }
            ROW_END => {
                let fields = current
                    .take()
                    .ok_or_else(|| bad("an unopened registration"))?;
                rows.push(
                    row(profile, &fields).ok_or_else(|| bad("a registration without its user"))?,
                );
            }
            _ => match (current.as_mut(), field(line)) {
                (Some(fields), Some((tag, value))) => {
                    // Each field once, in mod_sofia's order (see the module docs).
                    let rank = FIELDS.iter().position(|f| *f == tag);
                    let last = fields
                        .keys()
                        .filter_map(|k| FIELDS.iter().position(|f| f == k))
                        .max();
                    match (rank, last) {
                        (None, _) => return Err(bad("a field mod_sofia does not print")),
                        (Some(r), Some(l)) if r <= l => {
                            return Err(bad("a field repeated or out of mod_sofia's order"));
                        }
                        _ => {
                            fields.insert(tag, value);
                        }
                    }
                }
                (None, _) if FRAME.contains(&line) || line.is_empty() => {}
                _ => return Err(bad("a line that is not mod_sofia's")),
            },
        }
    }
    if current.is_some() {
        return Err(bad("an unclosed registration"));
    }
    Ok(ProfileRegs::Rows(rows))
}

/// `        <tag>value</tag>` at mod_sofia's field indentation; the value runs to the last
/// closing tag of that name on the line.
fn field(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix(FIELD_INDENT)?.strip_prefix('<')?;
    let (tag, rest) = rest.split_once('>')?;
    if tag.is_empty() || !tag.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
        return None;
    }
    let close = format!("</{tag}>");
    let value = rest.strip_suffix(close.as_str())?;
    Some((tag, value))
}

fn row(profile: &str, f: &BTreeMap<&str, &str>) -> Option<Registration> {
    let auth_user = url_decode(f.get("sip-auth-user")?)?;
    let aor = f.get("user").copied().unwrap_or_default();
    let user = aor.rsplit_once('@').map_or(aor, |(u, _)| u).to_string();
    if auth_user.is_empty() && user.is_empty() {
        return None;
    }
    Some(Registration {
        profile: profile.to_string(),
        auth_user,
        user,
        network_ip: f.get("network-ip").and_then(|s| s.parse().ok()),
    })
}

/// switch_url_encode's inverse: `%XX` to the byte; the result must be UTF-8.
fn url_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The registrations of every profile asked, or why they are unknown.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Registered {
    pub rows: Vec<Registration>,
    /// Profiles that were not asked (a name fsfleet does not send) or did not answer usably;
    /// a user could be registered there unseen.
    pub unknown: Vec<String>,
}

impl Registered {
    /// The rows of directory user `id` (by the user that authenticated, else the AOR's user).
    pub fn of_user(&self, id: &str) -> Vec<&Registration> {
        self.rows
            .iter()
            .filter(|r| r.auth_user == id || (r.auth_user.is_empty() && r.user == id))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str =
        "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>\n<profile>\n  <registrations>\n";
    const TAIL: &str = "  </registrations>\n</profile>\n";

    fn reg(call_id: &str, user: &str, auth: &str, ip: &str) -> String {
        format!(
            "    <registration>\n        <call-id>{call_id}</call-id>\n        <user>{user}@192.0.2.10</user>\n        \
             <contact>&quot;x&quot; &lt;sip:{user}@{ip}:5062&gt;</contact>\n        <agent>Yealink</agent>\n        \
             <status>Registered(UDP)(unknown) exp(2026-11-30 00:30:00) expsecs(3599)</status>\n        \
             <ping-status>Reachable</ping-status>\n        <host>fs01</host>\n        <network-ip>{ip}</network-ip>\n        \
             <network-port>5062</network-port>\n        <sip-auth-user>{auth}</sip-auth-user>\n        \
             <sip-auth-realm>192.0.2.10</sip-auth-realm>\n        <mwi-account>{user}@192.0.2.10</mwi-account>\n    </registration>\n"
        )
    }

    #[test]
    fn rows_are_read_with_the_authenticated_user_and_address() {
        let body = format!(
            "{HEAD}{}{}{TAIL}",
            reg("a@h", "1000", "1000", "192.0.2.5"),
            reg("b@h", "1001", "10%2001", "2001:db8::5")
        );
        let ProfileRegs::Rows(rows) = parse("internal", &body).unwrap() else {
            panic!("rows expected")
        };
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].auth_user, "1000");
        assert_eq!(rows[0].user, "1000");
        assert_eq!(rows[0].network_ip, Some("192.0.2.5".parse().unwrap()));
        assert_eq!(rows[1].auth_user, "10 01");
        assert_eq!(rows[1].network_ip, Some("2001:db8::5".parse().unwrap()));
        assert_eq!(
            parse("internal", &format!("{HEAD}{TAIL}")).unwrap(),
            ProfileRegs::Rows(vec![])
        );
        assert_eq!(
            parse("external", "Invalid Profile!\n").unwrap(),
            ProfileRegs::NotRunning
        );
    }

    #[test]
    fn a_call_id_cannot_forge_a_registration_or_a_field() {
        // A registered phone chooses its Call-ID; mod_sofia prints it raw.
        let forged = "x</call-id><sip-auth-user>1005</sip-auth-user></registration><registration><sip-auth-user>1006</sip-auth-user>";
        let body = format!("{HEAD}{}{TAIL}", reg(forged, "1000", "1000", "192.0.2.5"));
        let ProfileRegs::Rows(rows) = parse("internal", &body).unwrap() else {
            panic!("rows expected")
        };
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].auth_user, "1000");
    }

    #[test]
    fn a_folded_call_id_cannot_forge_a_row_it_makes_the_answer_unreadable() {
        // sofia-sip keeps a folded header's CRLF and whitespace: a phone can send a Call-ID
        // whose continuation lines look like mod_sofia's own, at any indentation.
        for forged in [
            "x\n        <sip-auth-user>1005</sip-auth-user>",
            "x\n        <user>1005@h</user>\n        <contact>c</contact>",
            "x\n    </registration>\n    <registration>\n        <call-id>y</call-id>",
            "x\n  </registrations>\n</profile>",
            "x\n        junk",
        ] {
            let body = format!("{HEAD}{}{TAIL}", reg(forged, "1000", "1000", "192.0.2.5"));
            assert!(parse("internal", &body).is_err(), "{forged:?}");
        }
    }

    #[test]
    fn unexpected_answers_are_errors_not_empty_lists() {
        for body in [
            "-ERR nosuchcmd Command not found!\n",
            "",
            "<?xml version=\"1.0\"?>\n<profile>\n  <registrations>\n",
            &format!("{HEAD}    <registration>\n{TAIL}"),
            &format!("{HEAD}    </registration>\n{TAIL}"),
            &format!("{HEAD}    <registration>\n    </registration>\n{TAIL}"),
        ] {
            assert!(parse("internal", body).is_err(), "{body:?}");
        }
    }

    #[test]
    fn only_plain_profile_names_are_sent() {
        assert_eq!(
            command("internal").as_deref(),
            Some("sofia xmlstatus profile internal reg")
        );
        for bad in ["", "a b", "a\nreload", "x;y", &"p".repeat(65)] {
            assert_eq!(command(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn users_match_by_authenticated_user() {
        let r = |auth: &str, user: &str| Registration {
            profile: "internal".into(),
            auth_user: auth.into(),
            user: user.into(),
            network_ip: None,
        };
        let regs = Registered {
            rows: vec![r("1000", "1000"), r("", "1001"), r("1002", "alias")],
            unknown: vec![],
        };
        assert_eq!(regs.of_user("1000").len(), 1);
        assert_eq!(regs.of_user("1001").len(), 1);
        assert_eq!(regs.of_user("1002").len(), 1);
        assert!(regs.of_user("alias").is_empty());
    }
}
