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

    #[error("cannot read known_hosts file {}: {source}", file.display())]
    KnownHostsRead {
        file: PathBuf,
        source: std::io::Error,
    },

    /// A direct-tcpip channel refused by a bastion or a host.
    #[error("{what}: {source}")]
    Tunnel { what: String, source: russh::Error },

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
        !matches!(
            self,
            SshError::Sudo { .. } | SshError::Tunnel { .. } | SshError::Other(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_tunnel_keeps_russh_s_error_and_is_not_unreachable() {
        let e = SshError::Tunnel {
            what: "fs1: cannot open a tunnel to 127.0.0.1:8021 on the host".into(),
            source: russh::Error::Disconnect,
        };
        assert!(!e.is_unreachable(), "the host was reached and logged into");
        let source = std::error::Error::source(&e).expect("russh's error as source");
        assert!(source.is::<russh::Error>(), "{source:?}");
        assert!(
            e.to_string()
                .starts_with("fs1: cannot open a tunnel to 127.0.0.1:8021 on the host: "),
            "{e}"
        );
    }
}
