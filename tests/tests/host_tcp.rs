//! The TCP reconnect tracer on the host kernel, against real sockets. The
//! ground truth is each test socket's own `local_addr()` and connect result.
use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use nfs_trace_tests::host::*;
use serde_json::Value;
use socket2::SockAddr;

/// One test of this file at a time. Each starts a tracer, and every tracer
/// sees every test's sockets: run side by side, one test's tracer made
/// canary connects into another's namespace and its filter ran on the
/// other's connects, and fresh-clone runs on 2026-12-07 twice lost a SYN
/// retransmit or a connect made in a timer's softirq. A test that fails
/// poisons the lock; the next still runs.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE.lock().unwrap_or_else(|e| e.into_inner())
}

fn ports_of(recs: &[&Value]) -> Vec<u64> {
    recs.iter().map(|r| r["sport"].as_u64().unwrap()).collect()
}

/// The case the project exists for: a client reconnecting from the same
/// source port (999, reserved, like an NFS mount) to 127.0.0.1:2049.
#[test]
fn reconnects_from_the_same_bound_port_are_flagged_as_reuse() {
    let _alone = one_at_a_time();
    let _srv = Server::start("127.0.0.1:2049");
    let tracer = Tracer::start(&[]);
    let truth: Vec<u16> = (0..3).map(|_| connect_and_abort("127.0.0.1:2049", Some("127.0.0.1:999"))).collect();
    let recs = tracer.stop();
    assert_eq!(truth, vec![999, 999, 999]);

    let connects = recs.to("connect", "127.0.0.1", 2049);
    let mine: Vec<&Value> = connects.into_iter().filter(|r| r["laddr"] == "127.0.0.1" && r["sport"] == 999).collect();
    assert_eq!(mine.len(), 3, "three connects from port 999: {:?}", recs.all);
    assert!(mine.iter().all(|r| r["outcome"] == "established"));
    assert_eq!(mine.iter().map(|r| r["reused"].as_bool().unwrap()).collect::<Vec<_>>(), [false, true, true]);

    let reuses = recs.to("reuse", "127.0.0.1", 2049);
    assert_eq!(reuses.len(), 2, "the 2nd and 3rd connects reuse port 999: {reuses:?}");
    assert!(reuses.iter().all(|r| r["sport"] == 999));
    assert_eq!(reuses[0]["streak"], 1);
    assert_eq!(reuses[1]["streak"], 2);
    // The previous connection was closed (RST) before the next connect:
    // the gap is known and small.
    for r in &reuses {
        assert_eq!(r["prev_outcome"], "established");
        let gap = r["gap_ms"].as_f64().expect("gap known: the close was traced");
        assert!((0.0..5000.0).contains(&gap), "gap {gap}");
    }
    let closes: Vec<_> = recs.to("close", "127.0.0.1", 2049).into_iter().filter(|c| c["sport"] == 999).collect();
    assert_eq!(closes.len(), 3);
    assert!(closes.iter().all(|c| c["how"] == "local_abort"), "SO_LINGER 0 closes: {closes:?}");
    let row = recs.summary_for("127.0.0.1", 2049).expect("summary row");
    assert!(row["reuses"].as_u64().unwrap() >= 2);
}

#[test]
fn two_sequential_connects_from_one_port_give_exactly_one_reuse() {
    let _alone = one_at_a_time();
    let _srv = Server::start("127.0.1.1:2049");
    let tracer = Tracer::start(&[]);
    let a = connect_and_abort("127.0.1.1:2049", Some("127.0.1.1:40999"));
    let b = connect_and_abort("127.0.1.1:2049", Some("127.0.1.1:40999"));
    let recs = tracer.stop();
    assert_eq!((a, b), (40999, 40999));
    assert_eq!(ports_of(&recs.to("connect", "127.0.1.1", 2049)), vec![40999, 40999]);
    let reuses = recs.to("reuse", "127.0.1.1", 2049);
    assert_eq!(reuses.len(), 1, "{reuses:?}");
    assert_eq!(reuses[0]["sport"], 40999);
    assert_eq!(reuses[0]["laddr"], "127.0.1.1");
    let row = recs.summary_for("127.0.1.1", 2049).unwrap();
    assert_eq!((row["connects"].as_u64(), row["distinct_ports"].as_u64(), row["reuses"].as_u64()), (Some(2), Some(1), Some(1)));
}

