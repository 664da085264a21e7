//! SIP controls: the default password, auth-failure logging, stock users, exposure, TLS.

pub use crate::model::DirectoryUser as User;
pub use crate::model::line_of;
use crate::model::{
    DEFAULT_PASSWORD_VAR, MIN_PASSWORD_LEN, SipProfile, Weakness, password_weakness, switch_true,
};

use super::evidence::Evidence;
use super::firewall;
use super::{Control, ControlError, Finding, Severity};

pub const CONTROLS: &[Control] = &[
    Control {
        id: "FS-SIP-01",
        family: "SIP",
        severity: Severity::Critical,
        title: "SIP default_password is not 1234, at least 16 characters, letters and digits only",
        rationale: "Every stock user registers with $${default_password}; 1234 is the first password \
                    every SIP scanner tries, shorter ones fall to online guessing, and a registered \
                    attacker places calls at your expense. harden keeps exactly the passwords this \
                    control passes (letters and digits go into XML and the vault unescaped).",
        remediation: "Run `fsfleet harden` (rotates default_password into the vault), or set a long \
                      random default_password in vars.xml and `reloadxml`.",
        baseline: true,
        eval: default_password,
    },
    Control {
        id: "FS-SIP-02",
        family: "SIP",
        severity: Severity::High,
        title: "Every SIP profile logs authentication failures",
        rationale: "Without `log-auth-failures` FreeSWITCH logs no line for a wrong SIP password, so \
                    fail2ban never sees password guessing.",
        remediation: "Set `log-auth-failures` to true in every sip_profiles/*.xml and run \
                      `sofia profile NAME rescan` (fsfleet harden does both).",
        baseline: true,
        eval: auth_failures_logged,
    },
    Control {
        id: "FS-SIP-03",
        family: "SIP",
        severity: Severity::Medium,
        title: "Stock directory users (1000-1019, brian, default) are removed",
        rationale: "The stock users are known to every scanner, share one password and may call \
                    anywhere; real deployments define their own users.",
        remediation: "Delete directory/default/10[0-1][0-9].xml, brian.xml and default.xml you do not \
                      use, define your own users, then `reloadxml` (or waive FS-SIP-03).",
        baseline: false,
        eval: stock_users,
    },
    Control {
        id: "FS-SIP-04",
        family: "SIP",
        severity: Severity::Medium,
        title: "Users have their own passwords, not the shared default_password",
        rationale: "One leaked phone config reveals the password of every user that shares \
                    $${default_password}.",
        remediation: "Give each user in directory/ its own `password` param instead of \
                      $${default_password}, then `reloadxml`.",
        baseline: false,
        eval: shared_password,
    },
    Control {
        id: "FS-SIP-05",
        family: "SIP",
        severity: Severity::Low,
        title: "Voicemail PINs differ from the extension",
        rationale: "A voicemail PIN equal to the extension is the first guess; voicemail access can \
                    forward calls and leak messages.",
        remediation: "Set a distinct `vm-password` per user in directory/ (or let users change it), \
                      then `reloadxml`.",
        baseline: false,
        eval: vm_pin,
    },
    Control {
        id: "FS-SIP-06",
        family: "SIP",
        severity: Severity::Medium,
        title: "SIP is open only to allowed sources, not to the world",
        rationale: "SIP ports open to the Internet receive constant registration scans and toll-fraud \
                    attempts; most sites know where their phones and trunks are.",
        remediation: "Set `sip_allow_from` for the host in the inventory and run `fsfleet harden` \
                      (firewall rules per source).",
        baseline: false,
        eval: sip_exposure,
    },
    Control {
        id: "FS-SIP-07",
        family: "SIP",
        severity: Severity::Info,
        title: "SIP over TLS is enabled on at least one profile",
        rationale: "Without TLS, SIP signalling (digest exchanges, numbers dialled) crosses the \
                    network in clear text.",
        remediation: "Install certificates and set internal_ssl_enable / external_ssl_enable to true \
                      in vars.xml if your phones support TLS.",
        baseline: false,
        eval: tls,
    },
];

