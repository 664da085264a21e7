//! FreeSWITCH configuration: what fsfleet reads and the surgical edits it makes.

pub mod vars;
pub mod xml;

#[derive(Debug, thiserror::Error)]
pub enum ConfError {
    #[error("not well-formed XML: {0}")]
    Malformed(String),
    #[error("no <settings> section to add the parameter to")]
    NoSettings,
    #[error("refusing to edit: {0} (cannot tell which one FreeSWITCH uses)")]
    Ambiguous(String),
    #[error("no X-PRE-PROCESS set line for {0}; add one by hand where it belongs, then re-run")]
    NoSuchVar(String),
    #[error("refusing to write a value with characters that could change the file's structure")]
    UnsafeValue,
}

pub mod diff;

/// The profile name of a sip_profiles/*.xml file (`<profile name="...">`).
pub fn profile_name(text: &str) -> Result<Option<String>, ConfError> {
    Ok(xml::scan(text)?
        .into_iter()
        .find(|t| t.name == "profile" && t.kind != xml::TagKind::End)
        .and_then(|t| t.attr("name").map(|a| a.value.clone())))
}

/// Whether a directory file sets a SIP credential literally (`password` or `a1-hash` params
/// with a value that is not a `$${var}`): such a file holds a secret at rest.
pub fn holds_literal_password(text: &str) -> bool {
    xml::scan(text).is_ok_and(|tags| {
        tags.iter().any(|t| {
            t.name == "param"
                && t.attr("name")
                    .is_some_and(|n| n.value == "password" || n.value == "a1-hash")
                && t.attr("value")
                    .is_some_and(|v| !v.value.is_empty() && !v.value.starts_with("$${"))
        })
    })
}

#[cfg(test)]
mod password_tests {
    #[test]
    fn literal_directory_passwords_are_told_from_variables() {
        let stock = r#"<user id="1000"><params><param name="password" value="$${default_password}"/><param name="vm-password" value="1000"/></params></user>"#;
        assert!(!super::holds_literal_password(stock));
        let set = r#"<user id="1001"><params><param name="password" value="s3cret-by-hand"/></params></user>"#;
        assert!(super::holds_literal_password(set));
        let hash =
            r#"<user id="1002"><params><param name="a1-hash" value="0123abcd"/></params></user>"#;
        assert!(super::holds_literal_password(hash));
    }
}
