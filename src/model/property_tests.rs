//! The property that proves harden and audit read a host alike (issue 13), over a table of
//! customised configs, computed on the model without a host:
//! - the fail2ban jail's ports, the firewall's SIP/TLS/RTP rules and the evidence of audit
//!   FS-SIP-06 / FS-FW-03 name the same ports (and the ones FreeSWITCH would use);
//! - password area: harden plans no rotation iff FS-SIP-01 / FS-ESL-01 pass, and after harden's
//!   edit both pass and a new plan rotates nothing;
//! - auth-logging area: harden turns `log-auth-failures` on iff FS-SIP-02 fails;
//! - Event Socket address: harden binds it iff FS-ESL-02 fails (loopback `::1` included);
//! - the whole plan: after harden's edits (and ufw as the firewall step leaves it) every
//!   baseline control the model can decide passes, and a new plan changes nothing.

use std::collections::BTreeSet;

use crate::audit::evidence::testing::{edit, evidence, stock_files, ufw_files};
use crate::audit::{EslProbe, Evidence, Finding, Live, Status, catalogue};
use crate::harden::{
    FileEdit, HardenOptions, auth_logging, event_socket, fail2ban, firewall, sip_password, step,
};

type Files = Vec<(String, String)>;

const SWITCH: &str = "autoload_configs/switch.conf.xml";
const ESL: &str = "autoload_configs/event_socket.conf.xml";
const INTERNAL: &str = "sip_profiles/internal.xml";

fn set_var(files: &mut Files, name: &str, value: &str) {
    edit(files, "vars.xml", |t| {
        crate::conf::vars::set_var(t, name, value)
            .unwrap()
            .unwrap_or_else(|| t.to_string())
    });
}

fn add_var(files: &mut Files, name: &str, value: &str) {
    edit(files, "vars.xml", |t| {
        t.replace(
            "</include>",
            &format!("  <X-PRE-PROCESS cmd=\"set\" data=\"{name}={value}\"/>\n</include>"),
        )
    });
}

fn rtp(files: &mut Files, lo: &str, hi: &str) {
    edit(files, SWITCH, |t| {
        t.replace(
            "<!-- <param name=\"rtp-start-port\" value=\"16384\"/> -->",
            &format!("<param name=\"rtp-start-port\" value=\"{lo}\"/>"),
        )
        .replace(
            "<!-- <param name=\"rtp-end-port\" value=\"32768\"/> -->",
            &format!("<param name=\"rtp-end-port\" value=\"{hi}\"/>"),
        )
    });
}

fn esl_param(files: &mut Files, name: &str, value: &str) {
    edit(files, ESL, |t| {
        crate::conf::xml::set_param(t, name, value)
            .unwrap()
            .unwrap_or_else(|| t.to_string())
    });
}

fn crlf(files: &mut Files) {
    for (_, t) in files.iter_mut() {
        *t = t.replace('\n', "\r\n");
    }
}

/// A config variant, the SIP ports and RTP range FreeSWITCH would use with it.
struct Variant {
    name: &'static str,
    change: fn(&mut Files),
    sip: &'static [u16],
    rtp: (u16, u16),
}

const STOCK_SIP: &[u16] = &[5060, 5061, 5080, 5081];

