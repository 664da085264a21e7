//! Step `auth-logging`: `log-auth-failures` true in every SIP profile FreeSWITCH loads, so the
//! fail2ban jail sees failed registrations (FACTS §4). Updated where present (any quoting), inserted
//! before `</settings>` where absent, never inside a comment; a profile the model reads as
//! logging already (any value FreeSWITCH takes as true) is left alone.

use super::step::{self, PlanInput};
use super::{FileEdit, HostFacts, Probes, StepError, StepPlan, reload};
use crate::conf::{self, diff, xml};
use crate::inventory::Host;
use crate::model::{self, HostModel};

pub const NAME: &str = "auth-logging";
const PARAM: &str = "log-auth-failures";

/// The step in the registry: its edits go out in the config write, so `apply` has nothing left.
pub struct AuthLogging;
step::config_step!(AuthLogging);

/// Every profile's edit and the rescans they need.
pub fn step_plan(input: &PlanInput<'_>) -> Result<StepPlan, StepError> {
    let p = plan(input.facts)?;
    let mut outline = p.plan;
    outline.reload = reload::Needs {
        rescan: p.rescan,
        ..reload::Needs::xml_for(&p.edits)
    };
    outline.edits = p.edits;
    Ok(outline)
}

/// The SIP profiles are config files, read for every run.
pub fn probes(_p: &mut Probes, _host: &Host) {}

pub struct Planned {
    pub plan: StepPlan,
    pub edits: Vec<FileEdit>,
    /// Profiles whose setting changes: each needs `sofia profile NAME rescan`.
    pub rescan: Vec<String>,
}

pub fn plan(f: &HostFacts) -> Result<Planned, StepError> {
    let profiles = f.files.conf_dir_files("sip_profiles", ".xml");
    if profiles.is_empty() {
        return Err(StepError::Refused(
            "no SIP profile found in sip_profiles/*.xml".into(),
        ));
    }
    let mut planned = Planned {
        plan: StepPlan::default(),
        edits: vec![],
        rescan: vec![],
    };
    // What FreeSWITCH reads: a value it takes as true (`yes`, `on`, a variable set to true...)
    // is left as it is, as the audit passes it.
    let model = HostModel::new(f);
    let loaded = model.sip_profiles().profiles;
    let logs = |path: &str| {
        let mut in_file = loaded.iter().filter(|p| p.file == path).peekable();
        in_file.peek().is_some()
            && in_file.all(|p| {
                p.log_auth_failures
                    .as_deref()
                    .is_some_and(|v| model::switch_true(&model.vars().expand_text(v)))
            })
    };
    for file in profiles {
        if logs(&file.path) {
            continue;
        }
        let text = file.text().ok_or_else(|| {
            StepError::Refused(format!(
                "{} is too large or not UTF-8 text; fsfleet will not edit it",
                file.path
            ))
        })?;
        let err = |source: conf::ConfError| StepError::Edit {
            path: file.path.clone(),
            source,
        };
        let name = conf::profile_name(text).map_err(err)?;
        let Some(out) = xml::set_param(text, PARAM, "true").map_err(err)? else {
            continue;
        };
        let name = name
            .ok_or_else(|| StepError::Refused(format!("{}: no <profile name=...>", file.path)))?;
        planned
            .plan
            .changes
            .push(format!("turn on {PARAM} in profile {name} ({})", file.path));
        planned
            .plan
            .diffs
            .push(diff::masked_diff(&file.path, text, &out, &[]));
        if let Some(edit) = f.edit(&file.path, out.into_bytes(), false)? {
            planned.edits.push(edit);
        }
        planned.rescan.push(name);
    }
    Ok(planned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_four_stock_profiles_are_turned_on_then_nothing() {
        let p = plan(&HostFacts::stock()).unwrap();
        let mut names = p.rescan.clone();
        names.sort();
        assert_eq!(
            names,
            vec!["external", "external-ipv6", "internal", "internal-ipv6"]
        );
        let files: Vec<(String, String)> = p
            .edits
            .iter()
            .map(|e| {
                (
                    e.path.trim_start_matches("/etc/freeswitch/").to_string(),
                    String::from_utf8(e.new.clone()).unwrap(),
                )
            })
            .collect();
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let again = plan(&HostFacts::with_conf("/etc/freeswitch", &refs)).unwrap();
        assert!(again.plan.is_noop() && again.edits.is_empty() && again.rescan.is_empty());
    }
}
