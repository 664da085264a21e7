//! Production step `per-user-passwords`: every directory user that logs in with the shared
//! `$${default_password}`, or with no password at all, gets its own generated password
//! (audit FS-SIP-04).
//!
//! Only the value of that user's `password` param changes (one span edit per user, every other
//! byte kept); a user without one gets a `password` param added before its `</params>`. The
//! stock `default` user has no password by design (FreeSWITCH puts its calls in the `public`
//! context, like any unauthenticated caller) and is left to `remove-stock-users`; a user with an
//! `a1-hash` has its own credential already. The passwords are generated on the controller, go
//! to the vault per host and user as pending before the host sees them and become active once
//! the run is verified (`fsfleet creds show HOST --user ID`, `fsfleet creds export --users`).
//!
//! A phone keeps registering only once it is given its new password, so the step refuses,
//! naming them, while any user it would change is registered right now (`sofia xmlstatus
//! profile NAME reg`, asked in preflight), unless `--force-reregister`; the report names every
//! phone to reprovision. FreeSWITCH reads the files on `reloadxml`.

use std::ops::Range;

use super::step::{self, PlanInput};
use super::{HostFacts, Probes, StepError, StepPlan, reload};
use crate::conf::{diff, xml};
use crate::facts::FileFact;
use crate::inventory::Host;
use crate::model::{self, HostModel};
use crate::secret::Secret;
use crate::vault::{self, UserCredKind};

pub const NAME: &str = "per-user-passwords";

/// The stock user that has no password on purpose (directory/default/default.xml).
const PASSWORDLESS_BY_DESIGN: &str = "default";

/// The step in the registry: its edits go out in the config write, so `apply` has nothing left.
pub struct PerUserPasswords;
step::config_step!(PerUserPasswords, Production);

/// The directory files are config files, read for every run.
pub fn probes(_p: &mut Probes, _host: &Host) {}

pub fn step_plan(input: &PlanInput<'_>) -> Result<StepPlan, StepError> {
    plan(input, &mut || vault::generate_password(vault::PASSWORD_LEN))
}

/// The directory files users are defined in: directory/default.xml, then directory/default/*.
fn user_files(f: &HostFacts) -> Vec<&FileFact> {
    let mut files: Vec<&FileFact> = f.files.conf("directory/default.xml").into_iter().collect();
    files.extend(f.files.conf_dir_files("directory/default", ".xml"));
    files
}

/// The users of the host's files this step would give a password (preflight asks FreeSWITCH
/// who is registered only when there is one).
pub fn targets(f: &HostFacts, rotate_own: bool) -> Vec<String> {
    HostModel::new(f)
        .directory_users()
        .unwrap_or_default()
        .into_iter()
        .filter(|u| plain_user(&u.id))
        .filter(|u| match u.password.as_deref() {
            // Rotating renews only the users' own passwords; harden gives them.
            Some(p) if rotate_own => own_password(p),
            Some(p) => p.contains(DEFAULT_REF),
            None => !rotate_own && u.id != PASSWORDLESS_BY_DESIGN,
        })
        .map(|u| u.id)
        .collect()
}

const DEFAULT_REF: &str = "$${default_password}";

/// A user's own literal password (not a `$${variable}`): what `fsfleet rotate --users` renews.
fn own_password(v: &str) -> bool {
    !v.is_empty() && !v.contains("$${")
}

/// `fsfleet rotate --users`: users' own passwords are renewed too.
fn rotating_own(opts: &super::HardenOptions) -> bool {
    opts.rotate_only.is_some_and(|s| s.users)
}

/// What to do for one user of a file.
enum Fix {
    /// Replace the value of its `password` param.
    Replace(Range<usize>),
    /// Insert a `password` param at this offset (before `</params>`), with this indentation.
    Insert(usize, String),
}

/// The users of a file to change, each with its fix.
type Fixes = Vec<(String, Fix)>;

/// One `<user>` element as the scan saw it.
#[derive(Default)]
struct Seen {
    id: String,
    password: Option<(String, Range<usize>)>,
    a1_hash: bool,
    params_end: Option<usize>,
}

