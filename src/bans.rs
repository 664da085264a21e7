//! `fsfleet bans`: the fleet's current fail2ban bans in one table, shared across the fleet
//! (`--share`), lifted everywhere (`--unban`), or taken from a blocklist (`--import`).
//!
//! Each host is read in ONE round trip ([`read_script`]): one `fail2ban-client -i` start asks
//! the server for its database file and the bans of fsfleet's two jails (`get JAIL banip
//! --with-time`: what is banned NOW, from the server's memory), then `python3` (fail2ban's own
//! interpreter) reads that database read-only for each ban's time and the failures that led to it
//! (table `bips`, fail2ban >= 0.11). The same script says which address the host sees the
//! controller's SSH connection come from, so `--share` and `--import` never ban it.
//!
//! Everything the host prints is untrusted: [`parse_answers`] accepts only the lines it expects
//! and every address is parsed as an IP address or CIDR network on the controller before it goes
//! anywhere. Changes send fail2ban-client the addresses as the controller formats them
//! ([`show`]), in fail2ban-client's own command stream on stdin: no host text, and no address at
//! all, is ever part of a shell command.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::IpNet;
use serde::Serialize;

use crate::cli::{BansArgs, Format};
use crate::cmd::{self, CmdError};
use crate::fleet::{self, HostError};
use crate::inventory::Host;
use crate::report::{HostReport, RunReport, StepReport, StepStatus};
use crate::ssh::{Session, sh_quote};

/// The FreeSWITCH jail `fsfleet harden` writes (`harden::fail2ban::render_jail`): the one bans
/// are shared to and imported into. It bans on the SIP and SIP-TLS ports only.
pub const SIP_JAIL: &str = "freeswitch";
/// harden's sshd jail: listed, never shared (a mistyped SSH password from an office must not cut
/// that office's phones off every host).
pub const SSH_JAIL: &str = "sshd";
/// The jails `fsfleet bans` reads.
pub const JAILS: [&str; 2] = [SIP_JAIL, SSH_JAIL];

/// The widest networks `--share` and `--import` ban (the limits `fail2ban_ignore` has): a wider
/// one would cut SIP off for a large part of the Internet at once.
pub const MIN_PREFIX_V4: u8 = 8;
pub const MIN_PREFIX_V6: u8 = 32;

const READ_LIMIT: Duration = Duration::from_secs(40);
/// How many addresses one `set JAIL banip` line carries.
const BAN_CHUNK: usize = 200;

/// Errors of `fsfleet bans` before any host is touched (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum BansError {
    #[error(transparent)]
    Cmd(#[from] CmdError),
    #[error("{0}")]
    Address(String),
    #[error("--check only applies to --share and --import (a listing changes nothing anyway)")]
    CheckAlone,
    #[error("cannot read the blocklist {path}")]
    ReadList {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the blocklist {path} is refused, nothing was changed on any host:\n{problems}")]
    BadList { path: String, problems: String },
    #[error("cannot encode the JSON report")]
    Json(#[from] serde_json::Error),
}

/// What a host's answer could not be read as (the host fails, with this line).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    #[error("fail2ban is not installed (run `fsfleet harden`)")]
    NotInstalled,
    #[error("fail2ban-server is not running (run `fsfleet harden`, or `systemctl start fail2ban`)")]
    NotRunning,
    #[error("fail2ban-client did not answer every command (server busy or stopped?)")]
    Incomplete,
    #[error("unexpected line in fail2ban's answer: {0}")]
    Malformed(String),
    #[error("jail {0} is not running on this host (run `fsfleet harden`)")]
    JailDown(String),
}

/// A ban the server holds now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ban {
    pub jail: String,
    /// Address or network, as [`show`] writes it.
    #[serde(serialize_with = "ser_net")]
    pub address: IpNet,
    /// When the ban started (Unix seconds, UTC), from fail2ban's database.
    pub since: Option<i64>,
    /// Seconds the ban lasts (-1: for ever), from the database.
    pub bantime: Option<i64>,
    /// The failures that led to the ban (0 for a ban set by hand or by fsfleet).
    pub failures: Option<u64>,
}

fn ser_net<S: serde::Serializer>(net: &IpNet, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&show(net))
}

/// One host's bans as [`read_script`] found them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HostBans {
    /// The address this host sees the controller's SSH connection come from.
    pub controller: Option<IpAddr>,
    /// The jails of [`JAILS`] that run, with their bans.
    pub jails: BTreeMap<String, Vec<Ban>>,
    /// The jails of [`JAILS`] that do not run.
    pub not_running: Vec<String>,
}

impl HostBans {
    /// Every ban of every running jail, jail by jail.
    pub fn bans(&self) -> impl Iterator<Item = &Ban> {
        self.jails.values().flatten()
    }

    fn has(&self, jail: &str, net: &IpNet) -> bool {
        self.jails
            .get(jail)
            .is_some_and(|b| b.iter().any(|b| b.address == *net))
    }
}

