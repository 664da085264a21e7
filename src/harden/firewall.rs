//! Step `firewall`: ufw with default deny incoming, allow outgoing; SSH, SIP and RTP allowed.
//!
//! The rules come from what the host really runs: every port sshd listens on plus the port
//! fsfleet is connected through (never just "OpenSSH" = 22, FACTS §6), the SIP and TLS ports of
//! every loaded profile, the RTP range of switch.conf.xml. SIP is opened only to the host's
//! `sip_allow_from` sources when given. The Event Socket port is never opened.
//!
//! Every rule fsfleet adds carries a `fsfleet ...` comment, so a re-run recognises its own rules
//! (nothing to add; stale ones, e.g. SIP open to the world after an allow-list was set, are
//! deleted) and leaves the operator's rules alone unless `--firewall-reset`.
//!
//! Lock-out protection: rules are added before ufw is enabled; a watchdog on the host disables
//! ufw again unless fsfleet disarms it; after enabling, fsfleet opens a NEW SSH connection and,
//! if that fails within 20 s, disables ufw through the existing connection and fails the step.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use ipnet::IpNet;

use super::context::{HardenOptions, HostFacts, Probes, StepCtx, StepError, StepPlan};
use super::step::{Phase, Plan, PlanInput, Step};
use crate::inventory::Host;
use crate::model::{self, HostModel};
use crate::ssh::sh_quote;

/// The step's name (`--skip firewall`).
pub const NAME: &str = "firewall";

/// How long a NEW SSH connection may take after enabling ufw before fsfleet rolls back.
const PROOF_LIMIT: Duration = Duration::from_secs(20);
/// The on-host watchdog disables ufw this long after enabling unless fsfleet disarms it first
/// (covers the controller dying or the existing connection dropping during the proof).
const WATCHDOG_SECS: u64 = 120;
const APPLY_LIMIT: Duration = Duration::from_secs(120);

pub use crate::model::ufw::{Tuple, UFW_DEFAULTS, USER_RULES, USER6_RULES, UfwState, parse_tuples};
use crate::model::ufw::{dport_covers, is_any};
pub use crate::model::{Ports, Proto};

/// Why fsfleet opens a port; written into the rule's comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Purpose {
    Ssh,
    Sip,
    Rtp,
}

impl Purpose {
    fn comment(self) -> &'static str {
        match self {
            Purpose::Ssh => "fsfleet ssh",
            Purpose::Sip => "fsfleet sip",
            Purpose::Rtp => "fsfleet rtp",
        }
    }
    fn label(self) -> &'static str {
        match self {
            Purpose::Ssh => "SSH",
            Purpose::Sip => "SIP",
            Purpose::Rtp => "RTP",
        }
    }
}

/// One rule the firewall step adds, deletes or drops, as a row of the table `--diff` shows
/// (one line per rule, where the plan line only counts them).
#[derive(Debug, Clone, PartialEq)]
struct Row {
    action: &'static str,
    /// What the plan line counts it under: the rule's purpose, or why it goes.
    kind: String,
    port: String,
    proto: String,
    from: String,
    why: String,
}

impl Row {
    fn of_rule(r: &Rule) -> Row {
        Row {
            action: "add",
            kind: r.purpose.label().to_string(),
            port: r.ports.to_string(),
            proto: r.proto.as_str().to_string(),
            from: r.from.as_ref().map_or_else(|| "anywhere".into(), ufw_addr),
            why: r.purpose.label().to_string(),
        }
    }

    /// A rule already on the host (its text is the host's: escaped when printed).
    fn of_tuple(action: &'static str, t: &Tuple, why: &str) -> Row {
        let any = |v: &str, name: &str| {
            if crate::model::ufw::is_any(v) || v == "any" {
                name.to_string()
            } else {
                v.to_string()
            }
        };
        Row {
            action,
            kind: why.to_string(),
            port: any(&t.dport, "any"),
            proto: t.proto.clone(),
            from: any(&t.src, "anywhere"),
            why: match &t.comment {
                Some(c) => format!("{why} ({c})"),
                None => why.to_string(),
            },
        }
    }

