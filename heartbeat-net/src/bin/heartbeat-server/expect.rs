//! `--expect FILE`: the clients that should be there, read from a file and handed to the core
//! ([`Server::set_expected`](heartbeat_core::server::Server::set_expected)), at start and again
//! on SIGHUP.
//!
//! One client a line: its id, and optionally the interval it promises as a duration of the one
//! grammar (`web-01 1000ms`, `db 5s`, `batch 2min`); without one, [`DEFAULT_INTERVAL`]. `#` starts a
//! comment (whole line or the rest of a line); blank lines are skipped. An id twice, a bad id
//! or a bad interval is an error naming the file and the line.

use std::path::Path;
use std::time::Duration;

use heartbeat_core::ClientId;
use heartbeat_core::server::Expected;

use super::conffile::{self, FileError};

/// The interval of an expected client whose line gives none: 1 s, the client's default.
pub(crate) const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

/// Reads the expect file at `path`; every client gets `grace` (`None`: the detector's, see
/// [`Expected::grace`]).
pub(crate) fn load(path: &Path, grace: Option<Duration>) -> Result<Vec<Expected>, FileError> {
    conffile::load(path, |text| parse(text, grace))
}

/// Parses an expect file's text; a syntax error as its line number (from 1) and what is wrong.
pub(crate) fn parse(text: &str, grace: Option<Duration>) -> Result<Vec<Expected>, (usize, String)> {
    let mut list: Vec<Expected> = Vec::new();
    let mut seen = std::collections::BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let mut fields = line.split_whitespace();
        let id = fields.next().unwrap_or_default();
        let client = ClientId::new(id).map_err(|e| (n, format!("client id {id:?}: {e}")))?;
        let interval = match fields.next() {
            Some(s) => parse_interval(s).map_err(|why| (n, why))?,
            None => DEFAULT_INTERVAL,
        };
        if let Some(extra) = fields.next() {
            return Err((
                n,
                format!("unexpected {extra:?}: a line is an id and an optional interval"),
            ));
        }
        if let Some(first) = seen.insert(client.clone(), n) {
            return Err((n, format!("{client} again (first on line {first})")));
        }
        list.push(Expected {
            client,
            interval,
            grace,
        });
    }
    Ok(list)
}

/// `1000ms`, `1.5s`, `2min`: positive, whole milliseconds, at most a day (what a client can
/// declare).
fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = heartbeat_net::cli::duration(s).map_err(|e| format!("interval: {e}"))?;
    if d.subsec_nanos() % 1_000_000 != 0 || d > Duration::from_secs(86_400) {
        return Err(format!("interval {s:?}: whole milliseconds, at most a day"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn ids_with_and_without_intervals_comments_and_blanks() {
        let text = "# the web tier\nweb-01 1000ms\nweb-02   250ms  # fast\n\n  db\nbatch 2min\n";
        let list = parse(text, None).unwrap();
        let got: Vec<(&str, Duration)> = list
            .iter()
            .map(|e| (e.client.as_str(), e.interval))
            .collect();
        assert_eq!(
            got,
            [
                ("web-01", ms(1000)),
                ("web-02", ms(250)),
                ("db", DEFAULT_INTERVAL),
                ("batch", ms(120_000)),
            ]
        );
        assert!(list.iter().all(|e| e.grace.is_none()));
        let graced = parse("a\n", Some(ms(5000))).unwrap();
        assert_eq!(graced[0].grace, Some(ms(5000)));
    }

    #[test]
    fn errors_name_the_line() {
        let err = |text| parse(text, None).unwrap_err();
        assert_eq!(err("a\nb 10\n").0, 2);
        assert!(
            err("a\nb 10\n").1.contains("unit"),
            "{:?}",
            err("a\nb 10\n")
        );
        assert_eq!(
            err("a 1s\n\na 2s\n"),
            (3, "a again (first on line 1)".into())
        );
        assert_eq!(err("a 1s extra\n").0, 1);
        assert_eq!(err("a 1.5ms\n").0, 1);
        assert_eq!(err("a 2d\n").0, 1);
        assert_eq!(err(&format!("{}\n", "x".repeat(300))).0, 1);
        assert!(parse("", None).unwrap().is_empty());
    }
}
