//! `cargo xtask dist --deb`: a Debian package of what `dist` built —
//! the static binary in /usr/sbin, man pages, completions, the systemd unit
//! (deploy/systemd), and the alert rules and dashboard (deploy/prometheus,
//! deploy/grafana) under /usr/share/nfs-trace. Built with dpkg-deb
//! (`--root-owner-group`: files owned by root without fakeroot); the
//! architecture is this machine's as dpkg names it, which is the static
//! binary's.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::cmd;

/// dpkg's name for this machine's architecture.
fn dpkg_arch() -> Result<String> {
    let out = Command::new("dpkg").arg("--print-architecture").output().context("cannot run dpkg")?;
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

fn copy(from: &Path, to: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(to.parent().expect("a file path"))?;
    std::fs::copy(from, to).with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Builds target/dist/nfs-trace_VERSION_ARCH.deb from target/dist; returns its path.
pub fn build(dist: &Path, version: &str) -> Result<PathBuf> {
    let root = cmd::workspace_root();
    let arch = dpkg_arch()?;
    let stage = dist.join("deb");
    if stage.exists() {
        std::fs::remove_dir_all(&stage)?;
    }
    copy(&dist.join("nfs-trace"), &stage.join("usr/sbin/nfs-trace"), 0o755)?;
    for e in std::fs::read_dir(dist.join("man/man1"))? {
        let p = e?.path();
        let to = stage.join("usr/share/man/man1").join(p.file_name().expect("a page"));
        copy(&p, &to, 0o644)?;
        // Debian compresses man pages; -n keeps the package reproducible.
        cmd::run(Command::new("gzip").args(["-9n"]).arg(&to))?;
    }
    for (from, to) in [
        ("completions/bash/nfs-trace", "usr/share/bash-completion/completions/nfs-trace"),
        ("completions/zsh/_nfs-trace", "usr/share/zsh/vendor-completions/_nfs-trace"),
        ("completions/fish/nfs-trace.fish", "usr/share/fish/vendor_completions.d/nfs-trace.fish"),
    ] {
        copy(&dist.join(from), &stage.join(to), 0o644)?;
    }
    let deploy = root.join("deploy");
    copy(&deploy.join("systemd/nfs-trace.service"), &stage.join("lib/systemd/system/nfs-trace.service"), 0o644)?;
    for f in ["prometheus/nfs-trace.rules.yml", "prometheus/nfs-trace.rules.test.yml", "grafana/nfs-trace-dashboard.json"] {
        copy(&deploy.join(f), &stage.join("usr/share/nfs-trace").join(f), 0o644)?;
    }
    copy(&root.join("README.md"), &stage.join("usr/share/doc/nfs-trace/README.md"), 0o644)?;
    for s in ["postinst", "prerm", "postrm"] {
        copy(&deploy.join("debian").join(s), &stage.join("DEBIAN").join(s), 0o755)?;
    }
    let size_kib = du_bytes(&stage)?.div_ceil(1024);
    let control = format!(
        "Package: nfs-trace\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: nfs-trace developers <nfs-trace@localhost>\n\
         Installed-Size: {size_kib}\n\
         Section: admin\n\
         Priority: optional\n\
         Recommends: nfs-common\n\
         Description: eBPF tracer for NFS client reconnects and source-port reuse\n \
         Shows every TCP connect toward the NFS port with its source port and outcome,\n \
         says when a reconnect reuses the source port of an earlier flow (which a\n \
         stateful middlebox may still hold and drop), follows each hang from first\n \
         symptom to recovery with a verdict its evidence proves, and proves on this\n \
         host which mount options change the port. Runs as a service with Prometheus\n \
         metrics; alert rules and a Grafana dashboard are in /usr/share/nfs-trace.\n"
    );
    std::fs::write(stage.join("DEBIAN/control"), control)?;
    let deb = dist.join(format!("nfs-trace_{version}_{arch}.deb"));
    let out = Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&stage)
        .arg(&deb)
        .output()
        .context("cannot run dpkg-deb")?;
    if !out.status.success() {
        bail!("dpkg-deb --build failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    std::fs::remove_dir_all(&stage)?;
    Ok(deb)
}

fn du_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let m = e.metadata()?;
        total += if m.is_dir() { du_bytes(&e.path())? } else { m.len() };
    }
    Ok(total)
}
