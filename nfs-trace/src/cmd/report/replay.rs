//! One recorded watch run replayed: each `input` fed to the same trackers
//! and [`Feed`] as `watch` fed it live, in the same order. What the page
//! needs beyond the episodes (each retransmit, canary, kernel line, and
//! each mount's reconnects) is kept on the way, bounded.
use std::collections::VecDeque;

use crate::{
    flow::{DestKey, Flow},
    kernel::lost::Lost,
    model::{
        attribution::{Transport, attribute},
        canary::{CanaryOutcome, CanaryResult},
        episode::{Episode, EpisodeObservation},
        feed::{self, Feed, Input, Obs},
        tcp::{Observation, Outcome, Tracker},
        xprt::{XprtObservation, XprtTracker},
    },
    output::{clock::Clock, html::MarkKind},
};

/// Marks kept for the page, over all episodes: a storm of retransmits
/// past this keeps the newest (the count of dropped ones is said).
pub const MARKS_MAX: usize = 200_000;
/// Reconnect rows kept per mount (the newest).
pub const ROWS_MAX: usize = 500;

/// Something on an episode's timeline.
#[derive(Clone, Debug)]
pub struct Mark {
    pub ts_ns: u64,
    /// The destination it is about, and the transport (0: none known).
    /// A kernel line names only the server: its `dest.laddr` is unspecified.
    pub dest: DestKey,
    pub xprt: u64,
    pub kind: MarkKind,
    pub label: String,
}

/// One established connect of a mount's transport.
#[derive(Clone, Debug)]
pub struct Reconnect {
    pub ts_ns: u64,
    pub sport: u16,
    pub prev_sport: Option<u16>,
    pub reused: bool,
    pub outcome: &'static str,
}

pub struct Run {
    pub clock: Clock,
    pub start_ns: u64,
    /// The latest time any input carried.
    pub last_ns: u64,
    pub tracker: Tracker,
    pub xtracker: XprtTracker,
    pub feed: Feed,
    /// The watch's own end, if the recording has it.
    pub end: Option<(u64, Lost)>,
    pub marks: VecDeque<Mark>,
    pub marks_dropped: u64,
    /// Per mount point, in the order first seen.
    pub reconnects: Vec<(String, VecDeque<Reconnect>)>,
}

fn flow_label(f: &Flow) -> String {
    format!(":{} → {}:{}", f.sport, f.raddr, f.dport)
}

impl Run {
    pub fn start(mono_ns: u64, clock_offset_ns: i64, passive: bool, retransmits_traced: bool, views: Vec<crate::host::nfsmounts::MountView>) -> Run {
        Run {
            clock: Clock::fixed(i128::from(clock_offset_ns)),
            start_ns: mono_ns,
            last_ns: mono_ns,
            tracker: Tracker::new(),
            // As the session starts it (no SunRPC hook yet): the `hooks`
            // input that follows says what was attached.
            xtracker: XprtTracker::new(true),
            feed: Feed::new(views, passive, retransmits_traced, mono_ns),
            end: None,
            marks: VecDeque::new(),
            marks_dropped: 0,
            reconnects: Vec::new(),
        }
    }

    fn mark(&mut self, ts_ns: u64, dest: DestKey, xprt: u64, kind: MarkKind, label: String) {
        if self.marks.len() >= MARKS_MAX {
            self.marks.pop_front();
            self.marks_dropped += 1;
        }
        self.marks.push_back(Mark { ts_ns, dest, xprt, kind, label });
    }

    fn has_open_episode(&self, dest: &DestKey) -> bool {
        self.feed.episodes.open_episodes().iter().any(|e| e.flow.dest() == *dest)
    }

    fn on_tcp(&mut self, o: &Observation) {
        match o {
            Observation::Connect(a) => {
                let ok = a.outcome == Outcome::Established;
                // Connects of a storm are no mark unless a hang is going on there.
                if !ok || self.has_open_episode(&a.who.flow.dest()) {
                    let label = format!("connect {} {}", flow_label(&a.who.flow), a.outcome.name());
                    self.mark(a.ts_ns, a.who.flow.dest(), a.who.xprt, MarkKind::Connect { ok }, label);
                }
                if ok {
                    self.reconnect(a.ts_ns, &a.who.flow, a.who.xprt, a.reused, a.outcome.name());
                }
            }
            Observation::SynRetransmit { who, ts_ns, retransmits, .. } => {
                let label = format!("SYN retransmit {retransmits} {}", flow_label(&who.flow));
                self.mark(*ts_ns, who.flow.dest(), who.xprt, MarkKind::SynRetransmit, label);
            }
            Observation::Unanswered { who, ts_ns, retransmits, .. } => {
                let label = format!("data retransmit {retransmits} without ACK progress {}", flow_label(&who.flow));
                self.mark(*ts_ns, who.flow.dest(), who.xprt, MarkKind::DataRetransmit, label);
            }
            Observation::Close { who, ts_ns, how, errno, .. } => {
                let e = crate::kernel::decode::errno_name(*errno).map(|n| format!(" ({n})")).unwrap_or_default();
                let label = format!("close {}{e} {}", how.name(), flow_label(&who.flow));
                self.mark(*ts_ns, who.flow.dest(), who.xprt, MarkKind::Close, label);
            }
            Observation::Reuse(_) | Observation::Stall { .. } => {}
        }
    }

