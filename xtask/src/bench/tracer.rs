//! The tracers under test: how to start each, when it is ready, how to count
//! what it saw, and what it cost (CPU, peak RSS) read from /proc.
//!
//! A tracer's stdout and stderr go to files, read only before and after the
//! storm: a reader thread parsing output during the storm would compete with
//! the storm for the same CPUs and blur the comparison.
use std::{
    fs::File,
    io::{Read as _, Seek as _, SeekFrom},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::storm::{NFS_PORT, NOISE_PORT, PREFILL_ADDR, PROBE_ADDR, probe};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Baseline,
    NfsTrace,
    /// nfs-trace again, its flow memory filled before the storm (issue 11).
    NfsTraceFull,
    Tcpstates,
    Bpftrace,
}

impl Tool {
    pub fn name(self) -> &'static str {
        match self {
            Tool::Baseline => "no tracer (baseline)",
            Tool::NfsTrace => "nfs-trace watch --json",
            Tool::NfsTraceFull => "nfs-trace watch --json, flow memory full",
            Tool::Tcpstates => "libbpf-tools tcpstates -D 2049",
            Tool::Bpftrace => "bpftrace inet_sock_set_state",
        }
    }
}

/// The bpftrace one-liner: one line per connect attempt, printed when the
/// socket leaves SYN_SENT (2), filtered in the kernel to TCP (6) and dport 2049
/// — the same unit of output nfs-trace's `connect` record is.
pub fn bpftrace_program() -> String {
    format!(
        "tracepoint:sock:inet_sock_set_state /args->protocol == 6 && args->dport == {NFS_PORT} && args->oldstate == 2/ \
         {{ printf(\"connect %s %d %d %d\\n\", ntop(args->daddr), args->dport, args->sport, args->newstate); }}"
    )
}

/// Looks a program up on PATH and in the sbin directories (Debian puts
/// libbpf-tools in /usr/sbin, which a non-login PATH may lack).
pub fn find_program(name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("{name} not found on PATH or in /usr/sbin"))
}

/// What a tracer's output said, counted line by line.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Counts {
    /// Connect records for 127.0.0.1:2049 (the storm).
    pub seen: u64,
    /// Connect records for 127.0.0.1 and the noise port (must stay 0).
    pub noise: u64,
    /// Connect records for the readiness probes.
    pub probes: u64,
    /// Lost events the tool reported while running (lines on stdout/stderr).
    pub lost_lines: u64,
    /// nfs-trace: `attach_ms` of its `attached` record.
    pub attach_ms: Option<f64>,
    /// nfs-trace: `lost_events` of its `summary` record.
    pub summary_lost: Option<u64>,
    /// nfs-trace: `tracked_flows` and `evicted_flows` of its `summary` record.
    pub summary_flows: Option<(u64, u64)>,
    /// Connect records for the pre-fill's destination (see `storm::prefill`).
    pub prefill: u64,
}

impl Counts {
    fn stdout_line(&mut self, tool: Tool, line: &str) {
        match tool {
            Tool::Baseline => {}
            Tool::NfsTrace | Tool::NfsTraceFull => self.nfs_trace_line(line),
            Tool::Tcpstates => {
                // SKADDR PID COMM LADDR LPORT RADDR RPORT OLDSTATE -> NEWSTATE MS;
                // read from the end, a COMM may hold spaces. Leaving SYN_SENT is
                // one line per connect attempt.
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.len() >= 9 && f[f.len() - 3] == "->" && f[f.len() - 4] == "SYN_SENT" {
                    self.count(f[f.len() - 6], f[f.len() - 5]);
                }
            }
            Tool::Bpftrace => {
                if let Some(rest) = line.strip_prefix("connect ") {
                    let mut f = rest.split_whitespace();
                    if let (Some(daddr), Some(dport)) = (f.next(), f.next()) {
                        self.count(daddr, dport);
                    }
                }
                self.lost_line(line);
            }
        }
    }

    fn stderr_line(&mut self, tool: Tool, line: &str) {
        // tcpstates warns "lost N events on CPU #C" on stderr; bpftrace says
        // "Lost N events" (stdout, but both are read for both).
        if matches!(tool, Tool::Tcpstates | Tool::Bpftrace) {
            self.lost_line(line);
        }
    }

    fn lost_line(&mut self, line: &str) {
        let l = line.trim().to_ascii_lowercase();
        let mut w = l.split_whitespace();
        if let (Some("lost"), Some(n), Some(what)) = (w.next(), w.next(), w.next())
            && let (Ok(n), true) = (n.parse::<u64>(), what.starts_with("event"))
        {
            self.lost_lines += n;
        }
    }

