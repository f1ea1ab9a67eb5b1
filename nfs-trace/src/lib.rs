//! nfs-trace: trace NFS client reconnects and flag TCP source-port reuse.
//!
//! Data flows one way, and the folders are its stages:
//! `kernel` (hooks, BTF, tracefs, ring buffer, decode) → `model` (pure
//! trackers and verdicts) → `output` (text, JSON lines, metrics); `host`
//! reads what /proc and /sys say; `session` wires kernel → model for the
//! thin subcommands in `cmd`.
pub mod cli;
pub mod cmd;
pub mod flow;
pub mod host;
pub mod kernel;
pub mod model;
pub mod output;
pub mod session;

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod storm_cost;
