//! `--limit`: which hosts of the inventory a run touches.
//!
//! A comma-separated list of patterns: host names, group names, globs on host names (`*`, `?`,
//! `[abc]`, `[a-z]`, `[!abc]`), `!PATTERN` to exclude, `@FILE` for a list of patterns, one per
//! line (`#` comments), `all` for every host (no host or group may be named so). The result is the union of the positive patterns (every host when there
//! are only exclusions) minus the exclusions, in inventory order. A pattern that matches nothing
//! is an error: a typo must never silently run on zero hosts, or on the wrong ones.

use std::path::{Path, PathBuf};

use super::error::InventoryError;
use super::load::closest;
use super::{Host, Inventory};

/// A parsed `--limit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    spec: String,
    items: Vec<Item>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Pattern {
        pattern: String,
        exclude: bool,
        origin: Option<(PathBuf, usize)>,
    },
    /// An `@FILE` is one positive item: it must select at least one host.
    File {
        path: PathBuf,
        patterns: Vec<(String, usize)>,
    },
}

impl Limit {
    /// Parses the `--limit` value. `@FILE` is read now: relative to the current directory, and if
    /// it is not there, relative to `base_dir` (the inventory's directory), so that
    /// `--limit @.fsfleet/retry` works from anywhere.
    pub fn parse(spec: &str, base_dir: &Path) -> Result<Limit, InventoryError> {
        let mut items = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if let Some(file) = part.strip_prefix('@') {
                items.push(read_file(file, base_dir)?);
            } else if let Some(excluded) = part.strip_prefix('!') {
                if excluded.is_empty() {
                    return Err(InventoryError::LimitNoMatch {
                        pattern: part.to_string(),
                        origin: None,
                        suggestion: None,
                    });
                }
                items.push(Item::Pattern {
                    pattern: excluded.to_string(),
                    exclude: true,
                    origin: None,
                });
            } else {
                items.push(Item::Pattern {
                    pattern: part.to_string(),
                    exclude: false,
                    origin: None,
                });
            }
        }
        if items.is_empty() {
            return Err(InventoryError::LimitEmpty);
        }
        Ok(Limit {
            spec: spec.to_string(),
            items,
        })
    }

    /// The hosts to run on, in inventory order. Jump hosts are still looked up in the full
    /// inventory by the caller, so excluding a bastion does not break the hosts behind it.
    pub fn apply(&self, inv: &Inventory) -> Result<Vec<Host>, InventoryError> {
        let n = inv.hosts.len();
        let mut include = vec![false; n];
        let mut exclude = vec![false; n];
        let mut any_positive = false;
        for item in &self.items {
            match item {
                Item::Pattern {
                    pattern,
                    exclude: ex,
                    origin,
                } => {
                    let hits = select(inv, pattern);
                    if !hits.iter().any(|h| *h) {
                        return Err(no_match(inv, pattern, origin.clone()));
                    }
                    let target = if *ex { &mut exclude } else { &mut include };
                    any_positive |= !*ex;
                    merge(target, &hits);
                }
                Item::File { path, patterns } => {
                    any_positive = true;
                    if patterns.is_empty() {
                        return Err(InventoryError::LimitFileEmpty { path: path.clone() });
                    }
                    for (pattern, line) in patterns {
                        let hits = select(inv, pattern);
                        if !hits.iter().any(|h| *h) {
                            return Err(no_match(inv, pattern, Some((path.clone(), *line))));
                        }
                        merge(&mut include, &hits);
                    }
                }
            }
        }
        if !any_positive {
            include = vec![true; n];
        }
        let hosts: Vec<Host> = inv
            .hosts
            .iter()
            .zip(include.iter().zip(&exclude))
            .filter(|(_, (inc, exc))| **inc && !**exc)
            .map(|(h, _)| h.clone())
            .collect();
        if hosts.is_empty() {
            return Err(InventoryError::LimitNothingLeft {
                spec: self.spec.clone(),
            });
        }
        Ok(hosts)
    }
}

