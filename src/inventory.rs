//! The inventory: TOML schema, validation, groups and defaults, `--limit`; an Ansible inventory
//! (INI or YAML) is read as it is and resolved into the same hosts (see `ansible.rs`).
//!
//! `Inventory::load` turns a file into fully resolved [`Host`]s; nothing else in fsfleet reads the
//! TOML. Precedence per field: host > its groups (first listed wins) > `[defaults]` > `~/.ssh/config`
//! > built-in defaults. Command-line overrides are applied afterwards by the CLI.
//!
//! `~/.ssh/config` is consulted for the host's inventory name as the alias (as `ssh NAME` would);
//! when the inventory also gives an `address`, blocks matching that address fill what the name's
//! blocks leave unset. Validation reports every problem found (up to 50), one per line, as
//! `FILE:LINE:COL: what is wrong and what to do`; see [`InventoryError`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Serialize;

use crate::ssh::config::SshConfig;

mod ansible;
mod error;
mod limit;
mod load;

pub use error::{Diagnostic, InventoryError};
pub use limit::Limit;
pub(crate) use load::closest;
pub use load::local_login_user;

/// Which reader an inventory file gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum InventoryFormat {
    /// `.toml` is TOML; `.ini`, `.yml`, `.yaml`, `.json`, `.cfg` are Ansible; any other file is
    /// TOML when it has a `[[hosts]]` table, else Ansible.
    #[default]
    Auto,
    /// fsfleet's own TOML inventory.
    Toml,
    /// An Ansible inventory, INI or YAML (told apart by the extension, else the content), with
    /// its group_vars/ and host_vars/.
    Ansible,
}

/// What to do with a host key that is in no known_hosts file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum HostKeyPolicy {
    /// Collect every unknown key of the run, show the fingerprints, ask once on the terminal.
    Ask,
    /// Record unknown keys in known_hosts (trust on first use). Changed keys are still refused.
    AcceptNew,
    /// Refuse unknown keys.
    Strict,
}

impl HostKeyPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            HostKeyPolicy::Ask => "ask",
            HostKeyPolicy::AcceptNew => "accept-new",
            HostKeyPolicy::Strict => "strict",
        }
    }
}

/// How far `fsfleet harden` goes on a host.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum HardenLevel {
    /// The day-one steps: nothing a phone or a call depends on changes.
    #[default]
    Baseline,
    /// The baseline plus the production steps (dialplan, modules, ...): they change what users
    /// may call and which services run, so an operator opts in.
    Production,
}

impl HardenLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            HardenLevel::Baseline => "baseline",
            HardenLevel::Production => "production",
        }
    }
}

/// How to reach a host through a bastion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Jump {
    /// Another host of the inventory, by name (its own settings are used to reach it).
    Host { name: String },
    /// A bastion outside the inventory: `user@host:port` (user and port optional).
    Spec {
        user: Option<String>,
        address: String,
        port: u16,
    },
}

/// Where the FreeSWITCH configuration lives on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConfDir {
    /// Ask the running FreeSWITCH, else probe the known layouts.
    Auto,
    Path(String),
}

/// fail2ban jail settings for the FreeSWITCH jail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Fail2banSettings {
    pub maxretry: u32,
    /// seconds
    pub findtime: u64,
    /// seconds
    pub bantime: u64,
}

impl Default for Fail2banSettings {
    fn default() -> Self {
        Fail2banSettings {
            maxretry: 5,
            findtime: 600,
            bantime: 3600,
        }
    }
}