    /// `add 8 rules (SSH 1, RTP 1, SIP 6); delete 1 stale fsfleet rule`: the plan line.
    fn summary(rows: &[Row]) -> Option<String> {
        let mut parts = Vec::new();
        for action in ["drop", "delete", "add"] {
            let of: Vec<&Row> = rows.iter().filter(|r| r.action == action).collect();
            if of.is_empty() {
                continue;
            }
            let mut by_why: Vec<(String, usize)> = Vec::new();
            for r in &of {
                match by_why.iter_mut().find(|(w, _)| *w == r.kind) {
                    Some((_, n)) => *n += 1,
                    None => by_why.push((r.kind.clone(), 1)),
                }
            }
            let what = if action == "add" { "" } else { "existing " };
            parts.push(format!(
                "{action} {} {what}rule{} ({})",
                of.len(),
                if of.len() == 1 { "" } else { "s" },
                by_why
                    .iter()
                    .map(|(w, n)| format!("{w} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        (!parts.is_empty()).then(|| format!("{} (--diff lists them)", parts.join("; ")))
    }

    /// The rows as a table, headed like the config diffs so the text output shows it with them.
    fn table(rows: &[Row]) -> String {
        let head = Row {
            action: "action",
            kind: String::new(),
            port: "port".into(),
            proto: "proto".into(),
            from: "from".into(),
            why: "why".into(),
        };
        let all: Vec<&Row> = std::iter::once(&head).chain(rows).collect();
        let w = |f: fn(&Row) -> usize| all.iter().map(|r| f(r)).max().unwrap_or(0);
        let (wa, wp, wr, wf) = (
            w(|r| r.action.len()),
            w(|r| r.port.chars().count()),
            w(|r| r.proto.chars().count()),
            w(|r| r.from.chars().count()),
        );
        let mut out = String::from("--- ufw rules\n+++ ufw rules (fsfleet)\n");
        for r in all {
            out.push_str(&format!(
                "  {:<wa$}  {:<wp$}  {:<wr$}  {:<wf$}  {}\n",
                r.action, r.port, r.proto, r.from, r.why
            ));
        }
        out
    }
}

/// One allow rule fsfleet wants on the host.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rule {
    pub purpose: Purpose,
    pub proto: Proto,
    pub ports: Ports,
    /// None: from anywhere (IPv4 and IPv6).
    pub from: Option<IpNet>,
}

impl Rule {
    /// The arguments of `ufw allow` (each a single shell word; the comment is quoted).
    pub fn ufw_args(&self) -> String {
        let from = match &self.from {
            Some(net) => format!(" from {}", ufw_addr(net)),
            None => String::new(),
        };
        format!(
            "allow proto {}{from} to any port {} comment {}",
            self.proto.as_str(),
            self.ports,
            sh_quote(self.purpose.comment())
        )
    }

    /// For the operator: `2222/tcp from anywhere (SSH)`.
    pub fn describe(&self) -> String {
        let from = match &self.from {
            Some(net) => ufw_addr(net),
            None => "anywhere".into(),
        };
        format!(
            "{}/{} from {from} ({})",
            self.ports,
            self.proto.as_str(),
            self.purpose.label()
        )
    }

    /// Which address families ufw writes this rule for (user.rules, user6.rules).
    fn families(&self, ipv6: bool) -> Vec<bool> {
        match &self.from {
            None if ipv6 => vec![false, true],
            None => vec![false],
            Some(IpNet::V4(_)) => vec![false],
            Some(IpNet::V6(_)) => vec![true],
        }
    }
}

/// A network as ufw writes it: a single address without its /32 or /128.
fn ufw_addr(net: &IpNet) -> String {
    let net = net.trunc();
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

/// What the host's configuration asks to be reachable.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Wanted {
    pub rules: Vec<Rule>,
    /// The ports sshd listens on plus the connected port.
    pub ssh_ports: Vec<u16>,
    /// Whether the sshd ports were read from the host (if not, only the connected port is known).
    pub sshd_ports_known: bool,
    pub esl_port: u16,
    pub warnings: Vec<String>,
}

/// The rules the host needs, from its facts and inventory entry (`connected_port`: the port
/// fsfleet reaches sshd through).
pub fn wanted_rules(f: &HostFacts, host: &Host, connected_port: u16, ipv6: bool) -> Wanted {
    let mut w = Wanted {
        esl_port: model::DEFAULT_ESL_PORT,
        sshd_ports_known: !f.base.sshd_ports.is_empty(),
        ..Wanted::default()
    };
    let m = HostModel::new(f);

    let mut ssh: BTreeSet<u16> = f.base.sshd_ports.iter().copied().collect();
    ssh.insert(connected_port);
    w.ssh_ports = ssh.iter().copied().collect();
    if !w.sshd_ports_known {
        w.warnings.push(format!(
            "could not read the ports sshd listens on (ss and sshd -T printed nothing): only port \
             {connected_port}, the one fsfleet is connected through, is allowed for SSH"
        ));
    }

    let sip = m.sip_ports();
    w.esl_port = sip.esl_port;
    w.warnings.extend(sip.warnings);
    if ssh.contains(&w.esl_port) {
        w.warnings.push(format!(
            "sshd listens on {}/tcp, the Event Socket port: it stays open for SSH; move one of them",
            w.esl_port
        ));
    }

    for p in &ssh {
        w.rules.push(Rule {
            purpose: Purpose::Ssh,
            proto: Proto::Tcp,
            ports: Ports::one(*p),
            from: None,
        });
    }

    let rtp = m.rtp();
    w.warnings.extend(rtp.warnings);
    w.rules.push(Rule {
        purpose: Purpose::Rtp,
        proto: Proto::Udp,
        ports: rtp.ports,
        from: None,
    });

    let sip = sip.ports;
    let mut sip_rules = Vec::new();
    for (proto, port) in &sip {
        if host.sip_allow_from.is_empty() {
            sip_rules.push(Rule {
                purpose: Purpose::Sip,
                proto: *proto,
                ports: Ports::one(*port),
                from: None,
            });
        }
        for src in &host.sip_allow_from {
            if matches!(src, IpNet::V6(_)) && !ipv6 {
                continue;
            }
            sip_rules.push(Rule {
                purpose: Purpose::Sip,
                proto: *proto,
                ports: Ports::one(*port),
                from: Some(src.trunc()),
            });
        }
    }
    if !ipv6
        && host
            .sip_allow_from
            .iter()
            .any(|n| matches!(n, IpNet::V6(_)))
    {
        w.warnings.push(format!(
            "IPv6 sources in sip_allow_from are skipped: ufw has IPV6=no in {UFW_DEFAULTS}"
        ));
    }
    if host.sip_allow_from.is_empty() && !sip.is_empty() {
        let list: Vec<String> = sip
            .iter()
            .map(|(p, port)| format!("{port}/{}", p.as_str()))
            .collect();
        w.warnings.push(format!(
            "SIP ({}) is open to the world on this host: set sip_allow_from for {} in the \
             inventory to restrict it to your carriers and phones",
            list.join(", "),
            host.name
        ));
    }
    w.rules.extend(sip_rules);

    // One rule per (proto, ports, source): a port wanted for two reasons is opened once.
    let mut seen = BTreeSet::new();
    w.rules.retain(|r| seen.insert((r.proto, r.ports, r.from)));
    w
}

pub fn probes(p: &mut Probes, _host: &Host) {
    // Defaults and rules come from ufw's files; whether it is active is in the base facts
    // (asked without starting ufw's Python, see facts::UFW_STATUS_SNIPPET).
    p.file(USER_RULES).file(USER6_RULES).file(UFW_DEFAULTS);
}

/// How fsfleet's own rules are matched against ufw's (the state itself is the model's).
impl Tuple {
    /// Does this tuple allow `rule` (for the family of this file)?
    fn allows(&self, rule: &Rule) -> bool {
        let action_ok = self.action.starts_with("allow") || self.action.starts_with("limit");
        let src_ok = match &rule.from {
            None => is_any(&self.src),
            Some(net) => self.src_net().is_some_and(|s| s.trunc() == net.trunc()),
        };
        action_ok
            && self.plain_inbound()
            && (self.proto == rule.proto.as_str() || self.proto == "any")
            && src_ok
            && dport_covers(&self.dport, rule.ports)
    }

    /// Is this tuple exactly how ufw writes `rule`?
    fn is_exactly(&self, rule: &Rule) -> bool {
        self.allows(rule)
            && self.action == "allow"
            && self.proto == rule.proto.as_str()
            && self.dport == rule.ports.to_string()
    }
}

/// The step in the registry.
pub struct Firewall;

impl Step for Firewall {
    const NAME: &'static str = NAME;
    const DOING: &'static str = "configuring ufw and proving a new SSH login";
    const PHASE: Phase = Phase::System;
    type Action = UfwChange;

    fn probes(p: &mut Probes, host: &Host) {
        probes(p, host)
    }

    fn plan(input: &PlanInput<'_>) -> Result<Plan<UfwChange>, StepError> {
        plan(input.facts, input.host, input.opts)
    }

    fn apply<'a>(
        ctx: &'a StepCtx<'a>,
        action: &'a UfwChange,
    ) -> impl Future<Output = Result<Vec<String>, StepError>> + Send + 'a {
        apply(ctx, action)
    }
}

/// An fsfleet rule on the host that no wanted rule accounts for, and how ufw deletes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stale {
    pub tuple: Tuple,
    /// `delete allow ...`: only rules ufw can delete by their spec become a `Stale`.
    args: String,
}

impl Stale {
    fn of(tuple: &Tuple) -> Option<Stale> {
        Some(Stale {
            args: tuple.delete_args()?,
            tuple: tuple.clone(),
        })
    }
}

/// One ufw command of the firewall step, in the order they run.
#[derive(Debug, Clone, PartialEq)]
pub enum UfwCommand {
    /// `ufw --force reset` (`--firewall-reset`): drop every rule first.
    Reset,
    Allow(Rule),
    Delete(Stale),
    DefaultDenyIncoming,
    DefaultAllowOutgoing,
}

impl UfwCommand {
    /// The arguments of `ufw` for this command.
    pub fn args(&self) -> String {
        match self {
            UfwCommand::Reset => "--force reset".into(),
            UfwCommand::Allow(r) => r.ufw_args(),
            UfwCommand::Delete(s) => s.args.clone(),
            UfwCommand::DefaultDenyIncoming => "default deny incoming".into(),
            UfwCommand::DefaultAllowOutgoing => "default allow outgoing".into(),
        }
    }
}

/// What the firewall step does: these commands, then enable (or reload) ufw, then prove a new
/// SSH connection works.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UfwChange {
    pub commands: Vec<UfwCommand>,
    /// The SSH ports the plan allows (the session's is added at apply when missing).
    pub ssh_ports: Vec<u16>,
    /// ufw as it was before: what `fsfleet rollback` puts back.
    pub before: Before,
}

