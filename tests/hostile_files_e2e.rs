//! Hostile hosts, files: a test acts as the `freeswitch` user (the one a SIP exploit gives) on
//! fs01 before and during `fsfleet harden`, while fs02 is an ordinary host of the same run.
//! Each scenario asserts that no file outside the intended set changed owner, mode or content
//! (checksums of /etc, /root, /usr and /var, volatile directories pruned), that the attacker's
//! target is untouched, that fs01 is refused with a message naming the cause (or hardened
//! without harm), and that fs02 finishes. docs/security.md lists what each scenario proves.

mod common;

use std::process::{Command, Output};

use common::{Fleet, Snapshot, TestHost};

/// Paths that changed between two snapshots, except those `allowed` says may change.
fn changed(a: &Snapshot, b: &Snapshot, allowed: impl Fn(&str) -> bool) -> Vec<String> {
    a.changed(b)
        .into_iter()
        .filter(|line| !allowed(line.split(':').next().unwrap_or(line)))
        .collect()
}

fn fsfleet(fleet: &Fleet, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fsfleet"))
        .args(args)
        .arg(fleet.inventory())
        .args(["--no-progress", "--format", "json"])
        .output()
        .expect("run fsfleet")
}

fn report(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

fn host_report<'a>(doc: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    doc["hosts"]
        .as_array()
        .and_then(|hs| hs.iter().find(|h| h["name"] == name))
        .unwrap_or_else(|| panic!("no report for {name}: {doc}"))
}

fn as_freeswitch(fleet: &Fleet, h: &TestHost, script: &str) -> String {
    fleet.ssh_root(
        h,
        &format!(
            "runuser -u freeswitch -- sh -c {}",
            fsfleet::ssh::sh_quote(script)
        ),
    )
}

const VICTIM: &str = "/etc/fsfleet-victim";

