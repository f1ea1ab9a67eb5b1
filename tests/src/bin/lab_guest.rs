//! The VM lab's guest init (PID 1 of the initramfs xtask builds): see
//! `tests/src/lab`. Kernel command line: `lab.scenarios=<name,name|all>`,
//! `lab.tracer=0|1`, `lab.nfsdcld=0|1` (start nfsdcld: kernels without legacy
//! NFSv4 client tracking need it).
#[path = "../lab/mod.rs"]
mod lab;

use anyhow::{Context as _, Result};
use lab::{experiment, late, middlebox::Middlebox, net, nfs_io, nfsd, out, proxy, scenario::Scenario, silent, stall, sunrpc_btf, sys, topology};
use serde_json::json;

fn main() {
    if std::process::id() != 1 {
        eprintln!("lab_guest: this is the VM lab's init; it only runs as PID 1 inside the VM");
        std::process::exit(2);
    }
    let (ok, why) = match run() {
        Ok((ran, failed)) if failed.is_empty() => (true, format!("{ran} scenarios")),
        Ok((_, failed)) => (false, format!("scenarios failed: {}", failed.join(","))),
        Err(e) => {
            out::log(format!("setup failed: {e:#}"));
            (false, format!("setup: {e:#}"))
        }
    };
    out::marker(ok, &why);
    sys::power_off();
}

fn run() -> Result<(usize, Vec<String>)> {
    early_mounts()?;
    // The daemons and mount.nfs find their helpers through PATH.
    // SAFETY: still single-threaded here; nothing reads the environment concurrently.
    unsafe { std::env::set_var("PATH", "/sbin:/usr/sbin:/bin:/usr/bin") };
    let cmdline = std::fs::read_to_string("/proc/cmdline").context("cannot read /proc/cmdline")?;
    let arg = |k: &str| cmdline.split_whitespace().find_map(|a| a.strip_prefix(k)).map(str::to_string);
    let jobs = match arg("lab.scenarios=").as_deref() {
        None | Some("all") => Job::all(),
        Some(list) => list.split(',').map(Job::parse).collect::<Result<Vec<_>>>()?,
    };
    let with_tracer = arg("lab.tracer=").as_deref() != Some("0");
    // nfs-io's size: MiB per copy and rounds (the bench sets them).
    let io_mib = arg("lab.io_mib=").and_then(|v| v.parse().ok()).unwrap_or(32);
    let io_rounds = arg("lab.io_rounds=").and_then(|v| v.parse().ok()).unwrap_or(5);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    out::emit(&json!({
        "kind": "guest",
        "kernel": kernel.trim(),
        "uptime": sys::uptime(),
        "tracer": with_tracer,
        "btf": std::path::Path::new("/sys/kernel/btf/vmlinux").exists(),
    }));
    // late-sunrpc: its tracer starts before any module is loaded.
    let late = jobs.iter().any(|j| matches!(j, Job::LateSunrpc)).then(|| late::begin(with_tracer));
    load_modules()?;
    let ns = net::setup()?;
    nfsd::start(arg("lab.nfsdcld=").as_deref() == Some("1"))?;
    let mut failed = Vec::new();
    if let Some((tracer, truth)) = late
        && !late::finish(&ns, tracer, truth)
    {
        failed.push(late::NAME.to_string());
    }
    // Built on first use: the other scenarios run without it. If it cannot be
    // built, each stall scenario fails with that reason; the others still run.
    let mut middlebox: Option<Result<Middlebox, String>> = None;
    for job in &jobs {
        let ok = match job {
            Job::LateSunrpc => continue,
            Job::SunrpcBtf => sunrpc_btf::run(with_tracer),
            Job::Reconnect(sc) => lab::scenario::run(&ns, sc, with_tracer),
            Job::Topology(name) => topology::run_named(name, &ns, with_tracer),
            Job::NfsIo => nfs_io::run(&ns, with_tracer, io_mib, io_rounds),
            Job::Experiment => experiment::run(&ns, with_tracer),
            Job::Proxy => proxy::run(&ns, with_tracer),
            Job::Stall(kind, vers) => {
                let mb = middlebox
                    .get_or_insert_with(|| Middlebox::setup().context("building the middlebox").map_err(|e| format!("{e:#}")));
                match mb {
                    Ok(mb) => stall::run(mb, *kind, vers, with_tracer),
                    Err(e) => stall::cannot_run(*kind, vers, e),
                }
            }
            Job::Silent(vers) => {
                let mb = middlebox
                    .get_or_insert_with(|| Middlebox::setup().context("building the middlebox").map_err(|e| format!("{e:#}")));
                match mb {
                    Ok(mb) => silent::run(mb, vers, with_tracer),
                    Err(e) => {
                        out::emit(&json!({"kind": "truth", "scenario": silent::name(vers), "vers": vers, "silent": null,
                                          "tracer": {"ran": false}, "error": e}));
                        false
                    }
                }
            }
        };
        if !ok {
            failed.push(job.name());
        }
    }
    out::log(format!("done, uptime {:.1} s", sys::uptime()));
    Ok((jobs.len(), failed))
}