/// The users of one file to change, and users that need a password fsfleet cannot add.
fn scan_file(text: &str, rotate_own: bool) -> Result<(Fixes, Vec<String>), crate::conf::ConfError> {
    let tags = xml::scan(text)?;
    let mut fixes = Vec::new();
    let mut manual = Vec::new();
    let mut cur: Option<Seen> = None;
    for t in &tags {
        match (t.name.as_str(), t.kind) {
            ("user", xml::TagKind::Start) => {
                cur = t.attr("id").map(|a| Seen {
                    id: a.value.clone(),
                    ..Seen::default()
                });
            }
            // A user element without children holds no password: one to fix by hand.
            ("user", xml::TagKind::Empty)
                if t.attr("type").is_none_or(|a| a.value != "pointer") =>
            {
                if let Some(a) = t.attr("id")
                    && a.value != PASSWORDLESS_BY_DESIGN
                {
                    manual.push(a.value.clone());
                }
            }
            ("user", xml::TagKind::End) => {
                let Some(u) = cur.take() else { continue };
                match (u.password, u.a1_hash, u.params_end) {
                    // Rotating renews only the users' own passwords; harden gives them.
                    (Some((v, span)), _, _)
                        if (rotate_own && own_password(&v))
                            || (!rotate_own && v.contains(DEFAULT_REF)) =>
                    {
                        fixes.push((u.id, Fix::Replace(span)));
                    }
                    _ if rotate_own => {}
                    (Some(_), _, _) | (None, true, _) => {}
                    (None, false, _) if u.id == PASSWORDLESS_BY_DESIGN => {}
                    (None, false, Some(at)) => {
                        let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
                        let indent = &text[line_start..at];
                        let indent = if indent.chars().all(|c| c == ' ' || c == '\t') {
                            indent.to_string()
                        } else {
                            String::new()
                        };
                        fixes.push((u.id, Fix::Insert(at, indent)));
                    }
                    (None, false, None) => manual.push(u.id),
                }
            }
            ("params", xml::TagKind::End) if t.parent() == Some("user") => {
                if let Some(u) = cur.as_mut() {
                    u.params_end = Some(t.span.start);
                }
            }
            ("param", xml::TagKind::Start | xml::TagKind::Empty)
                if t.parent() == Some("params") =>
            {
                let (Some(u), Some(n), Some(v)) = (cur.as_mut(), t.attr("name"), t.attr("value"))
                else {
                    continue;
                };
                match n.value.as_str() {
                    "password" => u.password = Some((v.value.clone(), v.value_span.clone())),
                    "a1-hash" if !v.value.is_empty() => u.a1_hash = true,
                    _ => {}
                }
            }
            _ => {}
        }
    }
    Ok((fixes, manual))
}

/// The SIP domain the directory's users are in, for provisioning phones: the `<domain name>`
/// of directory/default.xml as FreeSWITCH expands it (the stock `$${domain}` is set from
/// `$${local_ip_v4}` at startup, so the running FreeSWITCH's `global_getvar domain` answers
/// it). None when neither is known or the value is not a plain host name or address.
pub fn domain(f: &HostFacts, live: Option<&str>) -> Option<String> {
    let model = HostModel::new(f);
    let text = f.files.conf("directory/default.xml")?.text()?;
    let tags = xml::scan(text).ok()?;
    let name = tags
        .iter()
        .find(|t| t.name == "domain" && t.kind != xml::TagKind::End)?
        .attr("name")?
        .value
        .clone();
    let e = model.vars().expand(&name);
    // A `set` may itself use a variable FreeSWITCH fills at startup (`$${local_ip_v4}`).
    let value = if e.unset.is_empty() && !e.text.contains("$${") {
        Some(e.text)
    } else if name == "$${domain}" {
        live.map(str::to_string)
    } else {
        None
    }?;
    plain_domain(&value).then_some(value)
}

/// A user id fsfleet gives a password to: what phones put in a SIP URI's user part without
/// escaping (host text: it goes to the vault, the report and `creds export --users`).
pub fn plain_user(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+'))
}

