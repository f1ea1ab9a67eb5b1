//! Bad input and the other commands: one clear line on stderr and a non-zero
//! exit, never a panic or a backtrace.
use std::{os::unix::process::CommandExt, process::Command};

use nfs_trace_tests::host::*;

/// Runs nfs-trace; returns (exit code, stdout, stderr).
fn run(args: &[&str], as_nobody: bool) -> (i32, String, String) {
    let mut c = Command::new(nfs_trace_bin());
    c.args(args).env("RUST_BACKTRACE", "1");
    if as_nobody {
        c.uid(65534).gid(65534);
    }
    let out = c.output().expect("run nfs-trace");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_one_line_error(stderr: &str, needle: &str) {
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line, got:\n{stderr}");
    assert!(lines[0].starts_with("nfs-trace: error: "), "{stderr}");
    assert!(lines[0].contains(needle), "want {needle:?} in {stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"), "{stderr}");
}

#[test]
fn not_root_is_one_clear_line() {
    require_root();
    let (code, _, err) = run(&["watch"], true);
    assert_ne!(code, 0);
    assert_one_line_error(&err, "needs root");
}

#[test]
fn no_tracefs_is_one_clear_line() {
    require_root();
    let (code, _, err) = run(&["watch", "--tracefs", "/nonexistent-tracefs"], false);
    assert_ne!(code, 0);
    assert_one_line_error(&err, "mount -t tracefs");
}

#[test]
fn no_btf_is_one_clear_line() {
    require_root();
    let (code, _, err) = run(&["watch", "--btf", "/nonexistent/vmlinux"], false);
    assert_ne!(code, 0);
    assert_one_line_error(&err, "CONFIG_DEBUG_INFO_BTF");
}

#[test]
fn bad_flags_are_one_clear_line() {
    for (args, needle) in [
        (&["watch", "--port", "nfs"][..], "is not a port number"),
        (&["watch", "--port", "0"], "is not a port number"),
        (&["watch", "--port", "1,2,3,4,5,6,7,8,9"], "at most 8 ports"),
        (&["watch", "--ringbuf-kb", "1000"], "power of two"),
        (&["watch", "--no-such-flag"], "--no-such-flag"),
        (&["nonsense"], "nonsense"),
    ] {
        let (code, _, err) = run(args, false);
        assert_ne!(code, 0, "{args:?}");
        assert_one_line_error(&err, needle);
    }
}

#[test]
fn probes_lists_every_hook_and_why() {
    require_root();
    let (code, out, err) = run(&["probes", "--json"], false);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let hooks = v["hooks"].as_array().unwrap();
    let names: Vec<(&str, &str)> = hooks.iter().map(|h| (h["name"].as_str().unwrap(), h["kind"].as_str().unwrap())).collect();
    assert_eq!(
        names,
        [
            ("sock:inet_sock_set_state", "tracepoint"),
            ("tcp:tcp_retransmit_skb", "tracepoint"),
            ("tcp_connect", "fentry"),
            ("tcp_connect", "kprobe")
        ]
    );
    assert_eq!(hooks[0]["attached"], true, "the required tracepoint attaches on any test kernel");
    for h in hooks {
        assert!(!h["detail"].as_str().unwrap().is_empty());
        assert!(!h["kernels"].as_str().unwrap().is_empty());
    }
    // Where kprobes are absent (this project's CI host), the table says so.
    if !std::path::Path::new("/sys/bus/event_source/devices/kprobe").exists() {
        let kp = &hooks[3];
        assert_eq!(kp["attached"], false);
        assert!(kp["detail"].as_str().unwrap().contains("CONFIG_KPROBES"), "{kp}");
    }
    // The text table has a row per hook.
    let (code, text, _) = run(&["probes"], false);
    assert_eq!(code, 0);
    assert_eq!(text.lines().filter(|l| l.starts_with("tcp_connect")).count(), 2, "{text}");
}

#[test]
fn watch_says_what_it_attached_and_the_mounts_in_one_line() {
    require_root();
    let (code, out, err) = run(&["watch", "--duration", "0.3"], false);
    assert_eq!(code, 0, "{err}");
    let start: Vec<&str> = err.lines().filter(|l| l.starts_with("nfs-trace: attached")).collect();
    assert_eq!(start.len(), 1, "{err}");
    assert!(start[0].contains("sock:inet_sock_set_state"));
    assert!(start[0].contains("NFS mounts: "), "{}", start[0]);
    assert!(out.contains("Summary after"), "{out}");
}

#[test]
fn closed_stdout_ends_quietly() {
    require_root();
    // stdout is a pipe whose reader is gone: writing fails with EPIPE.
    let mut c = Command::new(nfs_trace_bin())
        .args(["watch", "--json", "--duration", "2"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(c.stdout.take());
    let out = c.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
