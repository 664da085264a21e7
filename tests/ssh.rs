//! The SSH transport against a real OpenSSH sshd on 127.0.0.1.

mod support;

use std::time::Duration;

use fsfleet::hostfs;
use fsfleet::inventory::{HostKeyPolicy, Jump};
use fsfleet::ssh::{ConnectOptions, Connector, SshError};
use support::sshd::TestSshd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn connector(hosts: &[fsfleet::inventory::Host]) -> Connector {
    Connector::new(hosts, ConnectOptions::default())
}

/// A session to `sshd` as host h1, its key already in known_hosts (strict policy).
async fn trusted_session(sshd: &TestSshd) -> fsfleet::ssh::Session {
    let kh = sshd.path("known_hosts");
    std::fs::write(&kh, sshd.known_hosts_line()).unwrap();
    let host = sshd.host("h1", &kh, HostKeyPolicy::Strict);
    connector(std::slice::from_ref(&host))
        .connect(&host)
        .await
        .unwrap()
}

#[tokio::test]
async fn strict_refuses_an_unknown_key_before_authentication() {
    let sshd = TestSshd::start();
    let kh = sshd.path("known_hosts");
    let host = sshd.host("h1", &kh, HostKeyPolicy::Strict);
    let err = connector(std::slice::from_ref(&host))
        .connect(&host)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, SshError::HostKeyUnknown { .. }), "{msg}");
    assert!(msg.contains("h1") && msg.contains("SHA256:"), "{msg}");
    assert!(!kh.exists(), "strict must not record anything");
    assert!(
        !sshd.saw_auth_attempt(),
        "no credential may be offered to an unverified host"
    );
}

#[tokio::test]
async fn accept_new_learns_the_key_then_it_is_known() {
    let sshd = TestSshd::start();
    let kh = sshd.path("known_hosts");
    let host = sshd.host("h1", &kh, HostKeyPolicy::AcceptNew);
    let s = connector(std::slice::from_ref(&host))
        .connect(&host)
        .await
        .unwrap();
    s.close().await;
    let text = std::fs::read_to_string(&kh).unwrap();
    assert_eq!(text, sshd.known_hosts_line());
    // A strict run now accepts it.
    let strict = sshd.host("h1", &kh, HostKeyPolicy::Strict);
    let s = connector(std::slice::from_ref(&strict))
        .connect(&strict)
        .await
        .unwrap();
    assert_eq!(s.exec("echo hi", b"").await.unwrap().stdout_text(), "hi\n");
}

#[tokio::test]
async fn a_changed_key_is_refused_naming_file_line_and_fingerprint() {
    let sshd = TestSshd::start();
    let other = TestSshd::start();
    let kh = sshd.path("known_hosts");
    // Line 3 records another server's key under this server's name.
    let forged = other
        .known_hosts_line()
        .replace(&format!(":{} ", other.port), &format!(":{} ", sshd.port));
    std::fs::write(&kh, format!("# fleet keys\n\n{forged}")).unwrap();
    for policy in [
        HostKeyPolicy::AcceptNew,
        HostKeyPolicy::Strict,
        HostKeyPolicy::Ask,
    ] {
        let host = sshd.host("web1", &kh, policy);
        let err = connector(std::slice::from_ref(&host))
            .connect(&host)
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, SshError::HostKeyChanged { line: 3, .. }),
            "{msg}"
        );
        assert!(
            msg.contains("web1")
                && msg.contains(&format!("{}:3", kh.display()))
                && msg.contains("SHA256:"),
            "{msg}"
        );
    }
    assert!(
        !sshd.saw_auth_attempt(),
        "no credential may be offered when the key changed"
    );
    assert_eq!(
        std::fs::read_to_string(&kh).unwrap(),
        format!("# fleet keys\n\n{forged}"),
        "known_hosts untouched"
    );
}

