//! Host integration test support: run the real `nfs-trace` binary, make real
//! sockets (the ground truth is each socket's own `local_addr()`), and isolate
//! tests that change the network in their own network namespace.
//!
//! The tracer sees every network namespace, and tests run in parallel, so
//! each test talks to its own loopback address (127.0.x.y) and looks only at
//! records for that destination.
use std::{
    io::{BufRead, BufReader},
    net::{SocketAddr, TcpListener},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// The nfs-trace binary under test: $NFS_TRACE_BIN (set by `cargo xtask
/// test`), else the workspace's debug build.
pub fn nfs_trace_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("NFS_TRACE_BIN") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/nfs-trace");
    assert!(p.exists(), "no nfs-trace binary at {}: run the suite with `cargo xtask test`", p.display());
    p
}

/// These tests attach BPF programs and make network namespaces: root only.
/// CI runs as root; failing (not skipping) keeps a green run honest.
pub fn require_root() {
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "host integration tests need root (cargo xtask test runs as root in CI)");
}

/// `nfs-trace watch` with `format` then `extra` arguments, its stdout and
/// stderr piped to the test.
fn spawn_watch(format: &[&str], extra: &[&str]) -> Child {
    Command::new(nfs_trace_bin())
        .arg("watch")
        .args(format)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start nfs-trace")
}

/// A running `nfs-trace watch --json`.
pub struct Tracer {
    child: Child,
    rx: mpsc::Receiver<Value>,
    pub attached: Value,
    stderr: Option<thread::JoinHandle<String>>,
    /// Records taken by [`Tracer::wait_for`], handed back by `stop`.
    seen: Vec<Value>,
    /// Every line of stdout as written (`report` replays them).
    raw: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Tracer {
    /// Starts the tracer and waits until it has attached.
    pub fn start(extra: &[&str]) -> Tracer {
        require_root();
        let mut child = spawn_watch(&["--json"], extra);
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let raw = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = raw.clone();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"));
                keep.lock().unwrap().push(line);
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        let stderr = thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
        let first = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("nfs-trace did not attach within 60 s");
        });
        assert_eq!(first["type"], "attached", "first record must be `attached`: {first}");
        assert_eq!(first["v"], 2, "schema version (docs/json-schema.md)");
        Tracer { child, rx, attached: first, stderr: Some(stderr), seen: Vec::new(), raw }
    }

    /// Waits up to `limit` for a record matching `want` while the tracer
    /// runs (records read meanwhile are kept for `stop`). The limit only
    /// bounds a wait for something the tracer does by itself (e.g. its
    /// once-a-second mount re-read); the caller asserts on the result.
    pub fn wait_for(&mut self, limit: Duration, want: impl Fn(&Value) -> bool) -> Option<Value> {
        let deadline = Instant::now() + limit;
        while let Ok(v) = self.rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            let hit = want(&v);
            self.seen.push(v.clone());
            if hit {
                return Some(v);
            }
        }
        None
    }

    /// The tracer's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Stops it with SIGINT; returns every record after `attached`
    /// (the last one is the summary) and what it wrote on stderr.
    pub fn stop(self) -> Records {
        self.stop_with(libc::SIGINT)
    }

    pub fn stop_with(mut self, sig: i32) -> Records {
        self.signal(sig);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut recs = std::mem::take(&mut self.seen);
        while let Ok(v) = self.rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            recs.push(v);
        }
        let status = self.child.wait().expect("wait nfs-trace");
        let stderr = self.stderr.take().map(|h| h.join().unwrap_or_default()).unwrap_or_default();
        assert!(status.success(), "nfs-trace exited with {status}; stderr:\n{stderr}");
        assert!(!stderr.contains("panicked"), "nfs-trace panicked:\n{stderr}");
        let raw = std::mem::take(&mut *self.raw.lock().unwrap());
        Records { all: recs, stderr, raw }
    }
}

