//! Event Socket (ESL) client over any `AsyncRead + AsyncWrite` stream.
//!
//! In production the stream is an SSH direct-tcpip channel to 127.0.0.1:8021 on the host; in tests
//! it is a TCP stream or a tokio duplex. The wire protocol is FACTS.md §2: frames are `Name: value`
//! header lines ended by an empty line, with a body only when `Content-Length` is given.
//!
//! Every read of a frame and every write is bounded by [`EslOptions::timeout`]; header and body
//! sizes are bounded too, so a misbehaving peer produces an [`EslError`], never a hang or a panic.
//! The password is only ever held as a [`Secret`] and is not kept by the client after `auth`.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, timeout};

use crate::secret::Secret;

/// Port FreeSWITCH's mod_event_socket listens on by default.
pub const DEFAULT_PORT: u16 = 8021;

/// Limits and time budget of one Event Socket connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EslOptions {
    /// Longest wait for one whole frame (or one write).
    pub timeout: Duration,
    /// Largest header block accepted, in bytes.
    pub max_header_bytes: usize,
    /// Largest body (`Content-Length`) accepted, in bytes.
    pub max_body_bytes: usize,
}

impl Default for EslOptions {
    fn default() -> Self {
        EslOptions {
            timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            max_body_bytes: 16 * 1024 * 1024,
        }
    }
}

/// What went wrong talking to an Event Socket. Messages never contain the password; commands are
/// named by their first word only, since arguments could carry values the operator did not mean to
/// print. The caller adds the host name.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum EslError {
    #[error(
        "Event Socket refused the password (-ERR invalid): the password fsfleet used does not match \
         the one in event_socket.conf.xml; check the vault entry for this host"
    )]
    AuthRejected,
    #[error(
        "Event Socket rejected this connection by ACL (apply-inbound-acl in event_socket.conf.xml), \
         server said {message:?}; fsfleet connects from 127.0.0.1 through SSH, so the ACL must allow \
         loopback"
    )]
    AclRejected { message: String },
    #[error(
        "Event Socket closed the connection{}; FreeSWITCH may be restarting or mod_event_socket \
         was reloaded, retry in a moment",
        notice_suffix(.notice)
    )]
    Disconnected { notice: Option<String> },
    #[error(
        "Event Socket sent nothing for {after:?} while fsfleet waited for {waiting_for}; FreeSWITCH \
         may be hung or overloaded (raise the Event Socket timeout if it is only slow)"
    )]
    Timeout {
        waiting_for: String,
        after: Duration,
    },
    #[error(
        "Event Socket connection closed in the middle of a frame while fsfleet waited for \
         {waiting_for} ({received} bytes received); FreeSWITCH may have crashed or restarted, retry"
    )]
    Truncated {
        waiting_for: String,
        received: usize,
    },
    #[error(
        "Event Socket sent a {what} of {size} bytes, over the {limit}-byte limit; the peer is not a \
         FreeSWITCH Event Socket or is misbehaving"
    )]
    FrameTooLarge {
        what: &'static str,
        size: usize,
        limit: usize,
    },
    #[error("Event Socket protocol error: {0}; is this port really FreeSWITCH's Event Socket?")]
    Protocol(String),
    #[error(
        "refusing to send Event Socket command {verb:?}: it is empty or contains a line break or NUL, \
         which could smuggle a second command"
    )]
    UnsafeCommand { verb: String },
    #[error(
        "the Event Socket password is empty or contains a line break or NUL, which the protocol \
         cannot carry; set another password"
    )]
    UnsafePassword,
    #[error("Event Socket command {verb:?} failed: {reply}")]
    CommandFailed { verb: String, reply: String },
    #[error("could not open a connection to the Event Socket: {cause}")]
    Connect {
        cause: Box<dyn StdError + Send + Sync>,
    },
    #[error(
        "gave up reaching the Event Socket after {attempts} attempts in {waited:?}; last error: {last}"
    )]
    GaveUp {
        attempts: u32,
        waited: Duration,
        last: Box<EslError>,
    },
    #[error("Event Socket I/O error: {0}")]
    Io(std::io::Error),
}

// Derived Debug would do, but spelling it out keeps the guarantee visible: no variant holds a secret.
impl fmt::Debug for EslError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EslError::AuthRejected => f.write_str("AuthRejected"),
            EslError::AclRejected { message } => f
                .debug_struct("AclRejected")
                .field("message", message)
                .finish(),
            EslError::Disconnected { notice } => f
                .debug_struct("Disconnected")
                .field("notice", notice)
                .finish(),
            EslError::Timeout { waiting_for, after } => f
                .debug_struct("Timeout")
                .field("waiting_for", waiting_for)
                .field("after", after)
                .finish(),
            EslError::Truncated {
                waiting_for,
                received,
            } => f
                .debug_struct("Truncated")
                .field("waiting_for", waiting_for)
                .field("received", received)
                .finish(),
            EslError::FrameTooLarge { what, size, limit } => f
                .debug_struct("FrameTooLarge")
                .field("what", what)
                .field("size", size)
                .field("limit", limit)
                .finish(),
            EslError::Protocol(m) => f.debug_tuple("Protocol").field(m).finish(),
            EslError::UnsafeCommand { verb } => {
                f.debug_struct("UnsafeCommand").field("verb", verb).finish()
            }
            EslError::UnsafePassword => f.write_str("UnsafePassword"),
            EslError::CommandFailed { verb, reply } => f
                .debug_struct("CommandFailed")
                .field("verb", verb)
                .field("reply", reply)
                .finish(),
            EslError::Connect { cause } => f.debug_struct("Connect").field("cause", cause).finish(),
            EslError::GaveUp {
                attempts,
                waited,
                last,
            } => f
                .debug_struct("GaveUp")
                .field("attempts", attempts)
                .field("waited", waited)
                .field("last", last)
                .finish(),
            EslError::Io(e) => f.debug_tuple("Io").field(e).finish(),
        }
    }
}

impl From<std::io::Error> for EslError {
    fn from(e: std::io::Error) -> Self {
        EslError::Io(e)
    }
}

fn notice_suffix(notice: &Option<String>) -> String {
    match notice {
        Some(n) => format!(" with notice {:?}", n.trim_end()),
        None => String::new(),
    }
}

impl EslError {
    /// Worth another connection attempt while FreeSWITCH restarts its Event Socket listener.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            EslError::Connect { .. }
                | EslError::Io(_)
                | EslError::Disconnected { .. }
                | EslError::AclRejected { .. }
                | EslError::Timeout { .. }
                | EslError::Truncated { .. }
        )
    }
}

/// One Event Socket frame: headers in wire order, and the body when `Content-Length` was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

impl Frame {
    /// First header with this name (ASCII case-insensitive, as FreeSWITCH compares them).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn content_type(&self) -> Option<&str> {
        self.header("Content-Type")
    }

    pub fn reply_text(&self) -> Option<&str> {
        self.header("Reply-Text")
    }

    /// The body as text (lossy: FreeSWITCH output is not guaranteed UTF-8), empty when absent.
    pub fn body_text(&self) -> String {
        self.body
            .as_deref()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    }
}

