//! Decoding ring buffer records into typed events.
use std::net::{IpAddr, Ipv6Addr};

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use nfs_trace_common::{ConnEvent, XprtEvent, kind, xprt_event};

use crate::flow::{Flow, Netns, Task};

/// A decoded kernel record. Serialisable: `watch --events` writes the
/// records the trackers read, and `report` reads them back into them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: Kind,
    /// CLOCK_MONOTONIC of the record.
    pub ts_ns: u64,
    #[serde(with = "hex_u64")]
    pub sk: u64,
    pub task: Task,
    pub flow: Flow,
    /// When the socket entered SYN_SENT.
    pub start_ns: u64,
    /// When the first SYN left (0 where the tcp_connect hook is absent).
    pub syn_ns: u64,
    /// When it reached ESTABLISHED (0 if never).
    pub established_ns: u64,
    /// The SunRPC transport owning the socket, 0 for other sockets.
    #[serde(with = "hex_u64")]
    pub xprt: u64,
    /// `sk_err` (positive errno), 0 if none.
    pub err: i32,
    pub syn_retrans: u32,
    pub oldstate: u8,
    pub newstate: u8,
    /// For `Closed`: the first state after ESTABLISHED.
    pub first_exit: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    ConnectDone,
    SynRetransmit,
    Closed,
    /// Data of an established connection retransmitted again without ACK
    /// progress: `syn_retrans` is the run's count, `syn_ns` its first
    /// retransmit (see `kind::DATA_RETRANSMIT`).
    DataRetransmit,
}

/// Kernel addresses as hex strings in recorded records, as every other
/// record writes `sk` and `xprt`: a JSON number past 2^53 is rounded by
/// tools that read numbers as doubles (jq 1.6, Debian's), and a rounded
/// socket address would join the wrong records on replay.
mod hex_u64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{v:#x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        let hex = s.strip_prefix("0x").ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not 0x-prefixed hex")))?;
        u64::from_str_radix(hex, 16).map_err(serde::de::Error::custom)
    }
}

/// IPv4 arrives v4-mapped; show it as IPv4.
pub fn addr(bytes: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(bytes);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

fn comm(raw: &[u8; 16]) -> compact_str::CompactString {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    compact_str::CompactString::from_utf8_lossy(&raw[..end])
}

/// A decoded record of either layer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Record {
    Tcp(Event),
    Xprt(XprtRecord),
}

impl Record {
    /// The flow the record is about (its `netns` is what `--netns` filters on).
    pub fn flow(&self) -> &Flow {
        match self {
            Record::Tcp(e) => &e.flow,
            Record::Xprt(x) => &x.flow,
        }
    }
}

/// What happened to a SunRPC transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum XprtWhat {
    Connect,
    StateChange,
    Close,
    Shutdown,
    Error,
    ResetConnection,
    Create,
    Destroy,
    DisconnectAuto,
    DisconnectDone,
    DisconnectForce,
    /// An RPC of the transport reached a major timeout.
    RpcTimeout,
}

/// A decoded SunRPC transport record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct XprtRecord {
    pub what: XprtWhat,
    pub ts_ns: u64,
    #[serde(with = "hex_u64")]
    pub xprt: u64,
    #[serde(with = "hex_u64")]
    pub sk: u64,
    pub task: Task,
    pub flow: Flow,
    /// The port the transport remembers to rebind (Some(0): none); None
    /// when the kernel record could not say (no sunrpc BTF, say).
    pub srcport: Option<u16>,
    pub sk_state: u8,
    pub sock_state: u8,
    /// Tracepoint `error` (negative errno) or 0.
    pub error: i32,
    /// Socket `sk_err` (positive errno) or 0.
    pub sk_err: i32,
    /// For an RPC timeout: when its RPC was created (monotonic ns, like
    /// `ts_ns`); None elsewhere or when the kernel record could not say.
    pub task_start_ns: Option<u64>,
}

