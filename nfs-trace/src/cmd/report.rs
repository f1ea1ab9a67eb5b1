//! `nfs-trace report FILE`: replays a recording of `watch --json --events`
//! through the same trackers and verdict code as `watch` (model/feed.rs)
//! and prints the same episodes and summary; `--html` writes the page.
//!
//! The file streams: one line at a time, the trackers' own bounded state,
//! and for the page a bounded set of marks per run. A line cut off, of
//! another schema version or of a type this version does not know is said
//! (the first few each, then a count) and skipped.
use std::{
    collections::BTreeMap,
    io::{self, BufRead, Write},
    path::Path,
};

use anyhow::{Context as _, Result, anyhow};

use crate::{
    cli::ReportArgs,
    model::{
        attribution::{Transport, attribute},
        episode::{Episode, EpisodeObservation},
        feed::Input,
    },
    output::{escape::escape, render::Renderer},
};

mod lines;
mod page;
mod parse;
mod replay;

use lines::{Line, Lines};
use replay::Run;

/// Each kind of skipped line is said this many times, then counted.
const SAY_MAX: u32 = 3;

/// Lines skipped, by why (for the closing count).
#[derive(Default)]
struct Skipped {
    by_why: BTreeMap<String, u64>,
}

impl Skipped {
    /// `why` groups the count; `detail` is said with the first few.
    fn skip(&mut self, file: &str, line: u64, why: String, detail: Option<String>) {
        let n = self.by_why.entry(why.clone()).or_insert(0);
        *n += 1;
        if *n <= u64::from(SAY_MAX) {
            let detail = detail.map(|d| format!(" ({d})")).unwrap_or_default();
            eprintln!("nfs-trace: {} line {line}: {}{}; skipped", escape(file), escape(&why), escape(&detail));
        }
    }
    fn total(&self) -> u64 {
        self.by_why.values().sum()
    }
    fn said(&self) -> String {
        self.by_why.iter().map(|(w, n)| format!("{n} {w}")).collect::<Vec<_>>().join(", ")
    }
}

/// What narrows the report: episodes that overlap [since, until] and
/// belong to the mount.
struct Filter {
    since: Option<i128>,
    until: Option<i128>,
    mount: Option<String>,
}

impl Filter {
    fn keeps(&self, e: &Episode, run: &Run) -> bool {
        let unix = |mono: u64| run.clock.unix_ns(mono);
        let end = e.end_ns().unwrap_or(run.last_ns);
        self.since.is_none_or(|s| unix(end) >= s)
            && self.until.is_none_or(|u| unix(e.start_ns) <= u)
            && self.mount.as_ref().is_none_or(|m| {
                attribute(&run.feed.views, &Transport::of_flow(e.xprt, &e.flow, None)).0.iter().any(|v| v.mountpoint == *m)
            })
    }

    /// Past --until: the rest of the run is not fed.
    fn past(&self, run: &Run, mono_ns: u64) -> bool {
        self.until.is_some_and(|u| run.clock.unix_ns(mono_ns) > u)
    }
}

