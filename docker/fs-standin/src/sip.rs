//! SIP over UDP: message parsing, MD5 digest (RFC 2617), the per-profile registrar with the
//! sofia_reg.c log lines, and a REGISTER test client.

use crate::config::{ProfileConf, Secret};
use crate::core::{Core, RunningProfile, new_uuid};
use crate::logfile::Level;
use md5::{Digest, Md5};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

pub const USER_AGENT: &str = "FreeSWITCH-mod_sofia/1.10.12-release~64bit";
const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, MESSAGE, INFO, UPDATE, REGISTER, REFER, NOTIFY, PUBLISH, SUBSCRIBE";
/// The stock default dialplan's echo test extension: the one number the stand-in answers.
pub const ECHO_EXTENSION: &str = "9196";
/// Nonces older than this are stale and get a fresh challenge.
const NONCE_TTL: Duration = Duration::from_secs(300);
const MAX_NONCES: usize = 20_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request { method: String, uri: String },
    Response { code: u16, reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub start: StartLine,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// Compact header forms (RFC 3261 §7.3.3) mapped to their full names.
fn full_name(name: &str) -> &str {
    match name {
        "v" | "V" => "Via",
        "f" | "F" => "From",
        "t" | "T" => "To",
        "i" | "I" => "Call-ID",
        "m" | "M" => "Contact",
        "l" | "L" => "Content-Length",
        "c" | "C" => "Content-Type",
        other => other,
    }
}

/// RFC 3261 `token`: what a header name is made of.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
}

/// The header block cut where sofia-sip ends a line: at CRLF, at a bare LF and at a bare CR.
/// Each line comes with the terminator that ended the line before it (empty for the first).
fn physical_lines(head: &str) -> Vec<(&str, &str)> {
    let b = head.as_bytes();
    let mut out = Vec::new();
    let (mut start, mut i, mut prev_term) = (0, 0, "");
    while i < b.len() {
        let term = match b[i] {
            b'\r' if b.get(i + 1) == Some(&b'\n') => 2,
            b'\r' | b'\n' => 1,
            _ => {
                i += 1;
                continue;
            }
        };
        out.push((&head[start..i], prev_term));
        prev_term = &head[i..i + term];
        i += term;
        start = i;
    }
    out.push((&head[start..], prev_term));
    out
}

/// Headers whose folds are kept byte for byte. sofia-sip keeps a folded quoted string as is, and
/// FreeSWITCH logs the digest username from it raw (FACTS §4); in From/To a line break decides the
/// answer (400). Everywhere else a fold is just whitespace.
fn keeps_folds(name: &str) -> bool {
    ["Authorization", "Proxy-Authorization", "From", "To"]
        .iter()
        .any(|h| h.eq_ignore_ascii_case(name))
}

