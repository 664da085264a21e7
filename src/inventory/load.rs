//! Reading the TOML: every key is checked against the schema by hand (not serde) so that ALL
//! problems are reported with their position, then each host is resolved through its groups,
//! `[defaults]`, the ssh client config and the built-in defaults.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::error::{Diagnostic, InventoryError, MAX_DIAGNOSTICS};
use super::{ConfDir, Fail2banSettings, HardenLevel, Host, HostKeyPolicy, Inventory, Jump};
use crate::ssh::config::{SshConfig, SshHostConfig, expand_tilde};

type Span = Range<usize>;
type Value<'i> = Spanned<DeValue<'i>>;

/// Keys every level (defaults, groups, hosts) accepts.
const FIELD_KEYS: &[&str] = &[
    "address",
    "port",
    "user",
    "identity_file",
    "password_env",
    "sudo",
    "sudo_password_env",
    "jump",
    "conf_dir",
    "sip_allow_from",
    "connect_timeout",
    "known_hosts",
    "host_key_policy",
    "fail2ban_maxretry",
    "fail2ban_findtime",
    "fail2ban_bantime",
    "fail2ban_ignore",
    "apt_lock_timeout",
    "waive",
    "level",
    "modules_keep",
    "keep_users",
    "tls_cert",
    "tls_key",
];
const TOP_KEYS: &[&str] = &[
    "defaults",
    "groups",
    "hosts",
    "audit",
    "vault_encryption",
    "age_recipients",
];
const AUDIT_KEYS: &[&str] = &["waive"];
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A value and where it was written.
struct At<T> {
    value: T,
    span: Span,
}

