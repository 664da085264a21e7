//! What every harden step works with: the facts of its host, the session, the options.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::facts::{self, Facts, FactsError, Files, Script, Sections};
use crate::inventory::Host;
use crate::ssh::{Connector, ExecOutput, Session, SshError};

/// Options of a harden run that steps may consult.
#[derive(Debug, Clone, Default)]
pub struct HardenOptions {
    /// Rotate passwords even when they are already strong.
    pub rotate: bool,
    /// `ufw --force reset` before applying fsfleet's rules (drops the host's other rules).
    pub firewall_reset: bool,
    /// Edit configs even when FreeSWITCH is down (no reload, said in the report).
    pub offline_ok: bool,
    /// Compute and show, change nothing.
    pub check: bool,
    /// Show config diffs (secrets masked).
    pub diff: bool,
}

/// Collects what the steps of a run need to read, for the one facts script per host.
pub struct Probes {
    script: Script,
    abs_files: Vec<String>,
}

impl Probes {
    pub fn new() -> Probes {
        Probes {
            script: Script::new(),
            abs_files: Vec::new(),
        }
    }

    /// A named shell snippet run as root; its stdout and status become a section of the facts.
    /// Names must be unique across steps: prefix them with the step name.
    pub fn snippet(&mut self, name: &str, snippet: &str) -> &mut Self {
        self.script.add(name, snippet);
        self
    }

    /// An absolute file to read (exact bytes, mode, owner). Config-dir files are read anyway
    /// (see [`facts::CONF_FILES`]).
    pub fn file(&mut self, path: impl Into<String>) -> &mut Self {
        let p = path.into();
        if !self.abs_files.contains(&p) {
            self.abs_files.push(p);
        }
        self
    }

    /// Finish the script: base facts and files go last so every step's snippets are in.
    pub fn into_script(mut self, host: &Host) -> Script {
        facts::add_base_snippets(&mut self.script, host);
        facts::add_files_snippet(
            &mut self.script,
            "files",
            host,
            facts::CONF_FILES,
            &self.abs_files,
        );
        self.script
    }
}

impl Default for Probes {
    fn default() -> Self {
        Self::new()
    }
}

/// Everything read from one host in the single facts round trip.
#[derive(Debug, Default)]
pub struct HostFacts {
    pub base: Facts,
    pub files: Files,
    pub sections: Sections,
}

impl HostFacts {
    pub fn parse(
        sections: Sections,
        session_user: &str,
        uses_sudo: bool,
    ) -> Result<HostFacts, FactsError> {
        let base = facts::parse_base(&sections, session_user, uses_sudo);
        let files = Files::parse(sections.text("files"))?;
        Ok(HostFacts {
            base,
            files,
            sections,
        })
    }

    /// A step's own snippet output.
    pub fn section(&self, name: &str) -> &str {
        self.sections.text(name)
    }

    pub fn section_status(&self, name: &str) -> Option<i32> {
        self.sections.status(name)
    }

    /// The text of a file read by absolute path (None: absent, too large or not UTF-8).
    pub fn file_text(&self, path: &str) -> Option<&str> {
        self.files.files.get(path).and_then(|f| f.text())
    }
}

/// What a step would do on this host.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepPlan {
    /// One line per change, for the operator (never a secret). Empty: nothing to do.
    pub changes: Vec<String>,
    /// Warnings to report even when nothing changes (e.g. SIP open to the world).
    pub warnings: Vec<String>,
    /// Masked diffs for `--diff`.
    pub diffs: Vec<String>,
    /// Step-specific values computed by `plan` for `apply` (no secrets).
    pub data: BTreeMap<String, String>,
}

