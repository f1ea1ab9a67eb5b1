//! `cargo xtask soak --minutes N`: reconnect churn for N minutes under
//! `nfs-trace watch`, sampling the tracer's RSS and its own state sizes
//! (tracker destinations and transports, the kernel's per-socket map) from
//! its metrics. State is bounded and expires by design; this shows whether
//! it really stays flat. Loopback only; it stops by itself.
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};

#[derive(clap::Args)]
pub struct SoakArgs {
    /// How long to churn.
    #[arg(long, default_value_t = 5.0)]
    minutes: f64,
    /// Seconds between samples.
    #[arg(long, default_value_t = 10)]
    every: u64,
}

fn rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn scrape(addr: &str) -> Result<String> {
    let mut c = TcpStream::connect(addr)?;
    c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
    let mut s = String::new();
    c.read_to_string(&mut s)?;
    Ok(s.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

fn gauge(body: &str, name: &str) -> u64 {
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

/// One churn worker: connects to ever-changing loopback destinations (more
/// than the tracker keeps), some from a reused bound port, keeps a few open
/// for a while, and aborts the rest.
fn churn(worker: u64, stop: Arc<AtomicBool>, made: Arc<AtomicU64>) {
    let mut open: Vec<TcpStream> = Vec::new();
    let mut i: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        // 127.1.x.y: 6,000 distinct destinations, beyond MAX_DESTINATIONS.
        let n = (i * 2 + worker) % 6000;
        let dst: SocketAddr = format!("127.1.{}.{}:2049", n / 250, 1 + n % 250).parse().expect("valid");
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None);
        let Ok(s) = s else { continue };
        if i % 5 == 0 {
            // Reuse a bound port toward the same destination, as an NFS client does.
            let _ = s.set_reuse_address(true);
            let _ = s.bind(&SocketAddr::from(([127, 1, 0, 1], 40000 + worker as u16)).into());
        }
        if s.connect_timeout(&dst.into(), Duration::from_secs(2)).is_ok() {
            made.fetch_add(1, Ordering::Relaxed);
            let t: TcpStream = s.into();
            if i % 7 == 0 {
                open.push(t);
                if open.len() > 200 {
                    drop(open.remove(0));
                }
            } else {
                let _ = socket2::SockRef::from(&t).set_linger(Some(Duration::ZERO));
            }
        }
    }
}

pub fn main(args: SoakArgs) -> Result<()> {
    if !(0.1..=24.0 * 60.0).contains(&args.minutes) {
        bail!("--minutes must be between 0.1 and 1440");
    }
    let bin = crate::cmd::build_nfs_trace(true, false)?;
    // Every 127.0.0.0/8 address is local: one wildcard listener serves them all.
    let l = TcpListener::bind("0.0.0.0:2049").context("cannot listen on :2049 (is an NFS server or another test running?)")?;
    std::thread::spawn(move || {
        let mut keep = Vec::new();
        for c in l.incoming().flatten() {
            keep.push(c);
            if keep.len() > 400 {
                keep.remove(0);
            }
        }
    });
    let mut tracer = Command::new(&bin)
        .args(["watch", "--json", "--metrics", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let pid = tracer.id();
    let mut out = BufReader::new(tracer.stdout.take().expect("piped"));
    let mut first = String::new();
    out.read_line(&mut first)?;
    let attached: serde_json::Value = serde_json::from_str(&first).map_err(|e| anyhow!("no attached record: {e}: {first}"))?;
    let maddr = attached["metrics"].as_str().ok_or_else(|| anyhow!("no metrics address in {first}"))?.to_string();
    // Drain its output so it never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));

    let stop = Arc::new(AtomicBool::new(false));
    let made = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..2)
        .map(|w| {
            let (stop, made) = (stop.clone(), made.clone());
            std::thread::spawn(move || churn(w, stop, made))
        })
        .collect();
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(args.minutes * 60.0);
    println!("| t (s) | connects | tracer RSS (MB) | destinations | transports | kernel sockets | lost events |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let mut samples: Vec<(f64, u64)> = Vec::new();
    let mut max_dest = 0;
    let mut max_ksock = 0;
    loop {
        std::thread::sleep(Duration::from_secs(args.every).min(end.saturating_duration_since(Instant::now()).max(Duration::from_millis(100))));
        let t = start.elapsed().as_secs_f64();
        let body = scrape(&maddr).unwrap_or_default();
        let rss = rss_kb(pid).ok_or_else(|| anyhow!("the tracer (pid {pid}) is gone"))?;
        let (d, x, k) = (
            gauge(&body, "nfs_trace_tracked_destinations"),
            gauge(&body, "nfs_trace_tracked_transports"),
            gauge(&body, "nfs_trace_kernel_tracked_sockets"),
        );
        max_dest = max_dest.max(d);
        max_ksock = max_ksock.max(k);
        println!(
            "| {t:.0} | {} | {:.1} | {d} | {x} | {k} | {} |",
            made.load(Ordering::Relaxed),
            rss as f64 / 1024.0,
            gauge(&body, "nfs_trace_lost_events_total")
        );
        samples.push((t, rss));
        if Instant::now() >= end {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    // SAFETY: signalling our own child.
    unsafe { libc_kill(pid as i32, 2) };
    let _ = tracer.wait();

    // Flat: after the first fifth (warm-up: the tracker fills to its bound),
    // RSS grows by no more than 10 % + 2 MB to the end.
    let warm = samples.get(samples.len() / 5).map(|s| s.1).unwrap_or(0);
    let last = samples.last().map(|s| s.1).unwrap_or(0);
    let flat = last <= warm + warm / 10 + 2048;
    let bounded = max_dest <= 4096 && max_ksock <= u64::from(nfs_trace_common::SOCKS_MAX_ENTRIES);
    println!(
        "\nRSS after warm-up {:.1} MB, at the end {:.1} MB: {}; destinations ≤ {max_dest} (bound 4096), kernel sockets ≤ {max_ksock} (bound {}): {}",
        warm as f64 / 1024.0,
        last as f64 / 1024.0,
        if flat { "FLAT" } else { "GREW" },
        nfs_trace_common::SOCKS_MAX_ENTRIES,
        if bounded { "BOUNDED" } else { "OVER THE BOUND" }
    );
    if !flat || !bounded {
        bail!("state did not stay flat and bounded");
    }
    Ok(())
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}
