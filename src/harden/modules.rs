//! Production step `modules`: stop loading the service-exposing modules nothing uses (audit
//! FS-MOD-01), and take them out of the running FreeSWITCH where it lets us.
//!
//! - `mod_verto` (WebRTC signalling on 8081/8082) while autoload_configs/verto.conf.xml is the
//!   stock one: nobody configured a verto profile for their own use;
//! - `mod_signalwire` (connects out to the SignalWire cloud) while it holds no token: no
//!   `adoption-auth.dat` in FreeSWITCH's storage dir (where mod_signalwire keeps the adoption it
//!   completed) and no live `<authentication>` in signalwire.conf.xml;
//! - `mod_xml_rpc` (HTTP API on 8080) always (the stock tree has it commented out already).
//!
//! A module named in the inventory's `modules_keep` is never touched. The `<load module=...>`
//! tag is commented out where it stands (one span edit per module, every other byte kept).
//! FreeSWITCH reads modules.conf.xml only at startup, so the reload phase sends `unload NAME`
//! for each module the running FreeSWITCH has loaded (preflight asked `module_exists`), and a
//! module it refuses to unload stays until the next restart, which the report says (fsfleet
//! never restarts FreeSWITCH).

use super::step::{self, PlanInput};
use super::{HostFacts, Probes, StepError, StepPlan};
use crate::conf::{self, diff, xml};
use crate::facts::{self, Fact, FactError, Files, ScriptInput};
use crate::inventory::Host;

pub const NAME: &str = "modules";
pub const FILE: &str = "autoload_configs/modules.conf.xml";
const VERTO_CONF: &str = "autoload_configs/verto.conf.xml";
const SIGNALWIRE_CONF: &str = "autoload_configs/signalwire.conf.xml";

/// The modules this step may stop loading and unload: fixed names, never host text (they go
/// into `unload` commands).
pub const CANDIDATES: &[&str] = &["mod_verto", "mod_signalwire", "mod_xml_rpc"];

/// What the comment that disables a `<load>` line starts with.
pub const MARK: &str = "<!-- fsfleet harden modules: not loaded (unused, exposes a service):";

/// The SHA-1 of the stock 1.10.12 verto.conf.xml with its whitespace collapsed (a unit test
/// recomputes it from the reference tree): any other verto.conf.xml is the operator's.
const STOCK_VERTO_SHA1: &str = "811effacb5fcead0007d069350f4f1caed24c046";

/// Where mod_signalwire keeps a completed adoption: `adoption-auth.dat` in FreeSWITCH's
/// storage dir (packages: /var/lib/freeswitch/storage; source builds: under /usr/local).
const STORAGE_DIRS: &[&str] = &[
    "/var/lib/freeswitch/storage",
    "/usr/local/freeswitch/storage",
];

/// The step in the registry: its edits go out in the config write, its unloads with the reload.
pub struct Modules;
step::config_step!(Modules, Production);

pub fn probes(p: &mut Probes, _host: &Host) {
    p.fact::<ModuleConfs>();
    p.fact::<SignalwireAdoption>();
}

/// verto.conf.xml and signalwire.conf.xml, which only this step reads.
pub struct ModuleConfs;

impl Fact for ModuleConfs {
    const NAME: &'static str = "modules_confs";
    type Value = Files;

    fn snippet(input: &ScriptInput<'_>) -> String {
        facts::files_snippet(input.host, &[VERTO_CONF, SIGNALWIRE_CONF], &[])
    }

    fn parse(text: &str, _: Option<i32>) -> Result<Files, FactError> {
        Files::parse(text).map_err(|e| FactError::Malformed {
            fact: Self::NAME,
            what: e.to_string(),
        })
    }
}

/// The `adoption-auth.dat` files mod_signalwire wrote, one path a line.
pub struct SignalwireAdoption;

impl Fact for SignalwireAdoption {
    const NAME: &'static str = "modules_signalwire_adoption";
    type Value = Vec<String>;

    fn snippet(_: &ScriptInput<'_>) -> String {
        format!(
            "for d in {}; do [ -e \"$d/adoption-auth.dat\" ] && echo \"$d/adoption-auth.dat\"; done; true",
            STORAGE_DIRS.join(" ")
        )
    }