/// ufw's state before the change, as the facts read it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Before {
    pub active: bool,
    pub incoming: String,
    pub outgoing: String,
}

/// The name of the firewall record in a run's backup directory.
pub const RECORD: &str = "ufw";

impl UfwChange {
    /// The record `fsfleet rollback` reads: ufw before, then each rule this change added
    /// (`added ARGS`, as given to `ufw`) and each it deleted.
    pub fn record(&self, commands: &[String]) -> String {
        let mut s = format!(
            "was-active\t{}\nincoming\t{}\noutgoing\t{}\nreset\t{}\n",
            u8::from(self.before.active),
            self.before.incoming,
            self.before.outgoing,
            u8::from(self.commands.first() == Some(&UfwCommand::Reset)),
        );
        for c in commands {
            if c.starts_with("allow ") {
                s.push_str(&format!("added\t{c}\n"));
            } else if let Some(d) = c.strip_prefix("delete ") {
                s.push_str(&format!("deleted\t{d}\n"));
            }
        }
        s
    }
}

impl UfwChange {
    /// The rules this change adds, for the operator.
    fn added(&self) -> Vec<String> {
        self.commands
            .iter()
            .filter_map(|c| match c {
                UfwCommand::Allow(r) => Some(r.describe()),
                _ => None,
            })
            .collect()
    }
}

/// Pure: what ufw needs on this host. No change when ufw is active, denies incoming by default
/// and every wanted rule is present (and, with `--firewall-reset`, no other rule exists).
pub fn plan(
    f: &HostFacts,
    host: &Host,
    opts: &HardenOptions,
) -> Result<Plan<UfwChange>, StepError> {
    let state = UfwState::from_facts(f);
    plan_with(&state, f, host, opts, host.port)
}

fn plan_with(
    state: &UfwState,
    f: &HostFacts,
    host: &Host,
    opts: &HardenOptions,
    connected_port: u16,
) -> Result<Plan<UfwChange>, StepError> {
    let wanted = wanted_rules(f, host, connected_port, state.ipv6);
    let mut plan = StepPlan {
        warnings: wanted.warnings.clone(),
        ..StepPlan::default()
    };
    if !state.ipv6 {
        plan.warnings.push(format!(
            "ufw has IPV6=no in {UFW_DEFAULTS}: IPv6 traffic to this host is not filtered; \
             set IPV6=yes there and re-run"
        ));
    }

    // An existing deny for an SSH port would win over fsfleet's appended allow: refuse rather
    // than find out through the lock-out check.
    for t in &state.tuples {
        if opts.firewall_reset {
            break;
        }
        if let Some(p) = wanted.ssh_ports.iter().find(|p| t.blocks_tcp(**p)) {
            return Err(StepError::Refused(format!(
                "{}: ufw rule '{}' blocks SSH port {p}; fsfleet's allow would come after it. \
                 Delete it (ufw status numbered; ufw delete N) or use --firewall-reset, then re-run",
                host.name,
                t.describe()
            )));
        }
    }

    let is_present = |r: &Rule, exact: bool| {
        r.families(state.ipv6).iter().all(|v6| {
            state
                .tuples
                .iter()
                .filter(|t| t.v6 == *v6)
                .any(|t| if exact { t.is_exactly(r) } else { t.allows(r) })
        })
    };
    // A tuple fsfleet wrote that no wanted rule accounts for (e.g. SIP from anywhere once an
    // allow-list is set). SSH rules stay when the sshd ports could not be read.
    let stale: Vec<&Tuple> = state
        .tuples
        .iter()
        .filter(|t| t.is_fsfleet())
        .filter(|t| !wanted.rules.iter().any(|r| t.is_exactly(r)))
        .filter(|t| {
            let ssh = t.comment.as_deref() == Some(Purpose::Ssh.comment());
            !ssh || wanted.sshd_ports_known
        })
        .filter(|t| !(t.proto != "udp" && dport_covers(&t.dport, Ports::one(connected_port))))
        .collect();

    let mut commands: Vec<UfwCommand> = Vec::new();
    let mut table: Vec<Row> = Vec::new();

    if opts.firewall_reset {
        let foreign: Vec<&Tuple> = state
            .tuples
            .iter()
            .filter(|t| !wanted.rules.iter().any(|r| t.is_exactly(r)))
            .collect();
        let missing = wanted.rules.iter().any(|r| !is_present(r, true));
        if !foreign.is_empty() || missing {
            commands.push(UfwCommand::Reset);
            plan.changes.push(format!(
                "reset ufw (--firewall-reset): drop {} existing rule(s)",
                foreign.len(),
            ));
            for t in &foreign {
                table.push(Row::of_tuple("drop", t, "--firewall-reset"));
            }
            for r in &wanted.rules {
                commands.push(UfwCommand::Allow(r.clone()));
                table.push(Row::of_rule(r));
            }
        }
    } else {
        for r in &wanted.rules {
            if !is_present(r, false) {
                commands.push(UfwCommand::Allow(r.clone()));
                table.push(Row::of_rule(r));
            }
        }
        let mut deletes = BTreeSet::new();
        for t in &stale {
            let Some(del) = Stale::of(t) else {
                continue;
            };
            if deletes.insert(del.args.clone()) {
                commands.push(UfwCommand::Delete(del));
                table.push(Row::of_tuple("delete", t, "stale fsfleet rule"));
            }
        }
        // The operator's own rules stay, but say when they undo what this step is for.
        for t in state.tuples.iter().filter(|t| !t.is_fsfleet()) {
            let opens = |proto: &str, port: u16| {
                (t.action.starts_with("allow") || t.action.starts_with("limit"))
                    && t.direction.starts_with("in")
                    && (t.proto == proto || t.proto == "any")
                    && (t.dport == "any" || dport_covers(&t.dport, Ports::one(port)))
            };
            if opens("tcp", wanted.esl_port) {
                plan.warnings.push(format!(
                    "existing ufw rule '{}' opens the Event Socket port {}/tcp: delete it \
                     (ufw status numbered; ufw delete N) or re-run with --firewall-reset",
                    t.describe(),
                    wanted.esl_port
                ));
            }
            let sip_world = !host.sip_allow_from.is_empty()
                && is_any(&t.src)
                && wanted
                    .rules
                    .iter()
                    .filter(|r| r.purpose == Purpose::Sip)
                    .any(|r| opens(r.proto.as_str(), r.ports.first));
            if sip_world {
                plan.warnings.push(format!(
                    "existing ufw rule '{}' opens SIP to anywhere although sip_allow_from is set: \
                     delete it or re-run with --firewall-reset",
                    t.describe()
                ));
            }
        }
    }

    // The rules as one summary line; each rule is a row of the table `--diff` shows.
    if let Some(line) = Row::summary(&table) {
        plan.changes.push(line);
        plan.diffs.push(Row::table(&table));
    }

    let reset = commands.first() == Some(&UfwCommand::Reset);
    if reset || (state.incoming != "deny" && state.incoming != "reject") {
        commands.push(UfwCommand::DefaultDenyIncoming);
        if state.incoming != "deny" && state.incoming != "reject" {
            plan.changes.push(format!(
                "default policy for incoming: deny (was {})",
                state.incoming
            ));
        }
    }
    if reset || state.outgoing != "allow" {
        commands.push(UfwCommand::DefaultAllowOutgoing);
        if state.outgoing != "allow" {
            plan.changes.push(format!(
                "default policy for outgoing: allow (was {})",
                state.outgoing
            ));
        }
    }
    if !state.installed {
        plan.changes
            .push("ufw is not installed yet (the packages step installs it)".into());
    }
    if !state.active || reset {
        plan.changes.push("enable ufw".into());
    } else if !commands.is_empty() {
        plan.changes.push("reload ufw".into());
    }

    let action = if plan.changes.is_empty() {
        UfwChange::default()
    } else {
        UfwChange {
            commands,
            ssh_ports: wanted.ssh_ports,
            before: Before {
                active: state.active,
                incoming: state.incoming.clone(),
                outgoing: state.outgoing.clone(),
            },
        }
    };
    Ok(Plan {
        outline: plan,
        action,
    })
}

