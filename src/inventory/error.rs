//! The one error type of the inventory: its Display is the message the operator reads.

use std::fmt;
use std::path::PathBuf;

use crate::ssh::config::SshConfigError;

/// Stop collecting after this many problems: past that the file is likely not an inventory.
pub(crate) const MAX_DIAGNOSTICS: usize = 50;

/// One problem at one place of the inventory file (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file the problem is in, when it is not the inventory file itself (an Ansible
    /// inventory's `group_vars/` and `host_vars/` files).
    pub file: Option<PathBuf>,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error(
        "cannot read inventory {} (check the path, or give the inventory as an argument or in $FSFLEET_INVENTORY)",
        path.display()
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },

    /// Every problem found in the file, one per line as `FILE:LINE:COL: message`.
    #[error("{}", render_invalid(path, diagnostics, *omitted))]
    Invalid {
        path: PathBuf,
        diagnostics: Vec<Diagnostic>,
        omitted: usize,
    },

    #[error(transparent)]
    SshConfig(#[from] SshConfigError),

    #[error("--limit is empty: give host names, group names or globs, separated by commas")]
    LimitEmpty,

    #[error("{}", render_no_match(pattern, origin.as_ref(), suggestion.as_deref()))]
    LimitNoMatch {
        pattern: String,
        /// `@FILE` and line the pattern came from.
        origin: Option<(PathBuf, usize)>,
        suggestion: Option<String>,
    },

    #[error(
        "cannot read --limit file @{} (looked in {}; give a path relative to the current directory or to the inventory)",
        spec,
        tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" and ")
    )]
    LimitFile {
        spec: String,
        tried: Vec<PathBuf>,
        source: std::io::Error,
    },

    #[error("--limit file {} lists no host: nothing to run (a retry file is empty when the last run had no failure)", path.display())]
    LimitFileEmpty { path: PathBuf },

    #[error("--limit {spec} selects no host: every matching host is also excluded")]
    LimitNothingLeft { spec: String },
}

impl InventoryError {
    /// The located problems, when the file itself is invalid.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            InventoryError::Invalid { diagnostics, .. } => diagnostics,
            _ => &[],
        }
    }
}

fn render_invalid(path: &std::path::Path, diagnostics: &[Diagnostic], omitted: usize) -> String {
    let file_of = |d: &Diagnostic| d.file.as_deref().unwrap_or(path).display().to_string();
    let mut out = String::new();
    for (i, d) in diagnostics.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!(
            "{}:{}:{}: {}",
            file_of(d),
            d.line,
            d.col,
            d.message
        ));
    }
    if omitted > 0
        && let Some(last) = diagnostics.last()
    {
        out.push_str(&format!(
            "\n{}:{}:{}: ... and {omitted} more problem(s); fix the ones above first",
            file_of(last),
            last.line,
            last.col
        ));
    }
    out
}

fn render_no_match(
    pattern: &str,
    origin: Option<&(PathBuf, usize)>,
    suggestion: Option<&str>,
) -> String {
    let mut out = match origin {
        Some((file, line)) => {
            format!(
                "{}:{line}: `{pattern}` matches no host or group of the inventory",
                file.display()
            )
        }
        None => format!("--limit pattern `{pattern}` matches no host or group of the inventory"),
    };
    match suggestion {
        Some(s) => out.push_str(&format!("; did you mean `{s}`?")),
        None => out.push_str("; `fsfleet inventory check` lists the hosts and groups"),
    }
    out
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.col, self.message)
    }
}
