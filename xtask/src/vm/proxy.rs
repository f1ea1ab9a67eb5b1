//! Judgement of `proxy` (issue 14): a v4.1 mount of 127.0.0.1:20049
//! through a client-side stunnel4 to a server-side stunnel4 in front of
//! nfsd (tests/src/lab/proxy.rs). Truth is what `ss -tnp` showed of
//! stunnel's sockets, nft's per-port count of the SYNs it dropped while the
//! server's TLS port was blocked, the lab clock around the write, and the
//! exit status of `nfs-trace check`. The tracer must:
//! - in `check`: name stunnel (pid, comm) and its upstream 4-tuple as ss
//!   did, flag the stuck SYN-SENT upstream during the block and the gone
//!   proxy after it was killed, and show the pod of the kubelet-path mount;
//! - in `watch`: learn the server's TLS port from the proxy and watch it,
//!   report the proxy's reconnect as the mount's upstream leg with the SYN
//!   retransmits nft dropped, the stall and its episode on that leg within
//!   2 s of the write's block, and the kernel's reconnect to the proxy.
use std::fmt::Write as _;

use serde_json::{Value, json};

use super::report::KernelRun;

pub const NAME: &str = "proxy";

pub const MATRIX_TEXT: &str = "\n## A mount through a local TLS proxy (`proxy`)\n\n\
    The efs-utils v1 topology with Debian's stunnel4: the client mounts `127.0.0.1:/` with\n\
    `vers=4.1,port=20049`; a client-side stunnel listens there and connects to a server-side stunnel on\n\
    the server's TLS port 20490, which forwards to nfsd. The proxy's upstream connection is killed\n\
    with `ss -K` while the server drops (and nft counts, per source port) every SYN to 20490 for 12 s,\n\
    and a write is timed across it. *Agrees*: `check` named stunnel's pid and its upstream 4-tuple as\n\
    `ss -tnp` did, flagged the SYN-SENT upstream during the block and the gone proxy after it was\n\
    killed, and showed the pod of a second mount under a kubelet path; `watch` learnt and watched\n\
    port 20490, reported stunnel's reconnect as the mount's `proxy_upstream` leg with as many SYN\n\
    retransmits as nft dropped SYNs from that port, its stall within 2 s of the write's block, an\n\
    episode `server-or-path-down` (the canary's SYNs were dropped too) and the kernel's reconnect to\n\
    the proxy, each naming the mount.\n\n";

/// One row per kernel; empty when the scenario did not run.
pub fn table(runs: &[KernelRun]) -> String {
    let rows: Vec<(&KernelRun, &Value)> =
        runs.iter().flat_map(|run| run.results.iter().filter(|r| r["kind"] == "proxy").map(move |r| (run, r))).collect();
    if rows.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "| Kernel | stunnel pid (ss) | Upstream port before → after (ss) | SYNs dropped (nft) | Tracer's SYN retransmits | Write blocked | Episode verdict | Agrees |\n\
         |---|---:|---|---|---:|---:|---|---|\n",
    );
    for (run, r) in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} → {} | {} | {} | {:.1} s | {} | {} |",
            run.line,
            r["stunnel_pid"],
            r["upstream_before"],
            r["upstream_after"],
            r["syns_dropped"].as_array().map_or("—".to_string(), |a| a.iter().map(|e| format!("{}: {}", e[0], e[1])).collect::<Vec<_>>().join(", ")),
            r["tracer"]["syn_retransmits"],
            r["write_block_s"].as_f64().unwrap_or(0.0),
            r["tracer"]["verdict"].as_str().unwrap_or("none"),
            super::report::agrees(r),
        );
    }
    s
}
/// How far the tracer's times may be from the lab clock's.
const SLACK_S: f64 = 2.0;

/// The row of `check --json` for `mountpoint`.
fn row<'a>(check: &'a Value, mountpoint: &str) -> Option<&'a Value> {
    check["output"]["mounts"].as_array()?.iter().find(|m| m["mountpoint"] == mountpoint)
}

