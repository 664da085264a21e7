//! Production step `remove-stock-users`: the example users FreeSWITCH ships (1000-1019, `brian`,
//! `default`) are disabled (audit FS-SIP-03), except those the inventory's `keep_users` names.
//!
//! A user is stock only when its file directory/default/ID.xml is the file FreeSWITCH 1.10.12
//! ships byte for byte, but for what fsfleet's own production steps change in it (the
//! `password` now a generated one, the voicemail PIN, `international` out of toll_allow): an
//! operator's edit makes it the operator's user, left alone and named. Disabling replaces the
//! file's content with a comment that says so: FreeSWITCH still includes every
//! directory/default/*.xml and finds no user there; the backup keeps the stock file, and
//! putting it back restores the user. A user registered right now, or one a live dialplan
//! action routes to (`user/1000`, `1000@`, `transfer 1000 ...`; the stock example DID's
//! transfer to 1000 aside), is kept and named unless `--remove-in-use`. FreeSWITCH reads the
//! directory on `reloadxml`.

use super::step::{self, PlanInput};
use super::{HostFacts, Probes, StepError, StepPlan, reload};
use crate::audit::evidence::EXTRA_CONF_FILES;
use crate::conf::{diff, xml};
use crate::facts::FileFact;
use crate::inventory::Host;

pub const NAME: &str = "remove-stock-users";
/// How a disabled user's file starts its comment.
pub const MARK: &str = "<!-- fsfleet harden remove-stock-users:";

const STOCK_1000: &str = include_str!("../../assets/stock/directory/default/1000.xml");
const STOCK_BRIAN: &str = include_str!("../../assets/stock/directory/default/brian.xml");
const STOCK_DEFAULT: &str = include_str!("../../assets/stock/directory/default/default.xml");

/// The stock example DID (dialplan/public/00_inbound_did.xml) transfers to 1000: part of the
/// example, not a reason to keep the example user.
const PUBLIC_DID: &str = r#"<extension name="public_did">
    <condition field="destination_number" expression="^(5551212)$">
      <action application="set" data="domain_name=$${domain}"/>
      <action application="transfer" data="1000 XML default"/>
    </condition>
  </extension>"#;

/// The stock users, in the order the step looks at them.
pub fn stock_ids() -> Vec<String> {
    let mut ids: Vec<String> = (1000..=1019).map(|n| n.to_string()).collect();
    ids.extend(["brian".to_string(), "default".to_string()]);
    ids
}

/// The file FreeSWITCH 1.10.12 ships for a stock user (the 20 numbered ones differ only by id).
pub fn stock_text(id: &str) -> Option<String> {
    match id {
        "brian" => Some(STOCK_BRIAN.to_string()),
        "default" => Some(STOCK_DEFAULT.to_string()),
        _ if id.len() == 4 && id.parse::<u32>().is_ok_and(|n| (1000..=1019).contains(&n)) => {
            Some(STOCK_1000.replace("1000", id))
        }
        _ => None,
    }
}

/// What a disabled user's file holds.
pub fn disabled_text(id: &str) -> String {
    format!(
        "<include>\n  {MARK} the stock user {id} is disabled (FS-SIP-03).\n       \
         The stock file is in the backup of the run that disabled it\n       \
         (/var/backups/fsfleet/RUN/files/...): put it back and `fs_cli -x reloadxml` to restore \
         the user. -->\n</include>\n"
    )
}

/// The step in the registry: its edits go out in the config write, so `apply` has nothing left.
pub struct RemoveStockUsers;
step::config_step!(RemoveStockUsers, Production);

/// The directory and dialplan/*.xml are config files; dialplan/default/ and dialplan/public/
/// are read with them, as the audit reads them.
pub fn probes(p: &mut Probes, _host: &Host) {
    p.conf_files(EXTRA_CONF_FILES);
}

pub fn step_plan(input: &PlanInput<'_>) -> Result<StepPlan, StepError> {
    plan(input)
}

/// Whether the host's directory still holds a stock user's file that is not disabled
/// (preflight then asks FreeSWITCH who is registered).
pub fn any_stock_user(f: &HostFacts) -> bool {
    stock_ids().iter().any(|id| {
        f.files
            .conf(&format!("directory/default/{id}.xml"))
            .and_then(|file| file.text())
            .is_some_and(|t| t != disabled_text(id))
    })
}