/// `198.51.100.7` for a single address, `198.51.100.0/24` for a network: how fail2ban writes them.
pub fn show(net: &IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

/// An address or network as fail2ban would read it, strictly: an IP address, or a CIDR network
/// without bits beyond its prefix. An IPv4-mapped IPv6 address becomes its IPv4 form (fail2ban
/// reads it as IPv4).
pub fn parse_net(raw: &str) -> Result<IpNet, String> {
    let net = if let Ok(net) = raw.parse::<IpNet>() {
        net
    } else if let Ok(ip) = raw.parse::<IpAddr>() {
        IpNet::from(ip)
    } else {
        return Err(format!(
            "`{}` is not an IP address or CIDR network",
            raw.escape_debug()
        ));
    };
    if net.trunc() != net {
        return Err(format!(
            "`{}` has bits set beyond its /{} prefix: write the network `{}` or the single \
             address `{}`",
            raw.escape_debug(),
            net.prefix_len(),
            net.trunc(),
            net.addr()
        ));
    }
    if let IpNet::V6(v6) = net
        && net.prefix_len() == 128
        && let Some(v4) = v6.addr().to_ipv4_mapped()
    {
        return Ok(IpNet::from(IpAddr::V4(v4)));
    }
    Ok(net)
}

/// Why an address may not be banned anywhere, whatever the host (None: it may).
pub fn refuse_anywhere(net: &IpNet) -> Option<String> {
    let shown = show(net);
    let (family, min) = match net {
        IpNet::V4(_) => ("IPv4", MIN_PREFIX_V4),
        IpNet::V6(_) => ("IPv6", MIN_PREFIX_V6),
    };
    if net.prefix_len() == 0 {
        return Some(format!(
            "{shown} is every {family} address: banning it would cut SIP off for everyone"
        ));
    }
    if net.prefix_len() < min {
        return Some(format!(
            "{shown} is wider than a /{min}: fsfleet does not ban that much of the Internet at once"
        ));
    }
    let a = net.addr();
    if a.is_loopback() || net.contains(&IpAddr::from([127, 0, 0, 1])) {
        return Some(format!("{shown} is a loopback address"));
    }
    if a.is_unspecified() || a.is_multicast() {
        return Some(format!("{shown} is no peer's address"));
    }
    None
}

/// `a` and `b` share at least one address.
fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Why `net` must not be banned on `host` (None: it may). `controllers`: the addresses the hosts
/// see the controller come from.
pub fn protected(
    net: &IpNet,
    host: &Host,
    controllers: &BTreeSet<IpAddr>,
    fleet: &BTreeMap<IpAddr, String>,
) -> Option<String> {
    if let Some(why) = refuse_anywhere(net) {
        return Some(why);
    }
    if let Some(c) = controllers.iter().find(|c| net.contains(*c)) {
        return Some(format!("it holds the controller's address {c}"));
    }
    // One host's bans are that host's word (its log is writable by the FreeSWITCH user): they
    // never cut a host of the fleet off from the others.
    if let Some((a, name)) = fleet.iter().find(|(a, _)| net.contains(*a)) {
        return Some(format!(
            "it holds {name}'s address {a} (a host of this fleet)"
        ));
    }
    if let Some(i) = host.fail2ban_ignore.iter().find(|i| overlaps(net, i)) {
        return Some(format!("it is in fail2ban_ignore {}", show(i)));
    }
    // An allow-list of the whole Internet (phones anywhere) names no peer in particular.
    if let Some(a) = host
        .sip_allow_from
        .iter()
        .find(|a| a.prefix_len() > 0 && overlaps(net, a))
    {
        return Some(format!("it is in sip_allow_from {}", show(a)));
    }
    None
}

/// The script that reads a host's bans (one round trip, read-only). Lines it prints:
/// `@client ADDR`, `@nofail2ban`, `@noserver`, then fail2ban-client's answers (`@db` and
/// `@jail:NAME` blocks, `@end`), then `@row` lines from the database.
pub fn read_script() -> String {
    let mut cmds = String::from("echo @db\nget dbfile\n");
    for j in JAILS {
        cmds.push_str(&format!("echo @jail:{j}\nget {j} banip --with-time\n"));
    }
    cmds.push_str("echo @end\nexit\n");
    format!(
        "{client}\n\
         command -v fail2ban-client >/dev/null || {{ echo @nofail2ban; exit 0; }}\n\
         {server}\n\
         [ -n \"$p\" ] || {{ echo @noserver; exit 0; }}\n\
         out=$(printf '%s' {cmds} | timeout 15 fail2ban-client -i 2>/dev/null | sed 's/^fail2ban> //')\n\
         printf '%s\\n' \"$out\"\n\
         db=$(printf '%s\\n' \"$out\" | sed -n '/^@db$/,/^@jail:/ s/^`- //p' | head -n 1)\n\
         case $db in /*) [ -f \"$db\" ] && timeout 15 python3 -I -c {python} \"$db\" 2>/dev/null ;; esac\n\
         true",
        client = CLIENT_SNIPPET,
        server = crate::model::fail2ban::server_pid_snippet("/proc"),
        cmds = sh_quote(&cmds),
        python = sh_quote(&db_program()),
    )
}

/// The Python program that prints a `@row` line (jail, address, time of ban, bantime, failures)
/// for each of [`JAILS`]' bans in fail2ban's database (argv[1]), opened read-only.
pub fn db_program() -> String {
    let jails = JAILS
        .iter()
        .map(|j| format!("'{j}'"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "import sqlite3, sys, json\n\
         c = sqlite3.connect('file:' + sys.argv[1] + '?mode=ro', uri=True)\n\
         for j, ip, t, bt, d in c.execute(\"SELECT jail, ip, timeofban, bantime, data FROM bips WHERE jail IN ({jails})\"):\n\
         \x20   try:\n\
         \x20       f = json.loads(d).get('failures')\n\
         \x20   except Exception:\n\
         \x20       f = None\n\
         \x20   print('@row', j, ip, t, bt, f if isinstance(f, int) else '-', sep='\\t')\n"
    )
}

/// Prints `@client ADDR`: the first field of SSH_CONNECTION, from the environment or, through
/// sudo (which drops it), from the nearest ancestor process that has it (the login shell).
const CLIENT_SNIPPET: &str = "c=${SSH_CONNECTION%% *}\n\
     if [ -z \"$c\" ]; then q=$$; while [ -n \"$q\" ] && [ \"$q\" -gt 1 ] 2>/dev/null; do \
     c=$(tr '\\0' '\\n' </proc/\"$q\"/environ 2>/dev/null | sed -n 's/^SSH_CONNECTION=\\([^ ]*\\) .*/\\1/p' | head -n 1); \
     [ -n \"$c\" ] && break; q=$(awk '/^PPid:/ {print $2}' /proc/\"$q\"/status 2>/dev/null); done; fi\n\
     [ -z \"$c\" ] || echo \"@client $c\"";

/// fail2ban-client's command stream (stdin of `fail2ban-client -i`) that bans `nets` in `jail`
/// and then lists the jail's bans.
pub fn ban_commands(jail: &str, nets: &[IpNet]) -> String {
    let mut s = String::new();
    for chunk in nets.chunks(BAN_CHUNK) {
        let list: Vec<String> = chunk.iter().map(show).collect();
        s.push_str(&format!("set {jail} banip {}\n", list.join(" ")));
    }
    s.push_str(&format!(
        "echo @jail:{jail}\nget {jail} banip --with-time\necho @end\nexit\n"
    ));
    s
}

/// fail2ban-client's command stream that unbans `net` in every jail and lists the jails' bans.
pub fn unban_commands(net: &IpNet) -> String {
    let mut s = format!("echo @unban\nunban {}\n", show(net));
    for j in JAILS {
        s.push_str(&format!("echo @jail:{j}\nget {j} banip --with-time\n"));
    }
    s.push_str("echo @end\nexit\n");
    s
}

/// Runs fail2ban-client's interactive mode on the command stream it gets on stdin.
fn client_script(secs: u64) -> String {
    format!(
        "command -v fail2ban-client >/dev/null || {{ echo @nofail2ban; exit 0; }}\n\
         {server}\n\
         [ -n \"$p\" ] || {{ echo @noserver; exit 0; }}\n\
         timeout {secs} fail2ban-client -i 2>/dev/null | sed 's/^fail2ban> //'\n\
         true",
        server = crate::model::fail2ban::server_pid_snippet("/proc"),
    )
}

/// What a host answered, read strictly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answers {
    pub bans: HostBans,
    /// The answer to `unban`: how many bans it lifted.
    pub unbanned: Option<u64>,
}

/// Reads the output of [`read_script`] or [`client_script`]: every line must be one the scripts
/// or fail2ban print, every address a valid IP or network. A ban of the server with a database
/// row of the same jail and address gets its time and failures from the row.
pub fn parse_answers(text: &str) -> Result<Answers, AnswerError> {
    enum Block {
        None,
        Db,
        Unban,
        Jail(String),
    }
    let bad = |l: &str| {
        AnswerError::Malformed(
            l.chars()
                .take(120)
                .collect::<String>()
                .escape_debug()
                .to_string(),
        )
    };
    let mut a = Answers::default();
    let mut block = Block::None;
    let mut complete = false;
    let mut rows: HashMap<(String, IpNet), (i64, i64, Option<u64>)> = HashMap::new();
    for line in text.lines() {
        if line == "@nofail2ban" {
            return Err(AnswerError::NotInstalled);
        }
        if line == "@noserver" {
            return Err(AnswerError::NotRunning);
        }
        if let Some(c) = line.strip_prefix("@client ") {
            // Only used to leave an address out; an unreadable one leaves nothing out. A link-local
            // address may carry its zone (`fe80::1%eth0`); an IPv4-mapped one means the IPv4 peer.
            let addr = c.trim().split('%').next().unwrap_or("");
            a.bans.controller = parse_net(addr)
                .ok()
                .filter(|n| n.prefix_len() == n.max_prefix_len())
                .map(|n| n.addr());
            continue;
        }
        if let Some(row) = line.strip_prefix("@row\t") {
            let f: Vec<&str> = row.split('\t').collect();
            let [jail, ip, t, bt, fail] = f[..] else {
                return Err(bad(line));
            };
            let net = parse_net(ip).map_err(|_| bad(line))?;
            let t: i64 = t.parse().map_err(|_| bad(line))?;
            let bt: i64 = bt.parse().map_err(|_| bad(line))?;
            let fail = match fail {
                "-" => None,
                n => Some(n.parse().map_err(|_| bad(line))?),
            };
            rows.insert((jail.to_string(), net), (t, bt, fail));
            continue;
        }
        if line == "@db" {
            block = Block::Db;
            continue;
        }
        if line == "@unban" {
            block = Block::Unban;
            continue;
        }
        if line == "@end" {
            complete = true;
            block = Block::None;
            continue;
        }
        if let Some(j) = line.strip_prefix("@jail:") {
            if !JAILS.contains(&j) {
                return Err(bad(line));
            }
            a.bans.jails.insert(j.to_string(), Vec::new());
            block = Block::Jail(j.to_string());
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        match &block {
            // `Current database file is:` / `` `- PATH `` / `Database currently disabled`.
            Block::Db | Block::None => {}
            Block::Unban => {
                a.unbanned = Some(line.trim().parse().map_err(|_| bad(line))?);
            }
            Block::Jail(j) => {
                if line.starts_with("Sorry but the jail") {
                    a.bans.jails.remove(j);
                    a.bans.not_running.push(j.clone());
                    continue;
                }
                // `ADDR \tYYYY-MM-DD HH:MM:SS + BANTIME = YYYY-MM-DD HH:MM:SS`
                let (addr, rest) = line.split_once(" \t").ok_or_else(|| bad(line))?;
                let net = parse_net(addr).map_err(|_| bad(line))?;
                let words: Vec<&str> = rest.split(' ').collect();
                if words.len() != 7 || words[2] != "+" || words[4] != "=" {
                    return Err(bad(line));
                }
                let bantime: i64 = words[3].parse().map_err(|_| bad(line))?;
                if let Some(b) = a.bans.jails.get_mut(j) {
                    b.push(Ban {
                        jail: j.clone(),
                        address: net,
                        since: None,
                        bantime: Some(bantime),
                        failures: None,
                    });
                }
            }
        }
    }
    if !complete {
        return Err(AnswerError::Incomplete);
    }
    for b in a.bans.jails.values_mut().flatten() {
        if let Some((t, bt, f)) = rows.get(&(b.jail.clone(), b.address)) {
            b.since = Some(*t);
            b.bantime = Some(*bt);
            b.failures = *f;
        }
    }
    Ok(a)
}

/// What `--share` or `--import` does on one host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HostPlan {
    /// To ban in the freeswitch jail, each with where it comes from.
    pub add: Vec<Planned>,
    /// Left out, with why.
    pub skipped: Vec<Skipped>,
    /// Already banned in the freeswitch jail.
    pub already: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Planned {
    #[serde(serialize_with = "ser_net")]
    pub address: IpNet,
    /// The hosts it is banned on (`--share`), or the blocklist line (`--import`).
    pub from: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    #[serde(serialize_with = "ser_net")]
    pub address: IpNet,
    pub reason: String,
}

/// The addresses the hosts see the controller come from.
pub fn controllers<'a>(read: impl IntoIterator<Item = &'a HostBans>) -> BTreeSet<IpAddr> {
    read.into_iter().filter_map(|b| b.controller).collect()
}

/// The inventory addresses of the hosts of the run that are IP addresses (a name is not
/// resolved here).
pub fn fleet_addresses<'a>(hosts: impl IntoIterator<Item = &'a Host>) -> BTreeMap<IpAddr, String> {
    hosts
        .into_iter()
        .filter_map(|h| {
            let a = h.address.trim_start_matches('[').trim_end_matches(']');
            a.parse::<IpAddr>().ok().map(|ip| (ip, h.name.clone()))
        })
        .collect()
}

