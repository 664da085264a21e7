//! Fact units: a fact is one type with a section name, a snippet and a typed parser.
//!
//! A command lists the units it needs; [`Script::of_units`] joins their snippets into the one
//! round trip and [`Sections::get`] gives each unit's typed value back, so no consumer reads a
//! section's text. Every unit is listed once in [`REGISTRY`]; a unit test proves the names
//! unique there, and [`Script::add`] refuses a name twice in one script.

use std::any::TypeId;

use crate::inventory::Host;

use super::{Script, Sections};

/// What a snippet may depend on: the host's inventory entry (its `conf_dir`, its login user),
/// the absolute files the command reads beside FreeSWITCH's config, and the config files it
/// reads beyond [`super::CONF_FILES`] (globs relative to the config dir, in the same tar).
pub struct ScriptInput<'a> {
    pub host: &'a Host,
    pub files: &'a [String],
    pub conf_globs: &'a [&'static str],
}

/// Why a fact's section gave no value. The fact's name is in every variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FactError {
    /// The snippet failed where its output means nothing (e.g. the command is missing).
    #[error("the {fact} probe did not run on the host (status {status:?})")]
    NotRun {
        fact: &'static str,
        status: Option<i32>,
    },
    /// The text is not what the snippet prints: a hostile or broken host.
    #[error("facts output from the host is malformed: {fact}: {what}")]
    Malformed { fact: &'static str, what: String },
}

/// One fact: a uniquely named section, the read-only snippet that prints it (run as root on an
/// untrusted host: bounded, no write), and the parser of its untrusted text and exit status
/// (`None`: the section is not in the output). Parsers never panic.
pub trait Fact: 'static {
    const NAME: &'static str;
    type Value;
    fn snippet(input: &ScriptInput<'_>) -> String;
    fn parse(text: &str, status: Option<i32>) -> Result<Self::Value, FactError>;
}

