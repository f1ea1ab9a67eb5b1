//! `prove --mount` on a mount through a local proxy (a loopback server,
//! host/proxy.rs): the leg a middlebox can drop is the proxy's connection
//! to the server, not the kernel's to the proxy, so that is the one forced.
//! Each round aborts the proxy's established upstream socket through
//! sock_diag (as `ss -K` does); the proxy closes the kernel's connection to
//! it, the kernel reconnects on the statfs that follows, and the proxy
//! connects to the server again. The tracer watches the server's port and
//! reports that connect's source port; `ss` (sock_diag) confirms it.
use std::{
    net::IpAddr,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};
use nfs_trace_common::tcp_state;

use super::{Round, interrupted, statfs_in_background, wait_reconnect};
use crate::{
    host::{
        addr::endpoint,
        namespaces::Namespaces,
        nfsmounts::MountView,
        proxy::{self, Proxy},
        sock_diag::{self, TcpSock},
    },
    session::Session,
};

/// What is forced: the proxy of `view` in network namespace `netns`.
pub struct Upstream<'a> {
    pub view: &'a MountView,
    pub proxy: &'a Proxy,
    pub netns: u32,
    pub reach: std::path::PathBuf,
    pub proc_root: &'a Path,
}

impl Upstream<'_> {
    /// The server the proxy connects to: the one its upstream sockets go
    /// to now (a tunnel to several servers cannot be proved as one).
    pub fn server(&self) -> Result<(IpAddr, u16)> {
        match self.proxy.servers.as_slice() {
            [one] => Ok(*one),
            [] => bail!(
                "the proxy on {} ({}) holds no connection to a server now: nothing to force (is the mount in use?)",
                self.proxy.listen,
                self.proxy.comm.as_deref().unwrap_or("?")
            ),
            many => bail!(
                "the proxy on {} connects to {} servers ({}): cannot tell which leg is this mount's",
                self.proxy.listen,
                many.len(),
                many.iter().map(|(a, p)| endpoint(*a, *p)).collect::<Vec<_>>().join(", ")
            ),
        }
    }

    /// The proxy's established sockets to `server` now.
    fn established(&self, server: (IpAddr, u16)) -> Result<Vec<TcpSock>> {
        let addr = self.view.server_ip().context("the mount's server is no address")?;
        let socks = sock_diag::all_in(self.netns)?;
        let pids: Vec<u32> = Namespaces::scan(self.proc_root).net.get(&self.netns).cloned().unwrap_or_default();
        let (pid, owned) = proxy::holder(self.proc_root, &socks, addr, self.view.port, &pids).map_err(|e| anyhow!(e))?;
        if pid.is_none() {
            bail!("nothing listens on {} any more: the proxy is gone", self.proxy.listen);
        }
        Ok(socks
            .into_iter()
            .filter(|s| proxy::is_upstream(s, addr, self.view.port, &owned))
            .filter(|s| s.state == tcp_state::ESTABLISHED && (s.raddr.to_canonical(), s.rport) == server)
            .collect())
    }

    /// The proxy's connection that carries the mount once the reconnect
    /// settles, and the proxy's established ports to `server` then. The
    /// tracer's first reconnect is not always it: on 7.2 stunnel once opened
    /// two upstream connections 18 ms apart after the abort, and the server
    /// closed the first 350 ms later. So the set of upstream
    /// connections (`protect`: other tunnels, not this round's) must stay
    /// the same for SETTLE; if `first` is gone then, the one new connection
    /// left is the reconnect.
    fn settled(&self, server: (IpAddr, u16), first: u16, protect: &[u16]) -> Result<(u16, Vec<u16>)> {
        const SETTLE: Duration = Duration::from_millis(600);
        const LIMIT: Duration = Duration::from_secs(5);
        let start = Instant::now();
        let mut ports = self.ports(server)?;
        let mut since = Instant::now();
        while since.elapsed() < SETTLE && start.elapsed() < LIMIT {
            std::thread::sleep(Duration::from_millis(50));
            let now = self.ports(server)?;
            if now != ports {
                (ports, since) = (now, Instant::now());
            }
        }
        let port = carrier(first, &ports, protect).map_err(|why| {
            anyhow!("the tracer saw the proxy reconnect from port {first}, but after {:.1} s {why} (to {})", start.elapsed().as_secs_f64(), endpoint(server.0, server.1))
        })?;
        if port != first {
            eprintln!("nfs-trace: the proxy's connection from port {first} closed again; it reconnected from port {port}");
        }
        Ok((port, ports))
    }

    /// The proxy's established source ports to `server`, sorted.
    fn ports(&self, server: (IpAddr, u16)) -> Result<Vec<u16>> {
        let mut v: Vec<u16> = self.established(server)?.iter().map(|s| s.lport).collect();
        v.sort_unstable();
        Ok(v)
    }

    /// Forces `n` reconnects of the upstream leg and traces each.
    pub fn force_rounds(&self, s: &mut Session, n: u32, timeout: Duration) -> Result<Vec<Round>> {
        let server = self.server()?;
        let mut rounds = Vec::new();
        for round in 1..=n {
            if interrupted() {
                bail!("interrupted");
            }
            // Up before the round: a statfs makes the kernel connect to the
            // proxy and the proxy to the server.
            statfs_in_background(&self.reach);
            let deadline = Instant::now() + timeout;
            let mut now = loop {
                let now = self.established(server)?;
                if !now.is_empty() {
                    break now;
                }
                if Instant::now() >= deadline {
                    bail!("the proxy made no connection to {} within {} s", endpoint(server.0, server.1), timeout.as_secs())
                }
                std::thread::sleep(Duration::from_millis(100));
            };
            let up = now.remove(0);
            let before = up.lport;
            // Its other connections (another client's tunnel) are not this round's reconnect.
            let protect: Vec<u16> = now.iter().map(|o| o.lport).collect();
            s.drain(|_| Ok(true))?;
            eprintln!(
                "nfs-trace: round {round}: destroying the proxy's upstream socket from port {before} to {} (sock_diag)",
                endpoint(server.0, server.1)
            );
            let forced = Instant::now();
            sock_diag::destroy(&up)?;
            statfs_in_background(&self.reach);
            let after = wait_reconnect(s, server.0, server.1, timeout, &self.reach, &protect)?
                .ok_or_else(|| anyhow!("the proxy did not reconnect to the server within {} s (round {round})", timeout.as_secs_f64()))?;
            let reconnect_ms = forced.elapsed().as_secs_f64() * 1e3;
            eprintln!("nfs-trace: round {round}: the proxy reconnected from port {after} in {reconnect_ms:.0} ms");
            let (after, ss_after) = self.settled(server, after, &protect)?;
            rounds.push(Round {
                round,
                method: "proxy upstream destroy (sock_diag)",
                before,
                after,
                reused: before == after,
                reconnect_ms,
                ss_after,
            });
        }
        Ok(rounds)
    }
}

