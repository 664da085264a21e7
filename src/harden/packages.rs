//! Step `packages`: install what the baseline needs, and only what is missing.
//!
//! One remote script: optional `apt-get update`, then `apt-get install` in two rounds so that
//! iptables (and the loggers) are in place BEFORE fail2ban's postinst first starts it: on a
//! minimal host fail2ban's bans are logged but not enforced without a packet filter (FACTS §5).
//!
//! `--no-install-recommends`: each Recommends that matters is listed here on purpose (iptables
//! and python3-systemd for fail2ban, logrotate for rsyslog, without which /var/log/syslog and
//! auth.log grow until the disk is full); the rest (whois, mail helpers) is not wanted on a PBX.

use std::future::Future;
use std::time::Duration;

use crate::facts::{Fact, FactError, ScriptInput};
use crate::harden::context::{HardenOptions, HostFacts, Probes, StepCtx, StepError, StepPlan};
use crate::harden::step::{Phase, Plan, PlanInput, Step};
use crate::inventory::Host;
use crate::ssh::sh_quote;

pub const NAME: &str = "packages";

/// Installed first, in this order, in their own apt-get run.
pub const FIRST: &[&str] = &["iptables", "rsyslog", "logrotate", "python3-systemd"];
/// Installed second: fail2ban starts from its postinst, by then with iptables present.
pub const THEN: &[&str] = &["ufw", "fail2ban"];

/// How long apt-get waits for another apt/dpkg (unattended-upgrades, cloud-init) to let go,
/// unless the inventory sets `apt_lock_timeout`.
pub const APT_LOCK_TIMEOUT: Duration = crate::inventory::DEFAULT_APT_LOCK_TIMEOUT;

/// Package lists older than this are refreshed before installing: mirrors drop superseded
/// versions (security updates), so old lists point at .debs that are gone (404).
pub const LISTS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// The whole step on the host beyond the lock waits: update + two installs.
const APPLY_LIMIT: Duration = Duration::from_secs(900);

const PROBE: &str = "packages_state";

/// Every package this step guarantees, in install order.
pub fn required() -> impl Iterator<Item = &'static str> {
    FIRST.iter().chain(THEN.iter()).copied()
}

pub fn probes(p: &mut Probes, _host: &Host) {
    p.fact::<AptProbe>();
}

/// The state of the required packages and of apt's lists.
pub struct AptProbe;

impl Fact for AptProbe {
    const NAME: &'static str = PROBE;
    type Value = AptState;

    fn snippet(_: &ScriptInput<'_>) -> String {
        let names = required().collect::<Vec<_>>().join(" ");
        // `pkg NAME STATUS` per package, then the number of package lists and the age in seconds of
        // the newest one (-1: none), then whether apt-get exists at all.
        format!(
            "dpkg-query -W -f='pkg ${{Package}} ${{db:Status-Status}}\\n' {names} 2>/dev/null\n\
             now=$(date +%s)\n\
             newest=$(find /var/lib/apt/lists -maxdepth 1 -type f -name '*_Packages*' -printf '%T@\\n' 2>/dev/null | sort -n | tail -n 1)\n\
             n=$(find /var/lib/apt/lists -maxdepth 1 -type f -name '*_Packages*' 2>/dev/null | wc -l)\n\
             echo \"lists $n\"\n\
             if [ -n \"$newest\" ]; then echo \"age $((now - ${{newest%.*}}))\"; else echo 'age -1'; fi\n\
             command -v apt-get >/dev/null && echo 'apt yes'; true"
        )
    }

    fn parse(text: &str, _: Option<i32>) -> Result<AptState, FactError> {
        Ok(parse_state(text))
    }
}

/// What the probe said.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AptState {
    installed: Vec<String>,
    lists: u64,
    /// Seconds since the newest list was written; None: no list at all.
    age: Option<u64>,
    apt: bool,
}

fn parse_state(text: &str) -> AptState {
    let mut st = AptState::default();
    for line in text.lines() {
        let mut w = line.split_whitespace();
        match (w.next(), w.next(), w.next()) {
            // `installed` only: half-configured or config-files means apt has to finish it.
            (Some("pkg"), Some(name), Some("installed")) => st.installed.push(name.to_string()),
            (Some("lists"), Some(n), None) => st.lists = n.parse().unwrap_or(0),
            (Some("age"), Some(a), None) => {
                st.age = a.parse::<i64>().ok().and_then(|a| a.try_into().ok())
            }
            (Some("apt"), Some("yes"), None) => st.apt = true,
            _ => {}
        }
    }
    st
}

/// The step in the registry.
pub struct Packages;

impl Step for Packages {
    const NAME: &'static str = NAME;
    const DOING: &'static str = "installing packages (apt)";
    const PHASE: Phase = Phase::System;
    type Action = Install;

    fn probes(p: &mut Probes, host: &Host) {
        probes(p, host)
    }

