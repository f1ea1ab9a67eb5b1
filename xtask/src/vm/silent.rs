//! Judgement of the server-silent scenarios (issue 12): nfsd stops
//! answering RPCs while TCP stays up (the export frozen with fsfreeze for
//! 25 s while a write waits; the mount has `timeo=20,retrans=2`, so its
//! RPCs reach major timeouts inside the freeze).
//!
//! Ground truth: the freeze and thaw on the lab clock, the write's block,
//! the mount's socket at every `ss` poll (the same cookie before and after,
//! never gone, its kernel retransmit count). The truth itself must show a
//! silent server and a healthy connection: the write caught for more than
//! a second and completed only once the thaw began, the same socket
//! throughout, and no data retransmitted by the kernel meanwhile (else the
//! lab made something other than a silent server).
//!
//! The tracer must then have: RPC timeouts for the flow during the freeze
//! (`rpc_timeout` records where rpc_timeout_status attached; else the
//! kernel's "not responding" line, which stands in for it); an ended
//! episode of the mount's flow with verdict `server-not-answering`, its
//! phase (a) counting RPC timeouts and no data retransmits, starting after
//! the freeze and before the thaw, no phase (b) (the connection never
//! went), phase (d) `recovered` within [`TOLERANCE_S`] of the write
//! completing; and no reuse or path verdict in any episode record.
use std::fmt::Write as _;

use serde_json::{Value, json};

use super::{report::KernelRun, stall::TOLERANCE_S};

pub const VERSIONS: &[&str] = &["3", "4.1"];

/// A write the freeze caught blocks at least this long.
const CAUGHT_S: f64 = 1.0;

/// Scenario names: `server-silent-v3`, `server-silent-v4.1`.
pub fn names() -> Vec<String> {
    VERSIONS.iter().map(|v| format!("server-silent-v{v}")).collect()
}

pub fn is_silent(name: &str) -> bool {
    name.starts_with("server-silent-")
}

