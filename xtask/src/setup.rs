//! Installs what building and testing need, idempotently: each step checks
//! first and does nothing when its thing is already there, so `run` and `test`
//! stay quick on a machine that has everything.
use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::cmd::{MUSL_TARGET, run};

/// Debian packages the host tests and the VM lab use.
/// nftables: the SYN-drop test; iproute2: netns; qemu/busybox/cpio: the lab.
const APT_PACKAGES: &[&str] = &[
    "nftables",
    "iproute2",
    "qemu-system-x86",
    // The arm64 VM lab (`cargo xtask vm --arch arm64`): QEMU's `virt` board
    // boots the kernel directly, so no firmware package is needed.
    "qemu-system-arm",
    "busybox-static",
    "cpio",
    "xz-utils",
    "zstd",
    // promtool, the real parser that validates `watch --metrics` in the tests.
    "prometheus",
    // The .deb check: systemd-analyze verifies the unit, man-db resolves
    // its man: pages, groff formats them (dpkg-deb, gzip, chroot: essential).
    "systemd",
    "man-db",
    "groff-base",
    // The aarch64 build is run under qemu-user in the tests (dist/arm64.rs).
    "qemu-user-static",
    // The report page (`report --html`) is rendered in headless Chromium by
    // the tests (tests/src/chromium.rs): a screenshot and the parsed DOM.
    "chromium",
];

pub fn ensure_all() -> Result<()> {
    ensure_apt(APT_PACKAGES)?;
    ensure_nightly_rust_src()?;
    ensure_rust_target(MUSL_TARGET)?;
    ensure_rust_target(crate::dist::arm64::TARGET)?;
    ensure_bpf_linker()?;
    Ok(())
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("cannot start {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn dpkg_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// Installs missing Debian packages (apt-get update once, only if needed).
pub fn ensure_apt(pkgs: &[&str]) -> Result<()> {
    let missing: Vec<&str> = pkgs.iter().copied().filter(|p| !dpkg_installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !crate::cmd::is_root() {
        bail!("missing Debian packages {}: run as root (or apt-get install them)", missing.join(" "));
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    run(Command::new("apt-get").arg("update").arg("-q"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn ensure_nightly_rust_src() -> Result<()> {
    let installed = output(Command::new("rustup").args(["component", "list", "--installed", "--toolchain", "nightly"]))
        .context("the nightly toolchain is needed to build the kernel programs")?;
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    eprintln!("xtask: adding rust-src to nightly");
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

fn ensure_rust_target(target: &str) -> Result<()> {
    let installed = output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    if installed.lines().any(|l| l.trim() == target) {
        return Ok(());
    }
    eprintln!("xtask: adding target {target}");
    run(Command::new("rustup").args(["target", "add", target]))
}

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
}

/// bpf-linker, built against the LLVM that ships inside the nightly toolchain
/// (a plain `cargo install bpf-linker` wants a system LLVM this Debian lacks;
/// FINDINGS §1). aya-build runs it under `rustup run nightly`, which puts that
/// libLLVM on the library path.
fn ensure_bpf_linker() -> Result<()> {
    let works = Command::new("rustup")
        .args(["run", "nightly", "bpf-linker", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if works {
        return Ok(());
    }
    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
    let libdir = PathBuf::from(sysroot.trim()).join("lib");
    let llvm = std::fs::read_dir(&libdir)
        .with_context(|| format!("cannot read {}", libdir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so."))
        .with_context(|| format!("no libLLVM.so.* in {}", libdir.display()))?;
    // "libLLVM.so.22.1-rust-1.97.0-nightly" → LLVM major 22 → feature llvm-22.
    let major: String = llvm["libLLVM.so.".len()..].chars().take_while(|c| c.is_ascii_digit()).collect();
    let prefix = cargo_home().join("nfs-trace-llvm");
    std::fs::create_dir_all(prefix.join("lib"))?;
    let link = prefix.join("lib/libLLVM.so");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(libdir.join(&llvm), &link)
        .with_context(|| format!("cannot link {}", link.display()))?;
    eprintln!("xtask: installing bpf-linker against {llvm} (about a minute)");
    run(Command::new("cargo")
        .args(["install", "bpf-linker", "--no-default-features", "--features"])
        .arg(format!("llvm-{major}"))
        .env("LLVM_PREFIX", &prefix))
}
