//! Every hook nfs-trace uses, in one table, and attaching them with fallbacks.
//!
//! Tracepoints first: they work where kprobes do not (kernels without
//! CONFIG_KPROBES, or that refuse fentry). Optional hooks that fail leave a
//! reason in the table; only a missing required hook stops `watch`.
use std::path::Path;

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::Array,
    programs::{FEntry, KProbe, RawTracePoint, TracePoint},
};
use nfs_trace_common::{
    Config, DEFAULT_RINGBUF_BYTES, GLOBAL_CONFIG, MAP_BPF_LOG, MAP_EVENTS, MAP_SOCKS, MAP_XPRT_OFFSETS, SOCKS_MAX_ENTRIES, NO_OFFSET, RetransmitOffsets, SET_STATE_DIRECT, SetStateOffsets,
    SockOffsets, XprtOffsets,
};
use serde::Serialize;

use crate::{kernel::btf::KernelBtf, kernel::tracefs::Format};

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
        fallback: "SYN retransmits are not counted or shown live",
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
];

const fn sunrpc(target: &'static str, kernels: &'static str, fallback: &'static str) -> Hook {
    Hook { target, kind: HookKind::RawTracepoint, program: target, kernels, fallback, required: false }
}

/// Index of the first SunRPC hook in [`HOOKS`].
pub const FIRST_SUNRPC_HOOK: usize = 4;

/// Where the kernel says a module is loaded, and where its BTF is.
const SUNRPC_MODULE: &str = "/sys/module/sunrpc";
const SUNRPC_BTF: &str = "/sys/kernel/btf/sunrpc";

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

/// The kernel programs, compiled by build.rs.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/nfs-trace"));

/// Builds the programs' config: ports, tracepoint field offsets from this
/// kernel's format files, struct offsets from its BTF.
pub fn build_config(ports: &[u16], tracefs: &Path, btf: &KernelBtf) -> Result<Config> {
    let mut c = Config::default();
    for (i, p) in ports.iter().enumerate().take(c.ports.len()) {
        c.ports[i] = *p;
    }
    c.nports = ports.len().min(c.ports.len()) as u32;
    let f = Format::read(tracefs, "sock", "inet_sock_set_state")?;
    let off = |n: &str| f.field(n).map(|x| x.offset).with_context(|| format!("sock:inet_sock_set_state.{n}"));
    let protocol = f.field("protocol").context("sock:inet_sock_set_state.protocol")?;
    c.set_state = SetStateOffsets {
        skaddr: off("skaddr")?,
        oldstate: off("oldstate")?,
        newstate: off("newstate")?,
        sport: off("sport")?,
        dport: off("dport")?,
        family: off("family")?,
        protocol: protocol.offset,
        saddr: off("saddr")?,
        daddr: off("daddr")?,
        saddr_v6: off("saddr_v6")?,
        daddr_v6: off("daddr_v6")?,
        protocol_size: protocol.size,
    };
    c.set_state_direct = u32::from(c.set_state == SET_STATE_DIRECT);
    // Optional: without it the retransmit program is simply not attached.
    if let Ok(r) = Format::read(tracefs, "tcp", "tcp_retransmit_skb")
        && let (Ok(sk), Ok(sp), Ok(dp), Ok(s6), Ok(d6)) =
            (r.field("skaddr"), r.field("sport"), r.field("dport"), r.field("saddr_v6"), r.field("daddr_v6"))
        {
            c.retransmit = RetransmitOffsets {
                skaddr: sk.offset,
                sport: sp.offset,
                dport: dp.offset,
                saddr_v6: s6.offset,
                daddr_v6: d6.offset,
                _pad: [0; 3],
            };
        }
    // NO_OFFSET where this kernel's BTF lacks a field: it is then not read
    // (an outcome shows as "closed" rather than its reason, say).
    let off = |s: &str, m: &str| btf.member_offset(s, m).unwrap_or(NO_OFFSET);
    c.sock = SockOffsets {
        sk_err: off("sock", "sk_err"),
        sk_user_data: off("sock", "sk_user_data"),
        skc_num: off("sock", "__sk_common.skc_num"),
        skc_dport: off("sock", "__sk_common.skc_dport"),
        skc_family: off("sock", "__sk_common.skc_family"),
        skc_state: off("sock", "__sk_common.skc_state"),
        skc_daddr: off("sock", "__sk_common.skc_daddr"),
        skc_rcv_saddr: off("sock", "__sk_common.skc_rcv_saddr"),
        skc_v6_daddr: off("sock", "__sk_common.skc_v6_daddr"),
        skc_v6_rcv_saddr: off("sock", "__sk_common.skc_v6_rcv_saddr"),
        socket_sk: off("socket", "sk"),
        socket_state: off("socket", "state"),
    };
    Ok(c)
}

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
}

