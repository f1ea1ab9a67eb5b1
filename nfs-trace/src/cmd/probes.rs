//! `nfs-trace probes`: the hook table with what this kernel gave.
use std::io::Write as _;

use anyhow::Result;
use serde::Serialize;

use crate::{
    kernel::btf::KernelBtf,
    cli::{ProbesArgs, check_ports},
    kernel::env,
    kernel::hooks::{self, HOOKS, HookStatus},
    kernel::{attach, config, sunrpc_types},
};

#[derive(Serialize)]
struct Row<'a> {
    name: &'a str,
    kind: &'a str,
    kernels: &'a str,
    fallback: &'a str,
    required: bool,
    attached: bool,
    detail: &'a str,
}

pub fn run(args: ProbesArgs) -> Result<()> {
    let ports = check_ports(&args.ports).map_err(|e| anyhow::anyhow!("bad --port: {e}"))?;
    // Without privileges the table is still worth showing: say why nothing was tried.
    // `sunrpc_types`: the struct offsets the SunRPC programs were given
    // (null while sunrpc is not loaded), for checking against the kernel's BTF.
    let mut types = None;
    let (status, release, err): (Vec<HookStatus>, String, Option<anyhow::Error>) =
        match env::preflight(args.paths.tracefs.as_deref(), args.paths.btf.as_deref()) {
            Err(e) => (hooks::not_tried(&format!("not tried: {e}")), env::kernel_release(), Some(e)),
            Ok(env) => {
                env::raise_memlock();
                let btf = KernelBtf::from_file(&env.btf)?;
                let mut config = config::build_config(&ports, &env.tracefs, &btf)?;
                config.debug = u32::from(args.debug_bpf);
                if hooks::sunrpc_loaded() {
                    types = Some(sunrpc_types::sunrpc_types(&btf));
                }
                match attach::load_and_attach(&config, attach::MapSizes::default(), &btf) {
                    Ok((ebpf, status)) => {
                        drop(ebpf);
                        (status, env.release, None)
                    }
                    Err(e) => (hooks::not_tried(&format!("{e:#}")), env.release, Some(e)),
                }
            }
        };
    let rows: Vec<Row> = HOOKS
        .iter()
        .zip(&status)
        .map(|(h, s)| Row {
            name: h.target,
            kind: h.kind.name(),
            kernels: h.kernels,
            fallback: h.fallback,
            required: h.required,
            attached: s.attached,
            detail: &s.detail,
        })
        .collect();
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &serde_json::json!({"v": crate::output::render::SCHEMA_VERSION, "type": "probes", "kernel": release, "hooks": rows, "sunrpc_types": types}))?;
        writeln!(out)?;
    } else {
        writeln!(out, "Hooks on kernel {release}:")?;
        writeln!(out, "{:<28} {:<14} {:<9} {:<34} FALLBACK / WHY NOT", "HOOK", "KIND", "ATTACHED", "KERNELS")?;
        for r in &rows {
            let state = if r.attached { "yes" } else { "no" };
            let why = if r.attached { r.fallback.to_string() } else { format!("{} — without it: {}", r.detail, r.fallback) };
            writeln!(out, "{:<28} {:<14} {:<9} {:<34} {}", r.name, r.kind, state, r.kernels, why)?;
        }
    }
    out.flush()?;
    match err {
        Some(e) => Err(e),
        None => hooks::require_attached(&status),
    }
}
