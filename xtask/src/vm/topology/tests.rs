use serde_json::{Value, json};

use super::judge;

const V3: &str = "/mnt/nconnect-v3";
const V41: &str = "/mnt/nconnect-v4.1";

fn mount(mnt: &str, vers: &str, place: &str, netns: u64, client: &str) -> Value {
    json!({"mountpoint": mnt, "vers": vers, "server": "10.99.0.1", "client": client, "place": place,
           "netns": netns, "transports": 1})
}

fn transport(mnt: &str, port: u64) -> Value {
    json!({"mount": mnt, "port": port, "by_mountstats": mnt, "by_sysfs": mnt, "sysfs_dir": true})
}

fn reconnect(n: u64, mnt: &str, before: u64, after: u64, t0: u64, netns: u64, client: &str) -> Value {
    json!({"n": n, "mount": mnt, "netns": netns, "server": "10.99.0.1", "client": client, "before": before,
           "after": after, "seen": [{}], "t_start_ns": t0, "t_end_ns": t0 + 100,
           "by_mountstats": mnt, "by_sysfs": mnt, "sysfs_dir": true})
}

/// A v3 transport on 871 reconnected from 871, a v4.1 one 40001 -> 40007.
fn truth() -> Value {
    json!({"scenario": "nconnect", "tracer": {"ran": true}, "error": null, "guest_s": 12.5,
           "mounts": [mount(V3, "3", "client", 7, "10.99.0.2"), mount(V41, "4.1", "client", 7, "10.99.0.2")],
           "transports": [transport(V3, 871), transport(V41, 40001)],
           "reconnects": [reconnect(1, V3, 871, 871, 1000, 7, "10.99.0.2"), reconnect(2, V41, 40001, 40007, 2000, 7, "10.99.0.2")]})
}

fn rec(kind: &str, sport: u64, t: u64, extra: Value) -> Value {
    let mut v = json!({"type": kind, "laddr": "10.99.0.2", "raddr": "10.99.0.1", "dport": 2049, "sport": sport,
                       "mono_ns": t, "netns": 7});
    for (k, x) in extra.as_object().expect("object") {
        v[k] = x.clone();
    }
    v
}

fn lines() -> Vec<Value> {
    vec![
        json!({"type": "attached"}),
        rec("xprt_connect", 871, 10, json!({"mounts": []})),
        rec("xprt_connect", 40001, 20, json!({"mounts": [V41]})),
        rec("connect", 871, 1050, json!({"outcome": "established", "reused": true})),
        rec("reuse", 871, 1050, json!({"chance": false})),
        rec("xprt_reconnect", 871, 1051, json!({"prev_sport": 871, "reused": true, "mounts": [V3]})),
        rec("connect", 40007, 2050, json!({"outcome": "established", "reused": false})),
        rec("xprt_reconnect", 40007, 2051, json!({"prev_sport": 40001, "reused": false, "mounts": [V41]})),
    ]
}

fn problems(v: &Value) -> String {
    v["problems"].to_string()
}

#[test]
fn a_tracer_that_matches_ss_agrees() {
    let v = judge(&truth(), Some(&lines()), true);
    assert_eq!(v["ok"], json!(true), "{v}");
    assert_eq!(v["mounts"][0]["tracer_reuses"], json!(1));
    assert_eq!(v["mounts"][1]["tracer_reuses"], json!(0));
    assert_eq!(v["netns_agree"], Value::Null, "one namespace: netns is not judged here");
}

#[test]
fn a_missed_reuse_fails_tcp_and_the_count() {
    let mut l = lines();
    l.remove(4);
    let v = judge(&truth(), Some(&l), true);
    assert_eq!(v["tcp_agree"], json!(false));
    assert!(problems(&v).contains("no reuse"), "{v}");
    assert!(problems(&v).contains("counted 0 reuse(s)"), "{v}");
}

#[test]
fn a_chance_repeat_is_not_a_reuse() {
    let mut l = lines();
    l[4]["chance"] = json!(true);
    let v = judge(&truth(), Some(&l), true);
    assert!(problems(&v).contains("only a chance repeat"), "{v}");
}

