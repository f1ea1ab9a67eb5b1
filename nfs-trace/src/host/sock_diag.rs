//! TCP sockets through the kernel's sock_diag netlink interface, as `ss`
//! reads and kills them: the live source port of an NFS transport (ground
//! truth independent of our tracer) and SOCK_DESTROY, which aborts a
//! connection the way `ss -K` does (needs CONFIG_INET_DIAG_DESTROY and root).
use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
};

use anyhow::{Context as _, Result, bail};

use crate::host::{
    namespaces::{self, NetnsPath},
    netns_inode,
};

const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const SOCK_DESTROY: u16 = 21;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const TCP_ALL_STATES: u32 = 0xfff;

/// `struct inet_diag_sockid`: ports and addresses in network order.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct SockId {
    sport: [u8; 2],
    dport: [u8; 2],
    src: [u8; 16],
    dst: [u8; 16],
    ifindex: u32,
    cookie: [u32; 2],
}

/// `struct inet_diag_req_v2`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct ReqV2 {
    family: u8,
    protocol: u8,
    ext: u8,
    pad: u8,
    states: u32,
    id: SockId,
}

/// `struct nlmsghdr` followed by the request.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Msg {
    len: u32,
    kind: u16,
    flags: u16,
    seq: u32,
    pid: u32,
    req: ReqV2,
}

/// One TCP socket as the kernel lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpSock {
    pub laddr: IpAddr,
    pub lport: u16,
    pub raddr: IpAddr,
    pub rport: u16,
    /// TCP state number (1 = ESTABLISHED).
    pub state: u8,
    pub inode: u32,
    /// The network namespace it lives in (inode, as /proc/PID/ns/net names it).
    pub netns: u32,
    id_raw: [u8; std::mem::size_of::<SockId>()],
    family: u8,
}

impl TcpSock {
    /// An ESTABLISHED socket for unit tests.
    #[cfg(test)]
    pub fn for_test(laddr: IpAddr, lport: u16, raddr: IpAddr, rport: u16, netns: u32) -> TcpSock {
        let family = if laddr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 } as u8;
        TcpSock { laddr, lport, raddr, rport, state: 1, inode: 0, netns, id_raw: [0; std::mem::size_of::<SockId>()], family }
    }
}

fn open() -> Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, NETLINK_SOCK_DIAG) };
    if fd < 0 {
        return Err(io::Error::last_os_error()).context("netlink sock_diag socket");
    }
    // SAFETY: fd is a fresh, valid descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn send(fd: &OwnedFd, msg: &Msg) -> Result<()> {
    // SAFETY: msg is a live #[repr(C)] value of the size passed.
    let n = unsafe { libc::send(fd.as_raw_fd(), (msg as *const Msg).cast(), std::mem::size_of::<Msg>(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error()).context("netlink send");
    }
    Ok(())
}

fn recv(fd: &OwnedFd, buf: &mut [u8]) -> Result<usize> {
    // SAFETY: buf is a valid writable buffer of the length passed.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error()).context("netlink recv");
    }
    Ok(n as usize)
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_ne_bytes(b[i..i + 4].try_into().expect("4 bytes"))
}

fn ip_of(family: u8, raw: &[u8]) -> IpAddr {
    if family == libc::AF_INET as u8 {
        IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))
    } else {
        let a: [u8; 16] = raw[..16].try_into().expect("16 bytes");
        let v6 = Ipv6Addr::from(a);
        // As the tracer shows them: IPv4 over an IPv6 socket is IPv4.
        v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6))
    }
}

/// Sends one SOCK_DIAG_BY_FAMILY dump request for TCP sockets of `family`
/// in this network namespace and hands each reply datagram to `each` until
/// it says the dump is done.
fn dump(family: u8, mut each: impl FnMut(&[u8]) -> Result<bool>) -> Result<()> {
    let fd = open()?;
    let msg = Msg {
        len: std::mem::size_of::<Msg>() as u32,
        kind: SOCK_DIAG_BY_FAMILY,
        flags: NLM_F_REQUEST | NLM_F_DUMP,
        seq: 1,
        req: ReqV2 { family, protocol: libc::IPPROTO_TCP as u8, states: TCP_ALL_STATES, ..Default::default() },
        ..Default::default()
    };
    send(&fd, &msg)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = recv(&fd, &mut buf)?;
        if each(&buf[..n])? {
            return Ok(());
        }
    }
}

/// Lists TCP sockets of one address family in this network namespace.
fn dump_family(family: u8) -> Result<Vec<TcpSock>> {
    let mut out = Vec::new();
    dump(family, |d| parse_dump(d, &mut out))?;
    Ok(out)
}

