//! The user space of a guest whose programs this machine cannot run (arm64):
//! everything comes from that architecture's Debian packages, of this
//! machine's release like the x86 guest's. The x86 guest borrows `ss`, `ip`,
//! `nft`, busybox and the shared libraries from the host and asks `ldd`
//! which libraries to copy; here the tools are unpacked from their packages,
//! the library packages are the `Depends` closure of the ones unpacked, and
//! which libraries go into the image is read from each program's ELF
//! dynamic section (`DT_NEEDED`), resolved inside the unpacked tree.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Component, Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};

use super::{
    apt::{self, PrivateApt},
    arch::Arch,
    elf,
    initramfs::Archive,
};

/// The packages of the tools the x86 guest takes from the host.
pub const TOOL_PACKAGES: &[&str] = &["iproute2", "nftables", "busybox-static"];

/// (path in the guest, path in the unpacked packages; alternatives in order).
const TOOLS: &[(&str, &[&str])] = &[
    ("/sbin/ss", &["bin/ss", "sbin/ss", "usr/bin/ss", "usr/sbin/ss"]),
    ("/sbin/ip", &["bin/ip", "sbin/ip", "usr/bin/ip", "usr/sbin/ip"]),
    ("/usr/sbin/nft", &["usr/sbin/nft", "sbin/nft"]),
    ("/bin/busybox", &["bin/busybox", "usr/bin/busybox"]),
];

/// Libraries glibc loads at run time, which no `DT_NEEDED` names: libgcc_s
/// for a threaded program's pthread_exit (stunnel4's threads end with it).
const DLOPENED: &[&str] = &["libgcc_s.so.1"];

/// Package names from a `Depends`/`Pre-Depends` value: the first of each
/// set of alternatives, without version or architecture qualifier.
fn dependency_names(field: &str) -> Vec<String> {
    field
        .split(',')
        .filter_map(|d| d.split('|').next())
        .filter_map(|d| d.split_whitespace().next())
        .map(|d| d.split(':').next().unwrap_or(d).to_string())
        .filter(|d| !d.is_empty())
        .collect()
}

/// Shared-library packages are named after their library (Debian policy
/// 8.1: `lib…`), zlib's excepted; the closure follows only these, so that
/// it does not pull in daemons, scripts and the shell's own world.
fn is_library_package(name: &str) -> bool {
    (name.starts_with("lib") && !name.ends_with("-dev") && !name.ends_with("-bin") && !name.ends_with("-common"))
        || name == "zlib1g"
}

/// Downloads `packages` and the library packages they depend on,
/// transitively (one apt-get call per level); returns every .deb.
pub fn download_closure(apt: &PrivateApt, packages: &[&str], dest: &Path) -> Result<Vec<PathBuf>> {
    let mut level: Vec<String> = packages.iter().map(|p| p.to_string()).collect();
    let mut seen: BTreeSet<String> = level.iter().cloned().collect();
    let mut debs = Vec::new();
    while !level.is_empty() {
        let names: Vec<&str> = level.iter().map(String::as_str).collect();
        let got = apt.download_all(&names, dest)?;
        let mut next = Vec::new();
        for deb in &got {
            for field in ["Pre-Depends", "Depends"] {
                for dep in dependency_names(&apt::deb_field(deb, field)?) {
                    if is_library_package(&dep) && seen.insert(dep.clone()) {
                        next.push(dep);
                    }
                }
            }
        }
        debs.extend(got);
        level = next;
    }
    Ok(debs)
}

