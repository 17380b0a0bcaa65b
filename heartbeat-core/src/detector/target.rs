//! A detector configured by its quality of service: Chen, Toueg and Aguilera's configuration
//! procedure for NFD-E when the delay distribution is not known ("On the Quality of Service of
//! Failure Detectors", IEEE Transactions on Computers 51(5), May 2002).
//!
//! The operator says what detection they need ([`QosTarget`]: detect a crash within `T_D^U`,
//! make a mistake at most every `T_MR^L` on average, and optionally correct a mistake within
//! `T_M^U` on average); [`configure`] turns that, the client's interval `η` and two numbers the
//! server measures per client (the loss probability `p_L` and the variance of the one-way delay
//! `V(D)`) into Chen's safety margin `α`, and says whether the target is reachable at that
//! interval and, if not, the longest interval that would reach it.
//!
//! # The procedure
//! From the paper's section on configuring the detector when the delay distribution is not
//! known (NFD-U, used by NFD-E with the estimated expected arrival). **Unverified:** only the
//! paper's abstract could be read from this workplace, so no section or theorem number is
//! cited; the steps below are checked by derivation instead (each factor of `f` is the
//! inverse of the Cantelli bound on one heartbeat's lateness, `γ'` the probability bound of a
//! heartbeat arriving within `T_D^U`), and by the hand-computed cases in the tests.
//!
//! With only `p_L` and `V(D)` known, the one-sided Chebyshev (Cantelli) inequality
//! `Pr(D − E(D) > t) ≤ V(D) / (V(D) + t²)` bounds the probability that a heartbeat sent `t`
//! before its freshness point (beyond its expected delay) has not arrived by it:
//! `p_L + (1 − p_L)·V/(V + t²) = (V + p_L·t²) / (V + t²)`. The procedure is:
//!
//! 1. `γ' = (1 − p_L)·(T_D^U)² / (V(D) + (T_D^U)²)` (a lower bound on the probability that a
//!    heartbeat arrives within `T_D^U`), and `η_max = min(γ'·T_M^U, T_D^U)` (`T_D^U` alone
//!    without a mistake-duration target: `E(T_M) ≤ η/γ'`).
//! 2. `f(η) = η · Π_{j=1}^{⌈T_D^U/η⌉−1} (V(D) + (T_D^U − jη)²) / (V(D) + p_L·(T_D^U − jη)²)`,
//!    a lower bound on `E(T_MR)` with `α = T_D^U − η`: each factor is the inverse of the bound
//!    above for the `j`-th heartbeat before the freshness point, `t = α − (j − 1)η`. Find the
//!    largest `η ≤ η_max` with `f(η) ≥ T_MR^L`.
//! 3. `α = T_D^U − η`.
//!
//! Here `η` is the client's own interval, so step 2 becomes a check (`η ≤ η_max` and
//! `f(η) ≥ T_MR^L`), and the search for the largest interval is the advice.
//!
//! # What `T_D` means here
//! The freshness point `τ = EA + α` of the paper is where the server declares the client
//! *down* (see [`ChenDetector::set_margin`](super::ChenDetector)): down comes at most
//! `η + α = T_D^U` after the expected arrival of the last heartbeat, which is `T_D^U` after
//! that heartbeat arrived for a heartbeat on its usual schedule (the paper counts from the
//! crash, so it adds the mean delay `E(D)`, which unsynchronised clocks cannot measure).

use std::fmt;
use std::time::Duration;

use crate::error::ConfigError;
use crate::units::fmt_duration;

/// The shortest interval ever advised, and the shortest `T_D^U / η` steps considered: the
/// search looks at intervals of at least `max(1 ms, T_D^U / MAX_TERMS)`.
pub const MIN_ADVISED_INTERVAL: Duration = Duration::from_millis(1);

/// At most this many factors of `f` are multiplied: for an interval below `T_D^U / MAX_TERMS`
/// the rest are left out, which only makes `f` smaller (each factor is at least 1), so the
/// answer stays on the safe side.
const MAX_TERMS: u64 = 1000;

/// Each step of the search for the longest interval shrinks it by this factor before the
/// boundary is refined by bisection.
const SEARCH_RATIO: f64 = 0.97;

/// Bisection steps that refine the longest interval between two grid points (2⁻¹⁶ of 3%).
const REFINE_STEPS: u32 = 16;

