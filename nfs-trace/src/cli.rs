//! Command line.
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "nfs-trace",
    version,
    about = "Trace NFS client reconnects: every TCP connect toward the NFS port, its source port and outcome, and source-port reuse"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Trace connects toward the NFS port(s) live; summary on exit (Ctrl-C, SIGTERM, --duration).
    Watch(WatchArgs),
    /// List every hook: kind, kernels that have it, fallback, and whether it attaches here.
    Probes(ProbesArgs),
    /// Without BPF or root: NFS mounts, their transports' source ports, and which will reconnect from the same port (exit 2 if any).
    Check(CheckArgs),
    /// Force reconnects of one mount's transport (--mount), or of test mounts of a server with each candidate option set (--server), and say whether the source port is reused.
    Prove(ProveArgs),
    /// Replay a recording of `watch --json --events` into the same episodes, verdicts and summary; --html writes a timeline page.
    Report(ReportArgs),
    /// Print shell completions (packaging: `cargo xtask dist`).
    #[command(hide = true)]
    Completions(CompletionsArgs),
    /// Print a man page in roff (packaging: `cargo xtask dist`).
    #[command(hide = true)]
    Manpage(ManpageArgs),
}

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
pub struct ManpageArgs {
    /// The page of this subcommand (nfs-trace-SUBCOMMAND.1) instead of the main one.
    pub subcommand: Option<String>,
    /// Write every page (main and each subcommand's) into this directory instead.
    #[arg(long, value_name = "DIR", conflicts_with = "subcommand")]
    pub out_dir: Option<PathBuf>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Color {
    Auto,
    Always,
    Never,
}

/// Where the kernel's pieces are; defaults find them.
#[derive(Args, Debug, Clone, Default)]
pub struct KernelPaths {
    /// tracefs mount point (default: /sys/kernel/tracing, mounted if needed).
    #[arg(long, value_name = "DIR")]
    pub tracefs: Option<PathBuf>,
    /// Kernel BTF file.
    #[arg(long, value_name = "FILE")]
    pub btf: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Destination port(s) to watch, up to 8 (repeat or comma-separate).
    #[arg(short, long = "port", value_name = "PORT", value_delimiter = ',', default_value = "2049", value_parser = parse_port)]
    pub ports: Vec<u16>,
    /// JSON lines on stdout (schema: docs/json-schema.md) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Stop after this many seconds (default: until Ctrl-C or SIGTERM).
    #[arg(short, long, value_name = "SECS", value_parser = parse_secs)]
    pub duration: Option<std::time::Duration>,
    /// Colour in the text output.
    #[arg(long, value_enum, default_value = "auto")]
    pub color: Color,
    /// Ring buffer size in KiB (a power of two, at least 4).
    #[arg(long, value_name = "KIB", default_value = "1024", value_parser = parse_ringbuf_kb)]
    pub ringbuf_kb: u32,
    /// Sockets the kernel tracks at once (hidden: tests make it tiny to
    /// show that an overflow is counted, not silent).
    #[arg(long, value_name = "N", hide = true, default_value_t = nfs_trace_common::SOCKS_MAX_ENTRIES,
          value_parser = clap::value_parser!(u32).range(1..=1 << 20))]
    pub socks_max: u32,
    /// Read mounts from this /proc instead of the host's.
    #[arg(long, value_name = "DIR", default_value = "/proc")]
    pub proc_root: PathBuf,
    /// Serve Prometheus metrics on ADDR:PORT, or PORT on loopback (port 0: any free one).
    #[arg(long, value_name = "ADDR", value_parser = parse_metrics_addr)]
    pub metrics: Option<std::net::SocketAddr>,
    /// Kernel-side diagnostics on stderr (`nfs-trace: bpf: ...`): failed struct
    /// reads, unexpected values. Off by default, and then costs nothing.
    #[arg(long)]
    pub debug_bpf: bool,
    /// Only this network namespace: its inode (as in `readlink /proc/PID/ns/net`),
    /// a PID in it (up to 4194304), or a namespace file such as /run/netns/NAME.
    #[arg(long, value_name = "INODE|PID", value_parser = crate::host::netns_inode::parse)]
    pub netns: Option<crate::flow::Netns>,
    /// Make no canary connects: by default, when a connect to a server stalls,
    /// watch makes one TCP connect to it from a fresh port (one per server per 10 s).
    #[arg(long)]
    pub passive: bool,
    /// With --json: also write what the trackers are fed (`input` lines: each
    /// kernel record, mount read, canary result, kernel line and the
    /// once-a-second tick), so that `nfs-trace report` can replay the run.
    #[arg(long, requires = "json")]
    pub events: bool,
    #[command(flatten)]
    pub paths: KernelPaths,
}

