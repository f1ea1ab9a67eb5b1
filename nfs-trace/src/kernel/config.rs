//! The programs' load-time config: watched ports, tracepoint field offsets
//! from this kernel's format files, struct offsets from its BTF.
use std::path::Path;

use anyhow::{Context as _, Result};
use nfs_trace_common::{Config, NO_OFFSET, RetransmitOffsets, SET_STATE_DIRECT, SetStateOffsets, SockOffsets};

use crate::kernel::{btf::KernelBtf, tracefs::Format};

/// Builds the programs' config: ports, tracepoint field offsets from this
/// kernel's format files, struct offsets from its BTF.
pub fn build_config(ports: &[u16], tracefs: &Path, btf: &KernelBtf) -> Result<Config> {
    // The programs compare the first slot before reading nports
    // (Config::watches): it must hold a real port.
    anyhow::ensure!(!ports.is_empty() && !ports.contains(&0), "no port to watch (port 0 is none)");
    let mut c = Config::default();
    for (i, p) in ports.iter().enumerate().take(c.ports.len()) {
        c.ports[i] = *p;
    }
    c.nports = ports.len().min(c.ports.len()) as u32;
    let f = Format::read(tracefs, "sock", "inet_sock_set_state")?;
    let off = |n: &str| f.field(n).map(|x| x.offset).with_context(|| format!("sock:inet_sock_set_state.{n}"));
    let protocol = f.field("protocol").context("sock:inet_sock_set_state.protocol")?;
    c.set_state = SetStateOffsets {
        skaddr: off("skaddr")?,
        oldstate: off("oldstate")?,
        newstate: off("newstate")?,
        sport: off("sport")?,
        dport: off("dport")?,
        family: off("family")?,
        protocol: protocol.offset,
        saddr: off("saddr")?,
        daddr: off("daddr")?,
        saddr_v6: off("saddr_v6")?,
        daddr_v6: off("daddr_v6")?,
        protocol_size: protocol.size,
    };
    c.set_state_direct = u32::from(c.set_state == SET_STATE_DIRECT);
    // Optional: without it the retransmit program is simply not attached.
    if let Ok(r) = Format::read(tracefs, "tcp", "tcp_retransmit_skb")
        && let (Ok(sk), Ok(sp), Ok(dp), Ok(s6), Ok(d6)) =
            (r.field("skaddr"), r.field("sport"), r.field("dport"), r.field("saddr_v6"), r.field("daddr_v6"))
        {
            c.retransmit = RetransmitOffsets {
                skaddr: sk.offset,
                sport: sp.offset,
                dport: dp.offset,
                saddr_v6: s6.offset,
                daddr_v6: d6.offset,
                _pad: [0; 3],
            };
        }
    // NO_OFFSET where this kernel's BTF lacks a field: it is then not read
    // (an outcome shows as "closed" rather than its reason, say).
    let off = |s: &str, m: &str| btf.member_offset(s, m).unwrap_or(NO_OFFSET);
    c.sock = SockOffsets {
        sk_err: off("sock", "sk_err"),
        sk_user_data: off("sock", "sk_user_data"),
        skc_num: off("sock", "__sk_common.skc_num"),
        skc_dport: off("sock", "__sk_common.skc_dport"),
        skc_family: off("sock", "__sk_common.skc_family"),
        skc_state: off("sock", "__sk_common.skc_state"),
        skc_daddr: off("sock", "__sk_common.skc_daddr"),
        skc_rcv_saddr: off("sock", "__sk_common.skc_rcv_saddr"),
        skc_v6_daddr: off("sock", "__sk_common.skc_v6_daddr"),
        skc_v6_rcv_saddr: off("sock", "__sk_common.skc_v6_rcv_saddr"),
        socket_sk: off("socket", "sk"),
        socket_state: off("socket", "state"),
        // The socket's network namespace (`possible_net_t` wraps the
        // pointer) and the namespace's inode: without either, records say
        // netns unknown (0), never a made-up namespace.
        skc_net: off("sock", "__sk_common.skc_net.net"),
        net_ns_inum: off("net", "ns.inum"),
        tcp_snd_una: off("tcp_sock", "snd_una"),
    };
    Ok(c)
}
