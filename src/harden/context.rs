//! What every harden step works with: the facts of its host, the session, the options.

use std::time::Duration;

use super::reload::Needs;
use crate::conf::ConfError;
use crate::esl::EslError;
use crate::esl_target::Refusal;
use crate::facts::{
    self, Fact, FactError, Facts, FactsError, FileFact, Files, Script, ScriptInput, Sections, Unit,
};
use crate::hostfs::HostFsError;
use crate::inventory::{HardenLevel, Host};
use crate::model::{EventSocket, HostModel, ModelError};
use crate::secret::Secret;
use crate::ssh::{Connector, ExecOutput, Session, SshError};
use crate::vault::{CredKind, UserCredKind};

/// Options of a harden run that steps may consult.
#[derive(Debug, Clone, Default)]
pub struct HardenOptions {
    /// Rotate passwords even when they are already strong.
    pub rotate: bool,
    /// Rotate `default_password` even while users that log in with it are registered.
    pub rotate_in_use: bool,
    /// Give users their own passwords even while their phones are registered (`per-user-passwords`).
    pub force_reregister: bool,
    /// Disable stock users even while registered or routed to by the dialplan
    /// (`remove-stock-users`).
    pub remove_in_use: bool,
    /// `ufw --force reset` before applying fsfleet's rules (drops the host's other rules).
    pub firewall_reset: bool,
    /// Edit configs even when FreeSWITCH is down (no reload, said in the report).
    pub offline_ok: bool,
    /// Compute and show, change nothing.
    pub check: bool,
    /// Show config diffs (secrets masked).
    pub diff: bool,
    /// `--level`: overrides every host's inventory `level` when given.
    pub level: Option<HardenLevel>,
    /// `fsfleet rotate`: only these passwords change, whatever else the baseline would fix.
    pub rotate_only: Option<RotateScope>,
    /// `--self-signed`: hosts without `tls_cert`/`tls_key` get a test certificate made on the
    /// controller, kept (key 0600) under this directory and reused by later runs.
    pub self_signed: Option<std::path::PathBuf>,
}

/// Why `fsfleet rotate` rotates a password that is not weak (the report's "(was ...)").
pub const ON_REQUEST: &str = "strong; rotation requested";

/// The passwords `fsfleet rotate` changes; the steps that set them rotate these (strong or
/// not) and leave every other baseline change to `fsfleet harden`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RotateScope {
    /// The Event Socket password (and the fs_cli configs that carry it).
    pub esl: bool,
    /// vars.xml's `default_password`.
    pub sip: bool,
    /// The production level's per-user SIP passwords.
    pub users: bool,
}

impl HardenOptions {
    /// The level a host is hardened to: `--level`, else its inventory `level`.
    pub fn level_for(&self, host: &Host) -> HardenLevel {
        self.level.unwrap_or(host.level)
    }
}

/// Collects what the steps of a run need to read, for the one facts script per host: the fact
/// units (each run once however many steps ask), and the absolute files to read.
pub struct Probes {
    units: Vec<Unit>,
    raw: Vec<(&'static str, String)>,
    abs_files: Vec<String>,
    conf_globs: Vec<&'static str>,
}

impl Probes {
    pub fn new() -> Probes {
        Probes {
            units: Vec::new(),
            raw: Vec::new(),
            abs_files: Vec::new(),
            conf_globs: Vec::new(),
        }
    }

    /// A fact the step reads back with [`HostFacts::get`].
    pub fn fact<F: Fact>(&mut self) -> &mut Self {
        self.units.push(Unit::of::<F>());
        self
    }

    /// A named shell snippet that is not a unit yet (the sections of [`facts::RAW_SECTIONS`]),
    /// read back with [`HostFacts::section`].
    pub fn snippet(&mut self, name: &'static str, snippet: &str) -> &mut Self {
        self.raw.push((name, snippet.to_string()));
        self
    }

