//! Struct member offsets from the kernel's BTF.
//!
//! aya's Rust eBPF has no CO-RE field relocation, so programs read kernel
//! structs through offsets computed here and passed in as globals.
//!
//! This is a deliberately small BTF reader (format: the kernel's
//! Documentation/bpf/btf.rst). A general-purpose parser such as `btf-rs`
//! decodes every one of vmlinux's ~150k type records up front, which took
//! ~240 ms in release here and ~0.9 s under QEMU/TCG: most of the tracer's
//! start-to-attached time, for the sake of a dozen member offsets. So we read
//! the file once, record where each type record starts in a single pass that
//! only looks at each record's kind and length, and decode just the records a
//! lookup touches. Names are compared lazily (only STRUCT/UNION records when
//! searching for a struct), so no string table is built either.
//!
//! Module BTF (`/sys/kernel/btf/<module>`) is "split" BTF: its type ids
//! continue after the base's last id and its string offsets continue after
//! the base's string section, so it is read as a second layer on top of
//! vmlinux (see [`KernelBtf::with_module`]).
//!
//! Only little-endian BTF is supported (what every x86-64/arm64 kernel emits);
//! anything else is refused with a clear error rather than misread.
use std::{path::Path, sync::Arc};

use anyhow::{Context as _, Result, anyhow, bail};

#[cfg(test)]
mod tests;

const BTF_MAGIC: u16 = 0xeb9f;
/// `struct btf_header` up to and including `str_len`.
const HEADER_LEN: usize = 24;
/// `struct btf_type`: name_off, info, size/type.
const TYPE_LEN: usize = 12;
/// Bounds recursion through anonymous members and qualifier chains, so a
/// malformed (cyclic) file gives an error instead of a hang or stack overflow.
const MAX_DEPTH: usize = 64;

/// BTF kinds (`BTF_KIND_*` in include/uapi/linux/btf.h).
mod kind {
    pub const INT: u32 = 1;
    pub const PTR: u32 = 2;
    pub const ARRAY: u32 = 3;
    pub const STRUCT: u32 = 4;
    pub const UNION: u32 = 5;
    pub const ENUM: u32 = 6;
    pub const FWD: u32 = 7;
    pub const TYPEDEF: u32 = 8;
    pub const VOLATILE: u32 = 9;
    pub const CONST: u32 = 10;
    pub const RESTRICT: u32 = 11;
    pub const FUNC: u32 = 12;
    pub const FUNC_PROTO: u32 = 13;
    pub const VAR: u32 = 14;
    pub const DATASEC: u32 = 15;
    pub const FLOAT: u32 = 16;
    pub const DECL_TAG: u32 = 17;
    pub const TYPE_TAG: u32 = 18;
    pub const ENUM64: u32 = 19;
}

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}

/// Callers only read inside records whose bounds were checked when indexing.
fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// One BTF blob: vmlinux, or a module's split BTF layered on vmlinux.
struct Layer {
    data: Vec<u8>,
    /// Absolute byte range of the type section in `data`.
    types: (usize, usize),
    /// Absolute byte range of the string section in `data`.
    strs: (usize, usize),
    /// Id of the first record (1 for vmlinux, base's last id + 1 for a split).
    first_id: u32,
    /// String offset where this blob's own strings start (0 for vmlinux,
    /// the base's string section length for a split).
    str_base: u32,
    /// Start of each record relative to the type section: entry `i` is type
    /// `first_id + i`.
    offsets: Vec<u32>,
}

