//! NFS mounts joined from mountinfo, mountstats and sysfs: what each mount
//! is (server, port, version, resvport, nconnect) and its transports'
//! remembered and live source ports. Used by `check`, and by `watch`
//! (model/attribution.rs credits transports to them on evidence).
use std::{collections::HashMap, net::IpAddr, path::Path};

use serde::{Deserialize, Serialize};

use crate::{
    host::addr,
    host::mountinfo::NfsMount,
    host::mountstats::MountStats,
    host::sunrpc_sysfs::SysXprt,
};

/// A mount with everything the host says about it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MountView {
    pub mountpoint: String,
    /// `server:/path` as mounted (the kernel's log names the server so).
    pub source: String,
    /// The server's address (`addr=`), else the host part of the source.
    pub server: String,
    pub port: u16,
    /// "3", "4.0", "4.1", "4.2".
    pub vers: Option<String>,
    /// `noresvport` given: the client binds no reserved port.
    pub noresvport: bool,
    pub nconnect: u32,
    /// Remembered source port of each transport (mountstats; 0 = none).
    pub remembered_ports: Vec<u16>,
    /// Live source ports of this mount's own connected transports (sysfs);
    /// None where they cannot be told apart from other mounts' (see
    /// [`join`]).
    pub live_ports: Option<Vec<u16>>,
    /// How `live_ports` were joined: "mount link" (the kernel's
    /// /sys/fs/nfs links, 6.4+), "ports" (remembered ports and the other
    /// mounts to that server), "unknown".
    #[serde(deserialize_with = "live_from_de")]
    pub live_from: Name,
    pub connects: u64,
    /// Why a reconnect will come from the same port, if it will.
    pub reuse: Option<String>,
    /// Transports (`rpc_xprt` addresses) credited to this mount by evidence
    /// gathered while watching, and that evidence (model/attribution.rs).
    #[serde(skip)]
    pub xprts: Vec<(u64, &'static str)>,
    /// The mount namespace (inode) `mountpoint` is in: the tracer's own
    /// where the mount is seen there. None: not known (a --proc-root tree
    /// without namespace links).
    pub mntns: Option<u32>,
    /// The network namespace (inode) the NFS client lives in: where its
    /// transports' sockets are. None: not known (see `host::ns_mounts`).
    pub netns: Option<u32>,
    /// Every mount namespace this superblock is seen in, `mountpoint`'s first.
    pub seen_in: Vec<SeenIn>,
    /// The Kubernetes pods whose volume this is, from where kubelet mounted
    /// it (host/kubelet.rs); empty for other mounts.
    pub pods: Vec<crate::host::kubelet::PodVolume>,
    /// For a mount of a loopback address: the local proxy that carries it
    /// to the server (host/proxy.rs); absent for other mounts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<crate::host::proxy::Proxy>,
}

/// A fixed name. An alias, not `&'static str` written out: serde's derive
/// borrows a field written `&str` from the input (the whole value could then
/// only be read from a `'static` string); with the alias it takes the
/// field's `deserialize_with`, which maps the text back to one of ours.
pub type Name = &'static str;

/// How live ports were joined, as recorded, back to ours (`report` reads
/// the views `watch --events` wrote).
fn live_from_de<'de, D: serde::Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    let s = String::deserialize(d)?;
    Ok(["mount link", "ports", "not visible"].into_iter().find(|n| *n == s).unwrap_or("unknown"))
}

/// One place a mount is seen: a mount point in a mount namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenIn {
    pub mntns: Option<u32>,
    pub mountpoint: String,
    /// A process in that mount namespace (its `/proc/PID/root` reaches the
    /// mount point); None for the tracer's own.
    pub pid: Option<u32>,
}

impl MountView {
    /// A mount of `server:/` on port 2049 for unit tests.
    #[cfg(test)]
    pub fn for_test(mountpoint: &str, server: &str, vers: &str, noresvport: bool, remembered: u16) -> MountView {
        MountView {
            mountpoint: mountpoint.into(),
            source: format!("{server}:/"),
            server: server.into(),
            port: 2049,
            vers: Some(vers.into()),
            noresvport,
            nconnect: 1,
            remembered_ports: vec![remembered],
            live_ports: Some(vec![]),
            live_from: "ports",
            connects: 0,
            reuse: None,
            xprts: Vec::new(),
            mntns: None,
            netns: None,
            seen_in: vec![SeenIn { mntns: None, mountpoint: mountpoint.into(), pid: None }],
            pods: Vec::new(),
            proxy: None,
        }
    }

