//! Ansible's INI inventory format, read as ansible-core's `ini` plugin reads it: `[group]`
//! sections of host lines (`pattern [key=value ...]`), `[group:vars]` sections of `key=value`,
//! `[group:children]` sections of group names; hosts before any section are ungrouped.

use std::collections::HashSet;

use super::pattern::{expand, ini_value, shell_words, split_port};
use super::{Model, Origin, Var};
use crate::inventory::Diagnostic;

enum State {
    Hosts,
    Children,
    Vars,
}

/// `[name]` or `[name:kind]` (a trailing `# comment` allowed).
fn section(line: &str) -> Option<(&str, Option<&str>)> {
    let rest = line.strip_prefix('[')?;
    let close = rest.find(']')?;
    let inner = &rest[..close];
    let after = rest[close + 1..].trim_start();
    if !(after.is_empty() || after.starts_with('#')) {
        return None;
    }
    let (name, kind) = match inner.split_once(':') {
        Some((n, k)) => (n, Some(k)),
        None => (inner, None),
    };
    let name_ok = !name.is_empty() && !name.contains(|c: char| c.is_whitespace() || c == ']');
    let kind_ok =
        kind.is_none_or(|k| !k.is_empty() && k.chars().all(|c| c.is_alphanumeric() || c == '_'));
    (name_ok && kind_ok).then_some((name, kind))
}

pub(super) fn parse(text: &str, origin: &Origin, model: &mut Model, diags: &mut Vec<Diagnostic>) {
    let at = |line: usize, col: usize| Origin {
        file: origin.file.clone(),
        line,
        col,
    };
    let mut group = "ungrouped".to_string();
    let mut state = State::Hosts;
    // Groups with a hosts or children section; a group named only in `[x:vars]` or as a child
    // must have one somewhere (ansible refuses it otherwise).
    let mut declared: HashSet<String> = ["all", "ungrouped"].map(String::from).into();
    let mut vars_sections: Vec<(String, Origin)> = Vec::new();
    let mut child_refs: Vec<(String, String, Origin)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let lineno = i + 1;
        let indent = raw.chars().take_while(|c| c.is_whitespace()).count();
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            if let Some((name, kind)) = section(line) {
                state = match kind {
                    None | Some("hosts") => State::Hosts,
                    Some("children") => State::Children,
                    Some("vars") => State::Vars,
                    Some(other) => {
                        diags.push(at(lineno, indent + 1).diag(format!(
                            "section [{name}:{other}] has an unknown type: use [{name}], [{name}:vars] or [{name}:children]"
                        )));
                        continue;
                    }
                };
                group = name.to_string();
                model.add_group(&group, &at(lineno, indent + 1));
                match state {
                    State::Vars => vars_sections.push((group.clone(), at(lineno, indent + 1))),
                    _ => {
                        declared.insert(group.clone());
                    }
                }
                continue;
            }
            if line.ends_with(']') {
                diags.push(at(lineno, indent + 1).diag(format!(
                    "invalid section `{line}`: write [group], [group:vars] or [group:children] without spaces"
                )));
                continue;
            }
        }
        match state {
            State::Hosts => {
                let words = match shell_words(line) {
                    Ok(w) => w,
                    Err(why) => {
                        diags.push(at(lineno, indent + 1).diag(format!(
                            "cannot read this host line ({why}): check its quotes"
                        )));
                        continue;
                    }
                };
                let Some(((pattern, pcol), rest)) = words.split_first() else {
                    continue;
                };
                let host_at = at(lineno, indent + pcol + 1);
                if pattern.ends_with(':') {
                    diags.push(host_at.diag(format!(
                        "host pattern `{pattern}` ends in `:`: give the port after it or remove the `:`"
                    )));
                    continue;
                }
                let (pattern_only, port) = split_port(pattern);
                let names = match expand(&pattern_only) {
                    Ok(n) => n,
                    Err(why) => {
                        diags.push(host_at.diag(why));
                        continue;
                    }
                };
                if names.iter().any(|n| n == "---") {
                    diags.push(host_at.diag(
                        "`---` starts a YAML document: name the file .yml (or pass --inventory-format ansible with a .yml file)",
                    ));
                    continue;
                }
                let mut vars = Vec::new();
                for (word, col) in rest {
                    let var_at = at(lineno, indent + col + 1);
                    match word.split_once('=') {
                        Some((k, v)) => vars.push((
                            k.to_string(),
                            Var {
                                value: ini_value(v),
                                at: var_at,
                            },
                        )),
                        None => diags
                            .push(var_at.diag(format!(
                                "expected key=value after the host, found `{word}`"
                            ))),
                    }
                }
                for name in &names {
                    model.add_host(name, &group, port, &host_at);
                    for (k, v) in &vars {
                        model.set_host_var(name, k, v.clone());
                    }
                }
            }
            State::Vars => match line.split_once('=') {
                Some((k, v)) => {
                    let var = Var {
                        value: ini_value(v.trim()),
                        at: at(lineno, indent + 1),
                    };
                    model.set_group_var(&group, k.trim(), var);
                }
                None => diags.push(
                    at(lineno, indent + 1).diag(format!("expected key=value, found `{line}`")),
                ),
            },
            State::Children => {
                let name = line.split('#').next().unwrap_or("").trim();
                if name.is_empty()
                    || name.contains(|c: char| c.is_whitespace() || c == ':' || c == ']')
                {
                    diags.push(
                        at(lineno, indent + 1)
                            .diag(format!("expected a group name, found `{line}`")),
                    );
                    continue;
                }
                child_refs.push((group.clone(), name.to_string(), at(lineno, indent + 1)));
            }
        }
    }
    for (parent, child, child_at) in child_refs {
        if declared.contains(&child) {
            model.add_child(&parent, &child, &child_at, diags);
        } else {
            diags.push(child_at.diag(format!(
                "[{parent}:children] names the undefined group `{child}`: add a [{child}] section"
            )));
        }
    }
    for (g, vars_at) in vars_sections {
        if !declared.contains(&g) {
            diags.push(vars_at.diag(format!(
                "[{g}:vars] is for the undefined group `{g}`: add a [{g}] section with its hosts"
            )));
        }
    }
}
