//! Step `event-socket`: rotate the Event Socket password when it is ClueCon or weak, bind it to
//! 127.0.0.1 unless it listens on loopback only already (127.0.0.1 or ::1), and make
//! `apply-inbound-acl loopback.auto` explicit.
//!
//! The OLD password is kept by the orchestrator: the reload must authenticate with it.

use super::step::{self, PlanInput};
use super::{FileEdit, HardenOptions, HostFacts, Probes, StepError, StepPlan};
use crate::conf::{self, diff, xml};
use crate::inventory::Host;
use crate::model::{self, EventSocket, HostModel};
use crate::secret::Secret;
use crate::vault::{self, CredKind};

pub const NAME: &str = "event-socket";
pub const FILE: &str = "autoload_configs/event_socket.conf.xml";

/// Listen addresses left as they are: loopback only, so the network cannot reach the socket
/// (audit FS-ESL-02 passes them too). `::1` works only where IPv6 loopback does, and such a host
/// already runs FreeSWITCH on it: preflight proved that listener and authenticated through it,
/// and the reload, verify and fs_cli reach the same address.
const LOOPBACK: [&str; 2] = ["127.0.0.1", "::1"];

/// The step in the registry: its edit goes out in the config write, so `apply` has nothing left.
pub struct EventSocketStep;
step::config_step!(EventSocketStep);

/// The Event Socket's file, its new password, and the Event Socket FreeSWITCH runs after its reload.
pub fn step_plan(input: &PlanInput<'_>) -> Result<StepPlan, StepError> {
    let p = plan(input.facts, input.opts)?;
    let mut outline = p.plan;
    if let Some(edit) = p.edit {
        // FreeSWITCH takes the new file with `reload mod_event_socket` (not `reloadxml`).
        if edit.content_changed() {
            outline.reload.event_socket = true;
            outline.event_socket = Some(p.after);
        }
        outline.edits.push(edit);
    }
    // Who a rotation affects: the calls up now are not among them (calls are the core's
    // sessions; `reload mod_event_socket` restarts only the listener), said so the operator
    // need not wait for a quiet hour.
    if input.opts.rotate_only.is_some() && p.new_password.is_some() {
        outline.warnings.push(format!(
            "Event Socket clients other than the fs_cli configs fsfleet writes (your own \
             scripts, monitoring) are disconnected by `reload mod_event_socket` and need the new \
             password to reconnect (`fsfleet creds show {} --reveal`)",
            input.host.name
        ));
        if let Some(n) = input.pre.sessions {
            outline.warnings.push(format!(
                "{n} call{} up now: the Event Socket reload does not touch calls",
                if n == 1 { " is" } else { "s are" }
            ));
        }
    }
    outline
        .secrets
        .extend(p.new_password.map(|pw| (CredKind::EslPassword, pw)));
    Ok(outline)
}

/// event_socket.conf.xml is a config file, read for every run.
pub fn probes(_p: &mut Probes, _host: &Host) {}

pub struct Planned {
    pub plan: StepPlan,
    pub edit: Option<FileEdit>,
    /// The password FreeSWITCH uses now (needed for the reload).
    pub current: EventSocket,
    /// The settings FreeSWITCH runs with once the edit is applied and reloaded.
    pub after: EventSocket,
    /// A new password, when rotating.
    pub new_password: Option<Secret>,
}

pub fn plan(f: &HostFacts, opts: &HardenOptions) -> Result<Planned, StepError> {
    let (path, text) = f.conf_text(FILE)?;
    let m = HostModel::new(f);
    let current = EventSocket::parse(text, path, m.vars())?;
    let mut plan = StepPlan::default();
    let mut out = text.to_string();
    let edit_err = |source: conf::ConfError| StepError::Edit {
        path: path.to_string(),
        source,
    };

    let mut new_password = None;
    let weak = model::password_weakness(current.password.expose()).map(|w| w.as_str());
    let why = match opts.rotate_only {
        // `fsfleet rotate`: the password only, and only when asked for, weak or not.
        Some(scope) => scope
            .esl
            .then_some(weak.unwrap_or(crate::harden::context::ON_REQUEST)),
        None if weak.is_some() => weak,
        None if opts.rotate => Some("--rotate"),
        None => None,
    };
    if let Some(why) = why {
        let pw = vault::generate_password(vault::PASSWORD_LEN);
        if let Some(o) = xml::set_param(&out, "password", pw.expose()).map_err(edit_err)? {
            out = o;
        }
        plan.changes
            .push(format!("rotate the Event Socket password (was {why})"));
        new_password = Some(pw);
    }
    if opts.rotate_only.is_some() {
        // The listener and its ACL are `fsfleet harden`'s to change: said, not changed.
        if let Some(why) = exposure(&current) {
            plan.warnings.push(format!(
                "{why}: `fsfleet harden` fixes that; `fsfleet rotate` changes only the password"
            ));
        }
    } else if !LOOPBACK.contains(&current.listen_ip.as_str()) {
        if let Some(o) = xml::set_param(&out, "listen-ip", "127.0.0.1").map_err(edit_err)? {
            out = o;
        }
        plan.changes.push(format!(
            "bind the Event Socket to 127.0.0.1 (was {})",
            current.listen_ip
        ));
    }
    if opts.rotate_only.is_none() && current.inbound_acl.as_deref() != Some("loopback.auto") {
        if let Some(o) =
            xml::set_param(&out, "apply-inbound-acl", "loopback.auto").map_err(edit_err)?
        {
            out = o;
        }
        plan.changes.push(format!(
            "set apply-inbound-acl to loopback.auto (was {})",
            current.inbound_acl.as_deref().unwrap_or("unset")
        ));
    }
    if out != text {
        let mut secrets: Vec<&Secret> = vec![&current.password];
        if let Some(p) = &new_password {
            secrets.push(p);
        }
        plan.diffs
            .push(diff::masked_diff(path, text, &out, &secrets));
    }
    // The file holds the Event Socket password: it also ends readable only by root and
    // FreeSWITCH, whether or not its content changes.
    let edit = f.edit(path, out.into_bytes(), true)?;
    if let Some(e) = &edit
        && e.was != e.want
    {
        plan.changes
            .push(super::sip_password::restrict_line(path, e));
    }
    let after = match &edit {
        Some(e) if e.content_changed() => {
            EventSocket::parse(&String::from_utf8_lossy(&e.new), path, m.vars())?
        }
        _ => current.clone(),
    };
    Ok(Planned {
        plan,
        edit,
        current,
        after,
        new_password,
    })
}

