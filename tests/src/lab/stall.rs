//! The stall scenarios (issue 5): a mount through the middlebox, its
//! connection aborted so that the router and the server still hold the old
//! flow, then one write timed. The write's block is the ground truth for how
//! long the mount hung; `ss` gives the ports and the router's counter the
//! SYNs it dropped. The outage and black-hole scenarios (issue 12) use the
//! same middlebox and timed write for the other causes of the same hang.
use std::{
    path::{Path, PathBuf},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::{
    cmd,
    middlebox::{self, Middlebox},
    net, out, scenario, sys,
    tracer::{Finished, Tracer},
};

pub const VERSIONS: &[&str] = &["3", "4.0", "4.1"];
/// The outage scenarios (issue 12): one version that reuses its port, one that does not.
pub const OUTAGE_VERSIONS: &[&str] = &["3", "4.1"];
/// The black-hole scenarios (issue 12): likewise.
pub const BLACKHOLE_VERSIONS: &[&str] = &["3", "4.1"];

/// What the middlebox does to the aborted mount: hold its reused flow
/// (`stall`), or drop everything to the server for [`OUTAGE`] (`outage`);
/// or, to a mount that is not aborted, drop its established flow for
/// as long as [`blackhole_for`] its version says (`blackhole`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Stall,
    Outage,
    Blackhole,
}

impl Kind {
    pub fn name(self, vers: &str) -> String {
        match self {
            Kind::Stall => format!("stall-v{vers}"),
            Kind::Outage => format!("outage-v{vers}"),
            Kind::Blackhole => format!("blackhole-v{vers}"),
        }
    }

    pub fn versions(self) -> &'static [&'static str] {
        match self {
            Kind::Stall => VERSIONS,
            Kind::Outage => OUTAGE_VERSIONS,
            Kind::Blackhole => BLACKHOLE_VERSIONS,
        }
    }

    /// `options` in the truth, and what goes after the version's mount options.
    fn options(self) -> Option<&'static str> {
        match self {
            Kind::Blackhole => Some(BLACKHOLE_OPTIONS),
            _ => None,
        }
    }
}

/// `stall-v4.0` → (Stall, `4.0`); `outage-v3` → (Outage, `3`).
pub fn parse(name: &str) -> Option<(Kind, &'static str)> {
    [Kind::Stall, Kind::Outage, Kind::Blackhole]
        .into_iter()
        .find_map(|k| k.versions().iter().copied().find(|v| k.name(v) == name).map(|v| (k, v)))
}

/// The scenario's truth record when the middlebox could not be built.
pub fn cannot_run(kind: Kind, vers: &str, why: &str) -> bool {
    out::emit(&json!({"kind": "truth", "scenario": kind.name(vers), "vers": vers, "stall": null,
                      "tracer": {"ran": false}, "error": why}));
    false
}

/// How long the outage drops everything: long enough for several SYN
/// retries and a 3 s canary, short enough for a run under a minute.
pub const OUTAGE: Duration = Duration::from_secs(20);
/// How long into the outage the write starts.
const WRITE_AFTER: Duration = Duration::from_secs(3);

/// How long the black hole drops a v4.1 flow: longer than the router's
/// tracked timeout (its entry for the flow, not refreshed by the black-holed
/// packets, is gone when the rule goes, so the rule alone holds the flow)
/// and than a v4 flow's user timeout (the lease, 10 s): the client gives the
/// flow up at 10 s and reconnects from a new port, through at once.
pub const BLACKHOLE: Duration = Duration::from_secs(20);
/// How long the black hole drops a v3 flow: past its TCP user timeout (180 s,
/// see [`BLACKHOLE_OPTIONS`], from the write's first unanswered segment,
/// sent just after the rule; the flow closed at +181.0 to +181.9 s on 5.10,
/// 6.1, 6.12 and 7.2) and some 13 s into the reconnect from the same port,
/// whose SYNs the rule still drops: long enough for the tracer to see the
/// stall (a SYN retransmit after 1 s) and for its canary from a fresh port
/// to connect (the rule names the old 4-tuple only). Any shorter and v3
/// keeps its flow through the hole (6.12 in 20 s: retransmits got through
/// once the rule went), so the reused-port story — (a) unanswered, (b)
/// closed, (c) reconnect stalled, (d) recovered — never happens. The rule
/// goes some 0.5 s after this (the ss polls, the delete), 12.8 to 13.3 s
/// into the reconnect: between SYN retry slots on both backoff patterns
/// (6.5+: 1 s five times then 2, 4, 8, 16 s, slots at +11 and +19 s;
/// before: 1, 2, 4, 8, 16 s, slots at +7 and +15 s), about 2 s from each.
/// The first SYN after the rule meets the server's stale socket (challenge
/// ACK, the client resets it) and the next slot connects: the write
/// blocked 212.6 s (5.10), 213.3 s (6.1), 217.8 s (6.12), 217.4 s (7.2).
pub const BLACKHOLE_V3: Duration = Duration::from_secs(194);

