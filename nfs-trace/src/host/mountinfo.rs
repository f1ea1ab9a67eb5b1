//! NFS mounts of this host, from `/proc/self/mountinfo` (a pure parser, so
//! fixtures can be tested; `--proc-root` points it at another tree).
use std::path::Path;

use serde::Serialize;

/// One NFS mount as mountinfo describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NfsMount {
    pub mountpoint: String,
    /// `server:/path` as mounted.
    pub source: String,
    pub server: String,
    pub fstype: String,
    /// `vers=` from the super options (e.g. "3", "4.0", "4.1").
    pub vers: Option<String>,
    /// The full super options, in order.
    pub options: String,
    /// The superblock's `maj:min` (mountinfo's third field): names the
    /// mount's directory in `/sys/fs/nfs`.
    #[serde(skip)]
    pub dev: String,
}

impl NfsMount {
    fn opt(&self, key: &str) -> Option<&str> {
        self.options.split(',').find_map(|o| o.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
    }

    pub fn has_flag(&self, flag: &str) -> bool {
        self.options.split(',').any(|o| o == flag)
    }

    /// Server port from `port=`, 2049 when absent or 0 (the NFS default).
    pub fn port(&self) -> u16 {
        self.opt("port").and_then(|p| p.parse().ok()).filter(|&p| p != 0).unwrap_or(2049)
    }
}

/// Undoes mountinfo's octal escapes (`\040` for space, `\011`, `\012`, `\134`).
pub fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (b[i + 1] - b'0') as u32 * 64 + (b[i + 2] - b'0') as u32 * 8 + (b[i + 3] - b'0') as u32;
            if v <= 255 {
                out.push(v as u8);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The server part of `server:/path`; IPv6 servers come bracketed.
fn server_of(source: &str) -> String {
    if let Some(rest) = source.strip_prefix('[')
        && let Some(end) = rest.find(']') {
            return rest[..end].to_string();
        }
    match source.rfind(":/") {
        Some(i) => source[..i].to_string(),
        None => source.split(':').next().unwrap_or(source).to_string(),
    }
}

/// Parses mountinfo text, keeping NFS mounts (nfs, nfs4). Lines that do not
/// parse are skipped: mountinfo is the kernel's, but fixtures may be odd.
pub fn parse_mountinfo(text: &str) -> Vec<NfsMount> {
    let mut out = Vec::new();
    for line in text.lines() {
        // id parent maj:min root mountpoint opts [optional...] - fstype source superopts
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let lf: Vec<&str> = left.split(' ').collect();
        let rf: Vec<&str> = right.split(' ').collect();
        if lf.len() < 6 || rf.len() < 3 {
            continue;
        }
        let fstype = rf[0];
        if fstype != "nfs" && fstype != "nfs4" {
            continue;
        }
        let source = unescape(rf[1]);
        let options = unescape(rf[2]);
        let mut m = NfsMount {
            mountpoint: unescape(lf[4]),
            server: server_of(&source),
            source,
            fstype: fstype.to_string(),
            vers: None,
            options,
            dev: lf[2].to_string(),
        };
        m.vers = m.opt("vers").map(|v| if v == "4" { "4.0".to_string() } else { v.to_string() });
        if let Some(a) = m.opt("addr") {
            // addr= is the address the client really uses; an IPv4 server
            // given as ::ffff:a.b.c.d is that IPv4 address (as the kernel
            // programs report it). A zone (fe80::1%eth0) stays in the text.
            m.server = crate::host::addr::canonical_text(a);
        }
        out.push(m);
    }
    out
}

/// NFS mounts under `proc_root` (normally `/proc`).
pub fn nfs_mounts(proc_root: &Path) -> std::io::Result<Vec<NfsMount>> {
    let text = std::fs::read_to_string(proc_root.join("self/mountinfo"))?;
    Ok(parse_mountinfo(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = "\
22 1 0:21 / /proc rw,nosuid - proc proc rw
36 25 0:32 / /mnt/data rw,relatime shared:1 - nfs4 10.99.0.1:/ rw,vers=4.1,rsize=1048576,wsize=1048576,namlen=255,hard,proto=tcp,timeo=600,retrans=2,sec=sys,clientaddr=10.99.0.2,local_lock=none,addr=10.99.0.1
37 25 0:33 / /mnt/with\\040space rw,relatime - nfs 10.99.0.1:/export rw,vers=3,rsize=1048576,proto=tcp,port=0,noresvport,mountaddr=10.99.0.1,addr=10.99.0.1
38 25 0:34 / /mnt/v6 rw - nfs4 [fd00::1]:/srv rw,vers=4.0,proto=tcp6,port=20049,addr=fd00::1
39 25 0:35 / /mnt/bad rw
";

    #[test]
    fn parses_nfs_mounts_with_escapes_and_ipv6() {
        let m = parse_mountinfo(FIXTURE);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].mountpoint, "/mnt/data");
        assert_eq!(m[0].server, "10.99.0.1");
        assert_eq!(m[0].vers.as_deref(), Some("4.1"));
        assert_eq!(m[0].port(), 2049);
        assert_eq!(m[1].mountpoint, "/mnt/with space");
        assert_eq!(m[1].vers.as_deref(), Some("3"));
        assert!(m[1].has_flag("noresvport"));
        assert!(!m[0].has_flag("noresvport"));
        assert_eq!(m[2].server, "fd00::1");
        assert_eq!(m[2].source, "[fd00::1]:/srv");
        assert_eq!(m[2].port(), 20049);
    }

    #[test]
    fn unescape_handles_edges() {
        assert_eq!(unescape("a\\040b"), "a b");
        assert_eq!(unescape("tail\\"), "tail\\");
        assert_eq!(unescape("\\134x"), "\\x");
        assert_eq!(unescape("\\09"), "\\09");
    }
}
