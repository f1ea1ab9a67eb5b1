//! The tracker: a pure state machine from decoded events to observations.
//!
//! A reuse is a property of a flow: a connect whose (local address, source
//! port, server address, server port) equals that of an earlier flow is a
//! reuse, whatever connected in between — an nconnect sibling, another mount
//! of the server, another process — because a stateful middlebox keys its
//! entry on exactly that. Flows are remembered in a bounded memory
//! (`flows`); destinations keep the per-server aggregates for the summary.
//! It does no I/O and knows no clock but the events' own timestamps, so it
//! is tested with synthetic sequences.
//!
//! Deliberate or chance: the same transport (both sockets owned by one
//! SunRPC xprt) reconnecting from its port is a rebind; two different
//! transports sharing a port are a chance repeat; where a transport is not
//! known for both (user-space sockets, connections from before the start)
//! a repeat within [`CHANCE_GAP_NS`] of the earlier flow's end is taken as
//! deliberate and a later one as chance. Chance repeats are reported
//! (`chance`) but not counted as reuses; both can stall.

use rustc_hash::{FxHashMap as FastMap, FxHashSet as FastSet};

use crate::{
    flow::Flow,
    kernel::decode::{Event, Kind},
};
pub use crate::flow::DestKey;

mod flows;
mod observation;
mod outcome;
#[cfg(test)]
mod tests;

use flows::{FlowMem, FlowMemory};
pub use flows::MAX_FLOWS;
pub use observation::{Attempt, Observation, Reuse, Stall, Who};
pub use outcome::{CloseHow, Outcome};

/// Beyond this gap a repeat of a flow with no common transport is taken as
/// chance: two minutes is the conntrack SYN_SENT timeout and twice Linux's
/// TIME_WAIT, after which an ephemeral port is free for anyone.
pub const CHANCE_GAP_NS: u64 = 120_000_000_000;

/// Per-destination aggregates for the summary.
#[derive(Clone, Debug, Default)]
pub struct DestStats {
    pub connects: u64,
    pub ports: FastSet<u16>,
    /// Connects that reused a flow deliberately (not by chance).
    pub reuses: u64,
    /// Connects that repeated a flow by chance.
    pub chance_reuses: u64,
    pub failed: u64,
    pub max_syn_sent_ns: u64,
    pub syn_retransmits: u64,
    last_active_ns: u64,
}

impl DestStats {
    pub fn distinct_ports(&self) -> usize {
        self.ports.len()
    }
}

/// Whether attempt `ev` (ending as `outcome`) collided in connect() with the
/// live connection `prev` of the same 4-tuple: the kernel lets two sockets
/// bind one port (SunRPC sets SO_REUSEADDR), but not connect the same
/// 4-tuple, and then moves the new socket from SYN_SENT straight back to
/// CLOSE with no error on the socket and no SYN sent. A live connection's
/// memory is one established and not yet ended, by another socket.
fn collides(prev: &FlowMem, ev: &Event, outcome: Outcome) -> bool {
    prev.end_ns.is_none()
        && prev.outcome == Outcome::Established
        && prev.sk != ev.sk
        && outcome == Outcome::Closed
        && ev.syn_retrans == 0
}

/// Bound on destinations kept (memory stays flat under churn).
pub const MAX_DESTINATIONS: usize = 4096;

/// Ended stalls kept for the summary.
pub const MAX_STALLS_KEPT: usize = 1024;

/// Stalls going on at once (each is a transport stuck in SYN_SENT).
const MAX_OPEN_STALLS: usize = 1024;

pub struct Tracker {
    dests: FastMap<DestKey, DestStats>,
    flows: FlowMemory,
    open: Vec<Stall>,
    /// Stalls that ended, oldest first (bounded).
    pub stalls: Vec<Stall>,
    /// Destinations dropped to stay within the bound.
    pub evicted: u64,
    max_dests: usize,
}

impl Default for Tracker {
    fn default() -> Self {
        Self::new()
    }
}

impl Tracker {
    pub fn new() -> Self {
        Self::with_capacity(MAX_DESTINATIONS, MAX_FLOWS)
    }