    /// The host part of `source` (a name or an address, IPv6 unbracketed).
    pub fn source_host(&self) -> &str {
        let s = self.source.strip_prefix('[').map_or(self.source.as_str(), |r| r.split(']').next().unwrap_or(r));
        s.rsplit_once(":/").map_or(s, |(h, _)| h)
    }

    /// The server's address as the kernel programs report it (zone dropped,
    /// IPv4-mapped unmapped); None for a name.
    pub fn server_ip(&self) -> Option<IpAddr> {
        addr::parse_ip(&self.server)
    }

    pub fn reuse_prone(&self) -> bool {
        self.reuse.is_some()
    }

    /// A mount of a loopback address: its own flows cross no middlebox
    /// (a local proxy's upstream leg may; see `proxy`).
    pub fn loopback(&self) -> bool {
        self.server_ip().is_some_and(crate::host::proxy::is_loopback)
    }
}

fn vers_of(m: &NfsMount, st: Option<&MountStats>) -> Option<String> {
    // mountstats' opts is the client's view (vers=4.1 even when mounted as 4).
    st.and_then(|s| s.opt("vers")).map(|v| if v == "4" { "4.0".to_string() } else { v.to_string() }).or_else(|| m.vers.clone())
}

/// Which sysfs transports are each mount's own. Where the kernel links a
/// mount to its transport switch (`links`, by `maj:min`), exactly those.
/// Elsewhere by ports: a transport to the mount's server and port whose live
/// port is one the mount remembers is its; one another mount remembers is
/// that mount's; the rest belong to the one mount there that remembers no
/// port, and are unknown (None) when several such mounts share the server.
fn own_live_ports(i: usize, mounts: &[NfsMount], remembered: &[Vec<u16>], sys: &[SysXprt], links: &HashMap<String, Vec<u32>>) -> (Option<Vec<u16>>, &'static str) {
    let m = &mounts[i];
    let from = if links.contains_key(&m.dev) { "mount link" } else { "ports" };
    let tcp = |x: &&SysXprt| x.proto == "tcp";
    let mut live: Vec<u16> = if let Some(switches) = links.get(&m.dev) {
        sys.iter().filter(tcp).filter(|x| switches.contains(&x.switch)).filter_map(|x| x.src_port).collect()
    } else {
        let (ip, port) = (addr::parse_ip(&m.server), m.port());
        let same = |j: usize| addr::parse_ip(&mounts[j].server) == ip && mounts[j].port() == port && !links.contains_key(&mounts[j].dev);
        let to_server: Vec<u16> = sys
            .iter()
            .filter(tcp)
            .filter(|x| x.dst_port.unwrap_or(port) == port && x.dstaddr.as_deref().and_then(addr::parse_ip) == ip && ip.is_some())
            .filter_map(|x| x.src_port)
            .collect();
        let kept = |j: usize| remembered[j].iter().copied().filter(|&p| p != 0).collect::<Vec<u16>>();
        let mine = kept(i);
        if !mine.is_empty() {
            to_server.into_iter().filter(|p| mine.contains(p)).collect()
        } else {
            let peers: Vec<usize> = (0..mounts.len()).filter(|&j| j != i && same(j)).collect();
            if peers.iter().any(|&j| kept(j).is_empty()) {
                return (None, "unknown");
            }
            let theirs: Vec<u16> = peers.iter().flat_map(|&j| kept(j)).collect();
            to_server.into_iter().filter(|p| !theirs.contains(p)).collect()
        }
    };
    live.sort_unstable();
    live.dedup();
    (Some(live), from)
}

/// Joins the sources of one mount namespace. Mounts are matched to
/// mountstats entries by mount point; sysfs transports as [`own_live_ports`] says.
pub fn join(mounts: &[NfsMount], stats: &[MountStats], sys: &[SysXprt], links: &HashMap<String, Vec<u32>>) -> Vec<MountView> {
    let paired: Vec<(NfsMount, Option<MountStats>)> =
        mounts.iter().map(|m| (m.clone(), stats.iter().find(|s| s.mountpoint == m.mountpoint).cloned())).collect();
    join_paired(&paired, sys, links)
}