/// `--share`: every address banned in the freeswitch jail of some host, for every OTHER host that
/// does not have it banned yet and may ban it ([`protected`]).
pub fn plan_share(read: &[(&Host, &HostBans)]) -> Vec<HostPlan> {
    let controllers = controllers(read.iter().map(|(_, b)| *b));
    let fleet = fleet_addresses(read.iter().map(|(h, _)| *h));
    let mut origins: BTreeMap<IpNet, Vec<&str>> = BTreeMap::new();
    for (h, b) in read {
        for ban in b.jails.get(SIP_JAIL).into_iter().flatten() {
            origins.entry(ban.address).or_default().push(&h.name);
        }
    }
    read.iter()
        .map(|(h, b)| {
            let mut plan = HostPlan::default();
            for (net, from) in &origins {
                let others: Vec<&str> = from.iter().copied().filter(|n| *n != h.name).collect();
                if others.is_empty() {
                    continue;
                }
                if b.has(SIP_JAIL, net) {
                    plan.already += 1;
                } else if let Some(reason) = protected(net, h, &controllers, &fleet) {
                    plan.skipped.push(Skipped {
                        address: *net,
                        reason,
                    });
                } else {
                    plan.add.push(Planned {
                        address: *net,
                        from: format!("banned on {}", others.join(", ")),
                    });
                }
            }
            plan
        })
        .collect()
}

/// One valid entry of a blocklist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    pub line: usize,
    pub net: IpNet,
}