/// The per-host settings written at one level; `None` = not set there.
#[derive(Default)]
struct Layer {
    address: Option<At<String>>,
    port: Option<At<u16>>,
    user: Option<At<String>>,
    identity_file: Option<At<PathBuf>>,
    password_env: Option<At<String>>,
    sudo: Option<At<bool>>,
    sudo_password_env: Option<At<String>>,
    jump: Option<At<String>>,
    conf_dir: Option<At<ConfDir>>,
    sip_allow_from: Option<At<Vec<IpNet>>>,
    connect_timeout: Option<At<Duration>>,
    known_hosts: Option<At<PathBuf>>,
    host_key_policy: Option<At<HostKeyPolicy>>,
    fail2ban_maxretry: Option<At<u32>>,
    fail2ban_findtime: Option<At<u64>>,
    fail2ban_bantime: Option<At<u64>>,
    fail2ban_ignore: Option<At<Vec<IpNet>>>,
    apt_lock_timeout: Option<At<u64>>,
    waive: Option<At<Vec<Waiver>>>,
    level: Option<At<HardenLevel>>,
    modules_keep: Option<At<Vec<String>>>,
    keep_users: Option<At<Vec<String>>>,
    tls_cert: Option<At<PathBuf>>,
    tls_key: Option<At<PathBuf>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Level<'a> {
    Defaults,
    Group(&'a str),
    Host,
}

struct RawHost {
    name: Option<At<String>>,
    groups: Vec<At<String>>,
    layer: Layer,
}

/// Collects problems with their byte span.
struct Problems {
    list: Vec<(Span, String)>,
}

impl Problems {
    fn add(&mut self, span: Span, message: impl Into<String>) {
        self.list.push((span, message.into()));
    }
}

/// Parses and resolves an inventory; see [`Inventory::parse_str`].
pub(super) fn parse(
    text: &str,
    path: &Path,
    ssh: Option<&SshConfig>,
) -> Result<Inventory, InventoryError> {
    let dir = inventory_dir(path);
    let mut problems = Problems { list: Vec::new() };
    let (doc, syntax_errors) = DeTable::parse_recoverable(text);
    if !syntax_errors.is_empty() {
        for e in syntax_errors {
            let span = e.span().unwrap_or(0..0);
            problems.add(
                span,
                format!("TOML syntax: {}; fix the syntax first", e.message()),
            );
        }
        return Err(invalid(text, path, problems));
    }

    let mut defaults = Layer::default();
    let mut groups: Vec<(At<String>, Layer)> = Vec::new();
    let mut raw_hosts: Vec<RawHost> = Vec::new();
    let mut audit_waive: Vec<Waiver> = Vec::new();
    let mut vault = crate::vault::VaultSettings::default();
    let mut recipients_span: Option<Span> = None;
    // A malformed `hosts` already has its own message; "no hosts" would only add noise.
    let mut hosts_malformed = false;
    // Groups whose table is malformed: already reported, so hosts naming them are not.
    let mut broken_groups: HashSet<String> = HashSet::new();

    for (key, value) in doc.get_ref().iter() {
        let k: &str = key.get_ref();
        match k {
            "defaults" => {
                if let Some(table) = table_of(&mut problems, "[defaults]", value) {
                    defaults = parse_fields(&mut problems, table, Level::Defaults, &dir).layer;
                }
            }
            "groups" => {
                let Some(table) = table_of(&mut problems, "[groups]", value) else {
                    continue;
                };
                for (gkey, gvalue) in table.iter() {
                    let gname: &str = gkey.get_ref();
                    if let Err(why) = check_name(gname) {
                        problems.add(gkey.span(), format!("group name `{gname}` {why}"));
                    }
                    let what = format!("[groups.{gname}]");
                    let Some(gtable) = table_of(&mut problems, &what, gvalue) else {
                        broken_groups.insert(gname.to_string());
                        continue;
                    };
                    let layer =
                        parse_fields(&mut problems, gtable, Level::Group(gname), &dir).layer;
                    let name = At {
                        value: gname.to_string(),
                        span: gkey.span(),
                    };
                    groups.push((name, layer));
                }
            }
            "hosts" => {
                let DeValue::Array(items) = value.get_ref() else {
                    hosts_malformed = true;
                    problems.add(
                        value.span(),
                        format!(
                            "`hosts` must be a list of tables written as [[hosts]], found {}",
                            value.get_ref().type_str()
                        ),
                    );
                    continue;
                };
                for item in items.iter() {
                    let Some(table) = table_of(&mut problems, "each [[hosts]] entry", item) else {
                        continue;
                    };
                    let fields = parse_fields(&mut problems, table, Level::Host, &dir);
                    if fields.name.is_none() && !table.contains_key("name") {
                        problems.add(
                            item.span(),
                            "this [[hosts]] entry has no `name`: add name = \"...\"",
                        );
                    }
                    raw_hosts.push(RawHost {
                        name: fields.name,
                        groups: fields.groups,
                        layer: fields.layer,
                    });
                }
            }
            "audit" => {
                let Some(table) = table_of(&mut problems, "[audit]", value) else {
                    continue;
                };
                for (akey, avalue) in table.iter() {
                    let ak: &str = akey.get_ref();
                    if ak == "waive" {
                        if let Some(w) = parse_waive(&mut problems, avalue) {
                            audit_waive = w.value;
                        }
                    } else {
                        unknown_key(&mut problems, akey.span(), ak, "[audit]", AUDIT_KEYS);
                    }
                }
            }
            "vault_encryption" => match value.get_ref() {
                DeValue::String(v) if v == "age" => {
                    vault.encryption = crate::vault::Encryption::Age
                }
                DeValue::String(v) if v == "none" => {}
                _ => problems.add(
                    value.span(),
                    "vault_encryption must be \"age\" (the vault encrypted with age) or \"none\"",
                ),
            },
            "age_recipients" => {
                recipients_span = Some(key.span());
                for r in string_list(&mut problems, "age_recipients", value).unwrap_or_default() {
                    match crate::vault::crypt::parse_recipient(&r.value) {
                        Ok(_) => vault.age_recipients.push(r.value.trim().to_string()),
                        Err(why) => problems.add(r.span, why),
                    }
                }
            }
            "password" | "sudo_password" => password_rejected(&mut problems, key.span(), k),
            other => unknown_key(&mut problems, key.span(), other, "the top level", TOP_KEYS),
        }
    }
    if let Some(span) = recipients_span
        && !vault.is_age()
    {
        problems.add(
            span,
            "age_recipients without vault_encryption = \"age\": add it, or the vault stays plain",
        );
    }
    // Tables iterate in key order; the operator thinks in file order.
    groups.sort_by_key(|(name, _)| name.span.start);

    if raw_hosts.is_empty() && !hosts_malformed {
        problems.add(
            0..0,
            "the inventory has no hosts: add at least one [[hosts]] table with a name",
        );
    }

    // Names: unique, and groups must exist.
    let group_map: HashMap<&str, &Layer> =
        groups.iter().map(|(n, l)| (n.value.as_str(), l)).collect();
    let group_names: Vec<&str> = groups.iter().map(|(n, _)| n.value.as_str()).collect();
    let mut seen: HashMap<&str, Span> = HashMap::new();
    for h in &raw_hosts {
        let Some(name) = &h.name else { continue };
        if let Some(first) = seen.get(name.value.as_str()) {
            let (line, _) = line_col(text, first.start);
            problems.add(
                name.span.clone(),
                format!(
                    "duplicate host name `{}` (first used on line {line}): names must be unique",
                    name.value
                ),
            );
        } else {
            seen.insert(&name.value, name.span.clone());
        }
        for g in &h.groups {
            if !group_map.contains_key(g.value.as_str()) && !broken_groups.contains(&g.value) {
                let hint = match closest(&g.value, group_names.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("define it as [groups.{}]", g.value),
                };
                problems.add(
                    g.span.clone(),
                    format!("unknown group `{}`: {hint}", g.value),
                );
            }
        }
    }
    let host_names: Vec<&str> = raw_hosts
        .iter()
        .filter_map(|h| h.name.as_ref())
        .map(|n| n.value.as_str())
        .collect();
    let name_set: HashSet<&str> = host_names.iter().copied().collect();

    let ctx = Resolver {
        ssh,
        names: &name_set,
        host_names: &host_names,
        local_user: local_login_user(),
    };
    let mut hosts = Vec::with_capacity(raw_hosts.len());
    let mut missing_files = Vec::new();
    // For cycle detection: host -> (jump target, where the jump was set).
    let mut edges: HashMap<String, (String, Span)> = HashMap::new();
    for h in &raw_hosts {
        let Some(name) = &h.name else { continue };
        let mut layers: Vec<&Layer> = vec![&h.layer];
        layers.extend(
            h.groups
                .iter()
                .filter_map(|g| group_map.get(g.value.as_str()).copied()),
        );
        layers.push(&defaults);
        // Broad to narrow ([audit], defaults, groups, host): a narrower reason replaces a
        // broader one for the same control.
        let mut waivers: Vec<Waiver> = audit_waive.clone();
        for l in layers.iter().rev() {
            if let Some(w) = &l.waive {
                waivers.extend(w.value.iter().cloned());
            }
        }
        let mut reasons: BTreeMap<String, String> = BTreeMap::new();
        for (id, reason) in &waivers {
            if let Some(r) = reason {
                reasons.insert(id.clone(), r.clone());
            }
        }
        let mut waive: Vec<String> = waivers.into_iter().map(|(id, _)| id).collect();
        let mut uniq = HashSet::new();
        waive.retain(|w| uniq.insert(w.clone()));
        let waive = (waive, reasons);
        let mut groups_of: Vec<String> = Vec::new();
        for g in &h.groups {
            if !groups_of.contains(&g.value) {
                groups_of.push(g.value.clone());
            }
        }
        if let Some(id) = layers.iter().find_map(|l| l.identity_file.as_ref())
            && !id.value.is_file()
        {
            let (line, col) = line_col(text, id.span.start);
            missing_files.push((
                name.value.clone(),
                Diagnostic {
                    file: None,
                    line,
                    col,
                    message: format!(
                        "identity_file {} does not exist (host {}): fix the path (relative \
                         paths are read from the inventory's directory) or create the key",
                        id.value.display(),
                        name.value
                    ),
                },
            ));
        }
        let (host, jump_span) = ctx.resolve(&mut problems, name, groups_of, &layers, waive);
        if let Some(Jump::Host { name: target }) = &host.jump {
            edges.insert(name.value.clone(), (target.clone(), jump_span));
        }
        hosts.push(host);
    }
    jump_cycles(&mut problems, &host_names, &edges);

    if !problems.list.is_empty() {
        return Err(invalid(text, path, problems));
    }
    Ok(Inventory {
        path: path.to_path_buf(),
        hosts,
        groups: groups.into_iter().map(|(n, _)| n.value).collect(),
        missing_files,
        vault,
    })
}

struct Resolver<'a> {
    ssh: Option<&'a SshConfig>,
    names: &'a HashSet<&'a str>,
    host_names: &'a [&'a str],
    local_user: String,
}

