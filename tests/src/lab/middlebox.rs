//! A stateful middlebox between a second client namespace and the server
//! (issue 5): a router namespace forwarding with netfilter connection
//! tracking, modelled on what cloud connection tracking does to a client
//! that reconnects from the port of a flow it still holds
//! (../shared/FINDINGS.md §6):
//!
//! - a SYN that matches a still-tracked ESTABLISHED entry is dropped
//!   (`tcp flags & (syn|ack) == syn ct state established`), and dropped
//!   SYNs do not refresh the entry, so it expires after the router's
//!   `nf_conntrack_tcp_timeout_established`;
//! - the client's abort RST never reaches the tracker: a raw-priority
//!   prerouting chain (before conntrack) drops it, only around the abort —
//!   a permanent rule would also eat the RST that ends the stall.
//!
//! - the black hole (issue 12) drops one established flow's 4-tuple in raw
//!   prerouting, so conntrack never sees its packets.
//!
//! server (initial ns) s0 10.98.0.1 ── r0 10.98.0.2 [rtr] r1 10.98.1.1 ── c1 10.98.1.2 [mbcli]
use std::time::Duration;

use anyhow::{Context as _, Result};

use super::{
    cmd,
    net::{self, ClientNs, NFS_PORT},
};

/// The server as the client behind the middlebox reaches it.
pub const SERVER: &str = "10.98.0.1";
pub const CLIENT: &str = "10.98.1.2";
const ROUTER_NS: &str = "rtr";
const CLIENT_NS: &str = "mbcli";
/// Seconds the router keeps an idle ESTABLISHED entry: short, so a stall
/// lasts well under a minute instead of the 5 days of the default (on 6.12
/// with 25 s a v3 stall lasted 69 s: the SYN after expiry meets the
/// server's stale socket, the client resets it and connects at its next
/// SYN slot), and longer than a kernel may take to give up on the old port
/// by itself (6.12 gave up a v4.0 reconnect after 10 s), so either end shows.
pub const TRACKED_TIMEOUT_S: u32 = 14;

const T: Duration = Duration::from_secs(20);

/// The outage (issue 12): every packet to or from the server dropped in
/// the forward hook, each direction counted. The reconnect's SYNs are new
/// to conntrack (ct state new), so the reused-flow rule never matches them.
const OUTAGE_RULES: &str = "\
table ip outage {
    chain blocked {
        type filter hook forward priority filter - 1; policy accept;
        ip daddr 10.98.0.1 counter drop
        ip saddr 10.98.0.1 counter drop
    }
}
";

/// The black hole (issue 12): the established NFS flow's packets, that one
/// 4-tuple in both directions, dropped without a RST; every other flow to
/// the server (the tracer's canary, a reconnect from a new port) passes.
/// Dropped in raw prerouting, before conntrack: conntrack must not see
/// them, or the client's data retransmits would keep the old flow's
/// ESTABLISHED entry alive and the stall rule above would go on dropping
/// the reused port's SYNs after the black hole ends. So the entry expires
/// [`TRACKED_TIMEOUT_S`] after the flow's last packet before the rule, and
/// a black hole longer than that ends when its rule goes.
fn blackhole_rules(sport: u16) -> String {
    format!(
        "\
table ip blackhole {{
    chain held {{
        type filter hook prerouting priority raw; policy accept;
        ip saddr {CLIENT} ip daddr {SERVER} tcp sport {sport} tcp dport {NFS_PORT} counter drop
        ip saddr {SERVER} ip daddr {CLIENT} tcp sport {NFS_PORT} tcp dport {sport} counter drop
    }}
}}
"
    )
}

/// What the black hole's rule dropped, per direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlackholeDrops {
    pub to_server: u64,
    pub from_server: u64,
}

/// The namespaces of the middlebox topology.
pub struct Middlebox {
    pub client: ClientNs,
    router: ClientNs,
}

/// The forwarding rules: permanent for the life of the topology.
const FORWARD_RULES: &str = "\
table ip middlebox {
    chain forward {
        type filter hook forward priority filter; policy accept;
        tcp flags & (syn | ack) == syn ct state established counter drop
    }
}
";

/// Drops the client's RSTs before conntrack sees them (raw runs at -300,
/// conntrack at -200).
const RST_RULES: &str = "\
table ip abort {
    chain pre {
        type filter hook prerouting priority raw; policy accept;
        iifname \"r1\" tcp flags & rst == rst counter drop
    }
}
";

fn sysctl(ns: &ClientNs, key: &str, value: &str) -> Result<()> {
    cmd::run(ns.command("/bin/busybox").args(["sysctl", "-w", &format!("{key}={value}")]), T).map(|_| ())
}

fn nft(ns: &ClientNs, args: &[&str]) -> Result<String> {
    cmd::run(ns.command("/usr/sbin/nft").args(args), T)
}

/// Loads an nft ruleset from text (nft reads the file; the guest has /tmp).
fn nft_load(ns: &ClientNs, name: &str, rules: &str) -> Result<()> {
    let path = format!("/tmp/{name}.nft");
    std::fs::write(&path, rules).with_context(|| format!("cannot write {path}"))?;
    nft(ns, &["-f", &path]).map(|_| ())
}