fn default_password(ev: &Evidence) -> Result<Finding, ControlError> {
    ev.conf("vars.xml")?;
    let model = ev.model();
    let Some(pw) = model.vars().get(DEFAULT_PASSWORD_VAR) else {
        return Ok(Finding::pass(vec![
            "vars.xml sets no default_password (users need their own passwords)".into(),
        ]));
    };
    let n = pw.chars().count();
    Ok(match password_weakness(pw) {
        None => Finding::pass(vec![format!(
            "vars.xml: default_password is not 1234 and is {n} characters"
        )]),
        Some(Weakness::Stock1234) => Finding::fail(vec![
            "vars.xml: default_password is 1234 (the stock default)".into(),
        ]),
        Some(Weakness::ClueCon) => Finding::fail(vec![
            "vars.xml: default_password is ClueCon (a stock password)".into(),
        ]),
        Some(Weakness::Short(n)) => Finding::fail(vec![format!(
            "vars.xml: default_password is {n} characters (fewer than {MIN_PASSWORD_LEN})"
        )]),
        Some(Weakness::Alphabet) => Finding::fail(vec![format!(
            "vars.xml: default_password ({n} characters) has characters fsfleet does not \
             generate (only letters and digits): harden rotates it"
        )]),
    })
}

/// The profiles of the host model, or why FreeSWITCH cannot load them all.
fn profiles(ev: &Evidence) -> Result<Vec<SipProfile>, ControlError> {
    let dir = ev.conf_dir()?;
    let p = ev.model().sip_profiles();
    if !p.unloadable.is_empty() {
        return Err(ControlError::Profiles(p.unloadable.join("; ")));
    }
    if p.profiles.is_empty() {
        return Err(ControlError::Profiles(format!(
            "no SIP profile in {dir}/sip_profiles/"
        )));
    }
    Ok(p.profiles)
}

/// A profile's file as operators name it (`sip_profiles/internal.xml`).
fn rel(ev: &Evidence, p: &SipProfile) -> String {
    let dir = ev.conf_dir().unwrap_or_default();
    p.file
        .strip_prefix(&format!("{dir}/"))
        .unwrap_or(&p.file)
        .to_string()
}

fn auth_failures_logged(ev: &Evidence) -> Result<Finding, ControlError> {
    let profiles = profiles(ev)?;
    let model = ev.model();
    let mut bad = Vec::new();
    let mut ok = Vec::new();
    for p in &profiles {
        let file = rel(ev, p);
        match &p.log_auth_failures {
            None => bad.push(format!("{file}: log-auth-failures is not set (off)")),
            Some(v) if !switch_true(&model.vars().expand_text(v)) => {
                bad.push(format!("{file}: log-auth-failures is {v}"))
            }
            Some(v) => ok.push(format!("{file}: log-auth-failures is {v}")),
        }
    }
    Ok(Finding::fail_if(bad, ok))
}

/// The directory users of the host model, or why they cannot be read.
pub fn users(ev: &Evidence) -> Result<Vec<User>, ControlError> {
    ev.conf_dir()?;
    Ok(ev.model().directory_users()?)
}

pub use crate::model::compact_ids;

fn stock_users(ev: &Evidence) -> Result<Finding, ControlError> {
    let users = users(ev)?;
    let stock: Vec<&str> = users
        .iter()
        .map(|u| u.id.as_str())
        .filter(|id| {
            matches!(*id, "brian" | "default")
                || id.parse::<u32>().is_ok_and(|n| (1000..=1019).contains(&n))
        })
        .collect();
    Ok(if stock.is_empty() {
        Finding::pass(vec![format!(
            "{} directory users, none of the stock ones",
            users.len()
        )])
    } else {
        Finding::fail(vec![format!(
            "stock users still defined in directory/default/: {}",
            compact_ids(&stock)
        )])
    })
}

fn shared_password(ev: &Evidence) -> Result<Finding, ControlError> {
    let users = users(ev)?;
    let shared: Vec<&str> = users
        .iter()
        .filter(|u| u.uses_default_password())
        .map(|u| u.id.as_str())
        .collect();
    Ok(if shared.is_empty() {
        Finding::pass(vec![format!(
            "no user of {} uses $${{default_password}}",
            users.len()
        )])
    } else {
        Finding::fail(vec![format!(
            "{} users share $${{default_password}}: {}",
            shared.len(),
            compact_ids(&shared)
        )])
    })
}

