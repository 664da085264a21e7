//! Step `sip-password`: rotate `default_password` in vars.xml when it is the stock 1234 or weak.
//!
//! Only the value of the real X-PRE-PROCESS `set` line changes (FACTS §1); comments and every other
//! byte stay. The new password is generated on the controller and goes to the vault before the
//! file is written (the orchestrator does that).

use super::step::{self, PlanInput};
use super::{FileEdit, HardenOptions, HostFacts, Probes, StepError, StepPlan, reload};
use crate::conf::{self, diff, vars};
use crate::inventory::Host;
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
    let (mut outline, rotation) = plan(input.facts, input.opts)?;
    let (changes, dir_edits) = directory_modes(input.facts)?;
    outline.changes.extend(changes);
    outline.edits.extend(dir_edits);
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

/// The plan, the edit and the new password (edit None when nothing changes; password None
/// when only owner or mode change).
pub fn plan(
    f: &HostFacts,
    opts: &HardenOptions,
) -> Result<(StepPlan, Option<Rotation>), StepError> {
    let (path, text) = f.conf_text("vars.xml")?;
    let current = HostModel::new(f).default_password()?.ok_or_else(|| {
        StepError::Refused(format!(
            "{path} sets no {VAR}; add `<X-PRE-PROCESS cmd=\"set\" data=\"{VAR}=...\"/>` by hand"
        ))
    })?;
    let mut plan = StepPlan::default();
    let why = if let Some(why) = model::password_weakness(current.expose()) {
        Some(why.as_str())
    } else if opts.rotate {
        Some("--rotate")
    } else {
        None
    };
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
