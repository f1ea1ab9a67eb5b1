//! A verdict per mount: what was observed of its reconnects in this run, and
//! what would change it, backed by what other mounts on this host showed.
//! Never folklore: no claim about what a kernel or option "should" do.
use serde::Serialize;

use crate::{
    host::nfsmounts::MountView,
    model::attribution::{Transport, attribute},
    model::tcp::Stall,
    model::xprt::XprtTracker,
};

/// Reserved (privileged, < 1024: the `resvport` range) or ephemeral ports.
pub fn port_range(ports: &[u16]) -> &'static str {
    match (ports.iter().all(|&p| p < 1024), ports.iter().all(|&p| p >= 1024)) {
        (_, _) if ports.is_empty() => "none",
        (true, _) => "reserved",
        (_, true) => "ephemeral",
        _ => "mixed",
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Verdict {
    pub mountpoint: String,
    pub server: String,
    pub vers: Option<String>,
    pub noresvport: bool,
    /// Transports (xprt addresses) attributed to the mount.
    pub transports: Vec<String>,
    pub reconnects: u64,
    pub reused: u64,
    /// "reserved", "ephemeral", "mixed" or "none".
    pub port_range: &'static str,
    /// One sentence: what was seen.
    pub observed: String,
    /// One sentence: what would change it here, or why nothing needs to.
    pub suggestion: String,
}

fn describe(v: &Verdict) -> String {
    format!(
        "{} (vers={}{})",
        v.mountpoint,
        v.vers.as_deref().unwrap_or("?"),
        if v.noresvport { ",noresvport" } else { "" }
    )
}

/// The mounts here seen reconnecting, never from their old port, each as
/// "MOUNTPOINT (vers=V[,noresvport])": option sets this host honoured
/// (also what an episode's advice names, model/episode).
pub fn honoured(verdicts: &[Verdict]) -> Vec<String> {
    verdicts.iter().filter(|v| v.reconnects > 0 && v.reused == 0).map(describe).collect()
}

/// Verdicts for every mount that transports were attributed to.
pub fn verdicts(views: &[MountView], x: &XprtTracker) -> Vec<Verdict> {
    let mut out: Vec<Verdict> = views
        .iter()
        .map(|m| Verdict {
            mountpoint: m.mountpoint.clone(),
            server: format!("{}:{}", m.server, m.port),
            vers: m.vers.clone(),
            noresvport: m.noresvport,
            transports: Vec::new(),
            reconnects: 0,
            reused: 0,
            port_range: "none",
            observed: String::new(),
            suggestion: String::new(),
        })
        .collect();
    let mut ports: Vec<Vec<u16>> = vec![Vec::new(); out.len()];
    for (xprt, s) in x.all() {
        let Some(raddr) = s.raddr else { continue };
        let t = Transport { xprt, raddr, dport: s.dport, netns: s.netns, srcport: s.srcport, live: s.ports.last().copied() };
        for m in attribute(views, &t).0 {
            let i = views.iter().position(|v| std::ptr::eq(v, m)).expect("attribute returns members of views");
            out[i].transports.push(format!("{xprt:#x}"));
            out[i].reconnects += s.reconnects;
            out[i].reused += s.reuses;
            ports[i].extend(&s.ports);
        }
    }
    for (v, p) in out.iter_mut().zip(&ports) {
        v.port_range = port_range(p);
    }
    // Mounts here that reconnected and never reused: the evidence for a suggestion.
    let changers = honoured(&out);
    for (v, m) in out.iter_mut().zip(views) {
        if v.transports.is_empty() {
            v.observed = "no transport of this mount was seen connecting".into();
            v.suggestion = "nothing to judge yet: keep watching, or force reconnects with `nfs-trace prove`".into();
            continue;
        }
        if v.reconnects == 0 {
            v.observed = format!("connected from {} ports; no reconnect seen", v.port_range);
            v.suggestion = "nothing to judge yet: `nfs-trace prove --mount` forces reconnects".into();
            continue;
        }
        v.observed = format!(
            "reused its source port on {} of {} reconnects ({} ports)",
            v.reused, v.reconnects, v.port_range
        );
        v.suggestion = if v.reused == 0 {
            "a new port on every reconnect: a middlebox still holding the old flow does not stall it".into()
        } else {
            let others: Vec<&String> = changers.iter().filter(|c| !c.starts_with(&format!("{} ", v.mountpoint))).collect();
            if others.is_empty() {
                format!(
                    "no mount here was seen reconnecting from a new port; `nfs-trace prove --server {} --like {}` tries other options (vers=, noresvport) on test mounts and shows what this kernel does",
                    m.source, v.mountpoint
                )
            } else {
                format!(
                    "on this kernel {} got a new port on every reconnect: mounting with those options would change it",
                    others.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                )
            }
        };
    }
    out
}

/// One sentence on a stall: what was seen, in this run's numbers, and which
/// mounts it held up. The cause is named as what fits the evidence (the
/// same port stuck in SYN_SENT), not asserted.
pub fn stall_verdict(st: &Stall, mounts: &[&MountView]) -> String {
    let secs = st.duration_ns() as f64 / 1e9;
    let since = st
        .prev_end_ns
        .map(|e| format!(" (its previous flow ended {:.1} s before)", st.start_ns.saturating_sub(e) as f64 / 1e9))
        .unwrap_or_default();
    let how = match (st.end_ns, st.end_sport) {
        (Some(_), Some(p)) if p == st.who.flow.sport => format!("until port {p} finally connected"),
        (Some(_), Some(p)) => format!("until a connect from port {p} succeeded"),
        _ => "and is still stuck".to_string(),
    };
    let held = if mounts.is_empty() {
        String::new()
    } else {
        let m: Vec<String> = mounts
            .iter()
            .map(|m| format!("{} (vers={}{})", m.mountpoint, m.vers.as_deref().unwrap_or("?"), if m.noresvport { ",noresvport" } else { "" }))
            .collect();
        format!("; it held up {}", m.join(", "))
    };
    // Other flows to the same server connecting meanwhile rule out a dead
    // server or a dead path: only this flow's SYNs are dropped.
    let siblings = match st.siblings_connected {
        0 => String::new(),
        n => format!(" while {n} connect(s) to the same server from other ports succeeded"),
    };
    if !st.reused {
        // No earlier flow of that port: nothing a middlebox could still hold.
        return format!(
            "a connect from new port {} sat in SYN_SENT {secs:.1} s with {} SYN retransmits {how}{siblings}: not a reused flow, so not a middlebox holding an old one; the server or the path did not answer it{held}",
            st.who.flow.sport, st.retransmits
        );
    }
    format!(
        "a reconnect from port {}{since} sat in SYN_SENT {secs:.1} s with {} SYN retransmits {how}{siblings}: consistent with a middlebox or firewall still holding the old flow and dropping its SYNs{held}",
        st.who.flow.sport, st.retransmits
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{Flow, Netns, Task};
    use crate::kernel::decode::{XprtRecord, XprtWhat};

    fn view(mnt: &str, vers: &str, noresv: bool, remembered: u16) -> MountView {
        MountView::for_test(mnt, "10.99.0.1", vers, noresv, remembered)
    }

    fn connect(t: &mut XprtTracker, xprt: u64, sport: u16, srcport: u16) {
        let srcport = Some(srcport);
        t.on_xprt(&XprtRecord {
            what: XprtWhat::Connect,
            ts_ns: 1,
            xprt,
            sk: 1,
            task: Task { pid: 1, comm: "k".into() },
            flow: Flow { laddr: "10.99.0.2".parse().unwrap(), sport, raddr: "10.99.0.1".parse().unwrap(), dport: 2049, netns: Netns::UNKNOWN },
            srcport,
            sk_state: 0,
            sock_state: 0,
            error: 0,
            sk_err: 0,
            task_start_ns: None,
        });
    }

    #[test]
    fn suggestions_cite_what_other_mounts_showed() {
        let mut views = vec![view("/mnt/v40", "4.0", true, 723), view("/mnt/v41", "4.1", false, 0)];
        // The kernel's mount link says which transport is the 4.1 mount's
        // (a transport remembering no port is otherwise nobody's yet).
        views[1].live_from = "mount link";
        views[1].live_ports = Some(vec![902]);
        let mut t = XprtTracker::new(false);
        for _ in 0..3 {
            connect(&mut t, 1, 723, 723);
        }
        for p in [900, 901, 902] {
            connect(&mut t, 2, p, 0);
        }
        let v = verdicts(&views, &t);
        assert_eq!((v[0].reconnects, v[0].reused, v[0].port_range), (2, 2, "reserved"));
        assert!(v[0].observed.contains("2 of 2"));
        assert!(v[0].suggestion.contains("/mnt/v41 (vers=4.1)"), "{}", v[0].suggestion);
        assert_eq!((v[1].reconnects, v[1].reused), (2, 0));
        assert!(v[1].suggestion.contains("new port on every reconnect"));
    }

    #[test]
    fn no_evidence_no_claim() {
        let views = vec![view("/mnt/a", "3", false, 790), view("/mnt/idle", "4.2", false, 0)];
        let mut t = XprtTracker::new(false);
        connect(&mut t, 1, 790, 790);
        connect(&mut t, 1, 790, 790);
        let v = verdicts(&views, &t);
        assert_eq!((v[0].reconnects, v[0].reused), (1, 1));
        // Of the suggestions, only this one says no mount here showed a
        // new port (the others also mention `prove`): no claim without one.
        assert!(
            v[0].suggestion.starts_with("no mount here was seen reconnecting from a new port"),
            "{}",
            v[0].suggestion
        );
        assert!(v[0].suggestion.contains("`nfs-trace prove --server 10.99.0.1:/ --like /mnt/a`"), "{}", v[0].suggestion);
        assert!(v[1].observed.contains("no transport"));
        assert!(v[1].suggestion.starts_with("nothing to judge yet"), "{}", v[1].suggestion);
    }

    /// Defect 5: a transport whose remembered port is unknown (its connects
    /// come from TCP records, or the kernel had no BTF for sock_xprt) must not
    /// be credited to the mount that remembers none (port 0).
    #[test]
    fn an_unknown_remembered_port_credits_no_mount() {
        use crate::kernel::decode::{Event, Kind};
        let views = vec![view("/mnt/v3", "3", false, 790), view("/mnt/v41", "4.1", false, 0)];
        let mut t = XprtTracker::new(true);
        for ts in [1, 2] {
            t.on_tcp(&Event {
                kind: Kind::ConnectDone,
                ts_ns: ts,
                sk: ts,
                task: Task { pid: 1, comm: "k".into() },
                flow: Flow { laddr: "10.99.0.2".parse().unwrap(), sport: 790, raddr: "10.99.0.1".parse().unwrap(), dport: 2049, netns: Netns::UNKNOWN },
                start_ns: ts,
                syn_ns: 0,
                established_ns: 0,
                xprt: 7,
                err: 0,
                syn_retrans: 0,
                oldstate: 0,
                newstate: 0,
                first_exit: 0,
            });
        }
        let v = verdicts(&views, &t);
        assert_eq!(v[1].mountpoint, "/mnt/v41");
        assert_eq!((v[1].reconnects, v[1].reused), (0, 0), "the v3 transport's reuse credited to the 4.1 mount");
        assert!(v[1].transports.is_empty(), "{:?}", v[1].transports);
    }
}
