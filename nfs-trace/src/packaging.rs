//! Hidden subcommands for `cargo xtask dist`: shell completions and man pages,
//! generated from the same clap definition the binary parses with so they
//! cannot drift from it.
use std::io::Write as _;

use anyhow::{Context as _, Result};
use clap::CommandFactory as _;

use crate::cli::{Cli, CompletionsArgs, ManpageArgs};

pub fn completions(a: CompletionsArgs) -> Result<()> {
    let mut cmd = Cli::command();
    let mut buf = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "nfs-trace", &mut buf);
    write_stdout(&buf)
}

pub fn manpage(a: ManpageArgs) -> Result<()> {
    let mut cmd = Cli::command();
    // build() gives subcommands their full usage name ("nfs-trace watch").
    cmd.build();
    let page = match &a.subcommand {
        None => clap_mangen::Man::new(cmd),
        Some(name) => {
            let names: Vec<&str> =
                cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help").map(|s| s.get_name()).collect();
            let sub = cmd
                .get_subcommands()
                .find(|s| s.get_name() == name && names.contains(&name.as_str()))
                .with_context(|| format!("no subcommand '{name}' (one of: {})", names.join(", ")))?;
            clap_mangen::Man::new(sub.clone()).title(format!("nfs-trace-{name}"))
        }
    };
    // Subcommands carry no version of their own: name the package on every page.
    let page = page.source(concat!("nfs-trace ", env!("CARGO_PKG_VERSION"))).manual("User Commands");
    let mut buf = Vec::new();
    page.render(&mut buf)?;
    write_stdout(&buf)
}

fn write_stdout(buf: &[u8]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(buf).and_then(|_| out.flush()).context("cannot write to stdout")
}
