//! Step `fail2ban`: ban SIP brute forcers from FreeSWITCH's own log, and prove it works.
//!
//! Installs `filter.d/freeswitch.local` (overrides the packaged `freeswitch.conf` without
//! touching that dpkg conffile, FACTS §5) and a per-host jail file, restarts fail2ban only when
//! something changed or it is down, waits for the jail, then runs `fail2ban-regex` on the host
//! against a failure line in the host's own log format. See docs/fail2ban.md.

use std::future::Future;
use std::time::Duration;

use ipnet::IpNet;

use crate::harden::context::{HardenOptions, HostFacts, Probes, StepCtx, StepError, StepPlan};
use crate::harden::step::{Phase, Plan, PlanInput, Step};
use crate::inventory::Host;
use crate::model::fail2ban::{self as f2b, Fail2banState};
use crate::ssh::sh_quote;

pub const NAME: &str = "fail2ban";

pub const FILTER_PATH: &str = "/etc/fail2ban/filter.d/freeswitch.local";
pub const JAIL_PATH: &str = f2b::JAIL_FILE;
/// The filter, byte for byte as installed.
pub const FILTER: &str = include_str!("../../assets/fail2ban/filter.d/freeswitch.local");

/// iptables' multiport match (fail2ban's default banaction on Debian) takes at most 15 ports.
pub const MULTIPORT_MAX: usize = 15;

/// How long to wait for `fail2ban-client status freeswitch` to answer after a restart.
pub const JAIL_WAIT: Duration = Duration::from_secs(30);

/// Documentation addresses (RFC 5737) for the proof lines: never a real peer.
pub const SAMPLE_FAILURE_IP: &str = "198.51.100.23";
pub const SAMPLE_CHALLENGE_IP: &str = "198.51.100.24";

const PROBE: &str = f2b::STATE_SECTION;

pub fn probes(p: &mut Probes, _host: &Host) {
    p.file(FILTER_PATH).file(JAIL_PATH);
    // Which jails run, without fail2ban-client when the server's threads and log tell.
    p.snippet(PROBE, &f2b::state_snippet(&[]));
}

/// The ports the host's jails ban on, from its facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailPorts {
    /// The SIP and SIP-TLS ports of the host model, the ones the firewall opens, ascending.
    pub sip: Vec<u16>,
    /// The ports sshd listens on, or the one fsfleet is connected through when those are unknown.
    pub ssh: Vec<u16>,
}

/// What the jails must ban on: the SIP ports from the same function the firewall opens them
/// with, and the ports sshd really listens on. Also returns what the operator should know.
pub fn jail_ports(f: &HostFacts, host: &Host) -> Result<(JailPorts, Vec<String>), StepError> {
    let mut warnings = Vec::new();
    // The firewall step reports the profile warnings; repeating them here adds nothing.
    let sip = crate::model::HostModel::new(f).sip_ports().numbers();
    if sip.is_empty() {
        return Err(StepError::Refused(format!(
            "{}: no SIP port found in the profiles (sip_profiles/*.xml under {}): the freeswitch \
             jail would have no port to ban on; fix the profiles (see the firewall step's \
             warnings) or --skip {NAME}",
            host.name,
            f.files.conf_dir.as_deref().unwrap_or("the config dir")
        )));
    }
    let mut ssh: Vec<u16> = f.base.sshd_ports.clone();
    ssh.sort_unstable();
    ssh.dedup();
    if ssh.is_empty() {
        ssh.push(host.port);
        warnings.push(format!(
            "could not read the ports sshd listens on (ss and sshd -T printed nothing): the sshd \
             jail bans on port {}, the one fsfleet is connected through",
            host.port
        ));
    }
    for (jail, ports) in [("freeswitch", &sip), ("sshd", &ssh)] {
        if ports.len() > MULTIPORT_MAX {
            return Err(StepError::Refused(format!(
                "{}: the {jail} jail would ban on {} ports ({}), more than the {MULTIPORT_MAX} one \
                 iptables multiport rule takes, so no ban would be enforced; use fewer ports or \
                 --skip {NAME}",
                host.name,
                ports.len(),
                join_ports(ports)
            )));
        }
    }
    Ok((JailPorts { sip, ssh }, warnings))
}

