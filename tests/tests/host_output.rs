//! What reaches a person's terminal. Any local user picks their own process
//! name and can connect to :2049; `watch` runs as root and prints that name.
//! The ground truth is the name the test itself gave its thread.
use std::{thread, time::Duration};

use nfs_trace_tests::host::{Server, Tracer, connect_and_abort, require_root, watch_text};

/// 13 bytes, within the kernel's 15-byte task name: clear the screen, turn
/// the text red, then a marker to find the line by.
const HOSTILE: &str = "\x1b[2J\x1b[31mEVIL";

/// Connects from a thread named [`HOSTILE`] (PR_SET_NAME names the calling
/// thread, and the kernel records the connecting thread's name).
fn connect_as_hostile(dst: &'static str) -> u16 {
    thread::spawn(move || {
        let name = std::ffi::CString::new(HOSTILE).unwrap();
        // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
        let rc = unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr() as libc::c_ulong, 0, 0, 0) };
        assert_eq!(rc, 0, "prctl(PR_SET_NAME): {}", std::io::Error::last_os_error());
        connect_and_abort(dst, None)
    })
    .join()
    .unwrap()
}

#[test]
fn hostile_process_names_reach_the_terminal_escaped_and_json_exact() {
    require_root();
    let _srv = Server::start("127.0.4.66:2049");
    let json = Tracer::start(&[]);
    let (port, text) = watch_text(&[], || {
        let port = connect_as_hostile("127.0.4.66:2049");
        // Records are drained every 20 ms; let both tracers see the connect.
        thread::sleep(Duration::from_millis(500));
        port
    });
    let recs = json.stop();

    // JSON keeps the bytes exactly (serde escapes them as JSON requires).
    let c = recs.to("connect", "127.0.4.66", 2049);
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(c[0]["comm"], HOSTILE);
    assert_eq!(c[0]["sport"], port);

    // The terminal gets inert text: no escape byte at all (colour is off), and
    // the name is shown in its escaped form on the connect line.
    assert!(!text.contains('\x1b'), "an escape byte reached the terminal:\n{text:?}");
    let line = text
        .lines()
        .find(|l| l.contains("127.0.4.66:2049") && l.contains("SYN_SENT→ESTABLISHED"))
        .unwrap_or_else(|| panic!("no connect line for 127.0.4.66 in:\n{text}"));
    assert!(line.contains("\\x1b[2J\\x1b[31mEVIL"), "{line:?}");
    assert!(line.contains(&format!(":{port} → 127.0.4.66:2049")), "{line:?}");
}

/// The kernel's word on an NFS server ("nfs: server X not responding, still
/// trying", then "… OK") reaches `watch` from /dev/kmsg while it idles: the
/// line wakes it (it no longer looks on a timer). Ground truth: the lines the
/// test itself writes to the host's kernel log, for a server no mount uses
/// (TEST-NET-1), so no stall or episode follows.
#[test]
fn the_kernels_nfs_server_lines_reach_an_idle_watch() {
    require_root();
    let mut t = Tracer::start(&[]);
    let write = |msg: &str| std::fs::write("/dev/kmsg", format!("{msg}\n")).expect("write /dev/kmsg (root)");
    write("nfs: server 192.0.2.77 not responding, still trying");
    let down = t.wait_for(Duration::from_secs(10), |v| v["type"] == "kernel");
    write("nfs: server 192.0.2.77 OK");
    let up = t.wait_for(Duration::from_secs(10), |v| v["type"] == "kernel" && v["not_responding"] == false);
    // Not an NFS server line: read and left out.
    write("nfs: server 192.0.2.77 is only mentioned here");
    let recs = t.stop();
    let down = down.expect("no `kernel` record for the not-responding line");
    assert_eq!(down["server"], "192.0.2.77", "{down}");
    assert_eq!(down["not_responding"], true, "{down}");
    assert!(down["text"].as_str().unwrap().starts_with("nfs: server 192.0.2.77 not responding"), "{down}");
    let up = up.expect("no `kernel` record for the OK line");
    assert_eq!(up["text"], "nfs: server 192.0.2.77 OK", "{up}");
    let kernel: Vec<_> = recs.all.iter().filter(|v| v["type"] == "kernel").collect();
    assert_eq!(kernel.len(), 2, "{kernel:?}");
    assert!(recs.all.iter().all(|v| v["type"] != "episode"), "no mount uses 192.0.2.77");
}
