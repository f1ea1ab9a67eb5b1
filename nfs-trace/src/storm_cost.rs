//! What userspace spends per connect of a loopback connect storm, measured
//! in-process on synthetic kernel records: decode, the trackers, episodes
//! and the JSON lines, as `watch --json` runs them (without the ring buffer
//! and the write to stdout). `cargo test --release -p nfs-trace storm_cost
//! -- --ignored --nocapture`; a measurement, not a test of correctness.
use std::net::Ipv6Addr;

use nfs_trace_common::{ConnEvent, kind, tcp_state};

use crate::{
    kernel::decode::{self, Record},
    model::{
        feed::{self, Feed, Obs},
        tcp::Tracker,
        xprt::XprtTracker,
    },
    output::{
        clock::Clock,
        render::{Format, Renderer},
    },
};

/// The record the kernel program writes for connect `i` of the storm.
fn raw(i: u64, k: u8, ts: u64) -> ConnEvent {
    let closed = k == kind::CLOSED;
    let lo = Ipv6Addr::from([0, 0, 0, 0, 0, 0xffff, 0x7f00, 1]).octets();
    let mut comm = [0u8; 16];
    comm[..7].copy_from_slice(b"python3");
    ConnEvent {
        kind: k,
        oldstate: if closed { tcp_state::ESTABLISHED } else { tcp_state::SYN_SENT },
        newstate: if closed { tcp_state::CLOSE } else { tcp_state::ESTABLISHED },
        first_exit: if closed { tcp_state::CLOSE } else { 0 },
        pid: 4242,
        ts_ns: ts,
        // The kernel recycles socket addresses.
        sk: 0xffff_8881_0000_0000 + (i % 512) * 0x800,
        start_ns: ts - 60_000,
        syn_ns: 0,
        established_ns: if closed { ts - 40_000 } else { ts },
        xprt: 0,
        saddr: lo,
        daddr: lo,
        comm,
        err: 0,
        syn_retrans: 0,
        // Ephemeral ports as the kernel hands them out toward one
        // destination, in steps of 2 through the range: a storm repeats flows.
        sport: 32768 + ((i * 2) % 28232) as u16,
        dport: 2049,
        family: 10,
        _pad: 0,
        netns: 4026531833,
        _pad1: 0,
    }
}

#[test]
#[ignore = "a measurement: run with --release --ignored --nocapture"]
fn storm_cost() {
    let n = 200_000u64;
    let recs: Vec<ConnEvent> = (0..n)
        .flat_map(|i| {
            let t = 1_000_000_000 + i * 40_000;
            [raw(i, kind::CONNECT_DONE, t), raw(i, kind::CLOSED, t + 20_000)]
        })
        .collect();
    for round in 0..5 {
        let mut tracker = Tracker::new();
        let mut xtracker = XprtTracker::new(true);
        let mut feed = Feed::new(Vec::new(), true, true, 0);
        let mut out = Renderer::new(Vec::with_capacity(400 << 20), Format::Json, Clock::fixed(1_765_000_000_000_000_000));
        let t0 = std::time::Instant::now();
        for r in &recs {
            let rec = Record::Tcp(decode::from_raw(r).unwrap());
            feed::record(&mut tracker, &mut xtracker, &rec, |o| {
                if let Obs::Tcp(o) = o {
                    let _eps = feed.tcp(o);
                    out.observation(o, &feed.views)?;
                }
                Ok(true)
            })
            .unwrap();
        }
        let dt = t0.elapsed();
        println!("round {round}: {:.0} ns per connect", dt.as_nanos() as f64 / n as f64);
    }
}
