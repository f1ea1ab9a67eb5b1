//! The report page (`nfs-trace report --html OUT.html`): one self-contained
//! HTML file. No script, no fetch of any kind (the style is inline, the
//! timelines are inline SVG), a light and a dark theme, and a print layout.
//!
//! A pure renderer: [`page`] takes plain data ([`Page`], built by
//! `cmd::report`) and returns the text. Every string in it came from outside
//! (mount points, kernel lines, process names) and is written through
//! [`text`]: control characters made visible (`output::escape`), then HTML
//! escaped ([`escape_html`]), in element text and attribute values alike.
use std::{borrow::Cow, fmt, fmt::Write as _};

use crate::output::escape::escape;

mod timeline;
#[cfg(test)]
mod tests;

/// The page's whole style sheet, written inline into `<style>`.
const STYLE: &str = include_str!("html/style.css");
/// Marks listed per episode; past that one line says how many were left out
/// (the timeline still draws them all).
const MAX_MARK_ROWS: usize = 500;
/// Kernel log lines listed per episode, likewise.
const MAX_KERNEL_LINES: usize = 200;

/// Everything one report page shows: plain data, built by `cmd::report`.
#[derive(Clone, Debug, Default)]
pub struct Page {
    /// e.g. "nfs-trace report: trace.jsonl"
    pub title: String,
    /// Lines shown under the title as facts about the recording (kernel,
    /// host, time span, records read, lines skipped, lost events). Plain text.
    pub facts: Vec<String>,
    pub episodes: Vec<EpisodeSection>,
    pub mounts: Vec<MountSection>,
}

/// One episode: a hang from its first symptom to its recovery (or to the end
/// of the recording), judged.
#[derive(Clone, Debug, Default)]
pub struct EpisodeSection {
    pub id: u64,
    /// e.g. "reused-flow-dropped"
    pub verdict: String,
    /// One sentence.
    pub evidence: String,
    /// One sentence.
    pub advice: String,
    /// e.g. "stall", "transport_drop", "unanswered", "close", "rpc_timeout"
    pub opened_by: String,
    /// e.g. "10.0.2.15:799 → 10.0.2.2:2049 (netns 4026531840)"
    pub flow: String,
    pub mounts: Vec<String>,
    /// RFC 3339 wall time.
    pub start: String,
    /// None: still going on when the recording ended.
    pub end: Option<String>,
    pub duration_s: f64,
    /// Timeline origin and end, CLOCK_MONOTONIC ns. Phases and marks outside
    /// this range are drawn clamped to it (the tables give their real times).
    pub start_ns: u64,
    pub end_ns: u64,
    pub phases: Vec<Phase>,
    pub marks: Vec<Mark>,
    pub kernel_said: Vec<String>,
}

/// A stretch of time the flow spent in one state: a bar on its own lane.
#[derive(Clone, Debug, Default)]
pub struct Phase {
    /// "unanswered" | "closed" | "reconnecting" | "stalled" | "recovered", or
    /// any other name (drawn in a neutral colour).
    pub name: String,
    pub start_ns: u64,
    pub end_ns: u64,
    pub note: String,
}

/// One instant on the timeline.
#[derive(Clone, Debug)]
pub struct Mark {
    pub ts_ns: u64,
    /// RFC 3339 wall time.
    pub time: String,
    pub kind: MarkKind,
    /// Short text, e.g. "SYN retransmit 3 from :799".
    pub label: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MarkKind {
    Connect { ok: bool },
    SynRetransmit,
    DataRetransmit,
    Close,
    TransportDrop,
    RpcTimeout,
    Canary { connected: bool },
    KernelLine,
}

impl MarkKind {
    /// What the mark is, in words (the tables and the legend).
    pub fn describe(self) -> &'static str {
        match self {
            MarkKind::Connect { ok: true } => "connect succeeded",
            MarkKind::Connect { ok: false } => "connect failed",
            MarkKind::SynRetransmit => "SYN retransmit",
            MarkKind::DataRetransmit => "data retransmit",
            MarkKind::Close => "close",
            MarkKind::TransportDrop => "transport drop",
            MarkKind::RpcTimeout => "RPC timeout",
            MarkKind::Canary { connected: true } => "canary connected",
            MarkKind::Canary { connected: false } => "canary failed",
            MarkKind::KernelLine => "kernel log line",
        }
    }
}

/// One NFS mount and the reconnects seen on its transports.
#[derive(Clone, Debug, Default)]
pub struct MountSection {
    pub mountpoint: String,
    /// server:/export
    pub source: String,
    pub vers: String,
    /// e.g. "noresvport" or ""
    pub options: String,
    pub reconnects: Vec<ReconnectRow>,
}