fn variants() -> Vec<Variant> {
    vec![
        Variant {
            name: "stock",
            change: |_| {},
            sip: STOCK_SIP,
            rtp: (16384, 32768),
        },
        Variant {
            name: "SIP ports via vars 5070/5090",
            change: |f| {
                set_var(f, "internal_sip_port", "5070");
                set_var(f, "external_sip_port", "5090");
            },
            sip: &[5061, 5070, 5081, 5090],
            rtp: (16384, 32768),
        },
        Variant {
            name: "sip-port set literally in one profile",
            change: |f| {
                edit(f, INTERNAL, |t| {
                    t.replace(
                        "<param name=\"sip-port\" value=\"$${internal_sip_port}\"/>",
                        "<param name=\"sip-port\" value=\"5062\"/>",
                    )
                })
            },
            // internal-ipv6 still uses $${internal_sip_port}.
            sip: &[5060, 5061, 5062, 5080, 5081],
            rtp: (16384, 32768),
        },
        Variant {
            name: "TLS on, on its own port",
            change: |f| {
                set_var(f, "internal_ssl_enable", "true");
                set_var(f, "internal_tls_port", "5071");
            },
            sip: &[5060, 5071, 5080, 5081],
            rtp: (16384, 32768),
        },
        Variant {
            name: "an extra profile file, sip-port absent",
            change: |f| {
                f.push((
                    "sip_profiles/extra.xml".into(),
                    "<profile name=\"extra\">\n  <settings>\n    <param name=\"tls-sip-port\" value=\"5201\"/>\n  </settings>\n</profile>\n".into(),
                ))
            },
            sip: &[5060, 5061, 5080, 5081, 5201],
            rtp: (16384, 32768),
        },
        Variant {
            name: "an unparseable sip-port",
            change: |f| {
                edit(f, INTERNAL, |t| {
                    t.replace("value=\"$${internal_sip_port}\"", "value=\"five\"")
                })
            },
            // FreeSWITCH reads 0 and takes its default 5060; harden and audit say so.
            sip: STOCK_SIP,
            rtp: (16384, 32768),
        },
        Variant {
            name: "RTP customised",
            change: |f| rtp(f, "30000", "30500"),
            sip: STOCK_SIP,
            rtp: (30000, 30500),
        },
        Variant {
            name: "RTP via a variable",
            change: |f| {
                add_var(f, "rtp_lo", "30000");
                add_var(f, "rtp_hi", "30500");
                rtp(f, "$${rtp_lo}", "$${rtp_hi}");
            },
            sip: STOCK_SIP,
            rtp: (30000, 30500),
        },
        Variant {
            name: "RTP inverted",
            change: |f| rtp(f, "40000", "30000"),
            sip: STOCK_SIP,
            rtp: (16384, 32768),
        },
        Variant {
            name: "Event Socket on port 8022, on ::1, on a LAN address, no password line",
            change: |f| {
                esl_param(f, "listen-port", "8022");
                esl_param(f, "listen-ip", "::1");
                edit(f, ESL, |t| {
                    t.replace("<param name=\"password\" value=\"ClueCon\"/>", "")
                });
            },
            sip: STOCK_SIP,
            rtp: (16384, 32768),
        },
        Variant {
            name: "a SIP profile on the Event Socket port",
            change: |f| set_var(f, "external_tls_port", "8021"),
            // Never opened, never banned on, never checked as SIP.
            sip: &[5060, 5061, 5080],
            rtp: (16384, 32768),
        },
        Variant {
            name: "single quotes",
            change: |f| {
                edit(f, INTERNAL, |t| {
                    t.replace(
                        "<param name=\"sip-port\" value=\"$${internal_sip_port}\"/>",
                        "<param name='sip-port' value='5063'/>",
                    )
                });
                // FreeSWITCH's preprocessor ignores a single-quoted set: 5060 stays.
                edit(f, "vars.xml", |t| {
                    t.replace(
                        "</include>",
                        "<X-PRE-PROCESS cmd='set' data='external_sip_port=5999'/>\n</include>",
                    )
                });
            },
            sip: &[5060, 5061, 5063, 5080, 5081],
            rtp: (16384, 32768),
        },
        Variant {
            name: "CRLF with SIP moved and RTP customised",
            change: |f| {
                set_var(f, "internal_sip_port", "5070");
                rtp(f, "30000", "30500");
                crlf(f);
            },
            sip: &[5061, 5070, 5080, 5081],
            rtp: (30000, 30500),
        },
        Variant {
            name: "comments holding the same params",
            change: |f| {
                edit(f, INTERNAL, |t| {
                    t.replace(
                        "<param name=\"sip-port\" value=\"$${internal_sip_port}\"/>",
                        "<param name=\"sip-port\" value=\"$${internal_sip_port}\"/>\n    <!-- <param name=\"sip-port\" value=\"5999\"/> -->",
                    )
                });
                edit(f, SWITCH, |t| {
                    t.replace(
                        "<!-- <param name=\"rtp-end-port\" value=\"32768\"/> -->",
                        "<!-- <param name=\"rtp-end-port\" value=\"32768\"/> -->\n    <!-- <param name=\"rtp-start-port\" value=\"1000\"/> -->",
                    )
                });
                // A commented X-PRE-PROCESS still acts (FACTS §1): the last set wins.
                edit(f, "vars.xml", |t| {
                    t.replace(
                        "</include>",
                        "<!-- <X-PRE-PROCESS cmd=\"set\" data=\"external_sip_port=5085\"/> -->\n</include>",
                    )
                });
            },
            sip: &[5060, 5061, 5081, 5085],
            rtp: (16384, 32768),
        },
    ]
}

