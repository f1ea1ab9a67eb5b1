//! What reaches a person's terminal. Any local user picks their own process
//! name and can connect to :2049; `watch` runs as root and prints that name.
//! The ground truth is the name the test itself gave its thread.
use std::{
    io::{BufRead, BufReader, Read},
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use nfs_trace_tests::host::{Server, Tracer, connect_and_abort, nfs_trace_bin, require_root};

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
    let mut human = Command::new(nfs_trace_bin())
        .args(["watch", "--color", "never"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start nfs-trace");
    // The start line on stderr says it is attached.
    let (tx, rx) = mpsc::channel();
    let stderr = human.stderr.take().unwrap();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let attached = rx.iter().find(|l| l.starts_with("nfs-trace: attached"));
    assert!(attached.is_some(), "the human tracer never attached");

    let port = connect_as_hostile("127.0.4.66:2049");
    // Records are drained every 20 ms; let both tracers see the connect.
    thread::sleep(Duration::from_millis(500));
    // SAFETY: kill on our own child's pid.
    unsafe { libc::kill(human.id() as i32, libc::SIGINT) };
    let mut out = Vec::new();
    human.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    assert!(human.wait().unwrap().success());
    let recs = json.stop();

    // JSON keeps the bytes exactly (serde escapes them as JSON requires).
    let c = recs.to("connect", "127.0.4.66", 2049);
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(c[0]["comm"], HOSTILE);
    assert_eq!(c[0]["sport"], port);

    // The terminal gets inert text: no escape byte at all (colour is off), and
    // the name is shown in its escaped form on the connect line.
    let text = String::from_utf8_lossy(&out);
    assert!(!out.contains(&0x1b), "an escape byte reached the terminal:\n{text:?}");
    let line = text
        .lines()
        .find(|l| l.contains(&format!("127.0.4.66:2049")) && l.contains("SYN_SENT→ESTABLISHED"))
        .unwrap_or_else(|| panic!("no connect line for 127.0.4.66 in:\n{text}"));
    assert!(line.contains("\\x1b[2J\\x1b[31mEVIL"), "{line:?}");
    assert!(line.contains(&format!(":{port} → 127.0.4.66:2049")), "{line:?}");
}