#[derive(Clone, Debug, Default)]
pub struct ReconnectRow {
    /// RFC 3339 wall time.
    pub time: String,
    pub sport: u16,
    pub prev_sport: Option<u16>,
    /// The reconnect came from the port of the connection before it.
    pub reused: bool,
    pub outcome: String,
}

/// `s` with `&`, `<`, `>`, `"` and `'` written as character references, safe
/// in element text and in quoted attribute values. Borrowed when nothing
/// needs it.
pub fn escape_html(s: &str) -> Cow<'_, str> {
    if !s.contains(['&', '<', '>', '"', '\'']) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Outside text for the page: control characters and bidi overrides made
/// visible (as on the terminal), then HTML escaped.
pub fn text(s: &str) -> String {
    escape_html(&escape(s)).into_owned()
}

/// The whole page.
pub fn page(p: &Page) -> String {
    let mut out = String::with_capacity(16 * 1024 + p.episodes.len() * 8 * 1024);
    write_page(&mut out, p).expect("writing to a String cannot fail");
    out
}

fn write_page(out: &mut String, p: &Page) -> fmt::Result {
    let title = text(&p.title);
    writeln!(out, "<!DOCTYPE html>")?;
    writeln!(out, "<html lang=\"en\">")?;
    writeln!(out, "<head>")?;
    writeln!(out, "<meta charset=\"utf-8\">")?;
    writeln!(out, "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">")?;
    writeln!(out, "<meta name=\"color-scheme\" content=\"light dark\">")?;
    writeln!(out, "<meta name=\"generator\" content=\"nfs-trace {}\">", env!("CARGO_PKG_VERSION"))?;
    writeln!(out, "<title>{title}</title>")?;
    writeln!(out, "<style>\n{STYLE}</style>")?;
    writeln!(out, "</head>")?;
    writeln!(out, "<body>")?;
    writeln!(out, "<header class=\"page-head\">")?;
    writeln!(out, "<h1>{title}</h1>")?;
    if !p.facts.is_empty() {
        writeln!(out, "<ul class=\"facts\">")?;
        for f in &p.facts {
            writeln!(out, "<li>{}</li>", text(f))?;
        }
        writeln!(out, "</ul>")?;
    }
    writeln!(out, "</header>")?;
    writeln!(out, "<main>")?;
    overview(out, &p.episodes)?;
    for e in &p.episodes {
        episode(out, e)?;
    }
    mounts(out, &p.mounts)?;
    writeln!(out, "</main>")?;
    writeln!(
        out,
        "<footer>Written by nfs-trace {}. Times on the timelines are seconds since each episode's first symptom.</footer>",
        env!("CARGO_PKG_VERSION")
    )?;
    writeln!(out, "</body>")?;
    writeln!(out, "</html>")
}

/// The CSS class of a verdict's badge; the badge's text is the verdict
/// itself, so its colour is never the only carrier of its meaning.
fn verdict_class(verdict: &str) -> &'static str {
    match verdict {
        "reused-flow-dropped" => "v-reused",
        "server-or-path-down" => "v-down",
        "server-not-answering" => "v-silent",
        "path-blackhole" => "v-blackhole",
        _ => "v-unknown",
    }
}

fn badge(out: &mut String, verdict: &str) -> fmt::Result {
    write!(out, "<span class=\"badge {}\">{}</span>", verdict_class(verdict), text(verdict))
}

/// Seconds from `origin_ns` to `ts_ns` (negative before it).
fn rel_secs(ts_ns: u64, origin_ns: u64) -> f64 {
    (i128::from(ts_ns) - i128::from(origin_ns)) as f64 / 1e9
}

/// "+12.345 s" (or "-0.200 s" before the origin).
fn fmt_rel(secs: f64) -> String {
    if !secs.is_finite() {
        return "?".to_string();
    }
    let sign = if secs < 0.0 { '-' } else { '+' };
    format!("{sign}{:.3} s", secs.abs())
}

/// A length of time for people: "0.250 s", "12.3 s", "4 min 05 s", "2 h 03 min".
fn fmt_duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "?".to_string();
    }
    if secs < 1.0 {
        format!("{secs:.3} s")
    } else if secs < 60.0 {
        format!("{secs:.1} s")
    } else if secs < 3600.0 {
        let s = secs.round() as u64;
        format!("{} min {:02} s", s / 60, s % 60)
    } else {
        let m = (secs / 60.0).round() as u64;
        format!("{} h {:02} min", m / 60, m % 60)
    }
}