/// A test that panics before `stop` must not leave its tracer running: it
/// would hold the BPF programs (and any lock its parent held) past the test.
impl Drop for Tracer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `nfs-trace watch` with text output (`--color never`) while `during`
/// runs, once it has attached (its start line on stderr), then stops it with
/// SIGINT. Returns what `during` returned and the tracer's stdout.
pub fn watch_text<T>(extra: &[&str], during: impl FnOnce() -> T) -> (T, String) {
    require_root();
    let mut child = spawn_watch(&["--color", "never"], extra);
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let out = thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let (tx, rx) = mpsc::channel();
    let err = thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("nfs-trace: attached") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    if rx.recv_timeout(Duration::from_secs(60)).is_err() {
        let _ = child.kill();
        panic!("nfs-trace did not attach within 60 s: {}", err.join().unwrap_or_default());
    }
    let t = during();
    // SAFETY: kill on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().expect("wait nfs-trace");
    let stderr = err.join().unwrap_or_default();
    assert!(status.success(), "nfs-trace exited with {status}; stderr:\n{stderr}");
    assert!(!stderr.contains("panicked"), "nfs-trace panicked:\n{stderr}");
    (t, out.join().unwrap_or_default())
}

/// The tracer's records after `attached`.
pub struct Records {
    pub all: Vec<Value>,
    pub stderr: String,
    /// Every stdout line as written, `attached` first.
    pub raw: Vec<String>,
}

impl Records {
    /// Records of `kind` toward `raddr:dport`.
    pub fn to(&self, kind: &str, raddr: &str, dport: u16) -> Vec<&Value> {
        self.all.iter().filter(|r| r["type"] == kind && r["raddr"] == raddr && r["dport"] == dport).collect()
    }

    pub fn summary(&self) -> &Value {
        let last = self.all.last().expect("no records at all");
        assert_eq!(last["type"], "summary", "last record must be the summary: {last}");
        last
    }

    /// Writes the recording (every line as written) to `path`.
    pub fn write_to(&self, path: &std::path::Path) {
        std::fs::write(path, self.raw.iter().map(|l| format!("{l}\n")).collect::<String>()).expect("write the recording");
    }

    /// The summary row for a destination, if any.
    pub fn summary_for(&self, raddr: &str, dport: u16) -> Option<&Value> {
        self.summary()["destinations"].as_array()?.iter().find(|d| d["raddr"] == raddr && d["dport"] == dport)
    }
}

/// A listener on `addr` that accepts and keeps connections until dropped.
pub struct Server {
    pub addr: SocketAddr,
    _thread: thread::JoinHandle<()>,
}

impl Server {
    pub fn start(addr: &str) -> Server {
        let l = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind listener {addr}: {e}"));
        let addr = l.local_addr().unwrap();
        let t = thread::spawn(move || {
            let mut keep = Vec::new();
            for s in l.incoming() {
                match s {
                    Ok(s) => keep.push(s),
                    Err(_) => break,
                }
                if keep.len() > 64 {
                    keep.remove(0);
                }
            }
        });
        Server { addr, _thread: t }
    }
}

/// A TCP socket for `dst`, bound to `local` when given (SO_REUSEADDR so the
/// same port can be bound again, as the NFS client does).
pub fn client_socket(dst: &SocketAddr, local: Option<SocketAddr>) -> Socket {
    let s = Socket::new(Domain::for_address(*dst), Type::STREAM, Some(Protocol::TCP)).unwrap();
    if let Some(l) = local {
        s.set_reuse_address(true).unwrap();
        s.bind(&SockAddr::from(l)).unwrap_or_else(|e| panic!("bind {l}: {e}"));
    }
    s
}

/// Connects, reads its own local port (the ground truth), then aborts it
/// (see [`abort`]) so neither an ESTABLISHED socket nor a TIME_WAIT keeps the
/// port: the abortive close an NFS client's transport reset looks like.
pub fn connect_and_abort(dst: &str, local: Option<&str>) -> u16 {
    let dst: SocketAddr = dst.parse().unwrap();
    let s = client_socket(&dst, local.map(|l| l.parse().unwrap()));
    s.connect_timeout(&SockAddr::from(dst), Duration::from_secs(5)).unwrap_or_else(|e| panic!("connect {dst}: {e}"));
    let port = s.local_addr().unwrap().as_socket().unwrap().port();
    abort(&s);
    port
}

