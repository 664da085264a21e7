//! The advisory catalogue: `advisories.toml`, compiled into the binary, read and checked once.
//!
//! The file is the program's own data (a unit test loads it), but it is still parsed without a
//! panic: a broken catalogue makes one `error` control instead of none (see
//! [`super::controls`]).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde::Deserialize;

use super::version::Version;
use crate::audit::Severity;

/// The catalogue's text, as committed.
pub const SOURCE: &str = include_str!("advisories.toml");

/// Why the catalogue cannot be used (names the entry).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogueError {
    #[error("the advisory catalogue is not valid TOML: {0}")]
    Toml(String),
    #[error("advisory {entry}: {what}")]
    Entry { entry: String, what: String },
}

/// Which software an advisory is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Component {
    Freeswitch,
    SofiaSip,
}

impl Component {
    pub fn name(self) -> &'static str {
        match self {
            Component::Freeswitch => "FreeSWITCH",
            Component::SofiaSip => "sofia-sip",
        }
    }
}

/// A setting that keeps a flaw out of reach on an affected version.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Mitigation {
    /// The flaw is in one module: not loading it (modules.conf.xml) mitigates.
    ModuleNotLoaded { module: String, basis: String },
    /// Every SIP profile sets `param` to `value` (FreeSWITCH's true values count as `true`).
    ProfileParam {
        param: String,
        value: String,
        basis: String,
    },
}

impl Mitigation {
    /// What has to be in force, as the finding and the docs say it.
    pub fn describe(&self) -> String {
        match self {
            Mitigation::ModuleNotLoaded { module, .. } => format!("{module} is not loaded"),
            Mitigation::ProfileParam { param, value, .. } => {
                format!("every SIP profile sets {param} to {value}")
            }
        }
    }

    /// How to put it in force: the setting to change.
    pub fn how(&self) -> String {
        match self {
            Mitigation::ModuleNotLoaded { module, .. } => format!(
                "remove or comment out `<load module=\"{module}\"/>` in \
                 autoload_configs/modules.conf.xml and restart FreeSWITCH"
            ),
            Mitigation::ProfileParam { param, value, .. } => format!(
                "set `<param name=\"{param}\" value=\"{value}\"/>` in the <settings> of every \
                 sip_profiles/*.xml profile and rescan the profiles"
            ),
        }
    }

    pub fn basis(&self) -> &str {
        match self {
            Mitigation::ModuleNotLoaded { basis, .. } | Mitigation::ProfileParam { basis, .. } => {
                basis
            }
        }
    }
}

/// One advisory of the catalogue, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advisory {
    pub control: String,
    pub id: String,
    pub ghsa: Option<String>,
    pub component: Component,
    pub module: Option<String>,
    pub title: String,
    pub fixed: Version,
    pub severity: Severity,
    pub pre_auth: bool,
    pub published: String,
    pub source: String,
    pub checked: Vec<String>,
    pub mitigation: Option<Mitigation>,
    /// The control's title: the IDs, what the flaw is and where it is fixed.
    pub control_title: String,
    pub rationale: String,
    pub remediation: String,
}