fn overview(out: &mut String, episodes: &[EpisodeSection]) -> fmt::Result {
    writeln!(out, "<section id=\"episodes\" class=\"overview\">")?;
    writeln!(out, "<h2>Episodes</h2>")?;
    if episodes.is_empty() {
        writeln!(out, "<p class=\"empty\">No episodes in this recording.</p>")?;
        return writeln!(out, "</section>");
    }
    writeln!(out, "<table>")?;
    writeln!(
        out,
        "<thead><tr><th>Episode</th><th>Verdict</th><th>Start</th><th>Duration</th><th>Flow</th><th>Mounts</th></tr></thead>"
    )?;
    writeln!(out, "<tbody>")?;
    for e in episodes {
        write!(out, "<tr><td><a href=\"#episode-{0}\">#{0}</a></td><td>", e.id)?;
        badge(out, &e.verdict)?;
        write!(out, "</td><td class=\"time\">{}</td><td class=\"dur\">{}", text(&e.start), fmt_duration(e.duration_s))?;
        if e.end.is_none() {
            write!(out, " <span class=\"ongoing\">(still going on)</span>")?;
        }
        writeln!(out, "</td><td>{}</td><td>{}</td></tr>", text(&e.flow), mount_list(&e.mounts))?;
    }
    writeln!(out, "</tbody>")?;
    writeln!(out, "</table>")?;
    writeln!(out, "</section>")
}

fn mount_list(mounts: &[String]) -> String {
    if mounts.is_empty() {
        return "<span class=\"muted\">none attributed</span>".to_string();
    }
    mounts.iter().map(|m| format!("<code>{}</code>", text(m))).collect::<Vec<_>>().join(", ")
}

fn episode(out: &mut String, e: &EpisodeSection) -> fmt::Result {
    let start = text(&e.start);
    writeln!(
        out,
        "<section class=\"episode\" id=\"episode-{}\" data-verdict=\"{}\" data-start=\"{start}\">",
        e.id,
        text(&e.verdict)
    )?;
    write!(out, "<header class=\"ep-head\"><h2><a href=\"#episode-{0}\">Episode {0}</a></h2> ", e.id)?;
    badge(out, &e.verdict)?;
    writeln!(out, "</header>")?;

    writeln!(out, "<div class=\"ep-top\">")?;
    writeln!(out, "<div class=\"verdict-text\">")?;
    writeln!(out, "<p class=\"evidence\"><strong>Evidence.</strong> {}</p>", text(&e.evidence))?;
    writeln!(out, "<p class=\"advice\"><strong>Advice.</strong> {}</p>", text(&e.advice))?;
    writeln!(out, "</div>")?;
    writeln!(out, "<dl class=\"ep-facts\">")?;
    writeln!(out, "<dt>Flow</dt><dd>{}</dd>", text(&e.flow))?;
    writeln!(out, "<dt>Mounts</dt><dd>{}</dd>", mount_list(&e.mounts))?;
    writeln!(out, "<dt>Opened by</dt><dd>{}</dd>", text(&e.opened_by))?;
    writeln!(out, "<dt>Start</dt><dd class=\"time\">{start}</dd>")?;
    match &e.end {
        Some(end) => writeln!(out, "<dt>End</dt><dd class=\"time\">{}</dd>", text(end))?,
        None => writeln!(out, "<dt>End</dt><dd class=\"ongoing\">still going on when the recording ended</dd>")?,
    }
    writeln!(out, "<dt>Duration</dt><dd>{}</dd>", fmt_duration(e.duration_s))?;
    writeln!(out, "</dl>")?;
    writeln!(out, "</div>")?;

    timeline::figure(out, e)?;
    phases_table(out, e)?;
    marks_table(out, e)?;
    kernel_lines(out, &e.kernel_said)?;
    writeln!(out, "</section>")
}

fn phases_table(out: &mut String, e: &EpisodeSection) -> fmt::Result {
    if e.phases.is_empty() {
        return writeln!(out, "<p class=\"empty\">No phases recorded.</p>");
    }
    writeln!(out, "<table class=\"phases\">")?;
    writeln!(out, "<caption>Phases</caption>")?;
    writeln!(out, "<thead><tr><th>Phase</th><th>From</th><th>To</th><th>Length</th><th>Note</th></tr></thead>")?;
    writeln!(out, "<tbody>")?;
    for ph in &e.phases {
        let len = rel_secs(ph.end_ns.max(ph.start_ns), ph.start_ns);
        writeln!(
            out,
            "<tr><td><span class=\"swatch {}\"></span>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            timeline::phase_class(&ph.name),
            text(&ph.name),
            fmt_rel(rel_secs(ph.start_ns, e.start_ns)),
            fmt_rel(rel_secs(ph.end_ns, e.start_ns)),
            fmt_duration(len),
            text(&ph.note)
        )?;
    }
    writeln!(out, "</tbody>")?;
    writeln!(out, "</table>")
}