/// One scenario: the tracer started before sunrpc loads, a reconnect
/// scenario, or a stall, outage or black hole through the middlebox.
enum Job {
    LateSunrpc,
    /// The tracer's sunrpc struct offsets against btf-rs (defect 5).
    SunrpcBtf,
    Reconnect(Scenario),
    Stall(stall::Kind, &'static str),
    /// nfsd stops answering while TCP stays up (a frozen export).
    Silent(&'static str),
    /// Several transports at once: nconnect, shared-server, netns, ipv6.
    Topology(&'static str),
    /// NFS I/O with and without the tracer (the bench's; never in `all`).
    NfsIo,
    /// `prove --server` beside a busy production mount.
    Experiment,
    /// A mount through a local TLS proxy (stunnel4), and a pod's volume.
    Proxy,
}

impl Job {
    fn all() -> Vec<Job> {
        let mut v = vec![Job::LateSunrpc, Job::SunrpcBtf];
        v.extend(Scenario::all().into_iter().map(Job::Reconnect));
        v.extend(stall::VERSIONS.iter().map(|s| Job::Stall(stall::Kind::Stall, s)));
        v.extend(stall::OUTAGE_VERSIONS.iter().map(|s| Job::Stall(stall::Kind::Outage, s)));
        v.extend(stall::BLACKHOLE_VERSIONS.iter().map(|s| Job::Stall(stall::Kind::Blackhole, s)));
        v.extend(silent::VERSIONS.iter().map(|s| Job::Silent(s)));
        v.extend(topology::NAMES.iter().map(|n| Job::Topology(n)));
        v.push(Job::Experiment);
        v.push(Job::Proxy);
        v
    }

    fn parse(name: &str) -> Result<Job> {
        if name == late::NAME {
            return Ok(Job::LateSunrpc);
        }
        if name == sunrpc_btf::NAME {
            return Ok(Job::SunrpcBtf);
        }
        if name == nfs_io::NAME {
            return Ok(Job::NfsIo);
        }
        if name == experiment::NAME {
            return Ok(Job::Experiment);
        }
        if name == proxy::NAME {
            return Ok(Job::Proxy);
        }
        if let Some(n) = topology::NAMES.iter().find(|n| **n == name) {
            return Ok(Job::Topology(n));
        }
        if let Some(v) = silent::parse(name) {
            return Ok(Job::Silent(v));
        }
        match stall::parse(name) {
            Some((k, v)) => Ok(Job::Stall(k, v)),
            None => Scenario::parse(name).map(Job::Reconnect),
        }
    }

    fn name(&self) -> String {
        match self {
            Job::LateSunrpc => late::NAME.to_string(),
            Job::SunrpcBtf => sunrpc_btf::NAME.to_string(),
            Job::Reconnect(sc) => sc.name.clone(),
            Job::Stall(k, v) => k.name(v),
            Job::Silent(v) => silent::name(v),
            Job::Topology(n) => n.to_string(),
            Job::NfsIo => nfs_io::NAME.to_string(),
            Job::Experiment => experiment::NAME.to_string(),
            Job::Proxy => proxy::NAME.to_string(),
        }
    }
}

fn early_mounts() -> Result<()> {
    sys::mount("proc", "/proc", "proc", None)?;
    sys::mount("sysfs", "/sys", "sysfs", None)?;
    // devtmpfs may be auto-mounted already; its absence is not fatal here.
    if let Err(e) = sys::mount("devtmpfs", "/dev", "devtmpfs", None) {
        out::log(format!("{e:#}"));
    }
    for d in ["/run", "/tmp", "/var/lib/nfs", "/export", "/mnt"] {
        sys::mount("tmpfs", d, "tmpfs", None)?;
    }
    // The tracer reads tracepoint formats from tracefs.
    sys::mount("nodev", "/sys/kernel/tracing", "tracefs", None)?;
    Ok(())
}

/// Loads the modules xtask put in /lib/modules in dependency order
/// (`order` lists one name per line).
fn load_modules() -> Result<()> {
    let order = std::fs::read_to_string("/lib/modules/order").context("cannot read /lib/modules/order")?;
    let mut loaded = Vec::new();
    for name in order.split_whitespace() {
        if sys::insmod(std::path::Path::new(&format!("/lib/modules/{name}.ko")))? {
            loaded.push(name);
        }
    }
    out::log(format!("modules loaded: {}", loaded.join(" ")));
    Ok(())
}