/// `9949` → 127.0.0.1:9949 (loopback unless an address is given).
fn parse_metrics_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse().map_err(|_| format!("'{s}' is not PORT or ADDR:PORT"))
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The recording: JSON lines of `nfs-trace watch --json --events` (- for stdin).
    #[arg(value_name = "FILE.jsonl")]
    pub file: PathBuf,
    /// Only episodes going on at or after this time, their records from then on (RFC 3339: 2026-12-07T03:00:00Z).
    #[arg(long, value_name = "TIME", value_parser = crate::output::clock::parse_rfc3339)]
    pub since: Option<i128>,
    /// Only episodes that began by this time; the replay stops there (RFC 3339).
    #[arg(long, value_name = "TIME", value_parser = crate::output::clock::parse_rfc3339)]
    pub until: Option<i128>,
    /// Only episodes of this NFS mount point.
    #[arg(long, value_name = "PATH")]
    pub mount: Option<String>,
    /// JSON lines (the episode and summary records of `watch --json`) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also write a self-contained HTML page: each episode's timeline and verdict, each mount's reconnects.
    #[arg(long, value_name = "OUT.html")]
    pub html: Option<PathBuf>,
    /// Colour in the text output.
    #[arg(long, value_enum, default_value = "auto")]
    pub color: Color,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Output as JSON.
    #[arg(long)]
    pub json: bool,
    /// Read twice, this many seconds apart, and show how the connect counts changed.
    #[arg(short, long, value_name = "SECS", value_parser = parse_secs)]
    pub interval: Option<std::time::Duration>,
    /// Read mounts from this /proc instead of the host's.
    #[arg(long, value_name = "DIR", default_value = "/proc")]
    pub proc_root: PathBuf,
    /// Read SunRPC transports from this /sys instead of the host's.
    #[arg(long, value_name = "DIR", default_value = "/sys")]
    pub sys_root: PathBuf,
}

#[derive(Args, Debug)]
#[command(group = clap::ArgGroup::new("what").required(true).args(["mount", "server"]))]
pub struct ProveArgs {
    /// The NFS mount point whose transport to reconnect (exit 3 if a reconnect reused its port).
    #[arg(long, value_name = "PATH")]
    pub mount: Option<PathBuf>,
    /// Mount HOST[:PORT]:/EXPORT once per option set in a private mount namespace and
    /// reconnect each test mount (exit 0 if some set gave new ports, 3 if none did).
    #[arg(long, value_name = "HOST[:PORT]:/EXPORT", value_parser = parse_server)]
    pub server: Option<String>,
    /// With --server: an option set to try (repeat; default: vers=3, 4.0, 4.1, 4.2, each with and without noresvport).
    #[arg(long = "options", short = 'o', value_name = "SET", requires = "server", conflicts_with = "mount", value_parser = parse_option_set)]
    pub options: Vec<String>,
    /// With --server: keep this production mount's other options (timeo, rsize, nolock, ...) in every set.
    #[arg(long, value_name = "MOUNTPOINT", requires = "server", conflicts_with = "mount")]
    pub like: Option<PathBuf>,
    /// How many reconnects to force.
    #[arg(short = 'n', long, default_value = "2", value_parser = clap::value_parser!(u32).range(1..=20))]
    pub reconnects: u32,
    /// Do not ask for confirmation.
    #[arg(short, long)]
    pub yes: bool,
    /// Output as JSON.
    #[arg(long)]
    pub json: bool,
    /// Seconds to wait for each reconnect (and, with --server, each mount).
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = parse_secs)]
    pub timeout: std::time::Duration,
    #[arg(long, value_name = "DIR", default_value = "/proc")]
    pub proc_root: PathBuf,
    #[arg(long, value_name = "DIR", default_value = "/sys")]
    pub sys_root: PathBuf,
    /// Kernel-side diagnostics on stderr, as in watch.
    #[arg(long)]
    pub debug_bpf: bool,
    #[command(flatten)]
    pub paths: KernelPaths,
}

