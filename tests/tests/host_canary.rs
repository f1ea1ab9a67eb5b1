//! The canary connect (issue 12, item 1), against real sockets in a named
//! network namespace of each test's own (the host's firewall is untouched;
//! the namespace, its nft table and its listener go with the fixture).
//! Ground truth: the test's own listener (which peer ports it accepted),
//! an nft counter on the SYNs sent from any port but the test's own, and
//! the test's own connect results. Each tracer runs with `--netns` of its
//! test's namespace, so tests running in parallel never see (nor make
//! canaries for) each other's stalls.
use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    process::Command,
    sync::{Arc, Mutex},
    thread,
    time::Duration,
};

use nfs_trace_tests::host::*;
use serde_json::Value;
use socket2::SockAddr;

/// Bounds the waits for what the tracer does by itself (a stall report
/// about 1 s into a stalled connect, a canary up to 3 s after). Not a
/// timing assertion: the assertions are on what arrived.
const WAIT: Duration = Duration::from_secs(30);

/// A named network namespace (`ip netns add`), so that the tracer's canary
/// can enter it through /run/netns; deleted on drop with everything in it.
struct NamedNetns {
    name: String,
    path: String,
    ino: u64,
}

impl NamedNetns {
    fn new(tag: &str) -> NamedNetns {
        require_root();
        assert!(
            Command::new("nft").arg("--version").output().is_ok_and(|o| o.status.success()),
            "nft is missing: apt install nftables (cargo xtask setup does)"
        );
        let name = format!("nfstrace-canary-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        run_ok(Command::new("ip").args(["-n", &name, "link", "set", "lo", "up"]));
        let path = format!("/run/netns/{name}");
        use std::os::unix::fs::MetadataExt;
        let ino = std::fs::metadata(&path).unwrap().ino();
        NamedNetns { name, path, ino }
    }

    /// Runs `f` on a thread that entered the namespace (sockets it makes
    /// live there for good; processes it starts, such as nft, run there).
    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        use std::os::fd::AsRawFd;
        thread::scope(|sc| {
            sc.spawn(|| {
                let ns = std::fs::File::open(&self.path).unwrap();
                // SAFETY: a valid namespace fd; only this scoped thread moves.
                let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns {}: {}", self.path, std::io::Error::last_os_error());
                f()
            })
            .join()
            .expect("thread in the test netns panicked")
        })
    }
}

impl Drop for NamedNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// A listener that accepts and keeps every connection, and remembers the
/// peer port of each: which connects really reached the server.
struct AcceptLog {
    peers: Arc<Mutex<Vec<u16>>>,
}

impl AcceptLog {
    fn start(addr: &str) -> AcceptLog {
        let l = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind listener {addr}: {e}"));
        let peers = Arc::new(Mutex::new(Vec::new()));
        let p = peers.clone();
        thread::spawn(move || {
            let mut keep: Vec<TcpStream> = Vec::new();
            // The address accept() gives: a connect the client reset
            // before it was accepted has no peer_addr() any more.
            while let Ok((s, peer)) = l.accept() {
                p.lock().unwrap().push(peer.port());
                keep.push(s);
            }
        });
        AcceptLog { peers }
    }

    fn peers(&self) -> Vec<u16> {
        self.peers.lock().unwrap().clone()
    }
}

/// The nft table of a test: SYNs to `server:2049` from any port but the
/// test's own (`own`) are counted (they can only be a canary's); SYNs from
/// the ports in set `stalled` are dropped (the middlebox still holding
/// their old flow), or, with `drop_all`, every SYN to the port is.
fn rules(server: &str, own: &[u16], drop_all: bool) -> String {
    let own: Vec<String> = own.iter().map(u16::to_string).collect();
    let own = own.join(", ");
    let drop = if drop_all {
        format!("  ip daddr {server} tcp dport 2049 tcp flags & (syn | ack) == syn drop\n")
    } else {
        format!("  ip daddr {server} tcp dport 2049 tcp flags & (syn | ack) == syn tcp sport @stalled drop\n")
    };
    format!(
        "table inet nfstrace_canary {{\n counter other_syns {{}}\n set stalled {{ type inet_service; elements = {{ {own} }} }}\n chain out {{\n  type filter hook output priority 0;\n  ip daddr {server} tcp dport 2049 tcp flags & (syn | ack) == syn tcp sport != {{ {own} }} counter name \"other_syns\"\n{drop} }}\n}}\n"
    )
}

/// SYNs counted by `other_syns` (run inside the namespace).
fn other_syns() -> u64 {
    let out = run_ok(Command::new("nft").args(["list", "counter", "inet", "nfstrace_canary", "other_syns"]));
    let i = out.find("packets ").unwrap_or_else(|| panic!("no packet count in {out}"));
    out[i + 8..].split_whitespace().next().unwrap().parse().unwrap()
}

