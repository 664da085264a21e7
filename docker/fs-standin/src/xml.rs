//! The X-PRE-PROCESS text pass and a small XML element scanner.
//!
//! FreeSWITCH runs a line-based preprocessor over every config file BEFORE the XML parser sees it:
//! `$${var}` is plain text substitution and `<X-PRE-PROCESS cmd="set" .../>` acts even inside
//! `<!-- -->` comments. Only after that are real XML comments ignored.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Global variables in the order FreeSWITCH would hold them (last `set` wins).
pub type Vars = HashMap<String, String>;

#[derive(Debug, thiserror::Error)]
pub enum XmlError {
    #[error("{file}: cannot read: {source} (check the path and permissions)")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}:{line}: {msg} (fix the XML at that line)")]
    Syntax {
        file: PathBuf,
        line: usize,
        msg: String,
    },
    #[error("{file}: X-PRE-PROCESS include nesting deeper than {max} (include loop?)")]
    IncludeDepth { file: PathBuf, max: usize },
}

const MAX_INCLUDE_DEPTH: usize = 16;

/// Read a file and run the preprocessor over it; `set` lines update `vars` in order.
pub fn preprocess_file(path: &Path, vars: &mut Vars) -> Result<String, XmlError> {
    preprocess_file_depth(path, vars, 0)
}

