//! NFS mounts of every mount namespace (containers' too), one per
//! superblock, each placed in the network namespace its client lives in,
//! with its live ports from that network namespace's sunrpc sysfs. What
//! cannot be looked at is said (`unseen`), never replaced by the tracer's
//! own view.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    io,
    path::Path,
};

use crate::host::{
    addr,
    mountinfo::{self, NfsMount},
    mountstats::{self, MountStats},
    namespaces::{self, Namespaces, NsIno},
    netns_sysfs::{self, SunrpcSysfs},
    nfsfs_volumes,
    nfsmounts::{self, MountView, SeenIn},
    proxy,
    sock_diag::{self, TcpSock},
};

/// Every NFS mount of the host and what could not be seen.
#[derive(Clone, Debug, Default)]
pub struct HostMounts {
    pub views: Vec<MountView>,
    /// What could not be looked at, one plain sentence each.
    pub unseen: Vec<String>,
    /// The tracer's own namespaces.
    pub own_mnt: Option<NsIno>,
    pub own_net: Option<NsIno>,
}

impl HostMounts {
    /// Whether the mounts involve a namespace other than the tracer's own,
    /// or more than one: only then do human lines name namespaces.
    pub fn many_namespaces(&self) -> bool {
        let mnt: BTreeSet<Option<NsIno>> = self.views.iter().flat_map(|v| v.seen_in.iter().map(|s| s.mntns)).collect();
        let net: BTreeSet<NsIno> = self.views.iter().filter_map(|v| v.netns).collect();
        mnt.len() > 1 || net.len() > 1 || mnt.iter().any(|&m| m != self.own_mnt) || net.iter().any(|&n| Some(n) != self.own_net)
    }
}

/// One mount namespace's NFS mounts, as one of its processes sees them.
#[derive(Clone, Debug)]
pub struct MntnsMounts {
    pub mntns: Option<NsIno>,
    /// The process read (None: `self`).
    pub pid: Option<u32>,
    pub mounts: Vec<NfsMount>,
    pub stats: Vec<MountStats>,
}

/// Reads mountinfo (and mountstats, `with_stats`) once per mount namespace: the tracer's
/// own first (through `self`; failing that is an error), then one process
/// of each other namespace (the next one where a process exits meanwhile).
pub fn read_mntns(proc_root: &Path, ns: &Namespaces, with_stats: bool, unseen: &mut Vec<String>) -> io::Result<Vec<MntnsMounts>> {
    let stats_of = |dir: &str, unseen: &mut Vec<String>| {
        if !with_stats {
            return Vec::new();
        }
        match std::fs::read_to_string(proc_root.join(dir).join("mountstats")) {
            Ok(t) => mountstats::parse(&t),
            Err(e) => {
                if e.kind() == io::ErrorKind::PermissionDenied {
                    unseen.push(format!("{dir}/mountstats cannot be read ({e}): remembered ports and connect counts of its mounts are not shown"));
                }
                Vec::new()
            }
        }
    };
    let own = mountinfo::parse_mountinfo(&std::fs::read_to_string(proc_root.join("self/mountinfo"))?);
    let mut out = vec![MntnsMounts { mntns: ns.own_mnt, pid: None, stats: if own.is_empty() { Vec::new() } else { stats_of("self", unseen) }, mounts: own }];
    for (&mnt, pids) in &ns.mnt {
        if Some(mnt) == ns.own_mnt {
            continue;
        }
        for &pid in pids {
            match std::fs::read_to_string(proc_root.join(pid.to_string()).join("mountinfo")) {
                Ok(text) => {
                    let mounts = mountinfo::parse_mountinfo(&text);
                    let stats = if mounts.is_empty() { Vec::new() } else { stats_of(&pid.to_string(), unseen) };
                    out.push(MntnsMounts { mntns: Some(mnt), pid: Some(pid), mounts, stats });
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                    unseen.push(format!("the mounts of mount namespace {mnt} cannot be read ({pid}/mountinfo: {e})"));
                    break;
                }
                // Gone meanwhile: another process of that namespace.
                Err(_) => continue,
            }
        }
    }
    if ns.unreadable > 0 {
        // SAFETY: geteuid cannot fail.
        let why = if unsafe { libc::geteuid() } == 0 { "permission denied" } else { "permission denied: run as root" };
        unseen.push(format!("the namespaces of {} process(es) cannot be read ({why}): mounts only they see are not shown", ns.unreadable));
    }
    Ok(out)
}

