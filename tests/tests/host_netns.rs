//! Network namespaces: two containers' flows with the same addresses and
//! ports are two flows. Real sockets in two fresh network namespaces; the
//! ground truth for each namespace is the inode the test reads from
//! `/proc/thread-self/ns/net` in the thread that lives in it.
use std::{os::unix::fs::MetadataExt as _, process::Command, sync::mpsc, thread};

use serde_json::Value;

use nfs_trace_tests::host::{Records, Server, Tracer, abort, client_socket, connect_and_abort, in_new_netns, run_ok};

/// The address both namespaces give themselves (on their own `lo`), and the
/// port no other host test watches.
const ADDR: &str = "10.249.0.1";
const PORT: u16 = 4149;
const SRV: &str = "10.249.0.1:4149";
const BOUND: &str = "10.249.0.1:41490";

/// In the calling thread's (fresh) namespace: the address, a listener on
/// `srv`, and the namespace's inode.
fn set_up_here_on(srv: &str) -> (Server, u64) {
    run_ok(Command::new("ip").args(["addr", "add", &format!("{ADDR}/32"), "dev", "lo"]));
    let ino = std::fs::metadata("/proc/thread-self/ns/net").expect("stat /proc/thread-self/ns/net").ino();
    (Server::start(srv), ino)
}

fn set_up_here() -> (Server, u64) {
    set_up_here_on(SRV)
}

fn gettid() -> i64 {
    // SAFETY: gettid cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) }
}

fn netns_of(recs: &[&Value]) -> Vec<u64> {
    recs.iter().map(|r| r["netns"].as_u64().unwrap_or_else(|| panic!("netns must be a number: {r}"))).collect()
}

