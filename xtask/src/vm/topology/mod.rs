//! Judgement of the topology scenarios (issue 11, item 5): several
//! transports to one server at once (`nconnect`, `shared-server`), a
//! container with its own namespaces (`netns`), IPv6 (`ipv6`).
//!
//! Ground truth (tests/src/lab/topology): `ss` in each namespace gives every
//! transport's socket before and after each reconnect; mountstats (and, on
//! 6.4+, the `/sys/fs/nfs` links) say whose mount each socket is. Per
//! reconnect the tracer must show the connect from ss's new port, a `reuse`
//! (not by chance) for that flow exactly when ss saw the same port, and one
//! `xprt_reconnect` naming exactly the transport's own mount; the mounts'
//! first connects must never be credited to another mount; its reuses per
//! mount must equal ss's count. With more than one namespace every record
//! must carry its namespace's `netns`, and `check` must list every mount.
mod netns;
mod reconnects;

use serde_json::{Value, json};

pub const NAMES: &[&str] = &["nconnect", "shared-server", "netns", "ipv6"];

pub fn is_topology(name: &str) -> bool {
    NAMES.contains(&name)
}

pub fn judge(truth: &Value, tracer: Option<&Vec<Value>>, with_tracer: bool) -> Value {
    let mut problems: Vec<String> = Vec::new();
    if let Some(e) = truth["error"].as_str() {
        problems.push(format!("guest: {e}"));
    }
    problems.extend(reconnects::truth_consistent(truth));
    let empty = Vec::new();
    let lines = tracer.unwrap_or(&empty);
    let mounts = truth["mounts"].as_array().cloned().unwrap_or_default();
    let several_ns = mounts.iter().map(|m| m["netns"].to_string()).collect::<std::collections::BTreeSet<_>>().len() > 1;
    let mut per_reconnect = Vec::new();
    let mut per_mount = Vec::new();
    let (mut tcp_ok, mut sunrpc_ok, mut netns_ok, mut check) = (true, true, true, Value::Null);
    if with_tracer && truth["error"].is_null() {
        if truth["tracer"]["ran"] != json!(true) {
            problems.push("the tracer did not run".into());
        } else if !lines.iter().any(|l| l["type"] == "attached") {
            problems.push("the tracer printed no `attached` record".into());
        }
        for r in truth["reconnects"].as_array().into_iter().flatten() {
            let earlier = reconnects::earlier_ports(truth, r);
            let v = reconnects::judge_one(lines, r, &earlier, several_ns);
            tcp_ok &= v.tcp.is_empty();
            sunrpc_ok &= v.sunrpc.is_empty();
            netns_ok &= v.netns.is_empty();
            let label = format!("reconnect {} ({}, ss {} -> {})", r["n"], r["mount"].as_str().unwrap_or("?"), r["before"], r["after"]);
            problems.extend(v.tcp.iter().chain(&v.sunrpc).chain(&v.netns).map(|p| format!("{label}: {p}")));
            per_reconnect.push(v.record);
        }
        let first = reconnects::first_connects(truth, lines);
        sunrpc_ok &= first.is_empty();
        problems.extend(first);
        for m in &mounts {
            let (rec, ps) = reconnects::reuses_per_mount(truth, lines, m);
            tcp_ok &= ps.is_empty();
            problems.extend(ps);
            per_mount.push(rec);
        }
        if truth["reconnects"].as_array().is_none_or(Vec::is_empty) {
            problems.push("no reconnect recorded".into());
        }
        if truth["scenario"] == "netns" {
            let (v, ps) = netns::check(truth);
            netns_ok &= ps.is_empty();
            problems.extend(ps);
            check = v;
            problems.extend(netns::truth_link(truth));
        }
    }
    json!({
        "kind": "topology",
        "scenario": truth["scenario"],
        "mounts": per_mount,
        "reconnects": per_reconnect,
        "guest_s": truth["guest_s"],
        "tracer_exit": truth["tracer"]["exit"],
        "check": check,
        "tcp_agree": if with_tracer { json!(tcp_ok) } else { Value::Null },
        "sunrpc_agree": if with_tracer { json!(sunrpc_ok) } else { Value::Null },
        "netns_agree": if with_tracer && several_ns { json!(netns_ok) } else { Value::Null },
        "agree": if with_tracer { json!(problems.is_empty()) } else { Value::Null },
        "ok": problems.is_empty(),
        "problems": problems,
    })
}

#[cfg(test)]
mod tests;
