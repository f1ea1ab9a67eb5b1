//! The canary connect (issue 12): when a connect toward a watched server
//! stalls, one TCP connect to the same server address and port from a
//! fresh ephemeral port (bound to the stalled flow's local address, port
//! 0), in the stalled flow's network namespace. If it connects while the
//! reused flow stalls, the server and the path answer new flows and only
//! that flow is dropped (the vendor signature of a middlebox still holding
//! the old flow); if it fails too, the server or the path is down.
//!
//! - At most one per server (namespace, address, port) per [`EVERY`]:
//!   a stall is reported at every SYN retransmit, and a hung mount must
//!   not turn the tracer into a connect storm toward a struggling server.
//! - Each runs on a short-lived thread of its own (entering the namespace
//!   there, `namespaces::in_netns`), non-blocking with a [`TIMEOUT`];
//!   the result comes back over a channel that `watch` polls at each
//!   drain. The drain loop never waits for one.
//! - Closed at once with a plain close (FIN), not SO_LINGER 0: an RST is
//!   what a server logs and counts as an aborted client, and some
//!   middleboxes treat RSTs specially; an orderly close of a connection
//!   that sent nothing is the most ordinary thing a server sees. The cost
//!   is one TIME_WAIT entry on this host for 60 s, on a port nobody asked
//!   for.
//! - The kernel programs see its connect (it goes to a watched port): its
//!   flow is registered in [`CanaryFlows`] before it connects, and the
//!   session drops its records before the trackers, so it never counts as
//!   NFS traffic (no connect, reuse, stall or close; nothing in the
//!   summary or the metrics).
use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::Duration,
};

use rustc_hash::FxHashMap;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::{
    flow::{DestKey, Flow, Netns},
    host::{namespaces, netns_inode},
    kernel::decode::{Event, Kind},
    model::canary::{CanaryOutcome, CanaryResult},
    model::tcp::Observation,
    output::clock::Clock,
};

/// How long a canary waits for the handshake. Linux sends the first SYN
/// retransmit after 1 s: 3 s covers the first SYN and one or two
/// retransmits (a single lost SYN is not a dead path), and a server that
/// answers at all does so in far less.
pub const TIMEOUT: Duration = Duration::from_secs(3);
/// At most one canary per server in this time.
pub const EVERY: Duration = Duration::from_secs(10);
/// A canary's flow is ignored until its last record (CLOSE) is seen, or
/// this long after the canary ended, should that record never come (lost):
/// the conntrack SYN_SENT timeout and twice TIME_WAIT, as `CHANCE_GAP_NS`.
const FORGET_AFTER_NS: u64 = 120_000_000_000;

/// What asks for a canary: a destination whose connect stalls, and the
/// stalled source port (None where the asker does not say).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trigger {
    pub dest: DestKey,
    pub stalled_sport: Option<u16>,
}

/// The trigger: a stall going on (reported at each SYN retransmit and every
/// 5 s). The rate limit makes that one canary per server per 10 s, so a
/// long outage is probed again rather than judged on one early canary.
pub fn trigger_of(o: &Observation) -> Option<Trigger> {
    match o {
        Observation::Stall { stall, ended: false } => {
            Some(Trigger { dest: stall.who.flow.dest(), stalled_sport: Some(stall.who.flow.sport) })
        }
        _ => None,
    }
}

/// A canary that ran, and the stall it was made for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Done {
    pub result: CanaryResult,
    pub stalled_sport: Option<u16>,
}

/// The flows of canaries, shared by the canary threads (which add theirs
/// before connecting, so no record of it can come first) and the session
/// (which drops their records). Empty almost always: then a record costs
/// one relaxed load.
#[derive(Clone, Default)]
pub struct CanaryFlows(Arc<FlowsInner>);

#[derive(Default)]
struct FlowsInner {
    any: AtomicBool,
    /// Each flow, with when to forget it (None while its canary runs).
    flows: Mutex<Vec<(Flow, Option<u64>)>>,
}

impl CanaryFlows {
    fn add(&self, flow: Flow) {
        let mut v = self.0.flows.lock().unwrap_or_else(|e| e.into_inner());
        v.push((flow, None));
        self.0.any.store(true, Ordering::Release);
    }

