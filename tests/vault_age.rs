//! The encrypted vault and the password-store export against the real tools (Debian's `age`,
//! `pass` and GnuPG; scripts/setup installs them), no fleet needed: the `age` tool decrypts the
//! vault fsfleet wrote and fsfleet reads the one `age` wrote (X25519 and passphrase), every creds
//! command works on the encrypted vault, a wrong key changes nothing, `pass` shows what fsfleet
//! exported with the secrets never in an argument, git tracking is warned about, and no secret
//! reaches an output the operator did not ask to see it in.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use fsfleet::inventory::Inventory;
use fsfleet::vault::Encryption;

const K: &str = "SHA256:Ht4ZNoF2ZcpDlqRb9gHkBDSsnsHbNk7o8nB6UhyPBbM";
const S1: &str = "Fs01EslSecretAbcdefghij0123456789";
const S2: &str = "Fs01SipSecretKlmnopqrst0123456789";
const S3: &str = "Fs02SipSecretUvwxyzABCD0123456789";
const S4: &str = "Fs03EslSecretEFGHIJKLMN0123456789";
const SECRETS: [&str; 4] = [S1, S2, S3, S4];

fn run(program: &str, args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .env_remove("FSFLEET_AGE_IDENTITY")
        .env_remove("FSFLEET_VAULT_PASSPHRASE")
        .env_remove("FSFLEET_INVENTORY")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("run {program}: {e} (scripts/setup installs it)"))
}

fn fsfleet(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Output {
    run(env!("CARGO_BIN_EXE_fsfleet"), args, dir, env)
}

fn text(o: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(o: Output) -> Output {
    assert!(o.status.success(), "{}", text(&o));
    o
}

/// Nothing the operator did not ask to see: none of the vault's secrets anywhere in `o`.
fn no_secret(o: &Output, what: &str) {
    let all = text(o);
    for s in SECRETS {
        assert!(!all.contains(s), "{what} printed a secret:\n{all}");
    }
}

/// `age-keygen -o DIR/NAME`: the identity file and its public key.
fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    ok(run("age-keygen", &["-o", name], dir, &[]));
    let public = ok(run("age-keygen", &["-y", name], dir, &[]));
    (
        path,
        String::from_utf8(public.stdout).unwrap().trim().to_string(),
    )
}

fn inventory(dir: &Path, name: &str, header: &str) {
    std::fs::write(
        dir.join(name),
        format!(
            "{header}\n[[hosts]]\nname = \"fs01\"\naddress = \"192.0.2.10\"\n\n\
             [[hosts]]\nname = \"fs02\"\naddress = \"192.0.2.11\"\n"
        ),
    )
    .unwrap();
}

fn recipients(keys: &[&str]) -> String {
    let quoted: Vec<String> = keys.iter().map(|k| format!("\"{k}\"")).collect();
    format!(
        "vault_encryption = \"age\"\nage_recipients = [{}]\n",
        quoted.join(", ")
    )
}

/// A vault document as fsfleet writes it (version 1).
fn document(hosts: &[(&str, &str, &str)]) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for (host, kind, value) in hosts {
        let entry = map
            .entry(host.to_string())
            .or_insert_with(|| serde_json::json!({"host_key": K, "creds": {}}));
        entry["creds"][kind] = serde_json::json!({
            "active": {"value": value, "at": "2026-01-01T00:00:00Z", "run_id": "r1"}
        });
    }
    serde_json::json!({"version": 1, "hosts": map})
}

fn write_plain(dir: &Path, doc: &serde_json::Value) {
    std::fs::create_dir_all(dir.join(".fsfleet")).unwrap();
    std::fs::write(
        dir.join(".fsfleet/vault.json"),
        serde_json::to_vec_pretty(doc).unwrap(),
    )
    .unwrap();
}

fn age_decrypt(dir: &Path, identity: &Path, file: &str) -> serde_json::Value {
    let out = ok(run(
        "age",
        &["-d", "-i", identity.to_str().unwrap(), file],
        dir,
        &[],
    ));
    serde_json::from_slice(&out.stdout).expect("the age tool decrypts JSON")
}

fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir.join(".fsfleet"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect()
}

