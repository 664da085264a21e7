//! Step `reload`: make FreeSWITCH use what is on disk, through the SSH tunnel to the Event Socket,
//! authenticated with the OLD password, in the order that works (FACTS §2): `reloadxml` (vars,
//! directory), `sofia profile NAME rescan` (log-auth-failures), and LAST `reload mod_event_socket`
//! (it drops every client), then reconnect with the NEW password. Only the reloads the changes need.
//!
//! Every connection first proves, with a fresh `ss` on the host, that the listener is still
//! FreeSWITCH's ([`esl_target::prove`]): minutes may have passed since the facts, and after
//! `reload mod_event_socket` the port is free for 0.1-0.2 s, long enough for any local user to
//! bind it and wait for the new password.

use std::time::Duration;

use tokio::time::Instant;

use super::preflight::{Esl, esl_connect};
use super::{FileEdit, StepError};
use crate::esl::{self, EslError, RetryPolicy};
use crate::esl_target::{self, Target};
use crate::model::EventSocket;
use crate::secret::Secret;
use crate::ssh::Session;

pub const NAME: &str = "reload";
/// How long to keep trying the new Event Socket after its reload.
pub const RECONNECT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Needs {
    pub reloadxml: bool,
    pub rescan: Vec<String>,
    pub event_socket: bool,
    /// Modules to take out of the running FreeSWITCH with `unload NAME` (modules.conf.xml no
    /// longer loads them): before `reload mod_event_socket`, which drops the connection.
    pub unload: Vec<String>,
    /// Profiles to restart with `sofia profile NAME restart` (after `reloadxml`): what a
    /// profile binds when it starts, its TLS transport and certificate, a rescan never changes.
    pub restart: Vec<String>,
}

impl Needs {
    /// A `reloadxml` when an edit changes what FreeSWITCH reads (not only owner or mode).
    pub fn xml_for(edits: &[FileEdit]) -> Needs {
        Needs {
            reloadxml: edits.iter().any(FileEdit::content_changed),
            ..Needs::default()
        }
    }

    pub fn any(&self) -> bool {
        self.reloadxml
            || !self.rescan.is_empty()
            || self.event_socket
            || !self.unload.is_empty()
            || !self.restart.is_empty()
    }
}

/// The progress line (at -v) before each command of the reload: where a run was when it stopped,
/// and where the reliability tests cut the connection. (A profile name is host text: the
/// progress line escapes it.)
pub fn stage_of(command: &str) -> String {
    format!("reloading FreeSWITCH: {command}")
}

/// `old`: the settings and password FreeSWITCH runs with; `new`: what is on disk now. `stage`
/// shows each command before it is sent ([`stage_of`]).
pub async fn apply(
    session: &Session,
    needs: &Needs,
    old: &EventSocket,
    old_pw: &Secret,
    new: &EventSocket,
    stage: &(dyn Fn(&str) + Sync),
) -> Result<Vec<String>, StepError> {
    let mut evidence = Vec::new();
    let failed = |what: &str, source: esl::EslError| StepError::Esl {
        what: what.into(),
        source,
    };
    let target = esl_target::prove(session, &old.listen_ip, old.listen_port).await?;
    let mut client: Esl = esl_connect(session, &target, old_pw)
        .await
        .map_err(|e| failed("Event Socket (old password)", e))?;
    // A profile's rescan re-reads its XML, but reloadxml first makes vars and the directory
    // consistent with it (a rescan alone would use stale $${vars}).
    if needs.reloadxml || !needs.rescan.is_empty() || !needs.restart.is_empty() {
        stage(&stage_of("reloadxml"));
        let body = client
            .api("reloadxml")
            .await
            .map_err(|e| failed("reloadxml", e))?;
        if !body.starts_with("+OK") {
            return Err(StepError::Failed(format!(
                "reloadxml answered {}",
                body.trim()
            )));
        }
        evidence.push(format!("reloadxml: {}", body.trim()));
    }
    for profile in &needs.rescan {
        stage(&stage_of(&format!("sofia profile {profile} rescan")));
        let body = client
            .api(&format!("sofia profile {profile} rescan"))
            .await
            .map_err(|e| failed("sofia rescan", e))?;
        if body.contains("+OK") {
            evidence.push(format!(
                "sofia profile {profile} rescan: {}",
                body.trim().replace('\n', " ")
            ));
        } else {
            // A profile that is not running (e.g. an IPv6 profile on a host without IPv6) takes the
            // setting when it next starts.
            evidence.push(format!(
                "sofia profile {profile} rescan: {} (profile not running; the file is set)",
                body.trim()
            ));
        }
    }
    for profile in &needs.restart {
        stage(&stage_of(&format!("sofia profile {profile} restart")));
        evidence.push(restart(&mut client, profile).await?);
    }
    for module in &needs.unload {
        stage(&stage_of(&format!("unload {module}")));
        evidence.push(unload(&mut client, module).await?);
    }
    if needs.event_socket {
        stage(&stage_of("reload mod_event_socket"));
        client
            .reload_event_socket()
            .await
            .map_err(|e| failed("reload mod_event_socket", e))?;
        let (mut reconnected, target) =
            reconnect(session, new, &new.password, &RetryPolicy::within(RECONNECT)).await?;
        let status = reconnected
            .status()
            .await
            .map_err(|e| failed("status after reload", e))?;
        let _ = reconnected.exit().await;
        evidence.push(format!(
            "reload mod_event_socket: back on {}:{} with the new password ({}); {}",
            target.address,
            target.port,
            if status.ready { "ready" } else { "NOT ready" },
            target.evidence
        ));
    } else {
        let _ = client.exit().await;
    }
    Ok(evidence)
}

