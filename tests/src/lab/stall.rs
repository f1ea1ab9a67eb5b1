//! The stall scenarios (issue 5): a mount through the middlebox, its
//! connection aborted so that the router and the server still hold the old
//! flow, then one write timed. The write's block is the ground truth for how
//! long the mount hung; `ss` gives the ports and the router's counter the
//! SYNs it dropped.
use std::{
    path::{Path, PathBuf},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::{
    middlebox::{self, Middlebox},
    net, out, scenario, sys,
    tracer::{Finished, Tracer},
};

pub const VERSIONS: &[&str] = &["3", "4.0", "4.1"];

/// `stall-v4.0` → `4.0`.
pub fn parse(name: &str) -> Option<&'static str> {
    let v = name.strip_prefix("stall-v")?;
    VERSIONS.iter().copied().find(|x| *x == v)
}

/// The scenario's truth record when the middlebox could not be built.
pub fn cannot_run(vers: &str, why: &str) -> bool {
    out::emit(&json!({"kind": "truth", "scenario": format!("stall-v{vers}"), "vers": vers, "stall": null,
                      "tracer": {"ran": false}, "error": why}));
    false
}

/// Longer than any stall this model makes (tracked timeout plus SYN backoff,
/// or the NFSv4 lease that ends it): the write is given up after this.
const WRITE_LIMIT: Duration = Duration::from_secs(180);

/// Runs one stall scenario; emits its `truth` record and the tracer's lines.
pub fn run(mb: &Middlebox, vers: &str, with_tracer: bool) -> bool {
    let name = format!("stall-v{vers}");
    let mnt = PathBuf::from(format!("/mnt/{name}"));
    let (src, opts) = scenario::mount_args(middlebox::SERVER, vers);
    let mut truth = json!({
        "kind": "truth",
        "scenario": name,
        "vers": vers,
        "options": "default",
        "mount_options": opts,
        "mountpoint": mnt,
        "server": middlebox::SERVER,
        "client": middlebox::CLIENT,
        "tracked_timeout_s": middlebox::TRACKED_TIMEOUT_S,
        "ports": [],
        "stall": null,
        "tracer": {"ran": false},
        "error": null,
    });
    let mut finished = None;
    let res = run_inner(mb, &mnt, &src, &opts, with_tracer, &mut truth, &mut finished);
    if let Some(f) = finished {
        truth["tracer"] = f.emit(&name);
    }
    let ok = res.is_ok();
    if let Err(e) = res {
        truth["error"] = json!(format!("{e:#}"));
    }
    out::emit(&truth);
    if let Err(e) = scenario::unmount_from(&mb.client, &mnt, middlebox::SERVER) {
        out::log(format!("{name}: {e:#}"));
    }
    ok
}

fn run_inner(
    mb: &Middlebox,
    mnt: &Path,
    src: &str,
    opts: &str,
    with_tracer: bool,
    truth: &mut Value,
    finished: &mut Option<Finished>,
) -> Result<()> {
    let before = scenario::mount_fresh(&mb.client, middlebox::SERVER, src, opts, mnt).context("through the middlebox")?;
    truth["ports"].as_array_mut().expect("array").push(json!(before.local_port));

    let tracer = if with_tracer { Some(Tracer::start()?) } else { None };
    let res = stall_once(mb, mnt, &before, truth);
    if let Some(t) = tracer {
        // The reader drains every 20 ms; let it print the end of the stall.
        std::thread::sleep(Duration::from_millis(500));
        *finished = Some(t.stop());
    }
    res
}

fn stall_once(mb: &Middlebox, mnt: &Path, before: &net::Sock, truth: &mut Value) -> Result<()> {
    let server = middlebox::SERVER;
    // A write just before the abort refreshes the router's entry: it then
    // expires a known time (the tracked timeout) after this.
    std::fs::write(mnt.join("before-abort"), b"x").context("writing before the abort")?;
    let drops_before = mb.forward_drops()?;
    let t_abort = sys::mono_ns();
    let killed = mb.abort_unseen()?;
    if !killed.iter().any(|s| s.cookie == before.cookie) {
        bail!("ss -K did not report killing sk:{} (it listed {killed:?})", before.cookie);
    }

    // The write runs in a thread: a hard mount blocks for as long as the
    // reconnect is held back. Its start and end are the ground truth.
    let path = mnt.join("after-abort");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let t0 = sys::mono_ns();
        let r = std::fs::write(&path, b"x");
        let _ = tx.send((r, t0, sys::mono_ns()));
    });
    let start = Instant::now();
    let mut syn_ports: Vec<u16> = Vec::new();
    let (write_start, write_end) = loop {
        match rx.recv_timeout(Duration::from_millis(250)) {
            Ok((r, t0, t1)) => {
                r.context("the write after the abort failed")?;
                break (t0, t1);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(e) => bail!("the writer thread died: {e}"),
        }
        // What the client is trying meanwhile (SYN-SENT from which port).
        for s in net::sockets_to(&mb.client, server)? {
            if s.state == "SYN-SENT" && !syn_ports.contains(&s.local_port) {
                syn_ports.push(s.local_port);
            }
        }
        if start.elapsed() > WRITE_LIMIT {
            bail!("the write after the abort still blocks after {} s", WRITE_LIMIT.as_secs());
        }
    };
    let after = net::established_to(&mb.client, server)?.context("no ESTAB connection after the write returned")?;
    let drops = mb.forward_drops()?.saturating_sub(drops_before);
    let block_s = (write_end.saturating_sub(write_start)) as f64 / 1e9;
    out::log(format!(
        "stall: port {} -> {}, write blocked {block_s:.2} s, router dropped {drops} SYN(s), SYN-SENT ports seen {syn_ports:?}",
        before.local_port, after.local_port
    ));
    truth["ports"].as_array_mut().expect("array").push(json!(after.local_port));
    truth["stall"] = json!({
        "before": before.local_port,
        "after": after.local_port,
        "same_port": before.local_port == after.local_port,
        "before_sk": before.cookie,
        "after_sk": after.cookie,
        "abort_ns": t_abort,
        "write_start_ns": write_start,
        "write_end_ns": write_end,
        "block_s": (block_s * 1000.0).round() / 1000.0,
        "syn_drops": drops,
        "syn_sent_ports": syn_ports,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(parse("stall-v4.0"), Some("4.0"));
        assert_eq!(parse("stall-v4.1"), Some("4.1"));
        assert_eq!(parse("stall-v3"), Some("3"));
        assert_eq!(parse("stall-v4.2"), None);
        assert_eq!(parse("v4.0-default"), None);
    }
}
