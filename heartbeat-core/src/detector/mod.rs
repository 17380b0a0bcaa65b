//! Failure detectors: from the arrival times of a client's heartbeats, how suspicious its
//! silence is now, and exactly when that suspicion will reach a given level.
//!
//! Four detectors share the [`Detector`] trait:
//!
//! | kind | suspicion value | suspect at | down at |
//! |---|---|---|---|
//! | [`fixed`](FixedDetector) | overdue time / grace | 0.5 | 1 |
//! | [`phi`](PhiDetector) | φ, normal inter-arrivals (Akka) | threshold / 2 | threshold (8) |
//! | [`phi-exp`](PhiExpDetector) | φ, exponential inter-arrivals (Cassandra) | threshold / 2 | threshold (8) |
//! | [`chen`](ChenDetector) | (now − expected arrival) / α (Chen, Toueg, Aguilera) | 1 | 2 |
//!
//! In every detector the suspect level is half the down level ([`Levels`]). For the φ
//! detectors that is the square root of the down level's mistake probability (10⁻⁴ against
//! 10⁻⁸ with the default threshold); for `fixed` it is halfway through the grace; for `chen`
//! the suspect level is Chen's own freshness point τ = EA + α and down is one more α later.
//!
//! # Sans-IO
//! Detectors read no clock: every call that depends on time takes `now`, a monotonic
//! [`Instant`]. They are deterministic: the same calls give the same answers, bit for bit, on
//! one platform. Each heartbeat costs O(1): histories are ring buffers with running integer
//! sums (nanoseconds), so they never drift and never re-scan the window.
//!
//! # Use in a server
//! ```
//! use std::time::{Duration, Instant};
//! use heartbeat_core::Seq;
//! use heartbeat_core::detector::{DetectorConfig, DetectorKind};
//!
//! # #[allow(clippy::disallowed_methods)]
//! let t0 = Instant::now(); // the driver's clock; the core never reads one
//! let config = DetectorConfig::new(DetectorKind::Phi);
//! let mut detector = config.build(Duration::from_secs(1)); // the client's declared interval
//! detector.heartbeat(t0, Seq(1));
//! let levels = detector.levels();
//! // Arm one timer for the next transition instead of polling:
//! let suspect_at = detector.reaches(levels.suspect).unwrap();
//! let down_at = detector.reaches(levels.down).unwrap();
//! assert!(t0 < suspect_at && suspect_at < down_at);
//! assert!(detector.suspicion(down_at) >= levels.down);
//! // When the server declares the client down, the interval across the outage is not learned:
//! detector.set_available(false);
//! ```

/// Builder setters that check their value before storing it in the field of the same name.
/// Each `/// docs` + `name: Type = check;` becomes
/// `pub fn name(self, value: Type) -> Result<Self, ConfigError>`, where `check` is a
/// `Fn(Type) -> Result<Type, ConfigError>`.
macro_rules! checked_setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty = $check:expr;)+) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, value: $ty) -> Result<Self, ConfigError> {
                self.$name = $check(value)?;
                Ok(self)
            }
        )+
    };
}

mod by_client;
mod chen;
mod fixed;
mod params;
mod phi;
mod phi_exp;
mod span;
pub mod target;
mod window;

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::ConfigError;
use crate::ids::Seq;

pub use by_client::{ClientDetectors, ClientRule, glob_matches};
pub use chen::{ChenConfig, ChenDetector};
pub use fixed::{FixedConfig, FixedDetector};
pub use params::{Param, ParamValues};
pub use phi::{PhiConfig, PhiDetector};
pub use phi_exp::{PhiExpConfig, PhiExpDetector};
pub use span::Span;
pub use target::{Configured, QosTarget, configure};
pub use window::{DEFAULT_WINDOW, MAX_WINDOW};
use window::{Window, check_window, clamp_nanos};