fn eval(id: &str, ev: &Evidence) -> Finding {
    let c = catalogue().into_iter().find(|c| c.id == id).unwrap();
    c.run(ev)
}

/// The port numbers FS-SIP-06 names (`ufw: port N ...`).
fn audit_sip_ports(f: &Finding) -> BTreeSet<u16> {
    f.evidence
        .iter()
        .filter_map(|l| l.strip_prefix("ufw: port "))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

/// The range FS-FW-03 names (`... RTP ports LO:HI/udp ...`).
fn audit_rtp(f: &Finding) -> Option<(u16, u16)> {
    let l = f.evidence.first()?;
    let at = l.find("RTP ports ")? + "RTP ports ".len();
    let (lo, rest) = l[at..].split_once(':')?;
    let hi = rest.split('/').next()?;
    Some((lo.parse().ok()?, hi.parse().ok()?))
}

#[test]
fn jail_firewall_and_audit_name_the_same_ports() {
    for v in variants() {
        let mut files = stock_files();
        (v.change)(&mut files);
        // An active ufw with no rule: the audit then names every port it checks.
        let mut ev = evidence(
            &files,
            &[("ufw_status", "Status: active", 0)],
            Live::default(),
        );
        ufw_files(&mut ev, "", "", "DROP");
        // With an allow-list FS-SIP-06 names every port it checks, failing or not.
        ev.host.sip_allow_from = vec!["198.51.100.0/24".parse().unwrap()];
        let want: BTreeSet<u16> = v.sip.iter().copied().collect();

        let (jail, _) = fail2ban::jail_ports(&ev.facts, &ev.host).unwrap();
        let jail: BTreeSet<u16> = jail.sip.into_iter().collect();

        let w = firewall::wanted_rules(&ev.facts, &ev.host, 22, true);
        let fw_sip: BTreeSet<u16> = w
            .rules
            .iter()
            .filter(|r| r.purpose == firewall::Purpose::Sip)
            .map(|r| r.ports.first)
            .collect();
        let fw_rtp: Vec<(u16, u16)> = w
            .rules
            .iter()
            .filter(|r| r.purpose == firewall::Purpose::Rtp)
            .map(|r| (r.ports.first, r.ports.last))
            .collect();

        let sip06 = eval("FS-SIP-06", &ev);
        let fw03 = eval("FS-FW-03", &ev);
        assert_eq!(jail, want, "{}: jail", v.name);
        assert_eq!(fw_sip, want, "{}: firewall", v.name);
        assert_eq!(
            audit_sip_ports(&sip06),
            want,
            "{}: FS-SIP-06 {:?}",
            v.name,
            sip06.evidence
        );
        assert_eq!(fw_rtp, [v.rtp], "{}: firewall RTP", v.name);
        assert_eq!(
            audit_rtp(&fw03),
            Some(v.rtp),
            "{}: FS-FW-03 {:?}",
            v.name,
            fw03.evidence
        );
        // What had to be assumed is told on both sides.
        let assumed: Vec<&String> = w
            .warnings
            .iter()
            .filter(|m| m.contains("assumed"))
            .collect();
        for m in assumed {
            assert!(
                sip06
                    .evidence
                    .iter()
                    .chain(&fw03.evidence)
                    .any(|e| e == &format!("note: {m}")),
                "{}: harden warns {m:?}, audit does not",
                v.name
            );
        }
    }
}

/// Password variants: (name, default_password, Event Socket password line value or None).
const PASSWORDS: &[(&str, &str, Option<&str>)] = &[
    ("stock", "1234", Some("ClueCon")),
    (
        "just under the minimum",
        "abcdefghijklmno",
        Some("ABCDEFGHIJKLMNO"),
    ),
    (
        "at the minimum",
        "abcdefghijklmnop",
        Some("ABCDEFGHIJKLMNOP"),
    ),
    (
        "over the minimum",
        "k8Hq2ZrT5mNw9xLpk8Hq2ZrT5mNw9xLp",
        Some("Zz9Zz9Zz9Zz9Zz9Zz9Zz9Zz9Zz9Zz9Zz9"),
    ),
    ("13 characters", "abcdefghijklm", Some("ABCDEFGHIJKLM")),
    (
        "long with symbols",
        "k8Hq2ZrT5mNw9xLp-!@#x",
        Some("k8Hq2ZrT5mNw9xLp.%:x"),
    ),
    (
        "Event Socket password line missing",
        "k8Hq2ZrT5mNw9xLp",
        None,
    ),
];

fn password_files(sip: &str, esl: Option<&str>, crlf_too: bool) -> Files {
    // By text: fsfleet's own editor refuses to write symbols, a host's operator does not.
    let mut files = stock_files();
    edit(&mut files, "vars.xml", |t| {
        t.replace("default_password=1234", &format!("default_password={sip}"))
    });
    let line = esl.map_or(String::new(), |p| {
        format!("<param name=\"password\" value=\"{p}\"/>")
    });
    edit(&mut files, ESL, |t| {
        t.replace("<param name=\"password\" value=\"ClueCon\"/>", &line)
    });
    if crlf_too {
        crlf(&mut files);
    }
    files
}

fn live() -> Live {
    Live {
        cluecon: EslProbe::Refused,
        configured: EslProbe::Accepted { status: None },
        ..Live::default()
    }
}

#[test]
fn harden_rotates_a_password_iff_the_audit_fails_it() {
    let opts = HardenOptions::default();
    for crlf_too in [false, true] {
        for (name, sip, esl) in PASSWORDS {
            let files = password_files(sip, *esl, crlf_too);
            let ev = evidence(&files, &[], live());

            let (_, rotation) = sip_password::plan(&ev.facts, &opts).unwrap();
            let sip_new = rotation.as_ref().and_then(|(_, pw)| pw.clone());
            let sip01 = eval("FS-SIP-01", &ev);
            assert_eq!(
                sip_new.is_some(),
                sip01.status == Status::Fail,
                "{name}: harden rotates default_password vs FS-SIP-01 {:?}",
                sip01.evidence
            );
            assert_ne!(sip01.status, Status::Error, "{name}");

            let esl_plan = event_socket::plan(&ev.facts, &opts).unwrap();
            let esl01 = eval("FS-ESL-01", &ev);
            assert_eq!(
                esl_plan.new_password.is_some(),
                esl01.status == Status::Fail,
                "{name}: harden rotates the Event Socket password vs FS-ESL-01 {:?}",
                esl01.evidence
            );
            assert_ne!(esl01.status, Status::Error, "{name}");

            // After harden's edits both pass and a new plan rotates nothing.
            let mut after = files.clone();
            if let Some((e, _)) = &rotation {
                edit(&mut after, "vars.xml", |_| {
                    String::from_utf8(e.new.clone()).unwrap()
                });
            }
            if let Some(e) = &esl_plan.edit {
                edit(&mut after, ESL, |_| {
                    String::from_utf8(e.new.clone()).unwrap()
                });
            }
            let ev2 = evidence(&after, &[], live());
            assert_eq!(eval("FS-SIP-01", &ev2).status, Status::Pass, "{name}");
            assert_eq!(eval("FS-ESL-01", &ev2).status, Status::Pass, "{name}");
            let (_, r2) = sip_password::plan(&ev2.facts, &opts).unwrap();
            assert!(r2.and_then(|(_, pw)| pw).is_none(), "{name}");
            assert!(
                event_socket::plan(&ev2.facts, &opts)
                    .unwrap()
                    .new_password
                    .is_none(),
                "{name}"
            );
        }
    }
}

#[test]
fn the_minimum_is_where_harden_and_audit_turn() {
    let opts = HardenOptions::default();
    let at = "a".repeat(super::MIN_PASSWORD_LEN);
    let under = "a".repeat(super::MIN_PASSWORD_LEN - 1);
    for (pw, rotates) in [(under.as_str(), true), (at.as_str(), false)] {
        let files = password_files(pw, Some(pw), false);
        let ev = evidence(&files, &[], live());
        let (_, r) = sip_password::plan(&ev.facts, &opts).unwrap();
        assert_eq!(r.and_then(|(_, p)| p).is_some(), rotates, "{}", pw.len());
        assert_eq!(
            eval("FS-SIP-01", &ev).status == Status::Fail,
            rotates,
            "{}",
            pw.len()
        );
        assert_eq!(
            event_socket::plan(&ev.facts, &opts)
                .unwrap()
                .new_password
                .is_some(),
            rotates
        );
        assert_eq!(eval("FS-ESL-01", &ev).status == Status::Fail, rotates);
    }
}

/// Firewall area: on a host without a firewall the audit fails and harden plans a change; once
/// ufw holds exactly what harden plans, FS-FW-01/02/03 pass and a new plan is empty; a rule
/// narrowed by hand fails FS-FW-03 and harden plans to restore it.
#[test]
fn firewall_after_harden_passes_and_replans_nothing() {
    let opts = HardenOptions::default();
    for v in variants() {
        let mut files = stock_files();
        (v.change)(&mut files);
        let none = evidence(
            &files,
            &[
                ("ufw_status", "", 1),
                ("audit_iptables", "-P INPUT ACCEPT\n", 0),
            ],
            Live::default(),
        );
        assert_eq!(eval("FS-FW-01", &none).status, Status::Fail, "{}", v.name);
        let p = firewall::plan(&none.facts, &none.host, &opts).unwrap();
        assert!(!p.is_noop(), "{}", v.name);

        let w = firewall::wanted_rules(&none.facts, &none.host, none.host.port, true);
        let (v4, v6) = firewall::user_rules_for(&w.rules);
        let mut done = evidence(
            &files,
            &[("ufw_status", "Status: active", 0)],
            Live::default(),
        );
        ufw_files(&mut done, &v4, &v6, "DROP");
        for id in ["FS-FW-01", "FS-FW-02", "FS-FW-03"] {
            let f = eval(id, &done);
            assert_eq!(f.status, Status::Pass, "{}: {id} {:?}", v.name, f.evidence);
        }
        let p = firewall::plan(&done.facts, &done.host, &opts).unwrap();
        assert!(p.is_noop(), "{}: {:?}", v.name, p.changes);

        let (lo, hi) = v.rtp;
        let narrowed = v4.replace(&format!(" {lo}:{hi} "), &format!(" {lo}:{} ", lo + 10));
        assert_ne!(narrowed, v4, "{}", v.name);
        let mut part = evidence(
            &files,
            &[("ufw_status", "Status: active", 0)],
            Live::default(),
        );
        ufw_files(&mut part, &narrowed, &v6, "DROP");
        assert_eq!(eval("FS-FW-03", &part).status, Status::Fail, "{}", v.name);
        let p = firewall::plan(&part.facts, &part.host, &opts).unwrap();
        // The plan counts the rules; its --diff table lists each (action, port, proto, ...).
        assert!(
            p.diffs.iter().any(|d| d.lines().any(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w.len() >= 3 && w[0] == "add" && w[1] == format!("{lo}:{hi}") && w[2] == "udp"
            })),
            "{}: {:?}",
            v.name,
            p.changes
        );
    }
}

