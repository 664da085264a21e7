//! The order of a host's harden run, and the guarantees around it:
//! - facts in one round trip, everything planned on the controller, only changes sent;
//! - new secrets reach the vault (pending) before the host is touched, and become active once
//!   verified;
//! - the config tree is backed up before the first change;
//! - a failure before the reload puts the changed config files back: old state or new, never a mix.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::Mutex;

use super::step::{Phase, PlanInput};
use super::{
    FileEdit, HardenOptions, HostFacts, Probes, StepCtx, StepError, StepPlan, backup, fail2ban,
    firewall, per_user_passwords, preflight, reload, sip_password, step, verify,
};
use crate::facts::{self, FactsError};
use crate::fleet::HostCtx;
use crate::hostfs;
use crate::inventory::{ConfDir, HardenLevel, Host};
use crate::report::{HostReport, StepReport, StepStatus};
use crate::secret::Secret;
use crate::ssh::{Connector, Session};
use crate::vault::{CredKind, KeyBinding, UserCredKind, Vault, VaultError};

/// Every step name, in the order it runs: the orchestrator's phases (preflight, backup, reload,
/// verify) around the registry's steps. `--skip`/`--only` take these names.
pub const STEPS: &[&str] = &step_names();

const N_STEPS: usize = step::REGISTRY.len() + 4;

const fn step_names() -> [&'static str; N_STEPS] {
    let mut out = [""; N_STEPS];
    out[0] = preflight::NAME;
    out[1] = backup::NAME;
    let mut i = 2;
    let mut j = 0;
    while j < step::REGISTRY.len() {
        if !matches!(step::REGISTRY[j].phase, Phase::AfterReload) {
            out[i] = step::REGISTRY[j].name;
            i += 1;
        }
        j += 1;
    }
    out[i] = reload::NAME;
    i += 1;
    j = 0;
    while j < step::REGISTRY.len() {
        if matches!(step::REGISTRY[j].phase, Phase::AfterReload) {
            out[i] = step::REGISTRY[j].name;
            i += 1;
        }
        j += 1;
    }
    out[i] = verify::NAME;
    out
}

/// Why `--skip`/`--only` cannot be taken.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum SelectionError {
    #[error(
        "unknown step {name:?}{}; the steps are: {}",
        suggestion.as_ref().map(|s| format!(" (did you mean {s:?}?)")).unwrap_or_default(),
        STEPS.join(", ")
    )]
    Unknown {
        name: String,
        suggestion: Option<String>,
    },
    #[error(
        "every step --only names ({only}) is also in --skip: nothing would run; drop it from one of them"
    )]
    NothingLeft { only: String },
    #[error("preflight cannot be skipped: it is what keeps a host from being half-changed")]
    Preflight,
    #[error(
        "backup cannot be skipped: it runs whenever something changes and is how a host is \
         restored (it keeps the last 5 runs in /var/backups/fsfleet)"
    )]
    Backup,
}

/// Why a host's run stopped. Its text is the host's one-line error in the report
/// ([`host`]); `outcome` says what became of the host where that is not obvious.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("gathering facts: {0}")]
    Facts(#[from] FactsError),
    /// A step or an orchestrator phase failed (shared: a system step's refusal stays in its
    /// plan, for the report, until the step would run).
    #[error("{step}: {source}{}", then(.outcome))]
    Step {
        step: &'static str,
        #[source]
        source: Arc<StepError>,
        outcome: Option<String>,
    },
    #[error("vault: {source}{}", then(.outcome))]
    Vault {
        #[source]
        source: VaultError,
        outcome: Option<String>,
    },
    /// The all-or-nothing config write failed.
    #[error("writing the config files failed: {source}; {outcome}")]
    Write {
        #[source]
        source: Box<hostfs::HostFsError>,
        outcome: String,
    },
}

/// The one line a report shows for an error: its message, then each cause the messages before
/// do not already quote (most messages quote their source; some leave it to the chain).
pub fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

fn then(outcome: &Option<String>) -> String {
    outcome
        .as_ref()
        .map(|o| format!("; {o}"))
        .unwrap_or_default()
}

/// Nothing has been changed on the host when these fail.
const UNCHANGED: &str = "nothing was changed on the host";

impl RunError {
    fn step(step: &'static str, source: StepError) -> RunError {
        RunError::Step {
            step,
            source: Arc::new(source),
            outcome: None,
        }
    }

    fn vault(source: VaultError, outcome: Option<&str>) -> RunError {
        RunError::Vault {
            source,
            outcome: outcome.map(str::to_string),
        }
    }

    /// The same failure, saying what became of the host.
    fn then(self, what: String) -> RunError {
        match self {
            RunError::Step { step, source, .. } => RunError::Step {
                step,
                source,
                outcome: Some(what),
            },
            other => other,
        }
    }
}

/// Which steps run.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub skip: BTreeSet<String>,
    pub only: BTreeSet<String>,
}

impl Selection {
    /// Parse `--skip`/`--only` lists, refusing unknown names.
    pub fn new(skip: &[String], only: &[String]) -> Result<Selection, SelectionError> {
        let check = |list: &[String]| -> Result<BTreeSet<String>, SelectionError> {
            list.iter()
                .flat_map(|s| s.split(','))
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    if STEPS.contains(&s) {
                        Ok(s.to_string())
                    } else {
                        Err(SelectionError::Unknown {
                            name: s.into(),
                            suggestion: crate::inventory::closest(s, STEPS.iter().copied())
                                .map(str::to_string),
                        })
                    }
                })
                .collect()
        };
        let sel = Selection {
            skip: check(skip)?,
            only: check(only)?,
        };
        if sel.skip.contains(preflight::NAME) {
            return Err(SelectionError::Preflight);
        }
        // Accepting it and backing up anyway would say one thing and do another.
        if sel.skip.contains(backup::NAME) {
            return Err(SelectionError::Backup);
        }
        // --skip narrows --only; when it takes every step --only named, the run would do
        // nothing and still say ok.
        if !sel.only.is_empty() && sel.only.iter().all(|s| sel.skip.contains(s)) {
            return Err(SelectionError::NothingLeft {
                only: sel.only.iter().cloned().collect::<Vec<_>>().join(","),
            });
        }
        Ok(sel)
    }

    /// Whether a registry step runs on a host hardened to `level`: a production step only at
    /// the production level or when `--only` names it (`--skip` still wins).
    pub fn runs_entry(&self, e: &step::Entry, level: HardenLevel) -> bool {
        self.runs(e.name) && (e.level <= level || self.only.contains(e.name))
    }

    /// preflight always runs; backup runs whenever something changes; reload runs whenever
    /// the changes of the steps that ran need it, unless `--skip reload` says otherwise: a
    /// step's change is not made until FreeSWITCH reads it, so `--only dialplan` means the
    /// dialplan change, live.
    pub fn runs(&self, step: &str) -> bool {
        if step == preflight::NAME || step == backup::NAME {
            return true;
        }
        if step == reload::NAME {
            return !self.skip.contains(step);
        }
        !self.skip.contains(step) && (self.only.is_empty() || self.only.contains(step))
    }
}

/// `fsfleet rotate` leaves where the Event Socket listens alone, so it does not fail on it.
fn opts_exposure_fails(opts: &HardenOptions) -> bool {
    opts.rotate_only.is_none()
}

/// What all hosts of a run share.
pub struct Shared {
    pub connector: Arc<Connector>,
    pub vault: Mutex<Vault>,
    pub opts: HardenOptions,
    pub selection: Selection,
}

/// Times one step and turns its outcome into a report line.
struct Steps {
    reports: Vec<StepReport>,
    diff: bool,
}

impl Steps {
    fn push(
        &mut self,
        name: &str,
        status: StepStatus,
        message: String,
        evidence: Vec<String>,
        started: Instant,
    ) {
        self.reports.push(StepReport {
            name: name.to_string(),
            status,
            message,
            evidence,
            elapsed_ms: started.elapsed().as_millis() as u64,
        });
    }

    fn planned(&mut self, name: &str, plan: &StepPlan, check: bool, started: Instant) {
        let mut evidence: Vec<String> = plan
            .warnings
            .iter()
            .map(|w| format!("warning: {w}"))
            .collect();
        if self.diff {
            evidence.extend(plan.diffs.iter().cloned());
        }
        if !plan.refused.is_empty() {
            let msg = refused_message(plan, check);
            self.push(name, StepStatus::Failed, msg, evidence, started);
        } else if plan.is_noop() {
            self.push(
                name,
                StepStatus::Ok,
                "nothing to change".into(),
                evidence,
                started,
            );
        } else {
            let msg = plan.changes.join("; ");
            let msg = if check { format!("would {msg}") } else { msg };
            self.push(name, StepStatus::Changed, msg, evidence, started);
        }
    }

    /// A step applied: its change lines, then `apply`'s evidence, warnings and (`--diff`) diffs.
    fn applied(
        &mut self,
        name: &str,
        plan: &StepPlan,
        mut evidence: Vec<String>,
        started: Instant,
    ) {
        evidence.extend(plan.warnings.iter().map(|w| format!("warning: {w}")));
        if self.diff {
            evidence.extend(plan.diffs.iter().cloned());
        }
        if !plan.refused.is_empty() {
            let msg = refused_message(plan, false);
            self.push(name, StepStatus::Failed, msg, evidence, started);
            return;
        }
        let msg = done_lines(&plan.changes);
        self.push(name, StepStatus::Changed, msg, evidence, started);
    }

