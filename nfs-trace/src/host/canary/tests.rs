//! The canary's parts without BPF or root: the trigger, the rate limit,
//! where it runs, how an attempt's end is named, the flows the session
//! drops, and one real connect each way on loopback (the ground truth is
//! the test's own listener).
use super::*;
use crate::{
    flow::Task,
    model::tcp::{Stall, Tracker},
};
use nfs_trace_common::tcp_state::{CLOSE, ESTABLISHED};

fn dest(raddr: &str, netns: u32) -> DestKey {
    DestKey { laddr: "127.0.7.1".parse().unwrap(), raddr: raddr.parse().unwrap(), dport: 2049, netns: Netns(netns) }
}

/// A live stall from the real tracker: a flow seen before, retransmitting.
fn live_stall() -> Observation {
    let task = Task { pid: 7, comm: "mount.nfs".into() };
    let flow = Flow { laddr: "127.0.7.1".parse().unwrap(), sport: 790, raddr: "127.0.7.2".parse().unwrap(), dport: 2049, netns: Netns(5) };
    let mut t = Tracker::new();
    t.on_event(&Event::for_test(Kind::ConnectDone, 1_000_000, 1, task.clone(), flow));
    let mut rtx = Event::for_test(Kind::SynRetransmit, 3_000_000_000, 2, task, flow);
    rtx.syn_retrans = 1;
    t.on_event(&rtx).into_iter().find(|o| matches!(o, Observation::Stall { .. })).expect("a stall")
}

#[test]
fn a_live_stall_triggers_its_destination_and_an_ended_one_does_not() {
    let o = live_stall();
    let t = trigger_of(&o).expect("a live stall asks for a canary");
    assert_eq!(t.dest, dest("127.0.7.2", 5));
    assert_eq!(t.stalled_sport, Some(790));
    let Observation::Stall { stall, .. } = o else { unreachable!() };
    let ended: Stall = stall;
    assert_eq!(trigger_of(&Observation::Stall { stall: ended, ended: true }), None);
}

#[test]
fn one_canary_per_server_per_10_s() {
    let mut l = RateLimit::default();
    let s = 1_000_000_000u64;
    assert!(l.allow(&dest("10.0.0.1", 5), 100 * s));
    assert!(!l.allow(&dest("10.0.0.1", 5), 105 * s), "same server 5 s later");
    let mut other_local = dest("10.0.0.1", 5);
    other_local.laddr = "127.0.7.9".parse().unwrap();
    assert!(!l.allow(&other_local, 106 * s), "the server is the same from another local address");
    assert!(l.allow(&dest("10.0.0.2", 5), 106 * s), "another server");
    assert!(l.allow(&dest("10.0.0.1", 6), 106 * s), "the same address in another namespace is another server");
    assert!(!l.allow(&dest("10.0.0.1", 5), 109 * s + s / 2));
    assert!(l.allow(&dest("10.0.0.1", 5), 110 * s), "10 s after the last one");
    assert!(l.last.len() <= 3, "servers not asked for within 10 s are forgotten: {:?}", l.last);
}

#[test]
fn runs_in_the_flows_namespace_or_the_tracers_own() {
    let paths = || vec![namespaces::NetnsPath { ino: 11, path: "/proc/1/ns/net".into() }, namespaces::NetnsPath { ino: 22, path: "/run/netns/x".into() }];
    let never = || -> Vec<namespaces::NetnsPath> { panic!("no lookup needed") };
    assert_eq!(place(Netns::UNKNOWN, Some(Netns(11)), never), Ok(Place::Own), "unknown: the tracer's own");
    assert_eq!(place(Netns(11), Some(Netns(11)), never), Ok(Place::Own));
    assert_eq!(place(Netns(22), Some(Netns(11)), paths), Ok(Place::Enter("/run/netns/x".into())));
    assert!(place(Netns(33), Some(Netns(11)), paths).unwrap_err().contains("cannot be entered"));
}

#[test]
fn attempt_ends_are_named_as_the_episode_tracker_reads_them() {
    use std::io::{Error, ErrorKind};
    assert_eq!(outcome_of(&Ok(()), 400_000), CanaryOutcome::Connected { rtt_ns: 400_000 });
    assert_eq!(outcome_of(&Err(Error::new(ErrorKind::TimedOut, "connection timed out")), 0), CanaryOutcome::TimedOut);
    assert_eq!(outcome_of(&Err(Error::from_raw_os_error(libc::ETIMEDOUT)), 0), CanaryOutcome::TimedOut);
    assert_eq!(outcome_of(&Err(Error::from_raw_os_error(libc::ECONNREFUSED)), 0), CanaryOutcome::Refused);
    assert_eq!(outcome_of(&Err(Error::from_raw_os_error(libc::EHOSTUNREACH)), 0), CanaryOutcome::Error(libc::EHOSTUNREACH));
}

fn ev(kind: Kind, flow: Flow, newstate: u8) -> Event {
    let mut e = Event::for_test(kind, 5, 1, Task::default(), flow);
    e.newstate = newstate;
    e
}

