//! What a run produces: per-step and per-host results, the recap, JSON, the retry file.

use serde::Serialize;

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
