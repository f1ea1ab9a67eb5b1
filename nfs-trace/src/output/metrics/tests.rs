//! Metrics: counters that never go down, bounded labels, and text promtool reads.
use super::*;
use crate::flow::{Flow, Netns, Task};
use crate::kernel::decode::{Event, Kind};

fn ev(kind: Kind, raddr: &str, ts_ms: u64, sk: u64, start_ms: u64, retrans: u32) -> Event {
    let task = Task { pid: 1, comm: "kworker".into() };
    let flow = Flow { laddr: "10.0.0.2".parse().unwrap(), sport: 871, raddr: raddr.parse().unwrap(), dport: 2049, netns: Netns::UNKNOWN };
    Event { start_ns: start_ms * 1_000_000, syn_retrans: retrans, ..Event::for_test(kind, ts_ms * 1_000_000, sk, task, flow) }
}

/// Feeds events through the tracker into the metrics, as `watch` does.
fn feed(t: &mut Tracker, m: &mut Metrics, views: &[MountView], events: &[Event]) {
    for e in events {
        for o in t.on_event(e) {
            m.observe(&o, views);
        }
    }
}

/// One stall toward `raddr`: a connect from 871, then a reconnect from
/// 871 that retransmits its SYN for 2 s before it gets through.
fn stall(raddr: &str, at_ms: u64, sk: u64) -> [Event; 3] {
    [
        ev(Kind::ConnectDone, raddr, at_ms, sk, at_ms, 0),
        ev(Kind::SynRetransmit, raddr, at_ms + 2000, sk + 1, at_ms + 1000, 1),
        ev(Kind::ConnectDone, raddr, at_ms + 3000, sk + 1, at_ms + 1000, 1),
    ]
}

fn scrape(m: &mut Metrics, t: &Tracker, views: &[MountView]) -> String {
    m.render(t, &XprtTracker::new(false), views, Lost::default(), 3, &StateSizes { kernel_sockets: 0 })
}

