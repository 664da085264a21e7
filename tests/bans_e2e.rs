//! `fsfleet bans` on a hardened 3-host fleet (issue 16): an attacker that fails SIP auth on fs01
//! until fail2ban bans it is listed with the failures that led to the ban; `--share` (after a
//! `--check` that changes nothing) cuts it off SIP on fs02 and fs03 too, never banning the
//! controller's address nor an address in a host's `fail2ban_ignore`, and a second `--share`
//! changes nothing; `--unban` lets it back everywhere; a blocklist with a malformed line is
//! refused with its line number and no host changes, a good one bans on every host.

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::{Attacker, Fleet, Register, TestHost, output_text};

const FLEET: &str = "bans";
/// The inventory's default `fail2ban_maxretry`.
const MAXRETRY: usize = 5;
/// Banned by hand on fs01; fs03's inventory entry lists it in fail2ban_ignore.
const IGNORED: &str = "198.51.100.23";

fn banned(fleet: &Fleet, h: &TestHost) -> Vec<String> {
    fleet
        .ssh_root(h, "fail2ban-client get freeswitch banip")
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// What a host's fail2ban and firewall hold: the freeswitch jail's bans and its iptables chains.
fn ban_state(fleet: &Fleet, h: &TestHost) -> String {
    fleet.ssh_root(
        h,
        "fail2ban-client get freeswitch banip; iptables -S f2b-freeswitch-udp; iptables -S f2b-freeswitch-tcp",
    )
}

fn run(fleet: &Fleet, inventory: &std::path::Path, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_fsfleet"))
        .arg("bans")
        .arg(inventory)
        .args(args)
        .arg("--no-progress")
        .current_dir(&fleet.dir)
        .output()
        .expect("run fsfleet bans")
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("JSON: {e}\n{}", output_text(o)))
}

