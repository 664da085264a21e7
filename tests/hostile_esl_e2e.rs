//! A local user sets a trap for the Event Socket password, and fsfleet does not walk into it.
//!
//! On a fresh fleet of two hosts, `mallory` (a plain local user of fs01) runs a fake Event Socket
//! that records every byte it gets, and `listen-ip` in event_socket.conf.xml (owned by the
//! `freeswitch` user, who edits it) points at it while FreeSWITCH itself listens on 127.0.0.1:
//! first on 127.0.0.2:8021, then on the host's own LAN address. `harden --check`, `harden` and
//! `audit` each refuse fs01 with a message naming the address, the port and mallory, the fake
//! receives no `auth` line, nothing under /etc /root /usr /var of fs01 changes, and fs02 (in the
//! same runs) is hardened and audited as usual. Last, mallory races FreeSWITCH for 127.0.0.1:8021
//! during `reload mod_event_socket` (the listener is gone for ~0.15 s): fsfleet proves the
//! listener again before sending the new password, finds mallory's, and stops.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Fleet, Snapshot, TestHost};

const FLEET: &str = "hesl";
const ESL_CONF: &str = "/etc/freeswitch/autoload_configs/event_socket.conf.xml";

/// The fake Event Socket: binds ADDR:PORT as soon as it can (retrying every 5 ms: the racer of
/// the reload), greets like FreeSWITCH, appends every byte received to RECORD, answers every
/// frame with `-ERR invalid`.
const FAKE_ESL: &str = r#"use strict; use warnings; use IO::Socket::INET;
my ($addr, $port, $rec) = @ARGV;
my $srv;
until ($srv = IO::Socket::INET->new(LocalAddr => $addr, LocalPort => $port, Listen => 16, ReuseAddr => 1, Proto => 'tcp')) {
    select(undef, undef, undef, 0.005);
}
open(my $r, '>', "$rec.ready") or die; close $r;
while (my $c = $srv->accept) {
    open(my $log, '>>', $rec) or die; binmode $log; $log->autoflush(1);
    print $log "[connection]\n";
    $c->autoflush(1);
    print $c "Content-Type: auth/request\n\n";
    my $buf = '';
    my $rin = ''; vec($rin, fileno($c), 1) = 1;
    while (select(my $rout = $rin, undef, undef, 5)) {
        my $n = sysread($c, my $chunk, 4096);
        last unless $n;
        print $log $chunk; $buf .= $chunk;
        if ($buf =~ /\n\n/) { print $c "Content-Type: command/reply\nReply-Text: -ERR invalid\n\n"; $buf = ''; }
    }
    close $c; close $log;
}
"#;

fn fsfleet(fleet: &Fleet, args: &[&str]) -> (serde_json::Value, String) {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_fsfleet"))
        .args(args)
        .arg(fleet.inventory())
        .args(["--no-progress", "--format", "json"])
        .stdin(Stdio::null())
        .output()
        .expect("run fsfleet");
    let text = format!(
        "fsfleet {args:?}: exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("one JSON document ({e}): {text}"));
    (doc, text)
}

fn host<'a>(doc: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    doc["hosts"]
        .as_array()
        .and_then(|h| h.iter().find(|h| h["name"] == name))
        .unwrap_or_else(|| panic!("no host {name} in {doc}"))
}

