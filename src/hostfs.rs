//! Root's file operations on a host that may be hostile.
//!
//! The `freeswitch` user owns FreeSWITCH's config and log trees on most installs, and a SIP
//! exploit hands an attacker exactly that user. Shell lines such as `touch "$f"; chown
//! --reference=...` or a `mktemp` + `chown` + `mv` beside a config file follow whatever link or
//! renamed directory that user puts in the way, so root would write, create or chown a file of
//! the attacker's choosing. Every write, create and delete fsfleet does as root in a directory
//! a non-root user may control goes through [`apply`] instead: one small perl program
//! (`hostfs.pl`, perl-base only: Essential on Debian and Ubuntu) that walks to each directory
//! with chdir and checks each step, creates files exclusively without following links, sets
//! owner and mode on the open file, and renames. docs/security.md explains the guarantees.

use std::fmt::Write as _;
use std::time::Duration;

use crate::ssh::{Session, SshError, sh_quote};

/// The program run on the host (`perl -e`); operations arrive on stdin.
pub const PROGRAM: &str = include_str!("hostfs.pl");

/// Names of stage files: `<name>.fsfleet-stage-<token>` beside the target.
pub const STAGE_MARK: &str = ".fsfleet-stage-";

#[derive(Debug, thiserror::Error)]
pub enum HostFsError {
    #[error("refusing the path {path}: {why}")]
    BadPath { path: String, why: &'static str },
    #[error(transparent)]
    Ssh(#[from] SshError),
    /// The program refused or failed before any change; `message` is its stderr (paths,
    /// never content).
    #[error("{host}: {message}")]
    Refused { host: String, message: String },
    /// A rename failed after others succeeded (the directory's owner can make one fail):
    /// `written` were replaced, the rest were not. The caller puts the written ones back.
    #[error("{host}: {message} (after {} of the files were replaced)", written.len())]
    Partial {
        host: String,
        message: String,
        written: Vec<String>,
    },
}

/// One file operation.
pub enum Op<'a> {
    /// Replace `path` with `content`, owned `user:group` with `mode` (names or numeric ids).
    Write {
        path: &'a str,
        content: &'a [u8],
        user: &'a str,
        group: &'a str,
        mode: u32,
    },
    /// Create `path` empty if it does not exist, owned like its directory, which must belong
    /// to one of `dir_owners`. An existing regular file is left alone; anything else is refused.
    Create {
        path: &'a str,
        mode: u32,
        dir_owners: &'a [&'a str],
    },
    /// Remove `path` (a file or a link, never followed) if it exists.
    Remove { path: &'a str },
    /// Refuse the whole batch unless the directory `path` exists (reached as above) and belongs
    /// to one of `owners`: a directory fsfleet writes in that belongs to anyone else is not
    /// FreeSWITCH's.
    CheckDir {
        path: &'a str,
        owners: &'a [&'a str],
    },
}

impl Op<'_> {
    fn path(&self) -> &str {
        match self {
            Op::Write { path, .. }
            | Op::Create { path, .. }
            | Op::Remove { path }
            | Op::CheckDir { path, .. } => path,
        }
    }
}

impl std::fmt::Debug for Op<'_> {
    // Contents may hold secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Op")
            .field("path", &self.path())
            .finish_non_exhaustive()
    }
}

/// A path fsfleet may hand to root on a host: absolute, no control characters (or tabs, the
/// program's field separator), no `.` or `..` component, not absurdly long.
pub fn check_path(path: &str) -> Result<(), HostFsError> {
    let bad = |why| {
        Err(HostFsError::BadPath {
            path: escape(path),
            why,
        })
    };
    if !path.starts_with('/') {
        return bad("not an absolute path");
    }
    if path.chars().any(char::is_control) {
        return bad("it contains control characters");
    }
    if path.split('/').any(|c| c == "." || c == "..") {
        return bad("it contains a . or .. component");
    }
    if path.len() > 4000 {
        return bad("it is too long");
    }
    Ok(())
}

/// A directory path read from a host (FreeSWITCH's `conf_dir` or `log_dir`) that fsfleet may
/// use in commands and write into other programs' config files (fail2ban's `logpath`): a
/// [`check_path`] path of plain characters only, so no format (fail2ban's `%(...)s`
/// interpolation, globs, line continuations; shell words) can read it as anything but a path.
pub fn check_host_dir(path: &str) -> Result<(), HostFsError> {
    check_path(path)?;
    let plain = path
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-' | '+' | '@'));
    if !plain {
        return Err(HostFsError::BadPath {
            path: escape(path),
            why: "only letters, digits and / . _ - + @ are accepted in a FreeSWITCH directory",
        });
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), HostFsError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(HostFsError::BadPath {
            path: escape(name),
            why: "not a valid user or group name",
        })
    }
}

