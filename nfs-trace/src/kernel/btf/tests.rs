use std::path::Path;

use super::*;

/// Builds BTF blobs by hand, record by record, as in btf.rst.
struct Builder {
    types: Vec<u8>,
    strs: Vec<u8>,
    next_id: u32,
    /// Offset of this blob's first string (non-zero for split BTF).
    str_base: u32,
}

impl Builder {
    fn new() -> Self {
        Self { types: vec![], strs: vec![0], next_id: 1, str_base: 0 }
    }

    /// Split BTF continuing `base`'s ids and string offsets.
    fn split_of(base: &Builder) -> Self {
        Self { types: vec![], strs: vec![0], next_id: base.next_id, str_base: base.strs.len() as u32 }
    }

    fn name(&mut self, s: &str) -> u32 {
        if s.is_empty() {
            return 0;
        }
        let off = self.str_base + self.strs.len() as u32;
        self.strs.extend_from_slice(s.as_bytes());
        self.strs.push(0);
        off
    }

    fn words(&mut self, ws: &[u32]) {
        for w in ws {
            self.types.extend_from_slice(&w.to_le_bytes());
        }
    }

    fn head(&mut self, name: &str, kind: u32, vlen: u32, kflag: bool, size_or_type: u32) -> u32 {
        let n = self.name(name);
        self.words(&[n, (u32::from(kflag) << 31) | (kind << 24) | vlen, size_or_type]);
        self.next_id += 1;
        self.next_id - 1
    }

    fn int(&mut self, name: &str, size: u32, bits: u32) -> u32 {
        let id = self.head(name, kind::INT, 0, false, size);
        self.words(&[bits]);
        id
    }

    fn refer(&mut self, kind: u32, name: &str, target: u32) -> u32 {
        self.head(name, kind, 0, false, target)
    }

    /// members: (name, type, bit offset, bitfield size; non-zero sets kind_flag).
    fn composite(&mut self, kind: u32, name: &str, size: u32, members: &[(&str, u32, u32, u32)]) -> u32 {
        let kflag = members.iter().any(|m| m.3 != 0);
        let id = self.head(name, kind, members.len() as u32, kflag, size);
        for &(mname, ty, bit_off, bf) in members {
            let n = self.name(mname);
            self.words(&[n, ty, if kflag { (bf << 24) | bit_off } else { bit_off }]);
        }
        id
    }

    fn strukt(&mut self, name: &str, size: u32, members: &[(&str, u32, u32, u32)]) -> u32 {
        self.composite(kind::STRUCT, name, size, members)
    }

    /// One record of every kind whose length is not just the 12-byte header,
    /// so that a wrong length breaks the lookups of types added after it.
    fn noise(&mut self, int: u32) {
        let e = self.head("color", kind::ENUM, 3, false, 4);
        for (i, n) in ["RED", "GREEN", "BLUE"].iter().enumerate() {
            let n = self.name(n);
            self.words(&[n, i as u32]);
        }
        self.head("big", kind::ENUM64, 2, false, 8);
        for n in ["A", "B"] {
            let n = self.name(n);
            self.words(&[n, 1, 2]);
        }
        let proto = self.head("", kind::FUNC_PROTO, 2, false, int);
        for n in ["a", "b"] {
            let n = self.name(n);
            self.words(&[n, int]);
        }
        self.refer(kind::FUNC, "f", proto);
        self.head("", kind::ARRAY, 0, false, 0);
        self.words(&[int, int, 16]);
        let v = self.head("v", kind::VAR, 0, false, int);
        self.words(&[1]);
        self.head(".data", kind::DATASEC, 2, false, 8);
        self.words(&[v, 0, 4, v, 4, 4]);
        self.head("tag", kind::DECL_TAG, 0, false, e);
        self.words(&[u32::MAX]);
        self.head("float", kind::FLOAT, 0, false, 4);
        self.refer(kind::FWD, "sock", 0); // a forward declaration must not be taken for the struct
        self.refer(kind::TYPE_TAG, "user", int);
    }