impl Middlebox {
    /// Builds the topology and the forwarding rules.
    pub fn setup() -> Result<Middlebox> {
        let ip = net::ip;
        ip(&["netns", "add", ROUTER_NS])?;
        ip(&["netns", "add", CLIENT_NS])?;
        ip(&["link", "add", "s0", "type", "veth", "peer", "name", "r0"])?;
        ip(&["link", "add", "r1", "type", "veth", "peer", "name", "c1"])?;
        ip(&["link", "set", "r0", "netns", ROUTER_NS])?;
        ip(&["link", "set", "r1", "netns", ROUTER_NS])?;
        ip(&["link", "set", "c1", "netns", CLIENT_NS])?;
        ip(&["addr", "add", &format!("{SERVER}/24"), "dev", "s0"])?;
        ip(&["link", "set", "s0", "up"])?;
        ip(&["route", "add", "10.98.1.0/24", "via", "10.98.0.2"])?;
        ip(&["-n", ROUTER_NS, "link", "set", "lo", "up"])?;
        ip(&["-n", ROUTER_NS, "addr", "add", "10.98.0.2/24", "dev", "r0"])?;
        ip(&["-n", ROUTER_NS, "addr", "add", "10.98.1.1/24", "dev", "r1"])?;
        ip(&["-n", ROUTER_NS, "link", "set", "r0", "up"])?;
        ip(&["-n", ROUTER_NS, "link", "set", "r1", "up"])?;
        ip(&["-n", CLIENT_NS, "link", "set", "lo", "up"])?;
        ip(&["-n", CLIENT_NS, "addr", "add", &format!("{CLIENT}/24"), "dev", "c1"])?;
        ip(&["-n", CLIENT_NS, "link", "set", "c1", "up"])?;
        ip(&["-n", CLIENT_NS, "route", "add", "default", "via", "10.98.1.1"])?;
        let mb = Middlebox { client: ClientNs::open(CLIENT_NS)?, router: ClientNs::open(ROUTER_NS)? };
        sysctl(&mb.router, "net.ipv4.ip_forward", "1")?;
        // The ct expression makes the router's namespace track connections;
        // the timeout sysctl exists once nf_conntrack is loaded.
        nft_load(&mb.router, "middlebox", FORWARD_RULES).context("loading the middlebox's forward rules")?;
        sysctl(&mb.router, "net.netfilter.nf_conntrack_tcp_timeout_established", &TRACKED_TIMEOUT_S.to_string())?;
        Ok(mb)
    }

    /// Aborts the client's connections to the server (`ss -K`) while the
    /// router drops the abort's RST, so the router and the server keep the
    /// old flow ESTABLISHED. Returns what ss killed.
    pub fn abort_unseen(&self) -> Result<Vec<net::Sock>> {
        nft_load(&self.router, "abort", RST_RULES).context("loading the RST drop")?;
        let killed = net::kill_to(&self.client, SERVER);
        // The RST leaves within the ss call; give it a moment on the veth.
        std::thread::sleep(Duration::from_millis(200));
        let dropped = nft(&self.router, &["list", "table", "ip", "abort"]).unwrap_or_default();
        nft(&self.router, &["delete", "table", "ip", "abort"]).context("removing the RST drop")?;
        let killed = killed?;
        super::out::log(format!("middlebox: abort RST rule: {}", counter_of(&dropped).unwrap_or("?".into())));
        Ok(killed)
    }

    /// Destroys the server's connections to the client that are left once
    /// the client has unmounted (`ss -K` in the server's namespace, the
    /// guest's initial one). The stall and black-hole scenarios leave the
    /// server holding flows the client gave up (the router dropped the RST,
    /// or the client left a black-holed flow for a new port); a real server
    /// drops them when they idle out, minutes later. A later scenario whose
    /// mount drew such a port then met the stale socket (challenge ACK, RST,
    /// a 1 s SYN retry) and began with a stall of its own: 6.12
    /// server-silent-v3 drew the port blackhole-v4.1 had left (CI). Returns
    /// what ss killed.
    pub fn forget_client_flows(&self) -> Result<Vec<net::Sock>> {
        let text = super::cmd::run(
            std::process::Command::new("/sbin/ss").args([
                "-K", "-tnaeH", "src", SERVER, "sport", "=", &format!(":{}", net::NFS_PORT), "dst", CLIENT,
            ]),
            T,
        )?;
        net::parse_ss(&text)
    }

    /// Starts the outage: the router drops everything to and from the server.
    pub fn outage_begin(&self) -> Result<()> {
        nft_load(&self.router, "outage", OUTAGE_RULES).context("loading the outage rule")
    }

    /// Ends the outage; returns the packets it dropped (both directions).
    pub fn outage_end(&self) -> Result<u64> {
        let listing = nft(&self.router, &["list", "table", "ip", "outage"]).context("listing the outage rule")?;
        nft(&self.router, &["delete", "table", "ip", "outage"]).context("removing the outage rule")?;
        Ok(packets_of(&listing))
    }

