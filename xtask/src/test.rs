//! `cargo xtask test`: the README's test command. Unit tests, host
//! integration tests (root), then the VM lab's test suite; it sits above
//! both `cmd` (building) and `vm` (the lab) so neither imports the other back.
use anyhow::{Result, bail};

use crate::cmd::{build_nfs_trace, cargo, is_root, run};

/// `cargo xtask test`: unit tests, host integration tests (root), VM lab.
pub fn test_all(with_vm: bool) -> Result<()> {
    if !is_root() {
        bail!("the test suite attaches BPF programs and makes network namespaces: run it as root");
    }
    let bin = build_nfs_trace(false, false)?;
    let mut c = cargo();
    c.args(["test"]).env("NFS_TRACE_BIN", &bin);
    run(&mut c)?;
    // The Debian package, built and installed in a throwaway chroot.
    crate::dist::main(true, true)?;
    // The static aarch64 build, run under qemu-user.
    crate::dist::arm64::main()?;
    if with_vm {
        // A closing line any CI reader understands, counted from the
        // records the suite keeps (one per scenario, `ok` per scenario);
        // an old file must not speak for a run that wrote none.
        let path = crate::vm::cache_dir().join("test-suite-results.json");
        let _ = std::fs::remove_file(&path);
        let res = crate::vm::test_suite();
        if let Some(recs) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str::<Vec<serde_json::Value>>(&t).ok())
        {
            let passed = recs.iter().filter(|r| r["ok"] == true).count();
            println!("vmlab: {passed} passed, {} failed", recs.len() - passed);
        }
        res?;
    }
    Ok(())
}
