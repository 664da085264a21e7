//! The fleet runner: one tokio task per host, at most `--forks` at once, in `--serial` batches,
//! stopped early by `--max-fail-percent` or Ctrl-C. It knows nothing about SSH nor about what a
//! command does: a command hands it a closure that turns a [`HostCtx`] into the command's own
//! per-host output (harden's [`HostReport`], audit's control results, facts' typed facts), and
//! gets every host's output back, typed, in a [`FleetRun`]. Of that output the runner only reads
//! what [`HostOutput`] exposes: how the host ended, and why it failed.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use chrono::{DateTime, Utc};
use thiserror::Error;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::inventory::Host;
pub use crate::progress::ProgressMode;
use crate::progress::{HostLine, Progress};
use crate::report::{HostReport, HostStatus, RunReport};

/// What the runner reads from a host's output: enough for `--max-fail-percent`, the progress
/// line, the retry file and the exit code, nothing of the command's payload.
pub trait HostOutput {
    /// How the host ended: ok, changed, failed or unreachable (skipped is the runner's own word
    /// for hosts it never started).
    fn status(&self) -> HostStatus;
    /// Why the host failed or was unreachable, one line for its progress line; None when it did
    /// not fail.
    fn failure(&self) -> Option<String>;
}

/// Harden's output: the status follows from the steps.
impl HostOutput for HostReport {
    fn status(&self) -> HostStatus {
        self.status
    }

    fn failure(&self) -> Option<String> {
        match (&self.error, self.status) {
            (Some(err), HostStatus::Failed | HostStatus::Unreachable) => Some(err.clone()),
            (None, HostStatus::Failed) => {
                let steps: Vec<&str> = self
                    .steps
                    .iter()
                    .filter(|s| s.status == crate::report::StepStatus::Failed)
                    .map(|s| s.name.as_str())
                    .collect();
                Some(format!("failed steps: {}", steps.join(", ")))
            }
            _ => None,
        }
    }
}

/// A host that produced no output: it could not be reached or logged into, or its command
/// failed on it. One line for the operator, never a secret.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HostError {
    #[error("{0}")]
    Unreachable(String),
    #[error("{0}")]
    Failed(String),
}

impl HostError {
    /// The host's report in the shape harden and facts print.
    pub fn into_report(self, host: &Host) -> HostReport {
        match self {
            HostError::Unreachable(e) => HostReport::unreachable(host, e),
            HostError::Failed(e) => HostReport::failed(host, e),
        }
    }
}

/// The output of a command that either produced its payload (ok) or none (see [`HostError`]).
impl<T> HostOutput for Result<T, HostError> {
    fn status(&self) -> HostStatus {
        match self {
            Ok(_) => HostStatus::Ok,
            Err(HostError::Unreachable(_)) => HostStatus::Unreachable,
            Err(HostError::Failed(_)) => HostStatus::Failed,
        }
    }

    fn failure(&self) -> Option<String> {
        self.as_ref().err().map(ToString::to_string)
    }
}

/// How one host's task ended, as the runner saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum HostOutcome<T> {
    /// The task returned this output.
    Finished(T),
    /// The task returned nothing: it panicked, or a second Ctrl-C aborted it. A failure, why.
    Aborted(String),
    /// The host was never started (`--max-fail-percent`, Ctrl-C): why.
    NotStarted(String),
}

/// One host of a run: the inventory's host (the source of truth for identity), the runner's
/// timing, and how its task ended.
#[derive(Debug, Clone, PartialEq)]
pub struct HostRun<T> {
    pub host: Host,
    pub elapsed_ms: u64,
    pub outcome: HostOutcome<T>,
}

impl<T: HostOutput> HostRun<T> {
    pub fn status(&self) -> HostStatus {
        match &self.outcome {
            HostOutcome::Finished(out) => out.status(),
            HostOutcome::Aborted(_) => HostStatus::Failed,
            HostOutcome::NotStarted(_) => HostStatus::Skipped,
        }
    }

    /// Why the host failed, was unreachable or was not started; None when it did not fail.
    pub fn error(&self) -> Option<String> {
        match &self.outcome {
            HostOutcome::Finished(out) => out.failure(),
            HostOutcome::Aborted(why) | HostOutcome::NotStarted(why) => Some(why.clone()),
        }
    }
}

impl<T> HostRun<T> {
    /// The output, when the task returned one.
    pub fn output(&self) -> Option<&T> {
        match &self.outcome {
            HostOutcome::Finished(out) => Some(out),
            _ => None,
        }
    }
}

/// What a run is, whatever its hosts produced.
#[derive(Debug, Clone, PartialEq)]
pub struct RunInfo {
    /// `20261124T193001Z-ab12`: start time (UTC) plus 4 random hex digits.
    pub run_id: String,
    /// The fsfleet command (`facts`, `harden`, `audit`).
    pub command: String,
    pub started: DateTime<Utc>,
    pub elapsed_ms: u64,
    /// Why new hosts stopped being started (`--max-fail-percent`, Ctrl-C); None when all ran.
    pub aborted: Option<String>,
    /// The operator pressed Ctrl-C during the run.
    pub interrupted: bool,
}

/// Everything a run produced: one [`HostRun`] per host, in inventory order, including the hosts
/// that were never started. Each command builds its report from it.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetRun<T> {
    pub info: RunInfo,
    pub hosts: Vec<HostRun<T>>,
}

