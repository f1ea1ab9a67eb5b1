//! Every hook nfs-trace uses, in one table, and the status each got here
//! (`attach` loads and attaches them).
//!
//! Tracepoints first: they work where kprobes do not (kernels without
//! CONFIG_KPROBES, or that refuse fentry). Optional hooks that fail leave a
//! reason in the table; only a missing required hook stops `watch`.
use std::path::Path;

use anyhow::{Result, bail};
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HookKind {
    Tracepoint,
    RawTracepoint,
    Fentry,
    Kprobe,
}

impl HookKind {
    pub fn name(&self) -> &'static str {
        match self {
            HookKind::Tracepoint => "tracepoint",
            HookKind::RawTracepoint => "raw_tracepoint",
            HookKind::Fentry => "fentry",
            HookKind::Kprobe => "kprobe",
        }
    }
}

/// One row of the hook table.
#[derive(Debug)]
pub struct Hook {
    /// What is hooked, as the kernel names it.
    pub target: &'static str,
    pub kind: HookKind,
    /// Program name in the eBPF object.
    pub program: &'static str,
    /// Kernels that have it.
    pub kernels: &'static str,
    /// What happens without it.
    pub fallback: &'static str,
    pub required: bool,
}

/// THE hook table. README's hook table is this one, in prose.
pub const HOOKS: &[Hook] = &[
    // TRACE_EVENT(inet_sock_set_state, sk, oldstate, newstate)
    Hook {
        target: "sock:inet_sock_set_state",
        kind: HookKind::Tracepoint,
        program: "inet_sock_set_state",
        kernels: "4.16+",
        fallback: "none: required (every connect, outcome and close comes from it)",
        required: true,
    },
    // TRACE_EVENT(tcp_retransmit_skb, sk, skb)
    Hook {
        target: "tcp:tcp_retransmit_skb",
        kind: HookKind::Tracepoint,
        program: "tcp_retransmit_skb",
        kernels: "4.15+",
        fallback: "SYN retransmits are not counted or shown live, and no data retransmits mark an established flow unanswered (episode phase a)",
        required: false,
    },
    // int tcp_connect(struct sock *sk). The kprobe first: it needs no kernel
    // BTF parse in aya (~100 ms and ~18 MB of peak memory), and one probe
    // per connect costs next to nothing either way.
    Hook {
        target: "tcp_connect",
        kind: HookKind::Kprobe,
        program: "tcp_connect_kprobe",
        kernels: "CONFIG_KPROBES",
        fallback: "fentry on tcp_connect",
        required: false,
    },
    Hook {
        target: "tcp_connect",
        kind: HookKind::Fentry,
        program: "tcp_connect_fentry",
        kernels: "5.5+ with BTF and BPF trampolines",
        fallback: "first-SYN time not stamped (SYN_SENT is timed from the state change)",
        required: false,
    },
    // The SunRPC layer: tracepoints of the sunrpc module, attached by name
    // (raw) once the module is loaded. Without them nfs-trace works at the
    // TCP level; TCP events still carry their xprt from sk_user_data.
    // TP_PROTO(const struct rpc_xprt *xprt, struct socket *socket, int error)
    sunrpc("rpc_socket_connect", "sunrpc module (4.18+)", "transport connects seen at TCP level only"),
    // TP_PROTO(const struct rpc_xprt *xprt, struct socket *socket)
    sunrpc("rpc_socket_state_change", "sunrpc module (4.18+)", "transport state seen at TCP level only"),
    sunrpc("rpc_socket_close", "sunrpc module (4.18+)", "transport closes seen at TCP level only"),
    sunrpc("rpc_socket_shutdown", "sunrpc module (4.18+)", "transport shutdowns seen at TCP level only"),
    // TP_PROTO(const struct rpc_xprt *xprt, struct socket *socket, int error)
    sunrpc("rpc_socket_error", "sunrpc module (4.18+)", "socket errors not tied to their transport"),
    sunrpc("rpc_socket_reset_connection", "sunrpc module (4.18+)", "connection resets not tied to their transport"),
    // TP_PROTO(const struct rpc_xprt *xprt)
    sunrpc("xprt_create", "sunrpc module (5.8+)", "transports known from their first socket event"),
    sunrpc("xprt_destroy", "sunrpc module (5.8+)", "transports expire by age instead of on destroy"),
    sunrpc("xprt_disconnect_auto", "sunrpc module (5.8+)", "drop reason from socket events only"),
    sunrpc("xprt_disconnect_done", "sunrpc module (5.8+)", "drop reason from socket events only"),
    sunrpc("xprt_disconnect_force", "sunrpc module (5.8+)", "forced disconnects not told apart"),
    // TP_PROTO(const struct rpc_task *task): once per major timeout.
    sunrpc(
        "rpc_timeout_status",
        "sunrpc module (5.3+) with BTF for rpc_task (module BTF: 5.11+)",
        "RPC major timeouts from the kernel's \"not responding\" lines (rate-limited, per server, not per transport)",
    ),
];

const fn sunrpc(target: &'static str, kernels: &'static str, fallback: &'static str) -> Hook {
    Hook { target, kind: HookKind::RawTracepoint, program: target, kernels, fallback, required: false }
}

/// Index of the first SunRPC hook in [`HOOKS`].
pub const FIRST_SUNRPC_HOOK: usize = 4;

/// Where the kernel says a module is loaded, and where its BTF is.
const SUNRPC_MODULE: &str = "/sys/module/sunrpc";
pub(crate) const SUNRPC_BTF: &str = "/sys/kernel/btf/sunrpc";

pub fn sunrpc_loaded() -> bool {
    Path::new(SUNRPC_MODULE).exists()
}

/// What happened to one hook on this kernel.
#[derive(Clone, Debug, Serialize)]
pub struct HookStatus {
    pub name: String,
    pub kind: HookKind,
    pub attached: bool,
    /// Why not attached, or "attached".
    pub detail: String,
}

pub(super) fn attached(h: &Hook) -> HookStatus {
    HookStatus { name: h.target.into(), kind: h.kind, attached: true, detail: "attached".into() }
}

pub(super) fn not_attached(h: &Hook, why: String) -> HookStatus {
    HookStatus { name: h.target.into(), kind: h.kind, attached: false, detail: why }
}

/// Statuses for when nothing could be tried (e.g. not root).
pub fn not_tried(why: &str) -> Vec<HookStatus> {
    HOOKS.iter().map(|h| not_attached(h, why.into())).collect()
}

/// Fails unless the required hook is attached (for `probes`' exit status).
pub fn require_attached(status: &[HookStatus]) -> Result<()> {
    match status.first() {
        Some(s) if s.attached => Ok(()),
        Some(s) => bail!("{} not attached: {}", s.name, s.detail),
        None => bail!("no hooks"),
    }
}