    /// Starts the black hole of the client's flow from `sport`.
    pub fn blackhole_begin(&self, sport: u16) -> Result<()> {
        nft_load(&self.router, "blackhole", &blackhole_rules(sport)).context("loading the black-hole rule")
    }

    /// Ends the black hole; returns what its rule dropped, the ruleset as
    /// nft listed it just before (the truth of what it matched), and when
    /// the delete began (the rule stops dropping inside it).
    pub fn blackhole_end(&self) -> Result<(BlackholeDrops, String, u64)> {
        let listing = nft(&self.router, &["list", "table", "ip", "blackhole"]).context("listing the black-hole rule")?;
        let t = super::sys::mono_ns();
        nft(&self.router, &["delete", "table", "ip", "blackhole"]).context("removing the black-hole rule")?;
        Ok((drops_by_direction(&listing), listing, t))
    }

    /// SYNs the router has dropped so far (the forward rule's counter):
    /// shows the middlebox, not the client, held the reconnect back.
    pub fn forward_drops(&self) -> Result<u64> {
        let text = nft(&self.router, &["list", "table", "ip", "middlebox"])?;
        Ok(counter_of(&text).and_then(|c| c.split_whitespace().nth(1).and_then(|n| n.parse().ok())).unwrap_or(0))
    }
}

/// "packets N bytes M" from an nft listing with one counter.
fn counter_of(listing: &str) -> Option<String> {
    let i = listing.find("packets ")?;
    let rest = &listing[i..];
    let end = rest.find(" drop").unwrap_or(rest.len());
    Some(rest[..end].trim().to_string())
}

/// The sum of every rule's "packets N" in an nft listing.
fn packets_of(listing: &str) -> u64 {
    listing.split("packets ").skip(1).filter_map(|r| r.split_whitespace().next()?.parse::<u64>().ok()).sum()
}

/// The black-hole listing's counters: the rule from the client (`ip saddr
/// CLIENT`) and the one from the server.
fn drops_by_direction(listing: &str) -> BlackholeDrops {
    let of = |from: &str| {
        listing
            .lines()
            .find(|l| l.contains(&format!("ip saddr {from} ")))
            .map_or(0, packets_of)
    };
    BlackholeDrops { to_server: of(CLIENT), from_server: of(SERVER) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_counter_of_a_listing() {
        let l = "table ip middlebox {\n chain forward {\n  tcp flags & (syn | ack) == syn ct state established counter packets 7 bytes 420 drop\n }\n}\n";
        assert_eq!(counter_of(l).as_deref(), Some("packets 7 bytes 420"));
        assert_eq!(counter_of("table ip x {}").as_deref(), None);
    }

    #[test]
    fn sums_the_outage_counters() {
        let l = "table ip outage {\n chain blocked {\n  ip daddr 10.98.0.1 counter packets 12 bytes 720 drop\n  ip saddr 10.98.0.1 counter packets 3 bytes 180 drop\n }\n}\n";
        assert_eq!(packets_of(l), 15);
        assert_eq!(packets_of("table ip outage {}"), 0);
    }

    #[test]
    fn the_blackhole_rule_names_only_the_flow() {
        let r = blackhole_rules(871);
        // Each rule names all four of the tuple, so a canary or a reconnect
        // from another port (or another client) is not matched.
        let rules: Vec<&str> = r.lines().filter(|l| l.contains(" drop")).collect();
        assert_eq!(rules.len(), 2, "{r}");
        assert!(rules[0].contains("ip saddr 10.98.1.2 ip daddr 10.98.0.1 tcp sport 871 tcp dport 2049 counter drop"), "{r}");
        assert!(rules[1].contains("ip saddr 10.98.0.1 ip daddr 10.98.1.2 tcp sport 2049 tcp dport 871 counter drop"), "{r}");
        // Before conntrack (raw), and no reject: the client learns nothing.
        assert!(r.contains("hook prerouting priority raw;") && !r.contains("reject"), "{r}");
    }

    #[test]
    fn reads_the_blackhole_counters_by_direction() {
        let l = "table ip blackhole {\n chain held {\n  type filter hook prerouting priority raw; policy accept;\n  \
                 ip saddr 10.98.1.2 ip daddr 10.98.0.1 tcp sport 871 tcp dport 2049 counter packets 9 bytes 900 drop\n  \
                 ip saddr 10.98.0.1 ip daddr 10.98.1.2 tcp sport 2049 tcp dport 871 counter packets 2 bytes 104 drop\n }\n}\n";
        assert_eq!(drops_by_direction(l), BlackholeDrops { to_server: 9, from_server: 2 });
        assert_eq!(drops_by_direction("table ip blackhole {}"), BlackholeDrops { to_server: 0, from_server: 0 });
    }

    #[test]
    fn the_outage_rule_names_the_server() {
        assert!(OUTAGE_RULES.contains(&format!("ip daddr {SERVER} ")));
        assert!(OUTAGE_RULES.contains(&format!("ip saddr {SERVER} ")));
    }
}
