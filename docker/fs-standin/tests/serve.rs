//! End to end on loopback: `serve` on a temp copy of the stock tree, driven through the Event
//! Socket, the `register` client and `fs_cli`, checking the log file as fail2ban would read it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_fs-standin");

fn stock() -> PathBuf {
    if let Some(p) = std::env::var_os("FS_STOCK_CONF") {
        return PathBuf::from(p);
    }
    let mut dir = Some(Path::new(env!("CARGO_MANIFEST_DIR")));
    while let Some(d) = dir {
        let cand = d.join("shared/reference/freeswitch-conf-1.10.12");
        if cand.join("vars.xml").is_file() {
            return cand;
        }
        dir = d.parent();
    }
    panic!("stock tree not found: set FS_STOCK_CONF");
}

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

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Replace exactly one occurrence of `from` in a file (the edit a careful tool would make).
fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert_eq!(
        text.matches(from).count(),
        1,
        "{from:?} in {}",
        path.display()
    );
    std::fs::write(path, text.replace(from, to)).unwrap();
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One ESL connection, synchronous.
struct Esl {
    rd: BufReader<TcpStream>,
    wr: TcpStream,
}

impl Esl {
    fn connect(port: u16) -> Esl {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(s) => {
                    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    return Esl {
                        rd: BufReader::new(s.try_clone().unwrap()),
                        wr: s,
                    };
                }
                Err(e) if Instant::now() > deadline => panic!("ESL on {port} never came up: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// (header block, body) of the next frame.
    fn frame(&mut self) -> (String, String) {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            assert!(
                self.rd.read_line(&mut line).unwrap() > 0,
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
        self.rd.read_exact(&mut body).unwrap();
        (head, String::from_utf8(body).unwrap())
    }

    fn send(&mut self, cmd: &str) {
        self.wr.write_all(format!("{cmd}\n\n").as_bytes()).unwrap();
    }

    fn login(port: u16, password: &str) -> Result<Esl, String> {
        let mut e = Esl::connect(port);
        assert_eq!(e.frame().0, "Content-Type: auth/request\n");
        e.send(&format!("auth {password}"));
        let (head, _) = e.frame();
        if head == "Content-Type: command/reply\nReply-Text: +OK accepted\n" {
            Ok(e)
        } else {
            Err(head)
        }
    }

    fn api(&mut self, cmd: &str) -> String {
        self.send(&format!("api {cmd}"));
        let (head, body) = self.frame();
        assert_eq!(
            head,
            format!(
                "Content-Type: api/response\nContent-Length: {}\n",
                body.len()
            )
        );
        body
    }
}

fn register(port: u16, user: &str, password: &str) -> Output {
    Command::new(BIN)
        .args([
            "register",
            "--target",
            &format!("127.0.0.1:{port}"),
            "--user",
            user,
        ])
        .args(["--timeout-ms", "3000"])
        .env("SIP_PASSWORD", password)
        .output()
        .unwrap()
}

fn fs_cli(home: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("fs_cli")
        .args(args)
        .env("HOME", home)
        .output()
        .unwrap()
}

/// `YYYY-MM-DD HH:MM:SS.uuuuuu NN.NN% ` then `rest`, nothing else.
fn is_log_line(line: &str, rest: &str) -> bool {
    let b = line.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    if b.len() < 28
        || !(digits(0..4) && digits(5..7) && digits(8..10) && digits(11..13) && digits(14..16))
        || !(digits(17..19) && digits(20..26))
        || (b[4], b[7], b[10], b[13], b[16], b[19], b[26])
            != (b'-', b'-', b' ', b':', b':', b'.', b' ')
    {
        return false;
    }
    let Some((pct, tail)) = line[27..].split_once("% ") else {
        return false;
    };
    let ok_pct = pct.split_once('.').is_some_and(|(w, f)| {
        !w.is_empty()
            && w.len() <= 3
            && f.len() == 2
            && (w.to_string() + f).bytes().all(|c| c.is_ascii_digit())
    });
    ok_pct && tail == rest
}

#[test]
fn serve_end_to_end_on_loopback() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path().join("conf");
    let logs = tmp.path().join("log");
    copy_dir(&stock(), &conf);
    let esl_port = free_tcp_port();
    let (int_port, ext_port) = (free_udp_port(), free_udp_port());
    let esl_conf = conf.join("autoload_configs/event_socket.conf.xml");
    edit(
        &esl_conf,
        "value=\"8021\"",
        &format!("value=\"{esl_port}\""),
    );
    // Stock `::` when this host has IPv6 (dual-stack accepts 127.0.0.1), else IPv4 loopback.
    if std::net::TcpListener::bind("[::]:0").is_err() {
        edit(&esl_conf, "value=\"::\"", "value=\"127.0.0.1\"");
    }
    let internal = conf.join("sip_profiles/internal.xml");
    edit(
        &internal,
        "value=\"$${internal_sip_port}\"",
        &format!("value=\"{int_port}\""),
    );
    edit(
        &internal,
        "name=\"sip-ip\" value=\"$${local_ip_v4}\"",
        "name=\"sip-ip\" value=\"127.0.0.1\"",
    );
    let external = conf.join("sip_profiles/external.xml");
    edit(
        &external,
        "value=\"$${external_sip_port}\"",
        &format!("value=\"{ext_port}\""),
    );
    edit(
        &external,
        "name=\"sip-ip\" value=\"$${local_ip_v4}\"",
        "name=\"sip-ip\" value=\"127.0.0.1\"",
    );
    for f in ["internal-ipv6.xml", "external-ipv6.xml"] {
        std::fs::remove_file(conf.join("sip_profiles").join(f)).unwrap();
    }

    let child = Command::new(BIN)
        .arg("serve")
        .arg("--conf-dir")
        .arg(&conf)
        .arg("--log-dir")
        .arg(&logs)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut daemon = Daemon(child);

    // --- Event Socket
    let mut esl = Esl::login(esl_port, "ClueCon").expect("stock password accepted");
    assert!(
        esl.api("status")
            .contains("\nFreeSWITCH (Version 1.10.12-release  64bit) is ready\n")
    );
    assert_eq!(esl.api("global_getvar conf_dir"), conf.to_string_lossy());
    assert_eq!(esl.api("global_getvar log_dir"), logs.to_string_lossy());
    let sofia = esl.api("sofia status");
    assert!(
        sofia.contains(&format!("sip:mod_sofia@127.0.0.1:{int_port}\tRUNNING (0)")),
        "{sofia}"
    );
    assert!(sofia.ends_with("2 profiles 0 aliases\n"), "{sofia}");
    assert_eq!(
        esl.api("sofia profile nosuch rescan"),
        "Invalid Profile [nosuch]"
    );

    let mut bad = Esl::connect(esl_port);
    bad.frame();
    bad.send("auth wrong");
    let mut rest = String::new();
    bad.rd.read_to_string(&mut rest).unwrap();
    assert_eq!(
        rest,
        "Content-Type: command/reply\nReply-Text: -ERR invalid\n\n\
         Content-Type: text/disconnect-notice\nContent-Length: 67\n\n\
         Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"
    );

    // --- SIP: good and bad REGISTER while log-auth-failures=false
    let log_file = logs.join("freeswitch.log");
    let failure = "[WARNING] sofia_reg.c:1787 SIP auth failure (REGISTER) on sofia profile 'internal' for [1000@127.0.0.1] from ip 127.0.0.1";
    let failures = || {
        std::fs::read_to_string(&log_file)
            .unwrap_or_default()
            .lines()
            .filter(|l| is_log_line(l, failure))
            .count()
    };
    let ok = register(int_port, "1000", "1234");
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    assert_eq!(String::from_utf8_lossy(&ok.stdout), "SIP/2.0 200 OK\n");
    let no = register(int_port, "1000", "4321");
    assert_eq!(no.status.code(), Some(1), "{no:?}");
    assert_eq!(
        String::from_utf8_lossy(&no.stdout),
        "SIP/2.0 403 Forbidden\n"
    );
    assert_eq!(
        failures(),
        0,
        "no failure line while log-auth-failures=false"
    );

    // --- the flag on disk takes effect only through the rescan
    edit(
        &internal,
        "<param name=\"log-auth-failures\" value=\"false\"/>",
        "<param name=\"log-auth-failures\" value=\"true\"/>",
    );
    assert_eq!(register(int_port, "1000", "4321").status.code(), Some(1));
    assert_eq!(failures(), 0, "the file alone changes nothing");
    assert_eq!(esl.api("reloadxml"), "+OK [Success]\n");
    assert_eq!(register(int_port, "1000", "4321").status.code(), Some(1));
    assert_eq!(failures(), 0, "reloadxml alone changes nothing");
    assert_eq!(
        esl.api("sofia profile internal rescan"),
        "Reload XML [Success]\n+OK scan complete\n"
    );
    assert_eq!(register(int_port, "1000", "4321").status.code(), Some(1));
    assert_eq!(failures(), 1, "failure line after the rescan");

    // --- new default_password through reloadxml
    edit(
        &conf.join("vars.xml"),
        "data=\"default_password=1234\"",
        "data=\"default_password=Xy7kP2\"",
    );
    assert_eq!(register(int_port, "1001", "Xy7kP2").status.code(), Some(1));
    assert_eq!(esl.api("reloadxml"), "+OK [Success]\n");
    assert_eq!(register(int_port, "1001", "Xy7kP2").status.code(), Some(0));
    assert_eq!(register(int_port, "1001", "1234").status.code(), Some(1));

    // --- fs_cli with a config in HOME
    let home = tmp.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::fs::write(
        home.join(".fs_cli_conf"),
        format!("[default]\nhost => 127.0.0.1\nport => {esl_port}\npassword => ClueCon\n"),
    )
    .unwrap();
    let out = fs_cli(&home, &["-x", "global_getvar default_password"]);
    assert_eq!(
        (out.status.code(), out.stdout.as_slice()),
        (Some(0), &b"Xy7kP2\n"[..])
    );
    let out = fs_cli(&home, &["-x", "nosuchcmd"]);
    assert_eq!(out.status.code(), Some(0), "-ERR still exits 0");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "-ERR nosuchcmd Command not found!\n\n"
    );

    // --- ESL password: on disk and reloadxml change nothing until reload mod_event_socket
    edit(&esl_conf, "value=\"ClueCon\"", "value=\"Qw3rtyZ9\"");
    assert_eq!(esl.api("reloadxml"), "+OK [Success]\n");
    assert!(
        Esl::login(esl_port, "ClueCon").is_ok(),
        "old password until the reload"
    );
    let body = esl.api("reload mod_event_socket");
    assert!(
        body.starts_with("+OK Job-UUID: ") && body.len() == 51,
        "{body:?}"
    );
    assert_eq!(
        esl.frame(),
        (
            "Content-Type: text/disconnect-notice\nContent-Length: 31\n".to_string(),
            "The system is being shut down.\n".to_string()
        )
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut esl = loop {
        match Esl::login(esl_port, "Qw3rtyZ9") {
            Ok(e) => break e,
            Err(h) if Instant::now() > deadline => panic!("new password refused: {h}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    assert!(
        Esl::login(esl_port, "ClueCon").is_err(),
        "old password refused after the reload"
    );

    let out = fs_cli(&home, &["-x", "status"]);
    assert_eq!(out.status.code(), Some(255));
    assert!(out.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "[ERROR] fs_cli.c:1699 main() Error Connecting []\n"
    );
    let out = fs_cli(&home, &["-p", "Qw3rtyZ9", "-x", "status"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stdout).ends_with("Current Stack Size/Max 240K/8192K\n\n")
    );
    assert!(esl.api("status").starts_with("UP "));

    // --- SIGTERM: clean exit
    let pid = daemon.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = daemon.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "serve did not exit on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
    let log = std::fs::read_to_string(&log_file).unwrap();
    assert!(
        !log.contains("Xy7kP2") && !log.contains("Qw3rtyZ9"),
        "no password in the log"
    );
}

/// `freeswitch -version` as FreeSWITCH's src/switch.c prints it (the binary is installed as
/// /usr/bin/freeswitch on the testbed), with no config, no port and no privilege needed.
#[test]
fn dash_version_prints_the_version_full_and_exits_zero() {
    let out = Command::new(BIN)
        .arg("-version")
        .current_dir("/")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "FreeSWITCH version: 1.10.12-release~64bit\n"
    );
    assert!(out.stderr.is_empty());
}
