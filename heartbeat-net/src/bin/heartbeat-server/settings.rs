//! `--client-settings FILE`: detector settings per client, read at start and again on SIGHUP,
//! so `heartbeat-sim tune`'s per-class advice can be applied as it is given. The rules go to
//! the core ([`Server::set_client_detectors`](heartbeat_core::server::Server::set_client_detectors)).
//!
//! ```toml
//! # heartbeat-server --client-settings /etc/heartbeat/clients.toml
//! [[client]]
//! match = "web-*"             # an exact id or a glob (* and ?); the first match wins
//! detector = "phi"
//! acceptable-pause = "2800ms" # the same names and grammar as the server's flags
//! ```
//!
//! Each `[[client]]` entry needs a `match`; the other keys are the detector flags' names
//! without `--` (`detector`, `grace`, `threshold`, ...), each value a string as on the command
//! line or a number, read by the flags' own parsers ([`DetectorArgs::from_settings`]): without
//! `detector`, phi, as for the flag. A client no entry matches gets the server's `--detector`.
//! Anything else (an unknown key, a bad value, a parameter the detector does not take) is an
//! error naming the file and the line.
//!
//! `advise-interval = "200ms"` (a duration of 1 ms to 1 day, the flags' grammar) makes the
//! server advise the entry's clients to send at that interval, if they asked for advice
//! (`heartbeat-client --follow-advice`; `PROTOCOL.md`, "Advice (negotiated)"). An entry with
//! `advise-interval` alone keeps the server's detector for its clients.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use heartbeat_core::detector::{ClientDetectors, ClientRule};
use heartbeat_core::frame::MAX_INTERVAL_MS;
use heartbeat_net::cli::{self, DetectorArgs};
use serde::Deserialize;
use toml::Spanned;

use super::conffile::{self, FileError};

/// The key of the interval advised to an entry's clients.
const ADVISE_KEY: &str = "advise-interval";

/// The interval of an `advise-interval` value: the flags' duration grammar, 1 ms to the
/// longest interval the wire carries (one day).
fn advise_interval(value: &str) -> Result<Duration, String> {
    let d = cli::duration(value)?;
    let max = Duration::from_millis(MAX_INTERVAL_MS);
    if d < Duration::from_millis(1) || d > max {
        return Err(format!(
            "{ADVISE_KEY}: {value:?} is not an interval of 1ms to 1d"
        ));
    }
    Ok(d)
}

/// The file's shape: `[[client]]` tables, each key's value with its place.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    client: Vec<Spanned<BTreeMap<Spanned<String>, Spanned<toml::Value>>>>,
}

/// Reads the settings file at `path`.
pub(crate) fn load(path: &Path) -> Result<ClientDetectors, FileError> {
    conffile::load(path, parse)
}

/// The line (from 1) of byte `offset` of `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Parses a settings file's text; an error as its line number (from 1) and what is wrong.
pub(crate) fn parse(text: &str) -> Result<ClientDetectors, (usize, String)> {
    let file: File = toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(1, |s| line_of(text, s.start));
        (line, e.message().to_owned())
    })?;
    let mut rules = Vec::new();
    for entry in &file.client {
        let at = |span: std::ops::Range<usize>| line_of(text, span.start);
        let entry_line = at(entry.span());
        let mut pattern = None;
        let mut settings: Vec<(&str, String, usize)> = Vec::new();
        for (key, value) in entry.get_ref() {
            let line = at(value.span());
            let shown = match value.get_ref() {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(n) => n.to_string(),
                toml::Value::Float(x) => x.to_string(),
                other => {
                    return Err((
                        line,
                        format!(
                            "{}: a string or a number, not a {}",
                            key.get_ref(),
                            other.type_str()
                        ),
                    ));
                }
            };
            if key.get_ref() == "match" {
                if !matches!(value.get_ref(), toml::Value::String(_)) || shown.is_empty() {
                    return Err((line, "match: a client id or a glob, as a string".into()));
                }
                pattern = Some(shown);
            } else {
                settings.push((key.get_ref(), shown, line));
            }
        }
        // In the file's order, as on a command line.
        settings.sort_by_key(|&(_, _, line)| line);
        let Some(pattern) = pattern else {
            return Err((entry_line, "a [[client]] entry without a match".into()));
        };
        let mut advice = None;
        if let Some(i) = settings.iter().position(|&(k, _, _)| k == ADVISE_KEY) {
            let (_, value, line) = settings.remove(i);
            let interval =
                advise_interval(&value).map_err(|why| (line, format!("{pattern}: {why}")))?;
            advice = Some(interval);
        }
        if let (Some(interval), true) = (advice, settings.is_empty()) {
            rules.push(ClientRule::advice_only(pattern, interval));
            continue;
        }
        let config = DetectorArgs::from_settings(settings.iter().map(|(k, v, _)| (*k, v.as_str())))
            .map_err(|why| {
                // The line of the setting the error names, else the entry's.
                let flag = settings
                    .iter()
                    .find(|(k, _, _)| why.contains(&format!("'--{k}")));
                let named = || {
                    settings
                        .iter()
                        .find(|(k, _, _)| *k != "detector" && why.contains(*k))
                };
                let line = flag.or_else(named).map_or(entry_line, |&(_, _, line)| line);
                (line, format!("{pattern}: {why}"))
            })?;
        let rule = ClientRule::new(pattern, config);
        rules.push(match advice {
            Some(interval) => rule.with_advice(interval),
            None => rule,
        });
    }
    Ok(ClientDetectors::new(rules))
}

