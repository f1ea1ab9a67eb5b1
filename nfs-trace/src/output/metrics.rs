//! Prometheus text exposition (format 0.0.4) of what a session has seen, for
//! fleets: per destination, per transport (with the mounts it serves), stalls
//! and lost records. Served by `watch --metrics ADDR`.
use std::fmt::Write as _;

use crate::{
    host::nfsmounts::{self, MountView},
    kernel::lost::Lost,
    model::tcp::Tracker,
    model::xprt::XprtTracker,
};

/// Escapes a label value: backslash, double quote and newline.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], v: impl std::fmt::Display) {
        let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", esc(v))).collect();
        if l.is_empty() {
            let _ = writeln!(self.out, "{name} {v}");
        } else {
            let _ = writeln!(self.out, "{name}{{{}}} {v}", l.join(","));
        }
    }
}

/// Sizes of the tracer's own state: bounded, and expiring, by design.
pub struct StateSizes {
    pub kernel_sockets: usize,
}

pub fn render(t: &Tracker, x: &XprtTracker, views: &[MountView], lost: Lost, hooks_attached: usize, sizes: &StateSizes) -> String {
    let mut out = String::new();
    let mut f = Family { out: &mut out };
    let dests = t.destinations();
    let per_dest: [(&str, &str, fn(&crate::model::tcp::DestStats) -> u64); 4] = [
        ("nfs_trace_connects_total", "TCP connect attempts toward a watched port.", |d| d.connects),
        ("nfs_trace_connect_failures_total", "Connect attempts that did not reach ESTABLISHED.", |d| d.failed),
        ("nfs_trace_source_port_reuses_total", "Connect attempts from the same source port as the previous one to that destination.", |d| d.reuses),
        ("nfs_trace_syn_retransmits_total", "SYN retransmits of finished connect attempts.", |d| d.syn_retransmits),
    ];
    for (name, help, get) in per_dest {
        f.head(name, "counter", help);
        for (k, d) in &dests {
            let (l, r, p) = (k.laddr.to_string(), k.raddr.to_string(), k.dport.to_string());
            f.sample(name, &[("laddr", &l), ("raddr", &r), ("dport", &p)], get(d));
        }
    }

    // Per server and mount: the mount is what an operator pages on.
    let stalls: Vec<_> = t.stalls.iter().chain(t.open_stalls()).collect();
    let mut by_dest: std::collections::BTreeMap<(String, String, String), (u64, f64, u64)> = Default::default();
    for s in &stalls {
        let d = &s.who.dest;
        let mounts: Vec<&str> = nfsmounts::attribute(views, d.raddr, d.dport, s.who.sport).iter().map(|m| m.mountpoint.as_str()).collect();
        let e = by_dest.entry((d.raddr.to_string(), d.dport.to_string(), mounts.join(","))).or_default();
        e.0 += 1;
        e.1 += s.duration_ns() as f64 / 1e9;
        e.2 += u64::from(s.end_ns.is_none());
    }
    for (name, kind, help) in [
        ("nfs_trace_stalls_total", "counter", "Stalls: reconnects stuck in SYN_SENT from the previous connection port."),
        ("nfs_trace_stall_seconds_total", "counter", "Time spent in stalls, ongoing ones so far."),
        ("nfs_trace_stalls_ongoing", "gauge", "Stalls going on now."),
    ] {
        f.head(name, kind, help);
        for ((r, p, m), (n, secs, open)) in &by_dest {
            let v = match name {
                "nfs_trace_stalls_total" => n.to_string(),
                "nfs_trace_stall_seconds_total" => format!("{secs:.3}"),
                _ => open.to_string(),
            };
            f.sample(name, &[("raddr", r), ("dport", p), ("mount", m)], v);
        }
    }

    let xs = x.all();
    for (name, help, is_reuse) in [
        ("nfs_trace_transport_reconnects_total", "Reconnects of a SunRPC transport.", false),
        ("nfs_trace_transport_port_reuses_total", "Reconnects of a SunRPC transport from its previous source port.", true),
    ] {
        f.head(name, "counter", help);
        for (k, s) in &xs {
            let Some(raddr) = s.raddr else { continue };
            let mounts: Vec<String> =
                nfsmounts::attribute(views, raddr, s.dport, s.srcport).iter().map(|m| m.mountpoint.clone()).collect();
            let (xp, r, p, m) = (format!("{k:#x}"), raddr.to_string(), s.dport.to_string(), mounts.join(","));
            f.sample(name, &[("xprt", &xp), ("raddr", &r), ("dport", &p), ("mount", &m)], if is_reuse { s.reuses } else { s.reconnects });
        }
    }

    for (name, help, v) in [
        ("nfs_trace_lost_events_total", "Ring buffer records that could not be reserved.", lost.events),
        ("nfs_trace_lost_connects_total", "Of those, connect attempts.", lost.connects),
        ("nfs_trace_lost_sockets_total", "Sockets whose state could not be stored.", lost.sockets),
    ] {
        f.head(name, "counter", help);
        f.sample(name, &[], v);
    }
    f.head("nfs_trace_hooks_attached", "gauge", "Kernel hooks attached now.");
    f.sample("nfs_trace_hooks_attached", &[], hooks_attached);
    for (name, help, v) in [
        ("nfs_trace_tracked_destinations", "Destinations the tracker holds (bounded).", dests.len()),
        ("nfs_trace_tracked_transports", "Transports the tracker holds, live and ended (bounded).", xs.len()),
        ("nfs_trace_kernel_tracked_sockets", "Sockets the kernel programs hold state for (from SYN_SENT to CLOSE).", sizes.kernel_sockets),
    ] {
        f.head(name, "gauge", help);
        f.sample(name, &[], v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_label_values() {
        assert_eq!(esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn stalls_are_counted_per_server_and_mount() {
        use crate::kernel::decode::{Event, Kind};
        use nfs_trace_common::tcp_state::{ESTABLISHED, SYN_SENT};
        let ev = |kind, ts_ms: u64, sk, retrans| Event {
            kind,
            ts_ns: ts_ms * 1_000_000,
            sk,
            pid: 1,
            comm: "kworker".into(),
            laddr: "10.0.0.2".parse().unwrap(),
            sport: 871,
            raddr: "10.0.0.1".parse().unwrap(),
            dport: 2049,
            start_ns: if sk == 1 { 0 } else { 2_000_000_000 },
            syn_ns: 0,
            established_ns: 0,
            xprt: 0,
            err: 0,
            syn_retrans: retrans,
            oldstate: SYN_SENT,
            newstate: ESTABLISHED,
            first_exit: 0,
        };
        let mut t = Tracker::new();
        for e in [ev(Kind::ConnectDone, 10, 1, 0), ev(Kind::SynRetransmit, 3_000, 2, 1), ev(Kind::ConnectDone, 12_000, 2, 4)] {
            t.on_event(&e);
        }
        let view = MountView::for_test("/mnt/data", "10.0.0.1", "3", false, 871);
        let out = render(&t, &XprtTracker::new(false), &[view], Lost::default(), 3, &StateSizes { kernel_sockets: 0 });
        let labels = r#"{raddr="10.0.0.1",dport="2049",mount="/mnt/data"}"#;
        assert!(out.contains(&format!("nfs_trace_stalls_total{labels} 1\n")), "{out}");
        assert!(out.contains(&format!("nfs_trace_stall_seconds_total{labels} 10.000\n")), "{out}");
        assert!(out.contains(&format!("nfs_trace_stalls_ongoing{labels} 0\n")), "{out}");
    }

    #[test]
    fn renders_families_with_help_and_type() {
        let out = render(
            &Tracker::new(),
            &XprtTracker::new(false),
            &[],
            Lost { events: 2, sockets: 0, connects: 1 },
            3,
            &StateSizes { kernel_sockets: 5 },
        );
        assert!(out.contains("nfs_trace_kernel_tracked_sockets 5"));
        assert!(out.contains("# TYPE nfs_trace_lost_events_total counter\nnfs_trace_lost_events_total 2\n"));
        assert!(out.contains("nfs_trace_hooks_attached 3"));
        assert!(out.lines().all(|l| l.starts_with('#') || l.starts_with("nfs_trace_")));
    }
}
