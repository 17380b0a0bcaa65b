//! The one grammar for durations: every duration flag of every binary, every duration field of a
//! scenario or expect file, and the fixed form of a detector [`Span`](crate::detector::Span)
//! read through [`parse_duration`], so `10m` means the same everywhere and a bad value gets the
//! same sentence everywhere.
//!
//! A duration is a decimal number and a unit: `250ms`, `1.5s`, `10m` or `10min`, `2h`, `7d`
//! (also `us` and `ns`). It is exact: `1.001s` is 1001 ms, with no float rounding; digits past
//! the nanosecond are refused. A few flags took a bare number of seconds before this grammar
//! existed (`heartbeat-sim run --duration 60`); they read it through [`parse_duration_or_secs`],
//! the same grammar plus that one form. The seed's `-i` (milliseconds, as Python's `int()`
//! reads them) is not a duration of this grammar and keeps its own reading.

use std::time::Duration;

use thiserror::Error;

/// A text that is not a duration of the grammar.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error(
    "invalid duration {text:?}: expected a number and a unit, such as 250ms, 1.5s, 10m (or \
     10min), 2h or 7d{}",
    if *.bare_secs { "; a bare number is seconds" } else { "" }
)]
pub struct DurationError {
    /// The text as given.
    pub text: String,
    /// Whether a bare number (seconds) was accepted too.
    pub bare_secs: bool,
}

/// The units, longest suffix first so `ms` and `min` are not read as `s` and `m`.
const UNITS: [(&str, u128); 8] = [
    ("min", 60_000_000_000),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("ns", 1),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
    ("d", 86_400_000_000_000),
];

/// Parses a duration with its unit: `250ms`, `1.5s`, `10m`, `10min`, `2h`, `7d`, `100us`,
/// `10ns`. Zero is a duration (`0s`); whether a value may be zero is the caller's rule.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    parse(s, false)
}

/// [`parse_duration`], and a bare number as seconds (`90` is `90s`), for the flags that read
/// seconds before the grammar was one.
pub fn parse_duration_or_secs(s: &str) -> Result<Duration, DurationError> {
    parse(s, true)
}

fn parse(s: &str, bare_secs: bool) -> Result<Duration, DurationError> {
    let bad = || DurationError {
        text: s.to_owned(),
        bare_secs,
    };
    let t = s.trim();
    let (number, per) = match UNITS.iter().find(|(unit, _)| t.ends_with(unit)) {
        Some(&(unit, per)) => (&t[..t.len() - unit.len()], per),
        None if bare_secs => (t, 1_000_000_000),
        None => return Err(bad()),
    };
    let nanos = decimal_times(number, per).ok_or_else(bad)?;
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| bad())?;
    Ok(Duration::new(secs, (nanos % 1_000_000_000) as u32))
}

/// `number` (digits, optionally `.` and digits) times `per`, exactly; `None` if it is not such
/// a number, overflows, or has digits finer than a unit of one.
fn decimal_times(number: &str, per: u128) -> Option<u128> {
    let (whole, frac) = match number.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (number, None),
    };
    let digits = |x: &str| !x.is_empty() && x.len() <= 30 && x.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || frac.is_some_and(|f| !digits(f)) {
        return None;
    }
    let mut total = whole.parse::<u128>().ok()?.checked_mul(per)?;
    if let Some(frac) = frac {
        let scale = 10u128.checked_pow(frac.len() as u32)?;
        let part = frac.parse::<u128>().ok()?.checked_mul(per)?;
        if part % scale != 0 {
            return None;
        }
        total = total.checked_add(part / scale)?;
    }
    Some(total)
}

/// A duration as the grammar writes it, in the largest unit that shows it exactly: `2h`,
/// `10m`, `1500ms`, `250us`, `10ns`; zero is `0s`.
pub fn fmt_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".to_owned();
    }
    for (unit, per) in [
        ("d", 86_400_000_000_000u128),
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
    ] {
        if ns % per == 0 {
            return format!("{}{unit}", ns / per);
        }
    }
    format!("{ns}ns")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn every_form_of_the_grammar() {
        let cases = [
            ("250ms", ms(250)),
            ("1.5s", ms(1500)),
            ("1.001s", ms(1001)),
            ("10m", ms(600_000)),
            ("10min", ms(600_000)),
            ("2h", ms(7_200_000)),
            ("7d", ms(604_800_000)),
            ("0.5ms", Duration::from_micros(500)),
            ("100us", Duration::from_micros(100)),
            ("10ns", Duration::from_nanos(10)),
            (" 2s ", ms(2000)),
            ("0s", Duration::ZERO),
        ];
        for (text, d) in cases {
            assert_eq!(parse_duration(text), Ok(d), "{text}");
            assert_eq!(parse_duration_or_secs(text), Ok(d), "{text}");
        }
        assert_eq!(parse_duration_or_secs("90"), Ok(ms(90_000)));
        assert_eq!(parse_duration_or_secs("1.5"), Ok(ms(1500)));
    }

    #[test]
    fn a_bad_duration_gets_the_one_sentence() {
        for bad in [
            "",
            "90",
            "s",
            "1.s",
            ".5s",
            "-1s",
            "1e3ms",
            "1 0s",
            "inf s",
            "3 x",
            "1.5ns",
            "2w",
            "1_000ms",
            "99999999999999999999999999d",
        ] {
            let e = parse_duration(bad).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!(
                    "invalid duration {bad:?}: expected a number and a unit, such as 250ms, \
                     1.5s, 10m (or 10min), 2h or 7d"
                )
            );
        }
        assert!(
            parse_duration_or_secs("x")
                .unwrap_err()
                .to_string()
                .ends_with("; a bare number is seconds")
        );
    }

    #[test]
    fn written_as_read() {
        for text in ["1d", "2h", "10m", "90s", "1500ms", "250us", "10ns", "0s"] {
            assert_eq!(fmt_duration(parse_duration(text).unwrap()), text);
        }
    }
}
