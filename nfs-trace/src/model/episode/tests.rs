//! Episodes on synthetic sequences: events through the TCP tracker, as watch
//! feeds them, then canary results; each verdict with and without its evidence.
use nfs_trace_common::tcp_state::{CLOSE, ESTABLISHED, SYN_SENT};

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

/// A data retransmit record of established socket `sk`: `n` retransmits
/// since `since` without ACK progress (what the kernel program reports once
/// the run is over a second old).
fn unanswered(ts: u64, sk: u64, sport: u16, since: u64, n: u32, xprt: u64) -> Event {
    let mut e = ev(Kind::DataRetransmit, ts, sk, sport, 50, xprt);
    (e.oldstate, e.newstate) = (ESTABLISHED, ESTABLISHED);
    e.syn_ns = since * MS;
    e.syn_retrans = n;
    e
}

/// A flow the path stops carrying: its data retransmitted from 1.2 s on,
/// reported at 2.6 s, 5.8 s; the user timeout closes it at 7 s.
fn blackholed(sport: u16) -> Vec<Event> {
    vec![
        connected(100, 1, sport, 99, XPRT),
        unanswered(2_600, 1, sport, 1_200, 3, XPRT),
        unanswered(5_800, 1, sport, 1_200, 4, XPRT),
        closed(7_000, 1, sport, libc::ETIMEDOUT, XPRT),
    ]
}

/// v4.1 in the blackhole lab: the transport reconnects from a new port and
/// connects at once: the path dropped the established flow.
#[test]
fn an_unanswered_flow_that_reconnects_from_a_new_port_is_a_path_blackhole() {
    let mut r = Run::new(None);
    let mut evs = blackholed(999);
    evs.push(connected(7_050, 2, 1001, 7_040, XPRT));
    r.feed(&evs);
    let [EpisodeObservation::Opened(o), .., EpisodeObservation::Ended(e)] = r.out.as_slice() else { panic!("{:?}", r.out) };
    assert_eq!((o.opened_by, o.start_ns), (Symptom::Unanswered, 1_200 * MS), "opened at the run's first retransmit");
    assert_eq!(e.verdict, VerdictName::PathBlackhole, "{}", e.evidence);
    let u = e.unanswered.as_ref().unwrap();
    assert_eq!((u.start_ns, u.data_retransmits, u.last_ns), (1_200 * MS, 4, 5_800 * MS));
    assert_eq!(e.closed.as_ref().map(|c| c.how), Some("user_timeout"));
    assert_eq!(e.recovered, Some(Recovered { ts_ns: 7_050 * MS, sport: 1001 }));
    for fact in ["port 999 went unanswered (4 data retransmits without ACK progress over 4.6 s)", "closed (user timeout", "reconnected from port 1001"] {
        assert!(e.evidence.contains(fact), "{fact:?} not in {}", e.evidence);
    }
    assert!(!e.evidence.contains("RPC timeouts"), "not traced: not claimed as 0 either");
}

/// v3 in the blackhole lab: the same, but the reconnect rebinds port 999,
/// whose SYNs the middlebox still drops, while a canary gets through.
#[test]
fn an_unanswered_flow_whose_reused_reconnect_stalls_is_a_reused_flow_dropped() {
    let mut r = Run::new(None);
    let mut evs = blackholed(999);
    evs.extend([retransmit(8_100, 2, 999, 7_100, 1, XPRT), retransmit(9_100, 2, 999, 7_100, 2, XPRT)]);
    r.feed(&evs);
    r.canary(9_200, CanaryOutcome::Connected { rtt_ns: 300_000 });
    assert_eq!(r.last().verdict, VerdictName::ReusedFlowDropped, "{}", r.last().evidence);
    assert!(r.last().evidence.contains("went unanswered (4 data retransmits"), "the black-holed phase is part of the story: {}", r.last().evidence);
    r.feed(&[connected(30_000, 2, 999, 7_100, XPRT)]);
    let [.., EpisodeObservation::Ended(e)] = r.out.as_slice() else { panic!("{:?}", r.out) };
    assert_eq!(e.verdict, VerdictName::ReusedFlowDropped);
    assert_eq!((e.start_ns, e.recovered.as_ref().map(|x| x.ts_ns)), (1_200 * MS, Some(30_000 * MS)));
}

