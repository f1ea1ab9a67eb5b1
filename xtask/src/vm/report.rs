//! The results: one JSON record per scenario, the console summary, and the
//! compatibility matrix (Markdown and JSON) under docs/.
use std::{fmt::Write as _, path::Path, time::Duration};

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

/// One kernel's run.
pub struct KernelRun {
    pub line: String,
    pub release: String,
    pub package_version: String,
    pub wall: Duration,
    pub qemu_wall: Duration,
    pub end: String,
    pub results: Vec<Value>,
    pub with_tracer: bool,
}

impl KernelRun {
    pub fn ok(&self) -> bool {
        self.end == "OK" && !self.results.is_empty() && self.results.iter().all(|r| r["ok"] == json!(true))
    }
}

/// `--json`: one record per scenario.
pub fn records(runs: &[KernelRun]) -> Value {
    Value::Array(runs.iter().flat_map(|r| r.results.iter().cloned()).collect())
}

pub fn write_json(path: &Path, v: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(v).context("serialising results")? + "\n";
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// How the port behaved over the reconnects of one method.
fn port_behaviour(result: &Value, method: &str) -> String {
    let same: Vec<bool> = result["reconnects"]
        .as_array()
        .map(|a| a.iter().filter(|r| r["method"] == method).filter_map(|r| r["same_port"].as_bool()).collect())
        .unwrap_or_default();
    if same.is_empty() {
        "—".into()
    } else if same.iter().all(|s| *s) {
        "same port".into()
    } else if same.iter().all(|s| !*s) {
        "new port".into()
    } else {
        same.iter().map(|s| if *s { "same" } else { "new" }).collect::<Vec<_>>().join(", ")
    }
}

fn agrees(result: &Value) -> &'static str {
    match result["agree"].as_bool() {
        Some(true) => "✔",
        Some(false) => "✘",
        None => "—",
    }
}

/// A mount command's cell: what it said, and ✔/✘ against the ground truth.
fn tool(result: &Value, key: &str) -> String {
    let t = &result[key];
    let mark = match t["agree"].as_bool() {
        Some(true) => "✔",
        Some(false) => "✘",
        None => return "—".into(),
    };
    let said = match key {
        "check" => match t["flagged"].as_bool() {
            Some(true) => "flagged".to_string(),
            Some(false) => "not flagged".to_string(),
            None => "no entry".to_string(),
        },
        _ => t["exit"].as_i64().map_or("no exit".to_string(), |c| format!("exit {c}")),
    };
    format!("{said} {mark}")
}

/// "n of m" hooks attached (the reasons for the others are listed below the
/// table: they are the same for every scenario of a kernel and too long for a cell).
fn hooks(result: &Value) -> String {
    let h = &result["hooks"];
    if h.is_null() {
        return "—".into();
    }
    let yes = h["attached"].as_array().map_or(0, Vec::len);
    let no = h["not_attached"].as_array().map_or(0, Vec::len);
    format!("{yes} of {}", yes + no)
}

/// Per kernel: the hooks the tracer left out, grouped by its reason.
pub fn hooks_not_attached(runs: &[KernelRun]) -> String {
    let mut s = String::new();
    for run in runs {
        // (reason, hooks) in first-seen order.
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for r in &run.results {
            for n in r["hooks"]["not_attached"].as_array().into_iter().flatten() {
                let (hook, why) = (n["hook"].as_str().unwrap_or("?"), n["detail"].as_str().unwrap_or("?"));
                match groups.iter_mut().find(|(w, _)| w == why) {
                    Some((_, hooks)) if !hooks.iter().any(|h| h == hook) => hooks.push(hook.to_string()),
                    Some(_) => {}
                    None => groups.push((why.to_string(), vec![hook.to_string()])),
                }
            }
        }
        for (why, hooks) in groups {
            let _ = writeln!(s, "- {} ({}): {} — {why}", run.line, run.release, hooks.join(", "));
        }
    }
    s
}

fn ports(result: &Value) -> String {
    result["truth_ports"]
        .as_array()
        .map(|a| a.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(" → "))
        .unwrap_or_default()
}