/// Decodes one datagram of a SOCK_DIAG_BY_FAMILY dump into `out`; true once
/// the dump's NLMSG_DONE is in it. Reads nothing past `buf`'s end, whatever
/// the lengths in it say.
fn parse_dump(buf: &[u8], out: &mut Vec<TcpSock>) -> Result<bool> {
    let idlen = std::mem::size_of::<SockId>();
    let n = buf.len();
    let mut off = 0;
    while off + 16 <= n {
        let len = u32_at(buf, off) as usize;
        let kind = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
        if len < 16 || len > n - off {
            bail!("malformed netlink reply");
        }
        let body = &buf[off + 16..off + len];
        match kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                // The kernel sends -errno; a garbled i32::MIN must not overflow.
                let errno = if body.len() >= 4 { (u32_at(body, 0) as i32).wrapping_neg() } else { 0 };
                bail!("sock_diag dump failed: {}", io::Error::from_raw_os_error(errno));
            }
            SOCK_DIAG_BY_FAMILY => {
                // inet_diag_msg: family state timer retrans, id, expires rqueue wqueue uid inode
                let m = body;
                if m.len() >= 4 + idlen + 20 {
                    let id = &m[4..4 + idlen];
                    out.push(TcpSock {
                        laddr: ip_of(m[0], &id[4..20]),
                        lport: u16::from_be_bytes([id[0], id[1]]),
                        raddr: ip_of(m[0], &id[20..36]),
                        rport: u16::from_be_bytes([id[2], id[3]]),
                        state: m[1],
                        inode: u32_at(m, 4 + idlen + 16),
                        netns: 0,
                        id_raw: id.try_into().expect("sockid size"),
                        family: m[0],
                    });
                }
            }
            _ => {}
        }
        off = off.saturating_add((len + 3) & !3);
    }
    Ok(false)
}

/// Every datagram of one SOCK_DIAG_BY_FAMILY dump as the kernel sent it:
/// real samples for the fuzz tests.
#[cfg(test)]
pub(crate) fn dump_raw(family: u8) -> Result<Vec<Vec<u8>>> {
    let mut all = Vec::new();
    dump(family, |d| {
        all.push(d.to_vec());
        parse_dump(d, &mut Vec::new())
    })?;
    Ok(all)
}

/// Decodes datagrams as [`dump_family`] does (for the fuzz tests).
#[cfg(test)]
pub(crate) fn parse_datagram(buf: &[u8]) -> Result<(bool, Vec<TcpSock>)> {
    let mut out = Vec::new();
    let done = parse_dump(buf, &mut out)?;
    Ok((done, out))
}

/// Every TCP socket (both families) of the calling thread's network
/// namespace, each labelled with it.
fn dump_here() -> Result<Vec<TcpSock>> {
    let netns = netns_inode::own().context("cannot read our network namespace")?.0;
    let mut v = dump_family(libc::AF_INET as u8)?;
    v.extend(dump_family(libc::AF_INET6 as u8)?);
    for s in &mut v {
        s.netns = netns;
    }
    Ok(v)
}

/// TCP sockets (both families) toward `raddr:rport` in the calling
/// thread's network namespace.
pub fn sockets_to(raddr: IpAddr, rport: u16) -> Result<Vec<TcpSock>> {
    let mut v = dump_here()?;
    v.retain(|s| s.raddr == raddr && s.rport == rport);
    Ok(v)
}

/// TCP sockets (both families) toward `raddr:rport` in the network
/// namespace `netns` (entered by a thread of its own when it is not ours).
pub fn sockets_to_in(netns: u32, raddr: IpAddr, rport: u16) -> Result<Vec<TcpSock>> {
    let mut v = in_ns(netns, dump_here)?;
    v.retain(|s| s.raddr == raddr && s.rport == rport);
    Ok(v)
}

/// Every TCP socket (both families, any state) of the network namespace
/// `netns`: what a local proxy holds there (host/proxy.rs).
pub fn all_in(netns: u32) -> Result<Vec<TcpSock>> {
    in_ns(netns, dump_here)
}

/// Runs `f` in the network namespace whose inode is `netns`: right here when
/// it is the calling thread's, else in a thread that entered it.
fn in_ns<T: Send + 'static>(netns: u32, f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    if netns_inode::own().map(|n| n.0) == Some(netns) {
        return f();
    }
    let Some(ns) = namespaces::netns_paths(Path::new("/proc")).into_iter().find(|n| n.ino == netns) else {
        bail!("network namespace {netns} is gone (no process or /run/netns name holds it)");
    };
    namespaces::in_netns(&ns.path, f)
}