/// Event Socket area, where the listen address is concerned: harden binds the Event Socket to
/// 127.0.0.1 iff FS-ESL-02 fails on the config (nothing listening yet, so only the config
/// speaks). `::1` is loopback only: both leave it (a host configured so already runs FreeSWITCH
/// on IPv6 loopback, and preflight, reload, verify and fs_cli use that address).
#[test]
fn harden_binds_the_event_socket_iff_the_audit_fails_its_address() {
    let opts = HardenOptions::default();
    // (listen-ip, listen-port, whether FreeSWITCH then listens beyond loopback)
    for (ip, port, exposed) in [
        ("::1", "8021", false),
        ("::", "8021", true),
        ("0.0.0.0", "8021", true),
        ("192.168.1.20", "8021", true),
        ("127.0.0.1", "8022", false),
        ("", "8021", false),
        ("$${esl_ip}", "8021", false),
    ] {
        let mut files = stock_files();
        add_var(&mut files, "esl_ip", "127.0.0.1");
        esl_param(&mut files, "listen-port", port);
        edit(&mut files, ESL, |t| {
            t.replace(
                "<param name=\"listen-ip\" value=\"::\"/>",
                &format!("<param name=\"listen-ip\" value=\"{ip}\"/>"),
            )
        });
        let ev = evidence(&files, &[(crate::facts::LISTEN, "", 0)], live());
        let p = event_socket::plan(&ev.facts, &opts).unwrap();
        let binds = p
            .plan
            .changes
            .iter()
            .any(|c| c.starts_with("bind the Event Socket"));
        let f = eval("FS-ESL-02", &ev);
        assert_ne!(f.status, Status::Error, "{ip}: {:?}", f.evidence);
        assert_eq!(binds, f.status == Status::Fail, "{ip}: {:?}", f.evidence);
        assert_eq!(binds, exposed, "{ip}");
        assert_eq!(ev.esl_port(), port.parse::<u16>().unwrap(), "{ip}");
    }
}

