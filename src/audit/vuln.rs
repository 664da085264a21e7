//! Known-vulnerability controls: one `FS-VULN-NN` control per advisory of the catalogue
//! (`vuln/advisories.toml`, see [`catalogue`]), on the versions the host runs.
//!
//! A control fails when the host's version is older than the advisory's fixed release and the
//! advisory's mitigation (if any) is not in force; passes when the version is fixed, or with
//! the evidence `mitigated by ...` when the mitigating setting is there. The evidence names the
//! version seen, where it was read, and the fixed release. A version that cannot be read is an
//! `error` (never a silent pass).

use std::sync::LazyLock;

pub mod catalogue;
pub mod facts;
pub mod version;

use catalogue::{Advisory, CatalogueError, Component, Mitigation};
use facts::BinarySource;
use version::Version;

use super::evidence::{EslProbe, Evidence};
use super::{Control, ControlError, Finding, Severity, Status};
use crate::model::switch_true;

pub const FAMILY: &str = "Known vulnerabilities";

/// The first evidence line of a control whose advisory applies but is mitigated.
pub const MITIGATED: &str = "mitigated by ";

/// The lowest sofia-sip FreeSWITCH builds against, from the FreeSWITCH release on: v1.10.11's
/// release notes, "Bump sofia-sip library requirement to version 1.13.17"
/// (<https://github.com/signalwire/freeswitch/releases/tag/v1.10.11>).
const SOFIA_FLOOR: &[([u32; 3], [u32; 3])] = &[([1, 10, 11], [1, 13, 17])];

static CATALOGUE: LazyLock<Result<Vec<Advisory>, CatalogueError>> =
    LazyLock::new(|| catalogue::parse(catalogue::SOURCE));

static CONTROLS: LazyLock<Vec<Control>> = LazyLock::new(build);

/// The advisories of the catalogue, or why it could not be read.
pub fn advisories() -> Result<&'static [Advisory], &'static CatalogueError> {
    match LazyLock::force(&CATALOGUE) {
        Ok(v) => Ok(v.as_slice()),
        Err(e) => Err(e),
    }
}

/// The FS-VULN controls: one per advisory; a catalogue that cannot be read is one control that
/// always errors (so the report says so instead of silently checking nothing).
pub fn controls() -> &'static [Control] {
    LazyLock::force(&CONTROLS).as_slice()
}

type EvalFn = fn(&Evidence) -> Result<Finding, ControlError>;

/// Control `N`'s evaluation: a plain `fn` (what [`Control`] holds) bound to the N-th advisory.
fn eval_at<const N: usize>(ev: &Evidence) -> Result<Finding, ControlError> {
    let all = advisories().map_err(|e| ControlError::Catalogue(e.clone()))?;
    let a = all.get(N).ok_or_else(|| {
        ControlError::Catalogue(CatalogueError::Entry {
            entry: format!("#{N}"),
            what: "missing".into(),
        })
    })?;
    evaluate(a, ev)
}

macro_rules! evals {
    ($($n:literal)*) => { [$(eval_at::<$n> as EvalFn),*] };
}

/// One slot per advisory; a unit test keeps the catalogue within it.
const EVALS: [EvalFn; 48] = evals!(
    0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23
    24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47
);

fn too_many(_: &Evidence) -> Result<Finding, ControlError> {
    Err(ControlError::Catalogue(CatalogueError::Entry {
        entry: "catalogue".into(),
        what: format!("more than {} advisories: raise EVALS", EVALS.len()),
    }))
}

fn unreadable(_: &Evidence) -> Result<Finding, ControlError> {
    Err(ControlError::Catalogue(match advisories() {
        Err(e) => e.clone(),
        Ok(_) => CatalogueError::Toml("unreadable".into()),
    }))
}

