//! [`Span`]: a detector parameter given as a duration or as a multiple of the interval.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::error::ConfigError;

/// A duration given outright, or as a multiple of the client's declared heartbeat interval.
///
/// A server watches clients with different intervals, so most detector parameters scale with
/// the interval by default. Written `500ms`, `3s`, `250us`, `10ns` or `2x` (two intervals).
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Span {
    /// The same duration for every client.
    Fixed(Duration),
    /// This many of the client's heartbeat intervals.
    Intervals(f64),
}

impl Span {
    /// The duration for a client that declared `interval`, saturating at [`Duration::MAX`].
    pub fn resolve(self, interval: Duration) -> Duration {
        match self {
            Self::Fixed(d) => d,
            Self::Intervals(k) if k > 0.0 => {
                Duration::try_from_secs_f64(interval.as_secs_f64() * k).unwrap_or(Duration::MAX)
            }
            Self::Intervals(_) => Duration::ZERO,
        }
    }

    /// The check of a parameter `name` that must be positive.
    pub(super) fn positive(name: &'static str) -> impl Fn(Self) -> Result<Self, ConfigError> {
        move |span: Self| span.check(name, false)
    }

    /// The check of a parameter `name` that may be zero but not negative.
    pub(super) fn non_negative(name: &'static str) -> impl Fn(Self) -> Result<Self, ConfigError> {
        move |span: Self| span.check(name, true)
    }

    /// Checks a parameter: finite, not negative, and not zero unless `zero_ok`.
    fn check(self, name: &'static str, zero_ok: bool) -> Result<Self, ConfigError> {
        let (zero, bad) = match self {
            Self::Fixed(d) => (d.is_zero(), false),
            Self::Intervals(k) => (k == 0.0, !(k.is_finite() && k >= 0.0)),
        };
        if bad {
            return Err(ConfigError::Detector {
                name,
                why: "must be a finite, non-negative multiple of the interval",
            });
        }
        if zero && !zero_ok {
            return Err(ConfigError::Detector {
                name,
                why: "must be positive",
            });
        }
        Ok(self)
    }
}

impl fmt::Display for Span {
    /// `2x` for intervals; for a fixed duration the largest of `s`, `ms`, `us`, `ns` that
    /// shows it exactly.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Intervals(k) => write!(f, "{k}x"),
            Self::Fixed(d) => {
                let ns = d.as_nanos();
                for (unit, per) in [("s", 1_000_000_000), ("ms", 1_000_000), ("us", 1_000)] {
                    if ns % per == 0 {
                        return write!(f, "{}{unit}", ns / per);
                    }
                }
                write!(f, "{ns}ns")
            }
        }
    }
}

impl FromStr for Span {
    type Err = ConfigError;

    /// Parses `2x` or `0.5x` (multiples of the interval), or a duration of the one grammar
    /// ([`parse_duration`](crate::units::parse_duration): `3s`, `1.5s`, `100ms`, `250us`,
    /// `10ns`, `2m`, ...).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const BAD: ConfigError = ConfigError::Detector {
            name: "duration",
            why: "expected a number and a unit, such as 250ms, 1.5s, 10m (or 10min), 2h or 7d, \
                  or a multiple of the interval such as 2x",
        };
        let s = s.trim();
        if let Some(k) = s.strip_suffix('x') {
            return match k.trim().parse::<f64>() {
                Ok(v) if v.is_finite() && v >= 0.0 => Ok(Self::Intervals(v)),
                _ => Err(BAD),
            };
        }
        crate::units::parse_duration(s)
            .map(Self::Fixed)
            .map_err(|_| BAD)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::ms;
    use super::*;

    #[test]
    fn spans_parse_and_display() {
        let cases = [
            ("2x", Span::Intervals(2.0)),
            ("0.5x", Span::Intervals(0.5)),
            ("3s", Span::Fixed(ms(3000))),
            ("1.5s", Span::Fixed(ms(1500))),
            ("100ms", Span::Fixed(ms(100))),
            ("250us", Span::Fixed(Duration::from_micros(250))),
            ("10ns", Span::Fixed(Duration::from_nanos(10))),
            ("2m", Span::Fixed(ms(120_000))),
            ("10min", Span::Fixed(ms(600_000))),
        ];
        for (text, span) in cases {
            assert_eq!(text.parse::<Span>(), Ok(span), "{text}");
        }
        assert_eq!(Span::Fixed(ms(1500)).to_string(), "1500ms");
        assert_eq!(Span::Fixed(ms(3000)).to_string(), "3s");
        assert_eq!(Span::Intervals(2.0).to_string(), "2x");
        assert_eq!(
            Span::Fixed(Duration::from_nanos(1_000_001)).to_string(),
            "1000001ns"
        );
        for bad in ["", "3", "-1s", "x", "inf s", "1e30s", "NaNx", "3 m"] {
            assert!(bad.parse::<Span>().is_err(), "{bad}");
        }
        assert_eq!(Span::Intervals(2.5).resolve(ms(1000)), ms(2500));
        assert_eq!(Span::Intervals(1e300).resolve(ms(1000)), Duration::MAX);
        assert_eq!(Span::Fixed(ms(7)).resolve(ms(1000)), ms(7));
    }
}
