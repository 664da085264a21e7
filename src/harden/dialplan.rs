//! Production step `dialplan`: close the toll-fraud paths the stock dialplan ships with
//! (audit FS-DP-01, FS-DP-02, FS-DP-03).
//!
//! - the stock `sip_uri` extension of dialplan/default.xml (bridges any dialled `sip:` URI out)
//!   and the three example gateway extensions of dialplan/default/01_example.com.xml are
//!   commented out where they stand: one span edit per extension, every other byte kept;
//! - `international` leaves the toll_allow of the stock users 1000-1019 whose value is still
//!   the stock `domestic,international,local` (only that attribute value changes).
//!
//! An extension is stock when its text, whitespace aside, is the text FreeSWITCH 1.10.12 ships
//! (the constants below, checked against the reference tree by the unit tests): an extension
//! the operator wrote or changed, even under a stock name, is never touched; the plan warns
//! about it instead. FreeSWITCH reads the dialplan on `reloadxml`.

use super::step::{self, PlanInput};
use super::{Probes, StepError, StepPlan, reload};
use crate::audit::evidence::EXTRA_CONF_FILES;
use crate::conf::{self, diff, xml};
use crate::facts::FileFact;
use crate::inventory::Host;
use crate::model::HostModel;

pub const NAME: &str = "dialplan";

/// What the comment that disables a stock extension starts with: how a reader (and a later
/// run) recognises fsfleet's edit.
pub const MARK: &str = "<!-- fsfleet harden dialplan: stock extension disabled (toll fraud):";

/// The stock `sip_uri` extension of dialplan/default.xml (1.10.12).
const SIP_URI: &str = r#"<extension name="sip_uri">
      <condition field="destination_number" expression="^sip:(.*)$">
	<action application="bridge" data="sofia/${use_profile}/$1"/>
      </condition>
    </extension>"#;

const LOCAL_EXAMPLE: &str = r#"<extension name="local.example.com">
    <condition field="${toll_allow}" expression="local"/>
    <condition field="destination_number" expression="^(\d{7})$">
      <action application="set" data="effective_caller_id_number=${outbound_caller_id_number}"/>
      <action application="set" data="effective_caller_id_name=${outbound_caller_id_name}"/>
      <action application="bridge" data="sofia/gateway/${default_gateway}/1${default_areacode}$1"/>
    </condition>
  </extension>"#;

const DOMESTIC_EXAMPLE: &str = r#"<extension name="domestic.example.com">
    <condition field="${toll_allow}" expression="domestic"/>
    <condition field="destination_number" expression="^(\d{11})$">
      <action application="set" data="effective_caller_id_number=${outbound_caller_id_number}"/>
      <action application="set" data="effective_caller_id_name=${outbound_caller_id_name}"/>
      <action application="bridge" data="sofia/gateway/${default_gateway}/$1"/>
    </condition>
  </extension>"#;

const INTERNATIONAL_EXAMPLE: &str = r#"<extension name="international.example.com">
    <condition field="${toll_allow}" expression="international"/>
    <condition field="destination_number" expression="^(011\d+)$">
      <action application="set" data="effective_caller_id_number=${outbound_caller_id_number}"/>
      <action application="set" data="effective_caller_id_name=${outbound_caller_id_name}"/>
      <action application="bridge" data="sofia/gateway/${default_gateway}/$1"/>
    </condition>
  </extension>"#;

/// A stock extension this step disables: the file it ships in, its name, its stock text, and
/// the audit control it fails.
pub struct StockExtension {
    pub file: &'static str,
    pub name: &'static str,
    pub text: &'static str,
    pub control: &'static str,
}

pub const STOCK_EXTENSIONS: &[StockExtension] = &[
    StockExtension {
        file: "dialplan/default.xml",
        name: "sip_uri",
        text: SIP_URI,
        control: "FS-DP-01",
    },
    StockExtension {
        file: "dialplan/default/01_example.com.xml",
        name: "local.example.com",
        text: LOCAL_EXAMPLE,
        control: "FS-DP-02",
    },
    StockExtension {
        file: "dialplan/default/01_example.com.xml",
        name: "domestic.example.com",
        text: DOMESTIC_EXAMPLE,
        control: "FS-DP-02",
    },
    StockExtension {
        file: "dialplan/default/01_example.com.xml",
        name: "international.example.com",
        text: INTERNATIONAL_EXAMPLE,
        control: "FS-DP-02",
    },
];

