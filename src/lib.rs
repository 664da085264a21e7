//! fsfleet: harden and audit a fleet of FreeSWITCH servers over SSH.

pub mod inventory;
pub mod report;
pub mod ssh;