    fn skipped(&mut self, name: &str, why: &str) {
        self.push(
            name,
            StepStatus::Skipped,
            why.to_string(),
            vec![],
            Instant::now(),
        );
    }

    fn failed(&mut self, name: &str, e: &StepError, started: Instant) {
        self.push(name, StepStatus::Failed, one_line(e), vec![], started);
    }
}

/// What an applied plan did, said as done: each change's leading verb in the past tense
/// ("rotate X" becomes "rotated X"), and what only mattered while planning left out (an order
/// note such as "once the packages step has installed it", a pointer to `--diff`, the state a
/// step before this one has since changed).
fn done_lines(changes: &[String]) -> String {
    const PAST: &[(&str, &str)] = &[
        ("rotate ", "rotated "),
        ("bind ", "bound "),
        ("set ", "set "),
        ("turn on ", "turned on "),
        ("make ", "made "),
        ("create ", "created "),
        ("update ", "updated "),
        ("fix ", "fixed "),
        ("start ", "started "),
        ("restart ", "restarted "),
        ("reset ", "reset "),
        ("enable ", "enabled "),
        ("reload ", "reloaded "),
        ("rewrite ", "rewrote "),
        ("write ", "wrote "),
        ("replace ", "replaced "),
        ("install ", "installed "),
        ("add ", "added "),
        ("delete ", "deleted "),
        ("drop ", "dropped "),
        ("remove ", "removed "),
        ("disable ", "disabled "),
        ("comment out ", "commented out "),
        (
            "default policy for incoming: ",
            "default policy for incoming now ",
        ),
        (
            "default policy for outgoing: ",
            "default policy for outgoing now ",
        ),
    ];
    const PLANNING_ONLY: &[&str] = &[
        " (once the packages step has installed it)",
        " (--diff lists them)",
    ];
    let mut out: Vec<String> = Vec::new();
    for part in changes.iter().flat_map(|c| c.split("; ")) {
        if part.ends_with("(the packages step installs it)") {
            continue;
        }
        let mut p = part.to_string();
        for note in PLANNING_ONLY {
            p = p.replace(note, "");
        }
        if let Some((from, to)) = PAST.iter().find(|(from, _)| p.starts_with(from)) {
            p = format!("{to}{}", &p[from.len()..]);
        }
        out.push(p);
    }
    out.join("; ")
}

/// A step that refused part of its change: the refusal first (what the operator must decide),
/// then what it did (or would do) all the same.
fn refused_message(plan: &StepPlan, check: bool) -> String {
    let mut msg = plan.refused.join("; ");
    if !plan.is_noop() {
        msg = if check {
            format!("{msg}; would still {}", plan.changes.join("; "))
        } else {
            format!("{msg}; {}", done_lines(&plan.changes))
        };
    }
    msg
}

/// Gather the facts of every step that runs on this host, in one round trip.
pub(crate) async fn gather(
    session: &Session,
    host: &Host,
    runs: &(dyn Fn(&step::Entry) -> bool + Sync),
) -> Result<HostFacts, RunError> {
    let script = script(host, runs);
    let sections = facts::gather(session, &script).await?;
    Ok(HostFacts::parse(
        sections,
        &session.user,
        session.uses_sudo(),
    )?)
}

/// The one facts script of a harden run: the snippets and files of every step that `runs`
/// (a baseline run does not read what only the production steps need), then the base facts.
fn script(host: &Host, runs: &(dyn Fn(&step::Entry) -> bool + Sync)) -> facts::Script {
    let mut probes = Probes::new();
    // Stage files a cut run left beside the configs (removed through hostfs in preflight).
    probes.fact::<facts::StaleStages>();
    for s in step::REGISTRY.iter().filter(|e| runs(e)) {
        (s.probes)(&mut probes, host);
    }
    probes.into_script(host)
}

/// Harden one host. Never panics on host data; every failure is a report.
pub async fn host(ctx: HostCtx, shared: Arc<Shared>) -> HostReport {
    let host = ctx.host.clone();
    let run_id = ctx.run_id().to_string();
    ctx.stage("connecting");
    let connecting = Instant::now();
    let session = match crate::cmd::connect_or_report(&shared.connector, &host).await {
        Ok(s) => s,
        Err(report) => return report,
    };
    let connect_time = connecting.elapsed();
    let mut steps = Steps {
        reports: Vec::new(),
        diff: shared.opts.diff,
    };
    // Where a host's time goes beyond the steps (preflight's own time includes the facts).
    let mut data = json!({
        "run_id": run_id,
        "check": shared.opts.check,
        "timings": { "connect_ms": connect_time.as_millis() as u64 },
    });
    let run = Run {
        ctx: &ctx,
        host: &host,
        session: &session,
        shared: &shared,
        run_id: &run_id,
        connect_time,
    };
    let outcome = run_steps(&run, &mut steps, &mut data).await;
    // What the run left, for `fsfleet rollback` to tell later hand edits from the run's own.
    if data["backup"].is_string() {
        data["run_record"] = match backup::record_after(&session, &run_id).await {
            Ok(()) => json!("recorded"),
            Err(e) => json!(one_line(&e)),
        };
    }
    session.close().await;
    let mut report = HostReport::from_steps(&host, steps.reports);
    if let Err(e) = outcome {
        report.error = Some(one_line(&e));
        if report.status != crate::report::HostStatus::Failed {
            report.status = crate::report::HostStatus::Failed;
        }
    }
    report.with_data(data)
}

/// What every phase of one host's run reads.
struct Run<'a> {
    ctx: &'a HostCtx,
    host: &'a Host,
    session: &'a Session,
    shared: &'a Shared,
    run_id: &'a str,
    connect_time: Duration,
}

impl Run<'_> {
    fn opts(&self) -> &HardenOptions {
        &self.shared.opts
    }

    fn sel(&self) -> &Selection {
        &self.shared.selection
    }
}

/// A host's run, in order: facts and preflight, every plan on the controller, then either the
/// `--check` report or the changes, then the proof that the host is as planned.
async fn run_steps(
    run: &Run<'_>,
    steps: &mut Steps,
    data: &mut serde_json::Value,
) -> Result<(), RunError> {
    let ready = preflight(run, steps, data).await?;
    let plan = plan_all(run, &ready, steps)?;
    if run.opts().check {
        render_check(&ready, &plan, steps);
        return Ok(());
    }
    let needs = apply_all(run, &ready, &plan, steps, data).await?;
    verify(run, &ready, &plan, &needs, steps).await
}

/// The host as preflight found it: its facts (with the live config and log dirs), what
/// preflight proved, and what the vault knows of it.
struct Ready {
    facts: HostFacts,
    pre: preflight::Preflight,
    /// An earlier run was interrupted: the vault holds a pending secret for the host, or a
    /// reload FreeSWITCH still owes the files it wrote.
    interrupted: bool,
    conf_dir: String,
}

