//! Step `sip-password`: rotate `default_password` in vars.xml when it is the stock 1234 or weak.
//!
//! Only the value of the real X-PRE-PROCESS `set` line changes (FACTS §1); comments and every other
//! byte stay. The new password is generated on the controller and goes to the vault before the
//! file is written (the orchestrator does that).

use super::step::{self, PlanInput};
use super::{FileEdit, HardenOptions, HostFacts, Probes, StepError, StepPlan, reload};
use crate::conf::{self, diff, vars};
use crate::inventory::Host;
use crate::model::registrations::Registered;
use crate::model::{self, HostModel};
use crate::secret::Secret;
use crate::vault::{self, CredKind};

pub const NAME: &str = "sip-password";
const VAR: &str = model::DEFAULT_PASSWORD_VAR;

/// The step in the registry: its edits go out in the config write, so `apply` has nothing left.
pub struct SipPassword;
step::config_step!(SipPassword);

/// vars.xml's password and the directory files' modes, with the secret and reload they bring.
pub fn step_plan(input: &PlanInput<'_>) -> Result<StepPlan, StepError> {
    let (mut outline, rotation) = plan_with(
        input.facts,
        input.opts,
        &input.host.name,
        input.pre.registered.as_ref(),
        input.pre.live_password.is_some(),
    )?;
    // The directory files' modes are `fsfleet harden`'s to fix, not `fsfleet rotate`'s.
    if input.opts.rotate_only.is_none() {
        let (changes, dir_edits) = directory_modes(input.facts)?;
        outline.changes.extend(changes);
        outline.edits.extend(dir_edits);
    }
    if let Some((edit, pw)) = rotation {
        outline.edits.push(edit);
        outline
            .secrets
            .extend(pw.map(|pw| (CredKind::SipPassword, pw)));
    }
    outline.reload = reload::Needs::xml_for(&outline.edits);
    Ok(outline)
}

/// vars.xml and the directory are config files, read for every run.
pub fn probes(_p: &mut Probes, _host: &Host) {}

/// The edit of vars.xml and the new password (None when only owner or mode change).
pub type Rotation = (FileEdit, Option<Secret>);

/// Why `default_password` would be rotated (weak, or `--rotate`), None when it stays.
pub fn rotation_reason(f: &HostFacts, opts: &HardenOptions) -> Option<&'static str> {
    let current = HostModel::new(f).default_password().ok().flatten()?;
    let weak = model::password_weakness(current.expose()).map(|w| w.as_str());
    match opts.rotate_only {
        // `fsfleet rotate`: only when asked for, weak or not.
        Some(scope) => scope
            .sip
            .then_some(weak.unwrap_or(super::context::ON_REQUEST)),
        None if weak.is_some() => weak,
        None if opts.rotate => Some("--rotate"),
        None => None,
    }
}

/// The plan of a host whose running FreeSWITCH was not asked who is registered (the unit
/// tests' stock hosts).
#[cfg(test)]
pub fn plan(
    f: &HostFacts,
    opts: &HardenOptions,
) -> Result<(StepPlan, Option<Rotation>), StepError> {
    plan_with(f, opts, "HOST", None, false)
}

/// Who a `default_password` rotation affects: the directory users that log in with it, and
/// which of them are registered right now.
#[derive(Debug, Default)]
struct Impact {
    users: Vec<String>,
    /// Users on the shared password with a registration now, with where they registered from.
    registered: Vec<(String, Vec<String>)>,
    /// Profiles whose registrations could not be read.
    unknown: Vec<String>,
}

impl Impact {
    fn of(f: &HostFacts, regs: Option<&Registered>) -> Result<Impact, StepError> {
        let users: Vec<String> = HostModel::new(f)
            .directory_users()?
            .into_iter()
            .filter(|u| u.uses_default_password())
            .map(|u| u.id)
            .collect();
        let mut registered = Vec::new();
        let mut unknown = Vec::new();
        if let Some(regs) = regs {
            for u in &users {
                let rows = regs.of_user(u);
                if !rows.is_empty() {
                    let mut from: Vec<String> = rows
                        .iter()
                        .filter_map(|r| r.network_ip.map(|ip| ip.to_string()))
                        .collect();
                    from.dedup();
                    registered.push((u.clone(), from));
                }
            }
            unknown = regs.unknown.clone();
        }
        Ok(Impact {
            users,
            registered,
            unknown,
        })
    }