impl SunrpcTypes {
    /// Looks the types up in `module_btf` (split BTF on `vmlinux`) when that
    /// file exists, else in `vmlinux` itself.
    pub fn find(vmlinux: &KernelBtf, module_btf: &Path) -> SunrpcTypes {
        if module_btf.exists() {
            let source = module_btf.display().to_string();
            return match vmlinux.with_module(module_btf) {
                Ok(m) => Self::look_up(&m, source),
                Err(e) => SunrpcTypes { source, xprt_addr: None, srcport: None, why: Some(format!("{e:#}")) },
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
        SunrpcTypes { source, xprt_addr, srcport, why: (!why.is_empty()).then(|| why.join("; ")) }
    }

    /// For the programs' XPRT_OFFSETS map: NO_OFFSET where unknown.
    pub fn offsets(&self) -> XprtOffsets {
        XprtOffsets {
            xprt_addr: self.xprt_addr.unwrap_or(NO_OFFSET),
            srcport: self.srcport.unwrap_or(NO_OFFSET),
            valid: 1,
            _pad: 0,
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
        let socketless = h.target.starts_with("xprt_");
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

/// Attaches the SunRPC hooks if the sunrpc module is loaded: first writes the
/// module's struct offsets for the programs, then attaches each tracepoint
/// whose records those offsets let it decode (see [`SunrpcTypes::gate`]).
/// Returns one status per SunRPC hook, or None when sunrpc is not loaded.
pub fn attach_sunrpc(ebpf: &mut Ebpf, btf: &KernelBtf) -> Option<Vec<HookStatus>> {
    if !sunrpc_loaded() {
        return None;
    }
    let mut types = sunrpc_types(btf);
    let stored = ebpf
        .map_mut(MAP_XPRT_OFFSETS)
        .ok_or_else(|| anyhow!("map {MAP_XPRT_OFFSETS} missing"))
        .and_then(|m| Array::<_, XprtOffsets>::try_from(m).map_err(|e| anyhow!("{e}")))
        .and_then(|mut a| a.set(0, types.offsets(), 0).map_err(|e| anyhow!("{e}")));
    if let Err(e) = stored {
        // The programs then read neither field.
        types = SunrpcTypes { xprt_addr: None, srcport: None, why: Some(format!("cannot store sunrpc offsets: {e:#}")), ..types };
    }
    Some(
        HOOKS[FIRST_SUNRPC_HOOK..]
            .iter()
            .map(|h| match types.gate(h) {
                Err(why) => not_attached(h, why),
                Ok(detail) => match attach_raw_tracepoint(ebpf, h) {
                    Ok(()) => HookStatus { name: h.target.into(), kind: h.kind, attached: true, detail },
                    Err(e) => not_attached(h, format!("{e:#}")),
                },
            })
            .collect(),
    )
}

/// Statuses of the SunRPC hooks while the module is absent.
pub fn sunrpc_absent() -> Vec<HookStatus> {
    HOOKS[FIRST_SUNRPC_HOOK..]
        .iter()
        .map(|h| not_attached(h, "sunrpc module not loaded: attached when it loads".into()))
        .collect()
}

/// Sizes of the maps the loader sets (`watch --ringbuf-kb`, hidden `--socks-max`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapSizes {
    /// The ring buffer, in bytes (a power of two, a multiple of the page size).
    pub ringbuf_bytes: u32,
    /// Sockets the kernel holds state for at once (the SOCKS map).
    pub socks: u32,
}

impl Default for MapSizes {
    fn default() -> Self {
        MapSizes { ringbuf_bytes: DEFAULT_RINGBUF_BYTES, socks: SOCKS_MAX_ENTRIES }
    }
}

/// Loads the object with `config` and attaches every hook it can. The
/// statuses follow [`HOOKS`] row by row.
pub fn load_and_attach(config: &Config, sizes: MapSizes, btf: &KernelBtf) -> Result<(Ebpf, Vec<HookStatus>)> {
    let (mut ebpf, mut status) = load_and_attach_tcp(config, sizes, fentry_func_id(btf))?;
    status.extend(attach_sunrpc(&mut ebpf, btf).unwrap_or_else(sunrpc_absent));
    Ok((ebpf, status))
}

/// The BTF id of the fentry hook's target, for [`load_and_attach_tcp`].
pub fn fentry_func_id(btf: &KernelBtf) -> Option<u32> {
    btf.func_id(HOOKS[3].target).ok().flatten()
}

/// Loads the object and attaches the TCP hooks (the rows of [`HOOKS`]
/// before [`FIRST_SUNRPC_HOOK`]). It needs nothing from the kernel's BTF
/// but `fentry_id` (see [`fentry_func_id`]), so a caller can free its BTF
/// before aya's loader, which parses all of vmlinux's BTF itself (see below):
/// the two would otherwise add up in the peak memory.
pub fn load_and_attach_tcp(config: &Config, sizes: MapSizes, fentry_id: Option<u32>) -> Result<(Ebpf, Vec<HookStatus>)> {
    // No kernel BTF for the loader: these programs carry no CO-RE
    // relocations (offsets come in CONFIG). aya 0.14's EbpfLoader::new()
    // still parses vmlinux BTF (~17 MB of peak memory) before `.btf(None)`
    // drops it; there is no constructor without it.
    let mut config = *config;
    config.ring_wake_bytes = sizes.ringbuf_bytes / 4;
    let mut loader = EbpfLoader::new();
    loader
        .btf(None)
        .override_global(GLOBAL_CONFIG, &config, true)
        .map_max_entries(MAP_EVENTS, sizes.ringbuf_bytes)
        .map_max_entries(MAP_SOCKS, sizes.socks);
    if config.debug == 0 {
        // Without --debug-bpf nothing writes or reads aya-log's map: one
        // page instead of its 128 KiB.
        loader.map_max_entries(MAP_BPF_LOG, page_size());
    }
    let mut ebpf = loader.load(EBPF_OBJECT).map_err(|e| anyhow!("loading the BPF object failed: {e}"))?;
    let mut status = Vec::new();

    let required = &HOOKS[0];
    attach_tracepoint(&mut ebpf, required).map_err(|e| anyhow!("cannot attach {}: {e:#}", required.target))?;
    status.push(attached(required));

    let retrans = &HOOKS[1];
    status.push(if config.retransmit.skaddr == 0 {
        not_attached(retrans, "tracepoint not in this kernel's tracefs".into())
    } else {
        match attach_tracepoint(&mut ebpf, retrans) {
            Ok(()) => attached(retrans),
            Err(e) => not_attached(retrans, format!("{e:#}")),
        }
    });

    // tcp_connect: kprobe, else fentry, else neither.
    let (kprobe, fentry) = (&HOOKS[2], &HOOKS[3]);
    match attach_kprobe(&mut ebpf, kprobe) {
        Ok(()) => {
            status.push(attached(kprobe));
            status.push(not_attached(fentry, "not needed: kprobe attached".into()));
        }
        Err(ke) => {
            status.push(not_attached(kprobe, format!("{ke:#}")));
            // aya's fentry path parses all of vmlinux's BTF again (~17 MB of
            // peak memory, ~100 ms): first ask the kernel, for the price of
            // one tiny program, whether it loads fentry programs at all.
            status.push(match fentry_id.and_then(|id| fentry_refused(id, fentry.target)) {
                Some(why) => not_attached(fentry, why),
                None => match attach_fentry(&mut ebpf, fentry) {
                    Ok(()) => attached(fentry),
                    Err(fe) => not_attached(fentry, format!("{fe:#}")),
                },
            });
        }
    }
    debug_assert_eq!(status.len(), FIRST_SUNRPC_HOOK);
    Ok((ebpf, status))
}

fn page_size() -> u32 {
    // SAFETY: sysconf only reads a system constant.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as u32 } else { 4096 }
}

/// [`attach_sunrpc`] reading the kernel's BTF from `btf_path` only when the
/// sunrpc module is loaded (its offsets need it); statuses as there, with the
/// read error as every hook's reason if the BTF cannot be read.
pub fn attach_sunrpc_from(ebpf: &mut Ebpf, btf_path: &Path) -> Option<Vec<HookStatus>> {
    if !sunrpc_loaded() {
        return None;
    }
    match KernelBtf::from_file(btf_path) {
        Ok(btf) => attach_sunrpc(ebpf, &btf),
        Err(e) => Some(HOOKS[FIRST_SUNRPC_HOOK..].iter().map(|h| not_attached(h, format!("{e:#}"))).collect()),
    }
}

fn attached(h: &Hook) -> HookStatus {
    HookStatus { name: h.target.into(), kind: h.kind, attached: true, detail: "attached".into() }
}

fn not_attached(h: &Hook, why: String) -> HookStatus {
    HookStatus { name: h.target.into(), kind: h.kind, attached: false, detail: why }
}

/// Statuses for when nothing could be tried (e.g. not root).
pub fn not_tried(why: &str) -> Vec<HookStatus> {
    HOOKS.iter().map(|h| not_attached(h, why.into())).collect()
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let p = ebpf.program_mut(name).ok_or_else(|| anyhow!("program {name} missing from the object"))?;
    p.try_into().map_err(|e| anyhow!("program {name}: {e}"))
}

fn attach_tracepoint(ebpf: &mut Ebpf, h: &Hook) -> Result<()> {
    let (cat, name) = h.target.split_once(':').expect("tracepoint targets are cat:name");
    let tp: &mut TracePoint = program(ebpf, h.program)?;
    tp.load().map_err(|e| anyhow!("load: {e}"))?;
    tp.attach(cat, name).map_err(|e| anyhow!("attach: {e}"))?;
    Ok(())
}

fn attach_raw_tracepoint(ebpf: &mut Ebpf, h: &Hook) -> Result<()> {
    let tp: &mut RawTracePoint = program(ebpf, h.program)?;
    // Loaded once; a later attach (module reloaded) reuses the loaded program.
    if tp.fd().is_err() {
        tp.load().map_err(|e| anyhow!("load: {e}"))?;
    }
    tp.attach(h.target).map_err(|e| anyhow!("attach: {e}"))?;
    Ok(())
}

fn attach_fentry(ebpf: &mut Ebpf, h: &Hook) -> Result<()> {
    let btf = Btf::from_sys_fs().map_err(|e| anyhow!("kernel BTF: {e}"))?;
    let fe: &mut FEntry = program(ebpf, h.program)?;
    fe.load(h.target, &btf).map_err(|e| anyhow!("load: {}", explain(&e.to_string())))?;
    fe.attach().map_err(|e| anyhow!("attach: {}", explain(&e.to_string())))?;
    Ok(())
}

/// Whether this kernel refuses fentry programs on `func`, asked with a raw
/// `BPF_PROG_LOAD` of the smallest fentry program there is (`r0 = 0; exit`)
/// attached by the BTF id our own reader finds. Some(reason) only when the
/// kernel answered EPERM, the answer that also refuses the real program
/// (e.g. kernels built without BPF trampolines): then aya's BTF parse is
/// skipped. Any other outcome (loaded, another errno, no such function in
/// BTF) is None: aya's own attempt decides and reports, as before.
fn fentry_refused(id: u32, func: &str) -> Option<String> {
    match probe_fentry_load(id) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => Some(format!(
            "load: {}",
            explain(&format!(
                "a minimal fentry program on {func} (BTF id {id}) was refused by BPF_PROG_LOAD: {e}"
            ))
        )),
        _ => None,
    }
}

/// `union bpf_attr` for BPF_PROG_LOAD, up to `attach_btf_obj_fd` (5.11+;
/// older kernels accept the larger size as long as the tail is zero).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    prog_btf_fd: u32,
    func_info_rec_size: u32,
    func_info: u64,
    func_info_cnt: u32,
    line_info_rec_size: u32,
    line_info: u64,
    line_info_cnt: u32,
    attach_btf_id: u32,
    attach_btf_obj_fd: u32,
    _pad: u32,
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TYPE_TRACING: u32 = 26;
const BPF_TRACE_FENTRY: u32 = 24;

/// Loads `r0 = 0; exit` as an fentry program on vmlinux BTF function
/// `btf_id`, and unloads it at once.
fn probe_fentry_load(btf_id: u32) -> std::io::Result<()> {
    // BPF_MOV64_IMM(R0, 0); BPF_EXIT_INSN().
    let insns: [u64; 2] = [u64::from_le_bytes([0xb7, 0, 0, 0, 0, 0, 0, 0]), u64::from_le_bytes([0x95, 0, 0, 0, 0, 0, 0, 0])];
    let license = c"GPL";
    let attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_TRACING,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        expected_attach_type: BPF_TRACE_FENTRY,
        attach_btf_id: btf_id,
        ..Default::default()
    };
    // SAFETY: bpf(2) reads `size` bytes of a valid, zero-padded attr whose
    // pointers (insns, license) outlive the call.
    let fd = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_PROG_LOAD, &attr as *const ProgLoadAttr, size_of::<ProgLoadAttr>() as u32)
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a program fd the kernel just gave us and nobody else holds.
    unsafe { libc::close(fd as i32) };
    Ok(())
}

fn attach_kprobe(ebpf: &mut Ebpf, h: &Hook) -> Result<()> {
    let kp: &mut KProbe = program(ebpf, h.program)?;
    kp.load().map_err(|e| anyhow!("load: {e}"))?;
    kp.attach(h.target, 0).map_err(|e| anyhow!("attach: {}", explain_kprobe(&e.to_string())))?;
    Ok(())
}

/// aya's errors name syscalls and files; say what they mean for a hook.
fn explain(msg: &str) -> String {
    let msg = msg.trim_end().trim_end_matches("Verifier output:").trim_end().trim_end_matches('.');
    if msg.contains("Operation not permitted") {
        format!("refused by this kernel (EPERM: no fentry/BPF trampolines here): {msg}")
    } else {
        msg.to_string()
    }
}

fn explain_kprobe(msg: &str) -> String {
    if Path::new("/sys/bus/event_source/devices/kprobe").exists() {
        msg.to_string()
    } else {
        format!("kprobes not supported by this kernel (CONFIG_KPROBES off; {msg})")
    }
}

/// Fails unless the required hook is attached (for `probes`' exit status).
pub fn require_attached(status: &[HookStatus]) -> Result<()> {
    match status.first() {
        Some(s) if s.attached => Ok(()),
        Some(s) => bail!("{} not attached: {}", s.name, s.detail),
        None => bail!("no hooks"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every tracepoint program of the object passes this kernel's verifier
    /// with this kernel's config, including the SunRPC ones, which are
    /// otherwise only loaded where sunrpc is (loading a raw tracepoint
    /// program needs no tracepoint). Needs root, tracefs and BTF, which CI
    /// has: without them it fails, saying which is missing.
    #[test]
    fn tracepoint_programs_pass_the_verifier() {
        let env = crate::kernel::env::preflight(None, None)
            .unwrap_or_else(|e| panic!("this test loads BPF programs and needs root, tracefs and kernel BTF: {e:#}"));
        crate::kernel::env::raise_memlock();
        let btf = KernelBtf::from_file(&env.btf).unwrap();
        // Both builds: as run by default and with --debug-bpf's logging.
        for debug in [0, 1] {
            let mut config = build_config(&[2049], &env.tracefs, &btf).unwrap();
            config.debug = debug;
            let mut ebpf = EbpfLoader::new()
                .btf(None)
                .override_global(GLOBAL_CONFIG, &config, true)
                .load(EBPF_OBJECT)
                .unwrap();
            for h in HOOKS {
                match h.kind {
                    HookKind::Tracepoint => {
                        let tp: &mut TracePoint = program(&mut ebpf, h.program).unwrap();
                        tp.load().unwrap_or_else(|e| panic!("{} (debug={debug}): {e}", h.program));
                    }
                    HookKind::RawTracepoint => {
                        let tp: &mut RawTracePoint = program(&mut ebpf, h.program).unwrap();
                        tp.load().unwrap_or_else(|e| panic!("{} (debug={debug}): {e}", h.program));
                    }
                    HookKind::Kprobe | HookKind::Fentry => {}
                }
            }
        }
    }

    /// Collects the programs' log records (what `--debug-bpf` prints).
    #[derive(Default)]
    struct Collect(std::sync::Mutex<Vec<String>>);

    impl log::Log for Collect {
        fn enabled(&self, _: &log::Metadata) -> bool {
            true
        }
        fn log(&self, r: &log::Record) {
            self.0.lock().unwrap().push(crate::kernel::bpf_log::line(r.level(), &r.args().to_string()));
        }
        fn flush(&self) {}
    }

    /// `union bpf_attr` for BPF_PROG_TEST_RUN.
    #[repr(C)]
    #[derive(Default)]
    struct TestRunAttr {
        prog_fd: u32,
        retval: u32,
        data_size_in: u32,
        data_size_out: u32,
        data_in: u64,
        data_out: u64,
        repeat: u32,
        duration: u32,
        ctx_size_in: u32,
        ctx_size_out: u32,
        ctx_in: u64,
        ctx_out: u64,
        flags: u32,
        cpu: u32,
        batch_size: u32,
        _pad: u32,
    }

    /// Runs a raw tracepoint program once with `args` as its arguments
    /// (BPF_PROG_TEST_RUN, 5.10+): no sunrpc module needed.
    fn test_run_raw_tp(fd: std::os::fd::BorrowedFd, args: &[u64]) -> std::io::Result<()> {
        use std::os::fd::AsRawFd as _;
        const BPF_PROG_TEST_RUN: libc::c_long = 10;
        let attr = TestRunAttr {
            prog_fd: fd.as_raw_fd() as u32,
            ctx_size_in: size_of_val(args) as u32,
            ctx_in: args.as_ptr() as u64,
            ..Default::default()
        };
        // SAFETY: bpf(2) reads a valid, zero-padded attr whose ctx_in
        // pointer (args) outlives the call.
        let rc = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_TEST_RUN, &attr as *const TestRunAttr, size_of::<TestRunAttr>() as u32) };
        if rc < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
    }

    /// `--debug-bpf` end to end in the kernel: a SunRPC program run with a
    /// socket pointer no kernel would pass (a user address) fails to read
    /// `socket->sk`, and says so through the log map, once; the same run
    /// without the flag logs nothing. And the flag is free when off: the
    /// verifier removes the logging branches (fewer translated
    /// instructions than with it). Needs root; fails without it.
    #[test]
    fn debug_bpf_logs_a_failed_read_and_costs_nothing_when_off() {
        use std::os::fd::AsFd as _;
        let env = crate::kernel::env::preflight(None, None)
            .expect("this test loads BPF programs: run it as root on a kernel with tracefs and BTF");
        crate::kernel::env::raise_memlock();
        let btf = KernelBtf::from_file(&env.btf).unwrap();
        let mut sizes = Vec::new();
        for debug in [false, true] {
            let mut config = build_config(&[2049], &env.tracefs, &btf).unwrap();
            config.debug = u32::from(debug);
            let mut ebpf = EbpfLoader::new()
                .btf(None)
                .override_global(GLOBAL_CONFIG, &config, true)
                .load(EBPF_OBJECT)
                .unwrap();
            let got: &'static Collect = Box::leak(Box::default());
            let mut logs = aya_log::EbpfLogger::init_with_logger(&mut ebpf, got).unwrap();
            let tp: &mut RawTracePoint = program(&mut ebpf, "rpc_socket_connect").unwrap();
            tp.load().unwrap();
            // xprt, socket, error.
            test_run_raw_tp(tp.fd().unwrap().as_fd(), &[0x1000, 0x2000, 0]).expect("BPF_PROG_TEST_RUN");
            logs.flush();
            let lines = got.0.lock().unwrap().clone();
            if debug {
                let want = format!("nfs-trace: bpf: error: probe read of 8 bytes at 2000+{} failed: error -", config.sock.socket_sk);
                assert_eq!(lines.len(), 1, "one diagnostic: {lines:?}");
                assert!(lines[0].starts_with(&want), "{lines:?}, want {want}");
            } else {
                assert!(lines.is_empty(), "nothing logged without --debug-bpf: {lines:?}");
            }
            let tp: &mut TracePoint = program(&mut ebpf, "inet_sock_set_state").unwrap();
            tp.load().unwrap();
            let size = tp.info().unwrap().size_translated().expect("translated size (root)");
            eprintln!("inet_sock_set_state with debug={debug}: {size} bytes translated");
            sizes.push(size);
        }
        assert!(sizes[0] < sizes[1], "without --debug-bpf the verifier drops the logging: {sizes:?}");
    }

    /// A fake tracefs holding one `sock:inet_sock_set_state` format file.
    fn tracefs_with(dir: &Path, format: &str) {
        let d = dir.join("events/sock/inet_sock_set_state");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("format"), format).unwrap();
    }

