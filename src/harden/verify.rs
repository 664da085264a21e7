//! Step `verify`: prove the baseline from both sides. Over the tunnel the new Event Socket
//! password works and FreeSWITCH is ready; on the host `fs_cli -x status` works with no password
//! argument; from the controller the Event Socket port gives no greeting; fail2ban's jail and ufw
//! are active.

use std::time::Duration;

use super::preflight::esl_connect;
use super::{HostFacts, StepError, fail2ban, firewall};
use crate::esl::EslError;
use crate::esl_target;
use crate::facts::{self, FactsError, Script, is_loopback};
use crate::inventory::Host;
use crate::model::EventSocket;
use crate::secret::Secret;
use crate::ssh::Session;

pub const NAME: &str = "verify";

/// The addresses listening on `port`, brackets dropped for the evidence line.
fn listeners(all: &[facts::Listener], port: u16) -> Vec<String> {
    crate::model::listeners::on_port(all, port)
        .into_iter()
        .map(|l| {
            l.address
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string()
        })
        .collect()
}

/// Verify a host on which this run changed nothing, from what the run already proved: preflight
/// authenticated with the configured Event Socket password and FreeSWITCH said it is ready, and
/// the facts (read in the same round trip) show `fs_cli -x status` working, the jail up, ufw
/// active and the Event Socket listening on loopback only. `None` when the facts do not prove
/// all of it: then the caller runs the full [`apply`], which asks the host again.
pub fn from_facts(f: &HostFacts, es: &EventSocket, checks: &Checks) -> Option<Vec<String>> {
    let mut evidence = vec![
        "nothing changed: preflight proved the configured Event Socket password and FreeSWITCH ready"
            .to_string(),
    ];
    if f.get::<facts::FsStatus>().unwrap_or_default().ready != Some(true) {
        return None;
    }
    evidence.push("fs_cli -x status works on the host without a password argument".into());
    if checks.fail2ban {
        if !fail2ban::jail_up_in_facts(f) {
            return None;
        }
        evidence.push("fail2ban jail freeswitch active".into());
    }
    if checks.firewall {
        let ufw = firewall::UfwState::from_facts(f);
        if !ufw.active {
            return None;
        }
        evidence.push("ufw active".into());
    }
    // The host model's listeners, as the audit's FS-ESL-02 and esl_target read them; an `ss`
    // line that cannot be placed sends the host to the full check.
    let all = crate::model::HostModel::new(f).listeners().ok()?;
    let addrs = listeners(&all, es.listen_port);
    if addrs.is_empty() || !addrs.iter().all(|a| is_loopback(a)) {
        return None;
    }
    evidence.push(format!(
        "the Event Socket listens on {} only (ss on the host): not reachable from the network",
        addrs.join(", ")
    ));
    Some(evidence)
}

/// Each kind of evidence line verify writes, by how it starts, and how the step's one line
/// says it: the report shows what was proved once, the evidence (at -v) says how.
const PROVED: &[(&str, &str)] = &[
    (
        "Event Socket: new password accepted",
        "the Event Socket takes the vault's password",
    ),
    (
        "nothing changed: preflight proved",
        "the Event Socket takes the configured password",
    ),
    (
        "Event Socket: the old password is refused",
        "the old Event Socket password is refused",
    ),
    ("fs_cli -x status works", "fs_cli works"),
    (
        "from the controller, ",
        "the Event Socket gives the controller no greeting",
    ),
    (
        "the Event Socket listens on ",
        "the Event Socket listens on loopback only",
    ),
    ("fail2ban jail freeswitch active", "jail freeswitch active"),
    ("ufw active", "ufw active"),
];

/// The verify step's line: what its evidence proved, in short.
pub fn summary(evidence: &[String]) -> String {
    let proved: Vec<&str> = evidence
        .iter()
        .filter_map(|l| {
            PROVED
                .iter()
                .find(|(start, _)| l.starts_with(start))
                .map(|(_, short)| *short)
        })
        .collect();
    if proved.is_empty() {
        "baseline verified".into()
    } else {
        format!("proved: {}", proved.join("; "))
    }
}

/// What the controller sees on host:port: whether an Event Socket greeting arrives (a
/// filtered or refused port: no).
pub async fn esl_greets_from_outside(
    address: &str,
    port: u16,
    connect_timeout: Duration,
) -> Result<bool, String> {
    match esl_target::probe_outside(address, port, connect_timeout, Duration::from_secs(2)).await {
        esl_target::Outside::Greeting => Ok(true),
        esl_target::Outside::NoConnection(e)
            if e.kind() != std::io::ErrorKind::ConnectionRefused =>
        {
            Err(format!("{address}:{port}: {e}"))
        }
        _ => Ok(false),
    }
}

pub struct Checks {
    pub fail2ban: bool,
    pub firewall: bool,
    /// How long the outside probe waits for a TCP answer before calling the port filtered.
    pub probe_timeout: Duration,
    /// An Event Socket the controller reaches fails the verify (harden's baseline); false: a
    /// warning only (`fsfleet rotate` changes passwords, not where the socket listens).
    pub exposure_fails: bool,
    /// The Event Socket password a rotation replaced: it must now be refused.
    pub retired_esl: Option<Secret>,
}