    fn finish(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        out.extend_from_slice(&[1, 0]);
        for w in [24, 0, self.types.len() as u32, self.types.len() as u32, self.strs.len() as u32] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&self.types);
        out.extend_from_slice(&self.strs);
        out
    }
}

/// A miniature `struct sock` in the shape of the kernel's.
fn sock_like() -> (Builder, KernelBtf) {
    let mut b = Builder::new();
    let int = b.int("int", 4, 32);
    b.noise(int);
    let ushort = b.int("unsigned short", 2, 16);
    let u16a = b.refer(kind::TYPEDEF, "__u16", ushort);
    let u16b = b.refer(kind::TYPEDEF, "u16", u16a);
    let cu16 = b.refer(kind::CONST, "", u16b);
    let vcu16 = b.refer(kind::VOLATILE, "", cu16);
    let ports = b.strukt("", 4, &[("skc_dport", u16b, 0, 0), ("skc_num", vcu16, 16, 0)]);
    let portpair = b.composite(kind::UNION, "", 4, &[("skc_portpair", int, 0, 0), ("", ports, 0, 0)]);
    let common =
        b.strukt("sock_common", 12, &[("skc_daddr", int, 0, 0), ("", portpair, 32, 0), ("skc_state", int, 64, 0)]);
    let tcommon = b.refer(kind::TYPEDEF, "sock_common_t", common);
    let ctcommon = b.refer(kind::CONST, "", tcommon);
    let void_ptr = b.refer(kind::PTR, "", 0);
    b.strukt(
        "sock",
        40,
        &[
            ("__sk_common", common, 0, 0),
            ("sk_err", int, 128, 0),
            ("sk_user_data", void_ptr, 192, 0),
            ("sk_copy", ctcommon, 256, 0),
        ],
    );
    let btf = KernelBtf::from_bytes(b.finish()).unwrap();
    (b, btf)
}

#[test]
fn nested_paths_anonymous_members_and_typedef_chains() {
    let (_, btf) = sock_like();
    let off = |s, p| btf.member_offset(s, p).unwrap();
    assert_eq!(off("sock", "__sk_common"), 0);
    assert_eq!(off("sock", "sk_err"), 16);
    assert_eq!(off("sock", "sk_user_data"), 24);
    assert_eq!(off("sock", "__sk_common.skc_daddr"), 0);
    assert_eq!(off("sock", "__sk_common.skc_portpair"), 4);
    assert_eq!(off("sock", "__sk_common.skc_dport"), 4);
    assert_eq!(off("sock", "__sk_common.skc_num"), 6);
    assert_eq!(off("sock", "__sk_common.skc_state"), 8);
    // Descends through `const sock_common_t` (typedef of the struct).
    assert_eq!(off("sock", "sk_copy.skc_num"), 38);
    assert_eq!(off("sock_common", "skc_num"), 6);
}

#[test]
fn func_ids_are_found_by_name_and_kind() {
    let mut b = Builder::new();
    let int = b.int("int", 4, 32);
    b.noise(int); // has FUNC "f" and a FWD "sock"
    let proto = b.head("", kind::FUNC_PROTO, 0, false, int);
    // A struct of the same name comes first: only the FUNC counts.
    b.strukt("tcp_connect", 4, &[("x", int, 0, 0)]);
    let f = b.refer(kind::FUNC, "tcp_connect", proto);
    let btf = KernelBtf::from_bytes(b.finish()).unwrap();
    assert_eq!(btf.func_id("tcp_connect").unwrap(), Some(f));
    assert!(btf.func_id("f").unwrap().is_some());
    assert_eq!(btf.func_id("sock").unwrap(), None);
    assert_eq!(btf.func_id("int").unwrap(), None);
}

#[test]
fn lookup_errors_are_clear() {
    let (_, btf) = sock_like();
    let err = |s, p| format!("{:#}", btf.member_offset(s, p).unwrap_err());
    assert!(err("nope", "x").contains("struct nope not in BTF"));
    assert!(err("sock", "sk_nothing").contains("no member sk_nothing"));
    assert!(err("sock", "__sk_common.nothing").contains("no member nothing"));
    assert!(err("sock", "sk_err.x").contains("sock.sk_err is not a struct or union"));
    assert!(err("sock", "sk_user_data.x").contains("not a struct or union"));
    // Anonymous members are not addressable by an empty name.
    assert!(btf.member_offset("sock", "").is_err());
}