/// Retransmits that stop without a close: the ACKs came back. The episode
/// ends once the silence is longer than the backoff allows, recovered at
/// the last retransmit, and no sooner.
#[test]
fn an_unanswered_flow_answered_again_ends_after_its_backoff() {
    let mut r = Run::new(None);
    r.feed(&[connected(100, 1, 999, 99, XPRT), unanswered(2_600, 1, 999, 1_200, 3, XPRT), unanswered(5_800, 1, 999, 1_200, 4, XPRT)]);
    // The gap was 3.2 s: 9.6 s of silence is the limit.
    assert!(r.ep.tick(15_000 * MS, 30_000 * MS).is_empty(), "within three gaps: still unanswered");
    let got = r.ep.tick(15_500 * MS, 30_000 * MS);
    let [EpisodeObservation::Ended(e)] = got.as_slice() else { panic!("{got:?}") };
    assert_eq!(e.verdict, VerdictName::PathBlackhole);
    assert_eq!(e.recovered, Some(Recovered { ts_ns: 5_800 * MS, sport: 999 }));
    assert!(e.evidence.contains("ACKs came back on the same flow"), "{}", e.evidence);
    assert!(r.ep.open_episodes().is_empty());
}

/// Ticks every second from `from` to `to` (ms, both inclusive); the
/// episodes they end.
fn ticks(r: &mut Run, from: u64, to: u64) -> Vec<Episode> {
    (from / 1_000..=to / 1_000)
        .flat_map(|s| r.ep.tick(s * 1_000 * MS, 30_000 * MS))
        .filter_map(|o| match o {
            EpisodeObservation::Ended(e) => Some(e),
            _ => None,
        })
        .collect()
}

/// A v3 mount's flow black-holed (the blackhole-v3 lab, or a user's 180 s
/// hang): the write leaves at 1 s, RTO 200 ms doubling, so the retransmits
/// go at 1.2, 1.6, 2.4, 4.0, 7.2, 13.6, 26.4, 52.0, 103.2 s (reported from
/// the third on, once the run is a second old), then 77.8 s of silence
/// until the user timeout (60 s × 3) closes it at 181 s: the kernel clamps
/// the last RTO to what is left of it. That silence is within three gaps
/// (3 × 51.2 s, clamped to 130 s): the episode must stay open to the close
/// and not end as "ACKs came back". Then the reconnect from the same port
/// stalls, a canary connects, the rule goes and it connects at 216 s.
#[test]
fn a_flow_black_holed_until_its_user_timeout_stays_one_episode() {
    let mut r = Run::new(None);
    r.feed(&[connected(100, 1, 999, 99, XPRT)]);
    let sends = [1_200u64, 1_600, 2_400, 4_000, 7_200, 13_600, 26_400, 52_000, 103_200];
    for (n, &t) in sends.iter().enumerate().skip(2) {
        assert!(ticks(&mut r, t - 999, t - 1).is_empty(), "ended before the retransmit at {t} ms");
        r.feed(&[unanswered(t, 1, 999, 1_200, n as u32 + 1, XPRT)]);
    }
    assert!(ticks(&mut r, 104_000, 181_000).is_empty(), "ended in the silence before the user timeout");
    assert_eq!(r.ep.open_episodes().len(), 1);
    r.feed(&[closed(181_000, 1, 999, libc::ETIMEDOUT, XPRT)]);
    r.feed(&[retransmit(182_050, 2, 999, 181_050, 1, XPRT), retransmit(183_050, 2, 999, 181_050, 2, XPRT)]);
    r.canary(183_100, CanaryOutcome::Connected { rtt_ns: 400_000 });
    assert!(ticks(&mut r, 184_000, 215_000).is_empty(), "a stalled reconnect ends only when it connects");
    r.feed(&[connected(216_050, 2, 999, 181_050, XPRT)]);
    let [.., EpisodeObservation::Ended(e)] = r.out.as_slice() else { panic!("{:?}", r.out) };
    assert_eq!(r.ep.ended.len(), 1, "one episode from the first retransmit to the recovery");
    assert_eq!((e.opened_by, e.start_ns), (Symptom::Unanswered, 1_200 * MS));
    assert_eq!(e.verdict, VerdictName::ReusedFlowDropped, "{}", e.evidence);
    let u = e.unanswered.as_ref().unwrap();
    assert_eq!((u.data_retransmits, u.last_ns), (9, 103_200 * MS));
    assert_eq!(e.closed, Some(Closed { ts_ns: 181_000 * MS, how: "user_timeout", errno: Some(libc::ETIMEDOUT), sport: 999 }));
    let rc = e.reconnect.as_ref().unwrap();
    assert_eq!((rc.ports.as_slice(), rc.stalled, rc.reused), (&[999u16][..], true, true));
    assert!(rc.canary.as_ref().is_some_and(CanaryResult::connected));
    assert_eq!(e.recovered, Some(Recovered { ts_ns: 216_050 * MS, sport: 999 }));
    for fact in ["port 999 went unanswered (9 data retransmits without ACK progress over 102.0 s)", "closed (user timeout", "reused port 999 sat in SYN_SENT 35.0 s"] {
        assert!(e.evidence.contains(fact), "{fact:?} not in {}", e.evidence);
    }
}

