//! Building, running and testing nfs-trace.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask has a parent").to_path_buf()
}

/// Cargo's target directory (honours CARGO_TARGET_DIR).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

pub const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";

/// Runs a command, failing with its command line when it does not succeed.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(workspace_root());
    c
}

/// Builds the nfs-trace binary and returns its path.
pub fn build_nfs_trace(release: bool, musl: bool) -> Result<PathBuf> {
    let mut c = cargo();
    c.args(["build", "--package", "nfs-trace"]);
    if release {
        c.arg("--release");
    }
    if musl {
        c.args(["--target", MUSL_TARGET]);
        // Static, so the binary runs in the VM's initramfs with no libc.
        c.env("RUSTFLAGS", "-C target-feature=+crt-static");
    }
    run(&mut c)?;
    let mut p = target_dir();
    if musl {
        p.push(MUSL_TARGET);
    }
    p.push(if release { "release" } else { "debug" });
    p.push("nfs-trace");
    Ok(p)
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc_geteuid() == 0 }
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// `cargo xtask run`: build in release and run `nfs-trace watch` as root.
pub fn run_watch(args: &[String]) -> Result<()> {
    let bin = build_nfs_trace(true, false)?;
    let mut c = if is_root() {
        Command::new(&bin)
    } else {
        let mut s = Command::new("sudo");
        s.arg("-E").arg(&bin);
        s
    };
    c.arg("watch").args(args);
    let status = c.status().with_context(|| format!("cannot start {}", bin.display()))?;
    std::process::exit(status.code().unwrap_or(1));
}
