//! Helpers shared by the end-to-end tests: the container fleet of `docker/testbed`.
//!
//! Conventions (read before writing an e2e test):
//! - [`shared_fleet()`] is the default fleet `fsfleet` (5 mixed hosts, see README-testbed.md). It
//!   is brought up once per test binary, and `docker/testbed up` is idempotent, so every test file
//!   reuses the same running containers (seconds, not minutes).
//! - Its hosts are FRESH stock hosts and must stay that way: tests that only read (audit, facts,
//!   `--check`) use it freely. A test that changes a host (harden, config edits, SIP flags, bans)
//!   uses a fleet of its own, `Fleet::fresh("NAME", n)`, which recreates that fleet's containers from
//!   the images (so a re-run starts from stock too), or restores what it changed before it ends.
//! - Fleet names in use: `fsfleet` (shared, read-only), `testbed-e2e` (tests/testbed.rs). Pick a new
//!   name per mutating test file; fleets are independent (own network, key, inventory).
//! - Fleet names are global to the docker engine. When several checkouts share one engine (several
//!   engineers on one machine), each sets `FSFLEET_TESTBED_PREFIX` (e.g. `alice-`): it is put in
//!   front of every fleet name, and `docker/testbed` takes over (recreates) a fleet another checkout created.
//! - Passwords go to the attacker/phone through the environment, never argv.
//!
//! Not every test binary uses every helper.
#![allow(dead_code)]

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde::Deserialize;

/// The default fleet's name (what `docker/testbed up` and `make testbed` use).
pub const SHARED_FLEET: &str = "fsfleet";

/// One host of a fleet, as written by `docker/testbed up` into hosts.json.
#[derive(Debug, Clone, Deserialize)]
pub struct TestHost {
    /// Inventory name: fs01, fs02, ...
    pub name: String,
    /// Docker container name (for `docker exec` when a test must look behind fsfleet's back).
    pub container: String,
    pub address: String,
    pub port: u16,
    /// The SSH login: `root`, or `admin` (passwordless sudo) on the admin-role hosts.
    pub user: String,
    /// `bookworm` or `trixie`.
    pub distro: String,
    /// `root`, `admin`, `port2222` or `source`.
    pub role: String,
    pub conf_dir: String,
    pub log_dir: String,
}

/// A fleet that is up: its output directory and hosts.
#[derive(Debug)]
pub struct Fleet {
    pub name: String,
    /// target/testbed/NAME: inventory.toml, known_hosts, id_ed25519, hosts.json.
    pub dir: PathBuf,
    pub hosts: Vec<TestHost>,
}

/// The container from which tests send SIP traffic (the stand-in's `register` client).
#[derive(Debug, Clone, Deserialize)]
pub struct Attacker {
    pub container: String,
    pub address: String,
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The shared default fleet, brought up once per test binary. Do not mutate its hosts.
pub fn shared_fleet() -> &'static Fleet {
    static FLEET: OnceLock<Fleet> = OnceLock::new();
    FLEET.get_or_init(|| Fleet::up(SHARED_FLEET, 5))
}

/// The stand-in binary for the images. `FS_STANDIN_BIN` wins; otherwise a debug build of the
/// workspace member, which reuses what `cargo test --workspace` already compiled (a release build
/// would compile every dependency again on CI's two cores).
fn standin_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("FS_STANDIN_BIN") {
            return PathBuf::from(bin);
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "fs-standin"])
            .current_dir(repo_root())
            .status()
            .expect("run cargo to build fs-standin");
        assert!(
            status.success(),
            "cargo build -p fs-standin failed: the testbed needs the stand-in"
        );
        let dir = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join("target"));
        dir.join("debug").join("fs-standin")
    })
    .clone()
}