    fn on_xprt(&mut self, o: &XprtObservation) {
        match o {
            XprtObservation::Drop { xprt, ts_ns, flow, reason } => {
                let label = format!("transport dropped: {} {}", reason.name(), flow_label(flow));
                self.mark(*ts_ns, flow.dest(), *xprt, MarkKind::TransportDrop, label);
            }
            XprtObservation::RpcTimeout { xprt, ts_ns, flow, timeouts, .. } => {
                let label = format!("RPC major timeout ({timeouts} so far) {}", flow_label(flow));
                self.mark(*ts_ns, flow.dest(), *xprt, MarkKind::RpcTimeout, label);
            }
            _ => {}
        }
    }

    /// An established connect, under each mount it is attributed to.
    fn reconnect(&mut self, ts_ns: u64, flow: &Flow, xprt: u64, reused: bool, outcome: &'static str) {
        let mounts: Vec<String> =
            attribute(&self.feed.views, &Transport::of_flow(xprt, flow, None)).0.iter().map(|m| m.mountpoint.clone()).collect();
        for m in mounts {
            let i = match self.reconnects.iter().position(|(p, _)| *p == m) {
                Some(i) => i,
                None => {
                    self.reconnects.push((m, VecDeque::new()));
                    self.reconnects.len() - 1
                }
            };
            let rows = &mut self.reconnects[i].1;
            let prev_sport = rows.back().map(|r| r.sport);
            if rows.len() >= ROWS_MAX {
                rows.pop_front();
            }
            rows.push_back(Reconnect { ts_ns, sport: flow.sport, prev_sport, reused, outcome });
        }
    }

    /// Feeds one input; `eps` gets what the episode tracker said.
    pub fn feed(&mut self, input: Input, eps: &mut Vec<EpisodeObservation>) {
        if let Some(t) = input.time() {
            self.last_ns = self.last_ns.max(t);
        }
        match input {
            // A new run is the caller's business (see report.rs).
            Input::Start { .. } => {}
            Input::Record(r) => {
                // What the trackers said, then fed on in that order, as watch
                // feeds it (the feed reads no tracker state).
                let mut said: Vec<Result<Observation, XprtObservation>> = Vec::new();
                let _ = feed::record(&mut self.tracker, &mut self.xtracker, &r, |o| {
                    said.push(match o {
                        Obs::Tcp(o) => Ok(o.clone()),
                        Obs::Xprt(o) => Err(o.clone()),
                    });
                    Ok(true)
                });
                for o in said {
                    match o {
                        Ok(o) => {
                            self.on_tcp(&o);
                            eps.extend(self.feed.tcp(&o));
                        }
                        Err(o) => {
                            self.on_xprt(&o);
                            eps.extend(self.feed.xprt(&o));
                        }
                    }
                }
            }
            Input::Seed(flow) => {
                self.tracker.seed(flow);
                self.xtracker.seed(flow);
            }
            Input::Views(v) => self.feed.base = v,
            Input::PortWatched { port } => self.feed.attributor.port_watched_late(port, &self.feed.base),
            Input::Hooks { sunrpc, rpc_timeouts_traced } => {
                self.xtracker.from_tcp = !sunrpc;
                self.feed.rpc_timeouts_traced = rpc_timeouts_traced;
            }
            Input::Canary(c) => {
                self.canary_mark(&c);
                eps.extend(self.feed.canary(&c));
            }
            Input::Kernel { mono_ns, server_ip, text, not_responding, .. } => {
                if let Some(ip) = server_ip {
                    let unspecified = if ip.is_ipv4() { std::net::Ipv4Addr::UNSPECIFIED.into() } else { std::net::Ipv6Addr::UNSPECIFIED.into() };
                    let dest = DestKey { laddr: unspecified, raddr: ip, dport: 0, netns: crate::flow::Netns::UNKNOWN };
                    self.mark(mono_ns, dest, 0, MarkKind::KernelLine, text.clone());
                    let (_, e) = self.feed.kernel_line(&mut self.tracker, &self.xtracker, ip, &text, not_responding, mono_ns);
                    eps.extend(e);
                }
            }
            Input::Tick { mono_ns } => {
                self.feed.refresh(&self.xtracker, mono_ns);
                let (_, e) = self.feed.tick(&mut self.tracker, mono_ns);
                eps.extend(e);
            }
            Input::End { mono_ns, lost } => {
                self.end = Some((mono_ns, lost));
            }
        }
    }

    fn canary_mark(&mut self, c: &CanaryResult) {
        let connected = matches!(c.outcome, CanaryOutcome::Connected { .. });
        let what = crate::output::render::canary_outcome_text(c);
        let label = format!("canary connect from :{} to {}:{}: {what}", c.sport, c.dest.raddr, c.dest.dport);
        self.mark(c.start_ns, c.dest, 0, MarkKind::Canary { connected }, label);
    }

    /// The marks on episode `e`'s timeline: its destination (a kernel line:
    /// its server), its time, with a little before its start.
    pub fn marks_of<'a>(&'a self, e: &'a Episode) -> impl Iterator<Item = &'a Mark> + 'a {
        let from = e.start_ns.saturating_sub(1_000_000_000);
        let to = e.end_ns().unwrap_or(self.last_ns);
        let dest = e.flow.dest();
        self.marks.iter().filter(move |m| {
            m.ts_ns >= from
                && m.ts_ns <= to
                && (m.dest == dest || (m.kind == MarkKind::KernelLine && m.dest.raddr == dest.raddr) || (m.xprt != 0 && m.xprt == e.xprt))
        })
    }
}
