//! Episodes (model/episode.rs) for people and machines: a line when one
//! opens, when its verdict changes, while it goes on and when it ends; the
//! JSON `episode` record (docs/json-schema.md) with its phases and times.
use std::io::{self, Write};

use serde::Serialize;

use super::{
    Format, Renderer,
    human::{GREEN, RED_BOLD, RESET, YELLOW, endpoint, human_duration},
    json::ms3,
};
use crate::{
    flow::Flow,
    host::nfsmounts::MountView,
    kernel::decode::errno_name,
    model::attribution::{Transport, attribute},
    model::canary::CanaryOutcome,
    model::episode::{Episode, EpisodeObservation, UNANSWERED_NOT_OBSERVED, VerdictName, advice},
    output::escape::escape,
};

#[derive(Serialize)]
struct UnansweredBody {
    start: String,
    mono_ns: u64,
    data_retransmits: u32,
    rpc_timeouts: u32,
    /// The first and latest RPC major timeout (null with none).
    rpc_first_mono_ns: Option<u64>,
    rpc_last_mono_ns: Option<u64>,
}

#[derive(Serialize)]
struct ClosedBody {
    time: String,
    mono_ns: u64,
    how: &'static str,
    errno: Option<i32>,
    errno_name: Option<&'static str>,
    sport: u16,
}

#[derive(Serialize)]
struct CanaryBody {
    sport: u16,
    start: String,
    end: String,
    /// "connected", "refused", "error", "timed_out".
    outcome: &'static str,
    rtt_ms: Option<f64>,
    errno: Option<i32>,
}

#[derive(Serialize)]
struct ReconnectBody {
    start: String,
    mono_ns: u64,
    ports: Vec<u16>,
    syn_retransmits: u32,
    failed_attempts: u32,
    stalled: bool,
    reused: bool,
    stall_start: Option<String>,
    siblings_connected: u32,
    canary: Option<CanaryBody>,
}

#[derive(Serialize)]
struct RecoveredBody {
    time: String,
    mono_ns: u64,
    sport: u16,
}

#[derive(Serialize)]
struct Phases {
    /// Null when no data retransmit without ACK progress was seen
    /// (`unanswered_note` says so).
    unanswered: Option<UnansweredBody>,
    unanswered_note: Option<&'static str>,
    closed: Option<ClosedBody>,
    reconnect: Option<ReconnectBody>,
    recovered: Option<RecoveredBody>,
}

#[derive(Serialize)]
pub struct EpisodeBody {
    pub id: u64,
    /// "opened", "verdict", "ongoing", "ended".
    state: &'static str,
    time: String,
    mono_ns: u64,
    #[serde(flatten)]
    pub flow: Flow,
    xprt: Option<String>,
    pub mounts: Vec<String>,
    /// The Kubernetes pods those mounts are volumes of (absent when none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pods: Vec<crate::host::kubelet::PodVolume>,
    /// "transport_drop", "close", "stall", "unanswered", "rpc_timeout".
    pub opened_by: &'static str,
    pub start: String,
    pub end: Option<String>,
    pub duration_s: f64,
    pub ongoing: bool,
    pub verdict: &'static str,
    pub evidence: String,
    pub advice: String,
    phases: Phases,
    kernel_said: Vec<String>,
}

fn state(o: &EpisodeObservation) -> &'static str {
    match o {
        EpisodeObservation::Opened(_) => "opened",
        EpisodeObservation::Verdict(_) => "verdict",
        EpisodeObservation::Ongoing(_) => "ongoing",
        EpisodeObservation::Ended(_) => "ended",
    }
}

fn mounts_of<'a>(views: &'a [MountView], e: &Episode) -> Vec<&'a MountView> {
    attribute(views, &Transport::of_flow(e.xprt, &e.flow, None)).0
}

