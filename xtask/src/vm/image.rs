//! Assembles the guest's initramfs for one kernel: our init (`lab_guest`)
//! and `nfs-trace` (both static musl, for the guest's architecture), the
//! userland, the kernel's modules.
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use super::{arch::Arch, initramfs::Archive, kernels::Kernel, modules, userland};
use crate::cmd;

/// Builds the guest init: the `lab_guest` bin of the tests crate, static musl.
pub fn build_guest_init(arch: Arch) -> Result<PathBuf> {
    let target = arch.rust_target();
    let mut c = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(cmd::workspace_root())
        .args(["build", "--release", "--package", "nfs-trace-tests", "--bin", "lab_guest", "--target", target])
        // Static: the initramfs has no musl libc to load.
        .env("RUSTFLAGS", "-C target-feature=+crt-static");
    if arch == Arch::Arm64 {
        // No cross gcc here: rust-lld links it, as for the dist build.
        c.env(crate::dist::arm64::LINKER_ENV, "rust-lld");
    }
    cmd::run(&mut c)?;
    Ok(cmd::target_dir().join(target).join("release/lab_guest"))
}

/// nfs-trace for the guest: the static musl build of `arch`.
pub fn build_tracer(arch: Arch) -> Result<PathBuf> {
    match arch {
        Arch::X86_64 => cmd::build_nfs_trace(true, true),
        Arch::Arm64 => crate::dist::arm64::build(),
    }
}

/// Writes `<cache>/initrd-<abi>.gz`; returns its path and the module order.
/// The ABI names the architecture, so arm64 and x86 images do not collide.
pub fn build(cache: &Path, k: &Kernel, init: &Path, tracer: Option<&Path>, arch: Arch) -> Result<(PathBuf, Vec<String>)> {
    let t0 = std::time::Instant::now();
    let mut a = Archive::default();
    for d in ["/dev", "/proc", "/sys", "/run", "/tmp", "/mnt", "/export", "/var/lib/nfs", "/root"] {
        a.dir(d)?;
    }
    // The kernel opens /dev/console for init's stdio before devtmpfs exists.
    a.char_dev("/dev/console", 5, 1)?;
    a.copy("/init", init)?;
    if let Some(t) = tracer {
        a.copy("/bin/nfs-trace", t)?;
    }
    userland::add(&mut a, cache, arch)?;
    let mods = modules::load_order(&k.moddir, modules::WANTED, modules::IF_PRESENT)
        .with_context(|| format!("modules of {}", k.abi))?;
    let order: Vec<String> = mods.iter().map(|m| m.name.clone()).collect();
    for m in mods {
        a.file(&format!("/lib/modules/{}.ko", m.name), m.data, 0o644)?;
    }
    a.file("/lib/modules/order", (order.join("\n") + "\n").into_bytes(), 0o644)?;
    let t1 = std::time::Instant::now();
    let out = cache.join(format!("initrd-{}.gz", k.abi));
    let size = a.write_gz(&out)?;
    eprintln!(
        "xtask vm: {} ({:.1} MB; gathered in {:.1} s, compressed in {:.1} s), modules: {}",
        out.display(),
        size as f64 / 1e6,
        (t1 - t0).as_secs_f64(),
        t1.elapsed().as_secs_f64(),
        order.join(" ")
    );
    Ok((out, order))
}
