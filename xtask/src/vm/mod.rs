//! The VM lab (issue 3): a real NFS server and client in QEMU, per Debian
//! kernel line, with `nfs-trace watch --json` judged against what `ss` saw.
//!
//! `kernels` fetches kernels through a private apt view, `modules`,
//! `userland` and `initramfs` build the guest's initramfs (`image` puts them
//! together), `qemu` boots it, `scenarios` judges the console output and
//! `report` writes results; `stall`, `outage` and `blackhole` judge the middlebox scenarios. The guest
//! half is `tests/src/lab`. `--arch arm64` boots Debian's arm64 kernels on
//! QEMU's emulated `virt` board instead (`arch`, `foreign`).
mod apt;
mod arch;
mod blackhole;
mod elf;
mod experiment;
mod foreign;
mod proxy;
mod silent;
mod image;
mod initramfs;
mod kernels;
mod late;
mod sunrpc_btf;
mod layers;
mod modules;
mod qemu;
mod replay;
mod report;
mod scenarios;
mod outage;
mod stall;
mod topology;
mod userland;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::json;

use arch::Arch;

#[derive(clap::Args)]
pub struct VmArgs {
    /// Kernel line to boot: 5.10, 6.1, 6.12 or 7.2.
    #[arg(long, default_value = "6.12")]
    kernel: String,
    /// The guest's architecture: x86_64, or arm64 (Debian's arm64 cloud
    /// kernel and packages on QEMU's emulated `virt` board; every scenario
    /// runs there too).
    #[arg(long, value_enum, default_value = "x86_64")]
    arch: Arch,
    /// Every kernel line; writes docs/vm-matrix.md and docs/vm-matrix.json
    /// (with --arch arm64: docs/vm-matrix-arm64.md and .json).
    #[arg(long, conflicts_with = "kernel")]
    matrix: bool,
    /// Write one JSON record per scenario to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Only these scenarios (repeatable), e.g. v3-default, v4.1-noresvport,
    /// stall-v4.0, late-sunrpc, sunrpc-btf, nconnect, shared-server, netns, ipv6;
    /// outage-v3, outage-v4.1, blackhole-v3, blackhole-v4.1, server-silent-v3,
    /// server-silent-v4.1; `stall` means every stall scenario, `outage` both
    /// outage ones, `blackhole` both black-hole ones, `server-silent` both
    /// server-silent ones, `topology` the four topology ones.
    #[arg(long)]
    scenario: Vec<String>,
    /// Ground truth only: do not put nfs-trace in the guest.
    #[arg(long)]
    no_tracer: bool,
    /// Give up on a guest after this many seconds.
    #[arg(long, default_value_t = 1500)]
    timeout: u64,
    /// Show the guest's console as it runs.
    #[arg(long, short)]
    verbose: bool,
}

pub fn cache_dir() -> PathBuf {
    crate::cmd::workspace_root().join(".cache/vmlab")
}

pub fn main(args: VmArgs) -> Result<()> {
    // `stall`: the stall scenarios (issue 5), one per NFS version;
    // `topology`: the four of issue 11 (nconnect, shared-server, netns, ipv6).
    let wanted: Vec<String> = args
        .scenario
        .iter()
        .flat_map(|s| match s.as_str() {
            "stall" => stall::names(),
            "outage" => outage::names(),
            "blackhole" => blackhole::names(),
            "server-silent" => silent::names(),
            "topology" => topology::NAMES.iter().map(|n| n.to_string()).collect(),
            _ => vec![s.clone()],
        })
        .collect();
    for s in &wanted {
        scenarios::check_name(s)?;
    }
    let lines: Vec<&'static kernels::Line> =
        if args.matrix { kernels::LINES.iter().collect() } else { vec![kernels::line(&args.kernel)?] };
    let plan = Plan {
        arch: args.arch,
        scenarios: wanted,
        with_tracer: !args.no_tracer,
        timeout: Duration::from_secs(args.timeout),
        verbose: args.verbose,
    };
    // Taken before the build: the tree may change while the VMs run.
    let source = source_revision();
    let runs = run_lines(&lines, &plan)?;
    summarise(&runs);
    if let Some(path) = &args.json {
        report::write_json(path, &report::records(&runs))?;
        eprintln!("xtask vm: wrote {}", path.display());
    }
    if args.matrix {
        let docs = crate::cmd::workspace_root().join("docs");
        let stem = report::write_matrix(&docs, &runs, &today()?, &source, args.arch)?;
        eprintln!("xtask vm: wrote {}/{stem}.md and {stem}.json", docs.display());
    }
    verdict(&runs)
}

