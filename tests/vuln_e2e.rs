//! Known vulnerabilities on the testbed: the stand-in answers `freeswitch -version` as
//! FreeSWITCH 1.10.12 does, so the FS-VULN findings name exactly the catalogue's advisories
//! fixed after 1.10.12, each with its fixed version; a host that does not load mod_verto shows
//! the mod_verto advisory as mitigated; the summary line counts both. When the binary's
//! directory is writable by others the audit does not run it and reads the version from the
//! Event Socket instead.

mod common;

use std::process::{Command, Output};

use common::{Fleet, output_text as text};

const FLEET: &str = "vuln";

/// Where the audit reads the stand-in's version.
const SEEN: &str =
    "freeswitch -version of /usr/bin/freeswitch, which the running process started from";

/// `1.11.2` -> [1, 11, 2] (the catalogue's fixed versions are plain releases).
fn numbers(v: &str) -> [u32; 3] {
    let n: Vec<u32> = v.split('.').map(|p| p.parse().unwrap()).collect();
    [n[0], n[1], n[2]]
}

fn advisories() -> Vec<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_fsfleet"))
        .args(["audit", "--list-advisories", "--format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn audit_json(fleet: &Fleet) -> (Output, serde_json::Value) {
    let out = fleet.fsfleet(&["audit", "--format", "json"]);
    let doc = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    (out, doc)
}

fn result<'a>(host: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    host["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no {id} in {host}"))
}

