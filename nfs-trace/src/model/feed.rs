//! Everything the trackers are fed, in one place, for `watch` live and for
//! `report` replaying a recording: the same calls in the same order, so a
//! replay reaches the same episodes and verdicts (no second implementation).
//!
//! [`Input`] is one thing fed. `watch --json --events` writes each as an
//! `input` line at the moment it is fed; `report` reads them back in order.
//! Everything else `watch` writes is output, and a replay makes it again.
use std::net::IpAddr;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::{
    flow::Flow,
    host::nfsmounts::MountView,
    kernel::{decode::Record, lost::Lost},
    model::{
        attribution::{Attributed, Attributor},
        canary::CanaryResult,
        episode::{EpisodeObservation, EpisodeTracker},
        tcp::{Observation, Tracker},
        verdict,
        xprt::{XprtObservation, XprtTracker},
    },
};

/// A stall with no SYN retransmit for this long is reported again (its
/// retransmits back off to tens of seconds apart).
pub const STALL_EVERY_NS: u64 = 5_000_000_000;
/// An episode with nothing new for this long is reported as going on.
pub const EPISODE_EVERY_NS: u64 = 30_000_000_000;

/// One thing the trackers were fed, as recorded (docs/json-schema.md, `input`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Input {
    /// The recording starts: how wall time relates to the records' monotonic
    /// time, and how the trackers were set up.
    Start {
        mono_ns: u64,
        /// CLOCK_REALTIME minus CLOCK_MONOTONIC, nanoseconds.
        clock_offset_ns: i64,
        /// Canary connects off (`--passive`).
        passive: bool,
        /// tcp:tcp_retransmit_skb attached.
        retransmits_traced: bool,
        /// The mounts as first read.
        views: Vec<MountView>,
    },
    /// A kernel record the trackers read (after `--netns` and canary filtering).
    Record(Record),
    /// A connection already up when its port began to be watched.
    Seed(Flow),
    /// The mounts as last read (each time they are read again).
    Views(Vec<MountView>),
    /// A port watched from now on (an NFS mount on it appeared).
    PortWatched { port: u16 },
    /// Which SunRPC hooks are attached now (at start, and when sunrpc loads).
    Hooks { sunrpc: bool, rpc_timeouts_traced: bool },
    /// A canary connect came back.
    Canary(CanaryResult),
    /// A kernel log line about an NFS server, when it was read.
    Kernel { mono_ns: u64, server: String, server_ip: Option<IpAddr>, text: String, not_responding: bool },
    /// The once-a-second checks.
    Tick { mono_ns: u64 },
    /// The watch stopped.
    End { mono_ns: u64, lost: Lost },
}

impl Input {
    /// When it happened, where it says (monotonic ns).
    pub fn time(&self) -> Option<u64> {
        match self {
            Input::Record(Record::Tcp(e)) => Some(e.ts_ns),
            Input::Record(Record::Xprt(x)) => Some(x.ts_ns),
            Input::Canary(c) => Some(c.end_ns),
            Input::Kernel { mono_ns, .. } | Input::Tick { mono_ns } | Input::End { mono_ns, .. } => Some(*mono_ns),
            _ => None,
        }
    }
}

