//! Which mount a SunRPC transport serves, credited only on evidence.
//!
//! Several mounts of one server are common (a v3 and a v4.1 mount, two
//! exports, nconnect siblings), and at mount time the first connects come
//! before the mount is listed anywhere. Crediting "the only mount of that
//! server we know" then credits the wrong one (the v3 mount got a v4.1
//! mount's transports, issue 11). So a transport is credited to a mount only
//! when one of these says so, and is otherwise "not yet known":
//!
//! 1. `mount link`: the kernel links the mount to its transports
//!    (`/sys/fs/nfs/<dev>` → RPC client → switch, 6.4+) and the transport's
//!    live port is one of them;
//! 2. `remembered port`: the transport remembers a source port (v3/v4.0
//!    with resvport) that the mount's own transports remember (mountstats),
//!    or its live port is one the mount remembers;
//! 3. `appeared after its first connect`: its first connect was seen with
//!    no mount to credit, and then exactly one new mount of that server
//!    appeared that fits (remembers no port if the transport remembers none)
//!    — the attribution is then made late, as an [`Attributed`] record;
//! 4. `only mount of the server remembering no port`: a transport that
//!    remembers no port and whose mount was certainly listed already — it
//!    was connected before we started, or it first connected 30 s ago or
//!    more and no mount of its server appeared since (an idle transport
//!    connecting again) — where exactly one such listed mount of that
//!    server has transports that remember none and no mount link says
//!    otherwise.
//!
//! Once credited, a transport keeps its mount across reconnects (by its
//! `rpc_xprt` address, stable for the transport's life) though its port
//! changes: the evidence was about the transport, not the port.
use std::net::IpAddr;

use rustc_hash::{FxHashMap as FastMap, FxHashSet as FastSet};

use crate::{
    flow::{Flow, Netns},
    host::nfsmounts::MountView, model::xprt::XprtObservation};

/// What identifies a transport to attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transport {
    /// The `rpc_xprt` address, where known (TCP-level records of a SunRPC
    /// socket carry it; 0 = none).
    pub xprt: u64,
    pub raddr: IpAddr,
    pub dport: u16,
    /// Its network namespace (UNKNOWN: not known).
    pub netns: Netns,
    /// The port the transport remembers (Some(0): none; None: unknown).
    pub srcport: Option<u16>,
    /// The source port it is (or was last) connected from.
    pub live: Option<u16>,
}

impl Transport {
    pub fn of_flow(xprt: u64, flow: &Flow, srcport: Option<u16>) -> Transport {
        Transport {
            xprt,
            raddr: flow.raddr,
            dport: flow.dport,
            netns: flow.netns,
            srcport,
            live: Some(flow.sport),
        }
    }
}

pub const BY_LINK: &str = "mount link";
pub const BY_PORT: &str = "remembered port";
pub const BY_APPEARING: &str = "mount appeared after its first connect";
pub const BY_ELIMINATION: &str = "only mount of the server remembering no port";
pub const BY_PROXY: &str = "upstream leg of the mount's local proxy";

/// The mounts `t` serves and the evidence, or nothing ("not yet known").
pub fn attribute<'a>(
    views: &'a [MountView],
    t: &Transport,
) -> (Vec<&'a MountView>, Option<&'static str>) {
    let same: Vec<&MountView> = views
        .iter()
        .filter(|v| serves_dest(v, t.raddr, t.dport, t.netns))
        .collect();
    let pick = |f: &dyn Fn(&MountView) -> bool| -> Vec<&'a MountView> {
        same.iter().copied().filter(|v| f(v)).collect()
    };
    if t.xprt != 0 {
        let learned = pick(&|v| v.xprts.iter().any(|(x, _)| *x == t.xprt));
        if let Some(why) = learned
            .first()
            .and_then(|v| v.xprts.iter().find(|(x, _)| *x == t.xprt))
            .map(|(_, w)| *w)
        {
            return (learned, Some(why));
        }
    }
    if let Some(live) = t.live.filter(|p| *p != 0) {
        let linked = pick(&|v| {
            v.live_from == "mount link" && v.live_ports.as_ref().is_some_and(|l| l.contains(&live))
        });
        if !linked.is_empty() {
            return (linked, Some(BY_LINK));
        }
    }
    for port in [t.srcport, t.live]
        .into_iter()
        .flatten()
        .filter(|p| *p != 0)
    {
        let by_port = pick(&|v| v.remembered_ports.contains(&port));
        if !by_port.is_empty() {
            return (by_port, Some(BY_PORT));
        }
    }
    if t.xprt == 0 {
        let proxied = proxied_by(views, t.raddr, t.dport, t.netns);
        if !proxied.is_empty() {
            return (proxied, Some(BY_PROXY));
        }
    }
    (Vec::new(), None)
}

