//! Judgement of `late-sunrpc` (issue 6: "sunrpc loaded later"): the tracer
//! started before the guest loaded any module. Its `attached` record must
//! say the SunRPC hooks wait for the module, a later `hooks` record must
//! show them attached, and the transport of the mount made afterwards must
//! appear as an `xprt_connect` from the source port `ss` saw.
use serde_json::{Value, json};

pub const NAME: &str = "late-sunrpc";

fn is_sunrpc_hook(h: &Value) -> bool {
    h["kind"] == "raw_tracepoint"
}

pub fn judge(truth: &Value, tracer: Option<&Vec<Value>>, with_tracer: bool) -> Value {
    let mut problems: Vec<String> = Vec::new();
    if let Some(e) = truth["error"].as_str() {
        problems.push(format!("guest: {e}"));
    }
    if truth["sunrpc_absent_at_start"] != json!(true) {
        problems.push("sunrpc was loaded before the tracer started: nothing was tested".into());
    }
    let empty = Vec::new();
    let lines = tracer.unwrap_or(&empty);
    let (mut waiting, mut attached_later, mut xprt_port) = (0, 0, Value::Null);
    if with_tracer && truth["error"].is_null() {
        let start: Vec<&Value> = lines
            .iter()
            .find(|l| l["type"] == "attached")
            .and_then(|a| a["hooks"].as_array())
            .map(|hs| hs.iter().filter(|h| is_sunrpc_hook(h)).collect())
            .unwrap_or_default();
        waiting = start.iter().filter(|h| h["attached"] == json!(false) && h["detail"].as_str().is_some_and(|d| d.contains("not loaded"))).count();
        if start.is_empty() || waiting != start.len() {
            problems.push(format!(
                "at start {waiting} of {} SunRPC hooks were reported waiting for the module: {start:?}",
                start.len()
            ));
        }
        let later: Vec<&Value> = lines
            .iter()
            .filter(|l| l["type"] == "hooks")
            .flat_map(|l| l["hooks"].as_array().into_iter().flatten())
            .filter(|h| is_sunrpc_hook(h))
            .collect();
        attached_later = later.iter().filter(|h| h["attached"] == json!(true)).count();
        if !later.iter().any(|h| h["name"] == "rpc_socket_connect" && h["attached"] == json!(true)) {
            problems.push(format!("no `hooks` record with rpc_socket_connect attached after sunrpc loaded ({} SunRPC hooks listed)", later.len()));
        }
        let server = truth["server"].as_str().unwrap_or_default();
        let connects: Vec<&Value> =
            lines.iter().filter(|l| l["type"] == "xprt_connect" && l["raddr"] == server && l["dport"] == 2049).collect();
        xprt_port = connects.first().map_or(Value::Null, |c| c["sport"].clone());
        if !connects.iter().any(|c| c["sport"] == truth["port"]) {
            problems.push(format!(
                "no xprt_connect from port {} (ss) after the late load; the tracer's: {:?}",
                truth["port"],
                connects.iter().map(|c| &c["sport"]).collect::<Vec<_>>()
            ));
        }
    }
    json!({
        "kind": "late",
        "scenario": NAME,
        "sunrpc_absent_at_start": truth["sunrpc_absent_at_start"],
        "hooks_waiting_at_start": waiting,
        "hooks_attached_later": attached_later,
        "truth_port": truth["port"],
        "tracer_xprt_port": xprt_port,
        "tracer_exit": truth["tracer"]["exit"],
        "agree": if with_tracer { json!(problems.is_empty()) } else { Value::Null },
        "ok": problems.is_empty(),
        "problems": problems,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(name: &str, attached: bool, detail: &str) -> Value {
        json!({"name": name, "kind": "raw_tracepoint", "attached": attached, "detail": detail})
    }

    fn lines(later: bool, port: u64) -> Vec<Value> {
        let mut v = vec![json!({"type": "attached", "hooks": [
            {"name": "inet_sock_set_state", "kind": "tracepoint", "attached": true, "detail": "attached"},
            hook("rpc_socket_connect", false, "sunrpc module not loaded: attached when it loads"),
        ]})];
        if later {
            v.push(json!({"type": "hooks", "hooks": [hook("rpc_socket_connect", true, "attached")]}));
        }
        v.push(json!({"type": "xprt_connect", "raddr": "10.99.0.1", "dport": 2049, "sport": port}));
        v
    }

    fn truth() -> Value {
        json!({"scenario": NAME, "server": "10.99.0.1", "sunrpc_absent_at_start": true, "port": 901,
               "tracer": {"ran": true}, "error": null})
    }

    #[test]
    fn a_late_attach_that_sees_the_mount_agrees() {
        let v = judge(&truth(), Some(&lines(true, 901)), true);
        assert_eq!(v["ok"], json!(true), "{v}");
    }

    #[test]
    fn no_late_attach_or_a_wrong_port_fails() {
        assert_eq!(judge(&truth(), Some(&lines(false, 901)), true)["ok"], json!(false));
        assert_eq!(judge(&truth(), Some(&lines(true, 902)), true)["ok"], json!(false));
        let mut t = truth();
        t["sunrpc_absent_at_start"] = json!(false);
        assert_eq!(judge(&t, Some(&lines(true, 901)), true)["ok"], json!(false));
    }
}
