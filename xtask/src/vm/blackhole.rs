//! Judgement of the black-hole scenarios (issue 12): the router behind the
//! guest's middlebox silently drops the mount's established flow (that one
//! 4-tuple, both directions, no RST) while a write waits; the mount has
//! `timeo=20,retrans=2`, which does not shorten the transport's TCP user
//! timeout (180 s for v3, the lease — 10 s here — for v4). So the rule
//! lasts 194 s for v3, past that timeout, and 20 s for v4.1
//! (`tests/src/lab/stall.rs`, `blackhole_for`).
//!
//! The v3 story, on 6.12 (one run, times from the rule going in): the
//! write's data is retransmitted from +0.22 s and the tracer opens the
//! episode with phase (a) `unanswered`; ten retransmits later (the last at
//! +108 s, RTO backoff) the user timeout closes port 810 at +181.9 s, phase
//! (b) `closed` (user timeout); the transport reconnects from the same port
//! at once and the rule drops its SYNs: phase (c) `reconnect`, stalled and
//! reused, while the tracer's canary from a fresh port connects (+183.0 s):
//! verdict `reused-flow-dropped`. The rule goes at +194.7 s; the next SYN
//! (+201.4 s) meets the server's stale socket (challenge ACK, the client
//! resets it), the one after connects at +217.5 s: phase (d) `recovered`,
//! 0.32 s before the write returned (blocked 217.8 s). 5.10, 6.1 and 7.2
//! do the same (31 s in SYN-SENT on the first two, their backoff differs).
//! v4.1 gives its flow up at the lease (+10.4 s) and reconnects from a new
//! port at once.
//!
//! Ground truth: the rule's time on the lab clock and its counters, the
//! write's block, the ports and sockets `ss` saw (before, in SYN-SENT —
//! when each port was first and last seen there —, after) and when `ss`
//! stopped listing the old flow ESTABLISHED. What is expected follows
//! from that truth, not from the NFS version:
//!
//! - the client kept the flow (the same socket before and after, never
//!   gone: 6.12 v3 in a 20 s hole): verdict `path-blackhole`, no phase (b)
//!   or (c);
//! - it gave the flow up and reconnected from the black-holed port (v3 in
//!   its 194 s hole): blocked until the rule goes, verdict
//!   `reused-flow-dropped`; phase (c) stalled and reused, from that port,
//!   with a canary that connected, starting within [`TOLERANCE_S`] of `ss`
//!   first seeing the port in SYN-SENT; the evidence tells the unanswered
//!   phase, the stalled reconnect from the reused port and the canary;
//! - it reconnected from a new port (6.12 v4.1): through at once, verdict
//!   `path-blackhole`, never a reuse verdict in any record; phase (c) names
//!   the new port.
//!
//! In every case the episode of the black-holed flow (the episode whose
//! records name its source port; its ended record may carry the new one)
//! has phase (a) `unanswered` with data retransmits, starting within
//! [`TOLERANCE_S`] of the rule going in, evidence telling the unanswered
//! phase and its data retransmits, phase (b) `closed` exactly when the flow
//! went (within [`TOLERANCE_S`] of the moments `ss` bounds that to: its last
//! listing of the flow ESTABLISHED and its first without it), and phase (d)
//! `recovered` within [`TOLERANCE_S`] of the write completing, from the
//! port `ss` saw after (the write's end is what the truth measures in every
//! case: the RPC goes out again as soon as the flow or its successor
//! carries data); the tracer printed a `data_retransmit` record for the
//! flow during the black hole; every canary during it connected (the rule
//! names only the old 4-tuple).
use serde_json::{Value, json};

use super::stall::TOLERANCE_S;

pub const VERSIONS: &[&str] = &["3", "4.1"];

/// A write the black hole caught blocks at least this long (the user
/// timeout is 6 s); an uncaught one returns in milliseconds.
const CAUGHT_S: f64 = 1.0;

/// Scenario names: `blackhole-v3`, `blackhole-v4.1`.
pub fn names() -> Vec<String> {
    VERSIONS.iter().map(|v| format!("blackhole-v{v}")).collect()
}

pub fn is_blackhole(name: &str) -> bool {
    name.starts_with("blackhole-")
}

