//! `fsfleet audit`: read-only controls with stable IDs, live evidence, outside-in probes.
//!
//! The catalogue is modelled on InSpec/DevSec baselines and Lynis: every [`Control`] has a stable
//! ID (`FS-ESL-01`), a severity, a title, a rationale, a remediation line and an evaluation
//! function from the host's [`Evidence`] (the host model plus live probes) to a [`Finding`], or a
//! [`ControlError`] when the evidence cannot decide ([`Control::run`] makes that an `error`
//! finding). One file per family. Evidence is read in
//! ONE remote round trip per host (the same `facts` script machinery `harden` uses), plus live
//! Event Socket probes through the SSH tunnel and a plain TCP probe from the controller.
//! Nothing on the host is changed, reloaded or sent a SIP message.

use serde::Serialize;

mod command;
pub mod credentials;
pub mod dialplan;
mod error;
pub mod esl;
pub mod evidence;
pub mod fail2ban;
pub mod firewall;
pub mod modules;
pub mod render;
#[cfg(test)]
mod render_snapshots;
pub mod sip;
pub mod vuln;

pub use command::{AuditError, HostAudit, Outcome, audit_host, command, evaluate, exit_code};
pub use error::ControlError;
pub use evidence::{EslProbe, Evidence, Live, OutsideProbe};

/// How bad a failing control is. Ordered: `Info < Low < ... < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// Highest first, for reports.
    pub const ALL: [Severity; 5] = [
        Severity::Critical,
        Severity::High,
        Severity::Medium,
        Severity::Low,
        Severity::Info,
    ];
}

impl From<crate::cli::FailOn> for Severity {
    fn from(f: crate::cli::FailOn) -> Severity {
        use crate::cli::FailOn;
        match f {
            FailOn::Critical => Severity::Critical,
            FailOn::High => Severity::High,
            FailOn::Medium => Severity::Medium,
            FailOn::Low => Severity::Low,
            FailOn::Info => Severity::Info,
        }
    }
}

/// The result of one control on one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    /// The control could not be evaluated; the evidence says why. Never a silent pass.
    Error,
    /// The control does not apply to this host (e.g. the controller has no direct route).
    Skipped,
    /// Waived by the inventory or `--waive`; the underlying result is kept in the report.
    Waived,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Error => "error",
            Status::Skipped => "skipped",
            Status::Waived => "waived",
        }
    }
}

/// What a control found. Evidence lines never contain a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub status: Status,
    pub evidence: Vec<String>,
}

impl Finding {
    pub fn pass(evidence: Vec<String>) -> Finding {
        Finding {
            status: Status::Pass,
            evidence,
        }
    }
    pub fn fail(evidence: Vec<String>) -> Finding {
        Finding {
            status: Status::Fail,
            evidence,
        }
    }
    /// The one way to an `error` finding: a control's [`ControlError`], through
    /// [`Control::run`].
    fn error(e: &ControlError) -> Finding {
        Finding {
            status: Status::Error,
            evidence: vec![e.evidence()],
        }
    }
    pub fn skipped(reason: impl Into<String>) -> Finding {
        Finding {
            status: Status::Skipped,
            evidence: vec![reason.into()],
        }
    }
    /// Fail when `failures` is non-empty (they are the evidence), else pass with `ok`.
    pub fn fail_if(failures: Vec<String>, ok: Vec<String>) -> Finding {
        if failures.is_empty() {
            Finding::pass(ok)
        } else {
            Finding::fail(failures)
        }
    }
    /// Add what the host model had to assume (a pass or fail stays one).
    pub fn with_notes(mut self, notes: Vec<String>) -> Finding {
        if matches!(self.status, Status::Pass | Status::Fail) {
            self.evidence.extend(notes);
        }
        self
    }
}

