//! What the kernel programs could not record, as their per-CPU counters say.
use serde::Serialize;

/// Lost-record counters read from the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Lost {
    pub events: u64,
    pub sockets: u64,
    /// Of `events`, connect attempts (so connects made = seen + this).
    pub connects: u64,
}
