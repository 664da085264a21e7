//! FS-VULN controls on model variants: versions from each source, fixed/affected/mitigated,
//! sofia-sip's lower bound, unknown versions, hostile text, and the per-host summary.

use super::super::evidence::testing::*;
use super::super::{EslProbe, Live, Status, control};
use super::*;

/// The control of an advisory, by its ID.
fn ctl(id: &str) -> &'static str {
    advisories()
        .unwrap()
        .iter()
        .find(|a| a.id == id)
        .map(|a| a.control.as_str())
        .unwrap_or_else(|| panic!("{id} is not in the catalogue"))
}

const BIN_1_10_12: &str =
    "binary running /usr/bin/freeswitch\nsaid FreeSWITCH version: 1.10.12-release~64bit";

fn with(extra: &[(&str, &str, i32)]) -> Evidence {
    evidence(&stock_files(), extra, Live::default())
}

fn without_verto() -> Vec<(String, String)> {
    let mut files = stock_files();
    edit(&mut files, "autoload_configs/modules.conf.xml", |t| {
        t.replace(
            "<load module=\"mod_verto\"/>",
            "<!-- <load module=\"mod_verto\"/> -->",
        )
    });
    files
}

#[test]
fn every_advisory_has_a_control_in_the_audit_catalogue() {
    let all = advisories().unwrap();
    assert!(all.len() <= EVALS.len(), "raise EVALS");
    for a in all {
        let c = control(&a.control).unwrap();
        assert_eq!(c.severity, a.severity);
        assert!(c.title.starts_with(&a.id), "{}", c.title);
        assert!(!c.baseline);
    }
    assert_eq!(controls().len(), all.len());
}

#[test]
fn stock_1_10_12_names_the_advisories_fixed_later_with_their_fixed_versions() {
    let ev = with(&[("audit_fs_binary", BIN_1_10_12, 0)]);
    for a in advisories().unwrap() {
        let f = control(&a.control).unwrap().run(&ev);
        let applies = a.component == Component::Freeswitch
            && Version::parse("1.10.12").unwrap().before(&a.fixed);
        // The stock tree loads mod_verto but not mod_xml_rpc (only in a comment).
        let mitigated_in_stock = matches!(
            &a.mitigation,
            Some(Mitigation::ModuleNotLoaded { module, .. }) if module != "mod_verto"
        );
        let affected = format!(
            "FreeSWITCH 1.10.12 (freeswitch -version of /usr/bin/freeswitch, the running process) \
             is affected by {}: fixed in {}",
            a.ids(),
            a.fixed
        );
        if applies && mitigated_in_stock {
            assert_eq!(f.status, Status::Pass, "{}: {:?}", a.id, f.evidence);
            assert!(f.evidence[0].starts_with(MITIGATED), "{:?}", f.evidence);
            assert_eq!(f.evidence[1], affected);
        } else if applies {
            assert_eq!(f.status, Status::Fail, "{}: {:?}", a.id, f.evidence);
            assert_eq!(f.evidence[0], affected);
        } else {
            assert_eq!(f.status, Status::Pass, "{}: {:?}", a.id, f.evidence);
            assert!(
                f.evidence[0].contains(&format!("fixed in {}", a.fixed)),
                "{:?}",
                f.evidence
            );
        }
    }
    // The ones that apply to 1.10.12: fixed in 1.11.1 and 1.11.2.
    let f = eval(ctl("CVE-2026-49841"), &ev);
    assert_eq!(
        f.evidence[1..],
        [
            "autoload_configs/modules.conf.xml: mod_verto is loaded".to_string(),
            "not mitigated (it is when mod_verto is not loaded): until the upgrade, remove or \
             comment out `<load module=\"mod_verto\"/>` in autoload_configs/modules.conf.xml and \
             restart FreeSWITCH"
                .to_string(),
        ]
    );
    let f = eval(ctl("CVE-2026-116574"), &ev);
    assert_eq!(f.status, Status::Fail);
    assert_eq!(
        f.evidence[1],
        "no mitigating setting is known: upgrade FreeSWITCH to 1.11.2 or later"
    );
    // Fixed before 1.10.12: passes, naming the version seen and the fix.
    let f = eval(ctl("CVE-2023-51443"), &ev);
    assert_eq!(
        f.evidence,
        [
            "FreeSWITCH 1.10.12 (freeswitch -version of /usr/bin/freeswitch, the running process): \
          not affected by CVE-2023-51443 (GHSA-39gv-hq72-j6m6), fixed in 1.10.11"
        ]
    );
}