/// Aborts one socket (SOCK_DESTROY), as `ss -K` does, in the network
/// namespace it lives in: the owner sees ECONNABORTED and, for an NFS
/// transport, reconnects on its next RPC.
pub fn destroy(s: &TcpSock) -> Result<()> {
    let s = s.clone();
    in_ns(s.netns, move || destroy_here(&s))
}

fn destroy_here(s: &TcpSock) -> Result<()> {
    let fd = open()?;
    let mut id = SockId::default();
    // SAFETY: id_raw was copied from a SockId-shaped reply of the same size.
    unsafe { std::ptr::copy_nonoverlapping(s.id_raw.as_ptr(), (&mut id as *mut SockId).cast(), s.id_raw.len()) };
    let msg = Msg {
        len: std::mem::size_of::<Msg>() as u32,
        kind: SOCK_DESTROY,
        flags: NLM_F_REQUEST | NLM_F_ACK,
        seq: 2,
        req: ReqV2 { family: s.family, protocol: libc::IPPROTO_TCP as u8, states: TCP_ALL_STATES, id, ..Default::default() },
        ..Default::default()
    };
    send(&fd, &msg)?;
    let mut buf = vec![0u8; 4096];
    let n = recv(&fd, &mut buf)?;
    if n >= 20 && u16::from_ne_bytes([buf[4], buf[5]]) == NLMSG_ERROR {
        let errno = (u32_at(&buf, 16) as i32).wrapping_neg();
        if errno != 0 {
            let e = io::Error::from_raw_os_error(errno);
            bail!("cannot destroy the socket {}:{} → {}:{}: {e} (needs root and CONFIG_INET_DIAG_DESTROY)", s.laddr, s.lport, s.raddr, s.rport);
        }
    }
    Ok(())
}

/// TCP sockets toward `ports` (any state) in the calling thread's network
/// namespace.
pub fn sockets_here(ports: &[u16]) -> Result<Vec<TcpSock>> {
    let mut v = dump_here()?;
    v.retain(|s| ports.contains(&s.rport));
    Ok(v)
}

/// TCP sockets toward `ports` (any state) in every network namespace of
/// `netns` (from [`namespaces::netns_paths`]), and the namespaces that
/// could not be looked into, with why (entering one needs root).
pub fn sockets_everywhere(netns: &[NetnsPath], ports: &[u16]) -> (Vec<TcpSock>, Vec<(u32, String)>) {
    let (mut out, mut unseen) = (Vec::new(), Vec::new());
    let here = netns_inode::own().map(|n| n.0);
    for ns in netns {
        let ports = ports.to_vec();
        // Our own is read without entering it (setns needs root, even there).
        let path = ns.path.clone();
        let enter = move |f: Box<dyn FnOnce() -> Result<Vec<TcpSock>> + Send>| {
            if here == Some(ns.ino) { f() } else { namespaces::in_netns(&path, f) }
        };
        match enter(Box::new(move || sockets_here(&ports))) {
            Ok(v) => out.extend(v),
            Err(e) => unseen.push((ns.ino, format!("{e:#}"))),
        }
    }
    (out, unseen)
}

/// Established TCP sockets toward `ports` in every network namespace
/// (NFS transports live in the namespace their mount was made in, which
/// may have no process left in it: named ones count too).
pub fn established_everywhere(ports: &[u16]) -> Vec<TcpSock> {
    let (mut v, _) = sockets_everywhere(&namespaces::netns_paths(Path::new("/proc")), ports);
    v.retain(|s| s.state == 1);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_the_kernel_abi() {
        assert_eq!(std::mem::size_of::<SockId>(), 48);
        assert_eq!(std::mem::size_of::<ReqV2>(), 56);
        assert_eq!(std::mem::size_of::<Msg>(), 72);
    }

    /// Lists a socket of our own and kills it, as root. Without root the
    /// dump still works (it is what `ss` does as a user).
    #[test]
    fn lists_our_own_connection() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (_srv, _) = l.accept().unwrap();
        let me = c.local_addr().unwrap();
        let socks = sockets_to("127.0.0.1".parse().unwrap(), l.local_addr().unwrap().port()).unwrap();
        let s = socks.iter().find(|s| s.lport == me.port()).expect("our socket is listed");
        assert_eq!(s.state, 1, "ESTABLISHED");
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            destroy(s).unwrap();
            use std::io::Read;
            let err = (&c).read(&mut [0u8; 1]).expect_err("the connection was aborted");
            assert_eq!(err.raw_os_error(), Some(libc::ECONNABORTED));
        }
    }
}
