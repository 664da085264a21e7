//! A password or other credential that must never be printed.
//!
//! `Secret` is a plain `String` wrapper: `Debug` and `Display` print `***`, so a secret that ends
//! up in a struct, an error or a log line by accident is masked. The only way to the text is
//! [`Secret::expose`], which makes every use greppable. Deliberately not `Serialize`: writing a
//! secret anywhere must be an explicit `expose()`.

use std::fmt;

/// A credential whose text is masked in `Debug` and `Display`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: impl Into<String>) -> Self {
        Secret(text.into())
    }

    /// The secret text. Call it only where the text must go on the wire or into a file.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Secret {
    fn from(text: String) -> Self {
        Secret(text)
    }
}

impl From<&str> for Secret {
    fn from(text: &str) -> Self {
        Secret(text.to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_are_masked() {
        let s = Secret::new("hunter2-ClueCon");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(format!("{:#?}", Some(s.clone())), "Some(\n    ***,\n)");
        assert_eq!(s.expose(), "hunter2-ClueCon");
    }

    #[test]
    fn masked_inside_containing_structs() {
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Login {
            user: String,
            password: Secret,
        }
        let l = Login {
            user: "fs".into(),
            password: "s3cr3t".into(),
        };
        let shown = format!("{l:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("***"));
    }
}
