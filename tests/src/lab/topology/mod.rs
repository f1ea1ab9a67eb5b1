//! The topology scenarios (issue 11, item 5): several transports to one
//! server at once — `nconnect`, two mounts of one server (`shared-server`),
//! a container with its own network and mount namespace (`netns`), IPv6.
//!
//! Each starts the tracer first (so the mounts' first connects are seen
//! too), mounts, brings every transport up, tells from mountstats and sysfs
//! which socket is whose, then kills one socket at a time with `ss -K` (in
//! its namespace) and waits until `ss` shows it re-established. The truth
//! record lists every transport and reconnect; `xtask/src/vm/topology`
//! judges the tracer's records against it.
pub mod ipv6;
pub mod nconnect;
pub mod netns;
pub mod owners;
pub mod shared;

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::{
    net::{self, ClientNs, Sock},
    out, scenario, sys,
    tracer::Tracer,
};
use owners::View;

pub const NAMES: &[&str] = &[nconnect::NAME, shared::NAME, netns::NAME, ipv6::NAME];

/// Runs the scenario called `name` (one of [`NAMES`]).
pub fn run_named(name: &str, ns: &ClientNs, with_tracer: bool) -> bool {
    match name {
        nconnect::NAME => nconnect::run(ns, with_tracer),
        shared::NAME => shared::run(ns, with_tracer),
        netns::NAME => netns::run(ns, with_tracer),
        ipv6::NAME => ipv6::run(ns, with_tracer),
        _ => cannot_run(name, "no such topology scenario"),
    }
}

/// A client's namespaces, as the truth names them.
pub struct Place<'a> {
    pub ns: &'a ClientNs,
    /// `client` (the lab's client netns) or `container`.
    pub name: &'static str,
    /// Where this place's mountinfo and mountstats are read (`/proc/self`,
    /// or a container's `/proc/PID`).
    pub proc_dir: PathBuf,
    /// A sysfs instance of this network namespace (its sunrpc transports).
    pub sysfs: Option<PathBuf>,
}

impl<'a> Place<'a> {
    /// The lab's client namespace (the guest init's mount namespace).
    pub fn client(ns: &'a ClientNs) -> Place<'a> {
        Place { ns, name: "client", proc_dir: PathBuf::from("/proc/self"), sysfs: Some(PathBuf::from(net::CLIENT_SYSFS)) }
    }
}

/// The truth record of a scenario that could not start.
pub fn cannot_run(name: &str, why: &str) -> bool {
    out::emit(&json!({"kind": "truth", "scenario": name, "topology": true, "mounts": [], "transports": [],
                      "reconnects": [], "tracer": {"ran": false}, "error": why}));
    false
}

/// One mount to make.
pub struct MountSpec<'a> {
    pub place: &'a Place<'a>,
    pub mnt: PathBuf,
    pub vers: &'static str,
    pub server: &'static str,
    pub client: &'static str,
    pub src: String,
    pub opts: String,
    /// Transports the mount has (its `nconnect`, 1 without).
    pub transports: usize,
}

impl<'a> MountSpec<'a> {
    /// `vers` of `server`'s root export (or of `export`, a path below it),
    /// with extra mount options.
    pub fn new(place: &'a Place<'a>, name: &str, vers: &'static str, server: &'static str, client: &'static str, extra: &str) -> Self {
        let (src, mut opts) = scenario::mount_args(server, vers);
        let mut transports = 1;
        if !extra.is_empty() {
            opts += &format!(",{extra}");
            transports = extra.split(',').find_map(|o| o.strip_prefix("nconnect=")?.parse().ok()).unwrap_or(1);
        }
        MountSpec { place, mnt: PathBuf::from(format!("/mnt/{name}")), vers, server, client, src, opts, transports }
    }

    /// The same mount of the export at `sub` below the root export.
    pub fn of_export(mut self, sub: &str) -> Self {
        self.src = format!("{}/{sub}", self.src.trim_end_matches('/'));
        self
    }

    fn mountpoint(&self) -> String {
        self.mnt.to_string_lossy().into_owned()
    }
}

/// A live transport: which mount, its current socket.
#[derive(Debug, Clone)]
struct Transport {
    mount: usize,
    sock: Sock,
}

const CONNECT_LIMIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);

