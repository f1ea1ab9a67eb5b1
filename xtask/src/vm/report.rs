//! The results: one JSON record per scenario, the console summary, and the
//! compatibility matrix (Markdown and JSON) under docs/.
use std::{fmt::Write as _, path::Path, time::Duration};

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

use super::arch::Arch;

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

pub(super) fn agrees(result: &Value) -> &'static str {
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
        // The reconnect scenarios; stall and late-sunrpc records have their own `kind`.
        for r in run.results.iter().filter(|r| r["kind"].is_null()) {
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

/// "804 → (804) → 990": before, the ports seen in SYN-SENT, after.
fn stall_ports(r: &Value) -> String {
    let p = |i: usize| r["truth_ports"][i].as_u64().map_or("?".to_string(), |p| p.to_string());
    let syn: Vec<String> = r["syn_sent_ports"].as_array().into_iter().flatten().map(|p| p.to_string()).collect();
    let mid = if syn.is_empty() { String::new() } else { format!(" → ({})", syn.join(", ")) };
    format!("{}{mid} → {}", p(0), p(1))
}

/// The stall scenarios (issue 5): the write's block against the tracer's
/// stall. Empty when none ran.
pub fn stall_table(runs: &[KernelRun]) -> String {
    let rows: Vec<(&KernelRun, &Value)> =
        runs.iter().flat_map(|run| run.results.iter().filter(|r| r["kind"] == "stall").map(move |r| (run, r))).collect();
    if rows.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "| Kernel | NFS | Ports (ss: before → SYN-SENT → after) | SYNs dropped by the middlebox | Write blocked (truth) | Tracer's stall | Tracer's SYN retransmits | Agrees |\n\
         |---|---|---|---:|---:|---:|---:|---|\n",
    );
    let secs = |v: &Value| v.as_f64().map_or("—".to_string(), |x| format!("{x:.1} s"));
    for (run, r) in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            run.line,
            r["vers"].as_str().unwrap_or("?"),
            stall_ports(r),
            r["syn_drops"],
            secs(&r["block_s"]),
            if r["tracer_stall_s"].is_null() { "none".to_string() } else { secs(&r["tracer_stall_s"]) },
            if r["tracer_retransmits"].is_null() { "—".to_string() } else { r["tracer_retransmits"].to_string() },
            agrees(r),
        );
    }
    s
}

/// The outage scenarios (issue 12): the router dropped everything to the
/// server for 20 s; the canary and the episode's verdict against that.
/// Empty when none ran.
pub fn outage_table(runs: &[KernelRun]) -> String {
    let rows: Vec<(&KernelRun, &Value)> =
        runs.iter().flat_map(|run| run.results.iter().filter(|r| r["kind"] == "outage").map(move |r| (run, r))).collect();
    if rows.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "| Kernel | NFS | Ports (ss: before → SYN-SENT → after) | Outage (truth) | Packets dropped | Write blocked (truth) | Canaries during it | Episode verdict | Episode end − write end | Agrees |\n\
         |---|---|---|---:|---:|---:|---|---|---:|---|\n",
    );
    let secs = |v: &Value| v.as_f64().map_or("—".to_string(), |x| format!("{x:.1} s"));
    for (run, r) in rows {
        let canaries: Vec<String> = r["canaries"].as_array().into_iter().flatten().map(|c| c["outcome"].as_str().unwrap_or("?").to_string()).collect();
        let verdicts: Vec<&str> = r["episode_verdicts"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            run.line,
            r["vers"].as_str().unwrap_or("?"),
            stall_ports(r),
            secs(&r["outage_s"]),
            r["outage_drops"],
            secs(&r["block_s"]),
            if canaries.is_empty() { "none".to_string() } else { canaries.join(", ") },
            if verdicts.is_empty() { "none".to_string() } else { verdicts.join(", ") },
            r["episode_end_minus_write_s"].as_f64().map_or("—".to_string(), |d| format!("{d:+.2} s")),
            agrees(r),
        );
    }
    s
}

