//! Chen, Toueg and Aguilera's adaptive failure detector (NFD-E, IEEE TC 2002).

use std::fmt;
use std::time::{Duration, Instant};

use super::{
    DEFAULT_WINDOW, Detector, DetectorKind, Levels, Span, Window, check_window, clamp_nanos,
    reaches_with, signed_nanos, went_backwards,
};
use crate::error::ConfigError;
use crate::ids::Seq;

/// The levels of the Chen detector, in units of α past the expected arrival: suspect at Chen's
/// freshness point τ = EA + α, down one more α later.
pub(super) const LEVELS: Levels = Levels {
    suspect: 1.0,
    down: 2.0,
};

/// Parameters of the [`ChenDetector`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ChenConfig {
    alpha: Span,
    window: usize,
}

impl Default for ChenConfig {
    /// α = one interval, window 128: for a steady client, suspect about two intervals after the
    /// last heartbeat and down about three intervals after it, like the `fixed` defaults.
    fn default() -> Self {
        Self {
            alpha: Span::Intervals(1.0),
            window: DEFAULT_WINDOW,
        }
    }
}

impl ChenConfig {
    checked_setters! {
        /// The safety margin α added to the expected arrival time; positive. Default `1x`.
        alpha: Span = Span::positive("alpha");
        /// How many arrivals the estimate averages, Chen's `n` (1 to
        /// [`MAX_WINDOW`](super::MAX_WINDOW)). Default 250 ([`DEFAULT_WINDOW`](super::DEFAULT_WINDOW)).
        window: usize = check_window;
    }
}

impl fmt::Display for ChenConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "alpha={} window={}", self.alpha, self.window)
    }
}

/// Chen, Toueg and Aguilera's NFD-E: the expected arrival time of the next heartbeat,
/// estimated from the sequence numbers of the last `n`, plus a safety margin α.
///
/// With `A_i` the arrival time of heartbeat `i`, `η` the declared interval and `l` the highest
/// sequence number received, the next heartbeat is expected at
///
/// ```text
/// EA_{l+1} = (1/n) · Σ (A_i − η·i) + (l + 1)·η      (over the last n arrivals)
/// ```
///
/// Each term `A_i − η·i` is heartbeat `i`'s offset from the sender's schedule, so lost
/// heartbeats leave the estimate untouched and a steady client is expected right on its
/// schedule, however late the last heartbeat happened to be.
///
/// Suspicion is `max(0, now − EA_{l+1}) / α`: 1 at Chen's freshness point `τ = EA + α`
/// (suspect), 2 one α later (down). Because `EA` follows the schedule, suspicion can be above 0,
/// even above a level, right after a heartbeat that arrived late.
///
/// Sequence numbers matter here: a heartbeat with a sequence number already received is a
/// duplicate and is ignored altogether (it says nothing new about the schedule); one below the
/// highest received means the client restarted its count, and the estimate starts afresh from
/// it.
///
/// A heartbeat that arrives far *earlier* than its sequence number's place on the learned
/// schedule (by more than `max(10 η, 10 s)`) also starts the estimate afresh: heartbeats are
/// never sent before their slot, so its numbering has left the schedule (a sender that jumped
/// its counter), and learning it would push the expected arrival out of reach, so that the
/// client could never be declared down.
///
/// Every other arrival is learned, as in the paper, and [`set_available`](Detector::set_available)
/// has no effect: lost heartbeats cannot skew a sequence-number estimate, and a lasting change
/// of delay must be learned. (Leaving out late arrivals, as the φ detectors do with long
/// intervals, would make a delay that grew by more than 2α look like a failure forever.) The
/// price is that heartbeats held back by a network and then released in a burst count as delay
/// until they leave the window.
#[derive(Clone, Debug)]
pub struct ChenDetector {
    eta_ns: i64,
    alpha_ns: i64,
    /// Offsets `A_i − origin − η·(i − first_seq)` in nanoseconds.
    offsets: Window,
    /// The first heartbeat's arrival and sequence number; offsets are relative to it.
    origin: Option<(Instant, u64)>,
    /// `l − first_seq`.
    last_k: u64,
    last: Option<Instant>,
    /// `EA_{l+1} − origin` in nanoseconds.
    expected_ns: i128,
}

