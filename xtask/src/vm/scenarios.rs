//! The scenarios (NFS version × mount option) and the host-side judgement:
//! the guest reports what `ss` saw (ground truth) and what the tracer
//! printed; this decides whether they agree.
use std::collections::BTreeMap;

use anyhow::{Result, bail};
use serde_json::{Value, json};

pub const VERSIONS: &[&str] = &["3", "4.0", "4.1", "4.2"];
pub const OPTIONS: &[&str] = &["default", "noresvport"];
/// The guest's record prefix and result marker (tests/src/lab/out.rs).
pub const PREFIX: &str = "@@LAB ";
pub const MARKER: &str = "@@LAB-RESULT";

/// Names as the guest parses them: `late-sunrpc`, `sunrpc-btf`, `v<vers>-<option>`, then
/// the stall scenarios `stall-v<vers>`, the outage ones `outage-v<vers>`, the black-hole ones
/// `blackhole-v<vers>`, the server-silent ones `server-silent-v<vers>`, then the topology ones (`nconnect`, …).
pub fn all_names() -> Vec<String> {
    let mut v = vec![super::late::NAME.to_string(), super::sunrpc_btf::NAME.to_string()];
    v.extend(VERSIONS.iter().flat_map(|v| OPTIONS.iter().map(move |o| format!("v{v}-{o}"))));
    v.extend(super::stall::names());
    v.extend(super::outage::names());
    v.extend(super::blackhole::names());
    v.extend(super::silent::names());
    v.extend(super::topology::NAMES.iter().map(|n| n.to_string()));
    v.push(super::experiment::NAME.to_string());
    v.push(super::proxy::NAME.to_string());
    v
}

pub fn check_name(name: &str) -> Result<()> {
    if !all_names().iter().any(|n| n == name) {
        bail!("unknown scenario {name:?}; scenarios are: {}", all_names().join(", "));
    }
    Ok(())
}

/// Everything the guest reported, grouped.
#[derive(Default)]
pub struct GuestReport {
    pub guest: Option<Value>,
    pub truths: Vec<Value>,
    pub tracer: BTreeMap<String, Vec<Value>>,
    pub tracer_stderr: BTreeMap<String, Vec<String>>,
    pub logs: Vec<String>,
    /// Lines with the prefix that were not valid JSON (console interleaving).
    pub garbled: Vec<String>,
}

pub fn parse_console(lines: &[String]) -> GuestReport {
    let mut r = GuestReport::default();
    for l in lines {
        let Some(i) = l.find(PREFIX) else { continue };
        let Ok(v) = serde_json::from_str::<Value>(&l[i + PREFIX.len()..]) else {
            r.garbled.push(l.clone());
            continue;
        };
        let scenario = v["scenario"].as_str().unwrap_or_default().to_string();
        match v["kind"].as_str() {
            Some("guest") => r.guest = Some(v),
            Some("truth") => r.truths.push(v),
            Some("tracer") => r.tracer.entry(scenario).or_default().push(v["line"].clone()),
            Some("tracer_stderr") => {
                r.tracer_stderr.entry(scenario).or_default().push(v["text"].as_str().unwrap_or_default().into())
            }
            Some("log") => r.logs.push(v["text"].as_str().unwrap_or_default().to_string()),
            _ => r.garbled.push(l.clone()),
        }
    }
    r
}

fn u64_of(v: &Value) -> Option<u64> {
    v.as_u64()
}

