//! The api commands fsfleet and the tests use, with FreeSWITCH 1.10.12's exact reply bodies.

use crate::core::{Core, new_uuid};
use std::time::Duration;

pub const VERSION_LINE: &str = "FreeSWITCH (Version 1.10.12-release  64bit) is ready";
pub const VERSION_BODY: &str = "FreeSWITCH Version 1.10.12-release~64bit ( 64bit)\n";
/// SWITCH_VERSION_FULL of the source build: what `api version` and `freeswitch -version` print.
pub const VERSION_FULL: &str = "1.10.12-release~64bit";

/// What the caller must do after sending the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum After {
    Nothing,
    /// `reload mod_event_socket`: restart the Event Socket once the reply is out.
    ReloadEventSocket,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub body: String,
    pub after: After,
}

impl Reply {
    fn body(s: impl Into<String>) -> Self {
        Reply {
            body: s.into(),
            after: After::Nothing,
        }
    }
}

/// Run one api command line (`status`, `sofia profile internal rescan`, ...).
pub fn execute(core: &Core, line: &str) -> Reply {
    let line = line.trim();
    let (cmd, args) = match line.split_once(char::is_whitespace) {
        Some((c, a)) => (c, a.trim()),
        None => (line, ""),
    };
    match cmd {
        "status" => Reply::body(status_body_with(
            core.started.elapsed(),
            core.cpu.percent(),
            core.sessions(),
        )),
        "show" => Reply::body(show(core, args)),
        "version" => Reply::body(VERSION_BODY),
        "hostname" => Reply::body(crate::netinfo::hostname()),
        "reloadxml" => Reply::body(match core.reload_xml() {
            Ok(()) => "+OK [Success]\n".to_string(),
            Err(e) => format!("-ERR [{e}]\n"),
        }),
        "reloadacl" => Reply::body(match core.reload_xml() {
            Ok(()) => "+OK acl reloaded\n".to_string(),
            Err(e) => format!("-ERR [{e}]\n"),
        }),
        "global_getvar" => Reply::body(if args.is_empty() {
            let snap = core.snapshot();
            let mut all: Vec<_> = snap.vars.iter().collect();
            all.sort();
            all.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
        } else {
            core.global_var(args).unwrap_or_default()
        }),
        "sofia" => sofia(core, args),
        "reload" => reload(core, args),
        // mod_commands' module_exists_function: `true` or `false`, no newline.
        "module_exists" => Reply::body(if args.is_empty() {
            String::new()
        } else if core.module_loaded(args) {
            "true".to_string()
        } else {
            "false".to_string()
        }),
        "unload" => unload(core, args),
        _ => Reply::body(format!("-ERR {cmd} Command not found!\n")),
    }
}

/// mod_commands' unload_function: `[-f] <mod_name>`; `+OK` or `-ERR [reason]`. The Event
/// Socket serving the request cannot unload itself (FreeSWITCH would hang up on its caller):
/// refused here like a module whose shutdown fails.
fn unload(core: &Core, args: &str) -> Reply {
    let module = args
        .split_whitespace()
        .find(|w| !w.starts_with('-'))
        .unwrap_or("");
    Reply::body(match module {
        "" => "-USAGE: [-f] <mod_name>\n".to_string(),
        "mod_event_socket" => "-ERR [Module in use.]\n".to_string(),
        m => match core.unload_module(m) {
            Ok(()) => "+OK\n".to_string(),
            Err(e) => format!("-ERR [{e}]\n"),
        },
    })
}

fn reload(core: &Core, args: &str) -> Reply {
    let module = args
        .split_whitespace()
        .find(|w| !w.starts_with('-'))
        .unwrap_or("");
    match module {
        // The module cannot unload itself while serving this very request: FreeSWITCH answers
        // with a job id and does the reload in the background.
        "mod_event_socket" => Reply {
            body: format!("+OK Job-UUID: {}\n", new_uuid()),
            after: After::ReloadEventSocket,
        },
        "" => Reply::body("-USAGE: [-f] <mod_name>\n"),
        "mod_sofia" => {
            let xml = core.reload_xml();
            for p in core.running_profiles() {
                core.rescan(&p.name);
            }
            Reply::body(match xml {
                Ok(()) => "+OK Reloading XML\n+OK module unloaded\n+OK module loaded\n".to_string(),
                Err(e) => format!("-ERR [{e}]\n"),
            })
        }
        _ => Reply::body(match core.reload_xml() {
            Ok(()) => "+OK Reloading XML\n+OK module unloaded\n+OK module loaded\n".to_string(),
            Err(e) => format!("-ERR [{e}]\n"),
        }),
    }
}