#[test]
fn ephemeral_connects_report_their_ports_and_no_reuse() {
    let _alone = one_at_a_time();
    let _srv = Server::start("127.0.1.2:2049");
    let tracer = Tracer::start(&[]);
    let truth: Vec<u16> = (0..5).map(|_| connect_and_abort("127.0.1.2:2049", None)).collect();
    let recs = tracer.stop();
    let seen = ports_of(&recs.to("connect", "127.0.1.2", 2049));
    assert_eq!(seen, truth.iter().map(|&p| p as u64).collect::<Vec<_>>(), "tracer ports vs local_addr()");
    // A reuse is reported exactly where the ground truth repeats a port.
    let want = truth.windows(2).filter(|w| w[0] == w[1]).count();
    assert_eq!(recs.to("reuse", "127.0.1.2", 2049).len(), want);
    let row = recs.summary_for("127.0.1.2", 2049).unwrap();
    assert_eq!(row["connects"], 5);
    assert_eq!(row["failed"], 0);
}

#[test]
fn refused_connect_is_a_failed_attempt() {
    let _alone = one_at_a_time();
    let tracer = Tracer::start(&[]);
    let dst: SocketAddr = "127.0.1.3:2049".parse().unwrap();
    let s = client_socket(&dst, Some("127.0.1.3:41003".parse().unwrap()));
    let err = s.connect(&SockAddr::from(dst)).expect_err("nobody listens");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    drop(s);
    let recs = tracer.stop();
    let c = recs.to("connect", "127.0.1.3", 2049);
    assert_eq!(c.len(), 1, "{:?}", recs.all);
    assert_eq!(c[0]["outcome"], "refused");
    assert_eq!(c[0]["errno_name"], "ECONNREFUSED");
    assert_eq!(c[0]["sport"], 41003);
    assert_eq!(recs.summary_for("127.0.1.3", 2049).unwrap()["failed"], 1);
}

/// A SYN dropped by netfilter (in a namespace of the test's own) is
/// retransmitted until the connect times out, as a middlebox drop looks.
/// Ground truth: the connect's own error and the namespace's SYN retransmit
/// counter (how many there are depends on TCP_SYNCNT and, since 6.5, on
/// tcp_syn_linear_timeouts).
#[test]
fn dropped_syns_are_retransmitted_and_time_out() {
    let _alone = one_at_a_time();
    let tracer = Tracer::start(&[]);
    let (err, retrans) = in_new_netns(|| {
        nft("table inet nfstrace_test {\n chain out {\n  type filter hook output priority 0;\n  ip daddr 127.0.2.4 tcp dport 2049 tcp flags & (syn | ack) == syn drop\n }\n}\n");
        let _srv = Server::start("127.0.2.4:2049");
        let dst: SocketAddr = "127.0.2.4:2049".parse().unwrap();
        let s = client_socket(&dst, Some("127.0.2.4:41004".parse().unwrap()));
        set_syn_count(&s, 1);
        let before = netns_syn_retrans();
        let err = s.connect(&SockAddr::from(dst)).expect_err("SYNs are dropped");
        (err.kind(), (netns_syn_retrans() - before) as u32)
    });
    let recs = tracer.stop();
    assert_eq!(err, std::io::ErrorKind::TimedOut);
    assert!(retrans >= 1, "the kernel retransmitted the SYN");
    let rtx = recs.to("syn_retransmit", "127.0.2.4", 2049);
    // A retransmit is a timer's work: if the timer fires while a BPF program
    // runs on that CPU (another test's sockets pass this tracer's filter
    // too), the kernel skips the hook and counts the skip, which the
    // summary reports. One record per retransmit, but for those.
    let missed = recs.summary()["missed_runs"].as_u64().expect("missed_runs in the summary") as u32;
    let seen = rtx.len() as u32;
    assert!(seen <= retrans && seen + missed >= retrans, "one live record per SYN retransmit ({retrans}), but for {missed} skipped runs: {rtx:?}");
    assert!(seen >= 1, "no SYN retransmit seen of {retrans}");
    assert!(rtx.iter().all(|r| r["sport"] == 41004));
    assert_eq!(rtx.last().unwrap()["retransmits"].as_u64(), Some(seen as u64));
    assert!(rtx[0]["elapsed_ms"].as_f64().unwrap() >= 900.0, "the first retransmit comes after about 1 s");
    let c = recs.to("connect", "127.0.2.4", 2049);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0]["outcome"], "timed_out");
    assert_eq!(c[0]["errno_name"], "ETIMEDOUT");
    assert_eq!(c[0]["sport"], 41004);
    assert_eq!(c[0]["syn_retransmits"].as_u64(), Some(seen as u64));
    assert!(c[0]["syn_sent_us"].as_u64().unwrap() >= 1_000_000 * retrans as u64 / 2, "{}", c[0]);
    let row = recs.summary_for("127.0.2.4", 2049).unwrap();
    assert_eq!((row["failed"].as_u64(), row["syn_retransmits"].as_u64()), (Some(1), Some(seen as u64)));
}

