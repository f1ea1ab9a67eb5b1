//! The shipped alert rules (deploy/prometheus) through the real Prometheus
//! tooling: `promtool check rules` accepts them and `promtool test rules`
//! fires each alert on synthetic series shaped like the tracer's, and keeps
//! quiet where it must (nfs-trace.rules.test.yml). That the series they
//! name are the ones nfs-trace exports is checked beside the exporter
//! (nfs-trace/src/output/metrics/tests.rs). No root needed.
use std::{path::PathBuf, process::Command};

fn deploy() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus")
}

fn promtool(args: &[&str]) -> (bool, String) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(deploy())
        .output()
        .expect("promtool (apt install prometheus; cargo xtask setup does)");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn promtool_accepts_the_alert_rules() {
    let (ok, out) = promtool(&["check", "rules", "nfs-trace.rules.yml"]);
    assert!(ok, "{out}");
    assert!(out.contains("SUCCESS: 9 rules found"), "{out}");
}

#[test]
fn each_alert_fires_on_synthetic_series_and_only_then() {
    let (ok, out) = promtool(&["test", "rules", "nfs-trace.rules.test.yml"]);
    assert!(ok, "{out}");
    // Every alert of the rules file has a case that expects it to fire.
    let rules = std::fs::read_to_string(deploy().join("nfs-trace.rules.yml")).unwrap();
    let tests = std::fs::read_to_string(deploy().join("nfs-trace.rules.test.yml")).unwrap();
    for name in rules.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")) {
        let fires = tests.split("alertname: ").skip(1).any(|case| case.starts_with(name) && case.contains("exp_labels"));
        assert!(fires, "no promtool case expects {name} to fire");
    }
}

/// The Grafana dashboard is one JSON document whose every panel queries
/// Prometheus through the dashboard's data source variable.
#[test]
fn the_dashboard_is_valid_json_with_queries() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/nfs-trace-dashboard.json");
    let d: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("valid JSON");
    let panels = d["panels"].as_array().expect("panels");
    assert!(panels.len() >= 5);
    for p in panels {
        let targets = p["targets"].as_array().unwrap_or_else(|| panic!("panel {} has no targets", p["title"]));
        assert!(!targets.is_empty());
        for t in targets {
            assert!(t["expr"].as_str().is_some_and(|e| !e.is_empty()), "{t}");
            assert_eq!(t["datasource"]["uid"], "${datasource}");
        }
    }
}
