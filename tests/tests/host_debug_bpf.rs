//! `watch --debug-bpf`: the kernel programs' diagnostics on stderr. Off by
//! default and then free: no logging branches run (checked by the unit
//! test `debug_bpf_logs_a_failed_read_and_costs_nothing_when_off`, which
//! also provokes a diagnostic) and the log map is one page. Ground truth:
//! the test's own sockets and the kernel's description of the tracer's maps
//! (/proc/PID/fdinfo).
use nfs_trace_tests::host::*;

/// `max_entries` of the tracer's BPF ring buffer maps (for a ring buffer:
/// its size in bytes), from /proc/PID/fdinfo.
fn ringbuf_sizes(pid: u32) -> Vec<u64> {
    const BPF_MAP_TYPE_RINGBUF: u64 = 27;
    let mut out = Vec::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
        let link = std::fs::read_link(fd.path()).map(|l| l.to_string_lossy().into_owned()).unwrap_or_default();
        if link != "anon_inode:bpf-map" {
            continue;
        }
        let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_string_lossy())).unwrap_or_default();
        let field = |k: &str| info.lines().find_map(|l| l.strip_prefix(k)).and_then(|v| v.trim().parse::<u64>().ok());
        if field("map_type:") == Some(BPF_MAP_TYPE_RINGBUF) {
            out.extend(field("max_entries:"));
        }
    }
    out.sort_unstable();
    out
}

fn bpf_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.starts_with("nfs-trace: bpf:")).collect()
}

#[test]
fn debug_bpf_attaches_cleanly_and_is_quiet_on_a_healthy_path() {
    let _srv = Server::start("127.0.4.3:2049");
    for debug in [true, false] {
        let args: &[&str] = if debug { &["--debug-bpf"] } else { &[] };
        let tracer = Tracer::start(args);
        assert_eq!(tracer.attached["debug_bpf"], debug, "{}", tracer.attached);
        // EVENTS (1 MiB by default) and aya-log's map: 128 KiB with the flag,
        // one page without (nothing writes or reads it then).
        let page = 4096;
        let want = if debug { vec![128 * 1024, 1 << 20] } else { vec![page, 1 << 20] };
        assert_eq!(ringbuf_sizes(tracer.pid()), want, "debug={debug}");
        let p = connect_and_abort("127.0.4.3:2049", None);
        let recs = tracer.stop();
        let c = recs.to("connect", "127.0.4.3", 2049);
        assert_eq!(c.len(), 1, "debug={debug}: {:?}", recs.all);
        assert_eq!(c[0]["sport"], p, "debug={debug}");
        assert_eq!(c[0]["outcome"], "established");
        assert!(bpf_lines(&recs.stderr).is_empty(), "a healthy path logs nothing (debug={debug}):\n{}", recs.stderr);
        let start = recs.stderr.lines().find(|l| l.starts_with("nfs-trace: attached")).unwrap();
        assert_eq!(start.contains("kernel diagnostics on (--debug-bpf)"), debug, "{start}");
    }
}
