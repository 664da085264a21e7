//! What a run produces: per-step and per-host results, the recap, JSON, the retry file.

use std::fmt;
use std::fs;
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::inventory::Host;

/// The result of one step of one host (a harden step, a facts gathering, an audit pass).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    Ok,
    Changed,
    Failed,
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepReport {
    /// Stable step name (`backup`, `sip-password`, ...).
    pub name: String,
    pub status: StepStatus,
    /// One line for the operator: what changed, why it failed. Never a secret.
    pub message: String,
    /// Supporting detail (masked diffs, command output). Never a secret.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<String>,
    pub elapsed_ms: u64,
}

/// How a host ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HostStatus {
    /// Every step ok or skipped.
    Ok,
    /// At least one step changed something, none failed.
    Changed,
    /// At least one step failed.
    Failed,
    /// Could not connect or authenticate.
    Unreachable,
    /// Not started (run aborted by --max-fail-percent or Ctrl-C).
    Skipped,
}

impl HostStatus {
    /// The status a finished host gets from its steps: any failed step fails the host, else any
    /// changed step makes it changed, else ok.
    pub fn from_steps(steps: &[StepReport]) -> HostStatus {
        if steps.iter().any(|s| s.status == StepStatus::Failed) {
            HostStatus::Failed
        } else if steps.iter().any(|s| s.status == StepStatus::Changed) {
            HostStatus::Changed
        } else {
            HostStatus::Ok
        }
    }

    /// Failed or unreachable: what `--max-fail-percent`, the retry file and exit code 4 count.
    pub fn is_failure(self) -> bool {
        matches!(self, HostStatus::Failed | HostStatus::Unreachable)
    }

    /// The lowercase word used in the recap and the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            HostStatus::Ok => "ok",
            HostStatus::Changed => "changed",
            HostStatus::Failed => "failed",
            HostStatus::Unreachable => "unreachable",
            HostStatus::Skipped => "skipped",
        }
    }
}

impl fmt::Display for HostStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How many steps of one host ended in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StepCounts {
    pub ok: usize,
    pub changed: usize,
    pub failed: usize,
    pub skipped: usize,
}

/// One host of a harden or facts run. `name`, `address` and `elapsed_ms` are (re)filled from the
/// inventory and the runner ([`crate::fleet::FleetRun::into_report`]), so a task only has to get
/// `status`, `steps`, `error` and `data` right.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostReport {
    pub name: String,
    pub address: String,
    pub status: HostStatus,
    pub steps: Vec<StepReport>,
    /// Why the host failed, was unreachable, or (for `skipped`) was not started. One line for the
    /// operator, never a secret.
    pub error: Option<String>,
    pub elapsed_ms: u64,
    /// Command payload (the facts of `fsfleet facts`, ...), as the command defines it.
    pub data: Option<serde_json::Value>,
}

impl HostReport {
    /// A host whose status follows from its steps (see [`HostStatus::from_steps`]).
    pub fn from_steps(host: &Host, steps: Vec<StepReport>) -> HostReport {
        HostReport {
            name: host.name.clone(),
            address: host.address.clone(),
            status: HostStatus::from_steps(&steps),
            steps,
            error: None,
            elapsed_ms: 0,
            data: None,
        }
    }

    /// A host that failed outside any step (or before the first one).
    pub fn failed(host: &Host, error: impl Into<String>) -> HostReport {
        HostReport::ended(host, HostStatus::Failed, error.into())
    }

    /// A host fsfleet could not connect or authenticate to.
    pub fn unreachable(host: &Host, error: impl Into<String>) -> HostReport {
        HostReport::ended(host, HostStatus::Unreachable, error.into())
    }

    /// A host that was never started; `reason` says why.
    pub fn skipped(host: &Host, reason: impl Into<String>) -> HostReport {
        HostReport::ended(host, HostStatus::Skipped, reason.into())
    }

    fn ended(host: &Host, status: HostStatus, error: String) -> HostReport {
        HostReport {
            name: host.name.clone(),
            address: host.address.clone(),
            status,
            steps: Vec::new(),
            error: Some(error),
            elapsed_ms: 0,
            data: None,
        }
    }

