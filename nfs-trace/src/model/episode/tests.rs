//! Episodes on synthetic sequences: events through the TCP tracker, as watch
//! feeds them, then canary results; each verdict with and without its evidence.
use nfs_trace_common::tcp_state::{CLOSE, SYN_SENT};

use super::*;
use crate::{
    flow::{Netns, Task},
    host::nfsmounts::MountView,
    kernel::decode::{Event, Kind},
    model::canary::CanaryOutcome,
    model::tcp::Tracker,
};

const MS: u64 = 1_000_000;
const XPRT: u64 = 0xff11;

fn flow(sport: u16) -> Flow {
    Flow { laddr: "10.0.0.2".parse().unwrap(), sport, raddr: "10.0.0.1".parse().unwrap(), dport: 2049, netns: Netns::UNKNOWN }
}

fn ev(kind: Kind, ts_ms: u64, sk: u64, sport: u16, start_ms: u64, xprt: u64) -> Event {
    let task = Task { pid: 42, comm: "kworker".into() };
    Event { start_ns: start_ms * MS, xprt, ..Event::for_test(kind, ts_ms * MS, sk, task, flow(sport)) }
}

fn connected(ts: u64, sk: u64, sport: u16, start: u64, xprt: u64) -> Event {
    ev(Kind::ConnectDone, ts, sk, sport, start, xprt)
}

fn closed(ts: u64, sk: u64, sport: u16, err: i32, xprt: u64) -> Event {
    let mut e = ev(Kind::Closed, ts, sk, sport, ts.saturating_sub(50), xprt);
    e.newstate = CLOSE;
    e.oldstate = CLOSE;
    e.first_exit = CLOSE;
    e.err = err;
    e.established_ns = ts.saturating_sub(50) * MS;
    e
}

fn retransmit(ts: u64, sk: u64, sport: u16, start: u64, n: u32, xprt: u64) -> Event {
    let mut e = ev(Kind::SynRetransmit, ts, sk, sport, start, xprt);
    e.syn_retrans = n;
    e.newstate = SYN_SENT;
    e
}

/// Both trackers, fed as watch feeds them.
struct Run {
    tcp: Tracker,
    ep: EpisodeTracker,
    out: Vec<EpisodeObservation>,
}

impl Run {
    fn new(canary_off: Option<&'static str>) -> Run {
        Run { tcp: Tracker::new(), ep: EpisodeTracker::new(canary_off), out: Vec::new() }
    }
    fn feed(&mut self, evs: &[Event]) -> &mut Run {
        for e in evs {
            for o in self.tcp.on_event(e) {
                self.out.extend(self.ep.on_tcp(&o));
            }
        }
        self
    }
    fn canary(&mut self, at_ms: u64, outcome: CanaryOutcome) -> &mut Run {
        let c = CanaryResult { dest: flow(0).dest(), sport: 40123, start_ns: at_ms * MS, end_ns: (at_ms + 1) * MS, outcome };
        self.out.extend(self.ep.on_canary(&c));
        self
    }
    fn last(&self) -> &Episode {
        self.out.last().expect("an episode observation").episode()
    }
}

/// A reconnect from reused port 999 stuck 2 s: connected, aborted (`ss -K`
/// from user space: no symptom itself), then SYN retransmits.
fn stalled_reuse() -> Vec<Event> {
    vec![
        connected(100, 1, 999, 99, 0),
        closed(900, 1, 999, libc::ECONNABORTED, 0),
        retransmit(2_000, 2, 999, 1_000, 1, 0),
        retransmit(3_000, 2, 999, 1_000, 2, 0),
    ]
}

