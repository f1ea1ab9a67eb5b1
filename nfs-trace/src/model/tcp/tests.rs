//! The tracker on synthetic event sequences.
use nfs_trace_common::tcp_state::{CLOSE, CLOSE_WAIT, FIN_WAIT1, SYN_SENT};

use super::*;
use std::net::IpAddr;
use crate::flow::{Flow, Netns, Task};

const MS: u64 = 1_000_000;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A synthetic event: `sk` socket from laddr:sport to raddr:dport.
fn ev(kind: Kind, ts_ms: u64, sk: u64, l: &str, sport: u16, r: &str, dport: u16) -> Event {
    let task = Task { pid: 42, comm: "kworker".into() };
    let flow = Flow { laddr: ip(l), sport, raddr: ip(r), dport, netns: Netns::UNKNOWN };
    Event { start_ns: ts_ms.saturating_sub(1) * MS, ..Event::for_test(kind, ts_ms * MS, sk, task, flow) }
}

fn connected(ts: u64, sk: u64, sport: u16) -> Event {
    ev(Kind::ConnectDone, ts, sk, "10.0.0.2", sport, "10.0.0.1", 2049)
}

fn closed(ts: u64, sk: u64, sport: u16, first_exit: u8, err: i32) -> Event {
    let mut e = ev(Kind::Closed, ts, sk, "10.0.0.2", sport, "10.0.0.1", 2049);
    e.oldstate = first_exit;
    e.newstate = CLOSE;
    e.first_exit = first_exit;
    e.err = err;
    e.established_ns = ts.saturating_sub(50) * MS;
    e
}

fn failed(ts: u64, sk: u64, sport: u16, err: i32) -> Event {
    let mut e = connected(ts, sk, sport);
    e.newstate = CLOSE;
    e.err = err;
    e
}

fn reuses(obs: &[Observation]) -> Vec<&Reuse> {
    obs.iter()
        .filter_map(|o| match o {
            Observation::Reuse(r) => Some(r),
            _ => None,
        })
        .collect()
}

fn run(t: &mut Tracker, evs: &[Event]) -> Vec<Observation> {
    evs.iter().flat_map(|e| t.on_event(e)).collect()
}

#[test]
fn same_port_after_close_is_a_reuse_with_gap_and_streak() {
    let mut t = Tracker::new();
    let obs = run(
        &mut t,
        &[
            connected(100, 1, 999),
            closed(200, 1, 999, CLOSE, libc::ECONNABORTED),
            connected(250, 2, 999),
            closed(300, 2, 999, CLOSE, libc::ECONNABORTED),
            connected(400, 3, 999),
        ],
    );
    let r = reuses(&obs);
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].who.flow.sport, 999);
    assert_eq!(r[0].streak, 1);
    assert_eq!(r[0].prev_end_ns, Some(200 * MS));
    // The second attempt started at 249 ms (start = ts - 1 ms).
    assert_eq!(r[0].gap_ns, Some(49 * MS));
    assert_eq!(r[1].streak, 2);
    assert_eq!(r[1].prev_outcome, Outcome::Established);
    let (_, d) = t.destinations()[0];
    assert_eq!((d.connects, d.reuses, d.distinct_ports(), d.failed), (3, 2, 1, 0));
}

#[test]
fn new_port_each_time_is_no_reuse() {
    let mut t = Tracker::new();
    let obs = run(
        &mut t,
        &[connected(1, 1, 40000), closed(2, 1, 40000, FIN_WAIT1, 0), connected(3, 2, 40002), connected(4, 3, 40004)],
    );
    assert!(reuses(&obs).is_empty());
    let (_, d) = t.destinations()[0];
    assert_eq!((d.connects, d.reuses, d.distinct_ports()), (3, 0, 3));
}