/// The attacker's wrong REGISTERs on `h` until fail2ban bans it there.
fn get_banned(fleet: &Fleet, attacker: &Attacker, h: &TestHost) {
    assert_eq!(
        attacker.register(&h.address, 5060, "1000", "guess0"),
        Register::Forbidden,
        "SIP on {} is open to the attacker before any ban",
        h.name
    );
    for i in 1..MAXRETRY {
        // About one failure per poll of the log (fail2ban polls the file about once a second).
        std::thread::sleep(Duration::from_millis(1200));
        let _ = attacker.register(&h.address, 5060, "1000", &format!("guess{i}"));
    }
    let start = Instant::now();
    while !banned(fleet, h).contains(&attacker.address) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{} not banned on {} after {MAXRETRY} failures:\n{}",
            attacker.address,
            h.name,
            fleet.ssh_root(
                h,
                "fail2ban-client status freeswitch; tail -n 20 /var/log/fail2ban.log"
            )
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn bans_are_listed_shared_across_the_fleet_lifted_and_imported() {
    let fleet = Fleet::fresh(FLEET, 3);
    let _ = std::fs::remove_dir_all(fleet.dir.join(".fsfleet"));
    let (a, b, c) = (&fleet.hosts[0], &fleet.hosts[1], &fleet.hosts[2]);
    // Before harden there is no fail2ban: every host fails, saying so.
    let unhardened = fleet.fsfleet(&["bans"]);
    assert_eq!(
        unhardened.status.code(),
        Some(4),
        "{}",
        output_text(&unhardened)
    );
    assert_eq!(
        String::from_utf8_lossy(&unhardened.stdout)
            .matches("fail2ban is not installed (run `fsfleet harden`)")
            .count(),
        3,
        "{}",
        output_text(&unhardened)
    );
    let hardened = fleet.fsfleet(&["harden"]);
    assert_eq!(
        hardened.status.code(),
        Some(0),
        "{}",
        output_text(&hardened)
    );

    // fs03 must never ban IGNORED (the inventory's fail2ban_ignore, read by `bans` only).
    let stock = common::read_to_string(&fleet.inventory());
    let marked = stock.replacen(
        "name = \"fs03\"\n",
        &format!("name = \"fs03\"\nfail2ban_ignore = [\"{IGNORED}\"]\n"),
        1,
    );
    assert_ne!(marked, stock, "the testbed inventory names fs03");
    let inventory = fleet.dir.join("inventory-bans.toml");
    std::fs::write(&inventory, marked).unwrap();

    let attacker = fleet.attacker();
    get_banned(&fleet, &attacker, a);
    // The controller's address as fs01 sees it, and IGNORED, banned on fs01 by hand.
    let controller = fleet
        .ssh_root(a, "echo \"${SSH_CONNECTION%% *}\"")
        .trim()
        .to_string();
    assert!(!controller.is_empty());
    fleet.ssh_root(
        a,
        &format!("fail2ban-client set freeswitch banip {controller} {IGNORED} >/dev/null"),
    );

    // The listing: fail2ban's own view, with the failures that led to the attacker's ban, in
    // one round trip per host.
    let listed = run(&fleet, &inventory, &["--format", "json", "-v"]);
    assert_eq!(listed.status.code(), Some(0), "{}", output_text(&listed));
    let doc = json(&listed);
    let fs = doc["hosts"][0]["data"]["jails"]["freeswitch"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let ban = fs
        .iter()
        .find(|b| b["address"] == attacker.address.as_str())
        .unwrap_or_else(|| panic!("the attacker is not listed on fs01: {doc}"));
    assert!(
        ban["failures"]
            .as_u64()
            .is_some_and(|f| f >= MAXRETRY as u64),
        "{ban}"
    );
    assert!(
        ban["since"].as_i64().is_some_and(|t| t > 1_700_000_000),
        "{ban}"
    );
    assert!(
        doc["hosts"][1]["data"]["jails"]["freeswitch"] == serde_json::json!([]),
        "{doc}"
    );
    let stderr = String::from_utf8_lossy(&listed.stderr);
    for h in &fleet.hosts {
        let scripts = stderr
            .lines()
            .filter(|l| l.starts_with(&format!("{}: ", h.name)) && l.contains(": exit "))
            .count();
        assert_eq!(scripts, 1, "one round trip per host:\n{stderr}");
    }
    let text = run(&fleet, &inventory, &[]);
    let out = String::from_utf8_lossy(&text.stdout);
    assert!(
        out.lines().any(|l| l.starts_with("fs01 ")
            && l.contains("freeswitch")
            && l.contains(&attacker.address)),
        "{out}"
    );

    // --check: the plan, nothing changed.
    let check = run(&fleet, &inventory, &["--share", "--check"]);
    assert_eq!(check.status.code(), Some(0), "{}", output_text(&check));
    let plan = String::from_utf8_lossy(&check.stdout);
    assert!(
        plan.contains(&format!("would ban {} (banned on fs01)", attacker.address)),
        "{plan}"
    );
    assert!(plan.contains("controller's address"), "{plan}");
    for h in [b, c] {
        assert!(
            !banned(&fleet, h).contains(&attacker.address),
            "--check banned on {}",
            h.name
        );
    }
    assert_eq!(
        attacker.register(&b.address, 5060, "1000", "probe"),
        Register::Forbidden,
        "fs02 answers the attacker before --share"
    );

    let shared = run(&fleet, &inventory, &["--share"]);
    assert_eq!(shared.status.code(), Some(0), "{}", output_text(&shared));
    for h in [b, c] {
        assert_eq!(
            attacker.register(&h.address, 5060, "1000", "probe"),
            Register::Timeout,
            "the attacker still reaches SIP on {} after --share:\n{}",
            h.name,
            output_text(&shared)
        );
        let now = banned(&fleet, h);
        assert!(
            !now.contains(&controller),
            "the controller was banned on {}",
            h.name
        );
    }
    assert!(banned(&fleet, b).iter().any(|x| x == IGNORED));
    assert!(
        !banned(&fleet, c).iter().any(|x| x == IGNORED),
        "fs03's fail2ban_ignore was banned there"
    );
    // Idempotent: a second share has nothing to do.
    let again = run(&fleet, &inventory, &["--share", "--format", "json"]);
    assert_eq!(again.status.code(), Some(0), "{}", output_text(&again));
    let doc = json(&again);
    for h in doc["hosts"].as_array().unwrap() {
        assert_eq!(h["status"], "ok", "{doc}");
    }

    // --unban: back everywhere.
    let unban = run(&fleet, &inventory, &["--unban", &attacker.address]);
    assert_eq!(unban.status.code(), Some(0), "{}", output_text(&unban));
    for h in [a, b, c] {
        assert!(!banned(&fleet, h).contains(&attacker.address), "{}", h.name);
        assert_eq!(
            attacker.register(&h.address, 5060, "1000", "probe"),
            Register::Forbidden,
            "the attacker does not reach SIP on {} after --unban",
            h.name
        );
    }

    // A blocklist with a malformed line: refused with its number, nothing changes on any host.
    let before: Vec<String> = fleet.hosts.iter().map(|h| ban_state(&fleet, h)).collect();
    let bad = fleet.dir.join("blocklist-bad.txt");
    std::fs::write(
        &bad,
        format!(
            "# VoIPBL style\n{}\n198.51.100.300\n2001:db8:77::/48\n",
            attacker.address
        ),
    )
    .unwrap();
    let refused = run(&fleet, &inventory, &["--import", bad.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(2), "{}", output_text(&refused));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("line 3: `198.51.100.300`"), "{err}");
    assert!(err.contains("nothing was changed"), "{err}");
    let after: Vec<String> = fleet.hosts.iter().map(|h| ban_state(&fleet, h)).collect();
    assert_eq!(before, after, "a refused list changed a host");
    let everything = fleet.dir.join("blocklist-all.txt");
    std::fs::write(&everything, "203.0.113.9\n0.0.0.0/0\n").unwrap();
    let refused = run(
        &fleet,
        &inventory,
        &["--import", everything.to_str().unwrap()],
    );
    assert_eq!(refused.status.code(), Some(2), "{}", output_text(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("line 2: refused: 0.0.0.0/0 is every IPv4 address"),
        "{}",
        output_text(&refused)
    );

    // A good list: --check changes nothing, then every host bans it.
    let good = fleet.dir.join("blocklist.txt");
    std::fs::write(
        &good,
        format!(
            "# APIBAN\n{}\n203.0.113.0/24 # a scanner's net\n",
            attacker.address
        ),
    )
    .unwrap();
    let check = run(
        &fleet,
        &inventory,
        &["--import", good.to_str().unwrap(), "--check"],
    );
    assert_eq!(check.status.code(), Some(0), "{}", output_text(&check));
    let after: Vec<String> = fleet.hosts.iter().map(|h| ban_state(&fleet, h)).collect();
    assert_eq!(before, after, "--import --check changed a host");
    let imported = run(&fleet, &inventory, &["--import", good.to_str().unwrap()]);
    assert_eq!(
        imported.status.code(),
        Some(0),
        "{}",
        output_text(&imported)
    );
    for h in [a, b, c] {
        let now = banned(&fleet, h);
        assert!(
            now.contains(&attacker.address) && now.iter().any(|x| x == "203.0.113.0/24"),
            "{}: {now:?}",
            h.name
        );
        assert_eq!(
            attacker.register(&h.address, 5060, "1000", "probe"),
            Register::Timeout,
            "the imported list does not cut the attacker off {}",
            h.name
        );
    }

    // A host whose fail2ban-client answers with something that is no address (root's PATH finds
    // /usr/local/sbin first): that host fails naming the line, the others are read, and nothing
    // of its answer is shared.
    fleet.ssh_root(
        c,
        &format!(
            "cat >/usr/local/sbin/fail2ban-client <<'EOF'\n{FAKE_CLIENT}EOF\n\
             chmod 755 /usr/local/sbin/fail2ban-client"
        ),
    );
    let forged = run(&fleet, &inventory, &["--share", "--check"]);
    fleet.ssh_root(c, "rm /usr/local/sbin/fail2ban-client");
    assert_eq!(forged.status.code(), Some(4), "{}", output_text(&forged));
    let out = String::from_utf8_lossy(&forged.stdout);
    assert!(
        out.contains("error: unexpected line in fail2ban's answer: 203.0.113.66;reboot"),
        "{out}"
    );
    assert!(out.lines().any(|l| l.starts_with("fs01  ")), "{out}");
    assert!(!out.contains("203.0.113.66 ("), "{out}");
}

/// A fail2ban-client that forges a ban of something that is no address.
const FAKE_CLIENT: &str = r#"#!/bin/sh
cat >/dev/null
printf 'fail2ban> @jail:freeswitch\n203.0.113.66;reboot \t2026-11-29 23:30:22 + 3600 = 2026-11-30 00:30:22\n@end\n'
"#;
