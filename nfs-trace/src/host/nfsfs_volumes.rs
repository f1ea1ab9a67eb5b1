//! `/proc/fs/nfsfs/volumes`: the NFS superblocks (`maj:min`) whose client
//! lives in the reader's network namespace. The file is per netns
//! (`/proc/fs/nfsfs` links to `/proc/net/nfsfs`, which follows the reading
//! thread's netns through `/proc/thread-self`), on every kernel this tool
//! runs on. It is the one record that ties a mount to its netns whatever
//! its ports: two containers whose transports connect from the same port
//! to the same server (ports are per netns) are told apart only by it, or,
//! on 6.4+, by the `/sys/fs/nfs` links.
use std::{collections::BTreeSet, io, path::Path};

use crate::host::namespaces;

/// The `DEV` column of a volumes file (the header line skipped).
pub fn parse(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with("NV "))
        .filter_map(|l| l.split_whitespace().nth(3))
        .filter(|d| d.contains(':'))
        .map(str::to_string)
        .collect()
}

/// Reads `<proc>/thread-self/net/nfsfs/volumes`. No file (nfs not
/// loaded) is no volume; None where it cannot be read at all (a copied
/// `--proc-root` tree has no `thread-self`).
fn read_at(proc: &Path) -> Option<BTreeSet<String>> {
    if !proc.join("thread-self").exists() {
        return None;
    }
    match std::fs::read_to_string(proc.join("thread-self/net/nfsfs/volumes")) {
        Ok(t) => Some(parse(&t)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Some(BTreeSet::new()),
        Err(_) => None,
    }
}

/// The volumes of the tracer's own network namespace.
pub fn read_own(proc_root: &Path) -> Option<BTreeSet<String>> {
    read_at(proc_root)
}

/// The volumes of the network namespace at `netns` (one of
/// [`namespaces::netns_paths`]), read from a thread that entered it.
pub fn read_in(netns: &Path) -> Option<BTreeSet<String>> {
    namespaces::in_netns(netns, || Ok(read_here())).ok().flatten()
}

/// The volumes of the calling thread's network namespace (a thread that
/// entered one: `thread-self` is what makes it this thread's).
pub fn read_here() -> Option<BTreeSet<String>> {
    read_at(Path::new("/proc"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_dev_column() {
        // As 6.12 prints it (fs/nfs/client.c, nfs_volume_list_show).
        let t = "NV SERVER   PORT DEV          FSID                              FSC\n\
                 v3 0a630001  801 0:53         fa4c3b7f2d6e4a5b:0                no \n\
                 v4 0a630001  801 0:60         0:0                               no \n";
        assert_eq!(parse(t), BTreeSet::from(["0:53".to_string(), "0:60".to_string()]));
        assert!(parse("NV SERVER   PORT DEV          FSID                              FSC\n").is_empty());
    }

    #[test]
    fn this_hosts_own_file_reads() {
        // No NFS on the dev host: no file or an empty list, never an error.
        assert!(read_own(Path::new("/proc")).is_some());
    }
}
