//! Every skippable harden step behind one trait, and the one registry that lists them in run
//! order.
//!
//! A step plans from the host's facts on the controller (pure) and returns a typed action; its
//! `apply` gets exactly that action, so nothing between plan and apply is a string to re-parse.
//! A plan also declares what the orchestrator does for the step: config file edits (written in
//! one all-or-nothing batch), new secrets (to the vault as pending before the host sees them),
//! the reloads FreeSWITCH needs, the Event Socket FreeSWITCH runs afterwards, extra paths to
//! back up. [`REGISTRY`] drives `--skip/--only`, probes, planning, `--check/--diff`, apply,
//! reload needs and the report: adding a step is its module plus one line there.

use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;

use super::context::{FileEdit, HardenOptions, HostFacts, Probes, StepCtx, StepError, StepPlan};
use super::preflight::Preflight;
use super::{
    auth_logging, dialplan, event_socket, fail2ban, file_modes, firewall, fs_cli, modules,
    packages, per_user_passwords, reload, remove_stock_users, sip_password, sip_protocol, tls,
    voicemail_pins,
};
use crate::inventory::{HardenLevel, Host};
use crate::model::EventSocket;
use crate::secret::Secret;

/// When a step's changes reach the host, relative to the orchestrator's phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Its plan's file edits go out in the one all-or-nothing config write, before any system
    /// change; a plan it cannot make stops the host before anything changes.
    Config,
    /// Applied after the config write, before the reload; a failure puts the config files
    /// back. A plan it cannot make is reported when the step would run.
    System,
    /// Applied once FreeSWITCH runs what the reload gave it; a plan it cannot make stops the
    /// host before anything changes.
    AfterReload,
}

/// What a step would do (for the operator and the orchestrator) and the typed action that does
/// it (for `apply`).
#[derive(Debug, Clone, PartialEq)]
pub struct Plan<A> {
    pub outline: StepPlan,
    pub action: A,
}

impl<A> Deref for Plan<A> {
    type Target = StepPlan;
    fn deref(&self) -> &StepPlan {
        &self.outline
    }
}

impl<A> DerefMut for Plan<A> {
    fn deref_mut(&mut self) -> &mut StepPlan {
        &mut self.outline
    }
}

/// A step whose whole change is its config edits.
impl From<StepPlan> for Plan<()> {
    fn from(outline: StepPlan) -> Plan<()> {
        Plan {
            outline,
            action: (),
        }
    }
}

/// `impl Step` for a [`Phase::Config`] step, from its module's `NAME`, `probes` and
/// `step_plan(&PlanInput) -> Result<StepPlan, StepError>`: the plan is its config edits, which
/// the orchestrator writes, so `apply` has nothing left to do.
macro_rules! config_step {
    ($step:ident) => {
        $crate::harden::step::config_step!($step, Baseline);
    };
    ($step:ident, $level:ident) => {
        impl $crate::harden::step::Step for $step {
            const NAME: &'static str = NAME;
            const PHASE: $crate::harden::step::Phase = $crate::harden::step::Phase::Config;
            const LEVEL: $crate::inventory::HardenLevel = $crate::inventory::HardenLevel::$level;
            type Action = ();

            fn probes(p: &mut $crate::harden::Probes, host: &$crate::inventory::Host) {
                probes(p, host)
            }

            fn plan(
                input: &$crate::harden::step::PlanInput<'_>,
            ) -> Result<$crate::harden::step::Plan<()>, $crate::harden::StepError> {
                step_plan(input).map($crate::harden::step::Plan::from)
            }

            fn apply<'a>(
                _ctx: &'a $crate::harden::StepCtx<'a>,
                _action: &'a (),
            ) -> impl std::future::Future<Output = Result<Vec<String>, $crate::harden::StepError>>
            + Send
            + 'a {
                std::future::ready(Ok(Vec::new()))
            }
        }
    };
}
pub(crate) use config_step;