impl<W: Write> Renderer<W> {
    /// What an episode record says (`report --html` shows the same).
    pub fn episode_body(&self, e: &Episode, state: &'static str, views: &[MountView], honoured: &[String]) -> EpisodeBody {
        let mounts = mounts_of(views, e);
        let c = &self.clock;
        let phases = Phases {
            unanswered: e.unanswered.as_ref().map(|u| UnansweredBody {
                start: c.rfc3339(u.start_ns),
                mono_ns: u.start_ns,
                data_retransmits: u.data_retransmits,
                rpc_timeouts: u.rpc_timeouts,
                rpc_first_mono_ns: (u.rpc_timeouts > 0).then_some(u.rpc_first_ns),
                rpc_last_mono_ns: (u.rpc_timeouts > 0).then_some(u.rpc_last_ns),
            }),
            unanswered_note: e.unanswered.is_none().then_some(UNANSWERED_NOT_OBSERVED),
            closed: e.closed.as_ref().map(|x| ClosedBody {
                time: c.rfc3339(x.ts_ns),
                mono_ns: x.ts_ns,
                how: x.how,
                errno: x.errno,
                errno_name: x.errno.and_then(errno_name),
                sport: x.sport,
            }),
            reconnect: e.reconnect.as_ref().map(|r| ReconnectBody {
                start: c.rfc3339(r.start_ns),
                mono_ns: r.start_ns,
                ports: r.ports.clone(),
                syn_retransmits: r.syn_retransmits,
                failed_attempts: r.failed_attempts,
                stalled: r.stalled,
                reused: r.reused,
                stall_start: r.stall_start_ns.map(|t| c.rfc3339(t)),
                siblings_connected: r.siblings_connected,
                canary: r.canary.as_ref().map(|k| CanaryBody {
                    sport: k.sport,
                    start: c.rfc3339(k.start_ns),
                    end: c.rfc3339(k.end_ns),
                    outcome: match k.outcome {
                        CanaryOutcome::Connected { .. } => "connected",
                        CanaryOutcome::Refused => "refused",
                        CanaryOutcome::Error(_) => "error",
                        CanaryOutcome::TimedOut => "timed_out",
                    },
                    rtt_ms: match k.outcome {
                        CanaryOutcome::Connected { rtt_ns } => Some(ms3(rtt_ns)),
                        _ => None,
                    },
                    errno: match k.outcome {
                        CanaryOutcome::Error(e) => Some(e),
                        _ => None,
                    },
                }),
            }),
            recovered: e.recovered.as_ref().map(|x| RecoveredBody { time: c.rfc3339(x.ts_ns), mono_ns: x.ts_ns, sport: x.sport }),
        };
        let at = e.end_ns().unwrap_or(e.last_ns);
        EpisodeBody {
            id: e.id,
            state,
            time: c.rfc3339(at),
            mono_ns: at,
            flow: e.flow,
            xprt: (e.xprt != 0).then(|| format!("{:#x}", e.xprt)),
            mounts: mounts.iter().map(|m| m.mountpoint.clone()).collect(),
            pods: crate::host::kubelet::pods_of_all(mounts.iter().copied()),
            opened_by: e.opened_by.name(),
            start: c.rfc3339(e.start_ns),
            end: e.end_ns().map(|t| c.rfc3339(t)),
            duration_s: (e.duration_ns() as f64 / 1e6).round() / 1e3,
            ongoing: !e.ended(),
            verdict: e.verdict.name(),
            evidence: e.evidence.clone(),
            advice: advice(e, &mounts, honoured),
            phases,
            kernel_said: e.kernel_said.clone(),
        }
    }

    /// One episode observation; `honoured` names the option sets this host
    /// honoured (`model::verdict::honoured`), for the advice.
    pub fn episode(&mut self, o: &EpisodeObservation, views: &[MountView], honoured: &[String]) -> io::Result<()> {
        let e = o.episode();
        if self.format == Format::Json {
            let body = self.episode_body(e, state(o), views, honoured);
            return self.json_line("episode", body);
        }
        self.netns.see(e.flow.netns);
        let mounts: Vec<String> = mounts_of(views, e).iter().map(|m| escape(&crate::host::kubelet::mount_label(m)).into_owned()).collect();
        let on = if mounts.is_empty() { String::new() } else { format!(" (mount {})", mounts.join(", ")) };
        let who = format!(
            "{} EPISODE #{}  {} → {}{}{on}",
            self.clock.time_of_day(e.end_ns().unwrap_or(e.last_ns)),
            e.id,
            endpoint(e.flow.laddr, e.flow.sport),
            endpoint(e.flow.raddr, e.flow.dport),
            self.netns.suffix(e.flow.netns)
        );
        let style = if e.verdict == VerdictName::Unknown { YELLOW } else { RED_BOLD };
        let verdict = format!("{}{}{}: {}", self.style(style), e.verdict.name(), self.style(RESET), escape(&e.evidence));
        let line = match o {
            EpisodeObservation::Opened(_) => format!("{who}  opened by {}; verdict {verdict}", e.opened_by.describe()),
            EpisodeObservation::Verdict(_) => {
                let m = mounts_of(views, e);
                format!("{who}  verdict {verdict}\n    → {}", escape(&advice(e, &m, honoured)))
            }
            EpisodeObservation::Ongoing(_) => format!("{who}  going on for {}; verdict {verdict}", human_duration(e.duration_ns())),
            EpisodeObservation::Ended(_) => {
                let how = if e.recovered.is_some() { format!("{}recovered{}", self.style(GREEN), self.style(RESET)) } else { "ended (transport destroyed)".into() };
                let m = mounts_of(views, e);
                format!("{who}  {how} after {}; verdict {verdict}\n    → {}", human_duration(e.duration_ns()), escape(&advice(e, &m, honoured)))
            }
        };
        writeln!(self.out, "{line}")
    }
}