/// One superblock, however many mount namespaces see it.
#[derive(Clone, Debug)]
pub struct Gathered {
    /// As seen in its first place (the tracer's own where it is seen there).
    pub mount: NfsMount,
    pub stats: Option<MountStats>,
    pub seen_in: Vec<SeenIn>,
}

impl Gathered {
    fn mntns(&self) -> Option<NsIno> {
        self.seen_in[0].mntns
    }

    fn remembered(&self) -> Vec<u16> {
        self.stats.iter().flat_map(|s| s.xprts.iter().map(|x| x.srcport)).filter(|&p| p != 0).collect()
    }
}

/// One mount per superblock: the same `maj:min` and server seen from
/// several mount namespaces (or bind-mounted twice) is one mount with the
/// list of places it is seen in, the first namespace read (the tracer's
/// own) first.
pub fn dedupe(per: &[MntnsMounts]) -> Vec<Gathered> {
    let mut out: Vec<Gathered> = Vec::new();
    for ns in per {
        for m in &ns.mounts {
            let seen = SeenIn { mntns: ns.mntns, mountpoint: m.mountpoint.clone(), pid: ns.pid };
            match out.iter_mut().find(|g| g.mount.dev == m.dev && g.mount.server == m.server) {
                Some(g) => g.seen_in.push(seen),
                None => out.push(Gathered {
                    mount: m.clone(),
                    stats: ns.stats.iter().find(|s| s.mountpoint == m.mountpoint).cloned(),
                    seen_in: vec![seen],
                }),
            }
        }
    }
    out
}

/// What places a mount in a network namespace, per netns: the NFS
/// superblocks its clients hold (`nfsfs/volumes`), its sunrpc sysfs, and
/// the sockets to NFS servers' ports in every netns.
#[derive(Clone, Debug, Default)]
pub struct Evidence {
    pub volumes: BTreeMap<NsIno, BTreeSet<String>>,
    pub sysfs: BTreeMap<NsIno, SunrpcSysfs>,
    pub socks: Vec<TcpSock>,
}

