//! Helpers shared by the commands that connect to hosts (moved out of main.rs so library
//! commands such as `audit` can use them): select the hosts, build the fleet options, build the
//! connector.

use std::path::Path;
use std::sync::Arc;

use crate::cli::RunArgs;
use crate::fleet::{FleetOptions, HostError, ProgressMode, Serial, SerialError};
use crate::inventory::{Host, Inventory, InventoryError, InventoryFormat, Limit};
use crate::ssh::{self, ConnectOptions, Connector};

/// Errors before any host is touched (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    /// The message names the value given.
    #[error(transparent)]
    Serial(#[from] SerialError),
}

/// Load the inventory and select the hosts of this run.
pub fn select(
    path: &Path,
    format: InventoryFormat,
    limit: Option<&str>,
) -> Result<(Inventory, Vec<Host>), CmdError> {
    let inv = Inventory::load_format(path, format)?;
    let hosts = match limit {
        Some(spec) => Limit::parse(spec, &inv.dir())?.apply(&inv)?,
        None => inv.hosts.clone(),
    };
    inv.check_local_files(&hosts)?;
    Ok((inv, hosts))
}

pub fn fleet_options(run: &RunArgs) -> Result<FleetOptions, CmdError> {
    let serial = match &run.serial {
        Some(s) => Some(s.parse::<Serial>()?),
        None => None,
    };
    Ok(FleetOptions {
        forks: run.forks as usize,
        serial,
        max_fail_percent: run.max_fail_percent,
        progress: if run.no_progress {
            ProgressMode::Never
        } else {
            ProgressMode::Auto
        },
        verbosity: run.verbosity(),
        check: false,
    })
}

/// A connector for the run, after asking about new host keys when the policy says `ask`.
pub async fn connector(inv: &Inventory, hosts: &[Host], run: &RunArgs) -> Arc<Connector> {
    let connector = Connector::new(
        &inv.hosts,
        ConnectOptions {
            known_hosts: run.known_hosts.clone(),
            host_key_policy: run.host_key_policy,
        },
    );
    ssh::confirm_new_host_keys(&connector, hosts, run.host_key_policy, run.forks as usize).await;
    Arc::new(connector)
}

/// Connect a host of a run; a failure says whether the host could not be reached or logged
/// into (unreachable) or failed otherwise.
pub async fn connect(connector: &Connector, host: &Host) -> Result<ssh::Session, HostError> {
    connector.connect(host).await.map_err(|e| {
        if e.is_unreachable() {
            HostError::Unreachable(crate::errors::chain(&e))
        } else {
            HostError::Failed(crate::errors::chain(&e))
        }
    })
}

/// [`connect`], the failure as the host's report.
pub async fn connect_or_report(
    connector: &Connector,
    host: &Host,
) -> Result<ssh::Session, crate::report::HostReport> {
    connect(connector, host)
        .await
        .map_err(|e| e.into_report(host))
}
