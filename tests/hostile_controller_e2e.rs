//! A hostile host against the controller (issue 12, findings 5 and 9), on a fleet of two fresh
//! hosts (docker/testbed):
//! - a `default_password` full of shell metacharacters is rotated, never reaches the vault, and
//!   `creds export --format env` fed to `sh` sets exactly the vault's values and runs nothing;
//! - terminal escape sequences (ANSI CSI, OSC, 8-bit C1) in os-release, `hostname` and a config
//!   value reach `facts`, `harden --check` and `audit` text output only escaped;
//! - the vault's passwords follow the host key, not the name: the name of a hardened host pointed
//!   at another machine (accept-new, a fresh known_hosts) gets none of them, even when something
//!   on that machine listens where the Event Socket should be and records what it is sent.
//!
//! The tests share the fleet and take turns (each one leaves the hosts usable by the others).

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};

use common::Fleet;

const FLEET: &str = "hctl";

fn fleet() -> (&'static Fleet, MutexGuard<'static, ()>) {
    static FLEET_: OnceLock<Fleet> = OnceLock::new();
    static TURN: Mutex<()> = Mutex::new(());
    let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let fleet = FLEET_.get_or_init(|| {
        let f = Fleet::fresh(FLEET, 2);
        let _ = std::fs::remove_dir_all(f.dir.join(".fsfleet"));
        f
    });
    (fleet, turn)
}

fn fsfleet(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fsfleet"));
    cmd.args(args);
    if args[0] != "creds" {
        cmd.arg("--no-progress");
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run fsfleet")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn vault(fleet: &Fleet) -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(fleet.dir.join(".fsfleet/vault.json")).expect("read the vault"),
    )
    .expect("the vault is JSON")
}

/// Every value the vault holds for a host (pending, active, previous of both credentials).
fn vault_values(v: &serde_json::Value, host: &str) -> Vec<String> {
    let mut out = Vec::new();
    for kind in ["sip_password", "esl_password"] {
        for state in ["pending", "active", "previous"] {
            if let Some(s) = v["hosts"][host]["creds"][kind][state]["value"].as_str() {
                out.push(s.to_string());
            }
        }
    }
    out
}

/// Raw bytes a terminal acts on: C0 other than newline, DEL, and C1 in UTF-8 (C2 80..C2 9F).
fn raw_controls(bytes: &[u8]) -> Vec<String> {
    let mut bad = Vec::new();
    for (i, w) in bytes.iter().enumerate() {
        let next = bytes.get(i + 1).copied().unwrap_or(0);
        if (*w < 0x20 && *w != b'\n') || *w == 0x7f || (*w == 0xc2 && (0x80..0xa0).contains(&next))
        {
            let from = i.saturating_sub(30);
            bad.push(String::from_utf8_lossy(&bytes[from..(i + 10).min(bytes.len())]).into_owned());
        }
    }
    bad
}