/// The stock users' toll_allow, and what it becomes.
pub const STOCK_TOLL_ALLOW: &str = "domestic,international,local";
pub const TOLL_ALLOW_AFTER: &str = "domestic,local";

/// The step in the registry: its edits go out in the config write, so `apply` has nothing left.
pub struct Dialplan;
step::config_step!(Dialplan, Production);

/// dialplan/default.xml and the directory are config files; the files of dialplan/default/
/// are read with them, as the audit reads them.
pub fn probes(p: &mut Probes, _host: &Host) {
    p.conf_files(EXTRA_CONF_FILES);
}

pub fn step_plan(input: &PlanInput<'_>) -> Result<StepPlan, StepError> {
    plan(input)
}

/// Every edit of the step (pure), on top of the edits of the steps before it.
pub fn plan(input: &PlanInput<'_>) -> Result<StepPlan, StepError> {
    let f = input.facts;
    let mut out = StepPlan::default();
    let mut files: Vec<&str> = STOCK_EXTENSIONS.iter().map(|s| s.file).collect();
    files.dedup();
    for rel in files {
        let Some(file) = f.files.conf(rel) else {
            continue;
        };
        let text = text_now(input, file)?;
        let wanted: Vec<&StockExtension> =
            STOCK_EXTENSIONS.iter().filter(|s| s.file == rel).collect();
        let d = disable_extensions(text, &wanted).map_err(|source| StepError::Edit {
            path: file.path.clone(),
            source,
        })?;
        out.warnings
            .extend(d.kept.iter().map(|why| format!("{}: {why}", file.path)));
        if d.disabled.is_empty() {
            continue;
        }
        for (name, control) in &d.disabled {
            out.changes.push(format!(
                "disable stock extension {name} in {} ({control})",
                file.path
            ));
        }
        out.diffs
            .push(diff::masked_diff(&file.path, text, &d.text, &[]));
        out.edits
            .extend(input.edit(&file.path, d.text.into_bytes(), false)?);
    }
    toll_allow(input, &mut out)?;
    out.reload = reload::Needs::xml_for(&out.edits);
    Ok(out)
}

/// A file's text as the steps before this one leave it.
fn text_now<'a>(input: &'a PlanInput<'_>, file: &FileFact) -> Result<&'a str, StepError> {
    let refuse = || {
        StepError::Refused(format!(
            "{} is too large or not UTF-8 text; fsfleet will not edit it",
            file.path
        ))
    };
    let bytes = input.bytes_now(&file.path).ok_or_else(refuse)?;
    std::str::from_utf8(bytes).map_err(|_| refuse())
}