#[test]
fn a_module_advisory_is_mitigated_when_the_module_is_not_loaded() {
    let ev = evidence(
        &without_verto(),
        &[("audit_fs_binary", BIN_1_10_12, 0)],
        Live::default(),
    );
    let f = eval(ctl("CVE-2026-49841"), &ev);
    assert_eq!(f.status, Status::Pass, "{:?}", f.evidence);
    assert_eq!(
        f.evidence,
        [
            "mitigated by mod_verto is not loaded (the flaw is in mod_verto: a FreeSWITCH that \
             does not load it does not run the code)",
            "FreeSWITCH 1.10.12 (freeswitch -version of /usr/bin/freeswitch, the running process) \
             is affected by CVE-2026-49841 (GHSA-wfrq-qvg2-f88f): fixed in 1.11.1",
            "autoload_configs/modules.conf.xml: mod_verto is not loaded",
        ]
    );
    // Fixed: no mitigation needed, whatever is loaded.
    let ev = with(&[(
        "audit_fs_binary",
        "binary running /usr/bin/freeswitch\nsaid FreeSWITCH version: 1.11.1-release~64bit",
        0,
    )]);
    let f = eval(ctl("CVE-2026-49841"), &ev);
    assert_eq!(f.status, Status::Pass);
    assert!(f.evidence[0].contains("not affected"), "{:?}", f.evidence);
}

#[test]
fn a_profile_param_advisory_needs_the_param_on_every_profile() {
    let old = "binary running /usr/bin/freeswitch\nsaid FreeSWITCH version: 1.10.6-release~64bit";
    let id = ctl("CVE-2021-37624");
    // Stock profiles do not set auth-messages: affected, not mitigated, each profile named.
    let f = eval(id, &with(&[("audit_fs_binary", old, 0)]));
    assert_eq!(f.status, Status::Fail, "{:?}", f.evidence);
    assert!(
        f.evidence.contains(
            &"/etc/freeswitch/sip_profiles/internal.xml: profile internal auth-messages = not set"
                .to_string()
        ),
        "{:?}",
        f.evidence
    );
    // Set on one profile only: still not mitigated, the other named.
    let mut files = stock_files();
    let profiles: Vec<String> = files
        .iter()
        .filter(|(r, _)| r.starts_with("sip_profiles/") && r.ends_with(".xml"))
        .map(|(r, _)| r.clone())
        .collect();
    assert!(profiles.len() >= 2, "{profiles:?}");
    edit(&mut files, "sip_profiles/internal.xml", |t| {
        t.replacen(
            "<settings>",
            "<settings>\n    <param name=\"auth-messages\" value=\"true\"/>",
            1,
        )
    });
    let f = eval(
        id,
        &evidence(&files, &[("audit_fs_binary", old, 0)], Live::default()),
    );
    assert_eq!(f.status, Status::Fail);
    assert!(
        !f.evidence
            .iter()
            .any(|e| e.contains("profile internal auth-messages")),
        "{:?}",
        f.evidence
    );
    // On every profile (any of FreeSWITCH's true values): mitigated.
    for p in &profiles {
        edit(&mut files, p, |t| {
            if t.contains("name=\"auth-messages\"") {
                t.to_string()
            } else {
                t.replacen(
                    "<settings>",
                    "<settings>\n    <param name=\"auth-messages\" value=\"yes\"/>",
                    1,
                )
            }
        });
    }
    let f = eval(
        id,
        &evidence(&files, &[("audit_fs_binary", old, 0)], Live::default()),
    );
    assert_eq!(f.status, Status::Pass, "{:?}", f.evidence);
    assert!(f.evidence[0].starts_with("mitigated by every SIP profile sets auth-messages to true"));
}