/// How long this version's flow is black-holed ([`BLACKHOLE_V3`], [`BLACKHOLE`]).
pub fn blackhole_for(vers: &str) -> Duration {
    if vers == "3" { BLACKHOLE_V3 } else { BLACKHOLE }
}

/// How long after a black hole the tracer is given to end its episode.
const EPISODE_END_LIMIT: Duration = Duration::from_secs(60);
/// Small RPC timeouts (2 s, 2 retries): the RPC layer reaches its major
/// timeout inside the black hole ("not responding"). They do not set the
/// transport's TCP_USER_TIMEOUT (xprtsock keeps its default, 60 s × 3 =
/// 180 s; NFSv4 lowers it to the lease, 10 s here): on 6.12 a v3 flow is
/// not given up in 20 s at all, a v4.1 one after 10 s.
const BLACKHOLE_OPTIONS: &str = "timeo=20,retrans=2";

/// Longer than any hang these models make (tracked timeout plus SYN
/// backoff, the NFSv4 lease that ends it, or v3's black hole: 180 s user
/// timeout, 13 s more of the rule, then a SYN slot or two, up to 32 s
/// apart: 218 s on 6.12): the write is given up after this.
const WRITE_LIMIT: Duration = Duration::from_secs(300);

/// Runs one stall scenario; emits its `truth` record and the tracer's lines.
pub fn run(mb: &Middlebox, kind: Kind, vers: &str, with_tracer: bool) -> bool {
    let name = kind.name(vers);
    let mnt = PathBuf::from(format!("/mnt/{name}"));
    let (src, mut opts) = scenario::mount_args(middlebox::SERVER, vers);
    if let Some(o) = kind.options() {
        opts = format!("{opts},{o}");
    }
    let mut truth = json!({
        "kind": "truth",
        "scenario": name,
        "vers": vers,
        "options": kind.options().unwrap_or("default"),
        "mount_options": opts,
        "mountpoint": mnt,
        "server": middlebox::SERVER,
        "client": middlebox::CLIENT,
        "tracked_timeout_s": middlebox::TRACKED_TIMEOUT_S,
        "ports": [],
        "stall": null,
        "outage": null,
        "blackhole": null,
        "tracer": {"ran": false},
        "error": null,
    });
    let mut finished = None;
    let res = run_inner(mb, kind, &mnt, &src, &opts, with_tracer, &mut truth, &mut finished);
    report(mb, &name, &mnt, truth, finished, res)
}

/// The end of a scenario through the middlebox: the tracer's lines, the
/// truth record (with the error, if any), the unmount. True when it ran.
pub(super) fn report(mb: &Middlebox, name: &str, mnt: &Path, mut truth: Value, finished: Option<Finished>, res: Result<()>) -> bool {
    if let Some(f) = finished {
        truth["tracer"] = f.emit(name);
        // Recorded with --events (not every scenario through here is).
        if f.stdout.iter().any(|l| l.contains("\"type\":\"input\"")) {
            truth["replay"] = f.replay(name);
        }
    }
    let ok = res.is_ok();
    if let Err(e) = res {
        truth["error"] = json!(format!("{e:#}"));
    }
    out::emit(&truth);
    if let Err(e) = scenario::unmount_from(&mb.client, mnt, middlebox::SERVER) {
        out::log(format!("{name}: {e:#}"));
    }
    // The next scenario starts with a server that holds none of this one's flows.
    match mb.forget_client_flows() {
        Ok(left) if left.is_empty() => {}
        Ok(left) => out::log(format!("{name}: the server still held {} flow(s) from the client, destroyed: {:?}", left.len(), left.iter().map(|s| format!("{} {}", s.state, s.peer)).collect::<Vec<_>>())),
        Err(e) => out::log(format!("{name}: cannot clear the server's flows: {e:#}")),
    }
    ok
}

