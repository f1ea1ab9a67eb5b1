//! The server-silent scenarios (issue 12): nfsd stops answering RPCs while
//! TCP stays up. The export is an ext2 file system on a RAM disk (brd);
//! `fsfreeze` on it blocks nfsd's writes in the server's kernel, so the
//! client's WRITE gets no reply while its segments are ACKed as usual. A
//! write is timed on the lab clock across [`FROZEN`] of freeze.
//!
//! Ground truth: the freeze and thaw on the lab clock, the write's block,
//! the mount's socket as `ss -ti` saw it at every poll (the same cookie
//! from before to after, never gone, its kernel retransmit count), and the
//! kernel's own "not responding" / "OK" lines come to the tracer through
//! /dev/kmsg like any other.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::{
    cmd,
    middlebox::{self, Middlebox},
    net, out, scenario, stall, sys,
    tracer::{Finished, Tracer},
};

pub const VERSIONS: &[&str] = &["3", "4.1"];
/// Where nfsd::start mounts the RAM disk; exported with fsid=3.
pub const EXPORT: &str = "/export/silent";
/// How long the export stays frozen: several RPC major timeouts
/// (`timeo=20,retrans=2` below) fit in it, short enough for a run under a
/// minute.
pub const FROZEN: Duration = Duration::from_secs(25);
/// 2 s RPC timeouts and 2 retries: the RPC layer reaches its major timeout
/// (the kernel's "not responding") inside the freeze.
const OPTIONS: &str = "timeo=20,retrans=2";
/// How long after the thaw the tracer is given to end its episode.
const EPISODE_END_LIMIT: Duration = Duration::from_secs(30);

pub fn name(vers: &str) -> String {
    format!("server-silent-v{vers}")
}

pub fn parse(n: &str) -> Option<&'static str> {
    VERSIONS.iter().copied().find(|v| name(v) == n)
}

/// Makes the RAM disk's file system and mounts it on [`EXPORT`] (before
/// exportfs runs). Without /dev/ram0 (no brd module) the directory alone
/// is made: the scenario then says so.
pub fn prepare_export() -> Result<()> {
    std::fs::create_dir_all(EXPORT).with_context(|| format!("cannot create {EXPORT}"))?;
    if !Path::new("/dev/ram0").exists() {
        out::log("server-silent: no /dev/ram0 (brd not loaded): its scenarios cannot run".to_string());
        return Ok(());
    }
    cmd::run(Command::new("/bin/busybox").args(["mke2fs", "-F", "/dev/ram0"]), Duration::from_secs(30))?;
    // The ext4 driver mounts ext2 (and, unlike tmpfs, can freeze it).
    sys::mount("/dev/ram0", EXPORT, "ext4", None)?;
    std::fs::write(format!("{EXPORT}/hello"), b"hello\n").context("cannot write the frozen export's hello")?;
    Ok(())
}

fn frozen_mounted() -> bool {
    std::fs::read_to_string("/proc/mounts").is_ok_and(|m| m.lines().any(|l| l.split_whitespace().nth(1) == Some(EXPORT)))
}

fn fsfreeze(how: &str) -> Result<()> {
    cmd::run(Command::new("/bin/busybox").args(["fsfreeze", how, EXPORT]), Duration::from_secs(30)).map(|_| ())
}

/// Runs one scenario; emits its `truth` record and the tracer's lines.
pub fn run(mb: &Middlebox, vers: &str, with_tracer: bool) -> bool {
    let name = name(vers);
    let mnt = PathBuf::from(format!("/mnt/{name}"));
    let (src, opts) = scenario::mount_args(middlebox::SERVER, vers);
    // v3 mounts the export by path; v4 sees it under the pseudo-root (fsid=0 is /export).
    let host = src.rsplit_once(":/").map_or(src.as_str(), |(h, _)| h);
    let src = format!("{host}:{}", if vers == "3" { EXPORT } else { "/silent" });
    let opts = format!("{opts},{OPTIONS}");
    let mut truth = json!({
        "kind": "truth",
        "scenario": name,
        "vers": vers,
        "source": src,
        "mount_options": opts,
        "mountpoint": mnt,
        "server": middlebox::SERVER,
        "silent": null,
        "tracer": {"ran": false},
        "error": null,
    });
    let mut finished = None;
    let res = run_inner(mb, &mnt, &src, &opts, with_tracer, &mut truth, &mut finished);
    stall::report(mb, &name, &mnt, truth, finished, res)
}

