//! Two config variants of issue 13 on a real host: the internal profile's `sip-port` set
//! literally to 5062, and the RTP range narrowed to 30000-30500 through `$${rtp_start}` /
//! `$${rtp_end}` (switch.conf.xml params, X-PRE-PROCESS `set` lines in vars.xml), as an operator
//! would, then a FreeSWITCH restart. After `fsfleet harden`, every place that names a port must
//! name the same ones: the SIP answer on the fleet network, ufw's rules, the fail2ban jail, the
//! audit's baseline controls, and a `harden --check` that plans nothing.
//!
//! Every comparison is collected by [`disagreements`], which the test also runs once against a
//! deliberately wrong expectation (the stock ports): it must report each mismatch, so none of the
//! comparisons can pass whatever the host says.

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{Attacker, Fleet, TestHost, jail_value, output_text as text};

const FLEET: &str = "variants";
const INTERNAL_SIP_PORT: u16 = 5062;
const RTP: (u16, u16) = (30000, 30500);

fn fsfleet(fleet: &Fleet, args: &[&str]) -> Output {
    fleet.fsfleet(args)
}

/// What the host's config means for its ports, written down by hand from the config tree the
/// test leaves on the host (not computed by fsfleet, which is what is under test).
struct Expect {
    /// SIP (udp+tcp) ports of every profile.
    sip: Vec<u16>,
    /// SIP-TLS (tcp) ports of every profile (counted while TLS is off, see model::sip_ports).
    tls: Vec<u16>,
    rtp: (u16, u16),
    /// The internal profile's SIP port: a SIP OPTIONS there must get an answer.
    internal: u16,
}

impl Expect {
    /// The variant: internal on 5062 (literal). internal-ipv6.xml still says
    /// `$${internal_sip_port}` (5060, on the IPv6 address), so 5060 stays open for that profile
    /// only; external and external-ipv6 keep 5080/5081; TLS ports 5061/5081 from the vars.
    fn variant() -> Expect {
        Expect {
            sip: vec![5060, INTERNAL_SIP_PORT, 5080],
            tls: vec![5061, 5081],
            rtp: RTP,
            internal: INTERNAL_SIP_PORT,
        }
    }

    /// The stock host's ports: wrong for the variant in every place the test compares.
    fn stock() -> Expect {
        Expect {
            sip: vec![5060, 5080],
            tls: vec![5061, 5081],
            rtp: (16384, 32768),
            internal: 5060,
        }
    }

    /// ufw's `PORT/PROTO` rules (SSH left out), as `ufw status` spells them.
    fn ufw_rules(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for p in &self.sip {
            out.insert(format!("{p}/udp"));
            out.insert(format!("{p}/tcp"));
        }
        for p in &self.tls {
            out.insert(format!("{p}/tcp"));
        }
        out.insert(format!("{}:{}/udp", self.rtp.0, self.rtp.1));
        out
    }

    /// The jail's `port =` numbers.
    fn jail_ports(&self) -> BTreeSet<u16> {
        self.sip.iter().chain(&self.tls).copied().collect()
    }
}

/// The ALLOW rules of `ufw status` as `PORT/PROTO` (IPv4 and v6 lines alike), SSH's port left
/// out; None when ufw is not active.
fn ufw_allowed(status: &str, ssh_port: u16) -> Option<BTreeSet<String>> {
    if !status.lines().any(|l| l.trim() == "Status: active") {
        return None;
    }
    let ssh = format!("{ssh_port}/tcp");
    Some(
        status
            .lines()
            .filter(|l| l.contains("ALLOW"))
            .filter_map(|l| l.split_whitespace().next())
            .filter(|rule| *rule != ssh)
            .map(str::to_string)
            .collect(),
    )
}

fn options(attacker: &Attacker, h: &TestHost, port: u16) -> Vec<u8> {
    format!(
        "OPTIONS sip:{a}:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {me}:5099;branch=z9hG4bKvariants{port};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@{me}>;tag=v{port}\r\nTo: <sip:{a}:{port}>\r\n\
         Call-ID: variants-{port}@{me}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        a = h.address,
        me = attacker.address
    )
    .into_bytes()
}