/// The network namespace a mount's NFS client lives in, by evidence, each
/// rule deciding only where exactly one netns fits it:
///
/// 1. the netns whose `nfsfs/volumes` lists the mount's superblock (every
///    kernel; needs a way into that netns);
/// 2. the netns whose sysfs links the mount (`/sys/fs/nfs/<maj:min>`, 6.4+);
/// 3. a socket in netns N (sock_diag there) to the mount's server and port
///    from one of the ports it remembers (mountstats);
/// 4. the sunrpc sysfs of N listing a transport to its server and port from
///    a port it remembers;
/// 4b. for a mount that remembers no port, the one netns with any
///    connection to its server and port (v4.1+);
/// 5. if all processes of its mount namespace are in one netns that
///    is not the tracer's own (a container), that one;
/// 6. else None: not known.
///
/// Ports alone (3, 4) cannot tell two netns apart whose transports share a
/// port, which is why the kernel's own records come first. A mount's netns
/// is not simply its mount namespace's: `nsenter --net=X mount …` leaves
/// the mount in the host's mount namespace with its client in X (and rule
/// 5 cannot decide for the host's mount namespace, whose processes are in
/// many netns).
pub fn decide_netns(g: &Gathered, ns: &Namespaces, ev: &Evidence) -> Option<NsIno> {
    let server = addr::parse_ip(&g.mount.server);
    let port = g.mount.port();
    let remembered = g.remembered();
    let only = |mut v: Vec<NsIno>| {
        v.sort_unstable();
        v.dedup();
        (v.len() == 1).then(|| v[0])
    };
    let (sysfs, socks) = (&ev.sysfs, ev.socks.as_slice());
    // The kernel's own records of which netns holds the superblock come
    // first: ports are per netns, so two containers' transports to one
    // server can share a port (the VM lab's `netns` scenario pins exactly
    // that), and then only these tell the mounts apart.
    let by_volume = ev.volumes.iter().filter(|(_, devs)| devs.contains(&g.mount.dev)).map(|(&n, _)| n).collect();
    if let Some(n) = only(by_volume) {
        return Some(n);
    }
    let by_link = sysfs
        .iter()
        .filter(|(_, s)| matches!(s, SunrpcSysfs::Read { links, .. } if links.contains_key(&g.mount.dev)))
        .map(|(&n, _)| n)
        .collect();
    if let Some(n) = only(by_link) {
        return Some(n);
    }
    let by_socket = socks
        .iter()
        .filter(|s| server == Some(s.raddr) && s.rport == port && remembered.contains(&s.lport))
        .map(|s| s.netns)
        .collect();
    if let Some(n) = only(by_socket) {
        return Some(n);
    }
    let by_sysfs = sysfs
        .iter()
        .filter(|(_, s)| match s {
            SunrpcSysfs::Read { xprts, .. } => xprts.iter().any(|x| {
                x.proto == "tcp"
                    && x.dst_port.unwrap_or(port) == port
                    && x.dstaddr.as_deref().and_then(addr::parse_ip) == server
                    && x.src_port.is_some_and(|p| remembered.contains(&p))
            }),
            _ => false,
        })
        .map(|(&n, _)| n)
        .collect();
    if let Some(n) = only(by_sysfs) {
        return Some(n);
    }
    // A client's transports connect to the server's port; only one netns
    // holding such connections at all is where they are (a v4.1 mount
    // remembers no port, and before 6.4 sysfs links no mount).
    if remembered.is_empty() {
        let by_any_socket = socks.iter().filter(|s| server == Some(s.raddr) && s.rport == port).map(|s| s.netns).collect();
        if let Some(n) = only(by_any_socket) {
            return Some(n);
        }
    }
    let mnt = g.mntns()?;
    match ns.nets_of_mnt(mnt).as_slice() {
        [one] if Some(*one) != ns.own_net => Some(*one),
        _ => None,
    }
}

/// Places each mount in its network namespace and joins it with that
/// namespace's sysfs. A mount whose netns is not known gets its live ports
/// only where the host has a single network namespace (there is nowhere
/// else its transports could be); elsewhere they are "not visible".
///
/// `single`: the only network namespace there is (and its sysfs), where the
/// host has one (or a --proc-root tree names none): mounts of unknown netns
/// are joined with it, beside the mounts placed there, as one client.
pub fn place(gathered: &[Gathered], ns: &Namespaces, ev: &Evidence, single: Option<(Option<NsIno>, &SunrpcSysfs)>) -> Vec<MountView> {
    let netns: Vec<Option<NsIno>> = gathered.iter().map(|g| decide_netns(g, ns, ev)).collect();
    let mut groups: BTreeMap<Option<NsIno>, Vec<usize>> = BTreeMap::new();
    for (i, n) in netns.iter().enumerate() {
        groups.entry(n.or(single.and_then(|s| s.0))).or_default().push(i);
    }
    let mut views: Vec<Option<MountView>> = vec![None; gathered.len()];
    let none = (Vec::new(), HashMap::new());
    for (n, idx) in groups {
        let paired: Vec<(NfsMount, Option<MountStats>)> = idx.iter().map(|&i| (gathered[i].mount.clone(), gathered[i].stats.clone())).collect();
        let tree = match n {
            Some(n) => ev.sysfs.get(&n),
            None => single.map(|s| s.1),
        };
        let (sys, links, visible) = match tree {
            Some(SunrpcSysfs::Read { xprts, links }) => (xprts, links, true),
            Some(SunrpcSysfs::NotLoaded) => (&none.0, &none.1, true),
            Some(SunrpcSysfs::Unseen(_)) | None => (&none.0, &none.1, false),
        };
        for (mut v, &i) in nfsmounts::join_paired(&paired, sys, links).into_iter().zip(&idx) {
            if !visible {
                v.live_ports = None;
                v.live_from = "not visible";
            }
            v.netns = netns[i];
            v.mntns = gathered[i].mntns();
            v.seen_in = gathered[i].seen_in.clone();
            v.pods = crate::host::kubelet::pods_of(&v);
            views[i] = Some(v);
        }
    }
    views.into_iter().flatten().collect()
}