#[test]
fn a_stall_from_a_new_port_opens_an_episode_and_wants_a_canary() {
    let mut r = Run::new(None);
    r.feed(&[connected(100, 1, 999, 99, 0), retransmit(2_000, 2, 1000, 1_000, 1, 0)]);
    let [EpisodeObservation::Opened(e)] = r.out.as_slice() else { panic!("{:?}", r.out) };
    assert_eq!((e.opened_by, e.flow.sport, e.start_ns), (Symptom::Stall, 1000, 1_000 * MS));
    let rc = e.reconnect.as_ref().unwrap();
    assert!(rc.stalled && !rc.reused, "{rc:?}");
    assert!(rc.canary.is_none());
    assert_eq!(e.verdict, VerdictName::Unknown);
    assert!(e.evidence.ends_with("missing: canary not yet back"), "{}", e.evidence);
    // A fresh canary connecting does not make a new port's stall a reuse.
    r.canary(2_500, CanaryOutcome::Connected { rtt_ns: 200_000 });
    assert_eq!(r.ep.open_episodes()[0].verdict, VerdictName::Unknown);
    assert!(r.ep.open_episodes()[0].reconnect.as_ref().unwrap().canary.is_some(), "the canary joined the episode");
}

#[test]
fn reused_flow_dropped_needs_the_canary_through() {
    let mut r = Run::new(None);
    r.feed(&stalled_reuse());
    assert_eq!(r.last().verdict, VerdictName::Unknown, "without the canary: not proven");
    assert!(r.last().evidence.contains("missing: canary not yet back"), "{}", r.last().evidence);
    r.canary(3_100, CanaryOutcome::Connected { rtt_ns: 150_000 });
    let [.., EpisodeObservation::Verdict(e)] = r.out.as_slice() else { panic!("{:?}", r.out) };
    assert_eq!(e.verdict, VerdictName::ReusedFlowDropped);
    for fact in ["reused port 999", "SYN_SENT 2.1 s" /* to the canary's end */, "2 SYN retransmits", "canary from new port 40123 connected in 0.1 ms", "closed (local"] {
        assert!(e.evidence.contains(fact), "{fact:?} not in {}", e.evidence);
    }
}

#[test]
fn without_a_canary_the_verdict_names_it_missing() {
    let mut r = Run::new(Some("--passive"));
    r.feed(&stalled_reuse());
    r.feed(&[connected(4_500, 2, 999, 1_000, 0)]);
    let [.., EpisodeObservation::Ended(e)] = r.out.as_slice() else { panic!("{:?}", r.out) };
    assert_eq!(e.verdict, VerdictName::Unknown);
    assert!(e.evidence.ends_with("missing: no canary: --passive"), "{}", e.evidence);
    assert!(advice(e, &[], &[]).contains("without --passive"));
}

#[test]
fn a_sibling_connecting_proves_the_reused_flow_dropped_too() {
    let mut r = Run::new(None);
    r.feed(&stalled_reuse());
    // Another process's flow to the same server gets through meanwhile.
    let mut other = connected(3_500, 9, 1777, 3_499, 0);
    other.task.pid = 43;
    r.feed(&[other, retransmit(4_000, 2, 999, 1_000, 3, 0)]);
    let e = &r.ep.open_episodes()[0];
    assert_eq!(e.verdict, VerdictName::ReusedFlowDropped, "{}", e.evidence);
    assert!(e.evidence.contains("1 connect(s) to the same server from other ports succeeded"), "{}", e.evidence);
}

#[test]
fn server_or_path_down_needs_the_canary_failing() {
    let mut r = Run::new(None);
    r.feed(&stalled_reuse());
    assert_ne!(r.last().verdict, VerdictName::ServerOrPathDown, "not without a canary");
    r.canary(3_100, CanaryOutcome::TimedOut);
    let e = r.last();
    assert_eq!(e.verdict, VerdictName::ServerOrPathDown);
    assert!(e.evidence.contains("canary from new port 40123 got no answer in 0.0 s"), "{}", e.evidence);
    assert!(!advice(e, &[], &[]).contains("noresvport"));
    let mut r = Run::new(None);
    r.feed(&stalled_reuse()).canary(3_100, CanaryOutcome::Refused);
    assert_eq!(r.last().verdict, VerdictName::ServerOrPathDown);
}