#[test]
fn the_age_tool_and_fsfleet_read_each_others_vault_and_every_creds_command_works_on_it() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (id_a, pub_a) = keygen(d, "a.key");
    let (id_b, pub_b) = keygen(d, "b.key");
    let a = id_a.to_str().unwrap();
    let b = id_b.to_str().unwrap();
    inventory(d, "inventory.toml", &recipients(&[&pub_a]));
    let doc = document(&[
        ("fs01", "esl_password", S1),
        ("fs01", "sip_password", S2),
        ("fs02", "sip_password", S3),
    ]);
    write_plain(d, &doc);
    let plain = d.join(".fsfleet/vault.json");
    let sealed = d.join(".fsfleet/vault.age");
    let with_a = [("FSFLEET_AGE_IDENTITY", a)];

    // Asked for encryption, still plain: no key is a clear error, with the key: convert first.
    let o = fsfleet(&["creds", "show", "fs01"], d, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("set FSFLEET_AGE_IDENTITY"),
        "{}",
        text(&o)
    );
    let o = fsfleet(&["creds", "show", "fs01"], d, &with_a);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("`fsfleet creds encrypt`"), "{}", text(&o));
    no_secret(&o, "a refused creds show");

    // `creds encrypt`: the age tool reads the result with the test identity.
    let o = ok(fsfleet(&["creds", "encrypt"], d, &with_a));
    no_secret(&o, "creds encrypt");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("verified, and the plain file removed"),
        "{}",
        text(&o)
    );
    assert!(!plain.exists() && sealed.exists());
    let bytes = std::fs::read(&sealed).unwrap();
    assert!(bytes.starts_with(b"age-encryption.org/v1\n"));
    for s in SECRETS {
        assert!(!String::from_utf8_lossy(&bytes).contains(s));
    }
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&sealed).unwrap().mode() & 0o777, 0o600);
    assert_eq!(age_decrypt(d, &id_a, ".fsfleet/vault.age"), doc);
    assert!(temp_files(d).is_empty());

    // Every creds command on the encrypted vault, secrets only where asked for.
    let o = ok(fsfleet(&["creds", "show", "fs01"], d, &with_a));
    no_secret(&o, "creds show (masked)");
    assert!(String::from_utf8_lossy(&o.stdout).contains("esl_password"));
    let o = ok(fsfleet(&["creds", "show", "fs01", "--reveal"], d, &with_a));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(S1) && out.contains(S2) && !out.contains(S3),
        "{out}"
    );
    let o = ok(fsfleet(&["creds", "export", "--format", "env"], d, &with_a));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(&format!("FSFLEET_FS02_SIP_PASSWORD='{S3}'")),
        "{out}"
    );
    let o = ok(fsfleet(
        &["creds", "export", "--format", "json"],
        d,
        &with_a,
    ));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["fs01"]["esl_password"], S1);

    // A wrong key (b was added to an inventory, the vault was written for a alone) and no key:
    // a clear error, the vault byte for byte as it was, even for a command that writes.
    inventory(d, "inv-b.toml", &recipients(&[&pub_a, &pub_b]));
    let before = std::fs::read(&sealed).unwrap();
    for (args, env) in [
        (
            vec!["creds", "show", "fs01", "inv-b.toml"],
            vec![("FSFLEET_AGE_IDENTITY", b)],
        ),
        (
            vec!["creds", "forget", "fs01", "inv-b.toml"],
            vec![("FSFLEET_AGE_IDENTITY", b)],
        ),
        (vec!["creds", "forget", "fs01"], vec![]),
        (
            vec!["creds", "forget", "fs01"],
            vec![("FSFLEET_AGE_IDENTITY", b)],
        ),
    ] {
        let o = fsfleet(&args, d, &env);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        no_secret(&o, "a refused command");
        let t = text(&o);
        assert!(
            t.contains("cannot be decrypted with the identity in")
                || t.contains("set FSFLEET_AGE_IDENTITY")
                || t.contains("is in the inventory's age_recipients"),
            "{args:?}: {t}"
        );
        assert_eq!(std::fs::read(&sealed).unwrap(), before, "{args:?}");
    }
    // The plain settings (no inventory, --vault alone) never read it either.
    let o = fsfleet(
        &[
            "creds",
            "show",
            "fs01",
            "nowhere.toml",
            "--vault",
            ".fsfleet/vault.age",
        ],
        d,
        &with_a,
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("vault_encryption"), "{}", text(&o));

    // A command that writes keeps it encrypted.
    let o = ok(fsfleet(&["creds", "forget", "fs02"], d, &with_a));
    no_secret(&o, "creds forget");
    let after = age_decrypt(d, &id_a, ".fsfleet/vault.age");
    assert!(after["hosts"]["fs02"].is_null() && after["hosts"]["fs01"] == doc["hosts"]["fs01"]);
    assert!(temp_files(d).is_empty());

    // A vault the age tool encrypted, binary and armored: fsfleet reads it.
    let theirs = document(&[("fs03", "esl_password", S4)]);
    std::fs::write(d.join("theirs.json"), serde_json::to_vec(&theirs).unwrap()).unwrap();
    for armor in [false, true] {
        let mut args = vec!["-r", &pub_a, "-o", ".fsfleet/vault.age"];
        if armor {
            args.insert(0, "-a");
        }
        args.push("theirs.json");
        ok(run("age", &args, d, &[]));
        let o = ok(fsfleet(&["creds", "show", "fs03", "--reveal"], d, &with_a));
        assert!(
            String::from_utf8_lossy(&o.stdout).contains(S4),
            "armor {armor}: {}",
            text(&o)
        );
    }
}

