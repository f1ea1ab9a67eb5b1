//! `late-sunrpc` (issue 6, bad-input table: "sunrpc loaded later"): the
//! tracer starts before any module is loaded, as on a host whose first NFS
//! mount comes after the tracer. It must say the SunRPC hooks wait for the
//! module, attach them when it loads, and then see the transport of a mount
//! made afterwards. Ground truth: the module appears in /sys/module, and
//! `ss` gives the mount's source port.
use std::{path::Path, time::Duration};

use anyhow::Result;
use serde_json::{Value, json};

use super::{
    net::{ClientNs, SERVER},
    out, scenario,
    tracer::Tracer,
};

pub const NAME: &str = "late-sunrpc";

/// Starts the tracer before the modules are loaded; records whether sunrpc
/// was absent then (the premise of the scenario). Without the tracer there
/// is nothing to test but the premise.
pub fn begin(with_tracer: bool) -> (Option<Tracer>, Value) {
    let absent = !Path::new("/sys/module/sunrpc").exists();
    let mut truth = json!({
        "kind": "truth", "scenario": NAME, "server": SERVER,
        "sunrpc_absent_at_start": absent, "tracer": {"ran": false}, "error": null,
    });
    if !with_tracer {
        return (None, truth);
    }
    match Tracer::start() {
        Ok(t) => (Some(t), truth),
        Err(e) => {
            truth["error"] = json!(format!("{e:#}"));
            (None, truth)
        }
    }
}

/// After modules, network and nfsd are up: one mount, read, port, unmount;
/// then the tracer stops and everything is reported.
pub fn finish(ns: &ClientNs, tracer: Option<Tracer>, mut truth: Value) -> bool {
    truth["sunrpc_loaded"] = json!(Path::new("/sys/module/sunrpc").exists());
    let mnt = Path::new("/mnt/late-sunrpc");
    let res = tracer.as_ref().map_or(Ok(()), |_| mount_once(ns, mnt, &mut truth));
    if let Some(t) = tracer {
        std::thread::sleep(Duration::from_millis(500));
        let f = t.stop();
        truth["tracer"] = f.emit(NAME);
    }
    if let Err(e) = res {
        truth["error"] = json!(format!("{e:#}"));
    }
    let ok = truth["error"].is_null();
    out::emit(&truth);
    ok
}

fn mount_once(ns: &ClientNs, mnt: &Path, truth: &mut Value) -> Result<()> {
    let (src, opts) = scenario::mount_args(SERVER, "4.1");
    let res = scenario::mount_fresh(ns, SERVER, &src, &opts, mnt).map(|s| {
        truth["port"] = json!(s.local_port);
        out::log(format!("{NAME}: mounted, port {}", s.local_port));
    });
    if let Err(e) = scenario::unmount_from(ns, mnt, SERVER) {
        out::log(format!("{NAME}: {e:#}"));
    }
    res
}
