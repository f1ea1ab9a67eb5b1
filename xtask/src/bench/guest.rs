//! The bench's NFS I/O run in a guest (issue 12, item 6): the VM lab's
//! `nfs-io` scenario (tests/src/lab/nfs_io.rs) on the 6.12 line copies the
//! same file over a v3 and a v4.1 mount with and without the tracer, in the
//! same boot; this turns its copies into MB/s, per-round ratios and a
//! verdict against the target. Like the host runs, a missed target is
//! printed as MISS, never an error; missing data is NO DATA, never a PASS.
use std::{fmt::Write as _, time::Duration};

use serde_json::Value;

/// The scenario's name (tests/src/lab/nfs_io.rs).
pub const SCENARIO: &str = "nfs-io";
/// The kernel line booted.
pub const KERNEL: &str = "6.12";
/// Issue 12: NFS I/O with the tracer at least this share of without.
pub const MIN_RATIO: f64 = 0.98;
/// The versions and directions the scenario measures, in table order.
const VERSIONS: &[&str] = &["3", "4.1"];
const DIRS: &[&str] = &["write", "read"];
/// The section's heading: `--guest-only` replaces the section under it.
pub const HEADING: &str = "## NFS I/O in a guest";

/// How big a run: MiB per copy and rounds.
#[derive(Debug, Clone, Copy)]
pub struct Size {
    pub mib: u32,
    pub rounds: u32,
}

impl Size {
    /// With the guest's clock counting instructions (6.12 guest): about
    /// 140 MB/s writing and 80 MB/s reading per guest second, so 64 MiB is
    /// 0.5 s and 0.8 s, a traced run's copies about 3 guest seconds (three
    /// of the tracer's once-a-second passes); a round takes about 50 s of
    /// host time. --quick: 3 rounds.
    pub fn new(quick: bool) -> Size {
        Size { mib: 64, rounds: if quick { 3 } else { 7 } }
    }
}

/// What the guest run gave.
pub struct Guest {
    pub size: Size,
    /// `uname -r` and package version of the kernel booted, if it booted.
    pub kernel: Option<(String, String)>,
    /// The scenario's truth record.
    pub truth: Option<Value>,
    /// Why there is no (complete) result: the boot's end, a build error.
    pub problem: Option<String>,
    pub wall: Duration,
    /// The boot itself (QEMU start to the guest's result).
    pub qemu_wall: Option<Duration>,
}

/// Boots the guest and runs the scenario. Never fails: a build or boot
/// error becomes the report's `problem`.
pub fn run(size: Size, verbose: bool) -> Guest {
    let t0 = std::time::Instant::now();
    eprintln!("xtask bench: NFS I/O in a {KERNEL} guest ({} MiB per copy, {} rounds)", size.mib, size.rounds);
    let append = format!(" lab.io_mib={} lab.io_rounds={}", size.mib, size.rounds);
    match crate::vm::run_guest(KERNEL, &[SCENARIO], &append, Duration::from_secs(900), verbose) {
        Ok(g) => {
            let truth = g.truths.into_iter().find(|t| t["scenario"] == SCENARIO);
            // The raw record, for reading a surprising table.
            if let Some(t) = &truth {
                let p = crate::vm::cache_dir().join("bench-nfs-io.json");
                match std::fs::write(&p, format!("{t:#}\n")) {
                    Ok(()) => eprintln!("xtask bench: the guest's record is in {}", p.display()),
                    Err(e) => eprintln!("xtask bench: cannot write {}: {e}", p.display()),
                }
            }
            let problem = match (&truth, g.end.as_str()) {
                (Some(t), _) if t["error"].is_string() => Some(format!("guest: {}", t["error"].as_str().unwrap_or(""))),
                (Some(_), "OK") => None,
                (None, end) => Some(format!("no result from the guest ({end})")),
                (Some(_), end) => Some(format!("the guest ended: {end}")),
            };
            Guest {
                size,
                kernel: Some((g.release, g.package_version)),
                truth,
                problem,
                wall: t0.elapsed(),
                qemu_wall: Some(g.qemu_wall),
            }
        }
        Err(e) => Guest { size, kernel: None, truth: None, problem: Some(format!("{e:#}")), wall: t0.elapsed(), qemu_wall: None },
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    Pass,
    Miss,
    NoData,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Miss => "MISS",
            Verdict::NoData => "NO DATA",
        }
    }
}

