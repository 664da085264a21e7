//! known_hosts files: read them the way OpenSSH does, and learn new keys.
//!
//! russh ships a reader, but it miscounts lines after comments (so the "line N" in a changed-key
//! message would be wrong), splits on single spaces and knows no markers; operators act on that
//! line number, so fsfleet reads the files itself.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use data_encoding::BASE64;
use hmac::{Hmac, KeyInit, Mac};
use russh::keys::ssh_key::{HashAlg, PublicKey};
use sha1::Sha1;

use super::SshError;

/// One usable entry of a known_hosts file.
#[derive(Debug, Clone)]
struct Entry {
    file: PathBuf,
    line: usize,
    patterns: String,
    revoked: bool,
    key: PublicKey,
}

/// What a host's offered key is, compared to the files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyStatus {
    /// A recorded key for this host matches.
    Known,
    /// No entry names this host.
    Unknown,
    /// Entries name this host but none holds this key. `file`/`line` point at the first of them.
    Changed { file: PathBuf, line: usize },
    /// The key is marked `@revoked`.
    Revoked { file: PathBuf, line: usize },
}

/// The known_hosts files of a run: read once, consulted by every connection.
#[derive(Debug, Clone, Default)]
pub struct KnownHosts {
    entries: Vec<Entry>,
    /// Where `learn` appends (the first user file).
    learn_file: Option<PathBuf>,
}

/// `host` for port 22, `[host]:port` otherwise: the name OpenSSH records and matches.
pub fn host_port_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// `SHA256:...` as OpenSSH prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

impl KnownHosts {
    /// Read `files` (missing files are skipped: a first run has none). `learn_file` is where
    /// accept-new and confirmed keys are recorded.
    pub fn load(files: &[PathBuf], learn_file: Option<PathBuf>) -> Result<KnownHosts, SshError> {
        let mut entries = Vec::new();
        for file in files {
            match std::fs::read(file) {
                Ok(bytes) => entries.extend(parse(&String::from_utf8_lossy(&bytes), file)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(SshError::KnownHostsRead {
                        file: file.clone(),
                        source,
                    });
                }
            }
        }
        Ok(KnownHosts {
            entries,
            learn_file,
        })
    }

    pub fn learn_file(&self) -> Option<&Path> {
        self.learn_file.as_deref()
    }

    /// Whether any entry names this host (whatever its key): a host with none is "new".
    pub fn has_entries_for(&self, host: &str, port: u16) -> bool {
        let name = host_port_name(host, port);
        self.entries
            .iter()
            .any(|e| !e.revoked && matches_patterns(&name, &e.patterns))
    }

    /// The key algorithms recorded for this host, so the handshake can prefer them: otherwise a
    /// server offering another algorithm first would look like a changed key.
    pub fn algorithms_for(&self, host: &str, port: u16) -> Vec<russh::keys::Algorithm> {
        let name = host_port_name(host, port);
        let mut algs = Vec::new();
        for e in &self.entries {
            if !e.revoked && matches_patterns(&name, &e.patterns) {
                let alg = e.key.algorithm();
                if !algs.contains(&alg) {
                    algs.push(alg);
                }
            }
        }
        algs
    }

    pub fn check(&self, host: &str, port: u16, key: &PublicKey) -> HostKeyStatus {
        let name = host_port_name(host, port);
        let mut first_other: Option<&Entry> = None;
        for e in &self.entries {
            if e.revoked {
                if e.key.key_data() == key.key_data() {
                    return HostKeyStatus::Revoked {
                        file: e.file.clone(),
                        line: e.line,
                    };
                }
                continue;
            }
            if !matches_patterns(&name, &e.patterns) {
                continue;
            }
            if e.key.key_data() == key.key_data() {
                return HostKeyStatus::Known;
            }
            first_other.get_or_insert(e);
        }
        match first_other {
            Some(e) => HostKeyStatus::Changed {
                file: e.file.clone(),
                line: e.line,
            },
            None => HostKeyStatus::Unknown,
        }
    }

