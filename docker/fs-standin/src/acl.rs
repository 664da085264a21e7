//! FreeSWITCH network lists: the built-in `*.auto` lists and those of acl.conf.xml.
//! The most specific matching node decides; no match means the list's default.

use crate::config::Directory;
use crate::xml::{Element, Vars};
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.trim().parse().map_err(|_| format!("bad address {a:?}"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("bad prefix {p:?}"))?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(self.prefix))
                };
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from(self.prefix))
                };
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct AclList {
    pub name: String,
    pub default_allow: bool,
    pub nodes: Vec<(bool, Cidr)>,
}

impl AclList {
    fn new(name: &str, default_allow: bool) -> Self {
        AclList {
            name: name.to_string(),
            default_allow,
            nodes: Vec::new(),
        }
    }

    fn allow(mut self, cidrs: &[&str]) -> Self {
        self.nodes.extend(
            cidrs
                .iter()
                .filter_map(|c| c.parse().ok())
                .map(|c| (true, c)),
        );
        self
    }

    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nodes
            .iter()
            .filter(|(_, c)| c.contains(ip))
            .max_by_key(|(_, c)| c.prefix)
            .map(|(allow, _)| *allow)
            .unwrap_or(self.default_allow)
    }
}

/// An IPv4 peer seen through a dual-stack socket is matched as IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

const RFC1918: [&str; 3] = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"];

/// Built-in lists first, then acl.conf.xml's (which may not redefine a built-in).
pub fn build_lists(acl_doc: Option<&Element>, vars: &Vars, dir: &Directory) -> Vec<AclList> {
    let ip4: Ipv4Addr = vars
        .get("local_ip_v4")
        .and_then(|v| v.parse().ok())
        .unwrap_or(Ipv4Addr::LOCALHOST);
    let (net, bits) = crate::netinfo::local_network(ip4);
    let localnet = Cidr {
        addr: IpAddr::V4(net),
        prefix: bits,
    };
    let mut lists = vec![
        AclList::new("loopback.auto", false).allow(&["127.0.0.0/8", "::1/128"]),
        AclList::new("rfc1918.auto", false).allow(&RFC1918),
        AclList::new("any_v4.auto", false).allow(&["0.0.0.0/0"]),
        AclList::new("any_v6.auto", false).allow(&["::/0"]),
    ];
    let mut local = AclList::new("localnet.auto", false);
    local.nodes.push((true, localnet));
    lists.push(local);
    let mut nat = AclList::new("nat.auto", false).allow(&RFC1918);
    nat.nodes.push((false, localnet));
    lists.push(nat);

    let Some(doc) = acl_doc else { return lists };
    for l in doc.find_all("list") {
        let Some(name) = l.attr("name") else { continue };
        if lists.iter().any(|x| x.name.eq_ignore_ascii_case(name)) {
            continue;
        }
        let default_allow = l.attr("default").is_some_and(|d| d == "allow");
        let mut list = AclList::new(name, default_allow);
        for n in l.children.iter().filter(|c| c.name == "node") {
            let allow = n.attr("type") == Some("allow");
            if let Some(c) = n.attr("cidr") {
                list.nodes.extend(
                    c.split(',')
                        .filter_map(|c| c.trim().parse().ok())
                        .map(|c| (allow, c)),
                );
            } else if let Some(domain) = n.attr("domain") {
                // domain= adds the cidr= of every user of that directory domain.
                if let Some(users) = dir.domains.get(domain) {
                    for u in users.values() {
                        if let Some(c) = u.cidr.as_deref().and_then(|c| c.parse().ok()) {
                            list.nodes.push((allow, c));
                        }
                    }
                }
            }
        }
        lists.push(list);
    }
    lists
}

/// Check `ip` against named lists: Err(name) of the first list that rejects it (unknown = reject).
pub fn check<'a>(lists: &[AclList], names: &'a [String], ip: IpAddr) -> Result<(), &'a str> {
    for name in names {
        let ok = lists
            .iter()
            .find(|l| l.name.eq_ignore_ascii_case(name))
            .is_some_and(|l| l.permits(ip));
        if !ok {
            return Err(name);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lists() -> Vec<AclList> {
        let doc = crate::xml::parse(
            r#"<network-lists><list name="lan" default="allow">
              <node type="deny" cidr="192.168.42.0/24"/>
              <node type="allow" cidr="192.168.42.42/32"/></list></network-lists>"#,
            std::path::Path::new("acl.conf.xml"),
        )
        .unwrap();
        build_lists(Some(&doc), &Vars::new(), &Directory::default())
    }

    fn ok(names: &[&str], ip: &str) -> bool {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        check(&lists(), &names, ip.parse().unwrap()).is_ok()
    }

    #[test]
    fn loopback_auto_takes_mapped_and_native_loopback_only() {
        assert!(ok(&["loopback.auto"], "127.0.0.1"));
        assert!(ok(&["loopback.auto"], "::ffff:127.0.0.1"));
        assert!(ok(&["loopback.auto"], "::1"));
        assert!(!ok(&["loopback.auto"], "::ffff:192.0.2.2"));
        assert!(!ok(&["loopback.auto"], "10.0.0.1"));
    }

    #[test]
    fn builtins_and_custom_lists() {
        assert!(ok(&["rfc1918.auto"], "172.20.1.1"));
        assert!(!ok(&["rfc1918.auto"], "172.32.1.1"));
        assert!(ok(&["any_v4.auto"], "203.0.113.9"));
        assert!(!ok(&["any_v4.auto"], "2001:db8::1"));
        assert!(ok(&["any_v6.auto"], "2001:db8::1"));
        assert!(!ok(&["lan"], "192.168.42.7"));
        assert!(ok(&["lan"], "192.168.42.42"), "most specific node wins");
        assert!(
            ok(&["LAN"], "8.8.4.4"),
            "default allow, names are case-insensitive"
        );
        assert!(!ok(&["no-such-list"], "127.0.0.1"), "unknown list rejects");
        assert!(
            !ok(&["lan", "loopback.auto"], "8.8.4.4"),
            "every list must allow"
        );
    }

    #[test]
    fn cidr_parsing() {
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nonsense".parse::<Cidr>().is_err());
        assert_eq!("::1".parse::<Cidr>().unwrap().prefix, 128);
    }
}