    /// Attach the command payload.
    pub fn with_data(mut self, data: serde_json::Value) -> HostReport {
        self.data = Some(data);
        self
    }

    pub fn counts(&self) -> StepCounts {
        let mut c = StepCounts::default();
        for s in &self.steps {
            match s.status {
                StepStatus::Ok => c.ok += 1,
                StepStatus::Changed => c.changed += 1,
                StepStatus::Failed => c.failed += 1,
                StepStatus::Skipped => c.skipped += 1,
            }
        }
        c
    }
}

/// How many hosts ended in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct HostTotals {
    pub hosts: usize,
    pub ok: usize,
    pub changed: usize,
    pub failed: usize,
    pub unreachable: usize,
    pub skipped: usize,
}

/// The outcome of one fleet run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunReport {
    /// `20261124T193001Z-ab12`: start time (UTC) plus 4 random hex digits.
    pub run_id: String,
    /// The fsfleet command (`facts`, `harden`, ...).
    pub command: String,
    pub started: DateTime<Utc>,
    pub elapsed_ms: u64,
    /// One report per host, in inventory order, including hosts that were never started.
    pub hosts: Vec<HostReport>,
    /// Why new hosts stopped being started (`--max-fail-percent`, Ctrl-C); None when all ran.
    pub aborted: Option<String>,
    /// The operator pressed Ctrl-C during the run.
    pub interrupted: bool,
    /// `harden --check`: nothing was changed; "changed" means "would change".
    pub check: bool,
}

/// Exit code: every host ok or changed.
pub const EXIT_OK: i32 = 0;
/// Exit code: at least one host failed or was unreachable.
pub const EXIT_HOST_FAILED: i32 = 4;
/// Exit code: interrupted by Ctrl-C with no host failed (128 + SIGINT, the shell convention).
pub const EXIT_INTERRUPTED: i32 = 130;

/// Version of the JSON document written by [`RunReport::to_json`]; bumped on incompatible change.
pub const JSON_SCHEMA_VERSION: u32 = 1;

