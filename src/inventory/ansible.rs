//! Ansible inventories as they are: an INI or YAML inventory file, with `group_vars/` and
//! `host_vars/` beside it, resolved into the same [`Host`](super::Host)s as a TOML inventory.
//!
//! Reading follows ansible-core: groups and `children` (any depth), `all` and `ungrouped`, host
//! ranges (`fs[01:20].example.net`, `[a:f]`, a step), `host:port`, and variable precedence as
//! `ansible-inventory` resolves it: the `all` group's inline vars, then the host's other groups'
//! inline vars (parents before children: by depth, `ansible_group_priority`, name), then
//! `group_vars/all`, then `group_vars/GROUP` in the same order, then the host's inline vars, then
//! `host_vars/HOST`. A later level replaces a variable of an earlier one.
//!
//! Each host's resolved variables are then mapped onto fsfleet's settings (`ansible_host` ->
//! address, `ansible_port`, `ansible_user`, `ansible_ssh_private_key_file`, `ansible_become`,
//! passwords only as `{{ lookup('env', 'NAME') }}`, fsfleet's own keys as `fsfleet_KEY`) and
//! written as a TOML inventory of fully resolved hosts, which the TOML reader validates: the same
//! checks apply to both formats, and every problem is reported at the line of the Ansible file
//! (or vars file) that set the value.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::error::{Diagnostic, InventoryError, MAX_DIAGNOSTICS};
use super::{Inventory, load};
use crate::ssh::config::SshConfig;

mod ini;
mod pattern;
mod yaml;

/// A variable's value as Ansible holds it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Val {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Val>),
    Map(Vec<(String, Val)>),
    /// An Ansible Vault value (`!vault`): fsfleet cannot decrypt it.
    Vault,
}

/// Where something was written (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
}

