//! The facts the FS-VULN controls read: FreeSWITCH's version from its binary, and the
//! FreeSWITCH and sofia-sip versions the package manager and pkg-config know.
//!
//! Neither needs the Event Socket password. Everything printed is host text: bounded here,
//! parsed by [`super::version::Version`], escaped when printed.

use crate::facts::fact;
use crate::ssh::sh_quote;

/// Longest host text kept per line.
const MAX_LINE: usize = 200;

/// Where a source build of sofia-sip (`./configure && make install`) and packages put its
/// pkg-config file, whose `Version:` is the release (e.g. `1.13.17`).
const SOFIA_PC: &[&str] = &[
    "/usr/local/lib/pkgconfig/sofia-sip-ua.pc",
    "/usr/lib/pkgconfig/sofia-sip-ua.pc",
    "/usr/lib/x86_64-linux-gnu/pkgconfig/sofia-sip-ua.pc",
    "/usr/lib/aarch64-linux-gnu/pkgconfig/sofia-sip-ua.pc",
];

/// The binaries tried when no FreeSWITCH process runs: the package's and a source build's.
const INSTALLED: &[&str] = &[
    "/usr/bin/freeswitch",
    "/usr/local/freeswitch/bin/freeswitch",
];

/// The program behind [`FsBinaryFact`] (`perl -e`, perl-base only).
const BINARY_PROGRAM: &str = include_str!("fs_binary.pl");

/// Runs `freeswitch -version` (FreeSWITCH's `src/switch.c` prints `FreeSWITCH version: %s` with
/// `SWITCH_VERSION_FULL` and exits before it reads anything) of the running process's binary,
/// so the version that runs and not a newer one installed since: `/proc/PID/exe`, or where root
/// may not read that (no CAP_SYS_PTRACE, as in containers) the absolute `argv[0]` of
/// `/proc/PID/cmdline` unless that file changed after the process started (its mtime against
/// the start time of `/proc/PID/stat`). With no process, the installed binary. The binary is
/// the host's: it must be named `freeswitch`, and it and every directory above it must belong
/// to root with no one else allowed to write them (else whoever can could run code through
/// fsfleet); then it runs as `nobody` with no new privileges, from `/`, for at most 5 s, its
/// output cut at 300 bytes and each line prefixed (no line can pass for a section marker).
///
/// One `perl` process ([`BINARY_PROGRAM`]) does all of it: the shell chain it replaces started
/// 17 processes, about 1 ms of the host's CPU each. The shell becomes perl (`exec`) at once,
/// with systemd's MainPID (the script's shared `systemctl show`, a variable: no fork) as an argument.
fn binary_snippet() -> String {
    binary_snippet_in("/proc", INSTALLED)
}

/// [`binary_snippet`] reading the processes from `proc` and trying `installed` (tests: a
/// scratch proc tree, binaries of their own).
fn binary_snippet_in(proc: &str, installed: &[&str]) -> String {
    let installed: String = installed
        .iter()
        .map(|c| format!(" {}", sh_quote(c)))
        .collect();
    format!(
        "exec perl -e {} -- {} \"$fsfleet_sd1_MainPID\"{installed}",
        sh_quote(BINARY_PROGRAM),
        sh_quote(proc),
    )
}

/// How the binary that was run relates to FreeSWITCH.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BinarySource {
    /// `/proc/PID/exe` of the running process.
    Exe,
    /// The running process's `argv[0]`, unchanged since the process started.
    Started,
    /// No process runs (or its binary changed): the installed one.
    #[default]
    Installed,
}

/// What [`FsBinaryFact`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FsBinary {
    /// The binary that was run, and how it relates to the running process.
    pub path: Option<String>,
    pub source: BinarySource,
    /// The `FreeSWITCH version: ...` line it printed (host text).
    pub said: Option<String>,
    /// The running process's binary was replaced on disk since it started (its old path).
    pub replaced: Option<String>,
    /// Why the binary was not run (host text: the path and the reason).
    pub refused: Option<String>,
}