/// Runs one topology scenario: `order` lists, per reconnect, the mount
/// whose next transport (round robin over its transports) is killed.
/// `extra` runs after the tracer stopped, before unmounting, and adds to
/// the truth record. Emits the truth record; returns whether it ran through.
pub fn run(
    name: &str,
    mounts: &[MountSpec],
    order: &[usize],
    with_tracer: bool,
    extra: &dyn Fn(&mut Value) -> Result<()>,
) -> bool {
    let t0 = sys::uptime();
    let mut truth = json!({
        "kind": "truth",
        "scenario": name,
        "topology": true,
        "mounts": mounts.iter().map(|m| json!({
            "mountpoint": m.mnt, "vers": m.vers, "server": m.server, "client": m.client,
            "place": m.place.name, "netns": m.place.ns.inode().ok(), "mount_options": m.opts,
            "src": m.src, "transports": m.transports,
        })).collect::<Vec<_>>(),
        "transports": [],
        "reconnects": [],
        "tracer": {"ran": false},
        "error": null,
    });
    let tracer = if with_tracer {
        match Tracer::start() {
            Ok(t) => Some(t),
            Err(e) => {
                truth["error"] = json!(format!("{e:#}"));
                out::emit(&truth);
                return false;
            }
        }
    } else {
        None
    };
    let mut res = run_inner(mounts, order, with_tracer, &mut truth);
    if let Some(t) = tracer {
        // The reader drains every 20 ms: let it print the last reconnect.
        std::thread::sleep(Duration::from_millis(300));
        truth["tracer"] = t.stop().emit(name);
    }
    if res.is_ok() && with_tracer {
        res = extra(&mut truth);
    }
    // All unmounted first: a server's connections close only when no mount
    // of it is left in that namespace.
    for m in mounts.iter().rev() {
        if let Err(e) = scenario::umount(m.place.ns, &m.mnt) {
            out::log(format!("{name}: {e:#}"));
        }
    }
    for (i, m) in mounts.iter().enumerate() {
        let first = !mounts[..i].iter().any(|o| std::ptr::eq(o.place, m.place) && o.server == m.server);
        if first && let Err(e) = scenario::wait_closed(m.place.ns, m.server, name) {
            out::log(format!("{name}: {e:#}"));
        }
    }
    truth["guest_s"] = json!(((sys::uptime() - t0) * 10.0).round() / 10.0);
    let ok = res.is_ok();
    if let Err(e) = res {
        truth["error"] = json!(format!("{e:#}"));
    }
    out::emit(&truth);
    ok
}

/// The tracer re-reads the mount table every second.
const TRACER_MOUNT_READ: Duration = Duration::from_millis(1200);

fn run_inner(mounts: &[MountSpec], order: &[usize], with_tracer: bool, truth: &mut Value) -> Result<()> {
    for (i, m) in mounts.iter().enumerate() {
        if i > 0 && with_tracer {
            // Let the tracer know the earlier mounts before this one's
            // transports first connect: a transport whose own mount is not
            // known yet must not be credited to the one mount it does know
            // (issue 11 saw exactly that at mount time).
            std::thread::sleep(TRACER_MOUNT_READ);
        }
        let t = Instant::now();
        scenario::mount(m.place.ns, &m.src, &m.opts, &m.mnt)?;
        let want = expected_sockets(mounts, i, i + 1);
        connect_all(m, want)?;
        out::log(format!("{}: mounted and {} transport(s) up in {:.1} s", m.mountpoint(), m.transports, t.elapsed().as_secs_f64()));
    }
    let mut live = transports(mounts)?;
    for t in &live {
        truth["transports"].as_array_mut().expect("array").push(owner_record(mounts, t.mount, t.sock.local_port, &t.sock)?);
    }
    let mut picks = vec![0usize; mounts.len()];
    for (n, &mi) in order.iter().enumerate() {
        let mine: Vec<usize> = (0..live.len()).filter(|i| live[*i].mount == mi).collect();
        let Some(&ti) = mine.get(picks[mi] % mine.len().max(1)) else {
            bail!("{} has no live transport to reconnect", mounts[mi].mountpoint());
        };
        picks[mi] += 1;
        let r = reconnect(mounts, &live, ti, n + 1).with_context(|| format!("reconnect {} ({})", n + 1, mounts[mi].mountpoint()))?;
        live[ti].sock = r.1;
        truth["reconnects"].as_array_mut().expect("array").push(r.0);
    }
    Ok(())
}

/// Sockets to mount `upto - 1`'s server in its place once mounts
/// `..upto` are up: the sum of the transports of those sharing both.
fn expected_sockets(mounts: &[MountSpec], of: usize, upto: usize) -> usize {
    let m = &mounts[of];
    mounts[..upto]
        .iter()
        .filter(|o| std::ptr::eq(o.place, m.place) && o.server == m.server)
        .map(|o| o.transports)
        .sum()
}

