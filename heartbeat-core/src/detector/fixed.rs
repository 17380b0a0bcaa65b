//! The fixed-timeout detector: down after `interval + grace` of silence.

use std::fmt;
use std::time::{Duration, Instant};

use super::{Detector, DetectorKind, Levels, Span, clamp_nanos, reaches_with, went_backwards};
use crate::error::ConfigError;
use crate::ids::Seq;

/// The levels of the fixed detector: suspect halfway through the grace, down at its end.
pub(super) const LEVELS: Levels = Levels {
    suspect: 0.5,
    down: 1.0,
};

/// Parameters of the [`FixedDetector`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FixedConfig {
    grace: Span,
}

impl Default for FixedConfig {
    /// A grace of two intervals: suspect after two intervals of silence (one heartbeat missed),
    /// down after three (two missed).
    fn default() -> Self {
        Self {
            grace: Span::Intervals(2.0),
        }
    }
}

impl FixedConfig {
    checked_setters! {
        /// How long past the interval a heartbeat may be late; positive. Default `2x`.
        grace: Span = Span::positive("grace");
    }
}

impl fmt::Display for FixedConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "grace={}", self.grace)
    }
}

/// Down after a fixed silence of `interval + grace`, whatever the history.
///
/// Suspicion is the fraction of the grace used up: `max(0, silence − interval) / grace`. It is 0
/// until the next heartbeat is due, 0.5 halfway through the grace (suspect) and 1 at the
/// deadline (down). Sequence numbers and availability do not matter to it.
#[derive(Clone, Debug)]
pub struct FixedDetector {
    interval_ns: i64,
    grace_ns: i64,
    last: Option<Instant>,
}

impl FixedDetector {
    /// A detector for a client that declared `interval`.
    pub fn new(config: &FixedConfig, interval: Duration) -> Self {
        Self {
            interval_ns: clamp_nanos(interval),
            grace_ns: clamp_nanos(config.grace.resolve(interval)).max(1),
            last: None,
        }
    }

    /// The instant the client will be down if nothing arrives: last heartbeat + interval +
    /// grace.
    pub fn deadline(&self) -> Option<Instant> {
        self.reaches(LEVELS.down)
    }
}

impl Detector for FixedDetector {
    fn heartbeat(&mut self, now: Instant, _seq: Seq) {
        if !went_backwards(self.last, now) {
            self.last = Some(now);
        }
    }

    fn suspicion(&self, now: Instant) -> f64 {
        let Some(last) = self.last else {
            return 0.0;
        };
        let silence =
            i128::try_from(now.saturating_duration_since(last).as_nanos()).unwrap_or(i128::MAX);
        let overdue = silence.saturating_sub(i128::from(self.interval_ns)).max(0);
        overdue as f64 / self.grace_ns as f64
    }

    fn reaches(&self, level: f64) -> Option<Instant> {
        reaches_with(
            self.last,
            level,
            |t| self.suspicion(t),
            |last| {
                let after = self.interval_ns as f64 + level * self.grace_ns as f64;
                super::offset(last, after)
            },
        )
    }

    fn set_available(&mut self, _available: bool) {}

    fn kind(&self) -> DetectorKind {
        DetectorKind::Fixed
    }

    fn levels(&self) -> Levels {
        LEVELS
    }

    fn last_heartbeat(&self) -> Option<Instant> {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{ms, origin};
    use super::*;

    #[test]
    fn default_grace_is_two_intervals() {
        let t0 = origin();
        let mut d = FixedDetector::new(&FixedConfig::default(), ms(1000));
        d.heartbeat(t0, Seq(1));
        assert_eq!(d.suspicion(t0 + ms(1000)), 0.0);
        assert_eq!(d.suspicion(t0 + ms(1500)), 0.25);
        assert_eq!(d.suspicion(t0 + ms(2000)), 0.5);
        assert_eq!(d.suspicion(t0 + ms(3000)), 1.0);
        assert_eq!(d.reaches(0.5), Some(t0 + ms(2000)));
        assert_eq!(d.reaches(1.0), Some(t0 + ms(3000)));
        assert_eq!(d.deadline(), Some(t0 + ms(3000)));
        assert_eq!(d.reaches(0.0), Some(t0));
    }

    #[test]
    fn fixed_grace_is_exact() {
        let t0 = origin();
        let config = FixedConfig::default().grace(Span::Fixed(ms(250))).unwrap();
        let mut d = FixedDetector::new(&config, ms(100));
        d.heartbeat(t0, Seq(1));
        d.heartbeat(t0 + ms(5000), Seq(9)); // history plays no part
        assert_eq!(d.reaches(1.0), Some(t0 + ms(5350)));
        assert_eq!(d.suspicion(t0 + ms(5350)), 1.0);
        assert_eq!(d.suspicion(t0 + ms(5349)), 0.996);
    }

    #[test]
    fn grace_must_be_positive() {
        for bad in [
            Span::Fixed(Duration::ZERO),
            Span::Intervals(0.0),
            Span::Intervals(-1.0),
        ] {
            assert!(matches!(
                FixedConfig::default().grace(bad),
                Err(ConfigError::Detector { name: "grace", .. })
            ));
        }
    }
}
