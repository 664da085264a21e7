//! One SSH connection per host, reused by every exec, upload and tunnel of that host.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::{PublicKey, PublicKeyOrCertificate};
use russh::{ChannelMsg, ChannelStream, Disconnect};
use tokio::sync::OnceCell;

use super::SshError;
use super::auth::{KeyRing, authenticate};
use super::known_hosts::{HostKeyStatus, KnownHosts, fingerprint};
use crate::inventory::{Host, HostKeyPolicy, Jump};

/// How often to send keepalives, and when to give up on a silent server.
const KEEPALIVE: Duration = Duration::from_secs(15);
const INACTIVITY: Duration = Duration::from_secs(120);

/// Checks the server's host key during the handshake, before any authentication.
pub struct Verifier {
    host: String,
    address: String,
    port: u16,
    policy: HostKeyPolicy,
    /// The operator answered no to this host's key at the `ask` prompt.
    declined: bool,
    /// Record a learned key hashed (`HashKnownHosts yes` for this host).
    hash_known_hosts: bool,
    known: Arc<StdMutex<KnownHosts>>,
    /// Why the key was refused, read back after the handshake fails.
    refusal: Arc<StdMutex<Option<SshError>>>,
    /// In scan mode the key is recorded and refused (no authentication ever follows).
    seen: Option<Arc<StdMutex<Option<PublicKey>>>>,
    /// The SHA256 fingerprint of the key that was accepted, for [`Session::host_key`].
    accepted: Arc<StdMutex<Option<String>>>,
}

impl client::Handler for Verifier {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        offered: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key = match offered {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            PublicKeyOrCertificate::Certificate(_) => {
                self.refuse(SshError::Other(format!(
                    "{} offered a host certificate; fsfleet verifies plain host keys only",
                    self.host
                )));
                return Ok(false);
            }
        };
        if let Some(seen) = &self.seen {
            if let Ok(mut s) = seen.lock() {
                *s = Some(key);
            }
            return Ok(false);
        }
        let fp = fingerprint(&key);
        if let Ok(mut a) = self.accepted.lock() {
            *a = Some(fp.clone());
        }
        let mut known = match self.known.lock() {
            Ok(k) => k,
            Err(_) => return Ok(false),
        };
        match known.check(&self.address, self.port, &key) {
            HostKeyStatus::Known => Ok(true),
            HostKeyStatus::Changed { file, line } => {
                self.refuse(SshError::HostKeyChanged {
                    host: self.host.clone(),
                    fingerprint: fp,
                    file,
                    line,
                });
                Ok(false)
            }
            HostKeyStatus::Revoked { file, line } => {
                self.refuse(SshError::HostKeyRevoked {
                    host: self.host.clone(),
                    fingerprint: fp,
                    file,
                    line,
                });
                Ok(false)
            }
            HostKeyStatus::Unknown => match self.policy {
                HostKeyPolicy::AcceptNew => {
                    match known.learn(&self.address, self.port, &key, self.hash_known_hosts) {
                        Ok(()) => Ok(true),
                        Err(source) => {
                            self.refuse(SshError::KnownHostsWrite {
                                host: self.host.clone(),
                                source,
                            });
                            Ok(false)
                        }
                    }
                }
                HostKeyPolicy::Strict => {
                    self.refuse(SshError::HostKeyUnknown {
                        host: self.host.clone(),
                        fingerprint: fp,
                        hint: "host_key_policy is strict: add the key to known_hosts (ssh-keyscan, then check it) \
                               or run once with --host-key-policy accept-new"
                            .into(),
                    });
                    Ok(false)
                }
                HostKeyPolicy::Ask => {
                    let hint = if self.declined {
                        "you did not accept it at the prompt: compare it with the key on the host's \
                         console (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`), then run again \
                         and answer y, or add it to known_hosts"
                    } else {
                        "not confirmed: run on a terminal to be asked, use --host-key-policy accept-new, \
                         or pre-load known_hosts"
                    };
                    self.refuse(SshError::HostKeyUnknown {
                        host: self.host.clone(),
                        fingerprint: fp,
                        hint: hint.into(),
                    });
                    Ok(false)
                }
            },
        }
    }
}

impl Verifier {
    fn refuse(&self, e: SshError) {
        if let Ok(mut r) = self.refusal.lock() {
            *r = Some(e);
        }
    }
}

