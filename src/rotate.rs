//! `fsfleet rotate`: new passwords on a schedule or after a staff change, and nothing else.
//!
//! It is a harden run narrowed to the steps that set the asked-for passwords, with
//! [`HardenOptions::rotate_only`] telling those steps to change the password only:
//! - `--esl`: the `event-socket` step (the password, not the listen address or ACL) and the
//!   `fs-cli` step (the configs that carry it);
//! - `--sip`: the `sip-password` step (vars.xml's `default_password`, not the directory files'
//!   modes), refused while users that log in with it are registered unless `--rotate-in-use`,
//!   exactly as harden's rule;
//! - `--users`: the production level's `per-user-passwords` step in its rotation mode: every
//!   user with a password of its own (a literal, not `$${default_password}`) gets a new one
//!   (users still on the shared password are left to `harden --level production`); refused while
//!   one of their phones is registered unless `--rotate-in-use`, the same rule as `--sip`.
//!
//! Everything else is harden's orchestration as it is: backup (so `fsfleet rollback` can undo a
//! rotation), the new passwords to the vault as pending before the host sees them, one
//! all-or-nothing config write, the reload with the OLD Event Socket password (`reload
//! mod_event_socket` last), verify with the new one, the vault's value active (the old one kept
//! in its history).
//!
//! A host that is not hardened yet gets its passwords rotated and nothing else: the rewritten
//! file ends readable only by root and FreeSWITCH (a new secret never goes into a file others
//! can read), and what harden would still change about the Event Socket (its listen address,
//! its ACL) is reported as a warning, not a failure.

use crate::harden::run::{Selection, SelectionError};
use crate::harden::verify;
use crate::harden::{HardenOptions, RotateScope, event_socket, fs_cli, reload, sip_password};

/// The production level's step that sets per-user SIP passwords (`--users` rotates through it).
pub const USERS_STEP: &str = "per-user-passwords";

/// Why a rotate cannot be run as asked.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error("choosing the steps of the rotation")]
    Selection(#[source] SelectionError),
}

/// The flags as given: none of `--esl`, `--sip`, `--users` means the Event Socket and the SIP
/// password.
pub fn scope(esl: bool, sip: bool, users: bool) -> RotateScope {
    if !(esl || sip || users) {
        return RotateScope {
            esl: true,
            sip: true,
            users: false,
        };
    }
    RotateScope { esl, sip, users }
}

/// The harden steps a rotation runs (preflight and backup always run).
pub fn steps(scope: RotateScope) -> Result<Vec<String>, RotateError> {
    let mut out: Vec<&str> = Vec::new();
    if scope.sip {
        out.push(sip_password::NAME);
    }
    if scope.users {
        out.push(USERS_STEP);
    }
    if scope.esl {
        out.extend([event_socket::NAME, fs_cli::NAME]);
    }
    out.extend([reload::NAME, verify::NAME]);
    Ok(out.into_iter().map(str::to_string).collect())
}