/// A header value with its folds turned into single spaces.
fn unfold(v: &str) -> String {
    v.split(['\r', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

impl Message {
    /// Parse a datagram; None for anything that is not a SIP message.
    ///
    /// Lines end as sofia-sip ends them (CRLF, LF or CR). A line starting with a space or tab
    /// continues the header before it (a fold). A line that is not `token: value` is an error
    /// header that sofia-sip ignores, with its continuations: so a bare LF or CR that is not
    /// followed by a space or tab cuts a header in two, and what is left of it fails to parse
    /// and is dropped (FACTS §4, checked on a real 1.10.12 with a Proxy-Authorization header).
    pub fn parse(data: &[u8]) -> Option<Message> {
        let text = std::str::from_utf8(data).ok()?;
        let (head, body) = match text.find("\r\n\r\n") {
            Some(p) => (&text[..p], &text[p + 4..]),
            None => (text.find("\n\n").map(|p| &text[..p]).unwrap_or(text), ""),
        };
        let mut lines = physical_lines(head).into_iter();
        let (first, _) = lines.next()?;
        let start = if let Some(rest) = first.strip_prefix("SIP/2.0 ") {
            let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
            let code: u16 = code.parse().ok().filter(|c| (100..700).contains(c))?;
            StartLine::Response {
                code,
                reason: reason.to_string(),
            }
        } else {
            let mut parts = first.split(' ');
            let (method, uri, ver) = (parts.next()?, parts.next()?, parts.next()?);
            if ver != "SIP/2.0"
                || parts.next().is_some()
                || method.is_empty()
                || !method.bytes().all(|b| b.is_ascii_uppercase())
            {
                return None;
            }
            StartLine::Request {
                method: method.to_string(),
                uri: uri.to_string(),
            }
        };
        let mut headers: Vec<(String, String)> = Vec::new();
        // False while the lines belong to an error header (ignored with its continuations).
        let mut in_header = false;
        for (line, term) in lines {
            if line.starts_with([' ', '\t']) {
                if in_header && let Some(last) = headers.last_mut() {
                    last.1.push_str(term);
                    last.1.push_str(line);
                }
                continue;
            }
            in_header = false;
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let k = k.trim_end_matches([' ', '\t']);
            if !is_token(k) {
                continue;
            }
            headers.push((full_name(k).to_string(), v.to_string()));
            in_header = true;
        }
        for (k, v) in &mut headers {
            *v = if keeps_folds(k) {
                v.trim().to_string()
            } else {
                unfold(v)
            };
        }
        Some(Message {
            start,
            headers,
            body: body.to_string(),
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn cseq(&self) -> Option<(u32, String)> {
        let v = self.header("CSeq")?;
        let (n, m) = v.split_once(char::is_whitespace)?;
        Some((n.trim().parse().ok()?, m.trim().to_string()))
    }
}

/// (user, host) of the URI in a From/To/Contact value or a bare request URI.
pub fn uri_user_host(v: &str) -> (String, String) {
    let uri = match (v.find('<'), v.find('>')) {
        (Some(a), Some(b)) if b > a => &v[a + 1..b],
        _ => v.split(';').next().unwrap_or(v),
    };
    let uri = uri.trim();
    let rest = uri
        .strip_prefix("sips:")
        .or_else(|| uri.strip_prefix("sip:"))
        .unwrap_or(uri);
    let rest = rest.split([';', '?']).next().unwrap_or(rest);
    let (user, hostport) = match rest.rsplit_once('@') {
        Some((u, h)) => (u.split(':').next().unwrap_or(u), h),
        None => ("", rest),
    };
    let host = if let Some(v6) = hostport.strip_prefix('[') {
        v6.split(']').next().unwrap_or(v6)
    } else {
        hostport.split(':').next().unwrap_or(hostport)
    };
    (user.to_string(), host.to_string())
}

/// Parameters of a `Digest k=v, k="v"` header value, as FreeSWITCH gets them (FACTS §4).
///
/// sofia-sip splits the parameters: commas and `\"` inside a quoted string do not split, line
/// folds between parameters are whitespace, and a folded quoted string is kept as is, CRLF and
/// the space or tab after it included. sofia_reg.c then takes each value after `=`, drops the
/// leading quotes and cuts it at the next quote (no unescaping): that is the username it logs in
/// `Can't find user [%s@%s]`. None when the value does not parse (an unterminated quoted string,
/// what a bare CR or LF leaves): sofia-sip drops such a header.
pub fn parse_digest(v: &str) -> Option<HashMap<String, String>> {
    let lws = |c: char| matches!(c, ' ' | '\t' | '\r' | '\n');
    let v = v.trim_start_matches(lws);
    let (scheme, mut rest) = v.split_at(v.find(lws)?);
    if !scheme.eq_ignore_ascii_case("digest") {
        return None;
    }
    let mut out = HashMap::new();
    loop {
        rest = rest.trim_start_matches(|c| lws(c) || c == ',');
        if rest.is_empty() {
            break;
        }
        let end = rest
            .find(|c: char| c == '=' || c == ',' || lws(c))
            .unwrap_or(rest.len());
        let name = &rest[..end];
        rest = rest[end..].trim_start_matches(lws);
        let mut value = String::new();
        if let Some(after) = rest.strip_prefix('=') {
            rest = after.trim_start_matches(lws);
            let bytes = rest.as_bytes();
            let end = if bytes.first() == Some(&b'"') {
                let mut i = 1;
                loop {
                    match bytes.get(i) {
                        None => return None,
                        Some(b'\\') => i += 2,
                        Some(b'"') => break i + 1,
                        Some(_) => i += 1,
                    }
                }
            } else {
                rest.find(|c: char| c == ',' || lws(c))
                    .unwrap_or(rest.len())
            };
            // sofia_reg.c: `while (*val == '"') *val++ = '\0'; if ((p = strchr(val, '"'))) *p = '\0';`
            let raw = rest[..end].trim_start_matches('"');
            value = raw.split('"').next().unwrap_or(raw).to_string();
            rest = &rest[end..];
        }
        if name.is_empty() {
            return None;
        }
        out.insert(name.to_ascii_lowercase(), value);
    }
    Some(out)
}

pub fn md5_hex(s: &str) -> String {
    Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What a digest `response=` must be (RFC 2617, MD5; qop=auth or none).
#[allow(clippy::too_many_arguments)]
pub fn digest_response(
    user: &str,
    realm: &str,
    password: &str,
    method: &str,
    uri: &str,
    nonce: &str,
    nc: &str,
    cnonce: &str,
    qop: &str,
) -> String {
    let ha1 = md5_hex(&format!("{user}:{realm}:{password}"));
    let ha2 = md5_hex(&format!("{method}:{uri}"));
    if qop.is_empty() {
        md5_hex(&format!("{ha1}:{nonce}:{ha2}"))
    } else {
        md5_hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}"))
    }
}

fn random_hex(n: usize) -> String {
    (0..n)
        .map(|_| format!("{:x}", rand::random::<u8>() & 0xf))
        .collect()
}

/// Build a response to `req`, copying the dialog headers as sofia does.
fn response(req: &Message, src: SocketAddr, code: u16, reason: &str, extra: &[String]) -> String {
    let mut out = format!("SIP/2.0 {code} {reason}\r\n");
    for (i, via) in req.headers_named("Via").enumerate() {
        let mut via = via.to_string();
        if i == 0 {
            if via.contains(";rport") && !via.contains(";rport=") {
                via = via.replacen(";rport", &format!(";rport={}", src.port()), 1);
            }
            if !via.contains(";received=") {
                via.push_str(&format!(";received={}", src.ip()));
            }
        }
        out.push_str(&format!("Via: {via}\r\n"));
    }
    if let Some(f) = req.header("From") {
        out.push_str(&format!("From: {}\r\n", unfold(f)));
    }
    if let Some(t) = req.header("To") {
        let t = unfold(t);
        if t.contains(";tag=") || code < 101 {
            out.push_str(&format!("To: {t}\r\n"));
        } else {
            out.push_str(&format!("To: {t};tag={}\r\n", random_hex(13)));
        }
    }
    for h in ["Call-ID", "CSeq"] {
        if let Some(v) = req.header(h) {
            out.push_str(&format!("{h}: {v}\r\n"));
        }
    }
    for e in extra {
        out.push_str(e);
        out.push_str("\r\n");
    }
    out.push_str(&format!(
        "User-Agent: {USER_AGENT}\r\nAllow: {ALLOW}\r\nSupported: timer, path, replaces\r\nContent-Length: 0\r\n\r\n"
    ));
    out
}

/// Registrar state of one profile.
pub struct Registrar {
    core: Arc<Core>,
    profile: String,
    force_register_domain: Option<String>,
    force_matching_username: bool,
    nonces: HashMap<String, Instant>,
}

impl Registrar {
    pub fn new(core: Arc<Core>, p: &ProfileConf) -> Self {
        Registrar {
            core,
            profile: p.name.clone(),
            force_register_domain: p.force_register_domain.clone(),
            force_matching_username: p.force_matching_username,
            nonces: HashMap::new(),
        }
    }

    /// Handle one datagram; the reply to send back, if any. Never panics on garbage.
    pub fn handle(&mut self, data: &[u8], src: SocketAddr) -> Option<String> {
        let msg = Message::parse(data)?;
        let StartLine::Request { method, uri } = &msg.start else {
            return None;
        };
        for h in ["Via", "From", "To", "Call-ID", "CSeq"] {
            msg.header(h)?;
        }
        // A line break inside From or To (a fold, or a bare CR or LF that cut the URI short) gets
        // 400 from sofia-sip before FreeSWITCH sees the request (FACTS §4): attacker text never
        // reaches the log from these headers.
        let broken = |v: &str| v.contains(['\r', '\n']) || (v.contains('<') && !v.contains('>'));
        if ["From", "To"]
            .iter()
            .any(|h| msg.header(h).is_some_and(broken))
        {
            return Some(response(&msg, src, 400, "Bad Request", &[]));
        }
        match method.as_str() {
            "REGISTER" => Some(self.authenticate(&msg, src, "REGISTER", uri)),
            "INVITE" => Some(self.authenticate(&msg, src, "INVITE", uri)),
            "OPTIONS" => Some(response(
                &msg,
                src,
                200,
                "OK",
                &["Accept: application/sdp".to_string()],
            )),
            "ACK" => None,
            // A BYE in the dialog of an answered call ends its session.
            "BYE"
                if msg
                    .header("Call-ID")
                    .is_some_and(|c| self.core.hangup_call(c.trim())) =>
            {
                Some(response(&msg, src, 200, "OK", &[]))
            }
            "BYE" | "CANCEL" => Some(response(
                &msg,
                src,
                481,
                "Call/Transaction Does Not Exist",
                &[],
            )),
            _ => Some(response(&msg, src, 405, "Method Not Allowed", &[])),
        }
    }

    /// An authenticated INVITE, routed through the XML dialplan (crate::dialplan). Answered
    /// (the stock 9196, the `echo` extension), the call stays up until a BYE: a session in the
    /// core, which `show calls` and `status` count and which no reload touches (real FreeSWITCH
    /// keeps calls across reloadxml, a profile rescan and `reload mod_event_socket`, which
    /// restarts only the Event Socket listener); no media flows. Hung up by the dialplan: the
    /// status mod_sofia gives the cause, with its Reason header. Decided by something the
    /// stand-in does not model: 480.
    fn answer(
        &mut self,
        msg: &Message,
        src: SocketAddr,
        ruri: &str,
        caller: &str,
        domain: &str,
    ) -> String {
        let (dest, _) = uri_user_host(ruri);
        match crate::dialplan::route_call(&self.core, &self.profile, caller, domain, &dest, src) {
            crate::dialplan::Routed::Answered { .. } => {}
            crate::dialplan::Routed::HungUp { cause, .. } => {
                let (code, phrase) = cause.sip();
                let reason = format!("Reason: {}", cause.reason());
                return response(msg, src, code, phrase, &[reason]);
            }
            crate::dialplan::Routed::NotModelled { .. } => {
                return response(msg, src, 480, "Temporarily Unavailable", &[]);
            }
        }
        let call_id = msg.header("Call-ID").unwrap_or_default().trim().to_string();
        self.core.answer_call(
            &call_id,
            crate::core::Call {
                uuid: new_uuid(),
                profile: self.profile.clone(),
                caller: caller.to_string(),
                destination: dest.clone(),
                network: src,
                created: std::time::SystemTime::now(),
            },
        );
        let ip = self
            .core
            .global_var("local_ip_v4")
            .unwrap_or_else(|| "127.0.0.1".to_string());
        let sdp = format!(
            "v=0\r\no=FreeSWITCH 1 2 IN IP4 {ip}\r\ns=FreeSWITCH\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
             m=audio 16384 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
        );
        let head = response(
            msg,
            src,
            200,
            "OK",
            &[
                format!("Contact: <sip:{dest}@{ip}>"),
                "Content-Type: application/sdp".to_string(),
            ],
        );
        let head = head
            .strip_suffix("Content-Length: 0\r\n\r\n")
            .unwrap_or(&head);
        format!("{head}Content-Length: {}\r\n\r\n{sdp}", sdp.len())
    }

    fn fresh_nonce(&mut self) -> String {
        let now = Instant::now();
        if self.nonces.len() >= MAX_NONCES {
            self.nonces
                .retain(|_, t| now.duration_since(*t) < NONCE_TTL);
            if self.nonces.len() >= MAX_NONCES {
                self.nonces.clear();
            }
        }
        let n = new_uuid();
        self.nonces.insert(n.clone(), now);
        n
    }

    fn nonce_ok(&self, n: &str) -> bool {
        self.nonces.get(n).is_some_and(|t| t.elapsed() < NONCE_TTL)
    }

    /// sofia_reg.c's digest sequence: challenge, then look up the user and check the response.
    fn authenticate(
        &mut self,
        msg: &Message,
        src: SocketAddr,
        regtype: &str,
        ruri: &str,
    ) -> String {
        let log_failures = self.core.log_auth_failures(&self.profile);
        let ip = crate::acl::canonical(src.ip());
        let (to_user, to_host) = msg.header("To").map(uri_user_host).unwrap_or_default();
        // For calls the brackets hold the called user (request URI).
        let (who_user, who_host) = if regtype == "INVITE" {
            let (u, _) = uri_user_host(ruri);
            (u, to_host.clone())
        } else {
            (to_user.clone(), to_host)
        };
        let (_, realm) = msg.header("From").map(uri_user_host).unwrap_or_default();
        let (auth_hdr, challenge_code, challenge_reason, challenge_hdr) = if regtype == "INVITE" {
            (
                "Proxy-Authorization",
                407,
                "Proxy Authentication Required",
                "Proxy-Authenticate",
            )
        } else {
            ("Authorization", 401, "Unauthorized", "WWW-Authenticate")
        };
        let creds = msg
            .header(auth_hdr)
            .and_then(parse_digest)
            .filter(|c| c.get("nonce").is_some_and(|n| self.nonce_ok(n)));
        let Some(creds) = creds else {
            let nonce = self.fresh_nonce();
            if log_failures {
                self.core.log.log(
                    Level::Warning,
                    "sofia_reg.c:1842",
                    &format!(
                        "SIP auth challenge ({regtype}) on sofia profile '{}' for [{who_user}@{who_host}] from ip {ip}",
                        self.profile
                    ),
                );
            }
            return response(
                msg,
                src,
                challenge_code,
                challenge_reason,
                &[format!(
                    "{challenge_hdr}: Digest realm=\"{realm}\", nonce=\"{nonce}\", algorithm=MD5, qop=\"auth\""
                )],
            );
        };
        let get = |k: &str| creds.get(k).map(String::as_str).unwrap_or("");
        let username = get("username");
        let domain_name = self
            .force_register_domain
            .clone()
            .unwrap_or_else(|| get("realm").to_string());
        let snap = self.core.snapshot();
        // inbound-reg-force-matching-username (stock internal profile): sofia_reg.c refuses a
        // REGISTER whose digest username is not its To user before it searches the directory, so
        // no `Can't find user` line is written; INVITEs are not checked (FACTS §4). The URI user
        // is compared as sent: `%0D%0A` stays escaped, here and in every log line.
        let mismatch = regtype == "REGISTER"
            && self.force_matching_username
            && (username.is_empty()
                || to_user.is_empty()
                || !to_user.eq_ignore_ascii_case(username));
        let ok = match snap.directory.user(&domain_name, username) {
            _ if mismatch => false,
            None => {
                // FreeSWITCH prints the username raw (FACTS §4): a fold inside it (CRLF plus a
                // space or tab) starts a new line of freeswitch.log with that space or tab, in
                // this line and in the `id="..."` continuation line.
                let uname = if username.is_empty() {
                    "nobody"
                } else {
                    username
                };
                let line = self.core.log.format(
                    Level::Warning,
                    "sofia_reg.c:3210",
                    &format!("Can't find user [{uname}@{domain_name}] from {ip}"),
                );
                self.core.log.write_raw(&format!(
                    "{line}You must define a domain called '{domain_name}' in your directory and add a user with the id=\"{uname}\" attribute\n\
                     and you must configure your device to use the proper domain in its authentication credentials.\n"
                ));
                false
            }
            // No password in the directory: FreeSWITCH lets the user in.
            Some(u) => match &u.password {
                None => true,
                Some(pw) => check_response(&creds, pw, msg_method(msg)),
            },
        };
        if ok {
            if regtype == "INVITE" {
                return self.answer(msg, src, ruri, username, &domain_name);
            }
            let expires = msg
                .header("Expires")
                .and_then(|e| e.trim().parse::<u32>().ok())
                .unwrap_or(3600);
            // sofia_reg.c keeps the binding in sip_registrations under its Call-ID; `sofia
            // xmlstatus profile NAME reg` lists it until it expires.
            self.core.register(
                crate::registrations::Registration {
                    profile: self.profile.clone(),
                    call_id: msg.header("Call-ID").unwrap_or_default().trim().to_string(),
                    sip_user: to_user.clone(),
                    sip_host: who_host.clone(),
                    contact: msg.header("Contact").unwrap_or_default().to_string(),
                    user_agent: msg.header("User-Agent").unwrap_or_default().to_string(),
                    expires: 0,
                    network: src,
                    auth_user: username.to_string(),
                    auth_realm: get("realm").to_string(),
                },
                u64::from(expires),
            );
            let mut extra = Vec::new();
            if let Some(c) = msg.header("Contact") {
                let c = c.split(";expires=").next().unwrap_or(c);
                extra.push(format!("Contact: {c};expires={expires}"));
            }
            extra.push(format!(
                "Date: {}",
                chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT")
            ));
            return response(msg, src, 200, "OK", &extra);
        }
        if log_failures {
            self.core.log.log(
                Level::Warning,
                "sofia_reg.c:1787",
                &format!(
                    "SIP auth failure ({regtype}) on sofia profile '{}' for [{who_user}@{who_host}] from ip {ip}",
                    self.profile
                ),
            );
        }
        response(msg, src, 403, "Forbidden", &[])
    }
}

fn msg_method(m: &Message) -> &str {
    match &m.start {
        StartLine::Request { method, .. } => method,
        StartLine::Response { .. } => "",
    }
}

fn check_response(creds: &HashMap<String, String>, pw: &Secret, method: &str) -> bool {
    let get = |k: &str| creds.get(k).map(String::as_str).unwrap_or("");
    let qop = get("qop");
    if !qop.is_empty() && !qop.eq_ignore_ascii_case("auth") {
        return false;
    }
    let expected = digest_response(
        get("username"),
        get("realm"),
        pw.expose(),
        method,
        get("uri"),
        get("nonce"),
        get("nc"),
        get("cnonce"),
        qop,
    );
    expected.eq_ignore_ascii_case(get("response"))
}

/// Start every profile whose address can be bound; log and skip the others.
pub async fn start_profiles(core: &Arc<Core>) {
    let snap = core.snapshot();
    for p in &snap.profiles {
        let url_ip = if p.sip_ip.contains(':') {
            format!("[{}]", p.sip_ip)
        } else {
            p.sip_ip.clone()
        };
        let url = format!("sip:mod_sofia@{url_ip}:{}", p.sip_port);
        let bound = match p.sip_ip.parse::<IpAddr>() {
            Ok(ip) => UdpSocket::bind((ip, p.sip_port)).await.ok(),
            Err(_) => None,
        };
        let Some(sock) = bound else {
            core.log.log(
                Level::Error,
                "sofia.c:3299",
                &format!(
                    "Error Creating SIP UA for profile: {} ({url};transport=udp,tcp) The likely causes for this are: 1) Another application is already listening on the specified address. 2) The IP the profile is attempting to bind to is not local to this system.",
                    p.name
                ),
            );
            continue;
        };
        core.set_running(RunningProfile {
            name: p.name.clone(),
            url,
        });
        core.log.log(
            Level::Notice,
            "sofia.c:3393",
            &format!("Started Profile {} [sofia_reg_{}]", p.name, p.name),
        );
        let reg = Arc::new(std::sync::Mutex::new(Registrar::new(core.clone(), p)));
        // sofia listens on TCP as well as UDP on the same address and port.
        if let Ok(ip) = p.sip_ip.parse::<IpAddr>() {
            match tokio::net::TcpListener::bind((ip, p.sip_port)).await {
                Ok(l) => {
                    tokio::spawn(serve_tcp(l, reg.clone()));
                }
                Err(e) => core.log.log(
                    Level::Error,
                    "sofia.c:3299",
                    &format!(
                        "Profile {}: cannot listen on TCP {ip}:{}: {e}",
                        p.name, p.sip_port
                    ),
                ),
            }
        }
        crate::tls::start_profile(core, p).await;
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65535];
            loop {
                let Ok((n, src)) = sock.recv_from(&mut buf).await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let reply = reg
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .handle(&buf[..n], src);
                if let Some(reply) = reply {
                    let _ = sock.send_to(reply.as_bytes(), src).await;
                }
            }
        });
    }
}

pub(crate) type SharedRegistrar = Arc<std::sync::Mutex<Registrar>>;

async fn serve_tcp(listener: tokio::net::TcpListener, reg: SharedRegistrar) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let reg = reg.clone();
        tokio::spawn(async move {
            let _ = sip_tcp_connection(stream, peer, reg).await;
        });
    }
}

/// Messages on a stream (TCP, or TLS: see tls.rs) are delimited by the blank line plus
/// Content-Length.
pub(crate) async fn sip_tcp_connection<S>(
    mut stream: S,
    peer: SocketAddr,
    reg: SharedRegistrar,
) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const MAX: usize = 65535;
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // Skip CRLF keep-alives between messages.
        while buf.first().is_some_and(|b| *b == b'\r' || *b == b'\n') {
            buf.remove(0);
        }
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| {
                    k.trim().eq_ignore_ascii_case("content-length")
                        || k.trim().eq_ignore_ascii_case("l")
                })
                .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            let total = end + 4 + len;
            if total > MAX {
                return Ok(());
            }
            if buf.len() >= total {
                let msg: Vec<u8> = buf.drain(..total).collect();
                let reply = reg
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .handle(&msg, peer);
                if let Some(reply) = reply {
                    stream.write_all(reply.as_bytes()).await?;
                }
                continue;
            }
        } else if buf.len() > MAX {
            return Ok(());
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot resolve target {0:?}: give HOST:PORT, e.g. 127.0.0.1:5060")]
    Target(String),
    #[error("UDP socket error talking to {target}: {source}")]
    Io {
        target: SocketAddr,
        source: std::io::Error,
    },
}