pub fn judge(truth: &Value, tracer: Option<&Vec<Value>>, with_tracer: bool) -> Value {
    let server = truth["server"].as_str().unwrap_or_default();
    let b = &truth["blackhole"];
    let mut problems: Vec<String> = Vec::new();
    if let Some(e) = truth["error"].as_str() {
        problems.push(format!("guest: {e}"));
    }
    let (begin, end) = (b["begin_ns"].as_u64(), b["end_ns"].as_u64());
    // The rule stops dropping inside its delete: from its start on, a
    // write may complete.
    let end_begin = b["end_begin_ns"].as_u64().or(end);
    let (w1, block_s) = (b["write_end_ns"].as_u64(), b["block_s"].as_f64());
    let gone = b["old_flow"]["gone_ns"].as_u64();
    // When ss first and last saw the old port in SYN-SENT (a reconnect from it).
    let old_port_syn = b["syn_sent_seen"].as_array().and_then(|a| a.iter().find(|s| s["port"] == b["before"]));
    let (syn_first, syn_last) = (old_port_syn.and_then(|s| s["first_ns"].as_u64()), old_port_syn.and_then(|s| s["last_ns"].as_u64()));
    let ns_s = |ns: u64| ns as f64 / 1e9;
    // Seconds from `from` to `to`, to the millisecond.
    let diff = |to: Option<u64>, from: Option<u64>| to.zip(from).map(|(t, f)| ((ns_s(t) - ns_s(f)) * 1000.0).round() / 1000.0);
    // The client gave the flow up if ss stopped listing it or connected
    // another socket; it tried the black-holed port again if ss saw it in
    // SYN-SENT or connected from it.
    let reconnected = gone.is_some() || (b["after_sk"].is_string() && b["after_sk"] != b["before_sk"]);
    let reused = reconnected
        && b["before"].as_u64().is_some()
        && (b["same_port"] == json!(true) || b["syn_sent_ports"].as_array().is_some_and(|a| a.contains(&b["before"])));
    let case = match (reconnected, reused) {
        (false, _) => "kept the flow",
        (true, true) => "reconnected from the same port",
        (true, false) => "reconnected from a new port",
    };
    let want = if reused { "reused-flow-dropped" } else { "path-blackhole" };
    // Only a new port may get through while the rule is in.
    let new_port = reconnected && !reused;
    // The truth itself: the rule dropped the flow's packets and caught the
    // write, and the write's end fits what the client did.
    if truth["error"].is_null() {
        if b["drops_to_server"].as_u64().unwrap_or(0) == 0 {
            problems.push("the black-hole rule dropped nothing from the client: the lab made no black hole".into());
        }
        match (end_begin, w1, block_s) {
            (_, _, Some(s)) if s < CAUGHT_S => problems.push(format!("the write blocked only {s:.2} s: the black hole did not catch it")),
            (Some(e), Some(w), _) if !new_port && w < e => problems.push(format!(
                "the client {case} ({} -> {}) yet the write completed {:.1} s before the rule went",
                b["before"],
                b["after"],
                ns_s(e - w)
            )),
            (Some(e), Some(w), _) if new_port && w >= e => problems.push(format!(
                "the client reconnected from a new port ({} -> {}) yet the write blocked until the rule went",
                b["before"], b["after"]
            )),
            (Some(_), Some(_), Some(_)) => {}
            _ => problems.push("the truth has no black-hole times or write block".into()),
        }
        // A reused port the rule held sat in SYN-SENT for seconds: ss saw
        // it there (phase (c) is timed against that).
        if reused && syn_first.is_none() {
            problems.push(format!(
                "the client reconnected from the black-holed port {}, yet ss never saw it in SYN-SENT: the rule held no reconnect",
                b["before"]
            ));
        }
        // Phase (b) is timed against the moment ss lost the flow: a
        // reconnect needs it.
        if reconnected && gone.is_none() {
            problems.push(format!(
                "a new socket (sk:{}) connected, yet ss never saw the old flow (sk:{}) go",
                b["after_sk"].as_str().unwrap_or("?"),
                b["before_sk"].as_str().unwrap_or("?")
            ));
        }
    }

    let empty = Vec::new();
    let lines = tracer.unwrap_or(&empty);
    let to_server = |l: &Value| l["raddr"] == server && l["dport"] == 2049;
    // The black-holed flow: its source port, and its namespace where both say.
    let in_ns = |l: &Value| to_server(l) && (l["netns"].is_null() || b["netns"].is_null() || l["netns"] == b["netns"]);
    let of_flow = |l: &Value| in_ns(l) && l["sport"] == b["before"];
    let during = |l: &Value, slack_s: f64| {
        l["mono_ns"].as_u64().is_some_and(|t| {
            begin.is_some_and(|b| t > b) && end.is_some_and(|e| ns_s(t) <= ns_s(e) + slack_s)
        })
    };
    let retransmits: Vec<&Value> = lines.iter().filter(|l| l["type"] == "data_retransmit" && of_flow(l) && during(l, TOLERANCE_S)).collect();
    let max_retransmits = retransmits.iter().filter_map(|l| l["retransmits"].as_u64()).max();
    let canaries: Vec<&Value> = lines.iter().filter(|l| l["type"] == "canary" && to_server(l) && during(l, 0.0)).collect();
    let episodes: Vec<&Value> = lines.iter().filter(|l| l["type"] == "episode" && to_server(l)).collect();
    // The flow's episode: any of its records names the port (or its close does).
    let ids: Vec<&Value> =
        episodes.iter().filter(|l| of_flow(l) || (in_ns(l) && l["phases"]["closed"]["sport"] == b["before"])).map(|l| &l["id"]).collect();
    let ended = episodes.iter().copied().rfind(|l| l["state"] == "ended" && ids.contains(&&l["id"]));
    let verdicts: Vec<&str> = episodes.iter().filter(|l| l["state"] == "ended").filter_map(|l| l["verdict"].as_str()).collect();
    let ph = ended.map(|e| &e["phases"]);
    let unanswered = ph.map(|p| &p["unanswered"]).filter(|u| !u.is_null());
    let closed = ph.map(|p| &p["closed"]).filter(|c| !c.is_null());
    let reconnect = ph.map(|p| &p["reconnect"]).filter(|r| !r.is_null());
    let recovered = ph.map(|p| &p["recovered"]).filter(|r| !r.is_null());
    let unanswered_vs_rule = diff(unanswered.and_then(|u| u["mono_ns"].as_u64()), begin);
    let reconnect_vs_syn_sent = diff(reconnect.and_then(|r| r["mono_ns"].as_u64()), syn_first);
    let closed_vs_gone = diff(closed.and_then(|c| c["mono_ns"].as_u64()), gone);
    // ss bounds the close: after its last listing of the flow ESTABLISHED,
    // before its first without it (the polls are 250 ms apart plus two ss
    // runs, over a second under load). How far outside that window phase
    // (b) came (0 inside).
    let last_estab = b["old_flow"]["last_estab_ns"].as_u64();
    let closed_outside = closed.and_then(|c| c["mono_ns"].as_u64()).zip(gone).map(|(c, g)| match last_estab {
        Some(l) if c < l => diff(Some(c), Some(l)).unwrap_or_default(),
        _ if c > g => diff(Some(c), Some(g)).unwrap_or_default(),
        _ => 0.0,
    });
    let recovered_vs_write = diff(recovered.and_then(|r| r["mono_ns"].as_u64()), w1);
    if with_tracer && truth["error"].is_null() {
        if truth["tracer"]["ran"] != json!(true) {
            problems.push("the tracer did not run".into());
        } else if !lines.iter().any(|l| l["type"] == "attached") {
            problems.push("the tracer printed no `attached` record".into());
        }
        if max_retransmits.unwrap_or(0) == 0 {
            problems.push(format!("no data_retransmit record (retransmits ≥ 1) from port {} during the black hole", b["before"]));
        }
        if let Some(c) = canaries.iter().find(|c| c["outcome"] != "connected") {
            let outcome = c["outcome"].as_str().unwrap_or("?");
            problems.push(format!("a canary from port {} did not connect ({outcome}): the rule drops the old flow only", c["sport"]));
        }
        if reused && !canaries.iter().any(|c| c["outcome"] == "connected") {
            problems.push("no canary connected while the reused port was held".into());
        }
        if !reused && let Some(e) = episodes.iter().find(|l| l["verdict"] == "reused-flow-dropped") {
            let state = e["state"].as_str().unwrap_or("?");
            problems.push(format!("episode {} ({state}) says reused-flow-dropped though the client reconnected from a new port", e["id"]));
        }
        judge_episode(
            &mut problems,
            b,
            ended,
            want,
            (reconnected, reused),
            [unanswered, closed, reconnect, recovered],
            [unanswered_vs_rule, closed_outside, reconnect_vs_syn_sent, recovered_vs_write],
        );
    }
    // Issue 16: the recording replays to what watch said live.
    if with_tracer && truth["error"].is_null() && truth["tracer"]["ran"] == json!(true) {
        problems.extend(super::replay::problems(truth, lines));
    }
    json!({
        "kind": "blackhole",
        "scenario": truth["scenario"],
        "vers": truth["vers"],
        "options": truth["options"],
        "mount_options": truth["mount_options"],
        "truth_ports": truth["ports"],
        "same_port": b["same_port"],
        "client": case,
        "reconnected": reconnected,
        "reused": reused,
        "syn_sent_ports": b["syn_sent_ports"],
        "blackhole_s": diff(end, begin).map(|s| (s * 10.0).round() / 10.0),
        "drops_to_server": b["drops_to_server"],
        "drops_from_server": b["drops_from_server"],
        "old_flow_gone_s": diff(gone, begin),
        "old_port_syn_sent_s": diff(syn_first, begin),
        "old_port_syn_sent_for_s": diff(syn_last, syn_first),
        "reconnect_stall_s": diff(w1, syn_first),
        "block_s": block_s,
        "write_end_minus_rule_end_s": diff(w1, end),
        "tracer_data_retransmits": max_retransmits,
        "canaries": canaries.iter().map(|c| json!({"sport": c["sport"], "outcome": c["outcome"]})).collect::<Vec<_>>(),
        "episode_verdict": ended.map(|e| e["verdict"].clone()),
        "episode_verdicts": verdicts,
        "expected_verdict": want,
        "closed_how": closed.map(|c| c["how"].clone()),
        "unanswered_minus_rule_s": unanswered_vs_rule,
        "closed_minus_gone_s": closed_vs_gone,
        "reconnect_minus_syn_sent_s": reconnect_vs_syn_sent,
        "reconnect_ports": reconnect.map(|r| r["ports"].clone()),
        "reconnect_canary": reconnect.map(|r| r["canary"]["outcome"].clone()),
        "recovered_minus_write_s": recovered_vs_write,
        "tracer_exit": truth["tracer"]["exit"],
        "replay_verdicts": super::replay::verdicts(truth),
        "agree": if with_tracer { json!(problems.is_empty()) } else { Value::Null },
        "ok": problems.is_empty(),
        "problems": problems,
    })
}