fn merge(target: &mut [bool], hits: &[bool]) {
    for (t, h) in target.iter_mut().zip(hits) {
        *t |= *h;
    }
}

/// Which hosts one pattern selects: exact host name, group name, or a glob on host names.
fn select(inv: &Inventory, pattern: &str) -> Vec<bool> {
    let is_glob = pattern.contains(['*', '?', '[']);
    inv.hosts
        .iter()
        .map(|h| {
            pattern == "all"
                || h.name == pattern
                || h.groups.iter().any(|g| g == pattern)
                || (is_glob && glob_match(pattern.as_bytes(), h.name.as_bytes()))
        })
        .collect()
}

fn no_match(inv: &Inventory, pattern: &str, origin: Option<(PathBuf, usize)>) -> InventoryError {
    let names = inv
        .hosts
        .iter()
        .map(|h| h.name.as_str())
        .chain(inv.groups.iter().map(String::as_str));
    let suggestion = closest(pattern, names).map(str::to_string);
    InventoryError::LimitNoMatch {
        pattern: pattern.to_string(),
        origin,
        suggestion,
    }
}

fn read_file(file: &str, base_dir: &Path) -> Result<Item, InventoryError> {
    let given = PathBuf::from(file);
    let mut tried = vec![given.clone()];
    if given.is_relative() {
        tried.push(base_dir.join(&given));
    }
    let mut last_err = None;
    for path in &tried {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let patterns = text
                    .lines()
                    .enumerate()
                    .map(|(i, l)| (l.split('#').next().unwrap_or("").trim().to_string(), i + 1))
                    .filter(|(l, _)| !l.is_empty())
                    .collect();
                return Ok(Item::File {
                    path: path.clone(),
                    patterns,
                });
            }
            Err(e) => last_err = Some(e),
        }
    }
    let source = last_err.unwrap_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound));
    Err(InventoryError::LimitFile {
        spec: file.to_string(),
        tried,
        source,
    })
}

/// Shell-style glob: `*`, `?`, `[abc]`, `[a-z]`, `[!abc]`. An unclosed `[` is a literal.
pub(crate) fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        let step = match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
                continue;
            }
            Some(b'?') => Some(1),
            Some(b'[') => match class_match(&pattern[p..], text[t]) {
                Some((true, len)) => Some(len),
                Some((false, _)) => None,
                None => (text[t] == b'[').then_some(1),
            },
            Some(&c) => (c == text[t]).then_some(1),
            None => None,
        };
        match step {
            Some(len) => {
                p += len;
                t += 1;
            }
            None => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Matches `[...]` at the start of `pattern` against one byte: Some((matched, class length)),
/// or None when the class is not closed.
fn class_match(pattern: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(pattern.get(i), Some(b'!') | Some(b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let &lo = pattern.get(i)?;
        if lo == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if pattern.get(i + 1) == Some(&b'-') && pattern.get(i + 2).is_some_and(|&h| h != b']') {
            let hi = pattern[i + 2];
            matched |= lo <= c && c <= hi;
            i += 3;
        } else {
            matched |= lo == c;
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match(b"fs-*", b"fs-1"));
        assert!(glob_match(b"fs-?", b"fs-1"));
        assert!(!glob_match(b"fs-?", b"fs-10"));
        assert!(glob_match(b"fs-[12]", b"fs-2"));
        assert!(!glob_match(b"fs-[12]", b"fs-3"));
        assert!(glob_match(b"fs-[0-9]x", b"fs-7x"));
        assert!(glob_match(b"fs-[!0-9]", b"fs-a"));
        assert!(!glob_match(b"fs-[!0-9]", b"fs-5"));
        assert!(glob_match(b"*-db-*", b"eu-db-1"));
        assert!(glob_match(b"a[b", b"a[b"));
        assert!(!glob_match(b"*x", b"abc"));
    }
}
