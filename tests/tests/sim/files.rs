//! Scenario files of one's own through the whole run: world, oracles, rendering.

use heartbeat_sim::scenario::file::Spec;
use heartbeat_sim::scenario::{Params, Source};
use heartbeat_sim::{oracle, render, world};

/// Runs scenario file `text` with `seed`; the text rendering and whether every check held.
fn run(text: &str, seed: u64) -> (String, bool) {
    let spec = Spec::parse("t.toml", "t", text, Source::File("t.toml".into())).unwrap();
    let scenario = spec.expand(&Params::seed(seed)).unwrap();
    let out = world::run(&scenario).unwrap();
    let verdict = oracle::check(&out);
    (render::text(&out, &verdict), verdict.ok())
}

#[test]
fn the_oracles_judge_each_client_by_its_own_interval_and_latency() {
    // A 4 s client is last heard up to 4 s before the end, a 200 ms one within 200 ms: with one
    // interval for both, `liveness` or `tail` would fail one of them.
    let text = r#"
        duration = "31s"
        [[client]]
        id = "fast"
        interval = "200ms"
        latency = "2ms..40ms"
        [[client]]
        id = "slow"
        interval = "4s"
        latency = "150ms"
        [[action]]
        do = "partition"
        on = "fast"
        at = "10s"
        for = "3s"
        [[expect]]
        on = "slow"
        missed = 0
        [[expect]]
        on = "slow"
        connections = 1
    "#;
    for seed in 1..4 {
        let (text, ok) = run(text, seed);
        assert!(ok, "{text}");
        assert!(
            text.contains("  fast   interval 200 ms, latency 2ms..40ms\n"),
            "{text}"
        );
        assert!(
            text.contains("  slow   interval 4000 ms, latency 150ms\n"),
            "{text}"
        );
        assert!(text.contains("fault   partition fast <-> server"), "{text}");
    }
}

#[test]
fn legacy_clients_are_followed_by_their_host() {
    // The server keys a legacy client by its peer address, a new client per connection: the
    // oracles follow it by host. A hold, a clean crash and restart, a silent crash, and v1
    // witnesses.
    let text = r#"
        duration = "30s"
        [clients]
        count = 3
        protocol = "legacy"
        [[client]]
        [[client]]
        [[client]]
        protocol = "v1"
        [[action]]
        do = "hold"
        on = "each"
        at = "5s"
        for = "4s"
        [[action]]
        do = "crash"
        on = "c1"
        at = "12s"
        for = "2s"
        [[action]]
        do = "crash"
        silent = true
        on = "c2"
        at = "15s"
        [[expect]]
        check = "burst-per-hold"
        [[expect]]
        on = "c2"
        down-within = "8s"
        [[expect]]
        on = "c2"
        state = "down"
        [[expect]]
        on = "c1"
        connections = 2
    "#;
    for seed in 1..4 {
        let (text, ok) = run(text, seed);
        assert!(ok, "{text}");
        assert!(
            text.contains("  c1     interval 1000 ms, latency 1ms..50ms, legacy\n"),
            "{text}"
        );
        assert!(text.contains(" client=legacy@192.168.0.2:"), "{text}");
        assert!(text.contains("\nc1      sent "), "{text}");
    }
    // A legacy client reads no acks, so it cannot notice a silent partition itself: the
    // server's idle timeout closes the stuck stream (the cut outlasts it: a shorter one would
    // heal by retransmission), the client's retransmission after the repair is reset by the
    // server's kernel, and the client reconnects from a new port,
    // a new client to the server, counted from its first heartbeat there (nothing missed: the
    // slots before were the old key's). The outage shows as the old key going down.
    let cut = "[[client]]\nprotocol = \"legacy\"\n[[action]]\ndo = \"partition\"\non = \"c1\"\n\
               at = \"25s\"\nfor = \"12s\"";
    let (text, ok) = run(cut, 1);
    assert!(ok, "{text}");
    assert!(text.contains("reason=no data for 10s"), "{text}");
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("legacy@192.168.0.2:"))
        .collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert!(rows[0].contains(" down "), "{text}");
    assert!(rows[1].contains(" up "), "{text}");
    assert!(!text.contains(" missed client=legacy@"), "{text}");
}

#[test]
fn the_documented_example_runs_and_holds() {
    let doc = include_str!("../../../SCENARIOS.md");
    let example = doc
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("SCENARIOS.md has a toml example");
    for seed in 1..3 {
        let (text, ok) = run(example, seed);
        assert!(ok, "{text}");
        assert!(
            text.contains("  ok    db down within 6s of a crash\n"),
            "{text}"
        );
        assert!(text.contains("  ok    web connections >= 2\n"), "{text}");
    }
}

#[test]
fn a_client_that_does_not_reconnect_gives_up_and_is_not_expected_back() {
    let text = r#"
        duration = "30s"
        [clients]
        count = 2
        [[client]]
        reconnect = false
        # Longer than the ack timeout (5 s): a shorter cut heals by retransmission.
        [[action]]
        do = "partition"
        on = "each"
        at = "10s"
        for = "8s"
        [[expect]]
        on = "c1"
        state = "down"
        [[expect]]
        on = "c2"
        state = "up"
    "#;
    for seed in 1..3 {
        let (text, ok) = run(text, seed);
        assert!(ok, "{text}");
        assert!(
            text.contains("c1      exited: Failed(Lost(AckTimeout(5s)))"),
            "{text}"
        );
        assert!(text.contains(", no reconnect"), "{text}");
    }
}
