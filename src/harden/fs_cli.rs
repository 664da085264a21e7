//! Step `fs-cli`: admins keep `fs_cli` access after the Event Socket password changes.
//!
//! `/etc/fs_cli.conf` (root, 0600) gets host, port and password; an existing `~/.fs_cli_conf` of
//! root or of the SSH login user would hide it (fs_cli reads only the first file it finds, FACTS §3),
//! so those are replaced too, and a non-root login user gets one of their own (0600).

use std::future::Future;

use super::step::{self, Phase, Plan, PlanInput, Step};
use super::{HostFacts, Probes, StepCtx, StepError, StepPlan};
use crate::facts::{Fact, FactError, FileFact, ScriptInput};
use crate::hostfs;
use crate::inventory::Host;
use crate::model::EventSocket;
use crate::secret::Secret;
use crate::ssh::sh_quote;

pub const NAME: &str = "fs-cli";
pub const SYSTEM_FILE: &str = "/etc/fs_cli.conf";
const HOMES: &str = "fscli_homes";

/// The step in the registry: written once FreeSWITCH runs the Event Socket it names.
pub struct FsCli;

impl Step for FsCli {
    const NAME: &'static str = NAME;
    const DOING: &'static str = "writing fs_cli configs";
    const PHASE: Phase = Phase::AfterReload;
    type Action = Vec<Target>;

    fn probes(p: &mut Probes, host: &Host) {
        probes(p, host)
    }

    fn plan(input: &PlanInput<'_>) -> Result<Plan<Vec<Target>>, StepError> {
        let after = step::esl_after(input.pre, input.before.iter().copied());
        // After an Event Socket reload, the file's (fsfleet's) address; otherwise the listener
        // preflight proved to be FreeSWITCH's, never a listen-ip nobody proved (it may point at
        // another user's listener).
        let mut es = after.es;
        if !after.reloads
            && let Some(t) = &input.pre.target
        {
            es.listen_ip = t.address.clone();
        }
        let (mut outline, targets) = plan(input.facts, input.host, &es, &after.password)?;
        // New ones too: the run record lists them as created, so a rollback removes them.
        outline.backup = targets.iter().map(|t| t.path.clone()).collect();
        Ok(Plan {
            outline,
            action: targets,
        })
    }

    fn apply<'a>(
        ctx: &'a StepCtx<'a>,
        action: &'a Vec<Target>,
    ) -> impl Future<Output = Result<Vec<String>, StepError>> + Send + 'a {
        apply(ctx.session, action)
    }
}

pub fn probes(p: &mut Probes, _host: &Host) {
    p.file(SYSTEM_FILE);
    p.fact::<Homes>();
}

/// The homes of root and the login user, and the `~/.fs_cli_conf` each holds.
pub struct Homes;

impl Fact for Homes {
    const NAME: &'static str = HOMES;
    type Value = Vec<Home>;

    fn snippet(input: &ScriptInput<'_>) -> String {
        let host = input.host;
        let users = if host.user == "root" {
            "root".to_string()
        } else {
            format!("root {}", sh_quote(&host.user))
        };
        format!(
            "for u in {users}; do e=$(getent passwd \"$u\") || continue; h=$(echo \"$e\" | cut -d: -f6); g=$(id -gn \"$u\"); \
             m=-; if [ -f \"$h/.fs_cli_conf\" ]; then c=$(base64 -w0 \"$h/.fs_cli_conf\"); m=$(stat -c '%a:%U' \"$h/.fs_cli_conf\"); else c=-; fi; \
             printf 'H\\t%s\\t%s\\t%s\\t%s\\t%s\\n' \"$u\" \"$g\" \"$h\" \"$c\" \"$m\"; done"
        )
    }

