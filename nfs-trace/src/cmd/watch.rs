//! `nfs-trace watch`: attach, then kernel → ring buffer → decoder → tracker →
//! renderer until Ctrl-C, SIGTERM or --duration; then the summary.
use std::{
    io,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow};
use serde::Serialize;
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    output::escape::escape,
    cli::{Color, WatchArgs},
    output::clock::Clock,
    kernel::env,
    host::canary::{self, Canaries},
    host::mountinfo::NfsMount,
    host::nfsmounts::MountView,
    host::ns_mounts,
    model::episode::EpisodeObservation,
    model::feed::{Feed, Input},
    kernel::attach::MapSizes,
    kernel::hooks::{self, HookStatus},
    kernel::lost::Lost,
    output::render::{Format, Renderer},
    session::{Drained, Obs, Session},
    model::verdict,
};

mod mount_reads;
use mount_reads::MountReads;

/// At most one drain of the ring buffer per this while records flow. The
/// kernel wakes the reader only for the first record after it read
/// everything (eBPF `submit`): a busy ring is read this often with one
/// wakeup each time however many records came (a wakeup per record is the
/// cost that dominates under a connect storm), and this bounds how late a
/// line appears. A ring past its fill level wakes us on every record.
const DRAIN_EVERY: Duration = Duration::from_millis(20);
/// A host that logs a lot wakes us at most this often for it.
const KMSG_EVERY: Duration = Duration::from_millis(200);
/// On Ctrl-C or SIGTERM: a record reserved on another CPU but not yet
/// committed stops a drain (the ring is read in order), and what was
/// committed behind it waits. The programs commit within microseconds, so
/// after the stop's own drain the ring is read again after this pause,
/// until a pass finds nothing (at most FINAL_PASSES). A fresh-clone run
/// once lost a host test's last record at exit without it.
const FINAL_PAUSE: Duration = Duration::from_millis(5);
const FINAL_PASSES: u32 = 5;
/// How often the lost counters, the mounts and sunrpc are checked. With
/// nothing going on (no record in the last drain, no canary out, no stall
/// or episode open) the loop runs only then; a record or a kernel log line
/// wakes it at once. The idle loop ran every DRAIN_EVERY once (50 wakeups a
/// second: 0.9 % of a CPU on this machine kind, ~8 % of a TCG guest's vCPU
/// in the bench's NFS I/O run), then every 200 ms for kernel lines (still
/// 2.5 % of that vCPU).
const LOST_EVERY: Duration = Duration::from_secs(1);

#[derive(Serialize)]
struct AttachedBody<'a> {
    kernel: &'a str,
    ports: &'a [u16],
    attach_ms: f64,
    hooks: &'a [HookStatus],
    mounts: &'a [NfsMount],
    tracefs_mounted_by_us: bool,
    /// Where metrics are served, if asked.
    metrics: Option<String>,
    /// `--debug-bpf`: kernel diagnostics go to stderr.
    debug_bpf: bool,
    /// `--netns`: the one network namespace reported (its inode), else null.
    netns: Option<crate::flow::Netns>,
    /// Whether stalls get a canary connect (false with `--passive`).
    canaries: bool,
}

/// Ports of NFS mounts outside the watched set, with their mount points,
/// in the order first seen.
fn unwatched_mount_ports<'a>(watched: &[u16], mounts: impl Iterator<Item = (u16, &'a str)>) -> Vec<(u16, Vec<String>)> {
    let mut out: Vec<(u16, Vec<String>)> = Vec::new();
    for (port, mountpoint) in mounts {
        if watched.contains(&port) {
            continue;
        }
        match out.iter_mut().find(|(p, _)| *p == port) {
            Some((_, m)) => m.push(mountpoint.to_string()),
            None => out.push((port, vec![mountpoint.to_string()])),
        }
    }
    out
}

/// Each mount's server port, and for a mount through a local proxy the
/// ports of the servers the proxy goes to (its upstream leg is watched in
/// the kernel like an NFS port).
fn mount_ports(views: &[MountView]) -> impl Iterator<Item = (u16, &str)> {
    views.iter().flat_map(|v| {
        let up = v.proxy.iter().flat_map(|p| p.servers.iter().map(|(_, port)| *port));
        std::iter::once(v.port).chain(up).map(move |p| (p, v.mountpoint.as_str()))
    })
}

