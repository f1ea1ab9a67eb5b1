//! What a tracer's BPF programs cost inside the kernel (issue 11, item 6).
//!
//! Throughput ratios on a 2-core machine swing ±10 % run to run; the kernel's
//! own per-program counters (`run_time_ns`, `run_cnt`) do not. They only
//! count while run-time stats are on, and having them on costs every program
//! on the host a clock read per run — so they are switched on only around the
//! run-time runs, never during the throughput runs.
//!
//! Whose programs: only those the tool's process holds, found through
//! `/proc/PID/fdinfo/*` (`prog_id:` on prog and link fds). Another engineer's
//! nfs-trace on the same host loads programs with the same names; their ids
//! differ. The counters come from the prog fd's fdinfo (which also has
//! `recursion_misses`: runs the kernel skipped because a BPF program was
//! already running on that CPU), names and any counter a link-only program
//! lacks from the kernel's program info by id.
use std::{
    collections::{BTreeMap, BTreeSet},
    os::fd::OwnedFd,
};

use anyhow::{Context as _, Result, bail};

/// The kernel's counters for one program at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    pub run_time_ns: u64,
    pub run_cnt: u64,
    /// None where only the program info was readable (it has no such field in aya 0.14).
    pub recursion_misses: Option<u64>,
}

/// One program a process holds, at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prog {
    pub id: u32,
    /// The kernel's name (at most 15 bytes: aya names a program after its
    /// function, bpftrace after its probe, both cut short).
    pub name: String,
    pub c: Counters,
}

/// What one fdinfo file says about a BPF program: its id, and the counters
/// when it is the program's own fd (a link's fdinfo has the id only).
/// None for every other kind of fd.
pub fn parse_fdinfo(text: &str) -> Option<(u32, Option<Counters>)> {
    let mut fields = BTreeMap::new();
    for line in text.lines() {
        if let Some((k, v)) = line.split_once(':') {
            fields.insert(k.trim(), v.trim());
        }
    }
    let num = |k: &str| fields.get(k).and_then(|v| v.parse::<u64>().ok());
    let id = fields.get("prog_id")?.parse::<u32>().ok()?;
    let counters = match (num("run_time_ns"), num("run_cnt")) {
        (Some(run_time_ns), Some(run_cnt)) => {
            Some(Counters { run_time_ns, run_cnt, recursion_misses: num("recursion_misses") })
        }
        _ => None,
    };
    Some((id, counters))
}

/// The programs `pid` holds, with their counters now.
pub fn snapshot(pid: u32) -> Result<BTreeMap<u32, Prog>> {
    let dir = format!("/proc/{pid}/fdinfo");
    let mut found: BTreeMap<u32, Option<Counters>> = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("cannot list {dir}"))? {
        // An fd closed since the listing has no fdinfo any more: not a program we need.
        let Ok(text) = std::fs::read_to_string(entry?.path()) else { continue };
        if let Some((id, c)) = parse_fdinfo(&text) {
            let slot = found.entry(id).or_default();
            if slot.is_none() {
                *slot = c;
            }
        }
    }
    if found.is_empty() {
        bail!("process {pid} holds no BPF program or link fd: cannot tell which programs are its own");
    }
    let ids: BTreeSet<u32> = found.keys().copied().collect();
    let mut progs = BTreeMap::new();
    for info in aya::programs::loaded_programs() {
        let info = info.context("cannot read the kernel's BPF program list")?;
        if !ids.contains(&info.id()) {
            continue;
        }
        let c = found[&info.id()].unwrap_or(Counters {
            run_time_ns: info.run_time().as_nanos() as u64,
            run_cnt: info.run_count(),
            recursion_misses: None,
        });
        let name = info.name_as_str().unwrap_or("?").to_string();
        progs.insert(info.id(), Prog { id: info.id(), name, c });
    }
    Ok(progs)
}

/// One program's work between two snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgDelta {
    pub id: u32,
    pub name: String,
    pub run_cnt: u64,
    pub run_time_ns: u64,
    pub recursion_misses: Option<u64>,
}

