//! The load: a loopback connect storm toward the NFS port, with noise to a
//! second port that the tracers must filter out.
//!
//! Every client socket is closed with SO_LINGER 0 (an RST): no TIME_WAIT, so
//! tens of thousands of connects do not run out of ephemeral ports, and each
//! connect still makes the same state changes an NFS reconnect makes
//! (CLOSE→SYN_SENT→ESTABLISHED→CLOSE).
use std::{
    io,
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    sync::{
        Arc, Barrier,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// The port the tracers watch.
pub const NFS_PORT: u16 = 2049;
/// The noise port: close to 2049 so a sloppy filter (range, mask) would let it in.
pub const NOISE_PORT: u16 = 2050;
/// One noise connect after every this many NFS-port connects.
pub const NOISE_EVERY: u64 = 4;

unsafe extern "C" {
    fn setsockopt(fd: i32, level: i32, name: i32, val: *const core::ffi::c_void, len: u32) -> i32;
    fn listen(fd: i32, backlog: i32) -> i32;
}

#[repr(C)]
struct Linger {
    onoff: i32,
    secs: i32,
}

const SOL_SOCKET: i32 = 1;
const SO_LINGER: i32 = 13;

/// Closes with an RST instead of a FIN (see the module comment).
fn set_linger_zero(s: &TcpStream) -> io::Result<()> {
    let l = Linger { onoff: 1, secs: 0 };
    // SAFETY: a valid fd and a correctly sized struct linger.
    let rc = unsafe {
        setsockopt(s.as_raw_fd(), SOL_SOCKET, SO_LINGER, (&l as *const Linger).cast(), size_of::<Linger>() as u32)
    };
    if rc != 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Where the readiness probes go: port 2049 on another loopback address with
/// no listener. The tracers report the refused attempt like any connect, and
/// its address keeps probes apart from the storm's connects when counting.
pub const PROBE_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// Where the flow-memory pre-fill connects: port 2049 on a loopback address
/// with no listener (refused: one SYN and one RST each, no accept work for
/// the server), so its records are told apart from the storm's and the
/// probes'.
pub const PREFILL_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 5);
/// The pre-fill's source addresses: each (address, port) pair is one flow.
const PREFILL_SRC: [Ipv4Addr; 2] = [Ipv4Addr::new(127, 0, 0, 6), Ipv4Addr::new(127, 0, 0, 7)];
/// The pre-fill's source ports, below the ephemeral range so they do not
/// collide with the storm's.
const PREFILL_PORTS: std::ops::Range<u16> = 10_000..30_000;

/// `flows` connects toward PREFILL_ADDR:2049, each from a source address
/// and port no other connect here uses: as many distinct ended flows as
/// the tracer is told of. A pair already bound by something else on the
/// host is skipped. Returns the connects made (each refused, as meant).
pub fn prefill(flows: u64) -> Result<u64> {
    let dst = socket2::SockAddr::from(SocketAddr::from((PREFILL_ADDR, NFS_PORT)));
    let mut made = 0;
    'all: for src in PREFILL_SRC {
        for port in PREFILL_PORTS {
            if made == flows {
                break 'all;
            }
            let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
            if s.bind(&SocketAddr::from((src, port)).into()).is_err() {
                continue;
            }
            match s.connect(&dst) {
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => made += 1,
                Err(e) => bail!("pre-fill connect from {src}:{port} to {PREFILL_ADDR}:{NFS_PORT}: {e}"),
                // Something listens there after all: still one flow, closed with an RST.
                Ok(()) => {
                    s.set_linger(Some(Duration::ZERO))?;
                    made += 1;
                }
            }
        }
    }
    if made < flows {
        bail!("pre-fill made only {made} of {flows} flows (source ports taken)");
    }
    Ok(made)
}

/// One connect, RST close. Used by the storm.
pub fn connect_once(port: u16) -> io::Result<()> {
    let s = TcpStream::connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?;
    set_linger_zero(&s)
}

/// One readiness probe (refused by design).
pub fn probe() -> io::Result<()> {
    match TcpStream::connect(SocketAddr::from((PROBE_ADDR, NFS_PORT))) {
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(()),
        Err(e) => Err(e),
        Ok(s) => set_linger_zero(&s),
    }
}

/// Listeners on both ports that accept and drop, for the whole bench.
pub struct Server {
    stop: Arc<AtomicBool>,
    threads: Vec<(u16, JoinHandle<()>)>,
}

impl Server {
    pub fn start() -> Result<Server> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for port in [NFS_PORT, NOISE_PORT] {
            let l = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).with_context(|| {
                format!("cannot listen on 127.0.0.1:{port} (is an NFS server or another bench running?)")
            })?;
            // A deep accept queue: if it overflows, the kernel drops SYNs and a
            // client waits a whole SYN retry (1 s), which would swamp the
            // numbers. listen() again only raises the backlog (capped by somaxconn).
            // SAFETY: a valid listening fd.
            if unsafe { listen(l.as_raw_fd(), 4096) } != 0 {
                bail!("listen(127.0.0.1:{port}): {}", io::Error::last_os_error());
            }
            let stop = stop.clone();
            let h = std::thread::Builder::new().name(format!("accept-{port}")).spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    // Dropping the accepted socket is all the server does.
                    let _ = l.accept();
                }
            })?;
            threads.push((port, h));
        }
        Ok(Server { stop, threads })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for (port, h) in self.threads.drain(..) {
            // Wake the blocked accept() so the thread sees the flag.
            let _ = connect_once(port);
            let _ = h.join();
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct StormResult {
    /// Connects to the NFS port that succeeded.
    pub made: u64,
    /// Connects to the noise port that succeeded.
    pub noise: u64,
    /// connect() calls that failed (any port).
    pub failed: u64,
    pub elapsed: Duration,
}

impl StormResult {
    /// NFS-port connects per second of storm wall time (noise included in the
    /// time: it is the same in every run, so ratios are unaffected).
    pub fn rate(&self) -> f64 {
        self.made as f64 / self.elapsed.as_secs_f64()
    }
}

/// `connects` NFS-port connects spread over `threads` threads, all started
/// together, with noise; the time runs from the start signal to the last
/// thread's end.
pub fn run(connects: u64, threads: u32) -> Result<StormResult> {
    storm(NFS_PORT, Some(NOISE_PORT), connects, threads)
}

/// `connects` connects to `port` alone, no noise: for the run-time runs,
/// where every program run must belong to connects of one kind.
/// `made` counts the connects to `port`.
pub fn run_to(port: u16, connects: u64, threads: u32) -> Result<StormResult> {
    storm(port, None, connects, threads)
}

fn storm(port: u16, noise_port: Option<u16>, connects: u64, threads: u32) -> Result<StormResult> {
    let barrier = Arc::new(Barrier::new(threads as usize + 1));
    let mut handles = Vec::new();
    for i in 0..threads as u64 {
        // Spread the remainder so the total is exact.
        let share = connects / threads as u64 + u64::from(i < connects % threads as u64);
        let barrier = barrier.clone();
        handles.push(std::thread::Builder::new().name(format!("storm-{i}")).spawn(move || {
            let (mut made, mut noise, mut failed) = (0u64, 0u64, 0u64);
            let mut first_err: Option<io::Error> = None;
            barrier.wait();
            for n in 0..share {
                if let Some(noise_port) = noise_port
                    && n % NOISE_EVERY == NOISE_EVERY - 1
                {
                    match connect_once(noise_port) {
                        Ok(()) => noise += 1,
                        Err(e) => {
                            failed += 1;
                            first_err.get_or_insert(e);
                        }
                    }
                }
                match connect_once(port) {
                    Ok(()) => made += 1,
                    Err(e) => {
                        failed += 1;
                        first_err.get_or_insert(e);
                    }
                }
            }
            (made, noise, failed, first_err)
        })?);
    }
    barrier.wait();
    let t0 = Instant::now();
    let mut r = StormResult { made: 0, noise: 0, failed: 0, elapsed: Duration::ZERO };
    let mut first_err = None;
    for h in handles {
        let (m, n, f, e) = h.join().map_err(|_| anyhow::anyhow!("a storm thread panicked"))?;
        r.made += m;
        r.noise += n;
        r.failed += f;
        if first_err.is_none() {
            first_err = e;
        }
    }
    r.elapsed = t0.elapsed();
    if let Some(e) = first_err {
        eprintln!("xtask bench: warning: {} connects failed (first: {e})", r.failed);
    }
    if r.made == 0 {
        bail!("no connect to 127.0.0.1:{port} succeeded");
    }
    Ok(r)
}
