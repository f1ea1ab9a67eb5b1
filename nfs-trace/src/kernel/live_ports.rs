//! Ports watched since start: the kernel's `LIVE_PORTS` bitmap (see
//! `nfs_trace_common::live_port_bit`). `--port` stays in CONFIG (.rodata,
//! compared against constants on the fast path); a port added at run time
//! (an NFS mount on another port) is set here. The full program consults
//! the bitmap only once `LIVE_ANY` is set (after the first add); behind the
//! filter (kernel/attach.rs) the first add also attaches `set_state_live`,
//! so a tracer that never adds a port pays no bitmap lookup on other
//! sockets' state changes. The bitmap holds every port, so an add cannot fail for want of room.
use anyhow::{Result, anyhow};
use aya::{Ebpf, maps::Array, programs::TracePoint};

use crate::kernel::attach::{SET_STATE_FILTER, SET_STATE_FILTER1, SET_STATE_LIVE};
use nfs_trace_common::{MAP_LIVE_ANY, MAP_LIVE_PORTS, live_port_bit};

/// Sets `port`'s bit: connects toward it are traced from now on.
pub fn add(ebpf: &mut Ebpf, port: u16) -> Result<()> {
    let map = ebpf.map_mut(MAP_LIVE_PORTS).ok_or_else(|| anyhow!("map {MAP_LIVE_PORTS} missing"))?;
    let mut a = Array::<_, u64>::try_from(map).map_err(|e| anyhow!("map {MAP_LIVE_PORTS}: {e}"))?;
    let (word, bit) = live_port_bit(port);
    // Only this process writes the map, so read-modify-write is safe.
    let w = a.get(&word, 0).map_err(|e| anyhow!("map {MAP_LIVE_PORTS}: {e}"))?;
    a.set(word, w | bit, 0).map_err(|e| anyhow!("map {MAP_LIVE_PORTS}: {e}"))?;
    // The bit first, then the flag: a program that sees the flag finds the bit.
    let map = ebpf.map_mut(MAP_LIVE_ANY).ok_or_else(|| anyhow!("map {MAP_LIVE_ANY} missing"))?;
    let mut flag = Array::<_, u32>::try_from(map).map_err(|e| anyhow!("map {MAP_LIVE_ANY}: {e}"))?;
    flag.set(0, 1, 0).map_err(|e| anyhow!("map {MAP_LIVE_ANY}: {e}"))?;
    // Behind the filter (kernel/attach.rs), live ports need their own
    // program in front of the full one: attached at the first add.
    let filtered = [SET_STATE_FILTER, SET_STATE_FILTER1].iter().any(|n| ebpf.program(n).is_some_and(|p| p.fd().is_ok()));
    let live: &mut TracePoint =
        ebpf.program_mut(SET_STATE_LIVE).ok_or_else(|| anyhow!("program {SET_STATE_LIVE} missing"))?.try_into().map_err(|e| anyhow!("{SET_STATE_LIVE}: {e}"))?;
    if filtered && live.fd().is_err() {
        live.load().map_err(|e| anyhow!("load {SET_STATE_LIVE}: {e}"))?;
        live.attach("sock", "inet_sock_set_state").map_err(|e| anyhow!("attach {SET_STATE_LIVE}: {e}"))?;
    }
    Ok(())
}