    /// Append the key to the learn file and remember it for the rest of the run. `hashed`
    /// (`HashKnownHosts yes`) writes the host name as OpenSSH does, `|1|salt|hash`, so the file
    /// does not list the hosts this controller manages.
    pub fn learn(
        &mut self,
        host: &str,
        port: u16,
        key: &PublicKey,
        hashed: bool,
    ) -> std::io::Result<()> {
        let Some(file) = self.learn_file.clone() else {
            return Err(std::io::Error::other(
                "no known_hosts file to record new host keys in (no home directory): pass --known-hosts",
            ));
        };
        let openssh = key
            .to_openssh()
            .map_err(|e| std::io::Error::other(format!("cannot encode host key: {e}")))?;
        let name = host_port_name(host, port);
        let name = if hashed {
            let mut salt = [0u8; 20];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut salt);
            hash_host_name(&name, &salt)
        } else {
            name
        };
        append_line(&file, &format!("{name} {openssh}"))?;
        let line = std::fs::read_to_string(&file)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        self.entries.push(Entry {
            file,
            line,
            patterns: name,
            revoked: false,
            key: key.clone(),
        });
        Ok(())
    }
}

fn append_line(file: &Path, line: &str) -> std::io::Result<()> {
    if let Some(dir) = file.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    let existing = std::fs::read(file).unwrap_or_default();
    let mut f = OpenOptions::new().create(true).append(true).open(file)?;
    // One write per entry so concurrent appends from one run never interleave inside a line.
    let mut buf = String::new();
    if !existing.is_empty() && !existing.ends_with(b"\n") {
        buf.push('\n');
    }
    buf.push_str(line);
    buf.push('\n');
    f.write_all(buf.as_bytes())?;
    f.sync_all()
}

