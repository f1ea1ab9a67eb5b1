//! JSON lines for machines (schema: docs/json-schema.md). The two records
//! every connect costs (`connect`, `close`) are written by hand through
//! `jsonline`; the rest go through serde.
use std::io::{self, Write};

use serde::Serialize;

use super::{Renderer, SCHEMA_VERSION};
use crate::{
    flow::{Flow, Task},
    host::kubelet::{self, PodVolume},
    host::nfsmounts::MountView,
    model::attribution::{Attributed, Transport, attribute, proxied_by},
    kernel::decode::errno_name,
    model::tcp::{Attempt, CloseHow, Observation, Stall, Who},
    model::xprt::{XprtConnect, XprtObservation},
    output::clock::Rfc3339,
    output::jsonline::Line,
};

/// Milliseconds, rounded to 3 decimals, for JSON.
pub(super) fn ms3(ns: u64) -> f64 {
    (ns as f64 / 1e3).round() / 1e3
}

#[derive(Serialize)]
struct SockFields<'a> {
    // Written into the output as they are (no String per field): two
    // records per connect under a storm make this the tracer's hot path.
    time: Rfc3339,
    mono_ns: u64,
    #[serde(flatten)]
    task: &'a Task,
    #[serde(flatten)]
    flow: Flow,
    sk: Hex,
}

/// `0x…` in JSON, written without an intermediate String.
struct Hex(u64);

impl Serialize for Hex {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{:#x}", self.0))
    }
}

#[derive(Serialize)]
struct Record<'a, T: Serialize> {
    v: u32,
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(flatten)]
    sock: Option<SockFields<'a>>,
    #[serde(flatten)]
    body: T,
}

pub(super) fn connect_body(a: &Attempt) -> ConnectBody {
    let failed = a.outcome.failed();
    ConnectBody {
        outcome: a.outcome.name(),
        errno: failed.then_some(a.errno).filter(|e| *e != 0),
        errno_name: if failed { errno_name(a.errno) } else { None },
        syn_sent_us: a.syn_sent_ns / 1000,
        syn_retransmits: a.syn_retrans,
        attempt: a.attempt,
        reused: a.reused,
    }
}

pub(super) fn close_body(how: CloseHow, errno: i32, lifetime_ns: u64) -> CloseBody {
    CloseBody {
        how: how.name(),
        errno: Some(errno).filter(|e| *e != 0),
        errno_name: errno_name(errno),
        lifetime_ms: ms3(lifetime_ns),
    }
}

/// The schema of `connect` (written by `Renderer::sock_line`; serialised
/// through serde in the tests that prove both agree).
#[derive(Serialize)]
pub(super) struct ConnectBody {
    outcome: &'static str,
    errno: Option<i32>,
    errno_name: Option<&'static str>,
    syn_sent_us: u64,
    syn_retransmits: u32,
    attempt: u64,
    reused: bool,
}

/// The schema of `reuse` as serde writes it, for the tests that prove the
/// hand-written line (in `observation_json`) agrees.
#[cfg(test)]
pub(super) fn reuse_body(r: &crate::model::tcp::Reuse, clock: &crate::output::clock::Clock) -> ReuseBody {
    ReuseBody {
        streak: r.streak,
        prev_outcome: r.prev_outcome.name(),
        prev_end: r.prev_end_ns.map(|t| clock.rfc3339(t)),
        gap_ms: r.gap_ns.map(ms3),
        chance: r.chance,
    }
}

#[cfg(test)]
#[derive(Serialize)]
pub(super) struct ReuseBody {
    streak: u32,
    prev_outcome: &'static str,
    prev_end: Option<String>,
    gap_ms: Option<f64>,
    chance: bool,
}

#[derive(Serialize)]
struct RetransBody {
    retransmits: u32,
    elapsed_ms: f64,
}

/// `data_retransmit`: an established flow's data retransmitted without the
/// ACK moving on, `retransmits` times since `since`.
#[derive(Serialize)]
struct UnansweredBody {
    retransmits: u32,
    since: String,
    since_mono_ns: u64,
    unanswered_ms: f64,
    xprt: Option<String>,
}