/// Settings of the run that every connection shares.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// `--known-hosts`: replaces ~/.ssh/known_hosts (and the inventory's) for reading and learning.
    pub known_hosts: Option<PathBuf>,
    /// `--host-key-policy`: overrides the inventory.
    pub host_key_policy: Option<HostKeyPolicy>,
}

/// Opens sessions for the hosts of one run: shares key files, known_hosts and bastions.
pub struct Connector {
    opts: ConnectOptions,
    /// Every inventory host by name, so a `jump` can name one outside `--limit`.
    hosts: HashMap<String, Host>,
    keys: KeyRing,
    known: StdMutex<HashMap<Vec<PathBuf>, Arc<StdMutex<KnownHosts>>>>,
    bastions: StdMutex<HashMap<String, Arc<OnceCell<Arc<Session>>>>>,
    /// Hosts whose new key the operator was shown and did not accept at the `ask` prompt.
    declined: StdMutex<std::collections::HashSet<String>>,
}

impl Connector {
    pub fn new(all_hosts: &[Host], opts: ConnectOptions) -> Connector {
        Connector {
            opts,
            hosts: all_hosts
                .iter()
                .map(|h| (h.name.clone(), h.clone()))
                .collect(),
            keys: KeyRing::default(),
            known: StdMutex::new(HashMap::new()),
            bastions: StdMutex::new(HashMap::new()),
            declined: StdMutex::new(Default::default()),
        }
    }

    fn policy(&self, host: &Host) -> HostKeyPolicy {
        self.opts.host_key_policy.unwrap_or(host.host_key_policy)
    }

    /// The known_hosts of a host. `--known-hosts` replaces the user files; an inventory
    /// `known_hosts` is read with ~/.ssh/known_hosts (and is where new keys are learned); the
    /// system-wide file is always read.
    pub fn known_hosts_for(&self, host: &Host) -> Result<Arc<StdMutex<KnownHosts>>, SshError> {
        let home = dirs::home_dir().map(|h| h.join(".ssh").join("known_hosts"));
        let mut files: Vec<PathBuf> = match (&self.opts.known_hosts, &host.known_hosts) {
            (Some(flag), _) => vec![flag.clone()],
            (None, Some(inv)) => std::iter::once(inv.clone()).chain(home).collect(),
            (None, None) => home.into_iter().collect(),
        };
        let user_file = files.first().cloned();
        files.push(PathBuf::from("/etc/ssh/ssh_known_hosts"));
        let mut cache = self
            .known
            .lock()
            .map_err(|_| SshError::Other("known_hosts cache poisoned".into()))?;
        if let Some(k) = cache.get(&files) {
            return Ok(k.clone());
        }
        let kh = KnownHosts::load(&files, user_file)?;
        let kh = Arc::new(StdMutex::new(kh));
        cache.insert(files, kh.clone());
        Ok(kh)
    }

    fn config(&self, host: &Host, known: &KnownHosts) -> Arc<client::Config> {
        let mut config = client::Config {
            keepalive_interval: Some(KEEPALIVE),
            inactivity_timeout: Some(INACTIVITY),
            nodelay: true,
            ..Default::default()
        };
        // Prefer the algorithms already recorded for this host, so a server that offers another
        // type first is matched against what we know rather than looking "new".
        let known_algs = known.algorithms_for(&host.address, host.port);
        if !known_algs.is_empty() {
            let mut prefs = known_algs;
            for a in config.preferred.key.iter() {
                if !prefs.contains(a) {
                    prefs.push(a.clone());
                }
            }
            config.preferred.key = prefs.into();
        }
        Arc::new(config)
    }

    /// Connect and authenticate. The host key is verified before any credential is sent.
    pub async fn connect(&self, host: &Host) -> Result<Session, SshError> {
        Box::pin(self.connect_inner(host, None)).await
    }

    /// Handshake only, to read the host key of a host that has no known_hosts entry yet
    /// (for the `ask` policy's one question per run). Nothing is authenticated.
    pub async fn scan_key(&self, host: &Host) -> Result<PublicKey, SshError> {
        let seen = Arc::new(StdMutex::new(None));
        let r = Box::pin(self.connect_inner(host, Some(seen.clone()))).await;
        let key = seen.lock().ok().and_then(|mut s| s.take());
        match (key, r) {
            (Some(k), _) => Ok(k),
            (None, Err(e)) => Err(e),
            (None, Ok(_)) => Err(SshError::Other(format!(
                "{}: no host key offered",
                host.name
            ))),
        }
    }

