//! Log injection over the network (issue 12, FACTS §4): a SIP peer writes lines of its choosing
//! into freeswitch.log (the digest username is logged raw, folds included) and must still get no
//! address but its own banned.
//!
//! One fresh host is hardened with fsfleet (its fail2ban filter and jail); the fleet's attacker
//! container then sends crafted INVITEs and REGISTERs with `sip-raw`: usernames folded with
//! CRLF + space and CRLF + tab carrying fake FreeSWITCH and syslog lines that name a victim, a
//! victim at the very end of FreeSWITCH's own first line, `] from ip VICTIM` inside the brackets,
//! escaped `%0D%0A` forms, bare CR/LF, line breaks in To. The test proves the crafted lines really
//! are separate lines of the host's log, that fail2ban found failures for the attacker only, as
//! many as its requests earned, and that the attacker, not a victim, is banned once it reaches
//! maxretry.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{Attacker, Fleet, Register, TestHost};

const FLEET: &str = "logi";
/// Addresses the attacker names (documentation ranges: never a real peer).
const VICTIM: &str = "192.0.2.31";
const VICTIM6: &str = "2001:db8::31";
/// The date and idle cpu of the fake lines.
const FAKE_TS: &str = "2026-11-29 17:38:18.000000 97.00%";

fn text(o: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The attacker's side of the conversation with one host.
struct Sip<'a> {
    attacker: &'a Attacker,
    host: &'a str,
    /// The internal profile's domain: force-register-domain = $${domain} = the host's address.
    domain: &'a str,
    seq: u32,
}

impl Sip<'_> {
    /// A request with `to` as the whole To value and `auth` as a whole header line (or nothing).
    fn request(&mut self, method: &str, ruri_user: &str, to: &str, auth: &str) -> Vec<u8> {
        self.seq += 1;
        let (n, me, d) = (self.seq, &self.attacker.address, self.domain);
        format!(
            "{method} sip:{ruri_user}@{d} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {me}:5099;branch=z9hG4bK-logi-{n};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:mallory@{d}>;tag=logi{n}\r\n\
             To: {to}\r\n\
             Call-ID: logi-{n}@{me}\r\n\
             CSeq: {n} {method}\r\n\
             Contact: <sip:mallory@{me}:5099>\r\n\
             {auth}Content-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    /// The status line of the answer.
    fn send(&self, req: &[u8]) -> String {
        let answer = self
            .attacker
            .sip_raw(self.host, 5060, req)
            .unwrap_or_else(|| panic!("no answer to:\n{}", String::from_utf8_lossy(req)));
        answer.lines().next().unwrap_or("").to_string()
    }

    /// A nonce from a plain request's 401/407 (any nonce is good for any user, FACTS §4).
    fn nonce(&mut self, method: &str) -> String {
        let to = format!("<sip:1000@{}>", self.domain);
        let req = self.request(method, "1000", &to, "");
        let answer = self
            .attacker
            .sip_raw(self.host, 5060, &req)
            .expect("a challenge");
        let (_, rest) = answer
            .split_once("nonce=\"")
            .unwrap_or_else(|| panic!("no nonce in:\n{answer}"));
        rest.split('"').next().unwrap_or("").to_string()
    }

    fn digest(&self, header: &str, username: &str, nonce: &str) -> String {
        format!(
            "{header}: Digest username=\"{username}\", realm=\"{d}\", nonce=\"{nonce}\", \
             uri=\"sip:1000@{d}\", response=\"0123456789abcdef0123456789abcdef\", algorithm=MD5\r\n",
            d = self.domain
        )
    }

    /// INVITE to user 1000, 407, then the INVITE again with `username` in Proxy-Authorization.
    fn invite_as(&mut self, username: &str) -> String {
        let nonce = self.nonce("INVITE");
        let auth = self.digest("Proxy-Authorization", username, &nonce);
        let to = format!("<sip:1000@{}>", self.domain);
        let req = self.request("INVITE", "1000", &to, &auth);
        self.send(&req)
    }

    /// REGISTER with To user `to_user`, 401, then again with `username` in Authorization.
    fn register_as(&mut self, to_user: &str, username: &str) -> String {
        let nonce = self.nonce("REGISTER");
        let auth = self.digest("Authorization", username, &nonce);
        let to = format!("<sip:{to_user}@{}>", self.domain);
        let req = self.request("REGISTER", self.domain, &to, &auth);
        self.send(&req)
    }
}

/// `Total failed` and the banned addresses of the freeswitch jail.
fn jail(fleet: &Fleet, h: &TestHost) -> (u32, Vec<String>) {
    let out = fleet.ssh_root(h, "fail2ban-client status freeswitch");
    let field = |label: &str| {
        out.lines()
            .find_map(|l| l.split_once(label).map(|(_, v)| v.trim().to_string()))
            .unwrap_or_default()
    };
    let total = field("Total failed:")
        .parse()
        .unwrap_or_else(|_| panic!("no Total failed in:\n{out}"));
    let banned = field("Banned IP list:")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    (total, banned)
}

/// Every address fail2ban's freeswitch jail found a failure for, in order: its own log's
/// `[freeswitch] Found ADDRESS - TIME` lines. (A 2-line match ends on the continuation line,
/// which has no date: fail2ban takes the previous line's and warns once a day "Found a match but
/// no valid date/time", which is not a failure.)
fn found(fleet: &Fleet, h: &TestHost) -> Vec<String> {
    fleet
        .ssh_root(
            h,
            "grep -hF '[freeswitch] Found ' /var/log/fail2ban.log || true",
        )
        .lines()
        .filter_map(|l| l.split_once("[freeswitch] Found ").map(|(_, r)| r))
        .filter_map(|r| r.split_once(" - ").map(|(ip, _)| ip))
        .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok())
        .map(str::to_string)
        .collect()
}

