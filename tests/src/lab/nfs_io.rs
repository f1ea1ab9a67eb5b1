//! `nfs-io` (issue 12, item 6): what the tracer costs NFS I/O. Not a test,
//! a measurement for `cargo xtask bench`: only run when named.
//!
//! One v3 and one v4.1 mount, then rounds of "without the tracer" and
//! "with the tracer" (started and attached before the copies, stopped
//! after), which of the two goes first alternating per round so neither
//! always runs on a warmer or colder guest. Each copy writes the same file
//! (fixed content) over a mount, fsync and close, then reads it back with
//! the page cache dropped, each timed on CLOCK_MONOTONIC. The truth record
//! carries every copy's bytes and ns and what each tracer run reported;
//! xtask/src/bench/guest.rs turns them into ratios.
use std::{
    io::{Read as _, Write as _},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::{
    net::{ClientNs, SERVER},
    out, scenario, sys,
    tracer::{Finished, Tracer},
};

pub const NAME: &str = "nfs-io";
/// Each its own mount (plain paths, no middlebox).
pub const VERSIONS: &[&str] = &["3", "4.1"];
const CHUNK: usize = 1 << 20;

/// `mib` MiB per copy, `rounds` rounds (kernel command line `lab.io_mib=`,
/// `lab.io_rounds=`; the bench passes its own).
pub fn run(ns: &ClientNs, with_tracer: bool, mib: usize, rounds: usize) -> bool {
    let mut truth = json!({
        "kind": "truth",
        "scenario": NAME,
        "versions": VERSIONS,
        "file_bytes": mib * CHUNK,
        "rounds": rounds,
        "copies": [],
        "tracers": [],
        "error": null,
    });
    let mnts: Vec<PathBuf> = VERSIONS.iter().map(|v| PathBuf::from(format!("/mnt/io-v{v}"))).collect();
    let res = run_inner(ns, with_tracer, mib, rounds, &mnts, &mut truth);
    let ok = res.is_ok();
    if let Err(e) = res {
        truth["error"] = json!(format!("{e:#}"));
    }
    out::emit(&truth);
    // Both mounts first, then the wait: waiting after one would find the
    // other's connection still up and kill it.
    for m in mnts.iter().filter(|m| m.exists()) {
        if let Err(e) = scenario::umount(ns, m) {
            out::log(format!("{NAME}: {e:#}"));
        }
    }
    if let Err(e) = scenario::wait_closed(ns, SERVER, "the nfs-io mounts") {
        out::log(format!("{NAME}: {e:#}"));
    }
    ok
}

fn run_inner(ns: &ClientNs, with_tracer: bool, mib: usize, rounds: usize, mnts: &[PathBuf], truth: &mut Value) -> Result<()> {
    if !with_tracer {
        bail!("{NAME} compares runs with and without the tracer: boot with lab.tracer=1");
    }
    for (v, m) in VERSIONS.iter().zip(mnts) {
        let (src, opts) = scenario::mount_args(SERVER, v);
        scenario::mount(ns, &src, &opts, m)?;
    }
    let data = pattern();
    // One unreported copy per mount: the first write to a fresh mount pays
    // for allocating the server's tmpfs pages and the client's first opens.
    for m in mnts {
        copy(&m.join("io.dat"), &data, mib)?;
    }
    let t0 = sys::uptime();
    for round in 0..rounds {
        // Round 0: without first; round 1: with first; and so on.
        let order = if round % 2 == 0 { [false, true] } else { [true, false] };
        for traced in order {
            let tracer = if traced { Some(Tracer::start().context("starting the tracer")?) } else { None };
            // The same pause in both: the tracer's start-up work (BTF,
            // the first mount scan) is not what this measures.
            std::thread::sleep(Duration::from_millis(500));
            let cpu0 = tracer.as_ref().map(|t| cpu_ticks(t.pid()));
            let t_copies = sys::mono_ns();
            for (v, m) in VERSIONS.iter().zip(mnts) {
                let ticks = || tracer.as_ref().and_then(|t| cpu_ticks(t.pid()));
                let before = ticks();
                let (w, r) = copy(&m.join("io.dat"), &data, mib).with_context(|| format!("copy over v{v}"))?;
                // The tracer's CPU over this write and read (null untraced):
                // shows whether its cost is steady or front-loaded.
                let tracer_ticks = ticks().zip(before).map(|(b, a)| b.saturating_sub(a));
                for (dir, ns_) in [("write", w), ("read", r)] {
                    truth["copies"].as_array_mut().expect("array").push(json!({
                        "round": round, "tracer": traced, "vers": v, "dir": dir,
                        "bytes": mib * CHUNK, "ns": ns_, "tracer_ticks_copy_pair": tracer_ticks,
                    }));
                }
            }
            let copies_ns = sys::mono_ns() - t_copies;
            if let Some(t) = tracer {
                // The tracer's own CPU while the copies ran: on the one vCPU
                // it is taken from them (clock ticks, USER_HZ 100).
                let cpu = cpu_ticks(t.pid()).zip(cpu0.flatten()).map(|(b, a)| b.saturating_sub(a));
                // Its reader drains on a timer: let it print what is pending.
                std::thread::sleep(Duration::from_millis(300));
                let mut rec = tracer_record(round, &t.stop());
                rec["copies_ns"] = json!(copies_ns);
                rec["cpu_ticks"] = json!(cpu);
                truth["tracers"].as_array_mut().expect("array").push(rec);
            }
        }
        out::log(format!("{NAME}: round {} of {rounds} done, {:.0} s", round + 1, sys::uptime() - t0));
    }
    Ok(())
}

/// 1 MiB of fixed pseudo-random bytes (xorshift64, fixed seed): the file is
/// this chunk `mib` times, the same in every copy and every run.
fn pattern() -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut v = Vec::with_capacity(CHUNK);
    while v.len() < CHUNK {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v
}

/// utime + stime of `pid` in clock ticks (/proc/PID/stat fields 14, 15).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command's closing parenthesis: field 3 (state) onwards.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn drop_caches() -> Result<()> {
    // SAFETY: sync takes no arguments.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", b"3\n").context("cannot write /proc/sys/vm/drop_caches")
}