/// Auth-logging area: harden turns `log-auth-failures` on iff FS-SIP-02 fails, on every variant
/// and on values FreeSWITCH takes as true without the word `true`; afterwards both agree it is on.
#[test]
fn harden_turns_on_auth_logging_iff_the_audit_fails_it() {
    type Change = fn(&mut Files);
    let profiles: [&str; 4] = [
        "sip_profiles/internal.xml",
        "sip_profiles/external.xml",
        "sip_profiles/internal-ipv6.xml",
        "sip_profiles/external-ipv6.xml",
    ];
    // By text after fsfleet's editor: it refuses to write `$${..}` itself.
    fn every_profile(f: &mut Files, value: &str) {
        for (rel, t) in f.iter_mut() {
            if rel.starts_with("sip_profiles/") {
                let on = crate::conf::xml::set_param(t, "log-auth-failures", "true")
                    .unwrap()
                    .unwrap_or_else(|| t.clone());
                *t = on.replace(
                    "name=\"log-auth-failures\" value=\"true\"",
                    &format!("name=\"log-auth-failures\" value=\"{value}\""),
                );
            }
        }
    }
    let mut cases: Vec<(&str, Change)> =
        variants().into_iter().map(|v| (v.name, v.change)).collect();
    cases.extend([
        ("on everywhere", (|f| every_profile(f, "true")) as Change),
        ("yes everywhere", |f| every_profile(f, "yes")),
        ("through a variable set to on", |f| {
            add_var(f, "laf", "on");
            every_profile(f, "$${laf}");
        }),
        ("through a variable set to false", |f| {
            add_var(f, "laf", "false");
            every_profile(f, "$${laf}");
        }),
        ("on only in a comment", |f| {
            every_profile(f, "true");
            edit(f, INTERNAL, |t| {
                t.replace(
                    "<param name=\"log-auth-failures\" value=\"true\"/>",
                    "<!-- <param name=\"log-auth-failures\" value=\"true\"/> -->",
                )
            });
        }),
        ("off in one profile", |f| {
            every_profile(f, "true");
            edit(f, "sip_profiles/external.xml", |t| {
                t.replace(
                    "name=\"log-auth-failures\" value=\"true\"",
                    "name=\"log-auth-failures\" value=\"0\"",
                )
            });
        }),
    ]);
    for (name, change) in cases {
        let mut files = stock_files();
        change(&mut files);
        assert!(
            profiles.iter().all(|p| files.iter().any(|(r, _)| r == p)),
            "{name}"
        );
        let mut ev = evidence(&files, &[], Live::default());
        let p = auth_logging::plan(&ev.facts).unwrap();
        let f = eval("FS-SIP-02", &ev);
        assert_ne!(f.status, Status::Error, "{name}: {:?}", f.evidence);
        assert_eq!(
            !p.plan.is_noop(),
            f.status == Status::Fail,
            "{name}: harden {:?} vs FS-SIP-02 {:?}",
            p.plan.changes,
            f.evidence
        );
        ev.facts = std::mem::take(&mut ev.facts).with_edits(&p.edits);
        let f = eval("FS-SIP-02", &ev);
        assert_eq!(f.status, Status::Pass, "{name}: {:?}", f.evidence);
        assert!(
            auth_logging::plan(&ev.facts).unwrap().plan.is_noop(),
            "{name}"
        );
    }
}

