//! A span-keeping scanner for FreeSWITCH XML configs and the surgical edits built on it.
//!
//! FreeSWITCH configs are edited by changing the bytes of one attribute value, or inserting one
//! line before `</settings>`; the file is never re-serialised, so comments, `$${vars}`,
//! X-PRE-PROCESS lines, tabs and CRLF stay byte-for-byte.

use std::ops::Range;

use super::ConfError;

/// One attribute of a tag, with the byte span of its value (inside the quotes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub name: String,
    pub value: String,
    pub value_span: Range<usize>,
}

/// A start, empty or end tag outside comments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    pub name: String,
    pub span: Range<usize>,
    pub attrs: Vec<Attr>,
    pub kind: TagKind,
    /// Names of the enclosing open elements, outermost first.
    pub parents: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagKind {
    Start,
    Empty,
    End,
}

impl Tag {
    pub fn attr(&self, name: &str) -> Option<&Attr> {
        self.attrs.iter().find(|a| a.name == name)
    }
    pub fn parent(&self) -> Option<&str> {
        self.parents.last().map(String::as_str)
    }
}

/// Scan a document into tags. Comments, CDATA, processing instructions and DOCTYPE are skipped.
pub fn scan(text: &str) -> Result<Vec<Tag>, ConfError> {
    let b = text.as_bytes();
    let mut i = 0;
    let mut tags = Vec::new();
    let mut stack: Vec<String> = Vec::new();
    let line_of = |pos: usize| text[..pos].matches('\n').count() + 1;
    while let Some(off) = b[i..].iter().position(|&c| c == b'<') {
        let start = i + off;
        let rest = &text[start..];
        let skip_to = |end: &str, what: &str| -> Result<usize, ConfError> {
            rest.find(end)
                .map(|p| start + p + end.len())
                .ok_or_else(|| {
                    ConfError::Malformed(format!(
                        "unclosed {what} starting at line {}",
                        line_of(start)
                    ))
                })
        };
        if rest.starts_with("<!--") {
            i = skip_to("-->", "comment")?;
            continue;
        }
        if rest.starts_with("<![CDATA[") {
            i = skip_to("]]>", "CDATA section")?;
            continue;
        }
        if rest.starts_with("<?") {
            i = skip_to("?>", "processing instruction")?;
            continue;
        }
        if rest.starts_with("<!") {
            i = skip_to(">", "declaration")?;
            continue;
        }
        let (tag, end) = parse_tag(text, start)
            .map_err(|why| ConfError::Malformed(format!("line {}: {why}", line_of(start))))?;
        match tag.kind {
            TagKind::Start => {
                let mut t = tag;
                t.parents = stack.clone();
                stack.push(t.name.clone());
                tags.push(t);
            }
            TagKind::Empty => {
                let mut t = tag;
                t.parents = stack.clone();
                tags.push(t);
            }
            TagKind::End => {
                match stack.pop() {
                    Some(open) if open == tag.name => {}
                    Some(open) => {
                        return Err(ConfError::Malformed(format!(
                            "line {}: </{}> closes <{open}>",
                            line_of(start),
                            tag.name
                        )));
                    }
                    None => {
                        return Err(ConfError::Malformed(format!(
                            "line {}: </{}> closes nothing",
                            line_of(start),
                            tag.name
                        )));
                    }
                }
                let mut t = tag;
                t.parents = stack.clone();
                tags.push(t);
            }
        }
        i = end;
    }
    if let Some(open) = stack.last() {
        return Err(ConfError::Malformed(format!("<{open}> is never closed")));
    }
    Ok(tags)
}

fn is_name_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b':' | b'.') || c >= 0x80
}