/// Joins mounts already paired with their mountstats entry (those of one
/// network namespace, whatever mount namespaces they are seen in) with the
/// sysfs transports of that network namespace.
pub fn join_paired(paired: &[(NfsMount, Option<MountStats>)], sys: &[SysXprt], links: &HashMap<String, Vec<u32>>) -> Vec<MountView> {
    let mounts: Vec<NfsMount> = paired.iter().map(|(m, _)| m.clone()).collect();
    let remembered: Vec<Vec<u16>> =
        paired.iter().map(|(_, st)| st.as_ref().map(|s| s.xprts.iter().map(|x| x.srcport).collect()).unwrap_or_default()).collect();
    mounts
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let st = paired[i].1.as_ref();
            let (live, live_from) = own_live_ports(i, &mounts, &remembered, sys, links);
            let remembered = remembered[i].clone();
            let nconnect = st
                .and_then(|s| s.opt("nconnect"))
                .or_else(|| m.options.split(',').find_map(|o| o.strip_prefix("nconnect=")))
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            let kept: Vec<String> = remembered.iter().filter(|&&p| p != 0).map(u16::to_string).collect();
            // The kernel remembers a source port only for transports that
            // rebind it on reconnect (xprt->reuseport): that is the fact.
            let reuse = (!kept.is_empty()).then(|| {
                format!("the kernel remembers source port {} and rebinds it on reconnect", kept.join(","))
            });
            MountView {
                mountpoint: m.mountpoint.clone(),
                source: m.source.clone(),
                server: m.server.clone(),
                port: m.port(),
                vers: vers_of(m, st),
                noresvport: m.has_flag("noresvport") || st.is_some_and(|s| s.has_flag("noresvport")),
                nconnect,
                remembered_ports: remembered,
                live_ports: live,
                live_from,
                connects: st.map(|s| s.xprts.iter().map(|x| x.connect_count).sum()).unwrap_or(0),
                reuse,
                xprts: Vec::new(),
                mntns: None,
                netns: None,
                seen_in: vec![SeenIn { mntns: None, mountpoint: m.mountpoint.clone(), pid: None }],
                pods: crate::host::kubelet::pod_volume(&m.mountpoint).into_iter().collect(),
                proxy: None,
            }
        })
        .collect()
}