/// The outage lab (6.12, v3): canaries failed while the router dropped
/// everything, the path came back, and the reused flow still waited for its
/// next SYN slot when the next canary connected. The episode was an outage,
/// not a middlebox holding the flow.
#[test]
fn a_canary_that_connects_after_one_failed_does_not_make_it_a_reuse() {
    let mut r = Run::new(None);
    r.feed(&stalled_reuse()).canary(3_100, CanaryOutcome::TimedOut);
    r.canary(13_100, CanaryOutcome::Connected { rtt_ns: 200_000 });
    let e = r.last();
    assert_eq!(e.verdict, VerdictName::ServerOrPathDown, "{}", e.evidence);
    assert!(e.evidence.contains("got no answer"), "{}", e.evidence);
}

/// Phase (a) has no hook yet: both verdicts that need it are reachable only
/// by its evidence, which is absent today (so `unknown`).
#[test]
fn blackhole_and_not_answering_need_the_unanswered_phase() {
    let mut r = Run::new(Some("--passive"));
    r.feed(&[connected(100, 1, 999, 99, XPRT), closed(900, 1, 999, libc::ETIMEDOUT, XPRT), connected(1_000, 2, 1001, 999, XPRT)]);
    let [EpisodeObservation::Opened(_), EpisodeObservation::Ended(e)] = r.out.as_slice() else { panic!("{:?}", r.out) };
    assert_eq!(e.verdict, VerdictName::Unknown);
    assert!(e.unanswered.is_none());
    assert!(e.evidence.contains(UNANSWERED_NOT_OBSERVED), "{}", e.evidence);
    let mut with = e.clone();
    with.unanswered = Some(Unanswered { start_ns: 0, data_retransmits: 6, rpc_timeouts: 0 });
    let (v, ev) = judge(&with);
    assert_eq!(v, VerdictName::PathBlackhole);
    assert!(ev.contains("6 data retransmits without ACK progress"), "{ev}");
    with.unanswered = Some(Unanswered { start_ns: 0, data_retransmits: 0, rpc_timeouts: 2 });
    assert_eq!(judge(&with).0, VerdictName::ServerNotAnswering);
}

#[test]
fn phases_carry_their_times() {
    let mut r = Run::new(None);
    let mut ok = connected(12_500, 3, 999, 9_000, XPRT);
    ok.syn_retrans = 2;
    let mut lost = connected(8_000, 2, 999, 1_000, XPRT);
    lost.newstate = CLOSE;
    lost.err = libc::ETIMEDOUT;
    lost.syn_retrans = 3;
    r.feed(&[
        connected(100, 1, 999, 99, XPRT),
        closed(900, 1, 999, libc::ECONNRESET, XPRT),
        retransmit(2_000, 2, 999, 1_000, 1, XPRT),
        lost,
        retransmit(10_000, 3, 999, 9_000, 1, XPRT),
        ok,
    ]);
    let [EpisodeObservation::Opened(o), .., EpisodeObservation::Ended(e)] = r.out.as_slice() else { panic!("{:?}", r.out) };
    assert_eq!((o.opened_by, o.start_ns), (Symptom::Close, 900 * MS));
    assert_eq!(e.closed, Some(Closed { ts_ns: 900 * MS, how: "reset", errno: Some(libc::ECONNRESET), sport: 999 }));
    let rc = e.reconnect.as_ref().unwrap();
    assert_eq!((rc.start_ns, rc.stall_start_ns, rc.ports.as_slice()), (1_000 * MS, Some(1_000 * MS), &[999u16][..]));
    assert_eq!((rc.syn_retransmits, rc.failed_attempts, rc.reused), (5, 1, true));
    assert_eq!(e.recovered, Some(Recovered { ts_ns: 12_500 * MS, sport: 999 }));
    assert_eq!(e.duration_ns(), 11_600 * MS);
    assert_eq!(r.ep.ended.len(), 1);
    assert!(r.ep.open_episodes().is_empty());
}

