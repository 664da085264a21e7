//! The inventory: TOML schema, validation, groups and defaults, `--limit`.
//!
//! `Inventory::load` turns a file into fully resolved [`Host`]s; nothing else in fsfleet reads the
//! TOML. Precedence per field: host > its groups (first listed wins) > `[defaults]` > `~/.ssh/config`
//! > built-in defaults. Command-line overrides are applied afterwards by the CLI.

use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Serialize;

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
    pub sip_allow_from: Vec<IpNet>,
    #[serde(with = "duration_secs")]
    pub connect_timeout: Duration,
    /// Extra known_hosts file (absolute, resolved relative to the inventory file).
    pub known_hosts: Option<PathBuf>,
    pub host_key_policy: HostKeyPolicy,
    pub fail2ban: Fail2banSettings,
    /// Audit control IDs waived for this host (from `[audit]`, groups and host).
    pub waive: Vec<String>,
}

mod duration_secs {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}