/// The baseline controls the model decides from config files and ufw's files alone.
const MODEL_BASELINE: &[&str] = &[
    "FS-SIP-01",
    "FS-SIP-02",
    "FS-ESL-01",
    "FS-ESL-02",
    "FS-CRED-05",
    "FS-FW-01",
    "FS-FW-02",
    "FS-FW-03",
];

/// The baseline controls that need the live host: what the controller sees of the Event Socket
/// (FS-ESL-03), fs_cli's files and connection on the host (FS-CRED-03/04), fail2ban running
/// (FS-F2B-*). The e2e tests cover them.
const LIVE_BASELINE: &[&str] = &[
    "FS-ESL-03",
    "FS-CRED-03",
    "FS-CRED-04",
    "FS-F2B-01",
    "FS-F2B-02",
    "FS-F2B-03",
    "FS-F2B-04",
    "FS-F2B-05",
];

/// Property 2: after applying harden's whole plan to a variant (its config edits through
/// `HostFacts::with_edits`, ufw as the firewall step leaves it), every baseline control the
/// model decides passes and a new plan changes nothing.
#[test]
fn after_harden_every_model_baseline_control_passes_and_a_new_plan_is_empty() {
    let baseline: Vec<&str> = catalogue()
        .into_iter()
        .filter(|c| c.baseline)
        .map(|c| c.id)
        .collect();
    for id in &baseline {
        assert!(
            MODEL_BASELINE.contains(id) != LIVE_BASELINE.contains(id),
            "{id}: say whether the model decides it"
        );
    }
    for id in MODEL_BASELINE.iter().chain(LIVE_BASELINE) {
        assert!(baseline.contains(id), "{id} is not a baseline control");
    }
    let opts = HardenOptions::default();
    let decided = [
        sip_password::NAME,
        event_socket::NAME,
        auth_logging::NAME,
        firewall::NAME,
    ];
    // ufw active with no rule yet; nothing listens; no fs_cli config on the host.
    let sections = [
        ("ufw_status", "Status: active", 0),
        (crate::facts::LISTEN, "", 0),
        ("audit_fscli_conf", "", 0),
    ];
    for v in variants() {
        let mut files = stock_files();
        (v.change)(&mut files);
        let mut ev = evidence(&files, &sections, live());
        let plans = step::plan_model_only(&ev.facts, &ev.host, &opts);
        let mut edits: Vec<FileEdit> = Vec::new();
        for (name, p) in &plans {
            if decided.contains(name) {
                let p = p
                    .as_ref()
                    .unwrap_or_else(|e| panic!("{}: {name}: {e}", v.name));
                assert!(
                    !p.is_noop(),
                    "{}: {name} plans nothing on a stock-like host",
                    v.name
                );
                edits.extend(p.edits.iter().cloned());
            }
        }
        ev.facts = std::mem::take(&mut ev.facts).with_edits(&edits);
        let w = firewall::wanted_rules(&ev.facts, &ev.host, ev.host.port, true);
        let (v4, v6) = firewall::user_rules_for(&w.rules);
        ufw_files(&mut ev, &v4, &v6, "DROP");

        for id in MODEL_BASELINE {
            let f = eval(id, &ev);
            assert_eq!(f.status, Status::Pass, "{}: {id} {:?}", v.name, f.evidence);
        }
        for (name, p) in step::plan_model_only(&ev.facts, &ev.host, &opts) {
            if decided.contains(&name) {
                let p = p.unwrap_or_else(|e| panic!("{}: {name} again: {e}", v.name));
                assert!(
                    p.is_noop() && p.edits.is_empty() && p.secrets.is_empty() && !p.reload.any(),
                    "{}: {name} plans again: {:?}",
                    v.name,
                    p.changes
                );
            }
        }
    }
}
