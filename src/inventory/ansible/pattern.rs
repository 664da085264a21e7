//! The small languages inside an Ansible inventory, read the way ansible-core reads them: host
//! patterns with ranges and a port (`fs[01:20].example.net:2222`), INI host lines (POSIX shell
//! words with `#` comments) and INI values (Python literals, else the text itself).

use super::Val;

/// More hosts than this from one pattern is a typo (`[1:1000000]`), not a fleet.
const MAX_EXPANDED: usize = 100_000;

/// `host:port` or `[host]:port` split the way ansible's `parse_address` does; anything it would
/// not read as an address with a port is returned whole, without a port.
pub(crate) fn split_port(pattern: &str) -> (String, Option<i64>) {
    let (host, port) = if let Some(inner) = pattern
        .strip_prefix('[')
        .and_then(|r| r.rsplit_once("]:"))
        .filter(|(h, p)| !h.is_empty() && is_digits(p))
    {
        (inner.0.to_string(), inner.1)
    } else if let Some((h, p)) = pattern
        .rsplit_once(':')
        .filter(|(h, p)| is_digits(p) && !h.is_empty() && outside_brackets_has_no_colon(h))
    {
        (h.to_string(), p)
    } else {
        return (pattern.to_string(), None);
    };
    match port.parse::<i64>() {
        Ok(n) => (host, Some(n)),
        Err(_) => (pattern.to_string(), None),
    }
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// ansible's `hostport` pattern: a colon may only appear inside a `[...]` range.
fn outside_brackets_has_no_colon(s: &str) -> bool {
    let mut depth = false;
    for c in s.chars() {
        match c {
            '[' if !depth => depth = true,
            ']' if depth => depth = false,
            '[' | ']' => return false,
            ':' if !depth => return false,
            _ => {}
        }
    }
    !depth
}

/// Expands every `[begin:end(:step)]` range of a host pattern, leftmost first, as ansible's
/// `expand_hostname_range` does: numeric ranges (zero-padded when `begin` has a leading zero,
/// then `end` must be as long), single-letter alphabetic ranges, an optional step.
pub(crate) fn expand(pattern: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    expand_into(pattern, &mut out)?;
    Ok(out)
}

fn expand_into(line: &str, out: &mut Vec<String>) -> Result<(), String> {
    let Some(open) = line.find('[') else {
        out.push(line.to_string());
        return Ok(());
    };
    let close = match line.find(']') {
        Some(c) if c > open => c,
        _ => {
            return Err(format!(
                "host pattern `{line}` has a `[` without a closing `]`"
            ));
        }
    };
    let (head, nrange, tail) = (&line[..open], &line[open + 1..close], &line[close + 1..]);
    let bounds: Vec<&str> = nrange.split(':').collect();
    if bounds.len() != 2 && bounds.len() != 3 {
        return Err(format!(
            "host range `[{nrange}]` must be begin:end or begin:end:step"
        ));
    }
    let beg = if bounds[0].is_empty() { "0" } else { bounds[0] };
    let end = bounds[1];
    if end.is_empty() {
        return Err(format!("host range `[{nrange}]` must give an end value"));
    }
    let step: i64 = match bounds.get(2) {
        None => 1,
        Some(s) => match s.trim().parse::<i64>() {
            Ok(n) if n > 0 => n,
            _ => {
                return Err(format!(
                    "host range `[{nrange}]`: the step must be a positive integer"
                ));
            }
        },
    };
    let width = (beg.starts_with('0') && beg.len() > 1).then_some(beg.len());
    if let Some(w) = width
        && w != end.len()
    {
        return Err(format!(
            "host range `[{nrange}]` must give begin and end with the same number of digits"
        ));
    }
    const LETTERS: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let letter = |s: &str| (s.chars().count() == 1).then(|| LETTERS.find(s)).flatten();
    let items: Vec<String> = match (letter(beg), letter(end)) {
        (Some(b), Some(e)) => {
            if b > e {
                return Err(format!("host range `[{nrange}]` must have begin <= end"));
            }
            LETTERS[b..=e]
                .chars()
                .step_by(step as usize)
                .map(String::from)
                .collect()
        }
        _ => {
            let parse = |s: &str| {
                s.trim().parse::<i64>().map_err(|_| {
                    format!("host range `[{nrange}]` must be numbers or single letters")
                })
            };
            let (b, e) = (parse(beg)?, parse(end)?);
            if e >= b && ((e - b) / step) as usize >= MAX_EXPANDED {
                return Err(format!(
                    "host range `[{nrange}]` gives more than {MAX_EXPANDED} hosts"
                ));
            }
            let mut v = Vec::new();
            let mut i = b;
            while i <= e {
                v.push(match width {
                    Some(w) => format!("{i:0w$}"),
                    None => i.to_string(),
                });
                i += step;
            }
            v
        }
    };
    for item in items {
        let name = format!("{head}{item}{tail}");
        expand_into(&name, out)?;
        if out.len() > MAX_EXPANDED {
            return Err(format!(
                "host pattern `{line}` gives more than {MAX_EXPANDED} hosts"
            ));
        }
    }
    Ok(())
}

/// One INI host line split into words as Python's `shlex.split(line, comments=True)` does:
/// POSIX quoting, and an unquoted `#` ends the line. Each word comes with its 0-based char
/// column.
pub(crate) fn shell_words(line: &str) -> Result<Vec<(String, usize)>, String> {
    let chars: Vec<char> = line.chars().collect();
    let mut words = Vec::new();
    let mut cur: Option<(String, usize)> = None;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => {
                if let Some(w) = cur.take() {
                    words.push(w);
                }
            }
            '#' => break,
            '\'' => {
                let w = cur.get_or_insert_with(|| (String::new(), i));
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err("no closing quotation".into()),
                        Some('\'') => break,
                        Some(&ch) => w.0.push(ch),
                    }
                    i += 1;
                }
            }
            '"' => {
                let w = cur.get_or_insert_with(|| (String::new(), i));
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err("no closing quotation".into()),
                        Some('"') => break,
                        Some('\\') if matches!(chars.get(i + 1), Some('"') | Some('\\')) => {
                            i += 1;
                            w.0.push(chars[i]);
                        }
                        Some(&ch) => w.0.push(ch),
                    }
                    i += 1;
                }
            }
            '\\' => {
                let w = cur.get_or_insert_with(|| (String::new(), i));
                i += 1;
                match chars.get(i) {
                    Some(&ch) => w.0.push(ch),
                    None => return Err("no escaped character".into()),
                }
            }
            c => cur.get_or_insert_with(|| (String::new(), i)).0.push(c),
        }
        i += 1;
    }
    if let Some(w) = cur.take() {
        words.push(w);
    }
    Ok(words)
}

