//! `cargo xtask bench`: what tracing costs the traced, against the peers
//! people would use instead (issue 6, item 1).
//!
//! One loopback connect storm (`storm`) is run in one go under no tracer,
//! nfs-trace, libbpf-tools tcpstates and a bpftrace one-liner (`tracer`), the
//! baseline interleaved between the tracers so the machine's own noise shows
//! as the baseline's spread. nfs-trace runs a second time with its flow
//! memory filled before the storm (more distinct flows than it remembers),
//! so the storm pays for evicting on every new flow. `report` turns the runs into the table in
//! docs/bench.md and checks the targets. After the throughput runs,
//! one run-time run per tracer (`bpfstats`) reads what its BPF programs cost
//! in the kernel on a storm to the watched port and one to an unwatched port,
//! with the kernel's run-time stats on for those runs only. Every number is measured in
//! this run; a missed target is printed as MISS, never hidden (exit status 0:
//! the timing belongs to a shared machine, not to a test). Last, `guest`
//! boots the VM lab's 6.12 guest for NFS I/O with and without the tracer
//! (issue 12). `replay` times `nfs-trace report` on a recording (issue 16).
mod bpfstats;
mod guest;
mod replay;
mod report;
mod storm;
mod tracer;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use tracer::{Running, Tool};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// A shorter run (fewer connects, two rounds) that finishes in under 2 minutes,
    /// plus the guest run with 3 rounds instead of 5 (--no-guest skips it).
    #[arg(long)]
    quick: bool,
    /// Connects to 127.0.0.1:2049 per run [default: 50000, --quick: 20000].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(100..=10_000_000))]
    connects: Option<u64>,
    /// Client threads making the connects [default: the number of CPUs, at least 2].
    #[arg(long, value_name = "T", value_parser = clap::value_parser!(u32).range(1..=256))]
    threads: Option<u32>,
    /// Benchmark this nfs-trace binary (e.g. target/dist/nfs-trace) instead of
    /// building the work tree's.
    #[arg(long, value_name = "PATH")]
    bin: Option<PathBuf>,
    /// Only the BPF run-time runs, no throughput runs: for comparing the
    /// programs' own cost (which the machine's noise does not blur).
    #[arg(long)]
    run_time_only: bool,
    /// Run-time runs per tracer and storm, to show their spread [default: 1, --run-time-only: 5].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
    run_time_rounds: Option<u32>,
    /// Skip the NFS I/O run in a guest (QEMU, a few minutes).
    #[arg(long)]
    no_guest: bool,
    /// Only the NFS I/O run in a guest: replaces that section of
    /// docs/bench.md and keeps the rest (needs no root).
    #[arg(long, conflicts_with_all = ["no_guest", "run_time_only", "bin", "connects", "threads", "run_time_rounds"])]
    guest_only: bool,
    /// MiB per copy in the guest run [default: see bench/guest.rs].
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u32).range(1..=256))]
    guest_mib: Option<u32>,
    /// Rounds (one without and one with the tracer each) in the guest run.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=50))]
    guest_rounds: Option<u32>,
    /// Show the guest's console as it runs.
    #[arg(long)]
    verbose: bool,
    /// Only the replay run (`nfs-trace report` on a recording, issue 16):
    /// replaces that section of docs/bench.md and keeps the rest.
    #[arg(long, conflicts_with_all = ["no_guest", "run_time_only", "guest_only"])]
    replay_only: bool,
}

fn guest_size(args: &BenchArgs) -> guest::Size {
    let d = guest::Size::new(args.quick);
    guest::Size { mib: args.guest_mib.unwrap_or(d.mib), rounds: args.guest_rounds.unwrap_or(d.rounds) }
}

/// Flows nfs-trace remembers at most (`MAX_FLOWS` in
/// nfs-trace/src/model/tcp/flows.rs). The full-memory case fills it with
/// more than that before its storm; the report checks the tracer's own
/// summary says it was full.
pub const FLOW_MEMORY: u64 = 32_768;
/// Distinct flows the full-memory case makes before its storm.
pub const PREFILL_FLOWS: u64 = FLOW_MEMORY + 1_000;

