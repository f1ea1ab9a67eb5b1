//! The Kubernetes DaemonSet (deploy/kubernetes) parsed as YAML and checked
//! for what running the tracer on a node needs, and its command line run
//! through the real binary (`--help` appended: every flag must parse).
use std::path::PathBuf;

use nfs_trace_tests::host::nfs_trace_bin;
use yaml_rust2::{Yaml, YamlLoader};

fn daemonset() -> Yaml {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/nfs-trace-daemonset.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut docs = YamlLoader::load_from_str(&text).expect("valid YAML");
    assert_eq!(docs.len(), 1, "one document");
    docs.remove(0)
}

fn strs(y: &Yaml) -> Vec<String> {
    y.as_vec().unwrap_or_else(|| panic!("a list: {y:?}")).iter().map(|s| s.as_str().expect("a string").to_string()).collect()
}

#[test]
fn the_daemonset_has_what_the_tracer_needs_on_a_node() {
    let d = daemonset();
    assert_eq!(d["apiVersion"].as_str(), Some("apps/v1"));
    assert_eq!(d["kind"].as_str(), Some("DaemonSet"));
    let spec = &d["spec"]["template"]["spec"];
    assert_eq!(spec["hostPID"].as_bool(), Some(true), "every process's mount table");
    assert_eq!(spec["hostNetwork"].as_bool(), Some(true), "the node's NFS client, sock_diag and canaries");
    // The selector picks the template's pods.
    let sel = d["spec"]["selector"]["matchLabels"].as_hash().expect("matchLabels");
    let labels = d["spec"]["template"]["metadata"]["labels"].as_hash().expect("labels");
    for (k, v) in sel {
        assert_eq!(labels.get(k), Some(v), "selector {k:?} not on the template");
    }
    let c = &spec["containers"][0];
    assert_eq!(c["securityContext"]["privileged"].as_bool(), Some(true), "BPF and tracepoints");
    // Each mount comes from a hostPath volume of the same path.
    let volumes = spec["volumes"].as_vec().expect("volumes");
    let mounts = c["volumeMounts"].as_vec().expect("volumeMounts");
    for want in ["/sys", "/sys/kernel/tracing", "/sys/kernel/btf"] {
        let m = mounts.iter().find(|m| m["mountPath"].as_str() == Some(want)).unwrap_or_else(|| panic!("no mount at {want}"));
        let v = volumes.iter().find(|v| v["name"] == m["name"]).unwrap_or_else(|| panic!("no volume {:?}", m["name"]));
        assert_eq!(v["hostPath"]["path"].as_str(), Some(want), "{want} must be the host's");
    }
    // The command line is the binary's: every flag parses.
    let argv: Vec<String> = strs(&c["command"]).into_iter().chain(strs(&c["args"])).collect();
    assert_eq!(argv[0], "/usr/sbin/nfs-trace");
    assert_eq!(argv[1], "watch");
    let out = std::process::Command::new(nfs_trace_bin()).args(&argv[1..]).arg("--help").output().unwrap();
    assert!(out.status.success(), "{argv:?}: {}", String::from_utf8_lossy(&out.stderr));
    // The scrape annotation names the port --metrics serves.
    let metrics = argv.iter().position(|a| a == "--metrics").map(|i| argv[i + 1].clone()).expect("--metrics");
    let port = d["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"].as_str().expect("a port annotation");
    assert!(metrics.ends_with(&format!(":{port}")), "--metrics {metrics} against annotation {port}");
}
