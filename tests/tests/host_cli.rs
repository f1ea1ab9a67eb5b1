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

/// A kernel older than the floor (5.8) refuses the BPF ring buffer map type
/// with EINVAL. Here a seccomp filter gives nfs-trace that answer for every
/// BPF map it tries to create: it must say the floor and the kernel it found
/// in one line and exit 1, never pass on aya's raw map error.
#[test]
fn a_kernel_without_the_ring_buffer_is_one_clear_line() {
    use seccompiler::{BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule};
    require_root();
    const BPF_MAP_CREATE: u64 = 0;
    let map_create = SeccompRule::new(vec![SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, BPF_MAP_CREATE).unwrap()]).unwrap();
    let filter: BpfProgram = SeccompFilter::new(
        [(libc::SYS_bpf, vec![map_create])].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EINVAL as u32),
        std::env::consts::ARCH.try_into().unwrap(),
    )
    .unwrap()
    .try_into()
    .unwrap();
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap().trim().to_string();
    for cmd in ["watch", "probes"] {
        let mut c = Command::new(nfs_trace_bin());
        c.arg(cmd).env("RUST_BACKTRACE", "1");
        let f = filter.clone();
        // SAFETY: between fork and exec only prctl/seccomp calls, on a
        // filter compiled before the fork.
        unsafe { c.pre_exec(move || seccompiler::apply_filter(&f).map_err(std::io::Error::other)) };
        let out = c.output().expect("run nfs-trace");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {err}");
        if cmd == "watch" {
            assert_one_line_error(&err, &format!("this kernel ({release}) has no BPF ring buffer: nfs-trace needs Linux 5.8 or later"));
        } else {
            // probes still prints its table, with the line as every hook's reason.
            assert!(String::from_utf8_lossy(&out.stdout).contains("needs Linux 5.8 or later"), "{cmd}: {err}");
        }
        assert!(!err.contains("map error") && !err.contains("failed to create map"), "{cmd}: {err}");
    }
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

/// Seconds arguments beyond what a Duration holds once panicked with a
/// backtrace ("cannot convert float seconds to Duration"): now every one is
/// bounded and says the allowed range, exit 2 like any bad flag.
#[test]
fn huge_seconds_are_one_clear_line_and_exit_2() {
    for args in [
        &["watch", "--duration", "1e20"][..],
        &["check", "--interval", "1e20", "--proc-root", "/nonexistent"],
        &["prove", "--mount", "/nonexistent", "--yes", "--timeout", "1e20"],
        &["watch", "--duration", "NaN"],
        &["check", "--interval=-1"],
        &["prove", "--mount", "/nonexistent", "--timeout", "inf"],
    ] {
        let (code, _, err) = run(args, false);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_one_line_error(&err, "more than 0 and at most 31536000 (a year)");
    }
}

/// `prove --server`'s arguments: a bad spec, option set or combination is
/// one line and exit 2 before anything is mounted.
#[test]
fn prove_server_usage_errors_are_one_line_and_exit_2() {
    for (args, needle) in [
        (&["prove"][..], "--mount"),
        (&["prove", "--mount", "/m", "--server", "10.0.0.5:/e"], "cannot be used with"),
        (&["prove", "--server", "10.0.0.5"], "want HOST[:PORT]:/EXPORT"),
        (&["prove", "--server", "fd00::5:/e"], "IPv6 address without brackets"),
        (&["prove", "--server", "h:99999:/e"], "bad port"),
        (&["prove", "--server", "h:/e", "--options", "vers=5"], "want 3, 4, 4.0, 4.1 or 4.2"),
        (&["prove", "--mount", "/m", "--options", "vers=3"], "cannot be used with"),
        (&["prove", "--mount", "/m", "--like", "/p"], "cannot be used with"),
    ] {
        let (code, _, err) = run(args, false);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_one_line_error(&err, needle);
    }
}

