//! Step `backup`: before anything changes, a tarball of the config tree plus a copy of every file
//! this run changes, in a root-only directory outside FreeSWITCH's own (old secrets must not stay
//! readable beside the configs). The last [`KEEP`] runs are kept.

use std::time::Duration;

use super::{StepCtx, StepError};
use crate::ssh::sh_quote;

pub const NAME: &str = "backup";
pub const ROOT: &str = "/var/backups/fsfleet";
pub const KEEP: usize = 5;
/// The run record beside the copies: its first line, then `EXISTED<TAB>PATH` per file the run
/// may change (1: a copy is in `files/`; 0: the run creates it). `fsfleet rollback` reads it.
pub const MANIFEST: &str = "manifest";
pub const MANIFEST_HEAD: &str = "fsfleet-run 1";
/// `SHA256<TAB>PATH` of each manifest file as the run left it (`-`: absent): written when the
/// run ends, so rollback can tell a file changed since by someone else.
pub const AFTER: &str = "after";
/// Written by `fsfleet rollback` into the run it undid: the rollback's run id.
pub const ROLLED_BACK: &str = "rolled-back";

/// The backup directory of a run.
pub fn dir(run_id: &str) -> String {
    format!("{ROOT}/{run_id}")
}

/// Back up `conf_dir` and the files about to change; returns the directory and evidence.
/// A listed path that is a symbolic link is copied as the link (`cp -P`), never followed: a
/// local user's link to a root-only file must not become a readable copy that a rollback would
/// write back.
pub async fn apply(
    ctx: &StepCtx<'_>,
    conf_dir: &str,
    files: &[String],
) -> Result<(String, Vec<String>), StepError> {
    let dir = dir(ctx.run_id);
    // A path the run record cannot hold (a control character, a tab) is not backed up: the
    // write that would change it refuses it anyway.
    let copies = files
        .iter()
        .filter(|f| crate::hostfs::check_path(f).is_ok())
        .map(|f| sh_quote(f))
        .collect::<Vec<_>>()
        .join(" ");
    // Run ids start with a UTC timestamp, so a name sort is a time sort.
    let script = format!(
        "set -e\numask 077\nmkdir -p {root}\nchmod 700 {root}\nmkdir -p {d}/files\n\
         tar -C \"$(dirname {c})\" -czf {d}/conf.tar.gz \"$(basename {c})\"\n\
         printf '%s\\n' {head} > {d}/{MANIFEST}\n\
         for f in {copies}; do if [ -e \"$f\" ] || [ -L \"$f\" ]; then printf '1\\t%s\\n' \"$f\" >> {d}/{MANIFEST}; else printf '0\\t%s\\n' \"$f\" >> {d}/{MANIFEST}; continue; fi; mkdir -p {d}/files\"$(dirname \"$f\")\"; cp -P -p -- \"$f\" {d}/files\"$f\"; done\n\
         ls -1 {root} | sort | head -n -{KEEP} | while read -r old; do rm -rf {root}/\"$old\"; done\n\
         du -sk {d} | cut -f1\n",
        root = sh_quote(ROOT),
        d = sh_quote(&dir),
        c = sh_quote(conf_dir),
        head = sh_quote(MANIFEST_HEAD),
    );
    let out = ctx
        .run_checked("backup", &script, b"", Duration::from_secs(120))
        .await?;
    let kib = out.stdout_text().trim().to_string();
    Ok((
        dir.clone(),
        vec![format!(
            "{dir}: conf.tar.gz of {conf_dir} and {} changed files ({kib} KiB), root-only",
            files.len()
        )],
    ))
}

/// Record, in the run's backup, each manifest file's digest as the run leaves it. Best effort:
/// without it a rollback of this run needs `--force` (it cannot tell later hand edits).
pub async fn record_after(session: &crate::ssh::Session, run_id: &str) -> Result<(), StepError> {
    let d = sh_quote(&dir(run_id));
    let script = format!(
        "set -e\numask 077\ntab=$(printf '\\t')\n\
         tail -n +2 {d}/{MANIFEST} | while IFS=\"$tab\" read -r e p; do \
         if [ -f \"$p\" ] && [ ! -L \"$p\" ]; then s=$(sha256sum < \"$p\" | cut -c1-64); else s=-; fi; \
         printf '%s\\t%s\\n' \"$s\" \"$p\"; done > {d}/{AFTER}.tmp\n\
         mv {d}/{AFTER}.tmp {d}/{AFTER}\n"
    );
    let out = session
        .run_for(
            "recording the run's result",
            &script,
            b"",
            Duration::from_secs(30),
        )
        .await?;
    if out.success() {
        Ok(())
    } else {
        Err(StepError::Failed(format!(
            "recording the run's result in its backup failed (exit {}): {}",
            out.status,
            out.stderr_text().trim()
        )))
    }
}