fn xprt_from_raw(e: &XprtEvent) -> Result<XprtRecord> {
    let what = match e.what {
        xprt_event::CONNECT => XprtWhat::Connect,
        xprt_event::STATE_CHANGE => XprtWhat::StateChange,
        xprt_event::CLOSE => XprtWhat::Close,
        xprt_event::SHUTDOWN => XprtWhat::Shutdown,
        xprt_event::ERROR => XprtWhat::Error,
        xprt_event::RESET_CONNECTION => XprtWhat::ResetConnection,
        xprt_event::CREATE => XprtWhat::Create,
        xprt_event::DESTROY => XprtWhat::Destroy,
        xprt_event::DISCONNECT_AUTO => XprtWhat::DisconnectAuto,
        xprt_event::DISCONNECT_DONE => XprtWhat::DisconnectDone,
        xprt_event::DISCONNECT_FORCE => XprtWhat::DisconnectForce,
        xprt_event::RPC_TIMEOUT => XprtWhat::RpcTimeout,
        other => bail!("unknown xprt event {other}"),
    };
    Ok(XprtRecord {
        what,
        ts_ns: e.ts_ns,
        xprt: e.xprt,
        sk: e.sk,
        task: Task { pid: e.pid, comm: comm(&e.comm) },
        flow: Flow { laddr: addr(e.saddr), sport: e.sport, raddr: addr(e.daddr), dport: e.dport, netns: Netns(e.netns) },
        srcport: (e.srcport_known != 0).then_some(e.srcport),
        sk_state: e.sk_state,
        sock_state: e.sock_state,
        error: e.error,
        sk_err: e.sk_err,
        task_start_ns: (e.task_start_ns != 0).then_some(e.task_start_ns),
    })
}

