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
            text.contains("  fast   interval 200 ms, latency 2-40 ms\n"),
            "{text}"
        );
        assert!(
            text.contains("  slow   interval 4000 ms, latency 150 ms\n"),
            "{text}"
        );
        assert!(text.contains("fault   partition fast <-> server"), "{text}");
    }
}
