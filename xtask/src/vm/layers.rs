//! Judgement of the tracer's transport layer and its two mount commands
//! against the ground truth (issue 4): the `xprt_reconnect` records of
//! `watch --json`, `nfs-trace check` and `nfs-trace prove`, each run in the
//! guest on the scenario's mount.
use serde_json::{Value, json};

/// The guest's reconnect records of one method (`ss-kill`, `sysfs-dstaddr`).
fn truth_reconnects<'a>(truth: &'a Value, method: Option<&str>) -> Vec<&'a Value> {
    truth["reconnects"]
        .as_array()
        .map(|a| a.iter().filter(|r| method.is_none_or(|m| r["method"] == m)).collect())
        .unwrap_or_default()
}

fn same_port(r: &Value) -> bool {
    r["before"].as_u64().is_some() && r["before"] == r["after"]
}

/// A transport record's `mounts` names the mount point (as a string or as
/// an object with `mountpoint`).
fn serves(rec: &Value, mount: &str) -> bool {
    rec["mounts"]
        .as_array()
        .is_some_and(|ms| ms.iter().any(|m| m.as_str() == Some(mount) || m["mountpoint"].as_str() == Some(mount)))
}

/// The `xprt_reconnect` records of the scenario's mount (those that name it,
/// or share the xprt of a record that does or of the connect from the port
/// the mount started with) are exactly one per reconnect `ss` saw, with its
/// ports, and `reused` exactly when the port was the same.
pub fn sunrpc(truth: &Value, lines: &[Value]) -> (Value, Vec<String>) {
    let server = truth["server"].as_str().unwrap_or_default();
    let mount = truth["mountpoint"].as_str().unwrap_or_default();
    let first_port = truth["ports"][0].as_u64();
    let recs: Vec<&Value> = lines
        .iter()
        .filter(|l| (l["type"] == "xprt_connect" || l["type"] == "xprt_reconnect") && l["raddr"] == server && l["dport"] == 2049)
        .collect();
    let mine: Vec<&Value> = recs
        .iter()
        .filter(|r| serves(r, mount) || (r["type"] == "xprt_connect" && r["sport"].as_u64() == first_port))
        .map(|r| &r["xprt"])
        .collect();
    let got: Vec<&Value> = recs.iter().copied().filter(|r| r["type"] == "xprt_reconnect" && mine.contains(&&r["xprt"])).collect();
    let want = truth_reconnects(truth, None);
    let mut problems = Vec::new();
    if got.len() != want.len() {
        problems.push(format!(
            "SunRPC: {} xprt_reconnect record(s) for {mount}, ss saw {} reconnect(s)",
            got.len(),
            want.len()
        ));
    }
    // Each reconnect's records are those inside its time window: exactly
    // one, an xprt_reconnect with ss's ports.
    for t in &want {
        let (t0, t1) = (t["t_start_ns"].as_u64().unwrap_or(0), t["t_end_ns"].as_u64().unwrap_or(u64::MAX));
        let inside: Vec<&&Value> = recs
            .iter()
            .filter(|r| mine.contains(&&r["xprt"]) && r["mono_ns"].as_u64().is_some_and(|m| m >= t0 && m <= t1))
            .collect();
        let (before, after) = (&t["before"], &t["after"]);
        let said = |r: &Value| format!("{} {} -> {} reused={}", r["type"].as_str().unwrap_or("?"), r["prev_sport"], r["sport"], r["reused"]);
        let what = format!("SunRPC reconnect {} ({}, ss {before} -> {after})", t["n"], t["method"].as_str().unwrap_or("?"));
        match inside.as_slice() {
            [r] if r["type"] == "xprt_reconnect"
                && r["prev_sport"] == *before
                && r["sport"] == *after
                && r["reused"] == json!(same_port(t)) => {}
            [r] => problems.push(format!("{what}: the tracer printed {}", said(r))),
            [] => problems.push(format!("{what}: no transport record of the mount in its time window")),
            many => problems.push(format!(
                "{what}: {} records in its time window: {}",
                many.len(),
                many.iter().map(|r| said(r)).collect::<Vec<_>>().join("; ")
            )),
        }
    }
    let seen: Vec<Value> = got
        .iter()
        .map(|r| json!({"xprt": r["xprt"], "prev_sport": r["prev_sport"], "sport": r["sport"], "reused": r["reused"], "drop_reason": r["drop_reason"]}))
        .collect();
    (json!({"agree": problems.is_empty(), "reconnects": seen}), problems)
}

