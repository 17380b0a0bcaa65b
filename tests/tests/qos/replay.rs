//! A replay of one machine run's arrivals gives every detector exactly the transitions its own
//! server gives in a full machine run of the same seed, client by client (see
//! [`per_client`] for the order between clients).

use std::time::Duration;

use heartbeat_core::detector::DetectorConfig;
use heartbeat_sim::qos::engine::{Engine, Transition, per_client};
use heartbeat_sim::qos::replay::Replay;
use heartbeat_sim::qos::{QosParams, grid, label, scenario, server_config};
use heartbeat_sim::scenario::{Latency, Scenario};

use crate::{defaults, ms};

/// Every setting of the grid: machine runs against the replays of one trace.
fn identical(sc: &Scenario, settings: &[DetectorConfig]) -> usize {
    // The trace comes from a server running the last setting, so that it is not the one whose
    // own server recorded it.
    let recorder = settings.last().unwrap();
    let engine = Engine::new(sc, server_config(recorder), true).unwrap();
    let origin = engine.origin();
    let mut replays: Vec<Replay> = settings
        .iter()
        .map(|c| {
            let intervals = sc.clients.iter().map(|p| p.interval).collect();
            Replay::new(c.clone(), intervals, origin)
        })
        .collect();
    let run = engine.run(&mut |b| replays.iter_mut().for_each(|r| r.feed(b)), None);
    let end = run.origin + run.end;
    let mut transitions = 0;
    for (config, replay) in settings.iter().zip(replays) {
        let replayed: Vec<Transition> = replay.finish(end);
        let machine = Engine::new(sc, server_config(config), false)
            .unwrap()
            .run(&mut |_| {}, None);
        assert_eq!(
            per_client(&machine.transitions),
            per_client(&replayed),
            "{} seed {}: {}",
            sc.name,
            sc.params.seed,
            label(config)
        );
        transitions += replayed.len();
    }
    transitions
}

#[test]
fn replays_equal_machine_runs() {
    let settings = grid(&defaults());
    assert_eq!(settings.len(), 14);
    let mut transitions = 0;
    for (name, latency) in [
        // Heavy jitter, so that the tight settings make mistakes.
        ("steady-jitter", Latency::parse("1-400").unwrap()),
        ("crash", Latency::default()),
        ("partition", Latency::parse("1-300").unwrap()),
    ] {
        let p = QosParams {
            duration: Duration::from_secs(90),
            latency,
            ..QosParams::seed(7)
        };
        transitions += identical(&scenario(name, &p).unwrap(), &settings);
    }
    // Not a vacuous comparison.
    assert!(transitions > 500, "{transitions}");
}

#[test]
fn replays_equal_machine_runs_at_1_hz_with_restarts_and_fixed_latency() {
    let p = QosParams {
        duration: Duration::from_secs(900),
        interval: ms(1000),
        latency: Latency::Fixed(ms(20)),
        ..QosParams::seed(3)
    };
    let n = identical(&scenario("crash", &p).unwrap(), &defaults());
    assert!(n > 0);
}