fn build() -> Vec<Control> {
    match advisories() {
        Ok(all) => all
            .iter()
            .enumerate()
            .map(|(i, a)| Control {
                id: &a.control,
                family: FAMILY,
                severity: a.severity,
                title: &a.control_title,
                rationale: &a.rationale,
                remediation: &a.remediation,
                baseline: false,
                eval: EVALS.get(i).copied().unwrap_or(too_many),
            })
            .collect(),
        Err(_) => vec![Control {
            id: "FS-VULN-00",
            family: FAMILY,
            severity: Severity::High,
            title: "The advisory catalogue can be read",
            rationale: "Without its catalogue fsfleet cannot tell which published advisories apply.",
            remediation: "Rebuild fsfleet from a checkout whose src/audit/vuln/advisories.toml loads.",
            baseline: false,
            eval: unreadable,
        }],
    }
}

/// A version the host runs, and where it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    version: Version,
    /// `freeswitch -version of /usr/bin/freeswitch, the running process`, ...
    how: String,
    /// Only a lower bound is known (sofia-sip from FreeSWITCH's build requirement).
    at_least: bool,
}

/// FreeSWITCH's version: the running binary's `-version`, else the Event Socket's `status`,
/// else `fs_cli -x status`, else the installed binary's `-version`, else the package.
fn freeswitch_version(ev: &Evidence) -> Result<Seen, ControlError> {
    let bin = ev.facts.sections.get::<facts::FsBinaryFact>().ok();
    let mut tried: Vec<String> = Vec::new();
    let from_bin = |running: bool| -> Option<Seen> {
        let b = bin.as_ref()?;
        if (b.source != BinarySource::Installed) != running {
            return None;
        }
        let version = Version::parse(b.version_text()?)?;
        let path = b.path.as_deref().unwrap_or("?");
        let how = match b.source {
            BinarySource::Exe => format!("freeswitch -version of {path}, the running process"),
            BinarySource::Started => {
                format!("freeswitch -version of {path}, which the running process started from")
            }
            BinarySource::Installed => {
                format!("freeswitch -version of {path}, installed; no FreeSWITCH runs from it")
            }
        };
        Some(Seen {
            version,
            how,
            at_least: false,
        })
    };
    if let Some(s) = from_bin(true) {
        return Ok(s);
    }
    match &bin {
        Some(b) => {
            if let Some(r) = &b.refused {
                tried.push(format!("freeswitch -version not run ({r})"));
            } else if let Some(r) = &b.replaced {
                tried.push(format!("the running binary was replaced on disk ({r})"));
            } else if b.said.is_some() && b.version_text().is_none() {
                tried.push("freeswitch -version printed no version".into());
            }
        }
        None => tried.push("the freeswitch -version probe did not run".into()),
    }
    for probe in [&ev.live.configured, &ev.live.cluecon] {
        if let EslProbe::Accepted { status: Some(line) } = probe {
            let (v, _) = crate::facts::parse_status_line(line);
            if let Some(version) = v.as_deref().and_then(Version::parse) {
                return Ok(Seen {
                    version,
                    how: "Event Socket status".into(),
                    at_least: false,
                });
            }
        }
    }
    tried.push("the Event Socket gave no status".into());
    let fs_cli = ev.facts.sections.get::<crate::facts::FsStatus>().ok();
    if let Some(version) = fs_cli
        .and_then(|s| s.version)
        .as_deref()
        .and_then(Version::parse)
    {
        return Ok(Seen {
            version,
            how: "fs_cli -x status".into(),
            at_least: false,
        });
    }
    tried.push("fs_cli -x status gave no version".into());
    if let Some(s) = from_bin(false) {
        return Ok(s);
    }
    if let Some((name, v)) = installed(ev).and_then(|i| i.package(|n| n == "freeswitch").cloned())
        && let Some(version) = Version::parse(&v)
    {
        return Ok(Seen {
            version,
            how: format!("package {name} {v}"),
            at_least: false,
        });
    }
    tried.push("no freeswitch package".into());
    Err(ControlError::VersionUnknown {
        component: "FreeSWITCH",
        tried: tried.join("; "),
    })
}

fn installed(ev: &Evidence) -> Option<facts::Installed> {
    ev.facts.sections.get::<facts::VulnPackages>().ok()
}