#[test]
fn other_ports_are_ignored() {
    let _alone = one_at_a_time();
    let _nfs = Server::start("127.0.1.5:2049");
    let _other = Server::start("127.0.1.5:2050");
    let tracer = Tracer::start(&[]);
    let p_other = connect_and_abort("127.0.1.5:2050", None);
    let p_nfs = connect_and_abort("127.0.1.5:2049", None);
    let recs = tracer.stop();
    assert!(recs.all.iter().all(|r| r["dport"] != 2050), "port 2050 is not watched");
    assert!(recs.all.iter().all(|r| r["sport"] != p_other as u64 || r["raddr"] != "127.0.1.5"));
    assert_eq!(ports_of(&recs.to("connect", "127.0.1.5", 2049)), vec![p_nfs as u64], "the watched port still is");
}

#[test]
fn port_flag_selects_the_watched_ports() {
    let _alone = one_at_a_time();
    let _a = Server::start("127.0.1.6:2049");
    let _b = Server::start("127.0.1.6:3049");
    let _c = Server::start("127.0.1.6:4049");
    let tracer = Tracer::start(&["--port", "3049,4049"]);
    assert_eq!(tracer.attached["ports"], serde_json::json!([3049, 4049]));
    let p3 = connect_and_abort("127.0.1.6:3049", None);
    let p4 = connect_and_abort("127.0.1.6:4049", None);
    connect_and_abort("127.0.1.6:2049", None);
    let recs = tracer.stop();
    assert_eq!(ports_of(&recs.to("connect", "127.0.1.6", 3049)), vec![p3 as u64]);
    assert_eq!(ports_of(&recs.to("connect", "127.0.1.6", 4049)), vec![p4 as u64]);
    assert!(recs.to("connect", "127.0.1.6", 2049).is_empty(), "2049 is not watched with --port 3049,4049");
}

#[test]
fn ipv6_reuse_is_flagged() {
    let _alone = one_at_a_time();
    let _srv = Server::start("[::1]:2049");
    let tracer = Tracer::start(&[]);
    let a = connect_and_abort("[::1]:2049", Some("[::1]:41006"));
    let b = connect_and_abort("[::1]:2049", Some("[::1]:41006"));
    let recs = tracer.stop();
    assert_eq!((a, b), (41006, 41006));
    let c: Vec<_> = recs.to("connect", "::1", 2049).into_iter().filter(|r| r["sport"] == 41006).collect();
    assert_eq!(c.len(), 2);
    assert_eq!(c[0]["laddr"], "::1");
    let r: Vec<_> = recs.to("reuse", "::1", 2049).into_iter().filter(|r| r["sport"] == 41006).collect();
    assert_eq!(r.len(), 1);
}

