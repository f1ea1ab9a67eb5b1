//! `nfs-trace report` (issue 16) on recordings the test makes itself with
//! `watch --json --events` (real sockets in a network namespace of its
//! own), then damaged the ways files get damaged: cut off mid-line, lines
//! of another schema version or of an unknown type, no recording at all.
//! Ground truth: what watch printed live (its summary), the test's own
//! connects, and the exit status and the one line a person reads.
//! (The stall replayed to the same episode and verdict is in host_canary.)
use std::path::{Path, PathBuf};

use nfs_trace_tests::host::*;
use serde_json::Value;

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("nfs-trace-report-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Three connects from one bound port to a listener, in a fresh netns,
/// recorded with --events; returns the live records.
fn recording() -> Records {
    let mut tracer = Tracer::start(&["--events"]);
    in_new_netns(|| {
        let _srv = Server::start("127.0.9.1:2049");
        for _ in 0..3 {
            connect_and_abort("127.0.9.1:2049", Some("127.0.9.1:41091"));
        }
    });
    // The last close is a record too: wait for it before stopping.
    let closes = std::sync::atomic::AtomicU32::new(0);
    tracer.wait_for(std::time::Duration::from_secs(20), |r| {
        r["type"] == "close" && r["sport"] == 41091 && closes.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 2
    });
    tracer.stop()
}

fn summary_of(stdout: &str) -> Value {
    let last = stdout.lines().last().unwrap_or_else(|| panic!("report printed nothing"));
    let v: Value = serde_json::from_str(last).unwrap();
    assert_eq!(v["type"], "summary", "{last}");
    v
}

fn run_report(args: &[&str]) -> std::process::Output {
    std::process::Command::new(nfs_trace_bin()).arg("report").args(args).output().unwrap()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_recording_replays_to_watchs_summary_even_when_damaged() {
    let dir = Dir::new("damaged");
    let recs = recording();
    let row = recs.summary_for("127.0.9.1", 2049).unwrap_or_else(|| panic!("no summary row: {}", recs.summary()));
    assert_eq!((row["connects"].as_u64(), row["reuses"].as_u64()), (Some(3), Some(2)), "{row}");
    let whole = dir.file("whole.jsonl");
    recs.write_to(&whole);

    let (out, _) = report(&["--json", path(&whole)]);
    assert_eq!(&summary_of(&out), recs.summary(), "the replay's summary is watch's");
    // Text as watch prints it, and from standard input.
    let text = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{} report --color never - < {}", nfs_trace_bin().display(), path(&whole)))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("Summary after") && text.contains("127.0.9.1:2049"), "{text}");

    // Other schema versions and unknown types are said once each and skipped.
    let mut lines = recs.raw.clone();
    lines.insert(2, r#"{"v":1,"type":"connect","sport":1}"#.to_string());
    lines.insert(3, r#"{"v":2,"type":"bogus\u001b[31m","x":1}"#.to_string());
    lines.insert(4, "not json at all".to_string());
    let mixed = dir.file("mixed.jsonl");
    std::fs::write(&mixed, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    let o = run_report(&["--json", path(&mixed)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert_eq!(&summary_of(&String::from_utf8_lossy(&o.stdout)), recs.summary(), "skipped lines change nothing");
    assert!(err.contains("line 3: record(s) of schema version 1 (this nfs-trace reads 2); skipped"), "{err}");
    assert!(err.contains("unknown type 'bogus\\x1b[31m'"), "the type is quoted back escaped: {err}");
    assert!(err.contains("line 5: line(s) not JSON; skipped"), "{err}");
    assert!(err.contains("skipped 3 of"), "{err}");

    // Cut off in the middle of a line, as a copy of a file still being
    // written is: the cut line is said, the rest replays, the summary is as
    // of the last whole record.
    // Cut in the watch's `end` input: the run has no end then.
    let end = recs.raw.iter().position(|l| l.contains("\"type\":\"input\",\"end\"")).expect("an `end` input");
    let mut bytes: Vec<u8> = recs.raw[..end].iter().flat_map(|l| format!("{l}\n").into_bytes()).collect();
    bytes.extend_from_slice(&recs.raw[end].as_bytes()[..recs.raw[end].len() / 2]);
    let cut = dir.file("cut.jsonl");
    std::fs::write(&cut, &bytes).unwrap();
    let o = run_report(&["--json", path(&cut)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("line cut off (the file ends mid-line); skipped"), "{err}");
    assert!(err.contains("stops before the watch ended"), "{err}");
    let s = summary_of(&String::from_utf8_lossy(&o.stdout));
    let row = s["destinations"].as_array().unwrap().iter().find(|d| d["raddr"] == "127.0.9.1").unwrap().clone();
    assert_eq!(row["connects"], 3, "every connect before the cut is replayed: {row}");
}

#[test]
fn what_is_no_recording_gets_one_line() {
    let dir = Dir::new("none");
    // watch --json without --events: outputs only.
    let plain = dir.file("plain.jsonl");
    std::fs::write(&plain, "{\"v\":2,\"type\":\"attached\",\"kernel\":\"6.1\"}\n{\"v\":2,\"type\":\"summary\"}\n").unwrap();
    let o = run_report(&[path(&plain)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("record with `nfs-trace watch --json --events`"), "{err}");

    let garbage = dir.file("garbage.bin");
    std::fs::write(&garbage, (0..=255u8).cycle().take(100_000).collect::<Vec<u8>>()).unwrap();
    let o = run_report(&[path(&garbage)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let o = run_report(&[path(&dir.file("missing.jsonl"))]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot read"), "{:?}", o);

    for bad in [&["--since", "yesterday", "x"][..], &["--until", "2026-13-01T00:00:00Z", "x"], &[]] {
        let o = run_report(bad);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }
}

/// A stall recorded in the VM lab's 6.12 guest (`cargo xtask vm --kernel
/// 6.12 --scenario stall-v3`: NFSv3 reconnecting from port 682 while the
/// router still held the old flow; the tracer's lines as the lab's console
/// carried them, keys sorted) replays on this host to the episodes and
/// summary watch printed live in the guest, and its page, rendered by
/// headless Chromium, shows the verdict and the episode's times.
#[test]
fn a_stall_recorded_in_the_guest_replays_to_the_same_verdict_and_page() {
    let dir = Dir::new("guest");
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/stall-v3-6.12.jsonl");
    let live: Vec<Value> = std::fs::read_to_string(&file).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let episodes = |all: &[Value]| -> Vec<Value> { all.iter().filter(|r| r["type"] == "episode").cloned().collect() };
    let html = dir.file("stall.html");
    let (out, _) = report(&["--json", path(&file), "--html", path(&html)]);
    let replay: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(episodes(&replay), episodes(&live), "the replay's episodes are the guest's");
    assert_eq!(replay.last(), live.iter().rev().find(|r| r["type"] == "summary"), "the replay's summary is the guest's");
    let ended = episodes(&live).into_iter().rfind(|e| e["state"] == "ended").expect("the guest's episode ended");
    assert_eq!(ended["verdict"], "reused-flow-dropped");

    let dom = nfs_trace_tests::chromium::dump_dom(&html).unwrap_or_else(|e| panic!("{e:#}"));
    for want in ["reused-flow-dropped", ended["start"].as_str().unwrap(), ended["end"].as_str().unwrap(), "/mnt/stall-v3", "SYN retransmit 9"] {
        assert!(dom.contains(want), "the page as Chromium parsed it lacks {want:?}");
    }
    let png = dir.file("stall.png");
    nfs_trace_tests::chromium::screenshot(&html, &png, 1200, 1200).unwrap_or_else(|e| panic!("{e:#}"));
    let stats = nfs_trace_tests::chromium::png_not_blank(&std::fs::read(&png).unwrap()).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(stats.fraction() > 0.01, "the screenshot is next to blank: {stats:?}");
}

/// --mount, --since and --until narrow the guest's recording to its one
/// episode or to none, and the summary's episodes with it.
#[test]
fn since_until_and_mount_narrow_the_report() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/stall-v3-6.12.jsonl");
    let f = path(&file);
    let count = |args: &[&str]| -> (usize, usize) {
        let mut all = vec!["--json", f];
        all.extend_from_slice(args);
        let (out, _) = report(&all);
        let recs: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let eps = recs.iter().filter(|r| r["type"] == "episode").count();
        (eps, summary_of(&out)["episodes"].as_array().map_or(0, Vec::len))
    };
    let (all, in_summary) = count(&[]);
    assert!(all > 0 && in_summary == 1, "{all} episode records, {in_summary} in the summary");
    assert_eq!(count(&["--mount", "/mnt/stall-v3"]), (all, 1));
    assert_eq!(count(&["--mount", "/mnt/other"]), (0, 0));
    // The episode ran 01:16:47.09 to 01:17:23.3 UTC.
    // Going on at 01:17:15: its records from then on (its end at least),
    // and it is in the summary.
    let (from, in_summary) = count(&["--since", "2026-12-07T01:17:15Z"]);
    assert!(from >= 1 && from < all && in_summary == 1, "{from} of {all} records, {in_summary} in the summary");
    assert_eq!(count(&["--since", "2026-12-07T02:18:00+01:00"]), (0, 0), "it ended before 01:18:00Z");
    assert_eq!(count(&["--until", "2026-12-07T01:16:00Z"]), (0, 0), "it began after 01:16:00");
    assert_eq!(count(&["--until", "2026-12-07T03:00:00Z"]), (all, 1));
}