    /// One connect attempt the tool reported, by destination. Anything else
    /// on the host that dials these ports is not ours and is not counted.
    fn count(&mut self, raddr: &str, dport: &str) {
        let Ok(port) = dport.parse::<u16>() else { return };
        if raddr == "127.0.0.1" {
            match port {
                NFS_PORT => self.seen += 1,
                NOISE_PORT => self.noise += 1,
                _ => {}
            }
        } else if raddr == PROBE_ADDR.to_string() && port == NFS_PORT {
            self.probes += 1;
        } else if raddr == PREFILL_ADDR.to_string() && port == NFS_PORT {
            self.prefill += 1;
        }
    }

    fn nfs_trace_line(&mut self, line: &str) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { return };
        match v["type"].as_str() {
            Some("connect") => {
                if let (Some(raddr), Some(dport)) = (v["raddr"].as_str(), v["dport"].as_u64()) {
                    self.count(raddr, &dport.to_string());
                }
            }
            Some("attached") => self.attach_ms = v["attach_ms"].as_f64(),
            Some("lost") => self.lost_lines = self.lost_lines.max(v["events"].as_u64().unwrap_or(0)),
            Some("summary") => {
                self.summary_lost = v["lost_events"].as_u64();
                self.summary_flows = v["tracked_flows"].as_u64().zip(v["evicted_flows"].as_u64());
            }
            _ => {}
        }
    }

    /// Lost events as the tool reports them: nfs-trace's summary total, the
    /// others' running warnings.
    pub fn lost(&self, tool: Tool) -> Option<u64> {
        match tool {
            Tool::NfsTrace | Tool::NfsTraceFull => self.summary_lost,
            _ => Some(self.lost_lines),
        }
    }
}

/// Reads a growing file line by line from where it was last read.
struct Tail {
    file: File,
    pos: u64,
    partial: Vec<u8>,
}

impl Tail {
    fn open(path: &Path) -> Result<Tail> {
        Ok(Tail { file: File::open(path)?, pos: 0, partial: Vec::new() })
    }

    fn poll(&mut self, mut f: impl FnMut(&str)) -> Result<()> {
        self.file.seek(SeekFrom::Start(self.pos))?;
        let mut buf = Vec::new();
        self.pos += self.file.read_to_end(&mut buf)? as u64;
        self.partial.extend_from_slice(&buf);
        // Walk the complete lines in place and keep only the unfinished tail:
        // draining line by line from the front would be quadratic in the
        // megabytes a tracer writes during a storm.
        let mut start = 0;
        while let Some(i) = self.partial[start..].iter().position(|&b| b == b'\n') {
            f(String::from_utf8_lossy(&self.partial[start..start + i]).trim_end());
            start += i + 1;
        }
        self.partial.drain(..start);
        Ok(())
    }

    /// The last line even without its newline (at the end only).
    fn finish(&mut self, mut f: impl FnMut(&str)) -> Result<()> {
        self.poll(&mut f)?;
        if !self.partial.is_empty() {
            f(String::from_utf8_lossy(&std::mem::take(&mut self.partial)).trim_end());
        }
        Ok(())
    }
}

/// What /proc says about a process.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcStat {
    pub cpu_s: f64,
    pub hwm_kb: u64,
    /// Voluntary context switches over all its threads: each time one
    /// blocked and was woken again (a timer tick, a ring buffer wakeup, a
    /// pipe). The difference over a storm counts the reader's wakeups.
    pub wakeups: u64,
}

unsafe extern "C" {
    fn sysconf(name: i32) -> i64;
    fn kill(pid: i32, sig: i32) -> i32;
}
const SC_CLK_TCK: i32 = 2;
const SIGINT: i32 = 2;

pub fn proc_stat(pid: u32) -> Result<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after "(comm)": state is field 3, utime 14, stime 15 (proc(5)).
    let after = stat.rsplit_once(')').context("odd /proc/PID/stat")?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| -> Result<u64> { f.get(i).and_then(|s| s.parse().ok()).context("odd /proc/PID/stat") };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { sysconf(SC_CLK_TCK) }.max(1) as f64;
    let cpu_s = (ticks(11)? + ticks(12)?) as f64 / hz;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let hwm_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc/PID/status")?;
    let mut wakeups = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        // A thread that ended since the listing has no status any more.
        let Ok(st) = std::fs::read_to_string(task?.path().join("status")) else { continue };
        wakeups += st
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(ProcStat { cpu_s, hwm_kb, wakeups })
}