/// The quality of service an operator asks of the detection of every client: Chen, Toueg and
/// Aguilera's `T_D^U`, `T_MR^L` and (optionally) `T_M^U`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QosTarget {
    detection: Duration,
    mistake_every: Duration,
    mistake_duration: Option<Duration>,
}

impl QosTarget {
    /// A target: detect a crash within `detection` (`T_D^U`), make a mistake at most every
    /// `mistake_every` on average (`T_MR^L`) and, if given, correct one within
    /// `mistake_duration` on average (`T_M^U`). Each must be positive.
    pub fn new(
        detection: Duration,
        mistake_every: Duration,
        mistake_duration: Option<Duration>,
    ) -> Result<Self, ConfigError> {
        let positive = |d: Duration, name| {
            if d.is_zero() {
                Err(ConfigError::Zero { name })
            } else {
                Ok(d)
            }
        };
        Ok(Self {
            detection: positive(detection, "target detection time")?,
            mistake_every: positive(mistake_every, "target mistake recurrence time")?,
            mistake_duration: mistake_duration
                .map(|d| positive(d, "target mistake duration"))
                .transpose()?,
        })
    }

    /// `T_D^U`: the longest time from a crash to the client being declared down.
    pub fn detection(&self) -> Duration {
        self.detection
    }

    /// `T_MR^L`: the shortest mean time between two mistakes (a live client declared down).
    pub fn mistake_every(&self) -> Duration {
        self.mistake_every
    }

    /// `T_M^U`: the longest mean duration of a mistake, if one was asked for.
    pub fn mistake_duration(&self) -> Option<Duration> {
        self.mistake_duration
    }
}

impl fmt::Display for QosTarget {
    /// `detection=3s mistake_every=30d`, plus `mistake_duration=...` when set.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "detection={} mistake_every={}",
            fmt_duration(self.detection),
            fmt_duration(self.mistake_every)
        )?;
        if let Some(d) = self.mistake_duration {
            write!(f, " mistake_duration={}", fmt_duration(d))?;
        }
        Ok(())
    }
}

/// What [`configure`] decided for one client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Configured {
    /// True when the target is reachable at the client's interval with the measured network.
    pub reachable: bool,
    /// Chen's safety margin `α`: the client is declared down `α` after the expected arrival
    /// of its next heartbeat. `T_D^U − η` whenever the interval is below `T_D^U` (reachable
    /// or not: detection is kept, mistakes are what the target then misses); two intervals
    /// (the `chen` detector's default) when the interval is not below `T_D^U`.
    pub alpha: Duration,
    /// When not reachable: the longest interval that would reach the target (rounded down to
    /// the millisecond when that still reaches it); `None` when reachable, or when no interval of at least
    /// [`MIN_ADVISED_INTERVAL`] would.
    pub advised_interval: Option<Duration>,
}

/// The measured network, sanitised: a loss probability in `[0, 1]` (NaN: 1) and a delay
/// variance in s² that is finite and not negative (NaN or infinite: infinite, taken as
/// "anything can be late").
#[derive(Clone, Copy, Debug)]
struct Network {
    loss: f64,
    variance: f64,
}

impl Network {
    fn new(loss: f64, variance: f64) -> Self {
        let loss = if loss.is_nan() {
            1.0
        } else {
            loss.clamp(0.0, 1.0)
        };
        let variance = if variance.is_nan() {
            f64::INFINITY
        } else {
            variance.max(0.0)
        };
        Self { loss, variance }
    }

    /// Step 1: `γ'`.
    fn gamma(&self, td: f64) -> f64 {
        if self.variance.is_infinite() {
            return 0.0;
        }
        let g = (1.0 - self.loss) * td * td / (self.variance + td * td);
        if g.is_finite() { g } else { 0.0 }
    }

