//! Issue 16 in the lab: a scenario's tracer ran with `--events`, and the
//! guest replayed what it printed with `nfs-trace report --json`
//! (`truth.replay`). The replay must say what watch said live: the same
//! `episode` records, in order, and the same summary.
use serde_json::Value;

/// What differs between the live run and its replay (empty: none).
pub fn problems(truth: &Value, lines: &[Value]) -> Vec<String> {
    let r = &truth["replay"];
    if r.is_null() {
        return vec!["the guest did not replay the recording (truth.replay missing)".into()];
    }
    if let Some(e) = r["error"].as_str() {
        return vec![format!("replay: {e}")];
    }
    if r["ok"] != Value::Bool(true) {
        return vec![format!("nfs-trace report exited {}: {}", r["exit"], r["stderr"])];
    }
    let mut out = Vec::new();
    let live: Vec<&Value> = lines.iter().filter(|l| l["type"] == "episode").collect();
    let replay: Vec<&Value> = r["episodes"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
    if live != replay {
        let brief = |v: &[&Value]| -> Vec<String> { v.iter().map(|e| format!("{} {} {}", e["id"], e["state"], e["verdict"])).collect() };
        out.push(format!("the replay's episodes differ from watch's: live {:?}, replay {:?}", brief(&live), brief(&replay)));
    }
    let summary = lines.iter().rev().find(|l| l["type"] == "summary").unwrap_or(&Value::Null);
    if *summary != r["summary"] {
        out.push("the replay's summary differs from watch's".into());
    }
    out
}

/// The replay's episode verdicts (for the report table).
pub fn verdicts(truth: &Value) -> Vec<Value> {
    truth["replay"]["episodes"].as_array().into_iter().flatten().filter(|e| e["state"] == "ended").map(|e| e["verdict"].clone()).collect()
}

/// For the judges' tests: a replay that says exactly what `lines` say.
#[cfg(test)]
pub fn faithful(truth: &mut Value, lines: &[Value]) {
    let episodes: Vec<&Value> = lines.iter().filter(|l| l["type"] == "episode").collect();
    let summary = lines.iter().rev().find(|l| l["type"] == "summary");
    truth["replay"] = serde_json::json!({"ok": true, "episodes": episodes, "summary": summary});
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_replay_must_say_what_watch_said() {
        let ep = json!({"type": "episode", "id": 1, "state": "ended", "verdict": "reused-flow-dropped"});
        let sum = json!({"type": "summary", "duration_s": 3.0});
        let lines = vec![json!({"type": "attached"}), ep.clone(), sum.clone()];
        let same = json!({"replay": {"ok": true, "episodes": [ep.clone()], "summary": sum.clone()}});
        assert!(problems(&same, &lines).is_empty());
        let other = json!({"replay": {"ok": true, "episodes": [{"type": "episode", "id": 1, "state": "ended", "verdict": "unknown"}], "summary": sum}});
        assert_eq!(problems(&other, &lines).len(), 1);
        let failed = json!({"replay": {"ok": false, "exit": "exit status: 1", "stderr": "no recording"}});
        assert!(problems(&failed, &lines)[0].contains("exited"));
        assert!(!problems(&json!({}), &lines).is_empty());
        assert_eq!(verdicts(&same), vec![json!("reused-flow-dropped")]);
    }
}
