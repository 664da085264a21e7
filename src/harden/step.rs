//! The system steps (packages, fail2ban, firewall) behind one trait, and their registry.
//!
//! A step plans from the host's facts on the controller (pure) and returns a typed action; its
//! `apply` gets exactly that action, so nothing between plan and apply is a string to re-parse.
//! [`SYSTEM`] is the one list the orchestrator reads for their names, probes, plans, `--check`,
//! apply and report lines: adding a system step is its module plus one line there.

use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;

use super::context::{HardenOptions, HostFacts, Probes, StepCtx, StepError, StepPlan};
use super::{fail2ban, firewall, packages};
use crate::inventory::Host;

/// What a step would do (for the operator) and the typed action that does it (for `apply`).
#[derive(Debug, Clone, PartialEq)]
pub struct Plan<A> {
    pub outline: StepPlan,
    pub action: A,
}

impl<A> Deref for Plan<A> {
    type Target = StepPlan;
    fn deref(&self) -> &StepPlan {
        &self.outline
    }
}

impl<A> DerefMut for Plan<A> {
    fn deref_mut(&mut self) -> &mut StepPlan {
        &mut self.outline
    }
}

/// One system step: planned on the controller from the facts, applied with its own action.
pub trait Step {
    /// The name `--skip`/`--only` and the report use.
    const NAME: &'static str;
    /// What `apply` needs, computed by `plan` (no secrets).
    type Action: Send + Sync + 'static;

    /// The snippets and files the step reads, joined into the host's one facts script.
    fn probes(p: &mut Probes, host: &Host);

    /// Pure: what would change on this host. A plan without changes is not applied.
    fn plan(
        f: &HostFacts,
        host: &Host,
        opts: &HardenOptions,
    ) -> Result<Plan<Self::Action>, StepError>;

    /// Make the change; returns the evidence lines of the report.
    fn apply<'a>(
        ctx: &'a StepCtx<'a>,
        action: &'a Self::Action,
    ) -> impl Future<Output = Result<Vec<String>, StepError>> + Send + 'a;
}

type ApplyFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<String>, StepError>> + Send + 'a>>;

/// A planned step with its action hidden, so the three can sit in one list.
pub trait Planned: Send + Sync {
    fn outline(&self) -> &StepPlan;
    fn apply<'a>(&'a self, ctx: &'a StepCtx<'a>) -> ApplyFuture<'a>;
}

struct PlannedStep<S: Step> {
    plan: Plan<S::Action>,
}

impl<S: Step> Planned for PlannedStep<S> {
    fn outline(&self) -> &StepPlan {
        &self.plan.outline
    }
    fn apply<'a>(&'a self, ctx: &'a StepCtx<'a>) -> ApplyFuture<'a> {
        Box::pin(S::apply(ctx, &self.plan.action))
    }
}

/// A step's plan with its action type erased.
pub type PlanFn = fn(&HostFacts, &Host, &HardenOptions) -> Result<Box<dyn Planned>, StepError>;

/// A registry line: a step's name and its functions, with the action type erased.
pub struct Entry {
    pub name: &'static str,
    pub probes: fn(&mut Probes, &Host),
    pub plan: PlanFn,
}

fn plan_erased<S: Step + 'static>(
    f: &HostFacts,
    host: &Host,
    opts: &HardenOptions,
) -> Result<Box<dyn Planned>, StepError> {
    let plan = S::plan(f, host, opts)?;
    Ok(Box::new(PlannedStep::<S> { plan }))
}

const fn entry<S: Step + 'static>() -> Entry {
    Entry {
        name: S::NAME,
        probes: S::probes,
        plan: plan_erased::<S>,
    }
}

/// The system steps, in the order they run (packages first: fail2ban and ufw need them).
pub const SYSTEM: &[Entry] = &[
    entry::<packages::Packages>(),
    entry::<fail2ban::Fail2ban>(),
    entry::<firewall::Firewall>(),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_names_each_step_once_in_run_order() {
        let names: Vec<&str> = SYSTEM.iter().map(|e| e.name).collect();
        assert_eq!(names, [packages::NAME, fail2ban::NAME, firewall::NAME]);
    }

    #[test]
    fn a_planned_step_keeps_its_outline() {
        let f = HostFacts::stock();
        let h = crate::harden::context::test_host("pbx1");
        let opts = HardenOptions::default();
        let fw = SYSTEM
            .iter()
            .find(|e| e.name == firewall::NAME)
            .map(|e| (e.plan)(&f, &h, &opts));
        let direct = firewall::Firewall::plan(&f, &h, &opts).ok();
        match (fw, direct) {
            (Some(Ok(p)), Some(d)) => assert_eq!(p.outline(), &d.outline),
            (fw, d) => panic!("firewall did not plan: {:?} {:?}", fw.map(|r| r.is_ok()), d),
        }
    }
}