/// A socket bound to `local` in the namespace, connecting on a thread of
/// its own (it blocks while its SYNs are dropped). Returns the connect's
/// result once the filter lets it through.
fn reconnect(ns: &NamedNetns, dst: &str, local: &str) -> thread::JoinHandle<std::io::Result<()>> {
    let dst: SocketAddr = dst.parse().unwrap();
    let local: SocketAddr = local.parse().unwrap();
    let s = ns.run(|| client_socket(&dst, Some(local)));
    thread::spawn(move || {
        let r = s.connect(&SockAddr::from(dst));
        if r.is_ok() {
            abort(&s);
        }
        r
    })
}

fn of_type<'a>(recs: &'a [Value], kind: &str, raddr: &str) -> Vec<&'a Value> {
    recs.iter().filter(|r| r["type"] == kind && r["raddr"] == raddr).collect()
}

/// What "the canary never counts as NFS traffic" means to a user: no
/// record but the `canary` one carries its port, and the summary counts
/// only the test's own connects.
fn assert_canary_not_counted(recs: &Records, raddr: &str, canary_sport: u64, own_connects: u64) {
    let theirs: Vec<&Value> =
        recs.all.iter().filter(|r| r["type"] != "canary" && r["raddr"] == raddr && r["sport"] == canary_sport).collect();
    assert!(theirs.is_empty(), "the canary's own connect/close made records: {theirs:?}");
    let row = recs.summary_for(raddr, 2049).expect("summary row");
    assert_eq!(row["connects"].as_u64(), Some(own_connects), "only the test's connects are counted: {row}");
    assert_eq!(row["failed"].as_u64(), Some(0), "{row}");
    assert_eq!(row["distinct_ports"].as_u64(), Some(1), "{row}");
}

