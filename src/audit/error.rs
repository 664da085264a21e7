//! Why a control could not be evaluated. A control returns `Err(ControlError)` with `?`; the
//! one place that turns it into an `error` finding is [`super::Control::run`], which shows the
//! error and its causes (each once, [`crate::errors::chain`]) as the evidence.

use crate::conf::ConfError;
use crate::esl_target::Refusal;
use crate::model::{ListenersError, ModelError};

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No config dir was found on the host.
    #[error(
        "no FreeSWITCH configuration found (no vars.xml in {looked}); set conf_dir for host {host} in the inventory"
    )]
    NoConfDir { looked: String, host: String },
    /// A config file the control reads is not on the host (absolute path).
    #[error("{0} is missing on the host")]
    Missing(String),
    #[error("{path} could not be read ({size} bytes, too large or not UTF-8)")]
    Unreadable { path: String, size: u64 },
    /// A config file that is not XML FreeSWITCH could load (the path as evidence names it).
    #[error("{path}")]
    Xml {
        path: String,
        #[source]
        source: ConfError,
    },
    /// The host model could not answer; its message names the file.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// FreeSWITCH could not load every SIP profile, or there is none (the reasons, per file).
    #[error("{0}")]
    Profiles(String),
    /// A fact of the audit script did not run or could not be read (its error names it).
    #[error(transparent)]
    Fact(#[from] crate::facts::FactError),
    /// A snippet of the audit script did not run (`status` is its exit status, None: absent).
    #[error("the {probe} probe did not run on the host (status {status:?})")]
    ProbeNotRun { probe: String, status: Option<i32> },
    /// The host's TCP listeners could not be read.
    #[error("the host's TCP listeners could not be read (install iproute2 and re-run)")]
    Listeners(#[source] ListenersError),
    /// The listener could not be proven FreeSWITCH's (the refusal says whose and what to do).
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The config passes, and the live Event Socket was not asked (no password was sent).
    #[error("the live Event Socket was not asked (no password was sent): {0}")]
    EslNotProven(String),
    /// The config passes, and the live Event Socket could not be reached.
    #[error(
        "the config password is not ClueCon, but the live Event Socket could not be asked: {0}; start FreeSWITCH and re-run"
    )]
    EslUnavailable(String),
    /// fs_cli was kept from running: the host's text says why.
    #[error("{0} (fs_cli would send its stored password there)")]
    FsCliGated(String),
    #[error(
        "FreeSWITCH is not running (systemctl is-active freeswitch), so fs_cli cannot be tested; start it and re-run"
    )]
    FreeSwitchStopped,
    #[error("no FreeSWITCH found")]
    NoFreeSwitch,
    /// None of the files that hold a secret was read.
    #[error("no config file that holds a secret was read in {0}")]
    NoSecretFile(String),
    /// fail2ban-server runs but fail2ban-client said nothing about a jail.
    #[error("fail2ban-server runs (PID {pid}) but fail2ban-client gave no answer for jail {jail}")]
    Fail2banNoAnswer { pid: u32, jail: String },
    /// The fail2ban-regex proof could not be read.
    #[error(transparent)]
    Proof(#[from] crate::model::fail2ban::ProofError),
    /// fail2ban-regex printed no result line; its error line.
    #[error(
        "fail2ban-regex gave no result with filter freeswitch: {0}; check `fail2ban-regex -v` on the host"
    )]
    RegexNoResult(String),
    /// The advisory catalogue compiled in could not be read (FS-VULN controls).
    #[error(transparent)]
    Catalogue(#[from] super::vuln::catalogue::CatalogueError),
    /// The version an FS-VULN control compares could not be read on the host: what was tried.
    #[error("the {component} version could not be read: {tried}")]
    VersionUnknown {
        component: &'static str,
        tried: String,
    },
}

impl ControlError {
    /// The error and its causes, each once: the evidence of the `error` finding.
    pub fn evidence(&self) -> String {
        crate::errors::chain(self)
    }
}
