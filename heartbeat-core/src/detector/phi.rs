//! The φ accrual failure detector (Hayashibara et al. 2004), compatible with Akka's.

use std::f64::consts::LN_10;
use std::fmt;
use std::time::{Duration, Instant};

use super::{
    DEFAULT_WINDOW, Detector, DetectorKind, Levels, Span, Window, check_threshold, check_window,
    clamp_nanos, nanos_to_duration, reaches_with, went_backwards,
};
use crate::error::ConfigError;
use crate::ids::Seq;

/// The logistic approximation of the normal CDF that Akka uses:
/// `Φ(y) ≈ 1 / (1 + exp(−(A·y + B·y³)))`, off by at most 0.00014 (at y = ±3.16).
const A: f64 = 1.5976;
const B: f64 = 0.070566;

/// Parameters of the [`PhiDetector`]; the defaults are Akka's cluster failure detector's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PhiConfig {
    threshold: f64,
    min_std_deviation: Span,
    acceptable_pause: Span,
    window: usize,
    first_heartbeat_estimate: Span,
}

impl Default for PhiConfig {
    /// Threshold 8, minimum standard deviation 100 ms, acceptable pause 3 s, window 128 (Akka's
    /// `max-sample-size` is 1000: see [`DEFAULT_WINDOW`](super::DEFAULT_WINDOW)), first
    /// heartbeat estimate one interval (Akka: `heartbeat-interval`).
    fn default() -> Self {
        Self {
            threshold: 8.0,
            min_std_deviation: Span::Fixed(Duration::from_millis(100)),
            acceptable_pause: Span::Fixed(Duration::from_secs(3)),
            window: DEFAULT_WINDOW,
            first_heartbeat_estimate: Span::Intervals(1.0),
        }
    }
}

impl PhiConfig {
    checked_setters! {
        /// The φ at which the client is down (suspect at half of it); positive. Default 8.
        ///
        /// φ = 8 means the chance that the client is in fact alive is 10⁻⁸ under the model.
        threshold: f64 = check_threshold;
        /// The floor of the standard deviation, so a very regular history does not make the
        /// detector hair-triggered; positive. Default 100 ms.
        min_std_deviation: Span = Span::positive("min-std-deviation");
        /// Extra silence tolerated on top of the mean interval (added to the mean), for pauses and
        /// bursts of lost heartbeats. Default 3 s.
        acceptable_pause: Span = Span::non_negative("acceptable-pause");
        /// How many inter-arrival times the history keeps (1 to [`MAX_WINDOW`](super::MAX_WINDOW)).
        /// Default 250 ([`DEFAULT_WINDOW`](super::DEFAULT_WINDOW)).
        window: usize = check_window;
        /// The mean interval assumed before any was measured; positive. The history starts with two
        /// samples, this ± a quarter of it (mean = estimate, standard deviation = estimate / 4).
        /// Default one interval.
        first_heartbeat_estimate: Span = Span::positive("first-heartbeat-estimate");
    }

    pub(super) fn levels(&self) -> Levels {
        Levels::halving(self.threshold)
    }
}

impl fmt::Display for PhiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "threshold={} min-std-deviation={} acceptable-pause={} window={} \
             first-heartbeat-estimate={}",
            self.threshold,
            self.min_std_deviation,
            self.acceptable_pause,
            self.window,
            self.first_heartbeat_estimate
        )
    }
}

/// The φ accrual failure detector, with Akka's conventions.
///
/// The inter-arrival times in a sliding window are taken as normally distributed with the
/// window's mean `μ` and standard deviation `σ`. After a silence `t`,
/// `φ(t) = −log10(P(an interval is longer than t))`, with the normal CDF replaced by Akka's
/// logistic approximation, `μ` raised by the acceptable pause and `σ` floored at the minimum
/// standard deviation:
///
/// ```text
/// y = (t − (μ + acceptable_pause)) / max(σ, min_std_deviation)
/// φ = log10(1 + exp(y · (1.5976 + 0.070566 · y²)))
/// ```
///
/// (Akka writes the same value as `−log10(e / (1 + e))`, `e = exp(−y·(…))`; this form stays
/// finite where Akka's overflows to infinity, far past any threshold.) Like Akka:
/// - the history starts with two samples, the first heartbeat estimate ± a quarter of it;
/// - an interval is added only if the client was available when it ended: φ below the threshold
///   and not [marked down](Detector::set_available);
/// - sequence numbers play no part: every heartbeat is an arrival.
///
/// With the defaults and heartbeats every 1 s ± 100 ms, φ reaches 8 about 4.52 s after the
/// last heartbeat (5.05 s for ± 200 ms, 6.61 s for ± 500 ms).
#[derive(Clone, Debug)]
pub struct PhiDetector {
    threshold: f64,
    /// The acceptable pause, in seconds.
    pause: f64,
    /// The minimum standard deviation, in seconds.
    min_std: f64,
    intervals: Window,
    last: Option<Instant>,
    marked_down: bool,
    /// `μ + acceptable_pause`, in seconds, updated on every heartbeat.
    mean: f64,
    /// `max(σ, min_std_deviation)`, in seconds.
    std: f64,
    /// `(level, y)` with `φ(y) = level` for the suspect and down levels, solved once.
    inverses: [(f64, f64); 2],
}

