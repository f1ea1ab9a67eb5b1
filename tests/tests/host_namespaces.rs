//! The host readers per namespace, against a real "container": a child
//! made with `unshare --mount --net` (its own mount and network namespace,
//! `lo` up, a tmpfs mounted inside), and sockets the test makes in it. The
//! ground truth is the child's `/proc/PID/ns/*` links and the test's own
//! sockets. Run under the host lock (loopback ports are shared).
use std::{
    io::{BufRead, BufReader, Read},
    net::{IpAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use nfs_trace::host::{
    namespaces::{self, Namespaces},
    netns_sysfs::{self, SunrpcSysfs},
    sock_diag,
};
use nfs_trace_tests::host::*;

/// A long-lived child in a mount and network namespace of its own.
struct Container {
    child: std::process::Child,
}

impl Container {
    fn start() -> Container {
        require_root();
        let mut child = Command::new("unshare")
            .args(["--mount", "--net", "--propagation", "private", "sh", "-c"])
            .arg("ip link set lo up && mount -t tmpfs nfs-trace-test /mnt && echo ready && exec sleep 600")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run unshare (util-linux)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "the child did not come up");
        Container { child }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn ns_path(&self, kind: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/{kind}", self.pid()))
    }

    /// The child's namespace inode as the kernel names it (`net:[N]`).
    fn ns(&self, kind: &str) -> u32 {
        link_ino(&self.ns_path(kind), kind)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn link_ino(p: &Path, kind: &str) -> u32 {
    let t = std::fs::read_link(p).unwrap().to_string_lossy().into_owned();
    t.strip_prefix(kind).and_then(|r| r.strip_prefix(":[")).and_then(|r| r.strip_suffix(']')).unwrap().parse().unwrap()
}

/// Runs `f` on a thread that entered the network namespace at `ns`.
fn in_netns_of<T: Send>(ns: &Path, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let fd = std::fs::File::open(ns).unwrap();
            // SAFETY: a valid namespace fd; only this thread moves.
            assert_eq!(unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) }, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap()
    })
}

#[test]
fn the_scan_finds_the_containers_namespaces() {
    let c = Container::start();
    let ns = Namespaces::scan(Path::new("/proc"));
    let (mnt, net) = (c.ns("mnt"), c.ns("net"));
    assert_ne!(Some(mnt), ns.own_mnt);
    assert_ne!(Some(net), ns.own_net);
    assert_eq!(ns.procs.get(&c.pid()), Some(&(Some(mnt), Some(net))));
    assert_eq!(ns.mnt.get(&mnt), Some(&vec![c.pid()]), "the child is alone in its mount namespace");
    assert_eq!(ns.nets_of_mnt(mnt), vec![net]);
    assert!(namespaces::netns_paths(Path::new("/proc")).iter().any(|p| p.ino == net), "its netns can be entered");
}

/// The same address and port listened on in the host's netns and the
/// child's: sock_diag lists each socket once, in its own namespace, and a
/// destroy reaches the one in the child's.
#[test]
fn sock_diag_lists_and_destroys_per_network_namespace() {
    let c = Container::start();
    let child_net = c.ns("net");
    let host_net = link_ino(Path::new("/proc/thread-self/ns/net"), "net");
    let host_l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = host_l.local_addr().unwrap().port();
    let host_c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (_host_s, _) = host_l.accept().unwrap();
    // Sockets keep the namespace they were made in.
    let (_child_l, child_c, _child_s) = in_netns_of(&c.ns_path("net"), || {
        let l = TcpListener::bind(("127.0.0.1", port)).expect("the same port is free in the child's netns");
        let cl = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (s, _) = l.accept().unwrap();
        (l, cl, s)
    });
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    let t = std::time::Instant::now();
    let listed = sock_diag::established_everywhere(&[port]);
    eprintln!("sock_diag in {} network namespaces: {:?}", namespaces::netns_paths(Path::new("/proc")).len(), t.elapsed());
    let mut all: Vec<(u32, u16)> =
        listed.iter().filter(|s| s.raddr == lo).map(|s| (s.netns, s.lport)).collect();
    all.sort();
    let mut want = vec![(host_net, host_c.local_addr().unwrap().port()), (child_net, child_c.local_addr().unwrap().port())];
    want.sort();
    assert_eq!(all, want, "one socket per namespace, each with its namespace");
    let inside = sock_diag::sockets_to_in(child_net, lo, port).unwrap();
    assert_eq!(inside.iter().map(|s| (s.netns, s.lport)).collect::<Vec<_>>(), [(child_net, child_c.local_addr().unwrap().port())]);
    let here = sock_diag::sockets_to(lo, port).unwrap();
    assert_eq!(here.iter().map(|s| (s.netns, s.lport)).collect::<Vec<_>>(), [(host_net, host_c.local_addr().unwrap().port())]);
    sock_diag::destroy(&inside[0]).expect("destroyed in the child's netns");
    let err = (&child_c).read(&mut [0u8; 1]).expect_err("the child's connection was aborted");
    assert_eq!(err.raw_os_error(), Some(libc::ECONNABORTED));
    host_c.set_nonblocking(true).unwrap();
    let e = (&host_c).read(&mut [0u8; 1]).expect_err("nothing to read");
    assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "the host's connection of the same address is untouched");
}

/// sysfs mounted from inside the child's netns is the child's (its only
/// interface is lo), the reader works from this multithreaded process,
/// and leaves no mount or directory behind. Without sunrpc loaded (this
/// host) the sunrpc part reads as "not loaded", not as an error.
#[test]
fn sysfs_of_another_netns_is_read_from_inside_it() {
    let c = Container::start();
    let ifaces = netns_sysfs::with_sysfs_of(&c.ns_path("net"), |sys| {
        let mut v: Vec<String> = std::fs::read_dir(sys.join("class/net")).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    })
    .expect("sysfs of the child's netns mounts");
    assert_eq!(ifaces, ["lo"], "the child's interfaces, not the host's");
    let t = std::time::Instant::now();
    let got = netns_sysfs::read_netns(&c.ns_path("net"), c.ns("net"), &[]);
    // Printed, not asserted (machines are noisy): the cost per netns that
    // `watch` pays at each mount refresh with sunrpc loaded.
    eprintln!("sunrpc sysfs of one netns read in {:?}", t.elapsed());
    if Path::new("/sys/kernel/sunrpc").is_dir() {
        assert!(matches!(got, SunrpcSysfs::Read { .. }), "sunrpc is loaded here: {got:?}");
    } else {
        assert_eq!(got, SunrpcSysfs::NotLoaded);
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains("nfs-trace-sysfs"), "the reader's mount stayed private:\n{mounts}");
    let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&format!("nfs-trace-sysfs-{}-", std::process::id())))
        .collect();
    assert!(left.is_empty(), "temporary directories left: {left:?}");
}
