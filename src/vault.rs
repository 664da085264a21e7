//! The local credential vault: every password fsfleet generates, per host.
//!
//! A new password is written here as *pending* BEFORE the host is touched and promoted to
//! *active* once verified, so a crash at any moment never leaves a host with a password nobody
//! knows. The file is JSON, 0600 in a 0700 directory, replaced atomically (temp file, fsync,
//! rename), and locked against a second fsfleet run using the same vault.
//!
//! Secrets belong to a host, not to a name: each entry records the SHA256 fingerprint of the SSH
//! host key they were created with or confirmed on, and they are handed out only to a session
//! that verified that same key. An inventory name pointed at another machine (a reinstall, a
//! reused address, a typo, an attacker's box accepted by `accept-new`) gets none of them, and the
//! entry can only be rebound by the operator (`fsfleet creds forget`). An entry written before
//! fingerprints were recorded is bound on its first use (the host key that session verified).
//!
//! At rest the file is JSON (`.fsfleet/vault.json`) or, with `vault_encryption = "age"` in the
//! inventory, an age file (`.fsfleet/vault.age`) the standard `age` tool can decrypt: see
//! [`crypt`]. Every command reads and writes both the same way; the file's form must match the
//! inventory's setting (a mismatch is refused, never silently converted: `fsfleet creds encrypt`
//! converts). The directory gets a `.gitignore` of `*` when fsfleet creates it.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use rand::Rng;
use rand::distributions::Alphanumeric;
use serde::{Deserialize, Serialize};

use crate::secret::Secret;

pub mod crypt;
pub mod pass;

use crypt::Codec;
pub use crypt::{AgeKeys, Encryption, VaultSettings};

/// Which credential of a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredKind {
    /// `default_password` in vars.xml (SIP users).
    SipPassword,
    /// The Event Socket password (event_socket.conf.xml, fs_cli configs).
    EslPassword,
}

impl CredKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CredKind::SipPassword => "sip_password",
            CredKind::EslPassword => "esl_password",
        }
    }
    pub const ALL: [CredKind; 2] = [CredKind::SipPassword, CredKind::EslPassword];
}

/// Which credential of one directory user of a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserCredKind {
    /// The user's voicemail PIN (`vm-password` in directory/).
    VmPassword,
    /// The user's own SIP password (`password` in directory/), for its phone.
    SipPassword,
}

impl UserCredKind {
    pub fn as_str(self) -> &'static str {
        match self {
            UserCredKind::VmPassword => "vm_password",
            UserCredKind::SipPassword => "sip_password",
        }
    }
    pub const ALL: [UserCredKind; 2] = [UserCredKind::VmPassword, UserCredKind::SipPassword];
}

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("vault {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "vault {path} is not valid ({reason}); it was left untouched: restore it from a backup or move it away"
    )]
    Corrupt { path: PathBuf, reason: String },
    /// The parser's message comes from the error chain (the CLI prints it after this one).
    #[error(
        "vault {path} is not valid JSON (it was left untouched: restore it from a backup or move it away)"
    )]
    Unparsable {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("vault {path} is in use by another fsfleet run (lock {lock}); wait for it to finish")]
    Locked { path: PathBuf, lock: PathBuf },
    #[error("cannot export {what}: {why}")]
    Export { what: String, why: String },
    #[error("{0}")]
    KeyMismatch(KeyMismatch),
    #[error("the inventory's vault settings: {why}")]
    Settings { why: String },
    #[error("no key for the encrypted vault: {need}")]
    AgeKeyMissing { need: String },
    #[error("age identity file {file}: {why}")]
    Identity { file: PathBuf, why: String },
    #[error(
        "none of the keys in {file} ({public}) is in the inventory's age_recipients: the vault \
         would be written to keys you cannot read it with; add your public key to age_recipients"
    )]
    IdentityNotRecipient { file: PathBuf, public: String },
    #[error(
        "vault {path} cannot be decrypted with {tried}: it was encrypted to other keys; it was \
         left untouched"
    )]
    AgeWrongKey { path: PathBuf, tried: String },
    /// age's own message comes from the error chain.
    #[error("vault {path} cannot be decrypted (it was left untouched)")]
    AgeDecrypt {
        path: PathBuf,
        source: Box<age::DecryptError>,
    },
    #[error("cannot encrypt the vault {path} (it was left as it was)")]
    AgeEncrypt {
        path: PathBuf,
        source: Box<age::EncryptError>,
    },
    #[error("vault {path}: {why}")]
    FormMismatch { path: PathBuf, why: String },
    #[error("cannot encrypt {path}: {why}")]
    Convert { path: PathBuf, why: String },
}

/// The vault holds secrets for a name, bound to another host key than the one presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMismatch {
    pub host: String,
    pub bound: String,
    pub presented: String,
}

impl std::fmt::Display for KeyMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the vault's passwords for {h} belong to host key {b}; this host presents {p}: they \
             are not sent, and nothing is changed. If {h} was reinstalled or replaced and {p} is \
             really its key, run `fsfleet creds forget {h}` and re-run: it is then hardened as a \
             new host",
            h = self.host,
            b = self.bound,
            p = self.presented
        )
    }
}

/// How a host's vault entry relates to the key a session presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyBinding {
    /// No secret stored yet: the key is recorded with the first one.
    New,
    /// The entry is bound to this key.
    Bound,
    /// The entry predates key binding: the first run to use it binds it.
    Unbound,
}

/// One generated value and its provenance.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct Stamped {
    pub value: String,
    /// RFC 3339 time it was generated (pending) or verified (active).
    pub at: String,
    pub run_id: String,
}

impl std::fmt::Debug for Stamped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stamped")
            .field("value", &"***")
            .field("at", &self.at)
            .field("run_id", &self.run_id)
            .finish()
    }
}

/// A credential: the value the host is known to use, and one being rolled out.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Credential {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<Stamped>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Stamped>,
    /// The active value before the last rotation (lets an operator reach a host that was
    /// restored from backup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Stamped>,
    /// Every value the host was verified to use, oldest first, each with when it became active
    /// and the run that set it; the last is the active one. The newest [`HISTORY_LEN`] are
    /// kept. A vault written before the history was kept has none until the next change
    /// (then it starts from its previous and active values); [`Credential::timeline`] reads both.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Stamped>,
}

/// How many values of each credential the vault keeps in its history.
pub const HISTORY_LEN: usize = 10;

impl Credential {
    /// The values this credential has had, newest first: its history, or, for an entry written
    /// before the history was kept, its active and previous values.
    pub fn timeline(&self) -> Vec<&Stamped> {
        if self.history.is_empty() {
            return [&self.active, &self.previous]
                .into_iter()
                .flatten()
                .collect();
        }
        self.history.iter().rev().collect()
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    /// `SHA256:...` of the SSH host key these secrets belong to (None: written before keys were
    /// recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key: Option<String>,
    #[serde(default)]
    pub creds: BTreeMap<CredKind, Credential>,
    /// Per directory user (its id): the credentials fsfleet generated for that user.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub users: BTreeMap<String, BTreeMap<UserCredKind, Credential>>,
    /// The SIP domain the host's directory users are in (what a phone registers to), when the
    /// run that gave them their passwords knew it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sip_domain: Option<String>,
    /// The run that wrote config files the running FreeSWITCH has not been reloaded with yet:
    /// set before the write, cleared once the reload is done. A run cut in between owes the
    /// host its reload even when it set no secret (its re-run finds the files done and plans
    /// nothing), so the next run reloads everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reload_owed: Option<String>,
}

impl Entry {
    fn all_creds(&self) -> impl Iterator<Item = &Credential> {
        self.creds
            .values()
            .chain(self.users.values().flat_map(|u| u.values()))
    }

    fn holds_secrets(&self) -> bool {
        self.all_creds().any(|c| {
            c.active.is_some()
                || c.pending.is_some()
                || c.previous.is_some()
                || !c.history.is_empty()
        })
    }

    /// A user's credential of this kind.
    pub fn user_credential(&self, user: &str, kind: UserCredKind) -> Option<&Credential> {
        self.users.get(user)?.get(&kind)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct Document {
    version: u32,
    #[serde(default)]
    hosts: BTreeMap<String, Entry>,
}

const VERSION: u32 = 1;

/// The vault file, open and locked for this run.
pub struct Vault {
    path: PathBuf,
    doc: Document,
    codec: Codec,
    _lock: File,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("path", &self.path)
            .field("hosts", &self.doc.hosts.len())
            .field("encrypted", &self.codec.is_age())
            .finish()
    }
}

/// `.fsfleet/vault.json` beside the inventory.
pub fn default_path(inventory: &Path) -> PathBuf {
    let dir = inventory
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    dir.join(".fsfleet").join("vault.json")
}

/// The vault beside the inventory for these settings: `.fsfleet/vault.json`, or
/// `.fsfleet/vault.age` when it is encrypted.
pub fn default_path_for(inventory: &Path, settings: &VaultSettings) -> PathBuf {
    let plain = default_path(inventory);
    if settings.is_age() {
        plain.with_extension("age")
    } else {
        plain
    }
}

/// What a `.gitignore` in the vault's directory holds: everything there is fsfleet's state
/// (passwords, the retry file, caches), none of it belongs beside the inventory in git.
const GITIGNORE: &str = "# fsfleet's local state (the credential vault): never commit it.\n*\n";

/// Whether git tracks `path` (its index holds it; outside a work tree it is not). `None`: git
/// could not be run. Nothing of the vault goes to git: only its name, as an argument.
pub fn tracked_by_git(path: &Path) -> Option<bool> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name()?;
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["ls-files", "--error-unmatch", "--"])
        .arg(name)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .ok()?;
    Some(out.success())
}

