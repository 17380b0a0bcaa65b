//! [`Window`]: the sliding window of samples the φ and Chen detectors learn from, with exact
//! integer running sums so that nothing drifts and nothing is re-scanned.

use std::collections::VecDeque;
use std::time::Duration;

use crate::error::ConfigError;

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
#[derive(Clone, Debug)]
pub(super) struct Window {
    samples: VecDeque<i64>,
    cap: usize,
    sum: i128,
    sum_sq: u128,
}

impl Window {
    pub(super) fn new(cap: usize) -> Self {
        Self {
            samples: VecDeque::new(),
            cap: cap.clamp(1, MAX_WINDOW),
            sum: 0,
            sum_sq: 0,
        }
    }

    /// Adds a sample (clamped to ±[`MAX_SAMPLE_NS`]), dropping the oldest one if full.
    pub(super) fn push(&mut self, x: i64) {
        let x = x.clamp(-MAX_SAMPLE_NS, MAX_SAMPLE_NS);
        if self.samples.len() == self.cap {
            if let Some(old) = self.samples.pop_front() {
                self.sum -= i128::from(old);
                self.sum_sq -= square(old);
            }
        }
        self.samples.push_back(x);
        self.sum += i128::from(x);
        self.sum_sq += square(x);
    }

    pub(super) fn clear(&mut self) {
        self.samples.clear();
        self.sum = 0;
        self.sum_sq = 0;
    }

    pub(super) fn len(&self) -> usize {
        self.samples.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.samples.is_empty()
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
    use super::*;

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
        assert_eq!(w.samples.back(), Some(&MAX_SAMPLE_NS));
        w.clear();
        assert_eq!((w.len(), w.mean(), w.variance()), (0, 0.0, 0.0));
    }
}
