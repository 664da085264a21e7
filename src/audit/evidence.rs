//! What the controls of one host are evaluated on: everything read in the one facts round trip
//! (the same [`HostFacts`] harden uses), plus live probes of the Event Socket through the SSH
//! tunnel and a TCP probe from the controller.
//!
//! All snippets are read-only: `ss`, `ufw status`, `fail2ban-client status`, `fail2ban-regex`
//! on a crafted line (it only reads the filter), `stat`, `find`. No reload, no write, no SIP.

use std::time::Duration;

use super::ControlError;
use crate::esl::{EslClient, EslError, EslOptions};
use crate::esl_target::{self, Outside, Target};
use crate::facts::{self, FactError, LAYOUTS, Script, ScriptInput, Unit, fact};
use crate::harden::HostFacts;
use crate::inventory::Host;
use crate::model::fail2ban::{self as f2b, CachedProof};
use crate::model::{ESL_CONF, EventSocket, HostModel, ufw};
use crate::secret::Secret;
use crate::ssh::Session;
use crate::ssh::sh_quote;

/// Config files read beyond [`facts::CONF_FILES`] (in the same tar stream, see
/// [`facts::ScriptInput::conf_globs`]): dialplan includes hold the example gateway extensions.
/// The audit reads them, and the production steps that edit or look into the dialplan.
pub const EXTRA_CONF_FILES: &[&str] = &["dialplan/default/*.xml", "dialplan/public/*.xml"];

/// fs_cli reads these (FACTS §3); users' `~/.fs_cli_conf` are found by the snippet.
pub const FS_CLI_CONFS: &[&str] = &["/etc/fs_cli.conf", "/root/.fs_cli_conf"];

/// Result of one Event Socket login attempt through the SSH tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EslProbe {
    /// Not attempted; why.
    NotRun(String),
    /// The password was accepted. For the configured password: the `status` readiness line.
    Accepted { status: Option<String> },
    /// `-ERR invalid`.
    Refused,
    /// Rude rejection by the inbound ACL.
    AclRejected(String),
    /// No listener, tunnel refused, timeout, protocol trouble: the reason.
    Unavailable(String),
    /// Not attempted: the listener could not be proven to be the running FreeSWITCH's (another
    /// user's listener where the password would go, or the listeners unreadable). The reason.
    NotProven(String),
}

/// Result of the plain TCP connection from the controller to host:ESL-port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutsideProbe {
    NotRun(String),
    /// No TCP connection (refused, filtered, unroutable): the reason.
    NoConnection(String),
    /// Connected but no `auth/request` greeting: what was seen instead.
    NoGreeting(String),
    /// `Content-Type: auth/request`: the Event Socket answers the controller.
    Greeting,
}

/// The live probes of one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Live {
    pub esl_port: u16,
    /// `auth ClueCon` through the tunnel.
    pub cluecon: EslProbe,
    /// The password of event_socket.conf.xml through the tunnel, then `api status`.
    pub configured: EslProbe,
    pub outside: OutsideProbe,
}

impl Default for Live {
    fn default() -> Self {
        let why = "live probes were not run".to_string();
        Live {
            esl_port: crate::esl::DEFAULT_PORT,
            cluecon: EslProbe::NotRun(why.clone()),
            configured: EslProbe::NotRun(why.clone()),
            outside: OutsideProbe::NotRun(why),
        }
    }
}

/// Everything the controls of one host look at.
#[derive(Debug)]
pub struct Evidence {
    pub host: Host,
    pub facts: HostFacts,
    pub live: Live,
    /// The controller's fail2ban-regex proof for this host, offered to the script (see
    /// [`f2b::proof_snippet`]): the result when the host says nothing it depends on changed.
    pub proof_cache: Option<CachedProof>,
}

/// The shell that sets `$c` to the host's config dir (same search as the facts files snippet).
fn conf_dir_shell(host: &Host) -> String {
    let list = crate::facts::conf_candidates(host);
    format!("c=''; for d in {list}; do if [ -f \"$d/vars.xml\" ]; then c=$d; break; fi; done")
}

