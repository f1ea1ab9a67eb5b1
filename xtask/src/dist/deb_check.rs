//! The .deb installed for real, without touching this machine: dpkg runs
//! in a chroot whose root is an overlay of this machine's / (changes go to
//! a tmpfs), inside a private mount namespace of a thread of ours, so the
//! overlay vanishes with it. Checks what a packager checks: dpkg installs
//! and removes it cleanly with its maintainer scripts, it ships what it
//! says, `systemd-analyze verify` accepts the unit (its ExecStart binary and
//! man pages included), and the unit's command line is one the installed
//! binary parses.
use std::{
    ffi::CString,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, anyhow, bail};

/// Files the package must install.
const SHIPS: &[&str] = &[
    "/usr/sbin/nfs-trace",
    "/lib/systemd/system/nfs-trace.service",
    "/usr/share/man/man1/nfs-trace.1.gz",
    "/usr/share/man/man1/nfs-trace-watch.1.gz",
    "/usr/share/man/man1/nfs-trace-prove.1.gz",
    "/usr/share/man/man1/nfs-trace-report.1.gz",
    "/usr/share/bash-completion/completions/nfs-trace",
    "/usr/share/nfs-trace/prometheus/nfs-trace.rules.yml",
    "/usr/share/nfs-trace/grafana/nfs-trace-dashboard.json",
];

fn sys_mount(src: &str, target: &Path, fstype: Option<&str>, flags: libc::c_ulong, data: Option<&str>) -> Result<()> {
    let c = |s: &str| CString::new(s).map_err(|_| anyhow!("NUL in {s:?}"));
    let (s, t) = (c(src)?, c(&target.to_string_lossy())?);
    let f = fstype.map(c).transpose()?;
    let d = data.map(c).transpose()?;
    // SAFETY: valid NUL-terminated strings (or null) alive for the call.
    let rc = unsafe {
        libc::mount(
            s.as_ptr(),
            t.as_ptr(),
            f.as_ref().map_or(std::ptr::null(), |f| f.as_ptr()),
            flags,
            d.as_ref().map_or(std::ptr::null(), |d| d.as_ptr().cast()),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("mount {src} on {}", target.display()));
    }
    Ok(())
}

/// Runs `args` chrooted into `root`; its output, or an error with it.
fn chrooted(root: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("chroot").arg(root).args(args).output().with_context(|| format!("cannot run chroot {args:?}"))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        bail!("{args:?} in the chroot failed ({}): {}", out.status, text.trim());
    }
    Ok(text)
}

/// Installs `deb` in a throwaway overlay of / and checks it (see the module doc).
pub fn install_check(deb: &Path) -> Result<()> {
    let deb = deb.to_path_buf();
    // unshare(CLONE_NEWNS) moves only the calling thread: a thread of its
    // own, whose namespace (and overlay) ends with it.
    std::thread::spawn(move || in_private_overlay(&deb)).join().map_err(|_| anyhow!("the check thread panicked"))?
}

fn in_private_overlay(deb: &Path) -> Result<()> {
    // SAFETY: unshare(2) with a constant flag; affects this thread only.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(std::io::Error::last_os_error()).context("unshare(CLONE_NEWNS) (the deb check needs root)");
    }
    sys_mount("none", Path::new("/"), None, libc::MS_REC | libc::MS_PRIVATE, None)?;
    let mut tmpl = *b"/tmp/nfs-trace-deb.XXXXXX\0";
    // SAFETY: a writable NUL-terminated template.
    if unsafe { libc::mkdtemp(tmpl.as_mut_ptr().cast()) }.is_null() {
        return Err(std::io::Error::last_os_error()).context("mkdtemp");
    }
    let dir = PathBuf::from(std::str::from_utf8(&tmpl[..tmpl.len() - 1]).expect("ASCII"));
    let res = check_in(&dir, deb);
    // The mounts go with the namespace; the directory is ours to remove.
    let c = CString::new(dir.to_string_lossy().as_bytes()).expect("no NUL");
    // SAFETY: a valid path; lazy unmount of our own tmpfs.
    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    let _ = std::fs::remove_dir(&dir);
    res
}

fn check_in(dir: &Path, deb: &Path) -> Result<()> {
    sys_mount("nfs-trace-deb", dir, Some("tmpfs"), 0, None)?;
    let (upper, work, root) = (dir.join("upper"), dir.join("work"), dir.join("root"));
    for d in [&upper, &work, &root] {
        std::fs::create_dir(d)?;
    }
    let opts = format!("lowerdir=/,upperdir={},workdir={}", upper.display(), work.display());
    sys_mount("overlay", &root, Some("overlay"), 0, Some(&opts)).context("an overlay of / (the deb check needs overlayfs)")?;
    for m in ["proc", "dev"] {
        sys_mount(&format!("/{m}"), &root.join(m), None, libc::MS_BIND | libc::MS_REC, None)?;
    }
    let name = deb.file_name().context("a .deb path")?.to_string_lossy().to_string();
    std::fs::copy(deb, root.join("tmp").join(&name)).context("copying the .deb into the chroot")?;
    let pkg = format!("/tmp/{name}");

    chrooted(&root, &["dpkg", "-i", &pkg])?;
    let status = chrooted(&root, &["dpkg-query", "-W", "-f", "${Status} ${Version}", "nfs-trace"])?;
    if !status.starts_with("install ok installed") {
        bail!("dpkg says nfs-trace is {status:?} after dpkg -i");
    }
    let listed = chrooted(&root, &["dpkg", "-L", "nfs-trace"])?;
    for f in SHIPS {
        if !listed.lines().any(|l| l == *f) {
            bail!("the package does not ship {f}; dpkg -L says:\n{listed}");
        }
    }
    // verify resolves ExecStart and the man: pages; any complaint fails.
    let out = Command::new("chroot").arg(&root).args(["systemd-analyze", "verify", "/lib/systemd/system/nfs-trace.service"]).output()?;
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() || !said.trim().is_empty() {
        bail!("systemd-analyze verify rejects the unit: {}", said.trim());
    }
    // The unit's command line parses: the same arguments with --help.
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/nfs-trace.service"))?;
    let exec = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).context("the unit has no ExecStart")?;
    let mut argv: Vec<&str> = exec.split_whitespace().collect();
    argv.push("--help");
    chrooted(&root, &argv).context("the unit's ExecStart arguments do not parse")?;
    chrooted(&root, &["dpkg", "--purge", "nfs-trace"])?;
    if root.join("usr/sbin/nfs-trace").exists() || root.join("lib/systemd/system/nfs-trace.service").exists() {
        bail!("dpkg --purge left the binary or the unit behind");
    }
    println!("deb: {name} installs in an overlay chroot, ships {} checked files, its unit verifies, and purges cleanly", SHIPS.len());
    Ok(())
}
