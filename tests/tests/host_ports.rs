//! Which destination ports `watch` follows: the `--port` list, plus the port
//! of every NFS mount on another port, also one mounted after start. Ground
//! truth: the test's own sockets (`local_addr()`) and the mount table it
//! writes (a fake /proc given with `--proc-root`).
use std::{path::PathBuf, time::Duration};

use nfs_trace_tests::host::*;
use serde_json::Value;

/// A fake /proc whose `self/mountinfo` the test rewrites while watch runs.
struct FakeProc(PathBuf);

impl FakeProc {
    fn new(name: &str, mountinfo: &str) -> FakeProc {
        let root = std::env::temp_dir().join(format!("nfs-trace-ports-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("self")).unwrap();
        let p = FakeProc(root);
        p.set_mountinfo(mountinfo);
        p
    }

    /// Replaces mountinfo in one rename, so no read sees half a file.
    fn set_mountinfo(&self, text: &str) {
        let tmp = self.0.join("self/.mountinfo.new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.0.join("self/mountinfo")).unwrap();
    }

    fn arg(&self) -> String {
        self.0.to_string_lossy().into_owned()
    }
}

impl Drop for FakeProc {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const NO_NFS: &str = "22 1 0:21 / /proc rw,nosuid - proc proc rw\n";

fn sports(recs: &[&Value]) -> Vec<u64> {
    recs.iter().map(|r| r["sport"].as_u64().unwrap()).collect()
}

/// Defect 7: an NFS mount on a port outside `--port` that appears after
/// start is watched from when watch sees it (it re-reads mounts every
/// second): a connect to its port after that is reported, one before is not.
#[test]
fn a_mount_on_another_port_made_after_start_gets_its_port_watched() {
    const PORT: u16 = 3777;
    let _srv = Server::start("127.0.4.1:3777");
    let proc = FakeProc::new("late", NO_NFS);
    let mut tracer = Tracer::start(&["--proc-root", &proc.arg()]);
    assert_eq!(tracer.attached["ports"], serde_json::json!([2049]), "only --port's default at start");

    // Before the mount exists: not a watched port.
    let before = connect_and_abort("127.0.4.1:3777", None);
    proc.set_mountinfo(&format!(
        "{NO_NFS}40 25 0:40 / /mnt/late rw,relatime - nfs4 127.0.4.1:/ rw,vers=4.1,proto=tcp,port={PORT},addr=127.0.4.1\n"
    ));
    let added = tracer.wait_for(Duration::from_secs(15), |r| r["type"] == "ports");
    let after = connect_and_abort("127.0.4.1:3777", None);
    let recs = tracer.stop();

    let connects = recs.to("connect", "127.0.4.1", PORT);
    assert_eq!(
        sports(&connects),
        vec![after as u64],
        "the connect after the mount appeared (sport {after}) is reported, the one before (sport {before}) is not; stderr:\n{}",
        recs.stderr
    );
    assert_eq!(connects[0]["outcome"], "established");
    let added = added.expect("a `ports` record says the port is now watched");
    assert_eq!(added["added"], serde_json::json!([PORT]), "{added}");
    assert_eq!(added["ports"], serde_json::json!([2049, PORT]), "{added}");
    assert_eq!(added["mounts"], serde_json::json!(["/mnt/late"]), "{added}");
    let said: Vec<&str> = recs.stderr.lines().filter(|l| l.contains("now watching port 3777")).collect();
    assert_eq!(said.len(), 1, "said once on stderr:\n{}", recs.stderr);
    assert!(said[0].contains("/mnt/late"), "{}", said[0]);
}

/// A mount already on another port at start is watched from the start
/// (rather than only named in the start line as not watched).
#[test]
fn a_mount_on_another_port_at_start_is_watched_from_the_start() {
    const PORT: u16 = 3778;
    let _srv = Server::start("127.0.4.2:3778");
    let proc = FakeProc::new("early", &format!(
        "{NO_NFS}41 25 0:41 / /mnt/early rw - nfs 127.0.4.2:/export rw,vers=3,proto=tcp,port={PORT},addr=127.0.4.2\n"
    ));
    let tracer = Tracer::start(&["--proc-root", &proc.arg()]);
    assert_eq!(tracer.attached["ports"], serde_json::json!([2049, PORT]), "{}", tracer.attached);
    let p = connect_and_abort("127.0.4.2:3778", None);
    let recs = tracer.stop();
    assert_eq!(sports(&recs.to("connect", "127.0.4.2", PORT)), vec![p as u64], "stderr:\n{}", recs.stderr);
    let start: Vec<&str> = recs.stderr.lines().filter(|l| l.starts_with("nfs-trace: attached")).collect();
    assert!(start[0].contains("port 3778 watched"), "{}", start[0]);
    assert!(!recs.all.iter().any(|r| r["type"] == "ports"), "nothing added later");
}
