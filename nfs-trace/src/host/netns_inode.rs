//! The inode that names a network namespace, as the kernel programs report
//! it (`net->ns.inum`): `stat` of an nsfs file gives the same number
//! (`/proc/PID/ns/net`, or a file `ip netns add` bind-mounted).
use std::{os::unix::fs::MetadataExt as _, path::Path};

use crate::flow::Netns;

/// `NSFS_MAGIC` (include/uapi/linux/magic.h): the filesystem of namespace files.
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// The inode of the namespace file at `path` (refused unless it is on nsfs:
/// any other file's inode would name no namespace).
pub fn of_file(path: &Path) -> std::io::Result<Netns> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: statfs(2) on a NUL-terminated path into a zeroed struct we own.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut fs) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if fs.f_type as i64 != NSFS_MAGIC {
        return Err(std::io::Error::other(format!("{} is not a namespace file (not on nsfs)", path.display())));
    }
    let ino = std::fs::metadata(path)?.ino();
    u32::try_from(ino)
        .ok()
        .filter(|&i| i != 0)
        .map(Netns)
        .ok_or_else(|| std::io::Error::other(format!("inode {ino} of {} is not a namespace's", path.display())))
}

/// The calling thread's network namespace (where its sockets, sock_diag's
/// included, live): the process's, except on a thread that entered another.
pub fn own() -> Option<Netns> {
    of_file(Path::new("/proc/thread-self/ns/net")).ok()
}

/// PIDs are at most 2^22 (PID_MAX_LIMIT); namespace inodes are allocated
/// from 0xF0000000 up (proc's dynamic inode range). A number is taken as a
/// PID up to this, as an inode above it.
pub const PID_MAX_LIMIT: u64 = 1 << 22;

/// `--netns`: an inode (`4026532301`, or `net:[4026532301]` as
/// `readlink /proc/PID/ns/net` prints it), a PID (its `/proc/PID/ns/net`),
/// or a path to a namespace file (`/run/netns/NAME`). Err is one phrase.
pub fn parse(s: &str) -> Result<Netns, String> {
    let t = s.trim();
    if t.contains('/') {
        return of_file(Path::new(t)).map_err(|e| format!("'{s}' is not a network namespace file: {e}"));
    }
    let digits = t.strip_prefix("net:[").and_then(|r| r.strip_suffix(']')).unwrap_or(t);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{s}' is not a namespace inode, PID or namespace file (see readlink /proc/PID/ns/net)"))?;
    if n == 0 {
        return Err("0 is neither a PID nor a namespace inode".into());
    }
    if n > PID_MAX_LIMIT || digits != t {
        return u32::try_from(n).map(Netns).map_err(|_| format!("'{s}' is too large for a namespace inode"));
    }
    let path = format!("/proc/{n}/ns/net");
    of_file(Path::new(&path)).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("no process with PID {n} (no {path})"),
        _ => format!("cannot read {path}: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_inodes_and_files_name_the_same_namespace() {
        let own = own().expect("/proc/self/ns/net");
        let link = std::fs::read_link("/proc/self/ns/net").unwrap();
        // The kernel's own name for it: net:[INODE].
        assert_eq!(link.to_string_lossy(), format!("net:[{}]", own.0));
        assert_eq!(parse(&own.0.to_string()), Ok(own));
        assert_eq!(parse(&link.to_string_lossy()), Ok(own));
        assert_eq!(parse(&std::process::id().to_string()), Ok(own));
        assert_eq!(parse("/proc/self/ns/net"), Ok(own));
    }

    #[test]
    fn bad_values_say_what_is_wanted() {
        assert!(parse("abc").unwrap_err().contains("is not a namespace inode, PID or namespace file"));
        assert!(parse("").is_err());
        assert!(parse("0").is_err());
        assert!(parse("99999999999").unwrap_err().contains("too large"));
        // PID_MAX_LIMIT itself is a PID no process has here.
        assert!(parse(&PID_MAX_LIMIT.to_string()).unwrap_err().contains("no process with PID"));
        assert!(parse("/nonexistent/ns").unwrap_err().contains("not a network namespace file"));
        assert!(parse("/proc/self/status").unwrap_err().contains("not on nsfs"), "an ordinary file's inode names nothing");
    }
}
