//! The two identities every stage shares, kept as typed values from the
//! decoder to the renderers (which alone turn them into text): a TCP flow,
//! what a middlebox tracks a connection by, and the task that made it.
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// A network namespace, by the inode number `/proc/PID/ns/net` names
/// (`net:[4026531840]`). The kernel programs read it from the socket; 0 is
/// no namespace's inode, so it stands for "not known" (a kernel whose BTF
/// does not give the offsets): serialised as `null`, shown as `?`, and never
/// equal to a known one. Flows of one host with it unknown compare as one
/// namespace, as they did before namespaces were read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Netns(pub u32);

impl Netns {
    pub const UNKNOWN: Netns = Netns(0);

    pub fn known(self) -> Option<u32> {
        (self.0 != 0).then_some(self.0)
    }
}

impl Serialize for Netns {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.known().serialize(s)
    }
}

/// `null` (not known) or the inode, as serialised.
impl<'de> Deserialize<'de> for Netns {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Option::<u32>::deserialize(d)?.map_or(Netns::UNKNOWN, Netns))
    }
}

impl std::fmt::Display for Netns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.known() {
            Some(n) => write!(f, "{n}"),
            None => f.write_str("?"),
        }
    }
}

/// A TCP flow toward the server: what a stateful middlebox keys its entry on,
/// in its network namespace (two containers' flows with the same addresses
/// are two flows). A reuse is a property of a flow, whatever else connected
/// in between. Serialises as `laddr`, `sport`, `raddr`, `dport`, `netns`
/// (flattened into records).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Flow {
    pub laddr: IpAddr,
    pub sport: u16,
    pub raddr: IpAddr,
    pub dport: u16,
    pub netns: Netns,
}

impl Flow {
    /// Where the flow goes, without its source port.
    pub fn dest(&self) -> DestKey {
        DestKey { laddr: self.laddr, raddr: self.raddr, dport: self.dport, netns: self.netns }
    }
}

/// Where connects go: a flow minus its source port. Serialises as `laddr`,
/// `raddr`, `dport`, `netns`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DestKey {
    pub laddr: IpAddr,
    pub raddr: IpAddr,
    pub dport: u16,
    pub netns: Netns,
}

/// The task the kernel ran the event in (for reconnects that is a kernel
/// worker, `xprtiod`: attribute through the mount, not the task).
/// Serialises as `pid`, `comm`. The name is kept inline (at most 24
/// bytes without allocating; a kernel comm has 15): every record and
/// observation carries one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub pid: u32,
    pub comm: compact_str::CompactString,
}
