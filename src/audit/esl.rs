//! Event Socket controls: the default password, where it listens, who can reach it.

use super::evidence::{EslProbe, Evidence, OutsideProbe};
use super::{Control, Finding, Severity};
use crate::esl_target::Refusal;
use crate::facts::{ListenFact, is_loopback};

use crate::model::{ESL_CONF, MIN_PASSWORD_LEN, Weakness, password_weakness};

pub const CONTROLS: &[Control] = &[
    Control {
        id: "FS-ESL-01",
        family: "Event Socket",
        severity: Severity::Critical,
        title: "Event Socket password is not ClueCon, at least 16 characters, letters and digits only",
        rationale: "Anyone who reaches the Event Socket with ClueCon controls FreeSWITCH: \
                    originate calls, run `system` commands as the freeswitch user (CVE-2019-19492). \
                    harden keeps exactly the passwords this control passes (letters and digits go \
                    into XML, fs_cli.conf and the vault unescaped).",
        remediation: "Run `fsfleet harden` (rotates the password into the vault), or set a long random \
                      `password` in autoload_configs/event_socket.conf.xml and `reload mod_event_socket`.",
        baseline: true,
        eval: password_not_default,
    },
    Control {
        id: "FS-ESL-02",
        family: "Event Socket",
        severity: Severity::High,
        title: "Event Socket listens on loopback only",
        rationale: "The stock `listen-ip` `::` listens on every address; only the ACL stands between \
                    the network and the socket.",
        remediation: "Set `listen-ip` to 127.0.0.1 in autoload_configs/event_socket.conf.xml and \
                      `reload mod_event_socket` (fsfleet harden does both).",
        baseline: true,
        eval: loopback_only,
    },
    Control {
        id: "FS-ESL-03",
        family: "Event Socket",
        severity: Severity::High,
        title: "Event Socket is not reachable from the controller",
        rationale: "An Event Socket greeting seen from another machine means the socket is exposed \
                    to the network, whatever the config says.",
        remediation: "Bind the Event Socket to 127.0.0.1 and keep its port closed in the firewall \
                      (fsfleet harden); reach it through SSH instead.",
        baseline: true,
        eval: not_reachable_from_outside,
    },
    Control {
        id: "FS-ESL-04",
        family: "Event Socket",
        severity: Severity::Medium,
        title: "Event Socket inbound ACL is in force and does not allow everyone",
        rationale: "`apply-inbound-acl` decides which peers get a greeting at all; an ACL like \
                    any_v4.auto lets the whole network try passwords.",
        remediation: "Set `apply-inbound-acl` to loopback.auto (or a list in acl.conf.xml that allows \
                      only loopback and management hosts), then `reload mod_event_socket`.",
        baseline: false,
        eval: inbound_acl,
    },
];

fn password_not_default(ev: &Evidence) -> Finding {
    let es = match ev.event_socket() {
        Ok(es) => es,
        Err(e) => return Finding::error(e),
    };
    let mut bad = Vec::new();
    let mut ok = Vec::new();
    let n = es.password.expose().chars().count();
    match password_weakness(es.password.expose()) {
        None => ok.push(format!(
            "{ESL_CONF}: password is not ClueCon ({n} characters)"
        )),
        Some(Weakness::ClueCon) if es.password_defaulted => bad.push(format!(
            "{ESL_CONF}: password is not set, so FreeSWITCH uses ClueCon"
        )),
        Some(Weakness::ClueCon) => bad.push(format!("{ESL_CONF}: password is ClueCon")),
        Some(Weakness::Stock1234) => bad.push(format!("{ESL_CONF}: password is 1234")),
        Some(Weakness::Short(n)) => bad.push(format!(
            "{ESL_CONF}: password is {n} characters (fewer than {MIN_PASSWORD_LEN})"
        )),
        Some(Weakness::Alphabet) => bad.push(format!(
            "{ESL_CONF}: password ({n} characters) has characters fsfleet does not generate \
             (only letters and digits): harden rotates it"
        )),
    }
    match &ev.live.cluecon {
        EslProbe::Accepted { .. } => bad.push(format!(
            "live: `auth ClueCon` on 127.0.0.1:{} was ACCEPTED",
            ev.live.esl_port
        )),
        EslProbe::Refused => ok.push(format!(
            "live: `auth ClueCon` on 127.0.0.1:{} was refused (-ERR invalid)",
            ev.live.esl_port
        )),
        EslProbe::AclRejected(m) => ok.push(format!(
            "live: the ACL rejected the loopback probe before any login ({m})"
        )),
        EslProbe::NotProven(why) => {
            if bad.is_empty() {
                return Finding::error(format!(
                    "the live Event Socket was not asked (no password was sent): {why}"
                ));
            }
            bad.push(format!("live: not checked, no password was sent: {why}"));
        }
        EslProbe::NotRun(why) | EslProbe::Unavailable(why) => {
            if bad.is_empty() {
                return Finding::error(format!(
                    "the config password is not ClueCon, but the live Event Socket could not be \
                     asked: {why}; start FreeSWITCH and re-run"
                ));
            }
            bad.push(format!("live: not checked ({why})"));
        }
    }
    if let EslProbe::Accepted { status: Some(line) } = &ev.live.configured {
        ok.push(format!("live: the configured password is accepted: {line}"));
    }
    Finding::fail_if(bad, ok)
}