fn join_ports(ports: &[u16]) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The jail file for this host: the FreeSWITCH jail on `logpath` and sshd on the journal, each
/// banning on `ports`. `ignoreip` is loopback plus the inventory's `fail2ban_ignore`, nothing
/// else: `sip_allow_from` only shapes the firewall (a wide allow-list here would switch banning
/// off, FACTS §5).
pub fn render_jail(host: &Host, logpath: &str, ports: &JailPorts) -> String {
    let f = &host.fail2ban;
    let mut ignore: Vec<String> = vec!["127.0.0.1/8".into(), "::1".into()];
    for net in &host.fail2ban_ignore {
        let t = net.trunc();
        // A single address reads better without /32 or /128.
        let s = if t.prefix_len() == t.max_prefix_len() {
            t.addr().to_string()
        } else {
            t.to_string()
        };
        if !ignore.contains(&s) && !is_loopback_net(&t) {
            ignore.push(s);
        }
    }
    format!(
        "# Written by fsfleet for host {name}: `fsfleet harden` rewrites this file.\n\
         # Tune it in the inventory (fail2ban_maxretry, fail2ban_findtime, fail2ban_bantime,\n\
         # fail2ban_ignore), not here. The filter is filter.d/freeswitch.local (also fsfleet's).\n\
         \n\
         [freeswitch]\n\
         enabled  = true\n\
         filter   = freeswitch\n\
         # FreeSWITCH writes its own file: read it (inotify or polling), never the journal.\n\
         backend  = auto\n\
         logpath  = {logpath}\n\
         # The SIP and SIP-TLS ports the firewall opens (every profile's sip-port and tls-sip-port).\n\
         port     = {sip}\n\
         # SIP runs over UDP and TCP. A multiport rule needs one protocol, so one rule each, on\n\
         # the SIP ports only (an all-ports ban would also cut SSH for a site whose NAT address\n\
         # got banned), with the host's own banaction (iptables-multiport on Debian).\n\
         action_  = %(banaction)s[name=%(__name__)s-tcp, port=\"%(port)s\", protocol=\"tcp\", chain=\"%(chain)s\"]\n\
         \x20          %(banaction)s[name=%(__name__)s-udp, port=\"%(port)s\", protocol=\"udp\", chain=\"%(chain)s\"]\n\
         maxretry = {maxretry}\n\
         findtime = {findtime}\n\
         bantime  = {bantime}\n\
         # Loopback and the inventory's fail2ban_ignore only (phones still on an old password must\n\
         # not ban their own site's address). Never sip_allow_from: a wide allow-list would switch\n\
         # banning off.\n\
         ignoreip = {ignore}\n\
         \n\
         [sshd]\n\
         enabled = true\n\
         # Minimal images log sshd only to the journal (needs python3-systemd).\n\
         backend = systemd\n\
         # The ports sshd listens on, not the default 22.\n\
         port    = {ssh}\n",
        name = host.name,
        sip = join_ports(&ports.sip),
        ssh = join_ports(&ports.ssh),
        maxretry = f.maxretry,
        findtime = f.findtime,
        bantime = f.bantime,
        ignore = ignore.join(" "),
    )
}

fn is_loopback_net(n: &IpNet) -> bool {
    match n {
        IpNet::V4(v) => v.prefix_len() >= 8 && v.addr().is_loopback(),
        IpNet::V6(v) => v.prefix_len() == 128 && v.addr().is_loopback(),
    }
}

/// Whether the facts show fail2ban running with the `freeswitch` jail (verify's no-change path).
pub fn jail_up_in_facts(f: &HostFacts) -> bool {
    let st = Fail2banState::from_facts(f);
    st.active && st.runs("freeswitch")
}

/// Whether the FreeSWITCH version logs the idle-cpu percent (1.10.7+). Unknown: assume it does.
pub fn version_logs_percent(version: Option<&str>) -> bool {
    let Some(v) = version else { return true };
    let nums: Vec<u32> = v
        .split(|c: char| !c.is_ascii_digit())
        .take(3)
        .map(|n| n.parse().unwrap_or(0))
        .collect();
    match nums.as_slice() {
        [a, b, c] => (*a, *b, *c) >= (1, 10, 7),
        _ => true,
    }
}

/// The step in the registry.
pub struct Fail2ban;

impl Step for Fail2ban {
    const NAME: &'static str = NAME;
    const DOING: &'static str = "configuring fail2ban and waiting for its jails";
    const PHASE: Phase = Phase::System;
    type Action = Configure;

    fn probes(p: &mut Probes, host: &Host) {
        probes(p, host)
    }

    fn plan(input: &PlanInput<'_>) -> Result<Plan<Configure>, StepError> {
        plan(input.facts, input.host, input.opts)
    }

    fn apply<'a>(
        ctx: &'a StepCtx<'a>,
        action: &'a Configure,
    ) -> impl Future<Output = Result<Vec<String>, StepError>> + Send + 'a {
        apply(ctx, action)
    }
}

/// What the fail2ban step does on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct Configure {
    /// Install [`FILTER`] at [`FILTER_PATH`].
    pub write_filter: bool,
    /// The jail file to install at [`JAIL_PATH`], when it must be (re)written.
    pub jail: Option<String>,
    /// Restart (or start) fail2ban.
    pub restart: bool,
    /// Enable fail2ban at boot.
    pub enable: bool,
    /// FreeSWITCH's log file, under a directory checked to be a plain absolute path
    /// (hostfs::check_host_dir): created through hostfs before fail2ban starts.
    pub logpath: String,
    /// The log format to prove the filter with when the log has no dated line yet: with the
    /// idle-cpu percent (1.10.7+).
    pub percent_default: bool,
}