fn parse_tag(text: &str, start: usize) -> Result<(Tag, usize), String> {
    let b = text.as_bytes();
    let mut i = start + 1;
    let closing = b.get(i) == Some(&b'/');
    if closing {
        i += 1;
    }
    let name_start = i;
    while i < b.len() && is_name_byte(b[i]) {
        i += 1;
    }
    if i == name_start {
        return Err("a '<' that starts no tag".into());
    }
    let name = text[name_start..i].to_string();
    let mut attrs = Vec::new();
    loop {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        match b.get(i) {
            None => return Err(format!("tag <{name}> is not closed")),
            Some(b'>') => {
                let kind = if closing {
                    TagKind::End
                } else {
                    TagKind::Start
                };
                return Ok((
                    Tag {
                        name,
                        span: start..i + 1,
                        attrs,
                        kind,
                        parents: vec![],
                    },
                    i + 1,
                ));
            }
            Some(b'/') if !closing && b.get(i + 1) == Some(&b'>') => {
                return Ok((
                    Tag {
                        name,
                        span: start..i + 2,
                        attrs,
                        kind: TagKind::Empty,
                        parents: vec![],
                    },
                    i + 2,
                ));
            }
            Some(_) if closing => return Err(format!("unexpected text in </{name}>")),
            Some(_) => {
                let an_start = i;
                while i < b.len() && is_name_byte(b[i]) {
                    i += 1;
                }
                if i == an_start {
                    return Err(format!("unexpected character in <{name}>"));
                }
                let aname = text[an_start..i].to_string();
                while i < b.len() && b[i].is_ascii_whitespace() {
                    i += 1;
                }
                if b.get(i) != Some(&b'=') {
                    return Err(format!("attribute {aname} of <{name}> has no value"));
                }
                i += 1;
                while i < b.len() && b[i].is_ascii_whitespace() {
                    i += 1;
                }
                let q = match b.get(i) {
                    Some(&q @ (b'"' | b'\'')) => q,
                    _ => return Err(format!("attribute {aname} of <{name}> is not quoted")),
                };
                let vstart = i + 1;
                let vlen = b[vstart..]
                    .iter()
                    .position(|&c| c == q)
                    .ok_or_else(|| format!("unterminated value of {aname}"))?;
                let vend = vstart + vlen;
                attrs.push(Attr {
                    name: aname,
                    value: text[vstart..vend].to_string(),
                    value_span: vstart..vend,
                });
                i = vend + 1;
            }
        }
    }
}

/// A `<param name= value=>` directly inside a `<settings>` element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub value: String,
    pub value_span: Range<usize>,
    pub tag_span: Range<usize>,
}

fn settings_params<'a>(tags: &'a [Tag], name: &'a str) -> impl Iterator<Item = Param> + 'a {
    tags.iter()
        .filter(|t| t.name == "param" && t.kind != TagKind::End && t.parent() == Some("settings"))
        .filter_map(move |t| {
            let n = t.attr("name")?;
            if n.value.trim() != name {
                return None;
            }
            let v = t.attr("value")?;
            Some(Param {
                value: v.value.clone(),
                value_span: v.value_span.clone(),
                tag_span: t.span.clone(),
            })
        })
}

/// The effective value of a settings param (FreeSWITCH applies params in order: the last wins).
pub fn get_param(text: &str, name: &str) -> Result<Option<String>, ConfError> {
    let tags = scan(text)?;
    Ok(settings_params(&tags, name).last().map(|p| p.value))
}