#[test]
fn the_version_comes_from_the_best_source_there_is() {
    let id = ctl("CVE-2023-51443");
    // The running binary was replaced: the Event Socket's status tells what runs.
    let live = Live {
        configured: EslProbe::Accepted {
            status: Some("FreeSWITCH (Version 1.10.10-release  64bit) is ready".into()),
        },
        ..Live::default()
    };
    let ev = evidence(
        &stock_files(),
        &[(
            "audit_fs_binary",
            "replaced /usr/bin/freeswitch (deleted)\nbinary installed /usr/bin/freeswitch\n\
             said FreeSWITCH version: 1.10.12-release~64bit",
            0,
        )],
        live,
    );
    let f = eval(id, &ev);
    assert_eq!(f.status, Status::Fail);
    assert!(
        f.evidence[0].starts_with("FreeSWITCH 1.10.10 (Event Socket status) is affected"),
        "{:?}",
        f.evidence
    );
    // fs_cli's status of a packaged build.
    let ev = with(&[(
        "fs_status",
        "UP 0 years\nFreeSWITCH (Version 1.10.7 -release-19-4b6f1f9a2egit 4b6f1f9 2021-10-24 64bit) is ready\n",
        0,
    )]);
    let f = eval(id, &ev);
    assert!(
        f.evidence[0].starts_with("FreeSWITCH 1.10.7 (fs_cli -x status) is affected"),
        "{:?}",
        f.evidence
    );
    // FreeSWITCH stopped: the installed binary, then the package.
    let ev = with(&[(
        "audit_fs_binary",
        "binary installed /usr/local/freeswitch/bin/freeswitch\nsaid FreeSWITCH version: 1.10.11-release~64bit",
        0,
    )]);
    let f = eval(id, &ev);
    assert_eq!(f.status, Status::Pass);
    assert!(
        f.evidence[0].contains("installed; no FreeSWITCH runs from it"),
        "{:?}",
        f.evidence
    );
    let ev = with(&[
        ("audit_fs_binary", "none", 0),
        (
            "audit_vuln_packages",
            "pkg freeswitch 1.10.9~release~15~abc~bookworm-1~bookworm+1",
            0,
        ),
    ]);
    let f = eval(id, &ev);
    assert_eq!(f.status, Status::Fail);
    assert!(
        f.evidence[0].starts_with(
            "FreeSWITCH 1.10.9 (package freeswitch 1.10.9~release~15~abc~bookworm-1~bookworm+1)"
        ),
        "{:?}",
        f.evidence
    );
}

#[test]
fn an_unknown_version_is_an_error_that_says_what_was_tried() {
    for extra in [
        vec![],
        vec![(
            "audit_fs_binary",
            "unsafe /opt/fs/bin: writable by group or others (mode 777)",
            0,
        )],
        // What a hostile host might print instead of a version.
        vec![(
            "audit_fs_binary",
            "binary running /usr/bin/freeswitch\nsaid FreeSWITCH version: \u{1b}[2J99.x",
            0,
        )],
    ] {
        let f = eval(ctl("CVE-2026-49841"), &with(&extra));
        assert_eq!(f.status, Status::Error, "{extra:?}: {:?}", f.evidence);
        assert!(
            f.evidence[0].starts_with("the FreeSWITCH version could not be read: "),
            "{:?}",
            f.evidence
        );
    }
    let f = eval(
        ctl("CVE-2026-49841"),
        &with(&[(
            "audit_fs_binary",
            "unsafe /opt/fs/bin: writable by group or others (mode 777)",
            0,
        )]),
    );
    assert!(
        f.evidence[0].contains("freeswitch -version not run (/opt/fs/bin: writable by group"),
        "{:?}",
        f.evidence
    );
}

#[test]
fn sofia_sip_from_its_package_its_pc_file_or_freeswitchs_requirement() {
    let id = ctl("CVE-2022-31003");
    // No package, no .pc: FreeSWITCH 1.10.12 builds only against sofia-sip 1.13.17 or later.
    let ev = with(&[("audit_fs_binary", BIN_1_10_12, 0)]);
    let f = eval(id, &ev);
    assert_eq!(f.status, Status::Pass, "{:?}", f.evidence);
    assert!(
        f.evidence[0].starts_with("sofia-sip at least 1.13.17 (no libsofia-sip-ua package"),
        "{:?}",
        f.evidence
    );
    // The package says 1.13.7: affected.
    let ev = with(&[
        ("audit_fs_binary", BIN_1_10_12, 0),
        (
            "audit_vuln_packages",
            "pkg libsofia-sip-ua0 1.13.7-1~bookworm+1",
            0,
        ),
    ]);
    let f = eval(id, &ev);
    assert_eq!(f.status, Status::Fail);
    assert_eq!(
        f.evidence[0],
        "sofia-sip 1.13.7 (package libsofia-sip-ua0 1.13.7-1~bookworm+1) is affected by \
         CVE-2022-31003 (GHSA-8w5j-6g2j-pxcp): fixed in 1.13.8"
    );
    // A source build's pkg-config file.
    let ev = with(&[(
        "audit_vuln_packages",
        "pc /usr/local/lib/pkgconfig/sofia-sip-ua.pc 1.13.17",
        0,
    )]);
    let f = eval(id, &ev);
    assert_eq!(f.status, Status::Pass);
    assert!(
        f.evidence[0].starts_with(
            "sofia-sip 1.13.17 (/usr/local/lib/pkgconfig/sofia-sip-ua.pc: Version 1.13.17)"
        ),
        "{:?}",
        f.evidence
    );
    // Old FreeSWITCH and nothing about sofia-sip: undecided, never a pass.
    let ev = with(&[(
        "audit_fs_binary",
        "binary running /usr/bin/freeswitch\nsaid FreeSWITCH version: 1.10.7-release~64bit",
        0,
    )]);
    let f = eval(id, &ev);
    assert_eq!(f.status, Status::Error, "{:?}", f.evidence);
    assert!(
        f.evidence[0].contains("sets no known lower bound"),
        "{:?}",
        f.evidence
    );
}

