//! The renderer: one writer, one format, and the dispatch of each
//! observation to its human (`human`) or JSON (`json`) form; the end-of-run
//! summary is `summary`. Every field that came from outside is escaped in the
//! human lines (`human::escape`), never in JSON (serde escapes it exactly).
use std::io::{self, Write};

use crate::{
    host::nfsmounts::MountView,
    kernel::lost::Lost,
    model::attribution::Attributed,
    model::tcp::Observation,
    model::xprt::XprtObservation,
    output::clock::Clock,
};

use human::{RED_BOLD, RESET};

/// Version of the JSON lines schema (docs/json-schema.md).
pub const SCHEMA_VERSION: u32 = 2;

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
    /// The last second those records wrote (see `jsonline::Seconds`).
    seconds: crate::output::jsonline::Seconds,
    /// Network namespaces seen so far: human lines name the namespace once
    /// there is more than one (see `human::NetnsSeen`).
    netns: human::NetnsSeen,
}

impl<W: Write> Renderer<W> {
    pub fn new(out: W, format: Format, clock: Clock) -> Self {
        Renderer { out, format, clock, line: Vec::with_capacity(512), seconds: Default::default(), netns: human::NetnsSeen::default() }
    }

    /// Times from now on are shown with this clock (`report`: each recorded
    /// run's own).
    pub fn set_clock(&mut self, clock: Clock) {
        self.clock = clock;
    }

    fn style(&self, s: &'static str) -> &'static str {
        match self.format {
            Format::Human { color: true } => s,
            _ => "",
        }
    }
    /// One observation; `views` attribute stalls to mounts.
    pub fn observation(&mut self, o: &Observation, views: &[MountView]) -> io::Result<()> {
        match self.format {
            Format::Json => self.observation_json(o, views),
            Format::Human { .. } => self.observation_human(o, views),
        }
    }
    pub fn xprt_observation(&mut self, o: &XprtObservation, views: &[MountView]) -> io::Result<()> {
        match self.format {
            Format::Json => self.xprt_json(o, views),
            Format::Human { .. } => self.xprt_human(o, views),
        }
    }

    /// A transport first reported with no mount now has one (see
    /// model/attribution.rs); `ts_ns` is when that became known.
    pub fn attributed(&mut self, a: &Attributed, ts_ns: u64) -> io::Result<()> {
        match self.format {
            Format::Json => self.attributed_json(a, ts_ns),
            Format::Human { .. } => self.attributed_human(a, ts_ns),
        }
    }

    pub fn lost(&mut self, lost: Lost) -> io::Result<()> {
        match self.format {
            Format::Json => self.json_line("lost", lost),
            Format::Human { .. } => writeln!(
                self.out,
                "{}LOST: {} events ({} connects in all), {} sockets could not be recorded so far ({}){}{}",
                self.style(RED_BOLD),
                lost.events,
                lost.connects,
                lost.sockets,
                // Lost sockets: more connecting at once than the kernel's socket map holds.
                match (lost.events > 0, lost.sockets > 0) {
                    (true, false) => "ring buffer full: try a larger --ringbuf-kb",
                    (false, true) => "socket map full",
                    (false, false) => "nothing lost to the ring buffer or socket map",
                    _ => "ring buffer and socket map full: try a larger --ringbuf-kb",
                },
                if lost.missed_runs > 0 {
                    format!("; {} hook runs skipped by the kernel (another BPF program was running on that CPU)", lost.missed_runs)
                } else {
                    String::new()
                },
                self.style(RESET)
            ),
        }
    }
    /// One thing fed to the trackers, as an `input` line (`watch --events`;
    /// `report` reads them back, model/feed.rs). JSON only.
    pub fn input(&mut self, i: &crate::model::feed::Input) -> io::Result<()> {
        match self.format {
            Format::Json => self.json_line("input", i),
            Format::Human { .. } => Ok(()),
        }
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

mod canary;
pub use canary::outcome_text as canary_outcome_text;
mod episode;
mod human;
mod json;
mod summary;
#[cfg(test)]
mod tests;