/// What the baseline would change about where the Event Socket listens and whom it lets in.
fn exposure(es: &EventSocket) -> Option<String> {
    let mut out = Vec::new();
    if !LOOPBACK.contains(&es.listen_ip.as_str()) {
        out.push(format!("the Event Socket listens on {}", es.listen_ip));
    }
    if es.inbound_acl.as_deref() != Some("loopback.auto") {
        out.push(format!(
            "its apply-inbound-acl is {}",
            es.inbound_acl.as_deref().unwrap_or("unset")
        ));
    }
    (!out.is_empty()).then(|| out.join(" and "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stock_settings_are_rotated_bound_and_acl_made_explicit_then_idempotent() {
        let f = HostFacts::stock();
        let p = plan(&f, &HardenOptions::default()).unwrap();
        assert_eq!(p.current.password.expose(), "ClueCon");
        assert_eq!(p.plan.changes.len(), 3, "{:?}", p.plan.changes);
        let pw = p.new_password.clone().unwrap();
        let new = String::from_utf8(p.edit.unwrap().new).unwrap();
        let after = EventSocket::parse(&new, FILE, &model::Vars::default()).unwrap();
        assert_eq!(after, p.after);
        assert_eq!(after.password, pw);
        assert_eq!(after.listen_ip, "127.0.0.1");
        assert_eq!(after.inbound_acl.as_deref(), Some("loopback.auto"));
        assert!(
            new.contains("<!--<param name=\"apply-inbound-acl\" value=\"loopback.auto\"/>-->"),
            "comments stay"
        );
        assert!(!p.plan.diffs[0].contains(pw.expose()));
        let f2 = HostFacts::with_conf("/etc/freeswitch", &[(FILE, &new)]);
        let p2 = plan(&f2, &HardenOptions::default()).unwrap();
        assert!(p2.plan.is_noop() && p2.edit.is_none() && p2.new_password.is_none());
        assert_eq!(p2.current.password, pw);
    }

    #[test]
    fn loopback_addresses_stay_and_others_are_bound_to_127_0_0_1() {
        for (ip, binds) in [
            ("::1", false),
            ("127.0.0.1", false),
            ("::", true),
            ("0.0.0.0", true),
            ("192.0.2.7", true),
            ("127.0.0.2", true),
        ] {
            let conf = format!(
                "<configuration name=\"event_socket.conf\">\n  <settings>\n    \
                 <param name=\"listen-ip\" value=\"{ip}\"/>\n    \
                 <param name=\"password\" value=\"{}\"/>\n    \
                 <param name=\"apply-inbound-acl\" value=\"loopback.auto\"/>\n  \
                 </settings>\n</configuration>\n",
                "Ab3".repeat(8)
            );
            let f = HostFacts::with_conf("/etc/freeswitch", &[(FILE, &conf)]);
            let p = plan(&f, &HardenOptions::default()).unwrap();
            let want: Vec<String> = if binds {
                vec![format!("bind the Event Socket to 127.0.0.1 (was {ip})")]
            } else {
                vec![]
            };
            assert_eq!(p.plan.changes, want, "{ip}");
            assert_eq!(p.after.listen_ip, if binds { "127.0.0.1" } else { ip });
        }
    }

    #[test]
    fn a_long_host_password_outside_the_generated_alphabet_is_rotated_not_shown() {
        let conf = |pw: &str| {
            format!(
                "<configuration name=\"event_socket.conf\">\n  <settings>\n    \
                 <param name=\"listen-ip\" value=\"127.0.0.1\"/>\n    \
                 <param name=\"listen-port\" value=\"8021\"/>\n    \
                 <param name=\"password\" value=\"{pw}\"/>\n    \
                 <param name=\"apply-inbound-acl\" value=\"loopback.auto\"/>\n  \
                 </settings>\n</configuration>\n"
            )
        };
        let hostile = conf("correct horse `id` $(id) battery");
        let f = HostFacts::with_conf("/etc/freeswitch", &[(FILE, &hostile)]);
        let p = plan(&f, &HardenOptions::default()).unwrap();
        assert_eq!(
            p.plan.changes,
            ["rotate the Event Socket password (was has characters fsfleet does not generate)"]
        );
        assert!(p.new_password.is_some());
        assert!(!p.plan.diffs[0].contains("horse"), "{}", p.plan.diffs[0]);
        // A long value of the generated alphabet is kept.
        let kept = conf("abcdefghijklmnopqrstuvwxyz012345");
        let f = HostFacts::with_conf("/etc/freeswitch", &[(FILE, &kept)]);
        let p = plan(&f, &HardenOptions::default()).unwrap();
        assert!(
            p.plan.is_noop() && p.new_password.is_none(),
            "{:?}",
            p.plan.changes
        );
    }
}