/// Facts, the host key against the vault, preflight, and the stage files of a cut run.
async fn preflight(
    run: &Run<'_>,
    steps: &mut Steps,
    data: &mut serde_json::Value,
) -> Result<Ready, RunError> {
    let (host, session, opts) = (run.host, run.session, run.opts());
    run.ctx.stage("gathering facts (one script)");
    let t = Instant::now();
    let level = opts.level_for(host);
    let runs = |e: &step::Entry| run.sel().runs_entry(e, level);
    let mut facts = gather(session, host, &runs).await?;
    data["timings"]["facts_ms"] = json!(t.elapsed().as_millis() as u64);
    let refuse = |steps: &mut Steps, e: StepError| {
        steps.failed(preflight::NAME, &e, t);
        RunError::step(preflight::NAME, e)
    };
    // The vault's secrets go only to the host whose SSH key they belong to (finding 9): a name
    // now pointing at another machine is refused before anything is sent to it.
    let key = session.host_key();
    let (candidates, interrupted, owed_note, key_note) = {
        let mut vault = run.shared.vault.lock().await;
        let note = match vault.check_host_key(&host.name, key) {
            Err(mismatch) => {
                return Err(refuse(steps, StepError::Refused(mismatch.to_string())));
            }
            Ok(KeyBinding::Unbound) if !opts.check => {
                vault
                    .bind(&host.name, key)
                    .map_err(|e| RunError::vault(e, Some(UNCHANGED)))?;
                Some(format!(
                    "the vault's passwords for this host are now bound to host key {key}"
                ))
            }
            Ok(_) => None,
        };
        // Said, not silent: a reload an earlier run owes makes this one reload everything.
        let owed = vault
            .entry(&host.name)
            .and_then(|e| e.reload_owed.clone())
            .map(|run| {
                format!(
                    "run {run} wrote files FreeSWITCH has not reloaded (cut, --skip reload, or \
                     --offline-ok while it ran): this run reloads everything"
                )
            });
        (
            vault.candidates(&host.name, key, CredKind::EslPassword),
            vault.interrupted(&host.name),
            owed,
            note,
        )
    };
    run.ctx
        .stage("preflight: proving the Event Socket is FreeSWITCH's");
    // Who is registered matters to a default_password rotation and to giving users their own
    // passwords (their impact, their refusal).
    let level = opts.level_for(host);
    let runs_named = |name: &str| {
        step::REGISTRY
            .iter()
            .find(|e| e.name == name)
            .is_some_and(|e| run.sel().runs_entry(e, level))
    };
    let (per_user, remove_users) = (
        runs_named(per_user_passwords::NAME),
        runs_named(super::remove_stock_users::NAME),
    );
    let ask_regs = |f: &HostFacts| {
        (run.sel().runs(sip_password::NAME) && sip_password::rotation_reason(f, opts).is_some())
            || (per_user
                && !per_user_passwords::targets(f, opts.rotate_only.is_some_and(|s| s.users))
                    .is_empty())
            || (remove_users && super::remove_stock_users::any_stock_user(f))
    };
    let mut pre = preflight::run(
        session,
        &facts,
        &candidates,
        opts.offline_ok,
        ask_regs(&facts),
    )
    .await
    .map_err(|e| refuse(steps, e))?;
    // What the Event Socket says is host data: a directory that is not a plain absolute path
    // refuses the host (it would shape commands and fail2ban's configuration).
    for (what, value) in [("conf_dir", &pre.conf_dir), ("log_dir", &pre.log_dir)] {
        if let Some(v) = value
            && let Err(source) = hostfs::check_host_dir(v)
        {
            let e = StepError::HostFs {
                what: format!(
                    "FreeSWITCH's {what} (global_getvar; fix FreeSWITCH's -conf/-log settings)"
                ),
                source: Box::new(source),
            };
            return Err(refuse(steps, e));
        }
    }
    // The running FreeSWITCH knows where its config really is.
    if let Some(live) = pre.conf_dir.clone()
        && facts.files.conf_dir.as_deref() != Some(live.as_str())
    {
        let mut h = host.clone();
        h.conf_dir = ConfDir::Path(live.clone());
        facts = gather(session, &h, &runs).await?;
        if facts.files.conf_dir.as_deref() != Some(live.as_str()) {
            let e = StepError::Refused(format!(
                "FreeSWITCH reports conf_dir {live}, but no vars.xml is there"
            ));
            return Err(refuse(steps, e));
        }
        pre = preflight::run(
            session,
            &facts,
            &candidates,
            opts.offline_ok,
            ask_regs(&facts),
        )
        .await
        .map_err(|e| refuse(steps, e))?;
    }
    if let (Some(fs), Some(log)) = (facts.base.freeswitch.as_mut(), pre.log_dir.clone()) {
        fs.log_dir = Some(log);
    }
    let mut evidence = pre.evidence.clone();
    evidence.extend(key_note);
    evidence.extend(owed_note);
    evidence.extend(remove_stale_stages(session, &facts, opts.check).await);
    steps.push(
        preflight::NAME,
        StepStatus::Ok,
        "host can be hardened".into(),
        evidence,
        t,
    );
    let conf_dir = facts.files.conf_dir.clone().unwrap_or_default();
    data["conf_dir"] = json!(conf_dir);
    Ok(Ready {
        facts,
        pre,
        interrupted,
        conf_dir,
    })
}

/// Remove (or, with `--check`, count) the stage files a cut run left beside the configs; the
/// evidence line says what happened.
async fn remove_stale_stages(session: &Session, facts: &HostFacts, check: bool) -> Option<String> {
    // Names come from the host (a file name may hold a newline): only stage names inside the
    // config dir are removed.
    let stale_root = format!(
        "{}/",
        facts.files.conf_dir.as_deref().unwrap_or("/nonexistent")
    );
    let found = facts.get::<facts::StaleStages>().unwrap_or_default();
    let stale: Vec<&str> = found
        .iter()
        .map(String::as_str)
        .filter(|l| {
            l.starts_with(&stale_root)
                && l.rsplit('/')
                    .next()
                    .is_some_and(|n| n.contains(hostfs::STAGE_MARK))
                && hostfs::check_path(l).is_ok()
        })
        .collect();
    if stale.is_empty() {
        return None;
    }
    if check {
        return Some(format!(
            "would remove {} stage file(s) of an interrupted run",
            stale.len()
        ));
    }
    let ops: Vec<hostfs::Op> = stale
        .iter()
        .map(|p| hostfs::Op::Remove { path: p })
        .collect();
    Some(match hostfs::apply(session, &ops).await {
        Ok(_) => format!(
            "removed {} stage file(s) of an interrupted run",
            stale.len()
        ),
        Err(e) => format!("could not remove stage files of an interrupted run: {e}"),
    })
}

/// One selected step planned on the controller: its plan (or why it cannot be made), and when
/// planning began (the report's time of a step that changes nothing).
struct PlannedStep {
    name: &'static str,
    doing: &'static str,
    phase: Phase,
    plan: Result<Box<dyn step::Planned>, Arc<StepError>>,
    t: Instant,
}

/// Everything the host needs, planned on the controller before anything changes.
struct HostPlan {
    /// The selected steps in registry order.
    steps: Vec<PlannedStep>,
    /// The Event Socket FreeSWITCH runs once the plans are applied, and its password.
    esl: step::EslAfter,
}

impl HostPlan {
    /// The plans that could be made.
    fn outlines(&self) -> impl Iterator<Item = &StepPlan> {
        self.steps
            .iter()
            .filter_map(|s| s.plan.as_ref().ok())
            .map(|p| p.outline())
    }

    fn any_change(&self) -> bool {
        self.outlines().any(|p| !p.is_noop())
    }

    /// The config files to write, all or nothing.
    fn edits(&self) -> Vec<&FileEdit> {
        step::planned_edits(self.outlines())
    }

    /// Passwords the edits set, for the vault before the host sees them.
    fn secrets(&self) -> impl Iterator<Item = &(CredKind, Secret)> {
        self.outlines().flat_map(|p| p.secrets.iter())
    }

    /// Per-user secrets the edits set, for the vault before the host sees them.
    fn user_secrets(&self) -> impl Iterator<Item = &(String, UserCredKind, Secret)> {
        self.outlines().flat_map(|p| p.user_secrets.iter())
    }
}

/// Plan every selected step from the facts (pure), in registry order; each sees the plans
/// before it. A config or after-reload step that cannot be planned stops the host; a system
/// step's refusal is reported when it would run.
fn plan_all(run: &Run<'_>, ready: &Ready, steps: &mut Steps) -> Result<HostPlan, RunError> {
    let mut planned: Vec<PlannedStep> = Vec::new();
    let level = run.opts().level_for(run.host);
    for e in step::REGISTRY
        .iter()
        .filter(|e| run.sel().runs_entry(e, level))
    {
        let t = Instant::now();
        let before: Vec<&StepPlan> = planned
            .iter()
            .filter_map(|s| s.plan.as_ref().ok())
            .map(|p| p.outline())
            .collect();
        let plan = (e.plan)(&PlanInput {
            facts: &ready.facts,
            host: run.host,
            opts: run.opts(),
            pre: &ready.pre,
            before: &before,
        });
        let plan = match (e.phase, plan) {
            (Phase::System, p) | (_, p @ Ok(_)) => p.map_err(Arc::new),
            (_, Err(err)) => {
                steps.failed(e.name, &err, t);
                return Err(RunError::step(e.name, err));
            }
        };
        planned.push(PlannedStep {
            name: e.name,
            doing: e.doing,
            phase: e.phase,
            plan,
            t,
        });
    }
    let esl = step::esl_after(
        &ready.pre,
        planned
            .iter()
            .filter_map(|s| s.plan.as_ref().ok())
            .map(|p| p.outline()),
    );
    Ok(HostPlan {
        steps: planned,
        esl,
    })
}

/// `--check`: every plan as a report line, and whether FreeSWITCH would be reloaded.
fn render_check(ready: &Ready, plan: &HostPlan, steps: &mut Steps) {
    for s in &plan.steps {
        match &s.plan {
            Ok(p) => steps.planned(s.name, p.outline(), true, s.t),
            Err(e) => steps.failed(s.name, e, s.t),
        }
    }
    if reload_needs_of(ready, plan).any() {
        steps.push(
            reload::NAME,
            StepStatus::Changed,
            "would reload FreeSWITCH".into(),
            vec![],
            Instant::now(),
        );
    }
}

/// The reloads the plans need once their edits are on the host.
fn reload_needs_of(ready: &Ready, plan: &HostPlan) -> reload::Needs {
    reload_needs(
        &ready.facts,
        step::planned_reloads(plan.outlines()),
        ready.interrupted,
        &ready.pre,
        &plan.esl.password,
    )
}

/// Make the planned changes: backup, secrets to the vault, config files, system steps, reload,
/// then the steps that need the reloaded FreeSWITCH. Returns the reloads the changes needed.
async fn apply_all(
    run: &Run<'_>,
    ready: &Ready,
    plan: &HostPlan,
    steps: &mut Steps,
    data: &mut serde_json::Value,
) -> Result<reload::Needs, RunError> {
    let sctx = StepCtx {
        host: run.host,
        session: run.session,
        connector: &run.shared.connector,
        facts: &ready.facts,
        opts: run.opts(),
        run_id: run.run_id,
    };
    backup_if_changing(run, &sctx, ready, plan, steps, data).await?;
    pending_secrets_to_vault(run, ready, plan, data).await?;
    let needs = reload_needs_of(ready, plan);
    owe_reload(run, plan, &needs).await?;
    let written = write_configs(run, ready, plan, steps).await?;
    // A failure of a system step restores the config files (no reload yet).
    let before_reload = |p: Phase| p != Phase::AfterReload;
    if let Err(e) = apply_steps(run, &sctx, plan, before_reload, steps).await {
        let restored = restore(run.session, &written).await;
        return Err(e.then(restored));
    }
    reload_freeswitch(run, ready, plan, &needs, steps).await?;
    apply_steps(run, &sctx, plan, |p| p == Phase::AfterReload, steps).await?;
    Ok(needs)
}

