//! The tracker: a pure state machine from decoded events to observations.
//!
//! Per destination (local address, remote address, remote port) it keeps the
//! history of connect attempts and raises a reuse when a new attempt uses the
//! same source port as the previous attempt to that destination. It does no
//! I/O and knows no clock but the events' own timestamps, so it is tested with
//! synthetic sequences. State is bounded: destinations beyond the limit evict
//! the least recently active one.

use nfs_trace_common::tcp_state;

use rustc_hash::{FxHashMap as FastMap, FxHashSet as FastSet};

use crate::kernel::decode::{Event, Kind};
pub use crate::flow::DestKey;
use crate::flow::{Flow, Task};

/// How a connect attempt ended (left SYN_SENT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Established,
    /// The peer answered RST (ECONNREFUSED).
    Refused,
    /// SYN retries ran out (ETIMEDOUT).
    TimedOut,
    /// Reset while connecting (ECONNRESET; also a local disconnect).
    Reset,
    /// Killed locally, e.g. `ss -K` (ECONNABORTED).
    Aborted,
    /// Its owner closed it before any answer.
    Closed,
    /// Another error (ICMP unreachable...).
    Error(i32),
}

impl Outcome {
    pub fn of(ev: &Event) -> Self {
        if ev.newstate == tcp_state::ESTABLISHED {
            return Outcome::Established;
        }
        match ev.err {
            0 => Outcome::Closed,
            libc::ECONNREFUSED => Outcome::Refused,
            libc::ETIMEDOUT => Outcome::TimedOut,
            libc::ECONNRESET => Outcome::Reset,
            libc::ECONNABORTED => Outcome::Aborted,
            e => Outcome::Error(e),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Established => "established",
            Outcome::Refused => "refused",
            Outcome::TimedOut => "timed_out",
            Outcome::Reset => "reset",
            Outcome::Aborted => "aborted",
            Outcome::Closed => "closed",
            Outcome::Error(_) => "error",
        }
    }

    pub fn failed(&self) -> bool {
        *self != Outcome::Established
    }
}

/// How an established connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseHow {
    /// We sent FIN first.
    LocalClose,
    /// We dropped it without a FIN (RST via SO_LINGER 0, or a disconnect).
    LocalAbort,
    /// The peer sent FIN first.
    RemoteClose,
    /// RST from the peer (ECONNRESET).
    Reset,
    /// Killed locally, e.g. `ss -K` (ECONNABORTED).
    Aborted,
    /// Retransmissions ran out (ETIMEDOUT).
    TimedOut,
    Error(i32),
}

impl CloseHow {
    pub fn of(ev: &Event) -> Self {
        match ev.first_exit {
            tcp_state::FIN_WAIT1 => CloseHow::LocalClose,
            tcp_state::CLOSE_WAIT => CloseHow::RemoteClose,
            _ => match ev.err {
                // Straight to CLOSE with no error: our own abortive close
                // (SO_LINGER 0 / tcp_disconnect set sk_err only after).
                0 => CloseHow::LocalAbort,
                libc::ECONNRESET => CloseHow::Reset,
                libc::ECONNABORTED => CloseHow::Aborted,
                libc::ETIMEDOUT => CloseHow::TimedOut,
                e => CloseHow::Error(e),
            },
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            CloseHow::LocalClose => "local_close",
            CloseHow::LocalAbort => "local_abort",
            CloseHow::RemoteClose => "remote_close",
            CloseHow::Reset => "reset",
            CloseHow::Aborted => "aborted",
            CloseHow::TimedOut => "timed_out",
            CloseHow::Error(_) => "error",
        }
    }
}

/// Identity of a socket as shown to people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Who {
    pub sk: u64,
    pub task: Task,
    pub flow: Flow,
}

impl Who {
    fn of(ev: &Event) -> Self {
        Who { sk: ev.sk, task: ev.task.clone(), flow: ev.flow }
    }
}

/// A connect attempt that left SYN_SENT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    pub who: Who,
    pub ts_ns: u64,
    pub outcome: Outcome,
    pub errno: i32,
    pub syn_sent_ns: u64,
    pub syn_retrans: u32,
    /// 1-based count of attempts to this destination.
    pub attempt: u64,
    pub reused: bool,
}

/// A new attempt used the same source port as the previous one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reuse {
    pub who: Who,
    pub ts_ns: u64,
    /// Attempts in a row from this port (1 = the second use).
    pub streak: u32,
    pub prev_outcome: Outcome,
    /// When the previous connection to this destination ended (CLOSE, or
    /// leaving SYN_SENT for a failed attempt); None if not seen.
    pub prev_end_ns: Option<u64>,
    /// From that end to this attempt's start.
    pub gap_ns: Option<u64>,
}

