//! `fsfleet rotate` end to end on one stock host of its own (docker/testbed): `--check` changes
//! nothing; `--esl` on a host not hardened yet changes the Event Socket password and nothing
//! else (the old one is refused, the new one and fs_cli work); a second `--esl`, run while a
//! phone is in a call, leaves the call up and keeps both values in the vault's history (`creds history`, masked unless --reveal); `--sip` is refused
//! while a phone that logs in with default_password is registered (naming it) and rotates with
//! `--rotate-in-use`; no secret is ever printed.

mod common;

use std::process::Output;

use common::{Fleet, Register, TestHost};

fn text(o: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn param(fleet: &Fleet, h: &TestHost, name: &str) -> String {
    let out = fleet.ssh_root(
        h,
        &format!(
            "grep -o '<param name=\"{name}\" value=\"[^\"]*\"' {}/autoload_configs/event_socket.conf.xml | tail -n 1",
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

fn vars(fleet: &Fleet, h: &TestHost) -> String {
    fleet
        .ssh_root(
            h,
            &format!("grep -o 'default_password=[^\"]*' {}/vars.xml", h.conf_dir),
        )
        .trim()
        .trim_start_matches("default_password=")
        .to_string()
}

/// Whether the host's Event Socket takes `password` (fs_cli with it, on the host).
fn esl_takes(fleet: &Fleet, h: &TestHost, password: &str) -> bool {
    let out = fleet.ssh_root(h, &format!("fs_cli -p '{password}' -x status; echo rc=$?"));
    out.contains("is ready") && out.trim_end().ends_with("rc=0")
}

fn vault_json(fleet: &Fleet) -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(fleet.dir.join(".fsfleet/vault.json")).expect("read the vault"),
    )
    .expect("parse the vault")
}

fn active(fleet: &Fleet, h: &TestHost, kind: &str) -> String {
    vault_json(fleet)["hosts"][&h.name]["creds"][kind]["active"]["value"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// `fsfleet creds history HOST INVENTORY [--reveal]`.
fn creds_history(fleet: &Fleet, h: &TestHost, reveal: bool) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_fsfleet"));
    cmd.args(["creds", "history", &h.name])
        .arg(fleet.inventory());
    if reveal {
        cmd.arg("--reveal");
    }
    cmd.output().expect("run fsfleet creds history")
}

#[test]
fn rotate_changes_only_the_passwords_asked_for_and_holds_for_registered_phones() {
    let fleet = Fleet::fresh("rotate-e2e", 1);
    let _ = std::fs::remove_dir_all(fleet.dir.join(".fsfleet"));
    let h = &fleet.hosts[0];
    let listen_ip = param(&fleet, h, "listen-ip");
    let acl = param(&fleet, h, "apply-inbound-acl");
    let sip_before = vars(&fleet, h);
    let mut printed = String::new();

    // --check: what would rotate, nothing changes.
    let check = fleet.fsfleet(&["rotate", "--esl", "--check"]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
    let out = text(&check);
    assert!(
        out.contains("would rotate the Event Socket password"),
        "{out}"
    );
    assert!(!out.contains("sip-password"), "--esl only: {out}");
    assert!(esl_takes(&fleet, h, "ClueCon"), "--check changed the host");
    printed.push_str(&out);

    // --esl on a host not hardened yet: the password and the fs_cli configs, nothing else.
    let run = fleet.fsfleet(&["rotate", "--esl", "--format", "json"]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    printed.push_str(&text(&run));
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).expect("one JSON report");
    let run1 = report["run_id"].as_str().unwrap().to_string();
    // verify proved it too, through the same proven listener.
    let verify = report["hosts"][0]["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "verify"))
        .map(|s| s["message"].to_string())
        .unwrap_or_default();
    assert!(
        verify.contains("the old Event Socket password is refused"),
        "{verify}"
    );
    let esl1 = active(&fleet, h, "esl_password");
    assert!(esl1.len() >= 28, "{}", vault_json(&fleet));
    assert!(
        !esl_takes(&fleet, h, "ClueCon"),
        "the old password still works"
    );
    assert!(esl_takes(&fleet, h, &esl1), "the new password is refused");
    let st = fleet.ssh_root(h, "fs_cli -x status");
    assert!(st.contains("is ready"), "fs_cli: {st}");
    assert_eq!(
        param(&fleet, h, "listen-ip"),
        listen_ip,
        "listen-ip changed"
    );
    assert_eq!(param(&fleet, h, "apply-inbound-acl"), acl, "ACL changed");
    assert_eq!(
        vars(&fleet, h),
        sip_before,
        "--esl rotated the SIP password"
    );

    // Again, while a phone is in a call (the stock echo extension, held 8 s): the call
    // survives the Event Socket rotation, and the vault's history keeps both values.
    let attacker = fleet.attacker();
    let call = std::process::Command::new("docker")
        .args(["exec", "-e", "SIP_PASSWORD", &attacker.container])
        .args([
            "/usr/bin/freeswitch",
            "call",
            "--user",
            "1000",
            "--hold-ms",
            "8000",
        ])
        .arg("--target")
        .arg(format!("{}:5060", h.address))
        .env("SIP_PASSWORD", &sip_before)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the call");
    let calls = || fleet.ssh_root(h, "fs_cli -x 'show calls count'");
    let t0 = std::time::Instant::now();
    while !calls().contains("1 total.") {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(5),
            "the call was not answered: {}",
            calls()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let check = fleet.fsfleet(&["rotate", "--esl", "--check"]);
    assert!(
        text(&check).contains("1 call is up now: the Event Socket reload does not touch calls"),
        "{}",
        text(&check)
    );
    let run = fleet.fsfleet(&["rotate", "--esl", "--format", "json"]);
    assert!(
        calls().contains("1 total."),
        "the call is gone after the rotation: {}",
        calls()
    );
    let call = call.wait_with_output().expect("wait for the call");
    assert_eq!(
        call.status.code(),
        Some(0),
        "the call did not survive the rotation: {}",
        text(&call)
    );
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    printed.push_str(&text(&run));
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).expect("one JSON report");
    let run2 = report["run_id"].as_str().unwrap().to_string();
    let esl2 = active(&fleet, h, "esl_password");
    assert_ne!(esl1, esl2);
    assert!(
        !esl_takes(&fleet, h, &esl1),
        "the first password still works"
    );
    assert!(esl_takes(&fleet, h, &esl2));
    assert!(fleet.ssh_root(h, "fs_cli -x status").contains("is ready"));
    let history = creds_history(&fleet, h, false);
    let out = text(&history);
    assert_eq!(history.status.code(), Some(0), "{out}");
    let esl_rows: Vec<&str> = out
        .lines()
        .skip_while(|l| l.trim() != "esl_password")
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .collect();
    // Newest first: the second run's value, the first run's, then what the host used before
    // fsfleet (ClueCon, recorded as the first run found it).
    assert!(
        esl_rows.len() == 3
            && esl_rows[0].trim_start().starts_with("active")
            && esl_rows[0].ends_with(&format!("run {run2}"))
            && esl_rows[1].trim_start().starts_with("earlier")
            && esl_rows[1].ends_with(&format!("run {run1}"))
            && esl_rows[2].trim_start().starts_with("earlier"),
        "{out}"
    );
    printed.push_str(&out);
    let revealed = creds_history(&fleet, h, true);
    let shown = String::from_utf8_lossy(&revealed.stdout);
    let row = |v: &str| {
        shown
            .lines()
            .find(|l| l.contains(v))
            .unwrap_or("")
            .to_string()
    };
    assert!(
        row(&esl2).ends_with(&format!("run {run2}"))
            && row(&esl1).ends_with(&format!("run {run1}"))
            && row("ClueCon").contains("earlier"),
        "--reveal: {shown}"
    );

    // --sip with a phone registered as 1000 on the shared password: refused, naming it.
    assert_eq!(
        attacker.register(&h.address, 5060, "1000", &sip_before),
        Register::Ok
    );
    let phone = format!("1000 (from {})", attacker.address);
    let refused = fleet.fsfleet(&["rotate", "--sip"]);
    let out = text(&refused);
    printed.push_str(&out);
    assert_eq!(refused.status.code(), Some(4), "{out}");
    assert!(
        out.contains(&format!("registered now: {phone}")) && out.contains("--rotate-in-use"),
        "{out}"
    );
    assert_eq!(vars(&fleet, h), sip_before, "rotated while in use");

    // --rotate-in-use rotates, names the phone to reprovision; the old password is refused.
    let run = fleet.fsfleet(&["rotate", "--sip", "--rotate-in-use"]);
    let out = text(&run);
    printed.push_str(&out);
    assert_eq!(run.status.code(), Some(0), "{out}");
    assert!(
        out.contains(&format!(
            "registered now, their phones must be given the new password: {phone}"
        )),
        "{out}"
    );
    let sip = vars(&fleet, h);
    assert!(sip.len() >= 28 && sip != sip_before, "not rotated: {sip}");
    assert_eq!(active(&fleet, h, "sip_password"), sip);
    assert_eq!(
        attacker.register(&h.address, 5060, "1000", &sip_before),
        Register::Forbidden
    );
    assert_eq!(
        attacker.register(&h.address, 5060, "1000", &sip),
        Register::Ok
    );
    // The Event Socket was left alone by --sip.
    assert_eq!(active(&fleet, h, "esl_password"), esl2);
    assert!(esl_takes(&fleet, h, &esl2));

    // --users renews users' own passwords (the production level's per-user-passwords gives
    // them; phone 1000 is registered, so that needs --force-reregister).
    let give = fleet.fsfleet(&[
        "harden",
        "--only",
        "per-user-passwords,reload,verify",
        "--force-reregister",
    ]);
    assert_eq!(give.status.code(), Some(0), "{}", text(&give));
    let own_1000 = || -> String {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_fsfleet"))
            .args(["creds", "export", "--users", "--format", "json"])
            .arg(fleet.inventory())
            .output()
            .expect("run fsfleet creds export");
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("export JSON");
        rows.as_array()
            .and_then(|r| r.iter().find(|r| r["user"] == "1000"))
            .and_then(|r| r["password"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    let p1 = own_1000();
    assert!(p1.len() >= 28, "no own password for 1000");
    assert_eq!(
        attacker.register(&h.address, 5060, "1000", &p1),
        Register::Ok
    );
    // Registered with it: --users is refused naming 1000, and nothing changes.
    let held = fleet.fsfleet(&["rotate", "--users"]);
    let out = text(&held);
    printed.push_str(&out);
    assert_eq!(held.status.code(), Some(4), "{out}");
    assert!(out.contains("1000"), "{out}");
    assert_eq!(own_1000(), p1);
    let users = fleet.fsfleet(&["rotate", "--users", "--rotate-in-use"]);
    let out = text(&users);
    printed.push_str(&out);
    assert_eq!(users.status.code(), Some(0), "{out}");
    let p2 = own_1000();
    assert!(
        p2.len() >= 28 && p2 != p1,
        "1000's own password was not renewed"
    );
    assert_eq!(
        attacker.register(&h.address, 5060, "1000", &p1),
        Register::Forbidden
    );
    assert_eq!(
        attacker.register(&h.address, 5060, "1000", &p2),
        Register::Ok
    );
    // The shared default_password was left alone by --users.
    assert_eq!(vars(&fleet, h), sip, "--users changed vars.xml");
    for secret in [&p1, &p2] {
        assert!(
            !printed.contains(secret.as_str()),
            "a user password was printed"
        );
    }

    // No secret was ever printed (creds history --reveal aside).
    for secret in [&esl1, &esl2, &sip] {
        assert!(!printed.contains(secret.as_str()), "a password was printed");
    }
}