/// One host with every setting resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Host {
    /// The inventory name (unique); used in reports, `--limit`, the vault and the retry file.
    pub name: String,
    /// What to connect to: the inventory `address`, else ssh_config HostName, else `name`.
    pub address: String,
    pub port: u16,
    pub user: String,
    pub groups: Vec<String>,
    /// Candidate private keys in order (inventory, then ssh_config); the transport adds the
    /// ~/.ssh defaults after these.
    pub identity_files: Vec<PathBuf>,
    /// NAME of an environment variable that holds the SSH password.
    pub password_env: Option<String>,
    /// Run privileged commands through sudo (default: true unless user is root).
    pub sudo: bool,
    /// NAME of an environment variable that holds the sudo password (fed on stdin to `sudo -S`).
    pub sudo_password_env: Option<String>,
    pub jump: Option<Jump>,
    pub conf_dir: ConfDir,
    /// Sources the firewall lets reach the SIP ports (empty: anywhere). Never fail2ban's
    /// `ignoreip`: a wide allow-list there would switch banning off.
    pub sip_allow_from: Vec<IpNet>,
    /// The ONLY addresses fail2ban never bans (besides loopback): validated by the inventory,
    /// no network wider than /8 (IPv4) or /32 (IPv6).
    pub fail2ban_ignore: Vec<IpNet>,
    #[serde(with = "duration_secs")]
    pub connect_timeout: Duration,
    /// Extra known_hosts file (absolute, resolved relative to the inventory file).
    pub known_hosts: Option<PathBuf>,
    pub host_key_policy: HostKeyPolicy,
    /// `HashKnownHosts yes` in ~/.ssh/config for this host: keys learned for it are recorded
    /// hashed (`|1|salt|hash`), as `ssh` would.
    pub hash_known_hosts: bool,
    pub fail2ban: Fail2banSettings,
    /// How long the packages step waits for another apt/dpkg (e.g. unattended-upgrades) to
    /// release its lock before it fails.
    #[serde(with = "duration_secs")]
    pub apt_lock_timeout: Duration,
    /// Audit control IDs waived for this host (from `[audit]`, groups and host).
    pub waive: Vec<String>,
    /// Why, for the waivers the inventory gives a reason (`waive = { ID = "reason" }`).
    pub waive_reasons: BTreeMap<String, String>,
    /// The harden level this host gets when `--level` is not given.
    pub level: HardenLevel,
    /// Modules the production `modules` step must leave loaded (e.g. `mod_verto`).
    pub modules_keep: Vec<String>,
    /// Stock directory users the production `remove-stock-users` step must leave (e.g. `1000`).
    pub keep_users: Vec<String>,
    /// The production `tls` step's certificate (PEM, the chain from the server's own
    /// certificate up) and private key: controller-side paths, relative ones resolved against
    /// the inventory's directory. Read when the step plans, never sent anywhere but the host.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

/// A validated inventory: every host fully resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Inventory {
    /// The file it was read from, as given.
    pub path: PathBuf,
    /// In file order.
    pub hosts: Vec<Host>,
    /// The names of the `[groups.NAME]` tables, in file order.
    pub groups: Vec<String>,
    /// Local files the inventory names that do not exist, per host: see
    /// [`Inventory::check_local_files`].
    missing_files: Vec<(String, Diagnostic)>,
    /// `vault_encryption` and `age_recipients`: how the credential vault is kept.
    pub vault: crate::vault::VaultSettings,
}

impl Inventory {
    /// Reads and validates `path` (format detected), honouring `~/.ssh/config`.
    pub fn load(path: &Path) -> Result<Inventory, InventoryError> {
        Inventory::load_format(path, InventoryFormat::Auto)
    }

    /// Reads and validates `path` as `format`, honouring `~/.ssh/config`.
    pub fn load_format(path: &Path, format: InventoryFormat) -> Result<Inventory, InventoryError> {
        let ssh = SshConfig::load_default()?;
        Inventory::load_as(path, format, Some(&ssh))
    }

    /// Like [`Inventory::load`] with an explicit ssh client config (`None`: ignore it); the
    /// format is detected ([`InventoryFormat::Auto`]).
    pub fn load_with(
        path: &Path,
        ssh_config: Option<&SshConfig>,
    ) -> Result<Inventory, InventoryError> {
        Inventory::load_as(path, InventoryFormat::Auto, ssh_config)
    }

