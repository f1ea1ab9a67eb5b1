//! Renderer tests: the hand-written JSON equals serde's, and what people read.
use super::{
    Format, Renderer,
    json::{close_body, connect_body},
};
use crate::{
    flow::{Flow, Netns, Task},
    host::nfsmounts::MountView,
    kernel::lost::Lost,
    model::episode::EpisodeTracker,
    model::tcp::{Attempt, CloseHow, Observation, Outcome, Reuse, Tracker, Who},
    model::xprt::XprtTracker,
    output::clock::Clock,
};
use crate::kernel::decode::{Event, Kind};
use nfs_trace_common::tcp_state::ESTABLISHED;

fn connect(ts_ms: u64, sk: u64, sport: u16) -> Event {
    let task = Task { pid: 7, comm: "mount.nfs".into() };
    let flow = Flow { laddr: "127.0.0.1".parse().unwrap(), sport, raddr: "127.0.0.1".parse().unwrap(), dport: 2049, netns: Netns::UNKNOWN };
    Event::for_test(Kind::ConnectDone, ts_ms * 1_000_000, sk, task, flow)
}

fn render(format: Format, evs: &[Event]) -> String {
    render_with(format, evs, &[])
}

fn render_with(format: Format, evs: &[Event], views: &[MountView]) -> String {
    let mut t = Tracker::new();
    // As watch runs it: episodes from the same observations (no canary).
    let mut eps = EpisodeTracker::new(Some("--passive"));
    let mut r = Renderer::new(Vec::new(), format, Clock::fixed(0));
    for e in evs {
        for o in t.on_event(e) {
            r.observation(&o, views).unwrap();
            for ep in eps.on_tcp(&o) {
                r.episode(&ep, views, &[]).unwrap();
            }
        }
    }
    r.summary(&t, &XprtTracker::new(false), views, Vec::new(), Lost { events: 3, sockets: 0, connects: 1, missed_runs: 0 }, 1_000_000_000, &eps)
        .unwrap();
    String::from_utf8(r.out).unwrap()
}

/// A reconnect from the old port that retransmits its SYN for 20 s, then connects.
fn stalled_reconnect() -> Vec<Event> {
    let first = connect(10, 1, 871);
    let mut closed = connect(1_000, 1, 871);
    closed.kind = Kind::Closed;
    closed.oldstate = ESTABLISHED;
    closed.newstate = nfs_trace_common::tcp_state::CLOSE;
    let mut rtx = connect(2_000, 2, 871);
    rtx.kind = Kind::SynRetransmit;
    rtx.start_ns = 1_500_000_000;
    rtx.syn_retrans = 1;
    let mut done = connect(21_500, 2, 871);
    done.start_ns = 1_500_000_000;
    done.syn_retrans = 9;
    vec![first, closed, rtx, done]
}

/// An established flow the path stopped carrying: its data retransmits
/// reported live, and phase (a) of its episode with the run's start.
#[test]
fn unanswered_data_is_a_record_a_line_and_phase_a() {
    let first = connect(10, 1, 871);
    let mut rtx = connect(3_400, 1, 871);
    rtx.kind = Kind::DataRetransmit;
    (rtx.oldstate, rtx.newstate) = (ESTABLISHED, ESTABLISHED);
    rtx.syn_ns = 1_800_000_000;
    rtx.syn_retrans = 4;
    let json = render(Format::Json, &[first.clone(), rtx.clone()]);
    let lines: Vec<serde_json::Value> = json.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let d = lines.iter().find(|l| l["type"] == "data_retransmit").expect("a data_retransmit record");
    assert_eq!((d["retransmits"].as_u64(), d["since_mono_ns"].as_u64(), d["unanswered_ms"].as_f64()), (Some(4), Some(1_800_000_000), Some(1600.0)));
    assert_eq!((d["sport"].as_u64(), d["dport"].as_u64()), (Some(871), Some(2049)));
    let e = lines.iter().find(|l| l["type"] == "episode").expect("an episode");
    assert_eq!((e["opened_by"].as_str(), e["verdict"].as_str()), (Some("unanswered"), Some("path-blackhole")));
    let u = &e["phases"]["unanswered"];
    assert_eq!((u["mono_ns"].as_u64(), u["data_retransmits"].as_u64()), (Some(1_800_000_000), Some(4)), "{e}");
    assert!(e["phases"]["unanswered_note"].is_null());
    let human = render(Format::Human { color: false }, &[first, rtx]);
    assert!(human.contains("127.0.0.1:871 → 127.0.0.1:2049  UNANSWERED: data retransmitted 4 times without an ACK for 1600.0 ms"), "{human}");
    assert!(human.contains("opened by data unanswered; verdict path-blackhole"), "{human}");
}