impl RunReport {
    /// A host's status as the recap and progress say it: under `--check` a changed host is one
    /// that "would change".
    pub fn status_word(&self, status: HostStatus) -> &'static str {
        match status {
            HostStatus::Changed if self.check => "would change",
            s => s.as_str(),
        }
    }

    /// How many steps of every host ended in each state.
    pub fn step_totals(&self) -> StepCounts {
        let mut t = StepCounts::default();
        for c in self.hosts.iter().map(HostReport::counts) {
            t.ok += c.ok;
            t.changed += c.changed;
            t.failed += c.failed;
            t.skipped += c.skipped;
        }
        t
    }

    pub fn totals(&self) -> HostTotals {
        let mut t = HostTotals {
            hosts: self.hosts.len(),
            ..HostTotals::default()
        };
        for h in &self.hosts {
            match h.status {
                HostStatus::Ok => t.ok += 1,
                HostStatus::Changed => t.changed += 1,
                HostStatus::Failed => t.failed += 1,
                HostStatus::Unreachable => t.unreachable += 1,
                HostStatus::Skipped => t.skipped += 1,
            }
        }
        t
    }

    /// Names of the hosts that failed or were unreachable, in inventory order.
    pub fn failed_hosts(&self) -> Vec<&str> {
        self.hosts
            .iter()
            .filter(|h| h.status.is_failure())
            .map(|h| h.name.as_str())
            .collect()
    }

    /// [`EXIT_HOST_FAILED`] if any host failed or was unreachable, else [`EXIT_INTERRUPTED`] if
    /// the operator pressed Ctrl-C, else [`EXIT_OK`]. (3 is reserved for audit findings.)
    pub fn exit_code(&self) -> i32 {
        if self.hosts.iter().any(|h| h.status.is_failure()) {
            EXIT_HOST_FAILED
        } else if self.interrupted {
            EXIT_INTERRUPTED
        } else {
            EXIT_OK
        }
    }

    /// The end-of-run recap for stdout, coloured only when stdout is a terminal and `NO_COLOR`
    /// is unset.
    pub fn recap_text(&self) -> String {
        let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        self.render_recap(colour)
    }

    /// The recap: a header, one line per host (status, step counts, unreachable flag) followed by
    /// its error or failed steps, then host totals and the abort reason.
    pub fn render_recap(&self, colour: bool) -> String {
        use std::fmt::Write as _;
        let paint = |code: &str, text: &str| {
            if colour {
                format!("\x1b[{code}m{text}\x1b[0m")
            } else {
                text.to_string()
            }
        };
        let width = self
            .hosts
            .iter()
            .map(|h| h.name.chars().count())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "RECAP {}{}  run {}  {}  {:.1}s",
            self.command,
            if self.check {
                " --check (CHECK: nothing was changed)"
            } else {
                ""
            },
            self.run_id,
            plural(self.hosts.len(), "host"),
            self.elapsed_ms as f64 / 1000.0
        );
        let status_width = if self.check { 12 } else { 11 };
        for h in &self.hosts {
            let c = h.counts();
            // Pad before painting: escape codes would upset the column widths.
            let status = paint(
                status_colour(h.status),
                &format!("{:<status_width$}", self.status_word(h.status)),
            );
            let _ = writeln!(
                out,
                "{:<width$}  {status}  ok={} changed={} failed={} skipped={} unreachable={}",
                crate::display::line(&h.name),
                c.ok,
                c.changed,
                c.failed,
                c.skipped,
                u8::from(h.status == HostStatus::Unreachable),
            );
            let indent = " ".repeat(width + 2);
            if let Some(err) = &h.error {
                let label = if h.status == HostStatus::Skipped {
                    "reason"
                } else {
                    "error"
                };
                // Errors quote what hosts said: one escaped line each (a CR or ESC in them
                // cannot repaint the terminal).
                for (i, line) in err.lines().map(crate::display::line).enumerate() {
                    let head = if i == 0 {
                        format!("{label}: ")
                    } else {
                        "  ".to_string()
                    };
                    let _ = writeln!(out, "{indent}{head}{line}");
                }
            }
            // The host's error already quotes the step that stopped it.
            let quoted = |s: &&StepReport| {
                h.error
                    .as_deref()
                    .is_some_and(|e| !s.message.is_empty() && e.contains(&s.message))
            };
            for s in h
                .steps
                .iter()
                .filter(|s| s.status == StepStatus::Failed)
                .filter(|s| !quoted(s))
            {
                let _ = writeln!(
                    out,
                    "{indent}failed step {}: {}",
                    s.name,
                    crate::display::line(&s.message)
                );
            }
        }
        // Hosts and steps are counted separately, each said with its unit.
        let t = self.totals();
        let st = self.step_totals();
        let _ = writeln!(
            out,
            "TOTAL {}: {} ok, {} {}, {} failed, {} unreachable, {} skipped; {}: ok={} changed={} failed={} skipped={}",
            plural(t.hosts, "host"),
            t.ok,
            t.changed,
            self.status_word(HostStatus::Changed),
            t.failed,
            t.unreachable,
            t.skipped,
            plural(st.ok + st.changed + st.failed + st.skipped, "step"),
            st.ok,
            st.changed,
            st.failed,
            st.skipped
        );
        if let Some(why) = &self.aborted {
            let _ = writeln!(out, "{} {why}", paint("1;31", "ABORTED:"));
        }
        out
    }

    /// The run as one JSON document. Field names are stable (schema 1):
    ///
    /// ```text
    /// { "schema": 1, "run_id": str, "command": str,
    ///   "started": RFC 3339 UTC with milliseconds, "elapsed_ms": int,
    ///   "aborted": str|null, "interrupted": bool, "check": bool, "exit_code": int,
    ///   "totals": { "hosts", "ok", "changed", "failed", "unreachable", "skipped": int },
    ///   "step_totals": { "ok", "changed", "failed", "skipped": int },
    ///   "hosts": [ { "name": str, "address": str,
    ///                "status": "ok"|"changed"|"failed"|"unreachable"|"skipped",
    ///                "counts": { "ok", "changed", "failed", "skipped": int },
    ///                "error": str|null, "elapsed_ms": int, "data": any|null,
    ///                "steps": [ { "name": str, "status": "ok"|"changed"|"failed"|"skipped",
    ///                             "message": str, "evidence": [str] (omitted when empty),
    ///                             "elapsed_ms": int } ] } ] }
    /// ```
    /// `hosts` is in inventory order.
    pub fn to_json(&self) -> serde_json::Value {
        #[derive(Serialize)]
        struct JsonHost<'a> {
            name: &'a str,
            address: &'a str,
            status: HostStatus,
            counts: StepCounts,
            error: Option<&'a str>,
            elapsed_ms: u64,
            data: Option<&'a serde_json::Value>,
            steps: &'a [StepReport],
        }
        #[derive(Serialize)]
        struct JsonRun<'a> {
            schema: u32,
            run_id: &'a str,
            command: &'a str,
            started: String,
            elapsed_ms: u64,
            aborted: Option<&'a str>,
            interrupted: bool,
            check: bool,
            exit_code: i32,
            totals: HostTotals,
            step_totals: StepCounts,
            hosts: Vec<JsonHost<'a>>,
        }
        let doc = JsonRun {
            schema: JSON_SCHEMA_VERSION,
            run_id: &self.run_id,
            command: &self.command,
            started: self.started.to_rfc3339_opts(SecondsFormat::Millis, true),
            elapsed_ms: self.elapsed_ms,
            aborted: self.aborted.as_deref(),
            interrupted: self.interrupted,
            check: self.check,
            exit_code: self.exit_code(),
            totals: self.totals(),
            step_totals: self.step_totals(),
            hosts: self
                .hosts
                .iter()
                .map(|h| JsonHost {
                    name: &h.name,
                    address: &h.address,
                    status: h.status,
                    counts: h.counts(),
                    error: h.error.as_deref(),
                    elapsed_ms: h.elapsed_ms,
                    data: h.data.as_ref(),
                    steps: &h.steps,
                })
                .collect(),
        };
        // Plain structs of strings, numbers and JSON values: serialising cannot fail.
        serde_json::to_value(doc).unwrap_or(serde_json::Value::Null)
    }

    /// Write the retry file of this run (see [`write_retry_file`]).
    pub fn write_retry_file(&self, inventory_dir: &Path) -> io::Result<Option<PathBuf>> {
        write_retry_file(inventory_dir, &self.failed_hosts())
    }
}

