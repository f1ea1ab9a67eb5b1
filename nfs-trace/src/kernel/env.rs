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

/// The oldest kernel nfs-trace runs on. Its programs need the BPF ring
/// buffer (5.8), `bpf_probe_read_kernel` (5.5) and raw tracepoints in
/// modules (5.0, for sunrpc), and it reads struct offsets from BTF
/// (CONFIG_DEBUG_INFO_BTF, checked on its own).
pub const KERNEL_FLOOR: (u32, u32) = (5, 8);

/// `major.minor` of a release string such as `5.10.0-21-amd64`.
fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// Whether this kernel can run the programs, from what creating a BPF ring
/// buffer map answered (`probe`) and, for the message, its release string.
/// The probe decides, not the version: distributions backport the ring
/// buffer (RHEL 8's 4.18 has it). An old kernel answers EINVAL (no such
/// map type); then, or whenever the version is below the floor, one line
/// names the floor and the kernel found.
fn kernel_verdict(release: &str, probe: std::io::Result<()>) -> Result<()> {
    let Err(e) = probe else { return Ok(()) };
    let (maj, min) = KERNEL_FLOOR;
    let old = parse_release(release).is_some_and(|v| v < KERNEL_FLOOR);
    if old || e.raw_os_error() == Some(libc::EINVAL) {
        bail!("this kernel ({release}) has no BPF ring buffer: nfs-trace needs Linux {maj}.{min} or later; run it on a newer kernel");
    }
    if e.raw_os_error() == Some(libc::ENOSYS) {
        bail!("this kernel ({release}) has no bpf() system call (CONFIG_BPF_SYSCALL off): nfs-trace needs Linux {maj}.{min} or later with BPF");
    }
    bail!("this kernel ({release}) refused to create a BPF ring buffer ({e}): nfs-trace needs Linux {maj}.{min} or later with BPF")
}

/// `union bpf_attr` for BPF_MAP_CREATE, up to `map_flags` (the kernel
/// takes a shorter attr as zero-filled).
#[repr(C)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_TYPE_RINGBUF: u32 = 27;

/// Creates (and closes at once) the smallest BPF ring buffer, one page.
fn probe_ringbuf() -> std::io::Result<()> {
    // SAFETY: sysconf has no memory effects.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u32;
    let attr = MapCreateAttr { map_type: BPF_MAP_TYPE_RINGBUF, key_size: 0, value_size: 0, max_entries: page, map_flags: 0 };
    // SAFETY: bpf(2) reads `size` bytes of a valid attr with no pointers.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_MAP_CREATE, &attr as *const MapCreateAttr, size_of::<MapCreateAttr>() as u32) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a map fd the kernel just gave us and nobody else holds.
    unsafe { libc::close(fd as i32) };
    Ok(())
}

/// Fails with one line unless this kernel can run the programs.
pub fn check_kernel() -> Result<()> {
    // Kernels before 5.11 charge maps to RLIMIT_MEMLOCK.
    raise_memlock();
    kernel_verdict(&kernel_release(), probe_ringbuf())
}

/// All checks `watch` needs, in the order a newcomer would fix them.
pub fn preflight(tracefs: Option<&Path>, btf: Option<&Path>) -> Result<Env> {
    check_privileges()?;
    check_kernel()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn einval() -> std::io::Result<()> {
        Err(std::io::Error::from_raw_os_error(libc::EINVAL))
    }

    #[test]
    fn releases_parse_to_major_minor() {
        assert_eq!(parse_release("4.19.0-21-amd64"), Some((4, 19)));
        assert_eq!(parse_release("5.10.0-0.deb10.16-amd64"), Some((5, 10)));
        assert_eq!(parse_release("6.18.44-fc-v657"), Some((6, 18)));
        assert_eq!(parse_release("5.8"), Some((5, 8)));
        assert_eq!(parse_release("garbage"), None);
        assert_eq!(parse_release(""), None);
    }

    #[test]
    fn an_old_kernel_is_one_line_naming_the_floor_and_the_kernel() {
        for release in ["4.19.0-21-amd64", "5.4.0-150-generic", "5.7.19"] {
            let e = kernel_verdict(release, einval()).unwrap_err().to_string();
            assert!(e.contains("Linux 5.8 or later") && e.contains(release), "{e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
        // Below the floor, any refusal is the floor line.
        let e = kernel_verdict("4.15.0", Err(std::io::Error::from_raw_os_error(libc::ENOMEM))).unwrap_err().to_string();
        assert!(e.contains("Linux 5.8 or later") && e.contains("4.15.0"), "{e}");
    }

    #[test]
    fn the_probe_decides_not_the_version() {
        // A backport (RHEL 8's 4.18 has the ring buffer) runs.
        assert!(kernel_verdict("4.18.0-553.el8_10.x86_64", Ok(())).is_ok());
        assert!(kernel_verdict("5.8.0", Ok(())).is_ok());
        assert!(kernel_verdict("6.18.44-fc-v657", Ok(())).is_ok());
        // A new version without the map type (built without it) still says why.
        let e = kernel_verdict("6.1.0-9-amd64", einval()).unwrap_err().to_string();
        assert!(e.contains("Linux 5.8 or later") && e.contains("6.1.0-9-amd64"), "{e}");
        let e = kernel_verdict("6.1.0", Err(std::io::Error::from_raw_os_error(libc::ENOSYS))).unwrap_err().to_string();
        assert!(e.contains("CONFIG_BPF_SYSCALL"), "{e}");
        let e = kernel_verdict("6.1.0", Err(std::io::Error::from_raw_os_error(libc::EPERM))).unwrap_err().to_string();
        assert!(e.contains("refused") && e.contains("6.1.0"), "{e}");
    }

    /// This host's kernel passes the real probe (needs root: CI runs as root).
    #[test]
    fn this_kernel_creates_a_ring_buffer() {
        if check_privileges().is_err() {
            panic!("needs root (or CAP_BPF): run the tests as root");
        }
        check_kernel().unwrap();
    }
}
