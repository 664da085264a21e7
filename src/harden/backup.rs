//! Step `backup`: before anything changes, a tarball of the config tree plus a copy of every file
//! this run changes, in a root-only directory outside FreeSWITCH's own (old secrets must not stay
//! readable beside the configs). The last [`KEEP`] runs are kept.

use std::time::Duration;

use super::{StepCtx, StepError};
use crate::ssh::sh_quote;

pub const NAME: &str = "backup";
pub const ROOT: &str = "/var/backups/fsfleet";
pub const KEEP: usize = 5;

/// The backup directory of a run.
pub fn dir(run_id: &str) -> String {
    format!("{ROOT}/{run_id}")
}

/// Back up `conf_dir` and the files about to change; returns the directory and evidence.
pub async fn apply(
    ctx: &StepCtx<'_>,
    conf_dir: &str,
    files: &[String],
) -> Result<(String, Vec<String>), StepError> {
    let dir = dir(ctx.run_id);
    let copies = files
        .iter()
        .map(|f| sh_quote(f))
        .collect::<Vec<_>>()
        .join(" ");
    // Run ids start with a UTC timestamp, so a name sort is a time sort.
    let script = format!(
        "set -e\numask 077\nmkdir -p {root}\nchmod 700 {root}\nmkdir -p {d}/files\n\
         tar -C \"$(dirname {c})\" -czf {d}/conf.tar.gz \"$(basename {c})\"\n\
         for f in {copies}; do [ -e \"$f\" ] || continue; mkdir -p {d}/files\"$(dirname \"$f\")\"; cp -p \"$f\" {d}/files\"$f\"; done\n\
         ls -1 {root} | sort | head -n -{KEEP} | while read -r old; do rm -rf {root}/\"$old\"; done\n\
         du -sk {d} | cut -f1\n",
        root = sh_quote(ROOT),
        d = sh_quote(&dir),
        c = sh_quote(conf_dir),
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