    fn plan(input: &PlanInput<'_>) -> Result<Plan<Install>, StepError> {
        plan(input.facts, input.host, input.opts)
    }

    fn apply<'a>(
        ctx: &'a StepCtx<'a>,
        action: &'a Install,
    ) -> impl Future<Output = Result<Vec<String>, StepError>> + Send + 'a {
        apply(ctx, action)
    }
}

/// What to install. The names can only be this module's constants, so nothing the host says
/// reaches apt-get's command line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Install {
    /// The missing ones of [`FIRST`], in that order.
    pub first: Vec<&'static str>,
    /// The missing ones of [`THEN`], installed once `first` is in.
    pub then: Vec<&'static str>,
    /// Refresh the package lists before installing.
    pub update: bool,
}

pub fn plan(f: &HostFacts, host: &Host, _opts: &HardenOptions) -> Result<Plan<Install>, StepError> {
    let st = f.get::<AptProbe>().unwrap_or_default();
    let missing: Vec<&'static str> = required()
        .filter(|p| !st.installed.iter().any(|i| i == p))
        .collect();
    let mut plan = Plan {
        outline: StepPlan::default(),
        action: Install::default(),
    };
    if missing.is_empty() {
        return Ok(plan);
    }
    if !st.apt {
        return Err(StepError::Refused(format!(
            "{}: apt-get not found ({}): fsfleet installs {} with apt on Debian/Ubuntu only; \
             install them by hand or --skip {NAME}",
            host.name,
            if f.base.os.pretty_name.is_empty() {
                "unknown OS"
            } else {
                &f.base.os.pretty_name
            },
            missing.join(", ")
        )));
    }
    let update = match st.age {
        _ if st.lists == 0 => Some("no package lists on the host".to_string()),
        None => Some("no package lists on the host".to_string()),
        Some(a) if a > LISTS_MAX_AGE.as_secs() => {
            Some(format!("package lists are {} old", human_age(a)))
        }
        Some(_) => None,
    };
    let first: Vec<&'static str> = FIRST
        .iter()
        .copied()
        .filter(|p| missing.contains(p))
        .collect();
    let then: Vec<&'static str> = THEN
        .iter()
        .copied()
        .filter(|p| missing.contains(p))
        .collect();
    plan.changes.push(format!(
        "install {} (apt-get, no recommends{})",
        missing.join(", "),
        match &update {
            Some(why) => format!(", after apt-get update: {why}"),
            None => String::new(),
        }
    ));
    plan.action = Install {
        first,
        then,
        update: update.is_some(),
    };
    Ok(plan)
}

fn human_age(secs: u64) -> String {
    match secs {
        s if s >= 2 * 86400 => format!("{} days", s / 86400),
        s if s >= 3600 => format!("{} hours", s / 3600),
        s => format!("{} minutes", s / 60),
    }
}

/// The one remote script. Package names are fixed constants of this module, never user input;
/// they are still quoted.
fn script(first: &[&str], then: &[&str], update: bool, lock_wait: Duration) -> String {
    let q = |v: &[&str]| v.iter().map(|p| sh_quote(p)).collect::<Vec<_>>().join(" ");
    let lock = lock_wait.as_secs().max(1);
    let mut s = format!(
        r#"set -u
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp) || exit 1
trap 'rm -f "$log"' EXIT
apt_o="-q -o DPkg::Lock::Timeout={lock} -o Acquire::Retries=2"
updated=no
update() {{
    if ! apt-get $apt_o update >"$log" 2>&1; then
        echo "apt-get update failed:" >&2
        grep -E '^(E|W|Err):' "$log" | tail -n 5 >&2 || tail -n 5 "$log" >&2
        exit 20
    fi
    updated=yes
}}
# Missing or stale lists show as these errors: refresh once and retry.
stale() {{ grep -qE 'Unable to locate package|has no installation candidate|404 +Not Found|Failed to fetch' "$log"; }}
install() {{
    apt-get $apt_o -y --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        install "$@" >"$log" 2>&1
}}
round() {{
    [ $# -gt 0 ] || return 0
    install "$@" && return 0
    if [ "$updated" = no ] && stale; then update; install "$@" && return 0; fi
    if grep -q 'Could not get lock' "$log"; then
        echo "another apt/dpkg held the package lock for more than {lock} s (apt_lock_timeout):" >&2
        grep -E '^E:' "$log" | head -n 1 >&2
        echo "let it finish (e.g. unattended-upgrades), or raise apt_lock_timeout, then re-run" >&2
        exit 22
    fi
    echo "apt-get install $* failed:" >&2
    grep -E '^(E|W|Err):|^dpkg: error' "$log" | tail -n 5 >&2 || tail -n 5 "$log" >&2
    exit 21
}}
"#
    );
    if update {
        s.push_str("update\n");
    }
    for round in [first, then].into_iter().filter(|r| !r.is_empty()) {
        s.push_str(&format!("round {}\n", q(round)));
    }
    let all = first.iter().chain(then.iter()).copied().collect::<Vec<_>>();
    s.push_str(&format!(
        "dpkg-query -W -f='${{Package}} ${{Version}} ${{db:Status-Status}}\\n' {}\n",
        q(&all)
    ));
    s
}

