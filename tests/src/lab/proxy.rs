//! `proxy` (issue 14): an NFS mount through a local TLS proxy, the
//! efs-utils v1 topology. Debian's stunnel4 runs twice: in the client
//! namespace as the client-side proxy on 127.0.0.1:20049, and on the
//! server as the TLS end that forwards to nfsd. TLS with a pre-shared key
//! (no certificate to make). The client mounts `127.0.0.1:/` with
//! `vers=4.1,port=20049`, as efs-utils does; the kernel never connects to
//! the server itself.
//!
//! The upstream leg (stunnel's connection to the server's TLS port) is
//! killed with `ss -K` while nft in the client namespace drops every SYN to
//! that port for [`BLOCK`], counting them per source port; a write is timed
//! across it. A second mount, direct v3, sits under a kubelet-shaped path.
//! `nfs-trace check --json` runs while healthy, during the block and after
//! the client-side stunnel is killed.
//!
//! Ground truth: `ss -tnp` (stunnel's pid and its upstream sockets), the
//! nft counters, the lab clock around the block and the write, check's
//! exit status.
use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::{
    cmd,
    net::{ClientNs, SERVER, Sock, parse_ss},
    out, scenario, sys,
    tracer::{BINARY, Tracer},
};

pub const NAME: &str = "proxy";
pub const MNT: &str = "/mnt/proxy";
/// The server-side TLS port: not the NFS port, so the tracer must learn it
/// from the proxy to watch it.
pub const TLS_PORT: u16 = 20490;
pub const LOCAL_PORT: u16 = 20049;
/// How long SYNs to the TLS port are dropped after the upstream is killed.
pub const BLOCK: Duration = Duration::from_secs(12);
pub const POD_UID: &str = "8d5e1f0a-3c2b-4e71-9a55-0d6f2e7b1c44";
pub const POD_VOLUME: &str = "shared-data";
const T: Duration = Duration::from_secs(20);
const PSK: &str = "/tmp/stunnel.psk";

fn pod_mount() -> String {
    format!("/var/lib/kubelet/pods/{POD_UID}/volumes/kubernetes.io~nfs/{POD_VOLUME}")
}

/// stunnel's configuration: foreground, no pid file, PSK ciphers only.
fn conf(name: &str, client: bool, accept: &str, connect: &str) -> Result<String> {
    let path = format!("/tmp/stunnel-{name}.conf");
    let text = format!(
        "foreground = yes\npid =\ndebug = 4\n[nfs]\nclient = {}\naccept = {accept}\nconnect = {connect}\n\
         PSKsecrets = {PSK}\nciphers = PSK\nTIMEOUTconnect = 60\n",
        if client { "yes" } else { "no" }
    );
    std::fs::write(&path, text).with_context(|| format!("cannot write {path}"))?;
    Ok(path)
}

/// Its log, for when it does not come up.
fn log_path(name: &str) -> String {
    format!("/tmp/stunnel-{name}.log")
}

fn start(mut c: Command, name: &str) -> Result<Child> {
    let log = std::fs::File::create(log_path(name)).context("cannot create stunnel's log")?;
    c.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
    c.spawn().with_context(|| format!("cannot start stunnel4 ({name})"))
}

fn logs() -> String {
    ["server", "client"]
        .iter()
        .map(|n| format!("{n}: {}", std::fs::read_to_string(log_path(n)).unwrap_or_default().lines().rev().take(6).collect::<Vec<_>>().join(" | ")))
        .collect::<Vec<_>>()
        .join("; ")
}

/// `ss -tnpH` lines in `ns` (or the initial namespace) matching `filter`.
fn ss(ns: Option<&ClientNs>, args: &[&str]) -> Result<String> {
    let mut c = match ns {
        Some(ns) => ns.command("/sbin/ss"),
        None => Command::new("/sbin/ss"),
    };
    cmd::run(c.args(args), T)
}

/// stunnel's sockets to the server's TLS port in the client namespace.
fn upstream(ns: &ClientNs) -> Result<Vec<Sock>> {
    parse_ss(&ss(Some(ns), &["-tnpaH", "dst", SERVER, "dport", "=", &format!(":{TLS_PORT}")])?)
}