/// The SIP status line the host sends back to an OPTIONS on `port` (None: no answer).
fn sip_answer(attacker: &Attacker, h: &TestHost, port: u16) -> Option<String> {
    attacker
        .sip_raw(&h.address, port, &options(attacker, h, port))
        .map(|a| a.lines().next().unwrap_or_default().to_string())
}

/// What the host, the jail, ufw, audit and `harden --check` say, gathered once.
struct Observed {
    options_answer: Option<String>,
    ufw: Option<BTreeSet<String>>,
    ufw_text: String,
    jail_ports: Option<BTreeSet<u16>>,
    jail_text: String,
    /// Baseline controls that do not pass, with their result.
    audit_not_passing: Vec<String>,
    /// Steps `harden --check` would change, or why its output is unusable.
    check_plans: Vec<String>,
}

fn baseline_controls() -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_fsfleet"))
        .args(["audit", "--list-controls", "--format", "json"])
        .output()
        .expect("run fsfleet");
    let catalogue: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("the control catalogue is JSON");
    let ids: Vec<String> = catalogue
        .as_array()
        .expect("the catalogue is a list")
        .iter()
        .filter(|c| c["baseline"] == true)
        .filter_map(|c| c["id"].as_str().map(str::to_string))
        .collect();
    assert!(ids.len() >= 15, "{catalogue}");
    ids
}