    fn parse(text: &str, _: Option<i32>) -> Result<Vec<String>, FactError> {
        Ok(text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect())
    }
}

/// What the step reads besides modules.conf.xml, as plain values (the unit tests build them).
#[derive(Debug, Clone, Default)]
pub struct Usage {
    /// verto.conf.xml's text (None: absent or unreadable).
    pub verto_conf: Option<String>,
    /// signalwire.conf.xml's text.
    pub signalwire_conf: Option<String>,
    /// adoption-auth.dat files found.
    pub adoption: Vec<String>,
}

impl Usage {
    fn from_facts(f: &HostFacts) -> Usage {
        let confs = f.get::<ModuleConfs>().unwrap_or_default();
        let text = |rel: &str| confs.conf(rel).and_then(|f| f.text()).map(str::to_string);
        Usage {
            verto_conf: text(VERTO_CONF),
            signalwire_conf: text(SIGNALWIRE_CONF),
            adoption: f.get::<SignalwireAdoption>().unwrap_or_default(),
        }
    }

    /// Why a module counts as used (None: unused, so it may go).
    fn in_use(&self, module: &str) -> Option<String> {
        match module {
            "mod_verto" => self
                .verto_conf
                .as_deref()
                .filter(|t| fingerprint(t) != STOCK_VERTO_SHA1)
                .map(|_| format!("{VERTO_CONF} is not the stock one (verto profiles configured)")),
            "mod_signalwire" => {
                if let Some(p) = self.adoption.first() {
                    return Some(format!("it holds a SignalWire token ({p})"));
                }
                let auth = self.signalwire_conf.as_deref().is_some_and(|t| {
                    xml::scan(t)
                        .map_or(true, |tags| tags.iter().any(|t| t.name == "authentication"))
                });
                auth.then(|| format!("{SIGNALWIRE_CONF} sets <authentication> (a token)"))
            }
            _ => None,
        }
    }
}

/// SHA-1 of the text with its whitespace collapsed: re-indenting or CRLF is still stock.
fn fingerprint(text: &str) -> String {
    use sha1::Digest;
    let norm = text.split_whitespace().collect::<Vec<_>>().join(" ");
    data_encoding::HEXLOWER.encode(&sha1::Sha1::digest(norm.as_bytes()))
}

pub fn step_plan(input: &PlanInput<'_>) -> Result<StepPlan, StepError> {
    plan(
        input.facts,
        &Usage::from_facts(input.facts),
        &input.host.modules_keep,
        input.pre.loaded_modules.as_deref(),
    )
}

