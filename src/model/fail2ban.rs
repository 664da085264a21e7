//! fail2ban's state, one representation for harden and audit: installed, the service as systemd
//! sees it, the running server, its jails (and, when asked, each jail's counters and files), and
//! the proof that the `freeswitch` filter matches an auth failure in the host's log format.
//!
//! One snippet gathers the state ([`state_snippet`], section [`STATE_SECTION`]) for both
//! commands; harden asks only which jails run (answered without Python when the server's
//! threads and log are conclusive), the audit asks the status of its jails on the server's
//! socket with perl, its pickled answers read on the controller ([`super::pickle`]), and only
//! when that fails through ONE `fail2ban-client -i` start (each `fail2ban-client` is a Python
//! start: about 50-90 ms of host CPU).
//!
//! The filter proof (`fail2ban-regex`, about 95 ms of host CPU) depends only on the filter
//! files, fail2ban's version and the log format; the host hashes those and runs the proof only
//! when the controller holds no proof for that hash: its own for that host ([`ProofCache`]) or
//! one fsfleet's test suite made ([`PROVEN`]).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::harden::HostFacts;
use crate::ssh::sh_quote;

/// The section of [`state_snippet`].
pub const STATE_SECTION: &str = "fail2ban_state";
/// The section of [`proof_snippet`].
pub const PROOF_SECTION: &str = "fail2ban_proof";
/// fail2ban's own log, where the server names each jail it starts and stops.
pub const SERVER_LOG: &str = "/var/log/fail2ban.log";

/// The crafted auth-failure line of the audit's proof uses this TEST-NET-1 address (RFC 5737):
/// it can never be a real peer, so proving the filter bans nobody.
pub const PROBE_IP: &str = "192.0.2.77";

/// Sets `p` to the PID of the running fail2ban-server, or to nothing: shell builtins only, so
/// a host without fail2ban running is told apart without starting Python.
pub fn server_pid_snippet(proc_root: &str) -> String {
    format!(
        "p=''; for f in {}/[0-9]*/comm; do read -r n <\"$f\" 2>/dev/null || continue; \
         if [ \"$n\" = fail2ban-server ]; then p=${{f%/comm}}; p=${{p##*/}}; break; fi; done",
        sh_quote(proc_root)
    )
}

/// Prints `jails A, B` (the running jails, as `fail2ban-client status` lists them).
///
/// Asking fail2ban-client costs a Python start (about 50 ms of host CPU, most of a no-change
/// run's budget), so the running server answers first, without Python: its process
/// (`fail2ban-server`) has a filter and an action thread per running jail, named `f2b/f.JAIL`
/// and `f2b/a.JAIL` (cut to 15 characters by the kernel), and its log names each jail it started
/// or stopped with its PID (`fail2ban.jail [PID]: INFO Jail 'freeswitch' started`). A jail counts
/// as running when the server's own log says it started it last and both threads exist; the
/// names come from the log, so a cut thread name never stands for a longer jail. When that is
/// not conclusive (no server, no such log lines, a missing thread), fail2ban-client is asked.
pub fn jails_snippet(proc_root: &str, log: &str) -> String {
    let find_server = server_pid_snippet(proc_root);
    let proc_root = sh_quote(proc_root);
    let log = sh_quote(log);
    format!(
        "{find_server}\n\
         j=''\n\
         if [ -n \"$p\" ]; then\n\
         th=$(cat {proc_root}/\"$p\"/task/*/comm 2>/dev/null | tr '\\n' '|')\n\
         j=$(cat {log}.1 {log} 2>/dev/null | awk -v p=\"[$p]:\" -v th=\"|$th\" '\
         $3 == \"fail2ban.jail\" && $4 == p && $6 == \"Jail\" && ($8 == \"started\" || $8 == \"stopped\") {{ \
         n = $7; gsub(\"\\047\", \"\", n); up[n] = ($8 == \"started\") }} \
         END {{ ok = 1; s = \"\"; for (n in up) if (up[n]) {{ \
         if (!index(th, \"|\" substr(\"f2b/f.\" n, 1, 15) \"|\") || !index(th, \"|\" substr(\"f2b/a.\" n, 1, 15) \"|\")) ok = 0; \
         s = s (s == \"\" ? \"\" : \", \") n }} \
         if (ok && s != \"\") print s }}')\n\
         fi\n\
         if [ -n \"$j\" ]; then echo \"jails $j\"; \
         else timeout 10 fail2ban-client status 2>/dev/null | sed -n 's/.*Jail list:[[:space:]]*/jails /p'; fi"
    )
}

/// Sets `out` to the status of each of `jails` from ONE fail2ban-client start (its interactive
/// mode reads the commands from stdin), each answer after an `@jail:NAME` line; a client that
/// gives no such line (no interactive mode) is asked jail by jail. Each start waits at most
/// `secs`. Parse `out` with [`Fail2banState::parse`] after [`answers_snippet`].
pub fn status_query(jails: &[&str], secs: u32) -> String {
    // `echo` is answered by the server itself, so each answer follows its own marker even when
    // a status fails (an unknown jail prints its error on stderr).
    let mut cmds = String::new();
    let mut one_by_one = String::new();
    for j in jails {
        let j = sh_quote(j);
        cmds.push_str(&format!("echo @jail:{j}\\nstatus {j}\\n"));
        one_by_one.push_str(&format!(
            "echo @jail:{j}; timeout {secs} fail2ban-client status {j}; "
        ));
    }
    format!(
        "out=$(printf '{cmds}exit\\n' | timeout {secs} fail2ban-client -i 2>/dev/null | sed 's/^fail2ban> //')\n\
         case $out in *@jail:*) ;; *) out=$({one_by_one}true) ;; esac"
    )
}

/// Prints the answers in `$out` (see [`status_query`]) as [`Fail2banState::parse`] reads them:
/// the `@jail NAME` markers, the status lines, and `@exists PATH` / `@missing PATH` for each file
/// of each File list.
pub fn answers_snippet() -> &'static str {
    "printf '%s\\n' \"$out\" | sed -n 's/^@jail:/@jail /p; /^Status for the jail:/p; /^[|` ]/p'\n\
     printf '%s\\n' \"$out\" | sed -n 's/.*File list:[[:space:]]*//p' | tr ' \\t' '\\n\\n' | \
     while IFS= read -r f; do [ -n \"$f\" ] || continue; if [ -f \"$f\" ]; then echo \"@exists $f\"; else echo \"@missing $f\"; fi; done"
}

/// fail2ban-server's socket (its default path: `fail2ban.conf`'s `socket`, which
/// fail2ban-client reads too; a server elsewhere is asked through fail2ban-client).
pub const SERVER_SOCKET: &str = "/var/run/fail2ban/fail2ban.sock";