/// What an `nconnect=2` mount or a v3 and a v4.1 mount of one server do: one
/// socket reconnects from its bound port while another connects from new
/// ports in between. The middlebox keys on the flow, so the reuse is found.
#[test]
fn a_flow_seen_earlier_is_a_reuse_whatever_connected_in_between() {
    let mut t = Tracker::new();
    let obs = run(
        &mut t,
        &[
            connected(1, 1, 800),
            closed(10, 1, 800, CLOSE, libc::ECONNABORTED),
            connected(20, 2, 801),
            connected(30, 3, 800),
        ],
    );
    let r = reuses(&obs);
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!((r[0].who.flow.sport, r[0].streak, r[0].chance), (800, 1, false));
    assert_eq!(r[0].prev_end_ns, Some(10 * MS));
    assert_eq!(r[0].gap_ns, Some(19 * MS), "from the flow's own end, not the last connect's");
    let (_, d) = t.destinations()[0];
    assert_eq!((d.connects, d.reuses, d.chance_reuses), (3, 1, 0));
}

fn of_xprt(mut e: Event, xprt: u64) -> Event {
    e.xprt = xprt;
    e
}

/// Two transports to one server: A rebinds 790 on every reconnect, B takes
/// a new port each time, interleaved. Only A's reconnects are reuses, each
/// with A's own streak.
#[test]
fn each_transport_of_a_server_is_judged_on_its_own_flow() {
    let (a, b) = (0xa000, 0xb000);
    let mut t = Tracker::new();
    let mut evs = Vec::new();
    for i in 0..3u64 {
        let ts = 100 * i;
        evs.push(of_xprt(connected(ts + 1, 10 + i, 790), a));
        evs.push(of_xprt(connected(ts + 2, 20 + i, 40000 + i as u16), b));
        evs.push(of_xprt(closed(ts + 50, 10 + i, 790, CLOSE, libc::ECONNABORTED), a));
        evs.push(of_xprt(closed(ts + 51, 20 + i, 40000 + i as u16, CLOSE, libc::ECONNABORTED), b));
    }
    let obs = run(&mut t, &evs);
    let r = reuses(&obs);
    assert_eq!(r.iter().map(|r| (r.who.flow.sport, r.streak, r.chance)).collect::<Vec<_>>(), vec![(790, 1, false), (790, 2, false)]);
}

/// A port that another transport used before is a chance repeat, and so is
/// a user-space socket's port long after its flow ended; soon after, it is a
/// reuse.
#[test]
fn chance_repeats_are_told_apart_from_rebinds() {
    let mut t = Tracker::new();
    let obs = run(
        &mut t,
        &[
            of_xprt(connected(1, 1, 700), 0xa),
            of_xprt(closed(10, 1, 700, CLOSE, libc::ECONNABORTED), 0xa),
            of_xprt(connected(20, 2, 700), 0xb),
            connected(30, 3, 900),
            closed(40, 3, 900, CLOSE, 0),
            // Just under the chance gap: deliberate.
            connected(40 + CHANCE_GAP_NS / MS, 4, 900),
            closed(50 + CHANCE_GAP_NS / MS, 4, 900, CLOSE, 0),
            // Long after: chance.
            connected(60 + 2 * CHANCE_GAP_NS / MS, 5, 900),
        ],
    );
    let r = reuses(&obs);
    assert_eq!(r.iter().map(|r| (r.who.flow.sport, r.chance)).collect::<Vec<_>>(), vec![(700, true), (900, false), (900, true)]);
    let (_, d) = t.destinations()[0];
    assert_eq!((d.reuses, d.chance_reuses), (1, 2));
    let connects: Vec<bool> = obs
        .iter()
        .filter_map(|o| match o {
            Observation::Connect(a) => Some(a.reused),
            _ => None,
        })
        .collect();
    assert_eq!(connects, vec![false, false, false, true, false], "a chance repeat is not flagged `reused`");
}