#[derive(Serialize)]
pub struct StallBody {
    /// When the first stalled attempt entered SYN_SENT.
    pub start: String,
    pub end: Option<String>,
    pub duration_s: f64,
    pub retransmits: u32,
    pub failed_attempts: u32,
    /// Its flow was seen before (false: a stall from a new port).
    pub reused: bool,
    /// When the flow whose port was reused ended (null if not seen).
    pub prev_end: Option<String>,
    /// The port that finally connected.
    pub end_sport: Option<u16>,
    pub kernel_said: Vec<String>,
    /// Connects to the same server from other flows that succeeded meanwhile.
    pub siblings_connected: u32,
    /// The mounts its transport serves (mount points), credited on
    /// evidence; empty while not yet known.
    pub mounts: Vec<String>,
    /// The Kubernetes pods those mounts are volumes of (absent when none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pods: Vec<PodVolume>,
    /// One sentence: what this episode shows.
    pub verdict: String,
}

#[derive(Serialize)]
pub(super) struct CloseBody {
    how: &'static str,
    errno: Option<i32>,
    errno_name: Option<&'static str>,
    lifetime_ms: f64,
}

#[derive(Serialize)]
struct XprtConnectBody<'a> {
    xprt: String,
    time: String,
    mono_ns: u64,
    #[serde(flatten)]
    task: &'a Task,
    #[serde(flatten)]
    flow: Flow,
    /// null when the kernel record could not say.
    srcport: Option<u16>,
    connects: u64,
    prev_sport: Option<u16>,
    reused: bool,
    drop_reason: Option<String>,
    drop_errno: Option<i32>,
    down_ms: Option<f64>,
    connect_error: Option<i32>,
    /// Mount points this transport serves, credited on evidence
    /// (model/attribution.rs); empty while not yet known.
    mounts: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pods: Vec<PodVolume>,
    /// The evidence for `mounts`; null while not yet known.
    attributed_by: Option<&'static str>,
}

#[derive(Serialize)]
struct AttributedBody<'a> {
    xprt: String,
    time: String,
    mono_ns: u64,
    #[serde(flatten)]
    flow: Flow,
    mounts: &'a [String],
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pods: Vec<PodVolume>,
    attributed_by: &'static str,
}

#[derive(Serialize)]
struct RpcTimeoutBody {
    xprt: String,
    time: String,
    mono_ns: u64,
    #[serde(flatten)]
    flow: Flow,
    /// Major timeouts on this transport so far.
    timeouts: u64,
    /// When the RPC that timed out was made (`rpc_task.tk_start`), on the
    /// `mono_ns` clock; null where not known.
    rpc_made_mono_ns: Option<u64>,
    mounts: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pods: Vec<PodVolume>,
}

#[derive(Serialize)]
struct XprtDropBody {
    xprt: String,
    time: String,
    mono_ns: u64,
    #[serde(flatten)]
    flow: Flow,
    reason: String,
    errno: Option<i32>,
}

