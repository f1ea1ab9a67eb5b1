//! Project tasks: `cargo xtask <setup|build|run|test|vm>`.
//!
//! `run` and `test` are the two commands README promises for a fresh machine:
//! both install what is missing first (idempotent, quick when all is there).
mod cmd;
mod setup;
mod vm;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "nfs-trace project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing need (apt packages, nightly rust-src,
    /// musl target, bpf-linker). Does nothing when all is there.
    Setup,
    /// Build nfs-trace (with its kernel programs).
    Build {
        #[arg(long)]
        release: bool,
        /// Build a static musl binary (for the VM lab and shipping).
        #[arg(long)]
        musl: bool,
    },
    /// Set up, build and run `nfs-trace watch` as root; arguments after `--`
    /// go to `watch`.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, then run the whole test suite (unit, host integration as root,
    /// VM lab).
    Test {
        /// Skip the VM lab (unit and host tests only).
        #[arg(long)]
        no_vm: bool,
    },
    /// The VM lab: real NFS server and client under QEMU.
    Vm(vm::VmArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.task {
        Task::Setup => setup::ensure_all(),
        Task::Build { release, musl } => {
            setup::ensure_all().and_then(|_| cmd::build_nfs_trace(release, musl).map(|_| ()))
        }
        Task::Run { args } => setup::ensure_all().and_then(|_| cmd::run_watch(&args)),
        Task::Test { no_vm } => setup::ensure_all().and_then(|_| cmd::test_all(!no_vm)),
        Task::Vm(args) => setup::ensure_all().and_then(|_| vm::main(args)),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
