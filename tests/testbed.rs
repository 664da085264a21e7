//! End-to-end: the container testbed gives real, reachable, stock FreeSWITCH hosts.
//!
//! Needs the docker engine (`scripts/setup`, run by `make test`). The first run builds the images
//! (a few minutes); later runs reuse them and the running fleet.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{
    Fleet, Register, TestHost, shared_fleet, strip_log_prefix, strip_sofia_reg_warning, tcp_probe,
};

const AUTH_FAILURE: &str = "SIP auth failure";

fn log_file(host: &TestHost) -> String {
    format!("{}/freeswitch.log", host.log_dir)
}

fn auth_failure_lines(fleet: &Fleet, host: &TestHost) -> Vec<String> {
    let log = fleet.ssh_root(host, &format!("cat '{}'", log_file(host)));
    log.lines()
        .filter(|l| l.contains(AUTH_FAILURE))
        .map(str::to_string)
        .collect()
}

#[test]
fn shared_fleet_is_the_documented_mix_with_a_valid_inventory() {
    let fleet = shared_fleet();
    let roles: Vec<(&str, &str)> = fleet
        .hosts
        .iter()
        .map(|h| (h.role.as_str(), h.distro.as_str()))
        .collect();
    assert_eq!(
        roles,
        [
            ("root", "bookworm"),
            ("admin", "bookworm"),
            ("port2222", "bookworm"),
            ("source", "bookworm"),
            ("root", "trixie")
        ]
    );

    let inventory: toml::Table = toml::from_str(&common::read_to_string(&fleet.inventory()))
        .expect("inventory.toml is TOML");
    let defaults = inventory["defaults"].as_table().expect("[defaults]");
    assert_eq!(defaults["known_hosts"].as_str(), Some("known_hosts"));
    assert_eq!(defaults["identity_file"].as_str(), Some("id_ed25519"));
    assert_eq!(defaults["host_key_policy"].as_str(), Some("strict"));
    let groups = inventory["groups"].as_table().expect("[groups.*] tables");
    let hosts = inventory["hosts"].as_array().expect("[[hosts]]");
    for entry in hosts {
        for g in entry["groups"].as_array().expect("groups") {
            let g = g.as_str().expect("group name");
            assert!(
                groups.contains_key(g),
                "group {g} is used but not declared as [groups.{g}]"
            );
        }
    }
    assert_eq!(hosts.len(), fleet.hosts.len());
    for (entry, host) in hosts.iter().zip(&fleet.hosts) {
        assert_eq!(entry["name"].as_str(), Some(host.name.as_str()));
        assert_eq!(entry["address"].as_str(), Some(host.address.as_str()));
        assert_eq!(entry["port"].as_integer(), Some(i64::from(host.port)));
        assert_eq!(entry["user"].as_str(), Some(host.user.as_str()));
        let conf_dir = entry.get("conf_dir").and_then(|v| v.as_str());
        let expected = (host.role == "source").then_some("/usr/local/freeswitch/conf");
        assert_eq!(
            conf_dir, expected,
            "{}: conf_dir only for the source layout",
            host.name
        );
    }

    // known_hosts holds the hosts' own keys, `[ip]:port` for a non-22 port, one key set per host.
    let known = common::read_to_string(&fleet.known_hosts());
    let port2222 = fleet.host("fs03");
    assert!(
        known
            .lines()
            .any(|l| l.starts_with(&format!("[{}]:2222 ssh-ed25519 ", port2222.address)))
    );
    let ed25519: Vec<&str> = known
        .lines()
        .filter(|l| l.contains(" ssh-ed25519 "))
        .map(|l| l.rsplit(' ').next().unwrap_or(""))
        .collect();
    let mut distinct = ed25519.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        fleet.hosts.len(),
        "every host has its own host key: {ed25519:?}"
    );
}