fn loopback_only(ev: &Evidence) -> Finding {
    let es = match ev.event_socket() {
        Ok(es) => es,
        Err(e) => return Finding::error(e),
    };
    let (ip, port) = (es.listen_ip.as_str(), es.listen_port);
    let mut bad = Vec::new();
    let mut ok = Vec::new();
    let shown = if es.listen_ip_defaulted {
        format!("empty ({ip})")
    } else {
        ip.to_string()
    };
    if is_loopback(ip) {
        ok.push(format!("{ESL_CONF}: listen-ip is {shown}"));
    } else {
        bad.push(format!(
            "{ESL_CONF}: listen-ip is {shown}, not a loopback address"
        ));
    }
    let listen = ev.facts.get::<ListenFact>().unwrap_or_default();
    if !listen.ran() {
        return Finding::error(format!(
            "`ss -ltnp` did not run on the host (status {:?}); install iproute2 and re-run",
            listen.status
        ));
    }
    let live = listen.addresses(port);
    let open: Vec<&String> = live.iter().filter(|a| !is_loopback(a)).collect();
    if live.is_empty() {
        ok.push(format!("live: nothing listens on TCP port {port}"));
    } else if open.is_empty() {
        ok.push(format!("live: port {port} listens on {}", live.join(", ")));
    } else {
        bad.push(format!("live: port {port} listens on {}", live.join(", ")));
    }
    // Whose listeners these are: another user's where the config points, or in the way of
    // FreeSWITCH's own, is a trap for the password.
    match crate::esl_target::from_sections(&ev.facts.sections, ip, port) {
        Ok(t) => ok.push(format!("live: {}", t.evidence)),
        Err(r @ Refusal::Foreign(_)) => bad.push(format!("live: {r}")),
        Err(r @ Refusal::Unreadable(_)) => return Finding::error(r.to_string()),
        Err(_) => {}
    }
    Finding::fail_if(bad, ok)
}

fn not_reachable_from_outside(ev: &Evidence) -> Finding {
    let target = format!("{}:{}", ev.host.address, ev.live.esl_port);
    match &ev.live.outside {
        OutsideProbe::Greeting => Finding::fail(vec![format!(
            "a TCP connection from the controller to {target} got the Event Socket greeting \
             (Content-Type: auth/request)"
        )]),
        OutsideProbe::NoGreeting(what) => Finding::pass(vec![format!(
            "from the controller to {target}: {what}; no Event Socket greeting"
        )]),
        OutsideProbe::NoConnection(why) => Finding::pass(vec![format!(
            "from the controller to {target}: no connection ({why})"
        )]),
        OutsideProbe::NotRun(why) => Finding::skipped(why.clone()),
    }
}

