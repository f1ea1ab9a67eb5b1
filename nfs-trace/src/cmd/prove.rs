//! `nfs-trace prove --mount PATH`: forces reconnects of one mount's
//! transport, traces them, and says whether the source port was reused.
//! Exit 0 when every reconnect got a new port, 3 when any reused one.
//! `prove --server` (server.rs) runs the same rounds on test mounts, one
//! per candidate option set (plan.rs).
//!
//! Forcing: rewriting the transport's sysfs `dstaddr` with its own value
//! (5.14+: xprt_force_disconnect) where the kernel has it, else aborting the
//! socket through sock_diag as `ss -K` does. A statfs on the mount then makes
//! the client reconnect at once.
use std::{
    ffi::CString,
    io::{BufRead, IsTerminal, Write as _},
    net::IpAddr,
    path::Path,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};
use serde::Serialize;

use crate::{
    output::escape::escape,
    cli::ProveArgs,
    host::sock_diag::{self, TcpSock},
    host::addr,
    kernel::attach::MapSizes,
    host::nfsmounts::MountView,
    host::{namespaces, netns_sysfs, ns_mounts},
    session::{Drained, Obs, Session},
    host::sunrpc_sysfs,
    model::tcp::{Observation, Outcome},
};

pub mod plan;
mod server;
mod upstream;

/// Exit status when a reconnect reused its source port.
pub const REUSED: u8 = 3;

/// Set by SIGINT/SIGTERM while `prove --server` runs: every wait checks it,
/// so the test mounts are dropped before the process ends.
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn interrupted() -> bool {
    INTERRUPTED.load(std::sync::atomic::Ordering::Relaxed)
}

#[derive(Serialize, Debug, Clone)]
pub struct Round {
    round: u32,
    method: &'static str,
    before: u16,
    after: u16,
    reused: bool,
    /// From forcing the disconnect to the new connection.
    reconnect_ms: f64,
    /// The new port as `ss` (sock_diag) sees it: the tracer's independent check.
    ss_after: Vec<u16>,
}