/// The hand-written hot records are byte for byte what serde writes.
#[test]
fn fast_connect_and_close_lines_equal_the_serde_ones() {
    let who = |laddr: &str, raddr: &str, comm: &str, netns: u32| Who {
        flow: Flow { laddr: laddr.parse().unwrap(), sport: 871, raddr: raddr.parse().unwrap(), dport: 2049, netns: Netns(netns) },
        task: Task { pid: 4242, comm: comm.into() },
        sk: 0xffff_8881_0234_5678,
        xprt: 0,
    };
    let whos = [
        who("10.0.0.2", "10.0.0.1", "mount.nfs", 4026531840),
        who("fd00::2", "fd00::1", "we\"ird\u{1}\\name", 0),
    ];
    let outcomes = [Outcome::Established, Outcome::Refused, Outcome::Error(libc::EHOSTUNREACH)];
    for w in &whos {
        for (i, outcome) in outcomes.iter().enumerate() {
            let a = Attempt {
                who: w.clone(),
                ts_ns: 1_234_567_891_234,
                outcome: *outcome,
                errno: if i == 1 { libc::ECONNREFUSED } else { 0 },
                syn_sent_ns: 1_500_321,
                syn_retrans: 2,
                attempt: 7,
                reused: i == 0,
            };
            let close = Observation::Close { who: w.clone(), ts_ns: 9_000_000_001, how: [CloseHow::LocalAbort, CloseHow::Reset, CloseHow::Error(110)][i], errno: [0, 104, 110][i], lifetime_ns: 12_345_678 };
            for o in [Observation::Connect(a.clone()), close] {
                let mut fast = Renderer::new(Vec::new(), Format::Json, Clock::fixed(1_700_000_000_000_000_000));
                fast.observation(&o, &[]).unwrap();
                let mut slow = Renderer::new(Vec::new(), Format::Json, Clock::fixed(1_700_000_000_000_000_000));
                match &o {
                    Observation::Connect(a) => slow.json_sock("connect", &a.who, a.ts_ns, connect_body(a)).unwrap(),
                    Observation::Close { who, ts_ns, how, errno, lifetime_ns } => {
                        slow.json_sock("close", who, *ts_ns, close_body(*how, *errno, *lifetime_ns)).unwrap()
                    }
                    _ => unreachable!(),
                }
                assert_eq!(String::from_utf8(fast.out).unwrap(), String::from_utf8(slow.out).unwrap());
            }
        }
    }
}

/// `reuse` is hand-written too (as hot as connect under a storm from
/// ephemeral ports); and a process name that needs escaping still is.
#[test]
fn fast_reuse_lines_equal_the_serde_ones() {
    let clock = Clock::fixed(1_700_000_000_000_000_000);
    for (comm, prev_end, chance) in [("mount.nfs", Some(1_000_000_007), false), ("we\"ird\u{1}\\name\u{7f}é", None, true)] {
        let r = Reuse {
            who: Who {
                flow: Flow { laddr: "10.0.0.2".parse().unwrap(), sport: 871, raddr: "10.0.0.1".parse().unwrap(), dport: 2049, netns: Netns(7) },
                task: Task { pid: 4242, comm: comm.into() },
                sk: 0xffff_8881_0234_5678,
                xprt: 0,
            },
            ts_ns: 1_234_567_891_234,
            streak: 3,
            prev_outcome: Outcome::Established,
            prev_end_ns: prev_end,
            gap_ns: prev_end.map(|e| 1_234_567_891_234 - e),
            chance,
        };
        let mut fast = Renderer::new(Vec::new(), Format::Json, clock);
        fast.observation(&Observation::Reuse(r.clone()), &[]).unwrap();
        let mut slow = Renderer::new(Vec::new(), Format::Json, clock);
        slow.json_sock("reuse", &r.who, r.ts_ns, super::json::reuse_body(&r, &clock)).unwrap();
        assert_eq!(String::from_utf8(fast.out).unwrap(), String::from_utf8(slow.out).unwrap());
    }
}