#[allow(clippy::too_many_arguments)]
fn run_inner(
    mb: &Middlebox,
    kind: Kind,
    mnt: &Path,
    src: &str,
    opts: &str,
    with_tracer: bool,
    truth: &mut Value,
    finished: &mut Option<Finished>,
) -> Result<()> {
    // The tracer counts data retransmits only on sockets it saw connect: for
    // the black hole it starts before the mount, so the flow is one of them.
    let early = kind == Kind::Blackhole && with_tracer;
    // --events: the run is replayed by `report` at the end (issue 16).
    let mut tracer = if early { Some(Tracer::start_with(&["--events"])?) } else { None };
    let before = match scenario::mount_fresh(&mb.client, middlebox::SERVER, src, opts, mnt).context("through the middlebox") {
        Ok(b) => b,
        Err(e) => {
            *finished = tracer.map(Tracer::stop);
            return Err(e);
        }
    };
    truth["ports"].as_array_mut().expect("array").push(json!(before.local_port));

    if with_tracer && !early {
        tracer = Some(Tracer::start_with(&["--events"])?);
    }
    let hole = blackhole_for(truth["vers"].as_str().unwrap_or_default());
    let res = match kind {
        Kind::Stall => stall_once(mb, mnt, &before, truth),
        Kind::Outage => outage_once(mb, mnt, &before, truth),
        Kind::Blackhole => blackhole_once(mb, mnt, &before, hole, truth),
    };
    if let Some(t) = tracer {
        // A flow that got its ACKs back (no close, no reconnect) ends its
        // episode only after three retransmit gaps of silence (up to ~40 s
        // after a 20 s black hole): let the tracer get there. One that
        // reconnected ends it at once, when the reconnect connects.
        if kind == Kind::Blackhole && res.is_ok() {
            let ended = t.wait_for(EPISODE_END_LIMIT, |v| v["type"] == "episode" && v["state"] == "ended");
            out::log(format!("blackhole: the tracer {} an ended episode", if ended { "printed" } else { "did not print" }));
        }
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

    let w = timed_write(mb, &mnt.join("after-abort"), |_| Ok(()))?;
    let (write_start, write_end, syn_ports) = (w.start_ns, w.end_ns, w.syn_sent_ports);
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

/// One write timed on the lab clock, and the ports ss saw in SYN-SENT meanwhile.
pub(super) struct TimedWrite {
    pub start_ns: u64,
    pub end_ns: u64,
    pub syn_sent_ports: Vec<u16>,
    /// Per port in `syn_sent_ports`: the first and the last poll that saw it
    /// in SYN-SENT (when a reconnect began and how long it sat there, to the
    /// 250 ms poll and the time ss takes).
    pub syn_sent_seen: Vec<(u16, u64, u64)>,
}

/// Writes `path` in a thread (a hard mount blocks for as long as the
/// reconnect is held back: its start and end are the ground truth), polling
/// ss every 250 ms and calling `tick` with the time since the write began.
pub(super) fn timed_write(mb: &Middlebox, path: &Path, mut tick: impl FnMut(Duration) -> Result<()>) -> Result<TimedWrite> {
    let path = path.to_path_buf();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let t0 = sys::mono_ns();
        let r = std::fs::write(&path, b"x");
        let _ = tx.send((r, t0, sys::mono_ns()));
    });
    let start = Instant::now();
    let mut syn_sent_ports: Vec<u16> = Vec::new();
    let mut syn_sent_seen: Vec<(u16, u64, u64)> = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_millis(250)) {
            Ok((r, t0, t1)) => {
                r.context("the write after the abort failed")?;
                return Ok(TimedWrite { start_ns: t0, end_ns: t1, syn_sent_ports, syn_sent_seen });
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(e) => bail!("the writer thread died: {e}"),
        }
        tick(start.elapsed())?;
        // What the client is trying meanwhile (SYN-SENT from which port).
        let socks = net::sockets_to(&mb.client, middlebox::SERVER)?;
        let now = sys::mono_ns();
        for s in socks.iter().filter(|s| s.state == "SYN-SENT") {
            if !syn_sent_ports.contains(&s.local_port) {
                syn_sent_ports.push(s.local_port);
            }
            match syn_sent_seen.iter_mut().find(|(p, _, _)| *p == s.local_port) {
                Some(seen) => seen.2 = now,
                None => syn_sent_seen.push((s.local_port, now, now)),
            }
        }
        if start.elapsed() > WRITE_LIMIT {
            bail!("the write after the abort still blocks after {} s", WRITE_LIMIT.as_secs());
        }
    }
}

