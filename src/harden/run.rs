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

use super::{
    FileEdit, HardenOptions, HostFacts, Probes, StepCtx, StepError, StepPlan, auth_logging, backup,
    event_socket, fail2ban, firewall, fs_cli, preflight, reload, sip_password, step, verify,
};
use crate::facts;
use crate::fleet::HostCtx;
use crate::hostfs;
use crate::inventory::{ConfDir, Host};
use crate::model::EventSocket;
use crate::report::{HostReport, StepReport, StepStatus};
use crate::secret::Secret;
use crate::ssh::{Connector, Session};
use crate::vault::{CredKind, KeyBinding, Vault};

/// The steps before the system steps, in the order they run.
const BEFORE_SYSTEM: [&str; 5] = [
    preflight::NAME,
    backup::NAME,
    sip_password::NAME,
    event_socket::NAME,
    auth_logging::NAME,
];
/// The steps after the system steps.
const AFTER_SYSTEM: [&str; 3] = [reload::NAME, fs_cli::NAME, verify::NAME];

/// Every step, in the order it runs (the system steps as their registry lists them).
/// `--skip`/`--only` take these names.
pub const STEPS: &[&str] = &{
    let mut out = [""; BEFORE_SYSTEM.len() + step::SYSTEM.len() + AFTER_SYSTEM.len()];
    let mut i = 0;
    while i < BEFORE_SYSTEM.len() {
        out[i] = BEFORE_SYSTEM[i];
        i += 1;
    }
    let mut j = 0;
    while j < step::SYSTEM.len() {
        out[i] = step::SYSTEM[j].name;
        i += 1;
        j += 1;
    }
    let mut k = 0;
    while k < AFTER_SYSTEM.len() {
        out[i] = AFTER_SYSTEM[k];
        i += 1;
        k += 1;
    }
    out
};

/// Which steps run.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub skip: BTreeSet<String>,
    pub only: BTreeSet<String>,
}

impl Selection {
    /// Parse `--skip`/`--only` lists, refusing unknown names.
    pub fn new(skip: &[String], only: &[String]) -> Result<Selection, String> {
        let check = |list: &[String]| -> Result<BTreeSet<String>, String> {
            list.iter()
                .flat_map(|s| s.split(','))
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    if STEPS.contains(&s) {
                        Ok(s.to_string())
                    } else {
                        Err(format!(
                            "unknown step {s:?}; the steps are: {}",
                            STEPS.join(", ")
                        ))
                    }
                })
                .collect()
        };
        let sel = Selection {
            skip: check(skip)?,
            only: check(only)?,
        };
        if sel.skip.contains(preflight::NAME) {
            return Err(
                "preflight cannot be skipped: it is what keeps a host from being half-changed"
                    .into(),
            );
        }
        // Accepting it and backing up anyway would say one thing and do another.
        if sel.skip.contains(backup::NAME) {
            return Err(
                "backup cannot be skipped: it runs whenever something changes and is how a host \
                 is restored (it keeps the last 5 runs in /var/backups/fsfleet)"
                    .into(),
            );
        }
        Ok(sel)
    }

    /// preflight always runs; backup runs whenever something changes.
    pub fn runs(&self, step: &str) -> bool {
        if step == preflight::NAME || step == backup::NAME {
            return true;
        }
        !self.skip.contains(step) && (self.only.is_empty() || self.only.contains(step))
    }
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
        if plan.is_noop() {
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
        self.push(name, StepStatus::Failed, e.to_string(), vec![], started);
    }
}

/// Gather every step's facts in one round trip.
async fn gather(session: &Session, host: &Host) -> Result<HostFacts, String> {
    let script = script(host);
    let sections = facts::gather(session, &script)
        .await
        .map_err(|e| format!("gathering facts: {e}"))?;
    HostFacts::parse(sections, &session.user, session.uses_sudo())
        .map_err(|e| format!("gathering facts: {e}"))
}