/// `1 host`, `3 hosts`.
fn plural(n: usize, unit: &str) -> String {
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

/// Write `.fsfleet/retry` in `inventory_dir`: the `failed` hosts (failed and unreachable), one
/// name per line, usable as `--limit @.fsfleet/retry`. The file is replaced atomically (a temp
/// file renamed) in a 0700 directory. When nothing failed, a stale retry file is removed and
/// `Ok(None)` returned. Errors name the file.
pub fn write_retry_file<S: AsRef<str>>(
    inventory_dir: &Path,
    failed: &[S],
) -> io::Result<Option<PathBuf>> {
    let dir = inventory_dir.join(RETRY_DIR);
    let path = dir.join(RETRY_FILE);
    if failed.is_empty() {
        return match fs::remove_file(&path) {
            Ok(()) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_context(e, "cannot remove the stale retry file", &path)),
        };
    }
    create_private_dir(&dir)?;
    let mut content = failed
        .iter()
        .map(AsRef::as_ref)
        .collect::<Vec<&str>>()
        .join("\n");
    content.push('\n');
    let tmp = dir.join(format!(".{RETRY_FILE}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(content.as_bytes())?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io_context(e, "cannot write the retry file", &tmp));
    }
    if let Err(e) = fs::rename(&tmp, &path) {
        let _ = fs::remove_file(&tmp);
        return Err(io_context(e, "cannot write the retry file", &path));
    }
    Ok(Some(path))
}

/// The directory beside the inventory where fsfleet keeps run state.
pub const RETRY_DIR: &str = ".fsfleet";
pub const RETRY_FILE: &str = "retry";

fn status_colour(s: HostStatus) -> &'static str {
    match s {
        HostStatus::Ok => "32",
        HostStatus::Changed => "33",
        HostStatus::Failed => "31",
        HostStatus::Unreachable => "1;31",
        HostStatus::Skipped => "36",
    }
}