/// The plan (pure): `live` is what the running FreeSWITCH said it has loaded (None: unknown).
pub fn plan(
    f: &HostFacts,
    usage: &Usage,
    keep: &[String],
    live: Option<&[String]>,
) -> Result<StepPlan, StepError> {
    let mut out = StepPlan::default();
    let Some(file) = f.files.conf(FILE) else {
        out.warnings.push(format!(
            "no {FILE}: nothing to change (FreeSWITCH loads its built-in list)"
        ));
        return Ok(out);
    };
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
    let tags = xml::scan(text).map_err(err)?;
    let mut spans: Vec<std::ops::Range<usize>> = Vec::new();
    for m in CANDIDATES {
        if keep.iter().any(|k| k == m) {
            continue;
        }
        let loads: Vec<&xml::Tag> = tags
            .iter()
            .filter(|t| t.name == "load" && t.kind != xml::TagKind::End)
            .filter(|t| t.attr("module").is_some_and(|a| a.value == *m))
            .collect();
        if let Some(why) = usage.in_use(m) {
            if !loads.is_empty() {
                out.warnings.push(format!(
                    "{m} kept: {why}; add it to modules_keep to say so (FS-MOD-01 still fails)"
                ));
            }
            continue;
        }
        for t in &loads {
            // A `<load ...>` with children or text would need more than one tag commented.
            if t.kind != xml::TagKind::Empty || text[t.span.clone()].contains("--") {
                return Err(StepError::Refused(format!(
                    "{}: the <load module=\"{m}\"> element is not a single tag; comment it out by hand",
                    file.path
                )));
            }
            spans.push(t.span.clone());
        }
        if !loads.is_empty() {
            out.changes.push(format!(
                "stop loading {m} at startup ({}) (FS-MOD-01)",
                file.path
            ));
        }
        let running = match live {
            Some(l) => l.iter().any(|x| x == m),
            // Unknown: what the file loaded is what runs.
            None => !loads.is_empty(),
        };
        if running {
            out.changes.push(format!(
                "unload {m} from the running FreeSWITCH (unload {m} over the Event Socket)"
            ));
            out.reload.unload.push(m.to_string());
        }
    }
    if spans.is_empty() {
        return Ok(out);
    }
    spans.sort_by_key(|s| s.start);
    let mut new = text.to_string();
    for s in spans.iter().rev() {
        let tag = &text[s.clone()];
        new.replace_range(s.clone(), &format!("{MARK} {tag} -->"));
    }
    out.diffs
        .push(diff::masked_diff(&file.path, text, &new, &[]));
    out.edits
        .extend(f.edit(&file.path, new.into_bytes(), false)?);
    // modules.conf.xml is read at startup only: no reloadxml for it.
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::evidence::testing as ev;
    use crate::audit::{Live, Status};

    const REF: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/reference/freeswitch-conf-1.10.12"
    );

    fn stock_usage() -> Usage {
        Usage {
            verto_conf: std::fs::read_to_string(format!("{REF}/{VERTO_CONF}")).ok(),
            signalwire_conf: std::fs::read_to_string(format!("{REF}/{SIGNALWIRE_CONF}")).ok(),
            adoption: vec![],
        }
    }

    fn facts(files: &[(String, String)]) -> HostFacts {
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        HostFacts::with_conf("/etc/freeswitch", &refs)
    }

    fn modules_after(files: &[(String, String)], p: &StepPlan) -> Vec<(String, String)> {
        let mut out = files.to_vec();
        for e in &p.edits {
            let rel = e.path.trim_start_matches("/etc/freeswitch/");
            out.iter_mut().find(|(r, _)| r == rel).unwrap().1 =
                String::from_utf8(e.new.clone()).unwrap();
        }
        out
    }

    fn audit(files: &[(String, String)]) -> crate::audit::Finding {
        ev::eval("FS-MOD-01", &ev::evidence(files, &[], Live::default()))
    }

    #[test]
    fn the_stock_verto_conf_fingerprint_is_the_reference_trees() {
        let u = stock_usage();
        assert_eq!(
            fingerprint(u.verto_conf.as_deref().unwrap()),
            STOCK_VERTO_SHA1
        );
        assert_eq!(u.in_use("mod_verto"), None);
        assert_eq!(u.in_use("mod_signalwire"), None);
    }

    #[test]
    fn stock_verto_and_signalwire_go_then_nothing_and_fs_mod_01_passes() {
        let files = ev::stock_files();
        assert_eq!(audit(&files).status, Status::Fail);
        let live = vec!["mod_verto".to_string(), "mod_signalwire".to_string()];
        let p = plan(&facts(&files), &stock_usage(), &[], Some(&live)).unwrap();
        assert_eq!(
            p.changes,
            [
                "stop loading mod_verto at startup (/etc/freeswitch/autoload_configs/modules.conf.xml) (FS-MOD-01)",
                "unload mod_verto from the running FreeSWITCH (unload mod_verto over the Event Socket)",
                "stop loading mod_signalwire at startup (/etc/freeswitch/autoload_configs/modules.conf.xml) (FS-MOD-01)",
                "unload mod_signalwire from the running FreeSWITCH (unload mod_signalwire over the Event Socket)",
            ]
        );
        assert_eq!(p.reload.unload, ["mod_verto", "mod_signalwire"]);
        assert!(
            !p.reload.reloadxml,
            "modules.conf.xml is read at startup only"
        );
        let done = modules_after(&files, &p);
        let f = audit(&done);
        assert_eq!(f.status, Status::Pass, "{:?}", f.evidence);
        // Span edits only: the old text is the new one with the markers taken out.
        let (_, new) = done.iter().find(|(r, _)| r == FILE).unwrap();
        let (_, old) = files.iter().find(|(r, _)| r == FILE).unwrap();
        let mut back = new.clone();
        for m in ["mod_verto", "mod_signalwire"] {
            let tag = format!("<load module=\"{m}\"/>");
            back = back.replace(&format!("{MARK} {tag} -->"), &tag);
        }
        assert_eq!(&back, old);
        // Second run: the file loads neither, the running FreeSWITCH has neither.
        let again = plan(&facts(&done), &stock_usage(), &[], Some(&[])).unwrap();
        assert!(again.is_noop() && again.edits.is_empty() && again.reload.unload.is_empty());
        // A run cut after the write: the file is done, the module still runs: only the unload.
        let cut = plan(&facts(&done), &stock_usage(), &[], Some(&live[..1])).unwrap();
        assert!(cut.edits.is_empty());
        assert_eq!(cut.reload.unload, ["mod_verto"]);
    }

    #[test]
    fn kept_used_and_operator_loaded_modules() {
        let mut files = ev::stock_files();
        ev::edit(&mut files, FILE, |t| {
            t.replace(
                "<!-- <load module=\"mod_xml_rpc\"/> -->",
                "<load module=\"mod_xml_rpc\"/>",
            )
        });
        // mod_verto configured by the operator, mod_signalwire adopted, mod_xml_rpc kept.
        let mut usage = stock_usage();
        usage.verto_conf = usage
            .verto_conf
            .map(|t| t.replace("default-v4", "office-webrtc"));
        usage.adoption = vec!["/var/lib/freeswitch/storage/adoption-auth.dat".into()];
        let keep = vec!["mod_xml_rpc".to_string()];
        let p = plan(&facts(&files), &usage, &keep, None).unwrap();
        assert!(p.is_noop() && p.edits.is_empty(), "{:?}", p.changes);
        let w = p.warnings.join("\n");
        assert!(
            w.contains("mod_verto kept: autoload_configs/verto.conf.xml is not the stock one"),
            "{w}"
        );
        assert!(
            w.contains("mod_signalwire kept: it holds a SignalWire token"),
            "{w}"
        );
        assert!(
            !w.contains("mod_xml_rpc"),
            "kept by the inventory: nothing to say"
        );
        // Not kept: mod_xml_rpc goes, live state unknown: the file decides.
        let p = plan(&facts(&files), &usage, &[], None).unwrap();
        assert_eq!(p.reload.unload, ["mod_xml_rpc"]);
        // Re-indented (CRLF, tabs) stock verto.conf.xml is still stock.
        let mut crlf = stock_usage();
        crlf.verto_conf = crlf.verto_conf.map(|t| t.replace('\n', "\r\n\t"));
        assert_eq!(crlf.in_use("mod_verto"), None);
        // An <authentication> in signalwire.conf.xml is a token.
        let mut auth = stock_usage();
        auth.signalwire_conf = Some(
            "<configuration name=\"signalwire.conf\"><settings/><authentication>x</authentication></configuration>"
                .into(),
        );
        assert!(auth.in_use("mod_signalwire").is_some());
    }

    #[test]
    fn a_load_element_with_content_is_refused() {
        let mut files = ev::stock_files();
        ev::edit(&mut files, FILE, |t| {
            t.replace(
                "<load module=\"mod_verto\"/>",
                "<load module=\"mod_verto\"></load>",
            )
        });
        let e = plan(&facts(&files), &stock_usage(), &[], None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a single tag"), "{e}");
    }

    #[test]
    fn the_adoption_fact_reads_paths_and_the_confs_fact_reads_files() {
        assert_eq!(
            SignalwireAdoption::parse("/var/lib/freeswitch/storage/adoption-auth.dat\n\n", Some(0))
                .unwrap(),
            ["/var/lib/freeswitch/storage/adoption-auth.dat"]
        );
        assert!(SignalwireAdoption::parse("", Some(0)).unwrap().is_empty());
        assert!(ModuleConfs::parse("", Some(0)).is_ok());
    }
}