/// Apply the planned steps of the phases `which` selects, in registry order; the first failure
/// stops them. A config step's edits are written by then: its report says so.
async fn apply_steps(
    run: &Run<'_>,
    ctx: &StepCtx<'_>,
    plan: &HostPlan,
    which: impl Fn(Phase) -> bool,
    steps: &mut Steps,
) -> Result<(), RunError> {
    for s in plan.steps.iter().filter(|s| which(s.phase)) {
        let p = match &s.plan {
            Ok(p) => p,
            Err(e) => {
                // A system step's refusal is reported when the step would run.
                steps.failed(s.name, e, s.t);
                return Err(RunError::Step {
                    step: s.name,
                    source: Arc::clone(e),
                    outcome: None,
                });
            }
        };
        let outline = p.outline();
        if outline.is_noop() {
            steps.planned(s.name, outline, false, s.t);
            continue;
        }
        run.ctx.stage(s.doing);
        let t = Instant::now();
        match p.apply(ctx).await {
            Ok(ev) => steps.applied(s.name, outline, ev, t),
            Err(e) => {
                steps.failed(s.name, &e, t);
                return Err(RunError::step(s.name, e));
            }
        }
    }
    Ok(())
}

/// The backup, before the first change.
async fn backup_if_changing(
    run: &Run<'_>,
    sctx: &StepCtx<'_>,
    ready: &Ready,
    plan: &HostPlan,
    steps: &mut Steps,
    data: &mut serde_json::Value,
) -> Result<(), RunError> {
    if !plan.any_change() {
        steps.skipped(backup::NAME, "nothing changes");
        return Ok(());
    }
    run.ctx.stage("backing up the config");
    let t = Instant::now();
    let mut paths: Vec<String> = plan.edits().iter().map(|e| e.path.clone()).collect();
    paths.extend(plan.outlines().flat_map(|p| p.backup.iter().cloned()));
    match backup::apply(sctx, &ready.conf_dir, &paths).await {
        Ok((dir, ev)) => {
            data["backup"] = json!(dir);
            steps.push(
                backup::NAME,
                StepStatus::Changed,
                format!("backed up to {dir}"),
                ev,
                t,
            );
            Ok(())
        }
        Err(e) => {
            steps.failed(backup::NAME, &e, t);
            Err(RunError::step(backup::NAME, e).then(UNCHANGED.into()))
        }
    }
}

/// Secrets to the vault BEFORE the host sees them, next to the ones the host uses now: a run
/// cut after the config edits but before the reload leaves FreeSWITCH on the old password,
/// and the next run's preflight can only get in with what the vault holds.
async fn pending_secrets_to_vault(
    run: &Run<'_>,
    ready: &Ready,
    plan: &HostPlan,
    data: &mut serde_json::Value,
) -> Result<(), RunError> {
    if plan.secrets().next().is_none() && plan.user_secrets().next().is_none() {
        return Ok(());
    }
    let (host, key) = (run.host, run.session.host_key());
    let mut vault = run.shared.vault.lock().await;
    for (user, kind, value) in plan.user_secrets() {
        vault
            .set_user_pending(&host.name, key, user, *kind, value, run.run_id)
            .map_err(|e| RunError::vault(e, Some(UNCHANGED)))?;
    }
    if let Some(domain) = plan.outlines().find_map(|p| p.user_domain.as_deref()) {
        vault
            .set_sip_domain(&host.name, key, domain)
            .map_err(|e| RunError::vault(e, Some(UNCHANGED)))?;
    }
    let current_sip = sip_password_in(&ready.facts);
    for (kind, _) in plan.secrets() {
        let current = match kind {
            CredKind::EslPassword => ready.pre.live_password.clone(),
            CredKind::SipPassword => current_sip.clone(),
        };
        if let Some(cur) = current {
            vault
                .set_active(&host.name, key, *kind, &cur, run.run_id)
                .map_err(|e| RunError::vault(e, Some(UNCHANGED)))?;
        }
    }
    for (kind, pw) in plan.secrets() {
        vault
            .set_pending(&host.name, key, *kind, pw, run.run_id)
            .map_err(|e| RunError::vault(e, Some(UNCHANGED)))?;
    }
    data["rotated"] = json!(plan.secrets().map(|(k, _)| k.as_str()).collect::<Vec<_>>());
    Ok(())
}

/// Before the config write, the vault records that FreeSWITCH owes a reload of what it writes:
/// a run cut between the write and the reload leaves the files done, and a re-run whose steps
/// then plan nothing (no secret pending either: a dialplan or users-only run) would otherwise
/// never reload them. The next run reloads everything instead ([`reload_needs`]).
async fn owe_reload(run: &Run<'_>, plan: &HostPlan, needs: &reload::Needs) -> Result<(), RunError> {
    if plan.edits().is_empty() || !needs.any() {
        return Ok(());
    }
    let mut vault = run.shared.vault.lock().await;
    vault
        .set_reload_owed(&run.host.name, run.session.host_key(), run.run_id)
        .map_err(|e| RunError::vault(e, Some(UNCHANGED)))
}

/// FreeSWITCH runs what is on disk now: the run owes it no reload.
async fn reload_paid(run: &Run<'_>) -> Result<(), RunError> {
    let mut vault = run.shared.vault.lock().await;
    vault
        .clear_reload_owed(&run.host.name)
        .map_err(|e| RunError::vault(e, None))
}

/// The SIP password vars.xml sets now.
fn sip_password_in(facts: &HostFacts) -> Option<Secret> {
    facts
        .conf_text("vars.xml")
        .ok()
        .and_then(|(_, text)| crate::conf::vars::get_var(text, "default_password"))
        .map(Secret::new)
}

/// Config edits, all or nothing: staged beside their targets, then renamed in one command, so
/// a cut connection or a full disk leaves the old files (FreeSWITCH never sees a mix).
async fn write_configs<'p>(
    run: &Run<'_>,
    ready: &Ready,
    plan: &'p HostPlan,
    steps: &mut Steps,
) -> Result<Vec<&'p FileEdit>, RunError> {
    run.ctx.stage("writing config files");
    let written = plan.edits();
    if !written.is_empty() {
        // The config dir must be root's or FreeSWITCH's (checked on the host, in the same
        // batch, before anything is staged).
        let fs_user = ready.facts.fs_owner().map_or("freeswitch", |(u, _)| u);
        let owners = ["root", fs_user];
        let mut ops = vec![hostfs::Op::CheckDir {
            path: &ready.conf_dir,
            owners: &owners,
        }];
        ops.extend(written.iter().map(|e| write_op(e, false)));
        if let Err(source) = hostfs::apply(run.session, &ops).await {
            let outcome = match &source {
                // The directory's owner made a rename fail after others: put those back.
                hostfs::HostFsError::Partial { written: done, .. } => {
                    let back: Vec<&FileEdit> = written
                        .iter()
                        .filter(|w| done.contains(&w.path))
                        .copied()
                        .collect();
                    restore(run.session, &back).await
                }
                _ => "no config file was changed".into(),
            };
            let e = RunError::Write {
                source: Box::new(source),
                outcome,
            };
            for s in plan.steps.iter().filter(|s| s.phase == Phase::Config) {
                steps.push(s.name, StepStatus::Failed, one_line(&e), vec![], s.t);
            }
            return Err(e);
        }
    }
    Ok(written)
}

/// Reload what the changes need, with the OLD password.
async fn reload_freeswitch(
    run: &Run<'_>,
    ready: &Ready,
    plan: &HostPlan,
    needs: &reload::Needs,
    steps: &mut Steps,
) -> Result<(), RunError> {
    let t = Instant::now();
    if !run.sel().runs(reload::NAME) {
        steps.skipped(
            reload::NAME,
            "skipped by --skip/--only: FreeSWITCH still runs the old settings",
        );
        return Ok(());
    }
    if !needs.any() {
        steps.push(
            reload::NAME,
            StepStatus::Ok,
            "nothing to reload".into(),
            vec![],
            t,
        );
        return Ok(());
    }
    let Some(old_pw) = ready.pre.live_password.clone() else {
        // Only a FreeSWITCH that is not running reads the files without a reload (at start);
        // one whose Event Socket did not answer still runs the old settings and is owed one.
        let running = ready
            .facts
            .base
            .freeswitch
            .as_ref()
            .is_some_and(|f| f.service_active);
        if running {
            steps.skipped(
                reload::NAME,
                "--offline-ok: FreeSWITCH runs but its Event Socket did not answer; it keeps the \
                 old settings until a reload (the next run does it)",
            );
            return Ok(());
        }
        steps.skipped(
            reload::NAME,
            "--offline-ok: FreeSWITCH is not running; it reads the new configs when it starts",
        );
        return reload_paid(run).await;
    };
    run.ctx.stage("reloading FreeSWITCH over the Event Socket");
    let stage = |s: &str| run.ctx.stage(s);
    match reload::apply(
        run.session,
        needs,
        &ready.pre.esl,
        &old_pw,
        &plan.esl.es,
        &stage,
    )
    .await
    {
        Ok(ev) => {
            steps.push(
                reload::NAME,
                StepStatus::Changed,
                "FreeSWITCH reloaded".into(),
                ev,
                t,
            );
            reload_paid(run).await
        }
        Err(e) => {
            steps.failed(reload::NAME, &e, t);
            Err(RunError::step(reload::NAME, e)
                .then("the vault holds every password this host may use".into()))
        }
    }
}

