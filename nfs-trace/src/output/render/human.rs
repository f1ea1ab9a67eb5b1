//! Lines for people: one per observation, times of day, colour on a TTY.
use std::{
    fmt::Write as _,
    io::{self, Write},
};

use super::Renderer;
use crate::{
    flow::{Flow, Netns},
    output::escape::escape,
    host::nfsmounts::MountView,
    model::attribution::{Attributed, Transport, attribute, proxied_by},
    kernel::decode::errno_name,
    model::tcp::{Observation, Outcome, Stall, Who},
    model::xprt::{XprtConnect, XprtObservation},
};

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

pub use crate::host::addr::endpoint;

/// The mount points served by `flow`'s server and port through the transport
/// that remembers `srcport`, escaped and comma-separated ("" when none).
fn mount_list(views: &[MountView], xprt: u64, flow: &Flow, srcport: Option<u16>, sep: &str) -> String {
    let m: Vec<String> = attribute(views, &Transport::of_flow(xprt, flow, srcport))
        .0
        .iter()
        .map(|m| escape(&crate::host::kubelet::mount_label(m)).into_owned())
        .collect();
    m.join(sep)
}

/// " (mount /mnt/a, /mnt/b)" for a stall's destination, or nothing.
fn mounts_suffix(views: &[MountView], st: &Stall) -> String {
    let m = mount_list(views, st.who.xprt, &st.who.flow, None, ", ");
    if m.is_empty() { String::new() } else { format!(" (mount {m})") }
}

/// Durations for people: µs, ms or s, whichever reads best.
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
/// Whether more than one network namespace has been seen: until then
/// naming it on every line would be noise (a host without containers has
/// one); from the first record of a second one on, lines say `netns N`.
#[derive(Debug, Default)]
pub(super) struct NetnsSeen {
    first: Option<Netns>,
    many: bool,
}

impl NetnsSeen {
    pub(super) fn see(&mut self, n: Netns) {
        match self.first {
            None => self.first = Some(n),
            Some(f) if f != n => self.many = true,
            Some(_) => {}
        }
    }

    /// " netns N" once several were seen, else "".
    pub(super) fn suffix(&self, n: Netns) -> String {
        if self.many { format!(" netns {n}") } else { String::new() }
    }
}

// ANSI styles, only when writing to a terminal.
pub(super) const RED_BOLD: &str = "\x1b[1;31m";
pub(super) const YELLOW: &str = "\x1b[33m";
pub(super) const GREEN: &str = "\x1b[32m";
pub(super) const DIM: &str = "\x1b[2m";
pub(super) const RESET: &str = "\x1b[0m";

