//! Credentials at rest: plaintext files left by hand-run scripts, readable config copies, fs_cli.

use super::evidence::{Backups, Creds, Evidence, FsCliConfs, Stat, readable_by};
use super::{Control, ControlError, Finding, Severity};
use crate::facts::{Fact, FsStatus};

pub const CONTROLS: &[Control] = &[
    Control {
        id: "FS-CRED-01",
        family: "Credentials",
        severity: Severity::High,
        title: "No plaintext credentials file is left on the host",
        rationale: "Install and hardening scripts often write the passwords they set to \
                    /root/freeswitch-credentials.txt and similar; anyone with a backup or a shell \
                    gets every password.",
        remediation: "Move the passwords into your password manager (fsfleet keeps them in its \
                      local vault), then delete the file with `shred -u FILE`.",
        baseline: false,
        eval: plaintext_files,
    },
    Control {
        id: "FS-CRED-02",
        family: "Credentials",
        severity: Severity::High,
        title: "No group- or world-readable copies of configs that hold secrets",
        rationale: "`vars.xml.bak` beside the config, or a tarball of the config tree in /tmp, \
                    keeps the SIP and Event Socket passwords readable long after they rotate.",
        remediation: "Delete the copies, or make them root-only (`chmod 600 FILE`); keep backups in \
                      a root-only directory.",
        baseline: false,
        eval: readable_copies,
    },
    Control {
        id: "FS-CRED-03",
        family: "Credentials",
        severity: Severity::Medium,
        title: "fs_cli config files are readable by their owner only (0600)",
        rationale: "fs_cli configs hold the Event Socket password in clear text.",
        remediation: "`chmod 600 /etc/fs_cli.conf ~/.fs_cli_conf` (fsfleet harden writes them 0600).",
        baseline: true,
        eval: fs_cli_modes,
    },
    Control {
        id: "FS-CRED-04",
        family: "Credentials",
        severity: Severity::Medium,
        title: "fs_cli can connect to FreeSWITCH",
        rationale: "After a password rotation a stale fs_cli config locks operators out of the \
                    console when they need it most.",
        remediation: "Run `fsfleet harden` (writes /etc/fs_cli.conf with the current password), or \
                      fix `password` in /etc/fs_cli.conf and remove stale ~/.fs_cli_conf files.",
        baseline: true,
        eval: fs_cli_connects,
    },
    Control {
        id: "FS-CRED-05",
        family: "Credentials",
        severity: Severity::High,
        title: "Config files that hold secrets are readable only by root and FreeSWITCH",
        rationale: "vars.xml (default_password), event_socket.conf.xml (the Event Socket \
                    password), directory files with literal passwords and fs_cli configs are \
                    world-readable on many installs: any local user, or any service that is \
                    broken into, reads the passwords that rotate.",
        remediation: "Run `fsfleet harden` (it makes them readable only by root and FreeSWITCH's \
                      user and group, e.g. 0640 root:freeswitch), or `chmod o-rwx FILE` and give \
                      the group to FreeSWITCH's.",
        baseline: true,
        eval: secret_file_modes,
    },
];

fn files_of<F: Fact<Value = Vec<Stat>>>(ev: &Evidence) -> Result<Vec<Stat>, ControlError> {
    Ok(ev.facts.get::<F>()?)
}

fn describe(s: &Stat) -> String {
    format!("{} (mode {:o}, {}:{})", s.path, s.mode, s.owner, s.group)
}

fn plaintext_files(ev: &Evidence) -> Result<Finding, ControlError> {
    let stats = files_of::<Creds>(ev)?;
    let bad: Vec<String> = stats
        .iter()
        .filter(|s| !s.dir)
        .map(|s| format!("credentials file {}", describe(s)))
        .collect();
    Ok(Finding::fail_if(
        bad,
        vec!["no credentials file in /root, /home, /tmp, /opt or /srv".into()],
    ))
}