/// A host name or address as a phone's provisioning takes it (host text: nothing else goes to
/// the vault or an export).
pub fn plain_domain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']' | '_'))
}

/// The plan (pure but for `generate`, the password source: the OS RNG, or a list in tests).
pub fn plan(
    input: &PlanInput<'_>,
    generate: &mut dyn FnMut() -> Secret,
) -> Result<StepPlan, StepError> {
    let f = input.facts;
    let mut out = StepPlan::default();
    // Every file first: the refusal must name every registered user before anything changes.
    let mut per_file: Vec<(&FileFact, String, Fixes)> = Vec::new();
    for file in user_files(f) {
        let refuse = || {
            StepError::Refused(format!(
                "{} is too large or not UTF-8 text; fsfleet will not edit it",
                file.path
            ))
        };
        let bytes = input.bytes_now(&file.path).ok_or_else(refuse)?;
        let text = std::str::from_utf8(bytes).map_err(|_| refuse())?;
        let (fixes, manual) =
            scan_file(text, rotating_own(input.opts)).map_err(|source| StepError::Edit {
                path: file.path.clone(),
                source,
            })?;
        for id in manual {
            out.warnings.push(format!(
                "user {} in {} has no password and no <params> element: give it a `password` \
                 param by hand (FS-SIP-04)",
                crate::display::line(&id),
                file.path
            ));
        }
        let (fixes, odd): (Vec<_>, Vec<_>) = fixes.into_iter().partition(|(id, _)| plain_user(id));
        for (id, _) in odd {
            out.warnings.push(format!(
                "user {} in {} shares $${{default_password}} or has none, but its id is not plain                  (letters, digits, . - _ +): left alone, give it a password by hand (FS-SIP-04)",
                crate::display::line(&id),
                file.path
            ));
        }
        if !fixes.is_empty() {
            per_file.push((file, text.to_string(), fixes));
        }
    }
    let ids: Vec<&str> = per_file
        .iter()
        .flat_map(|(_, _, fx)| fx.iter().map(|(id, _)| id.as_str()))
        .collect();
    if ids.is_empty() {
        return Ok(out);
    }
    let host = &input.host.name;
    let export = "`fsfleet creds export INVENTORY --users --format csv` lists them";
    let regs = input.pre.registered.as_ref();
    let registered: Vec<String> = regs
        .map(|r| {
            ids.iter()
                .filter_map(|id| {
                    let rows = r.of_user(id);
                    if rows.is_empty() {
                        return None;
                    }
                    let mut from: Vec<String> = rows
                        .iter()
                        .filter_map(|r| r.network_ip.map(|ip| ip.to_string()))
                        .collect();
                    from.dedup();
                    Some(if from.is_empty() {
                        crate::display::line(id).into_owned()
                    } else {
                        format!("{} (from {})", crate::display::line(id), from.join(", "))
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let unknown: &[String] = regs.map_or(&[], |r| &r.unknown);
    if (!registered.is_empty() || !unknown.is_empty()) && !input.opts.force_reregister {
        let whom = if registered.is_empty() {
            format!(
                "cannot tell whether they are registered ({})",
                unknown.join("; ")
            )
        } else {
            format!("registered now: {}", registered.join(", "))
        };
        out.refused.push(format!(
            "not giving users their own passwords: a phone keeps its old password until it is \
             reprovisioned, and {whom}; re-run with --force-reregister to change them anyway, \
             then give each phone its new password ({export})"
        ));
        return Ok(out);
    }
    let shown: Vec<String> = ids
        .iter()
        .map(|id| crate::display::line(id).into_owned())
        .collect();
    let shown: Vec<&str> = shown.iter().map(String::as_str).collect();
    let now = if !registered.is_empty() {
        format!(
            "registered now, reprovision them first: {}",
            registered.join(", ")
        )
    } else if regs.is_some() {
        "none of them is registered now".to_string()
    } else if input.pre.live_password.is_none() {
        "FreeSWITCH is not running, so none of them is registered now".to_string()
    } else {
        "whether they are registered now was not asked".to_string()
    };
    out.warnings.push(format!(
        "reprovision the phones of {} user{} with their new passwords ({}): {export} for {host}; {now}",
        ids.len(),
        if ids.len() == 1 { "" } else { "s" },
        model::compact_ids(&shown),
    ));
    for (file, text, fixes) in per_file {
        let mut fresh: Vec<(String, Secret)> = Vec::new();
        let mut new = text.clone();
        // Back to front, so earlier offsets stay valid.
        let mut ordered: Vec<&(String, Fix)> = fixes.iter().collect();
        ordered.sort_by_key(|(_, fx)| match fx {
            Fix::Replace(r) => r.start,
            Fix::Insert(at, _) => *at,
        });
        for (id, fx) in ordered.into_iter().rev() {
            let pw = generate();
            match fx {
                Fix::Replace(span) => {
                    new.replace_range(span.clone(), pw.expose());
                    out.changes.push(format!(
                        "give user {} its own generated password in {} (was $${{default_password}}) (FS-SIP-04)",
                        crate::display::line(id),
                        file.path
                    ));
                }
                Fix::Insert(at, indent) => {
                    let param = format!("  <param name=\"password\" value=\"{}\"/>", pw.expose());
                    let ins = if indent.is_empty() {
                        param.trim_start().to_string()
                    } else {
                        format!("{param}\n{indent}")
                    };
                    new.insert_str(*at, &ins);
                    out.changes.push(format!(
                        "give user {} its own generated password in {} (had none) (FS-SIP-04)",
                        crate::display::line(id),
                        file.path
                    ));
                }
            }
            fresh.push((id.clone(), pw));
        }
        fresh.reverse();
        // The shared password's reference is no secret: the diff shows it going.
        let is_reference =
            |_: &str, name: &str, value: &str| name == "password" && value == DEFAULT_REF;
        let secrets: Vec<&Secret> = fresh.iter().map(|(_, s)| s).collect();
        out.diffs.push(diff::masked_diff(
            &file.path,
            &super::dialplan::mask_credentials_but(&text, &is_reference),
            &super::dialplan::mask_credentials(&new),
            &secrets,
        ));
        out.edits
            .extend(input.edit(&file.path, new.into_bytes(), true)?);
        out.user_secrets.extend(
            fresh
                .into_iter()
                .map(|(id, pw)| (id, UserCredKind::SipPassword, pw)),
        );
    }
    out.user_domain = domain(f, input.pre.domain.as_deref());
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

    fn facts(files: &[(String, String)]) -> HostFacts {
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        HostFacts::with_conf("/etc/freeswitch", &refs)
    }

    fn plan_pre(
        f: &HostFacts,
        pre: &Preflight,
        opts: &HardenOptions,
        before: &[&StepPlan],
    ) -> StepPlan {
        let host = crate::harden::context::test_host("pbx1");
        plan(
            &PlanInput {
                facts: f,
                host: &host,
                opts,
                pre,
                before,
            },
            &mut || vault::generate_password(vault::PASSWORD_LEN),
        )
        .unwrap()
    }

    fn plan_of(f: &HostFacts) -> StepPlan {
        let pre = Preflight::from_config(f).unwrap();
        plan_pre(f, &pre, &HardenOptions::default(), &[])
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

    fn sip04(files: &[(String, String)]) -> crate::audit::Finding {
        ev::eval("FS-SIP-04", &ev::evidence(files, &[], Live::default()))
    }

    fn file<'a>(files: &'a [(String, String)], rel: &str) -> &'a str {
        &files.iter().find(|(r, _)| r == rel).unwrap().1
    }

    #[test]
    fn rotating_renews_only_users_own_passwords() {
        let text = "<include>\n<user id=\"1000\">\n<params>\n\
                    <param name=\"password\" value=\"Own1000PasswordAbc\"/>\n</params>\n</user>\n\
                    <user id=\"1001\">\n<params>\n<param name=\"password\" value=\"$${default_password}\"/>\n\
                    </params>\n</user>\n<user id=\"1002\">\n<params>\n</params>\n</user>\n</include>\n";
        let ids = |rotate: bool| -> Vec<String> {
            scan_file(text, rotate)
                .unwrap()
                .0
                .into_iter()
                .map(|(id, _)| id)
                .collect()
        };
        assert_eq!(ids(true), ["1000"]);
        assert_eq!(ids(false), ["1001", "1002"]);
    }

    #[test]
    fn every_stock_user_on_the_shared_password_gets_its_own_never_shown() {
        let files = ev::stock_files();
        assert_eq!(sip04(&files).status, Status::Fail);
        let p = plan_of(&facts(&files));
        let mut users: Vec<&str> = p.user_secrets.iter().map(|(u, _, _)| u.as_str()).collect();
        users.sort();
        let mut want: Vec<String> = (1000..=1019).map(|i| i.to_string()).collect();
        // The skinny example device has no password: SIP would let it register without one.
        want.extend(["brian".into(), "SEP001120AABBCC".into()]);
        want.sort();
        assert_eq!(
            users, want,
            "the passwordless stock `default` user is left alone"
        );
        assert_eq!(p.changes.len(), 22);
        let mut pws: Vec<&str> = p.user_secrets.iter().map(|(_, _, s)| s.expose()).collect();
        pws.sort();
        pws.dedup();
        assert_eq!(pws.len(), 22, "distinct");
        let shown = format!("{:?} {:?} {:?}", p.changes, p.diffs, p.warnings);
        for (user, kind, pw) in &p.user_secrets {
            assert_eq!(*kind, UserCredKind::SipPassword);
            assert!(vault::is_generated_alphabet(pw.expose()) && pw.expose().len() == 32);
            assert!(!shown.contains(pw.expose()), "password of {user} shown");
        }
        let d = p.diffs.iter().find(|d| d.contains("1000.xml")).unwrap();
        assert!(
            d.contains("-      <param name=\"password\" value=\"$${default_password}\"/>")
                && d.contains("+      <param name=\"password\" value=\"********\"/>"),
            "{d}"
        );
        assert!(
            p.warnings[0].starts_with(
                "reprovision the phones of 22 users with their new passwords (1000-1019, brian, SEP001120AABBCC)"
            ) && p.warnings[0].contains("creds export INVENTORY --users"),
            "{:?}",
            p.warnings
        );
        // Span edits: only the value changed; the file holds the vault's value, readable
        // only by root and FreeSWITCH.
        let done = after(&files, &p);
        let (_, _, pw1000) = p.user_secrets.iter().find(|(u, _, _)| u == "1000").unwrap();
        assert_eq!(
            file(&done, "directory/default/1000.xml"),
            file(&files, "directory/default/1000.xml")
                .replace("$${default_password}", pw1000.expose())
        );
        let now =
            crate::harden::context::user_credentials_in(&facts(&done), UserCredKind::SipPassword);
        for (user, _, pw) in &p.user_secrets {
            assert!(now.iter().any(|(u, v)| u == user && v == pw), "{user}");
        }
        assert!(p.edits.iter().all(|e| e.want.mode & 0o007 == 0));
        assert!(p.reload.reloadxml);
        let f = sip04(&done);
        assert_eq!(f.status, Status::Pass, "{:?}", f.evidence);
        // Second run: nothing, no warning.
        let again = plan_of(&facts(&done));
        assert!(again.is_noop() && again.edits.is_empty() && again.user_secrets.is_empty());
        assert!(again.warnings.is_empty() && again.refused.is_empty());
        assert!(targets(&facts(&done), false).is_empty());
    }

    #[test]
    fn operator_passwords_hashes_and_odd_users_are_told_apart() {
        let mut files = ev::stock_files();
        // 1001: the operator's own password; 1002: an a1-hash; 1003: no password at all
        // (registers without one), in a CRLF file; 1004: a self-closing user element.
        ev::edit(&mut files, "directory/default/1001.xml", |t| {
            t.replace("$${default_password}", "opSecret77")
        });
        ev::edit(&mut files, "directory/default/1002.xml", |t| {
            t.replace(
                "<param name=\"password\" value=\"$${default_password}\"/>",
                "<param name=\"a1-hash\" value=\"c6440e5de50b403206989679159de89a\"/>",
            )
        });
        ev::edit(&mut files, "directory/default/1003.xml", |t| {
            t.replace(
                "      <param name=\"password\" value=\"$${default_password}\"/>\n",
                "",
            )
            .replace('\n', "\r\n")
        });
        ev::edit(&mut files, "directory/default/1004.xml", |_| {
            "<include>\n  <user id=\"1004\" cidr=\"192.0.2.9/32\"/>\n</include>\n".into()
        });
        ev::edit(&mut files, "directory/default/1005.xml", |t| {
            t.replace("id=\"1005\"", "id=\"10 05\"")
        });
        let before = file(&files, "directory/default/1003.xml").to_string();
        let p = plan_of(&facts(&files));
        let users: Vec<&str> = p.user_secrets.iter().map(|(u, _, _)| u.as_str()).collect();
        for kept in ["1001", "1002", "1004", "10 05", "default"] {
            assert!(!users.contains(&kept), "{kept}: {users:?}");
        }
        assert!(users.contains(&"1003") && users.contains(&"1000"));
        assert_eq!(users.len(), 18);
        assert!(
            p.warnings
                .iter()
                .any(|w| w.starts_with("user 1004 in ") && w.contains("no <params> element")),
            "{:?}",
            p.warnings
        );
        assert!(
            p.warnings
                .iter()
                .any(|w| w.starts_with("user 10 05 in ") && w.contains("not plain")),
            "{:?}",
            p.warnings
        );
        assert!(p.changes.iter().any(
            |c| c.starts_with("give user 1003 its own generated password")
                && c.contains("(had none)")
        ));
        let done = after(&files, &p);
        let (_, _, pw) = p.user_secrets.iter().find(|(u, _, _)| u == "1003").unwrap();
        let want = before.replace(
            "      <param name=\"vm-password\" value=\"1003\"/>\r\n    </params>",
            &format!(
                "      <param name=\"vm-password\" value=\"1003\"/>\r\n      <param name=\"password\" value=\"{}\"/>\n    </params>",
                pw.expose()
            ),
        );
        assert_ne!(want, before);
        assert_eq!(file(&done, "directory/default/1003.xml"), want);
        assert_eq!(
            file(&done, "directory/default/1001.xml"),
            file(&files, "directory/default/1001.xml")
        );
        assert!(!format!("{:?}", p.diffs).contains("opSecret77"));
        // Idempotent on the operator's variants too.
        let again = plan_of(&facts(&done));
        assert!(again.is_noop() && again.user_secrets.is_empty());
    }

    fn registered(users: &[(&str, &str)], unknown: &[&str]) -> Registered {
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
    fn a_registered_user_holds_the_step_until_force_reregister() {
        let files = ev::stock_files();
        let f = facts(&files);
        let mut pre = Preflight::from_config(&f).unwrap();
        pre.registered = Some(registered(
            &[("1000", "192.0.2.5"), ("1000", "192.0.2.6"), ("brian", "")],
            &[],
        ));
        pre.domain = Some("192.0.2.10".into());
        let p = plan_pre(&f, &pre, &HardenOptions::default(), &[]);
        assert_eq!(
            p.refused,
            [
                "not giving users their own passwords: a phone keeps its old password until it is \
             reprovisioned, and registered now: 1000 (from 192.0.2.5, 192.0.2.6), brian; re-run \
             with --force-reregister to change them anyway, then give each phone its new password \
             (`fsfleet creds export INVENTORY --users --format csv` lists them)"
            ]
        );
        assert!(p.changes.is_empty() && p.edits.is_empty() && p.user_secrets.is_empty());

        let opts = HardenOptions {
            force_reregister: true,
            ..Default::default()
        };
        let p = plan_pre(&f, &pre, &opts, &[]);
        assert!(p.refused.is_empty());
        assert_eq!(p.user_secrets.len(), 22);
        assert!(
            p.warnings[0].ends_with(
                "registered now, reprovision them first: 1000 (from 192.0.2.5, 192.0.2.6), brian"
            ),
            "{:?}",
            p.warnings
        );
        assert_eq!(p.user_domain.as_deref(), Some("192.0.2.10"));

        // A registered user the step does not change holds nothing; an unreadable profile does.
        pre.registered = Some(registered(&[("default", "192.0.2.7")], &[]));
        let p = plan_pre(&f, &pre, &HardenOptions::default(), &[]);
        assert!(p.refused.is_empty() && p.user_secrets.len() == 22);
        assert!(p.warnings[0].ends_with("none of them is registered now"));
        pre.registered = Some(registered(&[], &["profile internal: answered garbage"]));
        let p = plan_pre(&f, &pre, &HardenOptions::default(), &[]);
        assert!(
            p.refused[0].contains(
                "cannot tell whether they are registered (profile internal: answered garbage)"
            ),
            "{:?}",
            p.refused
        );
    }

    #[test]
    fn the_domain_is_the_directorys_as_freeswitch_expands_it() {
        let mut files = ev::stock_files();
        let f = facts(&files);
        // Stock: $${domain} is set from $${local_ip_v4} at startup: only FreeSWITCH knows it.
        assert_eq!(domain(&f, None), None);
        assert_eq!(
            domain(&f, Some("192.0.2.10")).as_deref(),
            Some("192.0.2.10")
        );
        ev::edit(&mut files, "vars.xml", |t| {
            t.replace(
                "data=\"domain=$${local_ip_v4}\"",
                "data=\"domain=pbx.example.com\"",
            )
        });
        let f = facts(&files);
        assert_eq!(
            domain(&f, Some("192.0.2.10")).as_deref(),
            Some("pbx.example.com")
        );
        assert!(!plain_domain("a b") && !plain_domain("x\u{1b}[31m") && !plain_domain(""));
    }

    #[test]
    fn on_top_of_the_dialplan_and_voicemail_pin_edits_of_the_same_file() {
        let files = ev::stock_files();
        let f = facts(&files);
        // 1000 kept (keep_users), so remove-stock-users leaves it to the other steps.
        let mut host = crate::harden::context::test_host("pbx1");
        host.keep_users = vec!["1000".into()];
        let opts = HardenOptions::default();
        let plans = crate::harden::step::plan_model_only(
            &f,
            &host,
            &HardenOptions {
                level: Some(crate::inventory::HardenLevel::Production),
                ..opts
            },
        );
        let ok: Vec<&StepPlan> = plans.iter().filter_map(|(_, p)| p.as_ref().ok()).collect();
        let edits = crate::harden::step::planned_edits(ok.iter().copied());
        let path = "/etc/freeswitch/directory/default/1000.xml";
        let e: Vec<_> = edits.iter().filter(|e| e.path == path).collect();
        assert_eq!(e.len(), 1);
        let new = String::from_utf8(e[0].new.clone()).unwrap();
        assert!(
            new.contains("value=\"domestic,local\""),
            "dialplan's edit stays"
        );
        assert!(
            !new.contains("name=\"vm-password\" value=\"1000\""),
            "the PIN's stays"
        );
        assert!(!new.contains("$${default_password}"));
        // The users remove-stock-users disables get no password.
        let p = plans
            .iter()
            .find(|(n, _)| *n == NAME)
            .and_then(|(_, p)| p.as_ref().ok())
            .unwrap();
        let users: Vec<&str> = p.user_secrets.iter().map(|(u, _, _)| u.as_str()).collect();
        assert_eq!(users, ["1000", "SEP001120AABBCC"]);
        // The masked diffs of every step never show a generated secret.
        let shown: String = ok.iter().flat_map(|p| p.diffs.iter().cloned()).collect();
        for p in &ok {
            for (_, _, s) in &p.user_secrets {
                assert!(!shown.contains(s.expose()));
            }
        }
    }
}
