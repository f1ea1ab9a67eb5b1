//! Judgement of the `experiment` scenario (issue 13): `nfs-trace prove
//! --server` beside a busy v4.1 production mount (tests/src/lab/experiment.rs).
//!
//! Ground truth: nft's SYN count per source port in the client namespace
//! over the whole experiment, `ss` on the production connection before and
//! after, the production writer's count of failed writes, the guest's mount
//! table afterwards; and, where the same guest ran them, the reconnect
//! scenarios' `ss` results for each version and option.
//!
//! Passes when: both prove runs exit 0 or 3 with a `prove-server` record;
//! the sets of the production mount's version are skipped naming it (the
//! kernel would share its transport) and every other set was tested; every
//! port a tested set reports is one nft saw SYNs from, at least as many
//! SYNs as the table has connects from it (a "same port" reconnect needs a
//! second SYN from that port); the production connection is the same
//! socket after as before and no write failed; nothing is left mounted (no
//! test mount in any process's table, the client namespace's NFS
//! superblocks back to the production mount's); prove stopped by SIGTERM
//! mid-round exits 1 saying so and removes its directory, SIGKILL leaves no
//! mount; a server nobody answers is given up after `--timeout`; and each
//! tested set's same/new equals the reconnect scenario's for that version
//! and option.
use std::{collections::BTreeMap, fmt::Write as _};

use serde_json::{Value, json};

use super::report::KernelRun;

pub const NAME: &str = "experiment";

/// The reconnect scenario's verdict for `vers`/`noresvport` with the
/// forcing prove used: Some(true) when every reconnect kept the port.
fn matrix_same(earlier: &[Value], vers: &str, noresvport: bool, method: &str) -> Option<bool> {
    let name = format!("v{vers}-{}", if noresvport { "noresvport" } else { "default" });
    let r = earlier.iter().find(|r| r["scenario"] == name.as_str())?;
    let want = if method.starts_with("sysfs") { "sysfs-dstaddr" } else { "ss-kill" };
    let same: Vec<bool> =
        r["reconnects"].as_array()?.iter().filter(|x| x["method"] == want).filter_map(|x| x["same_port"].as_bool()).collect();
    if same.is_empty() || !(same.iter().all(|s| *s) || same.iter().all(|s| !*s)) {
        return None;
    }
    Some(same[0])
}

