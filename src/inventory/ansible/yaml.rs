//! Ansible's YAML inventory format (`all: {hosts, children, vars}` nested to any depth) and the
//! YAML of `group_vars/` and `host_vars/` files, with the line of every value kept for errors.
//!
//! Read with saphyr (YAML 1.2, every node with its position). Scalars are resolved here rather
//! than by saphyr so that an Ansible Vault value (`!vault`) is seen, and the YAML 1.1 booleans
//! Ansible's PyYAML reads (`yes`, `no`, `on`, `off`) stay booleans.

use saphyr::{MarkedYaml, Scalar, ScalarStyle, YamlData, YamlLoader};
use saphyr_parser::Parser;

use super::pattern::{expand, split_port};
use super::{Model, Origin, Val, Var};
use crate::inventory::Diagnostic;

/// A parsed YAML value with where it starts.
pub(super) struct Node {
    pub value: Val,
    pub at: Origin,
    /// A mapping's entries with each key's position.
    pub entries: Vec<(String, Origin, Node)>,
}

/// Parses one YAML document (the first of the file). `Ok(None)` for an empty file.
pub(super) fn load(text: &str, origin: &Origin) -> Result<Option<Node>, Diagnostic> {
    let mut parser = Parser::new_from_str(text);
    let mut loader: YamlLoader<'_, MarkedYaml<'_>> = YamlLoader::default();
    loader.early_parse(false);
    let scan = parser.load(&mut loader, false);
    let err = scan.err().or_else(|| loader.error().cloned());
    if let Some(e) = err {
        let m = e.marker();
        return Err(Origin {
            file: origin.file.clone(),
            line: m.line(),
            col: m.col() + 1,
        }
        .diag(format!("YAML syntax: {}; fix the syntax first", e.info())));
    }
    let Some(doc) = loader.into_documents().into_iter().next() else {
        return Ok(None);
    };
    let node = convert(&doc, origin);
    Ok((node.value != Val::Null).then_some(node))
}

fn at_of(y: &MarkedYaml<'_>, origin: &Origin) -> Origin {
    Origin {
        file: origin.file.clone(),
        line: y.span.start.line(),
        col: y.span.start.col() + 1,
    }
}

fn leaf(value: Val, at: Origin) -> Node {
    Node {
        value,
        at,
        entries: Vec::new(),
    }
}

fn convert(y: &MarkedYaml<'_>, origin: &Origin) -> Node {
    let at = at_of(y, origin);
    match &y.data {
        YamlData::Representation(text, style, tag) => {
            let value = match tag.as_deref() {
                Some(t) if t.handle == "!" && t.suffix == "vault" => Val::Vault,
                Some(t) if t.handle == "!" && t.suffix == "unsafe" => Val::Str(text.to_string()),
                _ if *style != ScalarStyle::Plain => Val::Str(text.to_string()),
                Some(t) if t.is_yaml_core_schema() => {
                    match Scalar::parse_from_cow_and_metadata(
                        text.clone(),
                        *style,
                        Some(&std::borrow::Cow::Borrowed(t)),
                    ) {
                        Some(s) => scalar(s),
                        None => Val::Str(text.to_string()),
                    }
                }
                _ => plain(text),
            };
            leaf(value, at)
        }
        YamlData::Value(s) => leaf(scalar(s.clone()), at),
        YamlData::Sequence(items) => {
            let value = Val::List(items.iter().map(|i| convert(i, origin).value).collect());
            leaf(value, at)
        }
        YamlData::Mapping(map) => {
            let mut entries: Vec<(String, Origin, Node)> = Vec::new();
            // YAML 1.1 merge keys (`<<: *defaults`), as ansible-core 2.19 applies them: the
            // merged mappings' entries first, an explicit key wins over a merged one wherever it
            // is written, and of a list of merged mappings the later one wins.
            let mut merged: Vec<(String, Origin, Node)> = Vec::new();
            for (k, v) in map {
                if is_merge_key(k) {
                    let sources: Vec<&MarkedYaml<'_>> = match &v.data {
                        YamlData::Sequence(items) => items.iter().collect(),
                        _ => vec![v],
                    };
                    for src in sources {
                        for e in convert(src, origin).entries {
                            merged.retain(|(m, _, _)| *m != e.0);
                            merged.push(e);
                        }
                    }
                    continue;
                }
                let key = convert(k, origin);
                let name = match &key.value {
                    Val::Str(s) => s.clone(),
                    Val::Int(n) => n.to_string(),
                    Val::Float(f) => f.to_string(),
                    Val::Bool(b) => if *b { "True" } else { "False" }.to_string(),
                    Val::Null => "None".to_string(),
                    _ => String::new(),
                };
                entries.push((name, key.at, convert(v, origin)));
            }
            merged.retain(|(m, _, _)| !entries.iter().any(|(e, _, _)| e == m));
            merged.append(&mut entries);
            let entries = merged;
            let value = Val::Map(
                entries
                    .iter()
                    .map(|(k, _, n)| (k.clone(), n.value.clone()))
                    .collect(),
            );
            Node { value, at, entries }
        }
        YamlData::Tagged(tag, inner) => {
            if tag.handle == "!" && tag.suffix == "vault" {
                leaf(Val::Vault, at)
            } else {
                convert(inner, origin)
            }
        }
        YamlData::Alias(_) | YamlData::BadValue => leaf(Val::Null, at),
    }
}