/// Set a settings param: change the value of every live occurrence, or insert one line before
/// the single `</settings>`. Returns None when the file already says exactly that.
pub fn set_param(text: &str, name: &str, value: &str) -> Result<Option<String>, ConfError> {
    check_value(value)?;
    let tags = scan(text)?;
    let params: Vec<Param> = settings_params(&tags, name).collect();
    if !params.is_empty() {
        if params.iter().all(|p| p.value == value) {
            return Ok(None);
        }
        let mut out = text.to_string();
        // Back to front so earlier spans stay valid.
        for p in params.iter().rev() {
            out.replace_range(p.value_span.clone(), value);
        }
        return Ok(Some(out));
    }
    let closes: Vec<&Tag> = tags
        .iter()
        .filter(|t| t.name == "settings" && t.kind == TagKind::End)
        .collect();
    let close = match closes.as_slice() {
        [one] => *one,
        [] => return Err(ConfError::NoSettings),
        _ => {
            return Err(ConfError::Ambiguous(format!(
                "{} <settings> sections",
                closes.len()
            )));
        }
    };
    let crlf = text.contains("\r\n");
    let nl = if crlf { "\r\n" } else { "\n" };
    let line_start = text[..close.span.start]
        .rfind('\n')
        .map(|p| p + 1)
        .unwrap_or(0);
    let before_close = &text[line_start..close.span.start];
    let mut out = text.to_string();
    if before_close.chars().all(|c| c == ' ' || c == '\t') {
        // `</settings>` on its own line: insert a line above it, indented like the last param.
        let indent = param_indent(text, &tags).unwrap_or_else(|| format!("{before_close}  "));
        out.insert_str(
            line_start,
            &format!("{indent}<param name=\"{name}\" value=\"{value}\"/>{nl}"),
        );
    } else {
        out.insert_str(
            close.span.start,
            &format!("<param name=\"{name}\" value=\"{value}\"/>"),
        );
    }
    Ok(Some(out))
}

/// The indentation of the last settings param's line, if any.
fn param_indent(text: &str, tags: &[Tag]) -> Option<String> {
    let last = tags
        .iter()
        .rfind(|t| t.name == "param" && t.parent() == Some("settings"))?;
    let ls = text[..last.span.start]
        .rfind('\n')
        .map(|p| p + 1)
        .unwrap_or(0);
    let indent = &text[ls..last.span.start];
    indent
        .chars()
        .all(|c| c == ' ' || c == '\t')
        .then(|| indent.to_string())
}

