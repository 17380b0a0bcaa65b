//! A server's event log as data: what `heartbeat-server --json` printed, one timed [`Item`] per
//! event, clients by index. `heartbeat-sim tune` replays it into detectors; `heartbeat-sim
//! timeline` draws it. A simulated run is read the same way, from the same JSON lines
//! ([`outcome_lines`]), so both commands have one reader.
//!
//! # Reading, tolerantly
//! One JSON object per line, as the server writes them, and a final `summary`. Each line is
//! read into the core's own [`Event`](heartbeat_core::server::Event) (its derived
//! `Deserialize`, the mirror of what the server writes: there is no second copy of the schema
//! here), then made an [`Item`] by one match on it:
//! - a line that does not start with `{` (a log line, a blank line) is not an event: skipped;
//! - an object without a string `"event"`, or with a kind the core's `Event` does not know (a
//!   newer server's), is skipped; unknown fields are ignored;
//! - events tune and timeline do not use (`clock_skew`, `unidentified`, the end of a
//!   connection that never identified) are read, checked and skipped;
//! - a line that starts with `{` but is not valid JSON, or an event of a known kind that the
//!   core's `Event` refuses (a field missing or of the wrong type, a heartbeat without
//!   `received`, a transition to an unknown state, a client id the server would not accept),
//!   is **malformed**: it is skipped and reported with its line number (the first
//!   [`MAX_REPORTED`] of them, and the count). Not fatal: the last line of a server that was
//!   killed is often cut short, and one bad line should not cost a week of trace.
//!
//! # Time
//! Every item gets a time on the server's clock (Unix time, as nanoseconds since the log's
//! first timed event):
//! - a `heartbeat` is at its `received` stamp (the instant the server read it);
//! - any other event with a `time` field (Unix seconds, as a string like `received` or a
//!   number) is at that time;
//! - a `transition` to `suspect`, `down` or `left` without one is at the client's last
//!   heartbeat plus its `since_last_ms`, which is exact;
//! - anything else is at the latest time known before it (events are printed in order).
//!
//! Times never go backwards: an earlier one (a wall clock stepped back) is taken as the latest
//! before it.
//!
//! # Server runs
//! A log may hold several runs of the server (appended across restarts). A new run begins after
//! a `summary` line (a clean stop) and at a `connected` event whose connection number was
//! already identified in the run (a run never reuses one; a restarted server counts from 1
//! again; clients of one run may identify themselves in any order): an
//! [`Item::ServerRestart`] is inserted there, with the previous run's last time, so that the
//! gap, when the server was down, is known.

mod parse;

use std::io;
use std::time::Duration;

use heartbeat_core::liveness::Liveness;

pub use parse::{parse_unix, read};

/// How many malformed lines are reported one by one; the rest are counted.
pub const MAX_REPORTED: usize = 10;

/// A server log, read.
#[derive(Clone, Debug, Default)]
pub struct ServerLog {
    /// The clients, by index, in order of first appearance.
    pub clients: Vec<ClientInfo>,
    /// The events, in log order, each with its time.
    pub items: Vec<Stamped>,
    /// The reasons of `Disconnected` items, by index.
    pub reasons: Vec<String>,
    /// Unix time (ns) of the log's first timed event: item times count from it.
    pub origin_unix_ns: u64,
    /// The time of the last item.
    pub end: Duration,
    /// What was read and skipped.
    pub stats: ReadStats,
}

/// What is known of one client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientInfo {
    /// Its name, as the server prints it (its id, or `legacy@ADDR`).
    pub name: String,
    /// The interval it first declared (`connected`'s `interval_ms`), if any.
    pub interval: Option<Duration>,
}

/// What reading a log found besides its events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// Lines read.
    pub lines: u64,
    /// Events taken.
    pub events: u64,
    /// Lines skipped: not JSON objects, or not events this reader knows.
    pub skipped: u64,
    /// Malformed lines, skipped.
    pub malformed: u64,
    /// The first [`MAX_REPORTED`] malformed lines: line number (from 1) and what was wrong.
    pub errors: Vec<(u64, String)>,
    /// Server runs in the log (1 + restarts), 0 for a log without events.
    pub runs: u64,
}

/// An item and its time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamped {
    /// Nanoseconds since [`ServerLog::origin_unix_ns`].
    pub at_ns: u64,
    /// What happened.
    pub item: Item,
}

impl Stamped {
    /// The time, since the log's origin.
    pub fn at(&self) -> Duration {
        Duration::from_nanos(self.at_ns)
    }
}

