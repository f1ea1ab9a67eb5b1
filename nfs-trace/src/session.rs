//! A tracing session: checks, loads and attaches the kernel programs, then
//! drains the ring buffer through the decoder and both trackers. `watch`
//! renders what it yields; `prove` waits in it for the reconnects it forces.
use std::time::Instant;

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray, RingBuf},
};
use nfs_trace_common::{MAP_COUNTERS, MAP_EVENTS, NO_OFFSET, counter};
use tokio::io::unix::AsyncFd;

use crate::{
    kernel::btf::KernelBtf,
    host::{canary::CanaryFlows, sock_diag},
    cli::{KernelPaths, check_ports},
    kernel::decode::{self, Record},
    kernel::env,
    kernel::hooks::{self, HookStatus},
    kernel::{attach, config},
    kernel::{bpf_log, live_ports},
    kernel::lost::Lost,
    flow::{Flow, Netns},
    model::feed,
    model::tcp::Tracker,
    model::xprt::XprtTracker,
};

/// How old [`Session::lost`]'s count of skipped runs may be.
pub const MISSED_RUNS_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

pub use crate::model::feed::Obs;

/// What [`Session::drain`] hands on: a record (only with `tap_records`),
/// then what it meant.
pub enum Drained<'a> {
    Record(&'a Record),
    Obs(Obs<'a>),
}

pub struct Session {
    pub env: env::Env,
    pub ports: Vec<u16>,
    /// One status per row of `hooks::HOOKS`.
    pub hooks: Vec<HookStatus>,
    /// Start to attached.
    pub attach_ms: f64,
    pub tracker: Tracker,
    pub xtracker: XprtTracker,
    pub decode_errors: u64,
    /// `--netns`: only records of this network namespace reach the trackers.
    pub netns: Option<Netns>,
    /// Flows of `watch`'s canary connects: their records reach no tracker.
    pub canary_flows: CanaryFlows,
    /// Hand each record to the drain's consumer before feeding it
    /// (`watch --events` records them).
    pub tap_records: bool,
    /// Flows seeded into the trackers and not yet taken (`watch --events`
    /// records them: a replay seeds the same).
    pub seeded: Vec<Flow>,
    /// How seeds get their namespace.
    seed_netns: NetnsSeeds,
    /// Readable when a program woke us: the ring passed its fill level.
    ring: AsyncFd<RingBuf<MapData>>,
    counters: PerCpuArray<MapData, u64>,
    /// The programs' skipped runs when last read, and when (see [`Session::lost`]).
    missed_runs: std::cell::Cell<Option<(Instant, u64)>>,
    /// `--debug-bpf`: the programs' log.
    bpf_log: Option<bpf_log::BpfLog>,
    // Last: dropping it detaches every program.
    ebpf: Ebpf,
}

/// Whether any SunRPC hook is attached.
pub fn sunrpc_attached(hooks: &[HookStatus]) -> bool {
    hooks.iter().skip(hooks::FIRST_SUNRPC_HOOK).any(|h| h.attached)
}

impl Session {
    /// Preflight, config from this kernel's formats and BTF, load, attach.
    /// With `debug_bpf` the programs log their diagnostics (see
    /// `kernel::bpf_log`); call [`Session::flush_bpf_log`] to print them.
    /// With `netns`, only records of that network namespace are tracked.
    pub fn start(
        ports: &[u16],
        paths: &KernelPaths,
        sizes: attach::MapSizes,
        debug_bpf: bool,
        netns: Option<Netns>,
        t0: Instant,
    ) -> Result<Session> {
        let ports = check_ports(ports).map_err(|e| anyhow!("bad --port: {e}"))?;
        let env = env::preflight(paths.tracefs.as_deref(), paths.btf.as_deref())?;
        env::raise_memlock();
        env::tame_heap();
        // Our BTF (~6 MB) is freed before aya's loader parses its own copy
        // (~17 MB): they would add up in the peak RSS. The SunRPC offsets,
        // needed only with the module loaded, read it again.
        let btf = KernelBtf::from_file(&env.btf)?;
        let mut config = config::build_config(&ports, &env.tracefs, &btf)?;
        config.debug = u32::from(debug_bpf);
        let fentry_id = attach::fentry_func_id(&btf);
        drop(btf);
        let netns_readable = config.sock.skc_net != NO_OFFSET && config.sock.net_ns_inum != NO_OFFSET;
        if netns.is_some() && !netns_readable {
            bail!("--netns: this kernel's BTF lacks sock.__sk_common.skc_net or net.ns.inum, so records carry no network namespace to filter by");
        }
        let seed_netns = NetnsSeeds { readable: netns_readable, only: netns };
        // Connections already up, in every namespace, listed before attaching:
        // a reconnect from the same port after this point is a real reuse.
        let existing = sock_diag::established_everywhere(&ports);
        let (mut ebpf, mut hooks) = attach::load_and_attach_tcp(&config, sizes, fentry_id)?;
        // Kept for the session: the SunRPC programs, loaded later, use its map.
        let bpf_log = if debug_bpf { Some(bpf_log::init(&mut ebpf)?) } else { None };
        hooks.extend(attach::attach_sunrpc_from(&mut ebpf, &env.btf).unwrap_or_else(attach::sunrpc_absent));
        let attach_ms = t0.elapsed().as_secs_f64() * 1e3;
        let ring = RingBuf::try_from(ebpf.take_map(MAP_EVENTS).context("events map missing")?)
            .map_err(|e| anyhow!("events map: {e}"))?;
        // SAFETY: the RingBuf owns its map fd and keeps it open, unchanged,
        // until it is dropped, which is only with the AsyncFd that owns it.
        let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| anyhow!("cannot poll the ring buffer: {e}"))?;
        let counters = PerCpuArray::try_from(ebpf.take_map(MAP_COUNTERS).context("counters map missing")?)
            .map_err(|e| anyhow!("counters map: {e}"))?;
        let mut tracker = Tracker::new();
        let mut xtracker = XprtTracker::new(!sunrpc_attached(&hooks));
        let seeded = seed(&mut tracker, &mut xtracker, &existing, seed_netns);
        Ok(Session {
            env,
            ports,
            hooks,
            attach_ms,
            tracker,
            xtracker,
            decode_errors: 0,
            netns,
            canary_flows: CanaryFlows::default(),
            tap_records: false,
            seeded,
            seed_netns,
            ring,
            counters,
            missed_runs: std::cell::Cell::new(None),
            bpf_log,
            ebpf,
        })
    }

    /// Drains every record, handing what each means to `f` (and, with
    /// `tap_records`, the record itself first); stops early (returning
    /// false) when `f` returns false.
    pub fn drain(&mut self, mut f: impl FnMut(Drained) -> Result<bool>) -> Result<bool> {
        while let Some(item) = self.ring.get_mut().next() {
            let rec = decode::decode(&item);
            drop(item);
            if let (Some(want), Ok(r)) = (self.netns, &rec)
                && r.flow().netns != want
            {
                continue;
            }
            if let Ok(Record::Tcp(ev)) = &rec
                && self.canary_flows.is_canary(ev)
            {
                continue;
            }
            let Ok(rec) = rec else {
                self.decode_errors += 1;
                continue;
            };
            if self.tap_records && !f(Drained::Record(&rec))? {
                return Ok(false);
            }
            if !feed::record(&mut self.tracker, &mut self.xtracker, &rec, |o| f(Drained::Obs(o)))? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Waits until a program wakes the reader: the first record after the
    /// reader read everything, and every record once the ring passes its
    /// fill level (see the eBPF `submit`). Clears the readiness: the caller
    /// drains next.
    pub async fn ring_filling(&self) {
        match self.ring.readable().await {
            Ok(mut guard) => guard.clear_ready(),
            // Not pollable after all: the timer alone drains, as before.
            Err(_) => std::future::pending().await,
        }
    }

    /// Records and sockets the kernel could not record, so far. The
    /// programs' skipped runs come from a file per program (fdinfo), read
    /// at most every [`MISSED_RUNS_EVERY`]: once a second they took ~3 ms of
    /// the bench's TCG guest's vCPU per read, an eighth of an idle tracer's.
    /// [`Session::lost_now`] reads them whatever their age.
    pub fn lost(&self) -> Lost {
        let missed = match self.missed_runs.get() {
            Some((at, n)) if at.elapsed() < MISSED_RUNS_EVERY => n,
            _ => self.read_missed_runs(),
        };
        self.lost_with(missed)
    }

    /// [`Session::lost`] with the skipped runs read now (the summary).
    pub fn lost_now(&self) -> Lost {
        self.lost_with(self.read_missed_runs())
    }

    fn lost_with(&self, missed_runs: u64) -> Lost {
        let sum = |i: u32| self.counters.get(&i, 0).map(|v| v.iter().sum::<u64>()).unwrap_or(0);
        Lost { events: sum(counter::LOST_EVENTS), sockets: sum(counter::LOST_SOCKETS), connects: sum(counter::LOST_CONNECTS), missed_runs }
    }

    fn read_missed_runs(&self) -> u64 {
        let n = self
            .ebpf
            .programs()
            .filter_map(|(_, p)| p.fd().ok())
            .map(|fd| crate::kernel::lost::recursion_misses(std::os::fd::AsRawFd::as_raw_fd(&std::os::fd::AsFd::as_fd(fd))))
            .sum();
        self.missed_runs.set(Some((Instant::now(), n)));
        n
    }

    /// Sockets the kernel programs hold state for now (the SOCKS map): for
    /// soak runs, which check that state stays bounded. One syscall per key.
    pub fn kernel_sockets(&self) -> usize {
        // The value is the kernel's SockState, read as plain bytes.
        self.ebpf
            .map(nfs_trace_common::MAP_SOCKS)
            .and_then(|m| aya::maps::HashMap::<_, u64, [u8; nfs_trace_common::SOCK_STATE_BYTES]>::try_from(m).ok())
            .map(|h| h.keys().filter(|k| k.is_ok()).count())
            .unwrap_or(0)
    }

    /// Whether the hook on `target` (as HOOKS names it) is attached.
    pub fn hook_attached(&self, target: &str) -> bool {
        self.hooks.iter().any(|h| h.name == target && h.attached)
    }

    /// RPC major timeouts come from rpc_timeout_status (else from the
    /// kernel's "not responding" lines).
    pub fn rpc_timeouts_traced(&self) -> bool {
        self.hook_attached("rpc_timeout_status")
    }

    /// Attaches the SunRPC hooks if sunrpc was loaded since; returns
    /// (attached, of) when it just did.
    pub fn poll_sunrpc(&mut self) -> Option<(usize, usize)> {
        if sunrpc_attached(&self.hooks) || !hooks::sunrpc_loaded() {
            return None;
        }
        let st = attach::attach_sunrpc_from(&mut self.ebpf, &self.env.btf)?;
        let on = st.iter().filter(|h| h.attached).count();
        let of = st.len();
        self.hooks.truncate(hooks::FIRST_SUNRPC_HOOK);
        self.hooks.extend(st);
        self.xtracker.from_tcp = !sunrpc_attached(&self.hooks);
        Some((on, of))
    }

    /// Prints what the programs logged since the last call (`--debug-bpf`).
    pub fn flush_bpf_log(&mut self) {
        if let Some(l) = self.bpf_log.as_mut() {
            l.flush();
        }
    }

    /// Watches `port` too from now on (an NFS mount on a port outside
    /// `--port`): sets it in the kernel's live port map, and seeds the
    /// trackers with its connections already up, as at start. Returns false
    /// when it was watched already.
    pub fn watch_port(&mut self, port: u16) -> Result<bool> {
        if self.ports.contains(&port) {
            return Ok(false);
        }
        live_ports::add(&mut self.ebpf, port)?;
        self.ports.push(port);
        let seeded = seed(&mut self.tracker, &mut self.xtracker, &sock_diag::established_everywhere(&[port]), self.seed_netns);
        self.seeded.extend(seeded);
        Ok(true)
    }
}

/// How seeds are tagged: whether the programs read namespaces at all, and
/// the one `--netns` keeps.
#[derive(Clone, Copy)]
struct NetnsSeeds {
    readable: bool,
    only: Option<Netns>,
}

/// Connections already up when their port began to be watched: each is the
/// previous flow for its first reconnect, in the network namespace sock_diag
/// listed it in. With `--netns`, only that namespace's; where the kernel
/// programs cannot read a socket's namespace, records say unknown, and so
/// do the seeds, so that they still meet. Returns the flows seeded.
fn seed(tracker: &mut Tracker, xtracker: &mut XprtTracker, existing: &[sock_diag::TcpSock], netns: NetnsSeeds) -> Vec<Flow> {
    let mut seeded = Vec::new();
    for sk in existing {
        let ns = if netns.readable { Netns(sk.netns) } else { Netns::UNKNOWN };
        if netns.only.is_some_and(|n| n != ns) {
            continue;
        }
        let flow = Flow { laddr: sk.laddr, sport: sk.lport, raddr: sk.raddr, dport: sk.rport, netns: ns };
        tracker.seed(flow);
        xtracker.seed(flow);
        seeded.push(flow);
    }
    seeded
}
