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