/// A blocklist in the plain format APIBAN and VoIPBL export: one address or CIDR network per
/// line, `#` starts a comment (whole line or after the address), blank lines are skipped. Every
/// problem is returned with its line number; any problem refuses the whole list.
pub fn parse_list(text: &str) -> Result<Vec<ListEntry>, Vec<String>> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if line.split_whitespace().count() > 1 {
            problems.push(format!(
                "line {n}: `{}` has more than one word: one address or network per line",
                line.escape_debug()
            ));
            continue;
        }
        match parse_net(line) {
            Err(e) => problems.push(format!("line {n}: {e}")),
            Ok(net) => match refuse_anywhere(&net) {
                Some(why) => problems.push(format!("line {n}: refused: {why}")),
                None => {
                    if seen.insert(net) {
                        out.push(ListEntry { line: n, net });
                    }
                }
            },
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// `--import`: every entry of the list, on every host that does not have it banned yet and may
/// ban it.
pub fn plan_import(list: &[ListEntry], read: &[(&Host, &HostBans)]) -> Vec<HostPlan> {
    let controllers = controllers(read.iter().map(|(_, b)| *b));
    let fleet = fleet_addresses(read.iter().map(|(h, _)| *h));
    read.iter()
        .map(|(h, b)| {
            let mut plan = HostPlan::default();
            for e in list {
                if b.has(SIP_JAIL, &e.net) {
                    plan.already += 1;
                } else if let Some(reason) = protected(&e.net, h, &controllers, &fleet) {
                    plan.skipped.push(Skipped {
                        address: e.net,
                        reason,
                    });
                } else {
                    plan.add.push(Planned {
                        address: e.net,
                        from: format!("line {}", e.line),
                    });
                }
            }
            plan
        })
        .collect()
}

/// An `--unban` argument: an address or network, never every address.
pub fn parse_unban(raw: &str) -> Result<IpNet, BansError> {
    let net = parse_net(raw.trim()).map_err(|e| BansError::Address(format!("--unban: {e}")))?;
    if net.prefix_len() == 0 {
        return Err(BansError::Address(format!(
            "--unban: {} is every address; name the address or network to unban",
            show(&net)
        )));
    }
    Ok(net)
}

type Sessions = Arc<Mutex<HashMap<String, Session>>>;

fn host_error(e: &crate::ssh::SshError) -> HostError {
    HostError::Failed(crate::errors::chain(e))
}

/// Runs `script` with `stdin` as root and reads the answers.
async fn ask(
    session: &Session,
    purpose: &str,
    script: &str,
    stdin: &[u8],
    limit: Duration,
) -> Result<Answers, HostError> {
    let out = session
        .run_for(purpose, script, stdin, limit)
        .await
        .map_err(|e| host_error(&e))?;
    if !out.success() {
        return Err(HostError::Failed(format!(
            "{purpose} exited {}: {}",
            out.status,
            crate::display::line(out.stderr_text().trim())
        )));
    }
    parse_answers(&out.stdout_text()).map_err(|e| HostError::Failed(e.to_string()))
}

/// Reads every host's bans in parallel; with `keep`, the sessions stay open for a second phase.
async fn read_all(
    hosts: Vec<Host>,
    opts: &fleet::FleetOptions,
    connector: Arc<crate::ssh::Connector>,
    keep: Option<Sessions>,
) -> fleet::FleetRun<Result<HostBans, HostError>> {
    fleet::run("bans", hosts, opts, move |ctx| {
        let connector = connector.clone();
        let keep = keep.clone();
        async move {
            ctx.stage("connecting");
            let session = cmd::connect(&connector, &ctx.host).await?;
            ctx.stage("reading bans");
            let r = ask(
                &session,
                "read fail2ban's bans",
                &read_script(),
                b"",
                READ_LIMIT,
            )
            .await;
            match (&r, keep) {
                (Ok(_), Some(keep)) => {
                    if let Ok(mut k) = keep.lock() {
                        k.insert(ctx.host.name.clone(), session);
                    }
                }
                _ => session.close().await,
            }
            r.map(|a| a.bans)
        }
    })
    .await
}

/// Bans `nets` in the freeswitch jail of each host of `plans` (sessions of the read phase, or a
/// new connection), then checks fail2ban lists every one of them.
async fn apply_all(
    plans: Vec<(Host, Vec<IpNet>)>,
    opts: &fleet::FleetOptions,
    connector: Arc<crate::ssh::Connector>,
    sessions: Sessions,
) -> HashMap<String, Result<Vec<IpNet>, HostError>> {
    let wanted: Arc<HashMap<String, Vec<IpNet>>> = Arc::new(
        plans
            .iter()
            .map(|(h, n)| (h.name.clone(), n.clone()))
            .collect(),
    );
    let hosts: Vec<Host> = plans.into_iter().map(|(h, _)| h).collect();
    let run = fleet::run("bans", hosts, opts, move |ctx| {
        let connector = connector.clone();
        let sessions = sessions.clone();
        let wanted = wanted.clone();
        async move {
            let nets = wanted.get(&ctx.host.name).cloned().unwrap_or_default();
            let kept = sessions
                .lock()
                .ok()
                .and_then(|mut s| s.remove(&ctx.host.name));
            let session = match kept {
                Some(s) => s,
                None => {
                    ctx.stage("connecting");
                    cmd::connect(&connector, &ctx.host).await?
                }
            };
            ctx.stage(&format!("banning {} address(es)", nets.len()));
            // iptables-multiport runs two actions per ban.
            let limit = Duration::from_secs(60) + Duration::from_millis(100) * nets.len() as u32;
            let r = ask(
                &session,
                "ban in the freeswitch jail",
                &client_script(limit.as_secs()),
                ban_commands(SIP_JAIL, &nets).as_bytes(),
                limit + Duration::from_secs(5),
            )
            .await;
            session.close().await;
            let now = r?.bans;
            if now.not_running.iter().any(|j| j == SIP_JAIL) {
                return Err(HostError::Failed(
                    AnswerError::JailDown(SIP_JAIL.into()).to_string(),
                ));
            }
            let missing: Vec<String> = nets
                .iter()
                .filter(|n| !now.has(SIP_JAIL, n))
                .map(show)
                .collect();
            if !missing.is_empty() {
                return Err(HostError::Failed(format!(
                    "fail2ban does not list {} as banned after `set {SIP_JAIL} banip` (see \
                     /var/log/fail2ban.log on the host)",
                    missing.join(", ")
                )));
            }
            Ok(nets)
        }
    })
    .await;
    run.hosts
        .into_iter()
        .map(|h| {
            let r = match h.outcome {
                fleet::HostOutcome::Finished(r) => r,
                fleet::HostOutcome::Aborted(w) | fleet::HostOutcome::NotStarted(w) => {
                    Err(HostError::Failed(w))
                }
            };
            (h.host.name, r)
        })
        .collect()
}

fn step(name: &str, status: StepStatus, message: String, evidence: Vec<String>) -> StepReport {
    StepReport {
        name: name.into(),
        status,
        message,
        evidence,
        elapsed_ms: 0,
    }
}

/// `fsfleet bans`: returns the exit code.
pub async fn command(args: BansArgs) -> Result<u8, BansError> {
    if args.check && !args.share && args.import.is_none() {
        return Err(BansError::CheckAlone);
    }
    // A bad blocklist or address is refused before anything connects.
    let list = match &args.import {
        Some(path) => Some(read_list(path)?),
        None => None,
    };
    let unban = args.unban.as_deref().map(parse_unban).transpose()?;
    let path = args.inventory.resolve();
    let (inv, hosts) = cmd::select(&path, args.inventory.format, args.run.limit.as_deref())?;
    let opts = fleet::FleetOptions {
        check: args.check,
        ..cmd::fleet_options(&args.run)?
    };
    let connector = cmd::connector(&inv, &hosts, &args.run).await;
    let report = if let Some(net) = unban {
        unban_fleet(hosts, &opts, connector, net).await
    } else if args.share || list.is_some() {
        change_fleet(hosts, &opts, connector, list.as_deref(), args.check).await
    } else {
        list_fleet(hosts, &opts, connector).await
    };
    let report = RunReport {
        check: args.check,
        ..report
    };
    match args.run.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report.to_json())?),
        Format::Text => print!("{}", render_text(&report)),
    }
    match report.write_retry_file(&inv.dir()) {
        Ok(Some(p)) if args.run.verbosity() >= 0 => {
            eprintln!("retry the failed hosts with: --limit @{}", p.display())
        }
        Ok(_) => {}
        Err(e) => eprintln!("fsfleet: cannot write the retry file: {e}"),
    }
    Ok(u8::try_from(report.exit_code()).unwrap_or(1))
}

fn read_list(path: &Path) -> Result<Vec<ListEntry>, BansError> {
    let text = std::fs::read_to_string(path).map_err(|source| BansError::ReadList {
        path: path.display().to_string(),
        source,
    })?;
    parse_list(&text).map_err(|p| BansError::BadList {
        path: path.display().to_string(),
        problems: p
            .iter()
            .map(|l| format!("  {l}"))
            .collect::<Vec<_>>()
            .join("\n"),
    })
}

