//! mod_sofia's `sip_registrations` table and `sofia xmlstatus profile NAME reg`.
//!
//! Real behaviour reproduced (mod_sofia.c `cmd_xml_status` and `show_reg_callback_xml`,
//! sofia_reg.c `sofia_reg_handle_register`): a REGISTER that authenticates is stored per profile
//! under its Call-ID (a refresh replaces it, `Expires: 0` removes it, an expired one is gone);
//! the XML answer starts with `<?xml version="1.0" encoding="ISO-8859-1"?>`, then `<profile>`,
//! `  <registrations>`, one `    <registration>` block per row with eight-space-indented fields
//! (contact and agent amp-encoded, sip-auth-user url-encoded, call-id and user as received), and
//! an unknown or stopped profile answers `Invalid Profile!`.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

/// One row of `sip_registrations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub profile: String,
    pub call_id: String,
    pub sip_user: String,
    pub sip_host: String,
    pub contact: String,
    pub user_agent: String,
    /// Unix time the registration expires.
    pub expires: u64,
    pub network: SocketAddr,
    pub auth_user: String,
    pub auth_realm: String,
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The table: insert/replace by (profile, Call-ID), delete on `Expires: 0`.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Registration>,
}

impl Table {
    /// A REGISTER that authenticated, with the expiry it asked for (0 removes it).
    pub fn upsert(&mut self, reg: Registration, expires_in: u64) {
        self.rows
            .retain(|r| !(r.profile == reg.profile && r.call_id == reg.call_id));
        if expires_in > 0 {
            self.rows.push(Registration {
                expires: now() + expires_in,
                ..reg
            });
        }
    }

    /// The live rows of one profile, oldest first.
    pub fn of_profile(&mut self, profile: &str) -> Vec<Registration> {
        let t = now();
        self.rows.retain(|r| r.expires > t);
        self.rows
            .iter()
            .filter(|r| r.profile == profile)
            .cloned()
            .collect()
    }
}

/// switch_amp_encode: `&`, `<`, `>`, `"`, `'` as entities.
fn amp_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// switch_url_encode: control and non-ASCII bytes and `\r\n "#%&+:;<=>?@[\]^`{|}` as %XX.
fn url_encode(s: &str) -> String {
    const UNSAFE: &[u8] = b"\r\n \"#%&+:;<=>?@[\\]^`{|}";
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if !(0x20..=0x7e).contains(&b) || UNSAFE.contains(&b) {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

/// The body of `sofia xmlstatus profile NAME reg` for a running profile.
pub fn xml_status(rows: &[Registration], hostname: &str) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>\n<profile>\n");
    out.push_str("  <registrations>\n");
    let t = now();
    for r in rows {
        let exp = chrono::DateTime::from_timestamp(r.expires as i64, 0)
            .map(|d| d.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default();
        let transport = "UDP";
        out.push_str("    <registration>\n");
        out.push_str(&format!("        <call-id>{}</call-id>\n", r.call_id));
        out.push_str(&format!(
            "        <user>{}@{}</user>\n",
            r.sip_user, r.sip_host
        ));
        out.push_str(&format!(
            "        <contact>{}</contact>\n",
            amp_encode(&r.contact)
        ));
        out.push_str(&format!(
            "        <agent>{}</agent>\n",
            amp_encode(&r.user_agent)
        ));
        out.push_str(&format!(
            "        <status>Registered({transport})(unknown) exp({exp}) expsecs({})</status>\n",
            r.expires.saturating_sub(t)
        ));
        out.push_str("        <ping-status>Reachable</ping-status>\n");
        out.push_str(&format!("        <host>{hostname}</host>\n"));
        out.push_str(&format!(
            "        <network-ip>{}</network-ip>\n",
            crate::acl::canonical(r.network.ip())
        ));
        out.push_str(&format!(
            "        <network-port>{}</network-port>\n",
            r.network.port()
        ));
        out.push_str(&format!(
            "        <sip-auth-user>{}</sip-auth-user>\n",
            url_encode(&r.auth_user)
        ));
        out.push_str(&format!(
            "        <sip-auth-realm>{}</sip-auth-realm>\n",
            r.auth_realm
        ));
        out.push_str(&format!(
            "        <mwi-account>{}@{}</mwi-account>\n",
            r.sip_user, r.sip_host
        ));
        out.push_str("    </registration>\n");
    }
    out.push_str("  </registrations>\n</profile>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(call_id: &str, user: &str) -> Registration {
        Registration {
            profile: "internal".into(),
            call_id: call_id.into(),
            sip_user: user.into(),
            sip_host: "192.0.2.10".into(),
            contact: format!("<sip:{user}@192.0.2.5:5062>"),
            user_agent: "Phone \"A\" & co".into(),
            expires: 0,
            network: "192.0.2.5:5062".parse().unwrap(),
            auth_user: user.into(),
            auth_realm: "192.0.2.10".into(),
        }
    }

    #[test]
    fn refresh_replaces_expires_zero_removes_and_profiles_are_apart() {
        let mut t = Table::default();
        t.upsert(reg("a@x", "1000"), 3600);
        t.upsert(reg("a@x", "1000"), 3600);
        t.upsert(reg("b@x", "1001"), 60);
        assert_eq!(t.of_profile("internal").len(), 2);
        assert!(t.of_profile("external").is_empty());
        t.upsert(reg("b@x", "1001"), 0);
        let rows = t.of_profile("internal");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].sip_user, "1000");
    }

    #[test]
    fn the_xml_has_mod_sofias_shape_and_encodings() {
        let mut r = reg("a<b>@x", "1000");
        r.expires = now() + 100;
        r.auth_user = "10 00".into();
        let x = xml_status(&[r], "fs01");
        let lines: Vec<&str> = x.lines().collect();
        assert_eq!(lines[0], "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>");
        assert_eq!(
            &lines[1..4],
            ["<profile>", "  <registrations>", "    <registration>"]
        );
        assert_eq!(lines[4], "        <call-id>a<b>@x</call-id>");
        assert_eq!(lines[5], "        <user>1000@192.0.2.10</user>");
        assert_eq!(
            lines[6],
            "        <contact>&lt;sip:1000@192.0.2.5:5062&gt;</contact>"
        );
        assert_eq!(
            lines[7],
            "        <agent>Phone &quot;A&quot; &amp; co</agent>"
        );
        assert!(lines[8].starts_with("        <status>Registered(UDP)(unknown) exp("));
        assert_eq!(lines[12], "        <network-port>5062</network-port>");
        assert_eq!(lines[13], "        <sip-auth-user>10%2000</sip-auth-user>");
        assert_eq!(x.lines().last(), Some("</profile>"));
        let empty = xml_status(&[], "fs01");
        assert!(empty.ends_with("  <registrations>\n  </registrations>\n</profile>\n"));
    }
}