macro_rules! pick {
    ($layers:expr, $field:ident) => {
        $layers.iter().find_map(|l| l.$field.as_ref())
    };
}

impl Resolver<'_> {
    /// Resolves one host; also returns where its jump was set (for cycle errors).
    fn resolve(
        &self,
        problems: &mut Problems,
        name: &At<String>,
        groups: Vec<String>,
        layers: &[&Layer],
        (waive, waive_reasons): (Vec<String>, BTreeMap<String, String>),
    ) -> (Host, Span) {
        let inv_address = pick!(layers, address).map(|a| a.value.clone());
        let ssh_host = self.ssh.map(|cfg| {
            let mut found = cfg.lookup(&name.value);
            // `ssh ADDRESS` would also consult blocks written for the address; the name's win.
            if let Some(addr) = inv_address.as_deref().filter(|a| *a != name.value) {
                fill_gaps(&mut found, cfg.lookup(addr));
            }
            found
        });
        let ssh_host = ssh_host.unwrap_or_default();

        let address = inv_address
            .or_else(|| ssh_host.hostname.clone())
            .unwrap_or_else(|| name.value.clone());
        let port = pick!(layers, port)
            .map(|p| p.value)
            .or(ssh_host.port)
            .unwrap_or(22);
        let user = pick!(layers, user)
            .map(|u| u.value.clone())
            .or_else(|| ssh_host.user.clone())
            .unwrap_or_else(|| self.local_user.clone());
        let mut identity_files: Vec<PathBuf> = pick!(layers, identity_file)
            .map(|i| i.value.clone())
            .into_iter()
            .collect();
        for f in &ssh_host.identity_files {
            if !identity_files.contains(f) {
                identity_files.push(f.clone());
            }
        }
        let sudo = pick!(layers, sudo)
            .map(|s| s.value)
            .unwrap_or(user != "root");

        let mut jump = None;
        let mut jump_span = name.span.clone();
        if let Some(j) = pick!(layers, jump) {
            jump_span = j.span.clone();
            match self.parse_jump(&j.value, false) {
                Ok(parsed) => jump = Some(parsed),
                Err(why) => problems.add(j.span.clone(), why),
            }
        } else if let Some(pj) = &ssh_host.proxy_jump {
            match self.parse_jump(pj, true) {
                Ok(parsed) => jump = Some(parsed),
                Err(why) => {
                    let file = self
                        .ssh
                        .and_then(|c| c.path.as_ref())
                        .map(|p| p.display().to_string());
                    problems.add(
                        name.span.clone(),
                        format!(
                            "ProxyJump `{pj}` from {} for host `{}`: {why}; or set `jump` for this host in the inventory",
                            file.as_deref().unwrap_or("the ssh config"),
                            name.value
                        ),
                    );
                }
            }
        }

        let f2b = Fail2banSettings::default();
        let host = Host {
            name: name.value.clone(),
            address,
            port,
            user,
            groups,
            identity_files,
            password_env: pick!(layers, password_env).map(|p| p.value.clone()),
            sudo,
            sudo_password_env: pick!(layers, sudo_password_env).map(|p| p.value.clone()),
            jump,
            conf_dir: pick!(layers, conf_dir)
                .map(|c| c.value.clone())
                .unwrap_or(ConfDir::Auto),
            sip_allow_from: pick!(layers, sip_allow_from)
                .map(|s| s.value.clone())
                .unwrap_or_default(),
            fail2ban_ignore: pick!(layers, fail2ban_ignore)
                .map(|s| s.value.clone())
                .unwrap_or_default(),
            connect_timeout: pick!(layers, connect_timeout)
                .map(|c| c.value)
                .unwrap_or(DEFAULT_TIMEOUT),
            known_hosts: pick!(layers, known_hosts).map(|k| k.value.clone()),
            host_key_policy: pick!(layers, host_key_policy)
                .map(|p| p.value)
                .unwrap_or(HostKeyPolicy::Ask),
            hash_known_hosts: ssh_host.hash_known_hosts.unwrap_or(false),
            fail2ban: Fail2banSettings {
                maxretry: pick!(layers, fail2ban_maxretry)
                    .map(|v| v.value)
                    .unwrap_or(f2b.maxretry),
                findtime: pick!(layers, fail2ban_findtime)
                    .map(|v| v.value)
                    .unwrap_or(f2b.findtime),
                bantime: pick!(layers, fail2ban_bantime)
                    .map(|v| v.value)
                    .unwrap_or(f2b.bantime),
            },
            apt_lock_timeout: pick!(layers, apt_lock_timeout)
                .map(|v| Duration::from_secs(v.value))
                .unwrap_or(crate::inventory::DEFAULT_APT_LOCK_TIMEOUT),
            waive,
            waive_reasons,
            level: pick!(layers, level).map(|l| l.value).unwrap_or_default(),
            modules_keep: pick!(layers, modules_keep)
                .map(|m| m.value.clone())
                .unwrap_or_default(),
            keep_users: pick!(layers, keep_users)
                .map(|m| m.value.clone())
                .unwrap_or_default(),
            tls_cert: pick!(layers, tls_cert).map(|t| t.value.clone()),
            tls_key: pick!(layers, tls_key).map(|t| t.value.clone()),
        };
        (host, jump_span)
    }

    /// `jump`: an inventory host name, or `[user@]host[:port]` / `[user@][v6]:port`.
    /// A bare word must be an inventory host (so a typo is caught), unless it comes from a
    /// ProxyJump, where a bare ssh alias is normal.
    fn parse_jump(&self, raw: &str, bare_alias_ok: bool) -> Result<Jump, String> {
        let s = raw.trim();
        if s.is_empty() {
            return Err("`jump` is empty: name an inventory host or write user@host:port".into());
        }
        if s.contains(',') {
            return Err(format!(
                "several hops (`{s}`) are not supported: jump through one bastion, and give that bastion its own `jump` in the inventory"
            ));
        }
        if self.names.contains(s) {
            return Ok(Jump::Host {
                name: s.to_string(),
            });
        }
        let rest = s.strip_prefix("ssh://").unwrap_or(s);
        let (user, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u.to_string()), h),
            None => (None, rest),
        };
        // `user:password@host` must not be echoed back: the part before `@` may be a secret.
        if user
            .as_deref()
            .is_some_and(|u| u.is_empty() || u.contains(|c: char| c.is_whitespace() || c == ':'))
        {
            return Err("bad user in `jump`: write user@host:port (a password never goes here; use password_env)".into());
        }
        let (mut address, mut port, bracketed) =
            split_host_port(hostport).map_err(|m| format!("{m} in jump `{s}`"))?;
        if address.contains(char::is_whitespace) || address.contains(['/', '[', ']']) {
            return Err(format!("bad host in jump `{s}`: write user@host:port"));
        }
        if user.is_none() && port.is_none() && !bracketed && !bare_alias_ok {
            let hint = match closest(s, self.host_names.iter().copied()) {
                Some(c) => format!("did you mean `{c}`?"),
                None => format!(
                    "add it as a [[hosts]] entry, or write a bastion outside the inventory as user@{s} or {s}:22"
                ),
            };
            return Err(format!(
                "unknown jump host `{s}`: it is not an inventory host; {hint}"
            ));
        }
        let mut user = user;
        if let Some(cfg) = self.ssh {
            // A bastion outside the inventory is reached the way `ssh BASTION` would.
            let found = cfg.lookup(&address);
            user = user.or(found.user);
            port = port.or(found.port);
            if let Some(h) = found.hostname {
                address = h;
            }
        }
        Ok(Jump::Spec {
            user,
            address,
            port: port.unwrap_or(22),
        })
    }
}