/// The outage: the mount's connection is aborted (its RST reaches the
/// server: no stale flow anywhere, so what holds the reconnect back is the
/// outage alone), the router then drops everything to and from the server,
/// and a write is timed; the rule goes [`OUTAGE`] after it came. The write
/// waits [`WRITE_AFTER`] so that a SYN retry slot (6.12: 1 s five times,
/// then 2, 4, 8 s) falls soon after the outage and the run stays short.
/// Truth: the write's block, the outage on the lab clock, ss ports, the
/// rule's counter.
fn outage_once(mb: &Middlebox, mnt: &Path, before: &net::Sock, truth: &mut Value) -> Result<()> {
    let server = middlebox::SERVER;
    std::fs::write(mnt.join("before-outage"), b"x").context("writing before the outage")?;
    let killed = net::kill_to(&mb.client, server)?;
    if !killed.iter().any(|s| s.cookie == before.cookie) {
        bail!("ss -K did not report killing sk:{} (it listed {killed:?})", before.cookie);
    }
    mb.outage_begin()?;
    let t_begin = sys::mono_ns();
    // When the rule's removal began and when it had returned: the rule
    // stops dropping somewhere in between, so a write may complete before
    // the second (CI saw it 0.0 s before).
    let mut t_end: Option<(u64, u64)> = None;
    let mut drops = 0;
    // The rule must go whatever happens below, or later scenarios hang.
    let end = |t_end: &mut Option<(u64, u64)>, drops: &mut u64| -> Result<()> {
        if t_end.is_none() {
            let t0 = sys::mono_ns();
            *drops = mb.outage_end()?;
            *t_end = Some((t0, sys::mono_ns()));
        }
        Ok(())
    };
    let res: Result<TimedWrite> = (|| {
        std::thread::sleep(WRITE_AFTER);
        let w = timed_write(mb, &mnt.join("during-outage"), |_| {
            if sys::mono_ns().saturating_sub(t_begin) >= OUTAGE.as_nanos() as u64 {
                end(&mut t_end, &mut drops)?;
            }
            Ok(())
        })?;
        end(&mut t_end, &mut drops)?;
        Ok(w)
    })();
    let cleanup = end(&mut t_end, &mut drops);
    let w = res?;
    cleanup?;
    let (t_end_begin, t_end) = t_end.expect("ended above");
    let after = net::established_to(&mb.client, server)?.context("no ESTAB connection after the write returned")?;
    let block_s = (w.end_ns.saturating_sub(w.start_ns)) as f64 / 1e9;
    out::log(format!(
        "outage: {:.1} s, router dropped {drops} packet(s); port {} -> {}, write blocked {block_s:.2} s, SYN-SENT ports seen {:?}",
        (t_end - t_begin) as f64 / 1e9,
        before.local_port,
        after.local_port,
        w.syn_sent_ports
    ));
    truth["ports"].as_array_mut().expect("array").push(json!(after.local_port));
    truth["outage"] = json!({
        "before": before.local_port,
        "after": after.local_port,
        "same_port": before.local_port == after.local_port,
        "begin_ns": t_begin,
        "end_ns": t_end,
        "end_begin_ns": t_end_begin,
        "drops": drops,
        "write_start_ns": w.start_ns,
        "write_end_ns": w.end_ns,
        "block_s": (block_s * 1000.0).round() / 1000.0,
        "syn_sent_ports": w.syn_sent_ports,
    });
    Ok(())
}

