//! Module controls: stock modules that expose services and are often unused.

use crate::conf::xml::{self, TagKind};

use super::evidence::Evidence;
use super::{Control, ControlError, Finding, Severity};

/// Modules that open listeners or outside connections, with what they expose.
pub const EXPOSING: &[(&str, &str)] = &[
    ("mod_verto", "WebRTC signalling on 8081/8082"),
    ("mod_signalwire", "connects out to the SignalWire cloud"),
    ("mod_xml_rpc", "HTTP API on 8080"),
    ("mod_xml_scgi", "SCGI config fetcher"),
    ("mod_rtmp", "RTMP listener on 1935"),
    ("mod_skinny", "Skinny (SCCP) listener on 2000"),
    ("mod_event_multicast", "events on multicast"),
    ("mod_erlang_event", "Erlang node listener"),
    ("mod_event_zmq", "ZeroMQ event listener"),
    ("mod_snmp", "SNMP subagent"),
    ("mod_dingaling", "XMPP/Jingle"),
];

pub const CONTROLS: &[Control] = &[Control {
    id: "FS-MOD-01",
    family: "Modules",
    severity: Severity::Low,
    title: "No unused service-exposing modules are loaded",
    rationale: "Every loaded module that listens or connects out is attack surface; the stock \
                modules.conf.xml loads mod_verto and mod_signalwire that most deployments never use.",
    remediation: "Comment out the `<load module=...>` lines you do not use in \
                  autoload_configs/modules.conf.xml (restart FreeSWITCH to unload), or waive \
                  FS-MOD-01 if you use them.",
    baseline: false,
    eval: exposing_modules,
}];

/// Modules loaded by modules.conf.xml (commented lines do not count).
pub fn loaded(ev: &Evidence) -> Result<Vec<String>, ControlError> {
    let text = ev.conf("autoload_configs/modules.conf.xml")?;
    let tags = xml::scan(text).map_err(|source| ControlError::Xml {
        path: "autoload_configs/modules.conf.xml".into(),
        source,
    })?;
    Ok(tags
        .iter()
        .filter(|t| t.name == "load" && t.kind != TagKind::End)
        .filter_map(|t| t.attr("module").map(|a| a.value.clone()))
        .collect())
}

fn exposing_modules(ev: &Evidence) -> Result<Finding, ControlError> {
    let mods = loaded(ev)?;
    let bad: Vec<String> = EXPOSING
        .iter()
        .filter(|(m, _)| mods.iter().any(|l| l == m))
        .map(|(m, what)| format!("{m} is loaded ({what})"))
        .collect();
    Ok(Finding::fail_if(
        bad,
        vec![format!(
            "none of {} is loaded ({} modules loaded)",
            EXPOSING.iter().map(|e| e.0).collect::<Vec<_>>().join(", "),
            mods.len()
        )],
    ))
}

#[cfg(test)]
mod tests {
    use super::super::evidence::testing::*;
    use super::super::{Live, Status};

    #[test]
    fn stock_loads_verto_and_signalwire_only() {
        let ev = stock();
        let f = eval("FS-MOD-01", &ev);
        assert_eq!(f.status, Status::Fail);
        assert_eq!(
            f.evidence,
            [
                "mod_verto is loaded (WebRTC signalling on 8081/8082)",
                "mod_signalwire is loaded (connects out to the SignalWire cloud)"
            ]
        );
        let mut files = stock_files();
        edit(&mut files, "autoload_configs/modules.conf.xml", |t| {
            t.replace(
                "<load module=\"mod_verto\"/>",
                "<!-- <load module=\"mod_verto\"/> -->",
            )
            .replace(
                "<load module=\"mod_signalwire\"/>",
                "<!--<load module=\"mod_signalwire\"/>-->",
            )
        });
        let f = eval("FS-MOD-01", &evidence(&files, &[], Live::default()));
        assert_eq!(f.status, Status::Pass, "{:?}", f.evidence);
    }
}
