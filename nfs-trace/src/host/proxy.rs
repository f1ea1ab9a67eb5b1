//! Mounts through a local proxy: efs-utils v2 mounts `127.0.0.1:20xxx` and
//! efs-proxy (stunnel for v1 TLS mounts) makes the connections to the
//! server. The kernel's connects then go to loopback, where no middlebox
//! is, and the flows a middlebox can drop are the proxy's. So a mount whose
//! server is a loopback address is followed to the process listening there
//! (sock_diag: the listener's socket inode; `/proc/PID/fd`: who holds it),
//! and that process's other TCP sockets are the mount's upstream leg.
//!
//! What is read: one sock_diag dump of the mount's network namespace and
//! the fd links of the processes in it (children of the proxy included: a
//! forking stunnel holds the upstream sockets in its children). Only done
//! for loopback mounts, so a host without them pays nothing.
use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    net::IpAddr,
    path::Path,
};

use nfs_trace_common::tcp_state;
use serde::{Deserialize, Serialize};

use crate::host::{addr::endpoint, sock_diag::TcpSock};

/// One TCP socket of a proxy leg, as `ss` would list it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leg {
    pub laddr: IpAddr,
    pub lport: u16,
    pub raddr: IpAddr,
    pub rport: u16,
    #[serde(deserialize_with = "state_de")]
    pub state: crate::host::nfsmounts::Name,
    pub netns: u32,
}

/// The proxy a loopback mount goes through, as seen at one read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proxy {
    /// Where the mount connects: `127.0.0.1:20049`.
    pub listen: String,
    /// The process holding the listening socket; None: nobody listens (the
    /// proxy is gone) or the holder could not be seen (see `problems`).
    pub pid: Option<u32>,
    pub comm: Option<String>,
    /// Its connections that are not the kernel's to it: toward the server.
    pub upstream: Vec<Leg>,
    /// The NFS client's connections to it (the kernel side of loopback).
    pub downstream: Vec<Leg>,
    /// Servers its upstream leg went to, at this read and earlier ones
    /// (watch remembers them, [`Memory`]): a connect toward one of them
    /// with no SunRPC transport is this mount's upstream leg.
    pub servers: Vec<(IpAddr, u16)>,
    /// What is wrong, one sentence each: nobody listens, an upstream socket
    /// in CLOSE-WAIT (the server closed, the proxy did not) or stuck in
    /// SYN-SENT (the proxy cannot reach the server).
    pub problems: Vec<String>,
    /// What could not be seen (not a fault of the proxy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unseen: Option<String>,
}

impl Proxy {
    /// Whether a connect toward `raddr:rport` may be this proxy's upstream
    /// leg (the caller checks the network namespace, and that it is no
    /// SunRPC transport: those are the kernel's, never a proxy's).
    pub fn carries(&self, raddr: IpAddr, rport: u16) -> bool {
        self.servers.contains(&(raddr.to_canonical(), rport))
    }
}

/// ss's name for a TCP state.
pub fn state_name(s: u8) -> &'static str {
    match s {
        tcp_state::ESTABLISHED => "ESTAB",
        tcp_state::SYN_SENT => "SYN-SENT",
        tcp_state::SYN_RECV => "SYN-RECV",
        tcp_state::FIN_WAIT1 => "FIN-WAIT-1",
        tcp_state::FIN_WAIT2 => "FIN-WAIT-2",
        tcp_state::TIME_WAIT => "TIME-WAIT",
        tcp_state::CLOSE => "UNCONN",
        tcp_state::CLOSE_WAIT => "CLOSE-WAIT",
        tcp_state::LAST_ACK => "LAST-ACK",
        tcp_state::LISTEN => "LISTEN",
        tcp_state::CLOSING => "CLOSING",
        _ => "UNKNOWN",
    }
}

/// A recorded state name back to ours (`report` reads views `watch --events`
/// wrote); one we never write reads as "UNKNOWN".
fn state_de<'de, D: serde::Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    let s = String::deserialize(d)?;
    Ok((0..=15u8).map(state_name).find(|n| *n == s).unwrap_or("UNKNOWN"))
}

fn leg(s: &TcpSock) -> Leg {
    Leg { laddr: s.laddr, lport: s.lport, raddr: s.raddr, rport: s.rport, state: state_name(s.state), netns: s.netns }
}

/// Whether `a` is a loopback address (127/8, ::1, IPv4-mapped 127/8).
pub fn is_loopback(a: IpAddr) -> bool {
    a.to_canonical().is_loopback()
}

/// The listening socket for `addr:port` (bound to it or to the wildcard).
fn listener<'a>(socks: &'a [TcpSock], addr: IpAddr, port: u16) -> Option<&'a TcpSock> {
    let addr = addr.to_canonical();
    let all: Vec<&TcpSock> = socks.iter().filter(|s| s.state == tcp_state::LISTEN && s.lport == port).collect();
    all.iter().find(|s| s.laddr.to_canonical() == addr).or_else(|| all.iter().find(|s| s.laddr.is_unspecified())).copied()
}

/// Whether `s` is one of the proxy's own connections toward a server: a
/// socket it holds (`owned` inodes) that is neither its listener on
/// `addr:port`, nor the accepted side of a client's connection, nor a
/// client's connection to it.
pub fn is_upstream(s: &TcpSock, addr: IpAddr, port: u16, owned: &HashSet<u32>) -> bool {
    let addr = addr.to_canonical();
    s.inode != 0
        && owned.contains(&s.inode)
        && s.state != tcp_state::LISTEN
        && !(s.lport == port && s.laddr.to_canonical() == addr)
        && !(s.rport == port && s.raddr.to_canonical() == addr)
}

