//! fs_cli as FreeSWITCH ships it, for `-x` use: config lookup (~/.fs_cli_conf, else
//! /etc/fs_cli.conf), profile choice, one api command, the real exit codes and error line.

use crate::config::Secret;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// fs_cli's one error line for any connect or auth failure, whatever the cause.
pub const CONNECT_ERROR: &str = "[ERROR] fs_cli.c:1699 main() Error Connecting []";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliProfile {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub password: Secret,
}

impl CliProfile {
    fn builtin(name: &str) -> Self {
        CliProfile {
            name: name.to_string(),
            host: "127.0.0.1".into(),
            port: 8021,
            password: Secret::new("ClueCon"),
        }
    }
}

/// C atoi(): leading digits, 0 when there are none.
fn atoi_port(v: &str) -> u16 {
    let digits: String = v
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse::<u32>().map(|n| n as u16).unwrap_or(0)
}

/// Parse an fs_cli config into profiles, by esl_config's rules: `#`/`;` comment only in column 1,
/// `;;` ends the line only when it is the first `;`, `key => value` or `key = value`, and
/// the value keeps its trailing whitespace.
pub fn parse_conf(text: &str) -> Vec<CliProfile> {
    let mut profiles: Vec<CliProfile> = Vec::new();
    for raw in text.split('\n') {
        let mut line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.starts_with('#') || line.starts_with(';') || line.trim().is_empty() {
            continue;
        }
        if let Some(p) = line.find(';')
            && line[p + 1..].starts_with(';')
        {
            line = &line[..p];
        }
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix('[') {
            let name = rest.split(']').next().unwrap_or(rest).trim();
            profiles.push(CliProfile::builtin(name));
            continue;
        }
        let Some((key, value)) = trimmed.split_once('=') else {
            continue;
        };
        let value = value.strip_prefix('>').unwrap_or(value);
        let value = value.trim_start_matches([' ', '\t']);
        let Some(cur) = profiles.last_mut() else {
            continue;
        };
        match key.trim() {
            "host" => cur.host = value.to_string(),
            "port" => cur.port = atoi_port(value),
            "password" => cur.password = Secret::new(value),
            _ => {}
        }
    }
    profiles
}

/// The named profile, else `[default]`, else the first one, else the built-in defaults.
pub fn choose(profiles: &[CliProfile], wanted: Option<&str>) -> CliProfile {
    wanted
        .and_then(|w| profiles.iter().find(|p| p.name == w))
        .or_else(|| profiles.iter().find(|p| p.name == "default"))
        .or_else(|| profiles.first())
        .cloned()
        .unwrap_or_else(|| CliProfile::builtin("default"))
}

/// `$HOME/.fs_cli_conf` if it opens, otherwise `/etc/fs_cli.conf`: only the first one is read.
pub fn read_conf(home: Option<&Path>, etc: &Path) -> Option<String> {
    let candidates: Vec<PathBuf> = home
        .map(|h| h.join(".fs_cli_conf"))
        .into_iter()
        .chain(std::iter::once(etc.to_path_buf()))
        .collect();
    for c in candidates {
        if let Ok(mut f) = std::fs::File::open(&c) {
            let mut bytes = Vec::new();
            // A file that opens is the one used, even if reading it fails half way.
            let _ = f.read_to_end(&mut bytes);
            return Some(String::from_utf8_lossy(&bytes).into_owned());
        }
    }
    None
}