/// Resets a connection now: `connect(AF_UNSPEC)` runs the kernel's
/// tcp_disconnect on the socket itself — an RST to the peer, state CLOSE,
/// the 4-tuple free for the next connect — however many file descriptors
/// refer to it. Closing with SO_LINGER 0 does the same only at the *last*
/// close, and tests run in parallel: a process another test spawns at that
/// moment holds a copy of every fd until its exec closes them
/// (close-on-exec), so the "closed" socket stayed ESTABLISHED a little longer
/// and a reconnect from the same bound port failed with EADDRNOTAVAIL
/// (`host_tcp::a_connection_from_before_start_is_the_previous_one`, on a
/// first run; see the test below).
pub fn abort(s: &Socket) {
    use std::os::fd::AsRawFd;
    let unspec = libc::sockaddr { sa_family: libc::AF_UNSPEC as libc::sa_family_t, sa_data: [0; 14] };
    // SAFETY: a valid socket fd and a live sockaddr of the size passed.
    let rc = unsafe {
        libc::connect(s.as_raw_fd(), &unspec, std::mem::size_of::<libc::sockaddr>() as libc::socklen_t)
    };
    assert_eq!(rc, 0, "connect(AF_UNSPEC) to reset the connection: {}", std::io::Error::last_os_error());
}

/// Runs `f` on a thread of its own in a new network namespace with `lo` up.
/// Only that thread (and processes it starts) sees the namespace.
pub fn in_new_netns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    thread::scope(|sc| {
        sc.spawn(|| {
            // SAFETY: unshare on the calling thread only; no pointers involved.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
            run_ok(Command::new("ip").args(["link", "set", "lo", "up"]));
            f()
        })
        .join()
        .expect("netns thread panicked")
    })
}

/// Runs a command, panicking with its output when it fails.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Loads an nft ruleset (from stdin) in the current thread's namespace.
pub fn nft(ruleset: &str) {
    use std::io::Write;
    let mut c = Command::new("nft").args(["-f", "-"]).stdin(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("run nft (apt install nftables)");
    c.stdin.take().unwrap().write_all(ruleset.as_bytes()).unwrap();
    let out = c.wait_with_output().unwrap();
    assert!(out.status.success(), "nft failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// Sets TCP_SYNCNT: how many SYN retransmits before the connect times out.
pub fn set_syn_count(s: &Socket, n: i32) {
    use std::os::fd::AsRawFd;
    // SAFETY: valid fd, pointer to a live c_int of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_SYNCNT,
            (&n as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "TCP_SYNCNT: {}", std::io::Error::last_os_error());
}

/// The kernel's own count of SYN retransmits in the calling thread's network
/// namespace (`TcpExt: TCPSynRetrans` in netstat): the ground truth for SYN
/// retransmits in a namespace where only the test's socket connects.
/// (TCP_INFO cannot serve: a failed connect resets the socket's counters.)
pub fn netns_syn_retrans() -> u64 {
    let text = std::fs::read_to_string("/proc/thread-self/net/netstat").expect("read netstat");
    let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("TcpExt:")).collect();
    assert_eq!(rows.len(), 2, "netstat has a TcpExt header and values");
    let names = rows[0].split_whitespace();
    let values = rows[1].split_whitespace();
    names.zip(values).find(|(n, _)| *n == "TCPSynRetrans").and_then(|(_, v)| v.parse().ok()).expect("TCPSynRetrans")
}

/// The BPF programs and maps a process holds open, by kernel id (from
/// /proc/PID/fdinfo: `prog_id:` / `map_id:` lines of its bpf fds).
#[derive(Debug, Default)]
pub struct BpfObjects {
    pub progs: Vec<u32>,
    pub maps: Vec<u32>,
}

pub fn bpf_objects_of(pid: u32) -> BpfObjects {
    let mut out = BpfObjects::default();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return out };
    for fd in fds.flatten() {
        let Ok(link) = std::fs::read_link(fd.path()) else { continue };
        let link = link.to_string_lossy().to_string();
        let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_string_lossy())).unwrap_or_default();
        let id = |key: &str| info.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.trim().parse::<u32>().ok());
        if link == "anon_inode:bpf-prog" {
            out.progs.extend(id("prog_id:"));
        } else if link == "anon_inode:bpf-map" {
            out.maps.extend(id("map_id:"));
        }
    }
    out.progs.sort_unstable();
    out.progs.dedup();
    out.maps.sort_unstable();
    out.maps.dedup();
    out
}

