//! When `watch` reads the host's mounts again. The full read
//! (`ns_mounts::read`: mountstats, and the sockets, sunrpc sysfs and nfsfs
//! volumes of every network namespace, each through a thread that enters
//! it) costs milliseconds per netns; the mount list alone (mountinfo of each
//! mount namespace) is a fraction of that. So the list is read every
//! second, and the full read redone only when something could have changed
//! what it says: the list changed (a mount came or went, anywhere), kernel
//! records arrived since (a connect changes ports, counters, sockets), or
//! [`FULL_EVERY`] passed (what no record tells: a remount, a netns whose
//! transports are not watched). Records do not make it due on a host with
//! no NFS mount, then and now: there is nothing for them to change (a
//! storm of connects to port 2049 on a host with none read it every second).
use std::time::{Duration, Instant};

use crate::host::mountinfo::NfsMount;

/// The longest a full read is reused.
pub const FULL_EVERY: Duration = Duration::from_secs(10);

/// What identifies the mount list: each superblock, where it is mounted and
/// with which options.
fn fingerprint(list: &[NfsMount]) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = list.iter().map(|m| (m.dev.clone(), m.mountpoint.clone(), m.options.clone())).collect();
    v.sort();
    v
}

pub struct MountReads {
    list: Vec<(String, String, String)>,
    at: Instant,
    records: bool,
}

impl MountReads {
    /// After a full read of `list`'s mounts at `now`.
    pub fn new(list: &[NfsMount], now: Instant) -> Self {
        MountReads { list: fingerprint(list), at: now, records: false }
    }

    /// Kernel records arrived.
    pub fn saw_records(&mut self) {
        self.records = true;
    }

    /// Whether the full read is due, given the mount list read now; if so,
    /// the caller does it and this counts it as done.
    pub fn due(&mut self, list: &[NfsMount], now: Instant) -> bool {
        let fp = fingerprint(list);
        let records = self.records && !(fp.is_empty() && self.list.is_empty());
        let due = records || fp != self.list || now.duration_since(self.at) >= FULL_EVERY;
        if due {
            *self = MountReads { list: fp, at: now, records: false };
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(dev: &str, at: &str) -> NfsMount {
        let line = format!("36 25 {dev} / {at} rw - nfs 10.99.0.1:/ rw,vers=3,addr=10.99.0.1\n");
        crate::host::mountinfo::parse_mountinfo(&line).remove(0)
    }

    #[test]
    fn a_quiet_unchanged_host_is_read_in_full_only_every_ten_seconds() {
        let t0 = Instant::now();
        let list = [mount("0:52", "/mnt/a")];
        let mut r = MountReads::new(&list, t0);
        for s in 1..10 {
            assert!(!r.due(&list, t0 + Duration::from_secs(s)), "second {s}");
        }
        assert!(r.due(&list, t0 + FULL_EVERY));
        assert!(!r.due(&list, t0 + FULL_EVERY + Duration::from_secs(1)), "counted as done");
    }

    #[test]
    fn a_new_mount_or_kernel_records_make_it_due_at_once() {
        let t0 = Instant::now();
        let one = [mount("0:52", "/mnt/a")];
        let two = [mount("0:52", "/mnt/a"), mount("0:53", "/mnt/b")];
        let mut r = MountReads::new(&one, t0);
        assert!(r.due(&two, t0 + Duration::from_secs(1)), "a mount came");
        assert!(r.due(&one, t0 + Duration::from_secs(2)), "and went");
        assert!(!r.due(&one, t0 + Duration::from_secs(3)));
        r.saw_records();
        assert!(r.due(&one, t0 + Duration::from_secs(4)), "a connect changes ports and counters");
        assert!(!r.due(&one, t0 + Duration::from_secs(5)));
        let moved = [mount("0:52", "/mnt/elsewhere")];
        assert!(r.due(&moved, t0 + Duration::from_secs(6)), "the same superblock mounted elsewhere");
    }

    #[test]
    fn records_on_a_host_without_nfs_mounts_read_nothing_again() {
        let t0 = Instant::now();
        let mut r = MountReads::new(&[], t0);
        r.saw_records();
        assert!(!r.due(&[], t0 + Duration::from_secs(1)), "no mount then or now");
        let one = [mount("0:52", "/mnt/a")];
        assert!(r.due(&one, t0 + Duration::from_secs(2)), "a mount came");
        r.saw_records();
        assert!(r.due(&one, t0 + Duration::from_secs(3)), "records with a mount");
        assert!(r.due(&[], t0 + Duration::from_secs(4)), "it went");
        r.saw_records();
        assert!(!r.due(&[], t0 + Duration::from_secs(5)));
        assert!(r.due(&[], t0 + Duration::from_secs(4) + FULL_EVERY), "still every ten seconds");
    }
}
