//! `--debug-bpf`: the kernel programs' diagnostics (aya-log records), printed
//! on stderr as `nfs-trace: bpf: LEVEL: message`.
//!
//! Off by default, and then free: the programs' logging branches test
//! `CONFIG.debug`, a load-time constant, so the verifier removes them; the
//! log map is shrunk to one page and never read. With the flag, the log
//! map is taken from the object *before* the programs load and the logger
//! is kept for the session's life (FINDINGS §1: dropping it early makes
//! loading fail with "fd N is not pointing to valid bpf_map").
use anyhow::{Result, anyhow};
use aya::Ebpf;
use aya_log::EbpfLogger;

/// Writes each kernel record as one stderr line.
pub struct StderrLog;

impl log::Log for StderrLog {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }

    fn log(&self, record: &log::Record) {
        eprintln!("{}", line(record.level(), &record.args().to_string()));
    }

    fn flush(&self) {}
}

/// The reader of the programs' log map. (aya-log's `flush` panics on a
/// record it cannot parse; only our own programs write this map, through
/// aya-log-ebpf's macros, so every record is one it wrote.)
pub type BpfLog = EbpfLogger<StderrLog>;

/// Takes the log map out of a loaded object (call before the programs load
/// and keep the result).
pub fn init(ebpf: &mut Ebpf) -> Result<BpfLog> {
    EbpfLogger::init_with_logger(ebpf, StderrLog).map_err(|e| anyhow!("--debug-bpf: cannot read the programs' log: {e}"))
}

/// One stderr line for a kernel record. The text comes from outside this
/// process (formatted from kernel memory), so control characters and
/// anything that could end the line or drive a terminal are escaped.
pub fn line(level: log::Level, msg: &str) -> String {
    let mut out = format!("nfs-trace: bpf: {}: ", level.as_str().to_ascii_lowercase());
    for c in msg.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_prefixed_and_escaped() {
        assert_eq!(
            line(log::Level::Error, "probe read of 8 bytes at 2000+16 failed: error -14"),
            "nfs-trace: bpf: error: probe read of 8 bytes at 2000+16 failed: error -14"
        );
        let l = line(log::Level::Warn, "a\nnfs-trace: fake line\x1b[31m\r\tend");
        assert_eq!(l, "nfs-trace: bpf: warn: a\\nnfs-trace: fake line\\u{1b}[31m\\r\\tend");
        assert_eq!(l.lines().count(), 1, "one record, one line");
    }
}