/// The on-host flag the watchdog checks; removing it disarms the watchdog. The nonce keeps a
/// still-sleeping watchdog of an earlier apply from acting on this one's flag.
fn watchdog_flag(run_id: &str, nonce: u32) -> String {
    let safe: String = run_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("/run/fsfleet-firewall-{safe}-{nonce:08x}.armed")
}

/// The root script that changes ufw: rules first, then defaults, then the armed watchdog and
/// `ufw --force enable` (which also reloads an active firewall).
fn apply_script(commands: &[String], flag: &str) -> String {
    let flag = sh_quote(flag);
    let mut s = String::from(
        "set -e\nexport LC_ALL=C\n\
         command -v ufw >/dev/null 2>&1 || { echo 'ufw is not installed: let the packages step \
         install it (do not skip it) or apt-get install ufw, then re-run' >&2; exit 3; }\n",
    );
    for c in commands {
        s.push_str(&format!("ufw {c}\n"));
    }
    let watchdog = sh_quote(&format!(
        "sleep {WATCHDOG_SECS}; if [ -e {flag} ]; then rm -f {flag}; ufw --force disable; fi"
    ));
    s.push_str(&format!(
        "touch {flag}\n\
         setsid -f sh -c {watchdog} </dev/null >/dev/null 2>&1\n\
         if ! ufw --force enable; then rm -f {flag}; ufw --force disable || true; exit 4; fi\n"
    ));
    s
}

/// Change ufw, then prove a NEW SSH connection works; roll back (disable ufw) when it does not.
pub async fn apply(ctx: &StepCtx<'_>, action: &UfwChange) -> Result<Vec<String>, StepError> {
    let mut commands: Vec<String> = action.commands.iter().map(UfwCommand::args).collect();
    // The session is what must survive: allow its port even if the plan was made for another.
    if !action.ssh_ports.contains(&ctx.session.port) {
        let r = Rule {
            purpose: Purpose::Ssh,
            proto: Proto::Tcp,
            ports: Ports::one(ctx.session.port),
            from: None,
        };
        let at = usize::from(action.commands.first() == Some(&UfwCommand::Reset));
        commands.insert(at, r.ufw_args());
    }
    let flag = watchdog_flag(ctx.run_id, rand::random());
    let script = apply_script(&commands, &flag);
    let host = &ctx.host.name;
    ctx.run_checked("configuring ufw", &script, b"", APPLY_LIMIT)
        .await?;

    let added = action.added();
    let added_list = if added.is_empty() {
        "none".to_string()
    } else {
        added.join("; ")
    };

    if let Err(why) = prove_new_connection(ctx).await {
        let rollback = format!("rm -f {}; ufw --force disable", sh_quote(&flag));
        let undone = ctx
            .session
            .run_for(
                "firewall: roll back ufw",
                &rollback,
                b"",
                Duration::from_secs(30),
            )
            .await;
        return Err(StepError::Failed(match undone {
            Ok(out) if out.success() => format!(
                "new SSH connections to {host} (port {}) failed after enabling ufw ({why}); \
                 the firewall was disabled again. Rules added: {added_list}. Check which port \
                 sshd listens on and the rules in 'ufw status numbered', then re-run",
                ctx.session.port
            ),
            _ => format!(
                "new SSH connections to {host} (port {}) failed after enabling ufw ({why}) and \
                 disabling it through the existing connection failed too; the watchdog on the \
                 host disables ufw within {WATCHDOG_SECS} s of enabling it. Rules added: \
                 {added_list}",
                ctx.session.port
            ),
        }));
    }

    let disarm = format!("rm -f {}; LC_ALL=C ufw status verbose", sh_quote(&flag));
    let out = ctx
        .run_checked(
            &format!("disarming the firewall watchdog (ufw will be disabled within {WATCHDOG_SECS} s; re-run)"),
            &disarm,
            b"",
            Duration::from_secs(30),
        )
        .await?;
    let status = out.stdout_text();
    let mut evidence = vec![format!(
        "a new SSH connection to port {} works with ufw enabled",
        ctx.session.port
    )];
    // What rollback needs to undo this, beside the run's backup (best effort: the change stands).
    let dir = sh_quote(&super::backup::dir(ctx.run_id));
    let save = format!(
        "[ -d {dir} ] || exit 0\numask 077\ncat > {dir}/{RECORD}.tmp && mv {dir}/{RECORD}.tmp {dir}/{RECORD}\n"
    );
    match ctx
        .session
        .run_for(
            "recording the firewall change for rollback",
            &save,
            action.record(&commands).as_bytes(),
            Duration::from_secs(30),
        )
        .await
    {
        Ok(o) if o.success() => {}
        _ => evidence.push(
            "warning: the firewall change could not be recorded: `fsfleet rollback` of this run \
             will leave ufw as it is"
                .into(),
        ),
    }
    evidence.extend(
        status
            .lines()
            .filter(|l| l.starts_with("Status:") || l.starts_with("Default:"))
            .map(str::to_string),
    );
    Ok(evidence)
}

