//! Property tests of every parser that reads /proc, sysfs, tracefs, the
//! kernel log or ring buffer bytes: a million mutated inputs each, and none
//! may panic. Inputs are mutations of real samples (byte flips, splices,
//! truncations, repeated fields), from a fixed-seed generator so a failure
//! reproduces.
use crate::{kernel::decode, host::kmsg, host::mountinfo, host::mountstats, host::sunrpc_sysfs, kernel::tracefs};

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