/// `sofia profile NAME restart`. mod_sofia answers `restarting: NAME` and restarts the profile
/// in the background (FreeSWITCH 1.10 mod_sofia.c `cmd_profile`); a profile up for less than
/// its minimum time answers `Profile NAME must be up for at least N seconds to stop/restart.
/// Please wait N seconds`, so fsfleet waits that long once and asks again. A profile that is not
/// running (`Invalid Profile`) binds what its file says when it next starts.
async fn restart<S>(client: &mut esl::EslClient<S>, profile: &str) -> Result<String, StepError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    let cmd = format!("sofia profile {profile} restart");
    for attempt in 0..2 {
        let body = client.api(&cmd).await.map_err(|source| StepError::Esl {
            what: "sofia restart".into(),
            source,
        })?;
        let body = body.trim();
        if body.contains("restarting:") {
            return Ok(format!("{cmd}: {}", crate::display::line(body)));
        }
        if body.starts_with("Invalid Profile") {
            return Ok(format!(
                "{cmd}: {} (profile not running; it takes the file's settings when it starts)",
                crate::display::line(body)
            ));
        }
        if let Some(wait) = wait_seconds(body).filter(|_| attempt == 0) {
            tokio::time::sleep(Duration::from_secs(wait.min(60) + 1)).await;
            continue;
        }
        return Err(StepError::Failed(format!(
            "{cmd} answered {}",
            crate::display::line(body)
        )));
    }
    Err(StepError::Failed(format!("{cmd} was refused twice")))
}