impl Origin {
    fn diag(&self, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: Some(self.file.clone()),
            line: self.line,
            col: self.col,
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Var {
    pub value: Val,
    pub at: Origin,
}

type Vars = BTreeMap<String, Var>;

#[derive(Debug)]
struct Group {
    name: String,
    at: Origin,
    vars: Vars,
    children: Vec<String>,
    hosts: Vec<String>,
    priority: i64,
}

#[derive(Debug)]
struct HostDef {
    name: String,
    at: Origin,
    vars: Vars,
}

/// The inventory as ansible's InventoryData holds it after parsing.
#[derive(Debug, Default)]
pub(crate) struct Model {
    groups: Vec<Group>,
    hosts: Vec<HostDef>,
    /// Host name -> index in `hosts`; (group, host) memberships: lookups stay O(1) on
    /// inventories of thousands of hosts from a few range lines.
    host_index: HashMap<String, usize>,
    members: HashSet<(String, String)>,
}

impl Model {
    fn new(file: &Path) -> Model {
        let mut m = Model::default();
        let at = Origin {
            file: file.to_path_buf(),
            line: 1,
            col: 1,
        };
        m.add_group("all", &at);
        m.add_group("ungrouped", &at);
        m
    }

    fn group_mut(&mut self, name: &str) -> Option<&mut Group> {
        self.groups.iter_mut().find(|g| g.name == name)
    }

    fn add_group(&mut self, name: &str, at: &Origin) {
        if self.group_mut(name).is_none() {
            self.groups.push(Group {
                name: name.to_string(),
                at: at.clone(),
                vars: Vars::new(),
                children: Vec::new(),
                hosts: Vec::new(),
                priority: 1,
            });
        }
    }

    fn add_host(&mut self, name: &str, group: &str, port: Option<i64>, at: &Origin) {
        if !self.host_index.contains_key(name) {
            self.host_index.insert(name.to_string(), self.hosts.len());
            self.hosts.push(HostDef {
                name: name.to_string(),
                at: at.clone(),
                vars: Vars::new(),
            });
        }
        self.add_group(group, at);
        if self.members.insert((group.to_string(), name.to_string()))
            && let Some(g) = self.group_mut(group)
        {
            g.hosts.push(name.to_string());
        }
        if let Some(p) = port {
            self.set_host_var(
                name,
                "ansible_port",
                Var {
                    value: Val::Int(p),
                    at: at.clone(),
                },
            );
        }
    }

    fn set_host_var(&mut self, host: &str, key: &str, var: Var) {
        if let Some(h) = self
            .host_index
            .get(host)
            .and_then(|&i| self.hosts.get_mut(i))
        {
            h.vars.insert(key.to_string(), var);
        }
    }

    fn set_group_var(&mut self, group: &str, key: &str, var: Var) {
        if let Some(g) = self.group_mut(group) {
            if key == "ansible_group_priority"
                && let Some(p) = int_of(&var.value)
            {
                g.priority = p;
            }
            g.vars.insert(key.to_string(), var);
        }
    }

    fn add_child(&mut self, parent: &str, child: &str, at: &Origin, diags: &mut Vec<Diagnostic>) {
        if parent == child || self.descends(child, parent) {
            diags.push(at.diag(format!(
                "group `{child}` as a child of `{parent}` makes a loop of groups: remove one of the two"
            )));
            return;
        }
        self.add_group(child, at);
        if let Some(p) = self.group_mut(parent)
            && !p.children.iter().any(|c| c == child)
        {
            p.children.push(child.to_string());
        }
    }

    /// Whether `to` is `from` or below it.
    fn descends(&self, from: &str, to: &str) -> bool {
        let mut stack = vec![from.to_string()];
        let mut seen = HashSet::new();
        while let Some(g) = stack.pop() {
            if g == to {
                return true;
            }
            if seen.insert(g.clone())
                && let Some(group) = self.groups.iter().find(|x| x.name == g)
            {
                stack.extend(group.children.iter().cloned());
            }
        }
        false
    }

    /// ansible's `reconcile_inventory`: top groups under `all`, hosts in no group in
    /// `ungrouped`, and out of `ungrouped` when they are in another group.
    fn reconcile(&mut self) {
        let with_parent: HashSet<String> = self
            .groups
            .iter()
            .flat_map(|g| g.children.iter().cloned())
            .collect();
        let tops: Vec<String> = self
            .groups
            .iter()
            .filter(|g| g.name != "all" && !with_parent.contains(&g.name))
            .map(|g| g.name.clone())
            .collect();
        if let Some(all) = self.group_mut("all") {
            for t in tops {
                if !all.children.contains(&t) {
                    all.children.push(t);
                }
            }
        }
        let in_other: HashSet<String> = self
            .groups
            .iter()
            .filter(|g| g.name != "all" && g.name != "ungrouped")
            .flat_map(|g| g.hosts.iter().cloned())
            .collect();
        let names: Vec<String> = self.hosts.iter().map(|h| h.name.clone()).collect();
        if let Some(u) = self.group_mut("ungrouped") {
            u.hosts.retain(|h| !in_other.contains(h));
            let mut listed: HashSet<String> = u.hosts.iter().cloned().collect();
            for n in names {
                if !in_other.contains(&n) && listed.insert(n.clone()) {
                    u.hosts.push(n);
                }
            }
        }
    }

    /// Each group's depth: its longest path from `all` (ansible raises a child's depth to its
    /// parent's + 1 whenever it is added under it).
    fn depths(&self) -> HashMap<String, i64> {
        let mut depth: HashMap<String, i64> = HashMap::new();
        depth.insert("all".into(), 0);
        // The group graph has no loop (add_child refuses one): relax until nothing changes.
        let mut changed = true;
        while changed {
            changed = false;
            for g in &self.groups {
                let Some(&d) = depth.get(&g.name) else {
                    continue;
                };
                for c in &g.children {
                    let cur = depth.get(c).copied().unwrap_or(-1);
                    if cur < d + 1 {
                        depth.insert(c.clone(), d + 1);
                        changed = true;
                    }
                }
            }
        }
        depth
    }

    /// For every host, its groups (direct and through children), `all` first, then ansible's
    /// order: depth, priority, name.
    fn groups_by_host(&self, depth: &HashMap<String, i64>) -> HashMap<&str, Vec<&Group>> {
        let mut direct: HashMap<&str, Vec<&str>> = HashMap::new();
        let mut parents: HashMap<&str, Vec<&str>> = HashMap::new();
        for g in &self.groups {
            for h in &g.hosts {
                direct.entry(h).or_default().push(&g.name);
            }
            for c in &g.children {
                parents.entry(c).or_default().push(&g.name);
            }
        }
        let by_name: HashMap<&str, &Group> =
            self.groups.iter().map(|g| (g.name.as_str(), g)).collect();
        let mut out = HashMap::new();
        for h in &self.hosts {
            let mut member: HashSet<&str> = HashSet::from(["all"]);
            let mut stack: Vec<&str> = direct.get(h.name.as_str()).cloned().unwrap_or_default();
            while let Some(g) = stack.pop() {
                if member.insert(g) {
                    stack.extend(parents.get(g).into_iter().flatten().copied());
                }
            }
            let mut groups: Vec<&Group> = member
                .iter()
                .filter_map(|g| by_name.get(g).copied())
                .collect();
            groups.sort_by(|a, b| {
                let key = |g: &Group| (depth.get(&g.name).copied().unwrap_or(0), g.priority);
                key(a).cmp(&key(b)).then_with(|| a.name.cmp(&b.name))
            });
            out.insert(h.name.as_str(), groups);
        }
        out
    }
}

fn int_of(v: &Val) -> Option<i64> {
    match v {
        Val::Int(n) => Some(*n),
        Val::Str(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Whether a file given without `--inventory-format` is an Ansible inventory rather than TOML:
/// `.ini`, `.yml`, `.yaml`, `.json`, `.cfg` are; `.toml` is not; otherwise the content decides
/// (a TOML inventory always has `[[hosts]]`).
pub(super) fn detect(path: &Path, text: &str) -> bool {
    match extension(path).as_deref() {
        Some("toml") => false,
        Some("ini" | "yml" | "yaml" | "json" | "cfg") => true,
        _ => !text.lines().any(|l| {
            let l: String = l.chars().filter(|c| !c.is_whitespace()).collect();
            l.starts_with("[[hosts]]") || l.starts_with("[defaults]") || l.starts_with("[groups.")
        }),
    }
}

fn extension(path: &Path) -> Option<String> {
    path.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
}

/// Whether an Ansible inventory file is YAML (else INI): by extension, else by content (ansible
/// tries its YAML reader before its INI one).
fn is_yaml(path: &Path, text: &str) -> bool {
    match extension(path).as_deref() {
        Some("yml" | "yaml" | "json") => true,
        Some("ini" | "cfg") => false,
        _ => text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
            .is_some_and(|l| l.starts_with("---") || l.starts_with('{') || l.ends_with(':')),
    }
}

fn vault_file(text: &str) -> bool {
    text.trim_start().starts_with("$ANSIBLE_VAULT;")
}

fn invalid(path: &Path, mut diags: Vec<Diagnostic>) -> InventoryError {
    let mut seen = HashSet::new();
    diags.retain(|d| seen.insert((d.file.clone(), d.line, d.col, d.message.clone())));
    diags.sort_by(|a, b| {
        let main = |d: &Diagnostic| d.file.as_deref() != Some(path);
        (main(a), &a.file, a.line, a.col).cmp(&(main(b), &b.file, b.line, b.col))
    });
    let omitted = diags.len().saturating_sub(MAX_DIAGNOSTICS);
    diags.truncate(MAX_DIAGNOSTICS);
    InventoryError::Invalid {
        path: path.to_path_buf(),
        diagnostics: diags,
        omitted,
    }
}

/// Reads an Ansible inventory file; see the module docs.
pub(super) fn load(path: &Path, ssh: Option<&SshConfig>) -> Result<Inventory, InventoryError> {
    let top = Origin {
        file: path.to_path_buf(),
        line: 1,
        col: 1,
    };
    let read_err = |source| InventoryError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if meta.is_dir() {
        return Err(invalid(
            path,
            vec![top.diag(
                "an inventory directory is not supported: give fsfleet one inventory file (INI or YAML); \
                 its group_vars/ and host_vars/ are read from beside it",
            )],
        ));
    }
    let bytes = std::fs::read(path).map_err(read_err)?;
    if is_script(&meta, &bytes) {
        return Err(invalid(
            path,
            vec![top.diag(
                "this file is a program: Ansible would run it as a dynamic inventory script, which fsfleet does not; \
                 save its output as a static file (`ansible-inventory -i FILE --list --yaml > hosts.yml`) \
                 and give fsfleet that",
            )],
        ));
    }
    let text = String::from_utf8(bytes)
        .map_err(|e| read_err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
    resolve(&text, path, ssh)
}

/// An executable file that is a program (`#!` or not text): a dynamic inventory script. A static
/// inventory with an execute bit (a file from a Windows share) is read as one, as Ansible does
/// after its script reader fails on it.
pub(super) fn is_script(meta: &std::fs::Metadata, bytes: &[u8]) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.is_file()
        && meta.permissions().mode() & 0o111 != 0
        && (bytes.starts_with(b"#!") || std::str::from_utf8(bytes).is_err())
}

/// Resolves Ansible inventory text read from `path` (whose directory holds `group_vars/` and
/// `host_vars/`).
pub(super) fn resolve(
    text: &str,
    path: &Path,
    ssh: Option<&SshConfig>,
) -> Result<Inventory, InventoryError> {
    let top = Origin {
        file: path.to_path_buf(),
        line: 1,
        col: 1,
    };
    if vault_file(text) {
        return Err(invalid(
            path,
            vec![top.diag(
                "this inventory is encrypted with Ansible Vault, which fsfleet cannot decrypt: \
                 give fsfleet a decrypted copy (`ansible-vault view`) kept out of git",
            )],
        ));
    }
    let mut diags = Vec::new();
    let mut model = Model::new(path);
    if is_yaml(path, text) {
        yaml::parse(text, &top, &mut model, &mut diags);
    } else {
        ini::parse(text, &top, &mut model, &mut diags);
    }
    if !diags.is_empty() {
        return Err(invalid(path, diags));
    }
    model.reconcile();
    if model.hosts.is_empty() {
        return Err(invalid(
            path,
            vec![top.diag("the inventory has no hosts: add at least one host to a group")],
        ));
    }
    // As written (not made absolute): the vars files are named in messages the way the
    // operator named the inventory.
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut files = VarsFiles {
        dir,
        groups: HashMap::new(),
        diags: Vec::new(),
    };
    let depth = model.depths();
    let mut groups_by_host = model.groups_by_host(&depth);
    let mut resolved: Vec<(&HostDef, Vec<String>, Vars)> = Vec::new();
    for h in &model.hosts {
        let groups = groups_by_host.remove(h.name.as_str()).unwrap_or_default();
        // all inline, groups inline, group_vars/all, group_vars/GROUP, host inline, host_vars.
        let mut vars = Vars::new();
        for g in &groups {
            vars.extend(g.vars.clone());
        }
        for g in &groups {
            vars.extend(files.group(&g.name));
        }
        vars.extend(h.vars.clone());
        vars.extend(files.load("host_vars", &h.name));
        let names = groups
            .iter()
            .filter(|g| g.name != "all")
            .map(|g| g.name.clone())
            .collect();
        resolved.push((h, names, vars));
    }
    diags.append(&mut files.diags);
    let used: HashSet<&str> = resolved
        .iter()
        .flat_map(|(_, g, _)| g.iter().map(String::as_str))
        .collect();
    let groups: Vec<&Group> = model
        .groups
        .iter()
        .filter(|g| g.name != "all" && used.contains(g.name.as_str()))
        .collect();

    let mut out = Toml::default();
    for g in &groups {
        out.line(
            format!("[groups.{}]", quote(&g.name)),
            Src::Name(g.at.clone()),
        );
    }
    for (h, group_names, vars) in &resolved {
        out.line("[[hosts]]".into(), Src::Name(h.at.clone()));
        out.line(
            format!("name = {}", quote(&h.name)),
            Src::Name(h.at.clone()),
        );
        let list: Vec<toml::Value> = group_names
            .iter()
            .map(|g| toml::Value::String(g.clone()))
            .collect();
        out.line(
            format!("groups = {}", toml::Value::Array(list)),
            Src::Name(h.at.clone()),
        );
        settings(vars, &mut out, &mut diags);
    }
    let parsed = load::parse(&out.text, path, ssh);
    let remap = |d: &Diagnostic| -> Diagnostic {
        match out.src.get(d.line.saturating_sub(1)) {
            Some(Src::Var { at, var, key }) => {
                let mut message = d.message.replace(&format!("`{key}`"), &format!("`{var}`"));
                if let Some(rest) = message.strip_prefix(&format!("{key} ")) {
                    message = format!("{var} {rest}");
                }
                if !message.contains(var.as_str()) {
                    message = format!("{var}: {message}");
                }
                at.diag(message)
            }
            Some(Src::Name(at)) => at.diag(d.message.clone()),
            None => top.diag(d.message.clone()),
        }
    };
    match parsed {
        Ok(mut inv) if diags.is_empty() => {
            for (_, d) in inv.missing_files.iter_mut() {
                *d = remap(d);
            }
            Ok(inv)
        }
        Ok(_) => Err(invalid(path, diags)),
        Err(e) => {
            diags.extend(e.diagnostics().iter().map(remap));
            if diags.is_empty() {
                return Err(e);
            }
            Err(invalid(path, diags))
        }
    }
}

/// `group_vars/` and `host_vars/` beside the inventory, each group's read once.
struct VarsFiles {
    dir: PathBuf,
    groups: HashMap<String, Vars>,
    diags: Vec<Diagnostic>,
}

impl VarsFiles {
    fn group(&mut self, name: &str) -> Vars {
        if let Some(v) = self.groups.get(name) {
            return v.clone();
        }
        let v = self.load("group_vars", name);
        self.groups.insert(name.to_string(), v.clone());
        v
    }

    /// ansible's `host_group_vars`: the first of `NAME`, `NAME.yml`, `NAME.yaml`, `NAME.json`
    /// that exists; a directory is read whole (sorted, recursively; hidden and `~` files
    /// skipped, only files without an extension or with one of those).
    fn load(&mut self, kind: &str, name: &str) -> Vars {
        let mut vars = Vars::new();
        if name.contains('/') || name.starts_with('.') {
            return vars;
        }
        let base = self.dir.join(kind);
        let found = ["", ".yml", ".yaml", ".json"]
            .iter()
            .map(|ext| base.join(format!("{name}{ext}")))
            .find(|p| p.exists());
        let Some(found) = found else {
            return vars;
        };
        let mut files = Vec::new();
        if found.is_dir() {
            dir_files(&found, &mut files);
        } else {
            files.push(found);
        }
        for f in files {
            let at = Origin {
                file: f.clone(),
                line: 1,
                col: 1,
            };
            let text = match std::fs::read_to_string(&f) {
                Ok(t) => t,
                Err(e) => {
                    self.diags
                        .push(at.diag(format!("cannot read this vars file: {e}")));
                    continue;
                }
            };
            if vault_file(&text) {
                self.diags.push(at.diag(
                    "this vars file is encrypted with Ansible Vault, which fsfleet cannot decrypt: \
                     move the variables fsfleet needs into a plain file beside it",
                ));
                continue;
            }
            for (k, v) in yaml::vars_file(&text, &at, &mut self.diags) {
                vars.insert(k, v);
            }
        }
        vars
    }
}

fn dir_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut names: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    names.sort();
    for p in names {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        if name.starts_with('.') || name.ends_with('~') {
            continue;
        }
        let ext = extension(&p);
        if p.is_dir() && ext.is_none() {
            dir_files(&p, out);
        } else if p.is_file() && matches!(ext.as_deref(), None | Some("yml" | "yaml" | "json")) {
            out.push(p);
        }
    }
}

/// Where each line of the generated TOML came from.
enum Src {
    Name(Origin),
    Var {
        at: Origin,
        var: String,
        key: &'static str,
    },
}

#[derive(Default)]
struct Toml {
    text: String,
    src: Vec<Src>,
}

impl Toml {
    fn line(&mut self, line: String, src: Src) {
        self.text.push_str(&line);
        self.text.push('\n');
        self.src.push(src);
    }
}

fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// How a variable's value becomes a TOML value.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Text,
    Int,
    Bool,
    Seconds,
    List,
    /// A password: only as `{{ lookup('env', 'NAME') }}`, taken as the variable's NAME.
    EnvLookup,
}

/// Ansible's connection variables fsfleet reads. Where two spellings of one setting are both set,
/// they must agree (see `settings`).
const ANSIBLE_VARS: &[(&str, &str, Kind)] = &[
    ("ansible_host", "address", Kind::Text),
    ("ansible_ssh_host", "address", Kind::Text),
    ("ansible_port", "port", Kind::Int),
    ("ansible_ssh_port", "port", Kind::Int),
    ("ansible_user", "user", Kind::Text),
    ("ansible_ssh_user", "user", Kind::Text),
    ("ansible_ssh_private_key_file", "identity_file", Kind::Text),
    ("ansible_private_key_file", "identity_file", Kind::Text),
    ("ansible_become", "sudo", Kind::Bool),
    (
        "ansible_become_password",
        "sudo_password_env",
        Kind::EnvLookup,
    ),
    ("ansible_become_pass", "sudo_password_env", Kind::EnvLookup),
    ("ansible_sudo_pass", "sudo_password_env", Kind::EnvLookup),
    ("ansible_password", "password_env", Kind::EnvLookup),
    ("ansible_ssh_pass", "password_env", Kind::EnvLookup),
    ("ansible_ssh_password", "password_env", Kind::EnvLookup),
];

/// fsfleet's own settings, as `fsfleet_KEY` variables.
const FSFLEET_VARS: &[(&str, Kind)] = &[
    ("password_env", Kind::Text),
    ("sudo_password_env", Kind::Text),
    ("jump", Kind::Text),
    ("conf_dir", Kind::Text),
    ("sip_allow_from", Kind::List),
    ("connect_timeout", Kind::Seconds),
    ("known_hosts", Kind::Text),
    ("host_key_policy", Kind::Text),
    ("fail2ban_maxretry", Kind::Int),
    ("fail2ban_findtime", Kind::Int),
    ("fail2ban_bantime", Kind::Int),
    ("fail2ban_ignore", Kind::List),
    ("apt_lock_timeout", Kind::Int),
    ("waive", Kind::List),
    ("tls_cert", Kind::Text),
    ("tls_key", Kind::Text),
];

/// fsfleet settings that have an Ansible variable: `fsfleet_address` would compete with it.
const ANSIBLE_SPELLED: &[(&str, &str)] = &[
    ("address", "ansible_host"),
    ("port", "ansible_port"),
    ("user", "ansible_user"),
    ("identity_file", "ansible_ssh_private_key_file"),
    ("sudo", "ansible_become"),
];

/// Writes one host's fsfleet settings from its resolved variables.
fn settings(vars: &Vars, out: &mut Toml, diags: &mut Vec<Diagnostic>) {
    let mut set: HashMap<&'static str, (String, Val)> = HashMap::new();
    let mut emit =
        |var: &str, key: &'static str, kind: Kind, v: &Var, diags: &mut Vec<Diagnostic>| {
            if let Some((first, value)) = set.get(key) {
                // Both spellings with one value (an inventory half migrated) mean no doubt;
                // with two, Ansible would silently take the later spelling of its list.
                if *value != v.value {
                    diags.push(v.at.diag(format!(
                    "`{var}` and `{first}` both set fsfleet's {key}, to different values: keep one"
                )));
                }
                return;
            }
            set.insert(key, (var.to_string(), v.value.clone()));
            if let Some(value) = to_toml(var, kind, v, diags) {
                out.line(
                    format!("{key} = {value}"),
                    Src::Var {
                        at: v.at.clone(),
                        var: var.to_string(),
                        key,
                    },
                );
            }
        };
    for (var, key, kind) in ANSIBLE_VARS {
        if let Some(v) = vars.get(*var) {
            emit(var, key, *kind, v, diags);
        }
    }
    for (name, v) in vars {
        if let Some(key) = name.strip_prefix("fsfleet_") {
            match FSFLEET_VARS.iter().find(|(k, _)| *k == key) {
                Some((k, kind)) => emit(name, k, *kind, v, diags),
                None => {
                    let msg = if let Some((_, a)) = ANSIBLE_SPELLED.iter().find(|(k, _)| *k == key)
                    {
                        format!("`{name}` is not read: set Ansible's `{a}` instead")
                    } else if matches!(key, "password" | "sudo_password") {
                        format!(
                            "`{name}` is not accepted: a password must never be written in the inventory; \
                             export it in an environment variable and set fsfleet_{key}_env to that variable's name"
                        )
                    } else {
                        let known = FSFLEET_VARS.iter().map(|(k, _)| *k);
                        match load::closest(key, known) {
                            Some(s) => format!(
                                "unknown fsfleet variable `{name}`: did you mean `fsfleet_{s}`?"
                            ),
                            None => format!(
                                "unknown fsfleet variable `{name}`: fsfleet reads fsfleet_{}",
                                FSFLEET_VARS
                                    .iter()
                                    .map(|(k, _)| *k)
                                    .collect::<Vec<_>>()
                                    .join(", fsfleet_")
                            ),
                        }
                    };
                    diags.push(v.at.diag(msg));
                }
            }
            continue;
        }
        connection_var(name, v, vars, diags);
    }
}

/// Ansible variables that would make Ansible reach the host in a way fsfleet does not.
fn connection_var(name: &str, v: &Var, vars: &Vars, diags: &mut Vec<Diagnostic>) {
    let text = match &v.value {
        Val::Str(s) => s.trim().to_string(),
        _ => return,
    };
    match name {
        "ansible_connection"
            if !matches!(
                text.as_str(),
                "ssh"
                    | "smart"
                    | "paramiko"
                    | "paramiko_ssh"
                    | "ansible.builtin.ssh"
                    | "ansible.builtin.paramiko_ssh"
            ) =>
        {
            diags.push(v.at.diag(format!(
                "ansible_connection `{text}`: fsfleet reaches hosts over SSH only; \
                 remove the host from the inventory fsfleet reads"
            )))
        }
        "ansible_become_method" if text != "sudo" && text != "ansible.builtin.sudo" => {
            diags.push(v.at.diag(format!(
                "ansible_become_method `{text}`: fsfleet becomes root with sudo only"
            )))
        }
        "ansible_become_user" if text != "root" => diags.push(v.at.diag(format!(
            "ansible_become_user `{text}`: fsfleet needs root (sudo to root)"
        ))),
        "ansible_ssh_common_args" | "ansible_ssh_extra_args"
            if !vars.contains_key("fsfleet_jump")
                && (text.contains("ProxyJump")
                    || text.contains("ProxyCommand")
                    || text.split_whitespace().any(|w| w == "-J")) =>
        {
            diags.push(v.at.diag(format!(
                "{name} goes through a bastion, and fsfleet does not read ssh arguments: \
                 set fsfleet_jump to the bastion (an inventory host, or user@host:port)"
            )))
        }
        _ => {}
    }
}

/// ansible's `boolean()`.
fn ansible_bool(v: &Val) -> Option<bool> {
    match v {
        Val::Bool(b) => Some(*b),
        Val::Int(1) => Some(true),
        Val::Int(0) => Some(false),
        Val::Str(s) => match s.trim().to_ascii_lowercase().as_str() {
            "y" | "yes" | "on" | "1" | "true" | "t" => Some(true),
            "n" | "no" | "off" | "0" | "false" | "f" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// `{{ lookup('env', 'NAME') }}` (also `ansible.builtin.env`, either quotes): NAME.
fn env_lookup(s: &str) -> Option<&str> {
    let inner = s.trim().strip_prefix("{{")?.strip_suffix("}}")?.trim();
    let args = inner
        .strip_prefix("lookup")?
        .trim_start()
        .strip_prefix('(')?
        .strip_suffix(')')?;
    let (plugin, name) = args.split_once(',')?;
    fn unquote(a: &str) -> Option<&str> {
        let a = a.trim();
        a.strip_prefix('\'')
            .and_then(|r| r.strip_suffix('\''))
            .or_else(|| a.strip_prefix('"').and_then(|r| r.strip_suffix('"')))
    }
    if !matches!(unquote(plugin)?, "env" | "ansible.builtin.env") {
        return None;
    }
    let name = unquote(name)?;
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    ok.then_some(name)
}

fn to_toml(var: &str, kind: Kind, v: &Var, diags: &mut Vec<Diagnostic>) -> Option<toml::Value> {
    let at = &v.at;
    if v.value == Val::Vault {
        diags.push(at.diag(format!(
            "`{var}` is encrypted with Ansible Vault (!vault), which fsfleet cannot decrypt: \
             write the value in the clear (or, for a password, `{{{{ lookup('env', 'NAME') }}}}`)"
        )));
        return None;
    }
    if kind == Kind::EnvLookup {
        // The value is never echoed: it may be the password itself.
        return match &v.value {
            Val::Null => None,
            Val::Str(s) => match env_lookup(s) {
                Some(name) => Some(toml::Value::String(name.to_string())),
                None => {
                    diags.push(at.diag(format!(
                        "`{var}` must be an environment lookup such as \
                         \"{{{{ lookup('env', 'FS_SUDO_PASSWORD') }}}}\": fsfleet never takes a password written in the inventory"
                    )));
                    None
                }
            },
            _ => {
                diags.push(at.diag(format!(
                    "`{var}` must be an environment lookup such as \
                     \"{{{{ lookup('env', 'FS_SUDO_PASSWORD') }}}}\": fsfleet never takes a password written in the inventory"
                )));
                None
            }
        };
    }
    if let Val::Str(s) = &v.value
        && (s.contains("{{") || s.contains("{%"))
    {
        diags.push(at.diag(format!(
            "`{var}` is a Jinja2 template (`{s}`), which fsfleet does not evaluate: write the value itself"
        )));
        return None;
    }
    let value = match (kind, &v.value) {
        (_, Val::Null) => return None,
        (Kind::Bool, val) => match ansible_bool(val) {
            Some(b) => toml::Value::Boolean(b),
            None => {
                diags.push(at.diag(format!("`{var}` must be true or false (yes/no)")));
                return None;
            }
        },
        (Kind::Int, Val::Str(s)) if s.trim().parse::<i64>().is_ok() => {
            toml::Value::Integer(s.trim().parse::<i64>().unwrap_or_default())
        }
        (Kind::Seconds, Val::Str(s)) if s.trim().parse::<f64>().is_ok() => {
            toml::Value::Float(s.trim().parse::<f64>().unwrap_or_default())
        }
        (Kind::List, Val::Str(s)) => toml::Value::Array(
            s.split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(|x| toml::Value::String(x.to_string()))
                .collect(),
        ),
        (_, val) => plain_toml(val),
    };
    Some(value)
}

fn plain_toml(v: &Val) -> toml::Value {
    match v {
        Val::Null | Val::Vault => toml::Value::String(String::new()),
        Val::Bool(b) => toml::Value::Boolean(*b),
        Val::Int(n) => toml::Value::Integer(*n),
        Val::Float(f) => toml::Value::Float(*f),
        Val::Str(s) => toml::Value::String(s.clone()),
        Val::List(items) => toml::Value::Array(items.iter().map(plain_toml).collect()),
        Val::Map(entries) => toml::Value::Table(
            entries
                .iter()
                .map(|(k, v)| (k.clone(), plain_toml(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{Host, InventoryFormat};

    /// Writes `files` (path, text) into a new directory and loads the first as an inventory.
    fn load_files(
        files: &[(&str, &str)],
    ) -> (tempfile::TempDir, Result<Inventory, InventoryError>) {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, text) in files {
            let p = dir.path().join(name);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, text).expect("write");
        }
        let inv = Inventory::load_with(&dir.path().join(files[0].0), None);
        (dir, inv)
    }

    fn ok(files: &[(&str, &str)]) -> (tempfile::TempDir, Inventory) {
        let (d, r) = load_files(files);
        (d, r.unwrap_or_else(|e| panic!("{e}")))
    }

    fn err(files: &[(&str, &str)]) -> String {
        let (_d, r) = load_files(files);
        match r {
            Ok(inv) => panic!("accepted: {:?}", inv.hosts),
            Err(e) => e.to_string(),
        }
    }

    fn host<'a>(inv: &'a Inventory, name: &str) -> &'a Host {
        inv.get(name).unwrap_or_else(|| panic!("no host {name}"))
    }

    const LAYERS: &str = "\
[all:vars]
ansible_user=from_all

[parent:children]
child

[parent:vars]
ansible_user=from_parent
ansible_port=2000

[child]
a
b ansible_user=from_host

[child:vars]
ansible_user=from_child
";

    #[test]
    fn host_beats_child_group_beats_parent_group_beats_all() {
        let (_d, inv) = ok(&[
            ("hosts.ini", LAYERS),
            (
                "hosts2.ini",
                "[x]\nlone\n[all:vars]\nansible_user=from_all\n",
            ),
        ]);
        assert_eq!(host(&inv, "a").user, "from_child");
        assert_eq!(host(&inv, "a").port, 2000);
        assert_eq!(host(&inv, "b").user, "from_host");
        assert_eq!(host(&inv, "a").groups, ["parent", "child"]);
        let (_d, inv) = ok(&[(
            "hosts.ini",
            "[x]\nlone\n[all:vars]\nansible_user=from_all\n",
        )]);
        assert_eq!(host(&inv, "lone").user, "from_all");
    }

    #[test]
    fn vars_files_come_after_inline_vars_and_host_vars_last() {
        let (_d, inv) = ok(&[
            ("hosts.ini", LAYERS),
            // group_vars/all after every inline group var (as ansible-inventory resolves it)
            ("group_vars/all.yml", "ansible_port: 3000\n"),
            ("group_vars/parent/a.yml", "ansible_user: gv_parent\n"),
            ("group_vars/parent/b.yaml", "ansible_port: 3100\n"),
            ("group_vars/parent/skip.txt", "ansible_port: 9\n"),
            ("group_vars/child.yml", "fsfleet_conf_dir: /opt/fs/conf\n"),
            ("host_vars/b.yml", "ansible_user: hv_b\n"),
        ]);
        let a = host(&inv, "a");
        assert_eq!((a.user.as_str(), a.port), ("gv_parent", 3100));
        assert_eq!(
            a.conf_dir,
            crate::inventory::ConfDir::Path("/opt/fs/conf".into())
        );
        assert_eq!(host(&inv, "b").user, "hv_b");
    }

    #[test]
    fn group_priority_orders_groups_of_the_same_depth() {
        let yaml = "\
all:
  children:
    zeta:
      hosts: {h: }
      vars: {ansible_user: from_zeta}
    alpha:
      hosts: {h: }
      vars: {ansible_user: from_alpha, ansible_group_priority: 5}
";
        let (_d, inv) = ok(&[("hosts.yml", yaml)]);
        assert_eq!(host(&inv, "h").user, "from_alpha");
        let (_d, inv) = ok(&[(
            "hosts.yml",
            &yaml.replace("ansible_group_priority: 5", "x: 1"),
        )]);
        assert_eq!(host(&inv, "h").user, "from_zeta");
    }

    #[test]
    fn fsfleet_tls_cert_and_key_are_paths_beside_the_inventory() {
        let (d, inv) = ok(&[(
            "hosts.ini",
            "[pbx]\nfs1 ansible_host=192.0.2.1 fsfleet_tls_cert=tls/fs1.pem \
             fsfleet_tls_key=tls/fs1.key\n",
        )]);
        let h = host(&inv, "fs1");
        assert_eq!(
            h.tls_cert.as_deref(),
            Some(d.path().join("tls/fs1.pem").as_path())
        );
        assert_eq!(
            h.tls_key.as_deref(),
            Some(d.path().join("tls/fs1.key").as_path())
        );
    }

    #[test]
    fn connection_and_fsfleet_variables_map_onto_the_settings() {
        let (d, inv) = ok(&[
            (
                "hosts.ini",
                "[pbx]\nfs1 ansible_host=192.0.2.1 ansible_become=no ansible_user=ops \
                 ansible_ssh_private_key_file=keys/id fsfleet_waive=FS-ESL-01,FS-SIP-02\n\
                 [pbx:vars]\nfsfleet_sip_allow_from=['198.51.100.0/24', '203.0.113.9']\n\
                 fsfleet_fail2ban_maxretry=\"3\"\nfsfleet_connect_timeout=2.5\n\
                 ansible_password=\"{{ lookup('ansible.builtin.env', 'FS_SSH_PW') }}\"\n\
                 fsfleet_sudo_password_env=FS_SUDO\n",
            ),
            ("keys/id", "key"),
        ]);
        let h = host(&inv, "fs1");
        assert_eq!(h.address, "192.0.2.1");
        assert!(!h.sudo);
        assert_eq!(h.identity_files, [d.path().join("keys/id")]);
        assert_eq!(h.waive, ["FS-ESL-01", "FS-SIP-02"]);
        let nets: Vec<String> = h.sip_allow_from.iter().map(|n| n.to_string()).collect();
        assert_eq!(nets, ["198.51.100.0/24", "203.0.113.9/32"]);
        assert_eq!(h.fail2ban.maxretry, 3);
        assert_eq!(h.connect_timeout.as_secs_f64(), 2.5);
        assert_eq!(h.password_env.as_deref(), Some("FS_SSH_PW"));
        assert_eq!(h.sudo_password_env.as_deref(), Some("FS_SUDO"));
        // become unset: fsfleet's default (sudo unless root)
        let (_d, inv) = ok(&[("hosts.ini", "a ansible_user=root\nb ansible_user=ops\n")]);
        assert!(!host(&inv, "a").sudo);
        assert!(host(&inv, "b").sudo);
        assert_eq!(inv.groups, ["ungrouped"]);
    }

    #[test]
    fn a_literal_password_is_refused_and_never_echoed() {
        for var in [
            "ansible_become_password",
            "ansible_password",
            "ansible_ssh_pass",
        ] {
            let e = err(&[("hosts.ini", &format!("[pbx]\nfs1 {var}=Hunter2secret\n"))]);
            assert!(e.starts_with("/") && e.contains("hosts.ini:2:5: "), "{e}");
            assert!(e.contains("lookup('env'"), "{e}");
            assert!(!e.contains("Hunter2secret"), "{e}");
        }
        let e = err(&[(
            "hosts.yml",
            "all:\n  vars:\n    fsfleet_sudo_password: Hunter2secret\n  hosts: {a: }\n",
        )]);
        assert!(
            e.contains("hosts.yml:3:28: `fsfleet_sudo_password` is not accepted"),
            "{e}"
        );
        assert!(!e.contains("Hunter2secret"), "{e}");
    }

    #[test]
    fn vault_values_are_refused_where_fsfleet_reads_them() {
        let vaulted = "!vault |\n  $ANSIBLE_VAULT;1.1;AES256\n  6162\n";
        let e = err(&[
            ("hosts.ini", "[pbx]\nfs1\n"),
            (
                "group_vars/pbx.yml",
                &format!("db_password: {vaulted}ansible_user: {vaulted}"),
            ),
        ]);
        assert!(
            e.contains("group_vars/pbx.yml:4:15: `ansible_user` is encrypted with Ansible Vault"),
            "{e}"
        );
        assert_eq!(
            e.lines().count(),
            1,
            "db_password is not fsfleet's business: {e}"
        );
        let e = err(&[
            ("hosts.ini", "[pbx]\nfs1\n"),
            ("host_vars/fs1", "$ANSIBLE_VAULT;1.1;AES256\n6162\n"),
        ]);
        assert!(
            e.contains("host_vars/fs1:1:1: this vars file is encrypted with Ansible Vault"),
            "{e}"
        );
        let e = err(&[("hosts.yml", "$ANSIBLE_VAULT;1.1;AES256\n6162\n")]);
        assert!(
            e.contains("hosts.yml:1:1: this inventory is encrypted"),
            "{e}"
        );
    }

    #[test]
    fn unsupported_constructs_are_located_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = dir.path().join("ec2.py");
        std::fs::write(&script, "#!/bin/sh\necho '{}'\n").expect("write");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let e = Inventory::load_with(&script, None)
            .expect_err("a script")
            .to_string();
        assert!(e.contains("ec2.py:1:1: this file is a program: Ansible would run it as a dynamic inventory script"), "{e}");
        // A static inventory with an execute bit is still read.
        let ini = dir.path().join("hosts.ini");
        std::fs::write(&ini, "[pbx]\nfs1\n").expect("write");
        std::fs::set_permissions(&ini, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        assert_eq!(
            Inventory::load_with(&ini, None)
                .expect("static")
                .hosts
                .len(),
            1
        );
        let e = Inventory::load_with(dir.path(), None)
            .expect_err("a dir")
            .to_string();
        assert!(e.contains("an inventory directory is not supported"), "{e}");

        let e = err(&[("aws_ec2.yml", "# dynamic\nplugin: amazon.aws.aws_ec2\n")]);
        assert!(
            e.contains("aws_ec2.yml:2:1: this is an inventory plugin's configuration"),
            "{e}"
        );
        let e = err(&[(
            "hosts.ini",
            "[pbx]\nfs1 ansible_host=\"{{ inventory_hostname }}.lan\"\n",
        )]);
        assert!(
            e.contains("hosts.ini:2:5: `ansible_host` is a Jinja2 template"),
            "{e}"
        );
        let e = err(&[(
            "hosts.ini",
            "[pbx]\nfs1 ansible_connection=local\nfs2 ansible_become_method=su\n",
        )]);
        assert!(
            e.contains("hosts.ini:2:5: ansible_connection `local`"),
            "{e}"
        );
        assert!(
            e.contains("hosts.ini:3:5: ansible_become_method `su`"),
            "{e}"
        );
        let e = err(&[(
            "hosts.ini",
            "[pbx]\nfs1 ansible_ssh_common_args='-o ProxyJump=bastion'\n",
        )]);
        assert!(e.contains("set fsfleet_jump"), "{e}");
        let e = err(&[(
            "hosts.ini",
            "[pbx]\nfs1 ansible_host=192.0.2.1 ansible_ssh_host=192.0.2.2\n",
        )]);
        assert!(e.contains("hosts.ini:2:28: `ansible_ssh_host` and `ansible_host` both set fsfleet's address, to different values"), "{e}");
        let (_d, inv) = ok(&[(
            "hosts.ini",
            "[pbx]\nfs1 ansible_user=ops ansible_ssh_user=ops\n",
        )]);
        assert_eq!(host(&inv, "fs1").user, "ops");
        let e = err(&[("hosts.ini", "[a:children]\nb\n[b:children]\na\n")]);
        assert!(e.contains("makes a loop of groups"), "{e}");
        let e = err(&[("hosts.yml", "all:\n  hosts:\n    a:\n  childs:\n    b:\n")]);
        assert!(
            e.contains("hosts.yml:4:3: unknown key `childs` in group `all`"),
            "{e}"
        );
    }

    #[test]
    fn fsfleet_checks_are_reported_at_the_ansible_line() {
        let e = err(&[
            (
                "hosts.ini",
                "[pbx]\nfs1 ansible_port=70000 fsfleet_sip_alow_from=10.0.0.0/8 fsfleet_address=x\n",
            ),
            (
                "group_vars/pbx.yml",
                "\nfsfleet_fail2ban_ignore: [\"0.0.0.0/0\"]\n",
            ),
        ]);
        assert!(
            e.contains("hosts.ini:2:5: ansible_port: bad port 70000"),
            "{e}"
        );
        assert!(e.contains("hosts.ini:2:24: unknown fsfleet variable `fsfleet_sip_alow_from`: did you mean `fsfleet_sip_allow_from`?"), "{e}");
        assert!(e.contains("hosts.ini:2:57: `fsfleet_address` is not read: set Ansible's `ansible_host` instead"), "{e}");
        assert!(
            e.contains(
                "group_vars/pbx.yml:2:26: fsfleet_fail2ban_ignore `0.0.0.0/0` is every IPv4 address"
            ),
            "{e}"
        );
        // The main file's problems come first, then the vars files'.
        assert!(
            e.find("hosts.ini:2:5").unwrap_or(usize::MAX) < e.find("group_vars").unwrap_or(0),
            "{e}"
        );

        let (_d, inv) = ok(&[(
            "hosts.ini",
            "[pbx]\nfs1\n[pbx:vars]\nansible_ssh_private_key_file=/nonexistent/id\n",
        )]);
        let e = inv
            .check_local_files(&inv.hosts)
            .expect_err("missing key")
            .to_string();
        assert!(
            e.contains(
                "hosts.ini:4:1: ansible_ssh_private_key_file /nonexistent/id does not exist"
            ),
            "{e}"
        );
    }

    #[test]
    fn the_format_is_detected_or_forced() {
        assert!(detect(Path::new("hosts"), "[pbx]\nfs1\n"));
        assert!(detect(Path::new("hosts.ini"), "[[hosts]]\n"));
        assert!(!detect(
            Path::new("fleet"),
            "[defaults]\nuser = \"x\"\n[[hosts]]\nname = \"a\"\n"
        ));
        assert!(!detect(Path::new("x.toml"), "[pbx]\n"));
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("fleet.cfg");
        std::fs::write(&p, "[pbx]\nfs1\n").expect("write");
        assert_eq!(
            Inventory::load_as(&p, InventoryFormat::Ansible, None)
                .expect("ansible")
                .hosts
                .len(),
            1
        );
        let e = Inventory::load_as(&p, InventoryFormat::Toml, None)
            .expect_err("not TOML")
            .to_string();
        assert!(e.contains("fleet.cfg:2:4: TOML syntax"), "{e}");
    }
}