/// The ground truth says "reuses" when every reconnect of the kind reused
/// the port: a port-changing transport picks at random and can draw its old
/// port once (seen: 4.1 on 6.12, 993 -> 993 by sysfs), a reusing one never
/// changes it.
fn all_reused(rs: &[&Value]) -> bool {
    !rs.is_empty() && rs.iter().all(|r| same_port(r))
}

/// `check` flags the mount exactly when `ss -K` reconnects reused its port,
/// and exits 2 then, 0 otherwise.
pub fn check(truth: &Value) -> (Value, Vec<String>) {
    let c = &truth["check"];
    let mount = truth["mountpoint"].as_str().unwrap_or_default();
    let expected = all_reused(&truth_reconnects(truth, Some("ss-kill")));
    let mut problems = Vec::new();
    if c.is_null() || !c["error"].is_null() {
        problems.push(format!("check did not run: {}", c["error"].as_str().unwrap_or("no record")));
        return (json!({"agree": false, "expected": expected}), problems);
    }
    let entry = c["output"]["mounts"].as_array().and_then(|ms| ms.iter().find(|m| m["mountpoint"] == mount));
    let flagged = entry.and_then(|m| m["flagged"].as_bool());
    let exit = c["exit"].as_i64();
    let want_exit = if expected { 2 } else { 0 };
    if flagged != Some(expected) {
        problems.push(match flagged {
            None => format!("check listed no {mount} (exit {exit:?}, stderr {:?})", c["stderr"]),
            Some(f) => format!("check flagged={f}, ss -K reconnects {} the port", if expected { "reused" } else { "changed" }),
        });
    }
    if exit != Some(want_exit) {
        problems.push(format!("check exited {exit:?}, want {want_exit}"));
    }
    // Its live ports are the mount's own connection as `ss` saw it last
    // (the port after the last reconnect); none without sunrpc sysfs.
    let sysfs = !truth_reconnects(truth, Some("sysfs-dstaddr")).is_empty();
    let last = truth["ports"].as_array().and_then(|p| p.last()).cloned();
    let want_live = if sysfs { json!([last]) } else { json!([]) };
    let live = entry.map(|m| m["live_ports"].clone());
    if entry.is_some() && live.as_ref() != Some(&want_live) {
        problems.push(format!("check live_ports {live:?} (from {}), ss says {want_live}", entry.map_or(json!(null), |m| m["live_from"].clone())));
    }
    let v = json!({
        "agree": problems.is_empty(), "expected": expected, "flagged": flagged, "exit": exit,
        "live_ports": live, "live_from": entry.map(|m| m["live_from"].clone()),
        "remembered_ports": entry.map(|m| m["remembered_ports"].clone()),
        "reuse": entry.map(|m| m["reuse"].clone()),
    });
    (v, problems)
}