#[test]
fn a_stall_names_its_mount_and_says_what_it_shows() {
    let view = MountView::for_test("/mnt/data", "127.0.0.1", "4.0", false, 871);
    let out = render_with(Format::Json, &stalled_reconnect(), std::slice::from_ref(&view));
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let end = lines.iter().find(|l| l["type"] == "stall_end").expect("a stall_end record");
    assert_eq!(end["duration_s"], 20.0);
    assert_eq!(end["retransmits"], 9);
    assert_eq!(end["mounts"], serde_json::json!(["/mnt/data"]));
    let verdict = end["verdict"].as_str().unwrap();
    assert!(verdict.contains("port 871") && verdict.contains("20.0 s") && verdict.contains("/mnt/data (vers=4.0)"), "{verdict}");
    let live = lines.iter().find(|l| l["type"] == "stall").expect("a live stall record");
    assert_eq!(live["end"], serde_json::Value::Null);
    let summary = &lines.last().unwrap()["stalls"][0];
    assert_eq!(summary["mounts"], serde_json::json!(["/mnt/data"]));
    assert_eq!(summary["duration_s"], 20.0);
    assert_eq!(summary["ongoing"], false);
    let human = render_with(Format::Human { color: false }, &stalled_reconnect(), &[view]);
    assert!(human.contains("stall ended after 20.0s") || human.contains("stall ended after 20.0 s"), "{human}");
    assert!(human.contains("(mount /mnt/data)") && human.contains("[/mnt/data]"), "{human}");
}

/// A stall on a pod's volume (kubelet's mount path) names the pod in its
/// records, in the episode and in the human lines.
#[test]
fn a_stall_on_a_pod_volume_names_the_pod() {
    let uid = "8f0c2b1e-3a4d-4c5e-9f60-7a8b9c0d1e2f";
    let mut view = MountView::for_test(&format!("/var/lib/kubelet/pods/{uid}/volumes/kubernetes.io~nfs/shared"), "127.0.0.1", "4.0", false, 871);
    view.pods = crate::host::kubelet::pods_of(&view);
    let out = render_with(Format::Json, &stalled_reconnect(), std::slice::from_ref(&view));
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let pods = serde_json::json!([{"uid": uid, "volume": "shared"}]);
    let end = lines.iter().find(|l| l["type"] == "stall_end").expect("a stall_end record");
    assert_eq!(end["pods"], pods, "{end}");
    let ep = lines.iter().find(|l| l["type"] == "episode").expect("an episode record");
    assert_eq!(ep["pods"], pods, "{ep}");
    // A mount of no pod has no `pods` key at all.
    let plain = render_with(Format::Json, &stalled_reconnect(), &[MountView::for_test("/mnt/data", "127.0.0.1", "4.0", false, 871)]);
    assert!(!plain.contains("\"pods\""), "{plain}");
    let human = render_with(Format::Human { color: false }, &stalled_reconnect(), &[view]);
    assert!(human.contains(&format!("[pod {uid} volume shared]")), "{human}");
}

#[test]
fn json_lines_carry_schema_and_reuse() {
    let out = render(Format::Json, &[connect(10, 1, 999), connect(20, 2, 999)]);
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(lines.iter().all(|l| l["v"] == super::SCHEMA_VERSION));
    let types: Vec<_> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["connect", "connect", "reuse", "summary"]);
    assert_eq!(lines[1]["reused"], true);
    assert_eq!(lines[2]["sport"], 999);
    assert_eq!(lines[2]["streak"], 1);
    assert_eq!(lines[0]["raddr"], "127.0.0.1");
    assert_eq!(lines[0]["syn_sent_us"], 100);
    assert_eq!(lines[3]["lost_events"], 3);
    assert_eq!(lines[3]["destinations"][0]["reuses"], 1);
    assert_eq!(lines[0]["time"], "1970-01-01T00:00:00.010000Z");
}

#[test]
fn human_lines_mark_reuse_and_colour_only_on_request() {
    let plain = render(Format::Human { color: false }, &[connect(10, 1, 999), connect(20, 2, 999)]);
    assert!(plain.contains("REUSED source port 999 (2nd use in a row"), "{plain}");
    assert!(plain.contains("127.0.0.1:999 → 127.0.0.1:2049"));
    assert!(plain.contains("lost events: 3"));
    assert!(!plain.contains('\x1b'));
    let coloured = render(Format::Human { color: true }, &[connect(10, 1, 999), connect(20, 2, 999)]);
    assert!(coloured.contains("\x1b[1;31mREUSED"));
}

