//! Project tasks: `cargo xtask <setup|build|run|test|vm|bench|dist>`.
//!
//! `run` and `test` are the two commands README promises for a fresh machine:
//! both install what is missing first (idempotent, quick when all is there).
mod bench;
mod cmd;
mod dist;
mod setup;
mod soak;
mod test;
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
    /// Overhead benchmark: a loopback connect storm to :2049 under no tracer,
    /// nfs-trace, tcpstates and bpftrace; writes docs/bench.md (root).
    Bench(bench::BenchArgs),
    /// Release artefacts in target/dist: static musl binary, man pages,
    /// shell completions; --deb also builds a Debian package with the systemd unit.
    Dist {
        /// Also build target/dist/nfs-trace_VERSION_ARCH.deb.
        #[arg(long)]
        deb: bool,
        /// With --deb: install it in a throwaway overlay chroot and check it (root).
        #[arg(long, requires = "deb")]
        check: bool,
        /// Build for another architecture instead: `aarch64` (static musl, rust-lld), checked under qemu-user.
        #[arg(long, value_parser = ["aarch64"], conflicts_with = "deb")]
        target: Option<String>,
    },
    /// Reconnect churn under `nfs-trace watch` for N minutes; RSS and state sizes must stay flat.
    Soak(soak::SoakArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        // Help and version are not errors; no task shows the help (exit 2);
        // anything else is one line, not clap's usage block.
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            return ExitCode::from(2);
        }
        Err(e) => {
            let msg = e.to_string();
            let first = msg.lines().next().unwrap_or("bad arguments").trim_start_matches("error: ");
            eprintln!("xtask: error: {first} (see cargo xtask help)");
            return ExitCode::from(2);
        }
    };
    let res = match cli.task {
        Task::Setup => setup::ensure_all(),
        Task::Build { release, musl } => {
            setup::ensure_all().and_then(|_| cmd::build_nfs_trace(release, musl).map(|_| ()))
        }
        Task::Run { args } => setup::ensure_all().and_then(|_| cmd::run_watch(&args)),
        Task::Test { no_vm } => setup::ensure_all().and_then(|_| test::test_all(!no_vm)),
        Task::Vm(args) => setup::ensure_all().and_then(|_| vm::main(args)),
        Task::Bench(args) => setup::ensure_all().and_then(|_| bench::main(args)),
        Task::Dist { deb, check, target } => setup::ensure_all().and_then(|_| match target {
            Some(_) => dist::arm64::main(),
            None => dist::main(deb, check),
        }),
        Task::Soak(args) => setup::ensure_all().and_then(|_| soak::main(args)),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
