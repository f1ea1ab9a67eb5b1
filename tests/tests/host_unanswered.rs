//! Phase (a) of an episode (issue 12): an established connection whose
//! data the peer stops acknowledging, on this host's kernel, in a network
//! namespace of the test's own. Ground truth: the test's own clock around
//! the nft rule that drops the server's ACKs, and the client socket's own
//! TCP_INFO (the kernel's count of its retransmits).
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    thread,
    time::Duration,
};

use nfs_trace_tests::host::*;
use serde_json::Value;

/// Bounds waits for what the tracer does by itself; the assertions are on
/// what arrived, never on how fast.
const WAIT: Duration = Duration::from_secs(30);

fn mono_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The kernel's TCP_INFO of a connected socket.
fn tcp_info(s: &TcpStream) -> libc::tcp_info {
    use std::os::fd::AsRawFd;
    // SAFETY: a zeroed tcp_info (plain integers) and its size, for getsockopt to fill.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: a valid fd, a live buffer of `len` bytes.
    let rc = unsafe { libc::getsockopt(s.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_INFO, (&raw mut info).cast(), &mut len) };
    assert_eq!(rc, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    info
}

/// Drops what the server sends to the client's port (its ACKs): the
/// client's data goes out and is never acknowledged.
fn drop_acks(client_port: u16) -> String {
    format!("table inet nfstrace_unanswered {{\n chain in {{\n  type filter hook input priority 0;\n  tcp sport 2049 tcp dport {client_port} drop\n }}\n}}\n")
}

/// A connection the path stops carrying for a few seconds: its data
/// retransmits are reported once the run is over a second old, the episode
/// opens at the run's first retransmit, and ends, `path-blackhole`, once
/// the ACKs are back and the retransmits stop. No reconnect, no close.
#[test]
fn an_established_flow_left_unanswered_is_reported_and_its_episode_ends_when_answered() {
    left_unanswered(true, "127.0.7.1");
}

/// The same for a connection that was up before the tracer started (an
/// SRE starts `watch` on a host whose mount already hangs): the kernel
/// program adopts the socket at its first retransmit, so phase (a) is seen
/// all the same, and so is its close.
#[test]
fn a_flow_established_before_start_is_adopted_at_its_first_retransmit() {
    left_unanswered(false, "127.0.7.2");
}

fn left_unanswered(tracer_first: bool, addr: &'static str) {
    require_root();
    let server: SocketAddr = format!("{addr}:2049").parse().unwrap();
    let (ino_tx, ino_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    // Everything network happens on one thread in the test's namespace;
    // the tracer (another process) watches that namespace only.
    let net = thread::spawn(move || {
        in_new_netns(move || {
            let ino = std::fs::read_link("/proc/thread-self/ns/net").unwrap().to_string_lossy().into_owned();
            let l = TcpListener::bind(server).unwrap();
            if tracer_first {
                // The tracer sees the connect start.
                ino_tx.send(ino.clone()).unwrap();
                go_rx.recv().unwrap();
            }
            // The server reads whatever arrives (its kernel ACKs it).
            thread::spawn(move || {
                let (mut s, _) = l.accept().unwrap();
                let mut buf = [0u8; 4096];
                while s.read(&mut buf).is_ok_and(|n| n > 0) {}
            });
            let mut c = TcpStream::connect(server).unwrap();
            let port = c.local_addr().unwrap().port();
            c.write_all(&[1u8; 1000]).unwrap();
            thread::sleep(Duration::from_millis(200));
            if !tracer_first {
                // Up (and its data acknowledged) before the tracer starts.
                ino_tx.send(ino).unwrap();
                go_rx.recv().unwrap();
            }
            let before = tcp_info(&c).tcpi_total_retrans;
            nft(&drop_acks(port));
            let t_drop = mono_ns();
            c.write_all(&[2u8; 1000]).unwrap();
            // Until the test has seen the tracer report it.
            done_rx.recv().unwrap();
            nft("delete table inet nfstrace_unanswered\n");
            let t_back = mono_ns();
            // The retransmit after the rule went is answered: nothing unacked.
            for _ in 0..200 {
                thread::sleep(Duration::from_millis(100));
                if tcp_info(&c).tcpi_unacked == 0 {
                    break;
                }
            }
            assert_eq!(tcp_info(&c).tcpi_unacked, 0, "the data was acknowledged once the rule went");
            // The socket is handed out: open until the episode ended.
            (port, t_drop, t_back, tcp_info(&c).tcpi_total_retrans - before, c)
        })
    });
    let ino = ino_rx.recv().unwrap();
    let inode = ino.trim_start_matches("net:[").trim_end_matches(']').to_string();
    let mut tracer = Tracer::start(&["--netns", &inode]);
    go_tx.send(()).unwrap();
    let first = tracer.wait_for(WAIT, |r| r["type"] == "data_retransmit" && r["raddr"] == addr);
    done_tx.send(()).unwrap();
    let (port, t_drop, t_back, retrans, _client) = net.join().unwrap();
    let ended = tracer.wait_for(WAIT, |r| r["type"] == "episode" && r["state"] == "ended" && r["raddr"] == addr);
    // Its close is seen too (adopted or not).
    drop(_client);
    let closed = tracer.wait_for(WAIT, |r| r["type"] == "close" && r["raddr"] == addr && r["sport"] == port);
    let recs = tracer.stop();
    assert!(closed.is_some(), "the client's close was reported: {:?}", recs.all);
    let first = first.unwrap_or_else(|| panic!("no data_retransmit record: {:?}\n{}", recs.all, recs.stderr));

    assert_eq!(first["sport"].as_u64(), Some(u64::from(port)), "the client's own port: {first}");
    assert_eq!(first["netns"].as_str().map(str::to_string).or(first["netns"].as_u64().map(|n| n.to_string())), Some(inode.clone()));
    let since = first["since_mono_ns"].as_u64().unwrap();
    assert!(since >= t_drop, "the unanswered run began after the rule went in: {since} < {t_drop}");
    assert!(since < t_drop + 1_000_000_000, "its first retransmit is one RTO (≥ 200 ms) after the write: {:.3} s", (since - t_drop) as f64 / 1e9);
    assert!(first["mono_ns"].as_u64().unwrap() >= since + 1_000_000_000, "reported only once the run is over a second old: {first}");
    let reports: Vec<&Value> = recs.all.iter().filter(|r| r["type"] == "data_retransmit" && r["sport"] == port).collect();
    let most = reports.iter().filter_map(|r| r["retransmits"].as_u64()).max().unwrap();
    assert!(most >= 2 && most <= u64::from(retrans), "the tracer's run count {most} is within the kernel's {retrans} retransmits");
    assert!(reports.iter().all(|r| r["mono_ns"].as_u64().unwrap() <= t_back + 5_000_000_000), "none long after the ACKs came back: {reports:?}");

    let ended = ended.unwrap_or_else(|| panic!("the episode did not end: {:?}", recs.all));
    assert_eq!((ended["opened_by"].as_str(), ended["verdict"].as_str()), (Some("unanswered"), Some("path-blackhole")), "{ended}");
    let p = &ended["phases"];
    assert_eq!(p["unanswered"]["mono_ns"].as_u64(), Some(since), "phase (a) starts at the run's first retransmit: {ended}");
    assert!(p["closed"].is_null() && p["reconnect"].is_null(), "nothing closed or reconnected: {ended}");
    let rec = p["recovered"]["mono_ns"].as_u64().expect("recovered");
    assert!(rec >= since && rec <= t_back + 5_000_000_000, "recovered at its last retransmit, around the rule's removal: {ended}");
    assert!(ended["evidence"].as_str().unwrap().contains("ACKs came back on the same flow"), "{ended}");
}