impl Layer {
    fn parse(data: Vec<u8>, first_id: u32, str_base: u32) -> Result<Self> {
        if data.len() < HEADER_LEN {
            bail!("too short for a BTF header ({} bytes)", data.len());
        }
        let magic = u16_at(&data, 0);
        if magic != BTF_MAGIC {
            if magic.swap_bytes() == BTF_MAGIC {
                bail!("big-endian BTF is not supported (only little-endian)");
            }
            bail!("not BTF: magic {magic:#06x}, expected {BTF_MAGIC:#06x}");
        }
        if data[2] != 1 {
            bail!("unsupported BTF version {}", data[2]);
        }
        let hdr_len = u32_at(&data, 4) as usize;
        if hdr_len < HEADER_LEN || hdr_len > data.len() {
            bail!("bad BTF header length {hdr_len}");
        }
        let section = |off_at: usize, what: &str| -> Result<(usize, usize)> {
            let off = u32_at(&data, off_at) as usize;
            let len = u32_at(&data, off_at + 4) as usize;
            let start = hdr_len.checked_add(off);
            let end = start.and_then(|s| s.checked_add(len));
            match (start, end) {
                (Some(s), Some(e)) if e <= data.len() => Ok((s, e)),
                _ => bail!("BTF {what} section ({off}+{len}) runs past the end of the file ({} bytes)", data.len()),
            }
        };
        let types = section(8, "type")?;
        let strs = section(16, "string")?;
        let offsets = index_types(&data[types.0..types.1], first_id)?;
        Ok(Self { data, types, strs, first_id, str_base, offsets })
    }

    fn type_section(&self) -> &[u8] {
        &self.data[self.types.0..self.types.1]
    }

    fn string_section(&self) -> &[u8] {
        &self.data[self.strs.0..self.strs.1]
    }

    fn str_len(&self) -> u32 {
        (self.strs.1 - self.strs.0) as u32
    }

    /// One past the last type id in this layer.
    fn end_id(&self) -> u32 {
        self.first_id + self.offsets.len() as u32
    }

    fn record(&self, id: u32) -> &[u8] {
        let i = (id - self.first_id) as usize;
        let start = self.offsets[i] as usize;
        let end = self.offsets.get(i + 1).map_or(self.types.1 - self.types.0, |&e| e as usize);
        &self.type_section()[start..end]
    }
}

/// Walks the type section once and returns where each record starts. A
/// record is a 12-byte `btf_type` followed by kind-specific data whose
/// length depends on the kind and `vlen`; nothing else is decoded here.
fn index_types(t: &[u8], first_id: u32) -> Result<Vec<u32>> {
    if u32::try_from(t.len()).is_err() {
        bail!("BTF type section too large");
    }
    // vmlinux records average ~35 bytes; avoid most reallocations.
    let mut offsets = Vec::with_capacity(t.len() / 32);
    let mut pos = 0usize;
    while pos < t.len() {
        let id = first_id as usize + offsets.len();
        if t.len() - pos < TYPE_LEN {
            bail!("BTF type section truncated in type id {id}");
        }
        let info = u32_at(t, pos + 4);
        let vlen = (info & 0xffff) as usize;
        let extra = match (info >> 24) & 0x1f {
            kind::INT | kind::VAR | kind::DECL_TAG => 4,
            kind::ARRAY => 12,
            kind::STRUCT | kind::UNION => 12 * vlen,
            kind::ENUM => 8 * vlen,
            kind::ENUM64 => 12 * vlen,
            kind::FUNC_PROTO => 8 * vlen,
            kind::DATASEC => 12 * vlen,
            kind::PTR
            | kind::FWD
            | kind::TYPEDEF
            | kind::VOLATILE
            | kind::CONST
            | kind::RESTRICT
            | kind::FUNC
            | kind::FLOAT
            | kind::TYPE_TAG => 0,
            // Without its length we cannot find the next record.
            k => bail!("unknown BTF kind {k} in type id {id} (newer kernel than this reader?)"),
        };
        offsets.push(pos as u32);
        pos += TYPE_LEN + extra;
        if pos > t.len() {
            bail!("BTF type section truncated in type id {id}");
        }
    }
    // Ids must fit u32 so that `Layer::end_id` cannot overflow.
    if u32::try_from(offsets.len()).ok().and_then(|n| first_id.checked_add(n)).is_none() {
        bail!("too many BTF types");
    }
    Ok(offsets)
}