/// `text` with the values fsfleet's own steps change replaced by `*`: a password that is
/// `$${default_password}` or one fsfleet generates, a PIN that is the extension or 6 digits, a
/// toll_allow that is the stock one or the dialplan step's. None when the file holds another
/// value there (the operator's).
fn normalised(id: &str, text: &str) -> Option<String> {
    let tags = xml::scan(text).ok()?;
    let mut spans = Vec::new();
    for t in &tags {
        let (Some(n), Some(v)) = (t.attr("name"), t.attr("value")) else {
            continue;
        };
        let ours = match (t.name.as_str(), n.value.as_str()) {
            ("param", "password") => {
                v.value == "$${default_password}"
                    || (v.value.len() == crate::vault::PASSWORD_LEN
                        && crate::vault::is_generated_alphabet(&v.value))
            }
            ("param", "vm-password") => {
                // brian's stock PIN is 9999, the numbered users' their extension.
                v.value == if id == "brian" { "9999" } else { id }
                    || (v.value.len() == super::voicemail_pins::PIN_LEN
                        && v.value.bytes().all(|b| b.is_ascii_digit()))
            }
            ("variable", "toll_allow") => {
                v.value == super::dialplan::STOCK_TOLL_ALLOW
                    || v.value == super::dialplan::TOLL_ALLOW_AFTER
            }
            _ => continue,
        };
        if !ours {
            return None;
        }
        spans.push(v.value_span.clone());
    }
    let mut out = text.to_string();
    for s in spans.iter().rev() {
        out.replace_range(s.clone(), "*");
    }
    Some(out)
}

