//! Production step `voicemail-pins`: every directory user whose voicemail PIN (`vm-password`)
//! is its own extension, the stock tree's 1000-1019 among them, gets a distinct generated PIN
//! (audit FS-SIP-05).
//!
//! Only the value of that `vm-password` param changes (one span edit per user, every other byte
//! kept), on top of what the steps before this one plan for the same file (the dialplan step
//! edits the same user files). The PINs are generated on the controller, go to the vault per
//! host and user as pending before the host sees them and become active once the run is
//! verified (`fsfleet creds show HOST --user ID`); a file that now holds a PIN is made readable
//! only by root and FreeSWITCH. Diffs show every credential value masked. A PIN the operator
//! set (anything but the extension) is never touched. FreeSWITCH reads it on `reloadxml`.

use super::step::{self, PlanInput};
use super::{HostFacts, Probes, StepError, StepPlan, reload};
use crate::conf::{diff, xml};
use crate::facts::FileFact;
use crate::inventory::Host;
use crate::model::HostModel;
use crate::secret::Secret;
use crate::vault::{self, UserCredKind};

pub const NAME: &str = "voicemail-pins";
/// Digits of a generated PIN: a phone keypad has no letters; 6 is what most voicemail systems
/// ask for at least, and one in a million per guess behind FreeSWITCH's login attempts limit.
pub const PIN_LEN: usize = 6;

/// The step in the registry: its edits go out in the config write, so `apply` has nothing left.
pub struct VoicemailPins;
step::config_step!(VoicemailPins, Production);

/// The directory files are config files, read for every run.
pub fn probes(_p: &mut Probes, _host: &Host) {}

pub fn step_plan(input: &PlanInput<'_>) -> Result<StepPlan, StepError> {
    plan(input, &mut || vault::generate_pin(PIN_LEN))
}

/// The directory files users are defined in: directory/default.xml, then directory/default/*.
fn user_files(f: &HostFacts) -> Vec<&FileFact> {
    let mut files: Vec<&FileFact> = f.files.conf("directory/default.xml").into_iter().collect();
    files.extend(f.files.conf_dir_files("directory/default", ".xml"));
    files
}

/// A PIN nobody guesses first: not the extension, not one digit repeated, not a run up or down.
fn guessable(pin: &str, user: &str) -> bool {
    let b = pin.as_bytes();
    let same = b.windows(2).all(|w| w[0] == w[1]);
    let up = b.windows(2).all(|w| w[1] == w[0] + 1);
    let down = b.windows(2).all(|w| w[0] == w[1] + 1);
    pin == user || same || up || down
}

