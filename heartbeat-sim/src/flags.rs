//! The grammar of the command line's values that the library's files and flags share: seed
//! ranges and durations. One parser per kind of value (STYLE.md section 9).

use std::ops::Range;
use std::time::Duration;

/// Parses a seed range `A..B` (B exclusive, non-empty).
pub fn parse_seeds(s: &str) -> Result<Range<u64>, String> {
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| format!("expected A..B, got {s:?}"))?;
    let a: u64 = a.parse().map_err(|_| format!("invalid seed {a:?}"))?;
    let b: u64 = b.parse().map_err(|_| format!("invalid seed {b:?}"))?;
    if b <= a {
        return Err(format!("empty seed range {s:?}"));
    }
    Ok(a..b)
}

/// Reads a duration flag of `heartbeat-sim` (`run`, `qos`, `tune`): the one grammar
/// ([`heartbeat_core::parse_duration_or_secs`]: `90s`, `1500ms`, `10m`, `10min`, `1h`, `7d`,
/// and a bare number of seconds as these flags always took), more than zero.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    match heartbeat_core::parse_duration_or_secs(s) {
        Ok(d) if d.is_zero() => Err(format!("invalid duration {s:?}: must be more than 0")),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_seeds() {
        let d = |s| parse_duration(s);
        assert_eq!(d("600"), Ok(Duration::from_secs(600)));
        assert_eq!(d("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(d("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(d("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(d("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(d("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(d("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(d("10min"), Ok(Duration::from_secs(600)));
        for bad in ["", "0", "0s", "x", "-1s", "2w"] {
            assert!(d(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_seeds("1..11"), Ok(1..11));
        assert!(parse_seeds("3..3").is_err());
    }
}