fn established(m: &MountSpec) -> Result<Vec<Sock>> {
    Ok(net::sockets_to(m.place.ns, m.server)?.into_iter().filter(|s| s.state == "ESTAB").collect())
}

/// RPCs on `m` until `want` sockets to its server are ESTABLISHED in its
/// place: nconnect's transports connect on first use, round robin.
fn connect_all(m: &MountSpec, want: usize) -> Result<()> {
    let writer = Writer::start(m, "up");
    let start = Instant::now();
    let res = loop {
        let n = established(m)?.len();
        if n == want {
            break Ok(());
        }
        if n > want {
            break Err(anyhow::anyhow!("{n} ESTAB sockets to {}, want {want}", m.server));
        }
        if start.elapsed() > CONNECT_LIMIT {
            break Err(anyhow::anyhow!("only {n} of {want} sockets to {} up after {} s", m.server, CONNECT_LIMIT.as_secs()));
        }
        std::thread::sleep(POLL);
    };
    writer.stop();
    res
}

/// Every ESTABLISHED socket of every mount's place and server, with its
/// mount by mountstats (which the scenario then trusts; the host compares it with sysfs).
fn transports(mounts: &[MountSpec]) -> Result<Vec<Transport>> {
    let mut out: Vec<Transport> = Vec::new();
    for (i, m) in mounts.iter().enumerate() {
        for s in established(m)? {
            if out.iter().any(|t| t.sock.cookie == s.cookie) {
                continue;
            }
            let (ms, _) = owners_of(mounts, i, s.local_port)?;
            let Some(mount) = ms else {
                bail!("mountstats tells no mount for the socket from port {} to {}", s.local_port, m.server);
            };
            out.push(Transport { mount, sock: s });
        }
    }
    for (i, m) in mounts.iter().enumerate() {
        let n = out.iter().filter(|t| t.mount == i).count();
        if n != m.transports {
            bail!("{} has {n} sockets by mountstats, want {} (sockets: {out:?})", m.mountpoint(), m.transports);
        }
    }
    Ok(out)
}

/// Views of the mounts sharing mount `of`'s place and server, and the
/// owners of `port` among all mounts (by mountstats, by sysfs).
fn owners_of(mounts: &[MountSpec], of: usize, port: u16) -> Result<(Option<usize>, Option<usize>)> {
    let m = &mounts[of];
    let peers: Vec<usize> =
        (0..mounts.len()).filter(|i| std::ptr::eq(mounts[*i].place, m.place) && mounts[*i].server == m.server).collect();
    let mut views = Vec::new();
    for &i in &peers {
        views.push(view(&mounts[i])?);
    }
    Ok((owners::by_mountstats(&views, port).map(|k| peers[k]), owners::by_sysfs(&views, port).map(|k| peers[k])))
}

fn view(m: &MountSpec) -> Result<View> {
    let read = |f: &str| {
        let p = m.place.proc_dir.join(f);
        std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))
    };
    let mnt = m.mountpoint();
    let remembered = owners::remembered_ports(&read("mountstats")?, &mnt);
    let sysfs = match (&m.place.sysfs, owners::device(&read("mountinfo")?, &mnt)) {
        (Some(root), Some(dev)) => owners::sysfs_ports(root, &dev),
        _ => None,
    };
    Ok(View { remembered, sysfs })
}

/// Whether the kernel keeps `/sys/fs/nfs/<maj:min>` for the mount (6.4+):
/// then sysfs must name each of its sockets' owner.
fn has_sysfs_dir(m: &MountSpec) -> bool {
    let mi = std::fs::read_to_string(m.place.proc_dir.join("mountinfo")).unwrap_or_default();
    match (&m.place.sysfs, owners::device(&mi, &m.mountpoint())) {
        (Some(root), Some(dev)) => root.join("fs/nfs").join(dev).is_dir(),
        _ => false,
    }
}

/// `{mount, port, sk, by_mountstats, by_sysfs, sysfs_dir}` for the truth record.
fn owner_record(mounts: &[MountSpec], of: usize, port: u16, s: &Sock) -> Result<Value> {
    let (ms, sy) = owners_of(mounts, of, port)?;
    let name = |i: Option<usize>| i.map(|i| json!(mounts[i].mountpoint())).unwrap_or(Value::Null);
    Ok(json!({"mount": mounts[of].mountpoint(), "port": port, "sk": s.cookie,
              "by_mountstats": name(ms), "by_sysfs": name(sy), "sysfs_dir": has_sysfs_dir(&mounts[of])}))
}