impl FsBinary {
    /// The version it printed, when it printed one.
    pub fn version_text(&self) -> Option<&str> {
        self.said
            .as_deref()?
            .trim()
            .strip_prefix("FreeSWITCH version:")
            .map(str::trim)
    }
}

fn bounded(s: &str) -> String {
    s.chars().take(MAX_LINE).collect()
}

/// The snippet prints at most one `binary` line, never with an `unsafe` one, and `said` only
/// after it: output that contradicts that is not the snippet's alone (a path or a name some
/// user chose that slipped a line in), so the binary counts as refused, its version unread.
pub fn parse_binary(text: &str) -> FsBinary {
    let mut out = FsBinary::default();
    let mut binaries = 0;
    let mut said_early = false;
    for line in text.lines() {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "binary" => {
                binaries += 1;
                let (how, path) = rest.split_once(' ').unwrap_or((rest, ""));
                out.source = match how {
                    "running" => BinarySource::Exe,
                    "started" => BinarySource::Started,
                    _ => BinarySource::Installed,
                };
                out.path = Some(bounded(path));
            }
            // Only the first line: the version is on it; anything after is not FreeSWITCH's.
            "said" if out.said.is_none() => {
                said_early |= binaries == 0;
                out.said = Some(bounded(rest));
            }
            "replaced" => out.replaced = Some(bounded(rest)),
            "unsafe" => out.refused = Some(bounded(rest)),
            _ => {}
        }
    }
    if binaries > 1 || said_early || (binaries == 1 && out.refused.is_some()) {
        return FsBinary {
            refused: Some("the binary probe's output contradicts itself: not read".into()),
            ..FsBinary::default()
        };
    }
    out
}

fact! {
    /// `freeswitch -version` of the running (or installed) binary, run unprivileged.
    FsBinaryFact: "audit_fs_binary" => FsBinary,
    snippet(_) {
        binary_snippet()
    }
    parse(text, _) {
        Ok(parse_binary(text))
    }
}

/// The modules the running FreeSWITCH has loaded: the `mod_*.so` files mapped into it
/// (`/proc/PID/maps`). `maps unreadable` where root may not read another user's maps (no
/// CAP_SYS_PTRACE, e.g. in a container) or no FreeSWITCH runs: then only modules.conf.xml says
/// what FreeSWITCH loads. Maps with no `mod_*.so` at all count as unreadable (see
/// [`parse_modules`]).
fn modules_snippet() -> String {
    "p=$fsfleet_sd1_MainPID\n\
     case \"$p\" in ''|0|*[!0-9]*) p=$(pidof -s freeswitch 2>/dev/null) ;; esac\n\
     case \"$p\" in ''|0|*[!0-9]*) echo 'maps no-process'; exit 0 ;; esac\n\
     m=$(awk '{f = $NF} f ~ /^\\/.*\\/mod_[A-Za-z0-9_]*\\.so$/ {sub(/^.*\\//, \"\", f); sub(/\\.so$/, \"\", f); if (!s[f]++ && n++ < 400) print \"mod\", f} END {if (NR == 0) exit 3}' \"/proc/$p/maps\" 2>/dev/null) || { echo 'maps unreadable'; exit 0; }\n\
     echo 'maps read'\n\
     [ -z \"$m\" ] || printf '%s\\n' \"$m\" | sort"
        .into()
}

/// What [`FsModulesFact`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadedModules {
    /// The process's maps were read (else `modules` is empty and means nothing).
    pub read: bool,
    /// Why not, when not (`no-process`, `unreadable`).
    pub why_not: Option<String>,
    pub modules: Vec<String>,
}