    /// The canary on `flow` ended at `now_ns`: forget it at the latest
    /// [`FORGET_AFTER_NS`] later.
    fn ended(&self, flow: &Flow, now_ns: u64) {
        let mut v = self.0.flows.lock().unwrap_or_else(|e| e.into_inner());
        for (f, forget) in v.iter_mut() {
            if f == flow && forget.is_none() {
                *forget = Some(now_ns.saturating_add(FORGET_AFTER_NS));
            }
        }
    }

    /// Forgets the flows past their time (whose last record never came).
    fn expire(&self, now_ns: u64) {
        if !self.0.any.load(Ordering::Acquire) {
            return;
        }
        let mut v = self.0.flows.lock().unwrap_or_else(|e| e.into_inner());
        v.retain(|(_, forget)| forget.is_none_or(|t| t > now_ns));
        self.0.any.store(!v.is_empty(), Ordering::Release);
    }

    /// Whether `ev` is a canary's (then it must reach no tracker). Its last
    /// record (leaving SYN_SENT without a connection, or CLOSE) removes
    /// the flow.
    pub fn is_canary(&self, ev: &Event) -> bool {
        if !self.0.any.load(Ordering::Acquire) {
            return false;
        }
        let mut v = self.0.flows.lock().unwrap_or_else(|e| e.into_inner());
        let Some(i) = v.iter().position(|(f, _)| *f == ev.flow) else { return false };
        let last = ev.kind == Kind::Closed
            || (ev.kind == Kind::ConnectDone && ev.newstate != nfs_trace_common::tcp_state::ESTABLISHED);
        if last {
            v.swap_remove(i);
            self.0.any.store(!v.is_empty(), Ordering::Release);
        }
        true
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.flows.lock().unwrap().len()
    }
}

/// The rate limit: when each server (namespace, address, port) last had
/// a canary. Pure, on the caller's clock.
#[derive(Debug, Default)]
pub struct RateLimit {
    last: FxHashMap<(Netns, IpAddr, u16), u64>,
}

impl RateLimit {
    /// Whether a canary to `dest` may start at `now_ns` (and if so, it is
    /// counted as started). Servers not asked for within [`EVERY`] are
    /// forgotten, so this stays as small as the servers stalling at once.
    pub fn allow(&mut self, dest: &DestKey, now_ns: u64) -> bool {
        let every = EVERY.as_nanos() as u64;
        self.last.retain(|_, t| now_ns.saturating_sub(*t) < every);
        let key = (dest.netns, dest.raddr, dest.dport);
        if self.last.contains_key(&key) {
            return false;
        }
        self.last.insert(key, now_ns);
        true
    }
}

/// Where a canary for namespace `netns` must run.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Place {
    /// The tracer's own namespace: the flow's, or its namespace is not
    /// known (a kernel whose BTF lacks the offsets; then every flow's is
    /// unknown, and the tracer's own is the best guess).
    Own,
    Enter(PathBuf),
}

/// `paths` lists every namespace that can be entered (called only when
/// the flow's is not the tracer's own). Err: why it cannot be entered.
fn place(netns: Netns, own: Option<Netns>, paths: impl FnOnce() -> Vec<namespaces::NetnsPath>) -> Result<Place, String> {
    let Some(ino) = netns.known() else { return Ok(Place::Own) };
    if own == Some(netns) {
        return Ok(Place::Own);
    }
    paths().into_iter().find(|p| p.ino == ino).map(|p| Place::Enter(p.path)).ok_or_else(|| {
        format!("network namespace {ino} has no process and no name under /run/netns: it cannot be entered")
    })
}

/// How a connect attempt ended, from `connect_timeout`'s result.
fn outcome_of(r: &std::io::Result<()>, rtt_ns: u64) -> CanaryOutcome {
    match r {
        Ok(()) => CanaryOutcome::Connected { rtt_ns },
        // socket2's own timeout has no errno; the kernel's ETIMEDOUT (SYN
        // retries ran out first, with a tiny tcp_syn_retries) is the same news.
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => CanaryOutcome::TimedOut,
        Err(e) => match e.raw_os_error() {
            Some(libc::ECONNREFUSED) => CanaryOutcome::Refused,
            Some(libc::ETIMEDOUT) => CanaryOutcome::TimedOut,
            Some(n) => CanaryOutcome::Error(n),
            None => CanaryOutcome::Error(libc::EIO),
        },
    }
}