fn escape(s: &str) -> String {
    crate::display::line(s).into_owned()
}

/// The program's stdin for `ops`; `token` names the stage files.
pub fn encode(ops: &[Op<'_>], token: &str) -> Result<Vec<u8>, HostFsError> {
    let mut out = b"fsfleet-hostfs 1\n".to_vec();
    for op in ops {
        check_path(op.path())?;
        let mut line = String::new();
        match op {
            Op::Write {
                path,
                content,
                user,
                group,
                mode,
            } => {
                check_name(user)?;
                check_name(group)?;
                let _ = writeln!(
                    line,
                    "W\t{path}\t{user}\t{group}\t{:o}\t{}\t{token}",
                    mode & 0o7777,
                    content.len()
                );
                out.extend_from_slice(line.as_bytes());
                out.extend_from_slice(content);
                continue;
            }
            Op::Create {
                path,
                mode,
                dir_owners,
            } => {
                for o in dir_owners.iter() {
                    check_name(o)?;
                }
                let _ = writeln!(
                    line,
                    "C\t{path}\t{:o}\t{}",
                    mode & 0o7777,
                    dir_owners.join(",")
                );
            }
            Op::Remove { path } => {
                let _ = writeln!(line, "D\t{path}");
            }
            Op::CheckDir { path, owners } => {
                for o in owners.iter() {
                    check_name(o)?;
                }
                let _ = writeln!(line, "K\t{path}\t{}", owners.join(","));
            }
        }
        out.extend_from_slice(line.as_bytes());
    }
    out.extend_from_slice(b".\n");
    Ok(out)
}

/// The shell command that runs the program (as root through the session's privilege).
pub fn command() -> String {
    format!("exec perl -e {}", sh_quote(PROGRAM))
}

fn token() -> String {
    use rand::Rng;
    rand::thread_rng()
        .sample_iter(rand::distributions::Alphanumeric)
        .take(10)
        .map(char::from)
        .collect()
}

/// Run `ops` as one batch: every write is staged first and only then all are renamed, so a
/// failure before the renames leaves every target as it was. Returns the program's lines
/// (`written P`, `created P`, `exists P`, `removed P`, `absent P`).
pub async fn apply(session: &Session, ops: &[Op<'_>]) -> Result<Vec<String>, HostFsError> {
    if ops.is_empty() {
        return Ok(Vec::new());
    }
    let input = encode(ops, &token())?;
    let purpose = format!(
        "hostfs ({})",
        ops.iter()
            .map(|op| {
                let verb = match op {
                    Op::Write { .. } => "write",
                    Op::Create { .. } => "create",
                    Op::Remove { .. } => "remove",
                    Op::CheckDir { .. } => "check",
                };
                format!("{verb} {}", op.path())
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    let out = session
        .run_for(&purpose, &command(), &input, Duration::from_secs(60))
        .await?;
    if !out.success() {
        let err = out.stderr_text();
        let msg = err
            .lines()
            .rev()
            .take(4)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join(" | ");
        let message = if msg.is_empty() {
            format!("file operation failed (exit {})", out.status)
        } else {
            escape(&msg)
        };
        let written: Vec<String> = out
            .stdout_text()
            .lines()
            .filter_map(|l| l.strip_prefix("written "))
            .map(str::to_string)
            .collect();
        return Err(if out.status == 4 && !written.is_empty() {
            HostFsError::Partial {
                host: session.name.clone(),
                message,
                written,
            }
        } else {
            HostFsError::Refused {
                host: session.name.clone(),
                message,
            }
        });
    }
    Ok(out.stdout_text().lines().map(str::to_string).collect())
}

#[cfg(test)]
mod tests {
    //! These run the real program with the local perl, as root (the test suite runs as root:
    //! it also drives docker), against directories owned by another user.
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
    use std::path::Path;
    use std::process::{Command, Stdio};

    const NOBODY: u32 = 65534;

    fn run(ops: &[Op<'_>]) -> (i32, String, String) {
        let input = encode(ops, "TESTTOKEN1").unwrap();
        let mut child = Command::new("perl")
            .arg("-e")
            .arg(PROGRAM)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&input).unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// A write of a root-only file (what most cases need).
    fn w<'a>(path: &'a str, content: &'a [u8]) -> Op<'a> {
        Op::Write {
            path,
            content,
            user: "root",
            group: "root",
            mode: 0o600,
        }
    }

    fn chown(p: &Path, uid: u32) {
        std::os::unix::fs::chown(p, Some(uid), Some(uid)).unwrap();
    }

    /// A directory owned by `nobody` (the stand-in for the hostile `freeswitch` user) inside
    /// a root-owned 0755 one.
    fn hostile_tree() -> (tempfile::TempDir, std::path::PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let d = tmp.path().join("conf");
        std::fs::create_dir(&d).unwrap();
        chown(&d, NOBODY);
        (tmp, d)
    }

    fn s(p: &Path) -> &str {
        p.to_str().unwrap()
    }

    #[test]
    fn writes_atomically_with_owner_and_mode_set_before_the_rename() {
        let (_t, d) = hostile_tree();
        let f = d.join("vars.xml");
        std::fs::write(&f, "old").unwrap();
        let (code, out, err) = run(&[Op::Write {
            path: s(&f),
            content: b"new secret",
            user: "root",
            group: "65534",
            mode: 0o640,
        }]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(out.trim(), format!("written {}", f.display()));
        assert_eq!(std::fs::read(&f).unwrap(), b"new secret");
        let m = std::fs::metadata(&f).unwrap();
        assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o640, 0, NOBODY));
        let left: Vec<_> = std::fs::read_dir(&d).unwrap().collect();
        assert_eq!(left.len(), 1, "no stage file is left");
    }

    #[test]
    fn a_symlinked_target_is_refused_and_nothing_changes() {
        let (t, d) = hostile_tree();
        let victim = t.path().join("profile.sh");
        std::fs::write(&victim, "root's").unwrap();
        let ok = d.join("ok.xml");
        std::fs::write(&ok, "old").unwrap();
        symlink(&victim, d.join("freeswitch.log")).unwrap();
        // A batch with a good write and a linked target: neither happens.
        let (code, _, err) = run(&[
            w(s(&ok), b"new"),
            Op::Write {
                path: s(&d.join("freeswitch.log")),
                content: b"x",
                user: "65534",
                group: "65534",
                mode: 0o644,
            },
        ]);
        assert_eq!(code, 3, "{err}");
        assert!(err.contains("is a symbolic link"), "{err}");
        assert_eq!(std::fs::read(&ok).unwrap(), b"old");
        assert_eq!(std::fs::read(&victim).unwrap(), b"root's");
        assert_eq!(std::fs::metadata(&victim).unwrap().uid(), 0);
        let names: Vec<String> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!names.iter().any(|n| n.contains(STAGE_MARK)), "{names:?}");
        // Creating the log file through the link: refused too, the victim keeps its owner.
        let (code, _, err) = run(&[Op::Create {
            path: s(&d.join("freeswitch.log")),
            mode: 0o640,
            dir_owners: &["root", "65534"],
        }]);
        assert_eq!(code, 3, "{err}");
        assert_eq!(std::fs::metadata(&victim).unwrap().uid(), 0);
    }

    #[test]
    fn a_link_in_a_directory_a_user_controls_is_not_followed() {
        let (t, d) = hostile_tree();
        let etc = t.path().join("etc");
        std::fs::create_dir(&etc).unwrap();
        // The hostile user replaced a subdirectory with a link to a root directory.
        symlink(&etc, d.join("autoload_configs")).unwrap();
        let target = d.join("autoload_configs").join("event_socket.conf.xml");
        let (code, _, err) = run(&[Op::Write {
            path: s(&target),
            content: b"x",
            user: "65534",
            group: "65534",
            mode: 0o640,
        }]);
        assert_eq!(code, 3, "{err}");
        assert!(err.contains("a user other than root can change"), "{err}");
        assert_eq!(std::fs::read_dir(&etc).unwrap().count(), 0);
        // The same link placed by root in a root-only directory is followed.
        let root_dir = t.path().join("rootdir");
        std::fs::create_dir(&root_dir).unwrap();
        std::fs::set_permissions(&root_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        symlink(&etc, root_dir.join("conf")).unwrap();
        let (code, _, err) = run(&[w(s(&root_dir.join("conf").join("a.xml")), b"y")]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(std::fs::read(etc.join("a.xml")).unwrap(), b"y");
    }

    #[test]
    fn create_makes_a_file_owned_like_its_directory_once() {
        let (_t, d) = hostile_tree();
        let log = d.join("freeswitch.log");
        let op = [Op::Create {
            path: s(&log),
            mode: 0o640,
            dir_owners: &["root", "65534"],
        }];
        let (code, out, err) = run(&op);
        assert_eq!(code, 0, "{err}");
        assert!(out.starts_with("created"), "{out}");
        let m = std::fs::metadata(&log).unwrap();
        assert_eq!(
            (m.uid(), m.gid(), m.mode() & 0o777),
            (NOBODY, NOBODY, 0o640)
        );
        std::fs::write(&log, "line\n").unwrap();
        let (code, out, _) = run(&op);
        assert_eq!(
            (code, out.trim()),
            (0, format!("exists {}", log.display()).as_str())
        );
        assert_eq!(std::fs::read(&log).unwrap(), b"line\n");
        // A directory owned by someone fsfleet was not told about: refused.
        let (code, _, err) = run(&[Op::Create {
            path: s(&d.join("other.log")),
            mode: 0o640,
            dir_owners: &["root"],
        }]);
        assert_eq!(code, 3);
        assert!(err.contains("owned by uid 65534"), "{err}");
    }

    #[test]
    fn remove_unlinks_links_without_following_them() {
        let (t, d) = hostile_tree();
        let victim = t.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        let stage = d.join("vars.xml.fsfleet-stage-abc");
        symlink(&victim, &stage).unwrap();
        let (code, out, err) = run(&[
            Op::Remove { path: s(&stage) },
            Op::Remove {
                path: s(&d.join("nothing.fsfleet-stage-x")),
            },
        ]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("removed") && out.contains("absent"), "{out}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert!(std::fs::symlink_metadata(&stage).is_err());
    }

    #[test]
    fn a_links_dotdot_is_followed_only_through_directories_nobody_else_can_move() {
        let (t, d) = hostile_tree();
        // root's link, in a root-only directory, whose target climbs out of the user's one.
        let sub = d.join("sub");
        std::fs::create_dir(&sub).unwrap();
        chown(&sub, NOBODY);
        let rootdir = t.path().join("r");
        std::fs::create_dir(&rootdir).unwrap();
        std::fs::set_permissions(&rootdir, std::fs::Permissions::from_mode(0o755)).unwrap();
        symlink(format!("{}/../x", sub.display()), rootdir.join("l")).unwrap();
        std::fs::create_dir(d.join("x")).unwrap();
        let (code, _, err) = run(&[w(s(&rootdir.join("l").join("f")), b"x")]);
        assert_eq!(code, 3, "{err}");
        assert!(err.contains("climbs out of a directory"), "{err}");
        // The same climb through root's own directories is followed.
        let a = t.path().join("a");
        std::fs::create_dir_all(a.join("b")).unwrap();
        std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(a.join("b"), std::fs::Permissions::from_mode(0o755)).unwrap();
        symlink(format!("{}/b/../b", a.display()), rootdir.join("m")).unwrap();
        let (code, _, err) = run(&[w(s(&rootdir.join("m").join("f")), b"y")]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(std::fs::read(a.join("b").join("f")).unwrap(), b"y");
    }

    #[test]
    fn check_dir_refuses_a_directory_of_someone_else() {
        let (_t, d) = hostile_tree();
        let f = d.join("vars.xml");
        std::fs::write(&f, "old").unwrap();
        let write = w(s(&f), b"new");
        let (code, _, err) = run(&[
            Op::CheckDir {
                path: s(&d),
                owners: &["root", "freeswitch-nobody-here"],
            },
            write,
        ]);
        assert_eq!(code, 3, "{err}");
        assert!(err.contains("owned by uid 65534"), "{err}");
        assert_eq!(std::fs::read(&f).unwrap(), b"old");
        let (code, _, err) = run(&[
            Op::CheckDir {
                path: s(&d),
                owners: &["root", "65534"],
            },
            w(s(&f), b"new"),
        ]);
        assert_eq!(code, 0, "{err}");
    }

    #[test]
    fn a_rename_the_directory_owner_makes_fail_stops_the_batch_and_says_what_was_written() {
        let (_t, d) = hostile_tree();
        let a = d.join("a.xml");
        let b = d.join("b.xml");
        std::fs::write(&a, "old a").unwrap();
        std::fs::write(&b, "old b").unwrap();
        let c = d.join("c.xml");
        std::fs::write(&c, "old c").unwrap();
        // The directory's owner turns b.xml into a directory while its stage is being written.
        let dir = d.clone();
        let racer = std::thread::spawn(move || {
            for _ in 0..20_000 {
                let staged = std::fs::read_dir(&dir).unwrap().any(|e| {
                    e.unwrap()
                        .file_name()
                        .to_string_lossy()
                        .starts_with("b.xml.fsfleet-stage-")
                });
                if staged {
                    std::fs::remove_file(dir.join("b.xml")).unwrap();
                    std::fs::create_dir(dir.join("b.xml")).unwrap();
                    return true;
                }
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            false
        });
        let big = vec![b'x'; 64 << 20];
        let (code, out, err) = run(&[w(s(&a), b"new a"), w(s(&b), &big), w(s(&c), b"new c")]);
        assert!(racer.join().unwrap(), "the racer never saw the stage file");
        assert_eq!(code, 4, "{err}");
        assert_eq!(out.trim(), format!("written {}", a.display()));
        assert!(err.contains("b.xml: rename"), "{err}");
        assert_eq!(
            std::fs::read(&c).unwrap(),
            b"old c",
            "nothing after the failure"
        );
        let left: Vec<String> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(STAGE_MARK))
            .collect();
        assert!(left.is_empty(), "stage files left: {left:?}");
    }

    #[test]
    fn bad_numbers_in_the_input_change_nothing() {
        let (_t, d) = hostile_tree();
        let f = d.join("vars.xml");
        std::fs::write(&f, "old").unwrap();
        for line in [
            format!("W\t{}\troot\troot\t0x1ff\t3\tT\n", f.display()),
            format!("W\t{}\troot\troot\t9\t3\tT\n", f.display()),
            format!(
                "W\t{}\troot\troot\t600\t99999999999999999999\tT\n",
                f.display()
            ),
            format!("W\t{}\troot\troot\t600\t3\t../x\n", f.display()),
        ] {
            let input = format!("fsfleet-hostfs 1\n{line}new.\n");
            let mut child = Command::new("perl")
                .arg("-e")
                .arg(PROGRAM)
                .stdin(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert_eq!(out.status.code(), Some(2), "{line:?}");
            assert_eq!(std::fs::read(&f).unwrap(), b"old");
        }
    }

    #[test]
    fn a_cut_input_changes_nothing() {
        let (_t, d) = hostile_tree();
        let f = d.join("vars.xml");
        std::fs::write(&f, "old").unwrap();
        let input = encode(&[w(s(&f), b"0123456789")], "T").unwrap();
        let cut = &input[..input.len() - 6];
        let mut child = Command::new("perl")
            .arg("-e")
            .arg(PROGRAM)
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(cut).unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert_eq!(std::fs::read(&f).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
    }

    #[test]
    fn host_dirs_are_plain_absolute_paths() {
        for ok in [
            "/var/log/freeswitch",
            "/usr/local/freeswitch/log",
            "/opt/fs-1.10/log_dir",
        ] {
            assert!(check_host_dir(ok).is_ok(), "{ok}");
        }
        for bad in [
            "/var/log/freeswitch\naction = iptables[actionstart=\"touch /x\"]",
            "/var/log/%(known/x)s",
            "/var/log/*",
            "/var/log/free switch",
            "var/log",
            "/var/log/../../etc",
            "/var/log/\u{1b}]0;x\u{7}",
        ] {
            let e = check_host_dir(bad).unwrap_err().to_string();
            assert!(
                !e.contains('\n') && !e.contains('\u{1b}'),
                "printed raw: {e:?}"
            );
        }
    }

    #[test]
    fn bad_paths_and_names_never_reach_the_host() {
        for p in [
            "relative/x",
            "/a/../etc/x",
            "/a/./b",
            "/a/b\nc",
            "/a\tb",
            "/x\u{1b}[2J",
        ] {
            let r = encode(&[Op::Remove { path: p }], "t");
            assert!(
                matches!(r, Err(HostFsError::BadPath { .. })),
                "{p:?} was accepted"
            );
        }
        let r = encode(
            &[Op::Write {
                path: "/a/b",
                content: b"",
                user: "root;id",
                group: "root",
                mode: 0o600,
            }],
            "t",
        );
        assert!(matches!(r, Err(HostFsError::BadPath { .. })));
    }
}