pub fn parse_modules(text: &str) -> LoadedModules {
    let mut out = LoadedModules::default();
    for line in text.lines().take(500) {
        match line.split_once(' ') {
            Some(("maps", "read")) => out.read = true,
            Some(("maps", why)) => out.why_not = Some(bounded(why)),
            Some(("mod", name))
                if name.starts_with("mod_")
                    && name.len() <= 64
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
            {
                out.modules.push(name.to_string());
            }
            _ => {}
        }
    }
    if !out.read {
        out.modules.clear();
    } else if out.modules.is_empty() {
        // Every FreeSWITCH loads its modules as mod_*.so (mod_sofia, mod_commands...): maps
        // with none are not a FreeSWITCH's to judge by (the testbed's stand-in has none).
        out.read = false;
        out.why_not = Some("no mod_*.so mapped".into());
    }
    out
}

fact! {
    /// The `mod_*.so` the running FreeSWITCH has mapped (see [`modules_snippet`]).
    FsModulesFact: "audit_fs_modules" => LoadedModules,
    snippet(_) {
        modules_snippet()
    }
    parse(text, _) {
        Ok(parse_modules(text))
    }
}

/// What [`VulnPackages`] found: installed packages and sofia-sip's pkg-config version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Installed {
    /// `(package, version)` of `freeswitch` and `libsofia-sip-ua*` with status `ii`.
    pub packages: Vec<(String, String)>,
    /// `Version:` of the first sofia-sip-ua.pc found.
    pub sofia_pc: Option<(String, String)>,
}

impl Installed {
    pub fn package(&self, pred: impl Fn(&str) -> bool) -> Option<&(String, String)> {
        self.packages.iter().find(|(n, _)| pred(n))
    }
}

pub fn parse_installed(text: &str) -> Installed {
    let mut out = Installed::default();
    for line in text.lines().take(50) {
        let mut f = line.split_whitespace();
        match (f.next(), f.next(), f.next(), f.next()) {
            (Some("pkg"), Some(name), Some(version), None) => {
                out.packages.push((bounded(name), bounded(version)));
            }
            (Some("pc"), Some(path), Some(version), None) if out.sofia_pc.is_none() => {
                out.sofia_pc = Some((bounded(path), bounded(version)));
            }
            _ => {}
        }
    }
    out
}

