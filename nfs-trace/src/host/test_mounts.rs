//! Test mounts for `prove --server`, made where nothing else sees them and
//! nothing can outlive the run: in a private mount namespace of this
//! process (unshare(2) CLONE_NEWNS, propagation private), on a tmpfs of
//! its own. Mounts are dropped explicitly at the end (lazy unmount); if the
//! process dies any other way (SIGKILL included) the namespace dies with it
//! and takes the mounts along. Only an empty directory can stay behind.
use std::{
    ffi::CString,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};

fn cstr(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| anyhow!("{} has a NUL byte", p.display()))
}

fn sys_mount(src: &str, target: &Path, fstype: &str, flags: libc::c_ulong, data: Option<&str>) -> Result<()> {
    let (s, t, f) = (CString::new(src)?, cstr(target)?, CString::new(fstype)?);
    let d = data.map(CString::new).transpose()?;
    // SAFETY: every pointer is a valid NUL-terminated string or null, alive for the call.
    let rc = unsafe {
        libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), flags, d.as_ref().map_or(std::ptr::null(), |d| d.as_ptr().cast()))
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("mount {fstype} on {}", target.display()));
    }
    Ok(())
}

/// What prove --server needs before it asks anything: root (mounts, a
/// mount namespace, BPF) and the mount helper.
pub fn preflight() -> Result<()> {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("prove --server mounts the export and loads BPF programs: it needs root; run it with sudo");
    }
    mount_helper().map(|_| ())
}

/// `mount.nfs`, the helper every NFS client host has (nfs-common, nfs-utils).
fn mount_helper() -> Result<PathBuf> {
    ["/sbin/mount.nfs", "/usr/sbin/mount.nfs"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .context("mount.nfs not found: install nfs-common (Debian) or nfs-utils to make test mounts")
}

pub struct TestMounts {
    /// The tmpfs the mount points are made on.
    dir: PathBuf,
    mounted: Vec<PathBuf>,
}

impl TestMounts {
    /// Moves this thread (and the threads and children it makes from now
    /// on) into a private mount namespace and makes the mount points' tmpfs.
    pub fn private() -> Result<TestMounts> {
        // Fail before any change when the helper is missing.
        mount_helper()?;
        // SAFETY: unshare(2) with a constant flag; affects this thread only.
        if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
            return Err(std::io::Error::last_os_error()).context("cannot make a private mount namespace for the test mounts");
        }
        // Nothing mounted from here on propagates back to the host's namespace.
        sys_mount("none", Path::new("/"), "", libc::MS_REC | libc::MS_PRIVATE, None)?;
        let mut tmpl = *b"/tmp/nfs-trace-prove.XXXXXX\0";
        // SAFETY: tmpl is a writable NUL-terminated template, as mkdtemp wants.
        if unsafe { libc::mkdtemp(tmpl.as_mut_ptr().cast()) }.is_null() {
            return Err(std::io::Error::last_os_error()).context("cannot make a directory in /tmp for the test mounts");
        }
        let dir = PathBuf::from(std::str::from_utf8(&tmpl[..tmpl.len() - 1]).expect("ASCII template"));
        if let Err(e) = sys_mount("nfs-trace-prove", &dir, "tmpfs", libc::MS_NOSUID | libc::MS_NODEV, Some("size=64k,mode=0700")) {
            let _ = std::fs::remove_dir(&dir);
            return Err(e);
        }
        Ok(TestMounts { dir, mounted: Vec::new() })
    }

    /// Mounts `source` with `options` on a fresh mount point named `name`,
    /// giving up (and killing mount.nfs) after `limit`.
    pub fn mount(&mut self, name: &str, source: &str, options: &str, limit: Duration) -> Result<PathBuf> {
        let at = self.dir.join(name);
        std::fs::create_dir(&at).with_context(|| format!("cannot make {}", at.display()))?;
        let mut child = Command::new(mount_helper()?)
            .arg(source)
            .arg(&at)
            .args(["-o", options])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run mount.nfs")?;
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(st) = child.try_wait()? {
                break st;
            }
            if Instant::now() >= deadline || crate::cmd::prove::interrupted() {
                let _ = child.kill();
                let _ = child.wait();
                // It may have mounted just before: drop it either way.
                self.mounted.push(at.clone());
                self.unmount(&at);
                if crate::cmd::prove::interrupted() {
                    bail!("interrupted while mounting");
                }
                bail!("mount.nfs did not finish within {:.0} s (--timeout)", limit.as_secs_f64());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if !status.success() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read as _;
                let _ = e.read_to_string(&mut err);
            }
            let line = err.lines().map(str::trim).rfind(|l| !l.is_empty()).unwrap_or("no message").to_string();
            let _ = std::fs::remove_dir(&at);
            bail!("{line}");
        }
        self.mounted.push(at.clone());
        Ok(at)
    }

    /// Lazily unmounts a test mount (never MNT_FORCE: where a test mount
    /// shared a superblock, forcing would kill the other mount's RPCs).
    pub fn unmount(&mut self, at: &Path) {
        if let Ok(c) = cstr(at) {
            // SAFETY: c is a valid NUL-terminated path.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = std::fs::remove_dir(at);
        self.mounted.retain(|m| m != at);
    }

    /// What is still mounted (for the summary line: nothing, normally).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for TestMounts {
    fn drop(&mut self) {
        for m in std::mem::take(&mut self.mounted) {
            self.unmount(&m);
        }
        if let Ok(c) = cstr(&self.dir) {
            // SAFETY: c is a valid NUL-terminated path.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}
