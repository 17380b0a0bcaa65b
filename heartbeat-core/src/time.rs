//! The two clocks the core is handed: monotonic time for timers, Unix time for stamps.

use std::fmt;
use std::time::{Duration, Instant};

use serde::Serialize;

/// A wall-clock instant: nanoseconds since the Unix epoch.
///
/// The core never reads a clock. The driver passes the wall clock in through [`Now::unix`]; it is
/// used for the send stamp in heartbeats, the receive stamp in acks and one-way delay. It is an
/// integer, so it is always finite and never rounds differently on two machines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixTime(u64);

impl UnixTime {
    /// The epoch itself.
    pub const EPOCH: Self = Self(0);

    /// Builds a time from nanoseconds since the epoch.
    pub const fn from_nanos(nanos: u64) -> Self {
        Self(nanos)
    }

    /// Builds a time from a duration since the epoch, saturating past year 2554.
    pub fn from_duration(since_epoch: Duration) -> Self {
        Self(u64::try_from(since_epoch.as_nanos()).unwrap_or(u64::MAX))
    }

    /// Nanoseconds since the epoch.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// The duration since the epoch.
    pub const fn as_duration(self) -> Duration {
        Duration::from_nanos(self.0)
    }

    /// `self - earlier` in nanoseconds, negative when `earlier` is later (clock skew).
    pub fn signed_nanos_since(self, earlier: Self) -> i64 {
        let d = i128::from(self.0) - i128::from(earlier.0);
        d.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
    }

    /// `self + d`, saturating.
    pub fn saturating_add(self, d: Duration) -> Self {
        Self(
            self.0
                .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        )
    }

    /// Formats as seconds with exactly `decimals` fractional digits (truncated, not rounded, so
    /// that a stamp never moves into the next second).
    pub fn display_secs(self, decimals: u32) -> impl fmt::Display {
        SecsDisplay {
            t: self,
            decimals: decimals.min(9),
        }
    }
}

impl fmt::Display for UnixTime {
    /// Seconds with six decimals, the form the v1 protocol writes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.display_secs(6).fmt(f)
    }
}

impl Serialize for UnixTime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.display_secs(6))
    }
}

struct SecsDisplay {
    t: UnixTime,
    decimals: u32,
}

impl fmt::Display for SecsDisplay {
    /// The digits are written into a buffer and handed over in one piece: every ack and the
    /// seed's per-heartbeat line carry stamps, and `write!` with a zero-padded width cost about
    /// 900 instructions a stamp. Like `write!` into the formatter, it ignores width and fill.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // u64 nanoseconds: at most 11 digits of seconds, a point, at most 9 decimals.
        let mut buf = [0u8; 24];
        let mut start = buf.len();
        let mut push = |digit: u64| {
            start -= 1;
            buf[start] = b'0' + (digit % 10) as u8;
        };
        if self.decimals > 0 {
            let mut frac = (self.t.0 % 1_000_000_000) / 10u64.pow(9 - self.decimals);
            for _ in 0..self.decimals {
                push(frac);
                frac /= 10;
            }
        }
        let mut secs = self.t.0 / 1_000_000_000;
        loop {
            push(secs);
            secs /= 10;
            if secs == 0 {
                break;
            }
        }
        if self.decimals > 0 {
            // Put the point between the seconds and the decimals.
            let point = buf.len() - self.decimals as usize;
            buf.copy_within(start..point, start - 1);
            start -= 1;
            buf[point - 1] = b'.';
        }
        // Only ASCII digits and a point were written.
        f.write_str(std::str::from_utf8(&buf[start..]).map_err(|_| fmt::Error)?)
    }
}

/// Both clocks at one moment, handed to every core call that can move time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time, for timers and inter-arrival times.
    pub mono: Instant,
    /// Wall-clock time, for stamps and one-way delay.
    pub unix: UnixTime,
}

impl Now {
    /// Both clocks moved forward by `d`, as a simulated clock does.
    pub fn advanced(self, d: Duration) -> Self {
        Self {
            mono: self.mono + d,
            unix: self.unix.saturating_add(d),
        }
    }
}

#[cfg(test)]
impl Now {
    /// An arbitrary origin for unit tests: the monotonic clock now (only offsets from it
    /// matter) and a fixed Unix time, 2023-11-14T22:13:20Z.
    #[allow(clippy::disallowed_methods)]
    pub(crate) fn test_origin() -> Self {
        Self {
            mono: Instant::now(),
            unix: UnixTime::from_nanos(1_700_000_000_000_000_000),
        }
    }
}

/// Formats a duration in milliseconds with three decimals (`12.345ms`), the one form the reports
/// and logs use, so output does not change with `Duration`'s `Debug` heuristics.
pub fn fmt_ms(d: Duration) -> String {
    let micros = d.as_micros();
    format!("{}.{:03}ms", micros / 1000, micros % 1000)
}

/// Formats signed nanoseconds as milliseconds with three decimals.
pub fn fmt_signed_ms(nanos: i64) -> String {
    let sign = if nanos < 0 { "-" } else { "" };
    let micros = nanos.unsigned_abs() / 1000;
    format!("{sign}{}.{:03}ms", micros / 1000, micros % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_truncates_to_decimals() {
        let t = UnixTime::from_nanos(1_752_356_183_576_999_999);
        assert_eq!(t.display_secs(4).to_string(), "1752356183.5769");
        assert_eq!(t.to_string(), "1752356183.576999");
        assert_eq!(t.display_secs(0).to_string(), "1752356183");
        assert_eq!(
            UnixTime::from_nanos(5).display_secs(9).to_string(),
            "0.000000005"
        );
    }

    /// The digits by hand are what `write!` with a zero-padded width wrote, for every number of
    /// decimals, at the edges (zero, a second's last nanosecond, u64's largest) and between.
    #[test]
    fn display_matches_the_padded_format_it_replaced() {
        let reference = |nanos: u64, decimals: u32| {
            let (secs, frac) = (nanos / 1_000_000_000, nanos % 1_000_000_000);
            if decimals == 0 {
                return format!("{secs}");
            }
            let frac = frac / 10u64.pow(9 - decimals);
            format!("{secs}.{frac:0width$}", width = decimals as usize)
        };
        let mut samples = vec![0, 1, 999_999_999, 1_000_000_000, u64::MAX, u64::MAX - 1];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            samples.push(x);
            samples.push(x % 100_000_000_000);
        }
        for nanos in samples {
            for decimals in 0..=9 {
                let t = UnixTime::from_nanos(nanos);
                assert_eq!(
                    t.display_secs(decimals).to_string(),
                    reference(nanos, decimals),
                    "{nanos} with {decimals}"
                );
            }
        }
        // Width and fill are ignored, as before.
        let t = UnixTime::from_nanos(1_500_000_000);
        assert_eq!(format!("{:>12}", t.display_secs(1)), "1.5");
    }

    #[test]
    fn signed_difference_saturates() {
        let a = UnixTime::from_nanos(10);
        let b = UnixTime::from_nanos(25);
        assert_eq!(b.signed_nanos_since(a), 15);
        assert_eq!(a.signed_nanos_since(b), -15);
        assert_eq!(
            UnixTime::from_nanos(u64::MAX).signed_nanos_since(UnixTime::EPOCH),
            i64::MAX
        );
    }

    #[test]
    fn millisecond_formatting() {
        assert_eq!(fmt_ms(Duration::from_micros(12_345)), "12.345ms");
        assert_eq!(fmt_signed_ms(-1_500_000), "-1.500ms");
    }
}
