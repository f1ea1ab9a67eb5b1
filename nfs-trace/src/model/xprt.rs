//! Per-transport tracking: a pure state machine over SunRPC records (and, when
//! the SunRPC hooks are not attached, TCP connects tagged with their xprt).
//!
//! A transport (`struct rpc_xprt *`) keeps its identity across reconnects;
//! each connect after the first is a reconnect, with the previous and new
//! source port, whether the port was reused, why the previous connection
//! dropped and how long the transport stayed down. Pointers are recycled
//! after xprt_destroy, so a destroy ends the entry.
use std::net::IpAddr;

use rustc_hash::FxHashMap as FastMap;

use nfs_trace_common::tcp_state;

use crate::{
    flow::{Flow, Netns, Task},
    kernel::decode::{Event, XprtRecord, XprtWhat, errno_name},
};

/// Why a transport's connection went away.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// rpc_socket_error / sk_err: the errno (positive).
    Error(i32),
    /// The server closed it (the socket went to CLOSE_WAIT).
    ServerClosed,
    /// The client closed it (rpc_socket_close / shutdown).
    ClientClosed,
    /// xprt_disconnect_force (e.g. sysfs dstaddr change, a fatal RPC error).
    Forced,
    /// xprt_disconnect_auto (idle autoclose).
    Idle,
    /// The socket reached CLOSE with no reason recorded.
    Closed,
}

impl DropReason {
    pub fn name(&self) -> String {
        match self {
            DropReason::Error(e) => match errno_name(*e) {
                Some(n) => format!("error {n}"),
                None => format!("error {e}"),
            },
            DropReason::ServerClosed => "server closed".into(),
            DropReason::ClientClosed => "client closed".into(),
            DropReason::Forced => "forced disconnect".into(),
            DropReason::Idle => "idle disconnect".into(),
            DropReason::Closed => "closed".into(),
        }
    }

