//! How an error and its causes become one line of text.
//!
//! Convention: an error's `Display` says what failed in its own terms and does NOT repeat its
//! `#[source]`; whoever turns the error into text for a person (the CLI edge, an audit finding)
//! walks the chain with [`chain`], so each cause appears exactly once.

use std::error::Error;

/// `outer: cause: root cause`. A cause whose text the line already ends with is left out: an
/// error from outside fsfleet may have put its source into its own message.
pub fn chain(e: &(dyn Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !text.is_empty() && !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read inventory {path}")]
    struct Outer {
        path: String,
        #[source]
        source: Middle,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("line 3")]
    struct Middle {
        #[source]
        source: std::io::Error,
    }

    /// Repeats its source in its message, as some errors from other crates do.
    #[derive(Debug, thiserror::Error)]
    #[error("wrapped: {source}")]
    struct Repeating {
        #[source]
        source: std::io::Error,
    }

    fn nested() -> Outer {
        Outer {
            path: "/x/inv.toml".into(),
            source: Middle {
                source: std::io::Error::other("permission denied"),
            },
        }
    }

    #[test]
    fn a_nested_error_prints_each_cause_exactly_once() {
        let line = chain(&nested());
        assert_eq!(
            line,
            "cannot read inventory /x/inv.toml: line 3: permission denied"
        );
        let e = Repeating {
            source: std::io::Error::other("permission denied"),
        };
        assert_eq!(chain(&e), "wrapped: permission denied");
        // The CLI edge prints through anyhow: the same text.
        let any = anyhow::Error::new(nested());
        assert_eq!(chain(any.as_ref()), line);
        assert_eq!(format!("{any:#}"), line);
    }

    /// fsfleet's errors that reach the CLI edge with a source: the message leaves it out, so the
    /// chain (what `fsfleet: ...` prints) names each cause once.
    #[test]
    fn fsfleet_errors_do_not_repeat_their_source() {
        use std::path::PathBuf;
        let io = || std::io::Error::other("permission denied");
        let errors: Vec<(Box<dyn Error + Send + Sync>, &str)> = vec![
            (
                Box::new(crate::model::ModelError::Conf {
                    path: "/etc/freeswitch/vars.xml".into(),
                    source: crate::conf::ConfError::Malformed("unclosed tag".into()),
                }),
                "unclosed tag",
            ),
            (
                Box::new(crate::inventory::InventoryError::Read {
                    path: PathBuf::from("/x/inv.toml"),
                    source: io(),
                }),
                "permission denied",
            ),
            (
                Box::new(crate::inventory::InventoryError::LimitFile {
                    spec: "retry".into(),
                    tried: vec![PathBuf::from("/x/retry")],
                    source: io(),
                }),
                "permission denied",
            ),
            (
                Box::new(crate::inventory::InventoryError::SshConfig(
                    crate::ssh::config::SshConfigError::Read {
                        path: PathBuf::from("/root/.ssh/config"),
                        source: io(),
                    },
                )),
                "permission denied",
            ),
            (
                Box::new(crate::cmd::CmdError::from(
                    "0".parse::<crate::fleet::Serial>().unwrap_err(),
                )),
                "--serial",
            ),
            (
                Box::new(crate::audit::AuditError::Output(io())),
                "permission denied",
            ),
        ];
        for (e, cause) in errors {
            let line = chain(e.as_ref());
            assert_eq!(line.matches(cause).count(), 1, "{line}");
            let any = anyhow::Error::from_boxed(e);
            assert_eq!(format!("{any:#}"), line);
        }
    }
}