#[test]
fn fs_vuln_findings_name_the_advisories_of_1_10_12_and_a_mitigation_shows() {
    let fleet = Fleet::fresh(FLEET, 2);
    let (stock, off) = (&fleet.hosts[0], &fleet.hosts[1]);
    // The second host (admin login, through sudo) does not load mod_verto.
    let modules = format!("{}/autoload_configs/modules.conf.xml", off.conf_dir);
    fleet.ssh_root(
        off,
        &format!(
            "set -e\nsed -i 's|<load module=\"mod_verto\"/>|<!-- <load module=\"mod_verto\"/> -->|' {modules}\n\
             grep -q '<!-- <load module=\"mod_verto\"/> -->' {modules}\n"
        ),
    );

    let all = advisories();
    let applies: Vec<&serde_json::Value> = all
        .iter()
        .filter(|a| {
            a["component"] == "FreeSWITCH" && numbers(a["fixed"].as_str().unwrap()) > [1, 10, 12]
        })
        .collect();
    assert!(applies.len() >= 3, "{all:?}");
    let verto = all
        .iter()
        .find(|a| a["mitigation"]["in_force_when"] == "mod_verto is not loaded")
        .expect("an advisory mitigated by not loading mod_verto");
    // Does this host's modules.conf.xml load the module an advisory's mitigation names? (The
    // stock tree loads mod_verto and not mod_xml_rpc; `off` no longer loads mod_verto.)
    let module_of = |a: &serde_json::Value| -> Option<String> {
        a["mitigation"]["in_force_when"]
            .as_str()?
            .strip_suffix(" is not loaded")
            .map(str::to_string)
    };
    let loads = |h: &common::TestHost, module: &str| -> bool {
        let conf = format!("{}/autoload_configs/modules.conf.xml", h.conf_dir);
        let n = fleet.ssh_root(
            h,
            &format!("grep -c '^[[:space:]]*<load module=\"{module}\"/>' {conf} || true"),
        );
        n.trim() != "0"
    };
    let mitigated_on = |h: &common::TestHost| -> Vec<String> {
        applies
            .iter()
            .filter_map(|a| {
                module_of(a)
                    .filter(|m| !loads(h, m))
                    .map(|_| a["id"].as_str().unwrap().to_string())
            })
            .collect()
    };
    let expected = [
        (stock.name.clone(), mitigated_on(stock)),
        (off.name.clone(), mitigated_on(off)),
    ];
    assert!(
        !expected[0]
            .1
            .iter()
            .any(|id| id == verto["id"].as_str().unwrap()),
        "stock loads mod_verto: {expected:?}"
    );
    assert!(
        expected[1]
            .1
            .iter()
            .any(|id| id == verto["id"].as_str().unwrap()),
        "{expected:?}"
    );

    let (out, doc) = audit_json(&fleet);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    for h in doc["hosts"].as_array().unwrap() {
        assert_eq!(h["status"], "audited", "{h}");
        let mitigated_here: &Vec<String> = &expected
            .iter()
            .find(|(n, _)| h["name"] == n.as_str())
            .unwrap()
            .1;
        for a in &all {
            let id = a["id"].as_str().unwrap();
            let ids = match a["ghsa"].as_str() {
                Some(g) if g != id => format!("{id} ({g})"),
                _ => id.to_string(),
            };
            let fixed = a["fixed"].as_str().unwrap();
            let r = result(h, a["control"].as_str().unwrap());
            let ev: Vec<&str> = r["evidence"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e.as_str().unwrap())
                .collect();
            // Root in a container may not read /proc/PID/exe (no CAP_SYS_PTRACE): the binary
            // the process started from, unchanged since, is run instead.
            let affected =
                format!("FreeSWITCH 1.10.12 ({SEEN}) is affected by {ids}: fixed in {fixed}");
            if mitigated_here.iter().any(|m| m == id) {
                let module = module_of(a).unwrap();
                assert_eq!(r["status"], "pass", "{r}");
                assert!(
                    ev[0].starts_with(&format!("mitigated by {module} is not loaded")),
                    "{r}"
                );
                assert_eq!(ev[1], affected, "{r}");
                assert!(
                    ev.contains(
                        &format!("autoload_configs/modules.conf.xml: {module} is not loaded")
                            .as_str()
                    ),
                    "{r}"
                );
            } else if applies.contains(&a) {
                assert_eq!(r["status"], "fail", "{r}");
                assert_eq!(ev[0], affected, "{r}");
            } else if a["component"] == "sofia-sip" {
                // No sofia-sip on the stand-in: the floor FreeSWITCH 1.10.12 builds against.
                assert_eq!(r["status"], "pass", "{r}");
                assert!(ev[0].starts_with("sofia-sip at least 1.13.17 ("), "{r}");
                assert!(ev[0].ends_with(&format!("fixed in {fixed}")), "{r}");
            } else {
                assert_eq!(r["status"], "pass", "{r}");
                assert!(
                    ev[0].starts_with(&format!("FreeSWITCH 1.10.12 ({SEEN}): not affected")),
                    "{r}"
                );
            }
        }
        let v = &h["summary"]["vulnerabilities"];
        assert_eq!(v["known"], applies.len(), "{v}");
        assert_eq!(v["mitigated"], mitigated_here.len(), "{v}");
        assert_eq!(v["undecided"], 0, "{v}");
    }

    // The text report: the summary heads each host; the failing advisories show the fix.
    let out = fleet.fsfleet(&["audit"]);
    let t = String::from_utf8_lossy(&out.stdout);
    let n = applies.len();
    for (h, (_, mitigated)) in [stock, off].into_iter().zip(&expected) {
        let m = mitigated.len();
        assert!(
            t.contains(&format!(
                "{} ({})\n  {n} known vulnerabilities, {m} mitigated (FS-VULN: ",
                h.name, h.address
            )),
            "{t}"
        );
    }
    assert!(
        t.contains("fix: Upgrade FreeSWITCH to 1.11.1 or later; until then, remove or comment out `<load module=\"mod_verto\"/>`"),
        "{t}"
    );

    // The binary's directory writable by others: fsfleet does not run it (it would run as root
    // code someone else may have put there) and reads the version from the Event Socket.
    fleet.ssh_root(stock, "chmod o+w /usr/bin");
    let (out, doc) = audit_json(&fleet);
    fleet.ssh_root(stock, "chmod o-w /usr/bin");
    let h = doc["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == stock.name.as_str())
        .unwrap_or_else(|| panic!("{}", text(&out)));
    let r = result(h, verto["control"].as_str().unwrap());
    assert_eq!(r["status"], "fail", "{r}");
    assert!(
        r["evidence"][0]
            .as_str()
            .unwrap()
            .starts_with("FreeSWITCH 1.10.12 (Event Socket status) is affected by "),
        "{r}"
    );
    assert_eq!(h["summary"]["vulnerabilities"]["known"], applies.len());
}
