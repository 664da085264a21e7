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

/// A host as the inventory resolves it with every default, for unit tests of plans.
#[cfg(test)]
pub(crate) fn test_host(name: &str) -> Host {
    use crate::inventory::{ConfDir, Fail2banSettings, HostKeyPolicy};
    Host {
        name: name.to_string(),
        address: "192.0.2.10".into(),
        port: 22,
        user: "root".into(),
        groups: vec![],
        identity_files: vec![],
        password_env: None,
        sudo: false,
        sudo_password_env: None,
        jump: None,
        conf_dir: ConfDir::Auto,
        sip_allow_from: vec![],
        connect_timeout: Duration::from_secs(10),
        known_hosts: None,
        host_key_policy: HostKeyPolicy::Strict,
        fail2ban: Fail2banSettings::default(),
        waive: vec![],
    }
}