fn fill_gaps(into: &mut SshHostConfig, other: SshHostConfig) {
    if into.hostname.is_none() {
        into.hostname = other.hostname;
    }
    if into.user.is_none() {
        into.user = other.user;
    }
    if into.port.is_none() {
        into.port = other.port;
    }
    if into.proxy_jump.is_none() {
        into.proxy_jump = other.proxy_jump;
    }
    if into.hash_known_hosts.is_none() {
        into.hash_known_hosts = other.hash_known_hosts;
    }
    for f in other.identity_files {
        if !into.identity_files.contains(&f) {
            into.identity_files.push(f);
        }
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`, or a bare IPv6 address.
fn split_host_port(hp: &str) -> Result<(String, Option<u16>, bool), String> {
    if let Some(r) = hp.strip_prefix('[') {
        let (addr, after) = r
            .split_once(']')
            .ok_or("missing `]` after the IPv6 address")?;
        if addr.is_empty() {
            return Err("empty address between [ ]".into());
        }
        let port = match after {
            "" => None,
            _ => Some(parse_port_text(
                after
                    .strip_prefix(':')
                    .ok_or("expected `:PORT` after `]`")?,
            )?),
        };
        return Ok((addr.to_string(), port, true));
    }
    let (addr, port) = match hp.matches(':').count() {
        1 => {
            let (a, p) = hp.split_once(':').unwrap_or((hp, ""));
            (a, Some(parse_port_text(p)?))
        }
        // Several colons: a bare IPv6 address.
        _ => (hp, None),
    };
    if addr.is_empty() {
        return Err("no host".into());
    }
    Ok((addr.to_string(), port, false))
}

fn parse_port_text(p: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(n) if n != 0 => Ok(n),
        _ => Err(format!("bad port `{p}` (use 1 to 65535)")),
    }
}

/// Reports every jump cycle once, at the jump setting of its first host in file order.
fn jump_cycles(problems: &mut Problems, order: &[&str], edges: &HashMap<String, (String, Span)>) {
    let mut reported: HashSet<Vec<String>> = HashSet::new();
    for start in order {
        let mut path = vec![start.to_string()];
        let mut current = start.to_string();
        while let Some((next, _)) = edges.get(&current) {
            if next == start {
                let mut key = path.clone();
                key.sort();
                if reported.insert(key) {
                    let span = edges.get(*start).map(|(_, s)| s.clone()).unwrap_or(0..0);
                    let msg = if path.len() == 1 {
                        format!(
                            "host `{start}` jumps through itself: remove its `jump` or name another host"
                        )
                    } else {
                        path.push(start.to_string());
                        format!(
                            "jump cycle {}: remove one of these `jump` settings",
                            path.join(" -> ")
                        )
                    };
                    problems.add(span, msg);
                }
                break;
            }
            if path.iter().any(|p| p == next) {
                break; // a cycle that does not include `start`; reported from its own members
            }
            path.push(next.clone());
            current = next.clone();
        }
    }
}

struct Fields {
    name: Option<At<String>>,
    groups: Vec<At<String>>,
    layer: Layer,
}

fn parse_fields(
    problems: &mut Problems,
    table: &DeTable<'_>,
    level: Level<'_>,
    dir: &Path,
) -> Fields {
    let mut f = Fields {
        name: None,
        groups: Vec::new(),
        layer: Layer::default(),
    };
    let l = &mut f.layer;
    let p = problems;
    for (key, value) in table.iter() {
        let k: &str = key.get_ref();
        match k {
            "password" | "sudo_password" => password_rejected(p, key.span(), k),
            "name" if level == Level::Host => {
                if let Some(s) = string(p, k, value) {
                    match check_name(&s.value) {
                        Ok(()) => f.name = Some(s),
                        Err(why) if s.value.is_empty() => p.add(s.span, format!("host name {why}")),
                        Err(why) => p.add(s.span, format!("host name `{}` {why}", s.value)),
                    }
                }
            }
            "groups" if level == Level::Host => {
                if let Some(list) = string_list(p, k, value) {
                    f.groups = list;
                }
            }
            "name" | "groups" => {
                p.add(key.span(), format!("`{k}` belongs in a [[hosts]] entry only; move it there"));
            }
            "address" => {
                l.address = string(p, k, value).and_then(|s| {
                    let v = &s.value;
                    let why = if v.trim().is_empty() {
                        "is empty: remove the key to connect to the host name, or write the address"
                    } else if v.contains(char::is_whitespace) {
                        "contains spaces"
                    } else if v.contains('@') {
                        "contains `@`: put the login name in `user`"
                    } else if v.starts_with('[') {
                        "is bracketed: write IPv6 addresses without [ ] and the port in `port`"
                    } else {
                        return Some(s);
                    };
                    // Not echoed when empty (nothing to show) or holding `@` (maybe user:password@).
                    let shown = if v.trim().is_empty() || v.contains('@') {
                        String::new()
                    } else {
                        format!(" `{v}`")
                    };
                    p.add(s.span.clone(), format!("address{shown} {why}"));
                    None
                })
            }
            "port" => {
                l.port = int(p, k, value).and_then(|n| match u16::try_from(n.value) {
                    Ok(port) if port != 0 => Some(At { value: port, span: n.span }),
                    _ => {
                        p.add(n.span, format!("bad port {}: use a number from 1 to 65535", n.value));
                        None
                    }
                })
            }
            "user" => {
                l.user = string(p, k, value).and_then(|s| {
                    if s.value.is_empty() || s.value.contains(char::is_whitespace) || s.value.contains('@') {
                        p.add(s.span, "`user` must be a login name (not empty, no spaces or `@`)");
                        None
                    } else {
                        Some(s)
                    }
                })
            }
            "identity_file" => l.identity_file = path_value(p, k, value, dir),
            "known_hosts" => l.known_hosts = path_value(p, k, value, dir),
            "tls_cert" => l.tls_cert = path_value(p, k, value, dir),
            "tls_key" => l.tls_key = path_value(p, k, value, dir),
            "password_env" => l.password_env = env_name(p, k, value),
            "sudo_password_env" => l.sudo_password_env = env_name(p, k, value),
            "sudo" => l.sudo = boolean(p, k, value),
            "jump" => {
                l.jump = string(p, k, value).and_then(|s| {
                    if s.value.trim().is_empty() {
                        p.add(s.span, "`jump` is empty: name an inventory host or write user@host:port");
                        None
                    } else {
                        Some(s)
                    }
                })
            }
            "conf_dir" => {
                l.conf_dir = string(p, k, value).and_then(|s| {
                    if s.value == "auto" {
                        Some(At { value: ConfDir::Auto, span: s.span })
                    } else if s.value.starts_with('/') {
                        Some(At { value: ConfDir::Path(s.value), span: s.span })
                    } else {
                        p.add(
                            s.span,
                            format!(
                                "conf_dir `{}` is not absolute: write `auto` or a path such as /etc/freeswitch",
                                s.value
                            ),
                        );
                        None
                    }
                })
            }
            "sip_allow_from" => {
                l.sip_allow_from = string_list(p, k, value).and_then(|items| {
                    let mut nets = Vec::new();
                    let mut ok = true;
                    for item in items {
                        match parse_net(&item.value) {
                            Some(n) => match host_bits_error("sip_allow_from", &item.value, &n) {
                                None => nets.push(n),
                                Some(why) => {
                                    ok = false;
                                    p.add(item.span, why);
                                }
                            },
                            None => {
                                ok = false;
                                p.add(
                                    item.span,
                                    format!(
                                        "bad CIDR `{}` in sip_allow_from: write an address (203.0.113.7) or a network (203.0.113.0/24)",
                                        item.value
                                    ),
                                );
                            }
                        }
                    }
                    ok.then(|| At { value: nets, span: value.span() })
                })
            }
            "connect_timeout" => {
                let secs = match value.get_ref() {
                    DeValue::Integer(_) => int(p, k, value).map(|n| n.value as f64),
                    DeValue::Float(fl) => fl.as_str().replace('_', "").parse::<f64>().ok(),
                    other => {
                        p.add(value.span(), format!("`connect_timeout` must be a number of seconds, found {}", other.type_str()));
                        continue;
                    }
                };
                l.connect_timeout = match secs.filter(|s| *s > 0.0).and_then(|s| Duration::try_from_secs_f64(s).ok()) {
                    Some(d) => Some(At { value: d, span: value.span() }),
                    None => {
                        p.add(value.span(), "`connect_timeout` must be a number of seconds greater than 0, such as 10 or 2.5");
                        None
                    }
                };
            }
            "host_key_policy" => {
                l.host_key_policy = string(p, k, value).and_then(|s| {
                    let policy = match s.value.as_str() {
                        "ask" => HostKeyPolicy::Ask,
                        "accept-new" => HostKeyPolicy::AcceptNew,
                        "strict" => HostKeyPolicy::Strict,
                        other => {
                            p.add(
                                s.span,
                                format!("host_key_policy `{other}` is not one of ask, accept-new, strict"),
                            );
                            return None;
                        }
                    };
                    Some(At { value: policy, span: s.span })
                })
            }
            "fail2ban_maxretry" => {
                l.fail2ban_maxretry =
                    positive(p, k, value).and_then(|n| u32::try_from(n.value).ok().map(|v| At { value: v, span: n.span }))
            }
            "fail2ban_findtime" => l.fail2ban_findtime = positive(p, k, value),
            "fail2ban_bantime" => l.fail2ban_bantime = positive(p, k, value),
            "fail2ban_ignore" => l.fail2ban_ignore = parse_fail2ban_ignore(p, value),
            "apt_lock_timeout" => l.apt_lock_timeout = positive(p, k, value),
            "waive" => l.waive = parse_waive(p, value),
            "level" => {
                l.level = string(p, k, value).and_then(|s| {
                    let level = match s.value.as_str() {
                        "baseline" => HardenLevel::Baseline,
                        "production" => HardenLevel::Production,
                        other => {
                            p.add(s.span, format!("level `{other}` is not one of baseline, production"));
                            return None;
                        }
                    };
                    Some(At { value: level, span: s.span })
                })
            }
            "modules_keep" => l.modules_keep = parse_modules_keep(p, value),
            "keep_users" => l.keep_users = parse_keep_users(p, value),
            other => {
                let (what, keys): (String, Vec<&str>) = match level {
                    Level::Defaults => ("[defaults]".into(), FIELD_KEYS.to_vec()),
                    Level::Group(g) => (format!("[groups.{g}]"), FIELD_KEYS.to_vec()),
                    Level::Host => ("a host".into(), [&["name", "groups"][..], FIELD_KEYS].concat()),
                };
                unknown_key(p, key.span(), other, &what, &keys);
            }
        }
    }
    f
}

fn parse_net(s: &str) -> Option<IpNet> {
    if let Ok(net) = s.parse::<IpNet>() {
        return Some(net);
    }
    s.parse::<std::net::IpAddr>().ok().map(IpNet::from)
}

/// A network written with bits set beyond its prefix (`198.51.100.1/24`) is ambiguous: ufw and
/// fail2ban would silently widen it to the whole network, while the operator may have meant the
/// one address. Say both readings instead of guessing.
fn host_bits_error(key: &str, raw: &str, net: &IpNet) -> Option<String> {
    let trunc = net.trunc();
    (trunc != *net).then(|| {
        format!(
            "{key} `{}` has bits set beyond its /{} prefix: write the network `{trunc}` or the \
             single address `{}`",
            raw.escape_debug(),
            net.prefix_len(),
            net.addr()
        )
    })
}

/// `fail2ban_ignore`: addresses and networks fail2ban must never ban. Each one switches banning
/// off for everyone inside it, so a network wider than a /8 (IPv4) or a /32 (IPv6) is refused, as
/// is anything fail2ban would not read as an address (it looks names up in DNS).
fn parse_fail2ban_ignore(p: &mut Problems, value: &Value<'_>) -> Option<At<Vec<IpNet>>> {
    let items = string_list(p, "fail2ban_ignore", value)?;
    let mut nets = Vec::new();
    let mut ok = true;
    for item in items {
        match check_ignore(&item.value) {
            Ok(n) => nets.push(n),
            Err(why) => {
                ok = false;
                p.add(item.span, why);
            }
        }
    }
    ok.then(|| At {
        value: nets,
        span: value.span(),
    })
}

/// The smallest IPv4 and IPv6 prefixes `fail2ban_ignore` accepts.
pub(crate) const IGNORE_MIN_PREFIX_V4: u8 = 8;
pub(crate) const IGNORE_MIN_PREFIX_V6: u8 = 32;

fn check_ignore(raw: &str) -> Result<IpNet, String> {
    const WHAT: &str = "list only the addresses or networks of your own sites (office, NAT gateway), \
                        e.g. \"203.0.113.7\" or \"198.51.100.0/24\"";
    let shown = raw.escape_debug();
    let Some(net) = parse_net(raw.trim()) else {
        return Err(format!(
            "fail2ban_ignore `{shown}` is not an IP address or CIDR network (fail2ban would look a \
             name up in DNS): {WHAT}"
        ));
    };
    if let Some(why) = host_bits_error("fail2ban_ignore", raw, &net) {
        return Err(why);
    }
    let (family, min) = match net {
        IpNet::V4(_) => ("IPv4", IGNORE_MIN_PREFIX_V4),
        IpNet::V6(_) => ("IPv6", IGNORE_MIN_PREFIX_V6),
    };
    if net.prefix_len() == 0 {
        return Err(format!(
            "fail2ban_ignore `{shown}` is every {family} address: fail2ban would never ban anyone \
             (the jail is switched off); {WHAT}"
        ));
    }
    if net.prefix_len() < min {
        return Err(format!(
            "fail2ban_ignore `{shown}` is wider than a /{min}: fail2ban would never ban anyone in \
             it; {WHAT}"
        ));
    }
    if let IpNet::V6(v6) = net
        && v6.addr().to_ipv4_mapped().is_some()
    {
        // fail2ban reads a bare ::ffff:a.b.c.d as IPv4 but a network of them as IPv6, which then
        // matches no IPv4 peer: only the IPv4 spelling means what it says.
        return Err(format!(
            "fail2ban_ignore `{shown}` is an IPv4-mapped IPv6 address: write it as IPv4 \
             (a.b.c.d or a.b.c.d/NN)"
        ));
    }
    if net.addr().is_unspecified() && net.prefix_len() == net.max_prefix_len() {
        return Err(format!(
            "fail2ban_ignore `{shown}` is the unspecified address, no peer has it; {WHAT}"
        ));
    }
    Ok(net)
}

/// A waived control ID and, in the table form, why the operator accepts it.
type Waiver = (String, Option<String>);

/// `waive`: a list of control IDs (`["FS-SIP-06"]`), or a table of ID = reason
/// (`{ FS-SIP-06 = "an SBC filters SIP" }`), the reason shown wherever the waiver is.
fn parse_waive(p: &mut Problems, value: &Value<'_>) -> Option<At<Vec<Waiver>>> {
    const ONE_WORD: &str = "a waived control ID must be a single word such as FS-ESL-01";
    let mut out = Vec::new();
    if let DeValue::Table(t) = value.get_ref() {
        for (k, v) in t.iter() {
            let id: &str = k.get_ref();
            if id.is_empty() || id.contains(char::is_whitespace) {
                p.add(k.span(), ONE_WORD);
                continue;
            }
            match v.get_ref() {
                DeValue::String(r) if !r.trim().is_empty() => {
                    out.push((id.to_string(), Some(r.trim().to_string())));
                }
                _ => p.add(
                    v.span(),
                    format!(
                        "the reason for waiving {id} must be a non-empty string, such as \
                         {id} = \"the SBC in front filters SIP\""
                    ),
                ),
            }
        }
    } else {
        for item in string_list(p, "waive", value)? {
            if item.value.is_empty() || item.value.contains(char::is_whitespace) {
                p.add(item.span, ONE_WORD);
            } else {
                out.push((item.value, None));
            }
        }
    }
    Some(At {
        value: out,
        span: value.span(),
    })
}

/// `modules_keep`: FreeSWITCH module names as modules.conf.xml writes them (`mod_verto`).
fn parse_modules_keep(p: &mut Problems, value: &Value<'_>) -> Option<At<Vec<String>>> {
    let items = string_list(p, "modules_keep", value)?;
    let mut names = Vec::new();
    for item in items {
        let ok = item.value.starts_with("mod_")
            && item.value.len() > 4
            && item
                .value
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'_');
        if ok {
            names.push(item.value);
        } else {
            p.add(
                item.span,
                format!(
                    "`{}` in modules_keep is not a module name such as mod_verto",
                    item.value
                ),
            );
        }
    }
    Some(At {
        value: names,
        span: value.span(),
    })
}

/// `keep_users`: directory user ids as a user's file names them (`1000`, `brian`).
fn parse_keep_users(p: &mut Problems, value: &Value<'_>) -> Option<At<Vec<String>>> {
    let items = string_list(p, "keep_users", value)?;
    let mut ids = Vec::new();
    for item in items {
        if crate::harden::per_user_passwords::plain_user(&item.value) {
            ids.push(item.value);
        } else {
            p.add(
                item.span,
                format!(
                    "`{}` in keep_users is not a directory user id such as 1000 or brian",
                    item.value
                ),
            );
        }
    }
    Some(At {
        value: ids,
        span: value.span(),
    })
}

fn password_rejected(p: &mut Problems, span: Span, key: &str) {
    let env_key = format!("{key}_env");
    p.add(
        span,
        format!(
            "`{key}` is not accepted: a password must never be written in the inventory; export it in an environment variable and set {env_key} = \"THAT_VARIABLE\""
        ),
    );
}

fn unknown_key(p: &mut Problems, span: Span, key: &str, what: &str, valid: &[&str]) {
    let msg = match closest(key, valid.iter().copied()) {
        Some(s) => format!("unknown key `{key}` in {what}: did you mean `{s}`?"),
        None => format!(
            "unknown key `{key}` in {what}: valid keys are {}",
            valid.join(", ")
        ),
    };
    p.add(span, msg);
}

fn table_of<'a, 'i>(p: &mut Problems, what: &str, value: &'a Value<'i>) -> Option<&'a DeTable<'i>> {
    match value.get_ref() {
        DeValue::Table(t) => Some(t),
        other => {
            p.add(
                value.span(),
                format!("{what} must be a table, found {}", other.type_str()),
            );
            None
        }
    }
}

fn string(p: &mut Problems, key: &str, value: &Value<'_>) -> Option<At<String>> {
    match value.get_ref() {
        DeValue::String(s) => Some(At {
            value: s.to_string(),
            span: value.span(),
        }),
        other => {
            p.add(
                value.span(),
                format!("`{key}` must be a string, found {}", other.type_str()),
            );
            None
        }
    }
}

fn string_list(p: &mut Problems, key: &str, value: &Value<'_>) -> Option<Vec<At<String>>> {
    let DeValue::Array(items) = value.get_ref() else {
        p.add(
            value.span(),
            format!(
                "`{key}` must be a list of strings like [\"a\", \"b\"], found {}",
                value.get_ref().type_str()
            ),
        );
        return None;
    };
    let mut out = Vec::new();
    let mut ok = true;
    for item in items.iter() {
        match item.get_ref() {
            DeValue::String(s) => out.push(At {
                value: s.to_string(),
                span: item.span(),
            }),
            other => {
                ok = false;
                p.add(
                    item.span(),
                    format!("`{key}` must hold strings only, found {}", other.type_str()),
                );
            }
        }
    }
    ok.then_some(out)
}

fn int(p: &mut Problems, key: &str, value: &Value<'_>) -> Option<At<i128>> {
    match value.get_ref() {
        DeValue::Integer(n) => {
            match i128::from_str_radix(&n.as_str().replace('_', ""), n.radix()) {
                Ok(v) => Some(At {
                    value: v,
                    span: value.span(),
                }),
                Err(_) => {
                    p.add(value.span(), format!("`{key}` is not a usable integer"));
                    None
                }
            }
        }
        other => {
            p.add(
                value.span(),
                format!("`{key}` must be an integer, found {}", other.type_str()),
            );
            None
        }
    }
}

fn positive(p: &mut Problems, key: &str, value: &Value<'_>) -> Option<At<u64>> {
    let n = int(p, key, value)?;
    match u64::try_from(n.value) {
        Ok(v) if v > 0 && (key != "fail2ban_maxretry" || u32::try_from(v).is_ok()) => Some(At {
            value: v,
            span: n.span,
        }),
        _ => {
            p.add(
                n.span,
                format!("`{key}` must be a positive integer, found {}", n.value),
            );
            None
        }
    }
}

fn boolean(p: &mut Problems, key: &str, value: &Value<'_>) -> Option<At<bool>> {
    match value.get_ref() {
        DeValue::Boolean(b) => Some(At {
            value: *b,
            span: value.span(),
        }),
        other => {
            p.add(
                value.span(),
                format!("`{key}` must be true or false, found {}", other.type_str()),
            );
            None
        }
    }
}

/// A path relative to the inventory file, `~/` expanded.
fn path_value(p: &mut Problems, key: &str, value: &Value<'_>, dir: &Path) -> Option<At<PathBuf>> {
    let s = string(p, key, value)?;
    if s.value.trim().is_empty() {
        p.add(
            s.span,
            format!("`{key}` is empty: remove it or write a path"),
        );
        return None;
    }
    let expanded = expand_tilde(&s.value);
    let path = if expanded.is_absolute() {
        expanded
    } else {
        dir.join(expanded)
    };
    Some(At {
        value: path,
        span: s.span,
    })
}

/// The NAME of an environment variable. The value is not echoed on error: a user who put the
/// password itself here must not see it printed back.
fn env_name(p: &mut Problems, key: &str, value: &Value<'_>) -> Option<At<String>> {
    let s = string(p, key, value)?;
    let mut chars = s.value.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Some(s)
    } else {
        p.add(
            s.span,
            format!(
                "`{key}` must be the NAME of an environment variable (letters, digits, _), such as FS_SSH_PASSWORD, not the password itself"
            ),
        );
        None
    }
}

/// Host and group names are used in `--limit`, retry files and reports.
fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("is empty: give the host a name");
    }
    if name.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err("contains spaces: use letters, digits, `-`, `_` and `.`");
    }
    if name == "all" {
        return Err("is reserved: --limit reads `all` as every host; rename it");
    }
    if name.contains([',', '*', '?', '[', ']']) || name.starts_with(['!', '@', '#']) {
        return Err(
            "contains a character that --limit reads as syntax (, * ? [ ] or a leading ! @ #): rename it",
        );
    }
    Ok(())
}

/// The closest candidate by edit distance, if it is close enough to be a likely typo.
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    let candidates: Vec<&str> = candidates.collect();
    let limit = (word.chars().count() / 3).max(2);
    let near = candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c);
    // A truncated key (`sip_allow` for `sip_allow_from`) is far in edits but obvious.
    near.or_else(|| {
        (word.len() >= 4)
            .then(|| candidates.iter().find(|c| c.starts_with(word)).copied())
            .flatten()
    })
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The inventory's directory, absolute so that resolved paths do not depend on a later chdir.
pub(super) fn inventory_dir(path: &Path) -> PathBuf {
    let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
    if parent.is_absolute() {
        return parent;
    }
    match std::env::current_dir() {
        Ok(cwd) => cwd.join(parent),
        Err(_) => parent,
    }
}

/// `$USER`, else `$LOGNAME`, else `id -un`, else root.
pub fn local_login_user() -> String {
    for var in ["USER", "LOGNAME"] {
        if let Ok(u) = std::env::var(var)
            && !u.trim().is_empty()
        {
            return u;
        }
    }
    if let Ok(out) = std::process::Command::new("id").arg("-un").output()
        && out.status.success()
    {
        let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !name.is_empty() {
            return name;
        }
    }
    "root".to_string()
}

/// 1-based line and column (in characters) of a byte offset.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

fn invalid(text: &str, path: &Path, mut problems: Problems) -> InventoryError {
    problems.list.sort_by_key(|(span, _)| span.start);
    let omitted = problems.list.len().saturating_sub(MAX_DIAGNOSTICS);
    let diagnostics = problems
        .list
        .into_iter()
        .take(MAX_DIAGNOSTICS)
        .map(|(span, message)| {
            let (line, col) = line_col(text, span.start);
            Diagnostic {
                file: None,
                line,
                col,
                message,
            }
        })
        .collect();
    InventoryError::Invalid {
        path: path.to_path_buf(),
        diagnostics,
        omitted,
    }
}
