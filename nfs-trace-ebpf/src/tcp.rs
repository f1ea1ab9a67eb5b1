//! TCP connects toward the watched ports.
//!
//! `sock:inet_sock_set_state` (4.16+) gives every state change with ports and
//! addresses; field offsets come from its `format` file via CONFIG because they
//! move between kernels. `tcp:tcp_retransmit_skb` counts SYN retransmits, and
//! data retransmits of established watched connections that get no ACK
//! (phase (a) of an episode: the flow stops being answered). The
//! optional `tcp_connect` kprobe/fentry stamps when the first SYN leaves.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, generated},
    macros::{fentry, kprobe, tracepoint},
    programs::{FEntryContext, ProbeContext, TracePointContext},
};
use aya_ebpf::EbpfContext as _;
use nfs_trace_common::{
    ConnEvent, Config, IPPROTO_TCP, NO_OFFSET, SET_STATE_DIRECT, SetStateOffsets, counter, kind,
    tcp_state::{CLOSE, ESTABLISHED, LISTEN, SYN_RECV, SYN_SENT},
};

use crate::maps::{EVENTS, SOCKS, SockState, config, count, netns_inum, read_at, submit, watched, watched_in_place, in_live_bitmap};

/// `sk_user_data` carries flag bits in its low bits (SK_USER_DATA_NOCOPY,
/// _BPF, _PSOCK); the pointer is 8-aligned.
const SK_USER_DATA_PTRMASK: u64 = !7;

/// `bpf_map_update_elem` flag (uapi bpf.h), and the errno it fails with
/// when the key exists.
const BPF_NOEXIST: u64 = 1;
const EEXIST: i32 = 17;

/// How long a run of data retransmits without ACK progress lasts before it
/// is reported (see `data_retransmit`).
const UNANSWERED_NS: u64 = 1_000_000_000;

#[tracepoint(category = "sock", name = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    try_inet_sock_set_state(&ctx).unwrap_or(0)
}

/// The full program as a BPF-to-BPF call for the filters below: a call,
/// not a tail call, because a program that tail-calls gets a longer JIT
/// prologue (the tail-call counter), which every unwatched socket's state
/// change would pay (+1.4 ns per run against the bpftrace one-liner in
/// `cargo xtask bench`, with 6 instructions against its 8).
#[inline(never)]
fn set_state_full(ctx: TracePointContext) -> u32 {
    try_inet_sock_set_state(&ctx).unwrap_or(0)
}

/// What `sock:inet_sock_set_state` runs where its record has the direct
/// layout: every state change of every TCP socket on the host comes here,
/// so this does the port test alone (one load from the record, a compare
/// per `--port`) and calls the full program for a watched port. The
/// full program's own code (the config pointer through the stack, the
/// layout switch, the masks LLVM adds where the two layouts meet, the live
/// ports) is then paid by watched sockets only.
#[tracepoint(category = "sock", name = "inet_sock_set_state")]
pub fn set_state_filter(ctx: TracePointContext) -> u32 {
    if watched_in_place(direct_dport(&ctx)) {
        return set_state_full(ctx);
    }
    0
}

/// [`set_state_filter`] for the usual single `--port` (the loader picks
/// it): the one compare, with not even `nports` loaded.
#[tracepoint(category = "sock", name = "inet_sock_set_state")]
pub fn set_state_filter1(ctx: TracePointContext) -> u32 {
    // SAFETY: an aligned read of a field of the static the loader froze
    // (volatile: LLVM must not fold the zero initialiser).
    if direct_dport(&ctx) == unsafe { core::ptr::read_volatile(&raw const crate::maps::CONFIG.ports[0]) } {
        return set_state_full(ctx);
    }
    0
}

/// Beside [`set_state_filter`] once a port was added at run time (an NFS
/// mount on a port outside `--port`): the live bitmap's ports. The two
/// never both pass a socket (userspace adds only ports CONFIG lacks).
#[tracepoint(category = "sock", name = "inet_sock_set_state")]
pub fn set_state_live(ctx: TracePointContext) -> u32 {
    if in_live_bitmap(direct_dport(&ctx)) {
        return set_state_full(ctx);
    }
    0
}

#[inline(always)]
fn direct_dport(ctx: &TracePointContext) -> u16 {
    // SAFETY: a constant, 2-aligned offset inside the record; the loader
    // attaches these programs only where the kernel has that layout.
    unsafe { core::ptr::read_volatile(ctx.as_ptr().cast::<u8>().add(SET_STATE_DIRECT.dport as usize).cast::<u16>()) }
}



