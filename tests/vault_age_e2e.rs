//! A fleet whose vault is encrypted with age, end to end on one testbed host: harden writes the
//! host's new passwords only into `.fsfleet/vault.age` (the `age` tool reads them, they are the
//! ones the host uses), a second harden reads them back to reach the Event Socket and changes
//! nothing, audit passes the password controls, creds shows them, a wrong identity stops the run
//! before any host is touched, and no secret is ever printed.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::Fleet;

const FLEET: &str = "vault-age";

fn fsfleet(fleet: &Fleet, args: &[&str], identity: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fsfleet"))
        .args(args)
        .arg(fleet.dir.join("age.toml"))
        .arg("--no-progress")
        .env("FSFLEET_AGE_IDENTITY", identity)
        .env_remove("FSFLEET_VAULT_PASSPHRASE")
        .output()
        .expect("run fsfleet")
}

fn text(o: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn keygen(dir: &Path, name: &str) -> String {
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(&path)
        .output()
        .expect("age-keygen (scripts/setup installs age)");
    assert!(out.status.success(), "{}", text(&out));
    let out = Command::new("age-keygen")
        .arg("-y")
        .arg(&path)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn harden_audit_and_creds_work_on_an_age_encrypted_vault() {
    let fleet = Fleet::fresh(FLEET, 1);
    let h = &fleet.hosts[0];
    let state = fleet.dir.join(".fsfleet");
    let _ = std::fs::remove_dir_all(&state);
    let public = keygen(&fleet.dir, "age.key");
    keygen(&fleet.dir, "other.key");
    let id = fleet.dir.join("age.key");
    // The testbed's inventory, with the vault encrypted to this operator's key.
    let inventory = std::fs::read_to_string(fleet.inventory()).unwrap();
    std::fs::write(
        fleet.dir.join("age.toml"),
        format!("vault_encryption = \"age\"\nage_recipients = [\"{public}\"]\n\n{inventory}"),
    )
    .unwrap();

    let run = fsfleet(&fleet, &["harden", "--format", "json"], &id);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(report["hosts"][0]["status"], "changed", "{report}");
    assert!(!state.join("vault.json").exists(), "never a plain vault");
    let sealed = std::fs::read(state.join("vault.age")).unwrap();
    assert!(sealed.starts_with(b"age-encryption.org/v1\n"));
    assert!(state.join(".gitignore").exists());

    // The age tool reads what harden wrote; those are the passwords the host uses.
    let out = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&id)
        .arg(state.join("vault.age"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let vault: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let creds = &vault["hosts"][&h.name]["creds"];
    let sip = creds["sip_password"]["active"]["value"]
        .as_str()
        .unwrap_or_else(|| panic!("{vault}"))
        .to_string();
    let esl = creds["esl_password"]["active"]["value"]
        .as_str()
        .unwrap()
        .to_string();
    let secrets = [sip.clone(), esl.clone()];
    for s in &secrets {
        assert!(!String::from_utf8_lossy(&sealed).contains(s.as_str()));
        assert!(!text(&run).contains(s.as_str()), "harden printed a secret");
    }
    let vars = fleet.ssh_root(
        h,
        &format!("grep -o 'default_password=[^\"]*' {}/vars.xml", h.conf_dir),
    );
    assert_eq!(vars.trim(), format!("default_password={sip}"));

    // The second run reads the encrypted vault to reach the Event Socket: nothing changes.
    let again = fsfleet(&fleet, &["harden", "--format", "json"], &id);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    let report: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(report["hosts"][0]["status"], "ok", "{report}");

    // audit: the password controls pass; creds show reads the vault.
    let audit = fsfleet(&fleet, &["audit", "--format", "json"], &id);
    let doc: serde_json::Value =
        serde_json::from_slice(&audit.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&audit)));
    let results = doc["hosts"][0]["results"].as_array().unwrap();
    for control in ["FS-SIP-01", "FS-ESL-01"] {
        let r = results.iter().find(|r| r["id"] == control).unwrap();
        assert_eq!(r["status"], "pass", "{control}: {r}");
    }
    let show = Command::new(env!("CARGO_BIN_EXE_fsfleet"))
        .args(["creds", "show", &h.name, "--reveal"])
        .arg(fleet.dir.join("age.toml"))
        .env("FSFLEET_AGE_IDENTITY", &id)
        .output()
        .unwrap();
    assert!(
        show.status.success() && String::from_utf8_lossy(&show.stdout).contains(&esl),
        "{}",
        text(&show)
    );

    // Another operator's identity: exit 2 before any host is touched, the vault as it was.
    let before = std::fs::read(state.join("vault.age")).unwrap();
    let wrong = fsfleet(
        &fleet,
        &["harden", "--rotate"],
        &fleet.dir.join("other.key"),
    );
    assert_eq!(wrong.status.code(), Some(2), "{}", text(&wrong));
    assert!(
        text(&wrong).contains("age_recipients"),
        "names what is wrong: {}",
        text(&wrong)
    );
    assert_eq!(std::fs::read(state.join("vault.age")).unwrap(), before);
    let vars = fleet.ssh_root(
        h,
        &format!("grep -o 'default_password=[^\"]*' {}/vars.xml", h.conf_dir),
    );
    assert_eq!(
        vars.trim(),
        format!("default_password={sip}"),
        "not rotated"
    );
    for o in [&again, &audit, &wrong] {
        for s in &secrets {
            assert!(
                !text(o).contains(s.as_str()),
                "a secret printed: {}",
                text(o)
            );
        }
    }
}