/// One event of the log, clients by index in [`ServerLog::clients`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Item {
    /// A heartbeat arrived (`burst` heartbeats share one time).
    Beat {
        /// The client.
        client: u32,
        /// Its sequence number.
        seq: u64,
    },
    /// Several heartbeats arrived at once after a silence (their `Beat`s follow).
    Burst {
        /// The client.
        client: u32,
        /// How many.
        count: u64,
    },
    /// A client identified itself on a connection.
    Connected {
        /// The client.
        client: u32,
        /// It said `HELLO`, declaring an interval (`interval_ms`): a v1 client, which the
        /// server watches from that `HELLO`. False for a legacy client.
        hello: bool,
        /// It was known before (a reconnect).
        resumed: bool,
    },
    /// A client's connection ended.
    Disconnected {
        /// The client.
        client: u32,
        /// Why, as an index in [`ServerLog::reasons`].
        reason: u32,
    },
    /// A heartbeat at or below the highest sequence number already received.
    Duplicate {
        /// The client.
        client: u32,
        /// Its sequence number.
        seq: u64,
    },
    /// The server forgot the client (its client limit).
    Evicted {
        /// The client.
        client: u32,
    },
    /// Heartbeats were never received: a gap, reported when the next one arrived.
    Missed {
        /// The client.
        client: u32,
        /// How many.
        count: u64,
    },
    /// The client started a new session (a new process).
    Restarted {
        /// The client.
        client: u32,
        /// The new session was a new session nonce in the `HELLO` just announced (`"seq":
        /// null`); false when sequence number 1 followed higher ones mid-stream.
        nonce: bool,
    },
    /// A new server run begins here; the previous one's last event was at `previous_end_ns`.
    ServerRestart {
        /// The previous run's last time, as [`Stamped::at_ns`].
        previous_end_ns: u64,
    },
    /// The server itself did not run for `late_ns`, ending now.
    Stalled {
        /// How long.
        late_ns: u64,
    },
    /// The server changed a client's liveness.
    Transition {
        /// The client.
        client: u32,
        /// Before.
        from: Liveness,
        /// After.
        to: Liveness,
    },
}

impl Item {
    /// The client it is about, if any.
    pub fn client(&self) -> Option<u32> {
        match *self {
            Self::Beat { client, .. }
            | Self::Burst { client, .. }
            | Self::Connected { client, .. }
            | Self::Disconnected { client, .. }
            | Self::Duplicate { client, .. }
            | Self::Evicted { client }
            | Self::Missed { client, .. }
            | Self::Restarted { client, .. }
            | Self::Transition { client, .. } => Some(client),
            Self::ServerRestart { .. } | Self::Stalled { .. } => None,
        }
    }
}

impl ServerLog {
    /// Reads a log from a file, or from standard input for `-`, on `jobs` threads.
    pub fn open(path: &str, jobs: usize) -> io::Result<Self> {
        if path == "-" {
            read(io::stdin().lock(), jobs)
        } else {
            let f = std::fs::File::open(path)
                .map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
            read(f, jobs)
        }
    }

    /// Reads a log held in memory, on one thread.
    pub fn from_text(text: &str) -> Self {
        read(text.as_bytes(), 1).expect("reading from memory does not fail")
    }

    /// Client `i`'s name.
    pub fn name(&self, client: u32) -> &str {
        &self.clients[client as usize].name
    }

    /// The index of the client called `name`.
    pub fn client(&self, name: &str) -> Option<u32> {
        self.clients
            .iter()
            .position(|c| c.name == name)
            .map(|i| i as u32)
    }
}

/// A read error that is not about the log's content (the file could not be read).
pub(crate) fn read_error(e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("reading the log: {e}"))
}

/// A simulated run's server events as `heartbeat-server --json` prints them, each with a
/// `time` field (the simulated Unix time it happened), and a `summary` line at the end of each
/// server incarnation: the JSON lines [`read`] takes, with every time exact.
pub fn outcome_lines(out: &crate::harness::world::Outcome) -> String {
    use crate::harness::log::Record;
    let mut lines = String::new();
    let mut incarnation = None;
    for e in &out.log {
        let Record::Server {
            incarnation: inc,
            event,
        } = &e.record
        else {
            continue;
        };
        if incarnation.is_some_and(|i| i != *inc) {
            lines.push_str("{\"event\":\"summary\"}\n");
        }
        incarnation = Some(*inc);
        let mut v = event.to_json();
        let unix = Duration::from_secs(crate::scenario::EPOCH_SECS) + e.at;
        v["time"] = serde_json::Value::from(
            heartbeat_core::UnixTime::from_duration(unix)
                .display_secs(9)
                .to_string(),
        );
        lines.push_str(&v.to_string());
        lines.push('\n');
    }
    lines
}