/// The data of a host in the JSON report of a listing.
fn bans_data(b: &HostBans) -> serde_json::Value {
    serde_json::to_value(b).unwrap_or(serde_json::Value::Null)
}

async fn list_fleet(
    hosts: Vec<Host>,
    opts: &fleet::FleetOptions,
    connector: Arc<crate::ssh::Connector>,
) -> RunReport {
    read_all(hosts, opts, connector, None)
        .await
        .into_report(|host, ms, out| match out {
            Ok(b) => {
                let n = b.bans().count();
                let mut s = step("bans", StepStatus::Ok, format!("{n} ban(s)"), vec![]);
                s.elapsed_ms = ms;
                HostReport::from_steps(host, vec![s]).with_data(bans_data(&b))
            }
            Err(e) => e.into_report(host),
        })
}

async fn unban_fleet(
    hosts: Vec<Host>,
    opts: &fleet::FleetOptions,
    connector: Arc<crate::ssh::Connector>,
    net: IpNet,
) -> RunReport {
    let run = fleet::run("bans", hosts, opts, move |ctx| {
        let connector = connector.clone();
        async move {
            ctx.stage("connecting");
            let session = cmd::connect(&connector, &ctx.host).await?;
            ctx.stage("unbanning");
            let r = ask(
                &session,
                "unban in every jail",
                &client_script(30),
                unban_commands(&net).as_bytes(),
                Duration::from_secs(40),
            )
            .await;
            session.close().await;
            let a = r?;
            let left: Vec<&str> = a
                .bans
                .bans()
                .filter(|b| b.address == net)
                .map(|b| b.jail.as_str())
                .collect();
            if !left.is_empty() {
                return Err(HostError::Failed(format!(
                    "{} is still banned in {} after `unban`",
                    show(&net),
                    left.join(", ")
                )));
            }
            Ok((a.unbanned.unwrap_or(0), a.bans))
        }
    })
    .await;
    run.into_report(|host, ms, out| match out {
        Ok((n, b)) => {
            let (status, msg) = if n > 0 {
                (
                    StepStatus::Changed,
                    format!("unbanned {} ({n} ban(s) lifted)", show(&net)),
                )
            } else {
                (StepStatus::Ok, format!("{} was not banned", show(&net)))
            };
            let mut s = step("unban", status, msg, vec![]);
            s.elapsed_ms = ms;
            HostReport::from_steps(host, vec![s]).with_data(bans_data(&b))
        }
        Err(e) => e.into_report(host),
    })
}

/// `--share` and `--import`: read every host, plan, then (unless `check`) ban.
async fn change_fleet(
    hosts: Vec<Host>,
    opts: &fleet::FleetOptions,
    connector: Arc<crate::ssh::Connector>,
    list: Option<&[ListEntry]>,
    check: bool,
) -> RunReport {
    let name = if list.is_some() { "import" } else { "share" };
    let sessions: Sessions = Arc::new(Mutex::new(HashMap::new()));
    let keep = (!check).then(|| sessions.clone());
    let read = read_all(hosts, opts, connector.clone(), keep).await;
    let ok: Vec<(&Host, &HostBans)> = read
        .hosts
        .iter()
        .filter_map(|h| Some((&h.host, h.output()?.as_ref().ok()?)))
        .collect();
    let plans = match list {
        Some(list) => plan_import(list, &ok),
        None => plan_share(&ok),
    };
    let mut by_host: HashMap<String, (HostPlan, bool)> = HashMap::new();
    for ((h, b), p) in ok.iter().zip(plans) {
        let up = b.jails.contains_key(SIP_JAIL);
        by_host.insert(h.name.clone(), (p, up));
    }
    let todo: Vec<(Host, Vec<IpNet>)> = read
        .hosts
        .iter()
        .filter_map(|h| {
            let (p, up) = by_host.get(&h.host.name)?;
            (*up && !p.add.is_empty())
                .then(|| (h.host.clone(), p.add.iter().map(|a| a.address).collect()))
        })
        .collect();
    let applied = if check || todo.is_empty() {
        HashMap::new()
    } else {
        apply_all(todo, opts, connector, sessions.clone()).await
    };
    // Sessions of hosts with nothing to do.
    let left: Vec<Session> = sessions
        .lock()
        .map(|mut s| s.drain().map(|(_, v)| v).collect())
        .unwrap_or_default();
    for s in left {
        s.close().await;
    }
    read.into_report(|host, ms, out| {
        let bans = match out {
            Ok(b) => b,
            Err(e) => return e.into_report(host),
        };
        let mut steps = vec![{
            let mut s = step(
                "read",
                StepStatus::Ok,
                format!(
                    "{} ban(s) in {SIP_JAIL}",
                    bans.jails.get(SIP_JAIL).map_or(0, Vec::len)
                ),
                vec![],
            );
            s.elapsed_ms = ms;
            s
        }];
        let Some((plan, up)) = by_host.remove(&host.name) else {
            return HostReport::from_steps(host, steps);
        };
        let skipped: Vec<String> = plan
            .skipped
            .iter()
            .map(|s| format!("skip {}: {}", show(&s.address), s.reason))
            .collect();
        let would = if check { "would ban" } else { "banned" };
        let adds: Vec<String> = plan
            .add
            .iter()
            .map(|a| format!("{would} {} ({})", show(&a.address), a.from))
            .collect();
        let data = serde_json::to_value(&plan).unwrap_or(serde_json::Value::Null);
        let s = if !up {
            step(
                name,
                StepStatus::Failed,
                AnswerError::JailDown(SIP_JAIL.into()).to_string(),
                skipped,
            )
        } else if plan.add.is_empty() {
            step(
                name,
                StepStatus::Ok,
                format!(
                    "nothing to ban ({} already banned, {} skipped)",
                    plan.already,
                    plan.skipped.len()
                ),
                skipped,
            )
        } else if check {
            step(
                name,
                StepStatus::Changed,
                format!("would ban {} address(es) in {SIP_JAIL}", plan.add.len()),
                adds.into_iter().chain(skipped).collect(),
            )
        } else {
            match applied.get(&host.name) {
                Some(Ok(nets)) => step(
                    name,
                    StepStatus::Changed,
                    format!("banned {} address(es) in {SIP_JAIL}", nets.len()),
                    adds.into_iter().chain(skipped).collect(),
                ),
                Some(Err(e)) => step(name, StepStatus::Failed, e.to_string(), skipped),
                None => step(name, StepStatus::Failed, "not run".into(), skipped),
            }
        };
        steps.push(s);
        HostReport::from_steps(host, steps).with_data(data)
    })
}

/// Lines of a host's plan the text output shows (a blocklist can hold thousands).
const SHOWN_LINES: usize = 20;