    /// Reads and validates `path` as `format` (TOML, or an Ansible inventory with the
    /// `group_vars/` and `host_vars/` beside it).
    pub fn load_as(
        path: &Path,
        format: InventoryFormat,
        ssh_config: Option<&SshConfig>,
    ) -> Result<Inventory, InventoryError> {
        let read = || {
            std::fs::read_to_string(path).map_err(|source| InventoryError::Read {
                path: path.to_path_buf(),
                source,
            })
        };
        match format {
            InventoryFormat::Toml => Inventory::parse_str(&read()?, path, ssh_config),
            InventoryFormat::Ansible => ansible::load(path, ssh_config),
            InventoryFormat::Auto => {
                // A directory or a program is only ever an Ansible inventory (whose reader
                // explains that fsfleet reads neither); `.toml` is always TOML.
                let toml_ext = path
                    .extension()
                    .is_some_and(|e| e.eq_ignore_ascii_case("toml"));
                if !toml_ext && std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
                    return ansible::load(path, ssh_config);
                }
                let bytes = std::fs::read(path).map_err(|source| InventoryError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                if !toml_ext
                    && std::fs::metadata(path).is_ok_and(|m| ansible::is_script(&m, &bytes))
                {
                    return ansible::load(path, ssh_config);
                }
                let text = String::from_utf8(bytes).map_err(|e| InventoryError::Read {
                    path: path.to_path_buf(),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                })?;
                if ansible::detect(path, &text) {
                    ansible::load(path, ssh_config)
                } else {
                    Inventory::parse_str(&text, path, ssh_config)
                }
            }
        }
    }

    /// Validates inventory text. `path` names the file in messages and is the base of the
    /// relative paths inside it. Every problem found is reported, one per line, as
    /// `FILE:LINE:COL: what is wrong and what to do`.
    pub fn parse_str(
        text: &str,
        path: &Path,
        ssh_config: Option<&SshConfig>,
    ) -> Result<Inventory, InventoryError> {
        load::parse(text, path, ssh_config)
    }

