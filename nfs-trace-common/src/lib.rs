//! Types shared by the kernel programs (`nfs-trace-ebpf`) and the loader
//! (`nfs-trace`). One source of truth for every layout that crosses the
//! user/kernel boundary: events on the ring buffer and the load-time config.
#![no_std]

/// The most destination ports the in-kernel filter holds (`--port`).
pub const MAX_PORTS: usize = 8;

/// Names of the maps and globals, so loader and programs cannot drift apart.
pub const MAP_EVENTS: &str = "EVENTS";
pub const MAP_COUNTERS: &str = "COUNTERS";
pub const MAP_SOCKS: &str = "SOCKS";
pub const GLOBAL_CONFIG: &str = "CONFIG";
/// Ports watched since start (NFS mounts on ports outside `--port`).
pub const MAP_LIVE_PORTS: &str = "LIVE_PORTS";
/// The programs' `LIVE_ANY` flag (non-zero once a port was added): a global
/// in a section of its own, which aya loads as a one-entry array map named
/// after the section.
pub const MAP_LIVE_ANY: &str = ".data.live_any";
/// Name of aya-log's record map (`--debug-bpf` diagnostics).
pub const MAP_BPF_LOG: &str = "AYA_LOGS";

/// `LIVE_PORTS` is a bitmap of every port: bit `p % 64` of word `p / 64`.
/// 8 KiB holds all 65,536 ports, so it never fills, and a lookup is one
/// array access (the verifier inlines array lookups: no helper call).
pub const LIVE_PORT_WORDS: u32 = 65536 / 64;

/// Where port `p` lives in `LIVE_PORTS`: (word index, bit mask).
#[inline(always)]
pub const fn live_port_bit(p: u16) -> (u32, u64) {
    ((p >> 6) as u32, 1u64 << (p & 63))
}

/// Default ring buffer size in bytes (power of two, multiple of the page size).
pub const DEFAULT_RINGBUF_BYTES: u32 = 1 << 20;
/// Sockets the kernel tracks at once by default (from SYN_SENT to CLOSE
/// toward a watched port; `watch --socks-max` for tests). A plain hash map,
/// preallocated: ~136 bytes of kernel memory per entry (4.5 MB; memlock as
/// `bpftool map show` says), room for a busy host's NFS connections many
/// times over. A socket that finds it full is counted (`LOST_SOCKETS`, and
/// its connect in `LOST_CONNECTS`).
pub const SOCKS_MAX_ENTRIES: u32 = 32768;

/// Size of the kernel's per-socket state (a SOCKS map value); userspace
/// only counts entries, reading values as this many bytes.
pub const SOCK_STATE_BYTES: usize = 80;

/// Indexes into the per-CPU `COUNTERS` array.
pub mod counter {
    /// Records that could not be reserved on the ring buffer (lost events).
    pub const LOST_EVENTS: u32 = 0;
    /// Sockets whose state could not be stored (the socket map was full):
    /// their connect and close are never reported.
    pub const LOST_SOCKETS: u32 = 1;
    /// Connect attempts not reported: records leaving SYN_SENT that could
    /// not be reserved, plus the connects of lost sockets. Connects made =
    /// connects seen + this, exactly.
    pub const LOST_CONNECTS: u32 = 2;
    /// Number of counters.
    pub const COUNT: u32 = 3;
}

/// What a record on the ring buffer says. One connect costs two records
/// (leaving SYN_SENT, reaching CLOSE): the per-record cost is what a storm
/// pays for, so nothing is emitted for states in between.
pub mod kind {
    /// The socket left SYN_SENT: `newstate` is ESTABLISHED or CLOSE.
    pub const CONNECT_DONE: u8 = 1;
    /// A SYN of a socket still in SYN_SENT was retransmitted.
    pub const SYN_RETRANSMIT: u8 = 2;
    /// An established connection reached CLOSE.
    pub const CLOSED: u8 = 3;
    /// A SunRPC transport (xprt) event: an [`XprtEvent`] record.
    pub const XPRT: u8 = 4;
    /// Data of an established connection was retransmitted again without
    /// the peer's ACK moving on, more than a second after the run's first
    /// retransmit (a black-holed flow's RTO backoff; loss recovery never
    /// lasts that long). In this record `syn_retrans` is the run's
    /// retransmit count and `syn_ns` when the run's first retransmit left.
    pub const DATA_RETRANSMIT: u8 = 5;
}

