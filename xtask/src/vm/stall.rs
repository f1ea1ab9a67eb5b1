//! Judgement of the stall scenarios (issue 5): a mount behind the guest's
//! middlebox, its connection aborted while the router still holds the flow.
//!
//! Ground truth: how long one write blocked after the abort, the ports `ss`
//! saw before, in SYN-SENT and after, and the SYNs the router dropped. What
//! is expected follows from that truth, not from the NFS version: a
//! reconnect that tries the old port must be held back (the model works; the
//! kernel may later give up on the port and connect from a new one), one
//! from a new port must not; the tracer must report a stall exactly when the write blocked, its
//! `stall_end.duration_s` within [`TOLERANCE_S`] of the block, attributed to
//! the mount, and the same stall in its summary.
use serde_json::{Value, json};

pub const VERSIONS: &[&str] = &["3", "4.0", "4.1"];

/// Scenario names: `stall-v3`, `stall-v4.0`, `stall-v4.1`.
pub fn names() -> Vec<String> {
    VERSIONS.iter().map(|v| format!("stall-v{v}")).collect()
}

pub fn is_stall(name: &str) -> bool {
    name.starts_with("stall-")
}

/// The bound on |tracer's stall duration − measured block|.
pub const TOLERANCE_S: f64 = 2.0;
/// A write that blocks longer than this was held back: an unhindered
/// reconnect and write take well under it even under TCG.
pub const BLOCKED_S: f64 = 5.0;
/// Longest silence allowed between live `stall` records.
pub const MAX_QUIET_S: f64 = 8.0;

pub fn judge(truth: &Value, tracer: Option<&Vec<Value>>, with_tracer: bool) -> Value {
    let server = truth["server"].as_str().unwrap_or_default();
    let mount = truth["mountpoint"].as_str().unwrap_or_default();
    let st = &truth["stall"];
    let mut problems: Vec<String> = Vec::new();
    if let Some(e) = truth["error"].as_str() {
        problems.push(format!("guest: {e}"));
    }
    let block_s = st["block_s"].as_f64();
    // The client tried the old port again if ss saw it in SYN-SENT or
    // connected from it (a kernel may give up on it and move to a new one).
    let tried_old = st["before"].as_u64().is_some()
        && (st["same_port"] == json!(true)
            || st["syn_sent_ports"].as_array().is_some_and(|a| a.contains(&st["before"])));
    let blocked = block_s.is_some_and(|b| b >= BLOCKED_S);
    match block_s {
        Some(b) if tried_old && !blocked => problems.push(format!(
            "the client reconnected from the old port {} but the write blocked only {b:.1} s: the middlebox did not hold it ({} SYN(s) dropped)",
            st["before"], st["syn_drops"]
        )),
        Some(b) if !tried_old && blocked => problems.push(format!(
            "the write blocked {b:.1} s although the client never tried the old port ({} -> {})",
            st["before"], st["after"]
        )),
        _ => {}
    }

    let empty = Vec::new();
    let lines = tracer.unwrap_or(&empty);
    let to_server = |l: &Value| l["raddr"] == server && l["dport"] == 2049;
    let live: Vec<&Value> = lines.iter().filter(|l| l["type"] == "stall" && to_server(l)).collect();
    let ends: Vec<&Value> = lines.iter().filter(|l| l["type"] == "stall_end" && to_server(l)).collect();
    let summary: Vec<&Value> = lines
        .iter()
        .filter(|l| l["type"] == "summary")
        .flat_map(|l| l["stalls"].as_array().into_iter().flatten())
        .filter(|s| to_server(s))
        .collect();
    let tracer_s = ends.first().and_then(|e| e["duration_s"].as_f64());
    // Issue 12: the canary and the episode verdict it proves.
    let canaries: Vec<&Value> = lines.iter().filter(|l| l["type"] == "canary" && to_server(l)).collect();
    let verdicts: Vec<&str> = lines
        .iter()
        .filter(|l| l["type"] == "episode" && l["state"] == "ended" && to_server(l))
        .filter_map(|l| l["verdict"].as_str())
        .collect();
    if with_tracer && truth["error"].is_null() {
        if truth["tracer"]["ran"] != json!(true) {
            problems.push("the tracer did not run".into());
        } else if !lines.iter().any(|l| l["type"] == "attached") {
            problems.push("the tracer printed no `attached` record".into());
        }
        if blocked {
            judge_stall(&mut problems, st, mount, &live, &ends, &summary, block_s.unwrap_or(0.0));
            judge_proof(&mut problems, st, &canaries, &verdicts);
        } else if verdicts.contains(&"reused-flow-dropped") {
            problems.push(format!("the write did not block, yet an episode's verdict is reused-flow-dropped ({verdicts:?})"));
        } else if !live.is_empty() || !ends.is_empty() || !summary.is_empty() {
            problems.push(format!(
                "the write did not block ({:.1} s) but the tracer reported a stall ({} live, {} ended, {} in the summary)",
                block_s.unwrap_or(0.0),
                live.len(),
                ends.len(),
                summary.len()
            ));
        }
    }
    // Issue 16: the recording replays to what watch said live.
    if with_tracer && truth["error"].is_null() && truth["tracer"]["ran"] == json!(true) {
        problems.extend(super::replay::problems(truth, lines));
    }
    json!({
        "kind": "stall",
        "scenario": truth["scenario"],
        "vers": truth["vers"],
        "options": truth["options"],
        "mount_options": truth["mount_options"],
        "truth_ports": truth["ports"],
        "tracked_timeout_s": truth["tracked_timeout_s"],
        "tried_old_port": tried_old,
        "syn_sent_ports": st["syn_sent_ports"],
        "block_s": block_s,
        "syn_drops": st["syn_drops"],
        "tracer_stall_s": tracer_s,
        "tracer_retransmits": ends.first().map(|e| e["retransmits"].clone()),
        "tracer_live_records": live.len(),
        "tracer_exit": truth["tracer"]["exit"],
        "canary": canaries.first().map(|c| json!({"sport": c["sport"], "outcome": c["outcome"], "rtt_ms": c["rtt_ms"]})),
        "episode_verdicts": verdicts,
        "replay_verdicts": super::replay::verdicts(truth),
        "agree": if with_tracer { json!(problems.is_empty()) } else { Value::Null },
        "ok": problems.is_empty(),
        "problems": problems,
    })
}