/// How one REGISTER exchange ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Final { code: u16, status_line: String },
    Timeout,
}

#[derive(Debug, Clone)]
pub struct RegisterOpts {
    pub target: String,
    pub user: String,
    pub password: Secret,
    pub domain: Option<String>,
    pub timeout: Duration,
}

/// A UDP socket connected to `target` (HOST:PORT) from an ephemeral port.
async fn connect_udp(target: &str) -> Result<(UdpSocket, SocketAddr), ClientError> {
    let addr = tokio::net::lookup_host(target)
        .await
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| ClientError::Target(target.to_string()))?;
    let io = |source| ClientError::Io {
        target: addr,
        source,
    };
    let bind = if addr.is_ipv4() {
        SocketAddr::from(([0u8; 4], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let sock = UdpSocket::bind(bind).await.map_err(io)?;
    sock.connect(addr).await.map_err(io)?;
    Ok((sock, addr))
}

/// Send `request` exactly as given (folds, bare CRs and LFs, escapes: whatever a test crafted)
/// in one datagram, and return the first final answer to it, or None after `timeout`.
///
/// Sent once, never retransmitted: the stand-in has no transaction layer, so a retransmission
/// would be handled, and logged, a second time. A request with a Call-ID only takes answers
/// carrying it; one without (crafted garbage) takes any final answer.
pub async fn send_raw(
    target: &str,
    request: &[u8],
    timeout: Duration,
) -> Result<Option<String>, ClientError> {
    let (sock, addr) = connect_udp(target).await?;
    let io = |source| ClientError::Io {
        target: addr,
        source,
    };
    let call_id = Message::parse(request).and_then(|m| m.header("Call-ID").map(str::to_string));
    sock.send(request).await.map_err(io)?;
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 65535];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        let n = match tokio::time::timeout(left, sock.recv(&mut buf)).await {
            Err(_) => return Ok(None),
            // ICMP port unreachable: nobody listens (yet); the deadline decides.
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                tokio::time::sleep(left.min(Duration::from_millis(50))).await;
                continue;
            }
            Ok(Err(e)) => return Err(io(e)),
            Ok(Ok(n)) => n,
        };
        let Some(m) = Message::parse(&buf[..n]) else {
            continue;
        };
        let ours = call_id
            .as_deref()
            .is_none_or(|c| m.header("Call-ID") == Some(c));
        if let StartLine::Response { code, .. } = m.start
            && ours
            && code >= 200
        {
            return Ok(Some(String::from_utf8_lossy(&buf[..n]).into_owned()));
        }
    }
}

