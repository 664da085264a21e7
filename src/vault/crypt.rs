//! The vault at rest: plain JSON, or an age file (<https://age-encryption.org/v1>) that the
//! standard `age` tool reads and writes.
//!
//! The inventory says which (`vault_encryption = "age"`, `age_recipients = [...]`); the keys come
//! from the operator's environment, never from the inventory: `FSFLEET_AGE_IDENTITY` names an
//! identity file (as `age-keygen` writes it) for a vault encrypted to X25519 recipients, and
//! `FSFLEET_VAULT_PASSPHRASE` holds the passphrase of a vault without recipients (age's scrypt
//! mode). The decrypted document only ever exists in this process's memory: a write encrypts
//! before the first byte reaches the temp file.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use age::secrecy::SecretString;
use age::x25519;
use serde::Serialize;

use super::VaultError;
use crate::secret::Secret;

/// The environment variable naming the operator's age identity file.
pub const IDENTITY_ENV: &str = "FSFLEET_AGE_IDENTITY";
/// The environment variable holding the passphrase of a vault without recipients.
pub const PASSPHRASE_ENV: &str = "FSFLEET_VAULT_PASSPHRASE";

/// scrypt cost of a passphrase vault: 2^18, what the `age` tool itself writes (a fixed cost, not
/// one calibrated to this machine: harden writes the vault several times per host).
const SCRYPT_LOG_N: u8 = 18;
/// The highest scrypt cost accepted when reading: the `age` tool's own limit.
const SCRYPT_MAX_LOG_N: u8 = 22;

/// How the vault file is kept (the inventory's `vault_encryption`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Encryption {
    /// JSON, 0600 (the default).
    #[default]
    None,
    /// An age file: to `age_recipients`, else to `FSFLEET_VAULT_PASSPHRASE`.
    Age,
}

/// The inventory's vault settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VaultSettings {
    pub encryption: Encryption,
    /// X25519 public keys (`age1...`), each checked by [`parse_recipient`]. Empty with
    /// [`Encryption::Age`]: the vault is encrypted to a passphrase.
    pub age_recipients: Vec<String>,
}

impl VaultSettings {
    pub fn is_age(&self) -> bool {
        self.encryption == Encryption::Age
    }
}

/// An `age1...` X25519 recipient, or why it is not one.
pub fn parse_recipient(s: &str) -> Result<x25519::Recipient, String> {
    x25519::Recipient::from_str(s.trim()).map_err(|e| {
        format!(
            "`{}` is not an age X25519 public key ({e}): use the `age1...` line that \
             `age-keygen -y IDENTITY_FILE` prints",
            crate::display::line(s)
        )
    })
}

/// The key material from the operator's environment. `Debug` never shows the passphrase.
#[derive(Clone, Default)]
pub struct AgeKeys {
    /// `FSFLEET_AGE_IDENTITY`: an age identity file.
    pub identity_file: Option<PathBuf>,
    /// `FSFLEET_VAULT_PASSPHRASE`.
    pub passphrase: Option<Secret>,
}

impl std::fmt::Debug for AgeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgeKeys")
            .field("identity_file", &self.identity_file)
            .field("passphrase", &self.passphrase.as_ref().map(|_| "***"))
            .finish()
    }
}

