//! `heartbeat-sim timeline` and `heartbeat-sim run --svg`: the command lines.

use std::process::ExitCode;
use std::time::Duration;

use super::{Timeline, svg};
use crate::harness::world::Outcome;
use crate::serverlog::ServerLog;

/// Writes `svg` to `path`, or says why not.
fn write(path: &str, svg: &str) -> Result<(), String> {
    std::fs::write(path, svg).map_err(|e| format!("cannot write {path}: {e}"))
}

/// The UTC date and time of Unix time `ns`: `2023-11-14 22:13:20 UTC`.
fn utc(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil from days (Howard Hinnant's algorithm), for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// A length for people: `12.345 s`, `12 min 3 s`, `3 h 12 min` or `6 d 23 h`.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => svg::seconds(d),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        3600..86_400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

/// The timeline of a real server's log.
pub fn of_log(log: &ServerLog, file: &str) -> Timeline {
    let mut t = super::build(log, Duration::ZERO, &[], &[], None);
    t.title = format!("heartbeat-sim timeline {file}");
    let n = log.clients.len();
    t.subtitle = format!(
        "{n} client{} from {} over {}; {} server run{}",
        if n == 1 { "" } else { "s" },
        utc(log.origin_unix_ns),
        human(log.end),
        log.stats.runs,
        if log.stats.runs == 1 { "" } else { "s" },
    );
    t
}

/// Runs `heartbeat-sim timeline` on the log at `events` (`-` for standard input), writing the
/// picture to `svg_path`: 0 on success, 1 when the log cannot be read or the picture written, 2
/// for a log without events.
pub fn main(events: &str, svg_path: &str) -> ExitCode {
    let jobs = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let log = match ServerLog::open(events, jobs) {
        Ok(log) => log,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    for (line, why) in &log.stats.errors {
        eprintln!("warning: {}:{line}: malformed, skipped: {why}", events);
    }
    if log.items.is_empty() {
        eprintln!("error: {}: no server events", events);
        return ExitCode::from(2);
    }
    match write(svg_path, &svg::render(&of_log(&log, events))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `run --svg PATH`: the run's timeline written to `path`; `Err` says why not.
pub fn write_run(out: &Outcome, path: &str) -> Result<(), String> {
    write(path, &svg::render(&super::of_run(out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_for_people() {
        let h = |s: u64| human(Duration::from_secs(s));
        assert_eq!(human(Duration::from_millis(12_345)), "12.345 s");
        assert_eq!(
            (h(723), h(11_520), h(604_799)),
            ("12 min 3 s".into(), "3 h 12 min".into(), "6 d 23 h".into())
        );
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_700_000_000_000_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(utc(951_782_400_000_000_000), "2000-02-29 00:00:00 UTC");
    }
}
