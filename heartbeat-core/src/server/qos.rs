//! What a quality-of-service target needs of each client (see [`crate::detector::target`]): its
//! loss probability `p_L` and the variance of its one-way delay `V(D)`, measured as its
//! heartbeats arrive, and the configuration last computed from them.

use std::time::Duration;

use crate::detector::{Configured, QosTarget, configure};

/// The loss probability a client starts with: one heartbeat in a hundred, so that a client is
/// not judged perfect from its first few heartbeats. Its weight fades as heartbeats arrive
/// (`LOSS_WINDOW`).
pub const LOSS_PRIOR: f64 = 0.01;

/// The loss estimate never goes below this: an exponential window of [`WINDOW`] heartbeats
/// cannot tell one loss in ten thousand from none.
pub const LOSS_FLOOR: f64 = 1e-4;

/// The window, in heartbeats, of both estimates: each is an exponentially weighted average
/// whose weight on a new heartbeat is `max(1/n, 1/WINDOW)` (Welford's exact mean and variance
/// for the first `WINDOW` heartbeats, then a sliding exponential window).
pub const WINDOW: u32 = 1000;

/// The delay variance a client starts with, in s²: (10 ms)², worth [`DELAY_PRIOR_WEIGHT`]
/// heartbeats (the estimate is shrunk towards it: `(w·V₀ + m·V) / (w + m)`, `m` the
/// heartbeats in the window).
pub const DELAY_PRIOR: f64 = 1e-4;

/// How many heartbeats [`DELAY_PRIOR`] is worth. Since the window holds at most [`WINDOW`]
/// heartbeats, the prior keeps a share of `10 / 1010` for good: the variance is never taken
/// below about (1 ms)², a floor that matters only for detection targets of a few milliseconds.
pub const DELAY_PRIOR_WEIGHT: f64 = 10.0;

/// The configuration is computed again at most every this many heartbeats of a client (and at
/// its first): often enough to follow the estimates as they settle, seldom enough that the
/// search for an advised interval (a few hundred thousand multiplications at worst) costs
/// nothing per heartbeat.
pub const RECONFIGURE_EVERY: u16 = 10;

/// One client's measurements for a QoS target, and what was decided from them.
#[derive(Clone, Debug)]
pub(crate) struct QosEstimate {
    /// `p_L`, before the floor.
    loss: f64,
    /// Delays counted, saturating.
    n: u32,
    /// The mean delay, seconds (only its variance matters: offset-invariant, so a client's
    /// clock offset changes nothing).
    mean: f64,
    /// The windowed variance of the delay, s².
    var: f64,
    /// Heartbeats since the last configuration.
    since: u16,
    /// The last configuration, `None` before the first.
    configured: Option<Configured>,
}

impl Default for QosEstimate {
    fn default() -> Self {
        Self {
            loss: LOSS_PRIOR,
            n: 0,
            mean: 0.0,
            var: 0.0,
            since: 0,
            configured: None,
        }
    }
}

impl QosEstimate {
    /// `count` heartbeats were missed (a sequence gap).
    pub(crate) fn on_missed(&mut self, count: u64) {
        // `count` steps of p ← p + w·(1 − p): 1 − p shrinks by (1 − w) each.
        let keep = (1.0 - 1.0 / f64::from(WINDOW)).powf(count.min(1 << 20) as f64);
        self.loss = 1.0 - (1.0 - self.loss) * keep;
    }

    /// A heartbeat arrived with one-way delay `delay_ns` (as the server measures it: receive
    /// time minus the client's stamp, less a skewed clock's estimated offset).
    pub(crate) fn on_received(&mut self, delay_ns: i64) {
        let w = 1.0 / f64::from(WINDOW);
        self.loss *= 1.0 - w;
        self.n = self.n.saturating_add(1);
        let w = (1.0 / f64::from(self.n)).max(w);
        let x = delay_ns as f64 / 1e9;
        let d = x - self.mean;
        self.mean += w * d;
        self.var = (1.0 - w) * (self.var + w * d * d);
        self.since = self.since.saturating_add(1);
    }

    /// The loss probability `p_L`: the windowed estimate, never below [`LOSS_FLOOR`].
    pub(crate) fn loss(&self) -> f64 {
        self.loss.max(LOSS_FLOOR)
    }