/// sofia-sip's version: its package, else its pkg-config file, else the lowest release the
/// FreeSWITCH version seen builds against (a lower bound only).
fn sofia_version(ev: &Evidence) -> Result<Seen, ControlError> {
    let inst = installed(ev).unwrap_or_default();
    if let Some((name, v)) = inst.package(|n| n.starts_with("libsofia-sip-ua"))
        && let Some(version) = Version::parse(v)
    {
        return Ok(Seen {
            version,
            how: format!("package {name} {v}"),
            at_least: false,
        });
    }
    if let Some((path, v)) = &inst.sofia_pc
        && let Some(version) = Version::parse(v)
    {
        return Ok(Seen {
            version,
            how: format!("{path}: Version {v}"),
            at_least: false,
        });
    }
    let fs = freeswitch_version(ev).map_err(|e| ControlError::VersionUnknown {
        component: "sofia-sip",
        tried: format!("no libsofia-sip-ua package, no sofia-sip-ua.pc, and {e}"),
    })?;
    let floor = SOFIA_FLOOR
        .iter()
        .rev()
        .find(|(fs_from, _)| !fs.version.before(&Version::release(*fs_from)));
    match floor {
        Some((fs_from, sofia)) => Ok(Seen {
            version: Version::release(*sofia),
            how: format!(
                "no libsofia-sip-ua package or sofia-sip-ua.pc; FreeSWITCH {} ({}) builds only \
                 against sofia-sip {} or later, as since {}",
                fs.version,
                fs.how,
                Version::release(*sofia),
                Version::release(*fs_from)
            ),
            at_least: true,
        }),
        None => Err(ControlError::VersionUnknown {
            component: "sofia-sip",
            tried: format!(
                "no libsofia-sip-ua package, no sofia-sip-ua.pc, and FreeSWITCH {} sets no \
                 known lower bound",
                fs.version
            ),
        }),
    }
}

/// Whether the mitigation is in force: `Ok((true, evidence))` when it is.
fn mitigation_state(m: &Mitigation, ev: &Evidence) -> Result<(bool, Vec<String>), ControlError> {
    match m {
        Mitigation::ModuleNotLoaded { module, .. } => {
            let at_start = super::modules::loaded(ev)?.iter().any(|l| l == module);
            let conf = if at_start {
                format!("autoload_configs/modules.conf.xml: {module} is loaded")
            } else {
                format!("autoload_configs/modules.conf.xml: {module} is not loaded")
            };
            // The running process's maps, where root may read them: a module unloaded in the
            // config stays loaded until FreeSWITCH restarts, and one loaded by hand (`load`)
            // is not in the config. Mitigated only when it is loaded neither now nor at start.
            let live = ev
                .facts
                .sections
                .get::<facts::FsModulesFact>()
                .ok()
                .filter(|m| m.read);
            let Some(live) = live else {
                return Ok((!at_start, vec![conf]));
            };
            let now = live.modules.iter().any(|l| l == module);
            let running = if now {
                format!(
                    "{module} is loaded in the running FreeSWITCH (its process maps {module}.so)"
                )
            } else {
                format!(
                    "{module} is not loaded in the running FreeSWITCH (its process maps no {module}.so)"
                )
            };
            let mut lines = vec![conf, running];
            if at_start && !now {
                lines.push("it loads again when FreeSWITCH restarts".to_string());
            } else if !at_start && now {
                lines.push(format!(
                    "restart FreeSWITCH (or `unload {module}`) to unload it"
                ));
            }
            Ok((!(now || at_start), lines))
        }
        Mitigation::ProfileParam { param, value, .. } => {
            let found = ev.model().profile_param(param);
            if found.profiles.is_empty() {
                return Err(ControlError::Profiles(if found.unloadable.is_empty() {
                    "no SIP profile found in sip_profiles/*.xml".into()
                } else {
                    found.unloadable.join("; ")
                }));
            }
            let wants_true = switch_true(value);
            let mut short = Vec::new();
            let mut ok = Vec::new();
            for p in &found.profiles {
                let set = p.value.as_deref().is_some_and(|v| {
                    if wants_true {
                        switch_true(v)
                    } else {
                        v.trim().eq_ignore_ascii_case(value)
                    }
                });
                let shown = p.value.as_deref().unwrap_or("not set");
                let line = format!("{}: profile {} {param} = {shown}", p.file, p.name);
                if set { ok.push(line) } else { short.push(line) }
            }
            if short.is_empty() {
                Ok((true, ok))
            } else {
                Ok((false, short))
            }
        }
    }
}