/// The outside probe's connect timeout from how long the SSH connection to the same address took
/// (TCP handshake, key exchange and authentication: several round trips): ten times that, so a
/// slow link is not mistaken for a filtered port, within 1 to 3 s (a filtered port answers
/// nothing and costs the whole timeout).
pub fn probe_timeout(ssh_connect: Duration) -> Duration {
    (ssh_connect * 10).clamp(Duration::from_secs(1), Duration::from_secs(3))
}

pub async fn apply(
    session: &Session,
    host: &Host,
    es: &EventSocket,
    password: &Secret,
    checks: &Checks,
) -> Result<Vec<String>, StepError> {
    let mut evidence = Vec::new();
    let mut problems = Vec::new();
    // The outside probe waits out its timeout on a filtered port: run it alongside the checks
    // over SSH instead of after them.
    let outside = async {
        if host.jump.is_some() {
            None
        } else {
            Some(esl_greets_from_outside(&host.address, es.listen_port, checks.probe_timeout).await)
        }
    };
    let (outside, inband) = tokio::join!(outside, inband(session, es, password, checks));
    let (ev, pr) = inband?;
    evidence.extend(ev);
    problems.extend(pr);
    match outside {
        None => evidence.push(
            "outside probe of the Event Socket skipped: the host is reached through a jump host"
                .into(),
        ),
        Some(Ok(false)) => evidence.push(format!(
            "from the controller, {}:{} gives no Event Socket greeting",
            host.address, es.listen_port
        )),
        Some(Ok(true)) => {
            let what = format!(
                "the Event Socket at {}:{} greets the controller: it is reachable from the network",
                host.address, es.listen_port
            );
            if checks.exposure_fails {
                problems.push(what);
            } else {
                evidence.push(format!(
                    "warning: {what} (`fsfleet harden` binds it to 127.0.0.1)"
                ));
            }
        }
        Some(Err(e)) => evidence.push(format!("outside probe inconclusive: {e}")),
    }
    if problems.is_empty() {
        Ok(evidence)
    } else {
        Err(StepError::Failed(problems.join("; ")))
    }
}

