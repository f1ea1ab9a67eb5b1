//! `prove --server`'s plan, pure: the server spec, the candidate option
//! sets, the kernel's client-sharing rule that decides which sets can be
//! tried without touching a production mount, and the ranking of results.
//!
//! The sharing rule (fs/nfs/client.c `nfs_match_client`, 5.10 to 7.x): a new
//! mount reuses an existing `nfs_client`, and so its transport, when it is in
//! the same network namespace, with the same NFS version and minor version,
//! transport protocol, server address and port (and TLS policy, 6.4+).
//! Options such as `noresvport` or `nconnect` are *not* compared: a second
//! mount with `noresvport` of a server and version already mounted gets the
//! first mount's transport, reserved port and all.
use std::net::IpAddr;

use serde::Serialize;

use crate::host::nfsmounts::MountView;

/// `HOST[:PORT]:/EXPORT`; an IPv6 address in brackets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServerSpec {
    pub host: String,
    pub port: u16,
    pub export: String,
}

impl ServerSpec {
    /// The mount source `mount.nfs` takes: `host:/export`, `[v6]:/export`.
    pub fn source(&self) -> String {
        if self.host.contains(':') { format!("[{}]:{}", self.host, self.export) } else { format!("{}:{}", self.host, self.export) }
    }
}

pub fn parse_spec(s: &str) -> Result<ServerSpec, String> {
    let bad = |why: &str| format!("'{s}' {why}: want HOST[:PORT]:/EXPORT, e.g. 10.0.0.5:/export or [fd00::5]:2049:/");
    let port_of = |p: &str| p.parse::<u16>().ok().filter(|&p| p > 0).ok_or_else(|| bad("has a bad port"));
    let (host, port, export) = if let Some(r) = s.strip_prefix('[') {
        let (h, rest) = r.split_once(']').ok_or_else(|| bad("has no closing ]"))?;
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad("has a bad IPv6 address"));
        }
        let rest = rest.strip_prefix(':').ok_or_else(|| bad("has no :/EXPORT after the address"))?;
        match rest.split_once(":/") {
            Some((p, e)) if !rest.starts_with('/') => (h.to_string(), port_of(p)?, format!("/{e}")),
            _ => (h.to_string(), 2049, rest.to_string()),
        }
    } else {
        let (left, e) = s.split_once(":/").ok_or_else(|| bad("has no :/EXPORT"))?;
        let export = format!("/{e}");
        match left.matches(':').count() {
            0 => (left.to_string(), 2049, export),
            1 => {
                let (h, p) = left.split_once(':').expect("one colon");
                (h.to_string(), port_of(p)?, export)
            }
            _ => return Err(bad("looks like an IPv6 address without brackets")),
        }
    };
    if host.is_empty() {
        return Err(bad("names no server"));
    }
    if !export.starts_with('/') {
        return Err(bad("has no /EXPORT"));
    }
    Ok(ServerSpec { host, port, export })
}

/// One candidate: the options as given to `mount.nfs` and what they ask for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OptionSet {
    pub options: String,
    /// `3`, `4.0`, `4.1`, `4.2`; `4` or None when the server picks.
    pub vers: Option<String>,
    pub noresvport: bool,
}

/// Options that say where and how the mount connects, which the option set
/// and the server spec decide (or which name another client's addresses).
const NOT_KEPT: &[&str] =
    &["vers", "nfsvers", "minorversion", "noresvport", "resvport", "addr", "clientaddr", "mountaddr", "mountport", "mountvers", "port"];

fn key(o: &str) -> &str {
    o.split_once('=').map_or(o, |(k, _)| k)
}