/// With no user timeout (tcp_retries2) the RTO backoff caps at 120 s: a
/// flow still unanswered retransmits every 120 s, within the 130 s cap of
/// the silence allowed, so its episode stays open as long as that goes on;
/// 130 s without one more ends it (the ACKs came back).
#[test]
fn retransmits_at_the_rto_cap_keep_the_episode_open() {
    let mut r = Run::new(None);
    r.feed(&[connected(100, 1, 999, 99, XPRT)]);
    let sends = [2_400u64, 4_000, 7_200, 13_600, 26_400, 52_000, 103_200, 205_600, 325_600, 445_600];
    for (n, &t) in sends.iter().enumerate() {
        assert!(ticks(&mut r, t - 999, t - 1).is_empty(), "ended before the retransmit at {t} ms");
        r.feed(&[unanswered(t, 1, 999, 1_200, n as u32 + 3, XPRT)]);
    }
    assert!(ticks(&mut r, 446_000, 575_600).is_empty(), "130 s after the last: not yet");
    let ended = ticks(&mut r, 576_000, 577_000);
    let [e] = ended.as_slice() else { panic!("{ended:?}") };
    assert_eq!(e.recovered, Some(Recovered { ts_ns: 445_600 * MS, sport: 999 }));
}

/// A socket no transport owns, closed by its owner while unanswered: no
/// reconnect will come, so its episode ends there, unrecovered.
#[test]
fn a_plain_sockets_close_ends_its_unanswered_episode() {
    let mut r = Run::new(None);
    r.feed(&[connected(100, 1, 999, 99, 0), unanswered(2_600, 1, 999, 1_200, 3, 0), closed(3_000, 1, 999, 0, 0)]);
    let [.., EpisodeObservation::Ended(e)] = r.out.as_slice() else { panic!("{:?}", r.out) };
    assert!(e.destroyed && e.recovered.is_none(), "{e:?}");
    assert_eq!(e.closed.as_ref().map(|c| c.how), Some("local"));
    assert!(e.evidence.contains("its socket was closed before it reconnected"), "{}", e.evidence);
    assert!(r.ep.open_episodes().is_empty());
}

/// Without phase (a) a close alone proves nothing, and says what it lacks.
#[test]
fn a_close_without_the_unanswered_phase_is_unknown() {
    let mut r = Run::new(Some("--passive"));
    r.feed(&[connected(100, 1, 999, 99, XPRT), closed(900, 1, 999, libc::ETIMEDOUT, XPRT), connected(1_000, 2, 1001, 999, XPRT)]);
    let [EpisodeObservation::Opened(_), EpisodeObservation::Ended(e)] = r.out.as_slice() else { panic!("{:?}", r.out) };
    assert_eq!(e.verdict, VerdictName::Unknown);
    assert!(e.unanswered.is_none());
    assert!(e.evidence.contains(UNANSWERED_NOT_OBSERVED), "{}", e.evidence);
    // RPC timeouts before a connection that went away: TCP did not stay
    // healthy, so they prove no silent server.
    let mut with = e.clone();
    with.unanswered = Some(Unanswered { data_retransmits: 0, rpc_timeouts: 2, ..Default::default() });
    let (v, why) = judge(&with);
    assert_eq!(v, VerdictName::Unknown, "{why}");
    assert!(why.contains("TCP did not stay healthy"), "{why}");
}

fn rpc_timeout(r: &mut Run, at_ms: u64, sport: u16) {
    rpc_timeout_of(r, at_ms, sport, None);
}

/// An RPC timeout at `at_ms` of an RPC made at `made_ms` (None: not known).
fn rpc_timeout_of(r: &mut Run, at_ms: u64, sport: u16, made_ms: Option<u64>) {
    let o = XprtObservation::RpcTimeout { xprt: XPRT, ts_ns: at_ms * MS, flow: flow(sport), timeouts: 0, task_start_ns: made_ms.map(|m| m * MS) };
    r.out.extend(r.ep.on_xprt(&o));
}

