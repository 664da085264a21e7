//! A reader for the OpenSSH client configuration (`~/.ssh/config`), limited to what fsfleet needs
//! to reach a host the way `ssh ALIAS` would: HostName, User, Port, IdentityFile and ProxyJump,
//! and HashKnownHosts for how a learned host key is recorded.
//!
//! Semantics follow ssh_config(5):
//! - `Host` lines take several patterns (`*`, `?`, `!negation`), matched case-insensitively; a
//!   block applies when one positive pattern matches and no negated one does.
//! - For each keyword the FIRST value obtained wins; `IdentityFile` accumulates instead.
//! - Keywords are case-insensitive; both `Key Value` and `Key=Value` work; values may be quoted.
//! - `Include` loads files (globs allowed in the file name part); relative paths are resolved
//!   against the directory of the top-level config file, which is `~/.ssh` for the default one.
//!   An `Include` inside a `Host` block only applies when that block matches.
//! - `Match` blocks are skipped entirely: their conditions (exec, user, localnetwork, ...) cannot be
//!   evaluated faithfully here, and a wrong guess is worse than ignoring them. Put settings that
//!   fsfleet must see under a `Host` block or in the inventory.
//! - Other keywords are ignored.

use std::path::{Path, PathBuf};

/// Includes nest at most this deep (OpenSSH uses 16 too); stops include loops.
const MAX_INCLUDE_DEPTH: usize = 16;

/// A malformed client configuration. Display names `FILE:LINE` and what to fix.
#[derive(Debug, thiserror::Error)]
pub enum SshConfigError {
    #[error("{}:{line}: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("cannot read ssh config {} (fix its permissions or remove the Include that names it)", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What the client configuration says about one alias. Empty fields mean "not set".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SshHostConfig {
    /// `HostName` with `%h` and `%%` expanded.
    pub hostname: Option<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    /// Every `IdentityFile` that applies, in order, `~` expanded (`none` entries dropped).
    pub identity_files: Vec<PathBuf>,
    /// The raw `ProxyJump` value (`none` means no jump and is reported as `None`).
    pub proxy_jump: Option<String>,
    /// `HashKnownHosts`: record learned host keys with the host name hashed.
    pub hash_known_hosts: Option<bool>,
}

/// A parsed client configuration, ready for [`SshConfig::lookup`].
#[derive(Debug, Clone, Default)]
pub struct SshConfig {
    /// The top-level file (for messages).
    pub path: Option<PathBuf>,
    items: Vec<Item>,
}

#[derive(Debug, Clone)]
enum Item {
    Host(Vec<HostPattern>),
    /// A `Match` line: everything until the next Host/Match is skipped.
    Match,
    Set {
        keyword: Keyword,
        value: String,
    },
    Include(Vec<Item>),
}

#[derive(Debug, Clone)]
struct HostPattern {
    negated: bool,
    /// lowercased
    glob: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keyword {
    HostName,
    User,
    Port,
    IdentityFile,
    ProxyJump,
    HashKnownHosts,
}

impl SshConfig {
    /// Reads `~/.ssh/config`; a missing file (or no home directory) is an empty configuration.
    pub fn load_default() -> Result<SshConfig, SshConfigError> {
        let Some(home) = dirs::home_dir() else {
            return Ok(SshConfig::default());
        };
        let path = home.join(".ssh").join("config");
        match std::fs::read_to_string(&path) {
            Ok(text) => SshConfig::parse(&text, &path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SshConfig::default()),
            Err(source) => Err(SshConfigError::Read { path, source }),
        }
    }

    /// Parses configuration text; `path` is used for messages and as the base of relative
    /// `Include`s (its directory).
    pub fn parse(text: &str, path: &Path) -> Result<SshConfig, SshConfigError> {
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let items = parse_items(text, path, &base, 0)?;
        Ok(SshConfig {
            path: Some(path.to_path_buf()),
            items,
        })
    }