pub fn parse_set(s: &str) -> Result<OptionSet, String> {
    let opts: Vec<&str> = s.split(',').map(str::trim).filter(|o| !o.is_empty()).collect();
    if opts.is_empty() {
        return Err("an empty option set: give mount options such as vers=3,noresvport".into());
    }
    if let Some(o) = opts.iter().find(|o| o.chars().any(|c| c.is_whitespace() || c.is_control())) {
        return Err(format!("option '{o}' has a space or control character"));
    }
    let val = |k: &str| opts.iter().rev().find_map(|o| o.strip_prefix(k).and_then(|v| v.strip_prefix('=')));
    let mut vers = val("vers").or_else(|| val("nfsvers")).map(str::to_string);
    if let (Some("4"), Some(minor)) = (vers.as_deref(), val("minorversion")) {
        vers = Some(format!("4.{minor}"));
    }
    if let Some(v) = &vers
        && !["2", "3", "4", "4.0", "4.1", "4.2"].contains(&v.as_str())
    {
        return Err(format!("vers={v}: want 3, 4, 4.0, 4.1 or 4.2"));
    }
    let noresvport = opts.iter().rev().find(|o| matches!(**o, "noresvport" | "resvport")) == Some(&"noresvport");
    Ok(OptionSet { options: opts.join(","), vers, noresvport })
}

/// The options of a production mount worth keeping in a test mount
/// (`--like`): all but those [`NOT_KEPT`] and the kernel's bookkeeping.
pub fn like_options(mount_options: &str) -> Vec<String> {
    mount_options
        .split(',')
        .filter(|o| !o.is_empty() && !NOT_KEPT.contains(&key(o)))
        // Read-only/read-write and atime flags are the mount point's, not
        // the transport's.
        .filter(|o| !matches!(*o, "rw" | "ro" | "relatime" | "noatime" | "nodiratime" | "nosuid" | "nodev" | "noexec"))
        .map(str::to_string)
        .collect()
}

/// The default candidates: each version with and without noresvport, with
/// `base` (from `--like`) in front.
pub fn default_sets(base: &[String]) -> Vec<OptionSet> {
    let mut v = Vec::new();
    for vers in ["3", "4.0", "4.1", "4.2"] {
        for nr in [false, true] {
            let mut o: Vec<String> = base.to_vec();
            o.push(format!("vers={vers}"));
            if nr {
                o.push("noresvport".into());
            }
            v.push(parse_set(&o.join(",")).expect("built from valid parts"));
        }
    }
    v
}

/// `--options` sets with `base` in front (a set's own options win: they come last).
pub fn given_sets(given: &[String], base: &[String]) -> Result<Vec<OptionSet>, String> {
    given
        .iter()
        .map(|g| {
            let mut o = base.to_vec();
            o.push(g.clone());
            parse_set(&o.join(","))
        })
        .collect()
}

/// The version the kernel's client is keyed by: `4` alone is 4.0 in
/// mountinfo of older kernels.
fn client_vers(v: &str) -> &str {
    if v == "4" { "4.0" } else { v }
}

/// The production mount whose client (and so transport) a mount of
/// `vers` to `server:port` from netns `netns` would share, by the kernel's
/// rule. `vers` None (the server picks) is checked after mounting.
pub fn shared_with<'a>(vers: &str, server: IpAddr, port: u16, netns: Option<u32>, production: &'a [MountView]) -> Option<&'a MountView> {
    production.iter().find(|m| {
        m.server_ip() == Some(server)
            && m.port == port
            && m.netns == netns
            && m.vers.as_deref().map(client_vers) == Some(client_vers(vers))
    })
}

/// How one option set ended.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Outcome {
    /// Reconnects were forced and traced.
    Tested {
        /// The version the kernel mounted (the server's pick for `vers=4`).
        mounted_vers: String,
        /// Whether the kernel shows noresvport on the mount.
        mounted_noresvport: bool,
        /// Every port below 1024.
        reserved: bool,
        /// The port before the first reconnect, then after each.
        ports: Vec<u16>,
        reused: u32,
        reconnects: u32,
        median_reconnect_ms: f64,
        rounds: Vec<super::Round>,
    },
    /// Not tried: trying would touch a production mount's transport.
    Skipped { why: String },
    /// The mount failed (the server does not offer that version, or refused the options).
    MountFailed { error: String },
    /// Mounted, but forcing or tracing failed.
    Failed { error: String },
}

#[derive(Clone, Debug, Serialize)]
pub struct SetResult {
    #[serde(flatten)]
    pub set: OptionSet,
    #[serde(flatten)]
    pub outcome: Outcome,
}