#[tokio::test]
async fn exec_reports_exit_codes_stderr_and_stdin() {
    let sshd = TestSshd::start();
    let s = trusted_session(&sshd).await;
    let out = s.exec("echo out; echo err >&2; exit 7", b"").await.unwrap();
    assert_eq!(
        (
            out.stdout_text().as_str(),
            out.stderr_text().as_str(),
            out.status
        ),
        ("out\n", "err\n", 7)
    );
    let out = s
        .run(
            "tr a-z A-Z",
            b"secret stays on stdin",
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(out.stdout_text(), "SECRET STAYS ON STDIN");
    // The remote time limit kills a runaway command.
    let out = s
        .run("sleep 30", b"", Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(out.status, 124, "timeout(1) reports 124");
    // Many execs share the one connection.
    for i in 0..5 {
        assert_eq!(
            s.exec(&format!("echo {i}"), b"")
                .await
                .unwrap()
                .stdout_text(),
            format!("{i}\n")
        );
    }
    assert_eq!(
        sshd.log().matches("Accepted publickey").count(),
        1,
        "one connection, one login"
    );
}

#[tokio::test]
async fn a_lost_connection_is_an_error_not_exit_zero() {
    let sshd = TestSshd::start();
    let s = trusted_session(&sshd).await;
    // Kill the sshd process serving this session from inside the session.
    let pid = s
        .exec("ps -o ppid= -p $PPID", b"")
        .await
        .unwrap()
        .stdout_text();
    let pid = pid.trim().to_string();
    let err = s
        .exec(&format!("sleep 0.2; kill -9 {pid} $PPID; sleep 5"), b"")
        .await
        .unwrap_err();
    assert!(matches!(err, SshError::ConnectionLost { .. }), "{err}");
    assert!(err.to_string().contains("h1"), "{err}");
}

#[tokio::test]
async fn hostfs_writes_atomically_with_the_given_owner_and_mode_over_ssh() {
    let sshd = TestSshd::start();
    let s = trusted_session(&sshd).await;
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let target = dir.path().join("vars.xml");
    std::fs::write(&target, "old").unwrap();
    let ino_before = std::fs::metadata(&target).unwrap().ino();
    let fresh = dir.path().join("fs_cli.conf");
    let lines = hostfs::apply(
        &s,
        &[
            hostfs::Op::Write {
                path: target.to_str().unwrap(),
                content: b"new content\n",
                user: "1",
                group: "1",
                mode: 0o640,
            },
            hostfs::Op::Write {
                path: fresh.to_str().unwrap(),
                content: b"x",
                user: "root",
                group: "root",
                mode: 0o600,
            },
        ],
    )
    .await
    .unwrap();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let md = std::fs::metadata(&target).unwrap();
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "new content\n");
    assert_eq!((md.mode() & 0o7777, md.uid(), md.gid()), (0o640, 1, 1));
    assert_ne!(
        md.ino(),
        ino_before,
        "replaced by rename, not rewritten in place"
    );
    assert_eq!(std::fs::metadata(&fresh).unwrap().mode() & 0o7777, 0o600);
    // A missing directory: an error naming it, and no stage file left anywhere.
    let bad = dir.path().join("missing-dir").join("f");
    let err = hostfs::apply(
        &s,
        &[hostfs::Op::Write {
            path: bad.to_str().unwrap(),
            content: b"x",
            user: "root",
            group: "root",
            mode: 0o600,
        }],
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("missing-dir"), "{err}");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[tokio::test]
async fn tunnel_reaches_a_tcp_server_on_the_host() {
    let sshd = TestSshd::start();
    let kh = sshd.path("known_hosts");
    std::fs::write(&kh, sshd.known_hosts_line()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 5];
        sock.read_exact(&mut buf).await.unwrap();
        sock.write_all(&[b"echo:".as_slice(), &buf].concat())
            .await
            .unwrap();
    });
    let host = sshd.host("h1", &kh, HostKeyPolicy::Strict);
    let s = connector(std::slice::from_ref(&host))
        .connect(&host)
        .await
        .unwrap();
    let mut stream = s.tunnel(port).await.unwrap();
    stream.write_all(b"hello").await.unwrap();
    let mut got = vec![0u8; 10];
    stream.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"echo:hello");
}