/// An INI value as ansible reads it: `ast.literal_eval` when the text is a Python literal
/// (numbers, quoted strings, True/False/None, lists, tuples, dicts), else the text itself.
pub(crate) fn ini_value(text: &str) -> Val {
    let mut p = Literal {
        s: text.chars().collect(),
        i: 0,
    };
    p.ws();
    if let Some(v) = p.value() {
        p.ws();
        if p.peek() == Some('#') || p.peek().is_none() {
            return v;
        }
    }
    Val::Str(text.to_string())
}

struct Literal {
    s: Vec<char>,
    i: usize,
}

impl Literal {
    fn peek(&self) -> Option<char> {
        self.s.get(self.i).copied()
    }
    fn ws(&mut self) {
        while self.peek().is_some_and(|c| c == ' ' || c == '\t') {
            self.i += 1;
        }
    }
    fn eat(&mut self, c: char) -> bool {
        self.ws();
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn value(&mut self) -> Option<Val> {
        self.ws();
        match self.peek()? {
            '\'' | '"' => self.string().map(Val::Str),
            '[' => self.seq('[', ']').map(Val::List),
            '(' => self.seq('(', ')').map(Val::List),
            '{' => self.map(),
            c if c.is_ascii_digit() || c == '-' || c == '+' || c == '.' => self.number(),
            _ => {
                let start = self.i;
                while self.peek().is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    self.i += 1;
                }
                let word: String = self.s[start..self.i].iter().collect();
                match word.as_str() {
                    "True" => Some(Val::Bool(true)),
                    "False" => Some(Val::Bool(false)),
                    "None" => Some(Val::Null),
                    _ => None,
                }
            }
        }
    }
    fn string(&mut self) -> Option<String> {
        let q = self.peek()?;
        self.i += 1;
        let mut out = String::new();
        loop {
            let c = self.peek()?;
            self.i += 1;
            if c == q {
                return Some(out);
            }
            if c == '\\' {
                let e = self.peek()?;
                self.i += 1;
                match e {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    '\\' | '\'' | '"' => out.push(e),
                    other => {
                        out.push('\\');
                        out.push(other);
                    }
                }
            } else {
                out.push(c);
            }
        }
    }
    fn seq(&mut self, open: char, close: char) -> Option<Vec<Val>> {
        if !self.eat(open) {
            return None;
        }
        let mut items = Vec::new();
        loop {
            if self.eat(close) {
                return Some(items);
            }
            items.push(self.value()?);
            if !self.eat(',') {
                return self.eat(close).then_some(items);
            }
        }
    }
    fn map(&mut self) -> Option<Val> {
        if !self.eat('{') {
            return None;
        }
        let mut items = Vec::new();
        loop {
            if self.eat('}') {
                return Some(Val::Map(items));
            }
            self.ws();
            let Val::Str(k) = self.value()? else {
                return None;
            };
            if !self.eat(':') {
                return None;
            }
            items.push((k, self.value()?));
            if !self.eat(',') {
                return self.eat('}').then_some(Val::Map(items));
            }
        }
    }
    fn number(&mut self) -> Option<Val> {
        let start = self.i;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-'))
        {
            self.i += 1;
        }
        let raw: String = self.s[start..self.i].iter().collect();
        let text = raw.replace('_', "");
        let digits = text.trim_start_matches(['-', '+']);
        // Python 3 refuses decimal integers with a leading zero (`010`).
        if digits.len() > 1 && digits.starts_with('0') && digits.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        if let Ok(n) = text.parse::<i64>() {
            return Some(Val::Int(n));
        }
        if digits
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'.' || b == b'e' || b == b'E')
            && let Ok(f) = text.parse::<f64>()
        {
            return Some(Val::Float(f));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_expand_as_ansible_does() {
        assert_eq!(
            expand("fs[01:03].example.net").unwrap(),
            ["fs01.example.net", "fs02.example.net", "fs03.example.net"]
        );
        assert_eq!(expand("db[1:10:4]").unwrap(), ["db1", "db5", "db9"]);
        assert_eq!(expand("[a:c]-x").unwrap(), ["a-x", "b-x", "c-x"]);
        assert_eq!(expand("n[a:e:2]").unwrap(), ["na", "nc", "ne"]);
        assert_eq!(
            expand("r[1:2]c[01:02]").unwrap(),
            ["r1c01", "r1c02", "r2c01", "r2c02"]
        );
        assert_eq!(expand("x[:2]").unwrap(), ["x0", "x1", "x2"]);
        assert_eq!(expand("plain").unwrap(), ["plain"]);
        assert_eq!(expand("w[3:1]").unwrap(), Vec::<String>::new());
        assert!(
            expand("w[01:100]")
                .unwrap_err()
                .contains("same number of digits")
        );
        assert!(expand("w[1]").unwrap_err().contains("begin:end"));
        assert!(expand("w[1:]").unwrap_err().contains("end value"));
        assert!(expand("w[c:a]").unwrap_err().contains("begin <= end"));
        assert!(expand("w[1:2:0]").unwrap_err().contains("step"));
        assert!(expand("w[0:10000000]").unwrap_err().contains("more than"));
        assert!(expand("w[1:2").unwrap_err().contains("closing"));
    }

    #[test]
    fn a_port_is_split_off_like_parse_address() {
        assert_eq!(split_port("fs01:2222"), ("fs01".into(), Some(2222)));
        assert_eq!(
            split_port("fs[01:03]:2222"),
            ("fs[01:03]".into(), Some(2222))
        );
        assert_eq!(split_port("fs[01:03]"), ("fs[01:03]".into(), None));
        assert_eq!(
            split_port("[2001:db8::1]:22"),
            ("2001:db8::1".into(), Some(22))
        );
        assert_eq!(split_port("2001:db8::1"), ("2001:db8::1".into(), None));
        assert_eq!(split_port("fs01"), ("fs01".into(), None));
    }

    #[test]
    fn host_lines_split_like_shlex_with_comments() {
        let w = shell_words(r#"fs01 a=1 b="two words" c='x y'#z # comment d=4"#).unwrap();
        let words: Vec<&str> = w.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(words, ["fs01", "a=1", "b=two words", "c=x y"]);
        assert_eq!(w[1].1, 5);
        assert!(shell_words("fs01 a='open").is_err());
    }

    #[test]
    fn ini_values_are_python_literals_or_text() {
        assert_eq!(ini_value("2222"), Val::Int(2222));
        assert_eq!(ini_value("-3"), Val::Int(-3));
        assert_eq!(ini_value("2.5"), Val::Float(2.5));
        assert_eq!(ini_value("True"), Val::Bool(true));
        assert_eq!(ini_value("yes"), Val::Str("yes".into()));
        assert_eq!(ini_value("'quoted'"), Val::Str("quoted".into()));
        assert_eq!(ini_value("10.0.0.1"), Val::Str("10.0.0.1".into()));
        assert_eq!(ini_value("010"), Val::Str("010".into()));
        assert_eq!(ini_value("2222 # the ssh port"), Val::Int(2222));
        assert_eq!(
            ini_value("['10.0.0.0/8', \"192.0.2.1\"]"),
            Val::List(vec![
                Val::Str("10.0.0.0/8".into()),
                Val::Str("192.0.2.1".into())
            ])
        );
        assert_eq!(
            ini_value("{'a': 1}"),
            Val::Map(vec![("a".into(), Val::Int(1))])
        );
        assert_eq!(ini_value("[1, 2"), Val::Str("[1, 2".into()));
    }
}