    /// An absolute file to read (exact bytes, mode, owner). Config-dir files are read anyway
    /// (see [`facts::CONF_FILES`]).
    pub fn file(&mut self, path: impl Into<String>) -> &mut Self {
        let p = path.into();
        if !self.abs_files.contains(&p) {
            self.abs_files.push(p);
        }
        self
    }

    /// Config files to read beyond [`facts::CONF_FILES`] (globs relative to the config dir),
    /// in the same tar stream.
    pub fn conf_files(&mut self, globs: &[&'static str]) -> &mut Self {
        for g in globs {
            if !self.conf_globs.contains(g) {
                self.conf_globs.push(g);
            }
        }
        self
    }

    /// Finish the script: the steps' units, the base facts, the files, then the raw snippets.
    pub fn into_script(mut self, host: &Host) -> Script {
        self.units.extend_from_slice(facts::BASE);
        self.units.push(Unit::of::<facts::ConfFiles>());
        let input = ScriptInput {
            host,
            files: &self.abs_files,
            conf_globs: &self.conf_globs,
        };
        let mut script = Script::of_units(&input, &self.units);
        for (name, snippet) in &self.raw {
            script.add(name, snippet);
        }
        script
    }
}

impl Default for Probes {
    fn default() -> Self {
        Self::new()
    }
}

/// Everything read from one host in the single facts round trip.
#[derive(Debug, Default)]
pub struct HostFacts {
    pub base: Facts,
    pub files: Files,
    pub sections: Sections,
}

impl HostFacts {
    pub fn parse(
        sections: Sections,
        session_user: &str,
        uses_sudo: bool,
    ) -> Result<HostFacts, FactsError> {
        let base = facts::parse_base(&sections, session_user, uses_sudo);
        let files = sections.get::<facts::ConfFiles>()?;
        Ok(HostFacts {
            base,
            files,
            sections,
        })
    }

    /// The typed value of a fact the command's script ran.
    pub fn get<F: Fact>(&self) -> Result<F::Value, FactError> {
        self.sections.get::<F>()
    }

    /// A raw snippet's output (the sections of [`facts::RAW_SECTIONS`]).
    pub fn section(&self, name: &str) -> &str {
        debug_assert!(
            facts::RAW_SECTIONS.contains(&name),
            "{name} is a fact unit: read it with HostFacts::get"
        );
        self.sections.text(name)
    }

    pub fn section_status(&self, name: &str) -> Option<i32> {
        debug_assert!(
            facts::RAW_SECTIONS.contains(&name),
            "{name} is a fact unit: read it with HostFacts::get"
        );
        self.sections.status(name)
    }

