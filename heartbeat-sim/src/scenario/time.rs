//! The time values of a scenario file: fixed durations (`"500ms"`, `"2s"`), points in the fault
//! phase (`"12s"`, `"40%"`, `"end-5s"`), and ranges of either (`"20%..60%"`, `"3s..15s"`) that
//! the schedule RNG draws from.
//!
//! Draws reproduce what the built-in scenarios' Rust schedules did, number for number: a range
//! is drawn uniformly in whole milliseconds (`random_range(lo..=hi)`), a fixed value draws
//! nothing, and a percentage `p` of a fault phase of `d` seconds is `(p/100 * d) * 1000`
//! milliseconds, truncated.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rand::Rng;
use rand::rngs::SmallRng;

/// Parses a duration of the one grammar ([`heartbeat_core::parse_duration`]: `500ms`, `2s`,
/// `1.5s`, `2m`, `10min`, `1h`, `7d`), in whole milliseconds (what a schedule draws in).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = heartbeat_core::parse_duration(s).map_err(|e| e.to_string())?;
    if d.subsec_nanos() % 1_000_000 != 0 {
        return Err(format!("{s:?} is not a whole number of milliseconds"));
    }
    Ok(d)
}

/// A duration as a scenario file writes it: whole seconds as `12s`, else milliseconds.
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// A point in (or a length relative to) the fault phase.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Point {
    /// So long before the end of the fault phase (`end`, `end-5s`).
    BeforeEnd(Duration),
    /// A fixed time (`12s`, `1500ms`).
    Fixed(Duration),
    /// A fraction of the fault phase (`40%` is 0.4).
    Share(f64),
}

impl Point {
    /// In whole milliseconds, for a fault phase of `d` (truncated, as the built-in schedules
    /// did).
    pub fn ms(self, d: Duration) -> u64 {
        match self {
            Self::BeforeEnd(x) => d.saturating_sub(x).as_millis() as u64,
            Self::Fixed(x) => x.as_millis() as u64,
            Self::Share(f) => ((f * d.as_secs_f64()) * 1000.0) as u64,
        }
    }

    /// In seconds, for a fault phase of `d`: the form repetitions compare against.
    pub fn secs(self, d: Duration) -> f64 {
        match self {
            Self::BeforeEnd(x) => d.as_secs_f64() - x.as_millis() as f64 / 1000.0,
            Self::Fixed(x) => x.as_millis() as f64 / 1000.0,
            Self::Share(f) => f * d.as_secs_f64(),
        }
    }

    /// True for `end` and `end-…`, which make no sense as a length.
    pub fn is_end_relative(self) -> bool {
        matches!(self, Self::BeforeEnd(_))
    }
}

impl FromStr for Point {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t == "end" {
            return Ok(Self::BeforeEnd(Duration::ZERO));
        }
        if let Some(rest) = t.strip_prefix("end-") {
            return parse_duration(rest).map(Self::BeforeEnd);
        }
        if let Some(p) = t.strip_suffix('%') {
            let ok = !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit() || b == b'.');
            let share: f64 = p
                .parse()
                .ok()
                .filter(|_| ok)
                .ok_or_else(|| format!("expected a percentage such as 40%, got {s:?}"))?;
            if share > 100.0 {
                return Err(format!("{s:?} is beyond the end of the fault phase (100%)"));
            }
            return Ok(Self::Share(share / 100.0));
        }
        parse_duration(t).map(Self::Fixed)
    }
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::BeforeEnd(x) if x.is_zero() => f.write_str("end"),
            Self::BeforeEnd(x) => write!(f, "end-{}", fmt_duration(x)),
            Self::Fixed(x) => f.write_str(&fmt_duration(x)),
            Self::Share(s) => write!(f, "{}%", s * 100.0),
        }
    }
}

/// A time value of a scenario file: a point, or a range of points the schedule RNG draws from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Time {
    /// The point, or the low end of the range.
    pub lo: Point,
    /// The high end, for a range.
    pub hi: Option<Point>,
}

impl Time {
    /// A fixed point.
    pub fn fixed(p: Point) -> Self {
        Self { lo: p, hi: None }
    }

    /// True for a range (`A..B`), which is drawn even when its ends are equal.
    pub fn is_range(&self) -> bool {
        self.hi.is_some()
    }

    /// Its bounds in whole milliseconds for a fault phase of `d`.
    pub fn bounds_ms(&self, d: Duration) -> (u64, u64) {
        let lo = self.lo.ms(d);
        (lo, self.hi.map_or(lo, |h| h.ms(d)))
    }