/// The loopback mounts whose local proxy carries a connect toward
/// `raddr:dport` from `netns` (its upstream leg; host/proxy.rs). Empty at
/// once on hosts without such mounts: it sits on the path of every record.
pub fn proxied_by(views: &[MountView], raddr: IpAddr, dport: u16, netns: Netns) -> Vec<&MountView> {
    views
        .iter()
        .filter(|v| v.proxy.as_ref().is_some_and(|p| p.carries(raddr, dport)))
        .filter(|v| same_netns(v, netns))
        .collect()
}

/// Whether mount `v` is one of server `raddr:dport` from network namespace
/// `netns`: two containers may mount the same server address, each its own.
/// A mount or transport whose namespace is not known is not told apart so.
fn serves_dest(v: &MountView, raddr: IpAddr, dport: u16, netns: Netns) -> bool {
    v.port == dport && v.server_ip() == Some(raddr.to_canonical()) && same_netns(v, netns)
}

/// Whether mount `v`'s client may live in `netns`: a mount or a flow whose
/// namespace is not known is not told apart.
fn same_netns(v: &MountView, netns: Netns) -> bool {
    netns == Netns::UNKNOWN || v.netns.is_none_or(|n| n == netns.0)
}

/// A late attribution: a transport reported as "not yet known" now has its
/// mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attributed {
    pub xprt: u64,
    pub flow: Flow,
    pub mounts: Vec<String>,
    pub evidence: &'static str,
}

/// A transport whose first connect was seen with no mount to credit.
struct Pending {
    flow: Flow,
    srcport: Option<u16>,
    first_ns: u64,
}

/// How long a transport waits for its mount to appear (a mount can take
/// seconds: v4 lease setup, a slow server). Past that it stays unknown.
const PENDING_NS: u64 = 120_000_000_000;
/// A transport first seen connecting this long ago, with no mount of its
/// server appearing since, belonged to a mount already listed then.
const SETTLED_NS: u64 = 30_000_000_000;
const MAX_KNOWN: usize = crate::model::xprt::MAX_XPRTS;

