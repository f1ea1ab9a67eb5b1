//! `nfs-trace watch --json` in the guest: started per scenario, its JSON
//! lines kept for the host to compare with the ground truth.
use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::sys;

pub const BINARY: &str = "/bin/nfs-trace";
/// BTF parsing and attaching take seconds under TCG emulation.
const ATTACH_LIMIT: Duration = Duration::from_secs(120);
const STOP_LIMIT: Duration = Duration::from_secs(20);

pub struct Tracer {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
}

/// What the tracer printed, and how it ended.
pub struct Finished {
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
    pub exit: String,
}

fn reader(r: impl std::io::Read + Send + 'static, into: Arc<Mutex<Vec<String>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            into.lock().expect("reader lock").push(line);
        }
    })
}

impl Tracer {
    /// Starts the tracer and waits for its `attached` record.
    pub fn start() -> Result<Tracer> {
        Tracer::start_with(&[])
    }

    /// [`Tracer::start`] with more arguments to `watch --json`.
    pub fn start_with(extra: &[&str]) -> Result<Tracer> {
        let mut child = Command::new(BINARY)
            .args(["watch", "--json"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {BINARY}"))?;
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            reader(child.stdout.take().expect("piped"), stdout.clone()),
            reader(child.stderr.take().expect("piped"), stderr.clone()),
        ];
        let mut t = Tracer { child, stdout, stderr, readers };
        let start = Instant::now();
        loop {
            if t.stdout.lock().expect("lock").iter().any(|l| is_attached(l)) {
                return Ok(t);
            }
            if let Some(st) = t.child.try_wait()? {
                let err = t.stderr.lock().expect("lock").join(" | ");
                bail!("nfs-trace exited before attaching ({st}): {err}");
            }
            if start.elapsed() > ATTACH_LIMIT {
                let f = t.stop();
                bail!(
                    "nfs-trace printed no `attached` record within {} s (stderr: {})",
                    ATTACH_LIMIT.as_secs(),
                    f.stderr.join(" | ")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The tracer's process id (for reading its CPU time).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the tracer has printed a JSON line `pred` accepts, at most
    /// `limit`; returns whether it did.
    pub fn wait_for(&self, limit: Duration, pred: impl Fn(&serde_json::Value) -> bool) -> bool {
        let start = Instant::now();
        loop {
            let seen = self.stdout.lock().expect("lock").iter().any(|l| serde_json::from_str(l).is_ok_and(|v| pred(&v)));
            if seen {
                return true;
            }
            if start.elapsed() > limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGINT (what a user's Ctrl-C sends), then collects everything printed.
    pub fn stop(mut self) -> Finished {
        let mut exit = String::new();
        if let Err(e) = sys::kill(self.child.id(), libc::SIGINT) {
            exit = format!("{e:#}; ");
        }
        let start = Instant::now();
        loop {
            match self.child.try_wait() {
                Ok(Some(st)) => {
                    exit += &st.to_string();
                    break;
                }
                Ok(None) if start.elapsed() < STOP_LIMIT => std::thread::sleep(Duration::from_millis(50)),
                Ok(None) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    exit += &format!("did not exit within {} s of SIGINT: killed", STOP_LIMIT.as_secs());
                    break;
                }
                Err(e) => {
                    exit += &format!("wait failed: {e}");
                    break;
                }
            }
        }
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let take = |v: &Arc<Mutex<Vec<String>>>| std::mem::take(&mut *v.lock().expect("lock"));
        Finished { stdout: take(&self.stdout), stderr: take(&self.stderr), exit }
    }
}

impl Finished {
    /// Puts everything the tracer printed on the console for the host (as
    /// `tracer` / `tracer_stderr` records of `scenario`); returns the
    /// truth record's `tracer` field.
    pub fn emit(&self, scenario: &str) -> serde_json::Value {
        for l in &self.stdout {
            let line = serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|_| serde_json::Value::String(l.clone()));
            super::out::emit(&serde_json::json!({"kind": "tracer", "scenario": scenario, "line": line}));
        }
        for l in &self.stderr {
            super::out::emit(&serde_json::json!({"kind": "tracer_stderr", "scenario": scenario, "text": l}));
        }
        serde_json::json!({"ran": true, "exit": self.exit, "lines": self.stdout.len()})
    }
}

impl Finished {
    /// Issue 16: replays what the tracer printed (run with `--events`) with
    /// `nfs-trace report --json`; returns the replay's `episode` records and
    /// summary for the host to compare with the live ones.
    pub fn replay(&self, scenario: &str) -> serde_json::Value {
        let file = std::path::PathBuf::from(format!("/tmp/{scenario}.jsonl"));
        let text: String = self.stdout.iter().map(|l| format!("{l}\n")).collect();
        if let Err(e) = std::fs::write(&file, text) {
            return serde_json::json!({"error": format!("cannot write {}: {e}", file.display())});
        }
        let out = match Command::new(BINARY).arg("report").arg("--json").arg(&file).output() {
            Ok(o) => o,
            Err(e) => return serde_json::json!({"error": format!("cannot run {BINARY} report: {e}")}),
        };
        let recs: Vec<serde_json::Value> =
            String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        serde_json::json!({
            "exit": out.status.to_string(),
            "ok": out.status.success(),
            "stderr": String::from_utf8_lossy(&out.stderr),
            "episodes": recs.iter().filter(|r| r["type"] == "episode").collect::<Vec<_>>(),
            "summary": recs.iter().rev().find(|r| r["type"] == "summary"),
        })
    }
}

fn is_attached(line: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(line)
        .ok()
        .is_some_and(|v| v.get("type").and_then(|t| t.as_str()) == Some("attached"))
}