/// A new password: alphanumeric (no escaping in XML, fs_cli.conf or shells), from the OS RNG.
pub fn generate_password(len: usize) -> Secret {
    let s: String = rand::rngs::OsRng
        .sample_iter(Alphanumeric)
        .take(len)
        .map(char::from)
        .collect();
    Secret::new(s)
}

/// Whether every character is one [`generate_password`] can produce (ASCII letters and digits):
/// the only values the vault takes from a host, and the only ones a host may keep.
pub fn is_generated_alphabet(s: &str) -> bool {
    s.chars().all(|c| c.is_ascii_alphanumeric())
}

/// A voicemail PIN: `len` digits from the OS RNG (phones' keypads have no letters).
pub fn generate_pin(len: usize) -> Secret {
    let mut rng = rand::rngs::OsRng;
    Secret::new(
        (0..len)
            .map(|_| char::from(b'0' + rng.gen_range(0..10u8)))
            .collect::<String>(),
    )
}

/// Password length fsfleet generates (the baseline asks for at least 28).
pub const PASSWORD_LEN: usize = 32;

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl Vault {
    /// Open (or start) a plain vault at `path` and lock it for this process.
    pub fn open(path: &Path) -> Result<Vault, VaultError> {
        Vault::open_codec(path, Codec::Plain)
    }

    /// Open (or start) the vault at `path` as the inventory's `settings` say, with the
    /// operator's `keys` (see [`crypt`]). A file whose form is not the one the settings ask for
    /// is refused and left as it is, and so is a plain vault left beside an encrypted one.
    pub fn open_with(
        path: &Path,
        settings: &VaultSettings,
        keys: &AgeKeys,
    ) -> Result<Vault, VaultError> {
        Vault::open_codec(path, Codec::new(settings, keys)?)
    }

    fn open_codec(path: &Path, codec: Codec) -> Result<Vault, VaultError> {
        let io = |source| VaultError::Io {
            path: path.to_path_buf(),
            source,
        };
        let lock = lock(path)?;
        // The other form beside this one: an encrypted vault with its plain predecessor still
        // there (a conversion cut short, or a copy) leaves the secrets in clear text; a plain
        // vault started next to an encrypted one would hand out fresh passwords as if the hosts
        // were new.
        let other = path.with_extension(if codec.is_age() { "json" } else { "age" });
        if other != path && other.exists() && (codec.is_age() || !path.exists()) {
            let why = if codec.is_age() {
                format!(
                    "a plain vault {} is still beside it: run `fsfleet creds encrypt` to finish \
                     converting it (or remove it if it is an old copy)",
                    other.display()
                )
            } else {
                format!(
                    "it does not exist but an encrypted vault {} does: add vault_encryption = \
                     \"age\" (and age_recipients) to the inventory",
                    other.display()
                )
            };
            return Err(VaultError::FormMismatch {
                path: path.to_path_buf(),
                why,
            });
        }
        let doc = match std::fs::read(path) {
            Ok(bytes) => parse_document(path, &codec.open(path, &bytes)?)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Document {
                version: VERSION,
                hosts: BTreeMap::new(),
            },
            Err(e) => return Err(io(e)),
        };
        Ok(Vault {
            path: path.to_path_buf(),
            doc,
            codec,
            _lock: lock,
        })
    }

    /// Whether the file is kept encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.codec.is_age()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn hosts(&self) -> impl Iterator<Item = (&String, &Entry)> {
        self.doc.hosts.iter()
    }

    pub fn entry(&self, host: &str) -> Option<&Entry> {
        self.doc.hosts.get(host)
    }

    pub fn credential(&self, host: &str, kind: CredKind) -> Option<&Credential> {
        self.doc.hosts.get(host)?.creds.get(&kind)
    }

    /// Whether this host's secrets may go to a session that verified `host_key`.
    pub fn check_host_key(&self, host: &str, host_key: &str) -> Result<KeyBinding, KeyMismatch> {
        let Some(entry) = self.doc.hosts.get(host).filter(|e| e.holds_secrets()) else {
            return Ok(KeyBinding::New);
        };
        match &entry.host_key {
            None => Ok(KeyBinding::Unbound),
            Some(k) if k == host_key => Ok(KeyBinding::Bound),
            Some(k) => Err(KeyMismatch {
                host: host.to_string(),
                bound: k.clone(),
                presented: host_key.to_string(),
            }),
        }
    }

    /// Bind the host's entry to `host_key` (written at once) unless it is bound already: to
    /// this key (nothing to do) or to another (refused).
    pub fn bind(&mut self, host: &str, host_key: &str) -> Result<(), VaultError> {
        if self.bind_entry(host, host_key)? {
            self.save()
        } else {
            Ok(())
        }
    }

    /// The entry of `host`, bound to `host_key` (recorded if it had none). Whether it changed.
    fn bind_entry(&mut self, host: &str, host_key: &str) -> Result<bool, VaultError> {
        self.check_host_key(host, host_key)
            .map_err(VaultError::KeyMismatch)?;
        let entry = self.doc.hosts.entry(host.to_string()).or_default();
        if entry.host_key.as_deref() == Some(host_key) {
            return Ok(false);
        }
        entry.host_key = Some(host_key.to_string());
        Ok(true)
    }

    /// Drop everything the vault holds for `host` (the operator's way out of a key mismatch
    /// after a reinstall). Returns the entry that was removed, if any.
    pub fn forget(&mut self, host: &str) -> Result<Option<Entry>, VaultError> {
        let removed = self.doc.hosts.remove(host);
        if removed.is_some() {
            self.save()?;
        }
        Ok(removed)
    }

    fn cred_mut(&mut self, host: &str, kind: CredKind) -> &mut Credential {
        self.doc
            .hosts
            .entry(host.to_string())
            .or_default()
            .creds
            .entry(kind)
            .or_default()
    }

    /// Record a new value as pending and write the file before returning. `host_key` is the key
    /// of the session that will send it (the entry is bound to it; another one is refused).
    pub fn set_pending(
        &mut self,
        host: &str,
        host_key: &str,
        kind: CredKind,
        value: &Secret,
        run_id: &str,
    ) -> Result<(), VaultError> {
        self.bind_entry(host, host_key)?;
        self.cred_mut(host, kind).pending = Some(Stamped {
            value: value.expose().to_string(),
            at: now(),
            run_id: run_id.to_string(),
        });
        self.save()
    }

    /// Record a value the host is known to use right now (e.g. the password before a rotation).
    /// A pending value equal to it was rolled out by a run cut before it could confirm it: it is
    /// active now, not pending. Another pending value stays. A value outside the generated
    /// alphabet came from the host and is not recorded (see [`is_generated_alphabet`]).
    pub fn set_active(
        &mut self,
        host: &str,
        host_key: &str,
        kind: CredKind,
        value: &Secret,
        run_id: &str,
    ) -> Result<(), VaultError> {
        if !is_generated_alphabet(value.expose()) {
            return Ok(());
        }
        let bound = self.bind_entry(host, host_key)?;
        let cred = self.cred_mut(host, kind);
        let in_use = cred
            .pending
            .as_ref()
            .is_some_and(|p| p.value == value.expose());
        let pending = if in_use { cred.pending.take() } else { None };
        if activate(cred, value, run_id, pending.as_ref()) || in_use || bound {
            self.save()
        } else {
            Ok(())
        }
    }

    /// The host was verified to use `value` now: it becomes active (the old active value, if
    /// different, becomes previous) and any pending value is dropped (it is not in use). A value
    /// outside the generated alphabet (a host's own, kept by `--skip`) is not recorded: the
    /// vault only ever holds values fsfleet could have generated, so nothing a host chose can
    /// reach `creds export` or a terminal.
    pub fn confirm(
        &mut self,
        host: &str,
        host_key: &str,
        kind: CredKind,
        value: &Secret,
        run_id: &str,
    ) -> Result<(), VaultError> {
        let bound = self.bind_entry(host, host_key)?;
        let cred = self.cred_mut(host, kind);
        let pending = cred.pending.take();
        if !is_generated_alphabet(value.expose()) {
            return if pending.is_some() || bound {
                self.save()
            } else {
                Ok(())
            };
        }
        if activate(cred, value, run_id, pending.as_ref()) || pending.is_some() || bound {
            self.save()
        } else {
            Ok(())
        }
    }

    /// Whether a run left an unverified password for this host (it was interrupted).
    pub fn has_pending(&self, host: &str) -> bool {
        self.doc
            .hosts
            .get(host)
            .is_some_and(|e| e.all_creds().any(|c| c.pending.is_some()))
    }

    /// Whether a run on this host was interrupted: it left an unverified secret, or config
    /// files FreeSWITCH was not reloaded with ([`Vault::set_reload_owed`]).
    pub fn interrupted(&self, host: &str) -> bool {
        self.has_pending(host)
            || self
                .doc
                .hosts
                .get(host)
                .is_some_and(|e| e.reload_owed.is_some())
    }

    /// Record, before a run writes config files, that the running FreeSWITCH must reload them
    /// (written to disk before returning, like a pending secret).
    pub fn set_reload_owed(
        &mut self,
        host: &str,
        host_key: &str,
        run_id: &str,
    ) -> Result<(), VaultError> {
        self.bind_entry(host, host_key)?;
        let entry = self.doc.hosts.entry(host.to_string()).or_default();
        entry.reload_owed = Some(run_id.to_string());
        self.save()
    }

    /// FreeSWITCH runs what is on disk (reloaded, or not running and reading it at start).
    pub fn clear_reload_owed(&mut self, host: &str) -> Result<(), VaultError> {
        match self.doc.hosts.get_mut(host) {
            Some(e) if e.reload_owed.is_some() => {
                e.reload_owed = None;
                self.save()
            }
            _ => Ok(()),
        }
    }

    fn user_cred_mut(&mut self, host: &str, user: &str, kind: UserCredKind) -> &mut Credential {
        self.doc
            .hosts
            .entry(host.to_string())
            .or_default()
            .users
            .entry(user.to_string())
            .or_default()
            .entry(kind)
            .or_default()
    }

    /// [`Vault::set_pending`] for one directory user's credential.
    pub fn set_user_pending(
        &mut self,
        host: &str,
        host_key: &str,
        user: &str,
        kind: UserCredKind,
        value: &Secret,
        run_id: &str,
    ) -> Result<(), VaultError> {
        self.bind_entry(host, host_key)?;
        self.user_cred_mut(host, user, kind).pending = Some(Stamped {
            value: value.expose().to_string(),
            at: now(),
            run_id: run_id.to_string(),
        });
        self.save()
    }

    /// [`Vault::confirm`] for one directory user's credential: the host was verified to use
    /// `value` for that user.
    pub fn confirm_user(
        &mut self,
        host: &str,
        host_key: &str,
        user: &str,
        kind: UserCredKind,
        value: &Secret,
        run_id: &str,
    ) -> Result<(), VaultError> {
        let bound = self.bind_entry(host, host_key)?;
        let cred = self.user_cred_mut(host, user, kind);
        let pending = cred.pending.take();
        if !is_generated_alphabet(value.expose()) {
            return if pending.is_some() || bound {
                self.save()
            } else {
                Ok(())
            };
        }
        if activate(cred, value, run_id, pending.as_ref()) || pending.is_some() || bound {
            self.save()
        } else {
            Ok(())
        }
    }

    /// The host no longer uses a user's own credential (a rollback put the shared
    /// `$${default_password}` or the old PIN file back): its active value becomes previous, so
    /// `creds export --users` stops offering it.
    pub fn retire_user(
        &mut self,
        host: &str,
        user: &str,
        kind: UserCredKind,
    ) -> Result<(), VaultError> {
        let Some(cred) = self
            .doc
            .hosts
            .get_mut(host)
            .and_then(|e| e.users.get_mut(user))
            .and_then(|u| u.get_mut(&kind))
        else {
            return Ok(());
        };
        let Some(active) = cred.active.take() else {
            return Ok(());
        };
        cred.previous = Some(active);
        cred.pending = None;
        self.save()
    }

    /// Record the SIP domain of the host's directory users (for `creds export --users`).
    pub fn set_sip_domain(
        &mut self,
        host: &str,
        host_key: &str,
        domain: &str,
    ) -> Result<(), VaultError> {
        let bound = self.bind_entry(host, host_key)?;
        let entry = self.doc.hosts.entry(host.to_string()).or_default();
        if entry.sip_domain.as_deref() == Some(domain) && !bound {
            return Ok(());
        }
        entry.sip_domain = Some(domain.to_string());
        self.save()
    }

    /// Drop a user's pending value the host never took (a run cut before its write).
    pub fn drop_user_pending(
        &mut self,
        host: &str,
        user: &str,
        kind: UserCredKind,
    ) -> Result<(), VaultError> {
        let dropped = self
            .doc
            .hosts
            .get_mut(host)
            .and_then(|e| e.users.get_mut(user))
            .and_then(|u| u.get_mut(&kind))
            .and_then(|c| c.pending.take());
        if dropped.is_some() {
            self.save()
        } else {
            Ok(())
        }
    }

    /// The users of a host with a pending credential of this kind, and its value.
    pub fn pending_users(&self, host: &str, kind: UserCredKind) -> Vec<(String, Secret)> {
        let Some(e) = self.doc.hosts.get(host) else {
            return vec![];
        };
        e.users
            .iter()
            .filter_map(|(u, creds)| {
                let p = creds.get(&kind)?.pending.as_ref()?;
                Some((u.clone(), Secret::new(p.value.clone())))
            })
            .collect()
    }

    /// Every value the vault holds for a host's credential (pending first): what to try when
    /// the host's current password is in doubt after an interrupted run. Nothing unless the
    /// session presenting `host_key` is the host they belong to (or the entry is not bound yet:
    /// see the module docs).
    pub fn candidates(&self, host: &str, host_key: &str, kind: CredKind) -> Vec<Secret> {
        if self.check_host_key(host, host_key).is_err() {
            return vec![];
        }
        let Some(c) = self.credential(host, kind) else {
            return vec![];
        };
        [&c.pending, &c.active, &c.previous]
            .into_iter()
            .flatten()
            .map(|s| Secret::new(s.value.clone()))
            .collect()
    }

    /// Write atomically: a 0600 temp file in the same directory, fsync, rename, fsync the dir.
    fn save(&self) -> Result<(), VaultError> {
        self.save_via(&mut temp_name)
    }

    /// [`Vault::save`] with the temp names to try (tests plant links at them).
    fn save_via(&self, names: &mut dyn FnMut() -> String) -> Result<(), VaultError> {
        let io = |source| VaultError::Io {
            path: self.path.clone(),
            source,
        };
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut plain =
            serde_json::to_vec_pretty(&self.doc).map_err(|e| io(std::io::Error::other(e)))?;
        plain.push(b'\n');
        // Sealed before the temp file exists: with encryption, no clear text ever reaches disk.
        let bytes = self.codec.seal(&self.path, &plain)?;
        let (tmp, mut f) = create_temp(dir, names).map_err(io)?;
        let written = (|| {
            f.write_all(&bytes)?;
            f.sync_all()?;
            drop(f);
            std::fs::rename(&tmp, &self.path)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(e));
        }
        std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// Create the vault's directory if needed (0700; fsfleet's own gets a `.gitignore` of `*`) and
/// take the run's lock, shared by `vault.json` and `vault.age` (`vault.lock`).
fn lock(path: &Path) -> Result<File, VaultError> {
    let io = |source| VaultError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let created = !dir.exists();
    if created {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
    }
    // Also a `.fsfleet` another command created first (the retry file, a cache) when its
    // first vault is started; one the operator edited or removed later is left alone.
    let ours = dir.file_name().is_some_and(|n| n == ".fsfleet");
    if created || (ours && !path.exists()) {
        write_gitignore(dir).map_err(io)?;
    }
    let lock_path = path.with_extension("lock");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&lock_path)
        .map_err(io)?;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(VaultError::Locked {
            path: path.to_path_buf(),
            lock: lock_path,
        });
    }
    Ok(lock)
}