/// The NFS mounts of every mount namespace, one per superblock, as first
/// seen (the tracer's own view first); mount namespaces that cannot be
/// read are skipped. Cheap: no sysfs, no sockets.
pub fn nfs_mounts(proc_root: &Path) -> Vec<NfsMount> {
    let ns = Namespaces::scan_mnt(proc_root);
    // The list alone, without mountstats (every operation's counters of
    // every NFS mount): nothing the list is used for needs them, and with
    // them this once-a-second read took ~12 ms of the bench's TCG guest's
    // vCPU per call.
    let per = read_mntns(proc_root, &ns, false, &mut Vec::new()).unwrap_or_default();
    dedupe(&per).into_iter().map(|g| g.mount).collect()
}

/// What one network namespace showed to the thread that entered it.
struct OtherNetns {
    socks: anyhow::Result<Vec<TcpSock>>,
    /// Its sunrpc sysfs, when it was to be read there.
    sysfs: Option<SunrpcSysfs>,
    /// Its nfsfs volumes (live /proc only).
    volumes: Option<BTreeSet<String>>,
}

/// Everything: namespaces, every mount namespace's mounts, the sockets and
/// sunrpc sysfs of every network namespace (the latter only with NFS
/// mounts, and only where sunrpc is loaded).
pub fn read(proc_root: &Path, sys_root: &Path) -> io::Result<HostMounts> {
    let ns = Namespaces::scan(proc_root);
    let mut unseen = Vec::new();
    let per = read_mntns(proc_root, &ns, true, &mut unseen)?;
    let gathered = dedupe(&per);
    let mut host = HostMounts { own_mnt: ns.own_mnt, own_net: ns.own_net, ..Default::default() };
    if gathered.is_empty() {
        host.unseen = unseen;
        return Ok(host);
    }
    let paths = namespaces::netns_paths(proc_root);
    let devs: Vec<String> = gathered.iter().map(|g| g.mount.dev.clone()).collect();
    let mut sysfs = BTreeMap::new();
    let own_tree = netns_sysfs::read_tree(sys_root, &devs, ns.own_net);
    let loaded = own_tree != SunrpcSysfs::NotLoaded;
    // Without namespace links (a --proc-root tree) the tree is nobody's
    // evidence, only the one place there is.
    if let Some(own) = ns.own_net {
        sysfs.insert(own, own_tree.clone());
    }
    let mut ports: Vec<u16> = gathered.iter().map(|g| g.mount.port()).collect();
    ports.sort_unstable();
    ports.dedup();
    // What each other netns shows (sockets; sunrpc sysfs and nfsfs volumes
    // where they can be read), from one thread that entered it: a thread
    // and a setns per netns rather than one for each of the three.
    let live = proc_root == Path::new("/proc");
    let want_sysfs = loaded && sys_root == Path::new("/sys");
    let here = crate::host::netns_inode::own().map(|n| n.0);
    let (mut socks, mut sock_unseen, mut sys_unseen) = (Vec::new(), Vec::new(), Vec::new());
    let mut volumes = BTreeMap::new();
    if let (Some(own), Some(v)) = (ns.own_net, nfsfs_volumes::read_own(proc_root)) {
        volumes.insert(own, v);
    }
    for p in &paths {
        let other = Some(p.ino) != ns.own_net;
        let got = if here == Some(p.ino) {
            // Our own is read without entering it (setns needs root, even there).
            Ok(OtherNetns { socks: sock_diag::sockets_here(&ports), sysfs: None, volumes: None })
        } else {
            let (ports, devs, ino) = (ports.clone(), devs.clone(), p.ino);
            namespaces::in_netns(&p.path, move || {
                Ok(OtherNetns {
                    socks: sock_diag::sockets_here(&ports),
                    volumes: (live && other).then(nfsfs_volumes::read_here).flatten(),
                    // Last: it gives the thread a mount namespace of its own.
                    sysfs: (want_sysfs && other).then(|| netns_sysfs::read_here(ino, &devs)),
                })
            })
        };
        let got = got.unwrap_or_else(|e| {
            let why = format!("{e:#}");
            OtherNetns { socks: Err(anyhow::anyhow!("{why}")), volumes: None, sysfs: Some(SunrpcSysfs::Unseen(why)) }
        });
        match got.socks {
            Ok(v) => socks.extend(v),
            Err(e) => sock_unseen.push((p.ino, format!("{e:#}"))),
        }
        if let Some(v) = got.volumes {
            volumes.insert(p.ino, v);
        }
        if !other {
            continue;
        }
        let s = if !loaded {
            SunrpcSysfs::NotLoaded
        } else if sys_root != Path::new("/sys") {
            SunrpcSysfs::Unseen(format!("--sys-root {} is the tracer's own namespace's", sys_root.display()))
        } else {
            got.sysfs.unwrap_or_else(|| SunrpcSysfs::Unseen("not read".into()))
        };
        if let SunrpcSysfs::Unseen(why) = &s {
            sys_unseen.push(format!("{}: {why}", p.ino));
        }
        sysfs.insert(p.ino, s);
    }
    if let Some(first) = sys_unseen.first() {
        unseen.push(format!(
            "the sunrpc sysfs of {} network namespace(s) cannot be read (netns {first}): live ports of transports there are not shown",
            sys_unseen.len()
        ));
    }
    if let Some((n, why)) = sock_unseen.first() {
        unseen.push(format!(
            "the sockets of {} network namespace(s) cannot be listed (netns {n}: {why}): mounts there are placed by sysfs and their mount namespace only",
            sock_unseen.len()
        ));
    }
    // With one netns on the host (or none named: a --proc-root tree without
    // namespace links), there is only one place a client can be.
    let single = (paths.len() <= 1 && ns.net.len() <= 1).then_some((ns.own_net, &own_tree));
    host.views = place(&gathered, &ns, &Evidence { volumes, sysfs, socks }, single);
    if live {
        follow_proxies(proc_root, &ns, &mut host.views, &mut unseen);
    }
    host.unseen = unseen;
    Ok(host)
}

