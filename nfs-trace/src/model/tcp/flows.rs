//! Memory of flows seen, so a connect can be compared with the earlier flow
//! of the same 4-tuple whatever connected in between (nconnect siblings,
//! other mounts of the server, other processes). Bounded: past the bound the
//! flow remembered longest ago is forgotten, in O(1), and counted.
use std::collections::VecDeque;

use rustc_hash::FxHashMap;

use super::Outcome;
use crate::flow::Flow;

/// Flows remembered at once. An NFS client has a handful of flows to each
/// server; a connect storm to the NFS port from ephemeral ports is what
/// fills this. 32,768 covers half the ephemeral range and costs about 3 MB
/// when full.
pub const MAX_FLOWS: usize = 32_768;

/// What is remembered of the latest connect of a flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowMem {
    /// The socket of that connect (0: seeded from the kernel's socket list).
    pub sk: u64,
    /// The SunRPC transport that owned it (0: none, or not known).
    pub xprt: u64,
    pub outcome: Outcome,
    /// When it ended: a failed attempt when it left SYN_SENT, an established
    /// one at its CLOSE (or the transport's drop); None while it lives or if
    /// its end was not seen.
    pub end_ns: Option<u64>,
    /// Uses in a row of this flow before the latest (0: first use).
    pub streak: u32,
}

pub struct FlowMemory {
    map: FxHashMap<Flow, (FlowMem, u64)>,
    /// Insertion order with the generation each insert had; entries whose
    /// generation no longer matches the map are stale and skipped.
    order: VecDeque<(Flow, u64)>,
    next_gen: u64,
    cap: usize,
    /// Flows forgotten to stay within the bound.
    pub evicted: u64,
}

impl FlowMemory {
    pub fn with_capacity(cap: usize) -> Self {
        FlowMemory { map: FxHashMap::default(), order: VecDeque::new(), next_gen: 0, cap: cap.max(1), evicted: 0 }
    }

    pub fn get(&self, flow: &Flow) -> Option<&FlowMem> {
        self.map.get(flow).map(|(m, _)| m)
    }

    pub fn get_mut(&mut self, flow: &Flow) -> Option<&mut FlowMem> {
        self.map.get_mut(flow).map(|(m, _)| m)
    }

    /// Every remembered flow (for a lookup without the local address).
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&Flow, &mut FlowMem)> {
        self.map.iter_mut().map(|(f, (m, _))| (f, m))
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Remembers `mem` as the latest connect of `flow` (it becomes the most
    /// recent), forgetting the oldest flow when full.
    pub fn insert(&mut self, flow: Flow, mem: FlowMem) {
        let generation = self.next_gen;
        self.next_gen += 1;
        self.map.insert(flow, (mem, generation));
        self.order.push_back((flow, generation));
        while self.map.len() > self.cap {
            let Some((old, g)) = self.order.pop_front() else { break };
            if self.map.get(&old).is_some_and(|(_, cur)| *cur == g) {
                self.map.remove(&old);
                self.evicted += 1;
            }
        }
        // One flow reconnecting many times leaves stale order entries behind:
        // drop them once they outnumber the live ones, so the queue stays
        // within twice the bound (amortised O(1) per insert).
        if self.order.len() > 2 * self.cap + 16 {
            let map = &self.map;
            self.order.retain(|(f, g)| map.get(f).is_some_and(|(_, cur)| cur == g));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::Netns;

    fn flow(sport: u16) -> Flow {
        Flow { laddr: "10.0.0.2".parse().unwrap(), sport, raddr: "10.0.0.1".parse().unwrap(), dport: 2049, netns: Netns::UNKNOWN }
    }

    fn mem(sk: u64) -> FlowMem {
        FlowMem { sk, xprt: 0, outcome: Outcome::Established, end_ns: None, streak: 0 }
    }

    #[test]
    fn the_oldest_flow_is_forgotten_and_counted() {
        let mut m = FlowMemory::with_capacity(3);
        for p in 1..=3 {
            m.insert(flow(p), mem(p as u64));
        }
        // Refreshing flow 1 makes flow 2 the oldest.
        m.insert(flow(1), mem(10));
        m.insert(flow(4), mem(4));
        assert_eq!(m.len(), 3);
        assert_eq!(m.evicted, 1);
        assert!(m.get(&flow(2)).is_none(), "the least recently inserted flow goes");
        assert_eq!(m.get(&flow(1)).map(|x| x.sk), Some(10));
        assert!(m.get(&flow(3)).is_some() && m.get(&flow(4)).is_some());
    }

    #[test]
    fn one_flow_reconnecting_keeps_the_queue_bounded() {
        let mut m = FlowMemory::with_capacity(4);
        for i in 0..10_000 {
            m.insert(flow(999), mem(i));
        }
        assert_eq!((m.len(), m.evicted), (1, 0));
        assert!(m.order.len() <= 2 * 4 + 16, "{}", m.order.len());
    }
}
