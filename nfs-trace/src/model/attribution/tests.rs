use super::*;
use crate::{flow::{Netns, Task}, model::xprt::XprtConnect};

const SERVER: &str = "10.99.0.1";

fn flow(sport: u16) -> Flow {
    flow_in(Netns::UNKNOWN, sport)
}

fn flow_in(netns: Netns, sport: u16) -> Flow {
    Flow {
        netns,
        laddr: "10.99.0.2".parse().unwrap(),
        sport,
        raddr: SERVER.parse().unwrap(),
        dport: 2049,
    }
}

/// A connect of transport `xprt` from `sport`, remembering `srcport`; the
/// `n`th connect seen (1 = its first, seen by us).
fn connect(xprt: u64, sport: u16, srcport: Option<u16>, n: u64) -> XprtObservation {
    XprtObservation::Connect(XprtConnect {
        xprt,
        ts_ns: 1_000_000_000 * n,
        task: Task::default(),
        flow: flow(sport),
        srcport,
        connects: n,
        prev_sport: (n > 1).then_some(sport),
        reused: false,
        dropped: None,
        error: 0,
    })
}

fn v3() -> MountView {
    MountView::for_test("/mnt/v3", SERVER, "3", false, 790)
}
fn v41(name: &str) -> MountView {
    MountView::for_test(name, SERVER, "4.1", false, 0)
}

/// The mount points credited with `xprt` connected from `sport`.
fn credited(views: &[MountView], xprt: u64, sport: u16, srcport: Option<u16>) -> Vec<String> {
    attribute(views, &Transport::of_flow(xprt, &flow(sport), srcport))
        .0
        .iter()
        .map(|m| m.mountpoint.clone())
        .collect()
}

/// Issue 11: with only the v3 mount of a server listed, a v4.1 mount's
/// first connects (made while it is being mounted) were credited to the v3
/// mount. They are not yet known, and are attributed when the 4.1 mount
/// appears.
#[test]
fn a_first_connect_before_its_mount_appears_is_not_credited_to_another_mount() {
    let mut a = Attributor::new();
    let mut views = vec![v3()];
    assert!(a.refresh(&mut views, 0).is_empty());
    for x in 1..=4 {
        a.observe(&connect(x, 850 + x as u16, Some(0), 1), &mut views);
        assert!(
            credited(&views, x, 850 + x as u16, Some(0)).is_empty(),
            "xprt {x} is not the v3 mount's"
        );
    }
    let mut views = vec![v3(), v41("/mnt/v41")];
    let late = a.refresh(&mut views, 2_000_000_000);
    assert_eq!(late.len(), 4, "{late:?}");
    assert!(
        late.iter()
            .all(|l| l.mounts == ["/mnt/v41"] && l.evidence == BY_APPEARING),
        "{late:?}"
    );
    // Later reconnects from new ports keep it.
    a.observe(&connect(2, 901, Some(0), 2), &mut views);
    assert_eq!(credited(&views, 2, 901, Some(0)), ["/mnt/v41"]);
    // And the next read of the mounts is annotated again.
    let mut views = vec![v3(), v41("/mnt/v41")];
    assert!(
        a.refresh(&mut views, 3_000_000_000).is_empty(),
        "reported once"
    );
    assert_eq!(credited(&views, 3, 1001, Some(0)), ["/mnt/v41"]);
}

#[test]
fn a_remembered_port_is_evidence_once_the_mount_lists_it() {
    let mut a = Attributor::new();
    let mut views = vec![v41("/mnt/v41")];
    a.refresh(&mut views, 0);
    a.observe(&connect(7, 790, Some(790), 1), &mut views);
    assert!(
        credited(&views, 7, 790, Some(790)).is_empty(),
        "the 4.1 mount remembers no 790"
    );
    let mut views = vec![v41("/mnt/v41"), v3()];
    let late = a.refresh(&mut views, 1);
    assert_eq!(late.len(), 1);
    assert_eq!(
        (late[0].mounts.clone(), late[0].evidence),
        (vec!["/mnt/v3".to_string()], BY_PORT)
    );
    // A remembered port credits directly, with no history.
    assert_eq!(credited(&views, 99, 790, Some(790)), ["/mnt/v3"]);
    // So does a live port the mount remembers, when the transport's own is unknown.
    assert_eq!(credited(&views, 99, 790, None), ["/mnt/v3"]);
}