    pub fn with_capacity(max_dests: usize, max_flows: usize) -> Self {
        Tracker {
            dests: FastMap::default(),
            flows: FlowMemory::with_capacity(max_flows),
            open: Vec::new(),
            stalls: Vec::new(),
            evicted: 0,
            max_dests: max_dests.max(1),
        }
    }

    /// Flows remembered now, and forgotten so far to stay within the bound.
    pub fn flow_counts(&self) -> (usize, u64) {
        (self.flows.len(), self.flows.evicted)
    }

    /// Records a connection that was already established when tracing began
    /// (from sock_diag), so the first reconnect of its flow after start is
    /// judged against it: that reconnect is often the one an SRE waits for.
    pub fn seed(&mut self, flow: Flow) {
        self.dest_mut(flow.dest()).ports.insert(flow.sport);
        self.flows.insert(flow, FlowMem { sk: 0, xprt: 0, outcome: Outcome::Established, end_ns: None, streak: 0 });
    }

    /// The open stall `ev` belongs to: same socket, same transport, same
    /// flow, or — for sockets no transport owns — the same process retrying
    /// toward the same server.
    fn open_stall_of(&self, ev: &Event) -> Option<usize> {
        self.open.iter().position(|st| {
            st.who.sk == ev.sk
                || (ev.xprt != 0 && st.xprt == ev.xprt)
                || st.who.flow == ev.flow
                || (ev.xprt == 0 && st.xprt == 0 && st.who.task.pid == ev.task.pid && st.who.flow.dest() == ev.flow.dest())
        })
    }

    /// Feeds one event; returns what it means, in order.
    pub fn on_event(&mut self, ev: &Event) -> Vec<Observation> {
        match ev.kind {
            Kind::ConnectDone => self.on_connect_done(ev),
            Kind::SynRetransmit => {
                // Counted into the summary when the attempt ends (the kernel's
                // own count rides on that record); here it is shown live.
                let who = Who::of(ev);
                self.dest_mut(who.flow.dest()).last_active_ns = ev.ts_ns;
                let mut out = vec![Observation::SynRetransmit {
                    who: who.clone(),
                    ts_ns: ev.ts_ns,
                    retransmits: ev.syn_retrans,
                    elapsed_ns: ev.ts_ns.saturating_sub(ev.start_ns),
                }];
                let i = match self.open_stall_of(ev) {
                    Some(i) => Some(i),
                    // A new stall, `reused` when this flow was seen before.
                    // The remembered connect is an earlier one even when its
                    // socket address is the same (the kernel recycles `struct
                    // sock`, and a socket may connect again after a failed
                    // attempt). A new port's SYNs unanswered hang a mount
                    // too (issue 12): a stall, not a reuse.
                    None if ev.flow.sport != 0 && self.open.len() < MAX_OPEN_STALLS => {
                        let prev = self.flows.get(&ev.flow).map(|prev| prev.end_ns);
                        Some(prev).map(|prev| {
                            let (reused, prev_end_ns) = (prev.is_some(), prev.flatten());
                            self.open.push(Stall {
                                who: who.clone(),
                                start_ns: ev.start_ns,
                                last_ns: ev.ts_ns,
                                retransmits: 0,
                                failed_attempts: 0,
                                reused,
                                prev_end_ns,
                                end_ns: None,
                                end_sport: None,
                                kernel_said: Vec::new(),
                                siblings_connected: 0,
                                xprt: ev.xprt,
                                retrans_done: 0,
                                reported_ns: 0,
                            });
                            self.open.len() - 1
                        })
                    }
                    None => None,
                };
                if let Some(st) = i.map(|i| &mut self.open[i]) {
                    st.who = who;
                    st.last_ns = ev.ts_ns;
                    st.reported_ns = ev.ts_ns;
                    st.retransmits = st.retrans_done + ev.syn_retrans;
                    out.push(Observation::Stall { stall: st.clone(), ended: false });
                }
                out
            }
            Kind::Closed => self.on_closed(ev),
            Kind::DataRetransmit => {
                self.dest_mut(ev.flow.dest()).last_active_ns = ev.ts_ns;
                vec![Observation::Unanswered { who: Who::of(ev), ts_ns: ev.ts_ns, retransmits: ev.syn_retrans, since_ns: ev.syn_ns }]
            }
        }
    }