/// `connect(…)` in network namespace `netns`.
fn in_ns(netns: u32, mut e: Event) -> Event {
    e.flow.netns = Netns(netns);
    e
}

/// Every JSON record with a flow carries its namespace (a number; null
/// only when the kernel could not read it). Human lines name it only once a
/// second namespace was seen: on a host without containers it is noise.
#[test]
fn netns_is_in_json_always_and_in_human_lines_once_there_are_two() {
    let one = [in_ns(4026531840, connect(10, 1, 999)), in_ns(4026531840, connect(20, 2, 999))];
    let out = render(Format::Json, &one);
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for l in &lines[..3] {
        assert_eq!(l["netns"], 4026531840u32, "{l}");
    }
    assert_eq!(lines[3]["destinations"][0]["netns"], 4026531840u32);
    let unknown = render(Format::Json, &[connect(10, 1, 999)]);
    let first: serde_json::Value = serde_json::from_str(unknown.lines().next().unwrap()).unwrap();
    assert_eq!(first["netns"], serde_json::Value::Null, "unknown is null, not a namespace 0");

    let human = render(Format::Human { color: false }, &one);
    assert!(!human.contains("netns"), "one namespace: not named\n{human}");
    let two = render(Format::Human { color: false }, &[one[0].clone(), in_ns(4026532301, connect(20, 2, 999))]);
    let lines: Vec<&str> = two.lines().collect();
    assert!(!lines[0].contains("netns"), "{two}");
    assert!(lines[1].contains("127.0.0.1:999 → 127.0.0.1:2049 netns 4026532301  SYN_SENT→ESTABLISHED"), "{two}");
    assert!(!two.contains("REUSED"), "another namespace's flow is no reuse\n{two}");
    assert!(two.contains("127.0.0.1 → 127.0.0.1:2049 netns 4026531840") && two.contains("127.0.0.1 → 127.0.0.1:2049 netns 4026532301"), "summary rows per namespace\n{two}");
}