/// One version and direction over every round.
#[derive(Debug)]
pub struct Row {
    pub vers: String,
    pub dir: String,
    pub without: Vec<f64>,
    pub with: Vec<f64>,
    /// with / without per round that has both.
    pub ratios: Vec<f64>,
}

impl Row {
    pub fn verdict(&self) -> Verdict {
        if self.ratios.is_empty() {
            Verdict::NoData
        } else if median(&self.ratios) >= MIN_RATIO {
            Verdict::Pass
        } else {
            Verdict::Miss
        }
    }
}

use super::report::median;

/// MB/s (10^6 bytes) of one copy record; None if it is not a usable one.
fn mbps(c: &Value) -> Option<f64> {
    let (b, ns) = (c["bytes"].as_u64()?, c["ns"].as_u64()?);
    (b > 0 && ns > 0).then(|| b as f64 / 1e6 / (ns as f64 / 1e9))
}

/// Every version × direction, in table order, from the truth record's copies
/// (an absent record gives rows with no data).
pub fn rows(truth: Option<&Value>) -> Vec<Row> {
    let empty = Vec::new();
    let copies = truth.and_then(|t| t["copies"].as_array()).unwrap_or(&empty);
    let mut out = Vec::new();
    for v in VERSIONS {
        for d in DIRS {
            let mine: Vec<&Value> = copies.iter().filter(|c| c["vers"] == *v && c["dir"] == *d).collect();
            let of = |traced: bool| -> Vec<(u64, f64)> {
                mine.iter()
                    .filter(|c| c["tracer"] == traced)
                    .filter_map(|c| Some((c["round"].as_u64()?, mbps(c)?)))
                    .collect()
            };
            let (without, with) = (of(false), of(true));
            // Within a round the two ran minutes apart at most: the ratio
            // of the pair is less blurred by drift than one of medians.
            let ratios = with
                .iter()
                .filter_map(|(r, w)| without.iter().find(|(r0, _)| r0 == r).map(|(_, wo)| w / wo))
                .collect();
            out.push(Row {
                vers: v.to_string(),
                dir: d.to_string(),
                without: without.iter().map(|x| x.1).collect(),
                with: with.iter().map(|x| x.1).collect(),
                ratios,
            });
        }
    }
    out
}

/// The tracer's own health over every traced run: no `episode` record and
/// nothing lost. NO DATA when there were no traced runs or one printed no
/// summary (its lost counters unknown).
pub fn tracer_health(truth: Option<&Value>) -> (Verdict, String) {
    let empty = Vec::new();
    let ts = truth.and_then(|t| t["tracers"].as_array()).unwrap_or(&empty);
    if ts.is_empty() {
        return (Verdict::NoData, "no traced run reported".into());
    }
    let no_summary = ts.iter().filter(|t| t["lost"].is_null()).count();
    let episodes: u64 = ts.iter().filter_map(|t| t["episodes"].as_u64()).sum();
    let lost_records: u64 = ts.iter().filter_map(|t| t["lost_records"].as_u64()).sum();
    let lost: u64 = ts
        .iter()
        .flat_map(|t| ["events", "sockets", "connects"].map(|k| t["lost"][k].as_u64().unwrap_or(0)))
        .sum();
    // Its CPU while the copies ran, as a share of their time: on the one
    // vCPU that is what the copies lose. Summed over the runs: a run's copies
    // last about a second of guest time, a tick or two of USER_HZ.
    let (ticks, copies_ns) = ts
        .iter()
        .filter_map(|t| Some((t["cpu_ticks"].as_u64()?, t["copies_ns"].as_u64()?)))
        .fold((0u64, 0u64), |(a, b), (t, n)| (a + t, b + n));
    let cpu = if copies_ns == 0 {
        String::new()
    } else {
        format!(
            "; its CPU during the copies {:.2} % of their time ({ticks} ticks of 10 ms in {:.1} s of copies, all runs)",
            ticks as f64 * 1e9 / copies_ns as f64,
            copies_ns as f64 / 1e9
        )
    };
    let text = format!(
        "{} traced runs: {episodes} episode records, lost (events + sockets + connects) {lost}, {lost_records} `lost` records{cpu}{}",
        ts.len(),
        if no_summary > 0 { format!("; {no_summary} printed no summary") } else { String::new() }
    );
    let v = if no_summary > 0 {
        Verdict::NoData
    } else if episodes == 0 && lost == 0 && lost_records == 0 {
        Verdict::Pass
    } else {
        Verdict::Miss
    };
    (v, text)
}