#[test]
fn the_summary_counts_known_and_mitigated() {
    use super::super::command::ControlResult;
    let run = |ev: &Evidence| -> Vec<ControlResult> {
        controls()
            .iter()
            .map(|c| ControlResult::new(c, c.run(ev), false, Some("/etc/freeswitch")))
            .collect()
    };
    let stock = run(&with(&[("audit_fs_binary", BIN_1_10_12, 0)]));
    let applies = advisories()
        .unwrap()
        .iter()
        .filter(|a| {
            a.component == Component::Freeswitch
                && Version::parse("1.10.12").unwrap().before(&a.fixed)
        })
        .count();
    assert!(applies >= 3, "{applies}");
    // Stock does not load mod_xml_rpc: its advisory is mitigated there.
    let by_module = |m: &str| {
        advisories()
            .unwrap()
            .iter()
            .filter(|a| {
                matches!(&a.mitigation, Some(Mitigation::ModuleNotLoaded { module, .. }) if module == m)
                    && Version::parse("1.10.12").unwrap().before(&a.fixed)
            })
            .count()
    };
    let stock_mitigated = by_module("mod_xml_rpc");
    let s = Summary::of(&stock);
    assert_eq!(
        (s.known, s.mitigated, s.undecided),
        (applies, stock_mitigated, 0)
    );
    assert_eq!(
        s.line(),
        format!("{applies} known vulnerabilities, {stock_mitigated} mitigated")
    );
    let off = run(&evidence(
        &without_verto(),
        &[("audit_fs_binary", BIN_1_10_12, 0)],
        Live::default(),
    ));
    let s = Summary::of(&off);
    assert_eq!(
        (s.known, s.mitigated),
        (applies, stock_mitigated + by_module("mod_verto"))
    );
    // Waived controls count by what they found.
    let waived: Vec<ControlResult> = controls()
        .iter()
        .map(|c| {
            ControlResult::new(
                c,
                c.run(&with(&[("audit_fs_binary", BIN_1_10_12, 0)])),
                true,
                None,
            )
        })
        .collect();
    assert_eq!(Summary::of(&waived).known, applies);
    let unknown = Summary::of(&run(&stock_evidence_without_versions()));
    assert_eq!(unknown.known, 0);
    assert!(unknown.undecided > 0);
    assert!(
        unknown.line().ends_with("undecided (version unknown)"),
        "{}",
        unknown.line()
    );
}

fn stock_evidence_without_versions() -> Evidence {
    with(&[])
}