/// The black hole: the mount is not aborted; the router drops its
/// established flow (that 4-tuple, both ways, no RST) for `hole`
/// ([`blackhole_for`] the version) and a write starts at once, so the
/// client's TCP retransmits data that nothing acknowledges. What the kernel
/// does is the question: keep retransmitting until the rule goes (the
/// flow's user timeout is longer), or give the flow up and reconnect — from
/// the same port, whose SYNs the rule still drops (blocked until the rule
/// goes: v3, given up at its 180 s user timeout), or from a new one
/// (through at once: v4.1, given up at the lease). Truth: the rule's time
/// on the lab clock and its counters, the write's block, the ports and
/// sockets ss saw (when each port sat in SYN-SENT), and the old flow as
/// `ss -ti` showed it (unacked segments, retransmits, when it went).
fn blackhole_once(mb: &Middlebox, mnt: &Path, before: &net::Sock, hole: Duration, truth: &mut Value) -> Result<()> {
    let server = middlebox::SERVER;
    // The flow has just carried data: the router's entry for it expires
    // TRACKED_TIMEOUT_S after this at the latest (the rule hides the rest).
    std::fs::write(mnt.join("before-blackhole"), b"x").context("writing before the black hole")?;
    mb.blackhole_begin(before.local_port)?;
    let t_begin = sys::mono_ns();
    // When the rule's removal began and had returned, what it dropped, its listing.
    type Ended = (u64, u64, middlebox::BlackholeDrops, String);
    let mut ended: Option<Ended> = None;
    // The rule must go whatever happens below, or later scenarios hang.
    let end = |ended: &mut Option<Ended>| -> Result<()> {
        if ended.is_none() {
            let (drops, listing, t0) = mb.blackhole_end()?;
            *ended = Some((t0, sys::mono_ns(), drops, listing));
        }
        Ok(())
    };
    let due = |now: u64| now.saturating_sub(t_begin) >= hole.as_nanos() as u64;
    let mut held = HeldFlow::default();
    let res: Result<TimedWrite> = (|| {
        let w = timed_write(mb, &mnt.join("during-blackhole"), |_| {
            held.poll(mb, before)?;
            if due(sys::mono_ns()) {
                end(&mut ended)?;
            }
            Ok(())
        })?;
        // A write that got through on a new port: the rule stays its time,
        // and ss still shows when the old flow goes.
        while ended.is_none() && !due(sys::mono_ns()) {
            held.poll(mb, before)?;
            std::thread::sleep(Duration::from_millis(250));
        }
        end(&mut ended)?;
        Ok(w)
    })();
    let cleanup = end(&mut ended);
    let w = res?;
    cleanup?;
    let (t_end_begin, t_end, drops, listing) = ended.expect("ended above");
    let after = net::established_to(&mb.client, server)?.context("no ESTAB connection after the write returned")?;
    let block_s = (w.end_ns.saturating_sub(w.start_ns)) as f64 / 1e9;
    let rel = |t: Option<u64>| t.map_or("never".to_string(), |t| format!("+{:.1} s", t.saturating_sub(t_begin) as f64 / 1e9));
    let after_rule = (w.end_ns as f64 - t_end as f64) / 1e9;
    out::log(format!(
        "blackhole: rule {:.1} s on port {}, dropped {} packet(s) to and {} from the server; old flow ESTAB until {} \
         (gone {}, unacked up to {}, retransmits {}); port {} -> {}{}, write blocked {block_s:.2} s (ended {after_rule:+.2} s after the rule went), \
         SYN-SENT ports seen {:?}{}",
        (t_end - t_begin) as f64 / 1e9,
        before.local_port,
        drops.to_server,
        drops.from_server,
        rel(held.last_estab_ns),
        rel(held.gone_ns),
        held.max_unacked,
        held.max_retrans,
        before.local_port,
        after.local_port,
        if after.cookie == before.cookie { " (the same socket)" } else { "" },
        w.syn_sent_ports,
        match w.syn_sent_seen.iter().find(|(p, _, _)| *p == before.local_port) {
            Some((_, first, last)) => format!(" (port {} in SYN-SENT from {} to {})", before.local_port, rel(Some(*first)), rel(Some(*last))),
            None => String::new(),
        }
    ));
    truth["ports"].as_array_mut().expect("array").push(json!(after.local_port));
    truth["blackhole"] = json!({
        "before": before.local_port,
        "after": after.local_port,
        "same_port": before.local_port == after.local_port,
        "before_sk": before.cookie,
        "after_sk": after.cookie,
        "netns": mb.client.inode().ok(),
        "begin_ns": t_begin,
        "end_ns": t_end,
        "end_begin_ns": t_end_begin,
        "drops": drops.to_server + drops.from_server,
        "drops_to_server": drops.to_server,
        "drops_from_server": drops.from_server,
        "rules": listing.lines().map(str::trim).filter(|l| l.ends_with(" drop")).collect::<Vec<_>>(),
        "old_flow": {"last_estab_ns": held.last_estab_ns, "gone_ns": held.gone_ns,
                     "max_unacked": held.max_unacked, "max_retrans": held.max_retrans},
        "write_start_ns": w.start_ns,
        "write_end_ns": w.end_ns,
        "block_s": (block_s * 1000.0).round() / 1000.0,
        "syn_sent_ports": w.syn_sent_ports,
        "syn_sent_seen": w.syn_sent_seen.iter().map(|(p, first, last)| json!({"port": p, "first_ns": first, "last_ns": last})).collect::<Vec<_>>(),
        "planned_s": hole.as_secs(),
    });
    Ok(())
}