#[test]
fn a_transport_drop_opens_and_its_destroy_ends_it() {
    let mut ep = EpisodeTracker::new(None);
    let drop = XprtObservation::Drop { xprt: XPRT, ts_ns: 5 * MS, flow: flow(871), reason: DropReason::Error(libc::ETIMEDOUT) };
    let got = ep.on_xprt(&drop);
    let [EpisodeObservation::Opened(e)] = got.as_slice() else { panic!("{got:?}") };
    assert_eq!((e.opened_by, e.closed.as_ref().unwrap().how), (Symptom::Drop, "user_timeout"));
    // An idle disconnect is no symptom.
    let idle = XprtObservation::Drop { xprt: 9, ts_ns: 5 * MS, flow: flow(872), reason: DropReason::Idle };
    assert!(ep.on_xprt(&idle).is_empty());
    let got = ep.on_xprt(&XprtObservation::Destroyed { xprt: XPRT, ts_ns: 9 * MS });
    let [EpisodeObservation::Ended(e)] = got.as_slice() else { panic!("{got:?}") };
    assert!(e.destroyed && e.recovered.is_none());
    assert!(e.evidence.contains("destroyed"), "{}", e.evidence);
}

#[test]
fn orderly_and_user_space_closes_open_nothing() {
    let mut r = Run::new(None);
    r.feed(&[connected(100, 1, 999, 99, 0), closed(900, 1, 999, libc::ECONNRESET, 0)]);
    r.feed(&[connected(1_000, 2, 998, 999, XPRT), closed(1_900, 2, 998, 0, XPRT)]);
    assert!(r.out.is_empty(), "{:?}", r.out);
}

#[test]
fn ticks_report_an_episode_going_on() {
    let mut r = Run::new(None);
    r.feed(&stalled_reuse());
    assert!(r.ep.tick(10_000 * MS, 30_000 * MS).is_empty());
    let got = r.ep.tick(40_000 * MS, 30_000 * MS);
    let [EpisodeObservation::Ongoing(e)] = got.as_slice() else { panic!("{got:?}") };
    assert_eq!(e.duration_ns(), 39_000 * MS);
}

fn view(mnt: &str, vers: &str, noresv: bool, remembered: u16) -> MountView {
    MountView::for_test(mnt, "10.0.0.1", vers, noresv, remembered)
}

#[test]
fn advice_never_says_noresvport_where_it_did_not_help() {
    let mut r = Run::new(None);
    r.feed(&stalled_reuse()).canary(3_100, CanaryOutcome::Connected { rtt_ns: 1 });
    let e = r.last();
    assert_eq!(e.verdict, VerdictName::ReusedFlowDropped);
    let pinned = view("/mnt/v3", "3", true, 790);
    let a = advice(e, &[&pinned], &[]);
    assert!(a.contains("noresvport does not stop this kernel rebinding it"), "{a}");
    assert!(a.contains("`nfs-trace prove --mount /mnt/v3`"), "{a}");
    assert!(a.contains("fix the middlebox"), "v3 keeps its port: {a}");
    // An option set this host honoured is named instead of prove.
    let a = advice(e, &[&pinned], &["/mnt/v41 (vers=4.1)".to_string(), "/mnt/v3 (vers=3,noresvport)".to_string()]);
    assert!(a.contains("on this host /mnt/v41 (vers=4.1) got a new port"), "{a}");
    assert!(!a.contains("/mnt/v3 (vers=3,noresvport) got"), "its own mount is no evidence: {a}");
    let v42 = view("/mnt/v42", "4.2", false, 0);
    assert!(!advice(e, &[&v42], &[]).contains("middlebox"), "4.2 does not keep its port");
}

/// The kernel's "server … OK" comes once RPCs are answered again, after the
/// reconnect: it joins the episode that just recovered (phase d).
#[test]
fn the_kernels_ok_line_joins_the_episode_that_recovered() {
    let mut r = Run::new(None);
    r.feed(&stalled_reuse());
    let server: IpAddr = "10.0.0.1".parse().unwrap();
    r.ep.on_kernel_line(server, "nfs: server 10.0.0.1 not responding, still trying");
    r.feed(&[connected(4_500, 2, 999, 1_000, 0)]);
    r.ep.on_kernel_line(server, "nfs: server 10.0.0.1 OK");
    r.ep.on_kernel_line("10.9.9.9".parse().unwrap(), "nfs: server 10.9.9.9 OK");
    assert_eq!(r.ep.ended[0].kernel_said, ["nfs: server 10.0.0.1 not responding, still trying", "nfs: server 10.0.0.1 OK"]);
}