impl<T: HostOutput> FleetRun<T> {
    /// Names of the hosts that failed or were unreachable, in inventory order: the retry file.
    pub fn failed_hosts(&self) -> Vec<&str> {
        self.hosts
            .iter()
            .filter(|h| h.status().is_failure())
            .map(|h| h.host.name.as_str())
            .collect()
    }
}

impl<T> FleetRun<T> {
    /// The run as the report harden and facts print: `report` turns a finished host's output
    /// (with its host and elapsed time) into its [`HostReport`]; hosts aborted or never started
    /// become failed or skipped reports. Identity and timing come from the inventory and the
    /// runner, whatever the output says.
    pub fn into_report(self, mut report: impl FnMut(&Host, u64, T) -> HostReport) -> RunReport {
        let hosts = self
            .hosts
            .into_iter()
            .map(|h| {
                let mut r = match h.outcome {
                    HostOutcome::Finished(out) => report(&h.host, h.elapsed_ms, out),
                    HostOutcome::Aborted(why) => HostReport::failed(&h.host, why),
                    HostOutcome::NotStarted(why) => HostReport::skipped(&h.host, why),
                };
                r.name = h.host.name;
                r.address = h.host.address;
                r.elapsed_ms = h.elapsed_ms;
                r
            })
            .collect();
        let RunInfo {
            run_id,
            command,
            started,
            elapsed_ms,
            aborted,
            interrupted,
        } = self.info;
        RunReport {
            run_id,
            command,
            started,
            elapsed_ms,
            hosts,
            aborted,
            interrupted,
            check: false,
        }
    }
}

/// `--serial`: how many hosts per batch; batches run one after the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serial {
    /// `--serial 5`
    Count(usize),
    /// `--serial 20%`: of all hosts of the run, rounded down, at least 1.
    Percent(u8),
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SerialError {
    #[error("--serial {0:?}: expected a host count like 5 or a percentage like 20%")]
    Invalid(String),
    #[error("--serial {0:?}: a batch needs at least 1 host")]
    Zero(String),
    #[error("--serial {0:?}: a percentage must be between 1% and 100%")]
    PercentOutOfRange(String),
}

impl FromStr for Serial {
    type Err = SerialError;

    fn from_str(s: &str) -> Result<Serial, SerialError> {
        let t = s.trim();
        if let Some(p) = t.strip_suffix('%') {
            let p: u32 = p
                .trim()
                .parse()
                .map_err(|_| SerialError::Invalid(s.to_string()))?;
            if !(1..=100).contains(&p) {
                return Err(SerialError::PercentOutOfRange(s.to_string()));
            }
            // In range 1..=100, so it fits.
            Ok(Serial::Percent(p as u8))
        } else {
            let n: usize = t.parse().map_err(|_| SerialError::Invalid(s.to_string()))?;
            if n == 0 {
                return Err(SerialError::Zero(s.to_string()));
            }
            Ok(Serial::Count(n))
        }
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Serial::Count(n) => write!(f, "{n}"),
            Serial::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl Serial {
    /// Hosts per batch for a run of `total` hosts (at least 1).
    pub fn batch_size(self, total: usize) -> usize {
        match self {
            Serial::Count(n) => n.max(1),
            Serial::Percent(p) => (total * usize::from(p) / 100).max(1),
        }
    }
}

/// The index ranges (into the inventory-ordered host list) of each batch.
pub fn batches(total: usize, serial: Option<Serial>) -> Vec<Range<usize>> {
    let size = serial.map_or(total, |s| s.batch_size(total)).max(1);
    (0..total)
        .step_by(size)
        .map(|start| start..(start + size).min(total))
        .collect()
}

/// How a run is scheduled and shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetOptions {
    /// Hosts running at once (0 is treated as 1).
    pub forks: usize,
    pub serial: Option<Serial>,
    /// Start no new host once failed + unreachable hosts exceed this percentage of the hosts
    /// started in the current batch (the whole run without `--serial`). 0: the first failure.
    pub max_fail_percent: Option<u8>,
    pub progress: ProgressMode,
    /// -1 quiet (errors only), 0 normal, 1+ verbose (every stage on plain lines).
    pub verbosity: i8,
    /// `harden --check`: a host that finishes "changed" is shown as "would change".
    pub check: bool,
}

pub const DEFAULT_FORKS: usize = 50;

impl Default for FleetOptions {
    fn default() -> Self {
        FleetOptions {
            forks: DEFAULT_FORKS,
            serial: None,
            max_fail_percent: None,
            progress: ProgressMode::Auto,
            verbosity: 0,
            check: false,
        }
    }
}

/// What a host's task gets: the host, its progress line, and the cancel flag.
pub struct HostCtx {
    pub host: Host,
    run_id: Arc<str>,
    line: HostLine,
    cancel: Arc<AtomicBool>,
}

impl fmt::Debug for HostCtx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostCtx")
            .field("host", &self.host.name)
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

impl HostCtx {
    /// Show what this host is doing now (`connecting`, `facts`, `step firewall`, ...).
    pub fn stage(&self, msg: &str) {
        self.line.stage(msg);
    }

    /// The id of this run (as in the report), e.g. to name a backup directory on the host.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// True once the operator pressed Ctrl-C: finish the current step, skip the rest, return.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }
}

/// Run `task` on every host (see [`run_with_interrupts`]), with Ctrl-C as the interrupt source.
pub async fn run<T, F, Fut>(
    command: &str,
    hosts: Vec<Host>,
    opts: &FleetOptions,
    task: F,
) -> FleetRun<T>
where
    T: HostOutput + Send + 'static,
    F: Fn(HostCtx) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = T> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(4);
    let listener = tokio::spawn(forward_interrupts(tx));
    let progress = Progress::new(opts.progress, opts.verbosity, hosts.len());
    let run = run_inner(command, hosts, opts, rx, progress, task).await;
    listener.abort();
    run
}