/// Prove the baseline, then the new secrets become active in the vault.
async fn verify(
    run: &Run<'_>,
    ready: &Ready,
    plan: &HostPlan,
    needs: &reload::Needs,
    steps: &mut Steps,
) -> Result<(), RunError> {
    let (sel, pre) = (run.sel(), &ready.pre);
    if !sel.runs(verify::NAME) {
        steps.skipped(
            verify::NAME,
            "skipped by --skip/--only; new passwords stay pending in the vault",
        );
        return Ok(());
    }
    if pre.live_password.is_none() {
        steps.skipped(
            verify::NAME,
            "--offline-ok: FreeSWITCH is not running; new passwords stay pending in the vault",
        );
        return Ok(());
    }
    run.ctx.stage("verifying");
    let t = Instant::now();
    let checks = verify::Checks {
        fail2ban: sel.runs(fail2ban::NAME),
        firewall: sel.runs(firewall::NAME),
        probe_timeout: verify::probe_timeout(run.connect_time),
        exposure_fails: opts_exposure_fails(run.opts()),
        // `fsfleet rotate --esl` proves the password it replaced no longer opens the socket.
        retired_esl: run
            .opts()
            .rotate_only
            .filter(|s| s.esl)
            .and(pre.live_password.clone())
            .filter(|old| *old != plan.esl.password),
    };
    // A run that changed nothing verifies from what preflight and the facts already proved (no
    // second round trip, no outside probe waiting out a filtered port); anything the facts do not
    // prove falls back to the full verify.
    let unchanged = !plan.any_change()
        && !needs.any()
        && plan.secrets().next().is_none()
        && plan.user_secrets().next().is_none()
        && pre.live_password.as_ref() == Some(&pre.esl.password);
    let quick = if unchanged {
        verify::from_facts(&ready.facts, &plan.esl.es, &checks)
    } else {
        None
    };
    let verified = match quick {
        Some(ev) => Ok(ev),
        None => {
            verify::apply(
                run.session,
                run.host,
                &plan.esl.es,
                &plan.esl.password,
                &checks,
            )
            .await
        }
    };
    match verified {
        Ok(ev) => steps.push(verify::NAME, StepStatus::Ok, verify::summary(&ev), ev, t),
        Err(e) => {
            steps.failed(verify::NAME, &e, t);
            return Err(RunError::step(verify::NAME, e));
        }
    }
    confirm_in_vault(run, ready, plan).await
}

/// What the host verifiably uses now goes to the vault as active (pending values it did not
/// take are dropped), so the vault can always let the operator in.
async fn confirm_in_vault(run: &Run<'_>, ready: &Ready, plan: &HostPlan) -> Result<(), RunError> {
    let (host, key) = (run.host, run.session.host_key());
    let sip_now = match plan.secrets().find(|(k, _)| *k == CredKind::SipPassword) {
        Some((_, pw)) => Some(pw.clone()),
        None => sip_password_in(&ready.facts),
    };
    let mut vault = run.shared.vault.lock().await;
    vault
        .confirm(
            &host.name,
            key,
            CredKind::EslPassword,
            &plan.esl.password,
            run.run_id,
        )
        .map_err(|e| RunError::vault(e, None))?;
    if let Some(pw) = sip_now {
        vault
            .confirm(&host.name, key, CredKind::SipPassword, &pw, run.run_id)
            .map_err(|e| RunError::vault(e, None))?;
    }
    // Per-user secrets this run set, and pending ones of a cut run that the host's files hold.
    let mut confirmed: Vec<(String, UserCredKind, Secret)> = plan.user_secrets().cloned().collect();
    for kind in UserCredKind::ALL {
        let on_host = super::context::user_credentials_in(&ready.facts, kind);
        for (user, value) in vault.pending_users(&host.name, kind) {
            if confirmed.iter().any(|(u, k, _)| *u == user && *k == kind) {
                continue;
            }
            if on_host.iter().any(|(u, v)| *u == user && *v == value) {
                confirmed.push((user, kind, value));
            } else {
                vault
                    .drop_user_pending(&host.name, &user, kind)
                    .map_err(|e| RunError::vault(e, None))?;
            }
        }
    }
    for (user, kind, value) in &confirmed {
        vault
            .confirm_user(&host.name, key, user, *kind, value, run.run_id)
            .map_err(|e| RunError::vault(e, None))?;
    }
    Ok(())
}

/// The reloads the changes need: what the plans declare. A run that was interrupted (the vault
/// still holds a pending password for the host) may have written files without reloading them:
/// reload everything. A running Event Socket password that differs from the file's means the
/// same for the Event Socket.
fn reload_needs(
    facts: &HostFacts,
    planned: reload::Needs,
    interrupted: bool,
    pre: &preflight::Preflight,
    file_pw: &Secret,
) -> reload::Needs {
    let esl_stale = pre
        .live_password
        .as_ref()
        .is_some_and(|live| live != file_pw);
    if interrupted || pre.stale {
        let all: Vec<String> = facts
            .files
            .conf_dir_files("sip_profiles", ".xml")
            .iter()
            .filter_map(|f| {
                f.text()
                    .and_then(|t| crate::conf::profile_name(t).ok().flatten())
            })
            .collect();
        return reload::Needs {
            reloadxml: true,
            rescan: all,
            event_socket: true,
            unload: planned.unload,
            restart: planned.restart,
        };
    }
    reload::Needs {
        event_socket: planned.event_socket || esl_stale,
        ..planned
    }
}

/// The hostfs write of an edit: its new content and metadata, or (`restore`) the old ones.
fn write_op(e: &FileEdit, restore: bool) -> hostfs::Op<'_> {
    // A file the run created did not exist before: putting it back means removing it.
    if restore && e.created {
        return hostfs::Op::Remove { path: &e.path };
    }
    let (content, meta) = if restore {
        (&e.old, &e.was)
    } else {
        (&e.new, &e.want)
    };
    hostfs::Op::Write {
        path: &e.path,
        content,
        user: &meta.user,
        group: &meta.group,
        mode: meta.mode,
    }
}

