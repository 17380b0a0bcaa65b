//! What each detector promises, tested in simulation for every detector with its defaults.
//!
//! - A crashed client is declared `down` within the bound its detector promises. A detector's
//!   promise is the silence after the last heartbeat at which it declares a steady client down
//!   (`reaches(down) - last`, e.g. interval + grace for `fixed`). The last heartbeat of a
//!   crashed client arrives at most one maximum latency after the crash, and jitter moves a
//!   learned mean or expected arrival by at most the latency spread, so every detection time
//!   must be at most `max latency + promise + (max - min latency)`.
//! - A steady client whose jitter stays inside what the detector is configured to tolerate is
//!   never suspected, not even at the `suspect` level, over a simulated day.

use std::time::{Duration, Instant};

use heartbeat_core::Seq;
use heartbeat_core::detector::{DetectorConfig, DetectorKind};
use heartbeat_sim::Latency;
use heartbeat_sim::qos::{EngineKind, QosParams, label};

use crate::{defaults, ms, study};

/// The silence after the last of `n` heartbeats exactly `interval` apart at which `config`
/// declares the client down.
fn promise(config: &DetectorConfig, interval: Duration, n: u32) -> Duration {
    #[allow(clippy::disallowed_methods)] // an arbitrary origin; only offsets from it matter
    let t0 = Instant::now();
    let mut d = config.build(interval);
    for k in 0..n {
        d.heartbeat(t0 + interval * k, Seq(u64::from(k) + 1));
    }
    let last = t0 + interval * (n - 1);
    d.reaches(d.levels().down).unwrap() - last
}

#[test]
fn crashed_clients_are_declared_down_within_the_promise() {
    let latency = Latency::default();
    let p = QosParams {
        duration: Duration::from_secs(300),
        latency,
        ..QosParams::seed(0)
    };
    let o = study("crash", 1..4, p.clone(), defaults(), EngineKind::Replay);
    assert!(o.crashes >= 40, "{} crashes", o.crashes);
    // A process lives at least 20 s before it crashes: 200 heartbeats at 10 Hz.
    let lived = 200;
    let slack = latency.max() + (latency.max() - latency.min());
    for row in &o.rows {
        let name = label(&row.setting);
        let down = &row.summary.down;
        let bound = promise(&row.setting, p.interval, lived) + slack;
        assert_eq!(down.undetected, 0, "{name}");
        assert_eq!(down.detected, o.crashes, "{name}");
        let worst = down.detection_max.unwrap();
        assert!(worst <= bound, "{name}: {worst:?} > {bound:?}");
        // Nothing is declared down early by mistake either, in this calm network.
        assert_eq!(down.mistakes, 0, "{name}");
    }
    // The promises themselves, at 10 Hz: fixed and chen after three intervals, phi-exp after
    // 8 ln 10 mean intervals, phi after the mean plus the acceptable pause plus a few minimum
    // deviations.
    let p = |k| promise(&DetectorConfig::new(k), ms(100), lived).as_millis();
    assert_eq!(p(DetectorKind::Fixed), 300);
    assert_eq!(p(DetectorKind::Chen), 300);
    assert!(
        (1840..1860).contains(&p(DetectorKind::PhiExp)),
        "{}",
        p(DetectorKind::PhiExp)
    );
    assert!(
        (3500..3650).contains(&p(DetectorKind::Phi)),
        "{}",
        p(DetectorKind::Phi)
    );
}

fn never_suspected(interval: Duration, duration_s: u64) {
    let latency = Latency::default();
    let spread = latency.max() - latency.min();
    // The jitter is inside every detector's tolerance: phi's minimum deviation (100 ms), chen's
    // alpha and half of fixed's grace (one interval each).
    assert!(spread < ms(100) && spread < interval);
    let p = QosParams {
        duration: Duration::from_secs(duration_s),
        interval,
        latency,
        ..QosParams::seed(0)
    };
    let o = study("steady-jitter", 1..2, p, defaults(), EngineKind::Replay);
    assert_eq!(
        o.heartbeats,
        duration_s * 1000 / interval.as_millis() as u64,
        "{o:?}"
    );
    for row in &o.rows {
        let s = &row.summary;
        assert!(s.reachable > Duration::from_secs(duration_s - 1));
        assert_eq!(s.suspect.mistakes, 0, "{}", label(&row.setting));
        assert_eq!(s.suspect.accuracy, Some(1.0));
    }
}

/// A simulated day at 1 Hz (86,400 heartbeats), through the replay.
#[test]
fn a_steady_client_is_never_suspected_over_a_day() {
    never_suspected(ms(1000), 86_400);
}

/// The same at 10 Hz, where the margins of chen (100 ms) and fixed (suspect at 200 ms of
/// silence) are tight, for an hour (36,000 heartbeats).
#[test]
fn a_steady_client_at_10_hz_is_never_suspected_over_an_hour() {
    never_suspected(ms(100), 3_600);
}
