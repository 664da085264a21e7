//! Dialplan controls: the toll-fraud paths the stock dialplan ships with.

use crate::conf::xml::{self, TagKind};

use super::evidence::Evidence;
use super::evidence::text_of;
use super::sip::{compact_ids, line_of, users};
use super::{Control, ControlError, Finding, Severity};

pub const CONTROLS: &[Control] = &[
    Control {
        id: "FS-DP-01",
        family: "Dialplan",
        severity: Severity::High,
        title: "No extension bridges arbitrary sip: URIs out (stock sip_uri)",
        rationale: "The stock `sip_uri` extension bridges any dialled sip: URI through a SIP \
                    profile: one registered phone (or a guessed password) can call anywhere on the \
                    Internet from your address.",
        remediation: "Delete the sip_uri extension from dialplan/default.xml (or restrict it to the \
                      destinations you need), then `reloadxml`.",
        baseline: false,
        eval: sip_uri,
    },
    Control {
        id: "FS-DP-02",
        family: "Dialplan",
        severity: Severity::High,
        title: "The example gateway extensions are removed",
        rationale: "dialplan/default/01_example.com.xml routes 7, 11 and 011+ digit numbers to \
                    ${default_gateway}: once a real gateway is configured, any user with toll_allow \
                    can dial international numbers.",
        remediation: "Delete dialplan/default/01_example.com.xml (write your own outbound routes), \
                      then `reloadxml`.",
        baseline: false,
        eval: example_gateways,
    },
    Control {
        id: "FS-DP-03",
        family: "Dialplan",
        severity: Severity::High,
        title: "No user is allowed international calls by default",
        rationale: "Every stock user has toll_allow=domestic,international,local; toll fraud is \
                    international calls to premium numbers.",
        remediation: "Remove `international` from the toll_allow variable of users who do not need \
                      it (directory/default/*.xml), then `reloadxml`.",
        baseline: false,
        eval: international_users,
    },
];

/// One `<extension>` of a dialplan file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    pub name: String,
    pub file: String,
    pub line: usize,
    /// `expression` of every condition.
    pub expressions: Vec<String>,
    /// `data` of every bridge action (and anti-action).
    pub bridges: Vec<String>,
}

/// Every live (uncommented) extension of the default context files.
pub fn extensions(ev: &Evidence) -> Result<Vec<Extension>, ControlError> {
    let dir = ev.conf_dir()?;
    let mut files = Vec::new();
    if let Some(f) = ev.facts.files.conf("dialplan/default.xml") {
        files.push(f);
    }
    files.extend(ev.facts.files.conf_dir_files("dialplan/default", ".xml"));
    if files.is_empty() {
        return Err(ControlError::Missing(format!("{dir}/dialplan/default.xml")));
    }
    let mut out = Vec::new();
    for f in files {
        let rel = f.rel_path(dir);
        let text = text_of(f)?;
        let tags = xml::scan(text).map_err(|source| ControlError::Xml {
            path: f.path.clone(),
            source,
        })?;
        let mut cur: Option<Extension> = None;
        for t in &tags {
            match (t.name.as_str(), t.kind) {
                ("extension", TagKind::Start) => {
                    cur = Some(Extension {
                        name: t.attr("name").map(|a| a.value.clone()).unwrap_or_default(),
                        file: rel.clone(),
                        line: line_of(text, t.span.start),
                        expressions: vec![],
                        bridges: vec![],
                    })
                }
                ("extension", TagKind::End) => out.extend(cur.take()),
                ("condition", TagKind::Start | TagKind::Empty) => {
                    if let (Some(e), Some(x)) = (cur.as_mut(), t.attr("expression")) {
                        e.expressions.push(x.value.clone());
                    }
                }
                ("action" | "anti-action", TagKind::Start | TagKind::Empty) => {
                    if let (Some(e), Some(app), Some(data)) =
                        (cur.as_mut(), t.attr("application"), t.attr("data"))
                        && app.value == "bridge"
                    {
                        e.bridges.push(data.value.clone());
                    }
                }
                _ => {}
            }
        }
    }
    Ok(out)
}