/// What an [`XprtEvent`] reports: which SunRPC tracepoint fired.
pub mod xprt_event {
    /// rpc_socket_connect(xprt, socket, error): the transport started a connect.
    pub const CONNECT: u8 = 1;
    /// rpc_socket_state_change(xprt, socket): the TCP socket changed state.
    pub const STATE_CHANGE: u8 = 2;
    /// rpc_socket_close(xprt, socket).
    pub const CLOSE: u8 = 3;
    /// rpc_socket_shutdown(xprt, socket).
    pub const SHUTDOWN: u8 = 4;
    /// rpc_socket_error(xprt, socket, error).
    pub const ERROR: u8 = 5;
    /// rpc_socket_reset_connection(xprt, socket, error).
    pub const RESET_CONNECTION: u8 = 6;
    /// xprt_create(xprt).
    pub const CREATE: u8 = 7;
    /// xprt_destroy(xprt): the pointer may be reused after this.
    pub const DESTROY: u8 = 8;
    /// xprt_disconnect_auto(xprt).
    pub const DISCONNECT_AUTO: u8 = 9;
    /// xprt_disconnect_done(xprt).
    pub const DISCONNECT_DONE: u8 = 10;
    /// xprt_disconnect_force(xprt).
    pub const DISCONNECT_FORCE: u8 = 11;
    /// rpc_timeout_status(task): an RPC of the transport `task->tk_xprt`
    /// reached a major timeout (the kernel's "not responding"; fires once
    /// per major timeout, never per RPC).
    pub const RPC_TIMEOUT: u8 = 12;
}

/// TCP states as the kernel numbers them (include/net/tcp_states.h).
pub mod tcp_state {
    pub const ESTABLISHED: u8 = 1;
    pub const SYN_SENT: u8 = 2;
    pub const SYN_RECV: u8 = 3;
    pub const FIN_WAIT1: u8 = 4;
    pub const FIN_WAIT2: u8 = 5;
    pub const TIME_WAIT: u8 = 6;
    pub const CLOSE: u8 = 7;
    pub const CLOSE_WAIT: u8 = 8;
    pub const LAST_ACK: u8 = 9;
    pub const LISTEN: u8 = 10;
    pub const CLOSING: u8 = 11;
    pub const NEW_SYN_RECV: u8 = 12;
}

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const IPPROTO_TCP: u8 = 6;

/// One TCP record on the ring buffer. Every record starts with its `kind`
/// byte, so the reader can tell record types apart. Timestamps are
/// `bpf_ktime_get_ns` (CLOCK_MONOTONIC); addresses are 16 bytes in network
/// order, IPv4 as v4-mapped IPv6 (as the tracepoints store them); ports are in
/// host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnEvent {
    /// One of [`kind`] (not XPRT).
    pub kind: u8,
    pub oldstate: u8,
    pub newstate: u8,
    /// For CLOSED: the state the connection first went to from ESTABLISHED
    /// (FIN_WAIT1: we closed first; CLOSE_WAIT: the peer did; CLOSE: reset/abort).
    pub first_exit: u8,
    /// Process (tgid) that started the connect.
    pub pid: u32,
    /// When this record was written.
    pub ts_ns: u64,
    /// The kernel's `struct sock *`, the key that joins records of one socket.
    pub sk: u64,
    /// When the socket entered SYN_SENT.
    pub start_ns: u64,
    /// When the first SYN left (tcp_connect hook); 0 where that hook is absent.
    pub syn_ns: u64,
    /// When the socket reached ESTABLISHED; 0 if it never did.
    pub established_ns: u64,
    /// The SunRPC transport that owns the socket (`sk_user_data` at connect
    /// time), 0 for other sockets: joins the TCP and SunRPC layers.
    pub xprt: u64,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// Command of the task that started the connect.
    pub comm: [u8; 16],
    /// `sk->sk_err` at the event (a positive errno), 0 if none or not readable.
    pub err: i32,
    /// SYN retransmits so far.
    pub syn_retrans: u32,
    pub sport: u16,
    pub dport: u16,
    pub family: u16,
    pub _pad: u16,
    /// Inode of the socket's network namespace (`net->ns.inum`, what
    /// `/proc/PID/ns/net` names), read once at SYN_SENT. 0 when this kernel's
    /// BTF did not give the offsets or the read failed: no namespace has
    /// inode 0, so 0 means "unknown", never a namespace.
    pub netns: u32,
    /// Padding as a scalar (a zeroed array would be a memset call in BPF).
    pub _pad1: u32,
}