fn check_healthy(t: &Value, problems: &mut Vec<String>) {
    // The pod's v3 mount is flagged for its own reason (a remembered
    // port), so the proxied mount's row says whether it was flagged.
    let c = &t["check_healthy"];
    let Some(r) = row(c, t["mountpoint"].as_str().unwrap_or_default()) else {
        problems.push(format!("check while healthy lists no {}", t["mountpoint"]));
        return;
    };
    if r["flagged"] != json!(false) {
        problems.push(format!("check while healthy flags the proxied mount: {r}"));
    }
    let p = &r["proxy"];
    if p["pid"] != t["stunnel_pid"] || p["comm"] != "stunnel4" {
        problems.push(format!("check names the proxy {} (pid {}), ss says stunnel4 pid {}", p["comm"], p["pid"], t["stunnel_pid"]));
    }
    let up = &t["upstream_before"];
    let seen = p["upstream"].as_array().into_iter().flatten().any(|l| {
        l["lport"] == up["sport"] && l["raddr"] == t["server"] && l["rport"] == t["tls_port"] && l["state"] == "ESTAB"
    });
    if !seen {
        problems.push(format!("check's upstream {} lacks ss's ESTAB {}:{} → {}:{}", p["upstream"], "client", up["sport"], t["server"], t["tls_port"]));
    }
    let kernel: Vec<&Value> = t["to_proxy_before"].as_array().into_iter().flatten().map(|s| &s["sport"]).collect();
    let down: Vec<&Value> = p["downstream"].as_array().into_iter().flatten().map(|l| &l["lport"]).collect();
    if down.is_empty() || !down.iter().all(|d| kernel.contains(d)) {
        problems.push(format!("check's downstream ports {down:?} are not the kernel's connections to the proxy ss saw {kernel:?}"));
    }
    let pod = &t["pod"];
    match row(c, pod["mountpoint"].as_str().unwrap_or_default()) {
        Some(r) if r["pods"] == json!([{"uid": pod["uid"], "volume": pod["volume"]}]) => {}
        Some(r) => problems.push(format!("check gives the kubelet-path mount pods {} (want {pod})", r["pods"])),
        None => problems.push("check lists no kubelet-path mount".into()),
    }
}

fn check_blocked(t: &Value, problems: &mut Vec<String>) {
    let c = &t["check_blocked"];
    if c.is_null() {
        problems.push("check was not run during the block (ss saw no SYN-SENT upstream)".into());
        return;
    }
    let ports: Vec<String> = t["syn_sent_ports"].as_array().into_iter().flatten().map(|p| format!(":{p} → ")).collect();
    let flagged = row(c, t["mountpoint"].as_str().unwrap_or_default()).is_some_and(|r| {
        r["flagged"] == json!(true)
            && r["proxy"]["problems"].as_array().into_iter().flatten().any(|m| {
                m.as_str().is_some_and(|m| m.contains("SYN-SENT") && ports.iter().any(|p| m.contains(p.as_str())))
            })
    });
    if c["status"] != json!(2) || !flagged {
        problems.push(format!("check during the block exited {} and did not flag a SYN-SENT upstream from {:?}: {}", c["status"], t["syn_sent_ports"], c["output"]));
    }
}

fn check_gone(t: &Value, problems: &mut Vec<String>) {
    let c = &t["check_gone"];
    let want = format!("nothing listens on 127.0.0.1:{}", t["local_port"]);
    let said = row(c, t["mountpoint"].as_str().unwrap_or_default()).is_some_and(|r| {
        r["proxy"]["pid"].is_null() && r["proxy"]["problems"][0].as_str().is_some_and(|m| m.starts_with(&want))
    });
    if c["status"] != json!(2) || !said {
        problems.push(format!("check after the proxy was killed exited {} without \"{want}\": {}", c["status"], c["output"]));
    }
}

