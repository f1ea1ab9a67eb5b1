//! `cargo xtask dist`: what ships (issue 6, item 4) into target/dist/:
//! the static musl binary, man pages and bash/zsh/fish completions; with
//! `--deb`, also a Debian package of them with the systemd unit (deb.rs).
//!
//! Man pages and completions come from the shipped binary's own hidden
//! `manpage` / `completions` subcommands, so they describe exactly the
//! binary next to them.
use std::{path::Path, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::cmd;

pub mod arm64;
mod deb;
mod deb_check;

/// (shell, file name the shell's completion loader looks for).
const SHELLS: &[(&str, &str)] = &[("bash", "nfs-trace"), ("zsh", "_nfs-trace"), ("fish", "nfs-trace.fish")];

pub fn main(with_deb: bool, check_deb: bool) -> Result<()> {
    let built = cmd::build_nfs_trace(true, true)?;
    let dist = cmd::target_dir().join("dist");
    // Start clean so nothing stale from an older layout ships.
    if dist.exists() {
        std::fs::remove_dir_all(&dist).with_context(|| format!("cannot clear {}", dist.display()))?;
    }
    for d in ["man/man1", "completions/bash", "completions/zsh", "completions/fish"] {
        std::fs::create_dir_all(dist.join(d))?;
    }
    let bin = dist.join("nfs-trace");
    std::fs::copy(&built, &bin).with_context(|| format!("cannot copy {}", built.display()))?;

    check_static(&bin)?;
    let version = stdout_of(Command::new(&bin).arg("--version"))?;
    if !version.starts_with("nfs-trace ") {
        bail!("{} --version printed {version:?}", bin.display());
    }

    // The binary knows its own subcommands: it writes one page each.
    let man_dir = dist.join("man/man1");
    cmd::run(Command::new(&bin).arg("manpage").arg("--out-dir").arg(&man_dir))?;
    let mut pages: Vec<_> = std::fs::read_dir(&man_dir)?.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    pages.sort();
    if !pages.iter().any(|p| p.ends_with("nfs-trace.1")) || pages.len() < 2 {
        bail!("nfs-trace manpage --out-dir wrote {} pages, expected the main one and one per subcommand", pages.len());
    }
    for p in &pages {
        check_man(p)?;
    }
    for (shell, file) in SHELLS {
        let path = dist.join("completions").join(shell).join(file);
        std::fs::write(&path, stdout_of(Command::new(&bin).args(["completions", shell]))?)?;
        // bash can check its own syntax; zsh and fish are not on this machine kind.
        if *shell == "bash" {
            cmd::run(Command::new("bash").arg("-n").arg(&path)).context("bash completion has a syntax error")?;
        }
    }

    println!("{}", version.trim());
    if with_deb {
        // "nfs-trace 0.1.0" → 0.1.0
        let v = version.trim().rsplit(' ').next().unwrap_or("0").to_string();
        let deb = deb::build(&dist, &v)?;
        println!("deb: {}", deb.display());
        if check_deb {
            deb_check::install_check(&deb)?;
        }
    }
    list(&dist)?;
    Ok(())
}

/// A static binary runs anywhere (and in the VM lab's bare initramfs): check
/// with both `file` and `ldd` rather than trusting the build flags.
fn check_static(bin: &Path) -> Result<()> {
    let file = stdout_of(Command::new("file").arg("-b").arg(bin)).context("`file` is needed to check the binary")?;
    if !(file.contains("statically linked") || file.contains("static-pie linked")) {
        bail!("{} is not static: file says {}", bin.display(), file.trim());
    }
    // ldd exits 1 on a static binary and says so; anything listing libraries is a failure.
    let out = Command::new("ldd").arg(bin).output().context("cannot run ldd")?;
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !(said.contains("not a dynamic executable") || said.contains("statically linked")) {
        bail!("{} is not static: ldd says {}", bin.display(), said.trim());
    }
    println!("static: file: {}", file.trim());
    println!("static: ldd: {}", said.trim());
    Ok(())
}

/// Formats a page with groff (man-db's formatter) when it is installed, with
/// warnings on, so a roff mistake fails here and not on a user's screen.
fn check_man(page: &Path) -> Result<()> {
    let Ok(out) = Command::new("groff").args(["-man", "-Tutf8", "-ww", "-z"]).arg(page).output() else {
        return Ok(());
    };
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || !err.trim().is_empty() {
        bail!("groff finds fault with {}: {}", page.display(), err.trim());
    }
    Ok(())
}

fn stdout_of(c: &mut Command) -> Result<String> {
    let out = c.output().with_context(|| format!("cannot start {c:?}"))?;
    if !out.status.success() {
        bail!("{c:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8(out.stdout)?)
}

fn list(dir: &Path) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.filter_map(|e| e.ok()).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        if p.is_dir() {
            list(&p)?;
        } else {
            println!("{:>10}  {}", e.metadata()?.len(), p.display());
        }
    }
    Ok(())
}
