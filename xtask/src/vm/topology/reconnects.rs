//! Per transport: each reconnect `ss` saw against the tracer's TCP and
//! SunRPC records, the mounts' first connects, and reuses per mount.
use serde_json::{Value, json};

fn mount_of(m: &Value) -> &str {
    m.as_str().unwrap_or("?")
}

/// The ground truth itself: mountstats named the transport's mount for
/// every socket, and sysfs (where the kernel keeps the mount's link) the same.
pub fn truth_consistent(truth: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let all = truth["transports"].as_array().into_iter().flatten().chain(truth["reconnects"].as_array().into_iter().flatten());
    for t in all {
        let port = if t["after"].is_null() { &t["port"] } else { &t["after"] };
        if t["by_mountstats"] != t["mount"] {
            out.push(format!("truth: mountstats names {} for port {port}, the scenario {}", t["by_mountstats"], t["mount"]));
        }
        if t["sysfs_dir"] == json!(true) && t["by_sysfs"] != t["mount"] {
            out.push(format!("truth: /sys/fs/nfs names {} for port {port}, mountstats {}", t["by_sysfs"], t["mount"]));
        }
    }
    out
}

/// A record of the flow from `client` to `server`:2049 (`laddr` where the
/// record has one: xprt records may not, and that of an attempt that
/// failed in connect() says 0.0.0.0 or `::`, the address the kernel reset
/// the socket to: seen on 6.12, an nconnect v4.1 transport drawing a port
/// a sibling held, EADDRNOTAVAIL).
fn of_flow(l: &Value, server: &Value, client: &Value) -> bool {
    let unspecified = l["laddr"].as_str().and_then(|a| a.parse::<std::net::IpAddr>().ok()).is_some_and(|a| a.is_unspecified());
    l["raddr"] == *server && l["dport"] == 2049 && (l.get("laddr").is_none() || l["laddr"] == *client || unspecified)
}

fn in_window(l: &Value, t0: u64, t1: u64) -> bool {
    l["mono_ns"].as_u64().is_some_and(|t| t >= t0 && t <= t1)
}

/// `netns` as an integer (records may give it as a number or a string).
fn netns_of(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_str()?.parse().ok())
}

fn is_xprt(l: &Value) -> bool {
    l["type"] == "xprt_connect" || l["type"] == "xprt_reconnect"
}

/// A `mounts` field (strings, or objects with `mountpoint`) as names.
fn mount_names(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m.as_str().or_else(|| m["mountpoint"].as_str()).map(str::to_string))
        .collect()
}

pub struct Verdict {
    pub tcp: Vec<String>,
    pub sunrpc: Vec<String>,
    pub netns: Vec<String>,
    pub record: Value,
}

/// The source ports the flow of reconnect `r` (its client address to its
/// server) had before it, by ss: every transport's first port and the
/// earlier reconnects' new ones.
pub fn earlier_ports(truth: &Value, r: &Value) -> Vec<u64> {
    let mounts = truth["mounts"].as_array().cloned().unwrap_or_default();
    let same_flow = |mnt: &Value| mounts.iter().any(|m| m["mountpoint"] == *mnt && m["client"] == r["client"] && m["server"] == r["server"]);
    let mut v: Vec<u64> =
        truth["transports"].as_array().into_iter().flatten().filter(|t| same_flow(&t["mount"])).filter_map(|t| t["port"].as_u64()).collect();
    for o in truth["reconnects"].as_array().into_iter().flatten().take_while(|o| o["n"] != r["n"]) {
        if o["client"] == r["client"] && o["server"] == r["server"] {
            v.extend(o["after"].as_u64());
        }
    }
    v
}