/// A tracer running with its output going to files.
pub struct Running {
    tool: Tool,
    child: Child,
    out: Tail,
    err: Tail,
    err_path: PathBuf,
    pub counts: Counts,
    pub started: Instant,
}

/// How a tool is started. `nfs_trace` is the release binary.
pub fn command(tool: Tool, nfs_trace: &Path) -> Result<Command> {
    Ok(match tool {
        Tool::Baseline => bail!("the baseline runs no tracer"),
        Tool::NfsTrace | Tool::NfsTraceFull => {
            let mut c = Command::new(nfs_trace);
            c.args(["watch", "--json", "--port"]).arg(NFS_PORT.to_string());
            c
        }
        Tool::Tcpstates => {
            // tcpstates uses stdio printf: piped into a file it would buffer 4 KiB
            // at a time; -oL makes it write as it would to a terminal.
            let mut c = Command::new(find_program("stdbuf")?);
            c.arg("-oL").arg(find_program("tcpstates")?).args(["-D", &NFS_PORT.to_string()]);
            c
        }
        Tool::Bpftrace => {
            let mut c = Command::new(find_program("bpftrace")?);
            c.args(["-B", "line", "-e"]).arg(bpftrace_program());
            c
        }
    })
}

impl Running {
    pub fn start(tool: Tool, nfs_trace: &Path, dir: &Path, tag: &str) -> Result<Running> {
        let out_path = dir.join(format!("{tag}.out"));
        let err_path = dir.join(format!("{tag}.err"));
        let mut cmd = command(tool, nfs_trace)?;
        cmd.stdin(Stdio::null())
            .stdout(File::create(&out_path).with_context(|| format!("cannot create {}", out_path.display()))?)
            .stderr(File::create(&err_path)?);
        let started = Instant::now();
        let child = cmd.spawn().with_context(|| format!("cannot start {cmd:?}"))?;
        Ok(Running {
            tool,
            child,
            out: Tail::open(&out_path)?,
            err: Tail::open(&err_path)?,
            err_path,
            counts: Counts::default(),
            started,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn poll(&mut self) -> Result<()> {
        let (tool, counts) = (self.tool, &mut self.counts);
        self.out.poll(|l| counts.stdout_line(tool, l))?;
        self.err.poll(|l| counts.stderr_line(tool, l))
    }

    fn stderr_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.err_path).unwrap_or_default();
        let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(3)..].join(" | ")
    }