/// Put back the files written so far (exact old bytes, owner and mode).
async fn restore(session: &Session, written: &[&FileEdit]) -> String {
    if written.is_empty() {
        return "no config file had been changed".into();
    }
    let ops: Vec<hostfs::Op> = written.iter().map(|e| write_op(e, true)).collect();
    match hostfs::apply(session, &ops).await {
        Ok(_) => format!("the {} changed config files were restored", written.len()),
        Err(e) => format!(
            "RESTORE FAILED ({e}): the new config files stay; restore them from the backup by hand"
        ),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_harden_and_audit_scripts_build_with_unique_fact_names() {
        // Script::add refuses a name twice (two snippets would share one section).
        let host = crate::harden::context::test_host("pbx");
        let harden = script(&host, &|_| true);
        let audit = crate::audit::evidence::script(&host);
        assert!(harden.names().any(|n| n == facts::LISTEN));
        assert!(audit.names().any(|n| n == facts::LISTEN));
    }

    #[test]
    fn a_baseline_run_reads_nothing_only_the_production_steps_need() {
        use crate::facts::Fact;
        let host = crate::harden::context::test_host("pbx");
        let sel = Selection::default();
        let base = script(&host, &|e| sel.runs_entry(e, HardenLevel::Baseline));
        let prod = script(&host, &|e| sel.runs_entry(e, HardenLevel::Production));
        let names = |s: &facts::Script| s.names().map(str::to_string).collect::<Vec<_>>();
        let n = crate::harden::modules::ModuleConfs::NAME;
        assert!(!names(&base).iter().any(|x| x == n), "{n} at baseline");
        assert!(names(&prod).iter().any(|x| x == n), "{n} at production");
        // The dialplan includes go in the config files' tar only for the production steps.
        for g in crate::audit::evidence::EXTRA_CONF_FILES {
            assert!(!base.text().contains(g), "{g} at baseline");
            assert!(prod.text().contains(g), "{g} at production");
        }
    }

    #[test]
    fn the_harden_and_audit_scripts_run_each_registered_fact_once() {
        let host = crate::harden::context::test_host("pbx");
        for (what, s) in [
            ("harden", script(&host, &|_| true)),
            ("audit", crate::audit::evidence::script(&host)),
        ] {
            let names: Vec<&str> = s.names().collect();
            let text = s.text();
            for (i, n) in names.iter().enumerate() {
                assert!(
                    facts::registered().any(|u| u.name == *n) || facts::RAW_SECTIONS.contains(n),
                    "{what}: section {n} is not a registered fact"
                );
                // One definition, called once in the concurrent branch and once in the
                // fallback without a temp dir (only one of them runs).
                assert_eq!(
                    text.matches(&format!("\ns{i}() {{\n")).count(),
                    1,
                    "{what}: {n}"
                );
                assert_eq!(text.matches(&format!(" s{i} )")).count(), 2, "{what}: {n}");
                assert_eq!(
                    text.matches(&format!(" begin {n}@@")).count(),
                    2,
                    "{what}: {n}"
                );
            }
            // Every snippet's text once: no probe reaches the script under a second name.
            let bodies: Vec<&str> = s.snippets().map(|(_, b)| b).collect();
            for (i, a) in bodies.iter().enumerate() {
                assert!(!bodies[i + 1..].contains(a), "{what}: {} twice", names[i]);
            }
            // The base facts and the config files are in both, each once.
            for u in facts::BASE {
                assert_eq!(
                    names.iter().filter(|n| **n == u.name).count(),
                    1,
                    "{what}: {}",
                    u.name
                );
            }
            assert_eq!(names.iter().filter(|n| **n == "files").count(), 1, "{what}");
        }
    }

    use super::*;
    use crate::harden::{Meta, auth_logging, event_socket, fs_cli, packages, sip_password};
    use crate::model::EventSocket;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn set(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn step_names_are_checked_split_on_commas_and_trimmed() {
        let sel = Selection::new(&names(&["fail2ban, firewall", "", "packages"]), &[]).unwrap();
        assert_eq!(sel.skip, set(&["fail2ban", "firewall", "packages"]));
        assert!(sel.only.is_empty());
        for (skip, only, bad, near) in [
            (names(&["firewal"]), vec![], "firewal", Some("firewall")),
            (
                vec![],
                names(&["fail2ban,Reload"]),
                "Reload",
                Some("reload"),
            ),
            (vec![], names(&["everything"]), "everything", None),
        ] {
            let err = Selection::new(&skip, &only).unwrap_err();
            assert_eq!(
                err,
                SelectionError::Unknown {
                    name: bad.into(),
                    suggestion: near.map(str::to_string)
                }
            );
            let e = err.to_string();
            assert!(e.starts_with(&format!("unknown step {bad:?}")), "{e}");
            if let Some(near) = near {
                assert!(e.contains(&format!("(did you mean {near:?}?)")), "{e}");
            }
            assert!(
                e.ends_with(&format!("the steps are: {}", STEPS.join(", "))),
                "{e}"
            );
            for step in STEPS {
                assert!(e.contains(step), "{step} missing from {e}");
            }
        }
        // Every step name the runner knows is accepted (preflight and backup cannot be
        // skipped, but may be named in --only).
        let all: Vec<String> = STEPS
            .iter()
            .filter(|s| **s != preflight::NAME && **s != backup::NAME)
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            Selection::new(&all, &[]).unwrap().skip.len(),
            STEPS.len() - 2
        );
        // --only steps that --skip all takes away leave nothing: a mistake, not a silent no-op.
        let err = Selection::new(&names(&["packages"]), &names(&["packages"])).unwrap_err();
        assert_eq!(
            err,
            SelectionError::NothingLeft {
                only: "packages".into()
            }
        );
        assert!(err.to_string().contains("nothing would run"), "{err}");
        let every: Vec<String> = STEPS.iter().map(|s| s.to_string()).collect();
        assert_eq!(Selection::new(&[], &every).unwrap().only.len(), STEPS.len());
    }

    #[test]
    fn preflight_cannot_be_skipped_and_always_runs() {
        let err = Selection::new(&names(&["firewall,preflight"]), &[]).unwrap_err();
        assert_eq!(err, SelectionError::Preflight);
        let e = err.to_string();
        assert!(e.starts_with("preflight cannot be skipped"), "{e}");
        // --only never leaves preflight (nor the backup before a change) out.
        let sel = Selection::new(&[], &names(&["firewall"])).unwrap();
        assert!(sel.runs(preflight::NAME));
        assert!(sel.runs(backup::NAME));
        // Naming it in --only is fine.
        let sel = Selection::new(&[], &names(&["preflight"])).unwrap();
        assert!(sel.runs(preflight::NAME));
        assert!(!sel.runs(firewall::NAME));
    }

    #[test]
    fn production_steps_run_at_the_production_level_or_when_named() {
        let prod: Vec<&step::Entry> = step::REGISTRY
            .iter()
            .filter(|e| e.level == HardenLevel::Production)
            .collect();
        assert!(!prod.is_empty());
        let all = Selection::default();
        for e in step::REGISTRY {
            // Every step at production; only the baseline's at baseline.
            assert!(all.runs_entry(e, HardenLevel::Production), "{}", e.name);
            assert_eq!(
                all.runs_entry(e, HardenLevel::Baseline),
                e.level == HardenLevel::Baseline,
                "{}",
                e.name
            );
        }
        // --only names a production step: it runs at the baseline level, and nothing else does.
        let name = prod[0].name;
        let only = Selection::new(&[], &names(&[name])).unwrap();
        let ran: Vec<&str> = step::REGISTRY
            .iter()
            .filter(|e| only.runs_entry(e, HardenLevel::Baseline))
            .map(|e| e.name)
            .collect();
        assert_eq!(ran, [name]);
        // --skip wins at the production level too.
        let skip = Selection::new(&names(&[name]), &[]).unwrap();
        assert!(!skip.runs_entry(prod[0], HardenLevel::Production));
        // --level overrides the inventory's level; without it the host's level holds.
        let mut host = crate::harden::context::test_host("pbx1");
        host.level = HardenLevel::Production;
        assert_eq!(
            HardenOptions::default().level_for(&host),
            HardenLevel::Production
        );
        let base = HardenOptions {
            level: Some(HardenLevel::Baseline),
            ..HardenOptions::default()
        };
        assert_eq!(base.level_for(&host), HardenLevel::Baseline);
    }

    #[test]
    fn a_file_the_run_created_is_removed_when_the_files_are_put_back() {
        let mut e = edit("tls/agent.pem", true);
        assert!(matches!(write_op(&e, true), hostfs::Op::Write { .. }));
        e.created = true;
        assert!(matches!(write_op(&e, false), hostfs::Op::Write { .. }));
        assert!(
            matches!(write_op(&e, true), hostfs::Op::Remove { path } if path == "/etc/freeswitch/tls/agent.pem")
        );
    }

    #[test]
    fn only_and_skip_together() {
        // Nothing chosen: every step runs.
        let sel = Selection::new(&[], &[]).unwrap();
        assert!(STEPS.iter().all(|s| sel.runs(s)));

        // --skip alone: all but the skipped.
        let sel = Selection::new(&names(&["fail2ban", "reload"]), &[]).unwrap();
        let ran: Vec<&str> = STEPS.iter().copied().filter(|s| sel.runs(s)).collect();
        assert_eq!(
            ran,
            [
                preflight::NAME,
                backup::NAME,
                sip_password::NAME,
                event_socket::NAME,
                auth_logging::NAME,
                crate::harden::remove_stock_users::NAME,
                crate::harden::dialplan::NAME,
                crate::harden::voicemail_pins::NAME,
                per_user_passwords::NAME,
                crate::harden::sip_protocol::NAME,
                crate::harden::modules::NAME,
                crate::harden::file_modes::NAME,
                packages::NAME,
                firewall::NAME,
                fs_cli::NAME,
                crate::harden::tls::NAME,
                verify::NAME,
            ]
        );

        // --only alone: those, plus preflight, backup and the reload their changes need.
        let sel = Selection::new(&[], &names(&["fail2ban,firewall"])).unwrap();
        let ran: Vec<&str> = STEPS.iter().copied().filter(|s| sel.runs(s)).collect();
        assert_eq!(
            ran,
            [
                preflight::NAME,
                backup::NAME,
                fail2ban::NAME,
                firewall::NAME,
                reload::NAME,
            ]
        );

        // Both: --skip wins over --only, reload included.
        let sel =
            Selection::new(&names(&["firewall,reload"]), &names(&["fail2ban,firewall"])).unwrap();
        let ran: Vec<&str> = STEPS.iter().copied().filter(|s| sel.runs(s)).collect();
        assert_eq!(ran, [preflight::NAME, backup::NAME, fail2ban::NAME]);

        // The backup is taken whenever something changes: --skip backup is refused, not ignored.
        let err = Selection::new(&names(&["backup"]), &[]).unwrap_err();
        assert_eq!(err, SelectionError::Backup);
        let e = err.to_string();
        assert!(e.starts_with("backup cannot be skipped"), "{e}");
    }

    #[test]
    fn run_errors_keep_their_context_and_source() {
        use std::error::Error;
        let bad = hostfs::check_path("/etc/../shadow").unwrap_err();
        let bad_text = bad.to_string();
        let e = RunError::step(
            backup::NAME,
            StepError::HostFs {
                what: "writing the backup".into(),
                source: Box::new(bad),
            },
        )
        .then(UNCHANGED.into());
        assert_eq!(
            e.to_string(),
            format!("backup: writing the backup: {bad_text}; nothing was changed on the host")
        );
        let step = e.source().expect("the step's error");
        assert!(step.to_string().starts_with("writing the backup: "));
        let root = step.source().expect("the hostfs error");
        assert!(root.downcast_ref::<Box<hostfs::HostFsError>>().is_some());
        assert_eq!(root.to_string(), bad_text);
        // A vault failure says whether the host was touched; `then` only adds to step errors.
        let v = RunError::vault(
            VaultError::Io {
                path: "/v".into(),
                source: std::io::Error::other("disk full"),
            },
            Some(UNCHANGED),
        )
        .then("ignored".into());
        assert!(
            v.to_string().ends_with("; nothing was changed on the host"),
            "{v}"
        );
        assert!(v.source().is_some());
        // The report's line carries every cause once, also one a message leaves to the chain.
        assert_eq!(one_line(&v), v.to_string());
        let json = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
        let json_text = json.to_string();
        let v = RunError::vault(
            VaultError::Unparsable {
                path: "/v".into(),
                source: json,
            },
            None,
        );
        assert!(!v.to_string().contains(&json_text));
        assert!(
            one_line(&v).ends_with(&format!(": {json_text}")),
            "{}",
            one_line(&v)
        );
    }

    const FILE_PW: &str = "Z8fsfleetFilePassword1";

    fn preflight_with(live: Option<&str>, stale: bool) -> preflight::Preflight {
        preflight::Preflight {
            esl: EventSocket {
                password: Secret::new(FILE_PW),
                password_defaulted: false,
                listen_ip: "127.0.0.1".into(),
                listen_ip_defaulted: false,
                listen_port: 8021,
                inbound_acl: None,
            },
            target: None,
            live_password: live.map(Secret::new),
            stale,
            conf_dir: None,
            log_dir: None,
            registered: None,
            domain: None,
            loaded_modules: None,
            sessions: None,
            evidence: vec![],
        }
    }

    fn meta(mode: u32) -> Meta {
        Meta {
            user: "freeswitch".into(),
            group: "freeswitch".into(),
            mode,
        }
    }

    /// An edit of `rel` under /etc/freeswitch: the content changes, or (`content: false`) only
    /// the mode does.
    fn edit(rel: &str, content: bool) -> FileEdit {
        let old = b"<include/>\n".to_vec();
        FileEdit {
            path: format!("/etc/freeswitch/{rel}"),
            new: if content {
                b"<include><!-- edited --></include>\n".to_vec()
            } else {
                old.clone()
            },
            old,
            was: meta(0o644),
            want: meta(0o640),
            created: false,
        }
    }

    /// The reloads of plans that wrote `written` (each edit as the step that makes it declares
    /// its reloads), rescan `rescan` and change the Event Socket (`esl_changed`).
    fn needs(
        written: &[&FileEdit],
        rescan: &[&str],
        esl_changed: bool,
        interrupted: bool,
        pre: &preflight::Preflight,
    ) -> reload::Needs {
        let mut plans: Vec<StepPlan> = written
            .iter()
            .map(|e| {
                let edits = vec![(*e).clone()];
                let reload = if e.path.ends_with(event_socket::FILE) {
                    reload::Needs {
                        event_socket: e.content_changed(),
                        ..Default::default()
                    }
                } else {
                    reload::Needs::xml_for(&edits)
                };
                StepPlan {
                    edits,
                    reload,
                    ..Default::default()
                }
            })
            .collect();
        plans.push(StepPlan {
            reload: reload::Needs {
                rescan: names(rescan),
                event_socket: esl_changed,
                ..Default::default()
            },
            ..Default::default()
        });
        reload_needs(
            &HostFacts::stock(),
            step::planned_reloads(&plans),
            interrupted,
            pre,
            &Secret::new(FILE_PW),
        )
    }

    /// The registry's plans on `f` that could be made (the system steps need facts a
    /// config-only host does not have).
    fn plan_registry(f: &HostFacts, opts: &HardenOptions) -> Vec<StepPlan> {
        let host = crate::harden::context::test_host("pbx");
        step::plan_model_only(f, &host, opts)
            .into_iter()
            .filter_map(|(_, p)| p.ok())
            .collect()
    }

    #[test]
    fn the_steps_declare_the_reloads_of_their_edits() {
        // Stock: every config step changes a file; the reloads are the union of theirs.
        let plans = plan_registry(&HostFacts::stock(), &HardenOptions::default());
        let pre = preflight_with(Some(FILE_PW), false);
        let n = reload_needs(
            &HostFacts::stock(),
            step::planned_reloads(&plans),
            false,
            &pre,
            &Secret::new(FILE_PW),
        );
        let every_profile = set(&["internal", "external", "internal-ipv6", "external-ipv6"]);
        assert_eq!(shape(&n), (true, every_profile, true));
        let secrets: Vec<CredKind> = plans
            .iter()
            .flat_map(|p| p.secrets.iter().map(|(k, _)| *k))
            .collect();
        assert_eq!(secrets, [CredKind::SipPassword, CredKind::EslPassword]);
        // fs-cli writes what FreeSWITCH runs after the reload: the new Event Socket password.
        let after = step::esl_after(&pre, &plans);
        assert!(after.reloads);
        assert_eq!(after.es.listen_ip, "127.0.0.1");
        assert_ne!(after.password.expose(), "ClueCon");

        // Only modes change (a strong password in a world-readable vars.xml): sip-password
        // edits the file and declares no reload.
        let text = format!(
            "<X-PRE-PROCESS cmd=\"set\" data=\"default_password={}\"/>\n",
            "Ab3".repeat(8)
        );
        let mut f = HostFacts::stock();
        if let Some(v) = f.files.files.get_mut("/etc/freeswitch/vars.xml") {
            v.content = Some(text.into_bytes());
            v.mode = 0o644;
        }
        let plans = plan_registry(&f, &HardenOptions::default());
        let sip = plans.first().unwrap();
        assert_eq!(sip.edits.len(), 1, "{:?}", sip.changes);
        assert!(sip.secrets.is_empty() && !sip.reload.any());
        // The others still declare theirs.
        assert_eq!(step::planned_reloads(&plans).rescan.len(), 4);
    }

    fn shape(n: &reload::Needs) -> (bool, BTreeSet<String>, bool) {
        (
            n.reloadxml,
            n.rescan.iter().cloned().collect(),
            n.event_socket,
        )
    }

    #[test]
    fn nothing_written_nothing_reloaded() {
        let pre = preflight_with(Some(FILE_PW), false);
        let n = needs(&[], &[], false, false, &pre);
        assert_eq!(shape(&n), (false, set(&[]), false));
        assert!(!n.any());
        // FreeSWITCH down (--offline-ok): no live password to compare either.
        let n = needs(&[], &[], false, false, &preflight_with(None, false));
        assert!(!n.any());
    }

    #[test]
    fn an_interrupted_or_stale_run_reloads_everything() {
        let every_profile = set(&["internal", "external", "internal-ipv6", "external-ipv6"]);
        let esl = edit(event_socket::FILE, true);
        for (interrupted, stale, written) in [
            (true, false, vec![]),
            (false, true, vec![]),
            (true, true, vec![&esl]),
        ] {
            let pre = preflight_with(Some(FILE_PW), stale);
            let n = needs(&written, &[], false, interrupted, &pre);
            assert_eq!(
                shape(&n),
                (true, every_profile.clone(), true),
                "interrupted {interrupted}, stale {stale}"
            );
        }
    }

    #[test]
    fn only_an_event_socket_change_reloads_only_the_event_socket() {
        let pre = preflight_with(Some(FILE_PW), false);
        let esl = edit(event_socket::FILE, true);
        let n = needs(&[&esl], &[], true, false, &pre);
        assert_eq!(shape(&n), (false, set(&[]), true));

        // The running password differs from the file's, with no file written: the Event
        // Socket must be reloaded all the same.
        let pre = preflight_with(Some("Z8fsfleetOlderPassword01"), false);
        let n = needs(&[], &[], false, false, &pre);
        assert_eq!(shape(&n), (false, set(&[]), true));
    }

    #[test]
    fn a_perms_only_edit_triggers_no_reloadxml() {
        let pre = preflight_with(Some(FILE_PW), false);
        let vars = edit("vars.xml", false);
        assert!(!vars.content_changed());
        let dir = edit("directory/default/1000.xml", false);
        let n = needs(&[&vars, &dir], &[], false, false, &pre);
        assert_eq!(shape(&n), (false, set(&[]), false));
        assert!(!n.any());
    }

    #[test]
    fn a_content_change_reloads_the_xml_and_rescans_what_the_steps_name() {
        let pre = preflight_with(Some(FILE_PW), false);
        let vars = edit("vars.xml", true);
        let perms = edit("directory/default/1000.xml", false);
        let n = needs(&[&perms, &vars], &[], false, false, &pre);
        assert_eq!(shape(&n), (true, set(&[]), false));

        let internal = edit("sip_profiles/internal.xml", true);
        let esl = edit(event_socket::FILE, true);
        let n = needs(&[&internal, &esl], &["internal"], true, false, &pre);
        assert_eq!(shape(&n), (true, set(&["internal"]), true));
        assert_eq!(n.rescan, ["internal"]);
    }
}

/// Snapshots of harden's text output (per host, then the recap) from recorded runs: the plans
/// are the real ones of every registry step on the stock tree (planned on the controller, no
/// host); the orchestrator phases' lines are the ones `run.rs` writes. A change of the output is
/// a diff of a file under `tests/snapshots/` (`UPDATE_SNAPSHOTS=1` rewrites them).
#[cfg(test)]
mod snapshots {
    use super::*;
    use crate::harden::context::test_host;
    use crate::report::RunReport;
    use crate::snapshot::assert_snapshot;

    #[test]
    fn applied_changes_read_as_done_without_planning_notes() {
        let changes: Vec<String> = [
            "rotate default_password in /etc/freeswitch/vars.xml (was the stock 1234)",
            "create /etc/fail2ban/filter.d/freeswitch.local; start fail2ban (once the packages step has installed it)",
            "add 8 rules (SSH 1, RTP 1, SIP 6) (--diff lists them); default policy for incoming: deny (was unknown)",
            "ufw is not installed yet (the packages step installs it); enable ufw",
            "write /etc/fs_cli.conf (root, 0600)",
            "something fsfleet has no verb for",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            done_lines(&changes),
            "rotated default_password in /etc/freeswitch/vars.xml (was the stock 1234); created \
             /etc/fail2ban/filter.d/freeswitch.local; started fail2ban; added 8 rules (SSH 1, RTP 1, \
             SIP 6); default policy for incoming now deny (was unknown); enabled ufw; wrote \
             /etc/fs_cli.conf (root, 0600); something fsfleet has no verb for"
        );
    }

    /// What a stock host's run reports: `check` plans only, else the plans applied (with no
    /// evidence: the text shows it only at -v).
    fn stock_host(name: &str, check: bool) -> HostReport {
        stock_host_diff(name, check, false)
    }

    fn stock_host_diff(name: &str, check: bool, diff: bool) -> HostReport {
        stock_host_with(name, check, diff, None)
    }

    /// `registered`: who FreeSWITCH says is registered (the stock directory is then read too).
    fn stock_host_with(
        name: &str,
        check: bool,
        diff: bool,
        registered: Option<crate::model::registrations::Registered>,
    ) -> HostReport {
        // The stock tree on a Debian 12 host, FreeSWITCH running from the packages, sshd on 22,
        // none of the packages harden installs yet.
        let mut f = if registered.is_some() {
            HostFacts::stock_with_directory()
        } else {
            HostFacts::stock()
        };
        f.base.os = facts::OsInfo {
            id: "debian".into(),
            id_like: String::new(),
            version_id: "12".into(),
            pretty_name: "Debian GNU/Linux 12 (bookworm)".into(),
        };
        f.base.sshd_ports = vec![22];
        f.base.freeswitch = Some(facts::Freeswitch {
            conf_dir: "/etc/freeswitch".into(),
            log_dir: Some("/var/log/freeswitch".into()),
            layout: "package".into(),
            service_active: true,
            version: Some("1.10.12-release".into()),
            ready: Some(true),
        });
        // apt is there, its lists are fresh.
        f.sections =
            facts::Sections::from_pairs(&[("packages_state", "lists 4\nage 600\napt yes\n", 0)]);
        let host = test_host(name);
        let opts = HardenOptions {
            check,
            ..HardenOptions::default()
        };
        let mut pre = preflight::Preflight::from_config(&f).unwrap();
        pre.registered = registered;
        let t = Instant::now();
        let mut steps = Steps {
            reports: Vec::new(),
            diff,
        };
        steps.push(
            preflight::NAME,
            StepStatus::Ok,
            "host can be hardened".into(),
            vec![],
            t,
        );
        if !check {
            let dir = "/var/backups/fsfleet/20261129T221000Z-ab12";
            steps.push(
                backup::NAME,
                StepStatus::Changed,
                format!("backed up to {dir}"),
                vec![],
                t,
            );
        }
        let mut before: Vec<StepPlan> = Vec::new();
        let level = opts.level_for(&host);
        let sel = Selection::default();
        for e in step::REGISTRY.iter().filter(|e| sel.runs_entry(e, level)) {
            let refs: Vec<&StepPlan> = before.iter().collect();
            let input = PlanInput {
                facts: &f,
                host: &host,
                opts: &opts,
                pre: &pre,
                before: &refs,
            };
            match (e.plan)(&input) {
                Ok(p) => {
                    if check || p.outline().is_noop() {
                        steps.planned(e.name, p.outline(), check, t);
                    } else {
                        steps.applied(e.name, p.outline(), vec![], t);
                    }
                    before.push(p.outline().clone());
                }
                Err(err) => steps.failed(e.name, &err, t),
            }
        }
        let (reload, verified) = if check {
            ("would reload FreeSWITCH", None)
        } else {
            ("FreeSWITCH reloaded", Some(full_verify_evidence()))
        };
        steps.push(reload::NAME, StepStatus::Changed, reload.into(), vec![], t);
        if let Some(ev) = verified {
            steps.push(verify::NAME, StepStatus::Ok, verify::summary(&ev), ev, t);
        }
        HostReport::from_steps(&host, steps.reports)
    }

    /// A hardened host: every step planned nothing.
    fn hardened_host(name: &str) -> HostReport {
        let t = Instant::now();
        let mut steps = Steps {
            reports: Vec::new(),
            diff: false,
        };
        steps.push(
            preflight::NAME,
            StepStatus::Ok,
            "host can be hardened".into(),
            vec![],
            t,
        );
        steps.skipped(backup::NAME, "nothing changes");
        for e in step::REGISTRY
            .iter()
            .filter(|e| e.level == HardenLevel::Baseline)
        {
            steps.planned(e.name, &StepPlan::default(), false, t);
        }
        steps.push(
            reload::NAME,
            StepStatus::Ok,
            "nothing to reload".into(),
            vec![],
            t,
        );
        let ev: Vec<String> = [
            "nothing changed: preflight proved the configured Event Socket password and FreeSWITCH ready",
            "fs_cli -x status works on the host without a password argument",
            "fail2ban jail freeswitch active",
            "ufw active",
            "the Event Socket listens on 127.0.0.1 only (ss on the host): not reachable from the network",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        steps.push(verify::NAME, StepStatus::Ok, verify::summary(&ev), ev, t);
        HostReport::from_steps(&test_host(name), steps.reports)
    }

    /// What the full verify of a changed stock host writes (a real run's lines).
    fn full_verify_evidence() -> Vec<String> {
        [
            "the Event Socket at 127.0.0.1:8021 is FreeSWITCH (pid 64 as freeswitch, uid 999)'s own (127.0.0.1:8021, ss on the host)",
            "Event Socket: new password accepted, FreeSWITCH 1.10.12-release  64bit ready",
            "fs_cli -x status works on the host without a password argument",
            "fail2ban jail freeswitch active (|- Currently banned:\t0)",
            "ufw active",
            "from the controller, 192.0.2.10:8021 gives no Event Socket greeting",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    fn run(hosts: Vec<HostReport>, check: bool) -> RunReport {
        RunReport {
            run_id: "20261129T221000Z-ab12".into(),
            command: "harden".into(),
            started: chrono::DateTime::from_timestamp(1_796_000_000, 0).unwrap_or_default(),
            elapsed_ms: 8300,
            hosts,
            aborted: None,
            interrupted: false,
            check,
        }
    }

    #[test]
    fn harden_check_of_a_stock_host() {
        let r = run(vec![stock_host("fs01", true)], true);
        assert_snapshot("harden_check.txt", &crate::harden::render_text(&r, false));
    }

    #[test]
    fn harden_check_diff_of_a_stock_host() {
        let r = run(vec![stock_host_diff("fs01", true, true)], true);
        assert_snapshot(
            "harden_check_diff.txt",
            &crate::harden::render_text(&r, false),
        );
    }

    #[test]
    fn harden_of_a_stock_host_and_a_hardened_one() {
        let r = run(
            vec![stock_host("fs01", false), hardened_host("fs02")],
            false,
        );
        assert_snapshot("harden_run.txt", &crate::harden::render_text(&r, false));
    }

    #[test]
    fn harden_check_with_a_registered_phone_and_a_quiet_host() {
        use crate::model::registrations::{Registered, Registration};
        let phone = Registered {
            rows: vec![Registration {
                profile: "internal".into(),
                auth_user: "1000".into(),
                user: "1000".into(),
                network_ip: "192.0.2.5".parse().ok(),
            }],
            unknown: vec![],
        };
        let r = run(
            vec![
                stock_host_with("fs01", true, false, Some(phone)),
                stock_host_with("fs02", true, false, Some(Registered::default())),
            ],
            true,
        );
        assert_snapshot(
            "harden_check_registered.txt",
            &crate::harden::render_text(&r, false),
        );
    }

    #[test]
    fn harden_again_changes_nothing() {
        let r = run(vec![hardened_host("fs01"), hardened_host("fs02")], false);
        assert_snapshot(
            "harden_no_change.txt",
            &crate::harden::render_text(&r, false),
        );
    }

    #[test]
    fn harden_with_a_failed_host_and_an_unreachable_one() {
        let why = "FreeSWITCH is not running (the freeswitch unit has no main process); start it, \
                   or re-run with --offline-ok to edit configs without reloading";
        let mut failed = HostReport::from_steps(
            &test_host("fs02"),
            vec![StepReport {
                name: preflight::NAME.into(),
                status: StepStatus::Failed,
                message: why.into(),
                evidence: vec![],
                elapsed_ms: 0,
            }],
        );
        failed.error = Some(format!("preflight: {why}"));
        let down = HostReport::unreachable(
            &test_host("fs03"),
            "TCP connect to 192.0.2.10:22 (fs03): Connection refused (os error 111)",
        );
        let r = run(vec![stock_host("fs01", false), failed, down], false);
        assert_snapshot(
            "harden_failures.txt",
            &crate::harden::render_text(&r, false),
        );
    }
}
