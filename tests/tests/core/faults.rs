//! The seed's Known Limitations as scenarios, plus restarts and impostors.

use std::time::Duration;

use heartbeat_core::config::ServerConfig;
use heartbeat_core::{ClientId, ClientKey};
use heartbeat_tests::{Pair, PipeMode};

use crate::{client, reconnecting, secs};

fn key(s: &str) -> ClientKey {
    ClientKey::Id(ClientId::new(s).unwrap())
}

/// Limitation 2: a firewall holds the heartbeats, then lets them through at once. Every one is
/// counted, as one burst, none missed.
#[test]
fn firewall_hold_then_release_is_a_burst_not_a_loss() {
    let mut pair = Pair::new(ServerConfig::default(), Duration::from_millis(5));
    pair.add_client("a", client("a", 1000));
    pair.run_until(secs(2));
    pair.set_link(0, Some(PipeMode::Held), None);
    pair.run_until(Duration::from_millis(4500));
    pair.release(0);
    pair.run_until(Duration::from_millis(6500));
    insta::assert_snapshot!(pair.render());
    let st = pair.server().client(&key("a")).unwrap();
    assert_eq!((st.received(), st.missed(), st.bursts()), (7, 0, 1));
}

/// Limitation 2 with the seed's own client (legacy format, no acks).
#[test]
fn legacy_firewall_burst() {
    let mut pair = Pair::new(ServerConfig::default(), Duration::from_millis(5));
    pair.transcript.record_heartbeats = false;
    pair.add_client("legacy", client("unused", 100).legacy(true));
    pair.run_until(Duration::from_millis(250));
    pair.set_link(0, Some(PipeMode::Held), None);
    pair.run_until(Duration::from_millis(800));
    pair.release(0);
    pair.run_until(secs(1));
    insta::assert_snapshot!(pair.render());
    let st = pair.server().clients().next().unwrap();
    // Sent every 100 ms from t=0.005 s (the connect took one latency): ten by t=1 s.
    assert_eq!((st.received(), st.missed(), st.bursts()), (10, 0, 1));
}

/// Limitation 3: several clients at once, each heard live and analysed on its own.
#[test]
fn competing_clients_are_all_heard_live() {
    let mut pair = Pair::new(ServerConfig::default(), Duration::from_millis(5));
    pair.transcript.record_heartbeats = false;
    for name in ["a", "b", "c"] {
        pair.add_client(name, client(name, 500));
    }
    pair.run_until(secs(10));
    let report = pair.server().report();
    insta::assert_snapshot!(report.to_string());
    for c in &report.clients {
        // Sent every 500 ms from t=0.005 s (the connect took one latency): the 21st is due at
        // t=10.005 s.
        assert_eq!((c.received, c.missed, c.bursts), (20, 0, 0), "{c:?}");
    }
}

/// A client process that restarts (new session) keeps its history; its new sequence is not
/// reported as duplicates.
#[test]
fn client_restart_is_a_restart() {
    let mut pair = Pair::new(ServerConfig::default(), Duration::from_millis(5));
    pair.transcript.record_heartbeats = false;
    let a = pair.add_client("a", reconnecting("a", 1000));
    // Heartbeats go at t=0.005 + k s (the connect took one latency): the crash is while the
    // fourth is in flight.
    pair.run_until(Duration::from_millis(3007));
    pair.crash_silently(a);
    pair.run_until(secs(4));
    pair.add_client("a'", reconnecting("a", 1000).session(0xbeef));
    // The new process connects at t=4.005 s; its fifth heartbeat is in flight at the end.
    pair.run_until(Duration::from_millis(8007));
    insta::assert_snapshot!(pair.render());
    let st = pair.server().client(&key("a")).unwrap();
    // 1-3 from the first process (4 died with it), 1-4 from the second (5 is in flight).
    assert_eq!((st.received(), st.duplicates(), st.restarts()), (7, 0, 1));
}