pub fn run(args: ReportArgs) -> Result<()> {
    let name = args.file.display().to_string();
    let reader: Box<dyn BufRead> = if args.file == Path::new("-") {
        Box::new(io::BufReader::with_capacity(1 << 20, io::stdin()))
    } else {
        let f = std::fs::File::open(&args.file).with_context(|| format!("cannot read {name}"))?;
        Box::new(io::BufReader::with_capacity(1 << 20, f))
    };
    let format = crate::cmd::watch::format_for(args.json, args.color);
    let stdout = io::stdout().lock();
    let mut out = Renderer::new(io::BufWriter::with_capacity(64 * 1024, stdout), format, crate::output::clock::Clock::fixed(0));
    let filter = Filter { since: args.since, until: args.until, mount: args.mount.clone() };
    let mut lines = Lines::new(reader);
    let mut skipped = Skipped::default();
    let mut page = args.html.as_ref().map(|_| page::Builder::new(&name));
    let mut run: Option<Run> = None;
    let mut past_until = false;
    let mut runs = 0u32;
    let mut kernel: Option<String> = None;
    let mut parser = parse::Parser::default();
    let mut eps = Vec::new();
    let mut records = 0u64;
    loop {
        let (n, line) = match lines.next_line() {
            Ok(Some(l)) => l,
            Ok(None) => break,
            Err(e) => return Err(anyhow!("cannot read {name}: {e}")),
        };
        let parsed = match line {
            Line::Whole(b) => parser.parse(b, false),
            Line::Cut(b) => parser.parse(b, true),
            Line::TooLong => parse::Parsed::Skip { why: format!("line over {} MiB", lines::MAX_LINE >> 20), detail: None },
        };
        let input = match parsed {
            parse::Parsed::Input(i) => *i,
            parse::Parsed::Blank => continue,
            parse::Parsed::Attached(k) => {
                records += 1;
                kernel = k.or(kernel);
                continue;
            }
            parse::Parsed::Output => {
                records += 1;
                continue;
            }
            parse::Parsed::Skip { why, detail } => {
                skipped.skip(&name, n, why, detail);
                continue;
            }
        };
        records += 1;
        if let Input::Start { mono_ns, clock_offset_ns, passive, retransmits_traced, views } = input {
            if let Some(r) = run.take() {
                finish_run(&mut out, r, &filter, page.as_mut())?;
            }
            runs += 1;
            past_until = false;
            let r = Run::start(mono_ns, clock_offset_ns, passive, retransmits_traced, views);
            out.set_clock(r.clock);
            run = Some(r);
            continue;
        }
        let Some(r) = run.as_mut() else {
            skipped.skip(&name, n, "input(s) before the recording's start".into(), None);
            continue;
        };
        if past_until || input.time().is_some_and(|t| filter.past(r, t)) {
            past_until = true;
            continue;
        }
        r.feed(input, &mut eps);
        for e in eps.drain(..) {
            if filter.keeps(e.episode(), r) && !episode_out(&mut out, &e, r)? {
                return Ok(());
            }
        }
    }
    if let Some(r) = run.take() {
        finish_run(&mut out, r, &filter, page.as_mut())?;
    }
    if skipped.total() > 0 {
        eprintln!("nfs-trace: {name}: skipped {} of {} lines: {}", skipped.total(), lines.number, escape(&skipped.said()));
    }
    if runs == 0 {
        return Err(anyhow!(
            "{name} holds no recording to replay ({records} records, none an `input`): record with `nfs-trace watch --json --events`"
        ));
    }
    if let (Some(p), Some(path)) = (page, args.html.as_ref()) {
        let html = p.finish(kernel.as_deref(), lines.number, skipped.total(), &skipped.said());
        std::fs::write(path, html).with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("nfs-trace: wrote {}", escape(&path.display().to_string()));
    }
    Ok(())
}

fn episode_out<W: Write>(out: &mut Renderer<W>, e: &EpisodeObservation, r: &Run) -> Result<bool> {
    match out.episode(e, &r.feed.views, &r.feed.honoured) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(anyhow!("cannot write output: {e}")),
    }
}

/// A run's end: its summary (as watch ended it), and its part of the page.
fn finish_run<W: Write>(out: &mut Renderer<W>, mut r: Run, filter: &Filter, page: Option<&mut page::Builder>) -> Result<()> {
    let (now, lost) = match r.end {
        Some(end) => end,
        None => {
            eprintln!(
                "nfs-trace: a recorded run stops before the watch ended (killed, or still running): its summary is as of its last record"
            );
            (r.last_ns, Default::default())
        }
    };
    let now = match filter.until {
        Some(u) => now.min(u64::try_from(u - r.clock.offset_ns()).unwrap_or(0)),
        None => now,
    };
    // By id: `keeps` reads the whole run, which the retain borrows.
    let keep: rustc_hash::FxHashSet<u64> =
        r.feed.episodes.ended.iter().chain(r.feed.episodes.open_episodes()).filter(|e| filter.keeps(e, &r)).map(|e| e.id).collect();
    r.feed.episodes.retain(|e| keep.contains(&e.id));
    let dur = now.saturating_sub(r.start_ns);
    if let Some(p) = page {
        p.add_run(out, &mut r, now);
    }
    match crate::cmd::watch::finish(out, &mut r.feed, &r.tracker, &r.xtracker, lost, dur, now) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(anyhow!("cannot write output: {e}")),
    }
}