    /// The text of a file read by absolute path (None: absent, too large or not UTF-8).
    pub fn file_text(&self, path: &str) -> Option<&str> {
        self.files.files.get(path).and_then(|f| f.text())
    }
}

/// What a step would do on this host: the report's lines, and what the orchestrator does for
/// the step around its `apply`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepPlan {
    /// One line per change, for the operator (never a secret). Empty: nothing to do.
    pub changes: Vec<String>,
    /// Warnings to report even when nothing changes (e.g. SIP open to the world).
    pub warnings: Vec<String>,
    /// Parts of the step's change it will not make, each with why and the flag that makes it:
    /// the step reports failed with them while the rest of its plan and the run go on.
    pub refused: Vec<String>,
    /// Masked diffs for `--diff`.
    pub diffs: Vec<String>,
    /// Config files to write, in the one all-or-nothing batch of every step's edits.
    pub edits: Vec<FileEdit>,
    /// Passwords the edits set: to the vault as pending before the host sees them, active once
    /// verified.
    pub secrets: Vec<(CredKind, Secret)>,
    /// Per-user secrets the edits set (a directory user's id, which credential, the value):
    /// pending in the vault first, like `secrets`.
    pub user_secrets: Vec<(String, UserCredKind, Secret)>,
    /// The SIP domain of the users `user_secrets` are for, when known (the vault keeps it for
    /// `creds export --users`).
    pub user_domain: Option<String>,
    /// What FreeSWITCH must reload once the edits are written.
    pub reload: Needs,
    /// The Event Socket FreeSWITCH runs once the edits are reloaded, when they change it.
    pub event_socket: Option<EventSocket>,
    /// Files outside the edits that `apply` replaces: the backup keeps them too.
    pub backup: Vec<String>,
}

impl StepPlan {
    pub fn is_noop(&self) -> bool {
        self.changes.is_empty()
    }
}

/// Why a step (or an orchestrator phase) could not plan or apply. Each message says what failed
/// and, where there is one, keeps the error underneath as its source.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Ssh(#[from] SshError),
    /// The host is not in a state the step can work with; the message says what to do.
    #[error("{0}")]
    Refused(String),
    /// A remote command failed; the message says which and its stderr (never a secret).
    #[error("{0}")]
    Failed(String),
    /// FreeSWITCH's configuration cannot be read as the step needs (the error names the file).
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A config file cannot be edited safely.
    #[error("{path}: {source}")]
    Edit {
        path: String,
        #[source]
        source: ConfError,
    },
    /// The Event Socket did not do what the step asked.
    #[error("{what}: {source}")]
    Esl {
        what: String,
        #[source]
        source: EslError,
    },
    /// A write through hostfs, or a host path it refuses.
    #[error("{what}: {source}")]
    HostFs {
        what: String,
        #[source]
        source: Box<HostFsError>,
    },
    /// No password may go to the Event Socket listener (the message names it and what to do).
    #[error(transparent)]
    Listener(#[from] Refusal),
    /// The `tls` step's certificate or key cannot be used (the message names host and file).
    #[error(transparent)]
    Tls(#[from] super::tls::TlsError),
}

/// What a step's `apply` gets.
pub struct StepCtx<'a> {
    pub host: &'a Host,
    pub session: &'a Session,
    /// For steps that must prove a NEW connection still works (the firewall).
    pub connector: &'a Connector,
    pub facts: &'a HostFacts,
    pub opts: &'a HardenOptions,
    pub run_id: &'a str,
}

impl StepCtx<'_> {
    /// Run a root script on the host and fail the step with its stderr when it exits non-zero.
    pub async fn run_checked(
        &self,
        what: &str,
        script: &str,
        stdin: &[u8],
        limit: Duration,
    ) -> Result<ExecOutput, StepError> {
        let out = self.session.run_for(what, script, stdin, limit).await?;
        if !out.success() {
            let err = out.stderr_text();
            let tail: Vec<&str> = err.lines().rev().take(5).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(StepError::Failed(format!(
                "{what} failed (exit {}): {}",
                out.status,
                tail.join(" | ")
            )));
        }
        Ok(out)
    }
}

/// Owner, group and permission bits of a file, as names and bits (the way facts read them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub user: String,
    pub group: String,
    pub mode: u32,
}

impl Meta {
    pub fn of(f: &FileFact) -> Meta {
        Meta {
            user: f.owner.clone(),
            group: f.group.clone(),
            mode: f.mode & 0o7777,
        }
    }

    /// What a file holding a secret must be: readable by root and the FreeSWITCH user only,
    /// and still readable by FreeSWITCH. `fs`: FreeSWITCH's user and group.
    /// - owner: kept when it is root or FreeSWITCH's user, else root (with rw);
    /// - FreeSWITCH reads it as its owner, or else through its group: the group becomes
    ///   FreeSWITCH's with read (a root:root 0644 file FreeSWITCH read as "other" becomes
    ///   root:freeswitch 0640, not an unreadable 0640 root:root);
    /// - another group keeps no bits; nobody else gets any; set-id and sticky bits go.
    ///
    /// Unknown FreeSWITCH user (not running): nothing changes, since any guess could lock
    /// FreeSWITCH out of its own config; the audit still reports bits for others.
    pub fn for_secret(&self, fs: Option<(&str, &str)>) -> Meta {
        let Some((fs_user, fs_group)) = fs else {
            return self.clone();
        };
        let (user, mut mode) = if self.user == "root" || self.user == fs_user {
            (self.user.clone(), (self.mode & 0o700) | 0o400)
        } else {
            ("root".to_string(), 0o600)
        };
        let group = if user == fs_user {
            // FreeSWITCH reads it as its owner; its own group (or root's) may keep its bits.
            if self.group == fs_group || self.group == "root" {
                mode |= self.mode & 0o070;
            }
            self.group.clone()
        } else {
            mode |= (self.mode & 0o070 & if self.group == fs_group { 0o070 } else { 0 }) | 0o040;
            fs_group.to_string()
        };
        Meta { user, group, mode }
    }

