//! A replay of one machine run's arrivals gives every detector exactly the transitions its own
//! server gives in a full machine run of the same seed, client by client (see
//! [`per_client`] for the order between clients).

use std::time::Duration;

use heartbeat_core::detector::DetectorConfig;
use heartbeat_core::liveness::FlapControl;
use heartbeat_sim::qos::engine::{Engine, Transition, per_client};
use heartbeat_sim::qos::replay::Replay;
use heartbeat_sim::qos::{QosParams, grid, label, scenario, server_config};
use heartbeat_sim::scenario::{Latency, Scenario};

use crate::{defaults, ms};

/// Every setting of the grid: machine runs against the replays of one trace.
fn identical(sc: &Scenario, settings: &[DetectorConfig]) -> usize {
    identical_with(sc, settings, None)
}

/// [`identical`], with flap control on both sides when given (`None`: the servers' default
/// configuration, and replays built without any).
fn identical_with(sc: &Scenario, settings: &[DetectorConfig], flap: Option<FlapControl>) -> usize {
    let config = |c: &DetectorConfig| match flap {
        Some(f) => server_config(c).flap_control(f),
        None => server_config(c),
    };
    // The trace comes from a server running the last setting, so that it is not the one whose
    // own server recorded it.
    let recorder = settings.last().unwrap();
    let engine = Engine::new(sc, config(recorder), true).unwrap();
    let origin = engine.origin();
    let mut replays: Vec<Replay> = settings
        .iter()
        .map(|c| {
            let intervals = sc.clients.iter().map(|p| p.interval).collect();
            let replay = Replay::new(c.clone(), intervals, origin);
            match flap {
                Some(f) => replay.flap(f),
                None => replay,
            }
        })
        .collect();
    let run = engine.run(&mut |b| replays.iter_mut().for_each(|r| r.feed(b)), None);
    let end = run.origin + run.end;
    let mut transitions = 0;
    for (setting, replay) in settings.iter().zip(replays) {
        let replayed: Vec<Transition> = replay.finish(end);
        let machine = Engine::new(sc, config(setting), false)
            .unwrap()
            .run(&mut |_| {}, None);
        assert_eq!(
            per_client(&machine.transitions),
            per_client(&replayed),
            "{} seed {}: {}",
            sc.name,
            sc.params.seed,
            label(setting)
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

/// Flap control is part of the one liveness rule: with `--down-after 3 --up-after 2` the replay
/// still gives every client exactly its machine run's transitions; and at 1 and 1 (set
/// explicitly on both sides) exactly those of a configuration without it, so the default
/// changes nothing.
#[test]
fn flap_control_replays_equal_machine_runs_and_one_is_none() {
    let p = QosParams {
        duration: Duration::from_secs(90),
        latency: Latency::parse("1-400").unwrap(),
        ..QosParams::seed(7)
    };
    let settings = defaults();
    let mut fewer = false;
    for name in ["steady-jitter", "crash", "partition"] {
        let sc = scenario(name, &p).unwrap();
        let held = identical_with(&sc, &settings, Some(FlapControl::new(3, 2).unwrap()));
        assert!(held > 0, "{name}");
        // Not a vacuous comparison: holding convictions removes some transitions.
        fewer |= held < identical(&sc, &settings);
        let one = FlapControl::new(1, 1).unwrap();
        // Replays with 1 and 1 set explicitly agree with machine runs with it set too
        // (identical_with asserts it client by client), and find as many transitions.
        assert_eq!(
            identical_with(&sc, &settings, Some(one)),
            identical(&sc, &settings),
            "{name}"
        );
        for setting in &settings {
            let run = |config| {
                Engine::new(&sc, config, false)
                    .unwrap()
                    .run(&mut |_| {}, None)
            };
            let plain = run(server_config(setting));
            let flapped = run(server_config(setting).flap_control(one));
            assert_eq!(
                plain.transitions,
                flapped.transitions,
                "{name}: {}",
                label(setting)
            );
        }
    }
    assert!(fewer);
}