    fn dest_mut(&mut self, key: DestKey) -> &mut DestStats {
        if !self.dests.contains_key(&key) && self.dests.len() >= self.max_dests
            && let Some(oldest) = self.dests.iter().min_by_key(|(_, d)| d.last_active_ns).map(|(k, _)| *k) {
                self.dests.remove(&oldest);
                self.evicted += 1;
            }
        self.dests.entry(key).or_default()
    }

    fn on_connect_done(&mut self, ev: &Event) -> Vec<Observation> {
        let who = Who::of(ev);
        let outcome = Outcome::of(ev);
        let syn_sent_ns = ev.ts_ns.saturating_sub(ev.start_ns);
        let mut out = Vec::with_capacity(2);
        // connect() itself refused the 4-tuple: a live socket holds it (an
        // nconnect transport drew the port a sibling is connected from:
        // EADDRNOTAVAIL, seen on 6.12 and 7.2). No SYN left the host, so it
        // is a failed connect but no use of the flow, and must not replace
        // the live one in memory: the holder's next reconnect from that port
        // is still its own rebind, not a chance repeat of this attempt.
        let prev = self.flows.get(&ev.flow);
        let collided = prev.is_some_and(|prev| collides(prev, ev, outcome));
        let reuse = match prev {
            Some(prev) if ev.flow.sport != 0 && !collided => {
                let gap_ns = prev.end_ns.map(|e| ev.start_ns.saturating_sub(e));
                let chance = if prev.xprt != 0 && ev.xprt != 0 {
                    prev.xprt != ev.xprt
                } else {
                    gap_ns.is_some_and(|g| g >= CHANCE_GAP_NS)
                };
                Some(Reuse {
                    who: who.clone(),
                    ts_ns: ev.ts_ns,
                    streak: prev.streak + 1,
                    prev_outcome: prev.outcome,
                    prev_end_ns: prev.end_ns,
                    gap_ns,
                    chance,
                })
            }
            _ => None,
        };
        let d = self.dest_mut(who.flow.dest());
        d.connects += 1;
        d.last_active_ns = ev.ts_ns;
        d.ports.insert(ev.flow.sport);
        d.max_syn_sent_ns = d.max_syn_sent_ns.max(syn_sent_ns);
        d.syn_retransmits += u64::from(ev.syn_retrans);
        if outcome.failed() {
            d.failed += 1;
        }
        match &reuse {
            Some(r) if r.chance => d.chance_reuses += 1,
            Some(_) => d.reuses += 1,
            None => {}
        }
        let attempt = d.connects;
        if !collided {
            self.flows.insert(
                ev.flow,
                FlowMem {
                    sk: ev.sk,
                    xprt: ev.xprt,
                    outcome,
                    // A failed attempt ends when it leaves SYN_SENT; an established
                    // one when its CLOSE arrives.
                    end_ns: outcome.failed().then_some(ev.ts_ns),
                    streak: reuse.as_ref().map_or(0, |r| r.streak),
                },
            );
        }
        out.push(Observation::Connect(Attempt {
            who,
            ts_ns: ev.ts_ns,
            outcome,
            errno: if outcome.failed() { ev.err } else { 0 },
            syn_sent_ns,
            syn_retrans: ev.syn_retrans,
            attempt,
            reused: reuse.as_ref().is_some_and(|r| !r.chance),
        }));
        if let Some(r) = reuse {
            out.push(Observation::Reuse(r));
        }
        if collided {
            return out;
        }
        match self.open_stall_of(ev) {
            Some(i) if outcome.failed() => {
                // Another attempt lost; the stall goes on until one connects.
                let st = &mut self.open[i];
                st.last_ns = ev.ts_ns;
                st.retrans_done += ev.syn_retrans;
                st.retransmits = st.retrans_done;
                st.failed_attempts += 1;
            }
            Some(i) => {
                let mut st = self.open.swap_remove(i);
                st.last_ns = ev.ts_ns;
                st.retransmits = st.retrans_done + ev.syn_retrans;
                st.end_ns = Some(ev.ts_ns);
                st.end_sport = Some(ev.flow.sport);
                out.push(Observation::Stall { stall: st.clone(), ended: true });
                self.stalls.push(st);
                if self.stalls.len() > MAX_STALLS_KEPT {
                    self.stalls.remove(0);
                }
            }
            None if !outcome.failed() => {
                // Another flow to a stalled server got through: evidence that
                // the server and the path work and only that flow is dropped.
                for st in self.open.iter_mut().filter(|st| st.who.flow.dest() == ev.flow.dest()) {
                    st.siblings_connected += 1;
                }
            }
            None => {}
        }
        out
    }