fn vm_pin(ev: &Evidence) -> Result<Finding, ControlError> {
    let users = users(ev)?;
    let model = ev.model();
    let same: Vec<&str> = users
        .iter()
        .filter(|u| {
            u.vm_password
                .as_deref()
                .is_some_and(|p| model.vars().expand_text(p) == u.id)
        })
        .map(|u| u.id.as_str())
        .collect();
    Ok(if same.is_empty() {
        Finding::pass(vec![format!(
            "no voicemail PIN of {} users equals its extension",
            users.len()
        )])
    } else {
        Finding::fail(vec![format!(
            "voicemail PIN equals the extension for {} users: {}",
            same.len(),
            compact_ids(&same)
        )])
    })
}

/// The ports checked are the host model's: the ones harden opens and the jail bans on (the
/// TLS port of every profile included, TLS on or not).
fn sip_exposure(ev: &Evidence) -> Result<Finding, ControlError> {
    ev.conf_dir()?;
    let sip = ev.model().sip_ports();
    let ports = sip.numbers();
    let mut bad = Vec::new();
    let notes: Vec<String> = sip.warnings.iter().map(|w| format!("note: {w}")).collect();
    let mut ok = Vec::new();
    if ev.host.sip_allow_from.is_empty() {
        bad.push(format!(
            "inventory: no sip_allow_from for host {}, so harden allows SIP from anywhere",
            ev.host.name
        ));
    } else {
        let srcs: Vec<String> = ev
            .host
            .sip_allow_from
            .iter()
            .map(|n| n.to_string())
            .collect();
        ok.push(format!("inventory: sip_allow_from {}", srcs.join(", ")));
    }
    match firewall::ufw(ev)? {
        None => bad.push("no firewall is active: SIP ports are reachable from anywhere".into()),
        Some(ufw) if !ufw.active => {
            bad.push("ufw is inactive: SIP ports are reachable from anywhere".into())
        }
        Some(ufw) => {
            for p in &ports {
                let open: Vec<&crate::model::ufw::Tuple> = ufw
                    .admitting(*p, "udp")
                    .into_iter()
                    .chain(ufw.admitting(*p, "tcp"))
                    .filter(|r| r.from_anywhere())
                    .collect();
                if let Some(r) = open.first() {
                    bad.push(format!(
                        "ufw: port {p} allowed from anywhere ({})",
                        r.describe()
                    ));
                } else {
                    ok.push(format!("ufw: port {p} not allowed from anywhere"));
                }
            }
        }
    }
    Ok(Finding::fail_if(bad, ok).with_notes(notes))
}

fn tls(ev: &Evidence) -> Result<Finding, ControlError> {
    let profiles = profiles(ev)?;
    let on: Vec<String> = profiles
        .iter()
        .filter(|p| p.tls)
        .map(|p| format!("{} (port {}/tcp)", p.name, p.tls_port))
        .collect();
    Ok(if on.is_empty() {
        Finding::fail(vec![format!(
            "TLS is off on every profile ({})",
            profiles
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )])
    } else {
        Finding::pass(vec![format!("TLS is on for: {}", on.join(", "))])
    })
}

#[cfg(test)]
mod tests {
    use super::super::evidence::testing::*;
    use super::super::{Live, Status};
    use super::*;
    use crate::conf::vars::set_var;
    use crate::conf::xml::set_param;

    const UFW_OPEN: &str = "### tuple ### allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in\n### tuple ### allow any 5060 0.0.0.0/0 any 0.0.0.0/0 in\n### tuple ### allow any 5080 0.0.0.0/0 any 0.0.0.0/0 in\n";
    const UFW_ALLOW_LIST: &str = "### tuple ### allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in\n### tuple ### allow any 5060 0.0.0.0/0 any 198.51.100.0/24 in\n### tuple ### allow any 5080 0.0.0.0/0 any 198.51.100.0/24 in\n";
    const ACTIVE: (&str, &str, i32) = ("ufw_status", "Status: active", 0);