    /// What `ssh ALIAS` would use for this alias.
    pub fn lookup(&self, alias: &str) -> SshHostConfig {
        let mut out = SshHostConfig::default();
        let mut raw_hostname = None;
        let mut active = true;
        walk(
            &self.items,
            &alias.to_ascii_lowercase(),
            &mut active,
            false,
            &mut |kw, value| match kw {
                Keyword::HostName => set_first(&mut raw_hostname, value),
                Keyword::User => set_first(&mut out.user, value),
                Keyword::Port => {
                    if out.port.is_none() {
                        // Validated at parse time; a failure here cannot happen but must not panic.
                        out.port = value.parse().ok();
                    }
                }
                Keyword::IdentityFile => {
                    if !value.eq_ignore_ascii_case("none") {
                        out.identity_files.push(expand_identity(value, alias));
                    }
                }
                Keyword::ProxyJump => set_first(&mut out.proxy_jump, value),
                Keyword::HashKnownHosts => {
                    if out.hash_known_hosts.is_none() {
                        // Validated at parse time.
                        out.hash_known_hosts = parse_flag(value);
                    }
                }
            },
        );
        out.hostname = raw_hostname.map(|h| expand_percent_h(&h, alias));
        if out
            .proxy_jump
            .as_deref()
            .is_some_and(|p| p.eq_ignore_ascii_case("none"))
        {
            out.proxy_jump = None;
        }
        out
    }
}

/// An ssh_config yes/no flag (OpenSSH also takes true/false).
fn parse_flag(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "yes" | "true" => Some(true),
        "no" | "false" => Some(false),
        _ => None,
    }
}

fn set_first(slot: &mut Option<String>, value: &str) {
    if slot.is_none() {
        *slot = Some(value.to_string());
    }
}

/// Evaluates items the way readconf.c does: `active` says whether the current block applies;
/// an Include restores the including block's state afterwards, and an Include inside a block
/// that does not apply can never apply.
fn walk(
    items: &[Item],
    alias: &str,
    active: &mut bool,
    never: bool,
    apply: &mut dyn FnMut(Keyword, &str),
) {
    for item in items {
        match item {
            Item::Host(patterns) => *active = !never && host_matches(patterns, alias),
            Item::Match => *active = false,
            Item::Set { keyword, value } => {
                if *active {
                    apply(*keyword, value);
                }
            }
            Item::Include(nested) => {
                let outer = *active;
                walk(nested, alias, active, never || !outer, apply);
                *active = outer;
            }
        }
    }
}

fn host_matches(patterns: &[HostPattern], alias: &str) -> bool {
    let mut matched = false;
    for p in patterns {
        if wildcard_match(p.glob.as_bytes(), alias.as_bytes()) {
            if p.negated {
                return false;
            }
            matched = true;
        }
    }
    matched
}

/// OpenSSH patterns: `*` any run, `?` one character, everything else literal.
fn wildcard_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