    /// Whether the host has no entry at all in its known_hosts files (a "new" host for `ask`).
    pub fn is_new_host(&self, host: &Host) -> Result<bool, SshError> {
        let known = self.known_hosts_for(host)?;
        let k = known
            .lock()
            .map_err(|_| SshError::Other("known_hosts poisoned".into()))?;
        Ok(!k.has_entries_for(&host.address, host.port))
    }

    /// The operator saw this host's key at the `ask` prompt and did not accept it: its refusal
    /// then says so, instead of asking for a terminal the operator already had.
    pub fn decline(&self, host: &Host) {
        if let Ok(mut d) = self.declined.lock() {
            d.insert(host.name.clone());
        }
    }

    fn was_declined(&self, host: &Host) -> bool {
        self.declined
            .lock()
            .map(|d| d.contains(&host.name))
            .unwrap_or(false)
    }

    /// Record keys the operator confirmed.
    pub fn learn(&self, host: &Host, key: &PublicKey) -> Result<(), SshError> {
        let known = self.known_hosts_for(host)?;
        let mut k = known
            .lock()
            .map_err(|_| SshError::Other("known_hosts poisoned".into()))?;
        k.learn(&host.address, host.port, key, host.hash_known_hosts)
            .map_err(|source| SshError::KnownHostsWrite {
                host: host.name.clone(),
                source,
            })
    }

    async fn connect_inner(
        &self,
        host: &Host,
        scan: Option<Arc<StdMutex<Option<PublicKey>>>>,
    ) -> Result<Session, SshError> {
        let known = self.known_hosts_for(host)?;
        let config = {
            let k = known
                .lock()
                .map_err(|_| SshError::Other("known_hosts poisoned".into()))?;
            self.config(host, &k)
        };
        let refusal = Arc::new(StdMutex::new(None));
        let accepted = Arc::new(StdMutex::new(None));
        let verifier = Verifier {
            host: host.name.clone(),
            address: host.address.clone(),
            port: host.port,
            policy: self.policy(host),
            declined: self.was_declined(host),
            hash_known_hosts: host.hash_known_hosts,
            known,
            refusal: refusal.clone(),
            seen: scan,
            accepted: accepted.clone(),
        };
        let limit = host.connect_timeout;
        let secs = limit.as_secs().max(1);
        let addr = crate::display::host_port(&host.address, host.port);

        let (bastion, handshake) = match &host.jump {
            None => {
                let tcp = tokio::time::timeout(
                    limit,
                    tokio::net::TcpStream::connect((host.address.as_str(), host.port)),
                )
                .await
                .map_err(|_| SshError::Timeout {
                    what: format!("TCP connect to {addr} ({})", host.name),
                    secs,
                })?
                .map_err(|source| SshError::Connect {
                    addr: format!("{addr} ({})", host.name),
                    source,
                })?;
                let _ = tcp.set_nodelay(true);
                (
                    None,
                    tokio::time::timeout(limit, client::connect_stream(config, tcp, verifier))
                        .await,
                )
            }
            Some(jump) => {
                let bastion = self.bastion(host, jump).await?;
                let chan = bastion
                    .handle
                    .channel_open_direct_tcpip(
                        host.address.clone(),
                        u32::from(host.port),
                        "127.0.0.1",
                        0,
                    )
                    .await
                    .map_err(|e| SshError::Jump {
                        jump: bastion.name.clone(),
                        host: host.name.clone(),
                        source: Box::new(SshError::Tunnel {
                            what: format!("the bastion could not open a tunnel to {addr}"),
                            source: e,
                        }),
                    })?;
                let hs = tokio::time::timeout(
                    limit,
                    client::connect_stream(config, chan.into_stream(), verifier),
                )
                .await;
                (Some(bastion), hs)
            }
        };
        let refused = || refusal.lock().ok().and_then(|mut r| r.take());
        let mut handle = match handshake {
            Err(_) => {
                return Err(SshError::Timeout {
                    what: format!("SSH handshake with {addr} ({})", host.name),
                    secs,
                });
            }
            Ok(Err(e)) => {
                return Err(refused().unwrap_or(SshError::Protocol {
                    host: host.name.clone(),
                    source: e,
                }));
            }
            Ok(Ok(h)) => h,
        };
        if let Some(e) = refused() {
            return Err(e);
        }
        let host_key = accepted
            .lock()
            .ok()
            .and_then(|mut a| a.take())
            .ok_or_else(|| SshError::Other(format!("{}: no host key was verified", host.name)))?;
        tokio::time::timeout(
            limit.max(Duration::from_secs(30)),
            authenticate(&mut handle, host, &self.keys),
        )
        .await
        .map_err(|_| SshError::Timeout {
            what: format!("authentication on {}", host.name),
            secs,
        })??;

        let sudo_password = match (&host.sudo, &host.sudo_password_env) {
            (true, Some(var)) => match std::env::var(var) {
                Ok(v) if !v.is_empty() => Some(SudoPassword(v)),
                _ => {
                    return Err(SshError::Sudo {
                        host: host.name.clone(),
                        reason: format!(
                            "sudo_password_env names ${var}, which is not set in fsfleet's environment"
                        ),
                    });
                }
            },
            _ => None,
        };
        let privilege = if host.user == "root" || !host.sudo {
            Privilege::Direct
        } else if let Some(pw) = sudo_password {
            Privilege::SudoPassword(pw)
        } else {
            Privilege::Sudo
        };
        Ok(Session {
            host_key,
            name: host.name.clone(),
            user: host.user.clone(),
            port: host.port,
            handle: Arc::new(handle),
            privilege,
            _bastion: bastion,
        })
    }

