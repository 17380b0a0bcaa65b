//! The event-driven engine agrees with the turmoil world on the same scenarios.
//!
//! Both run the same [`Scenario`] value with a fixed 10 ms latency (so neither draws latencies
//! from an RNG) and the server's default detector. They must agree:
//! - exactly on every client's received and missed counts and final liveness state;
//! - exactly on the sequence of liveness transitions (client, from, to);
//! - on the time of each transition a detector decided (to `suspect` or `down`) to within one
//!   turmoil tick, turmoil never earlier: turmoil's hosts wake at the next whole millisecond
//!   (tokio's timer resolution) at or after the instant the detector named, the engine at the
//!   instant itself;
//! - on the time of each transition back to `up` (an arrival) to within 10 ticks: after a
//!   partition the arrival ends a chain of client timers (ack timeout, then one backoff per
//!   refused connect), each of which turmoil rounds up to the next millisecond. Over the
//!   simulator's eight scenarios with seeds 1 to 11 the largest gap measured was 4.96 ms.

use std::time::Duration;

use heartbeat_core::config::ServerConfig;
use heartbeat_core::server::{Event, Liveness};
use heartbeat_sim::log::Record;
use heartbeat_sim::qos::engine::Engine;
use heartbeat_sim::qos::{QosParams, scenario};
use heartbeat_sim::scenario::{Latency, Params, Scenario};
use heartbeat_sim::world;

use crate::ms;

fn agree(sc: &Scenario) {
    let what = format!("{} seed {}", sc.name, sc.params.seed);
    let out = world::run(sc).unwrap();
    let run = Engine::new(sc, ServerConfig::default(), false)
        .unwrap()
        .run(&mut |_| {}, None);
    let counts = |r: &heartbeat_core::analysis::Report| -> Vec<String> {
        r.clients
            .iter()
            .map(|c| {
                format!(
                    "{} received={} missed={} {}",
                    c.client, c.received, c.missed, c.state
                )
            })
            .collect()
    };
    assert_eq!(counts(&out.report), counts(&run.report), "{what}");
    let turmoil: Vec<(Duration, String, Liveness, Liveness)> = out
        .log
        .iter()
        .filter_map(|e| match &e.record {
            Record::Server {
                event:
                    Event::Transition {
                        client, from, to, ..
                    },
                ..
            } => Some((e.at, client.to_string(), *from, *to)),
            _ => None,
        })
        .collect();
    let engine: Vec<(Duration, String, Liveness, Liveness)> = run
        .transitions
        .iter()
        .map(|t| (t.at, format!("c{}", t.client + 1), t.from, t.to))
        .collect();
    let names = |v: &[(Duration, String, Liveness, Liveness)]| -> Vec<String> {
        v.iter()
            .map(|t| format!("{} {}->{}", t.1, t.2, t.3))
            .collect()
    };
    assert_eq!(names(&turmoil), names(&engine), "{what}");
    for (t, e) in turmoil.iter().zip(&engine) {
        if e.3 == Liveness::Up {
            let gap = t.0.abs_diff(e.0);
            assert!(gap <= sc.tick * 10, "{what}: {t:?} against {e:?}");
        } else {
            assert!(
                t.0 >= e.0 && t.0 - e.0 < sc.tick,
                "{what}: {t:?} against {e:?}"
            );
        }
    }
}

fn fixed(seed: u64) -> Params {
    Params {
        latency: Latency::Fixed(ms(10)),
        ..Params::seed(seed)
    }
}

#[test]
fn the_simulators_scenarios() {
    for (name, seeds) in [
        ("client-crash", 1..3),
        ("partition", 1..3),
        ("server-restart", 1..3),
        ("firewall", 1..2),
        ("swizzle", 1..2),
    ] {
        for seed in seeds {
            agree(&Scenario::build(name, &fixed(seed)).unwrap());
        }
    }
}

/// The QoS scenarios run in the turmoil world too, and agree there.
#[test]
fn the_qos_crash_scenario() {
    let p = QosParams {
        duration: Duration::from_secs(60),
        clients: Some(2),
        latency: Latency::Fixed(ms(10)),
        ..QosParams::seed(1)
    };
    let sc = scenario("crash", &p).unwrap();
    assert!(
        sc.actions.len() >= 2,
        "the schedule should crash someone: {:?}",
        sc.actions
    );
    agree(&sc);
}