/// A root shell on the host without logging in (no trace in the host's files).
fn exec(h: &TestHost, script: &str) -> String {
    let out = Command::new("docker")
        .args(["exec", &h.container, "sh", "-c", script])
        .stdin(Stdio::null())
        .output()
        .expect("docker exec");
    assert!(
        out.status.success(),
        "{}: {script}\n{}",
        h.container,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Point `listen-ip` somewhere, as the `freeswitch` user (who owns the config tree), in place.
fn set_listen_ip(h: &TestHost, ip: &str) {
    exec(
        h,
        &format!(
            "runuser -u freeswitch -- sh -c 'chmod u+w {ESL_CONF} && \
             c=$(sed \"s/name=\\\"listen-ip\\\" value=\\\"[^\\\"]*\\\"/name=\\\"listen-ip\\\" value=\\\"{ip}\\\"/\" {ESL_CONF}) && \
             printf \"%s\\n\" \"$c\" > {ESL_CONF}' && grep -q 'value=\"{ip}\"' {ESL_CONF}"
        ),
    );
}

fn wait_for(h: &TestHost, what: &str, check: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = Command::new("docker")
            .args(["exec", &h.container, "sh", "-c", check])
            .output()
            .expect("docker exec");
        if out.status.success() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: {what} did not happen",
            h.name
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Start mallory's fake Event Socket on addr:port as a transient unit `unit`; its record is
/// `/home/mallory/<unit>.rec`. `wait`: until it listens.
fn start_fake(h: &TestHost, unit: &str, addr: &str, port: u16, wait: bool) -> String {
    let rec = format!("/home/mallory/{unit}.rec");
    exec(
        h,
        &format!(
            "systemd-run --quiet --unit={unit} --uid=mallory --gid=mallory \
             perl /home/mallory/fake-esl.pl {addr} {port} {rec}"
        ),
    );
    if wait {
        wait_for(h, "the fake Event Socket", &format!("test -e {rec}.ready"));
    }
    rec
}

fn record(h: &TestHost, rec: &str) -> String {
    exec(h, &format!("cat {rec} 2>/dev/null; true"))
}

/// `--check`, harden and audit with the trap set on fs01: each refuses fs01 naming the trap,
/// the fake gets no password, fs01 does not change, fs02 finishes.
fn trapped_runs(fleet: &Fleet, trap: &str, rec: &str, first: bool) {
    let (victim, other) = (fleet.host("fs01"), fleet.host("fs02"));
    let before = Snapshot::take(victim);
    let names_the_trap = |msg: &str| {
        msg.contains(&format!("{trap}:8021"))
            && msg.contains("uid ")
            && msg.contains("(mallory)")
            && msg.contains("no password")
    };

    let (doc, text) = fsfleet(fleet, &["harden", "--check"]);
    let v = host(&doc, "fs01");
    assert_eq!(v["status"], "failed", "{text}");
    assert!(names_the_trap(&v["error"].to_string()), "{text}");
    assert!(
        matches!(
            host(&doc, "fs02")["status"].as_str(),
            Some("ok" | "changed")
        ),
        "{text}"
    );

    let (doc, text) = fsfleet(fleet, &["harden"]);
    let v = host(&doc, "fs01");
    assert_eq!(v["status"], "failed", "{text}");
    let preflight = v["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "preflight"))
        .unwrap_or_else(|| panic!("no preflight step: {text}"));
    assert_eq!(preflight["status"], "failed", "{text}");
    assert!(
        names_the_trap(preflight["message"].as_str().unwrap_or("")),
        "{text}"
    );
    let o = host(&doc, "fs02");
    assert_eq!(
        o["status"],
        if first { "changed" } else { "ok" },
        "{}: {text}",
        other.name
    );

    let (doc, text) = fsfleet(fleet, &["audit"]);
    let v = host(&doc, "fs01");
    assert_eq!(v["status"], "audited", "{text}");
    let result = |h: &serde_json::Value, id: &str| {
        h["results"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["id"] == id))
            .cloned()
            .unwrap_or_else(|| panic!("{id}: {text}"))
    };
    let esl2 = result(v, "FS-ESL-02");
    assert_eq!(esl2["status"], "fail", "{esl2}");
    assert!(names_the_trap(&esl2["evidence"].to_string()), "{esl2}");
    let esl1 = result(v, "FS-ESL-01");
    assert!(
        esl1["evidence"]
            .to_string()
            .contains("no password was sent"),
        "{esl1}"
    );
    let o = host(&doc, "fs02");
    assert_eq!(o["status"], "audited", "{text}");
    assert_eq!(result(o, "FS-ESL-01")["status"], "pass", "{text}");

    let got = record(victim, rec);
    assert!(
        !got.contains("auth") && !got.contains("ClueCon"),
        "the fake Event Socket at {trap}:8021 received: {got:?}"
    );
    let changed = before.changed(&Snapshot::take(victim));
    assert!(changed.is_empty(), "fs01 changed: {changed:#?}");
}

#[test]
fn a_local_users_fake_event_socket_gets_no_password_and_the_host_is_refused() {
    let fleet = Fleet::fresh(FLEET, 2);
    let _ = std::fs::remove_dir_all(fleet.dir.join(".fsfleet"));
    let victim = fleet.host("fs01");

    // mallory: a plain local user with a fake Event Socket; FreeSWITCH on 127.0.0.1 only.
    exec(victim, "useradd -m -s /bin/sh mallory");
    let script_in = Command::new("docker")
        .args([
            "exec",
            "-i",
            &victim.container,
            "sh",
            "-c",
            "cat > /home/mallory/fake-esl.pl",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin
                .take()
                .expect("stdin")
                .write_all(FAKE_ESL.as_bytes())?;
            c.wait()
        })
        .expect("copy the fake Event Socket");
    assert!(script_in.success());
    set_listen_ip(victim, "127.0.0.1");
    exec(victim, "systemctl restart freeswitch");
    wait_for(
        victim,
        "FreeSWITCH listening on 127.0.0.1:8021",
        "ss -Hltne 'sport = :8021' | grep -q '^LISTEN .*127.0.0.1:8021 .* uid:999 '",
    );

    // 1. 127.0.0.2: any local user can listen on the whole of 127/8.
    let rec = start_fake(victim, "fake-esl-lo", "127.0.0.2", 8021, true);
    set_listen_ip(victim, "127.0.0.2");
    trapped_runs(&fleet, "127.0.0.2", &rec, true);
    assert_eq!(record(victim, &rec), "", "nothing connected to 127.0.0.2");

    // 2. The host's own LAN address (FreeSWITCH listens on 127.0.0.1 only, so it is free).
    exec(victim, "systemctl stop fake-esl-lo");
    let rec = start_fake(victim, "fake-esl-lan", &victim.address, 8021, true);
    set_listen_ip(victim, &victim.address);
    trapped_runs(&fleet, &victim.address, &rec, false);

    // 3. The reload race: listen-ip back to 127.0.0.1, mallory retries binding 127.0.0.1:8021
    //    every 5 ms and gets it in the ~0.15 s FreeSWITCH's listener is gone after `reload
    //    mod_event_socket`. harden proves the listener before the new password: refused.
    exec(victim, "systemctl stop fake-esl-lan");
    set_listen_ip(victim, "127.0.0.1");
    let rec = start_fake(victim, "fake-esl-race", "127.0.0.1", 8021, false);
    let (doc, text) = fsfleet(&fleet, &["harden"]);
    let v = host(&doc, "fs01");
    assert_eq!(v["status"], "failed", "{text}");
    let reload = v["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "reload"))
        .unwrap_or_else(|| panic!("no reload step: {text}"));
    let msg = reload["message"].as_str().unwrap_or("");
    assert_eq!(reload["status"], "failed", "{text}");
    assert!(
        msg.contains("after reload mod_event_socket")
            && msg.contains("127.0.0.1:8021")
            && msg.contains("(mallory)"),
        "{text}"
    );
    assert_eq!(host(&doc, "fs02")["status"], "ok", "{text}");
    let vault = std::fs::read_to_string(fleet.dir.join(".fsfleet/vault.json")).expect("vault");
    let vault: serde_json::Value = serde_json::from_str(&vault).expect("vault JSON");
    let pending = vault["hosts"]["fs01"]["creds"]["esl_password"]["pending"]["value"]
        .as_str()
        .unwrap_or_else(|| panic!("the new password stays pending: {vault}"))
        .to_string();
    let got = record(victim, &rec);
    assert!(
        !got.contains("auth") && !got.contains(&pending),
        "mallory's listener received: {got:?}"
    );
    exec(victim, "systemctl stop fake-esl-race");
}
