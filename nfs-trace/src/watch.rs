//! `nfs-trace watch`: attach, then kernel → ring buffer → decoder → tracker →
//! renderer until Ctrl-C, SIGTERM or --duration; then the summary.
use std::{
    io::{self, Write},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow};
use aya::maps::{MapData, PerCpuArray, RingBuf};
use nfs_trace_common::{MAP_COUNTERS, MAP_EVENTS, counter};
use serde::Serialize;
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    btf::KernelBtf,
    cli::{Color, WatchArgs, check_ports},
    clock::Clock,
    events,
    kernel,
    mounts::{self, NfsMount},
    probes::{self, HookStatus},
    report::{Format, Lost, Renderer},
    tracker::Tracker,
};

/// How often the ring buffer is drained. Records are submitted without
/// wakeups (the cost that dominates under a connect storm), so this bounds
/// how late a line appears.
const DRAIN_EVERY: Duration = Duration::from_millis(20);
/// How often the lost counters are checked.
const LOST_EVERY: Duration = Duration::from_secs(1);

#[derive(Serialize)]
struct AttachedBody<'a> {
    kernel: &'a str,
    ports: &'a [u16],
    attach_ms: f64,
    hooks: &'a [HookStatus],
    mounts: &'a [NfsMount],
    tracefs_mounted_by_us: bool,
}

fn stdout_is_tty() -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(libc::STDOUT_FILENO) == 1 }
}

pub fn format_for(json: bool, color: Color) -> Format {
    if json {
        return Format::Json;
    }
    let color = match color {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => stdout_is_tty() && std::env::var_os("NO_COLOR").is_none(),
    };
    Format::Human { color }
}

/// One line for people on stderr: what is attached and which NFS mounts exist.
fn start_line(env: &kernel::Env, ports: &[u16], hooks: &[HookStatus], mounts: &[NfsMount], attach_ms: f64) -> String {
    let on: Vec<String> = hooks.iter().filter(|h| h.attached).map(|h| format!("{} ({})", h.name, h.kind.name())).collect();
    let mut off: Vec<String> = hooks
        .iter()
        .filter(|h| !h.attached && !h.detail.starts_with("not needed"))
        .map(|h| format!("{} {}", h.name, h.kind.name()))
        .collect();
    off.dedup();
    let port_list: Vec<String> = ports.iter().map(u16::to_string).collect();
    let mounts = if mounts.is_empty() {
        "NFS mounts: none on this host".to_string()
    } else {
        let m: Vec<String> = mounts
            .iter()
            .map(|m| {
                let resv = if m.has_flag("noresvport") { ",noresvport" } else { "" };
                let unwatched = if ports.contains(&m.port()) {
                    String::new()
                } else {
                    format!(", port {} NOT watched: add --port {}", m.port(), m.port())
                };
                format!("{} ({} vers={}{resv}{unwatched})", m.mountpoint, m.source, m.vers.as_deref().unwrap_or("?"))
            })
            .collect();
        format!("NFS mounts: {}", m.join(", "))
    };
    let off = if off.is_empty() {
        String::new()
    } else {
        format!("; optional, not attached: {} (`nfs-trace probes` says why)", off.join(", "))
    };
    let tracefs = if env.mounted_tracefs { format!("; mounted tracefs at {}", env.tracefs.display()) } else { String::new() };
    format!(
        "nfs-trace: attached {} in {attach_ms:.0} ms on {}{off}{tracefs}; watching TCP connects to port {}. {mounts}.",
        on.join(", "),
        env.release,
        port_list.join(",")
    )
}

fn read_lost(counters: &PerCpuArray<MapData, u64>) -> Lost {
    let sum = |i: u32| counters.get(&i, 0).map(|v| v.iter().sum::<u64>()).unwrap_or(0);
    Lost { events: sum(counter::LOST_EVENTS), sockets: sum(counter::LOST_SOCKETS) }
}

/// Whether output can go on: a closed stdout (`| head`) ends the watch quietly.
fn keep_going(r: io::Result<()>) -> Result<bool> {
    match r {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(anyhow!("cannot write output: {e}")),
    }
}