pub fn judge(truth: &Value, earlier: &[Value], with_tracer: bool) -> Value {
    let mut problems: Vec<String> = Vec::new();
    let mut rows: Vec<Value> = Vec::new();
    if let Some(e) = truth["error"].as_str() {
        problems.push(format!("guest: {e}"));
    }
    let x = &truth["experiment"];
    if with_tracer && truth["error"].is_null() {
        let prod = truth["prod"].as_str().unwrap_or("?");
        let prod_vers = truth["prod_vers"].as_str().unwrap_or("?");
        // Connects per port the tables claim: each set's first port is its
        // mount's connect, each later one a reconnect.
        let mut claimed: BTreeMap<u64, u64> = BTreeMap::new();
        for p in x["proves"].as_array().into_iter().flatten() {
            let out = &p["output"];
            if !matches!(p["exit"].as_i64(), Some(0 | 3)) || out["type"] != "prove-server" {
                problems.push(format!("prove --server {} exited {} with {}: {}", p["spec"], p["exit"], out, p["stderr"]));
                continue;
            }
            if out["left_mounted"].as_array().is_none_or(|l| !l.is_empty()) {
                problems.push(format!("prove --server {} says it left mounted: {}", p["spec"], out["left_mounted"]));
            }
            for s in out["sets"].as_array().into_iter().flatten() {
                let opts = s["options"].as_str().unwrap_or("?");
                let vers = s["vers"].as_str().unwrap_or("?");
                let same_as_prod = vers == prod_vers;
                match (s["result"].as_str(), same_as_prod) {
                    (Some("skipped"), true) if s["why"].as_str().is_some_and(|w| w.contains(prod)) => {}
                    (Some("skipped"), true) => problems.push(format!("-o {opts}: skipped without naming {prod}: {}", s["why"])),
                    (r, true) => problems.push(format!("-o {opts}: {} although {prod} is mounted with vers={prod_vers} (shared transport)", r.unwrap_or("?"))),
                    (Some("tested"), false) => {}
                    (r, false) => problems.push(format!("-o {opts}: {} ({}), want tested", r.unwrap_or("?"), s)),
                }
                if s["result"] != "tested" {
                    rows.push(json!({"options": opts, "vers": vers, "result": s["result"]}));
                    continue;
                }
                let ports: Vec<u64> = s["ports"].as_array().into_iter().flatten().filter_map(Value::as_u64).collect();
                for p in &ports {
                    *claimed.entry(*p).or_default() += 1;
                }
                let reused = s["reused"].as_u64().unwrap_or(0);
                let reconnects = s["reconnects"].as_u64().unwrap_or(0);
                let pairs_same = ports.windows(2).filter(|w| w[0] == w[1]).count() as u64;
                if pairs_same != reused || reconnects == 0 || ports.len() as u64 != reconnects + 1 {
                    problems.push(format!("-o {opts}: ports {ports:?} do not fit reused {reused} of {reconnects}"));
                }
                let method = s["rounds"][0]["method"].as_str().unwrap_or("");
                let vers = s["mounted_vers"].as_str().unwrap_or(vers);
                let noresvport = s["mounted_noresvport"].as_bool().unwrap_or(false);
                let matrix = matrix_same(earlier, vers, noresvport, method);
                let same = reused == reconnects && reconnects > 0;
                if let Some(m) = matrix
                    && m != same
                    && (reused == 0 || reused == reconnects)
                {
                    problems.push(format!(
                        "-o {opts}: prove says {} but the v{vers} reconnect scenario's ss saw {}",
                        if same { "same port" } else { "new port" },
                        if m { "the same port" } else { "new ports" }
                    ));
                }
                rows.push(json!({"options": opts, "vers": vers, "noresvport": noresvport, "result": "tested", "ports": ports,
                                 "reused": reused, "reconnects": reconnects, "method": method, "matrix_same": matrix,
                                 "reserved": s["reserved"]}));
            }
        }
        let syns: BTreeMap<u64, u64> = x["syns"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.parse().ok()?, v.as_u64()?)))
            .collect();
        for (port, n) in &claimed {
            match syns.get(port) {
                None => problems.push(format!("port {port}: in prove's table, but nft saw no SYN from it")),
                Some(s) if s < n => problems.push(format!("port {port}: {n} connect(s) in prove's tables, nft saw {s} SYN(s)")),
                Some(_) => {}
            }
        }
        let human = &x["human"];
        let json_exit = x["proves"].as_array().and_then(|p| p.last()).map(|p| p["exit"].clone());
        if Some(&human["exit"]) != json_exit.as_ref() || !human["text"].as_str().is_some_and(|t| t.contains("skipped: ") && t.contains("Nothing is left mounted")) {
            problems.push(format!("the human table (exit {}) does not match the JSON run (exit {json_exit:?}): {}", human["exit"], human["text"]));
        }
        let (b, a) = (&x["prod_before"], &x["prod_after"]);
        if a.is_null() || a["port"] != b["port"] || a["sk"] != b["sk"] {
            problems.push(format!("the production connection changed: {b} before, {a} after"));
        }
        if x["writes"]["failed"].as_u64() != Some(0) || x["writes"]["ok"].as_u64().unwrap_or(0) < 5 {
            problems.push(format!("production writes: {}", x["writes"]));
        }
        let term = &x["sigterm"];
        if term["mount_seen"] != true
            || term["exit"] != 1
            || !term["stderr_last"].as_str().is_some_and(|e| e.contains("interrupted"))
            || term["dirs_left"].as_array().is_none_or(|d| !d.is_empty())
        {
            problems.push(format!("SIGTERM mid-run: want exit 1 saying interrupted, its directory removed: {term}"));
        }
        if x["sigkill"]["mount_seen"] != true || x["sigkill"]["killed_by"] != 9 {
            problems.push(format!("SIGKILL mid-run did not happen as planned: {}", x["sigkill"]));
        }
        let dead = &x["dead_server"];
        let dead_set = &dead["output"]["sets"][0];
        if dead["exit"] != 1
            || dead_set["result"] != "mount-failed"
            || !dead_set["error"].as_str().is_some_and(|e| e.contains("did not finish within 5 s"))
        {
            problems.push(format!("a server nobody answers: want exit 1 and the mount given up after --timeout 5: {dead}"));
        }
        if x["volumes_after"] != x["volumes_before"] {
            problems.push(format!("NFS superblocks left in the client namespace: {} before, {} after", x["volumes_before"], x["volumes_after"]));
        }
        for k in ["left_mounted", "left_dirs", "test_mounts_anywhere"] {
            if x[k].as_array().is_none_or(|a| !a.is_empty()) {
                problems.push(format!("{k}: {}", x[k]));
            }
        }
        if rows.iter().filter(|r| r["result"] == "tested").count() < 2 {
            problems.push("fewer than two option sets were tested".into());
        }
    }
    json!({
        "scenario": NAME,
        "kind": "experiment",
        "ok": problems.is_empty(),
        "agree": problems.is_empty(),
        "sets": rows,
        "prod": {"before": x["prod_before"], "after": x["prod_after"], "writes": x["writes"]},
        "seconds": x["seconds"],
        "problems": problems,
    })
}