impl StepPlan {
    pub fn is_noop(&self) -> bool {
        self.changes.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Ssh(#[from] SshError),
    /// The host is not in a state the step can work with; the message says what to do.
    #[error("{0}")]
    Refused(String),
    /// A remote command failed; the message says which and its stderr (never a secret).
    #[error("{0}")]
    Failed(String),
}

/// What a step's `apply` gets.
pub struct StepCtx<'a> {
    pub host: &'a Host,
    pub session: &'a Session,
    /// For steps that must prove a NEW connection still works (the firewall).
    pub connector: &'a Connector,
    pub facts: &'a HostFacts,
    pub opts: &'a HardenOptions,
    pub run_id: &'a str,
}

impl StepCtx<'_> {
    /// Run a root script on the host and fail the step with its stderr when it exits non-zero.
    pub async fn run_checked(
        &self,
        what: &str,
        script: &str,
        stdin: &[u8],
        limit: Duration,
    ) -> Result<ExecOutput, StepError> {
        let out = self.session.run(script, stdin, limit).await?;
        if !out.success() {
            let err = out.stderr_text();
            let tail: Vec<&str> = err.lines().rev().take(5).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(StepError::Failed(format!(
                "{what} failed (exit {}): {}",
                out.status,
                tail.join(" | ")
            )));
        }
        Ok(out)
    }
}

/// One config file change: exact old and new bytes (the old ones restore the file if a later
/// step fails before the reload).
#[derive(Clone)]
pub struct FileEdit {
    pub path: String,
    pub old: Vec<u8>,
    pub new: Vec<u8>,
}

impl std::fmt::Debug for FileEdit {
    // The contents hold secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileEdit")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl HostFacts {
    /// A config file (relative to the config dir) as text, or a refusal that says why not.
    pub fn conf_text(&self, rel: &str) -> Result<(&str, &str), StepError> {
        let dir = self
            .files
            .conf_dir
            .as_deref()
            .ok_or_else(|| StepError::Refused("no FreeSWITCH configuration found".into()))?;
        let f = self
            .files
            .conf(rel)
            .ok_or_else(|| StepError::Refused(format!("{dir}/{rel} does not exist")))?;
        let text = f.text().ok_or_else(|| {
            StepError::Refused(format!(
                "{} is too large or not UTF-8 text; fsfleet will not edit it",
                f.path
            ))
        })?;
        Ok((f.path.as_str(), text))
    }
}

#[cfg(test)]
impl HostFacts {
    /// Facts of a host whose config dir holds the given files (relative path, text).
    pub fn with_conf(dir: &str, files: &[(&str, &str)]) -> HostFacts {
        use crate::facts::FileFact;
        let mut hf = HostFacts::default();
        hf.files.conf_dir = Some(dir.to_string());
        for (rel, text) in files {
            let path = format!("{dir}/{rel}");
            hf.files.files.insert(
                path.clone(),
                FileFact {
                    path,
                    mode: 0o644,
                    owner: "freeswitch".into(),
                    group: "freeswitch".into(),
                    size: text.len() as u64,
                    content: Some(text.as_bytes().to_vec()),
                },
            );
        }
        hf
    }

    /// The stock FreeSWITCH 1.10.12 tree's files that harden reads.
    pub fn stock() -> HostFacts {
        let root = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/reference/freeswitch-conf-1.10.12"
        );
        let mut files: Vec<(String, String)> = Vec::new();
        for rel in [
            "vars.xml",
            "autoload_configs/event_socket.conf.xml",
            "autoload_configs/switch.conf.xml",
        ] {
            files.push((
                rel.to_string(),
                std::fs::read_to_string(format!("{root}/{rel}")).unwrap(),
            ));
        }
        for p in ["internal", "external", "internal-ipv6", "external-ipv6"] {
            let rel = format!("sip_profiles/{p}.xml");
            files.push((
                rel.clone(),
                std::fs::read_to_string(format!("{root}/{rel}")).unwrap(),
            ));
        }
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        HostFacts::with_conf("/etc/freeswitch", &refs)
    }
}

/// A host as the inventory resolves it with every default, for unit tests of plans.
#[cfg(test)]
pub(crate) fn test_host(name: &str) -> Host {
    Host::with_defaults(name, "192.0.2.10")
}