/// A real but small BTF blob for the fuzz tests: `data`'s header, its first
/// `ntypes` type records and the strings they name (vmlinux's strings come
/// in order of first use, so that is a short prefix of its string section).
#[cfg(test)]
pub(crate) fn prefix_sample(data: &[u8], ntypes: usize) -> Result<Vec<u8>> {
    let layer = Layer::parse(data.to_vec(), 1, 0)?;
    let ntypes = ntypes.min(layer.offsets.len());
    let t = layer.type_section();
    let types_end = layer.offsets.get(ntypes).map_or(t.len(), |&o| o as usize);
    let mut max_str = 0u32;
    for &off in &layer.offsets[..ntypes] {
        let off = off as usize;
        let info = u32_at(t, off + 4);
        let vlen = (info & 0xffff) as usize;
        max_str = max_str.max(u32_at(t, off));
        // Where named entries follow the header: (entry size).
        let step = match (info >> 24) & 0x1f {
            kind::STRUCT | kind::UNION | kind::ENUM64 => 12,
            kind::ENUM | kind::FUNC_PROTO => 8,
            _ => 0,
        };
        for j in 0..if step == 0 { 0 } else { vlen } {
            max_str = max_str.max(u32_at(t, off + TYPE_LEN + step * j));
        }
    }
    let strs = layer.string_section();
    let strs_end = strs[max_str as usize..].iter().position(|&b| b == 0).map_or(strs.len(), |e| max_str as usize + e + 1);
    let mut out = Vec::with_capacity(HEADER_LEN + types_end + strs_end);
    out.extend_from_slice(&data[..8]);
    for w in [0, types_end as u32, types_end as u32, strs_end as u32] {
        out.extend_from_slice(&w.to_le_bytes());
    }
    out[4..8].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
    out.extend_from_slice(&t[..types_end]);
    out.extend_from_slice(&strs[..strs_end]);
    Ok(out)
}

/// A decoded `btf_type` header plus its trailing data.
#[derive(Clone, Copy)]
struct Ty<'a> {
    id: u32,
    rec: &'a [u8],
}

impl Ty<'_> {
    fn info(&self) -> u32 {
        u32_at(self.rec, 4)
    }
    fn kind(&self) -> u32 {
        (self.info() >> 24) & 0x1f
    }
    fn vlen(&self) -> usize {
        (self.info() & 0xffff) as usize
    }
    fn kind_flag(&self) -> bool {
        self.info() >> 31 != 0
    }
    /// `size` for INT/STRUCT/UNION/ENUM..., `type` for PTR/TYPEDEF/qualifiers.
    fn size_or_type(&self) -> u32 {
        u32_at(self.rec, 8)
    }
    fn is_composite(&self) -> bool {
        matches!(self.kind(), kind::STRUCT | kind::UNION)
    }
    /// Members of a STRUCT/UNION, as `btf_member { name_off, type, offset }`.
    /// With `kind_flag` set, `offset` packs the bitfield size in its top 8
    /// bits and the bit offset in the low 24.
    fn members(&self) -> impl Iterator<Item = Member> + '_ {
        let kflag = self.kind_flag();
        (0..self.vlen()).map(move |i| {
            let at = TYPE_LEN + 12 * i;
            let off = u32_at(self.rec, at + 8);
            let (bit_offset, bitfield_size) = if kflag { (off & 0xff_ffff, off >> 24) } else { (off, 0) };
            Member { name_off: u32_at(self.rec, at), type_id: u32_at(self.rec, at + 4), bit_offset, bitfield_size }
        })
    }
}

struct Member {
    name_off: u32,
    type_id: u32,
    bit_offset: u32,
    bitfield_size: u32,
}

/// Kernel BTF: vmlinux, optionally with one module's split BTF on top.
pub struct KernelBtf {
    /// `layers[0]` is vmlinux; shared so that [`Self::with_module`] does not
    /// copy (or re-read) the ~5 MB base.
    layers: Vec<Arc<Layer>>,
}

