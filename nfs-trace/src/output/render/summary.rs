//! The end-of-run summary: per destination, per transport, stalls and the
//! verdict per mount, as a table for people or one JSON record.
use std::{
    fmt::Write as _,
    io::{self, Write},
    net::IpAddr,
};

use serde::Serialize;

use super::{
    Format, Renderer,
    human::{RED_BOLD, RESET, endpoint, human_duration},
    json::{StallBody, ms3},
    episode::EpisodeBody,
};
use crate::{
    flow::{Flow, Netns},
    host::nfsmounts::MountView,
    output::escape::escape,
    kernel::lost::Lost,
    model::tcp::{DestKey, Tracker},
    model::episode::EpisodeTracker,
    model::verdict::{Verdict, honoured, port_range},
    model::xprt::XprtTracker,
};

#[derive(Serialize)]
pub struct DestSummary {
    #[serde(flatten)]
    pub dest: DestKey,
    pub connects: u64,
    pub distinct_ports: usize,
    pub reuses: u64,
    pub failed: u64,
    pub syn_retransmits: u64,
    pub max_syn_sent_ms: f64,
    /// Repeats of a flow taken as chance (not in `reuses`).
    pub chance_reuses: u64,
}

#[derive(Serialize)]
struct SummaryBody {
    duration_s: f64,
    lost_events: u64,
    lost_sockets: u64,
    lost_connects: u64,
    missed_runs: u64,
    evicted_destinations: u64,
    /// Flows remembered at exit, and forgotten to bound memory.
    tracked_flows: usize,
    evicted_flows: u64,
    destinations: Vec<DestSummary>,
    transports: Vec<XprtSummary>,
    mounts: Vec<Verdict>,
    stalls: Vec<StallSummary>,
    /// Ended ones, then those going on.
    episodes: Vec<EpisodeBody>,
}

#[derive(Serialize)]
struct StallSummary {
    #[serde(flatten)]
    flow: Flow,
    ongoing: bool,
    #[serde(flatten)]
    body: StallBody,
}

#[derive(Serialize)]
pub struct XprtSummary {
    pub xprt: String,
    pub raddr: Option<IpAddr>,
    pub dport: u16,
    pub netns: Netns,
    pub connects: u64,
    pub reconnects: u64,
    pub reuses: u64,
    pub ports: Vec<u16>,
    /// Ports the transport used, all below 1024 (resvport), none, or mixed.
    pub port_range: &'static str,
}

