//! The host's mount and network namespaces, from `/proc/*/ns/{mnt,net}`
//! (under `--proc-root`): which processes share each, so mounts can be read
//! once per mount namespace and sockets and sysfs once per network
//! namespace. Also the one way this crate enters a network namespace
//! ([`in_netns`]): a short-lived thread, since `setns` moves only the
//! calling thread.
//!
//! Cost, measured on this 6.18 host (2 cores, 84–93 processes, debug build,
//! other builds running; `cargo test -p nfs-trace --lib cost -- --nocapture`):
//! a scan takes 0.7–2.7 ms (two readlinks per process), a whole
//! `ns_mounts::read` with no NFS mount 0.8–3.3 ms. With NFS mounts it also
//! lists sockets in every netns (6–8 ms for two here, thread and setns
//! each) and, with sunrpc loaded, mounts each other netns's sysfs
//! (0.5–0.7 ms each; both printed by `tests/tests/host_namespaces.rs`).
//! On a newer 6.18 host (2 cores, 71 processes, debug build, 2026-12-03)
//! a scan took 281 µs and one of mount namespaces only ([`Namespaces::scan_mnt`],
//! what the once-a-second mount-list read uses) 151 µs.
//! `watch` reads only the mount list every second and repeats the full
//! read when the list changed, after kernel records, or every 10 s
//! (`cmd/watch/mount_reads.rs`): on a quiet host a tenth of what a full
//! read every second cost (about 1 % of one core on such a host).