impl SetResult {
    /// Every forced reconnect took a new source port.
    pub fn all_new(&self) -> bool {
        matches!(self.outcome, Outcome::Tested { reused: 0, reconnects, .. } if reconnects > 0)
    }
}

pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// The tested sets, best first: every reconnect from a new port before any
/// reuse, then fewer reuses; among equals the faster reconnect, then the
/// order given. Untested sets are not ranked.
pub fn ranked(results: &[SetResult]) -> Vec<&SetResult> {
    let mut v: Vec<(usize, &SetResult)> = results.iter().enumerate().filter(|(_, r)| matches!(r.outcome, Outcome::Tested { .. })).collect();
    let key = |r: &SetResult| match r.outcome {
        Outcome::Tested { reused, reconnects, median_reconnect_ms, .. } => (reused as f64 / reconnects.max(1) as f64, median_reconnect_ms),
        _ => (f64::MAX, f64::MAX),
    };
    v.sort_by(|(i, a), (j, b)| {
        let (ka, kb) = (key(a), key(b));
        ka.0.total_cmp(&kb.0).then(ka.1.total_cmp(&kb.1)).then(i.cmp(j))
    });
    v.into_iter().map(|(_, r)| r).collect()
}

/// What the server side must allow for a set, which this host cannot see.
pub fn server_constraints(r: &SetResult) -> Vec<&'static str> {
    let Outcome::Tested { mounted_vers: vers, mounted_noresvport: noresvport, .. } = &r.outcome else { return Vec::new() };
    let mut c = Vec::new();
    if *noresvport {
        c.push("the server must accept unprivileged source ports (`insecure` in a Linux export; most cloud filers do)");
    }
    if vers == "3" || vers == "4.0" {
        c.push("v3 and v4.0 servers key their duplicate reply cache by client port: a retransmitted non-idempotent RPC on a new port can run twice");
    } else {
        c.push("v4.1+ sessions replay from the server's slot table whatever the port, but the server must offer that minor version (this one did)");
    }
    c
}