fn readable_copies(ev: &Evidence) -> Result<Finding, ControlError> {
    let stats = files_of::<Backups>(ev)?;
    let copies: Vec<&Stat> = stats.iter().filter(|s| !s.dir).collect();
    let bad: Vec<String> = copies
        .iter()
        .filter_map(|s| readable_by(&stats, s).map(|who| format!("{} is {who}", describe(s))))
        .collect();
    let ok = if copies.is_empty() {
        vec!["no copy or backup of the FreeSWITCH config found".into()]
    } else {
        vec![format!(
            "{} config copies, all readable by their owner only: {}",
            copies.len(),
            copies
                .iter()
                .map(|s| s.path.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )]
    };
    Ok(Finding::fail_if(bad, ok))
}

fn fs_cli_modes(ev: &Evidence) -> Result<Finding, ControlError> {
    let stats = files_of::<FsCliConfs>(ev)?;
    let files: Vec<&Stat> = stats.iter().filter(|s| !s.dir).collect();
    if files.is_empty() {
        return Ok(Finding::pass(vec![
            "no fs_cli config file (/etc/fs_cli.conf, ~/.fs_cli_conf): no password stored".into(),
        ]));
    }
    let bad: Vec<String> = files
        .iter()
        .filter(|s| s.mode & 0o077 != 0)
        .map(|s| format!("{} is not 0600", describe(s)))
        .collect();
    Ok(Finding::fail_if(
        bad,
        files.iter().map(|s| describe(s)).collect(),
    ))
}

/// The files that hold a secret: vars.xml, event_socket.conf.xml, directory files that set a
/// password literally (config facts), and the fs_cli configs (their own probe).
fn secret_file_modes(ev: &Evidence) -> Result<Finding, ControlError> {
    use crate::harden::Meta;
    let dir = ev.conf_dir()?;
    let fs = ev.facts.fs_owner();
    let mut checked = Vec::new();
    let mut bad = Vec::new();
    let mut conf: Vec<&crate::facts::FileFact> =
        ["vars.xml", "autoload_configs/event_socket.conf.xml"]
            .iter()
            .filter_map(|rel| ev.facts.files.conf(rel))
            .collect();
    let mut dir_files = ev.facts.files.conf_dir_files("directory", ".xml");
    dir_files.extend(ev.facts.files.conf_dir_files("directory/default", ".xml"));
    conf.extend(
        dir_files
            .into_iter()
            .filter(|f| f.text().is_some_and(crate::conf::holds_literal_password)),
    );
    for f in conf {
        let m = Meta::of(f);
        let line = format!("{} ({}:{} {:04o})", f.path, m.user, m.group, m.mode);
        if m.exposes_secret(fs) {
            bad.push(format!(
                "{line} is readable by users other than root and FreeSWITCH"
            ));
        }
        checked.push(line);
    }
    let fscli = files_of::<FsCliConfs>(ev)?;
    for s in fscli.iter().filter(|s| !s.dir) {
        let line = describe(s);
        if s.mode & 0o077 != 0 {
            bad.push(format!("{line} is readable by users other than its owner"));
        }
        checked.push(line);
    }
    if checked.is_empty() {
        return Err(ControlError::NoSecretFile(dir.to_string()));
    }
    Ok(Finding::fail_if(bad, checked))
}

fn fs_cli_connects(ev: &Evidence) -> Result<Finding, ControlError> {
    let Some(fs) = ev.facts.base.freeswitch.as_ref() else {
        ev.conf_dir()?;
        return Err(ControlError::NoFreeSwitch);
    };
    let st = ev.facts.get::<FsStatus>().unwrap_or_default();
    let (text, status) = (st.said.as_str(), st.status);
    Ok(match (status, fs.ready, fs.version.as_deref()) {
        (_, Some(ready), Some(v)) => {
            let line = format!(
                "`fs_cli -x status` as root: FreeSWITCH (Version {v}) is {}",
                if ready { "ready" } else { "not ready" }
            );
            Finding::pass(vec![line])
        }
        (Some(1), _, _) if text.trim().is_empty() => {
            Finding::skipped("fs_cli is not installed on the host")
        }
        (Some(crate::facts::FSCLI_GATED), _, _) => {
            return Err(ControlError::FsCliGated(text.trim().to_string()));
        }
        _ if !fs.service_active => return Err(ControlError::FreeSwitchStopped),
        (Some(255), _, _) => Finding::fail(vec![
            "`fs_cli -x status` as root could not connect (exit 255, Error Connecting): its \
             config holds a stale password or host"
                .into(),
        ]),
        (s, _, _) => Finding::fail(vec![format!(
            "`fs_cli -x status` as root did not report readiness (exit {})",
            s.map_or("unknown".into(), |s| s.to_string())
        )]),
    })
}

#[cfg(test)]
mod tests {
    use super::super::evidence::testing::*;
    use super::super::{Live, Status};
    use super::*;

    #[test]
    fn secret_files_readable_by_others_fail_with_their_modes() {
        let fscli = (
            "audit_fscli_conf",
            "F 600 root root /etc/fs_cli.conf\nD 755 root root /etc\n",
            0,
        );
        // The test tree is 0640 freeswitch:freeswitch: nobody else reads it.
        let ev = evidence(&stock_files(), &[fscli], Live::default());
        let f = eval("FS-CRED-05", &ev);
        assert_eq!(f.status, Status::Pass, "{:?}", f.evidence);
        assert!(
            f.evidence
                .iter()
                .any(|l| l.contains("vars.xml (freeswitch:freeswitch 0640)"))
        );
        // A world-readable vars.xml, a directory file with a literal password, a 0644 fs_cli.conf.
        let mut files = stock_files();
        edit(&mut files, "directory/default/1001.xml", |t| {
            t.replace("$${default_password}", "by-hand-secret")
        });
        let mut section =
            files_section(&files).replace("vars.xml\t640 freeswitch", "vars.xml\t644 freeswitch");
        section = section.replace("1001.xml\t640", "1001.xml\t604");
        let facts = crate::harden::HostFacts::parse(
            sections(&[
                ("files", &section, 0),
                ("audit_fscli_conf", "F 644 root root /etc/fs_cli.conf\n", 0),
            ]),
            "root",
            false,
        )
        .unwrap();
        let ev = Evidence {
            host: host(),
            facts,
            live: Live::default(),
            proof_cache: None,
        };
        let f = eval("FS-CRED-05", &ev);
        assert_eq!(f.status, Status::Fail);
        let text = f.evidence.join("\n");
        assert!(
            text.contains("/etc/freeswitch/vars.xml (freeswitch:freeswitch 0644) is readable"),
            "{text}"
        );
        assert!(
            text.contains("1001.xml (freeswitch:freeswitch 0604) is readable"),
            "{text}"
        );
        assert!(
            text.contains("/etc/fs_cli.conf (mode 644, root:root) is readable"),
            "{text}"
        );
        assert!(
            !text.contains("1000.xml ("),
            "a file with $${{default_password}} holds no secret: {text}"
        );
    }

    #[test]
    fn leftovers_are_named_with_their_modes() {
        let ev = evidence(
            &stock_files(),
            &[
                (
                    "audit_creds",
                    "F 644 root root /root/freeswitch-credentials.txt\nD 700 root root /root\nD 755 root root /\n",
                    0,
                ),
                (
                    "audit_backups",
                    "F 644 root root /etc/freeswitch/vars.xml.bak\nD 755 root root /etc/freeswitch\nD 755 root root /etc\nD 755 root root /\n\
                     F 600 root root /var/backups/freeswitch.tar.gz\nD 755 root root /var/backups\nD 755 root root /var\n",
                    0,
                ),
                (
                    "audit_fscli_conf",
                    "F 644 root root /etc/fs_cli.conf\nD 755 root root /etc\nD 755 root root /\n",
                    0,
                ),
                ("fs_conf", "/etc/freeswitch", 0),
                (crate::facts::SERVICES, "active\ninactive\n", 0),
                ("fs_status", "", 255),
            ],
            Live::default(),
        );
        assert_eq!(
            eval("FS-CRED-01", &ev).evidence,
            ["credentials file /root/freeswitch-credentials.txt (mode 644, root:root)"]
        );
        assert_eq!(
            eval("FS-CRED-02", &ev).evidence,
            ["/etc/freeswitch/vars.xml.bak (mode 644, root:root) is world-readable"]
        );
        assert_eq!(
            eval("FS-CRED-03", &ev).evidence,
            ["/etc/fs_cli.conf (mode 644, root:root) is not 0600"]
        );
        let f = eval("FS-CRED-04", &ev);
        assert_eq!(f.status, Status::Fail);
        assert!(f.evidence[0].contains("exit 255"));
    }

    /// fs_cli kept from running (its Event Socket is not FreeSWITCH's alone): an error that
    /// says why, not a failing fs_cli config.
    #[test]
    fn fs_cli_not_run_towards_a_foreign_listener_is_an_error_with_the_reason() {
        let why = "fsfleet: fs_cli not run: TCP port 8021 on this host is not held by FreeSWITCH (uid 999) alone";
        let ev = evidence(
            &stock_files(),
            &[
                ("fs_conf", "/etc/freeswitch", 0),
                (crate::facts::SERVICES, "active\ninactive\n", 0),
                ("fs_status", why, crate::facts::FSCLI_GATED),
            ],
            Live::default(),
        );
        let f = eval("FS-CRED-04", &ev);
        assert_eq!(f.status, Status::Error);
        assert!(f.evidence[0].starts_with(why), "{:?}", f.evidence);
    }

    #[test]
    fn clean_host_passes() {
        let ev = evidence(
            &stock_files(),
            &[
                ("audit_creds", "", 0),
                (
                    "audit_backups",
                    "F 644 root root /root/fsfleet/vars.xml\nD 700 root root /root/fsfleet\nD 700 root root /root\nD 755 root root /\n",
                    0,
                ),
                (
                    "audit_fscli_conf",
                    "F 600 root root /etc/fs_cli.conf\nD 755 root root /etc\nD 755 root root /\n",
                    0,
                ),
                ("fs_conf", "/etc/freeswitch", 0),
                (crate::facts::SERVICES, "active\ninactive\n", 0),
                (
                    "fs_status",
                    "UP 0 years\nFreeSWITCH (Version 1.10.12-release  64bit) is ready\n",
                    0,
                ),
            ],
            Live::default(),
        );
        for c in CONTROLS {
            let f = c.run(&ev);
            assert_eq!(f.status, Status::Pass, "{}: {:?}", c.id, f.evidence);
        }
        assert_eq!(
            eval("FS-CRED-02", &ev).evidence,
            ["1 config copies, all readable by their owner only: /root/fsfleet/vars.xml"]
        );
        // A probe that did not run is an error, not a pass.
        let ev = evidence(&stock_files(), &[], Live::default());
        assert_eq!(eval("FS-CRED-01", &ev).status, Status::Error);
        assert_eq!(eval("FS-CRED-04", &ev).status, Status::Error);
    }
}
