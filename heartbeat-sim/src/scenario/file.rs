//! Scenario files: the TOML format `heartbeat-sim run --file` reads (documented field by field
//! in `SCENARIOS.md`), read into a validated [`Spec`] that expands, per seed, into a
//! [`Scenario`].
//!
//! Every error names the file, the line and column, the field, and what was expected: syntax
//! and type errors come from the `toml` crate with their spans; everything the types cannot say
//! (an unknown client, a stop before a start, an interval out of range) is checked here against
//! the span of the offending field.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::marker::PhantomData;
use std::ops::Range;
use std::str::FromStr;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use toml::Spanned;

use heartbeat_core::ClientId;
use heartbeat_core::config::{Backoff, ClientConfig};
use heartbeat_core::detector::DetectorConfig;
use heartbeat_core::liveness::Liveness;
use heartbeat_net::cli::DetectorArgs;

use super::time::{Point, Time, fmt_duration, parse_duration};
use super::{
    Action, ClientPlan, ClientRule, Cmp, Counter, Expectation, Latency, Node, Params, Scenario,
    Source, TICK, Timed,
};

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

// ---- the raw file, as serde reads it ----

/// A value read from a TOML string by its `FromStr`, which says what it expected.
struct Text<T>(T);

trait Textual: FromStr<Err = String> {
    const EXPECTING: &'static str;
}

impl<'de, T: Textual> Deserialize<'de> for Text<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<T: Textual> Visitor<'_> for V<T> {
            type Value = Text<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(T::EXPECTING)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Text<T>, E> {
                s.parse().map(Text).map_err(E::custom)
            }
        }
        d.deserialize_str(V(PhantomData))
    }
}

/// A fixed duration with a unit.
struct Dur(Duration);

impl FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_duration(s).map(Self)
    }
}

impl Textual for Dur {
    const EXPECTING: &'static str = "a duration with a unit, such as \"500ms\" or \"2s\"";
}

impl Textual for Time {
    const EXPECTING: &'static str =
        "a time such as \"12s\", \"40%\", \"end-5s\", or a range such as \"20%..60%\"";
}

/// A link latency: fixed (`"10ms"`) or a range drawn per message (`"1ms..50ms"`).
struct FileLatency(Latency);

impl FromStr for FileLatency {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Latency::parse(s).map(Self)
    }
}

impl Textual for FileLatency {
    const EXPECTING: &'static str = "a latency such as \"10ms\" or \"1ms..50ms\"";
}

/// A seed range `A..B` (B excluded).
struct Seeds(Range<u64>);

impl FromStr for Seeds {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        crate::flags::parse_seeds(s).map(Self)
    }
}

impl Textual for Seeds {
    const EXPECTING: &'static str = "a seed range such as \"1..5\" (5 excluded)";
}

impl Textual for CountRange {
    const EXPECTING: &'static str = "a number of clients such as \"2\", \"50%\" or \"50%..100%\"";
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawFile {
    name: Option<Spanned<String>>,
    summary: Option<String>,
    seeds: Option<Text<Seeds>>,
    duration: Option<Spanned<Text<Dur>>>,
    min_duration: Option<Spanned<Text<Dur>>>,
    latency: Option<Text<FileLatency>>,
    detector: Option<Spanned<BTreeMap<String, Spanned<toml::Value>>>>,
    clients: Option<RawClient>,
    #[serde(default)]
    client: Vec<RawClient>,
    #[serde(default)]
    action: Vec<RawAction>,
    #[serde(default)]
    expect: Vec<Spanned<RawExpect>>,
}

/// `[clients]` (defaults, count, min, max) or one `[[client]]` (id, its own settings).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawClient {
    id: Option<Spanned<String>>,
    count: Option<Spanned<usize>>,
    min: Option<Spanned<usize>>,
    max: Option<Spanned<usize>>,
    interval: Option<Spanned<Text<Dur>>>,
    latency: Option<Text<FileLatency>>,
    ack_timeout: Option<Spanned<Text<Dur>>>,
    protocol: Option<Spanned<String>>,
    reconnect: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawAction {
    #[serde(rename = "do")]
    what: Spanned<String>,
    on: Option<Spanned<toml::Value>>,
    at: Spanned<Text<Time>>,
    #[serde(rename = "for")]
    length: Option<Spanned<Text<Time>>>,
    every: Option<Spanned<Text<Time>>>,
    until: Option<Spanned<Text<Time>>>,
    to: Option<Spanned<Text<Time>>>,
    silent: Option<Spanned<bool>>,
    clog_spread: Option<Spanned<Text<Time>>>,
    release_spread: Option<Spanned<Text<Time>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawExpect {
    check: Option<Spanned<String>>,
    on: Option<Spanned<toml::Value>>,
    state: Option<Spanned<String>>,
    down_within: Option<Spanned<Text<Dur>>>,
    bursts: Option<Spanned<toml::Value>>,
    connections: Option<Spanned<toml::Value>>,
    duplicates: Option<Spanned<toml::Value>>,
    missed: Option<Spanned<toml::Value>>,
    received: Option<Spanned<toml::Value>>,
    restarts: Option<Spanned<toml::Value>>,
}

// ---- errors ----

/// The file's text and name, to point at a span in it.
struct Doc<'a> {
    path: &'a str,
    text: &'a str,
}

impl Doc<'_> {
    /// `PATH:LINE:COL: FIELD: MESSAGE`, then the line with the span underlined.
    fn error(&self, span: &Span, field: &str, message: impl std::fmt::Display) -> String {
        let start = span.start.min(self.text.len());
        let line_start = self.text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_no = self.text[..start].matches('\n').count() + 1;
        let line = self.text[line_start..].lines().next().unwrap_or("");
        let col = self.text[line_start..start].chars().count() + 1;
        let width = self.text[start..span.end.min(self.text.len())]
            .chars()
            .take_while(|&c| c != '\n')
            .count()
            .max(1);
        let gutter = line_no.to_string().len();
        let mut o = format!("{}:{line_no}:{col}: ", self.path);
        if !field.is_empty() {
            let _ = write!(o, "`{field}`: ");
        }
        let _ = writeln!(o, "{message}");
        let _ = writeln!(o, "{:>gutter$} | {line}", line_no);
        let _ = write!(
            o,
            "{:>gutter$} | {}{}",
            "",
            " ".repeat(col - 1),
            "^".repeat(width)
        );
        o
    }

    /// A `toml` error in this file, with the field it is about.
    fn toml_error(&self, e: &toml::de::Error) -> String {
        let span = e.span().unwrap_or(0..0);
        // The error's own path of keys, which `toml` prints only without the input.
        let mut bare = e.clone();
        bare.set_input(None);
        let field = bare
            .to_string()
            .lines()
            .find_map(|l| l.strip_prefix("in `").and_then(|l| l.strip_suffix('`')))
            .map(|path| self.indexed(path, span.start))
            .unwrap_or_else(|| self.key_at(&span));
        self.error(&span, &field, e.message().trim_end())
    }