fn is_merge_key(k: &MarkedYaml<'_>) -> bool {
    match &k.data {
        YamlData::Representation(text, ScalarStyle::Plain, tag) => {
            text == "<<" && tag.as_deref().is_none_or(|t| t.suffix == "merge")
        }
        _ => false,
    }
}

fn scalar(s: Scalar<'_>) -> Val {
    match s {
        Scalar::Null => Val::Null,
        Scalar::Boolean(b) => Val::Bool(b),
        Scalar::Integer(n) => Val::Int(n),
        Scalar::FloatingPoint(f) => Val::Float(f.into_inner()),
        Scalar::String(s) => Val::Str(s.to_string()),
    }
}

/// A plain scalar: YAML 1.1's booleans first (what PyYAML gives Ansible), then the core schema.
fn plain(text: &str) -> Val {
    match text {
        "yes" | "Yes" | "YES" | "on" | "On" | "ON" => Val::Bool(true),
        "no" | "No" | "NO" | "off" | "Off" | "OFF" => Val::Bool(false),
        "" => Val::Null,
        _ => scalar(Scalar::parse_from_cow(text.to_string().into())),
    }
}

/// A vars file (`group_vars/NAME.yml`, ...): a mapping of variables, or empty.
pub(super) fn vars_file(
    text: &str,
    origin: &Origin,
    diags: &mut Vec<Diagnostic>,
) -> Vec<(String, Var)> {
    let node = match load(text, origin) {
        Ok(Some(n)) => n,
        Ok(None) => return Vec::new(),
        Err(d) => {
            diags.push(d);
            return Vec::new();
        }
    };
    if !matches!(node.value, Val::Map(_)) {
        diags.push(
            node.at
                .diag("a vars file must be a mapping of variable names to values"),
        );
        return Vec::new();
    }
    node.entries
        .into_iter()
        .map(|(k, _, n)| {
            (
                k,
                Var {
                    value: n.value,
                    at: n.at,
                },
            )
        })
        .collect()
}

