//! `fsfleet harden`: the day-one baseline, one small named step per file.
//!
//! Every step follows the same shape (pyinfra's model, batched):
//! - `probes(&mut Probes, ..)`: the snippets and files the step needs, all joined into ONE remote
//!   script per host with every other step's;
//! - `plan(&HostFacts, ..) -> StepPlan`: pure, on the controller: would it change anything, what;
//! - `apply(..)`: send only what changes.
//!
//! The orchestration (order, backup, vault, rollback, reload) is in [`run`](self::run) below.

pub mod context;
pub mod firewall;

pub use context::{HardenOptions, HostFacts, Probes, StepCtx, StepError, StepPlan};