    /// `action.at` as `action[2].at` when the error is in the third `[[action]]` (toml's key
    /// paths leave out array indices).
    fn indexed(&self, path: &str, at: usize) -> String {
        let (first, rest) = path.split_once('.').unwrap_or((path, ""));
        let header = format!("[[{first}]]");
        // Up to the end of the error's line: a missing field is reported at its table's header.
        let at = at.min(self.text.len());
        let end = self.text[at..]
            .find('\n')
            .map_or(self.text.len(), |i| at + i);
        let before = &self.text[..end];
        match before.lines().filter(|l| l.trim() == header).count() {
            0 => path.to_owned(),
            n if rest.is_empty() => format!("{first}[{}]", n - 1),
            n => format!("{first}[{}].{rest}", n - 1),
        }
    }

    /// The key of the `key = value` line a span is on, if any.
    fn key_at(&self, span: &Span) -> String {
        let start = span.start.min(self.text.len());
        let line_start = self.text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line = self.text[line_start..].lines().next().unwrap_or("");
        match line.split_once('=') {
            Some((key, _)) if line_start + key.len() <= start => key.trim().to_owned(),
            _ => String::new(),
        }
    }
}

// ---- reading ----

impl Spec {
    /// Reads the scenario file at `path`.
    pub fn from_file(path: &str) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        let stem = std::path::Path::new(path)
            .file_stem()
            .map_or_else(|| path.to_owned(), |s| s.to_string_lossy().into_owned());
        Self::parse(path, &stem, &text, Source::File(path.to_owned()))
    }

    /// Reads a scenario file's `text`; `path` names it in errors, `stem` is its name when it
    /// has no `name` field.
    pub fn parse(path: &str, stem: &str, text: &str, source: Source) -> Result<Self, String> {
        let doc = Doc { path, text };
        let raw: RawFile = toml::from_str(text).map_err(|e| doc.toml_error(&e))?;
        let name = raw
            .name
            .map_or_else(|| stem.to_owned(), Spanned::into_inner);
        let duration = match raw.duration {
            Some(d) if d.get_ref().0.0.is_zero() => {
                return Err(doc.error(&d.span(), "duration", "expected more than 0s"));
            }
            Some(d) => d.into_inner().0.0,
            None => super::DURATION,
        };
        let mut spec = Self {
            path: path.to_owned(),
            text: text.to_owned(),
            source,
            name,
            summary: raw.summary.unwrap_or_default(),
            seeds: raw.seeds.map_or(1..5, |s| s.0.0),
            duration,
            min_duration: raw.min_duration.map(|d| d.into_inner().0.0),
            latency: raw.latency.map_or_else(Latency::default, |l| l.0.0),
            detector: None,
            count: 1,
            min_clients: 1,
            max_clients: 64,
            defaults: Settings::default(),
            clients: Vec::new(),
            actions: Vec::new(),
            expect: Vec::new(),
        };
        if let Some(table) = raw.detector {
            spec.detector = Some(detector(&doc, &table)?);
        }
        spec.read_clients(&doc, raw.clients, raw.client)?;
        for (index, a) in raw.action.into_iter().enumerate() {
            let a = action(&doc, index, a)?;
            spec.actions.push(a);
        }
        for (index, e) in raw.expect.into_iter().enumerate() {
            spec.expect.push(expect(&doc, index, e)?);
        }
        spec.check_references(&doc)?;
        Ok(spec)
    }

    /// `[clients]` and the `[[client]]` entries.
    fn read_clients(
        &mut self,
        doc: &Doc<'_>,
        defaults: Option<RawClient>,
        entries: Vec<RawClient>,
    ) -> Result<(), String> {
        let mut count = None;
        if let Some(d) = defaults {
            if let Some(id) = &d.id {
                return Err(doc.error(
                    &id.span(),
                    "clients.id",
                    "ids belong in [[client]] entries; [clients] holds what they share",
                ));
            }
            let bound = |v: &Option<Spanned<usize>>, field: &str| match v {
                Some(n) if *n.get_ref() == 0 || *n.get_ref() > MAX_CLIENTS => Err(doc.error(
                    &n.span(),
                    field,
                    format!("expected 1 to {MAX_CLIENTS} clients, got {}", n.get_ref()),
                )),
                Some(n) => Ok(Some((*n.get_ref(), n.span()))),
                None => Ok(None),
            };
            count = bound(&d.count, "clients.count")?;
            let min = bound(&d.min, "clients.min")?;
            let max = bound(&d.max, "clients.max")?;
            self.min_clients = min.as_ref().map_or(1, |m| m.0);
            self.max_clients = max.as_ref().map_or(64.max(self.min_clients), |m| m.0);
            if self.min_clients > self.max_clients {
                let span = max.map_or(0..0, |m| m.1);
                return Err(doc.error(&span, "clients.max", "max is below min"));
            }
            self.defaults = settings(doc, "clients", &d)?;
        }
        self.count = match count {
            Some((n, span)) => {
                if !(self.min_clients..=self.max_clients).contains(&n) {
                    return Err(doc.error(
                        &span,
                        "clients.count",
                        format!(
                            "expected {} to {} (min to max), got {n}",
                            self.min_clients, self.max_clients
                        ),
                    ));
                }
                n
            }
            None => self.min_clients.max(entries.len()).max(1),
        };
        for (i, e) in entries.into_iter().enumerate() {
            let field = format!("client[{i}]");
            for (v, name) in [(&e.count, "count"), (&e.min, "min"), (&e.max, "max")] {
                if let Some(v) = v {
                    return Err(doc.error(
                        &v.span(),
                        &format!("{field}.{name}"),
                        "the number of clients belongs in [clients]",
                    ));
                }
            }
            let settings = settings(doc, &field, &e)?;
            let id = match &e.id {
                Some(id) => {
                    client_id(doc, &format!("{field}.id"), id)?;
                    Some((id.get_ref().clone(), id.span()))
                }
                None => None,
            };
            self.clients.push(Entry { id, settings });
        }
        // Each client's settings together must make a valid client (an ack timeout from
        // [clients] against the interval of one [[client]]).
        for i in 0..self.count.max(self.clients.len()) {
            let own = self
                .clients
                .get(i)
                .map(|e| e.settings.clone())
                .unwrap_or_default();
            let merged = own.over(&self.defaults);
            let interval = merged.interval.as_ref().map_or(super::INTERVAL, |iv| iv.0);
            if let Some((t, span)) = merged.ack_timeout.filter(|(t, _)| *t <= interval) {
                let field = if own.ack_timeout.is_some() {
                    format!("client[{i}].ack-timeout")
                } else {
                    "clients.ack-timeout".to_owned()
                };
                return Err(doc.error(
                    &span,
                    &field,
                    format!(
                        "{}'s ack timeout ({}) must exceed its interval ({})",
                        self.id_of(i),
                        fmt_duration(t),
                        fmt_duration(interval)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Every client id an action or expectation names must be one of the clients the file can
    /// have: a `[[client]]` id, or `cK` for a client without an entry, K up to `max`.
    fn check_references(&self, doc: &Doc<'_>) -> Result<(), String> {
        let ids: Vec<String> = (0..self.max_clients).map(|i| self.id_of(i)).collect();
        let mut seen = BTreeMap::new();
        for (i, id) in ids.iter().enumerate() {
            if let Some(j) = seen.insert(id.clone(), i) {
                let span = [i, j]
                    .into_iter()
                    .find_map(|k| self.clients.get(k).and_then(|e| e.id.as_ref()))
                    .map_or(0..0, |(_, span)| span.clone());
                return Err(doc.error(
                    &span,
                    "client.id",
                    format!(
                        "clients {} and {} would both be named {id:?} (a client without an \
                         entry is cK, K its place)",
                        j + 1,
                        i + 1
                    ),
                ));
            }
        }
        let targets = self
            .actions
            .iter()
            .map(|a| (format!("action[{}].on", a.index), &a.on, &a.on_span))
            .chain(self.expect.iter().enumerate().filter_map(|(k, e)| match e {
                ExpectSpec::Client { on, on_span, .. } => {
                    Some((format!("expect[{k}].on"), on, on_span))
                }
                ExpectSpec::Named(_) => None,
            }));
        for (field, on, span) in targets {
            if let Target::Ids(list) = on {
                for id in list {
                    if !ids.contains(id) {
                        return Err(doc.error(
                            span,
                            &field,
                            format!(
                                "no client is named {id:?}; the clients are {}",
                                self.names_for_error()
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn names_for_error(&self) -> String {
        let n = self.count.max(self.clients.len());
        let mut names: Vec<String> = (0..n.min(8)).map(|i| self.id_of(i)).collect();
        if n > 8 {
            names.push(format!("... up to {}", self.id_of(self.max_clients - 1)));
        }
        names.join(", ")
    }

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

    /// Expands the file for one run: the clients for `params.clients`, the actions drawn from
    /// the schedule RNG (seeded by `params.seed`), the expectations.
    pub fn expand(&self, params: &Params) -> Result<Scenario, String> {
        let doc = Doc {
            path: &self.path,
            text: &self.text,
        };
        let duration = params.duration.unwrap_or(self.duration);
        if let Some(min) = self.min_duration.filter(|&m| duration < m) {
            return Err(format!(
                "duration {duration:?} too short: scenario {} needs at least {}",
                self.name,
                fmt_duration(min)
            ));
        }
        let n = params.clients.unwrap_or(self.count);
        if n < self.min_clients || n > self.max_clients {
            return Err(format!(
                "scenario {} needs {} to {} clients, got {n}",
                self.name, self.min_clients, self.max_clients
            ));
        }
        let latency = params.latency.unwrap_or(self.latency);
        let tick = params.tick.map_or(Ok(TICK), super::check_tick)?;
        let clients = self.plans(n, latency);
        // The schedule RNG is separate from turmoil's, so the schedule does not move when the
        // network draws more or fewer numbers.
        let mut rng = SmallRng::seed_from_u64(params.seed ^ 0x5ce9_a810_0000_0000);
        let mut out = Vec::new();
        for a in &self.actions {
            self.expand_action(&doc, a, &clients, duration, &mut rng, &mut out)?;
        }
        out.sort_by_key(|t| t.at);
        let mut s = Scenario {
            name: self.name.clone(),
            summary: self.summary.clone(),
            source: self.source.clone(),
            params: params.clone(),
            latency,
            detector: self.detector.clone(),
            tick,
            clients,
            actions: out,
            duration,
            drain: Duration::ZERO,
            expect: Vec::new(),
        };
        for a in &s.actions {
            if let Action::Start(i) = a.action {
                s.clients[i].starts_late = true;
            }
        }
        self.check_start_before_stop(&doc, &s)?;
        for e in &self.expect {
            s.expect.push(match e {
                ExpectSpec::Named(x) => x.clone(),
                ExpectSpec::Client {
                    on,
                    on_span,
                    rule,
                    text,
                } => Expectation::Client {
                    clients: self.resolve_fixed(&doc, on, on_span, "expect.on", &s.clients)?,
                    label: format!("{on} {text}"),
                    rule: rule.clone(),
                },
            });
        }
        s.drain = s.drain_bound();
        Ok(s)
    }

    /// The first `n` clients' plans.
    fn plans(&self, n: usize, latency: Latency) -> Vec<ClientPlan> {
        (0..n)
            .map(|i| {
                let s = self.clients.get(i).map_or_else(
                    || self.defaults.clone(),
                    |e| e.settings.over(&self.defaults),
                );
                ClientPlan {
                    id: self.id_of(i),
                    interval: s.interval.map_or(super::INTERVAL, |iv| iv.0),
                    latency: s.latency.unwrap_or(latency),
                    ack_timeout: s.ack_timeout.map(|t| t.0),
                    reconnect: s.reconnect.unwrap_or(Some(Backoff::default())),
                    legacy: s.legacy.unwrap_or(false),
                    starts_late: false,
                }
            })
            .collect()
    }

    /// The clients a fixed target names (not a random one), by index.
    fn resolve_fixed(
        &self,
        doc: &Doc<'_>,
        on: &Target,
        span: &Span,
        field: &str,
        clients: &[ClientPlan],
    ) -> Result<Vec<usize>, String> {
        let n = clients.len();
        Ok(match on {
            Target::Each => (0..n).collect(),
            Target::Last => vec![n - 1],
            Target::Ids(ids) => ids
                .iter()
                .map(|id| {
                    clients.iter().position(|c| &c.id == id).ok_or_else(|| {
                        doc.error(
                            span,
                            field,
                            format!("no client {id:?} in a run of {n} clients"),
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
            Target::Random(_) | Target::Server => {
                return Err(doc.error(span, field, "expected clients"));
            }
        })
    }

    /// Draws one action's occurrences into `out`. The draw order is part of the format (see
    /// `SCENARIOS.md`): the random subset first, then per target: `at`, then per occurrence
    /// `to`, `for`, `every`.
    fn expand_action(
        &self,
        doc: &Doc<'_>,
        a: &ActionSpec,
        clients: &[ClientPlan],
        d: Duration,
        rng: &mut SmallRng,
        out: &mut Vec<Timed>,
    ) -> Result<(), String> {
        let n = clients.len();
        let field = |name: &str| format!("action[{}].{name}", a.index);
        let fields = [
            ("at", Some(&a.at)),
            ("for", a.length.as_ref()),
            ("every", a.every.as_ref()),
            ("to", a.to.as_ref()),
        ];
        for (name, t) in fields.into_iter().filter_map(|(n, t)| t.map(|t| (n, t))) {
            let (lo, hi) = t.time.bounds_ms(d);
            if lo > hi {
                return Err(doc.error(
                    &t.span,
                    &field(name),
                    format!(
                        "the range {} ends before it starts in a fault phase of {}",
                        t.time,
                        fmt_duration(d)
                    ),
                ));
            }
            if name == "every" && lo == 0 {
                return Err(doc.error(
                    &t.span,
                    &field(name),
                    format!(
                        "a repetition must be longer than 0 ms ({} in a fault phase of {})",
                        t.time,
                        fmt_duration(d)
                    ),
                ));
            }
        }
        let nodes: Vec<Node> = match &a.on {
            Target::Server => vec![Node::Server],
            Target::Random(count) => {
                let mut order: Vec<usize> = (0..n).collect();
                order.shuffle(rng);
                let lo = count.lo.of(n);
                let k = match count.hi {
                    Some(hi) => {
                        let hi = hi.of(n);
                        if lo > hi {
                            return Err(doc.error(
                                &a.on_span,
                                &field("on"),
                                format!("the range {} ends before it starts", count.text),
                            ));
                        }
                        // A usize draw, as the built-in swizzle drew its subset size.
                        rng.random_range(lo..=hi)
                    }
                    None => lo,
                };
                order.truncate(k);
                order.into_iter().map(Node::Client).collect()
            }
            on => self
                .resolve_fixed(doc, on, &a.on_span, &field("on"), clients)?
                .into_iter()
                .map(Node::Client)
                .collect(),
        };
        if a.kind == Kind::Swizzle {
            swizzle(a, &nodes, d, rng, out);
            return Ok(());
        }
        for node in nodes {
            // Only crash and restart apply to the server (checked when read).
            let i = match node {
                Node::Client(i) => i,
                Node::Server => usize::MAX,
            };
            let mut t = a.at.time.draw(rng, d);
            loop {
                if let Some(until) = a.until.as_ref().or(a.every.as_ref().map(|_| &END)) {
                    if t.as_secs_f64() >= until.time.lo.secs(d) {
                        break;
                    }
                }
                let to = a.to.as_ref().map(|to| to.time.draw(rng, d));
                let (fault, undo) = match a.kind {
                    Kind::Crash if a.silent => {
                        (Action::SilentCrash(node), Some(Action::Bounce(node)))
                    }
                    Kind::Crash => (Action::Crash(node), Some(Action::Bounce(node))),
                    Kind::Hold => (Action::Hold(i), Some(Action::Release(i))),
                    Kind::Latency => (Action::Latency(i, to.unwrap_or_default()), None),
                    Kind::Partition => (Action::Partition(i), Some(Action::Repair(i))),
                    Kind::Release => (Action::Release(i), None),
                    Kind::Repair => (Action::Repair(i), None),
                    Kind::Restart => (Action::Bounce(node), None),
                    Kind::Start => (Action::Start(i), None),
                    Kind::Stop | Kind::Swizzle => (Action::Stop(i), None),
                };
                out.push(Timed {
                    at: t,
                    action: fault,
                });
                if let (Some(len), Some(undo)) = (&a.length, undo) {
                    out.push(Timed {
                        at: t + len.time.draw(rng, d),
                        action: undo,
                    });
                }
                match &a.every {
                    Some(every) => t += every.time.draw(rng, d),
                    None => break,
                }
                if out.len() > MAX_ACTIONS {
                    return Err(doc.error(
                        &a.at.span,
                        &field("every"),
                        format!("the scenario expands to more than {MAX_ACTIONS} actions"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// A client's `stop` must come after its `start` (for every seed, so their ranges must not
    /// overlap).
    fn check_start_before_stop(&self, doc: &Doc<'_>, s: &Scenario) -> Result<(), String> {
        let d = s.duration;
        let bounds = |kind: Kind, i: usize| {
            self.actions
                .iter()
                .filter(move |a| a.kind == kind && a.every.is_none())
                .filter(move |a| {
                    self.resolve_fixed(doc, &a.on, &a.on_span, "", &s.clients)
                        .is_ok_and(|v| v.contains(&i))
                })
                .map(move |a| (a, a.at.time.bounds_ms(d)))
        };
        for i in 0..s.clients.len() {
            for (start, (_, start_hi)) in bounds(Kind::Start, i) {
                for (stop, (stop_lo, _)) in bounds(Kind::Stop, i) {
                    if stop_lo <= start_hi {
                        return Err(doc.error(
                            &stop.at.span,
                            &format!("action[{}].at", stop.index),
                            format!(
                                "{} may stop (from {}) before it starts (action[{}], up to {}): \
                                 a stop must come after the start for every seed",
                                s.clients[i].id,
                                fmt_duration(Duration::from_millis(stop_lo)),
                                start.index,
                                fmt_duration(Duration::from_millis(start_hi)),
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// The end of the fault phase, where repetitions stop unless told otherwise.
const END: TimeField = TimeField {
    time: Time {
        lo: Point::BeforeEnd(Duration::ZERO),
        hi: None,
    },
    span: 0..0,
};

/// FoundationDB's swizzle-clog: hold the targets' links one by one (each next one within
/// `clog-spread / k`), then after `for` release them one by one (each within
/// `release-spread / k`) in a random order.
fn swizzle(a: &ActionSpec, nodes: &[Node], d: Duration, rng: &mut SmallRng, out: &mut Vec<Timed>) {
    let clogged: Vec<usize> = nodes
        .iter()
        .filter_map(|n| match n {
            Node::Client(i) => Some(*i),
            Node::Server => None,
        })
        .collect();
    let k = clogged.len().max(1) as f64;
    let upto = |spread: &Time, rng: &mut SmallRng| {
        let step = spread.lo.secs(d) / k;
        let hi = Time {
            lo: Point::Fixed(Duration::ZERO),
            hi: Some(Point::Fixed(Duration::from_millis((step * 1000.0) as u64))),
        };
        hi.draw(rng, d)
    };
    let mut t = a.at.time.draw(rng, d);
    for &i in &clogged {
        out.push(Timed {
            at: t,
            action: Action::Hold(i),
        });
        t += upto(&a.clog_spread, rng);
    }
    let mut release = clogged;
    release.shuffle(rng);
    let hold = a
        .length
        .as_ref()
        .map_or(Duration::ZERO, |l| l.time.draw(rng, d));
    let mut t = t + hold;
    for i in release {
        out.push(Timed {
            at: t,
            action: Action::Release(i),
        });
        t += upto(&a.release_spread, rng);
    }
}

/// The settings of `[clients]` or of one `[[client]]` (`field` names it in errors).
fn settings(doc: &Doc<'_>, field: &str, c: &RawClient) -> Result<Settings, String> {
    let mut s = Settings::default();
    if let Some(iv) = &c.interval {
        let d = iv.get_ref().0.0;
        // The core's own rule for intervals, so the file and the client agree.
        ClientConfig::new(ClientId::new("x").expect("a valid id"), d)
            .map_err(|e| doc.error(&iv.span(), &format!("{field}.interval"), e))?;
        s.interval = Some((d, iv.span()));
    }
    s.latency = c.latency.as_ref().map(|l| l.0.0);
    s.ack_timeout = c.ack_timeout.as_ref().map(|t| (t.get_ref().0.0, t.span()));
    if let Some(p) = &c.protocol {
        s.legacy = Some(match p.get_ref().as_str() {
            "v1" => false,
            "legacy" => true,
            other => {
                return Err(doc.error(
                    &p.span(),
                    &format!("{field}.protocol"),
                    format!("expected \"v1\" or \"legacy\", got {other:?}"),
                ));
            }
        });
    }
    if let Some(r) = &c.reconnect {
        s.reconnect = Some(reconnect(doc, &format!("{field}.reconnect"), r)?);
    }
    Ok(s)
}

/// `reconnect = true | false | { initial = "100ms", max = "10s" }`.
fn reconnect(
    doc: &Doc<'_>,
    field: &str,
    v: &Spanned<toml::Value>,
) -> Result<Option<Backoff>, String> {
    let bad = |why: String| doc.error(&v.span(), field, why);
    match v.get_ref() {
        toml::Value::Boolean(true) => Ok(Some(Backoff::default())),
        toml::Value::Boolean(false) => Ok(None),
        toml::Value::Table(t) => {
            let mut initial = Backoff::default().initial();
            let mut max = Backoff::default().max();
            for (k, val) in t {
                let d = val
                    .as_str()
                    .ok_or_else(|| format!("{k}: expected a duration string"))
                    .and_then(parse_duration)
                    .map_err(&bad)?;
                match k.as_str() {
                    "initial" => initial = d,
                    "max" => max = d,
                    other => {
                        return Err(bad(format!(
                            "unknown key {other:?}: expected `initial` or `max`"
                        )));
                    }
                }
            }
            Backoff::new(initial, max)
                .map(Some)
                .map_err(|e| bad(e.to_string()))
        }
        other => Err(bad(format!(
            "expected true, false or {{ initial = \"100ms\", max = \"10s\" }}, got {other}"
        ))),
    }
}

/// A client id: valid for the core, and not one of the words `on` reserves.
fn client_id(doc: &Doc<'_>, field: &str, id: &Spanned<String>) -> Result<(), String> {
    let s = id.get_ref();
    if ["each", "last", "server", "random"].contains(&s.as_str()) {
        return Err(doc.error(
            &id.span(),
            field,
            format!("{s:?} is a reserved word of `on`; pick another id"),
        ));
    }
    ClientId::new(s).map_err(|e| doc.error(&id.span(), field, e))?;
    Ok(())
}

/// The `[detector]` table, read by the very flags `heartbeat-server` takes (one parser for
/// both): `kind` is `--detector`, every other key is the flag of that name.
fn detector(
    doc: &Doc<'_>,
    table: &Spanned<BTreeMap<String, Spanned<toml::Value>>>,
) -> Result<DetectorConfig, String> {
    use clap::{Args, FromArgMatches};
    let command =
        || DetectorArgs::augment_args(clap::Command::new("detector").no_binary_name(true));
    let known: Vec<String> = command()
        .get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|l| *l != "detector")
        .map(str::to_owned)
        .collect();
    let text = |v: &Spanned<toml::Value>, field: &str| -> Result<String, String> {
        match v.get_ref() {
            toml::Value::String(s) => Ok(s.clone()),
            toml::Value::Integer(i) => Ok(i.to_string()),
            toml::Value::Float(f) => Ok(f.to_string()),
            other => Err(doc.error(
                &v.span(),
                field,
                format!("expected a number or a string such as \"250ms\", got {other}"),
            )),
        }
    };
    let parse = |argv: &[String]| -> Result<DetectorConfig, String> {
        let matches = command()
            .try_get_matches_from(argv)
            .map_err(|e| e.kind().to_string())?;
        let args = DetectorArgs::from_arg_matches(&matches).map_err(|e| e.to_string())?;
        args.config().map_err(|e| e.to_string())
    };
    let mut argv = Vec::new();
    if let Some(kind) = table.get_ref().get("kind") {
        argv.push("--detector".to_owned());
        argv.push(text(kind, "detector.kind")?);
        parse(&argv).map_err(|e| {
            doc.error(
                &kind.span(),
                "detector.kind",
                format!("{e}: expected fixed, phi, phi-exp or chen"),
            )
        })?;
    }
    for (key, v) in table.get_ref().iter().filter(|(k, _)| *k != "kind") {
        let field = format!("detector.{key}");
        if !known.contains(key) {
            return Err(doc.error(
                &v.span(),
                &field,
                format!(
                    "unknown detector parameter {key:?}; known: kind, {}",
                    known.join(", ")
                ),
            ));
        }
        // Each parameter alone with the kind first, so an error points at its own line.
        let mut one = argv.clone();
        one.push(format!("--{key}"));
        one.push(text(v, &field)?);
        parse(&one).map_err(|e| doc.error(&v.span(), &field, e))?;
    }
    for (key, v) in table.get_ref().iter().filter(|(k, _)| *k != "kind") {
        argv.push(format!("--{key}"));
        argv.push(text(v, key)?);
    }
    parse(&argv).map_err(|e| doc.error(&table.span(), "detector", e))
}

/// `on`: `"server"`, `"each"`, `"last"`, a client id, a list of ids, or `{ random = "50%" }`.
fn target(doc: &Doc<'_>, field: &str, v: &Spanned<toml::Value>) -> Result<Target, String> {
    let bad = |why: String| doc.error(&v.span(), field, why);
    let expected = "expected \"server\", \"each\", \"last\", a client id, a list of ids, or \
                    { random = \"50%..100%\" }";
    match v.get_ref() {
        toml::Value::String(s) => Ok(match s.as_str() {
            "server" => Target::Server,
            "each" => Target::Each,
            "last" => Target::Last,
            id => Target::Ids(vec![id.to_owned()]),
        }),
        toml::Value::Array(items) => {
            let ids = items
                .iter()
                .map(|i| i.as_str().map(str::to_owned))
                .collect::<Option<Vec<String>>>()
                .filter(|ids| !ids.is_empty())
                .ok_or_else(|| bad(format!("a list of client ids: {expected}")))?;
            Ok(Target::Ids(ids))
        }
        toml::Value::Table(t) => match (t.len(), t.get("random").and_then(|r| r.as_str())) {
            (1, Some(r)) => r.parse().map(Target::Random).map_err(bad),
            _ => Err(bad(expected.to_owned())),
        },
        _ => Err(bad(expected.to_owned())),
    }
}

/// One `[[action]]`, validated on its own.
fn action(doc: &Doc<'_>, index: usize, a: RawAction) -> Result<ActionSpec, String> {
    let field = |name: &str| format!("action[{index}].{name}");
    let what = a.what.get_ref().as_str();
    let kind = Kind::ALL
        .iter()
        .find(|(n, _)| *n == what)
        .map(|(_, k)| *k)
        .ok_or_else(|| {
            let names: Vec<&str> = Kind::ALL.iter().map(|(n, _)| *n).collect();
            doc.error(
                &a.what.span(),
                &field("do"),
                format!(
                    "unknown action {what:?}; expected one of {}",
                    names.join(", ")
                ),
            )
        })?;
    let time = |v: Spanned<Text<Time>>, name: &str, length: bool| -> Result<TimeField, String> {
        let span = v.span();
        let time = v.into_inner().0;
        if length && time.is_end_relative() {
            return Err(doc.error(
                &span,
                &field(name),
                "expected a length (\"3s\", \"10%\", \"3s..15s\"), not a time relative to the end",
            ));
        }
        Ok(TimeField { time, span })
    };
    let forbid = |present: Option<Span>, name: &str, why: &str| match present {
        Some(span) => Err(doc.error(&span, &field(name), why)),
        None => Ok(()),
    };
    let on_span = a.on.as_ref().map_or(a.what.span(), Spanned::span);
    let on = match &a.on {
        Some(v) => target(doc, &field("on"), v)?,
        None => {
            return Err(doc.error(
                &a.what.span(),
                &field("on"),
                "missing `on`: say which clients (or the server) it applies to",
            ));
        }
    };
    if on == Target::Server && !matches!(kind, Kind::Crash | Kind::Restart) {
        return Err(doc.error(
            &on_span,
            &field("on"),
            format!("only crash and restart apply to the server, not {what}"),
        ));
    }
    let with_length = matches!(
        kind,
        Kind::Crash | Kind::Hold | Kind::Partition | Kind::Swizzle
    );
    let length_why = "only crash, hold, partition and swizzle take `for`";
    if !with_length {
        forbid(a.length.as_ref().map(Spanned::span), "for", length_why)?;
    }
    if kind == Kind::Swizzle && a.length.is_none() {
        return Err(doc.error(
            &a.what.span(),
            &field("for"),
            "a swizzle needs `for`: how long after the last clog the releases begin",
        ));
    }
    if kind != Kind::Latency {
        forbid(
            a.to.as_ref().map(Spanned::span),
            "to",
            "only latency takes `to`",
        )?;
    } else if a.to.is_none() {
        return Err(doc.error(
            &a.what.span(),
            &field("to"),
            "a latency action needs `to`: the new latency (\"200ms\" or \"1ms..400ms\")",
        ));
    }
    if kind != Kind::Crash {
        forbid(
            a.silent.as_ref().map(Spanned::span),
            "silent",
            "only crash takes `silent`",
        )?;
    }
    if kind != Kind::Swizzle {
        let why = "only swizzle takes the spreads";
        forbid(
            a.clog_spread.as_ref().map(Spanned::span),
            "clog-spread",
            why,
        )?;
        forbid(
            a.release_spread.as_ref().map(Spanned::span),
            "release-spread",
            why,
        )?;
    } else {
        forbid(
            a.every.as_ref().map(Spanned::span),
            "every",
            "a swizzle does not repeat",
        )?;
    }
    if a.every.is_none() {
        forbid(
            a.until.as_ref().map(Spanned::span),
            "until",
            "`until` ends a repetition: give `every` too",
        )?;
    }
    let until = a.until.map(|u| time(u, "until", false)).transpose()?;
    if let Some(u) = &until {
        if u.time.is_range() {
            return Err(doc.error(&u.span, &field("until"), "expected a time, not a range"));
        }
    }
    let spread = |v: Option<Spanned<Text<Time>>>, name: &str, default: u64| {
        v.map(|v| time(v, name, true)).transpose().map(|t| {
            t.map_or(
                Time::fixed(Point::Fixed(Duration::from_millis(default))),
                |t| t.time,
            )
        })
    };
    Ok(ActionSpec {
        index,
        kind,
        on,
        on_span,
        at: time(a.at, "at", false)?,
        length: a.length.map(|l| time(l, "for", true)).transpose()?,
        every: a.every.map(|e| time(e, "every", true)).transpose()?,
        until,
        to: a.to.map(|t| time(t, "to", true)).transpose()?,
        silent: a.silent.is_some_and(|s| *s.get_ref()),
        clog_spread: spread(a.clog_spread, "clog-spread", 3000)?,
        release_spread: spread(a.release_spread, "release-spread", 2500)?,
    })
}

/// One `[[expect]]`: a named check, or exactly one rule on some clients.
fn expect(doc: &Doc<'_>, index: usize, e: Spanned<RawExpect>) -> Result<ExpectSpec, String> {
    let entry = e.span();
    let e = e.into_inner();
    let field = |name: &str| format!("expect[{index}].{name}");
    let counters = [
        (Counter::Bursts, &e.bursts),
        (Counter::Connections, &e.connections),
        (Counter::Duplicates, &e.duplicates),
        (Counter::Missed, &e.missed),
        (Counter::Received, &e.received),
        (Counter::Restarts, &e.restarts),
    ];
    let mut rules: Vec<(String, Span, ClientRule, String)> = Vec::new();
    if let Some(s) = &e.state {
        let state = [
            Liveness::Down,
            Liveness::Left,
            Liveness::Suspect,
            Liveness::Up,
        ]
        .into_iter()
        .find(|l| l.as_str() == s.get_ref())
        .ok_or_else(|| {
            doc.error(
                &s.span(),
                &field("state"),
                format!(
                    "expected \"up\", \"suspect\", \"down\" or \"left\", got {:?}",
                    s.get_ref()
                ),
            )
        })?;
        rules.push((
            "state".into(),
            s.span(),
            ClientRule::State(state),
            format!("{} at the end", state.as_str()),
        ));
    }
    if let Some(d) = &e.down_within {
        let within = d.get_ref().0.0;
        rules.push((
            "down-within".into(),
            d.span(),
            ClientRule::DownWithin(within),
            format!("down within {} of a crash", fmt_duration(within)),
        ));
    }
    for (counter, v) in counters {
        let Some(v) = v else { continue };
        let name = counter.as_str();
        let bad = |why: String| doc.error(&v.span(), &field(name), why);
        let (cmp, value) = match v.get_ref() {
            toml::Value::Integer(i) => (
                Cmp::Eq,
                u64::try_from(*i).map_err(|_| bad(format!("expected a count, got {i}")))?,
            ),
            toml::Value::String(s) => {
                let t = s.trim();
                let (cmp, rest) = Cmp::ALL
                    .iter()
                    .find_map(|(op, c)| t.strip_prefix(op).map(|r| (*c, r)))
                    .ok_or_else(|| {
                        bad(format!(
                            "expected \">= 1\", \"<= 3\", \"== 0\", ... got {s:?}"
                        ))
                    })?;
                let value = rest.trim().parse().map_err(|_| {
                    bad(format!(
                        "expected a count after {}, got {s:?}",
                        cmp.as_str()
                    ))
                })?;
                (cmp, value)
            }
            other => {
                return Err(bad(format!(
                    "expected a count or a comparison such as \">= 1\", got {other}"
                )));
            }
        };
        rules.push((
            name.to_owned(),
            v.span(),
            ClientRule::Count {
                counter,
                cmp,
                value,
            },
            format!("{name} {} {value}", cmp.as_str()),
        ));
    }
    if let Some(check) = &e.check {
        let named = Expectation::NAMED
            .iter()
            .find(|(n, _)| *n == check.get_ref())
            .map(|(_, x)| x.clone())
            .ok_or_else(|| {
                let names: Vec<&str> = Expectation::NAMED.iter().map(|(n, _)| *n).collect();
                doc.error(
                    &check.span(),
                    &field("check"),
                    format!(
                        "unknown check {:?}; expected one of {}",
                        check.get_ref(),
                        names.join(", ")
                    ),
                )
            })?;
        if let Some(on) = &e.on {
            return Err(doc.error(
                &on.span(),
                &field("on"),
                "a named check covers every client",
            ));
        }
        if let Some((name, span, ..)) = rules.first() {
            return Err(doc.error(span, &field(name), "give a named check or a rule, not both"));
        }
        return Ok(ExpectSpec::Named(named));
    }
    let (on, on_span) = match &e.on {
        Some(v) => (target(doc, &field("on"), v)?, v.span()),
        None => (Target::Each, entry),
    };
    if matches!(on, Target::Server | Target::Random(_)) {
        return Err(doc.error(
            &on_span,
            &field("on"),
            "expected clients: \"each\", \"last\", an id or a list of ids",
        ));
    }
    match rules.len() {
        1 => {
            let (_, _, rule, text) = rules.remove(0);
            Ok(ExpectSpec::Client {
                on,
                on_span,
                rule,
                text,
            })
        }
        0 => Err(doc.error(
            &on_span,
            &format!("expect[{index}]"),
            "expected `check = NAME`, or one rule: state, down-within, or a counter (bursts, \
             connections, duplicates, missed, received, restarts)",
        )),
        _ => Err(doc.error(
            &rules[1].1,
            &field(&rules[1].0),
            format!(
                "one rule per [[expect]] entry; this one already has {}",
                rules[0].0
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> Result<Spec, String> {
        Spec::parse("t.toml", "t", text, Source::File("t.toml".into()))
    }

    fn expand(text: &str, seed: u64) -> Scenario {
        spec(text).unwrap().expand(&Params::seed(seed)).unwrap()
    }

    fn actions(s: &Scenario) -> Vec<String> {
        s.actions
            .iter()
            .map(|t| format!("{} {}", t.at.as_millis(), s.describe(&t.action)))
            .collect()
    }

    #[test]
    fn an_empty_file_is_one_steady_client() {
        let s = expand("", 1);
        assert_eq!(s.name, "t");
        assert_eq!(s.clients.len(), 1);
        assert_eq!(s.clients[0].id, "c1");
        assert_eq!(s.clients[0].interval, Duration::from_secs(1));
        assert_eq!(s.latency, Latency::default());
        assert_eq!(s.duration, Duration::from_secs(60));
        assert!(s.actions.is_empty() && s.expect.is_empty() && s.detector.is_none());
        assert_eq!(spec("").unwrap().seeds, 1..5);
    }

    #[test]
    fn clients_take_defaults_then_their_own_settings() {
        let s = expand(
            r#"
            latency = "5ms"
            [clients]
            count = 3
            interval = "200ms"
            ack-timeout = "3s"
            reconnect = { initial = "50ms", max = "2s" }
            [[client]]
            id = "web"
            latency = "1ms..80ms"
            protocol = "legacy"
            reconnect = false
            [[client]]
            interval = "1s"
            "#,
            1,
        );
        let ids: Vec<&str> = s.clients.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["web", "c2", "c3"]);
        let web = &s.clients[0];
        assert_eq!(
            web.latency,
            Latency::Range {
                min: Duration::from_millis(1),
                max: Duration::from_millis(80)
            }
        );
        assert!(web.legacy && web.reconnect.is_none());
        assert_eq!(web.interval, Duration::from_millis(200));
        assert_eq!(s.clients[1].interval, Duration::from_secs(1));
        assert_eq!(
            s.clients[2].latency,
            Latency::Fixed(Duration::from_millis(5))
        );
        let backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2)).unwrap();
        assert_eq!(s.clients[2].reconnect, Some(backoff));
        assert_eq!(s.clients[2].ack_timeout, Some(Duration::from_secs(3)));
        // --clients and --latency override the file; a client's own latency stays.
        let p = Params {
            clients: Some(4),
            latency: Some(Latency::Fixed(Duration::from_millis(9))),
            ..Params::seed(1)
        };
        let s = spec("latency = \"5ms\"\n[[client]]\nlatency = \"7ms\"")
            .unwrap()
            .expand(&p)
            .unwrap();
        assert_eq!(s.clients.len(), 4);
        assert_eq!(
            s.clients[0].latency,
            Latency::Fixed(Duration::from_millis(7))
        );
        assert_eq!(
            s.clients[3].latency,
            Latency::Fixed(Duration::from_millis(9))
        );
    }

    #[test]
    fn actions_expand_on_each_a_list_the_last_and_the_server() {
        let s = expand(
            r#"
            duration = "100s"
            [clients]
            count = 3
            [[action]]
            do = "partition"
            on = ["c1", "c3"]
            at = "10s"
            for = "5s"
            [[action]]
            do = "crash"
            on = "server"
            at = "50%"
            for = "2s"
            [[action]]
            do = "hold"
            on = "last"
            at = "end-10s"
            [[action]]
            do = "latency"
            on = "c2"
            at = "20s"
            to = "300ms"
            every = "30s"
            until = "80s"
            [[action]]
            do = "crash"
            silent = true
            on = "c2"
            at = "85s"
            "#,
            1,
        );
        assert_eq!(
            actions(&s),
            [
                "10000 partition c1 <-> server",
                "10000 partition c3 <-> server",
                "15000 repair c1 <-> server",
                "15000 repair c3 <-> server",
                "20000 latency c2 <-> server = 300ms",
                "50000 crash server",
                "50000 latency c2 <-> server = 300ms",
                "52000 restart server",
                "85000 silent crash c2",
                "90000 hold c3 <-> server",
            ]
        );
    }

    #[test]
    fn a_start_makes_a_client_start_late() {
        let s = expand(
            "[clients]\ncount = 2\n[[action]]\ndo = \"start\"\non = \"c2\"\nat = \"5s\"",
            1,
        );
        assert!(!s.clients[0].starts_late && s.clients[1].starts_late);
    }

    #[test]
    fn a_random_subset_is_drawn_per_seed_within_its_bounds() {
        let text = r#"
            [clients]
            count = 8
            [[action]]
            do = "partition"
            on = { random = "2..3" }
            at = "10s"
        "#;
        let mut sizes = std::collections::BTreeSet::new();
        for seed in 0..50 {
            let s = expand(text, seed);
            sizes.insert(s.actions.len());
            assert_eq!(s, expand(text, seed));
        }
        assert_eq!(sizes.into_iter().collect::<Vec<_>>(), [2, 3]);
    }

    #[test]
    fn expectations_keep_their_order_and_name_their_clients() {
        let s = expand(
            r#"
            [clients]
            count = 2
            [[expect]]
            check = "none-missed"
            [[expect]]
            on = "c2"
            down-within = "5s"
            [[expect]]
            missed = 0
            [[expect]]
            on = ["c1"]
            bursts = ">= 1"
            [[expect]]
            on = "last"
            state = "down"
            "#,
            1,
        );
        let names: Vec<String> = s.expect.iter().map(Expectation::name).collect();
        assert_eq!(
            names,
            [
                "none-missed",
                "c2 down within 5s of a crash",
                "each missed == 0",
                "c1 bursts >= 1",
                "last down at the end"
            ]
        );
        assert_eq!(
            s.expect[3],
            Expectation::Client {
                clients: vec![0],
                label: "c1 bursts >= 1".into(),
                rule: ClientRule::Count {
                    counter: Counter::Bursts,
                    cmp: Cmp::Ge,
                    value: 1
                }
            }
        );
    }

    #[test]
    fn the_detector_is_read_by_the_servers_own_flags() {
        let s = expand(
            "[detector]\nkind = \"chen\"\nalpha = \"250ms\"\nwindow = 20",
            1,
        );
        assert_eq!(
            s.detector.unwrap().to_string(),
            "chen alpha=250ms window=20"
        );
        let s = expand("[detector]\nthreshold = 12.5", 1);
        assert!(
            s.detector
                .unwrap()
                .to_string()
                .starts_with("phi threshold=12.5")
        );
    }

    /// Each error names the file, the line and column, the field, and what was expected.
    #[test]
    fn errors_point_at_the_field() {
        let cases: &[(&str, &str)] = &[
            ("seeds = \"5..1\"", "t.toml:1:9: `seeds`: empty seed range"),
            (
                "duration = \"0s\"",
                "t.toml:1:12: `duration`: expected more than 0s",
            ),
            (
                "[clients]\nintervl = \"1s\"",
                "t.toml:2:1: `clients`: unknown field `intervl`",
            ),
            (
                "[[client]]\nid = \"each\"",
                "t.toml:2:6: `client[0].id`: \"each\" is a reserved word",
            ),
            (
                "[[client]]\nid = \"a b\"",
                "t.toml:2:6: `client[0].id`: client id may only contain",
            ),
            (
                "[clients]\ncount = 2\n[[client]]\nid = \"c2\"",
                "t.toml:4:6: `client.id`: clients 1 and 2 would both be named \"c2\"",
            ),
            (
                "[[client]]\nreconnect = 3",
                "t.toml:2:13: `client[0].reconnect`: expected true, false or",
            ),
            (
                "[[action]]\ndo = \"hold\"\non = \"c9\"\nat = \"1s\"",
                "t.toml:3:6: `action[0].on`: no client \"c9\" in a run of 1 clients",
            ),
            (
                "[[action]]\ndo = \"stop\"\non = \"server\"\nat = \"1s\"",
                "t.toml:3:6: `action[0].on`: only crash and restart apply to the server",
            ),
            (
                "[[action]]\ndo = \"stop\"\non = \"c1\"\nat = \"1s\"\nfor = \"2s\"",
                "t.toml:5:7: `action[0].for`: only crash, hold, partition and swizzle take",
            ),
            (
                "[[action]]\ndo = \"hold\"\non = \"c1\"\nat = \"9s..2s\"",
                "t.toml:4:6: `action[0].at`: the range \"9s..2s\" ends before it starts",
            ),
            (
                "[[action]]\ndo = \"hold\"\non = \"c1\"",
                "t.toml:1:1: `action[0]`: missing field `at`",
            ),
            (
                "[[action]]\ndo = \"latency\"\non = \"c1\"\nat = \"1s\"",
                "`action[0].to`: a latency action needs `to`",
            ),
            (
                "[[expect]]\ncheck = \"all-good\"",
                "t.toml:2:9: `expect[0].check`: unknown check \"all-good\"",
            ),
            (
                "[[expect]]\nstate = \"up\"\nmissed = 0",
                "t.toml:3:10: `expect[0].missed`: one rule per [[expect]] entry",
            ),
            (
                "[[expect]]\nstate = \"dead\"",
                "t.toml:2:9: `expect[0].state`: expected \"up\", \"suspect\", \"down\" or \"left\"",
            ),
            ("x = 1\n[[expect]]\n", "t.toml:1:1: unknown field `x`"),
            (
                "[[expect]]\n\n[[expect]]\n",
                "t.toml:1:1: `expect[0]`: expected `check = NAME`, or one rule",
            ),
            (
                "[[action]]\ndo = \"hold\"\non = \"c1\"\nat = \"1s\"\nevery = \"0%..1%\"",
                "t.toml:5:9: `action[0].every`: a repetition must be longer than 0 ms",
            ),
            (
                "[[action]]\ndo = \"hold\"\non = \"c1\"\nat = \"1s\"\nevery = \"1ms\"\n\
                 [[action]]\ndo = \"hold\"\non = \"c1\"\nat = \"1s\"\nevery = \"1ms\"",
                "more than 100000 actions",
            ),
            (
                "[[action]]\ndo = \"hold\"\non = \"c1\"\nat = \"1s\"\nfor = \"50%..10s\"",
                "t.toml:5:7: `action[0].for`: the range 50%..10s ends before it starts",
            ),
            (
                "[detector]\nkind = \"psychic\"",
                "t.toml:2:8: `detector.kind`: ",
            ),
        ];
        for (text, want) in cases {
            let e = spec(text)
                .and_then(|s| s.expand(&Params::seed(1)))
                .unwrap_err();
            assert!(e.contains(want), "{text:?}:\n{e}\nwanted {want:?}");
        }
        // The offending line, underlined.
        let e = spec("[[client]]\ninterval = \"0ms\"").unwrap_err();
        assert!(
            e.ends_with("2 | interval = \"0ms\"\n  |            ^^^^^"),
            "{e}"
        );
    }

    #[test]
    fn run_parameters_the_file_cannot_take_are_plain_errors() {
        let s = spec("min-duration = \"20s\"\n[clients]\ncount = 2\nmin = 2\nmax = 3").unwrap();
        let p = |duration: u64, clients: usize| Params {
            duration: Some(Duration::from_secs(duration)),
            clients: Some(clients),
            ..Params::seed(1)
        };
        assert!(s.expand(&p(19, 2)).unwrap_err().contains("too short"));
        assert!(
            s.expand(&p(20, 1))
                .unwrap_err()
                .contains("needs 2 to 3 clients")
        );
        assert!(s.expand(&p(20, 4)).is_err());
        assert!(s.expand(&p(20, 3)).is_ok());
    }
}