/// Kills transport `ti`'s socket and waits for its replacement: the one new
/// ESTABLISHED socket in its place, with all the others still there.
fn reconnect(mounts: &[MountSpec], live: &[Transport], ti: usize, n: usize) -> Result<(Value, Sock)> {
    let t = &live[ti];
    let m = &mounts[t.mount];
    let before = &t.sock;
    let known: Vec<String> = established(m)?.into_iter().map(|s| s.cookie).collect();
    if !known.contains(&before.cookie) {
        bail!("sk:{} (port {}) is no longer ESTAB before its reconnect", before.cookie, before.local_port);
    }
    let want = known.len();
    let t_start = sys::mono_ns();
    let killed = net::kill_flow(m.place.ns, m.server, before.local_port)?;
    // Only the one live socket: a TIME-WAIT left from that port by an
    // earlier scenario may be listed too, and does not matter.
    let live_killed: Vec<&Sock> = killed.iter().filter(|s| s.state == "ESTAB").collect();
    if !killed.iter().any(|s| s.cookie == before.cookie) || live_killed.len() != 1 {
        bail!("ss -K of port {} killed {killed:?}, want exactly sk:{}", before.local_port, before.cookie);
    }
    let writer = Writer::start(m, &format!("rc{n}"));
    let start = Instant::now();
    let mut seen: Vec<Value> = Vec::new();
    let res = loop {
        let est = established(m)?;
        let new: Vec<&Sock> = est.iter().filter(|s| !known.contains(&s.cookie)).collect();
        for s in &new {
            if !seen.iter().any(|v| v["sk"] == json!(s.cookie)) {
                seen.push(json!({"port": s.local_port, "sk": s.cookie}));
            }
        }
        if est.len() == want && !est.iter().any(|s| s.cookie == before.cookie) && new.len() == 1 {
            break Ok(new[0].clone());
        }
        if start.elapsed() > CONNECT_LIMIT {
            break Err(anyhow::anyhow!(
                "not re-established within {} s (ss: {est:?}, killed sk:{})",
                CONNECT_LIMIT.as_secs(),
                before.cookie
            ));
        }
        std::thread::sleep(POLL);
    };
    writer.stop();
    let after = res?;
    let t_end = sys::mono_ns();
    let own = owner_record(mounts, t.mount, after.local_port, &after)?;
    out::log(format!(
        "{} reconnect {n}: port {} -> {} in {:.2} s",
        m.mountpoint(),
        before.local_port,
        after.local_port,
        start.elapsed().as_secs_f64()
    ));
    let rec = json!({
        "n": n, "mount": m.mountpoint(), "place": m.place.name, "netns": m.place.ns.inode().ok(),
        "server": m.server, "client": m.client,
        "before": before.local_port, "after": after.local_port, "before_sk": before.cookie, "after_sk": after.cookie,
        "seen": seen, "t_start_ns": t_start, "t_end_ns": t_end,
        "by_mountstats": own["by_mountstats"], "by_sysfs": own["by_sysfs"], "sysfs_dir": own["sysfs_dir"],
    });
    Ok((rec, after))
}

/// Creates files on a mount, one after another, until stopped: each is a
/// few RPCs, and nconnect hands new RPCs to its transports in turn, so a
/// killed transport gets one soon. It runs in a process of the mount's
/// place (a container's mount is visible only there); a write blocks while
/// its transport is down, which is why this is not the poller itself.
struct Writer {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Writer {
    fn start(m: &MountSpec, tag: &str) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let dir = m.mnt.clone();
        let tag = tag.to_string();
        let mut cmd = m.place.ns.command("/bin/sh");
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            // One shell per burst of creates: starting a process per file
            // would dominate under TCG.
            let script = format!("for i in 1 2 3 4 5 6 7 8; do echo x > {}/{tag}-$$-$i; done", dir.display());
            cmd.args(["-c", &script]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
            while !flag.load(Ordering::Relaxed) {
                if cmd.status().is_err() {
                    break;
                }
            }
        });
        Writer { stop, thread }
    }

    /// Stops it; waits for its last burst (which ends once the transports
    /// are up), so the next step starts quiet. A burst still blocked after
    /// [`CONNECT_LIMIT`] (a transport that never came back) is left behind:
    /// the step has failed already.
    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let start = Instant::now();
        while !self.thread.is_finished() {
            if start.elapsed() > CONNECT_LIMIT {
                out::log("a writer still blocks: left behind");
                return;
            }
            std::thread::sleep(POLL);
        }
        let _ = self.thread.join();
    }
}