/// A failure detector for one client: it learns from heartbeat arrivals and says how
/// suspicious the silence since the last one is.
///
/// Object safe: a server keeps a `Box<dyn Detector>` per client, built by
/// [`DetectorConfig::build`].
///
/// # Contract
/// - [`suspicion`](Self::suspicion) is 0 before the first heartbeat, never negative or NaN,
///   and does not decrease as `now` advances with no further heartbeat.
/// - [`reaches`](Self::reaches) inverts it: `suspicion(reaches(l)?) >= l` always holds
///   (exactly, in `f64`), and no earlier instant since the last heartbeat reaches `l` (to
///   within a microsecond), so a timer armed at `reaches(levels().down)` finds the detector
///   at or above the down level when it fires.
/// - A heartbeat may move both in any direction, so re-read `reaches` after each one. It does
///   not always bring suspicion back below the suspect level: `chen` expects heartbeats on the
///   sender's schedule, so right after a late one `reaches` can return that heartbeat's instant.
pub trait Detector: fmt::Debug + Send {
    /// A heartbeat with sequence number `seq` arrived at monotonic time `now`.
    ///
    /// Same-instant heartbeats, gaps of any length and sequence numbers that repeat or go
    /// backwards are all accepted (see each detector for what it makes of them). `now` earlier
    /// than the previous heartbeat is a caller bug: it asserts in debug builds and is ignored
    /// otherwise.
    fn heartbeat(&mut self, now: Instant, seq: Seq);

    /// The suspicion level at `now`, on the detector's own scale (see [`Levels`]); 0 before
    /// the first heartbeat.
    fn suspicion(&self, now: Instant) -> f64;

    /// The earliest instant at which [`suspicion`](Self::suspicion) reaches `level` if no
    /// further heartbeat arrives.
    ///
    /// The last heartbeat's instant if the level is already reached then. `None` before the
    /// first heartbeat, for a NaN or infinite level, and when the instant would not be
    /// representable.
    fn reaches(&self, level: f64) -> Option<Instant>;

    /// Tells the detector whether the client is currently considered available.
    ///
    /// Call it with `false` when the client is declared down (or when the monitor cannot vouch
    /// for the current interval, e.g. after a stall of its own). The next heartbeat is then a
    /// new start: the interval it closes is not added to the history, so an outage does not
    /// skew what the detector learned. That heartbeat makes the client available again, so
    /// calling it with `true` is only needed to take the `false` back.
    ///
    /// `fixed` has no history and `chen` learns offsets from sequence numbers, which lost
    /// heartbeats cannot skew (see [`ChenDetector`] for why it learns even late ones), so both
    /// ignore this call. Independently of it, the φ detectors also leave out an
    /// interval when their suspicion had reached the down level at its end, as Akka does.
    fn set_available(&mut self, available: bool);

    /// Which detector this is.
    fn kind(&self) -> DetectorKind;

    /// The suspect and down levels on this detector's suspicion scale.
    fn levels(&self) -> Levels;

    /// The instant of the last heartbeat that counted, `None` before the first.
    fn last_heartbeat(&self) -> Option<Instant>;

    /// Declares the client down `margin` after the expected arrival of its next heartbeat
    /// (Chen's freshness point, set from a quality-of-service target: see [`target`]). True
    /// when the detector took it: only `chen` does; the others ignore it.
    fn set_margin(&mut self, margin: Duration) -> bool {
        let _ = margin;
        false
    }
}

/// The two levels a detector's suspicion is compared with.
///
/// Every detector puts the suspect level at half its down level.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Levels {
    /// At or above this level the client is suspected: late, but not yet declared dead.
    pub suspect: f64,
    /// At or above this level the client is declared down.
    pub down: f64,
}

impl Levels {
    /// Levels with the suspect level at half of `down`.
    pub fn halving(down: f64) -> Self {
        Self {
            suspect: down / 2.0,
            down,
        }
    }
}

/// The kinds of detector, as named on the command line (`--detector`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum DetectorKind {
    /// `chen`: Chen, Toueg and Aguilera's NFD-E, expected arrival from sequence numbers plus a
    /// safety margin α.
    Chen,
    /// `fixed`: down after a fixed silence of interval + grace.
    Fixed,
    /// `phi`: the φ accrual detector with normally distributed inter-arrival times, compatible
    /// with Akka's.
    Phi,
    /// `phi-exp`: Cassandra's φ with exponentially distributed inter-arrival times.
    PhiExp,
}

