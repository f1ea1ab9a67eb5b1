//! The VM lab (issue 3): placeholder until the lab lands.
use anyhow::{Result, bail};

#[derive(clap::Args)]
pub struct VmArgs {}

pub fn main(_args: VmArgs) -> Result<()> {
    bail!("the VM lab is not built yet")
}

/// The part of `cargo xtask test` that boots VMs.
pub fn test_suite() -> Result<()> {
    Ok(())
}