#[derive(Debug, Default)]
struct Args {
    execute: Option<String>,
    host: Option<String>,
    port: Option<String>,
    password: Option<String>,
    profile: Option<String>,
    timeout_ms: Option<u64>,
    connect_timeout_ms: Option<u64>,
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut a = Args::default();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        let (name, inline): (&str, Option<String>) = if let Some(long) = arg.strip_prefix("--") {
            match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            }
        } else if arg.starts_with('-') && arg.len() > 2 {
            (&arg[1..2], Some(arg[2..].to_string()))
        } else if let Some(short) = arg.strip_prefix('-') {
            (short, None)
        } else {
            a.profile = Some(arg.clone());
            i += 1;
            continue;
        };
        let takes_value = matches!(
            name,
            "x" | "execute"
                | "H"
                | "host"
                | "P"
                | "port"
                | "p"
                | "password"
                | "u"
                | "user"
                | "d"
                | "debug"
                | "t"
                | "timeout"
                | "T"
                | "connect-timeout"
                | "l"
                | "loglevel"
        );
        let value = if takes_value {
            match inline {
                Some(v) => Some(v),
                None => {
                    i += 1;
                    Some(
                        args.get(i)
                            .cloned()
                            .ok_or_else(|| format!("option {arg} needs a value"))?,
                    )
                }
            }
        } else {
            None
        };
        match (name, value) {
            ("x" | "execute", v) => a.execute = v,
            ("H" | "host", v) => a.host = v,
            ("P" | "port", v) => a.port = v,
            ("p" | "password", v) => a.password = v,
            ("t" | "timeout", Some(v)) => a.timeout_ms = v.parse().ok(),
            ("T" | "connect-timeout", Some(v)) => a.connect_timeout_ms = v.parse().ok(),
            _ => {}
        }
        i += 1;
    }
    Ok(a)
}

/// Entry point when run as fs_cli; returns the process exit code.
pub fn main(args: &[String]) -> i32 {
    let a = match parse_args(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fs_cli: {e}");
            return 255;
        }
    };
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let profiles = read_conf(home.as_deref(), Path::new("/etc/fs_cli.conf"))
        .map(|t| parse_conf(&t))
        .unwrap_or_default();
    let mut p = choose(&profiles, a.profile.as_deref());
    if let Some(h) = a.host {
        p.host = h;
    }
    if let Some(port) = a.port {
        p.port = atoi_port(&port);
    }
    if let Some(pw) = a.password {
        p.password = Secret::new(pw);
    }
    let connect_timeout = Duration::from_millis(a.connect_timeout_ms.unwrap_or(2000).max(1));
    let timeout = a.timeout_ms.filter(|t| *t > 0).map(Duration::from_millis);
    let Some(mut conn) = connect(&p, connect_timeout, timeout) else {
        eprintln!("{CONNECT_ERROR}");
        return 255;
    };
    let Some(cmd) = a.execute else {
        eprintln!("fs_cli: interactive mode is not supported by this stand-in; use -x COMMAND");
        return 1;
    };
    match conn.api(&cmd) {
        Some(body) => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(body.as_bytes());
            let _ = out.write_all(b"\n");
            let _ = out.flush();
            0
        }
        None => {
            eprintln!(
                "fs_cli: the connection to {}:{} was lost before the reply",
                p.host, p.port
            );
            1
        }
    }
}

struct Conn {
    rd: BufReader<TcpStream>,
    wr: TcpStream,
}

