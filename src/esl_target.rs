//! Where fsfleet may send an Event Socket password: only to the running FreeSWITCH's own
//! listener, on the host's loopback or one of its own interface addresses.
//!
//! Any local user can listen on a free address and port (127.0.0.2:8021, a LAN address when
//! FreeSWITCH listens on 127.0.0.1 only) and, as the `freeswitch` user or anyone who can edit
//! `event_socket.conf.xml`, point `listen-ip` there; the Event Socket has no server
//! authentication, so `auth <password>` would go to whoever answers. Before every connection
//! that sends a password, the facts (`ss -Hltnp` with the owners from `/proc/net/tcp{,6}`, the FreeSWITCH process, the host's addresses)
//! must prove that every socket the kernel could hand the connection to belongs to FreeSWITCH
//! (its uid, or ss naming its pid); the address to connect to is chosen from FreeSWITCH's own
//! listener, never from the config's `listen-ip`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::errors::chain;
use crate::facts::{self, FsProcess, FsProcessError, HostNet, Listener, Script, Sections};
use crate::model::listeners;
use crate::ssh::Session;

/// The proven place to reach the Event Socket at, from the host itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// An IP literal without brackets (`127.0.0.1`, `::1`, `192.0.2.5`).
    pub address: String,
    pub port: u16,
    /// One line for reports: what was proven.
    pub evidence: String,
}

/// Why no password may be sent. Each message names the address, port, owner and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The running FreeSWITCH could not be identified (not running, or ambiguous).
    #[error("{0}")]
    NoProcess(String),
    /// FreeSWITCH runs, and nothing at all listens on the port.
    #[error("{0}")]
    NoListener(String),
    /// A listener of another user (or of unknown owner) is where the password would go, or
    /// FreeSWITCH's own listener cannot be reached without passing one.
    #[error("{0}")]
    Foreign(String),
    /// The listeners could not be read.
    #[error("{0}")]
    Unreadable(String),
}

impl Refusal {
    /// FreeSWITCH is simply not there to talk to (down, or its Event Socket down): what
    /// `--offline-ok` covers, and what a reconnect after `reload mod_event_socket` waits out.
    pub fn is_absence(&self) -> bool {
        matches!(self, Refusal::NoProcess(_) | Refusal::NoListener(_))
    }
}

/// What to do, for the messages.
const FIX: &str = "make sure listen-ip in autoload_configs/event_socket.conf.xml is 127.0.0.1, \
                   stop that listener and find out why that user runs it, then restart FreeSWITCH \
                   (systemctl restart freeswitch) and re-run. fsfleet sent no password to it";

/// Does a listener on `addr` (as ss prints it) receive TCP connections made to `target`?
/// Conservative: `[::]` is taken to receive IPv4 too (only ss's text says it is v6-only), and an
/// address that does not parse receives everything.
fn covers(addr: &str, target: IpAddr) -> bool {
    match addr {
        "*" | "[::]" => true,
        "0.0.0.0" => target.is_ipv4(),
        a => match a
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            Ok(ip) => ip.to_canonical() == target,
            Err(_) => true,
        },
    }
}

/// Where a client on the host reaches a listener bound to `addr`: the loopback addresses a
/// wildcard really covers (`*` is dual-stack, `0.0.0.0` IPv4 only, `[::]` may be v6-only), a
/// loopback address itself, or an address of one of the host's own interfaces (a socket bound
/// to an address the host no longer has, e.g. a floating IP, would send the connection onto the
/// network). Empty: not reachable from the host itself.
fn reach(addr: &str, local: &[IpAddr]) -> Vec<IpAddr> {
    let v4 = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
    match addr {
        "*" => vec![v4, v6],
        "0.0.0.0" => vec![v4],
        "[::]" => vec![v6],
        a => {
            let Ok(ip) = a
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .map(|ip| ip.to_canonical())
            else {
                return vec![];
            };
            let link_local = matches!(ip, IpAddr::V6(v) if v.is_unicast_link_local());
            if ip.is_loopback() || (local.contains(&ip) && !link_local && !ip.is_unspecified()) {
                vec![ip]
            } else {
                vec![]
            }
        }
    }
}