/// One SunRPC transport record on the ring buffer (`kind` = XPRT). The socket
/// fields are read through `socket->sk` when the tracepoint has a socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XprtEvent {
    /// Always [`kind::XPRT`].
    pub kind: u8,
    /// One of [`xprt_event`].
    pub what: u8,
    /// TCP state of the socket (`skc_state`), 0 when there is no socket.
    pub sk_state: u8,
    /// `socket->state` (SS_CONNECTING = 2, SS_CONNECTED = 3, ...).
    pub sock_state: u8,
    pub pid: u32,
    pub ts_ns: u64,
    /// The `struct rpc_xprt *`: stable across reconnects of one transport.
    pub xprt: u64,
    /// The `struct sock *` of the transport's socket, 0 if none.
    pub sk: u64,
    pub saddr: [u8; 16],
    /// The transport's destination (from the socket, else `xprt->addr`).
    pub daddr: [u8; 16],
    pub comm: [u8; 16],
    /// The tracepoint's `error` argument (negative errno), 0 where it has none.
    pub error: i32,
    /// `sk_err` of the socket (positive errno), 0 if none.
    pub sk_err: i32,
    pub sport: u16,
    pub dport: u16,
    /// The port the transport remembers to rebind (`sock_xprt.srcport`);
    /// 0 when it remembers none (then the next connect picks a new port).
    /// Meaningful only when `srcport_known` is set.
    pub srcport: u16,
    pub family: u16,
    /// Non-zero when `srcport` was read from the transport. Zero when it
    /// could not be (no BTF for `sock_xprt`, e.g. 5.10 with sunrpc as a
    /// module, or the read faulted): then `srcport` says nothing, and in
    /// particular not "remembers none".
    pub srcport_known: u8,
    /// Padding as scalars (a zeroed array would be a memset call in BPF).
    pub _pad0: u8,
    pub _pad1: u16,
    /// Inode of the transport's network namespace (`xprt->xprt_net`, else
    /// its socket's); 0 when unknown, as in [`ConnEvent::netns`].
    pub netns: u32,
    /// For [`xprt_event::RPC_TIMEOUT`]: when the RPC that timed out was
    /// created (`rpc_task.tk_start`, CLOCK_MONOTONIC like `ts_ns`), so a
    /// timeout can be told to belong to a hang that was going on when the
    /// RPC was sent. 0 elsewhere, or when unknown.
    pub task_start_ns: u64,
}

/// Byte offsets of the `sock:inet_sock_set_state` fields, read at run time
/// from the tracepoint's `format` file (they differ between kernels).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetStateOffsets {
    pub skaddr: u16,
    pub oldstate: u16,
    pub newstate: u16,
    pub sport: u16,
    pub dport: u16,
    pub family: u16,
    pub protocol: u16,
    pub saddr: u16,
    pub daddr: u16,
    pub saddr_v6: u16,
    pub daddr_v6: u16,
    /// Size of `protocol` in bytes: __u8 on older kernels, __u16 since MPTCP
    /// (262 would alias TCP's 6 if read as one byte).
    pub protocol_size: u16,
}

/// The `sock:inet_sock_set_state` layout compiled into the program's fast
/// path: 6.18's, the same on every kernel since `protocol` became __u16
/// (MPTCP). The loader compares a kernel's format file with it field by field.
pub const SET_STATE_DIRECT: SetStateOffsets = SetStateOffsets {
    skaddr: 8,
    oldstate: 16,
    newstate: 20,
    sport: 24,
    dport: 26,
    family: 28,
    protocol: 30,
    saddr: 32,
    daddr: 36,
    saddr_v6: 40,
    daddr_v6: 56,
    protocol_size: 2,
};