/// A stall: connects to a destination stuck in SYN_SENT, retransmitting
/// SYNs, that began from the source port its previous connection used (what
/// a middlebox still holding the old flow does to a reconnect). It lasts
/// until a connect to that destination is established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stall {
    pub who: Who,
    /// SYN_SENT start of the first stalled attempt.
    pub start_ns: u64,
    /// The latest event of the episode.
    pub last_ns: u64,
    /// SYN retransmits over all its attempts so far.
    pub retransmits: u32,
    /// Attempts that ended without a connection.
    pub failed_attempts: u32,
    /// When the flow whose port was reused ended, if seen.
    pub prev_end_ns: Option<u64>,
    /// Set when it ended: the time and the port that finally connected.
    pub end_ns: Option<u64>,
    pub end_sport: Option<u16>,
    /// Lines the kernel logged meanwhile ("nfs: server … not responding").
    pub kernel_said: Vec<String>,
    retrans_done: u32,
    /// When it was last reported live (an event or a [`Tracker::tick`]).
    reported_ns: u64,
}

impl Stall {
    pub fn duration_ns(&self) -> u64 {
        self.end_ns.unwrap_or(self.last_ns).saturating_sub(self.start_ns)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observation {
    Connect(Attempt),
    Reuse(Reuse),
    /// A stall goes on (`ended` false, at each SYN retransmit) or ended.
    Stall { stall: Stall, ended: bool },
    SynRetransmit { who: Who, ts_ns: u64, retransmits: u32, elapsed_ns: u64 },
    Close { who: Who, ts_ns: u64, how: CloseHow, errno: i32, lifetime_ns: u64 },
}

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

#[cfg(test)]
mod tests {
    use nfs_trace_common::tcp_state::{CLOSE, CLOSE_WAIT, ESTABLISHED, FIN_WAIT1, SYN_SENT};

    use super::*;
    use std::net::IpAddr;
    use crate::flow::{Flow, Task};

    const MS: u64 = 1_000_000;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A synthetic event: `sk` socket from laddr:sport to raddr:dport.
    fn ev(kind: Kind, ts_ms: u64, sk: u64, l: &str, sport: u16, r: &str, dport: u16) -> Event {
        Event {
            kind,
            ts_ns: ts_ms * MS,
            sk,
            task: Task { pid: 42, comm: "kworker".into() },
            flow: Flow { laddr: ip(l), sport, raddr: ip(r), dport },
            start_ns: ts_ms.saturating_sub(1) * MS,
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

    fn connected(ts: u64, sk: u64, sport: u16) -> Event {
        ev(Kind::ConnectDone, ts, sk, "10.0.0.2", sport, "10.0.0.1", 2049)
    }

    fn closed(ts: u64, sk: u64, sport: u16, first_exit: u8, err: i32) -> Event {
        let mut e = ev(Kind::Closed, ts, sk, "10.0.0.2", sport, "10.0.0.1", 2049);
        e.oldstate = first_exit;
        e.newstate = CLOSE;
        e.first_exit = first_exit;
        e.err = err;
        e.established_ns = ts.saturating_sub(50) * MS;
        e
    }

    fn failed(ts: u64, sk: u64, sport: u16, err: i32) -> Event {
        let mut e = connected(ts, sk, sport);
        e.newstate = CLOSE;
        e.err = err;
        e
    }

    fn reuses(obs: &[Observation]) -> Vec<&Reuse> {
        obs.iter()
            .filter_map(|o| match o {
                Observation::Reuse(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    fn run(t: &mut Tracker, evs: &[Event]) -> Vec<Observation> {
        evs.iter().flat_map(|e| t.on_event(e)).collect()
    }

    #[test]
    fn same_port_after_close_is_a_reuse_with_gap_and_streak() {
        let mut t = Tracker::new();
        let obs = run(
            &mut t,
            &[
                connected(100, 1, 999),
                closed(200, 1, 999, CLOSE, libc::ECONNABORTED),
                connected(250, 2, 999),
                closed(300, 2, 999, CLOSE, libc::ECONNABORTED),
                connected(400, 3, 999),
            ],
        );
        let r = reuses(&obs);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].who.flow.sport, 999);
        assert_eq!(r[0].streak, 1);
        assert_eq!(r[0].prev_end_ns, Some(200 * MS));
        // The second attempt started at 249 ms (start = ts - 1 ms).
        assert_eq!(r[0].gap_ns, Some(49 * MS));
        assert_eq!(r[1].streak, 2);
        assert_eq!(r[1].prev_outcome, Outcome::Established);
        let (_, d) = t.destinations()[0];
        assert_eq!((d.connects, d.reuses, d.distinct_ports(), d.failed), (3, 2, 1, 0));
    }

    #[test]
    fn new_port_each_time_is_no_reuse() {
        let mut t = Tracker::new();
        let obs = run(
            &mut t,
            &[connected(1, 1, 40000), closed(2, 1, 40000, FIN_WAIT1, 0), connected(3, 2, 40002), connected(4, 3, 40004)],
        );
        assert!(reuses(&obs).is_empty());
        let (_, d) = t.destinations()[0];
        assert_eq!((d.connects, d.reuses, d.distinct_ports()), (3, 0, 3));
    }

    #[test]
    fn a_port_used_earlier_but_not_by_the_previous_attempt_is_no_reuse() {
        let mut t = Tracker::new();
        let obs = run(&mut t, &[connected(1, 1, 800), connected(2, 2, 801), connected(3, 3, 800)]);
        assert!(reuses(&obs).is_empty(), "only the previous attempt counts");
    }

    #[test]
    fn streak_resets_after_a_new_port() {
        let mut t = Tracker::new();
        let obs = run(
            &mut t,
            &[connected(1, 1, 700), connected(2, 2, 700), connected(3, 3, 701), connected(4, 4, 701)],
        );
        let r = reuses(&obs);
        assert_eq!(r.iter().map(|r| (r.who.flow.sport, r.streak)).collect::<Vec<_>>(), vec![(700, 1), (701, 1)]);
    }

    #[test]
    fn interleaved_destinations_are_tracked_apart() {
        let mut t = Tracker::new();
        let a = |ts, sk, sport| ev(Kind::ConnectDone, ts, sk, "10.0.0.2", sport, "10.0.0.1", 2049);
        let b = |ts, sk, sport| ev(Kind::ConnectDone, ts, sk, "10.0.0.2", sport, "10.0.0.9", 2049);
        let c = |ts, sk, sport| ev(Kind::ConnectDone, ts, sk, "10.0.0.2", sport, "10.0.0.1", 20049);
        let obs = run(&mut t, &[a(1, 1, 900), b(2, 2, 900), c(3, 3, 900), a(4, 4, 900), b(5, 5, 901), c(6, 6, 900)]);
        let r = reuses(&obs);
        let dests: Vec<_> = r.iter().map(|r| (r.who.flow.raddr, r.who.flow.dport)).collect();
        assert_eq!(dests, vec![(ip("10.0.0.1"), 2049), (ip("10.0.0.1"), 20049)]);
        assert_eq!(t.destinations().len(), 3);
    }

    #[test]
    fn ipv6_destinations() {
        let mut t = Tracker::new();
        let v6 = |ts, sk, sport| ev(Kind::ConnectDone, ts, sk, "fd00::2", sport, "fd00::1", 2049);
        let obs = run(&mut t, &[v6(1, 1, 1001), v6(2, 2, 1001)]);
        let r = reuses(&obs);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].who.flow.raddr, ip("fd00::1"));
        assert_eq!(r[0].gap_ns, None, "the previous connection's close was not seen");
    }

    #[test]
    fn failures_are_classified_and_count_as_previous_attempts() {
        let mut t = Tracker::new();
        let mut timed_out = failed(3000, 2, 999, libc::ETIMEDOUT);
        timed_out.syn_retrans = 3;
        timed_out.start_ns = 1000 * MS;
        let obs = run(
            &mut t,
            &[
                failed(10, 1, 999, libc::ECONNREFUSED),
                timed_out,
                failed(3100, 3, 998, 0),
                failed(3200, 4, 997, libc::ECONNRESET),
                failed(3300, 5, 996, libc::EHOSTUNREACH),
            ],
        );
        let outcomes: Vec<_> = obs
            .iter()
            .filter_map(|o| match o {
                Observation::Connect(a) => Some(a.outcome),
                _ => None,
            })
            .collect();
        assert_eq!(
            outcomes,
            vec![Outcome::Refused, Outcome::TimedOut, Outcome::Closed, Outcome::Reset, Outcome::Error(libc::EHOSTUNREACH)]
        );
        // The timed-out attempt reused the refused one's port; its gap runs from
        // the refusal (10 ms) to its own start (1000 ms).
        let r = reuses(&obs);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].prev_outcome, Outcome::Refused);
        assert_eq!(r[0].gap_ns, Some(990 * MS));
        let (_, d) = t.destinations()[0];
        assert_eq!(d.failed, 5);
        assert_eq!(d.max_syn_sent_ns, 2000 * MS);
        assert_eq!(d.syn_retransmits, 3, "the kernel's count from the finished attempt");
    }

    #[test]
    fn close_reasons() {
        let mut t = Tracker::new();
        let how = |t: &mut Tracker, e: Event| match t.on_event(&e).pop() {
            Some(Observation::Close { how, .. }) => how,
            o => panic!("want a close, got {o:?}"),
        };
        assert_eq!(how(&mut t, closed(10, 1, 1, FIN_WAIT1, 0)), CloseHow::LocalClose);
        assert_eq!(how(&mut t, closed(10, 1, 1, CLOSE_WAIT, 0)), CloseHow::RemoteClose);
        assert_eq!(how(&mut t, closed(10, 1, 1, CLOSE, 0)), CloseHow::LocalAbort);
        assert_eq!(how(&mut t, closed(10, 1, 1, CLOSE, libc::ECONNRESET)), CloseHow::Reset);
        assert_eq!(how(&mut t, closed(10, 1, 1, CLOSE, libc::ECONNABORTED)), CloseHow::Aborted);
        assert_eq!(how(&mut t, closed(10, 1, 1, CLOSE, libc::ETIMEDOUT)), CloseHow::TimedOut);
    }

    #[test]
    fn syn_retransmits_are_reported_live() {
        let mut t = Tracker::new();
        let mut e = ev(Kind::SynRetransmit, 2000, 7, "10.0.0.2", 999, "10.0.0.1", 2049);
        e.start_ns = 1000 * MS;
        e.syn_retrans = 2;
        match t.on_event(&e).as_slice() {
            [Observation::SynRetransmit { retransmits: 2, elapsed_ns, who, .. }] => {
                assert_eq!(*elapsed_ns, 1000 * MS);
                assert_eq!(who.flow.sport, 999);
            }
            o => panic!("unexpected {o:?}"),
        }
    }

    #[test]
    fn a_connection_seen_at_start_is_the_previous_one() {
        let mut t = Tracker::new();
        let dest = DestKey { laddr: ip("10.0.0.2"), raddr: ip("10.0.0.1"), dport: 2049 };
        t.seed(Flow { laddr: dest.laddr, sport: 966, raddr: dest.raddr, dport: dest.dport });
        let obs = run(&mut t, &[connected(10, 1, 966), connected(20, 2, 966)]);
        let r = reuses(&obs);
        assert_eq!(r.len(), 2, "the first connect after start reuses the seeded port");
        assert_eq!((r[0].streak, r[0].gap_ns), (1, None));
        assert_eq!(r[1].streak, 2);
        let (_, d) = t.destinations()[0];
        assert_eq!(d.connects, 2, "the seed is no connect of this run");
    }

    fn retransmit(ts_ms: u64, sk: u64, sport: u16, start_ms: u64, n: u32) -> Event {
        let mut e = ev(Kind::SynRetransmit, ts_ms, sk, "10.0.0.2", sport, "10.0.0.1", 2049);
        e.start_ns = start_ms * MS;
        e.syn_retrans = n;
        e.newstate = SYN_SENT;
        e
    }

    fn stalls(obs: &[Observation]) -> Vec<(&Stall, bool)> {
        obs.iter()
            .filter_map(|o| match o {
                Observation::Stall { stall, ended } => Some((stall, *ended)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_reused_port_stuck_in_syn_sent_is_a_stall_until_a_connect_succeeds() {
        let mut t = Tracker::new();
        let mut timed_out = failed(8_000, 2, 999, libc::ETIMEDOUT);
        timed_out.start_ns = 1_000 * MS;
        timed_out.syn_retrans = 3;
        let mut ok = connected(12_500, 3, 999);
        ok.start_ns = 9_000 * MS;
        ok.syn_retrans = 2;
        let obs = run(
            &mut t,
            &[
                connected(100, 1, 999),
                closed(900, 1, 999, CLOSE, libc::ECONNABORTED),
                retransmit(2_000, 2, 999, 1_000, 1),
                retransmit(4_000, 2, 999, 1_000, 2),
                retransmit(8_000, 2, 999, 1_000, 3),
                timed_out,
                retransmit(10_000, 3, 999, 9_000, 1),
                retransmit(12_000, 3, 999, 9_000, 2),
                ok,
            ],
        );
        let s = stalls(&obs);
        assert_eq!(s.len(), 6, "one live update per retransmit, then the end");
        assert!(s[..5].iter().all(|(_, ended)| !ended));
        assert_eq!(s[0].0.retransmits, 1);
        assert_eq!(s[0].0.prev_end_ns, Some(900 * MS));
        assert_eq!(s[3].0.retransmits, 4, "3 of the lost attempt + 1");
        let (end, ended) = s[5];
        assert!(ended);
        assert_eq!(end.start_ns, 1_000 * MS);
        assert_eq!(end.duration_ns(), 11_500 * MS);
        assert_eq!((end.retransmits, end.failed_attempts, end.end_sport), (5, 1, Some(999)));
        assert_eq!(t.stalls.len(), 1);
        assert!(t.open_stalls().is_empty());
    }

    #[test]
    fn a_flow_end_seen_by_another_layer_dates_the_reused_flow() {
        // Seeded (connected before the tracer), its close seen only by SunRPC.
        let mut t = Tracker::new();
        let dest = DestKey { laddr: "10.0.0.2".parse().unwrap(), raddr: "10.0.0.1".parse().unwrap(), dport: 2049 };
        t.seed(Flow { laddr: dest.laddr, sport: 999, raddr: dest.raddr, dport: dest.dport });
        t.on_flow_end(&Flow { laddr: ip("10.0.0.2"), sport: 999, raddr: ip("10.0.0.9"), dport: 2049 }, 500_000_000); // another server: ignored
        t.on_flow_end(&Flow { laddr: ip("10.0.0.2"), sport: 998, raddr: ip("10.0.0.1"), dport: 2049 }, 500_000_000); // another port: ignored
        t.on_flow_end(&Flow { laddr: ip("10.0.0.2"), sport: 999, raddr: ip("10.0.0.1"), dport: 2049 }, 1_000_000_000);
        t.on_flow_end(&Flow { laddr: ip("10.0.0.2"), sport: 999, raddr: ip("10.0.0.1"), dport: 2049 }, 1_500_000_000); // the first end stands
        let obs = t.on_event(&retransmit(3000, 8, 999, 2000, 1));
        let s = stalls(&obs);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].0.prev_end_ns, Some(1_000_000_000));
    }

    #[test]
    fn a_quiet_stall_is_reported_again_on_ticks() {
        let mut t = Tracker::new();
        t.on_event(&connected(1_000, 7, 999));
        t.on_event(&retransmit(3_000, 8, 999, 2_000, 1));
        assert!(t.tick(5_000_000_000, 5_000_000_000).is_empty(), "reported at 3 s: not yet");
        let obs = t.tick(8_000_000_000, 5_000_000_000);
        let s = stalls(&obs);
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].0.duration_ns(), s[0].1), (6_000_000_000, false));
        assert!(t.tick(9_000_000_000, 5_000_000_000).is_empty());
        // The connect that ends it: the duration runs to the connect, not the tick.
        let mut done = connected(10_000, 8, 999);
        done.start_ns = 2_000 * MS;
        let obs = t.on_event(&done);
        let s = stalls(&obs);
        assert_eq!((s[0].0.duration_ns(), s[0].1), (8_000_000_000, true));
        assert!(t.tick(30_000_000_000, 5_000_000_000).is_empty(), "no stall left to report");
    }

    #[test]
    fn retransmits_from_a_new_port_are_no_stall() {
        let mut t = Tracker::new();
        let obs = run(&mut t, &[connected(100, 1, 999), retransmit(2_000, 2, 1000, 1_000, 1), connected(2_500, 2, 1000)]);
        assert!(stalls(&obs).is_empty());
        assert!(t.stalls.is_empty());
    }

    #[test]
    fn kernel_lines_join_the_stall_toward_their_server() {
        let mut t = Tracker::new();
        run(&mut t, &[connected(100, 1, 999), retransmit(2_000, 2, 999, 1_000, 1)]);
        assert!(t.on_kernel_line(ip("10.0.0.1"), "nfs: server 10.0.0.1 not responding, still trying"));
        assert!(!t.on_kernel_line(ip("10.9.9.9"), "nfs: server 10.9.9.9 not responding"));
        assert_eq!(t.open_stalls()[0].kernel_said.len(), 1);
    }

    #[test]
    fn destinations_are_bounded() {
        let mut t = Tracker::with_capacity(3);
        for i in 0..10u64 {
            let e = ev(Kind::ConnectDone, 10 + i, i, "10.0.0.2", 1000, &format!("10.0.1.{i}"), 2049);
            t.on_event(&e);
        }
        assert_eq!(t.destinations().len(), 3);
        assert_eq!(t.evicted, 7);
        // The most recent ones stay.
        assert!(t.destinations().iter().any(|(k, _)| k.raddr == ip("10.0.1.9")));
    }
}