impl KernelBtf {
    /// Reads base BTF such as `/sys/kernel/btf/vmlinux`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let data = std::fs::read(path).with_context(|| format!("cannot read BTF {}", path.display()))?;
        Self::from_bytes(data).with_context(|| format!("cannot parse BTF {}", path.display()))
    }

    /// Parses base BTF from memory (tests, fuzzing).
    pub(crate) fn from_bytes(data: Vec<u8>) -> Result<Self> {
        Ok(Self { layers: vec![Arc::new(Layer::parse(data, 1, 0)?)] })
    }

    /// Reads a module's split BTF (`/sys/kernel/btf/<module>`, e.g.
    /// `sunrpc`) on top of this one's vmlinux base. Lookups on the result see
    /// both the module's types (e.g. `rpc_xprt`, `sock_xprt`) and vmlinux's
    /// (e.g. `socket`, `sock`). `self` stays usable; the base is shared, not
    /// copied. Called on a module BTF, the new module replaces the old one
    /// (split BTF only ever layers on vmlinux).
    pub fn with_module(&self, path: &Path) -> Result<KernelBtf> {
        let data = std::fs::read(path).with_context(|| format!("cannot read module BTF {}", path.display()))?;
        self.with_module_bytes(data).with_context(|| format!("cannot parse module BTF {}", path.display()))
    }

    pub(crate) fn with_module_bytes(&self, data: Vec<u8>) -> Result<KernelBtf> {
        let base = Arc::clone(&self.layers[0]);
        let split = Layer::parse(data, base.end_id(), base.str_len())?;
        Ok(Self { layers: vec![base, Arc::new(split)] })
    }

    /// Byte offset of `path` (e.g. `"sk_err"` or `"__sk_common.skc_num"`) in
    /// `struct <strukt>` (or `union <strukt>`), looking through anonymous
    /// struct/union members the way C does and through typedefs and
    /// qualifiers of intermediate members. Bitfields are an error: a byte
    /// offset cannot describe them.
    pub fn member_offset(&self, strukt: &str, path: &str) -> Result<u32> {
        let mut cur = self.find_composite(strukt)?.ok_or_else(|| anyhow!("struct {strukt} not in BTF"))?;
        let mut bits = 0u64;
        let mut done = 0usize; // length of `path` consumed, for messages
        for name in path.split('.') {
            if !cur.is_composite() {
                bail!("{strukt}.{} is not a struct or union, cannot look up {name} in it", &path[..done - 1]);
            }
            let (off, m) = self
                .find_member(cur, name.as_bytes(), 0)?
                .ok_or_else(|| anyhow!("no member {name} in struct {strukt} ({path})"))?;
            let mty = self.strip(m.type_id)?;
            if m.bitfield_size != 0 || self.is_int_bitfield(mty) {
                bail!("{strukt}.{path} is a bitfield ({name}); no byte offset");
            }
            bits += u64::from(off);
            cur = mty;
            done += name.len() + 1;
        }
        if !bits.is_multiple_of(8) {
            bail!("{strukt}.{path} is a bitfield (bit offset {bits}); no byte offset");
        }
        u32::try_from(bits / 8).map_err(|_| anyhow!("{strukt}.{path}: offset out of range"))
    }

    /// First STRUCT or UNION named `name`, base first then module. Only
    /// those records' names are read.
    fn find_composite(&self, name: &str) -> Result<Option<Ty<'_>>> {
        self.find_kind(name, |k| k == kind::STRUCT || k == kind::UNION)
    }

    /// Type id of the kernel function `name` (a BTF FUNC record): what a
    /// BPF_PROG_TYPE_TRACING program names as its `attach_btf_id`. None if
    /// this BTF has no such function.
    pub fn func_id(&self, name: &str) -> Result<Option<u32>> {
        Ok(self.find_kind(name, |k| k == kind::FUNC)?.map(|t| t.id))
    }

    /// First record whose kind passes `want_kind` and whose name is `name`,
    /// base first then module; only matching kinds' names are read.
    fn find_kind(&self, name: &str, want_kind: impl Fn(u32) -> bool) -> Result<Option<Ty<'_>>> {
        let want = name.as_bytes();
        for layer in &self.layers {
            let t = layer.type_section();
            for (i, &off) in layer.offsets.iter().enumerate() {
                let off = off as usize;
                let k = (u32_at(t, off + 4) >> 24) & 0x1f;
                if want_kind(k) && self.str_at(u32_at(t, off))? == want {
                    return self.get(layer.first_id + i as u32).map(Some);
                }
            }
        }
        Ok(None)
    }

    /// Finds `name` among the members of `ty`, descending into anonymous
    /// struct/union members. Returns the bit offset from the start of `ty`
    /// and the member.
    fn find_member(&self, ty: Ty<'_>, name: &[u8], depth: usize) -> Result<Option<(u32, Member)>> {
        if depth > MAX_DEPTH {
            bail!("anonymous members nested too deeply in type id {} (cyclic BTF?)", ty.id);
        }
        for m in ty.members() {
            let mname = self.str_at(m.name_off)?;
            if mname == name {
                return Ok(Some((m.bit_offset, m)));
            }
            if mname.is_empty() {
                let inner = self.strip(m.type_id)?;
                if inner.is_composite()
                    && let Some((off, found)) = self.find_member(inner, name, depth + 1)?
                {
                    return Ok(Some((m.bit_offset + off, found)));
                }
            }
        }
        Ok(None)
    }

    /// Old-style bitfield (struct without `kind_flag`): the member's INT type
    /// itself carries a bit offset or a bit count narrower than its size.
    fn is_int_bitfield(&self, ty: Ty<'_>) -> bool {
        if ty.kind() != kind::INT {
            return false;
        }
        let enc = u32_at(ty.rec, TYPE_LEN);
        let (nr_bits, bit_off) = (enc & 0xff, (enc >> 16) & 0xff);
        bit_off != 0 || u64::from(nr_bits) != u64::from(ty.size_or_type()) * 8
    }

    /// Follows typedef, const, volatile, restrict and type tags.
    fn strip(&self, mut id: u32) -> Result<Ty<'_>> {
        for _ in 0..MAX_DEPTH {
            let ty = self.get(id)?;
            match ty.kind() {
                kind::TYPEDEF | kind::CONST | kind::VOLATILE | kind::RESTRICT | kind::TYPE_TAG => {
                    id = ty.size_or_type();
                }
                _ => return Ok(ty),
            }
        }
        bail!("typedef/qualifier chain too long at type id {id} (cyclic BTF?)")
    }

    fn get(&self, id: u32) -> Result<Ty<'_>> {
        if id == 0 {
            bail!("type id 0 (void) has no record");
        }
        let layer = self
            .layers
            .iter()
            .find(|l| id >= l.first_id && id < l.end_id())
            .ok_or_else(|| anyhow!("BTF type id {id} out of range"))?;
        Ok(Ty { id, rec: layer.record(id) })
    }

    /// NUL-terminated string at `off`, without the NUL. Offsets at or past a
    /// split layer's `str_base` refer to that layer's own strings.
    fn str_at(&self, off: u32) -> Result<&[u8]> {
        let layer = self
            .layers
            .iter()
            .rev()
            .find(|l| off >= l.str_base)
            .expect("the base layer has str_base 0");
        let s = layer.string_section();
        let rest = s.get((off - layer.str_base) as usize..).ok_or_else(|| anyhow!("BTF string offset {off} out of range"))?;
        let end = rest.iter().position(|&b| b == 0).ok_or_else(|| anyhow!("BTF string at {off} is not terminated"))?;
        Ok(&rest[..end])
    }
}