#[derive(Args, Debug)]
pub struct ProbesArgs {
    /// Output as JSON.
    #[arg(long)]
    pub json: bool,
    /// Destination ports the programs are configured for (as in watch).
    #[arg(short, long = "port", value_name = "PORT", value_delimiter = ',', default_value = "2049", value_parser = parse_port)]
    pub ports: Vec<u16>,
    /// Load the programs built with their --debug-bpf diagnostics on (does that variant pass this kernel's verifier?).
    #[arg(long)]
    pub debug_bpf: bool,
    #[command(flatten)]
    pub paths: KernelPaths,
}

fn parse_server(s: &str) -> Result<String, String> {
    crate::cmd::prove::plan::parse_spec(s).map(|_| s.to_string())
}

fn parse_option_set(s: &str) -> Result<String, String> {
    crate::cmd::prove::plan::parse_set(s).map(|_| s.to_string())
}

fn parse_port(s: &str) -> Result<u16, String> {
    match s.trim().parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        _ => Err(format!("'{s}' is not a port number (1-65535)")),
    }
}

/// Longest accepted for any seconds argument: a year. Past what a Duration
/// holds (~5.8e11 years) `Duration::from_secs_f64` panics; nothing here
/// needs to wait longer than this.
pub const MAX_SECS: u64 = 365 * 24 * 3600;

/// Every seconds argument (`--duration`, `--interval`, `--timeout`): more
/// than 0 and at most [`MAX_SECS`]; NaN and infinities are refused.
fn parse_secs(s: &str) -> Result<std::time::Duration, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v <= MAX_SECS as f64 => Ok(std::time::Duration::from_secs_f64(v)),
        _ => Err(format!("want seconds, more than 0 and at most {MAX_SECS} (a year)")),
    }
}

fn parse_ringbuf_kb(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(v) if v >= 4 && v.is_power_of_two() && v <= 1 << 20 => Ok(v),
        _ => Err(format!("'{s}' is not a power of two between 4 and 1048576")),
    }
}

/// Dedupes ports and checks the count the kernel filter holds.
pub fn check_ports(ports: &[u16]) -> Result<Vec<u16>, String> {
    let mut v: Vec<u16> = Vec::new();
    for p in ports {
        if !v.contains(p) {
            v.push(*p);
        }
    }
    if v.len() > nfs_trace_common::MAX_PORTS {
        return Err(format!("at most {} ports can be watched, got {}", nfs_trace_common::MAX_PORTS, v.len()));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("nfs-trace").chain(args.iter().copied()))
    }

    #[test]
    fn ports_default_repeat_and_comma() {
        let Command::Watch(w) = parse(&["watch"]).unwrap().command else { panic!() };
        assert_eq!(w.ports, vec![2049]);
        let Command::Watch(w) = parse(&["watch", "--port", "2049,20049", "-p", "111"]).unwrap().command else {
            panic!()
        };
        assert_eq!(w.ports, vec![2049, 20049, 111]);
    }

    #[test]
    fn bad_values_are_rejected() {
        for bad in [&["watch", "--port", "0"][..], &["watch", "--port", "70000"], &["watch", "--port", "nfs"]] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains("is not a port number"), "{e}");
        }
        assert!(parse(&["watch", "--ringbuf-kb", "3"]).is_err());
        assert!(parse(&["watch", "--duration", "-1"]).is_err());
        assert!(check_ports(&[1, 2, 3, 4, 5, 6, 7, 8, 9]).is_err());
        assert_eq!(check_ports(&[2049, 2049]).unwrap(), vec![2049]);
    }

    #[test]
    fn seconds_are_bounded() {
        for bad in ["NaN", "nan", "-1", "0", "inf", "-inf", "1e20", "31536001", "x", ""] {
            let e = parse_secs(bad).unwrap_err();
            assert_eq!(e, "want seconds, more than 0 and at most 31536000 (a year)", "{bad}");
        }
        for (good, ms) in [("0.001", 1), ("1", 1000), (" 60", 60_000), ("31536000", 31_536_000_000)] {
            assert_eq!(parse_secs(good).unwrap().as_millis(), ms, "{good}");
        }
        for args in [&["watch", "--duration", "1e20"][..], &["check", "--interval", "1e20"], &["prove", "--mount", "/m", "--timeout", "1e20"]] {
            let e = parse(args).unwrap_err().to_string();
            assert!(e.contains("more than 0 and at most 31536000"), "{args:?}: {e}");
        }
    }
}
