//! Property tests of every parser that reads /proc, sysfs, tracefs, the
//! kernel log, BTF, netlink or ring buffer bytes: many mutated inputs each
//! (a million for the text parsers), and none may panic. Inputs are
//! mutations of real samples (byte flips, splices, truncations, repeated
//! fields, overwritten length words), from a fixed-seed generator so a
//! failure reproduces.
use crate::{
    host::kmsg, host::mountinfo, host::mountstats, host::sock_diag, host::sunrpc_sysfs, kernel::btf, kernel::decode,
    kernel::tracefs,
};

const CASES: usize = 1_000_000;

/// xorshift64*: small, deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes that matter to these parsers, to splice in.
const INTERESTING: &[&[u8]] = &[
    b" ", b"\t", b"\n", b":", b";", b"=", b",", b"-", b"/", b"\\", b"\\040", b"\\0", b"[", b"]", b" - ",
    b"xprt:", b"tcp", b"device ", b" mounted on ", b" with fstype ", b"nfs4", b"offset:", b"size:", b"field:",
    b"nfs: server ", b"not responding", b"OK", b"4294967296", b"-1", b"99999999999999999999", b"\xff\xfe",
];

fn mutate(rng: &mut Rng, seed: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(seed);
    for _ in 0..1 + rng.below(4) {
        let len = out.len();
        match rng.below(6) {
            0 if len > 0 => {
                let i = rng.below(len);
                out[i] = rng.next() as u8;
            }
            1 => {
                let i = rng.below(len + 1);
                let ins = INTERESTING[rng.below(INTERESTING.len())];
                out.splice(i..i, ins.iter().copied());
            }
            2 if len > 0 => {
                let i = rng.below(len);
                out.truncate(i);
            }
            3 if len > 1 => {
                let a = rng.below(len);
                let b = (a + rng.below(16)).min(len);
                out.drain(a..b);
            }
            4 if len > 0 => {
                let a = rng.below(len);
                let b = (a + rng.below(32)).min(len);
                let chunk: Vec<u8> = out[a..b].to_vec();
                let i = rng.below(out.len() + 1);
                out.splice(i..i, chunk);
            }
            _ => out.push(rng.next() as u8),
        }
    }
}