#[test]
fn bitfields_are_refused() {
    let mut b = Builder::new();
    let u8t = b.int("unsigned char", 1, 8);
    let int = b.int("int", 4, 32);
    // Modern (kind_flag) layout: bitfield size in the member's offset word.
    let flags = b.strukt(
        "flags",
        8,
        &[("lo", u8t, 0, 4), ("hi", u8t, 4, 4), ("whole", int, 32, 0), ("aligned_bf", u8t, 8, 3)],
    );
    // Old layout: the INT type itself is 3 bits wide.
    let int3 = b.int("int", 4, 3);
    b.strukt("old", 8, &[("bf", int3, 0, 0), ("n", int, 32, 0)]);
    b.strukt("outer", 16, &[("f", flags, 0, 0), ("g", flags, 64, 0)]);
    let btf = KernelBtf::from_bytes(b.finish()).unwrap();

    for (s, p) in [("flags", "lo"), ("flags", "hi"), ("flags", "aligned_bf"), ("old", "bf"), ("outer", "g.hi")] {
        let e = format!("{:#}", btf.member_offset(s, p).unwrap_err());
        assert!(e.contains("bitfield"), "{s}.{p}: {e}");
    }
    assert_eq!(btf.member_offset("flags", "whole").unwrap(), 4);
    assert_eq!(btf.member_offset("old", "n").unwrap(), 4);
    assert_eq!(btf.member_offset("outer", "g.whole").unwrap(), 12);
}

#[test]
fn split_btf_continues_ids_and_strings() {
    let mut base = Builder::new();
    let int = base.int("int", 4, 32);
    base.noise(int);
    let sock = base.strukt("sock", 8, &[("sk_err", int, 32, 0)]);
    let sock_ptr = base.refer(kind::PTR, "", sock);
    let socket = base.strukt("socket", 16, &[("state", int, 0, 0), ("sk", sock_ptr, 64, 0)]);
    let vmlinux = KernelBtf::from_bytes(base.finish()).unwrap();

    let mut m = Builder::split_of(&base);
    let socket_ptr = m.refer(kind::PTR, "", socket);
    // Same member names as the base's strings, but stored again in the split.
    let anon = m.strukt("", 8, &[("reuseport", int, 0, 0), ("resvport", int, 32, 0)]);
    let xprt = m.strukt("rpc_xprt", 24, &[("state", int, 0, 0), ("", anon, 64, 0)]);
    // A name that lives only in the base's string section: reuse "sk_err".
    let sk_err_off = base.strs.windows(7).position(|w| w == b"sk_err\0").unwrap() as u32;
    m.head("sock_xprt", kind::STRUCT, 3, false, 48);
    let xprt_name = m.name("xprt");
    let sock_name = m.name("sock");
    m.words(&[xprt_name, xprt, 0, sock_name, socket_ptr, 192, sk_err_off, int, 256]);
    let sunrpc = vmlinux.with_module_bytes(m.finish()).unwrap();

    assert_eq!(sunrpc.member_offset("sock_xprt", "xprt").unwrap(), 0);
    assert_eq!(sunrpc.member_offset("sock_xprt", "xprt.resvport").unwrap(), 12);
    assert_eq!(sunrpc.member_offset("sock_xprt", "sock").unwrap(), 24);
    assert_eq!(sunrpc.member_offset("sock_xprt", "sk_err").unwrap(), 32);
    assert_eq!(sunrpc.member_offset("rpc_xprt", "reuseport").unwrap(), 8);
    // Base types through the module handle, and the base handle still works.
    assert_eq!(sunrpc.member_offset("socket", "sk").unwrap(), 8);
    assert_eq!(vmlinux.member_offset("socket", "sk").unwrap(), 8);
    assert!(vmlinux.member_offset("rpc_xprt", "state").is_err());
}

