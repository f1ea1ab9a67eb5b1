//! The `canary` record (docs/json-schema.md) and its human line: what a
//! fresh-port connect to a stalled server found, and what that means.
use std::io::{self, Write};

use serde::Serialize;

use super::{
    Renderer,
    human::{GREEN, RED_BOLD, RESET, YELLOW, endpoint, human_duration},
    json::ms3,
};
use crate::{
    flow::DestKey,
    kernel::decode::errno_name,
    model::canary::{CanaryOutcome, CanaryResult},
};

#[derive(Serialize)]
struct CanaryBody {
    /// When it ended (wall clock, and CLOCK_MONOTONIC).
    time: String,
    mono_ns: u64,
    #[serde(flatten)]
    dest: DestKey,
    /// The canary's own source port.
    sport: u16,
    /// The port of the flow that stalls, where known.
    stalled_sport: Option<u16>,
    outcome: &'static str,
    rtt_ms: Option<f64>,
    errno: Option<i32>,
    errno_name: Option<&'static str>,
    start: String,
    end: String,
    duration_ms: f64,
}

fn outcome_name(o: CanaryOutcome) -> &'static str {
    match o {
        CanaryOutcome::Connected { .. } => "connected",
        CanaryOutcome::Refused => "refused",
        CanaryOutcome::Error(_) => "error",
        CanaryOutcome::TimedOut => "timed_out",
    }
}

/// What the canary's connect did, in words ("connected in 1.2ms",
/// "failed (EHOSTUNREACH)"): the live line and the report's timeline say it
/// the same way.
pub fn outcome_text(r: &CanaryResult) -> String {
    match r.outcome {
        CanaryOutcome::Connected { rtt_ns } => format!("connected in {}", human_duration(rtt_ns)),
        CanaryOutcome::Refused => "refused".to_string(),
        CanaryOutcome::Error(e) => format!("failed ({})", errno_name(e).map_or_else(|| format!("errno {e}"), str::to_string)),
        CanaryOutcome::TimedOut => format!("timed out after {}", human_duration(r.end_ns.saturating_sub(r.start_ns))),
    }
}

impl<W: Write> Renderer<W> {
    /// One canary that ran, for the stall on `stalled_sport`.
    pub fn canary(&mut self, r: &CanaryResult, stalled_sport: Option<u16>) -> io::Result<()> {
        match self.format {
            super::Format::Json => {
                let errno = match r.outcome {
                    CanaryOutcome::Error(e) => Some(e),
                    _ => None,
                };
                let body = CanaryBody {
                    time: self.clock.rfc3339(r.end_ns),
                    mono_ns: r.end_ns,
                    dest: r.dest,
                    sport: r.sport,
                    stalled_sport,
                    outcome: outcome_name(r.outcome),
                    rtt_ms: match r.outcome {
                        CanaryOutcome::Connected { rtt_ns } => Some(ms3(rtt_ns)),
                        _ => None,
                    },
                    errno,
                    errno_name: errno.and_then(errno_name),
                    start: self.clock.rfc3339(r.start_ns),
                    end: self.clock.rfc3339(r.end_ns),
                    duration_ms: ms3(r.end_ns.saturating_sub(r.start_ns)),
                };
                self.json_line("canary", body)
            }
            super::Format::Human { .. } => {
                self.netns.see(r.dest.netns);
                let (style, means) = match r.outcome {
                    CanaryOutcome::Connected { .. } => (GREEN, "the server answers new flows"),
                    CanaryOutcome::Refused => (YELLOW, "the server's host answers, but nothing listens on that port"),
                    CanaryOutcome::Error(_) => (RED_BOLD, "the server or the path is down for new flows too"),
                    CanaryOutcome::TimedOut => (RED_BOLD, "the server or the path drops new flows too"),
                };
                let what = outcome_text(r);
                let stalls = match stalled_sport {
                    Some(p) => format!("port {p} stalls"),
                    None => "a flow to it stalls".to_string(),
                };
                writeln!(
                    self.out,
                    "{} canary from :{} to {}{} {}{what}{} while {stalls} — {means}",
                    self.clock.time_of_day(r.end_ns),
                    r.sport,
                    endpoint(r.dest.raddr, r.dest.dport),
                    self.netns.suffix(r.dest.netns),
                    self.style(style),
                    self.style(RESET),
                )
            }
        }
    }
}