#[test]
fn close_reasons_follow_who_closed() {
    let _alone = one_at_a_time();
    use std::io::Read;
    let l = std::net::TcpListener::bind("127.0.1.7:2049").unwrap();
    let tracer = Tracer::start(&[]);
    // 1: the server closes first (FIN from the peer).
    let c1 = std::net::TcpStream::connect("127.0.1.7:2049").unwrap();
    let p1 = c1.local_addr().unwrap().port();
    // shutdown() sends the FIN now, even if a process another test spawns
    // holds a copy of the fd until its exec (a drop alone would wait for it).
    l.accept().unwrap().0.shutdown(std::net::Shutdown::Both).unwrap();
    let mut buf = [0u8; 1];
    assert_eq!((&c1).read(&mut buf).unwrap(), 0, "EOF from the server");
    c1.shutdown(std::net::Shutdown::Both).unwrap();
    drop(c1);
    // 2: we close first.
    let c2 = std::net::TcpStream::connect("127.0.1.7:2049").unwrap();
    let p2 = c2.local_addr().unwrap().port();
    let (s2, _) = l.accept().unwrap();
    c2.shutdown(std::net::Shutdown::Both).unwrap();
    // The server closes only after our FIN has reached it: no sleep.
    assert_eq!((&s2).read(&mut buf).unwrap(), 0, "EOF from the client");
    s2.shutdown(std::net::Shutdown::Both).unwrap();
    drop((c2, s2));
    // 3: the server resets it.
    let c3 = std::net::TcpStream::connect("127.0.1.7:2049").unwrap();
    let p3 = c3.local_addr().unwrap().port();
    let (s3, _) = l.accept().unwrap();
    abort(&socket2::SockRef::from(&s3));
    drop(s3);
    assert!((&c3).read(&mut buf).is_err(), "the RST reaches the client");
    drop(c3);
    std::thread::sleep(Duration::from_millis(100));
    let recs = tracer.stop();
    let how = |p: u16| {
        recs.to("close", "127.0.1.7", 2049)
            .into_iter()
            .find(|r| r["sport"] == p)
            .map(|r| r["how"].as_str().unwrap().to_string())
    };
    assert_eq!(how(p1).as_deref(), Some("remote_close"));
    assert_eq!(how(p2).as_deref(), Some("local_close"));
    assert_eq!(how(p3).as_deref(), Some("reset"));
}

#[test]
fn sigterm_and_duration_end_with_a_summary() {
    let _alone = one_at_a_time();
    let _srv = Server::start("127.0.1.8:2049");
    let tracer = Tracer::start(&[]);
    let p = connect_and_abort("127.0.1.8:2049", None);
    let recs = tracer.stop_with(libc::SIGTERM);
    let row = recs.summary_for("127.0.1.8", 2049).expect("summary after SIGTERM");
    assert_eq!(row["connects"], 1);
    assert_eq!(ports_of(&recs.to("connect", "127.0.1.8", 2049)), vec![p as u64]);
    assert_eq!(recs.summary()["lost_events"], 0);

    // --duration ends it by itself.
    let out = std::process::Command::new(nfs_trace_bin())
        .args(["watch", "--json", "--duration", "0.5"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let last = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().to_string();
    let v: Value = serde_json::from_str(&last).unwrap();
    assert_eq!(v["type"], "summary");
}

/// A connection up before the tracer started (known only from the kernel's
/// socket list) is the previous one for the first reconnect after start:
/// an SRE starts the tracer on a host whose mounts are already connected.
#[test]
fn a_connection_from_before_start_is_the_previous_one() {
    let _alone = one_at_a_time();
    let _srv = Server::start("127.0.1.9:2049");
    let dst: SocketAddr = "127.0.1.9:2049".parse().unwrap();
    let early = client_socket(&dst, Some("127.0.1.9:41009".parse().unwrap()));
    early.connect(&SockAddr::from(dst)).unwrap();
    let tracer = Tracer::start(&[]);
    abort(&early);
    drop(early);
    let p = connect_and_abort("127.0.1.9:2049", Some("127.0.1.9:41009"));
    let q = connect_and_abort("127.0.1.9:2049", None);
    let recs = tracer.stop();
    assert_eq!(p, 41009);
    let c = recs.to("connect", "127.0.1.9", 2049);
    assert_eq!(ports_of(&c), vec![41009, q as u64], "the early connect itself is not reported");
    assert_eq!(c[0]["reused"], true);
    let r = recs.to("reuse", "127.0.1.9", 2049);
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0]["sport"], 41009);
    assert!(r[0]["gap_ms"].is_null(), "its close was not traced");
}

