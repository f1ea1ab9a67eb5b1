//! The verdict of an episode, from a fixed set, each with the evidence it
//! needs; and the advice that follows from it and from what this host showed.
//!
//! | verdict | needs |
//! |---|---|
//! | `reused-flow-dropped` | a connect from a reused port stuck in SYN_SENT while a canary from a fresh port (or another flow to the same server) connected |
//! | `server-or-path-down` | a connect stuck in SYN_SENT and a canary that failed too (a later one that connects does not undo it) |
//! | `path-blackhole` | data retransmits without ACK progress for over a second on the established flow (phase a), and no reused reconnect the canary proves dropped |
//! | `server-not-answering` | RPC major timeouts (phase a) on a connection that stayed established, with data retransmits traced and none unanswered |
//! | `unknown` | anything short of those: its evidence says what was missing ("no canary: --passive", "canary not yet back", "no hook") |
//!
//! The rules are tried in that order. Advice never says what an option
//! "should" do: where a `noresvport` mount still remembers a source port
//! (mountstats), noresvport is not advised; it names option sets this host
//! was seen to honour (model/verdict.rs) or `nfs-trace prove`, and for
//! versions that keep their port by design (v3, v4.0), middlebox remedies.
use crate::{
    host::nfsmounts::MountView,
    model::canary::{CanaryOutcome, CanaryResult},
    model::episode::{Episode, UNANSWERED_NOT_OBSERVED},
    kernel::decode::errno_name,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VerdictName {
    ReusedFlowDropped,
    ServerOrPathDown,
    ServerNotAnswering,
    PathBlackhole,
    Unknown,
}

impl VerdictName {
    pub const ALL: [VerdictName; 5] = [
        VerdictName::ReusedFlowDropped,
        VerdictName::ServerOrPathDown,
        VerdictName::ServerNotAnswering,
        VerdictName::PathBlackhole,
        VerdictName::Unknown,
    ];

    pub fn name(self) -> &'static str {
        match self {
            VerdictName::ReusedFlowDropped => "reused-flow-dropped",
            VerdictName::ServerOrPathDown => "server-or-path-down",
            VerdictName::ServerNotAnswering => "server-not-answering",
            VerdictName::PathBlackhole => "path-blackhole",
            VerdictName::Unknown => "unknown",
        }
    }
}

fn secs(ns: u64) -> String {
    format!("{:.1} s", ns as f64 / 1e9)
}

fn errno_text(e: i32) -> String {
    errno_name(e).map(str::to_string).unwrap_or_else(|| format!("errno {e}"))
}

/// "a canary from port 40123 connected in 0.2 ms" and the like.
fn canary_fact(c: &CanaryResult) -> String {
    let how = match c.outcome {
        CanaryOutcome::Connected { rtt_ns } => format!("connected in {:.1} ms", rtt_ns as f64 / 1e6),
        CanaryOutcome::Refused => "was refused (RST)".to_string(),
        CanaryOutcome::Error(e) => format!("failed ({})", errno_text(e)),
        CanaryOutcome::TimedOut => format!("got no answer in {}", secs(c.end_ns.saturating_sub(c.start_ns))),
    };
    format!("a canary from new port {} {how}", c.sport)
}