/// The plan (pure but for `generate`, the PIN source: the OS RNG, or a fixed list in tests).
pub fn plan(
    input: &PlanInput<'_>,
    generate: &mut dyn FnMut() -> Secret,
) -> Result<StepPlan, StepError> {
    let f = input.facts;
    let model = HostModel::new(f);
    let vars = model.vars();
    let mut out = StepPlan::default();
    let mut used: Vec<Secret> = Vec::new();
    for file in user_files(f) {
        let refuse = || {
            StepError::Refused(format!(
                "{} is too large or not UTF-8 text; fsfleet will not edit it",
                file.path
            ))
        };
        let bytes = input.bytes_now(&file.path).ok_or_else(refuse)?;
        let text = std::str::from_utf8(bytes).map_err(|_| refuse())?;
        let tags = xml::scan(text).map_err(|source| StepError::Edit {
            path: file.path.clone(),
            source,
        })?;
        let mut user: Option<String> = None;
        let mut spans: Vec<(std::ops::Range<usize>, String, Secret)> = Vec::new();
        for t in &tags {
            match (t.name.as_str(), t.kind) {
                ("user", xml::TagKind::Start) => user = t.attr("id").map(|a| a.value.clone()),
                ("user", xml::TagKind::End) => user = None,
                ("param", xml::TagKind::Start | xml::TagKind::Empty)
                    if t.parent() == Some("params") =>
                {
                    let (Some(id), Some(n), Some(v)) =
                        (user.as_deref(), t.attr("name"), t.attr("value"))
                    else {
                        continue;
                    };
                    if n.value != "vm-password" || vars.expand_text(&v.value) != id {
                        continue;
                    }
                    let pin = loop {
                        let p = generate();
                        if !guessable(p.expose(), id) && !used.contains(&p) {
                            break p;
                        }
                    };
                    used.push(pin.clone());
                    spans.push((v.value_span.clone(), id.to_string(), pin));
                }
                _ => {}
            }
        }
        if spans.is_empty() {
            continue;
        }
        let mut new = text.to_string();
        for (span, _, pin) in spans.iter().rev() {
            new.replace_range(span.clone(), pin.expose());
        }
        for (_, id, _) in &spans {
            out.changes.push(format!(
                "give user {id} a distinct generated voicemail PIN in {} (was its extension) (FS-SIP-05)",
                file.path
            ));
        }
        // A PIN that is the extension is no secret: the diff shows it going, masked coming.
        let is_extension = |user: &str, name: &str, value: &str| {
            name == "vm-password" && vars.expand_text(value) == user
        };
        let fresh: Vec<&Secret> = spans.iter().map(|(_, _, pin)| pin).collect();
        out.diffs.push(diff::masked_diff(
            &file.path,
            &super::dialplan::mask_credentials_but(text, &is_extension),
            &super::dialplan::mask_credentials(&new),
            &fresh,
        ));
        out.edits
            .extend(input.edit(&file.path, new.into_bytes(), true)?);
        out.user_secrets.extend(
            spans
                .into_iter()
                .map(|(_, id, pin)| (id, UserCredKind::VmPassword, pin)),
        );
    }
    out.reload = reload::Needs::xml_for(&out.edits);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::evidence::testing as ev;
    use crate::audit::{Live, Status};

    fn facts(files: &[(String, String)]) -> HostFacts {
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        HostFacts::with_conf("/etc/freeswitch", &refs)
    }

    fn plan_with(
        f: &HostFacts,
        before: &[&StepPlan],
        generate: &mut dyn FnMut() -> Secret,
    ) -> StepPlan {
        let host = crate::harden::context::test_host("pbx1");
        let opts = crate::harden::HardenOptions::default();
        let pre = crate::harden::preflight::Preflight::from_config(f).unwrap();
        plan(
            &PlanInput {
                facts: f,
                host: &host,
                opts: &opts,
                pre: &pre,
                before,
            },
            generate,
        )
        .unwrap()
    }

    fn rng() -> impl FnMut() -> Secret {
        || vault::generate_pin(PIN_LEN)
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

    #[test]
    fn every_stock_user_gets_a_distinct_pin_in_the_vault_never_in_the_output() {
        let files = ev::stock_files();
        let sip05 = |files: &[(String, String)]| {
            ev::eval("FS-SIP-05", &ev::evidence(files, &[], Live::default()))
        };
        assert_eq!(sip05(&files).status, Status::Fail);
        let p = plan_with(&facts(&files), &[], &mut rng());
        assert_eq!(p.user_secrets.len(), 20);
        assert_eq!(p.changes.len(), 20);
        let mut pins: Vec<&str> = p.user_secrets.iter().map(|(_, _, s)| s.expose()).collect();
        pins.sort();
        pins.dedup();
        assert_eq!(pins.len(), 20, "distinct");
        let shown = format!("{:?} {:?} {:?}", p.changes, p.diffs, p.warnings);
        for (user, kind, pin) in &p.user_secrets {
            assert_eq!(*kind, UserCredKind::VmPassword);
            assert!(!guessable(pin.expose(), user) && pin.expose().len() == PIN_LEN);
            assert!(
                !shown.contains(pin.expose()),
                "PIN of {user} shown: {shown}"
            );
        }
        let d = &p.diffs[0];
        assert!(
            d.contains("-      <param name=\"vm-password\" value=\"1000\"/>")
                && d.contains("+      <param name=\"vm-password\" value=\"********\"/>"),
            "{d}"
        );
        // The files hold the vault's values, readable only by root and FreeSWITCH.
        let done = after(&files, &p);
        let now =
            crate::harden::context::user_credentials_in(&facts(&done), UserCredKind::VmPassword);
        for (user, _, pin) in &p.user_secrets {
            assert!(now.iter().any(|(u, v)| u == user && v == pin), "{user}");
        }
        assert!(p.edits.iter().all(|e| e.want.mode & 0o007 == 0));
        assert!(p.reload.reloadxml);
        let f = sip05(&done);
        assert_eq!(f.status, Status::Pass, "{:?}", f.evidence);
        // Second run: nothing.
        let again = plan_with(&facts(&done), &[], &mut rng());
        assert!(again.is_noop() && again.edits.is_empty() && again.user_secrets.is_empty());
    }

    #[test]
    fn an_operator_pin_and_a_variable_are_told_apart_and_guessable_pins_are_redrawn() {
        let mut files = ev::stock_files();
        ev::edit(&mut files, "directory/default/1003.xml", |t| {
            t.replace(
                "name=\"vm-password\" value=\"1003\"",
                "name=\"vm-password\" value=\"917364\"",
            )
        });
        // A variable that expands to the extension is still the extension.
        ev::edit(&mut files, "vars.xml", |t| {
            format!("{t}\n<X-PRE-PROCESS cmd=\"set\" data=\"pin1004=1004\"/>\n")
        });
        ev::edit(&mut files, "directory/default/1004.xml", |t| {
            t.replace(
                "value=\"1004\"/>\n    </params>",
                "value=\"$${pin1004}\"/>\n    </params>",
            )
        });
        // The source first offers guessable and repeated PINs.
        let mut offers = vec![
            "1000", "111111", "123456", "654321", "482913", "482913", "573021",
        ]
        .into_iter()
        .map(Secret::new)
        .collect::<Vec<_>>()
        .into_iter();
        let mut counter = 100000u32;
        let mut source = move || {
            offers.next().unwrap_or_else(|| {
                counter += 7919;
                Secret::new(format!("{counter:06}"))
            })
        };
        let p = plan_with(&facts(&files), &[], &mut source);
        let users: Vec<&str> = p.user_secrets.iter().map(|(u, _, _)| u.as_str()).collect();
        assert!(!users.contains(&"1003"), "the operator's PIN stays");
        assert!(users.contains(&"1004"));
        assert_eq!(users.len(), 19);
        let first: Vec<&str> = p
            .user_secrets
            .iter()
            .take(2)
            .map(|(_, _, s)| s.expose())
            .collect();
        assert_eq!(
            first,
            ["482913", "573021"],
            "guessable and repeated offers are skipped"
        );
        let done = after(&files, &p);
        let (_, f1003) = done
            .iter()
            .find(|(r, _)| r == "directory/default/1003.xml")
            .unwrap();
        assert!(f1003.contains("value=\"917364\""));
    }

    #[test]
    fn pins_go_on_top_of_the_dialplan_steps_edit_of_the_same_file() {
        let files = ev::stock_files();
        let f = facts(&files);
        let host = crate::harden::context::test_host("pbx1");
        let opts = crate::harden::HardenOptions::default();
        let pre = crate::harden::preflight::Preflight::from_config(&f).unwrap();
        let dp = crate::harden::dialplan::plan(&PlanInput {
            facts: &f,
            host: &host,
            opts: &opts,
            pre: &pre,
            before: &[],
        })
        .unwrap();
        let p = plan_with(&f, &[&dp], &mut rng());
        let edits = crate::harden::step::planned_edits([&dp, &p]);
        let path = "/etc/freeswitch/directory/default/1000.xml";
        let e: Vec<_> = edits.iter().filter(|e| e.path == path).collect();
        assert_eq!(e.len(), 1);
        let new = String::from_utf8(e[0].new.clone()).unwrap();
        assert!(
            new.contains("value=\"domestic,local\""),
            "the dialplan step's edit stays"
        );
        assert!(!new.contains("name=\"vm-password\" value=\"1000\""));
    }
}