/// The text output: the bans table (a listing) or each host's plan, then the recap.
pub fn render_text(report: &RunReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let listing = report
        .hosts
        .iter()
        .all(|h| h.steps.iter().all(|s| s.name == "bans"));
    if listing {
        let mut rows: Vec<[String; 6]> = Vec::new();
        let mut down: Vec<(String, String)> = Vec::new();
        for h in &report.hosts {
            let Some(data) = &h.data else { continue };
            let Ok(b) = serde_json::from_value::<ListedBans>(data.clone()) else {
                continue;
            };
            down.extend(b.not_running.iter().map(|j| (h.name.clone(), j.clone())));
            for (jail, bans) in &b.jails {
                for ban in bans {
                    rows.push([
                        h.name.clone(),
                        jail.clone(),
                        ban.address.clone(),
                        ban.since.map_or("-".into(), utc),
                        ban.bantime.map_or("-".into(), |t| {
                            if t < 0 {
                                "forever".into()
                            } else {
                                format!("{t}s")
                            }
                        }),
                        ban.failures.map_or("-".into(), |f| f.to_string()),
                    ]);
                }
            }
        }
        let head = [
            "HOST",
            "JAIL",
            "ADDRESS",
            "SINCE (UTC)",
            "BANTIME",
            "FAILURES",
        ];
        let mut w = head.map(str::len);
        for r in &rows {
            for (i, c) in r.iter().enumerate() {
                w[i] = w[i].max(c.chars().count());
            }
        }
        let line = |r: &[&str]| {
            let mut s = String::new();
            for (i, c) in r.iter().enumerate() {
                if i + 1 == r.len() {
                    s.push_str(c);
                } else {
                    let _ = write!(s, "{:<width$}  ", c, width = w[i]);
                }
            }
            s
        };
        if rows.is_empty() {
            out.push_str("no bans on the hosts read\n");
        } else {
            let _ = writeln!(out, "{}", line(&head));
            for r in &rows {
                let cells: Vec<&str> = r.iter().map(String::as_str).collect();
                let _ = writeln!(out, "{}", line(&cells));
            }
            let distinct: BTreeSet<&str> = rows.iter().map(|r| r[2].as_str()).collect();
            let _ = writeln!(
                out,
                "{} ban(s) of {} address(es)",
                rows.len(),
                distinct.len()
            );
        }
        for (host, jail) in &down {
            let _ = writeln!(
                out,
                "{host}: jail {jail} is not running (run `fsfleet harden`)"
            );
        }
    } else {
        for h in &report.hosts {
            for s in h.steps.iter().filter(|s| s.name != "read") {
                let _ = writeln!(out, "{}  {}", h.name, crate::display::line(&s.message));
                for e in s.evidence.iter().take(SHOWN_LINES) {
                    let _ = writeln!(out, "  {}", crate::display::line(e));
                }
                let more = s.evidence.len().saturating_sub(SHOWN_LINES);
                if more > 0 {
                    let _ = writeln!(out, "  ... and {more} more (--format json lists them all)");
                }
            }
        }
    }
    out.push('\n');
    out.push_str(&report.recap_text());
    out
}

/// The JSON data of a listed host, read back for the table.
#[derive(serde::Deserialize)]
struct ListedBans {
    jails: BTreeMap<String, Vec<ListedBan>>,
    not_running: Vec<String>,
}

#[derive(serde::Deserialize)]
struct ListedBan {
    address: String,
    since: Option<i64>,
    bantime: Option<i64>,
    failures: Option<u64>,
}

