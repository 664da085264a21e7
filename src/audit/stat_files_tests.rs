//! [`super::STAT_PROGRAM`] against the shell chain it replaced (`find | sort -u` and a `stat` and
//! a `dirname` per line), run by the local perl and shell on a scratch tree.

use super::{STAT_PROGRAM, find_args, stat_files};
use crate::ssh::sh_quote;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;

/// The shell the program replaced (the `st` helper of the credential, backup and fs_cli-config
/// facts), as the oracle.
const OLD_ST: &str = "st() { while IFS= read -r f; do [ -n \"$f\" ] || continue; \
     stat -c 'F %a %U %G %n' \"$f\"; d=$(dirname \"$f\"); \
     while :; do stat -c 'D %a %U %G %n' \"$d\"; [ \"$d\" = / ] && break; d=$(dirname \"$d\"); done; \
     done; }";

fn sh(script: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(script).output().unwrap();
    assert!(out.status.success(), "{script}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn touch(p: &Path, mode: u32) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, "x").unwrap();
    std::fs::set_permissions(p, PermissionsExt::from_mode(mode)).unwrap();
}

#[test]
fn finds_and_stats_what_find_sort_and_stat_did() {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("tree");
    let r = t.to_str().unwrap();
    for (p, mode) in [
        ("a/FreeSWITCH-Creds.txt", 0o644),
        ("a/b/my_sip_password", 0o600),
        ("a/b/c/freeswitch_credentials", 0o640),
        ("a/b/c/d/freeswitch_credentials_too_deep", 0o644),
        ("x/esl_passwords.old", 0o4755),
        ("x/unrelated.txt", 0o644),
        ("conf/vars.xml.bak", 0o644),
        ("conf/deep/er/still/sofia.conf.xml.orig", 0o600),
        ("conf/deep/notes~", 0o644),
        ("conf/vars.xml", 0o644),
    ] {
        touch(&t.join(p), mode);
    }
    std::fs::set_permissions(t.join("x"), PermissionsExt::from_mode(0o1777)).unwrap();
    // Links are not followed: a linked directory is not searched, a linked file is no file.
    symlink(t.join("a"), t.join("x/linked_dir_freeswitch_cred")).unwrap();
    symlink(
        t.join("a/FreeSWITCH-Creds.txt"),
        t.join("x/sip_passwd_link"),
    )
    .unwrap();
    let roots = [format!("{r}/a"), format!("{r}/x"), format!("{r}/missing")];
    let roots: Vec<&str> = roots.iter().map(String::as_str).collect();
    let pats = ["*freeswitch*cred*", "*sip*passw*", "*esl*passw*"];
    let conf_pats = ["*.bak", "*.orig", "*~"];
    let q = |l: &[&str]| l.iter().map(|x| sh_quote(x)).collect::<Vec<_>>().join(" ");
    let conf = format!("{r}/conf");
    let exact = format!("{r}/a/b/my_sip_password");
    let old = sh(&format!(
        "{OLD_ST}\n{{ [ -f {e} ] && echo {e}; find {roots} -maxdepth 3 -type f \\( {names} \\) -print; \
         find {conf} -type f \\( {cnames} \\) -print; }} | sort -u | st",
        e = sh_quote(&exact),
        roots = q(&roots),
        names = pats
            .iter()
            .map(|p| format!("-iname {}", sh_quote(p)))
            .collect::<Vec<_>>()
            .join(" -o "),
        conf = sh_quote(&conf),
        cnames = conf_pats
            .iter()
            .map(|p| format!("-name {}", sh_quote(p)))
            .collect::<Vec<_>>()
            .join(" -o "),
    ));
    let new = sh(&stat_files(&format!(
        "-f {} {} {}",
        sh_quote(&exact),
        find_args(3, 'i', &roots, &pats),
        find_args(0, 's', &[&conf], &conf_pats),
    )));
    assert!(
        new.contains("FreeSWITCH-Creds.txt") && new.contains("D 1777 "),
        "{new}"
    );
    assert!(
        !new.contains("too_deep") && !new.contains("unrelated") && !new.contains("link"),
        "{new}"
    );
    assert!(new.contains("F 4755 "), "{new}");
    // The same lines, each directory once (the old chain repeated a directory for every file
    // below it).
    let mut seen = std::collections::HashSet::new();
    let old: String = old
        .lines()
        .filter(|l| !l.starts_with("D ") || seen.insert(l.to_string()))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(new, old);
}

/// A directory swapped for a link while the walk runs is not followed (find's walk), and a host
/// full of matching copies gives the first 1000 and a count, not millions of lines.
#[test]
fn links_are_never_walked_and_many_matches_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path();
    std::fs::create_dir_all(t.join("walk/sub")).unwrap();
    for i in 0..1005 {
        touch(&t.join(format!("walk/sub/vars.xml.{i:04}")), 0o644);
    }
    let secret = t.join("secret");
    touch(&secret.join("vars.xml.private"), 0o600);
    symlink(&secret, t.join("walk/linked")).unwrap();
    let out = sh(&stat_files(&find_args(
        0,
        's',
        &[t.join("walk").to_str().unwrap()],
        &["*.xml.*"],
    )));
    assert!(!out.contains("private"), "{out}");
    let files = out.lines().filter(|l| l.starts_with("F ")).count();
    assert_eq!(files, 1000);
    assert!(
        out.ends_with("more 5\n"),
        "{}",
        &out[out.len().saturating_sub(200)..]
    );
    let dirs: Vec<&str> = out.lines().filter(|l| l.starts_with("D ")).collect();
    let unique: std::collections::HashSet<&&str> = dirs.iter().collect();
    assert_eq!(dirs.len(), unique.len(), "each directory once");
    // A relative or option-like root is not handed to find.
    let out = sh(&stat_files(&find_args(0, 's', &["-delete", "."], &["*"])));
    assert_eq!(out, "");
}

#[test]
fn exact_paths_homes_and_names_with_line_breaks() {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path();
    touch(&t.join("conf"), 0o600);
    touch(&t.join("bad\nname_sip_password"), 0o644);
    let f = t.join("conf");
    let out = sh(&stat_files(&format!(
        "-e {} -e {} -f {} {}",
        sh_quote(f.to_str().unwrap()),
        sh_quote(&format!("{}/none", t.display())),
        sh_quote(t.to_str().unwrap()),
        find_args(1, 'i', &[t.to_str().unwrap()], &["*sip*passw*"]),
    )));
    // The file, its directories up to /; not the directory given to -f; no split name.
    let first = out.lines().next().unwrap();
    assert!(
        first.starts_with("F 600 ") && first.ends_with("/conf"),
        "{out}"
    );
    assert!(out.lines().last().unwrap().ends_with(" /"), "{out}");
    assert!(!out.contains("bad") && !out.contains("none"), "{out}");
    // -home: every account with uid >= 1000 and a home; here none has the file.
    assert_eq!(sh(&stat_files("-home .fsfleet-test-no-such-file")), "");
    // An unknown option is an error, not a guess.
    assert!(
        !Command::new("sh")
            .arg("-c")
            .arg(stat_files("-x y"))
            .status()
            .unwrap()
            .success()
    );
    assert!(
        !STAT_PROGRAM
            .lines()
            .any(|l| l.trim_start().starts_with("use "))
    );
    assert!(!STAT_PROGRAM.contains("system") && !STAT_PROGRAM.contains("exec"));
}