/// The failure the project exists for, in miniature: a reconnect from the
/// port of the previous connection whose SYNs a filter drops. The tracer
/// reports the stall while it happens and its duration when a SYN finally
/// passes; the ground truth is how long the test's own connect() blocked.
#[test]
fn a_stalled_reconnect_from_a_reused_port_is_reported_live_and_timed() {
    let _alone = one_at_a_time();
    let tracer = Tracer::start(&[]);
    let blocked = in_new_netns(|| {
        let _srv = Server::start("127.0.2.10:2049");
        connect_and_abort("127.0.2.10:2049", Some("127.0.2.10:41010"));
        nft("table inet nfstrace_stall {\n chain out {\n  type filter hook output priority 0;\n  ip daddr 127.0.2.10 tcp dport 2049 tcp flags & (syn | ack) == syn drop\n }\n}\n");
        let t = std::thread::spawn(|| {
            let dst: SocketAddr = "127.0.2.10:2049".parse().unwrap();
            let s = client_socket(&dst, Some("127.0.2.10:41010".parse().unwrap()));
            let start = std::time::Instant::now();
            s.connect(&SockAddr::from(dst)).expect("connects once the filter is gone");
            start.elapsed()
        });
        std::thread::sleep(Duration::from_millis(2500));
        nft("delete table inet nfstrace_stall\n");
        t.join().unwrap()
    });
    let recs = tracer.stop();
    let live = recs.to("stall", "127.0.2.10", 2049);
    assert!(!live.is_empty(), "reported while it happens: {:?}", recs.all);
    assert!(live.iter().all(|r| r["sport"] == 41010));
    assert!(live[0]["prev_end"].is_string(), "the reused flow's end was traced");
    let end = recs.to("stall_end", "127.0.2.10", 2049);
    assert_eq!(end.len(), 1, "{:?}", recs.all);
    let dur = end[0]["duration_s"].as_f64().unwrap();
    let truth = blocked.as_secs_f64();
    assert!((dur - truth).abs() < 0.5, "tracer says {dur} s, connect() blocked {truth} s");
    assert!(truth >= 2.0, "the filter held the connect for 2.5 s");
    assert_eq!(end[0]["end_sport"], 41010);
    assert!(end[0]["retransmits"].as_u64().unwrap() >= 2);
    let st = recs.summary()["stalls"].as_array().unwrap().iter().find(|s| s["raddr"] == "127.0.2.10").cloned().unwrap();
    assert_eq!(st["ongoing"], false);
}

/// Issue 12: the same hang as an episode, end to end. Without a canary the
/// verdict must be `unknown` and say the canary is what is missing; its
/// phases carry the reused port, the earlier close and the recovery, and its
/// duration is the time the test's own connect() blocked.
#[test]
fn a_stalled_reconnect_is_an_episode_whose_verdict_names_the_missing_canary() {
    let _alone = one_at_a_time();
    let tracer = Tracer::start(&["--passive"]);
    let blocked = in_new_netns(|| {
        let _srv = Server::start("127.0.2.11:2049");
        connect_and_abort("127.0.2.11:2049", Some("127.0.2.11:41011"));
        nft("table inet nfstrace_episode {\n chain out {\n  type filter hook output priority 0;\n  ip daddr 127.0.2.11 tcp dport 2049 tcp flags & (syn | ack) == syn drop\n }\n}\n");
        let t = std::thread::spawn(|| {
            let dst: SocketAddr = "127.0.2.11:2049".parse().unwrap();
            let s = client_socket(&dst, Some("127.0.2.11:41011".parse().unwrap()));
            let start = std::time::Instant::now();
            s.connect(&SockAddr::from(dst)).expect("connects once the filter is gone");
            start.elapsed()
        });
        std::thread::sleep(Duration::from_millis(2500));
        nft("delete table inet nfstrace_episode\n");
        t.join().unwrap()
    });
    let recs = tracer.stop();
    let eps = recs.to("episode", "127.0.2.11", 2049);
    let states: Vec<&str> = eps.iter().map(|r| r["state"].as_str().unwrap_or("?")).collect();
    assert_eq!(states.first(), Some(&"opened"), "reported when it opens: {:?}", recs.all);
    assert_eq!(states.last(), Some(&"ended"), "{states:?}");
    let e = eps.last().unwrap();
    assert_eq!(e["verdict"], "unknown", "{e}");
    let evidence = e["evidence"].as_str().unwrap();
    let missing = evidence.split_once("missing: ").map(|(_, m)| m).unwrap_or_default();
    assert!(missing.contains("canary"), "the missing canary is named: {evidence}");
    assert!(evidence.contains("reused port 41011"), "{evidence}");
    let p = &e["phases"];
    assert_eq!(p["reconnect"]["ports"], serde_json::json!([41011]), "{p}");
    assert_eq!(p["reconnect"]["reused"], true);
    assert_eq!(p["closed"]["sport"], 41011, "the flow's earlier close: {p}");
    assert_eq!(p["recovered"]["sport"], 41011);
    assert!(p["unanswered"].is_null());
    let dur = e["duration_s"].as_f64().unwrap();
    let truth = blocked.as_secs_f64();
    assert!(truth >= 2.0, "the filter held the connect for 2.5 s");
    assert!((dur - truth).abs() < 0.5, "episode {dur} s, connect() blocked {truth} s");
    let sum = recs.summary()["episodes"].as_array().unwrap().iter().find(|s| s["raddr"] == "127.0.2.11").cloned();
    assert_eq!(sum.map(|s| s["state"].clone()), Some("ended".into()), "in the summary");
}