/// Reads and joins everything from a proc and a sys tree: the mounts of
/// every mount namespace (see `host::ns_mounts`, which also says what
/// could not be seen).
pub fn read(proc_root: &Path, sys_root: &Path) -> std::io::Result<Vec<MountView>> {
    crate::host::ns_mounts::read(proc_root, sys_root).map(|h| h.views)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::attribution::{Transport, attribute};
    use crate::host::{mountinfo, mountstats};

    const MOUNTINFO: &str = "\
36 25 0:32 / /mnt/v40 rw - nfs4 10.99.0.1:/ rw,vers=4.0,proto=tcp,port=0,addr=10.99.0.1
37 25 0:33 / /mnt/v41 rw - nfs4 10.99.0.1:/ rw,vers=4.1,proto=tcp,noresvport,nconnect=2,addr=10.99.0.1
38 25 0:34 / /mnt/v3 rw - nfs 10.99.0.1:/export rw,vers=3,proto=tcp,port=2049,addr=10.99.0.1
";
    const MOUNTSTATS: &str = "\
device 10.99.0.1:/ mounted on /mnt/v40 with fstype nfs4 statvers=1.1
\topts:\trw,vers=4.0,proto=tcp
\txprt:\ttcp 723 0 3 0 0 12 12 0 12 0 2 0 0
device 10.99.0.1:/ mounted on /mnt/v41 with fstype nfs4 statvers=1.1
\topts:\trw,vers=4.1,noresvport,nconnect=2
\txprt:\ttcp 0 0 2 0 0 12 12 0 12 0 2 0 0
\txprt:\ttcp 0 0 1 0 0 12 12 0 12 0 2 0 0
device 10.99.0.1:/export mounted on /mnt/v3 with fstype nfs statvers=1.1
\topts:\trw,vers=3
\txprt:\ttcp 790 1 1 0 0 12 12 0 12 0 2 0 0
";

    fn views() -> Vec<MountView> {
        let x = |dst: &str, src| SysXprt { proto: "tcp".into(), dstaddr: Some(dst.into()), src_port: Some(src), dst_port: Some(2049), ..Default::default() };
        let sys = vec![x("10.99.0.1", 723), x("10.99.0.9", 999), x("10.99.0.1", 41234)];
        join(&mountinfo::parse_mountinfo(MOUNTINFO), &mountstats::parse(MOUNTSTATS), &sys, &HashMap::new())
    }

    #[test]
    fn joins_and_flags_remembered_ports() {
        let v = views();
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].vers.as_deref(), Some("4.0"));
        assert!(v[0].reuse_prone());
        assert_eq!(v[0].remembered_ports, vec![723]);
        assert_eq!(v[0].connects, 3);
        assert!(!v[1].reuse_prone(), "4.1 remembers no port");
        assert!(v[1].noresvport);
        assert_eq!(v[1].nconnect, 2);
        assert_eq!(v[1].connects, 3);
        assert!(v[2].reuse_prone());
        // Without the kernel's mount links, by ports: the one it remembers
        // is /mnt/v40's, the other one to that server the only mount that
        // remembers none (/mnt/v41), /mnt/v3's remembered 790 is not up.
        let live: Vec<Option<Vec<u16>>> = v.iter().map(|m| m.live_ports.clone()).collect();
        assert_eq!(live, [Some(vec![723]), Some(vec![41234]), Some(vec![])], "each mount's own transports, not every one to the server");
    }

    #[test]
    fn live_ports_unknown_when_mounts_cannot_be_told_apart() {
        let mi = "36 25 0:32 / /mnt/a rw - nfs4 10.99.0.1:/ rw,vers=4.1,addr=10.99.0.1\n\
37 25 0:33 / /mnt/b rw - nfs4 10.99.0.1:/ rw,vers=4.2,addr=10.99.0.1\n";
        let sys = vec![SysXprt { proto: "tcp".into(), dstaddr: Some("10.99.0.1".into()), src_port: Some(800), dst_port: Some(2049), ..Default::default() }];
        let v = join(&mountinfo::parse_mountinfo(mi), &[], &sys, &HashMap::new());
        assert_eq!(v[0].live_ports, None, "two mounts remembering no port: whose is 800 is not known");
        assert_eq!(v[1].live_ports, None);
        assert_eq!(v[1].live_from, "unknown");
    }

    #[test]
    fn mapped_and_zone_scoped_addresses_join_like_the_kernel_side() {
        let mi = "40 25 0:40 / /mnt/mapped rw - nfs 10.99.0.5:/x rw,vers=3,proto=tcp6,port=2049,addr=::ffff:10.99.0.5\n\
41 25 0:41 / /mnt/ll rw - nfs4 [fe80::1%eth0]:/ rw,vers=4.1,proto=tcp6,addr=fe80::1%eth0\n";
        let x = |dst: &str, src| SysXprt { proto: "tcp".into(), dstaddr: Some(dst.into()), src_port: Some(src), dst_port: Some(2049), ..Default::default() };
        // sysfs writes what the transport holds: the mapped form, and the
        // scope as a number.
        let sys = vec![x("::ffff:10.99.0.5", 812), x("fe80::1%2", 901)];
        let v = join(&mountinfo::parse_mountinfo(mi), &[], &sys, &HashMap::new());
        assert_eq!(v[0].server, "10.99.0.5", "shown unmapped");
        assert_eq!(v[0].server_ip(), Some("10.99.0.5".parse().unwrap()));
        assert_eq!(v[0].live_ports, Some(vec![812]));
        assert_eq!(v[1].server, "fe80::1%eth0", "the zone as given");
        assert_eq!(v[1].server_ip(), Some("fe80::1".parse().unwrap()));
        assert_eq!(v[1].live_ports, Some(vec![901]));
        // The kernel programs report bare, unmapped addresses.
        // A v3 transport remembering 812 is the mapped mount's.
        let mut v = v;
        v[0].remembered_ports = vec![812];
        v[1].remembered_ports = vec![901];
        let t = |ip: &str, port| Transport { xprt: 0, raddr: ip.parse().unwrap(), dport: 2049, netns: crate::flow::Netns::UNKNOWN, srcport: Some(port), live: Some(port) };
        let names = |t: &Transport| attribute(&v, t).0.iter().map(|m| m.mountpoint.clone()).collect::<Vec<_>>();
        assert_eq!(names(&t("10.99.0.5", 812)), ["/mnt/mapped"]);
        assert_eq!(names(&t("fe80::1", 901)), ["/mnt/ll"]);
    }

    /// A fake /proc and /sys with the kernel's mount → RPC client → switch
    /// links (6.4+): two mounts of one server that remember no port, each
    /// with its own transports.
    #[test]
    fn live_ports_follow_the_mounts_own_switch() {
        use std::os::unix::fs::symlink;
        let root = std::env::temp_dir().join(format!("nfs-trace-own-xprts-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let w = |p: &str, text: &str| {
            let p = root.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        w("proc/self/mountinfo", "36 25 0:32 / /mnt/a rw - nfs4 10.99.0.1:/ rw,vers=4.1,addr=10.99.0.1\n\
37 25 0:33 / /mnt/b rw - nfs4 10.99.0.1:/ rw,vers=4.2,nconnect=2,addr=10.99.0.1\n");
        w("proc/self/mountstats", "device 10.99.0.1:/ mounted on /mnt/a with fstype nfs4 statvers=1.1\n\topts:\trw,vers=4.1\n\txprt:\ttcp 0 0 1 0 0 1 1 0 1 0 2 0 0\n\
device 10.99.0.1:/ mounted on /mnt/b with fstype nfs4 statvers=1.1\n\topts:\trw,vers=4.2\n\txprt:\ttcp 0 0 1 0 0 1 1 0 1 0 2 0 0\n\txprt:\ttcp 0 0 1 0 0 1 1 0 1 0 2 0 0\n");
        for (dir, port) in [("switch-1/xprt-1-tcp", 723), ("switch-2/xprt-2-tcp", 41234), ("switch-2/xprt-3-tcp", 41236)] {
            w(&format!("sys/kernel/sunrpc/xprt-switches/{dir}/xprt_info"), &format!("main_xprt=1\nsrc_port={port}\ndst_port=2049\n"));
            w(&format!("sys/kernel/sunrpc/xprt-switches/{dir}/dstaddr"), "10.99.0.1\n");
        }
        let sys = root.join("sys");
        for (clnt, sw) in [("clnt-0", 1), ("clnt-3", 2), ("clnt-4", 2)] {
            std::fs::create_dir_all(sys.join("kernel/sunrpc/rpc-clients").join(clnt)).unwrap();
            symlink(format!("../../xprt-switches/switch-{sw}"), sys.join("kernel/sunrpc/rpc-clients").join(clnt).join("switch")).unwrap();
        }
        for (dev, link, clnt) in [("0:32", "nfs_client", "clnt-0"), ("0:33", "nfs_client", "clnt-3"), ("0:33", "nfs_state_client", "clnt-4")] {
            std::fs::create_dir_all(sys.join("fs/nfs").join(dev)).unwrap();
            symlink(format!("../../../kernel/sunrpc/rpc-clients/{clnt}"), sys.join("fs/nfs").join(dev).join(link)).unwrap();
        }
        let v = read(&root.join("proc"), &sys).unwrap();
        let live: Vec<(&str, Option<Vec<u16>>)> = v.iter().map(|m| (m.mountpoint.as_str(), m.live_ports.clone())).collect();
        assert_eq!(live, [("/mnt/a", Some(vec![723])), ("/mnt/b", Some(vec![41234, 41236]))]);
        assert!(v.iter().all(|m| m.live_from == "mount link"));
        std::fs::remove_dir_all(&root).unwrap();
    }


    /// The mounts of every mount namespace: a container's own mount is
    /// listed, and the host's mount it also sees is listed once.
    #[test]
    fn mounts_of_every_mount_namespace_once_each() {
        use std::os::unix::fs::symlink;
        let root = std::env::temp_dir().join(format!("nfs-trace-every-mntns-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let host = "36 25 0:52 / /mnt/shared rw - nfs 10.99.0.1:/export rw,vers=3,proto=tcp,port=2049,addr=10.99.0.1\n";
        let ct = "501 500 0:52 / /data rw - nfs 10.99.0.1:/export rw,vers=3,proto=tcp,port=2049,addr=10.99.0.1\n\
502 500 0:60 / /srv/own rw - nfs4 10.99.0.1:/ rw,vers=4.1,proto=tcp,addr=10.99.0.1\n";
        for (pid, mnt, net, mi) in [(1, 10, 20, host), (300, 11, 21, ct)] {
            let dir = root.join(format!("{pid}"));
            std::fs::create_dir_all(dir.join("ns")).unwrap();
            symlink(format!("mnt:[{mnt}]"), dir.join("ns/mnt")).unwrap();
            symlink(format!("net:[{net}]"), dir.join("ns/net")).unwrap();
            std::fs::write(dir.join("mountinfo"), mi).unwrap();
        }
        symlink("1", root.join("self")).unwrap();
        let v = read(&root, &root.join("nosys")).unwrap();
        std::fs::remove_dir_all(&root).unwrap();
        let points: Vec<&str> = v.iter().map(|m| m.mountpoint.as_str()).collect();
        assert_eq!(points, ["/mnt/shared", "/srv/own"], "the container's mount found, the shared superblock once");
    }

}