/// Why a new SSH connection did not work once ufw was enabled.
#[derive(Debug, thiserror::Error)]
enum ProofError {
    #[error(transparent)]
    Ssh(#[from] crate::ssh::SshError),
    #[error("'true' exited {0}")]
    Exit(u32),
    #[error("no new connection within {} s", PROOF_LIMIT.as_secs())]
    Timeout,
}

async fn prove_new_connection(ctx: &StepCtx<'_>) -> Result<(), ProofError> {
    let attempt = async {
        let s = ctx.connector.connect(ctx.host).await?;
        let r = s.exec("true", b"").await;
        s.close().await;
        match r? {
            out if out.success() => Ok(()),
            out => Err(ProofError::Exit(out.status)),
        }
    };
    tokio::time::timeout(PROOF_LIMIT, attempt)
        .await
        .map_err(|_| ProofError::Timeout)?
}

/// user.rules and user6.rules as ufw writes them once `rules` are added (for tests that apply
/// a plan without a host).
#[cfg(test)]
pub(crate) fn user_rules_for(rules: &[Rule]) -> (String, String) {
    let mut v4 = String::from("*filter\n### RULES ###\n");
    let mut v6 = v4.clone();
    for r in rules {
        let hex: String = r
            .purpose
            .comment()
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect();
        for fam6 in r.families(true) {
            let (any, out) = if fam6 {
                ("::/0", &mut v6)
            } else {
                ("0.0.0.0/0", &mut v4)
            };
            let src = r.from.map(|n| ufw_addr(&n)).unwrap_or(any.to_string());
            out.push_str(&format!(
                "\n### tuple ### allow {} {} {any} any {src} in comment={hex}\n-A ufw-user-input -j ACCEPT\n",
                r.proto.as_str(),
                r.ports
            ));
        }
    }
    (v4, v6)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::facts::{Facts, FileFact, Files};
    use crate::report::testing::host;

    /// The planned ufw commands, one a line, as apply sends them.
    fn commands(p: &Plan<UfwChange>) -> String {
        p.action
            .commands
            .iter()
            .map(UfwCommand::args)
            .collect::<Vec<_>>()
            .join("\n")
    }

    const CONF: &str = "/etc/freeswitch";
    const STOCK_FILES: &[&str] = &[
        "vars.xml",
        "autoload_configs/switch.conf.xml",
        "autoload_configs/event_socket.conf.xml",
        "sip_profiles/internal.xml",
        "sip_profiles/external.xml",
        "sip_profiles/internal-ipv6.xml",
        "sip_profiles/external-ipv6.xml",
    ];
    const UFW_DEFAULT_FILE: &str =
        "IPV6=yes\nDEFAULT_INPUT_POLICY=\"DROP\"\nDEFAULT_OUTPUT_POLICY=\"ACCEPT\"\n";

    fn stock(rel: &str) -> String {
        std::fs::read_to_string(format!(
            "{}/../shared/reference/freeswitch-conf-1.10.12/{rel}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    fn file(path: &str, text: &str) -> FileFact {
        FileFact {
            path: path.to_string(),
            mode: 0o644,
            owner: "root".into(),
            group: "root".into(),
            size: text.len() as u64,
            content: Some(text.as_bytes().to_vec()),
        }
    }

    /// A host with the stock config tree, sshd on `ssh_ports`, ufw installed and inactive.
    struct Fixture {
        facts: HostFacts,
    }

    impl Fixture {
        fn stock(ssh_ports: &[u16]) -> Fixture {
            let mut files = BTreeMap::new();
            for rel in STOCK_FILES {
                let p = format!("{CONF}/{rel}");
                files.insert(p.clone(), file(&p, &stock(rel)));
            }
            files.insert(UFW_DEFAULTS.into(), file(UFW_DEFAULTS, UFW_DEFAULT_FILE));
            let mut packages = BTreeMap::new();
            packages.insert("ufw".to_string(), "0.36.2-1".to_string());
            Fixture {
                facts: HostFacts {
                    base: Facts {
                        sshd_ports: ssh_ports.to_vec(),
                        packages,
                        ..Facts::default()
                    },
                    files: Files {
                        conf_dir: Some(CONF.into()),
                        files,
                    },
                    ..HostFacts::default()
                },
            }
        }
        fn set(mut self, path: &str, text: &str) -> Fixture {
            self.facts.files.files.insert(path.into(), file(path, text));
            self
        }
        fn conf(self, rel: &str, text: &str) -> Fixture {
            self.set(&format!("{CONF}/{rel}"), text)
        }
        fn active(mut self) -> Fixture {
            self.facts.base.ufw_active = true;
            self
        }
    }

    fn rules_of(w: &Wanted) -> Vec<String> {
        w.rules.iter().map(Rule::describe).collect()
    }

    fn with_allow(nets: &[&str]) -> Host {
        let mut h = host("fs1");
        h.sip_allow_from = nets.iter().map(|n| n.parse().unwrap()).collect();
        h
    }

    /// The `### tuple ###` lines ufw writes for these rules (format checked against ufw 0.36.2).
    fn ufw_files(rules: &[Rule]) -> (String, String) {
        super::user_rules_for(rules)
    }

    fn hardened(fx: Fixture, h: &Host) -> Fixture {
        let w = wanted_rules(&fx.facts, h, h.port, true);
        let (v4, v6) = ufw_files(&w.rules);
        fx.set(USER_RULES, &v4).set(USER6_RULES, &v6).active()
    }

    #[test]
    fn the_rollback_record_says_what_ufw_was_and_what_was_added() {
        let change = UfwChange {
            commands: vec![],
            ssh_ports: vec![22],
            before: Before {
                active: false,
                incoming: "allow".into(),
                outgoing: "allow".into(),
            },
        };
        let r = change.record(&[
            "allow proto tcp to any port 22 comment 'fsfleet ssh'".into(),
            "delete allow proto udp to any port 5060 comment 'fsfleet sip'".into(),
            "default deny incoming".into(),
        ]);
        assert_eq!(
            r,
            "was-active\t0\nincoming\tallow\noutgoing\tallow\nreset\t0\n\
             added\tallow proto tcp to any port 22 comment 'fsfleet ssh'\n\
             deleted\tallow proto udp to any port 5060 comment 'fsfleet sip'\n"
        );
    }

    #[test]
    fn stock_host_opens_ssh_rtp_sip_and_sip_tls_but_not_esl() {
        let fx = Fixture::stock(&[22]);
        let w = wanted_rules(&fx.facts, &host("fs1"), 22, true);
        assert_eq!(
            rules_of(&w),
            [
                "22/tcp from anywhere (SSH)",
                "16384:32768/udp from anywhere (RTP)",
                "5060/tcp from anywhere (SIP)",
                "5061/tcp from anywhere (SIP)",
                "5080/tcp from anywhere (SIP)",
                "5081/tcp from anywhere (SIP)",
                "5060/udp from anywhere (SIP)",
                "5080/udp from anywhere (SIP)",
            ]
        );
        assert_eq!(w.esl_port, 8021);
        assert!(
            w.warnings.iter().any(|m| m
                .contains("SIP (5060/tcp, 5061/tcp, 5080/tcp, 5081/tcp, 5060/udp, 5080/udp) is open to the world")
                && m.contains("sip_allow_from for fs1")),
            "{:?}",
            w.warnings
        );
    }

    #[test]
    fn sshd_only_on_2222_opens_2222_and_the_connected_port_never_just_22() {
        let fx = Fixture::stock(&[2222]);
        let mut h = host("fs3");
        h.port = 2222;
        let w = wanted_rules(&fx.facts, &h, 2222, true);
        let ssh: Vec<String> = w
            .rules
            .iter()
            .filter(|r| r.purpose == Purpose::Ssh)
            .map(Rule::describe)
            .collect();
        assert_eq!(ssh, ["2222/tcp from anywhere (SSH)"]);

        // Reached through a NAT'd port 2200 while sshd listens on 2222: both stay open.
        let w = wanted_rules(&fx.facts, &h, 2200, true);
        assert_eq!(w.ssh_ports, [2200, 2222]);

        // sshd ports unreadable: the connected port is still allowed, with a warning.
        let fx = Fixture::stock(&[]);
        let w = wanted_rules(&fx.facts, &h, 2222, true);
        assert_eq!(w.ssh_ports, [2222]);
        assert!(w.warnings.iter().any(|m| m.contains("only port 2222")));
    }

    #[test]
    fn allow_list_gives_per_source_sip_rules_in_the_right_family() {
        let fx = Fixture::stock(&[22]);
        let h = with_allow(&["198.51.100.0/24", "192.0.2.7/32", "2001:db8::/32"]);
        let w = wanted_rules(&fx.facts, &h, 22, true);
        let sip: Vec<&Rule> = w
            .rules
            .iter()
            .filter(|r| r.purpose == Purpose::Sip)
            .collect();
        assert_eq!(
            sip.len(),
            6 * 3,
            "6 SIP port/protos (SIP udp+tcp, SIP-TLS tcp) x 3 sources"
        );
        assert!(sip.iter().all(|r| r.from.is_some()), "no SIP from anywhere");
        assert!(!w.warnings.iter().any(|m| m.contains("open to the world")));
        let single = sip
            .iter()
            .find(|r| r.from == Some("192.0.2.7/32".parse().unwrap()))
            .unwrap();
        assert!(
            single
                .ufw_args()
                .starts_with("allow proto tcp from 192.0.2.7 to any port 5060 "),
            "{}",
            single.ufw_args()
        );
        let v6 = sip
            .iter()
            .find(|r| matches!(r.from, Some(IpNet::V6(_))))
            .unwrap();
        assert_eq!(v6.families(true), [true], "a v6 source is a v6-only rule");
        assert!(v6.ufw_args().contains("from 2001:db8::/32 "));
        // SSH and RTP stay reachable from anywhere.
        assert!(
            w.rules
                .iter()
                .filter(|r| r.purpose != Purpose::Sip)
                .all(|r| r.from.is_none())
        );
    }

    #[test]
    fn ipv6_sources_are_skipped_with_a_warning_when_ufw_has_ipv6_off() {
        let fx = Fixture::stock(&[22]).set(
            UFW_DEFAULTS,
            "IPV6=no\nDEFAULT_INPUT_POLICY=\"DROP\"\nDEFAULT_OUTPUT_POLICY=\"ACCEPT\"\n",
        );
        let h = with_allow(&["2001:db8::/32", "198.51.100.0/24"]);
        let p = plan(&fx.facts, &h, &HardenOptions::default()).unwrap();
        assert!(!commands(&p).contains("2001:db8"));
        assert!(commands(&p).contains("from 198.51.100.0/24"));
        assert!(
            p.warnings
                .iter()
                .any(|m| m.contains("IPv6 sources in sip_allow_from are skipped"))
        );
        assert!(
            p.warnings
                .iter()
                .any(|m| m.contains("IPv6 traffic to this host is not filtered"))
        );
    }

    #[test]
    fn rtp_range_comes_from_switch_conf_with_vars_resolved() {
        let switch = stock("autoload_configs/switch.conf.xml").replace(
            "<!-- <param name=\"rtp-start-port\" value=\"16384\"/> -->",
            "<param name=\"rtp-start-port\" value=\"$${rtp_lo}\"/>",
        );
        let switch = switch.replace(
            "<!-- <param name=\"rtp-end-port\" value=\"32768\"/> -->",
            "<param name=\"rtp-end-port\" value=\"20999\"/>",
        );
        let vars = stock("vars.xml").replace(
            "</include>",
            "  <X-PRE-PROCESS cmd=\"set\" data=\"rtp_lo=20000\"/>\n</include>",
        );
        let fx = Fixture::stock(&[22])
            .conf("autoload_configs/switch.conf.xml", &switch)
            .conf("vars.xml", &vars);
        let w = wanted_rules(&fx.facts, &host("fs1"), 22, true);
        assert!(rules_of(&w).contains(&"20000:20999/udp from anywhere (RTP)".to_string()));

        // A variable vars.xml does not set: FreeSWITCH's default, and the file is named.
        let fx = Fixture::stock(&[22]).conf("autoload_configs/switch.conf.xml", &switch);
        let w = wanted_rules(&fx.facts, &host("fs1"), 22, true);
        assert!(rules_of(&w).contains(&"16384:20999/udp from anywhere (RTP)".to_string()));
        assert!(w.warnings.iter().any(|m| m.contains(
            "/etc/freeswitch/autoload_configs/switch.conf.xml: rtp-start-port '$${rtp_lo}' uses a variable"
        )));
    }

    #[test]
    fn sip_and_tls_ports_follow_vars() {
        let vars = stock("vars.xml")
            .replace("internal_sip_port=5060", "internal_sip_port=5070")
            .replace("internal_ssl_enable=false", "internal_ssl_enable=true");
        let fx = Fixture::stock(&[22]).conf("vars.xml", &vars);
        let w = wanted_rules(&fx.facts, &host("fs1"), 22, true);
        let r = rules_of(&w);
        for want in [
            "5070/udp from anywhere (SIP)",
            "5070/tcp from anywhere (SIP)",
            "5061/tcp from anywhere (SIP)",
        ] {
            assert!(r.contains(&want.to_string()), "{want} missing from {r:?}");
        }
        assert!(!r.iter().any(|x| x.starts_with("5060/")));
        assert!(
            r.contains(&"5081/tcp from anywhere (SIP)".to_string()),
            "{r:?}"
        );
    }

    #[test]
    fn the_event_socket_port_is_never_opened() {
        // A profile misconfigured onto the ESL port, and an operator rule already opening it.
        let internal = stock("sip_profiles/internal.xml").replace("$${internal_sip_port}", "8021");
        let fx = Fixture::stock(&[22])
            .conf("sip_profiles/internal.xml", &internal)
            .set(
                USER_RULES,
                "### tuple ### allow tcp 8000:8100 0.0.0.0/0 any 0.0.0.0/0 in\n",
            );
        let p = plan(&fx.facts, &host("fs1"), &HardenOptions::default()).unwrap();
        let cmds = &commands(&p);
        assert!(!cmds.contains("proto tcp to any port 8021"), "{cmds}");
        assert!(
            cmds.contains("proto udp to any port 8021"),
            "UDP is not the ESL"
        );
        assert!(
            p.warnings
                .iter()
                .any(|m| m.contains("configured on 8021/tcp, the Event Socket port"))
        );
        assert!(
            p.warnings
                .iter()
                .any(|m| m.contains("opens the Event Socket port 8021/tcp"))
        );
        // Every planned rule, from the stock host too.
        let fx = Fixture::stock(&[22]);
        let w = wanted_rules(&fx.facts, &with_allow(&["10.0.0.0/8"]), 22, true);
        assert!(
            !w.rules
                .iter()
                .any(|r| r.proto == Proto::Tcp && r.ports.contains(8021))
        );
    }

    /// The row of the `--diff` rule table for `action port proto`, if there is one.
    fn row_of<A>(p: &Plan<A>, action: &str, port: &str, proto: &str) -> Option<String> {
        p.diffs
            .iter()
            .find(|d| d.starts_with("--- ufw rules"))?
            .lines()
            .find(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w.len() >= 3 && w[0] == action && w[1] == port && w[2] == proto
            })
            .map(str::to_string)
    }

    #[test]
    fn fresh_host_plans_every_rule_then_enable_in_a_safe_order() {
        let fx = Fixture::stock(&[2222]);
        let mut h = host("fs3");
        h.port = 2222;
        let p = plan(&fx.facts, &h, &HardenOptions::default()).unwrap();
        assert!(
            row_of(&p, "add", "2222", "tcp").is_some_and(|r| r.ends_with("anywhere  SSH")),
            "{}",
            p.diffs[0]
        );
        assert_eq!(
            p.changes.first().map(String::as_str),
            Some("add 8 rules (SSH 1, RTP 1, SIP 6) (--diff lists them)")
        );
        assert_eq!(p.changes.last().map(String::as_str), Some("enable ufw"));
        let cmds: Vec<String> = commands(&p).lines().map(str::to_string).collect();
        assert_eq!(
            cmds[0],
            "allow proto tcp to any port 2222 comment 'fsfleet ssh'"
        );
        assert!(!cmds.iter().any(|c| c.contains("port 22 ")));
        let script = apply_script(&cmds, &watchdog_flag("r1", 0xab));
        let at = |s: &str| {
            script
                .find(s)
                .unwrap_or_else(|| panic!("{s} not in {script}"))
        };
        assert!(at("ufw allow proto tcp to any port 2222") < at("setsid -f"));
        assert!(at("setsid -f") < at("ufw --force enable"));
        assert!(script.contains("/run/fsfleet-firewall-r1-000000ab.armed"));
        assert!(
            script.starts_with("set -e\n"),
            "a failed rule stops before enabling"
        );
    }

    #[test]
    fn hardened_host_plans_no_change() {
        for h in [
            host("fs1"),
            with_allow(&["198.51.100.0/24", "192.0.2.7/32", "2001:db8::/32"]),
        ] {
            let fx = hardened(Fixture::stock(&[22]), &h);
            let p = plan(&fx.facts, &h, &HardenOptions::default()).unwrap();
            assert!(p.is_noop(), "{:?}", p.changes);
            // Also with --firewall-reset: only fsfleet's own rules are there.
            let reset = HardenOptions {
                firewall_reset: true,
                ..HardenOptions::default()
            };
            let p = plan(&fx.facts, &h, &reset).unwrap();
            assert!(p.is_noop(), "{:?}", p.changes);
        }
    }

    #[test]
    fn operators_equivalent_rules_count_and_their_other_rules_stay() {
        // OpenSSH app rule for 22, a plain multi-port rule for SIP, a range for RTP, plus an
        // unrelated web rule.
        let v4 = "### tuple ### allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 OpenSSH - in\n\
                  ### tuple ### allow any 5060,5061,5080,5081 0.0.0.0/0 any 0.0.0.0/0 in\n\
                  ### tuple ### allow udp 10000:40000 0.0.0.0/0 any 0.0.0.0/0 in\n\
                  ### tuple ### allow tcp 443 0.0.0.0/0 any 0.0.0.0/0 in\n";
        let v6 = v4.replace("0.0.0.0/0", "::/0");
        let fx = Fixture::stock(&[22])
            .set(USER_RULES, v4)
            .set(USER6_RULES, &v6)
            .active();
        let p = plan(&fx.facts, &host("fs1"), &HardenOptions::default()).unwrap();
        assert!(p.is_noop(), "{:?}", p.changes);

        // Inactive: only "enable", nothing deleted, the 443 rule untouched.
        let mut fx = fx;
        fx.facts.base.ufw_active = false;
        let p = plan(&fx.facts, &host("fs1"), &HardenOptions::default()).unwrap();
        assert_eq!(p.changes, ["enable ufw"]);
        assert!(!commands(&p).contains("delete"));
    }

    #[test]
    fn stale_fsfleet_rules_are_deleted_once_sip_is_restricted() {
        let fx = hardened(Fixture::stock(&[22]), &host("fs1"));
        let h = with_allow(&["198.51.100.0/24"]);
        let p = plan(&fx.facts, &h, &HardenOptions::default()).unwrap();
        let all = commands(&p);
        let cmds: Vec<&str> = all.lines().collect();
        let add = cmds
            .iter()
            .position(|c| {
                *c == "allow proto udp from 198.51.100.0/24 to any port 5060 comment 'fsfleet sip'"
            })
            .unwrap();
        let del = cmds
            .iter()
            .position(|c| *c == "delete allow proto udp to any port 5060")
            .unwrap();
        assert!(
            add < del,
            "add the restricted rule before removing the open one"
        );
        assert_eq!(cmds.iter().filter(|c| c.starts_with("delete")).count(), 6);
        assert!(!cmds.iter().any(|c| c.contains("port 22")), "SSH untouched");
        assert!(
            p.changes
                .iter()
                .any(|c| c.starts_with("delete 6 existing rules (stale fsfleet rule")),
            "{:?}",
            p.changes
        );
        assert!(
            row_of(&p, "delete", "5060", "udp").is_some_and(|r| r.contains("anywhere")),
            "{}",
            p.diffs[0]
        );
        assert_eq!(p.changes.last().map(String::as_str), Some("reload ufw"));
    }

    #[test]
    fn stale_ssh_rule_stays_when_sshd_ports_are_unknown() {
        let fx = hardened(Fixture::stock(&[22, 2222]), &host("fs1"));
        // sshd moved off 2222: the fsfleet rule for it is stale and goes.
        let mut known = Fixture::stock(&[22]);
        known.facts.files = fx.facts.files.clone();
        known.facts.base.ufw_active = true;
        let p = plan(&known.facts, &host("fs1"), &HardenOptions::default()).unwrap();
        assert_eq!(commands(&p), "delete allow proto tcp to any port 2222");
        // Ports unreadable: nothing is known to be stale, nothing SSH is deleted.
        let mut unknown = Fixture::stock(&[]);
        unknown.facts.files = fx.facts.files.clone();
        unknown.facts.base.ufw_active = true;
        let p = plan(&unknown.facts, &host("fs1"), &HardenOptions::default()).unwrap();
        assert!(p.is_noop(), "{:?}", p.changes);
    }

    #[test]
    fn a_deny_on_the_ssh_port_is_refused_before_anything_changes() {
        let fx = Fixture::stock(&[2222]).set(
            USER_RULES,
            "### tuple ### deny tcp 2222 0.0.0.0/0 any 0.0.0.0/0 in\n",
        );
        let mut h = host("fs3");
        h.port = 2222;
        let e = plan(&fx.facts, &h, &HardenOptions::default()).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("fs3") && msg.contains("blocks SSH port 2222"),
            "{msg}"
        );
        assert!(msg.contains("--firewall-reset"), "{msg}");
        let reset = HardenOptions {
            firewall_reset: true,
            ..HardenOptions::default()
        };
        let p = plan(&fx.facts, &h, &reset).unwrap();
        assert!(commands(&p).starts_with("--force reset\nallow proto tcp to any port 2222"));
    }

    #[test]
    fn reset_drops_foreign_rules_and_readds_everything() {
        let h = host("fs1");
        let mut fx = hardened(Fixture::stock(&[22]), &h);
        let v4 = format!(
            "{}\n### tuple ### allow tcp 3306 0.0.0.0/0 any 0.0.0.0/0 in\n",
            fx.facts.file_text(USER_RULES).unwrap()
        );
        fx = fx.set(USER_RULES, &v4);
        let p = plan(&fx.facts, &h, &HardenOptions::default()).unwrap();
        assert!(
            p.is_noop(),
            "the operator's rule stays without --firewall-reset"
        );
        let reset = HardenOptions {
            firewall_reset: true,
            ..HardenOptions::default()
        };
        let p = plan(&fx.facts, &h, &reset).unwrap();
        assert!(
            p.changes[0].contains("drop 1 existing rule(s)"),
            "{:?}",
            p.changes
        );
        assert!(
            row_of(&p, "drop", "3306", "tcp").is_some_and(|r| r.contains("anywhere")),
            "{}",
            p.diffs[0]
        );
        let all = commands(&p);
        let cmds: Vec<&str> = all.lines().collect();
        assert_eq!(cmds[0], "--force reset");
        assert_eq!(cmds.iter().filter(|c| c.starts_with("allow ")).count(), 8);
        assert!(cmds.contains(&"default deny incoming"));
        assert_eq!(p.changes.last().map(String::as_str), Some("enable ufw"));
    }

    #[test]
    fn wrong_default_policies_are_changes() {
        let h = host("fs1");
        let fx = hardened(Fixture::stock(&[22]), &h).set(
            UFW_DEFAULTS,
            "IPV6=yes\nDEFAULT_INPUT_POLICY=\"ACCEPT\"\nDEFAULT_OUTPUT_POLICY=\"DROP\"\n",
        );
        let p = plan(&fx.facts, &h, &HardenOptions::default()).unwrap();
        assert_eq!(
            p.changes,
            [
                "default policy for incoming: deny (was allow)",
                "default policy for outgoing: allow (was deny)",
                "reload ufw"
            ]
        );
    }

    #[test]
    fn ufw_not_installed_yet_plans_everything() {
        let mut fx = Fixture::stock(&[22]);
        fx.facts.base.packages.clear();
        fx.facts.files.files.remove(UFW_DEFAULTS);
        let p = plan(&fx.facts, &host("fs1"), &HardenOptions::default()).unwrap();
        assert!(p.changes.iter().any(|c| c.contains("not installed yet")));
        assert!(commands(&p).contains("default deny incoming"));
        assert_eq!(p.changes.last().map(String::as_str), Some("enable ufw"));
    }

    #[test]
    fn tuples_parse_comments_apps_and_ignore_junk() {
        let text = "### tuple ### allow udp 5060 0.0.0.0/0 any 10.0.0.5 in comment=6673666c65657420736970\n\
                    ### tuple ### allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 OpenSSH - in\n\
                    ### tuple ### garbage\n-A ufw-user-input -j ACCEPT\n\
                    ### tuple ### allow tcp 80 0.0.0.0/0 any 0.0.0.0/0 in comment=zz\n";
        let t = parse_tuples(text, false);
        assert_eq!(t.len(), 3);
        assert_eq!(t[0].comment.as_deref(), Some("fsfleet sip"));
        assert!(t[0].is_fsfleet());
        assert_eq!(t[0].src_net(), Some("10.0.0.5/32".parse().unwrap()));
        assert_eq!((t[1].dport.as_str(), t[1].direction.as_str()), ("22", "in"));
        assert!(!t[1].is_fsfleet());
        assert_eq!(
            t[2].comment.as_deref(),
            Some("zz"),
            "undecodable comment kept raw"
        );
        assert!(dport_covers("80,5000:6000", Ports::one(5060)));
        assert!(!dport_covers("any", Ports::one(5060)));
        assert!(!dport_covers(
            "16384:20000",
            Ports {
                first: 16384,
                last: 32768
            }
        ));
    }
}