pub fn plan(
    f: &HostFacts,
    host: &Host,
    _opts: &HardenOptions,
) -> Result<Plan<Configure>, StepError> {
    let Some(fs) = &f.base.freeswitch else {
        return Err(StepError::Refused(format!(
            "{}: no FreeSWITCH configuration found, so no log to watch; set conf_dir in the \
             inventory or --skip {NAME}",
            host.name
        )));
    };
    let Some(log_dir) = fs.log_dir.as_deref() else {
        return Err(StepError::Refused(format!(
            "{}: FreeSWITCH's log directory was not found for {} ({} layout); start FreeSWITCH \
             once so that it creates it, then re-run (or --skip {NAME})",
            host.name, fs.conf_dir, fs.layout
        )));
    };
    // A host value that goes into fail2ban's configuration: refused unless it is a plain path.
    crate::hostfs::check_host_dir(log_dir)
        .map_err(|e| StepError::Refused(format!("FreeSWITCH's log directory: {e}")))?;
    let logpath = format!("{}/freeswitch.log", log_dir.trim_end_matches('/'));
    let (ports, warnings) = jail_ports(f, host)?;
    let jail = render_jail(host, &logpath, &ports);
    let st = Fail2banState::from_facts(f);

    let mut plan = StepPlan {
        warnings,
        ..StepPlan::default()
    };
    // Whether `path` must be written (also a change line and, for an existing file, a diff).
    let write = |path: &str, want: &str, plan: &mut StepPlan| -> bool {
        let have = f.files.files.get(path);
        let what = match have {
            None => Some("create"),
            Some(h) if h.content.as_deref() != Some(want.as_bytes()) => Some("update"),
            Some(h) if h.mode != 0o644 || h.owner != "root" => Some("fix owner/mode of"),
            Some(_) => None,
        };
        let Some(what) = what else { return false };
        plan.changes.push(format!("{what} {path}"));
        if let Some(h) = have.and_then(|h| h.text()) {
            plan.diffs.push(diff(path, h, want));
        }
        true
    };
    let write_filter = write(FILTER_PATH, FILTER, &mut plan);
    let write_jail = write(JAIL_PATH, &jail, &mut plan);
    // The backup keeps them (and the run record lists them) so a rollback can restore or
    // remove them.
    for (written, path) in [(write_filter, FILTER_PATH), (write_jail, JAIL_PATH)] {
        if written {
            plan.backup.push(path.to_string());
        }
    }

    let files_changed = !plan.changes.is_empty();
    let jail_up = st.active && st.runs("freeswitch");
    let restart = files_changed || !jail_up;
    if restart {
        let why = if !st.installed {
            "start fail2ban (once the packages step has installed it)".to_string()
        } else if !st.active {
            "start fail2ban (not active)".to_string()
        } else if files_changed {
            "restart fail2ban (configuration changed)".to_string()
        } else {
            "restart fail2ban (the freeswitch jail is not running)".to_string()
        };
        plan.changes.push(why);
    }
    if !st.enabled {
        plan.changes
            .push("enable fail2ban at boot (systemctl enable)".into());
    }
    Ok(Plan {
        outline: plan,
        action: Configure {
            write_filter,
            jail: write_jail.then_some(jail),
            restart,
            enable: !st.enabled,
            logpath,
            percent_default: version_logs_percent(fs.version.as_deref()),
        },
    })
}

/// The `--diff` of a fail2ban file: the same unified diff as the config files' (these files hold
/// no secret).
fn diff(path: &str, old: &str, new: &str) -> String {
    crate::conf::diff::masked_diff(path, old, new, &[])
}

/// A failure and a challenge line in the host's log format (`percent`: 1.10.7+ idle-cpu field).
pub fn sample_lines(percent: bool) -> (String, String) {
    let ts = chrono::Utc::now().format("%Y-%m-%d %H:%M:%S%.6f");
    let pct = if percent { " 97.50%" } else { "" };
    (
        format!(
            "{ts}{pct} [WARNING] sofia_reg.c:1787 SIP auth failure (REGISTER) on sofia profile \
             'internal' for [1000@fsfleet.invalid] from ip {SAMPLE_FAILURE_IP}"
        ),
        format!(
            "{ts}{pct} [WARNING] sofia_reg.c:1842 SIP auth challenge (REGISTER) on sofia profile \
             'internal' for [1000@fsfleet.invalid] from ip {SAMPLE_CHALLENGE_IP}"
        ),
    )
}

fn apply_script(action: &Configure) -> String {
    let mut s = String::from(
        r#"set -u
command -v fail2ban-client >/dev/null 2>&1 || {
    echo "fail2ban is not installed: let the packages step install it (do not --skip packages)" >&2; exit 30; }
python3 -c 'import systemd.journal' 2>/dev/null || {
    echo "python3-systemd is missing: the [sshd] jail reads the journal through it; let the packages step install it" >&2; exit 30; }
put() { # path base64: atomic, root 0644
    mkdir -p "$(dirname "$1")" && tmp=$(mktemp "$1.fsfleet.XXXXXX") || { echo "cannot write $1" >&2; exit 31; }
    if printf '%s' "$2" | base64 -d >"$tmp" && chown root:root "$tmp" && chmod 0644 "$tmp" && mv -f "$tmp" "$1"; then :; else
        rm -f "$tmp"; echo "writing $1 failed" >&2; exit 31; fi
}
"#,
    );
    let b64 = |t: &str| data_encoding::BASE64.encode(t.as_bytes());
    if action.write_filter {
        s.push_str(&format!(
            "put {} {}\n",
            sh_quote(FILTER_PATH),
            sh_quote(&b64(FILTER))
        ));
    }
    if let Some(jail) = &action.jail {
        s.push_str(&format!(
            "put {} {}\n",
            sh_quote(JAIL_PATH),
            sh_quote(&b64(jail))
        ));
    }
    s.push_str(&format!("log={}\n", sh_quote(&action.logpath)));
    if action.enable {
        s.push_str("systemctl enable fail2ban >/dev/null 2>&1 || { echo 'systemctl enable fail2ban failed' >&2; exit 32; }\n");
    }
    if action.restart {
        s.push_str(
            "if ! systemctl restart fail2ban; then echo 'systemctl restart fail2ban failed:' >&2; \
             journalctl -u fail2ban -n 5 --no-pager -o cat >&2; exit 32; fi\n",
        );
    }
    let (pf, pc) = sample_lines(true);
    let (nf, nc) = sample_lines(false);
    s.push_str(&format!(
        r#"# One fail2ban-client start asks both jails (each is a Python start, ~50 ms of host CPU).
jails() {{
{query}
case $out in *'Status for the jail: freeswitch'*) return 0 ;; esac
return 1
}}
i=0
until jails; do
    i=$((i+1))
    if [ $i -ge {wait} ]; then
        echo "the freeswitch jail did not answer within {wait} s:" >&2
        {{ grep -E 'ERROR|CRITICAL' /var/log/fail2ban.log 2>/dev/null | tail -n 3; journalctl -u fail2ban -n 3 --no-pager -o cat 2>/dev/null; }} >&2
        exit 33
    fi
    sleep 1
done
echo '@@jails'
{answers}
# The newest dated line tells the format: 1.10.7+ writes the idle cpu after the time.
last=$([ -f "$log" ] && [ ! -L "$log" ] && timeout 5 tail -n 200 "$log" 2>/dev/null | grep -E '^([0-9a-fA-F-]{{36}} )?[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}} ' | tail -n 1)
if [ -z "$last" ]; then fmt={default}; src=version
elif printf '%s\n' "$last" | grep -Eq '^([0-9a-fA-F-]{{36}} )?[0-9-]+ [0-9:.]+ [0-9]+\.[0-9]+% \['; then fmt=percent; src=log
else fmt=plain; src=log; fi
echo '@@format'; echo "$fmt $src"
sample=$(mktemp) || exit 31
trap 'rm -f "$sample"' EXIT
if [ "$fmt" = percent ]; then printf '%s\n%s\n' {pf} {pc} >"$sample"; else printf '%s\n%s\n' {nf} {nc} >"$sample"; fi
echo '@@regex'; timeout 60 fail2ban-regex --out ip "$sample" freeswitch || {{ echo "fail2ban-regex failed" >&2; exit 34; }}
"#,
        wait = JAIL_WAIT.as_secs(),
        query = f2b::status_query(&["freeswitch", "sshd"], 5),
        answers = f2b::answers_snippet(),
        default = if action.percent_default { "percent" } else { "plain" },
        pf = sh_quote(&pf),
        pc = sh_quote(&pc),
        nf = sh_quote(&nf),
        nc = sh_quote(&nc),
    ));
    s
}