/// Built-in ACL names that allow more than loopback/local management.
const OPEN_ACLS: &[&str] = &[
    "any_v4.auto",
    "any_v6.auto",
    "wan.auto",
    "wan_v4.auto",
    "wan_v6.auto",
];

fn inbound_acl(ev: &Evidence) -> Finding {
    let acl = match ev.event_socket() {
        Ok(es) => es.inbound_acl.unwrap_or_default(),
        Err(e) => return Finding::error(e),
    };
    if acl.trim().is_empty() {
        return Finding::pass(vec![format!(
            "{ESL_CONF}: apply-inbound-acl is not set, so FreeSWITCH's built-in loopback.auto applies"
        )]);
    }
    let mut bad = Vec::new();
    for name in acl.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if OPEN_ACLS.contains(&name) {
            bad.push(format!(
                "{ESL_CONF}: apply-inbound-acl {name} lets every address of the network try"
            ));
        } else if !name.ends_with(".auto") {
            match acl_list_default(ev, name) {
                Ok(Some(d)) if d == "allow" => {
                    bad.push(format!("acl.conf.xml: list {name} has default=\"allow\""))
                }
                Ok(Some(_)) => {}
                Ok(None) => {
                    // FreeSWITCH also accepts a CIDR here; a name it does not know denies.
                    if name.contains('/') && (name.ends_with("/0")) {
                        bad.push(format!(
                            "{ESL_CONF}: apply-inbound-acl {name} allows everyone"
                        ));
                    }
                }
                Err(e) => return Finding::error(e),
            }
        }
    }
    Finding::fail_if(bad, vec![format!("{ESL_CONF}: apply-inbound-acl is {acl}")])
}

/// The `default` of a named list in acl.conf.xml.
fn acl_list_default(ev: &Evidence, name: &str) -> Result<Option<String>, String> {
    let text = ev.conf("autoload_configs/acl.conf.xml")?;
    let tags = crate::conf::xml::scan(text).map_err(|e| format!("acl.conf.xml: {e}"))?;
    Ok(tags
        .iter()
        .filter(|t| t.name == "list" && t.kind != crate::conf::xml::TagKind::End)
        .find(|t| t.attr("name").is_some_and(|a| a.value == name))
        .and_then(|t| t.attr("default").map(|a| a.value.clone())))
}

#[cfg(test)]
mod tests {
    use super::super::evidence::testing::*;
    use super::super::{Live, Status};
    use super::*;
    use crate::conf::xml::set_param;

    fn eval(id: &str, ev: &Evidence) -> Finding {
        (CONTROLS.iter().find(|c| c.id == id).unwrap().eval)(ev)
    }

    fn hardened_files() -> Vec<(String, String)> {
        let mut f = stock_files();
        edit(&mut f, ESL_CONF, |t| {
            let t = set_param(t, "password", "Zx9Q2mK7pL4wT8vR")
                .unwrap()
                .unwrap();
            let t = set_param(&t, "listen-ip", "127.0.0.1").unwrap().unwrap();
            set_param(&t, "apply-inbound-acl", "loopback.auto")
                .unwrap()
                .unwrap()
        });
        f
    }

    fn live(cluecon: EslProbe, outside: OutsideProbe) -> Live {
        Live {
            esl_port: 8021,
            cluecon,
            configured: EslProbe::Accepted {
                status: Some("FreeSWITCH (Version 1.10.12-release  64bit) is ready".into()),
            },
            outside,
        }
    }

