//! The fleet runner: one tokio task per host, at most `--forks` at once, in `--serial` batches,
//! stopped early by `--max-fail-percent` or Ctrl-C. It knows nothing about SSH: a command hands
//! it a closure that turns a [`HostCtx`] into a [`HostReport`].

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use chrono::Utc;
use thiserror::Error;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::inventory::Host;
pub use crate::progress::ProgressMode;
use crate::progress::{HostLine, Progress};
use crate::report::{HostReport, RunReport};

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
            let p: u32 = p.trim().parse().map_err(|_| SerialError::Invalid(s.to_string()))?;
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
    (0..total).step_by(size).map(|start| start..(start + size).min(total)).collect()
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
        }
    }
}

/// What a host's task gets: the host, its progress line, and the cancel flag.
pub struct HostCtx {
    pub host: Host,
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

    /// True once the operator pressed Ctrl-C: finish the current step, skip the rest, return.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }
}

/// Run `task` on every host (see [`run_with_interrupts`]), with Ctrl-C as the interrupt source.
pub async fn run<F, Fut>(command: &str, hosts: Vec<Host>, opts: &FleetOptions, task: F) -> RunReport
where
    F: Fn(HostCtx) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HostReport> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(4);
    let listener = tokio::spawn(async move {
        // If the handler cannot be installed the loop ends, the channel closes, and the run
        // simply goes on without Ctrl-C handling.
        while tokio::signal::ctrl_c().await.is_ok() {
            if tx.send(()).await.is_err() {
                break;
            }
        }
    });
    let progress = Progress::new(opts.progress, opts.verbosity, hosts.len());
    let report = run_inner(command, hosts, opts, rx, progress, task).await;
    listener.abort();
    report
}

/// Run `task` once per host and collect the reports in inventory order.
///
/// - at most `forks` tasks at once; with `serial`, batch after batch;
/// - `max_fail_percent`: checked each time a host ends, against the hosts started in the current
///   batch; once exceeded no new host (nor batch) is started;
/// - each message on `interrupts` is a Ctrl-C: the first stops starting hosts and sets
///   [`HostCtx::is_cancelled`]; the second aborts running tasks, reported failed "interrupted";
/// - a panicking task becomes a failed report ("internal error"), the run goes on;
/// - hosts never started are reported `skipped` with the reason.
pub async fn run_with_interrupts<F, Fut>(
    command: &str,
    hosts: Vec<Host>,
    opts: &FleetOptions,
    interrupts: mpsc::Receiver<()>,
    task: F,
) -> RunReport
where
    F: Fn(HostCtx) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HostReport> + Send + 'static,
{
    let progress = Progress::new(opts.progress, opts.verbosity, hosts.len());
    run_inner(command, hosts, opts, interrupts, progress, task).await
}

struct Running {
    index: usize,
    line: HostLine,
    started: Instant,
}

pub(crate) async fn run_inner<F, Fut>(
    command: &str,
    hosts: Vec<Host>,
    opts: &FleetOptions,
    mut interrupts: mpsc::Receiver<()>,
    progress: Progress,
    task: F,
) -> RunReport
where
    F: Fn(HostCtx) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HostReport> + Send + 'static,
{
    let started = Utc::now();
    let t0 = Instant::now();
    let forks = opts.forks.max(1);
    let task = Arc::new(task);
    let cancel = Arc::new(AtomicBool::new(false));
    let mut results: Vec<Option<HostReport>> = vec![None; hosts.len()];
    let mut aborted: Option<String> = None;
    let mut interrupted = false;
    let mut interrupts_open = true;

    for batch in batches(hosts.len(), opts.serial) {
        if aborted.is_some() {
            break;
        }
        let mut set: JoinSet<HostReport> = JoinSet::new();
        let mut running: HashMap<tokio::task::Id, Running> = HashMap::new();
        let mut next = batch.start;
        let mut started_in_batch = 0usize;
        let mut failed_in_batch = 0usize;
        let mut hard_abort = false;
        loop {
            while aborted.is_none() && next < batch.end && set.len() < forks {
                let host = hosts[next].clone();
                let line = progress.host_started(&host.name);
                let ctx = HostCtx { host, line: line.clone(), cancel: cancel.clone() };
                let task = task.clone();
                // The closure is called inside the task so that a panic while building the
                // future is caught like any other.
                let handle = set.spawn(async move { task(ctx).await });
                running.insert(handle.id(), Running { index: next, line, started: Instant::now() });
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
                        Ok((id, report)) => (id, Ok(report)),
                        Err(e) => (e.id(), Err(e)),
                    };
                    let Some(run) = running.remove(&id) else { continue };
                    let host = &hosts[run.index];
                    let mut report = match outcome {
                        Ok(report) => report,
                        Err(e) if e.is_panic() => HostReport::failed(
                            host,
                            format!("internal error: the task panicked ({}); please report this bug", panic_message(e)),
                        ),
                        Err(_) => HostReport::failed(host, "interrupted (Ctrl-C pressed twice)"),
                    };
                    // The inventory is the source of truth for identity; the runner owns timing.
                    report.name.clone_from(&host.name);
                    report.address.clone_from(&host.address);
                    report.elapsed_ms = millis(run.started.elapsed());
                    progress.host_finished(&run.line, &report);
                    if report.status.is_failure() {
                        failed_in_batch += 1;
                    }
                    results[run.index] = Some(report);
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

    let hosts: Vec<HostReport> = results
        .into_iter()
        .zip(&hosts)
        .map(|(r, host)| {
            r.unwrap_or_else(|| {
                let why = aborted.as_deref().unwrap_or("the run stopped early");
                HostReport::skipped(host, format!("not started: {why}"))
            })
        })
        .collect();
    RunReport {
        run_id: run_id(started),
        command: command.to_string(),
        started,
        elapsed_ms: millis(t0.elapsed()),
        hosts,
        aborted,
        interrupted,
    }
}

/// `20261124T193001Z-ab12`: sortable, and unique enough for runs started in the same second.
fn run_id(started: chrono::DateTime<Utc>) -> String {
    format!("{}-{:04x}", started.format("%Y%m%dT%H%M%SZ"), rand::random::<u16>())
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