/// The fields of one `sock:inet_sock_set_state` record. Where the kernel's
/// layout is [`SET_STATE_DIRECT`] (`direct`, a load-time constant, so the
/// verifier drops the other branch) a field is one plain load from the
/// context; elsewhere one bpf_probe_read_kernel at the offset from this
/// kernel's format file. Every state change of every TCP socket on the host
/// runs this program, so this is its fixed cost.
#[derive(Clone, Copy)]
struct SetState<'a> {
    ctx: &'a TracePointContext,
    o: &'a SetStateOffsets,
    direct: bool,
}

impl SetState<'_> {
    /// `T` at `direct_off` (aligned to its size, as the verifier wants for
    /// context loads) or, probed, at `off`.
    #[inline(always)]
    fn get<T: Copy + Default>(&self, direct_off: u16, off: u16) -> T {
        if self.direct {
            // SAFETY: a constant, size-aligned offset inside the record, in
            // the layout the loader checked this kernel has.
            unsafe { core::ptr::read_volatile(self.ctx.as_ptr().cast::<u8>().add(direct_off as usize).cast::<T>()) }
        } else {
            // SAFETY: offsets come from this kernel's format file for this
            // tracepoint; read_at copies through the checked helper.
            unsafe { self.ctx.read_at::<T>(off as usize) }.unwrap_or_default()
        }
    }

    #[inline(always)]
    fn sk(&self) -> u64 {
        self.get(SET_STATE_DIRECT.skaddr, self.o.skaddr)
    }
    #[inline(always)]
    fn oldstate(&self) -> u8 {
        self.get::<i32>(SET_STATE_DIRECT.oldstate, self.o.oldstate) as u8
    }
    #[inline(always)]
    fn newstate(&self) -> u8 {
        self.get::<i32>(SET_STATE_DIRECT.newstate, self.o.newstate) as u8
    }
    #[inline(always)]
    fn protocol(&self) -> u16 {
        if !self.direct && self.o.protocol_size == 1 {
            return self.get::<u8>(0, self.o.protocol) as u16;
        }
        self.get(SET_STATE_DIRECT.protocol, self.o.protocol)
    }
    #[inline(always)]
    fn sport(&self) -> u16 {
        self.get(SET_STATE_DIRECT.sport, self.o.sport)
    }
    #[inline(always)]
    fn dport(&self) -> u16 {
        self.get(SET_STATE_DIRECT.dport, self.o.dport)
    }
    #[inline(always)]
    fn family(&self) -> u16 {
        self.get(SET_STATE_DIRECT.family, self.o.family)
    }
    /// A 16-byte address as two u64 halves (two aligned loads, no memcpy).
    /// The v6 fields hold IPv4 as v4-mapped (TP_STORE_ADDRS), so one read
    /// covers both families.
    #[inline(always)]
    fn addr(&self, direct_off: u16, off: u16) -> [u64; 2] {
        if self.direct {
            [self.get(direct_off, 0), self.get(direct_off + 8, 0)]
        } else {
            self.get(0, off)
        }
    }
}