/// The candidate FreeSWITCH log files, for when the jail names none.
fn default_logs() -> Vec<String> {
    LAYOUTS
        .iter()
        .map(|(_, l, _)| format!("{l}/freeswitch.log"))
        .collect()
}

/// The program behind the credential, backup and fs_cli-config facts (`perl -e`, perl-base
/// only): finds the files and prints `F mode owner group path` for each and `D ...` for each
/// directory above it, as `find | sort -u` and a `stat` per line did (about 15 processes for the
/// three facts, now three).
const STAT_PROGRAM: &str = include_str!("stat_files.pl");

/// `exec perl` of [`STAT_PROGRAM`] with `args` (already shell words).
fn stat_files(args: &str) -> String {
    format!("exec perl -e {} -- {args}", sh_quote(STAT_PROGRAM))
}

/// `-find` arguments of [`STAT_PROGRAM`] (roots and patterns are constants, quoted anyway).
fn find_args(depth: u32, case: char, roots: &[&str], patterns: &[&str]) -> String {
    let q = |l: &[&str]| l.iter().map(|x| sh_quote(x)).collect::<Vec<_>>().join(" ");
    format!("-find {depth} {case} {} -- {} --", q(roots), q(patterns))
}

/// Build the one audit script of a host with no proof of its fail2ban filter held.
pub fn script(host: &Host) -> Script {
    script_with(host, None, true)
}

fact! {
    /// `iptables -S INPUT`: the INPUT policy and rules, for when ufw is not active.
    IptablesInput: "audit_iptables" => IptablesRules,
    snippet(_) {
        "command -v iptables >/dev/null || exit 3; iptables -S INPUT | head -n 200".into()
    }
    parse(text, status) {
        let policy = (status == Some(0))
            .then(|| {
                text.lines()
                    .find_map(|l| l.strip_prefix("-P INPUT "))
                    .map(|p| p.trim().to_string())
            })
            .flatten();
        Ok(IptablesRules {
            policy,
            rules: text.lines().map(str::to_string).collect(),
        })
    }
}

/// The [`IptablesInput`] section, read (host text: escaped when shown).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IptablesRules {
    /// `-P INPUT DROP` gives `DROP`; None when iptables did not run or printed no policy.
    pub policy: Option<String>,
    pub rules: Vec<String>,
}

impl IptablesRules {
    /// The rules that accept TCP `port` (`--dport PORT ... -j ACCEPT`).
    pub fn accepting(&self, port: u16) -> Vec<&str> {
        let dport = format!("--dport {port} ");
        self.rules
            .iter()
            .map(String::as_str)
            .filter(|l| l.contains(&dport) && l.contains("-j ACCEPT"))
            .collect()
    }
}

/// The `F|D mode owner group path` lines of a stat probe; the probe must have run (exit 0).
fn stats_of(fact: &'static str, text: &str, status: Option<i32>) -> Result<Vec<Stat>, FactError> {
    if status != Some(0) {
        return Err(FactError::NotRun { fact, status });
    }
    Ok(parse_stats(text))
}

fact! {
    /// Credentials files left in /root, /home, /tmp, /opt, /srv, with their ancestors' modes.
    Creds: "audit_creds" => Vec<Stat>,
    snippet(_) {
        let exact: String = CRED_FILES.iter().map(|f| format!("-f {} ", sh_quote(f))).collect();
        stat_files(&format!(
            "{exact}{}",
            find_args(
                3,
                'i',
                &["/root", "/home", "/tmp", "/opt", "/srv"],
                &["*freeswitch*cred*", "*freeswitch*passw*", "*fs*credential*", "*esl*passw*", "*sip*passw*"],
            )
        ))
    }
    parse(text, status) {
        stats_of(Self::NAME, text, status)
    }
}

/// Credentials files people leave in root's home.
const CRED_FILES: &[&str] = &[
    "/root/freeswitch-credentials.txt",
    "/root/freeswitch_credentials.txt",
    "/root/fs-credentials.txt",
    "/root/fsfleet-credentials.txt",
    "/root/credentials.txt",
    "/root/passwords.txt",
];

