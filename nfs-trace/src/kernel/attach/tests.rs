//! The hook table, the config built from real format files, the verifier
//! on every program, and --debug-bpf end to end.
    use super::*;
use crate::kernel::{config::build_config, hooks::HookKind};
use nfs_trace_common::{NO_OFFSET, SET_STATE_DIRECT};

    /// Every tracepoint program of the object passes this kernel's verifier
    /// with this kernel's config, including the SunRPC ones, which are
    /// otherwise only loaded where sunrpc is (loading a raw tracepoint
    /// program needs no tracepoint). Needs root, tracefs and BTF, which CI
    /// has: without them it fails, saying which is missing.
    #[test]
    fn tracepoint_programs_pass_the_verifier() {
        let env = crate::kernel::env::preflight(None, None)
            .unwrap_or_else(|e| panic!("this test loads BPF programs and needs root, tracefs and kernel BTF: {e:#}"));
        crate::kernel::env::raise_memlock();
        let btf = KernelBtf::from_file(&env.btf).unwrap();
        // Both builds: as run by default and with --debug-bpf's logging.
        for debug in [0, 1] {
            let mut config = build_config(&[2049], &env.tracefs, &btf).unwrap();
            config.debug = debug;
            let mut ebpf = EbpfLoader::new()
                .btf(None)
                .override_global(GLOBAL_CONFIG, &config, true)
                .load(EBPF_OBJECT)
                .unwrap();
            for h in HOOKS {
                match h.kind {
                    HookKind::Tracepoint => {
                        let tp: &mut TracePoint = program(&mut ebpf, h.program).unwrap();
                        tp.load().unwrap_or_else(|e| panic!("{} (debug={debug}): {e}", h.program));
                    }
                    HookKind::RawTracepoint => {
                        let tp: &mut RawTracePoint = program(&mut ebpf, h.program).unwrap();
                        tp.load().unwrap_or_else(|e| panic!("{} (debug={debug}): {e}", h.program));
                    }
                    HookKind::Kprobe | HookKind::Fentry => {}
                }
            }
        }
    }

    /// Collects the programs' log records (what `--debug-bpf` prints).
    #[derive(Default)]
    struct Collect(std::sync::Mutex<Vec<String>>);

    impl log::Log for Collect {
        fn enabled(&self, _: &log::Metadata) -> bool {
            true
        }
        fn log(&self, r: &log::Record) {
            self.0.lock().unwrap().push(crate::kernel::bpf_log::line(r.level(), &r.args().to_string()));
        }
        fn flush(&self) {}
    }

    /// `union bpf_attr` for BPF_PROG_TEST_RUN.
    #[repr(C)]
    #[derive(Default)]
    struct TestRunAttr {
        prog_fd: u32,
        retval: u32,
        data_size_in: u32,
        data_size_out: u32,
        data_in: u64,
        data_out: u64,
        repeat: u32,
        duration: u32,
        ctx_size_in: u32,
        ctx_size_out: u32,
        ctx_in: u64,
        ctx_out: u64,
        flags: u32,
        cpu: u32,
        batch_size: u32,
        _pad: u32,
    }

    /// Runs a raw tracepoint program once with `args` as its arguments
    /// (BPF_PROG_TEST_RUN, 5.10+): no sunrpc module needed.
    fn test_run_raw_tp(fd: std::os::fd::BorrowedFd, args: &[u64]) -> std::io::Result<()> {
        use std::os::fd::AsRawFd as _;
        const BPF_PROG_TEST_RUN: libc::c_long = 10;
        let attr = TestRunAttr {
            prog_fd: fd.as_raw_fd() as u32,
            ctx_size_in: size_of_val(args) as u32,
            ctx_in: args.as_ptr() as u64,
            ..Default::default()
        };
        // SAFETY: bpf(2) reads a valid, zero-padded attr whose ctx_in
        // pointer (args) outlives the call.
        let rc = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_TEST_RUN, &attr as *const TestRunAttr, size_of::<TestRunAttr>() as u32) };
        if rc < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
    }

    /// `--debug-bpf` end to end in the kernel: a SunRPC program run with a
    /// socket pointer no kernel would pass (a user address) fails to read
    /// `socket->sk`, and says so through the log map, once; the same run
    /// without the flag logs nothing. And the flag is free when off: the
    /// verifier removes the logging branches (fewer translated
    /// instructions than with it). Needs root; fails without it.
    #[test]
    fn debug_bpf_logs_a_failed_read_and_costs_nothing_when_off() {
        use std::os::fd::AsFd as _;
        let env = crate::kernel::env::preflight(None, None)
            .expect("this test loads BPF programs: run it as root on a kernel with tracefs and BTF");
        crate::kernel::env::raise_memlock();
        let btf = KernelBtf::from_file(&env.btf).unwrap();
        let mut sizes = Vec::new();
        for debug in [false, true] {
            let mut config = build_config(&[2049], &env.tracefs, &btf).unwrap();
            config.debug = u32::from(debug);
            let mut ebpf = EbpfLoader::new()
                .btf(None)
                .override_global(GLOBAL_CONFIG, &config, true)
                .load(EBPF_OBJECT)
                .unwrap();
            let got: &'static Collect = Box::leak(Box::default());
            let mut logs = aya_log::EbpfLogger::init_with_logger(&mut ebpf, got).unwrap();
            let tp: &mut RawTracePoint = program(&mut ebpf, "rpc_socket_connect").unwrap();
            tp.load().unwrap();
            // xprt, socket, error.
            test_run_raw_tp(tp.fd().unwrap().as_fd(), &[0x1000, 0x2000, 0]).expect("BPF_PROG_TEST_RUN");
            logs.flush();
            let lines = got.0.lock().unwrap().clone();
            if debug {
                let want = format!("nfs-trace: bpf: error: probe read of 8 bytes at 2000+{} failed: error -", config.sock.socket_sk);
                assert_eq!(lines.len(), 1, "one diagnostic: {lines:?}");
                assert!(lines[0].starts_with(&want), "{lines:?}, want {want}");
            } else {
                assert!(lines.is_empty(), "nothing logged without --debug-bpf: {lines:?}");
            }
            let tp: &mut TracePoint = program(&mut ebpf, "inet_sock_set_state").unwrap();
            tp.load().unwrap();
            let size = tp.info().unwrap().size_translated().expect("translated size (root)");
            eprintln!("inet_sock_set_state with debug={debug}: {size} bytes translated");
            sizes.push(size);
        }
        assert!(sizes[0] < sizes[1], "without --debug-bpf the verifier drops the logging: {sizes:?}");
    }

    /// A fake tracefs holding one `sock:inet_sock_set_state` format file.
    fn tracefs_with(dir: &Path, format: &str) {
        let d = dir.join("events/sock/inet_sock_set_state");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("format"), format).unwrap();
    }

    /// The record layout of 6.x kernels (`protocol` a __u16), as tracefs
    /// prints it.
    const FORMAT_U16_PROTOCOL: &str = "name: inet_sock_set_state\nformat:\n\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;\n\
\tfield:int oldstate;\toffset:16;\tsize:4;\tsigned:1;\n\
\tfield:int newstate;\toffset:20;\tsize:4;\tsigned:1;\n\
\tfield:__u16 sport;\toffset:24;\tsize:2;\tsigned:0;\n\
\tfield:__u16 dport;\toffset:26;\tsize:2;\tsigned:0;\n\
\tfield:__u16 family;\toffset:28;\tsize:2;\tsigned:0;\n\
\tfield:__u16 protocol;\toffset:30;\tsize:2;\tsigned:0;\n\
\tfield:__u8 saddr[4];\toffset:32;\tsize:4;\tsigned:0;\n\
\tfield:__u8 daddr[4];\toffset:36;\tsize:4;\tsigned:0;\n\
\tfield:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;\n\
\tfield:__u8 daddr_v6[16];\toffset:56;\tsize:16;\tsigned:0;\n";

    /// The program's constant-offset fast path is chosen from the kernel's
    /// format file, and only for exactly the layout it was compiled for: a
    /// one-byte `protocol` (older kernels; same offsets up to it) or any
    /// moved field takes the probed path, with the file's own offsets.
    #[test]
    fn fast_field_path_only_for_its_exact_layout() {
        let dir = std::env::temp_dir().join(format!("nfs-trace-hooks-test-{}", std::process::id()));
        let empty_btf = {
            let mut b = vec![0u8; 24];
            b[..2].copy_from_slice(&0xeb9f_u16.to_le_bytes());
            b[2] = 1;
            b[4..8].copy_from_slice(&24u32.to_le_bytes());
            KernelBtf::from_bytes(b).unwrap()
        };
        let config = |format: &str| {
            tracefs_with(&dir, format);
            build_config(&[2049], &dir, &empty_btf).unwrap()
        };

        let c = config(FORMAT_U16_PROTOCOL);
        assert_eq!(c.set_state_direct, 1, "the layout the fast path was compiled for");
        assert_eq!(c.set_state, SET_STATE_DIRECT);

        let u8_protocol = FORMAT_U16_PROTOCOL.replace("__u16 protocol;\toffset:30;\tsize:2", "__u8 protocol;\toffset:30;\tsize:1");
        let c = config(&u8_protocol);
        assert_eq!(c.set_state_direct, 0, "a __u8 protocol must take the probed path");
        assert_eq!((c.set_state.protocol, c.set_state.protocol_size), (30, 1));

        let moved = FORMAT_U16_PROTOCOL.replace("daddr_v6[16];\toffset:56", "daddr_v6[16];\toffset:60");
        let c = config(&moved);
        assert_eq!(c.set_state_direct, 0, "a moved field must take the probed path");
        assert_eq!(c.set_state.daddr_v6, 60);
        // Without BTF no struct offset is invented.
        assert_eq!(c.sock.skc_num, NO_OFFSET);
        std::fs::remove_dir_all(&dir).unwrap();
    }
