//! Maps and the load-time config shared by all programs.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray, RingBuf, ring_buf::RingBufEntry},
};
use nfs_trace_common::{
    Config, DEFAULT_RINGBUF_BYTES, LIVE_PORT_WORDS, SOCKS_MAX_ENTRIES, XprtOffsets, counter, live_port_bit,
};

/// Written by the loader before load (`override_global("CONFIG")`), so the
/// verifier and JIT see constants.
#[unsafe(no_mangle)]
pub static CONFIG: Config = Config::ZERO;

/// The config, through a pointer the compiler cannot see through: without
/// that it would fold the zero-initialised static into constants before the
/// loader patches it. A reference, not a copy: a volatile read of the whole
/// struct cost ~55 loads and stack spills at the start of every run; now
/// each field is loaded where it is used (and the verifier, which knows the
/// frozen .rodata values, still drops the branches they rule out).
#[inline(always)]
pub fn config() -> &'static Config {
    let p: *const Config = &CONFIG;
    // SAFETY: reads back a valid pointer to a valid, aligned static; the
    // volatile read only hides which static it points at.
    unsafe { &*core::ptr::read_volatile(&p) }
}

/// Records for userspace. The size is set by the loader (`--ringbuf-kb`).
#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RINGBUF_BYTES, 0);

/// What we know of each socket that connects toward a watched port, from
/// SYN_SENT until CLOSE (the loader sizes it). A plain hash, not an LRU: an
/// LRU insert never fails, it silently evicts another socket (and with it
/// that socket's connect or close record). Here an insert into a full map
/// fails and is counted; an entry leaves only at its socket's CLOSE.
#[map(name = "SOCKS")]
pub static SOCKS: HashMap<u64, SockState> = HashMap::with_max_entries(SOCKS_MAX_ENTRIES, 0);

/// Per-CPU counters of what could not be recorded (see `counter`).
#[map(name = "COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// sunrpc struct offsets, filled in by userspace when the module is there
/// (it may load after us, so these cannot be load-time constants).
#[map(name = "XPRT_OFFSETS")]
pub static XPRT_OFFSETS: Array<XprtOffsets> = Array::with_max_entries(1, 0);

/// Ports watched since start, set by userspace when an NFS mount on a port
/// outside CONFIG appears (CONFIG is .rodata: frozen at load). A bitmap of
/// all ports (see `live_port_bit`).
#[map(name = "LIVE_PORTS")]
pub static LIVE_PORTS: Array<u64> = Array::with_max_entries(LIVE_PORT_WORDS, 0);

/// Non-zero once userspace has set a LIVE_PORTS bit. A plain global in a
/// section of its own, which aya loads as a one-entry array map
/// (`MAP_LIVE_ANY`, written at run time unlike CONFIG): the program reads it
/// with one load from a constant address, no map lookup. Until a mount on a
/// port outside `--port` appears — for most tracers, never — an unwatched
/// socket's state change costs the CONFIG compare and this load only.
#[unsafe(no_mangle)]
#[unsafe(link_section = ".data.live_any")]
pub static mut LIVE_ANY: u32 = 0;

/// CONFIG's ports alone, each field read in place (volatile: LLVM must not
/// fold the zero initialiser), for the filter program: no pointer through
/// the stack, the first port compared before `nports` is read, and nothing
/// else loaded. The verifier drops the compares of slots past `nports` (a
/// frozen .rodata constant). Ports added at run time are the live
/// program's (`set_state_live`), attached only once there is one.
#[inline(always)]
pub fn watched_in_place(port: u16) -> bool {
    // SAFETY: aligned reads of fields of a static the loader froze.
    unsafe {
        if core::ptr::read_volatile(&raw const CONFIG.ports[0]) == port {
            return true;
        }
        let n = core::ptr::read_volatile(&raw const CONFIG.nports) as usize;
        let mut i = 1;
        while i < nfs_trace_common::MAX_PORTS {
            if i < n && core::ptr::read_volatile(&raw const CONFIG.ports[i]) == port {
                return true;
            }
            i += 1;
        }
    }
    false
}

/// Whether `port` is watched: CONFIG's ports (compared against constants),
/// else, once any port was added at run time, the live bitmap (an array
/// lookup, which the kernel inlines). Every state change of every TCP socket
/// starts with this test, so it is the tracer's fixed cost on a host's
/// unrelated traffic: with the bitmap looked up every time it cost 80 ns per
/// run against the bpftrace one-liner's 77 on the bench's unwatched storm.
#[inline(always)]
pub fn watched(cfg: &Config, port: u16) -> bool {
    cfg.watches(port) || live_watched(port)
}

