//! `nfs-trace check`: no BPF, no root. Lists the NFS mounts with their
//! server, version, resvport and nconnect, the transports' remembered and
//! live source ports and connect counts (and how they change over
//! --interval), and flags mounts whose reconnects will come from the same
//! source port. Exit 0: nothing flagged; 2: something is.
use std::{io::Write as _, process::ExitCode};

use anyhow::{Context as _, Result};
use serde::Serialize;

use crate::{
    output::escape::escape,
    cli::CheckArgs,
    host::nfsmounts::MountView,
    host::{addr::endpoint, proxy::Proxy},
    host::ns_mounts::{self, HostMounts},
};

/// What could not be seen, on stderr: one line each.
fn unseen_lines(host: &HostMounts) {
    for u in &host.unseen {
        eprintln!("nfs-trace: cannot see: {}", escape(u));
    }
}

/// Where a mount is, for hosts with several namespaces: its mount and
/// network namespace and the other places it is seen.
fn where_line(v: &MountView) -> String {
    let ns = |n: Option<u32>| n.map_or_else(|| "?".to_string(), |n| n.to_string());
    let mut s = format!("mnt:[{}] net:[{}]", ns(v.mntns), ns(v.netns));
    let also: Vec<String> = v.seen_in.iter().skip(1).map(|p| format!("{} (mnt:[{}])", escape(&p.mountpoint), ns(p.mntns))).collect();
    if !also.is_empty() {
        s.push_str(&format!(", also at {}", also.join(", ")));
    }
    s
}

/// Whether a mount needs attention: it reconnects from the same port
/// toward a server a middlebox may sit in front of; or, for a mount through
/// a local proxy (loopback, where no middlebox is), its proxy is gone or
/// its upstream leg is dead or stuck.
fn flagged(v: &MountView) -> bool {
    if v.loopback() { v.proxy.as_ref().is_some_and(|p| !p.problems.is_empty()) } else { v.reuse_prone() }
}

/// The proxy of a loopback mount: who it is, its upstream sockets as `ss`
/// would list them, and its problems.
fn proxy_lines(out: &mut impl std::io::Write, p: &Proxy) -> std::io::Result<()> {
    let who = match (p.pid, &p.comm) {
        (Some(pid), Some(c)) => format!("{} (pid {pid})", escape(c)),
        (Some(pid), None) => format!("pid {pid}"),
        (None, _) => "nobody".to_string(),
    };
    writeln!(out, "  proxy {} held by {who}", p.listen)?;
    for l in &p.upstream {
        writeln!(out, "    upstream {} → {} {}", endpoint(l.laddr, l.lport), endpoint(l.raddr, l.rport), l.state)?;
    }
    if p.upstream.is_empty() && p.pid.is_some() {
        writeln!(out, "    upstream: no connection now")?;
    }
    for m in &p.problems {
        writeln!(out, "    PROBLEM: {m}")?;
    }
    if let Some(u) = &p.unseen {
        writeln!(out, "    cannot see: {}", escape(u))?;
    }
    Ok(())
}

/// Exit status when a mount is flagged.
pub const FLAGGED: u8 = 2;

#[derive(Serialize)]
struct Row<'a> {
    #[serde(flatten)]
    view: &'a MountView,
    /// Connects during --interval (None without one).
    connects_delta: Option<u64>,
    flagged: bool,
}