/// `DIR/.gitignore` unless one exists (never through a link planted there).
fn write_gitignore(dir: &Path) -> std::io::Result<()> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir.join(".gitignore"))
    {
        Ok(mut f) => f.write_all(GITIGNORE.as_bytes()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

fn parse_document(path: &Path, bytes: &[u8]) -> Result<Document, VaultError> {
    let doc: Document = serde_json::from_slice(bytes).map_err(|source| VaultError::Unparsable {
        path: path.to_path_buf(),
        source,
    })?;
    if doc.version != VERSION {
        return Err(VaultError::Corrupt {
            path: path.to_path_buf(),
            reason: format!(
                "version {} (this fsfleet reads version {VERSION})",
                doc.version
            ),
        });
    }
    Ok(doc)
}

/// What `fsfleet creds encrypt` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encrypted {
    /// `target` written and verified, the plain file removed.
    Converted { hosts: usize },
    /// `target` already held the same document (a conversion cut before the plain file was
    /// removed): the plain file removed.
    Finished { hosts: usize },
}

/// Convert the plain vault `plain` into the encrypted `target`, as the inventory's `settings`
/// say: the encrypted file is written atomically, read back and decrypted with the operator's
/// keys, and only when it holds exactly the plain document is the plain file removed. Any
/// failure leaves the plain vault as it was. (Removing a file does not scrub the disk blocks
/// that held it: rotate the passwords if that matters.)
pub fn encrypt_plain(
    plain: &Path,
    target: &Path,
    settings: &VaultSettings,
    keys: &AgeKeys,
) -> Result<Encrypted, VaultError> {
    let convert = |why: String| VaultError::Convert {
        path: plain.to_path_buf(),
        why,
    };
    if !settings.is_age() {
        return Err(convert(
            "the inventory does not say vault_encryption = \"age\": add it (and age_recipients, \
             the public keys of everyone who may read the vault) first"
                .into(),
        ));
    }
    if plain == target {
        return Err(convert(format!(
            "it would be encrypted onto itself: name the plain vault (not {})",
            target.display()
        )));
    }
    let codec = Codec::new(settings, keys)?;
    let lock_file = lock(plain)?;
    let bytes = match std::fs::read(plain) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(convert("there is no plain vault there".into()));
        }
        Err(source) => {
            return Err(VaultError::Io {
                path: plain.to_path_buf(),
                source,
            });
        }
    };
    if crypt::is_age_file(&bytes) {
        return Err(convert("it is encrypted already".into()));
    }
    let doc = parse_document(plain, &bytes)?;
    let hosts = doc.hosts.len();
    let read_back = |codec: &Codec| -> Result<Document, VaultError> {
        let raw = std::fs::read(target).map_err(|source| VaultError::Io {
            path: target.to_path_buf(),
            source,
        })?;
        parse_document(target, &codec.open(target, &raw)?)
    };
    let remove_plain = || -> Result<(), VaultError> {
        std::fs::remove_file(plain).map_err(|source| VaultError::Io {
            path: plain.to_path_buf(),
            source,
        })?;
        if let Some(d) = plain.parent().filter(|p| !p.as_os_str().is_empty())
            && let Ok(d) = File::open(d)
        {
            let _ = d.sync_all();
        }
        Ok(())
    };
    if target.exists() {
        if read_back(&codec)? == doc {
            remove_plain()?;
            return Ok(Encrypted::Finished { hosts });
        }
        return Err(convert(format!(
            "{} exists and holds something else: compare the two (`fsfleet creds show`) and \
             move away the one you do not want",
            target.display()
        )));
    }
    let vault = Vault {
        path: target.to_path_buf(),
        doc,
        codec,
        _lock: lock_file,
    };
    vault.save()?;
    match read_back(&vault.codec) {
        Ok(d) if d == vault.doc => {}
        Ok(_) => {
            let _ = std::fs::remove_file(target);
            return Err(convert(format!(
                "{} did not read back as the same vault; it was removed",
                target.display()
            )));
        }
        Err(e) => {
            let _ = std::fs::remove_file(target);
            return Err(e);
        }
    }
    remove_plain()?;
    Ok(Encrypted::Converted { hosts })
}

