//! The `netns` scenario's extra truths: `nfs-trace check --json`, run from
//! the guest's root namespaces, lists every mount — the container's too —
//! each with its network namespace, and flags exactly those whose `ss -K`
//! reconnects all came back from the same port.
use serde_json::{Value, json};

pub fn check(truth: &Value) -> (Value, Vec<String>) {
    let c = &truth["check"];
    let mut problems = Vec::new();
    if c.is_null() || !c["error"].is_null() {
        problems.push(format!("check did not run: {}", c["error"].as_str().unwrap_or("no record")));
        return (json!({"agree": false}), problems);
    }
    let listed = c["output"]["mounts"].as_array().cloned().unwrap_or_default();
    let mut rows = Vec::new();
    for m in truth["mounts"].as_array().into_iter().flatten() {
        let mnt = m["mountpoint"].as_str().unwrap_or("?");
        let recs: Vec<&Value> =
            truth["reconnects"].as_array().into_iter().flatten().filter(|r| r["mount"] == m["mountpoint"]).collect();
        let reused = !recs.is_empty() && recs.iter().all(|r| r["before"] == r["after"]);
        let Some(e) = listed.iter().find(|e| e["mountpoint"] == m["mountpoint"]) else {
            problems.push(format!("check lists no {mnt} ({} netns {}; it listed {:?}; stderr {:?})", m["place"], m["netns"],
                listed.iter().map(|e| &e["mountpoint"]).collect::<Vec<_>>(), c["stderr"]));
            rows.push(json!({"mountpoint": mnt, "listed": false}));
            continue;
        };
        let netns_ok = e["netns"].as_u64().or_else(|| e["netns"].as_str()?.parse().ok()) == m["netns"].as_u64();
        if !netns_ok {
            problems.push(format!("check gives {mnt} netns {}, ss ran in netns {}", e["netns"], m["netns"]));
        }
        if e["flagged"].as_bool() != Some(reused) {
            problems.push(format!("check flagged={} for {mnt}, its ss -K reconnects {} the port", e["flagged"],
                if reused { "reused" } else { "changed" }));
        }
        rows.push(json!({"mountpoint": mnt, "listed": true, "netns": e["netns"], "flagged": e["flagged"]}));
    }
    (json!({"agree": problems.is_empty(), "exit": c["exit"], "mounts": rows}), problems)
}

/// The container's inode in the truth is the one `readlink /proc/PID/ns/net`
/// shows (`net:[N]`), and differs from the client's; both transports
/// connect from the same port.
pub fn truth_link(truth: &Value) -> Vec<String> {
    let ms = truth["mounts"].as_array().cloned().unwrap_or_default();
    let cont = ms.iter().find(|m| m["place"] == "container");
    let client = ms.iter().find(|m| m["place"] == "client");
    let mut out = Vec::new();
    match (cont, client) {
        (Some(c), Some(h)) => {
            let want = format!("net:[{}]", c["netns"]);
            if truth["container_ns_link"] != json!(want) {
                out.push(format!("truth: readlink gave {}, the container's netns is {want}", truth["container_ns_link"]));
            }
            if c["netns"] == h["netns"] {
                out.push(format!("truth: the container shares the client's netns {}", c["netns"]));
            }
            // The guest pins both transports to one port: the case only
            // the kernel's records tell apart must be the one tested.
            let ports = |m: &Value| -> Vec<u64> {
                truth["transports"].as_array().into_iter().flatten().filter(|t| t["mount"] == m["mountpoint"]).filter_map(|t| t["port"].as_u64()).collect()
            };
            let (pc, ph) = (ports(c), ports(h));
            if pc.is_empty() || pc != ph {
                out.push(format!("truth: the container's transports connect from ports {pc:?}, the client's from {ph:?}: not the one shared port"));
            }
        }
        _ => out.push("truth: the netns scenario needs a client and a container mount".into()),
    }
    out
}
