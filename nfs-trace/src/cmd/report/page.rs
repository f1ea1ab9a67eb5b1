//! The report page's content, gathered run by run as the replay ends each:
//! episodes with their phases and marks, and each mount's reconnects. The
//! words are the episode records' own (`Renderer::episode_body`); the page
//! itself is drawn by output/html.rs.
use std::io::Write;

use super::replay::Run;
use crate::{
    model::episode::Episode,
    output::{
        html::{self, EpisodeSection, Mark, MountSection, Phase, ReconnectRow},
        render::Renderer,
    },
};

/// Marks shown per episode (the newest kept when there are more).
const MARKS_PER_EPISODE: usize = 2_000;

pub struct Builder {
    source: String,
    episodes: Vec<EpisodeSection>,
    mounts: Vec<MountSection>,
    facts: Vec<String>,
    runs: u32,
    /// Episode ids are per run: later runs' are shifted past the earlier
    /// ones' so the page's anchors stay unique.
    id_offset: u64,
}

fn phases(e: &Episode, end_ns: u64) -> Vec<Phase> {
    let mut out = Vec::new();
    let closed = e.closed.as_ref().map(|c| c.ts_ns);
    let reconnect = e.reconnect.as_ref().map(|r| r.start_ns);
    let recovered = e.recovered.as_ref().map(|r| r.ts_ns);
    if let Some(u) = &e.unanswered {
        let until = closed.or(reconnect).or(recovered).unwrap_or(end_ns);
        let note = format!("{} data retransmits without ACK progress, {} RPC major timeouts", u.data_retransmits, u.rpc_timeouts);
        out.push(Phase { name: "unanswered".into(), start_ns: u.start_ns.min(until), end_ns: until, note });
    }
    if let Some(c) = &e.closed {
        let until = reconnect.or(recovered).unwrap_or(end_ns).max(c.ts_ns);
        let errno = c.errno.and_then(crate::kernel::decode::errno_name).map(|n| format!(" ({n})")).unwrap_or_default();
        out.push(Phase { name: "closed".into(), start_ns: c.ts_ns, end_ns: until, note: format!("{}{errno}, from :{}", c.how, c.sport) });
    }
    if let Some(r) = &e.reconnect {
        let until = recovered.unwrap_or(end_ns).max(r.start_ns);
        let ports: Vec<String> = r.ports.iter().map(|p| format!(":{p}")).collect();
        let mut note = format!("{} SYN retransmits, {} failed attempts, ports {}", r.syn_retransmits, r.failed_attempts, ports.join(" "));
        if r.stalled {
            note.push_str(if r.reused { "; stalled on a reused flow" } else { "; stalled on a new port" });
        }
        out.push(Phase { name: "reconnecting".into(), start_ns: r.start_ns, end_ns: until, note });
    }
    if let Some(r) = &e.recovered {
        out.push(Phase { name: "recovered".into(), start_ns: r.ts_ns, end_ns: r.ts_ns, note: format!("connected from :{}", r.sport) });
    }
    out
}

impl Builder {
    pub fn new(source: &str) -> Builder {
        Builder { source: source.to_string(), episodes: Vec::new(), mounts: Vec::new(), facts: Vec::new(), runs: 0, id_offset: 0 }
    }

    /// A run's episodes (as the filter left them) and mounts.
    pub fn add_run<W: Write>(&mut self, out: &Renderer<W>, r: &mut Run, now_ns: u64) {
        self.runs += 1;
        let c = r.clock;
        self.facts.push(format!(
            "Run {}: {} to {}{}",
            self.runs,
            c.rfc3339(r.start_ns),
            c.rfc3339(now_ns),
            if r.end.is_some() { "" } else { " (the recording stops before the watch ended)" }
        ));
        if r.marks_dropped > 0 {
            self.facts.push(format!("Run {}: {} older marks not kept (over {} in all)", self.runs, r.marks_dropped, super::replay::MARKS_MAX));
        }
        let eps: Vec<Episode> = r.feed.episodes.ended.iter().chain(r.feed.episodes.open_episodes()).cloned().collect();
        if self.id_offset > 0 && !eps.is_empty() {
            self.facts.push(format!("Run {}: its episodes #1… are shown as #{}…", self.runs, self.id_offset + 1));
        }
        let offset = self.id_offset;
        self.id_offset += eps.iter().map(|e| e.id).max().unwrap_or(0);
        for e in &eps {
            let b = out.episode_body(e, if e.ended() { "ended" } else { "ongoing" }, &r.feed.views, &r.feed.honoured);
            let end_ns = e.end_ns().unwrap_or(now_ns).max(e.start_ns);
            let mut marks: Vec<Mark> = r
                .marks_of(e)
                .map(|m| Mark { ts_ns: m.ts_ns, time: c.rfc3339(m.ts_ns), kind: m.kind, label: m.label.clone() })
                .collect();
            if marks.len() > MARKS_PER_EPISODE {
                marks.drain(..marks.len() - MARKS_PER_EPISODE);
            }
            let netns = e.flow.netns.known().map(|n| format!(" (netns {n})")).unwrap_or_default();
            self.episodes.push(EpisodeSection {
                id: offset + e.id,
                verdict: b.verdict.to_string(),
                evidence: b.evidence,
                advice: b.advice,
                opened_by: b.opened_by.to_string(),
                flow: format!("{}:{} → {}:{}{netns}", e.flow.laddr, e.flow.sport, e.flow.raddr, e.flow.dport),
                mounts: b.mounts,
                start: b.start,
                end: b.end,
                duration_s: b.duration_s,
                start_ns: e.start_ns,
                end_ns,
                phases: phases(e, end_ns),
                marks,
                kernel_said: e.kernel_said.clone(),
            });
        }
        for v in &r.feed.views {
            let rows = r.reconnects.iter().find(|(m, _)| *m == v.mountpoint).map(|(_, rows)| rows);
            let reconnects = rows
                .into_iter()
                .flatten()
                .map(|x| ReconnectRow { time: c.rfc3339(x.ts_ns), sport: x.sport, prev_sport: x.prev_sport, reused: x.reused, outcome: x.outcome.to_string() })
                .collect();
            let mut options = Vec::new();
            if v.noresvport {
                options.push("noresvport".to_string());
            }
            if v.nconnect > 1 {
                options.push(format!("nconnect={}", v.nconnect));
            }
            self.mounts.push(MountSection {
                mountpoint: v.mountpoint.clone(),
                source: v.source.clone(),
                vers: v.vers.clone().unwrap_or_else(|| "?".into()),
                options: options.join(","),
                reconnects,
            });
        }
    }

    pub fn finish(self, kernel: Option<&str>, lines: u64, skipped: u64, skipped_why: &str) -> String {
        let mut facts = Vec::new();
        if let Some(k) = kernel {
            facts.push(format!("Kernel {k}"));
        }
        facts.push(format!("{lines} lines read, {} recorded run(s)", self.runs));
        if skipped > 0 {
            facts.push(format!("{skipped} lines skipped: {skipped_why}"));
        }
        facts.extend(self.facts);
        html::page(&html::Page { title: format!("nfs-trace report: {}", self.source), facts, episodes: self.episodes, mounts: self.mounts })
    }
}