/// What each program did between `before` and `after`. A program loaded in
/// between counts from zero (its counters started there); one gone by
/// `after` cannot be measured and is left out.
pub fn delta(before: &BTreeMap<u32, Prog>, after: &BTreeMap<u32, Prog>) -> Vec<ProgDelta> {
    after
        .values()
        .map(|a| {
            let b = before.get(&a.id).map(|p| p.c).unwrap_or_default();
            ProgDelta {
                id: a.id,
                name: a.name.clone(),
                // Counters only grow; saturate rather than wrap if a kernel ever resets one.
                run_cnt: a.c.run_cnt.saturating_sub(b.run_cnt),
                run_time_ns: a.c.run_time_ns.saturating_sub(b.run_time_ns),
                recursion_misses: match (a.c.recursion_misses, before.get(&a.id)) {
                    (Some(am), Some(bp)) => bp.c.recursion_misses.map(|bm| am.saturating_sub(bm)),
                    (Some(am), None) => Some(am),
                    (None, _) => None,
                },
            }
        })
        .collect()
}

/// Which port a run-time storm dials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The port the tool filters for (2049).
    Watched,
    /// Another port (2050): what every other TCP socket on a host costs.
    Unwatched,
    /// The same, with nfs-trace and the bpftrace one-liner attached at once:
    /// both programs run on the same state changes, one after the other, so
    /// the machine's drift between runs cannot favour either.
    UnwatchedPaired,
}

impl Target {
    pub fn label(self) -> &'static str {
        match self {
            Target::Watched => "watched",
            Target::UnwatchedPaired => "unwatched, paired",
            Target::Unwatched => "unwatched",
        }
    }
}

/// One tool's programs over one storm.
#[derive(Debug, Clone)]
pub struct Cost {
    pub tool: super::tracer::Tool,
    pub target: Target,
    pub port: u16,
    /// Connects the storm made (to `port`).
    pub connects: u64,
    /// The storm's connects/s (stats on: not comparable with the throughput table).
    pub rate: f64,
    /// Connects to `port` the tool reported (watched: all of them; unwatched: none).
    pub reported: u64,
    pub progs: Vec<ProgDelta>,
}

impl Cost {
    pub fn run_time_ns(&self) -> u64 {
        self.progs.iter().map(|p| p.run_time_ns).sum()
    }
    pub fn run_cnt(&self) -> u64 {
        self.progs.iter().map(|p| p.run_cnt).sum()
    }
    /// Run time over all the tool's programs per run (None: nothing ran).
    pub fn ns_per_run(&self) -> Option<f64> {
        per(self.run_time_ns(), self.run_cnt())
    }
    /// Run time over all the tool's programs per connect made.
    pub fn ns_per_connect(&self) -> Option<f64> {
        per(self.run_time_ns(), self.connects)
    }
    pub fn runs_per_connect(&self) -> Option<f64> {
        per(self.run_cnt(), self.connects)
    }
}

