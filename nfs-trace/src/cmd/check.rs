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
    host::nfsmounts::{self, MountView},
};

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
        nfsmounts::read(&args.proc_root, &args.sys_root)
            .with_context(|| format!("cannot read mounts under {}", args.proc_root.display()))
    };
    let first = read()?;
    let (views, deltas): (Vec<MountView>, Vec<Option<u64>>) = match args.interval {
        Some(interval) => {
            std::thread::sleep(interval);
            let second = read()?;
            let d = second
                .iter()
                .map(|v| first.iter().find(|f| f.mountpoint == v.mountpoint).map(|f| v.connects.saturating_sub(f.connects)))
                .collect();
            (second, d)
        }
        None => {
            let n = first.len();
            (first, vec![None; n])
        }
    };
    let rows: Vec<Row> =
        views.iter().zip(deltas).map(|(v, d)| Row { view: v, connects_delta: d, flagged: v.reuse_prone() }).collect();
    let flagged = rows.iter().filter(|r| r.flagged).count();
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &serde_json::json!({"v": 1, "type": "check", "flagged": flagged, "mounts": rows}))?;
        writeln!(out)?;
    } else if rows.is_empty() {
        writeln!(out, "No NFS mounts on this host.")?;
    } else {
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
        }
        if rows.iter().any(|r| r.view.live_ports.is_none()) {
            writeln!(
                out,
                "\nLIVE ?: several mounts share that server and this kernel does not link a mount to its transports (6.4+ does, in /sys/fs/nfs): which live ports are whose cannot be told."
            )?;
        }
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