impl<W: Write> Renderer<W> {
    pub(super) fn stall_body(&self, st: &Stall, views: &[MountView]) -> StallBody {
        let mounts: Vec<&MountView> = attribute(views, &Transport::of_flow(st.who.xprt, &st.who.flow, None)).0;
        StallBody {
            mounts: mounts.iter().map(|m| m.mountpoint.clone()).collect(),
            pods: kubelet::pods_of_all(mounts.iter().copied()),
            verdict: crate::model::verdict::stall_verdict(st, &mounts),
            start: self.clock.rfc3339(st.start_ns),
            end: st.end_ns.map(|t| self.clock.rfc3339(t)),
            duration_s: (st.duration_ns() as f64 / 1e6).round() / 1e3,
            retransmits: st.retransmits,
            failed_attempts: st.failed_attempts,
            reused: st.reused,
            prev_end: st.prev_end_ns.map(|t| self.clock.rfc3339(t)),
            end_sport: st.end_sport,
            kernel_said: st.kernel_said.clone(),
            siblings_connected: st.siblings_connected,
        }
    }
    fn sock_fields<'a>(&self, who: &'a Who, ts_ns: u64) -> SockFields<'a> {
        SockFields {
            time: self.clock.stamp(ts_ns),
            mono_ns: ts_ns,
            task: &who.task,
            flow: who.flow,
            sk: Hex(who.sk),
        }
    }
    /// Writes any serialisable value as one JSON line.
    pub fn json_line<T: Serialize>(&mut self, kind: &str, body: T) -> io::Result<()> {
        let rec = Record { v: SCHEMA_VERSION, kind, sock: None, body };
        serde_json::to_writer(&mut self.out, &rec)?;
        self.out.write_all(b"\n")
    }

    pub(super) fn json_sock<T: Serialize>(&mut self, kind: &str, who: &Who, ts_ns: u64, body: T) -> io::Result<()> {
        let rec = Record { v: SCHEMA_VERSION, kind, sock: Some(self.sock_fields(who, ts_ns)), body };
        serde_json::to_writer(&mut self.out, &rec)?;
        self.out.write_all(b"\n")
    }

    /// The hot records: the same fields and bytes as [`Self::json_sock`],
    /// written straight into one buffer (`jsonline`).
    fn sock_line(&mut self, kind: &str, who: &Who, ts_ns: u64, body: impl FnOnce(&mut Line)) -> io::Result<()> {
        let mut buf = std::mem::take(&mut self.line);
        buf.clear();
        let mut l = Line::with_seconds(&mut buf, &mut self.seconds);
        l.value("v", &SCHEMA_VERSION)
            .plain("type", kind)
            .time("time", self.clock.stamp(ts_ns))
            .value("mono_ns", &ts_ns)
            .value("pid", &who.task.pid)
            .string("comm", who.task.comm.as_str())
            .addr("laddr", who.flow.laddr)
            .value("sport", &who.flow.sport)
            .addr("raddr", who.flow.raddr)
            .value("dport", &who.flow.dport)
            .value("netns", &who.flow.netns)
            .hex("sk", who.sk);
        body(&mut l);
        l.end();
        let r = self.out.write_all(&buf);
        self.line = buf;
        r
    }
}

/// The mounts whose local proxy this socket is the upstream leg of (none
/// for a SunRPC transport's socket, and none at once on hosts without
/// loopback mounts).
fn upstream_of(views: &[MountView], who: &Who) -> Vec<String> {
    if who.xprt != 0 {
        return Vec::new();
    }
    proxied_by(views, who.flow.raddr, who.flow.dport, who.flow.netns).iter().map(|m| m.mountpoint.clone()).collect()
}

/// `"leg":"proxy_upstream","mounts":[…]` on a proxy's socket records;
/// nothing on others (the hot records keep their bytes).
fn leg(l: &mut Line, mounts: &[String]) {
    if !mounts.is_empty() {
        l.plain("leg", "proxy_upstream").value("mounts", mounts);
    }
}

