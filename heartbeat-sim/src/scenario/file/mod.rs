//! Scenario files: the TOML format `heartbeat-sim run --file` reads (documented field by field
//! in `SCENARIOS.md`), read into a validated [`Spec`] that expands, per seed, into a
//! [`Scenario`](crate::Scenario).
//!
//! Every error names the file, the line and column, the field, and what was expected: syntax
//! and type errors come from the `toml` crate with their spans; everything the types cannot say
//! (an unknown client, a stop before a start, an interval out of range) is checked here against
//! the span of the offending field.
//!
//! The file as serde reads it is in `raw`, the errors that point into it in `error`; `read`
//! and `entries` check it into a [`Spec`] (defined here, with the validated pieces it holds);
//! `expand` turns a [`Spec`] into a [`Scenario`](crate::Scenario) per run.

use std::ops::Range;
use std::str::FromStr;
use std::time::Duration;

use heartbeat_core::config::Backoff;
use heartbeat_core::detector::DetectorConfig;

use crate::scenario::time::Time;
use crate::scenario::{ClientRule, Expectation, Latency, Source};

mod entries;
mod error;
mod expand;
mod raw;
mod read;
#[cfg(test)]
mod tests;

/// The most clients a scenario may have.
pub const MAX_CLIENTS: usize = 1000;

/// The most actions a scenario may expand to (a repetition too frequent for its duration).
pub const MAX_ACTIONS: usize = 100_000;

/// A byte range of the file.
type Span = Range<usize>;

/// A scenario file, read and validated: everything but what depends on the run's parameters
/// (the seed, `--duration`, `--clients`, `--latency`) and on the schedule RNG.
#[derive(Clone, Debug)]
pub struct Spec {
    /// The path as given (shown in errors and replay commands), or the built-in's name.
    path: String,
    /// The file's text, for error messages.
    text: String,
    source: Source,
    /// Its name: the `name` field, or the file name without `.toml`.
    pub name: String,
    /// Its one-line summary.
    pub summary: String,
    /// The seeds `check` runs, `A..B`.
    pub seeds: Range<u64>,
    duration: Duration,
    min_duration: Option<Duration>,
    latency: Latency,
    detector: Option<DetectorConfig>,
    count: usize,
    min_clients: usize,
    max_clients: usize,
    defaults: Settings,
    clients: Vec<Entry>,
    actions: Vec<ActionSpec>,
    expect: Vec<ExpectSpec>,
}

/// The settings of a client, as `[clients]` or one `[[client]]` gives them.
#[derive(Clone, Debug, Default)]
struct Settings {
    /// The interval, and where it was given.
    interval: Option<(Duration, Span)>,
    latency: Option<Latency>,
    /// The ack timeout, and where it was given.
    ack_timeout: Option<(Duration, Span)>,
    reconnect: Option<Option<Backoff>>,
    legacy: Option<bool>,
}

impl Settings {
    /// `self`, with what it leaves unset taken from `base`.
    fn over(&self, base: &Self) -> Self {
        Self {
            interval: self.interval.clone().or_else(|| base.interval.clone()),
            latency: self.latency.or(base.latency),
            ack_timeout: self
                .ack_timeout
                .clone()
                .or_else(|| base.ack_timeout.clone()),
            reconnect: self.reconnect.or(base.reconnect),
            legacy: self.legacy.or(base.legacy),
        }
    }
}

/// One `[[client]]` entry.
#[derive(Clone, Debug)]
struct Entry {
    /// Its id, and where it was given.
    id: Option<(String, Span)>,
    settings: Settings,
}

/// Which nodes an action or expectation is about (`on`).
#[derive(Clone, Debug, PartialEq)]
enum Target {
    /// Every client, in order.
    Each,
    /// Clients by id.
    Ids(Vec<String>),
    /// The last client.
    Last,
    /// A random subset of the clients (its size drawn from the range), in random order.
    Random(CountRange),
    /// The server.
    Server,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Each => f.write_str("each"),
            Self::Ids(ids) => f.write_str(&ids.join(",")),
            Self::Last => f.write_str("last"),
            Self::Random(r) => write!(f, "random {}", r.text),
            Self::Server => f.write_str("server"),
        }
    }
}

/// A number of clients: `2`, `50%` (of the clients, rounded up), or a range drawn from.
#[derive(Clone, Debug, PartialEq)]
struct CountRange {
    lo: Count,
    hi: Option<Count>,
    text: String,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Count {
    Clients(usize),
    Share(f64),
}

impl Count {
    fn of(self, n: usize) -> usize {
        match self {
            Self::Clients(k) => k.min(n),
            Self::Share(s) => ((s * n as f64).ceil() as usize).min(n),
        }
    }
}

impl FromStr for CountRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let one = |x: &str| -> Result<Count, String> {
            let x = x.trim();
            if let Some(p) = x.strip_suffix('%') {
                let share: f64 = p
                    .parse()
                    .ok()
                    .filter(|v: &f64| (0.0..=100.0).contains(v))
                    .ok_or_else(|| format!("expected a percentage from 0% to 100%, got {x:?}"))?;
                return Ok(Count::Share(share / 100.0));
            }
            x.parse()
                .map(Count::Clients)
                .map_err(|_| format!("expected a number of clients or a percentage, got {x:?}"))
        };
        let (lo, hi) = match s.split_once("..") {
            Some((a, b)) => (one(a)?, Some(one(b)?)),
            None => (one(s)?, None),
        };
        Ok(Self {
            lo,
            hi,
            text: s.trim().to_owned(),
        })
    }
}

/// What an action does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Crash,
    Hold,
    Latency,
    Partition,
    Release,
    Repair,
    Restart,
    Start,
    Stop,
    Swizzle,
}

impl Kind {
    const ALL: [(&'static str, Self); 10] = [
        ("crash", Self::Crash),
        ("hold", Self::Hold),
        ("latency", Self::Latency),
        ("partition", Self::Partition),
        ("release", Self::Release),
        ("repair", Self::Repair),
        ("restart", Self::Restart),
        ("start", Self::Start),
        ("stop", Self::Stop),
        ("swizzle", Self::Swizzle),
    ];
}

/// A time field of an action, with its span.
#[derive(Clone, Debug)]
struct TimeField {
    time: Time,
    span: Span,
}

/// One `[[action]]` entry, validated.
#[derive(Clone, Debug)]
struct ActionSpec {
    /// Its index in the file, for messages (`action[2]`).
    index: usize,
    kind: Kind,
    on: Target,
    on_span: Span,
    at: TimeField,
    length: Option<TimeField>,
    every: Option<TimeField>,
    until: Option<TimeField>,
    to: Option<TimeField>,
    silent: bool,
    clog_spread: Time,
    release_spread: Time,
}

/// One `[[expect]]` entry, validated.
#[derive(Clone, Debug)]
enum ExpectSpec {
    Named(Expectation),
    Client {
        on: Target,
        on_span: Span,
        rule: ClientRule,
        /// The rule as the verdict names it (`missed == 0`).
        text: String,
    },
}

impl Spec {
    /// Client `i`'s id: its entry's, or `c{i+1}`.
    fn id_of(&self, i: usize) -> String {
        self.clients
            .get(i)
            .and_then(|e| e.id.as_ref().map(|(id, _)| id.clone()))
            .unwrap_or_else(|| format!("c{}", i + 1))
    }

    /// The file's text (a built-in's is embedded in the binary).
    pub fn text(&self) -> &str {
        &self.text
    }
}
