//! Reuse is a property of a flow: what a middlebox keys its entry on. Real
//! sockets on loopback, the ground truth is each socket's own local port.
use serde_json::Value;

use nfs_trace_tests::host::{Server, Tracer, connect_and_abort};

/// What an `nconnect=2` mount, or a v3 and a v4.1 mount of one server, do:
/// one transport reconnects from its bound port while another connects from
/// new ports in between. Before flows were tracked, the tracker compared a
/// connect only with the previous connect to the server and reported no
/// reuse at all here.
#[test]
fn a_bound_port_reconnecting_between_other_connects_is_reused_each_time() {
    let _srv = Server::start("127.0.4.70:2049");
    let tracer = Tracer::start(&[]);
    let mut bound = Vec::new();
    let mut ephemeral = Vec::new();
    for _ in 0..3 {
        bound.push(connect_and_abort("127.0.4.70:2049", Some("127.0.0.1:47790")));
        ephemeral.push(connect_and_abort("127.0.4.70:2049", None));
    }
    let recs = tracer.stop();
    assert_eq!(bound, vec![47790; 3]);
    assert!(ephemeral.iter().all(|p| *p != 47790));
    let r = recs.to("reuse", "127.0.4.70", 2049);
    let got: Vec<(u64, u64, bool)> = r
        .iter()
        .map(|v| (v["sport"].as_u64().unwrap(), v["streak"].as_u64().unwrap(), v["chance"].as_bool().unwrap()))
        .collect();
    assert_eq!(got, vec![(47790, 1, false), (47790, 2, false)], "{r:?}");
    // Each reuse dates the gap from its own flow's end, not from the
    // ephemeral connect in between.
    assert!(r.iter().all(|v| v["gap_ms"].as_f64().is_some()));
    let connects = recs.to("connect", "127.0.4.70", 2049);
    let flagged: Vec<u64> =
        connects.iter().filter(|c| c["reused"] == true).map(|c| c["sport"].as_u64().unwrap()).collect();
    assert_eq!(flagged, vec![47790, 47790]);
    let row = recs.summary_for("127.0.4.70", 2049).expect("summary row");
    assert_eq!((row["connects"].as_u64(), row["reuses"].as_u64()), (Some(6), Some(2)), "{row}");
    assert_eq!(recs.summary()["evicted_flows"], Value::from(0));
}
