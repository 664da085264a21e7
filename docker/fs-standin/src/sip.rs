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

impl Message {
    /// Parse a datagram; None for anything that is not a SIP message.
    pub fn parse(data: &[u8]) -> Option<Message> {
        let text = std::str::from_utf8(data).ok()?;
        let (head, body) = match text.find("\r\n\r\n") {
            Some(p) => (&text[..p], &text[p + 4..]),
            None => (text.find("\n\n").map(|p| &text[..p]).unwrap_or(text), ""),
        };
        let mut lines = head.lines().map(|l| l.trim_end_matches('\r'));
        let first = lines.next()?;
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
        for line in lines {
            if line.starts_with([' ', '\t']) {
                // Folded continuation of the previous header.
                if let Some(last) = headers.last_mut() {
                    last.1.push(' ');
                    last.1.push_str(line.trim());
                }
                continue;
            }
            let (k, v) = line.split_once(':')?;
            headers.push((full_name(k.trim()).to_string(), v.trim().to_string()));
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

/// Parameters of a `Digest k=v, k="v"` header value.
pub fn parse_digest(v: &str) -> Option<HashMap<String, String>> {
    let rest = v.trim();
    let (scheme, params) = rest.split_once(char::is_whitespace)?;
    if !scheme.eq_ignore_ascii_case("digest") {
        return None;
    }
    let mut out = HashMap::new();
    let mut s = params.trim();
    while !s.is_empty() {
        let (k, after) = s.split_once('=')?;
        let after = after.trim_start();
        let (val, rest) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (&q[..end], &q[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim(), &after[end..])
        };
        out.insert(k.trim().to_ascii_lowercase(), val.to_string());
        s = rest.trim_start().trim_start_matches(',').trim_start();
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
        out.push_str(&format!("From: {f}\r\n"));
    }
    if let Some(t) = req.header("To") {
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
    nonces: HashMap<String, Instant>,
}

impl Registrar {
    pub fn new(core: Arc<Core>, p: &ProfileConf) -> Self {
        Registrar {
            core,
            profile: p.name.clone(),
            force_register_domain: p.force_register_domain.clone(),
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
            (to_user, to_host)
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
        let ok = match snap.directory.user(&domain_name, username) {
            None => {
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
                return response(msg, src, 480, "Temporarily Unavailable", &[]);
            }
            let expires = msg
                .header("Expires")
                .and_then(|e| e.trim().parse::<u32>().ok())
                .unwrap_or(3600);
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

type SharedRegistrar = Arc<std::sync::Mutex<Registrar>>;

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

/// Messages on a stream are delimited by the blank line plus Content-Length.
async fn sip_tcp_connection(
    mut stream: tokio::net::TcpStream,
    peer: SocketAddr,
    reg: SharedRegistrar,
) -> std::io::Result<()> {
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

/// One full REGISTER exchange: send, answer a digest challenge once, return the final status.
pub async fn register(opts: &RegisterOpts) -> Result<Outcome, ClientError> {
    let target = tokio::net::lookup_host(&opts.target)
        .await
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| ClientError::Target(opts.target.clone()))?;
    let io = |source| ClientError::Io { target, source };
    let bind: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0"
            .parse()
            .map_err(|_| ClientError::Target(opts.target.clone()))?
    } else {
        "[::]:0"
            .parse()
            .map_err(|_| ClientError::Target(opts.target.clone()))?
    };
    let sock = UdpSocket::bind(bind).await.map_err(io)?;
    sock.connect(target).await.map_err(io)?;
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
                let get = |k: &str| ch.get(k).map(String::as_str).unwrap_or("");
                let qop = if get("qop").split(',').any(|q| q.trim() == "auth") {
                    "auth"
                } else {
                    ""
                };
                let (nc, cnonce) = ("00000001", random_hex(16));
                let response = digest_response(
                    &opts.user,
                    get("realm"),
                    opts.password.expose(),
                    "REGISTER",
                    &ruri,
                    get("nonce"),
                    nc,
                    &cnonce,
                    qop,
                );
                let mut a = format!(
                    "{}: Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{ruri}\", response=\"{response}\", algorithm=MD5",
                    if *code == 407 {
                        "Proxy-Authorization"
                    } else {
                        "Authorization"
                    },
                    opts.user,
                    get("realm"),
                    get("nonce"),
                );
                if !qop.is_empty() {
                    a.push_str(&format!(", cnonce=\"{cnonce}\", qop=auth, nc={nc}"));
                }
                if let Some(o) = ch.get("opaque") {
                    a.push_str(&format!(", opaque=\"{o}\""));
                }
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
            b"REGISTER sip:x SIP/2.0\r\nno colon here\r\n\r\n",
        ] {
            assert!(Message::parse(g).is_none(), "{g:?}");
        }
        assert_eq!(uri_user_host("sip:[::1]:5060"), ("".into(), "::1".into()));
        assert_eq!(
            uri_user_host("<sip:1000:pw@h:1>"),
            ("1000".into(), "h".into())
        );
    }
}

#[cfg(test)]
mod registrar_tests {
    use super::*;
    use crate::config::find_stock_tree;
    use crate::core::test_core;
    use std::path::Path;

    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let dest = to.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                copy_dir(&e.path(), &dest);
            } else {
                std::fs::copy(e.path(), dest).unwrap();
            }
        }
    }

    /// A tree with vars, the directory and only the internal profile, log-auth-failures as given.
    fn tree(dir: &Path, log_auth_failures: bool) {
        let stock = find_stock_tree(Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
        std::fs::copy(stock.join("vars.xml"), dir.join("vars.xml")).unwrap();
        copy_dir(&stock.join("directory"), &dir.join("directory"));
        std::fs::create_dir_all(dir.join("autoload_configs")).unwrap();
        let esl = "autoload_configs/event_socket.conf.xml";
        std::fs::copy(stock.join(esl), dir.join(esl)).unwrap();
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
