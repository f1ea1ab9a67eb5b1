//! `experiment` (issue 13): `nfs-trace prove --server` beside a production
//! mount that is up and busy.
//!
//! A v4.1 "production" mount writes and syncs a file every 100 ms. prove
//! --server then runs twice from the client namespace (the lab's export is
//! `/export` for v3 and the v4 pseudo-root `/` for v4): the v3 sets, then
//! the v4.0, v4.1 and v4.2 sets, each with and without noresvport.
//!
//! Ground truth, independent of the tracer:
//! - nft in the client namespace counts every SYN to the server's NFS port
//!   per source port (a dynamic set with a counter per element), from just
//!   before the first prove to just after the last: every connect a test
//!   mount made, with its port, however short-lived.
//! - `ss` before and after: the production mount's connection (port and
//!   socket cookie) is the same one, and its writes never failed.
//! - the guest's mount table after: nothing but the production mount, and
//!   no test mount directory left in /tmp; no process's mount table with a
//!   test mount; the client namespace's NFS superblocks
//!   (`/proc/net/nfsfs/volumes`) back to the production mount's.
//! - prove ended by SIGTERM and by SIGKILL while a test mount is up, and
//!   run against an address no server answers (`--timeout 5`): the same
//!   checks afterwards; SIGTERM exits 1 saying "interrupted", the dead
//!   server's mount is given up within the timeout.
//!
//! The v4 sets run a third time without --json: the table a user reads,
//! logged on the console (the README quotes it); its exit status must be
//! the JSON run's.
use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

use super::{
    cmd,
    net::{self, ClientNs, SERVER},
    out, scenario, sys,
    tracer::BINARY,
};

pub const NAME: &str = "experiment";
const PROD: &str = "/mnt/experiment-prod";
const PROD_VERS: &str = "4.1";
/// prove attaches BPF (seconds under TCG), then mounts, reconnects twice
/// and unmounts each set.
const PROVE_LIMIT: Duration = Duration::from_secs(600);
const T: Duration = Duration::from_secs(20);

/// Counts SYNs (not SYN-ACKs) to the server's NFS port per source port.
fn syn_rules() -> String {
    format!(
        "table inet experiment {{
  set syns {{ type inet_service; flags dynamic; size 65535; }}
  chain out {{
    type filter hook output priority 0; policy accept;
    ip daddr {SERVER} tcp dport {} tcp flags & (syn | ack) == syn update @syns {{ tcp sport counter }}
  }}
}}
",
        net::NFS_PORT
    )
}

/// The production connection once the test mounts' are gone (an unmounted
/// test client's socket can outlive prove by a moment).
fn production_after(ns: &ClientNs) -> Result<Option<net::Sock>> {
    let until = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        match net::established_to(ns, SERVER) {
            Err(_) if std::time::Instant::now() < until => std::thread::sleep(Duration::from_millis(200)),
            r => return r,
        }
    }
}

/// Writes and syncs through the production mount until told to stop.
struct Writer {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<Option<String>>,
}

impl Writer {
    fn start(mnt: &Path) -> Writer {
        let (stop, ok, failed) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (s, o, f, path) = (stop.clone(), ok.clone(), failed.clone(), mnt.join("busy"));
        let thread = std::thread::spawn(move || {
            let mut last_err = None;
            let block = vec![0x5a_u8; 64 * 1024];
            while !s.load(Ordering::Relaxed) {
                let r = (|| -> std::io::Result<()> {
                    use std::io::Write as _;
                    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
                    file.write_all(&block)?;
                    file.sync_all()
                })();
                match r {
                    Ok(()) => o.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        last_err = Some(e.to_string());
                        f.fetch_add(1, Ordering::Relaxed)
                    }
                };
                std::thread::sleep(Duration::from_millis(100));
            }
            last_err
        });
        Writer { stop, ok, failed, thread }
    }

    fn finish(self) -> Value {
        self.stop.store(true, Ordering::Relaxed);
        let last_err = self.thread.join().unwrap_or(Some("the writer panicked".into()));
        json!({"ok": self.ok.load(Ordering::Relaxed), "failed": self.failed.load(Ordering::Relaxed), "last_error": last_err})
    }
}

/// The two prove runs: (spec, option sets).
fn runs() -> Vec<(String, Vec<String>)> {
    let (v3_src, v3_opts) = scenario::mount_args(SERVER, "3");
    let v3_sets = vec![v3_opts.clone(), format!("{v3_opts},noresvport")];
    let v4_sets = ["4.0", "4.1", "4.2"].iter().flat_map(|v| [format!("vers={v}"), format!("vers={v},noresvport")]).collect();
    let (v4_src, _) = scenario::mount_args(SERVER, "4.0");
    vec![(v3_src, v3_sets), (v4_src, v4_sets)]
}