impl<W: Write> Renderer<W> {
    // The run's whole state, from its one caller (watch).
    #[allow(clippy::too_many_arguments)]
    pub fn summary(
        &mut self,
        t: &Tracker,
        x: &XprtTracker,
        views: &[MountView],
        verdicts: Vec<Verdict>,
        lost: Lost,
        duration_ns: u64,
        episodes: &EpisodeTracker,
    ) -> io::Result<()> {
        let seen_ok = honoured(&verdicts);
        let episodes: Vec<EpisodeBody> = episodes
            .ended
            .iter()
            .map(|e| self.episode_body(e, "ended", views, &seen_ok))
            .chain(episodes.open_episodes().iter().map(|e| self.episode_body(e, "ongoing", views, &seen_ok)))
            .collect();
        let stalls: Vec<StallSummary> = t
            .stalls
            .iter()
            .map(|st| (st, false))
            .chain(t.open_stalls().into_iter().map(|st| (st, true)))
            .map(|(st, ongoing)| StallSummary {
                flow: st.who.flow,
                ongoing,
                body: self.stall_body(st, views),
            })
            .collect();
        let transports: Vec<XprtSummary> = x
            .all()
            .into_iter()
            .map(|(k, s)| XprtSummary {
                xprt: format!("{k:#x}"),
                raddr: s.raddr,
                dport: s.dport,
                netns: s.netns,
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
                dest: k,
                connects: d.connects,
                distinct_ports: d.distinct_ports(),
                reuses: d.reuses,
                failed: d.failed,
                syn_retransmits: d.syn_retransmits,
                max_syn_sent_ms: ms3(d.max_syn_sent_ns),
                chance_reuses: d.chance_reuses,
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
                    missed_runs: lost.missed_runs,
                    evicted_destinations: t.evicted,
                    tracked_flows: t.flow_counts().0,
                    evicted_flows: t.flow_counts().1,
                    destinations: dests,
                    transports,
                    mounts: verdicts,
                    stalls,
                    episodes,
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
                    self.netns.see(d.dest.netns);
                }
                for d in &dests {
                    let reuse_style = if d.reuses > 0 { self.style(RED_BOLD) } else { "" };
                    let reset = if d.reuses > 0 { self.style(RESET) } else { "" };
                    let _ = writeln!(
                        s,
                        "{:<44} {:>8} {:>6} {reuse_style}{:>6}{reset} {:>6} {:>8} {:>13}",
                        format!("{} → {}{}", d.dest.laddr, endpoint(d.dest.raddr, d.dest.dport), self.netns.suffix(d.dest.netns)),
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
                        let server = x.raddr.map(|a| endpoint(a, x.dport) + &self.netns.suffix(x.netns)).unwrap_or_default();
                        let ports: Vec<String> = x.ports.iter().map(u16::to_string).collect();
                        let _ = writeln!(
                            s,
                            "{:<20} {:<28} {:>8} {:>10} {:>6}  {:<9} {}",
                            x.xprt, server, x.connects, x.reconnects, x.reuses, x.port_range, ports.join(",")
                        );
                    }
                }
                if !stalls.is_empty() {
                    let _ = writeln!(s, "\n{}Stalls (connects stuck in SYN_SENT, from a reused port unless marked new):{}", self.style(RED_BOLD), self.style(RESET));
                    for st in &stalls {
                        let mounts = if st.body.mounts.is_empty() { String::new() } else { format!("  [{}]", escape(&st.body.mounts.join(", "))) };
                        let _ = writeln!(
                            s,
                            "  {} → {}{}{}{mounts}  from {}  {:.1} s{}, {} SYN retransmits, {} failed attempts{}",
                            endpoint(st.flow.laddr, st.flow.sport),
                            endpoint(st.flow.raddr, st.flow.dport),
                            self.netns.suffix(st.flow.netns),
                            if st.body.reused { "" } else { " (new port)" },
                            st.body.start,
                            st.body.duration_s,
                            if st.ongoing { " and still going" } else { "" },
                            st.body.retransmits,
                            st.body.failed_attempts,
                            if st.body.kernel_said.is_empty() { String::new() } else { format!("; kernel: {}", escape(&st.body.kernel_said.join(" | "))) }
                        );
                    }
                }
                if !episodes.is_empty() {
                    let _ = writeln!(s, "\n{}Episodes (first symptom to recovery, with a verdict):{}", self.style(RED_BOLD), self.style(RESET));
                    for e in &episodes {
                        let mounts = if e.mounts.is_empty() { String::new() } else { format!("  [{}]", escape(&e.mounts.join(", "))) };
                        let _ = writeln!(
                            s,
                            "  #{} {} → {}{}{mounts}  from {}  {:.1} s{}: {}: {}\n    → {}",
                            e.id,
                            endpoint(e.flow.laddr, e.flow.sport),
                            endpoint(e.flow.raddr, e.flow.dport),
                            self.netns.suffix(e.flow.netns),
                            e.start,
                            e.duration_s,
                            if e.ongoing { " and still going" } else { "" },
                            e.verdict,
                            escape(&e.evidence),
                            escape(&e.advice)
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
                            escape(&v.mountpoint),
                            escape(&v.server),
                            escape(v.vers.as_deref().unwrap_or("?")),
                            if v.noresvport { ",noresvport" } else { "" },
                            escape(&v.observed),
                            escape(&v.suggestion)
                        );
                    }
                }
                let any = lost.events + lost.sockets + lost.missed_runs > 0;
                let lost_style = if any { self.style(RED_BOLD) } else { "" };
                let reset = if any { self.style(RESET) } else { "" };
                let missed = if lost.missed_runs > 0 {
                    format!(", hook runs the kernel skipped (another BPF program on that CPU): {}", lost.missed_runs)
                } else {
                    String::new()
                };
                let _ = writeln!(
                    s,
                    "{lost_style}lost events: {} ({} connects), lost sockets: {}{missed}{reset}",
                    lost.events, lost.connects, lost.sockets
                );
                if t.evicted > 0 {
                    let _ = writeln!(s, "destinations evicted to bound memory: {}", t.evicted);
                }
                let (flows, forgotten) = t.flow_counts();
                if forgotten > 0 {
                    let _ = writeln!(
                        s,
                        "flows forgotten to bound memory: {forgotten} (a reuse of one of them is not recognised; {flows} remembered)"
                    );
                }
                self.out.write_all(s.as_bytes())
            }
        }
    }
}
