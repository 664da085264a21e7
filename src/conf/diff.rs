//! Config diffs for `--diff`, with secrets masked.
//!
//! A unified diff of the lines that really changed (a longest-common-subsequence line diff, in
//! hunks with [`CONTEXT`] lines around them), so two edits far apart in one file do not show the
//! unchanged lines between them as removed and added again. A line whose only change is a secret
//! would read as the same line twice once masked; it is shown once, as `+`, with the mask marked
//! `******** (changed)`.

use crate::secret::Secret;

pub const MASK: &str = "********";

/// Lines of unchanged context around each change, as `diff -u` shows them.
pub const CONTEXT: usize = 3;

/// Past this many lines in the changed middle of a file the line diff is not computed (its
/// table grows with the square); the middle is then shown as removed and added whole.
const MAX_LCS_LINES: usize = 4000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Keep(usize, usize),
    Del(usize),
    Add(usize),
}

/// The edit script turning `a` into `b`: common prefix and suffix kept, the middle by LCS.
fn edit_script(a: &[&str], b: &[&str]) -> Vec<Op> {
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let max_suffix = a.len().min(b.len()) - prefix;
    let suffix = a
        .iter()
        .rev()
        .zip(b.iter().rev())
        .take(max_suffix)
        .take_while(|(x, y)| x == y)
        .count();
    let (ma, mb) = (&a[prefix..a.len() - suffix], &b[prefix..b.len() - suffix]);
    let mut ops: Vec<Op> = (0..prefix).map(|i| Op::Keep(i, i)).collect();
    if ma.len() + mb.len() > MAX_LCS_LINES {
        ops.extend((0..ma.len()).map(|i| Op::Del(prefix + i)));
        ops.extend((0..mb.len()).map(|j| Op::Add(prefix + j)));
    } else {
        // lcs[i][j]: length of the LCS of ma[i..] and mb[j..].
        let (n, m) = (ma.len(), mb.len());
        let mut lcs = vec![vec![0u32; m + 1]; n + 1];
        for i in (0..n).rev() {
            for j in (0..m).rev() {
                lcs[i][j] = if ma[i] == mb[j] {
                    lcs[i + 1][j + 1] + 1
                } else {
                    lcs[i + 1][j].max(lcs[i][j + 1])
                };
            }
        }
        let (mut i, mut j) = (0, 0);
        while i < n || j < m {
            if i < n && j < m && ma[i] == mb[j] {
                ops.push(Op::Keep(prefix + i, prefix + j));
                i += 1;
                j += 1;
            } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
                // Removals first, as diff -u shows a replaced block.
                ops.push(Op::Del(prefix + i));
                i += 1;
            } else {
                ops.push(Op::Add(prefix + j));
                j += 1;
            }
        }
    }
    let (sa, sb) = (a.len() - suffix, b.len() - suffix);
    ops.extend((0..suffix).map(|k| Op::Keep(sa + k, sb + k)));
    ops
}

/// A unified diff of two texts, secrets masked: `--- path`, `+++ path (fsfleet)`, then hunks
/// `@@ -l,n +l,n @@` of the changed lines with [`CONTEXT`] lines around them. Empty when the
/// texts have the same lines.
pub fn masked_diff(path: &str, old: &str, new: &str, secrets: &[&Secret]) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let ops = edit_script(&a, &b);
    let changed: Vec<usize> = ops
        .iter()
        .enumerate()
        .filter(|(_, op)| !matches!(op, Op::Keep(..)))
        .map(|(k, _)| k)
        .collect();
    if changed.is_empty() {
        return String::new();
    }
    // Hunks: runs of changes whose context windows touch or overlap.
    let mut hunks: Vec<(usize, usize)> = Vec::new();
    for &k in &changed {
        let (lo, hi) = (k.saturating_sub(CONTEXT), (k + CONTEXT + 1).min(ops.len()));
        match hunks.last_mut() {
            Some(last) if lo <= last.1 => last.1 = hi,
            _ => hunks.push((lo, hi)),
        }
    }
    let mut out = format!("--- {path}\n+++ {path} (fsfleet)\n");
    for (lo, hi) in hunks {
        out.push_str(&render_hunk(&ops[lo..hi], &a, &b, secrets));
    }
    out
}

/// One hunk: its header, then its lines. Within a run of removals followed by additions, a
/// removed line and the added line at the same position that read the same once masked are
/// the same line with a new secret: shown once, as an addition marked changed.
fn render_hunk(ops: &[Op], a: &[&str], b: &[&str], secrets: &[&Secret]) -> String {
    let start_a = ops.iter().find_map(|op| match op {
        Op::Keep(i, _) | Op::Del(i) => Some(*i),
        Op::Add(_) => None,
    });
    let start_b = ops.iter().find_map(|op| match op {
        Op::Keep(_, j) | Op::Add(j) => Some(*j),
        Op::Del(_) => None,
    });
    let len_a = ops.iter().filter(|op| !matches!(op, Op::Add(_))).count();
    let len_b = ops.iter().filter(|op| !matches!(op, Op::Del(_))).count();
    // diff -u numbers an empty side by the line before it.
    let head = |start: Option<usize>, len: usize| match start {
        Some(s) => format!("{},{len}", s + 1),
        None => "0,0".to_string(),
    };
    let mut out = format!(
        "@@ -{} +{} @@\n",
        head(start_a, len_a),
        head(start_b, len_b)
    );
    let mut k = 0;
    while k < ops.len() {
        match ops[k] {
            Op::Keep(i, _) => {
                out.push_str(&format!(" {}\n", mask(a[i], secrets)));
                k += 1;
            }
            _ => {
                let dels: Vec<usize> = ops[k..]
                    .iter()
                    .map_while(|op| match op {
                        Op::Del(i) => Some(*i),
                        _ => None,
                    })
                    .collect();
                let adds: Vec<usize> = ops[k + dels.len()..]
                    .iter()
                    .map_while(|op| match op {
                        Op::Add(j) => Some(*j),
                        _ => None,
                    })
                    .collect();
                let same_masked = |(d, n): (&usize, &usize)| {
                    let (old, new) = (mask(a[*d], secrets), mask(b[*n], secrets));
                    old == new && old.contains(MASK)
                };
                let pairs: Vec<bool> = dels.iter().zip(&adds).map(same_masked).collect();
                for (x, d) in dels.iter().enumerate() {
                    if !pairs.get(x).copied().unwrap_or(false) {
                        out.push_str(&format!("-{}\n", mask(a[*d], secrets)));
                    }
                }
                for (x, n) in adds.iter().enumerate() {
                    let line = mask(b[*n], secrets);
                    if pairs.get(x).copied().unwrap_or(false) {
                        out.push_str(&format!("+{}\n", line.replace(MASK, "******** (changed)")));
                    } else {
                        out.push_str(&format!("+{line}\n"));
                    }
                }
                k += dels.len() + adds.len();
            }
        }
    }
    out
}

