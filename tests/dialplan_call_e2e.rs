//! A stock user's call to an international number, end to end on a fresh host whose stand-in
//! routes calls through the XML dialplan as FreeSWITCH 1.10.12 does (docker/fs-standin/src/
//! dialplan.rs): before the `dialplan` production step the stock `international.example.com`
//! extension takes it and bridges to the example gateway, which is not configured (484 Address
//! Incomplete, Reason INVALID_GATEWAY: the toll-fraud route is live); after `fsfleet harden --only
//! dialplan` (which reloads FreeSWITCH: the change is live) no gateway route is left for it and the
//! dialplan rejects it (it falls through to mod_enum, which finds no record: 480, Reason
//! NORMAL_CLEARING), while the echo extension 9196 still answers.

mod common;

use std::process::{Command, Stdio};

use common::{Attacker, Fleet, TestHost, output_text};

const FLEET: &str = "dialplan-call";
/// 011 + a London number: 15 digits, so neither the 7-digit local nor the 11-digit domestic
/// example route matches it, only the international one.
const INTERNATIONAL: &str = "011442071234567";

/// User 1000 calls `to` from the attacker container (the password in the environment, never in
/// argv): the exit code and what the client printed.
fn call(attacker: &Attacker, h: &TestHost, to: &str, password: &str) -> (Option<i32>, String) {
    let out = Command::new("docker")
        .args(["exec", "-e", "SIP_PASSWORD", &attacker.container])
        .args(["/usr/bin/freeswitch", "call", "--user", "1000", "--to", to])
        .args(["--hold-ms", "300"])
        .arg("--target")
        .arg(format!("{}:5060", h.address))
        .env("SIP_PASSWORD", password)
        .stdin(Stdio::null())
        .output()
        .expect("docker exec the SIP test client");
    (out.status.code(), output_text(&out))
}

#[test]
fn an_international_call_from_a_stock_user_is_rejected_by_the_dialplan_after_the_step() {
    let fleet = Fleet::fresh(FLEET, 1);
    let _ = std::fs::remove_dir_all(fleet.dir.join(".fsfleet"));
    let h = &fleet.hosts[0];
    let attacker = fleet.attacker();
    // The stock users' shared password, as the host has it (user 1000 uses $${default_password}).
    let vars = fleet.ssh_root(h, &format!("cat {}/vars.xml", h.conf_dir));
    let password = vars
        .lines()
        .find_map(|l| {
            l.split("data=\"default_password=")
                .nth(1)
                .and_then(|r| r.split('"').next())
        })
        .expect("default_password in vars.xml")
        .to_string();

    let (code, out) = call(&attacker, h, INTERNATIONAL, &password);
    assert_eq!(code, Some(3), "{out}");
    assert!(
        out.contains(
            "not answered: SIP/2.0 484 Address Incomplete (Reason: SIP;cause=608;text=\"INVALID_GATEWAY\")"
        ),
        "the stock dialplan bridges the call to the example gateway: {out}"
    );
    let (code, out) = call(&attacker, h, "9196", &password);
    assert_eq!(code, Some(0), "the echo extension answers: {out}");

    // `--only dialplan` includes the reload its change needs: FreeSWITCH (and the stand-in,
    // which reads the dialplan at reloadxml like the rest) routes with the new dialplan at once.
    let run = fleet.fsfleet(&["harden", "--only", "dialplan"]);
    assert_eq!(run.status.code(), Some(0), "{}", output_text(&run));
    assert!(
        output_text(&run).contains("reload"),
        "the run names its reload: {}",
        output_text(&run)
    );
    let dp = fleet.ssh_root(
        h,
        &format!("cat {}/dialplan/default/01_example.com.xml", h.conf_dir),
    );
    assert!(
        dp.contains("stock extension disabled (toll fraud): FS-DP-02"),
        "{dp}"
    );

    let (code, out) = call(&attacker, h, INTERNATIONAL, &password);
    assert_eq!(code, Some(3), "{out}");
    assert!(
        out.contains(
            "not answered: SIP/2.0 480 Temporarily Unavailable (Reason: Q.850;cause=16;text=\"NORMAL_CLEARING\")"
        ),
        "after the step no gateway route is left for the call: {out}\nthe step: {}",
        output_text(&run)
    );
    let (code, out) = call(&attacker, h, "9196", &password);
    assert_eq!(code, Some(0), "the echo extension still answers: {out}");
    assert!(out.contains("answered, held 300 ms, BYE: 200 OK"), "{out}");
}