/// The verdict and its evidence: one sentence naming the facts.
pub fn judge(e: &Episode) -> (VerdictName, String) {
    let mut facts: Vec<String> = Vec::new();
    let port = e.closed.as_ref().map_or(e.flow.sport, |c| c.sport);
    if let Some(u) = e.unanswered.as_ref().filter(|u| u.data_retransmits > 0) {
        let rpc = if u.rpc_timeouts > 0 { format!(", {} RPC timeouts", u.rpc_timeouts) } else { String::new() };
        facts.push(format!(
            "the established flow from port {port} went unanswered ({} data retransmits without ACK progress over {}{rpc})",
            u.data_retransmits,
            secs(u.last_ns.saturating_sub(u.start_ns))
        ));
    } else if let Some(u) = e.unanswered.as_ref().filter(|u| u.rpc_timeouts > 0) {
        let tcp = if e.retransmits_traced { "with no data retransmitted unanswered" } else { "(data retransmits are not traced here)" };
        facts.push(format!(
            "{} RPC major timeout(s) over {} while the connection from port {port} stayed established {tcp}",
            u.rpc_timeouts,
            secs(u.rpc_last_ns.saturating_sub(u.rpc_first_ns))
        ));
    }
    if let Some(c) = &e.closed {
        let errno = c.errno.map(|n| format!(", {}", errno_text(n))).unwrap_or_default();
        facts.push(format!("the connection from port {} closed ({}{errno})", c.sport, c.how.replace('_', " ")));
    }
    let r = e.reconnect.as_ref();
    let stall = r.filter(|r| r.stalled);
    if let Some(r) = stall {
        let start = r.stall_start_ns.unwrap_or(r.start_ns);
        let until = e.recovered.as_ref().map_or(e.last_ns, |x| x.ts_ns);
        let port = r.stalled_sport.unwrap_or(e.flow.sport);
        facts.push(format!(
            "a reconnect from {} port {port} sat in SYN_SENT {} with {} SYN retransmits{}",
            if r.reused { "reused" } else { "new" },
            secs(until.saturating_sub(start)),
            r.syn_retransmits,
            match e.recovered.as_ref() {
                Some(x) => format!(" until port {} connected", x.sport),
                None => String::new(),
            }
        ));
        if r.siblings_connected > 0 {
            facts.push(format!("{} connect(s) to the same server from other ports succeeded meanwhile", r.siblings_connected));
        }
    } else if let (Some(_), Some(x)) = (r, e.recovered.as_ref()) {
        facts.push(format!(
            "it reconnected from port {} {} after the first symptom with no connect stuck in SYN_SENT",
            x.sport,
            secs(x.ts_ns.saturating_sub(e.start_ns))
        ));
    } else if let (None, true, Some(x)) = (r, e.closed.is_none(), e.recovered.as_ref()) {
        if e.unanswered.as_ref().is_some_and(|u| u.data_retransmits > 0) {
            facts.push(format!("ACKs came back on the same flow after its last retransmit, {} after the first", secs(x.ts_ns.saturating_sub(e.start_ns))));
        } else {
            facts.push(format!("the server answered again on the same flow {} after the first timeout", secs(x.ts_ns.saturating_sub(e.start_ns))));
        }
    } else if let (None, true) = (r, e.closed.is_none() && !e.destroyed) {
        facts.push(format!("still unanswered {} after the first symptom", secs(e.last_ns.saturating_sub(e.start_ns))));
    } else if e.destroyed {
        facts.push(if e.xprt != 0 { "its transport was destroyed before it reconnected" } else { "its socket was closed before it reconnected" }.into());
    } else {
        facts.push(format!("no reconnect has connected yet, {} after the first symptom", secs(e.last_ns.saturating_sub(e.start_ns))));
    }
    let canary = stall.and_then(|r| r.canary.as_ref());
    if let Some(c) = canary {
        facts.push(canary_fact(c));
    }
    let said = facts.join("; ");
    let verdict = |v: VerdictName, why: &str| (v, format!("{said}: {why}"));

    if let Some(r) = stall {
        let canary_ok = canary.is_some_and(CanaryResult::connected);
        if r.reused && (canary_ok || (canary.is_none() && r.siblings_connected > 0)) {
            return verdict(VerdictName::ReusedFlowDropped, "new flows to the server get through, so the path drops the reused flow only");
        }
        if canary.is_some() && !canary_ok {
            return verdict(VerdictName::ServerOrPathDown, "a fresh flow fails too, so the server or the path is down, not only this flow");
        }
    }
    if let Some(u) = &e.unanswered {
        if u.data_retransmits > 0 {
            return verdict(VerdictName::PathBlackhole, "the path stopped carrying the established flow");
        }
        // TCP healthy is a fact only where data retransmits are traced, on
        // a connection that did not go away.
        if u.rpc_timeouts > 0 && e.retransmits_traced && e.closed.is_none() {
            return verdict(VerdictName::ServerNotAnswering, "TCP stayed healthy while RPCs went unanswered, so the server itself does not answer");
        }
    }
    // Unknown: say exactly what was missing.
    let missing = match (stall, canary) {
        (Some(_), Some(c)) if c.connected() => {
            "a new port's SYNs went unanswered while a fresh flow connected: no reused flow to blame, and nothing traced says what drops it".to_string()
        }
        (Some(_), _) => match (e.canary_off, e.recovered.is_some()) {
            (Some(why), _) => format!("no canary: {why}"),
            (None, true) => "the stall ended before a canary came back".to_string(),
            (None, false) => "canary not yet back".to_string(),
        },
        (None, _) if e.unanswered.as_ref().is_some_and(|u| u.rpc_timeouts > 0) && !e.retransmits_traced => {
            "data retransmits are not traced here (tcp:tcp_retransmit_skb not attached), so a path that stopped carrying the flow is not ruled out".to_string()
        }
        (None, _) if e.unanswered.is_some() => "the connection went away while RPCs were unanswered, so TCP did not stay healthy: nothing traced says what ended it".to_string(),
        (None, _) => format!("what went before the close is {UNANSWERED_NOT_OBSERVED}"),
    };
    (VerdictName::Unknown, format!("{said}; missing: {missing}"))
}