    #[test]
    fn stock_tree_fails_password_logging_users_and_exposure() {
        let ev = evidence(&stock_files(), &[("ufw_status", "", 1)], Live::default());
        let f = eval("FS-SIP-01", &ev);
        assert_eq!(
            (f.status, f.evidence.clone()),
            (
                Status::Fail,
                vec!["vars.xml: default_password is 1234 (the stock default)".to_string()]
            )
        );
        let f = eval("FS-SIP-02", &ev);
        assert_eq!(f.status, Status::Fail);
        assert_eq!(
            f.evidence,
            [
                "sip_profiles/external-ipv6.xml: log-auth-failures is not set (off)",
                "sip_profiles/external.xml: log-auth-failures is not set (off)",
                "sip_profiles/internal-ipv6.xml: log-auth-failures is not set (off)",
                "sip_profiles/internal.xml: log-auth-failures is false",
            ]
        );
        let f = eval("FS-SIP-03", &ev);
        assert_eq!(
            f.evidence,
            ["stock users still defined in directory/default/: 1000-1019, brian, default"]
        );
        assert_eq!(
            eval("FS-SIP-04", &ev).evidence,
            ["21 users share $${default_password}: 1000-1019, brian"]
        );
        assert_eq!(
            eval("FS-SIP-05", &ev).evidence,
            ["voicemail PIN equals the extension for 20 users: 1000-1019"]
        );
        let f = eval("FS-SIP-06", &ev);
        assert_eq!(f.status, Status::Fail);
        assert_eq!(
            f.evidence,
            [
                "inventory: no sip_allow_from for host pbx1, so harden allows SIP from anywhere",
                "no firewall is active: SIP ports are reachable from anywhere"
            ]
        );
        let f = eval("FS-SIP-07", &ev);
        assert_eq!(f.status, Status::Fail);
        assert!(f.evidence[0].starts_with("TLS is off on every profile"));
    }

    #[test]
    fn hardened_variants_pass() {
        let mut files = stock_files();
        edit(&mut files, "vars.xml", |t| {
            set_var(t, "default_password", "k8Hq2ZrT5mNw9xLp")
                .unwrap()
                .unwrap()
        });
        for p in ["internal", "external", "internal-ipv6", "external-ipv6"] {
            edit(&mut files, &format!("sip_profiles/{p}.xml"), |t| {
                set_param(t, "log-auth-failures", "true").unwrap().unwrap()
            });
        }
        let mut ev = evidence(&files, &[ACTIVE], Live::default());
        ufw_files(&mut ev, UFW_ALLOW_LIST, "", "DROP");
        ev.host.sip_allow_from = vec!["198.51.100.0/24".parse().unwrap()];
        let f = eval("FS-SIP-01", &ev);
        assert_eq!(f.status, Status::Pass);
        assert_eq!(
            f.evidence,
            ["vars.xml: default_password is not 1234 and is 16 characters"]
        );
        assert!(!format!("{f:?}").contains("k8Hq2ZrT5mNw9xLp"));
        assert_eq!(eval("FS-SIP-02", &ev).status, Status::Pass);
        let f = eval("FS-SIP-06", &ev);
        assert_eq!(f.status, Status::Pass, "{:?}", f.evidence);
        // The ports harden opens and the jail bans on: the TLS ports count with TLS off.
        assert_eq!(
            f.evidence,
            [
                "inventory: sip_allow_from 198.51.100.0/24",
                "ufw: port 5060 not allowed from anywhere",
                "ufw: port 5061 not allowed from anywhere",
                "ufw: port 5080 not allowed from anywhere",
                "ufw: port 5081 not allowed from anywhere"
            ]
        );
        // A short password fails without showing it.
        edit(&mut files, "vars.xml", |t| {
            set_var(t, "default_password", "s3cr3t").unwrap().unwrap()
        });
        let mut ev = evidence(&files, &[ACTIVE], Live::default());
        ufw_files(&mut ev, UFW_OPEN, "", "DROP");
        assert_eq!(
            eval("FS-SIP-01", &ev).evidence,
            ["vars.xml: default_password is 6 characters (fewer than 16)"]
        );
        let f = eval("FS-SIP-06", &ev);
        assert_eq!(f.status, Status::Fail);
        assert!(
            f.evidence[1].starts_with("ufw: port 5060 allowed from anywhere (allow 5060/any"),
            "{:?}",
            f.evidence
        );
    }

    #[test]
    fn compacts_runs_of_ids() {
        assert_eq!(
            compact_ids(&["1000", "1001", "1002", "brian"]),
            "1000-1002, brian"
        );
        assert_eq!(compact_ids(&["1000", "1001", "1005"]), "1000, 1001, 1005");
        assert!(switch_true("TRUE") && switch_true("1") && !switch_true("false"));
    }
}
