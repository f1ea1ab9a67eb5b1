//! What a canary connect found (issue 12): one TCP connect to a stalled
//! flow's server and port from a fresh ephemeral port, in the flow's network
//! namespace. Made by `host::canary`; read by the episode tracker, where it
//! tells a dropped reused flow (the canary gets through) from a server or
//! path that is down (it fails too). Pure data: no I/O here.
use serde::{Deserialize, Serialize};

use crate::flow::DestKey;

/// How the canary's connect ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CanaryOutcome {
    /// ESTABLISHED after `rtt_ns` (the handshake's time).
    Connected { rtt_ns: u64 },
    /// Refused (RST to the SYN): the host answers, nothing listens.
    Refused,
    /// Another error (positive errno: EHOSTUNREACH, ENETUNREACH, ...).
    Error(i32),
    /// No answer within the canary's timeout.
    TimedOut,
}

/// One canary, for the destination (netns, laddr, raddr, dport) of the
/// stalled flow it was made for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanaryResult {
    pub dest: DestKey,
    /// The canary's own source port (never the stalled flow's).
    pub sport: u16,
    /// CLOCK_MONOTONIC when it started and when it ended.
    pub start_ns: u64,
    pub end_ns: u64,
    pub outcome: CanaryOutcome,
}

impl CanaryResult {
    /// The canary got through: the server and path answer new flows.
    pub fn connected(&self) -> bool {
        matches!(self.outcome, CanaryOutcome::Connected { .. })
    }
}
