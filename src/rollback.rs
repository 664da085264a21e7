//! `fsfleet rollback`: put each host back to its state before a harden run.
//!
//! Every harden run that changes a host leaves a record in its backup directory (root-only,
//! `/var/backups/fsfleet/RUN/`, see [`backup`]): `manifest` lists each file the run was about to
//! change and whether it existed (`files/PATH` holds the copy, with its owner and mode), `after`
//! the digest of each as the run left it. Rollback reads the records in one round trip, picks
//! the run (the newest by default), and in a second one reads what each of its files holds now
//! and in the backup; then, on the controller:
//!
//! - a file that differs from what the run left (someone edited it since) refuses the host,
//!   naming it, unless `--force`;
//! - every other file goes back byte for byte with its old owner and mode, and each file the run
//!   created is removed, in ONE hostfs batch (all staged, then all renamed: old state or new);
//! - FreeSWITCH reloads what that needs, in harden's order: `reloadxml`, `sofia profile rescan`
//!   of the restored profiles, `reload mod_event_socket` last, with the password it runs with
//!   now, then reconnects with the restored one (proving the listener is FreeSWITCH's first);
//!   a failed reload puts the files back as they were before the rollback;
//! - fail2ban restarts when its files changed; the vault's restored passwords become active
//!   (the undone ones stay as previous);
//! - the run is marked rolled back, so a second rollback refuses instead of reaching further.
//!
//! - ufw goes back as the run found it, from the firewall step's record (`ufw` beside the
//!   backup): old default policies, the run's rules deleted, disabled if the run enabled it;
//!   while it stays on, a new SSH connection must work afterwards or the rules come back.
//!
//! What is left alone: packages (installed stay installed), rules a `--firewall-reset` dropped.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::Mutex;

use crate::conf::{diff, vars};
use crate::fleet::HostCtx;
use crate::harden::{HostFacts, StepError, backup, preflight, reload};
use crate::hostfs;
use crate::inventory::Host;
use crate::model::{self, EventSocket, HostModel};
use crate::report::{HostReport, StepReport, StepStatus};
use crate::secret::Secret;
use crate::ssh::{Connector, Session, sh_quote};
use crate::vault::{CredKind, Vault};

/// What all hosts of a rollback share.
pub struct Shared {
    pub connector: Arc<Connector>,
    pub vault: Mutex<Vault>,
    pub opts: Options,
}

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The run to undo (default: the newest one recorded on the host).
    pub run: Option<String>,
    pub check: bool,
    pub diff: bool,
    /// Restore files changed since the run all the same.
    pub force: bool,
}

/// Why a host cannot be rolled back; each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    #[error("the host's run records are unreadable: {0}")]
    Records(String),
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Step(#[from] Box<StepError>),
    #[error("{what}: {source}")]
    HostFs {
        what: String,
        #[source]
        source: Box<hostfs::HostFsError>,
    },
    #[error("vault: {0}")]
    Vault(#[from] crate::vault::VaultError),
}

/// A harden run as its record on the host says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    pub run_id: String,
    /// Each file the run may have changed, and whether it existed before.
    pub files: Vec<(String, bool)>,
    /// Path to the digest the run left (None: absent), when the run recorded it.
    pub after: Option<BTreeMap<String, Option<String>>>,
    /// The rollback that undid this run, if one did.
    pub rolled_back: Option<String>,
    /// What the run did to ufw, when it changed it.
    pub ufw: Option<UfwRecord>,
}

/// The firewall step's record of a run (see `harden::firewall::UfwChange::record`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UfwRecord {
    pub was_active: bool,
    pub incoming: Option<String>,
    pub outgoing: Option<String>,
    pub reset: bool,
    /// `ufw` arguments of each rule the run added.
    pub added: Vec<String>,
    /// Rules the run deleted (stale fsfleet rules): not put back, said in the report.
    pub deleted: usize,
}

/// ufw arguments fsfleet writes for a rule (`allow proto tcp from 192.0.2.0/24 to any port
/// 5060 comment 'fsfleet sip'`): checked word by word before they reach a command, since the
/// record sits on the host.
fn valid_rule_args(args: &str) -> bool {
    let Some(rest) = args.strip_prefix("allow proto ") else {
        return false;
    };
    let Some((spec, comment)) = rest.split_once(" comment ") else {
        return false;
    };
    let comment_ok = matches!(comment, "'fsfleet ssh'" | "'fsfleet sip'" | "'fsfleet rtp'");
    let words: Vec<&str> = spec.split(' ').collect();
    let addr = |w: &str| {
        !w.is_empty()
            && w.chars()
                .all(|c| c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '/'))
    };
    let ports = |w: &str| {
        !w.is_empty()
            && w.chars()
                .all(|c| c.is_ascii_digit() || matches!(c, ':' | ','))
    };
    let spec_ok = match words.as_slice() {
        [p, "to", "any", "port", n] => matches!(*p, "tcp" | "udp") && ports(n),
        [p, "from", a, "to", "any", "port", n] => {
            matches!(*p, "tcp" | "udp") && addr(a) && ports(n)
        }
        _ => false,
    };
    comment_ok && spec_ok
}

fn policy(v: &str) -> Option<String> {
    matches!(v, "allow" | "deny" | "reject").then(|| v.to_string())
}

/// A run id as fsfleet makes them (`20261129T221000Z-ab12`): anything else in the backup
/// directory is not a record of ours and never reaches a command.
pub fn valid_run_id(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 18
        && b.len() <= 40
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'Z'
        && b[16] == b'-'
        && b[17..]
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

fn is_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|c| c.is_ascii_hexdigit())
}

/// The first script: every run record, newest first.
fn records_script() -> String {
    let root = sh_quote(backup::ROOT);
    format!(
        "[ -d {root} ] || exit 0\n\
         for d in $(ls -1 {root} | sort -r); do\n\
         [ -f {root}/\"$d\"/{m} ] || continue\n\
         echo \"== run $d\"\n\
         cat {root}/\"$d\"/{m}\n\
         if [ -f {root}/\"$d\"/{a} ]; then echo '== after'; cat {root}/\"$d\"/{a}; fi\n\
         if [ -f {root}/\"$d\"/{r} ]; then echo '== rolled-back'; head -n 1 {root}/\"$d\"/{r}; fi\n\
         if [ -f {root}/\"$d\"/{u} ]; then echo '== ufw'; cat {root}/\"$d\"/{u}; fi\n\
         done\n",
        m = backup::MANIFEST,
        a = backup::AFTER,
        r = backup::ROLLED_BACK,
        u = crate::harden::firewall::RECORD,
    )
}