fn testbed(args: &[&str]) -> Output {
    let out = Command::new(repo_root().join("docker/testbed"))
        .args(args)
        .env("FS_STANDIN_BIN", standin_bin())
        .stdin(Stdio::null())
        .output()
        .expect("run docker/testbed");
    assert!(
        out.status.success(),
        "docker/testbed {} failed ({}); is the engine up (scripts/setup)?\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl Fleet {
    /// `docker/testbed up --name NAME --hosts N` (NAME after `FSFLEET_TESTBED_PREFIX`): reuses
    /// running hosts.
    pub fn up(name: &str, hosts: usize) -> Fleet {
        Self::bring_up(name, hosts, false)
    }

    /// Like [`Fleet::up`] but recreates every container: stock hosts for a test that mutates them.
    pub fn fresh(name: &str, hosts: usize) -> Fleet {
        Self::bring_up(name, hosts, true)
    }

    fn bring_up(name: &str, hosts: usize, recreate: bool) -> Fleet {
        let prefix = std::env::var("FSFLEET_TESTBED_PREFIX").unwrap_or_default();
        let name = format!("{prefix}{name}");
        let n = hosts.to_string();
        let mut args = vec!["up", "--name", &name, "--hosts", &n];
        if recreate {
            args.push("--recreate");
        }
        testbed(&args);
        let dir = repo_root().join("target/testbed").join(&name);
        let json = std::fs::read_to_string(dir.join("hosts.json")).expect("read hosts.json");
        let hosts: Vec<TestHost> = serde_json::from_str(&json).expect("parse hosts.json");
        Fleet { name, dir, hosts }
    }

    pub fn inventory(&self) -> PathBuf {
        self.dir.join("inventory.toml")
    }

    /// `fsfleet COMMAND INVENTORY ARGS... --no-progress` on this fleet (`args[0]`: the command).
    pub fn fsfleet(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_fsfleet"))
            .arg(args[0])
            .arg(self.inventory())
            .args(&args[1..])
            .arg("--no-progress")
            .output()
            .expect("run fsfleet")
    }

    pub fn identity(&self) -> PathBuf {
        self.dir.join("id_ed25519")
    }

    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }

    pub fn host(&self, name: &str) -> &TestHost {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("fleet {} has no host {name}", self.name))
    }

    /// The system ssh client with the fleet's key and known_hosts, strict host key checking.
    pub fn ssh_command(&self, host: &TestHost) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.arg("-i")
            .arg(self.identity())
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                self.known_hosts().display()
            ))
            .args([
                "-o",
                "GlobalKnownHostsFile=/dev/null",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "ConnectTimeout=10",
                "-p",
            ])
            .arg(host.port.to_string())
            .arg(format!("{}@{}", host.user, host.address));
        cmd
    }

    /// Run a shell script on the host as its login user; returns the raw output.
    pub fn ssh(&self, host: &TestHost, script: &str) -> Output {
        run_with_stdin(self.ssh_command(host).arg("sh -s"), script)
    }

    /// Run a shell script as root (through `sudo -n` for a non-root login); panics unless it
    /// exits 0, and returns its stdout.
    pub fn ssh_root(&self, host: &TestHost, script: &str) -> String {
        let shell = if host.user == "root" {
            "sh -s"
        } else {
            "sudo -n sh -s"
        };
        let out = run_with_stdin(self.ssh_command(host).arg(shell), script);
        assert!(
            out.status.success(),
            "{} ({}:{}): script failed ({}):\n{script}\nstderr: {}",
            host.name,
            host.address,
            host.port,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The fleet's attacker container (started on first use).
    pub fn attacker(&self) -> Attacker {
        testbed(&["attacker", "--name", &self.name]);
        let json =
            std::fs::read_to_string(self.dir.join("attacker.json")).expect("read attacker.json");
        serde_json::from_str(&json).expect("parse attacker.json")
    }
}

fn run_with_stdin(cmd: &mut Command, input: &str) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ssh");
    child
        .stdin
        .take()
        .expect("child stdin")
        .write_all(input.as_bytes())
        .expect("write script to ssh");
    child.wait_with_output().expect("wait for ssh")
}

/// Final outcome of a SIP REGISTER sent with the stand-in's test client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Register {
    /// 200 OK
    Ok,
    /// 403 Forbidden
    Forbidden,
    /// No final answer in time.
    Timeout,
}