impl AgeKeys {
    /// From `FSFLEET_AGE_IDENTITY` and `FSFLEET_VAULT_PASSPHRASE` (an empty variable is unset).
    pub fn from_env() -> AgeKeys {
        AgeKeys {
            identity_file: std::env::var_os(IDENTITY_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            passphrase: std::env::var(PASSPHRASE_ENV)
                .ok()
                .filter(|v| !v.is_empty())
                .map(Secret::new),
        }
    }
}

/// Whether these bytes are an age file (binary or ASCII-armored), not the plain JSON vault.
pub fn is_age_file(bytes: &[u8]) -> bool {
    let start = bytes.trim_ascii_start();
    start.starts_with(b"age-encryption.org/") || start.starts_with(b"-----BEGIN AGE ENCRYPTED FILE")
}

/// How the vault's bytes are sealed and opened.
pub(super) enum Codec {
    Plain,
    Age(AgeCodec),
}

pub(super) struct AgeCodec {
    /// Empty: passphrase mode.
    recipients: Vec<x25519::Recipient>,
    identities: Vec<x25519::Identity>,
    identity_file: Option<PathBuf>,
    passphrase: Option<SecretString>,
}

impl Codec {
    /// The codec the inventory asks for, with the keys to both write the vault and read it back:
    /// a vault written to recipients none of which the operator holds would lock them out.
    pub(super) fn new(settings: &VaultSettings, keys: &AgeKeys) -> Result<Codec, VaultError> {
        if !settings.is_age() {
            return Ok(Codec::Plain);
        }
        let recipients = settings
            .age_recipients
            .iter()
            .map(|r| parse_recipient(r).map_err(|why| VaultError::Settings { why }))
            .collect::<Result<Vec<_>, _>>()?;
        let passphrase = keys
            .passphrase
            .as_ref()
            .map(|p| SecretString::from(p.expose().to_string()));
        if recipients.is_empty() {
            if passphrase.is_none() {
                return Err(VaultError::AgeKeyMissing {
                    need: format!(
                        "the inventory lists no age_recipients, so the vault is encrypted to a \
                         passphrase: set {PASSPHRASE_ENV} (or list age_recipients and set \
                         {IDENTITY_ENV})"
                    ),
                });
            }
            // An identity still reads a vault that was encrypted to recipients before the
            // inventory switched to a passphrase (the next write goes to the passphrase).
            let identities = match &keys.identity_file {
                Some(file) => read_identities(file)?,
                None => Vec::new(),
            };
            return Ok(Codec::Age(AgeCodec {
                recipients,
                identities,
                identity_file: keys.identity_file.clone(),
                passphrase,
            }));
        }
        let Some(file) = &keys.identity_file else {
            return Err(VaultError::AgeKeyMissing {
                need: format!(
                    "the vault is encrypted to the inventory's age_recipients: set {IDENTITY_ENV} \
                     to your age identity file (`age-keygen -o FILE` makes one)"
                ),
            });
        };
        let identities = read_identities(file)?;
        let theirs: Vec<String> = recipients.iter().map(|r| r.to_string()).collect();
        let mine: Vec<String> = identities
            .iter()
            .map(|i| i.to_public().to_string())
            .collect();
        if !mine.iter().any(|m| theirs.contains(m)) {
            return Err(VaultError::IdentityNotRecipient {
                file: file.clone(),
                public: mine.join(", "),
            });
        }
        Ok(Codec::Age(AgeCodec {
            recipients,
            identities,
            identity_file: Some(file.clone()),
            passphrase,
        }))
    }

    pub(super) fn is_age(&self) -> bool {
        matches!(self, Codec::Age(_))
    }

    /// The bytes to write for this serialized document.
    pub(super) fn seal(&self, path: &Path, plain: &[u8]) -> Result<Vec<u8>, VaultError> {
        let Codec::Age(c) = self else {
            return Ok(plain.to_vec());
        };
        let encrypt = |e| VaultError::AgeEncrypt {
            path: path.to_path_buf(),
            source: Box::new(e),
        };
        let scrypt;
        let recipients: Vec<&dyn age::Recipient> = match &c.passphrase {
            Some(p) if c.recipients.is_empty() => {
                let mut r = age::scrypt::Recipient::new(p.clone());
                r.set_work_factor(SCRYPT_LOG_N);
                scrypt = r;
                vec![&scrypt]
            }
            _ => c
                .recipients
                .iter()
                .map(|r| r as &dyn age::Recipient)
                .collect(),
        };
        let encryptor = age::Encryptor::with_recipients(recipients.into_iter()).map_err(encrypt)?;
        let mut out = Vec::with_capacity(plain.len() + 256);
        let mut w = encryptor
            .wrap_output(&mut out)
            .map_err(|e| encrypt(age::EncryptError::Io(e)))?;
        w.write_all(plain)
            .and_then(|_| w.finish().map(|_| ()))
            .map_err(|e| encrypt(age::EncryptError::Io(e)))?;
        Ok(out)
    }

