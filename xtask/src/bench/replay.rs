//! How fast `nfs-trace report` replays a recording, and in how much memory
//! (issue 16): a real recording (`watch --json --events` during a connect
//! storm), replayed as it is and repeated to over 1 GiB (each copy a
//! recorded run of its own, as a service restarted daily writes them).
//! The baseline, measured in the same run on the same file: jq selecting the
//! episode records, the tool people would reach for otherwise; it parses
//! each line and does nothing else.
use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// The big file: at least this many bytes.
const BIG_BYTES: u64 = 1 << 30;

/// One replay (or jq) of one file.
#[derive(Debug, Clone)]
pub struct Measure {
    pub secs: f64,
    pub max_rss_kb: u64,
}

#[derive(Debug, Clone)]
pub struct Replay {
    pub connects: u64,
    pub lines: u64,
    pub bytes: u64,
    pub copies: u64,
    pub small: Measure,
    pub big: Measure,
    pub jq: Measure,
}

/// Runs `program args` with stdout to /dev/null; wall time and its peak
/// RSS. The peak comes from GNU time, not from our own wait4: a child we
/// spawn starts its life in our address space (posix_spawn shares it until
/// exec), and the kernel carries that address space's high-water mark into
/// the child's `ru_maxrss` — every run read as the bench's own 86 MiB.
/// time's child is forked from time, whose own footprint is ~2 MiB.
fn measure(program: &Path, args: &[&std::ffi::OsStr], dir: &Path) -> Result<Measure> {
    let rss_file = dir.join("maxrss");
    let mut cmd = Command::new("/usr/bin/time");
    cmd.arg("-f").arg("%M").arg("-o").arg(&rss_file).arg(program).args(args);
    let t = Instant::now();
    let out = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).output().with_context(|| format!("cannot start {cmd:?}"))?;
    let secs = t.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let kb = std::fs::read_to_string(&rss_file).unwrap_or_default();
    let max_rss_kb = kb.lines().last().and_then(|l| l.trim().parse().ok()).with_context(|| format!("GNU time wrote no peak RSS: {kb:?}"))?;
    Ok(Measure { secs, max_rss_kb })
}

/// Records `watch --json --events` while `connects` connects are made.
fn record(bin: &Path, file: &Path, connects: u64, threads: u32) -> Result<u64> {
    let out = std::fs::File::create(file).with_context(|| format!("cannot create {}", file.display()))?;
    let mut child = Command::new(bin)
        .args(["watch", "--json", "--events"])
        .stdout(out)
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let mut err = BufReader::new(child.stderr.take().expect("piped"));
    let mut line = String::new();
    // The start line on stderr comes once it has attached.
    while err.read_line(&mut line)? > 0 && !line.starts_with("nfs-trace: attached") {
        line.clear();
    }
    let drain = std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    let storm = super::storm::run(connects, threads)?;
    std::thread::sleep(Duration::from_secs(2));
    // SAFETY: SIGINT to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let st = child.wait()?;
    let _ = drain.join();
    if !st.success() {
        bail!("nfs-trace watch --events exited with {st}");
    }
    Ok(storm.made)
}

pub fn run(bin: &Path, dir: &Path, connects: u64, threads: u32) -> Result<Replay> {
    let small = dir.join("recording.jsonl");
    let made = record(bin, &small, connects, threads)?;
    let bytes = std::fs::metadata(&small)?.len();
    let lines = BufReader::new(std::fs::File::open(&small)?).lines().count() as u64;
    let copies = BIG_BYTES.div_ceil(bytes.max(1));
    let big = dir.join("recording-1g.jsonl");
    {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&big)?);
        for _ in 0..copies {
            std::io::copy(&mut std::fs::File::open(&small)?, &mut w)?;
        }
        w.flush()?;
    }
    let report = |f: &PathBuf| measure(bin, &["report".as_ref(), "--json".as_ref(), f.as_os_str()], dir);
    // Once to warm the page cache for both, then measured.
    report(&small)?;
    let small_m = report(&small)?;
    let jq = measure(Path::new("jq"), &["-c".as_ref(), "select(.type == \"episode\")".as_ref(), small.as_os_str()], dir)?;
    let big_m = report(&big)?;
    let _ = std::fs::remove_file(&big);
    Ok(Replay { connects: made, lines, bytes, copies, small: small_m, big: big_m, jq })
}

