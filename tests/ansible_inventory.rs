//! fsfleet reads Ansible inventories the way Ansible does: for every inventory under
//! tests/inventories/ansible/ (INI and YAML, groups of groups, ranges, vars at every level,
//! group_vars/ and host_vars/ files and directories), the real `ansible-inventory --list`
//! (ansible-core from PyPI, installed by scripts/setup into target/bench/venv) and fsfleet must
//! resolve the same hosts, addresses, ports, users and groups. Inventories Ansible refuses,
//! fsfleet refuses too, naming the file and line.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use fsfleet::inventory::{Inventory, local_login_user};
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn ansible_inventory() -> PathBuf {
    let bin = repo().join("target/bench/venv/bin/ansible-inventory");
    assert!(
        bin.is_file(),
        "{} is missing: run scripts/setup (`make test` does), which installs ansible-core from PyPI",
        bin.display()
    );
    bin
}

/// `ansible-inventory -i FILE --list`, isolated from any ansible.cfg or ~/.ansible of the
/// machine, with unparsable inventories an error (not a warning).
fn ansible_list(file: &Path) -> Result<Value, String> {
    let home = tempfile::tempdir().expect("tempdir");
    let cfg = home.path().join("ansible.cfg");
    std::fs::write(&cfg, "[defaults]\n").expect("write ansible.cfg");
    let out = Command::new(ansible_inventory())
        .args(["-i"])
        .arg(file)
        .arg("--list")
        .env("ANSIBLE_CONFIG", &cfg)
        .env("ANSIBLE_HOME", home.path())
        .env("ANSIBLE_LOCAL_TEMP", home.path())
        .env("ANSIBLE_INVENTORY_UNPARSED_FAILED", "true")
        .env("ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED", "true")
        .env("ANSIBLE_NOCOLOR", "1")
        .output()
        .expect("run ansible-inventory");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("ansible-inventory JSON: {e}"))
}

#[derive(Debug, Clone, PartialEq)]
struct Seen {
    address: String,
    port: u16,
    user: String,
    groups: BTreeSet<String>,
    sudo_password_env: Option<String>,
    /// `ansible_become` where the inventory sets it (unset, fsfleet's default applies: sudo
    /// unless root, as Ansible needs `become` to act as root).
    sudo: Option<bool>,
}