/// One canary in the calling thread's namespace: bind to `dest.laddr`
/// port 0, register the flow, connect with `timeout`, close.
/// Err: it could not be made (no result: it says nothing of the server).
fn connect_once(dest: DestKey, flows: &CanaryFlows, timeout: Duration) -> anyhow::Result<(CanaryResult, Flow)> {
    use anyhow::Context as _;
    let server = SocketAddr::new(dest.raddr, dest.dport);
    let s = Socket::new(Domain::for_address(server), Type::STREAM, Some(Protocol::TCP)).context("socket")?;
    s.bind(&SockAddr::from(SocketAddr::new(dest.laddr, 0))).with_context(|| format!("cannot bind {}", dest.laddr))?;
    let sport = s.local_addr()?.as_socket().map(|a| a.port()).context("bound to no port")?;
    let flow = Flow { laddr: dest.laddr, sport, raddr: dest.raddr, dport: dest.dport, netns: dest.netns };
    flows.add(flow);
    let start_ns = Clock::mono_now_ns();
    let r = s.connect_timeout(&SockAddr::from(server), timeout);
    let end_ns = Clock::mono_now_ns();
    drop(s); // plain close: see the module comment
    let outcome = outcome_of(&r, end_ns.saturating_sub(start_ns));
    Ok((CanaryResult { dest, sport, start_ns, end_ns, outcome }, flow))
}

type Msg = Result<(Done, Flow), String>;

/// The canaries of one `watch`: asked for with [`Canaries::request`],
/// collected with [`Canaries::poll`].
pub struct Canaries {
    flows: CanaryFlows,
    limit: RateLimit,
    tx: mpsc::Sender<Msg>,
    rx: mpsc::Receiver<Msg>,
    timeout: Duration,
    own: Option<Netns>,
    /// Canaries started and not yet collected by [`Canaries::poll`].
    in_flight: usize,
}

impl Canaries {
    /// `flows` is the session's (`Session::canary_flows`).
    pub fn new(flows: CanaryFlows) -> Canaries {
        let (tx, rx) = mpsc::channel();
        Canaries { flows, limit: RateLimit::default(), tx, rx, timeout: TIMEOUT, own: netns_inode::own(), in_flight: 0 }
    }

    /// Starts a canary for `t` unless its server had one within
    /// [`EVERY`]; returns at once. True when one was started.
    pub fn request(&mut self, t: Trigger, now_ns: u64) -> bool {
        if !self.limit.allow(&t.dest, now_ns) {
            return false;
        }
        let (flows, tx, timeout, own) = (self.flows.clone(), self.tx.clone(), self.timeout, self.own);
        let spawned = std::thread::Builder::new().name("canary".into()).spawn(move || {
            let dest = t.dest;
            let run = move || connect_once(dest, &flows, timeout);
            let r = place(dest.netns, own, || namespaces::netns_paths(std::path::Path::new("/proc"))).and_then(|p| {
                match p {
                    Place::Own => run(),
                    Place::Enter(path) => namespaces::in_netns(&path, run),
                }
                .map_err(|e| format!("{e:#}"))
            });
            let _ = tx.send(r.map(|(result, flow)| (Done { result, stalled_sport: t.stalled_sport }, flow)));
        });
        if let Err(e) = spawned {
            let _ = self.tx.send(Err(format!("cannot start a thread: {e}")));
        }
        self.in_flight += 1;
        true
    }

    /// Whether a canary is out: its result comes through a channel, not
    /// the ring buffer, so the loop must not sleep long meanwhile.
    pub fn in_flight(&self) -> bool {
        self.in_flight > 0
    }

    /// The canaries that ended since the last call; Err says why one could
    /// not be made (to be shown once, on stderr).
    pub fn poll(&mut self, now_ns: u64) -> Vec<Result<Done, String>> {
        let mut out = Vec::new();
        while let Ok(m) = self.rx.try_recv() {
            self.in_flight = self.in_flight.saturating_sub(1);
            out.push(m.map(|(done, flow)| {
                self.flows.ended(&flow, now_ns);
                done
            }));
        }
        self.flows.expire(now_ns);
        out
    }
}

#[cfg(test)]
mod tests;