/// The jails' status asked on fail2ban-server's socket by perl (perl-base, on every Debian and
/// Ubuntu host; no module is loaded: a module costs milliseconds of host CPU) instead of
/// fail2ban-client (a Python start, about 90 ms of host CPU). The protocol is fail2ban's own
/// (`fail2ban/client/csocket.py`): the command's words pickled, then `<F2B_END_COMMAND>`; the
/// answer is a pickle ended the same way. perl does not read the pickle: it prints it in hex
/// (`@f2b JAIL HEX`), for the controller's bounded reader ([`super::pickle`]), and `@exists` /
/// `@missing` for every string in it that is an absolute path (the File list's logs among
/// them). It prints nothing unless every jail answered (within 10 s in all), so a failure falls
/// back to fail2ban-client whole.
fn socket_query(sock: &str, jails: &[&str]) -> String {
    const PROGRAM: &str = r#"$SIG{ALRM} = sub { exit 9 }; alarm 10;
my $sock = shift @ARGV;
socket(S, 1, 1, 0) or exit 8;
connect(S, pack('S', 1) . $sock . "\0") or exit 8;
my $end = '<F2B_END_COMMAND>'; my $out = ''; my %p;
while (@ARGV) {
  my ($j, $q) = splice(@ARGV, 0, 2);
  defined(syswrite(S, pack('H*', $q) . $end)) or exit 8;
  my $m = '';
  while (index($m, $end) < 0) {
    my $n = sysread(S, $m, 65536, length $m);
    exit 8 unless $n;
    exit 8 if length($m) > 1048576;
  }
  $m = substr($m, 0, index($m, $end));
  $out .= "\@f2b $j " . unpack('H*', $m) . "\n";
  while ($m =~ /(?:\x8c([\x00-\xff])|X([\x00-\xff]{4}))/g) {
    my $l = defined $1 ? ord($1) : unpack('V', $2);
    next if $l > 4096;
    my $s = substr($m, pos($m), $l);
    $p{$s} = 1 if $s =~ m{\A/[^\n]*\z};
  }
}
syswrite(S, '<F2B_CLOSE_COMMAND>' . $end);
$out .= (-f $_ ? '@exists ' : '@missing ') . "$_\n" for sort keys %p;
print $out;
"#;
    let mut args = vec![sh_quote(sock)];
    for j in jails {
        let req: String = super::pickle::dumps_str_list(&["status", j])
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        args.push(sh_quote(j));
        args.push(req);
    }
    format!("perl -e {} {}", sh_quote(PROGRAM), args.join(" "))
}

/// The status of each of `jails`: from the server's socket ([`socket_query`]), else from
/// fail2ban-client (see [`status_query`] and [`answers_snippet`]). No fail2ban-server process
/// (`$p` empty, see [`server_pid_snippet`]): nothing is asked.
fn jail_status_snippet(sock: &str, jails: &[&str]) -> String {
    format!(
        "if [ -n \"$p\" ] && command -v fail2ban-client >/dev/null; then\n\
         if ! {}; then\n{}\n{}\nfi\nfi",
        socket_query(sock, jails),
        status_query(jails, 10),
        answers_snippet()
    )
}

/// The state snippet: `installed yes`, `server PID`, then, with no `detail` (harden's form),
/// `active X` / `enabled Y` (systemd's words) and `jails A, B` from [`jails_snippet`] (no Python
/// when conclusive); with `detail` (the audit's form), the status of each of those jails from
/// one fail2ban-client start (see [`jail_status_snippet`]), and no `systemctl`: the base facts'
/// `systemctl is-active` already says whether fail2ban is active (see
/// [`Fail2banState::from_facts`]).
pub fn state_snippet(detail: &[&str]) -> String {
    let installed = "command -v fail2ban-client >/dev/null && echo 'installed yes'";
    if detail.is_empty() {
        format!(
            "{installed}\n\
             v=$fsfleet_sd2_ActiveState; [ -z \"$v\" ] || echo \"active $v\"\n\
             v=$fsfleet_sd2_UnitFileState; [ -z \"$v\" ] || echo \"enabled $v\"\n\
             {}\n[ -z \"$p\" ] || echo \"server $p\"\ntrue",
            jails_snippet("/proc", SERVER_LOG)
        )
    } else {
        format!(
            "{installed}\n{}\n[ -z \"$p\" ] || echo \"server $p\"\n{}\ntrue",
            server_pid_snippet("/proc"),
            jail_status_snippet(SERVER_SOCKET, detail)
        )
    }
}

/// A log file a jail reads, and whether it exists on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFile {
    pub path: String,
    pub exists: bool,
}

/// What `fail2ban-client status JAIL` said of a running jail.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JailStatus {
    pub currently_failed: Option<u64>,
    pub total_failed: Option<u64>,
    pub currently_banned: Option<u64>,
    pub total_banned: Option<u64>,
    /// The File list (empty for a journal backend).
    pub files: Vec<LogFile>,
    /// The Journal matches of a systemd backend.
    pub journal: Option<String>,
    pub banned: Vec<String>,
}

impl JailStatus {
    /// The answer of `fail2ban-client status JAIL` (files not checked: all `exists: false`).
    pub fn parse(text: &str) -> JailStatus {
        let mut s = JailStatus::default();
        for line in text.lines() {
            status_line(&mut s, line);
        }
        s
    }

