//! The tracker: a pure state machine from decoded events to observations.
//!
//! Per destination (local address, remote address, remote port) it keeps the
//! history of connect attempts and raises a reuse when a new attempt uses the
//! same source port as the previous attempt to that destination. It does no
//! I/O and knows no clock but the events' own timestamps, so it is tested with
//! synthetic sequences. State is bounded: destinations beyond the limit evict
//! the least recently active one.

use rustc_hash::{FxHashMap as FastMap, FxHashSet as FastSet};

use crate::{
    flow::Flow,
    kernel::decode::{Event, Kind},
};
pub use crate::flow::DestKey;

mod observation;
mod outcome;
#[cfg(test)]
mod tests;

pub use observation::{Attempt, Observation, Reuse, Stall, Who};
pub use outcome::{CloseHow, Outcome};

/// What the tracker knows of the previous attempt to a destination.
#[derive(Clone, Debug)]
struct Last {
    sk: u64,
    sport: u16,
    outcome: Outcome,
    end_ns: Option<u64>,
    streak: u32,
}

/// Per-destination aggregates for the summary.
#[derive(Clone, Debug, Default)]
pub struct DestStats {
    pub connects: u64,
    pub ports: FastSet<u16>,
    pub reuses: u64,
    pub failed: u64,
    pub max_syn_sent_ns: u64,
    pub syn_retransmits: u64,
    last: Option<Last>,
    last_active_ns: u64,
    stall: Option<Stall>,
}

impl DestStats {
    pub fn distinct_ports(&self) -> usize {
        self.ports.len()
    }
}

/// Bound on destinations kept (memory stays flat under churn).
pub const MAX_DESTINATIONS: usize = 4096;

/// Ended stalls kept for the summary.
pub const MAX_STALLS_KEPT: usize = 1024;

#[derive(Default)]
pub struct Tracker {
    dests: FastMap<DestKey, DestStats>,
    /// Stalls that ended, oldest first (bounded).
    pub stalls: Vec<Stall>,
    /// Destinations dropped to stay within the bound.
    pub evicted: u64,
    max_dests: usize,
}

impl Tracker {
    pub fn new() -> Self {
        Self::with_capacity(MAX_DESTINATIONS)
    }

    pub fn with_capacity(max_dests: usize) -> Self {
        Tracker { dests: FastMap::default(), stalls: Vec::new(), evicted: 0, max_dests: max_dests.max(1) }
    }

    /// Records a connection that was already established when tracing began
    /// (from sock_diag), so the first reconnect after start is judged
    /// against it: that reconnect is often the one an SRE is waiting for.
    pub fn seed(&mut self, flow: Flow) {
        let sport = flow.sport;
        let d = self.dest_mut(flow.dest());
        d.ports.insert(sport);
        d.last = Some(Last { sk: 0, sport, outcome: Outcome::Established, end_ns: None, streak: 0 });
    }