impl DetectorKind {
    /// Every kind, in alphabetical order.
    pub const ALL: [Self; 4] = [Self::Chen, Self::Fixed, Self::Phi, Self::PhiExp];

    /// The command-line name: `chen`, `fixed`, `phi` or `phi-exp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Chen => "chen",
            Self::Fixed => "fixed",
            Self::Phi => "phi",
            Self::PhiExp => "phi-exp",
        }
    }
}

impl fmt::Display for DetectorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DetectorKind {
    type Err = ConfigError;

    /// Parses a command-line name, ignoring ASCII case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or(ConfigError::Detector {
                name: "detector",
                why: "expected one of chen, fixed, phi, phi-exp",
            })
    }
}

impl Serialize for DetectorKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Which detector to run for each client, with its parameters; validated when built.
///
/// A server holds one and calls [`build`](Self::build) with each client's declared interval.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum DetectorConfig {
    /// Chen, Toueg and Aguilera's NFD-E.
    Chen(ChenConfig),
    /// A fixed silence.
    Fixed(FixedConfig),
    /// Akka's φ accrual detector.
    Phi(PhiConfig),
    /// Cassandra's exponential φ.
    PhiExp(PhiExpConfig),
}

impl DetectorConfig {
    /// The default parameters of `kind`.
    pub fn new(kind: DetectorKind) -> Self {
        match kind {
            DetectorKind::Chen => Self::Chen(ChenConfig::default()),
            DetectorKind::Fixed => Self::Fixed(FixedConfig::default()),
            DetectorKind::Phi => Self::Phi(PhiConfig::default()),
            DetectorKind::PhiExp => Self::PhiExp(PhiExpConfig::default()),
        }
    }

    /// Which detector this configures.
    pub fn kind(&self) -> DetectorKind {
        match self {
            Self::Chen(_) => DetectorKind::Chen,
            Self::Fixed(_) => DetectorKind::Fixed,
            Self::Phi(_) => DetectorKind::Phi,
            Self::PhiExp(_) => DetectorKind::PhiExp,
        }
    }

    /// The suspect and down levels the built detectors will report.
    pub fn levels(&self) -> Levels {
        match self {
            Self::Chen(_) => chen::LEVELS,
            Self::Fixed(_) => fixed::LEVELS,
            Self::Phi(c) => c.levels(),
            Self::PhiExp(c) => c.levels(),
        }
    }

    /// A fresh detector for a client that declared heartbeats every `interval`.
    pub fn build(&self, interval: Duration) -> Box<dyn Detector> {
        match self {
            Self::Chen(c) => Box::new(ChenDetector::new(c, interval)),
            Self::Fixed(c) => Box::new(FixedDetector::new(c, interval)),
            Self::Phi(c) => Box::new(PhiDetector::new(c, interval)),
            Self::PhiExp(c) => Box::new(PhiExpDetector::new(c, interval)),
        }
    }
}

impl Default for DetectorConfig {
    /// The Akka-compatible φ detector with its defaults.
    fn default() -> Self {
        Self::new(DetectorKind::Phi)
    }
}

impl fmt::Display for DetectorConfig {
    /// The kind and every parameter, e.g. `fixed grace=2x`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind())?;
        match self {
            Self::Chen(c) => write!(f, " {c}"),
            Self::Fixed(c) => write!(f, " {c}"),
            Self::Phi(c) => write!(f, " {c}"),
            Self::PhiExp(c) => write!(f, " {c}"),
        }
    }
}

impl From<ChenConfig> for DetectorConfig {
    fn from(c: ChenConfig) -> Self {
        Self::Chen(c)
    }
}

impl From<FixedConfig> for DetectorConfig {
    fn from(c: FixedConfig) -> Self {
        Self::Fixed(c)
    }
}

impl From<PhiConfig> for DetectorConfig {
    fn from(c: PhiConfig) -> Self {
        Self::Phi(c)
    }
}

impl From<PhiExpConfig> for DetectorConfig {
    fn from(c: PhiExpConfig) -> Self {
        Self::PhiExp(c)
    }
}

fn check_threshold(threshold: f64) -> Result<f64, ConfigError> {
    if !(threshold.is_finite() && threshold > 0.0) {
        return Err(ConfigError::Detector {
            name: "threshold",
            why: "must be a positive finite number",
        });
    }
    Ok(threshold)
}