#[test]
fn two_new_mounts_that_fit_leave_it_unknown() {
    let mut a = Attributor::new();
    let mut views = vec![];
    a.refresh(&mut views, 0);
    a.observe(&connect(1, 850, Some(0), 1), &mut views);
    let mut views = vec![v41("/mnt/a"), v41("/mnt/b")];
    assert!(
        a.refresh(&mut views, 1).is_empty(),
        "either could be it: no guess"
    );
    assert!(credited(&views, 1, 850, Some(0)).is_empty());
}

#[test]
fn the_kernels_mount_link_is_evidence_and_survives_a_new_port() {
    let mut linked = v41("/mnt/b");
    linked.live_from = "mount link";
    linked.live_ports = Some(vec![41234]);
    let mut views = vec![v41("/mnt/a"), linked];
    views[0].live_from = "mount link";
    views[0].live_ports = Some(vec![41000]);
    let mut a = Attributor::new();
    a.refresh(&mut views, 0);
    assert_eq!(credited(&views, 5, 41234, Some(0)), ["/mnt/b"]);
    a.observe(&connect(5, 41234, Some(0), 3), &mut views);
    // It reconnects from a port the (not yet re-read) link does not list.
    a.observe(&connect(5, 41300, Some(0), 4), &mut views);
    assert_eq!(credited(&views, 5, 41300, Some(0)), ["/mnt/b"]);
}

#[test]
fn elimination_only_for_transports_older_than_the_watch() {
    let mut a = Attributor::new();
    let mut views = vec![v3(), v41("/mnt/v41")];
    a.refresh(&mut views, 0);
    // Reconnecting, so connected before we started: its mount was listed.
    a.observe(&connect(3, 900, Some(0), 2), &mut views);
    assert_eq!(credited(&views, 3, 900, Some(0)), ["/mnt/v41"]);
    assert_eq!(views[1].xprts, [(3, BY_ELIMINATION)]);
    // Two mounts listed at start whose transports remember none: unknown.
    let mut a = Attributor::new();
    let mut views = vec![v41("/mnt/a"), v41("/mnt/b")];
    a.refresh(&mut views, 0);
    a.observe(&connect(3, 900, Some(0), 2), &mut views);
    assert!(credited(&views, 3, 900, Some(0)).is_empty());
    // A mount that appeared after we started is no candidate.
    let mut a = Attributor::new();
    let mut views = vec![v3()];
    a.refresh(&mut views, 0);
    let mut views = vec![v3(), v41("/mnt/v41")];
    a.refresh(&mut views, 1);
    a.observe(&connect(3, 900, Some(0), 2), &mut views);
    assert!(credited(&views, 3, 900, Some(0)).is_empty());
}

/// On kernels without mount links (before 6.4), a mount on a port outside
/// --port (a local proxy's 20049) is listed before its port is watched: its
/// transport's first connect was never seen, and its first record is a
/// reconnect. As the only mount of that destination it is the one.
#[test]
fn a_mount_listed_before_its_port_was_watched_is_a_candidate() {
    let mut a = Attributor::new();
    a.refresh(&mut Vec::new(), 0);
    let mut proxied = v41("/mnt/efs");
    proxied.port = 20049;
    let mut views = vec![v3(), proxied];
    a.refresh(&mut views, 5);
    let mut c = connect(3, 900, None, 2);
    if let XprtObservation::Connect(x) = &mut c {
        x.flow.dport = 20049;
    }
    a.observe(&c, &mut views);
    assert!(views[1].xprts.is_empty(), "not before its port is known to have been watched late");
    a.port_watched_late(20049, &views);
    a.observe(&c, &mut views);
    assert_eq!(views[1].xprts, [(3, BY_ELIMINATION)]);
    assert!(views[0].xprts.is_empty());
}