/// What a step plans from.
pub struct PlanInput<'a> {
    pub facts: &'a HostFacts,
    pub host: &'a Host,
    pub opts: &'a HardenOptions,
    /// What preflight proved of FreeSWITCH's Event Socket.
    pub pre: &'a Preflight,
    /// The plans of the selected steps before this one, in registry order.
    pub before: &'a [&'a StepPlan],
}

/// One harden step: planned on the controller from the facts, applied with its own action.
pub trait Step {
    /// The name `--skip`/`--only` and the report use.
    const NAME: &'static str;
    /// What the progress line says while `apply` runs ("installing packages (apt)").
    const DOING: &'static str = Self::NAME;
    const PHASE: Phase;
    /// The level the step belongs to: a production step runs only at `--level production`
    /// (or the inventory's `level`), or when `--only` names it.
    const LEVEL: HardenLevel = HardenLevel::Baseline;
    /// What `apply` needs, computed by `plan` (no secrets in its Debug).
    type Action: Send + Sync + 'static;

    /// The snippets and files the step reads, joined into the host's one facts script.
    fn probes(p: &mut Probes, host: &Host);

    /// Pure: what would change on this host. A plan without changes is not applied.
    fn plan(input: &PlanInput<'_>) -> Result<Plan<Self::Action>, StepError>;

    /// Make the change (a config step's edits are already written); returns the evidence lines
    /// of the report.
    fn apply<'a>(
        ctx: &'a StepCtx<'a>,
        action: &'a Self::Action,
    ) -> impl Future<Output = Result<Vec<String>, StepError>> + Send + 'a;
}

type ApplyFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<String>, StepError>> + Send + 'a>>;

/// A planned step with its action hidden, so every step's plan can sit in one list.
pub trait Planned: Send + Sync {
    fn outline(&self) -> &StepPlan;
    fn apply<'a>(&'a self, ctx: &'a StepCtx<'a>) -> ApplyFuture<'a>;
}

struct PlannedStep<S: Step> {
    plan: Plan<S::Action>,
}

impl<S: Step> Planned for PlannedStep<S> {
    fn outline(&self) -> &StepPlan {
        &self.plan.outline
    }
    fn apply<'a>(&'a self, ctx: &'a StepCtx<'a>) -> ApplyFuture<'a> {
        Box::pin(S::apply(ctx, &self.plan.action))
    }
}

/// A step's plan with its action type erased.
pub type PlanFn = fn(&PlanInput<'_>) -> Result<Box<dyn Planned>, StepError>;

/// A registry line: a step's name, phase and functions, with the action type erased.
pub struct Entry {
    pub name: &'static str,
    pub doing: &'static str,
    pub phase: Phase,
    pub level: HardenLevel,
    pub probes: fn(&mut Probes, &Host),
    pub plan: PlanFn,
}

fn plan_erased<S: Step + 'static>(input: &PlanInput<'_>) -> Result<Box<dyn Planned>, StepError> {
    let plan = S::plan(input)?;
    Ok(Box::new(PlannedStep::<S> { plan }))
}

const fn entry<S: Step + 'static>() -> Entry {
    Entry {
        name: S::NAME,
        doing: S::DOING,
        phase: S::PHASE,
        level: S::LEVEL,
        probes: S::probes,
        plan: plan_erased::<S>,
    }
}

/// Every skippable step, in the order it runs: the config steps (one write), the system steps
/// (packages first: fail2ban and ufw need them), then what needs the reloaded FreeSWITCH.
pub const REGISTRY: &[Entry] = &[
    entry::<sip_password::SipPassword>(),
    entry::<event_socket::EventSocketStep>(),
    entry::<auth_logging::AuthLogging>(),
    entry::<remove_stock_users::RemoveStockUsers>(),
    entry::<dialplan::Dialplan>(),
    entry::<voicemail_pins::VoicemailPins>(),
    entry::<per_user_passwords::PerUserPasswords>(),
    entry::<sip_protocol::SipProtocol>(),
    entry::<modules::Modules>(),
    entry::<file_modes::FileModes>(),
    entry::<packages::Packages>(),
    entry::<fail2ban::Fail2ban>(),
    entry::<firewall::Firewall>(),
    entry::<fs_cli::FsCli>(),
    entry::<tls::Tls>(),
];

