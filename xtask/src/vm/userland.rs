//! The guest's user space besides our own programs: nfs-utils and rpcbind
//! from Debian packages of this machine's release (their libraries then match
//! the host's, which are copied alongside), `ss` and `ip` from the host's
//! iproute2, nft from the host's nftables, and busybox (static) for umount
//! and for debugging by hand. A guest of another architecture (arm64) takes
//! all of it from that architecture's packages instead (`foreign`).
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use super::{apt::PrivateApt, arch::Arch, foreign, initramfs::Archive};

/// Packages unpacked for their binaries (and libwrap, which rpcbind links;
/// libssl3 for stunnel4, the `proxy` scenario's TLS proxy).
const PACKAGES: &[&str] = &["nfs-kernel-server", "nfs-common", "rpcbind", "libwrap0", "stunnel4", "libssl3"];

/// (path in the guest, path in the unpacked packages; alternatives in order).
const FROM_DEBS: &[(&str, &[&str])] = &[
    ("/sbin/rpcbind", &["sbin/rpcbind", "usr/sbin/rpcbind"]),
    ("/sbin/mount.nfs", &["sbin/mount.nfs", "usr/sbin/mount.nfs"]),
    ("/usr/sbin/rpc.nfsd", &["usr/sbin/rpc.nfsd"]),
    ("/usr/sbin/rpc.mountd", &["usr/sbin/rpc.mountd"]),
    ("/usr/sbin/exportfs", &["usr/sbin/exportfs"]),
    ("/usr/sbin/nfsdcld", &["usr/sbin/nfsdcld"]),
    ("/usr/bin/stunnel4", &["usr/bin/stunnel4"]),
];

/// Host tools: (path in the guest, program name looked up on the host).
/// nft builds the stall lab's middlebox.
const FROM_HOST: &[(&str, &str)] =
    &[("/sbin/ss", "ss"), ("/sbin/ip", "ip"), ("/usr/sbin/nft", "nft"), ("/bin/busybox", "busybox")];

/// Libraries glibc loads at run time (see `add`).
const DLOPENED: &[&str] = &["libgcc_s.so.1"];

/// Configuration files the RPC tools read.
const HOST_ETC: &[&str] = &["/etc/netconfig", "/etc/services", "/etc/protocols", "/etc/rpc"];

/// This machine's release codename (the userland must match its libraries).
fn host_codename() -> Result<String> {
    let text = std::fs::read_to_string("/etc/os-release").context("cannot read /etc/os-release")?;
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
        .context("no VERSION_CODENAME in /etc/os-release: the lab needs a Debian host")
}

/// Unpacks the packages once into `<cache>/userland/<codename>` (for arm64
/// `<codename>-arm64`, with the tools and the library packages they need).
fn unpacked(cache: &Path, arch: Arch) -> Result<PathBuf> {
    let code = host_codename()?;
    let name = if arch.is_host() { code.clone() } else { format!("{code}-{}", arch.debian()) };
    let root = cache.join("userland").join(&name);
    let mut packages = PACKAGES.to_vec();
    if !arch.is_host() {
        packages.extend(foreign::TOOL_PACKAGES);
    }
    // The stamp lists the packages: a package added here unpacks again.
    let stamp = root.join(".unpacked");
    let wanted = packages.join("\n");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) {
        return Ok(root);
    }
    let apt = PrivateApt::open(cache, &[code.as_str(), &format!("{code}-security")], arch)?;
    let debs = cache.join("debs").join(format!("userland-{name}"));
    let _ = std::fs::remove_dir_all(&root);
    let debs = if arch.is_host() {
        packages.iter().map(|p| apt.download(p, &debs)).collect::<Result<Vec<_>>>()?
    } else {
        foreign::download_closure(&apt, &packages, &debs)?
    };
    for deb in &debs {
        super::apt::extract(deb, &root)?;
    }
    std::fs::write(&stamp, wanted.as_bytes()).with_context(|| format!("cannot write {}", stamp.display()))?;
    Ok(root)
}

fn which(name: &str) -> Result<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("{name} not found on this machine (cargo xtask setup installs it)"))
}