fn sofia(core: &Core, args: &str) -> Reply {
    let words: Vec<&str> = args.split_whitespace().collect();
    match words.as_slice() {
        ["status"] => Reply::body(sofia_status(core)),
        ["profile", name, "rescan", ..] => Reply::body(if core.rescan(name) {
            "Reload XML [Success]\n+OK scan complete\n".to_string()
        } else {
            format!("Invalid Profile [{name}]")
        }),
        ["xmlstatus", "profile", name, "reg"]
            if core.running_profiles().iter().any(|p| p.name == *name) =>
        {
            Reply::body(crate::registrations::xml_status(
                &core.registrations(name),
                &crate::netinfo::hostname(),
            ))
        }
        ["xmlstatus", "profile", _, "reg"] => Reply::body("Invalid Profile!\n"),
        ["profile", name, ..] if !core.running_profiles().iter().any(|p| p.name == *name) => {
            Reply::body(format!("Invalid Profile [{name}]"))
        }
        // mod_sofia.c cmd_profile: the profile restarts in the background.
        ["profile", name, "restart"] => Reply::body(crate::tls::request_restart(name)),
        ["profile", _, ..] => Reply::body("-ERR Unknown command!\n"),
        _ => Reply::body(
            "USAGE:\n--------------------------------------------------------------------------------\n\
             sofia global siptrace <on|off>\n\
             sofia profile <name> [start | stop | restart | rescan] [wait]\n\
             sofia status [profile <name>]\n\
             sofia xmlstatus profile <name> reg\n\
             --------------------------------------------------------------------------------\n",
        ),
    }
}

const SOFIA_RULE: &str = "=================================================================================================\n";

fn sofia_status(core: &Core) -> String {
    let mut out = format!(
        "{:>25}\t{}\t  {:>40}\t{}\n",
        "Name", "   Type", "Data", "State"
    );
    out.push_str(SOFIA_RULE);
    let mut profiles = core.running_profiles();
    profiles.sort_by(|a, b| a.name.cmp(&b.name));
    for p in &profiles {
        out.push_str(&format!(
            "{:>25}\t{}\t  {:>40}\t{} ({})\n",
            p.name, "profile", p.url, "RUNNING", 0
        ));
    }
    out.push_str(SOFIA_RULE);
    let n = profiles.len();
    out.push_str(&format!(
        "{n} profile{} 0 aliases\n",
        if n == 1 { "" } else { "s" }
    ));
    out
}

/// mod_commands' show_function for what the tests ask: `show calls count` (`\nN total.\n`, the
/// count line it prints after the rows) and `show calls` (a header line, one CSV row per call,
/// the count line). Other `show` arguments answer as an unknown one does.
fn show(core: &Core, args: &str) -> String {
    let words: Vec<&str> = args.split_whitespace().collect();
    let calls = core.calls();
    match words.as_slice() {
        ["calls", "count"] => format!("\n{} total.\n", calls.len()),
        ["calls"] => {
            let mut out = String::from("uuid,direction,created,name,cid_num,dest,callstate\n");
            for c in &calls {
                out.push_str(&format!(
                    "{},inbound,{},sofia/{}/{}@{},{},{},ACTIVE\n",
                    c.uuid,
                    chrono::DateTime::<chrono::Local>::from(c.created).format("%Y-%m-%d %H:%M:%S"),
                    c.profile,
                    c.caller,
                    c.network.ip(),
                    c.caller,
                    c.destination
                ));
            }
            out.push_str(&format!("\n{} total.\n", calls.len()));
            out
        }
        _ => "-USAGE: codec|endpoint|application|api|dialplan|file|timer|calls [count]|channels [count|like <match string>]|calls|detailed_calls|bridged_calls|detailed_bridged_calls|aliases|complete|chat|management|modules|nat_map|say|interfaces|interface_types|tasks|limits|status\n".to_string(),
    }
}

/// The `status` body, byte for byte as 1.10.12 built from source prints it, on a switch that
/// never had a session.
pub fn status_body(up: Duration, idle_cpu: f64) -> String {
    status_body_with(up, idle_cpu, crate::core::Sessions::default())
}