pub fn judge(truth: &Value, tracer: Option<&Vec<Value>>, with_tracer: bool) -> Value {
    let server = truth["server"].as_str().unwrap_or_default();
    let s = &truth["silent"];
    let mut problems: Vec<String> = Vec::new();
    if let Some(e) = truth["error"].as_str() {
        problems.push(format!("guest: {e}"));
    }
    let (freeze, thaw_begin, thaw) = (s["freeze_ns"].as_u64(), s["thaw_begin_ns"].as_u64(), s["thaw_ns"].as_u64());
    let (w1, block_s) = (s["write_end_ns"].as_u64(), s["block_s"].as_f64());
    let ns_s = |ns: u64| ns as f64 / 1e9;
    let diff = |to: Option<u64>, from: Option<u64>| to.zip(from).map(|(t, f)| ((ns_s(t) - ns_s(f)) * 1000.0).round() / 1000.0);
    if truth["error"].is_null() {
        match (thaw_begin, w1, block_s) {
            (_, _, Some(b)) if b < CAUGHT_S => problems.push(format!("the write blocked only {b:.2} s: the freeze did not catch it")),
            (Some(t), Some(w), _) if w < t => {
                problems.push(format!("the write completed {:.1} s before the thaw: the server answered while frozen", ns_s(t - w)))
            }
            (Some(_), Some(_), Some(_)) => {}
            _ => problems.push("the truth has no freeze times or write block".into()),
        }
        if s["before_sk"] != s["after_sk"] || !s["flow"]["gone_ns"].is_null() {
            problems.push(format!(
                "the connection did not stay up (sk:{} before, sk:{} after, gone {}): the lab made no silent server",
                s["before_sk"], s["after_sk"], s["flow"]["gone_ns"]
            ));
        }
        let (rb, rm) = (s["flow"]["retrans_before"].as_u64().unwrap_or(0), s["flow"]["retrans_max"].as_u64().unwrap_or(0));
        if rm > rb {
            problems.push(format!("ss counted {} retransmits on the flow during the freeze: TCP was not healthy", rm - rb));
        }
    }

    let empty = Vec::new();
    let lines = tracer.unwrap_or(&empty);
    let to_server = |l: &Value| l["raddr"] == server && l["dport"] == 2049;
    let of_flow = |l: &Value| to_server(l) && l["sport"] == s["before"] && (l["netns"].is_null() || s["netns"].is_null() || l["netns"] == s["netns"]);
    let during = |l: &Value| l["mono_ns"].as_u64().is_some_and(|t| freeze.is_some_and(|f| t > f) && thaw.is_some_and(|e| t <= e));
    let hook = lines.iter().filter(|l| l["type"] == "attached" || l["type"] == "hooks").flat_map(|l| l["hooks"].as_array().cloned().unwrap_or_default())
        .any(|h| h["name"] == "rpc_timeout_status" && h["attached"] == json!(true));
    let timeouts: Vec<&Value> = lines.iter().filter(|l| l["type"] == "rpc_timeout" && of_flow(l) && during(l)).collect();
    let not_responding: Vec<&Value> = lines.iter().filter(|l| l["type"] == "kernel" && l["not_responding"] == json!(true)).collect();
    let episodes: Vec<&Value> = lines.iter().filter(|l| l["type"] == "episode" && to_server(l)).collect();
    let ended = episodes.iter().copied().rfind(|l| l["state"] == "ended" && of_flow(l));
    let verdicts: Vec<&str> = episodes.iter().filter_map(|l| l["verdict"].as_str()).collect();
    let ph = ended.map(|e| &e["phases"]);
    let unanswered = ph.map(|p| &p["unanswered"]).filter(|u| !u.is_null());
    let recovered = ph.map(|p| &p["recovered"]).filter(|r| !r.is_null());
    let unanswered_vs_freeze = diff(unanswered.and_then(|u| u["mono_ns"].as_u64()), freeze);
    let recovered_vs_write = diff(recovered.and_then(|r| r["mono_ns"].as_u64()), w1);
    if with_tracer && truth["error"].is_null() {
        if truth["tracer"]["ran"] != json!(true) {
            problems.push("the tracer did not run".into());
        }
        match (hook, timeouts.len(), not_responding.len()) {
            (true, 0, _) => problems.push(format!("rpc_timeout_status is attached yet no rpc_timeout record for port {} during the freeze", s["before"])),
            (false, _, 0) => problems.push("rpc_timeout_status is not attached and the kernel printed no \"not responding\" the tracer saw".into()),
            _ => {}
        }
        if let Some(e) = episodes.iter().find(|l| l["verdict"] != "server-not-answering" && l["verdict"] != "unknown") {
            problems.push(format!("episode {} ({}) says {}, never right for a silent server", e["id"], e["state"].as_str().unwrap_or("?"), e["verdict"]));
        }
        match ended {
            None => problems.push(format!("no ended episode for the flow from port {} (want server-not-answering)", s["before"])),
            Some(e) => {
                if e["verdict"] != "server-not-answering" {
                    problems.push(format!("the episode ended with verdict {}, want server-not-answering ({})", e["verdict"], e["evidence"]));
                }
                match unanswered {
                    None => problems.push("the episode has no phase (a) `unanswered`".into()),
                    Some(u) => {
                        if u["rpc_timeouts"].as_u64().unwrap_or(0) == 0 || u["data_retransmits"].as_u64().unwrap_or(0) != 0 {
                            problems.push(format!(
                                "phase (a) counts {} RPC timeouts and {} data retransmits, want ≥ 1 and 0",
                                u["rpc_timeouts"], u["data_retransmits"]
                            ));
                        }
                        let inside = u["mono_ns"].as_u64().is_some_and(|t| freeze.is_some_and(|f| t > f) && thaw.is_some_and(|h| t <= h));
                        if !inside {
                            problems.push(format!("phase (a) starts {:?} s after the freeze, outside it", unanswered_vs_freeze));
                        }
                    }
                }
                if !ph.is_some_and(|p| p["closed"].is_null()) {
                    problems.push(format!("the episode has a phase (b) `closed` ({}), yet ss saw the same socket throughout", ph.map_or(Value::Null, |p| p["closed"].clone())));
                }
                match recovered_vs_write {
                    None => problems.push("the episode has no phase (d) `recovered`".into()),
                    Some(d) if d.abs() > TOLERANCE_S => {
                        problems.push(format!("phase (d) is {d:+.3} s from the write's end, want within {TOLERANCE_S} s"))
                    }
                    Some(_) => {}
                }
                if !e["evidence"].as_str().is_some_and(|t| t.contains("RPC major timeout")) {
                    problems.push(format!("the evidence does not name the RPC timeouts: {}", e["evidence"]));
                }
            }
        }
    }
    json!({
        "kind": "silent",
        "scenario": truth["scenario"],
        "vers": truth["vers"],
        "mount_options": truth["mount_options"],
        "port": s["before"],
        "frozen_s": diff(thaw, freeze).map(|v| (v * 10.0).round() / 10.0),
        "block_s": block_s,
        "write_end_minus_thaw_s": diff(w1, thaw_begin),
        "ss_retransmits": s["flow"]["retrans_max"].as_u64().zip(s["flow"]["retrans_before"].as_u64()).map(|(m, b)| m.saturating_sub(b)),
        "rpc_timeout_hook": hook,
        "tracer_rpc_timeouts": timeouts.len(),
        "kernel_not_responding": not_responding.len(),
        "episode_verdict": ended.map(|e| e["verdict"].clone()),
        "episode_verdicts": verdicts,
        "episode_rpc_timeouts": unanswered.map(|u| u["rpc_timeouts"].clone()),
        "unanswered_minus_freeze_s": unanswered_vs_freeze,
        "recovered_minus_write_s": recovered_vs_write,
        "evidence": ended.map(|e| e["evidence"].clone()),
        "tracer_exit": truth["tracer"]["exit"],
        "agree": if with_tracer { json!(problems.is_empty()) } else { Value::Null },
        "ok": problems.is_empty(),
        "problems": problems,
    })
}

