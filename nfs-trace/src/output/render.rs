//! Rendering observations for people (live lines, a summary table, colour on
//! a TTY) and for machines (JSON lines, schema in docs/json-schema.md).
use std::{
    fmt::Write as _,
    io::{self, Write},
    net::IpAddr,
};

use serde::Serialize;

use crate::{
    kernel::lost::Lost,
    output::clock::{Clock, Rfc3339},
    output::jsonline::Line,
    kernel::decode::errno_name,
    model::tcp::{Attempt, CloseHow, DestKey, Observation, Outcome, Stall, Tracker, Who},
    host::nfsmounts::{self, MountView},
    model::verdict::{Verdict, port_range},
    model::xprt::{XprtConnect, XprtObservation, XprtTracker},
};

/// Version of the JSON lines schema (docs/json-schema.md).
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Human { color: bool },
    Json,
}

pub struct Renderer<W: Write> {
    out: W,
    format: Format,
    clock: Clock,
    /// Reused for the hot records (see `jsonline`).
    line: Vec<u8>,
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// Milliseconds, rounded to 3 decimals, for JSON.
fn ms3(ns: u64) -> f64 {
    (ns as f64 / 1e3).round() / 1e3
}

/// `addr:port`, IPv6 bracketed.
pub fn endpoint(a: IpAddr, port: u16) -> String {
    match a {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

/// Durations for people: µs, ms or s, whichever reads best.
/// " (mount /mnt/a, /mnt/b)" for a stall's destination, or nothing.
fn mounts_suffix(views: &[MountView], st: &Stall) -> String {
    let m: Vec<&str> = nfsmounts::attribute(views, st.who.dest.raddr, st.who.dest.dport, st.who.sport)
        .iter()
        .map(|m| m.mountpoint.as_str())
        .collect();
    if m.is_empty() { String::new() } else { format!(" (mount {})", m.join(", ")) }
}

pub fn human_duration(ns: u64) -> String {
    if ns < 1_000_000 {
        format!("{:.0} µs", ns as f64 / 1e3)
    } else if ns < 10_000_000_000 {
        format!("{:.1} ms", ms(ns))
    } else {
        format!("{:.1} s", ns as f64 / 1e9)
    }
}

fn errno_text(e: i32) -> String {
    match errno_name(e) {
        Some(n) => n.to_string(),
        None => format!("errno {e}"),
    }
}

fn ordinal(n: u32) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

// ANSI styles, only when writing to a terminal.
const RED_BOLD: &str = "\x1b[1;31m";
const YELLOW: &str = "\x1b[33m";
const GREEN: &str = "\x1b[32m";
const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

#[derive(Serialize)]
struct SockFields<'a> {
    // Written into the output as they are (no String per field): two
    // records per connect under a storm make this the tracer's hot path.
    time: Rfc3339,
    mono_ns: u64,
    pid: u32,
    comm: &'a str,
    laddr: IpAddr,
    sport: u16,
    raddr: IpAddr,
    dport: u16,
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

fn connect_body(a: &Attempt) -> ConnectBody {
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

fn close_body(how: CloseHow, errno: i32, lifetime_ns: u64) -> CloseBody {
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
struct ConnectBody {
    outcome: &'static str,
    errno: Option<i32>,
    errno_name: Option<&'static str>,
    syn_sent_us: u64,
    syn_retransmits: u32,
    attempt: u64,
    reused: bool,
}

#[derive(Serialize)]
struct ReuseBody {
    streak: u32,
    prev_outcome: &'static str,
    prev_end: Option<String>,
    gap_ms: Option<f64>,
}

#[derive(Serialize)]
struct RetransBody {
    retransmits: u32,
    elapsed_ms: f64,
}

#[derive(Serialize)]
pub struct StallBody {
    /// When the first stalled attempt entered SYN_SENT.
    pub start: String,
    pub end: Option<String>,
    pub duration_s: f64,
    pub retransmits: u32,
    pub failed_attempts: u32,
    /// When the flow whose port was reused ended (null if not seen).
    pub prev_end: Option<String>,
    /// The port that finally connected.
    pub end_sport: Option<u16>,
    pub kernel_said: Vec<String>,
    /// The mounts served by that server and port (mount points).
    pub mounts: Vec<String>,
    /// One sentence: what this episode shows.
    pub verdict: String,
}

#[derive(Serialize)]
struct CloseBody {
    how: &'static str,
    errno: Option<i32>,
    errno_name: Option<&'static str>,
    lifetime_ms: f64,
}

#[derive(Serialize)]
pub struct DestSummary {
    pub laddr: String,
    pub raddr: String,
    pub dport: u16,
    pub connects: u64,
    pub distinct_ports: usize,
    pub reuses: u64,
    pub failed: u64,
    pub syn_retransmits: u64,
    pub max_syn_sent_ms: f64,
}

#[derive(Serialize)]
struct SummaryBody {
    duration_s: f64,
    lost_events: u64,
    lost_sockets: u64,
    lost_connects: u64,
    evicted_destinations: u64,
    destinations: Vec<DestSummary>,
    transports: Vec<XprtSummary>,
    mounts: Vec<Verdict>,
    stalls: Vec<StallSummary>,
}

#[derive(Serialize)]
struct StallSummary {
    laddr: String,
    sport: u16,
    raddr: String,
    dport: u16,
    ongoing: bool,
    #[serde(flatten)]
    body: StallBody,
}

#[derive(Serialize)]
pub struct XprtSummary {
    pub xprt: String,
    pub raddr: Option<String>,
    pub dport: u16,
    pub connects: u64,
    pub reconnects: u64,
    pub reuses: u64,
    pub ports: Vec<u16>,
    /// Ports the transport used, all below 1024 (resvport), none, or mixed.
    pub port_range: &'static str,
}

#[derive(Serialize)]
struct XprtConnectBody {
    xprt: String,
    time: String,
    mono_ns: u64,
    pid: u32,
    comm: String,
    laddr: String,
    sport: u16,
    raddr: String,
    dport: u16,
    srcport: u16,
    connects: u64,
    prev_sport: Option<u16>,
    reused: bool,
    drop_reason: Option<String>,
    drop_errno: Option<i32>,
    down_ms: Option<f64>,
    connect_error: Option<i32>,
    /// Mount points this transport serves (from mountinfo/mountstats).
    mounts: Vec<String>,
}

#[derive(Serialize)]
struct XprtDropBody {
    xprt: String,
    time: String,
    mono_ns: u64,
    sport: u16,
    raddr: String,
    dport: u16,
    reason: String,
    errno: Option<i32>,
}

impl<W: Write> Renderer<W> {
    pub fn new(out: W, format: Format, clock: Clock) -> Self {
        Renderer { out, format, clock, line: Vec::with_capacity(512) }
    }

    fn style(&self, s: &'static str) -> &'static str {
        match self.format {
            Format::Human { color: true } => s,
            _ => "",
        }
    }

    fn stall_body(&self, st: &Stall, views: &[MountView]) -> StallBody {
        let mounts: Vec<&MountView> = nfsmounts::attribute(views, st.who.dest.raddr, st.who.dest.dport, st.who.sport);
        StallBody {
            mounts: mounts.iter().map(|m| m.mountpoint.clone()).collect(),
            verdict: crate::model::verdict::stall_verdict(st, &mounts),
            start: self.clock.rfc3339(st.start_ns),
            end: st.end_ns.map(|t| self.clock.rfc3339(t)),
            duration_s: (st.duration_ns() as f64 / 1e6).round() / 1e3,
            retransmits: st.retransmits,
            failed_attempts: st.failed_attempts,
            prev_end: st.prev_end_ns.map(|t| self.clock.rfc3339(t)),
            end_sport: st.end_sport,
            kernel_said: st.kernel_said.clone(),
        }
    }

    fn sock_fields<'a>(&self, who: &'a Who, ts_ns: u64) -> SockFields<'a> {
        SockFields {
            time: self.clock.stamp(ts_ns),
            mono_ns: ts_ns,
            pid: who.pid,
            comm: &who.comm,
            laddr: who.dest.laddr,
            sport: who.sport,
            raddr: who.dest.raddr,
            dport: who.dest.dport,
            sk: Hex(who.sk),
        }
    }

    /// Writes any serialisable value as one JSON line.
    pub fn json_line<T: Serialize>(&mut self, kind: &str, body: T) -> io::Result<()> {
        let rec = Record { v: SCHEMA_VERSION, kind, sock: None, body };
        serde_json::to_writer(&mut self.out, &rec)?;
        self.out.write_all(b"\n")
    }

    fn json_sock<T: Serialize>(&mut self, kind: &str, who: &Who, ts_ns: u64, body: T) -> io::Result<()> {
        let rec = Record { v: SCHEMA_VERSION, kind, sock: Some(self.sock_fields(who, ts_ns)), body };
        serde_json::to_writer(&mut self.out, &rec)?;
        self.out.write_all(b"\n")
    }

    /// The hot records: the same fields and bytes as [`Self::json_sock`],
    /// written straight into one buffer (`jsonline`).
    fn sock_line(&mut self, kind: &str, who: &Who, ts_ns: u64, body: impl FnOnce(&mut Line)) -> io::Result<()> {
        let mut buf = std::mem::take(&mut self.line);
        buf.clear();
        let mut l = Line::new(&mut buf);
        l.value("v", &SCHEMA_VERSION)
            .plain("type", kind)
            .time("time", self.clock.stamp(ts_ns))
            .value("mono_ns", &ts_ns)
            .value("pid", &who.pid)
            .value("comm", who.comm.as_str())
            .addr("laddr", who.dest.laddr)
            .value("sport", &who.sport)
            .addr("raddr", who.dest.raddr)
            .value("dport", &who.dest.dport)
            .hex("sk", who.sk);
        body(&mut l);
        l.end();
        let r = self.out.write_all(&buf);
        self.line = buf;
        r
    }

    fn prefix(&self, who: &Who, ts_ns: u64) -> String {
        format!(
            "{} {:<16} {:>7}  {} → {}",
            self.clock.time_of_day(ts_ns),
            who.comm,
            who.pid,
            endpoint(who.dest.laddr, who.sport),
            endpoint(who.dest.raddr, who.dest.dport)
        )
    }

    /// One observation; `views` attribute stalls to mounts.
    pub fn observation(&mut self, o: &Observation, views: &[MountView]) -> io::Result<()> {
        match self.format {
            Format::Json => self.observation_json(o, views),
            Format::Human { .. } => self.observation_human(o, views),
        }
    }

    fn observation_json(&mut self, o: &Observation, views: &[MountView]) -> io::Result<()> {
        match o {
            Observation::Connect(a) => {
                let b = connect_body(a);
                self.sock_line("connect", &a.who, a.ts_ns, |l| {
                    l.plain("outcome", b.outcome)
                        .value("errno", &b.errno)
                        .value("errno_name", &b.errno_name)
                        .value("syn_sent_us", &b.syn_sent_us)
                        .value("syn_retransmits", &b.syn_retransmits)
                        .value("attempt", &b.attempt)
                        .value("reused", &b.reused);
                })
            }
            Observation::Reuse(r) => {
                let body = ReuseBody {
                    streak: r.streak,
                    prev_outcome: r.prev_outcome.name(),
                    prev_end: r.prev_end_ns.map(|t| self.clock.rfc3339(t)),
                    gap_ms: r.gap_ns.map(ms3),
                };
                self.json_sock("reuse", &r.who, r.ts_ns, body)
            }
            Observation::SynRetransmit { who, ts_ns, retransmits, elapsed_ns } => {
                let body = RetransBody { retransmits: *retransmits, elapsed_ms: ms3(*elapsed_ns) };
                self.json_sock("syn_retransmit", who, *ts_ns, body)
            }
            Observation::Stall { stall, ended } => {
                let body = self.stall_body(stall, views);
                let kind = if *ended { "stall_end" } else { "stall" };
                self.json_sock(kind, &stall.who, stall.end_ns.unwrap_or(stall.last_ns), body)
            }
            Observation::Close { who, ts_ns, how, errno, lifetime_ns } => {
                let b = close_body(*how, *errno, *lifetime_ns);
                self.sock_line("close", who, *ts_ns, |l| {
                    l.plain("how", b.how)
                        .value("errno", &b.errno)
                        .value("errno_name", &b.errno_name)
                        .value("lifetime_ms", &b.lifetime_ms);
                })
            }
        }
    }

    fn observation_human(&mut self, o: &Observation, views: &[MountView]) -> io::Result<()> {
        let mut line = String::new();
        match o {
            Observation::Connect(a) => {
                let (style, what) = match a.outcome {
                    Outcome::Established => (GREEN, "SYN_SENT→ESTABLISHED".to_string()),
                    Outcome::Error(e) => (YELLOW, format!("SYN_SENT→CLOSE error ({})", errno_text(e))),
                    other => {
                        let errno = if a.errno != 0 { format!(" ({})", errno_text(a.errno)) } else { String::new() };
                        (YELLOW, format!("SYN_SENT→CLOSE {}{errno}", other.name().replace('_', " ")))
                    }
                };
                let _ = write!(
                    line,
                    "{}  {}{what}{} in {}",
                    self.prefix(&a.who, a.ts_ns),
                    self.style(style),
                    self.style(RESET),
                    human_duration(a.syn_sent_ns)
                );
                if a.syn_retrans > 0 {
                    let _ = write!(line, ", {} SYN retransmits", a.syn_retrans);
                }
                let _ = write!(line, "  {}#{}{}", self.style(DIM), a.attempt, self.style(RESET));
            }
            Observation::Reuse(r) => {
                let prev = match r.gap_ns {
                    Some(g) => format!("previous connection ({}) ended {} before", r.prev_outcome.name(), human_duration(g)),
                    None => format!("previous connection: {}", r.prev_outcome.name()),
                };
                let _ = write!(
                    line,
                    "{}  {}REUSED source port {}{} ({} use in a row; {prev})",
                    self.prefix(&r.who, r.ts_ns),
                    self.style(RED_BOLD),
                    r.who.sport,
                    self.style(RESET),
                    ordinal(r.streak + 1),
                );
            }
            Observation::SynRetransmit { who, ts_ns, retransmits, elapsed_ns } => {
                let _ = write!(
                    line,
                    "{}  {}SYN retransmit #{retransmits}{}, {} in SYN_SENT",
                    self.prefix(who, *ts_ns),
                    self.style(YELLOW),
                    self.style(RESET),
                    human_duration(*elapsed_ns)
                );
            }
            Observation::Stall { stall, ended: false } => {
                let prev = match stall.prev_end_ns {
                    Some(e) => format!(" from a flow closed {} ago", human_duration(stall.last_ns.saturating_sub(e))),
                    None => String::new(),
                };
                let _ = write!(
                    line,
                    "{}  {}STALLED {}, SYN retransmits {}, port {} reused{prev}{}{}",
                    self.prefix(&stall.who, stall.last_ns),
                    self.style(RED_BOLD),
                    human_duration(stall.duration_ns()),
                    stall.retransmits,
                    stall.who.sport,
                    self.style(RESET),
                    mounts_suffix(views, stall)
                );
            }
            Observation::Stall { stall, ended: true } => {
                let _ = write!(
                    line,
                    "{}  {}stall ended after {}{}: connected from port {} ({} SYN retransmits, {} failed attempts){}",
                    self.prefix(&stall.who, stall.end_ns.unwrap_or(stall.last_ns)),
                    self.style(YELLOW),
                    human_duration(stall.duration_ns()),
                    self.style(RESET),
                    stall.end_sport.unwrap_or(0),
                    stall.retransmits,
                    stall.failed_attempts,
                    mounts_suffix(views, stall)
                );
            }
            Observation::Close { who, ts_ns, how, errno, lifetime_ns } => {
                let errno = if *errno != 0 { format!(" ({})", errno_text(*errno)) } else { String::new() };
                let _ = write!(
                    line,
                    "{}  ESTABLISHED→CLOSE {}{errno} after {}",
                    self.prefix(who, *ts_ns),
                    how.name().replace('_', " "),
                    human_duration(*lifetime_ns)
                );
            }
        }
        line.push('\n');
        self.out.write_all(line.as_bytes())
    }

    pub fn xprt_observation(&mut self, o: &XprtObservation, views: &[MountView]) -> io::Result<()> {
        match (self.format, o) {
            (_, XprtObservation::Destroyed { .. }) => Ok(()),
            (Format::Json, XprtObservation::Connect(c)) => {
                let kind = if c.is_reconnect() { "xprt_reconnect" } else { "xprt_connect" };
                let mut body = self.xprt_connect_body(c);
                body.mounts = nfsmounts::attribute(views, c.raddr, c.dport, c.srcport).iter().map(|m| m.mountpoint.clone()).collect();
                self.json_line(kind, body)
            }
            (Format::Json, XprtObservation::Drop { xprt, ts_ns, sport, raddr, dport, reason }) => {
                let body = XprtDropBody {
                    xprt: format!("{xprt:#x}"),
                    time: self.clock.rfc3339(*ts_ns),
                    mono_ns: *ts_ns,
                    sport: *sport,
                    raddr: raddr.to_string(),
                    dport: *dport,
                    reason: reason.name(),
                    errno: reason.errno(),
                };
                self.json_line("xprt_drop", body)
            }
            (Format::Human { .. }, XprtObservation::Connect(c)) => {
                let mounts: Vec<String> =
                    nfsmounts::attribute(views, c.raddr, c.dport, c.srcport).iter().map(|m| m.mountpoint.clone()).collect();
                let on = if mounts.is_empty() { String::new() } else { format!(" [{}]", mounts.join(",")) };
                let who = format!(
                    "{} xprt {:#x}{on}  {} → {}",
                    self.clock.time_of_day(c.ts_ns),
                    c.xprt,
                    endpoint(c.laddr, c.sport),
                    endpoint(c.raddr, c.dport)
                );
                let line = match c.prev_sport {
                    None => format!("{who}  transport connected (first connect seen)\n"),
                    Some(prev) => {
                        let down = c.down_ns().map(|d| format!(", down {}", human_duration(d))).unwrap_or_default();
                        let why = c.dropped.as_ref().map(|d| format!(" after {}", d.reason.name())).unwrap_or_default();
                        let (style, what) = if c.reused {
                            (RED_BOLD, format!("RECONNECT REUSED source port {prev}"))
                        } else {
                            (GREEN, format!("reconnect with a new source port ({prev} → {})", c.sport))
                        };
                        format!("{who}  {}{what}{}{why}{down}\n", self.style(style), self.style(RESET))
                    }
                };
                self.out.write_all(line.as_bytes())
            }
            (Format::Human { .. }, XprtObservation::Drop { xprt, ts_ns, sport, raddr, dport, reason }) => writeln!(
                self.out,
                "{} xprt {xprt:#x}  :{sport} → {}  transport dropped: {}",
                self.clock.time_of_day(*ts_ns),
                endpoint(*raddr, *dport),
                reason.name()
            ),
        }
    }

    fn xprt_connect_body(&self, c: &XprtConnect) -> XprtConnectBody {
        XprtConnectBody {
            xprt: format!("{:#x}", c.xprt),
            time: self.clock.rfc3339(c.ts_ns),
            mono_ns: c.ts_ns,
            pid: c.pid,
            comm: c.comm.clone(),
            laddr: c.laddr.to_string(),
            sport: c.sport,
            raddr: c.raddr.to_string(),
            dport: c.dport,
            srcport: c.srcport,
            connects: c.connects,
            prev_sport: c.prev_sport,
            reused: c.reused,
            drop_reason: c.dropped.as_ref().map(|d| d.reason.name()),
            drop_errno: c.dropped.as_ref().and_then(|d| d.reason.errno()),
            down_ms: c.down_ns().map(ms3),
            connect_error: Some(c.error).filter(|e| *e != 0),
            mounts: Vec::new(),
        }
    }

    pub fn lost(&mut self, lost: Lost) -> io::Result<()> {
        match self.format {
            Format::Json => self.json_line("lost", lost),
            Format::Human { .. } => writeln!(
                self.out,
                "{}LOST: {} events ({} connects in all), {} sockets could not be recorded so far ({}){}",
                self.style(RED_BOLD),
                lost.events,
                lost.connects,
                lost.sockets,
                // Lost sockets: more connecting at once than the kernel's socket map holds.
                match (lost.events > 0, lost.sockets > 0) {
                    (true, false) => "ring buffer full: try a larger --ringbuf-kb",
                    (false, true) => "socket map full",
                    _ => "ring buffer and socket map full: try a larger --ringbuf-kb",
                },
                self.style(RESET)
            ),
        }
    }

    pub fn summary(
        &mut self,
        t: &Tracker,
        x: &XprtTracker,
        views: &[MountView],
        verdicts: Vec<Verdict>,
        lost: Lost,
        duration_ns: u64,
    ) -> io::Result<()> {
        let stalls: Vec<StallSummary> = t
            .stalls
            .iter()
            .map(|st| (st, false))
            .chain(t.open_stalls().into_iter().map(|st| (st, true)))
            .map(|(st, ongoing)| StallSummary {
                laddr: st.who.dest.laddr.to_string(),
                sport: st.who.sport,
                raddr: st.who.dest.raddr.to_string(),
                dport: st.who.dest.dport,
                ongoing,
                body: self.stall_body(st, views),
            })
            .collect();
        let transports: Vec<XprtSummary> = x
            .all()
            .into_iter()
            .map(|(k, s)| XprtSummary {
                xprt: format!("{k:#x}"),
                raddr: s.raddr.map(|a| a.to_string()),
                dport: s.dport,
                connects: s.connects,
                reconnects: s.reconnects,
                reuses: s.reuses,
                ports: s.ports.clone(),
                port_range: port_range(&s.ports),
            })
            .collect();
        let dests: Vec<DestSummary> = t
            .destinations()
            .into_iter()
            .map(|(k, d): (DestKey, _)| DestSummary {
                laddr: k.laddr.to_string(),
                raddr: k.raddr.to_string(),
                dport: k.dport,
                connects: d.connects,
                distinct_ports: d.distinct_ports(),
                reuses: d.reuses,
                failed: d.failed,
                syn_retransmits: d.syn_retransmits,
                max_syn_sent_ms: ms3(d.max_syn_sent_ns),
            })
            .collect();
        match self.format {
            Format::Json => self.json_line(
                "summary",
                SummaryBody {
                    duration_s: (duration_ns as f64 / 1e6).round() / 1e3,
                    lost_events: lost.events,
                    lost_sockets: lost.sockets,
                    lost_connects: lost.connects,
                    evicted_destinations: t.evicted,
                    destinations: dests,
                    transports,
                    mounts: verdicts,
                    stalls,
                },
            ),
            Format::Human { .. } => {
                let mut s = String::new();
                let _ = writeln!(s, "\nSummary after {:.1} s", duration_ns as f64 / 1e9);
                let _ = writeln!(
                    s,
                    "{:<44} {:>8} {:>6} {:>6} {:>6} {:>8} {:>13}",
                    "LOCAL → REMOTE", "CONNECTS", "PORTS", "REUSES", "FAILED", "SYN RTX", "MAX SYN_SENT"
                );
                if dests.is_empty() {
                    let _ = writeln!(s, "(no connects toward the watched ports)");
                }
                for d in &dests {
                    let reuse_style = if d.reuses > 0 { self.style(RED_BOLD) } else { "" };
                    let reset = if d.reuses > 0 { self.style(RESET) } else { "" };
                    let _ = writeln!(
                        s,
                        "{:<44} {:>8} {:>6} {reuse_style}{:>6}{reset} {:>6} {:>8} {:>13}",
                        format!("{} → {}", d.laddr, endpoint(d.raddr.parse().unwrap_or(IpAddr::from([0, 0, 0, 0])), d.dport)),
                        d.connects,
                        d.distinct_ports,
                        d.reuses,
                        d.failed,
                        d.syn_retransmits,
                        human_duration((d.max_syn_sent_ms * 1e6) as u64)
                    );
                }
                if !transports.is_empty() {
                    let _ = writeln!(
                        s,
                        "\n{:<20} {:<28} {:>8} {:>10} {:>6}  {:<9} SOURCE PORTS",
                        "TRANSPORT", "SERVER", "CONNECTS", "RECONNECTS", "REUSES", "PORTS"
                    );
                    for x in &transports {
                        let server = x.raddr.as_deref().map(|a| endpoint(a.parse().unwrap_or(IpAddr::from([0, 0, 0, 0])), x.dport)).unwrap_or_default();
                        let ports: Vec<String> = x.ports.iter().map(u16::to_string).collect();
                        let _ = writeln!(
                            s,
                            "{:<20} {:<28} {:>8} {:>10} {:>6}  {:<9} {}",
                            x.xprt, server, x.connects, x.reconnects, x.reuses, x.port_range, ports.join(",")
                        );
                    }
                }
                if !stalls.is_empty() {
                    let _ = writeln!(s, "\n{}Stalls (a reused source port stuck in SYN_SENT):{}", self.style(RED_BOLD), self.style(RESET));
                    for st in &stalls {
                        let mounts = if st.body.mounts.is_empty() { String::new() } else { format!("  [{}]", st.body.mounts.join(", ")) };
                        let _ = writeln!(
                            s,
                            "  {} → {}{mounts}  from {}  {:.1} s{}, {} SYN retransmits, {} failed attempts{}",
                            endpoint(st.laddr.parse().unwrap_or(IpAddr::from([0, 0, 0, 0])), st.sport),
                            endpoint(st.raddr.parse().unwrap_or(IpAddr::from([0, 0, 0, 0])), st.dport),
                            st.body.start,
                            st.body.duration_s,
                            if st.ongoing { " and still going" } else { "" },
                            st.body.retransmits,
                            st.body.failed_attempts,
                            if st.body.kernel_said.is_empty() { String::new() } else { format!("; kernel: {}", st.body.kernel_said.join(" | ")) }
                        );
                    }
                }
                let judged: Vec<&Verdict> = verdicts.iter().filter(|v| !v.transports.is_empty()).collect();
                if !judged.is_empty() {
                    let _ = writeln!(s, "\nVerdict per mount (from what this run observed):");
                    for v in judged {
                        let style = if v.reused > 0 { self.style(RED_BOLD) } else { "" };
                        let reset = if v.reused > 0 { self.style(RESET) } else { "" };
                        let _ = writeln!(
                            s,
                            "  {} ({} vers={}{}): {style}{}{reset}\n    → {}",
                            v.mountpoint,
                            v.server,
                            v.vers.as_deref().unwrap_or("?"),
                            if v.noresvport { ",noresvport" } else { "" },
                            v.observed,
                            v.suggestion
                        );
                    }
                }
                let lost_style = if lost.events + lost.sockets > 0 { self.style(RED_BOLD) } else { "" };
                let reset = if lost.events + lost.sockets > 0 { self.style(RESET) } else { "" };
                let _ = writeln!(
                    s,
                    "{lost_style}lost events: {} ({} connects), lost sockets: {}{reset}",
                    lost.events, lost.connects, lost.sockets
                );
                if t.evicted > 0 {
                    let _ = writeln!(s, "destinations evicted to bound memory: {}", t.evicted);
                }
                self.out.write_all(s.as_bytes())
            }
        }
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::decode::{Event, Kind};
    use nfs_trace_common::tcp_state::{ESTABLISHED, SYN_SENT};

    fn connect(ts_ms: u64, sk: u64, sport: u16) -> Event {
        Event {
            kind: Kind::ConnectDone,
            ts_ns: ts_ms * 1_000_000,
            sk,
            pid: 7,
            comm: "mount.nfs".into(),
            laddr: "127.0.0.1".parse().unwrap(),
            sport,
            raddr: "127.0.0.1".parse().unwrap(),
            dport: 2049,
            start_ns: ts_ms * 1_000_000 - 100_000,
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

    fn render(format: Format, evs: &[Event]) -> String {
        render_with(format, evs, &[])
    }

    fn render_with(format: Format, evs: &[Event], views: &[MountView]) -> String {
        let mut t = Tracker::new();
        let mut r = Renderer::new(Vec::new(), format, Clock::fixed(0));
        for e in evs {
            for o in t.on_event(e) {
                r.observation(&o, views).unwrap();
            }
        }
        r.summary(&t, &XprtTracker::new(false), views, Vec::new(), Lost { events: 3, sockets: 0, connects: 1 }, 1_000_000_000)
            .unwrap();
        String::from_utf8(r.out).unwrap()
    }

    /// A reconnect from the old port that retransmits its SYN for 20 s, then connects.
    fn stalled_reconnect() -> Vec<Event> {
        let first = connect(10, 1, 871);
        let mut closed = connect(1_000, 1, 871);
        closed.kind = Kind::Closed;
        closed.oldstate = ESTABLISHED;
        closed.newstate = nfs_trace_common::tcp_state::CLOSE;
        let mut rtx = connect(2_000, 2, 871);
        rtx.kind = Kind::SynRetransmit;
        rtx.start_ns = 1_500_000_000;
        rtx.syn_retrans = 1;
        let mut done = connect(21_500, 2, 871);
        done.start_ns = 1_500_000_000;
        done.syn_retrans = 9;
        vec![first, closed, rtx, done]
    }

    /// The hand-written hot records are byte for byte what serde writes.
    #[test]
    fn fast_connect_and_close_lines_equal_the_serde_ones() {
        let who = |laddr: &str, raddr: &str, comm: &str| Who {
            dest: DestKey { laddr: laddr.parse().unwrap(), raddr: raddr.parse().unwrap(), dport: 2049 },
            sport: 871,
            pid: 4242,
            comm: comm.into(),
            sk: 0xffff_8881_0234_5678,
        };
        let whos = [
            who("10.0.0.2", "10.0.0.1", "mount.nfs"),
            who("fd00::2", "fd00::1", "we\"ird\u{1}\\name"),
        ];
        let outcomes = [Outcome::Established, Outcome::Refused, Outcome::Error(libc::EHOSTUNREACH)];
        for w in &whos {
            for (i, outcome) in outcomes.iter().enumerate() {
                let a = Attempt {
                    who: w.clone(),
                    ts_ns: 1_234_567_891_234,
                    outcome: *outcome,
                    errno: if i == 1 { libc::ECONNREFUSED } else { 0 },
                    syn_sent_ns: 1_500_321,
                    syn_retrans: 2,
                    attempt: 7,
                    reused: i == 0,
                };
                let close = Observation::Close { who: w.clone(), ts_ns: 9_000_000_001, how: [CloseHow::LocalAbort, CloseHow::Reset, CloseHow::Error(110)][i], errno: [0, 104, 110][i], lifetime_ns: 12_345_678 };
                for o in [Observation::Connect(a.clone()), close] {
                    let mut fast = Renderer::new(Vec::new(), Format::Json, Clock::fixed(1_700_000_000_000_000_000));
                    fast.observation(&o, &[]).unwrap();
                    let mut slow = Renderer::new(Vec::new(), Format::Json, Clock::fixed(1_700_000_000_000_000_000));
                    match &o {
                        Observation::Connect(a) => slow.json_sock("connect", &a.who, a.ts_ns, connect_body(a)).unwrap(),
                        Observation::Close { who, ts_ns, how, errno, lifetime_ns } => {
                            slow.json_sock("close", who, *ts_ns, close_body(*how, *errno, *lifetime_ns)).unwrap()
                        }
                        _ => unreachable!(),
                    }
                    assert_eq!(String::from_utf8(fast.out).unwrap(), String::from_utf8(slow.out).unwrap());
                }
            }
        }
    }

    #[test]
    fn a_stall_names_its_mount_and_says_what_it_shows() {
        let view = MountView::for_test("/mnt/data", "127.0.0.1", "4.0", false, 871);
        let out = render_with(Format::Json, &stalled_reconnect(), std::slice::from_ref(&view));
        let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let end = lines.iter().find(|l| l["type"] == "stall_end").expect("a stall_end record");
        assert_eq!(end["duration_s"], 20.0);
        assert_eq!(end["retransmits"], 9);
        assert_eq!(end["mounts"], serde_json::json!(["/mnt/data"]));
        let verdict = end["verdict"].as_str().unwrap();
        assert!(verdict.contains("port 871") && verdict.contains("20.0 s") && verdict.contains("/mnt/data (vers=4.0)"), "{verdict}");
        let live = lines.iter().find(|l| l["type"] == "stall").expect("a live stall record");
        assert_eq!(live["end"], serde_json::Value::Null);
        let summary = &lines.last().unwrap()["stalls"][0];
        assert_eq!(summary["mounts"], serde_json::json!(["/mnt/data"]));
        assert_eq!(summary["duration_s"], 20.0);
        assert_eq!(summary["ongoing"], false);
        let human = render_with(Format::Human { color: false }, &stalled_reconnect(), &[view]);
        assert!(human.contains("stall ended after 20.0s") || human.contains("stall ended after 20.0 s"), "{human}");
        assert!(human.contains("(mount /mnt/data)") && human.contains("[/mnt/data]"), "{human}");
    }

    #[test]
    fn json_lines_carry_schema_and_reuse() {
        let out = render(Format::Json, &[connect(10, 1, 999), connect(20, 2, 999)]);
        let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert!(lines.iter().all(|l| l["v"] == 1));
        let types: Vec<_> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["connect", "connect", "reuse", "summary"]);
        assert_eq!(lines[1]["reused"], true);
        assert_eq!(lines[2]["sport"], 999);
        assert_eq!(lines[2]["streak"], 1);
        assert_eq!(lines[0]["raddr"], "127.0.0.1");
        assert_eq!(lines[0]["syn_sent_us"], 100);
        assert_eq!(lines[3]["lost_events"], 3);
        assert_eq!(lines[3]["destinations"][0]["reuses"], 1);
        assert_eq!(lines[0]["time"], "1970-01-01T00:00:00.010000Z");
    }

    #[test]
    fn human_lines_mark_reuse_and_colour_only_on_request() {
        let plain = render(Format::Human { color: false }, &[connect(10, 1, 999), connect(20, 2, 999)]);
        assert!(plain.contains("REUSED source port 999 (2nd use in a row"), "{plain}");
        assert!(plain.contains("127.0.0.1:999 → 127.0.0.1:2049"));
        assert!(plain.contains("lost events: 3"));
        assert!(!plain.contains('\x1b'));
        let coloured = render(Format::Human { color: true }, &[connect(10, 1, 999), connect(20, 2, 999)]);
        assert!(coloured.contains("\x1b[1;31mREUSED"));
    }
}