/// One reconnect: the tracer's established connect from ss's new port in
/// the reconnect's window, a non-chance `reuse` after it iff ss saw the
/// same port (and `reused` on the connect the same), and exactly one
/// SunRPC record of that flow in the window: an `xprt_reconnect` with ss's
/// ports naming exactly this mount. With `check_netns`, each of those
/// records carries the namespace's `netns`.
pub fn judge_one(lines: &[Value], r: &Value, earlier: &[u64], check_netns: bool) -> Verdict {
    let (server, client, mount) = (&r["server"], &r["client"], mount_of(&r["mount"]));
    let (before, after) = (r["before"].as_u64().unwrap_or(0), r["after"].as_u64().unwrap_or(0));
    let (t0, t1) = (r["t_start_ns"].as_u64().unwrap_or(0), r["t_end_ns"].as_u64().unwrap_or(u64::MAX));
    let same = before == after;
    // A random port drawn again that this flow (client, server) had before
    // this reconnect is that flow again: a reuse record, counted or chance,
    // is right either way (issue 11: reuse is the flow's).
    let repeat = !same && earlier.contains(&after);
    let (mut tcp, mut sunrpc, mut netns) = (Vec::new(), Vec::new(), Vec::new());
    let connects: Vec<(usize, &Value)> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l["type"] == "connect" && l["outcome"] == "established" && of_flow(l, server, client))
        .filter(|(_, l)| in_window(l, t0, t1) && l["sport"].as_u64() == Some(after))
        .collect();
    let new_sockets = r["seen"].as_array().map_or(1, Vec::len);
    let mut reuse = None;
    let mut checked: Vec<&Value> = Vec::new();
    match connects.as_slice() {
        [] => tcp.push(format!("no established connect from port {after} to the server in the tracer's output")),
        many if many.len() > new_sockets => {
            tcp.push(format!("{} established connects from port {after}, ss saw {new_sockets} new socket(s)", many.len()))
        }
        _ => {}
    }
    if let Some(&(ci, c)) = connects.last() {
        checked.push(c);
        // A reuse record follows the connect it is about, before the next connect.
        let rec = lines[ci + 1..]
            .iter()
            .take_while(|l| l["type"] != "connect")
            .find(|l| l["type"] == "reuse" && of_flow(l, server, client) && l["sport"].as_u64() == Some(after));
        let counted = rec.is_some_and(|l| l["chance"] != json!(true));
        reuse = Some(counted);
        if let Some(l) = rec {
            checked.push(l);
        }
        if counted != same && !repeat {
            tcp.push(if same {
                format!("ss saw port {after} again, the tracer reported no reuse{}", if rec.is_some() { " (only a chance repeat)" } else { "" })
            } else {
                format!("the tracer reported a reuse, ss saw a new port ({before} -> {after})")
            });
        }
        if let Some(flag) = c["reused"].as_bool()
            && flag != same
            && !repeat
        {
            tcp.push(format!("connect record says reused={flag}, ss saw {before} -> {after}"));
        }
    }
    let in_win: Vec<&Value> = lines.iter().filter(|l| is_xprt(l) && of_flow(l, server, client) && in_window(l, t0, t1)).collect();
    let ends: Vec<&Value> = in_win.iter().copied().filter(|l| l["sport"].as_u64() == Some(after)).collect();
    let said = |x: &Value| {
        format!("{} {} -> {} reused={} mounts={}", x["type"].as_str().unwrap_or("?"), x["prev_sport"], x["sport"], x["reused"], x["mounts"])
    };
    let mut chain: Vec<&Value> = Vec::new();
    match ends.as_slice() {
        [] => sunrpc.push(format!("SunRPC: no transport record from port {after} in the reconnect's window")),
        [x] => {
            // The transport's attempts in the window, oldest first: one, or
            // more where an attempt failed before ss saw the new socket
            // (seen: an nconnect v4.1 transport drawing the port a sibling
            // held, failing, then connecting from another).
            chain = if x["xprt"].is_null() { vec![x] } else { in_win.iter().copied().filter(|l| l["xprt"] == x["xprt"]).collect() };
            sunrpc.extend(judge_chain(lines, &chain, before, after, same, mount, t0, t1));
        }
        many => sunrpc.push(format!(
            "SunRPC: {} records from port {after} in the window: {}",
            many.len(),
            many.iter().map(|x| said(x)).collect::<Vec<_>>().join("; ")
        )),
    }
    checked.extend(chain.iter().copied());
    if check_netns {
        let want = netns_of(&r["netns"]);
        for l in &checked {
            let got = netns_of(&l["netns"]);
            if got != want || want.is_none() {
                netns.push(format!("{} record of port {after} has netns {}, ss ran in netns {}", l["type"].as_str().unwrap_or("?"), l["netns"], r["netns"]));
            }
        }
    }
    let record = json!({
        "n": r["n"], "mount": r["mount"], "place": r["place"], "netns": r["netns"], "before": before, "after": after,
        "same_port": same, "tracer_reuse": reuse,
        "tracer_mounts": chain.last().map(|x| x["mounts"].clone()),
        "tracer_attempts": chain.iter().map(|x| &x["sport"]).collect::<Vec<_>>(),
        "agree": tcp.is_empty() && sunrpc.is_empty() && netns.is_empty(),
    });
    Verdict { tcp, sunrpc, netns, record }
}