    /// Whether users other than root and FreeSWITCH's may read the file: bits for others, or
    /// group bits for a group that is neither (FreeSWITCH's user unknown: bits for others only).
    pub fn exposes_secret(&self, fs: Option<(&str, &str)>) -> bool {
        match fs {
            None => self.mode & 0o007 != 0,
            Some((u, g)) => {
                self.mode & 0o007 != 0
                    || (self.user != "root" && self.user != u)
                    || (self.mode & 0o070 != 0 && self.group != "root" && self.group != g)
            }
        }
    }
}

/// One config file change: exact old and new bytes and metadata (the old ones restore the
/// file if a later step fails before the reload).
#[derive(Clone, PartialEq)]
pub struct FileEdit {
    pub path: String,
    pub old: Vec<u8>,
    pub new: Vec<u8>,
    pub was: Meta,
    pub want: Meta,
    /// The file does not exist yet: the write creates it (`old` is empty, `was` is `want`),
    /// and putting the old state back removes it.
    pub created: bool,
}

impl FileEdit {
    /// Whether FreeSWITCH sees a difference (not only owner or mode).
    pub fn content_changed(&self) -> bool {
        self.old != self.new
    }
}

impl std::fmt::Debug for FileEdit {
    // The contents hold secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileEdit")
            .field("path", &self.path)
            .field("was", &self.was)
            .field("want", &self.want)
            .finish_non_exhaustive()
    }
}

impl HostFacts {
    /// A config file (relative to the config dir) as text, or a refusal that says why not.
    pub fn conf_text(&self, rel: &str) -> Result<(&str, &str), StepError> {
        let dir = self
            .files
            .conf_dir
            .as_deref()
            .ok_or_else(|| StepError::Refused("no FreeSWITCH configuration found".into()))?;
        let f = self
            .files
            .conf(rel)
            .ok_or_else(|| StepError::Refused(format!("{dir}/{rel} does not exist")))?;
        let text = f.text().ok_or_else(|| {
            StepError::Refused(format!(
                "{} is too large or not UTF-8 text; fsfleet will not edit it",
                f.path
            ))
        })?;
        Ok((f.path.as_str(), text))
    }

    /// FreeSWITCH's user and group, when known (the files holding secrets are theirs).
    pub fn fs_owner(&self) -> Option<(&str, &str)> {
        self.base
            .fs_process
            .as_ref()
            .map(|p| (p.user.as_str(), p.group.as_str()))
    }

    /// An edit of the file at `path` (read by the facts) to `new`; `secret`: the file holds a
    /// secret, so it also ends readable only by root and FreeSWITCH (see [`Meta::for_secret`]).
    /// None when neither content nor metadata would change.
    pub fn edit(
        &self,
        path: &str,
        new: Vec<u8>,
        secret: bool,
    ) -> Result<Option<FileEdit>, StepError> {
        let f = self
            .files
            .files
            .get(path)
            .ok_or_else(|| StepError::Refused(format!("{path} was not read from the host")))?;
        let old = f.content.clone().ok_or_else(|| {
            StepError::Refused(format!("{path} is too large; fsfleet will not edit it"))
        })?;
        let was = Meta::of(f);
        let want = if secret {
            was.for_secret(self.fs_owner())
        } else {
            was.clone()
        };
        if old == new && was == want {
            return Ok(None);
        }
        Ok(Some(FileEdit {
            path: path.to_string(),
            old,
            new,
            was,
            want,
            created: false,
        }))
    }
}

