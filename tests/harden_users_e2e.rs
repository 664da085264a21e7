//! `per-user-passwords` and `remove-stock-users` end to end on one fresh host: a phone
//! registered as 1000 on the shared `$${default_password}` makes per-user-passwords refuse,
//! naming it, and nothing changes; `--level production --force-reregister` (and
//! `--rotate-in-use` for the baseline's rotation of the shared one) disables every stock user
//! but the registered 1000 (named), gives 1000 its own password, names the phone to
//! reprovision, and `fsfleet creds export --users` gives the password the phone then registers
//! with, while the old and the rotated shared ones are refused. The audit passes FS-SIP-04 and
//! names only 1000 for FS-SIP-03; a second run changes nothing; `--remove-in-use` disables 1000
//! too and FS-SIP-03 passes. No password is ever printed but by the export.

mod common;

use std::process::{Command, Output};

use common::{Fleet, Register, TestHost};

fn fsfleet(fleet: &Fleet, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fsfleet"))
        .args(args)
        .arg(fleet.inventory())
        .args(["--no-progress", "-v"])
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

fn user_file(fleet: &Fleet, h: &TestHost, id: &str) -> String {
    fleet.ssh_root(h, &format!("cat {}/directory/default/{id}.xml", h.conf_dir))
}

fn conf_sum(fleet: &Fleet, h: &TestHost) -> String {
    fleet.ssh_root(
        h,
        &format!(
            "cd {} && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum",
            h.conf_dir
        ),
    )
}

fn export(fleet: &Fleet, format: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fsfleet"))
        .args(["creds", "export", "--users", "--format", format])
        .arg(fleet.inventory())
        .output()
        .expect("run fsfleet creds export")
}

#[test]
fn stock_users_go_and_the_rest_get_their_own_passwords_around_a_registered_phone() {
    let fleet = Fleet::fresh("harden-users", 1);
    let _ = std::fs::remove_dir_all(fleet.dir.join(".fsfleet"));
    let h = &fleet.hosts[0];
    let attacker = fleet.attacker();
    assert_eq!(
        attacker.register(&h.address, 5060, "1000", "1234"),
        Register::Ok
    );
    let phone = format!("1000 (from {})", attacker.address);
    let stock_1000 = user_file(&fleet, h, "1000");
    assert!(stock_1000.contains("value=\"$${default_password}\""));

    // A registered user it would change: the step refuses, naming the phone and the flag.
    let sum = conf_sum(&fleet, h);
    let run = fsfleet(&fleet, &["harden", "--only", "per-user-passwords"]);
    let out = text(&run);
    assert_eq!(run.status.code(), Some(4), "{out}");
    assert!(
        out.contains("not giving users their own passwords")
            && out.contains(&format!("registered now: {phone}"))
            && out.contains("--force-reregister"),
        "{out}"
    );
    assert_eq!(conf_sum(&fleet, h), sum, "a refused step changed the host");

    // --check --diff names the change, the shared reference going, the new value masked.
    let check = fsfleet(
        &fleet,
        &[
            "harden",
            "--level",
            "production",
            "--force-reregister",
            "--rotate-in-use",
            "--check",
            "--diff",
        ],
    );
    let check_out = text(&check);
    assert_eq!(check.status.code(), Some(0), "{check_out}");
    for want in [
        "give user 1000 its own generated password",
        "disable stock user 1019: /etc/freeswitch/directory/default/1019.xml keeps only a comment",
        "stock user 1000 kept: registered now from",
        "-      <param name=\"password\" value=\"$${default_password}\"/>",
        "+      <param name=\"password\" value=\"********\"/>",
    ] {
        assert!(
            check_out.contains(want),
            "--check --diff lacks {want:?}: {check_out}"
        );
    }
    assert_eq!(conf_sum(&fleet, h), sum, "--check changed the host");

    // --force-reregister: every user gets its own; the report names the phone to reprovision.
    let run = fsfleet(
        &fleet,
        &[
            "harden",
            "--level",
            "production",
            "--force-reregister",
            "--rotate-in-use",
        ],
    );
    let run_out = text(&run);
    assert_eq!(run.status.code(), Some(0), "{run_out}");
    assert!(
        run_out.contains(&format!("reprovision them first: {phone}"))
            && run_out.contains(&format!(
                "stock user 1000 kept: registered now from {}",
                attacker.address
            )),
        "{run_out}"
    );
    // sip-protocol: the phones' profile challenges MESSAGE and SUBSCRIBE; the trunk-facing
    // external profile is named and left.
    for param in ["auth-messages", "auth-subscriptions"] {
        let n = fleet.ssh_root(
            h,
            &format!(
                "grep -c '<param name=\"{param}\" value=\"true\"/>' {}/sip_profiles/internal.xml",
                h.conf_dir
            ),
        );
        assert_eq!(n.trim(), "1", "{param}");
    }
    assert!(
        run_out.contains("profile external (") && run_out.contains("trunk-facing"),
        "{run_out}"
    );
    // The other stock users are gone from what FreeSWITCH reads.
    assert_eq!(
        attacker.register(&h.address, 5060, "1001", "1234"),
        Register::Forbidden
    );
    assert!(user_file(&fleet, h, "brian").contains("fsfleet harden remove-stock-users"));

    // The export: one row per user, the domain the phones register to.
    let csv = export(&fleet, "csv");
    assert!(csv.status.success(), "{}", text(&csv));
    let csv = String::from_utf8(csv.stdout).unwrap();
    let mut lines = csv.split("\r\n");
    assert_eq!(lines.next(), Some("host,domain,user,password"));
    let rows: Vec<Vec<&str>> = lines
        .filter(|l| !l.is_empty())
        .map(|l| l.split(',').collect())
        .collect();
    let users: Vec<&str> = rows.iter().map(|r| r[2]).collect();
    assert_eq!(
        users,
        ["1000", "SEP001120AABBCC"],
        "the kept stock user and the skinny example: {csv}"
    );
    let row = rows.iter().find(|r| r[2] == "1000").expect("1000 exported");
    assert_eq!(row[0], h.name);
    assert_eq!(
        row[1], h.address,
        "FreeSWITCH's domain is the host's address"
    );
    let pw1000 = row[3].to_string();
    assert_eq!(pw1000.len(), 32);
    let json = export(&fleet, "json");
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).expect("export JSON");
    let j1000 = json
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["user"] == "1000")
        .unwrap();
    assert_eq!(j1000["password"], pw1000.as_str());

    // Only that user's password changed in its file, readable only by root and FreeSWITCH.
    let now_1000 = user_file(&fleet, h, "1000");
    assert!(now_1000.contains(&format!("<param name=\"password\" value=\"{pw1000}\"/>")));
    let mode = fleet.ssh_root(
        h,
        &format!("stat -c %a {}/directory/default/1000.xml", h.conf_dir),
    );
    assert_eq!(u32::from_str_radix(mode.trim(), 8).unwrap() & 0o007, 0);

    // The phone: its own password registers; the old shared one, and the new shared one, do not.
    let vault: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fleet.dir.join(".fsfleet/vault.json")).unwrap(),
    )
    .unwrap();
    let shared = vault["hosts"][&h.name]["creds"]["sip_password"]["active"]["value"]
        .as_str()
        .expect("default_password rotated")
        .to_string();
    assert_eq!(
        attacker.register(&h.address, 5060, "1000", &pw1000),
        Register::Ok
    );
    assert_eq!(
        attacker.register(&h.address, 5060, "1000", "1234"),
        Register::Forbidden
    );
    assert_eq!(
        attacker.register(&h.address, 5060, "1000", &shared),
        Register::Forbidden
    );
    assert_eq!(
        vault["hosts"][&h.name]["users"]["1000"]["sip_password"]["pending"],
        serde_json::Value::Null
    );

    // No generated password was printed by harden.
    for (_, _, _, pw) in rows.iter().map(|r| (r[0], r[1], r[2], r[3])) {
        for out in [&run_out, &check_out] {
            assert!(!out.contains(pw), "a user's password was printed");
        }
    }
    // creds show --user: masked unless --reveal.
    let show = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_fsfleet"))
            .args(["creds", "show", &h.name, "--user", "1000"])
            .args(extra)
            .arg(fleet.inventory())
            .output()
            .unwrap()
    };
    let masked = text(&show(&[]));
    assert!(
        masked.contains("sip_password") && !masked.contains(&pw1000),
        "{masked}"
    );
    assert!(text(&show(&["--reveal"])).contains(&pw1000));

    // The audit: FS-SIP-04 passes; FS-SIP-03 names only the kept 1000.
    let sip04 = control(&fleet, "FS-SIP-04");
    assert_eq!(sip04["status"], "pass", "{sip04}");
    let sip03 = control(&fleet, "FS-SIP-03");
    assert_eq!(sip03["status"], "fail", "{sip03}");
    assert_eq!(
        sip03["evidence"][0],
        "stock users still defined in directory/default/: 1000"
    );

    // A second run changes nothing, though the phone is registered now.
    let sum = conf_sum(&fleet, h);
    let again = fsfleet(
        &fleet,
        &["harden", "--level", "production", "--format", "json"],
    );
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    let report: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(report["hosts"][0]["status"], "ok", "{report}");
    assert_eq!(conf_sum(&fleet, h), sum, "the second run changed a file");

    // --remove-in-use: 1000 goes too, and FS-SIP-03 passes.
    let run = fsfleet(
        &fleet,
        &["harden", "--level", "production", "--remove-in-use"],
    );
    let out = text(&run);
    assert_eq!(run.status.code(), Some(0), "{out}");
    assert!(
        out.contains(
            "stock user 1000: /etc/freeswitch/directory/default/1000.xml keeps only a comment"
        ) && out.contains("--remove-in-use: registered now"),
        "{out}"
    );
    assert_eq!(control(&fleet, "FS-SIP-03")["status"], "pass");
    assert_eq!(control(&fleet, "FS-SIP-04")["status"], "pass");
    assert_eq!(
        attacker.register(&h.address, 5060, "1000", &pw1000),
        Register::Forbidden
    );
    // The backup holds the stock file: putting it back restores the user.
    let backup = fleet.ssh_root(
        h,
        &format!(
            "ls -1d /var/backups/fsfleet/*/files{}/directory/default/1000.xml | tail -1",
            h.conf_dir
        ),
    );
    let saved = fleet.ssh_root(h, &format!("cat {}", backup.trim()));
    assert!(saved.contains("<user id=\"1000\">"), "{backup}: {saved}");
}

/// One audit control's result for the fleet's only host.
fn control(fleet: &Fleet, id: &str) -> serde_json::Value {
    let audit = fsfleet(fleet, &["audit", "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_slice(&audit.stdout).expect("audit JSON");
    doc["hosts"][0]["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .cloned()
        .unwrap()
}