/// Watches the ports of NFS mounts outside the watched set (the kernel's
/// live port map holds every port, so this cannot run out of room); returns
/// those now watched. A port that cannot be added is said on stderr at
/// every re-read (once a second) until adding it works.
fn follow_mount_ports<'a>(s: &mut Session, mounts: impl Iterator<Item = (u16, &'a str)>) -> Vec<(u16, Vec<String>)> {
    let mut added = Vec::new();
    for (port, mountpoints) in unwatched_mount_ports(&s.ports, mounts) {
        match s.watch_port(port) {
            Ok(_) => added.push((port, mountpoints)),
            Err(e) => eprintln!(
                "nfs-trace: NFS mount {} uses port {port}, which is NOT watched: {e:#}",
                mountpoints.join(", ")
            ),
        }
    }
    added
}

#[derive(Serialize)]
struct PortsBody<'a> {
    /// Every watched port now.
    ports: &'a [u16],
    /// The ports just added.
    added: &'a [u16],
    /// The NFS mounts they were added for.
    mounts: &'a [String],
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
// Each argument is one part of the line.
#[allow(clippy::too_many_arguments)]
fn start_line(
    env: &env::Env,
    ports: &[u16],
    from_mounts: &[u16],
    hooks: &[HookStatus],
    mounts: &[NfsMount],
    attach_ms: f64,
    debug_bpf: bool,
    canaries: bool,
) -> String {
    let (tcp, sunrpc) = hooks.split_at(hooks::FIRST_SUNRPC_HOOK.min(hooks.len()));
    let on: Vec<String> = tcp.iter().filter(|h| h.attached).map(|h| format!("{} ({})", h.name, h.kind.name())).collect();
    let mut off: Vec<String> = tcp
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
                let unwatched = if from_mounts.contains(&m.port()) {
                    format!(", port {} watched: it is this mount's", m.port())
                } else if ports.contains(&m.port()) {
                    String::new()
                } else {
                    format!(", port {} NOT watched: add --port {}", m.port(), m.port())
                };
                format!(
                    "{} ({} vers={}{resv}{unwatched})",
                    escape(&m.mountpoint),
                    escape(&m.source),
                    escape(m.vers.as_deref().unwrap_or("?"))
                )
            })
            .collect();
        format!("NFS mounts: {}", m.join(", "))
    };
    let off = if off.is_empty() {
        String::new()
    } else {
        format!("; optional, not attached: {} (`nfs-trace probes` says why)", off.join(", "))
    };
    let sunrpc_on = sunrpc.iter().filter(|h| h.attached).count();
    let sunrpc = if !hooks::sunrpc_loaded() {
        "; SunRPC: sunrpc module not loaded, its hooks attach when it loads".to_string()
    } else {
        format!("; SunRPC: {sunrpc_on} of {} hooks attached", sunrpc.len())
    };
    let tracefs = if env.mounted_tracefs { format!("; mounted tracefs at {}", env.tracefs.display()) } else { String::new() };
    let debug = if debug_bpf { "; kernel diagnostics on (--debug-bpf)" } else { "" };
    let canary = if canaries {
        "; canary connects: on (one per stalled server per 10 s; --passive turns them off)"
    } else {
        "; canary connects: off (--passive)"
    };
    format!(
        "nfs-trace: attached {} in {attach_ms:.0} ms on {}{off}{sunrpc}{tracefs}{debug}{canary}; watching TCP connects to port {}. {mounts}.",
        on.join(", "),
        env.release,
        port_list.join(",")
    )
}