/// Whether `port` was added at run time (LIVE_ANY, then the bitmap).
#[inline(always)]
fn live_watched(port: u16) -> bool {
    // SAFETY: a plain aligned u32 global; userspace may write it at any
    // time, and a stale read only delays the first connect seen toward a
    // port just added (which userspace announces as "from now on").
    if unsafe { core::ptr::read_volatile(&raw const LIVE_ANY) } == 0 {
        return false;
    }
    in_live_bitmap(port)
}

/// The bitmap alone (for the live program, attached only once a port was
/// added, so it needs no flag).
#[inline(always)]
pub fn in_live_bitmap(port: u16) -> bool {
    let (word, bit) = live_port_bit(port);
    matches!(LIVE_PORTS.get(word), Some(w) if *w & bit != 0)
}

/// Per-socket state, kept from SYN_SENT until CLOSE.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SockState {
    pub start_ns: u64,
    pub syn_ns: u64,
    pub established_ns: u64,
    pub xprt: u64,
    pub comm: [u8; 16],
    pub pid: u32,
    pub syn_retrans: u32,
    /// The state the socket is in now, as last seen by the tracepoint.
    pub state: u8,
    /// The first state after ESTABLISHED (0 until it leaves ESTABLISHED).
    pub first_exit: u8,
    /// Padding as a scalar: a zeroed byte array would be a memset call.
    pub _pad0: u16,
    /// Inode of the socket's network namespace, read at SYN_SENT (0: unknown).
    pub netns: u32,
    /// Data retransmits since the ACK last moved on (ESTABLISHED only),
    /// `snd_una` when the run began, and when its first retransmit left.
    pub data_retrans: u32,
    pub run_una: u32,
    pub run_ns: u64,
}

// Userspace reads SOCKS values as SOCK_STATE_BYTES bytes.
const _: () = assert!(core::mem::size_of::<SockState>() == nfs_trace_common::SOCK_STATE_BYTES);

/// `bpf_ringbuf_submit` flags and `bpf_ringbuf_query` selectors (uapi bpf.h).
/// No flag: the kernel's own choice, a wakeup when the reader has caught up.
const BPF_RB_WAKE_IF_CAUGHT_UP: u64 = 0;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;

/// Submits a record. A wakeup per record was the largest cost under a
/// connect storm (FINDINGS §7), so most records wake nobody: with flags 0
/// the kernel wakes the reader only when this record is the first one past
/// the consumer position (`bpf_ringbuf_commit`: consumer == this record),
/// i.e. the reader had read everything before it. That is exact across
/// CPUs (of two records reserved at once, the earlier one's commit sees
/// the consumer at its own position), so an idle reader may sleep; a busy
/// one reads at most once per DRAIN_EVERY (cmd/watch.rs) and so takes one
/// wakeup per drain however many records came. Once the unread data passes
/// the fill level the loader set (a quarter of the ring), the reader is
/// late: then each submit wakes it, so a late drain does not become lost
/// records.
#[inline(always)]
pub fn submit<T>(entry: RingBufEntry<T>) {
    let flags = if EVENTS.query(BPF_RB_AVAIL_DATA) >= u64::from(config().ring_wake_bytes) {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_WAKE_IF_CAUGHT_UP
    };
    entry.submit(flags);
}

#[inline(always)]
pub fn count(idx: u32) {
    if let Some(p) = COUNTERS.get_ptr_mut(idx) {
        // SAFETY: a per-CPU slot, only this CPU writes it while we run.
        unsafe { *p += 1 };
    }
}

/// Inode of the network namespace `net` (a `struct net *`): `net->ns.inum`.
/// 0 when the offset is unknown, `net` is NULL or the read fails; no
/// namespace has inode 0, so userspace reads 0 as "unknown".
#[inline(always)]
pub fn netns_inum(cfg: &Config, net: u64) -> u32 {
    read_at::<u32>(net, cfg.sock.net_ns_inum)
}

/// Reads a kernel value at `base + off`; NO_OFFSET means "unknown field".
#[inline(always)]
pub fn read_at<T: Default>(base: u64, off: u32) -> T {
    if off == nfs_trace_common::NO_OFFSET || base == 0 {
        return T::default();
    }
    // SAFETY: bpf_probe_read_kernel copies through a checked helper that
    // faults safely on a bad address; `off` comes from this kernel's BTF.
    match unsafe { aya_ebpf::helpers::bpf_probe_read_kernel((base + off as u64) as *const T) } {
        Ok(v) => v,
        Err(e) => {
            crate::diag::read_failed(base, off, core::mem::size_of::<T>(), e);
            T::default()
        }
    }
}