/// The value of the sample of `family` whose labels contain `has`.
fn value(out: &str, family: &str, has: &str) -> Option<f64> {
    out.lines()
        .find(|l| l.starts_with(&format!("{family}{{")) && l.contains(has))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn stalls_are_counted_per_server_and_mount() {
    let mut t = Tracker::new();
    let mut m = Metrics::new();
    let views = [MountView::for_test("/mnt/da\"ta\\x", "10.0.0.1", "3", false, 871)];
    feed(&mut t, &mut m, &views, &[ev(Kind::ConnectDone, "10.0.0.1", 10, 1, 0, 0), ev(Kind::SynRetransmit, "10.0.0.1", 3_000, 2, 2_000, 1)]);
    let out = scrape(&mut m, &t, &views);
    // Label values escaped as the format wants.
    let labels = r#"{raddr="10.0.0.1",dport="2049",mount="/mnt/da\"ta\\x",pod=""}"#;
    assert!(out.contains(&format!("nfs_trace_stalls_total{labels} 1\n")), "{out}");
    assert!(out.contains(&format!("nfs_trace_stalls_ongoing{labels} 1\n")), "{out}");
    assert!(out.contains(&format!("nfs_trace_stall_seconds_total{labels} 1.0\n")), "{out}");
    feed(&mut t, &mut m, &views, &[ev(Kind::ConnectDone, "10.0.0.1", 12_000, 2, 2_000, 4)]);
    let out = scrape(&mut m, &t, &views);
    assert!(out.contains(&format!("nfs_trace_stalls_total{labels} 1\n")), "{out}");
    assert!(out.contains(&format!("nfs_trace_stall_seconds_total{labels} 10.0\n")), "{out}");
    assert!(out.contains(&format!("nfs_trace_stalls_ongoing{labels} 0\n")), "{out}");
}

/// A pod's volume (kubelet's mount path) labels its stalls with the pod.
#[test]
fn stalls_of_a_pod_volume_carry_the_pod() {
    let (mut t, mut m) = (Tracker::new(), Metrics::new());
    let uid = "8f0c2b1e-3a4d-4c5e-9f60-7a8b9c0d1e2f";
    let mut v = MountView::for_test(&format!("/var/lib/kubelet/pods/{uid}/volumes/kubernetes.io~nfs/shared"), "10.0.0.1", "3", false, 871);
    v.pods = crate::host::kubelet::pods_of(&v);
    let views = [v];
    feed(&mut t, &mut m, &views, &[ev(Kind::ConnectDone, "10.0.0.1", 10, 1, 0, 0), ev(Kind::SynRetransmit, "10.0.0.1", 3_000, 2, 2_000, 1)]);
    let out = scrape(&mut m, &t, &views);
    assert!(out.contains(&format!(r#"pod="{uid}/shared"}} 1"#)), "{out}");
}

#[test]
fn renders_families_with_help_and_type() {
    let mut m = Metrics::new();
    let t = Tracker::new();
    let x = XprtTracker::new(false);
    let out = m.render(&t, &x, &[], Lost { events: 2, sockets: 0, connects: 1, missed_runs: 0 }, 3, &StateSizes { kernel_sockets: 5 });
    assert!(out.contains("nfs_trace_kernel_tracked_sockets 5"));
    assert!(out.contains("# TYPE nfs_trace_lost_events_total counter\nnfs_trace_lost_events_total 2\n"), "{out}");
    assert!(out.contains("nfs_trace_hooks_attached 3"));
    assert!(out.lines().all(|l| l.starts_with('#') || l.starts_with("nfs_trace_")));
    // The kernel's counters are monotonic; ours follow them.
    let out = m.render(&t, &x, &[], Lost { events: 5, sockets: 0, connects: 1, missed_runs: 0 }, 3, &StateSizes { kernel_sockets: 5 });
    assert!(out.contains("nfs_trace_lost_events_total 5\n"), "{out}");
}

/// A stall counted under a mount stays counted there: when the mount
/// views change, and when more stalls come than the tracker keeps.
/// (The old renderer recomputed them from the tracker's capped list
/// and today's views: /mnt/data's series vanished.)
#[test]
fn stall_counters_never_go_down() {
    let data = MountView::for_test("/mnt/data", "10.0.0.1", "3", false, 871);
    let other = MountView::for_test("/mnt/other", "10.0.0.9", "3", false, 871);
    let both = [data.clone(), other.clone()];
    let mut t = Tracker::new();
    let mut m = Metrics::new();
    feed(&mut t, &mut m, &both, &stall("10.0.0.1", 10, 1));
    let first = scrape(&mut m, &t, &both);
    assert_eq!(value(&first, "nfs_trace_stalls_total", r#"mount="/mnt/data""#), Some(1.0), "{first}");
    // The mount goes away (or is remounted elsewhere): its stall stays its.
    let later = scrape(&mut m, &t, std::slice::from_ref(&other));
    assert_eq!(value(&later, "nfs_trace_stalls_total", r#"mount="/mnt/data""#), Some(1.0), "views changed:\n{later}");
    assert_eq!(value(&later, "nfs_trace_stalls_total", r#"mount="""#), None, "no series relabelled:\n{later}");
    // More stalls elsewhere than the tracker keeps for its summary.
    let n = crate::model::tcp::MAX_STALLS_KEPT as u64 + 1;
    for i in 0..n {
        feed(&mut t, &mut m, &both, &stall("10.0.0.9", 10_000 + i * 10_000, 10 + 2 * i));
    }
    let last = scrape(&mut m, &t, &both);
    assert_eq!(value(&last, "nfs_trace_stalls_total", r#"mount="/mnt/data""#), Some(1.0), "{last}");
    assert_eq!(value(&last, "nfs_trace_stalls_total", r#"mount="/mnt/other""#), Some(n as f64));
    assert_eq!(value(&last, "nfs_trace_stall_seconds_total", r#"mount="/mnt/other""#), Some(2.0 * n as f64));
}

/// Per-destination counters outlive the tracker's eviction of their
/// destination, and destinations past the bound go to `other`.
#[test]
fn destination_counters_survive_eviction_and_stay_bounded() {
    let mut t = Tracker::with_capacity(1, crate::model::tcp::MAX_FLOWS);
    let mut m = Metrics::new();
    feed(&mut t, &mut m, &[], &[ev(Kind::ConnectDone, "10.0.0.1", 1, 1, 0, 0), ev(Kind::ConnectDone, "10.0.0.1", 2, 2, 1, 0)]);
    let before = scrape(&mut m, &t, &[]);
    assert_eq!(value(&before, "nfs_trace_connects_total", r#"raddr="10.0.0.1""#), Some(2.0), "{before}");
    assert_eq!(value(&before, "nfs_trace_source_port_reuses_total", r#"raddr="10.0.0.1""#), Some(1.0));
    assert_eq!(value(&before, "nfs_trace_connect_failures_total", r#"raddr="10.0.0.1""#), Some(0.0), "at 0 until one fails");
    // Another destination evicts the first from the tracker.
    feed(&mut t, &mut m, &[], &[ev(Kind::ConnectDone, "10.0.0.3", 3, 3, 2, 0)]);
    let after = scrape(&mut m, &t, &[]);
    assert_eq!(value(&after, "nfs_trace_connects_total", r#"raddr="10.0.0.1""#), Some(2.0), "{after}");
    assert!(after.contains("nfs_trace_tracked_destinations 1\n"));
    // Past the bound: counted under `other`, and the overflow says so.
    let mut t = Tracker::new();
    for i in 0..MAX_DEST_SERIES as u64 + 3 {
        let ip = std::net::Ipv4Addr::from(0x0a01_0000 + i as u32).to_string();
        feed(&mut t, &mut m, &[], &[ev(Kind::ConnectDone, &ip, 10 + i, 100 + i, 9 + i, 0)]);
    }
    let out = scrape(&mut m, &t, &[]);
    let series = out.lines().filter(|l| l.starts_with("nfs_trace_connects_total{")).count();
    assert_eq!(series, MAX_DEST_SERIES + 1, "the bound plus `other`");
    // 2 destinations were already in, so 5 of these went to `other`.
    assert_eq!(value(&out, "nfs_trace_connects_total", r#"raddr="other""#), Some(5.0), "{out}");
    assert_eq!(value(&out, "nfs_trace_metrics_overflow_total", r#"kind="destination""#), Some(5.0));
}

/// A transport's series keep the mount they were made with; its first
/// connect (before the mount shows in mountinfo) waits for the mount.
#[test]
fn transport_series_keep_their_mount() {
    use crate::model::xprt::XprtConnect;
    let conn = |ts_ns, sport, prev: Option<u16>| {
        XprtObservation::Connect(XprtConnect {
            xprt: 0xabc,
            ts_ns,
            task: Task { pid: 1, comm: "kworker".into() },
            flow: Flow { laddr: "10.0.0.2".parse().unwrap(), sport, raddr: "10.0.0.1".parse().unwrap(), dport: 2049, netns: Netns::UNKNOWN },
            srcport: Some(871),
            connects: 1,
            prev_sport: prev,
            reused: prev == Some(sport),
            dropped: None,
            error: 0,
        })
    };
    let data = [MountView::for_test("/mnt/data", "10.0.0.1", "3", false, 871)];
    let t = Tracker::new();
    let mut m = Metrics::new();
    m.observe_xprt(&conn(1, 871, None), &[]);
    let out = scrape(&mut m, &t, &data);
    let has = r#"xprt="0xabc",raddr="10.0.0.1",dport="2049",mount="/mnt/data""#;
    assert_eq!(value(&out, "nfs_trace_transport_reconnects_total", has), Some(0.0), "labelled once the mount shows:\n{out}");
    m.observe_xprt(&conn(2, 871, Some(871)), &[]);
    let out = scrape(&mut m, &t, &[]);
    assert_eq!(value(&out, "nfs_trace_transport_reconnects_total", has), Some(1.0), "{out}");
    assert_eq!(value(&out, "nfs_trace_transport_port_reuses_total", has), Some(1.0));
    assert_eq!(out.lines().filter(|l| l.starts_with("nfs_trace_transport_reconnects_total{")).count(), 1, "{out}");
}

/// Issue 12: an episode counts under its final verdict when it ends, with
/// its duration in the histogram; every verdict's series exists from the
/// start (five, a bounded set), and one going on is not counted yet.
#[test]
fn episodes_are_counted_by_verdict_with_their_duration() {
    use crate::model::episode::EpisodeTracker;
    let mut t = Tracker::new();
    let mut eps = EpisodeTracker::new(Some("--passive"));
    let mut m = Metrics::new();
    let out = scrape(&mut m, &t, &[]);
    for v in ["reused-flow-dropped", "server-or-path-down", "server-not-answering", "path-blackhole", "unknown"] {
        assert!(out.contains(&format!("nfs_trace_episodes_total{{verdict=\"{v}\"}} 0\n")), "{v}: {out}");
    }
    let mut run = |evs: &[Event]| {
        for e in evs {
            for o in t.on_event(e) {
                for ep in eps.on_tcp(&o) {
                    m.observe_episode(&ep);
                }
            }
        }
    };
    // A stall of 2 s (from 1 s to 3 s), then one that is still going on.
    run(&stall("10.0.0.1", 0, 1));
    run(&stall("10.0.0.7", 0, 10)[..2]);
    let out = scrape(&mut m, &t, &[]);
    assert!(out.contains("nfs_trace_episodes_total{verdict=\"unknown\"} 1\n"), "{out}");
    assert_eq!(value(&out, "nfs_trace_episode_duration_seconds_sum", "verdict=\"unknown\""), Some(2.0), "{out}");
    assert_eq!(value(&out, "nfs_trace_episode_duration_seconds_count", "verdict=\"unknown\""), Some(1.0), "{out}");
    assert!(out.contains("nfs_trace_episode_duration_seconds_bucket{verdict=\"unknown\",le=\"1\"} 0\n"), "{out}");
    assert!(out.contains("nfs_trace_episode_duration_seconds_bucket{verdict=\"unknown\",le=\"5\"} 1\n"), "{out}");
    assert!(out.contains("nfs_trace_episodes_total{verdict=\"reused-flow-dropped\"} 0\n"), "{out}");
}

/// Every metric the shipped alert rules and dashboard name is one this
/// exporter has, with the suffix its type gets (`_total` for counters,
/// `_bucket` for the histogram), and every verdict they name is one of
/// ours: a rename here must not silently blind a fleet's alerts.
#[test]
fn alert_rules_and_dashboard_name_only_exported_series() {
    use crate::model::xprt::XprtConnect;
    // A family is listed once it has a series: a stall (destination and
    // stall families) and a transport of a known mount make them all.
    let data = [MountView::for_test("/mnt/data", "10.0.0.1", "3", false, 871)];
    let (mut t, mut m) = (Tracker::new(), Metrics::new());
    feed(&mut t, &mut m, &data, &stall("10.0.0.1", 0, 1));
    m.observe_xprt(
        &XprtObservation::Connect(XprtConnect {
            xprt: 0xabc,
            ts_ns: 1,
            task: Task { pid: 1, comm: "kworker".into() },
            flow: Flow { laddr: "10.0.0.2".parse().unwrap(), sport: 871, raddr: "10.0.0.1".parse().unwrap(), dport: 2049, netns: Netns::UNKNOWN },
            srcport: Some(871),
            connects: 1,
            prev_sport: None,
            reused: false,
            dropped: None,
            error: 0,
        }),
        &data,
    );
    let out = scrape(&mut m, &t, &data);
    let mut exported: Vec<String> = Vec::new();
    for l in out.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let (name, kind) = l.split_once(' ').expect("TYPE line");
        match kind {
            // Text format 0.0.4: the TYPE line already has the suffix.
            "counter" if name.ends_with("_total") => exported.push(name.to_string()),
            "counter" => exported.push(format!("{name}_total")),
            "histogram" => exported.extend(["_bucket", "_sum", "_count"].iter().map(|s| format!("{name}{s}"))),
            _ => exported.push(name.to_string()),
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for file in ["deploy/prometheus/nfs-trace.rules.yml", "deploy/grafana/nfs-trace-dashboard.json"] {
        let text = std::fs::read_to_string(root.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let mut named = 0;
        for (i, _) in text.match_indices("nfs_trace_") {
            let name: String = text[i..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
            assert!(exported.contains(&name), "{file} names {name}, which nfs-trace does not export (it has {exported:?})");
            named += 1;
        }
        assert!(named >= 5, "{file} names only {named} nfs-trace series");
        for (i, _) in text.match_indices("verdict=\\\"").chain(text.match_indices("verdict=\"")) {
            let rest = &text[i..];
            let v: String = rest.trim_start_matches("verdict=").trim_start_matches(['\\', '"']).chars().take_while(|c| c.is_ascii_lowercase() || *c == '-').collect();
            assert!(VerdictName::ALL.iter().any(|x| x.name() == v), "{file} names verdict {v:?}");
        }
    }
}