/// Adds the userland to `a`.
pub fn add(a: &mut Archive, cache: &Path, arch: Arch) -> Result<()> {
    let root = unpacked(cache, arch)?;
    let mut elfs = Vec::new();
    for (dest, alts) in FROM_DEBS {
        let src = alts
            .iter()
            .map(|p| root.join(p))
            .find(|p| p.is_file())
            .with_context(|| format!("none of {alts:?} in {}", root.display()))?;
        a.copy(dest, &src)?;
        elfs.push(src);
    }
    a.symlink("/sbin/mount.nfs4", "mount.nfs")?;
    if arch.is_host() {
        add_host_tools_and_libraries(a, &root, elfs)?;
    } else {
        foreign::add_tools_and_libraries(a, &root, elfs, arch)?;
    }

    for f in HOST_ETC {
        a.copy(f, Path::new(f))?;
    }
    a.file(
        "/etc/passwd",
        // rpcbind drops privileges to _rpc; nfs-utils looks up nobody.
        b"root:x:0:0:root:/:/bin/sh\n_rpc:x:100:65534::/run/rpcbind:/bin/false\nnobody:x:65534:65534::/:/bin/false\n".to_vec(),
        0o644,
    )?;
    a.file("/etc/group", b"root:x:0:\nnogroup:x:65534:\n".to_vec(), 0o644)?;
    a.file("/etc/hosts", b"127.0.0.1 localhost\n".to_vec(), 0o644)?;
    // fsid=0: the export is the NFSv4 pseudo-root; v3 mounts it by path.
    // /export/two (a tmpfs of its own) is a second export of the same server;
    // /export/silent (ext2 on a RAM disk) is the one server-silent freezes.
    a.file(
        "/etc/exports",
        b"/export *(rw,fsid=0,no_subtree_check,insecure,no_root_squash)\n\
          /export/two *(rw,fsid=2,no_subtree_check,insecure,no_root_squash)\n\
          /export/silent *(rw,fsid=3,no_subtree_check,insecure,no_root_squash)\n"
            .to_vec(),
        0o644,
    )?;
    a.symlink("/etc/mtab", "/proc/self/mounts")?;
    Ok(())
}

/// The host's `ss`, `ip`, `nft` and busybox, and every shared library the
/// guest's programs (`elfs`, the unpacked ones already in the image) load,
/// as `ldd` on this machine lists them.
fn add_host_tools_and_libraries(a: &mut Archive, root: &Path, mut elfs: Vec<PathBuf>) -> Result<()> {
    for (dest, name) in FROM_HOST {
        let src = which(name)?;
        a.copy(dest, &src)?;
        if *name != "busybox" {
            elfs.push(src);
        }
    }
    if !is_static(&which("busybox")?)? {
        bail!("the host's busybox is not static: install busybox-static");
    }
    a.symlink("/bin/sh", "busybox")?;

    // Shared libraries: the packages' own first (libwrap), then the host's.
    let pkg_lib = root.join("usr/lib/x86_64-linux-gnu");
    let mut libs = BTreeSet::new();
    for e in &elfs {
        libs.extend(needed_libs(e, &pkg_lib)?);
    }
    // What glibc dlopens, which ldd cannot list: libgcc_s for a threaded
    // program's pthread_exit (stunnel4's threads end with it).
    for name in DLOPENED {
        let p = Path::new("/lib/x86_64-linux-gnu").join(name);
        if !p.is_file() {
            bail!("{} not found on this machine (Debian's libgcc-s1 has it)", p.display());
        }
        libs.insert(p);
    }
    for l in &libs {
        let name = l.file_name().context("library without a name")?.to_string_lossy().into_owned();
        let dest = if name.starts_with("ld-linux") { format!("/lib64/{name}") } else { format!("/lib/x86_64-linux-gnu/{name}") };
        a.copy(&dest, l)?;
    }

    Ok(())
}

fn is_static(p: &Path) -> Result<bool> {
    let out = Command::new("ldd").arg(p).output().context("cannot run ldd")?;
    Ok(!out.status.success() || String::from_utf8_lossy(&out.stdout).contains("not a dynamic executable"))
}

/// The shared objects `elf` loads, from ldd (host loader, `extra` first).
fn needed_libs(elf: &Path, extra: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd").arg(elf).env("LD_LIBRARY_PATH", extra).output().context("cannot run ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.contains("not found") {
            bail!("{} needs {} which this machine lacks", elf.display(), line);
        }
        // "libx.so.1 => /lib/x86_64-linux-gnu/libx.so.1 (0x…)" or "/lib64/ld-linux-x86-64.so.2 (0x…)".
        let path = match line.split_once("=>") {
            Some((_, rhs)) => rhs.split_whitespace().next(),
            None => line.split_whitespace().next().filter(|p| p.starts_with('/')),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}
