use super::timeline::{tick_label, tick_step, ticks};
use super::*;

const S: u64 = 1_000_000_000;

fn mark(ts_ns: u64, kind: MarkKind, label: &str) -> Mark {
    Mark { ts_ns, time: format!("2025-03-01T10:00:{:02}.000Z", ts_ns / S % 60), kind, label: label.to_string() }
}

fn reused_episode() -> EpisodeSection {
    let t0 = 5_000 * S;
    let mut marks = vec![
        mark(t0 + S / 2, MarkKind::Close, "closed by the server"),
        mark(t0 + S, MarkKind::Connect { ok: false }, "connect from :799 (reused)"),
    ];
    for i in 0..6u64 {
        marks.push(mark(t0 + S + (1 << i) * S, MarkKind::SynRetransmit, &format!("SYN retransmit {} from :799", i + 1)));
    }
    marks.push(mark(t0 + 3 * S, MarkKind::Canary { connected: true }, "canary from :41234 connected in 0.4 ms"));
    marks.push(mark(t0 + 4 * S, MarkKind::KernelLine, "nfs: server 10.0.2.2 not responding, still trying"));
    EpisodeSection {
        id: 1,
        verdict: "reused-flow-dropped".into(),
        evidence: "The reconnect from :799 went unanswered while a canary from a fresh port connected.".into(),
        advice: "Mount with noresvport.".into(),
        opened_by: "stall".into(),
        flow: "10.0.2.15:799 → 10.0.2.2:2049 (netns 4026531840)".into(),
        mounts: vec!["/mnt/data".into()],
        start: "2025-03-01T10:00:00.000Z".into(),
        end: Some("2025-03-01T10:01:10.000Z".into()),
        duration_s: 70.0,
        start_ns: t0,
        end_ns: t0 + 70 * S,
        phases: vec![
            Phase { name: "closed".into(), start_ns: t0, end_ns: t0 + S, note: "FIN from server".into() },
            Phase { name: "reconnecting".into(), start_ns: t0 + S, end_ns: t0 + 65 * S, note: "SYN_SENT".into() },
            Phase { name: "recovered".into(), start_ns: t0 + 65 * S, end_ns: t0 + 70 * S, note: String::new() },
        ],
        marks,
        kernel_said: vec!["nfs: server 10.0.2.2 not responding, still trying".into()],
    }
}

fn down_episode() -> EpisodeSection {
    EpisodeSection {
        id: 2,
        verdict: "server-or-path-down".into(),
        start: "2025-03-01T11:00:00.000Z".into(),
        end: None,
        duration_s: 12.5,
        start_ns: 9_000 * S,
        end_ns: 9_000 * S + 12 * S + S / 2,
        ..Default::default()
    }
}

fn page_with(episodes: Vec<EpisodeSection>, mounts: Vec<MountSection>) -> String {
    page(&Page { title: "nfs-trace report: trace.jsonl".into(), facts: vec!["kernel 6.1.0".into()], episodes, mounts })
}

fn assert_no_bad_numbers(html: &str) {
    for bad in ["NaN", "inf", "Infinity"] {
        assert!(!html.contains(bad), "{bad} in the page");
    }
}

#[test]
fn escape_html_covers_the_five_characters() {
    assert_eq!(escape_html("a&b<c>d\"e'f"), "a&amp;b&lt;c&gt;d&quot;e&#39;f");
    assert!(matches!(escape_html("/mnt/data"), Cow::Borrowed("/mnt/data")));
    // Control characters are made visible too, as on the terminal.
    assert_eq!(text("a\x1b[2J<"), "a\\x1b[2J&lt;");
}

#[test]
fn outside_strings_are_escaped_everywhere() {
    let evil = "</script><b>x";
    let mut e = reused_episode();
    e.mounts = vec![evil.into()];
    e.flow = evil.into();
    e.verdict = evil.into();
    e.start = format!("\"{evil}");
    e.kernel_said.push(evil.into());
    e.marks.push(mark(e.start_ns, MarkKind::KernelLine, evil));
    e.phases.push(Phase { name: evil.into(), start_ns: e.start_ns, end_ns: e.start_ns + S, note: evil.into() });
    let m = MountSection {
        mountpoint: evil.into(),
        source: evil.into(),
        vers: evil.into(),
        options: evil.into(),
        reconnects: vec![ReconnectRow { time: evil.into(), sport: 1, prev_sport: None, reused: false, outcome: evil.into() }],
    };
    let html = page(&Page { title: evil.into(), facts: vec![evil.into()], episodes: vec![e], mounts: vec![m] });
    assert!(!html.contains("<b>"), "raw outside markup in the page");
    assert!(!html.contains("</script>"));
    assert!(html.contains("&lt;/script&gt;&lt;b&gt;x"));
    // The attribute value cannot be closed early.
    assert!(html.contains("data-start=\"&quot;&lt;/script&gt;"));
}

#[test]
fn each_verdict_and_start_is_in_the_page() {
    let mut episodes = vec![reused_episode(), down_episode()];
    for (i, v) in ["server-not-answering", "path-blackhole", "unknown"].into_iter().enumerate() {
        let mut e = down_episode();
        e.id = 3 + i as u64;
        e.verdict = v.into();
        e.start = format!("2025-03-01T12:0{i}:00.000Z");
        episodes.push(e);
    }
    let html = page_with(episodes.clone(), vec![]);
    for e in &episodes {
        assert!(html.contains(&format!("id=\"episode-{}\"", e.id)));
        assert!(html.contains(&format!("href=\"#episode-{}\"", e.id)));
        assert!(html.contains(&format!("data-verdict=\"{}\"", e.verdict)));
        assert!(html.contains(&format!("data-start=\"{}\"", e.start)));
        assert!(html.contains(&format!(">{}</span>", e.verdict)), "badge of {}", e.verdict);
    }
    // Each verdict its own badge colour.
    for class in ["v-reused", "v-down", "v-silent", "v-blackhole", "v-unknown"] {
        assert!(html.contains(&format!("badge {class}")), "{class}");
    }
    assert!(html.contains("still going on when the recording ended"));
}