fact! {
    /// Backup copies of FreeSWITCH's config (in the config dir and the usual places).
    Backups: "audit_backups" => Vec<Stat>,
    snippet(input) {
        let conf = conf_dir_shell(input.host);
        // The config dir's copies (any depth, by the names editors and dpkg give them), then
        // archives and copies in the usual places.
        let in_conf = find_args(
            0,
            's',
            &[],
            &["*.bak", "*.orig", "*.old", "*~", "*.save", "*.swp", "*.back", "*.copy", "*.dpkg-old", "*.dpkg-dist", "*.xml.*"],
        )
        .replacen("-find 0 s ", "-find 0 s \"$c\" ", 1);
        let elsewhere = find_args(
            3,
            'i',
            &["/root", "/home", "/tmp", "/var/backups", "/opt", "/srv"],
            &["*freeswitch*.tar*", "*freeswitch*.tgz", "*freeswitch*.zip", "*freeswitch*.bak", "vars.xml*", "event_socket.conf.xml*"],
        );
        // No config dir: `$c` is empty, a root that does not exist.
        format!("{conf}\n{}", stat_files(&format!("{in_conf} {elsewhere}")))
    }
    parse(text, status) {
        stats_of(Self::NAME, text, status)
    }
}

fact! {
    /// fs_cli's config files (system, root's, every user's `~/.fs_cli_conf`).
    FsCliConfs: "audit_fscli_conf" => Vec<Stat>,
    snippet(_) {
        let exact: String = FS_CLI_CONFS.iter().map(|f| format!("-e {} ", sh_quote(f))).collect();
        stat_files(&format!("{exact}-home .fs_cli_conf"))
    }
    parse(text, status) {
        stats_of(Self::NAME, text, status)
    }
}

/// The audit's own fact units; with [`facts::BASE`] and the config files they make its script.
pub const UNITS: &[Unit] = &[
    Unit::of::<IptablesInput>(),
    Unit::of::<Creds>(),
    Unit::of::<Backups>(),
    Unit::of::<FsCliConfs>(),
    Unit::of::<super::vuln::facts::FsBinaryFact>(),
    Unit::of::<super::vuln::facts::VulnPackages>(),
    Unit::of::<super::vuln::facts::FsModulesFact>(),
];

/// Build the one audit script of a host: the audit's units, the base facts, the config files,
/// then the fail2ban snippets (not units yet, see [`facts::RAW_SECTIONS`]). `proof`: the
/// controller's fail2ban-regex proof for this host (its key goes to the script); `table`: the
/// keys of fsfleet's own proofs ([`f2b::PROVEN`]) go too (not with `audit --reprove`).
pub fn script_with(host: &Host, proof: Option<&CachedProof>, table: bool) -> Script {
    // ufw's rules and defaults from its own files, as harden reads them (no Python start).
    // fsfleet's jail file too: FS-F2B-02 compares its ports with the model's SIP ports.
    let ufw_files: Vec<String> = [
        ufw::USER_RULES,
        ufw::USER6_RULES,
        ufw::UFW_DEFAULTS,
        f2b::JAIL_FILE,
    ]
    .iter()
    .map(|p| p.to_string())
    .collect();
    let input = ScriptInput {
        host,
        files: &ufw_files,
        conf_globs: EXTRA_CONF_FILES,
    };
    let mut units = UNITS.to_vec();
    units.extend_from_slice(facts::BASE);
    units.push(Unit::of::<facts::ConfFiles>());
    let mut s = Script::of_units(&input, &units);
    // fail2ban's state as harden reads it, with the status of the two jails the controls look
    // at (one fail2ban-client start; none when no server runs).
    s.add(
        f2b::STATE_SECTION,
        &f2b::state_snippet(&["freeswitch", "sshd"]),
    );
    s.add(
        f2b::PROOF_SECTION,
        &f2b::proof_snippet(&default_logs(), proof.map(|p| p.key.as_str()), table),
    );
    s
}

/// One `stat` line of the `st` helper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub dir: bool,
    pub mode: u32,
    pub owner: String,
    pub group: String,
    pub path: String,
}

