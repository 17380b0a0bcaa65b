//! The seed's Known Limitations as scenarios, plus restarts and impostors.

use std::time::Duration;

use heartbeat_core::config::ServerConfig;
use heartbeat_core::{AuthConfig, AuthKeys, ClientId, ClientKey, Secret};
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
    pair.add_client("legacy", client("unused", 100).legacy(true).unwrap());
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
/// reported as duplicates. Without authentication the identity rule refuses the new session
/// while the server still holds the old process's half-open connection: the restarted client
/// retries with backoff and gets in once the idle timeout (10 s after the last heartbeat at
/// t=3 s) has dropped it.
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
    pair.run_until(secs(18));
    insta::assert_snapshot!(pair.render());
    pair.line("server disconnected conn#2 client=- reason=client id a is in use by conn#1 with another session");
    pair.line("server disconnected conn#1 client=a reason=no data for 10s");
    let st = pair.server().client(&key("a")).unwrap();
    // 1-3 from the first process (4 died with it). The second's heartbeats 1-8 went out on
    // refused connections, which changed nothing: they count as missed once it got in (with
    // 9); 9-14 are received, 15 is in flight.
    assert_eq!(
        (st.received(), st.missed(), st.duplicates(), st.restarts()),
        (9, 8, 0, 1)
    );
    assert!(pair.client(1).is_connected());
}

/// With authentication the restarted process proves its id and replaces the half-open
/// connection at once: no wait for the idle timeout.
#[test]
fn an_authenticated_restart_replaces_the_half_open_connection() {
    let mut keys = AuthKeys::new();
    keys.insert(ClientId::new("a").unwrap(), Secret::new(SECRET).unwrap());
    let config = ServerConfig::default().auth(Some(AuthConfig::new(keys, [1; 32])));
    let mut pair = Pair::new(config, Duration::from_millis(5));
    pair.transcript.record_heartbeats = false;
    let keyed = |session| {
        reconnecting("a", 1000)
            .session(session)
            .auth_key(Some(Secret::new(SECRET).unwrap()))
            .unwrap()
    };
    let a = pair.add_client("a", keyed(0x5eed));
    // The authenticated handshake takes one more round trip before the first heartbeat; the
    // crash is while the fourth is in flight.
    pair.run_until(Duration::from_millis(3007));
    pair.crash_silently(a);
    pair.run_until(secs(4));
    pair.add_client("a'", keyed(0xbeef));
    pair.run_until(Duration::from_millis(8007));
    insta::assert_snapshot!(pair.render());
    let st = pair.server().client(&key("a")).unwrap();
    // 1-3 from the first process (4 died with it), 1-4 from the second (5 is in flight).
    assert_eq!((st.received(), st.duplicates(), st.restarts()), (7, 0, 1));
}

const SECRET: &str = "a-secret-for-a-0123456789";