/// The apply script's output, by `@@name` section.
fn sections(out: &str) -> std::collections::BTreeMap<&str, Vec<&str>> {
    let mut map = std::collections::BTreeMap::new();
    let mut cur = "";
    for line in out.lines() {
        if let Some(name) = line.strip_prefix("@@") {
            cur = name.trim();
            map.entry(cur).or_insert_with(Vec::new);
        } else if !cur.is_empty() {
            map.entry(cur).or_insert_with(Vec::new).push(line);
        }
    }
    map
}

/// Turn the proof into evidence lines, or fail naming what did not hold.
fn evidence(host: &str, out: &str) -> Result<Vec<String>, StepError> {
    let sec = sections(out);
    let jails = Fail2banState::parse(&sec.get("jails").cloned().unwrap_or_default().join("\n"));
    let status = jails.status.get("freeswitch").cloned().unwrap_or_default();
    let n = |v: Option<u64>| v.map_or_else(String::new, |v| v.to_string());
    let mut ev = vec![format!(
        "jail freeswitch: {} currently banned, {} banned in total, {} currently failed, file list: {}",
        n(status.currently_banned),
        n(status.total_banned),
        n(status.currently_failed),
        status.file_list(),
    )];
    ev.push(if jails.runs("sshd") {
        "jail sshd: up (backend systemd)".to_string()
    } else {
        "jail sshd: NOT answering (check `fail2ban-client status sshd`)".to_string()
    });
    let (fmt, src) = sec
        .get("format")
        .and_then(|v| v.first())
        .and_then(|l| l.split_once(' '))
        .unwrap_or(("percent", "version"));
    let fmt_text = if fmt == "percent" {
        "1.10.7+ format with the idle-cpu percent"
    } else {
        "pre-1.10.7 format without the idle-cpu percent"
    };
    let src_text = if src == "log" {
        "as in the host's newest log line"
    } else {
        "from the FreeSWITCH version: the log has no dated line yet"
    };
    let ips: Vec<&str> = sec
        .get("regex")
        .map(|v| {
            v.iter()
                .map(|l| l.trim())
                .filter(|l| !l.is_empty())
                .collect()
        })
        .unwrap_or_default();
    if ips != [SAMPLE_FAILURE_IP] {
        return Err(StepError::Failed(format!(
            "{host}: fail2ban-regex with the installed filter gave {ips:?} for an auth failure from \
             {SAMPLE_FAILURE_IP} and a challenge from {SAMPLE_CHALLENGE_IP} ({fmt_text}); expected \
             exactly [{SAMPLE_FAILURE_IP}]: check {FILTER_PATH} and /etc/fail2ban/filter.d/freeswitch.conf"
        )));
    }
    ev.push(format!(
        "fail2ban-regex: a sample auth failure ({fmt_text}, {src_text}) matched {SAMPLE_FAILURE_IP} \
         exactly once; the matching challenge line did not match"
    ));
    Ok(ev)
}