/// The write blocked: one stall, reported live and at its end, as long as
/// the block, from the old port, attributed to the mount, in the summary.
fn judge_stall(problems: &mut Vec<String>, st: &Value, mount: &str, live: &[&Value], ends: &[&Value], summary: &[&Value], block_s: f64) {
    let (w0, w1) = (st["write_start_ns"].as_u64().unwrap_or(0), st["write_end_ns"].as_u64().unwrap_or(u64::MAX));
    if ends.len() != 1 {
        problems.push(format!("the write blocked {block_s:.1} s; the tracer printed {} stall_end record(s), want 1", ends.len()));
    }
    if live.is_empty() {
        problems.push("no live `stall` record while the write blocked".into());
    } else if !live.iter().any(|l| l["mono_ns"].as_u64().is_some_and(|t| t > w0 && t < w1)) {
        problems.push("no live `stall` record fell inside the write's block".into());
    }
    // Reported again at least every 5 s while nothing else happens (SYN
    // retransmits back off to 16 s apart); the 1 s check and TCG add slack.
    let mut times: Vec<u64> = live.iter().filter_map(|l| l["mono_ns"].as_u64()).collect();
    times.sort_unstable();
    if let Some(gap) = times.windows(2).map(|w| w[1] - w[0]).max().filter(|g| *g as f64 / 1e9 > MAX_QUIET_S) {
        problems.push(format!("live stall records {:.1} s apart (want at most {MAX_QUIET_S} s)", gap as f64 / 1e9));
    }
    let Some(end) = ends.first() else { return };
    let d = end["duration_s"].as_f64().unwrap_or(-1.0);
    if (d - block_s).abs() > TOLERANCE_S {
        problems.push(format!("tracer's stall lasted {d:.2} s, the write blocked {block_s:.2} s (tolerance {TOLERANCE_S} s)"));
    }
    if end["sport"] != st["before"] {
        problems.push(format!("the stall is from port {}, ss saw the old flow on port {}", end["sport"], st["before"]));
    }
    if end["end_sport"] != st["after"] {
        problems.push(format!("the stall ended with port {}, ss saw {} connected", end["end_sport"], st["after"]));
    }
    // "port P reused from a flow closed T s ago": the abort must be dated.
    if end["prev_end"].is_null() {
        problems.push("stall_end does not say when the reused flow ended (prev_end null)".into());
    }
    if !end["mounts"].as_array().is_some_and(|m| m.iter().any(|m| m == mount)) {
        problems.push(format!("stall_end names mounts {}, not {mount}", end["mounts"]));
    }
    match summary {
        [s] if s["duration_s"] == end["duration_s"] && s["ongoing"] == json!(false) => {}
        [s] => problems.push(format!("the summary's stall ({} s, ongoing {}) differs from stall_end ({d} s)", s["duration_s"], s["ongoing"])),
        _ => problems.push(format!("the summary lists {} stalls toward the server, want 1", summary.len())),
    }
}