/// The docs/bench.md section.
pub fn section(g: &Guest) -> String {
    let mut s = format!("{HEADING}\n\n");
    s += "Issue 12: NFS I/O with the tracer attached at least ";
    let _ = writeln!(s, "{MIN_RATIO} of without it, measured in one guest boot (`cargo xtask bench --guest-only` runs this part alone).\n");
    match &g.kernel {
        Some((rel, pkg)) => {
            let _ = writeln!(
                s,
                "- guest kernel: {rel} (Debian {pkg}), QEMU/TCG, 1 vCPU, 1 GiB; the guest's clock counts its instructions (`-icount shift=0,sleep=off`: 1 ns each), so MB/s are per guest second"
            );
        }
        None => {
            let _ = writeln!(s, "- guest kernel: none booted ({KERNEL} line)");
        }
    }
    let _ = writeln!(
        s,
        "- {} MiB per copy, {} rounds; {:.0} s in all, {} of it in QEMU",
        g.size.mib,
        g.size.rounds,
        g.wall.as_secs_f64(),
        g.qemu_wall.map_or("none".into(), |w| format!("{:.0} s", w.as_secs_f64())),
    );
    if let Some(p) = &g.problem {
        let _ = writeln!(s, "- **problem:** {p}");
    }
    s += "\n| NFS | direction | without tracer (MB/s, median) | with tracer (MB/s, median) | ratio (median of rounds, range) | ≥ 0.98 |\n";
    s += "|---|---|---:|---:|---:|---|\n";
    let rs = rows(g.truth.as_ref());
    for r in &rs {
        let med = |v: &[f64]| if v.is_empty() { "–".to_string() } else { format!("{:.1}", median(v)) };
        let ratio = if r.ratios.is_empty() {
            "no data".to_string()
        } else {
            let (lo, hi) = r.ratios.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
            format!("{:.3} ({lo:.3}–{hi:.3}, {} of {} rounds)", median(&r.ratios), r.ratios.len(), g.size.rounds)
        };
        let _ = writeln!(
            s,
            "| v{} | {} | {} | {} | {ratio} | **{}** |",
            r.vers,
            r.dir,
            med(&r.without),
            med(&r.with),
            r.verdict().label()
        );
    }
    let (hv, ht) = tracer_health(g.truth.as_ref());
    let _ = writeln!(s, "\n- **{}** the tracer saw no episode and lost nothing: {ht}", hv.label());
    let worst = rs.iter().map(|r| r.verdict()).fold(Verdict::Pass, |a, v| match (a, v) {
        (Verdict::NoData, _) | (_, Verdict::NoData) => Verdict::NoData,
        (Verdict::Miss, _) | (_, Verdict::Miss) => Verdict::Miss,
        _ => Verdict::Pass,
    });
    let _ = writeln!(s, "- **{}** NFS I/O ratio ≥ {MIN_RATIO} on every version and direction", worst.label());
    s += "\nHow: the guest (tests/src/lab/nfs_io.rs) mounts its own nfsd over a veth pair, v3 and v4.1 each \
          its own mount, and copies one unreported warm-up file per mount. Each round then runs once without \
          and once with `nfs-trace watch --json` (started, its `attached` record awaited, stopped with SIGINT \
          after the copies), which goes first alternating per round. A copy writes the file (fixed content) \
          in 1 MiB writes, fsync, close, then reads it back after `echo 3 > /proc/sys/vm/drop_caches` and checks \
          it; each is timed on CLOCK_MONOTONIC from open to close. A round's ratio is its with / without MB/s. \
          Client and server share the one vCPU, so the tracer's CPU shows in both directions. The guest's clock \
          counts instructions, not host time: under plain TCG one copy's time swung ±35 % with the host's load \
          (ratios 0.55–1.72 in five rounds), far more than the 2 % to be measured; counted in instructions the rounds agree within \
          a few per cent, and what the tracer costs is what it executes on the copies' CPU.\n";
    s
}