impl Attacker {
    /// REGISTER as `user` with `password` at `target:port` (UDP). The password travels in the
    /// environment of `docker exec`, never in argv.
    pub fn register(&self, target: &str, port: u16, user: &str, password: &str) -> Register {
        let out = Command::new("docker")
            .args([
                "exec",
                "-e",
                "SIP_PASSWORD",
                &self.container,
                "/usr/bin/freeswitch",
                "register",
            ])
            .arg("--target")
            .arg(format!("{target}:{port}"))
            .args(["--user", user])
            .env("SIP_PASSWORD", password)
            .stdin(Stdio::null())
            .output()
            .expect("docker exec the SIP test client");
        match out.status.code() {
            Some(0) => Register::Ok,
            Some(1) => Register::Forbidden,
            Some(2) => Register::Timeout,
            other => panic!(
                "SIP test client in {} exited {other:?}: {}",
                self.container,
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }
}

impl Attacker {
    /// Send `request` byte for byte (folds, bare CRs, escapes: whatever the test crafted) as one
    /// UDP datagram to `target:port` with the stand-in's `sip-raw`, fed through stdin; the first
    /// final answer, or None when none came within 3 s.
    pub fn sip_raw(&self, target: &str, port: u16, request: &[u8]) -> Option<String> {
        use std::io::Write;
        let mut child = Command::new("docker")
            .args([
                "exec",
                "-i",
                &self.container,
                "/usr/bin/freeswitch",
                "sip-raw",
            ])
            .arg("--target")
            .arg(format!("{target}:{port}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("docker exec sip-raw");
        child
            .stdin
            .take()
            .expect("child stdin")
            .write_all(request)
            .expect("write the request to sip-raw");
        let out = child.wait_with_output().expect("wait for sip-raw");
        match out.status.code() {
            Some(0) => Some(String::from_utf8_lossy(&out.stdout).into_owned()),
            Some(2) => None,
            other => panic!(
                "sip-raw in {} exited {other:?}: {}",
                self.container,
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }
}

/// What the controller gets from a TCP port: refused, or everything the peer sends until it
/// closes (or `wait` passes).
pub fn tcp_probe(addr: SocketAddr, wait: Duration) -> Result<String, std::io::Error> {
    let mut stream = TcpStream::connect_timeout(&addr, wait)?;
    stream.set_read_timeout(Some(wait))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => return Err(e),
        }
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Does `line` have the 1.10.12 log prefix `YYYY-MM-DD HH:MM:SS.uuuuuu NN.NN% ` (FACTS §4)?
/// Returns the rest of the line after the prefix.
pub fn strip_log_prefix(line: &str) -> Option<&str> {
    let (date, rest) = line.split_once(' ')?;
    let (time, rest) = rest.split_once(' ')?;
    let (idle, rest) = rest.split_once(' ')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let date_ok = date.len() == 10
        && date.split('-').map(|p| p.len()).eq([4, 2, 2])
        && date.split('-').all(digits);
    let (hms, micros) = time.split_once('.')?;
    let time_ok = hms.len() == 8
        && hms.split(':').map(|p| p.len()).eq([2, 2, 2])
        && hms.split(':').all(digits);
    let micros_ok = micros.len() == 6 && digits(micros);
    let idle = idle.strip_suffix('%')?;
    let (int, frac) = idle.split_once('.')?;
    let idle_ok = digits(int) && int.len() <= 3 && frac.len() == 2 && digits(frac);
    (date_ok && time_ok && micros_ok && idle_ok).then_some(rest)
}

/// `[WARNING] sofia_reg.c:NNNN MESSAGE` with any line number (they differ by version).
pub fn strip_sofia_reg_warning(rest: &str) -> Option<&str> {
    let rest = rest.strip_prefix("[WARNING] sofia_reg.c:")?;
    let (line_no, msg) = rest.split_once(' ')?;
    (!line_no.is_empty() && line_no.bytes().all(|b| b.is_ascii_digit())).then_some(msg)
}

pub fn read_to_string(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Samples the command lines of every process on a fleet's hosts (every ~100 ms) until stopped:
/// proof that no secret ever travels in argv on the hosts.
pub struct ArgvSampler {
    threads: Vec<(String, std::thread::JoinHandle<String>)>,
}

impl ArgvSampler {
    /// Start sampling on every host of the fleet. Bounded: stops by itself after ~10 minutes.
    pub fn start(fleet: &Fleet) -> ArgvSampler {
        let threads = fleet
            .hosts
            .iter()
            .map(|h| {
                let container = h.container.clone();
                let _ = Command::new("docker")
                    .args(["exec", &container, "rm", "-f", "/run/fsfleet-test-stop-sampling"])
                    .output();
                let handle = std::thread::spawn(move || {
                    let script = "i=0; while [ ! -e /run/fsfleet-test-stop-sampling ] && [ $i -lt 6000 ]; do \
                                  for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < \"$f\" 2>/dev/null; echo; done; \
                                  i=$((i+1)); sleep 0.1; done";
                    let out = Command::new("docker")
                        .args(["exec", &container, "sh", "-c", script])
                        .output()
                        .expect("docker exec the argv sampler");
                    String::from_utf8_lossy(&out.stdout).into_owned()
                });
                (h.container.clone(), handle)
            })
            .collect();
        ArgvSampler { threads }
    }

    /// Stop sampling; every distinct command line seen, per container.
    pub fn stop(self) -> Vec<(String, String)> {
        self.threads
            .into_iter()
            .map(|(container, handle)| {
                let _ = Command::new("docker")
                    .args([
                        "exec",
                        &container,
                        "touch",
                        "/run/fsfleet-test-stop-sampling",
                    ])
                    .output();
                let text = handle.join().expect("sampler thread");
                let mut lines: Vec<&str> = text.lines().collect();
                lines.sort_unstable();
                lines.dedup();
                (container, lines.join("\n"))
            })
            .collect()
    }
}

/// Directories a [`Snapshot`] skips: what the system changes by itself while fsfleet runs
/// (logs, caches, package and systemd state, sudo's timestamps, fail2ban's and FreeSWITCH's
/// runtime databases, mail and spools) and fsfleet's own backups.
pub const SNAPSHOT_VOLATILE: &[&str] = &[
    "/var/log",
    "/var/cache",
    "/var/tmp",
    "/var/lib/apt",
    "/var/lib/dpkg",
    "/var/lib/systemd",
    "/var/lib/sudo",
    "/var/lib/fail2ban",
    "/var/lib/freeswitch",
    "/var/spool",
    "/var/mail",
    "/var/backups/fsfleet",
];

/// Every directory, regular file and symlink under /etc /root /usr /var of a host (minus
/// [`SNAPSHOT_VOLATILE`]): type, mode, owner, group, and the sha256 of a file or the target of a
/// link. Taken with `docker exec` as root, so taking it logs nobody in and changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub entries: std::collections::BTreeMap<String, String>,
}

impl Snapshot {
    pub fn take(host: &TestHost) -> Snapshot {
        let prune = SNAPSHOT_VOLATILE
            .iter()
            .map(|d| format!("-path {d}"))
            .collect::<Vec<_>>()
            .join(" -o ");
        let roots = "/etc /root /usr /var";
        let script = format!(
            "find {roots} \\( {prune} \\) -prune -o \\( -type f -printf 'f\\t%m %u %g %s\\t%p\\n' \
             -o -type l -printf 'l\\t%m %u %g %l\\t%p\\n' -o -type d -printf 'd\\t%m %u %g\\t%p\\n' \\) \
             && echo '@@sha' && find {roots} \\( {prune} \\) -prune -o -type f -print0 | xargs -0 -r sha256sum"
        );
        let out = Command::new("docker")
            .args(["exec", &host.container, "sh", "-c", &script])
            .stdin(Stdio::null())
            .output()
            .expect("docker exec the snapshot");
        assert!(
            out.status.success(),
            "snapshot of {}: {}",
            host.container,
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let (listing, sums) = text.split_once("@@sha\n").expect("snapshot output");
        let mut entries = std::collections::BTreeMap::new();
        for line in listing.lines() {
            let mut f = line.splitn(3, '\t');
            if let (Some(kind), Some(meta), Some(path)) = (f.next(), f.next(), f.next()) {
                entries.insert(path.to_string(), format!("{kind} {meta}"));
            }
        }
        for line in sums.lines() {
            if let Some((sum, path)) = line.split_once("  ")
                && let Some(e) = entries.get_mut(path)
            {
                e.push(' ');
                e.push_str(sum);
            }
        }
        Snapshot { entries }
    }

    /// The paths added, removed or changed (type, mode, owner, group, size, content, link
    /// target) since `self`, each with what it was and is.
    pub fn changed(&self, after: &Snapshot) -> Vec<String> {
        let mut out = Vec::new();
        for (path, was) in &self.entries {
            match after.entries.get(path) {
                None => out.push(format!("{path}: removed (was {was})")),
                Some(now) if now != was => out.push(format!("{path}: {was} -> {now}")),
                Some(_) => {}
            }
        }
        for (path, now) in &after.entries {
            if !self.entries.contains_key(path) {
                out.push(format!("{path}: added ({now})"));
            }
        }
        out
    }
}

/// The value of `key = value` in one `[section]` of the jail file.
pub fn jail_value(jail: &str, section: &str, key: &str) -> Option<String> {
    let header = format!("[{section}]");
    let mut inside = false;
    for line in jail.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            inside = t == header;
            continue;
        }
        if let Some((k, v)) = t.split_once('=')
            && inside
            && k.trim() == key
        {
            return Some(v.trim().to_string());
        }
    }
    None
}

/// A command's stdout and stderr, for an assertion message.
pub fn output_text(o: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Every proof of [`fsfleet::model::fail2ban::PROVEN`] for the host's fail2ban version is made
/// again with the host's fail2ban-regex and must say the same; when the table covers that
/// version it must hold all four (else the lines to add are printed: regenerate them here).
pub fn remade_proofs_agree_with_the_table(fleet: &Fleet, h: &TestHost) {
    use fsfleet::model::fail2ban::{PROOF_SECTION, PROVEN, Proof, proof_snippet_in};
    let version = fleet
        .ssh_root(h, "dpkg-query -W -f '${Version}' fail2ban")
        .trim()
        .to_string();
    fleet.ssh_root(
        h,
        "rm -rf /tmp/fsfleet-proofs && mkdir -p /tmp/fsfleet-proofs && cd /tmp/fsfleet-proofs \
         && for v in debian fsfleet; do cp -a /etc/fail2ban $v && rm -rf $v/jail.conf $v/jail.local $v/jail.d; done \
         && rm debian/filter.d/freeswitch.local && test -f fsfleet/filter.d/freeswitch.local \
         && printf '2026-11-30 02:36:15.123456 97.50%% [NOTICE] switch.c:1 up\\n' >percent.log \
         && printf '2026-11-30 02:36:17.000000 [INFO] switch.c:1 up\\n' >plain.log",
    );
    let mut missing = Vec::new();
    for (filter, what) in [
        ("debian", "Debian's freeswitch.conf"),
        ("fsfleet", "fsfleet's freeswitch.local"),
    ] {
        for format in ["percent", "plain"] {
            let conf = format!("/tmp/fsfleet-proofs/{filter}");
            let logs = [format!("/tmp/fsfleet-proofs/{format}.log")];
            let mut script = fsfleet::facts::Script::new();
            script.add(PROOF_SECTION, &proof_snippet_in(&conf, &logs, None, false));
            let out = fleet.ssh_root(h, script.text());
            let sections = script
                .parse(out.as_bytes())
                .unwrap_or_else(|e| panic!("{filter} {format}: {e}\n{out}"));
            let p = Proof::resolve(
                sections.text(PROOF_SECTION),
                sections.status(PROOF_SECTION),
                None,
            )
            .unwrap_or_else(|e| panic!("{filter} {format}: {e}\n{out}"));
            assert_eq!(p.format, format, "{out}");
            let (Some(key), Some(lines)) = (p.key.as_deref(), p.lines.as_deref()) else {
                panic!("{filter} {format}: no key or result:\n{out}");
            };
            match PROVEN.iter().find(|e| e.key == key) {
                Some(e) => {
                    assert_eq!(e.lines, lines, "the table's proof {e:?} is wrong here");
                    assert_eq!(
                        (e.fail2ban, e.filter, e.format),
                        (version.as_str(), what, format)
                    );
                }
                None => missing.push(format!(
                    "    Proven {{\n        key: \"{key}\",\n        lines: \"{lines}\",\n        \
                     fail2ban: \"{version}\",\n        filter: \"{what}\",\n        format: \"{format}\",\n    }},"
                )),
            }
        }
    }
    let table_has_version = PROVEN.iter().any(|e| e.fail2ban == version);
    if !missing.is_empty() {
        let lines = missing.join("\n");
        assert!(
            !table_has_version,
            "fail2ban {version}: the table lacks these proofs (a filter changed?); \
             put them in PROVEN (src/model/fail2ban.rs):\n{lines}"
        );
        eprintln!(
            "note: fail2ban {version} is not in fsfleet's table of proofs (audits run \
             fail2ban-regex on such hosts); to add it, put these in PROVEN:\n{lines}"
        );
    }
    fleet.ssh_root(h, "rm -rf /tmp/fsfleet-proofs");
}
