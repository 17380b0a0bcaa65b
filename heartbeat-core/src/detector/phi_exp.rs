//! Cassandra's φ detector: exponentially distributed inter-arrival times.

use std::f64::consts::LN_10;
use std::fmt;
use std::time::{Duration, Instant};

use super::{
    DEFAULT_WINDOW, Detector, DetectorKind, Levels, Span, Window, check_threshold, check_window,
    clamp_nanos, nanos_to_duration, reaches_with, went_backwards,
};
use crate::error::ConfigError;
use crate::ids::Seq;

/// The mean interval is floored at 1 µs, so a window of same-instant heartbeats does not
/// divide by zero.
const MIN_MEAN_NS: f64 = 1e3;

/// Parameters of the [`PhiExpDetector`]; the defaults are Cassandra's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PhiExpConfig {
    threshold: f64,
    window: usize,
    initial_interval: Span,
}

impl Default for PhiExpConfig {
    /// Threshold 8 (`phi_convict_threshold`), window 128 (Cassandra's `SAMPLE_SIZE` is 1000: see [`DEFAULT_WINDOW`](super::DEFAULT_WINDOW)), initial interval two
    /// heartbeat intervals (`INITIAL_VALUE`, twice the 1 s gossip interval).
    fn default() -> Self {
        Self {
            threshold: 8.0,
            window: DEFAULT_WINDOW,
            initial_interval: Span::Intervals(2.0),
        }
    }
}

impl PhiExpConfig {
    checked_setters! {
        /// The φ at which the client is down (suspect at half of it); positive. Default 8.
        threshold: f64 = check_threshold;
        /// How many inter-arrival times the history keeps (1 to [`MAX_WINDOW`](super::MAX_WINDOW)).
        /// Default 250 ([`DEFAULT_WINDOW`](super::DEFAULT_WINDOW)).
        window: usize = check_window;
        /// The sample the history starts with, and the longest interval it learns (Cassandra's
        /// `INITIAL_VALUE`, which is also its default `MAX_INTERVAL`); positive. Default `2x`.
        initial_interval: Span = Span::positive("initial-interval");
    }

    pub(super) fn levels(&self) -> Levels {
        Levels::halving(self.threshold)
    }
}

impl fmt::Display for PhiExpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "threshold={} window={} initial-interval={}",
            self.threshold, self.window, self.initial_interval
        )
    }
}

/// Cassandra's exponential φ: `φ(t) = t / μ / ln 10`, where `μ` is the mean inter-arrival time
/// in the window.
///
/// It is `−log10(P(an interval is longer than t))` for exponentially distributed intervals,
/// `P = e^(−t/μ)`; the standard deviation is not used. The client is down once
/// `t > threshold · ln 10 · μ`: 11.5 μ, 18.4 μ, 23.0 μ and 27.6 μ for thresholds 5, 8, 10
/// and 12. Like Cassandra:
/// - the history starts with one sample, the initial interval (default two intervals);
/// - intervals longer than the initial interval are ignored, so the detector never learns a
///   partition as normal (and, unlike the normal φ, never adapts to intervals beyond it);
/// - sequence numbers play no part: every heartbeat is an arrival.
///
/// In addition, as in the other detectors, an interval that ended while the client was
/// [marked down](Detector::set_available) or at φ ≥ threshold is not learned.
#[derive(Clone, Debug)]
pub struct PhiExpDetector {
    threshold: f64,
    max_interval_ns: i64,
    intervals: Window,
    last: Option<Instant>,
    marked_down: bool,
    /// The mean interval in nanoseconds, floored at [`MIN_MEAN_NS`].
    mean_ns: f64,
}

impl PhiExpDetector {
    /// A detector for a client that declared `interval`, its history seeded with the initial
    /// interval.
    pub fn new(config: &PhiExpConfig, interval: Duration) -> Self {
        let initial = clamp_nanos(config.initial_interval.resolve(interval)).max(1);
        let mut intervals = Window::new(config.window);
        intervals.push(initial);
        let mut d = Self {
            threshold: config.threshold,
            max_interval_ns: initial,
            intervals,
            last: None,
            marked_down: false,
            mean_ns: 0.0,
        };
        d.update_mean();
        d
    }

    /// The mean of the inter-arrival times in the window.
    pub fn mean(&self) -> Duration {
        nanos_to_duration(self.intervals.mean())
    }

    /// How many inter-arrival times the window holds, the initial sample included until it is
    /// pushed out.
    pub fn samples(&self) -> usize {
        self.intervals.len()
    }

    fn update_mean(&mut self) {
        self.mean_ns = self.intervals.mean().max(MIN_MEAN_NS);
    }
}

impl Detector for PhiExpDetector {
    fn heartbeat(&mut self, now: Instant, _seq: Seq) {
        if went_backwards(self.last, now) {
            return;
        }
        if let Some(last) = self.last {
            let interval = clamp_nanos(now.duration_since(last));
            let available = !self.marked_down && self.suspicion(now) < self.threshold;
            if available && interval <= self.max_interval_ns {
                self.intervals.push(interval);
                self.update_mean();
            }
        }
        self.last = Some(now);
        self.marked_down = false;
    }

    fn suspicion(&self, now: Instant) -> f64 {
        match self.last {
            None => 0.0,
            Some(last) => {
                let silence = now.saturating_duration_since(last).as_nanos() as f64;
                silence / self.mean_ns / LN_10
            }
        }
    }

