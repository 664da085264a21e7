//! Production step `file-modes`: every FreeSWITCH config file that holds a credential readable
//! only by root and the FreeSWITCH user.
//!
//! The baseline already does it for the files whose passwords it rotates (vars.xml,
//! event_socket.conf.xml, directory files with literal passwords). This step reads the rest of
//! the tree where credentials sit (autoload_configs/*.xml, gateways in sip_profiles/*/*.xml,
//! the directory) and gives each file that sets one of [`SECRET_PARAMS`] (a live `<param>`, not
//! a comment, with a literal value) or a `*password*` preprocessor variable the owner, group and
//! mode of [`Meta::for_secret`]: content unchanged, so nothing is reloaded.

use super::context::Meta;
use super::step::{self, PlanInput};
use super::{FileEdit, Probes, StepError, StepPlan};
use crate::conf::xml;
use crate::facts::{self, Fact, FactError, FileFact, Files, ScriptInput};
use crate::inventory::Host;

pub const NAME: &str = "file-modes";

/// Params whose literal value is a credential (checked against the stock 1.10.12 tree: SIP and
/// voicemail users, Event Socket, xml_rpc's `auth-pass`, database DSNs, TLS key passphrases,
/// xml_curl's credentials, AMQP/Redis/SMPP passwords).
pub const SECRET_PARAMS: &[&str] = &[
    "password",
    "a1-hash",
    "vm-password",
    "auth-pass",
    "ssl-key-password",
    "tls-passphrase",
    "odbc-dsn",
    "core-db-dsn",
    "gateway-credentials",
    "cred",
    "whitepages-apikey",
];

/// The parts of the config tree the other steps do not read and credentials sit in.
const GLOBS: &[&str] = &[
    "autoload_configs/*.xml",
    "sip_profiles/*/*.xml",
    "directory/*.xml",
    "directory/*/*.xml",
];

/// The step in the registry: its edits go out in the config write, so `apply` has nothing left.
pub struct FileModes;
step::config_step!(FileModes, Production);

pub fn probes(p: &mut Probes, _host: &Host) {
    p.fact::<SecretConfs>();
}

/// The files of [`GLOBS`] (exact bytes, owner, group, mode).
pub struct SecretConfs;

impl Fact for SecretConfs {
    const NAME: &'static str = "file_modes_confs";
    type Value = Files;

    fn snippet(input: &ScriptInput<'_>) -> String {
        facts::files_snippet(input.host, GLOBS, &[])
    }

    fn parse(text: &str, _: Option<i32>) -> Result<Files, FactError> {
        Files::parse(text).map_err(|e| FactError::Malformed {
            fact: Self::NAME,
            what: e.to_string(),
        })
    }
}

/// Whether a config text sets a credential: a live param of [`SECRET_PARAMS`] with a literal
/// value (not empty, not a `$${var}`), or a preprocessor `set` of a variable named like a password with a value.
pub fn holds_secret(text: &str) -> bool {
    let Ok(tags) = xml::scan(text) else {
        // Not readable as XML: FreeSWITCH cannot read it either; keep it from others anyway
        // when it names a password.
        return text.contains("password");
    };
    tags.iter().any(|t| match t.name.as_str() {
        "param" => {
            t.attr("name")
                .is_some_and(|n| SECRET_PARAMS.contains(&n.value.as_str()))
                && t.attr("value").is_some_and(|v| {
                    // `$${default_password}` is a reference: the secret sits in vars.xml.
                    let v = v.value.trim();
                    !v.is_empty() && !v.starts_with("$${")
                })
        }
        "X-PRE-PROCESS" => {
            t.attr("cmd").is_some_and(|c| c.value == "set")
                && t.attr("data").is_some_and(|d| {
                    d.value
                        .split_once('=')
                        .is_some_and(|(k, v)| k.contains("password") && !v.trim().is_empty())
                })
        }
        _ => false,
    })
}

pub fn step_plan(input: &PlanInput<'_>) -> Result<StepPlan, StepError> {
    let extra = input.facts.get::<SecretConfs>().unwrap_or_default();
    plan(input, &extra)
}

/// The plan (pure): `extra` are the files of [`GLOBS`].
pub fn plan(input: &PlanInput<'_>, extra: &Files) -> Result<StepPlan, StepError> {
    let f = input.facts;
    let mut out = StepPlan::default();
    let mut seen: Vec<&str> = Vec::new();
    let all = f.files.files.values().chain(extra.files.values());
    for file in all {
        if seen.contains(&file.path.as_str()) {
            continue;
        }
        seen.push(&file.path);
        // Config files only (the tree's XML), never a file some other step read by path.
        if !file.path.ends_with(".xml") {
            continue;
        }
        let Some(bytes) = input.bytes_now(&file.path).or(file.content.as_deref()) else {
            continue;
        };
        let Ok(text) = std::str::from_utf8(bytes) else {
            continue;
        };
        if !holds_secret(text) {
            continue;
        }
        let edit = if f.files.files.contains_key(&file.path) {
            input.edit(&file.path, bytes.to_vec(), true)?
        } else {
            restrict(file, f.fs_owner())
        };
        if let Some(e) = edit {
            out.changes
                .push(super::sip_password::restrict_line(&e.path, &e));
            out.edits.push(e);
        }
    }
    out.edits.sort_by(|a, b| a.path.cmp(&b.path));
    out.changes.sort();
    Ok(out)
}