/// The exit status: 0 when some set gave a new port on every reconnect,
/// 3 when sets were tested and none did, 1 when none could be tested.
pub fn exit_status(results: &[SetResult]) -> u8 {
    if results.iter().any(SetResult::all_new) {
        0
    } else if results.iter().any(|r| matches!(r.outcome, Outcome::Tested { .. })) {
        3
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_with_port_brackets_and_errors() {
        assert_eq!(parse_spec("10.0.0.5:/export").unwrap(), ServerSpec { host: "10.0.0.5".into(), port: 2049, export: "/export".into() });
        assert_eq!(parse_spec("nfs.example:2050:/a/b").unwrap(), ServerSpec { host: "nfs.example".into(), port: 2050, export: "/a/b".into() });
        assert_eq!(parse_spec("[fd00::5]:/").unwrap(), ServerSpec { host: "fd00::5".into(), port: 2049, export: "/".into() });
        assert_eq!(parse_spec("[fd00::5]:20049:/x").unwrap().port, 20049);
        assert_eq!(parse_spec("[fd00::5]:/").unwrap().source(), "[fd00::5]:/");
        assert_eq!(parse_spec("10.0.0.5:/export").unwrap().source(), "10.0.0.5:/export");
        for bad in ["10.0.0.5", "10.0.0.5:export", ":/x", "fd00::5:/x", "[fd00::5", "[zz::1]:/", "h:0:/x", "h:70000:/x", "h:x:/e"] {
            let e = parse_spec(bad).unwrap_err();
            assert!(e.contains("want HOST[:PORT]:/EXPORT"), "{bad}: {e}");
        }
    }

    #[test]
    fn option_sets_know_their_version_and_port_option() {
        let s = parse_set("vers=4,minorversion=1,noresvport").unwrap();
        assert_eq!((s.vers.as_deref(), s.noresvport), (Some("4.1"), true));
        let s = parse_set("nfsvers=3, noresvport,resvport").unwrap();
        assert_eq!((s.vers.as_deref(), s.noresvport, s.options.as_str()), (Some("3"), false, "nfsvers=3,noresvport,resvport"));
        assert_eq!(parse_set("hard,timeo=600").unwrap().vers, None);
        assert!(parse_set("vers=5").unwrap_err().contains("want 3, 4"));
        assert!(parse_set(" , ").is_err());
        assert!(parse_set("vers=3,a\tb").unwrap_err().contains("control"));
    }

    #[test]
    fn like_keeps_the_mounts_tuning_not_its_addresses_or_version() {
        let kept = like_options(
            "rw,relatime,vers=3,rsize=1048576,wsize=1048576,namlen=255,hard,nolock,proto=tcp,timeo=600,retrans=2,sec=sys,mountaddr=10.0.0.5,mountvers=3,mountport=20048,mountproto=tcp,local_lock=all,addr=10.0.0.5",
        );
        assert_eq!(
            kept,
            ["rsize=1048576", "wsize=1048576", "namlen=255", "hard", "nolock", "proto=tcp", "timeo=600", "retrans=2", "sec=sys", "mountproto=tcp", "local_lock=all"]
        );
        let sets = default_sets(&kept[..2]);
        assert_eq!(sets.len(), 8);
        assert_eq!(sets[1].options, "rsize=1048576,wsize=1048576,vers=3,noresvport");
        assert_eq!((sets[7].vers.as_deref(), sets[7].noresvport), (Some("4.2"), true));
        // A set given on the command line wins over --like's version.
        let g = given_sets(&["vers=4.1".into()], &["vers=3".into(), "hard".into()]).unwrap();
        assert_eq!(g[0].vers.as_deref(), Some("4.1"));
    }

    #[test]
    fn sharing_follows_the_kernels_client_key_not_noresvport() {
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        let mut v3 = MountView::for_test("/prod", "10.0.0.5", "3", false, 790);
        v3.netns = Some(7);
        let mut v40 = MountView::for_test("/prod4", "10.0.0.5", "4", false, 0);
        v40.netns = Some(7);
        let prod = [v3, v40];
        assert_eq!(shared_with("3", ip, 2049, Some(7), &prod).map(|m| m.mountpoint.as_str()), Some("/prod"));
        // `vers=4` on an older kernel's mountinfo is 4.0.
        assert_eq!(shared_with("4.0", ip, 2049, Some(7), &prod).map(|m| m.mountpoint.as_str()), Some("/prod4"));
        assert!(shared_with("4.1", ip, 2049, Some(7), &prod).is_none());
        assert!(shared_with("3", ip, 2050, Some(7), &prod).is_none(), "another port is another client");
        assert!(shared_with("3", ip, 2049, Some(8), &prod).is_none(), "another netns is another client");
        assert!(shared_with("3", "10.0.0.6".parse().unwrap(), 2049, Some(7), &prod).is_none());
    }

    fn tested(opts: &str, reused: u32, ms: f64) -> SetResult {
        let set = parse_set(opts).unwrap();
        SetResult {
            outcome: Outcome::Tested {
                mounted_vers: set.vers.clone().unwrap_or_default(),
                mounted_noresvport: set.noresvport,
                reserved: !set.noresvport,
                ports: vec![],
                reused,
                reconnects: 2,
                median_reconnect_ms: ms,
                rounds: vec![],
            },
            set,
        }
    }

    #[test]
    fn ranking_puts_new_ports_first_then_speed_and_exit_says_so() {
        let skipped = SetResult { set: parse_set("vers=3").unwrap(), outcome: Outcome::Skipped { why: "x".into() } };
        let r = vec![skipped, tested("vers=3,noresvport", 2, 5.0), tested("vers=4.1", 0, 90.0), tested("vers=4.2", 0, 30.0), tested("vers=4.0", 1, 1.0)];
        let order: Vec<&str> = ranked(&r).iter().map(|r| r.set.options.as_str()).collect();
        assert_eq!(order, ["vers=4.2", "vers=4.1", "vers=4.0", "vers=3,noresvport"]);
        assert_eq!(exit_status(&r), 0);
        assert_eq!(exit_status(&r[..2]), 3);
        assert_eq!(exit_status(&r[..1]), 1);
        assert!(server_constraints(&r[1]).iter().any(|c| c.contains("insecure")));
        assert!(server_constraints(&r[2]).iter().any(|c| c.contains("slot table")));
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0]), 2.5);
    }
}