/// A frame's headers and body, read synchronously.
fn read_frame(rd: &mut BufReader<TcpStream>) -> Option<(Vec<(String, String)>, String)> {
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if rd.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end_matches(['\n', '\r']);
        if line.is_empty() {
            if headers.is_empty() {
                continue;
            }
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let len = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("Content-Length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    rd.read_exact(&mut body).ok()?;
    Some((headers, String::from_utf8_lossy(&body).into_owned()))
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Connect and authenticate; None on any failure (fs_cli reports them all the same way).
fn connect(p: &CliProfile, connect_timeout: Duration, timeout: Option<Duration>) -> Option<Conn> {
    let addrs = (p.host.as_str(), p.port).to_socket_addrs().ok()?;
    let stream = addrs
        .into_iter()
        .find_map(|a| TcpStream::connect_timeout(&a, connect_timeout).ok())?;
    stream
        .set_read_timeout(timeout.or(Some(Duration::from_secs(30))))
        .ok()?;
    let mut conn = Conn {
        rd: BufReader::new(stream.try_clone().ok()?),
        wr: stream,
    };
    let (h, _) = read_frame(&mut conn.rd)?;
    if header(&h, "Content-Type") != Some("auth/request") {
        return None;
    }
    conn.wr
        .write_all(format!("auth {}\n\n", p.password.expose()).as_bytes())
        .ok()?;
    let (h, _) = read_frame(&mut conn.rd)?;
    header(&h, "Reply-Text")
        .is_some_and(|r| r.starts_with("+OK"))
        .then_some(conn)
}

impl Conn {
    fn api(&mut self, cmd: &str) -> Option<String> {
        self.wr
            .write_all(format!("api {cmd}\n\n").as_bytes())
            .ok()?;
        loop {
            let (h, body) = read_frame(&mut self.rd)?;
            if header(&h, "Content-Type") == Some("api/response") {
                return Some(body);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn esl_config_rules() {
        let text = "# comment\n; comment\n[default]\nhost => 10.0.0.1\nport=8022\n\
                    password => s3cret  \n  ; not a comment = x\n[other]\npassword => a;b\nhost => h;;trailing\n\
                    port => 12abc\n";
        let ps = parse_conf(text);
        assert_eq!(ps.len(), 2);
        assert_eq!(ps[0].host, "10.0.0.1");
        assert_eq!(ps[0].port, 8022);
        assert_eq!(
            ps[0].password.expose(),
            "s3cret  ",
            "trailing whitespace is kept"
        );
        assert_eq!(
            ps[1].password.expose(),
            "a;b",
            "a single ; is part of the value"
        );
        assert_eq!(ps[1].host, "h", ";; ends the line when it is the first ;");
        assert_eq!(ps[1].port, 12);
        let ps = parse_conf("[x]\npassword => a;b;;c\n");
        assert_eq!(
            ps[0].password.expose(),
            "a;b;;c",
            ";; after another ; does not end it"
        );
        let ps = parse_conf("[x]\r\npassword = pw\r\n");
        assert_eq!(ps[0].password.expose(), "pw");
    }

    #[test]
    fn profile_choice() {
        let ps = parse_conf("[first]\nport => 1\n[default]\nport => 2\n[named]\nport => 3\n");
        assert_eq!(choose(&ps, None).port, 2);
        assert_eq!(choose(&ps, Some("named")).port, 3);
        assert_eq!(choose(&ps, Some("missing")).port, 2);
        let ps = parse_conf("[first]\nport => 1\n[second]\nport => 2\n");
        assert_eq!(choose(&ps, None).port, 1, "no [default]: the first profile");
        let d = choose(&[], None);
        assert_eq!(
            (d.host.as_str(), d.port, d.password.expose()),
            ("127.0.0.1", 8021, "ClueCon")
        );
    }

    #[test]
    fn home_file_hides_etc_file() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir(&home).unwrap();
        let etc = dir.path().join("fs_cli.conf");
        std::fs::write(&etc, "[default]\npassword => from-etc\n").unwrap();
        let chosen = |h: &Path| choose(&parse_conf(&read_conf(Some(h), &etc).unwrap()), None);
        assert_eq!(chosen(&home).password.expose(), "from-etc");
        // A stale home file without a password wins over /etc and gives the default ClueCon.
        std::fs::write(home.join(".fs_cli_conf"), "[default]\nhost => 127.0.0.1\n").unwrap();
        assert_eq!(chosen(&home).password.expose(), "ClueCon");
        assert!(read_conf(Some(&dir.path().join("nohome")), &dir.path().join("none")).is_none());
    }

    #[test]
    fn args() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let a = parse_args(&s(&["-H", "::1", "-P8022", "-x", "status", "myprof"])).unwrap();
        assert_eq!(a.host.as_deref(), Some("::1"));
        assert_eq!(a.port.as_deref(), Some("8022"));
        assert_eq!(a.execute.as_deref(), Some("status"));
        assert_eq!(a.profile.as_deref(), Some("myprof"));
        let a = parse_args(&s(&["--password=pw", "--execute", "version"])).unwrap();
        assert_eq!(
            (a.password.as_deref(), a.execute.as_deref()),
            (Some("pw"), Some("version"))
        );
        assert!(parse_args(&s(&["-x"])).is_err());
    }
}