/// One transport of an nconnect mount stalls on its reused flow while a
/// sibling transport to the same server connects: the sibling does not end
/// the stall (it is evidence the server answers); the stalled transport's own
/// connect does.
#[test]
fn a_stall_lasts_until_its_own_transport_connects_while_siblings_work() {
    let (a, b) = (0xa000, 0xb000);
    let mut t = Tracker::new();
    let obs = run(
        &mut t,
        &[
            of_xprt(connected(100, 1, 790), a),
            of_xprt(closed(1_000, 1, 790, CLOSE, libc::ECONNABORTED), a),
            of_xprt(retransmit(2_000, 2, 790, 1_001, 1), a),
            of_xprt(connected(2_500, 3, 41000), b),
            of_xprt(retransmit(4_000, 2, 790, 1_001, 2), a),
            of_xprt(connected(9_000, 2, 790), a),
        ],
    );
    let s = stalls(&obs);
    assert_eq!(s.iter().filter(|(_, ended)| *ended).count(), 1, "{s:?}");
    let (end, _) = s.iter().find(|(_, ended)| *ended).unwrap();
    assert_eq!(end.end_ns, Some(9_000 * MS), "the sibling's connect at 2.5 s did not end it");
    assert_eq!((end.end_sport, end.siblings_connected, end.start_ns), (Some(790), 1, 1_001 * MS));
    assert!(t.open_stalls().is_empty());
    let verdict = crate::model::verdict::stall_verdict(end, &[]);
    assert!(verdict.contains("while 1 connect(s) to the same server from other ports succeeded"), "{verdict}");
}

/// The kernel recycles `struct sock`: the reconnect's socket can have the
/// address of the flow's earlier one (seen on this host's kernel). It is a
/// stall all the same.
#[test]
fn a_recycled_socket_address_still_stalls() {
    let mut t = Tracker::new();
    let obs = run(
        &mut t,
        &[connected(100, 7, 999), closed(150, 7, 999, CLOSE, 0), retransmit(1_200, 7, 999, 200, 1), connected(3_000, 7, 999)],
    );
    let s = stalls(&obs);
    assert_eq!(s.iter().map(|(st, ended)| (st.start_ns, *ended)).collect::<Vec<_>>(), vec![(200 * MS, false), (200 * MS, true)]);
    assert_eq!(s[1].0.prev_end_ns, Some(150 * MS));
}

/// Past its bound the flow memory forgets the oldest flows and says how many.
#[test]
fn forgotten_flows_are_counted() {
    let mut t = Tracker::with_capacity(MAX_DESTINATIONS, 2);
    let obs = run(&mut t, &[connected(1, 1, 800), connected(2, 2, 801), connected(3, 3, 802), connected(4, 4, 800)]);
    assert!(reuses(&obs).is_empty(), "flow 800 was forgotten, so its repeat cannot be recognised");
    assert_eq!(t.flow_counts(), (2, 2));
}

#[test]
fn streak_resets_after_a_new_port() {
    let mut t = Tracker::new();
    let obs = run(
        &mut t,
        &[connected(1, 1, 700), connected(2, 2, 700), connected(3, 3, 701), connected(4, 4, 701)],
    );
    let r = reuses(&obs);
    assert_eq!(r.iter().map(|r| (r.who.flow.sport, r.streak)).collect::<Vec<_>>(), vec![(700, 1), (701, 1)]);
}

#[test]
fn interleaved_destinations_are_tracked_apart() {
    let mut t = Tracker::new();
    let a = |ts, sk, sport| ev(Kind::ConnectDone, ts, sk, "10.0.0.2", sport, "10.0.0.1", 2049);
    let b = |ts, sk, sport| ev(Kind::ConnectDone, ts, sk, "10.0.0.2", sport, "10.0.0.9", 2049);
    let c = |ts, sk, sport| ev(Kind::ConnectDone, ts, sk, "10.0.0.2", sport, "10.0.0.1", 20049);
    let obs = run(&mut t, &[a(1, 1, 900), b(2, 2, 900), c(3, 3, 900), a(4, 4, 900), b(5, 5, 901), c(6, 6, 900)]);
    let r = reuses(&obs);
    let dests: Vec<_> = r.iter().map(|r| (r.who.flow.raddr, r.who.flow.dport)).collect();
    assert_eq!(dests, vec![(ip("10.0.0.1"), 2049), (ip("10.0.0.1"), 20049)]);
    assert_eq!(t.destinations().len(), 3);
}

#[test]
fn ipv6_destinations() {
    let mut t = Tracker::new();
    let v6 = |ts, sk, sport| ev(Kind::ConnectDone, ts, sk, "fd00::2", sport, "fd00::1", 2049);
    let obs = run(&mut t, &[v6(1, 1, 1001), v6(2, 2, 1001)]);
    let r = reuses(&obs);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].who.flow.raddr, ip("fd00::1"));
    assert_eq!(r[0].gap_ns, None, "the previous connection's close was not seen");
}