#[test]
fn every_shared_host_answers_ssh_and_runs_a_stock_freeswitch() {
    let fleet = shared_fleet();
    for host in &fleet.hosts {
        let who = format!(
            "{} ({}:{}, {})",
            host.name, host.address, host.port, host.role
        );

        let out = fleet.ssh(host, "id -un");
        assert!(
            out.status.success(),
            "{who}: ssh with the fleet key failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            host.user,
            "{who}"
        );

        // The package or the source-build layout, config owned by freeswitch, service as freeswitch.
        let layout = fleet.ssh_root(
            host,
            &format!(
                "stat -c %U '{conf}/vars.xml'; test -d /etc/freeswitch && echo etc-present; \
                 stat -c %U /proc/$(pgrep -o -x freeswitch); systemctl is-active freeswitch",
                conf = host.conf_dir
            ),
        );
        let expect = if host.role == "source" {
            "freeswitch\nfreeswitch\nactive\n"
        } else {
            "freeswitch\netc-present\nfreeswitch\nactive\n"
        };
        assert_eq!(layout, expect, "{who}: layout");

        // fs_cli with no config file at all: stock 127.0.0.1:8021, ClueCon.
        let status = fleet.ssh(host, "fs_cli -x status");
        let text = String::from_utf8_lossy(&status.stdout);
        assert!(
            status.status.success() && text.contains(") is ready\n"),
            "{who}: fs_cli -x status said: {text}"
        );

        // The stock password works from inside, on the raw Event Socket.
        let esl = fleet.ssh(
            host,
            "python3 - <<'EOF'\n\
             import socket\n\
             s = socket.create_connection(('127.0.0.1', 8021), 5)\n\
             def frame():\n\
             \x20   buf = b''\n\
             \x20   while not buf.endswith(b'\\n\\n'):\n\
             \x20       c = s.recv(1)\n\
             \x20       if not c: break\n\
             \x20       buf += c\n\
             \x20   return buf.decode()\n\
             print(frame(), end='')\n\
             s.sendall(b'auth ClueCon\\n\\n')\n\
             print(frame(), end='')\n\
             EOF",
        );
        assert_eq!(
            String::from_utf8_lossy(&esl.stdout),
            "Content-Type: auth/request\n\nContent-Type: command/reply\nReply-Text: +OK accepted\n\n",
            "{who}: auth ClueCon from inside; stderr: {}",
            String::from_utf8_lossy(&esl.stderr)
        );

        // From the controller the stock `::` listener with the loopback ACL gives no greeting.
        let addr: SocketAddr = format!("{}:8021", host.address).parse().expect("address");
        match tcp_probe(addr, Duration::from_secs(3)) {
            Err(e) => assert_eq!(
                e.kind(),
                std::io::ErrorKind::ConnectionRefused,
                "{who}: 8021 from the controller: {e}"
            ),
            Ok(got) => {
                assert!(
                    !got.contains("auth/request"),
                    "{who}: 8021 greets the controller: {got:?}"
                );
                assert!(
                    got.starts_with("Content-Type: text/rude-rejection\n"),
                    "{who}: 8021 sent {got:?}"
                );
            }
        }
    }

    // Role specifics: root is refused on the admin host, nothing listens on 22 on the 2222 host.
    let admin = fleet.host("fs02");
    let as_root = TestHost {
        user: "root".into(),
        ..admin.clone()
    };
    assert!(
        !fleet.ssh(&as_root, "true").status.success(),
        "root login must be refused on the admin host"
    );
    assert_eq!(
        fleet.ssh_root(admin, "id -un"),
        "root\n",
        "admin has passwordless sudo"
    );
    let p2222 = fleet.host("fs03");
    let port22: SocketAddr = format!("{}:22", p2222.address).parse().expect("address");
    assert!(
        tcp_probe(port22, Duration::from_secs(3)).is_err(),
        "fs03 must listen on 2222 only"
    );
    assert_eq!(
        fleet.ssh_root(
            fleet.host("fs05"),
            ". /etc/os-release; echo $VERSION_CODENAME"
        ),
        "trixie\n"
    );
}

/// Poll the host's log until `pred` holds for the auth-failure lines (log writes are not
/// synchronous with the SIP reply), or give up after a few seconds and return what was there.
fn wait_for_failures(
    fleet: &Fleet,
    host: &TestHost,
    pred: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let lines = auth_failure_lines(fleet, host);
        if pred(&lines) || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn sip_auth_failures_are_logged_only_after_the_profile_is_rescanned() {
    // This test turns log-auth-failures on: it gets a fleet of its own, recreated from the images.
    let fleet = Fleet::fresh("testbed-e2e", 5);
    let attacker = fleet.attacker();
    for host in &fleet.hosts {
        let who = format!("{} ({}, {})", host.name, host.address, host.role);

        assert_eq!(
            attacker.register(&host.address, 5060, "1000", "1234"),
            Register::Ok,
            "{who}: 1000/1234"
        );
        assert_eq!(
            attacker.register(&host.address, 5060, "1000", "wrong-pass"),
            Register::Forbidden,
            "{who}"
        );
        // Give a late log write its chance before asserting that nothing was logged.
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            auth_failure_lines(&fleet, host),
            Vec::<String>::new(),
            "{who}: log-auth-failures is false"
        );

        let profile = format!("{}/sip_profiles/internal.xml", host.conf_dir);
        let on_disk = fleet.ssh_root(
            host,
            &format!(
                "sed -i 's|name=\"log-auth-failures\" value=\"false\"|name=\"log-auth-failures\" value=\"true\"|' '{profile}' \
                 && grep -c 'name=\"log-auth-failures\" value=\"true\"' '{profile}'"
            ),
        );
        assert_eq!(on_disk, "1\n", "{who}: flag set on disk");

        // On disk only: FreeSWITCH does not notice until the profile is rescanned.
        assert_eq!(
            attacker.register(&host.address, 5060, "1000", "wrong-pass"),
            Register::Forbidden,
            "{who}"
        );
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            auth_failure_lines(&fleet, host),
            Vec::<String>::new(),
            "{who}: no rescan yet"
        );

        let rescan = fleet.ssh(host, "fs_cli -x 'sofia profile internal rescan'");
        assert_eq!(
            String::from_utf8_lossy(&rescan.stdout),
            "Reload XML [Success]\n+OK scan complete\n\n",
            "{who}: rescan"
        );

        assert_eq!(
            attacker.register(&host.address, 5060, "1000", "wrong-pass"),
            Register::Forbidden,
            "{who}"
        );
        let lines = wait_for_failures(&fleet, host, |l| !l.is_empty());
        assert_eq!(
            lines.len(),
            1,
            "{who}: log-auth-failures=true on disk and `sofia profile internal rescan` done: one bad REGISTER must log exactly one `SIP auth failure` line; got {lines:?}"
        );
        let rest = strip_log_prefix(&lines[0])
            .unwrap_or_else(|| panic!("{who}: no 1.10.12 prefix: {:?}", lines[0]));
        let msg = strip_sofia_reg_warning(rest)
            .unwrap_or_else(|| panic!("{who}: not a sofia_reg warning: {rest:?}"));
        assert_eq!(
            msg,
            format!(
                "SIP auth failure (REGISTER) on sofia profile 'internal' for [1000@{}] from ip {}",
                host.address, attacker.address
            ),
            "{who}"
        );
    }
}