#[test]
fn every_mark_time_is_in_the_table() {
    let e = reused_episode();
    let html = page_with(vec![e.clone()], vec![]);
    for m in &e.marks {
        assert!(html.contains(&format!(">{}</td>", m.time)), "{}", m.time);
        assert!(html.contains(&m.label));
    }
    assert!(html.contains("+1.000 s"));
    assert!(html.contains("canary connected"));
    assert!(html.contains("SYN retransmits (6)"));
}

#[test]
fn zero_length_episode_has_no_bad_numbers() {
    let mut e = down_episode();
    e.end_ns = e.start_ns;
    e.duration_s = 0.0;
    e.phases = vec![Phase { name: "unanswered".into(), start_ns: e.start_ns, end_ns: e.start_ns, note: String::new() }];
    e.marks = vec![mark(e.start_ns, MarkKind::RpcTimeout, "RPC timeout")];
    let html = page_with(vec![e], vec![]);
    assert_no_bad_numbers(&html);
    assert!(html.contains("+0 s"));
    // Nonsense from the caller is shown as unknown, not as NaN.
    let mut e = down_episode();
    e.duration_s = f64::NAN;
    e.end_ns = 0;
    assert_no_bad_numbers(&page_with(vec![e], vec![]));
}

#[test]
fn marks_outside_the_range_are_clamped() {
    let mut e = reused_episode();
    e.marks.push(mark(e.start_ns - 5 * S, MarkKind::Close, "before"));
    e.marks.push(mark(e.end_ns + 500 * S, MarkKind::TransportDrop, "after"));
    e.phases.push(Phase { name: "unanswered".into(), start_ns: 0, end_ns: u64::MAX, note: String::new() });
    let html = page_with(vec![e], vec![]);
    assert_no_bad_numbers(&html);
    // The table keeps the real time; the drawing stays inside the plot.
    assert!(html.contains("-5.000 s"));
    for attr in html.split(" x=\"").skip(1).chain(html.split(" cx=\"").skip(1)).chain(html.split(" x1=\"").skip(1)) {
        let v: f64 = attr.split('"').next().unwrap().parse().unwrap();
        assert!((-10.0..=1000.0).contains(&v), "x {v} outside the picture");
    }
}

#[test]
fn hundreds_of_marks_stay_bounded() {
    let mut e = reused_episode();
    for i in 0..5000u64 {
        e.marks.push(mark(e.start_ns + i * S / 100, MarkKind::DataRetransmit, "data retransmit"));
    }
    let html = page_with(vec![e], vec![]);
    // One glyph per pixel column at most, and the table is cut.
    assert!(html.matches("class=\"mk data\"").count() < 1000 + MAX_MARK_ROWS + 1);
    assert!(html.contains("more events not listed"));
    assert!(html.contains("data retransmits (5000)"));
}

#[test]
fn tick_step_gives_five_to_ten_intervals() {
    assert_eq!(tick_step(7.0), 1.0);
    assert_eq!(tick_step(10.0), 1.0);
    assert_eq!(tick_step(11.0), 2.0);
    assert_eq!(tick_step(70.0), 10.0);
    assert_eq!(tick_step(200.0), 30.0);
    assert_eq!(tick_step(0.3), 0.05);
    assert_eq!(tick_step(0.0), 0.001);
    assert_eq!(tick_step(f64::NAN), 0.001);
    assert_eq!(tick_step(100.0 * 86400.0), 864000.0);
    let mut span = 0.004;
    while span < 1e7 {
        let n = ticks(span).len();
        assert!((5..=11).contains(&n), "{n} ticks over {span} s");
        span *= 1.37;
    }
    assert_eq!(tick_label(0.0, 1.0), "+0 s");
    assert_eq!(tick_label(1.5, 0.5), "+1.5 s");
    assert_eq!(tick_label(600.0, 300.0), "+10 min");
}

#[test]
fn the_page_is_self_contained() {
    let m = MountSection {
        mountpoint: "/mnt/data".into(),
        source: "10.0.2.2:/export".into(),
        vers: "4.2".into(),
        options: String::new(),
        reconnects: vec![ReconnectRow {
            time: "2025-03-01T10:00:01.000Z".into(),
            sport: 799,
            prev_sport: Some(799),
            reused: true,
            outcome: "no answer".into(),
        }],
    };
    let html = page_with(vec![reused_episode(), down_episode()], vec![m]);
    for bad in ["http://", "https://", "src=", "<script", "<link", "@import", "url("] {
        assert!(!html.contains(bad), "{bad} in the page");
    }
    assert!(html.contains("@media print"));
    assert!(html.contains("prefers-color-scheme: dark"));
    assert!(html.contains("break-inside: avoid"));
    assert!(html.contains("yes, same port"));
}

#[test]
fn empty_page_says_so() {
    let html = page(&Page::default());
    assert!(html.contains("No episodes in this recording."));
    assert!(html.contains("No NFS mounts seen."));
    let m = MountSection { mountpoint: "/mnt/a".into(), ..Default::default() };
    let html = page_with(vec![], vec![m]);
    assert!(html.contains("No reconnects seen."));
    assert_no_bad_numbers(&html);
}