impl PhiDetector {
    /// A detector for a client that declared `interval`, its history bootstrapped from the first
    /// heartbeat estimate.
    pub fn new(config: &PhiConfig, interval: Duration) -> Self {
        let estimate = clamp_nanos(config.first_heartbeat_estimate.resolve(interval)).max(1);
        let mut intervals = Window::new(config.window);
        intervals.push(estimate - estimate / 4);
        intervals.push(estimate + estimate / 4);
        let mut d = Self {
            threshold: config.threshold,
            pause: config.acceptable_pause.resolve(interval).as_secs_f64(),
            min_std: config
                .min_std_deviation
                .resolve(interval)
                .as_secs_f64()
                .max(1e-9),
            intervals,
            last: None,
            marked_down: false,
            mean: 0.0,
            std: 0.0,
            inverses: [config.threshold / 2.0, config.threshold].map(|l| (l, phi_inverse(l))),
        };
        d.update_stats();
        d
    }

    /// The mean of the inter-arrival times in the window (without the acceptable pause).
    pub fn mean(&self) -> Duration {
        nanos_to_duration(self.intervals.mean())
    }

    /// The standard deviation of the inter-arrival times in the window (before the floor).
    pub fn std_deviation(&self) -> Duration {
        nanos_to_duration(self.intervals.variance().sqrt())
    }

    /// How many inter-arrival times the window holds, the two bootstrap samples included until
    /// they are pushed out.
    pub fn samples(&self) -> usize {
        self.intervals.len()
    }

    fn update_stats(&mut self) {
        self.mean = self.intervals.mean() / 1e9 + self.pause;
        self.std = (self.intervals.variance().sqrt() / 1e9).max(self.min_std);
    }

    fn phi(&self, silence: f64) -> f64 {
        phi(silence, self.mean, self.std)
    }

    /// The silence, in seconds, after which φ reaches `level`.
    fn silence_at(&self, level: f64) -> f64 {
        let y = match self.inverses.iter().find(|(l, _)| *l == level) {
            Some(&(_, y)) => y,
            None => phi_inverse(level),
        };
        self.mean + y * self.std
    }
}

/// φ after `silence` seconds for intervals with this mean and standard deviation (seconds).
fn phi(silence: f64, mean: f64, std: f64) -> f64 {
    let y = (silence - mean) / std;
    let u = y * (A + B * y * y);
    // log(1 + e^u) without overflow for large u or loss of precision for very negative u.
    let softplus = if u > 0.0 {
        u + (-u).exp().ln_1p()
    } else {
        u.exp().ln_1p()
    };
    softplus / LN_10
}

/// The `y` at which φ equals `level`: solves `log10(1 + e^u) = level` for `u`, then the cubic
/// `B·y³ + A·y = u`, which has exactly one real root because `A, B > 0`.
fn phi_inverse(level: f64) -> f64 {
    let x = level * LN_10;
    let u = if x > 30.0 {
        x + (-(-x).exp()).ln_1p()
    } else {
        x.exp_m1().ln()
    };
    // y³ + p·y + q = 0 with p > 0: the trigonometric (hyperbolic) form of the one real root.
    let p = A / B;
    let q = -u / B;
    let mut y = -2.0 * (p / 3.0).sqrt() * ((1.5 * q / p * (3.0 / p).sqrt()).asinh() / 3.0).sinh();
    // Two Newton steps clean up the rounding; the derivative is at least A.
    for _ in 0..2 {
        y -= (y * (A + B * y * y) - u) / (A + 3.0 * B * y * y);
    }
    y
}

