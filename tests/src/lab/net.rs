//! The network: a veth pair between the server (initial namespace) and a
//! client network namespace, and `ss` as the ground truth for the client's
//! TCP connection to the NFS port.
use std::{
    fs::File,
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use super::{cmd, sys};

pub const SERVER: &str = "10.99.0.1";
pub const CLIENT: &str = "10.99.0.2";
pub const NFS_PORT: u16 = 2049;
const NETNS: &str = "cli";
/// sysfs as seen from the client namespace: /sys/kernel/sunrpc only shows the
/// transports of the namespace that mounted that sysfs instance.
pub const CLIENT_SYSFS: &str = "/run/sys-cli";

const T: Duration = Duration::from_secs(20);

/// The client namespace: run commands in it.
pub struct ClientNs {
    fd: File,
    /// A container's own mount namespace; None: the guest init's.
    mnt: Option<File>,
}

impl ClientNs {
    /// Opens a namespace made with `ip netns add <name>`.
    pub fn open(name: &str) -> Result<ClientNs> {
        let fd = File::open(format!("/run/netns/{name}")).with_context(|| format!("cannot open network namespace {name}"))?;
        Ok(ClientNs { fd, mnt: None })
    }

    /// The network and mount namespaces of process `pid` (a container).
    pub fn of_process(pid: u32) -> Result<ClientNs> {
        let open = |kind: &str| {
            File::open(format!("/proc/{pid}/ns/{kind}")).with_context(|| format!("cannot open /proc/{pid}/ns/{kind}"))
        };
        Ok(ClientNs { fd: open("net")?, mnt: Some(open("mnt")?) })
    }

    /// A command that runs in the client namespace. `setns` in a pre_exec
    /// hook keeps the mount namespace (unlike `ip netns exec`, which would
    /// hide the NFS mount made inside it), or enters the container's.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        let fd = self.fd.as_raw_fd();
        let mnt = self.mnt.as_ref().map(|f| f.as_raw_fd());
        // SAFETY: the hook only calls setns, which is async-signal-safe, on
        // fds that stay open in the parent for the lifetime of self.
        unsafe {
            c.pre_exec(move || {
                sys::setns_net(fd)?;
                mnt.map_or(Ok(()), sys::setns_mnt)
            });
        }
        c
    }

    /// The namespace's inode: what `readlink /proc/PID/ns/net` shows for
    /// a process in it, and what the tracer's records call `netns`.
    pub fn inode(&self) -> Result<u64> {
        use std::os::unix::fs::MetadataExt as _;
        Ok(self.fd.metadata().context("cannot stat a network namespace")?.ino())
    }
}

/// `ip` from iproute2 by full path (busybox has an `ip` applet too).
pub fn ip(args: &[&str]) -> Result<()> {
    cmd::run(Command::new("/sbin/ip").args(args), T).map(|_| ())
}

/// lo up, the veth pair, the client namespace and a sysfs mounted from it.
pub fn setup() -> Result<ClientNs> {
    ip(&["link", "set", "lo", "up"])?;
    ip(&["netns", "add", NETNS])?;
    ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"])?;
    ip(&["link", "set", "v1", "netns", NETNS])?;
    ip(&["addr", "add", &format!("{SERVER}/24"), "dev", "v0"])?;
    ip(&["link", "set", "v0", "up"])?;
    ip(&["-n", NETNS, "link", "set", "lo", "up"])?;
    ip(&["-n", NETNS, "addr", "add", &format!("{CLIENT}/24"), "dev", "v1"])?;
    ip(&["-n", NETNS, "link", "set", "v1", "up"])?;
    let ns = ClientNs::open(NETNS)?;
    mount_client_sysfs(&ns)?;
    Ok(ns)
}

/// IPv6 (ULA) addresses on the veth pair; `nodad` makes them usable at once.
pub const SERVER6: &str = "fd00:99::1";
pub const CLIENT6: &str = "fd00:99::2";

pub fn add_ipv6() -> Result<()> {
    ip(&["-6", "addr", "add", &format!("{SERVER6}/64"), "dev", "v0", "nodad"])?;
    ip(&["-n", NETNS, "-6", "addr", "add", &format!("{CLIENT6}/64"), "dev", "v1", "nodad"])
}

/// A second client network namespace `name` with its own veth pair into the
/// server's namespace (`server_side` there, `client` inside), routed to
/// every server address: a container mounting [`SERVER`] as the client does.
pub fn add_container_net(name: &str, server_side: &str, client: &str) -> Result<()> {
    ip(&["netns", "add", name])?;
    ip(&["link", "add", "v2", "type", "veth", "peer", "name", "v3"])?;
    ip(&["link", "set", "v3", "netns", name])?;
    ip(&["addr", "add", &format!("{server_side}/24"), "dev", "v2"])?;
    ip(&["link", "set", "v2", "up"])?;
    ip(&["-n", name, "link", "set", "lo", "up"])?;
    ip(&["-n", name, "addr", "add", &format!("{client}/24"), "dev", "v3"])?;
    ip(&["-n", name, "link", "set", "v3", "up"])?;
    ip(&["-n", name, "route", "add", "default", "via", server_side])
}

/// Mounts a sysfs instance tagged with the client namespace: enter it on this
/// (single) thread, mount, and come back.
fn mount_client_sysfs(ns: &ClientNs) -> Result<()> {
    let home = File::open("/proc/self/ns/net").context("cannot open own network namespace")?;
    sys::setns_net(ns.fd.as_raw_fd()).context("setns to the client namespace")?;
    let r = sys::mount("sysfs", CLIENT_SYSFS, "sysfs", None);
    sys::setns_net(home.as_raw_fd()).context("setns back to the initial namespace")?;
    r
}

