//! One episode's timeline as inline SVG, Gantt-like: a lane per phase name
//! (bars), then a lane per kind of event (thin ticks for retransmits, glyphs
//! for the rest, the canary labelled with its outcome), over an axis of
//! seconds since the episode's start. Each lane is named in text and each
//! glyph has its own shape, so nothing is told by colour alone. Colours come
//! from the page's style sheet (classes), so the themes and print apply.
//!
//! Marks that fall on the same pixel of a lane are drawn once, with a
//! tooltip that counts them: the picture stays readable and its size bounded
//! however many retransmits there were (the table lists every one).
use std::fmt::{self, Write as _};

use super::{EpisodeSection, Mark, MarkKind, Phase, fmt_duration, fmt_rel, rel_secs, text};

/// viewBox width; the SVG scales to the page's width.
const WIDTH: f64 = 1000.0;
/// Left of it: the lanes' names.
const PLOT_X0: f64 = 170.0;
/// Room on the right for the last tick's label.
const PLOT_X1: f64 = WIDTH - 34.0;
/// Above the lanes: the note that an episode was still going on.
const TOP: f64 = 22.0;
const LANE_H: f64 = 26.0;
/// Below the lanes: the axis and its labels.
const AXIS_H: f64 = 34.0;
/// Lane names longer than this are cut (the phase table has them whole).
const MAX_LANE_NAME: usize = 24;
/// A zero-length episode is drawn on a one-second axis.
const MIN_SPAN_NS: u64 = 1_000_000_000;

/// Tick steps in seconds, smallest first: 1-2-5 below ten seconds, then
/// steps people count in (15 s, 30 s, minutes, hours, days).
const STEPS: &[f64] = &[
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    900.0, 1800.0, 3600.0, 7200.0, 10800.0, 21600.0, 43200.0, 86400.0,
];
/// At most this many intervals between ticks (so 4 to 10 of them).
const MAX_INTERVALS: f64 = 10.0;

/// The axis step for a span of `span_s` seconds: the smallest of [`STEPS`]
/// that cuts it into at most ten intervals (whole days past the last one).
pub(super) fn tick_step(span_s: f64) -> f64 {
    let span = if span_s.is_finite() && span_s > 0.0 { span_s } else { 0.0 };
    STEPS
        .iter()
        .copied()
        .find(|&step| span / step <= MAX_INTERVALS)
        .unwrap_or_else(|| (span / MAX_INTERVALS / 86400.0).ceil() * 86400.0)
}

/// The ticks of an axis over `span_s` seconds: 0, step, 2·step, … ≤ span.
pub(super) fn ticks(span_s: f64) -> Vec<f64> {
    let step = tick_step(span_s);
    let n = if span_s.is_finite() && span_s > 0.0 { (span_s / step + 1e-9).floor() as usize } else { 0 };
    (0..=n.min(100)).map(|i| i as f64 * step).collect()
}

/// A tick's label: "+0 s", "+0.5 s", "+30 s", "+5 min", "+2 h".
pub(super) fn tick_label(v: f64, step: f64) -> String {
    if v == 0.0 {
        "+0 s".to_string()
    } else if step >= 3600.0 {
        format!("+{} h", (v / 3600.0).round())
    } else if step >= 60.0 {
        format!("+{} min", (v / 60.0).round())
    } else {
        let decimals = if step >= 1.0 {
            0
        } else if step >= 0.1 {
            1
        } else if step >= 0.01 {
            2
        } else {
            3
        };
        format!("+{v:.decimals$} s")
    }
}

/// Maps CLOCK_MONOTONIC ns to x, clamped to the plot.
struct Scale {
    origin: u64,
    span_ns: u64,
}