#[cfg(test)]
impl HostFacts {
    /// Facts of a host whose config dir holds the given files (relative path, text).
    pub fn with_conf(dir: &str, files: &[(&str, &str)]) -> HostFacts {
        use crate::facts::FileFact;
        let mut hf = HostFacts::default();
        hf.files.conf_dir = Some(dir.to_string());
        // FreeSWITCH runs as `freeswitch`, as on the testbed and package installs.
        hf.base.fs_process = Some(crate::facts::FsProcess {
            pid: 100,
            uid: 999,
            gid: 999,
            user: "freeswitch".into(),
            group: "freeswitch".into(),
        });
        for (rel, text) in files {
            let path = format!("{dir}/{rel}");
            hf.files.files.insert(
                path.clone(),
                FileFact {
                    path,
                    mode: 0o640,
                    owner: "freeswitch".into(),
                    group: "freeswitch".into(),
                    size: text.len() as u64,
                    content: Some(text.as_bytes().to_vec()),
                },
            );
        }
        hf
    }

    /// The facts as they read once `edits` are written: each file's new bytes, owner, group and
    /// mode (what hostfs writes), so a plan can be checked against the audit without a host.
    pub fn with_edits<'e>(mut self, edits: impl IntoIterator<Item = &'e FileEdit>) -> HostFacts {
        for e in edits {
            let f = self
                .files
                .files
                .entry(e.path.clone())
                .or_insert_with(|| FileFact {
                    path: e.path.clone(),
                    mode: 0,
                    owner: String::new(),
                    group: String::new(),
                    size: 0,
                    content: None,
                });
            f.content = Some(e.new.clone());
            f.size = e.new.len() as u64;
            f.owner = e.want.user.clone();
            f.group = e.want.group.clone();
            f.mode = (f.mode & !0o7777) | e.want.mode;
        }
        self
    }

    /// The stock FreeSWITCH 1.10.12 tree's files that harden reads.
    pub fn stock() -> HostFacts {
        Self::stock_plus(&[])
    }

    /// The stock host with its directory (default.xml and the users of directory/default/).
    pub fn stock_with_directory() -> HostFacts {
        let root = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/reference/freeswitch-conf-1.10.12"
        );
        let mut rels = vec!["directory/default.xml".to_string()];
        let mut names: Vec<String> = std::fs::read_dir(format!("{root}/directory/default"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n.ends_with(".xml"))
            .collect();
        names.sort();
        rels.extend(names.into_iter().map(|n| format!("directory/default/{n}")));
        let rels: Vec<&str> = rels.iter().map(String::as_str).collect();
        Self::stock_plus(&rels)
    }

    fn stock_plus(extra: &[&str]) -> HostFacts {
        let root = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/reference/freeswitch-conf-1.10.12"
        );
        let mut files: Vec<(String, String)> = extra
            .iter()
            .map(|rel| {
                (
                    rel.to_string(),
                    std::fs::read_to_string(format!("{root}/{rel}")).unwrap(),
                )
            })
            .collect();
        for rel in [
            "vars.xml",
            "autoload_configs/event_socket.conf.xml",
            "autoload_configs/switch.conf.xml",
        ] {
            files.push((
                rel.to_string(),
                std::fs::read_to_string(format!("{root}/{rel}")).unwrap(),
            ));
        }
        for p in ["internal", "external", "internal-ipv6", "external-ipv6"] {
            let rel = format!("sip_profiles/{p}.xml");
            files.push((
                rel.clone(),
                std::fs::read_to_string(format!("{root}/{rel}")).unwrap(),
            ));
        }
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        HostFacts::with_conf("/etc/freeswitch", &refs)
    }
}

/// A host as the inventory resolves it with every default, for unit tests of plans.
#[cfg(test)]
pub(crate) fn test_host(name: &str) -> Host {
    Host::with_defaults(name, "192.0.2.10")
}