/// Parse `F|D mode owner group path` lines (paths may contain spaces).
pub fn parse_stats(text: &str) -> Vec<Stat> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(5, ' ');
            let kind = it.next()?;
            let mode = u32::from_str_radix(it.next()?, 8).ok()?;
            let (owner, group, path) = (it.next()?, it.next()?, it.next()?);
            Some(Stat {
                dir: match kind {
                    "F" => false,
                    "D" => true,
                    _ => return None,
                },
                mode,
                owner: owner.to_string(),
                group: group.to_string(),
                path: path.to_string(),
            })
        })
        .collect()
}

/// Who besides the owner can read a file: "world" when others can read it and traverse every
/// directory above it, "group G" likewise for its group (a root group counts as nobody extra).
pub fn readable_by(stats: &[Stat], file: &Stat) -> Option<String> {
    let ancestors: Vec<&Stat> = stats
        .iter()
        .filter(|d| d.dir && is_ancestor(&d.path, &file.path))
        .collect();
    let world = file.mode & 0o004 != 0 && ancestors.iter().all(|d| d.mode & 0o001 != 0);
    if world {
        return Some("world-readable".into());
    }
    let group = file.mode & 0o040 != 0
        && file.group != "root"
        && ancestors
            .iter()
            .all(|d| d.mode & 0o001 != 0 || (d.group == file.group && d.mode & 0o010 != 0));
    group.then(|| format!("readable by group {}", file.group))
}

fn is_ancestor(dir: &str, path: &str) -> bool {
    dir == "/" || path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}

impl Evidence {
    /// The config dir found on the host.
    pub fn conf_dir(&self) -> Result<&str, ControlError> {
        self.facts
            .files
            .conf_dir
            .as_deref()
            .ok_or_else(|| ControlError::NoConfDir {
                looked: LAYOUTS
                    .iter()
                    .map(|(c, _, _)| *c)
                    .collect::<Vec<_>>()
                    .join(", "),
                host: self.host.name.clone(),
            })
    }

    /// The text of a config file (relative to the config dir), or why it cannot be read.
    pub fn conf(&self, rel: &str) -> Result<&str, ControlError> {
        let dir = self.conf_dir()?;
        let f = self
            .facts
            .files
            .conf(rel)
            .ok_or_else(|| ControlError::Missing(format!("{dir}/{rel}")))?;
        text_of(f)
    }

    /// The host model harden also plans from: every FreeSWITCH setting a control looks at.
    pub fn model(&self) -> HostModel<'_> {
        HostModel::new(&self.facts)
    }

    /// The Event Socket settings (the model's one reader), or why they cannot be read.
    pub fn event_socket(&self) -> Result<EventSocket, ControlError> {
        self.conf(ESL_CONF)?;
        Ok(self.model().event_socket()?)
    }

    /// A snippet's output when it ran (status 0), else which probe did not run.
    pub fn ran(&self, section: &str, probe: &str) -> Result<&str, ControlError> {
        match self.section(section) {
            (text, Some(0)) => Ok(text),
            (_, status) => Err(ControlError::ProbeNotRun {
                probe: probe.to_string(),
                status,
            }),
        }
    }

    /// The Event Socket port the probes use: the config's, 8021 when unreadable (the
    /// controls that need the config report why).
    pub fn esl_port(&self) -> u16 {
        self.event_socket()
            .map_or(crate::esl::DEFAULT_PORT, |es| es.listen_port)
    }

    /// A snippet's output, or an error naming it when it did not run at all.
    pub fn section(&self, name: &str) -> (&str, Option<i32>) {
        (self.facts.section(name), self.facts.section_status(name))
    }
}

/// A config file's text, or why it cannot be read.
pub fn text_of(f: &facts::FileFact) -> Result<&str, ControlError> {
    f.text().ok_or_else(|| ControlError::Unreadable {
        path: f.path.clone(),
        size: f.size,
    })
}