    /// The record layout of 6.x kernels (`protocol` a __u16), as tracefs
    /// prints it.
    const FORMAT_U16_PROTOCOL: &str = "name: inet_sock_set_state\nformat:\n\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;\n\
\tfield:int oldstate;\toffset:16;\tsize:4;\tsigned:1;\n\
\tfield:int newstate;\toffset:20;\tsize:4;\tsigned:1;\n\
\tfield:__u16 sport;\toffset:24;\tsize:2;\tsigned:0;\n\
\tfield:__u16 dport;\toffset:26;\tsize:2;\tsigned:0;\n\
\tfield:__u16 family;\toffset:28;\tsize:2;\tsigned:0;\n\
\tfield:__u16 protocol;\toffset:30;\tsize:2;\tsigned:0;\n\
\tfield:__u8 saddr[4];\toffset:32;\tsize:4;\tsigned:0;\n\
\tfield:__u8 daddr[4];\toffset:36;\tsize:4;\tsigned:0;\n\
\tfield:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;\n\
\tfield:__u8 daddr_v6[16];\toffset:56;\tsize:16;\tsigned:0;\n";

    /// The program's constant-offset fast path is chosen from the kernel's
    /// format file, and only for exactly the layout it was compiled for: a
    /// one-byte `protocol` (older kernels; same offsets up to it) or any
    /// moved field takes the probed path, with the file's own offsets.
    #[test]
    fn fast_field_path_only_for_its_exact_layout() {
        let dir = std::env::temp_dir().join(format!("nfs-trace-hooks-test-{}", std::process::id()));
        let empty_btf = {
            let mut b = vec![0u8; 24];
            b[..2].copy_from_slice(&0xeb9f_u16.to_le_bytes());
            b[2] = 1;
            b[4..8].copy_from_slice(&24u32.to_le_bytes());
            KernelBtf::from_bytes(b).unwrap()
        };
        let config = |format: &str| {
            tracefs_with(&dir, format);
            build_config(&[2049], &dir, &empty_btf).unwrap()
        };

        let c = config(FORMAT_U16_PROTOCOL);
        assert_eq!(c.set_state_direct, 1, "the layout the fast path was compiled for");
        assert_eq!(c.set_state, SET_STATE_DIRECT);

        let u8_protocol = FORMAT_U16_PROTOCOL.replace("__u16 protocol;\toffset:30;\tsize:2", "__u8 protocol;\toffset:30;\tsize:1");
        let c = config(&u8_protocol);
        assert_eq!(c.set_state_direct, 0, "a __u8 protocol must take the probed path");
        assert_eq!((c.set_state.protocol, c.set_state.protocol_size), (30, 1));

        let moved = FORMAT_U16_PROTOCOL.replace("daddr_v6[16];\toffset:56", "daddr_v6[16];\toffset:60");
        let c = config(&moved);
        assert_eq!(c.set_state_direct, 0, "a moved field must take the probed path");
        assert_eq!(c.set_state.daddr_v6, 60);
        // Without BTF no struct offset is invented.
        assert_eq!(c.sock.skc_num, NO_OFFSET);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
