//! Production step `sip-protocol`: on every SIP profile that serves registered phones (its
//! `auth-calls` is true), the requests besides INVITE and REGISTER that FreeSWITCH can be told
//! to challenge are challenged too: `auth-messages` (SIP MESSAGE, CVE-2021-37624) and
//! `auth-subscriptions` (SUBSCRIBE) set to true. Both are mod_sofia profile params of
//! FreeSWITCH 1.10.x (sofia.c `config_sofia`: `PFLAG_AUTH_MESSAGES`, `PFLAG_AUTH_SUBSCRIPTIONS`;
//! see docs/production.md). A trunk-facing profile (`auth-calls` false, the stock `external`)
//! is left alone and named: a carrier sending MESSAGE cannot answer a challenge.
//!
//! Each param is updated where present or inserted before `</settings>` (span edit, on top of
//! what `auth-logging` plans for the same file); a value FreeSWITCH already takes as true is
//! left. Each changed profile gets `sofia profile NAME rescan`.

use super::step::{self, PlanInput};
use super::{Probes, StepError, StepPlan, reload};
use crate::conf::{self, diff, xml};
use crate::inventory::Host;
use crate::model::{self, HostModel};

pub const NAME: &str = "sip-protocol";
/// The params set to true, each with what it stops.
pub const PARAMS: &[(&str, &str)] = &[
    ("auth-messages", "unauthenticated SIP MESSAGE"),
    ("auth-subscriptions", "unauthenticated SUBSCRIBE"),
];

/// The step in the registry: its edits go out in the config write, so `apply` has nothing left.
pub struct SipProtocol;
step::config_step!(SipProtocol, Production);

/// The SIP profiles are config files, read for every run.
pub fn probes(_p: &mut Probes, _host: &Host) {}

pub fn step_plan(input: &PlanInput<'_>) -> Result<StepPlan, StepError> {
    plan(input)
}