#[test]
fn failures_are_classified_and_count_as_previous_attempts() {
    let mut t = Tracker::new();
    let mut timed_out = failed(3000, 2, 999, libc::ETIMEDOUT);
    timed_out.syn_retrans = 3;
    timed_out.start_ns = 1000 * MS;
    let obs = run(
        &mut t,
        &[
            failed(10, 1, 999, libc::ECONNREFUSED),
            timed_out,
            failed(3100, 3, 998, 0),
            failed(3200, 4, 997, libc::ECONNRESET),
            failed(3300, 5, 996, libc::EHOSTUNREACH),
        ],
    );
    let outcomes: Vec<_> = obs
        .iter()
        .filter_map(|o| match o {
            Observation::Connect(a) => Some(a.outcome),
            _ => None,
        })
        .collect();
    assert_eq!(
        outcomes,
        vec![Outcome::Refused, Outcome::TimedOut, Outcome::Closed, Outcome::Reset, Outcome::Error(libc::EHOSTUNREACH)]
    );
    // The timed-out attempt reused the refused one's port; its gap runs from
    // the refusal (10 ms) to its own start (1000 ms).
    let r = reuses(&obs);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].prev_outcome, Outcome::Refused);
    assert_eq!(r[0].gap_ns, Some(990 * MS));
    let (_, d) = t.destinations()[0];
    assert_eq!(d.failed, 5);
    assert_eq!(d.max_syn_sent_ns, 2000 * MS);
    assert_eq!(d.syn_retransmits, 3, "the kernel's count from the finished attempt");
}

#[test]
fn close_reasons() {
    let mut t = Tracker::new();
    let how = |t: &mut Tracker, e: Event| match t.on_event(&e).pop() {
        Some(Observation::Close { how, .. }) => how,
        o => panic!("want a close, got {o:?}"),
    };
    assert_eq!(how(&mut t, closed(10, 1, 1, FIN_WAIT1, 0)), CloseHow::LocalClose);
    assert_eq!(how(&mut t, closed(10, 1, 1, CLOSE_WAIT, 0)), CloseHow::RemoteClose);
    assert_eq!(how(&mut t, closed(10, 1, 1, CLOSE, 0)), CloseHow::LocalAbort);
    assert_eq!(how(&mut t, closed(10, 1, 1, CLOSE, libc::ECONNRESET)), CloseHow::Reset);
    assert_eq!(how(&mut t, closed(10, 1, 1, CLOSE, libc::ECONNABORTED)), CloseHow::Aborted);
    assert_eq!(how(&mut t, closed(10, 1, 1, CLOSE, libc::ETIMEDOUT)), CloseHow::TimedOut);
}

#[test]
fn syn_retransmits_are_reported_live() {
    let mut t = Tracker::new();
    let mut e = ev(Kind::SynRetransmit, 2000, 7, "10.0.0.2", 999, "10.0.0.1", 2049);
    e.start_ns = 1000 * MS;
    e.syn_retrans = 2;
    match t.on_event(&e).as_slice() {
        // Then the stall it begins (a new port's: see below).
        [Observation::SynRetransmit { retransmits: 2, elapsed_ns, who, .. }, Observation::Stall { .. }] => {
            assert_eq!(*elapsed_ns, 1000 * MS);
            assert_eq!(who.flow.sport, 999);
        }
        o => panic!("unexpected {o:?}"),
    }
}

#[test]
fn a_connection_seen_at_start_is_the_previous_one() {
    let mut t = Tracker::new();
    let dest = DestKey { laddr: ip("10.0.0.2"), raddr: ip("10.0.0.1"), dport: 2049, netns: Netns::UNKNOWN };
    t.seed(Flow { laddr: dest.laddr, sport: 966, raddr: dest.raddr, dport: dest.dport, netns: Netns::UNKNOWN });
    let obs = run(&mut t, &[connected(10, 1, 966), connected(20, 2, 966)]);
    let r = reuses(&obs);
    assert_eq!(r.len(), 2, "the first connect after start reuses the seeded port");
    assert_eq!((r[0].streak, r[0].gap_ns), (1, None));
    assert_eq!(r[1].streak, 2);
    let (_, d) = t.destinations()[0];
    assert_eq!(d.connects, 2, "the seed is no connect of this run");
}