fn expand_percent_h(value: &str, alias: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('h') => out.push_str(alias),
            Some('%') => out.push('%'),
            // Other tokens are left as written.
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

fn expand_identity(value: &str, alias: &str) -> PathBuf {
    let expanded = expand_percent_h(value, alias);
    expand_tilde(&expanded)
}

/// `~` and `~/...` become the home directory; anything else is unchanged.
pub(crate) fn expand_tilde(value: &str) -> PathBuf {
    if value == "~" {
        if let Some(home) = dirs::home_dir() {
            return home;
        }
    } else if let Some(rest) = value.strip_prefix("~/")
        && let Some(home) = dirs::home_dir()
    {
        return home.join(rest);
    }
    PathBuf::from(value)
}

fn syntax(path: &Path, line: usize, message: impl Into<String>) -> SshConfigError {
    SshConfigError::Syntax {
        path: path.to_path_buf(),
        line,
        message: message.into(),
    }
}

fn parse_items(
    text: &str,
    path: &Path,
    base: &Path,
    depth: usize,
) -> Result<Vec<Item>, SshConfigError> {
    let mut items = Vec::new();
    for (idx, raw) in text.lines().enumerate() {
        let lineno = idx + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (keyword, rest) = split_keyword(line);
        let args = split_args(rest).map_err(|m| syntax(path, lineno, m))?;
        let lower = keyword.to_ascii_lowercase();
        let first = || {
            args.first()
                .cloned()
                .ok_or_else(|| syntax(path, lineno, format!("`{keyword}` needs a value")))
        };
        match lower.as_str() {
            "host" => {
                if args.is_empty() {
                    return Err(syntax(path, lineno, "`Host` needs at least one pattern"));
                }
                let patterns = args
                    .iter()
                    .map(|a| match a.strip_prefix('!') {
                        Some(rest) => HostPattern {
                            negated: true,
                            glob: rest.to_ascii_lowercase(),
                        },
                        None => HostPattern {
                            negated: false,
                            glob: a.to_ascii_lowercase(),
                        },
                    })
                    .collect();
                items.push(Item::Host(patterns));
            }
            "match" => items.push(Item::Match),
            "hostname" => items.push(Item::Set {
                keyword: Keyword::HostName,
                value: first()?,
            }),
            "user" => items.push(Item::Set {
                keyword: Keyword::User,
                value: first()?,
            }),
            "port" => {
                let value = first()?;
                match value.parse::<u16>() {
                    Ok(p) if p != 0 => items.push(Item::Set {
                        keyword: Keyword::Port,
                        value,
                    }),
                    _ => {
                        return Err(syntax(
                            path,
                            lineno,
                            format!("bad Port `{value}`: use a number from 1 to 65535"),
                        ));
                    }
                }
            }
            "identityfile" => items.push(Item::Set {
                keyword: Keyword::IdentityFile,
                value: first()?,
            }),
            "proxyjump" => items.push(Item::Set {
                keyword: Keyword::ProxyJump,
                value: first()?,
            }),
            "hashknownhosts" => {
                let value = first()?;
                if parse_flag(&value).is_none() {
                    return Err(syntax(
                        path,
                        lineno,
                        format!("bad HashKnownHosts `{value}`: use yes or no"),
                    ));
                }
                items.push(Item::Set {
                    keyword: Keyword::HashKnownHosts,
                    value,
                });
            }
            "include" => {
                if args.is_empty() {
                    return Err(syntax(path, lineno, "`Include` needs a file name"));
                }
                if depth >= MAX_INCLUDE_DEPTH {
                    return Err(syntax(
                        path,
                        lineno,
                        "Include nested too deeply (an include loop?)",
                    ));
                }
                let mut nested = Vec::new();
                for arg in &args {
                    for file in include_targets(arg, base) {
                        let text = match std::fs::read_to_string(&file) {
                            Ok(t) => t,
                            // OpenSSH silently skips includes that match nothing.
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                            Err(source) => return Err(SshConfigError::Read { path: file, source }),
                        };
                        nested.extend(parse_items(&text, &file, base, depth + 1)?);
                    }
                }
                items.push(Item::Include(nested));
            }
            _ => {}
        }
    }
    Ok(items)
}

/// `Keyword rest`, `Keyword=rest` or `Keyword = rest`.
fn split_keyword(line: &str) -> (&str, &str) {
    let end = line
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(line.len());
    let (keyword, rest) = line.split_at(end);
    let rest = rest.trim_start();
    let rest = rest.strip_prefix('=').unwrap_or(rest).trim_start();
    (keyword, rest)
}

/// Whitespace-separated arguments; double quotes group; a trailing `#` comment ends the line.
fn split_args(rest: &str) -> Result<Vec<String>, String> {
    let mut args = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&c) = chars.peek() else { break };
        if c == '#' {
            break;
        }
        let mut arg = String::new();
        if c == '"' {
            chars.next();
            let mut closed = false;
            for c in chars.by_ref() {
                if c == '"' {
                    closed = true;
                    break;
                }
                arg.push(c);
            }
            if !closed {
                return Err("unterminated quote: close the \" on this line".into());
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                arg.push(c);
                chars.next();
            }
        }
        args.push(arg);
    }
    Ok(args)
}