/// One row per option set: what `prove --server` found, against the
/// reconnect scenario's `ss`.
pub fn table(runs: &[KernelRun]) -> String {
    let rows: Vec<(&KernelRun, &Value)> = runs
        .iter()
        .flat_map(|run| run.results.iter().filter(|r| r["kind"] == "experiment").map(move |r| (run, r)))
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "| Kernel | Options | Result | Ports (prove) | Port on reconnect | Reconnect scenario (ss) | Production connection kept |\n|---|---|---|---|---|---|---|\n",
    );
    for (run, r) in rows {
        let kept = if r["problems"].as_array().is_some_and(|p| p.iter().any(|p| p.as_str().is_some_and(|p| p.contains("production")))) {
            "✘"
        } else {
            "✔"
        };
        for set in r["sets"].as_array().into_iter().flatten() {
            let ports: Vec<String> = set["ports"].as_array().into_iter().flatten().map(|p| p.to_string()).collect();
            let on = match (set["reused"].as_u64(), set["reconnects"].as_u64()) {
                (Some(0), Some(_)) => "new".to_string(),
                (Some(a), Some(b)) if a == b => "same".to_string(),
                (Some(a), Some(b)) => format!("same {a} of {b}"),
                _ => "—".into(),
            };
            let matrix = match set["matrix_same"].as_bool() {
                Some(true) => "same port",
                Some(false) => "new port",
                None => "—",
            };
            let _ = writeln!(
                s,
                "| {} | `{}` | {} | {} | {on} | {matrix} | {kept} |",
                run.line,
                set["options"].as_str().unwrap_or("?"),
                set["result"].as_str().unwrap_or("?"),
                if ports.is_empty() { "—".into() } else { ports.join(" → ") },
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(options: &str, vers: &str, ports: &[u64], method: &str) -> Value {
        let reused = ports.windows(2).filter(|w| w[0] == w[1]).count();
        json!({"options": options, "vers": vers, "noresvport": options.contains("noresvport"), "result": "tested",
               "mounted_vers": vers, "mounted_noresvport": options.contains("noresvport"), "ports": ports,
               "reused": reused, "reconnects": ports.len() - 1, "reserved": ports.iter().all(|p| *p < 1024),
               "rounds": [{"method": method}]})
    }

    fn truth() -> Value {
        let skipped = |o: &str| json!({"options": o, "vers": "4.1", "result": "skipped", "why": "/mnt/experiment-prod is mounted here with vers=4.1"});
        json!({"scenario": NAME, "error": null, "prod": "/mnt/experiment-prod", "prod_vers": "4.1", "experiment": {
            "prod_before": {"port": 700, "sk": "a"}, "prod_after": {"port": 700, "sk": "a"},
            "writes": {"ok": 40, "failed": 0},
            "proves": [
                {"spec": "10.99.0.1:/export", "exit": 3, "output": {"type": "prove-server", "left_mounted": [], "sets": [set("vers=3", "3", &[801, 801, 801], "sysfs dstaddr")]}},
                {"spec": "10.99.0.1:/", "exit": 0, "output": {"type": "prove-server", "left_mounted": [], "sets": [
                    skipped("vers=4.1"), set("vers=4.2", "4.2", &[40000, 40010, 40020], "sysfs dstaddr")]}},
            ],
            "syns": {"801": 3, "40000": 1, "40010": 1, "40020": 2, "50000": 1},
            "left_mounted": [], "left_dirs": [],
            "human": {"exit": 0, "text": "vers=4.1  skipped: ...\nNothing is left mounted: ..."},
            "sigterm": {"mount_seen": true, "exit": 1, "stderr_last": "nfs-trace: error: interrupted: 1 of 2 option sets tried", "dirs_left": []},
            "sigkill": {"mount_seen": true, "killed_by": 9, "dirs_left": ["nfs-trace-prove.x"]},
            "dead_server": {"exit": 1, "output": {"sets": [{"result": "mount-failed", "error": "mount.nfs did not finish within 5 s (--timeout)"}]}},
            "volumes_before": ["v4 0a630001 801 0:50 1:2 no"], "volumes_after": ["v4 0a630001 801 0:50 1:2 no"],
            "test_mounts_anywhere": [],
        }})
    }

    fn earlier() -> Vec<Value> {
        let r = |name: &str, same: bool| json!({"scenario": name, "reconnects": [{"method": "sysfs-dstaddr", "same_port": same}]});
        vec![r("v3-default", true), r("v4.2-default", false)]
    }

    #[test]
    fn a_run_that_matches_its_truth_passes() {
        let r = judge(&truth(), &earlier(), true);
        assert_eq!(r["problems"], json!([]), "{r}");
        assert!(table(&[]).is_empty());
    }

    #[test]
    fn each_kind_of_disagreement_is_named() {
        type Tamper = Box<dyn Fn(&mut Value)>;
        let cases: Vec<(&str, Tamper)> = vec![
            ("nft saw 1 SYN", Box::new(|t| t["experiment"]["syns"]["801"] = json!(1))),
            ("nft saw no SYN", Box::new(|t| t["experiment"]["syns"].as_object_mut().unwrap().remove("40010").map(|_| ()).unwrap())),
            ("production connection changed", Box::new(|t| t["experiment"]["prod_after"]["sk"] = json!("b"))),
            ("production writes", Box::new(|t| t["experiment"]["writes"]["failed"] = json!(1))),
            ("left_mounted", Box::new(|t| t["experiment"]["left_mounted"] = json!(["/tmp/x/set1"]))),
            ("shared transport", Box::new(|t| t["experiment"]["proves"][1]["output"]["sets"][0]["result"] = json!("tested"))),
            ("reconnect scenario's ss saw the same port", Box::new(|t| {
                t["experiment"]["proves"][0]["output"]["sets"][0] = set("vers=3", "3", &[801, 802, 803], "sysfs dstaddr");
                t["experiment"]["syns"]["802"] = json!(1);
                t["experiment"]["syns"]["803"] = json!(1);
            })),
            ("exited", Box::new(|t| t["experiment"]["proves"][0]["exit"] = json!(1))),
            ("human table", Box::new(|t| t["experiment"]["human"]["exit"] = json!(3))),
            ("SIGTERM mid-run", Box::new(|t| t["experiment"]["sigterm"]["dirs_left"] = json!(["nfs-trace-prove.y"]))),
            ("SIGKILL mid-run", Box::new(|t| t["experiment"]["sigkill"]["mount_seen"] = json!(false))),
            ("nobody answers", Box::new(|t| t["experiment"]["dead_server"]["exit"] = json!(3))),
            ("superblocks left", Box::new(|t| t["experiment"]["volumes_after"] = json!(["a", "b"]))),
            ("test_mounts_anywhere", Box::new(|t| t["experiment"]["test_mounts_anywhere"] = json!(["x"]))),
        ];
        for (want, f) in cases {
            let mut t = truth();
            f(&mut t);
            let r = judge(&t, &earlier(), true);
            assert!(r["problems"].as_array().unwrap().iter().any(|p| p.as_str().unwrap().contains(want)), "{want}: {r}");
        }
    }
}