    #[test]
    fn stock_host_fails_every_baseline_esl_control_with_evidence() {
        let ev = evidence(
            &stock_files(),
            &[(
                crate::facts::LISTEN,
                "LISTEN 0 128 *:8021 *:*\nLISTEN 0 128 0.0.0.0:22 0.0.0.0:*",
                0,
            )],
            live(EslProbe::Accepted { status: None }, OutsideProbe::Greeting),
        );
        let f = eval("FS-ESL-01", &ev);
        assert_eq!(f.status, Status::Fail);
        assert_eq!(
            f.evidence,
            [
                "autoload_configs/event_socket.conf.xml: password is ClueCon",
                "live: `auth ClueCon` on 127.0.0.1:8021 was ACCEPTED"
            ]
        );
        let f = eval("FS-ESL-02", &ev);
        assert_eq!(f.status, Status::Fail);
        assert_eq!(
            f.evidence,
            [
                "autoload_configs/event_socket.conf.xml: listen-ip is ::, not a loopback address",
                "live: port 8021 listens on *"
            ]
        );
        let f = eval("FS-ESL-03", &ev);
        assert_eq!(f.status, Status::Fail);
        assert!(f.evidence[0].contains("192.0.2.5:8021 got the Event Socket greeting"));
        // The stock ACL is the built-in default: in force.
        assert_eq!(eval("FS-ESL-04", &ev).status, Status::Pass);
    }

    #[test]
    fn hardened_host_passes_and_never_shows_the_password() {
        let ev = evidence(
            &hardened_files(),
            &[(
                crate::facts::LISTEN,
                "LISTEN 0 128 127.0.0.1:8021 0.0.0.0:*",
                0,
            )],
            live(
                EslProbe::Refused,
                OutsideProbe::NoConnection("Connection refused (os error 111)".into()),
            ),
        );
        for id in ["FS-ESL-01", "FS-ESL-02", "FS-ESL-03", "FS-ESL-04"] {
            let f = eval(id, &ev);
            assert_eq!(f.status, Status::Pass, "{id}: {:?}", f.evidence);
            assert!(
                !f.evidence.join("\n").contains("Zx9Q2mK7pL4wT8vR"),
                "{id} leaks the password"
            );
        }
        assert_eq!(
            eval("FS-ESL-01", &ev).evidence,
            [
                "autoload_configs/event_socket.conf.xml: password is not ClueCon (16 characters)",
                "live: `auth ClueCon` on 127.0.0.1:8021 was refused (-ERR invalid)",
                "live: the configured password is accepted: FreeSWITCH (Version 1.10.12-release  64bit) is ready"
            ]
        );
    }

    #[test]
    fn config_changed_but_not_reloaded_is_caught_live() {
        let ev = evidence(
            &hardened_files(),
            &[(crate::facts::LISTEN, "LISTEN 0 128 *:8021 *:*", 0)],
            live(EslProbe::Accepted { status: None }, OutsideProbe::Greeting),
        );
        let f = eval("FS-ESL-01", &ev);
        assert_eq!(f.status, Status::Fail);
        assert_eq!(
            f.evidence,
            ["live: `auth ClueCon` on 127.0.0.1:8021 was ACCEPTED"]
        );
        assert_eq!(eval("FS-ESL-02", &ev).status, Status::Fail);
    }

    #[test]
    fn unknowable_is_error_never_pass() {
        let ev = evidence(
            &hardened_files(),
            &[],
            live(
                EslProbe::Unavailable("nothing accepted a connection".into()),
                OutsideProbe::NotRun("reached through a jump host".into()),
            ),
        );
        let f = eval("FS-ESL-01", &ev);
        assert_eq!(f.status, Status::Error);
        assert!(f.evidence[0].contains("start FreeSWITCH and re-run"));
        assert_eq!(eval("FS-ESL-02", &ev).status, Status::Error, "no ss output");
        assert_eq!(eval("FS-ESL-03", &ev).status, Status::Skipped);
    }

