//! Decoding ring buffer records into typed events.
use std::net::{IpAddr, Ipv6Addr};

use anyhow::{Result, bail};
use nfs_trace_common::{ConnEvent, kind};

/// A decoded kernel record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: Kind,
    /// CLOCK_MONOTONIC of the record.
    pub ts_ns: u64,
    pub sk: u64,
    pub pid: u32,
    pub comm: String,
    pub laddr: IpAddr,
    pub sport: u16,
    pub raddr: IpAddr,
    pub dport: u16,
    /// When the socket entered SYN_SENT.
    pub start_ns: u64,
    /// When the first SYN left (0 where the tcp_connect hook is absent).
    pub syn_ns: u64,
    /// When it reached ESTABLISHED (0 if never).
    pub established_ns: u64,
    /// `sk_err` (positive errno), 0 if none.
    pub err: i32,
    pub syn_retrans: u32,
    pub oldstate: u8,
    pub newstate: u8,
    /// For `Closed`: the first state after ESTABLISHED.
    pub first_exit: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    ConnectDone,
    SynRetransmit,
    Closed,
}

/// IPv4 arrives v4-mapped; show it as IPv4.
pub fn addr(bytes: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(bytes);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

fn comm(raw: &[u8; 16]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

/// Decodes one ring buffer record.
pub fn decode(bytes: &[u8]) -> Result<Event> {
    if bytes.len() < std::mem::size_of::<ConnEvent>() {
        bail!("short record: {} bytes, want {}", bytes.len(), std::mem::size_of::<ConnEvent>());
    }
    // SAFETY: length checked above; ConnEvent is plain old data (#[repr(C)],
    // every bit pattern valid) and read_unaligned copes with any alignment.
    let e: ConnEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    Ok(from_raw(&e)?)
}

pub fn from_raw(e: &ConnEvent) -> Result<Event> {
    let k = match e.kind {
        kind::CONNECT_DONE => Kind::ConnectDone,
        kind::SYN_RETRANSMIT => Kind::SynRetransmit,
        kind::CLOSED => Kind::Closed,
        other => bail!("unknown record kind {other}"),
    };
    Ok(Event {
        kind: k,
        ts_ns: e.ts_ns,
        sk: e.sk,
        pid: e.pid,
        comm: comm(&e.comm),
        laddr: addr(e.saddr),
        sport: e.sport,
        raddr: addr(e.daddr),
        dport: e.dport,
        start_ns: e.start_ns,
        syn_ns: e.syn_ns,
        established_ns: e.established_ns,
        err: e.err,
        syn_retrans: e.syn_retrans,
        oldstate: e.oldstate,
        newstate: e.newstate,
        first_exit: e.first_exit,
    })
}

/// Symbolic names of the errnos a connect or connection ends with.
pub fn errno_name(e: i32) -> Option<&'static str> {
    Some(match e {
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ECONNRESET => "ECONNRESET",
        libc::ECONNABORTED => "ECONNABORTED",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::EPIPE => "EPIPE",
        libc::EPERM => "EPERM",
        libc::EACCES => "EACCES",
        libc::EPROTO => "EPROTO",
        libc::EHOSTDOWN => "EHOSTDOWN",
        libc::ENETDOWN => "ENETDOWN",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_record_and_unmaps_ipv4() {
        let mut raw: ConnEvent = unsafe { std::mem::zeroed() };
        raw.kind = kind::CONNECT_DONE;
        raw.sport = 999;
        raw.dport = 2049;
        raw.saddr = Ipv6Addr::from([0, 0, 0, 0, 0, 0xffff, 0x7f00, 1]).octets();
        raw.daddr = "fd00::2".parse::<Ipv6Addr>().unwrap().octets();
        raw.comm[..4].copy_from_slice(b"test");
        let bytes = unsafe {
            std::slice::from_raw_parts((&raw as *const ConnEvent).cast::<u8>(), std::mem::size_of::<ConnEvent>())
        };
        let e = decode(bytes).unwrap();
        assert_eq!(e.kind, Kind::ConnectDone);
        assert_eq!(e.laddr, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(e.raddr, "fd00::2".parse::<IpAddr>().unwrap());
        assert_eq!((e.sport, e.dport), (999, 2049));
        assert_eq!(e.comm, "test");
        assert!(decode(&bytes[..10]).is_err());
    }
}