fn sip_uri(ev: &Evidence) -> Result<Finding, ControlError> {
    let exts = extensions(ev)?;
    let bad: Vec<String> = exts
        .iter()
        .filter(|e| e.expressions.iter().any(|x| x.starts_with("^sip:")))
        .filter_map(|e| {
            let b = e.bridges.iter().find(|b| b.starts_with("sofia/"))?;
            Some(format!(
                "{}:{}: extension {} bridges any dialled sip: URI out ({b})",
                e.file, e.line, e.name
            ))
        })
        .collect();
    Ok(Finding::fail_if(
        bad,
        vec![format!(
            "no extension of the default context bridges dialled sip: URIs ({} extensions read)",
            exts.len()
        )],
    ))
}

fn example_gateways(ev: &Evidence) -> Result<Finding, ControlError> {
    let exts = extensions(ev)?;
    let bad: Vec<String> = exts
        .iter()
        .filter(|e| {
            e.name.ends_with("example.com")
                || e.bridges
                    .iter()
                    .any(|b| b.contains("sofia/gateway/${default_gateway}"))
        })
        .map(|e| {
            format!(
                "{}:{}: example extension {} routes to the default gateway",
                e.file, e.line, e.name
            )
        })
        .collect();
    Ok(Finding::fail_if(
        bad,
        vec!["no example gateway extension in the default context".into()],
    ))
}

fn international_users(ev: &Evidence) -> Result<Finding, ControlError> {
    let users = users(ev)?;
    let intl: Vec<&str> = users
        .iter()
        .filter(|u| {
            u.toll_allow.as_deref().is_some_and(|t| {
                ev.model()
                    .vars()
                    .expand_text(t)
                    .split(',')
                    .any(|w| w.trim() == "international")
            })
        })
        .map(|u| u.id.as_str())
        .collect();
    Ok(if intl.is_empty() {
        Finding::pass(vec![format!(
            "no user of {} has international in toll_allow",
            users.len()
        )])
    } else {
        Finding::fail(vec![format!(
            "{} users have international in toll_allow: {}",
            intl.len(),
            compact_ids(&intl)
        )])
    })
}

#[cfg(test)]
mod tests {
    use super::super::evidence::testing::*;
    use super::super::{Live, Status};
    use super::*;

    #[test]
    fn stock_dialplan_has_the_three_toll_fraud_paths() {
        let ev = stock();
        assert_eq!(
            eval("FS-DP-01", &ev).evidence,
            [
                "dialplan/default.xml:347: extension sip_uri bridges any dialled sip: URI out (sofia/${use_profile}/$1)"
            ]
        );
        let f = eval("FS-DP-02", &ev);
        assert_eq!(f.status, Status::Fail);
        assert_eq!(
            f.evidence,
            [
                "dialplan/default/01_example.com.xml:3: example extension local.example.com routes to the default gateway",
                "dialplan/default/01_example.com.xml:12: example extension domestic.example.com routes to the default gateway",
                "dialplan/default/01_example.com.xml:21: example extension international.example.com routes to the default gateway",
            ]
        );
        assert_eq!(
            eval("FS-DP-03", &ev).evidence,
            ["20 users have international in toll_allow: 1000-1019"]
        );
    }

    #[test]
    fn cleaned_dialplan_passes() {
        let mut files: Vec<(String, String)> = stock_files()
            .into_iter()
            .filter(|(r, _)| r != "dialplan/default/01_example.com.xml")
            .collect();
        edit(&mut files, "dialplan/default.xml", |t| {
            t.replace("^sip:(.*)$", "^9999$")
        });
        for i in 1000..=1019 {
            edit(&mut files, &format!("directory/default/{i}.xml"), |t| {
                t.replace("domestic,international,local", "domestic,local")
            });
        }
        let ev = evidence(&files, &[], Live::default());
        for id in ["FS-DP-01", "FS-DP-02", "FS-DP-03"] {
            let f = eval(id, &ev);
            assert_eq!(f.status, Status::Pass, "{id}: {:?}", f.evidence);
        }
        // The commented-out external_sip_uri of the stock file is not counted.
        assert!(
            extensions(&ev)
                .unwrap()
                .iter()
                .all(|e| e.name != "external_sip_uri")
        );
    }
}