/// prove --mount forced the upstream leg: each round's ports chain from
/// ss's port before prove to ss's port after it, each after port listed
/// by sock_diag, none reused (stunnel connects from an ephemeral port).
fn prove_agrees(t: &Value, problems: &mut Vec<String>) {
    let p = &t["prove"];
    let rounds: Vec<&Value> = p["output"]["rounds"].as_array().into_iter().flatten().collect();
    if p["exit"] != json!(0) || p["output"]["leg"] != "proxy_upstream" || rounds.len() != 2 {
        problems.push(format!("prove --mount of the proxied mount: exit {}, leg {}, {} rounds: {p}", p["exit"], p["output"]["leg"], rounds.len()));
        return;
    }
    let mut expect = t["prove_pre"].clone();
    for r in &rounds {
        let listed = r["ss_after"].as_array().is_some_and(|a| a.contains(&r["after"]));
        if r["before"] != expect || !listed || r["reused"] != json!(false) || r["after"] == r["before"] {
            problems.push(format!("prove round {} does not follow ss (expected before {expect}): {r}", r["round"]));
        }
        expect = r["after"].clone();
    }
    if expect != t["prove_post"] {
        problems.push(format!("prove's last upstream port {expect} is not ss's after it ({})", t["prove_post"]));
    }
}

fn dropped(t: &Value, port: &Value) -> Option<u64> {
    t["block"]["syns_dropped"].as_array()?.iter().find(|e| e[0] == *port).and_then(|e| e[1].as_u64())
}

fn secs(ns: &Value) -> f64 {
    ns.as_u64().unwrap_or(0) as f64 / 1e9
}

fn has_mount(l: &Value, m: &Value) -> bool {
    l["mounts"].as_array().is_some_and(|a| a.contains(m))
}

fn tracer_agrees(t: &Value, lines: &[Value], problems: &mut Vec<String>) -> Value {
    let mnt = &t["mountpoint"];
    let tls = &t["tls_port"];
    if !lines.iter().any(|l| l["type"] == "ports" && l["added"].as_array().is_some_and(|a| a.contains(tls)) && has_mount(l, mnt)) {
        problems.push(format!("no `ports` record adding {tls} for {mnt}"));
    }
    let up = &t["upstream_after"]["sport"];
    let connect = lines.iter().find(|l| l["type"] == "connect" && l["sport"] == *up && l["dport"] == *tls);
    match connect {
        Some(c) if c["leg"] == "proxy_upstream" && has_mount(c, mnt) && c["outcome"] == "established" => {
            let d = dropped(t, up);
            if d.is_none_or(|d| c["syn_retransmits"].as_u64() != Some(d)) {
                problems.push(format!("the upstream connect from {up} had {} SYN retransmits; nft dropped {d:?} of its SYNs", c["syn_retransmits"]));
            }
        }
        Some(c) => problems.push(format!("the upstream connect from {up} is not the mount's proxy leg: {c}")),
        None => problems.push(format!("no connect record from the upstream port {up} ss saw")),
    }
    let (w0, w1) = (secs(&t["write"]["start_ns"]), secs(&t["write"]["end_ns"]));
    let stall = lines.iter().find(|l| l["type"] == "stall_end" && l["sport"] == *up && l["dport"] == *tls);
    match stall {
        Some(s) if has_mount(s, mnt) => {
            let (end, dur) = (secs(&s["mono_ns"]), s["duration_s"].as_f64().unwrap_or(0.0));
            if (end - w1).abs() > SLACK_S || (dur - (w1 - w0)).abs() > SLACK_S {
                problems.push(format!("the upstream stall ended at {end:.1} after {dur:.1} s; the write blocked {:.1} s until {w1:.1}", w1 - w0));
            }
        }
        Some(s) => problems.push(format!("the upstream stall names no {mnt}: {s}")),
        None => problems.push(format!("no stall_end record for the upstream port {up}")),
    }
    let episode = lines.iter().find(|l| l["type"] == "episode" && l["state"] == "ended" && has_mount(l, mnt));
    let verdict = episode.map_or(Value::Null, |e| e["verdict"].clone());
    // The block drops every SYN to the TLS port, the canary's too: new
    // flows do not get through either, which is no reused flow's doing.
    if verdict != "server-or-path-down" {
        problems.push(format!("the proxy leg's episode verdict is {verdict} (want server-or-path-down: nft dropped new ports' SYNs too)"));
    }
    let kernel: Vec<&Value> = t["to_proxy_after"].as_array().into_iter().flatten().map(|s| &s["sport"]).collect();
    let leg = lines.iter().any(|l| {
        (l["type"] == "xprt_connect" || l["type"] == "xprt_reconnect")
            && l["raddr"] == "127.0.0.1"
            && l["dport"] == t["local_port"]
            && has_mount(l, mnt)
            && kernel.contains(&&l["sport"])
    });
    if !leg {
        problems.push(format!("no xprt record of the kernel's connection to the proxy from {kernel:?} naming {mnt}"));
    }
    let pod = &t["pod"];
    // Its first connect comes before its mount is listed: credited then in
    // an `attributed` record.
    let with_pod = |l: &&Value| l["pods"] == json!([{"uid": pod["uid"], "volume": pod["volume"]}]);
    if !lines.iter().filter(|l| l["type"] == "xprt_connect" || l["type"] == "attributed").any(|l| with_pod(&l)) {
        problems.push("no xprt_connect or attributed record of the kubelet-path mount carries its pod".into());
    }
    json!({"upstream_port": up, "syn_retransmits": connect.map(|c| c["syn_retransmits"].clone()), "verdict": verdict})
}

