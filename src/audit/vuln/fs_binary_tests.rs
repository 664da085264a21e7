//! The binary probe's program run for real, as the host runs it (`sh -c` of the snippet with the
//! script's shared systemd read, then `exec perl`), as root (the test suite runs as root), on a
//! scratch proc tree and binaries of its own: every branch of [`super::BINARY_PROGRAM`].

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{BinarySource, binary_snippet_in, parse_binary};

/// A root-owned directory tree holding a scratch proc tree, the binaries and a fake
/// `systemctl`. It lives under /var/lib: the probe refuses a binary below a directory others
/// may write (tempdir()'s /tmp), and nobody must be able to enter it to run the binary (a
/// checkout may sit in a home directory only its owner enters).
struct Lab {
    dir: tempfile::TempDir,
}

/// Seconds since the epoch.
fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn clock_ticks() -> u64 {
    let out = Command::new("getconf").arg("CLK_TCK").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// The kernel's boot time in the scratch `stat`: a day ago.
const UPTIME: u64 = 86_400;

/// A binary that says what the audit expects, and how it was run.
const SAYS_WHO: &str = "#!/bin/sh\n\
    echo \"FreeSWITCH version: 1.10.12-release~64bit uid=$(id -u) gid=$(id -g) groups=$(id -G) cwd=$(pwd) $(grep NoNewPrivs /proc/self/status | tr -d '\\t') args=$*\"\n\
    echo \"stdin $(wc -c)\"\n\
    echo 'on stderr' >&2\n\
    echo 'a fourth line'\n";

impl Lab {
    fn new() -> Lab {
        let dir = tempfile::Builder::new()
            .prefix("fsfleet-bin-test-")
            .tempdir_in("/var/lib")
            .unwrap();
        std::fs::set_permissions(dir.path(), PermissionsExt::from_mode(0o755)).unwrap();
        let lab = Lab { dir };
        lab.mkdir("proc");
        lab.mkdir("path");
        std::fs::write(
            lab.path("proc/stat"),
            format!("cpu  1 2 3\nbtime {}\nprocesses 9\n", now() - UPTIME),
        )
        .unwrap();
        lab
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn abs(&self, rel: &str) -> String {
        self.path(rel).to_str().unwrap().to_string()
    }

    /// A directory (and its parents in the lab), mode 0755.
    fn mkdir(&self, rel: &str) -> String {
        let p = self.path(rel);
        std::fs::create_dir_all(&p).unwrap();
        let mut d = p.as_path();
        while d != self.dir.path() {
            std::fs::set_permissions(d, PermissionsExt::from_mode(0o755)).unwrap();
            d = d.parent().unwrap();
        }
        self.abs(rel)
    }

    /// A root-owned executable, 0755, in directories made 0755; last changed `age` ago.
    fn binary(&self, rel: &str, script: &str, age: Duration) -> String {
        let p = self.path(rel);
        self.mkdir(
            p.parent()
                .unwrap()
                .strip_prefix(self.dir.path())
                .unwrap()
                .to_str()
                .unwrap(),
        );
        std::fs::write(&p, script).unwrap();
        std::fs::set_permissions(&p, PermissionsExt::from_mode(0o755)).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(SystemTime::now() - age)
            .unwrap();
        self.abs(rel)
    }

    /// A process in the scratch proc tree: its argv, `exe` (None: unreadable, as without
    /// CAP_SYS_PTRACE) and start, `started` ago (None: no `stat`).
    fn process(&self, pid: u32, argv: &[&str], exe: Option<&str>, started: Option<Duration>) {
        let d = self.mkdir(&format!("proc/{pid}"));
        let mut cmdline = Vec::new();
        for a in argv {
            cmdline.extend_from_slice(a.as_bytes());
            cmdline.push(0);
        }
        std::fs::write(format!("{d}/cmdline"), cmdline).unwrap();
        if let Some(exe) = exe {
            symlink(exe, format!("{d}/exe")).unwrap();
        }
        if let Some(ago) = started {
            let since_boot = UPTIME - ago.as_secs();
            let ticks = since_boot * clock_ticks();
            // The name is the process's choice: a ") " and a line break in it move no field.
            std::fs::write(
                format!("{d}/stat"),
                format!(
                    "{pid} (free) x\nswitch) S 1 {pid} {pid} 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 {ticks} 1000 100 0\n"
                ),
            )
            .unwrap();
        }
    }

    /// The snippet's output with `MainPID=main_pid` from systemd, the lab's proc tree and
    /// `installed`, and how long it took.
    fn run(&self, main_pid: &str, installed: &[&str]) -> (String, Duration) {
        let path = format!(
            "{}:{}",
            self.abs("path"),
            std::env::var("PATH").unwrap_or_default()
        );
        self.run_with_path(main_pid, installed, &path)
    }

    fn run_with_path(&self, main_pid: &str, installed: &[&str], path: &str) -> (String, Duration) {
        let systemctl = self.path("path/systemctl");
        std::fs::write(
            &systemctl,
            format!(
                "#!/bin/sh\nprintf 'MainPID={main_pid}\\nLoadState=loaded\\n\\nMainPID=1\\n'\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&systemctl, PermissionsExt::from_mode(0o755)).unwrap();
        let snippet = binary_snippet_in(&self.abs("proc"), installed);
        let started = Instant::now();
        let out = Command::new("/bin/sh")
            .arg("-c")
            .arg(crate::facts::standalone(&snippet))
            .env("PATH", path)
            .output()
            .unwrap();
        let took = started.elapsed();
        assert!(out.status.success(), "{out:?}");
        (String::from_utf8_lossy(&out.stdout).into_owned(), took)
    }
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

/// The running process's binary (`/proc/PID/exe`) runs as nobody with no groups and no new
/// privileges, from /, its stdin empty, stderr merged, three lines kept.
#[test]
fn the_running_binary_runs_as_nobody_with_no_new_privileges() {
    let lab = Lab::new();
    let bin = lab.binary("opt/fs/bin/freeswitch", SAYS_WHO, Duration::ZERO);
    lab.process(4242, &["/somewhere/else"], Some(&bin), None);
    let (out, _) = lab.run("4242", &[]);
    assert_eq!(
        lines(&out),
        [
            format!("binary running {bin}").as_str(),
            "said FreeSWITCH version: 1.10.12-release~64bit uid=65534 gid=65534 groups=65534 cwd=/ NoNewPrivs:1 args=-version",
            "said stdin 0",
            "said on stderr",
        ]
    );
    let b = parse_binary(&out);
    assert_eq!(b.source, BinarySource::Exe);
    assert_eq!(b.path.as_deref(), Some(bin.as_str()));
    assert_eq!(
        b.version_text().map(|v| v.split(' ').next()),
        Some(Some("1.10.12-release~64bit"))
    );
}

/// Without `exe` (no CAP_SYS_PTRACE): the absolute argv[0], resolved like `readlink -f`, counts
/// only when it did not change after the process started.
#[test]
fn a_started_binary_counts_only_when_unchanged_since_the_process_started() {
    let lab = Lab::new();
    let bin = lab.binary("opt/fs/bin/freeswitch", SAYS_WHO, Duration::from_secs(3600));
    let inst = lab.binary("usr/bin/freeswitch", SAYS_WHO, Duration::from_secs(7200));
    symlink(lab.path("opt/fs"), lab.path("fs")).unwrap();
    let via_link = lab.abs("fs/bin/../bin/freeswitch");
    // Started after its last change: that binary.
    lab.process(
        100,
        &[&via_link, "-nc"],
        None,
        Some(Duration::from_secs(60)),
    );
    let (out, _) = lab.run("100", &[&inst]);
    assert_eq!(lines(&out)[0], format!("binary started {bin}"), "{out}");
    assert_eq!(parse_binary(&out).source, BinarySource::Started);
    // Changed after the process started: replaced, and the installed one runs instead.
    lab.process(101, &[&via_link], None, Some(Duration::from_secs(7200)));
    let (out, _) = lab.run("101", &[&inst]);
    assert_eq!(
        lines(&out)[..2],
        [
            format!(
                "replaced {bin} (changed after the process started, or its start time is unreadable)"
            ),
            format!("binary installed {inst}"),
        ],
        "{out}"
    );
    let b = parse_binary(&out);
    assert_eq!(b.source, BinarySource::Installed);
    assert!(b.replaced.is_some() && b.version_text().is_some());
    // Its start time unreadable: replaced too.
    lab.process(102, &[&via_link], None, None);
    let (out, _) = lab.run("102", &[]);
    assert_eq!(
        out,
        format!(
            "replaced {bin} (changed after the process started, or its start time is unreadable)\nnone\n"
        )
    );
    // argv[0] not absolute, or resolving to nothing: the installed binary, nothing replaced.
    lab.process(103, &["freeswitch"], None, Some(Duration::from_secs(60)));
    lab.process(
        104,
        &[&lab.abs("gone/freeswitch")],
        None,
        Some(Duration::from_secs(60)),
    );
    // A relative argv[0] is not used, so its line break refuses nothing.
    lab.process(
        105,
        &["freeswitch\nbinary running /x"],
        None,
        Some(Duration::from_secs(60)),
    );
    for pid in ["103", "104", "105"] {
        let (out, _) = lab.run(pid, &[&inst]);
        assert_eq!(lines(&out)[0], format!("binary installed {inst}"), "{out}");
    }
}

/// A binary deleted since the process started (`exe` ends in ` (deleted)`): replaced; the
/// first installed binary that exists, resolved, runs instead; with none, `none`.
#[test]
fn with_no_usable_process_the_installed_binary_runs() {
    let lab = Lab::new();
    let inst = lab.binary(
        "usr/local/freeswitch/bin/freeswitch",
        SAYS_WHO,
        Duration::ZERO,
    );
    symlink(&inst, lab.path("usr/local/freeswitch/bin/fs-link")).unwrap();
    lab.mkdir("usr/bin");
    symlink(
        "../local/freeswitch/bin/fs-link",
        lab.path("usr/bin/freeswitch"),
    )
    .unwrap();
    let deleted = format!("{} (deleted)", lab.abs("old/freeswitch"));
    lab.process(7, &["/x"], Some(&deleted), None);
    let missing = lab.abs("nowhere/freeswitch");
    let link = lab.abs("usr/bin/freeswitch");
    let (out, _) = lab.run("7", &[&missing, &link]);
    assert_eq!(
        lines(&out)[..2],
        [
            format!("replaced {deleted}"),
            format!("binary installed {inst}")
        ],
        "{out}"
    );
    // No process at all (MainPID 0, no freeswitch in proc): the installed binary, or none.
    let (out, _) = lab.run("0", &[&missing, &link]);
    assert_eq!(lines(&out)[0], format!("binary installed {inst}"), "{out}");
    let (out, _) = lab.run("0", &[&missing]);
    assert_eq!(out, "none\n");
    assert_eq!(parse_binary(&out).version_text(), None);
}

/// No MainPID from systemd: the process `pidof -s freeswitch` names (argv[0] `freeswitch` or
/// `.../freeswitch`, or the kernel's name when argv[0] holds a space; the highest PID).
#[test]
fn without_systemd_the_process_pidof_names_is_read() {
    let lab = Lab::new();
    let a = lab.binary("a/freeswitch", SAYS_WHO, Duration::ZERO);
    let b = lab.binary("b/freeswitch", SAYS_WHO, Duration::ZERO);
    let c = lab.binary("c/freeswitch", SAYS_WHO, Duration::ZERO);
    let other = lab.binary("d/freeswitch", SAYS_WHO, Duration::ZERO);
    lab.process(20, &["freeswitch", "-nc"], Some(&a), None);
    lab.process(30, &["/usr/bin/freeswitch"], Some(&b), None);
    lab.process(90, &["/usr/bin/freeswitchd"], Some(&other), None);
    lab.process(95, &["/usr/sbin/sshd"], Some(&other), None);
    let (out, _) = lab.run("", &[]);
    assert_eq!(lines(&out)[0], format!("binary running {b}"), "{out}");
    // A title rewritten with a space: the kernel's name (here "freeswitch") decides.
    let d = lab.mkdir("proc/40");
    std::fs::write(format!("{d}/cmdline"), "freeswitch -nc -nonat\0").unwrap();
    symlink(&c, format!("{d}/exe")).unwrap();
    std::fs::write(format!("{d}/stat"), "40 (freeswitch) S 1 40 40 0\n").unwrap();
    let (out, _) = lab.run("0", &[]);
    assert_eq!(lines(&out)[0], format!("binary running {c}"), "{out}");
    std::fs::write(format!("{d}/stat"), "40 (sleep) S 1 40 40 0\n").unwrap();
    let (out, _) = lab.run("x", &[]);
    assert_eq!(lines(&out)[0], format!("binary running {b}"), "{out}");
}

/// The binary and every directory above it must be root's and writable by no one else; the
/// path must end in /freeswitch; each refusal is one `unsafe` line and nothing runs.
#[test]
fn an_unsafe_binary_is_refused_and_not_run() {
    let lab = Lab::new();
    let bin = lab.binary("opt/fs/bin/freeswitch", SAYS_WHO, Duration::ZERO);
    lab.process(1, &["/x"], Some(&bin), None);
    let bin_dir = lab.abs("opt/fs/bin");
    let refused = |out: &str| {
        let b = parse_binary(out);
        assert!(
            b.path.is_none() && b.said.is_none() && b.refused.is_some(),
            "{out}"
        );
        assert!(!out.contains("said"), "{out}");
    };

    std::os::unix::fs::chown(&bin, Some(1000), None).unwrap();
    let (out, _) = lab.run("1", &[]);
    assert_eq!(out, format!("unsafe {bin}: not owned by root\n"));
    refused(&out);
    std::os::unix::fs::chown(&bin, Some(0), None).unwrap();

    std::fs::set_permissions(&bin_dir, PermissionsExt::from_mode(0o775)).unwrap();
    let (out, _) = lab.run("1", &[]);
    assert_eq!(
        out,
        format!("unsafe {bin_dir}: writable by group or others (mode 775)\n")
    );
    refused(&out);
    std::fs::set_permissions(&bin_dir, PermissionsExt::from_mode(0o1757)).unwrap();
    let (out, _) = lab.run("1", &[]);
    assert_eq!(
        out,
        format!("unsafe {bin_dir}: writable by group or others (mode 1757)\n")
    );
    std::fs::set_permissions(&bin_dir, PermissionsExt::from_mode(0o755)).unwrap();

    // A link on the way (exe names the path through it): lstat sees mode 777.
    symlink(lab.path("opt/fs"), lab.path("opt/link")).unwrap();
    lab.process(2, &["/x"], Some(&lab.abs("opt/link/bin/freeswitch")), None);
    let (out, _) = lab.run("2", &[]);
    assert_eq!(
        out,
        format!(
            "unsafe {}: writable by group or others (mode 777)\n",
            lab.abs("opt/link")
        )
    );

    lab.process(3, &["/x"], Some(&lab.abs("opt/fs/bin/sleep")), None);
    let (out, _) = lab.run("3", &[]);
    assert_eq!(
        out,
        format!(
            "unsafe {}: not an absolute path to a freeswitch binary\n",
            lab.abs("opt/fs/bin/sleep")
        )
    );
    refused(&out);

    let gone = lab.abs("opt/gone/freeswitch");
    lab.process(4, &["/x"], Some(&gone), None);
    let (out, _) = lab.run("4", &[]);
    assert_eq!(
        out,
        format!("unsafe {gone}: a directory above it cannot be read\n")
    );
    refused(&out);

    // A line break in argv[0] (no exe): refused in one line, nothing of the path printed.
    let odd = lab.abs("x\nbinary running /usr/bin/freeswitch");
    lab.process(5, &[&odd], None, Some(Duration::from_secs(1)));
    let (out, _) = lab.run("5", &[&bin]);
    assert_eq!(out, "unsafe (a path with a line break): not run\n");
    refused(&out);
}

/// With no setpriv on PATH the binary cannot be run unprivileged: refused.
#[test]
fn without_setpriv_nothing_runs() {
    let lab = Lab::new();
    let bin = lab.binary("opt/fs/bin/freeswitch", SAYS_WHO, Duration::ZERO);
    lab.process(1, &["/x"], Some(&bin), None);
    let perl = ["/usr/bin/perl", "/bin/perl"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap();
    symlink(perl, lab.path("path/perl")).unwrap();
    let (out, _) = lab.run_with_path("1", &[], &lab.abs("path"));
    assert_eq!(
        out,
        format!("unsafe {bin}: setpriv is missing, so it cannot be run unprivileged\n")
    );
    // The same lab with setpriv found: it runs.
    let (out, _) = lab.run("1", &[]);
    assert_eq!(lines(&out)[0], format!("binary running {bin}"));
}

/// Only the first 300 bytes are read and only three lines kept; each kept line ends with a
/// line break even when the cut falls inside it (the section's end marker must start a line);
/// a binary that writes on past the cut is not waited for.
#[test]
fn the_output_is_cut_at_300_bytes_and_three_lines() {
    let lab = Lab::new();
    let long = lab.binary(
        "long/freeswitch",
        "#!/bin/sh\nhead -c 1000 /dev/zero | tr '\\0' x\necho\necho second\n",
        Duration::ZERO,
    );
    lab.process(1, &["/x"], Some(&long), None);
    let (out, _) = lab.run("1", &[]);
    assert_eq!(
        out,
        format!("binary running {long}\nsaid {}\n", "x".repeat(300))
    );
    let short = lab.binary(
        "short/freeswitch",
        "#!/bin/sh\nprintf 'FreeSWITCH version: 1.10.12\\n\\nthird\\nfourth\\n'\n",
        Duration::ZERO,
    );
    lab.process(2, &["/x"], Some(&short), None);
    let (out, _) = lab.run("2", &[]);
    assert_eq!(
        out,
        format!("binary running {short}\nsaid FreeSWITCH version: 1.10.12\nsaid \nsaid third\n")
    );
    // `yes` writes forever: past the cut it gets SIGPIPE, well before the 5 s limit.
    let endless = lab.binary(
        "endless/freeswitch",
        "#!/bin/sh\nexec yes\n",
        Duration::ZERO,
    );
    lab.process(3, &["/x"], Some(&endless), None);
    let (out, took) = lab.run("3", &[]);
    assert_eq!(out.matches("said y").count(), 3, "{out}");
    assert!(took < Duration::from_secs(4), "{took:?}");
}

/// State letter of a process, None when it is gone.
fn state(pid: &str) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

/// A binary that does not exit is killed after 5 s with what it started; what it printed by
/// then is kept.
#[test]
fn a_binary_that_hangs_is_killed_after_5_seconds() {
    let lab = Lab::new();
    let bin = lab.binary(
        "hang/freeswitch",
        "#!/bin/sh\necho 'FreeSWITCH version: 1.10.12'\necho \"self $$\"\nsleep 120 &\necho \"child $!\"\nexec sleep 120\n",
        Duration::ZERO,
    );
    lab.process(1, &["/x"], Some(&bin), None);
    let (out, took) = lab.run("1", &[]);
    assert!(
        took >= Duration::from_millis(4900) && took < Duration::from_millis(8500),
        "{took:?}"
    );
    let l = lines(&out);
    assert_eq!(
        l[..2],
        [
            format!("binary running {bin}").as_str(),
            "said FreeSWITCH version: 1.10.12"
        ]
    );
    let self_pid = l[2].strip_prefix("said self ").unwrap();
    let child_pid = l[3].strip_prefix("said child ").unwrap();
    // Killed (gone, or a zombie until whoever inherited it reaps it).
    std::thread::sleep(Duration::from_millis(200));
    for pid in [self_pid, child_pid] {
        assert!(matches!(state(pid), None | Some('Z')), "{pid} still runs");
    }
}

/// A process that left the group (its own session) and holds the output open cannot keep the
/// probe waiting past the 5 s either.
#[test]
fn a_process_that_leaves_the_group_does_not_hold_the_probe() {
    let lab = Lab::new();
    let bin = lab.binary(
        "escape/freeswitch",
        "#!/bin/sh\necho 'FreeSWITCH version: 1.10.12'\nsetsid sleep 120 &\necho \"escaped $!\"\n",
        Duration::ZERO,
    );
    lab.process(1, &["/x"], Some(&bin), None);
    let (out, took) = lab.run("1", &[]);
    let escaped = lines(&out)
        .iter()
        .find_map(|l| l.strip_prefix("said escaped "))
        .map(str::to_string);
    if let Some(pid) = &escaped {
        // Ours to end: the test started it.
        let _ = Command::new("kill").arg(pid).status();
    }
    assert!(
        took >= Duration::from_millis(4900) && took < Duration::from_millis(8500),
        "{took:?}"
    );
    assert!(escaped.is_some(), "{out}");
    assert_eq!(parse_binary(&out).version_text(), Some("1.10.12"));
}

/// The program's `resolved` is `readlink -f` (GNU coreutils) on links (absolute, relative,
/// chained, looping, dangling), `.`/`..` after links, missing components and trailing slashes.
#[test]
fn argv0_resolves_as_readlink_f_does() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap().to_string();
    std::fs::create_dir_all(format!("{d}/a/b")).unwrap();
    std::fs::write(format!("{d}/a/b/f"), "").unwrap();
    for (link, target) in [
        ("l", "a".to_string()),
        ("abs", format!("{d}/a/b")),
        ("rel", "a/b/../b/f".to_string()),
        ("chain", "rel".to_string()),
        ("loop", "loop".to_string()),
        ("dangling", "nowhere/x".to_string()),
        ("missing", "gone".to_string()),
        ("dot", ".".to_string()),
        ("slash", "a/".to_string()),
    ] {
        symlink(target, format!("{d}/{link}")).unwrap();
    }
    let program = super::BINARY_PROGRAM;
    let start = program.find("sub resolved {").unwrap();
    let end = start + program[start..].find("\n}\n").unwrap() + 3;
    let sub = &program[start..end];
    for rel in [
        "a/b/f",
        "l/b/f",
        "l/b/new",
        "nowhere/x",
        "loop",
        "dangling",
        "missing",
        "missing/x",
        "a/b/f/",
        "a/b/",
        "a//b/../b/f",
        "a/b/f/x",
        "a/b/f/..",
        "abs/f",
        "rel",
        "chain",
        "dot/dot/a/./b/f",
        "l/../l/b/f",
        "slash/b/f",
        "a/new/",
        "l/..",
        "a/b/f/.",
    ] {
        let path = format!("{d}/{rel}");
        let want = Command::new("readlink")
            .args(["-f", &path])
            .output()
            .unwrap();
        let want = String::from_utf8_lossy(&want.stdout).trim_end().to_string();
        let got = Command::new("perl")
            .args([
                "-e",
                &format!("{sub}print resolved($ARGV[0]);"),
                "--",
                &path,
            ])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&got.stdout), want, "{rel}");
    }
    for root in ["/", "//", "/.."] {
        let got = Command::new("perl")
            .args(["-e", &format!("{sub}print resolved($ARGV[0]);"), "--", root])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&got.stdout), "/");
    }
}
