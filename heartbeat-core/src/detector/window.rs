//! [`Window`]: the sliding window of samples the φ and Chen detectors learn from, with exact
//! integer running sums so that nothing drifts and nothing is re-scanned.

use std::collections::VecDeque;
use std::time::Duration;

use crate::error::ConfigError;

/// The default history window of the φ, φ-exp and Chen detectors (samples per client): 128
/// rather than Akka's and Cassandra's 1000, so that a client's full window costs 512 bytes
/// (two minutes of history at 1 s) and a remembered client at most 2 KB in all. On the QoS
/// tables (`heartbeat-sim qos`, 1,200 heartbeats per client) detection times and mistake rates
/// moved by at most 2.3 % against a window of 1000.
pub const DEFAULT_WINDOW: usize = 128;

/// The largest history window accepted (samples per client).
pub const MAX_WINDOW: usize = 1 << 20;

/// Samples are clamped to ±2⁵⁰ ns (about 13 days), so that the running sum of squares of a
/// full window of [`MAX_WINDOW`] samples fits in a `u128`.
pub(super) const MAX_SAMPLE_NS: i64 = 1 << 50;

/// Checks a window parameter: 1 to [`MAX_WINDOW`] samples.
pub(super) fn check_window(window: usize) -> Result<usize, ConfigError> {
    if window == 0 || window > MAX_WINDOW {
        return Err(ConfigError::Detector {
            name: "window",
            why: "must be between 1 and 1048576 samples",
        });
    }
    Ok(window)
}

/// A sliding window of samples in nanoseconds with exact running sums.
///
/// Compact: each sample is kept as its difference from the previous one in an `i32` (4 bytes:
/// consecutive inter-arrival times or offsets differ by jitter, far below ±2.1 s), and only a
/// jump beyond that range also takes an `i64` in a side queue, so a full window of `n` samples
/// holds 4·n bytes (12·n at worst, every sample a jump). Samples are exact: nothing is rounded.
#[derive(Clone, Debug)]
pub(super) struct Window {
    /// `deltas[i]` is sample `i` minus sample `i − 1`, or [`JUMP`] when that difference is in
    /// `jumps`; `deltas[0]` is unused (the oldest sample is `front`).
    deltas: VecDeque<i32>,
    /// The differences that do not fit an `i32`, oldest first.
    jumps: VecDeque<i64>,
    /// The oldest and the newest sample.
    front: i64,
    back: i64,
    cap: usize,
    sum: i128,
    sum_sq: u128,
}

/// The `deltas` marker for a difference kept in `jumps`.
const JUMP: i32 = i32::MIN;

impl Window {
    pub(super) fn new(cap: usize) -> Self {
        Self {
            deltas: VecDeque::new(),
            jumps: VecDeque::new(),
            front: 0,
            back: 0,
            cap: cap.clamp(1, MAX_WINDOW),
            sum: 0,
            sum_sq: 0,
        }
    }

    /// Adds a sample (clamped to ±[`MAX_SAMPLE_NS`]), dropping the oldest one if full.
    pub(super) fn push(&mut self, x: i64) {
        let x = x.clamp(-MAX_SAMPLE_NS, MAX_SAMPLE_NS);
        if self.deltas.len() == self.cap {
            let old = self.pop_front();
            self.sum -= i128::from(old);
            self.sum_sq -= square(old);
        }
        if self.deltas.len() == self.deltas.capacity() {
            // Grow by doubling but never past `cap`, so a full window holds no spare room.
            let len = self.deltas.len();
            self.deltas.reserve_exact(len.max(4).min(self.cap - len));
        }
        if self.deltas.is_empty() {
            self.front = x;
            self.deltas.push_back(0);
        } else {
            // Both samples are within ±2⁵⁰, so the difference fits an `i64`.
            let d = x - self.back;
            match i32::try_from(d) {
                Ok(small) if small != JUMP => self.deltas.push_back(small),
                _ => {
                    self.deltas.push_back(JUMP);
                    self.jumps.push_back(d);
                }
            }
        }
        self.back = x;
        self.sum += i128::from(x);
        self.sum_sq += square(x);
    }

    /// Removes the oldest sample (the window is not empty) and returns it.
    fn pop_front(&mut self) -> i64 {
        let old = self.front;
        self.deltas.pop_front();
        if let Some(next) = self.deltas.front_mut() {
            let d = match *next {
                JUMP => self.jumps.pop_front().unwrap_or(0),
                small => i64::from(small),
            };
            *next = 0;
            self.front += d;
        }
        old
    }