fn preprocess_file_depth(path: &Path, vars: &mut Vars, depth: usize) -> Result<String, XmlError> {
    if depth > MAX_INCLUDE_DEPTH {
        return Err(XmlError::IncludeDepth {
            file: path.to_path_buf(),
            max: MAX_INCLUDE_DEPTH,
        });
    }
    let bytes = std::fs::read(path).map_err(|source| XmlError::Read {
        file: path.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8_lossy(&bytes);
    let dir = path.parent().unwrap_or(Path::new("."));
    preprocess_text(&text, dir, vars, depth)
}

/// The line-based pass: expand `$${}` on each line, then act on an X-PRE-PROCESS tag in it.
pub fn preprocess_text(
    text: &str,
    dir: &Path,
    vars: &mut Vars,
    depth: usize,
) -> Result<String, XmlError> {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let expanded = expand_vars(line, vars);
        let Some(pos) = expanded.find("<X-PRE-PROCESS") else {
            out.push_str(&expanded);
            continue;
        };
        let tag = &expanded[pos..];
        let cmd = dq_attr(tag, "cmd").unwrap_or_default();
        let data = dq_attr(tag, "data").unwrap_or_default();
        match cmd.to_ascii_lowercase().as_str() {
            "set" => {
                if let Some((name, value)) = data.split_once('=') {
                    vars.insert(name.trim().to_string(), value.to_string());
                }
            }
            "stun-set" => {
                // A real STUN lookup would leave the testbed network: fall back to the local
                // address, which is what FreeSWITCH ends up with when STUN is unreachable.
                if let Some((name, value)) = data.split_once('=') {
                    let v = if value.starts_with("stun:") {
                        vars.get("local_ip_v4").cloned().unwrap_or_default()
                    } else {
                        value.to_string()
                    };
                    vars.insert(name.trim().to_string(), v);
                }
            }
            "include" => {
                for file in glob(dir, &data) {
                    out.push_str(&preprocess_file_depth(&file, vars, depth + 1)?);
                    out.push('\n');
                }
            }
            _ => {}
        }
        // Keep line numbering roughly stable for error messages.
        out.push('\n');
    }
    Ok(out)
}

/// `$${name}` plain text substitution; unknown variables expand to nothing.
pub fn expand_vars(line: &str, vars: &Vars) -> String {
    if !line.contains("$${") {
        return line.to_string();
    }
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(start) = rest.find("$${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 3..];
        match after.find('}') {
            Some(end) => {
                if let Some(v) = vars.get(&after[..end]) {
                    out.push_str(v);
                }
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Attribute with double quotes only, as the preprocessor understands them.
fn dq_attr(tag: &str, name: &str) -> Option<String> {
    let needle = format!("{name}=\"");
    let mut search = tag;
    loop {
        let pos = search.find(&needle)?;
        let boundary = pos == 0 || search.as_bytes()[pos - 1].is_ascii_whitespace();
        let after = &search[pos + needle.len()..];
        if boundary {
            let end = after.find('"')?;
            return Some(after[..end].to_string());
        }
        search = after;
    }
}

/// Minimal glob: only `*` in the last path component, which is all the stock tree uses.
pub fn glob(dir: &Path, pattern: &str) -> Vec<PathBuf> {
    let full = if Path::new(pattern).is_absolute() {
        PathBuf::from(pattern)
    } else {
        dir.join(pattern)
    };
    let Some(file_pat) = full
        .file_name()
        .and_then(|f| f.to_str())
        .map(str::to_string)
    else {
        return Vec::new();
    };
    let parent = full.parent().map(Path::to_path_buf).unwrap_or_default();
    if !file_pat.contains('*') {
        return if full.is_file() {
            vec![full]
        } else {
            Vec::new()
        };
    }
    let Ok(rd) = std::fs::read_dir(&parent) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| wildcard_match(&file_pat, n))
        })
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found
}

fn wildcard_match(pat: &str, name: &str) -> bool {
    let parts: Vec<&str> = pat.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut pos = first.len();
    let end = name.len() - last.len();
    for mid in &parts[1..parts.len() - 1] {
        match name[pos..end].find(mid) {
            Some(i) => pos += i + mid.len(),
            None => return false,
        }
    }
    true
}

/// One XML element; text content is not needed by anything the stand-in reads.
#[derive(Debug, Clone, Default)]
pub struct Element {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Element>,
}

impl Element {
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// All descendants named `name`, depth first, in document order.
    pub fn descendants<'a>(&'a self, name: &str, out: &mut Vec<&'a Element>) {
        for c in &self.children {
            if c.name == name {
                out.push(c);
            }
            c.descendants(name, out);
        }
    }

    pub fn find_all(&self, name: &str) -> Vec<&Element> {
        let mut v = Vec::new();
        self.descendants(name, &mut v);
        v
    }

    /// `<param name= value=>` children of this element, in order.
    pub fn params(&self) -> Vec<(String, String)> {
        self.children
            .iter()
            .filter(|c| c.name == "param")
            .filter_map(|c| Some((c.attr("name")?.to_string(), c.attr("value")?.to_string())))
            .collect()
    }
}

/// Parse preprocessed text into a document element named `#document`.
pub fn parse(text: &str, file: &Path) -> Result<Element, XmlError> {
    let b = text.as_bytes();
    let err = |pos: usize, msg: &str| XmlError::Syntax {
        file: file.to_path_buf(),
        line: text[..pos.min(text.len())].matches('\n').count() + 1,
        msg: msg.to_string(),
    };
    let mut stack: Vec<Element> = vec![Element {
        name: "#document".into(),
        ..Default::default()
    }];
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'<' {
            i += text[i..].find('<').unwrap_or(b.len() - i);
            continue;
        }
        let rest = &text[i..];
        let skip_to = |end: &str| rest.find(end).map(|p| i + p + end.len());
        if rest.starts_with("<!--") {
            i = skip_to("-->").ok_or_else(|| err(i, "unterminated comment <!--"))?;
        } else if rest.starts_with("<![CDATA[") {
            i = skip_to("]]>").ok_or_else(|| err(i, "unterminated CDATA"))?;
        } else if rest.starts_with("<?") {
            i = skip_to("?>").ok_or_else(|| err(i, "unterminated <?"))?;
        } else if rest.starts_with("<!") {
            i = skip_to(">").ok_or_else(|| err(i, "unterminated <!"))?;
        } else if let Some(close) = rest.strip_prefix("</") {
            let end = close
                .find('>')
                .ok_or_else(|| err(i, "unterminated end tag"))?;
            let name = close[..end].trim();
            let open = stack.pop().ok_or_else(|| err(i, "stray end tag"))?;
            if open.name != name || stack.is_empty() {
                return Err(err(
                    i,
                    &format!("end tag </{name}> does not match <{}>", open.name),
                ));
            }
            if let Some(parent) = stack.last_mut() {
                parent.children.push(open);
            }
            i += 2 + end + 1;
        } else {
            let (el, self_closing, len) = parse_tag(rest).ok_or_else(|| err(i, "malformed tag"))?;
            i += len;
            if self_closing {
                if let Some(parent) = stack.last_mut() {
                    parent.children.push(el);
                }
            } else {
                stack.push(el);
            }
        }
    }
    if stack.len() != 1 {
        let name = stack.last().map(|e| e.name.clone()).unwrap_or_default();
        return Err(err(
            text.len(),
            &format!("element <{name}> is never closed"),
        ));
    }
    Ok(stack.pop().unwrap_or_default())
}