/// The part of `cargo xtask test` that boots VMs: the 6.12 line, every
/// scenario, with the tracer; then the same line on arm64 with
/// `ARM64_SUITE`; fails when any scenario disagrees.
pub fn test_suite() -> Result<()> {
    let plan = |arch, scenarios: &[&str]| Plan {
        arch,
        scenarios: scenarios.iter().map(|s| s.to_string()).collect(),
        with_tracer: true,
        timeout: Duration::from_secs(1500),
        verbose: false,
    };
    let line = kernels::line("6.12")?;
    let mut runs = run_lines(&[line], &plan(Arch::X86_64, &[]))?;
    // An arm64 lab that cannot start (its packages, its build) still lets
    // the x86 results be summarised and kept.
    let arm64_failed = match run_lines(&[line], &plan(Arch::Arm64, ARM64_SUITE)) {
        Ok(r) => {
            runs.extend(r);
            None
        }
        Err(e) => Some(e),
    };
    summarise(&runs);
    // Kept for reading a failed CI run: one record per scenario.
    let out = cache_dir().join("test-suite-results.json");
    report::write_json(&out, &report::records(&runs))?;
    eprintln!("xtask vm: wrote {}", out.display());
    if let Some(e) = arm64_failed {
        return Err(e.context("the arm64 VM lab could not run"));
    }
    verdict(&runs)
}

/// The arm64 part of `cargo xtask test`: what shows the tracer's hooks
/// working on that architecture — the SunRPC hook checks, every reconnect
/// scenario, one stall. Measured 2026-12-07 on 6.12: 116–118 s of guest
/// time, 145 s with a cold cache (apt lists, kernel and ~50 packages
/// fetched), plus about a minute to build the aarch64 guest init. The
/// whole set, as x86 runs it, passed there too but took 661 s of guest
/// time (`cargo xtask vm --arch arm64`).
const ARM64_SUITE: &[&str] = &[
    "late-sunrpc",
    "sunrpc-btf",
    "v3-default",
    "v3-noresvport",
    "v4.0-default",
    "v4.0-noresvport",
    "v4.1-default",
    "v4.1-noresvport",
    "v4.2-default",
    "v4.2-noresvport",
    "stall-v3",
];

struct Plan {
    arch: Arch,
    scenarios: Vec<String>,
    with_tracer: bool,
    timeout: Duration,
    verbose: bool,
}