    /// `1000 (from 192.0.2.5), 1001`.
    fn registered_list(&self) -> String {
        self.registered
            .iter()
            .map(|(u, from)| {
                if from.is_empty() {
                    u.clone()
                } else {
                    format!("{u} (from {})", from.join(", "))
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn users_line(&self) -> String {
        let ids: Vec<&str> = self.users.iter().map(String::as_str).collect();
        format!(
            "{} directory user{} log{} in with {VAR} ({})",
            ids.len(),
            if ids.len() == 1 { "" } else { "s" },
            if ids.len() == 1 { "s" } else { "" },
            model::compact_ids(&ids)
        )
    }
}

/// The plan, the edit and the new password (edit None when nothing changes; password None
/// when only owner or mode change). `regs`: who the running FreeSWITCH says is registered
/// (None: it was not asked, or it is not running when `running` is false).
pub fn plan_with(
    f: &HostFacts,
    opts: &HardenOptions,
    host: &str,
    regs: Option<&Registered>,
    running: bool,
) -> Result<(StepPlan, Option<Rotation>), StepError> {
    let (path, text) = f.conf_text("vars.xml")?;
    let current = HostModel::new(f).default_password()?.ok_or_else(|| {
        StepError::Refused(format!(
            "{path} sets no {VAR}; add `<X-PRE-PROCESS cmd=\"set\" data=\"{VAR}=...\"/>` by hand"
        ))
    })?;
    let mut plan = StepPlan::default();
    let mut why = rotation_reason(f, opts);
    if let Some(reason) = why {
        let impact = Impact::of(f, regs)?;
        let creds = format!("`fsfleet creds show {host}` shows it");
        // An unreadable profile blocks only when someone could be registered there.
        let blocked = !impact.registered.is_empty()
            || (!impact.unknown.is_empty() && !impact.users.is_empty());
        if blocked && !opts.rotate_in_use {
            let whom = if impact.registered.is_empty() {
                format!(
                    "cannot tell whether users that log in with it are registered ({})",
                    impact.unknown.join("; ")
                )
            } else {
                format!(
                    "users that log in with it are registered now: {}",
                    impact.registered_list()
                )
            };
            plan.refused.push(format!(
                "not rotating {VAR} in {path} (was {reason}): {whom}; re-run with --rotate-in-use \
                 to rotate anyway, then give their phones the new password ({creds})"
            ));
            why = None;
        } else if !impact.users.is_empty() {
            let now = if !impact.registered.is_empty() {
                format!(
                    "registered now, their phones must be given the new password: {}",
                    impact.registered_list()
                )
            } else if regs.is_some() {
                "none of them is registered now".to_string()
            } else if !running {
                "FreeSWITCH is not running, so none of them is registered now".to_string()
            } else {
                "whether they are registered now was not asked".to_string()
            };
            plan.warnings.push(format!(
                "{}: a phone using one of them stops registering until it gets the new password \
                 ({creds}); {now}",
                impact.users_line()
            ));
        }
    }
    let (out, new) = match why {
        Some(why) => {
            let new = vault::generate_password(vault::PASSWORD_LEN);
            match vars::set_var(text, VAR, new.expose()).map_err(|source| StepError::Edit {
                path: path.to_string(),
                source,
            })? {
                Some(out) => {
                    plan.changes
                        .push(format!("rotate {VAR} in {path} (was {why})"));
                    plan.diffs
                        .push(diff::masked_diff(path, text, &out, &[&new, &current]));
                    (out, Some(new))
                }
                None => (text.to_string(), None),
            }
        }
        None => (text.to_string(), None),
    };
    let Some(edit) = f.edit(path, out.into_bytes(), true)? else {
        return Ok((plan, None));
    };
    if edit.was != edit.want {
        plan.changes.push(restrict_line(path, &edit));
    }
    Ok((plan, Some((edit, new))))
}

/// Directory files that set a password literally and that others can read: the same content,
/// readable only by root and FreeSWITCH (they are part of this step: SIP credentials at rest).
pub fn directory_modes(f: &HostFacts) -> Result<(Vec<String>, Vec<FileEdit>), StepError> {
    let mut changes = Vec::new();
    let mut edits = Vec::new();
    let mut files = f.files.conf_dir_files("directory", ".xml");
    files.extend(f.files.conf_dir_files("directory/default", ".xml"));
    for file in files {
        let (Some(text), Some(bytes)) = (file.text(), file.content.as_ref()) else {
            continue;
        };
        if !conf::holds_literal_password(text) {
            continue;
        }
        if let Some(e) = f.edit(&file.path, bytes.clone(), true)? {
            changes.push(restrict_line(&file.path, &e));
            edits.push(e);
        }
    }
    Ok((changes, edits))
}

/// The plan line for a file holding a secret that other users could read.
pub fn restrict_line(path: &str, e: &FileEdit) -> String {
    format!(
        "make {path} readable only by root and FreeSWITCH ({}:{} {:04o}, was {}:{} {:04o})",
        e.want.user, e.want.group, e.want.mode, e.was.user, e.was.group, e.was.mode
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stock_1234_is_rotated_and_a_strong_one_is_left_alone() {
        let f = HostFacts::stock();
        let (plan, edit) = plan(&f, &HardenOptions::default()).unwrap();
        let (edit, pw) = edit.unwrap();
        let pw = pw.unwrap();
        assert_eq!(
            plan.changes,
            vec!["rotate default_password in /etc/freeswitch/vars.xml (was the stock 1234)"]
        );
        assert!(
            !plan.diffs[0].contains(pw.expose())
                && plan.diffs[0].contains("default_password=********")
        );
        let new = String::from_utf8(edit.new.clone()).unwrap();
        assert_eq!(vars::get_var(&new, VAR).as_deref(), Some(pw.expose()));
        assert_eq!(pw.expose().len(), 32);
        // Second run: nothing to do, unless --rotate.
        let f2 = HostFacts::with_conf("/etc/freeswitch", &[("vars.xml", &new)]);
        assert!(plan_noop(&f2, false));
        assert!(!plan_noop(&f2, true));
    }

    fn registered(users: &[(&str, &str)], unknown: &[&str]) -> Registered {
        use crate::model::registrations::Registration;
        Registered {
            rows: users
                .iter()
                .map(|(u, ip)| Registration {
                    profile: "internal".into(),
                    auth_user: u.to_string(),
                    user: u.to_string(),
                    network_ip: ip.parse().ok(),
                })
                .collect(),
            unknown: unknown.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn a_registered_user_on_the_shared_password_holds_the_rotation() {
        let f = HostFacts::stock_with_directory();
        let regs = registered(&[("1000", "192.0.2.5"), ("1000", "192.0.2.6")], &[]);
        let (p, e) = plan_with(&f, &HardenOptions::default(), "fs01", Some(&regs), true).unwrap();
        assert_eq!(
            p.refused,
            [
                "not rotating default_password in /etc/freeswitch/vars.xml (was the stock 1234): users that log in \
              with it are registered now: 1000 (from 192.0.2.5, 192.0.2.6); re-run with --rotate-in-use to rotate \
              anyway, then give their phones the new password (`fsfleet creds show fs01` shows it)"
            ]
        );
        assert!(p.changes.is_empty() && p.diffs.is_empty(), "{p:?}");
        assert!(e.is_none_or(|(edit, pw)| pw.is_none() && !edit.content_changed()));

        // --rotate-in-use: rotated, and the report names who to reprovision.
        let opts = HardenOptions {
            rotate_in_use: true,
            ..Default::default()
        };
        let (p, e) = plan_with(&f, &opts, "fs01", Some(&regs), true).unwrap();
        assert!(p.refused.is_empty());
        assert!(e.is_some_and(|(_, pw)| pw.is_some()));
        assert_eq!(
            p.warnings,
            [
                "21 directory users log in with default_password (1000-1019, brian): a phone using one of them stops \
              registering until it gets the new password (`fsfleet creds show fs01` shows it); registered now, \
              their phones must be given the new password: 1000 (from 192.0.2.5, 192.0.2.6)"
            ]
        );
    }

    #[test]
    fn nobody_registered_rotates_and_says_who_relies_on_it() {
        let f = HostFacts::stock_with_directory();
        // A registered user with a password of its own does not hold the rotation.
        let regs = registered(&[("default", "192.0.2.7")], &[]);
        let (p, e) = plan_with(&f, &HardenOptions::default(), "fs01", Some(&regs), true).unwrap();
        assert!(p.refused.is_empty());
        assert!(e.is_some_and(|(_, pw)| pw.is_some()));
        assert!(
            p.warnings[0].ends_with("none of them is registered now"),
            "{:?}",
            p.warnings
        );
        // FreeSWITCH down (--offline-ok): nobody can be registered.
        let (p, _) = plan_with(&f, &HardenOptions::default(), "fs01", None, false).unwrap();
        assert!(
            p.warnings[0].ends_with("FreeSWITCH is not running, so none of them is registered now")
        );
    }

    #[test]
    fn unreadable_registrations_hold_the_rotation_only_when_someone_relies_on_it() {
        let f = HostFacts::stock_with_directory();
        let regs = registered(&[], &["profile internal: answered garbage"]);
        let (p, _) = plan_with(&f, &HardenOptions::default(), "fs01", Some(&regs), true).unwrap();
        assert!(
            p.refused[0].contains("cannot tell whether users that log in with it are registered (profile internal: answered garbage)"),
            "{:?}",
            p.refused
        );
        // No directory user uses default_password: nothing to hold.
        let vars = f.conf_text("vars.xml").unwrap().1.to_string();
        let f2 = HostFacts::with_conf("/etc/freeswitch", &[("vars.xml", &vars)]);
        let (p, e) = plan_with(&f2, &HardenOptions::default(), "fs01", Some(&regs), true).unwrap();
        assert!(p.refused.is_empty() && p.warnings.is_empty(), "{p:?}");
        assert!(e.is_some_and(|(_, pw)| pw.is_some()));
    }

    fn plan_noop(f: &HostFacts, rotate: bool) -> bool {
        let (p, e) = plan(
            f,
            &HardenOptions {
                rotate,
                ..Default::default()
            },
        )
        .unwrap();
        p.is_noop() && e.is_none()
    }

    #[test]
    fn a_strong_password_in_a_world_readable_file_gets_its_mode_fixed_only() {
        let text = format!(
            "<X-PRE-PROCESS cmd=\"set\" data=\"default_password={}\"/>\n",
            "Ab3".repeat(8)
        );
        let mut f = HostFacts::with_conf("/etc/freeswitch", &[("vars.xml", &text)]);
        f.files
            .files
            .get_mut("/etc/freeswitch/vars.xml")
            .unwrap()
            .mode = 0o644;
        let (p, e) = plan(&f, &HardenOptions::default()).unwrap();
        let (edit, pw) = e.unwrap();
        assert!(pw.is_none() && !edit.content_changed());
        assert_eq!(edit.want.mode, 0o640);
        assert_eq!(p.changes.len(), 1);
        assert!(
            p.changes[0].contains("readable only by root and FreeSWITCH"),
            "{:?}",
            p.changes
        );
    }

    #[test]
    fn weak_passwords_are_rotated_and_a_missing_var_is_refused() {
        let f = HostFacts::with_conf(
            "/c",
            &[(
                "vars.xml",
                "<X-PRE-PROCESS cmd=\"set\" data=\"default_password=hunter2\"/>\n",
            )],
        );
        let (p, _) = plan(&f, &HardenOptions::default()).unwrap();
        assert!(p.changes[0].contains("shorter than 16"));
        assert!(
            !p.diffs[0].contains("hunter2"),
            "an old secret is masked too"
        );
        let f = HostFacts::with_conf("/c", &[("vars.xml", "<include/>\n")]);
        assert!(
            plan(&f, &HardenOptions::default())
                .unwrap_err()
                .to_string()
                .contains("sets no default_password")
        );
    }

    #[test]
    fn a_long_host_password_outside_the_generated_alphabet_is_rotated_not_shown() {
        let hostile = "';touch /tmp/fsfleet-pwned;'xxxxxxxx";
        let f = HostFacts::with_conf(
            "/c",
            &[(
                "vars.xml",
                &format!("<X-PRE-PROCESS cmd=\"set\" data=\"default_password={hostile}\"/>\n"),
            )],
        );
        let (p, e) = plan(&f, &HardenOptions::default()).unwrap();
        assert_eq!(
            p.changes,
            [
                "rotate default_password in /c/vars.xml (was has characters fsfleet does not generate)"
            ]
        );
        assert!(!p.diffs[0].contains("touch"), "{}", p.diffs[0]);
        let (edit, pw) = e.unwrap();
        let new = String::from_utf8(edit.new).unwrap();
        assert_eq!(
            vars::get_var(&new, VAR).as_deref(),
            Some(pw.unwrap().expose())
        );
        // A long value of the generated alphabet is kept.
        let f = HostFacts::with_conf(
            "/c",
            &[(
                "vars.xml",
                "<X-PRE-PROCESS cmd=\"set\" data=\"default_password=abcdefghijklmnopq\"/>\n",
            )],
        );
        assert!(plan_noop(&f, false));
    }
}
