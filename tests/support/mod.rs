pub mod cli;
pub mod sshd;
