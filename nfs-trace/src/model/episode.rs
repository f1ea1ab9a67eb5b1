//! Episodes (issue 12): every hang toward a server, from its first symptom
//! to recovery, in phases with times, and a verdict its evidence proves.
//!
//! An episode belongs to a SunRPC transport (its `rpc_xprt`), or, for a
//! socket no transport owns, to its destination and process. It opens at the
//! first symptom: a transport dropped by an error, a transport's socket
//! closed by a reset, a timeout or an error, or a stall (a connect stuck in
//! SYN_SENT — from a reused port or a new one). Its phases:
//!
//! - (a) `unanswered`: the established flow stops being answered: its data
//!   retransmitted without ACK progress for over a second (the kernel
//!   program reports each such retransmit), or its RPCs reach major
//!   timeouts (`rpc_timeout_status`; where that hook cannot attach, the
//!   kernel's "not responding" line for the server, counted on each of its
//!   connected transports). An episode that is only phase (a) ends at the
//!   kernel's "server … OK" after RPC timeouts, or when every signal it
//!   had stopped for longer than its own rhythm allows (ACKs or replies
//!   came back).
//! - (b) `closed`: how the transport's connection went away (user timeout,
//!   reset, local, server closed, error) and when.
//! - (c) `reconnect`: the attempts after it — ports, SYN retransmits, failed
//!   attempts, other flows to the server that connected meanwhile, and the
//!   canary's result.
//! - (d) `recovered`: the transport connected again (the kernel's "server …
//!   OK" line is joined when it prints one).
//!
//! It ends at recovery (or when its transport is destroyed), or is reported
//! ongoing at ticks and in the summary. The verdict is in `judge`. Pure: no
//! I/O and no clock but the observations' own timestamps.
use std::net::IpAddr;

use rustc_hash::FxHashMap as FastMap;

use crate::{
    flow::{DestKey, Flow},
    model::canary::CanaryResult,
    model::tcp::{CloseHow, Observation, Outcome, Stall, Who},
    model::xprt::{DropReason, XprtObservation},
};

mod judge;
#[cfg(test)]
mod tests;

pub use judge::{VerdictName, advice, judge};

/// Episodes going on at once, and ended ones kept for the summary.
pub const MAX_OPEN_EPISODES: usize = 1024;
pub const MAX_ENDED_KEPT: usize = 1024;
/// Closes remembered per flow, to date phase (b) of an episode opened later
/// by a stall of that flow (the close itself was no symptom: e.g. `ss -K`).
const MAX_CLOSES_KEPT: usize = 4096;
/// Kernel lines an ended episode takes (its "server … OK").
const MAX_LINES_AFTER: usize = 16;

/// Phase (a): the established flow not answered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unanswered {
    /// The run's first data retransmit.
    pub start_ns: u64,
    /// Data retransmits without ACK progress on the established flow.
    pub data_retransmits: u32,
    /// RPC major timeouts of the transport (each one the kernel's "not
    /// responding" moment).
    pub rpc_timeouts: u32,
    /// The latest retransmit reported, and the gap before it (0 with no
    /// data retransmit).
    pub last_ns: u64,
    pub gap_ns: u64,
    /// The first and latest RPC timeout, and the gap before the latest
    /// (0 with fewer than two).
    pub rpc_first_ns: u64,
    pub rpc_last_ns: u64,
    pub rpc_gap_ns: u64,
}

/// With one RPC timeout seen and no "server … OK", how long before the
/// episode is taken as answered: the next major timeout comes after
/// timeo × (retrans + 1), 180 s at the common timeo=600,retrans=2.
const RPC_QUIET_ONE_NS: u64 = 600_000_000_000;
/// An RPC timeout this soon after its transport's episode ended belongs to
/// that episode (seen in the 6.12 blackhole-v3 lab: one fired 0.1 s after
/// the reconnect, then "server … OK") — if its RPC was made before the
/// episode ended, where the kernel says when it was made: in the 6.12
/// server-silent-v3 lab the mount's own connect stalled 1 s on a port the
/// previous scenario had black-holed, and the frozen export's first RPC
/// timeout, of a write made after that, was taken into that ended episode.
const RPC_AFTER_END_NS: u64 = 60_000_000_000;