#[tokio::test]
async fn jump_host_carries_the_target_connection() {
    let bastion = TestSshd::start();
    let target = TestSshd::start();
    let kh = bastion.path("known_hosts");
    std::fs::write(
        &kh,
        format!(
            "{}{}",
            bastion.known_hosts_line(),
            target.known_hosts_line()
        ),
    )
    .unwrap();
    let b = bastion.host("bastion", &kh, HostKeyPolicy::Strict);
    let mut t = target.host("pbx1", &kh, HostKeyPolicy::Strict);
    t.jump = Some(Jump::Host {
        name: "bastion".into(),
    });
    let mut t2 = target.host("pbx2", &kh, HostKeyPolicy::Strict);
    t2.jump = Some(Jump::Host {
        name: "bastion".into(),
    });
    let c = connector(&[b, t.clone(), t2.clone()]);
    let s1 = c.connect(&t).await.unwrap();
    let s2 = c.connect(&t2).await.unwrap();
    assert_eq!(
        s1.exec("echo via", b"").await.unwrap().stdout_text(),
        "via\n"
    );
    assert_eq!(
        s2.exec("echo via", b"").await.unwrap().stdout_text(),
        "via\n"
    );
    let blog = bastion.log();
    assert_eq!(
        blog.matches("Accepted publickey").count(),
        1,
        "one shared bastion connection"
    );
    assert_eq!(
        blog.matches(&format!("target 127.0.0.1 port {}", target.port))
            .count(),
        2,
        "{blog}"
    );
    // A bastion that cannot be reached names itself and the target.
    let mut t3 = target.host("pbx3", &kh, HostKeyPolicy::Strict);
    t3.jump = Some(Jump::Spec {
        user: Some("root".into()),
        address: "127.0.0.1".into(),
        port: 1,
    });
    let err = c.connect(&t3).await.unwrap_err().to_string();
    assert!(err.contains("jump host root@127.0.0.1:1 for pbx3"), "{err}");
}

#[tokio::test]
async fn agent_and_key_auth_and_a_clear_error_when_nothing_works() {
    let sshd = TestSshd::start();
    let kh = sshd.path("known_hosts");
    std::fs::write(&kh, sshd.known_hosts_line()).unwrap();
    // No usable key: the error lists what was tried.
    let mut host = sshd.host("h1", &kh, HostKeyPolicy::Strict);
    host.identity_files = vec![sshd.path("host_key")];
    host.password_env = Some("FSFLEET_TEST_UNSET_PW".into());
    let err = connector(std::slice::from_ref(&host))
        .connect(&host)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("authentication as root@h1 failed"), "{err}");
    assert!(
        err.contains("host_key") && err.contains("FSFLEET_TEST_UNSET_PW"),
        "{err}"
    );

    // The same host through an ssh-agent holding the user key.
    let sock = sshd.path("agent.sock");
    let agent = std::process::Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
        }
    }
    let _agent = Kill(agent);
    for _ in 0..100 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let st = std::process::Command::new("ssh-add")
        .arg(sshd.path("user_key"))
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .unwrap();
    assert!(st.status.success(), "{st:?}");
    // SAFETY: this test binary's other tests authenticate with key files, which stay valid
    // whether or not an agent is also offered first.
    unsafe { std::env::set_var("SSH_AUTH_SOCK", &sock) };
    let s = connector(std::slice::from_ref(&host))
        .connect(&host)
        .await
        .unwrap();
    assert_eq!(
        s.exec("echo agent", b"").await.unwrap().stdout_text(),
        "agent\n"
    );
}