impl ChenDetector {
    /// A detector for a client that declared `interval` (Chen's η).
    pub fn new(config: &ChenConfig, interval: Duration) -> Self {
        Self {
            eta_ns: clamp_nanos(interval),
            alpha_ns: clamp_nanos(config.alpha.resolve(interval)).max(1),
            offsets: Window::new(config.window),
            origin: None,
            last_k: 0,
            last: None,
            expected_ns: 0,
        }
    }

    /// The expected arrival time of the next heartbeat, `EA_{l+1}`.
    pub fn expected_arrival(&self) -> Option<Instant> {
        let (origin, _) = self.origin?;
        super::offset(origin, self.expected_ns as f64)
    }

    /// Chen's freshness point `τ_{l+1} = EA_{l+1} + α`, where the client becomes suspect.
    pub fn freshness_point(&self) -> Option<Instant> {
        let (origin, _) = self.origin?;
        super::offset(
            origin,
            (self.expected_ns + i128::from(self.alpha_ns)) as f64,
        )
    }

    /// How many arrivals the estimate currently averages.
    pub fn samples(&self) -> usize {
        self.offsets.len()
    }

    fn restart(&mut self, now: Instant, seq: u64) {
        self.offsets.clear();
        self.origin = Some((now, seq));
        self.last_k = 0;
        self.offsets.push(0);
    }

    /// The mean offset of the window, in nanoseconds.
    fn mean_offset(&self) -> i128 {
        let n = self.offsets.len().max(1) as i128;
        self.offsets.sum().div_euclid(n)
    }

    /// How much earlier than the schedule a heartbeat may arrive before the estimate starts
    /// afresh: `max(10 η, 10 s)`.
    fn resync_ns(&self) -> i128 {
        (i128::from(self.eta_ns) * 10).max(10_000_000_000)
    }

    fn update_expected(&mut self) {
        let mean = self.mean_offset();
        let next = i128::from(self.last_k) + 1;
        self.expected_ns = mean + next * i128::from(self.eta_ns);
    }
}

impl Detector for ChenDetector {
    fn heartbeat(&mut self, now: Instant, seq: Seq) {
        if went_backwards(self.last, now) {
            return;
        }
        match self.origin {
            Some((origin, first)) if seq.0 >= first => {
                let k = seq.0 - first;
                if k == self.last_k {
                    return; // a duplicate: nothing new about the schedule
                }
                let offset = signed_nanos(origin, now) - i128::from(k) * i128::from(self.eta_ns);
                if k < self.last_k || offset < self.mean_offset() - self.resync_ns() {
                    self.restart(now, seq.0);
                } else {
                    let offset = offset.clamp(i128::from(i64::MIN), i128::from(i64::MAX));
                    self.offsets.push(offset as i64);
                    self.last_k = k;
                }
            }
            _ => self.restart(now, seq.0),
        }
        self.update_expected();
        self.last = Some(now);
    }

    fn suspicion(&self, now: Instant) -> f64 {
        let Some((origin, _)) = self.origin else {
            return 0.0;
        };
        let late = signed_nanos(origin, now) - self.expected_ns;
        late.max(0) as f64 / self.alpha_ns as f64
    }

    fn reaches(&self, level: f64) -> Option<Instant> {
        reaches_with(
            self.last,
            level,
            |t| self.suspicion(t),
            |_| {
                let (origin, _) = self.origin?;
                let at = self.expected_ns as f64 + level * self.alpha_ns as f64;
                super::offset(origin, at)
            },
        )
    }

    fn set_available(&mut self, _available: bool) {}

    fn kind(&self) -> DetectorKind {
        DetectorKind::Chen
    }