/// One full REGISTER exchange: send, answer a digest challenge once, return the final status.
pub async fn register(opts: &RegisterOpts) -> Result<Outcome, ClientError> {
    let (sock, target) = connect_udp(&opts.target).await?;
    let io = |source| ClientError::Io { target, source };
    let local = sock.local_addr().map_err(io)?;
    let domain = opts.domain.clone().unwrap_or_else(|| match target.ip() {
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) => v4.to_string(),
    });
    let local_host = match local.ip() {
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) => v4.to_string(),
    };
    let call_id = format!("{}@{local_host}", random_hex(24));
    let from_tag = random_hex(10);
    let ruri = format!("sip:{domain}");
    let build = |cseq: u32, auth: Option<String>| {
        let mut m = format!(
            "REGISTER {ruri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local_host}:{port};branch=z9hG4bK{branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{user}@{domain}>;tag={from_tag}\r\n\
             To: <sip:{user}@{domain}>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} REGISTER\r\n\
             Contact: <sip:{user}@{local_host}:{port}>\r\n\
             Expires: 3600\r\n\
             User-Agent: fs-standin-register\r\n",
            port = local.port(),
            branch = random_hex(16),
            user = opts.user,
        );
        if let Some(a) = auth {
            m.push_str(&a);
            m.push_str("\r\n");
        }
        m.push_str("Content-Length: 0\r\n\r\n");
        m
    };
    let deadline = Instant::now() + opts.timeout;
    let mut cseq = 1;
    let mut request = build(cseq, None);
    let mut answered_challenge = false;
    loop {
        let Some(resp) = transact(&sock, &request, &call_id, cseq, deadline).await? else {
            return Ok(Outcome::Timeout);
        };
        let StartLine::Response { code, reason } = &resp.start else {
            continue;
        };
        let status_line = format!("SIP/2.0 {code} {reason}");
        let challenge = match code {
            401 => resp.header("WWW-Authenticate"),
            407 => resp.header("Proxy-Authenticate"),
            _ => None,
        }
        .and_then(parse_digest);
        match challenge {
            Some(ch) if !answered_challenge => {
                answered_challenge = true;
                let a = authorization(
                    &ch,
                    *code,
                    &opts.user,
                    opts.password.expose(),
                    "REGISTER",
                    &ruri,
                );
                cseq += 1;
                request = build(cseq, Some(a));
            }
            _ => {
                return Ok(Outcome::Final {
                    code: *code,
                    status_line,
                });
            }
        }
    }
}

/// The `Authorization` (401) or `Proxy-Authorization` (407) header answering a digest challenge.
fn authorization(
    ch: &HashMap<String, String>,
    code: u16,
    user: &str,
    password: &str,
    method: &str,
    ruri: &str,
) -> String {
    let get = |k: &str| ch.get(k).map(String::as_str).unwrap_or("");
    let qop = if get("qop").split(',').any(|q| q.trim() == "auth") {
        "auth"
    } else {
        ""
    };
    let (nc, cnonce) = ("00000001", random_hex(16));
    let response = digest_response(
        user,
        get("realm"),
        password,
        method,
        ruri,
        get("nonce"),
        nc,
        &cnonce,
        qop,
    );
    let mut a = format!(
        "{}: Digest username=\"{user}\", realm=\"{}\", nonce=\"{}\", uri=\"{ruri}\", response=\"{response}\", algorithm=MD5",
        if code == 407 {
            "Proxy-Authorization"
        } else {
            "Authorization"
        },
        get("realm"),
        get("nonce"),
    );
    if !qop.is_empty() {
        a.push_str(&format!(", cnonce=\"{cnonce}\", qop=auth, nc={nc}"));
    }
    if let Some(o) = ch.get("opaque") {
        a.push_str(&format!(", opaque=\"{o}\""));
    }
    a
}

#[derive(Debug, Clone)]
pub struct CallOpts {
    pub target: String,
    pub user: String,
    pub password: Secret,
    /// The number called (the request URI's user).
    pub to: String,
    /// How long the call stays up once answered before the client hangs up.
    pub hold: Duration,
    /// The limit for each transaction (the INVITE, the BYE).
    pub timeout: Duration,
}

/// How a test call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallOutcome {
    /// Answered (200), held, then the BYE got this final code (200: the call was still up;
    /// 481: the switch had dropped it), or None when the BYE got no answer.
    Answered {
        bye: Option<u16>,
    },
    /// The INVITE ended with another final answer; `reason` is its Reason header (the hangup
    /// cause FreeSWITCH gives, e.g. `Q.850;cause=16;text="NORMAL_CLEARING"`).
    NotAnswered {
        code: u16,
        status_line: String,
        reason: Option<String>,
    },
    Timeout,
}