fn observe(fleet: &Fleet, h: &TestHost, attacker: &Attacker, internal_port: u16) -> Observed {
    let ufw_text = fleet.ssh_root(h, "ufw status");
    let jail_text = fleet.ssh_root(h, "cat /etc/fail2ban/jail.d/fsfleet-freeswitch.local");
    let jail_ports = jail_value(&jail_text, "freeswitch", "port").map(|v| {
        v.split(',')
            .map(|p| p.trim().parse::<u16>().unwrap_or(0))
            .collect()
    });

    let baseline = baseline_controls();
    let audit = fsfleet(fleet, &["audit", "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_slice(&audit.stdout)
        .unwrap_or_else(|e| panic!("audit JSON: {e}\n{}", text(&audit)));
    let mut audit_not_passing = Vec::new();
    let mut seen = BTreeSet::new();
    for r in doc["hosts"][0]["results"].as_array().into_iter().flatten() {
        let id = r["id"].as_str().unwrap_or_default().to_string();
        if baseline.contains(&id) {
            seen.insert(id.clone());
            if r["status"] != "pass" {
                audit_not_passing.push(format!("{id}: {r}"));
            }
        }
    }
    for id in &baseline {
        if !seen.contains(id) {
            audit_not_passing.push(format!("{id}: no result"));
        }
    }

    let check = fsfleet(fleet, &["harden", "--check", "--format", "json"]);
    let mut check_plans = Vec::new();
    match serde_json::from_slice::<serde_json::Value>(&check.stdout) {
        Ok(doc) if check.status.code() == Some(0) => {
            let host = &doc["hosts"][0];
            if host["status"] != "ok" {
                check_plans.push(format!("host status {}", host["status"]));
            }
            for s in host["steps"].as_array().into_iter().flatten() {
                if s["status"] != "ok" && s["status"] != "skipped" {
                    check_plans.push(format!("{s}"));
                }
            }
        }
        _ => check_plans.push(format!("harden --check failed: {}", text(&check))),
    }

    Observed {
        options_answer: sip_answer(attacker, h, internal_port),
        ufw: ufw_allowed(&ufw_text, h.port),
        ufw_text,
        jail_ports,
        jail_text,
        audit_not_passing,
        check_plans,
    }
}

/// Every place where the host disagrees with `want`.
fn disagreements(seen: &Observed, want: &Expect) -> Vec<String> {
    let mut out = Vec::new();
    if !seen
        .options_answer
        .as_deref()
        .is_some_and(|l| l.starts_with("SIP/2.0 200"))
    {
        out.push(format!(
            "SIP OPTIONS to {} from the fleet network: {:?}",
            want.internal, seen.options_answer
        ));
    }
    let ufw = want.ufw_rules();
    if seen.ufw.as_ref() != Some(&ufw) {
        out.push(format!(
            "ufw allows {:?}, want exactly {ufw:?} (besides SSH):\n{}",
            seen.ufw, seen.ufw_text
        ));
    }
    let jail = want.jail_ports();
    if seen.jail_ports.as_ref() != Some(&jail) {
        out.push(format!(
            "the jail bans on {:?}, want {jail:?}:\n{}",
            seen.jail_ports, seen.jail_text
        ));
    }
    out
}

#[test]
fn sip_port_literal_in_a_profile_and_rtp_through_variables_agree_everywhere_after_harden() {
    let fleet = Fleet::fresh(FLEET, 1);
    let h = &fleet.hosts[0];
    let _ = std::fs::remove_dir_all(fleet.dir.join(".fsfleet"));

    // The operator's edits (FreeSWITCH reads vars.xml, the profiles and switch.conf.xml at start).
    let edit = r#"set -e
c=CONF
sed -i 's|<param name="sip-port" value="$${internal_sip_port}"/>|<param name="sip-port" value="PORT"/>|' $c/sip_profiles/internal.xml
grep -q '<param name="sip-port" value="PORT"/>' $c/sip_profiles/internal.xml
sed -i 's|<!-- <param name="rtp-start-port" value="16384"/> -->|<param name="rtp-start-port" value="$${rtp_start}"/>|; s|<!-- <param name="rtp-end-port" value="32768"/> -->|<param name="rtp-end-port" value="$${rtp_end}"/>|' $c/autoload_configs/switch.conf.xml
grep -q '<param name="rtp-start-port" value="$${rtp_start}"/>' $c/autoload_configs/switch.conf.xml
grep -q '<param name="rtp-end-port" value="$${rtp_end}"/>' $c/autoload_configs/switch.conf.xml
sed -i 's|^</include>|  <X-PRE-PROCESS cmd="set" data="rtp_start=RSTART"/>\n  <X-PRE-PROCESS cmd="set" data="rtp_end=REND"/>\n</include>|' $c/vars.xml
grep -q 'data="rtp_start=RSTART"' $c/vars.xml
grep -q 'data="rtp_end=REND"' $c/vars.xml
systemctl restart freeswitch
"#
    .replace("CONF", &h.conf_dir)
    .replace("PORT", &INTERNAL_SIP_PORT.to_string())
    .replace("RSTART", &RTP.0.to_string())
    .replace("REND", &RTP.1.to_string());
    fleet.ssh_root(h, &edit);

    let attacker = fleet.attacker();
    let start = Instant::now();
    while sip_answer(&attacker, h, INTERNAL_SIP_PORT).is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no SIP answer on {INTERNAL_SIP_PORT} after the restart"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        sip_answer(&attacker, h, 5060),
        None,
        "the internal profile should have left 5060 on the host's IPv4 address"
    );

    let run = fsfleet(&fleet, &["harden", "-v"]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));

    let seen = observe(&fleet, h, &attacker, INTERNAL_SIP_PORT);
    let wrong = disagreements(&seen, &Expect::variant());
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(
        seen.audit_not_passing.is_empty(),
        "baseline controls not passing after harden:\n{}",
        seen.audit_not_passing.join("\n")
    );
    assert!(
        seen.check_plans.is_empty(),
        "harden --check still plans changes:\n{}",
        seen.check_plans.join("\n")
    );

    // The same comparisons against the stock ports must each find the mismatch: OPTIONS on
    // 5060 (observed again, as the stock expectation would probe it), ufw and the jail.
    let stock = Expect::stock();
    let seen_stock = Observed {
        options_answer: sip_answer(&attacker, h, stock.internal),
        ..seen
    };
    let caught = disagreements(&seen_stock, &stock);
    assert_eq!(
        caught.len(),
        3,
        "a wrong expectation must disagree on the SIP answer, ufw and the jail:\n{}",
        caught.join("\n")
    );
}