/// One scenario's verdict, as it goes into `--json` and the matrix.
pub fn judge(truth: &Value, tracer: Option<&Vec<Value>>, with_tracer: bool) -> Value {
    let server = truth["server"].as_str().unwrap_or_default();
    let ports: Vec<u64> = truth["ports"].as_array().map(|a| a.iter().filter_map(u64_of).collect()).unwrap_or_default();
    let mut problems: Vec<String> = Vec::new();
    if let Some(e) = truth["error"].as_str() {
        problems.push(format!("guest: {e}"));
    }
    let empty = Vec::new();
    let lines = tracer.unwrap_or(&empty);
    if with_tracer && truth["tracer"]["ran"] != json!(true) {
        problems.push("the tracer did not run".into());
    }
    let mut recs = Vec::new();
    let mut tracer_ports = Vec::new();
    for r in truth["reconnects"].as_array().unwrap_or(&Vec::new()) {
        let (before, after) = (r["before"].as_u64().unwrap_or(0), r["after"].as_u64().unwrap_or(0));
        let (t0, t1) = (r["t_start_ns"].as_u64().unwrap_or(0), r["t_end_ns"].as_u64().unwrap_or(u64::MAX));
        let n = r["n"].as_u64().unwrap_or(0);
        let same = before == after;
        let mut rec = json!({
            "n": n, "method": r["method"], "before": before, "after": after, "same_port": same,
        });
        if with_tracer {
            // Ports the mount's flow had before this reconnect (ss): a
            // transport drawing a random port can draw one of them again,
            // which is that flow again (issue 11: reuse is the flow's).
            let earlier: Vec<u64> = ports.iter().take(n as usize).copied().collect();
            let v = judge_reconnect(lines, server, (before, after, &earlier), t0, t1, r["seen"].as_array().map_or(1, Vec::len));
            tracer_ports.extend(v.ports.iter().copied());
            rec["tracer_ports"] = json!(v.ports);
            rec["tracer_reuse"] = json!(v.reuse);
            rec["agree"] = json!(v.problems.is_empty());
            for p in &v.problems {
                problems.push(format!("reconnect {n} ({}): {p}", r["method"].as_str().unwrap_or("?")));
            }
        }
        recs.push(rec);
    }
    if recs.is_empty() && truth["error"].is_null() {
        problems.push("no reconnect recorded".into());
    }
    let attached = lines.iter().find(|l| l["type"] == "attached");
    let hooks = attached.map(|a| {
        let hs = a["hooks"].as_array().cloned().unwrap_or_default();
        // "kind name", plus the tracer's reason for hooks it left out (often
        // an alternative that was not needed).
        let label = |h: &Value| format!("{} {}", h["kind"].as_str().unwrap_or("?"), h["name"].as_str().unwrap_or("?"));
        let attached: Vec<String> = hs.iter().filter(|h| h["attached"] == json!(true)).map(label).collect();
        let not: Vec<Value> = hs
            .iter()
            .filter(|h| h["attached"] != json!(true))
            .map(|h| json!({"hook": label(h), "detail": h["detail"]}))
            .collect();
        json!({"attached": attached, "not_attached": not})
    });
    if with_tracer && truth["tracer"]["ran"] == json!(true) && attached.is_none() {
        problems.push("the tracer printed no `attached` record".into());
    }
    let tcp_agrees = problems.is_empty();
    // The transport layer and the mount commands (issue 4).
    let (mut sunrpc, mut check, mut prove) = (Value::Null, Value::Null, Value::Null);
    if with_tracer && truth["error"].is_null() {
        for (slot, (v, ps)) in [
            (&mut sunrpc, super::layers::sunrpc(truth, lines)),
            (&mut check, super::layers::check(truth)),
            (&mut prove, super::layers::prove(truth)),
        ] {
            *slot = v;
            problems.extend(ps);
        }
    }
    let class = match (ports.iter().all(|p| *p < 1024), ports.iter().all(|p| *p >= 1024)) {
        _ if ports.is_empty() => "unknown",
        (true, _) => "reserved",
        (_, true) => "ephemeral",
        _ => "mixed",
    };
    json!({
        "scenario": truth["scenario"],
        "vers": truth["vers"],
        "options": truth["options"],
        "mount_options": truth["mount_options"],
        "truth_ports": ports,
        "tracer_ports": if with_tracer { json!(tracer_ports) } else { Value::Null },
        "port_range": class,
        "reconnects": recs,
        "hooks": hooks,
        "tracer_exit": truth["tracer"]["exit"],
        "sunrpc": sunrpc,
        "check": check,
        "prove": prove,
        // TCP level: the mount commands and the SunRPC layer have their own.
        "agree": if with_tracer { json!(tcp_agrees) } else { Value::Null },
        "ok": problems.is_empty(),
        "problems": problems,
    })
}

struct ReconnectVerdict {
    ports: Vec<u64>,
    reuse: bool,
    problems: Vec<String>,
}