/// Parse the records script's output (host text: every id, path and digest is checked).
pub fn parse_records(text: &str) -> Result<Vec<RunRecord>, RollbackError> {
    let bad = |why: String| RollbackError::Records(why);
    let mut out: Vec<RunRecord> = Vec::new();
    #[derive(PartialEq)]
    enum Part {
        Manifest,
        After,
        RolledBack,
        Ufw,
    }
    let mut part = Part::Manifest;
    let mut head_seen = false;
    for line in text.lines() {
        if let Some(id) = line.strip_prefix("== run ") {
            if !valid_run_id(id) {
                // A directory fsfleet did not make: not a record.
                part = Part::RolledBack;
                head_seen = true;
                continue;
            }
            out.push(RunRecord {
                run_id: id.to_string(),
                files: Vec::new(),
                after: None,
                rolled_back: None,
                ufw: None,
            });
            part = Part::Manifest;
            head_seen = false;
            continue;
        }
        let Some(rec) = out.last_mut() else {
            return Err(bad(format!("unexpected line {line:?}")));
        };
        match line {
            "== after" => {
                rec.after = Some(BTreeMap::new());
                part = Part::After;
                continue;
            }
            "== rolled-back" => {
                part = Part::RolledBack;
                continue;
            }
            "== ufw" => {
                // A record that does not say ufw was off leaves it on.
                rec.ufw = Some(UfwRecord {
                    was_active: true,
                    ..UfwRecord::default()
                });
                part = Part::Ufw;
                continue;
            }
            _ => {}
        }
        match part {
            Part::Manifest if !head_seen => {
                if line != backup::MANIFEST_HEAD {
                    return Err(bad(format!(
                        "run {}: the record starts {line:?}, not {:?}",
                        rec.run_id,
                        backup::MANIFEST_HEAD
                    )));
                }
                head_seen = true;
            }
            Part::Manifest => {
                let (e, path) = line
                    .split_once('\t')
                    .ok_or_else(|| bad(format!("run {}: line {line:?}", rec.run_id)))?;
                hostfs::check_path(path).map_err(|e| bad(format!("run {}: {e}", rec.run_id)))?;
                let existed = match e {
                    "1" => true,
                    "0" => false,
                    _ => return Err(bad(format!("run {}: line {line:?}", rec.run_id))),
                };
                rec.files.push((path.to_string(), existed));
            }
            Part::After => {
                let (d, path) = line
                    .split_once('\t')
                    .ok_or_else(|| bad(format!("run {}: line {line:?}", rec.run_id)))?;
                let digest = match d {
                    "-" => None,
                    d if is_digest(d) => Some(d.to_ascii_lowercase()),
                    _ => return Err(bad(format!("run {}: digest {d:?}", rec.run_id))),
                };
                if let Some(a) = rec.after.as_mut() {
                    a.insert(path.to_string(), digest);
                }
            }
            Part::RolledBack => {
                if rec.rolled_back.is_none() && valid_run_id(line.trim()) {
                    rec.rolled_back = Some(line.trim().to_string());
                }
            }
            Part::Ufw => {
                let id = rec.run_id.clone();
                let u = rec.ufw.get_or_insert_with(|| UfwRecord {
                    was_active: true,
                    ..UfwRecord::default()
                });
                let bad = || bad(format!("run {id}: firewall record line {line:?}"));
                let (k, v) = line.split_once('\t').ok_or_else(bad)?;
                match k {
                    "was-active" => u.was_active = v == "1",
                    "reset" => u.reset = v == "1",
                    // A policy the facts could not read is not put back.
                    "incoming" => u.incoming = policy(v),
                    "outgoing" => u.outgoing = policy(v),
                    "added" if valid_rule_args(v) => u.added.push(v.to_string()),
                    "deleted" => u.deleted += 1,
                    _ => return Err(bad()),
                }
            }
        }
    }
    Ok(out)
}

/// Which record to undo: the one asked for, else the newest; a record already undone refuses.
pub fn choose<'a>(
    records: &'a [RunRecord],
    asked: Option<&str>,
) -> Result<&'a RunRecord, RollbackError> {
    let rec = match asked {
        Some(id) => records.iter().find(|r| r.run_id == id).ok_or_else(|| {
            RollbackError::Refused(format!(
                "no record of run {id} on this host (it keeps the last {} runs' backups: {})",
                backup::KEEP,
                names(records)
            ))
        })?,
        None => records.first().ok_or_else(|| {
            RollbackError::Refused(format!(
                "no harden run is recorded in {} on this host: nothing to roll back",
                backup::ROOT
            ))
        })?,
    };
    if let Some(by) = &rec.rolled_back {
        return Err(RollbackError::Refused(format!(
            "run {} was already rolled back (by {by}); name an earlier run with --run to go further back ({})",
            rec.run_id,
            names(records)
        )));
    }
    Ok(rec)
}

fn names(records: &[RunRecord]) -> String {
    if records.is_empty() {
        return "none".into();
    }
    records
        .iter()
        .map(|r| match &r.rolled_back {
            Some(_) => format!("{} (rolled back)", r.run_id),
            None => r.run_id.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A file as the host holds it: digest, owner, group, mode and bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct HostFile {
    pub digest: String,
    pub user: String,
    pub group: String,
    pub mode: u32,
    pub content: Vec<u8>,
}

impl std::fmt::Debug for HostFile {
    // Contents hold secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostFile")
            .field("digest", &self.digest)
            .field("mode", &format_args!("{:o}", self.mode))
            .finish_non_exhaustive()
    }
}

/// What a path is on the host: absent, a regular file, or something else (a link, a directory:
/// never restored through).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    Absent,
    File(HostFile),
    Other,
}

/// Each file of a run: what it holds now and what the backup holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileState {
    pub path: String,
    pub existed: bool,
    pub now: Found,
    pub copy: Found,
}

/// Reads each path with ONE open that never follows a link at the last component (a link,
/// a FIFO, a device or a directory is `other`), the owner and mode from that open's fstat and
/// the bytes from the same descriptor: a local user swapping the file between checks cannot
/// make owner, mode and content come from different files. One line per path: `-`, `other`,
/// `big`, or `USER:GROUP:MODE<TAB>HEX`.
const READ_PL: &str = r#"use strict; use warnings;
use Fcntl qw(O_RDONLY O_NOFOLLOW O_NONBLOCK :mode);
for my $p (@ARGV) {
  my $fh;
  if (!sysopen($fh, $p, O_RDONLY | O_NOFOLLOW | O_NONBLOCK)) { print($!{ENOENT} ? "-\n" : "other\n"); next; }
  my @st = stat($fh);
  if (!@st || !S_ISREG($st[2])) { print "other\n"; next; }
  if ($st[7] > 4194304) { print "big\n"; next; }
  my ($data, $buf) = ('', '');
  while (1) { my $n = sysread($fh, $buf, 65536); last if !$n; $data .= $buf; last if length($data) > 4194304; }
  if (length($data) > 4194304) { print "big\n"; next; }
  my $u = getpwuid($st[4]); my $g = getgrgid($st[5]);
  $u = $st[4] if !defined $u; $g = $st[5] if !defined $g;
  printf("%s:%s:%o\t%s\n", $u, $g, $st[2] & 07777, unpack("H*", $data));
}
"#;

fn state_script(run_id: &str, files: &[(String, bool)]) -> String {
    let dir = backup::dir(run_id);
    let mut args = String::new();
    for (path, _) in files {
        args.push_str(&format!(
            " {} {}",
            sh_quote(path),
            sh_quote(&format!("{dir}/files{path}"))
        ));
    }
    format!("exec perl -e {} --{args}\n", sh_quote(READ_PL))
}

fn plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn parse_found(line: &str, what: &str) -> Result<Found, RollbackError> {
    let bad = || RollbackError::Records(format!("unexpected file state line for {what}"));
    match line {
        "-" => return Ok(Found::Absent),
        "other" | "big" => return Ok(Found::Other),
        _ => {}
    }
    let (meta, hex) = line.split_once('\t').ok_or_else(bad)?;
    let mut m = meta.split(':');
    let (Some(user), Some(group), Some(mode), None) = (m.next(), m.next(), m.next(), m.next())
    else {
        return Err(bad());
    };
    if !plain_name(user) || !plain_name(group) {
        return Err(bad());
    }
    let mode = u32::from_str_radix(mode, 8).map_err(|_| bad())?;
    if mode > 0o7777 {
        return Err(bad());
    }
    let content = data_encoding::HEXLOWER_PERMISSIVE
        .decode(hex.as_bytes())
        .map_err(|_| bad())?;
    Ok(Found::File(HostFile {
        digest: sha256_hex(&content),
        user: user.to_string(),
        group: group.to_string(),
        mode,
        content,
    }))
}

/// The digest `record_after` writes (sha256sum), of bytes read on the controller.
fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    data_encoding::HEXLOWER.encode(&sha2::Sha256::digest(bytes))
}