/// The black-hole scenarios (issue 12): the router dropped the mount's
/// established flow (194 s for v3, past its user timeout; 20 s for v4.1);
/// the episode's verdict and phase times against that. Empty when none ran.
pub fn blackhole_table(runs: &[KernelRun]) -> String {
    let rows: Vec<(&KernelRun, &Value)> =
        runs.iter().flat_map(|run| run.results.iter().filter(|r| r["kind"] == "blackhole").map(move |r| (run, r))).collect();
    if rows.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "| Kernel | NFS | Ports (ss: before → SYN-SENT → after) | Black hole (truth) | Dropped to / from server | Old flow gone | Old port in SYN-SENT | Write blocked (truth) | Write end − rule end | Tracer's data retransmits | Episode verdict | (a) − rule | (b) − gone | (c) − SYN-SENT seen | (d) − write end | Agrees |\n\
         |---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|\n",
    );
    let secs = |v: &Value| v.as_f64().map_or("—".to_string(), |x| format!("{x:.1} s"));
    let delta = |v: &Value| v.as_f64().map_or("—".to_string(), |d| format!("{d:+.2} s"));
    for (run, r) in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} / {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            run.line,
            r["vers"].as_str().unwrap_or("?"),
            stall_ports(r),
            secs(&r["blackhole_s"]),
            r["drops_to_server"],
            r["drops_from_server"],
            r["old_flow_gone_s"].as_f64().map_or("never".to_string(), |x| format!("+{x:.1} s")),
            match (r["old_port_syn_sent_s"].as_f64(), r["reconnect_stall_s"].as_f64()) {
                (Some(at), Some(stall)) => format!("+{at:.1} s, {stall:.1} s to the write end"),
                _ => "never".to_string(),
            },
            secs(&r["block_s"]),
            delta(&r["write_end_minus_rule_end_s"]),
            if r["tracer_data_retransmits"].is_null() { "none".to_string() } else { r["tracer_data_retransmits"].to_string() },
            r["episode_verdict"].as_str().unwrap_or("none"),
            delta(&r["unanswered_minus_rule_s"]),
            delta(&r["closed_minus_gone_s"]),
            delta(&r["reconnect_minus_syn_sent_s"]),
            delta(&r["recovered_minus_write_s"]),
            agrees(r),
        );
    }
    s
}

/// One line per kernel for `late-sunrpc` (the tracer started before the
/// sunrpc module loaded). Empty when it did not run.
pub fn late_lines(runs: &[KernelRun]) -> String {
    let mut s = String::new();
    for run in runs {
        for r in run.results.iter().filter(|r| r["kind"] == "late") {
            let _ = writeln!(
                s,
                "- {} ({}): sunrpc absent at start: {}; SunRPC hooks waiting at start: {}, attached after the load: {}; \
                 xprt_connect from port {} (ss: {}) {}",
                run.line,
                run.release,
                r["sunrpc_absent_at_start"],
                r["hooks_waiting_at_start"],
                r["hooks_attached_later"],
                r["tracer_xprt_port"],
                r["truth_port"],
                agrees(r)
            );
        }
    }
    s
}

/// One line per kernel for `sunrpc-btf`: the sunrpc offsets nfs-trace gave
/// its programs against btf-rs's. Empty when it did not run.
pub fn sunrpc_btf_lines(runs: &[KernelRun]) -> String {
    let mut s = String::new();
    for run in runs {
        for r in run.results.iter().filter(|r| r["kind"] == "sunrpc_btf") {
            let _ = writeln!(
                s,
                "- {} ({}): sunrpc split BTF: {}; rpc_xprt.addr nfs-trace {} / btf-rs {}; sock_xprt.srcport nfs-trace {} / btf-rs {}; \
                 SunRPC hooks attached: {} {}",
                run.line,
                run.release,
                r["split_btf"],
                r["tracer"]["xprt_addr"],
                r["btf_rs"]["xprt_addr"],
                r["tracer"]["srcport"],
                r["btf_rs"]["srcport"],
                r["hooks_attached"],
                agrees(r)
            );
        }
    }
    s
}

