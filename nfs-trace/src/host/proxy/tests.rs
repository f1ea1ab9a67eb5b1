use std::net::{Ipv4Addr, TcpListener, TcpStream};

use super::*;

fn sock(l: (&str, u16), r: (&str, u16), state: u8, inode: u32) -> TcpSock {
    let mut s = TcpSock::for_test(l.0.parse().unwrap(), l.1, r.0.parse().unwrap(), r.1, 7);
    s.state = state;
    s.inode = inode;
    s
}

/// A stunnel client on 127.0.0.1:20049: its listener, the kernel's
/// connection to it (no inode: a kernel socket), the accepted side, its
/// upstream to the server, and a stranger's socket toward the same server.
fn tunnel() -> Vec<TcpSock> {
    vec![
        sock(("127.0.0.1", 20049), ("0.0.0.0", 0), tcp_state::LISTEN, 10),
        sock(("127.0.0.1", 801), ("127.0.0.1", 20049), tcp_state::ESTABLISHED, 0),
        sock(("127.0.0.1", 20049), ("127.0.0.1", 801), tcp_state::ESTABLISHED, 11),
        sock(("10.0.0.2", 41000), ("10.0.0.1", 2049), tcp_state::ESTABLISHED, 12),
        sock(("10.0.0.2", 41002), ("10.0.0.1", 2049), tcp_state::ESTABLISHED, 99),
    ]
}

#[test]
fn the_upstream_leg_is_what_the_proxy_holds_besides_its_listener_and_accepted_side() {
    let owned: HashSet<u32> = [10, 11, 12].into();
    let (up, down) = legs(&tunnel(), "127.0.0.1".parse().unwrap(), 20049, &owned);
    assert_eq!(up.len(), 1, "{up:?}");
    assert_eq!((up[0].lport, up[0].rport, up[0].state), (41000, 2049, "ESTAB"));
    assert_eq!(down.len(), 1, "{down:?}");
    assert_eq!((down[0].lport, down[0].rport), (801, 20049));
    assert!(problems("127.0.0.1:20049", Some(5), &up, &down).is_empty());
}

#[test]
fn a_wildcard_listener_is_the_proxy_when_none_is_bound_to_the_address() {
    let socks = vec![
        sock(("0.0.0.0", 20049), ("0.0.0.0", 0), tcp_state::LISTEN, 10),
        sock(("127.0.0.2", 20050), ("0.0.0.0", 0), tcp_state::LISTEN, 20),
    ];
    assert_eq!(listener(&socks, "127.0.0.1".parse().unwrap(), 20049).map(|s| s.inode), Some(10));
    assert_eq!(listener(&socks, "127.0.0.1".parse().unwrap(), 20050), None, "another address's listener is not it");
}

#[test]
fn a_dead_tunnel_a_stuck_connect_and_a_gone_proxy_are_each_a_problem() {
    let mut socks = tunnel();
    socks[3].state = tcp_state::CLOSE_WAIT;
    socks.push(sock(("10.0.0.2", 41004), ("10.0.0.1", 2049), tcp_state::SYN_SENT, 13));
    let owned: HashSet<u32> = [10, 11, 12, 13].into();
    let (up, down) = legs(&socks, "127.0.0.1".parse().unwrap(), 20049, &owned);
    let p = problems("127.0.0.1:20049", Some(5), &up, &down);
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(p[0].contains("10.0.0.2:41000 → 10.0.0.1:2049 is in CLOSE-WAIT"), "{p:?}");
    assert!(p[1].contains("41004") && p[1].contains("SYN-SENT"), "{p:?}");
    let gone = problems("127.0.0.1:20049", None, &[], &down);
    assert_eq!(gone.len(), 1);
    assert!(gone[0].starts_with("nothing listens on 127.0.0.1:20049"), "{gone:?}");
    let idle = problems("127.0.0.1:20049", Some(5), &[], &down);
    assert!(idle[0].contains("holds no connection to a server"), "{idle:?}");
}

#[test]
fn memory_keeps_the_servers_of_a_tunnel_between_its_connections() {
    let mut m = Memory::default();
    let (_, down) = legs(&tunnel(), "127.0.0.1".parse().unwrap(), 20049, &[10, 12].into());
    let mut now = Proxy {
        listen: "127.0.0.1:20049".into(),
        pid: Some(5),
        comm: None,
        upstream: Vec::new(),
        downstream: down,
        servers: vec![("10.0.0.1".parse().unwrap(), 2049)],
        problems: Vec::new(),
        unseen: None,
    };
    m.annotate([(Some(7), &mut now)].into_iter());
    let mut later = Proxy { servers: Vec::new(), ..now.clone() };
    m.annotate([(Some(7), &mut later)].into_iter());
    assert!(later.carries("10.0.0.1".parse().unwrap(), 2049));
    assert!(!later.carries("10.0.0.1".parse().unwrap(), 2050));
    let mut other_ns = Proxy { servers: Vec::new(), ..now };
    m.annotate([(Some(8), &mut other_ns)].into_iter());
    assert!(other_ns.servers.is_empty(), "another namespace's proxy on the same address is another proxy");
}

/// This test process is the proxy: real sockets, this process's fd table,
/// the kernel's dump of this network namespace. The upstream leg's server
/// side is closed, so the leg sits in CLOSE-WAIT, as a dead tunnel's does.
#[test]
fn a_real_listener_is_followed_to_this_process_and_its_dead_upstream_flagged() {
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let proxy = TcpListener::bind((lo, 0)).unwrap();
    let port = proxy.local_addr().unwrap().port();
    let server = TcpListener::bind((lo, 0)).unwrap();
    let client = TcpStream::connect((lo, port)).unwrap();
    let (_accepted, _) = proxy.accept().unwrap();
    let up = TcpStream::connect(server.local_addr().unwrap()).unwrap();
    let (server_side, _) = server.accept().unwrap();
    drop(server_side);
    let up_port = up.local_addr().unwrap().port();
    let me = std::process::id();
    let netns = crate::host::netns_inode::own().expect("own netns").0;
    let mut found = None;
    for _ in 0..50 {
        let socks = crate::host::sock_diag::all_in(netns).expect("sock_diag dump of our own namespace");
        let p = follow(Path::new("/proc"), &socks, lo, port, &[me]);
        if p.upstream.iter().any(|l| l.lport == up_port && l.state == "CLOSE-WAIT") {
            found = Some(p);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let p = found.expect("our upstream socket in CLOSE-WAIT, as ss shows it");
    assert_eq!(p.pid, Some(me));
    assert_eq!(p.listen, format!("127.0.0.1:{port}"));
    assert!(p.comm.is_some());
    let client_port = client.local_addr().unwrap().port();
    assert!(p.downstream.iter().any(|l| l.lport == client_port && l.state == "ESTAB"), "{:?}", p.downstream);
    assert!(!p.upstream.iter().any(|l| l.lport == port || l.rport == port), "neither the accepted side nor the client is upstream");
    assert!(p.problems.iter().any(|m| m.contains(&format!(":{up_port} → ")) && m.contains("CLOSE-WAIT")), "{:?}", p.problems);
    assert!(p.servers.contains(&(lo, server.local_addr().unwrap().port())));

    drop(proxy);
    let socks = crate::host::sock_diag::all_in(netns).unwrap();
    let gone = follow(Path::new("/proc"), &socks, lo, port, &[me]);
    assert_eq!(gone.pid, None);
    assert!(gone.problems[0].starts_with(&format!("nothing listens on 127.0.0.1:{port}")), "{:?}", gone.problems);
}