fn run_inner(
    mb: &Middlebox,
    mnt: &Path,
    src: &str,
    opts: &str,
    with_tracer: bool,
    truth: &mut Value,
    finished: &mut Option<Finished>,
) -> Result<()> {
    if !frozen_mounted() {
        bail!("{EXPORT} is no file system of its own (no brd RAM disk in this guest): nothing to freeze");
    }
    // Started before the mount: the transport's connect is then seen, as
    // on a host where watch runs as a service.
    let tracer = if with_tracer { Some(Tracer::start()?) } else { None };
    let res = (|| {
        let before = scenario::mount_fresh(&mb.client, middlebox::SERVER, src, opts, mnt).context("through the middlebox")?;
        silent_once(mb, mnt, &before, truth)
    })();
    if let Some(t) = tracer {
        if res.is_ok() {
            let ended = t.wait_for(EPISODE_END_LIMIT, |v| v["type"] == "episode" && v["state"] == "ended");
            out::log(format!("server-silent: the tracer {} an ended episode", if ended { "printed" } else { "did not print" }));
        }
        std::thread::sleep(Duration::from_millis(500));
        *finished = Some(t.stop());
    }
    res
}

/// The mount's socket at each poll: present (same cookie), its retransmits.
#[derive(Default)]
struct Flow {
    polls: u64,
    gone_ns: Option<u64>,
    max_retrans: u64,
    max_unacked: u64,
}

impl Flow {
    fn poll(&mut self, mb: &Middlebox, before: &net::Sock) -> Result<()> {
        let text = cmd::run(
            mb.client.command("/sbin/ss").args([
                "-tnieH", "state", "established", "dst", middlebox::SERVER, "dport", "=", ":2049", "sport", "=",
                &format!(":{}", before.local_port),
            ]),
            Duration::from_secs(20),
        )?;
        self.polls += 1;
        if !text.split_whitespace().any(|t| t.strip_prefix("sk:") == Some(before.cookie.as_str())) {
            self.gone_ns.get_or_insert(sys::mono_ns());
            return Ok(());
        }
        let (unacked, retrans) = stall::ss_info(&text);
        self.max_retrans = self.max_retrans.max(retrans);
        self.max_unacked = self.max_unacked.max(unacked);
        Ok(())
    }
}

fn silent_once(mb: &Middlebox, mnt: &Path, before: &net::Sock, truth: &mut Value) -> Result<()> {
    std::fs::write(mnt.join("before-freeze"), b"x").context("writing before the freeze")?;
    let mut flow = Flow::default();
    flow.poll(mb, before)?;
    let retrans_before = flow.max_retrans;
    fsfreeze("--freeze")?;
    let t_freeze = sys::mono_ns();
    let mut thawed: Option<(u64, u64)> = None;
    // The export must be thawed whatever happens below, or nfsd hangs.
    let thaw = |thawed: &mut Option<(u64, u64)>| -> Result<()> {
        if thawed.is_none() {
            let t0 = sys::mono_ns();
            fsfreeze("--unfreeze")?;
            *thawed = Some((t0, sys::mono_ns()));
        }
        Ok(())
    };
    let res = stall::timed_write(mb, &mnt.join("during-freeze"), |since| {
        flow.poll(mb, before)?;
        if since >= FROZEN {
            thaw(&mut thawed)?;
        }
        Ok(())
    });
    let cleanup = thaw(&mut thawed);
    let w = res?;
    cleanup?;
    flow.poll(mb, before)?;
    let (t_thaw_begin, t_thaw) = thawed.expect("thawed above");
    let after = net::established_to(&mb.client, middlebox::SERVER)?.context("no ESTAB connection after the write returned")?;
    let block_s = w.end_ns.saturating_sub(w.start_ns) as f64 / 1e9;
    out::log(format!(
        "server-silent: frozen {:.1} s; write blocked {block_s:.2} s (ended {:+.2} s after the thaw began); port {} -> {}{}; \
         ss polls {}, retransmits {} -> {}, unacked up to {}, flow gone {}",
        (t_thaw - t_freeze) as f64 / 1e9,
        (w.end_ns as f64 - t_thaw_begin as f64) / 1e9,
        before.local_port,
        after.local_port,
        if after.cookie == before.cookie { " (the same socket)" } else { "" },
        flow.polls,
        retrans_before,
        flow.max_retrans,
        flow.max_unacked,
        flow.gone_ns.map_or("never".to_string(), |t| format!("+{:.1} s", t.saturating_sub(t_freeze) as f64 / 1e9)),
    ));
    truth["silent"] = json!({
        "before": before.local_port,
        "after": after.local_port,
        "before_sk": before.cookie,
        "after_sk": after.cookie,
        "netns": mb.client.inode().ok(),
        "freeze_ns": t_freeze,
        "thaw_begin_ns": t_thaw_begin,
        "thaw_ns": t_thaw,
        "write_start_ns": w.start_ns,
        "write_end_ns": w.end_ns,
        "block_s": (block_s * 1000.0).round() / 1000.0,
        "syn_sent_ports": w.syn_sent_ports,
        "flow": {"polls": flow.polls, "gone_ns": flow.gone_ns, "retrans_before": retrans_before,
                 "retrans_max": flow.max_retrans, "unacked_max": flow.max_unacked},
    });
    Ok(())
}