/// Reads a plain-old-data record of type T from the front of `bytes`.
fn read_pod<T: Copy>(bytes: &[u8]) -> Result<T> {
    if bytes.len() < std::mem::size_of::<T>() {
        bail!("short record: {} bytes, want {}", bytes.len(), std::mem::size_of::<T>());
    }
    // SAFETY: length checked above; T is one of our #[repr(C)] record types,
    // for which every bit pattern is valid; read_unaligned copes with any
    // alignment.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Decodes one ring buffer record; its first byte says which kind it is.
pub fn decode(bytes: &[u8]) -> Result<Record> {
    match bytes.first() {
        None => bail!("empty record"),
        Some(&kind::XPRT) => Ok(Record::Xprt(xprt_from_raw(&read_pod::<XprtEvent>(bytes)?)?)),
        Some(_) => Ok(Record::Tcp(from_raw(&read_pod::<ConnEvent>(bytes)?)?)),
    }
}

pub fn from_raw(e: &ConnEvent) -> Result<Event> {
    let k = match e.kind {
        kind::CONNECT_DONE => Kind::ConnectDone,
        kind::SYN_RETRANSMIT => Kind::SynRetransmit,
        kind::CLOSED => Kind::Closed,
        kind::DATA_RETRANSMIT => Kind::DataRetransmit,
        other => bail!("unknown record kind {other}"),
    };
    Ok(Event {
        kind: k,
        ts_ns: e.ts_ns,
        sk: e.sk,
        task: Task { pid: e.pid, comm: comm(&e.comm) },
        flow: Flow { laddr: addr(e.saddr), sport: e.sport, raddr: addr(e.daddr), dport: e.dport, netns: Netns(e.netns) },
        start_ns: e.start_ns,
        syn_ns: e.syn_ns,
        established_ns: e.established_ns,
        xprt: e.xprt,
        err: e.err,
        syn_retrans: e.syn_retrans,
        oldstate: e.oldstate,
        newstate: e.newstate,
        first_exit: e.first_exit,
    })
}

/// Test events: a connect of socket `sk` on `flow` that reached ESTABLISHED
/// at `ts_ns`, 100 µs after it entered SYN_SENT; tests change what they
/// need from there.
#[cfg(test)]
impl Event {
    pub fn for_test(kind: Kind, ts_ns: u64, sk: u64, task: Task, flow: Flow) -> Event {
        use nfs_trace_common::tcp_state::{ESTABLISHED, SYN_SENT};
        Event {
            kind,
            ts_ns,
            sk,
            task,
            flow,
            start_ns: ts_ns.saturating_sub(100_000),
            syn_ns: 0,
            established_ns: 0,
            xprt: 0,
            err: 0,
            syn_retrans: 0,
            oldstate: SYN_SENT,
            newstate: ESTABLISHED,
            first_exit: 0,
        }
    }
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
        let Record::Tcp(e) = decode(bytes).unwrap() else { panic!("a TCP record") };
        assert_eq!(e.kind, Kind::ConnectDone);
        assert_eq!(e.flow.laddr, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(e.flow.raddr, "fd00::2".parse::<IpAddr>().unwrap());
        assert_eq!((e.flow.sport, e.flow.dport), (999, 2049));
        assert_eq!(e.task.comm, "test");
        assert_eq!(e.flow.netns, Netns::UNKNOWN, "0 from the kernel is no namespace");
        assert!(decode(&bytes[..10]).is_err());
        assert!(decode(&[]).is_err());
    }

    /// The namespace inode rides at its own offset (after the old 120-byte
    /// layout) and lands in the flow, so two namespaces' records with the
    /// same addresses decode to two flows; 0 stays "unknown", serialised as
    /// null rather than as a namespace 0.
    #[test]
    fn the_netns_inode_is_part_of_the_flow() {
        let raw_conn = |netns: u32| {
            let mut raw: ConnEvent = unsafe { std::mem::zeroed() };
            raw.kind = kind::CONNECT_DONE;
            raw.sport = 999;
            raw.dport = 2049;
            raw.saddr = Ipv6Addr::from([0, 0, 0, 0, 0, 0xffff, 0x7f00, 1]).octets();
            raw.daddr = raw.saddr;
            raw.netns = netns;
            let bytes = unsafe {
                std::slice::from_raw_parts((&raw as *const ConnEvent).cast::<u8>(), std::mem::size_of::<ConnEvent>())
            };
            assert_eq!(u32::from_ne_bytes(bytes[120..124].try_into().unwrap()), netns, "netns at byte 120");
            let Record::Tcp(e) = decode(bytes).unwrap() else { panic!("a TCP record") };
            e.flow
        };
        let (a, b) = (raw_conn(4026531840), raw_conn(4026532301));
        assert_eq!((a.netns, b.netns), (Netns(4026531840), Netns(4026532301)));
        assert_ne!(a, b, "same addresses, two namespaces: two flows");
        assert_ne!(a.dest(), b.dest());
        assert_eq!(serde_json::to_value(a).unwrap()["netns"], 4026531840u32);
        assert_eq!(serde_json::to_value(raw_conn(0)).unwrap()["netns"], serde_json::Value::Null);

        let mut raw: XprtEvent = unsafe { std::mem::zeroed() };
        raw.kind = kind::XPRT;
        raw.what = xprt_event::CONNECT;
        raw.netns = 4026532301;
        let bytes = unsafe {
            std::slice::from_raw_parts((&raw as *const XprtEvent).cast::<u8>(), std::mem::size_of::<XprtEvent>())
        };
        let Record::Xprt(x) = decode(bytes).unwrap() else { panic!("an xprt record") };
        assert_eq!(x.flow.netns, Netns(4026532301));
    }

    #[test]
    fn decodes_an_xprt_record() {
        let mut raw: XprtEvent = unsafe { std::mem::zeroed() };
        raw.kind = kind::XPRT;
        raw.what = xprt_event::CONNECT;
        raw.xprt = 0xffff_8880_0000_1000;
        raw.sport = 875;
        raw.srcport = 875;
        raw.srcport_known = 1;
        raw.dport = 2049;
        raw.error = -115;
        raw.daddr = Ipv6Addr::from([0, 0, 0, 0, 0, 0xffff, 0x0a63, 1]).octets();
        let bytes = unsafe {
            std::slice::from_raw_parts((&raw as *const XprtEvent).cast::<u8>(), std::mem::size_of::<XprtEvent>())
        };
        let Record::Xprt(x) = decode(bytes).unwrap() else { panic!("an xprt record") };
        assert_eq!(x.what, XprtWhat::Connect);
        assert_eq!((x.flow.sport, x.srcport, x.flow.dport, x.error), (875, Some(875), 2049, -115));
        assert_eq!(x.flow.raddr, "10.99.0.1".parse::<IpAddr>().unwrap());
        // "Remembers none" (0, read) and "could not read" (unknown) stay apart.
        let decode_srcport = |raw: &XprtEvent| {
            let bytes = unsafe {
                std::slice::from_raw_parts((raw as *const XprtEvent).cast::<u8>(), std::mem::size_of::<XprtEvent>())
            };
            let Record::Xprt(x) = decode(bytes).unwrap() else { panic!("an xprt record") };
            x.srcport
        };
        raw.srcport = 0;
        assert_eq!(decode_srcport(&raw), Some(0));
        raw.srcport_known = 0;
        assert_eq!(decode_srcport(&raw), None);
        raw.what = 99;
        let bytes = unsafe {
            std::slice::from_raw_parts((&raw as *const XprtEvent).cast::<u8>(), std::mem::size_of::<XprtEvent>())
        };
        assert!(decode(bytes).is_err());
    }
}