impl Scale {
    fn new(e: &EpisodeSection) -> Scale {
        let span = e.end_ns.saturating_sub(e.start_ns);
        Scale { origin: e.start_ns, span_ns: if span == 0 { MIN_SPAN_NS } else { span } }
    }
    fn x(&self, ts_ns: u64) -> f64 {
        let t = ts_ns.saturating_sub(self.origin).min(self.span_ns);
        PLOT_X0 + (PLOT_X1 - PLOT_X0) * (t as f64 / self.span_ns as f64)
    }
    fn span_s(&self) -> f64 {
        self.span_ns as f64 / 1e9
    }
}

/// The CSS class of a phase's bar and swatch.
pub(super) fn phase_class(name: &str) -> &'static str {
    match name {
        "unanswered" => "ph-unanswered",
        "closed" => "ph-closed",
        "reconnecting" | "stalled" => "ph-stalled",
        "recovered" | "established" => "ph-recovered",
        _ => "ph-other",
    }
}

/// The lanes of events, in the order drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum EventLane {
    Connect,
    Syn,
    Canary,
    Data,
    CloseDrop,
    Rpc,
    Kernel,
}

impl EventLane {
    fn of(kind: MarkKind) -> EventLane {
        match kind {
            MarkKind::Connect { .. } => EventLane::Connect,
            MarkKind::SynRetransmit => EventLane::Syn,
            MarkKind::Canary { .. } => EventLane::Canary,
            MarkKind::DataRetransmit => EventLane::Data,
            MarkKind::Close | MarkKind::TransportDrop => EventLane::CloseDrop,
            MarkKind::RpcTimeout => EventLane::Rpc,
            MarkKind::KernelLine => EventLane::Kernel,
        }
    }
    fn name(self) -> &'static str {
        match self {
            EventLane::Connect => "connects",
            EventLane::Syn => "SYN retransmits",
            EventLane::Canary => "canary",
            EventLane::Data => "data retransmits",
            EventLane::CloseDrop => "close / drop",
            EventLane::Rpc => "RPC timeouts",
            EventLane::Kernel => "kernel log",
        }
    }
}

/// Orders kinds within a lane, and tells them apart when grouping.
fn kind_key(kind: MarkKind) -> u8 {
    match kind {
        MarkKind::Connect { ok: true } => 0,
        MarkKind::Connect { ok: false } => 1,
        MarkKind::SynRetransmit => 2,
        MarkKind::DataRetransmit => 3,
        MarkKind::Close => 4,
        MarkKind::TransportDrop => 5,
        MarkKind::RpcTimeout => 6,
        MarkKind::Canary { connected: true } => 7,
        MarkKind::Canary { connected: false } => 8,
        MarkKind::KernelLine => 9,
    }
}

enum Lane<'a> {
    Phases { name: &'a str, phases: Vec<&'a Phase> },
    Events { lane: EventLane, marks: Vec<&'a Mark> },
}

fn lanes(e: &EpisodeSection) -> Vec<Lane<'_>> {
    let mut out: Vec<Lane<'_>> = Vec::new();
    // A lane per phase name, in the order the names first start.
    let mut phases: Vec<&Phase> = e.phases.iter().collect();
    phases.sort_by_key(|p| p.start_ns);
    for p in phases {
        let found = out.iter_mut().find_map(|l| match l {
            Lane::Phases { name, phases } if *name == p.name => Some(phases),
            _ => None,
        });
        match found {
            Some(v) => v.push(p),
            None => out.push(Lane::Phases { name: &p.name, phases: vec![p] }),
        }
    }
    let mut events: Vec<(EventLane, Vec<&Mark>)> = Vec::new();
    for m in &e.marks {
        let lane = EventLane::of(m.kind);
        match events.iter_mut().find(|(l, _)| *l == lane) {
            Some((_, v)) => v.push(m),
            None => events.push((lane, vec![m])),
        }
    }
    events.sort_by_key(|(l, _)| *l);
    out.extend(events.into_iter().map(|(lane, marks)| Lane::Events { lane, marks }));
    out
}

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut c: String = s.chars().take(max - 1).collect();
    c.push('…');
    c
}

/// A rough width of `s` in the SVG's 11-pixel sans-serif.
fn text_width(s: &str) -> f64 {
    s.chars().count() as f64 * 6.6
}

