//! Kernel programs of nfs-trace.
//!
//! Tracepoints first: they exist where kprobes do not (e.g. kernels built
//! without CONFIG_KPROBES). Every program follows aya-template's shape,
//! `fn x(ctx) -> u32 { try_x(ctx).unwrap_or(0) }`; all filtering and
//! per-socket state stays in the kernel so userspace does near-zero work per
//! connect (see ../shared/FINDINGS.md §7).
#![no_std]
#![no_main]

mod diag;
mod maps;
mod sunrpc;
mod tcp;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach a panic; this only
    // satisfies the compiler.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