/// The kernel's sockets to the local proxy.
fn to_proxy(ns: &ClientNs) -> Result<Vec<Sock>> {
    parse_ss(&ss(Some(ns), &["-tnaH", "dst", "127.0.0.1", "dport", "=", &format!(":{LOCAL_PORT}")])?)
}

/// `nfs-trace check --json` from the guest's initial namespaces (it looks
/// into the client's): its exit status and output.
fn check() -> Result<Value> {
    let o = cmd::output(Command::new(BINARY).args(["check", "--json"]), Duration::from_secs(60))?;
    let body: Value = serde_json::from_str(o.stdout.trim()).unwrap_or(Value::Null);
    Ok(json!({"status": o.status.code(), "output": body, "stderr": o.stderr}))
}

/// `nfs-trace prove --mount` of the proxied mount: JSON (judged), or the
/// table a user reads (logged for the README).
fn prove(json_out: bool) -> Result<Value> {
    let mut c = Command::new(BINARY);
    c.args(["prove", "--mount", MNT, "--yes", "--timeout", "60", "-n", if json_out { "2" } else { "1" }]);
    if json_out {
        c.arg("--json");
    }
    let o = cmd::output(&mut c, Duration::from_secs(300))?;
    if !json_out {
        for l in o.stdout.lines() {
            out::log(format!("prove: {l}"));
        }
        return Ok(Value::Null);
    }
    let body = o.stdout.lines().rev().find_map(|l| serde_json::from_str::<Value>(l).ok()).unwrap_or_else(|| json!({"unparsed": o.stdout}));
    Ok(json!({"exit": o.status.code(), "output": body, "stderr": o.stderr.trim()}))
}

/// `check` as a user reads it, on the console (the README quotes it).
fn check_text(when: &str) -> Result<()> {
    let o = cmd::output(Command::new(BINARY).arg("check"), Duration::from_secs(60))?;
    for l in o.stdout.lines() {
        out::log(format!("check {when}: {l}"));
    }
    Ok(())
}

/// Drops and counts every SYN to the TLS port, per source port, on the
/// server's side of the wire (a middlebox's drop: the client's own output
/// path must not see it, or its retransmits would fail locally, which the
/// kernel's tcp_retransmit_skb tracepoint does not report).
fn block_rules() -> String {
    format!(
        "table inet proxyblock {{
  set syns {{ type inet_service; flags dynamic; size 65535; }}
  chain inp {{
    type filter hook input priority 0; policy accept;
    ip daddr {SERVER} tcp dport {TLS_PORT} tcp flags & (syn | ack) == syn update @syns {{ tcp sport counter }} drop
  }}
}}
"
    )
}

fn syn_counts() -> Result<Vec<(u16, u64)>> {
    super::nft_counts::read(Command::new("/usr/sbin/nft"), "proxyblock", "syns")
}

