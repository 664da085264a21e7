//! The daemon: read the tree, start the SIP profiles and the Event Socket, run until signalled.

use crate::config::Layout;
use crate::core::Core;
use crate::logfile::{CpuIdle, Level, Logger};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Config(#[from] crate::xml::XmlError),
    #[error("cannot install the {0} signal handler: {1}")]
    Signal(&'static str, std::io::Error),
}

pub fn layout_from_args(args: &[String]) -> Result<Layout, String> {
    let mut layout = Layout {
        conf_dir: PathBuf::from("/etc/freeswitch"),
        log_dir: PathBuf::from("/var/log/freeswitch"),
    };
    let mut i = 0;
    while i < args.len() {
        let (name, inline) = match args[i].split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (args[i].clone(), None),
        };
        let mut value = || -> Result<PathBuf, String> {
            match &inline {
                Some(v) => Ok(PathBuf::from(v)),
                None => {
                    i += 1;
                    args.get(i)
                        .map(PathBuf::from)
                        .ok_or_else(|| format!("{name} needs a directory"))
                }
            }
        };
        match name.as_str() {
            "--conf-dir" => layout.conf_dir = value()?,
            "--log-dir" => layout.log_dir = value()?,
            other => {
                return Err(format!(
                    "unknown option {other:?}; usage: fs-standin serve [--conf-dir DIR] [--log-dir DIR]"
                ));
            }
        }
        i += 1;
    }
    Ok(layout)
}

pub async fn run(mut layout: Layout) -> Result<(), ServeError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(|e| ServeError::Signal("SIGTERM", e))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| ServeError::Signal("SIGINT", e))?;

    let _ = std::fs::create_dir_all(&layout.log_dir);
    // FreeSWITCH reports absolute paths through global_getvar conf_dir / log_dir.
    for dir in [&mut layout.conf_dir, &mut layout.log_dir] {
        if let Ok(abs) = std::fs::canonicalize(&*dir) {
            *dir = abs;
        }
    }
    let cpu = CpuIdle::new();
    cpu.spawn_sampler();
    let log = Logger::new(layout.log_dir.join("freeswitch.log"), cpu.clone());
    log.log(
        Level::Info,
        "switch_core.c:2503",
        "FreeSWITCH Version 1.10.12-release~64bit (-release 64bit)",
    );
    log.log(
        Level::Notice,
        "switch_core.c:1995",
        &format!("Reading configuration from {}", layout.conf_dir.display()),
    );
    let core = match Core::start(layout, log.clone(), cpu) {
        Ok(c) => c,
        Err(e) => {
            log.log(
                Level::Error,
                "switch_core.c:2221",
                &format!("Cannot Initialize [{e}]"),
            );
            return Err(e.into());
        }
    };
    crate::tls::start(&core);
    crate::sip::start_profiles(&core).await;
    tokio::spawn(crate::esl::run(core.clone()));
    log.log(
        Level::Console,
        "switch_core.c:2503",
        "FreeSWITCH Started Max Sessions [1000] Session Rate [30] SQL [Enabled]",
    );
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    log.log(Level::Console, "switch_core.c:3056", "Shutting down");
    Ok(())
}