impl<W: Write> Renderer<W> {
    fn prefix(&self, who: &Who, ts_ns: u64) -> String {
        format!(
            "{} {:<16} {:>7}  {} → {}{}",
            self.clock.time_of_day(ts_ns),
            escape(&who.task.comm),
            who.task.pid,
            endpoint(who.flow.laddr, who.flow.sport),
            endpoint(who.flow.raddr, who.flow.dport),
            self.netns.suffix(who.flow.netns)
        )
    }
    pub(super) fn observation_human(&mut self, o: &Observation, views: &[MountView]) -> io::Result<()> {
        let who = match o {
            Observation::Connect(a) => &a.who,
            Observation::Reuse(r) => &r.who,
            Observation::Stall { stall, .. } => &stall.who,
            Observation::SynRetransmit { who, .. } | Observation::Close { who, .. } | Observation::Unanswered { who, .. } => who,
        };
        self.netns.see(who.flow.netns);
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
                if r.chance {
                    let _ = write!(
                        line,
                        "{}  {}source port {} used again by chance{} (another transport, or long after; {prev})",
                        self.prefix(&r.who, r.ts_ns),
                        self.style(DIM),
                        r.who.flow.sport,
                        self.style(RESET),
                    );
                } else {
                    let _ = write!(
                        line,
                        "{}  {}REUSED source port {}{} ({} use in a row; {prev})",
                        self.prefix(&r.who, r.ts_ns),
                        self.style(RED_BOLD),
                        r.who.flow.sport,
                        self.style(RESET),
                        ordinal(r.streak + 1),
                    );
                }
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
            Observation::Unanswered { who, ts_ns, retransmits, since_ns } => {
                let _ = write!(
                    line,
                    "{}  {}UNANSWERED{}: data retransmitted {retransmits} times without an ACK for {}",
                    self.prefix(who, *ts_ns),
                    self.style(YELLOW),
                    self.style(RESET),
                    human_duration(ts_ns.saturating_sub(*since_ns))
                );
            }
            Observation::Stall { stall, ended: false } => {
                let prev = match stall.prev_end_ns {
                    Some(e) => format!(" from a flow closed {} ago", human_duration(stall.last_ns.saturating_sub(e))),
                    None => String::new(),
                };
                let reused = if stall.reused { "reused" } else { "new" };
                let _ = write!(
                    line,
                    "{}  {}STALLED {}, SYN retransmits {}, port {} {reused}{prev}{}{}",
                    self.prefix(&stall.who, stall.last_ns),
                    self.style(RED_BOLD),
                    human_duration(stall.duration_ns()),
                    stall.retransmits,
                    stall.who.flow.sport,
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
        // A local proxy's upstream leg: whose mount it carries (stalls
        // name their mounts already).
        if who.xprt == 0 && !matches!(o, Observation::Stall { .. }) {
            let up = proxied_by(views, who.flow.raddr, who.flow.dport, who.flow.netns);
            if !up.is_empty() {
                let m: Vec<String> = up.iter().map(|m| escape(&crate::host::kubelet::mount_label(m)).into_owned()).collect();
                let _ = write!(line, "  [proxy upstream of {}]", m.join(", "));
            }
        }
        line.push('\n');
        self.out.write_all(line.as_bytes())
    }
    pub(super) fn attributed_human(&mut self, a: &Attributed, ts_ns: u64) -> io::Result<()> {
        let mounts: Vec<String> = a
            .mounts
            .iter()
            .map(|m| match crate::host::kubelet::pod_volume(m).map(|p| crate::host::kubelet::describe(&[p])) {
                Some(Some(d)) => escape(&format!("{m} [{d}]")).into_owned(),
                _ => escape(m).into_owned(),
            })
            .collect();
        writeln!(
            self.out,
            "{} xprt {:#x}  {} → {}  is the transport of {} ({})",
            self.clock.time_of_day(ts_ns),
            a.xprt,
            endpoint(a.flow.laddr, a.flow.sport),
            endpoint(a.flow.raddr, a.flow.dport),
            mounts.join(", "),
            a.evidence
        )
    }
    pub(super) fn xprt_human(&mut self, o: &XprtObservation, views: &[MountView]) -> io::Result<()> {
        if let XprtObservation::Connect(XprtConnect { flow, .. }) | XprtObservation::Drop { flow, .. } | XprtObservation::RpcTimeout { flow, .. } = o {
            self.netns.see(flow.netns);
        }
        match o {
            XprtObservation::Destroyed { .. } => Ok(()),
            XprtObservation::Connect(c) => {
                let mounts = mount_list(views, c.xprt, &c.flow, c.srcport, ",");
                let on = if mounts.is_empty() { String::new() } else { format!(" [{mounts}]") };
                let who = format!(
                    "{} xprt {:#x}{on}  {} → {}{}",
                    self.clock.time_of_day(c.ts_ns),
                    c.xprt,
                    endpoint(c.flow.laddr, c.flow.sport),
                    endpoint(c.flow.raddr, c.flow.dport),
                    self.netns.suffix(c.flow.netns)
                );
                let line = match c.prev_sport {
                    None => format!("{who}  transport connected (first connect seen)\n"),
                    Some(prev) => {
                        let down = c.down_ns().map(|d| format!(", down {}", human_duration(d))).unwrap_or_default();
                        let why = c.dropped.as_ref().map(|d| format!(" after {}", d.reason.name())).unwrap_or_default();
                        let (style, what) = if c.reused {
                            (RED_BOLD, format!("RECONNECT REUSED source port {prev}"))
                        } else {
                            (GREEN, format!("reconnect with a new source port ({prev} → {})", c.flow.sport))
                        };
                        format!("{who}  {}{what}{}{why}{down}\n", self.style(style), self.style(RESET))
                    }
                };
                self.out.write_all(line.as_bytes())
            }
            XprtObservation::RpcTimeout { xprt, ts_ns, flow, timeouts, .. } => {
                let mounts = mount_list(views, *xprt, flow, None, ",");
                let on = if mounts.is_empty() { String::new() } else { format!(" [{mounts}]") };
                writeln!(
                    self.out,
                    "{} xprt {xprt:#x}{on}  {} → {}{}  {}RPC TIMEOUT{} (major, #{timeouts} on this transport): the server did not answer in time",
                    self.clock.time_of_day(*ts_ns),
                    endpoint(flow.laddr, flow.sport),
                    endpoint(flow.raddr, flow.dport),
                    self.netns.suffix(flow.netns),
                    self.style(YELLOW),
                    self.style(RESET),
                )
            }
            XprtObservation::Drop { xprt, ts_ns, flow, reason } => writeln!(
                self.out,
                "{} xprt {xprt:#x}  :{} → {}{}  transport dropped: {}",
                self.clock.time_of_day(*ts_ns),
                flow.sport,
                endpoint(flow.raddr, flow.dport),
                self.netns.suffix(flow.netns),
                reason.name()
            ),
        }
    }
}