/// The middlebox holds only the old flow: a canary from a fresh port gets
/// through while the reused flow stalls, and that proof is the episode's
/// verdict (`reused-flow-dropped`).
fn judge_proof(problems: &mut Vec<String>, st: &Value, canaries: &[&Value], verdicts: &[&str]) {
    match canaries {
        [] => problems.push("no canary connect while the reused flow stalled".into()),
        [c, ..] if c["outcome"] != "connected" => problems.push(format!("the canary did not connect ({}): the router passes new flows", c["outcome"])),
        [c, ..] if c["sport"] == st["before"] => problems.push(format!("the canary connected from the stalled port {}", c["sport"])),
        _ => {}
    }
    if !verdicts.contains(&"reused-flow-dropped") {
        problems.push(format!("no ended episode with verdict reused-flow-dropped (verdicts: {verdicts:?})"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The judge, with the guest's replay saying what the lines say (a
    /// replay that differs is replay.rs's test).
    fn judge(truth: &Value, tracer: Option<&Vec<Value>>, with_tracer: bool) -> Value {
        let mut t = truth.clone();
        if let Some(l) = tracer {
            crate::vm::replay::faithful(&mut t, l);
        }
        super::judge(&t, tracer, with_tracer)
    }

    fn truth(same: bool, block: f64) -> Value {
        let (b, a) = if same { (871, 871) } else { (871, 40001) };
        json!({"scenario": "stall-v4.0", "vers": "4.0", "options": "default", "server": "10.98.0.1",
               "mountpoint": "/mnt/stall-v4.0", "ports": [b, a], "tracer": {"ran": true}, "error": null,
               "stall": {"before": b, "after": a, "same_port": same, "block_s": block, "syn_drops": 9,
                         "syn_sent_ports": if same { json!([b]) } else { json!([]) },
                         "write_start_ns": 1_000_000_000u64, "write_end_ns": 1_000_000_000u64 + (block * 1e9) as u64}})
    }

    fn rec(kind: &str, t: u64, extra: Value) -> Value {
        let mut v = json!({"type": kind, "raddr": "10.98.0.1", "dport": 2049, "sport": 871, "mono_ns": t});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    }

    fn stalled(duration: f64) -> Vec<Value> {
        vec![
            json!({"type": "attached"}),
            rec("stall", 2_000_000_000, json!({"duration_s": 1.0})),
            rec("stall_end", 30_000_000_000, json!({"duration_s": duration, "end_sport": 871, "retransmits": 8,
                                                    "mounts": ["/mnt/stall-v4.0"], "prev_end": "2026-11-23T22:06:51.9Z"})),
            json!({"type": "summary", "stalls": [{"raddr": "10.98.0.1", "dport": 2049, "duration_s": duration, "ongoing": false}]}),
            rec("canary", 3_000_000_000, json!({"sport": 40123, "outcome": "connected", "rtt_ms": 0.4})),
            rec("episode", 30_000_000_001, json!({"state": "ended", "verdict": "reused-flow-dropped"})),
        ]
    }

    #[test]
    fn a_stall_is_proven_by_a_canary_and_its_episode_verdict() {
        let t = truth(true, 28.0);
        let without = |kind: &str| stalled(27.2).into_iter().filter(|l| l["type"] != kind).collect::<Vec<_>>();
        assert!(judge(&t, Some(&without("canary")), true)["problems"].to_string().contains("no canary"));
        assert!(judge(&t, Some(&without("episode")), true)["problems"].to_string().contains("reused-flow-dropped"));
        let mut l = stalled(27.2);
        l[4]["outcome"] = json!("timed_out");
        assert!(judge(&t, Some(&l), true)["problems"].to_string().contains("did not connect"));
        let mut l = stalled(27.2);
        l[5]["verdict"] = json!("server-or-path-down");
        assert_eq!(judge(&t, Some(&l), true)["ok"], json!(false));
        // No block: a reuse verdict is wrong.
        let l = vec![json!({"type": "attached"}), rec("episode", 1, json!({"state": "ended", "verdict": "reused-flow-dropped"}))];
        assert_eq!(judge(&truth(false, 0.4), Some(&l), true)["ok"], json!(false));
    }

    #[test]
    fn a_matching_stall_agrees() {
        let v = judge(&truth(true, 28.0), Some(&stalled(27.2)), true);
        assert_eq!(v["ok"], json!(true), "{v}");
        assert_eq!(v["tracer_stall_s"], json!(27.2));
    }

    #[test]
    fn a_stall_off_by_more_than_the_tolerance_fails() {
        let v = judge(&truth(true, 28.0), Some(&stalled(25.5)), true);
        assert_eq!(v["ok"], json!(false));
        assert!(v["problems"].to_string().contains("tolerance"), "{v}");
    }

    #[test]
    fn a_missed_or_invented_stall_fails() {
        let v = judge(&truth(true, 28.0), Some(&vec![json!({"type": "attached"})]), true);
        assert_eq!(v["ok"], json!(false));
        let v = judge(&truth(false, 0.4), Some(&stalled(27.0)), true);
        assert_eq!(v["ok"], json!(false));
        let v = judge(&truth(false, 0.4), Some(&vec![json!({"type": "attached"})]), true);
        assert_eq!(v["ok"], json!(true), "{v}");
    }

    #[test]
    fn a_kernel_that_gives_up_the_old_port_still_stalled() {
        // 6.12, vers=4.0: SYNs from 804 dropped for 10 s, then a connect from 990.
        let mut t = truth(false, 10.2);
        t["stall"]["syn_sent_ports"] = json!([871]);
        let mut lines = stalled(10.19);
        lines[2]["end_sport"] = json!(40001);
        let v = judge(&t, Some(&lines), true);
        assert_eq!(v["ok"], json!(true), "{v}");
        assert_eq!(v["tried_old_port"], json!(true));
    }

    #[test]
    fn the_model_must_hold_a_reused_port() {
        // Same port, no block: the lab failed to reproduce, whatever the tracer says.
        let v = judge(&truth(true, 0.5), Some(&vec![json!({"type": "attached"})]), true);
        assert_eq!(v["ok"], json!(false));
        assert!(v["problems"].to_string().contains("did not hold"), "{v}");
    }

    #[test]
    fn a_stall_that_goes_quiet_for_long_fails() {
        let mut lines = stalled(28.0);
        lines.insert(2, rec("stall", 20_000_000_000, json!({"duration_s": 19.0})));
        let v = judge(&truth(true, 28.0), Some(&lines), true);
        assert!(v["problems"].to_string().contains("apart"), "{v}");
    }

    #[test]
    fn the_stall_must_name_the_mount() {
        let mut lines = stalled(27.2);
        lines[2]["mounts"] = json!([]);
        let v = judge(&truth(true, 28.0), Some(&lines), true);
        assert_eq!(v["ok"], json!(false));
    }
}