/// One line on what a loaded file holds: `3 rule(s): web-* phi acceptable-pause=2800ms; ...`.
pub(crate) fn describe(rules: &ClientDetectors) -> String {
    let shown: Vec<String> = rules
        .rules()
        .iter()
        .map(|r| {
            let mut line = r.pattern().to_owned();
            if let Some(config) = r.config() {
                line.push_str(&format!(" {config}"));
            }
            if let Some(interval) = r.advice() {
                line.push_str(&format!(
                    " {ADVISE_KEY}={}",
                    heartbeat_core::units::fmt_duration(interval)
                ));
            }
            line
        })
        .collect();
    if shown.is_empty() {
        "no rule".to_owned()
    } else {
        format!("{} rule(s): {}", shown.len(), shown.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_become_rules_in_order() {
        let rules = parse(
            r#"
# tune's advice
[[client]]
match = "web-*"
detector = "phi"
acceptable-pause = "2800ms"

[[client]]
match = "batch-1"
detector = "fixed"
grace = "1x"

[[client]]
match = "db"
detector = "phi-exp"
threshold = 12
"#,
        )
        .unwrap();
        assert_eq!(
            describe(&rules),
            "3 rule(s): web-* phi threshold=8 min-std-deviation=100ms acceptable-pause=2800ms \
             window=128 first-heartbeat-estimate=1x; batch-1 fixed grace=1x; db phi-exp \
             threshold=12 window=128 initial-interval=2x"
        );
        assert_eq!(
            rules.config_for("web-7").map(ToString::to_string),
            rules
                .rules()
                .first()
                .and_then(|r| r.config())
                .map(ToString::to_string)
        );
        assert_eq!(parse("").unwrap(), ClientDetectors::default());
    }

    #[test]
    fn an_entry_may_advise_an_interval() {
        let rules = parse(
            r#"
[[client]]
match = "web-*"
advise-interval = "200ms"

[[client]]
match = "db"
detector = "fixed"
advise-interval = "1.5s"
"#,
        )
        .unwrap();
        assert_eq!(
            describe(&rules),
            "2 rule(s): web-* advise-interval=200ms; db fixed grace=2x advise-interval=1500ms"
        );
        // Advice alone keeps the server's detector.
        assert_eq!(rules.config_for("web-1"), None);
        assert_eq!(rules.advice_for("web-1"), Some(Duration::from_millis(200)));
        assert_eq!(rules.advice_for("db"), Some(Duration::from_millis(1500)));
        assert_eq!(rules.advice_for("api"), None);
        for (value, what) in [
            ("\"0ms\"", "more than 0"),
            ("\"2d\"", "1ms to 1d"),
            ("\"500us\"", ""),
            ("\"fast\"", ""),
        ] {
            let text = format!("[[client]]\nmatch = \"a\"\nadvise-interval = {value}\n");
            let (line, why) = parse(&text).unwrap_err();
            assert_eq!(line, 3, "{value}: {why}");
            assert!(why.contains(what), "{value}: {why}");
        }
    }

    #[test]
    fn errors_name_the_line() {
        for (text, line, what) in [
            (
                "[[client]]\nmatch = \"a\"\ngrace = \"3 parsecs\"\ndetector = \"fixed\"\n",
                3,
                "--grace",
            ),
            (
                "[[client]]\nmatch = \"a\"\ndetector = \"fixed\"\nthreshold = 3\n",
                4,
                "threshold",
            ),
            (
                "[[client]]\nmatch = \"a\"\nbogus = \"1\"\n",
                3,
                "unknown setting",
            ),
            ("[[client]]\ndetector = \"fixed\"\n", 1, "without a match"),
            ("[[client]]\nmatch = 3\n", 2, "match"),
            (
                "[[client]]\nmatch = \"a\"\ngrace = true\n",
                3,
                "not a boolean",
            ),
            ("[[client]]\nmatch = \"a\"\n\nthis is not toml\n", 4, ""),
            ("[[clients]]\nmatch = \"a\"\n", 1, "clients"),
        ] {
            let (l, why) = parse(text).unwrap_err();
            assert_eq!(l, line, "{text:?}: {why}");
            assert!(why.contains(what), "{text:?}: {why}");
            assert!(!why.contains('\n'), "{why:?}");
        }
    }
}