/// a / b, None when b is 0 (nothing to divide by is not "0 ns").
pub fn per(a: u64, b: u64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

/// Run-time stats on for as long as this lives. BPF_ENABLE_STATS hands out an
/// fd and the kernel counts while any such fd is open, so the
/// `kernel.bpf_stats_enabled` sysctl is never written and nothing needs
/// restoring: the kernel drops the reference when the fd closes — on drop,
/// on an error's unwinding, even when the bench is killed.
pub struct StatsOn {
    _fd: OwnedFd,
}

impl StatsOn {
    pub fn enable() -> Result<StatsOn> {
        let fd = aya::sys::enable_stats(aya::sys::Stats::RunTime)
            .context("BPF_ENABLE_STATS failed (needs root and kernel ≥ 5.8)")?;
        Ok(StatsOn { _fd: fd })
    }
}

/// `kernel.bpf_stats_enabled` as someone else may have set it (then stats
/// were on during the throughput runs too, which the report says).
pub fn sysctl_enabled() -> Option<bool> {
    std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").ok().map(|s| s.trim() != "0")
}

#[cfg(test)]
mod tests {
    use super::*;

    // As this host's kernel (6.18) writes them.
    const PROG_FD: &str = "pos:\t0\nflags:\t02000002\nmnt_id:\t17\nino:\t1039\nprog_type:\t5\nprog_jited:\t1\n\
        prog_tag:\t7f70f139ad5b1459\nmemlock:\t4096\nprog_id:\t798\nrun_time_ns:\t123456\nrun_cnt:\t789\n\
        recursion_misses:\t4657\nverified_insns:\t23\n";
    const LINK_FD: &str = "pos:\t0\nflags:\t02000000\nmnt_id:\t17\nino:\t1039\nlink_type:\tperf\nlink_id:\t203\n\
        prog_tag:\tc89482bf09319392\nprog_id:\t792\n";
    const MAP_FD: &str = "pos:\t0\nflags:\t02000002\nmnt_id:\t17\nino:\t1039\nmap_type:\t27\nkey_size:\t0\n\
        value_size:\t0\nmax_entries:\t262144\nmap_flags:\t0x0\nmap_extra:\t0x0\nmemlock:\t270336\nmap_id:\t611\nfrozen:\t0\n";

    #[test]
    fn fdinfo_names_programs_and_their_counters() {
        let c = Counters { run_time_ns: 123_456, run_cnt: 789, recursion_misses: Some(4657) };
        assert_eq!(parse_fdinfo(PROG_FD), Some((798, Some(c))));
        assert_eq!(parse_fdinfo(LINK_FD), Some((792, None)), "a link names its program but has no counters");
        assert_eq!(parse_fdinfo(MAP_FD), None);
        assert_eq!(parse_fdinfo("pos:\t0\nflags:\t02\n"), None, "a plain file");
        // A kernel before 5.12 has no recursion_misses.
        let old = PROG_FD.replace("recursion_misses:\t4657\n", "");
        assert_eq!(parse_fdinfo(&old).unwrap().1.unwrap().recursion_misses, None);
    }

    fn prog(id: u32, t: u64, n: u64, m: Option<u64>) -> (u32, Prog) {
        (id, Prog { id, name: format!("p{id}"), c: Counters { run_time_ns: t, run_cnt: n, recursion_misses: m } })
    }

    #[test]
    fn delta_is_the_work_between_snapshots() {
        let before = BTreeMap::from([prog(1, 1_000, 10, Some(2)), prog(2, 50, 1, None), prog(3, 7, 7, Some(0))]);
        // 3 unloaded, 4 loaded in between.
        let after = BTreeMap::from([prog(1, 31_000, 110, Some(5)), prog(2, 50, 1, None), prog(4, 900, 3, Some(1))]);
        let d = delta(&before, &after);
        let got: Vec<(u32, u64, u64, Option<u64>)> =
            d.iter().map(|p| (p.id, p.run_cnt, p.run_time_ns, p.recursion_misses)).collect();
        assert_eq!(got, [(1, 100, 30_000, Some(3)), (2, 0, 0, None), (4, 3, 900, Some(1))]);
        // A counter that went backwards does not wrap into a huge number.
        let d = delta(&after, &before);
        assert_eq!((d[0].run_cnt, d[0].run_time_ns), (0, 0));
    }

    #[test]
    fn cost_per_run_and_per_connect() {
        let d = |id, n, t| ProgDelta { id, name: String::new(), run_cnt: n, run_time_ns: t, recursion_misses: None };
        let c = Cost {
            tool: super::super::tracer::Tool::NfsTrace,
            target: Target::Unwatched,
            port: 2050,
            connects: 1_000,
            rate: 0.0,
            reported: 0,
            progs: vec![d(1, 3_000, 360_000), d(2, 0, 0), d(3, 1_000, 40_000)],
        };
        assert_eq!((c.run_cnt(), c.run_time_ns()), (4_000, 400_000));
        assert_eq!(c.ns_per_run(), Some(100.0));
        assert_eq!(c.ns_per_connect(), Some(400.0));
        assert_eq!(c.runs_per_connect(), Some(4.0));
        let idle = Cost { progs: vec![d(2, 0, 0)], connects: 0, ..c };
        assert_eq!((idle.ns_per_run(), idle.ns_per_connect()), (None, None), "nothing ran is not 0 ns");
    }

    #[test]
    fn a_process_without_bpf_fds_is_an_error_not_an_empty_table() {
        let e = snapshot(std::process::id()).unwrap_err();
        assert!(e.to_string().contains("holds no BPF program"), "{e:#}");
    }
}