/// The text with the stock extensions commented out, which it disabled (name, control), and
/// why it left an extension of a stock name alone.
#[derive(Debug, Default, PartialEq)]
pub struct Disabled {
    pub text: String,
    pub disabled: Vec<(String, &'static str)>,
    pub kept: Vec<String>,
}

/// Whitespace aside: an indentation, tab or CRLF change is still the stock extension.
fn same_text(a: &str, b: &str) -> bool {
    a.split_whitespace().eq(b.split_whitespace())
}

/// Comment out each live extension named in `wanted` whose text is the stock one.
pub fn disable_extensions(
    text: &str,
    wanted: &[&StockExtension],
) -> Result<Disabled, conf::ConfError> {
    let tags = xml::scan(text)?;
    let mut spans: Vec<(std::ops::Range<usize>, &StockExtension)> = Vec::new();
    let mut kept = Vec::new();
    for (i, t) in tags.iter().enumerate() {
        if t.name != "extension" || t.kind != xml::TagKind::Start {
            continue;
        }
        let Some(stock) = t
            .attr("name")
            .and_then(|n| wanted.iter().find(|s| s.name == n.value))
        else {
            continue;
        };
        // The scanner checked nesting: the first `</extension>` at the same depth closes it.
        let Some(end) = tags[i + 1..].iter().find(|e| {
            e.name == "extension" && e.kind == xml::TagKind::End && e.parents == t.parents
        }) else {
            continue;
        };
        let span = t.span.start..end.span.end;
        let body = &text[span.clone()];
        // `--` cannot sit inside an XML comment; no stock extension holds one.
        if same_text(body, stock.text) && !body.contains("--") {
            spans.push((span, stock));
        } else {
            kept.push(format!(
                "extension {} differs from the stock one: written by the operator, left alone \
                 ({} may still fail; review it)",
                stock.name, stock.control
            ));
        }
    }
    let mut out = text.to_string();
    for (span, stock) in spans.iter().rev() {
        let body = &text[span.clone()];
        // The extension keeps its line and indentation under the comment's opening line.
        let line_start = text[..span.start].rfind('\n').map_or(0, |p| p + 1);
        let indent = &text[line_start..span.start];
        let indent = if indent.chars().all(|c| c == ' ' || c == '\t') {
            indent
        } else {
            ""
        };
        out.replace_range(
            span.clone(),
            &format!("{MARK} {}\n{indent}{body} -->", stock.control),
        );
    }
    Ok(Disabled {
        text: out,
        disabled: spans
            .iter()
            .map(|(_, s)| (s.name.to_string(), s.control))
            .collect(),
        kept,
    })
}

/// Whether a user id is one of the stock users 1000-1019.
fn stock_user(id: &str) -> bool {
    id.len() == 4 && id.parse::<u32>().is_ok_and(|n| (1000..=1019).contains(&n))
}

/// `international` out of the stock users' stock toll_allow; users the operator gave
/// `international` are named, not changed.
fn toll_allow(input: &PlanInput<'_>, out: &mut StepPlan) -> Result<(), StepError> {
    let f = input.facts;
    let mut changed_users: Vec<String> = Vec::new();
    for file in f.files.conf_dir_files("directory/default", ".xml") {
        let text = text_now(input, file)?;
        let err = |source| StepError::Edit {
            path: file.path.clone(),
            source,
        };
        let Some((new, users)) = strip_international(text).map_err(err)? else {
            continue;
        };
        for u in &users {
            out.changes.push(format!(
                "remove international from user {u}'s toll_allow in {} (FS-DP-03)",
                file.path
            ));
        }
        changed_users.extend(users);
        out.diffs.push(diff::masked_diff(
            &file.path,
            &mask_credentials(text),
            &mask_credentials(&new),
            &[],
        ));
        out.edits
            .extend(input.edit(&file.path, new.into_bytes(), false)?);
    }
    let model = HostModel::new(f);
    if let Ok(users) = model.directory_users() {
        for u in users {
            let intl = u.toll_allow.as_deref().is_some_and(|t| {
                model
                    .vars()
                    .expand_text(t)
                    .split(',')
                    .any(|w| w.trim() == "international")
            });
            if intl && !changed_users.contains(&u.id) {
                out.warnings.push(format!(
                    "user {} ({}) has international in a toll_allow the operator wrote: left \
                     alone (FS-DP-03 still fails; remove it if the user does not need it)",
                    u.id, u.file
                ));
            }
        }
    }
    Ok(())
}

/// The file with `international` out of each stock user's stock toll_allow, and those users
/// (None: nothing to change).
pub fn strip_international(text: &str) -> Result<Option<(String, Vec<String>)>, conf::ConfError> {
    let tags = xml::scan(text)?;
    let mut user: Option<String> = None;
    let mut spans = Vec::new();
    let mut users = Vec::new();
    for t in &tags {
        match (t.name.as_str(), t.kind) {
            ("user", xml::TagKind::Start) => user = t.attr("id").map(|a| a.value.clone()),
            ("user", xml::TagKind::End) => user = None,
            ("variable", xml::TagKind::Start | xml::TagKind::Empty)
                if t.parent() == Some("variables") =>
            {
                let (Some(id), Some(n), Some(v)) =
                    (user.as_deref(), t.attr("name"), t.attr("value"))
                else {
                    continue;
                };
                if n.value == "toll_allow" && stock_user(id) && v.value == STOCK_TOLL_ALLOW {
                    spans.push(v.value_span.clone());
                    if !users.iter().any(|u| u == id) {
                        users.push(id.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    if spans.is_empty() {
        return Ok(None);
    }
    let mut out = text.to_string();
    for s in spans.iter().rev() {
        out.replace_range(s.clone(), TOLL_ALLOW_AFTER);
    }
    Ok(Some((out, users)))
}

/// The text with the value of every credential param (`password`, `a1-hash`, `vm-password`)
/// replaced by the mask, for a diff that must not show them: the spans come from the scanner,
/// so only those values change.
pub fn mask_credentials(text: &str) -> String {
    mask_credentials_but(text, &|_, _, _| false)
}

/// [`mask_credentials`], leaving visible the values `reveal(user id, param, value)` says are
/// no secret (a voicemail PIN that is the extension itself).
pub fn mask_credentials_but(text: &str, reveal: &dyn Fn(&str, &str, &str) -> bool) -> String {
    let Ok(tags) = xml::scan(text) else {
        // Not scannable: nothing of it is shown.
        return diff::MASK.to_string();
    };
    let mut user = String::new();
    let mut spans: Vec<std::ops::Range<usize>> = Vec::new();
    for t in &tags {
        match (t.name.as_str(), t.kind) {
            ("user", xml::TagKind::Start) => {
                user = t.attr("id").map(|a| a.value.clone()).unwrap_or_default()
            }
            ("user", xml::TagKind::End) => user.clear(),
            ("param", _) => {
                let (Some(n), Some(v)) = (t.attr("name"), t.attr("value")) else {
                    continue;
                };
                if matches!(n.value.as_str(), "password" | "a1-hash" | "vm-password")
                    && !reveal(&user, &n.value, &v.value)
                {
                    spans.push(v.value_span.clone());
                }
            }
            _ => {}
        }
    }
    let mut out = text.to_string();
    for s in spans.iter().rev() {
        out.replace_range(s.clone(), diff::MASK);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::evidence::testing as ev;
    use crate::audit::{Live, Status};
    use crate::harden::HostFacts;

    const REF: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/reference/freeswitch-conf-1.10.12"
    );

    fn stock_text(rel: &str) -> String {
        std::fs::read_to_string(format!("{REF}/{rel}")).unwrap()
    }

    /// The stock files this step reads, as (relative path, text).
    fn stock_files() -> Vec<(String, String)> {
        ev::stock_files()
    }

    /// The step's plan on these facts, first in the run.
    fn plan_of(f: &HostFacts) -> Result<StepPlan, StepError> {
        let host = crate::harden::context::test_host("pbx1");
        let opts = crate::harden::HardenOptions::default();
        let pre = crate::harden::preflight::Preflight::from_config(f)?;
        plan(&PlanInput {
            facts: f,
            host: &host,
            opts: &opts,
            pre: &pre,
            before: &[],
        })
    }

    fn facts(files: &[(String, String)]) -> HostFacts {
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        HostFacts::with_conf("/etc/freeswitch", &refs)
    }

    /// The files once the plan's edits are written.
    fn after(files: &[(String, String)], plan: &StepPlan) -> Vec<(String, String)> {
        let mut out = files.to_vec();
        for e in &plan.edits {
            let rel = e.path.trim_start_matches("/etc/freeswitch/");
            let new = String::from_utf8(e.new.clone()).unwrap();
            match out.iter_mut().find(|(r, _)| r == rel) {
                Some(slot) => slot.1 = new,
                None => panic!("edit of a file not read: {rel}"),
            }
        }
        out
    }

    fn audit(files: &[(String, String)], id: &str) -> crate::audit::Finding {
        ev::eval(id, &ev::evidence(files, &[], Live::default()))
    }

    #[test]
    fn the_stock_texts_are_the_reference_trees() {
        for s in STOCK_EXTENSIONS {
            let text = stock_text(s.file);
            assert!(text.contains(s.text), "{} is not byte-exact stock", s.name);
        }
        let u = stock_text("directory/default/1000.xml");
        assert!(u.contains(&format!("value=\"{STOCK_TOLL_ALLOW}\"")));
    }

    #[test]
    fn on_the_stock_tree_the_three_dialplan_controls_pass_after_and_a_second_run_is_a_noop() {
        let files = stock_files();
        for id in ["FS-DP-01", "FS-DP-02", "FS-DP-03"] {
            assert_eq!(
                audit(&files, id).status,
                Status::Fail,
                "{id} fails on stock"
            );
        }
        let p = plan_of(&facts(&files)).unwrap();
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        assert!(p.reload.reloadxml);
        // One change line per extension and per user, all named.
        assert!(p.changes.contains(
            &"disable stock extension sip_uri in /etc/freeswitch/dialplan/default.xml (FS-DP-01)"
                .to_string()
        ));
        assert_eq!(
            p.changes
                .iter()
                .filter(|c| c.contains("example.com in"))
                .count(),
            3
        );
        assert_eq!(
            p.changes
                .iter()
                .filter(|c| c.starts_with("remove international from user"))
                .count(),
            20
        );
        // 2 dialplan files + 20 users.
        assert_eq!(p.edits.len(), 22);
        let done = after(&files, &p);
        for id in ["FS-DP-01", "FS-DP-02", "FS-DP-03"] {
            let f = audit(&done, id);
            assert_eq!(f.status, Status::Pass, "{id}: {:?}", f.evidence);
        }
        // Span edits: every byte outside the disabled extensions is kept.
        let (_, old) = files
            .iter()
            .find(|(r, _)| r == "dialplan/default.xml")
            .unwrap();
        let (_, new) = done
            .iter()
            .find(|(r, _)| r == "dialplan/default.xml")
            .unwrap();
        let i = old.find(SIP_URI).unwrap();
        assert_eq!(&new[..i], &old[..i]);
        assert!(new[i..].starts_with(MARK));
        assert!(new.ends_with(&old[i + SIP_URI.len()..]));
        assert!(xml::scan(new).is_ok(), "still well-formed");
        let again = plan_of(&facts(&done)).unwrap();
        assert!(
            again.is_noop() && again.edits.is_empty() && again.warnings.is_empty(),
            "{:?}",
            again.changes
        );
    }

    #[test]
    fn operator_written_extensions_and_toll_allow_are_never_touched() {
        let mut files = stock_files();
        ev::edit(&mut files, "dialplan/default.xml", |t| {
            // Same name, the operator's own target.
            t.replace(
                "sofia/${use_profile}/$1",
                "sofia/internal/$1@pbx.example.net",
            )
        });
        ev::edit(&mut files, "dialplan/default/01_example.com.xml", |t| {
            t.replace("${default_gateway}/$1\"/>\n    </condition>\n  </extension>\n\n  <extension name=\"international", "carrier1/$1\"/>\n    </condition>\n  </extension>\n\n  <extension name=\"international")
        });
        // Re-indented (tabs, CRLF) stock text is still stock.
        ev::edit(&mut files, "dialplan/default/01_example.com.xml", |t| {
            t.replace(
                "\n    <condition field=\"${toll_allow}\" expression=\"local\"/>",
                "\r\n\t\t<condition field=\"${toll_allow}\" expression=\"local\"/>",
            )
        });
        ev::edit(&mut files, "directory/default/1005.xml", |t| {
            t.replace(STOCK_TOLL_ALLOW, "international,local")
        });
        // An operator extension with another name is not looked at.
        ev::edit(&mut files, "dialplan/default.xml", |t| {
            t.replace(
                "<extension name=\"vmain\">",
                "<extension name=\"my_uri\">\n      <condition field=\"destination_number\" expression=\"^sip:(.*)$\">\n\t<action application=\"bridge\" data=\"sofia/${use_profile}/$1\"/>\n      </condition>\n    </extension>\n    <extension name=\"vmain\">",
            )
        });
        let p = plan_of(&facts(&files)).unwrap();
        assert!(
            !p.changes.iter().any(|c| c.contains("sip_uri")),
            "{:?}",
            p.changes
        );
        assert!(!p.changes.iter().any(|c| c.contains("domestic.example.com")));
        assert!(p.changes.iter().any(|c| c.contains("local.example.com")));
        assert!(
            p.changes
                .iter()
                .any(|c| c.contains("international.example.com"))
        );
        assert!(!p.changes.iter().any(|c| c.contains("user 1005")));
        assert_eq!(
            p.changes
                .iter()
                .filter(|c| c.starts_with("remove international"))
                .count(),
            19
        );
        let w = p.warnings.join("\n");
        assert!(
            w.contains("extension sip_uri differs from the stock one"),
            "{w}"
        );
        assert!(w.contains("extension domestic.example.com differs"), "{w}");
        assert!(w.contains("user 1005"), "{w}");
        let done = after(&files, &p);
        let (_, dp) = done
            .iter()
            .find(|(r, _)| r == "dialplan/default.xml")
            .unwrap();
        assert!(dp.contains("sofia/internal/$1@pbx.example.net") && dp.contains("my_uri"));
        assert!(!dp.contains(MARK), "default.xml is not edited");
        // Still failing: the operator's own routes are the operator's to review.
        assert_eq!(audit(&done, "FS-DP-01").status, Status::Fail);
        assert_eq!(audit(&done, "FS-DP-03").status, Status::Fail);
        // And the second run changes nothing more.
        assert!(plan_of(&facts(&done)).unwrap().is_noop());
    }

    #[test]
    fn directory_diffs_never_show_a_credential() {
        let mut files = stock_files();
        ev::edit(&mut files, "directory/default/1001.xml", |t| {
            t.replace("$${default_password}", "Lit3ralSecretXyz")
                .replace(
                    "value=\"1001\"/>\n    </params>",
                    "value=\"4242\"/>\n    </params>",
                )
        });
        let p = plan_of(&facts(&files)).unwrap();
        let all = p.diffs.join("\n");
        assert!(
            all.contains(
                "-      <variable name=\"toll_allow\" value=\"domestic,international,local\"/>"
            ),
            "{all}"
        );
        assert!(
            !all.contains("Lit3ralSecretXyz") && !all.contains("4242"),
            "{all}"
        );
        assert!(
            all.contains("name=\"vm-password\" value=\"********\""),
            "{all}"
        );
        // The password line is masked too, wherever a diff's context reaches it.
        let masked = mask_credentials(
            &files
                .iter()
                .find(|(r, _)| r == "directory/default/1001.xml")
                .unwrap()
                .1,
        );
        assert!(
            masked.contains("name=\"password\" value=\"********\"") && !masked.contains("Lit3ral")
        );
    }

    #[test]
    fn an_edit_of_a_file_an_earlier_step_edits_is_built_on_it() {
        // sip-password makes a world-readable user file with a literal password 0640; this
        // step then changes its toll_allow: one write, with both.
        let mut files = stock_files();
        ev::edit(&mut files, "directory/default/1001.xml", |t| {
            t.replace("$${default_password}", "Lit3ralSecretXyz")
        });
        let mut f = facts(&files);
        let path = "/etc/freeswitch/directory/default/1001.xml";
        f.files.files.get_mut(path).unwrap().mode = 0o644;
        let host = crate::harden::context::test_host("pbx1");
        let plans = crate::harden::step::plan_model_only(
            &f,
            &host,
            &crate::harden::HardenOptions::default(),
        );
        let ok: Vec<&StepPlan> = plans.iter().filter_map(|(_, p)| p.as_ref().ok()).collect();
        let of_path: Vec<_> = ok
            .iter()
            .flat_map(|p| p.edits.iter())
            .filter(|e| e.path == path)
            .collect();
        assert_eq!(
            of_path.len(),
            3,
            "sip-password's, dialplan's and voicemail-pins'"
        );
        let edits = crate::harden::step::planned_edits(ok.iter().copied());
        let mine: Vec<_> = edits.iter().filter(|e| e.path == path).collect();
        assert_eq!(mine.len(), 1, "written once");
        let e = mine[0];
        assert_eq!(e.want.mode, 0o640, "the mode fix stays");
        assert_eq!(e.was.mode, 0o644);
        let new = String::from_utf8(e.new.clone()).unwrap();
        assert!(new.contains("value=\"domestic,local\"") && new.contains("Lit3ralSecretXyz"));
        assert!(
            !new.contains("name=\"vm-password\" value=\"1001\""),
            "the PIN changed too"
        );
        assert_eq!(
            e.old,
            files
                .iter()
                .find(|(r, _)| r == "directory/default/1001.xml")
                .unwrap()
                .1
                .as_bytes()
        );
    }

    #[test]
    fn a_host_without_the_example_file_or_users_plans_what_is_there() {
        let files: Vec<(String, String)> = stock_files()
            .into_iter()
            .filter(|(r, _)| {
                !r.starts_with("dialplan/default/") && !r.starts_with("directory/default/")
            })
            .collect();
        let p = plan_of(&facts(&files)).unwrap();
        assert_eq!(p.changes.len(), 1, "{:?}", p.changes);
        assert_eq!(p.edits.len(), 1);
    }

    #[test]
    fn a_malformed_dialplan_is_refused_naming_the_file() {
        let mut files = stock_files();
        ev::edit(&mut files, "dialplan/default.xml", |t| {
            t.replace("</include>", "")
        });
        let e = plan_of(&facts(&files)).unwrap_err().to_string();
        assert!(
            e.starts_with("/etc/freeswitch/dialplan/default.xml:"),
            "{e}"
        );
    }
}