/// The selection and options of the harden run that does the rotation.
pub fn plan(
    scope: RotateScope,
    rotate_in_use: bool,
    check: bool,
    diff: bool,
) -> Result<(Selection, HardenOptions), RotateError> {
    let only = steps(scope)?;
    let selection = Selection::new(&[], &only).map_err(RotateError::Selection)?;
    let opts = HardenOptions {
        rotate_in_use,
        // Per-user passwords follow the same rule as the shared one: refused while a phone of
        // the user is registered unless the operator says go.
        force_reregister: rotate_in_use,
        check,
        diff,
        rotate_only: Some(scope),
        ..HardenOptions::default()
    };
    Ok((selection, opts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harden::context::test_host;
    use crate::harden::preflight::Preflight;
    use crate::harden::step;
    use crate::harden::step::PlanInput;
    use crate::harden::{HostFacts, StepPlan};

    #[test]
    fn no_flag_rotates_the_event_socket_and_sip_passwords() {
        assert_eq!(
            scope(false, false, false),
            RotateScope {
                esl: true,
                sip: true,
                users: false
            }
        );
        assert_eq!(
            scope(true, false, false),
            RotateScope {
                esl: true,
                sip: false,
                users: false
            }
        );
        assert_eq!(
            steps(scope(false, false, false)).unwrap(),
            ["sip-password", "event-socket", "fs-cli", "reload", "verify"]
        );
        assert_eq!(
            steps(scope(false, true, false)).unwrap(),
            ["sip-password", "reload", "verify"]
        );
    }

    #[test]
    fn users_rotate_through_the_per_user_passwords_step() {
        assert_eq!(
            steps(scope(false, false, true)).unwrap(),
            ["per-user-passwords", "reload", "verify"]
        );
        assert_eq!(
            steps(scope(true, true, true)).unwrap(),
            [
                "sip-password",
                "per-user-passwords",
                "event-socket",
                "fs-cli",
                "reload",
                "verify"
            ]
        );
        // The step it names is the registry's.
        assert!(step::REGISTRY.iter().any(|e| e.name == USERS_STEP));
        let (_, opts) = plan(scope(false, false, true), true, false, false).unwrap();
        assert!(
            opts.force_reregister,
            "--rotate-in-use forces the users too"
        );
    }

    /// Every registry step the selection runs, planned on `f` as preflight would see a stock
    /// host that is running.
    fn plans(f: &HostFacts, scope: RotateScope) -> Vec<(&'static str, StepPlan)> {
        let (sel, opts) = plan(scope, false, true, false).unwrap();
        let host = test_host("pbx1");
        let pre = Preflight::from_config(f).unwrap();
        let mut out: Vec<(&'static str, StepPlan)> = Vec::new();
        for e in step::REGISTRY
            .iter()
            .filter(|e| sel.runs_entry(e, opts.level_for(&host)))
        {
            let before: Vec<&StepPlan> = out.iter().map(|(_, p)| p).collect();
            let input = PlanInput {
                facts: f,
                host: &host,
                opts: &opts,
                pre: &pre,
                before: &before,
            };
            let p = (e.plan)(&input).unwrap_or_else(|err| panic!("{}: {err}", e.name));
            out.push((e.name, p.outline().clone()));
        }
        out
    }

    #[test]
    fn a_stock_host_gets_its_passwords_rotated_and_nothing_else() {
        let f = HostFacts::stock();
        let p = plans(&f, scope(false, false, false));
        let names: Vec<&str> = p.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["sip-password", "event-socket", "fs-cli"]);
        let sip = &p[0].1;
        assert_eq!(
            sip.changes,
            ["rotate default_password in /etc/freeswitch/vars.xml (was the stock 1234)"]
        );
        assert_eq!(sip.secrets.len(), 1);
        let esl = &p[1].1;
        // The password only: the stock listen address and ACL are said, not changed.
        assert_eq!(
            esl.changes,
            ["rotate the Event Socket password (was the stock ClueCon)"]
        );
        assert!(
            esl.warnings[0].contains("`fsfleet rotate` changes only the password")
                && esl.warnings[1].ends_with("(`fsfleet creds show pbx1 --reveal`)"),
            "{:?}",
            esl.warnings
        );
        let edit = &esl.edits[0];
        let (old, new) = (
            String::from_utf8_lossy(&edit.old),
            String::from_utf8_lossy(&edit.new),
        );
        let differing: Vec<(&str, &str)> = old
            .lines()
            .zip(new.lines())
            .filter(|(a, b)| a != b)
            .collect();
        assert_eq!(differing.len(), 1, "{differing:?}");
        assert!(
            differing[0].1.contains("name=\"password\""),
            "{differing:?}"
        );
        assert!(esl.reload.event_socket);
        let after = esl.event_socket.as_ref().unwrap();
        assert_eq!(after.password, esl.secrets[0].1);
        // fs_cli gets the new password.
        assert!(!p[2].1.is_noop(), "{:?}", p[2].1);
    }

    #[test]
    fn the_calls_up_now_are_said_with_an_event_socket_rotation() {
        let f = HostFacts::stock();
        let (sel, opts) = plan(scope(true, false, false), false, true, false).unwrap();
        let host = test_host("pbx1");
        let mut pre = Preflight::from_config(&f).unwrap();
        let plan_esl = |pre: &Preflight| {
            let e = step::REGISTRY
                .iter()
                .find(|e| e.name == event_socket::NAME && sel.runs(e.name))
                .unwrap();
            let input = PlanInput {
                facts: &f,
                host: &host,
                opts: &opts,
                pre,
                before: &[],
            };
            (e.plan)(&input).unwrap().outline().warnings.clone()
        };
        assert!(!plan_esl(&pre).iter().any(|w| w.contains("up now")));
        pre.sessions = Some(2);
        assert!(
            plan_esl(&pre).contains(
                &"2 calls are up now: the Event Socket reload does not touch calls".to_string()
            ),
            "{:?}",
            plan_esl(&pre)
        );
    }

    #[test]
    fn a_strong_password_is_rotated_only_when_asked_for() {
        let f = HostFacts::stock();
        let esl_only = plans(&f, scope(true, false, false));
        assert!(esl_only.iter().all(|(n, _)| *n != "sip-password"));
        // A strong SIP password (the one a first rotation set) is rotated again by --sip.
        let sip = plans(&f, scope(false, true, false)).remove(0).1;
        let new = String::from_utf8(sip.edits[0].new.clone()).unwrap();
        let mut f2 = HostFacts::stock();
        if let Some(file) = f2.files.files.get_mut("/etc/freeswitch/vars.xml") {
            file.content = Some(new.into_bytes());
        }
        let again = plans(&f2, scope(false, true, false)).remove(0).1;
        assert_eq!(
            again.changes,
            [
                "rotate default_password in /etc/freeswitch/vars.xml (was strong; rotation requested)"
            ]
        );
        assert_ne!(again.secrets[0].1, sip.secrets[0].1);
        // harden leaves it alone (no --rotate).
        let (p, _) = sip_password::plan(&f2, &HardenOptions::default()).unwrap();
        assert!(p.is_noop());
    }
}
