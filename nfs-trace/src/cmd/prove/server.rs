//! `nfs-trace prove --server HOST[:PORT]:/EXPORT`: mounts the export once
//! per candidate option set, forces reconnects of each test mount's
//! transport as `prove --mount` does, and prints this host's table of which
//! options give a new source port.
//!
//! Safety: the kernel gives a new mount the client (and transport) of any
//! mount of the same server, port, version and netns (plan.rs), so a set
//! that would share a production mount's transport is skipped before
//! mounting, and again after mounting if the server's choice of version or
//! the superblock shows sharing. The ports of production mounts are never
//! forced nor taken for a test mount's. Test mounts live in a private mount
//! namespace (host/test_mounts.rs): nothing stays mounted, whatever ends
//! the run.
use std::{
    io::{IsTerminal, Write as _},
    net::{IpAddr, ToSocketAddrs},
    process::ExitCode,
    sync::atomic::Ordering,
    time::Instant,
};

use anyhow::{Context as _, Result, anyhow, bail};

use super::{
    INTERRUPTED, Round, Target, force_rounds,
    plan::{self, OptionSet, Outcome, ServerSpec, SetResult},
};
use crate::{
    cli::ProveArgs,
    host::{mountinfo, nfsmounts::MountView, ns_mounts, test_mounts::TestMounts},
    kernel::attach::MapSizes,
    output::escape::escape,
    session::Session,
};

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    INTERRUPTED.store(true, Ordering::Relaxed);
}

