//! `sunrpc-btf` (issue 10, defect 5): the sunrpc struct offsets the
//! tracer's programs read — `rpc_xprt.addr`, `sock_xprt.srcport` and
//! `rpc_task.tk_xprt` — as
//! `nfs-trace probes --json` computed them (`sunrpc_types`), against the
//! btf-rs crate's own parse of this kernel's BTF: the module's split BTF
//! where the kernel has one (6.12), else vmlinux's (5.10 has no module BTF:
//! then both are absent unless sunrpc is built in). Also reports the SunRPC
//! hook rows, which must not claim hooks whose records cannot be decoded.
use std::{path::Path, time::Duration};

use anyhow::{Context as _, Result, bail};
use btf_rs::{Btf, Type};
use serde_json::{Value, json};

use super::{cmd, out, tracer::BINARY};

pub const NAME: &str = "sunrpc-btf";
const VMLINUX: &str = "/sys/kernel/btf/vmlinux";
const SUNRPC: &str = "/sys/kernel/btf/sunrpc";

/// Follows typedefs and qualifiers.
fn strip(btf: &Btf, mut ty: Type) -> Result<Type> {
    while let Type::Typedef(_) | Type::Const(_) | Type::Volatile(_) | Type::Restrict(_) | Type::TypeTag(_) = ty {
        ty = btf.resolve_chained_type(ty.as_btf_type().context("qualifier without a type")?)?;
    }
    Ok(ty)
}

/// Bit offset of member `name` in `ty`, looking through anonymous members.
fn find(btf: &Btf, ty: &Type, name: &str) -> Result<Option<u32>> {
    let members = match ty {
        Type::Struct(s) | Type::Union(s) => &s.members,
        _ => return Ok(None),
    };
    for m in members {
        let mname = btf.resolve_name(m).unwrap_or_default();
        if mname == name {
            return Ok(Some(m.bit_offset()));
        }
        if mname.is_empty() {
            let inner = strip(btf, btf.resolve_chained_type(m)?)?;
            if let Some(off) = find(btf, &inner, name)? {
                return Ok(Some(m.bit_offset() + off));
            }
        }
    }
    Ok(None)
}

/// Byte offset of `strukt.member` as btf-rs reads it; null when the struct
/// or the member is not in this BTF.
fn offset(btf: &Btf, strukt: &str, member: &str) -> Result<Value> {
    let Some(st) = btf.resolve_types_by_name(strukt).unwrap_or_default().into_iter().find(|t| matches!(t, Type::Struct(_)))
    else {
        return Ok(Value::Null);
    };
    Ok(match find(btf, &st, member)? {
        Some(bits) if bits % 8 == 0 => json!(bits / 8),
        Some(bits) => bail!("{strukt}.{member} at bit {bits}: not a byte offset"),
        None => Value::Null,
    })
}

fn truth() -> Result<Value> {
    let base = Btf::from_file(VMLINUX).with_context(|| format!("btf-rs: {VMLINUX}"))?;
    let split = Path::new(SUNRPC).exists();
    let btf = if split { Btf::from_split_file(SUNRPC, &base).with_context(|| format!("btf-rs: {SUNRPC}"))? } else { base };
    Ok(json!({
        "split_btf": split,
        "xprt_addr": offset(&btf, "rpc_xprt", "addr")?,
        "srcport": offset(&btf, "sock_xprt", "srcport")?,
        "task_xprt": offset(&btf, "rpc_task", "tk_xprt")?,
        "task_start": offset(&btf, "rpc_task", "tk_start")?,
    }))
}

fn probes() -> Result<Value> {
    let text = cmd::run(std::process::Command::new(BINARY).args(["probes", "--json"]), Duration::from_secs(120))?;
    serde_json::from_str(text.trim()).with_context(|| format!("probes --json is not JSON: {text}"))
}

/// Runs after the modules are loaded; emits the truth record; true when
/// both sides could be read (the host judges whether they agree).
pub fn run(with_tracer: bool) -> bool {
    let mut rec = json!({
        "kind": "truth", "scenario": NAME,
        "sunrpc_loaded": Path::new("/sys/module/sunrpc").exists(),
        "btf_rs": null, "tracer": null, "hooks": [], "error": null,
    });
    let res = (|| -> Result<()> {
        rec["btf_rs"] = truth()?;
        if with_tracer {
            let p = probes()?;
            rec["tracer"] = p["sunrpc_types"].clone();
            let rows: Vec<Value> = p["hooks"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|h| h["kind"] == "raw_tracepoint")
                .map(|h| json!({"name": h["name"], "attached": h["attached"], "detail": h["detail"]}))
                .collect();
            rec["hooks"] = json!(rows);
        }
        Ok(())
    })();
    if let Err(e) = res {
        rec["error"] = json!(format!("{e:#}"));
    }
    out::log(format!("{NAME}: btf-rs {} tracer {}", rec["btf_rs"], rec["tracer"]));
    let ok = rec["error"].is_null();
    out::emit(&rec);
    ok
}