/// Until both stunnels listen.
fn wait_listening(ns: &ClientNs) -> Result<()> {
    let until = std::time::Instant::now() + T;
    while !(ss(Some(ns), &["-tlnH", "sport", "=", &format!(":{LOCAL_PORT}")])?.contains("LISTEN")
        && ss(None, &["-tlnH", "sport", "=", &format!(":{TLS_PORT}")])?.contains("LISTEN"))
    {
        if std::time::Instant::now() > until {
            bail!("stunnel4 does not listen after {} s: {}", T.as_secs(), logs());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

pub fn run(ns: &ClientNs, with_tracer: bool) -> bool {
    let mut truth = json!({"kind": "truth", "scenario": NAME, "mountpoint": MNT, "server": SERVER, "tls_port": TLS_PORT,
                           "local_port": LOCAL_PORT, "pod": {"uid": POD_UID, "volume": POD_VOLUME, "mountpoint": pod_mount()},
                           "tracer": {"ran": false}, "error": null});
    let mut children: Vec<Child> = Vec::new();
    let res = run_inner(ns, with_tracer, &mut truth, &mut children);
    for m in [MNT.to_string(), pod_mount()] {
        if let Err(e) = scenario::umount(ns, Path::new(&m)) {
            out::log(format!("{NAME}: {e:#}"));
        }
    }
    if let Err(e) = scenario::wait_closed(ns, SERVER, NAME) {
        out::log(format!("{NAME}: {e:#}"));
    }
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
    out::log(format!("{NAME}: unmounted, proxies stopped"));
    if let Err(e) = &res {
        truth["error"] = json!(format!("{e:#}"));
        out::log(format!("{NAME}: {e:#}"));
    }
    let ok = truth["error"].is_null();
    out::emit(&truth);
    ok
}

fn run_inner(ns: &ClientNs, with_tracer: bool, truth: &mut Value, children: &mut Vec<Child>) -> Result<()> {
    if !Path::new("/usr/bin/stunnel4").exists() {
        bail!("no /usr/bin/stunnel4 in this guest");
    }
    std::fs::write(PSK, "nfslab:0123456789abcdef0123456789abcdef\n").context("cannot write the PSK file")?;
    std::fs::set_permissions(PSK, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    // The server's TLS end forwards to nfsd on the same host.
    let srv = conf("server", false, &format!("{SERVER}:{TLS_PORT}"), "127.0.0.1:2049")?;
    let mut c = Command::new("/usr/bin/stunnel4");
    c.arg(&srv);
    children.push(start(c, "server")?);
    let cli = conf("client", true, &format!("127.0.0.1:{LOCAL_PORT}"), &format!("{SERVER}:{TLS_PORT}"))?;
    let mut c = ns.command("/usr/bin/stunnel4");
    c.arg(&cli);
    children.push(start(c, "client")?);
    let client_pid = children[1].id();
    truth["stunnel_pid"] = json!(client_pid);
    wait_listening(ns)?;
    let tracer = if with_tracer { Some(Tracer::start()?) } else { None };
    let res = (|| -> Result<()> {
        let opts = format!("vers=4.1,port={LOCAL_PORT},noresvport");
        scenario::mount(ns, "127.0.0.1:/", &opts, Path::new(MNT)).context("mounting through the proxy")?;
        // v3: a v4.1 mount of the same server would not be a mount of its
        // own: the kernel's trunking detection (EXCHANGE_ID: the same server
        // owner) gives it the proxied mount's client and superblock.
        let (src, vopts) = scenario::mount_args(SERVER, "3");
        scenario::mount(ns, &src, &vopts, Path::new(&pod_mount())).context("mounting the pod's volume")?;
        if let Some(t) = &tracer {
            // The proxy's server port is learnt from its sockets, then watched.
            let watched = t.wait_for(Duration::from_secs(30), |v| {
                v["type"] == "ports" && v["added"].as_array().is_some_and(|a| a.iter().any(|p| p == TLS_PORT))
            });
            out::log(format!("{NAME}: the tracer {} port {TLS_PORT}", if watched { "watches" } else { "did not start watching" }));
        }
        // prove forces the upstream leg: its ports must chain from ss's
        // port before to ss's port after.
        let pre = upstream(ns)?.into_iter().find(|s| s.state == "ESTAB").context("no ESTAB upstream before prove")?;
        truth["prove_pre"] = json!(pre.local_port);
        truth["prove"] = prove(true)?;
        let post = upstream(ns)?.into_iter().find(|s| s.state == "ESTAB").context("no ESTAB upstream after prove")?;
        truth["prove_post"] = json!(post.local_port);
        prove(false)?;
        let before = upstream(ns)?;
        let est: Vec<&Sock> = before.iter().filter(|s| s.state == "ESTAB").collect();
        if est.len() != 1 {
            bail!("expected one ESTAB upstream socket of stunnel, ss shows {before:?}");
        }
        let up0 = est[0].clone();
        truth["upstream_before"] = json!({"sport": up0.local_port, "pid": up0.pid, "peer": up0.peer});
        truth["to_proxy_before"] = json!(to_proxy(ns)?.iter().map(|s| json!({"sport": s.local_port, "state": s.state})).collect::<Vec<_>>());
        truth["check_healthy"] = check()?;
        check_text("healthy")?;

        let rules = "/tmp/proxyblock.nft";
        std::fs::write(rules, block_rules())?;
        cmd::run(Command::new("/usr/sbin/nft").args(["-f", rules]), T)?;
        let t_block = sys::mono_ns();
        let killed = parse_ss(&ss(
            Some(ns),
            &["-K", "-tnpaH", "dst", SERVER, "dport", "=", &format!(":{TLS_PORT}"), "sport", "=", &format!(":{}", up0.local_port)],
        )?)?;
        truth["killed"] = json!(killed.iter().map(|s| s.local_port).collect::<Vec<_>>());
        let t_kill = sys::mono_ns();
        // A write through the mount, timed; the block lifts after BLOCK.
        let (tx, rx) = std::sync::mpsc::channel();
        let file = Path::new(MNT).join("through-proxy");
        std::thread::spawn(move || {
            let t0 = sys::mono_ns();
            let r = std::fs::write(&file, b"x");
            let _ = tx.send((r.map_err(|e| e.to_string()), t0, sys::mono_ns()));
        });
        let (mut syn_sent, mut t_unblock, mut check_blocked, mut counts) = (Vec::<u16>::new(), None, Value::Null, Vec::new());
        let w = loop {
            match rx.recv_timeout(Duration::from_millis(250)) {
                Ok(r) => break r,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(e) => bail!("the writer thread died: {e}"),
            }
            for s in upstream(ns)?.iter().filter(|s| s.state == "SYN-SENT") {
                if !syn_sent.contains(&s.local_port) {
                    syn_sent.push(s.local_port);
                }
            }
            let since = Duration::from_nanos(sys::mono_ns() - t_kill);
            if check_blocked.is_null() && !syn_sent.is_empty() && since > Duration::from_secs(3) {
                check_blocked = check()?;
                check_text("during the block")?;
            }
            if t_unblock.is_none() && since >= BLOCK {
                counts = syn_counts()?;
                cmd::run(Command::new("/usr/sbin/nft").args(["delete", "table", "inet", "proxyblock"]), T)?;
                t_unblock = Some(sys::mono_ns());
            }
            if since > Duration::from_secs(120) {
                bail!("the write through the proxy still blocks after 120 s");
            }
        };
        if t_unblock.is_none() {
            counts = syn_counts()?;
            cmd::run(Command::new("/usr/sbin/nft").args(["delete", "table", "inet", "proxyblock"]), T)?;
        }
        let (r, w0, w1) = w;
        r.map_err(|e| anyhow::anyhow!("the write through the proxy failed: {e}"))?;
        let after = upstream(ns)?;
        let up1 = after.iter().find(|s| s.state == "ESTAB").cloned().context("no ESTAB upstream after the write")?;
        out::log(format!(
            "{NAME}: upstream {} killed; SYN-SENT from {syn_sent:?}; SYNs dropped per port {counts:?}; write blocked {:.2} s; upstream now {}",
            up0.local_port,
            (w1 - w0) as f64 / 1e9,
            up1.local_port
        ));
        truth["block"] = json!({"start_ns": t_block, "kill_ns": t_kill, "end_ns": t_unblock, "syns_dropped": counts.iter().map(|(p, n)| json!([p, n])).collect::<Vec<_>>()});
        truth["write"] = json!({"start_ns": w0, "end_ns": w1});
        truth["syn_sent_ports"] = json!(syn_sent);
        truth["upstream_after"] = json!({"sport": up1.local_port, "pid": up1.pid});
        truth["to_proxy_after"] = json!(to_proxy(ns)?.iter().map(|s| json!({"sport": s.local_port, "state": s.state})).collect::<Vec<_>>());
        truth["check_blocked"] = check_blocked;
        // The proxy dies: check must say so.
        let mut client = children.remove(1);
        let _ = client.kill();
        let _ = client.wait();
        std::thread::sleep(Duration::from_millis(300));
        truth["check_gone"] = check()?;
        // Back up, so the unmounts below reach the server (a v4.1 unmount
        // with its path gone waits minutes on DESTROY_SESSION).
        let mut c = ns.command("/usr/bin/stunnel4");
        c.arg(&cli);
        children.push(start(c, "client-again")?);
        wait_listening(ns)?;
        Ok(())
    })();
    if let Some(t) = tracer {
        std::thread::sleep(Duration::from_millis(1500));
        truth["tracer"] = t.stop().emit(NAME);
    }
    res
}