/// A file only this step read: same bytes, owner and mode of a file holding a secret.
fn restrict(file: &FileFact, fs: Option<(&str, &str)>) -> Option<FileEdit> {
    let content = file.content.clone()?;
    let was = Meta::of(file);
    let want = was.for_secret(fs);
    (was != want).then(|| FileEdit {
        path: file.path.clone(),
        old: content.clone(),
        new: content,
        was,
        want,
        created: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harden::HostFacts;

    const REF: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/reference/freeswitch-conf-1.10.12"
    );

    fn file(rel: &str, text: &str, mode: u32) -> FileFact {
        FileFact {
            path: format!("/etc/freeswitch/{rel}"),
            mode,
            owner: "freeswitch".into(),
            group: "freeswitch".into(),
            size: text.len() as u64,
            content: Some(text.as_bytes().to_vec()),
        }
    }

    fn plan_of(f: &HostFacts, extra: &Files) -> StepPlan {
        let host = crate::harden::context::test_host("pbx1");
        let opts = crate::harden::HardenOptions::default();
        let pre = crate::harden::preflight::Preflight::from_config(f).unwrap();
        plan(
            &PlanInput {
                facts: f,
                host: &host,
                opts: &opts,
                pre: &pre,
                before: &[],
            },
            extra,
        )
        .unwrap()
    }

    #[test]
    fn the_stock_files_with_credentials_are_found_and_the_others_not() {
        let read = |rel: &str| std::fs::read_to_string(format!("{REF}/{rel}")).unwrap();
        for rel in [
            "autoload_configs/xml_rpc.conf.xml",
            "autoload_configs/event_socket.conf.xml",
            "autoload_configs/amqp.conf.xml",
            "directory/default/1000.xml",
            // brian's voicemail PIN 9999 is literal.
            "directory/default/brian.xml",
        ] {
            assert!(holds_secret(&read(rel)), "{rel}");
        }
        for rel in [
            "autoload_configs/modules.conf.xml",
            "sip_profiles/external/example.xml",
            "autoload_configs/switch.conf.xml",
            "directory/default.xml",
        ] {
            assert!(!holds_secret(&read(rel)), "{rel}: commented or a variable");
        }
        assert!(holds_secret(
            "<include><X-PRE-PROCESS cmd=\"set\" data=\"carrier_password=s3cret\"/></include>"
        ));
        assert!(!holds_secret(
            "<include><!-- <param name=\"password\" value=\"x\"/> --></include>"
        ));
    }

    #[test]
    fn world_readable_files_with_credentials_become_root_and_freeswitch_only_then_nothing() {
        let f = HostFacts::stock();
        let mut extra = Files {
            conf_dir: Some("/etc/freeswitch".into()),
            ..Files::default()
        };
        let gw = "<include><gateway name=\"carrier\"><param name=\"password\" value=\"gwSecret9\"/></gateway></include>\n";
        let rpc =
            std::fs::read_to_string(format!("{REF}/autoload_configs/xml_rpc.conf.xml")).unwrap();
        for (rel, text, mode) in [
            ("sip_profiles/external/carrier.xml", gw, 0o644),
            ("autoload_configs/xml_rpc.conf.xml", rpc.as_str(), 0o444),
            (
                "autoload_configs/modules.conf.xml",
                "<configuration/>\n",
                0o644,
            ),
        ] {
            let ff = file(rel, text, mode);
            extra.files.insert(ff.path.clone(), ff);
        }
        let p = plan_of(&f, &extra);
        let paths: Vec<&str> = p.edits.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/etc/freeswitch/autoload_configs/xml_rpc.conf.xml",
                "/etc/freeswitch/sip_profiles/external/carrier.xml"
            ]
        );
        for e in &p.edits {
            assert!(!e.content_changed() && e.want.mode & 0o007 == 0, "{e:?}");
        }
        assert!(
            p.diffs.is_empty() && !p.reload.any(),
            "modes only: no diff, no reload"
        );
        assert!(!format!("{p:?}").contains("gwSecret9"));
        // Applied: nothing left to do.
        let mut done = extra.clone();
        for e in &p.edits {
            let ff = done.files.get_mut(&e.path).unwrap();
            ff.mode = e.want.mode;
            ff.owner = e.want.user.clone();
            ff.group = e.want.group.clone();
        }
        assert!(plan_of(&f, &done).is_noop());
    }
}
