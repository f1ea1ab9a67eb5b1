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
            let listed = Instant::now() + Duration::from_secs(2);
            let ss_after = loop {
                let ports: Vec<u16> = self.established(server)?.iter().map(|s| s.lport).collect();
                if ports.contains(&after) || Instant::now() >= listed {
                    break ports;
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            if !ss_after.contains(&after) {
                bail!("the tracer saw the proxy reconnect from port {after} but the kernel lists no such connection of it after 2 s");
            }
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