/// A YAML inventory: every top-level key is a group.
pub(super) fn parse(text: &str, origin: &Origin, model: &mut Model, diags: &mut Vec<Diagnostic>) {
    let node = match load(text, origin) {
        Ok(Some(n)) => n,
        Ok(None) => {
            diags.push(origin.diag("the YAML inventory is empty: add `all:` with its hosts"));
            return;
        }
        Err(d) => {
            diags.push(d);
            return;
        }
    };
    if !matches!(node.value, Val::Map(_)) {
        diags.push(node.at.diag(
            "a YAML inventory must be a mapping of groups (all: {hosts: ..., children: ..., vars: ...})",
        ));
        return;
    }
    if let Some((_, k_at, _)) = node.entries.iter().find(|(k, _, _)| k == "plugin") {
        diags.push(k_at.diag(
            "this is an inventory plugin's configuration (`plugin:`): fsfleet reads static inventories only; \
             export the hosts with `ansible-inventory -i FILE --list --yaml > hosts.yml` and give fsfleet that file",
        ));
        return;
    }
    for (name, k_at, data) in &node.entries {
        group(name, k_at, data, model, diags);
    }
}

fn group(name: &str, k_at: &Origin, data: &Node, model: &mut Model, diags: &mut Vec<Diagnostic>) {
    model.add_group(name, k_at);
    match &data.value {
        Val::Null => return,
        Val::Map(_) => {}
        _ => {
            diags.push(data.at.diag(format!(
                "group `{name}` must be a mapping with hosts, children and vars (or empty)"
            )));
            return;
        }
    }
    for (section, s_at, body) in &data.entries {
        // `hosts: fs01` is a short way of writing one host without variables.
        let entries: Vec<(String, Origin, Option<&Node>)> = match &body.value {
            Val::Null => continue,
            Val::Str(s) => vec![(s.clone(), body.at.clone(), None)],
            Val::Map(_) => body
                .entries
                .iter()
                .map(|(k, a, n)| (k.clone(), a.clone(), Some(n)))
                .collect(),
            _ if matches!(section.as_str(), "hosts" | "children" | "vars") => {
                diags.push(
                    body.at
                        .diag(format!("`{section}` of group `{name}` must be a mapping")),
                );
                continue;
            }
            _ => Vec::new(),
        };
        match section.as_str() {
            "vars" => {
                for (k, _, n) in entries {
                    if let Some(n) = n {
                        model.set_group_var(
                            name,
                            &k,
                            Var {
                                value: n.value.clone(),
                                at: n.at.clone(),
                            },
                        );
                    }
                }
            }
            "children" => {
                for (child, c_at, n) in entries {
                    let empty = leaf(Val::Null, c_at.clone());
                    group(&child, &c_at, n.unwrap_or(&empty), model, diags);
                    model.add_child(name, &child, &c_at, diags);
                }
            }
            "hosts" => {
                for (pattern, h_at, n) in entries {
                    let (pattern_only, port) = split_port(&pattern);
                    let names = match expand(&pattern_only) {
                        Ok(names) => names,
                        Err(why) => {
                            diags.push(h_at.diag(why));
                            continue;
                        }
                    };
                    let vars: Vec<(String, Var)> = match n {
                        None => Vec::new(),
                        Some(n) if n.value == Val::Null => Vec::new(),
                        Some(n) if matches!(n.value, Val::Map(_)) => n
                            .entries
                            .iter()
                            .map(|(k, _, v)| {
                                (
                                    k.clone(),
                                    Var {
                                        value: v.value.clone(),
                                        at: v.at.clone(),
                                    },
                                )
                            })
                            .collect(),
                        Some(n) => {
                            diags.push(n.at.diag(format!(
                                "host `{pattern}` must map to its variables (or nothing)"
                            )));
                            continue;
                        }
                    };
                    for h in &names {
                        model.add_host(h, name, port, &h_at);
                        for (k, v) in &vars {
                            model.set_host_var(h, k, v.clone());
                        }
                    }
                }
            }
            other => diags.push(s_at.diag(format!(
                "unknown key `{other}` in group `{name}`: a group holds only hosts, children and vars \
                 (Ansible would skip it with a warning)"
            ))),
        }
    }
}
