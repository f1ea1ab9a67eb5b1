//! The report page (`report --html`) as a browser shows it: headless
//! Chromium renders a page with two episodes and two mounts, light and dark;
//! the screenshots must show something (and the themes must differ), and the
//! DOM Chromium parsed must hold each episode's verdict and start, and the
//! mount points as text (an odd one escaped, not turned into markup).
//!
//! Set NFS_TRACE_SCREENSHOT_DIR to keep the page and its screenshots there.
use std::{fs, path::PathBuf};

use nfs_trace::output::html::{EpisodeSection, Mark, MarkKind, MountSection, Page, Phase, ReconnectRow, page};
use nfs_trace_tests::chromium::{self, Theme};

const S: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;

/// Wall time of a monotonic instant, as `report` would print it; the
/// recording started at 09:00:00 UTC at monotonic 1000 s.
fn wall(ts_ns: u64) -> String {
    let since = ts_ns - 1_000 * S;
    let (s, ms) = (since / S, since % S / MS);
    format!("2025-03-01T{:02}:{:02}:{:02}.{ms:03}Z", 9 + s / 3600, s / 60 % 60, s % 60)
}

fn mark(ts_ns: u64, kind: MarkKind, label: &str) -> Mark {
    Mark { ts_ns, time: wall(ts_ns), kind, label: label.to_string() }
}

fn phase(name: &str, start_ns: u64, end_ns: u64, note: &str) -> Phase {
    Phase { name: name.to_string(), start_ns, end_ns, note: note.to_string() }
}

/// The middlebox forgot the flow; the reconnect from the same port is
/// dropped for a minute while a canary from a fresh port gets through.
fn reused_flow_dropped() -> EpisodeSection {
    let t0 = 1_125 * S + 250 * MS;
    let at = |ms: u64| t0 + ms * MS;
    let mut marks = Vec::new();
    for (i, ms) in [200, 600, 1_400, 3_000, 6_200].into_iter().enumerate() {
        marks.push(mark(at(ms), MarkKind::DataRetransmit, &format!("data retransmit {} from :799", i + 1)));
    }
    marks.push(mark(at(9_000), MarkKind::TransportDrop, "xprt 10.0.2.2 closed by the client"));
    marks.push(mark(at(9_010), MarkKind::Close, "FIN to 10.0.2.2:2049"));
    marks.push(mark(at(9_300), MarkKind::Connect { ok: false }, "connect from :799 (reused), stuck in SYN_SENT"));
    for (i, ms) in [10_300, 12_300, 16_300, 24_300, 40_300, 72_300].into_iter().enumerate() {
        marks.push(mark(at(ms), MarkKind::SynRetransmit, &format!("SYN retransmit {} from :799", i + 1)));
    }
    marks.push(mark(at(12_000), MarkKind::Canary { connected: true }, "canary from :45678 connected in 0.3 ms"));
    marks.push(mark(at(60_000), MarkKind::RpcTimeout, "RPC major timeout, xid 0x1a2b3c4d (READ)"));
    marks.push(mark(at(60_000), MarkKind::KernelLine, "nfs: server 10.0.2.2 not responding, still trying"));
    marks.push(mark(at(75_000), MarkKind::Connect { ok: true }, "connect from :799 answered"));
    marks.push(mark(at(75_100), MarkKind::KernelLine, "nfs: server 10.0.2.2 OK"));
    EpisodeSection {
        id: 1,
        verdict: "reused-flow-dropped".to_string(),
        evidence: "The reconnect from port 799 (the port of the connection before it) went unanswered for 65.7 s \
                   while a canary from a fresh port connected to the same server in 0.3 ms."
            .to_string(),
        advice: "Mount with noresvport so each reconnect takes a fresh source port, or make the middlebox forget closed flows sooner."
            .to_string(),
        opened_by: "unanswered".to_string(),
        flow: "10.0.2.15:799 → 10.0.2.2:2049 (netns 4026531840)".to_string(),
        mounts: vec!["/mnt/data".to_string()],
        start: wall(t0),
        end: Some(wall(at(80_000))),
        duration_s: 80.0,
        start_ns: t0,
        end_ns: at(80_000),
        phases: vec![
            phase("unanswered", t0, at(9_000), "data sent, no ACK"),
            phase("closed", at(9_000), at(9_300), "the client closed the transport"),
            phase("reconnecting", at(9_300), at(75_000), "SYN_SENT from :799"),
            phase("recovered", at(75_000), at(80_000), "ESTABLISHED, RPCs answered"),
        ],
        marks,
        kernel_said: vec![
            "nfs: server 10.0.2.2 not responding, still trying".to_string(),
            "nfs: server 10.0.2.2 OK".to_string(),
        ],
    }
}