#[test]
fn a_reuse_on_a_new_port_fails() {
    let mut l = lines();
    l.insert(7, rec("reuse", 40007, 2050, json!({"chance": false})));
    let v = judge(&truth(), Some(&l), true);
    assert!(problems(&v).contains("reported a reuse, ss saw a new port"), "{v}");
}

#[test]
fn a_reconnect_credited_to_both_or_the_other_mount_fails() {
    let mut l = lines();
    l[7]["mounts"] = json!([V3, V41]);
    let v = judge(&truth(), Some(&l), true);
    assert_eq!(v["sunrpc_agree"], json!(false));
    assert!(problems(&v).contains("want exactly"), "{v}");
    let mut l = lines();
    l[5]["mounts"] = json!([{"mountpoint": V41}]);
    assert_eq!(judge(&truth(), Some(&l), true)["ok"], json!(false));
}

#[test]
fn a_first_connect_may_wait_for_its_mount_but_never_guess() {
    let mut l = lines();
    l[2]["mounts"] = json!([V3]);
    let v = judge(&truth(), Some(&l), true);
    assert!(problems(&v).contains("first connect of port 40001"), "{v}");
    let mut l = lines();
    l.remove(1);
    assert!(problems(&judge(&truth(), Some(&l), true)).contains("no xprt_connect"));
}

#[test]
fn a_later_attribution_must_name_the_own_mount() {
    let mut l = lines();
    l[1]["xprt"] = json!("0xff1");
    l.push(json!({"type": "attributed", "xprt": "0xff1", "mounts": [V3]}));
    assert_eq!(judge(&truth(), Some(&l), true)["ok"], json!(true));
    l.push(json!({"type": "attributed", "xprt": "0xff1", "mounts": [V41]}));
    assert!(problems(&judge(&truth(), Some(&l), true)).contains("later attributed to"));
}

#[test]
fn a_failed_attempt_from_a_siblings_port_chains_to_the_new_one() {
    // 6.12, nconnect v4.1: the transport drew 910, held by a sibling; the
    // connect failed, then 40007 connected. ss saw 40001 -> 40007 only.
    let mut l = lines();
    for r in l.iter_mut().filter(|r| r["type"] == "xprt_reconnect" && r["sport"] == 40007) {
        r["xprt"] = json!("0xff2");
        r["prev_sport"] = json!(910);
    }
    l.insert(6, rec("xprt_reconnect", 910, 2040, json!({"xprt": "0xff2", "prev_sport": 40001, "reused": false, "mounts": [V41]})));
    l.insert(6, rec("connect", 910, 2040, json!({"outcome": "closed", "reused": false})));
    let v = judge(&truth(), Some(&l), true);
    assert_eq!(v["ok"], json!(true), "{v}");
    assert_eq!(v["reconnects"][1]["tracer_attempts"], json!([910, 40007]));
    // A chain that does not start at ss's old port fails.
    l[7]["prev_sport"] = json!(1);
    assert!(problems(&judge(&truth(), Some(&l), true)).contains("do not lead from"));
    // So does an intermediate attempt that established (ss would have seen it).
    l[7]["prev_sport"] = json!(40001);
    l[6]["outcome"] = json!("established");
    assert!(problems(&judge(&truth(), Some(&l), true)).contains("an attempt from port 910 established"));
}

#[test]
fn a_missing_connect_or_sunrpc_record_fails() {
    let mut l = lines();
    l.remove(6);
    let v = judge(&truth(), Some(&l), true);
    assert!(problems(&v).contains("no established connect from port 40007"), "{v}");
    let mut l = lines();
    l[7]["type"] = json!("xprt_connect");
    assert!(problems(&judge(&truth(), Some(&l), true)).contains("are xprt_reconnect records"));
}

#[test]
fn ground_truth_sources_must_agree() {
    let mut t = truth();
    t["transports"][1]["by_sysfs"] = json!(V3);
    let v = judge(&t, Some(&lines()), true);
    assert!(problems(&v).contains("truth: /sys/fs/nfs names"), "{v}");
    // Before 6.4 there is no link to compare with.
    t["transports"][1]["by_sysfs"] = Value::Null;
    t["transports"][1]["sysfs_dir"] = json!(false);
    assert_eq!(judge(&t, Some(&lines()), true)["ok"], json!(true));
}