use std::{
    collections::BTreeMap,
    io,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

/// A namespace's inode number, as `/proc/PID/ns/*` names it (`net:[N]`)
/// and the kernel programs read it (`ns.inum`, 32 bits).
pub type NsIno = u32;

/// `net:[4026531840]` → 4026531840 for `kind` "net".
fn parse_link(kind: &str, target: &str) -> Option<NsIno> {
    target.strip_prefix(kind)?.strip_prefix(":[")?.strip_suffix(']')?.parse().ok()
}

/// The namespace inode of kind `kind` ("mnt", "net") that `proc_root/PID`
/// is in; None when the process is gone or cannot be looked at.
fn ns_of(proc_root: &Path, pid: &str, kind: &str) -> io::Result<NsIno> {
    let target = std::fs::read_link(proc_root.join(pid).join("ns").join(kind))?;
    parse_link(kind, &target.to_string_lossy()).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not a namespace link"))
}

/// Every process's mount and network namespace.
#[derive(Clone, Debug, Default)]
pub struct Namespaces {
    /// The tracer's own (`proc_root/self`): "the host" for everything shown.
    pub own_mnt: Option<NsIno>,
    pub own_net: Option<NsIno>,
    /// Mount namespace → its processes (ascending).
    pub mnt: BTreeMap<NsIno, Vec<u32>>,
    /// Network namespace → its processes (ascending).
    pub net: BTreeMap<NsIno, Vec<u32>>,
    /// Process → (mount, network) namespace.
    pub procs: BTreeMap<u32, (Option<NsIno>, Option<NsIno>)>,
    /// Processes whose namespaces could not be read though they exist
    /// (EACCES: not root); processes that vanished mid-scan are not counted.
    pub unreadable: usize,
}

impl Namespaces {
    /// Scans `proc_root`. Processes that exit mid-scan are skipped.
    pub fn scan(proc_root: &Path) -> Namespaces {
        Self::scan_kinds(proc_root, true)
    }

    /// Mount namespaces only (`net` stays empty): what `watch`'s
    /// once-a-second look at the mount list needs, at one readlink per
    /// process instead of two (on a node with thousands of processes the
    /// readlinks are the scan's whole cost).
    pub fn scan_mnt(proc_root: &Path) -> Namespaces {
        Self::scan_kinds(proc_root, false)
    }

    fn scan_kinds(proc_root: &Path, with_net: bool) -> Namespaces {
        let net_of = |pid: &str| if with_net { ns_of(proc_root, pid, "net") } else { Err(io::ErrorKind::Unsupported.into()) };
        let mut ns = Namespaces { own_mnt: ns_of(proc_root, "self", "mnt").ok(), own_net: net_of("self").ok(), ..Default::default() };
        let Ok(rd) = std::fs::read_dir(proc_root) else { return ns };
        for e in rd.flatten() {
            let name = e.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            let name = name.to_string_lossy();
            let (m, n) = (ns_of(proc_root, &name, "mnt"), net_of(&name));
            if let (Err(a), Err(b)) = (&m, if with_net { &n } else { &m }) {
                // Gone since read_dir (ENOENT, ESRCH) is no news; denied is.
                if a.kind() == io::ErrorKind::PermissionDenied || b.kind() == io::ErrorKind::PermissionDenied {
                    ns.unreadable += 1;
                }
                continue;
            }
            let (m, n) = (m.ok(), n.ok());
            if let Some(m) = m {
                ns.mnt.entry(m).or_default().push(pid);
            }
            if let Some(n) = n {
                ns.net.entry(n).or_default().push(pid);
            }
            ns.procs.insert(pid, (m, n));
        }
        for v in ns.mnt.values_mut().chain(ns.net.values_mut()) {
            v.sort_unstable();
        }
        ns
    }

    /// The network namespaces the processes of mount namespace `mnt` are in.
    pub fn nets_of_mnt(&self, mnt: NsIno) -> Vec<NsIno> {
        let mut v: Vec<NsIno> = self.mnt.get(&mnt).into_iter().flatten().filter_map(|p| self.procs.get(p)?.1).collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// A network namespace and a path that opens it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetnsPath {
    pub ino: NsIno,
    pub path: PathBuf,
}

/// One path per network namespace: the tracer's own first, then the named
/// ones (`ip netns add`, `/run/netns`; for the live /proc only), then
/// every process's. An NFS
/// client's namespace may have no process left in it; it is then seen only
/// if it is named.
pub fn netns_paths(proc_root: &Path) -> Vec<NetnsPath> {
    use std::os::unix::fs::MetadataExt;
    let mut out: Vec<NetnsPath> = Vec::new();
    let mut consider = |path: PathBuf| {
        // The inode of an ns file (or of a bind mount of one) is the
        // namespace's.
        if let Ok(meta) = std::fs::metadata(&path) {
            let Ok(ino) = NsIno::try_from(meta.ino()) else { return };
            if !out.iter().any(|n| n.ino == ino) {
                out.push(NetnsPath { ino, path });
            }
        }
    };
    consider(proc_root.join("self/ns/net"));
    // Named namespaces are the live host's: not mixed into a --proc-root tree.
    if proc_root == Path::new("/proc")
        && let Ok(rd) = std::fs::read_dir("/run/netns")
    {
        let mut named: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        named.sort();
        named.into_iter().for_each(&mut consider);
    }
    if let Ok(rd) = std::fs::read_dir(proc_root) {
        let mut pids: Vec<u32> = rd.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect();
        pids.sort_unstable();
        for pid in pids {
            consider(proc_root.join(pid.to_string()).join("ns/net"));
        }
    }
    out
}

/// Runs `f` on a thread of its own that has entered the network namespace
/// at `path` (setns moves only the calling thread; the thread ends with
/// `f`, so nothing else ever runs there). Sockets `f` opens belong to that
/// namespace for good.
pub fn in_netns<T: Send + 'static>(path: &Path, f: impl FnOnce() -> anyhow::Result<T> + Send + 'static) -> anyhow::Result<T> {
    use anyhow::Context as _;
    let (path, shown) = (path.to_path_buf(), path.display().to_string());
    std::thread::spawn(move || -> anyhow::Result<T> {
        let ns = std::fs::File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        // SAFETY: a valid namespace fd; only this short-lived thread moves.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error()).with_context(|| format!("cannot enter the network namespace {}", path.display()));
        }
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the thread in network namespace {shown} panicked"))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A fake /proc: `procs` are (pid, mnt inode, net inode); `self` is the first.
    pub(crate) fn fake_proc(root: &Path, procs: &[(u32, NsIno, NsIno)]) {
        let _ = std::fs::remove_dir_all(root);
        for &(pid, mnt, net) in procs {
            let ns = root.join(pid.to_string()).join("ns");
            std::fs::create_dir_all(&ns).unwrap();
            symlink(format!("mnt:[{mnt}]"), ns.join("mnt")).unwrap();
            symlink(format!("net:[{net}]"), ns.join("net")).unwrap();
        }
        symlink(procs[0].0.to_string(), root.join("self")).unwrap();
    }

    #[test]
    fn groups_processes_by_namespace() {
        let root = std::env::temp_dir().join(format!("nfs-trace-ns-{}", std::process::id()));
        fake_proc(&root, &[(100, 10, 20), (1, 10, 20), (300, 11, 21), (301, 11, 21), (400, 10, 22)]);
        // A process that vanished between read_dir and readlink: a dir, no links.
        std::fs::create_dir_all(root.join("500")).unwrap();
        std::fs::create_dir_all(root.join("sys")).unwrap();
        let ns = Namespaces::scan(&root);
        assert_eq!((ns.own_mnt, ns.own_net), (Some(10), Some(20)));
        assert_eq!(ns.mnt.get(&10), Some(&vec![1, 100, 400]));
        assert_eq!(ns.mnt.get(&11), Some(&vec![300, 301]));
        assert_eq!(ns.net.len(), 3);
        assert_eq!(ns.nets_of_mnt(10), vec![20, 22], "nsenter --net: one mount namespace, two netns");
        assert_eq!(ns.nets_of_mnt(11), vec![21]);
        assert_eq!(ns.procs.len(), 5, "the vanished process is skipped");
        assert_eq!(ns.unreadable, 0, "a vanished process is not an unreadable one");
        let m = Namespaces::scan_mnt(&root);
        assert_eq!((m.own_mnt, m.own_net), (Some(10), None));
        assert_eq!((m.mnt, m.net.len(), m.procs.len()), (ns.mnt.clone(), 0, 5), "the same mount namespaces, no netns read");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn parses_links() {
        assert_eq!(parse_link("net", "net:[4026531840]"), Some(4026531840));
        assert_eq!(parse_link("mnt", "net:[4026531840]"), None);
        assert_eq!(parse_link("net", "net:[x]"), None);
    }

    /// The cost quoted in the module comment: a scan of this host's /proc.
    #[test]
    fn scan_cost() {
        let n = 50;
        let t = std::time::Instant::now();
        let mut procs = 0;
        for _ in 0..n {
            procs = Namespaces::scan(Path::new("/proc")).procs.len();
        }
        let per = t.elapsed() / n;
        let t = std::time::Instant::now();
        for _ in 0..n {
            assert!(Namespaces::scan_mnt(Path::new("/proc")).net.is_empty());
        }
        let mnt_only = t.elapsed() / n;
        eprintln!("namespace scan of /proc: {procs} processes in {per:?}; mount namespaces only: {mnt_only:?}");
        assert!(procs > 0, "this host's own /proc lists processes");
        assert!(Namespaces::scan(Path::new("/proc")).own_net.is_some());
    }
}