/// `prove -n 2` exits 3 exactly when the ground truth shows reuse (over all
/// the scenario's reconnects: on every kernel line the two ways of forcing,
/// which prove also uses, behaved alike); its rounds chain from the port
/// `ss` saw before it to the one `ss` saw after, each `reused` iff the ports
/// match.
pub fn prove(truth: &Value) -> (Value, Vec<String>) {
    let p = &truth["prove"];
    let mut problems = Vec::new();
    if p.is_null() || !p["error"].is_null() {
        problems.push(format!("prove did not run: {}", p["error"].as_str().unwrap_or("no record")));
        return (json!({"agree": false}), problems);
    }
    let rounds = p["output"]["rounds"].as_array().cloned().unwrap_or_default();
    let method = rounds.first().and_then(|r| r["method"].as_str()).unwrap_or("");
    let expected = all_reused(&truth_reconnects(truth, None));
    let want_exit = if expected { 3 } else { 0 };
    let exit = p["exit"].as_i64();
    if exit != Some(want_exit) {
        problems.push(format!(
            "prove exited {exit:?}, want {want_exit} (ss {} the port; stderr {:?})",
            if expected { "reused" } else { "changed" },
            p["stderr"]
        ));
    }
    if rounds.len() != 2 {
        problems.push(format!("prove reported {} round(s), asked for 2", rounds.len()));
    }
    let pairs: Vec<(Value, Value)> = rounds.iter().map(|r| (r["before"].clone(), r["after"].clone())).collect();
    if let (Some(first), Some(last)) = (pairs.first(), pairs.last())
        && (first.0 != p["ss_before"] || last.1 != p["ss_after"])
    {
        problems.push(format!(
            "prove rounds {pairs:?} do not start/end at ss's ports {} -> {}",
            p["ss_before"], p["ss_after"]
        ));
    }
    if pairs.windows(2).any(|w| w[0].1 != w[1].0) {
        problems.push(format!("prove rounds do not chain: {pairs:?}"));
    }
    if rounds.iter().any(|r| r["reused"] != json!(r["before"] == r["after"])) {
        problems.push(format!("prove's reused flags contradict its ports: {rounds:?}"));
    }
    let v = json!({
        "agree": problems.is_empty(), "expected_reuse": expected, "exit": exit, "method": method,
        "rounds": pairs.iter().map(|(b, a)| json!([b, a])).collect::<Vec<_>>(),
        "ss_before": p["ss_before"], "ss_after": p["ss_after"],
    });
    (v, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn truth(ss_kill: (u64, u64), sysfs: (u64, u64)) -> Value {
        json!({"server": "10.99.0.1", "mountpoint": "/mnt/v4.0-default", "ports": [ss_kill.0, ss_kill.1, sysfs.1],
               "reconnects": [
                 {"n": 1, "method": "ss-kill", "before": ss_kill.0, "after": ss_kill.1, "t_start_ns": 100, "t_end_ns": 200},
                 {"n": 2, "method": "sysfs-dstaddr", "before": sysfs.0, "after": sysfs.1, "t_start_ns": 300, "t_end_ns": 400}]})
    }

    fn xprt(kind: &str, prev: Option<u64>, sport: u64, t: u64, mounts: &[&str]) -> Value {
        json!({"type": kind, "xprt": "ffff8", "raddr": "10.99.0.1", "dport": 2049, "prev_sport": prev,
               "sport": sport, "reused": prev == Some(sport), "mono_ns": t, "mounts": mounts})
    }

    #[test]
    fn sunrpc_records_match_ss() {
        let t = truth((700, 700), (700, 700));
        let m = ["/mnt/v4.0-default"];
        let lines = vec![xprt("xprt_reconnect", Some(700), 700, 150, &m), xprt("xprt_reconnect", Some(700), 700, 350, &m)];
        let (v, p) = sunrpc(&t, &lines);
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(v["agree"], json!(true));
        // A missing record, a wrong port or a wrong reuse flag each disagree,
        // and so does the right record outside the reconnect's window.
        assert!(!sunrpc(&t, &lines[..1]).1.is_empty());
        let mut wrong = lines.clone();
        wrong[1]["sport"] = json!(701);
        assert!(!sunrpc(&t, &wrong).1.is_empty());
        let mut wrong = lines.clone();
        wrong[0]["reused"] = json!(false);
        assert!(!sunrpc(&t, &wrong).1.is_empty());
        let mut wrong = lines.clone();
        wrong[0]["mono_ns"] = json!(250);
        assert!(!sunrpc(&t, &wrong).1.is_empty());
        // A first reconnect reported as the transport's first connect (no
        // previous port) is not a reconnect record.
        let mut wrong = lines.clone();
        wrong[0] = xprt("xprt_connect", None, 700, 150, &m);
        let p = sunrpc(&t, &wrong).1;
        assert!(p.iter().any(|p| p.contains("xprt_connect null -> 700")), "{p:?}");
    }

    #[test]
    fn sunrpc_joins_by_the_first_connects_xprt() {
        // Records without mounts count when their xprt is the mount's.
        let t = truth((40000, 40001), (40001, 40002));
        let lines = vec![
            xprt("xprt_connect", None, 40000, 50, &[]),
            xprt("xprt_reconnect", Some(40000), 40001, 150, &[]),
            xprt("xprt_reconnect", Some(40001), 40002, 350, &[]),
        ];
        assert!(sunrpc(&t, &lines).1.is_empty());
        // Another transport's records do not count.
        let mut other = lines.clone();
        other[0]["sport"] = json!(999);
        assert!(!sunrpc(&t, &other).1.is_empty());
    }

    #[test]
    fn check_flags_exactly_the_reusing_mounts() {
        let mut t = truth((700, 700), (700, 701));
        t["check"] = json!({"exit": 2, "output": {"mounts": [{"mountpoint": "/mnt/v4.0-default", "flagged": true, "live_ports": [701]}]}});
        assert!(check(&t).1.is_empty(), "{:?}", check(&t).1);
        t["check"]["output"]["mounts"][0]["live_ports"] = json!([700, 701]);
        assert!(!check(&t).1.is_empty(), "live ports must be the mount's own, as ss saw it last");
        t["check"]["output"]["mounts"][0]["live_ports"] = json!([701]);
        t["check"]["exit"] = json!(0);
        assert!(!check(&t).1.is_empty(), "exit code must match");
        let mut t = truth((40000, 40001), (40001, 40002));
        t["check"] = json!({"exit": 2, "output": {"mounts": [{"mountpoint": "/mnt/v4.0-default", "flagged": true, "live_ports": [40002]}]}});
        assert!(!check(&t).1.is_empty(), "a port-changing mount must not be flagged");
        t["check"] = json!({"exit": 0, "output": {"mounts": []}});
        assert!(!check(&t).1.is_empty(), "the mount must be listed");
    }

    fn prove_rec(exit: i64, rounds: &[(u64, u64)], ss: (u64, u64)) -> Value {
        let rounds: Vec<Value> = rounds
            .iter()
            .map(|(b, a)| json!({"method": "sysfs dstaddr", "before": b, "after": a, "reused": b == a}))
            .collect();
        json!({"exit": exit, "output": {"rounds": rounds}, "ss_before": ss.0, "ss_after": ss.1})
    }

    #[test]
    fn prove_agrees_with_ss_and_the_truth() {
        let mut t = truth((700, 701), (701, 702));
        t["prove"] = prove_rec(0, &[(701, 702), (702, 703)], (701, 703));
        assert!(prove(&t).1.is_empty(), "{:?}", prove(&t).1);
        t["prove"] = prove_rec(3, &[(701, 702), (702, 703)], (701, 703));
        assert!(!prove(&t).1.is_empty(), "wrong exit");
        t["prove"] = prove_rec(0, &[(701, 702), (702, 703)], (701, 704));
        assert!(!prove(&t).1.is_empty(), "ss after differs");
        t["prove"] = prove_rec(0, &[(701, 702)], (701, 702));
        assert!(!prove(&t).1.is_empty(), "one round only");
        let mut t = truth((700, 700), (700, 700));
        t["prove"] = prove_rec(3, &[(700, 700), (700, 700)], (700, 700));
        assert!(prove(&t).1.is_empty());
        // A port-changing transport that drew its old port once by chance
        // still changes ports: prove's exit 0 agrees.
        let mut t = truth((40000, 40001), (40001, 40001));
        t["prove"] = prove_rec(0, &[(40002, 40003), (40003, 40004)], (40002, 40004));
        assert!(prove(&t).1.is_empty(), "{:?}", prove(&t).1);
        t["prove"] = json!({"error": "timed out"});
        assert!(!prove(&t).1.is_empty());
    }
}