    fn levels(&self) -> Levels {
        LEVELS
    }

    fn last_heartbeat(&self) -> Option<Instant> {
        self.last
    }

    /// Down at `EA + margin`: α becomes `margin / 2`, so that the down level (2α) falls on the
    /// paper's freshness point `τ = EA + margin`, and the suspect level half-way to it.
    fn set_margin(&mut self, margin: Duration) -> bool {
        self.alpha_ns = (clamp_nanos(margin) / 2).max(1);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{ms, origin};
    use super::*;

    fn fixed_alpha(alpha_ms: u64, window: usize) -> ChenConfig {
        ChenConfig::default()
            .alpha(Span::Fixed(ms(alpha_ms)))
            .unwrap()
            .window(window)
            .unwrap()
    }

    /// A detector with `alpha_ms` and `window` for a 1 s interval, fed `(seq, ms after t0)`
    /// arrivals.
    fn fed(alpha_ms: u64, window: usize, t0: Instant, beats: &[(u64, u64)]) -> ChenDetector {
        let mut d = ChenDetector::new(&fixed_alpha(alpha_ms, window), ms(1000));
        for &(seq, at) in beats {
            d.heartbeat(t0 + ms(at), Seq(seq));
        }
        d
    }

    /// η = 1 s, α = 500 ms; heartbeat 4 lost, the others late by 0, 50, 10 and 30 ms:
    /// EA_6 = t0 + (0 + 50 + 10 + 30)/4 ms + 5 s = t0 + 5.0225 s, τ_6 = t0 + 5.5225 s.
    #[test]
    fn golden_expected_arrival_with_jitter_and_a_loss() {
        let t0 = origin();
        let d = fed(500, 1000, t0, &[(1, 0), (2, 1050), (3, 2010), (5, 4030)]);
        assert_eq!(d.samples(), 4);
        assert_eq!(
            d.expected_arrival(),
            Some(t0 + ms(5022) + Duration::from_micros(500))
        );
        let tau = t0 + ms(5522) + Duration::from_micros(500);
        assert_eq!(d.freshness_point(), Some(tau));
        assert_eq!(d.reaches(1.0), Some(tau));
        assert_eq!(d.suspicion(tau), 1.0);
        assert_eq!(d.suspicion(tau - ms(1)), 0.998);
        assert_eq!(d.reaches(2.0), Some(tau + ms(500)));
        assert_eq!(d.suspicion(t0 + ms(5000)), 0.0);
        // Had heartbeat 4 arrived on time (offset 0), only the mean would change:
        let e = fed(
            500,
            1000,
            t0,
            &[(1, 0), (2, 1050), (3, 2010), (4, 3000), (5, 4030)],
        );
        assert_eq!(e.expected_arrival(), Some(t0 + ms(5018)));
    }

    #[test]
    fn bootstrap_expects_the_next_heartbeat_one_interval_later() {
        let t0 = origin();
        let mut d = ChenDetector::new(&ChenConfig::default(), ms(1000));
        assert_eq!((d.expected_arrival(), d.reaches(1.0)), (None, None));
        d.heartbeat(t0, Seq(41));
        assert_eq!(d.expected_arrival(), Some(t0 + ms(1000)));
        assert_eq!(d.reaches(1.0), Some(t0 + ms(2000)));
        assert_eq!(d.reaches(2.0), Some(t0 + ms(3000)));
    }

    #[test]
    fn a_late_heartbeat_moves_the_schedule_by_its_share() {
        let t0 = origin();
        let d = fed(500, 4, t0, &[(1, 0), (2, 1000), (3, 2000), (4, 5000)]);
        // Offsets 0, 0, 0 and 2000 ms: EA_5 = 500 ms + 4 s, before the heartbeat that set it,
        // so the client is already suspect right after it, and down 500 ms later.
        assert_eq!(d.samples(), 4);
        assert_eq!(d.expected_arrival(), Some(t0 + ms(4500)));
        assert_eq!(d.suspicion(t0 + ms(5000)), 1.0);
        assert_eq!(d.reaches(1.0), Some(t0 + ms(5000)));
        assert_eq!(d.reaches(2.0), Some(t0 + ms(5500)));
    }

    #[test]
    fn availability_does_not_matter_and_held_heartbeats_count_as_delay() {
        let t0 = origin();
        let mut d = ChenDetector::new(&fixed_alpha(500, 1000), ms(1000));
        d.heartbeat(t0, Seq(1));
        d.heartbeat(t0 + ms(1000), Seq(2));
        d.set_available(false);
        // Seq 3 to 20 lost (no effect), 21 and 22 held back and released together at 23 s.
        d.heartbeat(t0 + ms(23_000), Seq(21));
        d.heartbeat(t0 + ms(23_000), Seq(22));
        assert_eq!(d.samples(), 4);
        // Offsets 0, 0, 3000, 2000 ms: EA_23 = 22 s + 1250 ms.
        assert_eq!(d.expected_arrival(), Some(t0 + ms(23_250)));
    }

    #[test]
    fn a_lasting_change_of_delay_is_learned() {
        let t0 = origin();
        let mut d = ChenDetector::new(&fixed_alpha(100, 5), ms(100));
        for seq in 1..=5 {
            d.heartbeat(t0 + ms(100 * seq), Seq(seq));
        }
        assert_eq!(d.expected_arrival(), Some(t0 + ms(600)));
        // From now on every heartbeat is 1.5 s later than the schedule: far past down (2α),
        // but after a window of arrivals it is the new normal.
        for seq in 6..=10 {
            d.heartbeat(t0 + ms(100 * seq + 1500), Seq(seq));
        }
        assert_eq!(d.expected_arrival(), Some(t0 + ms(2600)));
        assert_eq!(d.suspicion(t0 + ms(2500)), 0.0);
    }

    #[test]
    fn duplicates_are_ignored_and_restarts_start_afresh() {
        let t0 = origin();
        let mut d = ChenDetector::new(&fixed_alpha(500, 1000), ms(1000));
        d.heartbeat(t0, Seq(10));
        d.heartbeat(t0 + ms(1000), Seq(11));
        d.heartbeat(t0 + ms(1500), Seq(11));
        assert_eq!(d.last_heartbeat(), Some(t0 + ms(1000)));
        assert_eq!(d.samples(), 2);
        // The client restarted: seq 1 again.
        d.heartbeat(t0 + ms(1700), Seq(1));
        assert_eq!(d.samples(), 1);
        assert_eq!(d.expected_arrival(), Some(t0 + ms(2700)));
        d.heartbeat(t0 + ms(2700), Seq(2));
        assert_eq!(d.expected_arrival(), Some(t0 + ms(3700)));
        // Below the first sequence number ever seen is a restart too.
        d.heartbeat(t0 + ms(3000), Seq(0));
        assert_eq!(d.expected_arrival(), Some(t0 + ms(4000)));
    }

    /// A margin from a QoS target puts the down level on it: EA_2 = t0 + 1 s, margin 600 ms:
    /// down at t0 + 1.6 s, suspect at t0 + 1.3 s.
    #[test]
    fn a_margin_puts_down_at_the_expected_arrival_plus_it() {
        let t0 = origin();
        let mut d = ChenDetector::new(&ChenConfig::default(), ms(1000));
        d.heartbeat(t0, Seq(1));
        assert!(d.set_margin(ms(600)));
        assert_eq!(d.reaches(LEVELS.down), Some(t0 + ms(1600)));
        assert_eq!(d.reaches(LEVELS.suspect), Some(t0 + ms(1300)));
    }

    #[test]
    fn alpha_must_be_positive() {
        assert!(ChenConfig::default().alpha(Span::Intervals(0.0)).is_err());
        assert!(ChenConfig::default().alpha(Span::Fixed(ms(1))).is_ok());
        assert!(ChenConfig::default().window(0).is_err());
    }
}