/// Splits the namespace's sockets into the proxy's legs: `downstream`, the
/// client's connections to `addr:port`; `upstream`, see [`is_upstream`].
/// Pure: tested on made-up dumps.
pub fn legs(socks: &[TcpSock], addr: IpAddr, port: u16, owned: &HashSet<u32>) -> (Vec<Leg>, Vec<Leg>) {
    let canon = addr.to_canonical();
    let downstream =
        socks.iter().filter(|s| s.rport == port && s.raddr.to_canonical() == canon && s.state != tcp_state::LISTEN).map(leg).collect();
    let upstream = socks.iter().filter(|s| is_upstream(s, addr, port, owned)).map(leg).collect();
    (upstream, downstream)
}

/// The problems a user must hear of, from what was found.
pub fn problems(listen: &str, pid: Option<u32>, upstream: &[Leg], downstream: &[Leg]) -> Vec<String> {
    let mut p = Vec::new();
    if pid.is_none() {
        p.push(format!("nothing listens on {listen}: the proxy is gone, and the mount hangs until it is started again"));
    }
    for l in upstream {
        let t = format!("{} → {}", endpoint(l.laddr, l.lport), endpoint(l.raddr, l.rport));
        match l.state {
            "CLOSE-WAIT" => p.push(format!(
                "upstream {t} is in CLOSE-WAIT: the server closed it and the proxy has not (a dead tunnel: the mount's RPCs through it go nowhere)"
            )),
            "SYN-SENT" => p.push(format!("upstream {t} is stuck in SYN-SENT: the proxy cannot reach the server from that port")),
            _ => {}
        }
    }
    if pid.is_some() && upstream.is_empty() && downstream.iter().any(|d| d.state == "ESTAB") {
        p.push(format!("the NFS client is connected to {listen} but the proxy holds no connection to a server"));
    }
    p
}

/// Socket inodes a process's fd table holds.
fn socket_inodes(proc_root: &Path, pid: u32) -> HashSet<u32> {
    let Ok(rd) = std::fs::read_dir(proc_root.join(pid.to_string()).join("fd")) else { return HashSet::new() };
    rd.flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|t| t.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok())
        .collect()
}

fn comm(proc_root: &Path, pid: u32) -> Option<String> {
    std::fs::read_to_string(proc_root.join(pid.to_string()).join("comm")).ok().map(|s| s.trim_end().to_string())
}

fn ppid(proc_root: &Path, pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?;
    // The comm field may hold spaces and parentheses: ppid follows the last ')'.
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

/// The process holding the listener for `addr:port` among `pids`, and the
/// socket inodes it and its children hold; Err: something listens there
/// but its process cannot be seen. Ok((None, _)): nothing listens.
pub fn holder(proc_root: &Path, socks: &[TcpSock], addr: IpAddr, port: u16, pids: &[u32]) -> Result<(Option<u32>, HashSet<u32>), String> {
    let Some(l) = listener(socks, addr, port) else { return Ok((None, HashSet::new())) };
    let found = pids.iter().find_map(|&p| {
        let inodes = socket_inodes(proc_root, p);
        inodes.contains(&l.inode).then_some((p, inodes))
    });
    let Some((pid, mut owned)) = found else {
        return Err(format!(
            "something listens on {} but its process cannot be seen (needs root, and the host's PID namespace)",
            endpoint(addr, port)
        ));
    };
    for c in pids.iter().copied().filter(|c| ppid(proc_root, *c) == Some(pid)) {
        owned.extend(socket_inodes(proc_root, c));
    }
    Ok((Some(pid), owned))
}

/// Follows a loopback mount to its proxy: `socks` is its network
/// namespace's sockets, `pids` the processes that may hold the listener
/// (those in that namespace; every process when it is not known).
pub fn follow(proc_root: &Path, socks: &[TcpSock], addr: IpAddr, port: u16, pids: &[u32]) -> Proxy {
    let listen = endpoint(addr, port);
    let (pid, owned, unseen) = match holder(proc_root, socks, addr, port, pids) {
        Ok((pid, owned)) => (pid, owned, None),
        Err(why) => (None, HashSet::new(), Some(why)),
    };
    let (upstream, downstream) = legs(socks, addr, port, &owned);
    let problems = if unseen.is_some() { Vec::new() } else { problems(&listen, pid, &upstream, &downstream) };
    let servers: BTreeSet<(IpAddr, u16)> = upstream.iter().map(|l| (l.raddr.to_canonical(), l.rport)).collect();
    Proxy {
        comm: pid.and_then(|p| comm(proc_root, p)),
        listen,
        pid,
        upstream,
        downstream,
        servers: servers.into_iter().collect(),
        problems,
        unseen,
    }
}

/// The servers each mount's proxy went to, remembered across reads: a
/// tunnel between connections holds no upstream socket, and its next
/// connect must still be known as the mount's.
#[derive(Default)]
pub struct Memory {
    servers: BTreeMap<(Option<u32>, String), BTreeSet<(IpAddr, u16)>>,
}

/// The most servers remembered per proxy (a proxy that fans out to more is
/// not an NFS tunnel; the oldest are not dropped, new ones are not added).
const SERVERS_MAX: usize = 16;

impl Memory {
    /// Adds what `proxies` show now and gives each all it went to before.
    pub fn annotate<'a>(&mut self, proxies: impl Iterator<Item = (Option<u32>, &'a mut Proxy)>) {
        for (netns, p) in proxies {
            let known = self.servers.entry((netns, p.listen.clone())).or_default();
            for s in &p.servers {
                if known.len() < SERVERS_MAX {
                    known.insert(*s);
                }
            }
            p.servers = known.iter().copied().collect();
        }
    }
}

#[cfg(test)]
mod tests;