    /// The File list as fail2ban prints it (space-separated).
    pub fn file_list(&self) -> String {
        self.files
            .iter()
            .map(|f| f.path.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The most jails one state section may answer for (fsfleet asks two).
const MAX_JAILS_ASKED: usize = 8;

/// fail2ban on one host, as the state snippet saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fail2banState {
    /// fail2ban-client is on the PATH.
    pub installed: bool,
    /// systemd's ActiveState is `active`.
    pub active: bool,
    /// systemd's UnitFileState is `enabled`.
    pub enabled: bool,
    /// The PID of the running fail2ban-server.
    pub server: Option<u32>,
    /// The running jails, when the snippet listed them (harden's form).
    pub jails: Vec<String>,
    /// The jails asked in detail (the audit's form) that answered: running.
    pub status: BTreeMap<String, JailStatus>,
    /// The jails asked in detail that did not answer: not running.
    pub not_running: Vec<String>,
}

impl Fail2banState {
    /// Parse the state snippet's output. Unknown lines are ignored (host text, never trusted).
    pub fn parse(text: &str) -> Fail2banState {
        let mut st = Fail2banState::default();
        let mut asked: Vec<String> = Vec::new();
        let mut cur: Option<(String, Option<JailStatus>)> = None;
        let mut files: BTreeMap<String, bool> = BTreeMap::new();
        let flush = |cur: &mut Option<(String, Option<JailStatus>)>, st: &mut Fail2banState| {
            if let Some((name, status)) = cur.take() {
                match status {
                    Some(s) => {
                        st.status.insert(name, s);
                    }
                    None => st.not_running.push(name),
                }
            }
        };
        for line in text.lines() {
            let (k, v) = line.split_once(' ').unwrap_or((line, ""));
            match k {
                "installed" => st.installed = v.trim() == "yes",
                "active" => st.active = v.trim() == "active",
                "enabled" => st.enabled = v.trim() == "enabled",
                "server" => st.server = v.trim().parse().ok(),
                "jails" => {
                    st.jails = v
                        .split(',')
                        .map(|j| j.trim().to_string())
                        .filter(|j| !j.is_empty())
                        .collect()
                }
                "@jail" => {
                    flush(&mut cur, &mut st);
                    asked.push(v.trim().to_string());
                    cur = Some((v.trim().to_string(), None));
                }
                "@exists" | "@missing" => {
                    files.insert(v.to_string(), k == "@exists");
                }
                "@f2b" => {
                    // One answer per jail, and only as many as fsfleet ever asks: each is
                    // decoded, and a host must not make the controller decode thousands.
                    let (name, hex) = v.split_once(' ').unwrap_or((v, ""));
                    if asked.len() >= MAX_JAILS_ASKED || asked.iter().any(|a| a == name) {
                        continue;
                    }
                    flush(&mut cur, &mut st);
                    asked.push(name.to_string());
                    cur = Some((name.to_string(), socket_answer(hex)));
                }
                _ => {
                    let Some((name, status)) = cur.as_mut() else {
                        continue;
                    };
                    if let Some(j) = line.strip_prefix("Status for the jail:") {
                        if j.trim() == name {
                            *status = Some(JailStatus::default());
                        }
                        continue;
                    }
                    if let Some(s) = status.as_mut() {
                        status_line(s, line);
                    }
                }
            }
        }
        flush(&mut cur, &mut st);
        for s in st.status.values_mut() {
            for f in &mut s.files {
                f.exists = files.get(&f.path).copied().unwrap_or(false);
            }
        }
        // In the detailed form the answers are the list of running jails.
        if !asked.is_empty() && st.jails.is_empty() {
            st.jails = st.status.keys().cloned().collect();
        }
        st
    }

    /// The state in the facts; an empty state when the snippet did not run. Without an
    /// `active` line (the audit's form asks systemd once, in the base facts), `active` is the
    /// base facts' `systemctl is-active fail2ban`.
    pub fn from_facts(f: &HostFacts) -> Fail2banState {
        let text = f.section(STATE_SECTION);
        let mut st = Fail2banState::parse(text);
        if !text.lines().any(|l| l.starts_with("active ")) {
            st.active = f.base.fail2ban_active;
        }
        st
    }

    /// Whether the snippet ran (a host section exists for it).
    pub fn gathered(f: &HostFacts) -> bool {
        f.section_status(STATE_SECTION).is_some()
    }

    /// Whether jail `name` runs.
    pub fn runs(&self, name: &str) -> bool {
        self.jails.iter().any(|j| j == name)
    }
}

/// fsfleet's jail file (harden writes it, `JAIL_PATH` of the fail2ban step): where fail2ban
/// finds the settings of the `freeswitch` and `sshd` jails.
pub const JAIL_FILE: &str = "/etc/fail2ban/jail.d/fsfleet-freeswitch.local";

/// The settings of one jail in a jail file (fail2ban's INI: `key = value`, indented lines
/// continue the value).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JailSettings {
    pub enabled: Option<bool>,
    /// `port`: numbers ascending; an entry that is no number (a service name) is kept in
    /// `port_names`.
    pub ports: Vec<u16>,
    pub port_names: Vec<String>,
    pub logpath: Option<String>,
    pub ignoreip: Vec<String>,
    pub maxretry: Option<u32>,
    pub backend: Option<String>,
}

impl JailSettings {
    /// The `[name]` section of a jail file, None when it has none.
    pub fn parse(text: &str, name: &str) -> Option<JailSettings> {
        let header = format!("[{name}]");
        let mut inside = false;
        let mut found = false;
        let mut values: BTreeMap<String, String> = BTreeMap::new();
        let mut last: Option<String> = None;
        for line in text.lines() {
            let t = line.trim();
            if t.starts_with('#') || t.starts_with(';') || t.is_empty() {
                continue;
            }
            if t.starts_with('[') {
                inside = t == header;
                found |= inside;
                last = None;
                continue;
            }
            if !inside {
                continue;
            }
            if line.starts_with([' ', '\t']) {
                if let Some(v) = last.as_ref().and_then(|k| values.get_mut(k)) {
                    v.push(' ');
                    v.push_str(t);
                }
                continue;
            }
            if let Some((k, v)) = t.split_once('=') {
                let k = k.trim().to_string();
                values.insert(k.clone(), v.trim().to_string());
                last = Some(k);
            }
        }
        if !found {
            return None;
        }
        let mut j = JailSettings {
            enabled: values
                .get("enabled")
                .map(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "yes" | "1" | "on")),
            logpath: values.get("logpath").cloned(),
            ignoreip: values
                .get("ignoreip")
                .map(|v| {
                    v.split([' ', ','])
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default(),
            maxretry: values.get("maxretry").and_then(|v| v.parse().ok()),
            backend: values.get("backend").cloned(),
            ..JailSettings::default()
        };
        for p in values
            .get("port")
            .map(String::as_str)
            .unwrap_or("")
            .split(',')
        {
            let p = p.trim();
            match p.parse::<u16>() {
                Ok(n) => j.ports.push(n),
                Err(_) if !p.is_empty() => j.port_names.push(p.to_string()),
                Err(_) => {}
            }
        }
        j.ports.sort_unstable();
        j.ports.dedup();
        Some(j)
    }

    /// The settings of jail `name` in fsfleet's jail file as the facts read it (None: no file,
    /// or no such jail in it).
    pub fn from_facts(f: &HostFacts, name: &str) -> Option<JailSettings> {
        JailSettings::parse(f.file_text(JAIL_FILE)?, name)
    }
}

/// The status of a jail from the server's pickled answer (`@f2b` lines, see [`socket_query`]):
/// `(0, [(group, [(label, value), ...]), ...])` read like fail2ban-client's lines (the same
/// labels); an error answer (`(1, exception)`, an unknown jail) or an unreadable one is None,
/// as a jail that did not answer.
fn socket_answer(hex: &str) -> Option<JailStatus> {
    use super::pickle::{Value, loads};
    if !hex.len().is_multiple_of(2) || hex.len() > 4 << 20 {
        return None;
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    let answer = loads(&bytes).ok()?;
    let [code, groups] = answer.items()? else {
        return None;
    };
    if *code != Value::Int(0) {
        return None;
    }
    let mut s = JailStatus::default();
    for group in groups.items()? {
        let Some([_, entries]) = group.items() else {
            continue;
        };
        for entry in entries.items().unwrap_or_default() {
            let Some([label, value]) = entry.items() else {
                continue;
            };
            let Some(label) = label.as_text() else {
                continue;
            };
            let value = match value {
                Value::Int(n) => n.to_string(),
                other => match other.items() {
                    Some(list) => list
                        .iter()
                        .filter_map(Value::as_text)
                        .collect::<Vec<_>>()
                        .join(" "),
                    None => other.as_text().unwrap_or("").to_string(),
                },
            };
            // One line, as the text answer would have it.
            if !label.contains(['\n', ':']) && !value.contains('\n') {
                status_line(&mut s, &format!("{label}:\t{value}"));
            }
        }
    }
    Some(s)
}

/// One line of a `fail2ban-client status JAIL` answer.
fn status_line(s: &mut JailStatus, line: &str) {
    let Some((label, value)) = line.split_once(':') else {
        return;
    };
    let label = label.trim_start_matches(['|', '`', '-', ' ']).trim();
    let value = value.trim();
    let num = || value.parse::<u64>().ok();
    match label {
        "Currently failed" => s.currently_failed = num(),
        "Total failed" => s.total_failed = num(),
        "Currently banned" => s.currently_banned = num(),
        "Total banned" => s.total_banned = num(),
        "File list" => {
            s.files = value
                .split_whitespace()
                .map(|p| LogFile {
                    path: p.to_string(),
                    exists: false,
                })
                .collect()
        }
        "Journal matches" => s.journal = Some(value.to_string()),
        "Banned IP list" => s.banned = value.split_whitespace().map(String::from).collect(),
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// The filter proof

/// The files the `freeswitch` filter is read from (fail2ban's .conf/.local/.d order, and the
/// common.conf it includes): the proof's result depends on nothing else on the host besides
/// fail2ban's version and the log format.
/// Relative to fail2ban's configuration directory.
pub const FILTER_INPUTS: &[&str] = &[
    "filter.d/freeswitch.conf",
    "filter.d/freeswitch.local",
    "filter.d/freeswitch.d/*.conf",
    "filter.d/freeswitch.d/*.local",
    "filter.d/common.conf",
    "filter.d/common.local",
    "filter.d/common.d/*.conf",
    "filter.d/common.d/*.local",
];
/// fail2ban's configuration directory (the one fail2ban-regex reads by default).
pub const CONF_DIR: &str = "/etc/fail2ban";

/// Bumped when the crafted line or the way it is tested changes: old proofs then no longer apply.
const PROOF_VERSION: &str = "fsfleet-f2b-proof-4";

/// A proof fsfleet's own test suite made with `fail2ban-regex` on a testbed host: for these
/// exact filter files, this fail2ban package version and this crafted line (one [`PROOF_VERSION`]
/// key), fail2ban-regex said `lines`. A host whose key is one of these is not asked to run
/// fail2ban-regex (about 100 ms of its CPU, a Python start) on its first audit: its own filter
/// files and version hash to the key, so the result is the one fail2ban-regex gives there.
/// No host's answer ever enters this table (a host can vouch only for itself, see
/// [`ProofCache`]); `tests/fail2ban_ports_e2e.rs` re-proves every entry for the testbed's
/// fail2ban version with the real fail2ban-regex and prints the lines to add when a Debian
/// update brings a new version. `fsfleet audit --reprove` runs the proof on every host anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proven {
    pub key: &'static str,
    pub lines: &'static str,
    /// fail2ban's Debian package version.
    pub fail2ban: &'static str,
    /// Which filter files: Debian's `freeswitch.conf` alone, or with fsfleet's `.local`.
    pub filter: &'static str,
    /// The crafted line's format: `percent` (FreeSWITCH 1.10.7+, and logs with no dated line
    /// yet) or `plain`.
    pub format: &'static str,
}

/// See [`Proven`]. Debian 12's fail2ban 1.0.2-2 and Debian 13's 1.1.0-8, each with Debian's
/// filter alone (a fresh host: it misses the 1.10.7+ format) and with fsfleet's.
pub const PROVEN: &[Proven] = &[
    Proven {
        key: "df6ffd73bc4e058088c5df4ad410b2719adb22c68f241c8916d901d5dde0a9b6",
        lines: "1 lines, 0 ignored, 0 matched, 1 missed",
        fail2ban: "1.0.2-2",
        filter: "Debian's freeswitch.conf",
        format: "percent",
    },
    Proven {
        key: "ce2cd9c184818186d4c520030a4ea3275dbef51f9d2f7e33e72af953955efb7d",
        lines: "1 lines, 0 ignored, 1 matched, 0 missed",
        fail2ban: "1.0.2-2",
        filter: "Debian's freeswitch.conf",
        format: "plain",
    },
    Proven {
        key: "75564588be04f2249d4c2db0a4b3051e1ce0e4f75fad999b1963c703849dded4",
        lines: "1 lines, 0 ignored, 1 matched, 0 missed",
        fail2ban: "1.0.2-2",
        filter: "fsfleet's freeswitch.local",
        format: "percent",
    },
    Proven {
        key: "ac610978a899f569b21eb22edacbc40c6a42653faa91de58150dd895317eb63d",
        lines: "1 lines, 0 ignored, 1 matched, 0 missed",
        fail2ban: "1.0.2-2",
        filter: "fsfleet's freeswitch.local",
        format: "plain",
    },
    Proven {
        key: "4b075a24b9797451de6644e5fe1373e28a52993298374dea72e10f102c84dc40",
        lines: "1 lines, 0 ignored, 0 matched, 1 missed",
        fail2ban: "1.1.0-8",
        filter: "Debian's freeswitch.conf",
        format: "percent",
    },
    Proven {
        key: "f278fb8472f5007e05478ff991405eef2def8f53647c8691df525f81cf0b1717",
        lines: "1 lines, 0 ignored, 1 matched, 0 missed",
        fail2ban: "1.1.0-8",
        filter: "Debian's freeswitch.conf",
        format: "plain",
    },
    Proven {
        key: "9955e5fe9c10b46b67e61145708c7f4eb7d4bb9d18789c2dec2c952efadc4ead",
        lines: "1 lines, 0 ignored, 1 matched, 0 missed",
        fail2ban: "1.1.0-8",
        filter: "fsfleet's freeswitch.local",
        format: "percent",
    },
    Proven {
        key: "e66ce01f3ed9d22072318027559c7aee6f9433c258c4b660450afcb3681b678c",
        lines: "1 lines, 0 ignored, 1 matched, 0 missed",
        fail2ban: "1.1.0-8",
        filter: "fsfleet's freeswitch.local",
        format: "plain",
    },
];

/// The proof snippet: finds the log the freeswitch jail reads (its `logpath` in the jail files,
/// else the first of `default_logs` that exists), tells its format by its newest dated line,
/// crafts an auth failure from [`PROBE_IP`] in that format, and runs `fail2ban-regex` on it
/// with the `freeswitch` filter. Prints `log PATH`, `format percent|plain|unknown`, `line ...`,
/// `key HASH` and fail2ban-regex's `Lines:` (or error) line; status 3 without fail2ban-regex.
///
/// `key` hashes what the result depends on: [`FILTER_INPUTS`] (their `sha256sum` lines: names
/// relative to the configuration directory, and contents), fail2ban's package version and the
/// crafted line without its time stamp (the time is taken only when the proof runs). When it
/// equals `known` (the key the controller holds a proof for, for this host) or, with `table`,
/// one of [`PROVEN`]'s keys, the snippet prints `cached KEY` instead of running fail2ban-regex.
/// Without a package version (fail2ban not from dpkg) there is no key and the proof always runs.
pub fn proof_snippet(default_logs: &[String], known: Option<&str>, table: bool) -> String {
    proof_snippet_in(CONF_DIR, default_logs, known, table)
}

/// [`proof_snippet`] with the jail and filter files read from `conf` (tests use a copy).
pub fn proof_snippet_in(
    conf: &str,
    default_logs: &[String],
    known: Option<&str>,
    table: bool,
) -> String {
    let logs = default_logs
        .iter()
        .map(|l| sh_quote(l))
        .collect::<Vec<_>>()
        .join(" ");
    // Only hex keys ever reach the script (the cache file is the controller's, but a mangled
    // one must not turn into shell text).
    let mut known: Vec<&str> = known.filter(|k| is_key(k)).into_iter().collect();
    if table {
        known.extend(PROVEN.iter().map(|p| p.key).filter(|k| is_key(k)));
    }
    let known = if known.is_empty() {
        // A pattern no 64-digit hex key matches.
        "none".to_string()
    } else {
        known.join("|")
    };
    // Globs stay outside the quotes so the host's shell expands them; relative names, so a
    // copy of the directory (the tests') hashes the same.
    let inputs = FILTER_INPUTS.join(" ");
    format!(
        "command -v fail2ban-regex >/dev/null || exit 3\n\
         e={conf}\n\
         set --; for f in \"$e\"/jail.conf \"$e\"/jail.d/*.conf \"$e\"/jail.local \"$e\"/jail.d/*.local; do [ -f \"$f\" ] && set -- \"$@\" \"$f\"; done\n\
         log=''; [ $# -eq 0 ] || log=$(awk '/^\\[/ {{ s = ($0 ~ /^\\[freeswitch\\][[:space:]]*$/) }} s && /^logpath[[:space:]]*=/ {{ sub(/^logpath[[:space:]]*=[[:space:]]*/, \"\"); p = $1 }} END {{ if (p !~ /%\\(/) print p }}' \"$@\")\n\
         [ -f \"$log\" ] || log=''\n\
         if [ -z \"$log\" ]; then for l in {logs}; do [ -f \"$l\" ] && {{ log=$l; break; }}; done; fi\n\
         echo \"log $log\"\n\
         fmt=''; [ -z \"$log\" ] || fmt=$(tail -n 500 \"$log\" | sed -En '/^([0-9a-f-]{{36}} )?[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}} /h; ${{x; /^$/{{s/.*/unknown/p;q}}; /^([0-9a-f-]{{36}} )?[0-9-]+ [0-9:.]+ [0-9]+\\.[0-9]+% /{{s/.*/percent/p;q}}; s/.*/plain/p}}')\n\
         case $fmt in percent) pct=' 97.50%' ;; plain) pct='' ;; *) fmt=unknown; pct=' 97.50%' ;; esac\n\
         echo \"format $fmt\"\n\
         tail=\"$pct [WARNING] sofia_reg.c:1787 SIP auth failure (REGISTER) on sofia profile 'internal' for [1000@192.0.2.10] from ip {PROBE_IP}\"\n\
         v=''; while read -r n st ver; do [ \"$n\" = fail2ban ] && [ \"$st\" = installed ] && v=$ver; done <<FSFLEET_PKG_EOF\n\
         {pkgs}\n\
         FSFLEET_PKG_EOF\n\
         k=''\n\
         if [ -n \"$v\" ] && cd \"$e\"; then set --; for f in {inputs}; do [ -f \"$f\" ] && set -- \"$@\" \"$f\"; done\n\
         h=''; [ $# -eq 0 ] || h=$(sha256sum -- \"$@\")\n\
         k=$(sha256sum <<FSFLEET_KEY_EOF\n\
         {PROOF_VERSION}\n\
         $v\n\
         $tail\n\
         $h\n\
         FSFLEET_KEY_EOF\n\
         ); k=${{k%% *}}; cd /; fi\n\
         case $k in {known}) echo \"cached $k\"; exit 0 ;; esac\n\
         [ -z \"$k\" ] || echo \"key $k\"\n\
         line=\"$(date '+%Y-%m-%d %H:%M:%S').000000$tail\"\n\
         echo \"line $line\"\n\
         timeout 30 fail2ban-regex --config \"$e\" \"$line\" freeswitch | grep -E '^Lines:|ERROR|Error|No section'",
        conf = sh_quote(conf),
        pkgs = crate::facts::PACKAGES_VAR,
    )
}

fn is_key(k: &str) -> bool {
    k.len() == 64 && k.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The proof as the snippet printed it (with a cached result filled in, see [`Proof::resolve`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Proof {
    pub log: String,
    /// `percent`, `plain` or `unknown`.
    pub format: String,
    /// What the result depends on, hashed on the host (see [`proof_snippet`]).
    pub key: Option<String>,
    /// fail2ban-regex's `Lines:` summary (`1 lines, 0 ignored, 1 matched, 0 missed`).
    pub lines: Option<String>,
    /// The error line fail2ban-regex printed instead, if any.
    pub error: Option<String>,
    /// The result came from the controller's cache: when that proof was made.
    pub cached_at: Option<String>,
    /// The result came from fsfleet's own proofs ([`PROVEN`]).
    pub proven: Option<&'static Proven>,
}

/// Why the proof has no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("fail2ban-regex is not installed (fail2ban is missing)")]
    NotInstalled,
    #[error("the fail2ban-regex probe did not run (status {0:?})")]
    NotRun(Option<i32>),
    #[error(
        "the host said its fail2ban-regex proof is cached, for a key the controller holds no proof for"
    )]
    UnknownCached,
}

impl Proof {
    /// Parse the proof section (`text`, exit `status`); a `cached KEY` answer takes its result
    /// from `cached` when that is the proof for the same key.
    pub fn resolve(
        text: &str,
        status: Option<i32>,
        cached: Option<&CachedProof>,
    ) -> Result<Proof, ProofError> {
        match status {
            Some(3) => return Err(ProofError::NotInstalled),
            Some(0) | Some(1) => {}
            other => return Err(ProofError::NotRun(other)),
        }
        let mut p = Proof::default();
        for l in text.lines() {
            let (k, v) = l.split_once(' ').unwrap_or((l, ""));
            match k {
                "log" => p.log = v.trim().to_string(),
                "format" => p.format = v.trim().to_string(),
                "key" if is_key(v.trim()) => p.key = Some(v.trim().to_string()),
                "cached" => {
                    let k = v.trim();
                    // The host's own proof first: it was made there.
                    match (cached, PROVEN.iter().find(|p| p.key == k)) {
                        (Some(c), _) if c.key == k => {
                            p.key = Some(c.key.clone());
                            p.lines = Some(c.lines.clone());
                            p.cached_at = Some(c.proved_at.clone());
                        }
                        (_, Some(known)) => {
                            p.key = Some(known.key.to_string());
                            p.lines = Some(known.lines.to_string());
                            p.proven = Some(known);
                        }
                        _ => return Err(ProofError::UnknownCached),
                    }
                }
                _ if l.starts_with("Lines:") && p.lines.is_none() => {
                    p.lines = Some(l.trim_start_matches("Lines:").trim().to_string())
                }
                _ if (l.contains("rror") || l.contains("No section")) && p.error.is_none() => {
                    p.error = Some(l.to_string())
                }
                _ => {}
            }
        }
        Ok(p)
    }

    /// How many lines fail2ban-regex matched (0 when it said nothing parseable).
    pub fn matched(&self) -> u32 {
        self.lines
            .as_deref()
            .unwrap_or("")
            .split(',')
            .find_map(|p| p.trim().strip_suffix(" matched"))
            .and_then(|n| n.trim().parse::<u32>().ok())
            .unwrap_or(0)
    }

    /// The cache entry this proof makes: only a proof that ran here, with a key and a result.
    pub fn to_cache(&self, now: &str) -> Option<CachedProof> {
        if self.cached_at.is_some() || self.proven.is_some() {
            return None;
        }
        Some(CachedProof {
            key: self.key.clone()?,
            lines: self.lines.clone()?,
            proved_at: now.to_string(),
        })
    }
}

/// A proof the controller keeps: the key it holds for, fail2ban-regex's summary and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedProof {
    pub key: String,
    pub lines: String,
    pub proved_at: String,
}

/// The controller's proofs, one per host (a host's proof never stands for another host's, so
/// no host can vouch for another's filter): `.fsfleet/fail2ban-proofs.json` beside the
/// inventory, 0600 in a 0700 directory, replaced atomically.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProofCache {
    pub hosts: BTreeMap<String, CachedProof>,
}

/// The cache file could not be read or written; the message names it.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// The cache file's name in the state directory.
pub const CACHE_FILE: &str = "fail2ban-proofs.json";

impl ProofCache {
    /// `.fsfleet/fail2ban-proofs.json` in `inventory_dir`.
    pub fn path(inventory_dir: &Path) -> PathBuf {
        inventory_dir.join(".fsfleet").join(CACHE_FILE)
    }