/// A server whose nfsd stops answering (a frozen export): the connection
/// stays up and ACKed, RPCs reach major timeouts every 6 s, then the
/// kernel's "server … OK" marks the answer.
#[test]
fn rpc_timeouts_on_a_healthy_connection_are_a_server_not_answering() {
    let mut r = Run::new(None);
    r.feed(&[connected(100, 1, 999, 99, XPRT)]);
    rpc_timeout(&mut r, 6_000, 999);
    let [EpisodeObservation::Opened(o)] = r.out.as_slice() else { panic!("{:?}", r.out) };
    assert_eq!((o.opened_by, o.start_ns, o.verdict), (Symptom::RpcTimeout, 6_000 * MS, VerdictName::ServerNotAnswering), "{}", o.evidence);
    rpc_timeout(&mut r, 12_000, 999);
    rpc_timeout(&mut r, 18_000, 999);
    // Nothing changes the verdict, so no record until the end.
    assert_eq!(r.out.len(), 1, "{:?}", r.out);
    // Between timeouts the episode stays open: three gaps are the limit.
    assert!(r.ep.tick(30_000 * MS, 60_000 * MS).is_empty());
    let server: IpAddr = "10.0.0.1".parse().unwrap();
    let got = r.ep.on_kernel_line(server, "nfs: server 10.0.0.1 OK", true, 21_000 * MS);
    let [EpisodeObservation::Ended(e)] = got.as_slice() else { panic!("{got:?}") };
    assert_eq!(e.recovered, Some(Recovered { ts_ns: 21_000 * MS, sport: 999 }));
    let u = e.unanswered.as_ref().unwrap();
    assert_eq!((u.rpc_timeouts, u.rpc_first_ns, u.rpc_last_ns, u.data_retransmits), (3, 6_000 * MS, 18_000 * MS, 0));
    assert_eq!(e.verdict, VerdictName::ServerNotAnswering);
    assert!(e.evidence.contains("3 RPC major timeout(s) over 12.0 s while the connection from port 999 stayed established"), "{}", e.evidence);
    assert!(e.evidence.contains("the server answered again on the same flow 15.0 s after"), "{}", e.evidence);
    assert_eq!(e.kernel_said, ["nfs: server 10.0.0.1 OK"]);
    assert!(advice(e, &[], &[]).contains("look at the server"), "{}", advice(e, &[], &[]));
}

/// Without the "OK" line, three of the timeouts' own gaps without one end it.
#[test]
fn rpc_timeouts_that_stop_end_the_episode_at_the_last_one() {
    let mut r = Run::new(None);
    r.feed(&[connected(100, 1, 999, 99, XPRT)]);
    for t in [6_000, 12_000, 18_000] {
        rpc_timeout(&mut r, t, 999);
    }
    assert!(r.ep.tick(35_000 * MS, 60_000 * MS).is_empty(), "17 s < 3 gaps of 6 s");
    let got = r.ep.tick(37_000 * MS, 60_000 * MS);
    let [EpisodeObservation::Ended(e)] = got.as_slice() else { panic!("{got:?}") };
    assert_eq!(e.recovered.as_ref().map(|x| x.ts_ns), Some(18_000 * MS));
}

/// Where data retransmits are not traced, TCP healthy is not a fact.
#[test]
fn rpc_timeouts_without_retransmits_traced_prove_nothing() {
    let mut r = Run::new(None);
    r.ep.retransmits_traced = false;
    r.feed(&[connected(100, 1, 999, 99, XPRT)]);
    rpc_timeout(&mut r, 6_000, 999);
    let e = r.last();
    assert_eq!(e.verdict, VerdictName::Unknown);
    assert!(e.evidence.contains("data retransmits are not traced here"), "{}", e.evidence);
}

/// RPC timeouts on a flow whose data also goes unanswered: the path.
#[test]
fn rpc_timeouts_with_unanswered_data_are_a_path_blackhole() {
    let mut r = Run::new(None);
    r.feed(&[connected(100, 1, 999, 99, XPRT), unanswered(2_600, 1, 999, 1_200, 3, XPRT)]);
    rpc_timeout(&mut r, 6_000, 999);
    // The verdict did not change, so no record: the episode as it stands.
    let e = &r.ep.open_episodes()[0];
    assert_eq!((e.opened_by, e.verdict), (Symptom::Unanswered, VerdictName::PathBlackhole), "{}", e.evidence);
    assert!(e.evidence.contains("3 data retransmits without ACK progress over 1.4 s, 1 RPC timeouts"), "{}", e.evidence);
}

