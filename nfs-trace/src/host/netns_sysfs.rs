//! The sunrpc sysfs of another network namespace. sysfs shows a netns's
//! `/sys/kernel/sunrpc/{rpc-clients,xprt-switches}` only through a sysfs
//! mounted from inside that netns, so a short-lived thread enters the
//! netns, takes a private mount namespace of its own (`unshare` works in a
//! multithreaded process, unlike `setns` into a mount namespace; tested by
//! `tests/tests/host_namespaces.rs`), mounts sysfs on a temporary
//! directory, reads, and unmounts. Nothing it mounts is visible outside
//! that thread, which ends right after.
use std::{
    collections::HashMap,
    ffi::CString,
    io,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context as _, Result};

use crate::host::{
    namespaces::{self, NsIno},
    sunrpc_sysfs::{self, SysXprt},
};

/// What one network namespace's sunrpc sysfs says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SunrpcSysfs {
    /// Its transports and, for the mounts asked about, their switches
    /// (`/sys/fs/nfs/<maj:min>` links, 6.4+).
    Read { xprts: Vec<SysXprt>, links: HashMap<String, Vec<u32>> },
    /// No `kernel/sunrpc` in sysfs: the module is not loaded (or the kernel
    /// is older than 5.14). There is nothing to see, not something hidden.
    NotLoaded,
    /// Could not be read, and why: its transports are not shown.
    Unseen(String),
}

/// Reads the sunrpc sysfs of a tree already mounted at `sys` (the tracer's
/// own `/sys`, or one mounted in a netns), for mounts `devs`.
pub fn read_tree(sys: &Path, devs: &[String], netns: Option<NsIno>) -> SunrpcSysfs {
    if !sys.join("kernel/sunrpc").is_dir() {
        return SunrpcSysfs::NotLoaded;
    }
    let mut xprts = sunrpc_sysfs::transports(sys);
    for x in &mut xprts {
        x.netns = netns;
    }
    let links = devs.iter().filter_map(|d| Some((d.clone(), sunrpc_sysfs::mount_switches(sys, d)?))).collect();
    SunrpcSysfs::Read { xprts, links }
}

fn cstr(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_encoded_bytes()).context("path with a NUL byte")
}

/// Runs `f` with the sysfs of the network namespace at `netns` mounted at
/// the path it is given (see the module comment). The mount and the
/// temporary directory are gone when this returns.
pub fn with_sysfs_of<T: Send + 'static>(netns: &Path, f: impl FnOnce(&Path) -> T + Send + 'static) -> Result<T> {
    sysfs_in(netns, false, f)
}

fn sysfs_in<T: Send + 'static>(netns: &Path, writable: bool, f: impl FnOnce(&Path) -> T + Send + 'static) -> Result<T> {
    namespaces::in_netns(netns, move || mounted_here(writable, f))
}

/// Mounts the calling thread's network namespace's sysfs and runs `f` on
/// it. The thread gets a mount namespace of its own for good: call it only
/// from a thread `namespaces::in_netns` made, which ends with its closure.
fn mounted_here<T>(writable: bool, f: impl FnOnce(&Path) -> T) -> Result<T> {
    {
        // SAFETY: unshare affects only this thread (and it gets its own
        // fs_struct with CLONE_NEWNS); no pointers involved.
        if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
            return Err(io::Error::last_os_error()).context("unshare(CLONE_NEWNS)");
        }
        // Nothing may be mounted before the tree is private: a sysfs mount
        // would otherwise propagate into the host's own mount namespace.
        let root = cstr(Path::new("/"))?;
        // SAFETY: valid C strings; NULL source, type and data are allowed for MS_PRIVATE.
        if unsafe { libc::mount(std::ptr::null(), root.as_ptr(), std::ptr::null(), libc::MS_REC | libc::MS_PRIVATE, std::ptr::null()) } != 0 {
            return Err(io::Error::last_os_error()).context("making / private in the reader's mount namespace");
        }
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let dir: PathBuf =
            std::env::temp_dir().join(format!("nfs-trace-sysfs-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed)));
        std::fs::create_dir(&dir).with_context(|| format!("cannot make {}", dir.display()))?;
        let target = cstr(&dir)?;
        let sysfs = cstr(Path::new("sysfs"))?;
        let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | if writable { 0 } else { libc::MS_RDONLY };
        // SAFETY: valid C strings; sysfs takes no data.
        let mounted = unsafe { libc::mount(sysfs.as_ptr(), target.as_ptr(), sysfs.as_ptr(), flags, std::ptr::null()) } == 0;
        let result = if mounted {
            let r = f(&dir);
            // SAFETY: a valid C string naming our own mount.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
            Ok(r)
        } else {
            Err(io::Error::last_os_error()).context("mounting sysfs in the network namespace")
        };
        let _ = std::fs::remove_dir(&dir);
        result
    }
}

/// The sunrpc sysfs of the network namespace at `netns` (one of
/// [`namespaces::netns_paths`]), for mounts `devs`.
pub fn read_netns(netns: &Path, ino: NsIno, devs: &[String]) -> SunrpcSysfs {
    let devs = devs.to_vec();
    namespaces::in_netns(netns, move || Ok(read_here(ino, &devs))).unwrap_or_else(|e| SunrpcSysfs::Unseen(format!("{e:#}")))
}

/// [`read_netns`] from a thread already in that network namespace (one
/// `namespaces::in_netns` made: this gives it a mount namespace of its own).
pub fn read_here(ino: NsIno, devs: &[String]) -> SunrpcSysfs {
    match mounted_here(false, |sys| {
        let mut r = read_tree(sys, devs, Some(ino));
        // The directories are the ones this netns's sysfs shows at /sys.
        if let SunrpcSysfs::Read { xprts, .. } = &mut r {
            for x in xprts {
                if let Ok(rel) = x.dir.strip_prefix(sys) {
                    x.dir = Path::new("/sys").join(rel);
                }
            }
        }
        r
    }) {
        Ok(r) => r,
        Err(e) => SunrpcSysfs::Unseen(format!("{e:#}")),
    }
}

/// Writes `text` to `file` (a path under `/sys` as network namespace
/// `netns` shows it, as [`read_netns`] returns them) from inside that netns.
pub fn write_in(netns: &Path, file: &Path, text: String) -> Result<()> {
    let rel = file.strip_prefix("/sys").map(Path::to_path_buf).context("not a sysfs path")?;
    sysfs_in(netns, true, move |sys| {
        std::fs::write(sys.join(&rel), text).with_context(|| format!("cannot rewrite {}", rel.display()))
    })?
}
