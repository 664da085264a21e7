//! A private OpenSSH sshd on 127.0.0.1 for integration tests: its own config, host key and
//! user key in a temp dir. Needs /usr/sbin/sshd (make test installs openssh-server).

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fsfleet::inventory::{Host, HostKeyPolicy};

pub struct TestSshd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Child,
}

fn keygen(path: &Path) {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "fsfleet-test", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen runs");
    assert!(st.success(), "ssh-keygen failed");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl TestSshd {
    pub fn start() -> TestSshd {
        Self::start_with("")
    }

    /// `extra` is appended to sshd_config.
    pub fn start_with(extra: &str) -> TestSshd {
        std::fs::create_dir_all("/run/sshd").expect("create /run/sshd");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        keygen(&d.join("host_key"));
        keygen(&d.join("user_key"));
        std::fs::copy(d.join("user_key.pub"), d.join("authorized_keys")).unwrap();
        let port = free_port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nAuthorizedKeysFile {ak}\n\
             PidFile {pid}\nStrictModes no\nUsePAM no\nPermitRootLogin yes\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nLogLevel DEBUG1\nAllowTcpForwarding yes\n{extra}\n",
            hk = d.join("host_key").display(),
            ak = d.join("authorized_keys").display(),
            pid = d.join("sshd.pid").display(),
        );
        std::fs::write(d.join("sshd_config"), config).unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-f"])
            .arg(d.join("sshd_config"))
            .arg("-E")
            .arg(d.join("sshd.log"))
            .stdin(Stdio::null())
            .spawn()
            .expect("start /usr/sbin/sshd (install openssh-server)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sshd did not start: {}",
                std::fs::read_to_string(d.join("sshd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        TestSshd { dir, port, child }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn host_pub(&self) -> String {
        std::fs::read_to_string(self.path("host_key.pub")).unwrap()
    }

    /// A known_hosts line for this server.
    pub fn known_hosts_line(&self) -> String {
        let mut parts = self
            .host_pub()
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>();
        parts.truncate(2);
        format!("[127.0.0.1]:{} {}\n", self.port, parts.join(" "))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("sshd.log")).unwrap_or_default()
    }

    /// Whether the server saw any authentication attempt with a credential.
    pub fn saw_auth_attempt(&self) -> bool {
        let log = self.log();
        log.contains("Accepted ")
            || log.contains("Failed ")
            || log
                .contains("userauth-request for user root service ssh-connection method publickey")
    }

    /// A `Host` that reaches this server as root with the user key, known_hosts in `kh`.
    pub fn host(&self, name: &str, kh: &Path, policy: HostKeyPolicy) -> Host {
        let mut h = Host::with_defaults(name, "127.0.0.1");
        h.port = self.port;
        h.identity_files = vec![self.path("user_key")];
        h.known_hosts = Some(kh.to_path_buf());
        h.host_key_policy = policy;
        h
    }
}

impl Drop for TestSshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