/// A phone's call: INVITE (with an SDP offer, answering one digest challenge), ACK the 200,
/// keep the call up for `hold`, then BYE in the dialog; the BYE's answer says whether the switch
/// still had the call.
pub async fn call(opts: &CallOpts) -> Result<CallOutcome, ClientError> {
    let (sock, target) = connect_udp(&opts.target).await?;
    let io = |source| ClientError::Io { target, source };
    let local = sock.local_addr().map_err(io)?;
    let host = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) => v4.to_string(),
    };
    let (domain, local_host) = (host(target.ip()), host(local.ip()));
    let call_id = format!("{}@{local_host}", random_hex(24));
    let from_tag = random_hex(10);
    let ruri = format!("sip:{}@{domain}", opts.to);
    let from = format!("<sip:{}@{domain}>;tag={from_tag}", opts.user);
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 {local_host}\r\ns=-\r\nc=IN IP4 {local_host}\r\nt=0 0\r\n\
         m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
    );
    let request = |method: &str, cseq: u32, to: &str, extra: &[String], body: &str| {
        let mut m = format!(
            "{method} {ruri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local_host}:{port};branch=z9hG4bK{branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: {from}\r\n\
             To: {to}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} {method}\r\n\
             Contact: <sip:{user}@{local_host}:{port}>\r\n\
             User-Agent: fs-standin-call\r\n",
            port = local.port(),
            branch = random_hex(16),
            user = opts.user,
        );
        for e in extra {
            m.push_str(e);
            m.push_str("\r\n");
        }
        if !body.is_empty() {
            m.push_str("Content-Type: application/sdp\r\n");
        }
        m.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        m
    };
    let to_plain = format!("<sip:{}@{domain}>", opts.to);
    let mut cseq = 1;
    let mut invite = request("INVITE", cseq, &to_plain, &[], &sdp);
    let mut answered_challenge = false;
    let answer = loop {
        let deadline = Instant::now() + opts.timeout;
        let Some(resp) = transact(&sock, &invite, &call_id, cseq, deadline).await? else {
            return Ok(CallOutcome::Timeout);
        };
        let StartLine::Response { code, reason } = &resp.start else {
            continue;
        };
        let challenge = match code {
            401 => resp.header("WWW-Authenticate"),
            407 => resp.header("Proxy-Authenticate"),
            _ => None,
        }
        .and_then(parse_digest);
        match challenge {
            Some(ch) if !answered_challenge => {
                answered_challenge = true;
                // The challenged INVITE is acknowledged (RFC 3261 17.1.1.3) before the new one.
                let ack = request(
                    "ACK",
                    cseq,
                    &unfold(resp.header("To").unwrap_or("")),
                    &[],
                    "",
                );
                let _ = sock.send(ack.as_bytes()).await;
                let auth = authorization(
                    &ch,
                    *code,
                    &opts.user,
                    opts.password.expose(),
                    "INVITE",
                    &ruri,
                );
                cseq += 1;
                invite = request("INVITE", cseq, &to_plain, &[auth], &sdp);
            }
            _ if *code == 200 => break resp,
            _ => {
                return Ok(CallOutcome::NotAnswered {
                    code: *code,
                    status_line: format!("SIP/2.0 {code} {reason}"),
                    reason: resp.header("Reason").map(str::to_string),
                });
            }
        }
    };
    // The dialog's To carries the switch's tag from now on.
    let to = unfold(answer.header("To").unwrap_or(""));
    let ack = request("ACK", cseq, &to, &[], "");
    sock.send(ack.as_bytes()).await.map_err(io)?;
    tokio::time::sleep(opts.hold).await;
    cseq += 1;
    let bye = request("BYE", cseq, &to, &[], "");
    let deadline = Instant::now() + opts.timeout;
    let code = transact(&sock, &bye, &call_id, cseq, deadline)
        .await?
        .and_then(|m| match m.start {
            StartLine::Response { code, .. } => Some(code),
            StartLine::Request { .. } => None,
        });
    Ok(CallOutcome::Answered { bye: code })
}