/// Byte offsets of the `tcp:tcp_retransmit_skb` fields we read.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetransmitOffsets {
    pub skaddr: u16,
    pub sport: u16,
    pub dport: u16,
    pub saddr_v6: u16,
    pub daddr_v6: u16,
    pub _pad: [u16; 3],
}

/// An offset the kernel's BTF did not give: the field is not read.
/// (0 cannot mean that: `skc_daddr` really is at offset 0.)
pub const NO_OFFSET: u32 = u32::MAX;

/// Offsets in vmlinux structs, from BTF ([`NO_OFFSET`] = unknown).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockOffsets {
    /// `struct sock`.
    pub sk_err: u32,
    pub sk_user_data: u32,
    pub skc_num: u32,
    pub skc_dport: u32,
    pub skc_family: u32,
    pub skc_state: u32,
    pub skc_daddr: u32,
    pub skc_rcv_saddr: u32,
    pub skc_v6_daddr: u32,
    pub skc_v6_rcv_saddr: u32,
    /// `struct socket`.
    pub socket_sk: u32,
    pub socket_state: u32,
    /// `struct sock.__sk_common.skc_net.net` (the `struct net *`).
    pub skc_net: u32,
    /// `struct net.ns.inum` (the namespace's inode number).
    pub net_ns_inum: u32,
    /// `struct tcp_sock.snd_una`: the oldest unacknowledged sequence number.
    /// A data retransmit with it unchanged since the last one is "no ACK
    /// progress"; without it, data retransmits are not reported.
    pub tcp_snd_una: u32,
}

/// Offsets in the sunrpc module's structs, from its split BTF. They live in a
/// map rather than the CONFIG global because sunrpc may load after us.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XprtOffsets {
    /// `struct rpc_xprt.addr` (a sockaddr_storage: the destination);
    /// [`NO_OFFSET`] when unknown, like every field here.
    pub xprt_addr: u32,
    /// `struct sock_xprt.srcport` (sock_xprt embeds rpc_xprt at offset 0).
    pub srcport: u32,
    /// Non-zero once filled in.
    pub valid: u32,
    /// `struct rpc_xprt.xprt_net` (the transport's `struct net *`).
    pub xprt_net: u32,
    /// `struct rpc_task.tk_xprt` (the transport an RPC goes out on).
    pub task_xprt: u32,
    /// `struct rpc_task.tk_start` (when the RPC was created, a ktime_t).
    pub task_start: u32,
}

/// Name of the one-entry array map holding [`XprtOffsets`].
pub const MAP_XPRT_OFFSETS: &str = "XPRT_OFFSETS";

/// Everything the loader tells the programs, written into the `CONFIG`
/// global before load (so the verifier sees constants).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Destination ports to trace, host order; the first `nports` count.
    pub ports: [u16; MAX_PORTS],
    pub nports: u32,
    /// Non-zero when this kernel's `sock:inet_sock_set_state` record has
    /// exactly the [`SET_STATE_DIRECT`] layout: the program then reads its
    /// fields with plain loads at those constant offsets instead of one
    /// bpf_probe_read_kernel call per field (the verifier only allows
    /// constant offsets into a tracepoint's context).
    pub set_state_direct: u32,
    pub sock: SockOffsets,
    pub set_state: SetStateOffsets,
    pub retransmit: RetransmitOffsets,
    /// Non-zero with `--debug-bpf`: the programs log diagnostics (failed
    /// probe reads, unexpected values) through aya-log. A load-time
    /// constant, so without the flag the verifier removes those branches.
    pub debug: u32,
    /// Unread bytes on the ring buffer from which a submit wakes the reader
    /// (a quarter of the ring; below it, submits do not wake it).
    pub ring_wake_bytes: u32,
}

impl SockOffsets {
    pub const ZERO: Self = SockOffsets {
        sk_err: NO_OFFSET,
        sk_user_data: NO_OFFSET,
        skc_num: NO_OFFSET,
        skc_dport: NO_OFFSET,
        skc_family: NO_OFFSET,
        skc_state: NO_OFFSET,
        skc_daddr: NO_OFFSET,
        skc_rcv_saddr: NO_OFFSET,
        skc_v6_daddr: NO_OFFSET,
        skc_v6_rcv_saddr: NO_OFFSET,
        socket_sk: NO_OFFSET,
        socket_state: NO_OFFSET,
        skc_net: NO_OFFSET,
        net_ns_inum: NO_OFFSET,
        tcp_snd_una: NO_OFFSET,
    };
}