fn parse(text: &str, file: &Path) -> Vec<Entry> {
    let mut out = Vec::new();
    for (idx, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let mut first = fields.next().unwrap_or_default();
        let mut revoked = false;
        if let Some(marker) = first.strip_prefix('@') {
            match marker {
                "revoked" => revoked = true,
                // Certificate authorities: fsfleet verifies plain host keys only.
                _ => continue,
            }
            first = match fields.next() {
                Some(f) => f,
                None => continue,
            };
        }
        let (Some(kind), Some(b64)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Ok(key) = PublicKey::from_openssh(&format!("{kind} {b64}")) else {
            continue;
        };
        out.push(Entry {
            file: file.to_path_buf(),
            line: idx + 1,
            patterns: first.to_string(),
            revoked,
            key,
        });
    }
    out
}

/// OpenSSH host pattern list: comma separated, `*`/`?` wildcards, `!` negation (a matching
/// negation wins), and `|1|salt|hash` hashed names.
fn matches_patterns(name: &str, patterns: &str) -> bool {
    let mut matched = false;
    for pat in patterns.split(',') {
        if let Some(hashed) = pat.strip_prefix("|1|") {
            if hashed_matches(name, hashed) {
                matched = true;
            }
        } else if let Some(neg) = pat.strip_prefix('!') {
            if glob(neg.as_bytes(), name.as_bytes()) {
                return false;
            }
        } else if glob(pat.as_bytes(), name.as_bytes()) {
            matched = true;
        }
    }
    matched
}

/// `|1|base64(salt)|base64(HMAC-SHA1(salt, name))`: OpenSSH's hashed host name (hostfile.c),
/// of the lowercased name as ssh(1) looks it up.
fn hash_host_name(name: &str, salt: &[u8]) -> String {
    let hash = <Hmac<Sha1> as KeyInit>::new_from_slice(salt)
        .map(|mac| {
            mac.chain_update(name.to_ascii_lowercase().as_bytes())
                .finalize()
                .into_bytes()
                .to_vec()
        })
        // HMAC takes a key of any length: this cannot fail.
        .unwrap_or_default();
    format!("|1|{}|{}", BASE64.encode(salt), BASE64.encode(&hash))
}

fn hashed_matches(name: &str, hashed: &str) -> bool {
    let mut parts = hashed.splitn(2, '|');
    let (Some(salt), Some(hash)) = (parts.next(), parts.next()) else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (
        BASE64.decode(salt.as_bytes()),
        BASE64.decode(hash.as_bytes()),
    ) else {
        return false;
    };
    let Ok(mac) = <Hmac<Sha1> as KeyInit>::new_from_slice(&salt) else {
        return false;
    };
    // ssh(1) lowercases the name before hashing it.
    mac.chain_update(name.to_ascii_lowercase().as_bytes())
        .verify_slice(&hash)
        .is_ok()
}

/// `*` and `?` glob, case-insensitive like OpenSSH host names.
pub(crate) fn glob(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while i < s.len() {
        if p < pat.len() && (pat[p] == b'?' || pat[p].eq_ignore_ascii_case(&s[i])) {
            p += 1;
            i += 1;
        } else if p < pat.len() && pat[p] == b'*' {
            star = Some(p);
            p += 1;
            mark = i;
        } else if let Some(sp) = star {
            p = sp + 1;
            mark += 1;
            i = mark;
        } else {
            return false;
        }
    }
    while p < pat.len() && pat[p] == b'*' {
        p += 1;
    }
    p == pat.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
    const K2: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA6rWI3G1sz07DnfFlrouTcysQlj2P+jpNSOEWD9OJ3X";

    fn key(s: &str) -> PublicKey {
        PublicKey::from_openssh(s).unwrap()
    }

    #[test]
    fn an_unreadable_file_names_itself_and_keeps_the_io_error() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be: it exists, and reading it fails.
        let path = dir.path().join("known_hosts");
        std::fs::create_dir(&path).unwrap();
        let e = KnownHosts::load(std::slice::from_ref(&path), None).unwrap_err();
        let SshError::KnownHostsRead { file, source } = &e else {
            panic!("{e:?}");
        };
        assert_eq!(file, &path);
        assert_eq!(source.kind(), std::io::ErrorKind::IsADirectory);
        assert!(std::error::Error::source(&e).is_some());
        assert!(
            e.to_string().starts_with(&format!(
                "cannot read known_hosts file {}: ",
                path.display()
            )),
            "{e}"
        );
        // A missing file is a first run, not an error.
        let missing = dir.path().join("absent");
        assert!(KnownHosts::load(&[missing], None).is_ok());
    }

    fn load(text: &str) -> (tempfile::TempDir, KnownHosts, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        std::fs::write(&path, text).unwrap();
        let kh = KnownHosts::load(std::slice::from_ref(&path), Some(path.clone())).unwrap();
        (dir, kh, path)
    }

    #[test]
    fn known_unknown_and_changed_with_true_line_numbers() {
        let text = format!("# comment\n\n10.0.0.1 {K1}\n[10.0.0.2]:2222 {K1}\n");
        let (_d, kh, path) = load(&text);
        assert_eq!(kh.check("10.0.0.1", 22, &key(K1)), HostKeyStatus::Known);
        assert_eq!(kh.check("10.0.0.2", 2222, &key(K1)), HostKeyStatus::Known);
        // Same host, other port: a different name, so unknown.
        assert_eq!(kh.check("10.0.0.2", 22, &key(K1)), HostKeyStatus::Unknown);
        assert_eq!(
            kh.check("10.0.0.1", 22, &key(K2)),
            HostKeyStatus::Changed {
                file: path.clone(),
                line: 3
            }
        );
        assert_eq!(
            kh.check("10.0.0.2", 2222, &key(K2)),
            HostKeyStatus::Changed {
                file: path,
                line: 4
            }
        );
    }

    #[test]
    fn hashed_wildcard_negated_and_revoked_entries() {
        // `ssh-keygen -H` style entry for "host.example" (salt/hash computed here).
        let salt = b"0123456789abcdefghij";
        let mac = <Hmac<Sha1> as KeyInit>::new_from_slice(salt)
            .unwrap()
            .chain_update(b"host.example");
        let hash = mac.finalize().into_bytes();
        let hashed = format!("|1|{}|{}", BASE64.encode(salt), BASE64.encode(&hash));
        let text = format!(
            "{hashed} {K1}\n*.lab,!bad.lab {K1}\n@revoked * {K2}\n@cert-authority * {K1}\n"
        );
        let (_d, kh, path) = load(&text);
        assert_eq!(kh.check("host.example", 22, &key(K1)), HostKeyStatus::Known);
        assert_eq!(kh.check("a.lab", 22, &key(K1)), HostKeyStatus::Known);
        assert_eq!(kh.check("bad.lab", 22, &key(K1)), HostKeyStatus::Unknown);
        assert_eq!(
            kh.check("a.lab", 22, &key(K2)),
            HostKeyStatus::Revoked {
                file: path,
                line: 3
            }
        );
        assert!(kh.has_entries_for("host.example", 22));
        assert!(!kh.has_entries_for("other", 22));
    }

    #[test]
    fn learn_appends_and_is_remembered() {
        let (_d, mut kh, path) = load("10.0.0.1 ssh-ed25519 AAAA-not-a-key"); // junk line, no newline
        assert_eq!(kh.check("10.0.0.9", 2222, &key(K2)), HostKeyStatus::Unknown);
        kh.learn("10.0.0.9", 2222, &key(K2), false).unwrap();
        assert_eq!(kh.check("10.0.0.9", 2222, &key(K2)), HostKeyStatus::Known);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with(&format!("[10.0.0.9]:2222 {K2}\n")), "{text}");
        let reread = KnownHosts::load(std::slice::from_ref(&path), None).unwrap();
        assert_eq!(
            reread.check("10.0.0.9", 2222, &key(K2)),
            HostKeyStatus::Known
        );
    }

    #[test]
    fn hashed_learning_writes_no_plain_name_and_is_matched_after_a_reread() {
        let (_d, mut kh, path) = load("");
        kh.learn("Pbx-7.Example", 2222, &key(K1), true).unwrap();
        kh.learn("pbx-8.example", 22, &key(K2), true).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        // The salt and hash are random base64: test for the names and port as they would be
        // written in plain (`pbx-7.example`, `[pbx-7.example]:2222`), never for substrings a
        // random hash may hold.
        let lower = text.to_lowercase();
        assert!(
            !lower.contains("pbx-7.example")
                && !lower.contains("pbx-8.example")
                && !text.contains("]:2222"),
            "{text}"
        );
        for line in text.lines() {
            let host = line.split_whitespace().next().unwrap_or("");
            let parts: Vec<&str> = host.split('|').collect();
            assert!(
                parts.len() == 4 && parts[0].is_empty() && parts[1] == "1",
                "not a hashed entry: {line}"
            );
        }
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        for (line, k) in lines.iter().zip([K1, K2]) {
            let (name, rest) = line.split_once(' ').unwrap();
            assert_eq!(rest, k);
            let parts: Vec<&str> = name.split('|').collect();
            assert_eq!((parts.len(), parts[0], parts[1]), (4, "", "1"), "{name}");
            assert_eq!(BASE64.decode(parts[2].as_bytes()).unwrap().len(), 20);
            assert_eq!(BASE64.decode(parts[3].as_bytes()).unwrap().len(), 20);
        }
        // Salts are random: the same name never hashes the same twice.
        let (_d2, mut kh2, path2) = load("");
        kh2.learn("pbx-8.example", 22, &key(K2), true).unwrap();
        assert_ne!(
            std::fs::read_to_string(&path2).unwrap(),
            lines[1].to_string() + "\n"
        );
        // Matched by this checker (case-insensitively, like ssh) after a fresh read...
        let reread = KnownHosts::load(std::slice::from_ref(&path), None).unwrap();
        assert_eq!(
            reread.check("pbx-7.example", 2222, &key(K1)),
            HostKeyStatus::Known
        );
        assert_eq!(
            reread.check("pbx-8.example", 22, &key(K2)),
            HostKeyStatus::Known
        );
        assert!(matches!(
            reread.check("pbx-8.example", 22, &key(K1)),
            HostKeyStatus::Changed { line: 2, .. }
        ));
        assert_eq!(
            reread.check("pbx-7.example", 22, &key(K1)),
            HostKeyStatus::Unknown
        );
        // ...and by russh's own reader (an independent implementation of the format).
        let found =
            russh::keys::known_hosts::known_host_keys_path("pbx-8.example", 22, &path).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].1, key(K2));
        // ...and by OpenSSH itself.
        let out = std::process::Command::new("ssh-keygen")
            .args(["-F", "[pbx-7.example]:2222", "-f"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ssh-keygen -F did not find the hashed entry"
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains(K1));
    }

    #[test]
    fn glob_matches_like_openssh() {
        assert!(glob(b"*.example.com", b"a.b.example.com"));
        assert!(glob(b"10.0.0.?", b"10.0.0.7"));
        assert!(!glob(b"10.0.0.?", b"10.0.0.77"));
        assert!(glob(b"HOST", b"host"));
    }
}