/// One reconnect's SunRPC records (one transport's, in order): they chain
/// from ss's old port to its new one, each an `xprt_reconnect` naming
/// exactly the mount; `reused` on a single one iff ss saw the same port, on
/// the last of several false; an attempt before the last never established.
#[allow(clippy::too_many_arguments)]
fn judge_chain(lines: &[Value], chain: &[&Value], before: u64, after: u64, same: bool, mount: &str, t0: u64, t1: u64) -> Vec<String> {
    let mut out = Vec::new();
    let ports: Vec<String> = chain.iter().map(|x| format!("{} -> {} reused={}", x["prev_sport"], x["sport"], x["reused"])).collect();
    let (Some(first), Some(last)) = (chain.first(), chain.last()) else { return out };
    let linked = chain.windows(2).all(|w| w[1]["prev_sport"] == w[0]["sport"]);
    if first["prev_sport"].as_u64() != Some(before) || last["sport"].as_u64() != Some(after) || !linked {
        out.push(format!("SunRPC: the transport's records {ports:?} do not lead from ss's {before} to {after}"));
    }
    if chain.iter().any(|x| x["type"] != "xprt_reconnect") {
        out.push(format!("SunRPC: not all of {ports:?} are xprt_reconnect records (the tracer knew the transport)"));
    }
    let reused_ok = if chain.len() == 1 { last["reused"] == json!(same) } else { !same && last["reused"] == json!(false) };
    if !reused_ok {
        out.push(format!("SunRPC: reused flags {ports:?}, ss saw {before} -> {after}"));
    }
    for x in &chain[..chain.len() - 1] {
        let established = lines.iter().any(|l| {
            l["type"] == "connect" && l["outcome"] == "established" && l["sport"] == x["sport"] && in_window(l, t0, t1)
        });
        if established {
            out.push(format!("SunRPC: an attempt from port {} established, but ss saw only {after} new", x["sport"]));
        }
    }
    for x in chain {
        let names = mount_names(&x["mounts"]);
        if names != [mount] {
            out.push(format!("SunRPC: {} from port {} credits mounts {names:?}, want exactly [{mount:?}]", x["type"].as_str().unwrap_or("?"), x["sport"]));
        }
    }
    out
}

