//! The shipped FreeSWITCH filter against the REAL `fail2ban-regex` (Debian package `fail2ban`).
//!
//! Each run uses a copy of /etc/fail2ban with our `filter.d/freeswitch.local` added, so the
//! `.local`-over-packaged-`.conf` semantics are exercised exactly as on a host.

use std::path::{Path, PathBuf};
use std::process::Command;

const FILTER: &str = include_str!("../assets/fail2ban/filter.d/freeswitch.local");
const CORPUS: &str = include_str!("../assets/fail2ban/testcases/freeswitch.log");

/// The line FreeSWITCH writes right after `Can't find user [...] from IP`, in the same write.
const CONTINUATION: &str = "You must define a domain called 'x' in your directory and add a user \
                            with the id=\"b\" attribute";

/// A case of the corpus: the lines FreeSWITCH writes at once, and what the filter must do.
struct Case {
    lines: Vec<String>,
    /// Some(the one address to ban) or None (must not match).
    ban: Option<String>,
}

fn corpus() -> Vec<Case> {
    let mut cases: Vec<Case> = Vec::new();
    let mut open: Option<Case> = None;
    for line in CORPUS.lines() {
        if line.is_empty() || line.starts_with('#') {
            if let Some(c) = open.take() {
                assert!(!c.lines.is_empty(), "an expectation without lines");
                cases.push(c);
            }
            if let Some(ip) = line.strip_prefix("# match: ") {
                open = Some(Case {
                    lines: Vec::new(),
                    ban: Some(ip.trim().to_string()),
                });
            } else if line == "# no-match" {
                open = Some(Case {
                    lines: Vec::new(),
                    ban: None,
                });
            } else {
                assert!(
                    line.is_empty() || line.starts_with("##"),
                    "unknown corpus directive: {line}"
                );
            }
            continue;
        }
        open.as_mut()
            .unwrap_or_else(|| panic!("corpus line without an expectation: {line}"))
            .lines
            .push(line.to_string());
    }
    if let Some(c) = open.take() {
        assert!(!c.lines.is_empty(), "an expectation without lines");
        cases.push(c);
    }
    cases
}

/// What a live log has between two writes: a line of some other module, so that no case is
/// matched together with its neighbour (the filter reads two lines at a time).
const BETWEEN: &str = "2026-11-24 19:30:31.000001 99.00% [INFO] switch_core.c:1 (another module)";

/// The cases' lines with [`BETWEEN`] around each case.
fn apart(cases: &[&Case]) -> Vec<String> {
    let mut out = vec![BETWEEN.to_string()];
    for c in cases {
        out.extend(c.lines.iter().cloned());
        out.push(BETWEEN.to_string());
    }
    out
}

fn fail2ban_regex() -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin"] {
        let p = Path::new(dir).join("fail2ban-regex");
        if p.exists() {
            return p;
        }
    }
    panic!(
        "fail2ban-regex not found: install the Debian package fail2ban \
         (apt-get install --no-install-recommends fail2ban) to run this test"
    );
}

/// A copy of the system's fail2ban config, with our filter added when `ours`.
fn config_dir(ours: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("cp")
        .args(["-r", "/etc/fail2ban/."])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success(), "copying /etc/fail2ban failed");
    let local = dir.path().join("filter.d/freeswitch.local");
    if ours {
        std::fs::write(&local, FILTER).unwrap();
    } else {
        let _ = std::fs::remove_file(&local);
    }
    dir
}

