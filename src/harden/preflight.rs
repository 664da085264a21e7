//! Step `preflight`: refuse, for this host only and with a clear reason, what fsfleet must not
//! touch; prove that the Event Socket listener is the running FreeSWITCH's own (no password goes
//! anywhere else, see [`crate::esl_target`]), then that it accepts the password in its config
//! BEFORE anything changes (the reload needs it later); take the config and log dirs from the
//! running FreeSWITCH.

use std::time::Duration;

use russh::ChannelStream;
use russh::client::Msg;

use super::{HostFacts, StepError};
use crate::esl::{EslClient, EslError, EslOptions};
use crate::esl_target::{self, Target};
use crate::model::registrations::{self, ProfileRegs, Registered};
use crate::model::{EventSocket, HostModel};
use crate::secret::Secret;
use crate::ssh::Session;

pub const NAME: &str = "preflight";

pub type Esl = EslClient<ChannelStream<Msg>>;

/// What preflight learned.
pub struct Preflight {
    /// The Event Socket settings in the config file.
    pub esl: EventSocket,
    /// Where FreeSWITCH's own Event Socket was proven to be (None: --offline-ok, not running).
    pub target: Option<Target>,
    /// The password the RUNNING FreeSWITCH accepts (None: FreeSWITCH is down, --offline-ok).
    pub live_password: Option<Secret>,
    /// The running FreeSWITCH accepted a vault password other than the one in its config file:
    /// a previous run wrote the files but was cut before (or during) the reload. This run must
    /// reload even when no file changes.
    pub stale: bool,
    /// `global_getvar conf_dir` / `log_dir` when FreeSWITCH answered.
    pub conf_dir: Option<String>,
    pub log_dir: Option<String>,
    /// Who is registered right now, when the run asked (a `default_password` rotation is
    /// planned) and FreeSWITCH answered; None otherwise.
    pub registered: Option<Registered>,
    /// `global_getvar domain` when FreeSWITCH answered: the stock directory's domain is
    /// `$${domain}`, set from the host's address at startup (phones register to it).
    pub domain: Option<String>,
    /// Which of the modules the `modules` step may unload the running FreeSWITCH has loaded
    /// (`module_exists`); None when it was not asked or did not answer true or false.
    pub loaded_modules: Option<Vec<String>>,
    /// The calls up now (`status`'s session count), when FreeSWITCH said.
    pub sessions: Option<u64>,
    pub evidence: Vec<String>,
}

/// Open an authenticated Event Socket connection through the SSH session, to a listener
/// proven to be FreeSWITCH's ([`esl_target`]): the only way fsfleet sends a password.
pub async fn esl_connect(
    session: &Session,
    target: &Target,
    password: &Secret,
) -> Result<Esl, EslError> {
    let stream = session
        .tunnel_to(&target.address, target.port)
        .await
        .map_err(|e| EslError::Connect {
            cause: e.to_string().into(),
        })?;
    EslClient::connect(
        stream,
        password,
        EslOptions {
            timeout: Duration::from_secs(10),
            ..Default::default()
        },
    )
    .await
}

/// `module_exists` for each module the `modules` step may unload (FreeSWITCH answers `true` or
/// `false`); None at the first other answer (an old version, a stand-in without it).
async fn loaded_modules(client: &mut Esl) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for m in super::modules::CANDIDATES {
        match client.api(&format!("module_exists {m}")).await.ok()?.trim() {
            "true" => out.push(m.to_string()),
            "false" => {}
            _ => return None,
        }
    }
    Some(out)
}

/// The OS and config checks that need no connection beyond the facts.
pub fn check_facts(f: &HostFacts) -> Result<EventSocket, StepError> {
    if !f.base.os.is_debian_family() {
        return Err(StepError::Refused(format!(
            "{} is not Debian or Ubuntu; fsfleet's baseline (apt, ufw) does not apply",
            if f.base.os.pretty_name.is_empty() {
                "this OS"
            } else {
                &f.base.os.pretty_name
            }
        )));
    }
    if f.files.conf_dir.is_none() {
        return Err(StepError::Refused(
            "no FreeSWITCH configuration found (no vars.xml in /etc/freeswitch, /usr/local/freeswitch/etc/freeswitch \
             or /usr/local/freeswitch/conf); set conf_dir for this host in the inventory"
                .into(),
        ));
    }
    Ok(crate::model::HostModel::new(f).event_socket()?)
}