/// What one kernel record meant, for whoever consumes it.
pub enum Obs<'a> {
    Tcp(&'a Observation),
    Xprt(&'a XprtObservation),
}

/// Feeds one kernel record through both trackers, handing what it means to
/// `f`; false when `f` said stop.
pub fn record(tracker: &mut Tracker, xtracker: &mut XprtTracker, rec: &Record, mut f: impl FnMut(Obs) -> Result<bool>) -> Result<bool> {
    match rec {
        Record::Tcp(ev) => {
            for o in tracker.on_event(ev) {
                if !f(Obs::Tcp(&o))? {
                    return Ok(false);
                }
            }
            for o in xtracker.on_tcp(ev) {
                if !f(Obs::Xprt(&o))? {
                    return Ok(false);
                }
            }
        }
        Record::Xprt(r) => {
            for o in xtracker.on_xprt(r) {
                // The transport's drop dates the flow a reconnect may
                // reuse where TCP did not see it close.
                if let XprtObservation::Drop { ts_ns, flow, .. } = &o {
                    tracker.on_flow_end(flow, *ts_ns);
                }
                if !f(Obs::Xprt(&o))? {
                    return Ok(false);
                }
            }
        }
    }
    Ok(true)
}

/// The stages past the two kernel trackers: episodes, attribution of
/// transports to mounts, and the option sets this host was seen to honour.
pub struct Feed {
    /// Hangs from first symptom to recovery, with a verdict (model/episode.rs).
    pub episodes: EpisodeTracker,
    /// Transports are credited to mounts only on evidence, some of it
    /// gathered while watching (model/attribution.rs).
    pub attributor: Attributor,
    /// The last full read of the mounts.
    pub base: Vec<MountView>,
    /// `base` annotated with what the attributor knows now.
    pub views: Vec<MountView>,
    /// Option sets this host was seen to honour, for the advice.
    pub honoured: Vec<String>,
    /// RPC major timeouts come from rpc_timeout_status (else from the
    /// kernel's "not responding" lines).
    pub rpc_timeouts_traced: bool,
}

impl Feed {
    pub fn new(base: Vec<MountView>, passive: bool, retransmits_traced: bool, now_ns: u64) -> Feed {
        let mut episodes = EpisodeTracker::new(passive.then_some("--passive"));
        episodes.retransmits_traced = retransmits_traced;
        let mut f = Feed { episodes, attributor: Attributor::new(), views: base.clone(), base, honoured: Vec::new(), rpc_timeouts_traced: false };
        f.attributor.refresh(&mut f.views, now_ns);
        f
    }

    pub fn tcp(&mut self, o: &Observation) -> Vec<EpisodeObservation> {
        self.episodes.on_tcp(o)
    }

    pub fn xprt(&mut self, o: &XprtObservation) -> Vec<EpisodeObservation> {
        self.attributor.observe(o, &mut self.views);
        self.episodes.on_xprt(o)
    }

    /// What a canary found decides the stalled episodes' verdicts.
    pub fn canary(&mut self, r: &CanaryResult) -> Vec<EpisodeObservation> {
        self.episodes.on_canary(r)
    }

    /// The address of the server a kernel line names as mounted.
    pub fn server_ip(&self, server: &str) -> Option<IpAddr> {
        crate::host::addr::parse_ip(server).or_else(|| {
            self.views.iter().find(|v| v.server == server || v.source_host() == server).and_then(|v| v.server_ip())
        })
    }

    /// A kernel line about `ip`: joined to its stalls (the bool) and episodes.
    pub fn kernel_line(
        &mut self,
        tracker: &mut Tracker,
        xtracker: &XprtTracker,
        ip: IpAddr,
        text: &str,
        not_responding: bool,
        now_ns: u64,
    ) -> (bool, Vec<EpisodeObservation>) {
        let joined = tracker.on_kernel_line(ip, text);
        let mut eps = Vec::new();
        // Without rpc_timeout_status, "not responding" is the RPC timeout,
        // for each transport connected to it.
        if not_responding && !self.rpc_timeouts_traced {
            eps.extend(self.episodes.on_not_responding(&xtracker.connected_to(ip), now_ns));
        }
        eps.extend(self.episodes.on_kernel_line(ip, text, !not_responding, now_ns));
        (joined, eps)
    }

    /// The once-a-second pass, first half: views from the last read, the
    /// option sets honoured, then what the attributor learned.
    pub fn refresh(&mut self, xtracker: &XprtTracker, now_ns: u64) -> Vec<Attributed> {
        self.views = self.base.clone();
        self.honoured = verdict::honoured(&verdict::verdicts(&self.views, xtracker));
        self.attributor.refresh(&mut self.views, now_ns)
    }

    /// The once-a-second pass, second half: stalls and episodes reported
    /// again when quiet, phase-(a) episodes ended when answered again.
    pub fn tick(&mut self, tracker: &mut Tracker, now_ns: u64) -> (Vec<Observation>, Vec<EpisodeObservation>) {
        (tracker.tick(now_ns, STALL_EVERY_NS), self.episodes.tick(now_ns, EPISODE_EVERY_NS))
    }

    /// Something open that a tick may report or end.
    pub fn busy(&self, tracker: &Tracker) -> bool {
        !self.episodes.open_episodes().is_empty() || tracker.has_open_stalls()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        flow::{DestKey, Netns, Task},
        kernel::decode::{Event, Kind, XprtRecord, XprtWhat},
        model::canary::CanaryOutcome,
    };

    fn flow() -> Flow {
        Flow { laddr: "10.0.0.1".parse().unwrap(), sport: 875, raddr: "fd00::2".parse().unwrap(), dport: 2049, netns: Netns(4026531840) }
    }

    /// Every kind of input reads back as written: what `report` replays is
    /// what `watch` fed (MountView has no PartialEq: compared as JSON).
    #[test]
    fn inputs_read_back_as_written() {
        let ev = Event {
            kind: Kind::SynRetransmit,
            ts_ns: u64::MAX - 1,
            sk: 0xffff_8880_1234_5678,
            task: Task { pid: 7, comm: "kworker/u8:\"x\"\u{1b}".into() },
            flow: Flow { netns: Netns::UNKNOWN, ..flow() },
            start_ns: 1,
            syn_ns: 2,
            established_ns: 0,
            xprt: 0xffff_8880_dead_beef,
            err: 110,
            syn_retrans: 3,
            oldstate: 2,
            newstate: 7,
            first_exit: 0,
        };
        let x = XprtRecord {
            what: XprtWhat::RpcTimeout,
            ts_ns: 5,
            xprt: 9,
            sk: 0,
            task: Task::default(),
            flow: flow(),
            srcport: Some(0),
            sk_state: 1,
            sock_state: 3,
            error: -110,
            sk_err: 0,
            task_start_ns: None,
        };
        let mut v = crate::host::nfsmounts::MountView::for_test("/mnt/a b", "10.0.0.2", "4.1", true, 875);
        v.live_from = "mount link";
        let inputs = vec![
            Input::Start { mono_ns: 1, clock_offset_ns: -5, passive: true, retransmits_traced: false, views: vec![v.clone()] },
            Input::Record(Record::Tcp(ev.clone())),
            Input::Record(Record::Xprt(x.clone())),
            Input::Seed(flow()),
            Input::Views(vec![v]),
            Input::PortWatched { port: 20049 },
            Input::Hooks { sunrpc: true, rpc_timeouts_traced: true },
            Input::Canary(CanaryResult {
                dest: DestKey { laddr: flow().laddr, raddr: flow().raddr, dport: 2049, netns: Netns(1) },
                sport: 40000,
                start_ns: 10,
                end_ns: 20,
                outcome: CanaryOutcome::Error(113),
            }),
            Input::Kernel { mono_ns: 3, server: "srv".into(), server_ip: Some(flow().raddr), text: "nfs: server srv not responding".into(), not_responding: true },
            Input::Tick { mono_ns: 4 },
            Input::End { mono_ns: 6, lost: Lost { events: 1, sockets: 2, connects: 3, missed_runs: 4 } },
        ];
        for i in &inputs {
            let text = serde_json::to_string(i).unwrap();
            let back: Input = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(serde_json::to_string(&back).unwrap(), text);
        }
        match serde_json::from_str::<Input>(&serde_json::to_string(&inputs[1]).unwrap()).unwrap() {
            Input::Record(Record::Tcp(back)) => assert_eq!(back, ev),
            other => panic!("{other:?}"),
        }
        match serde_json::from_str::<Input>(&serde_json::to_string(&inputs[2]).unwrap()).unwrap() {
            Input::Record(Record::Xprt(back)) => assert_eq!(back, x),
            other => panic!("{other:?}"),
        }
    }
}