/// What Ansible connects to, per host: ansible_host (else the name), ansible_port (else 22),
/// ansible_user (else the local login, as ssh would), and every group the host is in, directly
/// or through `children`, but `all`.
fn ansible_view(list: &Value) -> BTreeMap<String, Seen> {
    let obj = list
        .as_object()
        .expect("ansible-inventory --list is an object");
    let hostvars = &list["_meta"]["hostvars"];
    let direct = |g: &str| -> Vec<String> {
        obj.get(g)
            .and_then(|v| v["hosts"].as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|h| h.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let children = |g: &str| -> Vec<String> {
        obj.get(g)
            .and_then(|v| v["children"].as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|h| h.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    fn hosts_below(
        g: &str,
        direct: &dyn Fn(&str) -> Vec<String>,
        children: &dyn Fn(&str) -> Vec<String>,
    ) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = direct(g).into_iter().collect();
        for c in children(g) {
            out.extend(hosts_below(&c, direct, children));
        }
        out
    }
    let mut all_hosts = hosts_below("all", &direct, &children);
    if let Some(hv) = hostvars.as_object() {
        all_hosts.extend(hv.keys().cloned());
    }
    let mut view = BTreeMap::new();
    for host in all_hosts {
        let vars = &hostvars[&host];
        let port = match &vars["ansible_port"] {
            Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
            Value::String(s) => s.trim().parse().ok(),
            _ => Some(22),
        }
        .unwrap_or_else(|| panic!("{host}: unusable ansible_port {}", vars["ansible_port"]));
        let groups = obj
            .keys()
            .filter(|g| *g != "_meta" && *g != "all")
            .filter(|g| hosts_below(g, &direct, &children).contains(&host))
            .cloned()
            .collect();
        let sudo_password_env = vars["ansible_become_password"].as_str().map(|s| {
            s.split(['\'', '"'])
                .nth(3)
                .unwrap_or_else(|| panic!("{host}: not an env lookup: {s}"))
                .to_string()
        });
        let sudo = match &vars["ansible_become"] {
            Value::Bool(b) => Some(*b),
            Value::String(s) => match s.to_ascii_lowercase().as_str() {
                "yes" | "true" | "on" | "1" => Some(true),
                "no" | "false" | "off" | "0" => Some(false),
                other => panic!("{host}: ansible_become {other}"),
            },
            Value::Null => None,
            other => panic!("{host}: ansible_become {other}"),
        };
        view.insert(
            host.clone(),
            Seen {
                sudo,
                address: vars["ansible_host"].as_str().unwrap_or(&host).to_string(),
                port,
                user: vars["ansible_user"]
                    .as_str()
                    .map(String::from)
                    .unwrap_or_else(local_login_user),
                groups,
                sudo_password_env,
            },
        );
    }
    view
}

fn fsfleet_view(inv: &Inventory) -> BTreeMap<String, Seen> {
    inv.hosts
        .iter()
        .map(|h| {
            (
                h.name.clone(),
                Seen {
                    address: h.address.clone(),
                    port: h.port,
                    user: h.user.clone(),
                    groups: h.groups.iter().cloned().collect(),
                    sudo_password_env: h.sudo_password_env.clone(),
                    sudo: Some(h.sudo),
                },
            )
        })
        .collect()
}

/// The inventory files of the comparison: hosts.* (and `inventory`, no extension) in each
/// directory under tests/inventories/ansible/ but `bad`.
fn inventories() -> Vec<PathBuf> {
    let root = repo().join("tests/inventories/ansible");
    let mut out = Vec::new();
    for dir in std::fs::read_dir(&root).expect("read tests/inventories/ansible") {
        let dir = dir.expect("dir entry").path();
        if !dir.is_dir() || dir.ends_with("bad") {
            continue;
        }
        for f in std::fs::read_dir(&dir).expect("read dir") {
            let f = f.expect("entry").path();
            let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if f.is_file() && (name.starts_with("hosts.") || name == "inventory") {
                out.push(f);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn fsfleet_resolves_every_inventory_exactly_as_ansible_inventory_does() {
    let files = inventories();
    assert!(files.len() >= 4, "{files:?}");
    let mut kinds = BTreeSet::new();
    let mut total = 0;
    for file in &files {
        kinds.insert(file.extension().map(|e| e.to_string_lossy().to_string()));
        let list = ansible_list(file)
            .unwrap_or_else(|e| panic!("ansible-inventory refused {}: {e}", file.display()));
        let want = ansible_view(&list);
        assert!(!want.is_empty(), "{}: ansible saw no host", file.display());
        let inv = Inventory::load_with(file, None)
            .unwrap_or_else(|e| panic!("fsfleet refused {}:\n{e}", file.display()));
        let got = fsfleet_view(&inv);
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "{}: host names",
            file.display()
        );
        for (name, w) in &want {
            let mut g = got[name].clone();
            if w.sudo.is_none() {
                g.sudo = None;
            }
            assert_eq!(&g, w, "{}: host {name}", file.display());
        }
        total += want.len();
    }
    // INI, YAML, JSON and a file without an extension were all compared.
    for k in [Some("ini"), Some("yml"), Some("yaml"), Some("json"), None] {
        assert!(kinds.contains(&k.map(String::from)), "{kinds:?}");
    }
    assert!(total >= 50, "only {total} hosts compared");
}

/// Inventories Ansible refuses are refused by fsfleet too, at the line Ansible names.
#[test]
fn what_ansible_refuses_fsfleet_refuses_at_the_same_line() {
    let dir = repo().join("tests/inventories/ansible/bad");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("read bad/")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    for file in files {
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string();
        let ansible =
            ansible_list(&file).expect_err(&format!("{name}: ansible-inventory accepted it"));
        assert!(
            ansible.contains("Failed to parse inventory"),
            "{name}: {ansible}"
        );
        let err =
            Inventory::load_with(&file, None).expect_err(&format!("{name}: fsfleet accepted it"));
        // The expected line is written in the file's first comment: `# line N`.
        let text = std::fs::read_to_string(&file).expect("read");
        let line: usize = text
            .lines()
            .find_map(|l| l.strip_prefix("# line "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name}: no `# line N` comment"));
        let d = err
            .diagnostics()
            .first()
            .unwrap_or_else(|| panic!("{name}: no located problem: {err}"));
        assert_eq!(d.line, line, "{name}: {err}");
        assert!(
            err.to_string()
                .starts_with(&format!("{}:{line}:", file.display())),
            "{err}"
        );
    }
}