    /// `ln f(η)` (step 2) with `η` and `T_D^U` in nanoseconds, stopping early once it reaches
    /// `stop` (what the caller compares it with), so a long product is cut short.
    fn ln_f(&self, eta_ns: u64, td_ns: u64, stop: f64) -> f64 {
        let eta = eta_ns as f64 / 1e9;
        let mut ln = eta.ln();
        if ln >= stop || self.variance.is_infinite() {
            return ln; // every factor is 1
        }
        // ⌈T_D/η⌉ − 1 in integers: the j with T_D − jη > 0.
        let terms = ((td_ns - 1) / eta_ns).min(MAX_TERMS);
        let v = self.variance;
        for j in 1..=terms {
            let t = (td_ns - j * eta_ns) as f64 / 1e9;
            let t2 = t * t;
            let num = v + t2;
            let den = v + self.loss * t2;
            if den <= 0.0 {
                return f64::INFINITY; // no loss and no jitter: this heartbeat is never late
            }
            ln += num.ln() - den.ln();
            if ln >= stop {
                return ln;
            }
        }
        ln
    }
}

/// Chen, Toueg and Aguilera's configuration procedure for a client with interval `interval`
/// (`η`), loss probability `loss` (`p_L`) and one-way delay variance `delay_variance`
/// (`V(D)`, in seconds squared): the margin `α` to use, whether `target` is reachable, and if
/// not the longest interval that would reach it. See the [module docs](self) for the steps.
///
/// Never panics: a loss outside `[0, 1]` is clamped (NaN counts as 1), a negative variance is
/// 0 and a NaN or infinite one makes every target unreachable. The search for the longest
/// interval looks at intervals from `η_max` down to `max(1 ms, T_D^U / 1000)`, shrinking by 3%
/// a step, and refines the first that reaches the target against the one before by
/// bisection; it costs at most a few hundred thousand multiplications, and usually far fewer
/// (the product stops as soon as it reaches `T_MR^L`).
pub fn configure(
    target: &QosTarget,
    loss: f64,
    delay_variance: f64,
    interval: Duration,
) -> Configured {
    let net = Network::new(loss, delay_variance);
    let td_ns = nanos(target.detection).max(1);
    let td = td_ns as f64 / 1e9;
    let eta_ns = nanos(interval).max(1);
    let ln_tmr = target.mistake_every.as_secs_f64().ln();
    let gamma = net.gamma(td);
    let eta_max = match target.mistake_duration {
        Some(tm) => (gamma * tm.as_secs_f64()).min(td),
        None => td,
    };
    let eta_max_ns = (eta_max * 1e9) as u64; // saturating; NaN is impossible (γ' is finite)
    let reaches = |eta_ns: u64| {
        eta_ns < td_ns && eta_ns <= eta_max_ns && net.ln_f(eta_ns, td_ns, ln_tmr) >= ln_tmr
    };
    let reachable = reaches(eta_ns);
    let alpha = if eta_ns < td_ns {
        Duration::from_nanos(td_ns - eta_ns)
    } else {
        interval.saturating_mul(2)
    };
    let advised_interval = if reachable {
        None
    } else {
        longest_reaching(eta_max_ns.min(td_ns - 1), td_ns, reaches)
    };
    Configured {
        reachable,
        alpha,
        advised_interval,
    }
}

