//! Hidden subcommands for `cargo xtask dist`: shell completions and man pages,
//! generated from the same clap definition the binary parses with so they
//! cannot drift from it.
use std::{io::Write as _, path::Path};

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
    // The pages worth shipping: not the hidden ones, not clap's own `help`.
    let subs: Vec<&clap::Command> =
        cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help").collect();
    if let Some(dir) = &a.out_dir {
        write_page(&dir.join("nfs-trace.1"), page(cmd.clone(), "nfs-trace"))?;
        for sub in &subs {
            let title = format!("nfs-trace-{}", sub.get_name());
            write_page(&dir.join(format!("{title}.1")), page((*sub).clone(), &title))?;
        }
        return Ok(());
    }
    let man = match &a.subcommand {
        None => page(cmd.clone(), "nfs-trace"),
        Some(name) => {
            let sub = subs.iter().find(|s| s.get_name() == name).with_context(|| {
                let names: Vec<&str> = subs.iter().map(|s| s.get_name()).collect();
                format!("no subcommand '{name}' (one of: {})", names.join(", "))
            })?;
            page((*sub).clone(), &format!("nfs-trace-{name}"))
        }
    };
    let mut buf = Vec::new();
    man.render(&mut buf)?;
    write_stdout(&buf)
}

fn page(cmd: clap::Command, title: &str) -> clap_mangen::Man {
    // Subcommands carry no version of their own: name the package on every page.
    clap_mangen::Man::new(cmd)
        .title(title.to_string())
        .source(concat!("nfs-trace ", env!("CARGO_PKG_VERSION")))
        .manual("User Commands")
}

fn write_page(path: &Path, man: clap_mangen::Man) -> Result<()> {
    let mut buf = Vec::new();
    man.render(&mut buf)?;
    std::fs::write(path, buf).with_context(|| format!("cannot write {}", path.display()))
}

fn write_stdout(buf: &[u8]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(buf).and_then(|_| out.flush()).context("cannot write to stdout")
}