fn mount_desc(m: &MountView) -> String {
    format!("{} (vers={}{})", m.mountpoint, m.vers.as_deref().unwrap_or("?"), if m.noresvport { ",noresvport" } else { "" })
}

/// One sentence: what to do, from the verdict, the episode's mounts and
/// `honoured` (mounts here seen reconnecting from new ports,
/// `model::verdict::honoured`).
pub fn advice(e: &Episode, mounts: &[&MountView], honoured: &[String]) -> String {
    match e.verdict {
        VerdictName::ReusedFlowDropped => {
            let mut parts = Vec::new();
            let others: Vec<&String> =
                honoured.iter().filter(|h| !mounts.iter().any(|m| h.starts_with(&format!("{} ", m.mountpoint)))).collect();
            if others.is_empty() {
                let cmd = match mounts.first() {
                    Some(m) => format!("nfs-trace prove --server {} --like {}", m.source, m.mountpoint),
                    None => "nfs-trace prove --server HOST:/EXPORT".to_string(),
                };
                parts.push(format!(
                    "no mount here was seen reconnecting from a new port: `{cmd}` mounts the export with other options (vers=, noresvport) beside it and shows which give this kernel a new port"
                ));
            } else {
                parts.push(format!(
                    "on this host {} got a new port on every reconnect: mounting with those options would avoid the reused flow",
                    others.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                ));
            }
            for m in mounts.iter().filter(|m| m.noresvport) {
                if let Some(p) = m.remembered_ports.iter().find(|&&p| p != 0) {
                    parts.push(format!(
                        "{} is mounted noresvport yet its transport still remembers source port {p} (mountstats): noresvport does not stop this kernel rebinding it, so do not rely on it",
                        m.mountpoint
                    ));
                }
            }
            let keep: Vec<String> =
                mounts.iter().filter(|m| matches!(m.vers.as_deref(), Some("2" | "3" | "4" | "4.0"))).map(|m| mount_desc(m)).collect();
            if !keep.is_empty() {
                parts.push(format!(
                    "{} keeps its port by design; if the server needs that (a duplicate reply cache keyed on it), fix the middlebox instead: let the client's RST end its entry, shorten its established timeout for port {}, or let a SYN replace an established entry",
                    keep.join(", "),
                    e.flow.dport
                ));
            }
            parts.join("; ")
        }
        VerdictName::ServerOrPathDown => format!(
            "new flows to {} fail too: look at the server and the route to it; mount options would not change this",
            e.flow.raddr
        ),
        VerdictName::ServerNotAnswering => "TCP is healthy and the server does not answer RPCs: look at the server (nfsd, its storage); mount options would not change this".into(),
        VerdictName::PathBlackhole => "the path stopped carrying an established flow: look at the path (firewall or middlebox state, MTU)".into(),
        VerdictName::Unknown => match e.canary_off {
            Some("--passive") => "nothing proven: without --passive, watch makes a canary connect that tells a dropped flow from a down server".into(),
            _ => "nothing proven yet: no advice without evidence".into(),
        },
    }
}
