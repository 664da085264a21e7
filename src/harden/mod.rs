//! `fsfleet harden`: the day-one baseline, one small named step per file.
//!
//! Every step follows the same shape (pyinfra's model, batched):
//! - `probes(&mut Probes, ..)`: the snippets and files the step needs, all joined into ONE remote
//!   script per host with every other step's;
//! - `plan(&HostFacts, ..) -> StepPlan`: pure, on the controller: would it change anything, what;
//! - `apply(..)`: send only what changes.
//!
//! Every skippable step implements [`step::Step`]: `plan` returns the operator's lines, what the
//! orchestrator does for the step (config edits, secrets, reloads) and a typed action that
//! `apply` takes as is; [`step::REGISTRY`] is the one list their names, probes, plans,
//! `--check`, apply, reload needs and report lines come from.
//!
//! The orchestration (order, backup, vault, rollback, reload) is in [`run`](self::run) below.

pub mod context;
pub mod fail2ban;
pub mod file_modes;
pub mod firewall;
pub mod packages;

pub use context::{
    FileEdit, HardenOptions, HostFacts, Meta, Probes, RotateScope, StepCtx, StepError, StepPlan,
};
pub mod auth_logging;
pub mod backup;
pub mod dialplan;
pub mod event_socket;
pub mod fs_cli;
pub mod modules;
pub mod per_user_passwords;
pub mod preflight;
pub mod reload;
pub mod remove_stock_users;
pub mod run;
pub mod sip_password;
pub mod sip_protocol;
pub mod step;
pub mod tls;
pub mod verify;
pub mod voicemail_pins;

use crate::display;
use crate::report::{RunReport, StepStatus};

/// The harden run as an operator reads it: per host, what changed or failed (every step with
/// `verbose`), then the recap.
pub fn render_text(report: &RunReport, verbose: bool) -> String {
    let mut out = String::new();
    for h in &report.hosts {
        out.push_str(&format!(
            "{} ({}): {}{}\n",
            display::line(&h.name),
            display::line(&h.address),
            report.status_word(h.status),
            if report.check {
                " (CHECK: nothing was changed)"
            } else {
                ""
            }
        ));
        // After a change, what verify proved is the answer to "did it work": shown with it.
        let changed = h.steps.iter().any(|s| s.status == StepStatus::Changed);
        for s in &h.steps {
            let show = verbose
                || !matches!(s.status, StepStatus::Ok | StepStatus::Skipped)
                || (changed && s.name == verify::NAME)
                || !s.evidence.is_empty()
                    && s.evidence
                        .iter()
                        .any(|e| e.starts_with("warning:") || e.starts_with("---"));
            if !show {
                continue;
            }
            let tag = match s.status {
                StepStatus::Ok => "ok",
                // Under --check a step's changes are what it would do.
                StepStatus::Changed if report.check => "CHECK",
                StepStatus::Changed => "changed",
                StepStatus::Failed => "FAILED",
                StepStatus::Skipped => "skipped",
            };
            // Messages and evidence quote host text (paths, command output, os-release).
            out.push_str(&format!(
                "  {:<13} {:<8} {}\n",
                s.name,
                tag,
                display::line(&s.message)
            ));
            for e in &s.evidence {
                if verbose || e.starts_with("warning:") || e.starts_with("---") {
                    for line in e.lines() {
                        out.push_str(&format!("      {}\n", display::line(line)));
                    }
                }
            }
        }
        // A host that stopped on a failed step has that step's message as its error too: the
        // step's line above already says it.
        let said = |e: &str| {
            h.steps.iter().any(|s| {
                s.status == StepStatus::Failed && !s.message.is_empty() && e.contains(&s.message)
            })
        };
        if let Some(e) = h.error.as_deref().filter(|e| !said(e)) {
            for (i, line) in e.lines().enumerate() {
                let head = if i == 0 { "error: " } else { "  " };
                out.push_str(&format!("  {head}{}\n", display::line(line)));
            }
        }
    }
    out.push('\n');
    out.push_str(&report.recap_text());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::testing::{host, step};
    use crate::report::{HostReport, RunReport};

    fn run(check: bool) -> RunReport {
        let h = HostReport::from_steps(
            &host("fs01"),
            vec![
                step(
                    "sip-password",
                    StepStatus::Changed,
                    "would rotate default_password",
                ),
                step("firewall", StepStatus::Ok, "already active"),
            ],
        );
        RunReport {
            run_id: "r".into(),
            command: "harden".into(),
            started: chrono::Utc::now(),
            elapsed_ms: 1,
            hosts: vec![h],
            aborted: None,
            interrupted: false,
            check,
        }
    }

    #[test]
    fn a_failed_step_is_said_once_per_section() {
        let why =
            "FreeSWITCH is not running (no main process); start it, or re-run with --offline-ok";
        let mut r = run(false);
        r.hosts[0] = HostReport::from_steps(
            &host("fs01"),
            vec![step("preflight", StepStatus::Failed, why)],
        );
        r.hosts[0].error = Some(format!("preflight: {why}"));
        let text = render_text(&r, false);
        // Once for the host's steps, once in the recap.
        assert_eq!(text.matches(why).count(), 2, "{text}");
    }

    #[test]
    fn the_backup_path_is_said_once() {
        let mut r = run(false);
        let dir = "/var/backups/fsfleet/20261129T221000Z-ab12";
        r.hosts[0].steps.insert(
            0,
            step(
                "backup",
                StepStatus::Changed,
                &format!("backed up to {dir}"),
            ),
        );
        r.hosts[0].data = Some(serde_json::json!({ "backup": dir }));
        let text = render_text(&r, false);
        assert_eq!(text.matches(dir).count(), 1, "{text}");
    }

    #[test]
    fn check_mode_is_said_on_the_host_line_and_each_step_that_would_change() {
        let text = render_text(&run(true), false);
        assert!(
            text.contains("fs01 (")
                && text.contains("): would change (CHECK: nothing was changed)"),
            "{text}"
        );
        assert!(
            text.contains("  sip-password  CHECK    would rotate default_password"),
            "{text}"
        );
        assert!(!text.contains("changed  "), "{text}");
        let real = render_text(&run(false), false);
        assert!(real.contains("): changed\n"), "{real}");
        assert!(real.contains("  sip-password  changed  "), "{real}");
    }
}
