//! One scenario: mount with one NFS version and option set from the client
//! namespace, start the tracer, force reconnects, record what `ss` saw.
use std::{
    path::{Path, PathBuf},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::{
    cmd,
    net::{self, ClientNs, SERVER},
    out, sys, tools,
    tracer::Tracer,
};

/// A scenario name is `v<vers>-<option>`, e.g. `v3-default`, `v4.1-noresvport`.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub vers: String,
    pub option: String,
}

pub const VERSIONS: &[&str] = &["3", "4.0", "4.1", "4.2"];
pub const OPTIONS: &[&str] = &["default", "noresvport"];

impl Scenario {
    pub fn all() -> Vec<Scenario> {
        VERSIONS
            .iter()
            .flat_map(|v| OPTIONS.iter().map(move |o| Scenario::parse(&format!("v{v}-{o}")).expect("valid")))
            .collect()
    }

    pub fn parse(name: &str) -> Result<Scenario> {
        let (v, o) = name
            .strip_prefix('v')
            .and_then(|r| r.split_once('-'))
            .with_context(|| format!("bad scenario name {name:?} (want v<vers>-<option>)"))?;
        if !VERSIONS.contains(&v) || !OPTIONS.contains(&o) {
            bail!("unknown scenario {name:?}: versions {VERSIONS:?}, options {OPTIONS:?}");
        }
        Ok(Scenario { name: name.to_string(), vers: v.to_string(), option: o.to_string() })
    }

    fn mount_args(&self) -> (String, String) {
        let (src, mut opts) = mount_args(SERVER, &self.vers);
        if self.option != "default" {
            opts += &format!(",{}", self.option);
        }
        (src, opts)
    }
}

/// `mount.nfs` source and options for `vers` from `server`. v3 mounts the
/// export's path (the export is also the v4 pseudo-root, fsid=0, so v4
/// mounts `/`); v3 runs without the lock manager (no statd in the guest)
/// and with MOUNT over TCP. An IPv6 server goes in brackets, over tcp6.
pub fn mount_args(server: &str, vers: &str) -> (String, String) {
    let (host, tcp) = if server.contains(':') { (format!("[{server}]"), "tcp6") } else { (server.to_string(), "tcp") };
    if vers == "3" {
        (format!("{host}:/export"), format!("vers=3,proto={tcp},mountproto={tcp},nolock"))
    } else if tcp == "tcp6" {
        (format!("{host}:/"), format!("vers={vers},proto=tcp6"))
    } else {
        (format!("{host}:/"), format!("vers={vers}"))
    }
}

/// Mounts `src` on `mnt` from `ns` (and its mount namespace) and reads a
/// file through it.
pub fn mount(ns: &ClientNs, src: &str, opts: &str, mnt: &Path) -> Result<()> {
    std::fs::create_dir_all(mnt).with_context(|| format!("cannot create {}", mnt.display()))?;
    cmd::run(ns.command("/sbin/mount.nfs").arg(src).arg(mnt).args(["-o", opts]), MOUNT_LIMIT)
        .with_context(|| format!("mount {src} -o {opts}"))?;
    cmd::run(ns.command("/bin/busybox").arg("cat").arg(mnt.join("hello")), MOUNT_LIMIT)
        .context("cannot read a file on the fresh mount")?;
    Ok(())
}

/// [`mount`], then the one ESTABLISHED connection to `server`'s NFS port
/// that `ss` lists.
pub fn mount_fresh(ns: &ClientNs, server: &str, src: &str, opts: &str, mnt: &Path) -> Result<net::Sock> {
    mount(ns, src, opts, mnt)?;
    net::established_to(ns, server)?.context("no ESTAB connection to the server after mounting")
}

#[derive(Debug, Clone, Copy)]
enum Method {
    /// `ss -K`: the client's socket is destroyed (RST), the next RPC reconnects.
    SsKill,
    /// Writing the server address to the transport's sysfs `dstaddr` (5.14+):
    /// the client closes the transport itself and reconnects.
    SysfsDstaddr,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::SsKill => "ss-kill",
            Method::SysfsDstaddr => "sysfs-dstaddr",
        }
    }
}

const MOUNT_LIMIT: Duration = Duration::from_secs(60);
const RECONNECT_LIMIT: Duration = Duration::from_secs(90);