/// Files named by one Include argument, sorted like glob(3) would.
fn include_targets(arg: &str, base: &Path) -> Vec<PathBuf> {
    let expanded = expand_tilde(arg);
    let full = if expanded.is_absolute() {
        expanded
    } else {
        base.join(expanded)
    };
    let name = full
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.contains(['*', '?']) {
        return vec![full];
    }
    let Some(dir) = full.parent() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            !n.starts_with('.') && wildcard_match(name.as_bytes(), n.as_bytes())
        })
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> SshConfig {
        SshConfig::parse(text, Path::new("/nonexistent/.ssh/config")).unwrap()
    }

    #[test]
    fn first_value_wins_across_blocks() {
        let c = cfg(
            "Host fs1\n  User alice\n  Port 2222\nHost *\n  User bob\n  Port 22\n  HostName x\n",
        );
        let h = c.lookup("fs1");
        assert_eq!(h.user.as_deref(), Some("alice"));
        assert_eq!(h.port, Some(2222));
        assert_eq!(h.hostname.as_deref(), Some("x"));
        let other = c.lookup("fs2");
        assert_eq!(other.user.as_deref(), Some("bob"));
        assert_eq!(other.port, Some(22));
    }

    #[test]
    fn lines_before_any_host_apply_to_everyone() {
        let c = cfg("User early\nHost fs1\n  User late\n");
        assert_eq!(c.lookup("fs1").user.as_deref(), Some("early"));
    }

    #[test]
    fn patterns_globs_negation_and_case() {
        let c = cfg("Host web-? !web-9 db*\n  User ops\n");
        assert_eq!(c.lookup("web-1").user.as_deref(), Some("ops"));
        assert_eq!(c.lookup("WEB-2").user.as_deref(), Some("ops"));
        assert_eq!(c.lookup("web-9").user, None);
        assert_eq!(c.lookup("web-10").user, None);
        assert_eq!(c.lookup("db-primary").user.as_deref(), Some("ops"));
        assert_eq!(c.lookup("xdb").user, None);
    }

    #[test]
    fn negation_alone_matches_nothing() {
        let c = cfg("Host !fs1\n  User x\n");
        assert_eq!(c.lookup("fs2").user, None);
    }

    #[test]
    fn equals_form_case_insensitive_keywords_and_quotes() {
        let c = cfg(
            "HOST=fs1\n  hostname=\"10.0.0.5\"\n  IDENTITYFILE \"/keys/my key\" # comment\n  port = 2200\n",
        );
        let h = c.lookup("fs1");
        assert_eq!(h.hostname.as_deref(), Some("10.0.0.5"));
        assert_eq!(h.port, Some(2200));
        assert_eq!(h.identity_files, vec![PathBuf::from("/keys/my key")]);
    }

    #[test]
    fn hostname_tokens() {
        let c = cfg("Host *.lab\n  HostName %h.example.test\nHost pct\n  HostName a%%b\n");
        assert_eq!(
            c.lookup("fs1.lab").hostname.as_deref(),
            Some("fs1.lab.example.test")
        );
        assert_eq!(c.lookup("pct").hostname.as_deref(), Some("a%b"));
    }

    #[test]
    fn identity_files_accumulate_and_expand_tilde() {
        let c = cfg(
            "Host fs1\n  IdentityFile ~/.ssh/fs1\nHost *\n  IdentityFile /etc/k\n  IdentityFile none\n",
        );
        let h = c.lookup("fs1");
        let home = dirs::home_dir().unwrap();
        assert_eq!(
            h.identity_files,
            vec![home.join(".ssh/fs1"), PathBuf::from("/etc/k")]
        );
    }

    #[test]
    fn match_blocks_are_skipped_until_next_host() {
        let c = cfg("Match user root\n  User frommatch\nHost fs1\n  User fromhost\n");
        assert_eq!(c.lookup("fs1").user.as_deref(), Some("fromhost"));
        assert_eq!(c.lookup("other").user, None);
    }

    #[test]
    fn proxy_jump_none_blocks_later_values() {
        let c = cfg("Host inside\n  ProxyJump none\nHost *\n  ProxyJump admin@bastion:2222\n");
        assert_eq!(c.lookup("inside").proxy_jump, None);
        assert_eq!(
            c.lookup("outside").proxy_jump.as_deref(),
            Some("admin@bastion:2222")
        );
    }

    #[test]
    fn bad_port_names_file_and_line() {
        let err = SshConfig::parse("Host a\n  Port 99999\n", Path::new("/x/config")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "/x/config:2: bad Port `99999`: use a number from 1 to 65535"
        );
    }

    #[test]
    fn unterminated_quote_is_an_error() {
        let err = SshConfig::parse("HostName \"abc\n", Path::new("/x/config")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/x/config:1: unterminated quote"),
            "{err}"
        );
    }

    #[test]
    fn include_relative_glob_and_conditional() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("conf.d")).unwrap();
        std::fs::write(
            dir.path().join("conf.d/a.conf"),
            "Host fs1\n  User from-a\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("conf.d/b.conf"),
            "Host fs2\n  User from-b\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("scoped"), "Port 2022\n").unwrap();
        let main = dir.path().join("config");
        let text = "Include conf.d/*.conf\nHost fs3\n  Include scoped\n  User three\nHost *\n  User fallback\n";
        let c = SshConfig::parse(text, &main).unwrap();
        assert_eq!(c.lookup("fs1").user.as_deref(), Some("from-a"));
        assert_eq!(c.lookup("fs2").user.as_deref(), Some("from-b"));
        // After the include, the fs3 block is still the active one.
        let fs3 = c.lookup("fs3");
        assert_eq!((fs3.user.as_deref(), fs3.port), (Some("three"), Some(2022)));
        // The include inside `Host fs3` never applies to other hosts.
        assert_eq!(c.lookup("fs1").port, None);
        assert_eq!(c.lookup("zzz").user.as_deref(), Some("fallback"));
    }

    #[test]
    fn include_loop_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("config");
        std::fs::write(&main, "Include config\n").unwrap();
        let err = SshConfig::parse("Include config\n", &main).unwrap_err();
        assert!(err.to_string().contains("nested too deeply"), "{err}");
    }

    #[test]
    fn wildcard_matcher() {
        assert!(wildcard_match(b"*", b""));
        assert!(wildcard_match(b"a*c", b"abbbc"));
        assert!(!wildcard_match(b"a*c", b"abbb"));
        assert!(wildcard_match(b"??", b"ab"));
        assert!(!wildcard_match(b"??", b"abc"));
    }
}
