//! mod_event_socket: listener supervisor (bind, reload, rebind) and the per-client protocol.

use crate::api::{self, After};
use crate::config::EslSettings;
use crate::core::{Core, new_uuid};
use crate::logfile::Level;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt,
};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

pub const AUTH_REQUEST: &str = "Content-Type: auth/request\n\n";
pub const GOODBYE: &str = "Content-Type: text/disconnect-notice\nContent-Length: 67\n\nDisconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n";
pub const SHUTDOWN_NOTICE: &str =
    "Content-Type: text/disconnect-notice\nContent-Length: 31\n\nThe system is being shut down.\n";
pub const RUDE_REJECTION: &str =
    "Content-Type: text/rude-rejection\nContent-Length: 24\n\nAccess Denied, go away.\n";

/// How long a client may stay unauthenticated.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(25);
/// Delay between the reload reply and the shutdown notices, and before the rebind.
const RELOAD_DROP_DELAY: Duration = Duration::from_millis(17);
const RELOAD_REBIND_DELAY: Duration = Duration::from_millis(150);
/// Frames larger than this are not something a real client sends; drop the client.
const MAX_LINE: u64 = 64 * 1024;
const MAX_BODY: usize = 1024 * 1024;

pub fn command_reply(text: &str) -> String {
    format!("Content-Type: command/reply\nReply-Text: {text}\n\n")
}

pub fn api_response(body: &str) -> String {
    format!(
        "Content-Type: api/response\nContent-Length: {}\n\n{body}",
        body.len()
    )
}

/// One client frame: the command line, header lines, optional body.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Frame {
    pub command: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
}