    pub(super) fn clear(&mut self) {
        self.deltas.clear();
        self.jumps.clear();
        self.sum = 0;
        self.sum_sq = 0;
    }

    pub(super) fn len(&self) -> usize {
        self.deltas.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.deltas.is_empty()
    }

    /// Heap bytes held (capacity, not length), for memory accounting.
    #[cfg(test)]
    pub(super) fn heap_bytes(&self) -> usize {
        self.deltas.capacity() * size_of::<i32>() + self.jumps.capacity() * size_of::<i64>()
    }

    /// The exact sum of the samples, in nanoseconds.
    pub(super) fn sum(&self) -> i128 {
        self.sum
    }

    /// The mean in nanoseconds (0 when empty).
    pub(super) fn mean(&self) -> f64 {
        if self.is_empty() {
            return 0.0;
        }
        self.sum as f64 / self.len() as f64
    }

    /// The population variance in ns², from the exact integer `n·Σx² − (Σx)²` when it fits.
    pub(super) fn variance(&self) -> f64 {
        if self.is_empty() {
            return 0.0;
        }
        let n = self.len() as u128;
        let abs = self.sum.unsigned_abs();
        let exact = n
            .checked_mul(self.sum_sq)
            .zip(abs.checked_mul(abs))
            .map(|(a, b)| a.saturating_sub(b));
        let var = match exact {
            Some(num) => num as f64 / (n as f64 * n as f64),
            None => {
                let mean = self.mean();
                self.sum_sq as f64 / n as f64 - mean * mean
            }
        };
        var.max(0.0)
    }
}

fn square(x: i64) -> u128 {
    let a = u128::from(x.unsigned_abs());
    a * a
}

/// A duration in nanoseconds, clamped to [`MAX_SAMPLE_NS`].
pub(super) fn clamp_nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).map_or(MAX_SAMPLE_NS, |n| n.min(MAX_SAMPLE_NS))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// The compact window holds exactly the last `cap` samples, whatever their jumps.
        #[test]
        fn compact_window_is_exact(
            cap in 1usize..12,
            xs in prop::collection::vec(prop_oneof![
                -5i64..5,
                Just(i64::MIN),
                Just(i64::MAX),
                any::<i64>(),
                (i64::from(i32::MIN) - 3)..(i64::from(i32::MIN) + 3),
            ], 0..60),
        ) {
            let mut w = Window::new(cap);
            let mut plain: VecDeque<i64> = VecDeque::new();
            for x in xs {
                w.push(x);
                plain.push_back(x.clamp(-MAX_SAMPLE_NS, MAX_SAMPLE_NS));
                if plain.len() > cap {
                    plain.pop_front();
                }
                prop_assert_eq!(w.len(), plain.len());
                prop_assert_eq!(w.front, plain[0]);
                prop_assert_eq!(w.sum, plain.iter().map(|&x| i128::from(x)).sum::<i128>());
                prop_assert_eq!(w.sum_sq, plain.iter().map(|&x| square(x)).sum::<u128>());
                prop_assert!(w.jumps.len() < w.deltas.len());
            }
        }
    }

    #[test]
    fn a_full_default_window_is_small() {
        let mut w = Window::new(DEFAULT_WINDOW);
        for i in 0..5000 {
            w.push(1_000_000_000 + (i * 7919 % 10_000_000)); // 1 s ± 5 ms of jitter
        }
        assert_eq!(w.len(), DEFAULT_WINDOW);
        assert_eq!(w.heap_bytes(), 4 * DEFAULT_WINDOW);
    }

    #[test]
    fn window_keeps_exact_sums() {
        let mut w = Window::new(3);
        for x in [1, 2, 3, 4, 5] {
            w.push(x);
        }
        assert_eq!((w.len(), w.sum, w.sum_sq), (3, 12, 50));
        assert_eq!(w.mean(), 4.0);
        assert!((w.variance() - 2.0 / 3.0).abs() < 1e-15);
        w.push(i64::MAX);
        assert_eq!(w.back, MAX_SAMPLE_NS);
        w.clear();
        assert_eq!((w.len(), w.mean(), w.variance()), (0, 0.0, 0.0));
    }
}