/// Values fsfleet writes are alphanumeric or simple words; refuse anything that could change
/// the XML's structure or FreeSWITCH's variable expansion.
pub fn check_value(value: &str) -> Result<(), ConfError> {
    if value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '-' | '_' | '/' | ','))
    {
        Ok(())
    } else {
        Err(ConfError::UnsafeValue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_tags_with_spans_skipping_comments() {
        let t = "<a x=\"1\">\n<!-- <param name=\"p\" value=\"c\"/> -->\n<b y='2 > 3'/></a>";
        let tags = scan(t).unwrap();
        assert_eq!(tags.len(), 3);
        assert_eq!(tags[1].name, "b");
        assert_eq!(tags[1].attr("y").unwrap().value, "2 > 3");
        assert_eq!(&t[tags[1].attr("y").unwrap().value_span.clone()], "2 > 3");
        assert_eq!(tags[1].parents, vec!["a".to_string()]);
    }

    #[test]
    fn malformed_documents_are_refused_with_a_line() {
        for bad in [
            "<a>",
            "<a></b>",
            "<a x=1/>",
            "<a x=\"1/>",
            "<!-- open",
            "</a>",
        ] {
            let e = scan(bad).unwrap_err().to_string();
            assert!(!e.is_empty(), "{bad}");
        }
        assert!(
            scan("<a>\n\n<b x=1/></a>")
                .unwrap_err()
                .to_string()
                .contains("line 3")
        );
    }

    #[test]
    fn set_param_updates_in_any_quoting_and_ignores_comments_and_gateways() {
        let t = "<profile>\r\n  <gateways><gateway name=\"g\"><param name=\"p\" value=\"x\"/></gateway></gateways>\r\n  <settings>\r\n    <!-- <param name=\"p\" value=\"c\"/> -->\r\n    <param  name = 'p'  value='false' />\r\n  </settings>\r\n</profile>\r\n";
        let out = set_param(t, "p", "true").unwrap().unwrap();
        assert_eq!(out, t.replace("value='false'", "value='true'"));
        assert_eq!(get_param(&out, "p").unwrap().as_deref(), Some("true"));
        assert_eq!(set_param(&out, "p", "true").unwrap(), None, "idempotent");
    }

    #[test]
    fn set_param_inserts_before_settings_close_keeping_crlf_and_indent() {
        let t = "<profile>\r\n\t<settings>\r\n\t\t<param name=\"a\" value=\"1\"/>\r\n\t</settings>\r\n</profile>";
        let out = set_param(t, "log-auth-failures", "true").unwrap().unwrap();
        assert_eq!(
            out,
            "<profile>\r\n\t<settings>\r\n\t\t<param name=\"a\" value=\"1\"/>\r\n\t\t<param name=\"log-auth-failures\" value=\"true\"/>\r\n\t</settings>\r\n</profile>"
        );
        assert!(matches!(
            set_param("<profile></profile>", "p", "v"),
            Err(ConfError::NoSettings)
        ));
        assert!(matches!(
            set_param(
                "<x><settings></settings><settings></settings></x>",
                "p",
                "v"
            ),
            Err(ConfError::Ambiguous(_))
        ));
        assert!(matches!(
            set_param(t, "p", "a\"b"),
            Err(ConfError::UnsafeValue)
        ));
    }

    #[test]
    fn duplicated_params_are_all_updated_so_the_last_one_cannot_undo_the_change() {
        let t = "<c><settings><param name=\"p\" value=\"1\"/><param name=\"p\" value=\"2\"/></settings></c>";
        let out = set_param(t, "p", "9").unwrap().unwrap();
        assert_eq!(out.matches("value=\"9\"").count(), 2);
    }
}

#[cfg(test)]
mod stock_tree {
    use super::*;
    use std::path::{Path, PathBuf};

    fn stock() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/freeswitch-conf-1.10.12")
    }

    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "xml") {
                out.push(p);
            }
        }
    }

    #[test]
    fn every_stock_file_scans() {
        let mut files = Vec::new();
        walk(&stock(), &mut files);
        assert!(
            files.len() > 100,
            "stock tree not found at {}",
            stock().display()
        );
        for f in files {
            let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned();
            scan(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        }
    }

    #[test]
    fn auth_logging_on_every_stock_profile_changes_exactly_one_line() {
        for name in ["internal", "external", "internal-ipv6", "external-ipv6"] {
            let text =
                std::fs::read_to_string(stock().join(format!("sip_profiles/{name}.xml"))).unwrap();
            assert_ne!(
                get_param(&text, "log-auth-failures").unwrap().as_deref(),
                Some("true")
            );
            let out = set_param(&text, "log-auth-failures", "true")
                .unwrap()
                .unwrap();
            assert_eq!(
                get_param(&out, "log-auth-failures").unwrap().as_deref(),
                Some("true"),
                "{name}"
            );
            let old: Vec<&str> = text.lines().collect();
            let new: Vec<&str> = out.lines().collect();
            let changed = if old.len() == new.len() {
                old.iter().zip(&new).filter(|(a, b)| a != b).count()
            } else {
                assert_eq!(new.len(), old.len() + 1, "{name}: one inserted line");
                1
            };
            assert_eq!(changed, 1, "{name}");
        }
    }

    #[test]
    fn event_socket_stock_values() {
        let text = std::fs::read_to_string(stock().join("autoload_configs/event_socket.conf.xml"))
            .unwrap();
        assert_eq!(
            get_param(&text, "password").unwrap().as_deref(),
            Some("ClueCon")
        );
        assert_eq!(
            get_param(&text, "listen-ip").unwrap().as_deref(),
            Some("::")
        );
        // Commented out in stock: not a live param.
        assert_eq!(get_param(&text, "apply-inbound-acl").unwrap(), None);
        let out = set_param(&text, "apply-inbound-acl", "loopback.auto")
            .unwrap()
            .unwrap();
        assert!(
            out.contains(
                "    <param name=\"apply-inbound-acl\" value=\"loopback.auto\"/>\n  </settings>"
            ),
            "{out}"
        );
    }
}