/// The topology scenarios (issue 11): per scenario, each mount's reconnects
/// with the same port by `ss` against the tracer's reuses, and whether the
/// tracer's TCP records, its SunRPC attribution, its namespaces and `check`
/// agreed. Empty when none ran.
pub fn topology_table(runs: &[KernelRun]) -> String {
    let rows: Vec<(&KernelRun, &Value)> =
        runs.iter().flat_map(|run| run.results.iter().filter(|r| r["kind"] == "topology").map(move |r| (run, r))).collect();
    if rows.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "| Kernel | Scenario | Mounts: same port by ss / reconnects → tracer's reuses | TCP agrees | SunRPC agrees | netns | check | Guest time |\n\
         |---|---|---|---|---|---|---|---:|\n",
    );
    let mark = |v: &Value| match v.as_bool() {
        Some(true) => "✔",
        Some(false) => "✘",
        None => "—",
    };
    for (run, r) in rows {
        let mounts: Vec<String> = r["mounts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                let place = if m["place"] == "container" { " (container)" } else { "" };
                format!("v{}×{}{place} {}/{} → {}", m["vers"].as_str().unwrap_or("?"), m["transports"], m["ss_same_port"], m["reconnects"], m["tracer_reuses"])
            })
            .collect();
        let check = if r["check"].is_null() { "—" } else { mark(&r["check"]["agree"]) };
        let secs = r["guest_s"].as_f64().map_or("—".to_string(), |x| format!("{x:.0} s"));
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {check} | {secs} |",
            run.line,
            r["scenario"].as_str().unwrap_or("?"),
            if mounts.is_empty() { "—".to_string() } else { mounts.join("; ") },
            mark(&r["tcp_agree"]),
            mark(&r["sunrpc_agree"]),
            mark(&r["netns_agree"]),
        );
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