#[test]
fn a_guest_error_or_no_reconnects_fails() {
    let mut t = truth();
    t["error"] = json!("mount failed");
    assert_eq!(judge(&t, None, false)["ok"], json!(false));
    let mut t = truth();
    t["reconnects"] = json!([]);
    t["transports"] = json!([]);
    assert!(problems(&judge(&t, Some(&lines()), true)).contains("no reconnect"));
}

/// The netns scenario: client (netns 7, 10.99.0.2) and container (netns 9, 10.99.1.2), both v3.
fn netns_truth() -> Value {
    let (c, k) = ("/mnt/netns-client", "/mnt/netns-container");
    json!({"scenario": "netns", "tracer": {"ran": true}, "error": null, "container_ns_link": "net:[9]",
           "mounts": [mount(c, "3", "client", 7, "10.99.0.2"), mount(k, "3", "container", 9, "10.99.1.2")],
           "transports": [transport(c, 871), transport(k, 871)],
           "reconnects": [reconnect(1, c, 871, 871, 1000, 7, "10.99.0.2"), reconnect(2, k, 871, 871, 2000, 9, "10.99.1.2")],
           "check": {"exit": 2, "output": {"mounts": [{"mountpoint": c, "netns": 7, "flagged": true},
                                                        {"mountpoint": k, "netns": 9, "flagged": true}]}}})
}

fn netns_lines() -> Vec<Value> {
    let (c, k) = ("/mnt/netns-client", "/mnt/netns-container");
    let cont = |mut v: Value| {
        v["laddr"] = json!("10.99.1.2");
        v["netns"] = json!(9);
        v
    };
    vec![
        json!({"type": "attached"}),
        rec("xprt_connect", 871, 10, json!({"mounts": [c]})),
        cont(rec("xprt_connect", 871, 20, json!({"mounts": [k]}))),
        rec("connect", 871, 1050, json!({"outcome": "established", "reused": true})),
        rec("reuse", 871, 1050, json!({"chance": false})),
        rec("xprt_reconnect", 871, 1051, json!({"prev_sport": 871, "reused": true, "mounts": [c]})),
        cont(rec("connect", 871, 2050, json!({"outcome": "established", "reused": true}))),
        cont(rec("reuse", 871, 2050, json!({"chance": false}))),
        cont(rec("xprt_reconnect", 871, 2051, json!({"prev_sport": 871, "reused": true, "mounts": [k]}))),
    ]
}

#[test]
fn two_namespaces_tracked_apart_agree() {
    let v = judge(&netns_truth(), Some(&netns_lines()), true);
    assert_eq!(v["ok"], json!(true), "{v}");
    assert_eq!(v["netns_agree"], json!(true));
}

#[test]
fn records_without_their_netns_fail() {
    let l: Vec<Value> = netns_lines()
        .into_iter()
        .map(|mut r| {
            r.as_object_mut().expect("object").remove("netns");
            r
        })
        .collect();
    let v = judge(&netns_truth(), Some(&l), true);
    assert_eq!(v["netns_agree"], json!(false));
    assert!(problems(&v).contains("has netns null, ss ran in netns 9"), "{v}");
    // The container's record claiming the client's namespace fails too.
    let mut l = netns_lines();
    l[6]["netns"] = json!(7);
    assert_eq!(judge(&netns_truth(), Some(&l), true)["netns_agree"], json!(false));
}

#[test]
fn check_must_list_the_containers_mount_with_its_netns() {
    let mut t = netns_truth();
    t["check"]["output"]["mounts"].as_array_mut().unwrap().remove(1);
    let v = judge(&t, Some(&netns_lines()), true);
    assert!(problems(&v).contains("check lists no /mnt/netns-container"), "{v}");
    let mut t = netns_truth();
    t["check"]["output"]["mounts"][0]["netns"] = Value::Null;
    assert!(problems(&judge(&t, Some(&netns_lines()), true)).contains("check gives /mnt/netns-client netns null"));
    let mut t = netns_truth();
    t["container_ns_link"] = json!("net:[7]");
    assert!(problems(&judge(&t, Some(&netns_lines()), true)).contains("truth: readlink"));
    // The guest failed to pin both transports to one port: the hard case
    // was not tested, which is a failure, not a pass.
    let mut t = netns_truth();
    t["transports"][1]["port"] = json!(872);
    assert!(problems(&judge(&t, Some(&netns_lines()), true)).contains("not the one shared port"));
}