/// Issue 12: an episode record carries its verdict by name, its evidence as
/// a sentence, its phases with times, the flattened flow and its mounts; the
/// human lines say when it opened and ended, and the summary lists it.
#[test]
fn an_episode_record_has_verdict_evidence_phases_and_mounts() {
    let view = MountView::for_test("/mnt/data", "127.0.0.1", "3", false, 871);
    let out = render_with(Format::Json, &stalled_reconnect(), std::slice::from_ref(&view));
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let eps: Vec<&serde_json::Value> = lines.iter().filter(|l| l["type"] == "episode").collect();
    let states: Vec<&str> = eps.iter().map(|l| l["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["opened", "ended"], "{out}");
    let e = eps[1];
    assert_eq!(e["v"], 2);
    assert_eq!((e["id"].as_u64(), e["opened_by"].as_str()), (Some(1), Some("stall")));
    assert_eq!(e["verdict"], "unknown");
    let evidence = e["evidence"].as_str().unwrap();
    assert!(evidence.contains("reused port 871") && evidence.ends_with("missing: no canary: --passive"), "{evidence}");
    assert!(e["advice"].as_str().unwrap().contains("--passive"), "{e}");
    // The flow, flattened as in every record, with netns; the mounts.
    assert_eq!((e["laddr"].as_str(), e["sport"].as_u64(), e["raddr"].as_str(), e["dport"].as_u64()), (Some("127.0.0.1"), Some(871), Some("127.0.0.1"), Some(2049)));
    assert!(e.as_object().unwrap().contains_key("netns"), "{e}");
    assert_eq!(e["mounts"], serde_json::json!(["/mnt/data"]));
    assert_eq!((e["start"].as_str(), e["end"].as_str()), (Some("1970-01-01T00:00:01.500000Z"), Some("1970-01-01T00:00:21.500000Z")));
    assert_eq!((e["duration_s"].as_f64(), e["ongoing"].as_bool()), (Some(20.0), Some(false)));
    let p = &e["phases"];
    assert!(p["unanswered"].is_null());
    assert!(p["unanswered_note"].as_str().unwrap().starts_with("not observed: no data retransmit"), "{p}");
    // Its flow's earlier close (straight to CLOSE, no error: a local
    // abort) dates phase (b).
    assert_eq!(p["closed"]["how"], "local");
    assert_eq!(p["closed"]["time"], "1970-01-01T00:00:01.000000Z");
    assert_eq!(p["reconnect"]["ports"], serde_json::json!([871]));
    assert_eq!((p["reconnect"]["syn_retransmits"].as_u64(), p["reconnect"]["reused"].as_bool()), (Some(9), Some(true)));
    assert!(p["reconnect"]["canary"].is_null());
    assert_eq!(p["recovered"]["time"], "1970-01-01T00:00:21.500000Z");
    let summary = &lines.last().unwrap()["episodes"];
    assert_eq!(summary.as_array().map(Vec::len), Some(1), "{summary}");
    assert_eq!(summary[0]["state"], "ended");

    let human = render_with(Format::Human { color: false }, &stalled_reconnect(), &[view]);
    assert!(human.contains("EPISODE #1  127.0.0.1:871 → 127.0.0.1:2049 (mount /mnt/data)  opened by a stall; verdict unknown: "), "{human}");
    assert!(human.contains("recovered after 20.0 s; verdict unknown"), "{human}");
    assert!(human.contains("Episodes (first symptom to recovery"), "{human}");
}

/// A canary's record and line: what it found, and what that means.
#[test]
fn canary_records_and_lines_say_what_the_fresh_port_found() {
    use crate::{
        flow::DestKey,
        model::canary::{CanaryOutcome, CanaryResult},
    };
    let dest = DestKey { laddr: "10.0.0.2".parse().unwrap(), raddr: "10.0.0.1".parse().unwrap(), dport: 2049, netns: Netns(4026531840) };
    let at = |outcome| CanaryResult { dest, sport: 40123, start_ns: 5_000_000_000, end_ns: 5_000_400_000, outcome };
    let one = |format, r: &CanaryResult, stalled| {
        let mut out = Renderer::new(Vec::new(), format, Clock::fixed(0));
        out.canary(r, stalled).unwrap();
        String::from_utf8(out.out).unwrap()
    };
    let human = one(Format::Human { color: false }, &at(CanaryOutcome::Connected { rtt_ns: 400_000 }), Some(790));
    assert!(
        human.contains("canary from :40123 to 10.0.0.1:2049 connected in 400 µs while port 790 stalls — the server answers new flows"),
        "{human}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&one(Format::Json, &at(CanaryOutcome::Connected { rtt_ns: 400_000 }), Some(790))).unwrap();
    assert_eq!(json["type"], "canary");
    assert_eq!((json["laddr"].as_str(), json["raddr"].as_str(), json["dport"].as_u64()), (Some("10.0.0.2"), Some("10.0.0.1"), Some(2049)));
    assert_eq!((json["netns"].as_u64(), json["sport"].as_u64(), json["stalled_sport"].as_u64()), (Some(4026531840), Some(40123), Some(790)));
    assert_eq!((json["outcome"].as_str(), json["rtt_ms"].as_f64()), (Some("connected"), Some(0.4)));
    assert!(json["errno"].is_null() && json["start"].is_string() && json["end"] == json["time"], "{json}");

    let timed_out = CanaryResult { end_ns: 8_000_000_000, ..at(CanaryOutcome::TimedOut) };
    let human = one(Format::Human { color: false }, &timed_out, None);
    assert!(human.contains("timed out after 3000.0 ms while a flow to it stalls — the server or the path drops new flows too"), "{human}");
    let json: serde_json::Value = serde_json::from_str(&one(Format::Json, &timed_out, None)).unwrap();
    assert_eq!((json["outcome"].as_str(), json["duration_ms"].as_f64()), (Some("timed_out"), Some(3000.0)));
    assert!(json["rtt_ms"].is_null() && json["stalled_sport"].is_null());

    let json: serde_json::Value = serde_json::from_str(&one(Format::Json, &at(CanaryOutcome::Error(libc::EHOSTUNREACH)), Some(790))).unwrap();
    assert_eq!((json["outcome"].as_str(), json["errno"].as_i64(), json["errno_name"].as_str()), (Some("error"), Some(i64::from(libc::EHOSTUNREACH)), Some("EHOSTUNREACH")));
    let human = one(Format::Human { color: false }, &at(CanaryOutcome::Refused), Some(790));
    assert!(human.contains("refused while port 790 stalls"), "{human}");
}