#[test]
fn a_module_still_mapped_by_the_running_process_is_not_mitigated_yet() {
    let maps = |mods: &str| format!("maps read\nmod mod_sofia\n{mods}");
    let id = ctl("CVE-2026-49841");
    // Unloaded in the config but still mapped: not mitigated until FreeSWITCH restarts.
    let with_verto = maps("mod mod_verto\n");
    let ev = evidence(
        &without_verto(),
        &[
            ("audit_fs_binary", BIN_1_10_12, 0),
            ("audit_fs_modules", with_verto.as_str(), 0),
        ],
        Live::default(),
    );
    let f = eval(id, &ev);
    assert_eq!(f.status, Status::Fail, "{:?}", f.evidence);
    assert_eq!(
        f.evidence[1..4],
        [
            "autoload_configs/modules.conf.xml: mod_verto is not loaded",
            "mod_verto is loaded in the running FreeSWITCH (its process maps mod_verto.so)",
            "restart FreeSWITCH (or `unload mod_verto`) to unload it",
        ]
    );
    // Loaded at start but not running now (unloaded by hand): it comes back on restart.
    let without = maps("mod mod_commands\n");
    let ev = with(&[
        ("audit_fs_binary", BIN_1_10_12, 0),
        ("audit_fs_modules", without.as_str(), 0),
    ]);
    let f = eval(id, &ev);
    assert_eq!(f.status, Status::Fail, "{:?}", f.evidence);
    assert!(
        f.evidence
            .contains(&"it loads again when FreeSWITCH restarts".to_string())
    );
    // Neither: mitigated, both readings named.
    let ev = evidence(
        &without_verto(),
        &[
            ("audit_fs_binary", BIN_1_10_12, 0),
            ("audit_fs_modules", without.as_str(), 0),
        ],
        Live::default(),
    );
    let f = eval(id, &ev);
    assert_eq!(f.status, Status::Pass, "{:?}", f.evidence);
    assert!(f.evidence[0].starts_with(MITIGATED));
    assert!(
        f.evidence.contains(
            &"mod_verto is not loaded in the running FreeSWITCH (its process maps no mod_verto.so)"
                .to_string()
        )
    );
    // Maps unreadable (a container without CAP_SYS_PTRACE): the config decides, as before.
    let ev = evidence(
        &without_verto(),
        &[
            ("audit_fs_binary", BIN_1_10_12, 0),
            ("audit_fs_modules", "maps unreadable\nmod mod_verto", 0),
        ],
        Live::default(),
    );
    assert_eq!(eval(id, &ev).status, Status::Pass);
}

/// Every control of the catalogue, on its own boundary: the release before its fix fails (or is
/// mitigated), the fixed release passes, each naming the version seen and the fixed one.
#[test]
fn each_control_fails_just_before_its_fix_and_passes_on_it() {
    for a in advisories().unwrap() {
        let [x, y, z] = a.fixed.numbers;
        let before = if z > 0 {
            format!("{x}.{y}.{}", z - 1)
        } else {
            format!("{x}.{}.99", y.saturating_sub(1))
        };
        let at = a.fixed.to_string();
        for (version, affected) in [(before.as_str(), true), (at.as_str(), false)] {
            let extra: Vec<(&str, String)> = match a.component {
                Component::Freeswitch => vec![(
                    "audit_fs_binary",
                    format!(
                        "binary running /usr/bin/freeswitch\nsaid FreeSWITCH version: {version}-release~64bit"
                    ),
                )],
                Component::SofiaSip => vec![
                    ("audit_fs_binary", BIN_1_10_12.to_string()),
                    (
                        "audit_vuln_packages",
                        format!("pkg libsofia-sip-ua0 {version}-1~bookworm+1"),
                    ),
                ],
            };
            let pairs: Vec<(&str, &str, i32)> =
                extra.iter().map(|(n, t)| (*n, t.as_str(), 0)).collect();
            // Mitigations off: modules.conf.xml loads every module, profiles set nothing.
            let mut files = stock_files();
            if let Some(Mitigation::ModuleNotLoaded { module, .. }) = &a.mitigation {
                // (Stock has some of them only in comments, e.g. mod_xml_rpc.)
                edit(&mut files, "autoload_configs/modules.conf.xml", |t| {
                    t.replacen(
                        "<modules>",
                        &format!("<modules>\n    <load module=\"{module}\"/>"),
                        1,
                    )
                });
            }
            let f = control(&a.control)
                .unwrap()
                .run(&evidence(&files, &pairs, Live::default()));
            let comp = a.component.name();
            if affected {
                assert_eq!(
                    f.status,
                    Status::Fail,
                    "{} at {version}: {:?}",
                    a.id,
                    f.evidence
                );
                assert!(
                    f.evidence[0].starts_with(&format!("{comp} {version} (")),
                    "{:?}",
                    f.evidence
                );
                assert!(
                    f.evidence[0].ends_with(&format!("is affected by {}: fixed in {at}", a.ids())),
                    "{:?}",
                    f.evidence
                );
            } else {
                assert_eq!(
                    f.status,
                    Status::Pass,
                    "{} at {version}: {:?}",
                    a.id,
                    f.evidence
                );
                assert!(
                    f.evidence[0].ends_with(&format!("not affected by {}, fixed in {at}", a.ids())),
                    "{:?}",
                    f.evidence
                );
            }
        }
    }
}
