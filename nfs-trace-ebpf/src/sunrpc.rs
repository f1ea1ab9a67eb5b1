//! SunRPC transport (xprt) events, from the sunrpc module's tracepoints.
//!
//! Raw tracepoints attach by name once the module is loaded (5.0+) and give
//! the TP_PROTO arguments: the `struct rpc_xprt *` (stable across reconnects
//! of one transport; recycled after xprt_destroy) and, for rpc_socket_*, the
//! `struct socket *`. Struct fields are read through BTF offsets: vmlinux's
//! in CONFIG, sunrpc's in the XPRT_OFFSETS map (the module may load after us).
//! These also fire for other RPC clients (rpcbind over AF_LOCAL, NFSv4.0
//! callbacks): only TCP/IP transports toward a watched port are kept.
use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use nfs_trace_common::{AF_INET, AF_INET6, NO_OFFSET, XprtEvent, XprtOffsets, counter, kind, xprt_event};

use crate::maps::{EVENTS, XPRT_OFFSETS, config, count, netns_inum, read_at, submit, watched};

/// IPv4 as v4-mapped IPv6, like the TCP tracepoints store it.
#[inline(always)]
fn v4_mapped(a: [u8; 4]) -> [u8; 16] {
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3]]
}

fn xprt_offsets() -> XprtOffsets {
    match XPRT_OFFSETS.get(0) {
        Some(o) if o.valid != 0 => *o,
        _ => XprtOffsets { xprt_addr: NO_OFFSET, srcport: NO_OFFSET, valid: 0, xprt_net: NO_OFFSET, task_xprt: NO_OFFSET, task_start: NO_OFFSET },
    }
}

/// The destination from `xprt->addr` (a sockaddr_in or sockaddr_in6):
/// (family, port in host order, address).
#[inline(always)]
fn xprt_dest(xprt: u64, xo: &XprtOffsets) -> (u16, u16, [u8; 16]) {
    if xo.xprt_addr == NO_OFFSET {
        return (0, 0, [0; 16]);
    }
    let family: u16 = read_at(xprt, xo.xprt_addr);
    let port = u16::from_be(read_at::<u16>(xprt, xo.xprt_addr + 2));
    let addr = if family == AF_INET {
        v4_mapped(read_at(xprt, xo.xprt_addr + 4))
    } else if family == AF_INET6 {
        read_at(xprt, xo.xprt_addr + 8)
    } else {
        [0; 16]
    };
    (family, port, addr)
}

/// `sock_xprt.srcport`, and whether it is known: 0 is a real value
/// ("remembers no port"), so an unknown one must not look like it. Known
/// means this kernel's BTF gave the offset (a read of a live transport
/// does not fault). Kept this cheap on purpose: an Option-returning read
/// here grew the socket programs' stack past what 5.10's verifier allows
/// (512 bytes with the memcpy subprogram: "combined stack size ... 544").
#[inline(always)]
fn srcport(xprt: u64, xo: &XprtOffsets) -> (u16, u8) {
    (read_at(xprt, xo.srcport), u8::from(xo.srcport != NO_OFFSET && xprt != 0))
}

/// The transport's network namespace: `xprt->xprt_net`, where the sunrpc
/// BTF gives that offset, else the socket's (`sk->skc_net`; the socket is
/// made in `xprt_net`, so both name the same one; 5.10 has no module BTF).
/// 0 when neither is known.
#[inline(always)]
fn xprt_netns(cfg: &nfs_trace_common::Config, xprt: u64, sk: u64, xo: &XprtOffsets) -> u32 {
    let net = if xo.xprt_net != NO_OFFSET { read_at::<u64>(xprt, xo.xprt_net) } else { read_at::<u64>(sk, cfg.sock.skc_net) };
    netns_inum(cfg, net)
}

