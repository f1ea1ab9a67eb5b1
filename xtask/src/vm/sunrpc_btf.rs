//! Judgement of `sunrpc-btf` (issue 10, defect 5): the sunrpc struct
//! offsets `nfs-trace probes --json` gave its programs must equal btf-rs's
//! parse of the guest kernel's BTF (the module's split BTF, else vmlinux's),
//! an offset btf-rs cannot find must be unknown (null) in the tracer too,
//! and a SunRPC hook must be reported attached only when its records can be
//! decoded: the socket-less xprt_* hooks need rpc_xprt.addr.
use serde_json::{Value, json};

pub const NAME: &str = "sunrpc-btf";

pub fn judge(truth: &Value, with_tracer: bool) -> Value {
    let mut problems: Vec<String> = Vec::new();
    if let Some(e) = truth["error"].as_str() {
        problems.push(format!("guest: {e}"));
    }
    if truth["sunrpc_loaded"] != json!(true) {
        problems.push("sunrpc was not loaded: nothing was tested".into());
    }
    let (want, got) = (&truth["btf_rs"], &truth["tracer"]);
    if with_tracer && truth["error"].is_null() {
        if got.is_null() {
            problems.push("probes --json gave no sunrpc_types although sunrpc is loaded".into());
        }
        for field in ["xprt_addr", "srcport", "task_xprt", "task_start"] {
            if want[field] != got[field] {
                problems.push(format!("{field}: nfs-trace {} but btf-rs {} ({})", got[field], want[field], got["source"]));
            }
        }
        if want["split_btf"] == json!(true) && (want["xprt_addr"].is_null() || want["srcport"].is_null()) {
            problems.push(format!("the kernel has sunrpc BTF but btf-rs found no offsets: {want}"));
        }
        let hooks = truth["hooks"].as_array().cloned().unwrap_or_default();
        if hooks.is_empty() {
            problems.push("no SunRPC hook rows".into());
        }
        for h in &hooks {
            let name = h["name"].as_str().unwrap_or_default();
            let detail = h["detail"].as_str().unwrap_or_default();
            let attached = h["attached"] == json!(true);
            // It reads the transport through rpc_task.tk_xprt: attached exactly when that is known.
            if name == "rpc_timeout_status" && attached != (!want["task_xprt"].is_null() && !want["xprt_addr"].is_null()) {
                problems.push(format!("rpc_timeout_status attached {attached} with rpc_task.tk_xprt {}: {detail}", want["task_xprt"]));
            }
            if name.starts_with("xprt_") && want["xprt_addr"].is_null() && attached {
                problems.push(format!("{name} reported attached without rpc_xprt.addr: {detail}"));
            }
            // They need no sunrpc type: every lab kernel (4.18+) must load them.
            // (5.10's verifier once refused them: 544 bytes of stack.)
            if name.starts_with("rpc_socket_") && !attached {
                problems.push(format!("{name} not attached: {detail}"));
            }
            if attached && want["srcport"].is_null() && !detail.contains("remembered port") {
                problems.push(format!("{name} attached without saying the remembered port is unknown: {detail}"));
            }
        }
    }
    json!({
        "kind": "sunrpc_btf",
        "scenario": NAME,
        "split_btf": want["split_btf"],
        "btf_rs": want,
        "tracer": got,
        "hooks_attached": truth["hooks"].as_array().map(|h| h.iter().filter(|h| h["attached"] == json!(true)).count()),
        "agree": if with_tracer { json!(problems.is_empty()) } else { Value::Null },
        "ok": problems.is_empty(),
        "problems": problems,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn truth(want: Value, got: Value, hooks: Value) -> Value {
        json!({"scenario": NAME, "sunrpc_loaded": true, "btf_rs": want, "tracer": got, "hooks": hooks, "error": null})
    }

    #[test]
    fn offsets_must_match_and_unknown_must_not_attach() {
        let all = json!([{"name": "rpc_socket_connect", "attached": true, "detail": "attached"},
                         {"name": "xprt_destroy", "attached": true, "detail": "attached"},
                         {"name": "rpc_timeout_status", "attached": true, "detail": "attached"}]);
        let want = json!({"split_btf": true, "xprt_addr": 440, "srcport": 1290, "task_xprt": 24});
        let good = truth(want.clone(), json!({"source": "/sys/kernel/btf/sunrpc", "xprt_addr": 440, "srcport": 1290, "task_xprt": 24}), all.clone());
        assert_eq!(judge(&good, true)["ok"], true, "{}", judge(&good, true));
        let off = truth(want.clone(), json!({"source": "x", "xprt_addr": 440, "srcport": 1288, "task_xprt": 24}), all.clone());
        assert_eq!(judge(&off, true)["ok"], false);
        let task_off = truth(want.clone(), json!({"source": "x", "xprt_addr": 440, "srcport": 1290, "task_xprt": 32}), all.clone());
        assert_eq!(judge(&task_off, true)["ok"], false, "rpc_task.tk_xprt must match too");
        let mut want_start = want.clone();
        want_start["task_start"] = json!(184);
        let start_off = truth(want_start, json!({"source": "x", "xprt_addr": 440, "srcport": 1290, "task_xprt": 24, "task_start": 176}), all.clone());
        assert_eq!(judge(&start_off, true)["ok"], false, "rpc_task.tk_start must match too");
        let mut no_timeout = all.clone();
        no_timeout[2]["attached"] = json!(false);
        assert_eq!(judge(&truth(want, json!({"source": "x", "xprt_addr": 440, "srcport": 1290, "task_xprt": 24}), no_timeout), true)["ok"], false,
                   "known offsets, yet rpc_timeout_status not attached");

        // No module BTF, sunrpc a module.
        let none = json!({"split_btf": false, "xprt_addr": null, "srcport": null, "task_xprt": null});
        let unknown = json!({"source": "vmlinux", "xprt_addr": null, "srcport": null, "task_xprt": null});
        assert_eq!(judge(&truth(none.clone(), unknown.clone(), all), true)["ok"], false, "xprt_destroy cannot be attached");
        let honest = json!([{"name": "rpc_socket_connect", "attached": true, "detail": "attached; the remembered port (sock_xprt.srcport) is unknown"},
                            {"name": "xprt_destroy", "attached": false, "detail": "not attached: ... rpc_xprt.addr ..."},
                            {"name": "rpc_timeout_status", "attached": false, "detail": "not attached: ... rpc_task.tk_xprt ..."}]);
        assert_eq!(judge(&truth(none.clone(), unknown.clone(), honest), true)["ok"], true);
        let refused = json!([{"name": "rpc_socket_connect", "attached": false, "detail": "load: combined stack size of 2 calls is 544"},
                             {"name": "xprt_destroy", "attached": false, "detail": "not attached: ... rpc_xprt.addr ..."}]);
        assert_eq!(judge(&truth(none, unknown, refused), true)["ok"], false, "a socket hook the verifier refused");
    }
}