/// The black-holed flow as `ss -tie` showed it at each poll: while it is
/// ESTABLISHED (its socket cookie), its unacked segments and the kernel's
/// retransmit count; the first poll that no longer lists it.
#[derive(Default)]
struct HeldFlow {
    last_estab_ns: Option<u64>,
    gone_ns: Option<u64>,
    max_unacked: u64,
    max_retrans: u64,
}

impl HeldFlow {
    fn poll(&mut self, mb: &Middlebox, before: &net::Sock) -> Result<()> {
        if self.gone_ns.is_some() {
            return Ok(());
        }
        let text = cmd::run(
            mb.client.command("/sbin/ss").args([
                "-tnieH", "state", "established", "dst", middlebox::SERVER, "dport", "=", ":2049", "sport", "=",
                &format!(":{}", before.local_port),
            ]),
            Duration::from_secs(20),
        )?;
        let now = sys::mono_ns();
        if !text.split_whitespace().any(|t| t.strip_prefix("sk:") == Some(before.cookie.as_str())) {
            self.gone_ns = Some(now);
            return Ok(());
        }
        self.last_estab_ns = Some(now);
        let (unacked, retrans) = ss_info(&text);
        self.max_unacked = self.max_unacked.max(unacked);
        self.max_retrans = self.max_retrans.max(retrans);
        Ok(())
    }
}

/// `unacked:N` and the total of `retrans:CUR/TOTAL` from `ss -ti` (0 when absent).
pub(super) fn ss_info(text: &str) -> (u64, u64) {
    let field = |k: &str| text.split_whitespace().find_map(|t| t.strip_prefix(k));
    let unacked = field("unacked:").and_then(|v| v.parse().ok()).unwrap_or(0);
    let retrans = field("retrans:").and_then(|v| v.rsplit('/').next()?.parse().ok()).unwrap_or(0);
    (unacked, retrans)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(parse("stall-v4.0"), Some((Kind::Stall, "4.0")));
        assert_eq!(parse("stall-v4.1"), Some((Kind::Stall, "4.1")));
        assert_eq!(parse("stall-v3"), Some((Kind::Stall, "3")));
        assert_eq!(parse("outage-v3"), Some((Kind::Outage, "3")));
        assert_eq!(parse("outage-v4.1"), Some((Kind::Outage, "4.1")));
        assert_eq!(parse("outage-v4.0"), None);
        assert_eq!(parse("blackhole-v3"), Some((Kind::Blackhole, "3")));
        assert_eq!(parse("blackhole-v4.1"), Some((Kind::Blackhole, "4.1")));
        assert_eq!(parse("blackhole-v4.0"), None);
        assert_eq!(parse("stall-v4.2"), None);
        assert_eq!(parse("v4.0-default"), None);
    }

    #[test]
    fn reads_unacked_and_retransmits_from_ss() {
        let t = "0 124 10.98.1.2:871 10.98.0.1:2049 timer:(on,1.6s,3) ino:0 sk:1001 <->\n\t cubic wscale:7,7 rto:1600 backoff:3 \
                 unacked:1 retrans:1/4 lost:1 rcv_space:14600\n";
        assert_eq!(ss_info(t), (1, 4));
        assert_eq!(ss_info("0 0 10.98.1.2:871 10.98.0.1:2049 ino:0 sk:1001 <->\n\t cubic rto:204\n"), (0, 0));
    }
}