/// Writes `path` (open, write, fsync, close), drops the caches, reads it back
/// and checks it; returns the write's and the read's ns.
fn copy(path: &Path, data: &[u8], mib: usize) -> Result<(u64, u64)> {
    drop_caches()?;
    let t = sys::mono_ns();
    {
        let mut f = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        for _ in 0..mib {
            f.write_all(data).with_context(|| format!("write {}", path.display()))?;
        }
        f.sync_all().with_context(|| format!("fsync {}", path.display()))?;
    }
    let w = sys::mono_ns() - t;
    drop_caches()?;
    let mut buf = vec![0u8; CHUNK];
    let t = sys::mono_ns();
    {
        let mut f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        for i in 0..mib {
            f.read_exact(&mut buf).with_context(|| format!("read {} at MiB {i}", path.display()))?;
            if buf != data {
                bail!("{} differs from what was written at MiB {i}", path.display());
            }
        }
        if f.read(&mut buf[..1])? != 0 {
            bail!("{} is longer than the {mib} MiB written", path.display());
        }
    }
    let r = sys::mono_ns() - t;
    Ok((w, r))
}

/// What one tracer run reported: its `episode` records (none in a healthy
/// run: the I/O must not look like a stall), its lost counters (from the
/// summary; null if it printed none) and how it ended.
fn tracer_record(round: usize, f: &Finished) -> Value {
    let lines: Vec<Value> = f.stdout.iter().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let count = |t: &str| lines.iter().filter(|l| l["type"] == t).count();
    let summary = lines.iter().rev().find(|l| l["type"] == "summary");
    let lost = summary.map(|s| json!({"events": s["lost_events"], "sockets": s["lost_sockets"], "connects": s["lost_connects"]}));
    let attach_ms = lines.iter().find(|l| l["type"] == "attached").map(|l| l["attach_ms"].clone());
    json!({
        "round": round,
        "exit": f.exit,
        "lines": f.stdout.len(),
        "episodes": count("episode"),
        "lost_records": count("lost"),
        "lost": lost,
        "attach_ms": attach_ms,
        // Small in a healthy run (no connects): kept whole for reading.
        "summary": summary,
        "stderr": f.stderr.iter().rev().take(10).rev().collect::<Vec<_>>(),
    })
}