/// The Markdown table (also printed after every run).
pub fn table(runs: &[KernelRun]) -> String {
    let mut s = String::from(
        "| Kernel | NFS | Option | ss -K reconnects | sysfs dstaddr reconnect | Range | Ports (ss) | Tracer agrees | SunRPC agrees | check | prove | Hooks attached |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for run in runs {
        for r in &run.results {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                run.line,
                r["vers"].as_str().unwrap_or("?"),
                r["options"].as_str().unwrap_or("?"),
                port_behaviour(r, "ss-kill"),
                port_behaviour(r, "sysfs-dstaddr"),
                r["port_range"].as_str().unwrap_or("?"),
                ports(r),
                agrees(r),
                match r["sunrpc"]["agree"].as_bool() {
                    Some(true) => "✔",
                    Some(false) => "✘",
                    None => "—",
                },
                tool(r, "check"),
                tool(r, "prove"),
                hooks(r),
            );
        }
    }
    s
}

/// What went wrong, scenario by scenario (for the console and the matrix).
pub fn problems(runs: &[KernelRun]) -> Vec<String> {
    let mut out = Vec::new();
    for run in runs {
        if run.end != "OK" {
            out.push(format!("{} ({}): guest run ended with {}", run.line, run.release, run.end));
        }
        for r in &run.results {
            for p in r["problems"].as_array().into_iter().flatten() {
                out.push(format!("{} {}: {}", run.line, r["scenario"].as_str().unwrap_or("?"), p.as_str().unwrap_or("?")));
            }
        }
    }
    out
}

pub fn timings(runs: &[KernelRun]) -> String {
    let mut s = String::from("| Kernel line | Release | Debian package | Guest run (QEMU) | Total (fetch, build, boot) |\n|---|---|---|---|---|\n");
    for r in runs {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.0} s | {:.0} s |",
            r.line,
            r.release,
            r.package_version,
            r.qemu_wall.as_secs_f64(),
            r.wall.as_secs_f64()
        );
    }
    s
}

/// docs/vm-matrix.md and docs/vm-matrix.json.
pub fn write_matrix(dir: &Path, runs: &[KernelRun], date: &str, source: &str) -> Result<()> {
    let mut md = format!(
        "# NFS client source port on reconnect, by kernel (VM lab)\n\n\
         Generated by `cargo xtask vm --matrix` on {date} (nfs-trace from {source}): Debian cloud kernels under QEMU/TCG, the kernel's\n\
         nfsd and NFS client over a veth pair into a client network namespace. Each mount is reconnected\n\
         twice with `ss -K` and, where the kernel has `/sys/kernel/sunrpc`, once by rewriting the\n\
         transport's `dstaddr`. *Same port* / *new port* compare the client's source port (from `ss`)\n\
         before and after each reconnect; *Range* says whether the ports were reserved (< 1024) or\n\
         ephemeral. *Tracer agrees* means `nfs-trace watch --json` reported every reconnect with the\n\
         same ports, and a `reuse` exactly when the port was the same. *SunRPC agrees*: one\n\
         `xprt_reconnect` for the mount per reconnect, with ss's ports and `reused` iff the same.\n\
         *check*: `nfs-trace check --json` in the guest flags the mount (exit 2) iff the `ss -K`\n\
         reconnects reused the port. *prove*: `nfs-trace prove -n 2` in the client namespace exits 3\n\
         iff the ground truth for its way of forcing (sysfs or socket destroy) shows reuse, and its\n\
         rounds start and end at the ports `ss` saw before and after it.\n\n"
    );
    md += &table(runs);
    let not = hooks_not_attached(runs);
    if !not.is_empty() {
        md += "\n## Hooks the tracer did not attach, and why (from its `attached` record)\n\n";
        md += &not;
    }
    md += "\n## Kernels and wall time\n\n";
    md += &timings(runs);
    let probs = problems(runs);
    if !probs.is_empty() {
        md += "\n## Disagreements and failures\n\n";
        for p in &probs {
            md += &format!("- {p}\n");
        }
    }
    std::fs::write(dir.join("vm-matrix.md"), md).with_context(|| format!("cannot write {}/vm-matrix.md", dir.display()))?;
    let j = json!({
        "generated": date,
        "source": source,
        "kernels": runs.iter().map(|r| json!({
            "line": r.line, "release": r.release, "package_version": r.package_version,
            "qemu_wall_s": (r.qemu_wall.as_secs_f64() * 10.0).round() / 10.0,
            "total_wall_s": (r.wall.as_secs_f64() * 10.0).round() / 10.0,
            "guest_end": r.end, "tracer": r.with_tracer,
        })).collect::<Vec<_>>(),
        "scenarios": records(runs),
    });
    write_json(&dir.join("vm-matrix.json"), &j)
}