/// One unit in one place: the type, its section name and value, the snippet (with the
/// [`ScriptInput`] bound to the given name) and the parser (text and status bound):
///
/// ```text
/// fact! {
///     /// Is the `nft` command there?
///     NftCmd: "nft" => bool,
///     snippet(_input) { "command -v nft".into() }
///     parse(text, _status) { Ok(!text.trim().is_empty()) }
/// }
/// ```
macro_rules! fact {
    (
        $(#[$doc:meta])*
        $unit:ident : $name:expr => $value:ty,
        snippet($input:pat) $snippet:block
        parse($text:pat, $status:pat) $parse:block
    ) => {
        $(#[$doc])*
        pub struct $unit;
        impl $crate::facts::Fact for $unit {
            const NAME: &'static str = $name;
            type Value = $value;
            fn snippet($input: &$crate::facts::ScriptInput<'_>) -> String $snippet
            fn parse(
                $text: &str,
                $status: Option<i32>,
            ) -> Result<$value, $crate::facts::FactError> $parse
        }
    };
}
pub(crate) use fact;

/// A fact as a value, for the lists a command's script is built from.
#[derive(Clone, Copy)]
pub struct Unit {
    pub name: &'static str,
    id: fn() -> TypeId,
    snippet: fn(&ScriptInput<'_>) -> String,
}

impl Unit {
    pub const fn of<F: Fact>() -> Unit {
        Unit {
            name: F::NAME,
            id: TypeId::of::<F>,
            snippet: F::snippet,
        }
    }

    fn same(&self, other: &Unit) -> bool {
        (self.id)() == (other.id)()
    }
}

impl std::fmt::Debug for Unit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl Script {
    /// The script of these units, each run once: a unit listed twice (two steps need it) is
    /// added once; two different units with one name panic in [`Script::add`].
    pub fn of_units(input: &ScriptInput<'_>, units: &[Unit]) -> Script {
        let mut script = Script::new();
        let mut added: Vec<Unit> = Vec::new();
        for u in units {
            if added.iter().any(|a| a.same(u)) {
                continue;
            }
            script.add(u.name, &(u.snippet)(input));
            added.push(*u);
        }
        script
    }
}

impl Sections {
    /// The typed value of fact `F` (its parser on its section's text and status).
    pub fn get<F: Fact>(&self) -> Result<F::Value, FactError> {
        F::parse(self.text(F::NAME), self.status(F::NAME))
    }
}

/// Every fact unit of fsfleet, once: the base facts, the config files and the single units of
/// harden's steps, the audit's units.
pub const REGISTRY: &[&[Unit]] = &[
    super::BASE,
    &[
        Unit::of::<super::ConfFiles>(),
        Unit::of::<super::StaleStages>(),
        Unit::of::<crate::harden::packages::AptProbe>(),
        Unit::of::<crate::harden::fs_cli::Homes>(),
        Unit::of::<crate::harden::modules::ModuleConfs>(),
        Unit::of::<crate::harden::modules::SignalwireAdoption>(),
        Unit::of::<crate::harden::file_modes::SecretConfs>(),
    ],
    crate::audit::evidence::UNITS,
];

/// The units of [`REGISTRY`], one by one.
pub fn registered() -> impl Iterator<Item = &'static Unit> {
    REGISTRY.iter().flat_map(|group| group.iter())
}

/// Section names still added as raw snippets, outside the units: the fail2ban state and the
/// fail2ban-regex proof (`model::fail2ban`), whose snippets take arguments a unit has no place
/// for (the jails to ask, the proof key the controller holds) and are read by the model.
pub const RAW_SECTIONS: &[&str] = &[
    crate::model::fail2ban::STATE_SECTION,
    crate::model::fail2ban::PROOF_SECTION,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_names_are_unique_and_not_raw() {
        let mut names: Vec<&str> = registered().map(|u| u.name).collect();
        names.extend(RAW_SECTIONS);
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(
            sorted.len(),
            names.len(),
            "a name is registered twice: {names:?}"
        );
    }

    #[test]
    fn a_unit_listed_twice_runs_once() {
        let host = Host::with_defaults("h", "192.0.2.1");
        let input = ScriptInput {
            host: &host,
            files: &[],
            conf_globs: &[],
        };
        let s = Script::of_units(
            &input,
            &[
                Unit::of::<super::super::Os>(),
                Unit::of::<super::super::Hostname>(),
                Unit::of::<super::super::Os>(),
            ],
        );
        assert_eq!(s.names().collect::<Vec<_>>(), ["os", "hostname"]);
    }

    #[test]
    fn values_come_back_typed_and_errors_name_their_fact() {
        use crate::audit::evidence::{Creds, IptablesInput};
        use crate::facts::{ConfFiles, ListenFact, UfwStatus};
        let s = Sections::from_pairs(&[
            ("listen", "LISTEN 0 5 127.0.0.1:8021 0.0.0.0:*\n", 0),
            ("ufw_status", "Status: active\n", 0),
            ("audit_creds", "", 3),
            (
                "audit_iptables",
                "-P INPUT DROP\n-A INPUT -p tcp --dport 22 -j ACCEPT\n",
                0,
            ),
            ("files", "F\t/etc/x\t644 root", 0),
        ]);
        let listen = s.get::<ListenFact>().unwrap();
        assert!(listen.ran());
        let on_8021: Vec<String> = listen
            .listeners
            .unwrap()
            .into_iter()
            .filter(|l| l.port == 8021)
            .map(|l| l.address)
            .collect();
        assert_eq!(on_8021, ["127.0.0.1"]);
        assert!(s.get::<UfwStatus>().unwrap().active);
        let ipt = s.get::<IptablesInput>().unwrap();
        assert_eq!(ipt.policy.as_deref(), Some("DROP"));
        assert_eq!(ipt.accepting(22).len(), 1);
        assert!(ipt.accepting(8021).is_empty());
        let e = s.get::<Creds>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "the audit_creds probe did not run on the host (status Some(3))"
        );
        let e = s.get::<ConfFiles>().unwrap_err();
        assert!(
            matches!(&e, FactError::Malformed { fact: "files", .. }),
            "{e}"
        );
        // A section the script did not run: the parser sees no text and no status.
        assert!(s.get::<crate::facts::FsStatus>().unwrap().status.is_none());
        assert!(!Sections::default().get::<ListenFact>().unwrap().ran());
    }

    struct OtherOs;
    impl Fact for OtherOs {
        const NAME: &'static str = "os";
        type Value = ();
        fn snippet(_: &ScriptInput<'_>) -> String {
            "uname -a".into()
        }
        fn parse(_: &str, _: Option<i32>) -> Result<(), FactError> {
            Ok(())
        }
    }

    #[test]
    #[should_panic(expected = "registered twice")]
    fn two_units_of_one_name_are_refused() {
        let host = Host::with_defaults("h", "192.0.2.1");
        let input = ScriptInput {
            host: &host,
            files: &[],
            conf_globs: &[],
        };
        Script::of_units(
            &input,
            &[Unit::of::<super::super::Os>(), Unit::of::<OtherOs>()],
        );
    }
}