/// A canary for a stalled server, if `o` asks for one (rate limited in
/// `Canaries`): a stall going on is what opens a stalled episode, whose
/// verdict waits for it (`EpisodeTracker::on_canary`).
fn ask_canary(c: &mut Option<Canaries>, o: &crate::model::tcp::Observation) {
    if let (Some(c), Some(t)) = (c.as_mut(), canary::trigger_of(o)) {
        c.request(t, Clock::mono_now_ns());
    }
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
    let mut s = Session::start(
        &args.ports,
        &args.paths,
        MapSizes { ringbuf_bytes: args.ringbuf_kb * 1024, socks: args.socks_max },
        args.debug_bpf,
        args.netns,
        t0,
    )?;
    let metrics = match args.metrics {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a).await.map_err(|e| anyhow!("cannot serve metrics on {a}: {e}"))?,
        ),
        None => None,
    };
    let metrics_addr = metrics.as_ref().and_then(|l| l.local_addr().ok());
    // Fed every observation as it happens (counters that never go down).
    let mut counted = metrics.as_ref().map(|_| crate::output::metrics::Metrics::new());
    if let Some(a) = metrics_addr {
        eprintln!("nfs-trace: Prometheus metrics on http://{a}/metrics");
    }

    // Before `attached` is printed: whoever waits for it may count on every
    // kernel line logged from then on (opened at the log's end).
    let mut kmsg = crate::host::kmsg::Kmsg::open();

    // Every mount namespace's, one per superblock.
    let mounts = ns_mounts::nfs_mounts(&args.proc_root);
    // NFS mounts on ports outside --port are watched too, from now on.
    let from_mounts: Vec<u16> =
        follow_mount_ports(&mut s, mounts.iter().map(|m| (m.port(), m.mountpoint.as_str()))).into_iter().map(|(p, _)| p).collect();
    let clock = Clock::new();
    let format = format_for(args.json, args.color);
    let mut out = Renderer::new(io::BufWriter::with_capacity(64 * 1024, io::stdout().lock()), format, clock);
    eprintln!("{}", start_line(&s.env, &s.ports, &from_mounts, &s.hooks, &mounts, s.attach_ms, args.debug_bpf, !args.passive));
    if format == Format::Json {
        let body = AttachedBody {
            kernel: &s.env.release,
            ports: &s.ports,
            attach_ms: (s.attach_ms * 1e3).round() / 1e3,
            hooks: &s.hooks,
            mounts: &mounts,
            tracefs_mounted_by_us: s.env.mounted_tracefs,
            metrics: metrics_addr.map(|a| a.to_string()),
            debug_bpf: args.debug_bpf,
            netns: s.netns,
            canaries: !args.passive,
        };
        if !keep_going(out.json_line("attached", body).and_then(|_| out.flush()))? {
            return Ok(());
        }
    }

    let sys_root = std::path::Path::new("/sys");
    // Every namespace's mounts; what cannot be seen is said once.
    let mut said = std::collections::HashSet::new();
    // The servers each local proxy went to, kept across reads (host/proxy.rs).
    let mut proxies = crate::host::proxy::Memory::default();
    let mut read_views = || {
        let mut host = ns_mounts::read(&args.proc_root, sys_root).unwrap_or_default();
        host.unseen.into_iter().filter(|u| said.insert(u.clone())).for_each(|u| eprintln!("nfs-trace: cannot see: {}", escape(&u)));
        proxies.annotate(host.views.iter_mut().filter_map(|v| {
            let netns = v.netns;
            v.proxy.as_mut().map(|p| (netns, p))
        }));
        host.views
    };
    // `--events`: each thing fed to the trackers is written as an `input`
    // line when it is fed, for `nfs-trace report` (model/feed.rs).
    let events = args.events;
    let started_mono = Clock::mono_now_ns();
    // Refreshed every second: mounts come and go while we watch. `feed.base`
    // is the last full read, redone only when due (cmd/watch/mount_reads.rs);
    // `feed.views` is it annotated with what the attributor knows now.
    let mut feed = Feed::new(read_views(), args.passive, s.hook_attached("tcp:tcp_retransmit_skb"), started_mono);
    feed.rpc_timeouts_traced = s.rpc_timeouts_traced();
    if events {
        let start = Input::Start {
            mono_ns: started_mono,
            clock_offset_ns: clock.offset_ns() as i64,
            passive: args.passive,
            retransmits_traced: feed.episodes.retransmits_traced,
            views: feed.base.clone(),
        };
        let hooks = Input::Hooks { sunrpc: crate::session::sunrpc_attached(&s.hooks), rpc_timeouts_traced: feed.rpc_timeouts_traced };
        let seeds: Vec<Input> = s.seeded.drain(..).map(Input::Seed).collect();
        for i in [start, hooks].iter().chain(&seeds) {
            if !keep_going(out.input(i))? {
                return Ok(());
            }
        }
    }
    s.tap_records = events;
    let mut reads = MountReads::new(&ns_mounts::nfs_mounts(&args.proc_root), Instant::now());
    let mut last_drain = tokio::time::Instant::now();
    let mut busy = true;
    let mut stopping = 0u32;
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    let mut lost = Lost::default();
    let mut last_lost_check = Instant::now();

    // Canary connects toward stalled servers (host/canary.rs), off with --passive.
    let mut canaries = (!args.passive).then(|| Canaries::new(s.canary_flows.clone()));
    let mut open = true;
    while open {
        let next = if busy { last_drain + DRAIN_EVERY } else { tokio::time::Instant::from_std(last_lost_check + LOST_EVERY) };
        let stop = if stopping > 0 {
            tokio::time::sleep(FINAL_PAUSE).await;
            true
        } else { tokio::select! {
            _ = tokio::time::sleep_until(next) => false,
            // The first record after a drain: read it now if the last drain
            // was DRAIN_EVERY ago, else then (records flowing). Another
            // wakeup before then can only be the fill level's (no record
            // finds the reader caught up while it waits): read at once, or
            // every record past the level would wake us again, and the ring
            // would fill towards lost records (the bench counted 4-8 times
            // the wakeups before this).
            _ = s.ring_filling() => {
                tokio::select! {
                    _ = tokio::time::sleep_until(last_drain + DRAIN_EVERY) => {}
                    _ = s.ring_filling() => {}
                }
                false
            }
            conn = async { metrics.as_ref().unwrap().accept().await }, if metrics.is_some() => {
                if let Ok((conn, _)) = conn {
                    let attached = s.hooks.iter().filter(|h| h.attached).count();
                    let sizes = crate::output::metrics::StateSizes { kernel_sockets: s.kernel_sockets() };
                    let m = counted.as_mut().expect("made with the listener");
                    let body = m.render(&s.tracker, &s.xtracker, &feed.views, s.lost(), attached, &sizes);
                    tokio::spawn(serve_metrics(conn, body));
                }
                false
            }
            // The kernel logged something: read it (NFS lines are timed by
            // when they are read), but not more often than KMSG_EVERY.
            _ = async {
                kmsg.as_ref().unwrap().readable().await;
                tokio::time::sleep_until(last_drain + KMSG_EVERY).await;
            }, if kmsg.is_some() => false,
            _ = sigint.recv() => true,
            _ = sigterm.recv() => true,
            _ = async { tokio::time::sleep_until(deadline.unwrap()).await }, if deadline.is_some() => true,
        } };
        last_drain = tokio::time::Instant::now();
        let mut records = false;
        open = s.drain(|d| {
            records = true;
            match d {
                Drained::Record(r) => keep_going(out.input(&Input::Record(r.clone()))),
                Drained::Obs(Obs::Tcp(o)) => {
                    ask_canary(&mut canaries, o);
                    if let Some(m) = counted.as_mut() {
                        m.observe(o, &feed.views);
                    }
                    let eps = feed.tcp(o);
                    Ok(keep_going(out.observation(o, &feed.views))? && episodes_out(&mut out, counted.as_mut(), &eps, &feed)?)
                }
                Drained::Obs(Obs::Xprt(o)) => {
                    let eps = feed.xprt(o);
                    if let Some(m) = counted.as_mut() {
                        m.observe_xprt(o, &feed.views);
                    }
                    Ok(keep_going(out.xprt_observation(o, &feed.views))? && episodes_out(&mut out, counted.as_mut(), &eps, &feed)?)
                }
            }
        })?;
        if records {
            reads.saw_records();
        }
        s.flush_bpf_log();
        for done in canaries.as_mut().map(|c| c.poll(Clock::mono_now_ns())).unwrap_or_default() {
            match done {
                Ok(d) => {
                    if events {
                        open = open && keep_going(out.input(&Input::Canary(d.result.clone())))?;
                    }
                    open = open && keep_going(out.canary(&d.result, d.stalled_sport))?;
                    // What the canary found decides the stalled episodes' verdicts.
                    let eps = feed.canary(&d.result);
                    open = open && episodes_out(&mut out, counted.as_mut(), &eps, &feed)?;
                }
                Err(why) => eprintln!("nfs-trace: canary not made: {}", escape(&why)),
            }
        }
        if let Some(k) = kmsg.as_mut() {
            for l in k.poll() {
                // The kernel names the server as mounted; map it to an address.
                let ip = feed.server_ip(&l.server);
                let now = Clock::mono_now_ns();
                if events {
                    let i = Input::Kernel { mono_ns: now, server: l.server.clone(), server_ip: ip, text: l.text.clone(), not_responding: l.not_responding };
                    open = open && keep_going(out.input(&i))?;
                }
                let mut joined = false;
                if let Some(ip) = ip {
                    let (j, eps) = feed.kernel_line(&mut s.tracker, &s.xtracker, ip, &l.text, l.not_responding, now);
                    joined = j;
                    open = open && episodes_out(&mut out, counted.as_mut(), &eps, &feed)?;
                }
                if format == Format::Json {
                    open = open && keep_going(out.json_line("kernel", KernelBody { text: &l.text, server: &l.server, not_responding: l.not_responding, joined_stall: joined }))?;
                } else {
                    eprintln!("nfs-trace: kernel said: {}", escape(&l.text));
                }
            }
        }
        // Once at a stop (its first pass), not again on the passes after
        // FINAL_PAUSE: they only read what the ring still held.
        if open && ((stop && stopping == 0) || last_lost_check.elapsed() >= LOST_EVERY) {
            last_lost_check = Instant::now();
            if reads.due(&ns_mounts::nfs_mounts(&args.proc_root), last_lost_check) {
                feed.base = read_views();
                if events {
                    open = open && keep_going(out.input(&Input::Views(feed.base.clone())))?;
                }
            }
            // A mount made since on a port not watched: watch it from now on.
            for (port, mountpoints) in follow_mount_ports(&mut s, mount_ports(&feed.base)) {
                if events {
                    let seeds: Vec<Input> = s.seeded.drain(..).map(Input::Seed).collect();
                    for i in std::iter::once(&Input::PortWatched { port }).chain(&seeds) {
                        open = open && keep_going(out.input(i))?;
                    }
                }
                feed.attributor.port_watched_late(port, &feed.base);
                eprintln!(
                    "nfs-trace: NFS mount {} uses port {port}: now watching port {port} too (its connects before now were not seen)",
                    mountpoints.join(", ")
                );
                if format == Format::Json {
                    open = open && keep_going(out.json_line("ports", PortsBody { ports: &s.ports, added: &[port], mounts: &mountpoints }))?;
                }
            }
            // sunrpc may load after us (the first NFS mount loads it).
            if let Some((on, of)) = s.poll_sunrpc() {
                feed.rpc_timeouts_traced = s.rpc_timeouts_traced();
                eprintln!("nfs-trace: sunrpc loaded: attached {on} of {of} SunRPC hooks");
                if events {
                    let i = Input::Hooks { sunrpc: crate::session::sunrpc_attached(&s.hooks), rpc_timeouts_traced: feed.rpc_timeouts_traced };
                    open = open && keep_going(out.input(&i))?;
                }
                if format == Format::Json {
                    open = open && keep_going(out.json_line("hooks", HooksBody { hooks: &s.hooks }))?;
                }
            }
            let now = Clock::mono_now_ns();
            if events {
                open = open && keep_going(out.input(&Input::Tick { mono_ns: now }))?;
            }
            for a in feed.refresh(&s.xtracker, now) {
                open = open && keep_going(out.attributed(&a, now))?;
            }
            let (stalls, eps) = feed.tick(&mut s.tracker, now);
            for o in stalls {
                ask_canary(&mut canaries, &o);
                if let Some(m) = counted.as_mut() {
                    m.observe(&o, &feed.views);
                }
                open = open && keep_going(out.observation(&o, &feed.views))?;
            }
            open = open && episodes_out(&mut out, counted.as_mut(), &eps, &feed)?;
            let now = s.lost();
            if open && now != lost {
                lost = now;
                open = keep_going(out.lost(lost))?;
            }
        }
        if open {
            open = keep_going(out.flush())?;
        }
        busy = records || canaries.as_ref().is_some_and(|c| c.in_flight()) || feed.busy(&s.tracker);
        if stop {
            // At least one more pass after FINAL_PAUSE (see there).
            if stopping >= FINAL_PASSES || (stopping > 0 && !records) {
                break;
            }
            stopping += 1;
        }
    }
    if !open {
        // Nobody reads any more: detach quietly.
        return Ok(());
    }
    let lost = s.lost_now();
    let now = Clock::mono_now_ns();
    let dur = now.saturating_sub(started_mono);
    feed.base = read_views();
    if events {
        for i in [Input::Views(feed.base.clone()), Input::End { mono_ns: now, lost }] {
            if !keep_going(out.input(&i))? {
                return Ok(());
            }
        }
    }
    if !keep_going(finish(&mut out, &mut feed, &s.tracker, &s.xtracker, lost, dur, now))? {
        return Ok(());
    }
    if s.decode_errors > 0 {
        eprintln!("nfs-trace: {} records could not be decoded", s.decode_errors);
    }
    // Dropping the session detaches every program.
    drop(s);
    Ok(())
}

