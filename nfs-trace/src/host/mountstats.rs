//! `/proc/self/mountstats`: per NFS mount, its options and its transports'
//! counters. A pure parser (fixtures in tests; `--proc-root` for trees).
//!
//! The `xprt: tcp` line's first field is the port the transport *remembers*
//! to rebind (`sock_xprt.srcport`, 0 when none), not necessarily the live
//! one; the live one is in sysfs `xprt_info` (5.14+) or `ss`.
use serde::Serialize;

use crate::host::mountinfo::unescape;

/// One `xprt:` line of a TCP transport.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct XprtStats {
    /// The remembered source port (0: none remembered).
    pub srcport: u16,
    pub bind_count: u64,
    pub connect_count: u64,
    /// Jiffies/HZ spent connecting, in seconds.
    pub connect_time: u64,
    pub idle_time: u64,
    pub sends: u64,
    pub recvs: u64,
    pub bad_xids: u64,
    /// Present on kernels with the 13-field format (max_slots, sending_u, pending_u).
    pub max_slots: Option<u64>,
}

/// One mount's entry in mountstats.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MountStats {
    pub device: String,
    pub mountpoint: String,
    pub fstype: String,
    /// The `opts:` line (the client's view of the options, e.g. vers=4.1).
    pub opts: String,
    /// One per transport: several with nconnect.
    pub xprts: Vec<XprtStats>,
}

impl MountStats {
    pub fn opt(&self, key: &str) -> Option<&str> {
        self.opts.split(',').find_map(|o| o.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
    }

    pub fn has_flag(&self, flag: &str) -> bool {
        self.opts.split(',').any(|o| o == flag)
    }
}

fn parse_xprt(fields: &[&str]) -> Option<XprtStats> {
    // tcp: port bind_count connect_count connect_time idle_time sends recvs
    //      bad_xids req_u bklog_u [max_slots sending_u pending_u]
    if fields.first() != Some(&"tcp") || fields.len() < 11 {
        return None;
    }
    let n = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    Some(XprtStats {
        srcport: fields[1].parse().ok()?,
        bind_count: n(2)?,
        connect_count: n(3)?,
        connect_time: n(4)?,
        idle_time: n(5)?,
        sends: n(6)?,
        recvs: n(7)?,
        bad_xids: n(8)?,
        max_slots: if fields.len() >= 14 { n(11) } else { None },
    })
}

/// Parses mountstats, keeping NFS mounts. Odd lines are skipped.
pub fn parse(text: &str) -> Vec<MountStats> {
    let mut out: Vec<MountStats> = Vec::new();
    let mut cur: Option<MountStats> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("device ") {
            if let Some(m) = cur.take() {
                out.push(m);
            }
            // device SRC mounted on MNT with fstype TYPE [statvers=1.1]
            let Some((dev, rest)) = rest.split_once(" mounted on ") else { continue };
            let Some((mnt, rest)) = rest.rsplit_once(" with fstype ") else { continue };
            let fstype = rest.split_whitespace().next().unwrap_or_default();
            if fstype == "nfs" || fstype == "nfs4" {
                cur = Some(MountStats {
                    device: unescape(dev),
                    mountpoint: unescape(mnt),
                    fstype: fstype.into(),
                    ..Default::default()
                });
            }
            continue;
        }
        let Some(m) = cur.as_mut() else { continue };
        let t = line.trim_start();
        if let Some(o) = t.strip_prefix("opts:") {
            m.opts = o.trim().to_string();
        } else if let Some(x) = t.strip_prefix("xprt:") {
            let f: Vec<&str> = x.split_whitespace().collect();
            if let Some(xs) = parse_xprt(&f) {
                m.xprts.push(xs);
            }
        }
    }
    if let Some(m) = cur.take() {
        out.push(m);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = "\
device proc mounted on /proc with fstype proc
device 10.99.0.1:/export mounted on /mnt/v3 with fstype nfs statvers=1.1
\topts:\trw,vers=3,rsize=1048576,wsize=1048576,namlen=255,acregmin=3,hard,proto=tcp,timeo=600,retrans=2,sec=sys,mountaddr=10.99.0.1,mountvers=3,mountport=20048,mountproto=tcp,local_lock=none
\tage:\t21
\tcaps:\tcaps=0x3fef,wtmult=512,dtsize=1048576,bsize=0,namlen=255
\tsec:\tflavor=1,pseudoflavor=1
\tevents:\t0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
\tbytes:\t0 0 0 0 0 0 0 0
\tRPC iostats version: 1.1  p/v: 100003/3 (nfs)
\txprt:\ttcp 790 1 3 0 0 12 12 0 12 0 2 0 0
\tper-op statistics
\t        NULL: 1 1 0 44 24 0 0 0 0
device 10.99.0.1:/ mounted on /mnt/with\\040space with fstype nfs4 statvers=1.1
\topts:\trw,vers=4.1,rsize=1048576,nconnect=2,noresvport,proto=tcp,clientaddr=10.99.0.2,local_lock=none
\txprt:\ttcp 0 0 2 0 2 40 40 0 40 0 2 0 0
\txprt:\ttcp 0 0 1 0 5 3 3 0 3 0 2 0 0
device 10.99.0.1:/old mounted on /mnt/old with fstype nfs statvers=1.0
\topts:\trw,vers=3,proto=tcp
\txprt:\ttcp 875 1 1 0 3 7 7 0 7 0
\txprt:\tudp 0 0 0 0 0 0 0
";

    #[test]
    fn parses_old_and_new_xprt_lines_and_nconnect() {
        let m = parse(FIXTURE);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].mountpoint, "/mnt/v3");
        assert_eq!(m[0].opt("vers"), Some("3"));
        assert_eq!(m[0].xprts.len(), 1);
        assert_eq!(m[0].xprts[0].srcport, 790);
        assert_eq!(m[0].xprts[0].connect_count, 3);
        assert_eq!(m[0].xprts[0].max_slots, Some(2));
        assert_eq!(m[1].mountpoint, "/mnt/with space");
        assert!(m[1].has_flag("noresvport"));
        assert_eq!(m[1].xprts.len(), 2, "nconnect=2: two transports");
        assert_eq!(m[1].xprts.iter().map(|x| x.connect_count).sum::<u64>(), 3);
        assert_eq!(m[2].xprts.len(), 1, "udp lines are not TCP transports");
        assert_eq!(m[2].xprts[0].srcport, 875);
        assert_eq!(m[2].xprts[0].max_slots, None, "old 10-field format");
    }

    #[test]
    fn garbage_does_not_panic() {
        for s in ["", "device", "device x mounted on", "\txprt:\ttcp", "device a mounted on b with fstype nfs\n\txprt:\ttcp x y z"] {
            let _ = parse(s);
        }
    }
}