#[test]
fn bad_headers_fail_clearly() {
    let err = |data: Vec<u8>| format!("{:#}", KernelBtf::from_bytes(data).err().expect("should fail"));
    let good = sock_like().0.finish();

    let mut be = good.clone();
    be.swap(0, 1);
    assert!(err(be).contains("big-endian"));
    let mut junk = good.clone();
    junk[0] = 0x7f;
    assert!(err(junk).contains("magic"));
    assert!(err(good[..10].to_vec()).contains("too short"));
    // Type section claims more bytes than the file has.
    let mut long = good.clone();
    let tl = u32_at(&long, 12) + 1000;
    long[12..16].copy_from_slice(&tl.to_le_bytes());
    assert!(err(long).contains("past the end"));
    // A type section cut inside a record.
    let mut b = Builder::new();
    b.int("int", 4, 32);
    let mut cut = b.finish();
    let tl = u32_at(&cut, 12) - 2;
    cut[12..16].copy_from_slice(&tl.to_le_bytes());
    assert!(err(cut).contains("truncated"));
    // Unknown kind.
    let mut b = Builder::new();
    b.head("x", 31, 0, false, 0);
    assert!(err(b.finish()).contains("unknown BTF kind 31"));
}

/// Reference: the btf-rs based lookup this module replaced. Returns the bit
/// offset and whether the final member is a kind_flag bitfield.
fn btf_rs_offset(btf: &btf_rs::Btf, strukt: &str, path: &str) -> Option<(u32, bool)> {
    use btf_rs::Type;
    fn strip(btf: &btf_rs::Btf, mut ty: Type) -> Type {
        while let Type::Typedef(_) | Type::Const(_) | Type::Volatile(_) | Type::Restrict(_) | Type::TypeTag(_) = ty {
            ty = btf.resolve_chained_type(ty.as_btf_type().unwrap()).unwrap();
        }
        ty
    }
    fn find(btf: &btf_rs::Btf, ty: &Type, name: &str) -> Option<(u32, bool, Type)> {
        let members = match ty {
            Type::Struct(s) | Type::Union(s) => &s.members,
            _ => return None,
        };
        for m in members {
            let mname = btf.resolve_name(m).unwrap_or_default();
            let mty = strip(btf, btf.resolve_chained_type(m).unwrap());
            if mname == name {
                return Some((m.bit_offset(), m.bitfield_size().unwrap_or(0) != 0, mty));
            }
            if mname.is_empty()
                && let Some((off, bf, t)) = find(btf, &mty, name)
            {
                return Some((m.bit_offset() + off, bf, t));
            }
        }
        None
    }
    let mut cur = btf.resolve_types_by_name(strukt).ok()?.into_iter().find(|t| matches!(t, Type::Struct(_)))?;
    let (mut bits, mut bf) = (0, false);
    for name in path.split('.') {
        let (off, b, t) = find(btf, &cur, name)?;
        bits += off;
        bf = b;
        cur = t;
    }
    Some((bits, bf))
}