/// Try to cut one frame off the front of `buf`. `Ok(None)`: need more bytes.
/// Returns the frame and how many bytes it used.
fn parse_frame(buf: &[u8], opts: &EslOptions) -> Result<Option<(Frame, usize)>, EslError> {
    // Tolerate blank lines between frames, as libesl does.
    let mut start = 0;
    while start < buf.len() && (buf[start] == b'\n' || buf[start] == b'\r') {
        start += 1;
    }
    let mut headers = Vec::new();
    let mut pos = start;
    let header_end = loop {
        let Some(nl) = buf[pos..].iter().position(|&b| b == b'\n') else {
            if buf.len() - start > opts.max_header_bytes {
                return Err(EslError::FrameTooLarge {
                    what: "header block",
                    size: buf.len() - start,
                    limit: opts.max_header_bytes,
                });
            }
            return Ok(None);
        };
        let line_end = pos + nl;
        let mut line = &buf[pos..line_end];
        if let Some(stripped) = line.strip_suffix(b"\r") {
            line = stripped;
        }
        pos = line_end + 1;
        if pos - start > opts.max_header_bytes {
            return Err(EslError::FrameTooLarge {
                what: "header block",
                size: pos - start,
                limit: opts.max_header_bytes,
            });
        }
        if line.is_empty() {
            break pos;
        }
        let line = std::str::from_utf8(line).map_err(|_| {
            EslError::Protocol(format!(
                "header line is not UTF-8: {:?}",
                String::from_utf8_lossy(line)
            ))
        })?;
        let Some((name, value)) = line.split_once(':') else {
            return Err(EslError::Protocol(format!(
                "header line without a colon: {line:?}"
            )));
        };
        headers.push((name.trim().to_owned(), value.trim_start().to_owned()));
    };
    let mut frame = Frame {
        headers,
        body: None,
    };
    let Some(len) = frame.header("Content-Length") else {
        return Ok(Some((frame, header_end)));
    };
    let len: usize = len
        .trim()
        .parse()
        .map_err(|_| EslError::Protocol(format!("Content-Length is not a number: {len:?}")))?;
    if len > opts.max_body_bytes {
        return Err(EslError::FrameTooLarge {
            what: "body",
            size: len,
            limit: opts.max_body_bytes,
        });
    }
    if buf.len() - header_end < len {
        return Ok(None);
    }
    frame.body = Some(buf[header_end..header_end + len].to_vec());
    Ok(Some((frame, header_end + len)))
}

/// Buffered frame reader and command writer over one stream.
struct Wire<S> {
    stream: S,
    buf: Vec<u8>,
    opts: EslOptions,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Wire<S> {
    fn new(stream: S, opts: EslOptions) -> Self {
        Wire {
            stream,
            buf: Vec::with_capacity(4096),
            opts,
        }
    }

    /// Next frame, within the configured timeout for the whole frame (a peer trickling one byte at
    /// a time cannot stretch it).
    async fn read_frame(&mut self, waiting_for: &str) -> Result<Frame, EslError> {
        let after = self.opts.timeout;
        match timeout(after, self.read_frame_untimed(waiting_for)).await {
            Ok(r) => r,
            Err(_) => Err(EslError::Timeout {
                waiting_for: waiting_for.to_owned(),
                after,
            }),
        }
    }

    async fn read_frame_untimed(&mut self, waiting_for: &str) -> Result<Frame, EslError> {
        loop {
            if let Some((frame, used)) = parse_frame(&self.buf, &self.opts)? {
                self.buf.drain(..used);
                return Ok(frame);
            }
            self.buf.reserve(4096);
            // read_buf is cancel-safe: a timeout never loses bytes already received.
            let n = self.stream.read_buf(&mut self.buf).await?;
            if n == 0 {
                let pending = self
                    .buf
                    .iter()
                    .filter(|&&b| b != b'\n' && b != b'\r')
                    .count();
                return Err(if pending == 0 {
                    EslError::Disconnected { notice: None }
                } else {
                    EslError::Truncated {
                        waiting_for: waiting_for.to_owned(),
                        received: self.buf.len(),
                    }
                });
            }
        }
    }

    /// Write `bytes` (one command ending in a blank line) within the timeout.
    async fn write(&mut self, bytes: &[u8], what: &str) -> Result<(), EslError> {
        let after = self.opts.timeout;
        let stream = &mut self.stream;
        let fut = async {
            stream.write_all(bytes).await?;
            stream.flush().await
        };
        match timeout(after, fut).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(EslError::Timeout {
                waiting_for: format!("sending {what}"),
                after,
            }),
        }
    }

    /// After a goodbye: read whatever is left until EOF, an error or the timeout. Best effort.
    async fn drain_to_eof(&mut self) {
        // FreeSWITCH closes right after its notice; do not hold the caller for a full timeout.
        let after = self.opts.timeout.min(Duration::from_secs(2));
        let _ = timeout(after, async {
            loop {
                self.buf.clear();
                self.buf.reserve(4096);
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        let _ = timeout(after, self.stream.shutdown()).await;
    }
}

/// An authenticated Event Socket connection.
pub struct EslClient<S> {
    wire: Wire<S>,
}

impl<S> fmt::Debug for EslClient<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EslClient")
            .field("opts", &self.wire.opts)
            .field("buffered_bytes", &self.wire.buf.len())
            .finish_non_exhaustive()
    }
}

/// What `api status` says about the running FreeSWITCH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Text inside `(Version ...)`, e.g. `1.10.12-release  64bit`.
    pub version: String,
    /// `is ready` (true) or `is not ready` (false).
    pub ready: bool,
    /// The `UP 0 years, ...` line, when present.
    pub uptime_line: Option<String>,
    /// The sessions (calls) up now: the N of `N session(s) - peak P, last 5min L`, when present.
    pub sessions: Option<u64>,
}

/// Parse the body of `api status`. Matches `^FreeSWITCH \(Version (.+)\) is (ready|not ready)$`.
pub fn parse_status(body: &str) -> Result<Status, EslError> {
    let mut found = None;
    for line in body.lines() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let Some(rest) = line.strip_prefix("FreeSWITCH (Version ") else {
            continue;
        };
        let parsed = if let Some(v) = rest.strip_suffix(") is ready") {
            Some((v, true))
        } else {
            rest.strip_suffix(") is not ready").map(|v| (v, false))
        };
        if let Some((version, ready)) = parsed.filter(|(v, _)| !v.is_empty()) {
            found = Some((version.to_owned(), ready));
            break;
        }
    }
    let Some((version, ready)) = found else {
        let first = body.lines().next().unwrap_or("");
        return Err(EslError::Protocol(format!(
            "`api status` reply has no \"FreeSWITCH (Version ...) is ready\" line (first line: {first:?})"
        )));
    };
    let uptime_line = body
        .lines()
        .find(|l| l.starts_with("UP "))
        .map(|l| l.trim_end().to_owned());
    let sessions = body.lines().find_map(|l| {
        let (n, rest) = l.split_once(' ')?;
        rest.starts_with("session(s) - peak ")
            .then(|| n.parse::<u64>().ok())
            .flatten()
    });
    Ok(Status {
        version,
        ready,
        uptime_line,
        sessions,
    })
}

/// The first word of a command, for error messages (arguments may be sensitive).
fn verb_of(cmd: &str) -> String {
    let verb: String = cmd
        .split_whitespace()
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect();
    verb
}

/// A command is one line: a `\n` or `\r` would end it early and start a second ESL command, a NUL
/// would truncate it inside FreeSWITCH.
fn check_command(cmd: &str) -> Result<(), EslError> {
    if cmd.trim().is_empty() || cmd.contains(['\n', '\r', '\0']) {
        return Err(EslError::UnsafeCommand { verb: verb_of(cmd) });
    }
    Ok(())
}