/// rpc_socket_* events: (xprt, socket[, error]).
#[inline(always)]
fn try_socket_event(ctx: &RawTracePointContext, what: u8, has_error: bool) -> Result<u32, i64> {
    let cfg = config();
    let so = &cfg.sock;
    let xo = xprt_offsets();
    let xprt: u64 = ctx.arg(0);
    let socket: u64 = ctx.arg(1);
    // Read no more arguments than the tracepoint has: the verifier checks it.
    let error = if has_error { ctx.arg::<u64>(2) as i32 } else { 0 };

    let sk: u64 = read_at(socket, so.socket_sk);
    let family: u16 = read_at(sk, so.skc_family);
    let (xfamily, xport, xaddr) = xprt_dest(xprt, &xo);
    // A socket of another family (AF_LOCAL rpcbind) or no IP destination at all.
    let fam = if family != 0 { family } else { xfamily };
    if fam != AF_INET && fam != AF_INET6 {
        return Ok(0);
    }
    let sk_dport = u16::from_be(read_at::<u16>(sk, so.skc_dport));
    let dport = if xport != 0 { xport } else { sk_dport };
    if !watched(cfg, dport) {
        return Ok(0);
    }
    let (saddr, sk_daddr) = if family == AF_INET6 {
        (read_at::<[u8; 16]>(sk, so.skc_v6_rcv_saddr), read_at::<[u8; 16]>(sk, so.skc_v6_daddr))
    } else if family == AF_INET {
        (v4_mapped(read_at(sk, so.skc_rcv_saddr)), v4_mapped(read_at(sk, so.skc_daddr)))
    } else {
        ([0; 16], [0; 16])
    };
    let Some(mut entry) = EVENTS.reserve::<XprtEvent>(0) else {
        count(counter::LOST_EVENTS);
        return Ok(0);
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: exclusively owned reserved slot; every field written before submit.
    unsafe {
        (*ev).kind = kind::XPRT;
        (*ev).what = what;
        (*ev).sk_state = read_at(sk, so.skc_state);
        (*ev).sock_state = read_at::<i32>(socket, so.socket_state) as u8;
        (*ev).pid = (bpf_get_current_pid_tgid() >> 32) as u32;
        (*ev).ts_ns = bpf_ktime_get_ns();
        (*ev).xprt = xprt;
        (*ev).sk = sk;
        (*ev).saddr = saddr;
        (*ev).daddr = if xfamily != 0 { xaddr } else { sk_daddr };
        (*ev).comm = bpf_get_current_comm().unwrap_or([0; 16]);
        (*ev).error = error;
        (*ev).sk_err = read_at(sk, so.sk_err);
        (*ev).sport = read_at(sk, so.skc_num);
        (*ev).dport = dport;
        let (port, known) = srcport(xprt, &xo);
        (*ev).srcport = port;
        (*ev).srcport_known = known;
        (*ev).family = fam;
        (*ev)._pad0 = 0;
        (*ev)._pad1 = 0;
        (*ev).netns = xprt_netns(cfg, xprt, sk, &xo);
    }
    submit(entry);
    Ok(0)
}

/// xprt_* lifetime events: (xprt) only.
#[inline(always)]
fn try_xprt_event(ctx: &RawTracePointContext, what: u8) -> Result<u32, i64> {
    let xo = xprt_offsets();
    let xprt: u64 = ctx.arg(0);
    if xo.valid == 0 {
        crate::diag::no_xprt_offsets(xprt);
    }
    xprt_record(&xo, xprt, what, 0)
}

/// One record about transport `xprt` with no socket at hand: its
/// destination, remembered port and namespace from the transport itself.
#[inline(always)]
fn xprt_record(xo: &XprtOffsets, xprt: u64, what: u8, task_start_ns: u64) -> Result<u32, i64> {
    let cfg = config();
    let xo = *xo;
    let (family, dport, daddr) = xprt_dest(xprt, &xo);
    if (family != AF_INET && family != AF_INET6) || !watched(cfg, dport) {
        return Ok(0);
    }
    let Some(mut entry) = EVENTS.reserve::<XprtEvent>(0) else {
        count(counter::LOST_EVENTS);
        return Ok(0);
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: exclusively owned reserved slot; zeroed, then filled.
    unsafe {
        core::ptr::write_bytes(ev, 0, 1);
        (*ev).kind = kind::XPRT;
        (*ev).what = what;
        (*ev).pid = (bpf_get_current_pid_tgid() >> 32) as u32;
        (*ev).ts_ns = bpf_ktime_get_ns();
        (*ev).xprt = xprt;
        (*ev).daddr = daddr;
        (*ev).comm = bpf_get_current_comm().unwrap_or([0; 16]);
        (*ev).dport = dport;
        let (port, known) = srcport(xprt, &xo);
        (*ev).srcport = port;
        (*ev).srcport_known = known;
        (*ev).family = family;
        (*ev).netns = xprt_netns(cfg, xprt, 0, &xo);
        (*ev).task_start_ns = task_start_ns;
    }
    submit(entry);
    Ok(0)
}

// TP_PROTO(const struct rpc_xprt *xprt, struct socket *socket, int error)
#[raw_tracepoint(tracepoint = "rpc_socket_connect")]
pub fn rpc_socket_connect(ctx: RawTracePointContext) -> u32 {
    try_socket_event(&ctx, xprt_event::CONNECT, true).unwrap_or(0)
}

// TP_PROTO(const struct rpc_xprt *xprt, struct socket *socket)
#[raw_tracepoint(tracepoint = "rpc_socket_state_change")]
pub fn rpc_socket_state_change(ctx: RawTracePointContext) -> u32 {
    try_socket_event(&ctx, xprt_event::STATE_CHANGE, false).unwrap_or(0)
}

// TP_PROTO(const struct rpc_xprt *xprt, struct socket *socket)
#[raw_tracepoint(tracepoint = "rpc_socket_close")]
pub fn rpc_socket_close(ctx: RawTracePointContext) -> u32 {
    try_socket_event(&ctx, xprt_event::CLOSE, false).unwrap_or(0)
}

// TP_PROTO(const struct rpc_xprt *xprt, struct socket *socket)
#[raw_tracepoint(tracepoint = "rpc_socket_shutdown")]
pub fn rpc_socket_shutdown(ctx: RawTracePointContext) -> u32 {
    try_socket_event(&ctx, xprt_event::SHUTDOWN, false).unwrap_or(0)
}

// TP_PROTO(const struct rpc_xprt *xprt, struct socket *socket, int error)
#[raw_tracepoint(tracepoint = "rpc_socket_error")]
pub fn rpc_socket_error(ctx: RawTracePointContext) -> u32 {
    try_socket_event(&ctx, xprt_event::ERROR, true).unwrap_or(0)
}

// TP_PROTO(const struct rpc_xprt *xprt, struct socket *socket, int error)
#[raw_tracepoint(tracepoint = "rpc_socket_reset_connection")]
pub fn rpc_socket_reset_connection(ctx: RawTracePointContext) -> u32 {
    try_socket_event(&ctx, xprt_event::RESET_CONNECTION, true).unwrap_or(0)
}

// TP_PROTO(const struct rpc_xprt *xprt), 5.8+ for the lifetime events.
#[raw_tracepoint(tracepoint = "xprt_create")]
pub fn xprt_create(ctx: RawTracePointContext) -> u32 {
    try_xprt_event(&ctx, xprt_event::CREATE).unwrap_or(0)
}

#[raw_tracepoint(tracepoint = "xprt_destroy")]
pub fn xprt_destroy(ctx: RawTracePointContext) -> u32 {
    try_xprt_event(&ctx, xprt_event::DESTROY).unwrap_or(0)
}

#[raw_tracepoint(tracepoint = "xprt_disconnect_auto")]
pub fn xprt_disconnect_auto(ctx: RawTracePointContext) -> u32 {
    try_xprt_event(&ctx, xprt_event::DISCONNECT_AUTO).unwrap_or(0)
}

#[raw_tracepoint(tracepoint = "xprt_disconnect_done")]
pub fn xprt_disconnect_done(ctx: RawTracePointContext) -> u32 {
    try_xprt_event(&ctx, xprt_event::DISCONNECT_DONE).unwrap_or(0)
}

#[raw_tracepoint(tracepoint = "xprt_disconnect_force")]
pub fn xprt_disconnect_force(ctx: RawTracePointContext) -> u32 {
    try_xprt_event(&ctx, xprt_event::DISCONNECT_FORCE).unwrap_or(0)
}

// TP_PROTO(const struct rpc_task *task): fires at each major timeout of an
// RPC (rpc_check_timeout), the moment the kernel prints "not responding" —
// never per RPC. The transport is `task->tk_xprt`; userspace attaches this
// only where BTF gave that offset.
#[raw_tracepoint(tracepoint = "rpc_timeout_status")]
pub fn rpc_timeout_status(ctx: RawTracePointContext) -> u32 {
    try_rpc_timeout(&ctx).unwrap_or(0)
}

#[inline(always)]
fn try_rpc_timeout(ctx: &RawTracePointContext) -> Result<u32, i64> {
    let xo = xprt_offsets();
    if xo.task_xprt == NO_OFFSET {
        return Ok(0);
    }
    let task: u64 = ctx.arg(0);
    let xprt = read_at::<u64>(task, xo.task_xprt);
    if xprt == 0 {
        return Ok(0);
    }
    // When the RPC was created: a timeout of one sent during a hang that
    // has just ended belongs to that hang (0 when not known).
    let start = read_at::<u64>(task, xo.task_start);
    xprt_record(&xo, xprt, xprt_event::RPC_TIMEOUT, start)
}