/// Whose a listener is, for the messages: `uid 1001 (mallory), process "nc" pid 4242`.
fn owner(l: &Listener, net: &HostNet) -> String {
    let mut s = match l.uid {
        Some(u) => net.owner(u),
        None => "an owner ss did not show".to_string(),
    };
    for p in &l.processes {
        s.push_str(&format!(", process {:?} pid {}", p.name, p.pid));
    }
    s
}

fn is_freeswitch(l: &Listener, fs: &FsProcess) -> bool {
    l.uid == Some(fs.uid)
        || (!l.processes.is_empty() && l.processes.iter().all(|p| p.pid == fs.pid))
}

/// The decision, from parsed facts. `config_ip` and `port` are the config's `listen-ip` and
/// `listen-port` (host text: used to find the port and to name a hostile `listen-ip`, never as
/// the address to connect to).
pub fn decide(
    fs: Result<&FsProcess, &FsProcessError>,
    listeners: &[Listener],
    net: &HostNet,
    config_ip: &str,
    port: u16,
) -> Result<Target, Refusal> {
    let on_port = listeners::on_port(listeners, port);
    let list = |ls: &[&Listener]| {
        ls.iter()
            .map(|l| format!("{} by {}", l.socket(), owner(l, net)))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let fs = match fs {
        Ok(fs) => fs,
        Err(why) if on_port.is_empty() => {
            return Err(Refusal::NoProcess(format!(
                "FreeSWITCH is not running ({why}); nothing listens on TCP port {port}"
            )));
        }
        Err(why) => {
            return Err(Refusal::NoProcess(format!(
                "cannot prove that the listener on TCP port {port} is FreeSWITCH's ({why}): {} \
                 listens there; fsfleet sent no password to it. Start FreeSWITCH (systemctl \
                 start freeswitch) and re-run",
                list(&on_port)
            )));
        }
    };
    let who = format!("FreeSWITCH ({fs})");
    let shown_ip = config_ip.escape_debug().to_string();
    // A `listen-ip` that names an address where another user listens: the config was pointed
    // at a trap (FreeSWITCH itself cannot bind there).
    let ip = config_ip
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .ok()
        .map(|ip| ip.to_canonical());
    if let Some(ip) = ip.filter(|ip| !ip.is_unspecified()) {
        let foreign: Vec<&Listener> = on_port
            .iter()
            .copied()
            .filter(|l| covers(&l.address, ip) && !is_freeswitch(l, fs))
            .collect();
        if !foreign.is_empty() {
            return Err(Refusal::Foreign(format!(
                "listen-ip {shown_ip} in autoload_configs/event_socket.conf.xml points the Event \
                 Socket at {ip}:{port}, where {}, not {who}, listens. To fix: {FIX}",
                foreign
                    .iter()
                    .map(|l| owner(l, net))
                    .collect::<Vec<_>>()
                    .join("; ")
            )));
        }
    }
    let own: Vec<&Listener> = on_port
        .iter()
        .copied()
        .filter(|l| is_freeswitch(l, fs))
        .collect();
    if own.is_empty() {
        if on_port.is_empty() {
            return Err(Refusal::NoListener(format!(
                "{who} has no Event Socket listener on TCP port {port} (listen-ip {shown_ip}); \
                 check autoload_configs/event_socket.conf.xml and restart FreeSWITCH"
            )));
        }
        return Err(Refusal::Foreign(format!(
            "{who} does not listen on TCP port {port}; {} does. fsfleet sent no password to it. \
             To fix: {FIX}",
            list(&on_port)
        )));
    }
    let mut candidates: Vec<IpAddr> = own
        .iter()
        .flat_map(|l| reach(&l.address, &net.addrs))
        .collect();
    let rank = |ip: &IpAddr| match ip {
        IpAddr::V4(v) if *v == Ipv4Addr::LOCALHOST => 0,
        IpAddr::V6(v) if *v == Ipv6Addr::LOCALHOST => 1,
        ip if ip.is_loopback() => 2,
        _ => 3,
    };
    candidates.sort_by_key(|ip| (rank(ip), *ip));
    candidates.dedup();
    if candidates.is_empty() {
        return Err(Refusal::Foreign(format!(
            "{who} listens on {} only, which is not this host's loopback nor an address of its \
             interfaces: a connection there would leave the host. Set listen-ip to 127.0.0.1 in \
             autoload_configs/event_socket.conf.xml and restart FreeSWITCH",
            own.iter()
                .map(|l| l.socket())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let mut shadowed = Vec::new();
    for ip in &candidates {
        let others: Vec<&Listener> = on_port
            .iter()
            .copied()
            .filter(|l| covers(&l.address, *ip) && !is_freeswitch(l, fs))
            .collect();
        if others.is_empty() {
            let at = own
                .iter()
                .filter(|l| covers(&l.address, *ip))
                .map(|l| l.socket())
                .collect::<Vec<_>>()
                .join(", ");
            return Ok(Target {
                address: ip.to_string(),
                port,
                evidence: format!(
                    "the Event Socket at {} is {who}'s own ({at}, ss on the host)",
                    sock(*ip, port)
                ),
            });
        }
        shadowed.push(format!("{} (also {})", sock(*ip, port), list(&others)));
    }
    Err(Refusal::Foreign(format!(
        "every address where {who} listens on TCP port {port} is shared with another user's \
         listener: {}. fsfleet sent no password. To fix: {FIX}",
        shadowed.join("; ")
    )))
}

fn sock(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V6(v) => format!("[{v}]:{port}"),
        IpAddr::V4(v) => format!("{v}:{port}"),
    }
}

/// The decision from a facts run's sections ([`facts::LISTEN`], [`facts::FS_PROCESS`],
/// [`facts::NET`]).
pub fn from_sections(s: &Sections, config_ip: &str, port: u16) -> Result<Target, Refusal> {
    // The same reading as audit's FS-ESL-02 (the host model's listeners).
    let listeners = listeners::from_sections(s).map_err(|e| {
        Refusal::Unreadable(format!(
            "{}: fsfleet cannot prove whose Event Socket it would talk to; install iproute2 and re-run",
            chain(&e)
        ))
    })?;
    // FsProcessFact's parser always answers; a missing section reads as "not running".
    let fs = s
        .get::<facts::FsProcessFact>()
        .unwrap_or_else(|e| Err(FsProcessError::Unreadable(e.to_string())));
    let net = s.get::<facts::NetFact>().unwrap_or_default();
    decide(fs.as_ref(), &listeners, &net, config_ip, port)
}

/// Prove again, now (one remote command: ss, the FreeSWITCH process, the addresses): for each
/// connection made after the facts were read, above all the reconnect after `reload
/// mod_event_socket`, when the listener is gone for 0.1-0.2 s and any local user could take it.
pub async fn prove(session: &Session, config_ip: &str, port: u16) -> Result<Target, Refusal> {
    let mut script = Script::new();
    script
        .add(facts::LISTEN, facts::LISTEN_SNIPPET)
        .add(facts::FS_PROCESS, &facts::fs_process_snippet())
        .add(facts::NET, facts::NET_SNIPPET);
    let sections = facts::gather(session, &script).await.map_err(|e| {
        Refusal::Unreadable(format!(
            "reading the host's listeners failed ({}): fsfleet cannot prove whose Event Socket it would talk to",
            chain(&e)
        ))
    })?;
    from_sections(&sections, config_ip, port)
}

/// What a plain TCP connection from the controller to the Event Socket's port sees.
#[derive(Debug)]
pub enum Outside {
    /// No answer within the connect limit: filtered.
    Filtered,
    /// The connection failed (refused, unroutable).
    NoConnection(std::io::Error),
    /// Connected, and no `auth/request` greeting within the read limit: what was seen instead.
    NoGreeting(String),
    /// `Content-Type: auth/request`: the Event Socket answers whoever reaches the port.
    Greeting,
}

/// Connect from the controller to address:port (an IP literal with or without brackets, or a
/// name) and read what the port says, without sending anything: audit's FS-ESL-03 and harden's
/// verify both ask this.
pub async fn probe_outside(
    address: &str,
    port: u16,
    connect_limit: std::time::Duration,
    read_limit: std::time::Duration,
) -> Outside {
    use tokio::io::AsyncReadExt;
    // An IPv6 literal needs no brackets for a (host, port) pair.
    let target = address.trim_start_matches('[').trim_end_matches(']');
    let connect = match target.parse::<IpAddr>() {
        Ok(ip) => {
            tokio::time::timeout(connect_limit, tokio::net::TcpStream::connect((ip, port))).await
        }
        Err(_) => {
            tokio::time::timeout(
                connect_limit,
                tokio::net::TcpStream::connect((target, port)),
            )
            .await
        }
    };
    let mut stream = match connect {
        Err(_) => return Outside::Filtered,
        Ok(Err(e)) => return Outside::NoConnection(e),
        Ok(Ok(s)) => s,
    };
    let mut buf = vec![0u8; 512];
    let mut got = 0;
    let deadline = tokio::time::Instant::now() + read_limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf[got..])).await {
            Err(_) | Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                got += n;
                let text = String::from_utf8_lossy(&buf[..got]);
                if text.contains("Content-Type: auth/request") {
                    return Outside::Greeting;
                }
                if text.contains("\n\n") || got == buf.len() {
                    break;
                }
            }
        }
    }
    let text = String::from_utf8_lossy(&buf[..got]);
    Outside::NoGreeting(if got == 0 {
        "the connection was accepted but nothing was sent (closed or silent)".into()
    } else if text.contains("text/rude-rejection") {
        "the connection was accepted and rejected by the Event Socket ACL (text/rude-rejection)"
            .into()
    } else {
        format!(
            "the connection was accepted but answered {:?}",
            text.lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(60)
                .collect::<String>()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs() -> FsProcess {
        FsProcess {
            pid: 57,
            uid: 999,
            gid: 997,
            user: "freeswitch".into(),
            group: "freeswitch".into(),
        }
    }

    /// Listeners from `(address, port, uid, pids)`.
    fn ls(items: &[(&str, u16, Option<u32>, &[u32])]) -> Vec<Listener> {
        items
            .iter()
            .map(|(a, p, u, pids)| Listener {
                address: a.to_string(),
                port: *p,
                uid: *u,
                processes: pids
                    .iter()
                    .map(|pid| facts::SsProcess {
                        name: "x".into(),
                        pid: *pid,
                    })
                    .collect(),
            })
            .collect()
    }

    fn net() -> HostNet {
        HostNet::parse(
            "addr 127.0.0.1\naddr ::1\naddr 172.20.0.2\naddr fe80::1\nname 999 freeswitch\nname 1001 mallory\n",
        )
    }

    fn at(l: &[Listener], config_ip: &str) -> Result<String, Refusal> {
        decide(Ok(&fs()), l, &net(), config_ip, 8021).map(|t| t.address)
    }

    fn foreign(r: Result<String, Refusal>) -> String {
        match r {
            Err(Refusal::Foreign(m)) => m,
            other => panic!("expected a refusal for a foreign listener, got {other:?}"),
        }
    }

    #[test]
    fn wildcards_are_reached_on_the_loopback_they_really_cover() {
        // `*` (dual-stack) and 0.0.0.0: IPv4 loopback; `[::]` may be v6-only: ::1.
        assert_eq!(
            at(&ls(&[("*", 8021, Some(999), &[])]), "::").unwrap(),
            "127.0.0.1"
        );
        assert_eq!(
            at(&ls(&[("0.0.0.0", 8021, Some(999), &[])]), "0.0.0.0").unwrap(),
            "127.0.0.1"
        );
        assert_eq!(
            at(&ls(&[("[::]", 8021, Some(999), &[])]), "::").unwrap(),
            "::1"
        );
        assert_eq!(
            at(&ls(&[("[::1]", 8021, Some(999), &[])]), "::1").unwrap(),
            "::1"
        );
        // FreeSWITCH v6-only on [::], another user on 0.0.0.0: only ::1 is FreeSWITCH's alone.
        let l = ls(&[
            ("[::]", 8021, Some(999), &[]),
            ("0.0.0.0", 8021, Some(1001), &[]),
        ]);
        assert_eq!(at(&l, "::").unwrap(), "::1");
        // The other port's listeners do not matter.
        let l = ls(&[
            ("127.0.0.1", 8021, Some(999), &[]),
            ("127.0.0.2", 8022, Some(1001), &[]),
        ]);
        assert_eq!(at(&l, "127.0.0.1").unwrap(), "127.0.0.1");
    }

    #[test]
    fn the_address_comes_from_freeswitchs_listener_not_from_listen_ip() {
        // listen-ip edited without a reload, nobody at the new address: FreeSWITCH's own.
        let l = ls(&[("127.0.0.1", 8021, Some(999), &[])]);
        assert_eq!(at(&l, "127.0.0.2").unwrap(), "127.0.0.1");
        assert_eq!(at(&l, "192.0.2.99").unwrap(), "127.0.0.1");
        // A LAN address of the host's own, FreeSWITCH bound there only.
        let l = ls(&[("172.20.0.2", 8021, Some(999), &[])]);
        assert_eq!(at(&l, "172.20.0.2").unwrap(), "172.20.0.2");
        // ... but not an address the host does not have (a floating IP that moved away).
        let l = ls(&[("192.0.2.7", 8021, Some(999), &[])]);
        let m = foreign(at(&l, "192.0.2.7"));
        assert!(
            m.contains("192.0.2.7:8021") && m.contains("leave the host"),
            "{m}"
        );
        // Nor a link-local one (it needs a scope).
        assert!(at(&ls(&[("[fe80::1]", 8021, Some(999), &[])]), "fe80::1").is_err());
    }

    #[test]
    fn listen_ip_pointing_at_another_users_listener_is_refused_with_its_owner() {
        let l = ls(&[
            ("127.0.0.1", 8021, Some(999), &[]),
            ("127.0.0.2", 8021, Some(1001), &[4242]),
        ]);
        let m = foreign(at(&l, "127.0.0.2"));
        for want in [
            "127.0.0.2:8021",
            "uid 1001 (mallory)",
            "pid 4242",
            "FreeSWITCH (pid 57 as freeswitch, uid 999)",
            "listen-ip",
            "127.0.0.1",
            "restart FreeSWITCH",
            "sent no password",
        ] {
            assert!(m.contains(want), "{want}: {m}");
        }
        let l = ls(&[
            ("127.0.0.1", 8021, Some(999), &[]),
            ("172.20.0.2", 8021, Some(1001), &[]),
        ]);
        let m = foreign(at(&l, "172.20.0.2"));
        assert!(
            m.contains("172.20.0.2:8021") && m.contains("mallory"),
            "{m}"
        );
        // Behind a wildcard of another user, or of an owner ss did not show.
        let l = ls(&[
            ("127.0.0.1", 8021, Some(999), &[]),
            ("0.0.0.0", 8021, Some(1001), &[]),
        ]);
        assert!(foreign(at(&l, "192.0.2.1")).contains("mallory"));
        let l = ls(&[
            ("127.0.0.1", 8021, Some(999), &[]),
            ("127.0.0.2", 8021, None, &[]),
        ]);
        assert!(foreign(at(&l, "127.0.0.2")).contains("an owner ss did not show"));
    }

    #[test]
    fn another_users_listener_in_the_way_of_freeswitchs_own_is_refused() {
        // Only another user on the port.
        let m = foreign(at(&ls(&[("127.0.0.1", 8021, Some(1001), &[])]), "::"));
        assert!(
            m.contains("does not listen on TCP port 8021") && m.contains("mallory"),
            "{m}"
        );
        // FreeSWITCH on 0.0.0.0, another user on 127.0.0.1 (more specific: it would get the
        // connection): no address is FreeSWITCH's alone.
        let l = ls(&[
            ("0.0.0.0", 8021, Some(999), &[]),
            ("127.0.0.1", 8021, Some(1001), &[]),
        ]);
        let m = foreign(at(&l, "0.0.0.0"));
        assert!(m.contains("127.0.0.1:8021") && m.contains("mallory"), "{m}");
        // ... and via a v4-mapped IPv6 bind.
        let l = ls(&[
            ("0.0.0.0", 8021, Some(999), &[]),
            ("[::ffff:127.0.0.1]", 8021, Some(1001), &[]),
        ]);
        assert!(at(&l, "0.0.0.0").is_err());
        // Dual-stack FreeSWITCH with a squatter on 127.0.0.1: ::1 is still FreeSWITCH's alone.
        let l = ls(&[
            ("*", 8021, Some(999), &[]),
            ("127.0.0.1", 8021, Some(1001), &[]),
        ]);
        assert_eq!(at(&l, "::").unwrap(), "::1");
    }

    #[test]
    fn ownership_by_uid_or_by_pid_and_root() {
        // A socket FreeSWITCH made as root before dropping privileges: ss names its pid.
        assert_eq!(
            at(&ls(&[("127.0.0.1", 8021, Some(0), &[57])]), "127.0.0.1").unwrap(),
            "127.0.0.1"
        );
        // Shared with another process: not FreeSWITCH's alone.
        assert!(
            at(
                &ls(&[("127.0.0.1", 8021, Some(0), &[57, 4242])]),
                "127.0.0.1"
            )
            .is_err()
        );
        // Root's socket, FreeSWITCH not root, no process shown: not FreeSWITCH's.
        assert!(at(&ls(&[("127.0.0.1", 8021, Some(0), &[])]), "127.0.0.1").is_err());
        // FreeSWITCH running as root.
        let root = FsProcess {
            uid: 0,
            gid: 0,
            user: "root".into(),
            group: "root".into(),
            ..fs()
        };
        let l = ls(&[("127.0.0.1", 8021, Some(0), &[])]);
        assert_eq!(
            decide(Ok(&root), &l, &net(), "127.0.0.1", 8021)
                .unwrap()
                .address,
            "127.0.0.1"
        );
    }

    #[test]
    fn no_freeswitch_or_no_listener_is_absence_and_says_so() {
        let why = || Err(&FsProcessError::NotRunningUnit);
        let r = decide(why(), &[], &net(), "127.0.0.1", 8021).unwrap_err();
        assert!(
            r.is_absence() && r.to_string().contains("not running"),
            "{r}"
        );
        // Not running, and someone listens on the port: no password, and the owner is named.
        let l = ls(&[("127.0.0.1", 8021, Some(1001), &[])]);
        let r = decide(why(), &l, &net(), "127.0.0.1", 8021).unwrap_err();
        assert!(
            r.to_string().contains("mallory") && r.to_string().contains("no password"),
            "{r}"
        );
        let r = decide(Ok(&fs()), &[], &net(), "127.0.0.1", 8021).unwrap_err();
        assert!(matches!(r, Refusal::NoListener(_)) && r.is_absence(), "{r}");
        assert!(!Refusal::Foreign(String::new()).is_absence());
    }

    #[test]
    fn from_sections_needs_ss_and_reads_every_fact() {
        let sections = |listen: &str, status: i32| {
            Sections::from_pairs(&[
                (facts::LISTEN, listen, status),
                (
                    facts::FS_PROCESS,
                    "via systemd\nproc 57 999 997\nuser 999 freeswitch\n",
                    0,
                ),
                (facts::NET, "addr 127.0.0.1\nname 1001 mallory\n", 0),
            ])
        };
        let ok = "LISTEN 0 128 *:8021 *:* uid:999 ino:1 sk:1 v6only:0 <->\n";
        let t = from_sections(&sections(ok, 0), "::", 8021).unwrap();
        assert_eq!((t.address.as_str(), t.port), ("127.0.0.1", 8021));
        assert!(
            t.evidence.contains("*:8021") && t.evidence.contains("freeswitch"),
            "{}",
            t.evidence
        );
        assert!(matches!(
            from_sections(&sections(ok, 1), "::", 8021),
            Err(Refusal::Unreadable(_))
        ));
        assert!(matches!(
            from_sections(&sections("LISTEN 0 5 garbage 0.0.0.0:*\n", 0), "::", 8021),
            Err(Refusal::Unreadable(_))
        ));
        let trap = "LISTEN 0 5 127.0.0.1:8021 0.0.0.0:* uid:999 ino:1 sk:1 <->\n\
                    LISTEN 0 5 127.0.0.2:8021 0.0.0.0:* uid:1001 ino:2 sk:2 <->\n";
        let m = from_sections(&sections(trap, 0), "127.0.0.2", 8021)
            .unwrap_err()
            .to_string();
        assert!(m.contains("uid 1001 (mallory)"), "{m}");
        // A config value with control characters is shown escaped.
        let m = from_sections(&sections(trap, 0), "127.0.0.2\u{1b}[2J", 8021);
        assert!(
            m.is_ok(),
            "not an IP: the choice is FreeSWITCH's listener alone"
        );
        let m = from_sections(&sections("", 0), "\u{1b}[2J", 8021)
            .unwrap_err()
            .to_string();
        assert!(!m.contains('\u{1b}') && m.contains("\\u{1b}"), "{m}");
    }
}