    /// The one-way delay variance `V(D)` in s², shrunk towards [`DELAY_PRIOR`].
    pub(crate) fn delay_variance(&self) -> f64 {
        let m = f64::from(self.n.min(WINDOW));
        (DELAY_PRIOR_WEIGHT * DELAY_PRIOR + m * self.var) / (DELAY_PRIOR_WEIGHT + m)
    }

    /// The client's interval changed: the next arrival configures it again, at the new
    /// interval, however recent the last configuration.
    pub(crate) fn interval_changed(&mut self) {
        self.since = self.since.max(RECONFIGURE_EVERY);
    }

    /// The last configuration.
    pub(crate) fn configured(&self) -> Option<Configured> {
        self.configured
    }

    /// Computes the configuration again if it is due (the first time, or [`RECONFIGURE_EVERY`]
    /// heartbeats after the last). Returns the new one and whether the target's reachability
    /// changed with it (or it is the first).
    pub(crate) fn reconfigure(
        &mut self,
        target: &QosTarget,
        interval: Duration,
    ) -> Option<(Configured, bool)> {
        if self.configured.is_some() && self.since < RECONFIGURE_EVERY {
            return None;
        }
        self.since = 0;
        let c = configure(target, self.loss(), self.delay_variance(), interval);
        let changed = self
            .configured
            .is_none_or(|old| old.reachable != c.reachable);
        self.configured = Some(c);
        Some((c, changed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_client_starts_at_the_priors_and_settles_on_what_it_shows() {
        let mut q = QosEstimate::default();
        assert_eq!(q.loss(), LOSS_PRIOR);
        assert_eq!(q.delay_variance(), DELAY_PRIOR);
        // Three perfect heartbeats do not make a perfect client.
        for _ in 0..3 {
            q.on_received(1_000_000);
        }
        assert!(q.loss() > 0.0099, "{}", q.loss());
        assert!(q.delay_variance() > 0.7 * DELAY_PRIOR);
        // Ten thousand perfect ones do, down to the floor.
        for _ in 0..10_000 {
            q.on_received(1_000_000);
        }
        assert_eq!(q.loss(), LOSS_FLOOR);
        assert!(q.delay_variance() < 0.02 * DELAY_PRIOR);
    }

    /// Delays alternating 0 and 100 ms (any clock offset added): variance (50 ms)² =
    /// 2.5e-3 s², whatever the offset (the prior's share is (10·1e-4)/(10 + 1000), under 1%).
    /// One loss in ten: p_L near 0.1.
    #[test]
    fn the_variance_ignores_the_clock_offset_and_loss_follows_the_gaps() {
        for offset_ns in [0i64, -5_000_000_000, 7_000_000_000] {
            let mut q = QosEstimate::default();
            for i in 0..20_000 {
                q.on_received(offset_ns + if i % 2 == 0 { 0 } else { 100_000_000 });
                if i % 9 == 8 {
                    q.on_missed(1);
                }
            }
            let v = q.delay_variance();
            assert!(
                (v - 2.5e-3).abs() < 0.05 * 2.5e-3,
                "offset {offset_ns}: {v}"
            );
            let p = q.loss();
            assert!((0.08..0.12).contains(&p), "{p}");
        }
    }

    #[test]
    fn reconfigures_at_the_first_heartbeat_then_every_ten() {
        let target = QosTarget::new(
            Duration::from_secs(1),
            Duration::from_secs(30 * 86_400),
            None,
        )
        .unwrap();
        let mut q = QosEstimate::default();
        q.on_received(0);
        let (c, changed) = q.reconfigure(&target, Duration::from_secs(1)).unwrap();
        assert!(changed && !c.reachable);
        for _ in 0..9 {
            q.on_received(0);
            assert!(q.reconfigure(&target, Duration::from_secs(1)).is_none());
        }
        q.on_received(0);
        let (_, changed) = q.reconfigure(&target, Duration::from_secs(1)).unwrap();
        assert!(!changed, "still unreachable: nothing to report");
        let huge = u64::MAX;
        q.on_missed(huge);
        assert!(q.loss() <= 1.0);
    }
}