fn statfs_in_background(mount: &Path) {
    // A statfs always goes to the server (no client cache), so it makes a
    // dropped transport reconnect now rather than at the next user I/O.
    let Ok(c) = CString::new(mount.as_os_str().as_encoded_bytes()) else { return };
    std::thread::spawn(move || {
        // SAFETY: a zeroed statvfs is a valid out-buffer; c is NUL-terminated.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    });
}

/// Writes a sysfs file in a thread, giving up after `limit`: the kernel
/// takes the transport's lock for a `dstaddr` write and waits for it, so
/// the write blocks as long as an RPC holds that lock. `netns`: the path
/// of the network namespace whose sysfs shows the file (None: ours).
fn write_within(path: &Path, netns: Option<std::path::PathBuf>, text: String, limit: Duration) -> Result<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    let p = path.to_path_buf();
    std::thread::spawn(move || {
        let r = match netns {
            None => std::fs::write(&p, text).map_err(anyhow::Error::from),
            Some(ns) => netns_sysfs::write_in(&ns, &p, text),
        };
        let _ = tx.send(r);
    });
    match rx.recv_timeout(limit) {
        Ok(r) => r.with_context(|| format!("cannot rewrite {}", path.display())),
        Err(_) => Err(anyhow!(
            "writing {} blocked for {:.0} s: the kernel waits for the transport's lock, held by a stuck RPC; try again, or --timeout",
            path.display(),
            limit.as_secs_f64()
        )),
    }
}

/// Established sockets to `server:port` in network namespace `netns`
/// (None: ours).
fn established(netns: Option<u32>, server: IpAddr, port: u16) -> Result<Vec<TcpSock>> {
    let all = match netns {
        Some(n) => sock_diag::sockets_to_in(n, server, port)?,
        None => sock_diag::sockets_to(server, port)?,
    };
    Ok(all.into_iter().filter(|s| s.state == 1).collect())
}

/// The mount `want` names: a mount point in our own mount namespace, else
/// one seen in exactly one other (a container's); and the path a statfs
/// reaches it by (through `/proc/PID/root` for a container's).
fn find_mount(views: &[MountView], own_mnt: Option<u32>, proc_root: &Path, want: &str) -> Result<(MountView, std::path::PathBuf)> {
    if let Some(v) = views.iter().find(|v| v.seen_in.iter().any(|p| p.mountpoint == want && (p.mntns == own_mnt || p.pid.is_none()))) {
        return Ok((v.clone(), want.into()));
    }
    let elsewhere: Vec<(&MountView, u32)> = views
        .iter()
        .flat_map(|v| v.seen_in.iter().filter(|p| p.mountpoint == want).filter_map(move |p| Some((v, p.pid?))))
        .collect();
    match elsewhere.as_slice() {
        [(v, pid)] => Ok(((*v).clone(), proc_root.join(pid.to_string()).join("root").join(want.trim_start_matches('/')))),
        [] => bail!("{want} is not an NFS mount (`nfs-trace check` lists them)"),
        _ => bail!("{want} is an NFS mount in several mount namespaces: give the one in this namespace, or /proc/PID/root{want}"),
    }
}

/// The socket of this mount's transport among those to its server.
fn mount_socket(view: &MountView, all: &[MountView], socks: &[TcpSock]) -> Result<TcpSock> {
    if let Some(s) = socks.iter().find(|s| view.remembered_ports.iter().any(|&p| p != 0 && p == s.lport)) {
        return Ok(s.clone());
    }
    // Ports other mounts remember are theirs.
    let others: Vec<u16> = all
        .iter()
        .filter(|v| v.mountpoint != view.mountpoint)
        .flat_map(|v| v.remembered_ports.iter().copied())
        .filter(|&p| p != 0)
        .collect();
    // Where the host tells this mount's own transports, only those (none
    // listed: no sysfs before 5.14, so no say).
    let own = |p: u16| view.live_ports.as_ref().is_none_or(|l| l.is_empty() || l.contains(&p));
    let mine: Vec<&TcpSock> = socks.iter().filter(|s| !others.contains(&s.lport) && own(s.lport)).collect();
    match mine.as_slice() {
        [one] => Ok((*one).clone()),
        [] => bail!("no connected transport to {}:{} for {}", view.server, view.port, view.mountpoint),
        many => bail!(
            "{} connections to {}:{} could be {}'s (ports {}): cannot tell which; prove a mount that is alone on its server",
            many.len(),
            view.server,
            view.port,
            view.mountpoint,
            many.iter().map(|s| s.lport.to_string()).collect::<Vec<_>>().join(",")
        ),
    }
}

fn confirm(args: &ProveArgs, view: &MountView) -> Result<()> {
    if args.yes {
        return Ok(());
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!("prove disconnects {}'s transport: confirm with --yes when not on a terminal", view.mountpoint);
    }
    let q = format!(
        "This forces {} reconnect(s) of {} (server {}:{}); I/O on it pauses while it reconnects.",
        args.reconnects, view.mountpoint, view.server, view.port
    );
    if !ask(&q)? {
        bail!("not confirmed: nothing was done");
    }
    Ok(())
}

/// Asks `question` on the terminal; true for y/Y/yes.
pub(crate) fn ask(question: &str) -> Result<bool> {
    eprint!("{question} Continue? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}

/// One transport to reconnect: its mount, the other mounts of its client
/// netns, the path a statfs reaches it by, and ports never to touch.
pub(crate) struct Target<'a> {
    pub view: &'a MountView,
    pub views: &'a [MountView],
    pub reach: std::path::PathBuf,
    pub netns: Option<u32>,
    pub netns_path: Option<std::path::PathBuf>,
    pub server: IpAddr,
    /// Source ports of other mounts' transports (prove --server's production
    /// mounts): a socket from one of them is never forced, nor taken as the
    /// target's reconnect.
    pub protect: Vec<u16>,
}

/// Forces `n` reconnects of the target's transport and traces each.
pub(crate) fn force_rounds(s: &mut Session, t: &Target, n: u32, timeout: Duration, sys_root: &Path) -> Result<Vec<Round>> {
    let (view, views, reach, netns, server) = (t.view, t.views, &t.reach, t.netns, t.server);
    // Make sure the transport is up before the first round.
    statfs_in_background(reach);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut sock = loop {
        let found = established(netns, server, view.port).map(|v| v.into_iter().filter(|s| !t.protect.contains(&s.lport)).collect::<Vec<_>>());
        match found.and_then(|socks| mount_socket(view, views, &socks)) {
            Ok(sock) => break sock,
            Err(e) if Instant::now() >= deadline || interrupted() => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    let mut rounds = Vec::new();
    for round in 1..=n {
        if interrupted() {
            bail!("interrupted");
        }
        let before = sock.lport;
        if t.protect.contains(&before) {
            bail!("port {before} is a production mount's: not forcing it");
        }
        s.drain(|_| Ok(true))?; // forget what came before this round
        let sys = match &t.netns_path {
            Some(p) => match netns_sysfs::read_netns(p, netns.unwrap_or(0), &[]) {
                netns_sysfs::SunrpcSysfs::Read { xprts, .. } => xprts,
                _ => Vec::new(),
            },
            None => sunrpc_sysfs::transports(sys_root),
        };
        let sysx = sys.iter().find(|x| {
            x.proto == "tcp" && x.src_port == Some(before) && x.dstaddr.as_deref().and_then(addr::parse_ip) == Some(server)
        });
        let forced = Instant::now();
        let method = match sysx {
            Some(x) => {
                eprintln!("nfs-trace: round {round}: rewriting {}/dstaddr (port {before})", x.dir.display());
                // Its own text back (a link-local one carries the kernel's
                // numeric scope, `fe80::1%2`): the same address, reconnected.
                let same = x.dstaddr.clone().unwrap_or_else(|| view.server.clone());
                write_within(&x.dir.join("dstaddr"), t.netns_path.clone(), format!("{same}\n"), timeout)?;
                "sysfs dstaddr"
            }
            None => {
                eprintln!("nfs-trace: round {round}: destroying the socket from port {before} (sock_diag)");
                sock_diag::destroy(&sock)?;
                "socket destroy (sock_diag)"
            }
        };
        statfs_in_background(reach);
        let after = wait_reconnect(s, server, view.port, timeout, reach, &t.protect)?
            .ok_or_else(|| anyhow!("no reconnect of {} within {} s (round {round})", view.mountpoint, timeout.as_secs_f64()))?;
        let reconnect_ms = forced.elapsed().as_secs_f64() * 1e3;
        eprintln!("nfs-trace: round {round}: reconnected from port {after} in {reconnect_ms:.0} ms");
        // The tracer sees ESTABLISHED as the state changes, a moment before
        // the socket is listed (seen on 7.2): look again for up to 2 s.
        let listed = Instant::now() + Duration::from_secs(2);
        let socks = loop {
            let socks = established(netns, server, view.port)?;
            if socks.iter().any(|s| s.lport == after) || Instant::now() >= listed {
                break socks;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let ss_after: Vec<u16> = socks.iter().map(|s| s.lport).collect();
        rounds.push(Round { round, method, before, after, reused: before == after, reconnect_ms, ss_after });
        sock = socks.into_iter().find(|s| s.lport == after).ok_or_else(|| {
            anyhow!("the tracer saw a reconnect from port {after} but the kernel lists no such connection after 2 s")
        })?;
    }
    Ok(rounds)
}

pub fn run(args: ProveArgs) -> Result<ExitCode> {
    let Some(mount) = args.mount.clone() else { return server::run(args) };
    let t0 = Instant::now();
    let want = mount.to_string_lossy().trim_end_matches('/').to_string();
    let want = if want.is_empty() { "/".to_string() } else { want };
    let host = ns_mounts::read(&args.proc_root, &args.sys_root).context("cannot read the mounts")?;
    let many_namespaces = host.many_namespaces();
    let views = host.views;
    let (view, reach) = find_mount(&views, host.own_mnt, &args.proc_root, &want)?;
    let server: IpAddr = view.server_ip().ok_or_else(|| anyhow!("server {} of {want} is not an IP address", view.server))?;
    // Its transport's sockets and sysfs are those of its client's netns.
    let netns = view.netns.filter(|&n| Some(n) != host.own_net);
    let netns_path = match netns {
        Some(n) => Some(
            namespaces::netns_paths(&args.proc_root)
                .into_iter()
                .find(|p| p.ino == n)
                .ok_or_else(|| anyhow!("network namespace {n} of {want} is gone"))?
                .path,
        ),
        None => None,
    };
    if view.netns.is_none() && many_namespaces {
        eprintln!("nfs-trace: the network namespace of {} is not known: looking for its transport in this one", escape(&want));
    }
    // Ports other mounts remember rule out sockets only within one client
    // netns: a mount of another netns is another client's.
    let views: Vec<MountView> = views.into_iter().filter(|v| v.netns == view.netns).collect();
    confirm(&args, &view)?;

    // Through a local proxy the leg to force is the proxy's to the server.
    let through = view.proxy.as_ref().filter(|p| view.loopback() && p.pid.is_some());
    let (rounds, leg) = match through {
        Some(p) => {
            let up = upstream::Upstream {
                view: &view,
                proxy: p,
                netns: view.netns.or(host.own_net).context("the mount's network namespace is not known")?,
                reach: reach.clone(),
                proc_root: &args.proc_root,
            };
            let (_, port) = up.server()?;
            let mut s = Session::start(&[port], &args.paths, MapSizes::default(), args.debug_bpf, None, t0)?;
            (up.force_rounds(&mut s, args.reconnects, args.timeout)?, Some(p))
        }
        None => {
            let mut s = Session::start(&[view.port], &args.paths, MapSizes::default(), args.debug_bpf, None, t0)?;
            s.poll_sunrpc();
            let target = Target { view: &view, views: &views, reach, netns, netns_path, server, protect: Vec::new() };
            (force_rounds(&mut s, &target, args.reconnects, args.timeout, &args.sys_root)?, None)
        }
    };
    let reused = rounds.iter().filter(|r| r.reused).count();
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(
            &mut out,
            &serde_json::json!({"v": crate::output::render::SCHEMA_VERSION, "type": "prove", "mount": view, "rounds": rounds, "reused": reused,
                                "reconnects": rounds.len(), "leg": if leg.is_some() { "proxy_upstream" } else { "transport" }}),
        )?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "{} (server {}:{}, vers={}{}): {} forced reconnect(s)",
            escape(&view.mountpoint),
            escape(&view.server),
            view.port,
            escape(view.vers.as_deref().unwrap_or("?")),
            if view.noresvport { ",noresvport" } else { "" },
            rounds.len()
        )?;
        if let Some(p) = leg {
            writeln!(
                out,
                "through the local proxy {} (pid {}) on {}: its connection to {} is the leg forced",
                escape(p.comm.as_deref().unwrap_or("?")),
                p.pid.unwrap_or(0),
                p.listen,
                p.servers.iter().map(|(a, port)| addr::endpoint(*a, *port)).collect::<Vec<_>>().join(", ")
            )?;
        }
        writeln!(out, "{:>5}  {:<34} {:>7} {:>7}  {:<8} {:>10}", "ROUND", "HOW", "BEFORE", "AFTER", "REUSED", "RECONNECT")?;
        for r in &rounds {
            writeln!(
                out,
                "{:>5}  {:<34} {:>7} {:>7}  {:<8} {:>8.1} ms",
                r.round,
                r.method,
                r.before,
                r.after,
                if r.reused { "YES" } else { "no" },
                r.reconnect_ms
            )?;
        }
        let verdict = if reused == 0 {
            "every reconnect got a new source port: a middlebox still holding the old flow would not stall this mount".to_string()
        } else {
            format!(
                "{reused} of {} reconnects reused the source port: a stateful middlebox still holding the old flow would drop their SYNs",
                rounds.len()
            )
        };
        writeln!(out, "Verdict on this kernel: {verdict}.")?;
    }
    out.flush()?;
    Ok(if reused > 0 { ExitCode::from(REUSED) } else { ExitCode::SUCCESS })
}

/// Waits for the next established connect to `server:port` and returns its
/// source port. Retries the statfs once a second: an RPC issued while the
/// transport was still closing may not be the one that reconnects it.
fn wait_reconnect(s: &mut Session, server: IpAddr, port: u16, timeout: Duration, mount: &Path, protect: &[u16]) -> Result<Option<u16>> {
    let deadline = Instant::now() + timeout;
    let mut nudge = Instant::now();
    while Instant::now() < deadline && !interrupted() {
        let mut got = None;
        s.drain(|o| {
            match o {
                Drained::Obs(Obs::Tcp(Observation::Connect(a)))
                    if a.who.flow.raddr == server
                        && a.who.flow.dport == port
                        && a.outcome == Outcome::Established
                        && !protect.contains(&a.who.flow.sport) =>
                {
                    got = Some(a.who.flow.sport);
                }
                _ => {}
            }
            Ok(got.is_none())
        })?;
        s.flush_bpf_log();
        if got.is_some() {
            return Ok(got);
        }
        if nudge.elapsed() >= Duration::from_secs(1) {
            statfs_in_background(mount);
            nudge = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(None)
}