impl Unanswered {
    /// How long without another retransmit means the ACKs came back: RTO
    /// backoff at most doubles the gap (and caps it at 120 s), so three
    /// gaps' silence is an answer.
    fn quiet_limit_ns(&self) -> u64 {
        (3 * self.gap_ns).clamp(3_000_000_000, 130_000_000_000)
    }

    /// Likewise for RPC major timeouts: they come at a steady rhythm (the
    /// timeout restarts at timeo after each major one), so three of their
    /// gaps without one is an answer.
    fn rpc_quiet_limit_ns(&self) -> u64 {
        if self.rpc_gap_ns == 0 { RPC_QUIET_ONE_NS } else { (3 * self.rpc_gap_ns).clamp(10_000_000_000, 1_200_000_000_000) }
    }

    /// One RPC major timeout at `ts_ns`: the first dates the RPC signal,
    /// later ones its rhythm.
    fn add_rpc_timeout(&mut self, ts_ns: u64) {
        if self.rpc_timeouts == 0 {
            self.rpc_first_ns = ts_ns;
        } else {
            self.rpc_gap_ns = ts_ns.saturating_sub(self.rpc_last_ns);
        }
        self.rpc_timeouts += 1;
        self.rpc_last_ns = ts_ns;
    }

    /// Every signal it had has stopped for longer than its rhythm allows.
    fn quiet_at(&self, now_ns: u64) -> bool {
        let data = self.data_retransmits == 0 || now_ns.saturating_sub(self.last_ns) > self.quiet_limit_ns();
        let rpc = self.rpc_timeouts == 0 || now_ns.saturating_sub(self.rpc_last_ns) > self.rpc_quiet_limit_ns();
        data && rpc
    }

    /// The latest signal.
    fn latest_ns(&self) -> u64 {
        let d = if self.data_retransmits > 0 { self.last_ns } else { 0 };
        let r = if self.rpc_timeouts > 0 { self.rpc_last_ns } else { 0 };
        d.max(r)
    }
}

/// Why phase (a) is absent.
pub const UNANSWERED_NOT_OBSERVED: &str =
    "not observed: no data retransmit without ACK progress and no RPC timeout was seen on the flow";

/// Phase (b): how the connection went away.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Closed {
    pub ts_ns: u64,
    /// "user_timeout", "reset", "local", "server_closed" or "error".
    pub how: &'static str,
    /// The errno, where one was given (positive).
    pub errno: Option<i32>,
    /// The source port of the flow that went away.
    pub sport: u16,
}

/// Phase (c): the reconnect attempts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reconnect {
    /// SYN_SENT start of the first attempt seen.
    pub start_ns: u64,
    /// Source ports tried, in order.
    pub ports: Vec<u16>,
    pub syn_retransmits: u32,
    pub failed_attempts: u32,
    /// An attempt was stuck in SYN_SENT (a stall).
    pub stalled: bool,
    /// The stalled flow was seen before: its port was reused.
    pub reused: bool,
    /// When the stall began (SYN_SENT start of its first attempt), and
    /// the port stuck.
    pub stall_start_ns: Option<u64>,
    pub stalled_sport: Option<u16>,
    /// Connects to the same server from other flows that succeeded meanwhile.
    pub siblings_connected: u32,
    pub canary: Option<CanaryResult>,
}

/// Phase (d): connected again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered {
    pub ts_ns: u64,
    pub sport: u16,
}

/// What opened it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Symptom {
    /// The transport dropped by an error (SunRPC).
    Drop,
    /// The transport's socket closed by a reset, timeout or error.
    Close,
    /// A connect stuck in SYN_SENT.
    Stall,
    /// The established flow's data retransmitted without an ACK.
    Unanswered,
    /// An RPC of the transport reached a major timeout.
    RpcTimeout,
}