pub fn run(args: CheckArgs) -> Result<ExitCode> {
    let read = || {
        ns_mounts::read(&args.proc_root, &args.sys_root)
            .with_context(|| format!("cannot read mounts under {}", args.proc_root.display()))
    };
    let first = read()?;
    let (host, deltas): (HostMounts, Vec<Option<u64>>) = match args.interval {
        Some(interval) => {
            std::thread::sleep(interval);
            let second = read()?;
            // The same mount: the same first place (mount namespace and point).
            let d = second
                .views
                .iter()
                .map(|v| first.views.iter().find(|f| (f.mntns, &f.mountpoint) == (v.mntns, &v.mountpoint)).map(|f| v.connects.saturating_sub(f.connects)))
                .collect();
            (second, d)
        }
        None => {
            let n = first.views.len();
            (first, vec![None; n])
        }
    };
    let views = &host.views;
    let rows: Vec<Row> = views.iter().zip(deltas).map(|(v, d)| Row { view: v, connects_delta: d, flagged: flagged(v) }).collect();
    let flagged = rows.iter().filter(|r| r.flagged).count();
    let mut out = std::io::stdout().lock();
    if args.json {
        let body = serde_json::json!({"v": crate::output::render::SCHEMA_VERSION, "type": "check", "flagged": flagged, "mounts": rows, "unseen": host.unseen});
        serde_json::to_writer(&mut out, &body)?;
        writeln!(out)?;
    } else if rows.is_empty() {
        unseen_lines(&host);
        writeln!(out, "No NFS mounts on this host.")?;
    } else {
        unseen_lines(&host);
        let namespaces = host.many_namespaces();
        writeln!(
            out,
            "{:<24} {:<24} {:<5} {:<10} {:>4} {:<12} {:<12} {:>9}  RECONNECT FROM",
            "MOUNT", "SERVER", "VERS", "PORTS", "NCON", "REMEMBERED", "LIVE", "CONNECTS"
        )?;
        for r in &rows {
            let v = r.view;
            let list = |p: &[u16]| if p.is_empty() { "-".to_string() } else { p.iter().map(u16::to_string).collect::<Vec<_>>().join(",") };
            let connects = match r.connects_delta {
                Some(d) => format!("{} (+{d})", v.connects),
                None => v.connects.to_string(),
            };
            let verdict = match &v.reuse {
                _ if v.loopback() => "loopback: no middlebox on this leg".to_string(),
                Some(why) => format!("SAME PORT: {}", escape(why)),
                None => "a new port (no source port remembered)".to_string(),
            };
            writeln!(
                out,
                "{:<24} {:<24} {:<5} {:<10} {:>4} {:<12} {:<12} {:>9}  {verdict}",
                escape(&v.mountpoint),
                format!("{}:{}", escape(&v.server), v.port),
                escape(v.vers.as_deref().unwrap_or("?")),
                if v.noresvport { "noresvport" } else { "resvport" },
                v.nconnect,
                list(&v.remembered_ports),
                v.live_ports.as_deref().map_or_else(|| "?".to_string(), list),
                connects,
            )?;
            if namespaces {
                writeln!(out, "  {}", where_line(v))?;
            }
            if let Some(p) = &v.proxy {
                proxy_lines(&mut out, p)?;
            }
            // A pod's volume: which pods, in full (the mount point names only one).
            for p in &v.pods {
                writeln!(out, "  pod {} volume {}", escape(&p.uid), escape(&p.volume))?;
            }
        }
        if rows.iter().any(|r| r.view.live_ports.is_none() && r.view.live_from == "not visible") {
            writeln!(
                out,
                "\nLIVE ?: the mount's network namespace is not known, or its sunrpc sysfs cannot be read: its live ports are not shown (the tracer's own namespace's would not be its)."
            )?;
        }
        if rows.iter().any(|r| r.view.live_ports.is_none() && r.view.live_from == "unknown") {
            writeln!(
                out,
                "\nLIVE ?: several mounts share that server and this kernel does not link a mount to its transports (6.4+ does, in /sys/fs/nfs): which live ports are whose cannot be told."
            )?;
        }
        let proxies = rows.iter().filter(|r| r.flagged && r.view.loopback()).count();
        if proxies > 0 {
            writeln!(out, "\n{proxies} proxied mount(s) have a problem on the proxy's side (PROBLEM lines): the mount hangs while it lasts.")?;
        }
        let flagged = flagged - proxies;
        if flagged > 0 {
            writeln!(
                out,
                "\n{flagged} mount(s) will reconnect from the same source port: a stateful middlebox that still holds the old flow drops those SYNs. `nfs-trace prove --mount PATH` shows what a reconnect does on this kernel."
            )?;
        }
    }
    out.flush()?;
    Ok(if flagged > 0 { ExitCode::from(FLAGGED) } else { ExitCode::SUCCESS })
}
