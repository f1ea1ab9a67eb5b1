//! Boots a kernel and initramfs under QEMU (TCG: /dev/kvm on this machine
//! kind does not boot these kernels, and arm64 guests are emulated anyway)
//! and collects the serial console.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use super::arch::{Arch, QemuArgs};

/// How a boot ended.
#[derive(Debug, Clone, PartialEq)]
pub enum End {
    /// The guest printed the result marker (OK or FAIL and why).
    Marker { ok: bool, detail: String },
    Panic(String),
    Timeout,
    /// QEMU exited before any marker.
    Exited(String),
}

pub struct Boot {
    pub lines: Vec<String>,
    pub end: End,
    pub wall: Duration,
}

pub struct Options<'a> {
    pub arch: Arch,
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    pub append: String,
    pub timeout: Duration,
    pub memory_mb: u32,
    /// Every console line is also written here.
    pub log: &'a Path,
    /// Echo console lines to stderr as they come.
    pub echo: bool,
    /// The guest's clocks count the instructions it executed (1 ns each:
    /// `-icount shift=0`), and jump to the next timer when it idles
    /// (`sleep=off`), so what it times does not depend on how fast the host
    /// ran QEMU meanwhile. For measurements (the bench's NFS I/O): under
    /// plain TCG one copy's time swung ±35 % from the host's noise alone.
    pub instruction_clock: bool,
}

pub fn boot(o: &Options, marker: &str) -> Result<Boot> {
    let args = o.arch.qemu_args(&QemuArgs {
        kernel: o.kernel,
        initrd: o.initrd,
        append: &o.append,
        memory_mb: o.memory_mb,
        instruction_clock: o.instruction_clock,
    });
    let qemu = o.arch.qemu_binary();
    let mut child = Command::new(qemu)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {qemu} (cargo xtask setup installs it)"))?;
    let start = Instant::now();
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().expect("piped");
    std::thread::spawn(move || {
        // Lossy: a kernel message may carry bytes that are not UTF-8.
        let mut r = BufReader::new(stdout);
        let mut buf = Vec::new();
        while r.read_until(b'\n', &mut buf).map(|n| n > 0).unwrap_or(false) {
            let line = String::from_utf8_lossy(&buf).trim_end_matches(['\n', '\r']).replace('\r', "");
            if tx.send(line).is_err() {
                break;
            }
            buf.clear();
        }
    });
    let mut stderr = child.stderr.take().expect("piped");
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let mut log = std::fs::File::create(o.log).with_context(|| format!("cannot create {}", o.log.display()))?;
    let mut lines = Vec::new();
    let end = loop {
        let left = o.timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            break End::Timeout;
        }
        match rx.recv_timeout(left.min(Duration::from_secs(1))) {
            Ok(line) => {
                let _ = writeln!(log, "{line}");
                if o.echo {
                    eprintln!("  | {line}");
                }
                let end = if let Some(rest) = line.strip_prefix(marker) {
                    let rest = rest.trim();
                    Some(End::Marker { ok: rest == "OK", detail: rest.to_string() })
                } else if line.contains("Kernel panic") {
                    Some(End::Panic(line.clone()))
                } else {
                    None
                };
                lines.push(line);
                if let Some(e) = end {
                    break e;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let st = child.wait().map(|s| s.to_string()).unwrap_or_default();
                break End::Exited(format!("{st} {}", err_thread.join().unwrap_or_default().trim()));
            }
        }
    };
    // After the marker the guest powers itself off; give it a moment, then
    // make sure QEMU is gone whatever happened.
    if matches!(end, End::Marker { .. }) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && child.try_wait().ok().flatten().is_none() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    if child.try_wait().ok().flatten().is_none() {
        let _ = child.kill();
    }
    let _ = child.wait();
    Ok(Boot { lines, end, wall: start.elapsed() })
}