/// Peers, installed for the bench only (not part of `setup`: nothing else needs them).
/// jq: the replay run's baseline; time (GNU time): its peak RSS.
const PEER_PACKAGES: &[&str] = &["libbpf-tools", "bpftrace", "jq", "time"];

/// One storm under one tool.
#[derive(Debug, Clone)]
pub struct Run {
    pub tool: Tool,
    pub storm: storm::StormResult,
    /// Connects to 127.0.0.1:2049 the tool reported during the storm.
    pub seen: u64,
    /// Connects to the noise port the tool reported (must be 0).
    pub noise_seen: u64,
    /// Lost events the tool reported (None: it never said, e.g. no summary).
    pub lost: Option<u64>,
    /// The tracer's CPU time (user + system) over storm and drain.
    pub cpu_s: f64,
    /// The tracer's peak RSS over its whole life.
    pub hwm_kb: u64,
    /// nfs-trace's own start-to-attached.
    pub attach_ms: Option<f64>,
    /// Start until it reported the first probe connect (all tools).
    pub ready: Duration,
    /// The tracer's wakeups (voluntary context switches) over storm and drain.
    pub wakeups: u64,
    /// The full-memory case: flows made before the storm, those the tracer
    /// reported before the storm began, and its summary's (tracked, evicted) flows.
    pub prefill: Option<Prefill>,
}

#[derive(Debug, Clone, Copy)]
pub struct Prefill {
    pub made: u64,
    pub seen_before_storm: u64,
    pub summary_flows: Option<(u64, u64)>,
}

pub struct Plan {
    /// Which nfs-trace was measured (for the report).
    pub subject: String,
    pub quick: bool,
    pub connects: u64,
    pub threads: u32,
    pub rounds: usize,
    /// CPUs of this machine (the storm keeps them all busy).
    pub cpus: u32,
    /// Run-time runs per tracer and storm (0: none).
    pub run_time_rounds: u32,
    /// Only run-time runs were made.
    pub run_time_only: bool,
    /// `kernel.bpf_stats_enabled` at the start: if someone set it, the
    /// throughput runs ran with stats on too (the report says so).
    pub stats_sysctl: Option<bool>,
}