    /// Ready = the tool has reported a probe connect. A "started" line is not
    /// enough: bpftrace prints "Attaching 1 probe..." before it attaches.
    /// Returns the time from start to the first probe seen.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<Duration> {
        loop {
            if let Some(st) = self.child.try_wait()? {
                bail!("{} exited before it was ready ({st}): {}", self.tool.name(), self.stderr_tail());
            }
            if self.started.elapsed() > timeout {
                bail!("{} saw no probe connect within {timeout:?}: {}", self.tool.name(), self.stderr_tail());
            }
            probe().context("probe connect")?;
            std::thread::sleep(Duration::from_millis(25));
            self.poll()?;
            if self.counts.probes > 0 {
                return Ok(self.started.elapsed());
            }
        }
    }

    /// After the storm: wait until the tool has reported `target` connects or
    /// its count has stood still for `quiet` (it may be still draining a backlog).
    pub fn drain(&mut self, target: u64, quiet: Duration, cap: Duration) -> Result<()> {
        self.poll()?;
        let t0 = Instant::now();
        let (mut last, mut since) = (self.counts.seen, Instant::now());
        while self.counts.seen < target && since.elapsed() < quiet && t0.elapsed() < cap {
            std::thread::sleep(Duration::from_millis(100));
            self.poll()?;
            if self.counts.seen != last {
                (last, since) = (self.counts.seen, Instant::now());
            }
        }
        Ok(())
    }

    /// Before a storm: wait until the tool has reported `target` pre-fill
    /// connects or its count has stood still for `quiet`.
    pub fn drain_prefill(&mut self, target: u64, quiet: Duration, cap: Duration) -> Result<()> {
        self.poll()?;
        let t0 = Instant::now();
        let (mut last, mut since) = (self.counts.prefill, Instant::now());
        while self.counts.prefill < target && since.elapsed() < quiet && t0.elapsed() < cap {
            std::thread::sleep(Duration::from_millis(50));
            self.poll()?;
            if self.counts.prefill != last {
                (last, since) = (self.counts.prefill, Instant::now());
            }
        }
        Ok(())
    }

    /// SIGINT (all three print their final words on it), then wait; SIGKILL
    /// if it hangs. Returns the final counts.
    pub fn stop(mut self) -> Result<Counts> {
        // SAFETY: signalling our own child by its pid.
        unsafe { kill(self.child.id() as i32, SIGINT) };
        let t0 = Instant::now();
        let status = loop {
            if let Some(st) = self.child.try_wait()? {
                break Some(st);
            }
            if t0.elapsed() > Duration::from_secs(15) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let (tool, counts) = (self.tool, &mut self.counts);
        self.out.finish(|l| counts.stdout_line(tool, l))?;
        self.err.finish(|l| counts.stderr_line(tool, l))?;
        match status {
            None => eprintln!("xtask bench: warning: {} did not stop on SIGINT within 15 s; killed", tool.name()),
            Some(st) if !st.success() && matches!(tool, Tool::NfsTrace | Tool::NfsTraceFull) => {
                eprintln!("xtask bench: warning: {} exited with {st}: {}", tool.name(), self.stderr_tail())
            }
            _ => {}
        }
        Ok(self.counts.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_reads_lines_across_polls() {
        let path = std::env::temp_dir().join(format!("nfs-trace-bench-tail-{}", std::process::id()));
        std::fs::write(&path, "a\nb").unwrap();
        let mut t = Tail::open(&path).unwrap();
        let mut got = Vec::new();
        t.poll(|l| got.push(l.to_string())).unwrap();
        std::fs::write(&path, "a\nbc\nd").unwrap();
        t.poll(|l| got.push(l.to_string())).unwrap();
        t.finish(|l| got.push(l.to_string())).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(got, ["a", "bc", "d"]);
    }

    #[test]
    fn counts_each_tools_lines() {
        let mut c = Counts::default();
        let t = Tool::Tcpstates;
        c.stdout_line(t, "SKADDR           PID     COMM       LADDR           LPORT RADDR           RPORT OLDSTATE    -> NEWSTATE    MS");
        c.stdout_line(
            t,
            "ffff8881 26197   python3    127.0.0.1       0     127.0.0.1       2049  CLOSE       -> SYN_SENT    0.000",
        );
        c.stdout_line(
            t,
            "ffff8881 26197   storm 1    127.0.0.1       51462 127.0.0.1       2049  SYN_SENT    -> ESTABLISHED 0.147",
        );
        c.stdout_line(
            t,
            "ffff8881 26197   x          127.0.0.1       51463 127.0.0.2       2049  SYN_SENT    -> CLOSE       0.1",
        );
        c.stdout_line(
            t,
            "ffff8881 26197   x          127.0.0.1       51464 127.0.0.1       2050  SYN_SENT    -> CLOSE       0.1",
        );
        c.stderr_line(t, "lost 7 events on CPU #1");
        assert_eq!((c.seen, c.probes, c.noise, c.lost(t)), (1, 1, 1, Some(7)));

        let mut c = Counts::default();
        let b = Tool::Bpftrace;
        for l in [
            "Attaching 1 probe...",
            "connect 127.0.0.1 2049 5000 1",
            "connect 127.0.0.2 2049 5001 7",
            "Lost 3 events",
            "",
        ] {
            c.stdout_line(b, l);
        }
        assert_eq!((c.seen, c.probes, c.lost(b)), (1, 1, Some(3)));

        let mut c = Counts::default();
        let n = Tool::NfsTrace;
        c.stdout_line(n, r#"{"v":1,"type":"attached","attach_ms":41.5}"#);
        c.stdout_line(n, r#"{"v":1,"type":"connect","raddr":"127.0.0.1","dport":2049}"#);
        c.stdout_line(n, r#"{"v":1,"type":"reuse","raddr":"127.0.0.1","dport":2049}"#);
        c.stdout_line(n, "not json");
        assert_eq!(c.lost(n), None, "no summary yet: lost is unknown, not 0");
        c.stdout_line(n, r#"{"v":1,"type":"connect","raddr":"127.0.0.5","dport":2049}"#);
        c.stdout_line(n, r#"{"v":1,"type":"summary","lost_events":2,"tracked_flows":32768,"evicted_flows":310}"#);
        assert_eq!((c.seen, c.attach_ms, c.lost(n)), (1, Some(41.5), Some(2)));
        assert_eq!((c.prefill, c.summary_flows), (1, Some((32_768, 310))), "the pre-fill is not the storm");
    }
}
