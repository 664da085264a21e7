//! Config diffs for `--diff`, with secrets masked.

use crate::secret::Secret;

pub const MASK: &str = "********";

/// A compact unified-style diff of two texts: the changed block between the common prefix and
/// suffix lines, with line numbers. Every occurrence of a secret is masked.
pub fn masked_diff(path: &str, old: &str, new: &str, secrets: &[&Secret]) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let max_suffix = a.len().min(b.len()) - prefix;
    let suffix = a
        .iter()
        .rev()
        .zip(b.iter().rev())
        .take(max_suffix)
        .take_while(|(x, y)| x == y)
        .count();
    let mut out = format!(
        "--- {path}\n+++ {path} (fsfleet)\n@@ line {} @@\n",
        prefix + 1
    );
    for l in &a[prefix..a.len() - suffix] {
        out.push_str(&format!("-{}\n", mask(l, secrets)));
    }
    for l in &b[prefix..b.len() - suffix] {
        out.push_str(&format!("+{}\n", mask(l, secrets)));
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
        assert!(d.contains("@@ line 2 @@\n-<X data=\"default_password=1234\"/>\n+<X data=\"default_password=********\"/>\n"), "{d}");
        assert!(!d.contains(pw.expose()));
        assert!(!d.contains("\n-a") && !d.contains("\n-c"));
        // An inserted line.
        let d = masked_diff("p", "x\n</settings>\n", "x\n<param/>\n</settings>\n", &[]);
        assert!(d.ends_with("@@ line 2 @@\n+<param/>\n"), "{d}");
    }
}