/// Run `task` once per host and collect the outputs in inventory order.
///
/// - at most `forks` tasks at once; with `serial`, batch after batch;
/// - `max_fail_percent`: checked each time a host ends, against the hosts started in the current
///   batch; once exceeded no new host (nor batch) is started;
/// - each message on `interrupts` is a Ctrl-C: the first stops starting hosts and sets
///   [`HostCtx::is_cancelled`]; the second aborts running tasks, [`HostOutcome::Aborted`]
///   "interrupted";
/// - a panicking task becomes [`HostOutcome::Aborted`] ("internal error"), the run goes on;
/// - hosts never started are [`HostOutcome::NotStarted`] with the reason.
pub async fn run_with_interrupts<T, F, Fut>(
    command: &str,
    hosts: Vec<Host>,
    opts: &FleetOptions,
    interrupts: mpsc::Receiver<()>,
    task: F,
) -> FleetRun<T>
where
    T: HostOutput + Send + 'static,
    F: Fn(HostCtx) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = T> + Send + 'static,
{
    let progress = Progress::new(opts.progress, opts.verbosity, hosts.len());
    run_inner(command, hosts, opts, interrupts, progress, task).await
}

struct Running {
    index: usize,
    line: HostLine,
    started: Instant,
}

pub(crate) async fn run_inner<T, F, Fut>(
    command: &str,
    hosts: Vec<Host>,
    opts: &FleetOptions,
    mut interrupts: mpsc::Receiver<()>,
    progress: Progress,
    task: F,
) -> FleetRun<T>
where
    T: HostOutput + Send + 'static,
    F: Fn(HostCtx) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = T> + Send + 'static,
{
    let started = Utc::now();
    let t0 = Instant::now();
    let run_id: Arc<str> = Arc::from(make_run_id(started));
    let forks = opts.forks.max(1);
    let task = Arc::new(task);
    let cancel = Arc::new(AtomicBool::new(false));
    let mut results: Vec<Option<HostRun<T>>> = hosts.iter().map(|_| None).collect();
    let mut aborted: Option<String> = None;
    let mut interrupted = false;
    let mut interrupts_open = true;

    for batch in batches(hosts.len(), opts.serial) {
        if aborted.is_some() {
            break;
        }
        let mut set: JoinSet<T> = JoinSet::new();
        let mut running: HashMap<tokio::task::Id, Running> = HashMap::new();
        let mut next = batch.start;
        let mut started_in_batch = 0usize;
        let mut failed_in_batch = 0usize;
        let mut hard_abort = false;
        loop {
            while aborted.is_none() && next < batch.end && set.len() < forks {
                let host = hosts[next].clone();
                let line = progress.host_started(&host.name);
                let ctx = HostCtx {
                    host,
                    run_id: run_id.clone(),
                    line: line.clone(),
                    cancel: cancel.clone(),
                };
                let task = task.clone();
                // The closure is called inside the task so that a panic while building the
                // future is caught like any other.
                let handle = set.spawn(crate::progress::traced(line.clone(), async move {
                    task(ctx).await
                }));
                running.insert(
                    handle.id(),
                    Running {
                        index: next,
                        line,
                        started: Instant::now(),
                    },
                );
                next += 1;
                started_in_batch += 1;
            }
            if set.is_empty() {
                break;
            }
            tokio::select! {
                biased;
                signal = interrupts.recv(), if interrupts_open => {
                    if signal.is_none() {
                        interrupts_open = false;
                    } else if !interrupted {
                        interrupted = true;
                        cancel.store(true, Ordering::SeqCst);
                        aborted = Some("interrupted by Ctrl-C".to_string());
                        progress.notice("finishing running hosts, press Ctrl-C again to abort");
                    } else if !hard_abort {
                        hard_abort = true;
                        aborted = Some("interrupted by Ctrl-C twice: running hosts aborted".to_string());
                        set.abort_all();
                    }
                }
                Some(joined) = set.join_next_with_id() => {
                    let (id, outcome) = match joined {
                        Ok((id, out)) => (id, HostOutcome::Finished(out)),
                        Err(e) if e.is_panic() => (e.id(), HostOutcome::Aborted(format!(
                            "internal error: the task panicked ({}); please report this bug",
                            panic_message(e)
                        ))),
                        Err(e) => (e.id(), HostOutcome::Aborted(
                            "interrupted (Ctrl-C pressed twice)".to_string(),
                        )),
                    };
                    let Some(run) = running.remove(&id) else { continue };
                    // The inventory is the source of truth for identity; the runner owns timing.
                    let done = HostRun {
                        host: hosts[run.index].clone(),
                        elapsed_ms: millis(run.started.elapsed()),
                        outcome,
                    };
                    let status = done.status();
                    progress.host_finished(
                        &run.line,
                        &done.host.name,
                        done.elapsed_ms,
                        status,
                        match status {
                            HostStatus::Changed if opts.check => "would change",
                            s => s.as_str(),
                        },
                        done.error().as_deref(),
                    );
                    if status.is_failure() {
                        failed_in_batch += 1;
                    }
                    results[run.index] = Some(done);
                    if let Some(p) = opts.max_fail_percent
                        && aborted.is_none()
                        && failed_in_batch * 100 > usize::from(p) * started_in_batch
                    {
                        aborted = Some(format!(
                            "--max-fail-percent {p} exceeded: {failed_in_batch} of {started_in_batch} \
                             started hosts failed or were unreachable"
                        ));
                    }
                }
            }
        }
    }
    progress.finish();

    let hosts: Vec<HostRun<T>> = results
        .into_iter()
        .zip(hosts)
        .map(|(r, host)| {
            r.unwrap_or_else(|| {
                let why = aborted.as_deref().unwrap_or("the run stopped early");
                HostRun {
                    host,
                    elapsed_ms: 0,
                    outcome: HostOutcome::NotStarted(format!("not started: {why}")),
                }
            })
        })
        .collect();
    // A Ctrl-C after the last host started cut nothing short: every host ran to its end, so the
    // run is reported (and exits) by its results, not as ABORTED/130.
    let cut_short = hosts
        .iter()
        .any(|h| !matches!(h.outcome, HostOutcome::Finished(_)));
    if interrupted && !cut_short {
        interrupted = false;
        aborted = None;
    }
    FleetRun {
        info: RunInfo {
            run_id: run_id.to_string(),
            command: command.to_string(),
            started,
            elapsed_ms: millis(t0.elapsed()),
            aborted,
            interrupted,
        },
        hosts,
    }
}