    /// Another user's listener where listen-ip points: FS-ESL-02 names it, FS-ESL-01 says no
    /// password was sent (fail when the config alone already fails, error otherwise).
    #[test]
    fn a_trap_listener_is_named_and_never_asked() {
        let trap = [
            (
                crate::facts::LISTEN,
                "LISTEN 0 5 127.0.0.1:8021 0.0.0.0:* uid:999 ino:1 sk:1 <->\n\
                 LISTEN 0 5 127.0.0.2:8021 0.0.0.0:* uid:1001 ino:2 sk:2 <->\n",
                0,
            ),
            (
                crate::facts::FS_PROCESS,
                "via systemd\nproc 57 999 997\nuser 999 freeswitch\n",
                0,
            ),
            (crate::facts::NET, "addr 127.0.0.1\nname 1001 mallory\n", 0),
        ];
        let why = "listen-ip ... where uid 1001 (mallory) listens".to_string();
        let live = Live {
            esl_port: 8021,
            cluecon: EslProbe::NotProven(why.clone()),
            configured: EslProbe::NotProven(why.clone()),
            outside: OutsideProbe::NoConnection("refused".into()),
        };
        let mut files = stock_files();
        edit(&mut files, ESL_CONF, |t| {
            set_param(t, "listen-ip", "127.0.0.2").unwrap().unwrap()
        });
        let ev = evidence(&files, &trap, live.clone());
        let f = eval("FS-ESL-02", &ev);
        assert_eq!(f.status, Status::Fail, "{:?}", f.evidence);
        let text = f.evidence.join("\n");
        assert!(
            text.contains("127.0.0.2:8021") && text.contains("uid 1001 (mallory)"),
            "{text}"
        );
        let f = eval("FS-ESL-01", &ev);
        assert_eq!(f.status, Status::Fail);
        assert!(
            f.evidence[1].contains("no password was sent") && f.evidence[1].contains("mallory")
        );
        let mut strong = files.clone();
        edit(&mut strong, ESL_CONF, |t| {
            set_param(t, "password", "Zx9Q2mK7pL4wT8vR")
                .unwrap()
                .unwrap()
        });
        let f = eval("FS-ESL-01", &evidence(&strong, &trap, live));
        assert_eq!(f.status, Status::Error);
        assert!(
            f.evidence[0].contains("no password was sent"),
            "{:?}",
            f.evidence
        );
        // FreeSWITCH's own listener only: the proof is evidence of the pass.
        let own = [trap[0], trap[1], trap[2]].map(|(n, t, s)| {
            (
                n,
                if n == crate::facts::LISTEN {
                    "LISTEN 0 5 127.0.0.1:8021 0.0.0.0:* uid:999 ino:1 sk:1 <->\n"
                } else {
                    t
                },
                s,
            )
        });
        let f = eval(
            "FS-ESL-02",
            &evidence(&hardened_files(), &own, Live::default()),
        );
        assert_eq!(f.status, Status::Pass, "{:?}", f.evidence);
        assert!(
            f.evidence
                .iter()
                .any(|e| e.contains("FreeSWITCH (pid 57 as freeswitch, uid 999)'s own")),
            "{:?}",
            f.evidence
        );
    }

    #[test]
    fn open_acls_fail() {
        let mut f = stock_files();
        edit(&mut f, ESL_CONF, |t| {
            set_param(t, "apply-inbound-acl", "any_v4.auto")
                .unwrap()
                .unwrap()
        });
        let ev = evidence(&f, &[], Live::default());
        let r = eval("FS-ESL-04", &ev);
        assert_eq!(r.status, Status::Fail);
        assert!(r.evidence[0].contains("any_v4.auto lets every address"));
        // A named list of acl.conf.xml with default deny passes (lan is stock, default allow).
        edit(&mut f, ESL_CONF, |t| {
            set_param(t, "apply-inbound-acl", "lan").unwrap().unwrap()
        });
        let ev = evidence(&f, &[], Live::default());
        assert_eq!(eval("FS-ESL-04", &ev).status, Status::Fail);
        edit(&mut f, ESL_CONF, |t| {
            set_param(t, "apply-inbound-acl", "domains")
                .unwrap()
                .unwrap()
        });
        let ev = evidence(&f, &[], Live::default());
        assert_eq!(eval("FS-ESL-04", &ev).status, Status::Pass);
    }

    #[test]
    fn listeners_parse_ss_output() {
        use crate::facts::listeners;
        let ss = "LISTEN 0 128 127.0.0.1:8021 0.0.0.0:*\nLISTEN 0 5 [::1]:8021 [::]:*\nLISTEN 0 5 [::]:80211 [::]:*\n";
        assert_eq!(listeners(ss, 8021), ["127.0.0.1", "[::1]"]);
        assert!(is_loopback("[::1]") && is_loopback("127.0.0.1") && !is_loopback("*"));
    }
}