/// Lexically joins `rel` (a path inside the tree, no leading `/`) with a
/// symlink target, keeping the result inside the tree.
fn join_in_tree(base_dir: &Path, target: &Path) -> PathBuf {
    let mut out = if target.is_absolute() { PathBuf::new() } else { base_dir.to_path_buf() };
    for c in target.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// The file behind `guest_path` in the unpacked tree `root`, following
/// symlinks as the guest would (an absolute target is inside the tree, not
/// on this machine).
fn resolve(root: &Path, guest_path: &str) -> Option<PathBuf> {
    let mut rel = PathBuf::from(guest_path.trim_start_matches('/'));
    for _ in 0..16 {
        let p = root.join(&rel);
        match std::fs::read_link(&p) {
            Ok(t) => rel = join_in_tree(rel.parent().unwrap_or(Path::new("")), &t),
            Err(_) => return p.is_file().then_some(p),
        }
    }
    None
}

/// Where the loader looks for a soname in a Debian guest without
/// ld.so.cache: the multiarch directories first, as glibc is built.
fn library_dirs(arch: Arch) -> [String; 4] {
    let m = arch.multiarch();
    [format!("/lib/{m}"), format!("/usr/lib/{m}"), "/lib".into(), "/usr/lib".into()]
}

/// Reads a file that must be an ELF object for `arch`.
fn read_elf(path: &Path, arch: Arch) -> Result<Vec<u8>> {
    let data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let want = match arch {
        Arch::X86_64 => elf::EM_X86_64,
        Arch::Arm64 => elf::EM_AARCH64,
    };
    let got = elf::machine(&data).with_context(|| path.display().to_string())?;
    if got != want {
        bail!("{} is for ELF machine {got}, not {} ({want})", path.display(), arch.debian());
    }
    Ok(data)
}

/// The libraries `programs` load, transitively, and their loader:
/// guest path → file in `root`. Fails naming the library that is missing.
pub fn libraries(root: &Path, programs: &[PathBuf], arch: Arch) -> Result<BTreeMap<String, PathBuf>> {
    let mut out = BTreeMap::new();
    let mut todo: Vec<(String, String)> = Vec::new(); // (soname, who needs it)
    for p in programs {
        let data = read_elf(p, arch)?;
        if let Some(interp) = elf::interp(&data)? {
            let file = resolve(root, &interp).with_context(|| format!("{} needs the loader {interp}, not in the packages", p.display()))?;
            out.insert(interp, file);
        }
        todo.extend(elf::needed(&data)?.into_iter().map(|n| (n, p.display().to_string())));
    }
    if !programs.is_empty() {
        todo.extend(DLOPENED.iter().map(|n| (n.to_string(), "glibc (dlopen)".to_string())));
    }
    let mut seen = BTreeSet::new();
    while let Some((soname, by)) = todo.pop() {
        if !seen.insert(soname.clone()) {
            continue;
        }
        let file = library_dirs(arch)
            .into_iter()
            .find_map(|d| resolve(root, &format!("{d}/{soname}")))
            .with_context(|| format!("{by} needs {soname}, which no unpacked package has"))?;
        let data = read_elf(&file, arch)?;
        todo.extend(elf::needed(&data)?.into_iter().map(|n| (n, soname.clone())));
        // One copy, in the first directory the loader searches.
        out.insert(format!("/lib/{}/{soname}", arch.multiarch()), file);
    }
    Ok(out)
}

/// Adds the tools and every library the guest's programs (`elfs`, already
/// in the image, and the tools) load.
pub fn add_tools_and_libraries(a: &mut Archive, root: &Path, mut elfs: Vec<PathBuf>, arch: Arch) -> Result<()> {
    for (dest, alts) in TOOLS {
        let src = alts
            .iter()
            .filter_map(|p| resolve(root, p))
            .next()
            .with_context(|| format!("none of {alts:?} in {}", root.display()))?;
        a.copy(dest, &src)?;
        elfs.push(src);
    }
    let bb = elfs.last().expect("busybox is the last tool");
    if elf::interp(&read_elf(bb, arch)?)?.is_some() {
        bail!("{} is not static: busybox-static should have been unpacked", bb.display());
    }
    a.symlink("/bin/sh", "busybox")?;
    for (guest, file) in libraries(root, &elfs, arch)? {
        a.copy(&guest, &file)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::elf::tests::tiny_elf;

    #[test]
    fn dependency_fields() {
        let f = "libc6 (>= 2.34), libtirpc3 (>= 1.3.2) | libtirpc3t64, debconf (>= 0.5) | debconf-2.0, python3:any";
        assert_eq!(dependency_names(f), ["libc6", "libtirpc3", "debconf", "python3"]);
        assert!(dependency_names("").is_empty());
        let libs: Vec<String> = dependency_names(f).into_iter().filter(|d| is_library_package(d)).collect();
        assert_eq!(libs, ["libc6", "libtirpc3"]);
        assert!(is_library_package("zlib1g"));
        assert!(!is_library_package("libc-bin") && !is_library_package("libtirpc-common") && !is_library_package("libc6-dev"));
    }

    /// A tree like an unpacked arm64 libc: the loader behind an absolute
    /// symlink, a library behind a relative one, and a program needing it.
    #[test]
    fn resolves_libraries_inside_the_tree() {
        let root = std::env::temp_dir().join(format!("xtask-foreign-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let lib = root.join("lib/aarch64-linux-gnu");
        std::fs::create_dir_all(&lib).unwrap();
        std::fs::create_dir_all(root.join("usr/sbin")).unwrap();
        let dynstr = b"\0libtirpc.so.3\0libc.so.6\0";
        let dynamic = |names: &[u64]| -> Vec<u8> {
            names.iter().flat_map(|o| 1u64.to_le_bytes().into_iter().chain(o.to_le_bytes())).chain([0u8; 16]).collect()
        };
        let prog = tiny_elf(elf::EM_AARCH64, &[(".interp", b"/lib/ld-linux-aarch64.so.1\0"), (".dynstr", dynstr), (".dynamic", &dynamic(&[1]))]);
        let tirpc = tiny_elf(elf::EM_AARCH64, &[(".dynstr", dynstr), (".dynamic", &dynamic(&[15]))]);
        std::fs::write(root.join("usr/sbin/prog"), &prog).unwrap();
        std::fs::write(lib.join("libtirpc.so.3.0.0"), &tirpc).unwrap();
        std::os::unix::fs::symlink("libtirpc.so.3.0.0", lib.join("libtirpc.so.3")).unwrap();
        std::fs::write(lib.join("libc.so.6"), tiny_elf(elf::EM_AARCH64, &[])).unwrap();
        std::fs::write(lib.join("libgcc_s.so.1"), tiny_elf(elf::EM_AARCH64, &[])).unwrap();
        std::fs::write(lib.join("ld-linux-aarch64.so.1"), tiny_elf(elf::EM_AARCH64, &[])).unwrap();
        std::os::unix::fs::symlink("/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1", root.join("lib/ld-linux-aarch64.so.1")).unwrap();

        let libs = libraries(&root, &[root.join("usr/sbin/prog")], Arch::Arm64).unwrap();
        let keys: Vec<&str> = libs.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "/lib/aarch64-linux-gnu/libc.so.6",
                "/lib/aarch64-linux-gnu/libgcc_s.so.1",
                "/lib/aarch64-linux-gnu/libtirpc.so.3",
                "/lib/ld-linux-aarch64.so.1"
            ]
        );
        assert_eq!(libs["/lib/aarch64-linux-gnu/libtirpc.so.3"], lib.join("libtirpc.so.3.0.0"));
        assert_eq!(libs["/lib/ld-linux-aarch64.so.1"], lib.join("ld-linux-aarch64.so.1"));

        // A missing library is named; an x86 object in an arm64 tree is refused.
        std::fs::remove_file(lib.join("libc.so.6")).unwrap();
        let e = libraries(&root, &[root.join("usr/sbin/prog")], Arch::Arm64).unwrap_err();
        assert!(format!("{e:#}").contains("libtirpc.so.3 needs libc.so.6"), "{e:#}");
        std::fs::write(lib.join("libc.so.6"), tiny_elf(elf::EM_X86_64, &[])).unwrap();
        let e = libraries(&root, &[root.join("usr/sbin/prog")], Arch::Arm64).unwrap_err();
        assert!(format!("{e:#}").contains("not arm64"), "{e:#}");
        let _ = std::fs::remove_dir_all(&root);
    }
}
