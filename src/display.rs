//! Text that came from a host, made safe to print on the operator's terminal.
//!
//! A host chooses its os-release, its hostname, its file contents and its command output; a
//! compromised one can put terminal control sequences there (ESC for CSI/OSC: rewrite the screen,
//! set the window title, on some terminals write the clipboard or answer back into the input; the
//! 8-bit C1 forms do the same on terminals that honour them). The text outputs escape every
//! control character at the printing edge, with these two functions and nothing else, so a new
//! field cannot forget it. JSON output is left to serde_json (it escapes C0, not DEL or C1).

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` must not reach a terminal raw: all of C0 (U+0000..U+001F, ESC and CR included),
/// DEL, C1 (U+0080..U+009F), and the Unicode bidi controls that reorder what is shown (a line
/// that reads differently from what it contains).
pub(crate) fn is_unsafe(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}'
        | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `address:port` as a reader (and `ssh`, `curl`, `ss`) writes it: an IPv6 address in brackets,
/// so `2001:db8::21` port 2222 is `[2001:db8::21]:2222`, not the ambiguous `2001:db8::21:2222`.
pub fn host_port(address: &str, port: u16) -> String {
    if address.contains(':') && !address.starts_with('[') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    }
}

fn escape(s: &str, keep_newlines: bool) -> Cow<'_, str> {
    let unsafe_char = |c: char| is_unsafe(c) && !(keep_newlines && c == '\n');
    if !s.chars().any(unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if !unsafe_char(c) {
            out.push(c);
        } else if (c as u32) < 0x80 {
            // `\x1b`, `\x0d`, `\x7f`: the form a reader knows from C and shells.
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
    Cow::Owned(out)
}

/// A single-line field (hostname, OS name, a step message, one evidence line): every control
/// character escaped, newlines included, so it cannot start a line of its own.
pub fn line(s: &str) -> Cow<'_, str> {
    escape(s, false)
}

/// A multi-line field (an error, a diff): line breaks stay, every other control is escaped
/// (a CR cannot overwrite what a line shows).
pub fn text(s: &str) -> Cow<'_, str> {
    escape(s, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_addresses_are_bracketed_next_to_a_port() {
        assert_eq!(host_port("2001:db8::21", 2222), "[2001:db8::21]:2222");
        assert_eq!(host_port("[::1]", 22), "[::1]:22");
        assert_eq!(host_port("198.51.100.7", 22), "198.51.100.7:22");
        assert_eq!(host_port("pbx.example", 2222), "pbx.example:2222");
    }

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        let s = "Debian GNU/Linux 12 (bookworm) — café";
        assert!(matches!(line(s), Cow::Borrowed(_)));
        assert_eq!(line(s), s);
        assert_eq!(text("a\nb"), "a\nb");
    }

    #[test]
    fn every_c0_del_c1_and_bidi_control_is_escaped() {
        assert_eq!(
            line("\x1b[2J\x1b]0;pwned\x07x\ry\n\tz\x7f"),
            "\\x1b[2J\\x1b]0;pwned\\x07x\\x0dy\\x0a\\x09z\\x7f"
        );
        assert_eq!(
            line("a\u{9b}31mb\u{85}\u{80}"),
            "a\\u{9b}31mb\\u{85}\\u{80}"
        );
        assert_eq!(line("x\u{202e}gpj.exe"), "x\\u{202e}gpj.exe");
        assert_eq!(text("one\x1b[1A\ntwo\r"), "one\\x1b[1A\ntwo\\x0d");
        assert_eq!(line("\0"), "\\x00");
        // Nothing unsafe survives in any position, for every code point of the ranges.
        for cp in (0u32..0xa0).chain([0x200e, 0x200f, 0x202a, 0x202e, 0x2066, 0x2069]) {
            let c = char::from_u32(cp).unwrap();
            let s = format!("a{c}b");
            let out = line(&s);
            if is_unsafe(c) {
                assert!(!out.contains(c), "U+{cp:04X} passed through");
                assert!(out.starts_with('a') && out.ends_with('b'));
            } else {
                assert_eq!(out, s);
            }
        }
    }

    /// What a hostile host can put in its report: ESC sequences (CSI, OSC title), CR, C1 CSI,
    /// a newline that would start a fake line.
    const HOSTILE: &str = "Debian\x1b]0;owned\x07\x1b[2J\rok\u{9b}1m\nfs09: ok";

    fn assert_clean(out: &str) {
        let bad: Vec<char> = out
            .chars()
            .filter(|c| *c != '\n' && is_unsafe(*c))
            .collect();
        assert!(bad.is_empty(), "raw controls {bad:?} in:\n{out}");
        assert!(
            out.contains("\\x1b]0;owned\\x07") && out.contains("\\u{9b}"),
            "{out}"
        );
        assert!(!out.lines().any(|l| l.starts_with("fs09")), "{out}");
    }

    #[test]
    fn every_text_output_escapes_host_text() {
        use crate::facts::{Facts, OsInfo};
        use crate::fleet::HostOutput;
        use crate::report::testing::{host, step};
        use crate::report::{HostReport, RunReport, StepStatus};

        let facts = Facts {
            os: OsInfo {
                id: "debian".into(),
                pretty_name: HOSTILE.into(),
                ..Default::default()
            },
            hostname: HOSTILE.into(),
            ..Default::default()
        };
        let mut failed_step = step("preflight", StepStatus::Failed, HOSTILE);
        failed_step.evidence = vec![format!("warning: {HOSTILE}"), HOSTILE.into()];
        let with_facts = HostReport::from_steps(&host("fs01"), vec![failed_step])
            .with_data(serde_json::to_value(&facts).unwrap());
        let mut errored = HostReport::failed(&host("fs02"), HOSTILE);
        errored.elapsed_ms = 5;
        let run = RunReport {
            run_id: "r".into(),
            command: "facts".into(),
            started: chrono::Utc::now(),
            elapsed_ms: 1,
            hosts: vec![with_facts.clone(), errored.clone()],
            aborted: None,
            interrupted: false,
            check: false,
        };
        assert_clean(&crate::facts::render_text([(&host("fs01"), &facts)]));
        assert_clean(&run.render_recap(false));
        assert_clean(&crate::harden::render_text(&run, true));
        assert_clean(&crate::progress::finish_line(
            &errored.name,
            errored.elapsed_ms,
            errored.status(),
            errored.status().as_str(),
            errored.failure().as_deref(),
        ));
    }
}
