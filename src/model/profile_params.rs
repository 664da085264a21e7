//! One `<param>` of every SIP profile, as FreeSWITCH loads it: for settings the model has no
//! dedicated reading of (the FS-VULN mitigations, e.g. `auth-messages`).

use crate::conf::xml;

use super::HostModel;

/// One profile's value of the param.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileParam {
    /// The file that defines the profile (absolute path).
    pub file: String,
    /// `<profile name=...>`.
    pub name: String,
    /// The value FreeSWITCH applies (the last one in `<settings>`, `$${var}` expanded), or
    /// None when the profile does not set it.
    pub value: Option<String>,
}

/// Every profile's value, and the files FreeSWITCH could not load.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfileParams {
    pub profiles: Vec<ProfileParam>,
    pub unloadable: Vec<String>,
}

impl HostModel<'_> {
    /// `param` in the `<settings>` of every profile of sip_profiles/*.xml (sofia.conf.xml loads
    /// them all), as [`HostModel::sip_profiles`] reads the ports.
    pub fn profile_param(&self, param: &str) -> ProfileParams {
        let mut out = ProfileParams::default();
        for file in self.files.conf_dir_files("sip_profiles", ".xml") {
            let Some(text) = file.text() else {
                out.unloadable
                    .push(format!("{}: not readable as text", file.path));
                continue;
            };
            let tags = match xml::scan(text) {
                Ok(t) => t,
                Err(e) => {
                    out.unloadable.push(format!("{}: {e}", file.path));
                    continue;
                }
            };
            for t in &tags {
                if t.name == "profile" && t.kind != xml::TagKind::End {
                    out.profiles.push(ProfileParam {
                        file: file.path.clone(),
                        name: t.attr("name").map(|a| a.value.clone()).unwrap_or_default(),
                        value: None,
                    });
                    continue;
                }
                if t.name != "param"
                    || t.kind == xml::TagKind::End
                    || t.parent() != Some("settings")
                    || !t.parents.iter().any(|p| p == "profile")
                {
                    continue;
                }
                let (Some(n), Some(v), Some(cur)) =
                    (t.attr("name"), t.attr("value"), out.profiles.last_mut())
                else {
                    continue;
                };
                if n.value.trim() == param && cur.file == file.path {
                    // FreeSWITCH applies params in order: the last one wins.
                    cur.value = Some(self.vars().expand_text(&v.value));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use crate::harden::HostFacts;
    use crate::model::HostModel;

    #[test]
    fn each_profile_gets_its_last_value_expanded_and_unset_is_none() {
        let facts = HostFacts::with_conf(
            "/etc/freeswitch",
            &[
                (
                    "vars.xml",
                    "<include><X-PRE-PROCESS cmd=\"set\" data=\"am=true\"/></include>",
                ),
                (
                    "sip_profiles/internal.xml",
                    "<profile name=\"internal\"><settings>\
                     <param name=\"auth-calls\" value=\"true\"/></settings></profile>",
                ),
                (
                    "sip_profiles/external.xml",
                    "<profile name=\"external\"><settings>\
                     <param name=\"auth-messages\" value=\"false\"/>\
                     <param name=\"auth-messages\" value=\"$${am}\"/></settings>\
                     <gateways><param name=\"auth-messages\" value=\"no\"/></gateways></profile>",
                ),
                ("sip_profiles/broken.xml", "<profile name=\"b\"><settings>"),
            ],
        );
        let m = HostModel::new(&facts);
        let p = m.profile_param("auth-messages");
        let got: Vec<(&str, Option<&str>)> = p
            .profiles
            .iter()
            .map(|p| (p.name.as_str(), p.value.as_deref()))
            .collect();
        assert_eq!(got, [("external", Some("true")), ("internal", None)]);
        assert_eq!(
            p.profiles[0].file,
            "/etc/freeswitch/sip_profiles/external.xml"
        );
        assert_eq!(p.unloadable.len(), 1, "{:?}", p.unloadable);
        assert!(p.unloadable[0].starts_with("/etc/freeswitch/sip_profiles/broken.xml: "));
    }
}