/// Forward each Ctrl-C to `tx` until the run drops the receiver. If the handler cannot be
/// installed this returns, the channel closes, and the run goes on without Ctrl-C handling.
async fn forward_interrupts(tx: mpsc::Sender<()>) {
    // One SIGINT stream for the whole run: re-arming `ctrl_c()` after each press could miss a
    // press that lands in between.
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut sigint) = signal(SignalKind::interrupt()) else {
            return;
        };
        while sigint.recv().await.is_some() {
            if tx.send(()).await.is_err() {
                return;
            }
        }
    }
    #[cfg(not(unix))]
    while tokio::signal::ctrl_c().await.is_ok() {
        if tx.send(()).await.is_err() {
            return;
        }
    }
}

/// `20261124T193001Z-ab12`: sortable, and unique enough for runs started in the same second.
fn make_run_id(started: chrono::DateTime<Utc>) -> String {
    format!(
        "{}-{:04x}",
        started.format("%Y%m%dT%H%M%SZ"),
        rand::random::<u16>()
    )
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn panic_message(e: tokio::task::JoinError) -> String {
    let payload = e.into_panic();
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "no message".to_string()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;
    use crate::report::testing::{hosts, step};
    use crate::report::{HostStatus, StepStatus};

    fn opts(forks: usize) -> FleetOptions {
        // Quiet and without bars so test output stays readable.
        FleetOptions {
            forks,
            progress: ProgressMode::Never,
            verbosity: -1,
            ..FleetOptions::default()
        }
    }

    fn no_interrupts() -> mpsc::Receiver<()> {
        mpsc::channel(1).1
    }

    fn ok_report(ctx: &HostCtx) -> HostReport {
        HostReport::from_steps(&ctx.host, vec![step("facts", StepStatus::Ok, "")])
    }

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl Capture {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn captured(verbosity: i8) -> (Progress, Capture) {
        let cap = Capture::default();
        let sink: crate::progress::Sink = Arc::new(Mutex::new(Box::new(cap.clone())));
        (Progress::lines(sink, verbosity), cap)
    }

    /// The runner with progress captured, so failure lines do not clutter the test output.
    async fn run_quiet<T, F, Fut>(
        command: &str,
        hosts: Vec<Host>,
        opts: &FleetOptions,
        interrupts: mpsc::Receiver<()>,
        task: F,
    ) -> FleetRun<T>
    where
        T: HostOutput + Send + 'static,
        F: Fn(HostCtx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        let (progress, _cap) = captured(opts.verbosity);
        run_inner(command, hosts, opts, interrupts, progress, task).await
    }

    /// Harden's view of a run: its hosts' reports as they are.
    fn reports(run: FleetRun<HostReport>) -> RunReport {
        run.into_report(|_, _, r| r)
    }

    #[test]
    fn serial_parses_counts_and_percentages_with_helpful_errors() {
        assert_eq!("5".parse::<Serial>(), Ok(Serial::Count(5)));
        assert_eq!("20%".parse::<Serial>(), Ok(Serial::Percent(20)));
        assert_eq!(" 100% ".parse::<Serial>(), Ok(Serial::Percent(100)));
        for (bad, hint) in [
            ("0", "at least 1"),
            ("0%", "between 1% and 100%"),
            ("150%", "between 1% and 100%"),
            ("-2", "like 20%"),
            ("five", "like 5"),
            ("%", "like 5"),
        ] {
            let msg = bad.parse::<Serial>().unwrap_err().to_string();
            assert!(
                msg.contains(&format!("{bad:?}")) && msg.contains(hint),
                "{bad}: {msg}"
            );
        }
        assert_eq!(Serial::Percent(20).to_string(), "20%");
    }

    #[test]
    fn batches_cover_every_host_once_in_order() {
        assert_eq!(batches(5, None), vec![0..5]);
        assert_eq!(batches(5, Some(Serial::Count(2))), vec![0..2, 2..4, 4..5]);
        assert_eq!(
            batches(10, Some(Serial::Percent(30))),
            vec![0..3, 3..6, 6..9, 9..10]
        );
        // 10% of 5 hosts rounds down to 0: still one host per batch.
        assert_eq!(batches(5, Some(Serial::Percent(10))).len(), 5);
        assert!(batches(0, Some(Serial::Count(3))).is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn never_more_than_forks_hosts_at_once() {
        let current = Arc::new(AtomicUsize::new(0));
        let max = Arc::new(AtomicUsize::new(0));
        let (c, m) = (current.clone(), max.clone());
        let report = run_quiet("facts", hosts(20), &opts(3), no_interrupts(), move |ctx| {
            let (c, m) = (c.clone(), m.clone());
            async move {
                let now = c.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(15)).await;
                c.fetch_sub(1, Ordering::SeqCst);
                ok_report(&ctx)
            }
        })
        .await;
        let report = reports(report);
        assert_eq!(max.load(Ordering::SeqCst), 3);
        assert!(report.hosts.iter().all(|h| h.status == HostStatus::Ok));
        assert_eq!(report.hosts.len(), 20);
        assert_eq!(report.exit_code(), 0);
    }

    #[tokio::test]
    async fn serial_batches_run_one_after_the_other() {
        #[derive(Debug, PartialEq)]
        enum Ev {
            Start(usize),
            End(usize),
        }
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = log.clone();
        let o = FleetOptions {
            serial: Some(Serial::Count(2)),
            ..opts(50)
        };
        let report = run_quiet("harden", hosts(5), &o, no_interrupts(), move |ctx| {
            let l = l.clone();
            async move {
                let i: usize = ctx.host.name[1..].parse().unwrap();
                l.lock().unwrap().push(Ev::Start(i));
                tokio::time::sleep(Duration::from_millis(10)).await;
                l.lock().unwrap().push(Ev::End(i));
                ok_report(&ctx)
            }
        })
        .await;
        let report = reports(report);
        let log = log.lock().unwrap();
        let pos = |e: Ev| log.iter().position(|x| *x == e).unwrap();
        for (batch, next) in [([0, 1], [2, 3]), ([2, 3], [4, 4])] {
            for done in batch {
                for later in next {
                    assert!(pos(Ev::End(done)) < pos(Ev::Start(later)), "{log:?}");
                }
            }
        }
        // Inside a batch the hosts run together.
        assert!(pos(Ev::Start(1)) < pos(Ev::End(0)), "{log:?}");
        assert_eq!(report.hosts.len(), 5);
        assert!(report.aborted.is_none());
    }

    #[tokio::test]
    async fn max_fail_percent_stops_starting_hosts_and_skips_the_rest() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let o = FleetOptions {
            max_fail_percent: Some(20),
            ..opts(1)
        };
        let report = run_quiet("harden", hosts(10), &o, no_interrupts(), move |ctx| {
            c.fetch_add(1, Ordering::SeqCst);
            async move {
                if ctx.host.name == "h1" {
                    HostReport::unreachable(&ctx.host, "connection refused")
                } else {
                    ok_report(&ctx)
                }
            }
        })
        .await;
        let report = reports(report);
        // h1 is 1 failure of 2 started: 50% > 20%.
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(report.hosts[0].status, HostStatus::Ok);
        assert_eq!(report.hosts[1].status, HostStatus::Unreachable);
        for h in &report.hosts[2..] {
            assert_eq!(h.status, HostStatus::Skipped, "{}", h.name);
            let reason = h.error.as_deref().unwrap();
            assert!(
                reason.contains("not started") && reason.contains("--max-fail-percent 20"),
                "{reason}"
            );
        }
        assert!(report.aborted.as_deref().unwrap().contains("1 of 2"));
        assert_eq!(report.exit_code(), 4);
        assert!(report.render_recap(false).contains("8 skipped"));
    }

    #[tokio::test]
    async fn max_fail_percent_not_exceeded_runs_everything() {
        let o = FleetOptions {
            max_fail_percent: Some(20),
            ..opts(10)
        };
        let report = run_quiet("harden", hosts(10), &o, no_interrupts(), |ctx| async move {
            if ctx.host.name == "h0" || ctx.host.name == "h1" {
                HostReport::failed(&ctx.host, "boom")
            } else {
                ok_report(&ctx)
            }
        })
        .await;
        let report = reports(report);
        // 2 of 10 is 20%, which does not exceed 20%.
        assert!(report.aborted.is_none());
        assert_eq!(
            report
                .hosts
                .iter()
                .filter(|h| h.status == HostStatus::Ok)
                .count(),
            8
        );
        assert_eq!(report.failed_hosts(), ["h0", "h1"]);
    }

    #[tokio::test]
    async fn max_fail_percent_stops_the_next_batches() {
        let o = FleetOptions {
            max_fail_percent: Some(40),
            serial: Some(Serial::Count(2)),
            ..opts(50)
        };
        let report = run_quiet("harden", hosts(6), &o, no_interrupts(), |ctx| async move {
            if ctx.host.name == "h0" {
                HostReport::failed(&ctx.host, "boom")
            } else {
                tokio::time::sleep(Duration::from_millis(5)).await;
                ok_report(&ctx)
            }
        })
        .await;
        let report = reports(report);
        let statuses: Vec<HostStatus> = report.hosts.iter().map(|h| h.status).collect();
        use HostStatus::*;
        assert_eq!(statuses, [Failed, Ok, Skipped, Skipped, Skipped, Skipped]);
    }

    #[tokio::test]
    async fn a_panicking_task_is_a_failed_host_not_a_crashed_run() {
        let report = run_quiet("facts", hosts(3), &opts(5), no_interrupts(), |ctx| {
            if ctx.host.name == "h2" {
                panic!("parser bug while building the future");
            }
            async move {
                if ctx.host.name == "h1" {
                    panic!("parser bug");
                }
                ok_report(&ctx)
            }
        })
        .await;
        let report = reports(report);
        assert_eq!(report.hosts[0].status, HostStatus::Ok);
        for h in &report.hosts[1..] {
            assert_eq!(h.status, HostStatus::Failed);
            assert!(
                h.error.as_deref().unwrap().starts_with("internal error"),
                "{:?}",
                h.error
            );
        }
        assert!(
            report.hosts[1]
                .error
                .as_deref()
                .unwrap()
                .contains("parser bug")
        );
        assert_eq!(report.exit_code(), 4);
    }

    /// Two hosts run, each waits for the cancel flag then reports its remaining step skipped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn first_ctrl_c_starts_no_new_host_and_lets_running_ones_finish() {
        let (int_tx, int_rx) = mpsc::channel(4);
        let (started_tx, mut started_rx) = mpsc::unbounded_channel();
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let (progress, cap) = captured(-1);
        let run = tokio::spawn(async move {
            run_inner("harden", hosts(6), &opts(2), int_rx, progress, move |ctx| {
                c.fetch_add(1, Ordering::SeqCst);
                let started_tx = started_tx.clone();
                async move {
                    let _ = started_tx.send(ctx.host.name.clone());
                    let first = step("backup", StepStatus::Changed, "saved");
                    while !ctx.is_cancelled() {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    let rest = step("firewall", StepStatus::Skipped, "cancelled by Ctrl-C");
                    HostReport::from_steps(&ctx.host, vec![first, rest])
                }
            })
            .await
            .into_report(|_, _, r| r)
        });
        started_rx.recv().await.unwrap();
        started_rx.recv().await.unwrap();
        int_tx.send(()).await.unwrap();
        let report = tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .unwrap()
            .unwrap();

        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "no host started after Ctrl-C"
        );
        let statuses: Vec<HostStatus> = report.hosts.iter().map(|h| h.status).collect();
        use HostStatus::*;
        assert_eq!(
            statuses,
            [Changed, Changed, Skipped, Skipped, Skipped, Skipped]
        );
        assert_eq!(report.hosts[0].steps[1].status, StepStatus::Skipped);
        assert!(report.hosts[5].error.as_deref().unwrap().contains("Ctrl-C"));
        assert!(report.interrupted);
        assert_eq!(report.exit_code(), 130);
        // Even in quiet mode the operator is told what happens next.
        assert!(
            cap.text()
                .contains("finishing running hosts, press Ctrl-C again to abort")
        );
    }

    /// `-v` shows what the transport traces for each host, `-vv` also its level-2 details;
    /// each line is prefixed with the host whose task traced it.
    #[tokio::test]
    async fn traces_reach_the_host_line_by_verbosity() {
        for (verbosity, want_detail) in [(0i8, false), (1, false), (2, true)] {
            let (progress, cap) = captured(verbosity);
            run_inner(
                "facts",
                hosts(2),
                &opts(2),
                no_interrupts(),
                progress,
                |ctx| async move {
                    crate::progress::trace(1, "facts script: exit 0 in 12 ms");
                    crate::progress::trace(2, "facts script: as root\n    cat /etc/os-release");
                    HostReport::from_steps(&ctx.host, vec![])
                },
            )
            .await;
            let text = cap.text();
            for h in ["h0", "h1"] {
                assert_eq!(
                    text.contains(&format!("{h}: facts script: exit 0 in 12 ms")),
                    verbosity >= 1,
                    "{text}"
                );
                assert_eq!(
                    text.contains(&format!("{h}:     cat /etc/os-release")),
                    want_detail,
                    "{text}"
                );
            }
        }
        // Outside a host's task nothing is printed, and nothing fails.
        crate::progress::trace(1, "nobody's");
    }

    #[tokio::test]
    async fn under_check_a_changed_host_would_change() {
        let (progress, cap) = captured(0);
        let o = FleetOptions {
            check: true,
            ..opts(2)
        };
        run_inner(
            "harden",
            hosts(1),
            &o,
            no_interrupts(),
            progress,
            |ctx| async move {
                HostReport::from_steps(&ctx.host, vec![step("firewall", StepStatus::Changed, "")])
            },
        )
        .await;
        let text = cap.text();
        assert!(text.contains("h0: would change ("), "{text}");
        assert!(!text.contains("h0: changed"), "{text}");
    }

    /// Ctrl-C once every host has started: nothing is left unstarted, the hosts finish, and the
    /// run is what they did (not ABORTED, not 130).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_ctrl_c_that_cuts_nothing_short_is_not_an_abort() {
        let (int_tx, int_rx) = mpsc::channel(4);
        let (started_tx, mut started_rx) = mpsc::unbounded_channel();
        let (release_tx, release_rx) = tokio::sync::watch::channel(false);
        let run = tokio::spawn(async move {
            run_quiet("harden", hosts(2), &opts(2), int_rx, move |ctx| {
                let started_tx = started_tx.clone();
                let mut release = release_rx.clone();
                async move {
                    let _ = started_tx.send(());
                    let _ = release.wait_for(|go| *go).await;
                    HostReport::from_steps(
                        &ctx.host,
                        vec![step("firewall", StepStatus::Changed, "done")],
                    )
                }
            })
            .await
            .into_report(|_, _, r| r)
        });
        started_rx.recv().await.unwrap();
        started_rx.recv().await.unwrap();
        int_tx.send(()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        release_tx.send(true).unwrap();
        let report = tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .unwrap()
            .unwrap();
        assert!(report.hosts.iter().all(|h| h.status == HostStatus::Changed));
        assert_eq!(
            (report.aborted.as_deref(), report.interrupted),
            (None, false)
        );
        assert_eq!(report.exit_code(), 0);
        assert!(!report.recap_text().contains("ABORTED"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn second_ctrl_c_aborts_running_hosts_at_once() {
        let (int_tx, int_rx) = mpsc::channel(4);
        let (started_tx, mut started_rx) = mpsc::unbounded_channel();
        let run = tokio::spawn(async move {
            run_quiet("harden", hosts(4), &opts(2), int_rx, move |ctx| {
                let started_tx = started_tx.clone();
                async move {
                    let _ = started_tx.send(());
                    // A host stuck on the network, deaf to the cancel flag.
                    std::future::pending::<()>().await;
                    ok_report(&ctx)
                }
            })
            .await
            .into_report(|_, _, r| r)
        });
        started_rx.recv().await.unwrap();
        started_rx.recv().await.unwrap();
        int_tx.send(()).await.unwrap();
        int_tx.send(()).await.unwrap();
        let report = tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .unwrap()
            .unwrap();
        for h in &report.hosts[..2] {
            assert_eq!(h.status, HostStatus::Failed);
            assert!(
                h.error.as_deref().unwrap().contains("interrupted"),
                "{:?}",
                h.error
            );
        }
        assert_eq!(report.hosts[2].status, HostStatus::Skipped);
        assert_eq!(report.exit_code(), 4);
        assert!(report.aborted.as_deref().unwrap().contains("twice"));
    }

    #[tokio::test]
    async fn reports_come_back_in_inventory_order_whatever_the_finish_order() {
        let (progress, cap) = captured(0);
        let report = run_inner(
            "facts",
            hosts(4),
            &opts(4),
            no_interrupts(),
            progress,
            |ctx| async move {
                let i: u64 = ctx.host.name[1..].parse().unwrap();
                tokio::time::sleep(Duration::from_millis(40 - 10 * i)).await;
                // The runner, not the task, decides identity and timing.
                let mut r = ok_report(&ctx);
                r.data = Some(serde_json::json!(ctx.run_id()));
                r.name = "wrong".to_string();
                r
            },
        )
        .await;
        let report = reports(report);
        let names: Vec<&str> = report.hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["h0", "h1", "h2", "h3"]);
        assert_eq!(report.hosts[0].address, "h0.example.test");
        assert_eq!(report.hosts[3].data, Some(serde_json::json!(report.run_id)));
        assert!(
            report.hosts[0].elapsed_ms >= 30,
            "{}",
            report.hosts[0].elapsed_ms
        );
        let text = cap.text();
        assert!(
            text.find("h3: ok").unwrap() < text.find("h0: ok").unwrap(),
            "{text}"
        );
    }

    #[tokio::test]
    async fn plain_progress_lines_follow_the_verbosity() {
        async fn run_at(verbosity: i8) -> String {
            let (progress, cap) = captured(verbosity);
            run_inner(
                "harden",
                hosts(2),
                &opts(1),
                no_interrupts(),
                progress,
                |ctx| async move {
                    ctx.stage("connecting");
                    if ctx.host.name == "h1" {
                        HostReport::unreachable(&ctx.host, "connection refused")
                    } else {
                        ok_report(&ctx)
                    }
                },
            )
            .await;
            cap.text()
        }
        let normal = run_at(0).await;
        assert!(
            normal.contains("h0: started\n") && normal.contains("h0: ok ("),
            "{normal}"
        );
        assert!(normal.contains("h1: unreachable (") && normal.contains("): connection refused"));
        assert!(
            !normal.contains("connecting"),
            "stages only when verbose: {normal}"
        );
        let verbose = run_at(1).await;
        assert!(verbose.contains("h0: connecting\n"), "{verbose}");
        let quiet = run_at(-1).await;
        assert_eq!(quiet.lines().count(), 1, "quiet shows only errors: {quiet}");
        assert!(quiet.starts_with("h1: unreachable"));
    }

    /// An output that is not a [`HostReport`]: what a probe of one host measured.
    #[derive(Debug, Clone, PartialEq)]
    struct Probe {
        index: usize,
        refused: bool,
    }

    impl HostOutput for Probe {
        fn status(&self) -> HostStatus {
            if self.refused {
                HostStatus::Unreachable
            } else {
                HostStatus::Ok
            }
        }

        fn failure(&self) -> Option<String> {
            self.refused
                .then(|| format!("probe {} refused", self.index))
        }
    }

    fn index(ctx: &HostCtx) -> usize {
        ctx.host.name[1..].parse().unwrap()
    }

    #[tokio::test]
    async fn a_typed_output_comes_back_as_is_and_its_failures_stop_the_run() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let o = FleetOptions {
            max_fail_percent: Some(20),
            ..opts(1)
        };
        let (progress, cap) = captured(0);
        let run = run_inner(
            "probe",
            hosts(10),
            &o,
            no_interrupts(),
            progress,
            move |ctx| {
                c.fetch_add(1, Ordering::SeqCst);
                async move {
                    let i = index(&ctx);
                    Probe {
                        index: i,
                        refused: i == 1,
                    }
                }
            },
        )
        .await;
        // h1 is 1 failure of 2 started: 50% > 20%.
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(
            run.hosts[0].outcome,
            HostOutcome::Finished(Probe {
                index: 0,
                refused: false
            })
        );
        assert_eq!(run.hosts[1].status(), HostStatus::Unreachable);
        assert_eq!(run.hosts[1].error().as_deref(), Some("probe 1 refused"));
        for h in &run.hosts[2..] {
            assert_eq!(h.status(), HostStatus::Skipped, "{}", h.host.name);
            assert!(h.output().is_none());
            let HostOutcome::NotStarted(reason) = &h.outcome else {
                panic!("{h:?}");
            };
            assert!(
                reason.contains("not started") && reason.contains("--max-fail-percent 20"),
                "{reason}"
            );
        }
        assert_eq!(run.failed_hosts(), ["h1"]);
        assert!(run.info.aborted.as_deref().unwrap().contains("1 of 2"));
        assert_eq!(run.info.command, "probe");
        // The progress line says why, from the output's own words.
        let text = cap.text();
        assert!(text.contains("h1: unreachable ("), "{text}");
        assert!(text.contains("): probe 1 refused"), "{text}");
        assert!(text.contains("h0: ok ("), "{text}");
    }

    #[tokio::test]
    async fn serial_batches_and_their_abort_hold_for_a_result_output() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = log.clone();
        let o = FleetOptions {
            serial: Some(Serial::Count(2)),
            ..opts(50)
        };
        let run = run_quiet("probe", hosts(5), &o, no_interrupts(), move |ctx| {
            let l = l.clone();
            async move {
                let i = index(&ctx);
                l.lock().unwrap().push(("start", i));
                tokio::time::sleep(Duration::from_millis(10)).await;
                l.lock().unwrap().push(("end", i));
                Ok::<usize, HostError>(i * 10)
            }
        })
        .await;
        let log = log.lock().unwrap().clone();
        let pos = |e: (&str, usize)| log.iter().position(|x| *x == e).unwrap();
        for (batch, next) in [([0, 1], [2, 3]), ([2, 3], [4, 4])] {
            for done in batch {
                for later in next {
                    assert!(pos(("end", done)) < pos(("start", later)), "{log:?}");
                }
            }
        }
        let outputs: Vec<Option<&usize>> = run
            .hosts
            .iter()
            .map(|h| h.output().and_then(|r| r.as_ref().ok()))
            .collect();
        assert_eq!(
            outputs,
            [Some(&0), Some(&10), Some(&20), Some(&30), Some(&40)]
        );
        assert!(run.info.aborted.is_none());
        assert!(run.failed_hosts().is_empty());

        // One failure in the first batch of two exceeds 40%: the next batches never start.
        let o = FleetOptions {
            max_fail_percent: Some(40),
            ..o
        };
        let run = run_quiet("probe", hosts(6), &o, no_interrupts(), |ctx| async move {
            if ctx.host.name == "h0" {
                Err(HostError::Failed("boom".into()))
            } else {
                tokio::time::sleep(Duration::from_millis(5)).await;
                Ok(index(&ctx))
            }
        })
        .await;
        let statuses: Vec<HostStatus> = run.hosts.iter().map(HostRun::status).collect();
        let skipped = HostStatus::Skipped;
        assert_eq!(
            statuses,
            [
                HostStatus::Failed,
                HostStatus::Ok,
                skipped,
                skipped,
                skipped,
                skipped
            ]
        );
        assert_eq!(run.hosts[0].error().as_deref(), Some("boom"));
        assert_eq!(run.hosts[1].output(), Some(&Result::Ok(1)));
        assert_eq!(run.failed_hosts(), ["h0"]);
    }

    #[tokio::test]
    async fn into_report_maps_every_outcome_and_keeps_the_inventory_identity() {
        let run = run_quiet(
            "facts",
            hosts(3),
            &opts(5),
            no_interrupts(),
            |ctx| async move {
                match ctx.host.name.as_str() {
                    "h0" => Ok(7u32),
                    "h1" => Err(HostError::Unreachable("connection refused".into())),
                    _ => panic!("parser bug"),
                }
            },
        )
        .await;
        let report = run.into_report(|host, elapsed_ms, out| match out {
            Ok(n) => {
                let mut r = HostReport::from_steps(
                    &crate::report::testing::host("wrong"),
                    vec![step("facts", StepStatus::Ok, &n.to_string())],
                );
                r.steps[0].elapsed_ms = elapsed_ms;
                r
            }
            Err(e) => e.into_report(host),
        });
        let names: Vec<&str> = report.hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["h0", "h1", "h2"]);
        assert_eq!(report.hosts[0].address, "h0.example.test");
        assert_eq!(report.hosts[0].steps[0].message, "7");
        assert_eq!(
            report.hosts[0].steps[0].elapsed_ms,
            report.hosts[0].elapsed_ms
        );
        assert_eq!(report.hosts[1].status, HostStatus::Unreachable);
        assert_eq!(report.hosts[1].error.as_deref(), Some("connection refused"));
        assert_eq!(report.hosts[2].status, HostStatus::Failed);
        assert!(
            report.hosts[2]
                .error
                .as_deref()
                .unwrap()
                .contains("internal error")
        );
        assert_eq!(report.failed_hosts(), ["h1", "h2"]);
        assert_eq!(report.exit_code(), 4);
    }

    #[tokio::test]
    async fn an_empty_inventory_is_an_empty_ok_run() {
        let report = run_with_interrupts(
            "facts",
            Vec::new(),
            &opts(5),
            no_interrupts(),
            |ctx| async move { ok_report(&ctx) },
        )
        .await;
        let report = reports(report);
        assert!(report.hosts.is_empty());
        assert_eq!(report.exit_code(), 0);
        assert_eq!(report.command, "facts");
        assert_eq!(report.run_id.len(), "20261124T193001Z-ab12".len());
    }
}
