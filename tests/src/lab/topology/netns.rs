//! `netns`: a second client, a container — a long-lived process with its
//! own network namespace (a veth pair of its own into the server's) and
//! its own private mount namespace — mounts the same server address as the
//! lab's client. Both v3, both reconnected (client, container, client,
//! container). Afterwards `nfs-trace check --json` runs from the guest's
//! root namespaces and must list both mounts, each with its netns.
use std::process::{Child, Stdio};

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

use super::{MountSpec, Place};
use crate::lab::{
    net::{self, CLIENT, ClientNs, SERVER},
    sys, tools,
};

pub const NAME: &str = "netns";
/// The container's network: its own /24, routed to the server's address.
const CONT_NETNS: &str = "cont";
const CONT_GW: &str = "10.99.1.1";
const CONT_CLIENT: &str = "10.99.1.2";

pub fn run(ns: &ClientNs, with_tracer: bool) -> bool {
    let mut child = match container() {
        Ok(c) => c,
        Err(e) => return super::cannot_run(NAME, &format!("starting the container: {e:#}")),
    };
    let ok = match ClientNs::of_process(child.id()) {
        Ok(cont) => with_container(ns, &cont, child.id(), with_tracer),
        Err(e) => super::cannot_run(NAME, &format!("{e:#}")),
    };
    let _ = child.kill();
    let _ = child.wait();
    ok
}

fn with_container(ns: &ClientNs, cont: &ClientNs, pid: u32, with_tracer: bool) -> bool {
    let client = Place::client(ns);
    let container = Place { ns: cont, name: "container", proc_dir: format!("/proc/{pid}").into(), sysfs: None };
    let mounts = [
        MountSpec::new(&client, "netns-client", "3", SERVER, CLIENT, ""),
        MountSpec::new(&container, "netns-container", "3", SERVER, CONT_CLIENT, ""),
    ];
    let extra = |truth: &mut Value| -> Result<()> {
        // The truth's inodes, as a user would read them.
        let link = std::fs::read_link(format!("/proc/{pid}/ns/net")).context("readlink of the container's ns/net")?;
        truth["container_ns_link"] = json!(link.to_string_lossy());
        truth["check"] = tools::check_root().unwrap_or_else(|e| json!({"error": format!("{e:#}")}));
        Ok(())
    };
    let pin = match ResvportPin::to(PINNED_PORT) {
        Ok(p) => p,
        Err(e) => return super::cannot_run(NAME, &format!("{e:#}")),
    };
    let ok = super::run(NAME, &mounts, &[0, 1, 0, 1], with_tracer, &extra);
    drop(pin);
    ok
}

/// The one port both mounts' transports bind.
const PINNED_PORT: u16 = 733;
const MIN: &str = "/proc/sys/sunrpc/min_resvport";
const MAX: &str = "/proc/sys/sunrpc/max_resvport";

/// sunrpc's reserved-port range set to one port (a global sysctl), and set
/// back on drop. A reconnect keeps its transport's port, so the pin holds
/// for the whole scenario.
struct ResvportPin {
    min: String,
    max: String,
}

impl ResvportPin {
    fn to(port: u16) -> Result<Self> {
        let read = |f: &str| std::fs::read_to_string(f).map(|s| s.trim().to_string()).with_context(|| format!("cannot read {f}"));
        let pin = ResvportPin { min: read(MIN)?, max: read(MAX)? };
        // The kernel keeps min <= max at every write: lower min first.
        std::fs::write(MIN, port.to_string()).with_context(|| format!("cannot write {MIN}"))?;
        std::fs::write(MAX, port.to_string()).with_context(|| format!("cannot write {MAX}"))?;
        Ok(pin)
    }
}

impl Drop for ResvportPin {
    fn drop(&mut self) {
        for (f, v) in [(MAX, &self.max), (MIN, &self.min)] {
            if let Err(e) = std::fs::write(f, v) {
                crate::lab::out::log(format!("{NAME}: cannot set {f} back to {v}: {e}"));
            }
        }
    }
}

/// `ip netns add` + a veth pair, then a process that enters that network
/// namespace and unshares a private mount namespace (as `unshare --mount
/// --propagation private` would) and sleeps: the container's namespaces
/// live as long as it does.
fn container() -> Result<Child> {
    net::add_container_net(CONT_NETNS, CONT_GW, CONT_CLIENT)?;
    let netns = ClientNs::open(CONT_NETNS)?;
    let mut c = netns.command("/bin/busybox");
    c.args(["sleep", "3600"]).stdin(Stdio::null());
    // SAFETY: both calls are plain syscalls (async-signal-safe), made in
    // the forked child before exec, after the setns of `command`.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut c, sys::unshare_mounts_private);
    }
    let mut child = c.spawn().context("cannot start the container process")?;
    // Wait until it has its own mount namespace (the pre_exec ran).
    let own = std::fs::read_link("/proc/self/ns/mnt")?;
    for _ in 0..100 {
        if std::fs::read_link(format!("/proc/{}/ns/mnt", child.id())).is_ok_and(|l| l != own) {
            return Ok(child);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    anyhow::bail!("the container process never got a mount namespace of its own")
}
