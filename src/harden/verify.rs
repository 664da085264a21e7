//! Step `verify`: prove the baseline from both sides. Over the tunnel the new Event Socket
//! password works and FreeSWITCH is ready; on the host `fs_cli -x status` works with no password
//! argument; from the controller the Event Socket port gives no greeting; fail2ban's jail and ufw
//! are active.

use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::StepError;
use super::preflight::esl_connect;
use crate::conf::EventSocket;
use crate::inventory::Host;
use crate::secret::Secret;
use crate::ssh::Session;

pub const NAME: &str = "verify";

/// What the controller sees on host:port: whether an Event Socket greeting arrives.
pub async fn esl_greets_from_outside(address: &str, port: u16) -> Result<bool, String> {
    let connect = tokio::net::TcpStream::connect((address, port));
    let mut stream = match tokio::time::timeout(Duration::from_secs(3), connect).await {
        Err(_) => return Ok(false), // filtered
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Ok(false),
        Ok(Err(e)) => return Err(format!("{address}:{port}: {e}")),
        Ok(Ok(s)) => s,
    };
    let mut buf = vec![0u8; 256];
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if got.windows(12).any(|w| w == b"auth/request") {
            return Ok(true);
        }
    }
    Ok(false)
}

pub struct Checks {
    pub fail2ban: bool,
    pub firewall: bool,
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

    match esl_connect(session, es, password).await {
        Ok(mut c) => {
            match c.status().await {
                Ok(s) if s.ready => evidence.push(format!(
                    "Event Socket: new password accepted, FreeSWITCH {} ready",
                    s.version
                )),
                Ok(s) => problems.push(format!("FreeSWITCH {} is not ready", s.version)),
                Err(e) => problems.push(format!("Event Socket status: {e}")),
            }
            let _ = c.exit().await;
        }
        Err(e) => problems.push(format!("Event Socket with the vault's password: {e}")),
    }

    let mut script =
        String::from("echo '== fs_cli'; timeout 10 fs_cli -x status 2>&1; echo \"rc=$?\"\n");
    if checks.fail2ban {
        script.push_str("echo '== fail2ban'; timeout 10 fail2ban-client status freeswitch 2>&1; echo \"rc=$?\"\n");
    }
    if checks.firewall {
        script.push_str("echo '== ufw'; ufw status 2>&1 | head -n 1; echo \"rc=$?\"\n");
    }
    let out = session.run(&script, b"", Duration::from_secs(40)).await?;
    let text = out.stdout_text();
    let part = |name: &str| -> String {
        text.split(&format!("== {name}\n"))
            .nth(1)
            .map(|s| s.split("\n== ").next().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    let fs = part("fs_cli");
    if fs.contains("is ready") {
        evidence.push("fs_cli -x status works on the host without a password argument".into());
    } else {
        problems.push(format!(
            "fs_cli -x status on the host: {}",
            fs.lines().next().unwrap_or("no output")
        ));
    }
    if checks.fail2ban {
        let f2b = part("fail2ban");
        if f2b.contains("rc=0") {
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
        let ufw = part("ufw");
        if ufw.starts_with("Status: active") {
            evidence.push("ufw active".into());
        } else {
            problems.push(format!(
                "ufw: {}",
                ufw.lines().next().unwrap_or("no answer")
            ));
        }
    }

    if host.jump.is_some() {
        evidence.push(
            "outside probe of the Event Socket skipped: the host is reached through a jump host"
                .into(),
        );
    } else {
        match esl_greets_from_outside(&host.address, es.listen_port).await {
            Ok(false) => evidence.push(format!(
                "from the controller, {}:{} gives no Event Socket greeting",
                host.address, es.listen_port
            )),
            Ok(true) => problems.push(format!(
                "the Event Socket at {}:{} greets the controller: it is reachable from the network",
                host.address, es.listen_port
            )),
            Err(e) => evidence.push(format!("outside probe inconclusive: {e}")),
        }
    }
    if problems.is_empty() {
        Ok(evidence)
    } else {
        Err(StepError::Failed(problems.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

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
        assert_eq!(esl_greets_from_outside("127.0.0.1", port).await, Ok(true));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            s.write_all(b"Content-Type: text/rude-rejection\nContent-Length: 24\n\nAccess Denied, go away.\n").await.unwrap();
        });
        assert_eq!(esl_greets_from_outside("127.0.0.1", port).await, Ok(false));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        assert_eq!(
            esl_greets_from_outside("127.0.0.1", port).await,
            Ok(false),
            "refused"
        );
    }
}