/// Our reader against btf-rs on the running kernel's BTF, plus timing
/// (`cargo test --release -p nfs-trace host_btf -- --nocapture`).
#[test]
fn host_btf_matches_btf_rs() {
    let path = host_vmlinux_btf();
    let t0 = std::time::Instant::now();
    let ours = KernelBtf::from_file(path).unwrap();
    let t_parse = t0.elapsed();
    // Of which reading the file (sysfs hands it out 4 KiB per read call).
    let t0 = std::time::Instant::now();
    let len = std::fs::read(path).unwrap().len();
    let t_read = t0.elapsed();
    let wanted = [
        ("sock", "sk_err"),
        ("sock", "__sk_common.skc_num"),
        ("sock", "__sk_common.skc_dport"),
        ("sock", "__sk_common.skc_state"),
        ("sock", "__sk_common.skc_family"),
        ("sock", "__sk_common.skc_daddr"),
        ("sock", "__sk_common.skc_rcv_saddr"),
        ("sock", "__sk_common.skc_v6_daddr"),
        ("sock", "sk_user_data"),
        ("sock", "sk_socket"),
        ("sock", "__sk_common.skc_net.net"),
        ("net", "ns.inum"),
        ("socket", "sk"),
        ("socket", "state"),
        ("socket", "file"),
        ("inet_sock", "inet_sport"),
        ("inet_sock", "sk.__sk_common.skc_num"),
        ("tcp_sock", "inet_conn.icsk_inet.inet_sport"),
        ("sk_buff", "len"),
        ("sk_buff", "sk"),
    ];
    let t1 = std::time::Instant::now();
    let got: Vec<u32> = wanted.iter().map(|(s, p)| ours.member_offset(s, p).unwrap()).collect();
    let t_lookup = t1.elapsed();
    println!(
        "own BTF reader: read+index {:.1} ms (read alone {:.1} ms), {} lookups {:.2} ms ({} types, {len} bytes)",
        t_parse.as_secs_f64() * 1e3,
        t_read.as_secs_f64() * 1e3,
        wanted.len(),
        t_lookup.as_secs_f64() * 1e3,
        ours.layers[0].offsets.len(),
    );

    let t2 = std::time::Instant::now();
    let reference = btf_rs::Btf::from_file(path).unwrap();
    println!("btf-rs: parse {:.1} ms", t2.elapsed().as_secs_f64() * 1e3);
    for ((s, p), off) in wanted.iter().zip(&got) {
        let (bits, _) = btf_rs_offset(&reference, s, p).unwrap_or_else(|| panic!("btf-rs: no {s}.{p}"));
        assert_eq!(bits, off * 8, "{s}.{p}");
    }

    // Broader: every named member of a few busy structs, bitfields included.
    let mut checked = 0;
    for s in ["sock", "sock_common", "socket", "inet_sock", "tcp_sock", "sk_buff", "task_struct", "file"] {
        let btf_rs::Type::Struct(st) = reference
            .resolve_types_by_name(s)
            .unwrap()
            .into_iter()
            .find(|t| matches!(t, btf_rs::Type::Struct(_)))
            .unwrap()
        else {
            unreachable!()
        };
        for m in &st.members {
            let name = reference.resolve_name(m).unwrap_or_default();
            if name.is_empty() {
                continue;
            }
            let (bits, bitfield) = btf_rs_offset(&reference, s, &name).unwrap();
            match ours.member_offset(s, &name) {
                Ok(off) => assert!(!bitfield && bits == off * 8, "{s}.{name}: ours {off}, btf-rs bits {bits}"),
                Err(e) => assert!(bitfield || !bits.is_multiple_of(8), "{s}.{name}: ours failed ({e:#}), btf-rs bits {bits}"),
            }
            checked += 1;
        }
    }
    assert!(checked > 100, "only {checked} members checked");
    println!("cross-checked {} named members against btf-rs", checked + wanted.len());

    // The FUNC id a tracing program attaches to, as btf-rs resolves it.
    let ids = reference.resolve_ids_by_name("tcp_connect").unwrap();
    let func = ids.into_iter().filter(|&id| matches!(reference.resolve_type_by_id(id), Ok(btf_rs::Type::Func(_)))).min();
    assert_eq!(ours.func_id("tcp_connect").unwrap(), func, "tcp_connect FUNC id");

    // The sunrpc offsets the tool uses: see sunrpc_types_match_btf_rs_on_this_host.
}

/// The running kernel's vmlinux BTF. CI runs on a kernel with BTF: without it
/// these tests fail (they used to print SKIPPED and pass).
fn host_vmlinux_btf() -> &'static Path {
    let path = Path::new("/sys/kernel/btf/vmlinux");
    assert!(
        path.exists(),
        "{} absent: this test needs a kernel built with CONFIG_DEBUG_INFO_BTF (the CI host has one)",
        path.display()
    );
    path
}

/// Byte offset of `strukt.path` as btf-rs reads it; None when btf-rs finds
/// no such struct or member (a bitfield here would be a test bug).
fn btf_rs_bytes(btf: &btf_rs::Btf, strukt: &str, path: &str) -> Option<u32> {
    btf_rs_offset(btf, strukt, path).map(|(bits, bitfield)| {
        assert!(!bitfield && bits % 8 == 0, "{strukt}.{path} is a bitfield in this kernel's BTF");
        bits / 8
    })
}