pub async fn run(args: WatchArgs) -> Result<()> {
    let t0 = Instant::now();
    // Handlers first: a Ctrl-C while attaching still gets a clean detach.
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let ports = check_ports(&args.ports).map_err(|e| anyhow!("bad --port: {e}"))?;
    let env = kernel::preflight(args.paths.tracefs.as_deref(), args.paths.btf.as_deref())?;
    kernel::raise_memlock();
    let btf = KernelBtf::from_file(&env.btf)?;
    let config = probes::build_config(&ports, &env.tracefs, &btf)?;
    let (mut ebpf, hooks) = probes::load_and_attach(&config, args.ringbuf_kb * 1024)?;
    let attach_ms = t0.elapsed().as_secs_f64() * 1e3;

    let mounts = mounts::nfs_mounts(&args.proc_root).unwrap_or_default();
    let clock = Clock::new();
    let format = format_for(args.json, args.color);
    let mut out = Renderer::new(io::BufWriter::with_capacity(64 * 1024, io::stdout().lock()), format, clock);
    eprintln!("{}", start_line(&env, &ports, &hooks, &mounts, attach_ms));
    if format == Format::Json {
        let body = AttachedBody {
            kernel: &env.release,
            ports: &ports,
            attach_ms: (attach_ms * 1e3).round() / 1e3,
            hooks: &hooks,
            mounts: &mounts,
            tracefs_mounted_by_us: env.mounted_tracefs,
        };
        if !keep_going(out.json_line("attached", body).and_then(|_| out.flush()))? {
            return Ok(());
        }
    }

    let mut ring = RingBuf::try_from(ebpf.take_map(MAP_EVENTS).context("events map missing")?)
        .map_err(|e| anyhow!("events map: {e}"))?;
    let counters: PerCpuArray<MapData, u64> =
        PerCpuArray::try_from(ebpf.take_map(MAP_COUNTERS).context("counters map missing")?)
            .map_err(|e| anyhow!("counters map: {e}"))?;

    let mut tracker = Tracker::new();
    let mut tick = tokio::time::interval(DRAIN_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let deadline = args.duration.map(|s| tokio::time::Instant::now() + Duration::from_secs_f64(s));
    let started_mono = Clock::mono_now_ns();
    let mut lost = Lost::default();
    let mut last_lost_check = Instant::now();
    let mut decode_errors = 0u64;

    let mut open = true;
    while open {
        let stop = tokio::select! {
            _ = tick.tick() => false,
            _ = sigint.recv() => true,
            _ = sigterm.recv() => true,
            _ = async { tokio::time::sleep_until(deadline.unwrap()).await }, if deadline.is_some() => true,
        };
        open = drain(&mut ring, &mut tracker, &mut out, &mut decode_errors)?;
        if open && (stop || last_lost_check.elapsed() >= LOST_EVERY) {
            last_lost_check = Instant::now();
            let now = read_lost(&counters);
            if now != lost {
                lost = now;
                open = keep_going(out.lost(lost))?;
            }
        }
        if open {
            open = keep_going(out.flush())?;
        }
        if stop {
            break;
        }
    }
    if !open {
        // Nobody reads any more: detach quietly.
        return Ok(());
    }
    let lost = read_lost(&counters);
    let dur = Clock::mono_now_ns().saturating_sub(started_mono);
    if keep_going(out.summary(&tracker, lost, dur).and_then(|_| out.flush()))? && decode_errors > 0 {
        eprintln!("nfs-trace: {decode_errors} records could not be decoded");
    }
    // Dropping `ebpf` detaches every program.
    drop(ebpf);
    Ok(())
}

/// Drains the ring buffer through tracker and renderer. Returns false when
/// the output is closed.
fn drain<W: Write>(
    ring: &mut RingBuf<MapData>,
    tracker: &mut Tracker,
    out: &mut Renderer<W>,
    decode_errors: &mut u64,
) -> Result<bool> {
    while let Some(item) = ring.next() {
        let ev = match events::decode(&item) {
            Ok(ev) => ev,
            Err(_) => {
                *decode_errors += 1;
                continue;
            }
        };
        drop(item);
        for o in tracker.on_event(&ev) {
            if !keep_going(out.observation(&o))? {
                return Ok(false);
            }
        }
    }
    Ok(true)
}