/// The kmsg fallback: "not responding" counts on each transport connected
/// to the server, and "OK" ends them.
#[test]
fn not_responding_stands_in_for_the_hook_on_every_connected_transport() {
    let mut r = Run::new(None);
    let got = r.ep.on_not_responding(&[(XPRT, flow(999)), (XPRT + 1, flow(1001))], 5_000 * MS);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got.iter().all(|o| matches!(o, EpisodeObservation::Opened(e) if e.verdict == VerdictName::ServerNotAnswering)), "{got:?}");
    let got = r.ep.on_kernel_line("10.0.0.1".parse().unwrap(), "nfs: server 10.0.0.1 OK", true, 9_000 * MS);
    assert_eq!(got.iter().filter(|o| matches!(o, EpisodeObservation::Ended(_))).count(), 2, "{got:?}");
    assert!(r.ep.open_episodes().is_empty());
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
    assert!(a.contains("`nfs-trace prove --server 10.0.0.1:/ --like /mnt/v3`"), "{a}");
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
    r.ep.on_kernel_line(server, "nfs: server 10.0.0.1 not responding, still trying", false, 4_000 * MS);
    r.feed(&[connected(4_500, 2, 999, 1_000, 0)]);
    assert!(r.ep.on_kernel_line(server, "nfs: server 10.0.0.1 OK", true, 4_600 * MS).is_empty(), "it ended already");
    r.ep.on_kernel_line("10.9.9.9".parse().unwrap(), "nfs: server 10.9.9.9 OK", true, 4_700 * MS);
    assert_eq!(r.ep.ended[0].kernel_said, ["nfs: server 10.0.0.1 not responding, still trying", "nfs: server 10.0.0.1 OK"]);
}

/// A timeout that fires as the transport recovers from a hang opens no
/// new episode (it would be a server-not-answering on 0.1 s of evidence).
#[test]
fn an_rpc_timeout_just_after_recovery_joins_the_ended_episode() {
    let mut r = Run::new(None);
    r.feed(&[connected(100, 1, 999, 99, XPRT), unanswered(2_600, 1, 999, 1_200, 3, XPRT), closed(7_000, 1, 999, libc::ETIMEDOUT, XPRT)]);
    r.feed(&[connected(7_100, 2, 1001, 7_050, XPRT)]);
    assert_eq!(r.ep.ended.len(), 1);
    rpc_timeout(&mut r, 7_200, 1001);
    assert!(r.ep.open_episodes().is_empty(), "{:?}", r.ep.open_episodes());
    let u = r.ep.ended[0].unanswered.as_ref().unwrap();
    assert_eq!((u.rpc_timeouts, u.rpc_first_ns, u.rpc_last_ns), (1, 7_200 * MS, 7_200 * MS), "dated, not left at 0");
    // Long after, a timeout is a new episode again.
    rpc_timeout(&mut r, 90_000, 1001);
    assert_eq!(r.ep.open_episodes().len(), 1);
}

/// 6.12 server-silent-v3 (CI): the mount's first connect stalled 1 s on a
/// port an earlier flow had held, an episode that ended at once; seconds
/// later the export froze and a write made after that stall timed out. The
/// kernel says when the RPC was made: after the ended episode, so its
/// timeout opens the silent server's own episode. One made during the hang
/// still joins it.
#[test]
fn an_rpc_made_after_an_episode_ended_opens_its_own() {
    let mut r = Run::new(None);
    r.feed(&[connected(100, 1, 999, 99, XPRT), unanswered(2_600, 1, 999, 1_200, 3, XPRT), closed(7_000, 1, 999, libc::ETIMEDOUT, XPRT)]);
    r.feed(&[connected(7_100, 2, 1001, 7_050, XPRT)]);
    assert_eq!(r.ep.ended.len(), 1);
    let end_ms = r.ep.ended[0].end_ns().unwrap() / MS;
    // Made during the hang: part of it.
    rpc_timeout_of(&mut r, end_ms + 100, 1001, Some(2_000));
    assert!(r.ep.open_episodes().is_empty(), "{:?}", r.ep.open_episodes());
    assert_eq!(r.ep.ended[0].unanswered.as_ref().unwrap().rpc_timeouts, 1);
    // Made 2 s after it ended, timing out 6 s later: a new hang.
    rpc_timeout_of(&mut r, end_ms + 8_000, 1001, Some(end_ms + 2_000));
    let open = r.ep.open_episodes();
    assert_eq!(open.len(), 1);
    assert_eq!((open[0].opened_by, open[0].verdict), (Symptom::RpcTimeout, VerdictName::ServerNotAnswering), "{}", open[0].evidence);
    assert_eq!(r.ep.ended[0].unanswered.as_ref().unwrap().rpc_timeouts, 1, "the ended episode took no more");
}
