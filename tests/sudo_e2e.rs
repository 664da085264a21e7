//! Privileged work through `sudo -S` with the password from `sudo_password_env`, on a real host:
//! the password reaches sudo on stdin only (never argv), a wrong one is a clear error, and a login
//! whose sudo needs a password but has none configured is told what to set.

mod common;

use std::process::{Command, Output};

use common::Fleet;

const FLEET: &str = "sudo-e2e";
const PASSWORD: &str = "Sudo-pass-for-tests-only-7";

fn run(fleet: &Fleet, inventory: &str, env: Option<&str>) -> Output {
    let path = fleet.dir.join("sudo-inventory.toml");
    std::fs::write(&path, inventory).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fsfleet"));
    cmd.args(["facts", "--format", "json", "--no-progress"])
        .arg(&path)
        .env_remove("FSFLEET_TEST_SUDO");
    if let Some(pw) = env {
        cmd.env("FSFLEET_TEST_SUDO", pw);
    }
    cmd.output().unwrap()
}

#[test]
fn sudo_with_a_password_from_the_environment() {
    let fleet = Fleet::fresh(FLEET, 1);
    let h = &fleet.hosts[0];
    // A login whose sudo asks for a password.
    fleet.ssh_root(
        h,
        &format!(
            "id ops >/dev/null 2>&1 || useradd -m -s /bin/sh ops\n\
             echo 'ops:{PASSWORD}' | chpasswd\n\
             echo 'ops ALL=(ALL) ALL' > /etc/sudoers.d/ops && chmod 440 /etc/sudoers.d/ops\n\
             mkdir -p ~ops/.ssh && cp ~{user}/.ssh/authorized_keys ~ops/.ssh/ && chown -R ops: ~ops/.ssh\n",
            user = h.user
        ),
    );
    let inventory = |extra: &str| {
        format!(
            "[[hosts]]\nname = \"ops-host\"\naddress = \"{}\"\nport = {}\nuser = \"ops\"\nsudo = true\n\
             identity_file = \"id_ed25519\"\nknown_hosts = \"known_hosts\"\nhost_key_policy = \"strict\"\n{extra}",
            h.address, h.port
        )
    };

    // With the password: facts are read as root (the FreeSWITCH config is found, sshd ports read).
    let ok = run(
        &fleet,
        &inventory("sudo_password_env = \"FSFLEET_TEST_SUDO\"\n"),
        Some(PASSWORD),
    );
    let out = String::from_utf8_lossy(&ok.stdout);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{out}\n{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let facts = &json["hosts"][0]["data"];
    assert_eq!(facts["privilege"], "sudo");
    assert_eq!(facts["login_user"], "ops");
    assert_eq!(
        facts["freeswitch"]["conf_dir"],
        h.conf_dir.as_str(),
        "{facts}"
    );
    assert!(
        !facts["sshd_ports"].as_array().unwrap().is_empty(),
        "ss -ltnp needs root: {facts}"
    );
    assert!(!out.contains(PASSWORD) && !String::from_utf8_lossy(&ok.stderr).contains(PASSWORD));

    // A wrong password: a clear error, not a hang.
    let bad = run(
        &fleet,
        &inventory("sudo_password_env = \"FSFLEET_TEST_SUDO\"\n"),
        Some("wrong-password"),
    );
    let json: serde_json::Value = serde_json::from_slice(&bad.stdout).unwrap();
    assert_eq!(bad.status.code(), Some(4));
    let err = json["hosts"][0]["error"].as_str().unwrap();
    assert!(err.contains("sudo refused the password"), "{err}");

    // The variable is not set: says which variable.
    let unset = run(
        &fleet,
        &inventory("sudo_password_env = \"FSFLEET_TEST_SUDO\"\n"),
        None,
    );
    let json: serde_json::Value = serde_json::from_slice(&unset.stdout).unwrap();
    let err = json["hosts"][0]["error"].as_str().unwrap();
    assert!(
        err.contains("FSFLEET_TEST_SUDO") && err.contains("not set"),
        "{err}"
    );

    // No password configured but sudo needs one: says what to set.
    let nopw = run(&fleet, &inventory(""), None);
    let json: serde_json::Value = serde_json::from_slice(&nopw.stdout).unwrap();
    let err = json["hosts"][0]["error"].as_str().unwrap();
    assert!(err.contains("sudo_password_env"), "{err}");
}