/// Authenticate to the running FreeSWITCH with the config's password, else with the vault's
/// candidates (a run interrupted between writing the file and the reload leaves FreeSWITCH on
/// the old one).
pub async fn run(
    session: &Session,
    f: &HostFacts,
    candidates: &[Secret],
    offline_ok: bool,
    ask_registrations: bool,
) -> Result<Preflight, StepError> {
    let es = check_facts(f)?;
    let mut evidence = vec![format!(
        "{} ({}), config {}",
        f.base.os.pretty_name,
        f.base.privilege,
        f.files.conf_dir.as_deref().unwrap_or("?")
    )];
    let fs_active = f.base.freeswitch.as_ref().is_some_and(|x| x.service_active);
    let offline = |mut evidence: Vec<String>, es: EventSocket, why: String| {
        evidence.push(format!(
            "FreeSWITCH not reachable ({why}); --offline-ok: configs will be edited, nothing reloaded"
        ));
        Ok(Preflight {
            esl: es,
            target: None,
            live_password: None,
            stale: false,
            conf_dir: None,
            log_dir: None,
            registered: None,
            domain: None,
            loaded_modules: None,
            sessions: None,
            evidence,
        })
    };
    let target = match esl_target::from_sections(&f.sections, &es.listen_ip, es.listen_port) {
        Ok(t) => t,
        Err(r) if offline_ok && r.is_absence() => return offline(evidence, es, r.to_string()),
        Err(r) if r.is_absence() => {
            return Err(StepError::Refused(format!(
                "{r}; start FreeSWITCH, or re-run with --offline-ok to edit configs without reloading"
            )));
        }
        Err(r) => return Err(r.into()),
    };
    evidence.push(target.evidence.clone());
    let mut tried: Vec<Secret> = vec![es.password.clone()];
    tried.extend(candidates.iter().filter(|c| **c != es.password).cloned());
    let mut last_err = None;
    for (i, pw) in tried.iter().enumerate() {
        match esl_connect(session, &target, pw).await {
            Ok(mut client) => {
                let conf_dir = client
                    .global_getvar("conf_dir")
                    .await
                    .ok()
                    .filter(|s| !s.is_empty());
                let log_dir = client
                    .global_getvar("log_dir")
                    .await
                    .ok()
                    .filter(|s| !s.is_empty());
                // Asked with the registrations: only a run giving users passwords needs it.
                let domain = if ask_registrations {
                    client
                        .global_getvar("domain")
                        .await
                        .ok()
                        .map(|s| s.trim().to_string())
                        .filter(|s| super::per_user_passwords::plain_domain(s))
                } else {
                    None
                };
                let loaded_modules = loaded_modules(&mut client).await;
                let status = client.status().await.map_err(|source| StepError::Esl {
                    what: "Event Socket status".into(),
                    source,
                })?;
                let registered = if ask_registrations && status.ready {
                    Some(registered(&mut client, f).await)
                } else {
                    None
                };
                let _ = client.exit().await;
                if !status.ready {
                    return Err(StepError::Refused(format!(
                        "FreeSWITCH {} says it is not ready; try again later",
                        status.version
                    )));
                }
                evidence.push(format!(
                    "FreeSWITCH {} ready; Event Socket accepts the {} password",
                    status.version,
                    if i == 0 { "configured" } else { "vault's" }
                ));
                let stale = *pw != es.password;
                return Ok(Preflight {
                    esl: es,
                    target: Some(target),
                    live_password: Some(pw.clone()),
                    stale,
                    conf_dir,
                    log_dir,
                    registered,
                    domain,
                    loaded_modules,
                    sessions: status.sessions,
                    evidence,
                });
            }
            Err(EslError::AuthRejected) => last_err = Some(EslError::AuthRejected),
            Err(e) => {
                last_err = Some(e);
                break;
            }
        }
    }
    let auth_refused = matches!(last_err, Some(EslError::AuthRejected));
    let err = last_err.map(|e| e.to_string()).unwrap_or_default();
    if offline_ok && !auth_refused {
        return offline(evidence, es, err);
    }
    Err(StepError::Refused(if auth_refused {
        format!(
            "the running FreeSWITCH refuses the Event Socket password in {} (and every password in the vault): \
             the file was changed without `reload mod_event_socket`. Put the running password back in the file \
             (or restart FreeSWITCH), then re-run",
            super::event_socket::FILE
        )
    } else if !fs_active {
        format!(
            "FreeSWITCH is not running ({err}); start it, or re-run with --offline-ok to edit configs without reloading"
        )
    } else {
        format!(
            "cannot reach the Event Socket at {}:{} on the host: {err}",
            target.address, target.port
        )
    }))
}

/// Ask the running FreeSWITCH who is registered on each SIP profile of the config. A profile
/// whose name fsfleet does not send, or whose answer it cannot read, is listed as unknown.
async fn registered(client: &mut Esl, f: &HostFacts) -> Registered {
    let mut out = Registered::default();
    for p in HostModel::new(f).sip_profiles().profiles {
        let Some(cmd) = registrations::command(&p.name) else {
            out.unknown.push(format!(
                "profile {:?} (a name fsfleet does not send to the Event Socket)",
                p.name
            ));
            continue;
        };
        match client.api(&cmd).await {
            Ok(body) => match registrations::parse(&p.name, &body) {
                Ok(ProfileRegs::Rows(rows)) => out.rows.extend(rows),
                Ok(ProfileRegs::NotRunning) => {}
                Err(e) => out.unknown.push(e.to_string()),
            },
            Err(e) => out.unknown.push(format!("profile {}: {e}", p.name)),
        }
    }
    out
}

#[cfg(test)]
impl Preflight {
    /// What preflight would prove of a host whose running FreeSWITCH took its config as it is
    /// (the model-only tests plan from this).
    pub fn from_config(f: &HostFacts) -> Result<Preflight, StepError> {
        let esl = crate::model::HostModel::new(f).event_socket()?;
        Ok(Preflight {
            live_password: Some(esl.password.clone()),
            esl,
            target: None,
            stale: false,
            conf_dir: None,
            log_dir: None,
            registered: None,
            domain: None,
            loaded_modules: None,
            sessions: None,
            evidence: vec![],
        })
    }
}