/// Removes the output directory however the bench ends.
struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn main(args: BenchArgs) -> Result<()> {
    if args.guest_only {
        return guest_only(&args);
    }
    if !crate::cmd::is_root() {
        bail!("the bench attaches BPF programs: run it as root");
    }
    let cpus = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(2);
    let bin = match &args.bin {
        Some(b) => {
            if !b.is_file() {
                bail!("--bin {}: no such file", b.display());
            }
            b.clone()
        }
        None => PathBuf::new(),
    };
    let plan = Plan {
        subject: match &args.bin {
            Some(b) => {
                let v = std::process::Command::new(b).arg("--version").output();
                let v = v.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
                format!("`{}` ({v})", b.display())
            }
            None => format!("release build of the work tree at {}", git_describe()),
        },
        quick: args.quick,
        connects: args.connects.unwrap_or(if args.quick { 20_000 } else { 50_000 }),
        // As many clients as CPUs: enough to keep every core busy making
        // connects, so tracer overhead shows as lost throughput.
        threads: args.threads.unwrap_or(cpus.max(2)),
        // More rounds in full mode so a tool's ratio is a median, not one sample.
        rounds: if args.run_time_only {
            0
        } else if args.quick {
            2
        } else {
            3
        },
        run_time_rounds: args.run_time_rounds.unwrap_or(if args.run_time_only { 5 } else { 1 }),
        run_time_only: args.run_time_only,
        cpus,
        stats_sysctl: bpfstats::sysctl_enabled(),
    };
    crate::setup::ensure_apt(PEER_PACKAGES)?;
    for p in ["tcpstates", "bpftrace", "stdbuf"] {
        tracer::find_program(p)?;
    }
    let bin = if args.bin.is_some() { bin } else { crate::cmd::build_nfs_trace(true, false)? };

    let dir = TempDir(std::env::temp_dir().join(format!("nfs-trace-bench-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).with_context(|| format!("cannot create {}", dir.0.display()))?;
    let _server = storm::Server::start()?;
    if args.replay_only {
        let r = replay::run(&bin, &dir.0, plan.connects, plan.threads)?;
        let sec = r.section();
        println!("{sec}");
        let path = crate::cmd::workspace_root().join("docs/bench.md");
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        std::fs::write(&path, replay::splice(&old, &sec)).with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("xtask bench: wrote the replay section of {}", path.display());
        return Ok(());
    }

    // Baseline first and after every tracer; the tracers' order rotates per
    // round so none always follows the same neighbour.
    let tools = [Tool::NfsTrace, Tool::NfsTraceFull, Tool::Tcpstates, Tool::Bpftrace];
    let mut order = if plan.run_time_only { vec![] } else { vec![Tool::Baseline] };
    for r in 0..plan.rounds {
        for i in 0..tools.len() {
            order.push(tools[(i + r) % tools.len()]);
            order.push(Tool::Baseline);
        }
    }
    eprintln!(
        "xtask bench: {} runs of {} connects to 127.0.0.1:{} ({} threads, 1 noise connect to :{} per {})",
        order.len(),
        plan.connects,
        storm::NFS_PORT,
        plan.threads,
        storm::NOISE_PORT,
        storm::NOISE_EVERY
    );
    // Warm-up, not reported: the first storm of a fresh process pays for
    // page faults, thread creation and cold caches.
    storm::run(plan.connects / 4 + 1, plan.threads)?;
    let t0 = Instant::now();
    let mut runs = Vec::new();
    for (i, tool) in order.iter().enumerate() {
        let run = one_run(*tool, &plan, &bin, &dir.0, i)?;
        eprintln!(
            "xtask bench: [{:>2}/{}] {:<32} {:>9.0} connects/s  seen {}/{}",
            i + 1,
            order.len(),
            tool.name(),
            run.storm.rate(),
            run.seen,
            if *tool == Tool::Baseline { 0 } else { run.storm.made },
        );
        runs.push(run);
        // Let the previous tracer's detach and socket teardown finish.
        std::thread::sleep(Duration::from_millis(300));
    }
    // The run-time runs last, apart: stats on slows every program a little.
    // (The full-memory case changes nothing in the kernel programs.)
    let mut costs = Vec::new();
    let cost_tools = [Tool::NfsTrace, Tool::Tcpstates, Tool::Bpftrace];
    for (i, tool) in (0..plan.run_time_rounds as usize).flat_map(|_| cost_tools.iter()).enumerate() {
        let c = cost_run(*tool, &plan, &bin, &dir.0, i)?;
        for c in &c {
            eprintln!(
                "xtask bench: [run time] {:<32} {:<9} :{} {:>9.0} connects/s  {} ns per run, {} ns per connect",
                tool.name(),
                c.target.label(),
                c.port,
                c.rate,
                c.ns_per_run().map_or("–".into(), |v| format!("{v:.0}")),
                c.ns_per_connect().map_or("–".into(), |v| format!("{v:.0}")),
            );
        }
        costs.extend(c);
        std::thread::sleep(Duration::from_millis(300));
    }
    // Then nfs-trace and bpftrace side by side on the same unwatched storm,
    // twice per round: each attached first once. Whichever program runs first
    // on a state change pays more (measured: 3–18 ns per run), so a round's
    // difference is the mean over both orders.
    for (i, pair) in (0..plan.run_time_rounds as usize)
        .flat_map(|_| [[Tool::NfsTrace, Tool::Bpftrace], [Tool::Bpftrace, Tool::NfsTrace]])
        .enumerate()
    {
        let c = paired_cost_run(pair, &plan, &bin, &dir.0, i)?;
        for c in &c {
            eprintln!(
                "xtask bench: [run time, paired] {:<32} :{} {:>9.0} connects/s  {} ns per run",
                c.tool.name(),
                c.port,
                c.rate,
                c.ns_per_run().map_or("–".into(), |v| format!("{v:.1}")),
            );
        }
        costs.extend(c);
        std::thread::sleep(Duration::from_millis(300));
    }
    let elapsed = t0.elapsed();
    let rep = report::Report::new(&plan, &runs, &costs, elapsed);
    let mut md = rep.markdown();
    // Before the guest: its QEMU would load the host this measures.
    match replay::run(&bin, &dir.0, plan.connects, plan.threads) {
        Ok(r) => md = replay::splice(&md, &r.section()),
        Err(e) => md = replay::splice(&md, &format!("## Replay: `nfs-trace report` (issue 16)\n\nNot measured: {e:#}\n")),
    }
    // After the host runs: the guest's QEMU would load the host they measure.
    // Not with --run-time-only, which compares BPF programs' own cost.
    let path = crate::cmd::workspace_root().join("docs/bench.md");
    if !args.no_guest && !args.run_time_only {
        let g = guest::run(guest_size(&args), args.verbose);
        md = guest::splice(&md, &guest::section(&g));
    } else if let Ok(doc) = std::fs::read_to_string(&path)
        && let Some(old) = guest::section_of(&doc)
    {
        // Not measured this time: the last guest run's section stays, saying
        // which run it came from.
        let field = |k: &str| doc.lines().find_map(|l| l.strip_prefix(k)).unwrap_or("unknown").to_string();
        let from = format!("*Not re-measured in this run (`--no-guest`): kept from the run of {}, {}.*", field("- date: "), field("- nfs-trace: "));
        let old = old.strip_prefix(guest::HEADING).unwrap_or(old).trim_start();
        let old = old.strip_prefix('*').and_then(|o| o.split_once("*\n\n")).map_or(old, |(_, rest)| rest);
        md = guest::splice(&md, &format!("{}\n\n{from}\n\n{old}\n", guest::HEADING));
    }
    println!("{md}");
    std::fs::write(&path, &md).with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("xtask bench: wrote {} ({} runs in {:.0} s)", path.display(), runs.len(), elapsed.as_secs_f64());
    Ok(())
}

/// `--guest-only`: the NFS I/O run alone, its section spliced into
/// docs/bench.md (the host runs' results stay). Fails only when the guest
/// gave no result at all, after writing that.
fn guest_only(args: &BenchArgs) -> Result<()> {
    let g = guest::run(guest_size(args), args.verbose);
    let sec = guest::section(&g);
    println!("{sec}");
    let path = crate::cmd::workspace_root().join("docs/bench.md");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    std::fs::write(&path, guest::splice(&old, &sec)).with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("xtask bench: wrote the NFS I/O section of {} ({:.0} s)", path.display(), g.wall.as_secs_f64());
    if g.truth.is_none() {
        bail!("the NFS I/O guest gave no result: {}", g.problem.as_deref().unwrap_or("unknown"));
    }
    Ok(())
}

fn one_run(tool: Tool, plan: &Plan, bin: &std::path::Path, dir: &std::path::Path, i: usize) -> Result<Run> {
    if tool == Tool::Baseline {
        let storm = storm::run(plan.connects, plan.threads)?;
        return Ok(Run {
            tool,
            storm,
            seen: 0,
            noise_seen: 0,
            lost: None,
            cpu_s: 0.0,
            hwm_kb: 0,
            attach_ms: None,
            ready: Duration::ZERO,
            wakeups: 0,
            prefill: None,
        });
    }
    let mut r = Running::start(tool, bin, dir, &format!("run{i}"))?;
    // bpftrace compiles its program with LLVM first: give it time on a busy box.
    let ready = r.wait_ready(Duration::from_secs(60))?;
    let prefill = if tool == Tool::NfsTraceFull {
        // More distinct ended flows than the tracer remembers, all reported
        // before the storm starts: the storm then runs with the memory full,
        // every new flow evicting the oldest.
        let made = storm::prefill(PREFILL_FLOWS)?;
        r.drain_prefill(made, Duration::from_secs(2), Duration::from_secs(60))?;
        Some(Prefill { made, seen_before_storm: r.counts.prefill, summary_flows: None })
    } else {
        None
    };
    let before = tracer::proc_stat(r.pid())?;
    let storm = storm::run(plan.connects, plan.threads)?;
    // A tracer may still be working through a backlog: what it reports
    // late still counts as seen (latency is not what this bench measures).
    r.drain(storm.made, Duration::from_secs(2), Duration::from_secs(60))?;
    let after = tracer::proc_stat(r.pid())?;
    let counts = r.stop()?;
    Ok(Run {
        tool,
        storm,
        seen: counts.seen,
        noise_seen: counts.noise,
        lost: counts.lost(tool),
        cpu_s: after.cpu_s - before.cpu_s,
        hwm_kb: after.hwm_kb,
        attach_ms: counts.attach_ms,
        ready,
        wakeups: after.wakeups.saturating_sub(before.wakeups),
        prefill: prefill.map(|p| Prefill { summary_flows: counts.summary_flows, ..p }),
    })
}

/// One tracer, stats on: a storm to the port it watches, then one to a port
/// it does not (it still filters for 2049). Deltas of its own programs'
/// counters around each storm, never absolute values (they count since load,
/// including the readiness probes).
fn cost_run(
    tool: Tool,
    plan: &Plan,
    bin: &std::path::Path,
    dir: &std::path::Path,
    i: usize,
) -> Result<Vec<bpfstats::Cost>> {
    let mut r = Running::start(tool, bin, dir, &format!("cost{i}"))?;
    r.wait_ready(Duration::from_secs(60))?;
    let mut costs = Vec::new();
    {
        let _stats = bpfstats::StatsOn::enable()?;
        for (target, port) in
            [(bpfstats::Target::Watched, storm::NFS_PORT), (bpfstats::Target::Unwatched, storm::NOISE_PORT)]
        {
            let before = bpfstats::snapshot(r.pid())?;
            let s = storm::run_to(port, plan.connects, plan.threads)?;
            let after = bpfstats::snapshot(r.pid())?;
            costs.push(bpfstats::Cost {
                tool,
                target,
                port,
                connects: s.made,
                rate: s.rate(),
                reported: 0,
                progs: bpfstats::delta(&before, &after),
            });
            // Let its userspace catch up before the next storm (its reading
            // is not what these runs measure, but it shares the CPUs).
            r.drain(
                if target == bpfstats::Target::Watched { s.made } else { 0 },
                Duration::from_secs(1),
                Duration::from_secs(60),
            )?;
        }
    }
    let counts = r.stop()?;
    // The tool still filters: it reports the watched storm and none of the other.
    for c in &mut costs {
        c.reported = if c.target == bpfstats::Target::Watched { counts.seen } else { counts.noise };
    }
    Ok(costs)
}

/// Two tracers attached at once, stats on, one storm to the unwatched port:
/// each one's own programs' deltas over the same state changes.
fn paired_cost_run(
    pair: [Tool; 2],
    plan: &Plan,
    bin: &std::path::Path,
    dir: &std::path::Path,
    round: usize,
) -> Result<Vec<bpfstats::Cost>> {
    let mut running = Vec::new();
    for (k, tool) in pair.iter().enumerate() {
        let mut r = Running::start(*tool, bin, dir, &format!("pair{round}-{k}"))?;
        r.wait_ready(Duration::from_secs(60))?;
        running.push(r);
    }
    let port = storm::NOISE_PORT;
    let (before, s, after) = {
        let _stats = bpfstats::StatsOn::enable()?;
        let before: Vec<_> = running.iter().map(|r| bpfstats::snapshot(r.pid())).collect::<Result<_>>()?;
        let s = storm::run_to(port, plan.connects, plan.threads)?;
        let after: Vec<_> = running.iter().map(|r| bpfstats::snapshot(r.pid())).collect::<Result<_>>()?;
        (before, s, after)
    };
    let mut costs = Vec::new();
    for (k, r) in running.into_iter().enumerate() {
        let counts = r.stop()?;
        costs.push(bpfstats::Cost {
            tool: pair[k],
            target: bpfstats::Target::UnwatchedPaired,
            port,
            connects: s.made,
            rate: s.rate(),
            reported: counts.noise,
            progs: bpfstats::delta(&before[k], &after[k]),
        });
    }
    Ok(costs)
}

/// The commit the work tree is at, "+ changes" when it has uncommitted ones.
fn git_describe() -> String {
    let out = std::process::Command::new("git")
        .args(["describe", "--always", "--dirty=+ uncommitted changes"])
        .current_dir(crate::cmd::workspace_root())
        .output();
    match out {
        Ok(o) if o.status.success() => format!("commit {}", String::from_utf8_lossy(&o.stdout).trim()),
        _ => "an unknown commit".into(),
    }
}