/// The `status` body with the session counters: switch_core_session_count() now, the peak and
/// the count since startup (the last-5-minutes figures follow the peak: a test's calls are all
/// recent).
pub fn status_body_with(up: Duration, idle_cpu: f64, sessions: crate::core::Sessions) -> String {
    let total_us = up.as_micros();
    let us = (total_us % 1000) as u64;
    let ms = ((total_us / 1000) % 1000) as u64;
    let secs = up.as_secs();
    let (s, m, h) = (secs % 60, (secs / 60) % 60, (secs / 3600) % 24);
    let days_total = secs / 86400;
    let (d, y) = (days_total % 365, days_total / 365);
    let u = |n: u64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    format!(
        "UP {}, {}, {}, {}, {}, {}, {}\n\
         {VERSION_LINE}\n\
         {total} session(s) since startup\n\
         {now} session(s) - peak {peak}, last 5min {peak} \n\
         0 session(s) per Sec out of max 30, peak 0, last 5min 0 \n\
         1000 session(s) max\n\
         min idle cpu 0.00/{idle_cpu:.2}\n\
         Current Stack Size/Max 240K/8192K\n",
        u(y, "year"),
        u(d, "day"),
        u(h, "hour"),
        u(m, "minute"),
        u(s, "second"),
        u(ms, "millisecond"),
        u(us, "microsecond"),
        total = sessions.since_startup,
        now = sessions.now,
        peak = sessions.peak,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_exists_and_unload_follow_modules_conf() {
        let dir = std::env::temp_dir().join(format!("standin-mods-{}", new_uuid()));
        let conf = dir.join("conf");
        std::fs::create_dir_all(conf.join("autoload_configs")).unwrap();
        std::fs::write(conf.join("vars.xml"), "<include/>\n").unwrap();
        std::fs::write(
            conf.join("autoload_configs/modules.conf.xml"),
            "<configuration name=\"modules.conf\"><modules>\n\
             <load module=\"mod_sofia\"/>\n<!-- <load module=\"mod_xml_rpc\"/> -->\n\
             <load module=\"mod_verto\"/>\n</modules></configuration>\n",
        )
        .unwrap();
        let core = crate::core::test_core(&conf, &dir);
        let api = |l: &str| execute(&core, l).body;
        assert_eq!(api("module_exists mod_verto"), "true");
        assert_eq!(api("module_exists mod_xml_rpc"), "false");
        assert_eq!(api("unload mod_verto"), "+OK\n");
        assert_eq!(api("module_exists mod_verto"), "false");
        assert_eq!(api("unload mod_verto"), "-ERR [No such module!]\n");
        assert_eq!(api("unload"), "-USAGE: [-f] <mod_name>\n");
        assert_eq!(api("module_exists mod_sofia"), "true");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn status_is_byte_exact() {
        let up = Duration::from_micros(16_683_371);
        assert_eq!(
            status_body(up, 99.57),
            "UP 0 years, 0 days, 0 hours, 0 minutes, 16 seconds, 683 milliseconds, 371 microseconds\n\
             FreeSWITCH (Version 1.10.12-release  64bit) is ready\n\
             0 session(s) since startup\n\
             0 session(s) - peak 0, last 5min 0 \n\
             0 session(s) per Sec out of max 30, peak 0, last 5min 0 \n\
             1000 session(s) max\n\
             min idle cpu 0.00/99.57\n\
             Current Stack Size/Max 240K/8192K\n"
        );
    }

    #[test]
    fn status_units_are_singular_for_exactly_one() {
        let up = Duration::from_secs(366 * 86400 + 3600 + 60 + 1) + Duration::from_micros(1001);
        let first = status_body(up, 50.0).lines().next().unwrap().to_string();
        assert_eq!(
            first,
            "UP 1 year, 1 day, 1 hour, 1 minute, 1 second, 1 millisecond, 1 microsecond"
        );
    }

    #[test]
    fn readiness_line_matches_the_documented_pattern() {
        let body = status_body(Duration::from_secs(5), 12.0);
        let line = body.lines().nth(1).unwrap();
        let inner = line
            .strip_prefix("FreeSWITCH (Version ")
            .and_then(|r| r.strip_suffix(") is ready"))
            .unwrap();
        assert_eq!(inner, "1.10.12-release  64bit");
    }
}
