//! `fsfleet facts` and `fsfleet inventory check` end to end, against a real sshd on 127.0.0.1.

mod support;

use std::path::Path;
use std::process::Command;

use support::cli::{fsfleet, reachable_and_down_inventory};
use support::sshd::TestSshd;

#[test]
fn facts_reports_the_host_in_one_json_document_and_unreachable_hosts_go_to_the_retry_file() {
    let sshd = TestSshd::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (conf, closed) = reachable_and_down_inventory(&sshd, d);

    let out = fsfleet(&["facts", "inventory.toml", "--format", "json"], d);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(4),
        "one host unreachable: exit 4\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_str(&stdout).expect("stdout is one JSON document");
    let hosts = json["hosts"].as_array().unwrap();
    let up = hosts.iter().find(|h| h["name"] == "pbx-1").unwrap();
    assert_eq!(up["status"], "ok", "{up}");
    let facts = &up["data"];
    assert_eq!(facts["os"]["id"], "debian");
    assert_eq!(facts["login_user"], "root");
    assert!(
        facts["sshd_ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == sshd.port),
        "{facts}"
    );
    assert_eq!(facts["freeswitch"]["conf_dir"], conf.display().to_string());
    assert_eq!(facts["freeswitch"]["layout"], "inventory");
    let down = hosts.iter().find(|h| h["name"] == "pbx-down").unwrap();
    assert_eq!(down["status"], "unreachable");
    assert!(
        down["error"]
            .as_str()
            .unwrap()
            .contains(&format!("127.0.0.1:{closed}")),
        "{down}"
    );
    assert_eq!(
        std::fs::read_to_string(d.join(".fsfleet/retry")).unwrap(),
        "pbx-down\n"
    );
    assert_eq!(
        sshd.log().matches("Accepted publickey").count(),
        1,
        "one connection for all the facts"
    );

    // The retry file drives the next run; text output names the host and its FreeSWITCH.
    let out = fsfleet(
        &[
            "facts",
            "inventory.toml",
            "--limit",
            "pbx-1",
            "--no-progress",
        ],
        d,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("pbx-1 (127.0.0.1)") && text.contains(&conf.display().to_string()),
        "{text}"
    );
    assert!(
        !d.join(".fsfleet/retry").exists(),
        "a clean run removes the stale retry file"
    );
    let out = fsfleet(
        &["facts", "inventory.toml", "--limit", "@.fsfleet/retry"],
        d,
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "missing limit file is a usage error"
    );
}

#[test]
fn inventory_errors_exit_2_naming_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("inventory.toml"),
        "[[hosts]]\nname = \"a\"\nprot = 22\n",
    )
    .unwrap();
    for cmd in [&["facts"][..], &["inventory", "check"][..]] {
        let out = fsfleet(cmd, dir.path());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains("inventory.toml:3:1") && err.contains("port"),
            "{err}"
        );
    }
    // $FSFLEET_INVENTORY is the fallback for the path.
    std::fs::write(
        dir.path().join("fleet.toml"),
        "[[hosts]]\nname = \"a\"\naddress = \"192.0.2.1\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fsfleet"))
        .args(["inventory", "check"])
        .current_dir(dir.path())
        .env("FSFLEET_INVENTORY", "fleet.toml")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("192.0.2.1:22"));
}

/// `fsfleet facts` in `dir` on a pseudo-terminal (script(1)), typing `answer` once it had time to
/// ask: its exit code and everything it showed.
fn on_a_terminal(dir: &Path, answer: &[u8]) -> (Option<i32>, String) {
    let cmd = format!(
        "{} facts inventory.toml --no-progress",
        env!("CARGO_BIN_EXE_fsfleet")
    );
    let mut child = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .current_dir(dir)
        .env("HOME", dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        std::thread::sleep(std::time::Duration::from_secs(2));
        stdin.write_all(answer).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The default `ask` policy: without a terminal, unknown hosts are refused with a hint; on a
/// terminal, every unknown host of the run is listed with its fingerprint and ONE question is
/// asked; the answer records them all.
#[test]
fn ask_policy_asks_once_for_every_new_host_and_refuses_without_a_terminal() {
    let a = TestSshd::start();
    let b = TestSshd::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::copy(a.path("user_key"), d.join("key")).unwrap();
    // Both servers accept the same key.
    std::fs::copy(a.path("user_key.pub"), b.path("authorized_keys")).unwrap();
    let inv = format!(
        "[defaults]\nuser = \"root\"\nidentity_file = \"key\"\nknown_hosts = \"known_hosts\"\n\n\
         [[hosts]]\nname = \"pbx-a\"\naddress = \"127.0.0.1\"\nport = {}\n\n\
         [[hosts]]\nname = \"pbx-b\"\naddress = \"127.0.0.1\"\nport = {}\n",
        a.port, b.port
    );
    std::fs::write(d.join("inventory.toml"), inv).unwrap();

    // No terminal: refused, with the way out in the message; nothing recorded.
    let out = fsfleet(&["facts", "inventory.toml", "--format", "json"], d);
    assert_eq!(out.status.code(), Some(4));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for h in json["hosts"].as_array().unwrap() {
        assert_eq!(h["status"], "unreachable");
        let e = h["error"].as_str().unwrap();
        assert!(
            e.contains("is unknown (SHA256:") && e.contains("accept-new"),
            "{e}"
        );
    }
    assert!(!d.join("known_hosts").exists());

    // On a terminal (script(1) gives fsfleet a pty), answering no: nothing recorded, and the
    // refusal says the operator declined (not "run on a terminal", which they just did).
    let text = on_a_terminal(d, b"n\n").1;
    assert_eq!(
        text.matches("Trust and record these 2 host keys? [y/N]")
            .count(),
        1,
        "{text}"
    );
    for host in ["pbx-a", "pbx-b"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("{host}: unreachable"))
                    && l.contains("you did not accept it at the prompt")),
            "{text}"
        );
    }
    assert!(!text.contains("run on a terminal"), "{text}");
    assert!(!d.join("known_hosts").exists());

    // On a terminal, answering yes: one list, one question, both recorded.
    let (status, text) = on_a_terminal(d, b"y\n");
    assert_eq!(
        text.matches("Trust and record these 2 host keys? [y/N]")
            .count(),
        1,
        "{text}"
    );
    assert!(
        text.contains(&format!("[127.0.0.1]:{}", a.port))
            && text.contains(&format!("[127.0.0.1]:{}", b.port)),
        "{text}"
    );
    assert!(text.contains("SHA256:"), "{text}");
    assert_eq!(status, Some(0), "{text}");
    let kh = std::fs::read_to_string(d.join("known_hosts")).unwrap();
    assert!(
        kh.contains(&a.known_hosts_line()) && kh.contains(&b.known_hosts_line()),
        "{kh}"
    );
    assert_eq!(kh.lines().count(), 2, "{kh}");
}