impl Advisory {
    /// `CVE-2026-49841 (GHSA-wfrq-qvg2-f88f)`, or the one ID there is.
    pub fn ids(&self) -> String {
        match &self.ghsa {
            Some(g) if *g != self.id => format!("{} ({g})", self.id),
            _ => self.id.clone(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalogue {
    advisory: Vec<RawAdvisory>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdvisory {
    control: String,
    id: String,
    ghsa: Option<String>,
    component: Component,
    module: Option<String>,
    title: String,
    fixed: String,
    severity: String,
    pre_auth: bool,
    published: String,
    source: String,
    checked: Vec<String>,
    mitigation: Option<Mitigation>,
}

/// Parse and check a catalogue text.
pub fn parse(text: &str) -> Result<Vec<Advisory>, CatalogueError> {
    let raw: RawCatalogue =
        toml::from_str(text).map_err(|e| CatalogueError::Toml(e.message().to_string()))?;
    let mut controls = BTreeSet::new();
    let mut ids = BTreeSet::new();
    let mut out = Vec::with_capacity(raw.advisory.len());
    for r in raw.advisory {
        let bad = |what: String| CatalogueError::Entry {
            entry: r.id.clone(),
            what,
        };
        if !well_formed_id(&r.id) {
            return Err(bad(
                "the id is neither CVE-YYYY-N nor GHSA-xxxx-xxxx-xxxx".into()
            ));
        }
        if let Some(g) = &r.ghsa
            && !g.starts_with("GHSA-")
        {
            return Err(bad(format!("ghsa {g:?} is not a GHSA ID")));
        }
        if !well_formed_control(&r.control) {
            return Err(bad(format!("control {:?} is not FS-VULN-NN", r.control)));
        }
        if !controls.insert(r.control.clone()) {
            return Err(bad(format!("control {} is used twice", r.control)));
        }
        if !ids.insert(r.id.clone()) {
            return Err(bad("listed twice".into()));
        }
        let fixed = Version::parse(&r.fixed)
            .filter(|v| !v.pre_release && v.raw == v.short())
            .ok_or_else(|| bad(format!("fixed {:?} is not a release version", r.fixed)))?;
        let severity = match r.severity.as_str() {
            "critical" => Severity::Critical,
            "high" => Severity::High,
            "medium" => Severity::Medium,
            "low" => Severity::Low,
            s => {
                return Err(bad(format!(
                    "severity {s:?} is not critical/high/medium/low"
                )));
            }
        };
        if !r.source.starts_with("https://github.com/") {
            return Err(bad(
                "source is not on the project's GitHub (its advisory, or the fixing change)".into(),
            ));
        }
        if r.checked.is_empty() {
            return Err(bad("checked is empty: say what was read".into()));
        }
        if let Some(Mitigation::ModuleNotLoaded { module, .. }) = &r.mitigation
            && !module.starts_with("mod_")
        {
            return Err(bad(format!("mitigation module {module:?} is not a module")));
        }
        let title = r.title.trim().to_string();
        if title.is_empty() || title.ends_with('.') {
            return Err(bad("title is empty or ends with a period".into()));
        }
        let mut a = Advisory {
            control: r.control,
            id: r.id,
            ghsa: r.ghsa,
            component: r.component,
            module: r.module,
            title,
            fixed,
            severity,
            pre_auth: r.pre_auth,
            published: r.published,
            source: r.source,
            checked: r.checked,
            mitigation: r.mitigation,
            control_title: String::new(),
            rationale: String::new(),
            remediation: String::new(),
        };
        a.control_title = format!(
            "{}: {} ({} < {})",
            a.id,
            a.title,
            a.component.name(),
            a.fixed
        );
        a.rationale = format!(
            "{}{}{} (published {}, severity {}). Source: {}",
            a.ids(),
            if a.pre_auth {
                ", reachable without credentials: "
            } else {
                ": "
            },
            a.title,
            a.published,
            a.severity.as_str(),
            a.source
        );
        a.remediation = match &a.mitigation {
            Some(m) => format!(
                "Upgrade {} to {} or later; until then, {} (mitigates: {}).",
                a.component.name(),
                a.fixed,
                m.how(),
                m.describe()
            ),
            None => format!(
                "Upgrade {} to {} or later (fsfleet knows no setting that mitigates it).",
                a.component.name(),
                a.fixed
            ),
        };
        out.push(a);
    }
    Ok(out)
}

fn well_formed_id(id: &str) -> bool {
    if let Some(rest) = id.strip_prefix("CVE-") {
        let mut parts = rest.split('-');
        let (Some(y), Some(n), None) = (parts.next(), parts.next(), parts.next()) else {
            return false;
        };
        return y.len() == 4
            && y.bytes().all(|b| b.is_ascii_digit())
            && (4..=7).contains(&n.len())
            && n.bytes().all(|b| b.is_ascii_digit());
    }
    if let Some(rest) = id.strip_prefix("GHSA-") {
        let parts: Vec<&str> = rest.split('-').collect();
        return parts.len() == 3
            && parts
                .iter()
                .all(|p| p.len() == 4 && p.bytes().all(|b| b.is_ascii_alphanumeric()));
    }
    false
}

fn well_formed_control(c: &str) -> bool {
    c.strip_prefix("FS-VULN-")
        .is_some_and(|n| n.len() == 2 && n.bytes().all(|b| b.is_ascii_digit()) && n != "00")
}

/// The source of docs/advisories.md (a unit test keeps the committed file equal to it).
pub fn markdown(advisories: &[Advisory]) -> String {
    let mut out = String::from(
        "# Known vulnerabilities fsfleet audits\n\n\
         <!-- Generated by `fsfleet audit --list-advisories --format markdown` from \
         src/audit/vuln/advisories.toml; do not edit. -->\n\n\
         Each advisory is one `FS-VULN` control of `fsfleet audit`. It fails when the host runs \
         an affected version (older than *Fixed in*) and the mitigation, if there is one, is not \
         in force; it passes when the version is fixed, or with the evidence \"mitigated by ...\" \
         when the mitigating setting is there. The versions come from the host: FreeSWITCH's \
         from `freeswitch -version` of the running binary (as an unprivileged user), else the \
         Event Socket's `status`, else `fs_cli -x status`, else the installed package; \
         sofia-sip's from its package (`libsofia-sip-ua*`) or its pkg-config file, else the \
         lowest version the FreeSWITCH release requires (1.13.17 since FreeSWITCH 1.10.11). \
         A build after a release tag (`1.10.7-release-19-<hash>`) counts as that release. \
         Distribution packages that backport a fix under an older version number are not \
         recognised: waive the control with the package's changelog as the reason.\n\n\
         Every entry was checked against the primary source named in it.\n\n\
         | Control | Advisory | Component | Fixed in | Severity | Pre-auth | Mitigation | Title |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for a in advisories {
        let ghsa = match &a.ghsa {
            Some(g) if *g != a.id => format!("<br>{g}"),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "| {} | [{}]({}){} | {}{} | {} | {} | {} | {} | {} |",
            a.control,
            a.id,
            a.source,
            ghsa,
            a.component.name(),
            a.module
                .as_ref()
                .map(|m| format!(" ({m})"))
                .unwrap_or_default(),
            a.fixed,
            a.severity.as_str(),
            if a.pre_auth { "yes" } else { "no" },
            a.mitigation
                .as_ref()
                .map_or("none known".to_string(), |m| m.describe()),
            a.title.replace('|', "\\|"),
        );
    }
    out.push_str("\n## Sources checked\n");
    for a in advisories {
        let _ = writeln!(out, "\n### {} {}\n", a.control, a.ids());
        let _ = writeln!(out, "- Advisory: <{}>", a.source);
        for c in &a.checked {
            let _ = writeln!(out, "- Checked: {c}");
        }
        if let Some(m) = &a.mitigation {
            let _ = writeln!(
                out,
                "- Mitigation: {} ({}); to apply it: {}.",
                m.describe(),
                m.basis(),
                m.how()
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_catalogue_loads_with_unique_numbered_controls() {
        let all = parse(SOURCE).expect("advisories.toml");
        assert!(all.len() >= 8, "{}", all.len());
        let numbers: Vec<String> = all.iter().map(|a| a.control.clone()).collect();
        let expected: Vec<String> = (1..=all.len()).map(|n| format!("FS-VULN-{n:02}")).collect();
        assert_eq!(numbers, expected, "controls are numbered in file order");
        for a in &all {
            assert!(a.remediation.ends_with('.'), "{}", a.id);
            assert!(a.rationale.contains(&a.source), "{}", a.id);
            assert!(a.control_title.contains(&a.fixed.to_string()), "{}", a.id);
        }
        // Both components of the issue are covered.
        for c in [Component::Freeswitch, Component::SofiaSip] {
            assert!(all.iter().any(|a| a.component == c), "{c:?}");
        }
    }

    #[test]
    fn a_broken_entry_is_refused_with_its_name() {
        let good = "[[advisory]]\ncontrol = \"FS-VULN-01\"\nid = \"CVE-2021-37624\"\n\
                    component = \"freeswitch\"\ntitle = \"t\"\nfixed = \"1.10.7\"\n\
                    severity = \"high\"\npre_auth = true\npublished = \"2021-10-25\"\n\
                    source = \"https://github.com/signalwire/freeswitch/security/advisories/x\"\n\
                    checked = [\"x\"]\n";
        assert_eq!(parse(good).map(|v| v.len()), Ok(1));
        for (from, to, what) in [
            ("\"1.10.7\"", "\"1.10\"", "not a release version"),
            ("\"1.10.7\"", "\"1.11.0-dev\"", "not a release version"),
            ("\"high\"", "\"moderate\"", "severity"),
            ("\"FS-VULN-01\"", "\"FS-VULN-1\"", "FS-VULN-NN"),
            ("\"FS-VULN-01\"", "\"FS-VULN-00\"", "FS-VULN-NN"),
            ("\"CVE-2021-37624\"", "\"CVE-21-1\"", "neither"),
            ("https://github.com/", "https://example.com/", "source"),
            ("[\"x\"]", "[]", "checked is empty"),
            ("title = \"t\"", "title = \"t.\"", "period"),
        ] {
            let text = good.replace(from, to);
            let err = parse(&text).expect_err(to);
            assert!(err.to_string().contains(what), "{to}: {err}");
        }
        let twice = format!("{good}{}", good.replace("CVE-2021-37624", "CVE-2021-00001"));
        assert!(
            parse(&twice)
                .unwrap_err()
                .to_string()
                .contains("used twice")
        );
        assert!(matches!(
            parse(&good.replace("pre_auth", "preauth")),
            Err(CatalogueError::Toml(_))
        ));
        let bad_kind = format!("{good}[advisory.mitigation]\nkind = \"reboot\"\nbasis = \"b\"\n");
        assert!(matches!(parse(&bad_kind), Err(CatalogueError::Toml(_))));
    }

    #[test]
    fn committed_advisories_doc_is_the_generated_one() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/advisories.md");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        let generated = markdown(&parse(SOURCE).expect("advisories.toml"));
        assert!(
            committed == generated,
            "docs/advisories.md is stale: regenerate it with \
             `cargo run -q -- audit --list-advisories --format markdown > docs/advisories.md`"
        );
        // One source link per entry.
        for a in parse(SOURCE).expect("advisories.toml") {
            assert!(committed.contains(&format!("]({})", a.source)), "{}", a.id);
        }
    }
}