/// Parse `<name a="v" b='w'>` or `.../>`; returns the element, whether self-closing, bytes used.
fn parse_tag(s: &str) -> Option<(Element, bool, usize)> {
    let b = s.as_bytes();
    let mut i = 1;
    let name_end = s[i..]
        .find(|c: char| c.is_whitespace() || c == '/' || c == '>')
        .map(|p| p + i)?;
    let name = &s[i..name_end];
    if name.is_empty() {
        return None;
    }
    let mut el = Element {
        name: name.to_string(),
        ..Default::default()
    };
    i = name_end;
    loop {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        match b.get(i)? {
            b'>' => return Some((el, false, i + 1)),
            b'/' => {
                return (b.get(i + 1) == Some(&b'>')).then_some((el, true, i + 2));
            }
            _ => {}
        }
        let an_end = s[i..]
            .find(|c: char| c.is_whitespace() || c == '=' || c == '>' || c == '/')
            .map(|p| p + i)?;
        let aname = &s[i..an_end];
        i = an_end;
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if b.get(i) != Some(&b'=') {
            return None;
        }
        i += 1;
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        let q = *b.get(i)?;
        if q != b'"' && q != b'\'' {
            return None;
        }
        let vstart = i + 1;
        let vend = s[vstart..].find(q as char)? + vstart;
        el.attrs
            .push((aname.to_string(), decode_entities(&s[vstart..vend])));
        i = vend + 1;
    }
}

fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// Preprocess and parse one file.
pub fn load(path: &Path, vars: &mut Vars) -> Result<Element, XmlError> {
    let text = preprocess_file(path, vars)?;
    parse(&text, path)
}

/// FreeSWITCH's switch_true().
pub fn is_true(v: &str) -> bool {
    let v = v.trim();
    [
        "yes", "on", "true", "t", "enabled", "enable", "active", "allow",
    ]
    .iter()
    .any(|t| v.eq_ignore_ascii_case(t))
        || v.parse::<i64>().is_ok_and(|n| n != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_acts_inside_comments_and_expands_in_order() {
        let mut vars = Vars::new();
        vars.insert("local_ip_v4".into(), "10.1.2.3".into());
        let text = "<!-- <X-PRE-PROCESS cmd=\"set\" data=\"a=1\"/> -->\n\
                    <X-PRE-PROCESS cmd=\"set\" data=\"domain=$${local_ip_v4}\"/>\n\
                    <X-PRE-PROCESS cmd=\"set\" data=\"b=$${a}-$${domain}-$${nope}\"/>\n\
                    <X-PRE-PROCESS cmd='set' data='single=1'/>\n\
                    <p v=\"$${b}\"/>\n";
        let out = preprocess_text(text, Path::new("."), &mut vars, 0).unwrap();
        assert_eq!(vars["a"], "1");
        assert_eq!(vars["domain"], "10.1.2.3");
        assert_eq!(vars["b"], "1-10.1.2.3-");
        assert!(
            !vars.contains_key("single"),
            "single quotes are not understood"
        );
        assert!(out.contains("<p v=\"1-10.1.2.3-\"/>"));
    }

    #[test]
    fn comments_hide_params_from_the_parser() {
        let doc = parse(
            "<settings>\n<!--<param name=\"a\" value=\"x\"/>-->\n<param name='b' value=\"&amp;y\"/></settings>",
            Path::new("t.xml"),
        )
        .unwrap();
        let settings = doc.child("settings").unwrap();
        assert_eq!(settings.params(), vec![("b".to_string(), "&y".to_string())]);
    }

    #[test]
    fn syntax_errors_name_file_and_line() {
        let e = parse("<a>\n<b>\n</a>", Path::new("/x/y.xml")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("/x/y.xml:3:"), "{msg}");
        assert!(parse("<a><!-- never closed", Path::new("z")).is_err());
        assert!(parse("<a b=c/>", Path::new("z")).is_err());
    }

    #[test]
    fn wildcard() {
        assert!(wildcard_match("*.xml", "1000.xml"));
        assert!(!wildcard_match("*.xml", "1000.xml~"));
        assert!(wildcard_match("a*b*c", "aXbYc"));
        assert!(!wildcard_match("ab*ba", "aba"));
    }

    #[test]
    fn switch_true() {
        for t in ["true", "TRUE", "yes", "on", "1", "enabled"] {
            assert!(is_true(t), "{t}");
        }
        for f in ["false", "no", "0", "", "off"] {
            assert!(!is_true(f), "{f}");
        }
    }
}