/// Runs one scenario and emits its `truth` record (and the tracer's lines).
/// Returns whether the scenario ran to the end.
pub fn run(ns: &ClientNs, sc: &Scenario, with_tracer: bool) -> bool {
    let mnt = PathBuf::from(format!("/mnt/{}", sc.name));
    let (src, opts) = sc.mount_args();
    let mut truth = json!({
        "kind": "truth",
        "scenario": sc.name,
        "vers": sc.vers,
        "options": sc.option,
        "mount_options": opts,
        "mountpoint": mnt,
        "server": SERVER,
        "client": net::CLIENT,
        "ports": [],
        "reconnects": [],
        "tracer": {"ran": false},
        "error": null,
    });
    let mut tracer_out = None;
    let res = run_inner(ns, sc, &mnt, &src, &opts, with_tracer, &mut truth, &mut tracer_out);
    if let Some(f) = tracer_out {
        truth["tracer"] = f.emit(&sc.name);
    }
    let ok = res.is_ok();
    if let Err(e) = res {
        truth["error"] = json!(format!("{e:#}"));
    }
    out::emit(&truth);
    if let Err(e) = unmount(ns, &mnt) {
        out::log(format!("{}: {e:#}", sc.name));
    }
    ok
}

#[allow(clippy::too_many_arguments)]
fn run_inner(
    ns: &ClientNs,
    sc: &Scenario,
    mnt: &Path,
    src: &str,
    opts: &str,
    with_tracer: bool,
    truth: &mut Value,
    tracer_out: &mut Option<super::tracer::Finished>,
) -> Result<()> {
    let t0 = Instant::now();
    let first = mount_fresh(ns, SERVER, src, opts, mnt)?;
    out::log(format!("{}: mounted in {:.1} s, port {}", sc.name, t0.elapsed().as_secs_f64(), first.local_port));
    truth["ports"].as_array_mut().expect("array").push(json!(first.local_port));

    let tracer = if with_tracer { Some(Tracer::start()?) } else { None };
    let mut methods = vec![Method::SsKill, Method::SsKill];
    if Path::new(net::CLIENT_SYSFS).join("kernel/sunrpc/xprt-switches").is_dir() {
        methods.push(Method::SysfsDstaddr);
    } else {
        out::log(format!("{}: no /sys/kernel/sunrpc/xprt-switches on this kernel: ss -K only", sc.name));
    }
    let mut result = Ok(());
    for (i, m) in methods.into_iter().enumerate() {
        match reconnect(ns, mnt, i + 1, m) {
            Ok(r) => {
                truth["ports"].as_array_mut().expect("array").push(r["after"].clone());
                truth["reconnects"].as_array_mut().expect("array").push(r);
            }
            Err(e) => {
                result = Err(e.context(format!("reconnect {} ({})", i + 1, m.name())));
                break;
            }
        }
    }
    if let Some(t) = tracer {
        // Give the tracer's reader (it drains the ring buffer periodically)
        // time to print the last reconnect before it is told to stop.
        std::thread::sleep(Duration::from_millis(500));
        *tracer_out = Some(t.stop());
    }
    // After the tracer: prove's reconnects are not the scenario's.
    if with_tracer && result.is_ok() {
        truth["check"] = tools::check(ns).unwrap_or_else(|e| json!({"error": format!("{e:#}")}));
        truth["prove"] = tools::prove(ns, mnt).unwrap_or_else(|e| json!({"error": format!("{e:#}")}));
    }
    result
}