fn catch_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction with a plain handler that only stores an atomic.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// The server's addresses as mount.nfs will resolve them.
fn resolve(spec: &ServerSpec) -> Result<Vec<IpAddr>> {
    if let Ok(ip) = spec.host.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    let v: Vec<IpAddr> = (spec.host.as_str(), spec.port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {}", spec.host))?
        .map(|a| a.ip())
        .collect();
    if v.is_empty() {
        bail!("{} resolves to no address", spec.host);
    }
    Ok(v)
}

fn confirm(args: &ProveArgs, spec: &ServerSpec, sets: &[OptionSet]) -> Result<()> {
    if args.yes {
        return Ok(());
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!("prove --server mounts {} {} time(s): confirm with --yes when not on a terminal", spec.source(), sets.len());
    }
    eprintln!("This mounts {} once per option set below, in a private mount namespace, and forces {} reconnect(s) of each test mount:", escape(&spec.source()), args.reconnects);
    for s in sets {
        eprintln!("  -o {}", escape(&s.options));
    }
    if !super::ask("Sets that would share a mounted transport are skipped.")? {
        bail!("not confirmed: nothing was mounted");
    }
    Ok(())
}

/// Production mounts of this host in our netns, with their netns made
/// explicit (unknown: assumed ours, the cautious side).
fn production(args: &ProveArgs) -> Result<(Vec<MountView>, Option<u32>)> {
    let host = ns_mounts::read(&args.proc_root, &args.sys_root).context("cannot read the mounts")?;
    let own = host.own_net;
    let views = host
        .views
        .into_iter()
        .filter(|v| v.netns.is_none() || v.netns == own)
        .map(|mut v| {
            v.netns = own;
            v
        })
        .collect();
    Ok((views, own))
}

/// Ports of production mounts' transports to the server: never forced.
fn protected_ports(prod: &[MountView], servers: &[IpAddr], port: u16) -> Vec<u16> {
    let mut v: Vec<u16> = prod
        .iter()
        .filter(|m| m.port == port && m.server_ip().is_some_and(|ip| servers.contains(&ip)))
        .flat_map(|m| m.remembered_ports.iter().copied().chain(m.live_ports.iter().flatten().copied()))
        .filter(|&p| p != 0)
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

fn share_reason(m: &MountView, vers: &str) -> String {
    format!(
        "{} is mounted here with vers={vers} from this server: the kernel would give the test mount its client and transport (noresvport or not), and forcing a reconnect would disconnect it",
        m.mountpoint
    )
}

pub fn run(args: ProveArgs) -> Result<ExitCode> {
    let t0 = Instant::now();
    crate::host::test_mounts::preflight()?;
    let spec = plan::parse_spec(args.server.as_deref().unwrap_or_default()).map_err(|e| anyhow!(e))?;
    let base: Vec<String> = match &args.like {
        Some(p) => {
            let want = p.to_string_lossy().trim_end_matches('/').to_string();
            let mounts = mountinfo::nfs_mounts(&args.proc_root).context("cannot read the mounts")?;
            let m = mounts.iter().find(|m| m.mountpoint == want).ok_or_else(|| anyhow!("--like {want}: not an NFS mount here"))?;
            plan::like_options(&m.options)
        }
        None => Vec::new(),
    };
    let sets = if args.options.is_empty() { plan::default_sets(&base) } else { plan::given_sets(&args.options, &base).map_err(|e| anyhow!(e))? };
    let servers = resolve(&spec)?;
    confirm(&args, &spec, &sets)?;
    catch_signals();
    // Before any thread: the private mount namespace is this thread's.
    let mut tm = TestMounts::private()?;
    let mut s = Session::start(&[spec.port], &args.paths, MapSizes::default(), args.debug_bpf, None, t0)?;
    let mut results = Vec::new();
    for (i, set) in sets.iter().enumerate() {
        if INTERRUPTED.load(Ordering::Relaxed) {
            break;
        }
        let outcome = try_set(&args, &spec, &servers, set, i, &mut tm, &mut s);
        if let Outcome::Tested { ports, reused, reconnects, .. } = &outcome {
            eprintln!("nfs-trace: -o {}: ports {}, {reused} of {reconnects} reused", escape(&set.options), join_ports(ports));
        }
        results.push(SetResult { set: set.clone(), outcome });
    }
    let interrupted = INTERRUPTED.load(Ordering::Relaxed);
    let dir = tm.dir().to_path_buf();
    drop(tm); // unmount before printing: the output says what is left
    let left = still_mounted(&dir);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    print(&args, &spec, &kernel, &results, &left)?;
    if interrupted {
        bail!("interrupted: {} of {} option sets tried; the test mounts are gone", results.len(), sets.len());
    }
    Ok(ExitCode::from(plan::exit_status(&results)))
}

fn try_set(args: &ProveArgs, spec: &ServerSpec, servers: &[IpAddr], set: &OptionSet, i: usize, tm: &mut TestMounts, s: &mut Session) -> Outcome {
    let (prod, own_net) = match production(args) {
        Ok(p) => p,
        Err(e) => return Outcome::Failed { error: format!("{e:#}") },
    };
    if let Some(v) = set.vers.as_deref().filter(|v| *v != "4")
        && let Some(m) = servers.iter().find_map(|&ip| plan::shared_with(v, ip, spec.port, own_net, &prod))
    {
        return Outcome::Skipped { why: share_reason(m, v) };
    }
    // Connections up before the test mount are not its: never forced.
    let before = match established_ports(servers, spec.port) {
        Ok(p) => p,
        Err(e) => return Outcome::Failed { error: format!("{e:#}") },
    };
    let at = match tm.mount(&format!("set{}", i + 1), &spec.source(), &set.options, args.timeout) {
        Ok(at) => at,
        Err(e) => return Outcome::MountFailed { error: format!("{e:#}") },
    };
    let r = test_mounted(args, spec, &at, &prod, own_net, servers, before, s);
    tm.unmount(&at);
    if let Ok(Outcome::Tested { ports, .. }) = &r
        && let Some(&last) = ports.last()
    {
        wait_closed(servers, spec.port, last);
    }
    r.unwrap_or_else(|e| Outcome::Failed { error: format!("{e:#}") })
}

/// Source ports of the ESTABLISHED connections to the server here.
fn established_ports(servers: &[IpAddr], port: u16) -> Result<Vec<u16>> {
    let mut v = Vec::new();
    for &ip in servers {
        v.extend(crate::host::sock_diag::sockets_to(ip, port)?.into_iter().filter(|s| s.state == 1).map(|s| s.lport));
    }
    Ok(v)
}

/// Waits (up to 10 s) for an unmounted test client's connection to close:
/// while it lingers, the next set's mount of the same version could be
/// given that client, with its flags rather than the set's.
fn wait_closed(servers: &[IpAddr], port: u16, sport: u16) {
    let until = Instant::now() + std::time::Duration::from_secs(10);
    while Instant::now() < until && established_ports(servers, port).is_ok_and(|p| p.contains(&sport)) {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[allow(clippy::too_many_arguments)]
fn test_mounted(
    args: &ProveArgs,
    spec: &ServerSpec,
    at: &std::path::Path,
    prod: &[MountView],
    own_net: Option<u32>,
    servers: &[IpAddr],
    before: Vec<u16>,
    s: &mut Session,
) -> Result<Outcome> {
    let at_text = at.to_string_lossy().to_string();
    let host = ns_mounts::read(&args.proc_root, &args.sys_root).context("cannot read the mounts")?;
    let mut views: Vec<MountView> = host.views.into_iter().filter(|v| v.netns.is_none() || v.netns == own_net).collect();
    let view = views
        .iter()
        .find(|v| v.seen_in.iter().any(|p| p.mountpoint == at_text && (p.mntns == host.own_mnt || p.pid.is_none())))
        .cloned()
        .ok_or_else(|| anyhow!("the test mount {at_text} is not in this namespace's mount table"))?;
    // The same superblock mounted elsewhere is a production mount's.
    if let Some(other) = view.seen_in.iter().find(|p| p.mountpoint != at_text) {
        return Ok(Outcome::Skipped { why: format!("the kernel gave the test mount the superblock of {} (same server, export and options)", other.mountpoint) });
    }
    let vers = view.vers.clone().unwrap_or_else(|| "?".into());
    let server = view.server_ip().or_else(|| servers.first().copied()).ok_or_else(|| anyhow!("no server address"))?;
    if let Some(m) = plan::shared_with(&vers, server, spec.port, own_net, prod) {
        return Ok(Outcome::Skipped { why: share_reason(m, &vers) });
    }
    let mut protect = protected_ports(prod, &[server], spec.port);
    protect.extend(before);
    for v in &mut views {
        v.netns = own_net;
    }
    let target = Target { view: &view, views: &views, reach: at.to_path_buf(), netns: None, netns_path: None, server, protect };
    s.poll_sunrpc();
    let rounds: Vec<Round> = force_rounds(s, &target, args.reconnects, args.timeout, &args.sys_root)?;
    let mut ports = vec![rounds.first().map_or(0, |r| r.before)];
    ports.extend(rounds.iter().map(|r| r.after));
    let ms: Vec<f64> = rounds.iter().map(|r| r.reconnect_ms).collect();
    Ok(Outcome::Tested {
        mounted_vers: vers,
        mounted_noresvport: view.noresvport,
        reserved: ports.iter().all(|&p| p < 1024),
        reused: rounds.iter().filter(|r| r.reused).count() as u32,
        reconnects: rounds.len() as u32,
        median_reconnect_ms: plan::median(&ms),
        ports,
        rounds,
    })
}

/// Mount points under `dir` still in this process's mount table (none,
/// unless an unmount failed).
fn still_mounted(dir: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let d = dir.to_string_lossy();
    text.lines().filter_map(|l| l.split(' ').nth(4)).filter(|m| m.starts_with(d.as_ref())).map(mountinfo::unescape).collect()
}

fn join_ports(p: &[u16]) -> String {
    p.iter().map(u16::to_string).collect::<Vec<_>>().join(" → ")
}

fn print(args: &ProveArgs, spec: &ServerSpec, kernel: &str, results: &[SetResult], left: &[String]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let ranked = plan::ranked(results);
    if args.json {
        let rec = serde_json::json!({
            "v": crate::output::render::SCHEMA_VERSION,
            "type": "prove-server",
            "server": spec,
            "kernel": kernel,
            "reconnects_per_set": args.reconnects,
            "sets": results,
            "ranked": ranked.iter().map(|r| &r.set.options).collect::<Vec<_>>(),
            "left_mounted": left,
        });
        serde_json::to_writer(&mut out, &rec)?;
        writeln!(out)?;
        out.flush()?;
        return Ok(());
    }
    writeln!(out, "{} on {}: {} option set(s), {} forced reconnect(s) each", escape(&spec.source()), escape(kernel), results.len(), args.reconnects)?;
    writeln!(out, "{:<34} {:<5} {:<28} {:<16} {:<9} {:>10}", "OPTIONS", "VERS", "PORTS", "ON RECONNECT", "RANGE", "RECONNECT")?;
    for r in results {
        let opts = escape(&r.set.options);
        match &r.outcome {
            Outcome::Tested { mounted_vers: vers, reserved, ports, reused, reconnects, median_reconnect_ms, .. } => {
                let on = if *reused == 0 { format!("new ({reconnects} of {reconnects})") } else { format!("SAME ({reused} of {reconnects})") };
                writeln!(
                    out,
                    "{opts:<34} {vers:<5} {:<28} {on:<16} {:<9} {median_reconnect_ms:>7.1} ms",
                    join_ports(ports),
                    if *reserved { "reserved" } else { "ephemeral" }
                )?;
            }
            Outcome::Skipped { why } => writeln!(out, "{opts:<34} skipped: {}", escape(why))?,
            Outcome::MountFailed { error } => writeln!(out, "{opts:<34} mount failed: {}", escape(error))?,
            Outcome::Failed { error } => writeln!(out, "{opts:<34} failed: {}", escape(error))?,
        }
    }
    let good: Vec<&&SetResult> = ranked.iter().filter(|r| r.all_new()).collect();
    if good.is_empty() {
        writeln!(out, "No option set tried here gave a new source port on every reconnect: after a drop these mounts come back from the port a middlebox may still hold. Remedies are then on the middlebox side (shorter idle or close timeouts for :{} flows, or no connection tracking for them).", spec.port)?;
    } else {
        writeln!(out, "Gave a new source port on every reconnect here, best first:")?;
        for (n, r) in good.iter().enumerate() {
            writeln!(out, "  {}. -o {}", n + 1, escape(&r.set.options))?;
            for c in plan::server_constraints(r) {
                writeln!(out, "     server side: {c}")?;
            }
        }
    }
    if left.is_empty() {
        writeln!(out, "Nothing is left mounted: the test mounts lived in a private mount namespace and are gone.")?;
    } else {
        // Only this process's namespace has them: they go when it exits.
        writeln!(out, "Could not unmount {} here; they are in this process's private mount namespace and go when it exits.", escape(&left.join(", ")))?;
    }
    out.flush()?;
    Ok(())
}