/// The outcome of an Event Socket login through the tunnel (then `status` when asked), at a
/// listener proven to be FreeSWITCH's.
async fn esl_try(session: &Session, target: &Target, password: &Secret, status: bool) -> EslProbe {
    let opts = EslOptions {
        timeout: Duration::from_secs(5),
        ..EslOptions::default()
    };
    let stream = match session.tunnel_to(&target.address, target.port).await {
        Ok(s) => s,
        Err(e) => {
            return EslProbe::Unavailable(format!(
                "nothing accepted a connection on {}:{} on the host ({})",
                target.address,
                target.port,
                crate::errors::chain(&e)
            ));
        }
    };
    match EslClient::connect(stream, password, opts).await {
        Ok(mut client) => {
            let line = if status {
                match client.status().await {
                    Ok(s) => Some(format!(
                        "FreeSWITCH (Version {}) is {}",
                        s.version,
                        if s.ready { "ready" } else { "not ready" }
                    )),
                    Err(e) => Some(format!("api status failed: {e}")),
                }
            } else {
                None
            };
            let _ = client.exit().await;
            EslProbe::Accepted { status: line }
        }
        Err(EslError::AuthRejected) => EslProbe::Refused,
        Err(EslError::AclRejected { message }) => EslProbe::AclRejected(message),
        Err(e) => EslProbe::Unavailable(e.to_string()),
    }
}

/// The Event Socket probes through the tunnel: `auth ClueCon` (must be refused), then the
/// configured password with `api status` (skipped when the configured one IS ClueCon). Neither
/// runs unless the facts prove the listener is FreeSWITCH's own ([`esl_target`]).
pub async fn probe_esl(session: &Session, ev: &Evidence) -> (EslProbe, EslProbe) {
    let es = match ev.event_socket() {
        Ok(es) => es,
        Err(e) => {
            let why = e.evidence();
            return (EslProbe::NotRun(why.clone()), EslProbe::NotRun(why));
        }
    };
    let target = match esl_target::from_sections(&ev.facts.sections, &es.listen_ip, es.listen_port)
    {
        Ok(t) => t,
        Err(r) if r.is_absence() => {
            let why = r.to_string();
            return (
                EslProbe::Unavailable(why.clone()),
                EslProbe::Unavailable(why),
            );
        }
        Err(r) => {
            let why = r.to_string();
            return (EslProbe::NotProven(why.clone()), EslProbe::NotProven(why));
        }
    };
    // When ClueCon is the configured password its login is the configured one: it also asks
    // `api status` (the running version, for the FS-VULN controls).
    let is_default = es.password.expose() == crate::model::ESL_DEFAULT_PASSWORD;
    let cluecon = esl_try(session, &target, &Secret::new("ClueCon"), is_default).await;
    let configured = if is_default {
        EslProbe::NotRun("the configured password is ClueCon itself".into())
    } else {
        esl_try(session, &target, &es.password, true).await
    };
    (cluecon, configured)
}

/// From the controller: a plain TCP connection to address:port must not get an ESL greeting.
pub async fn probe_outside(address: &str, port: u16, limit: Duration) -> OutsideProbe {
    match esl_target::probe_outside(address, port, limit, limit).await {
        Outside::Filtered => {
            OutsideProbe::NoConnection(format!("no answer within {} s (filtered)", limit.as_secs()))
        }
        Outside::NoConnection(e) => OutsideProbe::NoConnection(e.to_string()),
        Outside::NoGreeting(what) => OutsideProbe::NoGreeting(what),
        Outside::Greeting => OutsideProbe::Greeting,
    }
}

#[cfg(test)]
pub mod testing {
    //! Evidence built from the stock config tree and hand-written snippet output.

    use super::*;