/// Read one frame; Ok(None) at end of stream.
pub async fn read_frame<R: AsyncBufRead + Unpin>(r: &mut R) -> std::io::Result<Option<Frame>> {
    let mut frame = Frame::default();
    let mut started = false;
    loop {
        let mut buf = Vec::new();
        let n = (&mut *r).take(MAX_LINE).read_until(b'\n', &mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        if !buf.ends_with(b"\n") && n as u64 >= MAX_LINE {
            return Err(std::io::Error::other("line too long"));
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end_matches(['\n', '\r']);
        if line.is_empty() {
            if started {
                break;
            }
            continue;
        }
        if !started {
            frame.command = line.to_string();
            started = true;
        } else if let Some((k, v)) = line.split_once(':') {
            frame
                .headers
                .push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let len = frame
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok());
    if let Some(len) = len {
        if len > MAX_BODY {
            return Err(std::io::Error::other("body too large"));
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).await?;
        frame.body = Some(String::from_utf8_lossy(&body).into_owned());
    }
    Ok(Some(frame))
}

/// The listener for its whole life: bind with the settings in force, serve, and on
/// `reload mod_event_socket` drop every client, re-read the XML and bind again.
pub async fn run(core: Arc<Core>) {
    let mut settings = core.snapshot().esl.clone();
    loop {
        let reloaded = match bind_until_reload(&core, &settings).await {
            Some(listener) => {
                serve(&core, listener, Arc::new(settings.clone())).await;
                true
            }
            None => true,
        };
        if reloaded {
            tokio::time::sleep(RELOAD_DROP_DELAY).await;
            core.drop_esl_clients();
            tokio::time::sleep(RELOAD_REBIND_DELAY).await;
            // `reload` re-reads the XML itself.
            let _ = core.reload_xml();
            settings = core.snapshot().esl.clone();
        }
    }
}

/// Bind, retrying like mod_event_socket does; None if a reload was requested meanwhile.
async fn bind_until_reload(core: &Core, s: &EslSettings) -> Option<TcpListener> {
    let mut logged = false;
    loop {
        match bind(s).await {
            Ok(l) => {
                core.log.log(
                    Level::Notice,
                    "mod_event_socket.c:2930",
                    &format!("Socket up listening on {}:{}", s.listen_ip, s.listen_port),
                );
                return Some(l);
            }
            Err(msg) => {
                if !logged {
                    core.log.log(Level::Error, "mod_event_socket.c:2883", &msg);
                    logged = true;
                }
            }
        }
        tokio::select! {
            _ = core.esl_reload.notified() => return None,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

async fn bind(s: &EslSettings) -> Result<TcpListener, String> {
    let ip: IpAddr = s
        .listen_ip
        .parse()
        .map_err(|_| format!("Cannot get information about IP address {}", s.listen_ip))?;
    match TcpListener::bind((ip, s.listen_port)).await {
        Ok(l) => Ok(l),
        Err(e)
            if e.kind() == std::io::ErrorKind::AddrNotAvailable || e.raw_os_error() == Some(97) =>
        {
            Err(format!(
                "Cannot get information about IP address {}",
                s.listen_ip
            ))
        }
        Err(_) => Err(format!(
            "Socket Error! Could not listen on {}:{}",
            s.listen_ip, s.listen_port
        )),
    }
}

async fn serve(core: &Arc<Core>, listener: TcpListener, settings: Arc<EslSettings>) {
    loop {
        tokio::select! {
            _ = core.esl_reload.notified() => return,
            acc = listener.accept() => {
                let Ok((stream, peer)) = acc else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let core = core.clone();
                let settings = settings.clone();
                let generation = core.esl_generation.subscribe();
                tokio::spawn(async move {
                    connection(core, stream, peer, settings, generation, AUTH_TIMEOUT).await;
                });
            }
        }
    }
}

/// One accepted connection: ACL check first, then the protocol.
pub async fn connection<S>(
    core: Arc<Core>,
    stream: S,
    peer: SocketAddr,
    settings: Arc<EslSettings>,
    generation: watch::Receiver<u64>,
    auth_timeout: Duration,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (rd, mut wr) = tokio::io::split(stream);
    let lists = core.snapshot().acl_lists.clone();
    if let Err(list) = crate::acl::check(&lists, &settings.acls, peer.ip()) {
        core.log.log(
            Level::Warning,
            "mod_event_socket.c:2674",
            &format!("IP {} Rejected by acl \"{list}\"", peer.ip()),
        );
        let _ = wr.write_all(RUDE_REJECTION.as_bytes()).await;
        let _ = wr.write_all(GOODBYE.as_bytes()).await;
        let _ = wr.shutdown().await;
        return;
    }
    session(core, rd, wr, settings, generation, auth_timeout).await;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventFormat {
    Plain,
    Json,
}

async fn session<R, W>(
    core: Arc<Core>,
    rd: R,
    mut wr: W,
    settings: Arc<EslSettings>,
    mut generation: watch::Receiver<u64>,
    auth_timeout: Duration,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    // A separate reader so that nothing half-read is lost while we wait on other things.
    let (frame_tx, mut frames) = mpsc::channel::<Frame>(16);
    let reader = tokio::spawn(async move {
        let mut rd = tokio::io::BufReader::new(rd);
        while let Ok(Some(f)) = read_frame(&mut rd).await {
            if frame_tx.send(f).await.is_err() {
                break;
            }
        }
    });
    let (event_tx, mut events) = mpsc::unbounded_channel::<String>();
    let deadline = tokio::time::Instant::now() + auth_timeout;
    let mut authed = false;
    let mut subscribed: Option<(EventFormat, bool)> = None;

    if wr.write_all(AUTH_REQUEST.as_bytes()).await.is_err() {
        reader.abort();
        return;
    }
    loop {
        let out: String = tokio::select! {
            changed = generation.changed() => {
                if changed.is_ok() {
                    let _ = wr.write_all(SHUTDOWN_NOTICE.as_bytes()).await;
                }
                break;
            }
            _ = tokio::time::sleep_until(deadline), if !authed => {
                let _ = wr.write_all(GOODBYE.as_bytes()).await;
                break;
            }
            Some(ev) = events.recv() => ev,
            f = frames.recv() => {
                let Some(frame) = f else { break };
                let cmd = frame.command.trim();
                let lower = cmd.to_ascii_lowercase();
                if lower == "exit" || lower.starts_with("exit ") {
                    let _ = wr.write_all(command_reply("+OK bye").as_bytes()).await;
                    let _ = wr.write_all(GOODBYE.as_bytes()).await;
                    break;
                }
                if !authed {
                    if let Some(pass) = cmd.strip_prefix("auth ") {
                        if pass.trim_start_matches(' ') == settings.password.expose() {
                            authed = true;
                            command_reply("+OK accepted")
                        } else {
                            let _ = wr.write_all(command_reply("-ERR invalid").as_bytes()).await;
                            let _ = wr.write_all(GOODBYE.as_bytes()).await;
                            break;
                        }
                    } else {
                        command_reply("-ERR command not found")
                    }
                } else if let Some(line) = strip_word(cmd, "api") {
                    let reply = api::execute(&core, line);
                    let frame = api_response(&reply.body);
                    if wr.write_all(frame.as_bytes()).await.is_err() {
                        break;
                    }
                    if reply.after == After::ReloadEventSocket {
                        core.esl_reload.notify_one();
                    }
                    continue;
                } else if let Some(line) = strip_word(cmd, "bgapi") {
                    let job = new_uuid();
                    spawn_job(core.clone(), line.to_string(), job.clone(), subscribed, event_tx.clone());
                    format!(
                        "Content-Type: command/reply\nReply-Text: +OK Job-UUID: {job}\nJob-UUID: {job}\n\n"
                    )
                } else if let Some(rest) = strip_word(cmd, "event") {
                    let mut words = rest.split_whitespace();
                    let fmt = words.next().unwrap_or("plain").to_ascii_lowercase();
                    let format = if fmt == "json" { EventFormat::Json } else { EventFormat::Plain };
                    let jobs = words.any(|w| w.eq_ignore_ascii_case("ALL") || w.eq_ignore_ascii_case("BACKGROUND_JOB"));
                    subscribed = Some((format, jobs));
                    command_reply(&format!("+OK event listener enabled {fmt}"))
                } else if lower == "noevents" {
                    subscribed = None;
                    command_reply("+OK no longer listening for events")
                } else if lower == "linger" || lower.starts_with("linger ") {
                    command_reply("+OK will linger")
                } else if lower == "nolinger" {
                    command_reply("+OK will not linger")
                } else {
                    command_reply("-ERR command not found")
                }
            }
        };
        if wr.write_all(out.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = wr.shutdown().await;
    reader.abort();
}

/// `word rest` -> Some(rest); case-insensitive on the word, as mod_event_socket is.
fn strip_word<'a>(cmd: &'a str, word: &str) -> Option<&'a str> {
    let (w, rest) = cmd.split_once(' ').unwrap_or((cmd, ""));
    w.eq_ignore_ascii_case(word).then_some(rest)
}

fn spawn_job(
    core: Arc<Core>,
    line: String,
    job: String,
    subscribed: Option<(EventFormat, bool)>,
    events: mpsc::UnboundedSender<String>,
) {
    tokio::spawn(async move {
        let reply = api::execute(&core, &line);
        if reply.after == After::ReloadEventSocket {
            core.esl_reload.notify_one();
            return;
        }
        let Some((format, true)) = subscribed else {
            return;
        };
        let (cmd, arg) = line.split_once(' ').unwrap_or((&line, ""));
        let headers = [
            ("Event-Name", "BACKGROUND_JOB".to_string()),
            ("Core-UUID", core.core_uuid.clone()),
            ("FreeSWITCH-Hostname", crate::netinfo::hostname()),
            (
                "Event-Date-Timestamp",
                chrono::Utc::now().timestamp_micros().to_string(),
            ),
            ("Job-UUID", job),
            ("Job-Command", cmd.to_string()),
            ("Job-Command-Arg", arg.to_string()),
            ("Content-Length", reply.body.len().to_string()),
        ];
        let _ = events.send(event_frame(format, &headers, &reply.body));
    });
}

fn event_frame(format: EventFormat, headers: &[(&str, String)], body: &str) -> String {
    let (ctype, inner) = match format {
        EventFormat::Plain => {
            let mut s: String = headers
                .iter()
                .map(|(k, v)| format!("{k}: {}\n", url_encode(v)))
                .collect();
            s.push('\n');
            s.push_str(body);
            ("text/event-plain", s)
        }
        EventFormat::Json => {
            let mut fields: Vec<String> = headers
                .iter()
                .map(|(k, v)| format!("{}:{}", json_str(k), json_str(v)))
                .collect();
            fields.push(format!("\"_body\":{}", json_str(body)));
            ("text/event-json", format!("{{{}}}", fields.join(",")))
        }
    };
    format!(
        "Content-Length: {}\nContent-Type: {ctype}\n\n{inner}",
        inner.len()
    )
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::find_stock_tree;
    use crate::core::test_core;
    use std::path::{Path, PathBuf};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};

    fn stock() -> PathBuf {
        find_stock_tree(Path::new(env!("CARGO_MANIFEST_DIR"))).expect("stock tree")
    }

    /// Read one server frame: (header block, body).
    async fn frame<R: AsyncBufRead + Unpin>(r: &mut R) -> (String, String) {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            assert!(
                r.read_line(&mut line).await.unwrap() > 0,
                "EOF after {head:?}"
            );
            if line == "\n" {
                break;
            }
            head.push_str(&line);
        }
        let len = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .map(|v| v.parse::<usize>().unwrap())
            .unwrap_or(0);
        let mut body = vec![0; len];
        r.read_exact(&mut body).await.unwrap();
        (head, String::from_utf8(body).unwrap())
    }

    async fn expect_bytes<R: AsyncRead + Unpin>(r: &mut R, want: &str) {
        let mut got = vec![0; want.len()];
        r.read_exact(&mut got).await.unwrap();
        assert_eq!(String::from_utf8_lossy(&got), want);
    }

    async fn expect_eof<R: AsyncRead + Unpin>(r: &mut R) {
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).await.unwrap();
        assert!(
            rest.is_empty(),
            "unexpected bytes {:?}",
            String::from_utf8_lossy(&rest)
        );
    }

    fn start_session(
        core: &Arc<Core>,
        peer: &str,
        timeout: Duration,
    ) -> (
        BufReader<tokio::io::ReadHalf<tokio::io::DuplexStream>>,
        tokio::io::WriteHalf<tokio::io::DuplexStream>,
    ) {
        let (client, server) = tokio::io::duplex(1 << 16);
        tokio::spawn(connection(
            core.clone(),
            server,
            peer.parse().unwrap(),
            Arc::new(EslSettings::default()),
            core.esl_generation.subscribe(),
            timeout,
        ));
        let (r, w) = tokio::io::split(client);
        (BufReader::new(r), w)
    }

    #[tokio::test]
    async fn auth_api_bgapi_exit_sequence() {
        let logs = tempfile::tempdir().unwrap();
        let core = test_core(&stock(), logs.path());
        let (mut r, mut w) = start_session(&core, "127.0.0.1:40000", AUTH_TIMEOUT);
        expect_bytes(&mut r, AUTH_REQUEST).await;
        w.write_all(b"api status\n\n").await.unwrap();
        expect_bytes(&mut r, &command_reply("-ERR command not found")).await;
        w.write_all(b"auth ClueCon\n\n").await.unwrap();
        expect_bytes(
            &mut r,
            "Content-Type: command/reply\nReply-Text: +OK accepted\n\n",
        )
        .await;

        w.write_all(b"api status\n\n").await.unwrap();
        let (head, body) = frame(&mut r).await;
        assert_eq!(
            head,
            format!(
                "Content-Type: api/response\nContent-Length: {}\n",
                body.len()
            )
        );
        assert!(body.starts_with("UP 0 years, 0 days"), "{body}");
        assert!(body.contains("\nFreeSWITCH (Version 1.10.12-release  64bit) is ready\n"));

        w.write_all(b"api nosuchcmd with args\n\n").await.unwrap();
        assert_eq!(frame(&mut r).await.1, "-ERR nosuchcmd Command not found!\n");
        w.write_all(b"api global_getvar conf_dir\n\n")
            .await
            .unwrap();
        assert_eq!(frame(&mut r).await.1, stock().to_string_lossy());
        w.write_all(b"api global_getvar default_password\n\n")
            .await
            .unwrap();
        assert_eq!(frame(&mut r).await.1, "1234");
        w.write_all(b"api global_getvar no_such_var\n\n")
            .await
            .unwrap();
        assert_eq!(frame(&mut r).await.1, "");
        w.write_all(b"api reloadxml\n\n").await.unwrap();
        assert_eq!(frame(&mut r).await.1, "+OK [Success]\n");
        w.write_all(b"api version\n\n").await.unwrap();
        assert_eq!(
            frame(&mut r).await.1,
            "FreeSWITCH Version 1.10.12-release~64bit ( 64bit)\n"
        );

        w.write_all(b"event plain BACKGROUND_JOB\n\n")
            .await
            .unwrap();
        expect_bytes(&mut r, &command_reply("+OK event listener enabled plain")).await;
        w.write_all(b"bgapi version\n\n").await.unwrap();
        let (head, _) = frame(&mut r).await;
        let job = head
            .lines()
            .find_map(|l| l.strip_prefix("Job-UUID: "))
            .unwrap()
            .to_string();
        assert_eq!(
            head,
            format!(
                "Content-Type: command/reply\nReply-Text: +OK Job-UUID: {job}\nJob-UUID: {job}\n"
            )
        );
        let (head, event) = frame(&mut r).await;
        assert!(head.contains("Content-Type: text/event-plain"));
        assert!(event.contains(&format!("Job-UUID: {job}\n")), "{event}");
        assert!(event.ends_with("\n\nFreeSWITCH Version 1.10.12-release~64bit ( 64bit)\n"));

        w.write_all(b"exit\n\n").await.unwrap();
        expect_bytes(
            &mut r,
            "Content-Type: command/reply\nReply-Text: +OK bye\n\n",
        )
        .await;
        expect_bytes(&mut r, GOODBYE).await;
        expect_eof(&mut r).await;
        assert_eq!(GOODBYE.len() - GOODBYE.find("\n\n").unwrap() - 2, 67);
    }

    #[tokio::test]
    async fn wrong_password_gets_invalid_and_goodbye() {
        let logs = tempfile::tempdir().unwrap();
        let core = test_core(&stock(), logs.path());
        let (mut r, mut w) = start_session(&core, "[::1]:40000", AUTH_TIMEOUT);
        expect_bytes(&mut r, AUTH_REQUEST).await;
        w.write_all(b"auth clueCon\n\n").await.unwrap();
        expect_bytes(
            &mut r,
            "Content-Type: command/reply\nReply-Text: -ERR invalid\n\n",
        )
        .await;
        expect_bytes(&mut r, GOODBYE).await;
        expect_eof(&mut r).await;
    }

    #[tokio::test]
    async fn acl_rejection_is_two_frames_and_a_log_line() {
        let logs = tempfile::tempdir().unwrap();
        let core = test_core(&stock(), logs.path());
        let (mut r, _w) = start_session(&core, "[::ffff:192.0.2.2]:40000", AUTH_TIMEOUT);
        expect_bytes(&mut r, RUDE_REJECTION).await;
        expect_bytes(&mut r, GOODBYE).await;
        expect_eof(&mut r).await;
        let log = std::fs::read_to_string(logs.path().join("freeswitch.log")).unwrap();
        assert!(
            log.lines().any(|l| l.ends_with(
                "% [WARNING] mod_event_socket.c:2674 IP ::ffff:192.0.2.2 Rejected by acl \"loopback.auto\""
            )),
            "{log}"
        );
    }

    #[tokio::test]
    async fn unauthenticated_clients_time_out_but_authenticated_ones_stay() {
        let logs = tempfile::tempdir().unwrap();
        let core = test_core(&stock(), logs.path());
        let (mut r, _w) = start_session(&core, "127.0.0.1:1", Duration::from_millis(100));
        expect_bytes(&mut r, AUTH_REQUEST).await;
        expect_bytes(&mut r, GOODBYE).await;
        expect_eof(&mut r).await;

        let (mut r, mut w) = start_session(&core, "127.0.0.1:2", Duration::from_millis(100));
        expect_bytes(&mut r, AUTH_REQUEST).await;
        w.write_all(b"auth ClueCon\n\n").await.unwrap();
        expect_bytes(&mut r, &command_reply("+OK accepted")).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        w.write_all(b"api global_getvar default_password\n\n")
            .await
            .unwrap();
        assert_eq!(frame(&mut r).await.1, "1234");
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn write_esl_conf(conf: &Path, port: u16, password: &str) {
        std::fs::write(
            conf.join("autoload_configs/event_socket.conf.xml"),
            format!(
                "<configuration name=\"event_socket.conf\"><settings>\n\
                 <param name=\"listen-ip\" value=\"127.0.0.1\"/>\n\
                 <param name=\"listen-port\" value=\"{port}\"/>\n\
                 <param name=\"password\" value=\"{password}\"/>\n\
                 </settings></configuration>\n"
            ),
        )
        .unwrap();
    }

    /// Connect (retrying while the listener is down) and try to authenticate.
    async fn login(
        port: u16,
        password: &str,
    ) -> Option<(
        BufReader<tokio::net::tcp::OwnedReadHalf>,
        tokio::net::tcp::OwnedWriteHalf,
    )> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let stream = loop {
            match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                Ok(s) => break s,
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(e) => panic!("listener never came back: {e}"),
            }
        };
        let (r, mut w) = stream.into_split();
        let mut r = BufReader::new(r);
        expect_bytes(&mut r, AUTH_REQUEST).await;
        w.write_all(format!("auth {password}\n\n").as_bytes())
            .await
            .unwrap();
        let (head, _) = frame(&mut r).await;
        head.contains("+OK accepted").then_some((r, w))
    }

    #[tokio::test]
    async fn reload_drops_every_client_and_rebinds_with_the_settings_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("conf");
        std::fs::create_dir_all(conf.join("autoload_configs")).unwrap();
        std::fs::copy(stock().join("vars.xml"), conf.join("vars.xml")).unwrap();
        let port = free_port();
        write_esl_conf(&conf, port, "ClueCon");
        let core = test_core(&conf, dir.path());
        tokio::spawn(run(core.clone()));

        let (mut r1, _w1) = login(port, "ClueCon").await.expect("stock password");
        write_esl_conf(&conf, port, "N3wPass");
        // On disk alone, and after reloadxml, nothing changes for the Event Socket.
        let (mut r2, mut w2) = login(port, "ClueCon")
            .await
            .expect("old password until reload");
        w2.write_all(b"api reloadxml\n\n").await.unwrap();
        assert_eq!(frame(&mut r2).await.1, "+OK [Success]\n");
        assert!(login(port, "N3wPass").await.is_none());

        w2.write_all(b"api reload mod_event_socket\n\n")
            .await
            .unwrap();
        let (head, body) = frame(&mut r2).await;
        assert_eq!(head, "Content-Type: api/response\nContent-Length: 51\n");
        assert!(body.starts_with("+OK Job-UUID: ") && body.ends_with('\n') && body.len() == 51);
        for r in [&mut r2, &mut r1] {
            expect_bytes(r, SHUTDOWN_NOTICE).await;
            expect_eof(r).await;
        }
        assert!(
            login(port, "N3wPass").await.is_some(),
            "new password after reload"
        );
        assert!(
            login(port, "ClueCon").await.is_none(),
            "old password refused after reload"
        );
    }
}