/// The timeline figure: the SVG and its legend.
pub(super) fn figure(out: &mut String, e: &EpisodeSection) -> fmt::Result {
    let scale = Scale::new(e);
    let lanes = lanes(e);
    let rows = lanes.len().max(1);
    let plot_bottom = TOP + rows as f64 * LANE_H;
    let height = plot_bottom + AXIS_H;
    writeln!(out, "<figure class=\"timeline\">")?;
    writeln!(
        out,
        "<svg class=\"timeline\" viewBox=\"0 0 {WIDTH} {height}\" width=\"{WIDTH}\" height=\"{height}\" role=\"img\" aria-label=\"Timeline of episode {}\">",
        e.id
    )?;
    // Lane backgrounds and names.
    for (i, lane) in lanes.iter().enumerate() {
        let top = TOP + i as f64 * LANE_H;
        if i % 2 == 0 {
            writeln!(out, "<rect class=\"lane-bg\" x=\"0\" y=\"{top}\" width=\"{WIDTH}\" height=\"{LANE_H}\"/>")?;
        }
        let name = match lane {
            Lane::Phases { name, .. } => cut(name, MAX_LANE_NAME),
            Lane::Events { lane, marks } => format!("{} ({})", lane.name(), marks.len()),
        };
        writeln!(
            out,
            "<text class=\"lane-name\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            PLOT_X0 - 10.0,
            top + LANE_H / 2.0 + 4.0,
            text(&name)
        )?;
    }
    if lanes.is_empty() {
        writeln!(
            out,
            "<text class=\"lane-name\" x=\"{:.1}\" y=\"{:.1}\">No phases or events were recorded for this episode.</text>",
            PLOT_X0,
            TOP + LANE_H / 2.0 + 4.0
        )?;
    }
    axis(out, &scale, plot_bottom)?;
    for (i, lane) in lanes.iter().enumerate() {
        let top = TOP + i as f64 * LANE_H;
        match lane {
            Lane::Phases { phases, .. } => {
                for p in phases {
                    phase_bar(out, e, &scale, p, top)?;
                }
            }
            Lane::Events { marks, .. } => event_lane(out, e, &scale, marks, top + LANE_H / 2.0)?,
        }
    }
    // The end of the recording, for an episode that had not ended by then.
    if e.end.is_none() {
        writeln!(
            out,
            "<line class=\"ongoing-line\" x1=\"{PLOT_X1}\" y1=\"{:.1}\" x2=\"{PLOT_X1}\" y2=\"{plot_bottom}\"/>",
            TOP - 6.0
        )?;
        writeln!(
            out,
            "<text class=\"ongoing-text\" x=\"{PLOT_X1}\" y=\"{:.1}\" text-anchor=\"end\">recording ended, episode still going on ▸</text>",
            TOP - 8.0
        )?;
    }
    writeln!(out, "</svg>")?;
    legend(out, e)?;
    writeln!(out, "</figure>")
}

fn axis(out: &mut String, scale: &Scale, plot_bottom: f64) -> fmt::Result {
    let span = scale.span_s();
    let step = tick_step(span);
    writeln!(
        out,
        "<line class=\"axis\" x1=\"{PLOT_X0}\" y1=\"{plot_bottom}\" x2=\"{PLOT_X1}\" y2=\"{plot_bottom}\"/>"
    )?;
    for v in ticks(span) {
        let x = PLOT_X0 + (PLOT_X1 - PLOT_X0) * (v / span).min(1.0);
        writeln!(out, "<line class=\"grid\" x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{plot_bottom}\"/>")?;
        writeln!(
            out,
            "<line class=\"axis\" x1=\"{x:.1}\" y1=\"{plot_bottom}\" x2=\"{x:.1}\" y2=\"{:.1}\"/>",
            plot_bottom + 5.0
        )?;
        writeln!(
            out,
            "<text class=\"tick\" x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            plot_bottom + 18.0,
            tick_label(v, step)
        )?;
    }
    writeln!(
        out,
        "<text class=\"axis-name\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">since start</text>",
        PLOT_X0 - 24.0,
        plot_bottom + 18.0
    )
}

