//! Struct member offsets from the kernel's BTF.
//!
//! aya's Rust eBPF has no CO-RE field relocation, so programs read kernel
//! structs through offsets computed here and passed in as globals.
use anyhow::{Context as _, Result, anyhow};
use btf_rs::{Btf, Type};

/// Parsed kernel BTF (vmlinux; later also module split BTF).
pub struct KernelBtf {
    btf: Btf,
}

impl KernelBtf {
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        let btf = Btf::from_file(path).with_context(|| format!("cannot parse BTF {}", path.display()))?;
        Ok(Self { btf })
    }

    /// Byte offset of `path` (e.g. `"sk_err"` or `"__sk_common.skc_num"`) in
    /// `struct <strukt>`, looking through anonymous struct/union members the
    /// way C does.
    pub fn member_offset(&self, strukt: &str, path: &str) -> Result<u32> {
        let ty = self
            .btf
            .resolve_types_by_name(strukt)
            .map_err(|e| anyhow!("struct {strukt} not in BTF: {e}"))?
            .into_iter()
            .find(|t| matches!(t, Type::Struct(_)))
            .ok_or_else(|| anyhow!("struct {strukt} not in BTF"))?;
        let mut cur = ty;
        let mut total_bits = 0u32;
        for name in path.split('.') {
            let (bits, member_ty) = self
                .find_member(&cur, name)?
                .ok_or_else(|| anyhow!("no member {name} in struct {strukt} ({path})"))?;
            total_bits += bits;
            cur = member_ty;
        }
        if total_bits % 8 != 0 {
            return Err(anyhow!("{strukt}.{path} is a bitfield"));
        }
        Ok(total_bits / 8)
    }

    /// Finds `name` among the members of `ty`, descending into anonymous
    /// members. Returns the bit offset and the member's (unqualified) type.
    fn find_member(&self, ty: &Type, name: &str) -> Result<Option<(u32, Type)>> {
        let members = match ty {
            Type::Struct(s) | Type::Union(s) => &s.members,
            _ => return Ok(None),
        };
        for m in members {
            let mname = self.btf.resolve_name(m).unwrap_or_default();
            let mty = self.strip(self.btf.resolve_chained_type(m)?)?;
            if mname == name {
                return Ok(Some((m.bit_offset(), mty)));
            }
            if mname.is_empty() {
                if let Some((off, t)) = self.find_member(&mty, name)? {
                    return Ok(Some((m.bit_offset() + off, t)));
                }
            }
        }
        Ok(None)
    }

    /// Strips typedef, const, volatile, restrict and type tags.
    fn strip(&self, mut ty: Type) -> Result<Type> {
        loop {
            match &ty {
                Type::Typedef(_) | Type::Const(_) | Type::Volatile(_) | Type::Restrict(_) | Type::TypeTag(_) => {
                    let inner = ty.as_btf_type().expect("qualifier is a BTF type");
                    ty = self.btf.resolve_chained_type(inner)?;
                }
                _ => return Ok(ty),
            }
        }
    }
}