fn io_context(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(
        e.kind(),
        format!(
            "{what} {}: {e} (check the directory exists and is writable)",
            path.display()
        ),
    )
}

/// Create `dir` (and parents) and make it 0700: the retry file tells which hosts are weak.
fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        builder.mode(0o700);
        builder
            .create(dir)
            .map_err(|e| io_context(e, "cannot create", dir))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| io_context(e, "cannot restrict to 0700", dir))
    }
    #[cfg(not(unix))]
    {
        builder
            .create(dir)
            .map_err(|e| io_context(e, "cannot create", dir))
    }
}

/// Builders shared by the unit tests of the runner and the report.
#[cfg(test)]
pub(crate) mod testing {

    use crate::inventory::Host;

    use super::{StepReport, StepStatus};

    pub(crate) fn host(name: &str) -> Host {
        Host::with_defaults(name, &format!("{name}.example.test"))
    }

    pub(crate) fn hosts(n: usize) -> Vec<Host> {
        (0..n).map(|i| host(&format!("h{i}"))).collect()
    }

    pub(crate) fn step(name: &str, status: StepStatus, message: &str) -> StepReport {
        StepReport {
            name: name.to_string(),
            status,
            message: message.to_string(),
            evidence: Vec::new(),
            elapsed_ms: 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{host, step};
    use super::*;
    use chrono::TimeZone;

    fn sample() -> RunReport {
        let ok = HostReport::from_steps(
            &host("fs-ok"),
            vec![
                step("backup", StepStatus::Ok, "saved"),
                step("sip-password", StepStatus::Ok, "already set"),
                step("firewall", StepStatus::Skipped, "--skip firewall"),
            ],
        );
        let changed = HostReport::from_steps(
            &host("fs-changed"),
            vec![
                step("backup", StepStatus::Ok, "saved"),
                step("sip-password", StepStatus::Changed, "rotated"),
            ],
        );
        let failed = HostReport::from_steps(
            &host("fs-failed"),
            vec![
                step("backup", StepStatus::Changed, "saved"),
                step(
                    "esl-password",
                    StepStatus::Failed,
                    "reloadxml returned -ERR",
                ),
            ],
        )
        .with_data(serde_json::json!({"os": "debian 12"}));
        let unreachable =
            HostReport::unreachable(&host("fs-down"), "connection refused on port 22");
        let skipped = HostReport::skipped(&host("fs-late"), "not started: interrupted by Ctrl-C");
        RunReport {
            run_id: "20261124T193001Z-ab12".to_string(),
            command: "harden".to_string(),
            started: Utc
                .with_ymd_and_hms(2026, 11, 24, 19, 30, 1)
                .single()
                .unwrap(),
            elapsed_ms: 1234,
            hosts: vec![ok, changed, failed, unreachable, skipped],
            aborted: Some("interrupted by Ctrl-C".to_string()),
            interrupted: true,
            check: false,
        }
    }

    fn all_ok(names: &[&str]) -> RunReport {
        let mut r = sample();
        r.hosts = names
            .iter()
            .map(|n| HostReport::from_steps(&host(n), vec![step("facts", StepStatus::Ok, "")]))
            .collect();
        r.aborted = None;
        r.interrupted = false;
        r
    }

    #[test]
    fn host_status_follows_the_worst_step() {
        assert_eq!(HostStatus::from_steps(&[]), HostStatus::Ok);
        let s = [
            step("a", StepStatus::Ok, ""),
            step("b", StepStatus::Skipped, ""),
        ];
        assert_eq!(HostStatus::from_steps(&s), HostStatus::Ok);
        let s = [
            step("a", StepStatus::Changed, ""),
            step("b", StepStatus::Ok, ""),
        ];
        assert_eq!(HostStatus::from_steps(&s), HostStatus::Changed);
        let s = [
            step("a", StepStatus::Changed, ""),
            step("b", StepStatus::Failed, ""),
        ];
        assert_eq!(HostStatus::from_steps(&s), HostStatus::Failed);
    }

    #[test]
    fn recap_lists_every_host_with_counts_errors_and_totals() {
        let text = sample().render_recap(false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "RECAP harden  run 20261124T193001Z-ab12  5 hosts  1.2s"
        );
        let line_of = |name: &str| {
            lines
                .iter()
                .find(|l| l.starts_with(name))
                .copied()
                .unwrap_or_else(|| panic!("{name} missing in\n{text}"))
        };
        assert!(
            line_of("fs-ok ")
                .contains("ok           ok=2 changed=0 failed=0 skipped=1 unreachable=0")
        );
        assert!(
            line_of("fs-changed")
                .contains("changed      ok=1 changed=1 failed=0 skipped=0 unreachable=0")
        );
        assert!(
            line_of("fs-failed")
                .contains("failed       ok=0 changed=1 failed=1 skipped=0 unreachable=0")
        );
        assert!(
            line_of("fs-down")
                .contains("unreachable  ok=0 changed=0 failed=0 skipped=0 unreachable=1")
        );
        assert!(line_of("fs-late").contains("skipped"));
        assert!(text.contains("error: connection refused on port 22"));
        assert!(text.contains("failed step esl-password: reloadxml returned -ERR"));
        assert!(text.contains("reason: not started: interrupted by Ctrl-C"));
        assert!(text.contains(
            "TOTAL 5 hosts: 1 ok, 1 changed, 1 failed, 1 unreachable, 1 skipped; \
             7 steps: ok=3 changed=2 failed=1 skipped=1"
        ));
        assert!(text.contains("ABORTED: interrupted by Ctrl-C"));
        // Columns line up: the counts start at the same offset on every host line.
        let col = |name: &str| line_of(name).find(" ok=").unwrap();
        assert_eq!(col("fs-ok "), col("fs-changed"));
        assert_eq!(col("fs-ok "), col("fs-down"));
        assert!(!text.contains('\x1b'), "no colours when asked for none");
        assert!(sample().render_recap(true).contains("\x1b[31mfailed"));
    }

    #[test]
    fn check_mode_is_said_on_the_header_each_changed_host_and_the_totals() {
        let mut r = sample();
        r.check = true;
        let text = r.render_recap(false);
        assert!(
            text.lines()
                .next()
                .is_some_and(|l| l.starts_with("RECAP harden --check (CHECK: nothing was changed)")),
            "{text}"
        );
        let changed = text.lines().find(|l| l.starts_with("fs-changed")).unwrap();
        assert!(changed.contains("would change  ok=1 changed=1"), "{text}");
        assert!(text.contains("1 would change,"), "{text}");
        assert!(!text.contains("  changed  "), "{text}");
        assert_eq!(r.to_json()["check"], true);
        // One host is "1 host", and the steps are their own count.
        let one = all_ok(&["solo"]);
        assert!(
            one.render_recap(false).contains(
                "TOTAL 1 host: 1 ok, 0 changed, 0 failed, 0 unreachable, 0 skipped; 1 step: ok=1"
            ),
            "{}",
            one.render_recap(false)
        );
    }

    #[test]
    fn json_has_the_documented_field_names() {
        let v = sample().to_json();
        let keys = |v: &serde_json::Value| {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(
            keys(&v),
            [
                "aborted",
                "check",
                "command",
                "elapsed_ms",
                "exit_code",
                "hosts",
                "interrupted",
                "run_id",
                "schema",
                "started",
                "step_totals",
                "totals"
            ]
        );
        assert_eq!(v["schema"], 1);
        assert_eq!(v["started"], "2026-11-24T19:30:01.000Z");
        assert_eq!(v["exit_code"], 4);
        assert_eq!(
            v["totals"],
            serde_json::json!({"hosts": 5, "ok": 1, "changed": 1, "failed": 1, "unreachable": 1, "skipped": 1})
        );
        assert_eq!(
            v["step_totals"],
            serde_json::json!({"ok": 3, "changed": 2, "failed": 1, "skipped": 1})
        );
        assert_eq!(v["check"], false);
        let failed = &v["hosts"][2];
        assert_eq!(
            keys(failed),
            [
                "address",
                "counts",
                "data",
                "elapsed_ms",
                "error",
                "name",
                "status",
                "steps"
            ]
        );
        assert_eq!(failed["name"], "fs-failed");
        assert_eq!(failed["status"], "failed");
        assert_eq!(failed["data"]["os"], "debian 12");
        assert_eq!(
            failed["counts"],
            serde_json::json!({"ok": 0, "changed": 1, "failed": 1, "skipped": 0})
        );
        assert_eq!(
            keys(&failed["steps"][1]),
            ["elapsed_ms", "message", "name", "status"]
        );
        assert_eq!(failed["steps"][1]["status"], "failed");
        assert_eq!(v["hosts"][3]["status"], "unreachable");
        assert_eq!(v["hosts"][3]["error"], "connection refused on port 22");
        assert_eq!(v["hosts"][0]["error"], serde_json::Value::Null);
        let names: Vec<&str> = v["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["fs-ok", "fs-changed", "fs-failed", "fs-down", "fs-late"]
        );
    }

    #[test]
    fn failed_hosts_are_failed_and_unreachable_in_order() {
        assert_eq!(sample().failed_hosts(), ["fs-failed", "fs-down"]);
        assert!(all_ok(&["a", "b"]).failed_hosts().is_empty());
    }

    #[test]
    fn exit_codes() {
        assert_eq!(all_ok(&["a"]).exit_code(), 0);
        assert_eq!(sample().exit_code(), 4, "failures win over the interrupt");
        let mut unreachable = all_ok(&["a"]);
        unreachable
            .hosts
            .push(HostReport::unreachable(&host("b"), "timeout"));
        assert_eq!(unreachable.exit_code(), 4);
        let mut interrupted = all_ok(&["a"]);
        interrupted.interrupted = true;
        interrupted
            .hosts
            .push(HostReport::skipped(&host("b"), "not started"));
        assert_eq!(interrupted.exit_code(), 130);
    }

    /// What `--limit @FILE` does with the file: one name per line, blanks ignored.
    fn read_limit_file(path: &Path) -> Vec<String> {
        fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()
    }

    #[test]
    fn retry_file_lists_failed_hosts_beside_the_inventory_and_is_removed_when_all_ok() {
        let inv = tempfile::tempdir().unwrap();
        let path = sample().write_retry_file(inv.path()).unwrap().unwrap();
        assert_eq!(path, inv.path().join(".fsfleet").join("retry"));
        assert_eq!(fs::read_to_string(&path).unwrap(), "fs-failed\nfs-down\n");
        assert_eq!(read_limit_file(&path), sample().failed_hosts());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(inv.path().join(".fsfleet"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        let leftovers: Vec<_> = fs::read_dir(inv.path().join(".fsfleet")).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp file left behind");

        // A second failing run replaces the list.
        let mut second = all_ok(&["a", "b"]);
        second.hosts.push(HostReport::failed(&host("c"), "boom"));
        second.write_retry_file(inv.path()).unwrap();
        assert_eq!(read_limit_file(&path), ["c"]);

        // A clean run removes the stale file, and a second clean run is fine without it.
        assert_eq!(all_ok(&["a"]).write_retry_file(inv.path()).unwrap(), None);
        assert!(!path.exists());
        assert_eq!(all_ok(&["a"]).write_retry_file(inv.path()).unwrap(), None);
    }

    #[test]
    fn retry_file_error_names_the_path() {
        let inv = tempfile::tempdir().unwrap();
        // A file where the directory should be.
        fs::write(inv.path().join(".fsfleet"), "").unwrap();
        let err = sample().write_retry_file(inv.path()).unwrap_err();
        assert!(err.to_string().contains(".fsfleet"), "{err}");
    }
}
