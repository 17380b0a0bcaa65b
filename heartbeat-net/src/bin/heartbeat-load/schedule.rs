//! When each connection connects and sends: offsets spread evenly, slots on a drift-free grid.

use std::time::Duration;

/// The `i`-th of `n` offsets spread evenly over `span`: `span * i / n`, exact to the nanosecond.
///
/// Used twice: for when connection `i` starts connecting within the ramp, and for its phase
/// within the interval, so that `n` clients neither connect nor send in lockstep.
pub(crate) fn spread(i: usize, n: usize, span: Duration) -> Duration {
    if n == 0 {
        return Duration::ZERO;
    }
    let nanos = span.as_nanos() * i as u128 / n as u128;
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// One connection's heartbeat slots in the measured window.
///
/// Slot `k` (0-based, sent as `seq = k + 1`) is due `phase + k * interval` after the window
/// starts, for every such time before the window ends. A grid, not a chain of sleeps: a late
/// send is late on its own and the next one is due on the grid again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slots {
    phase: Duration,
    interval: Duration,
    count: u64,
}

impl Slots {
    /// The slots of connection `i` of `n`, its phase spread over the interval.
    ///
    /// `interval` must not be zero (the command line rejects it); a zero interval gives no slots.
    pub(crate) fn new(i: usize, n: usize, interval: Duration, window: Duration) -> Self {
        let phase = spread(i, n, interval);
        let count = if interval.is_zero() || phase >= window {
            0
        } else {
            // Slots at phase, phase + interval, ... strictly before the window's end.
            let span = (window - phase).as_nanos();
            let step = interval.as_nanos();
            u64::try_from(span.div_ceil(step)).unwrap_or(u64::MAX)
        };
        Self {
            phase,
            interval,
            count,
        }
    }

    /// How many slots fall in the window.
    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    /// The offset of slot `k` from the window's start.
    pub(crate) fn offset(&self, k: u64) -> Duration {
        let nanos = self.phase.as_nanos() + self.interval.as_nanos() * u128::from(k);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// The slot due `elapsed` after the window's start: the last one whose time has come,
    /// `None` before the first. It may be `count()` or more once the window is over.
    pub(crate) fn due(&self, elapsed: Duration) -> Option<u64> {
        let since_first = elapsed.checked_sub(self.phase)?;
        if self.interval.is_zero() {
            return None;
        }
        let k = since_first.as_nanos() / self.interval.as_nanos();
        Some(u64::try_from(k).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn spread_is_even_starts_at_zero_and_stays_inside_the_span() {
        let offsets: Vec<_> = (0..4).map(|i| spread(i, 4, 10 * MS)).collect();
        assert_eq!(
            offsets,
            [
                Duration::ZERO,
                Duration::from_micros(2500),
                5 * MS,
                Duration::from_micros(7500)
            ]
        );
        // Many more offsets than nanoseconds-per-step rounding could merge stay distinct and
        // strictly increasing.
        let n = 19_000;
        let mut prev = None;
        for i in 0..n {
            let o = spread(i, n, 10 * MS);
            assert!(o < 10 * MS);
            if let Some(p) = prev {
                assert!(o > p, "offset {i} not after the previous one");
            }
            prev = Some(o);
        }
        assert_eq!(spread(0, 0, MS), Duration::ZERO);
        assert_eq!(spread(3, 1, Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn a_window_of_whole_intervals_offers_exactly_n_per_interval() {
        for n in [1, 3, 7, 1000] {
            let total: u64 = (0..n)
                .map(|i| Slots::new(i, n, 10 * MS, 2000 * MS).count())
                .sum();
            assert_eq!(total, n as u64 * 200, "n = {n}");
        }
    }

    #[test]
    fn slots_stop_strictly_before_the_window_ends() {
        // Phase 5 ms, interval 10 ms, window 25 ms: slots at 5 and 15 (25 is outside).
        let s = Slots::new(1, 2, 10 * MS, 25 * MS);
        assert_eq!(s.count(), 2);
        assert_eq!(Slots::new(1, 2, 10 * MS, 26 * MS).count(), 3);
        assert_eq!(
            (s.offset(0), s.offset(1), s.offset(2)),
            (5 * MS, 15 * MS, 25 * MS)
        );
        // A window shorter than the phase has no slot at all.
        assert_eq!(Slots::new(1, 2, 10 * MS, 5 * MS).count(), 0);
    }

    #[test]
    fn due_is_the_last_slot_whose_time_has_come() {
        let s = Slots::new(1, 2, 10 * MS, 100 * MS); // phase 5 ms
        assert_eq!(s.due(4 * MS), None);
        assert_eq!(s.due(5 * MS), Some(0));
        assert_eq!(s.due(14 * MS), Some(0));
        assert_eq!(s.due(15 * MS), Some(1));
        // Woken 32 ms late for slot 1: slot 4 is due now, 1 to 3 were skipped.
        assert_eq!(s.due(47 * MS), Some(4));
        assert_eq!(s.due(1000 * MS), Some(99));
    }
}