fn phase_bar(out: &mut String, e: &EpisodeSection, scale: &Scale, p: &Phase, top: f64) -> fmt::Result {
    let x0 = scale.x(p.start_ns);
    let x1 = scale.x(p.end_ns.max(p.start_ns));
    let w = (x1 - x0).max(2.0);
    let from = rel_secs(p.start_ns, e.start_ns);
    let to = rel_secs(p.end_ns.max(p.start_ns), e.start_ns);
    let length = fmt_duration(to - from);
    let mut tip = format!("{}: {} → {} ({length})", p.name, fmt_rel(from), fmt_rel(to));
    if !p.note.is_empty() {
        tip.push_str(" — ");
        tip.push_str(&p.note);
    }
    writeln!(
        out,
        "<rect class=\"ph {}\" x=\"{x0:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{:.1}\" rx=\"3\"><title>{}</title></rect>",
        phase_class(&p.name),
        top + 5.0,
        LANE_H - 10.0,
        text(&tip)
    )?;
    if w >= text_width(&length) + 8.0 {
        writeln!(
            out,
            "<text class=\"bar-label\" x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            x0 + 4.0,
            top + LANE_H / 2.0 + 4.0,
            text(&length)
        )?;
    }
    Ok(())
}

/// One lane of events; those on the same pixel and of the same kind are
/// drawn once.
fn event_lane(out: &mut String, e: &EpisodeSection, scale: &Scale, marks: &[&Mark], y: f64) -> fmt::Result {
    let mut placed: Vec<(i64, u8, &Mark)> = marks.iter().map(|m| (scale.x(m.ts_ns).round() as i64, kind_key(m.kind), *m)).collect();
    placed.sort_by_key(|&(px, key, m)| (px, key, m.ts_ns));
    // Where the last canary label ended, so labels never overlap.
    let mut label_end = f64::NEG_INFINITY;
    let mut i = 0;
    while i < placed.len() {
        let (px, key, first) = placed[i];
        let n = placed[i..].iter().take_while(|&&(p, k, _)| p == px && k == key).count();
        let last = placed[i + n - 1].2;
        let x = scale.x(first.ts_ns);
        let tip = if n == 1 {
            format!("{} {}: {} — {}", fmt_rel(rel_secs(first.ts_ns, e.start_ns)), first.time, first.kind.describe(), first.label)
        } else {
            format!(
                "{n} × {} from {} to {}: {} … {}",
                first.kind.describe(),
                fmt_rel(rel_secs(first.ts_ns, e.start_ns)),
                fmt_rel(rel_secs(last.ts_ns, e.start_ns)),
                first.label,
                last.label
            )
        };
        write!(out, "<g><title>{}</title>", text(&tip))?;
        glyph(out, first.kind, x, y)?;
        writeln!(out, "</g>")?;
        if let MarkKind::Canary { connected } = first.kind {
            let label = if connected { "canary connected" } else { "canary failed" };
            let w = text_width(label);
            let (lx, anchor, end) =
                if x + 10.0 + w <= WIDTH - 4.0 { (x + 10.0, "start", x + 10.0 + w) } else { (x - 10.0, "end", x - 10.0) };
            let start = if anchor == "start" { lx } else { lx - w };
            if start > label_end + 6.0 {
                writeln!(
                    out,
                    "<text class=\"mark-label\" x=\"{lx:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\">{label}</text>",
                    y + 4.0
                )?;
                label_end = end;
            }
        }
        i += n;
    }
    Ok(())
}

