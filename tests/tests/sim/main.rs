//! The simulator's tests: one reviewed snapshot per scenario (fixed seed, fixed latency), a
//! determinism check (each scenario twice, byte for byte), and the oracles over a few seeds with
//! random latency. The 200-seed sweeps are a separate command (see BENCHMARKS.md), so that
//! `cargo test` stays fast.
//!
//! Snapshots live in `snapshots/` beside this file. After a deliberate change, review them with
//! `cargo insta review`; CI runs with `INSTA_UPDATE=no`, so an unreviewed change fails.

mod embed;
mod expansions;
mod files;
mod insta_format;
mod kernel;

use std::time::Duration;

use heartbeat_sim::scenario::{Latency, Params, Scenario, builtin};
use heartbeat_sim::{oracle, render, world};

/// The snapshot parameters: seed 1 and a fixed 10 ms latency, so the network draws nothing
/// from turmoil's RNG and a snapshot only moves when the code does.
fn snapshot_params() -> Params {
    Params {
        latency: Some(Latency::Fixed(Duration::from_millis(10))),
        ..Params::seed(1)
    }
}

/// Runs a scenario and renders it both ways; panics with the text when an oracle fails.
fn run(name: &str, params: &Params) -> (String, String) {
    let scenario = Scenario::build(name, params).unwrap();
    let out = world::run(&scenario).unwrap();
    let verdict = oracle::check(&out);
    let text = render::text(&out, &verdict);
    assert!(verdict.ok(), "{text}");
    (text, render::json_lines(&out, &verdict))
}

macro_rules! scenario {
    ($module:ident, $name:literal) => {
        mod $module {
            use super::*;

            #[test]
            fn snapshot() {
                let (text, _) = run($name, &snapshot_params());
                insta::with_settings!({ prepend_module_to_snapshot => false }, {
                    insta::assert_snapshot!($name, text);
                });
            }

            #[test]
            fn deterministic_and_correct_for_a_few_seeds() {
                for seed in [2, 3] {
                    let params = Params::seed(seed);
                    let first = run($name, &params);
                    if seed == 2 {
                        let second = run($name, &params);
                        assert!(first.0 == second.0, "text differs between two runs");
                        assert!(first.1 == second.1, "JSON differs between two runs");
                    }
                }
            }
        }
    };
}

scenario!(steady, "steady");
scenario!(jitter, "jitter");
scenario!(partition, "partition");
scenario!(firewall, "firewall");
scenario!(competing_clients, "competing-clients");
scenario!(server_restart, "server-restart");
scenario!(client_crash, "client-crash");
scenario!(swizzle, "swizzle");

#[test]
fn every_scenario_has_tests() {
    let tested = [
        "steady",
        "jitter",
        "partition",
        "firewall",
        "competing-clients",
        "server-restart",
        "client-crash",
        "swizzle",
    ];
    let listed: Vec<&str> = builtin::names().collect();
    assert_eq!(listed, tested);
}

#[test]
fn json_lines_have_the_server_shape_plus_sent_and_a_verdict() {
    let (_, json) = run("competing-clients", &snapshot_params());
    let lines: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let verdict = lines.last().unwrap();
    assert_eq!(verdict["event"], "verdict");
    assert_eq!(verdict["ok"], true);
    let summary = &lines[lines.len() - 2];
    assert_eq!(summary["event"], "summary");
    let clients = summary["clients"].as_array().unwrap();
    assert_eq!(clients.len(), 3);
    for c in clients {
        assert!(c["sent"].as_u64().unwrap() >= c["received"].as_u64().unwrap());
    }
    assert!(lines.iter().any(|l| l["event"] == "heartbeat"));
}

/// A coarser tick (`--tick`): turmoil's cost is per tick, so the run takes about five times
/// fewer steps; it still passes every oracle, repeats byte for byte, delivers on the tick grid,
/// and its replay command carries the tick.
#[test]
fn a_coarser_tick_takes_fewer_steps_delivers_on_its_grid_and_replays_with_it() {
    let fixed = Some(Latency::Fixed(Duration::from_millis(7)));
    let params = |tick| Params {
        duration: Some(Duration::from_secs(20)),
        latency: fixed,
        tick,
        ..Params::seed(4)
    };
    let fine = Scenario::build("steady", &params(None)).unwrap();
    let coarse = Scenario::build("steady", &params(Some(Duration::from_millis(5)))).unwrap();
    assert!(!fine.replay_command().contains("--tick"));
    assert!(coarse.replay_command().ends_with(" --tick 5"));
    let (fine, coarse) = (world::run(&fine).unwrap(), world::run(&coarse).unwrap());
    for out in [&fine, &coarse] {
        let verdict = oracle::check(out);
        assert!(verdict.ok(), "{}", render::text(out, &verdict));
    }
    assert!(
        coarse.steps * 4 < fine.steps,
        "{} vs {}",
        coarse.steps,
        fine.steps
    );
    // 7 ms of latency: exactly 7 ms at a 1 ms tick; at 5 ms, the next grid point 10 ms after
    // the start of the tick a heartbeat was sent in (sends fall on the grid or inside a tick).
    let delays = |out: &world::Outcome| -> Vec<f64> {
        let json = render::json_lines(out, &oracle::check(out));
        json.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|l| l["event"] == "heartbeat")
            .filter_map(|l| l["delay_ms"].as_f64())
            .collect()
    };
    let (fine_delays, coarse_delays) = (delays(&fine), delays(&coarse));
    assert!(fine_delays.iter().all(|d| *d == 7.0), "{fine_delays:?}");
    assert!(!coarse_delays.is_empty());
    assert!(
        coarse_delays.iter().all(|d| *d > 5.0 && *d <= 10.0),
        "{coarse_delays:?}"
    );
    let again = world::run(&coarse.scenario).unwrap();
    assert_eq!(
        render::text(&coarse, &oracle::check(&coarse)),
        render::text(&again, &oracle::check(&again))
    );
}