fn prove(ns: &ClientNs, spec: &str, sets: &[String], json: bool) -> Result<Value> {
    let mut c = ns.command(BINARY);
    c.args(["prove", "--server", spec, "--yes", "-n", "2", "--timeout", "120", "--sys-root", net::CLIENT_SYSFS]);
    if json {
        c.arg("--json");
    }
    for s in sets {
        c.args(["--options", s]);
    }
    let o = cmd::output(&mut c, PROVE_LIMIT)?;
    if !json {
        // The table a user sees, for the README: on the console.
        for l in o.stdout.lines() {
            out::log(format!("prove: {l}"));
        }
        return Ok(json!({"spec": spec, "exit": o.status.code(), "text": o.stdout}));
    }
    let output = o.stdout.lines().rev().find_map(|l| serde_json::from_str::<Value>(l).ok()).unwrap_or_else(|| json!({"unparsed": o.stdout}));
    Ok(json!({"spec": spec, "sets": sets, "exit": o.status.code(), "output": output, "stderr": o.stderr.trim()}))
}

/// Test mounts any process still has (prove's private namespace is seen
/// through its /proc/PID/mountinfo while it lives).
fn test_mounts_anywhere() -> Vec<String> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if !e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let text = std::fs::read_to_string(e.path().join("mountinfo")).unwrap_or_default();
        v.extend(text.lines().filter(|l| l.contains("/nfs-trace-prove.") && l.contains(" - nfs")).map(str::to_string));
    }
    v.sort();
    v.dedup();
    v
}

/// The NFS superblocks of the client namespace (`/proc/self/net/nfsfs/volumes`
/// read from inside it): a test mount's stays until the last mount of it is
/// gone, whichever namespace that mount was in.
fn volumes(ns: &ClientNs) -> Result<Vec<String>> {
    let text = cmd::run(ns.command("/bin/busybox").args(["cat", "/proc/self/net/nfsfs/volumes"]), T)?;
    Ok(text.lines().skip(1).filter(|l| !l.trim().is_empty()).map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect())
}

