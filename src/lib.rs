//! fsfleet: harden and audit a fleet of FreeSWITCH servers over SSH.

pub mod fleet;
pub mod inventory;
pub mod progress;
pub mod report;