    fn reaches(&self, level: f64) -> Option<Instant> {
        reaches_with(
            self.last,
            level,
            |t| self.suspicion(t),
            |last| super::offset(last, level * LN_10 * self.mean_ns),
        )
    }

    fn set_available(&mut self, available: bool) {
        self.marked_down = !available;
    }

    fn kind(&self) -> DetectorKind {
        DetectorKind::PhiExp
    }

    fn levels(&self) -> Levels {
        Levels::halving(self.threshold)
    }

    fn last_heartbeat(&self) -> Option<Instant> {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{ms, origin, secs_since};
    use super::*;

    /// A detector with Cassandra's window of 1000 that holds only `interval`s (the initial
    /// sample pushed out).
    fn steady(interval: Duration) -> (PhiExpDetector, Instant) {
        let cassandra = PhiExpConfig::default().window(1000).unwrap();
        let mut d = PhiExpDetector::new(&cassandra, interval);
        let mut t = origin();
        for i in 0..=1000 {
            d.heartbeat(t, Seq(i + 1));
            t += interval;
        }
        let last = t - interval;
        assert_eq!((d.samples(), d.mean()), (1000, interval));
        (d, last)
    }

    /// Conviction when t > Φ · ln 10 · μ: 11.5 μ, 18.4 μ, 23.0 μ, 27.6 μ for Φ = 5, 8, 10, 12.
    #[test]
    fn golden_cassandra_conviction_times() {
        for mu in [ms(1000), ms(250)] {
            let (d, last) = steady(mu);
            for (phi, rounded, exact) in [
                (5.0, 11.5, 11.512_925),
                (8.0, 18.4, 18.420_681),
                (10.0, 23.0, 23.025_851),
                (12.0, 27.6, 27.631_021),
            ] {
                let at = d.reaches(phi).unwrap();
                let in_mu = secs_since(last, at) / mu.as_secs_f64();
                assert!((in_mu - exact).abs() < 1e-6, "Φ={phi}: {in_mu}");
                assert!((in_mu - rounded).abs() < 0.05);
                assert!(d.suspicion(at) >= phi);
                assert!(d.suspicion(at - Duration::from_micros(1)) < phi);
            }
            // φ = 1/ln 10 ≈ 0.434 after one mean interval: P(later) = 1/e.
            assert!((d.suspicion(last + mu) - 1.0 / LN_10).abs() < 1e-12);
        }
    }

    #[test]
    fn bootstrap_and_max_interval() {
        let t0 = origin();
        let mut d = PhiExpDetector::new(&PhiExpConfig::default(), ms(1000));
        assert_eq!((d.samples(), d.mean()), (1, ms(2000)));
        d.heartbeat(t0, Seq(1));
        // μ = 2 s: down at 8 · ln 10 · 2 s = 36.84 s.
        let secs = secs_since(t0, d.reaches(8.0).unwrap());
        assert!((secs - 36.841_361).abs() < 1e-6, "{secs}");
        d.heartbeat(t0 + ms(1000), Seq(2));
        assert_eq!((d.samples(), d.mean()), (2, ms(1500)));
        // Exactly the max interval is learned, anything longer is ignored.
        d.heartbeat(t0 + ms(3000), Seq(3));
        assert_eq!(
            (d.samples(), d.mean()),
            (3, Duration::from_nanos(1_666_666_667))
        );
        d.heartbeat(t0 + ms(5001), Seq(4));
        assert_eq!(d.samples(), 3);
    }

    #[test]
    fn outage_intervals_are_left_out() {
        let config = PhiExpConfig::default()
            .initial_interval(Span::Fixed(ms(60_000)))
            .unwrap();
        let mut d = PhiExpDetector::new(&config, ms(1000));
        let t0 = origin();
        d.heartbeat(t0, Seq(1));
        d.heartbeat(t0 + ms(1000), Seq(2));
        assert_eq!(d.samples(), 2);
        d.set_available(false);
        d.heartbeat(t0 + ms(30_000), Seq(30));
        assert_eq!(d.samples(), 2);
        d.heartbeat(t0 + ms(31_000), Seq(31));
        assert_eq!(d.samples(), 3);
    }

    #[test]
    fn window_follows_a_step_change() {
        let config = PhiExpConfig::default().window(4).unwrap();
        let mut d = PhiExpDetector::new(&config, ms(1000));
        let mut t = origin();
        d.heartbeat(t, Seq(1));
        for (i, gap) in [500, 500, 500, 500, 1500, 1500, 1500, 1500]
            .into_iter()
            .enumerate()
        {
            t += ms(gap);
            d.heartbeat(t, Seq(i as u64 + 2));
            if i == 3 {
                assert_eq!(d.mean(), ms(500));
            }
        }
        assert_eq!((d.samples(), d.mean()), (4, ms(1500)));
    }

    #[test]
    fn same_instant_heartbeats_floor_the_mean() {
        let mut d = PhiExpDetector::new(&PhiExpConfig::default().window(3).unwrap(), ms(10));
        let t0 = origin();
        for i in 0..10 {
            d.heartbeat(t0, Seq(i));
        }
        assert_eq!(d.mean(), Duration::ZERO);
        assert_eq!(d.suspicion(t0), 0.0);
        assert!((d.suspicion(t0 + ms(1)) - 1000.0 / LN_10).abs() < 1e-9);
    }
}