/// Waits up to 15 s for the superblocks to be back to `want` lines.
fn volumes_settle(ns: &ClientNs, want: usize) -> Result<Vec<String>> {
    let until = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let v = volumes(ns)?;
        if v.len() <= want || std::time::Instant::now() >= until {
            return Ok(v);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// prove --server ended from outside while a test mount is up: SIGTERM
/// (it must unmount and say so) or SIGKILL (its namespace takes the mount
/// along). Returns what happened; removes the empty directory SIGKILL leaves.
fn interrupted_run(ns: &ClientNs, sig: i32) -> Result<Value> {
    let (spec, _) = scenario::mount_args(SERVER, "4.2");
    let mut child = ns
        .command(BINARY)
        .args(["prove", "--server", &spec, "--yes", "--json", "-n", "20", "--timeout", "120", "--sys-root", net::CLIENT_SYSFS])
        .args(["--options", "vers=4.2", "--options", "vers=4.2,noresvport"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("cannot start prove --server")?;
    let pid = child.id();
    let until = std::time::Instant::now() + Duration::from_secs(120);
    let mut seen = false;
    while std::time::Instant::now() < until && child.try_wait()?.is_none() {
        let mi = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
        if mi.lines().any(|l| l.contains("/nfs-trace-prove.") && l.contains(" - nfs")) {
            seen = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Let a reconnect round start: the signal lands mid-round.
    std::thread::sleep(Duration::from_millis(300));
    sys::kill(pid, sig)?;
    let t = std::time::Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if t.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            break child.wait()?;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read as _;
        let _ = e.read_to_string(&mut err);
    }
    let (_, dirs) = leftovers();
    for d in &dirs {
        let _ = std::fs::remove_dir(Path::new("/tmp").join(d));
    }
    use std::os::unix::process::ExitStatusExt as _;
    Ok(json!({"signal": sig, "mount_seen": seen, "exit": status.code(), "killed_by": status.signal(),
              "exit_s": t.elapsed().as_secs_f64(), "stderr_last": err.lines().last().unwrap_or(""), "dirs_left": dirs}))
}

/// A server nobody answers (an address on the client's link no host has):
/// the mount is given up after --timeout and nothing stays.
fn dead_server(ns: &ClientNs) -> Result<Value> {
    let t = std::time::Instant::now();
    let o = cmd::output(
        ns.command(BINARY).args(["prove", "--server", "10.99.0.77:/", "--yes", "--json", "-n", "1", "--timeout", "5", "--sys-root", net::CLIENT_SYSFS, "--options", "vers=4.2"]),
        PROVE_LIMIT,
    )?;
    let output = o.stdout.lines().rev().find_map(|l| serde_json::from_str::<Value>(l).ok()).unwrap_or_else(|| json!({"unparsed": o.stdout}));
    Ok(json!({"exit": o.status.code(), "seconds": t.elapsed().as_secs_f64(), "output": output}))
}

/// NFS mounts in the guest's mount table, and test mount points left in /tmp.
fn leftovers() -> (Vec<String>, Vec<String>) {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let nfs: Vec<String> = mounts
        .lines()
        .filter(|l| l.split_whitespace().nth(2).is_some_and(|t| t == "nfs" || t == "nfs4"))
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .filter(|m| m != PROD)
        .collect();
    let dirs = std::fs::read_dir("/tmp")
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().to_string()).filter(|n| n.starts_with("nfs-trace-prove.")).collect())
        .unwrap_or_default();
    (nfs, dirs)
}

/// nft's per-port SYN counts.
fn syn_counts(ns: &ClientNs) -> Result<Value> {
    let counts = super::nft_counts::read(ns.command("/usr/sbin/nft"), "experiment", "syns")?;
    Ok(Value::Object(counts.into_iter().map(|(port, n)| (port.to_string(), json!(n))).collect()))
}

pub fn run(ns: &ClientNs, with_tracer: bool) -> bool {
    let mut truth = json!({"kind": "truth", "scenario": NAME, "server": SERVER, "prod_vers": PROD_VERS, "prod": PROD,
                           "tracer": {"ran": with_tracer}, "error": null});
    let res = if with_tracer { run_inner(ns, &mut truth) } else { Ok(()) };
    let ok = res.is_ok();
    if let Err(e) = res {
        truth["error"] = json!(format!("{e:#}"));
    }
    out::emit(&truth);
    ok
}

fn run_inner(ns: &ClientNs, truth: &mut Value) -> Result<()> {
    let (src, opts) = scenario::mount_args(SERVER, PROD_VERS);
    scenario::mount(ns, &src, &opts, Path::new(PROD))?;
    let res = (|| -> Result<()> {
        let before = net::established_to(ns, SERVER)?.context("no ESTAB connection after mounting production")?;
        let writer = Writer::start(Path::new(PROD));
        std::fs::write("/tmp/experiment.nft", syn_rules())?;
        cmd::run(ns.command("/usr/sbin/nft").args(["-f", "/tmp/experiment.nft"]), T).context("loading the SYN counter")?;
        let volumes_before = volumes(ns)?;
        let t0 = sys::mono_ns();
        let mut proves = Vec::new();
        for (spec, sets) in runs() {
            proves.push(prove(ns, &spec, &sets, true)?);
        }
        // The v4 sets once more as a user runs them: the human table.
        let (spec, sets) = runs().pop().expect("two runs");
        let human = prove(ns, &spec, &sets, false)?;
        let sigterm = interrupted_run(ns, libc::SIGTERM)?;
        let sigkill = interrupted_run(ns, libc::SIGKILL)?;
        let dead = dead_server(ns)?;
        let t1 = sys::mono_ns();
        let syns = syn_counts(ns);
        let _ = cmd::run(ns.command("/usr/sbin/nft").args(["delete", "table", "inet", "experiment"]), T);
        let written = writer.finish();
        let after = production_after(ns)?;
        let (left_mounted, left_dirs) = leftovers();
        let volumes_after = volumes_settle(ns, volumes_before.len())?;
        let anywhere = test_mounts_anywhere();
        out::log(format!(
            "experiment: production port {} -> {:?}, writes {}, {:.1} s of prove",
            before.local_port,
            after.as_ref().map(|s| s.local_port),
            written,
            (t1 - t0) as f64 / 1e9
        ));
        truth["experiment"] = json!({
            "prod_before": {"port": before.local_port, "sk": before.cookie},
            "prod_after": after.map(|s| json!({"port": s.local_port, "sk": s.cookie})),
            "writes": written,
            "proves": proves,
            "human": human,
            "syns": syns?,
            "sigterm": sigterm,
            "sigkill": sigkill,
            "dead_server": dead,
            "volumes_before": volumes_before,
            "volumes_after": volumes_after,
            "test_mounts_anywhere": anywhere,
            "left_mounted": left_mounted,
            "left_dirs": left_dirs,
            "seconds": (t1 - t0) as f64 / 1e9,
        });
        Ok(())
    })();
    let _ = sys::umount_detach(PROD);
    res
}