#[test]
fn a_canarys_records_are_dropped_until_its_last_one() {
    let f = CanaryFlows::default();
    let flow = Flow { laddr: "127.0.7.1".parse().unwrap(), sport: 40000, raddr: "127.0.7.2".parse().unwrap(), dport: 2049, netns: Netns(5) };
    let mut other = flow;
    other.sport = 790;
    assert!(!f.is_canary(&ev(Kind::ConnectDone, flow, ESTABLISHED)), "nothing registered");
    f.add(flow);
    assert!(!f.is_canary(&ev(Kind::ConnectDone, other, ESTABLISHED)), "the stalled flow itself is NFS traffic");
    let mut other_ns = flow;
    other_ns.netns = Netns(6);
    assert!(!f.is_canary(&ev(Kind::ConnectDone, other_ns, ESTABLISHED)), "same ports, another namespace");
    assert!(f.is_canary(&ev(Kind::ConnectDone, flow, ESTABLISHED)));
    assert!(f.is_canary(&ev(Kind::SynRetransmit, flow, 0)));
    assert_eq!(f.len(), 1, "kept until its CLOSE");
    assert!(f.is_canary(&ev(Kind::Closed, flow, CLOSE)));
    assert_eq!(f.len(), 0);
    assert!(!f.is_canary(&ev(Kind::ConnectDone, flow, ESTABLISHED)), "a later flow with the same ports is not the canary");
    // A canary that timed out: leaving SYN_SENT for CLOSE is its last record.
    f.add(flow);
    assert!(f.is_canary(&ev(Kind::ConnectDone, flow, CLOSE)));
    assert_eq!(f.len(), 0);
}

#[test]
fn a_canary_whose_close_is_never_seen_is_forgotten_after_120_s() {
    let f = CanaryFlows::default();
    let flow = Flow { laddr: "127.0.7.1".parse().unwrap(), sport: 40001, raddr: "127.0.7.2".parse().unwrap(), dport: 2049, netns: Netns(5) };
    f.add(flow);
    f.expire(u64::MAX);
    assert_eq!(f.len(), 1, "never while it runs");
    f.ended(&flow, 1_000);
    f.expire(1_000 + FORGET_AFTER_NS - 1);
    assert_eq!(f.len(), 1);
    f.expire(1_000 + FORGET_AFTER_NS);
    assert_eq!(f.len(), 0);
    assert!(!f.is_canary(&ev(Kind::Closed, flow, CLOSE)));
}

/// Real connects on loopback: one to a listener (the listener accepts the
/// canary's port), one to a port nothing listens on (refused). The flow is
/// registered under the port it really used.
#[test]
fn connects_from_a_fresh_port_and_closes() {
    use std::io::Read;
    let l = std::net::TcpListener::bind("127.0.7.3:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let d = DestKey { laddr: "127.0.7.3".parse().unwrap(), raddr: "127.0.7.3".parse().unwrap(), dport: port, netns: Netns(5) };
    let flows = CanaryFlows::default();
    let (r, flow) = connect_once(d, &flows, TIMEOUT).unwrap();
    let (mut conn, peer) = l.accept().unwrap();
    assert_eq!(peer.port(), r.sport, "the server saw the canary's port");
    assert_eq!(flow.sport, r.sport);
    assert!(matches!(r.outcome, CanaryOutcome::Connected { .. }), "{r:?}");
    assert!(r.start_ns <= r.end_ns);
    assert_eq!(flows.len(), 1);
    let mut buf = [0u8; 1];
    assert_eq!(conn.read(&mut buf).unwrap(), 0, "closed with a FIN (orderly), not reset");

    drop(l);
    let (r, _) = connect_once(d, &flows, TIMEOUT).unwrap();
    assert_eq!(r.outcome, CanaryOutcome::Refused);
    assert_ne!(r.sport, 0);
}

/// IPv6: bound to the flow's local address, like IPv4.
#[test]
fn connects_over_ipv6_too() {
    let l = std::net::TcpListener::bind("[::1]:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let d = DestKey { laddr: "::1".parse().unwrap(), raddr: "::1".parse().unwrap(), dport: port, netns: Netns(5) };
    let (r, flow) = connect_once(d, &CanaryFlows::default(), TIMEOUT).unwrap();
    let (_conn, peer) = l.accept().unwrap();
    assert_eq!((peer.ip(), peer.port()), (d.laddr, r.sport));
    assert_eq!(flow.laddr, d.laddr);
    assert!(r.connected());
}

/// The threaded path end to end, in the tracer's own namespace: a request
/// answered through the channel, the second one within 10 s refused.
#[test]
fn requests_come_back_through_the_channel_once_per_10_s() {
    let l = std::net::TcpListener::bind("127.0.7.4:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let own = netns_inode::own().expect("own netns");
    let d = DestKey { laddr: "127.0.7.4".parse().unwrap(), raddr: "127.0.7.4".parse().unwrap(), dport: port, netns: own };
    let mut c = Canaries::new(CanaryFlows::default());
    let t = Trigger { dest: d, stalled_sport: Some(790) };
    assert!(c.request(t, 1));
    assert!(!c.request(t, 2), "rate limited");
    let (_conn, peer) = l.accept().unwrap();
    let got = loop {
        let v = c.poll(3);
        if !v.is_empty() {
            break v;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(got.len(), 1);
    let done = got[0].as_ref().unwrap();
    assert_eq!(done.stalled_sport, Some(790));
    assert_eq!(done.result.sport, peer.port());
    assert_eq!(done.result.dest, d);
    assert!(done.result.connected());
}
