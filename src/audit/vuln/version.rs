//! Version strings as FreeSWITCH, sofia-sip and their packages print them, and the one ordering
//! the vulnerability controls compare them by.
//!
//! What a host prints is untrusted: a version is accepted only as three dot-separated numbers at
//! the start (after `v`), each at most 6 digits; the rest decides whether it is a pre-release
//! and is kept, bounded, only for the evidence. Anything else is no version at all.
//!
//! The forms seen (FACTS.md §2, FreeSWITCH's `src/switch.c`, Debian package versions):
//! - `1.10.12-release~64bit` (`freeswitch -version`, `api version`),
//! - `1.10.12-release  64bit` (`api status`, source build),
//! - `1.10.12 -release-10222002881-a88d069d6fgit a88d069 2024-08-02 21:02:27Z 64bit` (status,
//!   SignalWire's packages),
//! - `1.10.7-release-19-4b6f1f9a2e~64bit` (a build 19 commits after the 1.10.7 tag),
//! - `1.11.0-dev-git-...` (a development build before 1.11.0),
//! - `1.10.12~release~24~a88d069d6f~bookworm-1~bookworm+1`, `1.13.17-1~bookworm+1` (packages).

use std::cmp::Ordering;
use std::fmt;

/// Longest text kept from the host for the evidence.
const MAX_RAW: usize = 96;

/// A parsed version: the three numbers, and whether it is a pre-release of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub numbers: [u32; 3],
    /// `-dev`, `-rc`, `-beta`, `-alpha`, `-pre`: a build before the release of `numbers`.
    pub pre_release: bool,
    /// The text it was read from (trimmed, bounded), for the evidence.
    pub raw: String,
}

impl Version {
    /// Read a version from the start of `text`; `None` when it does not start with one.
    ///
    /// A build after a release tag (`1.10.7-release-19-<hash>`) is that release: fsfleet cannot
    /// tell which later fixes the extra commits hold, so it assumes none.
    pub fn parse(text: &str) -> Option<Version> {
        let t = text.trim();
        let t = t.strip_prefix('v').unwrap_or(t);
        let mut numbers = [0u32; 3];
        let mut rest = t;
        for (i, slot) in numbers.iter_mut().enumerate() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 || digits > 6 {
                return None;
            }
            *slot = rest[..digits].parse().ok()?;
            rest = &rest[digits..];
            if i < 2 {
                rest = rest.strip_prefix('.')?;
            }
        }
        // `1.10.12.3` or `1.10.123x` is not a version of the three-number scheme.
        if rest.starts_with(|c: char| c == '.' || c.is_ascii_alphanumeric()) {
            return None;
        }
        let tag = rest
            .trim_start_matches([' ', '-', '~', '+', '_'])
            .to_ascii_lowercase();
        let pre_release = ["dev", "rc", "beta", "alpha", "pre"]
            .iter()
            .any(|p| tag.starts_with(p));
        Some(Version {
            numbers,
            pre_release,
            raw: bounded(t),
        })
    }

    /// A version from trusted text (the catalogue), with no raw text kept beyond the numbers.
    pub fn release(numbers: [u32; 3]) -> Version {
        Version {
            numbers,
            pre_release: false,
            raw: format!("{}.{}.{}", numbers[0], numbers[1], numbers[2]),
        }
    }

    /// `1.10.12` (or `1.11.0-dev`): the numbers as compared.
    pub fn short(&self) -> String {
        let [a, b, c] = self.numbers;
        if self.pre_release {
            format!("{a}.{b}.{c}-dev")
        } else {
            format!("{a}.{b}.{c}")
        }
    }

    /// Strictly older than `fixed`: the fix is not in this version.
    pub fn before(&self, fixed: &Version) -> bool {
        self.cmp_order(fixed) == Ordering::Less
    }

    fn cmp_order(&self, other: &Version) -> Ordering {
        self.numbers
            .cmp(&other.numbers)
            // A pre-release of X comes before X itself.
            .then((!self.pre_release).cmp(&!other.pre_release))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.short())
    }
}

/// At most [`MAX_RAW`] characters of `t`, on a char boundary.
fn bounded(t: &str) -> String {
    t.chars().take(MAX_RAW).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap_or_else(|| panic!("{s:?} should parse"))
    }

    #[test]
    fn freeswitch_forms_parse_to_their_release() {
        for (text, numbers) in [
            ("1.10.12-release~64bit", [1, 10, 12]),
            ("1.10.12-release  64bit", [1, 10, 12]),
            (
                "1.10.12 -release-10222002881-a88d069d6fgit a88d069 2024-08-02 21:02:27Z 64bit",
                [1, 10, 12],
            ),
            ("1.10.7-release-19-4b6f1f9a2e~64bit", [1, 10, 7]),
            (
                "1.10.12~release~24~a88d069d6f~bookworm-1~bookworm+1",
                [1, 10, 12],
            ),
            ("1.13.17-1~bookworm+1", [1, 13, 17]),
            ("v1.13.8", [1, 13, 8]),
            ("  1.11.4\n", [1, 11, 4]),
        ] {
            let got = v(text);
            assert_eq!(got.numbers, numbers, "{text:?}");
            assert!(!got.pre_release, "{text:?}");
        }
    }

    #[test]
    fn git_development_builds_are_pre_releases() {
        for text in [
            "1.11.0-dev-git-8d1a8f1-20240101T000000Z~64bit",
            "1.11.0-dev~64bit",
            "1.11.0~rc1",
            "1.11.0-beta2",
        ] {
            assert!(v(text).pre_release, "{text:?}");
        }
        // A dev build of 1.11.0 has neither 1.11.0's fixes nor misses 1.10.12's (it is later).
        let dev = v("1.11.0-dev-git-8d1a8f1~64bit");
        assert!(dev.before(&Version::release([1, 11, 0])));
        assert!(!dev.before(&Version::release([1, 10, 12])));
        assert_eq!(dev.to_string(), "1.11.0-dev");
    }

    #[test]
    fn comparison_is_numeric_not_textual() {
        let fixed = Version::release([1, 10, 11]);
        assert!(v("1.10.7-release~64bit").before(&fixed));
        assert!(v("1.10.10-release").before(&fixed));
        assert!(!v("1.10.11-release").before(&fixed));
        assert!(!v("1.10.12-release  64bit").before(&fixed));
        assert!(!v("1.11.0").before(&fixed));
        assert!(v("1.9.99").before(&fixed));
        // A build 19 commits after 1.10.7 is 1.10.7: a fix released in 1.10.8 is not assumed.
        let after_tag = v("1.10.7-release-19-4b6f1f9a2e~64bit");
        assert!(after_tag.before(&Version::release([1, 10, 8])));
        assert!(!after_tag.before(&Version::release([1, 10, 7])));
        assert_eq!(after_tag.raw, "1.10.7-release-19-4b6f1f9a2e~64bit");
    }

    #[test]
    fn hostile_or_odd_text_is_no_version() {
        for text in [
            "",
            "release",
            "1.10",
            "1..12",
            "1.10.x",
            "1.10.12.4",
            "1.10.123x",
            "9999999.1.1",
            "FreeSWITCH 1.10.12",
            "\u{1b}[31m1.10.12",
            "1.10.-12",
        ] {
            assert_eq!(Version::parse(text), None, "{text:?}");
        }
        // Whatever follows is bounded and kept only as text.
        let long = format!("1.10.12-{}", "x".repeat(500));
        let got = v(&long);
        assert_eq!(got.raw.chars().count(), MAX_RAW);
        assert_eq!(got.numbers, [1, 10, 12]);
    }
}