/// Every directory user's credential of `kind` as the host's files hold it (user id, value;
/// `$${vars}` expanded): what confirms a cut run's pending per-user secrets.
pub fn user_credentials_in(f: &HostFacts, kind: UserCredKind) -> Vec<(String, Secret)> {
    let model = HostModel::new(f);
    let vars = model.vars();
    model
        .directory_users()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|u| {
            let v = match kind {
                UserCredKind::SipPassword => u.password.as_deref(),
                UserCredKind::VmPassword => u.vm_password.as_deref(),
            }?;
            Some((u.id.clone(), Secret::new(vars.expand_text(v))))
        })
        .collect()
}

#[cfg(test)]
mod meta_tests {
    use super::*;

    fn m(user: &str, group: &str, mode: u32) -> Meta {
        Meta {
            user: user.into(),
            group: group.into(),
            mode,
        }
    }

    #[test]
    fn secret_files_end_readable_only_by_root_and_freeswitch_and_still_by_freeswitch() {
        let fs = Some(("freeswitch", "freeswitch"));
        // Stock package files are world-readable: the bits for others go, nothing else.
        assert_eq!(
            m("freeswitch", "freeswitch", 0o644).for_secret(fs),
            m("freeswitch", "freeswitch", 0o640)
        );
        assert_eq!(
            m("root", "freeswitch", 0o640).for_secret(fs),
            m("root", "freeswitch", 0o640)
        );
        assert!(!m("root", "freeswitch", 0o640).exposes_secret(fs));
        // FreeSWITCH read a root:root 0644 file as "other": it reads it through its group now.
        assert_eq!(
            m("root", "root", 0o644).for_secret(fs),
            m("root", "freeswitch", 0o640)
        );
        assert_eq!(
            m("root", "freeswitch", 0o604).for_secret(fs),
            m("root", "freeswitch", 0o640)
        );
        // Another group keeps no bits: FreeSWITCH's group takes it.
        assert_eq!(
            m("root", "users", 0o664).for_secret(fs),
            m("root", "freeswitch", 0o640)
        );
        assert!(m("root", "users", 0o660).exposes_secret(fs));
        assert_eq!(
            m("freeswitch", "users", 0o664).for_secret(fs),
            m("freeswitch", "users", 0o600)
        );
        // Another owner: root takes the file, FreeSWITCH reads it through its group.
        assert_eq!(
            m("deploy", "deploy", 0o644).for_secret(fs),
            m("root", "freeswitch", 0o640)
        );
        assert!(m("deploy", "freeswitch", 0o600).exposes_secret(fs));
        assert_eq!(
            m("mallory", "mallory", 0o4777).for_secret(fs),
            m("root", "freeswitch", 0o640)
        );
        // Whatever goes in, the result never exposes the secret and FreeSWITCH can read it.
        for user in ["root", "freeswitch", "other"] {
            for group in ["root", "freeswitch", "users"] {
                for mode in [
                    0o000, 0o400, 0o600, 0o640, 0o644, 0o604, 0o660, 0o666, 0o777, 0o6755,
                ] {
                    let out = m(user, group, mode).for_secret(fs);
                    assert!(
                        !out.exposes_secret(fs),
                        "{user}:{group} {mode:o} -> {out:?}"
                    );
                    let fs_reads = (out.user == "freeswitch" && out.mode & 0o400 != 0)
                        || (out.group == "freeswitch" && out.mode & 0o040 != 0);
                    assert!(
                        fs_reads,
                        "{user}:{group} {mode:o} -> {out:?} locks FreeSWITCH out"
                    );
                    assert_eq!(out.for_secret(fs), out, "stable");
                }
            }
        }
        // FreeSWITCH's user unknown: nothing is changed (a guess could lock it out).
        assert_eq!(
            m("root", "root", 0o644).for_secret(None),
            m("root", "root", 0o644)
        );
        assert!(m("root", "root", 0o604).exposes_secret(None));
        assert!(!m("root", "root", 0o640).exposes_secret(None));
    }
}
