//! The subcommands, thin: each wires kernel, host, model and output stages.
pub mod check;
pub mod packaging;
pub mod probes;
pub mod prove;
pub mod report;
pub mod watch;