    /// One shared connection per bastion for the whole run.
    async fn bastion(&self, target: &Host, jump: &Jump) -> Result<Arc<Session>, SshError> {
        let bastion_host = match jump {
            Jump::Host { name } => self
                .hosts
                .get(name)
                .cloned()
                .ok_or_else(|| SshError::Jump {
                    jump: name.clone(),
                    host: target.name.clone(),
                    source: Box::new(SshError::Other("no such host in the inventory".into())),
                })?,
            Jump::Spec {
                user,
                address,
                port,
            } => {
                let mut b = target.clone();
                b.name = format!(
                    "{}@{}",
                    user.as_deref().unwrap_or(&target.user),
                    crate::display::host_port(address, *port)
                );
                b.address = address.clone();
                b.port = *port;
                b.user = user.clone().unwrap_or_else(|| target.user.clone());
                b.jump = None;
                b
            }
        };
        let cell = {
            let mut map = self
                .bastions
                .lock()
                .map_err(|_| SshError::Other("bastion cache poisoned".into()))?;
            map.entry(bastion_host.name.clone())
                .or_insert_with(|| Arc::new(OnceCell::new()))
                .clone()
        };
        let jump_name = bastion_host.name.clone();
        cell.get_or_try_init(|| async {
            Box::pin(self.connect_inner(&bastion_host, None))
                .await
                .map(Arc::new)
        })
        .await
        .cloned()
        .map_err(|e| SshError::Jump {
            jump: jump_name,
            host: target.name.clone(),
            source: Box::new(e),
        })
    }
}

struct SudoPassword(String);

impl std::fmt::Debug for SudoPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// How privileged commands run on the host.
#[derive(Debug)]
enum Privilege {
    /// Logged in as root, or sudo disabled in the inventory.
    Direct,
    /// `sudo -n`: passwordless sudo.
    Sudo,
    /// `sudo -S`, the password fed on stdin when sudo prompts for it.
    SudoPassword(SudoPassword),
}

/// What a remote command produced.
#[derive(Debug, Clone, Default)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Exit status; a signal is reported as 128 + its number when the name is known, else 255.
    pub status: u32,
}

impl ExecOutput {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
    pub fn success(&self) -> bool {
        self.status == 0
    }
}

/// An authenticated SSH connection to one host.
pub struct Session {
    pub name: String,
    pub user: String,
    /// The port this session is connected through (the firewall must keep it open).
    pub port: u16,
    handle: Arc<Handle<Verifier>>,
    privilege: Privilege,
    /// Keeps the bastion connection alive as long as a target uses it.
    _bastion: Option<Arc<Session>>,
    /// SHA256 fingerprint of the host key verified during the handshake.
    host_key: String,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("name", &self.name)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// Quote for a POSIX shell: one single-quoted word.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Marker printed by the remote shell once sudo has accepted, so stdin data is sent only to the
/// command and never to sudo's password prompt.
const SUDO_OK: &str = "fsfleet-sudo-ok";
const SUDO_PROMPT: &str = "[fsfleet-sudo-prompt]";

impl Session {
    /// `SHA256:...` of the host key this session verified (the vault binds secrets to it).
    pub fn host_key(&self) -> &str {
        &self.host_key
    }