    /// `H user group home base64|- mode:owner|-` lines; others are skipped. Nothing here is
    /// validated: the plan checks the home before it becomes a path.
    fn parse(text: &str, _: Option<i32>) -> Result<Vec<Home>, FactError> {
        Ok(text
            .lines()
            .filter_map(|line| {
                let parts: Vec<&str> = line.split('\t').collect();
                let (user, group, home, b64, meta) = match parts.as_slice() {
                    ["H", u, g, h, c, m] => (u, g, h, c, *m),
                    ["H", u, g, h, c] => (u, g, h, c, "-"),
                    _ => return None,
                };
                Some(Home {
                    user: user.to_string(),
                    group: group.to_string(),
                    home: home.to_string(),
                    conf: if *b64 == "-" {
                        None
                    } else {
                        data_encoding::BASE64.decode(b64.as_bytes()).ok()
                    },
                    meta: meta.to_string(),
                })
            })
            .collect())
    }
}

/// One line of [`Homes`]: host text, unvalidated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    pub user: String,
    pub group: String,
    pub home: String,
    /// The bytes of `~/.fs_cli_conf`; None: none there (or unreadable).
    pub conf: Option<Vec<u8>>,
    /// `mode:owner` of that file (`-`: none).
    pub meta: String,
}

/// One file fs-cli writes.
#[derive(Clone)]
pub struct Target {
    pub path: String,
    pub user: String,
    pub group: String,
    pub existed: bool,
    content: Vec<u8>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("path", &self.path)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// The fs_cli configuration for this Event Socket.
pub fn render(es: &EventSocket, password: &Secret) -> String {
    format!(
        "; Written by fsfleet. fs_cli reads ~/.fs_cli_conf if it exists, else this file.\n\
         [default]\nhost => {}\nport => {}\npassword => {}\n",
        es.local_address(),
        es.listen_port,
        password.expose()
    )
}

/// Which files to (re)write so that `fs_cli` works for root and the login user.
pub fn plan(
    f: &HostFacts,
    host: &Host,
    es: &EventSocket,
    password: &Secret,
) -> Result<(StepPlan, Vec<Target>), StepError> {
    // The file's format has no quoting: only an address literal goes into it.
    let address = es.local_address();
    if address.parse::<std::net::IpAddr>().is_err() {
        return Err(StepError::Refused(format!(
            "the Event Socket address {} is not an IP address; fsfleet will not write it into {SYSTEM_FILE}",
            address.escape_debug()
        )));
    }
    let want = render(es, password).into_bytes();
    let mut plan = StepPlan::default();
    let mut targets = Vec::new();
    let system = f.files.files.get(SYSTEM_FILE);
    if !up_to_date(system, &want, 0o600, "root") {
        plan.changes.push(format!(
            "{} {SYSTEM_FILE} (root, 0600)",
            if system.is_some() { "rewrite" } else { "write" }
        ));
        targets.push(Target {
            path: SYSTEM_FILE.into(),
            user: "root".into(),
            group: "root".into(),
            existed: system.is_some(),
            content: want.clone(),
        });
    }
    for h in f.get::<Homes>().unwrap_or_default() {
        let (user, group, meta) = (h.user.as_str(), h.group.as_str(), h.meta.as_str());
        let path = format!("{}/.fs_cli_conf", h.home.trim_end_matches('/'));
        // Host values: a home that is not a clean absolute path is refused, never written to.
        hostfs::check_path(&path).map_err(|source| StepError::HostFs {
            what: format!("home of {}", user.escape_debug()),
            source: Box::new(source),
        })?;
        let existing = h.conf;
        // root without a file of its own reads /etc/fs_cli.conf: nothing to add.
        if existing.is_none() && (user == "root" || host.user == "root") {
            continue;
        }
        // The file holds the Event Socket password: 0600 and its user's, or it is rewritten.
        let meta_ok = meta == format!("600:{user}");
        if existing.as_deref() == Some(want.as_slice()) && meta_ok {
            continue;
        }
        plan.changes.push(format!(
            "{} {path} ({user}, 0600){}",
            if existing.is_some() {
                "replace"
            } else {
                "write"
            },
            if existing.is_some() {
                ": a stale one would hide /etc/fs_cli.conf"
            } else {
                ""
            }
        ));
        targets.push(Target {
            path,
            user: user.to_string(),
            group: group.to_string(),
            existed: existing.is_some(),
            content: want.clone(),
        });
    }
    Ok((plan, targets))
}

fn up_to_date(f: Option<&FileFact>, want: &[u8], mode: u32, owner: &str) -> bool {
    f.is_some_and(|f| f.content.as_deref() == Some(want) && f.mode == mode && f.owner == owner)
}

/// Writes every target through [`hostfs`] (a home directory belongs to its user, who could
/// otherwise redirect root's write), in one batch.
pub async fn apply(
    session: &crate::ssh::Session,
    targets: &[Target],
) -> Result<Vec<String>, StepError> {
    let ops: Vec<hostfs::Op> = targets
        .iter()
        .map(|t| hostfs::Op::Write {
            path: &t.path,
            content: &t.content,
            user: &t.user,
            group: &t.group,
            mode: 0o600,
        })
        .collect();
    hostfs::apply(session, &ops)
        .await
        .map_err(|source| StepError::HostFs {
            what: "writing the fs_cli configs".into(),
            source: Box::new(source),
        })?;
    Ok(targets
        .iter()
        .map(|t| format!("{} ({}:{}, 0600)", t.path, t.user, t.group))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harden::context::HostFacts;

    fn host(user: &str) -> Host {
        let mut h = crate::report::testing::host("pbx");
        h.user = user.to_string();
        h
    }

    #[test]
    fn writes_system_file_and_replaces_stale_home_files_then_nothing() {
        let es = EventSocket::parse(
            "<c><settings><param name=\"listen-ip\" value=\"127.0.0.1\"/></settings></c>",
            "event_socket.conf.xml",
            &crate::model::Vars::default(),
        )
        .unwrap();
        let pw = Secret::new("A".repeat(32));
        let stale = data_encoding::BASE64.encode(b"[default]\npassword => ClueCon\n");
        let mut f = HostFacts {
            sections: crate::facts::Sections::from_pairs(&[(
                HOMES,
                &format!("H\troot\troot\t/root\t{stale}\nH\tadmin\tadmin\t/home/admin\t-\n"),
                0,
            )]),
            ..Default::default()
        };
        let (plan, targets) = plan(&f, &host("admin"), &es, &pw).unwrap();
        let paths: Vec<&str> = targets.iter().map(|t| t.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "/etc/fs_cli.conf",
                "/root/.fs_cli_conf",
                "/home/admin/.fs_cli_conf"
            ]
        );
        assert!(plan.changes[1].contains("stale"));
        assert!(plan.changes.iter().all(|c| !c.contains(pw.expose())));
        let text = render(&es, &pw);
        assert!(text.contains("host => 127.0.0.1\nport => 8021\npassword => AAAA"));
        // Everything in place: no change.
        let good = data_encoding::BASE64.encode(text.as_bytes());
        f.sections = crate::facts::Sections::from_pairs(&[(
            HOMES,
            &format!(
                "H\troot\troot\t/root\t-\t-\nH\tadmin\tadmin\t/home/admin\t{good}\t600:admin\n"
            ),
            0,
        )]);
        f.files.files.insert(
            SYSTEM_FILE.into(),
            FileFact {
                path: SYSTEM_FILE.into(),
                mode: 0o600,
                owner: "root".into(),
                group: "root".into(),
                size: 1,
                content: Some(text.into_bytes()),
            },
        );
        let (plan, targets) = super::plan(&f, &host("admin"), &es, &pw).unwrap();
        assert!(plan.is_noop() && targets.is_empty(), "{:?}", plan.changes);
        // The same content readable by others is rewritten 0600.
        f.sections = crate::facts::Sections::from_pairs(&[(
            HOMES,
            &format!("H\tadmin\tadmin\t/home/admin\t{good}\t644:admin\n"),
            0,
        )]);
        let (_, targets) = super::plan(&f, &host("admin"), &es, &pw).unwrap();
        assert_eq!(targets.len(), 1);
        // A home that is not a clean path is refused, never written to.
        f.sections = crate::facts::Sections::from_pairs(&[(
            HOMES,
            "H\tadmin\tadmin\t/home/../etc\t-\t-\n",
            0,
        )]);
        assert!(super::plan(&f, &host("admin"), &es, &pw).is_err());
    }
}