/// The N of mod_sofia's `Please wait N second(s)`.
fn wait_seconds(body: &str) -> Option<u64> {
    let rest = &body[body.find("Please wait ")? + "Please wait ".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// `unload NAME` (never `-f`: FreeSWITCH itself refuses a module that is busy), then
/// `module_exists NAME` to prove it is gone. A module FreeSWITCH will not unload is not a failure
/// of the run: modules.conf.xml no longer loads it, so the report says that it goes at the next
/// restart (fsfleet never restarts FreeSWITCH).
async fn unload<S>(client: &mut esl::EslClient<S>, module: &str) -> Result<String, StepError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    let failed = |what: &str, source: esl::EslError| StepError::Esl {
        what: what.into(),
        source,
    };
    let body = client
        .api(&format!("unload {module}"))
        .await
        .map_err(|e| failed("unload", e))?;
    let body = body.trim();
    // mod_commands answers `+OK`, or `-ERR [No such module!]` when it is not loaded (FreeSWITCH
    // 1.10 switch_loadable_module_unload_module).
    if !body.starts_with("+OK") && body != "-ERR [No such module!]" {
        return Ok(format!(
            "warning: unload {module} answered {}: it stays loaded until FreeSWITCH restarts \
             (modules.conf.xml no longer loads it); restart FreeSWITCH when convenient",
            crate::display::line(body)
        ));
    }
    let exists = client
        .api(&format!("module_exists {module}"))
        .await
        .map_err(|e| failed("module_exists", e))?;
    match exists.trim() {
        "false" => Ok(format!(
            "unload {module}: {body}; module_exists {module}: false"
        )),
        other => Err(StepError::Failed(format!(
            "unload {module} answered {} but module_exists {module} says {}",
            crate::display::line(body),
            crate::display::line(other)
        ))),
    }
}

/// Reconnect with the NEW password after `reload mod_event_socket`, retrying like
/// [`esl::connect_with_retry`] (transient failures until `policy.total`, a refused password
/// `policy.auth_retries` times), but proving before EACH attempt, with one `ss` on the host, that
/// the listener is FreeSWITCH's again. While nothing listens (the 0.1-0.2 s gap) it waits; a
/// listener of anyone else stops it at once, before any password is sent.
async fn reconnect(
    session: &Session,
    new: &EventSocket,
    password: &Secret,
    policy: &RetryPolicy,
) -> Result<(Esl, Target), StepError> {
    let started = Instant::now();
    let deadline = started + policy.total;
    let mut backoff = policy.first_backoff;
    let mut attempts = 0u32;
    let mut auth_rejections = 0u32;
    loop {
        attempts += 1;
        let last = match esl_target::prove(session, &new.listen_ip, new.listen_port).await {
            Err(r) if r.is_absence() => r.to_string(),
            Err(r) => {
                return Err(StepError::Refused(format!(
                    "after reload mod_event_socket: {r} (the new password is pending in the vault)"
                )));
            }
            Ok(target) => {
                let remaining = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(remaining, esl_connect(session, &target, password)).await
                {
                    Ok(Ok(client)) => return Ok((client, target)),
                    Ok(Err(EslError::AuthRejected)) => {
                        auth_rejections += 1;
                        if auth_rejections > policy.auth_retries {
                            return Err(StepError::Failed(format!(
                                "the Event Socket refuses the new password after reload mod_event_socket ({})",
                                EslError::AuthRejected
                            )));
                        }
                        EslError::AuthRejected.to_string()
                    }
                    Ok(Err(source)) if !source.is_transient() => {
                        return Err(StepError::Esl {
                            what: "Event Socket after reload mod_event_socket".into(),
                            source,
                        });
                    }
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "no answer in time".to_string(),
                }
            }
        };
        let now = Instant::now();
        if now + backoff >= deadline {
            return Err(StepError::Failed(format!(
                "Event Socket did not come back with the new settings within {} s ({attempts} attempts): {last}",
                policy.total.as_secs()
            )));
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(policy.max_backoff);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_profile_restart_too_soon_says_how_long_to_wait() {
        // mod_sofia.c cmd_profile's refusal, as FreeSWITCH 1.10 words it.
        let body = "Profile internal must be up for at least 10 seconds to stop/restart.\nPlease wait 7 seconds\n";
        assert_eq!(super::wait_seconds(body), Some(7));
        assert_eq!(super::wait_seconds("restarting: internal"), None);
        assert!(
            super::Needs {
                restart: vec!["internal".into()],
                ..Default::default()
            }
            .any()
        );
    }

    use super::*;
    use crate::esl::fake::{ApiReply, Config, FakeEsl};
    use crate::esl::{EslClient, EslOptions};

    async fn with(replies: &[(&str, &str)]) -> (FakeEsl, EslClient<tokio::net::TcpStream>) {
        let mut cfg = Config::default();
        for (cmd, body) in replies {
            cfg.api
                .insert(cmd.to_string(), ApiReply::Body(body.to_string()));
        }
        let fake = FakeEsl::start(cfg).await;
        let client = EslClient::connect(
            fake.connect().await,
            &Secret::new("ClueCon"),
            EslOptions::default(),
        )
        .await
        .unwrap();
        (fake, client)
    }

    #[tokio::test]
    async fn an_unloaded_module_is_proven_gone() {
        let (fake, mut c) = with(&[
            ("unload mod_verto", "+OK\n"),
            ("module_exists mod_verto", "false"),
        ])
        .await;
        let ev = unload(&mut c, "mod_verto").await.unwrap();
        assert_eq!(ev, "unload mod_verto: +OK; module_exists mod_verto: false");
        assert_eq!(
            fake.log().commands[1..],
            ["api unload mod_verto", "api module_exists mod_verto"]
        );
        // Already gone (a cut run unloaded it): the same proof.
        let (_, mut c) = with(&[
            ("unload mod_verto", "-ERR [No such module!]\n"),
            ("module_exists mod_verto", "false"),
        ])
        .await;
        assert!(unload(&mut c, "mod_verto").await.is_ok());
    }

    #[tokio::test]
    async fn a_module_freeswitch_keeps_is_a_restart_warning_and_a_lie_is_a_failure() {
        let (fake, mut c) = with(&[("unload mod_signalwire", "-ERR [Module in use.]\n")]).await;
        let ev = unload(&mut c, "mod_signalwire").await.unwrap();
        assert!(
            ev.starts_with("warning: unload mod_signalwire answered -ERR [Module in use.]")
                && ev.contains("until FreeSWITCH restarts"),
            "{ev}"
        );
        // No module_exists asked: nothing to prove.
        assert_eq!(fake.log().commands.len(), 2);
        let (_, mut c) = with(&[
            ("unload mod_verto", "+OK\n"),
            ("module_exists mod_verto", "true"),
        ])
        .await;
        let e = unload(&mut c, "mod_verto").await.unwrap_err().to_string();
        assert!(e.contains("module_exists mod_verto says true"), "{e}");
    }
}