/// The server went away and had not come back when the recording ended.
fn server_or_path_down() -> EpisodeSection {
    let t0 = 1_600 * S;
    let at = |ms: u64| t0 + ms * MS;
    let mut marks = vec![mark(at(1_500), MarkKind::Connect { ok: false }, "connect from :801 (fresh), no answer")];
    for (i, ms) in [2_500, 4_500, 8_500, 16_500].into_iter().enumerate() {
        marks.push(mark(at(ms), MarkKind::SynRetransmit, &format!("SYN retransmit {} from :801", i + 1)));
    }
    marks.push(mark(at(5_000), MarkKind::Canary { connected: false }, "canary from :39012 timed out after 3 s"));
    marks.push(mark(at(20_000), MarkKind::KernelLine, "nfs: server 10.0.2.3 not responding, timed out"));
    EpisodeSection {
        id: 2,
        verdict: "server-or-path-down".to_string(),
        evidence: "Both the reconnect from port 801 and a canary from a fresh port went unanswered.".to_string(),
        advice: "Check that the server is up and reachable; the source port is not the cause.".to_string(),
        opened_by: "stall".to_string(),
        flow: "10.0.2.15:801 → 10.0.2.3:2049 (netns 4026531840)".to_string(),
        mounts: vec!["/mnt/odd <name>".to_string()],
        start: wall(t0),
        end: None,
        duration_s: 24.0,
        start_ns: t0,
        end_ns: at(24_000),
        phases: vec![phase("unanswered", t0, at(1_500), ""), phase("reconnecting", at(1_500), at(24_000), "SYN_SENT from :801")],
        marks,
        kernel_said: vec!["nfs: server 10.0.2.3 not responding, timed out".to_string()],
    }
}

fn test_page() -> Page {
    let row = |ts: u64, sport, prev_sport, reused, outcome: &str| ReconnectRow {
        time: wall(ts),
        sport,
        prev_sport,
        reused,
        outcome: outcome.to_string(),
    };
    Page {
        title: "nfs-trace report: trace.jsonl".to_string(),
        facts: vec![
            "kernel 6.1.0-31-amd64 on nfs-client-1".to_string(),
            "2025-03-01T09:00:00.000Z to 2025-03-01T09:10:24.000Z (10 min 24 s)".to_string(),
            "18,204 records read, 0 lines skipped, 0 events lost".to_string(),
        ],
        episodes: vec![reused_flow_dropped(), server_or_path_down()],
        mounts: vec![
            MountSection {
                mountpoint: "/mnt/data".to_string(),
                source: "10.0.2.2:/export/data".to_string(),
                vers: "4.2".to_string(),
                options: String::new(),
                reconnects: vec![
                    row(1_020 * S, 799, None, false, "connected in 0.4 ms"),
                    row(1_134 * S + 550 * MS, 799, Some(799), true, "unanswered for 65.7 s, then connected"),
                ],
            },
            MountSection {
                mountpoint: "/mnt/odd <name>".to_string(),
                source: "10.0.2.3:/export/odd".to_string(),
                vers: "3".to_string(),
                options: "noresvport".to_string(),
                reconnects: vec![],
            },
        ],
    }
}

/// Where the test writes: a fresh directory of its own.
fn work_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nfs-trace-report-page-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn report_page_renders_in_chromium() {
    assert!(chromium::binary().is_some(), "headless Chromium is not installed (Debian's chromium): run `cargo xtask setup`");
    let p = test_page();
    let dir = work_dir();
    let html = dir.join("report.html");
    fs::write(&html, page(&p)).unwrap();

    let mut backgrounds = Vec::new();
    for (theme, name) in [(Theme::Light, "light"), (Theme::Dark, "dark")] {
        let png = dir.join(format!("report-page-{name}.png"));
        chromium::screenshot_themed(&html, &png, 1280, 2400, theme).unwrap();
        let stats = chromium::png_not_blank(&fs::read(&png).unwrap()).unwrap();
        eprintln!("{name}: {stats:?}, {:.1} % not background", stats.fraction() * 100.0);
        assert_eq!((stats.width, stats.height), (1280, 2400));
        assert!(stats.fraction() > 0.01, "{name} screenshot nearly blank: {stats:?}");
        assert!(stats.distinct_colours > 20, "{name} screenshot has few colours: {stats:?}");
        backgrounds.push(stats.background_luma());
    }
    assert!(backgrounds[0] > 200.0, "the light theme's background is dark: luma {}", backgrounds[0]);
    assert!(backgrounds[1] < 60.0, "the dark theme's background is light: luma {}", backgrounds[1]);

    let dom = chromium::dump_dom(&html).unwrap();
    for e in &p.episodes {
        assert!(dom.contains(&e.verdict), "verdict {} not in the DOM", e.verdict);
        assert!(dom.contains(&e.start), "start {} not in the DOM", e.start);
        assert!(dom.contains(&format!("data-verdict=\"{}\"", e.verdict)));
        assert!(dom.contains(&format!("data-start=\"{}\"", e.start)));
        assert!(dom.contains(&format!("id=\"episode-{}\"", e.id)));
        for m in &e.marks {
            assert!(dom.contains(&m.time), "mark time {} not in the DOM", m.time);
        }
    }
    assert!(dom.contains("/mnt/data"));
    // The odd mount point is text in the DOM, not an element.
    assert!(dom.contains("/mnt/odd &lt;name&gt;"), "the odd mount point was not escaped");
    assert!(!dom.contains("<name>"));
    assert!(dom.contains("No reconnects seen."));
    assert!(!dom.contains("<script"));

    if let Some(keep) = std::env::var_os("NFS_TRACE_SCREENSHOT_DIR") {
        let keep = PathBuf::from(keep);
        fs::create_dir_all(&keep).unwrap();
        for f in ["report.html", "report-page-light.png", "report-page-dark.png"] {
            fs::copy(dir.join(f), keep.join(f)).unwrap();
        }
    }
    fs::remove_dir_all(&dir).unwrap();
}