fn try_inet_sock_set_state(ctx: &TracePointContext) -> Result<u32, i64> {
    let cfg = config();
    let f = SetState { ctx, o: &cfg.set_state, direct: cfg.set_state_direct != 0 };
    // Only sockets toward a watched port ever get state, so the port (one
    // load from the record) rules out every other socket on the host first,
    // in every state: listeners (port 0), the server side of connections
    // (their remote port is the client's), everything else. Before, each
    // state change of an unwatched socket paid a socket-map lookup: 125 ns
    // per run on the bench's unwatched storm against a bpftrace one-liner's
    // 76.
    if !watched(cfg, f.dport()) {
        return Ok(0);
    }
    let newstate = f.newstate();

    if newstate == SYN_SENT {
        // An active open starts: only TCP gets state. (Only here is the
        // protocol checked: the map holds nothing else, so every later
        // lookup by socket implies TCP.)
        if f.protocol() != IPPROTO_TCP as u16 {
            return Ok(0);
        }
        let sk = f.sk();
        // A SunRPC transport's socket points back at its rpc_xprt
        // (xs_tcp_finish_connecting sets sk_user_data before connecting).
        let xprt = read_at::<u64>(sk, cfg.sock.sk_user_data) & SK_USER_DATA_PTRMASK;
        // Its network namespace, so two containers' flows with the same
        // addresses stay apart: two reads, paid only here (a watched socket
        // starting to connect), never on the unwatched path above.
        let netns = netns_inum(cfg, read_at::<u64>(sk, cfg.sock.skc_net));
        // Built field by field with scalar stores: aya's bpf_get_current_comm
        // wrapper and the byte arrays cost four memset calls and ~40 byte
        // copies here.
        let mut st = core::mem::MaybeUninit::<SockState>::uninit();
        let p = st.as_mut_ptr();
        // SAFETY: every field of the stack value is written before it is
        // read; the helper writes at most 16 bytes into `comm` (zeroing it
        // on failure).
        let st = unsafe {
            (*p).start_ns = bpf_ktime_get_ns();
            // Volatile: LLVM would merge adjacent zero stores into a memset call.
            core::ptr::write_volatile(&raw mut (*p).syn_ns, 0);
            core::ptr::write_volatile(&raw mut (*p).established_ns, 0);
            (*p).xprt = xprt;
            put16(&raw mut (*p).comm, [0, 0]);
            generated::bpf_get_current_comm((&raw mut (*p).comm).cast(), 16);
            (*p).pid = (bpf_get_current_pid_tgid() >> 32) as u32;
            (*p).syn_retrans = 0;
            (*p).state = SYN_SENT;
            (*p).first_exit = 0;
            (*p)._pad0 = 0;
            (*p).netns = netns;
            (*p).data_retrans = 0;
            (*p).run_una = 0;
            core::ptr::write_volatile(&raw mut (*p).run_ns, 0);
            st.assume_init_ref()
        };
        if SOCKS.insert(sk, st, 0).is_err() {
            // The map is full (E2BIG): this socket's connect and close will
            // never be reported. Counted as both, so connects made = seen +
            // lost connects still holds.
            count(counter::LOST_SOCKETS);
            count(counter::LOST_CONNECTS);
        }
        return Ok(0);
    }

    let oldstate = f.oldstate();
    // Changes that need no map lookup, dropped first: listeners, and the
    // passive side (a listener's child goes LISTEN→SYN_RECV→ESTABLISHED: the
    // server half of every connect). A tracked socket reaches SYN_RECV only
    // from SYN_SENT (simultaneous open, reported below); leaving SYN_RECV
    // other than to CLOSE would only update `state`, which is read nowhere
    // but as "still SYN_SENT?". SYN_RECV→CLOSE still looks the socket up: a
    // tracked one gets its CLOSED record.
    if newstate == LISTEN
        || oldstate == LISTEN
        || (oldstate == SYN_RECV && newstate != CLOSE)
        || (newstate == SYN_RECV && oldstate != SYN_SENT)
    {
        return Ok(0);
    }

    // Every other change matters only for sockets we saw start.
    let sk = f.sk();
    let Some(stp) = SOCKS.get_ptr_mut(sk) else {
        return Ok(0);
    };
    // SAFETY: a live map value; one socket's state changes are serialised by
    // the socket lock, so no other program writes this entry concurrently.
    let st = unsafe { &mut *stp };
    let now = unsafe { bpf_ktime_get_ns() };
    st.state = newstate;

    let ev_kind = if oldstate == SYN_SENT {
        if newstate == ESTABLISHED {
            st.established_ns = now;
        }
        kind::CONNECT_DONE
    } else if newstate == CLOSE {
        kind::CLOSED
    } else {
        if oldstate == ESTABLISHED && st.first_exit == 0 {
            st.first_exit = newstate;
        }
        // Intermediate states (FIN_WAIT*, CLOSE_WAIT, ...) cost no record.
        return Ok(0);
    };
    if ev_kind == kind::CLOSED && st.first_exit == 0 {
        st.first_exit = CLOSE;
    }

    emit(&f, cfg, sk, st, ev_kind, oldstate, newstate, now);
    if newstate == CLOSE {
        // Whether or not its record fit: every socket passes CLOSE before it
        // is freed, so no entry outlives its socket. (A delete fails only on
        // a bucket lock taken by a nested program on this CPU; none of ours
        // that write SOCKS can nest: tracepoint programs do not.)
        let _ = SOCKS.remove(sk);
    }
    Ok(0)
}

/// Copies 16 bytes as two u64s: a plain array copy becomes a call to the
/// object's memmove subprogram.
#[inline(always)]
unsafe fn put16(dst: *mut [u8; 16], v: [u64; 2]) {
    // SAFETY: the caller's `dst` is 8-aligned (ConnEvent and SockState keep
    // their 16-byte arrays at multiples of 8).
    unsafe {
        // Volatile, or LLVM turns a zero pair into a memset call.
        let d = dst.cast::<u64>();
        d.write_volatile(v[0]);
        d.add(1).write_volatile(v[1]);
    }
}