#[test]
fn unknown_ports_and_other_servers_credit_nothing() {
    let views = vec![v3(), v41("/mnt/v41")];
    assert!(
        credited(&views, 1, 40000, None).is_empty(),
        "an unknown remembered port picks no mount"
    );
    let t = Transport {
        xprt: 1,
        raddr: "10.0.0.1".parse().unwrap(),
        dport: 2049,
        netns: Netns::UNKNOWN,
        srcport: Some(790),
        live: Some(790),
    };
    assert!(attribute(&views, &t).0.is_empty(), "another server");
    // Only one mount of the server, but its remembered port does not match.
    assert!(credited(&views[..1], 1, 852, Some(0)).is_empty());
}

#[test]
fn a_destroyed_transport_is_forgotten_and_pending_ones_expire() {
    let mut a = Attributor::new();
    let mut views = vec![];
    a.refresh(&mut views, 0);
    a.observe(&connect(1, 850, Some(0), 1), &mut views);
    a.observe(
        &XprtObservation::Destroyed { xprt: 1, ts_ns: 2 },
        &mut views,
    );
    a.observe(&connect(2, 851, Some(0), 1), &mut views);
    let mut views = vec![v41("/mnt/v41")];
    let late = a.refresh(&mut views, PENDING_NS + 2_000_000_000);
    assert!(late.is_empty(), "1 destroyed, 2 waited too long: {late:?}");
}

/// An idle transport connecting again looks like a first connect; its
/// mount was listed all along.
#[test]
fn a_first_connect_with_no_mount_appearing_settles_by_elimination() {
    let mut a = Attributor::new();
    let mut views = vec![v3(), v41("/mnt/v41")];
    a.refresh(&mut views, 0);
    a.observe(&connect(4, 870, Some(0), 1), &mut views);
    assert!(
        a.refresh(&mut views, 1_000_000_000 + SETTLED_NS / 2)
            .is_empty(),
        "too early: a mount may still appear"
    );
    let late = a.refresh(&mut views, 1_000_000_000 + SETTLED_NS);
    assert_eq!(late.len(), 1);
    assert_eq!(
        (late[0].mounts.clone(), late[0].evidence),
        (vec!["/mnt/v41".to_string()], BY_ELIMINATION)
    );
}

/// Two containers mount the same server address: a transport is only ever
/// one of its own network namespace's mounts.
#[test]
fn a_transport_is_credited_only_within_its_network_namespace() {
    let mut host = v41("/mnt/host");
    host.netns = Some(11);
    let mut container = v41("/mnt/container");
    container.netns = Some(22);
    container.mntns = Some(33);
    let mut views = vec![host, container];
    let mut a = Attributor::new();
    a.refresh(&mut views, 0);
    // Reconnecting, so its mount was listed: of netns 22's mounts of that
    // server, exactly one remembers no port.
    let mut c = connect(9, 900, Some(0), 2);
    if let XprtObservation::Connect(x) = &mut c {
        x.flow = flow_in(Netns(22), 900);
    }
    a.observe(&c, &mut views);
    let t = Transport::of_flow(9, &flow_in(Netns(22), 900), Some(0));
    let got: Vec<&str> = attribute(&views, &t).0.iter().map(|m| m.mountpoint.as_str()).collect();
    assert_eq!(got, ["/mnt/container"]);
    // Without the namespace both fit: no guess.
    let mut a = Attributor::new();
    let mut views = vec![v41("/mnt/host"), v41("/mnt/container")];
    a.refresh(&mut views, 0);
    a.observe(&connect(9, 900, Some(0), 2), &mut views);
    assert!(credited(&views, 9, 900, Some(0)).is_empty());
    // A remembered port of a mount in another namespace is no evidence.
    let mut v3c = v3();
    v3c.netns = Some(22);
    let t = Transport::of_flow(5, &flow_in(Netns(11), 790), Some(790));
    assert!(attribute(&[v3c], &t).0.is_empty());
}

