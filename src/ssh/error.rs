//! Transport errors: each says which host, what failed, and what the operator can do.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },

    #[error("{what} timed out after {secs} s")]
    Timeout { what: String, secs: u64 },

    #[error(
        "HOST KEY CHANGED for {host}: it offered {fingerprint}, but {file}:{line} records another key. \
         This may be a man-in-the-middle attack, or the host was reinstalled. Nothing was sent. \
         If the change is expected, remove that line (ssh-keygen -R) and connect again."
    )]
    HostKeyChanged {
        host: String,
        fingerprint: String,
        file: PathBuf,
        line: usize,
    },

    #[error("host key of {host} ({fingerprint}) is revoked in {file}:{line}; refusing to connect")]
    HostKeyRevoked {
        host: String,
        fingerprint: String,
        file: PathBuf,
        line: usize,
    },

    #[error("host key of {host} is unknown ({fingerprint}); {hint}")]
    HostKeyUnknown {
        host: String,
        fingerprint: String,
        hint: String,
    },

    #[error("cannot record the host key of {host}: {source}")]
    KnownHostsWrite {
        host: String,
        source: std::io::Error,
    },

    #[error("{0}")]
    KnownHostsRead(std::io::Error),

    #[error("authentication as {user}@{host} failed; tried: {tried}")]
    AuthFailed {
        user: String,
        host: String,
        tried: String,
    },

    #[error("sudo on {host}: {reason}")]
    Sudo { host: String, reason: String },

    #[error("connection to {host} was lost{during}")]
    ConnectionLost { host: String, during: String },

    #[error("jump host {jump} for {host}: {source}")]
    Jump {
        jump: String,
        host: String,
        source: Box<SshError>,
    },

    #[error("ssh protocol error with {host}: {source}")]
    Protocol { host: String, source: russh::Error },

    #[error("{0}")]
    Other(String),
}

impl SshError {
    /// Whether the host could not be reached or logged into at all (reported "unreachable"
    /// rather than "failed").
    pub fn is_unreachable(&self) -> bool {
        !matches!(self, SshError::Sudo { .. } | SshError::Other(_))
    }
}