/// Nanoseconds as a `Duration`, rounded to the nearest; negative and NaN give zero.
fn nanos_to_duration(nanos: f64) -> Duration {
    if nanos >= u64::MAX as f64 {
        Duration::from_nanos(u64::MAX)
    } else if nanos > 0.0 {
        Duration::from_nanos(nanos.round() as u64)
    } else {
        Duration::ZERO
    }
}

/// `to − from` in nanoseconds, negative when `to` is earlier.
fn signed_nanos(from: Instant, to: Instant) -> i128 {
    if to >= from {
        i128::try_from(to.duration_since(from).as_nanos()).unwrap_or(i128::MAX)
    } else {
        -i128::try_from(from.duration_since(to).as_nanos()).unwrap_or(i128::MAX)
    }
}

/// `base + nanos`, rounded up to the next nanosecond; `None` if NaN or not representable.
fn offset(base: Instant, nanos: f64) -> Option<Instant> {
    if nanos.is_nan() {
        return None;
    }
    if nanos <= 0.0 {
        return if nanos > -(u64::MAX as f64) {
            base.checked_sub(Duration::from_nanos((-nanos).floor() as u64))
        } else {
            None
        };
    }
    let ns = nanos.ceil();
    if ns >= u64::MAX as f64 {
        return None;
    }
    base.checked_add(Duration::from_nanos(ns as u64))
}

/// Moves a computed crossing time forward by a few nanoseconds if rounding left it just short of
/// `level`, so that `suspicion(reaches(level)) >= level` holds exactly.
fn settle(suspicion: impl Fn(Instant) -> f64, mut t: Instant, level: f64) -> Option<Instant> {
    let mut step = 1u64;
    for _ in 0..64 {
        if suspicion(t) >= level {
            return Some(t);
        }
        t = t.checked_add(Duration::from_nanos(step))?;
        step = step.saturating_mul(2);
    }
    None
}

/// The shared part of `reaches`: `None` before a heartbeat or for a NaN/infinite level, the last
/// heartbeat if the level is reached there already, else `solve(level)` settled.
fn reaches_with(
    last: Option<Instant>,
    level: f64,
    suspicion: impl Fn(Instant) -> f64,
    solve: impl FnOnce(Instant) -> Option<Instant>,
) -> Option<Instant> {
    let last = last?;
    if !level.is_finite() {
        return None;
    }
    if level <= 0.0 {
        return Some(last);
    }
    // If the level was reached at `last` already, `solve` gives `last` or earlier and `settle`
    // confirms it with one evaluation.
    let t = solve(last)?.max(last);
    settle(suspicion, t, level)
}