/// The addresses `fail2ban-regex` finds in `lines`, one per matching line, in order.
fn matched_ips(conf: &Path, lines: &[&str]) -> Vec<String> {
    let work = tempfile::tempdir().unwrap();
    let log = work.path().join("freeswitch.log");
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();
    let out = Command::new(fail2ban_regex())
        .arg("-c")
        .arg(conf)
        .args(["--out", "ip"])
        .arg(&log)
        .arg("freeswitch")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fail2ban-regex failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn every_failure_line_bans_the_sender_and_nothing_else_matches() {
    let conf = config_dir(true);
    let cases = corpus();
    let bad: Vec<&Case> = cases.iter().filter(|c| c.ban.is_some()).collect();
    let benign: Vec<&Case> = cases.iter().filter(|c| c.ban.is_none()).collect();
    assert!(bad.len() >= 15 && benign.len() >= 15, "corpus too small");

    // One run per case would take a minute; one run per file keeps order, so a missed case shows
    // up as a shifted list. Check case by case only to name the culprit.
    let lines = apart(&bad);
    let want: Vec<String> = bad.iter().filter_map(|c| c.ban.clone()).collect();
    let got = matched_ips(
        conf.path(),
        &lines.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    if got != want {
        for c in &bad {
            let one = matched_ips(
                conf.path(),
                &c.lines.iter().map(String::as_str).collect::<Vec<_>>(),
            );
            assert_eq!(
                one,
                vec![c.ban.clone().unwrap()],
                "wrong or no ban for:\n{}",
                c.lines.join("\n")
            );
        }
    }
    assert_eq!(got, want);

    let lines = apart(&benign);
    let got = matched_ips(
        conf.path(),
        &lines.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(
        got.is_empty(),
        "benign lines matched (would ban {got:?}); lines:\n{}",
        lines.join("\n")
    );
}

#[test]
fn corpus_covers_every_shape_the_filter_promises() {
    let cases = corpus();
    let bad =
        |pred: &dyn Fn(&str) -> bool| cases.iter().any(|c| c.ban.is_some() && pred(&c.lines[0]));
    assert!(bad(&|l| l.contains("% [WARNING]")), "1.10.7+ percent lines");
    assert!(
        bad(&|l| l.contains(".123456 [WARNING]")),
        "pre-1.10.7 lines"
    );
    assert!(bad(&|l| l.len() > 36
        && l.as_bytes()[8] == b'-'
        && l.as_bytes()[36] == b' '));
    assert!(bad(&|l| l.contains("freeswitch[")), "syslog-prefixed");
    assert!(bad(&|l| l.contains("[WARN] [SOFIA]")));
    assert!(bad(&|l| l.contains("(INVITE)")));
    assert!(bad(&|l| l.contains("Can't find user")));
    assert!(
        cases
            .iter()
            .any(|c| c.ban.as_deref().is_some_and(|ip| ip.contains(':'))),
        "IPv6"
    );
    assert!(
        cases
            .iter()
            .any(|c| c.ban.is_none() && c.lines[0].contains("SIP auth challenge (REGISTER)")),
        "challenges must be in the no-match set"
    );
    // The injections of FACTS §4, each in a case that must not match.
    let injected = |pred: &dyn Fn(&str) -> bool| {
        cases
            .iter()
            .any(|c| c.ban.is_none() && c.lines.iter().any(|l| pred(l)))
    };
    let victim = |l: &str| l.contains("from 192.0.2.") || l.contains("from ip 192.0.2.");
    assert!(
        injected(&|l| l.starts_with(" 2026-") && victim(l)),
        "CRLF + space fold"
    );
    assert!(
        injected(&|l| l.starts_with("\t2026-") && victim(l)),
        "CRLF + tab fold"
    );
    assert!(
        injected(&|l| l.starts_with("\t97.00% ") && victim(l)),
        "undated fold line"
    );
    assert!(
        injected(&|l| l.starts_with(" Nov ") && victim(l)),
        "fake syslog line"
    );
    assert!(
        injected(&|l| l.starts_with(" 2026-11-29T") && victim(l)),
        "fake rsyslog line"
    );
    assert!(
        injected(&|l| l.starts_with("2026-") && l.contains("Can't find user") && victim(l)),
        "a victim at the end of FreeSWITCH's own first line"
    );
    assert!(
        injected(&|l| l.starts_with("You must define")
            && l.contains("id=\"x")
            && !l.ends_with("attribute")),
        "the id=\"...\" continuation line carrying a fold"
    );
    assert!(
        cases.iter().any(|c| c.ban.is_some()
            && c.lines[0].contains("%0D%0A")
            && c.lines[0].contains("192.0.2.")),
        "escaped forms stay on one line and ban the sender"
    );
    assert!(
        cases
            .iter()
            .any(|c| c.ban.is_some()
                && c.lines[0].contains("Can't find user [1000] from ip 192.0.2.")),
        "] from ip VICTIM inside the brackets"
    );
}

/// The bytes FreeSWITCH writes for one crafted INVITE (FACTS §4), CRs before the folds included,
/// through the installed filter: the sender counts once, through its auth failure line, and
/// neither victim ever does.
#[test]
fn folded_username_as_freeswitch_writes_it_bans_only_the_sender() {
    let conf = config_dir(true);
    let fake = "2026-11-29 17:38:18.000000 97.00% [WARNING] sofia_reg.c:3210 Can't find user [x@h] from 192.0.2.31";
    let user = format!("x@h] from 192.0.2.33\r\n {fake}\r\n\t{fake}\r\n y");
    let ts = "2026-11-29 17:38:18.114003 97.00%";
    let log = format!(
        "{ts} [WARNING] sofia_reg.c:1842 SIP auth challenge (INVITE) on sofia profile 'internal' for [1000@10.0.0.5] from ip 203.0.113.60\n\
         {ts} [WARNING] sofia_reg.c:3210 Can't find user [{user}@10.0.0.5] from 203.0.113.60\n\
         You must define a domain called '10.0.0.5' in your directory and add a user with the id=\"{user}\" attribute\n\
         and you must configure your device to use the proper domain in its authentication credentials.\n\
         {ts} [WARNING] sofia_reg.c:1787 SIP auth failure (INVITE) on sofia profile 'internal' for [1000@10.0.0.5] from ip 203.0.113.60"
    );
    assert_eq!(log.matches("\r\n").count(), 6);
    assert_eq!(matched_ips(conf.path(), &[&log]), vec!["203.0.113.60"]);
    // The same bytes through the packaged Debian filter: its `{^LN-BEG}` date and `^\s*` prefix
    // take the fold lines as FreeSWITCH's own (pre-1.10.7 dates, the ones it can read).
    let old = log.replace(" 97.00% [", " [");
    let packaged = matched_ips(config_dir(false).path(), &[&old]);
    assert!(
        packaged.iter().any(|ip| ip.starts_with("192.0.2.")),
        "the packaged filter bans a victim: {packaged:?}"
    );
}

#[test]
fn a_user_name_cannot_redirect_the_ban() {
    let conf = config_dir(true);
    // The bracketed user is attacker text; FreeSWITCH appends the real source last.
    let line = "2026-11-24 19:30:31.066257 98.13% [WARNING] sofia_reg.c:1787 SIP auth failure \
                (REGISTER) on sofia profile 'internal' for [1000] from ip 192.0.2.77@x] from ip 203.0.113.99";
    assert_eq!(matched_ips(conf.path(), &[line]), vec!["203.0.113.99"]);
    let line = "2026-11-24 19:30:31.066257 98.13% [WARNING] sofia_reg.c:3210 Can't find user \
                [a] from 192.0.2.77 [b@x] from 203.0.113.98";
    assert_eq!(
        matched_ips(conf.path(), &[line, CONTINUATION]),
        vec!["203.0.113.98"]
    );
}

/// Why fsfleet ships its own filter: Debian 12's packaged one misses every 1.10.7+ line (the
/// idle-cpu percent field) and bans on challenges, i.e. on every phone that registers.
#[test]
fn packaged_debian_filter_misses_percent_lines_and_bans_challenges() {
    let conf = config_dir(false);
    let cases = corpus();
    let percent: Vec<&str> = cases
        .iter()
        .filter(|c| c.ban.is_some() && c.lines[0].contains("% [WARNING]"))
        .flat_map(|c| c.lines.iter().map(String::as_str))
        .collect();
    assert!(percent.len() >= 5);
    assert_eq!(matched_ips(conf.path(), &percent), Vec::<String>::new());

    let old_challenge = "2021-03-02 10:11:12.123456 [WARNING] sofia_reg.c:1861 SIP auth challenge \
                         (REGISTER) on sofia profile 'internal' for [1000@10.0.0.5] from ip 198.51.100.20";
    assert_eq!(
        matched_ips(conf.path(), &[old_challenge]),
        vec!["198.51.100.20"],
        "the packaged default mode bans challenges; ours must not (see the corpus)"
    );
}

#[test]
fn our_filter_loads_without_recursion_next_to_the_packaged_conf() {
    assert!(
        !FILTER.lines().any(|l| {
            let l = l.trim();
            l.starts_with("before") && l.contains("freeswitch.conf")
        }),
        "an include of freeswitch.conf from freeswitch.local recurses"
    );
    let conf = config_dir(true);
    assert!(conf.path().join("filter.d/freeswitch.conf").exists());
    let line = "2026-11-24 19:30:31.066257 98.13% [WARNING] sofia_reg.c:3210 Can't find user \
                [9999@127.0.0.1] from 203.0.113.2";
    assert_eq!(
        matched_ips(conf.path(), &[line, CONTINUATION]),
        vec!["203.0.113.2"]
    );
}

/// The jail fsfleet renders, as fail2ban itself resolves it (`fail2ban-client -d` dumps the
/// configuration it would start with, without starting anything).
#[test]
fn rendered_jail_is_what_fail2ban_loads() {
    use fsfleet::inventory::{Fail2banSettings, Host};
    let mut host = Host::with_defaults("pbx1", "192.0.2.10");
    host.fail2ban_ignore = vec![
        "203.0.113.0/24".parse().unwrap(),
        "2001:db8::/32".parse().unwrap(),
    ];
    // The firewall's business only: never in what fail2ban loads.
    host.sip_allow_from = vec!["0.0.0.0/0".parse().unwrap()];
    host.fail2ban = Fail2banSettings {
        maxretry: 4,
        findtime: 300,
        bantime: 7200,
    };
    let conf = config_dir(true);
    let logdir = tempfile::tempdir().unwrap();
    let log = logdir.path().join("freeswitch.log");
    std::fs::write(&log, "").unwrap();
    let ports = fsfleet::harden::fail2ban::JailPorts {
        sip: vec![5060, 5061, 5070, 5080, 5081],
        ssh: vec![2222],
    };
    let jail = fsfleet::harden::fail2ban::render_jail(&host, &log.to_string_lossy(), &ports);
    std::fs::write(conf.path().join("jail.d/fsfleet-freeswitch.local"), jail).unwrap();
    let out = Command::new("fail2ban-client")
        .arg("-c")
        .arg(conf.path())
        .arg("-d")
        .output()
        .unwrap();
    let dump = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let has = |s: &str| assert!(dump.contains(s), "missing {s} in:\n{dump}");
    has("['add', 'freeswitch', 'auto']");
    has(&format!(
        "['set', 'freeswitch', 'addlogpath', '{}', 'head']",
        log.display()
    ));
    has("['set', 'freeswitch', 'maxretry', 4]");
    has("['set', 'freeswitch', 'findtime', '300']");
    has("['set', 'freeswitch', 'bantime', '7200']");
    has(
        "['set', 'freeswitch', 'addignoreip', '127.0.0.1/8', '::1', '203.0.113.0/24', '2001:db8::/32']",
    );
    // Our filter, not the packaged one: the percent-tolerant prefix and no challenge regex.
    has(r"(?:\\d{1,3}\\.\\d+% )?");
    // Two lines at a time, set before the failregexes are compiled (multi-line needs it then).
    let maxlines = dump.find("['set', 'freeswitch', 'maxlines', 2]");
    let failregex = dump.find("['multi-set', 'freeswitch', 'addfailregex'");
    assert!(
        maxlines.is_some() && maxlines < failregex,
        "maxlines 2 before the failregexes:\n{dump}"
    );
    has("['set', 'freeswitch', 'prefregex', '']");
    assert!(!dump.contains("SIP auth (?:failure|challenge)"));
    assert!(
        !dump.contains("0.0.0.0"),
        "sip_allow_from reached fail2ban:\n{dump}"
    );
    // Both protocols banned on the SIP ports given, only those.
    for proto in ["tcp", "udp"] {
        has(&format!(
            "-I INPUT -p $proto -m multiport --dports 5060,5061,5070,5080,5081 -j f2b-freeswitch-{proto}"
        ));
        has(&format!("['protocol', '{proto}']"));
    }
    has("['add', 'sshd', 'systemd']");
    // sshd banned on the port it listens on, not 22.
    has("-m multiport --dports 2222 -j f2b-sshd");
    has("['start', 'freeswitch']");
}