/// `age -p` only reads a passphrase from a terminal: `script` gives it one, fed on stdin.
fn age_with_passphrase(dir: &Path, command: &str, passphrase: &str, times: usize) -> Output {
    let mut child = Command::new("script")
        .args(["-qec", command, "/dev/null"])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run script (bsdutils)");
    let mut stdin = child.stdin.take().unwrap();
    for _ in 0..times {
        std::thread::sleep(std::time::Duration::from_millis(700));
        stdin
            .write_all(format!("{passphrase}\n").as_bytes())
            .unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    drop(stdin);
    child.wait_with_output().unwrap()
}

#[test]
fn a_passphrase_vault_is_what_age_p_reads_and_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    inventory(d, "inventory.toml", "vault_encryption = \"age\"\n");
    let doc = document(&[("fs01", "esl_password", S1)]);
    write_plain(d, &doc);
    let pass = "correct horse battery staple";
    let with = [("FSFLEET_VAULT_PASSPHRASE", pass)];

    let o = fsfleet(&["creds", "encrypt"], d, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("set FSFLEET_VAULT_PASSPHRASE"),
        "{}",
        text(&o)
    );
    let o = ok(fsfleet(&["creds", "encrypt"], d, &with));
    no_secret(&o, "creds encrypt");
    assert!(!text(&o).contains(pass));
    let bytes = std::fs::read(d.join(".fsfleet/vault.age")).unwrap();
    assert!(String::from_utf8_lossy(&bytes).contains("\n-> scrypt "));

    // The age tool decrypts it with the passphrase.
    let o = age_with_passphrase(d, "age -d -o out.json .fsfleet/vault.age", pass, 1);
    assert!(o.status.success(), "{}", text(&o));
    let out: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("out.json")).unwrap()).unwrap();
    assert_eq!(out, doc);

    // A wrong passphrase: a clear error, nothing changed.
    let o = fsfleet(
        &["creds", "forget", "fs01"],
        d,
        &[("FSFLEET_VAULT_PASSPHRASE", "not it")],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("cannot be decrypted with the passphrase in FSFLEET_VAULT_PASSPHRASE"),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::read(d.join(".fsfleet/vault.age")).unwrap(), bytes);

    // One `age -p` wrote: fsfleet reads it.
    let theirs = document(&[("fs03", "esl_password", S4)]);
    std::fs::write(d.join("theirs.json"), serde_json::to_vec(&theirs).unwrap()).unwrap();
    let o = age_with_passphrase(d, "age -p -o .fsfleet/vault.age theirs.json", pass, 2);
    assert!(o.status.success(), "{}", text(&o));
    let o = ok(fsfleet(&["creds", "show", "fs03", "--reveal"], d, &with));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(S4),
        "{}",
        text(&o)
    );
    assert!(!text(&o).contains(pass));
}

/// A throwaway GnuPG key and password-store, both in `dir`.
struct Store {
    gnupg: PathBuf,
    store: PathBuf,
}

