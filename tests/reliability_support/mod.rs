//! Helpers of the reliability tests (tests/reliability_*.rs): run fsfleet while injecting REAL
//! faults into the testbed when a host reaches a given stage, and check a host's state behind
//! fsfleet's back (config files, the passwords FreeSWITCH accepts, the vault).
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Fleet, TestHost};

/// The files the harden config steps edit, relative to the config dir.
pub const EDITED: &[&str] = &[
    "vars.xml",
    "autoload_configs/event_socket.conf.xml",
    "sip_profiles/internal.xml",
    "sip_profiles/external.xml",
    "sip_profiles/internal-ipv6.xml",
    "sip_profiles/external-ipv6.xml",
];

/// What to do to a host when fsfleet prints `HOST: STAGE` (at -v).
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Kill the host's sshd session processes: every connection of fsfleet to it drops at once.
    CutSsh,
    /// [`Fault::CutSsh`] with fsfleet stopped (SIGSTOP) from the moment the line is read until
    /// the connections are gone, then continued: the cut lands at the start of the stage (a few
    /// milliseconds after the line, not the hundred or so `docker exec` takes), before a fast
    /// stage such as one `reloadxml` can finish.
    CutSshAtStage,
    /// SIGKILL the controller itself.
    KillController,
}

pub struct RunOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl RunOutput {
    pub fn text(&self) -> String {
        format!("stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr)
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not one JSON document ({e}):\n{}", self.text()))
    }
    /// Each host's status in the JSON report, by name.
    pub fn statuses(&self) -> std::collections::BTreeMap<String, String> {
        self.json()["hosts"]
            .as_array()
            .expect("hosts")
            .iter()
            .map(|h| {
                (
                    h["name"].as_str().unwrap_or("").to_string(),
                    h["status"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }
}

pub fn fsfleet(fleet: &Fleet, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fsfleet"));
    c.args(args)
        .arg(fleet.inventory())
        .args(["--no-progress", "-v"])
        .stdin(Stdio::null());
    c
}

/// Run fsfleet, firing each fault once when its `host: stage` line appears on stderr.
pub fn run_with_faults(fleet: &Fleet, args: &[&str], faults: &[(&str, &str, Fault)]) -> RunOutput {
    let t = Instant::now();
    let mut child: Child = fsfleet(fleet, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn fsfleet");
    let mut out = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = BufReader::new(child.stderr.take().expect("stderr"));
    let mut stderr = String::new();
    let mut fired = vec![false; faults.len()];
    for line in err.lines() {
        let Ok(line) = line else { break };
        stderr.push_str(&line);
        stderr.push('\n');
        for (i, (host, stage, fault)) in faults.iter().enumerate() {
            if !fired[i] && line.trim() == format!("{host}: {stage}") {
                fired[i] = true;
                match fault {
                    Fault::CutSsh => cut_ssh(&fleet.host(host).container),
                    Fault::CutSshAtStage => {
                        let pid = child.id().to_string();
                        let _ = Command::new("kill").args(["-STOP", &pid]).status();
                        cut_ssh(&fleet.host(host).container);
                        let _ = Command::new("kill").args(["-CONT", &pid]).status();
                    }
                    Fault::KillController => {
                        // SAFETY-free: kill(2) on the child we spawned, by its pid.
                        let _ = Command::new("kill")
                            .args(["-KILL", &child.id().to_string()])
                            .status();
                    }
                }
            }
        }
    }
    let status = child.wait().expect("wait fsfleet");
    let stdout = reader.join().expect("stdout reader");
    for (i, f) in faults.iter().enumerate() {
        assert!(
            fired[i],
            "fault {f:?} never fired: the stage line did not appear:\n{stderr}"
        );
    }
    RunOutput {
        code: status.code(),
        stdout,
        stderr,
        elapsed: t.elapsed(),
    }
}

/// Drop every SSH connection to the host: SIGKILL its per-connection sshd processes
/// (`sshd: USER@notty`, `sshd: USER [priv]`), not the listener.
pub fn cut_ssh(container: &str) {
    let st = Command::new("docker")
        .args([
            "exec",
            container,
            "sh",
            "-c",
            "for p in $(pgrep -f '^sshd: [a-z_][a-z0-9_-]*( \\[priv\\]|@)'); do kill -9 $p; done; true",
        ])
        .status()
        .expect("docker exec");
    assert!(
        st.success(),
        "could not cut the SSH connections of {container}"
    );
}

pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run docker");
    assert!(
        out.status.success(),
        "docker {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// sha256 of each edited config file of the host, in [`EDITED`] order.
pub fn sums(fleet: &Fleet, h: &TestHost) -> Vec<String> {
    let files: Vec<String> = EDITED
        .iter()
        .map(|f| format!("{}/{f}", h.conf_dir))
        .collect();
    let out = fleet.ssh_root(h, &format!("sha256sum {}", files.join(" ")));
    out.lines()
        .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
        .collect()
}

/// The config files are entirely the old ones or entirely the new ones (among `which`, the
/// files the run changes). Returns true when they are the new ones.
pub fn all_old_or_all_new(host: &str, before: &[String], now: &[String], which: &[&str]) -> bool {
    let changed: Vec<&str> = EDITED
        .iter()
        .zip(before.iter().zip(now))
        .filter(|(f, (b, n))| which.contains(f) && b != n)
        .map(|(f, _)| *f)
        .collect();
    assert!(
        changed.is_empty() || changed.len() == which.len(),
        "{host}: a MIX of old and new config files: changed {changed:?} of {which:?}"
    );
    !changed.is_empty()
}

/// The Event Socket password in the host's config file, and `default_password` in vars.xml.
pub fn file_passwords(fleet: &Fleet, h: &TestHost) -> (String, String) {
    let out = fleet.ssh_root(
        h,
        &format!(
            "grep -o '<param name=\"password\" value=\"[^\"]*\"' {c}/autoload_configs/event_socket.conf.xml | tail -n 1 | sed 's/.*value=\"//; s/\"$//'; \
             grep -o 'default_password=[^\"]*' {c}/vars.xml | tail -n 1 | sed 's/^default_password=//'",
            c = h.conf_dir
        ),
    );
    let mut l = out.lines().map(str::to_string);
    (l.next().unwrap_or_default(), l.next().unwrap_or_default())
}

/// Does the host's running FreeSWITCH accept this Event Socket password? (`fs_cli -p` inside
/// the container; the password travels in the environment of docker exec.)
pub fn esl_accepts(h: &TestHost, pw: &str) -> bool {
    let out = Command::new("docker")
        .args([
            "exec",
            "-e",
            "PW",
            &h.container,
            "sh",
            "-c",
            "fs_cli -p \"$PW\" -x status",
        ])
        .env("PW", pw)
        .stdin(Stdio::null())
        .output()
        .expect("docker exec fs_cli");
    out.status.success() && String::from_utf8_lossy(&out.stdout).contains("is ready")
}

pub fn vault_path(fleet: &Fleet) -> PathBuf {
    fleet.dir.join(".fsfleet/vault.json")
}

pub fn vault(fleet: &Fleet) -> serde_json::Value {
    let p = vault_path(fleet);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|_| "{\"hosts\":{}}".into());
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not valid JSON ({e}):\n{text}", p.display()))
}

/// The active Event Socket password of every host of the fleet, from the vault, in host order.
pub fn active_esl_passwords(fleet: &Fleet) -> Vec<String> {
    let v = vault(fleet);
    fleet
        .hosts
        .iter()
        .map(|h| {
            v["hosts"][&h.name]["creds"]["esl_password"]["active"]["value"]
                .as_str()
                .unwrap_or_else(|| {
                    panic!("{}: no active Event Socket password in the vault", h.name)
                })
                .to_string()
        })
        .collect()
}

/// Every value (pending, active, previous) the vault holds for a host's credential.
pub fn vault_values(v: &serde_json::Value, host: &str, kind: &str) -> BTreeSet<String> {
    let c = &v["hosts"][host]["creds"][kind];
    ["pending", "active", "previous"]
        .iter()
        .filter_map(|s| c[*s]["value"].as_str().map(str::to_string))
        .collect()
}

/// After a fault: the configs are all old or all new; every Event Socket password the running
/// FreeSWITCH accepts (among the old one, the file's and the vault's) is in the vault (or is the
/// old one, when the host was not touched); the file's passwords are in the vault.
pub fn check_consistent(
    fleet: &Fleet,
    h: &TestHost,
    before: &[String],
    which: &[&str],
    old_esl: &str,
) {
    let now = sums(fleet, h);
    let new = all_old_or_all_new(&h.name, before, &now, which);
    let v = vault(fleet);
    let esl_vault = vault_values(&v, &h.name, "esl_password");
    let sip_vault = vault_values(&v, &h.name, "sip_password");
    let (file_esl, file_sip) = file_passwords(fleet, h);
    let mut candidates: BTreeSet<String> = esl_vault.clone();
    candidates.insert(old_esl.to_string());
    candidates.insert(file_esl.clone());
    let accepted: Vec<&String> = candidates.iter().filter(|p| esl_accepts(h, p)).collect();
    assert!(
        !accepted.is_empty(),
        "{}: FreeSWITCH accepts none of the old, the file's or the vault's Event Socket passwords: locked out",
        h.name
    );
    for pw in accepted {
        assert!(
            esl_vault.contains(pw) || (!new && pw == old_esl),
            "{}: FreeSWITCH accepts an Event Socket password the vault does not hold (configs new: {new})",
            h.name
        );
    }
    if new {
        assert!(
            esl_vault.contains(&file_esl) && sip_vault.contains(&file_sip),
            "{}: the new config files hold passwords the vault does not",
            h.name
        );
    }
}

/// After a complete run: the vault's active passwords are the files' and FreeSWITCH's, nothing
/// is left pending, fs_cli works without a password argument.
pub fn check_complete(fleet: &Fleet, h: &TestHost) {
    let v = vault(fleet);
    let c = &v["hosts"][&h.name]["creds"];
    let (file_esl, file_sip) = file_passwords(fleet, h);
    assert_eq!(
        c["esl_password"]["active"]["value"].as_str(),
        Some(file_esl.as_str()),
        "{}: vault's active Event Socket password is not the file's",
        h.name
    );
    assert_eq!(
        c["sip_password"]["active"]["value"].as_str(),
        Some(file_sip.as_str()),
        "{}: vault's active SIP password is not the file's",
        h.name
    );
    assert!(
        c["esl_password"]["pending"].is_null() && c["sip_password"]["pending"].is_null(),
        "{}: passwords left pending after a complete run",
        h.name
    );
    assert!(
        file_esl.len() >= 28 && file_sip.len() >= 28,
        "{}: weak passwords after a complete run",
        h.name
    );
    assert!(
        esl_accepts(h, &file_esl),
        "{}: FreeSWITCH does not run the password on disk (not reloaded)",
        h.name
    );
    assert!(
        !esl_accepts(h, "ClueCon"),
        "{}: FreeSWITCH still accepts ClueCon",
        h.name
    );
    let st = fleet.ssh_root(h, "fs_cli -x status");
    assert!(st.contains("is ready"), "{}: fs_cli: {st}", h.name);
    let listen = fleet.ssh_root(h, "ss -ltnH 'sport = :8021' | awk '{print $4}'");
    assert!(
        listen.lines().all(|l| l.starts_with("127.0.0.1:")) && !listen.trim().is_empty(),
        "{}: the running Event Socket listens on {listen}",
        h.name
    );
}

/// A stock host's Event Socket password.
pub const STOCK_ESL: &str = "ClueCon";