fn marks_table(out: &mut String, e: &EpisodeSection) -> fmt::Result {
    if e.marks.is_empty() {
        return writeln!(out, "<p class=\"empty\">No events marked.</p>");
    }
    let mut order: Vec<&Mark> = e.marks.iter().collect();
    order.sort_by_key(|m| m.ts_ns);
    writeln!(out, "<table class=\"marks\">")?;
    writeln!(out, "<caption>Events ({})</caption>", e.marks.len())?;
    writeln!(out, "<thead><tr><th>Since start</th><th>Time</th><th>Kind</th><th>What</th></tr></thead>")?;
    writeln!(out, "<tbody>")?;
    for m in order.iter().take(MAX_MARK_ROWS) {
        write!(out, "<tr><td class=\"num\">{}</td><td class=\"time\">{}</td><td>", fmt_rel(rel_secs(m.ts_ns, e.start_ns)), text(&m.time))?;
        timeline::legend_glyph(out, m.kind)?;
        writeln!(out, " {}</td><td>{}</td></tr>", m.kind.describe(), text(&m.label))?;
    }
    if order.len() > MAX_MARK_ROWS {
        writeln!(
            out,
            "<tr class=\"more\"><td colspan=\"4\">… {} more events not listed (all are drawn on the timeline).</td></tr>",
            order.len() - MAX_MARK_ROWS
        )?;
    }
    writeln!(out, "</tbody>")?;
    writeln!(out, "</table>")
}

fn kernel_lines(out: &mut String, lines: &[String]) -> fmt::Result {
    writeln!(out, "<h3 class=\"kernel-head\">What the kernel said</h3>")?;
    if lines.is_empty() {
        return writeln!(out, "<p class=\"empty\">No kernel log lines during this episode.</p>");
    }
    writeln!(out, "<ul class=\"kernel\">")?;
    for l in lines.iter().take(MAX_KERNEL_LINES) {
        writeln!(out, "<li><code>{}</code></li>", text(l))?;
    }
    if lines.len() > MAX_KERNEL_LINES {
        writeln!(out, "<li class=\"more\">… {} more lines not listed.</li>", lines.len() - MAX_KERNEL_LINES)?;
    }
    writeln!(out, "</ul>")
}

fn mounts(out: &mut String, mounts: &[MountSection]) -> fmt::Result {
    writeln!(out, "<section id=\"mounts\" class=\"mounts\">")?;
    writeln!(out, "<h2>Mounts</h2>")?;
    if mounts.is_empty() {
        writeln!(out, "<p class=\"empty\">No NFS mounts seen.</p>")?;
    }
    for m in mounts {
        writeln!(out, "<section class=\"mount\">")?;
        writeln!(out, "<h3><code>{}</code></h3>", text(&m.mountpoint))?;
        write!(out, "<p class=\"mount-meta\"><code>{}</code>", text(&m.source))?;
        if !m.vers.is_empty() {
            write!(out, " · NFS {}", text(&m.vers))?;
        }
        if !m.options.is_empty() {
            write!(out, " · <code>{}</code>", text(&m.options))?;
        }
        let reused = m.reconnects.iter().filter(|r| r.reused).count();
        match m.reconnects.len() {
            0 => writeln!(out, "</p>")?,
            1 => writeln!(out, " · 1 reconnect, {reused} from a reused port</p>")?,
            n => writeln!(out, " · {n} reconnects, {reused} from a reused port</p>")?,
        }
        if m.reconnects.is_empty() {
            writeln!(out, "<p class=\"empty\">No reconnects seen.</p>")?;
            writeln!(out, "</section>")?;
            continue;
        }
        writeln!(out, "<table class=\"reconnects\">")?;
        writeln!(
            out,
            "<thead><tr><th>Time</th><th>From port</th><th>Previous port</th><th>Port reused</th><th>Outcome</th></tr></thead>"
        )?;
        writeln!(out, "<tbody>")?;
        for r in &m.reconnects {
            let prev = r.prev_sport.map_or_else(|| "<span class=\"muted\">—</span>".to_string(), |p| p.to_string());
            let reused = if r.reused { "<span class=\"reused\">yes, same port</span>" } else { "no" };
            writeln!(
                out,
                "<tr{}><td class=\"time\">{}</td><td class=\"num\">{}</td><td class=\"num\">{prev}</td><td>{reused}</td><td>{}</td></tr>",
                if r.reused { " class=\"reused-row\"" } else { "" },
                text(&r.time),
                r.sport,
                text(&r.outcome)
            )?;
        }
        writeln!(out, "</tbody>")?;
        writeln!(out, "</table>")?;
        writeln!(out, "</section>")?;
    }
    writeln!(out, "</section>")
}
