//! The two identities every stage shares, kept as typed values from the
//! decoder to the renderers (which alone turn them into text): a TCP flow,
//! what a middlebox tracks a connection by, and the task that made it.
use std::net::IpAddr;

use serde::Serialize;

/// A TCP flow toward the server: what a stateful middlebox keys its entry on.
/// A reuse is a property of a flow, whatever else connected in between.
/// Serialises as `laddr`, `sport`, `raddr`, `dport` (flattened into records).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Flow {
    pub laddr: IpAddr,
    pub sport: u16,
    pub raddr: IpAddr,
    pub dport: u16,
}

impl Flow {
    /// Where the flow goes, without its source port.
    pub fn dest(&self) -> DestKey {
        DestKey { laddr: self.laddr, raddr: self.raddr, dport: self.dport }
    }
}

/// Where connects go: a flow minus its source port. Serialises as `laddr`,
/// `raddr`, `dport`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct DestKey {
    pub laddr: IpAddr,
    pub raddr: IpAddr,
    pub dport: u16,
}

/// The task the kernel ran the event in (for reconnects that is a kernel
/// worker, `xprtiod`: attribute through the mount, not the task).
/// Serialises as `pid`, `comm`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Task {
    pub pid: u32,
    pub comm: String,
}
