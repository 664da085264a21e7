//! `fsfleet audit hosts.ini`: a command run from an Ansible inventory reaches the same host with
//! the same settings as from the testbed's TOML inventory, and finds the same results.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{Fleet, output_text as text};

const FLEET: &str = "ansible-inv";

fn fsfleet(args: &[&str], inventory: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fsfleet"))
        .arg(args[0])
        .arg(inventory)
        .args(&args[1..])
        .arg("--no-progress")
        .output()
        .expect("run fsfleet")
}

/// A host's name, status and each control's (id, status), in report order.
type HostResults = (String, String, Vec<(String, String)>);

fn results(out: &Output) -> Vec<HostResults> {
    let doc: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("JSON: {e}\n{}", text(out)));
    doc["hosts"]
        .as_array()
        .unwrap_or_else(|| panic!("no hosts: {doc}"))
        .iter()
        .map(|h| {
            let controls = h["results"]
                .as_array()
                .map(|rs| {
                    rs.iter()
                        .map(|r| (r["id"].to_string(), r["status"].to_string()))
                        .collect()
                })
                .unwrap_or_default();
            (h["name"].to_string(), h["status"].to_string(), controls)
        })
        .collect()
}

#[test]
fn audit_from_an_ansible_ini_inventory_matches_the_toml_one() {
    let fleet = Fleet::up(FLEET, 1);
    let h = &fleet.hosts[0];
    // Key and known_hosts relative to the inventory's directory, as in the TOML inventory.
    let ini = fleet.dir.join("hosts.ini");
    std::fs::write(
        &ini,
        format!(
            "# The testbed fleet as an Ansible inventory.\n\
             [pbx]\n\
             {} ansible_host={} ansible_port={} ansible_user={}\n\n\
             [pbx:vars]\n\
             ansible_ssh_private_key_file=id_ed25519\n\
             fsfleet_known_hosts=known_hosts\n\
             fsfleet_host_key_policy=strict\n",
            h.name, h.address, h.port, h.user
        ),
    )
    .expect("write hosts.ini");

    let check = Command::new(env!("CARGO_BIN_EXE_fsfleet"))
        .args(["inventory", "check"])
        .arg(&ini)
        .args(["--format", "json"])
        .output()
        .expect("run fsfleet");
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
    let hosts: serde_json::Value = serde_json::from_slice(&check.stdout).expect("JSON");
    assert_eq!(hosts[0]["name"], h.name.as_str(), "{hosts}");
    assert_eq!(hosts[0]["address"], h.address.as_str(), "{hosts}");
    assert_eq!(hosts[0]["port"], h.port, "{hosts}");
    assert_eq!(hosts[0]["user"], h.user.as_str(), "{hosts}");
    assert_eq!(hosts[0]["groups"], serde_json::json!(["pbx"]), "{hosts}");

    let from_ini = fsfleet(&["audit", "--format", "json"], &ini);
    let from_toml = fsfleet(&["audit", "--format", "json"], &fleet.inventory());
    // A fresh stock host fails the baseline (exit 3): it was reached and audited.
    assert_eq!(from_ini.status.code(), Some(3), "{}", text(&from_ini));
    assert_eq!(from_toml.status.code(), Some(3), "{}", text(&from_toml));
    let (ini_results, toml_results) = (results(&from_ini), results(&from_toml));
    assert_eq!(ini_results.len(), 1);
    assert_eq!(ini_results[0].1, "\"audited\"", "{}", text(&from_ini));
    assert!(ini_results[0].2.len() >= 25, "{ini_results:?}");
    assert_eq!(ini_results, toml_results);
}
