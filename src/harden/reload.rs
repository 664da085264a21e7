//! Step `reload`: make FreeSWITCH use what is on disk, through the SSH tunnel to the Event Socket,
//! authenticated with the OLD password, in the order that works (FACTS §2): `reloadxml` (vars,
//! directory), `sofia profile NAME rescan` (log-auth-failures), and LAST `reload mod_event_socket`
//! (it drops every client), then reconnect with the NEW password. Only the reloads the changes need.

use std::time::Duration;

use super::StepError;
use super::preflight::{Esl, esl_connect};
use crate::conf::EventSocket;
use crate::esl::{self, EslOptions};
use crate::secret::Secret;
use crate::ssh::Session;

pub const NAME: &str = "reload";
/// How long to keep trying the new Event Socket after its reload.
pub const RECONNECT: Duration = Duration::from_secs(20);

pub struct Needs {
    pub reloadxml: bool,
    pub rescan: Vec<String>,
    pub event_socket: bool,
}

impl Needs {
    pub fn any(&self) -> bool {
        self.reloadxml || !self.rescan.is_empty() || self.event_socket
    }
}

/// `old`: the settings and password FreeSWITCH runs with; `new`: what is on disk now.
pub async fn apply(
    session: &Session,
    needs: &Needs,
    old: &EventSocket,
    old_pw: &Secret,
    new: &EventSocket,
) -> Result<Vec<String>, StepError> {
    let mut evidence = Vec::new();
    let failed = |what: &str, e: esl::EslError| StepError::Failed(format!("{what}: {e}"));
    let mut client: Esl = esl_connect(session, old, old_pw)
        .await
        .map_err(|e| failed("Event Socket (old password)", e))?;
    // A profile's rescan re-reads its XML, but reloadxml first makes vars and the directory
    // consistent with it (a rescan alone would use stale $${vars}).
    if needs.reloadxml || !needs.rescan.is_empty() {
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
    if needs.event_socket {
        client
            .reload_event_socket()
            .await
            .map_err(|e| failed("reload mod_event_socket", e))?;
        let new_pw = new.password.clone();
        let mut reconnected = esl::connect_with_retry(
            || async {
                session
                    .tunnel_to(&new.local_address(), new.listen_port)
                    .await
            },
            &new_pw,
            EslOptions::default(),
            RECONNECT,
        )
        .await
        .map_err(|e| {
            StepError::Failed(format!(
                "Event Socket did not come back with the new settings within {} s: {e}",
                RECONNECT.as_secs()
            ))
        })?;
        let status = reconnected
            .status()
            .await
            .map_err(|e| failed("status after reload", e))?;
        let _ = reconnected.exit().await;
        evidence.push(format!(
            "reload mod_event_socket: back on {}:{} with the new password ({})",
            new.listen_ip,
            new.listen_port,
            if status.ready { "ready" } else { "NOT ready" }
        ));
    } else {
        let _ = client.exit().await;
    }
    Ok(evidence)
}