/// The longest interval from `top` down to the search floor for which `reaches` holds, rounded
/// down to the millisecond; `None` if none does.
fn longest_reaching(top: u64, td_ns: u64, reaches: impl Fn(u64) -> bool) -> Option<Duration> {
    let floor = nanos(MIN_ADVISED_INTERVAL).max(td_ns / MAX_TERMS);
    if top < floor {
        return None;
    }
    let mut above = None; // the grid point before, which did not reach it
    let mut eta = top;
    let found = loop {
        if reaches(eta) {
            break eta;
        }
        above = Some(eta);
        let next = (eta as f64 * SEARCH_RATIO) as u64;
        if next < floor {
            if eta > floor && reaches(floor) {
                break floor;
            }
            return None;
        }
        eta = next;
    };
    // Refine between `found` (reaches) and `above` (does not): a boundary point in between.
    let (mut lo, mut hi) = (found, above.unwrap_or(found));
    for _ in 0..REFINE_STEPS {
        if hi - lo <= 1 {
            break;
        }
        let mid = lo + (hi - lo) / 2;
        if reaches(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    // Rounded down to the millisecond when that still reaches it (f is not monotone in η:
    // with little loss a shorter interval is better, with much loss it can be worse).
    let ms = lo / 1_000_000 * 1_000_000;
    let advised = if ms >= floor && reaches(ms) { ms } else { lo };
    Some(Duration::from_nanos(advised))
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const DAY: u64 = 86_400;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn target(td_ms: u64, tmr: Duration, tm: Option<Duration>) -> QosTarget {
        QosTarget::new(ms(td_ms), tmr, tm).unwrap()
    }

    /// T_D = 1 s, a mistake at most every 30 days, 1% loss and no jitter: every factor of f is
    /// 1/p_L = 100. At η = 100 ms there are 9 factors: f = 0.1 · 100⁹ = 10¹⁷ s, reachable, and
    /// α = 900 ms.
    #[test]
    fn a_fast_client_reaches_the_target_with_the_rest_of_t_d_as_margin() {
        let t = target(1000, Duration::from_secs(30 * DAY), None);
        let c = configure(&t, 0.01, 0.0, ms(100));
        assert_eq!(
            c,
            Configured {
                reachable: true,
                alpha: ms(900),
                advised_interval: None
            }
        );
    }

    /// The same target at η = 1 s: no factor (⌈1/1⌉ − 1 = 0), f = 1 s < 30 d. By hand: for
    /// η in (1/4, 1/3] there are 3 factors, f ≤ 10⁶/3 s < 2,592,000 s; for η just below 1/4
    /// there are 4, f ≈ 0.25 · 10⁸ s. So the longest interval is just below 250 ms.
    #[test]
    fn a_slow_client_is_told_the_longest_interval_that_reaches_it() {
        let t = target(1000, Duration::from_secs(30 * DAY), None);
        let c = configure(&t, 0.01, 0.0, ms(1000));
        assert!(!c.reachable);
        assert_eq!(
            c.alpha,
            ms(2000),
            "η ≥ T_D: the chen default of two intervals"
        );
        assert_eq!(c.advised_interval, Some(ms(249)));
        assert!(configure(&t, 0.01, 0.0, ms(249)).reachable);
        assert!(!configure(&t, 0.01, 0.0, ms(250)).reachable);
        // Just short of the target, the margin keeps the detection time.
        let c = configure(&t, 0.01, 0.0, ms(300));
        assert_eq!((c.reachable, c.alpha), (false, ms(700)));
    }

    /// T_D = 1 s, T_M = 500 ms, T_MR = 10 s, no loss, V(D) = (100 ms)² = 0.01 s²:
    /// γ' = 1/1.01 = 0.990099, η_max = 0.495 s. At η = 0.6 s, f = 0.6 · (0.01 + 0.16)/0.01 =
    /// 10.2 s would do, but η > η_max. At η = 0.4 s, f = 0.4 · 37 · 5 = 74 s: reachable with
    /// α = 600 ms. The longest: η_max itself (f(0.495) = 0.495 · (0.01 + 0.255)/0.01 =
    /// 13.1 s), i.e. 495 ms.
    #[test]
    fn the_mistake_duration_caps_the_interval() {
        let t = target(1000, Duration::from_secs(10), Some(ms(500)));
        let c = configure(&t, 0.0, 0.01, ms(600));
        assert!(!c.reachable);
        assert_eq!(c.advised_interval, Some(ms(495)));
        let c = configure(&t, 0.0, 0.01, ms(400));
        assert_eq!((c.reachable, c.alpha), (true, ms(600)));
        // Without the mistake-duration target, 600 ms is fine.
        let t = target(1000, Duration::from_secs(10), None);
        assert!(configure(&t, 0.0, 0.01, ms(600)).reachable);
    }

    /// Jitter alone: V(D) = (200 ms)², no loss, T_D = 1 s, T_MR = 1 h. At η = 500 ms one
    /// factor, t = 0.5: (0.04 + 0.25)/0.04 = 7.25, f = 3.625 s: unreachable. At η = 100 ms:
    /// t = 0.9, 0.8, ..., 0.1, f = 0.1 · Π (0.04 + t²)/0.04 ≈ 0.1 · 2.1·10⁷, reachable.
    #[test]
    fn jitter_alone_decides_without_loss() {
        let t = target(1000, Duration::from_secs(3600), None);
        assert!(!configure(&t, 0.0, 0.04, ms(500)).reachable);
        assert!(configure(&t, 0.0, 0.04, ms(100)).reachable);
        let advised = configure(&t, 0.0, 0.04, ms(500)).advised_interval.unwrap();
        assert!(ms(100) <= advised && advised < ms(500), "{advised:?}");
        assert!(configure(&t, 0.0, 0.04, advised).reachable);
    }

    /// Edge values decide without panicking: a perfect network reaches everything below
    /// T_D, a network that loses everything reaches nothing, and NaN or infinite variance is
    /// "anything can be late".
    #[test]
    fn edge_values_never_panic() {
        let t = target(1000, Duration::from_secs(30 * DAY), Some(ms(100)));
        let perfect = configure(&t, 0.0, 0.0, ms(50));
        assert!(perfect.reachable, "{perfect:?}");
        let lost = configure(&t, 1.0, 0.0, ms(50));
        assert_eq!((lost.reachable, lost.advised_interval), (false, None));
        for v in [f64::NAN, f64::INFINITY] {
            let c = configure(&t, 0.0, v, ms(50));
            assert_eq!((c.reachable, c.advised_interval), (false, None), "{v}");
        }
        let c = configure(&t, f64::NAN, -1.0, ms(50));
        assert!(!c.reachable);
        // Huge and tiny values.
        let huge = QosTarget::new(Duration::MAX, Duration::MAX, Some(Duration::MAX)).unwrap();
        let _ = configure(&huge, 1e-300, 1e300, Duration::MAX);
        let _ = configure(&huge, 0.5, 1e-300, Duration::from_nanos(1));
        let tiny = QosTarget::new(Duration::from_nanos(1), Duration::from_nanos(1), None).unwrap();
        let _ = configure(&tiny, 0.5, 0.0, Duration::from_nanos(1));
        assert!(QosTarget::new(Duration::ZERO, ms(1), None).is_err());
        assert!(QosTarget::new(ms(1), ms(1), Some(Duration::ZERO)).is_err());
    }

    proptest! {
        /// For any network and target: reachable means α = T_D − η (the detection bound is
        /// kept), advice is given only when unreachable, and the advised interval reaches the
        /// target and is below T_D.
        #[test]
        fn reachable_keeps_t_d_and_advice_reaches_the_target(
            td_ms in 1u64..100_000,
            tmr_s in 1u64..(365 * DAY),
            tm_ms in proptest::option::of(1u64..100_000),
            loss in 0.0f64..=1.0,
            sd_ms in 0.0f64..10_000.0,
            eta_ms in 1u64..100_000,
        ) {
            let t = target(td_ms, Duration::from_secs(tmr_s), tm_ms.map(ms));
            let v = (sd_ms / 1e3).powi(2);
            let c = configure(&t, loss, v, ms(eta_ms));
            if c.reachable {
                prop_assert!(eta_ms < td_ms);
                prop_assert_eq!(c.alpha + ms(eta_ms), ms(td_ms));
                prop_assert_eq!(c.advised_interval, None);
            }
            if let Some(a) = c.advised_interval {
                prop_assert!(!c.reachable);
                prop_assert!(a < ms(td_ms));
                prop_assert!(configure(&t, loss, v, a).reachable, "advised {:?}", a);
            }
        }

        /// More loss or more jitter never makes an unreachable target reachable.
        #[test]
        fn a_worse_network_never_helps(
            td_ms in 1u64..10_000,
            tmr_s in 1u64..(365 * DAY),
            loss in 0.0f64..=1.0,
            more_loss in 0.0f64..=1.0,
            sd_ms in 0.0f64..1_000.0,
            more_sd in 0.0f64..1_000.0,
            eta_ms in 1u64..10_000,
        ) {
            let t = target(td_ms, Duration::from_secs(tmr_s), None);
            let v = (sd_ms / 1e3).powi(2);
            let worse_v = ((sd_ms + more_sd) / 1e3).powi(2);
            let worse_loss = (loss + more_loss).min(1.0);
            if !configure(&t, loss, v, ms(eta_ms)).reachable {
                prop_assert!(!configure(&t, worse_loss, worse_v, ms(eta_ms)).reachable);
            }
        }

        /// Any input at all, NaN and infinities included: no panic.
        #[test]
        fn any_input_is_answered(
            td in any::<u64>(), tmr in any::<u64>(), tm in any::<Option<u64>>(),
            loss in any::<f64>(), v in any::<f64>(), eta in any::<u64>(),
        ) {
            let d = |n: u64| Duration::from_nanos(n.max(1));
            let t = QosTarget::new(d(td), d(tmr), tm.map(d)).unwrap();
            let _ = configure(&t, loss, v, d(eta));
        }
    }
}