/// The span editor over every stock file and mutated copies: it edits exactly the intended
/// bytes (only value spans change, or one param line is inserted before `</settings>`), leaves
/// every other param's effective value as it was, or refuses with a reason. Never panics.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;
    use std::path::{Path, PathBuf};

    fn stock_files() -> Vec<(PathBuf, String)> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.extension().is_some_and(|x| x == "xml") {
                    out.push(p);
                }
            }
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/reference/freeswitch-conf-1.10.12");
        let mut files = Vec::new();
        walk(&root, &mut files);
        files.sort();
        files
            .into_iter()
            .map(|p| {
                let t = String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned();
                (p, t)
            })
            .collect()
    }

    /// Every settings param name of a document.
    fn param_names(text: &str) -> Vec<String> {
        let Ok(tags) = scan(text) else { return vec![] };
        let mut names: Vec<String> = tags
            .iter()
            .filter(|t| t.name == "param" && t.parent() == Some("settings"))
            .filter_map(|t| t.attr("name").map(|a| a.value.trim().to_string()))
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// The property: refused, or exactly the intended edit.
    fn check_edit(text: &str, name: &str, value: &str) -> Result<(), String> {
        let Ok(out) = set_param(text, name, value) else {
            return Ok(()); // refused with a reason
        };
        let Some(out) = out else {
            // "already so": every live occurrence says it.
            let tags = scan(text).map_err(|e| e.to_string())?;
            if settings_params(&tags, name).all(|p| p.value == value)
                && settings_params(&tags, name).count() > 0
            {
                return Ok(());
            }
            return Err("None although not every live occurrence has the value".into());
        };
        let tags = scan(text).map_err(|e| e.to_string())?;
        let live: Vec<Param> = settings_params(&tags, name).collect();
        if live.is_empty() {
            // One inserted param (the tag alone, or a whole line with its indentation),
            // nothing else. Found by the tag, not by the first differing byte: an inserted line
            // can start with the same bytes as the one it precedes.
            let added = out.len() - text.len();
            let tag = format!("<param name=\"{name}\" value=\"{value}\"/>");
            let Some(pos) = out.find(&tag) else {
                return Err(format!("no inserted {tag}"));
            };
            let ls = out[..pos].rfind('\n').map(|p| p + 1).unwrap_or(0);
            let le = out[pos..]
                .find('\n')
                .map(|p| pos + p + 1)
                .unwrap_or(out.len());
            let exact = [(pos, pos + tag.len()), (ls, le)]
                .iter()
                .any(|&(a, b)| b - a == added && format!("{}{}", &out[..a], &out[b..]) == text);
            if !exact {
                return Err(format!(
                    "insert changed more than one param: {:?}",
                    &out[ls..le]
                ));
            }
        } else {
            // Same bytes outside the value spans.
            let mut expect = text.to_string();
            for p in live.iter().rev() {
                expect.replace_range(p.value_span.clone(), value);
            }
            if expect != out {
                return Err("bytes outside the value spans changed".into());
            }
        }
        if get_param(&out, name).map_err(|e| e.to_string())?.as_deref() != Some(value) {
            return Err("the edited file does not read back the value".into());
        }
        for other in param_names(text) {
            if other != name && get_param(text, &other).ok() != get_param(&out, &other).ok() {
                return Err(format!("param {other} reads differently after the edit"));
            }
        }
        Ok(())
    }

    #[test]
    fn every_stock_file_every_param_is_edited_exactly_or_refused() {
        let files = stock_files();
        assert!(files.len() > 100);
        for (path, text) in &files {
            let mut names = param_names(text);
            names.push("log-auth-failures".into());
            names.push("apply-inbound-acl".into());
            for n in names {
                check_edit(text, &n, "fsfleetTEST1")
                    .unwrap_or_else(|e| panic!("{} {n}: {e}", path.display()));
            }
        }
    }

    /// The case the random fuzz first tripped on in CI (its seed is also saved in
    /// proptest-regressions/conf/xml.txt): opus.conf.xml with its two-space indents turned into
    /// tabs, and `password`, absent there, inserted. The inserted line then starts with the same
    /// bytes as the `</settings>` line it precedes, which a checker locating the insert by the
    /// first differing byte misreads as a wider change.
    #[test]
    fn tab_indented_insert_is_exact() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/reference/freeswitch-conf-1.10.12/autoload_configs/opus.conf.xml");
        let text = std::fs::read_to_string(&path).unwrap();
        let t = mutate(&text, 1, 0);
        assert!(!param_names(&t).contains(&"password".to_string()));
        let out = set_param(&t, "password", "127.0.0.1").unwrap().unwrap();
        assert!(
            out.contains("\t\t<param name=\"password\" value=\"127.0.0.1\"/>\n\t\t</settings>"),
            "no longer the case CI found: {out}"
        );
        check_edit(&t, "password", "127.0.0.1").unwrap();
    }

    /// Mutations an operator's editor or a previous tool can leave behind.
    fn mutate(text: &str, which: u8, at: usize) -> String {
        let at = (0..=at.min(text.len()))
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        match which % 9 {
            0 => text.replace('\n', "\r\n"),
            1 => text.replace("  ", "\t"),
            2 => text.trim_end_matches('\n').to_string(),
            3 => format!("\u{feff}{text}"),
            4 => text.replace('"', "'"),
            5 => text.replacen("</settings>", "", 1),
            6 => {
                // A comment holding the same params, where a line starts.
                let ls = text[..at].rfind('\n').map(|p| p + 1).unwrap_or(0);
                let mut t = text.to_string();
                t.insert_str(
                    ls,
                    "<!-- <param name=\"password\" value=\"x\"/> <param name=\"log-auth-failures\" value=\"false\"/> -->\n",
                );
                t
            }
            7 => {
                // A duplicated param line.
                let ls = text[..at].rfind('\n').map(|p| p + 1).unwrap_or(0);
                let le = text[at..]
                    .find('\n')
                    .map(|p| at + p + 1)
                    .unwrap_or(text.len());
                let line = &text[ls..le];
                let mut t = text.to_string();
                t.insert_str(le, line);
                t
            }
            _ => {
                // Truncated anywhere.
                text[..at].to_string()
            }
        }
    }

    proptest! {
        // A fixed seed: CI must not depend on luck; the 400 cases still roam the whole tree.
        // Failures found elsewhere are saved (and committed) in proptest-regressions/conf/xml.txt
        // and replayed first.
        #![proptest_config(ProptestConfig {
            cases: 400,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x5eed_f5f1),
            failure_persistence: Some(Box::new(
                proptest::test_runner::FileFailurePersistence::SourceParallel("proptest-regressions"),
            )),
            ..ProptestConfig::default()
        })]
        #[test]
        fn mutated_stock_files_are_edited_exactly_or_refused(
            idx in 0usize..10_000,
            muts in proptest::collection::vec((0u8..9, 0usize..200_000), 1..4),
            pick in 0usize..1000,
        ) {
            let files = stock_files();
            let (_, text) = &files[idx % files.len()];
            let mut t = text.clone();
            for (w, at) in muts {
                t = mutate(&t, w, at);
            }
            let mut names = param_names(&t);
            names.extend(["password".to_string(), "log-auth-failures".to_string(), "listen-ip".to_string()]);
            let name = &names[pick % names.len()];
            prop_assert!(check_edit(&t, name, "127.0.0.1").is_ok(), "{:?}", check_edit(&t, name, "127.0.0.1"));
        }

        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,400}", name in "[a-z-]{1,12}") {
            let _ = scan(&s);
            let _ = get_param(&s, &name);
            let _ = set_param(&s, &name, "v");
            let _ = crate::conf::vars::set_var(&s, &name, "v");
            let _ = crate::conf::vars::get_var(&s, &name);
        }
    }
}
