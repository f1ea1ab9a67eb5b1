//! Prometheus metrics of a session, for fleets: per destination, per
//! transport (with the mounts it serves), stalls and lost records. Served by
//! `watch --metrics ADDR` in the Prometheus text format 0.0.4.
//!
//! Counters are real counters (prometheus-client), fed by the observations
//! as they happen, so they never go down: not recomputed from the trackers'
//! bounded state, which forgets. A series' labels are fixed when it is
//! made — a stall counted under mount A stays under A when the mounts
//! change. Label sets are bounded: past [`MAX_DEST_SERIES`],
//! [`MAX_STALL_SERIES`] or [`MAX_XPRT_SERIES`] label sets of a kind, new
//! ones are counted under `other` label values, and
//! `nfs_trace_metrics_overflow_total{kind}` says how many observations went
//! there. Gauges (stalls going on, state sizes, hooks) are current state.
use std::{collections::HashSet, net::IpAddr, sync::atomic::AtomicU64};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use rustc_hash::FxHashMap as FastMap;

use crate::{
    flow::Netns,
    host::nfsmounts::MountView,
    model::attribution::{Transport, attribute},
    model::episode::{EpisodeObservation, VerdictName},
    kernel::lost::Lost,
    model::tcp::{DestKey, Observation, Stall, Tracker},
    model::xprt::{XprtObservation, XprtTracker},
};