    /// The cache at `path`; none yet is an empty cache. Entries with a key that is not a hash
    /// are dropped.
    pub fn load(path: &Path) -> Result<ProofCache, CacheError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ProofCache::default()),
            Err(source) => {
                return Err(CacheError::Io {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let mut c: ProofCache = serde_json::from_str(&text).map_err(|source| CacheError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        c.hosts.retain(|_, p| is_key(&p.key));
        Ok(c)
    }

    /// Write to `path` atomically (a 0600 temp file in the same 0700 directory, renamed).
    pub fn save(&self, path: &Path) -> Result<(), CacheError> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let io = |source| CacheError::Io {
            path: path.to_path_buf(),
            source,
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        match std::fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(e)),
        }
        let text = serde_json::to_string_pretty(self).map_err(|source| CacheError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        let tmp = dir.join(format!(".{CACHE_FILE}.{}.tmp", std::process::id()));
        let written = (|| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(e));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUDIT_UP: &str = "installed yes\nactive active\nenabled enabled\nserver 978\n\
        @jail freeswitch\nStatus for the jail: freeswitch\n|- Filter\n|  |- Currently failed:\t0\n\
        |  |- Total failed:\t3\n|  `- File list:\t/var/log/freeswitch/freeswitch.log /var/log/x.log\n\
        `- Actions\n   |- Currently banned:\t1\n   |- Total banned:\t1\n   `- Banned IP list:\t203.0.113.9\n\
        @jail sshd\nStatus for the jail: sshd\n|- Filter\n\
        |  `- Journal matches:\t_SYSTEMD_UNIT=sshd.service + _COMM=sshd\n\
        @exists /var/log/freeswitch/freeswitch.log\n@missing /var/log/x.log\n";

    #[test]
    fn the_audit_form_gives_each_jail_its_counters_and_files() {
        let st = Fail2banState::parse(AUDIT_UP);
        assert!(st.installed && st.active && st.enabled);
        assert_eq!(st.server, Some(978));
        assert_eq!(st.jails, ["freeswitch", "sshd"]);
        let fs = &st.status["freeswitch"];
        assert_eq!(
            (fs.total_failed, fs.currently_banned, fs.total_banned),
            (Some(3), Some(1), Some(1))
        );
        assert_eq!(
            fs.files,
            [
                LogFile {
                    path: "/var/log/freeswitch/freeswitch.log".into(),
                    exists: true
                },
                LogFile {
                    path: "/var/log/x.log".into(),
                    exists: false
                }
            ]
        );
        assert_eq!(fs.banned, ["203.0.113.9"]);
        assert_eq!(
            st.status["sshd"].journal.as_deref(),
            Some("_SYSTEMD_UNIT=sshd.service + _COMM=sshd")
        );
        // A jail that did not answer is not running, and is not in the running list.
        let st = Fail2banState::parse("installed yes\nserver 9\n@jail freeswitch\n@jail sshd\n");
        assert_eq!(st.not_running, ["freeswitch", "sshd"]);
        assert!(st.jails.is_empty() && st.status.is_empty());
        // A status of another jail's name does not stand for the asked one.
        let st = Fail2banState::parse("@jail freeswitch\nStatus for the jail: sshd\n");
        assert!(!st.runs("freeswitch") && !st.runs("sshd"));
    }

    #[test]
    fn the_harden_form_lists_the_running_jails() {
        let st =
            Fail2banState::parse("installed yes\nactive failed\nenabled disabled\njails a, b\n");
        assert!(st.installed && !st.active && !st.enabled);
        assert!(st.runs("a") && st.runs("b") && !st.runs("c"));
        assert_eq!(Fail2banState::parse(""), Fail2banState::default());
    }

    #[test]
    fn jail_settings_read_fsfleets_jail_file() {
        let text = "# comment\n[DEFAULT]\nport = 1\n[freeswitch]\nenabled  = true\n\
                    logpath  = /var/log/freeswitch/freeswitch.log\nport     = 5080,5060, sip\n\
                    action_  = a[x]\n           b[y]\nmaxretry = 5\nignoreip = 127.0.0.1/8 ::1\n\
                    [sshd]\nport = 22\nbackend = systemd\n";
        let j = JailSettings::parse(text, "freeswitch").unwrap();
        assert_eq!(j.enabled, Some(true));
        assert_eq!(j.ports, [5060, 5080]);
        assert_eq!(j.port_names, ["sip"]);
        assert_eq!(
            j.logpath.as_deref(),
            Some("/var/log/freeswitch/freeswitch.log")
        );
        assert_eq!(j.ignoreip, ["127.0.0.1/8", "::1"]);
        assert_eq!(j.maxretry, Some(5));
        let s = JailSettings::parse(text, "sshd").unwrap();
        assert_eq!(
            (s.ports.as_slice(), s.backend.as_deref()),
            (&[22][..], Some("systemd"))
        );
        assert_eq!(JailSettings::parse(text, "asterisk"), None);
    }

    #[test]
    fn without_an_active_line_systemd_is_asked_once_in_the_base_facts() {
        let mut f = HostFacts::stock();
        f.base.fail2ban_active = true;
        f.sections = crate::facts::Sections::from_pairs(&[(STATE_SECTION, "installed yes\n", 0)]);
        assert!(Fail2banState::from_facts(&f).active);
        // Harden's form says it itself, and that wins.
        f.sections = crate::facts::Sections::from_pairs(&[(STATE_SECTION, "active failed\n", 0)]);
        assert!(!Fail2banState::from_facts(&f).active);
        // Both forms gather the same way: one snippet, one section.
        assert!(state_snippet(&[]).contains(crate::facts::SYSTEMD_CALL));
        assert!(!state_snippet(&["sshd"]).contains("systemctl"));
        assert!(!state_snippet(&["sshd"]).contains(crate::facts::SYSTEMD_CALL));
    }

    /// Run `snippet` with the local sh and `bin` first on the PATH.
    fn run(snippet: &str, bin: &Path) -> (String, Option<i32>) {
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(crate::facts::standalone(snippet))
            .env("PATH", path)
            .output()
            .unwrap();
        (String::from_utf8(out.stdout).unwrap(), out.status.code())
    }

    fn script(bin: &Path, name: &str, body: &str) {
        let p = bin.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }

    #[test]
    fn one_client_start_answers_every_jail() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path();
        let calls = bin.join("calls");
        // A fail2ban-client that logs each start and answers the interactive commands it reads.
        script(
            bin,
            "fail2ban-client",
            &format!(
                "echo \"$*\" >>{calls}\nwhile read -r c a; do case $c in \
                 echo) echo \"fail2ban> $a\" ;; \
                 status) [ \"$a\" = sshd ] && printf 'fail2ban> Status for the jail: sshd\\n|  `- File list:\\t/nonexistent/auth.log\\n' ;; \
                 exit) exit 0 ;; esac; done",
                calls = calls.display()
            ),
        );
        let snippet = format!(
            "p=978\n{}",
            jail_status_snippet("/nonexistent/f2b.sock", &["freeswitch", "sshd"])
        );
        let (out, _) = run(&snippet, bin);
        let st = Fail2banState::parse(&out);
        assert_eq!(st.not_running, ["freeswitch"], "{out}");
        assert_eq!(
            st.status["sshd"].files,
            [LogFile {
                path: "/nonexistent/auth.log".into(),
                exists: false
            }],
            "{out}"
        );
        assert_eq!(std::fs::read_to_string(&calls).unwrap(), "-i\n");
        // No server: no client at all.
        let (out, _) = run(
            &format!(
                "p=''\n{}",
                jail_status_snippet("/nonexistent/f2b.sock", &["sshd"])
            ),
            bin,
        );
        assert_eq!(out, "");
        assert_eq!(std::fs::read_to_string(&calls).unwrap(), "-i\n");
    }

    /// A server on a Unix socket that answers fail2ban's protocol as fail2ban 1.0.2 did on the
    /// testbed (the answers captured there): `status freeswitch` with one ban, anything else an
    /// unknown jail. It records each request it read.
    fn fake_server(sock: &std::path::Path) -> std::sync::mpsc::Receiver<Vec<u8>> {
        use std::io::{Read, Write};
        let listener = std::os::unix::net::UnixListener::bind(sock).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let Ok((mut c, _)) = listener.accept() else {
                return;
            };
            let end = b"<F2B_END_COMMAND>";
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while let Ok(n) = c.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                while let Some(i) = buf.windows(end.len()).position(|w| w == end) {
                    let req: Vec<u8> = buf.drain(..i + end.len()).take(i).collect();
                    if req == b"<F2B_CLOSE_COMMAND>" {
                        return;
                    }
                    let answer = if crate::model::pickle::loads(&req)
                        == Ok(crate::model::pickle::Value::List(vec![
                            crate::model::pickle::Value::Str("status".into()),
                            crate::model::pickle::Value::Str("freeswitch".into()),
                        ])) {
                        crate::model::pickle::tests::FREESWITCH_BANNED
                    } else {
                        UNKNOWN_JAIL
                    };
                    let _ = tx.send(req);
                    let mut out = hex(answer);
                    out.extend_from_slice(end);
                    let _ = c.write_all(&out);
                }
            }
        });
        rx
    }