/// On 6.4+ every mount has a link, and the first record of a transport
/// that was up before we started is its reconnect from a new port: the
/// link (read before it) lists the port it came from.
#[test]
fn a_reconnect_is_joined_to_the_link_that_lists_its_previous_port() {
    let mut linked = v41("/mnt/v41");
    linked.live_from = "mount link";
    linked.live_ports = Some(vec![985]);
    let mut other = v41("/mnt/other");
    other.live_from = "mount link";
    other.live_ports = Some(vec![700]);
    let mut views = vec![other, linked];
    let mut a = Attributor::new();
    a.refresh(&mut views, 0);
    let mut c = connect(8, 929, Some(0), 1);
    if let XprtObservation::Connect(x) = &mut c {
        x.prev_sport = Some(985);
    }
    a.observe(&c, &mut views);
    assert_eq!(credited(&views, 8, 929, Some(0)), ["/mnt/v41"]);
    assert_eq!(views[1].xprts, [(8, BY_LINK)]);
}

/// 6.1 nconnect: the siblings' first connects come just before the refresh
/// that first lists their mount, but are drained after it. What counts is
/// when they connected, not when we read their records.
#[test]
fn first_connects_drained_after_their_mount_was_listed_still_appeared_before_it() {
    let mut a = Attributor::new();
    let mut views = vec![v3()];
    a.refresh(&mut views, 0);
    let mut views = vec![v3(), v41("/mnt/v41")];
    // The refresh at 3 s lists the 4.1 mount first...
    assert!(a.refresh(&mut views, 3_000_000_000).is_empty());
    // ...and then come the records of connects made at 2 s (connect(.., 2)
    // is at 2 s) and 1 s.
    for (x, n) in [(21u64, 1u64), (22, 1)] {
        let mut c = connect(x, 800 + x as u16, Some(0), n);
        if let XprtObservation::Connect(cc) = &mut c {
            cc.ts_ns = 1_000_000_000 * x.saturating_sub(20);
        }
        a.observe(&c, &mut views);
    }
    let mut views = vec![v3(), v41("/mnt/v41")];
    let late = a.refresh(&mut views, 4_000_000_000);
    assert_eq!(late.len(), 2, "{late:?}");
    assert!(late.iter().all(|l| l.mounts == ["/mnt/v41"] && l.evidence == BY_APPEARING));
}

/// 5.10 with sunrpc as a module has no BTF for sock_xprt: the remembered
/// port is unknown. A transport up before we started is then the only mount
/// of its server listed at start, whatever it remembers.
#[test]
fn an_unknown_remembered_port_is_eliminated_among_mounts_listed_at_start() {
    let mut a = Attributor::new();
    let mut views = vec![v41("/mnt/v41")];
    a.refresh(&mut views, 0);
    a.observe(&connect(6, 773, None, 2), &mut views);
    assert_eq!(credited(&views, 6, 773, None), ["/mnt/v41"]);
    // Two listed at start: no guess.
    let mut a = Attributor::new();
    let mut views = vec![v3(), v41("/mnt/v41")];
    a.refresh(&mut views, 0);
    a.observe(&connect(6, 773, None, 2), &mut views);
    assert!(credited(&views, 6, 773, None).is_empty());
}

/// A transport whose first connect we saw is not one that was up at our
/// start: it is never eliminated among the mounts listed then.
#[test]
fn a_transport_first_seen_by_us_is_not_eliminated_among_mounts_listed_at_start() {
    let mut a = Attributor::new();
    let mut views = vec![v41("/mnt/old")];
    a.refresh(&mut views, 0);
    a.observe(&connect(7, 850, Some(0), 1), &mut views);
    a.observe(&connect(7, 851, Some(0), 2), &mut views);
    assert!(credited(&views, 7, 851, Some(0)).is_empty(), "its mount may still be coming");
}