/// Destinations (local address, server, port) with series of their own.
pub const MAX_DEST_SERIES: usize = 512;
/// (server, port, mounts) label sets of the stall families.
pub const MAX_STALL_SERIES: usize = 256;
/// Transports with series of their own.
pub const MAX_XPRT_SERIES: usize = 512;
/// Label value of the aggregate past a bound.
const OTHER: &str = "other";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DestLabels {
    laddr: String,
    raddr: String,
    dport: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StallLabels {
    raddr: String,
    dport: String,
    mount: String,
    /// `POD-UID/VOLUME,…` where the mounts are pods' volumes ("" else).
    pod: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct XprtLabels {
    xprt: String,
    raddr: String,
    dport: String,
    mount: String,
    pod: String,
}

/// One of the five verdicts (model/episode/judge.rs): bounded by design.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabels {
    verdict: &'static str,
}

/// Episode durations, seconds: a quick reconnect to a lease-long hang.
const EPISODE_BUCKETS: [f64; 10] = [1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0];

fn episode_histogram() -> Histogram {
    Histogram::new(EPISODE_BUCKETS)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// Label sets of one kind, up to a bound; past it, the `other` set.
struct Bounded<L> {
    seen: HashSet<L>,
    max: usize,
    kind: &'static str,
}

impl<L: Clone + Eq + std::hash::Hash> Bounded<L> {
    fn new(max: usize, kind: &'static str) -> Self {
        Bounded { seen: HashSet::new(), max, kind }
    }

    /// `labels` if it has (or may get) a series of its own, else `other`;
    /// counts what overflowed.
    fn admit(&mut self, labels: L, other: impl FnOnce() -> L, overflow: &Family<KindLabels, Counter>) -> L {
        if self.seen.contains(&labels) {
            return labels;
        }
        if self.seen.len() < self.max {
            self.seen.insert(labels.clone());
            return labels;
        }
        overflow.get_or_create(&KindLabels { kind: self.kind }).inc();
        other()
    }
}

/// A stall going on: its series, and how much of its time is counted.
struct OpenStall {
    start_ns: u64,
    labels: StallLabels,
    counted_ns: u64,
}

/// A transport seen connecting: its series once its mount is known (a
/// mount's first connect comes before the mount shows in mountinfo).
struct XprtSeen {
    raddr: IpAddr,
    dport: u16,
    netns: Netns,
    srcport: Option<u16>,
    labels: Option<XprtLabels>,
}

/// Transports remembered for their labels (destroyed ones are forgotten;
/// past this, all are, and are labelled again at their next connect).
const MAX_XPRTS_REMEMBERED: usize = 4096;

pub struct Metrics {
    registry: Registry,
    connects: Family<DestLabels, Counter>,
    failures: Family<DestLabels, Counter>,
    reuses: Family<DestLabels, Counter>,
    syn_retransmits: Family<DestLabels, Counter>,
    stalls: Family<StallLabels, Counter>,
    stall_seconds: Family<StallLabels, Counter<f64, AtomicU64>>,
    stalls_ongoing: Family<StallLabels, Gauge>,
    xprt_reconnects: Family<XprtLabels, Counter>,
    xprt_reuses: Family<XprtLabels, Counter>,
    episodes: Family<VerdictLabels, Counter>,
    episode_seconds: Family<VerdictLabels, Histogram, fn() -> Histogram>,
    lost_events: Counter,
    lost_connects: Counter,
    lost_sockets: Counter,
    missed_runs: Counter,
    overflow: Family<KindLabels, Counter>,
    hooks_attached: Gauge,
    tracked_destinations: Gauge,
    tracked_transports: Gauge,
    kernel_sockets: Gauge,
    dests: Bounded<DestLabels>,
    stall_sets: Bounded<StallLabels>,
    xprt_sets: Bounded<XprtLabels>,
    open_stalls: FastMap<DestKey, OpenStall>,
    xprts: FastMap<u64, XprtSeen>,
    lost_seen: Lost,
}

/// Sizes of the tracker's own state: bounded, and expiring, by design.
pub struct StateSizes {
    pub kernel_sockets: usize,
}

/// The `mount` and `pod` label values of a transport's mounts.
fn mounts_of(views: &[MountView], t: &Transport) -> (String, String) {
    let m = attribute(views, t).0;
    let pods = crate::host::kubelet::pods_of_all(m.iter().copied());
    (m.iter().map(|m| m.mountpoint.as_str()).collect::<Vec<_>>().join(","), crate::host::kubelet::label(&pods))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut m = Metrics {
            registry: Registry::default(),
            connects: Family::default(),
            failures: Family::default(),
            reuses: Family::default(),
            syn_retransmits: Family::default(),
            stalls: Family::default(),
            stall_seconds: Family::default(),
            stalls_ongoing: Family::default(),
            xprt_reconnects: Family::default(),
            xprt_reuses: Family::default(),
            episodes: Family::default(),
            episode_seconds: Family::new_with_constructor(episode_histogram as fn() -> Histogram),
            lost_events: Counter::default(),
            lost_connects: Counter::default(),
            lost_sockets: Counter::default(),
            missed_runs: Counter::default(),
            overflow: Family::default(),
            hooks_attached: Gauge::default(),
            tracked_destinations: Gauge::default(),
            tracked_transports: Gauge::default(),
            kernel_sockets: Gauge::default(),
            dests: Bounded::new(MAX_DEST_SERIES, "destination"),
            stall_sets: Bounded::new(MAX_STALL_SERIES, "stall"),
            xprt_sets: Bounded::new(MAX_XPRT_SERIES, "transport"),
            open_stalls: FastMap::default(),
            xprts: FastMap::default(),
            lost_seen: Lost::default(),
        };
        // Names without `_total`: the encoder adds it to counters.
        // The registry ends each help text with a period.
        let r = &mut m.registry;
        r.register("nfs_trace_connects", "TCP connect attempts toward a watched port", m.connects.clone());
        r.register("nfs_trace_connect_failures", "Connect attempts that did not reach ESTABLISHED", m.failures.clone());
        r.register(
            "nfs_trace_source_port_reuses",
            "Connect attempts from the same source port as the previous one to that destination",
            m.reuses.clone(),
        );
        r.register("nfs_trace_syn_retransmits", "SYN retransmits of finished connect attempts", m.syn_retransmits.clone());
        r.register("nfs_trace_stalls", "Stalls: connects stuck in SYN_SENT retransmitting SYNs, from a reused port or a new one", m.stalls.clone());
        r.register("nfs_trace_stall_seconds", "Time spent in stalls, ongoing ones so far", m.stall_seconds.clone());
        r.register("nfs_trace_stalls_ongoing", "Stalls going on now", m.stalls_ongoing.clone());
        r.register("nfs_trace_transport_reconnects", "Reconnects of a SunRPC transport", m.xprt_reconnects.clone());
        r.register(
            "nfs_trace_transport_port_reuses",
            "Reconnects of a SunRPC transport from its previous source port",
            m.xprt_reuses.clone(),
        );
        r.register("nfs_trace_episodes", "Episodes (hangs, first symptom to recovery) that ended, by verdict", m.episodes.clone());
        r.register("nfs_trace_episode_duration_seconds", "Duration of the episodes that ended, by verdict", m.episode_seconds.clone());
        // Every verdict's series from the start, at 0 until one ends so.
        for v in VerdictName::ALL {
            drop(m.episodes.get_or_create(&VerdictLabels { verdict: v.name() }));
            drop(m.episode_seconds.get_or_create(&VerdictLabels { verdict: v.name() }));
        }
        r.register("nfs_trace_lost_events", "Ring buffer records that could not be reserved", m.lost_events.clone());
        r.register("nfs_trace_lost_connects", "Of those, connect attempts", m.lost_connects.clone());
        r.register("nfs_trace_lost_sockets", "Sockets whose state could not be stored", m.lost_sockets.clone());
        r.register(
            "nfs_trace_missed_runs",
            "Runs of the tracer's BPF programs the kernel skipped (another BPF program was running on that CPU)",
            m.missed_runs.clone(),
        );
        r.register(
            "nfs_trace_metrics_overflow",
            "Observations counted under label value \"other\" because their kind (destination, stall, transport) reached its bound of label sets",
            m.overflow.clone(),
        );
        r.register("nfs_trace_hooks_attached", "Kernel hooks attached now", m.hooks_attached.clone());
        r.register("nfs_trace_tracked_destinations", "Destinations the tracker holds (bounded)", m.tracked_destinations.clone());
        r.register("nfs_trace_tracked_transports", "Transports the tracker holds, live and ended (bounded)", m.tracked_transports.clone());
        r.register("nfs_trace_kernel_tracked_sockets", "Sockets the kernel programs hold state for (from SYN_SENT to CLOSE)", m.kernel_sockets.clone());
        m
    }

    fn dest_labels(&mut self, d: &DestKey) -> DestLabels {
        let l = DestLabels { laddr: d.laddr.to_string(), raddr: d.raddr.to_string(), dport: d.dport.to_string() };
        let other = || DestLabels { laddr: OTHER.into(), raddr: OTHER.into(), dport: OTHER.into() };
        self.dests.admit(l, other, &self.overflow)
    }

    /// One TCP observation, as it happens.
    pub fn observe(&mut self, o: &Observation, views: &[MountView]) {
        match o {
            Observation::Connect(a) => {
                let l = self.dest_labels(&a.who.flow.dest());
                self.connects.get_or_create(&l).inc();
                // Every family gets the series, at 0 until it happens.
                let failed = self.failures.get_or_create(&l);
                if a.outcome.failed() {
                    failed.inc();
                }
                drop(failed);
                self.syn_retransmits.get_or_create(&l).inc_by(u64::from(a.syn_retrans));
                drop(self.reuses.get_or_create(&l));
            }
            // A chance repeat of a flow is no rebind: not counted as a reuse.
            Observation::Reuse(r) if !r.chance => {
                let l = self.dest_labels(&r.who.flow.dest());
                self.reuses.get_or_create(&l).inc();
            }
            Observation::Stall { stall, ended } => self.stall(stall, *ended, views),
            Observation::Reuse(_) | Observation::SynRetransmit { .. } | Observation::Close { .. } | Observation::Unanswered { .. } => {}
        }
    }

    fn stall(&mut self, st: &Stall, ended: bool, views: &[MountView]) {
        let key = st.who.flow.dest();
        if self.open_stalls.get(&key).is_some_and(|o| o.start_ns != st.start_ns) {
            // The tracker forgot that one (evicted) and began another.
            self.close_stall(&key);
        }
        if !self.open_stalls.contains_key(&key) {
            // Its mounts as they are when it begins: fixed for its lifetime.
            let (mount, pod) = mounts_of(views, &Transport::of_flow(st.who.xprt, &st.who.flow, None));
            let l = StallLabels { raddr: key.raddr.to_string(), dport: key.dport.to_string(), mount, pod };
            let other = || StallLabels { raddr: OTHER.into(), dport: OTHER.into(), mount: OTHER.into(), pod: OTHER.into() };
            let labels = self.stall_sets.admit(l, other, &self.overflow);
            self.stalls.get_or_create(&labels).inc();
            self.stalls_ongoing.get_or_create(&labels).inc();
            self.open_stalls.insert(key, OpenStall { start_ns: st.start_ns, labels, counted_ns: 0 });
        }
        let open = self.open_stalls.get_mut(&key).expect("inserted above");
        let d = st.duration_ns();
        if d > open.counted_ns {
            self.stall_seconds.get_or_create(&open.labels).inc_by((d - open.counted_ns) as f64 / 1e9);
            open.counted_ns = d;
        }
        if ended {
            self.close_stall(&key);
        }
    }

    fn close_stall(&mut self, key: &DestKey) {
        if let Some(o) = self.open_stalls.remove(key) {
            self.stalls_ongoing.get_or_create(&o.labels).dec();
        }
    }

    /// Fixes a transport's labels (bounded) once its mount is known, or
    /// when `now` (it reconnects: its count must go somewhere).
    fn xprt_labels(&mut self, xprt: u64, views: &[MountView], now: bool) -> Option<XprtLabels> {
        let x = self.xprts.get_mut(&xprt)?;
        if x.labels.is_none() {
            let (mount, pod) = mounts_of(views, &Transport { xprt, raddr: x.raddr, dport: x.dport, netns: x.netns, srcport: x.srcport, live: None });
            if mount.is_empty() && !now {
                return None;
            }
            let l = XprtLabels { xprt: format!("{xprt:#x}"), raddr: x.raddr.to_string(), dport: x.dport.to_string(), mount, pod };
            let other = || XprtLabels { xprt: OTHER.into(), raddr: OTHER.into(), dport: OTHER.into(), mount: OTHER.into(), pod: OTHER.into() };
            let l = self.xprt_sets.admit(l, other, &self.overflow);
            // Both families get the series, at 0 until it happens.
            drop(self.xprt_reconnects.get_or_create(&l));
            drop(self.xprt_reuses.get_or_create(&l));
            x.labels = Some(l);
        }
        x.labels.clone()
    }

    /// An episode's observation: counted, with its duration, when it ends
    /// (by its final verdict).
    pub fn observe_episode(&mut self, o: &EpisodeObservation) {
        if let EpisodeObservation::Ended(e) = o {
            let l = VerdictLabels { verdict: e.verdict.name() };
            self.episodes.get_or_create(&l).inc();
            self.episode_seconds.get_or_create(&l).observe(e.duration_ns() as f64 / 1e9);
        }
    }

    /// One transport observation, as it happens.
    pub fn observe_xprt(&mut self, o: &XprtObservation, views: &[MountView]) {
        match o {
            XprtObservation::Connect(c) => {
                if !self.xprts.contains_key(&c.xprt) {
                    if self.xprts.len() >= MAX_XPRTS_REMEMBERED {
                        self.xprts.clear();
                    }
                    self.xprts.insert(c.xprt, XprtSeen { raddr: c.flow.raddr, dport: c.flow.dport, netns: c.flow.netns, srcport: c.srcport, labels: None });
                }
                let Some(l) = self.xprt_labels(c.xprt, views, c.is_reconnect()) else { return };
                if c.is_reconnect() {
                    self.xprt_reconnects.get_or_create(&l).inc();
                }
                if c.reused {
                    self.xprt_reuses.get_or_create(&l).inc();
                }
            }
            // The pointer may be reused by another transport: forget it
            // (its series keep their counts).
            XprtObservation::Destroyed { xprt, .. } => {
                self.xprts.remove(xprt);
            }
            // Counted where they matter, in the episodes (by verdict).
            XprtObservation::Drop { .. } | XprtObservation::RpcTimeout { .. } => {}
        }
    }

    /// The text for one scrape: current state into the gauges, the kernel's
    /// lost counters (monotonic) into ours, then everything encoded.
    pub fn render(&mut self, t: &Tracker, x: &XprtTracker, views: &[MountView], lost: Lost, hooks_attached: usize, sizes: &StateSizes) -> String {
        // Stalls the tracker no longer holds (its destination evicted) are
        // not going on any more.
        let open: Vec<(DestKey, u64)> = t.open_stalls().iter().map(|s| (s.who.flow.dest(), s.start_ns)).collect();
        let gone: Vec<DestKey> =
            self.open_stalls.iter().filter(|(k, o)| !open.contains(&(**k, o.start_ns))).map(|(k, _)| *k).collect();
        for k in gone {
            self.close_stall(&k);
        }
        let pending: Vec<u64> = self.xprts.iter().filter(|(_, s)| s.labels.is_none()).map(|(k, _)| *k).collect();
        for k in pending {
            self.xprt_labels(k, views, false);
        }
        for (c, now, seen) in [
            (&self.lost_events, lost.events, &mut self.lost_seen.events),
            (&self.lost_connects, lost.connects, &mut self.lost_seen.connects),
            (&self.lost_sockets, lost.sockets, &mut self.lost_seen.sockets),
            (&self.missed_runs, lost.missed_runs, &mut self.lost_seen.missed_runs),
        ] {
            c.inc_by(now.saturating_sub(*seen));
            *seen = (*seen).max(now);
        }
        let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        self.hooks_attached.set(n(hooks_attached));
        self.tracked_destinations.set(n(t.destinations().len()));
        self.tracked_transports.set(n(x.all().len()));
        self.kernel_sockets.set(n(sizes.kernel_sockets));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

/// The `Content-Type` of what [`Metrics::render`] returns.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[cfg(test)]
mod tests;