/// One TCP socket from `ss -tnae`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sock {
    pub state: String,
    pub local_port: u16,
    pub peer: String,
    /// The socket cookie (`sk:`): tells a new connection from the old one
    /// even when it reuses the same source port.
    pub cookie: String,
    /// Its owner with `ss -p` (`users:(("stunnel4",pid=123,fd=9))`); None
    /// without -p, or for a kernel socket.
    pub pid: Option<u32>,
}

/// Parses `ss -tnaeH` lines: `STATE RQ SQ LOCAL PEER … ino:N sk:HEX …`
/// (with -p, `users:((…,pid=N,…))` too).
pub fn parse_ss(text: &str) -> Result<Vec<Sock>> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 5 {
            bail!("unexpected ss line: {line:?}");
        }
        let local_port = f[3]
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .with_context(|| format!("no local port in ss line: {line:?}"))?;
        let cookie = f.iter().find_map(|t| t.strip_prefix("sk:")).unwrap_or("").to_string();
        let pid = line.split("pid=").nth(1).and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next()).and_then(|p| p.parse().ok());
        out.push(Sock { state: f[0].to_string(), local_port, peer: f[4].to_string(), cookie, pid });
    }
    Ok(out)
}

/// The single ESTABLISHED one, None while there is none.
pub fn established(ns: &ClientNs) -> Result<Option<Sock>> {
    established_to(ns, SERVER)
}

/// `ss -K`: destroys the client's connections to the NFS port. Returns what
/// ss listed as killed.
pub fn kill_nfs_connections(ns: &ClientNs) -> Result<Vec<Sock>> {
    kill_to(ns, SERVER)
}

/// The sockets in `ns` to `server`'s NFS port.
pub fn sockets_to(ns: &ClientNs, server: &str) -> Result<Vec<Sock>> {
    let text = cmd::run(
        ns.command("/sbin/ss").args(["-tnaeH", "dst", &ss_addr(server), "dport", "=", &format!(":{NFS_PORT}")]),
        T,
    )?;
    parse_ss(&text)
}

/// An address as ss's filter wants it: IPv6 in brackets.
fn ss_addr(server: &str) -> String {
    if server.contains(':') { format!("[{server}]") } else { server.to_string() }
}

/// `ss -K` of the one socket in `ns` from `sport` to `server`'s NFS port.
pub fn kill_flow(ns: &ClientNs, server: &str, sport: u16) -> Result<Vec<Sock>> {
    let text = cmd::run(
        ns.command("/sbin/ss").args([
            "-K", "-tnaeH", "dst", &ss_addr(server), "dport", "=", &format!(":{NFS_PORT}"), "sport", "=", &format!(":{sport}"),
        ]),
        T,
    )?;
    parse_ss(&text)
}

/// The single ESTABLISHED socket in `ns` to `server`'s NFS port.
pub fn established_to(ns: &ClientNs, server: &str) -> Result<Option<Sock>> {
    let est: Vec<Sock> = sockets_to(ns, server)?.into_iter().filter(|s| s.state == "ESTAB").collect();
    match est.len() {
        0 => Ok(None),
        1 => Ok(est.into_iter().next()),
        _ => bail!("more than one ESTAB connection to {server}:{NFS_PORT}: {est:?}"),
    }
}

/// `ss -K` of the sockets in `ns` to `server`'s NFS port.
pub fn kill_to(ns: &ClientNs, server: &str) -> Result<Vec<Sock>> {
    let text = cmd::run(
        ns.command("/sbin/ss").args(["-K", "-tnaeH", "dst", &ss_addr(server), "dport", "=", &format!(":{NFS_PORT}")]),
        T,
    )?;
    parse_ss(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ss_lines() {
        let t = "ESTAB 0 0 10.99.0.2:871 10.99.0.1:2049 ino:0 sk:1001 cgroup:/ <->\n\
                 TIME-WAIT 0 0 10.99.0.2:40000 10.99.0.1:2049 timer:(timewait,59sec,0) ino:0 sk:9\n";
        let s = parse_ss(t).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].local_port, 871);
        assert_eq!(s[0].cookie, "1001");
        assert_eq!(s[1].state, "TIME-WAIT");
        assert_eq!(s[0].pid, None);
    }

    #[test]
    fn parses_the_owner_with_ss_p() {
        let t = "ESTAB 0 0 10.99.0.2:41000 10.99.0.1:20490 users:((\"stunnel4\",pid=123,fd=9))\n\
                 SYN-SENT 0 1 10.99.0.2:41002 10.99.0.1:20490\n";
        let o = parse_ss(t).unwrap();
        assert_eq!((o[0].local_port, o[0].pid, o[0].peer.as_str()), (41000, Some(123), "10.99.0.1:20490"));
        assert_eq!((o[1].state.as_str(), o[1].pid), ("SYN-SENT", None));
    }

    #[test]
    fn parses_ipv6_ss_lines() {
        let s = parse_ss("ESTAB 0 0 [fd00:99::2]:871 [fd00:99::1]:2049 ino:0 sk:7 <->\n").unwrap();
        assert_eq!(s[0].local_port, 871);
        assert_eq!(ss_addr("fd00:99::1"), "[fd00:99::1]");
        assert_eq!(ss_addr(SERVER), SERVER);
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_ss("ESTAB 0 0 nonsense 10.99.0.1:2049\n").is_err());
    }
}
