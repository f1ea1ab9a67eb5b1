//! `cargo xtask dist --target aarch64`: the static aarch64 (Graviton)
//! binary, target/dist-aarch64/nfs-trace. Linked by rust-lld, which ships
//! with the toolchain, against the musl target's self-contained C runtime:
//! no cross gcc needed. The kernel programs are the same BPF bytecode.
//!
//! Checked without arm64 hardware: `file` must call it a static aarch64
//! executable, and under qemu-user (qemu-aarch64-static) it must print the
//! same version and the same `check --json` of a fixture /proc tree as the
//! native binary. qemu-user has no bpf() system call, so what needs BPF is
//! not tried here: the arm64 VM lab (`cargo xtask vm --arch arm64`) does.
use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::cmd;

pub const TARGET: &str = "aarch64-unknown-linux-musl";
/// Cargo's linker setting for TARGET.
pub const LINKER_ENV: &str = "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER";

/// The static aarch64 nfs-trace (also the arm64 VM lab's tracer).
pub fn build() -> Result<PathBuf> {
    let mut c = cmd::cargo();
    c.args(["build", "--package", "nfs-trace", "--release", "--target", TARGET])
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env(LINKER_ENV, "rust-lld");
    cmd::run(&mut c)?;
    Ok(cmd::target_dir().join(TARGET).join("release/nfs-trace"))
}

fn out_of(c: &mut Command) -> Result<String> {
    let o = c.output().with_context(|| format!("cannot start {c:?}"))?;
    if !o.status.success() {
        bail!("{c:?} failed ({}): {}", o.status, String::from_utf8_lossy(&o.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// A /proc tree with two NFS mounts, one that remembers its port.
fn fixture() -> Result<PathBuf> {
    let root = cmd::target_dir().join("dist-aarch64/fixture");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("proc/self"))?;
    std::fs::write(
        root.join("proc/self/mountinfo"),
        "36 25 0:32 / /mnt/v3 rw - nfs 10.0.0.5:/export rw,vers=3,proto=tcp,addr=10.0.0.5\n\
         37 25 0:33 / /mnt/v41 rw - nfs4 10.0.0.5:/ rw,vers=4.1,proto=tcp,addr=10.0.0.5\n",
    )?;
    std::fs::write(
        root.join("proc/self/mountstats"),
        "device 10.0.0.5:/export mounted on /mnt/v3 with fstype nfs statvers=1.1\n\topts:\trw,vers=3\n\txprt:\ttcp 790 1 2 0 0 9 9 0 9 0 2 0 0\n\
         device 10.0.0.5:/ mounted on /mnt/v41 with fstype nfs4 statvers=1.1\n\topts:\trw,vers=4.1\n\txprt:\ttcp 0 0 1 0 0 9 9 0 9 0 2 0 0\n",
    )?;
    std::fs::create_dir_all(root.join("sys"))?;
    Ok(root)
}

pub fn main() -> Result<()> {
    let built = build()?;
    let dir = cmd::target_dir().join("dist-aarch64");
    std::fs::create_dir_all(&dir)?;
    let bin = dir.join("nfs-trace");
    std::fs::copy(&built, &bin).with_context(|| format!("cannot copy {}", built.display()))?;
    let file = out_of(Command::new("file").arg("-b").arg(&bin))?;
    if !(file.contains("ARM aarch64") && file.contains("statically linked")) {
        bail!("{} is not a static aarch64 executable: file says {}", bin.display(), file.trim());
    }
    println!("aarch64: file: {}", file.trim());
    let native = cmd::build_nfs_trace(true, true)?;
    let qemu = "qemu-aarch64-static";
    let (v_arm, v_x86) = (out_of(Command::new(qemu).arg(&bin).arg("--version"))?, out_of(Command::new(&native).arg("--version"))?);
    if v_arm != v_x86 {
        bail!("the aarch64 binary says {v_arm:?}, the native one {v_x86:?}");
    }
    let fx = fixture()?;
    let args = |c: &mut Command| {
        c.args(["check", "--json", "--proc-root"]).arg(fx.join("proc")).arg("--sys-root").arg(fx.join("sys"));
    };
    // Exit 2: /mnt/v3 is flagged; both must say so alike.
    let run = |c: &mut Command| -> Result<(Option<i32>, String)> {
        args(c);
        let o = c.output().with_context(|| format!("cannot start {c:?}"))?;
        Ok((o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned()))
    };
    let arm = run(Command::new(qemu).arg(&bin))?;
    let x86 = run(&mut Command::new(&native))?;
    if arm != x86 || arm.0 != Some(2) || !arm.1.contains("\"remembered_ports\":[790]") {
        bail!("check --json differs or is wrong under qemu-aarch64: aarch64 {arm:?}, native {x86:?}");
    }
    println!("aarch64: {} (qemu-user): --version and check --json of a fixture equal the native binary's", bin.display());
    Ok(())
}