/// Whether the kernel still has a BPF program (`map` false) or map with
/// this id: BPF_PROG_GET_FD_BY_ID / BPF_MAP_GET_FD_BY_ID answer ENOENT once
/// it is freed.
pub fn bpf_object_exists(id: u32, map: bool) -> bool {
    const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
    const BPF_MAP_GET_FD_BY_ID: libc::c_long = 14;
    // union bpf_attr for these commands: the id, next_id, open_flags.
    let attr: [u32; 3] = [id, 0, 0];
    let cmd = if map { BPF_MAP_GET_FD_BY_ID } else { BPF_PROG_GET_FD_BY_ID };
    // SAFETY: bpf(2) reads size_of_val(&attr) bytes from a live array; a
    // returned fd is closed at once.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_ptr(), std::mem::size_of_val(&attr) as u32) };
    if fd >= 0 {
        // SAFETY: fd was just returned to us and is not used elsewhere.
        unsafe { libc::close(fd as i32) };
        return true;
    }
    std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOENT)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// A port reset by [`connect_and_abort`] can be connected from again at
    /// once, even while another thread spawns processes (as the other tests
    /// do: tracers, `ip`, `nft`). Before [`abort`], this loop hit
    /// EADDRNOTAVAIL within its first few rounds: the closing close() ran in a
    /// spawned child's exec, not in ours. No tracer, no root: loopback only,
    /// on an address and port no other test uses.
    #[test]
    fn an_aborted_port_is_free_at_once_while_processes_spawn() {
        let _srv = Server::start("127.0.4.1:4999");
        /// Stops the spawner however the loop ends (a failed connect panics).
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let stop = AtomicBool::new(false);
        thread::scope(|sc| {
            let spawner = sc.spawn(|| {
                let mut n = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    Command::new("true").status().expect("run true");
                    n += 1;
                }
                n
            });
            let guard = StopOnDrop(&stop);
            for _ in 0..2000 {
                assert_eq!(connect_and_abort("127.0.4.1:4999", Some("127.0.4.1:41999")), 41999);
            }
            drop(guard);
            assert!(spawner.join().unwrap() > 0, "processes were spawned meanwhile");
        });
    }
}

/// Runs `nfs-trace report ARGS`; returns its stdout lines (JSON with
/// `--json`) and stderr, and fails the test on a failed exit.
pub fn report(args: &[&str]) -> (String, String) {
    let out = Command::new(nfs_trace_bin()).arg("report").args(args).output().expect("run nfs-trace report");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "nfs-trace report {args:?} exited with {}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "nfs-trace report panicked:\n{stderr}");
    (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
}

/// Issue 16: a recording of `watch --json --events` replayed by `report
/// --json` says what watch said live: the same `episode` records in the
/// same order (state, verdict, evidence, times), and the same summary.
/// Returns the replay's records.
pub fn assert_replay_matches(recs: &Records, file: &std::path::Path) -> Vec<Value> {
    recs.write_to(file);
    let (out, stderr) = report(&["--json", file.to_str().unwrap()]);
    let replay: Vec<Value> =
        out.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("report wrote no JSON: {l:?}: {e}"))).collect();
    let episodes = |all: &[Value]| -> Vec<Value> { all.iter().filter(|r| r["type"] == "episode").cloned().collect() };
    let live = episodes(&recs.all);
    assert!(!live.is_empty(), "the live run had no episode to replay: {:?}", recs.all);
    assert_eq!(episodes(&replay), live, "report's episodes are watch's (stderr: {stderr})");
    let last = replay.last().expect("report wrote nothing");
    assert_eq!(last, recs.summary(), "report's summary is watch's");
    replay
}

/// GET /metrics from `addr`; the body.
pub fn scrape_metrics(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut resp = String::new();
    c.read_to_string(&mut resp).unwrap();
    resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).expect("an HTTP reply")
}
