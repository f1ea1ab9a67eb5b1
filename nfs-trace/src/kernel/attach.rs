//! Loading the kernel object and attaching its programs, with the fallbacks
//! the hook table names (kprobe → fentry, SunRPC only with sunrpc loaded).
use std::path::Path;

use anyhow::{Result, anyhow};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::Array,
    programs::{FEntry, KProbe, RawTracePoint, TracePoint},
};
use nfs_trace_common::{
    Config, DEFAULT_RINGBUF_BYTES, GLOBAL_CONFIG, MAP_BPF_LOG, MAP_EVENTS, MAP_SOCKS, MAP_XPRT_OFFSETS, SOCKS_MAX_ENTRIES, XprtOffsets,
};

use crate::kernel::{
    btf::KernelBtf,
    hooks::{FIRST_SUNRPC_HOOK, HOOKS, Hook, HookStatus, attached, not_attached, sunrpc_loaded},
    sunrpc_types::{SunrpcTypes, sunrpc_types},
};

/// The kernel programs, compiled by build.rs.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/nfs-trace"));

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
        types = SunrpcTypes { xprt_addr: None, srcport: None, xprt_net: None, task_xprt: None, task_start: None, why: Some(format!("cannot store sunrpc offsets: {e:#}")), ..types };
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
    let r = if config.set_state_direct != 0 { attach_set_state_filtered(&mut ebpf, required, config.nports) } else { attach_tracepoint(&mut ebpf, required) };
    r.map_err(|e| anyhow!("cannot attach {}: {e:#}", required.target))?;
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

/// Where the record has the direct layout, `set_state_filter1` (one
/// `--port`) or `set_state_filter` (several) is attached instead of the
/// hook's program: it tests the port and calls the full program (a
/// BPF-to-BPF call) for watched ones only, so the path every unwatched
/// socket's state change takes is a handful of instructions (`cargo xtask
/// bench` measures it against a bpftrace one-liner).
fn attach_set_state_filtered(ebpf: &mut Ebpf, h: &Hook, nports: u32) -> Result<()> {
    let (cat, name) = h.target.split_once(':').expect("tracepoint targets are cat:name");
    let name_of = if nports == 1 { SET_STATE_FILTER1 } else { SET_STATE_FILTER };
    let filter: &mut TracePoint = program(ebpf, name_of)?;
    filter.load().map_err(|e| anyhow!("load {name_of}: {e}"))?;
    filter.attach(cat, name).map_err(|e| anyhow!("attach: {e}"))?;
    Ok(())
}

/// The programs in front of `inet_sock_set_state` (`--port`s; ports added
/// at run time, kernel/live_ports.rs).
pub const SET_STATE_FILTER: &str = "set_state_filter";
/// The same for a single `--port`: one compare, nothing else loaded.
pub const SET_STATE_FILTER1: &str = "set_state_filter1";
pub const SET_STATE_LIVE: &str = "set_state_live";

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

#[cfg(test)]
mod tests;
