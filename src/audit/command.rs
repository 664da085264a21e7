//! Running an audit: evidence per host (one round trip + live probes), evaluation, waivers,
//! output and the exit code.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cli::{AuditArgs, AuditFormat};
use crate::cmd::{self, CmdError};
use crate::facts::{self, FactsError};
use crate::fleet::{self, HostError, HostOutcome, HostRun, RunInfo};
use crate::inventory::Host;
use crate::model::fail2ban::{self as f2b, CachedProof, Proof, ProofCache};
use crate::ssh::Session;

use super::evidence::{self, Evidence, Live, OutsideProbe};
use super::{Control, Finding, Severity, Status, catalogue, render};

/// Exit codes of `fsfleet audit`.
pub const EXIT_OK: u8 = 0;
pub const EXIT_FINDINGS: u8 = 3;
pub const EXIT_NOT_AUDITED: u8 = 4;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Cmd(#[from] CmdError),
    #[error(
        "{origin} waives {id:?}, which is not a control ID; see `fsfleet audit --list-controls`{hint}"
    )]
    UnknownControl {
        origin: String,
        id: String,
        hint: String,
    },
    #[error("--format markdown only applies to --list-controls; use text, json, junit or sarif")]
    MarkdownReport,
    #[error("cannot write the report to stdout")]
    Output(#[from] std::io::Error),
    #[error("cannot encode the JSON report")]
    Json(#[from] serde_json::Error),
}

/// One control's result on one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ControlResult {
    pub id: &'static str,
    pub severity: Severity,
    /// The control is part of the baseline `fsfleet harden` applies (else the operator's).
    pub baseline: bool,
    pub status: Status,
    /// For waived controls: what the control found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waived_status: Option<Status>,
    /// For waived controls: why, when the inventory says (`waive = { ID = "reason" }`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waived_reason: Option<String>,
    pub evidence: Vec<String>,
    /// The files on the host the evidence names, for SARIF's physical locations.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub locations: Vec<FileLocation>,
}

/// A file on the host that a result is about, with the line when the evidence gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileLocation {
    /// Absolute path on the host (host text: escape it before printing).
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
}

/// The files an evidence list names. Controls write a file they read as the line's head
/// (`vars.xml: ...`, `dialplan/default.xml:42: ...`, relative to the config dir) or, for files
/// outside it, as an absolute path (`/etc/freeswitch/tls/agent.pem (mode 644, ...)`). Relative
/// paths need the config dir: without it they are left out rather than guessed.
pub fn locations(evidence: &[String], conf_dir: Option<&str>) -> Vec<FileLocation> {
    let mut out: Vec<FileLocation> = Vec::new();
    for e in evidence {
        let Some(loc) = location(e, conf_dir) else {
            continue;
        };
        if !out.contains(&loc) {
            out.push(loc);
        }
    }
    out
}

fn location(line: &str, conf_dir: Option<&str>) -> Option<FileLocation> {
    let looks_like_file = |p: &str| {
        !p.is_empty()
            && !p.chars().any(char::is_whitespace)
            && p.rsplit('/').next().is_some_and(|f| f.contains('.'))
    };
    if let Some((head, _)) = line.split_once(": ") {
        let (path, n) = match head.rsplit_once(':') {
            Some((p, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                (p, n.parse::<usize>().ok().filter(|n| *n > 0))
            }
            _ => (head, None),
        };
        if looks_like_file(path) && !path.contains(':') {
            let path = if path.starts_with('/') {
                path.to_string()
            } else {
                format!("{}/{path}", conf_dir?.trim_end_matches('/'))
            };
            return Some(FileLocation { path, line: n });
        }
    }
    let token = line.split_whitespace().find(|t| t.starts_with('/'))?;
    let path = token.trim_end_matches([',', ';', ':', ')']);
    (path.len() > 1 && looks_like_file(path)).then(|| FileLocation {
        path: path.to_string(),
        line: None,
    })
}

/// What the audit of one host returns to the runner: every control's result, or why there are
/// none.
pub type Audited = Result<Vec<ControlResult>, HostError>;

/// The audit of one host.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostAudit {
    pub name: String,
    pub address: String,
    /// `audited`, or the fleet status when the host could not be audited
    /// (`unreachable`, `failed`, `skipped`).
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub elapsed_ms: u64,
    pub results: Vec<ControlResult>,
}