impl<W: Write> Renderer<W> {
    pub(super) fn observation_json(&mut self, o: &Observation, views: &[MountView]) -> io::Result<()> {
        match o {
            Observation::Connect(a) => {
                let b = connect_body(a);
                let up = upstream_of(views, &a.who);
                self.sock_line("connect", &a.who, a.ts_ns, |l| {
                    l.plain("outcome", b.outcome)
                        .value("errno", &b.errno)
                        .value("errno_name", &b.errno_name)
                        .value("syn_sent_us", &b.syn_sent_us)
                        .value("syn_retransmits", &b.syn_retransmits)
                        .value("attempt", &b.attempt)
                        .value("reused", &b.reused);
                    leg(l, &up);
                })
            }
            Observation::Reuse(r) => {
                // As hot as connect under a storm from ephemeral ports (the
                // flow memory finds their repeats): written by hand too.
                let prev_end = r.prev_end_ns.map(|t| self.clock.stamp(t));
                let up = upstream_of(views, &r.who);
                self.sock_line("reuse", &r.who, r.ts_ns, |l| {
                    l.value("streak", &r.streak)
                        .plain("prev_outcome", r.prev_outcome.name())
                        .opt_time("prev_end", prev_end)
                        .value("gap_ms", &r.gap_ns.map(ms3))
                        .value("chance", &r.chance);
                    leg(l, &up);
                })
            }
            Observation::SynRetransmit { who, ts_ns, retransmits, elapsed_ns } => {
                let body = RetransBody { retransmits: *retransmits, elapsed_ms: ms3(*elapsed_ns) };
                self.json_sock("syn_retransmit", who, *ts_ns, body)
            }
            Observation::Unanswered { who, ts_ns, retransmits, since_ns } => {
                let body = UnansweredBody {
                    retransmits: *retransmits,
                    since: self.clock.rfc3339(*since_ns),
                    since_mono_ns: *since_ns,
                    unanswered_ms: ms3(ts_ns.saturating_sub(*since_ns)),
                    xprt: (who.xprt != 0).then(|| format!("{:#x}", who.xprt)),
                };
                self.json_sock("data_retransmit", who, *ts_ns, body)
            }
            Observation::Stall { stall, ended } => {
                let body = self.stall_body(stall, views);
                let kind = if *ended { "stall_end" } else { "stall" };
                self.json_sock(kind, &stall.who, stall.end_ns.unwrap_or(stall.last_ns), body)
            }
            Observation::Close { who, ts_ns, how, errno, lifetime_ns } => {
                let b = close_body(*how, *errno, *lifetime_ns);
                let up = upstream_of(views, who);
                self.sock_line("close", who, *ts_ns, |l| {
                    l.plain("how", b.how)
                        .value("errno", &b.errno)
                        .value("errno_name", &b.errno_name)
                        .value("lifetime_ms", &b.lifetime_ms);
                    leg(l, &up);
                })
            }
        }
    }
    pub(super) fn xprt_json(&mut self, o: &XprtObservation, views: &[MountView]) -> io::Result<()> {
        match o {
            XprtObservation::Destroyed { .. } => Ok(()),
            XprtObservation::Connect(c) => {
                let kind = if c.is_reconnect() { "xprt_reconnect" } else { "xprt_connect" };
                let mut body = self.xprt_connect_body(c);
                let (mounts, why) = attribute(views, &Transport::of_flow(c.xprt, &c.flow, c.srcport));
                body.mounts = mounts.iter().map(|m| m.mountpoint.clone()).collect();
                body.pods = kubelet::pods_of_all(mounts.iter().copied());
                body.attributed_by = why;
                self.json_line(kind, body)
            }
            XprtObservation::RpcTimeout { xprt, ts_ns, flow, timeouts, task_start_ns } => {
                let (mounts, _) = attribute(views, &Transport::of_flow(*xprt, flow, None));
                let body = RpcTimeoutBody {
                    xprt: format!("{xprt:#x}"),
                    time: self.clock.rfc3339(*ts_ns),
                    mono_ns: *ts_ns,
                    flow: *flow,
                    timeouts: *timeouts,
                    rpc_made_mono_ns: *task_start_ns,
                    mounts: mounts.iter().map(|m| m.mountpoint.clone()).collect(),
                    pods: kubelet::pods_of_all(mounts.iter().copied()),
                };
                self.json_line("rpc_timeout", body)
            }
            XprtObservation::Drop { xprt, ts_ns, flow, reason } => {
                let body = XprtDropBody {
                    xprt: format!("{xprt:#x}"),
                    time: self.clock.rfc3339(*ts_ns),
                    mono_ns: *ts_ns,
                    flow: *flow,
                    reason: reason.name(),
                    errno: reason.errno(),
                };
                self.json_line("xprt_drop", body)
            }
        }
    }

    pub(super) fn attributed_json(&mut self, a: &Attributed, ts_ns: u64) -> io::Result<()> {
        let body = AttributedBody {
            xprt: format!("{:#x}", a.xprt),
            time: self.clock.rfc3339(ts_ns),
            mono_ns: ts_ns,
            flow: a.flow,
            mounts: &a.mounts,
            pods: kubelet::pods_of_paths(&a.mounts),
            attributed_by: a.evidence,
        };
        self.json_line("attributed", body)
    }

    fn xprt_connect_body<'a>(&self, c: &'a XprtConnect) -> XprtConnectBody<'a> {
        XprtConnectBody {
            xprt: format!("{:#x}", c.xprt),
            time: self.clock.rfc3339(c.ts_ns),
            mono_ns: c.ts_ns,
            task: &c.task,
            flow: c.flow,
            srcport: c.srcport,
            connects: c.connects,
            prev_sport: c.prev_sport,
            reused: c.reused,
            drop_reason: c.dropped.as_ref().map(|d| d.reason.name()),
            drop_errno: c.dropped.as_ref().and_then(|d| d.reason.errno()),
            down_ms: c.down_ns().map(ms3),
            connect_error: Some(c.error).filter(|e| *e != 0),
            mounts: Vec::new(),
            pods: Vec::new(),
            attributed_by: None,
        }
    }
}