/// Send (retransmitting as RFC 3261 timer A does) until a final response for this CSeq arrives.
async fn transact(
    sock: &UdpSocket,
    request: &str,
    call_id: &str,
    cseq: u32,
    deadline: Instant,
) -> Result<Option<Message>, ClientError> {
    let target = sock.peer_addr().map_err(|e| ClientError::Io {
        target: SocketAddr::from(([0, 0, 0, 0], 0)),
        source: e,
    })?;
    let io = |source| ClientError::Io { target, source };
    let mut interval = Duration::from_millis(500);
    let mut buf = vec![0u8; 65535];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        // ICMP port unreachable surfaces as a send/recv error: keep waiting until the deadline.
        let _ = sock.send(request.as_bytes()).await;
        let wait_until = (now + interval).min(deadline);
        interval = (interval * 2).min(Duration::from_secs(4));
        loop {
            let left = wait_until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match tokio::time::timeout(left, sock.recv(&mut buf)).await {
                Err(_) => break,
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    tokio::time::sleep(left.min(Duration::from_millis(50))).await;
                }
                Ok(Err(e)) => return Err(io(e)),
                Ok(Ok(n)) => {
                    let Some(m) = Message::parse(&buf[..n]) else {
                        continue;
                    };
                    let ours = m.header("Call-ID") == Some(call_id)
                        && m.cseq().is_some_and(|(n, _)| n == cseq);
                    if let StartLine::Response { code, .. } = m.start
                        && ours
                        && code >= 200
                    {
                        return Ok(Some(m));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc2617_vector() {
        assert_eq!(
            digest_response(
                "Mufasa",
                "testrealm@host.com",
                "Circle Of Life",
                "GET",
                "/dir/index.html",
                "dcd98b7102dd2f0e8b11d0f600bfb0c093",
                "00000001",
                "0a4f113b",
                "auth",
            ),
            "6629fae49393a05397450978507c4ef1"
        );
    }

    #[test]
    fn parses_requests_with_compact_headers_and_folding() {
        let raw = b"REGISTER sip:10.0.0.5 SIP/2.0\r\nv: SIP/2.0/UDP 1.2.3.4:5062;branch=z9hG4bKx;rport\r\n\
                    f: \"A\" <sip:1000@10.0.0.5>;tag=1\r\nt: <sip:1000@10.0.0.5>\r\ni: abc\r\nCSeq: 2 REGISTER\r\n\
                    Authorization: Digest username=\"1000\",\r\n  realm=\"10.0.0.5\", nc=00000001\r\n\r\n";
        let m = Message::parse(raw).unwrap();
        assert_eq!(
            m.start,
            StartLine::Request {
                method: "REGISTER".into(),
                uri: "sip:10.0.0.5".into()
            }
        );
        assert_eq!(m.header("call-id"), Some("abc"));
        assert_eq!(m.cseq(), Some((2, "REGISTER".into())));
        assert_eq!(
            uri_user_host(m.header("From").unwrap()),
            ("1000".into(), "10.0.0.5".into())
        );
        let d = parse_digest(m.header("Authorization").unwrap()).unwrap();
        assert_eq!(d["realm"], "10.0.0.5");
        assert_eq!(d["nc"], "00000001");
    }

    #[test]
    fn garbage_is_not_a_message() {
        for g in [
            &b""[..],
            b"\xff\xfe",
            b"hello",
            b"GET / HTTP/1.1\r\n\r\n",
            b"SIP/2.0 99999 X\r\n\r\n",
        ] {
            assert!(Message::parse(g).is_none(), "{g:?}");
        }
        // A line that is no header is an error header: ignored, as sofia-sip does.
        let m = Message::parse(b"REGISTER sip:x SIP/2.0\r\nno colon here\r\nbad name: 1\r\n\r\n")
            .unwrap();
        assert!(m.headers.is_empty(), "{:?}", m.headers);
        assert_eq!(uri_user_host("sip:[::1]:5060"), ("".into(), "::1".into()));
        assert_eq!(
            uri_user_host("<sip:1000:pw@h:1>"),
            ("1000".into(), "h".into())
        );
    }
}

#[cfg(test)]
mod hostile_parse_tests {
    use super::*;

    const FAKE: &str = "2026-11-29 17:38:18.000000 97.00% [WARNING] sofia_reg.c:3210 Can't find user [x@h] from 192.0.2.31";

    #[test]
    fn lines_end_at_crlf_lf_and_cr() {
        assert_eq!(
            physical_lines("a\r\nb\nc\rd\r\n e"),
            vec![
                ("a", ""),
                ("b", "\r\n"),
                ("c", "\n"),
                ("d", "\r"),
                (" e", "\r\n")
            ]
        );
    }

    #[test]
    fn auth_header_folds_are_kept_byte_for_byte_other_folds_are_spaces() {
        let raw = format!(
            "INVITE sip:1000@10.0.0.5 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9:5062\r\n\t;branch=z9hG4bK1\r\n\
             From: <sip:a@10.0.0.5>;tag=1\r\nTo: <sip:1000@10.0.0.5>\r\nCall-ID: c\r\nCSeq: 2 INVITE\r\n\
             Proxy-Authorization: Digest username=\"x\r\n {FAKE}\r\n\ty\",\r\n realm=\"10.0.0.5\", nonce=\"n\"\r\n\r\n"
        );
        let m = Message::parse(raw.as_bytes()).unwrap();
        assert_eq!(
            m.header("Via"),
            Some("SIP/2.0/UDP 192.0.2.9:5062 ;branch=z9hG4bK1")
        );
        let d = parse_digest(m.header("Proxy-Authorization").unwrap()).unwrap();
        assert_eq!(d["username"], format!("x\r\n {FAKE}\r\n\ty"));
        assert_eq!(
            (d["realm"].as_str(), d["nonce"].as_str()),
            ("10.0.0.5", "n")
        );
    }

    #[test]
    fn digest_values_are_cut_as_sofia_reg_c_cuts_them() {
        // sofia-sip does not split at a comma or an escaped quote inside a quoted string;
        // FreeSWITCH then cuts the value at its first quote without unescaping.
        let d = parse_digest(r#"Digest username="a\"b, c", realm=r, nc=00000001"#).unwrap();
        assert_eq!(d["username"], "a\\");
        assert_eq!((d["realm"].as_str(), d["nc"].as_str()), ("r", "00000001"));
        let d = parse_digest("Digest username=\"x%0D%0Ay\"").unwrap();
        assert_eq!(d["username"], "x%0D%0Ay", "escapes are not decoded");
        // An unterminated quoted string (what a bare CR or LF leaves of the header) drops it.
        assert!(parse_digest("Digest username=\"x").is_none());
        assert!(parse_digest("Basic dXNlcjpwdw==").is_none());
    }

    #[test]
    fn a_bare_cr_or_lf_drops_the_auth_header() {
        for cut in ["\n", "\r"] {
            let raw = format!(
                "INVITE sip:1000@h SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9\r\nFrom: <sip:a@h>;tag=1\r\n\
                 To: <sip:1000@h>\r\nCall-ID: c\r\nCSeq: 2 INVITE\r\n\
                 Proxy-Authorization: Digest username=\"x{cut}{FAKE}\", realm=\"h\", nonce=\"n\"\r\n\r\n"
            );
            let m = Message::parse(raw.as_bytes()).unwrap();
            assert!(
                m.header("Proxy-Authorization")
                    .and_then(parse_digest)
                    .is_none(),
                "{cut:?}: {:?}",
                m.headers
            );
            assert_eq!(m.header("Call-ID"), Some("c"));
        }
    }
}

#[cfg(test)]
mod registrar_tests {
    use super::*;
    use crate::config::{copy_dir, find_stock_tree};
    use crate::core::test_core;
    use std::path::Path;

    /// A tree with vars, the directory and only the internal profile, log-auth-failures as given.
    fn tree(dir: &Path, log_auth_failures: bool) {
        let stock = find_stock_tree(Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
        std::fs::copy(stock.join("vars.xml"), dir.join("vars.xml")).unwrap();
        copy_dir(&stock.join("directory"), &dir.join("directory"));
        std::fs::create_dir_all(dir.join("autoload_configs")).unwrap();
        let esl = "autoload_configs/event_socket.conf.xml";
        std::fs::copy(stock.join(esl), dir.join(esl)).unwrap();
        // Calls are routed by the stock dialplan, whose enum extension needs mod_enum loaded.
        copy_dir(&stock.join("dialplan"), &dir.join("dialplan"));
        let modules = "autoload_configs/modules.conf.xml";
        std::fs::copy(stock.join(modules), dir.join(modules)).unwrap();
        std::fs::create_dir_all(dir.join("sip_profiles")).unwrap();
        let internal = std::fs::read_to_string(stock.join("sip_profiles/internal.xml"))
            .unwrap()
            .replace(
                "<param name=\"log-auth-failures\" value=\"false\"/>",
                &format!("<param name=\"log-auth-failures\" value=\"{log_auth_failures}\"/>"),
            );
        std::fs::write(dir.join("sip_profiles/internal.xml"), internal).unwrap();
    }

    async fn registrar(core: &Arc<Core>) -> SocketAddr {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let p = core.snapshot().profiles[0].clone();
        let mut reg = Registrar::new(core.clone(), &p);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65535];
            while let Ok((n, src)) = sock.recv_from(&mut buf).await {
                if let Some(r) = reg.handle(&buf[..n], src) {
                    let _ = sock.send_to(r.as_bytes(), src).await;
                }
            }
        });
        addr
    }

    async fn reg(target: SocketAddr, user: &str, pw: &str) -> u16 {
        let opts = RegisterOpts {
            target: target.to_string(),
            user: user.into(),
            password: Secret::new(pw),
            domain: None,
            timeout: Duration::from_secs(2),
        };
        match register(&opts).await.unwrap() {
            Outcome::Final { code, .. } => code,
            Outcome::Timeout => 0,
        }
    }

    /// The log without the time and cpu fields.
    fn log_tail(dir: &Path) -> Vec<String> {
        std::fs::read_to_string(dir.join("freeswitch.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| match l.find("% [") {
                Some(p) if l.as_bytes().get(4) == Some(&b'-') => l[p + 2..].to_string(),
                _ => l.to_string(),
            })
            .collect()
    }

    #[tokio::test]
    async fn register_sequence_matches_real_freeswitch() {
        let dir = tempfile::tempdir().unwrap();
        tree(dir.path(), true);
        let core = test_core(dir.path(), dir.path());
        let target = registrar(&core).await;
        assert_eq!(reg(target, "1000", "wrong").await, 403);
        assert_eq!(reg(target, "9999", "1234").await, 403);
        assert_eq!(reg(target, "1001", "1234").await, 200);
        assert_eq!(
            reg(target, "default", "anything").await,
            200,
            "no password in the directory"
        );
        let p = "on sofia profile 'internal' for";
        assert_eq!(
            log_tail(dir.path()),
            vec![
                format!("[WARNING] sofia_reg.c:1842 SIP auth challenge (REGISTER) {p} [1000@127.0.0.1] from ip 127.0.0.1"),
                format!("[WARNING] sofia_reg.c:1787 SIP auth failure (REGISTER) {p} [1000@127.0.0.1] from ip 127.0.0.1"),
                format!("[WARNING] sofia_reg.c:1842 SIP auth challenge (REGISTER) {p} [9999@127.0.0.1] from ip 127.0.0.1"),
                "[WARNING] sofia_reg.c:3210 Can't find user [9999@127.0.0.1] from 127.0.0.1".to_string(),
                "You must define a domain called '127.0.0.1' in your directory and add a user with the id=\"9999\" attribute".to_string(),
                "and you must configure your device to use the proper domain in its authentication credentials.".to_string(),
                format!("[WARNING] sofia_reg.c:1787 SIP auth failure (REGISTER) {p} [9999@127.0.0.1] from ip 127.0.0.1"),
                format!("[WARNING] sofia_reg.c:1842 SIP auth challenge (REGISTER) {p} [1001@127.0.0.1] from ip 127.0.0.1"),
                format!("[WARNING] sofia_reg.c:1842 SIP auth challenge (REGISTER) {p} [default@127.0.0.1] from ip 127.0.0.1"),
            ]
        );
    }

    fn call_opts(target: SocketAddr, to: &str, pw: &str, hold_ms: u64) -> CallOpts {
        CallOpts {
            target: target.to_string(),
            user: "1000".into(),
            password: Secret::new(pw),
            to: to.into(),
            hold: Duration::from_millis(hold_ms),
            timeout: Duration::from_secs(2),
        }
    }

    /// The stock echo extension answers an authenticated call, which stays up (counted by
    /// `show calls count` and `status`) through reloadxml, a rescan and an Event Socket reload
    /// until the phone's BYE; a call the switch dropped gets 481 to its BYE.
    #[tokio::test]
    async fn an_answered_call_stays_up_through_reloads_until_its_bye() {
        let dir = tempfile::tempdir().unwrap();
        tree(dir.path(), true);
        let core = test_core(dir.path(), dir.path());
        let target = registrar(&core).await;
        let api = |l: &str| crate::api::execute(&core, l);
        assert_eq!(api("show calls count").body, "\n0 total.\n");

        let held = tokio::spawn({
            let o = call_opts(target, ECHO_EXTENSION, "1234", 1500);
            async move { call(&o).await }
        });
        let t0 = Instant::now();
        while api("show calls count").body != "\n1 total.\n" {
            assert!(
                t0.elapsed() < Duration::from_secs(3),
                "the call was not answered"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let status = api("status").body;
        assert!(
            status.contains("\n1 session(s) since startup\n1 session(s) - peak 1, last 5min 1 \n"),
            "{status}"
        );
        let shown = api("show calls").body;
        assert!(
            shown.contains(",inbound,")
                && shown.contains("sofia/internal/1000@127.0.0.1,1000,9196,ACTIVE"),
            "{shown}"
        );
        // What a rotation reloads: the XML, the profile, the Event Socket.
        assert_eq!(
            api("reload mod_event_socket").after,
            crate::api::After::ReloadEventSocket
        );
        core.drop_esl_clients();
        assert!(core.reload_xml().is_ok());
        assert_eq!(api("show calls count").body, "\n1 total.\n");
        assert_eq!(
            held.await.unwrap().unwrap(),
            CallOutcome::Answered { bye: Some(200) }
        );
        assert_eq!(api("show calls count").body, "\n0 total.\n");
        assert!(
            api("status")
                .body
                .contains("\n0 session(s) - peak 1, last 5min 1 \n")
        );

        // A call the switch drops before the phone hangs up: its BYE finds no dialog.
        let dropped = tokio::spawn({
            let o = call_opts(target, ECHO_EXTENSION, "1234", 800);
            async move { call(&o).await }
        });
        let t0 = Instant::now();
        while core.hangup_all() == 0 {
            assert!(
                t0.elapsed() < Duration::from_secs(3),
                "the call was not answered"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            dropped.await.unwrap().unwrap(),
            CallOutcome::Answered { bye: Some(481) }
        );

        // A number the stock dialplan hands to mod_enum, which finds no record (cleared before
        // answer), or a wrong password: not answered, nothing counted.
        match call(&call_opts(target, "777", "1234", 0)).await.unwrap() {
            CallOutcome::NotAnswered { code: 480, .. } => {}
            other => panic!("{other:?}"),
        }
        match call(&call_opts(target, ECHO_EXTENSION, "wrong", 0))
            .await
            .unwrap()
        {
            CallOutcome::NotAnswered { code: 403, .. } => {}
            other => panic!("{other:?}"),
        }
        assert!(
            api("status")
                .body
                .contains("\n2 session(s) since startup\n")
        );
    }

    /// The stock dialplan routes 1000's international call to the example gateway, which is not
    /// configured (484, INVALID_GATEWAY); once `international` is out of 1000's toll_allow and
    /// the XML reloaded, the call falls through to mod_enum and is cleared (480).
    #[tokio::test]
    async fn an_international_call_is_answered_as_the_dialplan_routes_it() {
        let dir = tempfile::tempdir().unwrap();
        tree(dir.path(), false);
        let core = test_core(dir.path(), dir.path());
        let target = registrar(&core).await;
        let intl = "011442071234567";
        match call(&call_opts(target, intl, "1234", 0)).await.unwrap() {
            CallOutcome::NotAnswered {
                code: 484,
                status_line,
                reason,
            } => {
                assert_eq!(status_line, "SIP/2.0 484 Address Incomplete");
                assert_eq!(
                    reason.as_deref(),
                    Some("SIP;cause=608;text=\"INVALID_GATEWAY\"")
                );
            }
            other => panic!("{other:?}"),
        }
        let user = dir.path().join("directory/default/1000.xml");
        let text = std::fs::read_to_string(&user).unwrap();
        std::fs::write(&user, text.replace("domestic,international,local", "local")).unwrap();
        assert!(core.reload_xml().is_ok());
        match call(&call_opts(target, intl, "1234", 0)).await.unwrap() {
            CallOutcome::NotAnswered {
                code: 480, reason, ..
            } => assert_eq!(
                reason.as_deref(),
                Some("Q.850;cause=16;text=\"NORMAL_CLEARING\"")
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            call(&call_opts(target, ECHO_EXTENSION, "1234", 0))
                .await
                .unwrap(),
            CallOutcome::Answered { bye: Some(200) }
        ));
    }

    #[tokio::test]
    async fn flag_off_logs_only_cant_find_user() {
        let dir = tempfile::tempdir().unwrap();
        tree(dir.path(), false);
        let core = test_core(dir.path(), dir.path());
        let target = registrar(&core).await;
        assert_eq!(reg(target, "1000", "1234").await, 200);
        assert_eq!(reg(target, "1000", "12345").await, 403);
        assert_eq!(reg(target, "42", "1234").await, 403);
        let log = log_tail(dir.path());
        assert_eq!(log.len(), 3, "{log:?}");
        assert!(log[0].starts_with("[WARNING] sofia_reg.c:3210 Can't find user [42@127.0.0.1]"));
    }

    #[tokio::test]
    async fn options_and_garbage() {
        let dir = tempfile::tempdir().unwrap();
        tree(dir.path(), false);
        let core = test_core(dir.path(), dir.path());
        let p = core.snapshot().profiles[0].clone();
        let mut r = Registrar::new(core, &p);
        let src: SocketAddr = "192.0.2.9:5070".parse().unwrap();
        let opt = b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9:5070;branch=z9hG4bK1;rport\r\n\
                    From: <sip:scan@x>;tag=1\r\nTo: <sip:100@127.0.0.1>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\n\r\n";
        let resp = r.handle(opt, src).unwrap();
        assert!(resp.starts_with("SIP/2.0 200 OK\r\n"), "{resp}");
        assert!(resp.contains("rport=5070;received=192.0.2.9"), "{resp}");
        assert!(resp.contains("To: <sip:100@127.0.0.1>;tag="));
        for g in [
            &b"\x00\x01garbage"[..],
            b"REGISTER sip:x SIP/2.0\r\n\r\n",
            b"SIP/2.0 200 OK\r\n\r\n",
        ] {
            assert!(r.handle(g, src).is_none());
        }
    }

    /// A request as a hostile peer writes it; `auth` is a whole header line, sent as is.
    fn request(method: &str, ruri_user: &str, to_user: &str, cseq: u32, auth: &str) -> Vec<u8> {
        format!(
            "{method} sip:{ruri_user}@127.0.0.1 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK{cseq}x;rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:mallory@127.0.0.1>;tag=f{cseq}\r\n\
             To: <sip:{to_user}@127.0.0.1>\r\nCall-ID: hostile-{cseq}@127.0.0.1\r\n\
             CSeq: {cseq} {method}\r\n{auth}Content-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    async fn raw(target: SocketAddr, req: &[u8]) -> String {
        send_raw(&target.to_string(), req, Duration::from_secs(2))
            .await
            .unwrap()
            .expect("an answer")
    }

    fn nonce_of(resp: &str) -> String {
        let (_, rest) = resp.split_once("nonce=\"").expect("a challenge");
        rest.split('"').next().unwrap().to_string()
    }

    fn digest(header: &str, user: &str, nonce: &str) -> String {
        format!(
            "{header}: Digest username=\"{user}\", realm=\"127.0.0.1\", nonce=\"{nonce}\", \
             uri=\"sip:1000@127.0.0.1\", response=\"00000000000000000000000000000000\", algorithm=MD5\r\n"
        )
    }

    /// freeswitch.log split at LF only, so CRs and leading spaces and tabs stay visible.
    fn raw_log(dir: &Path) -> Vec<String> {
        std::fs::read_to_string(dir.join("freeswitch.log"))
            .unwrap_or_default()
            .split('\n')
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    fn prefixed(l: &str) -> Option<&str> {
        // `YYYY-MM-DD HH:MM:SS.uuuuuu NN.NN% ` at column 0
        (l.len() > 27 && l.as_bytes()[4] == b'-' && l.as_bytes()[26] == b' ')
            .then(|| l.split_once("% ").map(|(_, r)| r))
            .flatten()
    }

    /// FACTS §4: a 407 gives a nonce good for any user; a second INVITE whose Proxy-Authorization
    /// username is folded (CRLF + space, CRLF + tab) writes fake lines into freeswitch.log, each
    /// on its own line and starting with the fold's space or tab.
    #[tokio::test]
    async fn folded_invite_username_is_logged_raw_on_separate_lines() {
        let dir = tempfile::tempdir().unwrap();
        tree(dir.path(), true);
        let core = test_core(dir.path(), dir.path());
        let target = registrar(&core).await;
        let first = raw(target, &request("INVITE", "1000", "1000", 1, "")).await;
        assert!(
            first.starts_with("SIP/2.0 407 Proxy Authentication Required\r\n"),
            "{first}"
        );
        let fake = "2026-11-29 17:38:18.000000 97.00% [WARNING] sofia_reg.c:3210 Can't find user [x@h] from 192.0.2.31";
        let user = format!("x\r\n {fake}\r\n\t{fake}\r\n y");
        let auth = digest("Proxy-Authorization", &user, &nonce_of(&first));
        let second = raw(target, &request("INVITE", "1000", "1000", 2, &auth)).await;
        assert!(second.starts_with("SIP/2.0 403 Forbidden\r\n"), "{second}");
        let log = raw_log(dir.path());
        assert_eq!(
            log.len(),
            1 + 4 + 4 + 1 + 1,
            "challenge, 4 + 4 lines of the Can't find user message, its last line, the auth failure: {log:#?}"
        );
        assert!(
            prefixed(&log[0])
                .unwrap()
                .starts_with("[WARNING] sofia_reg.c:1842 SIP auth challenge (INVITE)")
        );
        assert_eq!(
            prefixed(&log[1]),
            Some("[WARNING] sofia_reg.c:3210 Can't find user [x\r")
        );
        assert_eq!(log[2], format!(" {fake}\r"));
        assert_eq!(log[3], format!("\t{fake}\r"));
        assert_eq!(log[4], " y@127.0.0.1] from 127.0.0.1");
        assert_eq!(
            log[5],
            "You must define a domain called '127.0.0.1' in your directory and add a user with the id=\"x\r"
        );
        assert_eq!(log[6], format!(" {fake}\r"));
        assert_eq!(log[7], format!("\t{fake}\r"));
        assert_eq!(log[8], " y\" attribute");
        assert!(log[9].starts_with("and you must configure your device"));
        assert_eq!(
            prefixed(&log[10]),
            Some(
                "[WARNING] sofia_reg.c:1787 SIP auth failure (INVITE) on sofia profile 'internal' for [1000@127.0.0.1] from ip 127.0.0.1"
            )
        );
    }

    /// Any 401/407 nonce is good for any user and method (not bound to one, FACTS §4); a bare
    /// CR or LF in the username drops the header, so the INVITE is challenged again and nothing
    /// the attacker wrote is logged.
    #[tokio::test]
    async fn register_nonce_serves_an_invite_and_bare_line_breaks_drop_the_header() {
        let dir = tempfile::tempdir().unwrap();
        tree(dir.path(), false);
        let core = test_core(dir.path(), dir.path());
        let target = registrar(&core).await;
        let first = raw(target, &request("REGISTER", "1000", "1000", 1, "")).await;
        assert!(first.starts_with("SIP/2.0 401 Unauthorized\r\n"), "{first}");
        let nonce = nonce_of(&first);
        for (i, cut) in ["\n", "\r"].into_iter().enumerate() {
            let auth = digest("Proxy-Authorization", &format!("x{cut}y"), &nonce);
            let again = raw(
                target,
                &request("INVITE", "1000", "1000", 2 + i as u32, &auth),
            )
            .await;
            assert!(again.starts_with("SIP/2.0 407 "), "{cut:?}: {again}");
        }
        assert!(raw_log(dir.path()).is_empty(), "{:?}", raw_log(dir.path()));
        let auth = digest("Proxy-Authorization", "ghost", &nonce);
        let r = raw(target, &request("INVITE", "1000", "1000", 9, &auth)).await;
        assert!(r.starts_with("SIP/2.0 403 "), "{r}");
        let log = raw_log(dir.path());
        assert_eq!(
            prefixed(&log[0]),
            Some("[WARNING] sofia_reg.c:3210 Can't find user [ghost@127.0.0.1] from 127.0.0.1")
        );
    }

    /// sofia-sip answers 400 to a From or To that a line break runs through; FreeSWITCH logs
    /// nothing (FACTS §4).
    #[tokio::test]
    async fn line_breaks_in_from_or_to_get_400_and_no_log_line() {
        let dir = tempfile::tempdir().unwrap();
        tree(dir.path(), true);
        let core = test_core(dir.path(), dir.path());
        let target = registrar(&core).await;
        let good = String::from_utf8(request("INVITE", "1000", "1000", 1, "")).unwrap();
        for (i, (from, to)) in [
            (
                "From: <sip:mallory@127.0.0.1>",
                "From: <sip:mal\r\n 2026-11-29 x@127.0.0.1>",
            ),
            (
                "To: <sip:1000@127.0.0.1>",
                "To: <sip:1000\r\n\t] from ip 192.0.2.31@127.0.0.1>",
            ),
            (
                "To: <sip:1000@127.0.0.1>",
                "To: <sip:1000\n] from ip 192.0.2.31@127.0.0.1>",
            ),
        ]
        .into_iter()
        .enumerate()
        {
            let bad = good
                .replace(from, to)
                .replace("hostile-1@", &format!("hostile-b{i}@"));
            assert_ne!(bad, good);
            let r = raw(target, bad.as_bytes()).await;
            assert!(r.starts_with("SIP/2.0 400 Bad Request\r\n"), "{to}: {r}");
        }
        assert!(raw_log(dir.path()).is_empty(), "{:?}", raw_log(dir.path()));
    }

    /// inbound-reg-force-matching-username (stock internal): a REGISTER whose username is not its
    /// To user is refused before the directory lookup, so its username never reaches the log;
    /// when they match, an escaped `%0D%0A` in the URI user is logged escaped (FACTS §4).
    #[tokio::test]
    async fn register_username_must_match_the_to_user_and_escapes_stay_escaped() {
        let dir = tempfile::tempdir().unwrap();
        tree(dir.path(), true);
        let core = test_core(dir.path(), dir.path());
        let target = registrar(&core).await;
        let first = raw(target, &request("REGISTER", "127.0.0.1", "1000", 1, "")).await;
        let nonce = nonce_of(&first);
        let user = "x\r\n 2026-11-29 17:38:18.000000 97.00% [WARNING] sofia_reg.c:3210 Can't find user [x@h] from 192.0.2.31\r\n y";
        let auth = digest("Authorization", user, &nonce);
        let r = raw(target, &request("REGISTER", "127.0.0.1", "1000", 2, &auth)).await;
        assert!(r.starts_with("SIP/2.0 403 Forbidden\r\n"), "{r}");
        let esc = "x%0D%0A2026-11-29";
        let auth = digest("Authorization", esc, &nonce);
        let r = raw(target, &request("REGISTER", "127.0.0.1", esc, 3, &auth)).await;
        assert!(r.starts_with("SIP/2.0 403 Forbidden\r\n"), "{r}");
        let log = raw_log(dir.path());
        let p = "on sofia profile 'internal' for";
        let lines: Vec<&str> = log.iter().map(|l| prefixed(l).unwrap_or(l)).collect();
        assert_eq!(
            lines,
            vec![
                format!("[WARNING] sofia_reg.c:1842 SIP auth challenge (REGISTER) {p} [1000@127.0.0.1] from ip 127.0.0.1"),
                format!("[WARNING] sofia_reg.c:1787 SIP auth failure (REGISTER) {p} [1000@127.0.0.1] from ip 127.0.0.1"),
                format!("[WARNING] sofia_reg.c:3210 Can't find user [{esc}@127.0.0.1] from 127.0.0.1"),
                format!("You must define a domain called '127.0.0.1' in your directory and add a user with the id=\"{esc}\" attribute"),
                "and you must configure your device to use the proper domain in its authentication credentials.".to_string(),
                format!("[WARNING] sofia_reg.c:1787 SIP auth failure (REGISTER) {p} [{esc}@127.0.0.1] from ip 127.0.0.1"),
            ]
        );
    }

    #[tokio::test]
    async fn client_times_out_without_an_answer() {
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let opts = RegisterOpts {
            target: silent.local_addr().unwrap().to_string(),
            user: "1000".into(),
            password: Secret::new("1234"),
            domain: None,
            timeout: Duration::from_millis(200),
        };
        assert_eq!(register(&opts).await.unwrap(), Outcome::Timeout);
    }
}