fn utc(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map_or_else(|| "-".into(), |d| d.format("%Y-%m-%d %H:%M:%S").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        parse_net(s).unwrap()
    }

    /// What a fail2ban 1.0.2 server answered the read script on a testbed host (two bans in the
    /// freeswitch jail, none in sshd), with the database rows after it.
    const ANSWER: &str = "@client 192.168.80.1\n\
        @db\n\
        Current database file is:\n\
        `- /var/lib/fail2ban/fail2ban.sqlite3\n\
        @jail:freeswitch\n\
        203.0.113.5 \t2026-11-29 23:30:22 + 3600 = 2026-11-30 00:30:22\n\
        2001:db8::/64 \t2026-11-29 23:30:22 + 3600 = 2026-11-30 00:30:22\n\
        @jail:sshd\n\
        \n\
        @end\n\
        \n\
        @row\tfreeswitch\t203.0.113.5\t1795995022\t3600\t5\n\
        @row\tfreeswitch\t198.51.100.9\t1795990000\t3600\t7\n";

    #[test]
    fn a_host_of_the_fleet_is_never_banned_by_another_hosts_word() {
        let mut fs02 = Host::with_defaults("fs02", "192.0.2.12");
        fs02.fail2ban_ignore.clear();
        let fleet = fleet_addresses([&fs02]);
        let h = Host::with_defaults("fs01", "192.0.2.11");
        let why = protected(
            &"192.0.2.12/32".parse().unwrap(),
            &h,
            &BTreeSet::new(),
            &fleet,
        );
        assert_eq!(
            why.as_deref(),
            Some("it holds fs02's address 192.0.2.12 (a host of this fleet)")
        );
        assert!(
            protected(
                &"203.0.113.9/32".parse().unwrap(),
                &h,
                &BTreeSet::new(),
                &fleet
            )
            .is_none()
        );
    }

    #[test]
    fn answers_give_the_servers_bans_with_the_databases_time_and_failures() {
        let a = parse_answers(ANSWER).unwrap();
        assert_eq!(a.bans.controller, Some("192.168.80.1".parse().unwrap()));
        for (line, want) in [
            ("@client ::ffff:192.0.2.9", Some("192.0.2.9")),
            ("@client fe80::1%eth0", Some("fe80::1")),
            ("@client 192.0.2.0/24", None),
            ("@client $(reboot)", None),
        ] {
            let a = parse_answers(&format!("{line}\n@end\n")).unwrap();
            assert_eq!(
                a.bans.controller,
                want.map(|w| w.parse().unwrap()),
                "{line}"
            );
        }
        let fs = &a.bans.jails["freeswitch"];
        assert_eq!(fs.len(), 2);
        assert_eq!(
            fs[0],
            Ban {
                jail: "freeswitch".into(),
                address: net("203.0.113.5"),
                since: Some(1795995022),
                bantime: Some(3600),
                failures: Some(5),
            }
        );
        // No database row: the server's bantime, nothing invented.
        assert_eq!((fs[1].since, fs[1].failures), (None, None));
        assert_eq!(fs[1].bantime, Some(3600));
        // A row of an expired ban (not in the server's list) is no current ban.
        assert!(!a.bans.bans().any(|b| b.address == net("198.51.100.9")));
        assert_eq!(a.bans.jails["sshd"], []);
        assert!(a.bans.not_running.is_empty());
    }

    #[test]
    fn a_jail_that_does_not_run_is_said_so() {
        let text =
            "@jail:freeswitch\nSorry but the jail 'freeswitch' does not exist\n@jail:sshd\n@end\n";
        let a = parse_answers(text).unwrap();
        assert_eq!(a.bans.not_running, ["freeswitch"]);
        assert!(a.bans.jails.contains_key("sshd") && !a.bans.jails.contains_key("freeswitch"));
    }

    #[test]
    fn host_text_that_is_not_fail2bans_answer_fails_the_host() {
        for (text, want) in [
            ("@nofail2ban\n", AnswerError::NotInstalled),
            ("@noserver\n", AnswerError::NotRunning),
            // fail2ban-client died before answering everything.
            (
                "@jail:freeswitch\n203.0.113.5 \t2026-11-29 23:30:22 + 3600 = 2026-11-30 00:30:22\n",
                AnswerError::Incomplete,
            ),
        ] {
            assert_eq!(parse_answers(text).unwrap_err(), want, "{text:?}");
        }
        for line in [
            // a name fail2ban would resolve, a shell word, a forged address, a short line
            "pbx.example.com \t2026-11-29 23:30:22 + 3600 = 2026-11-30 00:30:22",
            "$(reboot) \t2026-11-29 23:30:22 + 3600 = 2026-11-30 00:30:22",
            "203.0.113.5;reboot \t2026-11-29 23:30:22 + 3600 = 2026-11-30 00:30:22",
            "203.0.113.5/24 \t2026-11-29 23:30:22 + 3600 = 2026-11-30 00:30:22",
            "203.0.113.5 \t2026-11-29 23:30:22 + x = 2026-11-30 00:30:22",
            "203.0.113.5",
        ] {
            let text = format!("@jail:freeswitch\n{line}\n@end\n");
            assert!(
                matches!(parse_answers(&text), Err(AnswerError::Malformed(_))),
                "{line:?} was accepted"
            );
        }
        for row in [
            "@row\tfreeswitch\tevil\t1\t2\t3",
            "@row\tfreeswitch\t203.0.113.5\tnow\t2\t3",
            "@row\tfreeswitch\t203.0.113.5\t1\t2",
        ] {
            assert!(
                matches!(
                    parse_answers(&format!("{row}\n@end\n")),
                    Err(AnswerError::Malformed(_))
                ),
                "{row:?} was accepted"
            );
        }
        // An unknown jail marker is no answer of the script's.
        assert!(parse_answers("@jail:other\n@end\n").is_err());
        // The escaped line is cut and never carries a control character.
        let Err(AnswerError::Malformed(m)) =
            parse_answers(&format!("@jail:sshd\n\x1b[2J{}\n@end\n", "x".repeat(500)))
        else {
            panic!("accepted")
        };
        assert!(!m.contains('\x1b') && m.len() < 200, "{m}");
    }

    #[test]
    fn an_unban_answer_counts_the_lifted_bans() {
        let a = parse_answers("@unban\n2\n@jail:freeswitch\n\n@jail:sshd\n\n@end\n").unwrap();
        assert_eq!(a.unbanned, Some(2));
        assert!(parse_answers("@unban\nERROR\n@end\n").is_err());
    }

    #[test]
    fn addresses_are_read_strictly_and_written_as_fail2ban_writes_them() {
        assert_eq!(show(&net("203.0.113.5")), "203.0.113.5");
        assert_eq!(show(&net("198.51.100.0/24")), "198.51.100.0/24");
        assert_eq!(show(&net("2001:db8::/64")), "2001:db8::/64");
        assert_eq!(show(&net("::ffff:203.0.113.5")), "203.0.113.5");
        for bad in [
            "",
            "foo",
            "1.2.3",
            "1.2.3.4/33",
            "1.2.3.4/24",
            " 1.2.3.4",
            "1.2.3.4 ",
        ] {
            assert!(parse_net(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn blocklists_are_checked_whole_with_line_numbers() {
        let good =
            "# APIBAN\n203.0.113.5\n\n198.51.100.0/24   # a network\n2001:db8::1\n203.0.113.5\n";
        let list = parse_list(good).unwrap();
        assert_eq!(
            list,
            [
                ListEntry {
                    line: 2,
                    net: net("203.0.113.5")
                },
                ListEntry {
                    line: 4,
                    net: net("198.51.100.0/24")
                },
                ListEntry {
                    line: 5,
                    net: net("2001:db8::1")
                },
            ]
        );
        let bad = "203.0.113.5\nnot-an-ip\n0.0.0.0/0\n::/0\n10.0.0.1/8\n1.2.3.4 5.6.7.8\n4.0.0.0/6\n127.0.0.1\n";
        let problems = parse_list(bad).unwrap_err();
        let lines: Vec<&str> = problems
            .iter()
            .filter_map(|p| p.split(':').next())
            .collect();
        assert_eq!(
            lines,
            [
                "line 2", "line 3", "line 4", "line 5", "line 6", "line 7", "line 8"
            ],
            "{problems:#?}"
        );
        assert!(
            problems[1].contains("0.0.0.0/0 is every IPv4 address"),
            "{problems:#?}"
        );
        assert!(
            problems[2].contains("::/0 is every IPv6 address"),
            "{problems:#?}"
        );
    }

    fn bans(controller: &str, fs: &[&str]) -> HostBans {
        let mut b = HostBans {
            controller: controller.parse().ok(),
            ..HostBans::default()
        };
        b.jails.insert(
            SIP_JAIL.into(),
            fs.iter()
                .map(|a| Ban {
                    jail: SIP_JAIL.into(),
                    address: net(a),
                    since: None,
                    bantime: None,
                    failures: None,
                })
                .collect(),
        );
        b.jails.insert(SSH_JAIL.into(), Vec::new());
        b
    }

    fn adds(p: &HostPlan) -> Vec<String> {
        p.add.iter().map(|a| show(&a.address)).collect()
    }

    #[test]
    fn share_bans_each_address_on_every_other_host_except_protected_ones() {
        let a = Host::with_defaults("a", "192.0.2.1");
        let mut b = Host::with_defaults("b", "192.0.2.2");
        b.fail2ban_ignore = vec![net("198.51.100.0/24")];
        let mut c = Host::with_defaults("c", "192.0.2.3");
        c.sip_allow_from = vec![net("203.0.113.0/24"), net("0.0.0.0/0")];
        let ba = bans(
            "10.0.0.9",
            &["203.0.113.5", "198.51.100.7", "10.0.0.9", "100.64.0.1"],
        );
        let mut bb = bans("10.0.0.9", &["100.64.0.1"]);
        // sshd bans are never shared.
        bb.jails.get_mut(SSH_JAIL).unwrap().push(Ban {
            jail: SSH_JAIL.into(),
            address: net("192.0.2.200"),
            since: None,
            bantime: None,
            failures: None,
        });
        let bc = bans("10.0.0.9", &[]);
        let read = [(&a, &ba), (&b, &bb), (&c, &bc)];
        let plans = plan_share(&read);
        assert_eq!(
            adds(&plans[0]),
            Vec::<String>::new(),
            "a has every ban of b"
        );
        assert_eq!(plans[0].already, 1);
        assert_eq!(adds(&plans[1]), ["203.0.113.5"]);
        assert_eq!(plans[1].already, 1, "100.64.0.1 is banned on b too");
        let why = |p: &HostPlan, a: &str| {
            p.skipped
                .iter()
                .find(|s| show(&s.address) == a)
                .map(|s| s.reason.clone())
                .unwrap_or_default()
        };
        assert!(why(&plans[1], "198.51.100.7").contains("fail2ban_ignore 198.51.100.0/24"));
        assert!(why(&plans[1], "10.0.0.9").contains("controller's address"));
        // c allows 203.0.113.0/24 (its /0 entry protects nobody).
        assert_eq!(adds(&plans[2]), ["100.64.0.1", "198.51.100.7"]);
        assert!(why(&plans[2], "203.0.113.5").contains("sip_allow_from 203.0.113.0/24"));
        assert!(
            !plans
                .iter()
                .flat_map(|p| &p.add)
                .any(|a| show(&a.address) == "192.0.2.200")
        );

        // Once applied, a second share has nothing to do: idempotent.
        let with = |b: &HostBans, p: &HostPlan| {
            let mut b = b.clone();
            for a in &p.add {
                b.jails.get_mut(SIP_JAIL).unwrap().push(Ban {
                    jail: SIP_JAIL.into(),
                    address: a.address,
                    since: None,
                    bantime: None,
                    failures: None,
                });
            }
            b
        };
        let (ba2, bb2, bc2) = (
            with(&ba, &plans[0]),
            with(&bb, &plans[1]),
            with(&bc, &plans[2]),
        );
        let again = plan_share(&[(&a, &ba2), (&b, &bb2), (&c, &bc2)]);
        assert!(again.iter().all(|p| p.add.is_empty()), "{again:#?}");
    }

    #[test]
    fn a_network_overlapping_a_protected_one_is_not_banned_either_way() {
        let mut h = Host::with_defaults("h", "192.0.2.1");
        h.fail2ban_ignore = vec![net("198.51.100.7")];
        let none = BTreeSet::new();
        assert!(protected(&net("198.51.100.0/24"), &h, &none, &BTreeMap::new()).is_some());
        assert!(protected(&net("198.51.101.0/24"), &h, &none, &BTreeMap::new()).is_none());
        let ctl: BTreeSet<IpAddr> = ["192.0.2.50".parse().unwrap()].into();
        assert!(protected(&net("192.0.2.0/24"), &h, &ctl, &BTreeMap::new()).is_some());
        assert!(protected(&net("127.0.0.1"), &h, &none, &BTreeMap::new()).is_some());
        assert!(protected(&net("::1"), &h, &none, &BTreeMap::new()).is_some());
        assert!(protected(&net("4.0.0.0/7"), &h, &none, &BTreeMap::new()).is_some());
    }

    #[test]
    fn import_plans_every_entry_on_every_host_that_may_ban_it() {
        let a = Host::with_defaults("a", "192.0.2.1");
        let mut b = Host::with_defaults("b", "192.0.2.2");
        b.sip_allow_from = vec![net("198.51.100.0/24")];
        let list = parse_list("203.0.113.5\n198.51.100.0/25\n").unwrap();
        let (ba, bb) = (bans("", &["203.0.113.5"]), bans("", &[]));
        let plans = plan_import(&list, &[(&a, &ba), (&b, &bb)]);
        assert_eq!(adds(&plans[0]), ["198.51.100.0/25"]);
        assert_eq!(plans[0].already, 1);
        assert_eq!(adds(&plans[1]), ["203.0.113.5"]);
        assert_eq!(plans[1].add[0].from, "line 1");
        assert_eq!(plans[1].skipped.len(), 1);
    }

    #[test]
    fn unban_takes_an_address_or_network_but_never_everything() {
        assert_eq!(parse_unban("203.0.113.5").unwrap(), net("203.0.113.5"));
        assert_eq!(parse_unban("2001:db8::/64").unwrap(), net("2001:db8::/64"));
        for bad in ["0.0.0.0/0", "::/0", "foo", "1.2.3.4/24", "1.2.3.4;reboot"] {
            assert!(parse_unban(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn commands_carry_only_controller_formatted_addresses_in_chunks() {
        let nets: Vec<IpNet> = (0..450u32)
            .map(|i| IpNet::from(IpAddr::from((0xcb00_7100u32 + i).to_be_bytes())))
            .collect();
        let c = ban_commands(SIP_JAIL, &nets);
        let lines: Vec<&str> = c.lines().collect();
        assert_eq!(lines.len(), 3 + 4, "{c}");
        assert!(
            lines[..3]
                .iter()
                .all(|l| l.starts_with("set freeswitch banip "))
        );
        assert_eq!(lines[0].split(' ').count(), 3 + BAN_CHUNK);
        assert_eq!(
            &lines[3..],
            [
                "echo @jail:freeswitch",
                "get freeswitch banip --with-time",
                "echo @end",
                "exit"
            ]
        );
        assert!(
            unban_commands(&net("2001:db8::/64")).starts_with("echo @unban\nunban 2001:db8::/64\n")
        );
        // No address is ever in the scripts themselves (argv): only in fail2ban-client's stdin.
        assert!(!client_script(30).contains("banip"));
    }

    #[test]
    fn the_jails_are_the_ones_harden_writes() {
        let jail = crate::harden::fail2ban::render_jail(
            &Host::with_defaults("h", "192.0.2.1"),
            "/var/log/freeswitch/freeswitch.log",
            &crate::harden::fail2ban::JailPorts {
                sip: vec![5060],
                ssh: vec![22],
            },
        );
        for j in JAILS {
            assert!(
                crate::model::fail2ban::JailSettings::parse(&jail, j).is_some(),
                "harden writes no [{j}] jail"
            );
        }
    }

    fn sh(script: &str, env: &[(&str, &str)]) -> String {
        let mut c = std::process::Command::new("sh");
        c.arg("-c").arg(script).env_remove("SSH_CONNECTION");
        for (k, v) in env {
            c.env(k, v);
        }
        String::from_utf8_lossy(&c.output().unwrap().stdout).into_owned()
    }

    #[test]
    fn the_controllers_address_is_found_directly_or_through_sudo() {
        let conn = [("SSH_CONNECTION", "198.51.100.4 50022 192.0.2.1 22")];
        assert_eq!(sh(CLIENT_SNIPPET, &conn), "@client 198.51.100.4\n");
        // sudo drops SSH_CONNECTION: the login shell above still has it.
        let inner = format!("env -u SSH_CONNECTION sh -c {}", sh_quote(CLIENT_SNIPPET));
        assert_eq!(
            sh(&format!("{inner}; true"), &conn),
            "@client 198.51.100.4\n"
        );
        assert_eq!(sh(CLIENT_SNIPPET, &[]), "");
    }

    #[test]
    fn the_database_program_reads_fail2bans_bips_table() {
        if std::process::Command::new("python3")
            .arg("-V")
            .output()
            .is_err()
        {
            panic!("python3 is needed (scripts/setup installs fail2ban, which depends on it)");
        }
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("fail2ban.sqlite3");
        let make = "import sqlite3, sys\n\
            c = sqlite3.connect(sys.argv[1])\n\
            c.execute('CREATE TABLE bips(ip TEXT NOT NULL, jail TEXT NOT NULL, timeofban INTEGER NOT NULL, bantime INTEGER NOT NULL, bancount INTEGER NOT NULL default 1, data JSON, PRIMARY KEY(ip, jail))')\n\
            c.execute(\"INSERT INTO bips VALUES('203.0.113.5', 'freeswitch', 1795995022, 3600, 1, ?)\", (b'{\\\"matches\\\": [], \\\"failures\\\": 5}',))\n\
            c.execute(\"INSERT INTO bips VALUES('203.0.113.6', 'sshd', 1795995023, -1, 1, 'not json')\")\n\
            c.execute(\"INSERT INTO bips VALUES('203.0.113.7', 'recidive', 1, 1, 1, '{}')\")\n\
            c.commit()\n";
        let run = |prog: &str| {
            let out = std::process::Command::new("python3")
                .args(["-I", "-c", prog])
                .arg(&db)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        run(make);
        let rows = run(&db_program());
        assert_eq!(
            rows,
            "@row\tfreeswitch\t203.0.113.5\t1795995022\t3600\t5\n@row\tsshd\t203.0.113.6\t1795995023\t-1\t-\n"
        );
        let text = format!(
            "@jail:freeswitch\n203.0.113.5 \t2026-11-29 23:30:22 + 3600 = 2026-11-30 00:30:22\n\
             @jail:sshd\n203.0.113.6 \t2026-11-29 23:30:23 + -1 = 9999-12-31 23:59:59\n@end\n{rows}"
        );
        let a = parse_answers(&text).unwrap();
        assert_eq!(a.bans.jails["freeswitch"][0].failures, Some(5));
        assert_eq!(a.bans.jails["sshd"][0].bantime, Some(-1));
        assert_eq!(a.bans.jails["sshd"][0].since, Some(1795995023));
    }
}
