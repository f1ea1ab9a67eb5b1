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
//!   no test mount directory left in /tmp.
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
    let text = cmd::run(ns.command("/usr/sbin/nft").args(["-j", "list", "set", "inet", "experiment", "syns"]), T)?;
    let v: Value = serde_json::from_str(&text).context("nft -j output")?;
    let elems = v["nftables"].as_array().into_iter().flatten().find_map(|o| o["set"]["elem"].as_array().cloned()).unwrap_or_default();
    let mut counts = serde_json::Map::new();
    for e in elems {
        if let (Some(port), Some(n)) = (e["elem"]["val"].as_u64(), e["elem"]["counter"]["packets"].as_u64()) {
            counts.insert(port.to_string(), json!(n));
        }
    }
    Ok(Value::Object(counts))
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
        let t0 = sys::mono_ns();
        let mut proves = Vec::new();
        for (spec, sets) in runs() {
            proves.push(prove(ns, &spec, &sets, true)?);
        }
        // The v4 sets once more as a user runs them: the human table.
        let (spec, sets) = runs().pop().expect("two runs");
        let human = prove(ns, &spec, &sets, false)?;
        let t1 = sys::mono_ns();
        let syns = syn_counts(ns);
        let _ = cmd::run(ns.command("/usr/sbin/nft").args(["delete", "table", "inet", "experiment"]), T);
        let written = writer.finish();
        let after = production_after(ns)?;
        let (left_mounted, left_dirs) = leftovers();
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
            "left_mounted": left_mounted,
            "left_dirs": left_dirs,
            "seconds": (t1 - t0) as f64 / 1e9,
        });
        Ok(())
    })();
    let _ = sys::umount_detach(PROD);
    res
}
