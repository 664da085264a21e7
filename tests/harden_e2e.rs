//! `fsfleet harden` end to end on a mixed fleet of real Debian hosts (docker/testbed):
//! `--check` changes nothing; harden brings every host to the baseline, checked on the hosts
//! themselves and from the controller; the vault holds the passwords the hosts use; a phone
//! registers with the new password; a second run changes nothing; no secret is ever printed.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::{Fleet, Register, TestHost};

const FLEET: &str = "harden-e2e";

fn fsfleet(fleet: &Fleet, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fsfleet"))
        .args(args)
        .arg(fleet.inventory())
        .args(["--no-progress", "-vv"])
        .output()
        .expect("run fsfleet")
}

fn text(o: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A checksum of the host's FreeSWITCH config tree and fs_cli configs.
fn conf_sum(fleet: &Fleet, h: &TestHost) -> String {
    fleet.ssh_root(
        h,
        &format!(
            "cd {} && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum; ls -la /etc/fs_cli.conf /root/.fs_cli_conf 2>&1 | sha256sum",
            h.conf_dir
        ),
    )
}

fn param(fleet: &Fleet, h: &TestHost, file: &str, name: &str) -> String {
    let out = fleet.ssh_root(
        h,
        &format!(
            "grep -o '<param name=\"{name}\" value=\"[^\"]*\"' {}/{file} | tail -n 1",
            h.conf_dir
        ),
    );
    out.trim()
        .rsplit("value=\"")
        .next()
        .unwrap_or("")
        .trim_end_matches('"')
        .to_string()
}

#[test]
fn harden_brings_a_mixed_fleet_to_the_baseline_idempotently_without_leaking_secrets() {
    let fleet = Fleet::fresh(FLEET, 5);
    let _ = std::fs::remove_dir_all(fleet.dir.join(".fsfleet"));

    // --check touches nothing.
    let before: Vec<String> = fleet.hosts.iter().map(|h| conf_sum(&fleet, h)).collect();
    let check = fsfleet(&fleet, &["harden", "--check", "--diff"]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
    let out = String::from_utf8_lossy(&check.stdout);
    assert!(out.contains("would rotate default_password"), "{out}");
    assert!(
        out.contains("default_password=********"),
        "masked diff: {out}"
    );
    let after: Vec<String> = fleet.hosts.iter().map(|h| conf_sum(&fleet, h)).collect();
    assert_eq!(before, after, "--check changed a host");

    // harden, while every process's argv on the hosts is sampled
    let sampler = common::ArgvSampler::start(&fleet);
    let run = fsfleet(&fleet, &["harden", "--format", "json"]);
    let argv = sampler.stop();
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).expect("one JSON document");
    for h in report["hosts"].as_array().unwrap() {
        assert_eq!(h["status"], "changed", "{h}");
        assert!(
            h["data"]["backup"]
                .as_str()
                .unwrap()
                .starts_with("/var/backups/fsfleet/"),
            "{h}"
        );
    }

    // fsfleet's own fail2ban-regex proofs hold on Debian 13 too (tests/fail2ban_ports_e2e.rs
    // re-proves them on Debian 12).
    for h in fleet.hosts.iter().filter(|h| h.distro == "trixie") {
        common::remade_proofs_agree_with_the_table(&fleet, h);
    }

    let vault: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fleet.dir.join(".fsfleet/vault.json")).unwrap(),
    )
    .unwrap();
    let mut secrets = Vec::new();
    for h in &fleet.hosts {
        let creds = &vault["hosts"][&h.name]["creds"];
        let sip = creds["sip_password"]["active"]["value"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: {vault}", h.name))
            .to_string();
        let esl = creds["esl_password"]["active"]["value"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            creds["sip_password"]["pending"].is_null()
                && creds["esl_password"]["pending"].is_null()
        );
        assert!(
            sip.len() >= 28 && esl.len() >= 28 && sip.chars().all(|c| c.is_ascii_alphanumeric())
        );

        // The files on the host hold the vault's passwords and the baseline settings.
        let vars = fleet.ssh_root(
            h,
            &format!("grep -o 'default_password=[^\"]*' {}/vars.xml", h.conf_dir),
        );
        assert_eq!(vars.trim(), format!("default_password={sip}"), "{}", h.name);
        let es = "autoload_configs/event_socket.conf.xml";
        assert_eq!(param(&fleet, h, es, "password"), esl, "{}", h.name);
        assert_eq!(param(&fleet, h, es, "listen-ip"), "127.0.0.1");
        assert_eq!(param(&fleet, h, es, "apply-inbound-acl"), "loopback.auto");
        for p in ["internal", "external", "internal-ipv6", "external-ipv6"] {
            assert_eq!(
                param(
                    &fleet,
                    h,
                    &format!("sip_profiles/{p}.xml"),
                    "log-auth-failures"
                ),
                "true",
                "{} {p}",
                h.name
            );
        }
        // Backups are root-only and hold the stock tree.
        let perms = fleet.ssh_root(
            h,
            "stat -c '%a %U' /var/backups/fsfleet; ls /var/backups/fsfleet/*/conf.tar.gz | wc -l",
        );
        assert!(perms.starts_with("700 root\n1\n"), "{}: {perms}", h.name);
        // fs_cli works without a password argument; the old default no longer does.
        let st = fleet.ssh_root(h, "fs_cli -x status");
        assert!(st.contains("is ready"), "{}: {st}", h.name);
        let stock = fleet.ssh_root(h, "fs_cli -p ClueCon -x status; echo rc=$?");
        assert!(
            stock.trim_end().ends_with("rc=255"),
            "{}: ClueCon still works: {stock}",
            h.name
        );
        let mode = fleet.ssh_root(h, "stat -c '%a %U' /etc/fs_cli.conf");
        assert_eq!(mode.trim(), "600 root");
        if h.user != "root" {
            let own = fleet.ssh(h, "stat -c '%a %U' ~/.fs_cli_conf && fs_cli -x status");
            let own = String::from_utf8_lossy(&own.stdout);
            assert!(
                own.starts_with(&format!("600 {}\n", h.user)) && own.contains("is ready"),
                "{}: {own}",
                h.name
            );
        }
        // From the controller, the Event Socket gives no greeting.
        let probe = common::tcp_probe(
            format!("{}:8021", h.address).parse().unwrap(),
            Duration::from_secs(2),
        );
        assert!(
            !probe.unwrap_or_default().contains("auth/request"),
            "{}: ESL reachable from the network",
            h.name
        );
        secrets.push(sip);
        secrets.push(esl);
    }

    // A phone with the new password registers; the old default is refused.
    let attacker = fleet.attacker();
    let h = &fleet.hosts[0];
    let sip = &secrets[0];
    assert_eq!(
        attacker.register(&h.address, 5060, "1000", sip),
        Register::Ok
    );
    assert_eq!(
        attacker.register(&h.address, 5060, "1000", "1234"),
        Register::Forbidden
    );

    // Nothing secret in anything fsfleet printed, nor in any command line on the hosts.
    let all = format!("{}{}", text(&check), text(&run));
    for s in &secrets {
        assert!(!all.contains(s.as_str()), "a generated secret was printed");
    }
    let sampled: usize = argv.iter().map(|(_, t)| t.lines().count()).sum();
    assert!(
        argv.iter().any(|(_, t)| t.contains("sh -c")),
        "the sampler saw fsfleet's remote commands ({sampled} distinct command lines)"
    );
    for (container, lines) in &argv {
        for s in &secrets {
            assert!(
                !lines.contains(s.as_str()),
                "a generated secret was in a process's argv on {container}"
            );
        }
    }

    // Second run: nothing changes, nothing rotates, nothing reloads.
    let vault_before = std::fs::read_to_string(fleet.dir.join(".fsfleet/vault.json")).unwrap();
    let sums: Vec<String> = fleet.hosts.iter().map(|h| conf_sum(&fleet, h)).collect();
    let again = fsfleet(&fleet, &["harden", "--format", "json"]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    let report: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    for h in report["hosts"].as_array().unwrap() {
        assert_eq!(h["status"], "ok", "second run changed something: {h}");
        let reload = h["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "reload")
            .unwrap();
        assert_eq!(reload["message"], "nothing to reload", "{h}");
    }
    assert_eq!(
        fleet
            .hosts
            .iter()
            .map(|h| conf_sum(&fleet, h))
            .collect::<Vec<_>>(),
        sums
    );
    let vault_after = std::fs::read_to_string(fleet.dir.join(".fsfleet/vault.json")).unwrap();
    let active = |v: &str| -> Vec<String> {
        let j: serde_json::Value = serde_json::from_str(v).unwrap();
        fleet
            .hosts
            .iter()
            .map(|h| j["hosts"][&h.name]["creds"]["esl_password"]["active"]["value"].to_string())
            .collect()
    };
    assert_eq!(
        active(&vault_before),
        active(&vault_after),
        "no rotation on the second run"
    );
    for s in &secrets {
        assert!(!text(&again).contains(s.as_str()));
    }

    // audit after harden: every baseline control passes on every host; the risks the baseline
    // leaves to the operator are still reported (exit 3) unless waived (exit 0).
    let catalogue: serde_json::Value = serde_json::from_slice(
        &Command::new(env!("CARGO_BIN_EXE_fsfleet"))
            .args(["audit", "--list-controls", "--format", "json"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let baseline: Vec<String> = catalogue
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["baseline"] == true)
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    let operator: Vec<String> = catalogue
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["baseline"] == false)
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    assert!(
        baseline.len() >= 15 && operator.contains(&"FS-DP-01".to_string()),
        "{catalogue}"
    );
    let audit = fsfleet(&fleet, &["audit", "--format", "json"]);
    assert_eq!(
        audit.status.code(),
        Some(3),
        "operator-owned risks remain: {}",
        text(&audit)
    );
    let doc: serde_json::Value = serde_json::from_slice(&audit.stdout).unwrap();
    for h in doc["hosts"].as_array().unwrap() {
        for r in h["results"].as_array().unwrap() {
            let id = r["id"].as_str().unwrap().to_string();
            if baseline.contains(&id) {
                assert_eq!(r["status"], "pass", "{} {id} after harden: {r}", h["name"]);
            }
        }
        let dp = h["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == "FS-DP-01")
            .unwrap();
        assert_eq!(
            dp["status"], "fail",
            "the stock sip_uri extension is the operator's to remove"
        );
    }
    let waive = operator.join(",");
    let audit = fsfleet(&fleet, &["audit", "--waive", &waive]);
    assert_eq!(audit.status.code(), Some(0), "{}", text(&audit));
    assert!(
        String::from_utf8_lossy(&audit.stdout).contains("waived"),
        "waivers are reported, never hidden"
    );
    for s in &secrets {
        assert!(!text(&audit).contains(s.as_str()));
    }

    // creds show masks unless --reveal.
    let show = Command::new(env!("CARGO_BIN_EXE_fsfleet"))
        .args(["creds", "show", &fleet.hosts[0].name])
        .arg(fleet.inventory())
        .output()
        .unwrap();
    assert!(show.status.success(), "{}", text(&show));
    assert!(!text(&show).contains(sip.as_str()) && text(&show).contains("********"));
    let reveal = Command::new(env!("CARGO_BIN_EXE_fsfleet"))
        .args(["creds", "show", &fleet.hosts[0].name, "--reveal"])
        .arg(fleet.inventory())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&reveal.stdout).contains(sip.as_str()));
}

/// The impact of a `default_password` rotation, end to end: a phone registered as user 1000
/// with the stock password makes harden refuse the rotation (naming the user and the flag)
/// while the rest of the run goes on; `--rotate-in-use` rotates and names the phone to
/// reprovision, which then needs the new password.
#[test]
fn a_registered_phone_holds_the_default_password_rotation_until_rotate_in_use() {
    let fleet = Fleet::fresh("harden-inuse", 1);
    let _ = std::fs::remove_dir_all(fleet.dir.join(".fsfleet"));
    let h = &fleet.hosts[0];
    let attacker = fleet.attacker();
    let vars = || {
        fleet
            .ssh_root(
                h,
                &format!("grep -o 'default_password=[^\"]*' {}/vars.xml", h.conf_dir),
            )
            .trim()
            .to_string()
    };
    assert_eq!(
        attacker.register(&h.address, 5060, "1000", "1234"),
        Register::Ok
    );
    let phone = format!("1000 (from {})", attacker.address);

    // --check says it would refuse, and why; the exit code says a step failed.
    let steps = "sip-password,auth-logging,reload";
    let check = fsfleet(&fleet, &["harden", "--check", "--only", steps]);
    let out = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(4), "{}", text(&check));
    assert!(
        out.contains("not rotating default_password")
            && out.contains(&format!("registered now: {phone}"))
            && out.contains("--rotate-in-use"),
        "{out}"
    );

    // The run refuses the rotation and still applies the rest (auth-logging).
    let run = fsfleet(&fleet, &["harden", "--only", steps]);
    let out = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(4), "{}", text(&run));
    assert!(out.contains(&format!("registered now: {phone}")), "{out}");
    assert_eq!(vars(), "default_password=1234", "rotated while in use");
    assert_eq!(
        param(&fleet, h, "sip_profiles/internal.xml", "log-auth-failures"),
        "true",
        "the rest of the baseline was not applied: {out}"
    );
    assert_eq!(
        attacker.register(&h.address, 5060, "1000", "1234"),
        Register::Ok
    );

    // --rotate-in-use rotates and lists the phone to reprovision.
    let run = fsfleet(&fleet, &["harden", "--only", steps, "--rotate-in-use"]);
    let out = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    assert!(
        out.contains("21 directory users log in with default_password (1000-1019, brian)")
            && out.contains(&format!(
                "registered now, their phones must be given the new password: {phone}"
            )),
        "{out}"
    );
    let new = vars();
    let new = new.strip_prefix("default_password=").unwrap_or_default();
    assert!(new.len() >= 28 && new != "1234", "not rotated");
    assert!(!out.contains(new), "the new password was printed");
    assert_eq!(
        attacker.register(&h.address, 5060, "1000", "1234"),
        Register::Forbidden
    );
    assert_eq!(
        attacker.register(&h.address, 5060, "1000", new),
        Register::Ok
    );
}