    /// Whether privileged commands go through sudo.
    pub fn uses_sudo(&self) -> bool {
        !matches!(self.privilege, Privilege::Direct)
    }

    /// Run a command as the login user, exactly as given (no sudo, no time limit).
    pub async fn exec(&self, command: &str, stdin: &[u8]) -> Result<ExecOutput, SshError> {
        self.exec_inner(command, stdin, false).await
    }

    /// Run a shell script with root privileges (directly, or through sudo), killed on the host
    /// after `limit`. Secrets belong in `stdin`, never in the script: the script is in argv.
    pub async fn run(
        &self,
        script: &str,
        stdin: &[u8],
        limit: Duration,
    ) -> Result<ExecOutput, SshError> {
        self.run_for("remote script", script, stdin, limit).await
    }

    /// [`Session::run`], saying what it is for at `-v` (purpose, exit status, time) and, at
    /// `-vv`, the script itself. Neither shows `stdin`, where secrets travel (only its size).
    pub async fn run_for(
        &self,
        purpose: &str,
        script: &str,
        stdin: &[u8],
        limit: Duration,
    ) -> Result<ExecOutput, SshError> {
        if crate::progress::tracing(2) {
            // A long program (hostfs' perl) is cut: -vv is for reading what runs, not a dump.
            const SHOWN_LINES: usize = 40;
            let mut shown = format!("{purpose}: as root, {} bytes on stdin:", stdin.len());
            for l in script.lines().take(SHOWN_LINES) {
                shown.push_str("\n    ");
                shown.push_str(l);
            }
            let more = script.lines().count().saturating_sub(SHOWN_LINES);
            if more > 0 {
                shown.push_str(&format!("\n    ... ({more} more lines)"));
            }
            crate::progress::trace(2, &shown);
        }
        let t0 = std::time::Instant::now();
        let out = self.run_script(script, stdin, limit).await;
        let ms = t0.elapsed().as_millis();
        crate::progress::trace(
            1,
            &match &out {
                Ok(o) => format!("{purpose}: exit {} in {ms} ms", o.status),
                Err(e) => format!("{purpose}: failed after {ms} ms: {e}"),
            },
        );
        out
    }

    async fn run_script(
        &self,
        script: &str,
        stdin: &[u8],
        limit: Duration,
    ) -> Result<ExecOutput, SshError> {
        let secs = limit.as_secs().max(1);
        let body = sh_quote(script);
        // `timeout` kills the remote process even when the channel is dropped (FACTS §7).
        let command = match self.privilege {
            Privilege::Direct => format!("timeout -k 5 {secs} sh -c {body}"),
            Privilege::Sudo => format!("sudo -n -- timeout -k 5 {secs} sh -c {body}"),
            Privilege::SudoPassword(_) => {
                let inner = sh_quote(&format!(
                    "echo {SUDO_OK}; exec timeout -k 5 {secs} sh -c {body}"
                ));
                format!("sudo -S -p {} -- sh -c {inner}", sh_quote(SUDO_PROMPT))
            }
        };
        let local = limit + Duration::from_secs(15);
        let out = tokio::time::timeout(local, self.exec_inner(&command, stdin, true))
            .await
            .map_err(|_| SshError::Timeout {
                what: format!("command on {}", self.name),
                secs: local.as_secs(),
            })??;
        if matches!(self.privilege, Privilege::Sudo)
            && out.status == 1
            && String::from_utf8_lossy(&out.stderr).contains("sudo: a password is required")
        {
            return Err(SshError::Sudo {
                host: self.name.clone(),
                reason: format!(
                    "{} needs a password for sudo: set sudo_password_env in the inventory, or allow NOPASSWD",
                    self.user
                ),
            });
        }
        Ok(out)
    }