impl Store {
    fn new(dir: &Path) -> Store {
        let gnupg = dir.join("g");
        std::fs::create_dir(&gnupg).unwrap();
        std::fs::set_permissions(&gnupg, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        let s = Store {
            gnupg,
            store: dir.join("store"),
        };
        ok(s.run(
            "gpg",
            &[
                "--batch",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
                "--quick-gen-key",
                "fsfleet test <fsfleet-test@example.invalid>",
                "default",
                "default",
                "never",
            ],
            dir,
        ));
        let keys = ok(s.run(
            "gpg",
            &["--batch", "--with-colons", "--list-secret-keys"],
            dir,
        ));
        let fpr = String::from_utf8_lossy(&keys.stdout)
            .lines()
            .find_map(|l| {
                l.strip_prefix("fpr:")
                    .map(|r| r.trim_matches(':').to_string())
            })
            .expect("the key's fingerprint");
        ok(s.run("pass", &["init", &fpr], dir));
        s
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("GNUPGHOME", self.gnupg.display().to_string()),
            ("PASSWORD_STORE_DIR", self.store.display().to_string()),
        ]
    }

    fn run(&self, program: &str, args: &[&str], dir: &Path) -> Output {
        let env = self.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        run(program, args, dir, &env)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .args(["--kill", "gpg-agent"])
            .env("GNUPGHOME", &self.gnupg)
            .output();
    }
}

