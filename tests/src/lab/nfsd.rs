//! The NFS server: the kernel's nfsd with rpcbind (NFSv3 registers with it),
//! mountd, nfsdcld where the kernel needs it (client tracking: kernels without
//! the legacy tracking refuse to end the grace period early without it) and
//! one exported tmpfs.
use std::{
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result};

use super::{cmd, out, sys};

const T: Duration = Duration::from_secs(30);
/// Grace and lease are short so that a kernel that refuses the early end of
/// grace costs seconds, not the default 90.
const GRACE_S: &str = "10";

/// Exported with fsid=2 (xtask's /etc/exports); v4 sees it as `/two`.
pub const SECOND_EXPORT: &str = "/export/two";

pub fn start(nfsdcld: bool) -> Result<()> {
    sys::mount("nfsd", "/proc/fs/nfsd", "nfsd", None)?;
    for d in ["/var/lib/nfs/v4recovery", "/var/lib/nfs/nfsdcld", "/run/rpcbind"] {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {d}"))?;
    }
    sys::mount("rpc_pipefs", "/var/lib/nfs/rpc_pipefs", "rpc_pipefs", None)?;
    // rpcbind drops its privileges to the _rpc user (uid 100 in /etc/passwd).
    std::os::unix::fs::chown("/run/rpcbind", Some(100), None).context("chown /run/rpcbind")?;
    for f in ["/var/lib/nfs/etab", "/var/lib/nfs/rmtab"] {
        std::fs::write(f, b"").with_context(|| format!("cannot create {f}"))?;
    }
    std::fs::write("/export/hello", b"hello\n").context("cannot write /export/hello")?;
    // A second export of its own file system (shared-server mounts both).
    sys::mount("tmpfs", SECOND_EXPORT, "tmpfs", None)?;
    std::fs::write(format!("{SECOND_EXPORT}/hello"), b"hello\n").context("cannot write the second export's hello")?;

    // The server-silent scenarios' export: a file system that can freeze.
    super::silent::prepare_export()?;

    // rpcbind first: mountd and the kernel's nfsd register with it (v3).
    cmd::run(Command::new("/sbin/rpcbind").arg("-w"), T)?;
    wait_for_port(111)?;
    cmd::run(Command::new("/usr/sbin/exportfs").arg("-ra"), T)?;
    spawn_daemon("/usr/sbin/rpc.mountd", &["--no-udp", "-F"])?;
    if nfsdcld {
        match spawn_daemon("/usr/sbin/nfsdcld", &["-F"]) {
            Ok(()) => std::thread::sleep(Duration::from_millis(300)),
            Err(e) => out::log(format!("nfsdcld not started ({e:#}); early end of grace may be refused")),
        }
    }
    cmd::run(
        Command::new("/usr/sbin/rpc.nfsd").args([
            "-V", "3", "-V", "4", "--no-udp", "--grace-time", GRACE_S, "--lease-time", GRACE_S, "8",
        ]),
        T,
    )?;
    wait_for_port(2049)?;
    let versions = std::fs::read_to_string("/proc/fs/nfsd/versions").unwrap_or_default();
    // Without this, the first v4 OPEN waits for the grace period to end.
    // nfsd may refuse (EBUSY) while its client tracking is still starting:
    // retry for a few seconds before waiting the grace period out.
    let start = std::time::Instant::now();
    let mut last = None;
    while start.elapsed() < Duration::from_secs(5) {
        match std::fs::write("/proc/fs/nfsd/v4_end_grace", b"Y") {
            Ok(()) => {
                out::log(format!(
                    "nfsd up, versions {}, grace ended early (after {:.1} s)",
                    versions.trim(),
                    start.elapsed().as_secs_f64()
                ));
                return Ok(());
            }
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    out::log(format!(
        "nfsd up, versions {}; early end of grace refused ({}): waiting it out; kernel says: {}",
        versions.trim(),
        last.map(|e| e.to_string()).unwrap_or_default(),
        kernel_log_about("nfsd")
    ));
    std::thread::sleep(Duration::from_secs(GRACE_S.parse::<u64>().unwrap_or(10) + 1));
    Ok(())
}

/// Kernel log lines mentioning `word` (for error messages).
fn kernel_log_about(word: &str) -> String {
    cmd::run(Command::new("/bin/busybox").arg("dmesg"), T)
        .map(|t| t.lines().filter(|l| l.contains(word)).collect::<Vec<_>>().join(" | "))
        .unwrap_or_else(|e| format!("(no dmesg: {e:#})"))
}

/// Starts a daemon that stays in the foreground, with its output on the
/// console (its own messages explain a failed start best).
fn spawn_daemon(path: &str, args: &[&str]) -> Result<()> {
    let mut child = Command::new(path)
        .args(args)
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {path}"))?;
    std::thread::sleep(Duration::from_millis(200));
    if let Some(st) = child.try_wait()? {
        anyhow::bail!("{path} exited at once: {st}");
    }
    Ok(())
}

/// Waits until something listens on TCP `port` in this namespace.
fn wait_for_port(port: u16) -> Result<()> {
    let needle = format!(":{port:04X} ");
    for _ in 0..100 {
        let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default()
            + &std::fs::read_to_string("/proc/net/tcp6").unwrap_or_default();
        // st 0A = LISTEN; local address is the second column.
        if tcp.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[3] == "0A" && format!("{} ", f[1]).ends_with(&needle)
        }) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    anyhow::bail!("nothing listens on TCP port {port} after 10 s")
}