/// Forces one reconnect and returns its ground-truth record.
fn reconnect(ns: &ClientNs, mnt: &Path, n: usize, m: Method) -> Result<Value> {
    let before = net::established(ns)?.context("no ESTAB connection before the reconnect")?;
    let t_start = sys::mono_ns();
    match m {
        Method::SsKill => {
            let killed = net::kill_nfs_connections(ns)?;
            if !killed.iter().any(|s| s.cookie == before.cookie) {
                bail!("ss -K did not report killing sk:{} (it listed {killed:?})", before.cookie);
            }
        }
        Method::SysfsDstaddr => {
            let n = rewrite_dstaddr()?;
            if n == 0 {
                bail!("no sunrpc transport to {SERVER}:2049 under {}/kernel/sunrpc", net::CLIENT_SYSFS);
            }
        }
    }
    // An RPC makes the client reconnect; the write runs in a thread because a
    // hard mount blocks for as long as the server is unreachable.
    let path = mnt.join(format!("reconnect-{n}"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::fs::write(&path, b"x"));
    });
    let start = Instant::now();
    let mut touched = false;
    let mut seen: Vec<Value> = Vec::new();
    let after = loop {
        if !touched {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(r) => {
                    r.context("writing a file to make the client reconnect")?;
                    touched = true;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(e) => bail!("the writer thread died: {e}"),
            }
        }
        let est = net::established(ns)?;
        if let Some(s) = &est {
            if s.cookie != before.cookie && !seen.iter().any(|v| v["sk"] == json!(s.cookie)) {
                seen.push(json!({"port": s.local_port, "sk": s.cookie}));
            }
        }
        match est {
            Some(s) if touched && s.cookie != before.cookie => break s,
            _ if start.elapsed() > RECONNECT_LIMIT => bail!(
                "no new ESTAB connection within {} s (write done: {touched}; old sk:{})",
                RECONNECT_LIMIT.as_secs(),
                before.cookie
            ),
            _ => {
                if touched {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    };
    let t_end = sys::mono_ns();
    out::log(format!(
        "reconnect {n} ({}): port {} -> {} in {:.2} s",
        m.name(),
        before.local_port,
        after.local_port,
        start.elapsed().as_secs_f64()
    ));
    Ok(json!({
        "n": n,
        "method": m.name(),
        "before": before.local_port,
        "after": after.local_port,
        "before_sk": before.cookie,
        "after_sk": after.cookie,
        // Every new ESTAB socket seen while waiting: more than one means the
        // client reconnected more than once.
        "seen": seen,
        "t_start_ns": t_start,
        "t_end_ns": t_end,
    }))
}

/// Writes the server address to `dstaddr` of each client transport to the
/// server's NFS port; returns how many it rewrote.
fn rewrite_dstaddr() -> Result<usize> {
    let root = Path::new(net::CLIENT_SYSFS).join("kernel/sunrpc/xprt-switches");
    let mut n = 0;
    for sw in std::fs::read_dir(&root).with_context(|| format!("cannot read {}", root.display()))? {
        let sw = sw?.path();
        for x in std::fs::read_dir(&sw).with_context(|| format!("cannot read {}", sw.display()))? {
            let x = x?.path();
            if !x.file_name().is_some_and(|f| f.to_string_lossy().starts_with("xprt-")) {
                continue;
            }
            let dst = std::fs::read_to_string(x.join("dstaddr")).unwrap_or_default();
            if dst.trim() != SERVER {
                continue;
            }
            // xprt_info names the port on newer kernels; where it does not,
            // the address alone must do (only the NFS transport is left then).
            let info = std::fs::read_to_string(x.join("xprt_info")).unwrap_or_default();
            let port = info.lines().find_map(|l| l.strip_prefix("dst_port="));
            if port.is_some_and(|p| p.trim() != "2049") {
                continue;
            }
            std::fs::write(x.join("dstaddr"), format!("{SERVER}\n"))
                .with_context(|| format!("cannot write {}/dstaddr", x.display()))?;
            n += 1;
        }
    }
    Ok(n)
}

/// Unmounts and waits until the client has no connection to the NFS port
/// left, so the next scenario starts clean.
fn unmount(ns: &ClientNs, mnt: &Path) -> Result<()> {
    unmount_from(ns, mnt, SERVER)
}

/// [`unmount`] of a mount of `server` made in `ns`.
pub fn unmount_from(ns: &ClientNs, mnt: &Path, server: &str) -> Result<()> {
    umount(ns, mnt)?;
    wait_closed(ns, server, &mnt.to_string_lossy())
}

/// Unmounts `mnt` in `ns`'s mount namespace (a container's, for one of its
/// mounts), detaching it if a plain unmount fails.
pub fn umount(ns: &ClientNs, mnt: &Path) -> Result<()> {
    let m = mnt.to_string_lossy().to_string();
    if let Err(e) = cmd::run(ns.command("/bin/busybox").args(["umount", &m]), MOUNT_LIMIT) {
        out::log(format!("umount {m}: {e:#}; detaching"));
        sys::umount_detach(&m)?;
    }
    Ok(())
}

/// Waits (5 s at most) until `ns` has no connection to `server`'s NFS port
/// left, so the next scenario starts clean; kills what is left then.
pub fn wait_closed(ns: &ClientNs, server: &str, after: &str) -> Result<()> {
    for _ in 0..50 {
        if net::sockets_to(ns, server)?.iter().all(|s| s.state != "ESTAB") {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let left = net::kill_to(ns, server)?;
    out::log(format!("after umount {after}: connections left, killed: {left:?}"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let all = Scenario::all();
        assert_eq!(all.len(), 8);
        assert_eq!(all[0].name, "v3-default");
        let s = Scenario::parse("v4.1-noresvport").unwrap();
        assert_eq!(s.mount_args(), (format!("{SERVER}:/"), "vers=4.1,noresvport".to_string()));
        assert!(Scenario::parse("v5-default").is_err());
        assert!(Scenario::parse("bogus").is_err());
        assert_eq!(
            mount_args("fd00:99::1", "3"),
            ("[fd00:99::1]:/export".to_string(), "vers=3,proto=tcp6,mountproto=tcp6,nolock".to_string())
        );
        assert_eq!(mount_args("fd00:99::1", "4.1"), ("[fd00:99::1]:/".to_string(), "vers=4.1,proto=tcp6".to_string()));
    }
}
