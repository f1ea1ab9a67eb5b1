//! System calls the guest init needs as PID 1: mounts, module loading,
//! network-namespace switching, clocks and power-off.
use std::{
    ffi::CString,
    fs::File,
    os::fd::{AsRawFd as _, RawFd},
    path::Path,
};

use anyhow::{Context as _, Result, bail};

fn cstr(s: &str) -> Result<CString> {
    CString::new(s).with_context(|| format!("{s:?} has a NUL byte"))
}

/// mount(2). `data` is the file system's option string.
pub fn mount(source: &str, target: &str, fstype: &str, data: Option<&str>) -> Result<()> {
    std::fs::create_dir_all(target).with_context(|| format!("cannot create {target}"))?;
    let (s, t, f) = (cstr(source)?, cstr(target)?, cstr(fstype)?);
    let d = data.map(cstr).transpose()?;
    let dp = d.as_ref().map_or(std::ptr::null(), |d| d.as_ptr().cast());
    // SAFETY: every pointer is a valid NUL-terminated string (or NULL for no
    // data) that outlives the call; mount does not keep them.
    let rc = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), 0, dp) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        bail!("mount -t {fstype} {source} {target}: {e}");
    }
    Ok(())
}

/// umount2(2) with MNT_DETACH: used only after a normal unmount failed.
pub fn umount_detach(target: &str) -> Result<()> {
    let t = cstr(target)?;
    // SAFETY: t is a valid NUL-terminated path for the duration of the call.
    if unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) } != 0 {
        bail!("umount -l {target}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Loads a kernel module from a file (there is no modprobe in the guest).
/// Returns false when it was already loaded.
pub fn insmod(path: &Path) -> Result<bool> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let params = c"";
    // SAFETY: finit_module takes an open fd, a NUL-terminated parameter
    // string and flags; the fd and string stay valid during the call. libc
    // has no wrapper for it, hence the raw syscall.
    let rc = unsafe { libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), params.as_ptr(), 0) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EEXIST) {
            return Ok(false);
        }
        bail!("insmod {}: {e}", path.display());
    }
    Ok(true)
}

/// Moves the calling thread into the network namespace behind `fd`.
pub fn setns_net(fd: RawFd) -> std::io::Result<()> {
    setns(fd, libc::CLONE_NEWNET)
}

/// Moves the calling process into the mount namespace behind `fd` (only a
/// single-threaded process may: use it in a pre_exec hook).
pub fn setns_mnt(fd: RawFd) -> std::io::Result<()> {
    setns(fd, libc::CLONE_NEWNS)
}

fn setns(fd: RawFd, kind: libc::c_int) -> std::io::Result<()> {
    // SAFETY: setns only reads the fd; `kind` restricts it to one namespace
    // type. It is async-signal-safe, so it may run in a pre_exec hook.
    if unsafe { libc::setns(fd, kind) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A mount namespace of the caller's own, with nothing propagating in or
/// out (what `unshare --mount --propagation private` does): a container's.
/// For a pre_exec hook: unshare and mount are async-signal-safe syscalls.
pub fn unshare_mounts_private() -> std::io::Result<()> {
    // SAFETY: unshare takes no pointers; mount gets static NUL-terminated
    // strings (and NULL for the unused source type and data).
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let (none, root) = (c"none", c"/");
        if libc::mount(none.as_ptr(), root.as_ptr(), std::ptr::null(), libc::MS_REC | libc::MS_PRIVATE, std::ptr::null()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of bpf_ktime_get_ns, so the
/// tracer's `mono_ns` can be compared with the ground truth's times.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Seconds since boot, for log lines.
pub fn uptime() -> f64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Sends a signal to a process.
pub fn kill(pid: u32, sig: i32) -> Result<()> {
    // SAFETY: kill has no memory arguments; a stale pid only yields ESRCH.
    if unsafe { libc::kill(pid as libc::pid_t, sig) } != 0 {
        bail!("kill -{sig} {pid}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Flushes and powers the VM off (PID 1 must not just exit: that panics).
pub fn power_off() -> ! {
    // SAFETY: sync and reboot take no pointers; reboot with POWER_OFF does not
    // return on success, and as PID 1 we hold CAP_SYS_BOOT.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    // Only reached if reboot failed: the host times out and reports it.
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