/// `existing` (docs/bench.md) with its NFS I/O section replaced by
/// `section`, or `section` appended if it has none: `--guest-only` keeps
/// the host runs' results.
/// The section as `existing` has it (heading to the next one), if any.
pub fn section_of(existing: &str) -> Option<&str> {
    let start = existing.find(HEADING)?;
    let after = start + HEADING.len();
    let end = existing[after..].find("\n## ").map_or(existing.len(), |i| after + i + 1);
    Some(existing[start..end].trim_end())
}

pub fn splice(existing: &str, section: &str) -> String {
    let Some(start) = existing.find(HEADING) else {
        let sep = if existing.is_empty() || existing.ends_with("\n\n") {
            ""
        } else if existing.ends_with('\n') {
            "\n"
        } else {
            "\n\n"
        };
        return format!("{existing}{sep}{section}");
    };
    let after = start + HEADING.len();
    let end = existing[after..].find("\n## ").map_or(existing.len(), |i| after + i + 1);
    format!("{}{section}{}", &existing[..start], if end < existing.len() { format!("\n{}", &existing[end..]) } else { String::new() })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A truth record whose every pair has with / without = `ratio` (100
    /// MB/s without), for `rounds` rounds.
    fn truth(ratio: f64, rounds: u64) -> Value {
        let bytes = 16u64 << 20;
        let ns = |mbps: f64| (bytes as f64 / 1e6 / mbps * 1e9) as u64;
        let mut copies = Vec::new();
        for r in 0..rounds {
            for v in VERSIONS {
                for d in DIRS {
                    copies.push(json!({"round": r, "tracer": false, "vers": v, "dir": d, "bytes": bytes, "ns": ns(100.0)}));
                    copies.push(json!({"round": r, "tracer": true, "vers": v, "dir": d, "bytes": bytes, "ns": ns(100.0 * ratio)}));
                }
            }
        }
        let tracers: Vec<Value> = (0..rounds)
            .map(|r| {
                json!({"round": r, "episodes": 0, "lost_records": 0, "lost": {"events": 0, "sockets": 0, "connects": 0},
                       "cpu_ticks": 10 + r, "copies_ns": 1_000_000_000u64})
            })
            .collect();
        json!({"scenario": SCENARIO, "copies": copies, "tracers": tracers, "error": null})
    }

    fn guest(truth: Option<Value>) -> Guest {
        Guest {
            size: Size { mib: 16, rounds: 5 },
            kernel: Some(("6.12.0-test".into(), "6.12.0-1".into())),
            truth,
            problem: None,
            wall: Duration::from_secs(100),
            qemu_wall: Some(Duration::from_secs(90)),
        }
    }

    #[test]
    fn below_the_target_is_a_miss_above_a_pass() {
        let miss = rows(Some(&truth(0.97, 5)));
        assert_eq!(miss.len(), 4);
        for r in &miss {
            assert_eq!(r.ratios.len(), 5, "{r:?}");
            assert!((median(&r.ratios) - 0.97).abs() < 1e-6, "{r:?}");
            assert_eq!(r.verdict(), Verdict::Miss, "{r:?}");
        }
        for r in rows(Some(&truth(0.99, 5))) {
            assert_eq!(r.verdict(), Verdict::Pass, "{r:?}");
        }
        let s = section(&guest(Some(truth(0.97, 5))));
        assert!(s.contains("| v3 | write | 100.0 | 97.0 | 0.970 (0.970–0.970, 5 of 5 rounds) | **MISS** |"), "{s}");
        assert!(s.contains("**MISS** NFS I/O ratio"), "{s}");
        let s = section(&guest(Some(truth(0.99, 5))));
        assert!(s.contains("| v4.1 | read | 100.0 | 99.0 | 0.990 (0.990–0.990, 5 of 5 rounds) | **PASS** |"), "{s}");
        assert!(s.contains("**PASS** NFS I/O ratio"), "{s}");
        assert!(s.contains("**PASS** the tracer saw no episode"), "{s}");
        // 10–14 ticks of 10 ms over 1 s of copies.
        assert!(s.contains("its CPU during the copies 12.00 % of their time (60 ticks of 10 ms in 5.0 s of copies, all runs)"), "{s}");
        assert!(s.contains("6.12.0-test"), "{s}");
    }

    #[test]
    fn the_ratio_is_per_round_and_its_median() {
        // Round 1 ran slower in both halves: its ratio is still 1.
        let mut t = truth(1.0, 3);
        for c in t["copies"].as_array_mut().unwrap() {
            if c["round"] == 1 {
                c["ns"] = json!(c["ns"].as_u64().unwrap() * 2);
            }
        }
        for r in rows(Some(&t)) {
            assert_eq!(r.ratios.len(), 3);
            assert!(r.ratios.iter().all(|x| (x - 1.0).abs() < 1e-6), "{r:?}");
        }
    }

    #[test]
    fn missing_data_says_so() {
        // No record at all (the guest did not boot).
        let mut g = guest(None);
        g.problem = Some("no result from the guest (timeout after 900 s)".into());
        let s = section(&g);
        assert!(!s.contains("PASS"), "{s}");
        assert_eq!(s.matches("| no data | **NO DATA** |").count(), 4, "{s}");
        assert!(s.contains("**NO DATA** NFS I/O ratio"), "{s}");
        assert!(s.contains("**problem:** no result"), "{s}");
        // Runs without the tracer only: nothing to compare.
        let mut t = truth(0.99, 5);
        t["copies"].as_array_mut().unwrap().retain(|c| c["tracer"] == false);
        assert!(rows(Some(&t)).iter().all(|r| r.verdict() == Verdict::NoData));
        // One version missing: that one says NO DATA and so does the whole.
        let mut t = truth(0.99, 5);
        t["copies"].as_array_mut().unwrap().retain(|c| c["vers"] == "3");
        let s = section(&guest(Some(t)));
        assert!(s.contains("| v4.1 | write | – | – | no data | **NO DATA** |"), "{s}");
        assert!(s.contains("**NO DATA** NFS I/O ratio"), "{s}");
        // A tracer that printed no summary: its lost counters are unknown.
        let mut t = truth(0.99, 5);
        t["tracers"][2]["lost"] = Value::Null;
        assert_eq!(tracer_health(Some(&t)).0, Verdict::NoData);
        assert_eq!(tracer_health(Some(&json!({"tracers": []}))).0, Verdict::NoData);
    }

    #[test]
    fn an_episode_or_a_loss_fails_the_tracer_health() {
        let mut t = truth(0.99, 5);
        t["tracers"][0]["episodes"] = json!(1);
        assert_eq!(tracer_health(Some(&t)).0, Verdict::Miss);
        let mut t = truth(0.99, 5);
        t["tracers"][4]["lost"]["events"] = json!(3);
        let (v, text) = tracer_health(Some(&t));
        assert_eq!(v, Verdict::Miss, "{text}");
        assert!(text.contains("lost (events + sockets + connects) 3"), "{text}");
    }

    #[test]
    fn splice_replaces_only_the_guest_section() {
        let host = "# Bench\n\nhost table\n";
        let one = splice(host, "## NFS I/O in a guest\n\nold\n");
        assert_eq!(one, "# Bench\n\nhost table\n\n## NFS I/O in a guest\n\nold\n");
        let two = splice(&one, "## NFS I/O in a guest\n\nnew\n");
        assert_eq!(two, "# Bench\n\nhost table\n\n## NFS I/O in a guest\n\nnew\n");
        // A section followed by another keeps the other.
        let mid = "# B\n\n## NFS I/O in a guest\n\nold\n\n## Later\n\nx\n";
        assert_eq!(splice(mid, "## NFS I/O in a guest\n\nnew\n"), "# B\n\n## NFS I/O in a guest\n\nnew\n\n## Later\n\nx\n");
        assert_eq!(splice("", "## NFS I/O in a guest\n"), "## NFS I/O in a guest\n");
    }
}