/// `.vault.<random>.tmp`: a name nobody can prepare a link at in advance.
fn temp_name() -> String {
    let n: u64 = rand::rngs::OsRng.r#gen();
    format!(".vault.{n:016x}.tmp")
}

/// Create a new temp file in `dir`: O_CREAT|O_EXCL (an existing file or link of that name is an
/// error, never opened), O_NOFOLLOW, mode 0600 from the first instant (the secrets are never
/// readable by anyone else, not even between create and chmod). A name that exists is skipped
/// for the next one.
fn create_temp(dir: &Path, names: &mut dyn FnMut() -> String) -> std::io::Result<(PathBuf, File)> {
    let mut last = None;
    for _ in 0..8 {
        let path = dir.join(names());
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
        {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no temp file name left")))
}

/// Make `value` the active one (the old active, if different, becomes previous). A verified
/// pending value keeps its provenance (the run that generated it). Whether anything changed.
fn activate(
    cred: &mut Credential,
    value: &Secret,
    run_id: &str,
    pending: Option<&Stamped>,
) -> bool {
    if cred
        .active
        .as_ref()
        .is_some_and(|a| a.value == value.expose())
    {
        return false;
    }
    let run = match pending {
        Some(p) if p.value == value.expose() => p.run_id.clone(),
        _ => run_id.to_string(),
    };
    if cred.history.is_empty() {
        // An entry from before the history was kept: it starts from what the entry knew.
        cred.history.extend(
            [&cred.previous, &cred.active]
                .into_iter()
                .flatten()
                .cloned(),
        );
    }
    cred.previous = cred.active.take();
    let stamped = Stamped {
        value: value.expose().to_string(),
        at: now(),
        run_id: run,
    };
    cred.history.push(stamped.clone());
    let extra = cred.history.len().saturating_sub(HISTORY_LEN);
    cred.history.drain(..extra);
    cred.active = Some(stamped);
    true
}

/// `FSFLEET_<HOST>_<KIND>` for a host name (anything but ASCII letters and digits becomes `_`).
fn env_name(host: &str, kind: CredKind) -> String {
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("FSFLEET_{host}_{}", kind.as_str().to_ascii_uppercase())
}

/// A POSIX sh word whose value is exactly `value`, safe to `eval` whatever it holds: single
/// quotes (inside them nothing is special; a `'` is written `'\''`). Characters a terminal
/// would act on (ESC, CR, C1, ...) are not printed raw: each becomes `"$(printf '\NNN')"` (its
/// UTF-8 bytes in octal), so showing the export on a terminal is harmless too. A newline stays
/// raw inside the quotes (command substitution would strip it).
fn sh_word(value: &str) -> String {
    let mut out = String::from("'");
    for c in value.chars() {
        if c == '\'' {
            out.push_str(r"'\''");
        } else if c != '\n' && crate::display::is_unsafe(c) {
            let mut buf = [0u8; 4];
            let octal: String = c
                .encode_utf8(&mut buf)
                .bytes()
                .map(|b| format!("\\{b:03o}"))
                .collect();
            out.push_str(&format!("'\"$(printf '{octal}')\"'"));
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// Every host's active passwords as `FSFLEET_<HOST>_<KIND>='...'` lines for `eval` in sh or
/// bash. Refuses (naming the hosts) two host names that map to one variable, and a value holding
/// a NUL byte, which no shell variable can carry.
pub fn export_env(vault: &Vault) -> Result<String, VaultError> {
    let mut out = String::new();
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    for (host, entry) in vault.hosts() {
        for (kind, c) in &entry.creds {
            let Some(a) = &c.active else { continue };
            let var = env_name(host, *kind);
            if let Some(other) = seen.insert(var.clone(), host) {
                return Err(VaultError::Export {
                    what: format!("hosts {other} and {host}"),
                    why: format!(
                        "both become ${var}; use --format json, or rename one in the inventory"
                    ),
                });
            }
            if a.value.contains('\0') {
                return Err(VaultError::Export {
                    what: format!("the {} of {host}", kind.as_str()),
                    why: "it holds a NUL byte, which a shell variable cannot; use --format json"
                        .into(),
                });
            }
            out.push_str(&format!("{var}={}\n", sh_word(&a.value)));
        }
    }
    Ok(out)
}

/// `fsfleet creds history`: per credential, a pending value first (a run not verified yet),
/// then every value it has had, newest first, with when and the run that set it; values masked
/// unless `reveal` (then escaped: a vault written by an older fsfleet may hold host text).
pub fn render_history(
    host: &str,
    user: Option<&str>,
    creds: &[(&str, &Credential)],
    reveal: bool,
) -> String {
    let shown = |v: &str| {
        if reveal {
            crate::display::line(v).into_owned()
        } else {
            mask(v)
        }
    };
    let mut out = format!("{}\n", crate::display::line(host));
    if let Some(u) = user {
        out.push_str(&format!("  user {}\n", crate::display::line(u)));
    }
    for (name, c) in creds {
        out.push_str(&format!("  {name}\n"));
        let mut rows: Vec<(&str, &Stamped)> = Vec::new();
        if let Some(p) = &c.pending {
            rows.push(("pending", p));
        }
        for s in c.timeline() {
            let state = if c.active.as_ref().is_some_and(|a| a.value == s.value)
                && rows.iter().all(|(st, _)| *st != "active")
            {
                "active"
            } else {
                "earlier"
            };
            rows.push((state, s));
        }
        for (state, s) in rows {
            out.push_str(&format!(
                "    {state:<8} {}  {}  run {}\n",
                shown(&s.value),
                crate::display::line(&s.at),
                crate::display::line(&s.run_id)
            ));
        }
    }
    out
}

/// One directory user's active SIP password, for provisioning its phone.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct UserPassword {
    pub host: String,
    /// Empty when the run that set it did not know the domain.
    pub domain: String,
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for UserPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserPassword")
            .field("host", &self.host)
            .field("domain", &self.domain)
            .field("user", &self.user)
            .field("password", &"***")
            .finish()
    }
}

/// Every host's users with an active SIP password of their own, host then user order.
pub fn user_passwords(vault: &Vault) -> Vec<UserPassword> {
    let mut out = Vec::new();
    for (host, entry) in vault.hosts() {
        for (user, creds) in &entry.users {
            let Some(a) = creds
                .get(&UserCredKind::SipPassword)
                .and_then(|c| c.active.as_ref())
            else {
                continue;
            };
            out.push(UserPassword {
                host: host.clone(),
                domain: entry.sip_domain.clone().unwrap_or_default(),
                user: user.clone(),
                password: a.value.clone(),
            });
        }
    }
    out
}

/// `host,domain,user,password` with a header, RFC 4180 quoting (a field with a comma, quote or
/// line break is quoted, quotes doubled), CRLF line ends.
pub fn users_csv(rows: &[UserPassword]) -> String {
    fn field(s: &str) -> String {
        if s.contains([',', '"', '\r', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    }
    let mut out = String::from("host,domain,user,password\r\n");
    for r in rows {
        out.push_str(&format!(
            "{},{},{},{}\r\n",
            field(&r.host),
            field(&r.domain),
            field(&r.user),
            field(&r.password)
        ));
    }
    out
}

/// Mask a secret for display: its length only.
pub fn mask(value: &str) -> String {
    format!("******** ({} chars)", value.chars().count())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// Open a vault this test closed a moment ago. A process another test spawns in that
    /// moment holds a copy of the lock's descriptor between its fork and its exec, so the lock
    /// can stay taken for a few milliseconds after the drop.
    fn reopen(path: &Path) -> Result<Vault, VaultError> {
        for _ in 0..100 {
            match Vault::open(path) {
                Err(VaultError::Locked { .. }) => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                other => return other,
            }
        }
        Vault::open(path)
    }

    const K: &str = "SHA256:hostkeyofpbx1";
    const OTHER: &str = "SHA256:someothermachine";

    #[test]
    fn pending_then_active_survives_reopen_with_tight_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".fsfleet").join("vault.json");
        let pw = generate_password(PASSWORD_LEN);
        assert_eq!(pw.expose().len(), 32);
        assert!(pw.expose().chars().all(|c| c.is_ascii_alphanumeric()));
        {
            let mut v = Vault::open(&path).unwrap();
            v.set_pending("pbx1", K, CredKind::EslPassword, &pw, "run-1")
                .unwrap();
        }
        // Written before anything else happens: a crash now leaves it on disk.
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(pw.expose()) && text.contains("pending"));
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::metadata(path.parent().unwrap()).unwrap().mode() & 0o777,
            0o700
        );
        let mut v = reopen(&path).unwrap();
        assert_eq!(
            v.candidates("pbx1", K, CredKind::EslPassword),
            vec![pw.clone()]
        );
        v.confirm("pbx1", K, CredKind::EslPassword, &pw, "run-9")
            .unwrap();
        let c = v.credential("pbx1", CredKind::EslPassword).unwrap();
        assert!(c.pending.is_none());
        assert_eq!(c.active.as_ref().unwrap().value, pw.expose());
        assert_eq!(c.active.as_ref().unwrap().run_id, "run-1");
        // Rotating again keeps the old value as previous.
        let pw2 = generate_password(PASSWORD_LEN);
        v.set_pending("pbx1", K, CredKind::EslPassword, &pw2, "run-2")
            .unwrap();
        v.confirm("pbx1", K, CredKind::EslPassword, &pw2, "run-9")
            .unwrap();
        let c = v.credential("pbx1", CredKind::EslPassword).unwrap();
        assert_eq!(c.previous.as_ref().unwrap().value, pw.expose());
        assert!(
            format!("{c:?}").find(pw2.expose()).is_none(),
            "Debug never shows a value"
        );
    }

    #[test]
    fn each_credential_keeps_its_last_values_with_their_runs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".fsfleet").join("vault.json");
        let pws: Vec<Secret> = (0..HISTORY_LEN + 3)
            .map(|_| generate_password(PASSWORD_LEN))
            .collect();
        {
            let mut v = Vault::open(&path).unwrap();
            for (i, pw) in pws.iter().enumerate() {
                let run = format!("run-{i}");
                v.set_pending("pbx1", K, CredKind::EslPassword, pw, &run)
                    .unwrap();
                v.confirm("pbx1", K, CredKind::EslPassword, pw, "confirming")
                    .unwrap();
                // Confirming the active value again adds nothing.
                v.confirm("pbx1", K, CredKind::EslPassword, pw, "again")
                    .unwrap();
            }
        }
        let v = reopen(&path).unwrap();
        let c = v.credential("pbx1", CredKind::EslPassword).unwrap();
        let t = c.timeline();
        assert_eq!(t.len(), HISTORY_LEN);
        // Newest first, each with the run that generated it.
        let n = pws.len();
        for (i, s) in t.iter().enumerate() {
            assert_eq!(s.value, pws[n - 1 - i].expose());
            assert_eq!(s.run_id, format!("run-{}", n - 1 - i));
        }
        assert_eq!(c.active.as_ref(), Some(t[0]));
        assert_eq!(c.previous.as_ref(), Some(t[1]));
    }

    #[test]
    fn a_vault_from_before_the_history_loads_and_starts_its_history_from_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".fsfleet").join("vault.json");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::set_permissions(
            path.parent().unwrap(),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        let (a, b) = ("a".repeat(32), "b".repeat(32));
        let old = format!(
            r#"{{"version":1,"hosts":{{"pbx1":{{"host_key":"{K}","creds":{{"esl_password":{{
            "active":{{"value":"{b}","at":"2026-11-01T00:00:00Z","run_id":"r2"}},
            "previous":{{"value":"{a}","at":"2026-10-01T00:00:00Z","run_id":"r1"}}}}}}}}}}}}"#
        );
        std::fs::write(&path, &old).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut v = reopen(&path).unwrap();
        let c = v.credential("pbx1", CredKind::EslPassword).unwrap();
        assert!(c.history.is_empty());
        let runs: Vec<&str> = c.timeline().iter().map(|s| s.run_id.as_str()).collect();
        assert_eq!(runs, ["r2", "r1"]);
        let new = generate_password(PASSWORD_LEN);
        v.confirm("pbx1", K, CredKind::EslPassword, &new, "r3")
            .unwrap();
        drop(v);
        let v = reopen(&path).unwrap();
        let c = v.credential("pbx1", CredKind::EslPassword).unwrap();
        let t: Vec<(&str, &str)> = c
            .timeline()
            .iter()
            .map(|s| (s.value.as_str(), s.run_id.as_str()))
            .collect();
        assert_eq!(
            t,
            [(new.expose(), "r3"), (b.as_str(), "r2"), (a.as_str(), "r1")]
        );
        // Written back, the file still reads as the old format does (active, previous).
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let e = &json["hosts"]["pbx1"]["creds"]["esl_password"];
        assert_eq!(e["active"]["value"], new.expose());
        assert_eq!(e["previous"]["value"], b.as_str());
        assert_eq!(e["history"].as_array().map(Vec::len), Some(3));
    }

    #[test]
    fn an_age_vault_from_before_the_history_loads_and_keeps_it_encrypted() {
        let dir = tempfile::tempdir().unwrap();
        let (id_path, public) = identity(dir.path(), "a.key");
        let settings = age_settings(&[&public]);
        let path = dir.path().join(".fsfleet").join("vault.age");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::set_permissions(
            path.parent().unwrap(),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        let old = "o".repeat(32);
        let doc = format!(
            r#"{{"version":1,"hosts":{{"pbx1":{{"host_key":"{K}","creds":{{"sip_password":{{
            "active":{{"value":"{old}","at":"2026-10-01T00:00:00Z","run_id":"r1"}}}}}}}}}}}}"#
        );
        let id: age::x25519::Identity = std::fs::read_to_string(&id_path)
            .unwrap()
            .lines()
            .find(|l| l.starts_with("AGE-SECRET-KEY-"))
            .unwrap()
            .parse()
            .unwrap();
        let armored = age::encrypt_and_armor(&id.to_public(), doc.as_bytes()).unwrap();
        std::fs::write(&path, armored).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut v = reopen_with(&path, &settings, &keys(&id_path)).unwrap();
        let c = v.credential("pbx1", CredKind::SipPassword).unwrap();
        assert_eq!(c.timeline().len(), 1);
        let new = generate_password(PASSWORD_LEN);
        v.confirm("pbx1", K, CredKind::SipPassword, &new, "r2")
            .unwrap();
        drop(v);
        let bytes = std::fs::read(&path).unwrap();
        assert!(!bytes.windows(32).any(|w| w == new.expose().as_bytes()));
        let v = reopen_with(&path, &settings, &keys(&id_path)).unwrap();
        let runs: Vec<&str> = v
            .credential("pbx1", CredKind::SipPassword)
            .unwrap()
            .timeline()
            .iter()
            .map(|s| s.run_id.as_str())
            .collect();
        assert_eq!(runs, ["r2", "r1"]);
    }

    #[test]
    fn the_history_is_shown_newest_first_masked_unless_revealed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".fsfleet").join("vault.json");
        let mut v = Vault::open(&path).unwrap();
        let (a, b, c) = (
            generate_password(PASSWORD_LEN),
            generate_password(PASSWORD_LEN),
            generate_password(PASSWORD_LEN),
        );
        v.confirm("pbx1", K, CredKind::EslPassword, &a, "run-a")
            .unwrap();
        v.confirm("pbx1", K, CredKind::EslPassword, &b, "run-b")
            .unwrap();
        v.set_pending("pbx1", K, CredKind::EslPassword, &c, "run-c")
            .unwrap();
        let cred = v.credential("pbx1", CredKind::EslPassword).unwrap();
        let creds = [("esl_password", cred)];
        let masked = render_history("pbx1", None, &creds, false);
        for pw in [&a, &b, &c] {
            assert!(!masked.contains(pw.expose()), "{masked}");
        }
        let states: Vec<(&str, &str)> = masked
            .lines()
            .skip(2)
            .map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                (w[0], w[w.len() - 1])
            })
            .collect();
        assert_eq!(
            states,
            [
                ("pending", "run-c"),
                ("active", "run-b"),
                ("earlier", "run-a")
            ],
            "{masked}"
        );
        let shown = render_history("pbx1", None, &creds, true);
        let at = |pw: &Secret| shown.find(pw.expose()).unwrap();
        assert!(at(&c) < at(&b) && at(&b) < at(&a), "{shown}");
    }

    #[test]
    fn a_retired_user_password_is_no_longer_exported_but_kept_as_previous() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.json");
        let a = generate_password(PASSWORD_LEN);
        let mut v = Vault::open(&path).unwrap();
        v.set_user_pending("h1", K, "1000", UserCredKind::SipPassword, &a, "r")
            .unwrap();
        v.confirm_user("h1", K, "1000", UserCredKind::SipPassword, &a, "r")
            .unwrap();
        assert_eq!(user_passwords(&v).len(), 1);
        v.retire_user("h1", "1000", UserCredKind::SipPassword)
            .unwrap();
        drop(v);
        let v = reopen(&path).unwrap();
        assert!(user_passwords(&v).is_empty());
        let c = v
            .entry("h1")
            .and_then(|e| e.user_credential("1000", UserCredKind::SipPassword))
            .unwrap();
        assert_eq!(
            c.previous.as_ref().map(|p| p.value.as_str()),
            Some(a.expose())
        );
        assert!(c.active.is_none());
    }

    #[test]
    fn user_passwords_export_only_active_ones_with_the_domain_as_csv_and_json() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.json");
        let (a, b, pin) = (
            generate_password(PASSWORD_LEN),
            generate_password(PASSWORD_LEN),
            generate_pin(6),
        );
        let mut v = Vault::open(&path).unwrap();
        v.set_sip_domain("h1", K, "192.0.2.10").unwrap();
        for (user, pw) in [("1000", &a), ("1001", &b)] {
            v.set_user_pending("h1", K, user, UserCredKind::SipPassword, pw, "r")
                .unwrap();
        }
        v.set_user_pending("h1", K, "1000", UserCredKind::VmPassword, &pin, "r")
            .unwrap();
        // Pending only: nothing to provision a phone with yet.
        assert!(user_passwords(&v).is_empty());
        v.confirm_user("h1", K, "1000", UserCredKind::SipPassword, &a, "r")
            .unwrap();
        v.confirm_user("h1", K, "1000", UserCredKind::VmPassword, &pin, "r")
            .unwrap();
        v.set_pending("h2", K, CredKind::SipPassword, &b, "r")
            .unwrap();
        drop(v);
        let v = reopen(&path).unwrap();
        let rows = user_passwords(&v);
        assert_eq!(
            rows.len(),
            1,
            "only 1000's active SIP password, not its PIN"
        );
        assert_eq!(
            (
                rows[0].host.as_str(),
                rows[0].domain.as_str(),
                rows[0].user.as_str()
            ),
            ("h1", "192.0.2.10", "1000")
        );
        assert!(!format!("{rows:?}").contains(a.expose()), "Debug masks it");
        assert_eq!(
            users_csv(&rows),
            format!(
                "host,domain,user,password\r\nh1,192.0.2.10,1000,{}\r\n",
                a.expose()
            )
        );
        let json: serde_json::Value = serde_json::to_value(&rows).unwrap();
        assert_eq!(json[0]["password"], a.expose());
        assert_eq!(json[0]["domain"], "192.0.2.10");
        // A field a CSV reader would split is quoted.
        let odd = UserPassword {
            host: "a,b".into(),
            domain: String::new(),
            user: "x\"y".into(),
            password: "p".into(),
        };
        assert_eq!(
            users_csv(&[odd]),
            "host,domain,user,password\r\n\"a,b\",,\"x\"\"y\",p\r\n"
        );
    }

    #[test]
    fn a_reload_owed_marks_the_host_interrupted_until_it_is_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.json");
        {
            let mut v = Vault::open(&path).unwrap();
            assert!(!v.interrupted("h"));
            // No secret at all: a run that only disables extensions or users.
            v.set_reload_owed("h", K, "run-1").unwrap();
        }
        // On disk before the write it guards: a cut run leaves it.
        let mut v = reopen(&path).unwrap();
        assert!(v.interrupted("h") && !v.has_pending("h"));
        assert!(!v.interrupted("other-host"));
        assert_eq!(v.entry("h").unwrap().reload_owed.as_deref(), Some("run-1"));
        v.clear_reload_owed("h").unwrap();
        v.clear_reload_owed("never-seen").unwrap();
        drop(v);
        let v = reopen(&path).unwrap();
        assert!(!v.interrupted("h"));
        assert!(
            !std::fs::read_to_string(&path)
                .unwrap()
                .contains("reload_owed")
        );
    }

    #[test]
    fn user_pins_are_kept_per_host_and_user_pending_then_active() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.json");
        let (a, b) = (generate_pin(6), generate_pin(6));
        assert!(a.expose().len() == 6 && a.expose().bytes().all(|c| c.is_ascii_digit()));
        {
            let mut v = Vault::open(&path).unwrap();
            v.set_user_pending("h", K, "1001", UserCredKind::VmPassword, &a, "run-1")
                .unwrap();
            v.set_user_pending("h", K, "1002", UserCredKind::VmPassword, &b, "run-1")
                .unwrap();
            assert!(v.has_pending("h"), "a pending PIN is an interrupted run");
            assert_eq!(v.pending_users("h", UserCredKind::VmPassword).len(), 2);
            // Another machine under the same name gets nothing written for it.
            assert!(
                v.set_user_pending(
                    "h",
                    "SHA256:other",
                    "1003",
                    UserCredKind::VmPassword,
                    &a,
                    "r"
                )
                .is_err()
            );
        }
        let mut v = reopen(&path).unwrap();
        v.confirm_user("h", K, "1001", UserCredKind::VmPassword, &a, "run-1")
            .unwrap();
        let e = v.entry("h").unwrap();
        let c = e.user_credential("1001", UserCredKind::VmPassword).unwrap();
        assert_eq!(c.active.as_ref().unwrap().value, a.expose());
        assert!(c.pending.is_none());
        assert!(e.creds.is_empty(), "the host's own credentials are apart");
        assert_eq!(
            v.pending_users("h", UserCredKind::VmPassword)
                .into_iter()
                .map(|(u, _)| u)
                .collect::<Vec<_>>(),
            ["1002"]
        );
        // A vault with no user credentials writes no `users` key (older readers stay happy).
        let plain = dir.path().join("plain.json");
        let mut p = Vault::open(&plain).unwrap();
        p.set_pending("x", K, CredKind::SipPassword, &a, "r")
            .unwrap();
        assert!(!std::fs::read_to_string(&plain).unwrap().contains("users"));
    }

    #[test]
    fn confirm_makes_the_verified_value_active_and_drops_pending() {
        let dir = tempfile::tempdir().unwrap();
        let mut v = Vault::open(&dir.path().join("vault.json")).unwrap();
        let (a, b) = (generate_password(32), generate_password(32));
        v.set_pending("h", K, CredKind::SipPassword, &a, "run-1")
            .unwrap();
        assert!(v.has_pending("h"));
        // The run died; the next one finds the host still on `b` and verifies it.
        v.confirm("h", K, CredKind::SipPassword, &b, "run-2")
            .unwrap();
        let c = v.credential("h", CredKind::SipPassword).unwrap();
        assert_eq!(
            (
                c.active.as_ref().unwrap().value.as_str(),
                c.active.as_ref().unwrap().run_id.as_str()
            ),
            (b.expose(), "run-2")
        );
        assert!(c.pending.is_none() && !v.has_pending("h"));
        // A verified pending value keeps the run that generated it.
        v.set_pending("h", K, CredKind::SipPassword, &a, "run-3")
            .unwrap();
        v.confirm("h", K, CredKind::SipPassword, &a, "run-4")
            .unwrap();
        let c = v.credential("h", CredKind::SipPassword).unwrap();
        assert_eq!(c.active.as_ref().unwrap().run_id, "run-3");
        assert_eq!(c.previous.as_ref().unwrap().value, b.expose());
    }

    #[test]
    fn values_a_host_chose_outside_the_generated_alphabet_never_reach_the_vault() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.json");
        let mut v = Vault::open(&path).unwrap();
        let hostile = Secret::new("';touch /tmp/fsfleet-pwned;'");
        v.set_active("h", K, CredKind::SipPassword, &hostile, "run-1")
            .unwrap();
        assert!(v.credential("h", CredKind::SipPassword).is_none());
        let pw = generate_password(PASSWORD_LEN);
        v.set_pending("h", K, CredKind::SipPassword, &pw, "run-1")
            .unwrap();
        // --skip kept the host's value: the pending one is dropped, the host's not recorded.
        v.confirm("h", K, CredKind::SipPassword, &hostile, "run-1")
            .unwrap();
        let c = v.credential("h", CredKind::SipPassword).unwrap();
        assert_eq!((&c.active, &c.pending, &c.previous), (&None, &None, &None));
        drop(v);
        assert!(!std::fs::read_to_string(&path).unwrap().contains("touch"));
    }

    #[test]
    fn the_temp_file_is_new_private_and_never_a_planted_link() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.json");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let mut v = Vault::open(&path).unwrap();
        let pw = generate_password(PASSWORD_LEN);
        // Links planted at the names the save tries first (a link to a file, a dangling one):
        // both are skipped, never written through, and stay as they were.
        std::os::unix::fs::symlink(&victim, dir.path().join(".vault.a.tmp")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("nowhere"), dir.path().join(".vault.b.tmp"))
            .unwrap();
        let mut names = [".vault.a.tmp", ".vault.b.tmp", ".vault.c.tmp"].into_iter();
        v.cred_mut("h", CredKind::EslPassword).pending = Some(stamp(pw.expose()));
        v.save_via(&mut || names.next().unwrap_or("x").to_string())
            .unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert!(!dir.path().join("nowhere").exists());
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains(pw.expose())
        );
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert!(!dir.path().join(".vault.c.tmp").exists(), "renamed away");
        // Every name taken: the save fails and nothing is written through any link.
        let mut taken = std::iter::repeat(".vault.a.tmp");
        let e = v
            .save_via(&mut || taken.next().unwrap().to_string())
            .unwrap_err();
        assert!(e.to_string().contains("vault.json"), "{e}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        // The real names are random: two saves never use the same one.
        assert_ne!(temp_name(), temp_name());
        // Created 0600 (the umask can only take bits away).
        let (p, _f) = create_temp(dir.path(), &mut || ".vault.d.tmp".into()).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
    }

    #[test]
    fn secrets_follow_the_host_key_not_the_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.json");
        let mut v = Vault::open(&path).unwrap();
        assert_eq!(v.check_host_key("fs01", K), Ok(KeyBinding::New));
        let (a, b, c) = (
            generate_password(32),
            generate_password(32),
            generate_password(32),
        );
        v.set_active("fs01", K, CredKind::EslPassword, &a, "run-1")
            .unwrap();
        v.set_pending("fs01", K, CredKind::EslPassword, &b, "run-1")
            .unwrap();
        v.confirm("fs01", K, CredKind::EslPassword, &b, "run-1")
            .unwrap();
        v.set_pending("fs01", K, CredKind::EslPassword, &c, "run-2")
            .unwrap();
        assert_eq!(
            v.candidates("fs01", K, CredKind::EslPassword),
            vec![c.clone(), b.clone(), a.clone()],
            "pending, active, previous: all on the right host"
        );
        drop(v);
        let mut v = reopen(&path).unwrap();
        assert_eq!(v.entry("fs01").unwrap().host_key.as_deref(), Some(K));
        assert_eq!(v.check_host_key("fs01", K), Ok(KeyBinding::Bound));

        // The name now reaches another machine: nothing is handed out, nothing can be written.
        let m = v.check_host_key("fs01", OTHER).unwrap_err();
        let msg = m.to_string();
        assert!(
            msg.contains(&format!("belong to host key {K}"))
                && msg.contains(&format!("this host presents {OTHER}"))
                && msg.contains("`fsfleet creds forget fs01`"),
            "{msg}"
        );
        assert!(
            v.candidates("fs01", OTHER, CredKind::EslPassword)
                .is_empty()
        );
        assert!(
            v.candidates("fs01", OTHER, CredKind::SipPassword)
                .is_empty()
        );
        let d = generate_password(32);
        for e in [
            v.set_pending("fs01", OTHER, CredKind::EslPassword, &d, "r"),
            v.set_active("fs01", OTHER, CredKind::SipPassword, &d, "r"),
            v.confirm("fs01", OTHER, CredKind::EslPassword, &d, "r"),
            v.bind("fs01", OTHER),
        ] {
            assert!(matches!(e, Err(VaultError::KeyMismatch(_))), "{e:?}");
        }
        let c1 = v.credential("fs01", CredKind::EslPassword).unwrap().clone();
        assert_eq!(
            (
                c1.pending.map(|s| s.value),
                c1.active.map(|s| s.value),
                c1.previous.map(|s| s.value)
            ),
            (
                Some(c.expose().to_string()),
                Some(b.expose().to_string()),
                Some(a.expose().to_string())
            ),
            "the other machine changed nothing"
        );

        // The operator's way out: forget the host; the name starts again, bound to the new key.
        let gone = v.forget("fs01").unwrap().unwrap();
        assert_eq!(gone.host_key.as_deref(), Some(K));
        assert!(v.forget("fs01").unwrap().is_none());
        assert_eq!(v.check_host_key("fs01", OTHER), Ok(KeyBinding::New));
        v.set_pending("fs01", OTHER, CredKind::EslPassword, &d, "r")
            .unwrap();
        drop(v);
        let v = reopen(&path).unwrap();
        assert_eq!(v.entry("fs01").unwrap().host_key.as_deref(), Some(OTHER));
        assert!(!std::fs::read_to_string(&path).unwrap().contains(a.expose()));
    }

    #[test]
    fn an_entry_from_before_key_binding_is_bound_on_first_use() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.json");
        let pw = generate_password(32);
        std::fs::write(
            &path,
            format!(
                r#"{{"version":1,"hosts":{{"fs01":{{"creds":{{"esl_password":{{"active":{{"value":"{}","at":"2026-01-01T00:00:00Z","run_id":"old"}}}}}}}}}}}}"#,
                pw.expose()
            ),
        )
        .unwrap();
        let mut v = Vault::open(&path).unwrap();
        assert_eq!(v.check_host_key("fs01", K), Ok(KeyBinding::Unbound));
        assert_eq!(v.candidates("fs01", K, CredKind::EslPassword), vec![pw]);
        v.bind("fs01", K).unwrap();
        drop(v);
        let v = reopen(&path).unwrap();
        assert_eq!(v.check_host_key("fs01", K), Ok(KeyBinding::Bound));
        assert!(v.check_host_key("fs01", OTHER).is_err());
        assert!(
            v.candidates("fs01", OTHER, CredKind::EslPassword)
                .is_empty()
        );
    }

    #[test]
    fn a_second_run_is_refused_and_a_corrupt_vault_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.json");
        let _first = Vault::open(&path).unwrap();
        let err = Vault::open(&path).unwrap_err().to_string();
        assert!(err.contains("in use by another fsfleet run"), "{err}");
        drop(_first);
        std::fs::write(&path, "{ not json").unwrap();
        let e = reopen(&path).unwrap_err();
        // The JSON parser's own error stays attached, for the CLI's error chain.
        let source = std::error::Error::source(&e).expect("the parse error as source");
        assert!(source.is::<serde_json::Error>(), "{source:?}");
        let err = e.to_string();
        assert!(
            err.contains(&path.display().to_string()) && err.contains("not valid"),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{ not json");
    }

    /// Feed `script` to `shell -c 'eval "$(cat)"; printf %s "$VAR"'` in `dir`.
    fn eval_in(shell: &str, dir: &Path, script: &str, var: &str) -> (String, bool) {
        use std::io::Write as _;
        let mut child = std::process::Command::new(shell)
            .arg("-c")
            .arg(format!("eval \"$(cat)\"; printf %s \"${var}\""))
            .current_dir(dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (String::from_utf8(out.stdout).unwrap(), out.status.success())
    }

    fn stamp(value: &str) -> Stamped {
        Stamped {
            value: value.into(),
            at: now(),
            run_id: "r".into(),
        }
    }

    #[test]
    fn env_export_evals_to_the_exact_value_and_runs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir(&work).unwrap();
        let pwned = work.join("pwned");
        let p = pwned.display();
        let values = [
            format!("';touch {p};'"),
            format!("$(touch {p})"),
            format!("`touch {p}`"),
            format!("\"; touch {p}; \""),
            format!("a'b\"c\\d\n;touch {p}\n$HOME ${{x}} * '\\''"),
            "\x1b]0;title\x07\x1b[2J\r\t\u{9b}\u{7f}é\u{202e}x".to_string(),
            "''''".to_string(),
            String::new(),
            "\n\n".to_string(),
        ];
        for (i, value) in values.iter().enumerate() {
            let mut v = Vault::open(&dir.path().join(format!("v{i}.json"))).unwrap();
            v.cred_mut("fs-01.lab", CredKind::EslPassword).active = Some(stamp(value));
            let script = export_env(&v).unwrap();
            assert!(
                script.starts_with("FSFLEET_FS_01_LAB_ESL_PASSWORD='"),
                "{script}"
            );
            assert!(
                !script
                    .chars()
                    .any(|c| c != '\n' && crate::display::is_unsafe(c)),
                "no raw terminal controls: {script:?}"
            );
            for shell in ["sh", "bash"] {
                let (got, ok) = eval_in(shell, &work, &script, "FSFLEET_FS_01_LAB_ESL_PASSWORD");
                assert!(ok, "{shell}: {script}");
                assert_eq!(&got, value, "{shell}: {script}");
                assert!(!pwned.exists(), "{shell} ran a command from {script}");
            }
        }
    }

    #[test]
    fn env_export_refuses_clashing_names_and_nul() {
        let dir = tempfile::tempdir().unwrap();
        let mut v = Vault::open(&dir.path().join("v.json")).unwrap();
        v.cred_mut("fs-1", CredKind::SipPassword).active = Some(stamp("a"));
        v.cred_mut("fs_1", CredKind::SipPassword).active = Some(stamp("b"));
        let e = export_env(&v).unwrap_err().to_string();
        assert!(
            e.contains("fs-1 and fs_1") && e.contains("$FSFLEET_FS_1_SIP_PASSWORD"),
            "{e}"
        );
        let mut v = Vault::open(&dir.path().join("w.json")).unwrap();
        v.cred_mut("h", CredKind::SipPassword).active = Some(stamp("a\0b"));
        assert!(export_env(&v).unwrap_err().to_string().contains("NUL"));
    }

    /// A fresh X25519 identity written as `age-keygen` does, and its public key.
    fn identity(dir: &Path, name: &str) -> (PathBuf, String) {
        use age::secrecy::ExposeSecret;
        let id = age::x25519::Identity::generate();
        let path = dir.join(name);
        std::fs::write(
            &path,
            format!(
                "# created: 2026-01-01T00:00:00Z\n# public key: {}\n{}\n",
                id.to_public(),
                id.to_string().expose_secret()
            ),
        )
        .unwrap();
        (path, id.to_public().to_string())
    }

    fn age_settings(recipients: &[&str]) -> VaultSettings {
        VaultSettings {
            encryption: Encryption::Age,
            age_recipients: recipients.iter().map(|r| r.to_string()).collect(),
        }
    }

    fn keys(identity: &Path) -> AgeKeys {
        AgeKeys {
            identity_file: Some(identity.to_path_buf()),
            passphrase: None,
        }
    }

    fn reopen_with(path: &Path, s: &VaultSettings, k: &AgeKeys) -> Result<Vault, VaultError> {
        for _ in 0..100 {
            match Vault::open_with(path, s, k) {
                Err(VaultError::Locked { .. }) => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                other => return other,
            }
        }
        Vault::open_with(path, s, k)
    }

    #[test]
    fn an_age_vault_round_trips_and_never_holds_clear_text_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (id_a, pub_a) = identity(dir.path(), "a.key");
        let (id_b, pub_b) = identity(dir.path(), "b.key");
        let settings = age_settings(&[&pub_a, &pub_b]);
        let path = dir.path().join(".fsfleet").join("vault.age");
        let pw = generate_password(PASSWORD_LEN);
        {
            let mut v = Vault::open_with(&path, &settings, &keys(&id_a)).unwrap();
            assert!(v.is_encrypted());
            v.set_pending("pbx1", K, CredKind::EslPassword, &pw, "run-1")
                .unwrap();
        }
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.starts_with(b"age-encryption.org/v1\n"), "an age file");
        assert!(
            !bytes
                .windows(pw.expose().len())
                .any(|w| w == pw.expose().as_bytes()),
            "no clear text"
        );
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        let left: Vec<String> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        // Either recipient reads it, and every write keeps it encrypted.
        let mut v = reopen_with(&path, &settings, &keys(&id_b)).unwrap();
        assert_eq!(
            v.candidates("pbx1", K, CredKind::EslPassword),
            vec![pw.clone()]
        );
        v.confirm("pbx1", K, CredKind::EslPassword, &pw, "run-1")
            .unwrap();
        drop(v);
        let bytes = std::fs::read(&path).unwrap();
        let id: age::x25519::Identity = std::fs::read_to_string(&id_a)
            .unwrap()
            .lines()
            .find(|l| l.starts_with("AGE-SECRET-KEY-"))
            .unwrap()
            .parse()
            .unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&age::decrypt(&id, &bytes).unwrap()).unwrap();
        assert_eq!(
            json["hosts"]["pbx1"]["creds"]["esl_password"]["active"]["value"],
            pw.expose()
        );
        // A vault the age library (as the `age` tool) wrote, armored, is read too.
        let armored =
            age::encrypt_and_armor(&id.to_public(), &serde_json::to_vec(&json).unwrap()).unwrap();
        std::fs::write(&path, armored).unwrap();
        let v = reopen_with(&path, &settings, &keys(&id_a)).unwrap();
        assert_eq!(v.candidates("pbx1", K, CredKind::EslPassword), vec![pw]);
    }

    #[test]
    fn a_wrong_or_missing_key_is_a_typed_error_and_the_vault_is_never_touched() {
        let dir = tempfile::tempdir().unwrap();
        let (id_a, pub_a) = identity(dir.path(), "a.key");
        let (id_b, pub_b) = identity(dir.path(), "b.key");
        let path = dir.path().join("vault.age");
        {
            let mut v = Vault::open_with(&path, &age_settings(&[&pub_a]), &keys(&id_a)).unwrap();
            v.set_pending("h", K, CredKind::SipPassword, &generate_password(32), "r")
                .unwrap();
        }
        let before = std::fs::read(&path).unwrap();
        // B was added to the inventory, but the vault was written for A alone.
        let both = age_settings(&[&pub_a, &pub_b]);
        let e = reopen_with(&path, &both, &keys(&id_b)).unwrap_err();
        assert!(matches!(e, VaultError::AgeWrongKey { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains("cannot be decrypted with the identity in")
                && msg.contains("b.key")
                && msg.contains("left untouched"),
            "{msg}"
        );
        // An identity that is not a recipient: refused before anything is read or written.
        let e = reopen_with(&path, &age_settings(&[&pub_a]), &keys(&id_b)).unwrap_err();
        assert!(
            matches!(e, VaultError::IdentityNotRecipient { .. }) && e.to_string().contains(&pub_b),
            "{e}"
        );
        // No identity at all, or a passphrase where an identity is needed.
        for k in [
            AgeKeys::default(),
            AgeKeys {
                identity_file: None,
                passphrase: Some(Secret::new("hunter2hunter2")),
            },
        ] {
            let e = reopen_with(&path, &both, &k).unwrap_err();
            assert!(
                matches!(e, VaultError::AgeKeyMissing { .. })
                    && e.to_string().contains(crypt::IDENTITY_ENV),
                "{e}"
            );
        }
        // A broken identity file: its line number, never its content.
        let broken = dir.path().join("broken.key");
        std::fs::write(&broken, "# mine\nAGE-SECRET-KEY-1NOTAKEYATALLsecretish\n").unwrap();
        let e = reopen_with(&path, &both, &keys(&broken))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 2") && !e.contains("NOTAKEY") && !e.contains("secretish"),
            "{e}"
        );
        // The plain settings never read (nor overwrite) an encrypted vault.
        let e = reopen(&path).unwrap_err();
        assert!(
            matches!(e, VaultError::FormMismatch { .. })
                && e.to_string().contains("vault_encryption"),
            "{e}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), before, "never overwritten");
    }

    #[test]
    fn the_form_on_disk_must_match_the_inventory() {
        let dir = tempfile::tempdir().unwrap();
        let (id, public) = identity(dir.path(), "a.key");
        let settings = age_settings(&[&public]);
        let plain = dir.path().join("vault.json");
        let age_path = dir.path().join("vault.age");
        {
            let mut v = Vault::open(&plain).unwrap();
            v.set_pending("h", K, CredKind::SipPassword, &generate_password(32), "r")
                .unwrap();
        }
        // Encryption asked for, the plain vault still there: convert it first.
        let e = reopen_with(&age_path, &settings, &keys(&id)).unwrap_err();
        assert!(e.to_string().contains("fsfleet creds encrypt"), "{e}");
        assert!(!age_path.exists());
        // A plain file under the encrypted name is not taken for an encrypted one.
        std::fs::copy(&plain, dir.path().join("other.age")).unwrap();
        let e = reopen_with(&dir.path().join("other.age"), &settings, &keys(&id)).unwrap_err();
        assert!(
            matches!(e, VaultError::FormMismatch { .. }) && e.to_string().contains("plain text"),
            "{e}"
        );
        // The encrypted one exists, the plain settings would start an empty vault beside it.
        assert!(matches!(
            encrypt_plain(&plain, &age_path, &settings, &keys(&id)).unwrap(),
            Encrypted::Converted { hosts: 1 }
        ));
        let e = reopen(&plain).unwrap_err();
        assert!(
            e.to_string().contains("encrypted vault") && !plain.exists(),
            "{e}"
        );
    }

    #[test]
    fn encrypt_converts_verifies_and_only_then_removes_the_plain_file() {
        let dir = tempfile::tempdir().unwrap();
        let (id, public) = identity(dir.path(), "a.key");
        let (_, other) = identity(dir.path(), "b.key");
        let settings = age_settings(&[&public]);
        let plain = dir.path().join("vault.json");
        let target = dir.path().join("vault.age");
        let pw = generate_password(32);
        {
            let mut v = Vault::open(&plain).unwrap();
            v.set_pending("h", K, CredKind::SipPassword, &pw, "r")
                .unwrap();
        }
        let text = std::fs::read(&plain).unwrap();
        // Not asked for by the inventory, or no key: the plain vault stays as it is.
        let e = encrypt_plain(&plain, &target, &VaultSettings::default(), &keys(&id))
            .unwrap_err()
            .to_string();
        assert!(e.contains("vault_encryption"), "{e}");
        let e = encrypt_plain(&plain, &target, &settings, &AgeKeys::default()).unwrap_err();
        assert!(matches!(e, VaultError::AgeKeyMissing { .. }), "{e}");
        assert_eq!(std::fs::read(&plain).unwrap(), text);
        assert!(!target.exists());

        assert_eq!(
            encrypt_plain(&plain, &target, &settings, &keys(&id)).unwrap(),
            Encrypted::Converted { hosts: 1 }
        );
        assert!(!plain.exists());
        let v = reopen_with(&target, &settings, &keys(&id)).unwrap();
        assert_eq!(
            v.credential("h", CredKind::SipPassword)
                .unwrap()
                .pending
                .as_ref()
                .unwrap()
                .value,
            pw.expose()
        );
        drop(v);
        let e = encrypt_plain(&target, &target, &settings, &keys(&id)).unwrap_err();
        assert!(e.to_string().contains("onto itself"), "{e}");
        let e = encrypt_plain(&plain, &target, &settings, &keys(&id)).unwrap_err();
        assert!(e.to_string().contains("no plain vault"), "{e}");

        // A conversion cut before the plain file went: the re-run finishes it.
        std::fs::write(&plain, &text).unwrap();
        assert_eq!(
            encrypt_plain(&plain, &target, &settings, &keys(&id)).unwrap(),
            Encrypted::Finished { hosts: 1 }
        );
        assert!(!plain.exists());
        // A different plain vault beside it: both are kept.
        std::fs::write(&plain, br#"{"version":1,"hosts":{}}"#).unwrap();
        let e = encrypt_plain(&plain, &target, &settings, &keys(&id)).unwrap_err();
        assert!(e.to_string().contains("holds something else"), "{e}");
        assert!(plain.exists() && target.exists());
        // Recipients the operator cannot read: refused, nothing written.
        std::fs::remove_file(&target).unwrap();
        let e = encrypt_plain(&plain, &target, &age_settings(&[&other]), &keys(&id)).unwrap_err();
        assert!(matches!(e, VaultError::IdentityNotRecipient { .. }), "{e}");
        assert!(plain.exists() && !target.exists());
    }

    #[test]
    fn a_passphrase_vault_is_scrypt_and_wants_the_same_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.age");
        let settings = age_settings(&[]);
        let pass = |p: &str| AgeKeys {
            identity_file: None,
            passphrase: Some(Secret::new(p)),
        };
        let e = Vault::open_with(&path, &settings, &AgeKeys::default()).unwrap_err();
        assert!(e.to_string().contains(crypt::PASSPHRASE_ENV), "{e}");
        let pw = generate_password(32);
        {
            let mut v = Vault::open_with(&path, &settings, &pass("correct horse")).unwrap();
            v.set_pending("h", K, CredKind::SipPassword, &pw, "r")
                .unwrap();
        }
        let bytes = std::fs::read(&path).unwrap();
        assert!(String::from_utf8_lossy(&bytes).contains("-> scrypt "));
        let e = reopen_with(&path, &settings, &pass("wrong horse")).unwrap_err();
        assert!(matches!(e, VaultError::AgeWrongKey { .. }), "{e:?}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        let v = reopen_with(&path, &settings, &pass("correct horse")).unwrap();
        assert_eq!(v.candidates("h", K, CredKind::SipPassword), vec![pw]);
    }

    #[test]
    fn a_new_state_directory_gets_a_gitignore_of_everything() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join(".fsfleet");
        drop(Vault::open(&state.join("vault.json")).unwrap());
        assert_eq!(
            std::fs::read_to_string(state.join(".gitignore")).unwrap(),
            GITIGNORE
        );
        assert!(GITIGNORE.lines().any(|l| l == "*"));
        // One another command created first gets it with the first vault ...
        let other = dir.path().join("b").join(".fsfleet");
        std::fs::create_dir_all(&other).unwrap();
        drop(Vault::open(&other.join("vault.json")).unwrap());
        assert!(other.join(".gitignore").exists());
        // ... but one the operator removed once a vault exists is not written again.
        let mut v = reopen(&other.join("vault.json")).unwrap();
        v.bind("h", K).unwrap();
        drop(v);
        assert!(other.join("vault.json").exists());
        std::fs::remove_file(other.join(".gitignore")).unwrap();
        drop(reopen(&other.join("vault.json")).unwrap());
        assert!(!other.join(".gitignore").exists());
    }

    #[test]
    fn git_tracking_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let git = |args: &[&str]| {
            let ok = std::process::Command::new("git")
                .arg("-C")
                .arg(dir.path())
                .args(args)
                .output()
                .unwrap()
                .status
                .success();
            assert!(ok, "git {args:?}");
        };
        let vault = dir.path().join(".fsfleet").join("vault.json");
        assert_eq!(tracked_by_git(&vault), Some(false), "no work tree");
        git(&["init", "-q"]);
        drop(Vault::open(&vault).unwrap());
        std::fs::write(&vault, "{}").unwrap();
        assert_eq!(tracked_by_git(&vault), Some(false));
        git(&["add", "-f", ".fsfleet/vault.json"]);
        assert_eq!(tracked_by_git(&vault), Some(true));
    }

    #[test]
    fn default_path_is_beside_the_inventory() {
        assert_eq!(
            default_path(Path::new("/srv/fleet/inventory.toml")),
            PathBuf::from("/srv/fleet/.fsfleet/vault.json")
        );
        assert_eq!(
            default_path(Path::new("inventory.toml")),
            PathBuf::from("./.fsfleet/vault.json")
        );
    }
}
