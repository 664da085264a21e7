//! X-PRE-PROCESS `set` lines (vars.xml): read and change `$${variables}`.
//!
//! FreeSWITCH handles these lines with a line-based text pass BEFORE parsing XML: they act even
//! inside `<!-- -->` comments, only double quotes are understood, and the last `set` of a name
//! wins. So this module works on lines, not on the XML tree, and never "comments one out".

use std::ops::Range;

use super::ConfError;
use super::xml::check_value;

/// One `<X-PRE-PROCESS cmd="set" data="NAME=VALUE"/>` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetLine {
    pub name: String,
    pub value: String,
    /// Byte span of VALUE in the file.
    pub value_span: Range<usize>,
    /// 1-based line number.
    pub line: usize,
}

/// Every `set` line, in file order (commented ones included: they act too).
pub fn set_lines(text: &str) -> Vec<SetLine> {
    let mut out = Vec::new();
    let mut offset = 0;
    for (idx, line) in text.split_inclusive('\n').enumerate() {
        if let Some(s) = parse_set(line, offset, idx + 1) {
            out.push(s);
        }
        offset += line.len();
    }
    out
}

fn parse_set(line: &str, offset: usize, lineno: usize) -> Option<SetLine> {
    let at = line.find("<X-PRE-PROCESS")?;
    let tag = &line[at..];
    let cmd_at = tag.find("cmd=\"")? + 5;
    let cmd_len = tag[cmd_at..].find('"')?;
    if &tag[cmd_at..cmd_at + cmd_len] != "set" {
        return None;
    }
    let data_at = tag.find("data=\"")? + 6;
    let data_len = tag[data_at..].find('"')?;
    let data = &tag[data_at..data_at + data_len];
    let eq = data.find('=')?;
    let name = data[..eq].trim().to_string();
    let raw_value = &data[eq + 1..];
    let lead = raw_value.len() - raw_value.trim_start_matches(' ').len();
    let vstart = offset + at + data_at + eq + 1 + lead;
    Some(SetLine {
        name,
        value: raw_value[lead..].to_string(),
        value_span: vstart..offset + at + data_at + data_len,
        line: lineno,
    })
}

/// The effective value of a variable: its last `set`.
pub fn get_var(text: &str, name: &str) -> Option<String> {
    set_lines(text)
        .into_iter()
        .rfind(|s| s.name == name)
        .map(|s| s.value)
}

/// Change the value of every `set` of `name` in place. None when it already has that value.
/// A file that never sets it is refused: where to add it is the operator's decision.
pub fn set_var(text: &str, name: &str, value: &str) -> Result<Option<String>, ConfError> {
    check_value(value)?;
    let lines: Vec<SetLine> = set_lines(text)
        .into_iter()
        .filter(|s| s.name == name)
        .collect();
    if lines.is_empty() {
        return Err(ConfError::NoSuchVar(name.to_string()));
    }
    if lines.iter().all(|s| s.value == value) {
        return Ok(None);
    }
    let mut out = text.to_string();
    for s in lines.iter().rev() {
        out.replace_range(s.value_span.clone(), value);
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_rotates_the_stock_default_password_byte_for_byte() {
        let stock = &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/reference/freeswitch-conf-1.10.12/vars.xml"
        ))
        .unwrap();
        assert_eq!(get_var(stock, "default_password").as_deref(), Some("1234"));
        let out = set_var(stock, "default_password", "N3wPassw0rd")
            .unwrap()
            .unwrap();
        assert_eq!(
            out,
            stock.replacen(
                "data=\"default_password=1234\"",
                "data=\"default_password=N3wPassw0rd\"",
                1
            )
        );
        assert_eq!(
            set_var(&out, "default_password", "N3wPassw0rd").unwrap(),
            None
        );
        assert_eq!(get_var(stock, "internal_sip_port").as_deref(), Some("5060"));
    }

    #[test]
    fn commented_sets_act_and_are_changed_too_and_the_last_wins() {
        let t = "<include>\r\n<!-- <X-PRE-PROCESS cmd=\"set\" data=\"default_password=old\"/> -->\r\n\t<X-PRE-PROCESS cmd=\"set\" data=\"default_password= 1234\"/>\r\n</include>";
        assert_eq!(get_var(t, "default_password").as_deref(), Some("1234"));
        let out = set_var(t, "default_password", "abc").unwrap().unwrap();
        assert_eq!(
            out.matches("default_password=abc").count()
                + out.matches("default_password= abc").count(),
            2
        );
        assert!(out.contains("\r\n\t<X-PRE-PROCESS"));
        // Single quotes are not understood by FreeSWITCH's preprocessor, so not by us either.
        assert_eq!(
            get_var(
                "<X-PRE-PROCESS cmd='set' data='default_password=x'/>",
                "default_password"
            ),
            None
        );
        assert!(matches!(
            set_var("<include/>", "default_password", "x"),
            Err(ConfError::NoSuchVar(_))
        ));
    }
}
