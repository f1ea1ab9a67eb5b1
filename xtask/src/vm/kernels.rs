//! Debian kernels by line (`5.10`, `6.1`, `6.12`, `7.2`), fetched through a
//! private apt view of the suite that carries each line, for amd64 or arm64
//! (the same lines, suites and cloud flavour: `-cloud-amd64`, `-cloud-arm64`).
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

use super::{
    apt::{self, PrivateApt},
    arch::Arch,
};

/// A kernel line and the Debian suites it is taken from (stable kernels are
/// updated through the security archive: 6.12 reaches bookworm only there).
pub struct Line {
    pub name: &'static str,
    pub suites: &'static [&'static str],
}

/// The lines the lab knows. The cloud flavour boots fastest under TCG and has
/// everything the lab needs (virtio/serial, nfsd, nfsv3/v4, veth) as modules.
pub const LINES: &[Line] = &[
    Line { name: "5.10", suites: &["bullseye", "bullseye-security"] },
    Line { name: "6.1", suites: &["bookworm", "bookworm-security"] },
    Line { name: "6.12", suites: &["bookworm", "bookworm-security"] },
    Line { name: "7.2", suites: &["sid"] },
];

/// `-cloud-amd64` or `-cloud-arm64`.
fn flavour(arch: Arch) -> String {
    format!("-cloud-{}", arch.debian())
}

pub fn line(name: &str) -> Result<&'static Line> {
    LINES.iter().find(|l| l.name == name).with_context(|| {
        let known: Vec<_> = LINES.iter().map(|l| l.name).collect();
        format!("unknown kernel line {name:?}: known lines are {}", known.join(", "))
    })
}

/// A kernel unpacked in the cache.
pub struct Kernel {
    /// `uname -r`, e.g. `6.12.43+deb12-cloud-amd64`.
    pub abi: String,
    /// The Debian package version, e.g. `6.12.43-1`.
    pub version: String,
    pub vmlinuz: PathBuf,
    /// `…/lib/modules/<abi>` (or `usr/lib/modules` on merged-/usr suites).
    pub moddir: PathBuf,
    /// The kernel's build configuration, when the package ships it.
    pub config: Option<PathBuf>,
}

impl Kernel {
    /// Kernels built without legacy NFSv4 client tracking (an option since
    /// 6.8, off in newer Debian kernels) need the nfsdcld daemon, or nfsd
    /// refuses to end its grace period early. Where legacy tracking exists,
    /// nfsdcld is left out: with it, 6.12 refused the early end (EBUSY).
    pub fn needs_nfsdcld(&self) -> bool {
        self.config
            .as_ref()
            .and_then(|c| std::fs::read_to_string(c).ok())
            .is_some_and(|t| t.lines().any(|l| l == "# CONFIG_NFSD_LEGACY_CLIENT_TRACKING is not set"))
    }
}

/// Resolves the newest kernel of `line` for `arch`, downloads and unpacks it
/// (cached; the ABI names the architecture, so each has its own directory).
pub fn fetch(cache: &Path, line: &'static Line, arch: Arch) -> Result<Kernel> {
    let apt = PrivateApt::open(cache, line.suites, arch)?;
    let abi = newest_abi(&apt, line, &flavour(arch))?;
    let image = format!("linux-image-{abi}");
    let debs = cache.join("debs").join(&abi);
    let main = apt.download(&image, &debs)?;
    let version = apt::deb_field(&main, "Version")?;
    // Newer suites (sid from about 6.17) ship an empty linux-image-X that
    // depends on linux-binary-X (vmlinuz), linux-modules-X and linux-base-X
    // (config, modules.builtin). Names are compared whole: the ABI has '+'.
    let mut all = vec![main.clone()];
    let depends = apt::deb_field(&main, "Depends")?;
    for dep in depends.split([',', '|']).filter_map(|d| d.split_whitespace().next()) {
        if ["linux-binary-", "linux-modules-", "linux-base-"].iter().any(|p| dep == format!("{p}{abi}")) {
            all.push(apt.download(dep, &debs)?);
        }
    }
    let root = cache.join("kernels").join(&abi);
    let stamp = root.join(".unpacked");
    if !stamp.exists() {
        let _ = std::fs::remove_dir_all(&root);
        for deb in &all {
            apt::extract(deb, &root)?;
        }
        std::fs::write(&stamp, b"").with_context(|| format!("cannot write {}", stamp.display()))?;
    }
    let vmlinuz = [root.join(format!("boot/vmlinuz-{abi}")), root.join(format!("usr/lib/modules/{abi}/vmlinuz"))]
        .into_iter()
        .find(|p| p.exists())
        .with_context(|| format!("no vmlinuz for {abi} in {}", root.display()))?;
    let moddir = [root.join(format!("lib/modules/{abi}")), root.join(format!("usr/lib/modules/{abi}"))]
        .into_iter()
        .find(|p| p.join("kernel").is_dir())
        .with_context(|| format!("no modules for {abi} in {}", root.display()))?;
    let config = [root.join(format!("boot/config-{abi}")), moddir.join("config")].into_iter().find(|p| p.exists());
    Ok(Kernel { abi, version, vmlinuz, moddir, config })
}