/// The tracer must show the reconnect as one established connect from the
/// new source port to the server's NFS port inside the reconnect's time
/// window, and a `reuse` record exactly when ss saw the same port again —
/// or, where the new port is one the flow had earlier (`earlier`, a random
/// port drawn again), a reuse record either way: that flow is back.
fn judge_reconnect(lines: &[Value], server: &str, (before, after, earlier): (u64, u64, &[u64]), t0: u64, t1: u64, new_sockets: usize) -> ReconnectVerdict {
    let to_server = |l: &Value| l["raddr"] == server && l["dport"] == 2049;
    let in_window = |l: &Value| l["mono_ns"].as_u64().is_some_and(|t| t >= t0 && t <= t1);
    let mut problems = Vec::new();
    let connects: Vec<(usize, &Value)> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l["type"] == "connect" && l["outcome"] == "established" && to_server(l) && in_window(l))
        .collect();
    let ports: Vec<u64> = connects.iter().filter_map(|(_, l)| l["sport"].as_u64()).collect();
    if connects.is_empty() {
        problems.push(format!("no established connect to {server}:2049 in the tracer's output (ss: {before} -> {after})"));
    } else if !ports.contains(&after) {
        problems.push(format!("tracer saw source port(s) {ports:?}, ss saw {after}"));
    } else if connects.len() > new_sockets {
        problems.push(format!(
            "tracer printed {} established connects, ss saw {new_sockets} new connection(s)",
            connects.len()
        ));
    }
    // A reuse record belongs to the connect it follows (schema: it comes
    // after that connect, before the next one). Kernel socket addresses (sk)
    // are recycled, so sk alone cannot join them; it must agree where given.
    let matching = connects.iter().find(|(_, l)| l["sport"].as_u64() == Some(after));
    let reuse = matching.is_some_and(|(ci, c)| {
        lines[ci + 1..]
            .iter()
            .take_while(|l| l["type"] != "connect")
            .any(|l| {
                l["type"] == "reuse"
                    && to_server(l)
                    && l["sport"].as_u64() == Some(after)
                    && (l.get("sk").is_none() || c.get("sk").is_none() || l["sk"] == c["sk"])
            })
    });
    let truth_reuse = before == after;
    let repeat = !truth_reuse && earlier.contains(&after);
    if !connects.is_empty() && reuse != truth_reuse && !repeat {
        problems.push(if truth_reuse {
            format!("ss saw port {after} reused, the tracer reported no reuse")
        } else {
            format!("the tracer reported a reuse, ss saw a new port ({before} -> {after})")
        });
    }
    if let Some((_, c)) = matching
        && let Some(flag) = c["reused"].as_bool()
        && flag != truth_reuse
        && !repeat
    {
        problems.push(format!("connect record says reused={flag}, ss saw {before} -> {after}"));
    }
    ReconnectVerdict { ports, reuse, problems }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn truth(before: u64, after: u64) -> Value {
        json!({"scenario": "v3-default", "vers": "3", "options": "default", "server": "10.99.0.1",
               "ports": [before, after], "tracer": {"ran": true}, "error": null,
               "reconnects": [{"n": 1, "method": "ss-kill", "before": before, "after": after,
                               "t_start_ns": 100, "t_end_ns": 200, "seen": [{}]}]})
    }

    fn connect(sport: u64, t: u64, reused: bool) -> Value {
        json!({"type": "connect", "outcome": "established", "raddr": "10.99.0.1", "dport": 2049,
               "sport": sport, "mono_ns": t, "reused": reused, "sk": "ffff1"})
    }

    fn reuse(sport: u64, t: u64) -> Value {
        json!({"type": "reuse", "raddr": "10.99.0.1", "dport": 2049, "sport": sport, "mono_ns": t, "sk": "ffff1"})
    }

    fn attached() -> Value {
        json!({"type": "attached", "hooks": [{"name": "a", "attached": true}, {"name": "b", "attached": false}]})
    }

    /// 6.1 v4.2 in the matrix of 2026-12-02: the transport drew port 980
    /// again two reconnects later. That flow is back: a reuse record is
    /// right (ss's before → after alone says "new port"); on a port the flow
    /// never had, a reuse is still wrong.
    #[test]
    fn a_random_port_drawn_again_may_be_called_a_reuse() {
        let mut t = truth(980, 833);
        t["ports"] = json!([980, 833, 980]);
        t["reconnects"].as_array_mut().unwrap().push(json!({"n": 2, "method": "ss-kill", "before": 833, "after": 980,
                                                             "t_start_ns": 300, "t_end_ns": 400, "seen": [{}]}));
        let lines = vec![attached(), connect(833, 150, false), connect(980, 350, true), reuse(980, 350)];
        let v = judge(&t, Some(&lines), true);
        assert_eq!(v["reconnects"][1]["agree"], json!(true), "{v}");
        let lines = vec![attached(), connect(833, 150, true), reuse(833, 150), connect(980, 350, true), reuse(980, 350)];
        let v = judge(&t, Some(&lines), true);
        assert_eq!(v["reconnects"][0]["agree"], json!(false), "833 was new: {v}");
    }

    #[test]
    fn agrees_on_reuse() {
        let v = judge(&truth(700, 700), Some(&vec![attached(), connect(700, 150, true), reuse(700, 150)]), true);
        assert_eq!(v["reconnects"][0]["agree"], json!(true), "{v}");
        assert_eq!(v["port_range"], "reserved");
        assert_eq!(v["hooks"]["not_attached"][0]["hook"], json!("? b"));
        assert_eq!(v["hooks"]["attached"], json!(["? a"]));
    }

    #[test]
    fn missing_reuse_is_a_disagreement() {
        let v = judge(&truth(700, 700), Some(&vec![attached(), connect(700, 150, false)]), true);
        assert_eq!(v["reconnects"][0]["agree"], json!(false));
    }

    #[test]
    fn false_reuse_is_a_disagreement() {
        let v = judge(&truth(40000, 40001), Some(&vec![attached(), connect(40001, 150, false), reuse(40001, 150)]), true);
        assert_eq!(v["reconnects"][0]["agree"], json!(false));
    }

    #[test]
    fn wrong_port_or_outside_window_is_a_disagreement() {
        let v = judge(&truth(40000, 40001), Some(&vec![attached(), connect(40002, 150, false)]), true);
        assert_eq!(v["reconnects"][0]["agree"], json!(false));
        let v = judge(&truth(40000, 40001), Some(&vec![attached(), connect(40001, 250, false)]), true);
        assert_eq!(v["reconnects"][0]["agree"], json!(false));
        let v = judge(&truth(40000, 40001), Some(&vec![attached(), connect(40001, 150, false)]), true);
        assert_eq!(v["reconnects"][0]["agree"], json!(true), "{v}");
        assert_eq!(v["port_range"], "ephemeral");
    }

    #[test]
    fn a_reuse_belongs_to_the_connect_it_follows() {
        // The same (recycled) sk and port later on must not count for this one.
        let mut t = truth(700, 700);
        t["reconnects"][0]["t_end_ns"] = json!(200);
        let lines = vec![attached(), connect(700, 150, false), connect(700, 300, true), reuse(700, 300)];
        let v = judge(&t, Some(&lines), true);
        assert_eq!(v["reconnects"][0]["tracer_reuse"], json!(false), "{v}");
        assert_eq!(v["reconnects"][0]["agree"], json!(false));
    }

    #[test]
    fn the_mount_commands_are_judged_too() {
        // A scenario without check and prove records fails (they must run).
        let v = judge(&truth(700, 700), Some(&vec![attached(), connect(700, 150, true), reuse(700, 150)]), true);
        assert_eq!(v["reconnects"][0]["agree"], json!(true));
        assert_eq!(v["ok"], json!(false), "{v}");
        assert!(v["problems"].to_string().contains("check did not run"));
    }

    #[test]
    fn a_guest_error_fails_the_scenario() {
        let mut t = truth(1, 1);
        t["error"] = json!("mount failed");
        let v = judge(&t, None, false);
        assert_eq!(v["ok"], json!(false));
    }

    #[test]
    fn console_parsing_skips_kernel_noise() {
        let lines = vec![
            "[    1.0] random kernel line".to_string(),
            r#"@@LAB {"kind":"truth","scenario":"v3-default"}"#.to_string(),
            r#"@@LAB {"kind":"tracer","scenario":"v3-default","line":{"type":"connect"}}"#.to_string(),
            r#"@@LAB {"kind":"trac"#.to_string(),
        ];
        let r = parse_console(&lines);
        assert_eq!(r.truths.len(), 1);
        assert_eq!(r.tracer["v3-default"].len(), 1);
        assert_eq!(r.garbled.len(), 1);
    }
}