fn evaluate(a: &Advisory, ev: &Evidence) -> Result<Finding, ControlError> {
    let seen = match a.component {
        Component::Freeswitch => freeswitch_version(ev)?,
        Component::SofiaSip => sofia_version(ev)?,
    };
    let comp = a.component.name();
    if !seen.version.before(&a.fixed) {
        let at = if seen.at_least { "at least " } else { "" };
        return Ok(Finding::pass(vec![format!(
            "{comp} {at}{} ({}): not affected by {}, fixed in {}",
            seen.version,
            seen.how,
            a.ids(),
            a.fixed
        )]));
    }
    if seen.at_least {
        return Err(ControlError::VersionUnknown {
            component: comp,
            tried: format!(
                "only a lower bound is known ({} or later: {}), and {} is fixed in {}",
                seen.version, seen.how, a.id, a.fixed
            ),
        });
    }
    let affected = format!(
        "{comp} {} ({}) is affected by {}: fixed in {}",
        seen.version,
        seen.how,
        a.ids(),
        a.fixed
    );
    let Some(m) = &a.mitigation else {
        return Ok(Finding::fail(vec![
            affected,
            format!(
                "no mitigating setting is known: upgrade {comp} to {} or later",
                a.fixed
            ),
        ]));
    };
    let (on, lines) = mitigation_state(m, ev)?;
    if on {
        let mut evidence = vec![format!("{MITIGATED}{} ({})", m.describe(), m.basis())];
        evidence.push(affected);
        evidence.extend(lines);
        Ok(Finding::pass(evidence))
    } else {
        let mut evidence = vec![affected];
        evidence.extend(lines);
        evidence.push(format!(
            "not mitigated (it is when {}): until the upgrade, {}",
            m.describe(),
            m.how()
        ));
        Ok(Finding::fail(evidence))
    }
}

/// The known-vulnerability count of one host's results.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    /// Advisories that apply to the versions the host runs (mitigated or not, waived or not).
    pub known: usize,
    /// Of those, the ones whose mitigating setting is in force.
    pub mitigated: usize,
    /// FS-VULN controls that could not decide (version unknown).
    pub undecided: usize,
}

impl Summary {
    /// From one host's results: a failing FS-VULN control is a known vulnerability, a passing
    /// one whose first evidence line is [`MITIGATED`] a mitigated one (a waived one counts by
    /// what it found).
    pub fn of(results: &[super::command::ControlResult]) -> Summary {
        let mut s = Summary::default();
        for r in results.iter().filter(|r| r.id.starts_with("FS-VULN-")) {
            let status = if r.status == Status::Waived {
                r.waived_status.unwrap_or(Status::Waived)
            } else {
                r.status
            };
            let mitigated = r.evidence.first().is_some_and(|e| e.starts_with(MITIGATED));
            match status {
                Status::Fail => s.known += 1,
                Status::Pass if mitigated => {
                    s.known += 1;
                    s.mitigated += 1;
                }
                Status::Error => s.undecided += 1,
                _ => {}
            }
        }
        s
    }

    /// `3 known vulnerabilities, 1 mitigated` (`, 2 undecided` when some could not decide).
    pub fn line(&self) -> String {
        let mut out = format!(
            "{} known vulnerabilit{}, {} mitigated",
            self.known,
            if self.known == 1 { "y" } else { "ies" },
            self.mitigated
        );
        if self.undecided > 0 {
            out.push_str(&format!(", {} undecided (version unknown)", self.undecided));
        }
        out
    }
}

#[cfg(test)]
mod tests;