    pub fn errno(&self) -> Option<i32> {
        match self {
            DropReason::Error(e) => Some(*e),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dropped {
    pub ts_ns: u64,
    pub reason: DropReason,
}

/// A connect of a transport, the first one or a reconnect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XprtConnect {
    pub xprt: u64,
    pub ts_ns: u64,
    pub task: Task,
    pub flow: Flow,
    /// The port the transport remembers for rebinding (Some(0): none;
    /// None: unknown, e.g. connects taken from TCP records).
    pub srcport: Option<u16>,
    /// 1-based count of connects of this transport seen.
    pub connects: u64,
    /// The source port of its previous connection (None on the first).
    pub prev_sport: Option<u16>,
    pub reused: bool,
    /// How the previous connection went away, when seen.
    pub dropped: Option<Dropped>,
    /// The connect's own result (negative errno; -EINPROGRESS is normal).
    pub error: i32,
}

impl XprtConnect {
    pub fn is_reconnect(&self) -> bool {
        self.prev_sport.is_some()
    }

    pub fn down_ns(&self) -> Option<u64> {
        self.dropped.as_ref().map(|d| self.ts_ns.saturating_sub(d.ts_ns))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum XprtObservation {
    Connect(XprtConnect),
    /// `flow` is the connection that went away (its source port is the last
    /// one the transport connected from, where known).
    Drop { xprt: u64, ts_ns: u64, flow: Flow, reason: DropReason },
    Destroyed { xprt: u64, ts_ns: u64 },
    /// An RPC on the transport reached a major timeout (the kernel's "not
    /// responding"); `flow` is its connection as last seen connecting
    /// (else the transport's server with the remembered port), `timeouts`
    /// the transport's count so far.
    /// `task_start_ns`: when that RPC was created, where known.
    RpcTimeout { xprt: u64, ts_ns: u64, flow: Flow, timeouts: u64, task_start_ns: Option<u64> },
}

/// What is known of one transport.
#[derive(Clone, Debug, Default)]
pub struct XprtStats {
    pub raddr: Option<IpAddr>,
    pub dport: u16,
    /// The network namespace it connects in (`xprt->xprt_net`).
    pub netns: Netns,
    pub connects: u64,
    pub reconnects: u64,
    pub reuses: u64,
    pub ports: Vec<u16>,
    /// Remembered port at the last connect; None when unknown.
    pub srcport: Option<u16>,
    last_sport: Option<u16>,
    /// The connection it last connected (for records that carry no socket).
    last_flow: Option<Flow>,
    /// RPC major timeouts seen on it.
    pub rpc_timeouts: u64,
    dropped: Option<Dropped>,
    last_active_ns: u64,
}

pub const MAX_XPRTS: usize = 4096;
const MAX_PORTS_KEPT: usize = 64;

#[derive(Default)]
pub struct XprtTracker {
    xprts: FastMap<u64, XprtStats>,
    /// Transports that ended (xprt_destroy) or were evicted, kept for the
    /// summary: a run that outlives a mount still reports it.
    pub finished: Vec<(u64, XprtStats)>,
    /// Take connects from TCP records tagged with their xprt (when the
    /// SunRPC hooks are not attached).
    pub from_tcp: bool,
    /// Connections established before tracing began, by (local address,
    /// server, port): the previous port of a transport first seen
    /// reconnecting. Used only where exactly one such connection matches.
    seeds: Vec<Flow>,
}

impl XprtTracker {
    pub fn new(from_tcp: bool) -> Self {
        XprtTracker { from_tcp, ..Default::default() }
    }

    /// Records a connection already established at start.
    pub fn seed(&mut self, flow: Flow) {
        self.seeds.push(flow);
    }

    fn entry(&mut self, xprt: u64) -> &mut XprtStats {
        if !self.xprts.contains_key(&xprt) && self.xprts.len() >= MAX_XPRTS
            && let Some(old) = self.xprts.iter().min_by_key(|(_, s)| s.last_active_ns).map(|(k, _)| *k)
                && let Some(s) = self.xprts.remove(&old) {
                    self.keep_finished(old, s);
                }
        self.xprts.entry(xprt).or_default()
    }

    fn keep_finished(&mut self, xprt: u64, s: XprtStats) {
        if s.connects > 0 {
            self.finished.push((xprt, s));
            if self.finished.len() > MAX_XPRTS {
                self.finished.remove(0);
            }
        }
    }

    /// A SunRPC record.
    pub fn on_xprt(&mut self, r: &XprtRecord) -> Vec<XprtObservation> {
        match r.what {
            XprtWhat::Connect if !self.from_tcp => {
                vec![XprtObservation::Connect(self.connect(r.xprt, r.ts_ns, &r.task, r.flow, r.srcport, r.error))]
            }
            XprtWhat::RpcTimeout => {
                let s = self.entry(r.xprt);
                s.last_active_ns = r.ts_ns;
                s.rpc_timeouts += 1;
                let last = s.last_flow;
                // Up before we started and never seen connecting: the one
                // connection established at start toward its server, if one.
                let seeded = || {
                    let m: Vec<&Flow> =
                        self.seeds.iter().filter(|f| f.raddr == r.flow.raddr && f.dport == r.flow.dport && f.netns == r.flow.netns).collect();
                    if let [f] = m.as_slice() { Some(**f) } else { None }
                };
                let flow = last.or_else(seeded).unwrap_or(Flow { sport: r.srcport.unwrap_or(0), ..r.flow });
                let s = self.entry(r.xprt);
                vec![XprtObservation::RpcTimeout { xprt: r.xprt, ts_ns: r.ts_ns, flow, timeouts: s.rpc_timeouts, task_start_ns: r.task_start_ns }]
            }
            XprtWhat::Destroy => {
                if let Some(s) = self.xprts.remove(&r.xprt) {
                    self.keep_finished(r.xprt, s);
                }
                vec![XprtObservation::Destroyed { xprt: r.xprt, ts_ns: r.ts_ns }]
            }
            _ => {
                let reason = match r.what {
                    XprtWhat::Error | XprtWhat::ResetConnection if r.error != 0 => Some(DropReason::Error(-r.error)),
                    XprtWhat::StateChange if r.sk_state == tcp_state::CLOSE_WAIT => Some(DropReason::ServerClosed),
                    XprtWhat::StateChange if r.sk_state == tcp_state::CLOSE => {
                        Some(if r.sk_err != 0 { DropReason::Error(r.sk_err) } else { DropReason::Closed })
                    }
                    XprtWhat::DisconnectForce => Some(DropReason::Forced),
                    XprtWhat::DisconnectAuto => Some(DropReason::Idle),
                    XprtWhat::Close | XprtWhat::Shutdown => Some(DropReason::ClientClosed),
                    _ => None,
                };
                let Some(reason) = reason else { return Vec::new() };
                let s = self.entry(r.xprt);
                s.last_active_ns = r.ts_ns;
                // The first reason after a connect is the cause; what follows
                // (close, disconnect_done) is the consequence. A transport
                // connected before we started drops too: keep that reason.
                if s.dropped.is_some() {
                    return Vec::new();
                }
                s.dropped = Some(Dropped { ts_ns: r.ts_ns, reason: reason.clone() });
                let flow = Flow { sport: s.last_sport.unwrap_or(r.flow.sport), ..r.flow };
                vec![XprtObservation::Drop { xprt: r.xprt, ts_ns: r.ts_ns, flow, reason }]
            }
        }
    }

    /// A TCP connect record: counts as the transport's connect when the
    /// SunRPC hooks are absent; its failures are drop reasons either way.
    pub fn on_tcp(&mut self, e: &Event) -> Vec<XprtObservation> {
        // The transport's connection as TCP sees it (its local address too),
        // for its records that carry no socket.
        if let Some(s) = self.xprts.get_mut(&e.xprt).filter(|_| e.xprt != 0 && e.flow.sport != 0) {
            s.last_flow = Some(e.flow);
        }
        if e.xprt == 0 || !self.from_tcp {
            return Vec::new();
        }
        match e.kind {
            crate::kernel::decode::Kind::ConnectDone => {
                vec![XprtObservation::Connect(self.connect(e.xprt, e.start_ns, &e.task, e.flow, None, -e.err))]
            }
            crate::kernel::decode::Kind::Closed => {
                let s = self.entry(e.xprt);
                if s.dropped.is_some() || s.connects == 0 {
                    return Vec::new();
                }
                let reason = match e.err {
                    0 if e.first_exit == tcp_state::CLOSE_WAIT => DropReason::ServerClosed,
                    0 => DropReason::ClientClosed,
                    err => DropReason::Error(err),
                };
                s.dropped = Some(Dropped { ts_ns: e.ts_ns, reason: reason.clone() });
                vec![XprtObservation::Drop { xprt: e.xprt, ts_ns: e.ts_ns, flow: e.flow, reason }]
            }
            _ => Vec::new(),
        }
    }

    fn connect(&mut self, xprt: u64, ts_ns: u64, task: &Task, flow: Flow, srcport: Option<u16>, error: i32) -> XprtConnect {
        let Flow { sport, raddr, dport, .. } = flow;
        // Its first connect seen (a drop may have come first): the
        // connection it had before we started is the previous one.
        let is_new = self.xprts.get(&xprt).is_none_or(|s| s.connects == 0);
        let seeded = if is_new {
            let m: Vec<usize> = (0..self.seeds.len()).filter(|&i| self.seeds[i].dest() == flow.dest()).collect();
            match m.as_slice() {
                [i] => Some(self.seeds.remove(*i).sport),
                _ => None,
            }
        } else {
            None
        };
        let s = self.entry(xprt);
        if let Some(p) = seeded {
            // Not counted as a connect of this run, but its port is the previous one.
            s.last_sport = Some(p);
            s.ports.push(p);
        }
        s.last_active_ns = ts_ns;
        s.raddr = Some(raddr);
        s.dport = dport;
        s.netns = flow.netns;
        s.srcport = srcport;
        s.connects += 1;
        let prev = s.last_sport;
        let reused = matches!(prev, Some(p) if p == sport && p != 0);
        if prev.is_some() {
            s.reconnects += 1;
        }
        if reused {
            s.reuses += 1;
        }
        if !s.ports.contains(&sport) && s.ports.len() < MAX_PORTS_KEPT {
            s.ports.push(sport);
        }
        s.last_sport = Some(sport);
        s.last_flow = Some(flow);
        let dropped = s.dropped.take();
        XprtConnect {
            xprt,
            ts_ns,
            task: task.clone(),
            flow,
            srcport,
            connects: s.connects,
            prev_sport: prev,
            reused,
            dropped,
            error,
        }
    }

    /// Transports toward `raddr` connected now (their last connect not
    /// followed by a drop), with their connection: where the kernel's "not
    /// responding" line, which names only the server, stands in for
    /// rpc_timeout_status.
    pub fn connected_to(&self, raddr: IpAddr) -> Vec<(u64, Flow)> {
        let mut v: Vec<(u64, Flow)> = self
            .xprts
            .iter()
            .filter(|(_, s)| s.raddr == Some(raddr) && s.dropped.is_none())
            .filter_map(|(k, s)| s.last_flow.map(|f| (*k, f)))
            .collect();
        v.sort_by_key(|(k, _)| *k);
        v
    }

    /// Every transport seen, live and finished, for the summary.
    pub fn all(&self) -> Vec<(u64, &XprtStats)> {
        let mut v: Vec<(u64, &XprtStats)> =
            self.finished.iter().map(|(k, s)| (*k, s)).chain(self.xprts.iter().map(|(k, s)| (*k, s))).collect();
        v.retain(|(_, s)| s.connects > 0);
        v.sort_by_key(|(k, s)| (s.raddr, s.dport, *k));
        v
    }
}

#[cfg(test)]
mod tests;