    /// Its value for a fault phase of `d`: a range drawn from `rng` in whole milliseconds, a
    /// fixed point as it is (drawing nothing).
    pub fn draw(&self, rng: &mut SmallRng, d: Duration) -> Duration {
        let (lo, hi) = self.bounds_ms(d);
        if self.is_range() {
            Duration::from_millis(rng.random_range(lo..=hi.max(lo)))
        } else {
            Duration::from_millis(lo)
        }
    }

    /// True when it mentions the end of the fault phase.
    pub fn is_end_relative(&self) -> bool {
        self.lo.is_end_relative() || self.hi.is_some_and(Point::is_end_relative)
    }
}

impl FromStr for Time {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once("..") {
            None => Ok(Self::fixed(s.parse()?)),
            Some((a, b)) => {
                let (lo, hi): (Point, Point) = (a.parse()?, b.parse()?);
                // Ends of one kind compare now; mixed ones once the duration is known.
                let backwards = match (lo, hi) {
                    (Point::Fixed(a), Point::Fixed(b)) => a > b,
                    (Point::Share(a), Point::Share(b)) => a > b,
                    (Point::BeforeEnd(a), Point::BeforeEnd(b)) => a < b,
                    _ => false,
                };
                if backwards {
                    return Err(format!("the range {s:?} ends before it starts"));
                }
                Ok(Self { lo, hi: Some(hi) })
            }
        }
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.hi {
            None => write!(f, "{}", self.lo),
            Some(hi) => write!(f, "{}..{}", self.lo, hi),
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn durations_parse_exactly() {
        let ms = |s: &str| parse_duration(s).map(|d| d.as_millis());
        assert_eq!(ms("500ms"), Ok(500));
        assert_eq!(ms("2s"), Ok(2000));
        assert_eq!(ms("0.5s"), Ok(500));
        assert_eq!(ms("2.5s"), Ok(2500));
        assert_eq!(ms("1.001s"), Ok(1001));
        assert_eq!(ms("2m"), Ok(120_000));
        assert_eq!(ms("1h"), Ok(3_600_000));
        assert_eq!(ms("10min"), Ok(600_000));
        assert_eq!(ms("7d"), Ok(604_800_000));
        for bad in [
            "", "5", "s", "1.s", ".5s", "-1s", "1.0001s", "1e3ms", "1 s", "x1s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert!(parse_duration("99999999999999999999h").is_err());
        assert_eq!(fmt_duration(Duration::from_millis(2500)), "2500ms");
        assert_eq!(fmt_duration(Duration::from_secs(3)), "3s");
    }

    #[test]
    fn points_and_ranges() {
        let d = Duration::from_secs(60);
        let t = |s: &str| s.parse::<Time>();
        assert_eq!(t("20%..60%").unwrap().bounds_ms(d), (12_000, 36_000));
        assert_eq!(t("end-5s").unwrap().bounds_ms(d), (55_000, 55_000));
        assert_eq!(t("end").unwrap().bounds_ms(d), (60_000, 60_000));
        assert_eq!(t("3s..15s").unwrap().to_string(), "3s..15s");
        assert_eq!(t("20%..end-5s").unwrap().to_string(), "20%..end-5s");
        assert!(t("15s..3s").is_err());
        assert!(t("60%..20%").is_err());
        assert!(t("120%").is_err());
        assert!(t("x%").is_err());
        assert!(t("3s..").is_err());
        assert!(t("end+1s").is_err());
        // The built-in schedules' arithmetic: (0.2 * d) * 1000, truncated.
        let odd = Duration::from_millis(37_777);
        assert_eq!(
            Point::Share(0.2).ms(odd),
            ((0.2 * odd.as_secs_f64()) * 1000.0) as u64
        );
    }

    #[test]
    fn a_fixed_time_draws_nothing_and_a_range_always_draws() {
        let d = Duration::from_secs(60);
        let mut a = SmallRng::seed_from_u64(1);
        let mut b = SmallRng::seed_from_u64(1);
        let fixed: Time = "12s".parse().unwrap();
        assert_eq!(fixed.draw(&mut a, d), Duration::from_secs(12));
        let range: Time = "1s..3s".parse().unwrap();
        let x = range.draw(&mut a, d);
        assert_eq!(x, Duration::from_millis(b.random_range(1000..=3000)));
        let point_range: Time = "2s..2s".parse().unwrap();
        point_range.draw(&mut a, d);
        b.random_range(2000u64..=2000);
        assert_eq!(a.random::<u64>(), b.random::<u64>());
    }
}
