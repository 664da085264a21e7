//! fail2ban bans on the SIP port FreeSWITCH really uses, whatever `sip_allow_from` says (issue 12,
//! findings 6 and 7): the internal profile is moved to 5070 as an operator would (vars.xml and a
//! restart), the inventory allows SIP from 0.0.0.0/0, and after `fsfleet harden` an attacker who
//! fails REGISTER auth `maxretry` times on 5070 is banned there and can no longer reach it.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{Attacker, Fleet, Register, TestHost, jail_value};

const FLEET: &str = "f2bp";
/// The inventory's default `fail2ban_maxretry`.
const MAXRETRY: usize = 5;
const SIP_PORT: u16 = 5070;

fn text(o: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The attacker's REGISTER with a wrong password, until the profile answers on the new port.
fn wait_for_sip(attacker: &Attacker, h: &TestHost, port: u16) {
    let start = Instant::now();
    loop {
        match attacker.register(&h.address, port, "1000", "not-the-password") {
            Register::Forbidden => return,
            other => assert!(
                start.elapsed() < Duration::from_secs(30),
                "{}: no SIP answer on {port} after the restart ({other:?})",
                h.name
            ),
        }
    }
}

fn banned_list(fleet: &Fleet, h: &TestHost) -> String {
    fleet.ssh_root(
        h,
        "fail2ban-client status freeswitch | sed -n 's/.*Banned IP list:[[:space:]]*//p'",
    )
}

#[test]
fn a_wide_sip_allow_list_still_bans_and_the_ban_covers_the_sip_port_really_open() {
    let fleet = Fleet::fresh(FLEET, 1);
    let h = &fleet.hosts[0];
    let _ = std::fs::remove_dir_all(fleet.dir.join(".fsfleet"));

    // The operator moves the internal profile to 5070 (FreeSWITCH reads vars.xml at start).
    fleet.ssh_root(
        h,
        &format!(
            "f={}/vars.xml; sed -i 's/data=\"internal_sip_port=5060\"/data=\"internal_sip_port={SIP_PORT}\"/' \"$f\" \
             && grep -q 'internal_sip_port={SIP_PORT}' \"$f\" && systemctl restart freeswitch",
            h.conf_dir
        ),
    );
    let attacker = fleet.attacker();
    wait_for_sip(&attacker, h, SIP_PORT);
    assert_eq!(
        attacker.register(&h.address, 5060, "1000", "not-the-password"),
        Register::Timeout,
        "the internal profile should have left 5060"
    );

    // A wide SIP allow-list: it must shape the firewall only, never fail2ban's ignoreip.
    let stock = common::read_to_string(&fleet.inventory());
    let wide = stock.replacen(
        "[defaults]\n",
        "[defaults]\nsip_allow_from = [\"0.0.0.0/0\"]\n",
        1,
    );
    assert_ne!(wide, stock, "the testbed inventory has a [defaults] table");
    let inventory = fleet.dir.join("inventory-wide.toml");
    std::fs::write(&inventory, wide).unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_fsfleet"))
        .arg("harden")
        .arg(&inventory)
        .args(["--no-progress", "-v"])
        .output()
        .expect("run fsfleet");
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));

    let jail = fleet.ssh_root(h, "cat /etc/fail2ban/jail.d/fsfleet-freeswitch.local");

    // The attacker fails REGISTER auth maxretry times on 5070 (about one per poll of the log).
    assert_eq!(
        attacker.register(&h.address, SIP_PORT, "1000", "guess0"),
        Register::Forbidden,
        "SIP on {SIP_PORT} is open to the attacker before any ban"
    );
    for i in 1..MAXRETRY {
        std::thread::sleep(Duration::from_millis(1200));
        let _ = attacker.register(&h.address, SIP_PORT, "1000", &format!("guess{i}"));
    }
    let start = Instant::now();
    let mut banned = banned_list(&fleet, h);
    while !banned.split_whitespace().any(|a| a == attacker.address) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{} not banned after {MAXRETRY} failures on {SIP_PORT}: banned = {banned:?}\n{}\nlog:\n{}\njail:\n{jail}",
            attacker.address,
            fleet.ssh_root(h, "fail2ban-client status freeswitch"),
            fleet.ssh_root(h, "tail -n 20 /var/log/fail2ban.log")
        );
        std::thread::sleep(Duration::from_millis(500));
        banned = banned_list(&fleet, h);
    }

    // The ban really covers 5070: the attacker gets no answer there...
    assert_eq!(
        attacker.register(&h.address, SIP_PORT, "1000", "guess-after-ban"),
        Register::Timeout,
        "a banned attacker still reaches SIP on {SIP_PORT}"
    );
    // ... and the ban rule names it.
    let rules = fleet.ssh_root(h, "iptables -S INPUT; iptables -S f2b-freeswitch-udp");
    assert!(
        rules.lines().any(|l| l.contains("-j f2b-freeswitch-udp")
            && l.contains("--dports")
            && l.split_whitespace()
                .skip_while(|w| *w != "--dports")
                .nth(1)
                .is_some_and(|p| p.split(',').any(|p| p == SIP_PORT.to_string()))),
        "no ban rule on {SIP_PORT}:\n{rules}"
    );
    assert!(rules.contains(&attacker.address), "{rules}");
    // The audit reads the jails' status from fail2ban-server's socket (perl, fail2ban's own
    // pickle protocol), not through fail2ban-client's Python: the same ban, the same log.
    {
        use fsfleet::model::fail2ban::{Fail2banState, STATE_SECTION, state_snippet};
        let mut script = fsfleet::facts::Script::new();
        script.add(STATE_SECTION, &state_snippet(&["freeswitch", "sshd"]));
        let out = fleet.ssh_root(h, script.text());
        let sections = script
            .parse(out.as_bytes())
            .unwrap_or_else(|e| panic!("{e}\n{out}"));
        let text = sections.text(STATE_SECTION);
        assert!(
            text.contains("@f2b freeswitch ") && text.contains("@f2b sshd "),
            "the socket was not asked:\n{text}"
        );
        let st = Fail2banState::parse(text);
        let fs = &st.status["freeswitch"];
        assert!(fs.banned.contains(&attacker.address), "{fs:?}");
        assert_eq!(
            fs.banned.len(),
            banned_list(&fleet, h).split_whitespace().count(),
            "{fs:?}"
        );
        assert!(
            fs.files
                .iter()
                .any(|f| f.path == "/var/log/freeswitch/freeswitch.log" && f.exists),
            "{fs:?}"
        );
        assert!(st.status.contains_key("sshd"), "{text}");
    }
    // ... because the jail file says so.
    let ports = jail_value(&jail, "freeswitch", "port").unwrap_or_default();
    assert!(
        ports.split(',').any(|p| p.trim() == SIP_PORT.to_string()),
        "the jail must ban on {SIP_PORT}, the port the firewall opens:\n{jail}"
    );
    let ignore = jail_value(&jail, "freeswitch", "ignoreip").unwrap_or_default();
    assert!(
        !ignore.contains("0.0.0.0"),
        "sip_allow_from leaked into ignoreip:\n{jail}"
    );
    assert_eq!(
        jail_value(&jail, "sshd", "port").as_deref(),
        Some(h.port.to_string().as_str()),
        "the sshd jail watches the port sshd listens on:\n{jail}"
    );
    // The firewall opened the same port (from the same function).
    let ufw = fleet.ssh_root(h, "ufw status");
    for proto in ["udp", "tcp"] {
        assert!(
            ufw.lines()
                .any(|l| l.starts_with(&format!("{SIP_PORT}/{proto} ")) && l.contains("ALLOW")),
            "ufw does not open {SIP_PORT}/{proto}:\n{ufw}"
        );
    }
    // fail2ban's own view of the running jail.
    let live = fleet.ssh_root(h, "fail2ban-client get freeswitch ignoreip");
    assert!(!live.contains("0.0.0.0"), "{live}");

    // fsfleet's own proofs, made again here with the real fail2ban-regex: Debian's filter alone
    // (a fresh host) and with fsfleet's .local (this one), each in both log formats, from copies
    // of this host's /etc/fail2ban (the key hashes the filter files by their relative names).
    common::remade_proofs_agree_with_the_table(&fleet, h);

    // The audit takes fsfleet's own proof when the host's filter files, fail2ban's version and
    // log format hash as one of them (`--reprove` runs fail2ban-regex anyway), then the
    // controller's proof for the host, made by fail2ban-regex there, while they hash the same;
    // an edit of the filter makes the host run the proof again.
    let proof = |inventory: &std::path::Path, extra: &[&str]| -> (String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_fsfleet"))
            .arg("audit")
            .arg(inventory)
            .args(["--no-progress", "--format", "json"])
            .args(extra)
            .output()
            .expect("run fsfleet audit");
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("JSON: {e}\n{}", text(&out)));
        let r = doc["hosts"][0]["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == "FS-F2B-03")
            .unwrap_or_else(|| panic!("no FS-F2B-03: {doc}"))
            .clone();
        (
            r["status"].as_str().unwrap_or("").to_string(),
            r["evidence"].to_string(),
        )
    };
    let table = fsfleet::model::fail2ban::PROVEN;
    let version = fleet
        .ssh_root(h, "dpkg-query -W -f '${Version}' fail2ban")
        .trim()
        .to_string();
    let covered = table.iter().any(|p| p.fail2ban == version);
    const SUITE: &str = "proved by fsfleet's test suite";
    let cache = fleet.dir.join(".fsfleet/fail2ban-proofs.json");
    let _ = std::fs::remove_file(&cache);
    let (status, ev) = proof(&inventory, &[]);
    assert_eq!(status, "pass", "{ev}");
    assert!(
        ev.contains("1 matched") && !ev.contains("proved at"),
        "{ev}"
    );
    assert_eq!(
        ev.contains(SUITE),
        covered,
        "fail2ban {version}: fsfleet's own proof is taken exactly when it covers this version: {ev}"
    );
    let (status, ev) = proof(&inventory, &["--reprove"]);
    assert_eq!(status, "pass", "{ev}");
    assert!(
        ev.contains("1 matched") && !ev.contains("proved at") && !ev.contains(SUITE),
        "--reprove runs fail2ban-regex on the host: {ev}"
    );
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&cache).unwrap().permissions());
    assert_eq!(
        mode & 0o777,
        0o600,
        "the proof cache is the controller's alone"
    );
    let (status, ev) = proof(&inventory, &[]);
    assert_eq!(status, "pass", "{ev}");
    assert!(
        ev.contains("1 matched") && ev.contains("proved at"),
        "the second audit reuses the proof: {ev}"
    );
    fleet.ssh_root(
        h,
        "printf '# an operator was here\\n' >>/etc/fail2ban/filter.d/freeswitch.local",
    );
    let (status, ev) = proof(&inventory, &[]);
    assert_eq!(status, "pass", "{ev}");
    assert!(
        !ev.contains("proved at") && !ev.contains(SUITE),
        "a changed filter is proved again: {ev}"
    );
    // A filter that no longer matches fails at once, whatever was proved before.
    fleet.ssh_root(
        h,
        "sed -i 's/SIP auth failure/SIP auth never-written/' /etc/fail2ban/filter.d/freeswitch.local",
    );
    let (status, ev) = proof(&inventory, &[]);
    assert_eq!(
        status, "fail",
        "a broken filter must fail, not be taken from the cache: {ev}"
    );
}
