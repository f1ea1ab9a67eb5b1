//! The sunrpc struct offsets the SunRPC programs read, from the module's
//! split BTF or, without one, vmlinux's; and which hooks they let decode.
use std::path::Path;

use nfs_trace_common::{NO_OFFSET, XprtOffsets};
use serde::Serialize;

use crate::kernel::{
    btf::KernelBtf,
    hooks::{Hook, SUNRPC_BTF},
};

/// The sunrpc struct offsets the programs need, where they came from, and
/// why any is unknown. `probes --json` shows this as `sunrpc_types`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SunrpcTypes {
    /// The BTF they were looked up in: the module's split BTF, or vmlinux's
    /// when there is none (sunrpc built in, or a kernel before 5.11, which
    /// has no module BTF).
    pub source: String,
    /// `struct rpc_xprt.addr` (the server's address); None when unknown.
    pub xprt_addr: Option<u32>,
    /// `struct sock_xprt.srcport` (the remembered port); None when unknown.
    pub srcport: Option<u32>,
    /// Why a field is unknown, in one phrase; None when both are known.
    pub why: Option<String>,
    /// `struct rpc_xprt.xprt_net` (the transport's network namespace);
    /// None when unknown: the programs then take the socket's namespace,
    /// and events without a socket (`xprt_*`) say netns unknown.
    pub xprt_net: Option<u32>,
    /// `struct rpc_task.tk_xprt` (the transport an RPC goes out on), for
    /// `rpc_timeout_status`; None when unknown: that hook is then not
    /// attached and RPC timeouts come from the kernel's "not responding"
    /// lines instead.
    pub task_xprt: Option<u32>,
    /// `struct rpc_task.tk_start` (when the RPC was created); None when
    /// unknown: an RPC timeout just after a hang ended is then joined to it
    /// by time alone.
    pub task_start: Option<u32>,
}

impl SunrpcTypes {
    /// Looks the types up in `module_btf` (split BTF on `vmlinux`) when that
    /// file exists, else in `vmlinux` itself.
    pub fn find(vmlinux: &KernelBtf, module_btf: &Path) -> SunrpcTypes {
        if module_btf.exists() {
            let source = module_btf.display().to_string();
            return match vmlinux.with_module(module_btf) {
                Ok(m) => Self::look_up(&m, source),
                Err(e) => SunrpcTypes { source, xprt_addr: None, srcport: None, why: Some(format!("{e:#}")), xprt_net: None, task_xprt: None, task_start: None },
            };
        }
        let mut t = Self::look_up(vmlinux, "vmlinux".into());
        if let Some(why) = &mut t.why {
            *why = format!(
                "{why}: no {} (kernels before 5.11 have no module BTF) and vmlinux's BTF lacks the type (sunrpc is a module)",
                module_btf.display()
            );
        }
        t
    }

    fn look_up(btf: &KernelBtf, source: String) -> SunrpcTypes {
        let mut why = Vec::new();
        let mut off = |s: &str, m: &str| match btf.member_offset(s, m) {
            Ok(o) => Some(o),
            Err(e) => {
                why.push(format!("{e:#}"));
                None
            }
        };
        let (xprt_addr, srcport) = (off("rpc_xprt", "addr"), off("sock_xprt", "srcport"));
        why.dedup();
        // Not in `why`: without it the socket's namespace serves (see the field).
        let xprt_net = btf.member_offset("rpc_xprt", "xprt_net").ok();
        // Not in `why` either: only rpc_timeout_status needs it, and its gate says so.
        let task_xprt = btf.member_offset("rpc_task", "tk_xprt").ok();
        let task_start = btf.member_offset("rpc_task", "tk_start").ok();
        SunrpcTypes { source, xprt_addr, srcport, why: (!why.is_empty()).then(|| why.join("; ")), xprt_net, task_xprt, task_start }
    }

    /// For the programs' XPRT_OFFSETS map: NO_OFFSET where unknown.
    pub fn offsets(&self) -> XprtOffsets {
        XprtOffsets {
            xprt_addr: self.xprt_addr.unwrap_or(NO_OFFSET),
            srcport: self.srcport.unwrap_or(NO_OFFSET),
            valid: 1,
            xprt_net: self.xprt_net.unwrap_or(NO_OFFSET),
            task_xprt: self.task_xprt.unwrap_or(NO_OFFSET),
            task_start: self.task_start.unwrap_or(NO_OFFSET),
        }
    }

    /// Whether hook `h` can report anything with these types: Ok(its
    /// status detail) or Err(why it is not attached). The xprt_* lifetime
    /// events carry no socket: their server is read from `rpc_xprt.addr`
    /// alone, and without it the program drops every record, so such a hook
    /// is not reported as attached. The rpc_socket_* events read the socket
    /// and work without either field; their remembered port is then unknown
    /// (JSON null), never 0.
    pub fn gate(&self, h: &Hook) -> Result<String, String> {
        let why = self.why.as_deref().unwrap_or("");
        let socketless = h.target.starts_with("xprt_") || h.target == "rpc_timeout_status";
        if h.target == "rpc_timeout_status" && self.task_xprt.is_none() {
            return Err(format!(
                "not attached: the RPC's transport is read from rpc_task.tk_xprt, which is unknown ({}): RPC timeouts come from the kernel's \"not responding\" lines",
                if why.is_empty() { "not in this BTF" } else { why }
            ));
        }
        if socketless && self.xprt_addr.is_none() {
            return Err(format!(
                "not attached: its records carry no socket and their server is read from rpc_xprt.addr, which is unknown ({why})"
            ));
        }
        Ok(match (self.xprt_addr, self.srcport) {
            (_, None) => format!("attached; the remembered port (sock_xprt.srcport) is unknown ({why}): reported as null, no mount credited by it"),
            (None, Some(_)) => format!("attached; rpc_xprt.addr unknown ({why}): the server is read from the socket"),
            (Some(_), Some(_)) => "attached".into(),
        })
    }
}

/// The sunrpc types of this kernel (see [`SunrpcTypes::find`]).
pub fn sunrpc_types(btf: &KernelBtf) -> SunrpcTypes {
    SunrpcTypes::find(btf, Path::new(SUNRPC_BTF))
}