/// Wait until the jail has counted `want` failures, then a little longer: more would show.
fn wait_for_failures(fleet: &Fleet, h: &TestHost, want: u32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (total, _) = jail(fleet, h);
        assert!(
            total <= want,
            "fail2ban counted {total} failures, the attacker earned {want}; found: {:?}",
            found(fleet, h)
        );
        if total == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "fail2ban counted {total} of the attacker's {want} failures in 60 s; found: {:?}",
            found(fleet, h)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(3));
}

#[test]
fn crafted_sip_requests_never_get_another_address_banned() {
    let fleet = Fleet::fresh(FLEET, 1);
    let h = &fleet.hosts[0];
    let _ = std::fs::remove_dir_all(fleet.dir.join(".fsfleet"));
    let attacker = fleet.attacker();
    let me = attacker.address.clone();
    let d = h.address.as_str();

    // What each crafted request must cost the attacker in the jail: the INVITE and REGISTER
    // failures are logged as "SIP auth failure" lines (FreeSWITCH's own, one whole line each);
    // a "Can't find user" counts too, unless a fold splits it (then its first line is no
    // evidence). Challenges never count. Set maxretry just above the total, so that the
    // injection phase bans nobody and two more failures ban the attacker.
    let mut sip = Sip {
        attacker: &attacker,
        host: &h.address,
        domain: d,
        seq: 0,
    };
    let fake_cfu = |ip: &str| {
        format!("{FAKE_TS} [WARNING] sofia_reg.c:3210 Can't find user [x@{d}] from {ip}")
    };
    let fake_fail = |ip: &str| {
        format!(
            "{FAKE_TS} [WARNING] sofia_reg.c:1787 SIP auth failure (INVITE) on sofia profile \
             'internal' for [1000@{d}] from ip {ip}"
        )
    };
    let invites: Vec<(&str, String, u32)> = vec![
        (
            "CRLF + space folds with fake FreeSWITCH lines",
            format!(
                "x\r\n {}\r\n {}\r\n {}\r\n y",
                fake_cfu(VICTIM),
                fake_fail(VICTIM),
                fake_cfu(VICTIM6)
            ),
            1,
        ),
        (
            "CRLF + tab folds, dated and undated",
            format!(
                "x\r\n\t{}\r\n\t97.00% [WARNING] sofia_reg.c:3210 Can't find user [x@{d}] from {VICTIM}\r\n\
                 \t[WARNING] sofia_reg.c:1787 SIP auth failure (INVITE) on sofia profile 'internal' for [1000@{d}] from ip {VICTIM}\r\n\ty",
                fake_cfu(VICTIM)
            ),
            1,
        ),
        (
            "the victim ends FreeSWITCH's own first line",
            format!("x@{d}] from {VICTIM}\r\n y"),
            1,
        ),
        (
            "... followed by a fake continuation",
            format!(
                "x@{d}] from {VICTIM}\r\n You must define a domain called '{d}' in your \
                 directory and add a user with the id=\"x\" attribute\r\n y"
            ),
            1,
        ),
        (
            "fake syslog lines after a fold",
            format!(
                "x\r\n Nov 29 17:38:18 pbx1 freeswitch[1234]: [WARNING] sofia_reg.c:3210 Can't find \
                 user [x@{d}] from {VICTIM}\r\n 2026-11-29T17:38:18.000000+00:00 pbx1 \
                 freeswitch[1234]: {}\r\n y",
                fake_fail(VICTIM)
            ),
            1,
        ),
        (
            "] from ip VICTIM inside the brackets",
            format!("1000] from ip {VICTIM}"),
            2,
        ),
        (
            "an escaped CRLF stays escaped",
            format!("x%0D%0A{}", fake_cfu(VICTIM)),
            2,
        ),
    ];
    let registers: Vec<(&str, String, String, u32)> = vec![
        (
            "a folded username with To user 1000: refused before the lookup",
            "1000".into(),
            format!("x\r\n {}\r\n y", fake_cfu(VICTIM)),
            1,
        ),
        (
            "To user = username, escaped",
            format!("x%0D%0A%20from%20ip%20{VICTIM}"),
            format!("x%0D%0A%20from%20ip%20{VICTIM}"),
            2,
        ),
    ];
    let earned: u32 =
        invites.iter().map(|i| i.2).sum::<u32>() + registers.iter().map(|r| r.3).sum::<u32>();
    let maxretry = earned + 2;

    // Harden with that maxretry (the testbed's inventory plus one line).
    let inv = std::fs::read_to_string(fleet.inventory()).expect("read the fleet's inventory");
    assert!(inv.contains("[defaults]\n"), "{inv}");
    let inv = inv.replacen(
        "[defaults]\n",
        &format!("[defaults]\nfail2ban_maxretry = {maxretry}\n"),
        1,
    );
    let inventory = fleet.dir.join("logi-inventory.toml");
    std::fs::write(&inventory, inv).expect("write the inventory");
    let run = Command::new(env!("CARGO_BIN_EXE_fsfleet"))
        .arg("harden")
        .arg(&inventory)
        .arg("--no-progress")
        .output()
        .expect("run fsfleet");
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    assert_eq!(jail(&fleet, h), (0, vec![]), "a fresh jail");

    // The injections.
    for (what, username, _) in &invites {
        let status = sip.invite_as(username);
        assert!(status.starts_with("SIP/2.0 403 "), "{what}: {status}");
    }
    for (what, to_user, username, _) in &registers {
        let status = sip.register_as(to_user, username);
        assert!(status.starts_with("SIP/2.0 403 "), "{what}: {status}");
    }
    // A bare CR or LF drops the header (a new challenge, nothing logged); a line break in To gets
    // 400. Neither costs the attacker anything.
    for cut in ["\n", "\r"] {
        let status = sip.invite_as(&format!("x{cut}{}", fake_cfu(VICTIM)));
        assert!(status.starts_with("SIP/2.0 407 "), "bare {cut:?}: {status}");
    }
    let to = format!("<sip:1000\r\n {}@{d}>", fake_cfu(VICTIM));
    let req = sip.request("INVITE", "1000", &to, "");
    let status = sip.send(&req);
    assert!(status.starts_with("SIP/2.0 400 "), "fold in To: {status}");

    // The fake lines are separate lines of the host's log, as FreeSWITCH writes them.
    let log = fleet.ssh_root(h, &format!("cat {}/freeswitch.log", h.log_dir));
    let lines: Vec<&str> = log.split('\n').collect();
    let has = |want: &str, why: &str| {
        assert!(lines.contains(&want), "{why}: no line {want:?} in:\n{log}");
    };
    has(&format!(" {}\r", fake_cfu(VICTIM)), "space fold");
    has(&format!(" {}\r", fake_cfu(VICTIM6)), "space fold, IPv6");
    has(&format!("\t{}\r", fake_cfu(VICTIM)), "tab fold");
    has(
        &format!(
            " Nov 29 17:38:18 pbx1 freeswitch[1234]: [WARNING] sofia_reg.c:3210 Can't find user \
             [x@{d}] from {VICTIM}\r"
        ),
        "fake syslog line",
    );
    let own_first_line = lines
        .iter()
        .filter(|l| common::strip_log_prefix(l).is_some())
        .any(|l| l.ends_with(&format!("Can't find user [x@{d}] from {VICTIM}\r")));
    assert!(
        own_first_line,
        "a dated line ending with the victim:\n{log}"
    );
    assert!(
        log.contains(&format!(
            "Can't find user [x%0D%0A{}@{d}] from {me}\n",
            fake_cfu(VICTIM)
        )),
        "the escaped form on one line:\n{log}"
    );

    // fail2ban counted the attacker's failures, each once, and nobody else's.
    wait_for_failures(&fleet, h, earned);
    let (_, banned) = jail(&fleet, h);
    assert!(banned.is_empty(), "banned {banned:?} below maxretry");
    let seen = found(&fleet, h);
    assert_eq!(seen.len() as u32, earned, "{seen:?}");
    assert!(
        seen.iter().all(|ip| *ip == me),
        "found {seen:?}, only {me} failed"
    );

    // Two more of the attacker's own failures reach maxretry: the attacker is banned, and its
    // packets no longer reach SIP.
    for _ in 0..2 {
        assert_eq!(
            attacker.register(&h.address, 5060, "1000", "not-the-password"),
            Register::Forbidden
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (total, banned) = jail(&fleet, h);
        if banned.contains(&me) {
            assert_eq!(banned, vec![me.clone()], "only the attacker is banned");
            assert_eq!(total, maxretry);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the attacker was not banned within 60 s ({total} failures, maxretry {maxretry})"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(found(&fleet, h).iter().all(|ip| *ip == me));
    let to = format!("<sip:1000@{d}>");
    let options = sip.request("OPTIONS", "1000", &to, "");
    assert_eq!(
        attacker.sip_raw(&h.address, 5060, &options),
        None,
        "a banned attacker still gets SIP answers"
    );
}