    pub const STOCK: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/reference/freeswitch-conf-1.10.12"
    );

    /// Sections from (name, text, status) triples, through the real parser.
    pub fn sections(pairs: &[(&str, &str, i32)]) -> facts::Sections {
        let mut s = Script::new();
        for (n, _, _) in pairs {
            s.add(n, "true");
        }
        // The token the host would draw, on the line the script prints first.
        let token = "0f8fad5b-d9cb-469f-a165-70867728950e";
        let mut out = format!("{}{token}@@\n", facts::TOKEN_LINE);
        for (n, body, st) in pairs {
            out.push_str(&format!(
                "@@{token} begin {n}@@\n{body}\n@@{token} end {n} {st}@@\n"
            ));
        }
        s.parse(out.as_bytes()).unwrap()
    }

    /// A host like a fresh testbed one.
    pub fn host() -> Host {
        let inv = crate::inventory::Inventory::parse_str(
            "[[hosts]]\nname = \"pbx1\"\naddress = \"192.0.2.5\"\nuser = \"root\"\n",
            std::path::Path::new("/tmp/inv.toml"),
            None,
        )
        .unwrap();
        inv.hosts[0].clone()
    }

    /// The config tree (relative path -> text) as the files section encodes it.
    pub fn files_section(files: &[(String, String)]) -> String {
        let mut out = String::from("C\t/etc/freeswitch\n");
        for (rel, text) in files {
            out.push_str(&format!(
                "F\t/etc/freeswitch/{rel}\t640 freeswitch freeswitch {}\t{}\n",
                text.len(),
                data_encoding::BASE64.encode(text.as_bytes())
            ));
        }
        out
    }

    /// Every stock file fsfleet audit reads, from the reference tree.
    pub fn stock_files() -> Vec<(String, String)> {
        let mut out = Vec::new();
        for glob in facts::CONF_FILES.iter().chain(EXTRA_CONF_FILES) {
            let (dir, pat) = match glob.rsplit_once('/') {
                Some((d, p)) => (d.to_string(), p),
                None => (String::new(), *glob),
            };
            let base = std::path::Path::new(STOCK).join(&dir);
            let names: Vec<String> = if let Some(ext) = pat.strip_prefix('*') {
                let mut v: Vec<String> = std::fs::read_dir(&base)
                    .unwrap()
                    .filter_map(|e| e.ok())
                    .filter(|e| e.path().is_file())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(ext))
                    .collect();
                v.sort();
                v
            } else {
                vec![pat.to_string()]
            };
            for n in names {
                let rel = if dir.is_empty() {
                    n.clone()
                } else {
                    format!("{dir}/{n}")
                };
                if let Ok(t) = std::fs::read_to_string(base.join(&n)) {
                    out.push((rel, t));
                }
            }
        }
        out
    }

    /// Apply an edit to one file of a tree.
    pub fn edit(files: &mut [(String, String)], rel: &str, f: impl Fn(&str) -> String) {
        let e = files.iter_mut().find(|(r, _)| r == rel).unwrap();
        e.1 = f(&e.1);
    }

    /// Evidence from a config tree and extra snippet sections.
    pub fn evidence(
        files: &[(String, String)],
        extra: &[(&str, &str, i32)],
        live: Live,
    ) -> Evidence {
        let files_text = files_section(files);
        let mut pairs: Vec<(&str, &str, i32)> = vec![("files", files_text.as_str(), 0)];
        pairs.extend_from_slice(extra);
        let facts = HostFacts::parse(sections(&pairs), "root", false).unwrap();
        Evidence {
            host: host(),
            facts,
            live,
            proof_cache: None,
        }
    }

    /// ufw's files as the model reads them: user.rules, user6.rules (their `### tuple ###`
    /// lines) and /etc/default/ufw with the given incoming policy (`DROP`, `ACCEPT`...).
    pub fn ufw_files(ev: &mut Evidence, rules: &str, rules6: &str, input_policy: &str) {
        let defaults = format!(
            "IPV6=yes\nDEFAULT_INPUT_POLICY=\"{input_policy}\"\nDEFAULT_OUTPUT_POLICY=\"ACCEPT\"\n"
        );
        for (path, text) in [
            (ufw::USER_RULES, rules.to_string()),
            (ufw::USER6_RULES, rules6.to_string()),
            (ufw::UFW_DEFAULTS, defaults),
        ] {
            put_file(ev, path, text, 0o640);
        }
    }

    /// One control's finding, through the one place evaluation errors become findings.
    pub fn eval(id: &str, ev: &Evidence) -> crate::audit::Finding {
        crate::audit::control(id).unwrap().run(ev)
    }

    /// A root-owned file read by absolute path, as the files section gives it.
    pub fn put_file(ev: &mut Evidence, path: &str, text: String, mode: u32) {
        ev.facts.files.files.insert(
            path.to_string(),
            facts::FileFact {
                path: path.to_string(),
                mode,
                owner: "root".into(),
                group: "root".into(),
                size: text.len() as u64,
                content: Some(text.into_bytes()),
            },
        );
    }

    /// The stock tree with no snippet output and no live probes.
    pub fn stock() -> Evidence {
        evidence(&stock_files(), &[], Live::default())
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn expands_vars_and_reads_stock_params() {
        let ev = stock();
        assert_eq!(ev.conf_dir().unwrap(), "/etc/freeswitch");
        let m = ev.model();
        assert_eq!(m.vars().expand_text("$${internal_sip_port}/x"), "5060/x");
        // FreeSWITCH's preprocessor writes nothing for a variable no `set` defines.
        assert_eq!(m.vars().expand_text("$${no_such}"), "");
        assert_eq!(ev.event_socket().unwrap().password.expose(), "ClueCon");
        assert_eq!(ev.esl_port(), 8021);
        let names: Vec<String> = m
            .sip_profiles()
            .profiles
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(
            names,
            ["external-ipv6", "external", "internal-ipv6", "internal"]
        );
        assert!(
            ev.conf("dialplan/default/01_example.com.xml")
                .unwrap()
                .contains("sofia/gateway")
        );
        let missing = ev.conf("nope.xml").unwrap_err().evidence();
        assert_eq!(missing, "/etc/freeswitch/nope.xml is missing on the host");
    }

    #[test]
    fn no_config_dir_says_what_to_do() {
        let ev = evidence(&[], &[], Live::default());
        let mut ev = ev;
        ev.facts.files.conf_dir = None;
        let e = ev.conf("vars.xml").unwrap_err().evidence();
        assert!(e.contains("set conf_dir for host pbx1"), "{e}");
    }

    #[test]
    fn readability_follows_the_directories_above() {
        let stats = parse_stats(
            "F 644 root root /root/x.bak\nD 700 root root /root\nD 755 root root /\n\
             F 644 root root /tmp/vars.xml.bak\nD 1777 root root /tmp\n\
             F 640 root freeswitch /etc/freeswitch/a.bak\nD 750 root freeswitch /etc/freeswitch\nD 755 root root /etc\n\
             F 600 root root /tmp/ok\n",
        );
        let f: Vec<&Stat> = stats.iter().filter(|s| !s.dir).collect();
        assert_eq!(readable_by(&stats, f[0]), None);
        assert_eq!(readable_by(&stats, f[1]).as_deref(), Some("world-readable"));
        assert_eq!(
            readable_by(&stats, f[2]).as_deref(),
            Some("readable by group freeswitch")
        );
        assert_eq!(readable_by(&stats, f[3]), None);
    }

    #[tokio::test]
    async fn outside_probe_tells_greeting_from_silence_and_refusal() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let (mut s, _) = l.accept().await.unwrap();
            s.write_all(b"Content-Type: auth/request\n\n")
                .await
                .unwrap();
            let (mut s2, _) = l.accept().await.unwrap();
            s2.write_all(b"Content-Type: text/rude-rejection\nContent-Length: 24\n\nAccess Denied, go away.\n")
                .await
                .unwrap();
            let (_s3, _) = l.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(2)).await;
        });
        let t = Duration::from_millis(500);
        assert_eq!(
            probe_outside("127.0.0.1", port, t).await,
            OutsideProbe::Greeting
        );
        assert!(matches!(
            probe_outside("127.0.0.1", port, t).await,
            OutsideProbe::NoGreeting(m) if m.contains("rude-rejection")
        ));
        assert!(matches!(
            probe_outside("127.0.0.1", port, t).await,
            OutsideProbe::NoGreeting(m) if m.contains("nothing was sent")
        ));
        server.abort();
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let cport = closed.local_addr().unwrap().port();
        drop(closed);
        assert!(matches!(
            probe_outside("127.0.0.1", cport, t).await,
            OutsideProbe::NoConnection(_)
        ));
    }
}

#[cfg(test)]
#[path = "stat_files_tests.rs"]
mod stat_files_tests;