/// nconnect (6.12, 7.2): a v4.1 transport's first attempt draws port 790,
/// which the v3 mount's transport is connected from and remembers; connect()
/// refuses it (EADDRNOTAVAIL) and the next attempt takes 905. The refused
/// port is no evidence: the transport is not credited to the v3 mount, on
/// the refused attempt or through it as the previous port, and is credited
/// to the v4.1 mount when that appears.
#[test]
fn a_port_refused_in_connect_credits_no_mount() {
    let mut a = Attributor::new();
    let mut views = vec![v3()];
    assert!(a.refresh(&mut views, 0).is_empty());
    let refused = match connect(7, 790, Some(790), 1) {
        XprtObservation::Connect(c) => XprtObservation::Connect(XprtConnect { error: -libc::EADDRNOTAVAIL, ..c }),
        _ => unreachable!(),
    };
    a.observe(&refused, &mut views);
    assert!(views[0].xprts.is_empty(), "{:?}", views[0].xprts);
    let next = match connect(7, 905, Some(0), 2) {
        XprtObservation::Connect(c) => XprtObservation::Connect(XprtConnect { prev_sport: Some(790), ..c }),
        _ => unreachable!(),
    };
    a.observe(&next, &mut views);
    assert!(views[0].xprts.is_empty(), "credited through the refused port: {:?}", views[0].xprts);
    let mut views = vec![v3(), v41("/mnt/v41")];
    let late = a.refresh(&mut views, 3_000_000_000);
    assert_eq!(late.iter().map(|l| (l.xprt, l.mounts.clone(), l.flow.sport)).collect::<Vec<_>>(), vec![(7, vec!["/mnt/v41".to_string()], 905)]);
    // Without the refusal, the same port is evidence for the v3 mount.
    let mut b = Attributor::new();
    let mut views = vec![v3()];
    b.refresh(&mut views, 0);
    b.observe(&connect(8, 790, Some(790), 1), &mut views);
    assert_eq!(credited(&views, 8, 790, Some(790)), ["/mnt/v3"]);
}

/// A mount of 127.0.0.1:20049 through a local TLS proxy whose upstream leg
/// goes to the server's 2049, beside a direct v3 mount of that server.
fn proxied(netns: Option<u32>) -> MountView {
    let mut m = MountView::for_test("/mnt/efs", "127.0.0.1", "4.1", true, 0);
    m.port = 20049;
    m.netns = netns;
    m.proxy = Some(crate::host::proxy::Proxy {
        listen: "127.0.0.1:20049".into(),
        pid: Some(42),
        comm: Some("stunnel4".into()),
        upstream: Vec::new(),
        downstream: Vec::new(),
        servers: vec![(SERVER.parse().unwrap(), 2049)],
        problems: Vec::new(),
        unseen: None,
    });
    m
}

#[test]
fn a_proxys_upstream_connect_is_its_mounts_and_a_kernel_transport_never_is() {
    let views = [v3(), proxied(Some(7))];
    assert_eq!(credited(&views, 0, 41000, None), ["/mnt/efs"], "the proxy's connect from an ephemeral port");
    assert_eq!(attribute(&views, &Transport::of_flow(0, &flow(41000), None)).1, Some(BY_PROXY));
    assert_eq!(credited(&views, 0, 790, None), ["/mnt/v3"], "the direct mount's remembered port wins");
    assert!(credited(&views, 0xabc, 41000, None).is_empty(), "a SunRPC transport is the kernel's, not the proxy's");
    let other_ns = attribute(&views, &Transport::of_flow(0, &flow_in(Netns(8), 41000), None)).0;
    assert!(other_ns.is_empty(), "the same server from another network namespace is not this proxy's");
    let mut elsewhere = flow(41000);
    elsewhere.dport = 2050;
    assert!(attribute(&views, &Transport::of_flow(0, &elsewhere, None)).0.is_empty());
}
