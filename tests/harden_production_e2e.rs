//! `fsfleet harden --level production` end to end on two fresh hosts (root, and `admin` through
//! sudo): `--check --diff` changes nothing and names every change; the run disables the stock
//! dialplan's toll-fraud paths and the unused modules (unloaded from the running FreeSWITCH);
//! every user whose voicemail PIN was its extension gets a distinct one, kept in the vault and
//! never printed; the audit then passes FS-DP-01/02/03, FS-SIP-05 and FS-MOD-01 besides every
//! baseline control; what the operator wrote is left as it was; a second run changes nothing.

mod common;

use std::process::{Command, Output};

use common::{Fleet, TestHost};

const FLEET: &str = "harden-prod";

/// The controls the production steps of this branch fix.
/// (`file-modes` fixes no audit control beyond the baseline's FS-CRED-05: checked by mode below.)
/// The stock users stay here, for the steps that change them (PINs, toll_allow, passwords);
/// `remove-stock-users` is proven in tests/harden_users_e2e.rs.
const SKIP: &str = "remove-stock-users";

const FIXED: &[&str] = &[
    "FS-DP-01",
    "FS-DP-02",
    "FS-DP-03",
    "FS-SIP-04",
    "FS-SIP-05",
    "FS-MOD-01",
];

fn fsfleet(fleet: &Fleet, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fsfleet"))
        .args(args)
        .arg(fleet.inventory())
        .args(["--no-progress"])
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

/// A checksum of the host's FreeSWITCH config tree.
fn conf_sum(fleet: &Fleet, h: &TestHost) -> String {
    fleet.ssh_root(
        h,
        &format!(
            "cd {} && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum",
            h.conf_dir
        ),
    )
}

fn statuses(report: &serde_json::Value) -> Vec<String> {
    report["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn production_level_fixes_the_dialplan_and_modules_controls_idempotently() {
    let fleet = Fleet::fresh(FLEET, 2);
    let _ = std::fs::remove_dir_all(fleet.dir.join(".fsfleet"));
    let (h1, h2) = (&fleet.hosts[0], &fleet.hosts[1]);

    // The operator gave user 1005 international calls on the second host, on purpose.
    fleet.ssh_root(
        h2,
        &format!(
            "sed -i 's/domestic,international,local/international,local/' {}/directory/default/1005.xml",
            h2.conf_dir
        ),
    );
    // A carrier gateway someone left world-readable on the first host.
    fleet.ssh_root(
        h1,
        &format!(
            "printf '%s\\n' '<include><gateway name=\"carrier\"><param name=\"username\" value=\"acct\"/><param name=\"password\" value=\"gwSecret9\"/></gateway></include>' > {d}/sip_profiles/external/carrier.xml && chmod 644 {d}/sip_profiles/external/carrier.xml",
            d = h1.conf_dir
        ),
    );
    let operator_1005 = fleet.ssh_root(
        h2,
        &format!("cat {}/directory/default/1005.xml", h2.conf_dir),
    );

    // --check --diff: every change named, nothing touched.
    let before: Vec<String> = fleet.hosts.iter().map(|h| conf_sum(&fleet, h)).collect();
    let check = fsfleet(
        &fleet,
        &[
            "harden",
            "--level",
            "production",
            "--skip",
            SKIP,
            "--skip",
            SKIP,
            "--check",
            "--diff",
        ],
    );
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
    let out = String::from_utf8_lossy(&check.stdout);
    for want in [
        "disable stock extension sip_uri",
        "disable stock extension international.example.com",
        "remove international from user 1000's toll_allow",
        "stop loading mod_verto at startup",
        "unload mod_signalwire from the running FreeSWITCH",
        "give user 1019 a distinct generated voicemail PIN",
        "-      <param name=\"vm-password\" value=\"1000\"/>",
        "+      <param name=\"vm-password\" value=\"********\"/>",
        "make /etc/freeswitch/sip_profiles/external/carrier.xml readable only by root and FreeSWITCH",
        "make /etc/freeswitch/autoload_configs/xml_rpc.conf.xml readable only by root and FreeSWITCH",
        "+    <!-- fsfleet harden dialplan: stock extension disabled",
    ] {
        assert!(out.contains(want), "--check --diff lacks {want:?}:\n{out}");
    }
    let after: Vec<String> = fleet.hosts.iter().map(|h| conf_sum(&fleet, h)).collect();
    assert_eq!(before, after, "--check changed a host");

    // The run (text with diffs, so the test sees everything an operator would).
    let run_text = fsfleet(
        &fleet,
        &[
            "harden",
            "--level",
            "production",
            "--skip",
            SKIP,
            "--diff",
            "-v",
            "--limit",
            &h2.name,
        ],
    );
    assert_eq!(run_text.status.code(), Some(0), "{}", text(&run_text));
    let run = fsfleet(
        &fleet,
        &[
            "harden",
            "--level",
            "production",
            "--skip",
            SKIP,
            "--format",
            "json",
            "-v",
            "--limit",
            &h1.name,
        ],
    );
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).expect("one JSON document");
    assert_eq!(statuses(&report), ["changed"], "{report}");
    let all = format!("{report} {}", text(&run_text));
    assert!(
        all.contains("unload mod_verto: +OK; module_exists mod_verto: false"),
        "{all}"
    );
    assert!(
        all.contains("user 1005") && all.contains("left alone"),
        "the operator's toll_allow is named: {all}"
    );

    for h in [h1, h2] {
        // The running FreeSWITCH no longer has the modules; the stock text stays in comments.
        let exists = fleet.ssh_root(
            h,
            "fs_cli -x 'module_exists mod_verto'; echo; fs_cli -x 'module_exists mod_signalwire'",
        );
        assert_eq!(
            exists.split_whitespace().collect::<Vec<_>>(),
            ["false", "false"],
            "{}",
            h.name
        );
        let dp = fleet.ssh_root(h, &format!("cat {}/dialplan/default.xml", h.conf_dir));
        assert!(
            dp.contains("<!-- fsfleet harden dialplan: stock extension disabled (toll fraud): FS-DP-01\n    <extension name=\"sip_uri\">"),
            "{}",
            h.name
        );
    }
    // The operator's toll_allow stays; only the PIN (the extension) and the shared password
    // changed in that file.
    let now_1005 = fleet.ssh_root(
        h2,
        &format!("cat {}/directory/default/1005.xml", h2.conf_dir),
    );
    assert!(
        now_1005.contains("value=\"international,local\""),
        "{now_1005}"
    );
    let but_pin = |t: &str| -> Vec<String> {
        t.lines()
            // per-user-passwords gives 1005 its own password too: credentials aside, the same.
            .filter(|l| !l.contains("vm-password") && !l.contains("name=\"password\""))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        but_pin(&now_1005),
        but_pin(&operator_1005),
        "an operator-written toll_allow is never touched"
    );

    // The PINs: distinct, in the vault per host and user, on the hosts, never printed.
    let vault: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fleet.dir.join(".fsfleet/vault.json")).unwrap(),
    )
    .unwrap();
    for h in [h1, h2] {
        let users = &vault["hosts"][&h.name]["users"];
        let mut pins = Vec::new();
        for id in 1000..=1019 {
            let c = &users[id.to_string()]["vm_password"];
            assert!(c["pending"].is_null(), "{} {id}: {c}", h.name);
            let pin = c["active"]["value"]
                .as_str()
                .unwrap_or_else(|| panic!("{} {id}: {vault}", h.name))
                .to_string();
            assert!(pin.len() == 6 && pin != id.to_string(), "{pin}");
            let file = fleet.ssh_root(h, &format!("cat {}/directory/default/{id}.xml", h.conf_dir));
            assert!(file.contains(&format!("name=\"vm-password\" value=\"{pin}\"")));
            for out in [&all, &text(&check)] {
                assert!(
                    !out.contains(&format!("value=\"{pin}\"")),
                    "PIN of {id} shown"
                );
            }
            pins.push(pin);
        }
        pins.sort();
        pins.dedup();
        assert_eq!(pins.len(), 20, "distinct PINs on {}", h.name);
        let mode = fleet.ssh_root(
            h,
            &format!("stat -c %a {}/directory/default/1000.xml", h.conf_dir),
        );
        let bits = u32::from_str_radix(mode.trim(), 8).unwrap();
        assert_eq!(
            bits & 0o007,
            0,
            "a file holding a PIN is not world-readable: {mode}"
        );
    }
    // file-modes: the gateway and the stock files with credentials are no one else's now.
    for (h, rel) in [
        (h1, "sip_profiles/external/carrier.xml"),
        (h1, "autoload_configs/xml_rpc.conf.xml"),
        (h2, "autoload_configs/amqp.conf.xml"),
    ] {
        let st = fleet.ssh_root(h, &format!("stat -c '%a %U:%G' {}/{rel}", h.conf_dir));
        let (mode, owner) = st.trim().split_once(' ').unwrap();
        let bits = u32::from_str_radix(mode, 8).unwrap();
        assert_eq!(bits & 0o007, 0, "{} {rel}: {st}", h.name);
        assert!(
            owner.ends_with(":freeswitch") || owner.starts_with("freeswitch:"),
            "{st}"
        );
    }
    assert!(!all.contains("gwSecret9") && !text(&check).contains("gwSecret9"));
    let pin_1001 = vault["hosts"][&h1.name]["users"]["1001"]["vm_password"]["active"]["value"]
        .as_str()
        .unwrap()
        .to_string();
    let show = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_fsfleet"))
            .args(["creds", "show", &h1.name, "--user", "1001"])
            .args(extra)
            .arg(fleet.inventory())
            .output()
            .unwrap()
    };
    let masked = show(&[]);
    assert!(masked.status.success(), "{}", text(&masked));
    assert!(!text(&masked).contains(&pin_1001) && text(&masked).contains("vm_password"));
    assert!(text(&show(&["--reveal"])).contains(&pin_1001));

    // The audit: the controls these steps fix pass (FS-DP-03 on the host whose operator kept
    // international for 1005 excepted), and every baseline control still does.
    let catalogue: serde_json::Value = serde_json::from_slice(
        &Command::new(env!("CARGO_BIN_EXE_fsfleet"))
            .args(["audit", "--list-controls", "--format", "json"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let baseline: Vec<String> = catalogue
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["baseline"] == true)
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    let audit = fsfleet(&fleet, &["audit", "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_slice(&audit.stdout).expect("audit JSON");
    for h in doc["hosts"].as_array().unwrap() {
        let name = h["name"].as_str().unwrap();
        for r in h["results"].as_array().unwrap() {
            let id = r["id"].as_str().unwrap();
            let expect_fail = name == h2.name && id == "FS-DP-03";
            if FIXED.contains(&id) || baseline.iter().any(|b| b == id) {
                let want = if expect_fail { "fail" } else { "pass" };
                assert_eq!(r["status"], want, "{name} {id}: {r}");
            }
        }
    }

    // A second run changes nothing, at either level.
    let sums: Vec<String> = fleet.hosts.iter().map(|h| conf_sum(&fleet, h)).collect();
    let again = fsfleet(
        &fleet,
        &[
            "harden",
            "--level",
            "production",
            "--skip",
            SKIP,
            "--format",
            "json",
        ],
    );
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    let report: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(statuses(&report), ["ok", "ok"], "{report}");
    let vault_again = std::fs::read_to_string(fleet.dir.join(".fsfleet/vault.json")).unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&vault_again).unwrap()["hosts"][&h1.name]["users"],
        vault["hosts"][&h1.name]["users"],
        "the second run keeps every PIN"
    );
    let sums_after: Vec<String> = fleet.hosts.iter().map(|h| conf_sum(&fleet, h)).collect();
    assert_eq!(sums, sums_after, "the second run changed a file");

    // Forgetting the host says the users' PINs go too.
    let forget = Command::new(env!("CARGO_BIN_EXE_fsfleet"))
        .args(["creds", "forget", &h1.name])
        .arg(fleet.inventory())
        .output()
        .unwrap();
    assert!(forget.status.success(), "{}", text(&forget));
    assert!(
        text(&forget).contains("and the credentials of 20 user(s)"),
        "{}",
        text(&forget)
    );
}