#[test]
fn a_reconnect_through_an_attempt_the_kernel_reset_to_0_0_0_0_chains() {
    // 6.12, nconnect v4.1 (seen 2026-12-03): 40001 dropped, the next
    // attempt drew 40005, which a sibling held: connect() failed with
    // EADDRNOTAVAIL and the kernel reset the socket's address, so that
    // xprt record says laddr 0.0.0.0; 40007 (ss's port) came next.
    let mut l = lines();
    l[7] = rec("xprt_reconnect", 40007, 2051, json!({"xprt": "0xff4", "prev_sport": 40005, "reused": false, "mounts": [V41]}));
    l.insert(6, rec("xprt_reconnect", 40005, 2030, json!({"xprt": "0xff4", "prev_sport": 40001, "reused": false, "laddr": "0.0.0.0", "connect_error": -99, "mounts": [V41]})));
    l.insert(6, rec("connect", 40005, 2029, json!({"outcome": "closed", "reused": false})));
    let v = judge(&truth(), Some(&l), true);
    assert!(!problems(&v).contains("do not lead from"), "{v}");
    // Another client's attempt is still not this flow's.
    l[7]["laddr"] = json!("10.99.0.3");
    assert!(problems(&judge(&truth(), Some(&l), true)).contains("do not lead from"));
}

#[test]
fn a_first_connect_that_failed_chains_to_the_port_ss_saw() {
    // 7.2, nconnect v4.1: the transport's first attempt drew 979, which a
    // sibling held (established); that attempt closed and 40001 (ss's
    // port) connected as its second connect.
    let mut l = lines();
    l[2] = rec("xprt_reconnect", 40001, 21, json!({"xprt": "0xff3", "prev_sport": 979, "reused": false, "mounts": []}));
    l.insert(2, rec("xprt_connect", 979, 19, json!({"xprt": "0xff3", "mounts": []})));
    l.insert(2, rec("connect", 979, 18, json!({"outcome": "closed"})));
    l.insert(2, rec("connect", 979, 15, json!({"outcome": "established"})));
    let v = judge(&truth(), Some(&l), true);
    assert!(!problems(&v).contains("no xprt_connect"), "{v}");
    // The attempt from 979 established: then 40001 was no first connect.
    l[3]["outcome"] = json!("established");
    assert!(problems(&judge(&truth(), Some(&l), true)).contains("no xprt_connect"));
}

/// A v4.1 transport drawing a port its flow had two reconnects before
/// (seen on 6.1 v4.2): that flow is back, so the tracer's reuse record is
/// no error; the same record on a port the flow never had still is.
#[test]
fn a_port_the_flow_had_before_may_come_back_as_a_reuse() {
    let mut t = truth();
    t["reconnects"].as_array_mut().unwrap().push(reconnect(3, V41, 40007, 40001, 3000, 7, "10.99.0.2"));
    let r = &t["reconnects"][2];
    assert_eq!(super::reconnects::earlier_ports(&t, r), vec![871, 40001, 871, 40007]);
    let back = vec![rec("connect", 40001, 3050, json!({"outcome": "established", "reused": true})), rec("reuse", 40001, 3050, json!({"chance": false}))];
    let v = super::reconnects::judge_one(&back, r, &super::reconnects::earlier_ports(&t, r), false);
    assert!(v.tcp.is_empty(), "{:?}", v.tcp);
    let fresh = reconnect(3, V41, 40007, 40011, 3000, 7, "10.99.0.2");
    let new = vec![rec("connect", 40011, 3050, json!({"outcome": "established", "reused": true})), rec("reuse", 40011, 3050, json!({"chance": false}))];
    let v = super::reconnects::judge_one(&new, &fresh, &super::reconnects::earlier_ports(&t, &fresh), false);
    assert!(v.tcp.iter().any(|p| p.contains("reported a reuse")), "{:?}", v.tcp);
}
