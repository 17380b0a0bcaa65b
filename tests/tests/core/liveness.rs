//! Connections that must stay up, and connections that must be noticed dead.

use heartbeat_core::config::ServerConfig;
use heartbeat_core::{ClientId, ClientKey};
use heartbeat_tests::{Pair, PipeMode};

use crate::{client, reconnecting, secs};

fn key(s: &str) -> ClientKey {
    ClientKey::Id(ClientId::new(s).unwrap())
}

/// Client "a" (index `a` of `pair`): every heartbeat it numbered was either received or counted
/// missed, and the missed ones form exactly one gap.
fn assert_every_slot_counted_in_one_gap(pair: &Pair, a: usize) {
    let st = pair.server().client(&key("a")).unwrap();
    let last = pair.client(a).last_sent().unwrap();
    assert_eq!(
        st.received() + st.missed(),
        last.0,
        "every slot accounted for"
    );
    assert_eq!(st.missed_ranges().count(), 1, "one gap");
}

/// quinn's `keep_alive`: 20× the idle timeout of steady traffic, and nothing closes.
#[test]
fn keep_alive() {
    let mut pair = Pair::new(ServerConfig::default(), std::time::Duration::from_millis(5));
    pair.add_client("a", client("a", 1000));
    pair.run_until(std::time::Duration::from_millis(200_500));
    assert!(
        !pair
            .transcript
            .lines
            .iter()
            .any(|l| l.contains("close") || l.contains("silent")),
        "{}",
        pair.render()
    );
    let st = pair.server().client(&key("a")).unwrap();
    assert_eq!((st.received(), st.missed(), st.duplicates()), (201, 0, 0));
    assert_eq!(pair.client(0).acked(), 201);
}

/// quinn's `idle_timeout`: one direction dropped; both sides notice within 2× their timeout.
#[test]
fn idle_timeout_when_acks_are_dropped() {
    let mut pair = Pair::new(ServerConfig::default(), std::time::Duration::from_millis(5));
    pair.add_client("a", client("a", 1000));
    pair.run_until(secs(3));
    pair.set_link(0, None, Some(PipeMode::Dropping));
    pair.run_until(secs(30));
    // The connect took one latency, so BEATs go at t=0.005 + k s. The last ack arrived at
    // t=2.015 s (the one for the BEAT of t=3.005 s is dropped); the client's ack timeout is
    // max(5 × 1 s, 2 s) = 5 s after it.
    assert_eq!(pair.line("a close"), "t+7015.000ms a close (no ack for 5s)");
    assert!(pair.client(0).is_done());
    // The server saw the BEATs of t=0.005..7.005 s, then the client's FIN.
    assert_eq!(
        pair.line("server conn#1 close"),
        "t+7020.000ms server conn#1 close (closed by peer)"
    );
    let st = pair.server().client(&key("a")).unwrap();
    assert_eq!((st.received(), st.missed()), (8, 0));
}

#[test]
fn idle_timeout_when_the_path_is_cut_both_ways() {
    let mut pair = Pair::new(ServerConfig::default(), std::time::Duration::from_millis(5));
    pair.add_client("a", client("a", 1000));
    // Cut while the BEAT of t=3.005 s is in flight (BEATs go at t=0.005 + k s: the connect
    // took one latency).
    pair.run_until(std::time::Duration::from_millis(3007));
    pair.set_link(0, Some(PipeMode::Dropping), Some(PipeMode::Dropping));
    pair.run_until(secs(60));
    // The last ack arrived at t=2.015 s; the ack timeout is 5 s after it.
    assert_eq!(pair.line("a close"), "t+7015.000ms a close (no ack for 5s)");
    // Last bytes at t=2.010 s (the BEAT of t=3.005 s was in flight and is lost); the server's
    // idle timeout is max(10 × 1 s, 5 s) = 10 s after them.
    assert_eq!(
        pair.line("server conn#1 close"),
        "t+12010.000ms server conn#1 close (no data for 10s)"
    );
    let st = pair.server().client(&key("a")).unwrap();
    assert_eq!(
        (st.received(), st.missed()),
        (3, 0),
        "the BEAT in flight is lost"
    );
}

#[test]
fn reconnecting_client_survives_a_partition_and_the_gap_is_counted_once() {
    let mut pair = Pair::new(ServerConfig::default(), std::time::Duration::from_millis(5));
    pair.transcript.record_heartbeats = false;
    let a = pair.add_client("a", reconnecting("a", 1000));
    pair.run_until(secs(5));
    pair.set_link(a, Some(PipeMode::Dropping), Some(PipeMode::Dropping));
    pair.run_until(secs(20));
    pair.repair(a);
    pair.run_until(std::time::Duration::from_millis(40_500));
    insta::assert_snapshot!(pair.render());
    assert_every_slot_counted_in_one_gap(&pair, a);
    let st = pair.server().client(&key("a")).unwrap();
    assert_eq!(st.restarts(), 0);
}

/// An application that pauses its heartbeats (it knows it is unhealthy) looks to the server like
/// a hung process: late, then down, with the connection still open. On resume it is up again,
/// and the pause is one missed range, with the numbering on the clock grid.
#[test]
fn a_paused_client_goes_down_and_its_pause_is_missed_once() {
    use heartbeat_core::detector::{DetectorConfig, DetectorKind};
    use heartbeat_core::liveness::Liveness;
    use std::time::Duration;

    let config = ServerConfig::default().detector(DetectorConfig::new(DetectorKind::Fixed));
    let mut pair = Pair::new(config, Duration::from_millis(5));
    pair.transcript.record_heartbeats = false;
    let a = pair.add_client("a", client("a", 100));
    pair.run_until(Duration::from_millis(1050));
    pair.pause(a);
    pair.run_until(Duration::from_millis(2050));
    pair.resume(a);
    pair.run_until(Duration::from_millis(2500));
    insta::assert_snapshot!(pair.render());
    assert_every_slot_counted_in_one_gap(&pair, a);
    let st = pair.server().client(&key("a")).unwrap();
    assert_eq!(st.missed(), pair.client(a).skipped());
    assert_eq!(st.state(), Liveness::Up);
    assert!(pair.client(a).is_connected());
}