/// Which of the proxy's settled connections `ports` carries the mount after
/// a reconnect the tracer saw from `first`: that one if it is up, else the
/// one new connection (not one of `protect`, the other tunnels); else why
/// not.
fn carrier(first: u16, ports: &[u16], protect: &[u16]) -> Result<u16, String> {
    if ports.contains(&first) {
        return Ok(first);
    }
    match ports.iter().filter(|p| !protect.contains(p)).collect::<Vec<_>>().as_slice() {
        [one] => Ok(**one),
        [] => Err("the kernel lists no connection of the proxy".into()),
        many => Err(format!(
            "that connection closed again and {} new ones are up ({}): cannot tell which is the mount's",
            many.len(),
            many.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::carrier;

    #[test]
    fn the_reconnect_is_the_connection_that_stays() {
        // Seen on 7.2: two upstreams 18 ms apart, the first closed 350 ms later.
        assert_eq!(carrier(39858, &[39862], &[]), Ok(39862));
        assert_eq!(carrier(39858, &[39858], &[]), Ok(39858));
        // Another client's tunnel is not this mount's reconnect.
        assert_eq!(carrier(39858, &[40000, 39862], &[40000]), Ok(39862));
        assert_eq!(carrier(39858, &[39858, 40000], &[40000]), Ok(39858));
        assert!(carrier(39858, &[40000], &[40000]).unwrap_err().contains("no connection"));
        assert!(carrier(39858, &[39862, 39870], &[]).unwrap_err().contains("cannot tell"));
    }
}