impl HostAudit {
    /// A host as the runner returns it: audited when its evidence was gathered, else the fleet
    /// status (`unreachable`, `failed`, `skipped`) and why.
    pub fn from_run(h: HostRun<Audited>) -> HostAudit {
        let status = h.status();
        let error = h.error();
        let (status, results) = match h.outcome {
            HostOutcome::Finished(Ok(results)) => ("audited".to_string(), results),
            _ => (status.as_str().to_string(), Vec::new()),
        };
        HostAudit {
            name: h.host.name,
            address: h.host.address,
            status,
            error,
            elapsed_ms: h.elapsed_ms,
            results,
        }
    }

    pub fn audited(&self) -> bool {
        self.status == "audited"
    }

    /// Failing or erroring (not waived) results at or above `threshold`.
    pub fn findings(&self, threshold: Severity) -> impl Iterator<Item = &ControlResult> {
        self.results.iter().filter(move |r| {
            r.severity >= threshold && matches!(r.status, Status::Fail | Status::Error)
        })
    }

    pub fn count(&self, status: Status) -> usize {
        self.results.iter().filter(|r| r.status == status).count()
    }
}

/// Everything a finished audit run produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub run: RunInfo,
    pub hosts: Vec<HostAudit>,
    pub fail_on: Severity,
}

/// 4 when any host could not be audited (wins), 3 when a failing or erroring control is at or
/// above `fail_on` on some host, else 0. Waived controls never count.
pub fn exit_code(hosts: &[HostAudit], fail_on: Severity) -> u8 {
    if hosts.iter().any(|h| !h.audited()) {
        EXIT_NOT_AUDITED
    } else if hosts.iter().any(|h| h.findings(fail_on).next().is_some()) {
        EXIT_FINDINGS
    } else {
        EXIT_OK
    }
}

/// Evaluate every control on the evidence; waived IDs keep their result in `waived_status`.
pub fn evaluate(ev: &Evidence, waived: &[String]) -> Vec<ControlResult> {
    catalogue()
        .into_iter()
        .map(|c: &Control| {
            let finding = c.run(ev);
            let is_waived = waived.iter().any(|w| w.eq_ignore_ascii_case(c.id));
            ControlResult::new(c, finding, is_waived, ev.conf_dir().ok())
        })
        .collect()
}

impl ControlResult {
    /// `c`'s result from its finding: waived keeps what it found in `waived_status`; the files
    /// the evidence names are located under `conf_dir`.
    pub fn new(c: &Control, f: Finding, waived: bool, conf_dir: Option<&str>) -> ControlResult {
        let Finding { status, evidence } = f;
        ControlResult {
            id: c.id,
            severity: c.severity,
            baseline: c.baseline,
            status: if waived { Status::Waived } else { status },
            waived_status: waived.then_some(status),
            waived_reason: None,
            locations: locations(&evidence, conf_dir),
            evidence,
        }
    }
}

/// Refuse waivers of IDs that are not controls (a typo would silently waive nothing).
pub fn check_waivers(cli: &[String], hosts: &[Host]) -> Result<(), AuditError> {
    let known: Vec<&str> = catalogue().iter().map(|c| c.id).collect();
    let check = |origin: String, id: &str| -> Result<(), AuditError> {
        if known.iter().any(|k| k.eq_ignore_ascii_case(id.trim())) {
            return Ok(());
        }
        let prefix: String = id.trim().chars().take(6).collect::<String>().to_uppercase();
        let near: Vec<&str> = known
            .iter()
            .filter(|k| !prefix.is_empty() && k.starts_with(&prefix))
            .copied()
            .collect();
        Err(AuditError::UnknownControl {
            origin,
            id: id.to_string(),
            hint: if near.is_empty() {
                String::new()
            } else {
                format!(" (did you mean {}?)", near.join(", "))
            },
        })
    };
    for id in cli {
        check("--waive".into(), id)?;
    }
    for h in hosts {
        for id in &h.waive {
            check(
                format!("the inventory ([audit] waive) for host {}", h.name),
                id,
            )?;
        }
    }
    Ok(())
}