/// Follows each loopback mount to its local proxy (host/proxy.rs): one
/// socket dump per network namespace that has such mounts.
fn follow_proxies(proc_root: &Path, ns: &Namespaces, views: &mut [MountView], unseen: &mut Vec<String>) {
    let mut dumps: BTreeMap<Option<u32>, Result<Vec<TcpSock>, String>> = BTreeMap::new();
    for v in views.iter_mut().filter(|v| v.loopback()) {
        let Some(addr) = v.server_ip() else { continue };
        let net = v.netns.or(ns.own_net);
        let socks = dumps.entry(net).or_insert_with(|| match net {
            Some(n) => sock_diag::all_in(n).map_err(|e| format!("{e:#}")),
            None => Err("its network namespace is not known".into()),
        });
        match socks {
            Ok(socks) => {
                // The processes of that namespace may hold the listener;
                // every process where namespaces are not known.
                let pids: Vec<u32> = match net {
                    Some(n) if !ns.net.is_empty() => ns.net.get(&n).cloned().unwrap_or_default(),
                    _ => ns.procs.keys().copied().collect(),
                };
                v.proxy = Some(proxy::follow(proc_root, socks, addr, v.port, &pids));
            }
            Err(why) => unseen.push(format!("the local proxy of {} cannot be followed: {why}", v.mountpoint)),
        }
    }
}

#[cfg(test)]
mod tests;
