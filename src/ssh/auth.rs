//! Client authentication: ssh-agent, then identity files, then a password from the environment.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use russh::client::Handle;
use russh::keys::agent::AgentIdentity;
use russh::keys::agent::client::AgentClient;
use russh::keys::{Algorithm, PrivateKey, PrivateKeyWithHashAlg};
use tokio::sync::Mutex;

use super::SshError;
use super::session::Verifier;
use crate::inventory::Host;

/// Private keys of a run, each read (and its passphrase asked) at most once however many hosts
/// use it. Prompts are serialised so two hosts never ask at the same time.
#[derive(Default)]
pub struct KeyRing {
    loaded: Mutex<HashMap<PathBuf, Result<Arc<PrivateKey>, String>>>,
}

impl KeyRing {
    async fn get(&self, path: &Path) -> Result<Arc<PrivateKey>, String> {
        let mut loaded = self.loaded.lock().await;
        if let Some(r) = loaded.get(path) {
            return r.clone();
        }
        let r = load_key(path);
        loaded.insert(path.to_path_buf(), r.clone());
        r
    }
}

fn load_key(path: &Path) -> Result<Arc<PrivateKey>, String> {
    match russh::keys::load_secret_key(path, None) {
        Ok(k) => Ok(Arc::new(k)),
        Err(russh::keys::Error::KeyIsEncrypted) => {
            if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
                return Err(format!(
                    "{} (encrypted, and no terminal to ask its passphrase: load it into ssh-agent)",
                    path.display()
                ));
            }
            let prompt = format!("Passphrase for {}: ", path.display());
            let pass = rpassword::prompt_password(prompt)
                .map_err(|e| format!("{} (passphrase prompt failed: {e})", path.display()))?;
            russh::keys::load_secret_key(path, Some(&pass))
                .map(Arc::new)
                .map_err(|e| format!("{} ({e})", path.display()))
        }
        Err(e) => Err(format!("{} ({e})", path.display())),
    }
}

/// The key files to offer: the host's own (inventory, ssh config) then the OpenSSH defaults.
fn candidate_files(host: &Host) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = host.identity_files.clone();
    if let Some(home) = dirs::home_dir() {
        for name in ["id_ed25519", "id_ecdsa", "id_rsa"] {
            let p = home.join(".ssh").join(name);
            if p.exists() && !files.contains(&p) {
                files.push(p);
            }
        }
    }
    files
}

pub(crate) async fn authenticate(
    handle: &mut Handle<Verifier>,
    host: &Host,
    keys: &KeyRing,
) -> Result<(), SshError> {
    let user = host.user.as_str();
    let proto = |source| SshError::Protocol {
        host: host.name.clone(),
        source,
    };
    let mut tried: Vec<String> = Vec::new();

    // 1. ssh-agent
    if std::env::var_os("SSH_AUTH_SOCK").is_some() {
        match AgentClient::connect_env().await {
            Ok(mut agent) => match agent.request_identities().await {
                Ok(ids) => {
                    let n = ids.len();
                    for id in ids {
                        let AgentIdentity::PublicKey { key, .. } = id else {
                            continue;
                        };
                        let hash = rsa_hash(handle, &key.algorithm()).await.map_err(proto)?;
                        match handle
                            .authenticate_publickey_with(user, key, hash, &mut agent)
                            .await
                        {
                            Ok(r) if r.success() => return Ok(()),
                            Ok(_) => {}
                            Err(e) => tried.push(format!("ssh-agent key refused to sign ({e})")),
                        }
                    }
                    tried.push(format!("ssh-agent ({n} keys)"));
                }
                Err(e) => tried.push(format!("ssh-agent (cannot list keys: {e})")),
            },
            Err(e) => tried.push(format!("ssh-agent (cannot connect: {e})")),
        }
    }

    // 2. identity files
    for path in candidate_files(host) {
        let key = match keys.get(&path).await {
            Ok(k) => k,
            Err(why) => {
                tried.push(why);
                continue;
            }
        };
        let hash = rsa_hash(handle, &key.algorithm()).await.map_err(proto)?;
        let r = handle
            .authenticate_publickey(user, PrivateKeyWithHashAlg::new(key, hash))
            .await
            .map_err(proto)?;
        if r.success() {
            return Ok(());
        }
        tried.push(format!("key {}", path.display()));
    }

    // 3. password from the environment (never from the inventory file)
    if let Some(var) = &host.password_env {
        match std::env::var(var) {
            Ok(pw) if !pw.is_empty() => {
                let r = handle
                    .authenticate_password(user, pw)
                    .await
                    .map_err(proto)?;
                if r.success() {
                    return Ok(());
                }
                tried.push(format!("password from ${var}"));
            }
            _ => tried.push(format!("password_env {var} (variable not set)")),
        }
    }

    if tried.is_empty() {
        tried.push("nothing: no ssh-agent, no identity file, no password_env; set identity_file in the inventory".into());
    }
    Err(SshError::AuthFailed {
        user: user.to_string(),
        host: host.name.clone(),
        tried: tried.join(", "),
    })
}

/// The signature hash for an RSA key: the best the server offers (SHA-2; OpenSSH >= 8.8 refuses
/// SHA-1). None for other key types.
async fn rsa_hash(
    handle: &Handle<Verifier>,
    alg: &Algorithm,
) -> Result<Option<russh::keys::HashAlg>, russh::Error> {
    if matches!(alg, Algorithm::Rsa { .. }) {
        Ok(handle.best_supported_rsa_hash().await?.flatten())
    } else {
        Ok(None)
    }
}