/// The phases of [`REGISTRY`] never go back (the orchestrator applies them in that order).
const fn phases_in_order(r: &[Entry]) -> bool {
    const fn rank(p: Phase) -> u8 {
        match p {
            Phase::Config => 0,
            Phase::System => 1,
            Phase::AfterReload => 2,
        }
    }
    let mut i = 1;
    while i < r.len() {
        if rank(r[i].phase) < rank(r[i - 1].phase) {
            return false;
        }
        i += 1;
    }
    true
}
const _: () = assert!(phases_in_order(REGISTRY));

/// The Event Socket FreeSWITCH runs once the plans are applied and reloaded.
#[derive(Debug, Clone)]
pub struct EslAfter {
    pub es: EventSocket,
    pub password: Secret,
    /// The Event Socket is reloaded (its file changes, or FreeSWITCH runs another password).
    pub reloads: bool,
}

/// What FreeSWITCH runs after the plans: the file's new Event Socket when a plan changes it;
/// else, when a cut run left FreeSWITCH on a vault password (stale), the file's once reloaded;
/// else what runs now.
pub fn esl_after<'p>(pre: &Preflight, plans: impl IntoIterator<Item = &'p StepPlan>) -> EslAfter {
    let changed = plans
        .into_iter()
        .filter_map(|p| p.event_socket.clone())
        .last();
    let file_changes = changed.is_some();
    let (es, password) = match changed {
        Some(es) => {
            let pw = es.password.clone();
            (es, pw)
        }
        None if pre.stale => (pre.esl.clone(), pre.esl.password.clone()),
        None => (
            pre.esl.clone(),
            pre.live_password
                .clone()
                .unwrap_or_else(|| pre.esl.password.clone()),
        ),
    };
    let reloads =
        file_changes || pre.stale || pre.live_password.as_ref().is_some_and(|l| *l != password);
    EslAfter {
        reloads,
        es,
        password,
    }
}

/// The reloads the plans declare, together.
pub fn planned_reloads<'p>(plans: impl IntoIterator<Item = &'p StepPlan>) -> reload::Needs {
    let mut out = reload::Needs::default();
    for p in plans {
        out.reloadxml |= p.reload.reloadxml;
        out.event_socket |= p.reload.event_socket;
        for r in &p.reload.rescan {
            if !out.rescan.contains(r) {
                out.rescan.push(r.clone());
            }
        }
        for m in &p.reload.unload {
            if !out.unload.contains(m) {
                out.unload.push(m.clone());
            }
        }
        for r in &p.reload.restart {
            if !out.restart.contains(r) {
                out.restart.push(r.clone());
            }
        }
    }
    out
}

/// The config files the plans edit, in registry order, each once: a later step's edit of a file
/// an earlier step edits too is built on that one ([`PlanInput::edit`]), so the last edit of a
/// path is what the file becomes (its `old` and `was` are still the host's).
pub fn planned_edits<'p>(plans: impl IntoIterator<Item = &'p StepPlan>) -> Vec<&'p FileEdit> {
    let all: Vec<&FileEdit> = plans.into_iter().flat_map(|p| p.edits.iter()).collect();
    all.iter()
        .enumerate()
        .filter(|(i, e)| !all[i + 1..].iter().any(|later| later.path == e.path))
        .map(|(_, e)| *e)
        .collect()
}