#[test]
fn pass_shows_the_exported_secrets_and_no_secret_was_ever_an_argument() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let store = Store::new(d);
    // The vault is encrypted (the export reads it like every command) and was written by age.
    let (id, public) = keygen(d, "a.key");
    inventory(d, "inventory.toml", &recipients(&[&public]));
    let doc = document(&[
        ("fs01", "esl_password", S1),
        ("fs01", "sip_password", S2),
        ("fs02", "sip_password", S3),
    ]);
    std::fs::create_dir(d.join(".fsfleet")).unwrap();
    std::fs::write(d.join("doc.json"), serde_json::to_vec(&doc).unwrap()).unwrap();
    ok(run(
        "age",
        &["-r", &public, "-o", ".fsfleet/vault.age", "doc.json"],
        d,
        &[],
    ));
    std::fs::remove_file(d.join("doc.json")).unwrap();

    // `pass` behind a shim that records every argument it is given.
    let bin = d.join("bin");
    std::fs::create_dir(&bin).unwrap();
    let argv_log = d.join("argv.log");
    let real = String::from_utf8(ok(run("sh", &["-c", "command -v pass"], d, &[])).stdout)
        .unwrap()
        .trim()
        .to_string();
    std::fs::write(
        bin.join("pass"),
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >>'{}'\nexec '{real}' \"$@\"\n",
            argv_log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        bin.join("pass"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut env = store.env();
    env.push(("PATH", path));
    env.push(("FSFLEET_AGE_IDENTITY", id.display().to_string()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();

    for round in 0..2 {
        // The second round overwrites (the vault is the source of truth after a rotation).
        let o = ok(fsfleet(&["creds", "export", "--format", "pass"], d, &env));
        no_secret(&o, "creds export --format pass");
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "fsfleet/fs01/sip_password\nfsfleet/fs01/esl_password\nfsfleet/fs02/sip_password\n",
            "round {round}: {}",
            text(&o)
        );
    }
    for (name, want) in [
        ("fsfleet/fs01/esl_password", S1),
        ("fsfleet/fs01/sip_password", S2),
        ("fsfleet/fs02/sip_password", S3),
    ] {
        let o = ok(store.run("pass", &["show", name], d));
        assert_eq!(String::from_utf8_lossy(&o.stdout), format!("{want}\n"));
        let file = std::fs::read(store.store.join(format!("{name}.gpg"))).unwrap();
        assert!(
            !String::from_utf8_lossy(&file).contains(want),
            "{name} encrypted"
        );
    }
    let argv = std::fs::read_to_string(&argv_log).unwrap();
    assert_eq!(argv.lines().count(), 6, "{argv}");
    assert!(
        argv.lines()
            .all(|l| l.starts_with("insert --multiline --force fsfleet/")),
        "{argv}"
    );
    for s in SECRETS {
        assert!(!argv.contains(s), "a secret in pass's argv: {argv}");
    }

    // A store that was never initialised: a clear error naming the entry, no secret.
    let o = fsfleet(
        &["creds", "export", "--format", "pass"],
        d,
        &[
            ("GNUPGHOME", store.gnupg.to_str().unwrap()),
            ("PASSWORD_STORE_DIR", d.join("nostore").to_str().unwrap()),
            ("FSFLEET_AGE_IDENTITY", id.to_str().unwrap()),
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("cannot export fsfleet/fs01/sip_password"),
        "{}",
        text(&o)
    );
    no_secret(&o, "a failed export");
}

#[test]
fn a_vault_tracked_by_git_is_warned_about_and_a_new_one_is_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    inventory(d, "inventory.toml", "");
    write_plain(d, &document(&[("fs01", "esl_password", S1)]));
    ok(run("git", &["init", "-q"], d, &[]));
    let o = ok(fsfleet(&["creds", "show", "fs01"], d, &[]));
    assert!(!text(&o).contains("tracked by git"), "{}", text(&o));
    ok(run("git", &["add", "-f", ".fsfleet/vault.json"], d, &[]));
    let o = ok(fsfleet(&["creds", "show", "fs01"], d, &[]));
    let t = text(&o);
    assert!(
        t.contains("warning: the vault")
            && t.contains("is tracked by git")
            && t.contains("clear text"),
        "{t}"
    );
    no_secret(&o, "the git warning");

    // The state directory fsfleet creates keeps itself out of git: `git add -A` adds none of it.
    let fresh = d.join("fresh");
    std::fs::create_dir(&fresh).unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        fresh.join("inventory.toml"),
        format!("[[hosts]]\nname = \"fs01\"\naddress = \"127.0.0.1\"\nport = {closed}\n"),
    )
    .unwrap();
    let o = fsfleet(
        &[
            "harden",
            "inventory.toml",
            "--check",
            "--no-progress",
            "--limit",
            "fs01",
        ],
        &fresh,
        &[],
    );
    assert!(fresh.join(".fsfleet/.gitignore").exists(), "{}", text(&o));
    ok(run("git", &["init", "-q"], &fresh, &[]));
    ok(run("git", &["add", "-A"], &fresh, &[]));
    let staged = ok(run("git", &["ls-files"], &fresh, &[]));
    assert_eq!(String::from_utf8_lossy(&staged.stdout), "inventory.toml\n");
}

#[test]
fn the_inventory_declares_the_encryption_and_checks_the_recipients() {
    let public = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";
    let hosts = "[[hosts]]\nname = \"fs01\"\n";
    let parse =
        |head: &str| Inventory::parse_str(&format!("{head}\n{hosts}"), Path::new("inv.toml"), None);
    let inv = parse(&format!(
        "vault_encryption = \"age\"\nage_recipients = [\"{public}\"]"
    ))
    .unwrap();
    assert_eq!(inv.vault.encryption, Encryption::Age);
    assert_eq!(inv.vault.age_recipients, vec![public.to_string()]);
    let shown = fsfleet::inventory::render_hosts(&inv, &inv.hosts);
    assert!(
        shown.contains("\nvault: encrypted with age to 1 recipient(s)\n"),
        "{shown}"
    );
    let plain = parse("").unwrap();
    assert!(!fsfleet::inventory::render_hosts(&plain, &plain.hosts).contains("vault"));
    assert_eq!(parse("").unwrap().vault, Default::default());
    assert_eq!(
        parse("vault_encryption = \"none\"")
            .unwrap()
            .vault
            .encryption,
        Encryption::None
    );
    for (head, want) in [
        ("vault_encryption = \"gpg\"", "inv.toml:1:"),
        ("vault_encryption = \"gpg\"", "must be \"age\""),
        (
            "vault_encryption = \"age\"\nage_recipients = [\"age1nope\"]",
            "inv.toml:2:",
        ),
        (
            "vault_encryption = \"age\"\nage_recipients = [\"age1nope\"]",
            "is not an age X25519 public key",
        ),
        (
            &format!("age_recipients = [\"{public}\"]"),
            "age_recipients without vault_encryption",
        ),
    ] {
        let e = parse(head).unwrap_err().to_string();
        assert!(e.contains(want), "{head}: {e}");
    }
}
