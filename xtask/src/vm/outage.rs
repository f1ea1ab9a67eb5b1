//! Judgement of the outage scenarios (issue 12): the router behind the
//! guest's middlebox drops every packet to and from the server for 20 s
//! while the mount's connection is aborted and one write waits.
//!
//! Ground truth: the outage's start and end on the lab clock, the packets
//! its nft rule dropped, the write's block and the ports `ss` saw. What is
//! expected: the write blocks past the outage's end; the tracer's canary
//! toward the server during the outage does not connect; the episode's
//! verdict is `server-or-path-down`, never `reused-flow-dropped`, whether
//! the client reused its port (v3) or not (v4.1); the episode ends within
//! [`TOLERANCE_S`] of the write completing.
use serde_json::{Value, json};

use super::stall::{BLOCKED_S, TOLERANCE_S};

pub const VERSIONS: &[&str] = &["3", "4.1"];

/// Scenario names: `outage-v3`, `outage-v4.1`.
pub fn names() -> Vec<String> {
    VERSIONS.iter().map(|v| format!("outage-v{v}")).collect()
}

pub fn is_outage(name: &str) -> bool {
    name.starts_with("outage-")
}

pub fn judge(truth: &Value, tracer: Option<&Vec<Value>>, with_tracer: bool) -> Value {
    let server = truth["server"].as_str().unwrap_or_default();
    let o = &truth["outage"];
    let mut problems: Vec<String> = Vec::new();
    if let Some(e) = truth["error"].as_str() {
        problems.push(format!("guest: {e}"));
    }
    let (begin, end) = (o["begin_ns"].as_u64(), o["end_ns"].as_u64());
    // The write may complete once the rule's removal began (the rule goes
    // somewhere inside that command).
    let end_begin = o["end_begin_ns"].as_u64().or(end);
    let (w1, block_s) = (o["write_end_ns"].as_u64(), o["block_s"].as_f64());
    let ns_s = |ns: u64| ns as f64 / 1e9;
    // The truth itself: the rule dropped packets, and the write could not
    // complete before the rule went.
    if truth["error"].is_null() {
        if o["drops"].as_u64().unwrap_or(0) == 0 {
            problems.push("the outage rule dropped no packets: the lab made no outage".into());
        }
        match (end_begin, w1, block_s) {
            (Some(e), Some(w), _) if w < e => {
                problems.push(format!("the write completed {:.1} s before the outage ended: the outage did not hold the mount", ns_s(e - w)))
            }
            (_, _, Some(b)) if b < BLOCKED_S => problems.push(format!("the write blocked only {b:.1} s during a 20 s outage")),
            (Some(_), Some(_), Some(_)) => {}
            _ => problems.push("the truth has no outage times or write block".into()),
        }
    }

    let empty = Vec::new();
    let lines = tracer.unwrap_or(&empty);
    let to_server = |l: &Value| l["raddr"] == server && l["dport"] == 2049;
    let during = |l: &Value| l["mono_ns"].as_u64().is_some_and(|t| begin.is_some_and(|b| t > b) && end.is_some_and(|e| t <= e));
    let canaries: Vec<&Value> = lines.iter().filter(|l| l["type"] == "canary" && to_server(l) && during(l)).collect();
    let episodes: Vec<&Value> = lines.iter().filter(|l| l["type"] == "episode" && to_server(l)).collect();
    let ended: Vec<&Value> = episodes.iter().copied().filter(|l| l["state"] == "ended").collect();
    let verdicts: Vec<&str> = ended.iter().filter_map(|l| l["verdict"].as_str()).collect();
    // When the ended episode says it recovered (the phase's time, else the record's).
    let end_of = |l: &Value| l["phases"]["recovered"]["mono_ns"].as_u64().or(l["mono_ns"].as_u64());
    let down = ended.iter().find(|l| l["verdict"] == "server-or-path-down");
    let end_vs_write = down.and_then(|l| Some((ns_s(end_of(l)?) - ns_s(w1?) + 0.0005) * 1000.0)).map(|ms| ms.trunc() / 1000.0);
    if with_tracer && truth["error"].is_null() {
        if truth["tracer"]["ran"] != json!(true) {
            problems.push("the tracer did not run".into());
        } else if !lines.iter().any(|l| l["type"] == "attached") {
            problems.push("the tracer printed no `attached` record".into());
        }
        if canaries.is_empty() {
            problems.push("no canary toward the server during the outage".into());
        }
        if let Some(c) = canaries.iter().find(|c| c["outcome"] == "connected") {
            problems.push(format!("a canary connected from port {} during the outage: everything to the server was dropped", c["sport"]));
        }
        // Never a reuse verdict, in any episode record (opened, verdict, ongoing, ended).
        if let Some(e) = episodes.iter().find(|l| l["verdict"] == "reused-flow-dropped") {
            problems.push(format!("episode {} ({}) says reused-flow-dropped during an outage", e["id"], e["state"]));
        }
        match (down, end_vs_write) {
            (None, _) => problems.push(format!("no ended episode with verdict server-or-path-down (verdicts: {verdicts:?})")),
            (Some(_), Some(d)) if d.abs() > TOLERANCE_S => {
                problems.push(format!("the episode ended {d:+.2} s from the write completing (tolerance {TOLERANCE_S} s)"))
            }
            (Some(_), None) => problems.push("the server-or-path-down episode has no end time".into()),
            _ => {}
        }
    }
    // Issue 16: the recording replays to what watch said live.
    if with_tracer && truth["error"].is_null() && truth["tracer"]["ran"] == json!(true) {
        problems.extend(super::replay::problems(truth, lines));
    }
    json!({
        "kind": "outage",
        "scenario": truth["scenario"],
        "vers": truth["vers"],
        "options": truth["options"],
        "mount_options": truth["mount_options"],
        "truth_ports": truth["ports"],
        "same_port": o["same_port"],
        "syn_sent_ports": o["syn_sent_ports"],
        "outage_s": begin.zip(end).map(|(b, e)| ((ns_s(e - b)) * 10.0).round() / 10.0),
        "outage_drops": o["drops"],
        "block_s": block_s,
        "canaries": canaries.iter().map(|c| json!({"sport": c["sport"], "outcome": c["outcome"]})).collect::<Vec<_>>(),
        "episode_verdicts": verdicts,
        "episode_end_minus_write_s": end_vs_write,
        "tracer_exit": truth["tracer"]["exit"],
        "replay_verdicts": super::replay::verdicts(truth),
        "agree": if with_tracer { json!(problems.is_empty()) } else { Value::Null },
        "ok": problems.is_empty(),
        "problems": problems,
    })
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

    const S: u64 = 1_000_000_000;

    fn truth(same: bool, write_end_s: u64) -> Value {
        let (b, a) = if same { (871, 871) } else { (871, 40001) };
        json!({"scenario": "outage-v3", "vers": "3", "options": "default", "server": "10.98.0.1",
               "mountpoint": "/mnt/outage-v3", "ports": [b, a], "tracer": {"ran": true}, "error": null,
               "outage": {"before": b, "after": a, "same_port": same, "begin_ns": 10 * S, "end_ns": 30 * S,
                          "drops": 14, "write_start_ns": 10 * S + 1, "write_end_ns": write_end_s * S,
                          "block_s": (write_end_s - 10) as f64, "syn_sent_ports": [b]}})
    }

    fn rec(kind: &str, t_s: u64, extra: Value) -> Value {
        let mut v = json!({"type": kind, "raddr": "10.98.0.1", "dport": 2049, "sport": 871, "mono_ns": t_s * S});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    }

    /// What a right tracer prints: a failed canary inside the outage, an
    /// episode that ends 0.4 s after the write with the down verdict.
    fn right() -> Vec<Value> {
        vec![
            json!({"type": "attached"}),
            rec("canary", 16, json!({"sport": 40123, "outcome": "timed_out"})),
            rec("episode", 16, json!({"id": 1, "state": "verdict", "verdict": "server-or-path-down"})),
            rec("episode", 33, json!({"id": 1, "state": "ended", "verdict": "server-or-path-down",
                                      "phases": {"recovered": {"mono_ns": 32 * S + 400_000_000}}})),
        ]
    }

    #[test]
    fn a_right_tracer_agrees() {
        let v = judge(&truth(true, 32), Some(&right()), true);
        assert_eq!(v["ok"], json!(true), "{v}");
        assert_eq!(v["episode_end_minus_write_s"], json!(0.4));
        assert_eq!(v["outage_s"], json!(20.0));
        let v = judge(&truth(false, 32), Some(&right()), true);
        assert_eq!(v["ok"], json!(true), "{v}");
    }

    #[test]
    fn the_canary_must_fail_inside_the_outage() {
        let t = truth(true, 32);
        let mut l = right();
        l[1]["outcome"] = json!("connected");
        assert!(judge(&t, Some(&l), true)["problems"].to_string().contains("connected from port"));
        // A canary only after the rule went is not one during the outage.
        let mut l = right();
        l[1]["mono_ns"] = json!(31 * S);
        assert!(judge(&t, Some(&l), true)["problems"].to_string().contains("no canary"));
        let l: Vec<Value> = right().into_iter().filter(|l| l["type"] != "canary").collect();
        assert!(judge(&t, Some(&l), true)["problems"].to_string().contains("no canary"));
    }

    #[test]
    fn never_a_reuse_verdict() {
        let t = truth(true, 32);
        let mut l = right();
        l[3]["verdict"] = json!("reused-flow-dropped");
        let p = judge(&t, Some(&l), true)["problems"].to_string();
        assert!(p.contains("says reused-flow-dropped") && p.contains("no ended episode"), "{p}");
        // Even one that only passed through it on the way.
        let mut l = right();
        l[2]["verdict"] = json!("reused-flow-dropped");
        assert!(judge(&t, Some(&l), true)["problems"].to_string().contains("says reused-flow-dropped"));
        let mut l = right();
        l[3]["verdict"] = json!("unknown");
        assert!(judge(&t, Some(&l), true)["problems"].to_string().contains("no ended episode"));
    }

    #[test]
    fn the_episode_ends_with_the_write() {
        let t = truth(true, 32);
        let mut l = right();
        l[3]["phases"]["recovered"]["mono_ns"] = json!(35 * S);
        assert!(judge(&t, Some(&l), true)["problems"].to_string().contains("+3.00 s"));
        let mut l = right();
        l[3] = rec("episode", 29, json!({"id": 1, "state": "ended", "verdict": "server-or-path-down"}));
        assert!(judge(&t, Some(&l), true)["problems"].to_string().contains("-3.00 s"));
    }

    #[test]
    fn the_truth_must_show_an_outage() {
        let mut t = truth(true, 32);
        t["outage"]["drops"] = json!(0);
        assert!(judge(&t, Some(&right()), true)["problems"].to_string().contains("dropped no packets"));
        // A write that returned while everything was dropped: the lab is wrong.
        let t = truth(true, 25);
        assert!(judge(&t, Some(&right()), true)["problems"].to_string().contains("before the outage ended"));
        // CI on 6.12: the write completed while the rule was being removed
        // (after the delete began, before it returned): the outage held.
        let mut t = truth(true, 30);
        t["outage"]["end_begin_ns"] = json!(30 * S - 5_000_000);
        t["outage"]["end_ns"] = json!(30 * S + 5_000_000);
        t["outage"]["block_s"] = json!(19.9);
        assert!(!judge(&t, Some(&right()), true)["problems"].to_string().contains("before the outage ended"));
        // Without the tracer only the truth is judged.
        assert_eq!(judge(&truth(true, 32), None, false)["ok"], json!(true));
    }
}