/// docs/vm-matrix.md's words above [`table`].
pub const MATRIX_TEXT: &str = "\n## Stall lab: the server stops answering (`server-silent`)\n\n\
    The export (ext2 on a RAM disk) is frozen with `fsfreeze` for 25 s while a write waits; the mount\n\
    has `timeo=20,retrans=2`. nfsd's write blocks in the server's kernel while TCP stays up. The truth:\n\
    the freeze on the lab clock, the write's block, the mount's socket at every `ss` poll (the same\n\
    socket throughout, no retransmits). *Agrees*: RPC timeouts reported for the flow during the freeze\n\
    (`rpc_timeout` records, or the kernel's \"not responding\" where the hook cannot attach); the flow's\n\
    episode ended `server-not-answering` (never another verdict in any record), phase (a) counting RPC\n\
    timeouts and no data retransmits inside the freeze, no phase (b), (d) within 2 s of the write's end.\n\n";

/// One row per kernel and version; empty when none ran.
pub fn table(runs: &[KernelRun]) -> String {
    let rows: Vec<(&KernelRun, &Value)> =
        runs.iter().flat_map(|run| run.results.iter().filter(|r| r["kind"] == "silent").map(move |r| (run, r))).collect();
    if rows.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "| Kernel | NFS | Port | Frozen (truth) | Write blocked (truth) | ss retransmits | RPC timeouts from | Tracer's RPC timeouts | Episode verdict | (a) − freeze | (d) − write end | Agrees |\n\
         |---|---|---:|---:|---:|---:|---|---:|---|---:|---:|---|\n",
    );
    let secs = |v: &Value| v.as_f64().map_or("—".to_string(), |x| format!("{x:.1} s"));
    let delta = |v: &Value| v.as_f64().map_or("—".to_string(), |d| format!("{d:+.2} s"));
    for (run, r) in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            run.line,
            r["vers"].as_str().unwrap_or("?"),
            r["port"],
            secs(&r["frozen_s"]),
            secs(&r["block_s"]),
            r["ss_retransmits"],
            if r["rpc_timeout_hook"] == json!(true) { "rpc_timeout_status" } else { "kmsg \"not responding\"" },
            r["episode_rpc_timeouts"].as_u64().map_or("—".to_string(), |n| n.to_string()),
            r["episode_verdict"].as_str().unwrap_or("none"),
            delta(&r["unanswered_minus_freeze_s"]),
            delta(&r["recovered_minus_write_s"]),
            super::report::agrees(r),
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn truth() -> Value {
        json!({"scenario": "server-silent-v3", "vers": "3", "server": "10.98.0.1", "error": null, "tracer": {"ran": true},
               "silent": {"before": 700, "after": 700, "before_sk": "a1", "after_sk": "a1", "netns": 7,
                          "freeze_ns": 10_000_000_000u64, "thaw_begin_ns": 35_000_000_000u64, "thaw_ns": 35_100_000_000u64,
                          "write_start_ns": 10_100_000_000u64, "write_end_ns": 35_300_000_000u64, "block_s": 25.2,
                          "flow": {"polls": 90, "gone_ns": null, "retrans_before": 0, "retrans_max": 0, "unacked_max": 1}}})
    }

    fn lines(verdict: &str, recovered_ns: u64) -> Vec<Value> {
        let flow = json!({"raddr": "10.98.0.1", "dport": 2049, "sport": 700, "netns": 7});
        let with = |mut v: Value| {
            for (k, x) in flow.as_object().unwrap() {
                v[k] = x.clone();
            }
            v
        };
        vec![
            json!({"type": "attached", "hooks": [{"name": "rpc_timeout_status", "attached": true}]}),
            with(json!({"type": "rpc_timeout", "mono_ns": 16_000_000_000u64})),
            with(json!({"type": "episode", "id": 1, "state": "ended", "verdict": verdict,
                        "evidence": "2 RPC major timeout(s) over 6.0 s while the connection from port 700 stayed established",
                        "phases": {"unanswered": {"mono_ns": 16_000_000_000u64, "rpc_timeouts": 2, "data_retransmits": 0},
                                   "closed": null, "recovered": {"mono_ns": recovered_ns}}})),
        ]
    }

    #[test]
    fn agrees_with_a_silent_server_and_fails_each_wrong_answer() {
        let t = truth();
        let ok = judge(&t, Some(&lines("server-not-answering", 35_400_000_000)), true);
        assert_eq!(ok["ok"], true, "{ok}");
        let wrong = judge(&t, Some(&lines("path-blackhole", 35_400_000_000)), true);
        assert_eq!(wrong["ok"], false, "{wrong}");
        let late = judge(&t, Some(&lines("server-not-answering", 40_000_000_000)), true);
        assert!(late["problems"].to_string().contains("phase (d)"), "{late}");
        let mut no_timeouts = lines("server-not-answering", 35_400_000_000);
        no_timeouts.remove(1);
        assert!(judge(&t, Some(&no_timeouts), true)["problems"].to_string().contains("no rpc_timeout record"));
        // The truth itself: a flow the kernel retransmitted on is no silent server.
        let mut t2 = truth();
        t2["silent"]["flow"]["retrans_max"] = json!(3);
        assert!(judge(&t2, Some(&lines("server-not-answering", 35_400_000_000)), true)["problems"].to_string().contains("TCP was not healthy"));
        let mut t3 = truth();
        t3["silent"]["after_sk"] = json!("b2");
        assert_eq!(judge(&t3, Some(&lines("server-not-answering", 35_400_000_000)), true)["ok"], false);
    }
}