/// The one facts script of a harden run: every step's snippets and files, then the base facts.
fn script(host: &Host) -> facts::Script {
    let mut probes = Probes::new();
    // Stage files a cut run left beside the configs (removed through hostfs in preflight).
    probes.fact::<facts::StaleStages>();
    fs_cli::probes(&mut probes, host);
    for s in step::SYSTEM {
        (s.probes)(&mut probes, host);
    }
    probes.into_script(host)
}

/// A system step planned on the controller: its name, its plan (or why it cannot run), and
/// when planning began (the report's time of a step that changes nothing).
type SystemPlan = (
    &'static str,
    Result<Box<dyn step::Planned>, StepError>,
    Instant,
);

/// The selected system steps, planned on the controller in registry order.
fn plan_system(
    facts: &HostFacts,
    host: &Host,
    opts: &HardenOptions,
    sel: &Selection,
) -> Vec<SystemPlan> {
    step::SYSTEM
        .iter()
        .filter(|s| sel.runs(s.name))
        .map(|s| {
            let t = Instant::now();
            (s.name, (s.plan)(facts, host, opts), t)
        })
        .collect()
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
    session.close().await;
    let mut report = HostReport::from_steps(&host, steps.reports);
    if let Err(e) = outcome {
        report.error = Some(e);
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
) -> Result<(), String> {
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
    /// The vault holds a pending password for the host: an earlier run was interrupted.
    interrupted: bool,
    conf_dir: String,
}

/// Facts, the host key against the vault, preflight, and the stage files of a cut run.
async fn preflight(
    run: &Run<'_>,
    steps: &mut Steps,
    data: &mut serde_json::Value,
) -> Result<Ready, String> {
    let (host, session, opts) = (run.host, run.session, run.opts());
    run.ctx.stage("facts");
    let t = Instant::now();
    let mut facts = gather(session, host).await?;
    data["timings"]["facts_ms"] = json!(t.elapsed().as_millis() as u64);
    let refuse = |steps: &mut Steps, e: StepError| {
        steps.failed(preflight::NAME, &e, t);
        format!("preflight: {e}")
    };
    // The vault's secrets go only to the host whose SSH key they belong to (finding 9): a name
    // now pointing at another machine is refused before anything is sent to it.
    let key = session.host_key();
    let (candidates, interrupted, key_note) = {
        let mut vault = run.shared.vault.lock().await;
        let note = match vault.check_host_key(&host.name, key) {
            Err(mismatch) => {
                return Err(refuse(steps, StepError::Refused(mismatch.to_string())));
            }
            Ok(KeyBinding::Unbound) if !opts.check => {
                vault
                    .bind(&host.name, key)
                    .map_err(|e| format!("vault: {e}; nothing was changed on the host"))?;
                Some(format!(
                    "the vault's passwords for this host are now bound to host key {key}"
                ))
            }
            Ok(_) => None,
        };
        (
            vault.candidates(&host.name, key, CredKind::EslPassword),
            vault.has_pending(&host.name),
            note,
        )
    };
    run.ctx.stage("preflight");
    let mut pre = preflight::run(session, &facts, &candidates, opts.offline_ok)
        .await
        .map_err(|e| refuse(steps, e))?;
    // What the Event Socket says is host data: a directory that is not a plain absolute path
    // refuses the host (it would shape commands and fail2ban's configuration).
    for (what, value) in [("conf_dir", &pre.conf_dir), ("log_dir", &pre.log_dir)] {
        if let Some(v) = value
            && let Err(e) = hostfs::check_host_dir(v)
        {
            let e = StepError::Refused(format!(
                "FreeSWITCH's {what} (global_getvar): {e}; fix FreeSWITCH's -conf/-log settings"
            ));
            return Err(refuse(steps, e));
        }
    }
    // The running FreeSWITCH knows where its config really is.
    if let Some(live) = pre.conf_dir.clone()
        && facts.files.conf_dir.as_deref() != Some(live.as_str())
    {
        let mut h = host.clone();
        h.conf_dir = ConfDir::Path(live.clone());
        facts = gather(session, &h).await?;
        if facts.files.conf_dir.as_deref() != Some(live.as_str()) {
            let e = StepError::Refused(format!(
                "FreeSWITCH reports conf_dir {live}, but no vars.xml is there"
            ));
            return Err(refuse(steps, e));
        }
        pre = preflight::run(session, &facts, &candidates, opts.offline_ok)
            .await
            .map_err(|e| refuse(steps, e))?;
    }
    if let (Some(fs), Some(log)) = (facts.base.freeswitch.as_mut(), pre.log_dir.clone()) {
        fs.log_dir = Some(log);
    }
    let mut evidence = pre.evidence.clone();
    evidence.extend(key_note);
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

/// Everything the host needs, planned on the controller before anything changes.
struct HostPlan {
    /// The config files to write, all or nothing.
    edits: Vec<FileEdit>,
    /// Passwords the edits set, for the vault before the host sees them.
    new_secrets: Vec<(CredKind, Secret)>,
    /// The config steps' report lines (their changes are `edits`).
    config: Vec<(&'static str, StepPlan, Instant)>,
    /// The Event Socket's file changes (it needs its own reload).
    esl_changed: bool,
    /// The SIP profiles to rescan.
    rescan: Vec<String>,
    /// The Event Socket FreeSWITCH will run with, and its password.
    new_es: EventSocket,
    final_pw: Secret,
    fs_cli: Option<(FsCliPlan, Instant)>,
    system: Vec<SystemPlan>,
}

type FsCliPlan = (StepPlan, Vec<fs_cli::Target>);

impl HostPlan {
    fn any_change(&self) -> bool {
        !self.edits.is_empty()
            || self.fs_cli.as_ref().is_some_and(|((p, _), _)| !p.is_noop())
            || self
                .system
                .iter()
                .any(|(_, p, _)| p.as_ref().is_ok_and(|p| !p.outline().is_noop()))
    }
}

/// Plan every selected step from the facts (pure). A config step that cannot be planned
/// stops the host; a system step's refusal is reported when it would run.
fn plan_all(run: &Run<'_>, ready: &Ready, steps: &mut Steps) -> Result<HostPlan, String> {
    let (host, opts, sel) = (run.host, run.opts(), run.sel());
    let (facts, pre) = (&ready.facts, &ready.pre);
    let fail = |steps: &mut Steps, name: &str, e: StepError, t: Instant| {
        steps.failed(name, &e, t);
        format!("{name}: {e}")
    };
    let mut edits: Vec<FileEdit> = Vec::new();
    let mut new_secrets: Vec<(CredKind, Secret)> = Vec::new();
    let mut config: Vec<(&'static str, StepPlan, Instant)> = Vec::new();

    let t = Instant::now();
    if sel.runs(sip_password::NAME) {
        let (p, e) = sip_password::plan(facts, opts)
            .and_then(|(mut p, e)| {
                let (changes, more) = sip_password::directory_modes(facts)?;
                p.changes.extend(changes);
                edits.extend(more);
                Ok((p, e))
            })
            .map_err(|e| fail(steps, sip_password::NAME, e, t))?;
        if let Some((edit, pw)) = e {
            edits.push(edit);
            if let Some(pw) = pw {
                new_secrets.push((CredKind::SipPassword, pw));
            }
        }
        config.push((sip_password::NAME, p, t));
    }
    let t = Instant::now();
    let esl_plan =
        event_socket::plan(facts, opts).map_err(|e| fail(steps, event_socket::NAME, e, t))?;
    let mut esl_changed = false;
    if sel.runs(event_socket::NAME) {
        if let Some(edit) = esl_plan.edit.clone() {
            esl_changed = edit.content_changed();
            edits.push(edit);
        }
        if let Some(pw) = esl_plan.new_password.clone() {
            new_secrets.push((CredKind::EslPassword, pw));
        }
        config.push((event_socket::NAME, esl_plan.plan.clone(), t));
    }
    let t = Instant::now();
    let mut rescan = Vec::new();
    if sel.runs(auth_logging::NAME) {
        let p = auth_logging::plan(facts).map_err(|e| fail(steps, auth_logging::NAME, e, t))?;
        edits.extend(p.edits);
        rescan = p.rescan;
        config.push((auth_logging::NAME, p.plan, t));
    }
    // The Event Socket FreeSWITCH will run with, and its password.
    let (new_es, final_pw) = match (esl_changed, &esl_plan.edit) {
        (true, Some(_)) => (esl_plan.after.clone(), esl_plan.after.password.clone()),
        // Stale: FreeSWITCH still runs a vault password; after the reload it takes the file's.
        _ if pre.stale => (pre.esl.clone(), pre.esl.password.clone()),
        _ => (
            pre.esl.clone(),
            pre.live_password
                .clone()
                .unwrap_or_else(|| pre.esl.password.clone()),
        ),
    };
    // fs_cli's config names where FreeSWITCH listens: after an Event Socket reload, the file's
    // (fsfleet's) address; otherwise the listener preflight proved to be FreeSWITCH's, never a
    // listen-ip nobody proved (it may point at another user's listener).
    let mut cli_es = new_es.clone();
    let esl_reloads =
        esl_changed || pre.stale || pre.live_password.as_ref().is_some_and(|l| *l != final_pw);
    if !esl_reloads && let Some(t) = &pre.target {
        cli_es.listen_ip = t.address.clone();
    }
    let t = Instant::now();
    let fs_cli = if sel.runs(fs_cli::NAME) {
        let p = fs_cli::plan(facts, host, &cli_es, &final_pw)
            .map_err(|e| fail(steps, fs_cli::NAME, e, t))?;
        Some((p, t))
    } else {
        None
    };
    Ok(HostPlan {
        edits,
        new_secrets,
        config,
        esl_changed,
        rescan,
        new_es,
        final_pw,
        fs_cli,
        system: plan_system(facts, host, opts, sel),
    })
}

/// `--check`: every plan as a report line, and whether FreeSWITCH would be reloaded.
fn render_check(ready: &Ready, plan: &HostPlan, steps: &mut Steps) {
    for (name, p, t) in &plan.config {
        steps.planned(name, p, true, *t);
    }
    for (name, p, t) in &plan.system {
        match p {
            Ok(p) => steps.planned(name, p.outline(), true, *t),
            Err(e) => steps.failed(name, e, *t),
        }
    }
    if let Some(((p, _), t)) = &plan.fs_cli {
        steps.planned(fs_cli::NAME, p, true, *t);
    }
    let planned: Vec<&FileEdit> = plan.edits.iter().collect();
    if reload_needs_of(ready, plan, &planned).any() {
        steps.push(
            reload::NAME,
            StepStatus::Changed,
            "would reload FreeSWITCH".into(),
            vec![],
            Instant::now(),
        );
    }
}

/// The reloads `plan` needs once `written` are on the host.
fn reload_needs_of(ready: &Ready, plan: &HostPlan, written: &[&FileEdit]) -> reload::Needs {
    reload_needs(
        &ready.facts,
        written,
        plan.rescan.clone(),
        plan.esl_changed,
        ready.interrupted,
        &ready.pre,
        &plan.final_pw,
    )
}

/// Make the planned changes: backup, secrets to the vault, config files, system steps, reload,
/// fs_cli. Returns the reloads the changes needed.
async fn apply_all(
    run: &Run<'_>,
    ready: &Ready,
    plan: &HostPlan,
    steps: &mut Steps,
    data: &mut serde_json::Value,
) -> Result<reload::Needs, String> {
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
    let written = write_configs(run, ready, plan, steps).await?;
    // packages, fail2ban, firewall: a failure here restores the config files (no reload yet)
    if let Err(e) = apply_system(&sctx, &plan.system, steps).await {
        let restored = restore(run.session, &written).await;
        return Err(format!("{e}; {restored}"));
    }
    let needs = reload_needs_of(ready, plan, &written);
    reload_freeswitch(run, ready, plan, &needs, steps).await?;
    write_fs_cli(run, plan, steps).await?;
    Ok(needs)
}

/// The backup, before the first change.
async fn backup_if_changing(
    run: &Run<'_>,
    sctx: &StepCtx<'_>,
    ready: &Ready,
    plan: &HostPlan,
    steps: &mut Steps,
    data: &mut serde_json::Value,
) -> Result<(), String> {
    if !plan.any_change() {
        steps.skipped(backup::NAME, "nothing changes");
        return Ok(());
    }
    run.ctx.stage("backup");
    let t = Instant::now();
    let mut paths: Vec<String> = plan.edits.iter().map(|e| e.path.clone()).collect();
    if let Some(((_, targets), _)) = &plan.fs_cli {
        paths.extend(targets.iter().filter(|t| t.existed).map(|t| t.path.clone()));
    }
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
            Err(format!("backup: {e}; nothing was changed"))
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
) -> Result<(), String> {
    if plan.new_secrets.is_empty() {
        return Ok(());
    }
    let (host, key) = (run.host, run.session.host_key());
    let mut vault = run.shared.vault.lock().await;
    let current_sip = sip_password_in(&ready.facts);
    for (kind, _) in &plan.new_secrets {
        let current = match kind {
            CredKind::EslPassword => ready.pre.live_password.clone(),
            CredKind::SipPassword => current_sip.clone(),
        };
        if let Some(cur) = current {
            vault
                .set_active(&host.name, key, *kind, &cur, run.run_id)
                .map_err(|e| format!("vault: {e}; nothing was changed on the host"))?;
        }
    }
    for (kind, pw) in &plan.new_secrets {
        vault
            .set_pending(&host.name, key, *kind, pw, run.run_id)
            .map_err(|e| format!("vault: {e}; nothing was changed on the host"))?;
    }
    data["rotated"] = json!(
        plan.new_secrets
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>()
    );
    Ok(())
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
) -> Result<Vec<&'p FileEdit>, String> {
    run.ctx.stage("config");
    let written: Vec<&FileEdit> = plan.edits.iter().collect();
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
        if let Err(e) = hostfs::apply(run.session, &ops).await {
            let msg = match &e {
                // The directory's owner made a rename fail after others: put those back.
                hostfs::HostFsError::Partial { written: done, .. } => {
                    let back: Vec<&FileEdit> = written
                        .iter()
                        .filter(|w| done.contains(&w.path))
                        .copied()
                        .collect();
                    let restored = restore(run.session, &back).await;
                    format!("writing the config files failed: {e}; {restored}")
                }
                _ => format!("writing the config files failed: {e}; no config file was changed"),
            };
            for (name, _, t) in &plan.config {
                steps.push(name, StepStatus::Failed, msg.clone(), vec![], *t);
            }
            return Err(msg);
        }
    }
    for (name, p, t) in &plan.config {
        steps.planned(name, p, false, *t);
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
) -> Result<(), String> {
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
        steps.skipped(
            reload::NAME,
            "--offline-ok: FreeSWITCH is not running; it reads the new configs when it starts",
        );
        return Ok(());
    };
    run.ctx.stage("reload");
    match reload::apply(run.session, needs, &ready.pre.esl, &old_pw, &plan.new_es).await {
        Ok(ev) => {
            steps.push(
                reload::NAME,
                StepStatus::Changed,
                "FreeSWITCH reloaded".into(),
                ev,
                t,
            );
            Ok(())
        }
        Err(e) => {
            steps.failed(reload::NAME, &e, t);
            Err(format!(
                "reload: {e} (the vault holds every password this host may use)"
            ))
        }
    }
}

/// fs_cli's configs, once FreeSWITCH runs the Event Socket they name.
async fn write_fs_cli(run: &Run<'_>, plan: &HostPlan, steps: &mut Steps) -> Result<(), String> {
    let Some(((p, targets), t)) = &plan.fs_cli else {
        return Ok(());
    };
    if p.is_noop() {
        steps.planned(fs_cli::NAME, p, false, *t);
        return Ok(());
    }
    run.ctx.stage("fs-cli");
    let t = Instant::now();
    match fs_cli::apply(run.session, targets).await {
        Ok(ev) => {
            steps.push(
                fs_cli::NAME,
                StepStatus::Changed,
                p.changes.join("; "),
                ev,
                t,
            );
            Ok(())
        }
        Err(e) => {
            steps.failed(fs_cli::NAME, &e, t);
            Err(format!("fs-cli: {e}"))
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
) -> Result<(), String> {
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
    run.ctx.stage("verify");
    let t = Instant::now();
    let checks = verify::Checks {
        fail2ban: sel.runs(fail2ban::NAME),
        firewall: sel.runs(firewall::NAME),
        probe_timeout: verify::probe_timeout(run.connect_time),
    };
    // A run that changed nothing verifies from what preflight and the facts already proved (no
    // second round trip, no outside probe waiting out a filtered port); anything the facts do not
    // prove falls back to the full verify.
    let unchanged = !plan.any_change()
        && !needs.any()
        && plan.new_secrets.is_empty()
        && pre.live_password.as_ref() == Some(&pre.esl.password);
    let quick = if unchanged {
        verify::from_facts(&ready.facts, &plan.new_es, &checks)
    } else {
        None
    };
    let verified = match quick {
        Some(ev) => Ok(ev),
        None => verify::apply(run.session, run.host, &plan.new_es, &plan.final_pw, &checks).await,
    };
    match verified {
        Ok(ev) => steps.push(
            verify::NAME,
            StepStatus::Ok,
            "baseline verified".into(),
            ev,
            t,
        ),
        Err(e) => {
            steps.failed(verify::NAME, &e, t);
            return Err(format!("verify: {e}"));
        }
    }
    confirm_in_vault(run, ready, plan).await
}

/// What the host verifiably uses now goes to the vault as active (pending values it did not
/// take are dropped), so the vault can always let the operator in.
async fn confirm_in_vault(run: &Run<'_>, ready: &Ready, plan: &HostPlan) -> Result<(), String> {
    let (host, key) = (run.host, run.session.host_key());
    let sip_now = match plan
        .new_secrets
        .iter()
        .find(|(k, _)| *k == CredKind::SipPassword)
    {
        Some((_, pw)) => Some(pw.clone()),
        None => sip_password_in(&ready.facts),
    };
    let mut vault = run.shared.vault.lock().await;
    vault
        .confirm(
            &host.name,
            key,
            CredKind::EslPassword,
            &plan.final_pw,
            run.run_id,
        )
        .map_err(|e| format!("vault: {e}"))?;
    if let Some(pw) = sip_now {
        vault
            .confirm(&host.name, key, CredKind::SipPassword, &pw, run.run_id)
            .map_err(|e| format!("vault: {e}"))?;
    }
    Ok(())
}

/// The reloads the changes need. A run that was interrupted (the vault still holds a pending
/// password for the host) may have written files without reloading them: reload everything. A
/// running Event Socket password that differs from the file's means the same.
fn reload_needs(
    facts: &HostFacts,
    written: &[&FileEdit],
    rescan: Vec<String>,
    esl_changed: bool,
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
        };
    }
    reload::Needs {
        reloadxml: written
            .iter()
            .any(|e| e.content_changed() && !e.path.ends_with(event_socket::FILE)),
        rescan,
        event_socket: esl_changed || esl_stale,
    }
}

/// The hostfs write of an edit: its new content and metadata, or (`restore`) the old ones.
fn write_op(e: &FileEdit, restore: bool) -> hostfs::Op<'_> {
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

/// Apply the system steps in order; the first failure stops them.
async fn apply_system(
    ctx: &StepCtx<'_>,
    plans: &[SystemPlan],
    steps: &mut Steps,
) -> Result<(), String> {
    for (name, plan, t) in plans {
        let plan = match plan {
            Ok(p) => p,
            Err(e) => {
                steps.failed(name, e, *t);
                return Err(format!("{name}: {e}"));
            }
        };
        let outline = plan.outline();
        if outline.is_noop() {
            steps.planned(name, outline, false, *t);
            continue;
        }
        let t = Instant::now();
        match plan.apply(ctx).await {
            Ok(mut ev) => {
                ev.extend(outline.warnings.iter().map(|w| format!("warning: {w}")));
                steps.push(name, StepStatus::Changed, outline.changes.join("; "), ev, t);
            }
            Err(e) => {
                steps.failed(name, &e, t);
                return Err(format!("{name}: {e}"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_harden_and_audit_scripts_build_with_unique_fact_names() {
        // Script::add refuses a name twice (two snippets would share one section).
        let host = crate::harden::context::test_host("pbx");
        let harden = script(&host);
        let audit = crate::audit::evidence::script(&host);
        assert!(harden.names().any(|n| n == facts::LISTEN));
        assert!(audit.names().any(|n| n == facts::LISTEN));
    }

    #[test]
    fn the_harden_and_audit_scripts_run_each_registered_fact_once() {
        let host = crate::harden::context::test_host("pbx");
        for (what, s) in [
            ("harden", script(&host)),
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
                assert_eq!(text.matches(&format!("( s{i} )")).count(), 2, "{what}: {n}");
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
    use crate::harden::{Meta, packages};

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
        for (skip, only, bad) in [
            (names(&["firewal"]), vec![], "firewal"),
            (vec![], names(&["fail2ban,Reload"]), "Reload"),
        ] {
            let e = Selection::new(&skip, &only).unwrap_err();
            assert!(e.starts_with(&format!("unknown step {bad:?}")), "{e}");
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
            Selection::new(&all, &all).unwrap().skip.len(),
            STEPS.len() - 2
        );
        let every: Vec<String> = STEPS.iter().map(|s| s.to_string()).collect();
        assert_eq!(Selection::new(&[], &every).unwrap().only.len(), STEPS.len());
    }

    #[test]
    fn preflight_cannot_be_skipped_and_always_runs() {
        let e = Selection::new(&names(&["firewall,preflight"]), &[]).unwrap_err();
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
                packages::NAME,
                firewall::NAME,
                fs_cli::NAME,
                verify::NAME,
            ]
        );

        // --only alone: those, plus preflight and backup.
        let sel = Selection::new(&[], &names(&["fail2ban,firewall"])).unwrap();
        let ran: Vec<&str> = STEPS.iter().copied().filter(|s| sel.runs(s)).collect();
        assert_eq!(
            ran,
            [
                preflight::NAME,
                backup::NAME,
                fail2ban::NAME,
                firewall::NAME
            ]
        );

        // Both: --skip wins over --only.
        let sel = Selection::new(&names(&["firewall"]), &names(&["fail2ban,firewall"])).unwrap();
        let ran: Vec<&str> = STEPS.iter().copied().filter(|s| sel.runs(s)).collect();
        assert_eq!(ran, [preflight::NAME, backup::NAME, fail2ban::NAME]);

        // The backup is taken whenever something changes: --skip backup is refused, not ignored.
        let e = Selection::new(&names(&["backup"]), &[]).unwrap_err();
        assert!(e.starts_with("backup cannot be skipped"), "{e}");
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
        }
    }

    fn needs(
        written: &[&FileEdit],
        rescan: &[&str],
        esl_changed: bool,
        interrupted: bool,
        pre: &preflight::Preflight,
    ) -> reload::Needs {
        reload_needs(
            &HostFacts::stock(),
            written,
            names(rescan),
            esl_changed,
            interrupted,
            pre,
            &Secret::new(FILE_PW),
        )
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
