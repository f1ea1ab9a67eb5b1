//! What the tracker says about connects: each attempt, each reuse, each
//! stall, each SYN retransmit and close, with who made it.
use super::{CloseHow, Outcome};
use crate::{
    flow::{Flow, Task},
    kernel::decode::Event,
};

/// Identity of a socket as shown to people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Who {
    pub sk: u64,
    /// The SunRPC transport owning the socket (0 for other sockets): what
    /// attributes a flow to a mount.
    pub xprt: u64,
    pub task: Task,
    pub flow: Flow,
}

impl Who {
    pub(super) fn of(ev: &Event) -> Self {
        Who { sk: ev.sk, xprt: ev.xprt, task: ev.task.clone(), flow: ev.flow }
    }
}

/// A connect attempt that left SYN_SENT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    pub who: Who,
    pub ts_ns: u64,
    pub outcome: Outcome,
    pub errno: i32,
    pub syn_sent_ns: u64,
    pub syn_retrans: u32,
    /// 1-based count of attempts to this destination.
    pub attempt: u64,
    pub reused: bool,
}

/// A connect whose flow (local address and port, server address and port)
/// was seen before: to a middlebox it is the same flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reuse {
    pub who: Who,
    pub ts_ns: u64,
    /// Uses in a row of this flow (1 = the second use).
    pub streak: u32,
    pub prev_outcome: Outcome,
    /// When the earlier connection of this flow ended (CLOSE, or leaving
    /// SYN_SENT for a failed attempt); None if not seen.
    pub prev_end_ns: Option<u64>,
    /// From that end to this attempt's start.
    pub gap_ns: Option<u64>,
    /// A chance repeat rather than a rebind: another transport's flow, or a
    /// flow that ended long ago (see [`super::CHANCE_GAP_NS`]). Reported, and
    /// still a stall if its SYNs are dropped, but not counted as a reuse.
    pub chance: bool,
}

/// A stall: a connect stuck in SYN_SENT, retransmitting SYNs — on a flow that
/// was seen before (what a middlebox still holding the old flow does to a
/// reconnect), or from a new port (`reused` false: the server or the path
/// does not answer). It belongs to its socket's transport (or, for a socket no
/// transport owns, to its socket and flow) and lasts until that connects;
/// other flows to the server connecting meanwhile are its siblings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stall {
    pub who: Who,
    /// SYN_SENT start of the first stalled attempt.
    pub start_ns: u64,
    /// The latest event of the episode.
    pub last_ns: u64,
    /// SYN retransmits over all its attempts so far.
    pub retransmits: u32,
    /// Attempts that ended without a connection.
    pub failed_attempts: u32,
    /// Whether its flow was seen before (a reused port). A stall from a new
    /// port is a hang too, but no middlebox holds an earlier flow of it.
    pub reused: bool,
    /// When the flow whose port was reused ended, if seen.
    pub prev_end_ns: Option<u64>,
    /// Set when it ended: the time and the port that finally connected.
    pub end_ns: Option<u64>,
    pub end_sport: Option<u16>,
    /// Lines the kernel logged meanwhile ("nfs: server … not responding").
    pub kernel_said: Vec<String>,
    /// Connects to the same server that succeeded from other flows while it
    /// lasted: the server and the path answer, only this flow is dropped.
    pub siblings_connected: u32,
    /// The owning transport (0: none), which may retry from another socket.
    pub(super) xprt: u64,
    pub(super) retrans_done: u32,
    /// When it was last reported live (an event or a [`Tracker::tick`]).
    pub(super) reported_ns: u64,
}

impl Stall {
    pub fn duration_ns(&self) -> u64 {
        self.end_ns.unwrap_or(self.last_ns).saturating_sub(self.start_ns)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observation {
    Connect(Attempt),
    Reuse(Reuse),
    /// A stall goes on (`ended` false, at each SYN retransmit) or ended.
    Stall { stall: Stall, ended: bool },
    SynRetransmit { who: Who, ts_ns: u64, retransmits: u32, elapsed_ns: u64 },
    /// An established connection's data retransmitted `retransmits` times
    /// since `since_ns` (its run's first retransmit) without the ACK moving
    /// on: the flow is not being answered (a black hole, a dead server, a
    /// path that drops it).
    Unanswered { who: Who, ts_ns: u64, retransmits: u32, since_ns: u64 },
    Close { who: Who, ts_ns: u64, how: CloseHow, errno: i32, lifetime_ns: u64 },
}
