//! Host facts FreeSWITCH derives at startup: local addresses, hostname, local networks.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, UdpSocket};

/// Address of the interface the default route uses: connect a UDP socket (no packet is sent)
/// to a documentation address and read the source address the kernel picked.
pub fn local_ip_v4() -> Ipv4Addr {
    UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .and_then(|s| {
            s.connect((Ipv4Addr::new(192, 0, 2, 1), 9))?;
            s.local_addr()
        })
        .ok()
        .and_then(|a| match a.ip() {
            IpAddr::V4(v4) if !v4.is_unspecified() => Some(v4),
            _ => None,
        })
        .unwrap_or(Ipv4Addr::LOCALHOST)
}

/// Same trick for IPv6; None when the host has no routable IPv6 address.
pub fn local_ip_v6() -> Option<Ipv6Addr> {
    let s = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0)).ok()?;
    s.connect((Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1), 9))
        .ok()?;
    match s.local_addr().ok()?.ip() {
        IpAddr::V6(v6) if !v6.is_unspecified() => Some(v6),
        _ => None,
    }
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// The network (address, prefix) of the interface carrying `ip`, from /proc/net/route.
pub fn local_network(ip: Ipv4Addr) -> (Ipv4Addr, u8) {
    let Ok(text) = std::fs::read_to_string("/proc/net/route") else {
        return (ip, 32);
    };
    let ipn = u32::from(ip);
    let mut best: Option<(u32, u8)> = None;
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        let (Ok(dest), Ok(mask)) = (u32::from_str_radix(f[1], 16), u32::from_str_radix(f[7], 16))
        else {
            continue;
        };
        // /proc/net/route prints the network-order bytes as a native-endian number.
        let dest = u32::from_be_bytes(dest.to_ne_bytes());
        let mask = u32::from_be_bytes(mask.to_ne_bytes());
        if mask == 0 || ipn & mask != dest {
            continue;
        }
        let bits = mask.count_ones() as u8;
        if best.is_none_or(|(_, b)| bits > b) {
            best = Some((dest, bits));
        }
    }
    best.map(|(d, b)| (Ipv4Addr::from(d), b))
        .unwrap_or((ip, 32))
}