/// The plan (pure), on top of the edits of the steps before it.
pub fn plan(input: &PlanInput<'_>) -> Result<StepPlan, StepError> {
    let f = input.facts;
    let model = HostModel::new(f);
    let truthy = |v: &Option<String>| v.as_deref().is_some_and(model::switch_true);
    let auth_calls = model.profile_param("auth-calls");
    let current: Vec<_> = PARAMS.iter().map(|(p, _)| model.profile_param(p)).collect();
    let mut out = StepPlan::default();
    let mut rescan = Vec::new();
    for file in f.files.conf_dir_files("sip_profiles", ".xml") {
        let in_file: Vec<_> = auth_calls
            .profiles
            .iter()
            .filter(|p| p.file == file.path)
            .collect();
        // One profile per file, as FreeSWITCH ships them; a file with several is the
        // operator's layout, left alone.
        let [profile] = in_file.as_slice() else {
            if in_file.len() > 1 {
                out.warnings.push(format!(
                    "{} defines {} profiles: fsfleet edits one profile per file, set {} by hand",
                    file.path,
                    in_file.len(),
                    PARAMS
                        .iter()
                        .map(|(p, _)| *p)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            continue;
        };
        let name = crate::display::line(&profile.name).into_owned();
        if !truthy(&profile.value) {
            out.warnings.push(format!(
                "profile {name} ({}) does not authenticate calls (auth-calls is not true): \
                 trunk-facing, so fsfleet leaves its MESSAGE and SUBSCRIBE handling alone",
                file.path
            ));
            continue;
        }
        let text = input
            .bytes_now(&file.path)
            .and_then(|b| std::str::from_utf8(b).ok())
            .ok_or_else(|| {
                StepError::Refused(format!(
                    "{} is too large or not UTF-8 text; fsfleet will not edit it",
                    file.path
                ))
            })?;
        let err = |source: conf::ConfError| StepError::Edit {
            path: file.path.clone(),
            source,
        };
        let mut new = text.to_string();
        let mut set = Vec::new();
        for ((param, stops), now) in PARAMS.iter().zip(&current) {
            let on = now
                .profiles
                .iter()
                .any(|p| p.file == file.path && truthy(&p.value));
            if on {
                continue;
            }
            if let Some(next) = xml::set_param(&new, param, "true").map_err(err)? {
                new = next;
                set.push(format!("{param} (stops {stops})"));
            }
        }
        if set.is_empty() {
            continue;
        }
        out.changes.push(format!(
            "turn on {} in profile {name} ({})",
            set.join(", "),
            file.path
        ));
        out.diffs
            .push(diff::masked_diff(&file.path, text, &new, &[]));
        out.edits
            .extend(input.edit(&file.path, new.into_bytes(), false)?);
        rescan.push(profile.name.clone());
    }
    out.reload = reload::Needs {
        rescan: rescan
            .into_iter()
            .filter(|n| model::registrations::plain_profile_name(n))
            .collect(),
        ..reload::Needs::xml_for(&out.edits)
    };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::evidence::testing as ev;
    use crate::harden::{HardenOptions, HostFacts};

    fn facts(files: &[(String, String)]) -> HostFacts {
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        HostFacts::with_conf("/etc/freeswitch", &refs)
    }

    fn plan_of(files: &[(String, String)]) -> StepPlan {
        let f = facts(files);
        let host = crate::harden::context::test_host("pbx1");
        let opts = HardenOptions::default();
        let pre = crate::harden::preflight::Preflight::from_config(&f).unwrap();
        plan(&PlanInput {
            facts: &f,
            host: &host,
            opts: &opts,
            pre: &pre,
            before: &[],
        })
        .unwrap()
    }

    fn after(files: &[(String, String)], p: &StepPlan) -> Vec<(String, String)> {
        let mut out = files.to_vec();
        for e in &p.edits {
            let rel = e.path.trim_start_matches("/etc/freeswitch/");
            out.iter_mut().find(|(r, _)| r == rel).unwrap().1 =
                String::from_utf8(e.new.clone()).unwrap();
        }
        out
    }

    fn value(files: &[(String, String)], param: &str, profile: &str) -> Option<String> {
        let f = facts(files);
        HostModel::new(&f)
            .profile_param(param)
            .profiles
            .into_iter()
            .find(|p| p.name == profile)
            .and_then(|p| p.value)
    }

    #[test]
    fn the_phone_profiles_challenge_message_and_subscribe_then_nothing() {
        let files = ev::stock_files();
        let p = plan_of(&files);
        let mut rescan = p.reload.rescan.clone();
        rescan.sort();
        assert_eq!(rescan, ["internal", "internal-ipv6"]);
        assert!(p.reload.reloadxml);
        // The stock internal profile has auth-subscriptions already: only auth-messages.
        assert!(
            p.changes.iter().any(|c| c
                == "turn on auth-messages (stops unauthenticated SIP MESSAGE) in profile internal (/etc/freeswitch/sip_profiles/internal.xml)"),
            "{:?}",
            p.changes
        );
        assert!(
            p.warnings
                .iter()
                .any(|w| w.starts_with("profile external (") && w.contains("trunk-facing")),
            "{:?}",
            p.warnings
        );
        let done = after(&files, &p);
        for profile in ["internal", "internal-ipv6"] {
            for (param, _) in PARAMS {
                assert_eq!(
                    value(&done, param, profile).as_deref(),
                    Some("true"),
                    "{profile} {param}"
                );
            }
        }
        assert_eq!(value(&done, "auth-messages", "external"), None);
        // Span edits: every other line of internal.xml stays.
        let (old, new) = (
            &files
                .iter()
                .find(|(r, _)| r == "sip_profiles/internal.xml")
                .unwrap()
                .1,
            &done
                .iter()
                .find(|(r, _)| r == "sip_profiles/internal.xml")
                .unwrap()
                .1,
        );
        let removed: Vec<&str> = old
            .lines()
            .filter(|l| !new.lines().any(|n| n == *l))
            .collect();
        assert!(removed.is_empty(), "{removed:?}");
        assert_eq!(new.lines().count(), old.lines().count() + 1);
        let again = plan_of(&done);
        assert!(again.is_noop() && again.edits.is_empty() && again.reload.rescan.is_empty());
    }

    #[test]
    fn an_operators_false_is_turned_on_and_true_values_are_left() {
        let mut files = ev::stock_files();
        ev::edit(&mut files, "sip_profiles/internal.xml", |t| {
            t.replace(
                "<param name=\"auth-subscriptions\" value=\"true\"/>",
                "<param name=\"auth-subscriptions\" value=\"false\"/>\n    <param name=\"auth-messages\" value=\"yes\"/>",
            )
        });
        let p = plan_of(&files);
        assert!(
            p.changes.iter().any(|c| c.starts_with(
                "turn on auth-subscriptions (stops unauthenticated SUBSCRIBE) in profile internal "
            )),
            "{:?}",
            p.changes
        );
        let done = after(&files, &p);
        assert_eq!(
            value(&done, "auth-subscriptions", "internal").as_deref(),
            Some("true")
        );
        assert_eq!(
            value(&done, "auth-messages", "internal").as_deref(),
            Some("yes"),
            "a true value of the operator's stays as written"
        );
    }
}