/// The checks over the SSH session: the Event Socket through the tunnel, then one script.
async fn inband(
    session: &Session,
    es: &EventSocket,
    password: &Secret,
    checks: &Checks,
) -> Result<(Vec<String>, Vec<String>), StepError> {
    let mut evidence = Vec::new();
    let mut problems = Vec::new();
    let connected = match esl_target::prove(session, &es.listen_ip, es.listen_port).await {
        Ok(target) => {
            evidence.push(target.evidence.clone());
            esl_connect(session, &target, password)
                .await
                .map(|c| (c, target))
                .map_err(|e| format!("Event Socket with the vault's password: {e}"))
        }
        Err(r) => Err(format!("Event Socket not checked: {r}")),
    };
    match connected {
        Ok((mut c, target)) => {
            match c.status().await {
                Ok(s) if s.ready => evidence.push(format!(
                    "Event Socket: new password accepted, FreeSWITCH {} ready",
                    s.version
                )),
                Ok(s) => problems.push(format!("FreeSWITCH {} is not ready", s.version)),
                Err(e) => problems.push(format!("Event Socket status: {e}")),
            }
            let _ = c.exit().await;
            if let Some(old) = checks.retired_esl.as_ref().filter(|old| *old != password) {
                match esl_connect(session, &target, old).await {
                    Err(EslError::AuthRejected) => evidence.push(
                        "Event Socket: the old password is refused (-ERR invalid)".to_string(),
                    ),
                    Ok(c) => {
                        let _ = c.exit().await;
                        problems.push("the Event Socket still takes the old password".to_string());
                    }
                    Err(e) => problems.push(format!(
                        "the Event Socket with the old password answered neither yes nor no: {e}"
                    )),
                }
            }
        }
        Err(e) => problems.push(e),
    }

    // fs_cli sends the password of its config: only through the same gate as the facts. The
    // answers come back as sections of one script (markers with the host-drawn token): fs_cli
    // prints what FreeSWITCH answers, which must not pass for the other checks' lines.
    let mut script = Script::new();
    script.add(
        "verify_fs_cli",
        &format!("( {} ) 2>&1", facts::fs_cli_status_snippet(10)),
    );
    if checks.fail2ban {
        script.add(
            "verify_fail2ban",
            "timeout 10 fail2ban-client status freeswitch 2>&1",
        );
    }
    if checks.firewall {
        script.add("verify_ufw", "ufw status 2>&1 | head -n 1");
    }
    let sections = match facts::gather(session, &script).await {
        Ok(s) => s,
        Err(FactsError::Ssh(e)) => return Err(StepError::Ssh(e)),
        Err(e) => {
            problems.push(format!("fs_cli, fail2ban and ufw not checked: {e}"));
            return Ok((evidence, problems));
        }
    };
    let fs = sections.text("verify_fs_cli");
    if fs.contains("is ready") {
        evidence.push("fs_cli -x status works on the host without a password argument".into());
    } else {
        problems.push(format!(
            "fs_cli -x status on the host: {}",
            fs.lines().next().unwrap_or("no output")
        ));
    }
    if checks.fail2ban {
        let f2b = sections.text("verify_fail2ban");
        if sections.status("verify_fail2ban") == Some(0) {
            let banned = f2b
                .lines()
                .find(|l| l.contains("Currently banned"))
                .map(str::trim)
                .unwrap_or("");
            evidence.push(format!("fail2ban jail freeswitch active ({banned})"));
        } else {
            problems.push(format!(
                "fail2ban jail freeswitch: {}",
                f2b.lines().next().unwrap_or("no answer")
            ));
        }
    }
    if checks.firewall {
        let ufw = sections.text("verify_ufw");
        if crate::model::ufw_status_active(ufw) {
            evidence.push("ufw active".into());
        } else {
            problems.push(format!(
                "ufw: {}",
                ufw.lines().next().unwrap_or("no answer")
            ));
        }
    }

    Ok((evidence, problems))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn the_summary_says_what_each_evidence_line_proved() {
        let ev: Vec<String> = [
            "the Event Socket at 127.0.0.1:8021 is FreeSWITCH (pid 64)'s own",
            "Event Socket: new password accepted, FreeSWITCH 1.10.12-release  64bit ready",
            "fs_cli -x status works on the host without a password argument",
            "fail2ban jail freeswitch active (Currently banned: 0)",
            "ufw active",
            "from the controller, 192.0.2.10:8021 gives no Event Socket greeting",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            summary(&ev),
            "proved: the Event Socket takes the vault's password; fs_cli works; jail freeswitch \
             active; ufw active; the Event Socket gives the controller no greeting"
        );
        assert_eq!(summary(&[]), "baseline verified");
    }

    #[test]
    fn a_rotation_says_the_old_password_is_refused() {
        let ev: Vec<String> = [
            "Event Socket: new password accepted, FreeSWITCH 1.10.12-release  64bit ready",
            "Event Socket: the old password is refused (-ERR invalid)",
            "fs_cli -x status works on the host without a password argument",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            summary(&ev),
            "proved: the Event Socket takes the vault's password; the old Event Socket password \
             is refused; fs_cli works"
        );
    }

    #[test]
    fn the_quick_verify_of_an_unchanged_host_is_summarised_too() {
        let ev: Vec<String> = [
            "nothing changed: preflight proved the configured Event Socket password and FreeSWITCH ready",
            "fs_cli -x status works on the host without a password argument",
            "the Event Socket listens on 127.0.0.1 only (ss on the host): not reachable from the network",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            summary(&ev),
            "proved: the Event Socket takes the configured password; fs_cli works; the Event \
             Socket listens on loopback only"
        );
    }

    #[test]
    fn probe_timeout_follows_the_link_within_bounds() {
        assert_eq!(
            probe_timeout(Duration::from_millis(20)),
            Duration::from_secs(1)
        );
        assert_eq!(
            probe_timeout(Duration::from_millis(150)),
            Duration::from_millis(1500)
        );
        assert_eq!(
            probe_timeout(Duration::from_secs(2)),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn listeners_on_loopback_only_are_told_apart() {
        let read = |ss: &str| {
            let s = facts::Sections::from_pairs(&[(facts::LISTEN, ss, 0)]);
            crate::model::listeners::from_sections(&s).unwrap()
        };
        let ss =
            &read("LISTEN 0 128 127.0.0.1:8021 0.0.0.0:*\nLISTEN 0 128 0.0.0.0:22 0.0.0.0:*\n");
        assert_eq!(listeners(ss, 8021), vec!["127.0.0.1"]);
        assert!(listeners(ss, 8021).iter().all(|a| is_loopback(a)));
        let open = &read("LISTEN 0 128 [::]:8021 [::]:*\nLISTEN 0 128 [::1]:8022 [::]:*\n");
        assert_eq!(listeners(open, 8021), vec!["::"]);
        assert!(!is_loopback("::"));
        assert!(is_loopback("::1"));
        assert!(!is_loopback("*"));
    }

    #[tokio::test]
    async fn outside_probe_tells_a_greeting_from_a_refusal() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            s.write_all(b"Content-Type: auth/request\n\n")
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
        });
        assert_eq!(
            esl_greets_from_outside("127.0.0.1", port, Duration::from_secs(3)).await,
            Ok(true)
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            s.write_all(b"Content-Type: text/rude-rejection\nContent-Length: 24\n\nAccess Denied, go away.\n").await.unwrap();
        });
        assert_eq!(
            esl_greets_from_outside("127.0.0.1", port, Duration::from_secs(3)).await,
            Ok(false)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        assert_eq!(
            esl_greets_from_outside("127.0.0.1", port, Duration::from_secs(3)).await,
            Ok(false),
            "refused"
        );
    }
}