/// The two sunrpc offsets the programs read (`rpc_xprt.addr`,
/// `sock_xprt.srcport`), as `SunrpcTypes` finds them on this host, against
/// btf-rs on the same files: the module's split BTF where the kernel has
/// one, else vmlinux's. On a host without sunrpc BTF (this project's CI host
/// has no sunrpc at all; 5.10 has no module BTF) both must be unknown and
/// the hooks that need them must say so instead of claiming to be attached.
#[test]
fn sunrpc_types_match_btf_rs_on_this_host() {
    use crate::kernel::{hooks::{FIRST_SUNRPC_HOOK, HOOKS}, sunrpc_types::SunrpcTypes};
    let path = host_vmlinux_btf();
    let ours = KernelBtf::from_file(path).unwrap();
    let base = btf_rs::Btf::from_file(path).unwrap();
    let module = Path::new("/sys/kernel/btf/sunrpc");
    let reference = if module.exists() { btf_rs::Btf::from_split_file(module, &base).unwrap() } else { base };
    let t = SunrpcTypes::find(&ours, module);
    println!("{t:?}");
    assert_eq!(t.xprt_addr, btf_rs_bytes(&reference, "rpc_xprt", "addr"), "rpc_xprt.addr ({})", t.source);
    assert_eq!(t.srcport, btf_rs_bytes(&reference, "sock_xprt", "srcport"), "sock_xprt.srcport ({})", t.source);
    assert_eq!(t.task_xprt, btf_rs_bytes(&reference, "rpc_task", "tk_xprt"), "rpc_task.tk_xprt ({})", t.source);
    assert_eq!(t.task_start, btf_rs_bytes(&reference, "rpc_task", "tk_start"), "rpc_task.tk_start ({})", t.source);
    assert_eq!(t.source, if module.exists() { module.display().to_string() } else { "vmlinux".into() });
    let sunrpc = &HOOKS[FIRST_SUNRPC_HOOK..];
    match (t.xprt_addr, t.srcport) {
        (Some(_), Some(_)) => {
            assert_eq!(t.why, None);
            assert!(sunrpc.iter().all(|h| t.gate(h) == Ok("attached".into())));
        }
        (None, None) => {
            let why = t.why.as_deref().expect("a reason");
            assert!(why.contains("struct rpc_xprt not in BTF") && why.contains("struct sock_xprt not in BTF"), "{why}");
            for h in sunrpc {
                match t.gate(h) {
                    Err(e) if h.target == "rpc_timeout_status" => assert!(e.contains("rpc_task.tk_xprt") && e.contains("not responding"), "{e}"),
                    Err(e) => assert!(h.target.starts_with("xprt_") && e.contains("rpc_xprt.addr"), "{}: {e}", h.target),
                    Ok(d) => assert!(h.target.starts_with("rpc_socket_") && d.contains("remembered port"), "{}: {d}", h.target),
                }
            }
        }
        other => panic!("one of the two sunrpc offsets found and not the other: {other:?}"),
    }
}

/// The sunrpc structs in the shape the programs read: `sock_xprt` embeds
/// `rpc_xprt` at 0; returns (xprt_addr, srcport) byte offsets built in
/// (`rpc_xprt.xprt_net` is at 176).
fn add_sunrpc_types(b: &mut Builder, int: u32) -> (u32, u32) {
    let ushort = b.int("unsigned short", 2, 16);
    let storage = b.strukt("__kernel_sockaddr_storage", 128, &[("ss_family", ushort, 0, 0)]);
    let net = b.strukt("net", 8, &[("x", int, 0, 0)]);
    let net_ptr = b.refer(kind::PTR, "", net);
    let xprt = b.strukt("rpc_xprt", 200, &[("state", int, 0, 0), ("addr", storage, 8 * 40, 0), ("xprt_net", net_ptr, 8 * 176, 0)]);
    b.strukt("sock_xprt", 400, &[("xprt", xprt, 0, 0), ("srcport", ushort, 8 * 312, 0)]);
    let xprt_ptr = b.refer(kind::PTR, "", xprt);
    let ktime = b.int("long long int", 8, 64);
    b.strukt("rpc_task", 240, &[("tk_count", int, 0, 0), ("tk_xprt", xprt_ptr, 8 * 72, 0), ("tk_start", ktime, 8 * 184, 0)]);
    (40, 312)
}

