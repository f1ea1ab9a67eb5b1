//! The `nfs-trace` binary: parses the command line and runs a subcommand
//! (the library does the work; see its crate docs for the data flow).
use std::process::ExitCode;

use clap::Parser as _;

use nfs_trace::{
    cli::{Cli, Command},
    cmd::{check, packaging, probes, prove, report, watch},
    output::escape::escape,
};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand) {
                let _ = e.print();
                return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand { ExitCode::from(2) } else { ExitCode::SUCCESS };
            }
            // One line, not clap's usage block: "bad flag" should read as such.
            // It quotes the bad value back: escaped, like any outside text.
            let msg = e.to_string();
            let mut first = msg.lines().next().unwrap_or("bad arguments").trim_start_matches("error: ").to_string();
            // "…were not provided:" lists them on the lines below: keep them on this one.
            if first.ends_with(':') {
                let more: Vec<&str> = msg.lines().skip(1).map(str::trim).take_while(|l| !l.is_empty() && !l.starts_with("Usage:")).collect();
                first = format!("{} {}", first, more.join(", "));
            }
            eprintln!("nfs-trace: error: {} (see nfs-trace --help)", escape(&first));
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nfs-trace: error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ok = |r: anyhow::Result<()>| r.map(|()| ExitCode::SUCCESS);
    let res = rt.block_on(async {
        match cli.command {
            Command::Check(a) => check::run(a),
            Command::Prove(a) => prove::run(a),
            Command::Watch(a) => ok(watch::run(a).await),
            Command::Probes(a) => ok(probes::run(a)),
            Command::Report(a) => ok(report::run(a)),
            Command::Completions(a) => ok(packaging::completions(a)),
            Command::Manpage(a) => ok(packaging::manpage(a)),
        }
    });
    match res {
        Ok(code) => code,
        Err(e) => {
            // Errors can quote mount paths and kernel text: escaped like any
            // other outside text on its way to a terminal.
            eprintln!("nfs-trace: error: {}", escape(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}