    /// The host with this inventory name.
    pub fn get(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// The directory holding the inventory (absolute): the base of `--limit @FILE` and of the
    /// retry file `.fsfleet/retry`.
    pub fn dir(&self) -> PathBuf {
        load::inventory_dir(&self.path)
    }

    /// Refuses a run whose hosts name an `identity_file` that does not exist, where the
    /// inventory says it, before anything connects. Not part of loading: a template inventory
    /// (such as the shipped example) still parses, and hosts outside `--limit` do not matter.
    pub fn check_local_files(&self, hosts: &[Host]) -> Result<(), InventoryError> {
        let mut diagnostics: Vec<Diagnostic> = Vec::new();
        for (host, d) in &self.missing_files {
            if hosts.iter().any(|h| &h.name == host)
                && !diagnostics
                    .iter()
                    .any(|seen| (seen.line, seen.col) == (d.line, d.col))
            {
                diagnostics.push(d.clone());
            }
        }
        if diagnostics.is_empty() {
            return Ok(());
        }
        diagnostics.sort_by_key(|d| (d.line, d.col));
        Err(InventoryError::Invalid {
            path: self.path.clone(),
            diagnostics,
            omitted: 0,
        })
    }
}

mod duration_secs {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

impl Host {
    /// A host with every built-in default (root on port 22, strict host keys, conf_dir auto):
    /// what a one-line inventory entry resolves to, for programs and tests that build hosts.
    pub fn with_defaults(name: &str, address: &str) -> Host {
        Host {
            name: name.to_string(),
            address: address.to_string(),
            port: 22,
            user: "root".to_string(),
            groups: Vec::new(),
            identity_files: Vec::new(),
            password_env: None,
            sudo: false,
            sudo_password_env: None,
            jump: None,
            conf_dir: ConfDir::Auto,
            sip_allow_from: Vec::new(),
            fail2ban_ignore: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            known_hosts: None,
            host_key_policy: HostKeyPolicy::Strict,
            hash_known_hosts: false,
            fail2ban: Fail2banSettings::default(),
            apt_lock_timeout: DEFAULT_APT_LOCK_TIMEOUT,
            waive: Vec::new(),
            waive_reasons: BTreeMap::new(),
            level: HardenLevel::Baseline,
            modules_keep: Vec::new(),
            keep_users: Vec::new(),
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// The packages step's default wait for the apt lock.
pub const DEFAULT_APT_LOCK_TIMEOUT: Duration = Duration::from_secs(120);

/// `fsfleet inventory check`: every selected host with its effective settings.
pub fn render_hosts(inv: &Inventory, hosts: &[Host]) -> String {
    let mut out = format!(
        "{}: {} hosts ({} selected)\n",
        inv.path.display(),
        inv.hosts.len(),
        hosts.len()
    );
    if inv.vault.is_age() {
        out.push_str(&match inv.vault.age_recipients.len() {
            0 => "vault: encrypted with age to $FSFLEET_VAULT_PASSPHRASE\n".to_string(),
            n => format!("vault: encrypted with age to {n} recipient(s)\n"),
        });
    }
    for h in hosts {
        out.push_str(&format!("\n{}\n", h.name));
        let row = |k: &str, v: String| format!("  {k:<16} {v}\n");
        out.push_str(&row(
            "address",
            crate::display::host_port(&h.address, h.port),
        ));
        out.push_str(&row(
            "user",
            format!("{}{}", h.user, if h.sudo { " (sudo)" } else { "" }),
        ));
        if let Some(v) = &h.sudo_password_env {
            out.push_str(&row("sudo password", format!("from ${v}")));
        }
        if !h.groups.is_empty() {
            out.push_str(&row("groups", h.groups.join(", ")));
        }
        match &h.jump {
            Some(Jump::Host { name }) => {
                out.push_str(&row("jump", format!("via inventory host {name}")))
            }
            Some(Jump::Spec {
                user,
                address,
                port,
            }) => out.push_str(&row(
                "jump",
                format!(
                    "via {}{}",
                    user.as_ref().map(|u| format!("{u}@")).unwrap_or_default(),
                    crate::display::host_port(address, *port)
                ),
            )),
            None => {}
        }
        let ids: Vec<String> = h
            .identity_files
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        out.push_str(&row(
            "identity files",
            if ids.is_empty() {
                "ssh-agent, ~/.ssh defaults".into()
            } else {
                ids.join(", ")
            },
        ));
        if let Some(v) = &h.password_env {
            out.push_str(&row("ssh password", format!("from ${v}")));
        }
        out.push_str(&row(
            "conf_dir",
            match &h.conf_dir {
                ConfDir::Auto => "auto (ask FreeSWITCH, else probe known layouts)".into(),
                ConfDir::Path(p) => p.clone(),
            },
        ));
        let sip = if h.sip_allow_from.is_empty() {
            "anywhere".to_string()
        } else {
            h.sip_allow_from
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push_str(&row("sip allowed from", sip));
        out.push_str(&row(
            "host keys",
            format!(
                "{} policy, known_hosts {}{}",
                h.host_key_policy.as_str(),
                h.known_hosts
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "~/.ssh/known_hosts".into()),
                if h.hash_known_hosts {
                    " (new keys recorded hashed)"
                } else {
                    ""
                }
            ),
        ));
        out.push_str(&row(
            "connect timeout",
            format!("{} s", h.connect_timeout.as_secs_f64()),
        ));
        out.push_str(&row(
            "fail2ban",
            format!(
                "maxretry {}, findtime {} s, bantime {} s",
                h.fail2ban.maxretry, h.fail2ban.findtime, h.fail2ban.bantime
            ),
        ));
        if !h.fail2ban_ignore.is_empty() {
            out.push_str(&row(
                "fail2ban ignore",
                h.fail2ban_ignore
                    .iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            ));
        }
        out.push_str(&row(
            "apt lock wait",
            format!("{} s", h.apt_lock_timeout.as_secs()),
        ));
        if !h.waive.is_empty() {
            out.push_str(&row("waived controls", h.waive.join(", ")));
        }
        if h.level != HardenLevel::Baseline {
            out.push_str(&row("harden level", h.level.as_str().into()));
        }
        if !h.keep_users.is_empty() {
            out.push_str(&row("users kept", h.keep_users.join(", ")));
        }
        if !h.modules_keep.is_empty() {
            out.push_str(&row("modules kept", h.modules_keep.join(", ")));
        }
        if let (Some(c), Some(k)) = (&h.tls_cert, &h.tls_key) {
            out.push_str(&row(
                "TLS certificate",
                format!("{} (key {})", c.display(), k.display()),
            ));
        }
    }
    out
}