impl Detector for PhiDetector {
    fn heartbeat(&mut self, now: Instant, _seq: Seq) {
        if went_backwards(self.last, now) {
            return;
        }
        if let Some(last) = self.last {
            let interval = now.duration_since(last);
            // φ < threshold, evaluated only near the crossing (φ is increasing).
            let silence = interval.as_secs_f64();
            let crossing = self.silence_at(self.threshold);
            let below = if (silence - crossing).abs() > 1e-6 {
                silence < crossing
            } else {
                self.phi(silence) < self.threshold
            };
            if below && !self.marked_down {
                self.intervals.push(clamp_nanos(interval));
                self.update_stats();
            }
        }
        self.last = Some(now);
        self.marked_down = false;
    }

    fn suspicion(&self, now: Instant) -> f64 {
        match self.last {
            None => 0.0,
            Some(last) => self.phi(now.saturating_duration_since(last).as_secs_f64()),
        }
    }

    fn reaches(&self, level: f64) -> Option<Instant> {
        reaches_with(
            self.last,
            level,
            |t| self.suspicion(t),
            |last| super::offset(last, self.silence_at(level) * 1e9),
        )
    }

    fn set_available(&mut self, available: bool) {
        self.marked_down = !available;
    }

    fn kind(&self) -> DetectorKind {
        DetectorKind::Phi
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

    /// A detector with Akka's defaults (window 1000) whose window holds exactly 1000 intervals
    /// alternating `1 s − dev` and `1 s + dev`: mean 1 s, standard deviation `dev`. Returns it
    /// and the last heartbeat.
    fn akka_history(dev_ms: u64) -> (PhiDetector, Instant) {
        let akka = PhiConfig::default().window(1000).unwrap();
        let mut d = PhiDetector::new(&akka, ms(1000));
        let mut t = origin();
        d.heartbeat(t, Seq(1));
        for i in 0..1000 {
            t += if i % 2 == 0 {
                ms(1000 - dev_ms)
            } else {
                ms(1000 + dev_ms)
            };
            d.heartbeat(t, Seq(i + 2));
        }
        assert_eq!(d.samples(), 1000);
        assert_eq!(d.mean(), ms(1000));
        assert_eq!(d.std_deviation(), ms(dev_ms));
        (d, t)
    }

    /// The detection times of the research notes, for Akka's defaults and a 1 s interval.
    #[test]
    fn golden_akka_detection_times() {
        let cases: [(u64, f64, f64); 9] = [
            (100, 1.0, 4.13),
            (100, 3.0, 4.31),
            (100, 8.0, 4.52),
            (100, 10.0, 4.58),
            (100, 12.0, 4.63),
            (100, 16.0, 4.71),
            (200, 8.0, 5.05),
            (500, 8.0, 6.61),
            (500, 12.0, 7.15),
        ];
        for (dev, level, expected) in cases {
            let (d, last) = akka_history(dev);
            let at = d.reaches(level).unwrap();
            let secs = secs_since(last, at);
            assert!(
                (secs - expected).abs() < 0.006,
                "σ={dev}ms φ={level}: {secs}"
            );
            // suspicion agrees to well within a millisecond on both sides
            assert!(d.suspicion(at) >= level);
            assert!(d.suspicion(at - ms(1)) < level);
            assert!((d.suspicion(at) - level).abs() < 1e-6); // 1 ns of rounding
        }
        // The precise values for σ = 100 ms: φ = 8 at 4.5226 s, φ = 4 (suspect) at 4.3638 s.
        let (d, last) = akka_history(100);
        assert!((secs_since(last, d.reaches(8.0).unwrap()) - 4.5226).abs() < 1e-4);
        assert!((secs_since(last, d.reaches(4.0).unwrap()) - 4.3638).abs() < 1e-4);
        assert!(d.suspicion(last + ms(4520)) < 8.0);
        assert!(d.suspicion(last + ms(4525)) > 8.0);
        assert!((d.suspicion(last + ms(4000)) - 0.301).abs() < 0.001); // y = 0: P = 1/2
    }

    #[test]
    fn bootstrap_from_the_first_heartbeat_estimate() {
        let t0 = origin();
        let mut d = PhiDetector::new(&PhiConfig::default(), ms(1000));
        assert_eq!(
            (d.samples(), d.mean(), d.std_deviation()),
            (2, ms(1000), ms(250))
        );
        assert_eq!(d.suspicion(t0), 0.0);
        assert_eq!(d.reaches(8.0), None);
        d.heartbeat(t0, Seq(1));
        assert_eq!(d.samples(), 2); // the first heartbeat measures no interval
        // mean 1 s + pause 3 s, σ = 250 ms: φ = 8 at 4 + 0.25 · 5.2260 s
        let secs = secs_since(t0, d.reaches(8.0).unwrap());
        assert!((secs - 5.3065).abs() < 1e-4, "{secs}");
        d.heartbeat(t0 + ms(1000), Seq(2));
        assert_eq!(d.samples(), 3);
    }

    #[test]
    fn outage_intervals_are_left_out() {
        let (mut d, last) = akka_history(100);
        // Declared down by the server: the 60 s outage interval is not learned.
        d.set_available(false);
        d.heartbeat(last + ms(60_000), Seq(2000));
        assert_eq!((d.mean(), d.std_deviation()), (ms(1000), ms(100)));
        // Available again after that heartbeat: the next interval counts.
        d.heartbeat(last + ms(61_000), Seq(2001));
        assert_eq!(d.mean(), Duration::from_micros(1_000_100)); // 1 s replaced the oldest 0.9 s
        // Even without being told, an interval that ended at φ ≥ threshold is left out (Akka).
        let (mut d, last) = akka_history(100);
        d.heartbeat(last + ms(4600), Seq(2000));
        assert_eq!((d.mean(), d.std_deviation()), (ms(1000), ms(100)));
        // ... but one that ended below it is learned.
        let (mut d, last) = akka_history(100);
        d.heartbeat(last + ms(4400), Seq(2000));
        assert!(d.mean() > ms(1000));
        // set_available(true) takes a false back.
        let (mut d, last) = akka_history(100);
        d.set_available(false);
        d.set_available(true);
        d.heartbeat(last + ms(2000), Seq(2000));
        assert!(d.mean() > ms(1000));
    }

    #[test]
    fn window_follows_a_step_change() {
        let config = PhiConfig::default().window(10).unwrap();
        let mut d = PhiDetector::new(&config, ms(1000));
        let mut t = origin();
        d.heartbeat(t, Seq(1));
        for i in 0..10 {
            t += ms(1000);
            d.heartbeat(t, Seq(i + 2));
        }
        assert_eq!((d.mean(), d.std_deviation()), (ms(1000), Duration::ZERO));
        for i in 0..5 {
            t += ms(2000);
            d.heartbeat(t, Seq(i + 20));
        }
        assert_eq!(d.mean(), ms(1500));
        for i in 0..5 {
            t += ms(2000);
            d.heartbeat(t, Seq(i + 30));
        }
        assert_eq!((d.samples(), d.mean()), (10, ms(2000)));
        // A regular history is floored at the minimum deviation: 2 + 3 + 0.1 · 5.226 s.
        let secs = secs_since(t, d.reaches(8.0).unwrap());
        assert!((secs - 5.5226).abs() < 1e-4, "{secs}");
    }

    #[test]
    fn inverse_matches_forward_over_a_wide_range() {
        for level in [1e-6, 0.01, 0.301, 1.0, 8.0, 16.0, 100.0, 1e4] {
            let y = phi_inverse(level);
            let back = phi(y, 0.0, 1.0);
            assert!(
                (back - level).abs() <= 1e-9 * level.max(1.0),
                "{level}: {back}"
            );
        }
    }

    #[test]
    fn parameters_are_validated() {
        let c = PhiConfig::default();
        assert!(c.threshold(0.0).is_err());
        assert!(c.threshold(f64::NAN).is_err());
        assert!(c.threshold(f64::INFINITY).is_err());
        assert!(c.min_std_deviation(Span::Fixed(Duration::ZERO)).is_err());
        assert!(c.acceptable_pause(Span::Fixed(Duration::ZERO)).is_ok());
        assert!(c.acceptable_pause(Span::Intervals(f64::NAN)).is_err());
        assert!(c.window(0).is_err());
        assert!(c.window(super::super::MAX_WINDOW + 1).is_err());
        assert!(c.first_heartbeat_estimate(Span::Intervals(0.0)).is_err());
        assert_eq!(c.threshold(12.0).unwrap().levels(), Levels::halving(12.0));
    }
}