fn is_disconnect_notice(frame: &Frame) -> bool {
    frame.content_type() == Some("text/disconnect-notice")
}

fn unexpected(frame: &Frame, waiting_for: &str) -> EslError {
    EslError::Protocol(format!(
        "expected {waiting_for}, got a frame with Content-Type {:?}",
        frame.content_type().unwrap_or("(none)")
    ))
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> EslClient<S> {
    /// Read the greeting, authenticate, and return the ready client.
    ///
    /// Errors: [`EslError::AclRejected`] (rude rejection before any greeting),
    /// [`EslError::AuthRejected`] (`-ERR invalid`), [`EslError::Disconnected`], [`EslError::Timeout`].
    pub async fn connect(stream: S, password: &Secret, opts: EslOptions) -> Result<Self, EslError> {
        let pw = password.expose();
        if pw.is_empty() || pw.contains(['\n', '\r', '\0']) {
            return Err(EslError::UnsafePassword);
        }
        let mut wire = Wire::new(stream, opts);
        let greeting = wire.read_frame("the auth/request greeting").await?;
        match greeting.content_type() {
            Some("auth/request") => {}
            Some("text/rude-rejection") => {
                return Err(EslError::AclRejected {
                    message: greeting.body_text().trim_end().to_owned(),
                });
            }
            _ if is_disconnect_notice(&greeting) => {
                return Err(EslError::Disconnected {
                    notice: Some(greeting.body_text()),
                });
            }
            _ => return Err(unexpected(&greeting, "the auth/request greeting")),
        }
        let mut line = Vec::with_capacity(pw.len() + 7);
        line.extend_from_slice(b"auth ");
        line.extend_from_slice(pw.as_bytes());
        line.extend_from_slice(b"\n\n");
        let sent = wire.write(&line, "auth").await;
        line.fill(0); // do not leave the password lying in freed memory longer than needed
        sent?;
        let reply = wire.read_frame("the reply to auth").await?;
        if is_disconnect_notice(&reply) {
            return Err(EslError::Disconnected {
                notice: Some(reply.body_text()),
            });
        }
        if reply.content_type() != Some("command/reply") {
            return Err(unexpected(&reply, "the command/reply to auth"));
        }
        match reply.reply_text() {
            Some(t) if t.starts_with("+OK") => Ok(EslClient { wire }),
            Some(t) if t.starts_with("-ERR") => Err(EslError::AuthRejected),
            other => Err(EslError::Protocol(format!(
                "unexpected Reply-Text to auth: {other:?}"
            ))),
        }
    }

    /// `api <cmd>`: run a command and return its output (the api/response body, verbatim; it may
    /// be a `-ERR ...` text, which FreeSWITCH reports as a normal reply).
    pub async fn api(&mut self, cmd: &str) -> Result<String, EslError> {
        check_command(cmd)?;
        let verb = verb_of(cmd);
        self.wire
            .write(format!("api {cmd}\n\n").as_bytes(), &format!("api {verb}"))
            .await?;
        let waiting_for = format!("the api/response to `{verb}`");
        let frame = self.wire.read_frame(&waiting_for).await?;
        match frame.content_type() {
            Some("api/response") => Ok(frame.body_text()),
            _ if is_disconnect_notice(&frame) => Err(EslError::Disconnected {
                notice: Some(frame.body_text()),
            }),
            _ => Err(unexpected(&frame, &waiting_for)),
        }
    }

    /// `bgapi <cmd>`: start a command in the background; returns its Job-UUID.
    pub async fn bgapi(&mut self, cmd: &str) -> Result<String, EslError> {
        check_command(cmd)?;
        let verb = verb_of(cmd);
        self.wire
            .write(
                format!("bgapi {cmd}\n\n").as_bytes(),
                &format!("bgapi {verb}"),
            )
            .await?;
        let waiting_for = format!("the command/reply to bgapi `{verb}`");
        let frame = self.wire.read_frame(&waiting_for).await?;
        if is_disconnect_notice(&frame) {
            return Err(EslError::Disconnected {
                notice: Some(frame.body_text()),
            });
        }
        if frame.content_type() != Some("command/reply") {
            return Err(unexpected(&frame, &waiting_for));
        }
        let text = frame.reply_text().unwrap_or("");
        if !text.starts_with("+OK") {
            return Err(EslError::CommandFailed {
                verb,
                reply: text.to_owned(),
            });
        }
        let uuid = frame
            .header("Job-UUID")
            .map(str::to_owned)
            .or_else(|| {
                text.strip_prefix("+OK Job-UUID:")
                    .map(|u| u.trim().to_owned())
            })
            .filter(|u| !u.is_empty());
        uuid.ok_or_else(|| EslError::Protocol(format!("bgapi reply without a Job-UUID: {text:?}")))
    }

    /// `api status`, parsed.
    pub async fn status(&mut self) -> Result<Status, EslError> {
        let body = self.api("status").await?;
        parse_status(&body)
    }

    /// `api global_getvar <name>`: the value, exactly (FreeSWITCH adds no newline); empty when the
    /// variable is unset.
    pub async fn global_getvar(&mut self, name: &str) -> Result<String, EslError> {
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(EslError::UnsafeCommand {
                verb: "global_getvar".into(),
            });
        }
        self.api(&format!("global_getvar {name}")).await
    }

    /// `api reload mod_event_socket`: FreeSWITCH answers `+OK Job-UUID: ...`, then closes every
    /// Event Socket connection with "The system is being shut down." and restarts the listener
    /// with the settings on disk (~0.1-0.2 s). Reconnect afterwards with [`connect_with_retry`]
    /// and the NEW password. A close without the notice right after the reply also counts as
    /// success; no notice and no close within the timeout is [`EslError::Timeout`].
    pub async fn reload_event_socket(mut self) -> Result<(), EslError> {
        let waiting_for = "the api/response to `reload mod_event_socket`";
        self.wire
            .write(b"api reload mod_event_socket\n\n", "api reload")
            .await?;
        let frame = self.wire.read_frame(waiting_for).await?;
        if is_disconnect_notice(&frame) {
            // The reload won the race against its own reply: the listener is restarting.
            if frame.body_text().contains("shut down") {
                self.wire.drain_to_eof().await;
                return Ok(());
            }
            return Err(EslError::Disconnected {
                notice: Some(frame.body_text()),
            });
        }
        if frame.content_type() != Some("api/response") {
            return Err(unexpected(&frame, waiting_for));
        }
        let body = frame.body_text();
        if !body.starts_with("+OK") {
            return Err(EslError::CommandFailed {
                verb: "reload".into(),
                reply: body.trim_end().to_owned(),
            });
        }
        match self
            .wire
            .read_frame("the shutdown notice after reload mod_event_socket")
            .await
        {
            Ok(f) if is_disconnect_notice(&f) => {
                self.wire.drain_to_eof().await;
                Ok(())
            }
            Ok(f) => Err(unexpected(
                &f,
                "the shutdown notice after reload mod_event_socket",
            )),
            // The module closed the socket without (or before we read) a notice: also a reload.
            Err(EslError::Disconnected { .. } | EslError::Io(_) | EslError::Truncated { .. }) => {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// `exit`: say goodbye (`+OK bye`, then the disconnect notice). A server that already closed
    /// the connection is fine too.
    pub async fn exit(mut self) -> Result<(), EslError> {
        match self.wire.write(b"exit\n\n", "exit").await {
            Ok(()) => {}
            Err(EslError::Io(_)) => return Ok(()),
            Err(e) => return Err(e),
        }
        match self.wire.read_frame("the reply to exit").await {
            Ok(f)
                if f.reply_text().is_some_and(|t| t.starts_with("+OK"))
                    || is_disconnect_notice(&f) =>
            {
                self.wire.drain_to_eof().await;
                Ok(())
            }
            Ok(f) => Err(unexpected(&f, "the +OK bye reply to exit")),
            Err(EslError::Disconnected { .. } | EslError::Io(_) | EslError::Truncated { .. }) => {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// How [`connect_with_retry_policy`] retries.
///
/// Transient failures (connection refused or reset, disconnected, rude rejection, timeout,
/// truncated frame) are retried with a doubling backoff until `total` has elapsed: they are what a
/// client sees while mod_event_socket restarts. A refused password is different: after a reload the
/// NEW password is authoritative, so `-ERR invalid` is only retried `auth_retries` times (a
/// connection made in the 15-20 ms before the old listener closes still meets the old password),
/// then returned as [`EslError::AuthRejected`]. Protocol errors and unsafe input are never retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    pub total: Duration,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    pub auth_retries: u32,
}

impl RetryPolicy {
    /// Backoff 100 ms doubling to 1 s, at most 2 retries after a refused password.
    pub fn within(total: Duration) -> Self {
        RetryPolicy {
            total,
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            auth_retries: 2,
        }
    }
}

/// Connect and authenticate, retrying for up to `total` (see [`RetryPolicy::within`]).
/// `make_stream` opens a fresh stream per attempt (an SSH direct-tcpip channel, a TCP stream...).
pub async fn connect_with_retry<S, E, F, Fut>(
    make_stream: F,
    password: &Secret,
    opts: EslOptions,
    total: Duration,
) -> Result<EslClient<S>, EslError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    E: Into<Box<dyn StdError + Send + Sync>>,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<S, E>>,
{
    connect_with_retry_policy(make_stream, password, opts, &RetryPolicy::within(total)).await
}

/// [`connect_with_retry`] with an explicit policy.
pub async fn connect_with_retry_policy<S, E, F, Fut>(
    mut make_stream: F,
    password: &Secret,
    opts: EslOptions,
    policy: &RetryPolicy,
) -> Result<EslClient<S>, EslError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    E: Into<Box<dyn StdError + Send + Sync>>,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<S, E>>,
{
    let started = Instant::now();
    let deadline = started + policy.total;
    let mut backoff = policy.first_backoff;
    let mut attempts = 0u32;
    let mut auth_rejections = 0u32;
    loop {
        attempts += 1;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let attempt = async {
            let stream = make_stream()
                .await
                .map_err(|e| EslError::Connect { cause: e.into() })?;
            EslClient::connect(stream, password, opts.clone()).await
        };
        let err = match timeout(remaining, attempt).await {
            Ok(Ok(client)) => return Ok(client),
            Ok(Err(e)) => e,
            Err(_) => EslError::Timeout {
                waiting_for: "a connection to the Event Socket".into(),
                after: remaining,
            },
        };
        match &err {
            EslError::AuthRejected => {
                auth_rejections += 1;
                if auth_rejections > policy.auth_retries {
                    return Err(err);
                }
            }
            e if !e.is_transient() => return Err(err),
            _ => {}
        }
        let now = Instant::now();
        if now + backoff >= deadline {
            return Err(EslError::GaveUp {
                attempts,
                waited: now.duration_since(started),
                last: Box::new(err),
            });
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(policy.max_backoff);
    }
}

/// An in-process Event Socket that speaks the exact frames of FACTS.md §2, for tests of this
/// module and of the modules built on it (`crate::esl::fake::FakeEsl::start`).
#[cfg(test)]
pub(crate) mod fake {
    use std::collections::HashMap;
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex, MutexGuard};
    use std::time::Duration;

    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpSocket, TcpStream};
    use tokio::sync::{mpsc, oneshot};
    use tokio::task::JoinHandle;

    pub const GREETING: &[u8] = b"Content-Type: auth/request\n\n";
    pub const AUTH_OK: &[u8] = b"Content-Type: command/reply\nReply-Text: +OK accepted\n\n";
    pub const AUTH_INVALID: &[u8] = b"Content-Type: command/reply\nReply-Text: -ERR invalid\n\n";
    pub const BYE: &[u8] = b"Content-Type: command/reply\nReply-Text: +OK bye\n\n";
    /// Sent after `-ERR invalid`, after `+OK bye`, after a rude rejection and to idle
    /// unauthenticated clients. Body is 67 bytes.
    pub const GOODBYE: &[u8] = b"Content-Type: text/disconnect-notice\nContent-Length: 67\n\n\
Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n";
    pub const RUDE_REJECTION: &[u8] =
        b"Content-Type: text/rude-rejection\nContent-Length: 24\n\nAccess Denied, go away.\n";
    /// What every client gets 15-20 ms after `reload mod_event_socket`. Body is 31 bytes.
    pub const SHUTDOWN: &[u8] = b"Content-Type: text/disconnect-notice\nContent-Length: 31\n\n\
The system is being shut down.\n";
    pub const JOB_UUID: &str = "3b8a4f02-6c1e-4d5a-9a7e-0f2d1c3b4a59";
    /// `api status` of a real 1.10.12 source build (lines 4 and 5 end in a space).
    pub const STATUS_BODY: &str = "UP 0 years, 0 days, 0 hours, 0 minutes, 16 seconds, 683 milliseconds, 371 microseconds\n\
FreeSWITCH (Version 1.10.12-release  64bit) is ready\n\
0 session(s) since startup\n\
0 session(s) - peak 0, last 5min 0 \n\
0 session(s) per Sec out of max 30, peak 0, last 5min 0 \n\
1000 session(s) max\n\
min idle cpu 0.00/99.57\n\
Current Stack Size/Max 240K/8192K\n";

    pub fn api_response(body: &[u8]) -> Vec<u8> {
        let mut f = format!(
            "Content-Type: api/response\nContent-Length: {}\n\n",
            body.len()
        )
        .into_bytes();
        f.extend_from_slice(body);
        f
    }

    pub fn bgapi_reply(uuid: &str) -> Vec<u8> {
        format!(
            "Content-Type: command/reply\nReply-Text: +OK Job-UUID: {uuid}\nJob-UUID: {uuid}\n\n"
        )
        .into_bytes()
    }

    /// How the fake answers one `api` command.
    #[derive(Debug, Clone)]
    pub enum ApiReply {
        /// A normal api/response with this body.
        Body(String),
        /// These exact bytes, then close the connection.
        RawThenClose(Vec<u8>),
        /// Say nothing, keep the connection open.
        Silent,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Writes {
        /// Each reply in one write (two-frame replies included).
        Whole,
        /// One byte per write, flushed: forces the client through partial reads.
        OneByte,
    }

    #[derive(Debug, Clone)]
    pub struct Config {
        pub password: String,
        /// Answer every connection with the rude rejection (ACL), as FreeSWITCH does before any greeting.
        pub acl_reject: bool,
        /// Accept connections but never send anything.
        pub silent: bool,
        pub writes: Writes,
        /// `api` command text (after `api `) -> reply. Anything else gets `-ERR <verb> Command not found!`.
        pub api: HashMap<String, ApiReply>,
        /// `reload mod_event_socket`: api reply and shutdown notice in ONE write.
        pub coalesce_reload: bool,
        /// Password the listener comes back with after `reload mod_event_socket`.
        pub password_after_reload: Option<String>,
        /// How long the listener is gone during a reload.
        pub reload_downtime: Duration,
    }

    impl Default for Config {
        fn default() -> Self {
            let mut api = HashMap::new();
            api.insert("status".to_owned(), ApiReply::Body(STATUS_BODY.to_owned()));
            api.insert(
                "reloadxml".to_owned(),
                ApiReply::Body("+OK [Success]\n".to_owned()),
            );
            api.insert(
                "sofia profile internal rescan".to_owned(),
                ApiReply::Body("Reload XML [Success]\n+OK scan complete\n".to_owned()),
            );
            api.insert(
                "global_getvar conf_dir".to_owned(),
                ApiReply::Body("/etc/freeswitch".to_owned()),
            );
            Config {
                password: "ClueCon".to_owned(),
                acl_reject: false,
                silent: false,
                writes: Writes::Whole,
                api,
                coalesce_reload: false,
                password_after_reload: None,
                reload_downtime: Duration::from_millis(150),
            }
        }
    }

    /// What the fake saw.
    #[derive(Debug, Default)]
    pub struct Log {
        pub connections: usize,
        /// Every command, verbatim (auth lines included: test passwords only).
        pub commands: Vec<String>,
        pub auth_attempts: usize,
    }

    #[derive(Debug)]
    pub struct Shared {
        pub config: Mutex<Config>,
        pub log: Mutex<Log>,
    }

    type Restart = mpsc::Sender<oneshot::Sender<()>>;

    fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn send<S: AsyncWrite + Unpin>(
        s: &mut S,
        bytes: &[u8],
        writes: Writes,
    ) -> std::io::Result<()> {
        match writes {
            Writes::Whole => s.write_all(bytes).await?,
            Writes::OneByte => {
                for b in bytes {
                    s.write_all(std::slice::from_ref(b)).await?;
                    s.flush().await?;
                    tokio::task::yield_now().await;
                }
            }
        }
        s.flush().await
    }

    /// Next client command (text before the blank line), None at EOF.
    async fn read_command<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> Option<String> {
        loop {
            if let Some(i) = buf.windows(2).position(|w| w == b"\n\n") {
                let cmd = String::from_utf8_lossy(&buf[..i]).into_owned();
                buf.drain(..i + 2);
                return Some(cmd);
            }
            match s.read_buf(buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Serve one connection the way mod_event_socket does.
    pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
        mut s: S,
        shared: Arc<Shared>,
        restart: Option<Restart>,
    ) {
        let _ = serve_inner(&mut s, &shared, restart).await;
        let _ = s.shutdown().await;
    }

    async fn serve_inner<S: AsyncRead + AsyncWrite + Unpin>(
        s: &mut S,
        shared: &Shared,
        restart: Option<Restart>,
    ) -> std::io::Result<()> {
        let cfg = lock(&shared.config).clone();
        let w = cfg.writes;
        if cfg.silent {
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink).await;
            return Ok(());
        }
        if cfg.acl_reject {
            return send(s, &[RUDE_REJECTION, GOODBYE].concat(), w).await;
        }
        send(s, GREETING, w).await?;
        let mut buf = Vec::new();
        let mut authed = false;
        while let Some(cmd) = read_command(s, &mut buf).await {
            lock(&shared.log).commands.push(cmd.clone());
            if !authed {
                if let Some(pw) = cmd.strip_prefix("auth ") {
                    lock(&shared.log).auth_attempts += 1;
                    if pw == lock(&shared.config).password {
                        authed = true;
                        send(s, AUTH_OK, w).await?;
                        continue;
                    }
                    return send(s, &[AUTH_INVALID, GOODBYE].concat(), w).await;
                }
                send(
                    s,
                    b"Content-Type: command/reply\nReply-Text: -ERR command not found\n\n",
                    w,
                )
                .await?;
                continue;
            }
            if cmd == "exit" {
                return send(s, &[BYE, GOODBYE].concat(), w).await;
            }
            if cmd == "api reload mod_event_socket" {
                let reply = api_response(format!("+OK Job-UUID: {JOB_UUID}\n").as_bytes());
                if cfg.coalesce_reload {
                    send(s, &[reply.as_slice(), SHUTDOWN].concat(), w).await?;
                } else {
                    send(s, &reply, w).await?;
                    tokio::time::sleep(Duration::from_millis(15)).await;
                }
                // The listener goes away before the clients see the notice.
                if let Some(r) = &restart {
                    let (ack, done) = oneshot::channel();
                    if r.send(ack).await.is_ok() {
                        let _ = done.await;
                    }
                }
                if !cfg.coalesce_reload {
                    send(s, SHUTDOWN, w).await?;
                }
                return Ok(());
            }
            if cmd.starts_with("bgapi ") {
                send(s, &bgapi_reply(JOB_UUID), w).await?;
                continue;
            }
            if let Some(api) = cmd.strip_prefix("api ") {
                let reply = lock(&shared.config).api.get(api).cloned();
                match reply {
                    Some(ApiReply::Body(b)) => send(s, &api_response(b.as_bytes()), w).await?,
                    Some(ApiReply::RawThenClose(raw)) => return send(s, &raw, w).await,
                    Some(ApiReply::Silent) => {
                        let mut sink = Vec::new();
                        let _ = s.read_to_end(&mut sink).await;
                        return Ok(());
                    }
                    None => {
                        let verb = api.split_whitespace().next().unwrap_or("");
                        let body = format!("-ERR {verb} Command not found!\n");
                        send(s, &api_response(body.as_bytes()), w).await?;
                    }
                }
                continue;
            }
            send(
                s,
                b"Content-Type: command/reply\nReply-Text: -ERR command not found\n\n",
                w,
            )
            .await?;
        }
        Ok(())
    }

    fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
        let sock = TcpSocket::new_v4()?;
        sock.set_reuseaddr(true)?;
        sock.bind(addr)?;
        sock.listen(64)
    }

    /// A fake Event Socket listening on 127.0.0.1 (random port).
    pub struct FakeEsl {
        pub addr: SocketAddr,
        pub shared: Arc<Shared>,
        task: JoinHandle<()>,
    }

    impl FakeEsl {
        pub async fn start(config: Config) -> FakeEsl {
            let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let addr = listener.local_addr().unwrap();
            let shared = Arc::new(Shared {
                config: Mutex::new(config),
                log: Mutex::new(Log::default()),
            });
            let task = tokio::spawn(accept_loop(listener, addr, shared.clone()));
            FakeEsl { addr, shared, task }
        }

        pub async fn connect(&self) -> TcpStream {
            TcpStream::connect(self.addr).await.unwrap()
        }

        pub fn log(&self) -> MutexGuard<'_, Log> {
            lock(&self.shared.log)
        }

        pub fn config(&self) -> MutexGuard<'_, Config> {
            lock(&self.shared.config)
        }
    }

    impl Drop for FakeEsl {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    async fn accept_loop(listener: TcpListener, addr: SocketAddr, shared: Arc<Shared>) {
        let (restart_tx, mut restart_rx) = mpsc::channel::<oneshot::Sender<()>>(4);
        let mut listener = Some(listener);
        loop {
            let Some(l) = &listener else { return };
            tokio::select! {
                accepted = l.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let _ = stream.set_nodelay(true);
                    lock(&shared.log).connections += 1;
                    tokio::spawn(serve(stream, shared.clone(), Some(restart_tx.clone())));
                }
                Some(ack) = restart_rx.recv() => {
                    drop(listener.take()); // connections now get "connection refused"
                    let _ = ack.send(());
                    let downtime = {
                        let mut cfg = lock(&shared.config);
                        if let Some(pw) = cfg.password_after_reload.take() {
                            cfg.password = pw;
                        }
                        cfg.reload_downtime
                    };
                    tokio::time::sleep(downtime).await;
                    listener = bind(addr).ok();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::{self, ApiReply, Config, FakeEsl, Writes};
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use tokio::net::TcpStream;

    fn opts() -> EslOptions {
        EslOptions {
            timeout: Duration::from_secs(5),
            ..EslOptions::default()
        }
    }

    fn pw(s: &str) -> Secret {
        Secret::new(s)
    }

    async fn client(fake: &FakeEsl) -> EslClient<TcpStream> {
        EslClient::connect(fake.connect().await, &pw("ClueCon"), opts())
            .await
            .unwrap()
    }

    #[test]
    fn fake_frames_have_the_real_lengths() {
        let body = |f: &[u8]| {
            let text = std::str::from_utf8(f).unwrap();
            text.split_once("\n\n").unwrap().1.len()
        };
        assert_eq!(body(fake::GOODBYE), 67);
        assert_eq!(body(fake::SHUTDOWN), 31);
        assert_eq!(body(fake::RUDE_REJECTION), 24);
        let reload = fake::api_response(format!("+OK Job-UUID: {}\n", fake::JOB_UUID).as_bytes());
        assert!(
            String::from_utf8(reload)
                .unwrap()
                .contains("Content-Length: 51\n")
        );
    }

    #[tokio::test]
    async fn good_password_authenticates_and_api_bodies_are_exact() {
        let fake = FakeEsl::start(Config::default()).await;
        let mut c = client(&fake).await;
        assert_eq!(c.api("reloadxml").await.unwrap(), "+OK [Success]\n");
        assert_eq!(
            c.api("sofia profile internal rescan").await.unwrap(),
            "Reload XML [Success]\n+OK scan complete\n"
        );
        assert_eq!(
            c.api("nosuchcmd with args").await.unwrap(),
            "-ERR nosuchcmd Command not found!\n"
        );
        assert_eq!(
            c.global_getvar("conf_dir").await.unwrap(),
            "/etc/freeswitch"
        );
        assert_eq!(
            fake.log().commands,
            [
                "auth ClueCon",
                "api reloadxml",
                "api sofia profile internal rescan",
                "api nosuchcmd with args",
                "api global_getvar conf_dir"
            ]
        );
    }

    #[tokio::test]
    async fn status_is_parsed_from_the_real_reply() {
        let fake = FakeEsl::start(Config::default()).await;
        let st = client(&fake).await.status().await.unwrap();
        assert_eq!(st.version, "1.10.12-release  64bit");
        assert!(st.ready);
        assert_eq!(
            st.uptime_line.as_deref(),
            Some(
                "UP 0 years, 0 days, 0 hours, 0 minutes, 16 seconds, 683 milliseconds, 371 microseconds"
            )
        );
    }

    #[test]
    fn status_parser_handles_packaged_builds_not_ready_and_garbage() {
        let packaged = "UP 0 years, 1 day\nFreeSWITCH (Version 1.10.12 -release-10222002881-a88d069d6fgit a88d069 2024-08-02 21:02:27Z 64bit) is ready\n";
        let st = parse_status(packaged).unwrap();
        assert_eq!(
            st.version,
            "1.10.12 -release-10222002881-a88d069d6fgit a88d069 2024-08-02 21:02:27Z 64bit"
        );
        assert!(st.ready);
        let st =
            parse_status("FreeSWITCH (Version 1.10.12-release  64bit) is not ready\n").unwrap();
        assert!(!st.ready);
        assert_eq!(st.uptime_line, None);
        let err = parse_status("-ERR status Command not found!\n").unwrap_err();
        assert!(matches!(err, EslError::Protocol(_)), "{err:?}");
        assert!(err.to_string().contains("-ERR status"), "{err}");
        assert!(parse_status("FreeSWITCH (Version ) is ready").is_err());
    }

    #[test]
    fn status_says_how_many_sessions_are_up() {
        let body = |now: &str| {
            format!(
                "UP 0 years, 0 days\nFreeSWITCH (Version 1.10.12-release  64bit) is ready\n\
                 7 session(s) since startup\n{now} session(s) - peak 3, last 5min 3 \n\
                 0 session(s) per Sec out of max 30, peak 0, last 5min 0 \n1000 session(s) max\n"
            )
        };
        assert_eq!(parse_status(&body("2")).unwrap().sessions, Some(2));
        assert_eq!(parse_status(&body("0")).unwrap().sessions, Some(0));
        // Host text that is not a count is no count.
        assert_eq!(parse_status(&body("-1")).unwrap().sessions, None);
        assert_eq!(
            parse_status("FreeSWITCH (Version 1.10.12-release  64bit) is ready\n")
                .unwrap()
                .sessions,
            None
        );
    }

    #[tokio::test]
    async fn wrong_password_is_auth_rejected_and_never_shown() {
        let fake = FakeEsl::start(Config::default()).await;
        let err = EslClient::connect(fake.connect().await, &pw("Wr0ngPassw0rd"), opts())
            .await
            .unwrap_err();
        assert!(matches!(err, EslError::AuthRejected), "{err:?}");
        let shown = format!("{err} {err:?}");
        assert!(shown.contains("refused the password"), "{shown}");
        assert!(!shown.contains("Wr0ngPassw0rd"));
    }

    #[tokio::test]
    async fn acl_rejection_is_its_own_error() {
        let fake = FakeEsl::start(Config {
            acl_reject: true,
            ..Config::default()
        })
        .await;
        let err = EslClient::connect(fake.connect().await, &pw("ClueCon"), opts())
            .await
            .unwrap_err();
        match &err {
            EslError::AclRejected { message } => assert_eq!(message, "Access Denied, go away."),
            other => panic!("expected AclRejected, got {other:?}"),
        }
        assert!(
            err.to_string()
                .contains("rejected this connection by ACL (apply-inbound-acl"),
            "{err}"
        );
        assert_eq!(fake.log().auth_attempts, 0);
    }

    #[tokio::test]
    async fn one_byte_writes_over_tcp_are_reassembled() {
        let fake = FakeEsl::start(Config {
            writes: Writes::OneByte,
            ..Config::default()
        })
        .await;
        let mut c = client(&fake).await;
        assert_eq!(c.status().await.unwrap().version, "1.10.12-release  64bit");
        assert_eq!(c.api("reloadxml").await.unwrap(), "+OK [Success]\n");
        c.exit().await.unwrap();
    }

    #[tokio::test]
    async fn one_byte_reads_through_a_tiny_duplex_are_reassembled() {
        // A 1-byte duplex buffer makes every single read return exactly one byte.
        let (ours, theirs) = tokio::io::duplex(1);
        let shared = Arc::new(fake::Shared {
            config: std::sync::Mutex::new(Config::default()),
            log: std::sync::Mutex::new(fake::Log::default()),
        });
        let server = tokio::spawn(fake::serve(theirs, shared, None));
        let mut c = EslClient::connect(ours, &pw("ClueCon"), opts())
            .await
            .unwrap();
        assert_eq!(
            c.global_getvar("conf_dir").await.unwrap(),
            "/etc/freeswitch"
        );
        assert_eq!(c.bgapi("status").await.unwrap(), fake::JOB_UUID);
        c.exit().await.unwrap();
        server.await.unwrap();
    }

    #[tokio::test]
    async fn two_frames_in_one_write_are_both_read() {
        let (mut server, ours) = tokio::io::duplex(4096);
        let mut wire = Wire::new(ours, opts());
        let both = [
            fake::api_response(b"+OK [Success]\n").as_slice(),
            fake::GOODBYE,
        ]
        .concat();
        server.write_all(&both).await.unwrap();
        let first = wire.read_frame("test frame 1").await.unwrap();
        assert_eq!(first.content_type(), Some("api/response"));
        assert_eq!(first.body_text(), "+OK [Success]\n");
        let second = wire.read_frame("test frame 2").await.unwrap();
        assert_eq!(second.content_type(), Some("text/disconnect-notice"));
        assert_eq!(
            second.body_text(),
            "Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"
        );
        drop(server);
        let eof = wire.read_frame("test frame 3").await.unwrap_err();
        assert!(
            matches!(eof, EslError::Disconnected { notice: None }),
            "{eof:?}"
        );
    }

    #[tokio::test]
    async fn silent_server_times_out_instead_of_hanging() {
        let fake = FakeEsl::start(Config {
            silent: true,
            ..Config::default()
        })
        .await;
        let quick = EslOptions {
            timeout: Duration::from_millis(200),
            ..EslOptions::default()
        };
        let t0 = std::time::Instant::now();
        let err = EslClient::connect(fake.connect().await, &pw("ClueCon"), quick)
            .await
            .unwrap_err();
        assert!(t0.elapsed() < Duration::from_secs(3));
        match &err {
            EslError::Timeout { waiting_for, after } => {
                assert!(waiting_for.contains("greeting"), "{waiting_for}");
                assert_eq!(*after, Duration::from_millis(200));
            }
            other => panic!("expected Timeout, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn api_without_answer_times_out_naming_the_command() {
        let mut cfg = Config::default();
        cfg.api.insert("show channels".into(), ApiReply::Silent);
        let fake = FakeEsl::start(cfg).await;
        let quick = EslOptions {
            timeout: Duration::from_millis(200),
            ..EslOptions::default()
        };
        let mut c = EslClient::connect(fake.connect().await, &pw("ClueCon"), quick)
            .await
            .unwrap();
        let err = c.api("show channels").await.unwrap_err();
        assert!(err.to_string().contains("api/response to `show`"), "{err}");
    }

    #[tokio::test]
    async fn eof_in_the_middle_of_a_body_is_an_error() {
        let mut cfg = Config::default();
        cfg.api.insert(
            "sofia status".into(),
            ApiReply::RawThenClose(
                b"Content-Type: api/response\nContent-Length: 100\n\nonly ten b".to_vec(),
            ),
        );
        cfg.api.insert(
            "uptime".into(),
            ApiReply::RawThenClose(b"Content-Type: api/resp".to_vec()),
        );
        let fake = FakeEsl::start(cfg).await;
        let err = client(&fake).await.api("sofia status").await.unwrap_err();
        assert!(
            matches!(err, EslError::Truncated { received: 58, .. }),
            "{err:?}"
        );
        let err = client(&fake).await.api("uptime").await.unwrap_err();
        assert!(matches!(err, EslError::Truncated { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn disconnect_notice_instead_of_a_reply_is_disconnected() {
        let mut cfg = Config::default();
        cfg.api.insert(
            "status".into(),
            ApiReply::RawThenClose(fake::GOODBYE.to_vec()),
        );
        let fake = FakeEsl::start(cfg).await;
        let err = client(&fake).await.status().await.unwrap_err();
        match &err {
            EslError::Disconnected { notice: Some(n) } => {
                assert!(n.starts_with("Disconnected, goodbye."))
            }
            other => panic!("expected Disconnected, got {other:?}"),
        }
        assert!(err.to_string().contains("closed the connection"), "{err}");
    }

    #[tokio::test]
    async fn oversized_body_is_refused_before_reading_it() {
        let mut cfg = Config::default();
        cfg.api.insert(
            "status".into(),
            ApiReply::RawThenClose(
                b"Content-Type: api/response\nContent-Length: 17000000\n\nxx".to_vec(),
            ),
        );
        let fake = FakeEsl::start(cfg).await;
        let err = client(&fake).await.api("status").await.unwrap_err();
        assert!(
            matches!(
                err,
                EslError::FrameTooLarge {
                    what: "body",
                    size: 17_000_000,
                    limit: 16_777_216
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn frame_parser_limits_and_malformed_headers() {
        let o = EslOptions {
            max_header_bytes: 100,
            ..EslOptions::default()
        };
        let endless = vec![b'a'; 101];
        assert!(matches!(
            parse_frame(&endless, &o),
            Err(EslError::FrameTooLarge {
                what: "header block",
                ..
            })
        ));
        let many_lines = "X: y\n".repeat(30);
        assert!(matches!(
            parse_frame(many_lines.as_bytes(), &o),
            Err(EslError::FrameTooLarge { .. })
        ));
        assert!(matches!(
            parse_frame(b"no colon here\n\n", &o),
            Err(EslError::Protocol(_))
        ));
        let bad_len = b"Content-Type: api/response\nContent-Length: lots\n\n";
        assert!(matches!(
            parse_frame(bad_len, &o),
            Err(EslError::Protocol(_))
        ));
        assert!(matches!(
            parse_frame(b"Content-Type: api/resp", &o),
            Ok(None)
        ));
        assert!(matches!(
            parse_frame(b"Content-Length: 5\n\nabc", &o),
            Ok(None)
        ));
        let (f, used) = parse_frame(b"\nContent-Length: 3\r\n\r\nabcdef", &o)
            .unwrap()
            .unwrap();
        assert_eq!((f.body.as_deref(), used), (Some(&b"abc"[..]), 25));
    }

    #[tokio::test]
    async fn reload_sequence_ends_in_success() {
        let fake = FakeEsl::start(Config::default()).await;
        client(&fake).await.reload_event_socket().await.unwrap();
        assert_eq!(
            fake.log().commands.last().map(String::as_str),
            Some("api reload mod_event_socket")
        );

        let coalesced = FakeEsl::start(Config {
            coalesce_reload: true,
            ..Config::default()
        })
        .await;
        client(&coalesced)
            .await
            .reload_event_socket()
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn reload_closed_without_a_notice_is_still_success() {
        let (mut server, ours) = tokio::io::duplex(4096);
        let script = tokio::spawn(async move {
            let mut buf = vec![0u8; 256];
            server.write_all(fake::GREETING).await.unwrap();
            let _ = server.read(&mut buf).await.unwrap();
            server.write_all(fake::AUTH_OK).await.unwrap();
            let n = server.read(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"api reload mod_event_socket\n\n");
            let body = format!("+OK Job-UUID: {}\n", fake::JOB_UUID);
            server
                .write_all(&fake::api_response(body.as_bytes()))
                .await
                .unwrap();
            // dropped here: EOF with no shutdown notice
        });
        let c = EslClient::connect(ours, &pw("ClueCon"), opts())
            .await
            .unwrap();
        c.reload_event_socket().await.unwrap();
        script.await.unwrap();
    }

    #[tokio::test]
    async fn reload_reply_error_is_reported() {
        let (mut server, ours) = tokio::io::duplex(4096);
        let script = tokio::spawn(async move {
            let mut buf = vec![0u8; 256];
            server.write_all(fake::GREETING).await.unwrap();
            let _ = server.read(&mut buf).await.unwrap();
            server.write_all(fake::AUTH_OK).await.unwrap();
            let _ = server.read(&mut buf).await.unwrap();
            server
                .write_all(&fake::api_response(b"-ERR [Module already loaded]\n"))
                .await
                .unwrap();
            server
        });
        let c = EslClient::connect(ours, &pw("ClueCon"), opts())
            .await
            .unwrap();
        let err = c.reload_event_socket().await.unwrap_err();
        assert!(
            matches!(&err, EslError::CommandFailed { verb, reply } if verb == "reload" && reply == "-ERR [Module already loaded]"),
            "{err:?}"
        );
        drop(script.await.unwrap());
    }

    #[tokio::test]
    async fn retry_reconnects_after_reload_with_the_new_password() {
        let fake = FakeEsl::start(Config {
            password: "OldPass1".into(),
            password_after_reload: Some("NewPass2".into()),
            reload_downtime: Duration::from_millis(300),
            ..Config::default()
        })
        .await;
        let c = EslClient::connect(fake.connect().await, &pw("OldPass1"), opts())
            .await
            .unwrap();
        c.reload_event_socket().await.unwrap();

        let addr = fake.addr;
        let calls = Arc::new(AtomicU32::new(0));
        let counter = calls.clone();
        let t0 = std::time::Instant::now();
        let mut c = connect_with_retry(
            move || {
                counter.fetch_add(1, Ordering::SeqCst);
                TcpStream::connect(addr)
            },
            &pw("NewPass2"),
            opts(),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert!(
            calls.load(Ordering::SeqCst) >= 2,
            "the first attempt must have met a closed port"
        );
        assert!(t0.elapsed() < Duration::from_secs(3));
        assert!(c.status().await.unwrap().ready);
        assert_eq!(
            fake.log()
                .commands
                .iter()
                .filter(|c| *c == "auth NewPass2")
                .count(),
            1
        );
    }

    #[tokio::test]
    async fn retry_stops_soon_on_a_refused_password() {
        let fake = FakeEsl::start(Config::default()).await;
        let addr = fake.addr;
        let t0 = std::time::Instant::now();
        let err = connect_with_retry(
            || TcpStream::connect(addr),
            &pw("stale"),
            opts(),
            Duration::from_secs(10),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, EslError::AuthRejected), "{err:?}");
        assert_eq!(fake.log().auth_attempts, 3, "one try plus two retries");
        assert!(t0.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn retry_gives_up_when_nothing_listens() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let t0 = std::time::Instant::now();
        let err = connect_with_retry(
            || TcpStream::connect(addr),
            &pw("ClueCon"),
            opts(),
            Duration::from_millis(500),
        )
        .await
        .unwrap_err();
        assert!(t0.elapsed() < Duration::from_secs(2));
        match &err {
            EslError::GaveUp { attempts, last, .. } => {
                assert!(*attempts >= 2, "{attempts}");
                assert!(matches!(**last, EslError::Connect { .. }), "{last:?}");
            }
            other => panic!("expected GaveUp, got {other:?}"),
        }
        assert!(
            err.to_string().contains("could not open a connection"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn retry_does_not_retry_protocol_errors() {
        let (mut server, ours) = tokio::io::duplex(4096);
        server
            .write_all(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
            .await
            .unwrap();
        let mut stream = Some(ours);
        let err = connect_with_retry(
            move || {
                let s = stream
                    .take()
                    .ok_or_else(|| std::io::Error::other("second attempt"));
                async move { s }
            },
            &pw("ClueCon"),
            opts(),
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, EslError::Protocol(_)), "{err:?}");
    }

    #[tokio::test]
    async fn commands_with_line_breaks_are_never_sent() {
        let fake = FakeEsl::start(Config::default()).await;
        let mut c = client(&fake).await;
        for bad in ["status\n\nexit", "status\rexit", "status\0", "", "   "] {
            let err = c.api(bad).await.unwrap_err();
            assert!(
                matches!(err, EslError::UnsafeCommand { .. }),
                "{bad:?}: {err:?}"
            );
        }
        assert!(matches!(
            c.bgapi("originate x\nexit").await,
            Err(EslError::UnsafeCommand { .. })
        ));
        assert!(matches!(
            c.global_getvar("conf_dir exit").await,
            Err(EslError::UnsafeCommand { .. })
        ));
        // The connection is still in step afterwards.
        assert_eq!(c.api("reloadxml").await.unwrap(), "+OK [Success]\n");
        assert_eq!(fake.log().commands, ["auth ClueCon", "api reloadxml"]);
    }

    #[tokio::test]
    async fn unsafe_password_is_refused_without_showing_it() {
        let (_server, ours) = tokio::io::duplex(64);
        let err = EslClient::connect(ours, &pw("pw\n\napi shutdown"), opts())
            .await
            .unwrap_err();
        assert!(matches!(err, EslError::UnsafePassword));
        assert!(!format!("{err} {err:?}").contains("shutdown"));
    }

    #[tokio::test]
    async fn bgapi_returns_the_job_uuid_and_exit_says_goodbye() {
        let fake = FakeEsl::start(Config::default()).await;
        let mut c = client(&fake).await;
        assert_eq!(
            c.bgapi("sofia profile internal rescan").await.unwrap(),
            fake::JOB_UUID
        );
        c.exit().await.unwrap();
        assert_eq!(fake.log().commands.last().map(String::as_str), Some("exit"));
    }

    #[tokio::test]
    async fn exit_tolerates_a_server_that_already_left() {
        let (server, ours) = tokio::io::duplex(4096);
        let mut server = server;
        server.write_all(fake::GREETING).await.unwrap();
        server.write_all(fake::AUTH_OK).await.unwrap();
        let c = EslClient::connect(ours, &pw("ClueCon"), opts())
            .await
            .unwrap();
        drop(server);
        c.exit().await.unwrap();
    }

    #[tokio::test]
    async fn debug_output_never_contains_the_password() {
        let secret = "S3cretEslPass";
        let fake = FakeEsl::start(Config {
            password: secret.into(),
            ..Config::default()
        })
        .await;
        let c = EslClient::connect(fake.connect().await, &pw(secret), opts())
            .await
            .unwrap();
        let shown = format!("{c:?} {:?} {}", pw(secret), pw(secret));
        assert!(shown.contains("EslClient"), "{shown}");
        assert!(!shown.contains(secret), "{shown}");

        let addr = fake.addr;
        fake.config().password = "rotated".into();
        let err = connect_with_retry(
            || TcpStream::connect(addr),
            &pw(secret),
            opts(),
            Duration::from_secs(2),
        )
        .await
        .unwrap_err();
        let shown = format!("{err} {err:?} {err:#?}");
        assert!(!shown.contains(secret), "{shown}");
    }
}