/// Whether `text` is the stock file of user `id` (but for fsfleet's own changes).
pub fn is_stock(id: &str, text: &str) -> bool {
    let Some(stock) = stock_text(id) else {
        return false;
    };
    match (normalised(id, text), normalised(id, &stock)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// The dialplan files FreeSWITCH reads (the stock freeswitch.xml includes dialplan/*.xml, which
/// include their context's directory).
fn dialplan_files(f: &HostFacts) -> Vec<&FileFact> {
    let mut files: Vec<&FileFact> = f.files.conf_dir_files("dialplan", ".xml");
    files.extend(f.files.conf_dir_files("dialplan/default", ".xml"));
    files.extend(f.files.conf_dir_files("dialplan/public", ".xml"));
    files
}

/// Whether an action's `data` routes a call to user `id`: `user/ID` (bridge to a user),
/// `ID@` (a user's address), or a `transfer`/`execute_extension` to extension ID outside the
/// `features` context (the stock features context has an extension 1000 of its own).
fn routes_to(app: &str, data: &str, id: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    let at = |needle: &str,
              before_ok: &dyn Fn(Option<char>) -> bool,
              after_ok: &dyn Fn(Option<char>) -> bool| {
        data.match_indices(needle).any(|(i, m)| {
            before_ok(data[..i].chars().next_back()) && after_ok(data[i + m.len()..].chars().next())
        })
    };
    let user = format!("user/{id}");
    if at(&user, &|_| true, &|c| c.is_none_or(|c| !word(c))) {
        return true;
    }
    let addr = format!("{id}@");
    if at(&addr, &|c| c.is_none_or(|c| !word(c)), &|_| true) {
        return true;
    }
    if matches!(app, "transfer" | "execute_extension") {
        let mut w = data.split_whitespace();
        return w.next() == Some(id) && w.nth(1) != Some("features");
    }
    false
}

/// Which of `ids` the live dialplan routes to, with the file that does.
fn dialplan_references(
    input: &PlanInput<'_>,
    ids: &[String],
) -> Result<Vec<(String, String)>, StepError> {
    let mut out = Vec::new();
    for file in dialplan_files(input.facts) {
        let Some(text) = input
            .bytes_now(&file.path)
            .and_then(|b| std::str::from_utf8(b).ok())
        else {
            continue;
        };
        let tags = xml::scan(text).map_err(|source| StepError::Edit {
            path: file.path.clone(),
            source,
        })?;
        // The stock example DID's extension is not the operator's routing.
        let mut exempt: Vec<std::ops::Range<usize>> = Vec::new();
        for (i, t) in tags.iter().enumerate() {
            if t.name == "extension"
                && t.kind == xml::TagKind::Start
                && t.attr("name").is_some_and(|n| n.value == "public_did")
                && let Some(end) = tags[i + 1..].iter().find(|e| {
                    e.name == "extension" && e.kind == xml::TagKind::End && e.parents == t.parents
                })
            {
                let body = &text[t.span.start..end.span.end];
                if same_text_but_comments(body, PUBLIC_DID) {
                    exempt.push(t.span.start..end.span.end);
                }
            }
        }
        for t in &tags {
            if !matches!(t.name.as_str(), "action" | "anti-action")
                || exempt.iter().any(|r| r.contains(&t.span.start))
            {
                continue;
            }
            let (Some(app), Some(data)) = (t.attr("application"), t.attr("data")) else {
                continue;
            };
            for id in ids {
                if routes_to(&app.value, &data.value, id)
                    && !out
                        .iter()
                        .any(|(i, p): &(String, String)| i == id && *p == file.path)
                {
                    out.push((id.clone(), file.path.clone()));
                }
            }
        }
    }
    Ok(out)
}

/// Whitespace and comments aside, the same element text.
fn same_text_but_comments(a: &str, b: &str) -> bool {
    fn strip(s: &str) -> String {
        let mut out = String::new();
        let mut rest = s;
        while let Some(i) = rest.find("<!--") {
            out.push_str(&rest[..i]);
            match rest[i..].find("-->") {
                Some(j) => rest = &rest[i + j + 3..],
                None => return out,
            }
        }
        out.push_str(rest);
        out
    }
    strip(a).split_whitespace().eq(strip(b).split_whitespace())
}

/// The plan (pure).
pub fn plan(input: &PlanInput<'_>) -> Result<StepPlan, StepError> {
    let f = input.facts;
    let mut out = StepPlan::default();
    let mut candidates: Vec<(String, &FileFact, &str)> = Vec::new();
    for id in stock_ids() {
        let Some(file) = f.files.conf(&format!("directory/default/{id}.xml")) else {
            continue;
        };
        let text = input
            .bytes_now(&file.path)
            .and_then(|b| std::str::from_utf8(b).ok())
            .ok_or_else(|| {
                StepError::Refused(format!(
                    "{} is too large or not UTF-8 text; fsfleet will not edit it",
                    file.path
                ))
            })?;
        if text == disabled_text(&id) || input.host.keep_users.contains(&id) {
            continue;
        }
        if !is_stock(&id, text) {
            out.warnings.push(format!(
                "{} differs from the stock file: user {id} is the operator's, left alone \
                 (FS-SIP-03 may still fail; add it to keep_users to say you keep it)",
                file.path
            ));
            continue;
        }
        candidates.push((id, file, text));
    }
    let ids: Vec<String> = candidates.iter().map(|(id, _, _)| id.clone()).collect();
    let refs = dialplan_references(input, &ids)?;
    let regs = input.pre.registered.as_ref();
    for (id, file, text) in candidates {
        let mut why: Vec<String> = Vec::new();
        if let Some(r) = regs {
            let rows = r.of_user(&id);
            if !rows.is_empty() {
                let mut from: Vec<String> = rows
                    .iter()
                    .filter_map(|r| r.network_ip.map(|ip| ip.to_string()))
                    .collect();
                from.dedup();
                why.push(if from.is_empty() {
                    "registered now".to_string()
                } else {
                    format!("registered now from {}", from.join(", "))
                });
            } else if !r.unknown.is_empty() {
                why.push(format!(
                    "cannot tell whether it is registered ({})",
                    r.unknown.join("; ")
                ));
            }
        }
        for (_, path) in refs.iter().filter(|(i, _)| *i == id) {
            why.push(format!("the dialplan routes to it in {path}"));
        }
        if !why.is_empty() && !input.opts.remove_in_use {
            out.warnings.push(format!(
                "stock user {id} kept: {}; add it to keep_users to keep it for good, or re-run \
                 with --remove-in-use to disable it anyway (FS-SIP-03 fails while it exists)",
                why.join("; ")
            ));
            continue;
        }
        let new = disabled_text(&id);
        let forced = if why.is_empty() {
            String::new()
        } else {
            format!(" (--remove-in-use: {})", why.join("; "))
        };
        out.changes.push(format!(
            "disable stock user {id}: {} keeps only a comment (FS-SIP-03){forced}",
            file.path
        ));
        out.diffs.push(diff::masked_diff(
            &file.path,
            &super::dialplan::mask_credentials(text),
            &new,
            &[],
        ));
        out.edits
            .extend(input.edit(&file.path, new.into_bytes(), false)?);
    }
    out.reload = reload::Needs::xml_for(&out.edits);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::evidence::testing as ev;
    use crate::audit::{Live, Status};
    use crate::harden::HardenOptions;
    use crate::harden::preflight::Preflight;
    use crate::model::registrations::{Registered, Registration};

    const REF: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/reference/freeswitch-conf-1.10.12"
    );

    fn facts(files: &[(String, String)]) -> HostFacts {
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        HostFacts::with_conf("/etc/freeswitch", &refs)
    }

    fn plan_with(
        files: &[(String, String)],
        host: &Host,
        pre: Option<&Preflight>,
        opts: &HardenOptions,
    ) -> StepPlan {
        let f = facts(files);
        let own = Preflight::from_config(&f).unwrap();
        plan(&PlanInput {
            facts: &f,
            host,
            opts,
            pre: pre.unwrap_or(&own),
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

    fn sip03(files: &[(String, String)]) -> crate::audit::Finding {
        ev::eval("FS-SIP-03", &ev::evidence(files, &[], Live::default()))
    }

    fn host() -> Host {
        crate::harden::context::test_host("pbx1")
    }

    #[test]
    fn the_stock_texts_are_the_reference_trees() {
        for id in stock_ids() {
            let want =
                std::fs::read_to_string(format!("{REF}/directory/default/{id}.xml")).unwrap();
            assert_eq!(stock_text(&id).as_deref(), Some(want.as_str()), "{id}");
        }
        let did =
            std::fs::read_to_string(format!("{REF}/dialplan/public/00_inbound_did.xml")).unwrap();
        let start = did.find("<extension").unwrap();
        let end = did.find("</extension>").unwrap() + "</extension>".len();
        assert!(same_text_but_comments(&did[start..end], PUBLIC_DID));
        assert_eq!(stock_text("1020"), None);
    }

    #[test]
    fn on_the_stock_tree_every_stock_user_goes_and_fs_sip_03_passes() {
        let files = ev::stock_files();
        assert_eq!(sip03(&files).status, Status::Fail);
        let p = plan_with(&files, &host(), None, &HardenOptions::default());
        assert_eq!(p.changes.len(), 22, "{:?} {:?}", p.changes, p.warnings);
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        assert!(p.reload.reloadxml);
        // The diff never shows a credential value (an earlier run's PIN or password).
        let d = p.diffs.iter().find(|d| d.contains("1000.xml")).unwrap();
        assert!(
            d.contains("-      <param name=\"vm-password\" value=\"********\"/>")
                && d.contains("+  <!-- fsfleet harden remove-stock-users: the stock user 1000"),
            "{d}"
        );
        let done = after(&files, &p);
        let f = sip03(&done);
        assert_eq!(f.status, Status::Pass, "{:?}", f.evidence);
        // The files stay (FreeSWITCH includes directory/default/*.xml), holding no user.
        assert_eq!(
            done.iter()
                .find(|(r, _)| r == "directory/default/1007.xml")
                .unwrap()
                .1,
            disabled_text("1007")
        );
        let users = crate::model::HostModel::new(&facts(&done))
            .directory_users()
            .unwrap();
        assert!(
            users.iter().all(|u| stock_text(&u.id).is_none()),
            "{users:?}"
        );
        // Second run: nothing.
        let again = plan_with(&done, &host(), None, &HardenOptions::default());
        assert!(again.is_noop() && again.edits.is_empty() && again.warnings.is_empty());
    }

    #[test]
    fn fsfleets_own_edits_still_count_as_stock_and_the_operators_do_not() {
        let mut files = ev::stock_files();
        // 1001 after an earlier production run: own password, own PIN, no international.
        ev::edit(&mut files, "directory/default/1001.xml", |t| {
            t.replace("$${default_password}", "k8Hq2ZrT5mNw9xLpk8Hq2ZrT5mNw9xLp")
                .replace(
                    "value=\"1001\"/>\n    </params>",
                    "value=\"482913\"/>\n    </params>",
                )
                .replace("domestic,international,local", "domestic,local")
        });
        // 1002: the operator renamed the caller id; 1003: the operator's own password;
        // 1004: kept by the inventory.
        ev::edit(&mut files, "directory/default/1002.xml", |t| {
            t.replace("Extension 1002", "Reception")
        });
        ev::edit(&mut files, "directory/default/1003.xml", |t| {
            t.replace("$${default_password}", "hunter2")
        });
        let mut h = host();
        h.keep_users = vec!["1004".into()];
        let p = plan_with(&files, &h, None, &HardenOptions::default());
        let gone: Vec<&str> = p
            .changes
            .iter()
            .filter_map(|c| c.strip_prefix("disable stock user "))
            .map(|c| c.split(':').next().unwrap())
            .collect();
        assert!(gone.contains(&"1001"), "{gone:?}");
        for kept in ["1002", "1003", "1004"] {
            assert!(!gone.contains(&kept), "{kept}");
        }
        assert_eq!(gone.len(), 19);
        for kept in ["1002", "1003"] {
            assert!(
                p.warnings
                    .iter()
                    .any(|w| w.contains(&format!("user {kept} is the operator's"))),
                "{:?}",
                p.warnings
            );
        }
        assert!(
            !p.warnings.iter().any(|w| w.contains("1004")),
            "keep_users is said once, in the inventory"
        );
        let done = after(&files, &p);
        let f = sip03(&done);
        assert_eq!(f.status, Status::Fail);
        assert_eq!(
            f.evidence,
            ["stock users still defined in directory/default/: 1002-1004"]
        );
    }

    #[test]
    fn registered_and_routed_to_users_are_kept_unless_remove_in_use() {
        let mut files = ev::stock_files();
        // The operator's own extension rings 1005; a bridge to user/1006; 1007 by address.
        ev::edit(&mut files, "dialplan/default.xml", |t| {
            t.replacen(
                "<context name=\"default\">",
                "<context name=\"default\">\n    <extension name=\"reception\">\n      <condition field=\"destination_number\" expression=\"^0$\">\n        <action application=\"transfer\" data=\"1005 XML default\"/>\n        <action application=\"bridge\" data=\"user/1006@${domain_name},sofia/internal/1007@192.0.2.1\"/>\n        <!-- <action application=\"bridge\" data=\"user/1008\"/> -->\n      </condition>\n    </extension>",
                1,
            )
        });
        let f = facts(&files);
        let mut pre = Preflight::from_config(&f).unwrap();
        pre.registered = Some(Registered {
            rows: vec![Registration {
                profile: "internal".into(),
                auth_user: "brian".into(),
                user: "brian".into(),
                network_ip: "192.0.2.5".parse().ok(),
            }],
            unknown: vec![],
        });
        let p = plan_with(&files, &host(), Some(&pre), &HardenOptions::default());
        let kept: Vec<&String> = p
            .warnings
            .iter()
            .filter(|w| w.starts_with("stock user "))
            .collect();
        assert_eq!(kept.len(), 4, "{kept:?}");
        assert!(
            kept.iter()
                .any(|w| w.starts_with("stock user brian kept: registered now from 192.0.2.5"))
        );
        for id in ["1005", "1006", "1007"] {
            assert!(
                kept.iter().any(|w| w.starts_with(&format!(
                    "stock user {id} kept: the dialplan routes to it in /etc/freeswitch/dialplan/default.xml"
                ))),
                "{id}: {kept:?}"
            );
        }
        assert!(kept.iter().all(|w| w.contains("--remove-in-use")));
        // A commented action, the stock DID example (1000), `sleep 1000` and the features
        // context's own 1000 route to nobody.
        assert_eq!(p.changes.len(), 18);
        let opts = HardenOptions {
            remove_in_use: true,
            ..Default::default()
        };
        let p = plan_with(&files, &host(), Some(&pre), &opts);
        assert_eq!(p.changes.len(), 22);
        assert!(
            p.changes
                .iter()
                .any(|c| c.starts_with("disable stock user brian")
                    && c.contains("--remove-in-use: registered now"))
        );
    }

    #[test]
    fn routes_to_tells_a_user_from_a_number() {
        assert!(routes_to("bridge", "user/1000", "1000"));
        assert!(routes_to("bridge", "{x=y}user/1000@example.com", "1000"));
        assert!(routes_to("set", "target=1000@example.com", "1000"));
        assert!(routes_to("transfer", "1000 XML default", "1000"));
        assert!(routes_to("transfer", "1000", "1000"));
        assert!(!routes_to("transfer", "1000 XML features", "1000"));
        assert!(!routes_to("sleep", "1000", "1000"));
        assert!(!routes_to("bridge", "user/10000", "1000"));
        assert!(!routes_to("set", "x=21000@h", "1000"));
        assert!(!routes_to(
            "playback",
            "tone_stream://%(1000,0,1004)",
            "1000"
        ));
    }
}
