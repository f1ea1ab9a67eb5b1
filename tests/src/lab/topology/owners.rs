//! Which mount a client socket belongs to, from two independent sources:
//! `mountstats` (each transport's remembered source port: v3 remembers its
//! own, v4.1 remembers 0) and, on 6.4+, `/sys/fs/nfs/<maj:min>/*_client`
//! links to the mount's transport switch, whose transports name their live
//! source port. The host judges whether the two agree.
use std::path::Path;

/// What one mount's files say about its transports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct View {
    /// `xprt: tcp PORT …` of mountstats, one per transport (0 = none).
    pub remembered: Vec<u16>,
    /// The live source ports of its switch's transports; None where the
    /// kernel has no such link (before 6.4) or no sunrpc sysfs.
    pub sysfs: Option<Vec<u16>>,
}

/// The `xprt:` ports of the mount on `mnt` in a mountstats text.
pub fn remembered_ports(mountstats: &str, mnt: &str) -> Vec<u16> {
    let mut mine = false;
    let mut out = Vec::new();
    for line in mountstats.lines() {
        if let Some(rest) = line.strip_prefix("device ") {
            mine = rest.split(" mounted on ").nth(1).and_then(|r| r.split(" with fstype ").next()) == Some(mnt);
        } else if mine && let Some(x) = line.trim().strip_prefix("xprt:") {
            let f: Vec<&str> = x.split_whitespace().collect();
            if f.first().is_some_and(|p| p.starts_with("tcp"))
                && let Some(p) = f.get(1).and_then(|p| p.parse().ok())
            {
                out.push(p);
            }
        }
    }
    out
}

/// The device (`maj:min`) of the mount on `mnt` in a mountinfo text.
pub fn device(mountinfo: &str, mnt: &str) -> Option<String> {
    mountinfo.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(4) == Some(&mnt)).then(|| f.get(2).map(|d| d.to_string())).flatten()
    })
}

/// The live source ports of the transports of mount `dev`, through the
/// links the kernel keeps from `/sys/fs/nfs/<dev>` (6.4+) to its switch.
pub fn sysfs_ports(sys_root: &Path, dev: &str) -> Option<Vec<u16>> {
    let dir = std::fs::read_dir(sys_root.join("fs/nfs").join(dev)).ok()?;
    let mut switches: Vec<String> = dir
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with("_client"))
        .filter_map(|e| std::fs::read_link(e.path().join("switch")).ok())
        .filter_map(|t| Some(t.file_name()?.to_str()?.to_string()))
        .collect();
    switches.sort();
    switches.dedup();
    if switches.is_empty() {
        return None;
    }
    let mut ports = Vec::new();
    for sw in switches {
        let Ok(xs) = std::fs::read_dir(sys_root.join("kernel/sunrpc/xprt-switches").join(&sw)) else { continue };
        for x in xs.flatten().filter(|x| x.file_name().to_string_lossy().starts_with("xprt-")) {
            let info = std::fs::read_to_string(x.path().join("xprt_info")).unwrap_or_default();
            let key = |k: &str| info.lines().find_map(|l| l.strip_prefix(k)).and_then(|v| v.trim().parse::<u16>().ok());
            if key("dst_port=") == Some(crate::lab::net::NFS_PORT)
                && let Some(p) = key("src_port=").filter(|p| *p != 0)
            {
                ports.push(p);
            }
        }
    }
    ports.sort_unstable();
    Some(ports)
}

/// The mount (index into `views`, all of one namespace and server) whose
/// socket has source port `port`, by mountstats: the one remembering the
/// port, else the only one that remembers none (v4.1 rebinds nothing).
pub fn by_mountstats(views: &[View], port: u16) -> Option<usize> {
    if let Some(i) = views.iter().position(|v| v.remembered.contains(&port)) {
        return Some(i);
    }
    let none: Vec<usize> =
        (0..views.len()).filter(|i| !views[*i].remembered.is_empty() && views[*i].remembered.iter().all(|p| *p == 0)).collect();
    match none.as_slice() {
        [i] => Some(*i),
        _ => None,
    }
}