fn run_lines(lines: &[&'static kernels::Line], plan: &Plan) -> Result<Vec<report::KernelRun>> {
    let cache = cache_dir();
    std::fs::create_dir_all(cache.join("logs")).with_context(|| format!("cannot create {}", cache.display()))?;
    // Built once for every kernel: both are static and kernel-independent.
    let init = image::build_guest_init(plan.arch)?;
    let tracer = if plan.with_tracer { Some(image::build_tracer(plan.arch)?) } else { None };
    let mut runs = Vec::new();
    for l in lines {
        runs.push(run_kernel(&cache, l, &init, tracer.as_deref(), plan)?);
    }
    Ok(runs)
}

fn run_kernel(cache: &Path, line: &'static kernels::Line, init: &Path, tracer: Option<&Path>, plan: &Plan) -> Result<report::KernelRun> {
    let start = Instant::now();
    let scen = if plan.scenarios.is_empty() { "all".to_string() } else { plan.scenarios.join(",") };
    let (k, boot, rep, end) =
        boot_kernel(cache, line, plan.arch, init, tracer, &scen, "", "", plan.timeout, plan.verbose, false)?;
    let wanted = if plan.scenarios.is_empty() { scenarios::all_names() } else { plan.scenarios.clone() };
    let mut results = Vec::new();
    for name in &wanted {
        let mut r = match rep.truths.iter().find(|t| t["scenario"] == name.as_str()) {
            Some(t) if blackhole::is_blackhole(name) => blackhole::judge(t, rep.tracer.get(name), tracer.is_some()),
            Some(t) if silent::is_silent(name) => silent::judge(t, rep.tracer.get(name), tracer.is_some()),
            Some(t) if outage::is_outage(name) => outage::judge(t, rep.tracer.get(name), tracer.is_some()),
            Some(t) if stall::is_stall(name) => stall::judge(t, rep.tracer.get(name), tracer.is_some()),
            Some(t) if name == late::NAME => late::judge(t, rep.tracer.get(name), tracer.is_some()),
            Some(t) if name == sunrpc_btf::NAME => sunrpc_btf::judge(t, tracer.is_some()),
            Some(t) if topology::is_topology(name) => topology::judge(t, rep.tracer.get(name), tracer.is_some()),
            Some(t) if name == experiment::NAME => experiment::judge(t, &results, tracer.is_some()),
            Some(t) if name == proxy::NAME => proxy::judge(t, rep.tracer.get(name), tracer.is_some()),
            Some(t) => scenarios::judge(t, rep.tracer.get(name), tracer.is_some()),
            None => json!({"scenario": name, "ok": false, "agree": null,
                           "problems": [format!("no result from the guest ({end})")]}),
        };
        r["kernel"] = json!(line.name);
        if !plan.arch.is_host() {
            r["arch"] = json!(plan.arch.debian());
        }
        r["kernel_release"] = json!(k.abi);
        r["kernel_package"] = json!(k.version);
        if r["ok"] != json!(true)
            && let Some(err) = rep.tracer_stderr.get(name)
        {
            r["tracer_stderr"] = json!(err.iter().rev().take(20).rev().collect::<Vec<_>>());
        }
        results.push(r);
    }
    Ok(report::KernelRun {
        // Every table's Kernel column says "6.12 arm64" for an arm64 guest.
        line: if plan.arch.is_host() { line.name.to_string() } else { format!("{} {}", line.name, plan.arch.debian()) },
        release: k.abi,
        package_version: k.version,
        wall: start.elapsed(),
        qemu_wall: boot.wall,
        end,
        results,
        with_tracer: tracer.is_some(),
    })
}

/// Fetches `line`'s kernel for `arch`, builds its initramfs and boots it with
/// `lab.scenarios=<scen>` (plus `append`), its clocks counting instructions
/// with `instruction_clock` (see `qemu::Options`); returns what the guest printed,
/// unjudged, and how the boot ended. The console goes to
/// `logs/<log_prefix><abi>.log`.
#[allow(clippy::too_many_arguments)]
fn boot_kernel(
    cache: &Path,
    line: &'static kernels::Line,
    arch: Arch,
    init: &Path,
    tracer: Option<&Path>,
    scen: &str,
    append: &str,
    log_prefix: &str,
    timeout: Duration,
    verbose: bool,
    instruction_clock: bool,
) -> Result<(kernels::Kernel, qemu::Boot, scenarios::GuestReport, String)> {
    let k = kernels::fetch(cache, line, arch).with_context(|| format!("kernel line {} ({})", line.name, arch.debian()))?;
    let (initrd, _) = image::build(cache, &k, init, tracer, arch)?;
    let log = cache.join("logs").join(format!("{log_prefix}{}.log", k.abi));
    eprintln!("xtask vm: booting {} ({}) under QEMU/TCG; console in {}", k.abi, k.version, log.display());
    let boot = qemu::boot(
        &qemu::Options {
            arch,
            kernel: &k.vmlinuz,
            initrd: &initrd,
            // loglevel=1: kernel messages would interleave with our records;
            // panics still reach the console.
            append: format!(
                "console={} quiet loglevel=1 panic=-1 lab.scenarios={scen} lab.tracer={} lab.nfsdcld={}{append}",
                arch.console(),
                u8::from(tracer.is_some()),
                u8::from(k.needs_nfsdcld())
            ),
            timeout,
            memory_mb: 1024,
            log: &log,
            echo: verbose,
            instruction_clock,
        },
        scenarios::MARKER,
    )?;
    let rep = scenarios::parse_console(&boot.lines);
    for l in &rep.logs {
        eprintln!("  guest: {l}");
    }
    for g in &rep.garbled {
        eprintln!("  guest (unparsable): {g}");
    }
    let end = match &boot.end {
        qemu::End::Marker { ok: true, .. } => "OK".to_string(),
        qemu::End::Marker { ok: false, detail } => detail.clone(),
        qemu::End::Panic(l) => format!("kernel panic: {l}"),
        qemu::End::Timeout => format!("timeout after {} s", timeout.as_secs()),
        qemu::End::Exited(s) => format!("QEMU exited without a result: {s}"),
    };
    Ok((k, boot, rep, end))
}

/// One guest boot for `cargo xtask bench`: what it printed, unjudged.
pub(crate) struct GuestRun {
    /// `uname -r` and the Debian package version of the kernel booted.
    pub release: String,
    pub package_version: String,
    /// "OK", or why the boot did not end well.
    pub end: String,
    pub truths: Vec<serde_json::Value>,
    pub qemu_wall: Duration,
}

/// Boots kernel line `line` with the tracer and runs `scenarios` (by name,
/// e.g. `nfs-io`, which `cargo xtask vm` does not judge), `append` added to
/// the kernel command line, the guest's clocks counting its instructions
/// (`qemu::Options::instruction_clock`); the console goes to
/// `logs/bench-<abi>.log`.
pub(crate) fn run_guest(line: &str, scenarios: &[&str], append: &str, timeout: Duration, verbose: bool) -> Result<GuestRun> {
    let cache = cache_dir();
    std::fs::create_dir_all(cache.join("logs")).with_context(|| format!("cannot create {}", cache.display()))?;
    let init = image::build_guest_init(Arch::X86_64)?;
    let tracer = image::build_tracer(Arch::X86_64)?;
    let (k, boot, rep, end) = boot_kernel(
        &cache,
        kernels::line(line)?,
        Arch::X86_64,
        &init,
        Some(&tracer),
        &scenarios.join(","),
        append,
        "bench-",
        timeout,
        verbose,
        true,
    )?;
    Ok(GuestRun { release: k.abi, package_version: k.version, end, truths: rep.truths, qemu_wall: boot.wall })
}

fn summarise(runs: &[report::KernelRun]) {
    println!("{}", report::table(runs));
    let stalls = report::stall_table(runs);
    if !stalls.is_empty() {
        println!("{stalls}");
    }
    let outages = report::outage_table(runs);
    if !outages.is_empty() {
        println!("{outages}");
    }
    let holes = report::blackhole_table(runs);
    if !holes.is_empty() {
        println!("{holes}");
    }
    let silent = silent::table(runs);
    if !silent.is_empty() {
        println!("{silent}");
    }
    print!("{}", report::late_lines(runs));
    print!("{}", report::sunrpc_btf_lines(runs));
    let topo = report::topology_table(runs);
    if !topo.is_empty() {
        println!("{topo}");
    }
    let exp = experiment::table(runs);
    if !exp.is_empty() {
        println!("{exp}");
    }
    let prox = proxy::table(runs);
    if !prox.is_empty() {
        println!("{prox}");
    }
    println!("{}", report::timings(runs));
    for p in report::problems(runs) {
        println!("✘ {p}");
    }
}

fn verdict(runs: &[report::KernelRun]) -> Result<()> {
    let bad: Vec<String> = runs.iter().filter(|r| !r.ok()).map(|r| format!("{} ({})", r.line, r.release)).collect();
    if !bad.is_empty() {
        bail!("VM lab failed on {}", bad.join(", "));
    }
    Ok(())
}

/// The commit the tracer was built from, and whether the tree had edits in
/// the crates that make it (so a matrix can be traced to its code).
fn source_revision() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(crate::cmd::workspace_root())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let Some(head) = git(&["rev-parse", "--short", "HEAD"]) else { return "an unknown commit".into() };
    let dirty = git(&["status", "--porcelain", "--", "nfs-trace", "nfs-trace-ebpf", "nfs-trace-common"])
        .is_some_and(|s| !s.is_empty());
    format!("commit {head}{}", if dirty { " with uncommitted changes" } else { "" })
}

/// Today's date (UTC) for the matrix header, from `date`.
fn today() -> Result<String> {
    let out = std::process::Command::new("date").args(["-u", "+%Y-%m-%d"]).output().context("cannot run date")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_arm64_suite_names_known_scenarios() {
        for s in ARM64_SUITE {
            scenarios::check_name(s).unwrap();
        }
        // Every reconnect scenario is in it.
        for v in scenarios::VERSIONS {
            for o in scenarios::OPTIONS {
                assert!(ARM64_SUITE.contains(&format!("v{v}-{o}").as_str()), "v{v}-{o}");
            }
        }
    }
}