/// The ended episode of the black-holed flow: the verdict the truth calls
/// for, its evidence naming the data retransmits (and, for a reused port,
/// the stalled reconnect and the canary), its phases (a) and (d) present,
/// (b) and (c) exactly when the client gave the flow up and reconnected —
/// (c) from the black-holed port, stalled, with a canary that connected,
/// when it reused it —, each timed within [`TOLERANCE_S`] of the truth's
/// moments: the rule going in, `ss` losing the flow (between its last
/// listing and its first without), `ss` first seeing the old port in
/// SYN-SENT, the write completing.
fn judge_episode(
    problems: &mut Vec<String>,
    b: &Value,
    ended: Option<&Value>,
    want: &str,
    (reconnected, reused): (bool, bool),
    phases: [Option<&Value>; 4],
    offsets: [Option<f64>; 4],
) {
    let Some(e) = ended else {
        problems.push(format!("no ended episode for the black-holed flow from port {} (want verdict {want})", b["before"]));
        return;
    };
    if e["verdict"] != want {
        problems.push(format!("the episode of port {} ended with verdict {}, want {want}", b["before"], e["verdict"]));
    }
    let [unanswered, closed, reconnect, recovered] = phases;
    let [unanswered_vs_rule, closed_outside, reconnect_vs_syn_sent, recovered_vs_write] = offsets;
    match unanswered {
        None => problems.push("the episode has no phase (a) `unanswered`: the data retransmits were not observed".into()),
        Some(u) if u["data_retransmits"].as_u64().unwrap_or(0) == 0 => {
            problems.push(format!("phase (a) `unanswered` counts {} data retransmits, want ≥ 1", u["data_retransmits"]))
        }
        Some(_) => {}
    }
    let evidence = e["evidence"].as_str().unwrap_or_default().to_lowercase();
    if !(evidence.contains("unanswered") && evidence.contains("data retransmit")) {
        problems.push(format!("the episode's evidence does not tell the unanswered phase (its data retransmits): {}", e["evidence"]));
    }
    if reused {
        let port = b["before"].to_string();
        if !(evidence.contains(&format!("reused port {port}")) && evidence.contains("canary")) {
            problems.push(format!("the episode's evidence does not name the stalled reconnect from reused port {port} and the canary: {}", e["evidence"]));
        }
    }
    match closed {
        None if reconnected => problems.push("the episode has no phase (b) `closed`, yet ss saw the flow go".into()),
        Some(c) if !reconnected => problems.push(format!(
            "the episode says the flow closed ({}), yet ss listed the same socket (sk:{}) ESTABLISHED before and after",
            c["how"].as_str().unwrap_or("?"),
            b["before_sk"].as_str().unwrap_or("?")
        )),
        Some(c) if c["sport"] != b["before"] => {
            problems.push(format!("phase (b) closed the flow from port {}, the black-holed one was {}", c["sport"], b["before"]))
        }
        _ => {}
    }
    let ports = |r: &Value, p: &Value| r["ports"].as_array().is_some_and(|a| a.contains(p));
    match reconnect {
        None if reconnected => problems.push("the episode has no phase (c) `reconnect`, yet ss saw another socket connect".into()),
        Some(r) if !reconnected => problems.push(format!(
            "the episode has a phase (c) `reconnect` (ports {}), yet ss listed the same socket ESTABLISHED before and after",
            r["ports"]
        )),
        Some(r) if reused => {
            if !ports(r, &b["before"]) || r["stalled"] != json!(true) || r["reused"] != json!(true) {
                problems.push(format!(
                    "phase (c) is not a stalled reconnect from reused port {} (ports {}, stalled {}, reused {})",
                    b["before"], r["ports"], r["stalled"], r["reused"]
                ));
            }
            if r["canary"]["outcome"] != "connected" {
                problems.push(format!("phase (c) has no canary that connected (canary: {})", r["canary"]));
            }
        }
        Some(r) if !ports(r, &b["after"]) => {
            problems.push(format!("phase (c) tried ports {}, not {} that ss saw connect", r["ports"], b["after"]))
        }
        _ => {}
    }
    match recovered {
        None => problems.push("the episode has no phase (d) `recovered`".into()),
        Some(r) if r["sport"] != b["after"] => problems.push(format!("the episode recovered on port {}, ss saw {} connected", r["sport"], b["after"])),
        Some(_) => {}
    }
    let off = |d: Option<f64>| d.filter(|d| d.abs() > TOLERANCE_S);
    if let Some(d) = off(unanswered_vs_rule) {
        problems.push(format!("phase (a) began {d:+.2} s from the rule going in (tolerance {TOLERANCE_S} s)"));
    }
    if let Some(d) = off(closed_outside) {
        let at = |k: &str| b["old_flow"][k].as_u64().zip(b["begin_ns"].as_u64()).map_or("?".into(), |(t, r)| format!("+{:.2} s", (t as f64 - r as f64) / 1e9));
        problems.push(format!(
            "phase (b) (the close) came {d:+.2} s outside the moments ss bounds it to (ESTABLISHED at {}, gone at {}; tolerance {TOLERANCE_S} s)",
            at("last_estab_ns"),
            at("gone_ns")
        ));
    }
    if let Some(d) = off(reconnect_vs_syn_sent) {
        problems.push(format!(
            "phase (c) (the reconnect) began {d:+.2} s from ss first seeing port {} in SYN-SENT (tolerance {TOLERANCE_S} s)",
            b["before"]
        ));
    }
    if let Some(d) = off(recovered_vs_write) {
        problems.push(format!("the episode recovered {d:+.2} s from the write completing (tolerance {TOLERANCE_S} s)"));
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

    const S: u64 = 1_000_000_000;
    const MS: u64 = 1_000_000;

    /// The rule from 10 s to 30 s; the old flow gone at 16.2 s; a
    /// reconnect from the same port wrote until 31.5 s, one from a new port
    /// until 16.4 s.
    fn truth(same: bool) -> Value {
        let (b, a) = if same { (871, 871) } else { (871, 40001) };
        let w1 = if same { 31 * S + 500 * MS } else { 16 * S + 400 * MS };
        json!({"scenario": "blackhole-v3", "vers": "3", "options": "timeo=20,retrans=2", "server": "10.98.0.1",
               "mountpoint": "/mnt/blackhole-v3", "ports": [b, a], "tracer": {"ran": true}, "error": null,
               "blackhole": {"before": b, "after": a, "same_port": same, "before_sk": "2", "after_sk": "7", "netns": 4026532354u64,
                             "begin_ns": 10 * S, "end_ns": 30 * S, "end_begin_ns": 30 * S - 50 * MS, "drops": 14, "drops_to_server": 12, "drops_from_server": 2,
                             "old_flow": {"last_estab_ns": 16 * S, "gone_ns": 16 * S + 200 * MS, "max_unacked": 1, "max_retrans": 5},
                             "write_start_ns": 10 * S + MS, "write_end_ns": w1,
                             "block_s": (w1 - 10 * S - MS) as f64 / 1e9, "syn_sent_ports": if same { json!([b]) } else { json!([]) },
                             "syn_sent_seen": if same { json!([{"port": b, "first_ns": 16 * S + 400 * MS, "last_ns": 31 * S + 200 * MS}]) } else { json!([]) }}})
    }

    /// 6.12 v3: the flow never given up (the same socket), its next
    /// retransmit after the rule went at 36.5 s carried the write.
    fn kept() -> Value {
        let mut t = truth(true);
        let h = &mut t["blackhole"];
        h["after_sk"] = json!("2");
        h["old_flow"]["gone_ns"] = Value::Null;
        h["old_flow"]["last_estab_ns"] = json!(36 * S + 400 * MS);
        h["write_end_ns"] = json!(36 * S + 500 * MS);
        h["block_s"] = json!(26.499);
        h["syn_sent_ports"] = json!([]);
        h["syn_sent_seen"] = json!([]);
        t
    }

    /// What a right tracer prints for [`kept`]: data retransmits, no close,
    /// recovered on the same port when the ACKs came back.
    fn right_kept() -> Vec<Value> {
        let mut l = right(true);
        l.retain(|l| l["type"] != "canary");
        let e = l.last_mut().unwrap();
        e["verdict"] = json!("path-blackhole");
        e["evidence"] = json!("the established flow from port 871 went unanswered (9 data retransmits without ACK progress over 25.2 s); \
                              ACKs came back on the same flow after its last retransmit, 26.2 s after the first: the path stopped carrying the established flow");
        e["mono_ns"] = json!(36 * S + 480 * MS);
        e["phases"]["closed"] = Value::Null;
        e["phases"]["reconnect"] = Value::Null;
        e["phases"]["recovered"] = json!({"mono_ns": 36 * S + 480 * MS, "sport": 871});
        l
    }

    fn rec(kind: &str, t: u64, extra: Value) -> Value {
        let mut v = json!({"type": kind, "raddr": "10.98.0.1", "dport": 2049, "sport": 871, "laddr": "10.98.1.2",
                           "netns": 4026532354u64, "mono_ns": t});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    }

    /// What a right tracer prints: data retransmits from the rule on, then
    /// the episode (reuse: a canary that connected; new port: none needed)
    /// ending with the write.
    fn right(same: bool) -> Vec<Value> {
        let (verdict, after, w1) = if same { ("reused-flow-dropped", 871, 31 * S + 500 * MS) } else { ("path-blackhole", 40001, 16 * S + 400 * MS) };
        let phases = json!({
            "unanswered": {"start": "2026-12-02T03:00:10.3Z", "mono_ns": 10 * S + 300 * MS, "data_retransmits": 5, "rpc_timeouts": 1},
            "closed": {"mono_ns": 16 * S + 100 * MS, "how": "user_timeout", "sport": 871},
            "reconnect": {"mono_ns": 16 * S + 150 * MS, "ports": [after], "stalled": same, "reused": same,
                          "canary": if same { json!({"outcome": "connected"}) } else { Value::Null }},
            "recovered": {"mono_ns": w1 - 20 * MS, "sport": after},
        });
        let mut v = vec![
            json!({"type": "attached"}),
            rec("data_retransmit", 10 * S + 300 * MS, json!({"retransmits": 1, "since_mono_ns": 10 * S + MS})),
            rec("data_retransmit", 13 * S, json!({"retransmits": 4, "since_mono_ns": 10 * S + MS})),
            rec("episode", 10 * S + 300 * MS, json!({"id": 1, "state": "opened", "verdict": "path-blackhole", "evidence": "…"})),
        ];
        if same {
            v.push(rec("canary", 18 * S, json!({"sport": 40123, "outcome": "connected"})));
        }
        // The ended record names the flow it recovered on; its evidence
        // as the tracer words it.
        let unanswered = "the established flow from port 871 went unanswered (5 data retransmits without ACK progress over 5.7 s); \
                          the connection from port 871 closed (user timeout, ETIMEDOUT)";
        let evidence = if same {
            format!("{unanswered}; a reconnect from reused port 871 sat in SYN_SENT 15.4 s with 9 SYN retransmits until port 871 connected; \
                     a canary from new port 40123 connected in 0.4 ms: new flows to the server get through, so the path drops the reused flow only")
        } else {
            format!("{unanswered}; it reconnected from port 40001 6.1 s after the first symptom with no connect stuck in SYN_SENT: \
                     the path stopped carrying the established flow")
        };
        v.push(rec("episode", w1, json!({"id": 1, "state": "ended", "verdict": verdict, "phases": phases, "sport": after, "evidence": evidence})));
        v
    }

    fn problems(t: &Value, l: &[Value]) -> String {
        judge(t, Some(&l.to_vec()), true)["problems"].to_string()
    }

    #[test]
    fn a_right_tracer_agrees() {
        let v = judge(&truth(true), Some(&right(true)), true);
        assert_eq!(v["ok"], json!(true), "{v}");
        assert_eq!(v["expected_verdict"], json!("reused-flow-dropped"));
        assert_eq!(v["unanswered_minus_rule_s"], json!(0.3));
        assert_eq!(v["closed_minus_gone_s"], json!(-0.1));
        assert_eq!(v["recovered_minus_write_s"], json!(-0.02));
        assert_eq!(v["write_end_minus_rule_end_s"], json!(1.5));
        assert_eq!(v["blackhole_s"], json!(20.0));
        assert_eq!(v["tracer_data_retransmits"], json!(4));
        let v = judge(&truth(false), Some(&right(false)), true);
        assert_eq!(v["ok"], json!(true), "{v}");
        assert_eq!(v["expected_verdict"], json!("path-blackhole"));
        let v = judge(&kept(), Some(&right_kept()), true);
        assert_eq!(v["ok"], json!(true), "{v}");
        assert_eq!((v["client"].as_str(), v["expected_verdict"].as_str()), (Some("kept the flow"), Some("path-blackhole")));
    }

    #[test]
    fn a_kept_flow_has_no_close_and_no_reuse() {
        // Same port, same socket: not a reconnect, so not a reuse.
        let p = problems(&kept(), &right(true));
        assert!(p.contains("want path-blackhole") && p.contains("says the flow closed (user_timeout), yet ss listed the same socket (sk:2)"), "{p}");
        // The ACKs came back only after the rule went: the write cannot end before.
        let mut t = kept();
        t["blackhole"]["write_end_ns"] = json!(20 * S);
        assert!(judge(&t, None, false)["problems"].to_string().contains("kept the flow (871 -> 871) yet the write completed 9.9 s before"));
        // A close ss saw needs its phase (b).
        let mut l = right(false);
        l[4]["phases"]["closed"] = Value::Null;
        assert!(problems(&truth(false), &l).contains("no phase (b) `closed`, yet ss saw the flow go"));
    }

    #[test]
    fn the_verdict_follows_the_port() {
        // A reused port needs the reuse verdict, a new one the black hole's.
        let p = problems(&truth(true), &right(false));
        assert!(p.contains("want reused-flow-dropped"), "{p}");
        let p = problems(&truth(false), &right(true));
        assert!(p.contains("want path-blackhole") && p.contains("says reused-flow-dropped"), "{p}");
        // Never a reuse verdict on a new port, even passing through it.
        let mut l = right(false);
        l[3]["verdict"] = json!("reused-flow-dropped");
        assert!(problems(&truth(false), &l).contains("episode 1 (opened) says reused-flow-dropped"));
        // A kernel that tried the old port before a new one counts as reusing it.
        let mut t = truth(false);
        t["blackhole"]["syn_sent_ports"] = json!([871]);
        t["blackhole"]["write_end_ns"] = json!(31 * S);
        assert_eq!(judge(&t, None, false)["expected_verdict"], json!("reused-flow-dropped"));
    }

    #[test]
    fn phase_a_must_be_there_and_named() {
        // Main's tracer today: no phase (a), no path-blackhole verdict.
        let mut l = right(true);
        l[5]["phases"]["unanswered"] = Value::Null;
        l[5]["evidence"] = json!("a reconnect from reused port 871 sat in SYN_SENT 14.0 s with 9 SYN retransmits; a canary connected");
        let p = problems(&truth(true), &l);
        assert!(p.contains("no phase (a)") && p.contains("does not tell the unanswered phase"), "{p}");
        // Both words: the phase and what showed it.
        let mut l = right(false);
        l[4]["evidence"] = json!("5 data retransmits on port 871, then it reconnected from port 40001");
        assert!(problems(&truth(false), &l).contains("does not tell the unanswered phase"));
        let mut l = right(true);
        l[5]["phases"]["unanswered"]["data_retransmits"] = json!(0);
        assert!(problems(&truth(true), &l).contains("counts 0 data retransmits"));
        // The TCP-level records are required too, inside the black hole.
        let l: Vec<Value> = right(false).into_iter().filter(|l| l["type"] != "data_retransmit").collect();
        assert!(problems(&truth(false), &l).contains("no data_retransmit record"));
        let mut l = right(false);
        l[1]["sport"] = json!(40001);
        l[2]["mono_ns"] = json!(5 * S);
        assert!(problems(&truth(false), &l).contains("no data_retransmit record"));
    }

    #[test]
    fn the_phases_are_timed_against_the_truth() {
        let t = truth(true);
        let mut l = right(true);
        l[5]["phases"]["unanswered"]["mono_ns"] = json!(13 * S);
        assert!(problems(&t, &l).contains("phase (a) began +3.00 s from the rule"));
        let mut l = right(true);
        l[5]["phases"]["closed"]["mono_ns"] = json!(12 * S);
        assert!(problems(&t, &l).contains("phase (b) (the close) came -4.00 s outside the moments ss bounds it to (ESTABLISHED at +6.00 s, gone at +6.20 s"));
        l[5]["phases"]["closed"]["mono_ns"] = json!(18 * S + 300 * MS);
        assert!(problems(&t, &l).contains("phase (b) (the close) came +2.10 s outside"));
        // A slow poll widens the window ss gives: a close inside it is right
        // even 2.5 s before ss first missed the flow.
        let mut t = truth(true);
        t["blackhole"]["old_flow"]["last_estab_ns"] = json!(13 * S + 500 * MS);
        let mut l = right(true);
        l[5]["phases"]["closed"]["mono_ns"] = json!(13 * S + 700 * MS);
        let v = judge(&t, Some(&l), true);
        assert_eq!((v["ok"].clone(), v["closed_minus_gone_s"].clone()), (json!(true), json!(-2.5)), "{v}");
        l[5]["phases"]["closed"]["mono_ns"] = json!(11 * S);
        assert!(problems(&t, &l).contains("came -2.50 s outside"));
        let mut l = right(true);
        l[5]["phases"]["closed"] = Value::Null;
        assert!(problems(&t, &l).contains("no phase (b)"));
        // v3: recovered at the rule's removal, 1.5 s before the write: fine;
        // 3 s after the write: not.
        let mut l = right(true);
        l[5]["phases"]["recovered"]["mono_ns"] = json!(30 * S);
        assert!(!problems(&t, &l).contains("recovered"), "{}", problems(&t, &l));
        l[5]["phases"]["recovered"]["mono_ns"] = json!(34 * S + 500 * MS);
        assert!(problems(&t, &l).contains("recovered +3.00 s from the write"));
        let mut l = right(false);
        l[4]["phases"]["recovered"]["sport"] = json!(871);
        assert!(problems(&truth(false), &l).contains("recovered on port 871, ss saw 40001"));
        let mut l = right(false);
        l[4]["phases"]["recovered"] = Value::Null;
        assert!(problems(&truth(false), &l).contains("no phase (d)"));
    }

    /// v3 past its user timeout: the whole story, phase by phase, each
    /// against what ss saw.
    #[test]
    fn a_reused_port_needs_the_stalled_reconnect_with_its_canary() {
        let t = truth(true);
        let v = judge(&t, Some(&right(true)), true);
        assert_eq!(v["reconnect_minus_syn_sent_s"], json!(-0.25));
        assert_eq!((v["old_port_syn_sent_s"].as_f64(), v["reconnect_stall_s"].as_f64()), (Some(6.4), Some(15.1)));
        assert_eq!((v["reconnect_ports"].clone(), v["reconnect_canary"].clone()), (json!([871]), json!("connected")));
        let mut l = right(true);
        l[5]["phases"]["reconnect"] = Value::Null;
        assert!(problems(&t, &l).contains("no phase (c) `reconnect`, yet ss saw another socket connect"));
        for (k, x) in [("stalled", json!(false)), ("reused", json!(false)), ("ports", json!([40200]))] {
            let mut l = right(true);
            l[5]["phases"]["reconnect"][k] = x;
            assert!(problems(&t, &l).contains("phase (c) is not a stalled reconnect from reused port 871"), "{k}");
        }
        let mut l = right(true);
        l[5]["phases"]["reconnect"]["canary"] = json!({"outcome": "timed_out"});
        assert!(problems(&t, &l).contains("phase (c) has no canary that connected"));
        let mut l = right(true);
        l[5]["phases"]["reconnect"]["canary"] = Value::Null;
        assert!(problems(&t, &l).contains("phase (c) has no canary that connected"));
        // Timed against ss's first sight of the port in SYN-SENT.
        let mut l = right(true);
        l[5]["phases"]["reconnect"]["mono_ns"] = json!(19 * S);
        assert!(problems(&t, &l).contains("phase (c) (the reconnect) began +2.60 s from ss first seeing port 871 in SYN-SENT"));
        // The evidence tells the reconnect and the canary too.
        let mut l = right(true);
        l[5]["evidence"] = json!("the established flow from port 871 went unanswered (5 data retransmits); verdict reused-flow-dropped");
        assert!(problems(&t, &l).contains("does not name the stalled reconnect from reused port 871 and the canary"));
        // The close is the black-holed flow's.
        let mut l = right(true);
        l[5]["phases"]["closed"]["sport"] = json!(900);
        assert!(problems(&t, &l).contains("phase (b) closed the flow from port 900"));
        // A kept flow has no reconnect; a new port's reconnect names it.
        let mut l = right_kept();
        l.last_mut().unwrap()["phases"]["reconnect"] = json!({"mono_ns": 20 * S, "ports": [871], "stalled": false, "reused": true});
        assert!(problems(&kept(), &l).contains("has a phase (c) `reconnect` (ports [871]), yet ss listed the same socket"));
        let mut l = right(false);
        l[4]["phases"]["reconnect"]["ports"] = json!([40002]);
        assert!(problems(&truth(false), &l).contains("phase (c) tried ports [40002], not 40001"));
    }

    #[test]
    fn the_truth_must_time_the_reconnect() {
        // ss saw a new socket but never the old one go: phase (b) cannot be timed.
        let mut t = truth(false);
        t["blackhole"]["old_flow"]["gone_ns"] = Value::Null;
        assert!(judge(&t, None, false)["problems"].to_string().contains("yet ss never saw the old flow (sk:2) go"));
        // A reused port the rule held must have been seen in SYN-SENT.
        let mut t = truth(true);
        t["blackhole"]["syn_sent_seen"] = json!([{"port": 40200, "first_ns": 17 * S, "last_ns": 17 * S}]);
        assert!(judge(&t, None, false)["problems"].to_string().contains("yet ss never saw it in SYN-SENT"));
    }

    #[test]
    fn the_episode_is_the_black_holed_flows() {
        // Found by its id although its ended record names the new port.
        assert_eq!(right(false)[4]["sport"], json!(40001));
        // An episode of another port (or namespace) is not this one.
        let mut l = right(true);
        for i in [3, 5] {
            l[i]["sport"] = json!(900);
        }
        l[5]["phases"]["closed"]["sport"] = json!(900);
        assert!(problems(&truth(true), &l).contains("no ended episode for the black-holed flow from port 871"));
        let mut l = right(true);
        for i in [3, 5] {
            l[i]["netns"] = json!(1);
        }
        assert!(problems(&truth(true), &l).contains("no ended episode"));
    }

    #[test]
    fn canaries_get_through_the_black_hole() {
        let mut l = right(true);
        l[4]["outcome"] = json!("timed_out");
        let p = problems(&truth(true), &l);
        assert!(p.contains("did not connect (timed_out)") && p.contains("no canary connected"), "{p}");
        let l: Vec<Value> = right(true).into_iter().filter(|l| l["type"] != "canary").collect();
        assert!(problems(&truth(true), &l).contains("no canary connected"));
        // A new port needs none, but one made must connect.
        let mut l = right(false);
        l.push(rec("canary", 12 * S, json!({"sport": 40200, "outcome": "refused"})));
        assert!(problems(&truth(false), &l).contains("did not connect"));
    }

    #[test]
    fn the_truth_must_show_the_black_hole() {
        let mut t = truth(true);
        t["blackhole"]["drops_to_server"] = json!(0);
        assert!(problems(&t, &right(true)).contains("dropped nothing"));
        // Same port but through before the rule went: the rule did not hold it.
        let mut t = truth(true);
        t["blackhole"]["write_end_ns"] = json!(20 * S);
        assert!(judge(&t, None, false)["problems"].to_string().contains("completed 9.9 s before the rule went"));
        // New port but held until the rule went: something else held it.
        let mut t = truth(false);
        t["blackhole"]["write_end_ns"] = json!(31 * S);
        assert!(judge(&t, None, false)["problems"].to_string().contains("blocked until the rule went"));
        let mut t = truth(false);
        t["blackhole"]["block_s"] = json!(0.01);
        assert!(judge(&t, None, false)["problems"].to_string().contains("did not catch it"));
        // Without the tracer only the truth is judged.
        assert_eq!(judge(&truth(true), None, false)["ok"], json!(true));
        assert_eq!(judge(&truth(false), None, false)["ok"], json!(true));
        assert_eq!(judge(&kept(), None, false)["ok"], json!(true));
    }
}