    /// Feeds one event; returns what it means, in order.
    pub fn on_event(&mut self, ev: &Event) -> Vec<Observation> {
        match ev.kind {
            Kind::ConnectDone => self.on_connect_done(ev),
            Kind::SynRetransmit => {
                // Counted into the summary when the attempt ends (the kernel's
                // own count rides on that record); here it is shown live.
                let who = Who::of(ev);
                let d = self.dest_mut(who.flow.dest());
                d.last_active_ns = ev.ts_ns;
                let mut out = vec![Observation::SynRetransmit {
                    who: who.clone(),
                    ts_ns: ev.ts_ns,
                    retransmits: ev.syn_retrans,
                    elapsed_ns: ev.ts_ns.saturating_sub(ev.start_ns),
                }];
                if d.stall.is_none()
                    && let Some(prev) = d.last.as_ref().filter(|l| l.sport == ev.flow.sport && ev.flow.sport != 0) {
                        d.stall = Some(Stall {
                            who: who.clone(),
                            start_ns: ev.start_ns,
                            last_ns: ev.ts_ns,
                            retransmits: 0,
                            failed_attempts: 0,
                            prev_end_ns: prev.end_ns,
                            end_ns: None,
                            end_sport: None,
                            kernel_said: Vec::new(),
                            retrans_done: 0,
                            reported_ns: 0,
                        });
                    }
                if let Some(st) = d.stall.as_mut() {
                    st.who = who;
                    st.last_ns = ev.ts_ns;
                    st.reported_ns = ev.ts_ns;
                    st.retransmits = st.retrans_done + ev.syn_retrans;
                    out.push(Observation::Stall { stall: st.clone(), ended: false });
                }
                out
            }
            Kind::Closed => self.on_closed(ev),
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
        let d = self.dest_mut(who.flow.dest());
        d.connects += 1;
        d.last_active_ns = ev.ts_ns;
        d.ports.insert(ev.flow.sport);
        d.max_syn_sent_ns = d.max_syn_sent_ns.max(syn_sent_ns);
        d.syn_retransmits += u64::from(ev.syn_retrans);
        if outcome.failed() {
            d.failed += 1;
        }
        let mut out = Vec::with_capacity(2);
        let reuse = match &d.last {
            Some(prev) if prev.sport == ev.flow.sport && ev.flow.sport != 0 => {
                let gap_ns = prev.end_ns.map(|e| ev.start_ns.saturating_sub(e));
                Some(Reuse {
                    who: who.clone(),
                    ts_ns: ev.ts_ns,
                    streak: prev.streak + 1,
                    prev_outcome: prev.outcome,
                    prev_end_ns: prev.end_ns,
                    gap_ns,
                })
            }
            _ => None,
        };
        let streak = reuse.as_ref().map_or(0, |r| r.streak);
        if reuse.is_some() {
            d.reuses += 1;
        }
        d.last = Some(Last {
            sk: ev.sk,
            sport: ev.flow.sport,
            outcome,
            // A failed attempt ends when it leaves SYN_SENT; an established
            // one when its CLOSE arrives.
            end_ns: outcome.failed().then_some(ev.ts_ns),
            streak,
        });
        out.push(Observation::Connect(Attempt {
            who,
            ts_ns: ev.ts_ns,
            outcome,
            errno: if outcome.failed() { ev.err } else { 0 },
            syn_sent_ns,
            syn_retrans: ev.syn_retrans,
            attempt: d.connects,
            reused: reuse.is_some(),
        }));
        if let Some(r) = reuse {
            out.push(Observation::Reuse(r));
        }
        let mut ended = None;
        if let Some(st) = d.stall.as_mut() {
            st.last_ns = ev.ts_ns;
            if outcome.failed() {
                // Another attempt lost; the stall goes on until one connects.
                st.retrans_done += ev.syn_retrans;
                st.retransmits = st.retrans_done;
                st.failed_attempts += 1;
            } else {
                st.retransmits = st.retrans_done + ev.syn_retrans;
                st.end_ns = Some(ev.ts_ns);
                st.end_sport = Some(ev.flow.sport);
                let st = d.stall.take().expect("checked above");
                out.push(Observation::Stall { stall: st.clone(), ended: true });
                ended = Some(st);
            }
        }
        if let Some(st) = ended {
            self.stalls.push(st);
            if self.stalls.len() > MAX_STALLS_KEPT {
                self.stalls.remove(0);
            }
        }
        out
    }

    /// A kernel log line about a server ("nfs: server X not responding"):
    /// joined to the stalls going on toward that server.
    pub fn on_kernel_line(&mut self, server: std::net::IpAddr, line: &str) -> bool {
        let mut joined = false;
        for d in self.dests.values_mut() {
            if let Some(st) = d.stall.as_mut().filter(|st| st.who.flow.raddr == server) {
                st.kernel_said.push(line.to_string());
                joined = true;
            }
        }
        joined
    }

    /// Another layer (the SunRPC transport) saw the flow from `sport` to
    /// `raddr:dport` end at `ts_ns`: where the TCP close was not seen (the
    /// connection predates the tracer, so its kernel state was never kept),
    /// this is when the flow that a reconnect may reuse ended.
    /// The local address is not compared: the transport's record may not
    /// carry it (no socket at the drop).
    pub fn on_flow_end(&mut self, flow: &Flow, ts_ns: u64) {
        for (k, d) in self.dests.iter_mut() {
            if k.raddr != flow.raddr || k.dport != flow.dport {
                continue;
            }
            if let Some(last) = d.last.as_mut().filter(|l| l.sport == flow.sport && l.end_ns.is_none() && !l.outcome.failed()) {
                last.end_ns = Some(ts_ns);
            }
        }
    }

    /// Stalls going on with nothing reported for `every_ns`: reported again
    /// as of `now_ns`. SYN retransmits back off to tens of seconds apart;
    /// someone watching a hung mount should still see it grow.
    pub fn tick(&mut self, now_ns: u64, every_ns: u64) -> Vec<Observation> {
        let mut out = Vec::new();
        for d in self.dests.values_mut() {
            if let Some(st) = d.stall.as_mut().filter(|st| now_ns >= st.reported_ns.saturating_add(every_ns)) {
                st.last_ns = st.last_ns.max(now_ns);
                st.reported_ns = now_ns;
                out.push(Observation::Stall { stall: st.clone(), ended: false });
            }
        }
        out
    }

    /// Stalls still going on (for the summary at exit).
    pub fn open_stalls(&self) -> Vec<&Stall> {
        self.dests.values().filter_map(|d| d.stall.as_ref()).collect()
    }

    fn on_closed(&mut self, ev: &Event) -> Vec<Observation> {
        let who = Who::of(ev);
        if let Some(d) = self.dests.get_mut(&who.flow.dest()) {
            d.last_active_ns = ev.ts_ns;
            if let Some(last) = d.last.as_mut().filter(|l| l.sk == ev.sk) {
                last.end_ns = Some(ev.ts_ns);
            }
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