/// Without root, or without mount.nfs, prove --server says what to do in
/// one line and mounts nothing.
#[test]
fn prove_server_preflight_is_one_clear_line() {
    require_root();
    let (code, _, err) = run(&["prove", "--server", "127.0.0.1:/e", "--yes"], true);
    assert_eq!(code, 1, "{err}");
    assert_one_line_error(&err, "needs root; run it with sudo");
    if !["/sbin/mount.nfs", "/usr/sbin/mount.nfs"].iter().any(|p| std::path::Path::new(p).exists()) {
        let (code, _, err) = run(&["prove", "--server", "127.0.0.1:/e", "--yes"], false);
        assert_eq!(code, 1, "{err}");
        assert_one_line_error(&err, "mount.nfs not found: install nfs-common");
    }
    let left = std::fs::read_dir("/tmp").unwrap().flatten().filter(|e| e.file_name().to_string_lossy().starts_with("nfs-trace-prove.")).count();
    assert_eq!(left, 0, "a test mount directory was left in /tmp");
}

/// `--netns INODE|PID`: a value that names no namespace is one line and
/// exit 2 like any bad flag, before anything is attached (no root needed).
#[test]
fn bad_netns_values_are_one_clear_line_and_exit_2() {
    // A PID no process has: the highest PID Linux allows is 2^22 - 1.
    for (value, needle) in [
        ("abc", "is not a namespace inode, PID or namespace file"),
        ("4194304", "no process with PID 4194304"),
        ("0", "neither a PID nor a namespace inode"),
        ("99999999999", "too large for a namespace inode"),
        ("/etc/hostname", "not a network namespace file"),
    ] {
        let (code, _, err) = run(&["watch", "--netns", value], true);
        assert_eq!(code, 2, "--netns {value}: {err}");
        assert_one_line_error(&err, needle);
    }
    // A bad value is quoted back escaped: a terminal gets no control bytes.
    // (clap drops ESC sequences itself, but a carriage return passed, and
    // lets a value overwrite the line it is quoted in.)
    let (code, _, err) = run(&["watch", "--netns", "12\rnfs-trace: all good\x1b[2J"], true);
    assert_eq!(code, 2, "{err}");
    assert_one_line_error(&err, "12\\x0dnfs-trace: all good");
    assert!(!err.contains('\r') && !err.contains('\x1b'), "{err:?}");
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
        names[..4],
        [
            ("sock:inet_sock_set_state", "tracepoint"),
            ("tcp:tcp_retransmit_skb", "tracepoint"),
            ("tcp_connect", "kprobe"),
            ("tcp_connect", "fentry")
        ]
    );
    let sunrpc: Vec<&str> = names[4..].iter().map(|(n, k)| {
        assert_eq!(*k, "raw_tracepoint");
        *n
    }).collect();
    for want in ["rpc_socket_connect", "rpc_socket_state_change", "rpc_socket_close", "rpc_socket_error", "xprt_create", "xprt_destroy"] {
        assert!(sunrpc.contains(&want), "{want} in {sunrpc:?}");
    }
    // Without the sunrpc module (this project's CI host has no NFS at all)
    // the SunRPC rows say so rather than failing.
    if !std::path::Path::new("/sys/module/sunrpc").exists() {
        for h in &hooks[4..] {
            assert_eq!(h["attached"], false);
            assert!(h["detail"].as_str().unwrap().contains("sunrpc module not loaded"), "{h}");
        }
    }
    assert_eq!(hooks[0]["attached"], true, "the required tracepoint attaches on any test kernel");
    for h in hooks {
        assert!(!h["detail"].as_str().unwrap().is_empty());
        assert!(!h["kernels"].as_str().unwrap().is_empty());
    }
    // Where kprobes are absent (this project's CI host), the table says so.
    if !std::path::Path::new("/sys/bus/event_source/devices/kprobe").exists() {
        let kp = &hooks[2];
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

/// A fake /proc and /sys: `check` reads trees, so fixtures stand in for a
/// host with NFS mounts (this one has none).
fn fixture_tree(name: &str, mountinfo: &str, mountstats: &str, xprts: &[(&str, &str)]) -> std::path::PathBuf {
    let root = std::env::temp_dir().join(format!("nfs-trace-check-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("proc/self")).unwrap();
    std::fs::write(root.join("proc/self/mountinfo"), mountinfo).unwrap();
    std::fs::write(root.join("proc/self/mountstats"), mountstats).unwrap();
    for (dir, info) in xprts {
        let d = root.join("sys/kernel/sunrpc/xprt-switches").join(dir);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("xprt_info"), info).unwrap();
        std::fs::write(d.join("dstaddr"), "10.99.0.1\n").unwrap();
    }
    // Readable by nobody: `check` needs no privileges.
    Command::new("chmod").args(["-R", "a+rX"]).arg(&root).status().unwrap();
    root
}

const MOUNTINFO: &str = "36 25 0:32 / /mnt/v40 rw - nfs4 10.99.0.1:/ rw,vers=4.0,proto=tcp,addr=10.99.0.1\n\
37 25 0:33 / /mnt/v41 rw - nfs4 10.99.0.1:/ rw,vers=4.1,proto=tcp,noresvport,addr=10.99.0.1\n";

/// A Kubernetes node: a CSI driver's staging mount bound into two pods'
/// volume directories (one superblock, three mount points). `check` names
/// both pods with their volume, in JSON and in text.
#[test]
fn check_names_the_pods_a_kubelet_mount_serves() {
    let (a, b) = ("8f0c2b1e-3a4d-4c5e-9f60-7a8b9c0d1e2f", "0a1b2c3d-0000-4000-8000-000000000001");
    let g = "/var/lib/kubelet/plugins/kubernetes.io/csi/efs.csi.aws.com/abc/globalmount";
    let mi = format!(
        "40 25 0:40 / {g} rw - nfs4 10.99.0.1:/ rw,vers=4.1,proto=tcp,addr=10.99.0.1\n\
41 25 0:40 / /var/lib/kubelet/pods/{a}/volumes/kubernetes.io~csi/pv-efs/mount rw - nfs4 10.99.0.1:/ rw,vers=4.1,proto=tcp,addr=10.99.0.1\n\
42 25 0:40 / /var/lib/kubelet/pods/{b}/volumes/kubernetes.io~csi/pv-efs/mount rw - nfs4 10.99.0.1:/ rw,vers=4.1,proto=tcp,addr=10.99.0.1\n"
    );
    let root = fixture_tree("pods", &mi, "", &[]);
    let (p, s) = (root.join("proc").to_string_lossy().into_owned(), root.join("sys").to_string_lossy().into_owned());
    let (code, out, err) = run(&["check", "--json", "--proc-root", &p, "--sys-root", &s], true);
    assert_eq!((code, serde_json::from_str::<serde_json::Value>(out.trim()).unwrap()["mounts"].as_array().unwrap().len()), (0, 1), "one superblock: {out}{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let m = v["mounts"].as_array().unwrap();
    let pods: Vec<(&str, &str)> = m[0]["pods"].as_array().unwrap().iter().map(|p| (p["uid"].as_str().unwrap(), p["volume"].as_str().unwrap())).collect();
    assert_eq!(pods, [(b, "pv-efs"), (a, "pv-efs")]);
    let (_, text, _) = run(&["check", "--proc-root", &p, "--sys-root", &s], true);
    for uid in [a, b] {
        assert!(text.contains(&format!("pod {uid} volume pv-efs")), "{text}");
    }
}

#[test]
fn check_flags_mounts_that_remember_their_port_without_root() {
    let stats = "device 10.99.0.1:/ mounted on /mnt/v40 with fstype nfs4 statvers=1.1\n\
\topts:\trw,vers=4.0\n\txprt:\ttcp 723 0 3 0 0 12 12 0 12 0 2 0 0\n\
device 10.99.0.1:/ mounted on /mnt/v41 with fstype nfs4 statvers=1.1\n\
\topts:\trw,vers=4.1,noresvport\n\txprt:\ttcp 0 0 2 0 0 12 12 0 12 0 2 0 0\n";
    let root = fixture_tree(
        "flag",
        MOUNTINFO,
        stats,
        &[("switch-1/xprt-1-tcp", "main_xprt=1\nsrc_port=723\ndst_port=2049\n"), ("switch-2/xprt-2-tcp", "main_xprt=1\nsrc_port=41234\ndst_port=2049\n")],
    );
    let p = root.join("proc").to_string_lossy().into_owned();
    let s = root.join("sys").to_string_lossy().into_owned();
    let (code, out, err) = run(&["check", "--json", "--proc-root", &p, "--sys-root", &s], true);
    assert_eq!(code, 2, "a reuse-prone mount is flagged with exit 2: {err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["flagged"], 1);
    let m = v["mounts"].as_array().unwrap();
    assert_eq!(m[0]["mountpoint"], "/mnt/v40");
    assert_eq!(m[0]["flagged"], true);
    assert_eq!(m[0]["remembered_ports"], serde_json::json!([723]));
    assert_eq!(m[0]["vers"], "4.0");
    assert_eq!(m[1]["flagged"], false);
    assert_eq!(m[1]["noresvport"], true);
    // Each mount's own transports: 723 is the one /mnt/v40 remembers, so
    // 41234 is /mnt/v41's (not both ports listed for both mounts).
    assert_eq!(m[0]["live_ports"], serde_json::json!([723]));
    assert_eq!(m[1]["live_ports"], serde_json::json!([41234]));
    // The text form says the same.
    let (code, text, _) = run(&["check", "--proc-root", &p, "--sys-root", &s], true);
    assert_eq!(code, 2);
    assert!(text.contains("/mnt/v40") && text.contains("SAME PORT"), "{text}");
    assert!(!text.contains("mnt:["), "one namespace: no namespace line:\n{text}");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn check_is_quiet_when_nothing_reuses() {
    let stats = "device 10.99.0.1:/ mounted on /mnt/v41 with fstype nfs4 statvers=1.1\n\
\topts:\trw,vers=4.1\n\txprt:\ttcp 0 0 2 0 0 12 12 0 12 0 2 0 0\n";
    let root = fixture_tree("quiet", &MOUNTINFO.lines().nth(1).unwrap().to_string(), stats, &[]);
    let p = root.join("proc").to_string_lossy().into_owned();
    let s = root.join("sys").to_string_lossy().into_owned();
    let (code, out, err) = run(&["check", "--proc-root", &p, "--sys-root", &s, "--interval", "0.1"], true);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("/mnt/v41") && out.contains("(+0)"), "{out}");
    let empty = fixture_tree("empty", "22 1 0:21 / /proc rw - proc proc rw\n", "", &[]);
    let p = empty.join("proc").to_string_lossy().into_owned();
    let (code, out, _) = run(&["check", "--proc-root", &p], true);
    assert_eq!(code, 0);
    assert!(out.contains("No NFS mounts"), "{out}");
    let (code, _, err) = run(&["check", "--proc-root", "/nonexistent"], true);
    assert_ne!(code, 0);
    assert_one_line_error(&err, "cannot read mounts");
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_dir_all(&empty);
}

/// Mount-side addresses join the kernel side's: `addr=::ffff:a.b.c.d` is the
/// IPv4 server, and a zone-scoped link-local `addr=fe80::1%eth0` matches
/// sysfs's `fe80::1%2` (the scope as a number), in `check` and in `prove`.
#[test]
fn mapped_and_link_local_servers_join_their_transports() {
    let mi = "40 25 0:40 / /mnt/mapped rw - nfs 10.99.0.5:/x rw,vers=3,proto=tcp6,port=2049,addr=::ffff:10.99.0.5\n\
41 25 0:41 / /mnt/ll rw - nfs4 [fe80::1%eth0]:/ rw,vers=4.1,proto=tcp6,addr=fe80::1%eth0\n";
    let stats = "device 10.99.0.5:/x mounted on /mnt/mapped with fstype nfs statvers=1.1\n\
\topts:\trw,vers=3\n\txprt:\ttcp 812 1 1 0 0 12 12 0 12 0 2 0 0\n\
device [fe80::1%eth0]:/ mounted on /mnt/ll with fstype nfs4 statvers=1.1\n\
\topts:\trw,vers=4.1\n\txprt:\ttcp 0 0 1 0 0 12 12 0 12 0 2 0 0\n";
    let root = fixture_tree(
        "addrs",
        mi,
        stats,
        &[("switch-1/xprt-1-tcp", "main_xprt=1\nsrc_port=812\ndst_port=2049\n"), ("switch-2/xprt-2-tcp", "main_xprt=1\nsrc_port=901\ndst_port=2049\n")],
    );
    let sw = root.join("sys/kernel/sunrpc/xprt-switches");
    std::fs::write(sw.join("switch-1/xprt-1-tcp/dstaddr"), "::ffff:10.99.0.5\n").unwrap();
    std::fs::write(sw.join("switch-2/xprt-2-tcp/dstaddr"), "fe80::1%2\n").unwrap();
    let p = root.join("proc").to_string_lossy().into_owned();
    let s = root.join("sys").to_string_lossy().into_owned();
    let (code, out, err) = run(&["check", "--json", "--proc-root", &p, "--sys-root", &s], true);
    assert_eq!(code, 2, "/mnt/mapped remembers 812: flagged: {err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let m = v["mounts"].as_array().unwrap();
    assert_eq!(m[0]["server"], "10.99.0.5");
    assert_eq!(m[0]["live_ports"], serde_json::json!([812]));
    assert_eq!(m[1]["server"], "fe80::1%eth0");
    assert_eq!(m[1]["live_ports"], serde_json::json!([901]));
    // prove takes the link-local server: it gets as far as asking (stdin
    // is no terminal here, so it stops there, having done nothing).
    let (code, _, err) = run(&["prove", "--mount", "/mnt/ll", "--proc-root", &p, "--sys-root", &s], true);
    assert_eq!(code, 1, "{err}");
    assert_one_line_error(&err, "confirm with --yes");
    let _ = std::fs::remove_dir_all(&root);
}

/// A fake /proc with two mount namespaces: the host's (pid 1, `self`) and a
/// container's (pids 300, 301, alone in netns 21) that sees the host's mount
/// through a bind mount and has one of its own. `check` lists each
/// superblock once, with its namespaces, as nobody.
#[test]
fn check_sees_every_mount_namespace() {
    use std::os::unix::fs::symlink;
    let root = std::env::temp_dir().join(format!("nfs-trace-check-mntns-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let host = "36 25 0:52 / /mnt/shared rw - nfs 10.99.0.1:/export rw,vers=3,proto=tcp,port=2049,addr=10.99.0.1\n";
    let ct = "501 500 0:52 / /data rw - nfs 10.99.0.1:/export rw,vers=3,proto=tcp,port=2049,addr=10.99.0.1\n\
502 500 0:60 / /srv/own rw - nfs4 10.99.0.1:/ rw,vers=4.1,proto=tcp,addr=10.99.0.1\n";
    for (pid, mnt, net, mi) in [(1, 10, 20, host), (300, 11, 21, ct), (301, 11, 21, ct)] {
        let dir = root.join("proc").join(pid.to_string());
        std::fs::create_dir_all(dir.join("ns")).unwrap();
        symlink(format!("mnt:[{mnt}]"), dir.join("ns/mnt")).unwrap();
        symlink(format!("net:[{net}]"), dir.join("ns/net")).unwrap();
        std::fs::write(dir.join("mountinfo"), mi).unwrap();
        std::fs::write(dir.join("mountstats"), "").unwrap();
    }
    symlink("1", root.join("proc/self")).unwrap();
    std::fs::create_dir_all(root.join("sys")).unwrap();
    Command::new("chmod").args(["-R", "a+rX"]).arg(&root).status().unwrap();
    let p = root.join("proc").to_string_lossy().into_owned();
    let s = root.join("sys").to_string_lossy().into_owned();
    let (code, out, err) = run(&["check", "--json", "--proc-root", &p, "--sys-root", &s], true);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let m = v["mounts"].as_array().unwrap();
    let points: Vec<&str> = m.iter().map(|m| m["mountpoint"].as_str().unwrap()).collect();
    assert_eq!(points, ["/mnt/shared", "/srv/own"], "each superblock once, the host's mount point first");
    assert_eq!((m[0]["mntns"].as_u64(), m[0]["netns"].as_u64()), (Some(10), None), "no evidence for the host's mount: netns not known");
    assert_eq!(m[0]["seen_in"][1]["mountpoint"], "/data");
    assert_eq!((m[1]["mntns"].as_u64(), m[1]["netns"].as_u64()), (Some(11), Some(21)), "the container's mount in the container's netns");
    assert!(v["unseen"].as_array().is_some(), "what cannot be seen is a JSON field: {v}");
    let (_, text, _) = run(&["check", "--proc-root", &p, "--sys-root", &s], true);
    assert!(text.contains("mnt:[11] net:[21]"), "human lines name the namespaces when several are involved:\n{text}");
    assert!(text.contains("also at /data (mnt:[11])"), "{text}");
    let _ = std::fs::remove_dir_all(&root);
}
