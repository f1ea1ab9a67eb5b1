//! Kernel modules for the guest, in load order. There is no depmod or
//! modprobe in the guest: the order comes from each module's `.modinfo`
//! `depends=`, and compressed modules (.ko.xz/.zst/.gz) are unpacked here.
use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

/// What the guest loads: the NFS server and client (v3 is not requested by
/// the kernel on its own without modprobe), `ss -K` (inet_diag + tcp_diag),
/// veth, and for the stall lab's middlebox connection tracking with
/// nftables (`ct state` needs nft_ct).
pub const WANTED: &[&str] =
    &["nfsd", "nfsv4", "nfsv3", "inet_diag", "tcp_diag", "veth", "nf_conntrack", "nf_tables", "nft_ct"];

/// Loaded where the kernel has them as modules; elsewhere they are part of
/// another module: nft's `counter` is its own module on 5.10 and part of
/// nf_tables on the later lines here. `brd` (RAM disks) gives the
/// server-silent export a file system that can freeze; without it those
/// scenarios say so.
pub const IF_PRESENT: &[&str] = &["nft_counter", "brd"];

/// A module ready for the initramfs.
pub struct Module {
    pub name: String,
    pub data: Vec<u8>,
}

/// Resolves `wanted` and their dependencies, dependencies first, then those
/// of `if_present` that this kernel has as modules.
pub fn load_order(moddir: &Path, wanted: &[&str], if_present: &[&str]) -> Result<Vec<Module>> {
    let index = index(moddir)?;
    let builtin = builtin(moddir);
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let present = if_present.iter().filter(|m| index.contains_key(&normal(m)));
    for w in wanted.iter().chain(present) {
        visit(&normal(w), &index, builtin.as_ref(), &mut seen, &mut out, &mut Vec::new())?;
    }
    Ok(out)
}

/// Module names use `_` and `-` interchangeably; `.modinfo` uses `_`.
fn normal(name: &str) -> String {
    name.replace('-', "_")
}

fn visit(
    name: &str,
    index: &HashMap<String, PathBuf>,
    builtin: Option<&HashSet<String>>,
    seen: &mut HashSet<String>,
    out: &mut Vec<Module>,
    stack: &mut Vec<String>,
) -> Result<()> {
    if seen.contains(name) {
        return Ok(());
    }
    if stack.iter().any(|s| s == name) {
        bail!("module dependency cycle: {} -> {name}", stack.join(" -> "));
    }
    let Some(path) = index.get(name) else {
        // Built into this kernel: nothing to load.
        if builtin.is_none_or(|b| b.contains(name)) {
            seen.insert(name.to_string());
            return Ok(());
        }
        bail!("module {name} is neither in {} nor built in", index_root_hint(index));
    };
    let data = decompress(path)?;
    let deps = depends(&data).with_context(|| format!("reading .modinfo of {}", path.display()))?;
    stack.push(name.to_string());
    for d in deps {
        visit(&normal(&d), index, builtin, seen, out, stack)?;
    }
    stack.pop();
    seen.insert(name.to_string());
    out.push(Module { name: name.to_string(), data });
    Ok(())
}

fn index_root_hint(index: &HashMap<String, PathBuf>) -> String {
    index.values().next().and_then(|p| p.ancestors().nth(3)).map_or("the modules".into(), |p| p.display().to_string())
}

/// name → file for every module under `<moddir>/kernel`.
fn index(moddir: &Path) -> Result<HashMap<String, PathBuf>> {
    let mut out = HashMap::new();
    let mut stack = vec![moddir.join("kernel")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Some(n) = p.file_name().map(|n| n.to_string_lossy().into_owned())
                && let Some((stem, _)) = n.split_once(".ko")
            {
                out.insert(normal(stem), p);
            }
        }
    }
    if out.is_empty() {
        bail!("no kernel modules under {}/kernel", moddir.display());
    }
    Ok(out)
}

/// Names from `modules.builtin`, None when the kernel package has none.
fn builtin(moddir: &Path) -> Option<HashSet<String>> {
    let text = std::fs::read_to_string(moddir.join("modules.builtin")).ok()?;
    Some(
        text.lines()
            .filter_map(|l| l.rsplit('/').next())
            .filter_map(|f| f.split_once(".ko").map(|(s, _)| normal(s)))
            .collect(),
    )
}

/// The module's bytes, uncompressed (the guest loads plain ELF objects).
fn decompress(path: &Path) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".ko.xz") {
        "xz"
    } else if name.ends_with(".ko.zst") {
        "zstd"
    } else if name.ends_with(".ko.gz") {
        "gzip"
    } else if name.ends_with(".ko") {
        return std::fs::read(path).with_context(|| format!("cannot read {}", path.display()));
    } else {
        bail!("unknown module compression: {}", path.display());
    };
    let out = Command::new(tool)
        .args(["-d", "-c"])
        .arg(path)
        .output()
        .with_context(|| format!("cannot run {tool} (cargo xtask setup installs it)"))?;
    if !out.status.success() {
        bail!("{tool} -dc {} failed: {}", path.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(out.stdout)
}

/// `depends=` of an ELF64 little-endian module's `.modinfo` section.
pub fn depends(elf: &[u8]) -> Result<Vec<String>> {
    let modinfo = super::elf::section(elf, ".modinfo")?;
    Ok(modinfo
        .split(|b| *b == 0)
        .filter_map(|kv| kv.strip_prefix(b"depends="))
        .flat_map(|v| String::from_utf8_lossy(v).split(',').map(str::to_string).collect::<Vec<_>>())
        .filter(|d| !d.is_empty())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 (x86-64) with a NULL section, .shstrtab and .modinfo.
    fn tiny_elf(modinfo: &[u8]) -> Vec<u8> {
        crate::vm::elf::tests::tiny_elf(62, &[(".modinfo", modinfo)])
    }

    #[test]
    fn reads_depends() {
        let elf = tiny_elf(b"license=GPL\0depends=sunrpc,grace,nfs_acl\0name=nfsd\0");
        assert_eq!(depends(&elf).unwrap(), vec!["sunrpc", "grace", "nfs_acl"]);
        let none = tiny_elf(b"depends=\0name=veth\0");
        assert!(depends(&none).unwrap().is_empty());
    }

    #[test]
    fn rejects_non_elf() {
        assert!(depends(b"not an elf at all, not at all").is_err());
    }
}
