//! `/sys/kernel/sunrpc` (5.14+): RPC clients, transport switches and their
//! transports with the live source port. A pure reader of a tree
//! (`--sys-root` points it at a fixture).
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::Serialize;

/// One transport: `xprt-switches/switch-N/xprt-M-PROTO/`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SysXprt {
    pub switch: u32,
    pub id: u32,
    pub proto: String,
    /// The directory, for `dstaddr` rewrites (prove).
    #[serde(skip)]
    pub dir: PathBuf,
    pub dstaddr: Option<String>,
    /// The live source port (`xprt_info` `src_port`); None when not
    /// connected (the kernel then answers ENOTCONN).
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    /// `main_xprt=1`: the transport the mount was made with.
    pub main: Option<bool>,
    /// `xprt_state`, e.g. "CONNECTED BOUND".
    pub state: Option<String>,
    /// The network namespace whose sysfs listed it (None: the tree given,
    /// `--sys-root`, read as it is).
    pub netns: Option<u32>,
}

/// Parses `key=value` lines (xprt_info, xprt_switch_info).
pub fn key_values(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// `xprt-3-tcp` → (3, "tcp").
fn parse_xprt_dir(name: &str) -> Option<(u32, String)> {
    let rest = name.strip_prefix("xprt-")?;
    let (id, proto) = rest.split_once('-')?;
    Some((id.parse().ok()?, proto.to_string()))
}

fn read(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

/// Every transport under `sys_root/kernel/sunrpc`; empty when the kernel
/// has no such tree (before 5.14, or sunrpc not loaded).
pub fn transports(sys_root: &Path) -> Vec<SysXprt> {
    let base = sys_root.join("kernel/sunrpc/xprt-switches");
    let Ok(switches) = std::fs::read_dir(&base) else { return Vec::new() };
    let mut out = Vec::new();
    for sw in switches.flatten() {
        let sname = sw.file_name().to_string_lossy().into_owned();
        let Some(switch) = sname.strip_prefix("switch-").and_then(|n| n.parse().ok()) else { continue };
        let Ok(xprts) = std::fs::read_dir(sw.path()) else { continue };
        for x in xprts.flatten() {
            let xname = x.file_name().to_string_lossy().into_owned();
            let Some((id, proto)) = parse_xprt_dir(&xname) else { continue };
            let dir = x.path();
            let info = read(&dir.join("xprt_info")).map(|t| key_values(&t)).unwrap_or_default();
            out.push(SysXprt {
                switch,
                id,
                proto,
                dstaddr: read(&dir.join("dstaddr")).map(|s| s.trim().to_string()).filter(|s| !s.is_empty()),
                src_port: info.get("src_port").and_then(|v| v.parse().ok()),
                dst_port: info.get("dst_port").and_then(|v| v.parse().ok()),
                main: info.get("main_xprt").map(|v| v == "1"),
                state: read(&dir.join("xprt_state"))
                    .map(|s| s.trim().trim_start_matches("state=").split_whitespace().collect::<Vec<_>>().join(" ")),
                dir,
                netns: None,
            });
        }
    }
    out.sort_by_key(|x| (x.switch, x.id));
    out
}

/// The transport switches of one NFS mount, through the links the kernel
/// keeps for it (6.4+): `/sys/fs/nfs/<maj:min>/<program>_client` points at
/// its RPC client `rpc-clients/clnt-N`, whose `switch` link names the
/// `xprt-switches/switch-M` holding the mount's own transports. None where
/// the kernel has no such links (then only the mount options and ports
/// can say which transports are the mount's).
pub fn mount_switches(sys_root: &Path, dev: &str) -> Option<Vec<u32>> {
    let dir = std::fs::read_dir(sys_root.join("fs/nfs").join(dev)).ok()?;
    let mut out: Vec<u32> = dir
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with("_client"))
        .filter_map(|e| std::fs::read_link(e.path().join("switch")).ok())
        .filter_map(|t| t.file_name()?.to_str()?.strip_prefix("switch-")?.parse().ok())
        .collect();
    out.sort_unstable();
    out.dedup();
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(p: &Path, s: &str) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, s).unwrap();
    }

    #[test]
    fn reads_a_tree() {
        let root = std::env::temp_dir().join(format!("nfs-trace-sysfs-{}", std::process::id()));
        let sw = root.join("kernel/sunrpc/xprt-switches");
        write(
            &sw.join("switch-1/xprt-2-tcp/xprt_info"),
            "last_used=4295\ncur_cong=0\ncong_win=256\nmax_num_slots=65536\nmin_num_slots=2\nnum_reqs=2\n\
binding_q_len=0\nsending_q_len=0\npending_q_len=0\nbacklog_q_len=0\nmain_xprt=1\nsrc_port=790\ntasks_queuelen=0\ndst_port=2049\n",
        );
        write(&sw.join("switch-1/xprt-2-tcp/dstaddr"), "10.99.0.1\n");
        write(&sw.join("switch-1/xprt-2-tcp/xprt_state"), "state=LOCKED CONNECTED  BOUND        \n");
        // Not connected: the kernel fails the read (ENOTCONN); here, no file.
        write(&sw.join("switch-1/xprt-3-tcp/dstaddr"), "10.99.0.1\n");
        write(&sw.join("switch-0/xprt-0-local/dstaddr"), "/run/rpcbind.sock\n");
        write(&sw.join("switch-1/xprt_switch_info"), "num_xprts=2\n");
        let t = transports(&root);
        assert_eq!(t.len(), 3);
        assert_eq!((t[0].switch, t[0].id, t[0].proto.as_str()), (0, 0, "local"));
        let x = &t[1];
        assert_eq!((x.switch, x.id), (1, 2));
        assert_eq!(x.src_port, Some(790));
        assert_eq!(x.dst_port, Some(2049));
        assert_eq!(x.main, Some(true));
        assert_eq!(x.dstaddr.as_deref(), Some("10.99.0.1"));
        assert_eq!(x.state.as_deref(), Some("LOCKED CONNECTED BOUND"));
        assert_eq!(t[2].src_port, None);
        std::fs::remove_dir_all(&root).unwrap();
        assert!(transports(&root).is_empty(), "no tree, no transports");
    }
}