/// Gather the evidence of one host: ONE remote round trip for every file and snippet, then the
/// Event Socket probes through the tunnel and the TCP probe from the controller, concurrently.
/// `probe_limit` bounds the TCP probe: a filtered port answers nothing and costs all of it.
/// `proof`: the controller's fail2ban-regex proof for this host, if it holds one; `table`: take
/// fsfleet's own proofs too ([`f2b::PROVEN`]; `--reprove` turns both off).
pub async fn audit_host(
    session: &Session,
    host: &Host,
    probe_limit: Duration,
    proof: Option<CachedProof>,
    table: bool,
) -> Result<Evidence, FactsError> {
    let script = evidence::script_with(host, proof.as_ref(), table);
    let sections = facts::gather(session, &script).await?;
    let facts = crate::harden::HostFacts::parse(sections, &session.user, session.uses_sudo())?;
    let mut ev = Evidence {
        host: host.clone(),
        facts,
        live: Live::default(),
        proof_cache: proof,
    };
    let port = ev.esl_port();
    ev.live.esl_port = port;
    let outside = async {
        if host.jump.is_some() {
            OutsideProbe::NotRun(format!(
                "host {} is reached through a jump host: the controller has no direct route to probe",
                host.name
            ))
        } else {
            evidence::probe_outside(&host.address, port, probe_limit).await
        }
    };
    if let Err(e) = ev.conf_dir() {
        let why = e.evidence();
        ev.live.cluecon = evidence::EslProbe::NotRun(why.clone());
        ev.live.configured = evidence::EslProbe::NotRun(why);
        ev.live.outside = outside.await;
    } else {
        let ((cluecon, configured), out) = tokio::join!(evidence::probe_esl(session, &ev), outside);
        ev.live.cluecon = cluecon;
        ev.live.configured = configured;
        ev.live.outside = out;
    }
    Ok(ev)
}

/// The proof this audit made on the host, to keep for the next one (none when it was cached,
/// did not run, or has no key).
fn new_proof(ev: &Evidence) -> Option<CachedProof> {
    let f = &ev.facts;
    let p = Proof::resolve(
        f.section(f2b::PROOF_SECTION),
        f.section_status(f2b::PROOF_SECTION),
        ev.proof_cache.as_ref(),
    )
    .ok()?;
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    p.to_cache(&now)
}