/// docs/vm-matrix.md and docs/vm-matrix.json (`vm-matrix-arm64.*` for arm64
/// guests, beside the x86 one); returns the file stem.
pub fn write_matrix(dir: &Path, runs: &[KernelRun], date: &str, source: &str, arch: Arch) -> Result<String> {
    let (stem, title, flag) = match arch {
        Arch::X86_64 => ("vm-matrix".to_string(), String::new(), String::new()),
        a => (format!("vm-matrix-{}", a.debian()), format!(", {} guests", a.debian()), format!(" --arch {}", a.debian())),
    };
    let mut md = format!(
        "# NFS client source port on reconnect, by kernel (VM lab{title})\n\n\
         Generated by `cargo xtask vm --matrix{flag}` on {date} (nfs-trace from {source}): Debian cloud kernels under QEMU/TCG, the kernel's\n\
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
    let stalls = stall_table(runs);
    if !stalls.is_empty() {
        md += "\n## Stall lab: a middlebox that still holds the old flow\n\n\
               The client mounts through a router namespace that tracks connections (nftables, conntrack,\n\
               tracked-entry timeout shortened) and drops a SYN matching a still-ESTABLISHED entry. The\n\
               client's connection is aborted with `ss -K` while the router drops that RST, so router and\n\
               server keep the old flow; then one write is timed. *Agrees*: the tracer reported one stall\n\
               exactly when the write blocked, its duration within 2 s of the block, from the old port,\n\
               attributed to the mount, and the same in its summary; no stall when the write did not block.\n\n";
        md += &stalls;
    }
    let outages = outage_table(runs);
    if !outages.is_empty() {
        md += "\n## Stall lab: the server unreachable (`outage`)\n\n\
               Through the same router, an nft rule drops every packet to and from the server for 20 s\n\
               (its counter is the truth) while the mount's connection is aborted and one write waits.\n\
               *Agrees*: the write blocked past the outage; every canary the tracer made during it failed;\n\
               an episode ended with verdict `server-or-path-down` (never `reused-flow-dropped`, in any\n\
               record) within 2 s of the write completing.\n\n";
        md += &outages;
    }
    let holes = blackhole_table(runs);
    if !holes.is_empty() {
        md += "\n## Stall lab: the established flow black-holed (`blackhole`)\n\n\
               Through the same router, with `timeo=20,retrans=2`, an nft rule drops the mount's established\n\
               flow — that 4-tuple only, both ways, no RST — while a write waits (its counters and `ss` are\n\
               the truth): 194 s for v3, past its 180 s TCP user timeout, so that it gives the flow up and\n\
               reconnects from the same port while the rule still drops it; 20 s for v4.1 (its user timeout\n\
               is the 10 s lease). *Old flow gone*: when `ss` stopped listing it ESTABLISHED (never: the\n\
               client kept the flow and its retransmits got through once the rule went). *Old port in\n\
               SYN-SENT*: when `ss` first saw the black-holed port reconnecting, and from then to the write's\n\
               end. *Agrees*: the tracer printed `data_retransmit` records for the flow; the flow's episode\n\
               ended with `reused-flow-dropped` when the client reconnected from the black-holed port (phase\n\
               (c) stalled and reused, a canary that connected), else `path-blackhole` (never a reuse\n\
               verdict); its evidence tells the unanswered phase (the data retransmits) and, for a reused\n\
               port, the stalled reconnect and the canary; phase (a) `unanswered` within 2 s of the rule\n\
               going in, (b) `closed` within 2 s of `ss` losing the flow (after its last listing of it, before\n\
               its first without; *(b) − gone* is against the latter), (c) `reconnect` within 2 s of `ss`\n\
               first seeing its SYN-SENT, (d) `recovered` within 2 s of the write completing.\n\n";
        md += &holes;
    }
    let silent = super::silent::table(runs);
    if !silent.is_empty() {
        md += super::silent::MATRIX_TEXT;
        md += &silent;
    }
    let late = late_lines(runs);
    if !late.is_empty() {
        md += "\n## The tracer started before sunrpc was loaded (`late-sunrpc`)\n\n\
               The tracer starts before the guest loads any module; it must report the SunRPC hooks as\n\
               waiting, attach them when sunrpc loads, and then see the transport of a v4.1 mount made\n\
               afterwards, from the port `ss` saw.\n\n";
        md += &late;
    }
    let topo = topology_table(runs);
    if !topo.is_empty() {
        md += "\n## Several transports at once: nconnect, two mounts of one server, a container, IPv6\n\n\
               The tracer starts before the mounts. `nconnect`: a v3 and a v4.1 mount with `nconnect=4`\n\
               each, all 8 transports reconnected one at a time with `ss -K`. `shared-server`: a v3 and a\n\
               v4.1 mount of two exports of one server, reconnected interleaved. `netns`: a container (its\n\
               own network and mount namespace, its own veth) mounts the same server address as the\n\
               client; `check` runs from the root namespaces. `ipv6`: a v3 and a v4.1 mount over ULA\n\
               addresses. Truth: `ss` inside each namespace (ports before and after), mountstats and\n\
               `/sys/fs/nfs` (6.4+) for whose each socket is. *TCP agrees*: a connect from ss's port per\n\
               reconnect, a `reuse` (not by chance) exactly when the port was the same, the reuses per\n\
               mount equal to ss's. *SunRPC agrees*: one `xprt_reconnect` per reconnect with ss's ports\n\
               naming exactly its own mount, and no first connect credited to another mount. *netns*:\n\
               every such record carries its namespace's inode. *check*: it lists every mount with its\n\
               netns and flags those that reuse.\n\n";
        md += &topo;
    }
    let exp = super::experiment::table(runs);
    if !exp.is_empty() {
        md += "\n## `prove --server` beside a busy production mount (experiment)\n\n\
               A v4.1 production mount writes and syncs every 100 ms while `nfs-trace prove --server` mounts\n\
               the same server once per option set (v3 on `/export`, v4 on the pseudo-root) and forces two\n\
               reconnects of each test mount. The v4.1 sets are skipped: the kernel would give them the\n\
               production mount's client and transport. Truth: nft counts SYNs per source port in the client\n\
               namespace (every port prove reports must have sent as many SYNs as it has connects in the\n\
               table), `ss` shows the production connection unchanged, no write failed, nothing stays\n\
               mounted, and each set's same/new port equals the reconnect scenario's for that version and option.\n\n";
        md += &exp;
    }
    let prox = super::proxy::table(runs);
    if !prox.is_empty() {
        md += super::proxy::MATRIX_TEXT;
        md += &prox;
    }
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
    std::fs::write(dir.join(format!("{stem}.md")), md).with_context(|| format!("cannot write {}/{stem}.md", dir.display()))?;
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
    write_json(&dir.join(format!("{stem}.json")), &j)?;
    Ok(stem)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(results: Vec<Value>) -> KernelRun {
        KernelRun {
            line: "6.12".into(),
            release: "r".into(),
            package_version: "p".into(),
            wall: Duration::from_secs(1),
            qemu_wall: Duration::from_secs(1),
            end: "OK".into(),
            results,
            with_tracer: true,
        }
    }

    #[test]
    fn the_blackhole_table_shows_the_truth_and_the_phases() {
        let r = json!({"kind": "blackhole", "vers": "3", "truth_ports": [871, 871], "syn_sent_ports": [871], "blackhole_s": 20.1,
                       "drops_to_server": 12, "drops_from_server": 2, "old_flow_gone_s": 6.24, "block_s": 21.5,
                       "write_end_minus_rule_end_s": 1.4, "tracer_data_retransmits": null, "episode_verdict": "reused-flow-dropped",
                       "old_port_syn_sent_s": 6.4, "reconnect_stall_s": 15.1,
                       "unanswered_minus_rule_s": null, "closed_minus_gone_s": -0.1, "reconnect_minus_syn_sent_s": -0.25,
                       "recovered_minus_write_s": -0.02, "agree": false});
        let t = blackhole_table(&[run(vec![r])]);
        assert!(
            t.contains("| 6.12 | 3 | 871 → (871) → 871 | 20.1 s | 12 / 2 | +6.2 s | +6.4 s, 15.1 s to the write end | 21.5 s | +1.40 s | none | reused-flow-dropped | — | -0.10 s | -0.25 s | -0.02 s | ✘ |"),
            "{t}"
        );
        // A kept flow: no reconnect to time.
        let t = blackhole_table(&[run(vec![json!({"kind": "blackhole", "vers": "3", "old_flow_gone_s": null})])]);
        assert!(t.contains("| never | never |"), "{t}");
        assert!(blackhole_table(&[run(vec![json!({"kind": "outage"})])]).is_empty());
    }

    #[test]
    fn the_topology_table_shows_each_mounts_counts_and_verdicts() {
        let r = json!({"kind": "topology", "scenario": "netns", "guest_s": 6.2, "tcp_agree": true, "sunrpc_agree": false,
                       "netns_agree": false, "check": {"agree": false},
                       "mounts": [{"vers": "3", "transports": 1, "place": "client", "ss_same_port": 2, "reconnects": 2, "tracer_reuses": 2},
                                  {"vers": "3", "transports": 1, "place": "container", "ss_same_port": 2, "reconnects": 2, "tracer_reuses": 1}]});
        let t = topology_table(&[run(vec![r])]);
        assert!(t.contains("| 6.12 | netns | v3×1 2/2 → 2; v3×1 (container) 2/2 → 1 | ✔ | ✘ | ✘ | ✘ | 6 s |"), "{t}");
        assert!(topology_table(&[run(vec![json!({"scenario": "v3-default"})])]).is_empty());
        // The reconnect table leaves topology records out.
        assert_eq!(table(&[run(vec![json!({"kind": "topology"})])]).lines().count(), 2);
    }
}