/// The mounts' first connects (the tracer ran before mounting): each
/// transport's `xprt_connect` from the port ss saw may say its mount is not
/// yet known (no mounts), but must never name another mount; an
/// `attributed` record for that transport (its xprt, else its port), where
/// the tracer prints one later, names exactly its own mount.
pub fn first_connects(truth: &Value, lines: &[Value]) -> Vec<String> {
    let mounts = truth["mounts"].as_array().cloned().unwrap_or_default();
    let mut out = Vec::new();
    for t in truth["transports"].as_array().into_iter().flatten() {
        let Some(m) = mounts.iter().find(|m| m["mountpoint"] == t["mount"]) else { continue };
        let mut firsts: Vec<&Value> = lines
            .iter()
            .filter(|l| l["type"] == "xprt_connect" && of_flow(l, &m["server"], &m["client"]) && l["sport"] == t["port"])
            .collect();
        if firsts.is_empty() {
            // Its first attempt failed (7.2 nconnect: it drew a port a
            // sibling held): the transport's first connect is from that
            // port, never established, and ss's port is its next attempt.
            firsts = lines
                .iter()
                .filter(|l| l["type"] == "xprt_reconnect" && of_flow(l, &m["server"], &m["client"]) && l["sport"] == t["port"])
                .filter(|l| {
                    lines.iter().any(|c| {
                        c["type"] == "xprt_connect"
                            && c["xprt"] == l["xprt"]
                            && c["sport"] == l["prev_sport"]
                            // The TCP record of that attempt: the last connect
                            // from that port up to it (a sibling may hold the
                            // port, established, earlier).
                            && lines
                                .iter()
                                .filter(|tcp| {
                                    tcp["type"] == "connect"
                                        && tcp["sport"] == c["sport"]
                                        && of_flow(tcp, &m["server"], &m["client"])
                                        && tcp["mono_ns"].as_u64() <= c["mono_ns"].as_u64()
                                })
                                .last()
                                .is_some_and(|tcp| tcp["outcome"] != "established")
                    })
                })
                .collect();
        }
        let mount = mount_of(&t["mount"]);
        if firsts.is_empty() {
            out.push(format!("SunRPC: no xprt_connect for {mount}'s first connect from port {}", t["port"]));
        }
        for f in &firsts {
            let names = mount_names(&f["mounts"]);
            if names.iter().any(|n| n != mount) {
                out.push(format!("SunRPC: the first connect of port {} ({mount}) is credited to {names:?}", t["port"]));
            }
        }
        let xprt = firsts.first().map(|f| &f["xprt"]).filter(|x| !x.is_null());
        let later = lines.iter().filter(|l| l["type"] == "attributed").filter(|l| match xprt {
            Some(x) => l["xprt"] == *x,
            None => l["sport"] == t["port"] && of_flow(l, &m["server"], &m["client"]),
        });
        for a in later {
            let names = mount_names(&a["mounts"]);
            if names != [mount] {
                out.push(format!("SunRPC: the transport of port {} ({mount}) is later attributed to {names:?}", t["port"]));
            }
        }
    }
    out
}

/// Reuses per mount: the tracer's non-chance `reuse` records on the mount's
/// flows (every port ss saw for its transports) against ss's same-port
/// reconnects of that mount.
pub fn reuses_per_mount(truth: &Value, lines: &[Value], m: &Value) -> (Value, Vec<String>) {
    let mount = m["mountpoint"].as_str().unwrap_or("?");
    let of_mount = |t: &&Value| t["mount"] == m["mountpoint"];
    let recs: Vec<&Value> = truth["reconnects"].as_array().into_iter().flatten().filter(of_mount).collect();
    let mut ports: Vec<&Value> = truth["transports"].as_array().into_iter().flatten().filter(of_mount).map(|t| &t["port"]).collect();
    ports.extend(recs.iter().map(|r| &r["after"]));
    let ss = recs.iter().filter(|r| r["before"] == r["after"]).count();
    let tracer = lines
        .iter()
        .filter(|l| l["type"] == "reuse" && l["chance"] != json!(true) && of_flow(l, &m["server"], &m["client"]))
        .filter(|l| ports.contains(&&l["sport"]))
        .count();
    // Reconnects that drew a port this flow had earlier (not the one just
    // before): the tracer may count those too.
    let repeats = recs
        .iter()
        .filter(|r| r["before"] != r["after"] && r["after"].as_u64().is_some_and(|a| earlier_ports(truth, r).contains(&a)))
        .count();
    let mut problems = Vec::new();
    if tracer < ss || tracer > ss + repeats {
        problems.push(format!("{mount}: the tracer counted {tracer} reuse(s) of its flows, ss saw {ss} of {} reconnects", recs.len()));
    }
    let v = json!({"mountpoint": mount, "vers": m["vers"], "place": m["place"], "netns": m["netns"],
                   "transports": m["transports"], "reconnects": recs.len(), "ss_same_port": ss, "tracer_reuses": tracer});
    (v, problems)
}