/// One control of the catalogue.
pub struct Control {
    /// Stable ID, never reused for another meaning: `FS-<FAMILY>-NN`.
    pub id: &'static str,
    pub family: &'static str,
    pub severity: Severity,
    pub title: &'static str,
    pub rationale: &'static str,
    pub remediation: &'static str,
    /// Part of the baseline `fsfleet harden` applies (else the operator's decision).
    pub baseline: bool,
    /// Pass, fail or skipped from the host model and the live probes; Err when the evidence
    /// cannot decide (see [`Control::run`]).
    pub eval: fn(&Evidence) -> Result<Finding, ControlError>,
}

impl Control {
    /// The control's finding on this evidence: an evaluation error is an `error` finding whose
    /// evidence is the error and its causes. Never a silent pass.
    pub fn run(&self, ev: &Evidence) -> Finding {
        (self.eval)(ev).unwrap_or_else(|e| Finding::error(&e))
    }
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control").field("id", &self.id).finish()
    }
}

/// Every control, family by family, in report order.
pub fn catalogue() -> Vec<&'static Control> {
    [
        esl::CONTROLS,
        sip::CONTROLS,
        dialplan::CONTROLS,
        modules::CONTROLS,
        fail2ban::CONTROLS,
        firewall::CONTROLS,
        credentials::CONTROLS,
        vuln::controls(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The control with this ID (case-insensitive).
pub fn control(id: &str) -> Option<&'static Control> {
    catalogue()
        .into_iter()
        .find(|c| c.id.eq_ignore_ascii_case(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_well_formed_and_documented() {
        let all = catalogue();
        let mut ids: Vec<&str> = all.iter().map(|c| c.id).collect();
        ids.sort_unstable();
        let n = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), n, "duplicate control IDs");
        for c in &all {
            let parts: Vec<&str> = c.id.split('-').collect();
            assert!(
                parts.len() == 3 && parts[0] == "FS" && parts[2].len() == 2,
                "{}",
                c.id
            );
            assert!(parts[2].chars().all(|ch| ch.is_ascii_digit()), "{}", c.id);
            assert!(!c.title.is_empty() && !c.rationale.is_empty() && !c.remediation.is_empty());
            assert!(c.remediation.ends_with('.'), "{} remediation", c.id);
        }
        for fam in ["ESL", "SIP", "DP", "MOD", "F2B", "FW", "CRED", "VULN"] {
            assert!(
                all.iter().any(|c| c.id.starts_with(&format!("FS-{fam}-"))),
                "{fam}"
            );
        }
        assert!(control("fs-esl-01").is_some());
        assert!(control("FS-NOPE-01").is_none());
    }

    /// An evaluation error becomes an `error` finding in `Control::run`, its causes each once.
    #[test]
    fn an_evaluation_error_is_an_error_finding_with_its_causes() {
        fn broken(_: &Evidence) -> Result<Finding, ControlError> {
            Err(ControlError::Model(crate::model::ModelError::Conf {
                path: "/etc/freeswitch/vars.xml".into(),
                source: crate::conf::ConfError::Malformed("unclosed <include>".into()),
            }))
        }
        let c = Control {
            id: "FS-TEST-01",
            family: "test",
            severity: Severity::High,
            title: "t",
            rationale: "r",
            remediation: "r.",
            baseline: false,
            eval: broken,
        };
        let f = c.run(&evidence::testing::stock());
        assert_eq!(f.status, Status::Error);
        assert_eq!(
            f.evidence,
            ["/etc/freeswitch/vars.xml: not well-formed XML: unclosed <include>"]
        );
        // Through a control of the catalogue: a config file FreeSWITCH could not load.
        let mut files = evidence::testing::stock_files();
        evidence::testing::edit(&mut files, "autoload_configs/modules.conf.xml", |_| {
            "<configuration><modules><load module=\"mod_verto\"/><!-- never closed".into()
        });
        let ev = evidence::testing::evidence(&files, &[], Live::default());
        let f = evidence::testing::eval("FS-MOD-01", &ev);
        assert_eq!(f.status, Status::Error, "{:?}", f.evidence);
        assert!(
            f.evidence[0].starts_with("autoload_configs/modules.conf.xml: not well-formed XML"),
            "{:?}",
            f.evidence
        );
    }
}