pub async fn apply(ctx: &StepCtx<'_>, action: &Install) -> Result<Vec<String>, StepError> {
    let Install {
        first,
        then,
        update,
    } = action;
    if first.is_empty() && then.is_empty() {
        return Ok(vec![]);
    }
    // The progress line and the report already name the host.
    let what = format!(
        "installing {}",
        [first.clone(), then.clone()].concat().join(", ")
    );
    let out = ctx
        .run_checked(
            &what,
            &script(first, then, *update, ctx.host.apt_lock_timeout),
            b"",
            APPLY_LIMIT + 3 * ctx.host.apt_lock_timeout,
        )
        .await?;
    let mut evidence = Vec::new();
    for line in out.stdout_text().lines() {
        let mut w = line.split_whitespace();
        if let (Some(name), Some(version), Some(status)) = (w.next(), w.next(), w.next()) {
            if status != "installed" {
                return Err(StepError::Failed(format!(
                    "{}: {name} is {status} after apt-get install: run `dpkg --configure -a` on the host and re-run",
                    ctx.host.name
                )));
            }
            evidence.push(format!("installed {name} {version}"));
        }
    }
    let wanted = first.len() + then.len();
    if evidence.len() != wanted {
        return Err(StepError::Failed(format!(
            "{}: apt-get reported success but dpkg lists {} of the {wanted} packages installed",
            ctx.host.name,
            evidence.len()
        )));
    }
    Ok(evidence)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::Sections;

    fn facts(probe: &str) -> HostFacts {
        HostFacts {
            sections: Sections::from_pairs(&[(PROBE, probe, 0)]),
            ..HostFacts::default()
        }
    }

    fn host() -> Host {
        crate::harden::context::test_host("pbx1")
    }

    const ALL: &str = "pkg iptables installed\npkg rsyslog installed\npkg logrotate installed\n\
                       pkg python3-systemd installed\npkg ufw installed\npkg fail2ban installed\n";

    #[test]
    fn nothing_to_do_when_everything_is_installed() {
        let f = facts(&format!("{ALL}lists 0\nage -1\n"));
        let p = plan(&f, &host(), &HardenOptions::default()).unwrap();
        assert!(p.is_noop(), "{p:?}");
        // Even without apt-get (nothing to install, nothing to refuse).
        assert!(plan(&f, &host(), &HardenOptions::default()).is_ok());
    }

    #[test]
    fn installs_only_the_missing_ones_iptables_round_first() {
        let probe = "pkg iptables not-installed\npkg rsyslog installed\npkg logrotate installed\n\
                     pkg python3-systemd config-files\npkg ufw installed\n\
                     lists 4\nage 600\napt yes\n";
        let p = plan(&facts(probe), &host(), &HardenOptions::default()).unwrap();
        assert_eq!(p.action.first, ["iptables", "python3-systemd"]);
        assert_eq!(p.action.then, ["fail2ban"]);
        assert!(!p.action.update);
        assert_eq!(
            p.changes,
            vec!["install iptables, python3-systemd, fail2ban (apt-get, no recommends)"]
        );
        let s = script(&["iptables"], &["fail2ban"], false, APT_LOCK_TIMEOUT);
        let i = s.find("round 'iptables'").unwrap();
        let f = s.find("round 'fail2ban'").unwrap();
        assert!(i < f, "iptables must be installed before fail2ban starts");
        assert!(s.contains("DPkg::Lock::Timeout=120"));
        assert!(s.contains("--no-install-recommends"));
        assert!(!s.contains("\nupdate\n"), "fresh lists: no update up front");
    }

    #[test]
    fn updates_first_when_lists_are_absent_or_old() {
        let none = plan(
            &facts("lists 0\nage -1\napt yes\n"),
            &host(),
            &HardenOptions::default(),
        )
        .unwrap();
        assert!(none.action.update);
        assert!(
            none.changes[0].contains("no package lists"),
            "{:?}",
            none.changes
        );
        let old = plan(
            &facts("lists 3\nage 1000000\napt yes\n"),
            &host(),
            &HardenOptions::default(),
        )
        .unwrap();
        assert!(old.action.update);
        assert!(old.changes[0].contains("11 days old"), "{:?}", old.changes);
        assert!(script(&[], &["ufw"], true, APT_LOCK_TIMEOUT).contains("\nupdate\nround 'ufw'\n"));
    }

    #[test]
    fn refuses_without_apt_naming_what_is_missing() {
        let err = plan(
            &facts("lists 0\nage -1\n"),
            &host(),
            &HardenOptions::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("pbx1") && err.contains("fail2ban") && err.contains("--skip packages"),
            "{err}"
        );
    }
}