    /// A kernel log line about a server ("nfs: server X not responding"):
    /// joined to the stalls going on toward that server.
    pub fn on_kernel_line(&mut self, server: std::net::IpAddr, line: &str) -> bool {
        let mut joined = false;
        for st in self.open.iter_mut().filter(|st| st.who.flow.raddr == server) {
            st.kernel_said.push(line.to_string());
            joined = true;
        }
        joined
    }

    /// Another layer (the SunRPC transport) saw the flow from `sport` to
    /// `raddr:dport` end at `ts_ns`: where the TCP close was not seen (the
    /// connection predates the tracer, so its kernel state was never kept),
    /// this is when the flow that a reconnect may reuse ended.
    /// The local address is not compared: the transport's record may not
    /// carry it (no socket at the drop). The namespace is: a transport in
    /// one container says nothing of another's flow with the same port.
    pub fn on_flow_end(&mut self, flow: &Flow, ts_ns: u64) {
        let open = |m: &FlowMem| m.end_ns.is_none() && !m.outcome.failed();
        if let Some(m) = self.flows.get_mut(flow).filter(|m| open(m)) {
            m.end_ns = Some(ts_ns);
            return;
        }
        for (f, m) in self.flows.iter_mut() {
            if f.raddr == flow.raddr && f.dport == flow.dport && f.sport == flow.sport && f.netns == flow.netns && open(m) {
                m.end_ns = Some(ts_ns);
            }
        }
    }

    /// Stalls going on with nothing reported for `every_ns`: reported again
    /// as of `now_ns`. SYN retransmits back off to tens of seconds apart;
    /// someone watching a hung mount should still see it grow.
    pub fn tick(&mut self, now_ns: u64, every_ns: u64) -> Vec<Observation> {
        let mut out = Vec::new();
        for st in self.open.iter_mut().filter(|st| now_ns >= st.reported_ns.saturating_add(every_ns)) {
            st.last_ns = st.last_ns.max(now_ns);
            st.reported_ns = now_ns;
            out.push(Observation::Stall { stall: st.clone(), ended: false });
        }
        out
    }

    /// Whether a stall is going on (cheaper than [`Self::open_stalls`]).
    pub fn has_open_stalls(&self) -> bool {
        !self.open.is_empty()
    }

    /// Stalls still going on (for the summary at exit).
    pub fn open_stalls(&self) -> Vec<&Stall> {
        self.open.iter().collect()
    }

    fn on_closed(&mut self, ev: &Event) -> Vec<Observation> {
        let who = Who::of(ev);
        if let Some(d) = self.dests.get_mut(&who.flow.dest()) {
            d.last_active_ns = ev.ts_ns;
        }
        // Its own socket's close, or that of a connection up before start
        // (a seed, socket unknown): the flow ended then.
        if let Some(m) = self.flows.get_mut(&ev.flow).filter(|m| m.sk == ev.sk || m.sk == 0) {
            m.end_ns = Some(ev.ts_ns);
        }
        let since = if ev.established_ns != 0 { ev.established_ns } else { ev.start_ns };
        vec![Observation::Close {
            who,
            ts_ns: ev.ts_ns,
            how: CloseHow::of(ev),
            errno: ev.err,
            lifetime_ns: ev.ts_ns.saturating_sub(since),
        }]
    }

    /// Destinations, sorted for stable output.
    pub fn destinations(&self) -> Vec<(DestKey, &DestStats)> {
        let mut v: Vec<_> = self.dests.iter().map(|(k, d)| (*k, d)).collect();
        v.sort_by_key(|(k, _)| *k);
        v
    }
}