impl Symptom {
    pub fn name(self) -> &'static str {
        match self {
            Symptom::Drop => "transport_drop",
            Symptom::Close => "close",
            Symptom::Stall => "stall",
            Symptom::Unanswered => "unanswered",
            Symptom::RpcTimeout => "rpc_timeout",
        }
    }

    /// For people: "opened by {this}".
    pub fn describe(self) -> &'static str {
        match self {
            Symptom::Drop => "a transport drop",
            Symptom::Close => "a close",
            Symptom::Stall => "a stall",
            Symptom::Unanswered => "data unanswered",
            Symptom::RpcTimeout => "an RPC timeout",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Episode {
    /// 1-based, in the order they opened.
    pub id: u64,
    /// The transport (0: a socket no transport owns).
    pub xprt: u64,
    /// The flow it is about: the one that went away, then the one stuck.
    pub flow: Flow,
    pub pid: u32,
    pub opened_by: Symptom,
    pub start_ns: u64,
    /// The latest event of the episode.
    pub last_ns: u64,
    pub unanswered: Option<Unanswered>,
    pub closed: Option<Closed>,
    pub reconnect: Option<Reconnect>,
    pub recovered: Option<Recovered>,
    /// Ended without recovery: its transport was destroyed, or (a socket
    /// no transport owns) its socket closed before any reconnect.
    pub destroyed: bool,
    /// The kernel's lines meanwhile ("not responding", "OK").
    pub kernel_said: Vec<String>,
    /// Why no canary was made (e.g. "--passive"); None: canaries are made.
    pub canary_off: Option<&'static str>,
    /// Data retransmits were traced while it went on (see the tracker's).
    pub retransmits_traced: bool,
    pub verdict: VerdictName,
    /// One sentence: the facts the verdict rests on, or what was missing.
    pub evidence: String,
    reported_ns: u64,
}

impl Episode {
    pub fn dest(&self) -> DestKey {
        self.flow.dest()
    }

    pub fn end_ns(&self) -> Option<u64> {
        self.recovered.as_ref().map(|r| r.ts_ns).or(self.destroyed.then_some(self.last_ns))
    }

    pub fn duration_ns(&self) -> u64 {
        self.end_ns().unwrap_or(self.last_ns).saturating_sub(self.start_ns)
    }

    pub fn ended(&self) -> bool {
        self.end_ns().is_some()
    }

    fn rejudge(&mut self) -> bool {
        let (v, e) = judge(self);
        let changed = v != self.verdict;
        self.verdict = v;
        self.evidence = e;
        changed
    }

    fn reconnect(&mut self, start_ns: u64) -> &mut Reconnect {
        self.reconnect.get_or_insert_with(|| Reconnect { start_ns, ..Default::default() })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EpisodeObservation {
    Opened(Episode),
    /// Its verdict changed (a canary came back, a stall began).
    Verdict(Episode),
    /// It recovered, or its transport was destroyed.
    Ended(Episode),
    /// Still going on (at a tick).
    Ongoing(Episode),
}

impl EpisodeObservation {
    pub fn episode(&self) -> &Episode {
        match self {
            EpisodeObservation::Opened(e)
            | EpisodeObservation::Verdict(e)
            | EpisodeObservation::Ended(e)
            | EpisodeObservation::Ongoing(e) => e,
        }
    }
}

/// How phase (b) names a TCP close.
fn close_how(how: CloseHow) -> (&'static str, Option<i32>) {
    match how {
        CloseHow::TimedOut => ("user_timeout", Some(libc::ETIMEDOUT)),
        CloseHow::Reset => ("reset", Some(libc::ECONNRESET)),
        CloseHow::Aborted => ("local", Some(libc::ECONNABORTED)),
        CloseHow::LocalClose | CloseHow::LocalAbort => ("local", None),
        CloseHow::RemoteClose => ("server_closed", None),
        CloseHow::Error(e) => ("error", Some(e)),
    }
}

/// How phase (b) names a transport's drop.
fn drop_how(r: &DropReason) -> (&'static str, Option<i32>) {
    match r {
        DropReason::Error(e) if *e == libc::ETIMEDOUT => ("user_timeout", Some(*e)),
        DropReason::Error(e) if *e == libc::ECONNRESET => ("reset", Some(*e)),
        DropReason::Error(e) if *e == libc::ECONNABORTED => ("local", Some(*e)),
        DropReason::Error(e) => ("error", Some(*e)),
        DropReason::ServerClosed => ("server_closed", None),
        DropReason::ClientClosed | DropReason::Forced | DropReason::Idle | DropReason::Closed => ("local", None),
    }
}

pub struct EpisodeTracker {
    open: Vec<Episode>,
    /// Episodes that ended, oldest first (bounded).
    pub ended: Vec<Episode>,
    /// Last close of each flow (bounded).
    closes: FastMap<Flow, Closed>,
    canary_off: Option<&'static str>,
    /// Whether data retransmits are traced (tcp:tcp_retransmit_skb
    /// attached): only then does an episode without them show TCP healthy.
    pub retransmits_traced: bool,
    next_id: u64,
}

impl EpisodeTracker {
    /// `canary_off`: why no canary connects are made (`Some("--passive")`),
    /// or None when watch makes them: the verdict says which was missing.
    pub fn new(canary_off: Option<&'static str>) -> Self {
        EpisodeTracker { open: Vec::new(), ended: Vec::new(), closes: FastMap::default(), canary_off, retransmits_traced: true, next_id: 1 }
    }

    /// Keeps only the episodes `keep` says, asked of the ended ones first,
    /// then of those going on (`report --since/--until/--mount` narrows its
    /// summary so).
    pub fn retain(&mut self, mut keep: impl FnMut(&Episode) -> bool) {
        self.ended.retain(|e| keep(e));
        self.open.retain(|e| keep(e));
    }

    /// Episodes going on (for the summary at exit).
    pub fn open_episodes(&self) -> &[Episode] {
        &self.open
    }

    /// The open episode of transport `xprt`, or for a socket no transport
    /// owns, of `pid` toward `dest`.
    fn find(&self, xprt: u64, dest: DestKey, pid: u32) -> Option<usize> {
        self.open.iter().position(|e| {
            if xprt != 0 { e.xprt == xprt } else { e.xprt == 0 && e.pid == pid && e.dest() == dest }
        })
    }

    fn open_one(&mut self, xprt: u64, flow: Flow, pid: u32, by: Symptom, ts_ns: u64) -> Option<usize> {
        if self.open.len() >= MAX_OPEN_EPISODES {
            return None;
        }
        let mut e = Episode {
            id: self.next_id,
            xprt,
            flow,
            pid,
            opened_by: by,
            start_ns: ts_ns,
            last_ns: ts_ns,
            unanswered: None,
            closed: None,
            reconnect: None,
            recovered: None,
            destroyed: false,
            kernel_said: Vec::new(),
            canary_off: self.canary_off,
            retransmits_traced: self.retransmits_traced,
            verdict: VerdictName::Unknown,
            evidence: String::new(),
            reported_ns: ts_ns,
        };
        self.next_id += 1;
        e.rejudge();
        self.open.push(e);
        Some(self.open.len() - 1)
    }

    /// The open episode `found`, else a new one opened by `by` at `ts_ns`
    /// (None when too many are open): its index, and whether it is new.
    #[allow(clippy::too_many_arguments)]
    fn found_or_open(&mut self, found: Option<usize>, xprt: u64, flow: Flow, pid: u32, by: Symptom, ts_ns: u64) -> Option<(usize, bool)> {
        match found {
            Some(i) => Some((i, false)),
            None => self.open_one(xprt, flow, pid, by, ts_ns).map(|i| (i, true)),
        }
    }

    fn end(&mut self, i: usize) -> EpisodeObservation {
        let mut e = self.open.swap_remove(i);
        e.rejudge();
        self.ended.push(e.clone());
        if self.ended.len() > MAX_ENDED_KEPT {
            self.ended.remove(0);
        }
        EpisodeObservation::Ended(e)
    }

    /// Opened (with its verdict) when new, else Verdict when that changed.
    fn after(&mut self, i: usize, opened: bool) -> Vec<EpisodeObservation> {
        let e = &mut self.open[i];
        let changed = e.rejudge();
        if opened || changed {
            e.reported_ns = e.last_ns;
        }
        if opened {
            vec![EpisodeObservation::Opened(e.clone())]
        } else if changed {
            vec![EpisodeObservation::Verdict(e.clone())]
        } else {
            Vec::new()
        }
    }

    fn remember_close(&mut self, flow: Flow, c: Closed) {
        if self.closes.len() >= MAX_CLOSES_KEPT && !self.closes.contains_key(&flow) {
            self.closes.clear();
        }
        self.closes.insert(flow, c);
    }

    /// Phase (b) of the episode `found`, or of one `open` opens (a symptom:
    /// xprt, flow, pid and what it is); nothing when neither.
    fn on_closed(&mut self, found: Option<usize>, open: Option<(u64, Flow, u32, Symptom)>, c: Closed) -> Vec<EpisodeObservation> {
        let (i, opened) = match (found, open) {
            (Some(i), _) => (i, false),
            (None, Some((xprt, flow, pid, by))) => match self.open_one(xprt, flow, pid, by, c.ts_ns) {
                Some(i) => (i, true),
                None => return Vec::new(),
            },
            (None, None) => return Vec::new(),
        };
        let e = &mut self.open[i];
        e.last_ns = e.last_ns.max(c.ts_ns);
        if e.closed.is_none() {
            e.closed = Some(c);
        }
        self.after(i, opened)
    }

    /// A TCP observation (from `model::tcp::Tracker`).
    pub fn on_tcp(&mut self, o: &Observation) -> Vec<EpisodeObservation> {
        match o {
            Observation::Close { who, ts_ns, how, .. } => {
                let (name, errno) = close_how(*how);
                let c = Closed { ts_ns: *ts_ns, how: name, errno, sport: who.flow.sport };
                self.remember_close(who.flow, c.clone());
                let found = self.find(who.xprt, who.flow.dest(), who.task.pid);
                // A transport's socket going away by a reset, a timeout or
                // an error is a symptom; an orderly or user-space close is not.
                let symptom = who.xprt != 0 && matches!(how, CloseHow::TimedOut | CloseHow::Reset | CloseHow::Aborted | CloseHow::Error(_));
                let mut out = self.on_closed(found, symptom.then_some((who.xprt, who.flow, who.task.pid, Symptom::Close)), c);
                // A socket no transport owns reconnects by nobody's rule:
                // its close before any reconnect ends its episode (no
                // recovery will come to wait for).
                if who.xprt == 0
                    && let Some(i) = found.filter(|&i| self.open[i].reconnect.is_none())
                {
                    self.open[i].destroyed = true;
                    out.push(self.end(i));
                }
                out
            }
            Observation::Stall { stall, ended } => self.on_stall(stall, *ended),
            Observation::Connect(a) => {
                let Some(i) = self.find(a.who.xprt, a.who.flow.dest(), a.who.task.pid) else {
                    // Another flow to a server with a stalled episode got through.
                    if !a.outcome.failed() {
                        for e in self.open.iter_mut().filter(|e| e.dest() == a.who.flow.dest()) {
                            if let Some(r) = e.reconnect.as_mut().filter(|r| r.stalled) {
                                r.siblings_connected += 1;
                            }
                        }
                    }
                    return Vec::new();
                };
                let start = a.ts_ns.saturating_sub(a.syn_sent_ns);
                let e = &mut self.open[i];
                e.last_ns = e.last_ns.max(a.ts_ns);
                let r = e.reconnect(start);
                if r.ports.last() != Some(&a.who.flow.sport) {
                    r.ports.push(a.who.flow.sport);
                }
                // A stall's own counts come with its end (below).
                if !r.stalled {
                    r.syn_retransmits += a.syn_retrans;
                    if a.outcome.failed() {
                        r.failed_attempts += 1;
                    }
                }
                if a.outcome == Outcome::Established && !r.stalled {
                    e.flow = a.who.flow;
                    e.recovered = Some(Recovered { ts_ns: a.ts_ns, sport: a.who.flow.sport });
                    return vec![self.end(i)];
                }
                self.after(i, false)
            }
            Observation::Unanswered { who, ts_ns, retransmits, since_ns } => self.on_unanswered(who, *ts_ns, *retransmits, *since_ns),
            Observation::Reuse(_) | Observation::SynRetransmit { .. } => Vec::new(),
        }
    }

    /// Phase (a): a symptom on any watched flow (it opens the episode at
    /// the run's first retransmit).
    fn on_unanswered(&mut self, who: &Who, ts_ns: u64, retransmits: u32, since_ns: u64) -> Vec<EpisodeObservation> {
        let found = self.find(who.xprt, who.flow.dest(), who.task.pid);
        let Some((i, opened)) = self.found_or_open(found, who.xprt, who.flow, who.task.pid, Symptom::Unanswered, since_ns) else {
            return Vec::new();
        };
        let e = &mut self.open[i];
        e.last_ns = e.last_ns.max(ts_ns);
        let u = e.unanswered.get_or_insert(Unanswered { start_ns: since_ns, ..Default::default() });
        u.start_ns = u.start_ns.min(since_ns);
        if u.data_retransmits == 0 {
            u.last_ns = since_ns;
        }
        u.data_retransmits = u.data_retransmits.max(retransmits);
        u.gap_ns = ts_ns.saturating_sub(u.last_ns);
        u.last_ns = ts_ns;
        self.after(i, opened)
    }

    /// Phase (a) from the RPC layer: a major timeout of transport `xprt`,
    /// whose connection is `flow`, of an RPC made at `task_start_ns` (None:
    /// not known).
    fn on_rpc_timeout(&mut self, xprt: u64, flow: Flow, ts_ns: u64, task_start_ns: Option<u64>) -> Vec<EpisodeObservation> {
        let found = if xprt != 0 { self.open.iter().position(|e| e.xprt == xprt) } else { None };
        // An RPC sent during a hang that just ended may still reach its
        // major timeout as the transport recovers (the kernel's "OK"
        // follows at once): part of that hang, not a new one.
        if found.is_none()
            && xprt != 0
            && let Some(u) = self
                .ended
                .iter_mut()
                .rev()
                .find(|e| {
                    e.xprt == xprt
                        && e.end_ns().is_some_and(|end| {
                            ts_ns.saturating_sub(end) < RPC_AFTER_END_NS && task_start_ns.is_none_or(|start| start < end)
                        })
                })
                .map(|e| e.unanswered.get_or_insert_with(|| Unanswered { start_ns: ts_ns, ..Default::default() }))
        {
            u.add_rpc_timeout(ts_ns);
            return Vec::new();
        }
        let Some((i, opened)) = self.found_or_open(found, xprt, flow, 0, Symptom::RpcTimeout, ts_ns) else {
            return Vec::new();
        };
        let e = &mut self.open[i];
        e.last_ns = e.last_ns.max(ts_ns);
        let u = e.unanswered.get_or_insert(Unanswered { start_ns: ts_ns, ..Default::default() });
        u.start_ns = u.start_ns.min(ts_ns);
        u.add_rpc_timeout(ts_ns);
        self.after(i, opened)
    }

    /// The kernel's "not responding" for `server` where rpc_timeout_status
    /// is not attached: one RPC timeout on each transport `connected`
    /// toward it (the line names the server, not the transport).
    pub fn on_not_responding(&mut self, connected: &[(u64, Flow)], ts_ns: u64) -> Vec<EpisodeObservation> {
        connected.iter().flat_map(|(x, f)| self.on_rpc_timeout(*x, *f, ts_ns, None)).collect()
    }

    fn on_stall(&mut self, st: &Stall, ended: bool) -> Vec<EpisodeObservation> {
        let found = self.find(st.who.xprt, st.who.flow.dest(), st.who.task.pid);
        if found.is_none() && ended {
            return Vec::new();
        }
        let Some((i, opened)) = self.found_or_open(found, st.who.xprt, st.who.flow, st.who.task.pid, Symptom::Stall, st.start_ns) else {
            return Vec::new();
        };
        // The stalled flow's earlier close, if one was seen, is phase (b).
        let prev_close = if st.reused { self.closes.get(&st.who.flow).cloned() } else { None };
        let e = &mut self.open[i];
        if e.closed.is_none() {
            e.closed = prev_close;
        }
        e.flow = st.who.flow;
        e.last_ns = e.last_ns.max(st.end_ns.unwrap_or(st.last_ns));
        e.kernel_said.extend(st.kernel_said.iter().filter(|l| !e.kernel_said.contains(l)).cloned().collect::<Vec<_>>());
        let r = e.reconnect(st.start_ns);
        r.start_ns = r.start_ns.min(st.start_ns);
        r.stalled = true;
        r.reused |= st.reused;
        r.stall_start_ns.get_or_insert(st.start_ns);
        r.stalled_sport.get_or_insert(st.who.flow.sport);
        r.syn_retransmits = r.syn_retransmits.max(st.retransmits);
        r.failed_attempts = r.failed_attempts.max(st.failed_attempts);
        r.siblings_connected = r.siblings_connected.max(st.siblings_connected);
        if r.ports.last() != Some(&st.who.flow.sport) {
            r.ports.push(st.who.flow.sport);
        }
        if let (true, Some(end), Some(sport)) = (ended, st.end_ns, st.end_sport) {
            if r.ports.last() != Some(&sport) {
                r.ports.push(sport);
            }
            e.recovered = Some(Recovered { ts_ns: end, sport });
            e.flow.sport = sport;
            return vec![self.end(i)];
        }
        self.after(i, opened)
    }

    /// A transport observation (from `model::xprt::XprtTracker`).
    pub fn on_xprt(&mut self, o: &XprtObservation) -> Vec<EpisodeObservation> {
        match o {
            XprtObservation::Drop { xprt, ts_ns, flow, reason } => {
                let (name, errno) = drop_how(reason);
                let c = Closed { ts_ns: *ts_ns, how: name, errno, sport: flow.sport };
                let found = self.open.iter().position(|e| e.xprt == *xprt);
                // Dropped by an error: a symptom. An idle or forced
                // disconnect, or the client's own close, is not.
                let symptom = matches!(reason, DropReason::Error(_));
                self.on_closed(found, symptom.then_some((*xprt, *flow, 0, Symptom::Drop)), c)
            }
            XprtObservation::Destroyed { xprt, ts_ns } => match self.open.iter().position(|e| e.xprt == *xprt) {
                Some(i) => {
                    let e = &mut self.open[i];
                    e.last_ns = e.last_ns.max(*ts_ns);
                    e.destroyed = true;
                    vec![self.end(i)]
                }
                None => Vec::new(),
            },
            XprtObservation::RpcTimeout { xprt, ts_ns, flow, task_start_ns, .. } => self.on_rpc_timeout(*xprt, *flow, *ts_ns, *task_start_ns),
            // Connected is judged from the TCP connect (the transport's
            // connect record may come before the handshake completes).
            XprtObservation::Connect(_) => Vec::new(),
        }
    }

    /// A canary's result, for the episodes toward its destination that are
    /// stalled now: the verdict may change.
    pub fn on_canary(&mut self, c: &CanaryResult) -> Vec<EpisodeObservation> {
        let mut out = Vec::new();
        for i in 0..self.open.len() {
            let e = &mut self.open[i];
            let stalled = e.reconnect.as_ref().is_some_and(|r| r.stalled);
            if e.dest() != c.dest || !stalled {
                continue;
            }
            e.last_ns = e.last_ns.max(c.end_ns);
            // A failed canary stays: the server or path was down during this
            // episode, and one that connects once the path is back (while
            // the reused flow waits for its next SYN slot) proves no reuse.
            // A connected one stays too: it is the one made while the flow
            // was held (a later one may come after the path let the flow
            // go, while the client only waits for its next SYN slot).
            let r = e.reconnect(c.start_ns);
            if c.connected() && r.canary.is_some() {
                continue;
            }
            r.canary = Some(c.clone());
            out.extend(self.after(i, false));
        }
        out
    }

    /// A kernel log line about `server` ("not responding", "OK"): joined to
    /// the episodes going on toward it, else to the last one that ended
    /// toward it ("server … OK" comes once RPCs are answered, after the
    /// reconnect: part of its recovery).
    /// An "OK" (`ok`) at `ts_ns` ends the episodes toward it that are only
    /// phase (a) with RPC timeouts: their RPCs are answered again.
    pub fn on_kernel_line(&mut self, server: IpAddr, line: &str, ok: bool, ts_ns: u64) -> Vec<EpisodeObservation> {
        let mut joined = false;
        for e in self.open.iter_mut().filter(|e| e.flow.raddr == server) {
            joined = true;
            if !e.kernel_said.iter().any(|l| l == line) {
                e.kernel_said.push(line.to_string());
            }
        }
        let mut out = Vec::new();
        while let Some(i) = self.open.iter().position(|e| {
            ok && e.flow.raddr == server
                && e.closed.is_none()
                && e.reconnect.is_none()
                && e.unanswered.as_ref().is_some_and(|u| u.rpc_timeouts > 0)
        }) {
            let e = &mut self.open[i];
            e.last_ns = e.last_ns.max(ts_ns);
            e.recovered = Some(Recovered { ts_ns, sport: e.flow.sport });
            out.push(self.end(i));
        }
        if joined {
            return out;
        }
        // Bounded: a server that keeps flapping must not grow an old episode.
        if let Some(e) = self.ended.iter_mut().rev().find(|e| e.flow.raddr == server)
            && e.kernel_said.len() < MAX_LINES_AFTER
        {
            e.kernel_said.push(line.to_string());
        }
        out
    }

    /// Episodes with nothing reported for `every_ns`: reported as ongoing.
    /// One that is only phase (a) (no close, no reconnect) whose retransmits
    /// stopped for longer than their backoff allows was answered again: it
    /// ends, recovered on the same flow.
    pub fn tick(&mut self, now_ns: u64, every_ns: u64) -> Vec<EpisodeObservation> {
        let mut out = Vec::new();
        while let Some(i) = self.open.iter().position(|e| {
            e.closed.is_none() && e.reconnect.is_none() && e.unanswered.as_ref().is_some_and(|u| u.quiet_at(now_ns))
        }) {
            let e = &mut self.open[i];
            let ts_ns = e.unanswered.as_ref().map_or(now_ns, Unanswered::latest_ns);
            e.recovered = Some(Recovered { ts_ns, sport: e.flow.sport });
            out.push(self.end(i));
        }
        for e in self.open.iter_mut().filter(|e| now_ns >= e.reported_ns.saturating_add(every_ns)) {
            e.last_ns = e.last_ns.max(now_ns);
            e.reported_ns = now_ns;
            e.rejudge();
            out.push(EpisodeObservation::Ongoing(e.clone()));
        }
        out
    }
}