/// The mount whose transport switch lists `port` live (None without sysfs).
pub fn by_sysfs(views: &[View], port: u16) -> Option<usize> {
    views.iter().position(|v| v.sysfs.as_ref().is_some_and(|s| s.contains(&port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATS: &str = "device rootfs mounted on / with fstype rootfs\n\
        device 10.99.0.1:/export mounted on /mnt/nconnect-v3 with fstype nfs statvers=1.1\n\
        \topts:\trw,vers=3\n\
        \txprt:\ttcp 871 1 2 0 0 5 5 0 5 0 2 0 0\n\
        \txprt:\ttcp 702 1 1 0 0 3 3 0 3 0 2 0 0\n\
        device 10.99.0.1:/ mounted on /mnt/nconnect-v4.1 with fstype nfs4 statvers=1.1\n\
        \txprt:\ttcp 0 1 1 0 0 3 3 0 3 0 2 0 0\n\
        \txprt:\ttcp 0 1 1 0 0 3 3 0 3 0 2 0 0\n";

    #[test]
    fn mountstats_ports_per_mount() {
        assert_eq!(remembered_ports(STATS, "/mnt/nconnect-v3"), vec![871, 702]);
        assert_eq!(remembered_ports(STATS, "/mnt/nconnect-v4.1"), vec![0, 0]);
        assert!(remembered_ports(STATS, "/mnt/other").is_empty());
    }

    #[test]
    fn device_from_mountinfo() {
        let mi = "24 1 0:21 / /mnt rw - tmpfs tmpfs rw\n51 24 0:45 / /mnt/nconnect-v3 rw - nfs 10.99.0.1:/export rw\n";
        assert_eq!(device(mi, "/mnt/nconnect-v3").as_deref(), Some("0:45"));
        assert_eq!(device(mi, "/mnt/x"), None);
    }

    #[test]
    fn owners_by_remembered_port_then_by_remembering_none() {
        let views = vec![
            View { remembered: vec![871, 702], sysfs: Some(vec![702, 871]) },
            View { remembered: vec![0, 0], sysfs: Some(vec![40001, 40003]) },
        ];
        assert_eq!(by_mountstats(&views, 702), Some(0));
        assert_eq!(by_mountstats(&views, 40003), Some(1));
        assert_eq!(by_sysfs(&views, 40003), Some(1));
        assert_eq!(by_sysfs(&views, 999), None);
        // Two mounts remembering none cannot be told apart by mountstats.
        let two = vec![views[1].clone(), views[1].clone()];
        assert_eq!(by_mountstats(&two, 40003), None);
    }

    #[test]
    fn sysfs_follows_the_mount_link_to_its_switch() {
        use std::os::unix::fs::symlink;
        let root = std::env::temp_dir().join(format!("lab-owners-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let w = |p: &str, t: &str| {
            let p = root.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, t).unwrap();
        };
        w("kernel/sunrpc/xprt-switches/switch-2/xprt-3-tcp/xprt_info", "src_port=871\ndst_port=2049\n");
        w("kernel/sunrpc/xprt-switches/switch-2/xprt-4-tcp/xprt_info", "src_port=0\ndst_port=2049\n");
        w("kernel/sunrpc/xprt-switches/switch-1/xprt-1-tcp/xprt_info", "src_port=999\ndst_port=2049\n");
        std::fs::create_dir_all(root.join("kernel/sunrpc/rpc-clients/clnt-3")).unwrap();
        symlink("../../xprt-switches/switch-2", root.join("kernel/sunrpc/rpc-clients/clnt-3/switch")).unwrap();
        std::fs::create_dir_all(root.join("fs/nfs/0:45")).unwrap();
        symlink("../../../kernel/sunrpc/rpc-clients/clnt-3", root.join("fs/nfs/0:45/nfs_client")).unwrap();
        assert_eq!(sysfs_ports(&root, "0:45"), Some(vec![871]));
        assert_eq!(sysfs_ports(&root, "0:46"), None);
        let _ = std::fs::remove_dir_all(&root);
    }
}
