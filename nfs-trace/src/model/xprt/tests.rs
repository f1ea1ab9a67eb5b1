//! The transport tracker on synthetic SunRPC and TCP records.
use super::*;
use crate::flow::{Flow, Netns, Task};

const MS: u64 = 1_000_000;

fn rec(what: XprtWhat, ts_ms: u64, xprt: u64, sport: u16) -> XprtRecord {
    XprtRecord {
        what,
        ts_ns: ts_ms * MS,
        xprt,
        sk: 0xffff_0000 + sport as u64,
        task: Task { pid: 99, comm: "kworker/u2:1".into() },
        flow: Flow { laddr: "10.99.0.2".parse().unwrap(), sport, raddr: "10.99.0.1".parse().unwrap(), dport: 2049, netns: Netns::UNKNOWN },
        srcport: Some(0),
        sk_state: 0,
        sock_state: 0,
        error: 0,
        sk_err: 0,
        task_start_ns: None,
    }
}

fn connects(obs: &[XprtObservation]) -> Vec<&XprtConnect> {
    obs.iter()
        .filter_map(|o| match o {
            XprtObservation::Connect(c) => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn reconnect_from_the_same_port_after_an_abort() {
    let mut t = XprtTracker::new(false);
    let mut obs = Vec::new();
    obs.extend(t.on_xprt(&rec(XprtWhat::Connect, 10, 1, 875)));
    let mut err = rec(XprtWhat::Error, 1000, 1, 875);
    err.error = -libc::ECONNABORTED;
    obs.extend(t.on_xprt(&err));
    let mut close = rec(XprtWhat::StateChange, 1001, 1, 875);
    close.sk_state = tcp_state::CLOSE;
    obs.extend(t.on_xprt(&close));
    obs.extend(t.on_xprt(&rec(XprtWhat::DisconnectDone, 1002, 1, 875)));
    obs.extend(t.on_xprt(&rec(XprtWhat::Connect, 1500, 1, 875)));
    let c = connects(&obs);
    assert_eq!(c.len(), 2);
    assert!(!c[0].is_reconnect());
    assert!(c[1].is_reconnect());
    assert_eq!((c[1].prev_sport, c[1].flow.sport, c[1].reused), (Some(875), 875, true));
    let d = c[1].dropped.as_ref().unwrap();
    assert_eq!(d.reason, DropReason::Error(libc::ECONNABORTED), "the first reason wins");
    assert_eq!(c[1].down_ns(), Some(500 * MS));
    let (_, s) = t.all()[0];
    assert_eq!((s.connects, s.reconnects, s.reuses), (2, 1, 1));
}

#[test]
fn new_port_each_reconnect_and_server_close() {
    let mut t = XprtTracker::new(false);
    t.on_xprt(&rec(XprtWhat::Connect, 10, 7, 40000));
    let mut cw = rec(XprtWhat::StateChange, 20, 7, 40000);
    cw.sk_state = tcp_state::CLOSE_WAIT;
    let drops = t.on_xprt(&cw);
    assert!(matches!(drops.as_slice(), [XprtObservation::Drop { reason: DropReason::ServerClosed, flow: Flow { sport: 40000, .. }, .. }]));
    let obs = t.on_xprt(&rec(XprtWhat::Connect, 30, 7, 40002));
    let c = connects(&obs);
    assert_eq!((c[0].prev_sport, c[0].reused), (Some(40000), false));
    assert_eq!(t.all()[0].1.ports, vec![40000, 40002]);
}

#[test]
fn a_transport_connected_before_start_reconnects_from_its_seeded_port() {
    let mut t = XprtTracker::new(false);
    t.seed(Flow { laddr: "10.99.0.2".parse().unwrap(), sport: 966, raddr: "10.99.0.1".parse().unwrap(), dport: 2049, netns: Netns::UNKNOWN });
    // The abort of the old connection arrives before the reconnect.
    let mut err = rec(XprtWhat::Error, 5, 5, 966);
    err.error = -libc::ECONNABORTED;
    let drop = t.on_xprt(&err);
    assert!(matches!(drop.as_slice(), [XprtObservation::Drop { .. }]), "the pre-existing connection's drop is kept");
    let obs = t.on_xprt(&rec(XprtWhat::Connect, 10, 5, 966));
    let c = connects(&obs);
    assert_eq!((c[0].prev_sport, c[0].reused), (Some(966), true));
    assert_eq!(c[0].dropped.as_ref().map(|d| d.reason.clone()), Some(DropReason::Error(libc::ECONNABORTED)));
    assert_eq!(t.all()[0].1.reconnects, 1);
    // Ambiguous seeds are not used.
    let mut t = XprtTracker::new(false);
    t.seed(Flow { laddr: "10.99.0.2".parse().unwrap(), sport: 966, raddr: "10.99.0.1".parse().unwrap(), dport: 2049, netns: Netns::UNKNOWN });
    t.seed(Flow { laddr: "10.99.0.2".parse().unwrap(), sport: 967, raddr: "10.99.0.1".parse().unwrap(), dport: 2049, netns: Netns::UNKNOWN });
    let obs = t.on_xprt(&rec(XprtWhat::Connect, 10, 5, 966));
    assert_eq!(connects(&obs)[0].prev_sport, None);
}

#[test]
fn transports_are_apart_and_destroy_ends_one() {
    let mut t = XprtTracker::new(false);
    t.on_xprt(&rec(XprtWhat::Connect, 1, 1, 800));
    t.on_xprt(&rec(XprtWhat::Connect, 2, 2, 800));
    let obs = t.on_xprt(&rec(XprtWhat::Connect, 3, 1, 800));
    assert!(connects(&obs)[0].reused);
    t.on_xprt(&rec(XprtWhat::Destroy, 4, 1, 0));
    // The pointer is recycled: a new transport, not a reconnect.
    let obs = t.on_xprt(&rec(XprtWhat::Connect, 5, 1, 800));
    assert!(!connects(&obs)[0].is_reconnect());
    assert_eq!(t.all().len(), 3, "the destroyed one stays in the summary");
}

#[test]
fn tcp_records_drive_transports_without_sunrpc_hooks() {
    use crate::kernel::decode::{Event, Kind};
    let ev = |kind, ts_ms: u64, sport: u16, err: i32| Event {
        kind,
        ts_ns: ts_ms * MS,
        sk: 1,
        task: Task { pid: 1, comm: "k".into() },
        flow: Flow { laddr: "10.0.0.2".parse().unwrap(), sport, raddr: "10.0.0.1".parse().unwrap(), dport: 2049, netns: Netns::UNKNOWN },
        start_ns: ts_ms * MS,
        syn_ns: 0,
        established_ns: 0,
        xprt: 0xabc,
        err,
        syn_retrans: 0,
        oldstate: 0,
        newstate: 0,
        first_exit: tcp_state::CLOSE,
    };
    let mut off = XprtTracker::new(false);
    assert!(off.on_tcp(&ev(Kind::ConnectDone, 1, 700, 0)).is_empty(), "SunRPC hooks own connects");
    let mut t = XprtTracker::new(true);
    t.on_tcp(&ev(Kind::ConnectDone, 1, 700, 0));
    let d = t.on_tcp(&ev(Kind::Closed, 2, 700, libc::ECONNABORTED));
    assert!(matches!(d.as_slice(), [XprtObservation::Drop { reason: DropReason::Error(e), .. }] if *e == libc::ECONNABORTED));
    let c = t.on_tcp(&ev(Kind::ConnectDone, 3, 700, 0));
    assert!(connects(&c)[0].reused);
    // Sockets with no xprt are not transports.
    let mut plain = ev(Kind::ConnectDone, 4, 1, 0);
    plain.xprt = 0;
    assert!(t.on_tcp(&plain).is_empty());
}

/// An RPC timeout record carries no socket: its flow is the transport's
/// connection as last seen connecting, and `connected_to` lists the
/// transports the kernel's "not responding" line may stand for.
#[test]
fn rpc_timeouts_name_the_transports_connection() {
    let mut t = XprtTracker::new(false);
    t.on_xprt(&rec(XprtWhat::Connect, 10, 1, 875));
    let mut timeout = rec(XprtWhat::RpcTimeout, 6_000, 1, 0);
    timeout.flow.laddr = "::".parse().unwrap();
    let got = t.on_xprt(&timeout);
    let [XprtObservation::RpcTimeout { xprt: 1, flow, timeouts: 1, .. }] = got.as_slice() else { panic!("{got:?}") };
    assert_eq!((flow.laddr, flow.sport), ("10.99.0.2".parse().unwrap(), 875));
    let got = t.on_xprt(&rec(XprtWhat::RpcTimeout, 12_000, 1, 0));
    assert!(matches!(got.as_slice(), [XprtObservation::RpcTimeout { timeouts: 2, .. }]), "{got:?}");
    let server: IpAddr = "10.99.0.1".parse().unwrap();
    assert_eq!(t.connected_to(server).iter().map(|(x, f)| (*x, f.sport)).collect::<Vec<_>>(), [(1, 875)]);
    assert!(t.connected_to("10.99.0.9".parse().unwrap()).is_empty());
    // Dropped: not connected any more, until it connects again.
    let mut err = rec(XprtWhat::Error, 13_000, 1, 875);
    err.error = -libc::ETIMEDOUT;
    t.on_xprt(&err);
    assert!(t.connected_to(server).is_empty());
    // A transport never seen connecting: the remembered port and its server.
    let mut other = rec(XprtWhat::RpcTimeout, 14_000, 2, 0);
    other.srcport = Some(790);
    let got = t.on_xprt(&other);
    let [XprtObservation::RpcTimeout { flow, .. }] = got.as_slice() else { panic!("{got:?}") };
    assert_eq!(flow.sport, 790);
}