/// The newest `linux-image-<line>.<…><flavour>` in the suite, as its ABI
/// string. Package names carry the ABI, so nothing is hard-coded here.
fn newest_abi(apt: &PrivateApt, line: &Line, flavour: &str) -> Result<String> {
    let prefix = format!("linux-image-{}.", line.name);
    let mut abis: Vec<String> = apt
        .names_with_prefix(&prefix)?
        .into_iter()
        .filter_map(|n| n.strip_prefix("linux-image-").map(str::to_string))
        .filter(|abi| is_abi_of(abi, line.name, flavour))
        .collect();
    if abis.is_empty() {
        let other: Vec<String> = apt
            .names_with_prefix("linux-image-")?
            .into_iter()
            .filter(|n| n.ends_with(flavour) && n.as_bytes().get(12).is_some_and(u8::is_ascii_digit))
            .collect();
        bail!(
            "suite {} has no {flavour} kernel of line {}; it has: {}",
            apt.suite,
            line.name,
            if other.is_empty() { "none".to_string() } else { other.join(", ") }
        );
    }
    abis.sort_by(|a, b| natural_cmp(a, b));
    Ok(abis.pop().expect("not empty"))
}

/// `6.12.43+deb12-cloud-amd64` is of line `6.12` (flavour `-cloud-amd64`);
/// `6.1.0-37-cloud-amd64` of `6.1` but not of `6.12`; debug and unsigned
/// variants are not kernels.
fn is_abi_of(abi: &str, line: &str, flavour: &str) -> bool {
    let Some(rest) = abi.strip_prefix(line) else { return false };
    let Some(rest) = rest.strip_prefix('.') else { return false };
    rest.starts_with(|c: char| c.is_ascii_digit()) && rest.ends_with(flavour)
}

/// Compares strings with digit runs as numbers (`6.12.9` < `6.12.10`).
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let b = s.as_bytes();
        for i in 1..=b.len() {
            if i == b.len() || b[i].is_ascii_digit() != b[start].is_ascii_digit() {
                out.push((b[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for (x, y) in ca.iter().zip(cb.iter()) {
        let o = match (x, y) {
            ((true, x), (true, y)) => {
                x.trim_start_matches('0').len().cmp(&y.trim_start_matches('0').len()).then(x.cmp(y))
            }
            ((_, x), (_, y)) => x.cmp(y),
        };
        if o.is_ne() {
            return o;
        }
    }
    ca.len().cmp(&cb.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abi_matches_its_line_only() {
        let f = flavour(Arch::X86_64);
        assert!(is_abi_of("6.12.43+deb12-cloud-amd64", "6.12", &f));
        assert!(is_abi_of("6.1.0-37-cloud-amd64", "6.1", &f));
        assert!(!is_abi_of("6.12.43+deb12-cloud-amd64", "6.1", &f));
        assert!(!is_abi_of("6.1.0-37-cloud-amd64-dbg", "6.1", &f));
        assert!(!is_abi_of("6.1.0-37-amd64", "6.1", &f));
    }

    #[test]
    fn arm64_takes_the_arm64_cloud_kernel_only() {
        let f = flavour(Arch::Arm64);
        assert_eq!(f, "-cloud-arm64");
        assert!(is_abi_of("6.12.118+deb12-cloud-arm64", "6.12", &f));
        assert!(!is_abi_of("6.12.118+deb12-cloud-amd64", "6.12", &f));
        // The generic, 16k-page and realtime arm64 flavours are not it.
        assert!(!is_abi_of("6.12.118+deb12-arm64", "6.12", &f));
        assert!(!is_abi_of("6.12.118+deb12-arm64-16k", "6.12", &f));
        assert!(!is_abi_of("6.12.118+deb12-rt-arm64", "6.12", &f));
        assert!(!is_abi_of("6.12.118+deb12-cloud-arm64-unsigned", "6.12", &f));
    }

    #[test]
    fn natural_order() {
        let mut v = ["6.12.10+deb12-cloud-amd64", "6.12.9+deb12-cloud-amd64", "6.12.41+deb12-cloud-amd64"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v.last().unwrap(), &"6.12.41+deb12-cloud-amd64");
        assert!(natural_cmp("5.10.0-9-cloud-amd64", "5.10.0-32-cloud-amd64").is_lt());
    }
}