/// Rejects a heartbeat earlier than the previous one (a caller bug).
fn went_backwards(last: Option<Instant>, now: Instant) -> bool {
    let back = last.is_some_and(|last| now < last);
    debug_assert!(!back, "heartbeat time went backwards");
    if back {
        tracing::error!("detector: heartbeat time went backwards; ignored");
    }
    back
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    pub(super) fn origin() -> Instant {
        crate::Now::test_origin().mono
    }

    pub(super) fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    pub(super) fn secs_since(t0: Instant, t: Instant) -> f64 {
        t.duration_since(t0).as_secs_f64()
    }

    #[test]
    fn kind_names_round_trip() {
        for kind in DetectorKind::ALL {
            assert_eq!(kind.to_string().parse::<DetectorKind>(), Ok(kind));
            assert_eq!(DetectorConfig::new(kind).kind(), kind);
            assert_eq!(DetectorConfig::new(kind).build(ms(1000)).kind(), kind);
        }
        assert_eq!("PHI-EXP".parse(), Ok(DetectorKind::PhiExp));
        assert!("phi_exp".parse::<DetectorKind>().is_err());
        assert_eq!(
            serde_json::to_string(&DetectorKind::PhiExp).unwrap(),
            "\"phi-exp\""
        );
    }

    #[test]
    fn default_configs_display_every_parameter() {
        let shown: Vec<String> = DetectorKind::ALL
            .into_iter()
            .map(|k| DetectorConfig::new(k).to_string())
            .collect();
        assert_eq!(
            shown,
            [
                "chen alpha=1x window=128",
                "fixed grace=2x",
                "phi threshold=8 min-std-deviation=100ms acceptable-pause=3s window=128 \
                 first-heartbeat-estimate=1x",
                "phi-exp threshold=8 window=128 initial-interval=2x",
            ]
        );
        assert_eq!(DetectorConfig::default().kind(), DetectorKind::Phi);
    }

    #[test]
    fn levels_put_suspect_at_half_of_down() {
        let levels: Vec<Levels> = DetectorKind::ALL
            .into_iter()
            .map(|k| DetectorConfig::new(k).levels())
            .collect();
        assert_eq!(
            levels,
            [
                Levels {
                    suspect: 1.0,
                    down: 2.0
                },
                Levels {
                    suspect: 0.5,
                    down: 1.0
                },
                Levels {
                    suspect: 4.0,
                    down: 8.0
                },
                Levels {
                    suspect: 4.0,
                    down: 8.0
                },
            ]
        );
        for kind in DetectorKind::ALL {
            let config = DetectorConfig::new(kind);
            assert_eq!(config.build(ms(100)).levels(), config.levels());
        }
    }

    #[test]
    fn offset_rounds_up_and_refuses_the_unrepresentable() {
        let t0 = origin();
        assert_eq!(offset(t0, 1.2), Some(t0 + Duration::from_nanos(2)));
        assert_eq!(offset(t0, 0.0), Some(t0));
        assert_eq!(offset(t0, f64::NAN), None);
        assert_eq!(offset(t0, f64::INFINITY), None);
        assert_eq!(offset(t0, 1e30), None);
    }

    /// Odd input for every detector: same-instant bursts, repeated, backward and huge sequence
    /// numbers, enormous gaps, odd levels and intervals. Nothing may panic or produce NaN.
    #[test]
    fn nothing_panics_on_odd_input() {
        let t0 = origin();
        let intervals = [
            Duration::ZERO,
            Duration::from_nanos(1),
            ms(1000),
            Duration::MAX,
        ];
        let levels = [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -1.0,
            0.0,
            1e-300,
            0.5,
            8.0,
            1e6,
            1e300,
            f64::MAX,
        ];
        for kind in DetectorKind::ALL {
            for interval in intervals {
                let mut d = DetectorConfig::new(kind).build(interval);
                assert_eq!(d.suspicion(t0), 0.0);
                assert_eq!(d.reaches(1.0), None);
                let mut t = t0;
                let seqs = [1, 1, 2, 2, 0, u64::MAX, 3, 1, u64::MAX, u64::MAX - 1, 5];
                for (i, seq) in seqs.into_iter().enumerate() {
                    if i % 3 == 0 {
                        d.set_available(i % 2 == 0);
                    }
                    d.heartbeat(t, Seq(seq));
                    for probe in [Duration::ZERO, ms(1), ms(10_000_000), Duration::MAX] {
                        if let Some(at) = t.checked_add(probe) {
                            let s = d.suspicion(at);
                            assert!(!s.is_nan() && s >= 0.0, "{kind} {interval:?} {s}");
                        }
                    }
                    for level in levels {
                        if let Some(at) = d.reaches(level) {
                            assert!(d.suspicion(at) >= level, "{kind} {level}");
                        }
                    }
                    if i == 4 {
                        t += ms(1_000_000_000); // 11.6 days of silence
                    }
                }
                for _ in 0..2000 {
                    d.heartbeat(t, Seq(7)); // a same-instant burst, longer than the window
                }
                let s = d.suspicion(t + ms(1));
                assert!(!s.is_nan() && s >= 0.0);
            }
        }
    }

    fn small_window(kind: DetectorKind, window: usize) -> DetectorConfig {
        match kind {
            DetectorKind::Chen => ChenConfig::default().window(window).unwrap().into(),
            DetectorKind::Phi => PhiConfig::default().window(window).unwrap().into(),
            DetectorKind::PhiExp => PhiExpConfig::default().window(window).unwrap().into(),
            _ => DetectorConfig::new(kind),
        }
    }

    /// A sequence number an attacker might send: repeats, backwards, zero, the wire's maximum,
    /// beyond it, and jumps of any size.
    fn hostile_seq() -> impl Strategy<Value = u64> {
        prop_oneof![
            Just(0u64),
            Just(1),
            Just(crate::frame::MAX_SEQ),
            Just(u64::MAX),
            0u64..=20,
            any::<u64>(),
        ]
    }

    /// A gap between heartbeats: none, tiny, ordinary, a day, a month.
    fn hostile_gap() -> impl Strategy<Value = Duration> {
        prop_oneof![
            Just(Duration::ZERO),
            Just(Duration::from_nanos(1)),
            (0u64..=3000).prop_map(ms),
            Just(Duration::from_secs(86_400)),
            Just(Duration::from_secs(30 * 86_400)),
        ]
    }

    proptest! {
        /// Detectors keep working after any input: after hostile sequence numbers and times,
        /// every detector still has a next level to reach (a timer to arm), and after a steady
        /// client fills its window again it convicts a silence within a bounded time, as it
        /// did before. (Chen once expected a client that had jumped its counter to 2⁶³ never.)
        #[test]
        fn detectors_keep_working_after_hostile_input(
            kind in prop::sample::select(DetectorKind::ALL.to_vec()),
            hostile in prop::collection::vec((hostile_seq(), hostile_gap(), any::<bool>()), 1..40),
        ) {
            let interval = ms(1000);
            let window = 8;
            let mut d = small_window(kind, window).build(interval);
            let mut t = origin();
            for (seq, gap, available) in hostile {
                t += gap;
                d.set_available(available);
                d.heartbeat(t, Seq(seq));
                let level = d.levels().down;
                prop_assert!(d.reaches(level).is_some(), "{} lost its timer", kind);
                let s = d.suspicion(t + interval);
                prop_assert!(s.is_finite() && s >= 0.0);
            }
            for seq in 1..=(3 * window as u64) {
                t += interval;
                d.heartbeat(t, Seq(seq));
            }
            let down = d.reaches(d.levels().down);
            prop_assert!(down.is_some());
            let after = down.unwrap().duration_since(t);
            prop_assert!(after <= 20 * interval, "{} down {:?} after the last heartbeat", kind, after);
        }

        /// `reaches` inverts `suspicion`, and suspicion never falls while time passes, over
        /// random histories (jitter, losses, duplicates, outages) and levels.
        #[test]
        fn reaches_inverts_suspicion(
            kind in prop::sample::select(DetectorKind::ALL.to_vec()),
            interval_ms in 1u64..=5000,
            window in 1usize..40,
            beats in prop::collection::vec((0u64..=6000, 0u64..=3, 0u8..10), 0..60),
            levels in prop::collection::vec(0.01f64..40.0, 1..6),
            probes in prop::collection::vec(0u64..=200_000, 1..10),
        ) {
            let interval = ms(interval_ms);
            let mut d = small_window(kind, window).build(interval);
            let t0 = origin();
            let mut t = t0;
            let mut seq = 1;
            for (gap_permille, seq_step, down) in beats {
                t += interval * u32::try_from(gap_permille).unwrap() / 1000;
                seq += seq_step;
                if down == 0 {
                    d.set_available(false);
                }
                d.heartbeat(t, Seq(seq));
            }
            let Some(last) = d.last_heartbeat() else {
                prop_assert_eq!(d.reaches(1.0), None);
                return Ok(());
            };
            for level in levels {
                let at = d.reaches(level);
                prop_assert!(at.is_some());
                let at = at.unwrap();
                prop_assert!(at >= last);
                let s = d.suspicion(at);
                prop_assert!(s >= level);
                if at > last {
                    prop_assert!(s <= level * 1.001, "{} overshoots {}", s, level);
                    let before = at.checked_sub(Duration::from_micros(1)).filter(|b| *b >= last);
                    if let Some(before) = before {
                        prop_assert!(d.suspicion(before) < level);
                    }
                }
            }
            let mut probes = probes;
            probes.sort_unstable();
            let mut prev = d.suspicion(last);
            for p in probes {
                let s = d.suspicion(last + ms(p));
                prop_assert!(s.is_finite() && s >= prev, "{} then {}", prev, s);
                prev = s;
            }
        }
    }
}