pub async fn apply(ctx: &StepCtx<'_>, action: &Configure) -> Result<Vec<String>, StepError> {
    let script = apply_script(action);
    // fail2ban will not start a jail whose log file is missing: create it as FreeSWITCH would
    // (owned like its directory, which must be root's or FreeSWITCH's), without following a
    // link a user may have put there (hostfs).
    let logpath = &action.logpath;
    let fs_user = ctx.facts.fs_owner().map_or("freeswitch", |(u, _)| u);
    crate::hostfs::apply(
        ctx.session,
        &[crate::hostfs::Op::Create {
            path: logpath,
            mode: 0o640,
            dir_owners: &["root", fs_user],
        }],
    )
    .await
    .map_err(|e| StepError::Refused(format!("FreeSWITCH's log file: {e}")))?;
    // Restart + jail wait + fail2ban-regex (slow to start on small hosts).
    let limit = JAIL_WAIT + Duration::from_secs(120);
    let what = "configuring fail2ban".to_string();
    let out = ctx.run_checked(&what, &script, b"", limit).await?;
    evidence(&ctx.host.name, &out.stdout_text())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harden::firewall;
    use crate::model::fail2ban::jails_snippet;

    /// Run the jails snippet against a fake /proc and log, with a fake fail2ban-client on PATH
    /// that answers `fallback` (so a test sees which path answered).
    fn run_jails(procs: &[(&str, &str, &[&str])], log: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for (pid, comm, threads) in procs {
            std::fs::create_dir_all(root.join("proc").join(pid)).unwrap();
            std::fs::write(
                root.join("proc").join(pid).join("comm"),
                format!("{comm}\n"),
            )
            .unwrap();
            for (i, t) in threads.iter().enumerate() {
                let d = root
                    .join("proc")
                    .join(pid)
                    .join("task")
                    .join(format!("{}", 100 + i));
                std::fs::create_dir_all(&d).unwrap();
                std::fs::write(d.join("comm"), format!("{t}\n")).unwrap();
            }
        }
        std::fs::write(root.join("fail2ban.log"), log).unwrap();
        std::fs::create_dir(root.join("bin")).unwrap();
        let client = root.join("bin/fail2ban-client");
        std::fs::write(&client, "#!/bin/sh\necho '`- Jail list:\tfallback'\n").unwrap();
        std::fs::set_permissions(&client, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let snippet = jails_snippet(
            root.join("proc").to_str().unwrap(),
            root.join("fail2ban.log").to_str().unwrap(),
        );
        let path = format!(
            "{}:{}",
            root.join("bin").display(),
            std::env::var("PATH").unwrap()
        );
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&snippet)
            .env("PATH", path)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    }

    const THREADS: &[&str] = &[
        "fail2ban-server",
        "f2b/observer",
        "f2b/f.sshd",
        "f2b/a.sshd",
        "f2b/f.freeswitc",
        "f2b/a.freeswitc",
    ];

    fn log_line(pid: u32, jail: &str, what: &str) -> String {
        format!(
            "2026-11-24 22:08:18,452 fail2ban.jail           [{pid}]: INFO    Jail '{jail}' {what}\n"
        )
    }

    #[test]
    fn running_jails_come_from_the_servers_threads_and_log_without_python() {
        let log = format!(
            "{}{}{}",
            // A previous server (another PID) started a jail that no longer runs.
            log_line(41, "asterisk", "started"),
            log_line(978, "sshd", "started"),
            log_line(978, "freeswitch", "started"),
        );
        let procs: &[(&str, &str, &[&str])] = &[
            ("1", "systemd", &["systemd"]),
            ("978", "fail2ban-server", THREADS),
        ];
        let out = run_jails(procs, &log);
        let jails: Vec<&str> = out
            .trim()
            .strip_prefix("jails ")
            .unwrap()
            .split(", ")
            .collect();
        assert_eq!(jails.len(), 2, "{out}");
        assert!(
            jails.contains(&"freeswitch") && jails.contains(&"sshd"),
            "{out}"
        );
        assert!(Fail2banState::parse(&format!("active active\n{out}")).runs("freeswitch"));
    }

    #[test]
    fn a_stopped_jail_is_not_running_even_with_a_look_alike_thread() {
        // freeswitch stopped; freeswitch-dos (same 15-character thread names) runs on.
        let log = format!(
            "{}{}{}",
            log_line(978, "freeswitch", "started"),
            log_line(978, "freeswitch-dos", "started"),
            log_line(978, "freeswitch", "stopped"),
        );
        let procs: &[(&str, &str, &[&str])] = &[("978", "fail2ban-server", THREADS)];
        assert_eq!(run_jails(procs, &log), "jails freeswitch-dos\n");
    }

    #[test]
    fn fail2ban_client_answers_when_the_server_state_is_not_conclusive() {
        let started = log_line(978, "freeswitch", "started");
        // No server process.
        assert_eq!(
            run_jails(&[("1", "systemd", &["systemd"])], &started),
            "jails fallback\n"
        );
        // The log says started but the jail's threads are gone.
        let procs: &[(&str, &str, &[&str])] = &[(
            "978",
            "fail2ban-server",
            &["fail2ban-server", "f2b/observer"],
        )];
        assert_eq!(run_jails(procs, &started), "jails fallback\n");
        // The server logs elsewhere (nothing from its PID in this log).
        let procs: &[(&str, &str, &[&str])] = &[("978", "fail2ban-server", THREADS)];
        assert_eq!(
            run_jails(procs, &log_line(41, "freeswitch", "started")),
            "jails fallback\n"
        );
    }
    use crate::facts::{Facts, FileFact, Freeswitch, Sections};
    use crate::harden::context::test_host;
    use crate::inventory::Fail2banSettings;

    const LOG: &str = "/var/log/freeswitch/freeswitch.log";
    const UP: &str = "installed yes\nactive active\nenabled enabled\njails freeswitch, sshd\n";

    fn host() -> Host {
        test_host("pbx1")
    }

    fn file(path: &str, text: &str) -> (String, FileFact) {
        (
            path.to_string(),
            FileFact {
                path: path.to_string(),
                mode: 0o644,
                owner: "root".into(),
                group: "root".into(),
                size: text.len() as u64,
                content: Some(text.as_bytes().to_vec()),
            },
        )
    }

    /// A stock 1.10.12 host (config tree, sshd on 22) with fail2ban in `state` and `files`.
    fn facts(state: &str, files: &[(String, FileFact)]) -> HostFacts {
        let mut f = HostFacts::stock();
        f.base = Facts {
            freeswitch: Some(Freeswitch {
                conf_dir: "/etc/freeswitch".into(),
                log_dir: Some("/var/log/freeswitch".into()),
                layout: "package".into(),
                service_active: true,
                version: Some("1.10.12-release  64bit".into()),
                ready: Some(true),
            }),
            sshd_ports: vec![22],
            ..Facts::default()
        };
        f.files.files.extend(files.iter().cloned());
        f.sections = Sections::from_pairs(&[(PROBE, state, 0)]);
        f
    }

    /// The host after a harden run: fsfleet's filter and jail as this inventory entry renders them.
    fn hardened(h: &Host) -> HostFacts {
        let mut f = facts(UP, &[file(FILTER_PATH, FILTER)]);
        let (ports, _) = jail_ports(&f, h).unwrap();
        let jail = render_jail(h, LOG, &ports);
        f.files.files.extend([file(JAIL_PATH, &jail)]);
        f
    }

    #[test]
    fn the_model_reads_back_the_jail_harden_writes() {
        let h = host();
        let f = hardened(&h);
        let (ports, _) = jail_ports(&f, &h).unwrap();
        let fs = f2b::JailSettings::from_facts(&f, "freeswitch").unwrap();
        assert_eq!(fs.ports, ports.sip);
        assert_eq!(fs.logpath.as_deref(), Some(LOG));
        assert_eq!(fs.maxretry, Some(h.fail2ban.maxretry));
        assert_eq!(fs.ignoreip, ["127.0.0.1/8", "::1"]);
        let sshd = f2b::JailSettings::from_facts(&f, "sshd").unwrap();
        assert_eq!(sshd.ports, ports.ssh);
    }

    fn stock_jail(h: &Host) -> String {
        let (ports, warnings) = jail_ports(&facts(UP, &[]), h).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        render_jail(h, LOG, &ports)
    }

    /// Replace a `set` line of the stock vars.xml (`internal_sip_port=5060` style).
    fn set_var(f: &mut HostFacts, from: &str, to: &str) {
        let path = "/etc/freeswitch/vars.xml";
        let vars = f.file_text(path).unwrap().to_string();
        assert!(vars.contains(from), "stock vars.xml has {from}");
        f.files.files.extend([file(path, &vars.replace(from, to))]);
    }

    /// `key = value` in the first section named `section`.
    fn in_section<'a>(jail: &'a str, section: &str, key: &str) -> &'a str {
        let at = jail
            .find(&format!("[{section}]\n"))
            .unwrap_or_else(|| panic!("no [{section}] in\n{jail}"));
        let body = &jail[at + section.len() + 3..];
        let body = &body[..body.find("\n[").unwrap_or(body.len())];
        line(body, key)
    }

    fn line<'a>(jail: &'a str, key: &str) -> &'a str {
        jail.lines()
            .find(|l| l.starts_with(key) && l[key.len()..].trim_start().starts_with('='))
            .unwrap_or_else(|| panic!("no {key} in\n{jail}"))
    }

    #[test]
    fn jail_has_the_baseline_defaults() {
        let j = stock_jail(&host());
        assert!(j.contains("[freeswitch]\nenabled  = true\nfilter   = freeswitch\n"));
        assert_eq!(
            line(&j, "logpath"),
            "logpath  = /var/log/freeswitch/freeswitch.log"
        );
        assert_eq!(line(&j, "maxretry"), "maxretry = 5");
        assert_eq!(line(&j, "findtime"), "findtime = 600");
        assert_eq!(line(&j, "bantime"), "bantime  = 3600");
        // The stock profiles: internal 5060 (TLS 5061), external 5080 (TLS 5081); the IPv6
        // profiles use the same variables.
        assert_eq!(line(&j, "port"), "port     = 5060,5061,5080,5081");
        assert_eq!(line(&j, "backend"), "backend  = auto");
        assert_eq!(line(&j, "ignoreip"), "ignoreip = 127.0.0.1/8 ::1");
        assert!(j.contains("protocol=\"tcp\"") && j.contains("protocol=\"udp\""));
        assert_eq!(in_section(&j, "sshd", "enabled"), "enabled = true");
        assert_eq!(in_section(&j, "sshd", "backend"), "backend = systemd");
        assert_eq!(in_section(&j, "sshd", "port"), "port    = 22");
    }

    #[test]
    fn jail_takes_inventory_overrides_and_fail2ban_ignore_v4_v6() {
        let mut h = host();
        h.fail2ban = Fail2banSettings {
            maxretry: 3,
            findtime: 120,
            bantime: 86400,
        };
        h.fail2ban_ignore = [
            "203.0.113.7/32",
            "198.51.100.77/24",
            "2001:db8:5::/48",
            "2001:db8::9/128",
            "127.0.0.1/8",
            "203.0.113.7/32",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let ports = JailPorts {
            sip: vec![5060],
            ssh: vec![22],
        };
        let j = render_jail(&h, "/usr/local/freeswitch/log/freeswitch.log", &ports);
        assert_eq!(line(&j, "maxretry"), "maxretry = 3");
        assert_eq!(line(&j, "findtime"), "findtime = 120");
        assert_eq!(line(&j, "bantime"), "bantime  = 86400");
        assert_eq!(
            line(&j, "logpath"),
            "logpath  = /usr/local/freeswitch/log/freeswitch.log"
        );
        // Networks truncated, single addresses bare, loopback and duplicates not repeated.
        assert_eq!(
            line(&j, "ignoreip"),
            "ignoreip = 127.0.0.1/8 ::1 203.0.113.7 198.51.100.0/24 2001:db8:5::/48 2001:db8::9"
        );
        assert!(j.contains("for host pbx1"));
    }

    #[test]
    fn sip_allow_from_never_reaches_ignoreip() {
        let mut h = host();
        h.sip_allow_from = ["0.0.0.0/0", "::/0", "203.0.113.0/24", "198.51.100.9/32"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let j = stock_jail(&h);
        assert_eq!(line(&j, "ignoreip"), "ignoreip = 127.0.0.1/8 ::1");
        for leaked in ["0.0.0.0", "::/0", "203.0.113", "198.51.100.9"] {
            assert!(!j.contains(leaked), "{leaked} leaked into\n{j}");
        }
        // With fail2ban_ignore set, that list and only that list joins loopback.
        h.fail2ban_ignore = vec!["192.0.2.44/32".parse().unwrap()];
        assert_eq!(
            line(&stock_jail(&h), "ignoreip"),
            "ignoreip = 127.0.0.1/8 ::1 192.0.2.44"
        );
    }

    #[test]
    fn jail_bans_on_the_ports_the_firewall_opens_sip_moved_and_tls_on() {
        let h = host();
        let mut f = facts(UP, &[]);
        set_var(&mut f, "internal_sip_port=5060", "internal_sip_port=5070");
        set_var(&mut f, "internal_tls_port=5061", "internal_tls_port=5071");
        set_var(
            &mut f,
            "internal_ssl_enable=false",
            "internal_ssl_enable=true",
        );
        let (ports, _) = jail_ports(&f, &h).unwrap();
        let j = render_jail(&h, LOG, &ports);
        assert_eq!(line(&j, "port"), "port     = 5070,5071,5080,5081");
        // One function gives both: the firewall's SIP rules open exactly these port numbers.
        let w = firewall::wanted_rules(&f, &h, h.port, true);
        let opened: std::collections::BTreeSet<u16> = w
            .rules
            .iter()
            .filter(|r| r.purpose == firewall::Purpose::Sip)
            .map(|r| r.ports.first)
            .collect();
        assert_eq!(opened.into_iter().collect::<Vec<_>>(), ports.sip);
    }

    #[test]
    fn a_sip_port_change_on_the_host_rewrites_the_jail() {
        let h = host();
        let mut f = hardened(&h);
        assert!(plan(&f, &h, &HardenOptions::default()).unwrap().is_noop());
        set_var(&mut f, "internal_sip_port=5060", "internal_sip_port=5070");
        let p = plan(&f, &h, &HardenOptions::default()).unwrap();
        assert_eq!(
            p.changes,
            vec![
                format!("update {JAIL_PATH}"),
                "restart fail2ban (configuration changed)".to_string()
            ]
        );
        assert!(
            p.diffs[0].contains("-port     = 5060,5061,5080,5081\n+port     = 5061,5070,5080,5081"),
            "{}",
            p.diffs[0]
        );
    }

    #[test]
    fn sshd_jail_bans_on_the_ports_sshd_listens_on() {
        let mut h = host();
        let mut f = facts(UP, &[]);
        f.base.sshd_ports = vec![2222];
        let (ports, warnings) = jail_ports(&f, &h).unwrap();
        assert!(warnings.is_empty());
        let j = render_jail(&h, LOG, &ports);
        assert_eq!(in_section(&j, "sshd", "port"), "port    = 2222");
        // The SIP jail is not affected.
        assert_eq!(line(&j, "port"), "port     = 5060,5061,5080,5081");
        f.base.sshd_ports = vec![2222, 22, 2222];
        let (ports, _) = jail_ports(&f, &h).unwrap();
        assert_eq!(ports.ssh, [22, 2222]);
        // Unknown: the port fsfleet is connected through, and the report says so.
        f.base.sshd_ports.clear();
        h.port = 2200;
        let (ports, warnings) = jail_ports(&f, &h).unwrap();
        assert_eq!(ports.ssh, [2200]);
        assert!(
            warnings[0].contains("sshd listens on") && warnings[0].contains("port 2200"),
            "{warnings:?}"
        );
        let p = plan(&f, &h, &HardenOptions::default()).unwrap();
        assert_eq!(p.warnings, warnings);
    }

    #[test]
    fn no_sip_port_or_more_than_multiport_takes_is_refused() {
        let h = host();
        let mut f = facts(UP, &[]);
        f.files
            .files
            .retain(|path, _| !path.contains("/sip_profiles/"));
        let err = plan(&f, &h, &HardenOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("pbx1") && err.contains("no SIP port"), "{err}");
        let mut f = facts(UP, &[]);
        f.base.sshd_ports = (2200..2216).collect();
        let err = jail_ports(&f, &h).unwrap_err().to_string();
        assert!(
            err.contains("sshd jail would ban on 16 ports") && err.contains("15"),
            "{err}"
        );
    }

    #[test]
    fn hardened_host_plans_nothing() {
        let h = host();
        let p = plan(&hardened(&h), &h, &HardenOptions::default()).unwrap();
        assert!(p.is_noop(), "{p:?}");
    }

    #[test]
    fn fresh_host_writes_both_files_enables_and_starts() {
        let state = "installed yes\nactive inactive\nenabled disabled\n";
        let p = plan(&facts(state, &[]), &host(), &HardenOptions::default()).unwrap();
        assert_eq!(
            p.changes,
            vec![
                format!("create {FILTER_PATH}"),
                format!("create {JAIL_PATH}"),
                "start fail2ban (not active)".to_string(),
                "enable fail2ban at boot (systemctl enable)".to_string(),
            ]
        );
        assert_eq!(p.action.logpath, LOG);
        assert!(p.action.percent_default);
        let s = apply_script(&p.action);
        assert!(s.contains("put '/etc/fail2ban/filter.d/freeswitch.local'"));
        assert!(
            s.contains("systemctl restart fail2ban") && s.contains("systemctl enable fail2ban")
        );
        assert!(s.contains("fail2ban-regex --out ip"));
        // Not installed yet (the packages step runs first): still a plan, not a refusal.
        let p = plan(
            &facts("active inactive\n", &[]),
            &host(),
            &HardenOptions::default(),
        )
        .unwrap();
        assert!(p.changes.iter().any(|c| c.contains("packages step")));
    }

    #[test]
    fn changed_inventory_rewrites_only_the_jail_and_restarts() {
        let h = host();
        let f = hardened(&h);
        let mut h2 = h.clone();
        h2.fail2ban.maxretry = 8;
        let p = plan(&f, &h2, &HardenOptions::default()).unwrap();
        assert_eq!(
            p.changes,
            vec![
                format!("update {JAIL_PATH}"),
                "restart fail2ban (configuration changed)".to_string()
            ]
        );
        assert!(
            p.diffs[0].contains("-maxretry = 5\n+maxretry = 8"),
            "{}",
            p.diffs[0]
        );
        let s = apply_script(&p.action);
        assert!(
            !s.contains("put '/etc/fail2ban/filter.d/"),
            "filter unchanged: not rewritten"
        );
        assert!(s.contains("put '/etc/fail2ban/jail.d/fsfleet-freeswitch.local'"));
        assert!(!s.contains("systemctl enable"));
    }

    #[test]
    fn down_service_or_missing_jail_restarts_without_writing() {
        let h = host();
        let mut f = hardened(&h);
        f.sections = Sections::from_pairs(&[(
            PROBE,
            "installed yes\nactive active\nenabled enabled\njails sshd\n",
            0,
        )]);
        let p = plan(&f, &h, &HardenOptions::default()).unwrap();
        assert_eq!(
            p.changes,
            vec!["restart fail2ban (the freeswitch jail is not running)"]
        );
        f.sections =
            Sections::from_pairs(&[(PROBE, "installed yes\nactive failed\nenabled enabled\n", 0)]);
        let p = plan(&f, &h, &HardenOptions::default()).unwrap();
        assert_eq!(p.changes, vec!["start fail2ban (not active)"]);
        assert!(!apply_script(&p.action).contains("put '"));
    }

    #[test]
    fn wrong_mode_is_fixed_and_refuses_without_log_dir() {
        let h = host();
        let mut f = hardened(&h);
        if let Some(x) = f.files.files.get_mut(FILTER_PATH) {
            x.mode = 0o600;
        }
        let p = plan(&f, &h, &HardenOptions::default()).unwrap();
        assert_eq!(p.changes[0], format!("fix owner/mode of {FILTER_PATH}"));
        let mut f = hardened(&h);
        if let Some(fs) = f.base.freeswitch.as_mut() {
            fs.log_dir = None;
        }
        let err = plan(&f, &h, &HardenOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("pbx1") && err.contains("log directory"),
            "{err}"
        );
    }

    #[test]
    fn log_format_follows_version_when_the_log_is_empty() {
        assert!(version_logs_percent(Some("1.10.12-release  64bit")));
        assert!(version_logs_percent(Some("1.10.7-release")));
        assert!(!version_logs_percent(Some("1.10.6-release")));
        assert!(!version_logs_percent(Some("1.8.7")));
        assert!(version_logs_percent(None));
        let (f, c) = sample_lines(true);
        assert!(f.contains(" 97.50% [WARNING] ") && f.ends_with(SAMPLE_FAILURE_IP));
        assert!(c.contains("SIP auth challenge"));
        let (f, _) = sample_lines(false);
        assert!(!f.contains('%'));
    }

    #[test]
    fn proof_requires_exactly_the_failure_address() {
        let out = "@@jails\n@jail freeswitch\nStatus for the jail: freeswitch\n|- Filter\n|  |- Currently failed:\t0\n\
                   |  |- Total failed:\t0\n|  `- File list:\t/var/log/freeswitch/freeswitch.log\n\
                   `- Actions\n   |- Currently banned:\t2\n   |- Total banned:\t7\n   `- Banned IP list:\t\n\
                   @jail sshd\nStatus for the jail: sshd\n|  `- Journal matches:\tx\n\
                   @exists /var/log/freeswitch/freeswitch.log\n\
                   @@format\npercent log\n@@regex\n198.51.100.23\n";
        let ev = evidence("pbx1", out).unwrap();
        assert!(ev[0].contains("2 currently banned") && ev[0].contains("7 banned in total"));
        assert!(ev[0].contains("file list: /var/log/freeswitch/freeswitch.log"));
        assert!(ev[1].contains("sshd: up"));
        assert!(ev[2].contains("1.10.7+ format") && ev[2].contains("newest log line"));
        let both = out.replace("198.51.100.23\n", "198.51.100.23\n198.51.100.24\n");
        let err = evidence("pbx1", &both).unwrap_err().to_string();
        assert!(
            err.contains("pbx1") && err.contains("198.51.100.24"),
            "{err}"
        );
        assert!(evidence("pbx1", &out.replace("198.51.100.23\n", "")).is_err());
    }
}
