//! What this kernel and process allow, checked before loading anything, so a
//! missing prerequisite is one clear line instead of a verifier dump.
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// Where things are, after the checks passed.
#[derive(Clone, Debug)]
pub struct Env {
    pub tracefs: PathBuf,
    pub btf: PathBuf,
    /// Set when we mounted tracefs ourselves (said in the start line).
    pub mounted_tracefs: bool,
    pub release: String,
}

pub const DEFAULT_BTF: &str = "/sys/kernel/btf/vmlinux";
const TRACEFS_CANDIDATES: &[&str] = &["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Effective capabilities from /proc/self/status (`CapEff:` in hex).
fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// Root, or the capabilities BPF tracing needs.
pub fn check_privileges() -> Result<()> {
    let caps = effective_caps();
    let has = |c: u32| caps & (1u64 << c) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    bail!("loading BPF programs needs root (or CAP_BPF and CAP_PERFMON): run it with sudo")
}

fn has_events(dir: &Path) -> bool {
    dir.join("events").is_dir()
}

/// Finds tracefs, mounting it at /sys/kernel/tracing when it is not mounted
/// (systemd usually does; minimal hosts and VMs often do not).
pub fn find_tracefs(explicit: Option<&Path>) -> Result<(PathBuf, bool)> {
    if let Some(dir) = explicit {
        if has_events(dir) {
            return Ok((dir.to_path_buf(), false));
        }
        bail!("no tracefs at {} (no events/ there): mount it with `mount -t tracefs nodev {}`", dir.display(), dir.display());
    }
    for c in TRACEFS_CANDIDATES {
        if has_events(Path::new(c)) {
            return Ok((PathBuf::from(c), false));
        }
    }
    let target = TRACEFS_CANDIDATES[0];
    let src = c"nodev";
    let fstype = c"tracefs";
    let tgt = std::ffi::CString::new(target).expect("no NUL in a constant");
    // SAFETY: all pointers are valid NUL-terminated strings; data is null.
    let rc = unsafe { libc::mount(src.as_ptr(), tgt.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) };
    if rc == 0 && has_events(Path::new(target)) {
        return Ok((PathBuf::from(target), true));
    }
    bail!(
        "tracefs is not mounted and mounting it failed ({}): run `mount -t tracefs nodev {target}`",
        std::io::Error::last_os_error()
    )
}

pub fn check_btf(explicit: Option<&Path>) -> Result<PathBuf> {
    let p = explicit.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(DEFAULT_BTF));
    if !p.is_file() {
        bail!(
            "no kernel BTF at {}: this kernel was built without CONFIG_DEBUG_INFO_BTF, which nfs-trace needs to read socket fields; use a kernel with BTF",
            p.display()
        );
    }
    Ok(p)
}

pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// All checks `watch` needs, in the order a newcomer would fix them.
pub fn preflight(tracefs: Option<&Path>, btf: Option<&Path>) -> Result<Env> {
    check_privileges()?;
    let (tracefs, mounted_tracefs) = find_tracefs(tracefs)?;
    let btf = check_btf(btf)?;
    Ok(Env { tracefs, btf, mounted_tracefs, release: kernel_release() })
}

/// Raises RLIMIT_MEMLOCK for kernels before 5.11, which charge BPF maps to it.
pub fn raise_memlock() {
    let rlim = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: a valid rlimit struct; failure is harmless on memcg-accounting kernels.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };
}

/// Keeps large heap blocks out of glibc's main heap, so the peak RSS is what
/// is live rather than what the allocator keeps. Startup briefly holds
/// several-MB buffers (our BTF, then aya's parse of vmlinux BTF, ~17 MB, see
/// `hooks::load_and_attach_tcp`). By default glibc raises its mmap threshold
/// to the largest block freed so far: after our BTF buffer is freed, aya's
/// growing type vector lands in the brk heap, where each doubling copies
/// (old and new live together) and the freed space is not given back. A
/// fixed threshold keeps blocks from 128 KiB up in their own mappings,
/// grown in place by mremap and unmapped on free.
pub fn tame_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes allocator parameters; called before the
    // large allocations it is meant for.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 * 1024);
    }
}
