//! The transport: connect, verify host keys, authenticate, exec, upload, tunnel, jump.

mod auth;
pub mod config;
mod error;
pub mod known_hosts;
mod session;

pub use error::SshError;
pub use session::{ConnectOptions, Connector, ExecOutput, Session, sh_quote};

use std::io::{BufRead, IsTerminal, Write};

use futures::StreamExt;

use crate::inventory::{Host, HostKeyPolicy};

/// The `ask` policy: read the keys of every host that has no known_hosts entry, show all their
/// fingerprints in one list and ask once. Confirmed keys are recorded; hosts that stay unknown
/// are then refused by the normal connection. Without a terminal nothing is asked (and those
/// hosts are refused with a hint). Returns how many keys were recorded.
pub async fn confirm_new_host_keys(
    connector: &Connector,
    hosts: &[Host],
    policy_override: Option<HostKeyPolicy>,
    forks: usize,
) -> usize {
    let asking: Vec<&Host> = hosts
        .iter()
        .filter(|h| policy_override.unwrap_or(h.host_key_policy) == HostKeyPolicy::Ask)
        .filter(|h| connector.is_new_host(h).unwrap_or(false))
        .collect();
    if asking.is_empty() || !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return 0;
    }
    let scanned: Vec<(&Host, Result<russh::keys::PublicKey, SshError>)> = futures::stream::iter(
        asking
            .into_iter()
            .map(|h| async move { (h, connector.scan_key(h).await) }),
    )
    .buffer_unordered(forks.max(1))
    .collect()
    .await;
    let mut found: Vec<(&Host, russh::keys::PublicKey)> = scanned
        .into_iter()
        .filter_map(|(h, r)| r.ok().map(|k| (h, k)))
        .collect();
    if found.is_empty() {
        return 0;
    }
    found.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "These hosts are not in known_hosts yet. Check their fingerprints:"
    );
    for (h, k) in &found {
        let _ = writeln!(
            err,
            "  {:<24} {:<28} {} {}",
            h.name,
            known_hosts::host_port_name(&h.address, h.port),
            k.algorithm(),
            known_hosts::fingerprint(k)
        );
    }
    let _ = write!(
        err,
        "Trust and record these {} host keys? [y/N] ",
        found.len()
    );
    let _ = err.flush();
    drop(err);
    let mut answer = String::new();
    if std::io::stdin().lock().read_line(&mut answer).is_err()
        || !matches!(answer.trim(), "y" | "Y" | "yes")
    {
        for (h, _) in &found {
            connector.decline(h);
        }
        return 0;
    }
    found
        .iter()
        .filter(|(h, k)| connector.learn(h, k).is_ok())
        .count()
}
