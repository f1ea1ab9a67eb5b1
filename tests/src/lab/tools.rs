//! `nfs-trace check` and `nfs-trace prove` run on the scenario's mount, with
//! `ss` before and after as their ground truth. Both run in the client
//! namespace: `prove` aborts sockets through sock_diag, which only sees the
//! caller's namespace, and both read transports from the client's sysfs
//! instance (`/sys/kernel/sunrpc` only lists the mounting namespace's).
use std::{path::Path, process::ExitStatus, time::Duration};

use anyhow::Result;
use serde_json::{Value, json};

use super::{
    cmd,
    net::{self, ClientNs},
    tracer::BINARY,
};

const CHECK_LIMIT: Duration = Duration::from_secs(30);
/// prove attaches BPF (seconds under TCG) and waits for two reconnects.
const PROVE_LIMIT: Duration = Duration::from_secs(180);

fn code(st: ExitStatus) -> Value {
    st.code().map_or(Value::Null, |c| json!(c))
}

/// The tool's single JSON line, or its raw output when it printed none.
fn parse(stdout: &str) -> Value {
    stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .unwrap_or_else(|| json!({"unparsed": stdout}))
}

/// `nfs-trace check --json`: its exit code and what it printed.
pub fn check(ns: &ClientNs) -> Result<Value> {
    let o = cmd::output(
        ns.command(BINARY).args(["check", "--json", "--sys-root", net::CLIENT_SYSFS]),
        CHECK_LIMIT,
    )?;
    Ok(json!({"exit": code(o.status), "output": parse(&o.stdout), "stderr": o.stderr.trim()}))
}

/// `nfs-trace check --json` from the guest's root namespaces (network and
/// mount), with its own default sysfs: what a host-wide check sees.
pub fn check_root() -> Result<Value> {
    let o = cmd::output(std::process::Command::new(BINARY).args(["check", "--json"]), CHECK_LIMIT)?;
    Ok(json!({"exit": code(o.status), "output": parse(&o.stdout), "stderr": o.stderr.trim()}))
}

/// `nfs-trace prove --mount M --yes --json -n 2`, with the established
/// source port from `ss` before and after.
pub fn prove(ns: &ClientNs, mnt: &Path) -> Result<Value> {
    let port = |s: Option<net::Sock>| s.map(|s| s.local_port);
    let before = port(net::established(ns)?);
    let o = cmd::output(
        ns.command(BINARY).arg("prove").arg("--mount").arg(mnt).args([
            "--yes",
            "--json",
            "-n",
            "2",
            "--sys-root",
            net::CLIENT_SYSFS,
        ]),
        PROVE_LIMIT,
    )?;
    let after = port(net::established(ns)?);
    Ok(json!({
        "exit": code(o.status),
        "output": parse(&o.stdout),
        "stderr": o.stderr.trim(),
        "ss_before": before,
        "ss_after": after,
    }))
}