fn retransmit(ts_ms: u64, sk: u64, sport: u16, start_ms: u64, n: u32) -> Event {
    let mut e = ev(Kind::SynRetransmit, ts_ms, sk, "10.0.0.2", sport, "10.0.0.1", 2049);
    e.start_ns = start_ms * MS;
    e.syn_retrans = n;
    e.newstate = SYN_SENT;
    e
}

fn stalls(obs: &[Observation]) -> Vec<(&Stall, bool)> {
    obs.iter()
        .filter_map(|o| match o {
            Observation::Stall { stall, ended } => Some((stall, *ended)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_reused_port_stuck_in_syn_sent_is_a_stall_until_a_connect_succeeds() {
    let mut t = Tracker::new();
    let mut timed_out = failed(8_000, 2, 999, libc::ETIMEDOUT);
    timed_out.start_ns = 1_000 * MS;
    timed_out.syn_retrans = 3;
    let mut ok = connected(12_500, 3, 999);
    ok.start_ns = 9_000 * MS;
    ok.syn_retrans = 2;
    let obs = run(
        &mut t,
        &[
            connected(100, 1, 999),
            closed(900, 1, 999, CLOSE, libc::ECONNABORTED),
            retransmit(2_000, 2, 999, 1_000, 1),
            retransmit(4_000, 2, 999, 1_000, 2),
            retransmit(8_000, 2, 999, 1_000, 3),
            timed_out,
            retransmit(10_000, 3, 999, 9_000, 1),
            retransmit(12_000, 3, 999, 9_000, 2),
            ok,
        ],
    );
    let s = stalls(&obs);
    assert_eq!(s.len(), 6, "one live update per retransmit, then the end");
    assert!(s[..5].iter().all(|(_, ended)| !ended));
    assert_eq!(s[0].0.retransmits, 1);
    assert_eq!(s[0].0.prev_end_ns, Some(900 * MS));
    assert_eq!(s[3].0.retransmits, 4, "3 of the lost attempt + 1");
    let (end, ended) = s[5];
    assert!(ended);
    assert_eq!(end.start_ns, 1_000 * MS);
    assert_eq!(end.duration_ns(), 11_500 * MS);
    assert_eq!((end.retransmits, end.failed_attempts, end.end_sport), (5, 1, Some(999)));
    assert_eq!(t.stalls.len(), 1);
    assert!(t.open_stalls().is_empty());
}

#[test]
fn a_flow_end_seen_by_another_layer_dates_the_reused_flow() {
    // Seeded (connected before the tracer), its close seen only by SunRPC.
    let mut t = Tracker::new();
    let dest = DestKey { laddr: "10.0.0.2".parse().unwrap(), raddr: "10.0.0.1".parse().unwrap(), dport: 2049, netns: Netns::UNKNOWN };
    t.seed(Flow { laddr: dest.laddr, sport: 999, raddr: dest.raddr, dport: dest.dport, netns: Netns::UNKNOWN });
    t.on_flow_end(&Flow { laddr: ip("10.0.0.2"), sport: 999, raddr: ip("10.0.0.9"), dport: 2049, netns: Netns::UNKNOWN }, 500_000_000); // another server: ignored
    t.on_flow_end(&Flow { laddr: ip("10.0.0.2"), sport: 998, raddr: ip("10.0.0.1"), dport: 2049, netns: Netns::UNKNOWN }, 500_000_000); // another port: ignored
    t.on_flow_end(&Flow { laddr: ip("10.0.0.2"), sport: 999, raddr: ip("10.0.0.1"), dport: 2049, netns: Netns::UNKNOWN }, 1_000_000_000);
    t.on_flow_end(&Flow { laddr: ip("10.0.0.2"), sport: 999, raddr: ip("10.0.0.1"), dport: 2049, netns: Netns::UNKNOWN }, 1_500_000_000); // the first end stands
    let obs = t.on_event(&retransmit(3000, 8, 999, 2000, 1));
    let s = stalls(&obs);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].0.prev_end_ns, Some(1_000_000_000));
}

#[test]
fn a_quiet_stall_is_reported_again_on_ticks() {
    let mut t = Tracker::new();
    t.on_event(&connected(1_000, 7, 999));
    t.on_event(&retransmit(3_000, 8, 999, 2_000, 1));
    assert!(t.tick(5_000_000_000, 5_000_000_000).is_empty(), "reported at 3 s: not yet");
    let obs = t.tick(8_000_000_000, 5_000_000_000);
    let s = stalls(&obs);
    assert_eq!(s.len(), 1);
    assert_eq!((s[0].0.duration_ns(), s[0].1), (6_000_000_000, false));
    assert!(t.tick(9_000_000_000, 5_000_000_000).is_empty());
    // The connect that ends it: the duration runs to the connect, not the tick.
    let mut done = connected(10_000, 8, 999);
    done.start_ns = 2_000 * MS;
    let obs = t.on_event(&done);
    let s = stalls(&obs);
    assert_eq!((s[0].0.duration_ns(), s[0].1), (8_000_000_000, true));
    assert!(t.tick(30_000_000_000, 5_000_000_000).is_empty(), "no stall left to report");
}

/// Issue 12: a connect from a port never seen before that retransmits its
/// SYN hangs its mount as surely as a reused one: it is a stall too, marked
/// not reused (no earlier flow, so no middlebox entry of it to blame).
#[test]
fn retransmits_from_a_new_port_are_a_stall_not_reused() {
    let mut t = Tracker::new();
    let obs = run(&mut t, &[connected(100, 1, 999), retransmit(2_000, 2, 1000, 1_000, 1), connected(2_500, 2, 1000)]);
    let s = stalls(&obs);
    assert_eq!(s.len(), 2, "live, then its end: {obs:?}");
    let (end, ended) = s[1];
    assert!(ended);
    assert_eq!((end.who.flow.sport, end.reused, end.prev_end_ns), (1000, false, None));
    assert_eq!((end.start_ns, end.end_sport), (1_000 * MS, Some(1000)));
    assert_eq!(t.stalls.len(), 1);
    // A reused port's stall says so.
    let obs = run(&mut t, &[closed(3_000, 2, 1000, CLOSE, libc::ECONNABORTED), retransmit(5_000, 3, 1000, 4_000, 1)]);
    assert!(stalls(&obs)[0].0.reused);
}

#[test]
fn kernel_lines_join_the_stall_toward_their_server() {
    let mut t = Tracker::new();
    run(&mut t, &[connected(100, 1, 999), retransmit(2_000, 2, 999, 1_000, 1)]);
    assert!(t.on_kernel_line(ip("10.0.0.1"), "nfs: server 10.0.0.1 not responding, still trying"));
    assert!(!t.on_kernel_line(ip("10.9.9.9"), "nfs: server 10.9.9.9 not responding"));
    assert_eq!(t.open_stalls()[0].kernel_said.len(), 1);
}

#[test]
fn destinations_are_bounded() {
    let mut t = Tracker::with_capacity(3, MAX_FLOWS);
    for i in 0..10u64 {
        let e = ev(Kind::ConnectDone, 10 + i, i, "10.0.0.2", 1000, &format!("10.0.1.{i}"), 2049);
        t.on_event(&e);
    }
    assert_eq!(t.destinations().len(), 3);
    assert_eq!(t.evicted, 7);
    // The most recent ones stay.
    assert!(t.destinations().iter().any(|(k, _)| k.raddr == ip("10.0.1.9")));
}

/// `e` in network namespace `netns`.
fn in_ns(netns: u32, mut e: Event) -> Event {
    e.flow.netns = Netns(netns);
    e
}

/// Two containers connecting with the same addresses and bound port are two
/// flows: the second container's first connect is no reuse of the first's,
/// and each has its own destination row. Within one namespace the next
/// connect from that port is a reuse, as before.
#[test]
fn same_four_tuple_in_two_netns_is_two_flows() {
    const A: u32 = 4026532301;
    const B: u32 = 4026532302;
    let mut t = Tracker::new();
    let obs = run(
        &mut t,
        &[
            in_ns(A, connected(100, 1, 999)),
            in_ns(A, closed(200, 1, 999, CLOSE, libc::ECONNABORTED)),
            in_ns(B, connected(250, 2, 999)),
            in_ns(B, closed(300, 2, 999, CLOSE, libc::ECONNABORTED)),
        ],
    );
    assert!(reuses(&obs).is_empty(), "no reuse across namespaces: {obs:?}");
    let obs = run(&mut t, &[in_ns(A, connected(400, 3, 999))]);
    let r = reuses(&obs);
    assert_eq!(r.len(), 1, "the same namespace's flow again is a reuse");
    assert_eq!((r[0].who.flow.netns, r[0].prev_end_ns, r[0].streak), (Netns(A), Some(200 * MS), 1));
    let rows: Vec<(Netns, u64, u64)> = t.destinations().iter().map(|(k, d)| (k.netns, d.connects, d.reuses)).collect();
    assert_eq!(rows, vec![(Netns(A), 2, 1), (Netns(B), 1, 0)]);
}

/// A transport's drop in one namespace dates only that namespace's flow:
/// the other container's open flow with the same port stays open.
#[test]
fn a_transport_drop_ends_the_flow_of_its_own_netns_only() {
    let mut t = Tracker::new();
    let flow = |netns| Flow { laddr: ip("10.0.0.2"), sport: 999, raddr: ip("10.0.0.1"), dport: 2049, netns: Netns(netns) };
    t.seed(flow(7));
    t.seed(flow(8));
    // The xprt record may carry no local address: the loop, not the exact match.
    t.on_flow_end(&Flow { laddr: ip("0.0.0.0"), ..flow(7) }, 500 * MS);
    let obs = run(&mut t, &[in_ns(7, connected(600, 1, 999)), in_ns(8, connected(700, 2, 999))]);
    let gaps: Vec<(Netns, Option<u64>)> = reuses(&obs).iter().map(|r| (r.who.flow.netns, r.prev_end_ns)).collect();
    assert_eq!(gaps, vec![(Netns(7), Some(500 * MS)), (Netns(8), None)]);
}

/// nconnect (6.12, 7.2): a v4.1 transport draws the reserved port a v3
/// sibling is connected from; connect() refuses the 4-tuple (EADDRNOTAVAIL)
/// and the socket goes SYN_SENT → CLOSE at once. That attempt is neither a
/// use of the flow nor its memory: the v3 transport's reconnect from its own
/// port afterwards is still a deliberate reuse, not a chance repeat.
#[test]
fn an_attempt_refused_in_connect_by_a_live_sibling_is_no_use_of_its_flow() {
    let mut t = Tracker::new();
    let obs = run(
        &mut t,
        &[
            of_xprt(connected(1, 1, 973), 0xa3),
            // The v4.1 transport's attempt from 973 while 0xa3 holds it.
            of_xprt(failed(2, 2, 973, 0), 0xb4),
            of_xprt(connected(3, 3, 970), 0xb4),
            of_xprt(closed(10, 1, 973, CLOSE, libc::ECONNABORTED), 0xa3),
            of_xprt(connected(11, 4, 973), 0xa3),
        ],
    );
    let r = reuses(&obs);
    assert_eq!(r.iter().map(|r| (r.who.flow.sport, r.chance, r.streak)).collect::<Vec<_>>(), vec![(973, false, 1)]);
    assert_eq!(r[0].prev_outcome, Outcome::Established, "compared with the v3 flow, not the refused attempt");
    let (_, d) = t.destinations()[0];
    assert_eq!((d.connects, d.failed, d.reuses, d.chance_reuses), (4, 1, 1, 0));
    // Once the holder's flow has ended, a failed attempt from its port is
    // an ordinary use of the flow again (a reconnect that failed).
    let obs = run(&mut t, &[of_xprt(closed(20, 4, 973, CLOSE, libc::ECONNABORTED), 0xa3), of_xprt(failed(21, 5, 973, libc::ECONNREFUSED), 0xa3)]);
    assert_eq!(reuses(&obs).len(), 1);
}