/// `fsfleet audit`: returns the exit code, or a usage error before any host is touched.
pub async fn command(args: AuditArgs) -> Result<u8, AuditError> {
    use std::io::Write;
    if args.list_controls {
        let text = match args.format {
            AuditFormat::Markdown => render::controls_markdown(),
            AuditFormat::Json => serde_json::to_string_pretty(&render::controls_json())? + "\n",
            _ => render::controls_text(),
        };
        std::io::stdout().write_all(text.as_bytes())?;
        return Ok(EXIT_OK);
    }
    if args.list_advisories {
        let text = match args.format {
            AuditFormat::Markdown => render::advisories_markdown(),
            AuditFormat::Json => serde_json::to_string_pretty(&render::advisories_json())? + "\n",
            _ => render::advisories_text(),
        };
        std::io::stdout().write_all(text.as_bytes())?;
        return Ok(EXIT_OK);
    }
    if args.format == AuditFormat::Markdown {
        return Err(AuditError::MarkdownReport);
    }
    let path = args.inventory.resolve();
    let (inv, hosts) = cmd::select(&path, args.inventory.format, args.run.limit.as_deref())?;
    check_waivers(&args.waive, &hosts)?;
    let opts = cmd::fleet_options(&args.run)?;
    let connector = cmd::connector(&inv, &hosts, &args.run).await;
    let cli_waive = Arc::new(args.waive.clone());
    // fail2ban-regex proofs by host: a corrupt or unreadable cache only costs the proofs.
    let cache_path = ProofCache::path(&inv.dir());
    let cache = ProofCache::load(&cache_path).unwrap_or_else(|e| {
        eprintln!("warning: ignoring the fail2ban proof cache: {e}");
        ProofCache::default()
    });
    let proofs = Arc::new(std::sync::Mutex::new(cache));
    let proofs_run = proofs.clone();
    let reprove = args.reprove;
    let run = fleet::run("audit", hosts, &opts, move |ctx| {
        let connector = connector.clone();
        let cli_waive = cli_waive.clone();
        let proofs = proofs_run.clone();
        async move {
            let started = Instant::now();
            ctx.stage("connecting");
            let session = cmd::connect(&connector, &ctx.host).await?;
            // The same rule as harden's verify: ten times the SSH connect time, 1 to 3 s.
            let probe_limit = crate::harden::verify::probe_timeout(started.elapsed());
            ctx.stage("gathering evidence");
            let held = if reprove {
                None
            } else {
                proofs
                    .lock()
                    .ok()
                    .and_then(|c| c.hosts.get(&ctx.host.name).cloned())
            };
            let ev = audit_host(&session, &ctx.host, probe_limit, held, !reprove).await;
            session.close().await;
            let ev = ev.map_err(|e| {
                HostError::Failed(format!(
                    "{}: cannot gather the audit evidence: {}",
                    ctx.host.name,
                    crate::errors::chain(&e)
                ))
            })?;
            if let Some(new) = new_proof(&ev)
                && let Ok(mut c) = proofs.lock()
            {
                c.hosts.insert(ctx.host.name.clone(), new);
            }
            ctx.stage("evaluating");
            let mut waived: Vec<String> = ctx.host.waive.clone();
            waived.extend(cli_waive.iter().cloned());
            let mut results = evaluate(&ev, &waived);
            for r in results.iter_mut().filter(|r| r.status == Status::Waived) {
                r.waived_reason = ctx
                    .host
                    .waive_reasons
                    .iter()
                    .find(|(id, _)| id.eq_ignore_ascii_case(r.id))
                    .map(|(_, why)| why.clone());
            }
            Ok(results)
        }
    })
    .await;
    if let Ok(c) = proofs.lock()
        && let Err(e) = c.save(&cache_path)
    {
        eprintln!("warning: the fail2ban proof cache was not saved: {e}");
    }
    let retry: Vec<String> = run.failed_hosts().into_iter().map(String::from).collect();
    let hosts: Vec<HostAudit> = run.hosts.into_iter().map(HostAudit::from_run).collect();
    let outcome = Outcome {
        run: run.info,
        hosts,
        fail_on: args.fail_on.into(),
    };
    let code = exit_code(&outcome.hosts, outcome.fail_on);
    let out = match args.format {
        AuditFormat::Json => serde_json::to_string_pretty(&render::json(&outcome, code))? + "\n",
        AuditFormat::Junit => render::junit(&outcome),
        AuditFormat::Sarif => serde_json::to_string_pretty(&render::sarif(&outcome))? + "\n",
        AuditFormat::Text | AuditFormat::Markdown => render::text(&outcome, code),
    };
    std::io::stdout().write_all(out.as_bytes())?;
    if let Ok(Some(p)) = crate::report::write_retry_file(&inv.dir(), &retry)
        && args.run.verbosity() >= 0
    {
        eprintln!("retry the hosts not audited with: --limit @{}", p.display());
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::super::evidence::testing::*;
    use super::*;

    fn host(results: Vec<ControlResult>, status: &str) -> HostAudit {
        HostAudit {
            name: "pbx1".into(),
            address: "192.0.2.5".into(),
            status: status.into(),
            error: None,
            elapsed_ms: 0,
            results,
        }
    }

    fn r(id: &'static str, severity: Severity, status: Status) -> ControlResult {
        ControlResult {
            id,
            severity,
            baseline: super::super::control(id).is_some_and(|c| c.baseline),
            status,
            waived_status: None,
            waived_reason: None,
            evidence: vec![],
            locations: vec![],
        }
    }

    #[test]
    fn exit_code_follows_threshold_waivers_and_unreachable() {
        let h = host(vec![r("FS-MOD-01", Severity::Low, Status::Fail)], "audited");
        assert_eq!(exit_code(std::slice::from_ref(&h), Severity::High), 0);
        assert_eq!(exit_code(std::slice::from_ref(&h), Severity::Low), 3);
        let h2 = host(
            vec![r("FS-ESL-01", Severity::Critical, Status::Error)],
            "audited",
        );
        assert_eq!(
            exit_code(&[h.clone(), h2.clone()], Severity::High),
            3,
            "error counts"
        );
        let w = host(
            vec![r("FS-ESL-01", Severity::Critical, Status::Waived)],
            "audited",
        );
        assert_eq!(exit_code(&[w], Severity::Info), 0);
        let down = host(vec![], "unreachable");
        assert_eq!(
            exit_code(&[h2, down], Severity::High),
            4,
            "unreachable wins"
        );
    }

    #[test]
    fn a_host_is_audited_only_when_the_runner_brought_back_its_results() {
        let run = |outcome: HostOutcome<Audited>| HostRun {
            host: super::super::evidence::testing::host(),
            elapsed_ms: 12,
            outcome,
        };
        let results = vec![r("FS-MOD-01", Severity::Low, Status::Fail)];
        let a = HostAudit::from_run(run(HostOutcome::Finished(Ok(results.clone()))));
        assert_eq!(
            (a.status.as_str(), a.error, a.results, a.elapsed_ms),
            ("audited", None, results, 12)
        );
        assert_eq!(a.name, "pbx1");
        for (outcome, status, error) in [
            (
                HostOutcome::Finished(Err(HostError::Unreachable("refused".into()))),
                "unreachable",
                "refused",
            ),
            (
                HostOutcome::Finished(Err(HostError::Failed("no evidence".into()))),
                "failed",
                "no evidence",
            ),
            (
                HostOutcome::Aborted("internal error".into()),
                "failed",
                "internal error",
            ),
            (
                HostOutcome::NotStarted("not started: interrupted by Ctrl-C".into()),
                "skipped",
                "not started: interrupted by Ctrl-C",
            ),
        ] {
            let a = HostAudit::from_run(run(outcome));
            assert!(!a.audited());
            assert_eq!(
                (a.status.as_str(), a.error.as_deref()),
                (status, Some(error))
            );
            assert!(a.results.is_empty());
            assert_eq!(exit_code(&[a], Severity::Critical), EXIT_NOT_AUDITED);
        }
    }

    #[test]
    fn stock_host_evaluation_waives_without_hiding() {
        let ev = stock();
        let res = evaluate(&ev, &["fs-sip-03".into()]);
        assert_eq!(res.len(), catalogue().len());
        let sip3 = res.iter().find(|r| r.id == "FS-SIP-03").unwrap();
        assert_eq!(
            (sip3.status, sip3.waived_status),
            (Status::Waived, Some(Status::Fail))
        );
        assert!(!sip3.evidence.is_empty(), "waived keeps its evidence");
        let esl1 = res.iter().find(|r| r.id == "FS-ESL-01").unwrap();
        assert_eq!(esl1.status, Status::Fail);
    }

    /// The files of the evidence: a relative head under the config dir, with its line; an
    /// absolute path anywhere; not a head that is no file (`live:`, `ufw:`, a sentence), and
    /// nothing guessed without the config dir.
    #[test]
    fn locations_are_the_files_the_evidence_names() {
        let loc = |path: &str, line: Option<usize>| FileLocation {
            path: path.into(),
            line,
        };
        let ev = |lines: &[&str]| lines.iter().map(|l| l.to_string()).collect::<Vec<_>>();
        assert_eq!(
            locations(
                &ev(&[
                    "dialplan/default.xml:347: extension sip_uri bridges any dialled sip: URI out (sofia/${use_profile}/$1)",
                    "dialplan/default.xml:347: the same line again",
                    "vars.xml: default_password is 1234 (the stock default)",
                    "/etc/ufw/user.rules: TCP port 8021 allowed by `allow 8021/tcp from anywhere`",
                    "/root/fs.conf.bak (mode 644, root:root) is readable by every user",
                    "live: port 8021 listens on 0.0.0.0:8021 (users:((\"freeswitch\",pid=9)))",
                    "ufw: port 5060 allowed from 0.0.0.0/0",
                    "stock users still defined in directory/default/: 1000-1019, brian",
                    "iptables: -A INPUT -p tcp --dport 8021 -j ACCEPT",
                ]),
                Some("/etc/freeswitch/"),
            ),
            [
                loc("/etc/freeswitch/dialplan/default.xml", Some(347)),
                loc("/etc/freeswitch/vars.xml", None),
                loc("/etc/ufw/user.rules", None),
                loc("/root/fs.conf.bak", None),
            ]
        );
        assert_eq!(
            locations(&ev(&["vars.xml: default_password is 1234"]), None),
            []
        );
        // The real evidence of a stock host: the files of FS-ESL-01, FS-SIP-02, FS-DP-02.
        let res = evaluate(&stock(), &[]);
        let of = |id: &str| res.iter().find(|r| r.id == id).unwrap().locations.clone();
        assert_eq!(
            of("FS-ESL-01"),
            [loc(
                "/etc/freeswitch/autoload_configs/event_socket.conf.xml",
                None
            )]
        );
        assert_eq!(of("FS-SIP-02").len(), 4);
        assert_eq!(
            of("FS-DP-02")[0],
            loc(
                "/etc/freeswitch/dialplan/default/01_example.com.xml",
                Some(3)
            )
        );
        assert_eq!(of("FS-F2B-01"), []);
    }

    #[test]
    fn unknown_waivers_are_refused_with_a_hint() {
        let e = check_waivers(&["FS-ESL-9".into()], &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--waive waives \"FS-ESL-9\", which is not a control ID"),
            "{e}"
        );
        assert!(e.contains("did you mean FS-ESL-01"), "{e}");
        let mut h = super::super::evidence::testing::host();
        h.waive = vec!["FS-NOPE".into()];
        let e = check_waivers(&[], &[h]).unwrap_err().to_string();
        assert!(e.contains("for host pbx1"), "{e}");
        assert!(check_waivers(&["fs-mod-01".into()], &[]).is_ok());
    }
}