/// Parse the state script's output: two lines per file, in the order asked.
pub fn parse_states(text: &str, files: &[(String, bool)]) -> Result<Vec<FileState>, RollbackError> {
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() != files.len() * 2 {
        return Err(RollbackError::Records(format!(
            "{} file state lines for {} files",
            lines.len(),
            files.len()
        )));
    }
    files
        .iter()
        .enumerate()
        .map(|(i, (path, existed))| {
            Ok(FileState {
                path: path.clone(),
                existed: *existed,
                now: parse_found(lines[2 * i], path)?,
                copy: parse_found(lines[2 * i + 1], &format!("the backup of {path}"))?,
            })
        })
        .collect()
}

/// One change of a rollback.
#[derive(Clone, PartialEq, Eq)]
pub enum Change {
    /// Put the backup's bytes, owner and mode back.
    Restore { path: String, file: HostFile },
    /// Remove a file the run created.
    Remove { path: String },
}

impl std::fmt::Debug for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Restore { path, .. } => write!(f, "Restore({path})"),
            Change::Remove { path } => write!(f, "Remove({path})"),
        }
    }
}

impl Change {
    pub fn path(&self) -> &str {
        match self {
            Change::Restore { path, .. } | Change::Remove { path } => path,
        }
    }
}

/// What a rollback of one run does on one host.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub changes: Vec<Change>,
    /// Files already as they were before the run.
    pub unchanged: usize,
    /// Files changed since the run by someone else (refused without --force).
    pub conflicts: Vec<String>,
    /// Every file the run had changed, with what it holds once restored: what FreeSWITCH must
    /// reload and the vault must follow (also when an earlier, cut rollback already wrote it).
    pub touched: Vec<(String, Found)>,
}

/// Plan the rollback from the record and the files' states (pure).
pub fn plan(rec: &RunRecord, states: &[FileState], force: bool) -> Result<Plan, RollbackError> {
    let mut p = Plan::default();
    for s in states {
        let now_digest = match &s.now {
            Found::File(f) => Some(f.digest.as_str()),
            Found::Absent => None,
            Found::Other => {
                return Err(RollbackError::Refused(format!(
                    "{} is no longer a regular file (a link or a directory): fsfleet does not restore through it; \
                     put the file back by hand, then re-run",
                    s.path
                )));
            }
        };
        // Already as before the run (a rollback cut after its writes, re-run): nothing to
        // restore, but FreeSWITCH and the vault must still follow when the run had changed it.
        let as_before = match (&s.now, &s.copy) {
            (Found::File(now), Found::File(copy)) if s.existed => now == copy,
            (Found::Absent, _) => !s.existed,
            _ => false,
        };
        if as_before {
            p.unchanged += 1;
            let run_left = rec.after.as_ref().and_then(|a| a.get(&s.path));
            let copy_digest = match &s.copy {
                Found::File(c) => Some(c.digest.clone()),
                _ => None,
            };
            if run_left.is_some_and(|left| *left != copy_digest) {
                p.touched.push((s.path.clone(), s.copy.clone()));
            }
            continue;
        }
        match rec.after.as_ref().map(|a| a.get(&s.path)) {
            Some(Some(left)) if left.as_deref() != now_digest => {
                p.conflicts.push(s.path.clone());
            }
            Some(None) | None => {
                // The run did not record what it left (cut short): no way to tell hand edits.
                if !force {
                    return Err(RollbackError::Refused(format!(
                        "run {} did not record what it left on {} (it did not finish); check the \
                         files yourself, then re-run with --force",
                        rec.run_id, s.path
                    )));
                }
            }
            Some(Some(_)) => {}
        }
        if s.existed {
            let Found::File(copy) = &s.copy else {
                return Err(RollbackError::Refused(format!(
                    "the backup of run {} has no copy of {}: it cannot be restored",
                    rec.run_id, s.path
                )));
            };
            // Never a set-id or sticky bit back, whatever the copy carries.
            p.changes.push(Change::Restore {
                path: s.path.clone(),
                file: HostFile {
                    mode: copy.mode & 0o777,
                    ..copy.clone()
                },
            });
            p.touched.push((s.path.clone(), s.copy.clone()));
        } else {
            p.changes.push(Change::Remove {
                path: s.path.clone(),
            });
            p.touched.push((s.path.clone(), Found::Absent));
        }
    }
    if !p.conflicts.is_empty() && !force {
        return Err(RollbackError::Refused(format!(
            "changed since run {} by someone else: {}; fsfleet will not overwrite that (look at \
             the changes, then re-run with --force to restore the backup all the same)",
            rec.run_id,
            p.conflicts.join(", ")
        )));
    }
    Ok(p)
}

/// The reloads restoring `changes` needs, from the host's config as it is now and as it will
/// be: reloadxml for any FreeSWITCH config file, a rescan of each restored profile, a restart
/// of each profile serving TLS when what it serves changes, and the Event Socket reload when
/// its file changes.
fn reload_needs(f: &HostFacts, p: &Plan) -> reload::Needs {
    let conf_dir = f.files.conf_dir.clone().unwrap_or_default();
    let in_conf = |path: &str| !conf_dir.is_empty() && path.starts_with(&format!("{conf_dir}/"));
    let touched: Vec<&str> = p
        .touched
        .iter()
        .map(|(path, _)| path.as_str())
        .filter(|p| in_conf(p))
        .collect();
    let mut needs = reload::Needs {
        reloadxml: !touched.is_empty(),
        ..Default::default()
    };
    for prof in HostModel::new(f).sip_profiles().profiles {
        if touched.contains(&prof.file.as_str())
            && model::registrations::plain_profile_name(&prof.name)
        {
            needs.rescan.push(prof.name);
        }
    }
    let esl_file = format!("{conf_dir}/{}", model::ESL_CONF);
    needs.event_socket = touched.contains(&esl_file.as_str());
    // A rescan neither binds nor unbinds TLS nor reloads its certificate (harden's tls step):
    // restoring the certificate files, or vars.xml with other TLS settings, restarts the
    // profiles that serve TLS now, so they stop serving it or serve the restored certificate.
    if !conf_dir.is_empty() && tls_changes(&conf_dir, &touched, f, p) {
        needs.restart = HostModel::new(f)
            .sip_profiles()
            .profiles
            .into_iter()
            .filter(|prof| prof.tls && model::registrations::plain_profile_name(&prof.name))
            .map(|prof| prof.name)
            .collect();
        needs.rescan.retain(|r| !needs.restart.contains(r));
    }
    needs
}

/// The vars.xml settings that decide whether and how the profiles serve TLS.
const TLS_VARS: &[&str] = &[
    "internal_ssl_enable",
    "external_ssl_enable",
    "sip_tls_version",
    "internal_tls_port",
    "external_tls_port",
];

/// Whether restoring `touched` changes what TLS the profiles serve: a file of the certs dir, or
/// a vars.xml whose TLS settings differ from today's.
fn tls_changes(conf_dir: &str, touched: &[&str], f: &HostFacts, p: &Plan) -> bool {
    let certs = format!("{}/", crate::harden::tls::certs_dir(conf_dir));
    if touched.iter().any(|t| t.starts_with(&certs)) {
        return true;
    }
    let vars_path = format!("{conf_dir}/vars.xml");
    let Some(restored) = p.touched.iter().find_map(|(vp, vf)| match vf {
        Found::File(v) if *vp == vars_path => Some(model::Vars::parse(Some(
            &String::from_utf8_lossy(&v.content),
        ))),
        _ => None,
    }) else {
        return false;
    };
    let model = HostModel::new(f);
    let now = model.vars();
    TLS_VARS.iter().any(|k| now.get(k) != restored.get(k))
}

/// The Event Socket settings a restored event_socket.conf.xml gives.
fn restored_esl(f: &HostFacts, p: &Plan) -> Option<Result<EventSocket, model::ModelError>> {
    let conf_dir = f.files.conf_dir.as_deref()?;
    let path = format!("{conf_dir}/{}", model::ESL_CONF);
    p.touched.iter().find_map(|(cp, found)| match found {
        Found::File(file) if *cp == path => {
            let text = String::from_utf8_lossy(&file.content);
            // Its `$${vars}` are those of the vars.xml FreeSWITCH will read: the restored one
            // when the run had changed it too.
            let vars_path = format!("{conf_dir}/vars.xml");
            let restored_vars = p.touched.iter().find_map(|(vp, vf)| match vf {
                Found::File(v) if *vp == vars_path => Some(model::Vars::parse(Some(
                    &String::from_utf8_lossy(&v.content),
                ))),
                _ => None,
            });
            let model = HostModel::new(f);
            let vars = restored_vars.as_ref().unwrap_or_else(|| model.vars());
            Some(EventSocket::parse(&text, &path, vars))
        }
        _ => None,
    })
}