impl Replay {
    pub fn records_per_s(&self) -> f64 {
        self.lines as f64 / self.small.secs
    }

    /// Markdown for docs/bench.md.
    pub fn section(&self) -> String {
        let mb = |b: u64| b as f64 / (1 << 20) as f64;
        let big_lines = self.lines * self.copies;
        let big_bytes = self.bytes * self.copies;
        let ratio = self.jq.secs / self.small.secs;
        format!(
            "## Replay: `nfs-trace report` (issue 16)\n\n\
             A recording of `watch --json --events` during a storm of {} connects ({} lines, {:.1} MiB),\n\
             replayed with `report --json`, and the same recording repeated {} times ({:.0} MiB, each copy a\n\
             recorded run of its own). Baseline in the same run: `jq -c 'select(.type == \"episode\")'` on the\n\
             small file (it only parses each line).\n\n\
             | file | lines | time | records/s | MiB/s | peak RSS |\n|---|---:|---:|---:|---:|---:|\n\
             | recording | {} | {:.2} s | {:.0} | {:.0} | {:.1} MiB |\n\
             | recording × {} | {} | {:.2} s | {:.0} | {:.0} | {:.1} MiB |\n\
             | jq, recording | {} | {:.2} s | {:.0} | {:.0} | {:.1} MiB |\n\n\
             report vs jq on the same file: **{:.2}×** jq's speed. Memory stays bounded: the {:.0} MiB file peaks at\n\
             {:.1} MiB against {:.1} MiB for one copy.\n",
            self.connects,
            self.lines,
            mb(self.bytes),
            self.copies,
            mb(big_bytes),
            self.lines,
            self.small.secs,
            self.records_per_s(),
            mb(self.bytes) / self.small.secs,
            self.small.max_rss_kb as f64 / 1024.0,
            self.copies,
            big_lines,
            self.big.secs,
            big_lines as f64 / self.big.secs,
            mb(big_bytes) / self.big.secs,
            self.big.max_rss_kb as f64 / 1024.0,
            self.lines,
            self.jq.secs,
            self.lines as f64 / self.jq.secs,
            mb(self.bytes) / self.jq.secs,
            self.jq.max_rss_kb as f64 / 1024.0,
            ratio,
            mb(big_bytes),
            self.big.max_rss_kb as f64 / 1024.0,
            self.small.max_rss_kb as f64 / 1024.0,
        )
    }
}

/// Puts `sec` in place of the replay section of `md` (or appends it).
pub fn splice(md: &str, sec: &str) -> String {
    const HEAD: &str = "## Replay: `nfs-trace report`";
    match md.find(HEAD) {
        Some(i) => {
            let rest = &md[i + HEAD.len()..];
            let end = rest.find("\n## ").map(|j| i + HEAD.len() + j + 1).unwrap_or(md.len());
            format!("{}{sec}{}", &md[..i], &md[end..])
        }
        None => format!("{}\n{sec}", md.trim_end_matches('\n').to_string() + "\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_is_replaced_in_place_or_appended() {
        let sec = "## Replay: `nfs-trace report` (issue 16)\n\nnew\n";
        let md = "# Bench\n\n## A\n\na\n";
        assert_eq!(splice(md, sec), format!("{md}\n{sec}"));
        let old = "# Bench\n\n## Replay: `nfs-trace report` (issue 16)\n\nold\n\n## Z\n\nz\n";
        assert_eq!(splice(old, sec), format!("# Bench\n\n{sec}## Z\n\nz\n"));
    }
}
