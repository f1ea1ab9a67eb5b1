use std::os::unix::fs::symlink;

use super::*;
use crate::host::sunrpc_sysfs::SysXprt;

/// A fake /proc: (pid, mnt inode, net inode, mountinfo, mountstats);
/// `self` is the first process.
fn fake_proc(name: &str, procs: &[(u32, NsIno, NsIno, &str, &str)]) -> std::path::PathBuf {
    let root = std::env::temp_dir().join(format!("nfs-trace-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    for &(pid, mnt, net, mountinfo, mountstats) in procs {
        let dir = root.join(pid.to_string());
        std::fs::create_dir_all(dir.join("ns")).unwrap();
        symlink(format!("mnt:[{mnt}]"), dir.join("ns/mnt")).unwrap();
        symlink(format!("net:[{net}]"), dir.join("ns/net")).unwrap();
        std::fs::write(dir.join("mountinfo"), mountinfo).unwrap();
        std::fs::write(dir.join("mountstats"), mountstats).unwrap();
    }
    symlink(procs[0].0.to_string(), root.join("self")).unwrap();
    root
}

const HOST_MI: &str = "\
22 1 0:21 / /proc rw - proc proc rw
36 25 0:52 / /mnt/shared rw - nfs 10.99.0.1:/export rw,vers=3,proto=tcp,port=2049,addr=10.99.0.1
";
const HOST_MS: &str = "\
device 10.99.0.1:/export mounted on /mnt/shared with fstype nfs statvers=1.1
\topts:\trw,vers=3
\txprt:\ttcp 790 1 4 0 0 12 12 0 12 0 2 0 0
";
/// The container sees the host's mount (a bind mount into it, same
/// superblock 0:52) and has one of its own (0:60).
const CT_MI: &str = "\
500 400 0:70 / / rw - overlay overlay rw
501 500 0:52 / /data rw - nfs 10.99.0.1:/export rw,vers=3,proto=tcp,port=2049,addr=10.99.0.1
502 500 0:60 / /srv/own rw - nfs4 10.99.0.1:/ rw,vers=4.1,proto=tcp,addr=10.99.0.1
";
const CT_MS: &str = "\
device 10.99.0.1:/export mounted on /data with fstype nfs statvers=1.1
\topts:\trw,vers=3
\txprt:\ttcp 790 1 4 0 0 12 12 0 12 0 2 0 0
device 10.99.0.1:/ mounted on /srv/own with fstype nfs4 statvers=1.1
\topts:\trw,vers=4.1
\txprt:\ttcp 0 0 2 0 0 12 12 0 12 0 2 0 0
";

fn read_fixture(name: &str) -> HostMounts {
    let root = fake_proc(name, &[(1, 10, 20, HOST_MI, HOST_MS), (300, 11, 21, CT_MI, CT_MS), (301, 11, 21, CT_MI, CT_MS)]);
    let sys = std::env::temp_dir().join(format!("nfs-trace-{name}-nosys-{}", std::process::id()));
    let h = read(&root, &sys).unwrap();
    std::fs::remove_dir_all(&root).unwrap();
    h
}

#[test]
fn one_superblock_seen_from_two_mount_namespaces_is_one_mount() {
    let h = read_fixture("ns-dedupe");
    let shared: Vec<&MountView> = h.views.iter().filter(|v| v.source == "10.99.0.1:/export").collect();
    assert_eq!(shared.len(), 1, "one superblock, one mount: {:?}", h.views);
    let v = shared[0];
    assert_eq!(v.mountpoint, "/mnt/shared", "the host's own mount point first");
    assert_eq!(v.mntns, Some(10));
    let places: Vec<(Option<NsIno>, &str, Option<u32>)> = v.seen_in.iter().map(|s| (s.mntns, s.mountpoint.as_str(), s.pid)).collect();
    assert_eq!(places, [(Some(10), "/mnt/shared", None), (Some(11), "/data", Some(300))]);
    assert_eq!(v.remembered_ports, [790]);
    assert_eq!(v.connects, 4, "counted once, not once per namespace");
    assert!(h.many_namespaces());
}

#[test]
fn a_container_mount_is_found_with_its_namespaces() {
    let h = read_fixture("ns-container");
    assert_eq!(h.views.len(), 2);
    let v = h.views.iter().find(|v| v.mountpoint == "/srv/own").expect("the container's own mount is listed");
    assert_eq!(v.mntns, Some(11));
    assert_eq!(v.netns, Some(21), "all its mount namespace's processes are in netns 21, not the host's");
    assert_eq!(v.vers.as_deref(), Some("4.1"));
    assert_eq!(v.seen_in.len(), 1);
    assert_eq!(v.seen_in[0].pid, Some(300), "a process whose /proc/PID/root reaches it");
    // The host's mount namespace has processes in one netns, its own: no
    // evidence (no sockets in a fixture), so not known.
    let shared = h.views.iter().find(|v| v.mountpoint == "/mnt/shared").unwrap();
    assert_eq!(shared.netns, None);
    assert_eq!(shared.live_ports, None, "not the host's sysfs view passed off as its own");
    assert_eq!(shared.live_from, "not visible");
}

#[test]
fn without_namespace_links_the_tree_reads_as_before() {
    // A copied /proc with only self/mountinfo: one namespace, not known.
    let root = std::env::temp_dir().join(format!("nfs-trace-ns-plain-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("self")).unwrap();
    std::fs::write(root.join("self/mountinfo"), HOST_MI).unwrap();
    std::fs::write(root.join("self/mountstats"), HOST_MS).unwrap();
    let h = read(&root, &root.join("nosys")).unwrap();
    std::fs::remove_dir_all(&root).unwrap();
    assert_eq!(h.views.len(), 1);
    assert_eq!((h.views[0].mntns, h.views[0].netns), (None, None));
    assert_eq!(h.views[0].live_ports, Some(vec![]), "no sysfs there: none live, as before");
    assert!(!h.many_namespaces());
}

fn ns_of(procs: &[(u32, NsIno, NsIno)]) -> Namespaces {
    let mut ns = Namespaces { own_mnt: Some(procs[0].1), own_net: Some(procs[0].2), ..Default::default() };
    for &(pid, m, n) in procs {
        ns.mnt.entry(m).or_default().push(pid);
        ns.net.entry(n).or_default().push(pid);
        ns.procs.insert(pid, (Some(m), Some(n)));
    }
    ns
}

fn by_socks(socks: Vec<TcpSock>) -> Evidence {
    Evidence { socks, ..Default::default() }
}

fn host_mount(mi: &str, ms: &str) -> Vec<Gathered> {
    dedupe(&[MntnsMounts { mntns: Some(10), pid: None, mounts: mountinfo::parse_mountinfo(mi), stats: mountstats::parse(ms) }])
}

/// `nsenter --net=X mount …` (the VM lab's way): the mount is in the host's
/// mount namespace, its client in X; only evidence can tell.
#[test]
fn a_mount_made_with_nsenter_net_is_placed_by_its_socket() {
    let ns = ns_of(&[(1, 10, 20), (50, 10, 22)]);
    let g = host_mount(HOST_MI, HOST_MS);
    let sock = |netns, lport| TcpSock::for_test("10.99.0.2".parse().unwrap(), lport, "10.99.0.1".parse().unwrap(), 2049, netns);
    assert_eq!(decide_netns(&g[0], &ns, &Evidence::default()), None, "host mount namespace spans two netns: no guess");
    assert_eq!(decide_netns(&g[0], &ns, &by_socks(vec![sock(22, 790)])), Some(22), "its remembered port's socket is in 22");
    assert_eq!(decide_netns(&g[0], &ns, &by_socks(vec![sock(20, 41000)])), None, "another port's socket is no evidence");
    assert_eq!(decide_netns(&g[0], &ns, &by_socks(vec![sock(20, 790), sock(22, 790)])), None, "the port in two netns: ambiguous");
}

/// A v4.1 mount remembers no port and, before 6.4, sysfs links no mount:
/// the one netns with connections to its server at all is where it is.
#[test]
fn a_mount_remembering_no_port_is_placed_where_the_only_connections_to_its_server_are() {
    let ns = ns_of(&[(1, 10, 20), (50, 10, 22)]);
    let mi = "37 25 0:53 / /mnt/v41 rw - nfs4 10.99.0.1:/ rw,vers=4.1,proto=tcp,addr=10.99.0.1\n";
    let ms = "device 10.99.0.1:/ mounted on /mnt/v41 with fstype nfs4 statvers=1.1\n\topts:\trw,vers=4.1\n\txprt:\ttcp 0 0 1 0 0 1 1 0 1 0 2 0 0\n";
    let g = host_mount(mi, ms);
    let sock = |netns, lport| TcpSock::for_test("10.99.0.2".parse().unwrap(), lport, "10.99.0.1".parse().unwrap(), 2049, netns);
    assert_eq!(decide_netns(&g[0], &ns, &by_socks(vec![sock(22, 41000)])), Some(22));
    assert_eq!(decide_netns(&g[0], &ns, &by_socks(vec![sock(22, 41000), sock(20, 41002)])), None, "two netns connect there: no guess");
    let other = TcpSock::for_test("10.99.0.2".parse().unwrap(), 41000, "10.99.0.9".parse().unwrap(), 2049, 22);
    assert_eq!(decide_netns(&g[0], &ns, &by_socks(vec![other])), None, "another server's connection is no evidence");
}

#[test]
fn a_mount_is_placed_by_the_sysfs_that_links_it() {
    let ns = ns_of(&[(1, 10, 20), (50, 10, 22)]);
    let mi = "37 25 0:53 / /mnt/v41 rw - nfs4 10.99.0.1:/ rw,vers=4.1,proto=tcp,addr=10.99.0.1\n";
    let ms = "device 10.99.0.1:/ mounted on /mnt/v41 with fstype nfs4 statvers=1.1\n\topts:\trw,vers=4.1\n\txprt:\ttcp 0 0 1 0 0 1 1 0 1 0 2 0 0\n";
    let g = host_mount(mi, ms);
    let x = SysXprt { switch: 3, proto: "tcp".into(), dstaddr: Some("10.99.0.1".into()), src_port: Some(870), dst_port: Some(2049), netns: Some(22), ..Default::default() };
    let mut sysfs = BTreeMap::new();
    sysfs.insert(20, SunrpcSysfs::Read { xprts: vec![], links: HashMap::new() });
    sysfs.insert(22, SunrpcSysfs::Read { xprts: vec![x], links: HashMap::from([("0:53".to_string(), vec![3])]) });
    let ev = Evidence { sysfs, ..Default::default() };
    assert_eq!(decide_netns(&g[0], &ns, &ev), Some(22));
    let v = place(&g, &ns, &ev, None);
    assert_eq!(v.len(), 1);
    assert_eq!((v[0].netns, v[0].live_ports.clone(), v[0].live_from), (Some(22), Some(vec![870]), "mount link"), "live ports from netns 22's own sysfs");
}

/// The CI failure of stop 18: the lab's client (netns 20 by `nsenter
/// --net`) and a container (22) both connect from port 726 to one server
/// (ports are per netns). Sockets and sysfs transports fit both; the
/// mount's sysfs link is in 20 only, and decides.
#[test]
fn two_netns_sharing_the_port_are_told_apart_by_the_mount_link() {
    let ns = ns_of(&[(1, 10, 19), (50, 10, 20), (60, 11, 22)]);
    let mi = "36 25 0:52 / /mnt/netns-client rw - nfs 10.99.0.1:/ rw,vers=3,proto=tcp,port=2049,addr=10.99.0.1\n";
    let ms = "device 10.99.0.1:/ mounted on /mnt/netns-client with fstype nfs statvers=1.1\n\topts:\trw,vers=3\n\txprt:\ttcp 726 1 3 0 0 12 12 0 12 0 2 0 0\n";
    let g = host_mount(mi, ms);
    let x = |netns, switch| SysXprt { switch, proto: "tcp".into(), dstaddr: Some("10.99.0.1".into()), src_port: Some(726), dst_port: Some(2049), netns: Some(netns), ..Default::default() };
    let sock = |netns, laddr: &str| TcpSock::for_test(laddr.parse().unwrap(), 726, "10.99.0.1".parse().unwrap(), 2049, netns);
    let mut ev = by_socks(vec![sock(20, "10.99.0.2"), sock(22, "10.99.1.2")]);
    ev.sysfs.insert(20, SunrpcSysfs::Read { xprts: vec![x(20, 1)], links: HashMap::from([("0:52".to_string(), vec![1])]) });
    ev.sysfs.insert(22, SunrpcSysfs::Read { xprts: vec![x(22, 2)], links: HashMap::from([("0:60".to_string(), vec![2])]) });
    assert_eq!(decide_netns(&g[0], &ns, &ev), Some(20), "the link, not the port both netns share");
    for s in ev.sysfs.values_mut() {
        if let SunrpcSysfs::Read { links, .. } = s {
            links.clear();
        }
    }
    assert_eq!(decide_netns(&g[0], &ns, &ev), None, "before 6.4, ports alone cannot tell: not known, no guess");
    ev.volumes.insert(20, BTreeSet::from(["0:52".to_string()]));
    ev.volumes.insert(22, BTreeSet::from(["0:60".to_string()]));
    assert_eq!(decide_netns(&g[0], &ns, &ev), Some(20), "nfsfs/volumes places it on every kernel");
    ev.volumes.insert(19, BTreeSet::new());
    ev.socks.push(sock(19, "10.0.2.15"));
    assert_eq!(decide_netns(&g[0], &ns, &ev), Some(20), "a third netns using the port changes nothing");
}

/// The cost of one full read of this host (what `watch` repeats every
/// second), quoted in `host::namespaces`.
#[test]
fn read_cost_on_this_host() {
    let n = 20;
    let t = std::time::Instant::now();
    for _ in 0..n {
        read(Path::new("/proc"), Path::new("/sys")).unwrap();
    }
    eprintln!("ns_mounts::read of this host: {:?} per read", t.elapsed() / n);
}
