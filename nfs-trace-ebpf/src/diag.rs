//! `--debug-bpf` diagnostics: things the programs cannot report any other
//! way (a struct field read that failed, a value no kernel should give),
//! sent through aya-log to userspace, which prints them on stderr.
//!
//! Each check is inlined at its call site behind `CONFIG.debug`, a
//! load-time constant: without the flag the verifier sees the branch can
//! never be taken and removes it, so the programs run exactly the
//! instructions they would without logging. The logging itself is a BPF
//! subprogram (`inline(never)`): inlined at every field read, aya-log's
//! record building overflows the 512-byte BPF stack.
use aya_log_ebpf::{error, warn};
use nfs_trace_common::{AF_INET, AF_INET6};

use crate::maps::config;

/// Whether diagnostics are on (`--debug-bpf`).
#[inline(always)]
fn on() -> bool {
    config().debug != 0
}

/// bpf_probe_read_kernel of `size` bytes at `base + off` failed with `err`:
/// a wrong offset (the BTF of another kernel given with --btf?) or a pointer
/// that was not what the tracepoint promised.
#[inline(always)]
pub fn read_failed(base: u64, off: u32, size: usize, err: i32) {
    if on() {
        log_read_failed(base, off, size as u32, err);
    }
}

#[inline(never)]
fn log_read_failed(base: u64, off: u32, size: u32, err: i32) {
    error!(&(), "probe read of {} bytes at {:x}+{} failed: error {}", size, base, off, err);
}

/// A watched socket reported an address family other than AF_INET/AF_INET6.
#[inline(always)]
pub fn check_family(sk: u64, family: u16) {
    if on() && family != AF_INET && family != AF_INET6 {
        log_odd_family(sk, family);
    }
}

#[inline(never)]
fn log_odd_family(sk: u64, family: u16) {
    warn!(&(), "socket {:x} toward a watched port has address family {} (not AF_INET/AF_INET6)", sk, family);
}

/// A sunrpc event came before userspace stored the module's struct offsets
/// (or they could not be read from its BTF): its destination is unknown.
#[inline(always)]
pub fn no_xprt_offsets(xprt: u64) {
    if on() {
        log_no_xprt_offsets(xprt);
    }
}

#[inline(never)]
fn log_no_xprt_offsets(xprt: u64) {
    warn!(&(), "xprt {:x}: sunrpc struct offsets not set, event dropped (destination unknown)", xprt);
}