/// `--metrics` serves Prometheus text that a real parser accepts
/// (`promtool check metrics`), with counters equal to what the test did.
#[test]
fn metrics_pass_promtool_and_count_what_happened() {
    let _alone = one_at_a_time();
    use std::io::{Read, Write};
    let _srv = Server::start("127.0.1.11:2049");
    let tracer = Tracer::start(&["--metrics", "0"]);
    let addr = tracer.attached["metrics"].as_str().expect("attached says where metrics are").to_string();
    assert!(addr.starts_with("127.0.0.1:"), "loopback by default: {addr}");
    connect_and_abort("127.0.1.11:2049", Some("127.0.1.11:41011"));
    connect_and_abort("127.0.1.11:2049", Some("127.0.1.11:41011"));
    std::thread::sleep(Duration::from_millis(200)); // one drain tick
    let mut c = std::net::TcpStream::connect(&addr).unwrap();
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut resp = String::new();
    c.read_to_string(&mut resp).unwrap();
    let recs = tracer.stop();
    let (head, body) = resp.split_once("\r\n\r\n").expect("an HTTP reply");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"));
    let mut p = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (apt install prometheus; cargo xtask setup does)");
    p.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = p.wait_with_output().unwrap();
    assert!(out.status.success(), "promtool rejects the metrics: {}{}\n{body}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let line = |name: &str| {
        body.lines()
            .find(|l| l.starts_with(name) && l.contains("raddr=\"127.0.1.11\""))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    assert_eq!(line("nfs_trace_connects_total{"), Some(2), "{body}");
    assert_eq!(line("nfs_trace_source_port_reuses_total{"), Some(1));
    assert_eq!(line("nfs_trace_connect_failures_total{"), Some(0));
    assert!(body.contains("nfs_trace_lost_events_total 0"));
    assert_eq!(recs.to("reuse", "127.0.1.11", 2049).len(), 1);
}

/// SIGINT and SIGTERM end with a summary and a clean detach: every BPF
/// program and map the tracer held is gone from the kernel afterwards
/// (nothing pinned, nothing left attached).
#[test]
fn signals_detach_every_program_and_map() {
    let _alone = one_at_a_time();
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let tracer = Tracer::start(&[]);
        let held = bpf_objects_of(tracer.pid());
        assert!(held.progs.len() >= 2, "the tracer holds its tracepoint programs: {held:?}");
        assert!(!held.maps.is_empty(), "the tracer holds its maps: {held:?}");
        assert!(held.progs.iter().all(|id| bpf_object_exists(*id, false)), "ids read from fdinfo resolve: {held:?}");
        let recs = tracer.stop_with(sig);
        assert_eq!(recs.all.last().map(|r| r["type"].clone()), Some("summary".into()), "signal {sig}: summary last");
        // The kernel frees them when the last reference goes (an RCU grace
        // period or a work item later): allow it a moment.
        let deadline = Instant::now() + Duration::from_secs(5);
        let left = loop {
            let left: Vec<String> = held
                .progs
                .iter()
                .filter(|id| bpf_object_exists(**id, false))
                .map(|id| format!("prog {id}"))
                .chain(held.maps.iter().filter(|id| bpf_object_exists(**id, true)).map(|id| format!("map {id}")))
                .collect();
            if left.is_empty() || Instant::now() > deadline {
                break left;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(left.is_empty(), "after signal {sig} these are still in the kernel: {left:?}");
    }
}
