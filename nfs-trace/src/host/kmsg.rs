//! The kernel's own word on NFS servers, from /dev/kmsg: "nfs: server X not
//! responding, still trying" and "nfs: server X OK". Joined to stalls when
//! present; never relied on (in the lab's middlebox runs the kernel printed
//! nothing while the mount hung).
use std::{
    fs::File,
    io::{ErrorKind, Read, Seek, SeekFrom},
    os::unix::fs::OpenOptionsExt,
};

use tokio::io::unix::AsyncFd;

/// What the kernel said about a server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerLine {
    /// The server as the kernel names it (the mount's host part).
    pub server: String,
    pub not_responding: bool,
    pub text: String,
}

/// Parses one message (after the `pri,seq,ts,flags;` prefix).
pub fn parse(msg: &str) -> Option<ServerLine> {
    let rest = msg.trim().strip_prefix("nfs: server ")?;
    let (server, tail) = rest.split_once(' ')?;
    let not_responding = tail.starts_with("not responding");
    if !not_responding && !tail.starts_with("OK") {
        return None;
    }
    Some(ServerLine { server: server.to_string(), not_responding, text: msg.trim().to_string() })
}

/// Reads new kernel log records without blocking; [`Kmsg::readable`] waits
/// for the next one, so an idle `watch` need not look on a timer.
pub struct Kmsg {
    f: AsyncFd<File>,
}

impl Kmsg {
    /// Opens /dev/kmsg at its end (only what is logged from now on).
    pub fn open() -> Option<Kmsg> {
        let mut f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open("/dev/kmsg").ok()?;
        f.seek(SeekFrom::End(0)).ok()?;
        // /dev/kmsg is pollable (devkmsg_poll); where it is not, None: no
        // kernel lines, as without /dev/kmsg. Needs the tokio runtime.
        // SAFETY: the File owns its fd and keeps it open, unchanged, until
        // it is dropped, which is only with the AsyncFd that owns it.
        Some(Kmsg { f: unsafe { AsyncFd::register_with_interest(f, tokio::io::Interest::READABLE) }.ok()? })
    }

    /// Returns when a record was logged since the last [`Kmsg::poll`] read
    /// everything (any record: the caller polls, which filters).
    pub async fn readable(&self) {
        match self.f.readable().await {
            Ok(mut guard) => guard.clear_ready(),
            Err(_) => std::future::pending().await,
        }
    }

    /// NFS server lines logged since the last call.
    pub fn poll(&mut self) -> Vec<ServerLine> {
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            // One read returns one record; EAGAIN when none is left, EPIPE
            // when records were overwritten before we read them.
            match self.f.get_mut().read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let rec = String::from_utf8_lossy(&buf[..n]);
                    let msg = rec.split_once(';').map(|(_, m)| m).unwrap_or(&rec);
                    let msg = msg.lines().next().unwrap_or_default();
                    if let Some(l) = parse(msg) {
                        out.push(l);
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => break,
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_server_lines() {
        let l = parse("nfs: server 10.99.0.1 not responding, still trying").unwrap();
        assert_eq!((l.server.as_str(), l.not_responding), ("10.99.0.1", true));
        let l = parse("nfs: server filer.example OK").unwrap();
        assert_eq!((l.server.as_str(), l.not_responding), ("filer.example", false));
        assert_eq!(parse("nfs: server x timed out"), None);
        assert_eq!(parse("eth0: link up"), None);
    }
}