#[inline(always)]
fn get16(src: &[u8; 16]) -> [u64; 2] {
    let s = (src as *const [u8; 16]).cast::<u64>();
    // SAFETY: 8-aligned (see put16), 16 readable bytes.
    unsafe { [s.read(), s.add(1).read()] }
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn emit(
    f: &SetState,
    cfg: &nfs_trace_common::Config,
    sk: u64,
    st: &SockState,
    ev_kind: u8,
    oldstate: u8,
    newstate: u8,
    now: u64,
) {
    let Some(mut entry) = EVENTS.reserve::<ConnEvent>(0) else {
        count(counter::LOST_EVENTS);
        if ev_kind == kind::CONNECT_DONE {
            count(counter::LOST_CONNECTS);
        }
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points at a reserved, exclusively owned ring buffer slot of
    // the right size; every field is written before submit.
    unsafe {
        (*ev).ts_ns = now;
        (*ev).sk = sk;
        (*ev).start_ns = st.start_ns;
        (*ev).syn_ns = st.syn_ns;
        (*ev).established_ns = st.established_ns;
        (*ev).xprt = st.xprt;
        put16(&raw mut (*ev).comm, get16(&st.comm));
        (*ev).pid = st.pid;
        (*ev).syn_retrans = st.syn_retrans;
        (*ev).kind = ev_kind;
        (*ev).oldstate = oldstate;
        (*ev).newstate = newstate;
        (*ev).first_exit = st.first_exit;
        (*ev)._pad = 0;
        (*ev).netns = st.netns;
        (*ev)._pad1 = 0;
        (*ev).err = read_at::<i32>(sk, cfg.sock.sk_err);
        (*ev).sport = f.sport();
        (*ev).dport = f.dport();
        (*ev).family = f.family();
        crate::diag::check_family(sk, (*ev).family);
        put16(&raw mut (*ev).saddr, f.addr(SET_STATE_DIRECT.saddr_v6, f.o.saddr_v6));
        put16(&raw mut (*ev).daddr, f.addr(SET_STATE_DIRECT.daddr_v6, f.o.daddr_v6));
    }
    submit(entry);
}

#[tracepoint(category = "tcp", name = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb(ctx: TracePointContext) -> u32 {
    try_tcp_retransmit_skb(&ctx).unwrap_or(0)
}

fn try_tcp_retransmit_skb(ctx: &TracePointContext) -> Result<u32, i64> {
    let cfg = config();
    let o = &cfg.retransmit;
    // SAFETY: offsets from this kernel's format file of tcp_retransmit_skb.
    let sk: u64 = unsafe { ctx.read_at(o.skaddr as usize) }.map_err(|e| e as i64)?;
    let Some(stp) = SOCKS.get_ptr_mut(sk).or_else(|| adopt(ctx, cfg, sk)) else {
        return Ok(0);
    };
    // SAFETY: live map value, writes to one socket serialised by its lock.
    let st = unsafe { &mut *stp };
    match st.state {
        // A SYN retransmit is rare and is exactly what a stalled reconnect
        // looks like, so each one is reported as it happens.
        SYN_SENT => {
            st.syn_retrans += 1;
            report_retransmit(ctx, cfg, sk, st, kind::SYN_RETRANSMIT, st.syn_retrans, st.syn_ns);
        }
        ESTABLISHED => data_retransmit(ctx, cfg, sk, st),
        _ => {}
    }
    Ok(0)
}

/// A socket toward a watched port that retransmits but was never seen
/// connecting: one established before the tracer started (an SRE starts
/// `watch` on a host whose mount already hangs). It gets state from here
/// on, so its data retransmits and its close are seen; when it was
/// established is not known, so both times are now (its `lifetime_ms`
/// counts from here), and no process is named (this runs in timer or
/// softirq context).
#[inline(always)]
fn adopt(ctx: &TracePointContext, cfg: &Config, sk: u64) -> Option<*mut SockState> {
    // SAFETY: offset from this kernel's format file of tcp_retransmit_skb.
    let dport = unsafe { ctx.read_at::<u16>(cfg.retransmit.dport as usize) }.ok()?;
    if !watched(cfg, dport) || read_at::<u8>(sk, cfg.sock.skc_state) != ESTABLISHED {
        return None;
    }
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let st = SockState {
        start_ns: now,
        syn_ns: 0,
        established_ns: now,
        xprt: read_at::<u64>(sk, cfg.sock.sk_user_data) & SK_USER_DATA_PTRMASK,
        comm: [0; 16],
        pid: 0,
        syn_retrans: 0,
        state: ESTABLISHED,
        first_exit: 0,
        _pad0: 0,
        netns: netns_inum(cfg, read_at::<u64>(sk, cfg.sock.skc_net)),
        data_retrans: 0,
        run_una: 0,
        run_ns: 0,
    };
    // BPF_NOEXIST: a state change racing in first keeps its own. A full
    // map leaves the socket unseen: a lost socket, counted.
    if let Err(e) = SOCKS.insert(sk, &st, BPF_NOEXIST)
        && e != -EEXIST
    {
        count(counter::LOST_SOCKETS);
    }
    SOCKS.get_ptr_mut(sk)
}

/// A data retransmit on an established watched connection. Retransmits
/// with `snd_una` unchanged since a run's first one are one run without ACK
/// progress. Each retransmit of a run older than [`UNANSWERED_NS`] is
/// reported: by then it is no loss recovery (SACK recovery moves `snd_una`
/// within a round trip) but a flow nobody answers, whose RTO backoff (0.2,
/// 0.4, 0.8 … s, at most 120 s apart) makes a dozen records until the user
/// timeout. Ordinary loss reports nothing.
#[inline(always)]
fn data_retransmit(ctx: &TracePointContext, cfg: &Config, sk: u64, st: &mut SockState) {
    if cfg.sock.tcp_snd_una == NO_OFFSET {
        return;
    }
    let una = read_at::<u32>(sk, cfg.sock.tcp_snd_una);
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    if st.data_retrans == 0 || una != st.run_una {
        st.data_retrans = 1;
        st.run_una = una;
        st.run_ns = now;
        return;
    }
    st.data_retrans += 1;
    if now.saturating_sub(st.run_ns) < UNANSWERED_NS {
        return;
    }
    report_retransmit(ctx, cfg, sk, st, kind::DATA_RETRANSMIT, st.data_retrans, st.run_ns);
}

/// One retransmit record: the count `n` rides in `syn_retrans`, `since`
/// in `syn_ns` (the SYN's send time, or a data run's first retransmit).
#[inline(always)]
fn report_retransmit(ctx: &TracePointContext, cfg: &Config, sk: u64, st: &SockState, what: u8, n: u32, since: u64) {
    let o = &cfg.retransmit;
    let Some(mut entry) = EVENTS.reserve::<ConnEvent>(0) else {
        count(counter::LOST_EVENTS);
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: exclusively owned reserved slot; all fields written before submit.
    unsafe {
        core::ptr::write_bytes(ev, 0, 1);
        (*ev).ts_ns = bpf_ktime_get_ns();
        (*ev).sk = sk;
        (*ev).start_ns = st.start_ns;
        (*ev).syn_ns = since;
        (*ev).established_ns = st.established_ns;
        (*ev).xprt = st.xprt;
        (*ev).comm = st.comm;
        (*ev).pid = st.pid;
        (*ev).syn_retrans = n;
        (*ev).netns = st.netns;
        (*ev).kind = what;
        (*ev).oldstate = st.state;
        (*ev).newstate = st.state;
        (*ev).sport = ctx.read_at::<u16>(o.sport as usize).unwrap_or(0);
        (*ev).dport = ctx.read_at::<u16>(o.dport as usize).unwrap_or(0);
        (*ev).saddr = ctx.read_at::<[u8; 16]>(o.saddr_v6 as usize).unwrap_or([0; 16]);
        (*ev).daddr = ctx.read_at::<[u8; 16]>(o.daddr_v6 as usize).unwrap_or([0; 16]);
    }
    submit(entry);
}

/// `int tcp_connect(struct sock *sk)`: builds and sends the first SYN, after
/// the source port was chosen. Optional: the time from SYN_SENT to here is the
/// time spent picking a source port (long when the port range is exhausted).
#[kprobe]
pub fn tcp_connect_kprobe(ctx: ProbeContext) -> u32 {
    match ctx.arg::<u64>(0) {
        Some(sk) => try_stamp_syn(sk).unwrap_or(0),
        None => 0,
    }
}

#[fentry(function = "tcp_connect")]
pub fn tcp_connect_fentry(ctx: FEntryContext) -> u32 {
    try_stamp_syn(ctx.arg::<u64>(0)).unwrap_or(0)
}

fn try_stamp_syn(sk: u64) -> Result<u32, i64> {
    if let Some(stp) = SOCKS.get_ptr_mut(sk) {
        // SAFETY: live map value; the connecting task holds the socket lock.
        unsafe { (*stp).syn_ns = bpf_ktime_get_ns() };
    }
    Ok(0)
}