/// Remembers what evidence said about each transport, annotates each fresh
/// read of the mounts with it (`MountView::xprts`), and reports the
/// attributions made late.
#[derive(Default)]
pub struct Attributor {
    known: FastMap<u64, (Vec<String>, &'static str)>,
    pending: FastMap<u64, Pending>,
    /// When each mount was first listed (0: at start), by identity: a mount
    /// first listed after a transport's first connect is one that was being
    /// mounted then.
    first_seen: FastMap<String, u64>,
    started: bool,
    /// Transports whose latest connect was refused in connect() (their
    /// previous port was never theirs).
    refused: FastSet<u64>,
    /// Mounts listed before their server's port was watched (a port outside
    /// --port, added when the mount appeared): their first connect was not
    /// seen either, so like mounts listed at start they are candidates
    /// for a transport first seen reconnecting.
    unseen_first: FastSet<String>,
}

/// Whether a transport's connect failed in connect() because the 4-tuple
/// was taken: the socket was bound to the port (SunRPC binds with
/// SO_REUSEADDR) but another socket is connected from it. Seen on 6.12 and
/// 7.2 when an nconnect v4.1 transport drew the port of a v3 sibling; the
/// port then matches the sibling's mount's remembered one and would credit
/// the wrong mount.
fn refused_in_connect(error: i32) -> bool {
    error == -libc::EADDRNOTAVAIL || error == -libc::EADDRINUSE
}

/// Whether a mount's own transports could include one that remembers
/// `srcport`, with no mount link saying otherwise (a linked mount lists its
/// transports: it would have been found by them).
fn fits(v: &MountView, srcport: Option<u16>) -> bool {
    v.live_from != "mount link"
        && match srcport {
            Some(p) => v.remembered_ports.contains(&p),
            None => true,
        }
}

/// A mount's identity across reads (a mount point is unique only within
/// its mount namespace).
fn key(v: &MountView) -> String {
    format!("{:?}\0{}\0{}", v.mntns, v.mountpoint, v.source)
}

impl Attributor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Call with each transport observation before it is rendered: learns
    /// from the evidence it carries, annotating `views`.
    pub fn observe(&mut self, o: &XprtObservation, views: &mut [MountView]) {
        let c = match o {
            XprtObservation::Connect(c) => c,
            XprtObservation::Destroyed { xprt, .. } => {
                self.known.remove(xprt);
                self.pending.remove(xprt);
                self.refused.remove(xprt);
                return;
            }
            XprtObservation::Drop { .. } | XprtObservation::RpcTimeout { .. } => return,
        };
        if refused_in_connect(c.error) {
            // The port was a sibling's (nconnect drew a port another
            // transport is connected from): no evidence about this one.
            // Its first connect still waits for its mount to appear.
            if self.refused.len() < MAX_KNOWN {
                self.refused.insert(c.xprt);
            }
            if c.connects == 1 && !c.is_reconnect() && self.pending.len() < MAX_KNOWN {
                let flow = Flow { sport: 0, ..c.flow };
                self.pending.insert(c.xprt, Pending { flow, srcport: None, first_ns: c.ts_ns });
            }
            return;
        }
        let prev_refused = self.refused.remove(&c.xprt);
        if let Some(p) = self.pending.get_mut(&c.xprt) {
            // The pending first attempt was refused: this is the port the
            // transport really holds.
            p.flow = c.flow;
            p.srcport = c.srcport;
        }
        let t = Transport::of_flow(c.xprt, &c.flow, c.srcport);
        let (mut found, mut why) = attribute(views, &t);
        if why.is_none() && c.prev_sport.is_some() && !prev_refused {
            // The mounts were read before this reconnect: a mount link
            // lists the port the transport was connected from until now.
            (found, why) = attribute(views, &Transport { live: c.prev_sport, ..t });
        }
        if let Some(why) = why {
            let keys = found.iter().map(|v| key(v)).collect();
            self.learn(c.xprt, keys, why, views);
            return;
        }
        if c.connects == 1 && !c.is_reconnect() {
            if self.pending.len() < MAX_KNOWN {
                self.pending.insert(c.xprt, Pending { flow: c.flow, srcport: c.srcport, first_ns: c.ts_ns });
            }
            return;
        }
        // Connected before we started (we never saw its first connect): its
        // mount was listed at our start.
        if self.started && !self.pending.contains_key(&c.xprt) {
            let fitting: Vec<&MountView> = views
                .iter()
                .filter(|v| serves_dest(v, c.flow.raddr, c.flow.dport, c.flow.netns))
                .filter(|v| (self.first_seen.get(&key(v)) == Some(&0) || self.unseen_first.contains(&key(v))) && fits(v, c.srcport))
                .collect();
            if let [only] = fitting[..] {
                let keys = vec![key(only)];
                self.learn(c.xprt, keys, BY_ELIMINATION, views);
            }
        }
    }

