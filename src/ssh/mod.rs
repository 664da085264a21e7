//! The transport: connect, verify host keys, authenticate, exec, upload, tunnel, jump.

mod auth;
mod error;
pub mod known_hosts;
mod session;

pub use error::SshError;
pub use session::{ConnectOptions, Connector, ExecOutput, Session, UploadOptions, sh_quote};