/// The end: what the attributor learned last, then the summary (`report`
/// ends a replay with it too).
pub fn finish<W: io::Write>(
    out: &mut Renderer<W>,
    feed: &mut Feed,
    tracker: &crate::model::tcp::Tracker,
    xtracker: &crate::model::xprt::XprtTracker,
    lost: Lost,
    dur: u64,
    now: u64,
) -> io::Result<()> {
    feed.views = feed.base.clone();
    for a in feed.attributor.refresh(&mut feed.views, now) {
        out.attributed(&a, now)?;
    }
    let verdicts = verdict::verdicts(&feed.views, xtracker);
    out.summary(tracker, xtracker, &feed.views, verdicts, lost, dur, &feed.episodes)?;
    out.flush()
}

/// Renders and counts episode observations; false when nobody reads any more.
fn episodes_out<W: io::Write>(
    out: &mut Renderer<W>,
    mut counted: Option<&mut crate::output::metrics::Metrics>,
    eps: &[EpisodeObservation],
    feed: &Feed,
) -> Result<bool> {
    for e in eps {
        if let Some(m) = counted.as_deref_mut() {
            m.observe_episode(e);
        }
        if !keep_going(out.episode(e, &feed.views, &feed.honoured))? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Answers one HTTP request with the metrics (any path: it is the only thing served).
async fn serve_metrics(mut conn: tokio::net::TcpStream, body: String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut req = [0u8; 1024];
    // The request itself does not matter; read it so the client sees a clean reply.
    let _ = tokio::time::timeout(Duration::from_secs(2), conn.read(&mut req)).await;
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        crate::output::metrics::CONTENT_TYPE,
        body.len()
    );
    let _ = conn.write_all(head.as_bytes()).await;
    let _ = conn.write_all(body.as_bytes()).await;
    let _ = conn.shutdown().await;
}

#[derive(Serialize)]
struct KernelBody<'a> {
    text: &'a str,
    server: &'a str,
    not_responding: bool,
    joined_stall: bool,
}

#[derive(Serialize)]
struct HooksBody<'a> {
    hooks: &'a [HookStatus],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unwatched_mount_ports_are_grouped_in_order_seen() {
        let mounts = [(2049, "/a"), (20049, "/b"), (3049, "/c"), (20049, "/d")];
        let got = unwatched_mount_ports(&[2049, 3049], mounts.into_iter());
        assert_eq!(got, vec![(20049, vec!["/b".to_string(), "/d".to_string()])]);
        assert!(unwatched_mount_ports(&[2049, 20049, 3049], mounts.into_iter()).is_empty());
    }
}