#[test]
fn a_hostile_freeswitch_user_gets_no_root_file_and_no_bad_value_into_fail2ban() {
    let fleet = Fleet::fresh("hostile-files", 2);
    let _ = std::fs::remove_dir_all(fleet.dir.join(".fsfleet"));
    let fs01 = fleet.host("fs01");
    // The baseline first (packages installed), so what changes later is only fsfleet's doing.
    let first = fsfleet(&fleet, &["harden"]);
    assert_eq!(first.status.code(), Some(0), "{}", report(&first));
    fleet.ssh_root(
        fs01,
        &format!("printf victim > {VICTIM}; chmod 600 {VICTIM}; chown root:root {VICTIM}"),
    );
    let victim =
        |fleet: &Fleet| fleet.ssh_root(fs01, &format!("stat -c '%U:%G %a' {VICTIM}; cat {VICTIM}"));
    let victim_before = victim(&fleet);

    // 1. The log file is a link to a root file that does not exist yet; fail2ban is down, so
    //    the fail2ban step runs and needs the log file.
    fleet.ssh_root(fs01, "systemctl stop fail2ban");
    as_freeswitch(
        &fleet,
        fs01,
        "rm -f /var/log/freeswitch/freeswitch.log && ln -s /etc/profile.d/fsfleet-pwn.sh /var/log/freeswitch/freeswitch.log",
    );
    let before = Snapshot::take(fs01);
    let run = fsfleet(&fleet, &["harden"]);
    let doc = report(&run);
    assert_eq!(run.status.code(), Some(4), "fs01 must fail: {doc}");
    let r1 = host_report(&doc, "fs01");
    assert!(
        r1.to_string().contains("freeswitch.log is a symbolic link"),
        "the refusal names the cause: {r1}"
    );
    assert_ne!(host_report(&doc, "fs02")["status"], "failed", "{doc}");
    let exists = fleet.ssh(fs01, "test -e /etc/profile.d/fsfleet-pwn.sh");
    assert!(!exists.status.success(), "root created the link's target");
    let diff = changed(&before, &Snapshot::take(fs01), |_| false);
    assert!(diff.is_empty(), "a refused host changed: {diff:#?}");

    // 2. The stage race: through a whole `--rotate` run, a loop as freeswitch replaces every
    //    stage file beside the configs with a link to a root-only file.
    as_freeswitch(&fleet, fs01, "rm -f /var/log/freeswitch/freeswitch.log");
    fleet.ssh_root(fs01, "systemctl start fail2ban");
    let racer = "cd /etc/freeswitch && end=$(($(date +%s) + 90)); \
                 while [ $(date +%s) -lt $end ]; do \
                 for f in $(find . -name '*.fsfleet-stage-*' -type f 2>/dev/null); do \
                 ln -sfn /etc/fsfleet-victim \"$f.x\" 2>/dev/null && mv -f \"$f.x\" \"$f\" 2>/dev/null; done; done";
    let mut race = fleet.ssh_command(fs01);
    race.arg(format!(
        "runuser -u freeswitch -- sh -c {} >/dev/null 2>&1 & echo $! > /tmp/.racer",
        fsfleet::ssh::sh_quote(racer)
    ));
    assert!(race.status().expect("start the racer").success());
    let before = Snapshot::take(fs01);
    let run = fsfleet(&fleet, &["harden", "--rotate"]);
    fleet.ssh_root(
        fs01,
        "pkill -u freeswitch -f fsfleet-stage || true; pkill -u freeswitch sh || true",
    );
    let doc = report(&run);
    assert_eq!(host_report(&doc, "fs02")["status"], "changed", "{doc}");
    let r1 = host_report(&doc, "fs01");
    let raced = r1["status"] == "failed";
    eprintln!(
        "stage race: fs01 {}",
        if raced {
            "refused (a stage was replaced)"
        } else {
            "hardened with fsfleet's files"
        }
    );
    if raced {
        assert!(r1.to_string().contains("replaced by someone else"), "{r1}");
    }
    assert_eq!(victim(&fleet), victim_before, "the root file changed");
    let conf = |p: &str| {
        p.starts_with("/etc/freeswitch/")
            || p == "/etc/fs_cli.conf"
            || p == "/root/.fs_cli_conf"
            || p.starts_with("/etc/fail2ban/")
    };
    let diff = changed(&before, &Snapshot::take(fs01), conf);
    assert!(
        diff.is_empty(),
        "files outside the configs changed: {diff:#?}"
    );
    // Nothing in the config tree belongs to someone new; unless fs01 was refused (the racer
    // may put its own link where a stage was), every config is a file fsfleet wrote.
    let foreign = fleet.ssh_root(fs01, "find /etc/freeswitch ! -user freeswitch ! -user root");
    assert_eq!(foreign.trim(), "", "foreign owners in the config tree");
    if !raced {
        let links = fleet.ssh_root(
            fs01,
            "find /etc/freeswitch -type l ! -name '*.fsfleet-stage-*'",
        );
        assert_eq!(
            links.trim(),
            "",
            "a config became a link yet fs01 reported success"
        );
    }
    if !raced {
        // The fail2ban step created the log file again, as FreeSWITCH's.
        let log = fleet.ssh_root(fs01, "stat -c '%F %U' /var/log/freeswitch/freeswitch.log");
        assert!(
            log.contains("regular") && log.trim().ends_with("freeswitch"),
            "{log}"
        );
    } else {
        // Refused before any system step: a clean re-run (racer gone) creates it.
        let again = fsfleet(&fleet, &["harden"]);
        assert_eq!(again.status.code(), Some(0), "{}", report(&again));
    }

    // 3. FreeSWITCH itself is hostile (the exploit runs inside it): its Event Socket, run by
    //    the freeswitch unit as its main process (so it is "FreeSWITCH's own listener"),
    //    answers a log_dir with a newline and a fail2ban action line.
    let fake = r#"use IO::Socket::INET;
my $s = IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => 8021, Listen => 5, ReuseAddr => 1) or die "bind: $!";
$SIG{ALRM} = sub { exit 0 }; alarm 120;
while (my $c = $s->accept) {
  print $c "Content-Type: auth/request\n\n";
  my $cmd = '';
  while (defined(my $l = <$c>)) {
    if ($l ne "\n") { $cmd = $l if $cmd eq ''; next; }
    chomp $cmd; my $q = $cmd; $cmd = '';
    if ($q =~ /^auth /) { print $c "Content-Type: command/reply\nReply-Text: +OK accepted\n\n"; next; }
    if ($q =~ /^exit/) { print $c "Content-Type: command/reply\nReply-Text: +OK bye\n\n"; last; }
    my $b = $q =~ /conf_dir/ ? "/etc/freeswitch"
          : $q =~ /log_dir/ ? "/var/log/freeswitch\naction = iptables[actionstart=\"touch /etc/fsfleet-pwned\"]"
          : $q =~ /^api status/ ? "UP 0 years, 0 days\nFreeSWITCH (Version 1.10.12-release  64bit) is ready\n"
          : "-ERR nosuchcmd Command not found!\n";
    print $c "Content-Type: api/response\nContent-Length: " . length($b) . "\n\n$b";
  }
  close $c;
}
"#;
    fleet.ssh_root(
        fs01,
        &format!("cat > /tmp/fake-esl.pl <<'EOF'\n{fake}EOF\nchmod 644 /tmp/fake-esl.pl"),
    );
    let dropin = "/etc/systemd/system/freeswitch.service.d";
    fleet.ssh_root(
        fs01,
        &format!(
            "mkdir -p {dropin} && printf '[Service]\\nExecStart=\\nExecStart=/usr/bin/perl /tmp/fake-esl.pl\\n' > {dropin}/zz-fake.conf \
             && systemctl daemon-reload && systemctl restart freeswitch && sleep 1"
        ),
    );
    let before = Snapshot::take(fs01);
    let run = fsfleet(&fleet, &["harden"]);
    let after = Snapshot::take(fs01);
    fleet.ssh_root(
        fs01,
        &format!("rm -rf {dropin} && systemctl daemon-reload && systemctl restart freeswitch"),
    );
    let doc = report(&run);
    assert_eq!(run.status.code(), Some(4), "{doc}");
    let r1 = host_report(&doc, "fs01").to_string();
    assert!(r1.contains("log_dir"), "the refusal names the value: {r1}");
    assert!(!r1.contains("log_dir\n"), "{r1}");
    assert_ne!(host_report(&doc, "fs02")["status"], "failed", "{doc}");
    let diff = changed(&before, &after, |_| false);
    assert!(diff.is_empty(), "a refused host changed: {diff:#?}");
    assert!(
        !fleet
            .ssh(fs01, "test -e /etc/fsfleet-pwned")
            .status
            .success()
    );
    assert_eq!(victim(&fleet), victim_before);

    // 4. A link planted (as freeswitch) at a file the run changes, pointing at a root-only file
    //    that reads like it: the backup keeps the link, never a copy of the root file, and a
    //    rollback refuses instead of writing anything back.
    let vars = "/etc/freeswitch/vars.xml";
    let secret_copy = format!("{VICTIM}-vars");
    fleet.ssh_root(
        fs01,
        &format!(
            "cp {vars} {secret_copy} && chown root:root {secret_copy} && chmod 600 {secret_copy} \
             && cp -p {vars} /root/.vars-saved"
        ),
    );
    as_freeswitch(
        &fleet,
        fs01,
        &format!("rm -f {vars} && ln -s {secret_copy} {vars}"),
    );
    let run = fsfleet(&fleet, &["harden", "--rotate", "--only", "sip-password"]);
    assert_eq!(run.status.code(), Some(4), "{}", report(&run));
    let copied = fleet.ssh_root(
        fs01,
        &format!(
            "d=$(ls -1d /var/backups/fsfleet/*/ | sort | tail -n 1); \
             if [ -L \"$d/files{vars}\" ]; then echo link; elif [ -e \"$d/files{vars}\" ]; then echo copy; else echo none; fi"
        ),
    );
    assert_eq!(
        copied.trim(),
        "link",
        "the backup followed the planted link"
    );
    let back = fsfleet(&fleet, &["rollback", "--diff"]);
    assert_eq!(back.status.code(), Some(4), "{}", report(&back));
    assert!(
        back_text(&back).contains("no longer a regular file"),
        "{}",
        back_text(&back)
    );
    assert_eq!(
        fleet
            .ssh_root(fs01, &format!("stat -c '%U:%G %a %F' {secret_copy}"))
            .trim(),
        "root:root 600 regular file"
    );
    fleet.ssh_root(
        fs01,
        &format!("rm -f {vars} && mv /root/.vars-saved {vars} && rm -f {secret_copy}"),
    );
}

fn back_text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
