//! `fsfleet creds export --format pass`: every active password into the operator's
//! password-store (<https://www.passwordstore.org/>) as `fsfleet/HOST/KIND`.
//!
//! Each secret goes to `pass insert --multiline --force NAME` on its stdin: never in an argument
//! (any local user can read another's argv in /proc) nor in a file; `pass` hands it to gpg on a
//! pipe in turn. The store, its GnuPG key and `PASSWORD_STORE_DIR` / `GNUPGHOME` are the
//! operator's own, inherited from the environment.

use std::io::Write;
use std::process::{Command, Stdio};

use super::{Vault, VaultError};
use crate::secret::Secret;

/// The folder of the store fsfleet writes under.
pub const PREFIX: &str = "fsfleet";

/// The entries to write: `fsfleet/HOST/KIND` and the active value, in vault order. A host name
/// that is not a plain path component (it names the file `pass` writes) is refused.
pub fn entries(vault: &Vault) -> Result<Vec<(String, Secret)>, VaultError> {
    let mut out = Vec::new();
    for (host, entry) in vault.hosts() {
        for (kind, c) in &entry.creds {
            let Some(a) = &c.active else { continue };
            if !is_store_component(host) {
                return Err(VaultError::Export {
                    what: format!("host {}", crate::display::line(host)),
                    why: "its name is not a plain file name (letters, digits, `.`, `_`, `-`, \
                          not starting with `.` or `-`), which a password-store path needs"
                        .into(),
                });
            }
            out.push((
                format!("{PREFIX}/{host}/{}", kind.as_str()),
                Secret::new(a.value.clone()),
            ));
        }
    }
    Ok(out)
}

fn is_store_component(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(['.', '-'])
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Write every entry with `program` (`pass`). Returns the names written. Stops at the first
/// failure, naming the entry and quoting what `pass` said (its output holds no secret: the
/// secret only ever went to its stdin).
pub fn export(vault: &Vault, program: &str) -> Result<Vec<String>, VaultError> {
    let entries = entries(vault)?;
    let mut written = Vec::with_capacity(entries.len());
    for (name, secret) in entries {
        insert(program, &name, &secret)?;
        written.push(name);
    }
    Ok(written)
}

fn insert(program: &str, name: &str, secret: &Secret) -> Result<(), VaultError> {
    let failed = |why: String| VaultError::Export {
        what: name.to_string(),
        why,
    };
    let mut child = Command::new(program)
        .args(["insert", "--multiline", "--force", name])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                failed(format!(
                    "`{program}` is not installed (Debian: apt-get install pass)"
                ))
            } else {
                failed(format!("cannot run `{program}`: {e}"))
            }
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // `pass` may stop before reading (no store yet): its exit status says why, below.
        match stdin.write_all(format!("{}\n", secret.expose()).as_bytes()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            Err(e) => return Err(failed(format!("cannot write to `{program}`: {e}"))),
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| failed(format!("`{program}` did not finish: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&out.stderr);
    let said = said.trim();
    Err(failed(format!(
        "`{program} insert` failed ({}){}",
        out.status,
        if said.is_empty() {
            String::new()
        } else {
            format!(": {}", crate::display::line(said))
        }
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::{CredKind, Stamped};

    #[test]
    fn names_are_prefix_host_kind_and_only_plain_components() {
        assert!(is_store_component("fs01.example.net"));
        assert!(is_store_component("fs_01-b"));
        for bad in ["", "..", ".hidden", "-rf", "a/b", "a b", "fs\n01", "é"] {
            assert!(!is_store_component(bad), "{bad:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        let mut v = Vault::open(&dir.path().join("v.json")).unwrap();
        let stamp = |value: &str| Stamped {
            value: value.into(),
            at: "2026-01-01T00:00:00Z".into(),
            run_id: "r".into(),
        };
        v.cred_mut("fs01", CredKind::EslPassword).active = Some(stamp("e1"));
        v.cred_mut("fs01", CredKind::SipPassword).pending = Some(stamp("only-pending"));
        v.cred_mut("fs02", CredKind::SipPassword).active = Some(stamp("s2"));
        let got: Vec<(String, String)> = entries(&v)
            .unwrap()
            .into_iter()
            .map(|(n, s)| (n, s.expose().to_string()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("fsfleet/fs01/esl_password".to_string(), "e1".to_string()),
                ("fsfleet/fs02/sip_password".to_string(), "s2".to_string()),
            ],
            "active values only"
        );
        v.cred_mut("../etc", CredKind::SipPassword).active = Some(stamp("x"));
        let e = entries(&v).unwrap_err().to_string();
        assert!(
            e.contains("host ../etc") && e.contains("plain file name"),
            "{e}"
        );
    }

    #[test]
    fn a_missing_program_or_a_failing_store_is_a_clear_error_without_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let mut v = Vault::open(&dir.path().join("v.json")).unwrap();
        v.cred_mut("fs01", CredKind::EslPassword).active = Some(Stamped {
            value: "TopSecretValue42".into(),
            at: "2026-01-01T00:00:00Z".into(),
            run_id: "r".into(),
        });
        let e = export(&v, "/nonexistent/pass").unwrap_err().to_string();
        assert!(
            e.contains("fsfleet/fs01/esl_password") && e.contains("not installed"),
            "{e}"
        );
        // A store that fails (what `pass` does without `pass init`): its stderr is quoted.
        let fake = dir.path().join("pass");
        std::fs::write(
            &fake,
            "#!/bin/sh\ncat >/dev/null\necho 'Error: You must run: pass init' >&2\nexit 1\n",
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let e = export(&v, fake.to_str().unwrap()).unwrap_err().to_string();
        assert!(e.contains("You must run: pass init"), "{e}");
        assert!(!e.contains("TopSecretValue42"), "{e}");
    }
}
