//! fsfleet: harden and audit a fleet of FreeSWITCH servers over SSH.

pub mod audit;
pub mod bans;
pub mod cli;
pub mod cmd;
pub mod conf;
pub mod display;
pub mod errors;
pub mod esl;
pub mod esl_target;
pub mod facts;
pub mod fleet;
pub mod harden;
pub mod hostfs;
pub mod inventory;
pub mod model;
pub mod progress;
pub mod report;
pub mod rollback;
pub mod rotate;
pub mod secret;
#[cfg(test)]
mod snapshot;
pub mod ssh;
pub mod vault;