    /// `port` is watched from now on: the mounts listed on it connected
    /// unseen.
    pub fn port_watched_late(&mut self, port: u16, views: &[MountView]) {
        for v in views.iter().filter(|v| v.port == port) {
            if self.unseen_first.len() < MAX_KNOWN {
                self.unseen_first.insert(key(v));
            }
        }
    }

    fn learn(
        &mut self,
        xprt: u64,
        mounts: Vec<String>,
        why: &'static str,
        views: &mut [MountView],
    ) {
        self.pending.remove(&xprt);
        if self.known.len() >= MAX_KNOWN && !self.known.contains_key(&xprt) {
            return;
        }
        for v in views.iter_mut().filter(|v| mounts.contains(&key(v))) {
            if !v.xprts.iter().any(|(x, _)| *x == xprt) {
                v.xprts.push((xprt, why));
            }
        }
        self.known.insert(xprt, (mounts, why));
    }

    /// Call with each fresh read of the mounts: annotates it with what is
    /// known and returns the transports attributed just now.
    pub fn refresh(&mut self, views: &mut [MountView], now_ns: u64) -> Vec<Attributed> {
        let seen_at = if self.started { now_ns.max(1) } else { 0 };
        self.started = true;
        for v in views.iter() {
            self.first_seen.entry(key(v)).or_insert(seen_at);
        }
        if self.first_seen.len() > MAX_KNOWN {
            // Mounts come and go; forget those no longer listed.
            let listed: Vec<String> = views.iter().map(key).collect();
            self.first_seen.retain(|k, _| listed.contains(k));
        }
        for (xprt, (mounts, why)) in &self.known {
            for v in views.iter_mut().filter(|v| mounts.contains(&key(v))) {
                v.xprts.push((*xprt, *why));
            }
        }
        let mut out = Vec::new();
        let mut done = Vec::new();
        for (&xprt, p) in &self.pending {
            if now_ns.saturating_sub(p.first_ns) > PENDING_NS {
                // Too long ago for "appeared after": stays unknown.
                done.push((xprt, Vec::new(), ""));
                continue;
            }
            let t = Transport::of_flow(xprt, &p.flow, p.srcport);
            let (mut found, mut why) = attribute(views, &t);
            if found.is_empty() {
                let listed_then = |v: &MountView| self.first_seen.get(&key(v)).is_some_and(|&t| t <= p.first_ns);
                let appeared: Vec<&MountView> = views
                    .iter()
                    .filter(|v| serves_dest(v, p.flow.raddr, p.flow.dport, p.flow.netns) && !listed_then(v))
                    .collect();
                let new: Vec<&MountView> = appeared.iter().copied().filter(|v| fits(v, p.srcport)).collect();
                if new.len() == 1 {
                    (found, why) = (new, Some(BY_APPEARING));
                } else if appeared.is_empty() && now_ns.saturating_sub(p.first_ns) >= SETTLED_NS {
                    // No mount appeared: it was listed when the transport
                    // first connected (an idle transport connecting again,
                    // a lazily connected nconnect sibling).
                    let old: Vec<&MountView> = views
                        .iter()
                        .filter(|v| serves_dest(v, p.flow.raddr, p.flow.dport, p.flow.netns) && listed_then(v))
                        .filter(|v| fits(v, p.srcport))
                        .collect();
                    if old.len() == 1 {
                        (found, why) = (old, Some(BY_ELIMINATION));
                    }
                }
            }
            match why {
                Some(why) => {
                    out.push(Attributed {
                        xprt,
                        flow: p.flow,
                        mounts: found.iter().map(|v| v.mountpoint.clone()).collect(),
                        evidence: why,
                    });
                    done.push((xprt, found.iter().map(|v| key(v)).collect(), why));
                }
                None => {}
            }
        }
        for (xprt, mounts, why) in done {
            if why.is_empty() {
                self.pending.remove(&xprt);
            } else {
                self.learn(xprt, mounts, why, views);
            }
        }
        out.sort_by_key(|a| a.xprt);
        out
    }
}

#[cfg(test)]
mod tests;