impl PlanInput<'_> {
    /// The latest edit of `path` the steps before this one plan.
    pub fn planned(&self, path: &str) -> Option<&FileEdit> {
        self.before
            .iter()
            .rev()
            .flat_map(|p| p.edits.iter().rev())
            .find(|e| e.path == path)
    }

    /// A config file's bytes as the steps before this one leave it (None: not read).
    pub fn bytes_now(&self, path: &str) -> Option<&[u8]> {
        match self.planned(path) {
            Some(e) => Some(&e.new),
            None => self
                .facts
                .files
                .files
                .get(path)
                .and_then(|f| f.content.as_deref()),
        }
    }

    /// An edit of `path` to `new` on top of what the steps before plan for it (their content
    /// and owner/mode), so two steps editing one file never undo each other; `secret`: the
    /// file holds a secret (see [`HostFacts::edit`]). None when it adds nothing to theirs.
    pub fn edit(
        &self,
        path: &str,
        new: Vec<u8>,
        secret: bool,
    ) -> Result<Option<FileEdit>, StepError> {
        let Some(prev) = self.planned(path) else {
            return self.facts.edit(path, new, secret);
        };
        let want = if secret {
            prev.want.for_secret(self.facts.fs_owner())
        } else {
            prev.want.clone()
        };
        if prev.new == new && prev.want == want {
            return Ok(None);
        }
        Ok(Some(FileEdit {
            path: path.to_string(),
            old: prev.old.clone(),
            new,
            was: prev.was.clone(),
            want,
            created: prev.created,
        }))
    }
}

/// Every registry step planned on `f` (pure) as for a host whose running FreeSWITCH took its
/// config as it is; a step that needs more than the config (packages, fail2ban) may refuse.
#[cfg(test)]
pub fn plan_model_only(
    f: &HostFacts,
    host: &Host,
    opts: &HardenOptions,
) -> Vec<(&'static str, Result<StepPlan, StepError>)> {
    let pre = match Preflight::from_config(f) {
        Ok(p) => p,
        Err(e) => return vec![("preflight", Err(e))],
    };
    let mut out: Vec<(&'static str, Result<StepPlan, StepError>)> = Vec::new();
    for e in REGISTRY {
        let before: Vec<&StepPlan> = out.iter().filter_map(|(_, p)| p.as_ref().ok()).collect();
        let input = PlanInput {
            facts: f,
            host,
            opts,
            pre: &pre,
            before: &before,
        };
        let plan = (e.plan)(&input).map(|p| p.outline().clone());
        out.push((e.name, plan));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_that_runs_on_the_host_says_what_it_is_doing() {
        // The progress line shows it while apply runs (apt can take a minute).
        for e in REGISTRY.iter().filter(|e| e.phase != Phase::Config) {
            assert_ne!(
                e.doing, e.name,
                "{} shows only its name while it runs",
                e.name
            );
        }
    }

    #[test]
    fn the_registry_names_each_step_once_in_run_order() {
        let names: Vec<&str> = REGISTRY.iter().map(|e| e.name).collect();
        assert_eq!(
            names,
            [
                sip_password::NAME,
                event_socket::NAME,
                auth_logging::NAME,
                remove_stock_users::NAME,
                dialplan::NAME,
                voicemail_pins::NAME,
                per_user_passwords::NAME,
                sip_protocol::NAME,
                modules::NAME,
                file_modes::NAME,
                packages::NAME,
                fail2ban::NAME,
                firewall::NAME,
                fs_cli::NAME,
                tls::NAME
            ]
        );
        assert!(phases_in_order(REGISTRY));
        let backwards = [
            entry::<firewall::Firewall>(),
            entry::<auth_logging::AuthLogging>(),
        ];
        assert!(!phases_in_order(&backwards));
    }

    #[test]
    fn a_planned_step_keeps_its_outline() {
        let f = HostFacts::stock();
        let h = crate::harden::context::test_host("pbx1");
        let opts = HardenOptions::default();
        let pre = crate::harden::preflight::Preflight::from_config(&f).unwrap();
        let input = PlanInput {
            facts: &f,
            host: &h,
            opts: &opts,
            pre: &pre,
            before: &[],
        };
        let fw = REGISTRY
            .iter()
            .find(|e| e.name == firewall::NAME)
            .map(|e| (e.plan)(&input));
        let direct = <firewall::Firewall as Step>::plan(&input).ok();
        match (fw, direct) {
            (Some(Ok(p)), Some(d)) => assert_eq!(p.outline(), &d.outline),
            (fw, d) => panic!("firewall did not plan: {:?} {:?}", fw.map(|r| r.is_ok()), d),
        }
    }
}
