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