/// Each user of a restored directory file with what it logs in with now: its own literal
/// password and PIN (None: the shared `$${default_password}`, a variable, or none).
fn restored_users(text: &str) -> Vec<(String, Option<String>, Option<String>)> {
    use crate::conf::xml::TagKind;
    let Ok(tags) = crate::conf::xml::scan(text) else {
        return Vec::new();
    };
    let literal = |v: &str| (!v.is_empty() && !v.contains("$${")).then(|| v.to_string());
    let mut out = Vec::new();
    let mut current: Option<(String, Option<String>, Option<String>)> = None;
    for t in &tags {
        match (t.name.as_str(), t.kind) {
            ("user", TagKind::Start) => {
                current = t.attr("id").map(|a| (a.value.clone(), None, None));
            }
            ("user", TagKind::End) => out.extend(current.take()),
            ("param", TagKind::Start | TagKind::Empty) => {
                if let (Some(u), Some(n), Some(v)) =
                    (current.as_mut(), t.attr("name"), t.attr("value"))
                {
                    match n.value.as_str() {
                        "password" => u.1 = literal(&v.value),
                        "vm-password" => u.2 = literal(&v.value),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// The `default_password` a restored vars.xml sets.
fn restored_sip(f: &HostFacts, p: &Plan) -> Option<Secret> {
    let conf_dir = f.files.conf_dir.as_deref()?;
    let path = format!("{conf_dir}/vars.xml");
    p.touched.iter().find_map(|(cp, found)| match found {
        Found::File(file) if *cp == path => {
            vars::get_var(&String::from_utf8_lossy(&file.content), "default_password")
                .map(Secret::new)
        }
        _ => None,
    })
}

/// Every secret a diff of these files could show: masked in `--diff`.
fn secrets_of(f: &HostFacts, states: &[FileState], vault: &[Secret]) -> Vec<Secret> {
    let mut out: Vec<Secret> = vault.to_vec();
    let vars_now = HostModel::new(f).vars().clone();
    for s in states {
        for found in [&s.now, &s.copy] {
            if let Found::File(h) = found {
                let text = String::from_utf8_lossy(&h.content);
                if let Some(v) = vars::get_var(&text, "default_password") {
                    out.push(Secret::new(v));
                }
                if let Ok(es) = EventSocket::parse(&text, &s.path, &vars_now) {
                    out.push(es.password);
                }
                out.extend(param_secrets(&text));
                for line in text.lines() {
                    // fs_cli configs: `password => X` / `password = X`.
                    if let Some(v) = line.trim_start().strip_prefix("password").map(|r| {
                        r.trim_start()
                            .trim_start_matches("=>")
                            .trim_start_matches('=')
                    }) {
                        let v = v.trim();
                        if !v.is_empty() {
                            out.push(Secret::new(v));
                        }
                    }
                }
            }
        }
    }
    out.retain(|s| !s.expose().is_empty());
    out
}

/// The values of every credential param in a FreeSWITCH XML text (`password`, `vm-password`,
/// `a1-hash`, gateway `password`s), as written: what a diff of directory or gateway files must
/// mask whatever the vault knows. `$${var}` references are not secrets.
fn param_secrets(text: &str) -> Vec<Secret> {
    const NAMES: &[&str] = &["password", "vm-password", "a1-hash"];
    let Ok(tags) = crate::conf::xml::scan(text) else {
        return Vec::new();
    };
    tags.iter()
        .filter(|t| t.name == "param")
        .filter(|t| {
            t.attr("name")
                .is_some_and(|n| NAMES.contains(&n.value.as_str()))
        })
        .filter_map(|t| t.attr("value"))
        .map(|v| v.value.clone())
        .filter(|v| !v.is_empty() && !v.starts_with("$${"))
        .map(Secret::new)
        .collect()
}

fn diffs(states: &[FileState], p: &Plan, secrets: &[Secret]) -> Vec<String> {
    let refs: Vec<&Secret> = secrets.iter().collect();
    p.changes
        .iter()
        .map(|c| {
            let now = states
                .iter()
                .find(|s| s.path == c.path())
                .and_then(|s| match &s.now {
                    Found::File(f) => Some(String::from_utf8_lossy(&f.content).into_owned()),
                    _ => None,
                })
                .unwrap_or_default();
            match c {
                Change::Restore { path, file } => {
                    diff::masked_diff(path, &now, &String::from_utf8_lossy(&file.content), &refs)
                }
                Change::Remove { path } => diff::masked_diff(path, &now, "", &refs),
            }
        })
        .collect()
}

fn summary(p: &Plan, check: bool) -> String {
    let restored = p
        .changes
        .iter()
        .filter(|c| matches!(c, Change::Restore { .. }))
        .count();
    let removed = p.changes.len() - restored;
    let (r, d) = if check {
        ("would restore", "would remove")
    } else {
        ("restored", "removed")
    };
    let mut parts = Vec::new();
    if restored > 0 {
        parts.push(format!(
            "{r} {restored} file{} byte for byte with their owner and mode",
            if restored == 1 { "" } else { "s" }
        ));
    }
    if removed > 0 {
        parts.push(format!(
            "{d} {removed} file{} the run created",
            if removed == 1 { "" } else { "s" }
        ));
    }
    if p.unchanged > 0 {
        parts.push(format!("{} already as before the run", p.unchanged));
    }
    let mut msg = parts.join("; ");
    let list: Vec<&str> = p.changes.iter().map(Change::path).collect();
    if !list.is_empty() {
        msg.push_str(&format!(" ({})", list.join(", ")));
    }
    msg
}

struct Steps {
    reports: Vec<StepReport>,
}

impl Steps {
    fn push(
        &mut self,
        name: &str,
        status: StepStatus,
        message: String,
        evidence: Vec<String>,
        t: Instant,
    ) {
        self.reports.push(StepReport {
            name: name.into(),
            status,
            message,
            evidence,
            elapsed_ms: t.elapsed().as_millis() as u64,
        });
    }
}

/// Roll one host back. Never panics on host data; every failure is a report.
pub async fn host(ctx: HostCtx, shared: Arc<Shared>) -> HostReport {
    let host = ctx.host.clone();
    ctx.stage("connecting");
    let session = match crate::cmd::connect_or_report(&shared.connector, &host).await {
        Ok(s) => s,
        Err(report) => return report,
    };
    let mut steps = Steps {
        reports: Vec::new(),
    };
    let mut data = json!({ "run_id": ctx.run_id(), "check": shared.opts.check });
    let outcome = run(&ctx, &host, &session, &shared, &mut steps, &mut data).await;
    session.close().await;
    let mut report = HostReport::from_steps(&host, steps.reports);
    if let Err((step, e)) = outcome {
        let msg = crate::harden::run::one_line(&e);
        if !report.steps.iter().any(|s| s.status == StepStatus::Failed) {
            report.steps.push(StepReport {
                name: step.into(),
                status: StepStatus::Failed,
                message: msg.clone(),
                evidence: vec![],
                elapsed_ms: 0,
            });
        }
        report.error = Some(format!("{step}: {msg}"));
        report.status = crate::report::HostStatus::Failed;
    }
    report.with_data(data)
}

type Outcome = Result<(), (&'static str, RollbackError)>;

async fn run(
    ctx: &HostCtx,
    host: &Host,
    session: &Session,
    shared: &Shared,
    steps: &mut Steps,
    data: &mut serde_json::Value,
) -> Outcome {
    let opts = &shared.opts;
    // The run's record, and which run.
    ctx.stage("reading the run records");
    let t = Instant::now();
    let out = session
        .run_for(
            "run records",
            &records_script(),
            b"",
            Duration::from_secs(30),
        )
        .await
        .map_err(|e| ("record", RollbackError::Step(Box::new(e.into()))))?;
    let records = parse_records(&out.stdout_text()).map_err(|e| ("record", e))?;
    let rec = choose(&records, opts.run.as_deref()).map_err(|e| ("record", e))?;
    data["undone_run"] = json!(rec.run_id);
    steps.push(
        "record",
        StepStatus::Ok,
        format!(
            "undoing run {} ({} files recorded)",
            rec.run_id,
            rec.files.len()
        ),
        vec![],
        t,
    );

    // The facts harden reads (the config as it is now), and what each file holds.
    ctx.stage("reading the files of that run");
    let t = Instant::now();
    // Everything any step reads: the config as it is now, the listeners, ufw's state.
    let facts = crate::harden::run::gather(session, host, &|_| true)
        .await
        .map_err(|e| {
            (
                "plan",
                RollbackError::Refused(crate::harden::run::one_line(&e)),
            )
        })?;
    let out = session
        .run_for(
            "the files of the run, now and in its backup",
            &state_script(&rec.run_id, &rec.files),
            b"",
            Duration::from_secs(60),
        )
        .await
        .map_err(|e| ("plan", RollbackError::Step(Box::new(e.into()))))?;
    if !out.success() {
        return Err((
            "plan",
            RollbackError::Records(format!("reading the files exited {}", out.status)),
        ));
    }
    let states = parse_states(&out.stdout_text(), &rec.files).map_err(|e| ("plan", e))?;
    let plan = plan(rec, &states, opts.force).map_err(|e| ("plan", e))?;
    let key = session.host_key().to_string();
    let vault_secrets: Vec<Secret> = {
        let v = shared.vault.lock().await;
        [CredKind::EslPassword, CredKind::SipPassword]
            .iter()
            .flat_map(|k| v.candidates(&host.name, &key, *k))
            .collect()
    };
    let mut evidence = Vec::new();
    if !plan.conflicts.is_empty() {
        evidence.push(format!(
            "warning: --force: restoring files changed since the run: {}",
            plan.conflicts.join(", ")
        ));
    }
    if opts.diff {
        evidence.extend(diffs(
            &states,
            &plan,
            &secrets_of(&facts, &states, &vault_secrets),
        ));
    }
    if rec.ufw.is_none()
        && crate::model::ufw::UfwState::from_facts(&facts).active
        && !plan.changes.is_empty()
    {
        evidence.insert(
            0,
            "warning: ufw stays as it is: rollback does not remove firewall rules (`ufw status \
             numbered` lists them, `ufw delete N` removes one)"
                .to_string(),
        );
    }
    let needs = reload_needs(&facts, &plan);
    let ufw_undo = rec.ufw.as_ref().is_some_and(UfwRecord::any);
    if plan.touched.is_empty() && !ufw_undo {
        steps.push(
            "restore",
            StepStatus::Ok,
            format!("nothing to restore: {}", summary(&plan, opts.check)),
            evidence,
            t,
        );
        return Ok(());
    }
    if opts.check {
        steps.push(
            "restore",
            StepStatus::Changed,
            summary(&plan, true),
            evidence,
            t,
        );
        if let Some(u) = rec.ufw.as_ref().filter(|u| u.any()) {
            steps.push(
                "firewall",
                StepStatus::Changed,
                u.summary(true),
                u.warnings(),
                Instant::now(),
            );
        }
        if needs.any() {
            steps.push(
                reload::NAME,
                StepStatus::Changed,
                "would reload FreeSWITCH".into(),
                vec![],
                Instant::now(),
            );
        }
        return Ok(());
    }

    // FreeSWITCH's Event Socket as it runs now: proven FreeSWITCH's, with its live password.
    let candidates = {
        let v = shared.vault.lock().await;
        v.candidates(&host.name, &key, CredKind::EslPassword)
    };
    let pre = preflight::run(session, &facts, &candidates, true, false)
        .await
        .map_err(|e| ("preflight", RollbackError::Step(Box::new(e))))?;

    // The files, all or nothing.
    ctx.stage("restoring the files");
    let t = Instant::now();
    if plan.touched.is_empty() {
        steps.push(
            "restore",
            StepStatus::Ok,
            "no file to restore".into(),
            evidence,
            t,
        );
    } else if plan.changes.is_empty() {
        steps.push(
            "restore",
            StepStatus::Ok,
            "the files are already as before the run (an earlier rollback was cut short): \
             finishing it"
                .into(),
            evidence,
            t,
        );
    } else {
        write_files(session, &plan)
            .await
            .map_err(|e| ("restore", e))?;
        steps.push(
            "restore",
            StepStatus::Changed,
            summary(&plan, false),
            evidence,
            t,
        );
    }
    finish(
        ctx, host, session, shared, &facts, &pre, rec, &plan, &states, &needs, steps,
    )
    .await
}

/// Restore and remove the plan's files in one hostfs batch.
async fn write_files(session: &Session, plan: &Plan) -> Result<(), RollbackError> {
    let ops: Vec<hostfs::Op<'_>> = plan
        .changes
        .iter()
        .map(|c| match c {
            Change::Restore { path, file } => hostfs::Op::Write {
                path,
                content: &file.content,
                user: &file.user,
                group: &file.group,
                mode: file.mode,
            },
            Change::Remove { path } => hostfs::Op::Remove { path },
        })
        .collect();
    hostfs::apply(session, &ops)
        .await
        .map(|_| ())
        .map_err(|source| RollbackError::HostFs {
            what: "restoring the files (nothing was changed)".into(),
            source: Box::new(source),
        })
}

/// After the files: FreeSWITCH, fail2ban and the vault follow them, and the run is marked
/// undone.
#[allow(clippy::too_many_arguments)]
async fn finish(
    ctx: &HostCtx,
    host: &Host,
    session: &Session,
    shared: &Shared,
    facts: &HostFacts,
    pre: &preflight::Preflight,
    rec: &RunRecord,
    plan: &Plan,
    states: &[FileState],
    needs: &reload::Needs,
    steps: &mut Steps,
) -> Outcome {
    let key = session.host_key().to_string();
    // FreeSWITCH takes them; a failure puts the files back as they were before the rollback.
    if needs.any() {
        ctx.stage("reloading FreeSWITCH over the Event Socket");
        let t = Instant::now();
        let new_es = match restored_esl(facts, plan) {
            Some(Ok(es)) => es,
            Some(Err(e)) => {
                undo(session, states, plan).await;
                return Err(("reload", RollbackError::Step(Box::new(StepError::Model(e)))));
            }
            None => pre.esl.clone(),
        };
        match (&pre.live_password, pre.target.is_some()) {
            (Some(live), true) => {
                // What FreeSWITCH runs now is where preflight proved its listener (the file
                // may already say otherwise after a cut rollback).
                let mut old = pre.esl.clone();
                if let Some(t) = &pre.target {
                    old.listen_ip = t.address.clone();
                    old.listen_port = t.port;
                }
                let stage = |s: &str| ctx.stage(s);
                match reload::apply(session, needs, &old, live, &new_es, &stage).await {
                    Ok(ev) => steps.push(
                        reload::NAME,
                        StepStatus::Changed,
                        "FreeSWITCH reloaded".into(),
                        ev,
                        t,
                    ),
                    Err(e) => {
                        let put_back = undo(session, states, plan).await;
                        steps.push(
                            reload::NAME,
                            StepStatus::Failed,
                            format!("{}; {put_back}", crate::harden::run::one_line(&e)),
                            vec![],
                            t,
                        );
                        return Err(("reload", RollbackError::Step(Box::new(e))));
                    }
                }
            }
            _ => steps.push(
                reload::NAME,
                StepStatus::Skipped,
                "FreeSWITCH is not running: it reads the restored files when it starts".into(),
                vec![],
                t,
            ),
        }
    }

    // fail2ban reads its files only when it (re)starts.
    if plan
        .touched
        .iter()
        .any(|(p, _)| p.starts_with("/etc/fail2ban/"))
    {
        let t = Instant::now();
        let out = session
            .run_for(
                "restarting fail2ban",
                "systemctl try-restart fail2ban",
                b"",
                Duration::from_secs(60),
            )
            .await;
        let (status, msg) = match out {
            Ok(o) if o.success() => (
                StepStatus::Changed,
                "restarted fail2ban (if it was running)".to_string(),
            ),
            Ok(o) => (
                StepStatus::Failed,
                format!(
                    "systemctl try-restart fail2ban exited {}: {}",
                    o.status,
                    o.stderr_text().trim()
                ),
            ),
            Err(e) => (StepStatus::Failed, e.to_string()),
        };
        steps.push("fail2ban", status, msg, vec![], t);
    }

    // ufw as the run found it.
    if let Some(u) = rec.ufw.as_ref().filter(|u| u.any()) {
        ctx.stage("putting ufw back");
        let t = Instant::now();
        match undo_firewall(session, shared, host, u).await {
            Ok(msg) => steps.push("firewall", StepStatus::Changed, msg, u.warnings(), t),
            Err(e) => {
                steps.push("firewall", StepStatus::Failed, e.clone(), u.warnings(), t);
                return Err(("firewall", RollbackError::Refused(e)));
            }
        }
    }

    // The vault follows the host: the restored passwords are active, the undone ones previous.
    let t = Instant::now();
    let mut restored = Vec::new();
    {
        let mut v = shared.vault.lock().await;
        if let Some(Ok(es)) = restored_esl(facts, plan) {
            v.confirm(
                &host.name,
                &key,
                CredKind::EslPassword,
                &es.password,
                ctx.run_id(),
            )
            .map_err(|e| ("vault", RollbackError::Vault(e)))?;
            restored.push(CredKind::EslPassword.as_str());
        }
        if let Some(sip) = restored_sip(facts, plan) {
            v.confirm(&host.name, &key, CredKind::SipPassword, &sip, ctx.run_id())
                .map_err(|e| ("vault", RollbackError::Vault(e)))?;
            restored.push(CredKind::SipPassword.as_str());
        }
    }
    // Directory users: what the restored files set is what the vault holds as active; a user
    // back on the shared password (or without a PIN of its own) keeps its own only as previous.
    {
        let conf_dir = facts.files.conf_dir.clone().unwrap_or_default();
        let dir = format!("{conf_dir}/directory/");
        let mut v = shared.vault.lock().await;
        for (path, found) in &plan.touched {
            let (true, Found::File(file)) = (!conf_dir.is_empty() && path.starts_with(&dir), found)
            else {
                continue;
            };
            for (user, password, pin) in restored_users(&String::from_utf8_lossy(&file.content)) {
                for (kind, value) in [
                    (crate::vault::UserCredKind::SipPassword, password),
                    (crate::vault::UserCredKind::VmPassword, pin),
                ] {
                    // Only credentials the vault holds for this user follow (a stock user's
                    // own PIN is not news to anyone).
                    let known = v
                        .entry(&host.name)
                        .is_some_and(|e| e.user_credential(&user, kind).is_some());
                    if !known {
                        continue;
                    }
                    let done = match value {
                        Some(val) => v.confirm_user(
                            &host.name,
                            &key,
                            &user,
                            kind,
                            &Secret::new(val),
                            ctx.run_id(),
                        ),
                        None => v.retire_user(&host.name, &user, kind),
                    };
                    done.map_err(|e| ("vault", RollbackError::Vault(e)))?;
                }
            }
        }
    }
    if !restored.is_empty() {
        steps.push(
            "vault",
            StepStatus::Changed,
            format!(
                "the restored {} are the vault's active passwords again (the undone ones kept as previous)",
                restored.join(" and ")
            ),
            vec![],
            t,
        );
    }

    // Mark the run undone, so a second rollback refuses instead of reaching further back.
    let mark = format!(
        "printf '%s\\n' {} > {}/{}",
        sh_quote(ctx.run_id()),
        sh_quote(&backup::dir(&rec.run_id)),
        backup::ROLLED_BACK
    );
    let _ = session
        .run_for(
            "marking the run rolled back",
            &mark,
            b"",
            Duration::from_secs(30),
        )
        .await;
    Ok(())
}

impl UfwRecord {
    /// Whether undoing it changes anything at all.
    fn any(&self) -> bool {
        !self.added.is_empty()
            || !self.was_active
            || self.incoming.is_some()
            || self.outgoing.is_some()
    }

    /// The script that puts ufw back: the old default policies, the run's rules deleted
    /// (already gone is fine), ufw disabled when the run had enabled it.
    fn undo_script(&self) -> String {
        let mut s = String::from(
            "set -e\nexport LC_ALL=C\ncommand -v ufw >/dev/null 2>&1 || { echo 'ufw is not installed' >&2; exit 3; }\n",
        );
        if let Some(p) = &self.incoming {
            s.push_str(&format!("ufw default {p} incoming >/dev/null\n"));
        }
        if let Some(p) = &self.outgoing {
            s.push_str(&format!("ufw default {p} outgoing >/dev/null\n"));
        }
        for a in &self.added {
            s.push_str(&format!("ufw delete {a} >/dev/null || true\n"));
        }
        if !self.was_active {
            s.push_str("ufw --force disable >/dev/null\n");
        }
        s
    }

    /// The report's line.
    fn summary(&self, check: bool) -> String {
        let w = |done: &str, would: &str| {
            if check {
                would.to_string()
            } else {
                done.to_string()
            }
        };
        let mut parts = Vec::new();
        if !self.added.is_empty() {
            parts.push(format!(
                "{} the {} ufw rule{} the run added",
                w("deleted", "would delete"),
                self.added.len(),
                if self.added.len() == 1 { "" } else { "s" }
            ));
        }
        for (dir, p) in [("incoming", &self.incoming), ("outgoing", &self.outgoing)] {
            if let Some(p) = p {
                parts.push(format!(
                    "{} the default {dir} policy {p}",
                    w("set", "would set")
                ));
            }
        }
        if !self.was_active {
            parts.push(format!(
                "{} ufw (the run had enabled it)",
                w("disabled", "would disable")
            ));
        }
        parts.join("; ")
    }

    fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.reset {
            w.push(
                "warning: the run reset ufw (--firewall-reset): the rules it dropped cannot be put back"
                    .to_string(),
            );
        }
        if self.deleted > 0 {
            w.push(format!(
                "warning: the run deleted {} stale fsfleet rule(s): they are not put back",
                self.deleted
            ));
        }
        w
    }
}

/// Put ufw back as the run found it. While ufw stays on, a NEW SSH connection must work
/// afterwards, else the run's rules are added again (harden's lock-out rule, the other way).
async fn undo_firewall(
    session: &Session,
    shared: &Shared,
    host: &Host,
    u: &UfwRecord,
) -> Result<String, String> {
    let out = session
        .run_for(
            "putting ufw back",
            &u.undo_script(),
            b"",
            Duration::from_secs(60),
        )
        .await
        .map_err(|e| e.to_string())?;
    if !out.success() {
        return Err(format!(
            "ufw exited {}: {}",
            out.status,
            out.stderr_text().trim()
        ));
    }
    if u.was_active && !u.added.is_empty() {
        let proof = tokio::time::timeout(
            Duration::from_secs(20),
            crate::cmd::connect(&shared.connector, host),
        )
        .await;
        match proof {
            Ok(Ok(s)) => s.close().await,
            _ => {
                let again: String = u.added.iter().map(|a| format!("ufw {a}\n")).collect();
                let _ = session
                    .run_for(
                        "adding the run's ufw rules again",
                        &again,
                        b"",
                        Duration::from_secs(60),
                    )
                    .await;
                return Err(
                    "a new SSH connection failed once the run's ufw rules were deleted: they were \
                     added again; check `ufw status numbered` by hand"
                        .into(),
                );
            }
        }
        return Ok(format!("{}; a new SSH connection works", u.summary(false)));
    }
    Ok(u.summary(false))
}

/// Put back what the files held before the rollback; the line says how that went.
async fn undo(session: &Session, states: &[FileState], plan: &Plan) -> String {
    let mut ops = Vec::new();
    for c in &plan.changes {
        let Some(s) = states.iter().find(|s| s.path == c.path()) else {
            continue;
        };
        match &s.now {
            Found::File(f) => ops.push(hostfs::Op::Write {
                path: &s.path,
                content: &f.content,
                user: &f.user,
                group: &f.group,
                mode: f.mode & 0o777,
            }),
            _ => ops.push(hostfs::Op::Remove { path: &s.path }),
        }
    }
    match hostfs::apply(session, &ops).await {
        Ok(_) => "the files were put back as they were before the rollback".into(),
        Err(e) => format!("putting the files back failed too: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(c: char) -> String {
        std::iter::repeat_n(c, 64).collect()
    }

    fn records_text() -> String {
        format!(
            "== run 20261130T010000Z-bbbb\nfsfleet-run 1\n1\t/etc/freeswitch/vars.xml\n0\t/etc/fs_cli.conf\n\
             == after\n{}\t/etc/freeswitch/vars.xml\n{}\t/etc/fs_cli.conf\n\
             == run 20261129T010000Z-aaaa\nfsfleet-run 1\n1\t/etc/freeswitch/vars.xml\n== rolled-back\n20261129T020000Z-cccc\n\
             == run not-ours\nwhatever\n",
            digest('1'),
            digest('2')
        )
    }

    /// Rolling back a run that turned TLS on (or changed its certificate) restarts the profiles
    /// that serve TLS now: a rescan would leave the port bound with the old certificate. A
    /// vars.xml restore that leaves the TLS settings alone only rescans.
    #[test]
    fn restoring_tls_restarts_the_profiles_that_serve_it() {
        use crate::audit::evidence::testing::{edit, evidence, stock_files};
        let stock = stock_files();
        let stock_vars = stock
            .iter()
            .find(|(r, _)| r == "vars.xml")
            .unwrap()
            .1
            .clone();
        let mut files = stock.clone();
        edit(&mut files, "vars.xml", |t| {
            t.replace("internal_ssl_enable=false", "internal_ssl_enable=true")
        });
        let facts = evidence(&files, &[], Default::default()).facts;
        let conf = facts.files.conf_dir.clone().unwrap();
        let plan = |touched: Vec<(String, Found)>| Plan {
            touched,
            ..Default::default()
        };
        let vars_back = plan(vec![(
            format!("{conf}/vars.xml"),
            Found::File(file('0', &stock_vars)),
        )]);
        let n = reload_needs(&facts, &vars_back);
        assert!(n.reloadxml);
        // internal-ipv6 serves TLS by the same variable.
        assert_eq!(n.restart, ["internal-ipv6", "internal"]);
        assert!(
            !n.rescan.contains(&"internal".to_string()),
            "{:?}",
            n.rescan
        );
        // The certificate files alone (TLS stays on): the same restart.
        let cert_back = plan(vec![(format!("{conf}/tls/agent.pem"), Found::Absent)]);
        assert_eq!(
            reload_needs(&facts, &cert_back).restart,
            ["internal-ipv6", "internal"]
        );
        // vars.xml with the same TLS settings (another variable restored): no restart.
        let same_tls = files
            .iter()
            .find(|(r, _)| r == "vars.xml")
            .unwrap()
            .1
            .replace(
                "default_password=1234",
                "default_password=Other123456789012",
            );
        let other = plan(vec![(
            format!("{conf}/vars.xml"),
            Found::File(file('1', &same_tls)),
        )]);
        assert!(reload_needs(&facts, &other).restart.is_empty());
    }

    #[test]
    fn records_are_read_and_the_newest_not_undone_is_chosen() {
        let recs = parse_records(&records_text()).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].run_id, "20261130T010000Z-bbbb");
        assert_eq!(
            recs[0].files,
            [
                ("/etc/freeswitch/vars.xml".to_string(), true),
                ("/etc/fs_cli.conf".to_string(), false)
            ]
        );
        assert_eq!(
            recs[1].rolled_back.as_deref(),
            Some("20261129T020000Z-cccc")
        );
        assert_eq!(choose(&recs, None).unwrap().run_id, "20261130T010000Z-bbbb");
        let e = choose(&recs, Some("20261129T010000Z-aaaa")).unwrap_err();
        assert!(e.to_string().contains("already rolled back"), "{e}");
        let e = choose(&recs, Some("20250101T000000Z-0000")).unwrap_err();
        assert!(e.to_string().contains("no record of run"), "{e}");
        assert!(
            choose(&[], None)
                .unwrap_err()
                .to_string()
                .contains("nothing to roll back")
        );
    }

    #[test]
    fn hostile_records_are_refused_not_followed() {
        for bad in [
            "== run 20261130T010000Z-bbbb\nfsfleet-run 1\n1\trelative/path\n",
            "== run 20261130T010000Z-bbbb\nfsfleet-run 1\n1\t/etc/../shadow\n",
            "== run 20261130T010000Z-bbbb\nfsfleet-run 1\n2\t/etc/x\n",
            "== run 20261130T010000Z-bbbb\nfsfleet-run 9\n",
            "== run 20261130T010000Z-bbbb\nfsfleet-run 1\n1\t/etc/x\n== after\nnot-a-digest\t/etc/x\n",
        ] {
            assert!(parse_records(bad).is_err(), "{bad:?}");
        }
        assert!(!valid_run_id("../../etc"));
        assert!(!valid_run_id("20261130T010000Z-bbbb;rm"));
        assert!(valid_run_id("20261130T010000Z-0a9f"));
    }

    fn file(c: char, content: &str) -> HostFile {
        HostFile {
            digest: digest(c),
            user: "freeswitch".into(),
            group: "freeswitch".into(),
            mode: 0o640,
            content: content.as_bytes().to_vec(),
        }
    }

    fn rec(after: Option<Vec<(&str, Option<char>)>>) -> RunRecord {
        RunRecord {
            run_id: "20261130T010000Z-bbbb".into(),
            files: vec![
                ("/c/vars.xml".into(), true),
                ("/etc/fs_cli.conf".into(), false),
            ],
            after: after.map(|a| {
                a.into_iter()
                    .map(|(p, d)| (p.to_string(), d.map(digest)))
                    .collect()
            }),
            rolled_back: None,
            ufw: None,
        }
    }

    fn states(vars_now: char, cli_now: Option<char>) -> Vec<FileState> {
        vec![
            FileState {
                path: "/c/vars.xml".into(),
                existed: true,
                now: Found::File(file(vars_now, "new")),
                copy: Found::File(file('0', "old")),
            },
            FileState {
                path: "/etc/fs_cli.conf".into(),
                existed: false,
                now: cli_now.map_or(Found::Absent, |c| Found::File(file(c, "cli"))),
                copy: Found::Absent,
            },
        ]
    }

    #[test]
    fn files_go_back_and_created_ones_go_away() {
        let r = rec(Some(vec![
            ("/c/vars.xml", Some('1')),
            ("/etc/fs_cli.conf", Some('2')),
        ]));
        let p = plan(&r, &states('1', Some('2')), false).unwrap();
        assert_eq!(
            format!("{:?}", p.changes),
            "[Restore(/c/vars.xml), Remove(/etc/fs_cli.conf)]"
        );
        match &p.changes[0] {
            Change::Restore { file, .. } => assert_eq!(file.content, b"old"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            summary(&p, false),
            "restored 1 file byte for byte with their owner and mode; removed 1 file the run created (/c/vars.xml, /etc/fs_cli.conf)"
        );
    }

    #[test]
    fn a_file_edited_since_the_run_refuses_unless_forced() {
        let r = rec(Some(vec![
            ("/c/vars.xml", Some('1')),
            ("/etc/fs_cli.conf", Some('2')),
        ]));
        let e = plan(&r, &states('9', Some('2')), false).unwrap_err();
        assert!(
            e.to_string()
                .contains("changed since run 20261130T010000Z-bbbb by someone else: /c/vars.xml"),
            "{e}"
        );
        let p = plan(&r, &states('9', Some('2')), true).unwrap();
        assert_eq!(p.conflicts, ["/c/vars.xml"]);
        assert_eq!(p.changes.len(), 2);
        // A run that did not record what it left needs --force.
        let e = plan(&rec(None), &states('1', Some('2')), false).unwrap_err();
        assert!(e.to_string().contains("did not record what it left"), "{e}");
    }

    #[test]
    fn a_host_already_as_before_changes_nothing() {
        let r = rec(Some(vec![
            ("/c/vars.xml", Some('0')),
            ("/etc/fs_cli.conf", None),
        ]));
        let mut s = states('0', None);
        s[0].now = s[0].copy.clone();
        let p = plan(&r, &s, false).unwrap();
        assert!(p.changes.is_empty());
        assert_eq!(p.unchanged, 2);
    }

    #[test]
    fn a_rollback_cut_after_its_writes_is_finished_not_refused() {
        // The run changed vars.xml ('1') and created fs_cli.conf ('2'); a first rollback wrote
        // the old files back and was cut before FreeSWITCH reloaded.
        let r = rec(Some(vec![
            ("/c/vars.xml", Some('1')),
            ("/etc/fs_cli.conf", Some('2')),
        ]));
        let mut s = states('0', None);
        s[0].now = s[0].copy.clone();
        let p = plan(&r, &s, false).unwrap();
        assert!(p.changes.is_empty() && p.conflicts.is_empty());
        let touched: Vec<&str> = p.touched.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(touched, ["/c/vars.xml", "/etc/fs_cli.conf"]);
    }

    #[test]
    fn the_firewall_record_is_read_strictly_and_undone_in_order() {
        let text = "== run 20261130T010000Z-bbbb\nfsfleet-run 1\n== ufw\nwas-active\t0\nincoming\tallow\noutgoing\tallow\nreset\t0\n\
                    added\tallow proto tcp to any port 22 comment 'fsfleet ssh'\n\
                    added\tallow proto udp from 192.0.2.0/24 to any port 5060 comment 'fsfleet sip'\n\
                    deleted\tallow proto udp to any port 5060 comment 'fsfleet sip'\n";
        let recs = parse_records(text).unwrap();
        let u = recs[0].ufw.clone().unwrap();
        assert_eq!(u.added.len(), 2);
        assert_eq!(u.deleted, 1);
        assert_eq!(
            u.undo_script().lines().skip(3).collect::<Vec<_>>(),
            [
                "ufw default allow incoming >/dev/null",
                "ufw default allow outgoing >/dev/null",
                "ufw delete allow proto tcp to any port 22 comment 'fsfleet ssh' >/dev/null || true",
                "ufw delete allow proto udp from 192.0.2.0/24 to any port 5060 comment 'fsfleet sip' >/dev/null || true",
                "ufw --force disable >/dev/null",
            ]
        );
        assert_eq!(
            u.summary(true),
            "would delete the 2 ufw rules the run added; would set the default incoming policy \
             allow; would set the default outgoing policy allow; would disable ufw (the run had \
             enabled it)"
        );
        // A record line that would be anything but a rule of fsfleet's is refused, not run.
        for bad in [
            "added\tallow proto tcp to any port 22 comment 'fsfleet ssh'; reboot",
            "added\tallow proto tcp to any port 22 comment 'x' ",
            "added\tdeny proto tcp to any port 22 comment 'fsfleet ssh'",
            "added\tallow proto tcp from $(id) to any port 22 comment 'fsfleet ssh'",
            "whatever\t1",
        ] {
            let t = format!("== run 20261130T010000Z-bbbb\nfsfleet-run 1\n== ufw\n{bad}\n");
            assert!(parse_records(&t).is_err(), "{bad}");
        }
        // A policy the facts could not read is not put back.
        let t = "== run 20261130T010000Z-bbbb\nfsfleet-run 1\n== ufw\nwas-active\t1\nincoming\tunknown\n";
        let u = parse_records(t).unwrap()[0].ufw.clone().unwrap();
        assert_eq!(u.incoming, None);
        assert!(!u.any());
    }

    #[test]
    fn every_credential_param_is_masked_in_a_rollback_diff() {
        let old = "<user id=\"1000\">\n<params>\n<param name=\"password\" value=\"$${default_password}\"/>\n\
                   <param name=\"vm-password\" value=\"1000\"/>\n</params>\n</user>\n";
        let new = "<user id=\"1000\">\n<params>\n<param name=\"password\" value=\"Zz9own1000pass\"/>\n\
                   <param name=\"vm-password\" value=\"482913\"/>\n</params>\n</user>\n";
        let mut secrets = param_secrets(old);
        secrets.extend(param_secrets(new));
        let refs: Vec<&Secret> = secrets.iter().collect();
        let d = diff::masked_diff("/c/directory/default/1000.xml", new, old, &refs);
        assert!(!d.is_empty());
        for leak in ["482913", "Zz9own1000pass", "\"1000\"/>"] {
            assert!(!d.contains(leak), "{leak} in {d}");
        }
        assert!(d.contains("$${default_password}"), "{d}");
    }

    #[test]
    fn restored_directory_users_say_what_they_log_in_with() {
        let text = "<include>\n<user id=\"1000\">\n<params>\n\
                    <param name=\"password\" value=\"$${default_password}\"/>\n\
                    <param name=\"vm-password\" value=\"1000\"/>\n</params>\n</user>\n\
                    <user id=\"1001\">\n<params>\n<param name=\"password\" value=\"Own1001pw\"/>\n\
                    </params>\n</user>\n</include>\n";
        assert_eq!(
            restored_users(text),
            [
                ("1000".to_string(), None, Some("1000".to_string())),
                ("1001".to_string(), Some("Own1001pw".to_string()), None),
            ]
        );
    }

    #[test]
    fn file_states_are_parsed_strictly() {
        let files = vec![("/c/vars.xml".to_string(), true)];
        let ok = "freeswitch:freeswitch:4640\t3c782f3e\nother\n";
        let s = parse_states(ok, &files).unwrap();
        match &s[0].now {
            Found::File(f) => {
                assert_eq!(f.content, b"<x/>");
                assert_eq!(f.mode, 0o4640);
                // The digest is the controller's own, of the bytes read (sha256sum's form).
                assert_eq!(
                    f.digest,
                    "2a31f44da4bd7decbbd3ddfd1a37ae04d02ec665e2c2688816ccc65631586ed1"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(s[0].copy, Found::Other);
        assert_eq!(
            parse_states("-\nbig\n", &files).unwrap()[0].now,
            Found::Absent
        );
        for bad in [
            "free switch:x:640\t00\n-\n",
            "x:x:99999\t00\n-\n",
            "x:x:640\tzz\n-\n",
            "x:x:640\n-\n",
            "-\n",
        ] {
            assert!(parse_states(bad, &files).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_restored_file_never_gets_a_set_id_bit_back() {
        let r = rec(Some(vec![
            ("/c/vars.xml", Some('1')),
            ("/etc/fs_cli.conf", None),
        ]));
        let mut st = states('1', None);
        if let Found::File(c) = &mut st[0].copy {
            c.mode = 0o6755;
        }
        let p = plan(&r, &st, false).unwrap();
        match &p.changes[0] {
            Change::Restore { file, .. } => assert_eq!(file.mode, 0o755),
            other => panic!("{other:?}"),
        }
    }
}