/// Runs `f` on CASES mutations of the samples.
fn fuzz(seed: u64, samples: &[&[u8]], mut f: impl FnMut(&[u8])) {
    let mut rng = Rng(seed);
    let mut buf = Vec::new();
    for _ in 0..CASES {
        let s = samples[rng.below(samples.len())];
        mutate(&mut rng, s, &mut buf);
        f(&buf);
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn mountinfo_parser_never_panics() {
    let samples: &[&[u8]] = &[
        b"36 25 0:32 / /mnt/data rw,relatime shared:1 - nfs4 10.99.0.1:/ rw,vers=4.1,addr=10.99.0.1\n",
        b"37 25 0:33 / /mnt/with\\040space rw - nfs [fd00::1]:/export rw,vers=3,port=20049,noresvport\n",
        b"22 1 0:21 / /proc rw,nosuid - proc proc rw\n",
    ];
    fuzz(1, samples, |b| {
        for m in mountinfo::parse_mountinfo(&text(b)) {
            let _ = (m.port(), m.has_flag("noresvport"));
        }
    });
}

#[test]
fn mountstats_parser_never_panics() {
    let samples: &[&[u8]] = &[
        b"device 10.99.0.1:/ mounted on /mnt/v41 with fstype nfs4 statvers=1.1\n\topts:\trw,vers=4.1,nconnect=2\n\txprt:\ttcp 0 0 2 0 0 12 12 0 12 0 2 0 0\n\txprt:\ttcp 875 1 1 0 3 7 7 0 7 0\n",
        b"device proc mounted on /proc with fstype proc\n",
    ];
    fuzz(2, samples, |b| {
        for m in mountstats::parse(&text(b)) {
            let _ = (m.opt("vers"), m.has_flag("noresvport"));
        }
    });
}

#[test]
fn tracefs_format_parser_never_panics() {
    let samples: &[&[u8]] = &[
        b"name: inet_sock_set_state\nformat:\n\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;\n\tfield:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;\n",
        b"\tfield:__u16 protocol;\toffset:30;\tsize:2;\tsigned:0;\n",
    ];
    fuzz(3, samples, |b| {
        let f = tracefs::Format::parse(&text(b));
        let _ = f.field("skaddr");
    });
}

#[test]
fn sysfs_and_kmsg_parsers_never_panic() {
    let samples: &[&[u8]] = &[
        b"main_xprt=1\nsrc_port=790\ndst_port=2049\n",
        b"nfs: server 10.99.0.1 not responding, still trying",
        b"nfs: server filer OK",
    ];
    fuzz(4, samples, |b| {
        let t = text(b);
        let kv = sunrpc_sysfs::key_values(&t);
        let _ = kv.get("src_port").and_then(|v| v.parse::<u16>().ok());
        let _ = kmsg::parse(&t);
    });
}

#[test]
fn ring_buffer_decoder_never_panics() {
    // A real-sized record of each kind, then mutated (any length, any kind).
    let mut conn = vec![0u8; std::mem::size_of::<nfs_trace_common::ConnEvent>()];
    conn[0] = nfs_trace_common::kind::CONNECT_DONE;
    let mut xprt = vec![0u8; std::mem::size_of::<nfs_trace_common::XprtEvent>()];
    xprt[0] = nfs_trace_common::kind::XPRT;
    xprt[1] = nfs_trace_common::xprt_event::CONNECT;
    let samples: &[&[u8]] = &[&conn, &xprt];
    fuzz(5, samples, |b| {
        let _ = decode::decode(b);
    });
}

/// Words that matter in binary headers (lengths, counts, kinds, ids).
const INTERESTING_U32: &[u32] = &[0, 1, 2, 3, 4, 12, 15, 16, 17, 20, 24, 0x7fff, 0xffff, 0x1_0000, 0x7fff_ffff, 0x8000_0000, u32::MAX];

/// [`mutate`], plus overwriting an aligned word with an interesting value,
/// a quarter of the time within the first `header` bytes (where the
/// lengths and offsets that decide everything else sit).
fn mutate_bin(rng: &mut Rng, seed: &[u8], header: usize, out: &mut Vec<u8>) {
    mutate(rng, seed, out);
    for _ in 0..1 + rng.below(3) {
        if out.len() < 4 {
            return;
        }
        let span = if rng.below(4) == 0 { header.min(out.len()) } else { out.len() };
        let at = (rng.below(span.saturating_sub(3).max(1)) & !3).min(out.len() - 4);
        let v = if rng.below(3) == 0 { rng.next() as u32 } else { INTERESTING_U32[rng.below(INTERESTING_U32.len())] };
        out[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
}

/// The BTF reader on mutations of this host's own vmlinux BTF (its first
/// 1000 types and their strings: the whole 5 MB file would take minutes per
/// thousand cases in a debug build), both as base BTF and as split BTF on
/// top of the unmutated sample. CI runs on a kernel with BTF: without it
/// this fails.
#[test]
fn btf_reader_never_panics() {
    let path = std::path::Path::new("/sys/kernel/btf/vmlinux");
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e} (this test needs a kernel with BTF)", path.display()));
    let sample = btf::prefix_sample(&data, 1000).unwrap();
    // Lookups that succeed on the sample, chosen and checked with btf-rs.
    let reference = btf_rs::Btf::from_bytes(&sample).unwrap();
    let mut lookups: Vec<(String, String, u32)> = Vec::new();
    for id in 1..=1000 {
        let Ok(btf_rs::Type::Struct(st)) = reference.resolve_type_by_id(id) else { continue };
        let Ok(name) = reference.resolve_name(&st) else { continue };
        let Some(m) = st.members.iter().find(|m| reference.resolve_name(*m).is_ok_and(|n| !n.is_empty()) && m.bitfield_size().unwrap_or(0) == 0) else { continue };
        if !name.is_empty() && m.bit_offset() % 8 == 0 && !lookups.iter().any(|l| l.0 == name) {
            lookups.push((name, reference.resolve_name(m).unwrap(), m.bit_offset() / 8));
        }
        if lookups.len() == 6 {
            break;
        }
    }
    assert!(lookups.len() >= 3, "the sample has structs to look up: {lookups:?}");
    let base = btf::KernelBtf::from_bytes(sample.clone()).unwrap();
    for (s, m, want) in &lookups {
        assert_eq!(base.member_offset(s, m).unwrap(), *want, "{s}.{m} in the unmutated sample, as btf-rs reads it");
    }
    let look = |b: &btf::KernelBtf| {
        for (s, m, _) in &lookups {
            let _ = b.member_offset(s, m);
        }
        let _ = b.member_offset("sock_xprt", "xprt.addr");
        let _ = b.func_id("tcp_connect");
    };
    let mut rng = Rng(6);
    let mut buf = Vec::new();
    for i in 0..3000 {
        mutate_bin(&mut rng, &sample, 24, &mut buf);
        if i % 2 == 0 {
            if let Ok(b) = btf::KernelBtf::from_bytes(buf.clone()) {
                look(&b);
            }
        } else if let Ok(b) = base.with_module_bytes(buf.clone()) {
            look(&b);
        }
    }
}

/// The netlink messages of a datagram, each with its padding.
fn netlink_messages(d: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 16 <= d.len() {
        let len = u32::from_ne_bytes(d[off..off + 4].try_into().unwrap()) as usize;
        let end = (off + ((len + 3) & !3)).min(d.len());
        out.push(&d[off..end]);
        off = end;
    }
    out
}

/// The sock_diag reply decoder on mutations of real replies from this
/// host's kernel: the message listing the test's own connection, the
/// dump's NLMSG_DONE, both in one datagram, and an NLMSG_ERROR made from the
/// real DONE header (the kernel's error reply: header, -errno, the request's
/// header). Only those, not the whole dump, so the samples are the same on
/// every run (but for the socket's port and cookie) and a failure reproduces.
#[test]
fn sock_diag_decoder_never_panics() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (_srv, _) = l.accept().unwrap();
    let me = c.local_addr().unwrap().port();
    let dump = sock_diag::dump_raw(libc::AF_INET as u8).unwrap();
    let msgs: Vec<&[u8]> = dump.iter().flat_map(|d| netlink_messages(d)).collect();
    let ours = *msgs
        .iter()
        .find(|m| sock_diag::parse_datagram(m).is_ok_and(|(_, v)| v.iter().any(|s| s.lport == me && s.state == 1)))
        .expect("our connection is in the kernel's reply");
    let done = *msgs.last().expect("a reply");
    assert_eq!(sock_diag::parse_datagram(done).unwrap(), (true, vec![]), "the dump ends with NLMSG_DONE");
    let both = [ours, done].concat();
    let mut error = done.to_vec();
    error[4..6].copy_from_slice(&2u16.to_ne_bytes()); // NLMSG_ERROR
    error.truncate(16);
    error.extend_from_slice(&(-libc::EPERM).to_ne_bytes());
    error.extend_from_slice(&done[..16]);
    let len = error.len() as u32;
    error[..4].copy_from_slice(&len.to_ne_bytes());
    assert!(sock_diag::parse_datagram(&error).is_err());
    let samples: [&[u8]; 4] = [ours, done, &both, &error];
    let mut rng = Rng(7);
    let mut buf = Vec::new();
    for _ in 0..CASES / 10 {
        let s = samples[rng.below(samples.len())];
        mutate_bin(&mut rng, s, 20, &mut buf);
        let _ = sock_diag::parse_datagram(&buf);
    }
}
