//! Addresses as the host's files write them, made comparable with the
//! kernel programs' (which unmap `::ffff:a.b.c.d` and carry no zone).
//!
//! Mount options and sysfs can say `::ffff:10.0.0.1` for an IPv4 server
//! reached over an IPv6 socket, and `fe80::1%eth0` (mountinfo `addr=`) or
//! `fe80::1%2` (sysfs `dstaddr`, the scope as a number) for a link-local
//! one. A flow's identity in this tool is the bare address: the zone is
//! dropped for comparing, and kept in the text a user or the kernel gave.
use std::net::IpAddr;

/// `addr:port`, IPv6 bracketed.
pub fn endpoint(a: IpAddr, port: u16) -> String {
    match a {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

/// Parses an address from mountinfo, mountstats or sysfs: brackets and a
/// `%zone` suffix are dropped, an IPv4-mapped IPv6 address is unmapped.
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    let s = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')).unwrap_or(s);
    let bare = s.split_once('%').map_or(s, |(a, _zone)| a);
    bare.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

/// The text to show and compare for a server address: an IPv4-mapped
/// address as plain IPv4; anything else (a zone included) as given.
pub fn canonical_text(s: &str) -> String {
    match parse_ip(s) {
        Some(IpAddr::V4(v4)) => v4.to_string(),
        _ => s.trim().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmaps_and_drops_zones() {
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(parse_ip("::ffff:10.0.0.1"), Some(v4));
        assert_eq!(parse_ip("[::ffff:10.0.0.1]"), Some(v4));
        assert_eq!(parse_ip(" 10.0.0.1\n"), Some(v4));
        let ll: IpAddr = "fe80::1".parse().unwrap();
        assert_eq!(parse_ip("fe80::1%eth0"), Some(ll));
        assert_eq!(parse_ip("fe80::1%2"), Some(ll));
        assert_eq!(parse_ip("fd00::1"), Some("fd00::1".parse().unwrap()));
        assert_eq!(parse_ip("server.example"), None);
        assert_eq!(parse_ip("%eth0"), None);
        assert_eq!(canonical_text("::ffff:10.0.0.1"), "10.0.0.1");
        assert_eq!(canonical_text("fe80::1%eth0"), "fe80::1%eth0");
        assert_eq!(canonical_text("nas"), "nas");
    }
}
