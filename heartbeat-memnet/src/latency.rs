//! [`Latency`]: the one latency model and its one grammar, for the command lines
//! (`--latency 1ms..50ms`) and the scenario files (`latency = "1ms..50ms"`) alike.

use std::fmt;
use std::time::Duration;

use heartbeat_core::units::{fmt_duration, parse_duration};
use rand::Rng;
use rand::rngs::SmallRng;

/// The latency of a link: fixed (snapshots) or drawn per message (sweeps).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Latency {
    /// Every message takes exactly this long.
    Fixed(Duration),
    /// Each message takes `min + (max - min) * Exp(5)`, clamped to `max`, in whole ms.
    Range {
        /// Smallest latency.
        min: Duration,
        /// Largest latency.
        max: Duration,
    },
}

impl Latency {
    /// The smallest latency.
    pub fn min(&self) -> Duration {
        match *self {
            Self::Fixed(d) => d,
            Self::Range { min, .. } => min,
        }
    }

    /// The largest latency.
    pub fn max(&self) -> Duration {
        match *self {
            Self::Fixed(d) => d,
            Self::Range { max, .. } => max,
        }
    }

    /// Parses a fixed latency (`10ms`) or a range drawn per message (`1ms..50ms`), each end a
    /// duration of the one grammar ([`parse_duration`]). The command lines' older forms, bare
    /// milliseconds (`10`, `1-50`), read the same.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid latency {s:?}: expected a duration such as 10ms, or a range such as \
                 1ms..50ms"
            )
        };
        let end = |x: &str| {
            let x = x.trim();
            if !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit()) {
                return x.parse().map(Duration::from_millis).map_err(|_| bad());
            }
            parse_duration(x).map_err(|_| bad())
        };
        let (min, max) = match s.split_once("..").or_else(|| s.split_once('-')) {
            None => {
                let d = end(s)?;
                (d, d)
            }
            Some((a, b)) => (end(a)?, end(b)?),
        };
        if max < min {
            return Err(format!(
                "invalid latency {s:?}: the range ends before it starts"
            ));
        }
        Ok(if min == max {
            Self::Fixed(min)
        } else {
            Self::Range { min, max }
        })
    }

    /// Whole milliseconds, `10` or `1-50`, for the columns of machine-readable output whose
    /// name says the unit (`latency_ms`); [`parse`](Self::parse) reads it back.
    pub fn to_ms_text(&self) -> String {
        match self {
            Self::Fixed(d) => d.as_millis().to_string(),
            Self::Range { min, max } => format!("{}-{}", min.as_millis(), max.as_millis()),
        }
    }

    /// Draws one message latency: turmoil's model, `min + (max - min) * Exp(5)` in whole
    /// milliseconds, clamped to `max`. A fixed latency draws nothing.
    pub fn sample(&self, rng: &mut SmallRng) -> Duration {
        match *self {
            Self::Fixed(d) => d,
            Self::Range { min, max } => {
                let range_ms = (max - min).as_millis() as f64;
                // Exp(5) by inversion; `1 - u` is in (0, 1], so the logarithm is finite.
                let u: f64 = rng.random();
                let mult = -(1.0 - u).ln() / 5.0;
                let extra = Duration::from_millis((range_ms * mult) as u64);
                (min + extra).min(max)
            }
        }
    }
}

impl fmt::Display for Latency {
    /// The form [`parse`](Self::parse) reads: `10ms` or `1ms..50ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fixed(d) => f.write_str(&fmt_duration(*d)),
            Self::Range { min, max } => {
                write!(f, "{}..{}", fmt_duration(*min), fmt_duration(*max))
            }
        }
    }
}

impl Default for Latency {
    /// 1 to 50 ms.
    fn default() -> Self {
        Self::Range {
            min: Duration::from_millis(1),
            max: Duration::from_millis(50),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn one_grammar_for_files_and_command_lines() {
        let range = Latency::Range {
            min: ms(1),
            max: ms(50),
        };
        for (text, latency) in [
            ("10ms", Latency::Fixed(ms(10))),
            ("10", Latency::Fixed(ms(10))),
            ("1ms..50ms", range),
            ("1-50", range),
            ("1..50", range),
            (
                "0.5s..1s",
                Latency::Range {
                    min: ms(500),
                    max: ms(1000),
                },
            ),
            ("5ms..5ms", Latency::Fixed(ms(5))),
        ] {
            assert_eq!(Latency::parse(text), Ok(latency), "{text}");
        }
        assert_eq!(Latency::default(), range);
        assert_eq!(range.to_string(), "1ms..50ms");
        assert_eq!(Latency::parse(&range.to_string()), Ok(range));
        assert_eq!(range.to_ms_text(), "1-50");
        assert_eq!(Latency::parse(&range.to_ms_text()), Ok(range));
        for bad in ["x", "50-1", "50ms..1ms", "", "1ms..", "-5"] {
            assert!(Latency::parse(bad).is_err(), "{bad}");
        }
    }
}