impl Config {
    /// All zero: what the kernel object holds until the loader patches it.
    pub const ZERO: Self = Config {
        ports: [0; MAX_PORTS],
        nports: 0,
        set_state_direct: 0,
        sock: SockOffsets::ZERO,
        set_state: SetStateOffsets {
            skaddr: 0,
            oldstate: 0,
            newstate: 0,
            sport: 0,
            dport: 0,
            family: 0,
            protocol: 0,
            saddr: 0,
            daddr: 0,
            saddr_v6: 0,
            daddr_v6: 0,
            protocol_size: 0,
        },
        retransmit: RetransmitOffsets { skaddr: 0, sport: 0, dport: 0, saddr_v6: 0, daddr_v6: 0, _pad: [0; 3] },
        debug: 0,
        ring_wake_bytes: 0,
    };

    /// Whether `port` is one of the watched destination ports. Every state
    /// change of every TCP socket on the host starts with this test, so the
    /// first port is compared before `nports` is read: the loader always
    /// sets it (`build_config` refuses an empty list and port 0), and with
    /// the usual one port an unwatched socket pays one load and one compare
    /// here (the verifier drops the other slots' code: `nports` is a frozen
    /// .rodata constant).
    #[inline(always)]
    pub fn watches(&self, port: u16) -> bool {
        if self.ports[0] == port {
            return true;
        }
        let mut i = 1;
        while i < MAX_PORTS {
            if (i as u32) < self.nports && self.ports[i] == port {
                return true;
            }
            i += 1;
        }
        false
    }
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data, #[repr(C)], every bit pattern valid, no padding
    // holes that matter (explicit _pad fields).
    unsafe impl aya::Pod for super::ConnEvent {}
    // SAFETY: as above; written into the program's .rodata before load.
    unsafe impl aya::Pod for super::Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::XprtEvent {}
    // SAFETY: as above; stored in an array map.
    unsafe impl aya::Pod for super::XprtOffsets {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_layout_is_stable() {
        // The ring buffer reader checks the record size against this.
        assert_eq!(core::mem::size_of::<ConnEvent>(), 128);
        assert_eq!(core::mem::offset_of!(ConnEvent, netns), 120);
        assert_eq!(core::mem::align_of::<ConnEvent>(), 8);
        assert_eq!(core::mem::size_of::<XprtEvent>(), 112);
        assert_eq!(core::mem::offset_of!(XprtEvent, task_start_ns), 104);
        assert_eq!(core::mem::offset_of!(XprtEvent, srcport), 92);
        assert_eq!(core::mem::offset_of!(XprtEvent, srcport_known), 96);
        assert_eq!(core::mem::offset_of!(XprtEvent, netns), 100);
        assert_eq!(core::mem::size_of::<XprtOffsets>(), 24);
        assert_eq!(core::mem::offset_of!(XprtOffsets, task_xprt), 16);
        assert_eq!(core::mem::offset_of!(XprtOffsets, task_start), 20);
        // The reader dispatches on the first byte.
        assert_eq!(core::mem::offset_of!(ConnEvent, kind), 0);
        assert_eq!(core::mem::offset_of!(XprtEvent, kind), 0);
    }

    #[test]
    fn watches_only_configured_ports() {
        let mut c = Config::default();
        c.ports[0] = 2049;
        c.ports[1] = 20049;
        c.nports = 2;
        assert!(c.watches(2049));
        assert!(c.watches(20049));
        assert!(!c.watches(0), "unused slots (0) must not match");
        c.nports = 1;
        assert!(!c.watches(20049), "a slot past nports does not count");
        assert!(!c.watches(111));
    }

    #[test]
    fn live_port_bits_cover_every_port_once() {
        let mut seen = [0u64; LIVE_PORT_WORDS as usize];
        for p in 0..=u16::MAX {
            let (w, bit) = live_port_bit(p);
            assert!(w < LIVE_PORT_WORDS);
            assert_eq!(seen[w as usize] & bit, 0, "port {p} shares a bit");
            seen[w as usize] |= bit;
        }
        assert!(seen.iter().all(|&w| w == u64::MAX));
    }
}