pub fn mask(line: &str, secrets: &[&Secret]) -> String {
    let mut s = line.to_string();
    for secret in secrets {
        if !secret.expose().is_empty() {
            s = s.replace(secret.expose(), MASK);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_only_the_changed_lines_with_secrets_masked() {
        let pw = Secret::new("Zq8sd7f6g5h4j3k2l1");
        let old = "a\n<X data=\"default_password=1234\"/>\nc\n";
        let new = format!("a\n<X data=\"default_password={}\"/>\nc\n", pw.expose());
        let d = masked_diff("/etc/freeswitch/vars.xml", old, &new, &[&pw]);
        assert_eq!(
            d,
            "--- /etc/freeswitch/vars.xml\n+++ /etc/freeswitch/vars.xml (fsfleet)\n\
             @@ -1,3 +1,3 @@\n a\n-<X data=\"default_password=1234\"/>\n\
             +<X data=\"default_password=********\"/>\n c\n"
        );
        assert!(!d.contains(pw.expose()));
        // An inserted line.
        let d = masked_diff("p", "x\n</settings>\n", "x\n<param/>\n</settings>\n", &[]);
        assert!(
            d.ends_with("@@ -1,2 +1,3 @@\n x\n+<param/>\n </settings>\n"),
            "{d}"
        );
        assert_eq!(masked_diff("p", "same\n", "same\n", &[]), "");
    }

    #[test]
    fn a_secret_replaced_by_another_is_one_line_marked_changed() {
        let old = Secret::new("Old0ld0ld0ld0ld0ld0");
        let new = Secret::new("N3wN3wN3wN3wN3wN3w");
        let d = masked_diff(
            "vars.xml",
            &format!("<X data=\"default_password={}\"/>\n", old.expose()),
            &format!("<X data=\"default_password={}\"/>\n", new.expose()),
            &[&new, &old],
        );
        assert_eq!(
            d,
            "--- vars.xml\n+++ vars.xml (fsfleet)\n@@ -1,1 +1,1 @@\n\
             +<X data=\"default_password=******** (changed)\"/>\n"
        );
    }

    #[test]
    fn edits_far_apart_are_separate_hunks_without_the_unchanged_lines_between() {
        let old: String = (1..=20).map(|i| format!("line {i}\n")).collect();
        let new = old
            .replace("line 2\n", "line two\n")
            .replace("line 18\n", "line eighteen\n");
        let d = masked_diff("f", &old, &new, &[]);
        assert_eq!(d.matches("@@ ").count(), 2, "{d}");
        assert!(
            d.contains("@@ -1,5 +1,5 @@\n line 1\n-line 2\n+line two\n line 3\n"),
            "{d}"
        );
        assert!(d.contains("@@ -15,6 +15,6 @@\n"), "{d}");
        assert!(!d.contains("line 10"), "{d}");
        // Every removed or added line is a real change.
        let changed: Vec<&str> = d
            .lines()
            .filter(|l| l.starts_with(['-', '+']) && !l.starts_with("---") && !l.starts_with("+++"))
            .collect();
        assert_eq!(
            changed,
            ["-line 2", "+line two", "-line 18", "+line eighteen"]
        );
    }

    #[test]
    fn applying_the_script_gives_back_the_new_text() {
        let cases = [
            ("a\nb\nc\n", "a\nc\nd\n"),
            ("", "x\ny\n"),
            ("x\ny\n", ""),
            ("p\nq\nr\ns\n", "s\nr\nq\np\n"),
        ];
        for (old, new) in cases {
            let a: Vec<&str> = old.lines().collect();
            let b: Vec<&str> = new.lines().collect();
            let ops = edit_script(&a, &b);
            let rebuilt: Vec<&str> = ops
                .iter()
                .filter_map(|op| match op {
                    Op::Keep(_, j) | Op::Add(j) => Some(b[*j]),
                    Op::Del(_) => None,
                })
                .collect();
            let kept_a: Vec<&str> = ops
                .iter()
                .filter_map(|op| match op {
                    Op::Keep(i, _) | Op::Del(i) => Some(a[*i]),
                    Op::Add(_) => None,
                })
                .collect();
            assert_eq!(
                (rebuilt, kept_a),
                (b.clone(), a.clone()),
                "{old:?} -> {new:?}"
            );
        }
    }
}