/// The summary's rows for ADDR:PORT as (netns, connects, reuses), sorted.
fn rows(recs: &Records) -> Vec<(u64, u64, u64)> {
    let mut v: Vec<(u64, u64, u64)> = recs.summary()["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["raddr"] == ADDR && d["dport"] == PORT)
        .map(|d| (d["netns"].as_u64().unwrap(), d["connects"].as_u64().unwrap(), d["reuses"].as_u64().unwrap()))
        .collect();
    v.sort_unstable();
    v
}

/// Namespace A connects from the bound port, then namespace B connects with
/// the very same 4-tuple, then A again. One tracer sees all namespaces: three
/// connects with two netns values (each equal to the test's own reading),
/// no reuse from A to B, and A's second connect a reuse of A's first. A
/// second tracer started with `--netns TID` (a thread of namespace A)
/// reports exactly A's records. Before namespaces were read, B's connect
/// was reported as a reuse of A's flow (one flow for both containers).
#[test]
fn the_same_flow_in_two_netns_is_two_flows_and_netns_filters() {
    let all = Tracer::start(&["--port", &PORT.to_string()]);
    let (to_main, from_a) = mpsc::channel::<(i64, u64)>();
    let (to_a, go) = mpsc::channel::<()>();
    // `move`: if this thread panics, `to_a` drops with the closure and
    // thread A's wait ends, so the scope's join cannot hang.
    let (only_a, ports, (ino_a, ino_b)) = thread::scope(move |sc| {
        let a = sc.spawn(move || {
            in_new_netns(move || {
                let (_srv_a, ino_a) = set_up_here();
                to_main.send((gettid(), ino_a)).unwrap();
                // The main thread starts the filtering tracer meanwhile.
                go.recv().unwrap();
                let first = connect_and_abort(SRV, Some(BOUND));
                let (in_b, ino_b) = in_new_netns(|| {
                    let (_srv_b, ino_b) = set_up_here();
                    (connect_and_abort(SRV, Some(BOUND)), ino_b)
                });
                let again = connect_and_abort(SRV, Some(BOUND));
                ([first, in_b, again], (ino_a, ino_b))
            })
        });
        let (tid_a, ino_a) = from_a.recv().expect("namespace A set up");
        // Started from the main thread (its own namespace is the host's),
        // naming namespace A by a PID (thread id) in it.
        let only_a = Tracer::start(&["--port", &PORT.to_string(), "--netns", &tid_a.to_string()]);
        assert_eq!(only_a.attached["netns"], Value::from(ino_a), "--netns TID resolves to its namespace's inode");
        to_a.send(()).unwrap();
        let (ports, inos) = a.join().expect("namespace threads");
        (only_a, ports, inos)
    });
    let (all, only_a) = (all.stop(), only_a.stop());
    assert_eq!(ports, [41490; 3], "each connect really came from the bound port");
    assert_ne!(ino_a, ino_b, "two namespaces");

    let connects = all.to("connect", ADDR, PORT);
    assert_eq!(netns_of(&connects), vec![ino_a, ino_b, ino_a], "{connects:?}");
    assert!(connects.iter().all(|c| c["sport"] == 41490));
    let reused: Vec<bool> = connects.iter().map(|c| c["reused"].as_bool().unwrap()).collect();
    assert_eq!(reused, vec![false, false, true], "B's connect is no reuse of A's flow: {connects:?}");
    let reuses = all.to("reuse", ADDR, PORT);
    assert_eq!(netns_of(&reuses), vec![ino_a], "{reuses:?}");
    assert_eq!(reuses[0]["streak"], 1);
    assert_eq!(netns_of(&all.to("close", ADDR, PORT)), vec![ino_a, ino_b, ino_a]);
    assert_eq!(rows(&all), {
        let mut v = vec![(ino_a, 2, 1), (ino_b, 1, 0)];
        v.sort_unstable();
        v
    });

    // --netns: exactly namespace A's records, B's not at all.
    let in_a: Vec<&Value> = only_a.all.iter().filter(|r| r.get("netns").is_some_and(|n| !n.is_null())).collect();
    assert!(in_a.iter().all(|r| r["netns"] == ino_a), "only namespace A: {in_a:?}");
    assert_eq!(netns_of(&only_a.to("connect", ADDR, PORT)), vec![ino_a, ino_a]);
    assert_eq!(netns_of(&only_a.to("reuse", ADDR, PORT)), vec![ino_a]);
    assert_eq!(rows(&only_a), vec![(ino_a, 2, 1)]);
}

/// A connection already up in another namespace when the tracer starts is
/// the previous flow of its first reconnect there (what a container's NFS
/// mount looks like to a tracer started later). The tracer lists it through
/// sock_diag in that namespace, so the seed carries that namespace, not the
/// tracer's own. Before, seeds were tagged with the tracer's namespace and
/// this reconnect was reported as no reuse (the VM lab's first reconnect on
/// 5.10, with its client in a namespace of its own, showed it too).
#[test]
fn a_connection_from_before_start_in_another_netns_is_the_previous_flow() {
    const PORT2: u16 = 4150;
    let srv = format!("{ADDR}:{PORT2}");
    let bound = format!("{ADDR}:41500");
    let (to_main, from_ns) = mpsc::channel::<u64>();
    let (to_ns, go) = mpsc::channel::<()>();
    let (tracer, ino, ports) = thread::scope(move |sc| {
        let ns = sc.spawn(|| {
            in_new_netns(move || {
                let (_srv, ino) = set_up_here_on(&srv);
                // A process in the namespace, as a container has: how the
                // tracer finds namespaces (/proc/PID/ns/net), and a thread's
                // own is not listed there.
                let mut resident = Command::new("sleep").arg("60").spawn().expect("spawn sleep");
                let dst: std::net::SocketAddr = srv.parse().unwrap();
                let s = client_socket(&dst, Some(bound.parse().unwrap()));
                s.connect(&dst.into()).expect("connect before the tracer starts");
                let before = s.local_addr().unwrap().as_socket().unwrap().port();
                to_main.send(ino).unwrap();
                go.recv().unwrap();
                abort(&s);
                drop(s);
                let again = connect_and_abort(&srv, Some(&bound));
                let _ = resident.kill();
                let _ = resident.wait();
                (ino, [before, again])
            })
        });
        let ino = from_ns.recv().expect("namespace set up");
        let tracer = Tracer::start(&["--port", &PORT2.to_string()]);
        to_ns.send(()).unwrap();
        let (ino2, ports) = ns.join().expect("namespace thread");
        assert_eq!(ino, ino2);
        (tracer, ino, ports)
    });
    let recs = tracer.stop();
    assert_eq!(ports, [41500, 41500], "the reconnect came from the same port");
    let connects = recs.to("connect", ADDR, PORT2);
    assert_eq!(netns_of(&connects), vec![ino], "{connects:?}");
    assert_eq!(connects[0]["reused"], true, "a reuse of the flow that was up before start: {connects:?}");
    let reuses = recs.to("reuse", ADDR, PORT2);
    assert_eq!(netns_of(&reuses), vec![ino], "{reuses:?}");
}
