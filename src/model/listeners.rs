//! The host's TCP listeners: `ss -Hltnp` with the owners the kernel reports (the facts'
//! [`LISTEN`](crate::facts::LISTEN) section, parsed by [`crate::facts::parse_listeners`]). One
//! reading for every question about them: whether the Event Socket listens beyond loopback
//! (audit FS-ESL-02) and whose listener a password would go to ([`crate::esl_target`]).

use crate::facts::{FactError, ListenFact, Listener, Sections};

#[derive(Debug, thiserror::Error)]
pub enum ListenersError {
    #[error("`ss -Hltnp` did not run on the host (status {status:?})")]
    NotRun { status: Option<i32> },
    #[error("the listeners `ss -Hltnp` printed could not be read")]
    Malformed(#[source] FactError),
}

/// Every TCP listener of the facts' listen unit. A line that cannot be placed is an error,
/// never skipped: a listener overlooked could be the one a password goes to.
pub fn from_sections(s: &Sections) -> Result<Vec<Listener>, ListenersError> {
    let listen = s.get::<ListenFact>().map_err(ListenersError::Malformed)?;
    match listen.status {
        Some(0) => listen.listeners.map_err(ListenersError::Malformed),
        status => Err(ListenersError::NotRun { status }),
    }
}

/// The listeners on TCP `port`.
pub fn on_port(listeners: &[Listener], port: u16) -> Vec<&Listener> {
    listeners.iter().filter(|l| l.port == port).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts;

    #[test]
    fn reads_the_listen_section_or_says_why_not() {
        let s = Sections::from_pairs(&[(
            facts::LISTEN,
            "LISTEN 0 5 127.0.0.1:8021 0.0.0.0:* uid:999 ino:1 sk:1 <->\n\
             LISTEN 0 5 [::]:5060 [::]:* ino:2 sk:2 <->\n",
            0,
        )]);
        let l = from_sections(&s).unwrap();
        assert_eq!(
            on_port(&l, 8021)
                .iter()
                .map(|l| (l.socket(), l.uid))
                .collect::<Vec<_>>(),
            [("127.0.0.1:8021".to_string(), Some(999))]
        );
        let s = Sections::from_pairs(&[(facts::LISTEN, "", 127)]);
        assert!(matches!(
            from_sections(&s),
            Err(ListenersError::NotRun { status: Some(127) })
        ));
        assert!(matches!(
            from_sections(&Sections::default()),
            Err(ListenersError::NotRun { status: None })
        ));
        let s = Sections::from_pairs(&[(facts::LISTEN, "LISTEN 0 5 garbage 0.0.0.0:*\n", 0)]);
        let e = from_sections(&s).unwrap_err();
        let line = crate::errors::chain(&e);
        assert!(
            line.contains("could not be read") && line.contains("garbage"),
            "{line}"
        );
    }
}