    /// The document's bytes from the file's: an age file is decrypted (whatever this codec
    /// writes: the file's own header says whether it wants a passphrase or an identity), plain
    /// JSON only when the inventory does not ask for encryption.
    pub(super) fn open(&self, path: &Path, bytes: &[u8]) -> Result<Vec<u8>, VaultError> {
        let encrypted = is_age_file(bytes);
        match (self, encrypted) {
            (Codec::Plain, false) => Ok(bytes.to_vec()),
            (Codec::Plain, true) => Err(VaultError::FormMismatch {
                path: path.to_path_buf(),
                why: "it is age-encrypted but the inventory does not say vault_encryption = \
                      \"age\": add it (with age_recipients) to the inventory"
                    .into(),
            }),
            (Codec::Age(_), false) => Err(VaultError::FormMismatch {
                path: path.to_path_buf(),
                why: "it is plain text but the inventory says vault_encryption = \"age\": run \
                      `fsfleet creds encrypt` to encrypt it"
                    .into(),
            }),
            (Codec::Age(c), true) => c.decrypt(path, bytes),
        }
    }
}

impl AgeCodec {
    fn decrypt(&self, path: &Path, bytes: &[u8]) -> Result<Vec<u8>, VaultError> {
        let undecryptable = |e| VaultError::AgeDecrypt {
            path: path.to_path_buf(),
            source: Box::new(e),
        };
        let decryptor = age::Decryptor::new_buffered(age::armor::ArmoredReader::new(bytes))
            .map_err(undecryptable)?;
        let scrypt_identity;
        let (identities, tried): (Vec<&dyn age::Identity>, String) = if decryptor.is_scrypt() {
            let Some(p) = &self.passphrase else {
                return Err(VaultError::AgeKeyMissing {
                    need: format!(
                        "vault {} is encrypted to a passphrase: set {PASSPHRASE_ENV}",
                        path.display()
                    ),
                });
            };
            let mut i = age::scrypt::Identity::new(p.clone());
            i.set_max_work_factor(SCRYPT_MAX_LOG_N);
            scrypt_identity = i;
            (
                vec![&scrypt_identity],
                format!("the passphrase in {PASSPHRASE_ENV}"),
            )
        } else {
            let Some(file) = &self.identity_file else {
                return Err(VaultError::AgeKeyMissing {
                    need: format!(
                        "vault {} is encrypted to age recipients: set {IDENTITY_ENV} to your \
                         identity file",
                        path.display()
                    ),
                });
            };
            (
                self.identities
                    .iter()
                    .map(|i| i as &dyn age::Identity)
                    .collect(),
                format!("the identity in {}", file.display()),
            )
        };
        let mut reader = match decryptor.decrypt(identities.into_iter()) {
            Ok(r) => r,
            Err(
                age::DecryptError::NoMatchingKeys
                | age::DecryptError::DecryptionFailed
                | age::DecryptError::KeyDecryptionFailed,
            ) => {
                return Err(VaultError::AgeWrongKey {
                    path: path.to_path_buf(),
                    tried,
                });
            }
            Err(e) => return Err(undecryptable(e)),
        };
        let mut out = Vec::new();
        reader
            .read_to_end(&mut out)
            .map_err(|e| undecryptable(age::DecryptError::Io(e)))?;
        Ok(out)
    }
}

/// The X25519 identities in an age identity file. A line that is not one is refused by its
/// number only: the file is secret, none of it is ever printed.
fn read_identities(file: &Path) -> Result<Vec<x25519::Identity>, VaultError> {
    let bad = |why: String| VaultError::Identity {
        file: file.to_path_buf(),
        why,
    };
    let text = std::fs::read_to_string(file).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let mut ids = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match x25519::Identity::from_str(line) {
            Ok(id) => ids.push(id),
            Err(_) => {
                return Err(bad(format!(
                    "line {} is not an age X25519 secret key (AGE-SECRET-KEY-1...); fsfleet \
                     reads identity files as `age-keygen` writes them",
                    n + 1
                )));
            }
        }
    }
    if ids.is_empty() {
        return Err(bad("it holds no AGE-SECRET-KEY-1... line".into()));
    }
    Ok(ids)
}