fact! {
    /// The FreeSWITCH and sofia-sip packages dpkg has installed (`pkg NAME VERSION`, from the
    /// script's one `dpkg-query`, [`crate::facts::PACKAGES_VAR`]) and sofia-sip's pkg-config
    /// version.
    VulnPackages: "audit_vuln_packages" => Installed,
    snippet(_) {
        format!(
            "while read -r n st v; do case $n in freeswitch|libsofia-sip-ua*) [ \"$st\" = installed ] && [ -n \"$v\" ] && echo \"pkg $n $v\" ;; esac; done <<FSFLEET_PKG_EOF\n\
             {pkgs}\n\
             FSFLEET_PKG_EOF\n\
             for f in {pcs}; do [ -f \"$f\" ] && sed -n \"s|^Version:[[:space:]]*\\([^[:space:]]*\\).*|pc $f \\1|p\" \"$f\" | head -n 1; done\n\
             true",
            pcs = SOFIA_PC.join(" "),
            pkgs = crate::facts::PACKAGES_VAR,
        )
    }
    parse(text, _) {
        Ok(parse_installed(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binary_section_is_read_whatever_else_is_on_it() {
        let b = parse_binary(
            "binary running /usr/bin/freeswitch\nsaid FreeSWITCH version: 1.10.12-release~64bit\nsaid injected\n",
        );
        assert_eq!(b.path.as_deref(), Some("/usr/bin/freeswitch"));
        assert_eq!(b.source, BinarySource::Exe);
        assert_eq!(b.version_text(), Some("1.10.12-release~64bit"));
        let b = parse_binary(
            "replaced /usr/bin/freeswitch (deleted)\nbinary installed /usr/bin/freeswitch\nsaid FreeSWITCH version: 1.11.4-release~64bit\n",
        );
        assert_eq!(b.source, BinarySource::Installed);
        assert_eq!(b.replaced.as_deref(), Some("/usr/bin/freeswitch (deleted)"));
        assert_eq!(b.version_text(), Some("1.11.4-release~64bit"));
        let b = parse_binary("unsafe /opt/fs/bin: writable by group or others (mode 777)\n");
        assert_eq!(b.path, None);
        assert_eq!(
            b.refused.as_deref(),
            Some("/opt/fs/bin: writable by group or others (mode 777)")
        );
        // No version line, a usage text, control characters, a truncated section.
        for odd in [
            "",
            "none\n",
            "binary running /x\nsaid usage: freeswitch [options]\n",
            "said \u{1b}[2J\n",
            "bin",
        ] {
            assert_eq!(parse_binary(odd).version_text(), None, "{odd:?}");
        }
        let long = format!(
            "binary running /usr/bin/freeswitch\nsaid FreeSWITCH version: 1.10.12{}\n",
            "x".repeat(1000)
        );
        assert_eq!(
            parse_binary(&long).said.map(|s| s.chars().count()),
            Some(MAX_LINE)
        );
    }

    /// Lines a path or a name could slip into the section (a second `binary` line, `said`
    /// before it, `binary` beside `unsafe`): the binary is refused, no version read.
    #[test]
    fn a_section_that_contradicts_itself_reads_no_version() {
        for forged in [
            "binary started /tmp/x\nbinary running /usr/bin/freeswitch\nsaid FreeSWITCH version: 1.10.12-release\n",
            "said FreeSWITCH version: 1.10.12-release\nbinary running /usr/bin/freeswitch\n",
            "unsafe /tmp/x: not owned by root\nbinary running /usr/bin/freeswitch\nsaid FreeSWITCH version: 1.10.12-release\n",
        ] {
            let b = parse_binary(forged);
            assert_eq!(b.version_text(), None, "{forged:?}");
            assert_eq!(b.path, None, "{forged:?}");
            assert!(
                b.refused.as_deref().unwrap_or("").contains("contradicts"),
                "{forged:?}"
            );
        }
    }

    #[test]
    fn loaded_modules_only_count_when_the_maps_were_read() {
        let m = parse_modules("maps read\nmod mod_sofia\nmod mod_verto\nmod mod_x;rm\nmod evil\n");
        assert!(m.read);
        assert_eq!(m.modules, ["mod_sofia", "mod_verto"]);
        let m = parse_modules("maps unreadable\nmod mod_verto\n");
        assert!(!m.read);
        assert!(m.modules.is_empty());
        assert_eq!(m.why_not.as_deref(), Some("unreadable"));
        assert_eq!(parse_modules(""), LoadedModules::default());
        let m = parse_modules("maps read\n");
        assert!(!m.read);
        assert_eq!(m.why_not.as_deref(), Some("no mod_*.so mapped"));
    }

    #[test]
    fn packages_and_pkg_config_are_read() {
        let i = parse_installed(
            "pkg freeswitch 1.10.12~release~24~a88d069d6f~bookworm-1~bookworm+1\n\
             pkg libsofia-sip-ua0 1.13.17-1~bookworm+1\n\
             pc /usr/local/lib/pkgconfig/sofia-sip-ua.pc 1.13.17\n\
             pc /usr/lib/pkgconfig/sofia-sip-ua.pc 1.12.11\n\
             pkg too many fields here\n",
        );
        assert_eq!(i.packages.len(), 2);
        assert_eq!(
            i.package(|n| n.starts_with("libsofia-sip-ua"))
                .map(|p| p.1.as_str()),
            Some("1.13.17-1~bookworm+1")
        );
        assert_eq!(
            i.sofia_pc,
            Some((
                "/usr/local/lib/pkgconfig/sofia-sip-ua.pc".into(),
                "1.13.17".into()
            ))
        );
        assert_eq!(parse_installed(""), Installed::default());
    }

    /// The text of the program (its behaviour: `fs_binary_tests`): the walk comes before the
    /// only exec, which is list-form, unprivileged and bounded; the shell only hands over.
    #[test]
    fn the_binary_is_run_only_unprivileged_and_after_the_ownership_walk() {
        let s = BINARY_PROGRAM;
        let walk = s.find("not owned by root").unwrap();
        let run = s.find("'--reuid=65534'").unwrap();
        assert!(walk < run);
        assert_eq!(s.matches("exec ").count(), 1);
        assert!(s.contains("exec { $setpriv } 'setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', '--no-new-privs',"));
        assert!(s.contains("alarm 5;"));
        assert!(s.contains("while (length($out) < 300)"));
        assert!(!s.contains("system(") && !s.contains("qx"));
        let snippet = binary_snippet();
        assert!(snippet.ends_with(&format!(
            "exec perl -e {} -- '/proc' \"$fsfleet_sd1_MainPID\" '/usr/bin/freeswitch' '/usr/local/freeswitch/bin/freeswitch'",
            sh_quote(BINARY_PROGRAM)
        )));
    }
}

#[cfg(test)]
#[path = "fs_binary_tests.rs"]
mod fs_binary_tests;

#[cfg(test)]
mod shell_tests {
    /// A process whose binary path holds a line break (any user can start one and name it
    /// freeswitch): the snippet refuses it in one line, and prints no line of the path.
    #[test]
    fn a_binary_path_with_a_line_break_is_refused_in_one_line() {
        use crate::facts::{Fact, ScriptInput};
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let odd = dir.path().join("x\nbinary running /usr/bin");
        std::fs::create_dir_all(&odd).unwrap();
        let sleep = ["/bin/sleep", "/usr/bin/sleep"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap();
        let fake = odd.join("freeswitch");
        std::fs::copy(sleep, &fake).unwrap();
        // A binary just written may be "busy" while another test's fork still holds it open.
        let mut child = (0..50)
            .find_map(
                |_| match std::process::Command::new(&fake).arg("30").spawn() {
                    Ok(c) => Some(c),
                    Err(_) => {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        None
                    }
                },
            )
            .unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let systemctl = bin.join("systemctl");
        std::fs::write(
            &systemctl,
            format!(
                "#!/bin/sh\nprintf 'MainPID={}\\nLoadState=loaded\\n'\n",
                child.id()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&systemctl, PermissionsExt::from_mode(0o755)).unwrap();
        let host = crate::audit::evidence::testing::host();
        let input = ScriptInput {
            host: &host,
            files: &[],
            conf_globs: &[],
        };
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(crate::facts::standalone(&super::FsBinaryFact::snippet(
                &input,
            )))
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    bin.display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .output()
            .unwrap();
        let _ = child.kill();
        let _ = child.wait();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(text, "unsafe (a path with a line break): not run\n");
        let b = super::parse_binary(&text);
        assert!(b.refused.is_some() && b.path.is_none() && b.said.is_none());
    }

    /// The snippets are valid POSIX shell (`sh -n`), as the host's /bin/sh reads them.
    #[test]
    fn snippets_parse_as_sh() {
        use crate::facts::{Fact, ScriptInput};
        let host = crate::audit::evidence::testing::host();
        let input = ScriptInput {
            host: &host,
            files: &[],
            conf_globs: &[],
        };
        for s in [
            super::FsBinaryFact::snippet(&input),
            super::VulnPackages::snippet(&input),
            super::FsModulesFact::snippet(&input),
        ] {
            let out = std::process::Command::new("sh")
                .args(["-n", "-c", &s])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{s}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            if std::env::var_os("FSFLEET_PRINT_SNIPPETS").is_some() {
                println!("{s}\n----");
            }
        }
    }
}