    async fn exec_inner(
        &self,
        command: &str,
        stdin: &[u8],
        privileged: bool,
    ) -> Result<ExecOutput, SshError> {
        let lost = |during: &str| SshError::ConnectionLost {
            host: self.name.clone(),
            during: format!(" {during}"),
        };
        let channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(|e| match e {
                russh::Error::Disconnect | russh::Error::SendError | russh::Error::HUP => {
                    lost("while opening a channel")
                }
                source => SshError::Protocol {
                    host: self.name.clone(),
                    source,
                },
            })?;
        channel
            .exec(true, command)
            .await
            .map_err(|_| lost("while starting a command"))?;
        let (mut reader, writer) = channel.split();
        let mut out = ExecOutput::default();

        // With sudo -S, wait for the prompt (answer it) or the marker (sudo let us in) first.
        if let (true, Privilege::SudoPassword(pw)) = (privileged, &self.privilege) {
            let mut answered = false;
            loop {
                match reader.wait().await {
                    Some(ChannelMsg::Data { data }) => {
                        out.stdout.extend_from_slice(&data);
                        let marker = format!("{SUDO_OK}\n");
                        if let Some(pos) = find(&out.stdout, marker.as_bytes()) {
                            out.stdout.drain(..pos + marker.len());
                            break;
                        }
                    }
                    Some(ChannelMsg::ExtendedData { data, .. }) => {
                        out.stderr.extend_from_slice(&data);
                        if find(&out.stderr, SUDO_PROMPT.as_bytes()).is_some() {
                            if answered {
                                let _ = writer.close().await;
                                return Err(SshError::Sudo {
                                    host: self.name.clone(),
                                    reason: format!(
                                        "sudo refused the password from sudo_password_env for {}",
                                        self.user
                                    ),
                                });
                            }
                            out.stderr.clear();
                            let line = format!("{}\n", pw.0);
                            writer
                                .data_bytes(line.into_bytes())
                                .await
                                .map_err(|_| lost("during sudo"))?;
                            answered = true;
                        }
                    }
                    Some(ChannelMsg::ExitStatus { exit_status }) => {
                        return Err(SshError::Sudo {
                            host: self.name.clone(),
                            reason: format!(
                                "sudo exited {exit_status}: {}",
                                String::from_utf8_lossy(&out.stderr).trim()
                            ),
                        });
                    }
                    Some(_) => {}
                    None => return Err(lost("during sudo")),
                }
            }
        }

        let write = async {
            if !stdin.is_empty() {
                writer.data(stdin).await?;
            }
            writer.eof().await
        };
        let read = async {
            let mut status = None;
            while let Some(msg) = reader.wait().await {
                match msg {
                    ChannelMsg::Data { data } => out.stdout.extend_from_slice(&data),
                    ChannelMsg::ExtendedData { data, ext: 1 } => {
                        out.stderr.extend_from_slice(&data)
                    }
                    ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
                    ChannelMsg::ExitSignal { signal_name, .. } => {
                        status.get_or_insert(signal_status(&signal_name));
                    }
                    _ => {}
                }
            }
            status
        };
        let (w, status) = tokio::join!(write, read);
        let Some(status) = status else {
            return Err(lost(
                "while a command was running (no exit status received)",
            ));
        };
        if w.is_err() && status != 0 && stdin.is_empty() {
            return Err(lost("while sending input"));
        }
        out.status = status;
        Ok(out)
    }

    /// A TCP stream to `127.0.0.1:port` as seen from the host (SSH direct-tcpip).
    pub async fn tunnel(&self, port: u16) -> Result<ChannelStream<client::Msg>, SshError> {
        self.tunnel_to("127.0.0.1", port).await
    }

    /// A TCP stream to `address:port` as seen from the host.
    pub async fn tunnel_to(
        &self,
        address: &str,
        port: u16,
    ) -> Result<ChannelStream<client::Msg>, SshError> {
        let chan = self
            .handle
            .channel_open_direct_tcpip(address, u32::from(port), "127.0.0.1", 0)
            .await
            .map_err(|source| SshError::Tunnel {
                what: format!(
                    "{}: cannot open a tunnel to {} on the host",
                    self.name,
                    crate::display::host_port(address, port)
                ),
                source,
            })?;
        Ok(chan.into_stream())
    }

    pub async fn close(&self) {
        let _ = self
            .handle
            .disconnect(Disconnect::ByApplication, "", "en")
            .await;
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn signal_status(sig: &russh::Sig) -> u32 {
    use russh::Sig;
    128 + match sig {
        Sig::HUP => 1,
        Sig::INT => 2,
        Sig::QUIT => 3,
        Sig::ILL => 4,
        Sig::ABRT => 6,
        Sig::FPE => 8,
        Sig::KILL => 9,
        Sig::SEGV => 11,
        Sig::PIPE => 13,
        Sig::ALRM => 14,
        Sig::TERM => 15,
        Sig::USR1 => 10,
        _ => 127,
    }
}