    const UNKNOWN_JAIL: &str = "8005953f000000000000004b018c136661696c3262616e2e657863657074696f6e73948c14556e6b6e6f776e4a61696c457863657074696f6e9493948c046e6f7065948594529486942e";

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// perl asks the server's socket; fail2ban-client (Python) is not started; the answers read
    /// as fail2ban-client's would, the File list's log checked on the host.
    #[test]
    fn the_servers_socket_answers_without_python() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path();
        let calls = bin.join("calls");
        script(
            bin,
            "fail2ban-client",
            &format!("echo \"$*\" >>{}", calls.display()),
        );
        let sock = bin.join("f2b.sock");
        let requests = fake_server(&sock);
        let snippet = format!(
            "p=978\n{}",
            jail_status_snippet(sock.to_str().unwrap(), &["freeswitch", "sshd"])
        );
        let (out, status) = run(&snippet, bin);
        assert_eq!(status, Some(0), "{out}");
        assert!(!calls.exists(), "fail2ban-client was started: {out}");
        let st = Fail2banState::parse(&out);
        let fs = &st.status["freeswitch"];
        assert_eq!(
            (
                fs.currently_failed,
                fs.total_failed,
                fs.currently_banned,
                fs.total_banned
            ),
            (Some(0), Some(0), Some(1), Some(1)),
            "{out}"
        );
        assert_eq!(fs.banned, ["203.0.113.9"]);
        assert_eq!(fs.files.len(), 1);
        assert_eq!(fs.files[0].path, "/var/log/freeswitch/freeswitch.log");
        assert_eq!(
            fs.files[0].exists,
            std::path::Path::new("/var/log/freeswitch/freeswitch.log").is_file()
        );
        assert_eq!(st.not_running, ["sshd"], "{out}");
        assert_eq!(st.jails, ["freeswitch"]);
        // What the server read: each command as Python's pickle reads it.
        let got: Vec<Vec<u8>> = requests.try_iter().collect();
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[1],
            crate::model::pickle::dumps_str_list(&["status", "sshd"])
        );
        // No server on the socket: fail2ban-client answers instead.
        let gone = format!(
            "p=978\n{}",
            jail_status_snippet(bin.join("none.sock").to_str().unwrap(), &["sshd"])
        );
        run(&gone, bin);
        let started = std::fs::read_to_string(&calls).unwrap();
        assert!(started.starts_with("-i\n"), "{started}");
    }

    /// A hostile or broken answer never panics and never passes for a jail's status.
    #[test]
    fn a_socket_answer_that_is_not_a_status_is_no_status() {
        assert!(socket_answer(crate::model::pickle::tests::FREESWITCH_BANNED).is_some());
        for bad in [
            "",
            "zz",
            "800",
            UNKNOWN_JAIL,
            "80054b002e",
            "8005884b0086942e",
        ] {
            assert_eq!(socket_answer(bad), None, "{bad}");
        }
        let st = Fail2banState::parse(&format!("@f2b freeswitch {UNKNOWN_JAIL}\n@f2b sshd 00\n"));
        assert_eq!(st.not_running, ["freeswitch", "sshd"]);
        assert!(st.status.is_empty());
        // A jail answered twice keeps its first answer; thousands of answers are not decoded.
        let good = crate::model::pickle::tests::FREESWITCH_BANNED;
        let st = Fail2banState::parse(&format!("@f2b freeswitch {good}\n@f2b freeswitch 00\n"));
        assert!(st.status.contains_key("freeswitch") && st.not_running.is_empty());
        let flood: String = (0..100_000)
            .map(|i| format!("@f2b j{i} {good}\n"))
            .collect();
        let started = std::time::Instant::now();
        let st = Fail2banState::parse(&flood);
        assert_eq!(st.status.len(), MAX_JAILS_ASKED);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn a_client_without_interactive_mode_is_asked_jail_by_jail() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path();
        script(
            bin,
            "fail2ban-client",
            "[ \"$1\" = status ] && [ \"$2\" = freeswitch ] && printf 'Status for the jail: freeswitch\\n`- Actions\\n   |- Currently banned:\\t2\\n'",
        );
        let snippet = format!(
            "p=978\n{}",
            jail_status_snippet("/nonexistent/f2b.sock", &["freeswitch", "sshd"])
        );
        let (out, _) = run(&snippet, bin);
        let st = Fail2banState::parse(&out);
        assert_eq!(st.status["freeswitch"].currently_banned, Some(2), "{out}");
        assert_eq!(st.not_running, ["sshd"], "{out}");
    }

    const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn a_proof_parses_and_a_cached_one_takes_the_controllers_result() {
        let text = format!(
            "log /var/log/freeswitch/freeswitch.log\nformat percent\nline x\nkey {KEY}\n\
             Lines: 1 lines, 0 ignored, 1 matched, 0 missed\n"
        );
        let p = Proof::resolve(&text, Some(0), None).unwrap();
        assert_eq!(p.matched(), 1);
        assert_eq!(p.key.as_deref(), Some(KEY));
        let c = p.to_cache("2026-11-29T21:00:00Z").unwrap();
        let cached = Proof::resolve(
            &format!("log l\nformat percent\ncached {KEY}\n"),
            Some(0),
            Some(&c),
        )
        .unwrap();
        assert_eq!(cached.matched(), 1);
        assert_eq!(cached.cached_at.as_deref(), Some("2026-11-29T21:00:00Z"));
        // A cached answer is never cached again, nor one without a key or result.
        assert_eq!(cached.to_cache("now"), None);
        assert_eq!(
            Proof::resolve("Lines: 1 lines", Some(0), None)
                .unwrap()
                .to_cache("now"),
            None
        );
        // The host claims a proof the controller does not hold: no result, an error.
        let other = CachedProof {
            key: KEY.replace('0', "1"),
            ..c.clone()
        };
        assert_eq!(
            Proof::resolve(&format!("cached {KEY}\n"), Some(0), Some(&other)),
            Err(ProofError::UnknownCached)
        );
        assert_eq!(
            Proof::resolve("", Some(3), None),
            Err(ProofError::NotInstalled)
        );
        assert_eq!(
            Proof::resolve("", None, None),
            Err(ProofError::NotRun(None))
        );
    }

    #[test]
    fn fsfleets_own_proofs_stand_only_for_their_keys_and_only_when_offered() {
        let mut keys: Vec<&str> = PROVEN.iter().map(|p| p.key).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), PROVEN.len(), "a key twice in PROVEN");
        assert!(PROVEN.iter().all(|p| is_key(p.key)));
        // The host is offered the table's keys, except with --reprove.
        let offered = proof_snippet(&[], None, true);
        let reprove = proof_snippet(&[], None, false);
        for p in PROVEN {
            assert!(offered.contains(p.key) && !reprove.contains(p.key));
        }
        assert!(reprove.contains("case $k in none)"), "{reprove}");
        // A host that says it matches one: the table's result, said to be the table's, never
        // put in the host's cache.
        let e = &PROVEN[0];
        let p = Proof::resolve(
            &format!("log l\nformat percent\ncached {}\n", e.key),
            Some(0),
            None,
        )
        .unwrap();
        assert_eq!(p.lines.as_deref(), Some(e.lines));
        assert_eq!(p.proven, Some(e));
        assert_eq!(p.cached_at, None);
        assert_eq!(p.to_cache("now"), None);
        // The host's own proof for the same key comes first: it was made there.
        let own = CachedProof {
            key: e.key.to_string(),
            lines: "1 lines, 0 ignored, 1 matched, 0 missed".into(),
            proved_at: "2026-11-30T05:00:00Z".into(),
        };
        let p = Proof::resolve(&format!("cached {}\n", e.key), Some(0), Some(&own)).unwrap();
        assert_eq!(
            (p.proven, p.cached_at.as_deref()),
            (None, Some("2026-11-30T05:00:00Z"))
        );
        assert_eq!(p.lines, Some(own.lines));
    }

    #[test]
    fn the_proof_runs_again_when_a_filter_file_or_fail2bans_version_changes() {
        // fail2ban's configuration in a temp dir, with fake fail2ban-regex and dpkg-query that
        // log their calls.
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path();
        let etc = bin.join("fail2ban");
        std::fs::create_dir_all(etc.join("filter.d")).unwrap();
        std::fs::write(
            etc.join("filter.d/freeswitch.conf"),
            "[Definition]\nfailregex = a\n",
        )
        .unwrap();
        let calls = bin.join("calls");
        script(
            bin,
            "fail2ban-regex",
            &format!(
                "echo run >>{}\necho 'Lines: 1 lines, 0 ignored, 1 matched, 0 missed'",
                calls.display()
            ),
        );
        let version = bin.join("version");
        std::fs::write(&version, "1.0.2-2").unwrap();
        script(
            bin,
            "dpkg-query",
            &format!("echo \"fail2ban installed $(cat {})\"", version.display()),
        );
        let runs = || {
            std::fs::read_to_string(&calls)
                .unwrap_or_default()
                .lines()
                .count()
        };
        let snippet =
            |known: Option<&str>| proof_snippet_in(etc.to_str().unwrap(), &[], known, true);
        let first = run(&snippet(None), bin);
        let p = Proof::resolve(&first.0, first.1, None).unwrap();
        assert_eq!((runs(), p.matched()), (1, 1), "{}", first.0);
        let c = p.to_cache("t").unwrap();
        // Same inputs, key offered: no run, the cached result.
        let again = run(&snippet(Some(&c.key)), bin);
        let p2 = Proof::resolve(&again.0, again.1, Some(&c)).unwrap();
        assert_eq!((runs(), p2.matched()), (1, 1), "{}", again.0);
        assert!(p2.cached_at.is_some());
        // A .local beside the packaged filter: the proof runs again.
        std::fs::write(
            etc.join("filter.d/freeswitch.local"),
            "[Definition]\nfailregex = b\n",
        )
        .unwrap();
        let third = run(&snippet(Some(&c.key)), bin);
        let p3 = Proof::resolve(&third.0, third.1, Some(&c)).unwrap();
        assert_eq!(runs(), 2, "{}", third.0);
        assert!(p3.cached_at.is_none() && p3.key.is_some() && p3.key != p.key);
        let c3 = p3.to_cache("t3").unwrap();
        // An edit of that file: again.
        std::fs::write(
            etc.join("filter.d/freeswitch.local"),
            "[Definition]\nfailregex = c\n",
        )
        .unwrap();
        run(&snippet(Some(&c3.key)), bin);
        assert_eq!(runs(), 3);
        // A new fail2ban version changes the key too.
        let now = run(&snippet(None), bin);
        let c4 = Proof::resolve(&now.0, now.1, None)
            .unwrap()
            .to_cache("t4")
            .unwrap();
        assert_eq!(runs(), 4);
        std::fs::write(&version, "1.1.0-1").unwrap();
        run(&snippet(Some(&c4.key)), bin);
        assert_eq!(runs(), 5);
        // Not from dpkg: no key, always run.
        std::fs::write(&version, "").unwrap();
        let nokey = run(&snippet(Some(&c4.key)), bin);
        assert_eq!(runs(), 6, "{}", nokey.0);
        assert!(!nokey.0.contains("key "), "{}", nokey.0);
        // A key that is not a hash never reaches the script.
        assert!(!proof_snippet(&[], Some("x'; rm -rf /; '"), true).contains("rm -rf"));
    }

    /// The crafted line follows the log's format, told by its newest dated line: FreeSWITCH's
    /// default (`97.50%` after the time, with or without a session UUID first), plain time
    /// stamps, or unknown (no dated line, an empty or missing log).
    #[test]
    fn the_proof_tells_the_log_format_by_its_newest_dated_line() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path();
        let etc = bin.join("fail2ban");
        std::fs::create_dir_all(etc.join("filter.d")).unwrap();
        // fail2ban-regex --config DIR LINE FILTER
        script(bin, "fail2ban-regex", "echo \"Lines: $3\"");
        script(bin, "dpkg-query", "echo 'fail2ban installed 1.0.2-2'");
        let log = bin.join("freeswitch.log");
        let format = |text: Option<&str>| {
            let _ = std::fs::remove_file(&log);
            if let Some(t) = text {
                std::fs::write(&log, t).unwrap();
            }
            let logs = [log.display().to_string()];
            let (out, _) = run(
                &proof_snippet_in(etc.to_str().unwrap(), &logs, None, false),
                bin,
            );
            let f = out
                .lines()
                .find_map(|l| l.strip_prefix("format "))
                .unwrap_or("")
                .to_string();
            let percent = out
                .lines()
                .any(|l| l.starts_with("Lines: ") && l.contains(".000000 97.50% [WARNING]"));
            (f, percent)
        };
        let pct = "2026-11-30 02:36:15.123456 97.50% [NOTICE] switch.c:1 up\n";
        let uuid =
            "4f1c2a4e-6a2b-4d3e-9f00-0123456789ab 2026-11-30 02:36:16.000001 12.00% [INFO] x\n";
        let plain = "2026-11-30 02:36:17.000000 [INFO] switch.c:1 plain\n";
        assert_eq!(format(Some(pct)), ("percent".into(), true));
        assert_eq!(
            format(Some(&format!("{plain}{uuid}continued line\n"))),
            ("percent".into(), true)
        );
        assert_eq!(
            format(Some(&format!("{pct}{plain}\tmore\n"))),
            ("plain".into(), false)
        );
        assert_eq!(format(Some("no date here\n")), ("unknown".into(), true));
        assert_eq!(format(Some("")), ("unknown".into(), true));
        assert_eq!(format(None), ("unknown".into(), true));
    }

    #[test]
    fn the_cache_is_private_atomic_and_drops_mangled_keys() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = ProofCache::path(dir.path());
        assert_eq!(ProofCache::load(&path).unwrap(), ProofCache::default());
        let mut c = ProofCache::default();
        c.hosts.insert(
            "pbx1".into(),
            CachedProof {
                key: KEY.into(),
                lines: "1 lines, 0 ignored, 1 matched, 0 missed".into(),
                proved_at: "t".into(),
            },
        );
        c.hosts.insert(
            "pbx2".into(),
            CachedProof {
                key: "not a key".into(),
                lines: "x".into(),
                proved_at: "t".into(),
            },
        );
        c.save(&path).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        let back = ProofCache::load(&path).unwrap();
        assert_eq!(back.hosts.keys().collect::<Vec<_>>(), ["pbx1"]);
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1,
            "no temp file left"
        );
        std::fs::write(&path, "{").unwrap();
        assert!(
            ProofCache::load(&path)
                .unwrap_err()
                .to_string()
                .contains(CACHE_FILE)
        );
    }
}