/// The shape of a kind of event, centred on (x, y): ticks for retransmits,
/// a filled or hollow circle for connects, a diamond for the canary (filled
/// if it connected), a square for a close, a cross for a transport drop, a
/// triangle for an RPC timeout, a pin for a kernel line.
fn glyph(out: &mut String, kind: MarkKind, x: f64, y: f64) -> fmt::Result {
    match kind {
        MarkKind::SynRetransmit => write!(
            out,
            "<line class=\"mk syn\" x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\"/>",
            y - 8.0,
            y + 8.0
        ),
        MarkKind::DataRetransmit => write!(
            out,
            "<line class=\"mk data\" x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\"/>",
            y - 6.0,
            y + 6.0
        ),
        MarkKind::Connect { ok } => write!(
            out,
            "<circle class=\"mk {}\" cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"5\"/>",
            if ok { "connect-ok" } else { "connect-failed" }
        ),
        MarkKind::Canary { connected } => write!(
            out,
            "<path class=\"mk {}\" d=\"M{x:.1} {:.1}L{:.1} {y:.1}L{x:.1} {:.1}L{:.1} {y:.1}Z\"/>",
            if connected { "canary-ok" } else { "canary-failed" },
            y - 7.0,
            x + 7.0,
            y + 7.0,
            x - 7.0
        ),
        MarkKind::Close => write!(
            out,
            "<rect class=\"mk close\" x=\"{:.1}\" y=\"{:.1}\" width=\"9\" height=\"9\"/>",
            x - 4.5,
            y - 4.5
        ),
        MarkKind::TransportDrop => write!(
            out,
            "<path class=\"mk drop\" d=\"M{:.1} {:.1}L{:.1} {:.1}M{:.1} {:.1}L{:.1} {:.1}\"/>",
            x - 5.0,
            y - 5.0,
            x + 5.0,
            y + 5.0,
            x - 5.0,
            y + 5.0,
            x + 5.0,
            y - 5.0
        ),
        MarkKind::RpcTimeout => write!(
            out,
            "<path class=\"mk rpc\" d=\"M{:.1} {:.1}L{:.1} {:.1}L{x:.1} {:.1}Z\"/>",
            x - 6.0,
            y - 5.0,
            x + 6.0,
            y - 5.0,
            y + 6.0
        ),
        MarkKind::KernelLine => write!(
            out,
            "<line class=\"mk kernel\" x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\"/><circle class=\"mk kernel-head\" cx=\"{x:.1}\" cy=\"{:.1}\" r=\"3\"/>",
            y - 2.0,
            y + 8.0,
            y - 4.0
        ),
    }
}

/// A kind's glyph as a small inline picture, for the legend and the table.
pub(super) fn legend_glyph(out: &mut String, kind: MarkKind) -> fmt::Result {
    write!(out, "<svg class=\"glyph\" width=\"16\" height=\"18\" viewBox=\"-8 -9 16 18\" aria-hidden=\"true\">")?;
    glyph(out, kind, 0.0, 0.0)?;
    write!(out, "</svg>")
}

/// What the colours and shapes of this timeline mean: the phases and kinds
/// of event it has, each named.
fn legend(out: &mut String, e: &EpisodeSection) -> fmt::Result {
    write!(out, "<figcaption class=\"legend\">")?;
    let mut names: Vec<&str> = Vec::new();
    for p in &e.phases {
        if !names.contains(&p.name.as_str()) {
            names.push(&p.name);
        }
    }
    for name in names {
        write!(out, "<span class=\"key\"><span class=\"swatch {}\"></span>{}</span> ", phase_class(name), text(name))?;
    }
    let mut kinds: Vec<MarkKind> = Vec::new();
    for m in &e.marks {
        if !kinds.contains(&m.kind) {
            kinds.push(m.kind);
        }
    }
    kinds.sort_by_key(|&k| (EventLane::of(k), kind_key(k)));
    for k in kinds {
        write!(out, "<span class=\"key\">")?;
        legend_glyph(out, k)?;
        write!(out, "{}</span> ", k.describe())?;
    }
    writeln!(out, "<span class=\"hint\">Point at a bar or mark for its time and text; the table below lists every event.</span></figcaption>")
}