/// `fsfleet rollback` after a full harden: refused while a file carries a hand edit made since,
/// then every file back byte for byte (and the created ones gone), FreeSWITCH and fs_cli on the
/// restored passwords, the vault saying so; a second rollback is refused.
#[test]
fn rollback_undoes_a_harden_run_byte_for_byte() {
    let fleet = Fleet::fresh("harden-rollback", 1);
    let _ = std::fs::remove_dir_all(fleet.dir.join(".fsfleet"));
    let h = &fleet.hosts[0];
    let stock = conf_sum(&fleet, h);
    let run = fsfleet(&fleet, &["harden"]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    let hardened = conf_sum(&fleet, h);
    assert_ne!(stock, hardened);

    // A hand edit since the run: refused, naming the file, and nothing changes.
    let vars = format!("{}/vars.xml", h.conf_dir);
    fleet.ssh_root(h, &format!("echo '<!-- by hand -->' >> {vars}"));
    let edited = conf_sum(&fleet, h);
    let refused = fsfleet(&fleet, &["rollback"]);
    let out = text(&refused);
    assert_eq!(refused.status.code(), Some(4), "{out}");
    assert!(
        out.contains("changed since run") && out.contains(&vars) && out.contains("--force"),
        "{out}"
    );
    assert_eq!(
        conf_sum(&fleet, h),
        edited,
        "a refused rollback changed the host"
    );
    fleet.ssh_root(h, &format!("sed -i '$d' {vars}"));
    assert_eq!(conf_sum(&fleet, h), hardened);

    // --check says what it would do and does nothing.
    let check = fsfleet(&fleet, &["rollback", "--check", "--diff"]);
    let out = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
    assert!(
        out.contains("would restore")
            && out.contains("/etc/fs_cli.conf")
            && out.contains("would disable ufw (the run had enabled it)"),
        "{out}"
    );
    assert_eq!(conf_sum(&fleet, h), hardened);

    let run = fsfleet(&fleet, &["rollback"]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    assert_eq!(conf_sum(&fleet, h), stock, "not back to the stock files");
    assert_eq!(
        fleet
            .ssh_root(h, "ls /etc/fail2ban/jail.d/fsfleet-freeswitch.local /etc/fail2ban/filter.d/freeswitch.local 2>/dev/null | wc -l")
            .trim(),
        "0",
        "the fail2ban files the run created are still there"
    );
    // ufw is off again, as the run found it.
    let ufw = fleet.ssh_root(h, "ufw status");
    assert!(ufw.contains("Status: inactive"), "{ufw}");
    // FreeSWITCH runs the restored settings: fs_cli's defaults (ClueCon on 127.0.0.1) work, a
    // phone registers with the stock password again, and the vault holds what the host uses.
    let status = fleet.ssh_root(h, "fs_cli -x status");
    assert!(status.contains("is ready"), "{status}");
    assert_eq!(
        fleet.attacker().register(&h.address, 5060, "1000", "1234"),
        Register::Ok
    );
    let vault: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fleet.dir.join(".fsfleet/vault.json")).unwrap(),
    )
    .unwrap();
    let creds = &vault["hosts"][&h.name]["creds"];
    assert_eq!(
        creds["esl_password"]["active"]["value"], "ClueCon",
        "{creds}"
    );
    assert_eq!(creds["sip_password"]["active"]["value"], "1234", "{creds}");
    assert!(creds["esl_password"]["previous"]["value"].is_string());

    // A second rollback is refused: that run is undone.
    let again = fsfleet(&fleet, &["rollback"]);
    assert_eq!(again.status.code(), Some(4), "{}", text(&again));
    assert!(
        text(&again).contains("already rolled back"),
        "{}",
        text(&again)
    );
    assert_eq!(conf_sum(&fleet, h), stock);
}