#[test]
fn sunrpc_types_from_module_btf_else_vmlinux() {
    use crate::kernel::sunrpc_types::SunrpcTypes;
    let dir = std::env::temp_dir().join(format!("nfs-trace-btf-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let absent = dir.join("no-such-module");

    // sunrpc built into vmlinux: its types are in vmlinux's BTF.
    let mut b = Builder::new();
    let int = b.int("int", 4, 32);
    b.noise(int);
    let (addr, srcport) = add_sunrpc_types(&mut b, int);
    let builtin = KernelBtf::from_bytes(b.finish()).unwrap();
    let t = SunrpcTypes::find(&builtin, &absent);
    assert_eq!(t, SunrpcTypes { source: "vmlinux".into(), xprt_addr: Some(addr), srcport: Some(srcport), why: None, xprt_net: Some(176), task_xprt: Some(72), task_start: Some(184) });

    // sunrpc a module with split BTF.
    let mut base = Builder::new();
    let int = base.int("int", 4, 32);
    let vmlinux = KernelBtf::from_bytes(base.finish()).unwrap();
    let mut m = Builder::split_of(&base);
    let (addr, srcport) = add_sunrpc_types(&mut m, int);
    let split = dir.join("sunrpc");
    std::fs::write(&split, m.finish()).unwrap();
    let t = SunrpcTypes::find(&vmlinux, &split);
    assert_eq!((t.xprt_addr, t.srcport, t.why.as_deref()), (Some(addr), Some(srcport), None));
    assert_eq!(t.source, split.display().to_string());
    assert_eq!(t.offsets().srcport, srcport);
    assert_eq!(t.offsets().xprt_net, 176);
    assert_eq!(t.offsets().task_xprt, 72, "rpc_task.tk_xprt, for rpc_timeout_status");
    assert_eq!(t.offsets().task_start, 184, "rpc_task.tk_start, when the timed-out RPC was made");

    // A module without module BTF (5.10): vmlinux lacks the types.
    let t = SunrpcTypes::find(&vmlinux, &absent);
    assert_eq!((t.xprt_addr, t.srcport), (None, None));
    assert_eq!(t.offsets().xprt_addr, NO_OFFSET_FOR_TEST);
    assert_eq!((t.xprt_net, t.offsets().xprt_net), (None, NO_OFFSET_FOR_TEST), "unknown, not a fake offset");
    assert_eq!((t.task_xprt, t.offsets().task_xprt), (None, NO_OFFSET_FOR_TEST));
    assert_eq!((t.task_start, t.offsets().task_start), (None, NO_OFFSET_FOR_TEST));
    let timeout_hook = crate::kernel::hooks::HOOKS.iter().find(|h| h.target == "rpc_timeout_status").unwrap();
    let why = t.gate(timeout_hook).unwrap_err();
    assert!(why.contains("rpc_task.tk_xprt") && why.contains("not responding"), "{why}");
    assert!(t.why.as_deref().unwrap().contains("before 5.11 have no module BTF"), "{:?}", t.why);

    // A module BTF that does not parse: unknown, with the parse error.
    std::fs::write(&split, b"not btf").unwrap();
    let t = SunrpcTypes::find(&vmlinux, &split);
    assert_eq!((t.xprt_addr, t.srcport), (None, None));
    assert!(t.why.as_deref().unwrap().contains("cannot parse module BTF"), "{:?}", t.why);
    std::fs::remove_dir_all(&dir).unwrap();
}

const NO_OFFSET_FOR_TEST: u32 = nfs_trace_common::NO_OFFSET;