/// The vendor signature, established by the tool itself: the reused flow
/// stalls while a fresh port gets through. One canary, from another port,
/// made in the stalled flow's namespace (only there does anything listen),
/// connected; its connect and close counted nowhere (records, summary,
/// metrics).
#[test]
fn a_stall_gets_one_canary_that_connects_from_a_fresh_port() {
    let ns = NamedNetns::new("ok");
    let srv = ns.run(|| AcceptLog::start("127.0.6.1:2049"));
    // --events: the run is replayed by `report` below (issue 16).
    let mut tracer = Tracer::start(&["--netns", &ns.path, "--metrics", "0", "--events"]);
    let metrics = tracer.attached["metrics"].as_str().unwrap().to_string();
    assert_eq!(tracer.attached["canaries"], true, "{}", tracer.attached);
    ns.run(|| {
        connect_and_abort("127.0.6.1:2049", Some("127.0.6.1:41061"));
        nft(&rules("127.0.6.1", &[41061], false));
    });
    let stalled = reconnect(&ns, "127.0.6.1:2049", "127.0.6.1:41061");
    let canary = tracer.wait_for(WAIT, |r| r["type"] == "canary" && r["raddr"] == "127.0.6.1");
    let syns = ns.run(other_syns);
    ns.run(|| nft("delete table inet nfstrace_canary\n"));
    stalled.join().unwrap().expect("the stalled connect gets through once the filter is gone");
    let ended = tracer.wait_for(WAIT, |r| r["type"] == "stall_end" && r["raddr"] == "127.0.6.1");
    let body = scrape_metrics(&metrics);
    let recs = tracer.stop();
    let canary = canary.unwrap_or_else(|| panic!("no canary record: {:?}\n{}", recs.all, recs.stderr));
    assert!(ended.is_some(), "the stall ended: {:?}", recs.all);

    let peers = srv.peers();
    let fresh: Vec<u16> = peers.iter().copied().filter(|&p| p != 41061).collect();
    assert_eq!(fresh.len(), 1, "the server accepted exactly one connect from another port: {peers:?}");
    assert_eq!(syns, 1, "one SYN from another port left the namespace (the canary's)");
    assert_eq!(canary["sport"].as_u64(), Some(u64::from(fresh[0])), "the canary's port is the one the server saw: {canary}");
    assert_eq!(canary["outcome"], "connected", "{canary}");
    assert!(canary["rtt_ms"].as_f64().is_some_and(|v| v >= 0.0), "{canary}");
    assert_eq!(canary["laddr"], "127.0.6.1");
    assert_eq!(canary["dport"], 2049);
    assert_eq!(canary["netns"].as_u64(), Some(ns.ino), "made in the stalled flow's namespace: {canary}");
    assert_eq!(canary["stalled_sport"], 41061, "{canary}");
    assert!(canary["start"].is_string() && canary["end"].is_string(), "{canary}");
    assert!(!of_type(&recs.all, "stall", "127.0.6.1").is_empty(), "the tracer reported the stall");
    assert_eq!(of_type(&recs.all, "canary", "127.0.6.1").len(), 1, "{:?}", recs.all);
    // Issue 12: the canary got through while the reused flow stalled: that
    // is the proof, and the episode's verdict says so.
    let eps = of_type(&recs.all, "episode", "127.0.6.1");
    let last = eps.last().unwrap_or_else(|| panic!("no episode: {:?}", recs.all));
    assert_eq!(last["verdict"], "reused-flow-dropped", "{last}");
    assert!(last["evidence"].as_str().unwrap_or_default().contains("41061"), "names the reused port: {last}");

    assert_canary_not_counted(&recs, "127.0.6.1", u64::from(fresh[0]), 2);
    let line = |name: &str| {
        body.lines()
            .find(|l| l.starts_with(name) && l.contains("raddr=\"127.0.6.1\""))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    assert_eq!(line("nfs_trace_connects_total{"), Some(2), "metrics count the test's two connects only:\n{body}");
    assert_eq!(line("nfs_trace_connect_failures_total{"), Some(0), "{body}");
    assert!(
        recs.stderr.contains("canary connects: on (one per stalled server per 10 s; --passive turns them off)"),
        "the start line says canaries happen: {}",
        recs.stderr
    );

    // Issue 16: the recording replays to the same episodes, verdict and
    // summary, and its page shows the verdict, the reused port and the canary.
    let dir = std::env::temp_dir().join(format!("nfs-trace-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("stall.jsonl");
    assert_replay_matches(&recs, &file);
    let html = dir.join("stall.html");
    report(&[file.to_str().unwrap(), "--html", html.to_str().unwrap()]);
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("reused-flow-dropped") && page.contains(last["start"].as_str().unwrap()), "the page holds the verdict and its start");
    assert!(page.contains(":41061"), "the page names the reused port");
    assert!(page.contains("canary connect from :") && page.contains(&format!(":{}", fresh[0])), "the page shows the canary and its port");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A path that drops every SYN to the port: the canary fails too, after
/// its timeout, and is reported `timed_out`; its SYNs left the namespace
/// (counted) but reached nothing, and its failed connect is no failed
/// connect of the server's.
#[test]
fn a_canary_that_gets_no_answer_times_out() {
    let ns = NamedNetns::new("drop");
    let srv = ns.run(|| AcceptLog::start("127.0.6.2:2049"));
    let mut tracer = Tracer::start(&["--netns", &ns.path]);
    ns.run(|| {
        connect_and_abort("127.0.6.2:2049", Some("127.0.6.2:41062"));
        nft(&rules("127.0.6.2", &[41062], true));
    });
    let stalled = reconnect(&ns, "127.0.6.2:2049", "127.0.6.2:41062");
    let canary = tracer.wait_for(WAIT, |r| r["type"] == "canary" && r["raddr"] == "127.0.6.2");
    let syns = ns.run(other_syns);
    ns.run(|| nft("delete table inet nfstrace_canary\n"));
    stalled.join().unwrap().expect("the stalled connect gets through once the filter is gone");
    tracer.wait_for(WAIT, |r| r["type"] == "stall_end" && r["raddr"] == "127.0.6.2");
    let recs = tracer.stop();
    let canary = canary.unwrap_or_else(|| panic!("no canary record: {:?}\n{}", recs.all, recs.stderr));
    assert_eq!(canary["outcome"], "timed_out", "{canary}");
    // The canary failed too: the server or the path is down, not a reuse.
    let eps = of_type(&recs.all, "episode", "127.0.6.2");
    assert!(
        eps.iter().any(|e| e["verdict"] == "server-or-path-down") && !eps.iter().any(|e| e["verdict"] == "reused-flow-dropped"),
        "{eps:?}"
    );
    assert!(canary["rtt_ms"].is_null(), "{canary}");
    let sport = canary["sport"].as_u64().unwrap();
    assert_ne!(sport, 41062, "a fresh port, not the stalled one");
    assert!(syns >= 1, "the canary's SYN(s) left the namespace: {syns}");
    assert_eq!(canary["netns"].as_u64(), Some(ns.ino), "{canary}");
    assert_eq!(srv.peers(), vec![41062, 41062], "only the test's own connects reached the server");
    assert_eq!(of_type(&recs.all, "canary", "127.0.6.2").len(), 1);
    assert_canary_not_counted(&recs, "127.0.6.2", sport, 2);
}

/// `--passive`: the stall is reported and nothing else connects: no canary
/// record, no SYN from another port, nothing more accepted.
#[test]
fn passive_makes_no_canary() {
    let ns = NamedNetns::new("passive");
    let srv = ns.run(|| AcceptLog::start("127.0.6.3:2049"));
    let mut tracer = Tracer::start(&["--netns", &ns.path, "--passive"]);
    assert_eq!(tracer.attached["canaries"], false, "{}", tracer.attached);
    ns.run(|| {
        connect_and_abort("127.0.6.3:2049", Some("127.0.6.3:41063"));
        nft(&rules("127.0.6.3", &[41063], false));
    });
    let stalled = reconnect(&ns, "127.0.6.3:2049", "127.0.6.3:41063");
    // A canary would go at the first stall report and take a loopback RTT;
    // the second retransmit's report comes a second later.
    let second = tracer.wait_for(WAIT, |r| r["type"] == "stall" && r["raddr"] == "127.0.6.3" && r["retransmits"].as_u64() >= Some(2));
    let syns = ns.run(other_syns);
    ns.run(|| nft("delete table inet nfstrace_canary\n"));
    stalled.join().unwrap().expect("connects once the filter is gone");
    let recs = tracer.stop();
    assert!(second.is_some(), "the stall was reported: {:?}", recs.all);
    assert_eq!(syns, 0, "no SYN from any other port: no canary connect");
    assert_eq!(srv.peers(), vec![41063, 41063], "only the test's own connects reached the server");
    assert!(recs.all.iter().all(|r| r["type"] != "canary"), "{:?}", recs.all);
    assert!(recs.stderr.contains("canary connects: off (--passive)"), "{}", recs.stderr);
}

/// Two stalls to the same server within 10 s: one canary. The first stall
/// ends (its port let through) before the second begins, so they are two
/// stalls (the summary lists both), each reported again at every SYN
/// retransmit: each report asks for a canary, one is made.
#[test]
fn two_stalls_to_one_server_within_10_s_get_one_canary() {
    let ns = NamedNetns::new("rate");
    let srv = ns.run(|| AcceptLog::start("127.0.6.4:2049"));
    let mut tracer = Tracer::start(&["--netns", &ns.path]);
    ns.run(|| {
        connect_and_abort("127.0.6.4:2049", Some("127.0.6.4:41064"));
        connect_and_abort("127.0.6.4:2049", Some("127.0.6.4:41065"));
        nft(&rules("127.0.6.4", &[41064, 41065], false));
    });
    let a = reconnect(&ns, "127.0.6.4:2049", "127.0.6.4:41064");
    let canary = tracer.wait_for(WAIT, |r| r["type"] == "canary" && r["raddr"] == "127.0.6.4");
    ns.run(|| nft("delete element inet nfstrace_canary stalled { 41064 }\n"));
    a.join().unwrap().expect("the first stalled connect gets through");
    let first_end = tracer.wait_for(WAIT, |r| r["type"] == "stall_end" && r["raddr"] == "127.0.6.4");
    let b = reconnect(&ns, "127.0.6.4:2049", "127.0.6.4:41065");
    let second = tracer.wait_for(WAIT, |r| {
        r["type"] == "stall" && r["raddr"] == "127.0.6.4" && r["sport"] == 41065 && r["retransmits"].as_u64() >= Some(2)
    });
    let syns = ns.run(other_syns);
    ns.run(|| nft("delete table inet nfstrace_canary\n"));
    b.join().unwrap().expect("the second stalled connect gets through");
    tracer.wait_for(WAIT, |r| r["type"] == "stall_end" && r["raddr"] == "127.0.6.4" && r["sport"] == 41065);
    let recs = tracer.stop();
    let canary = canary.unwrap_or_else(|| panic!("no canary record: {:?}\n{}", recs.all, recs.stderr));
    assert!(first_end.is_some(), "{:?}", recs.all);
    let second = second.unwrap_or_else(|| panic!("the second stall was reported: {:?}", recs.all));
    let gap = second["mono_ns"].as_u64().unwrap().saturating_sub(canary["mono_ns"].as_u64().unwrap());
    assert!(gap < 10_000_000_000, "precondition: the second stall came within 10 s of the canary ({gap} ns); the machine was too slow");
    let stalls: Vec<&Value> =
        recs.summary()["stalls"].as_array().unwrap().iter().filter(|s| s["raddr"] == "127.0.6.4").collect();
    assert_eq!(stalls.len(), 2, "two stalls: {stalls:?}");
    assert_eq!(of_type(&recs.all, "canary", "127.0.6.4").len(), 1, "one canary per server per 10 s: {:?}", recs.all);
    assert_eq!(syns, 1, "one SYN from another port: one canary connect");
    let peers = srv.peers();
    assert_eq!(peers.iter().filter(|&&p| p != 41064 && p != 41065).count(), 1, "{peers:?}");
}