#[test]
fn a_hostile_default_password_is_rotated_never_stored_and_the_export_is_eval_safe() {
    let (fleet, _turn) = fleet();
    let h = fleet.host("fs01");
    let work = tempfile::tempdir().unwrap();
    let pwned = work.path().join("pwned");
    // 20+ characters, so the old rule (16+ is strong) kept it and copied it into the vault.
    let hostile = format!("';touch {p};'$(touch {p})`touch {p}`", p = pwned.display());
    assert!(hostile.len() >= 20 && !hostile.contains('"'));
    let vars = format!("{}/vars.xml", h.conf_dir);
    // The value travels in a quoted heredoc and perl's %ENV: nothing on the way interprets it.
    fleet.ssh_root(
        h,
        &format!(
            "cat > /root/pw <<'EOF'\n{hostile}\nEOF\n\
             PW=$(cat /root/pw) perl -pi -e 's/default_password=[^\"]*\"/default_password=$ENV{{PW}}\"/' {vars}\n\
             rm /root/pw\n"
        ),
    );
    let line = fleet.ssh_root(h, &format!("grep -o 'default_password=[^\"]*' {vars}"));
    assert_eq!(line.trim(), format!("default_password={hostile}"));

    let inv = fleet.inventory();
    let inv = inv.to_str().unwrap();
    let skip = "packages,fail2ban,firewall";
    let check = fsfleet(
        &["harden", inv, "--limit", "fs01", "--check", "--diff"],
        &[],
    );
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
    let run = fsfleet(
        &["harden", inv, "--limit", "fs01", "--skip", skip, "-vv"],
        &[],
    );
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    // The check says what it would do, the run what it did.
    for (o, verb) in [(&check, "would rotate"), (&run, "rotated")] {
        let out = text(o);
        assert!(
            out.contains(&format!(
                "{verb} default_password in {vars} (was has characters fsfleet does not generate)"
            )),
            "{out}"
        );
        assert!(
            !out.contains(&pwned.display().to_string()),
            "the old value was printed: {out}"
        );
    }

    // The host now uses a generated password, and the old value is nowhere in the vault.
    let v = vault(fleet);
    let raw = std::fs::read_to_string(fleet.dir.join(".fsfleet/vault.json")).unwrap();
    assert!(!raw.contains(&pwned.display().to_string()), "{raw}");
    let sip = v["hosts"]["fs01"]["creds"]["sip_password"]["active"]["value"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_string();
    let now = fleet.ssh_root(h, &format!("grep -o 'default_password=[^\"]*' {vars}"));
    assert_eq!(now.trim(), format!("default_password={sip}"));
    assert!(
        v["hosts"]["fs01"]["host_key"]
            .as_str()
            .is_some_and(|k| k.starts_with("SHA256:")),
        "the entry is bound to fs01's host key: {v}"
    );

    // `eval "$(fsfleet creds export --format env)"` in sh and bash: the exact values, no side
    // effect.
    let export = fsfleet(&["creds", "export", inv, "--format", "env"], &[]);
    assert_eq!(export.status.code(), Some(0), "{}", text(&export));
    let esl = v["hosts"]["fs01"]["creds"]["esl_password"]["active"]["value"]
        .as_str()
        .unwrap()
        .to_string();
    for shell in ["sh", "bash"] {
        let mut child = Command::new(shell)
            .arg("-c")
            .arg(
                "eval \"$(cat)\"; printf '%s\\n%s' \"$FSFLEET_FS01_SIP_PASSWORD\" \"$FSFLEET_FS01_ESL_PASSWORD\"",
            )
            .current_dir(work.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(&export.stdout)
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{sip}\n{esl}")
        );
        assert!(!pwned.exists(), "{shell} ran a command from the export");
    }
}

#[test]
fn terminal_escapes_from_a_host_are_printed_escaped() {
    let (fleet, _turn) = fleet();
    let h = fleet.host("fs02");
    let internal = format!("{}/sip_profiles/internal.xml", h.conf_dir);
    // os-release, `hostname` and a config value that a compromised host controls, each with a
    // screen clear (CSI), a window title (OSC ... BEL) and an 8-bit CSI (U+009B).
    // Real ESC, BEL and U+009B bytes, written through quoted heredocs.
    let pretty = "Debian\x1b]0;os-owned\x07\x1b[2J\u{9b}31m 12";
    let name = "fs02\x1b]0;host-owned\x07\u{9b}2J";
    let value = "off\x1b[2J\u{9b}1m";
    fleet.ssh_root(
        h,
        &format!(
            "set -e
cp {internal} /root/internal.xml.orig
rm -f /etc/os-release
cat > /etc/os-release <<'EOF'
ID=debian
VERSION_ID=\"12\"
PRETTY_NAME=\"{pretty}\"
EOF
cat > /usr/local/sbin/hostname <<'EOF'
#!/bin/sh
cat <<'X'
{name}
X
EOF
chmod 755 /usr/local/sbin/hostname
hostname | grep -q host-owned
cat > /root/v <<'EOF'
{value}
EOF
V=$(cat /root/v) perl -pi -e 's/(name=\"log-auth-failures\" value=\")[^\"]*\"/$1$ENV{{V}}\"/' {internal}
rm /root/v
grep -q 'value=\"off' {internal}
"
        ),
    );
    let inv = fleet.inventory();
    let inv = inv.to_str().unwrap();
    let outputs = [
        ("facts", fsfleet(&["facts", inv, "--limit", "fs02"], &[])),
        (
            "harden --check",
            fsfleet(
                &["harden", inv, "--limit", "fs02", "--check", "--diff", "-vv"],
                &[],
            ),
        ),
        ("audit", fsfleet(&["audit", inv, "--limit", "fs02"], &[])),
    ];
    fleet.ssh_root(
        h,
        &format!(
            "cp /root/internal.xml.orig {internal} && ln -sf ../usr/lib/os-release /etc/os-release \
             && rm -f /usr/local/sbin/hostname"
        ),
    );
    for (what, o) in &outputs {
        assert!(
            matches!(o.status.code(), Some(0) | Some(3)),
            "{what}: {}",
            text(o)
        );
        for (stream, bytes) in [("stdout", &o.stdout), ("stderr", &o.stderr)] {
            let bad = raw_controls(bytes);
            assert!(bad.is_empty(), "{what} {stream}: raw controls in {bad:?}");
        }
    }
    let out = |what: &str| {
        let o = &outputs.iter().find(|(w, _)| *w == what).unwrap().1;
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let facts = out("facts");
    assert!(
        facts.contains("Debian\\x1b]0;os-owned\\x07\\x1b[2J\\u{9b}31m 12"),
        "{facts}"
    );
    assert!(
        facts.contains("fs02\\x1b]0;host-owned\\x07\\u{9b}2J"),
        "{facts}"
    );
    let check = out("harden --check");
    assert!(check.contains("\\x1b]0;os-owned\\x07"), "{check}");
    let audit = out("audit");
    assert!(
        audit.contains("log-auth-failures is off\\x1b[2J\\u{9b}1m"),
        "{audit}"
    );
}

#[test]
fn a_name_pointed_at_another_host_key_gets_none_of_the_vaults_passwords() {
    let (fleet, _turn) = fleet();
    let fs02 = fleet.host("fs02");
    let inv = fleet.inventory();
    let inv = inv.to_str().unwrap();
    let vault_path = fleet.dir.join(".fsfleet/vault.json");
    if !vault_path.exists() || vault_values(&vault(fleet), "fs01").is_empty() {
        let run = fsfleet(
            &[
                "harden",
                inv,
                "--limit",
                "fs01",
                "--skip",
                "packages,fail2ban,firewall",
            ],
            &[],
        );
        assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    }
    let before = vault(fleet);
    // The passwords fsfleet generated for fs01 (the stock ClueCon it replaced is kept as
    // `previous`, but fs02 uses that one itself: its own fs_cli sends it to its own listener).
    let secrets: Vec<String> = vault_values(&before, "fs01")
        .into_iter()
        .filter(|s| s.len() >= 16)
        .collect();
    assert!(secrets.len() >= 2, "{before}");

    // On fs02, something that is not fs01's FreeSWITCH listens where the Event Socket is and
    // records every line it is sent (and refuses every password, so a client tries the next).
    let recorder = r#"use IO::Socket::INET;
my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 8021, Listen => 5, ReuseAddr => 1) or die "listen: $!";
open(my $log, '>>', '/root/esl-recorder.log') or die; $log->autoflush(1);
while (my $c = $s->accept) {
  print $c "Content-Type: auth/request\n\n";
  while (my $l = <$c>) {
    print $log $l;
    if ($l =~ /^auth /) { print $c "Content-Type: command/reply\nReply-Text: -ERR invalid\n\n"; last }
  }
  close $c;
}
"#;
    fleet.ssh_root(
        fs02,
        &format!(
            "systemctl stop freeswitch
             cat > /root/esl-recorder.pl <<'EOF'
{recorder}EOF
             rm -f /root/esl-recorder.log
             setsid perl /root/esl-recorder.pl </dev/null >/dev/null 2>&1 &
             echo $! > /root/esl-recorder.pid
             for i in $(seq 50); do
               perl -MIO::Socket::INET -e 'my $c = IO::Socket::INET->new(\"127.0.0.1:8021\") or exit 1; <$c>; <$c>; print $c \"auth recorder-self-test\\n\\n\"; <$c>' && break
               sleep 0.1
             done
             grep -q recorder-self-test /root/esl-recorder.log"
        ),
    );

    // The inventory name fs01 now reaches fs02's address; its key is new (accept-new, a fresh
    // known_hosts) and the operator's ssh config asks for hashed entries.
    let tmp = tempfile::tempdir().unwrap();
    let known = tmp.path().join("known_hosts");
    std::fs::write(&known, "").unwrap();
    std::fs::create_dir(tmp.path().join(".ssh")).unwrap();
    std::fs::write(
        tmp.path().join(".ssh/config"),
        "Host *\n  HashKnownHosts yes\n",
    )
    .unwrap();
    let moved = tmp.path().join("inventory.toml");
    std::fs::write(
        &moved,
        format!(
            "[[hosts]]\nname = \"fs01\"\naddress = \"{}\"\nport = {}\nuser = \"{}\"\n\
             identity_file = \"{}\"\nhost_key_policy = \"accept-new\"\n",
            fs02.address,
            fs02.port,
            fs02.user,
            fleet.identity().display()
        ),
    )
    .unwrap();
    let moved = moved.to_str().unwrap();
    let vault_arg = vault_path.to_str().unwrap();
    let known_arg = known.to_str().unwrap();
    let home: &[(&str, &Path)] = &[("HOME", tmp.path())];
    let mut runs = Vec::new();
    for check in [true, false] {
        let mut args = vec![
            "harden",
            moved,
            "--vault",
            vault_arg,
            "--known-hosts",
            known_arg,
            "-vv",
        ];
        if check {
            args.push("--check");
        }
        runs.push(fsfleet(&args, home));
    }
    let log = fleet.ssh_root(fs02, "cat /root/esl-recorder.log");

    // Restore fs02 before asserting, so the other tests find it as they expect.
    fleet.ssh_root(
        fs02,
        "kill $(cat /root/esl-recorder.pid); rm -f /root/esl-recorder.*; systemctl start freeswitch",
    );

    for s in &secrets {
        assert!(
            !log.contains(s.as_str()),
            "a password of fs01's vault entry was sent to fs02:\n{log}"
        );
    }
    let fp01 = before["hosts"]["fs01"]["host_key"]
        .as_str()
        .unwrap()
        .to_string();
    let fs02_keys = fleet.ssh_root(
        fs02,
        "for f in /etc/ssh/ssh_host_*_key.pub; do ssh-keygen -E sha256 -lf $f; done",
    );
    for o in &runs {
        assert_eq!(o.status.code(), Some(4), "{}", text(o));
        let out = text(o);
        let head = format!(
            "the vault's passwords for fs01 belong to host key {fp01}; this host presents "
        );
        // `SHA256:<base64>` ends at the next ':'.
        let presented = out
            .split(&head)
            .nth(1)
            .map(|rest| rest.split(':').take(2).collect::<Vec<_>>().join(":"))
            .unwrap_or_default();
        assert!(
            presented.starts_with("SHA256:") && fs02_keys.contains(&format!("{presented} ")),
            "not refused with both keys named ({presented:?} among\n{fs02_keys}):\n{out}"
        );
        assert!(
            out.contains(&format!("{presented}: they are not sent"))
                && out.contains("`fsfleet creds forget fs01`"),
            "{out}"
        );
        for s in &secrets {
            assert!(!out.contains(s.as_str()), "a secret was printed");
        }
    }
    assert_eq!(vault(fleet), before, "the other machine changed the vault");

    // The new key was recorded hashed, as the ssh config asks: no address in the file, and
    // OpenSSH finds it.
    let recorded = std::fs::read_to_string(&known).unwrap();
    assert!(
        recorded.starts_with("|1|") && !recorded.contains(&fs02.address),
        "{recorded}"
    );
    let found = Command::new("ssh-keygen")
        .args(["-F", &fs02.address, "-f", known_arg])
        .output()
        .unwrap();
    assert!(found.status.success(), "ssh-keygen -F does not find it");

    // The way out, when the machine really is fs01 now: forget, then harden as a new host.
    let forget = fsfleet(
        &["creds", "forget", "fs01", moved, "--vault", vault_arg],
        home,
    );
    assert_eq!(forget.status.code(), Some(0), "{}", text(&forget));
    assert!(
        String::from_utf8_lossy(&forget.stdout).contains("forgot fs01: "),
        "{}",
        text(&forget)
    );
    let again = fsfleet(
        &[
            "harden",
            moved,
            "--vault",
            vault_arg,
            "--known-hosts",
            known_arg,
            "--skip",
            "packages,fail2ban,firewall",
        ],
        home,
    );
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    let after = vault(fleet);
    let bound = after["hosts"]["fs01"]["host_key"]
        .as_str()
        .unwrap_or_default();
    assert!(
        bound != fp01 && fs02_keys.contains(&format!("{bound} ")),
        "{after}"
    );
    for s in &secrets {
        assert!(
            !vault_values(&after, "fs01").contains(s),
            "an old password survived the forget"
        );
    }
    // Leave the vault as the other tests expect it: nothing bound for fs01.
    let forget = fsfleet(
        &["creds", "forget", "fs01", moved, "--vault", vault_arg],
        home,
    );
    assert_eq!(forget.status.code(), Some(0), "{}", text(&forget));
}