pub fn judge(truth: &Value, tracer: Option<&Vec<Value>>, with_tracer: bool) -> Value {
    let mut problems = Vec::new();
    if let Some(e) = truth["error"].as_str() {
        problems.push(format!("guest: {e}"));
    }
    let mut seen = Value::Null;
    if truth["error"].is_null() {
        check_healthy(truth, &mut problems);
        check_blocked(truth, &mut problems);
        check_gone(truth, &mut problems);
        prove_agrees(truth, &mut problems);
        if with_tracer {
            seen = tracer_agrees(truth, tracer.map_or(&[][..], |v| v.as_slice()), &mut problems);
        }
    }
    json!({
        "kind": "proxy",
        "scenario": NAME,
        "stunnel_pid": truth["stunnel_pid"],
        "prove_ports": std::iter::once(truth["prove_pre"].clone())
            .chain(truth["prove"]["output"]["rounds"].as_array().into_iter().flatten().map(|r| r["after"].clone()))
            .collect::<Vec<_>>(),
        "upstream_before": truth["upstream_before"]["sport"],
        "upstream_after": truth["upstream_after"]["sport"],
        "syn_sent_ports": truth["syn_sent_ports"],
        "syns_dropped": truth["block"]["syns_dropped"],
        "write_block_s": (secs(&truth["write"]["end_ns"]) - secs(&truth["write"]["start_ns"])),
        "tracer": seen,
        "tracer_exit": truth["tracer"]["exit"],
        "agree": if with_tracer { json!(problems.is_empty()) } else { Value::Null },
        "ok": problems.is_empty(),
        "problems": problems,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn truth() -> Value {
        let row = |problems: Value, pid: Value, up: Value| {
            json!({"mountpoint": "/mnt/proxy", "flagged": problems.as_array().is_some_and(|p| !p.is_empty()),
                   "proxy": {"pid": pid, "comm": "stunnel4", "upstream": up,
                             "downstream": [{"lport": 700}], "problems": problems}})
        };
        let pod = json!({"mountpoint": "/var/lib/kubelet/pods/u/volumes/kubernetes.io~nfs/v", "pods": [{"uid": "u", "volume": "v"}]});
        let est = json!([{"lport": 41000, "raddr": "10.99.0.1", "rport": 20490, "state": "ESTAB"}]);
        json!({"scenario": NAME, "mountpoint": "/mnt/proxy", "server": "10.99.0.1", "tls_port": 20490, "local_port": 20049,
               "pod": {"uid": "u", "volume": "v", "mountpoint": "/var/lib/kubelet/pods/u/volumes/kubernetes.io~nfs/v"},
               "stunnel_pid": 50, "upstream_before": {"sport": 41000}, "prove_pre": 40990, "prove_post": 41000,
               "prove": {"exit": 0, "output": {"leg": "proxy_upstream", "rounds": [
                   {"round": 1, "before": 40990, "after": 40994, "reused": false, "ss_after": [40994]},
                   {"round": 2, "before": 40994, "after": 41000, "reused": false, "ss_after": [41000]}]}}, "upstream_after": {"sport": 41004},
               "to_proxy_before": [{"sport": 700}], "to_proxy_after": [{"sport": 701}], "syn_sent_ports": [41004],
               "block": {"syns_dropped": [[41004, 4], [50000, 2]]},
               "write": {"start_ns": 100_000_000_000u64, "end_ns": 113_000_000_000u64},
               "check_healthy": {"status": 0, "output": {"mounts": [row(json!([]), json!(50), est), pod]}},
               "check_blocked": {"status": 2, "output": {"mounts": [row(json!(["upstream 10.99.0.2:41004 → 10.99.0.1:20490 is stuck in SYN-SENT: …"]), json!(50), json!([]))]}},
               "check_gone": {"status": 2, "output": {"mounts": [row(json!(["nothing listens on 127.0.0.1:20049: the proxy is gone"]), json!(null), json!([]))]}},
               "tracer": {"ran": true}, "error": null})
    }

    fn lines() -> Vec<Value> {
        vec![
            json!({"type": "ports", "added": [20490], "mounts": ["/mnt/proxy"]}),
            json!({"type": "connect", "sport": 41004, "dport": 20490, "leg": "proxy_upstream", "mounts": ["/mnt/proxy"],
                   "outcome": "established", "syn_retransmits": 4}),
            json!({"type": "stall_end", "sport": 41004, "dport": 20490, "mounts": ["/mnt/proxy"], "mono_ns": 113_400_000_000u64, "duration_s": 12.6}),
            json!({"type": "episode", "state": "ended", "mounts": ["/mnt/proxy"], "verdict": "server-or-path-down"}),
            json!({"type": "xprt_reconnect", "raddr": "127.0.0.1", "dport": 20049, "sport": 701, "mounts": ["/mnt/proxy"]}),
            json!({"type": "xprt_connect", "raddr": "10.99.0.1", "dport": 2049, "sport": 800, "pods": [{"uid": "u", "volume": "v"}]}),
        ]
    }

    #[test]
    fn a_tracer_that_matches_ss_nft_and_the_clock_agrees() {
        let v = judge(&truth(), Some(&lines()), true);
        assert_eq!(v["ok"], json!(true), "{v}");
    }

    #[test]
    fn each_disagreement_fails() {
        let bad: Vec<(&str, Box<dyn Fn(&mut Value, &mut Vec<Value>)>)> = vec![
            ("wrong proxy pid", Box::new(|t, _| t["stunnel_pid"] = json!(51))),
            ("upstream port not ss's", Box::new(|t, _| t["upstream_before"]["sport"] = json!(41001))),
            ("healthy flagged", Box::new(|t, _| t["check_healthy"]["output"]["mounts"][0]["flagged"] = json!(true))),
            ("block not flagged", Box::new(|t, _| t["check_blocked"]["status"] = json!(0))),
            ("stuck port not ss's", Box::new(|t, _| t["syn_sent_ports"] = json!([41006]))),
            ("gone not said", Box::new(|t, _| t["check_gone"]["output"]["mounts"][0]["proxy"]["problems"] = json!([]))),
            ("retransmits not nft's", Box::new(|_, l| l[1]["syn_retransmits"] = json!(3))),
            ("connect not the mount's leg", Box::new(|_, l| l[1]["leg"] = Value::Null)),
            ("stall too long", Box::new(|_, l| l[2]["duration_s"] = json!(16.0))),
            ("stall elsewhere", Box::new(|_, l| l[2]["mounts"] = json!([]))),
            ("reuse verdict", Box::new(|_, l| l[3]["verdict"] = json!("reused-flow-dropped"))),
            ("kernel leg port", Box::new(|_, l| l[4]["sport"] = json!(702))),
            ("no pod", Box::new(|_, l| l[5]["pods"] = json!([]))),
            ("port never watched", Box::new(|_, l| l[0]["added"] = json!([2049]))),
            ("prove's first port not ss's", Box::new(|t, _| t["prove_pre"] = json!(40991))),
            ("prove's ports do not chain", Box::new(|t, _| t["prove"]["output"]["rounds"][1]["before"] = json!(40995))),
            ("prove's after not listed", Box::new(|t, _| t["prove"]["output"]["rounds"][0]["ss_after"] = json!([]))),
            ("prove forced the kernel's leg", Box::new(|t, _| t["prove"]["output"]["leg"] = json!("transport"))),
        ];
        for (what, f) in bad {
            let (mut t, mut l) = (truth(), lines());
            f(&mut t, &mut l);
            assert_eq!(judge(&t, Some(&l), true)["ok"], json!(false), "{what}");
        }
    }
}
