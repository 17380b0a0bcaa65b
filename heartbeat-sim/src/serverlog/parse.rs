//! The reader: blocks of lines parsed on worker threads (JSON parsing is most of the cost of a
//! week of heartbeats), then stitched together in order on the calling thread, where times,
//! client indices and server runs are resolved (they depend on everything before).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::io::{self, Read};
use std::sync::mpsc;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use heartbeat_core::liveness::Liveness;

use super::{ClientInfo, Item, MAX_REPORTED, ServerLog, Stamped};

/// Bytes per block handed to a worker.
const BLOCK: usize = 1 << 22;

/// Parses Unix seconds written as the server writes them (`1700000000.123456`, up to nine
/// decimals; more are truncated) into nanoseconds. `None` for anything else.
pub fn parse_unix(s: &str) -> Option<u64> {
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    if secs.is_empty() || secs.len() > 11 || !secs.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut nanos: u64 = 0;
    for i in 0..9 {
        let digit = frac.as_bytes().get(i).map_or(0, |b| u64::from(b - b'0'));
        nanos = nanos * 10 + digit;
    }
    secs.parse::<u64>()
        .ok()?
        .checked_mul(1_000_000_000)?
        .checked_add(nanos)
}

/// Unix seconds as a number, in nanoseconds; `None` if negative, not finite or too large.
///
/// Read through the number's shortest decimal form (what the writer printed, such as the
/// server's `time` with six decimals) rather than `x * 1e9`, which an `f64` holds only to a few
/// hundred nanoseconds at today's times.
fn unix_from_f64(x: f64) -> Option<u64> {
    (0.0..1e10)
        .contains(&x)
        .then(|| parse_unix(&x.to_string()))
        .flatten()
}

/// A time field: Unix seconds as a string or a number. An unreadable value is `None`, not an
/// error: a `time` field in a format this reader does not know is ignored.
#[derive(Clone, Copy, Debug, Default)]
struct Stamp(Option<u64>);

impl<'de> Deserialize<'de> for Stamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Stamp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("Unix seconds")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Stamp, E> {
                Ok(Stamp(parse_unix(s)))
            }
            fn visit_f64<E: de::Error>(self, x: f64) -> Result<Stamp, E> {
                Ok(Stamp(unix_from_f64(x)))
            }
            fn visit_u64<E: de::Error>(self, x: u64) -> Result<Stamp, E> {
                Ok(Stamp(x.checked_mul(1_000_000_000)))
            }
            fn visit_i64<E: de::Error>(self, x: i64) -> Result<Stamp, E> {
                Ok(Stamp(
                    u64::try_from(x)
                        .ok()
                        .and_then(|x| x.checked_mul(1_000_000_000)),
                ))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Stamp, E> {
                Ok(Stamp(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Stamp, E> {
                Ok(Stamp(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// The fields of every event this reader uses; the others are ignored.
#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow, default)]
    client: Option<Cow<'a, str>>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    received: Option<Stamp>,
    #[serde(default)]
    time: Option<Stamp>,
    #[serde(default)]
    conn: Option<u64>,
    #[serde(default)]
    interval_ms: Option<f64>,
    #[serde(default)]
    resumed: Option<bool>,
    #[serde(borrow, default)]
    reason: Option<Cow<'a, str>>,
    #[serde(default)]
    count: Option<u64>,
    #[serde(borrow, default)]
    from: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    to: Option<Cow<'a, str>>,
    #[serde(default)]
    since_last_ms: Option<f64>,
    #[serde(default)]
    late_ms: Option<f64>,
    /// `false` on a summary the server printed on request (SIGUSR1) without stopping.
    #[serde(rename = "final", default)]
    is_final: Option<bool>,
}

/// Only the event's name: what a line that failed to parse as [`Line`] was meant to be.
#[derive(Deserialize)]
struct NameOnly<'a> {
    #[serde(borrow, default)]
    event: Option<Cow<'a, str>>,
}

/// The events this reader knows.
const KNOWN: &[&str] = &[
    "burst",
    "connected",
    "disconnected",
    "duplicate",
    "evicted",
    "forgotten",
    "heartbeat",
    "missed",
    "restarted",
    "stalled",
    "summary",
    "transition",
];

/// One event as parsed, before its time and client are resolved.
#[derive(Clone, Debug)]
enum Raw {
    Beat {
        client: u32,
        seq: u64,
        received: u64,
    },
    Burst {
        client: u32,
        count: u64,
    },
    Connected {
        client: u32,
        conn: u64,
        interval: Option<Duration>,
        resumed: bool,
    },
    Disconnected {
        client: u32,
        reason: Box<str>,
    },
    Duplicate {
        client: u32,
        seq: u64,
    },
    Evicted {
        client: u32,
    },
    Missed {
        client: u32,
        count: u64,
    },
    Restarted {
        client: u32,
        nonce: bool,
    },
    Stalled {
        late_ns: u64,
    },
    Summary,
    Transition {
        client: u32,
        from: Liveness,
        to: Liveness,
        since_last: Option<Duration>,
    },
}

/// A parsed block of lines: clients by block-local index.
#[derive(Debug, Default)]
struct Block {
    lines: u64,
    names: Vec<String>,
    raws: Vec<(Option<u64>, Raw)>,
    skipped: u64,
    malformed: u64,
    /// The first malformed lines, by block-local line number (from 0).
    errors: Vec<(u64, String)>,
    /// The client of the last event.
    last: Option<u32>,
}

fn state(s: Option<&str>) -> Option<Liveness> {
    match s? {
        "down" => Some(Liveness::Down),
        "left" => Some(Liveness::Left),
        "suspect" => Some(Liveness::Suspect),
        "unknown" => Some(Liveness::Unknown),
        "up" => Some(Liveness::Up),
        _ => None,
    }
}

fn ms_to_duration(ms: f64) -> Option<Duration> {
    (ms.is_finite() && ms >= 0.0)
        .then(|| Duration::try_from_secs_f64(ms / 1000.0).ok())
        .flatten()
}

impl Block {
    fn intern(&mut self, index: &mut HashMap<String, u32>, name: &str) -> u32 {
        // Most lines name the client of the line before.
        if let Some(i) = self.last.filter(|&i| self.names[i as usize] == name) {
            return i;
        }
        let i = match index.get(name) {
            Some(&i) => i,
            None => {
                let i = self.names.len() as u32;
                self.names.push(name.to_owned());
                index.insert(name.to_owned(), i);
                i
            }
        };
        self.last = Some(i);
        i
    }

    fn malformed(&mut self, line: u64, why: String) {
        self.malformed += 1;
        if self.errors.len() < MAX_REPORTED {
            self.errors.push((line, why));
        }
    }

    /// Parses one block of whole lines.
    fn parse(text: &[u8]) -> Self {
        let mut b = Self::default();
        let mut index: HashMap<String, u32> = HashMap::new();
        let text = text.strip_suffix(b"\n").unwrap_or(text);
        if text.is_empty() {
            return b;
        }
        for (n, line) in text.split(|&c| c == b'\n').enumerate() {
            b.lines += 1;
            let trimmed = line.trim_ascii();
            if trimmed.first() != Some(&b'{') {
                b.skipped += 1;
                continue;
            }
            match serde_json::from_slice::<Line<'_>>(trimmed) {
                Ok(l) => match b.event(&mut index, &l) {
                    Ok(Some(raw)) => {
                        let time = l.time.and_then(|s| s.0);
                        b.raws.push((time, raw));
                    }
                    Ok(None) => b.skipped += 1,
                    Err(why) => b.malformed(n as u64, why),
                },
                Err(e) => match serde_json::from_slice::<NameOnly<'_>>(trimmed) {
                    Ok(NameOnly { event: Some(name) }) if KNOWN.contains(&name.as_ref()) => {
                        b.malformed(n as u64, format!("{name} event: {e}"));
                    }
                    Ok(_) => b.skipped += 1,
                    Err(e) => b.malformed(n as u64, format!("not valid JSON: {e}")),
                },
            }
        }
        b
    }

    /// The event of a parsed line: `Ok(None)` for one this reader does not know, `Err` for a
    /// known one missing what it needs.
    fn event(
        &mut self,
        index: &mut HashMap<String, u32>,
        l: &Line<'_>,
    ) -> Result<Option<Raw>, String> {
        let name = l.event.as_ref();
        if !KNOWN.contains(&name) {
            return Ok(None);
        }
        let need = |what: &str| format!("{name} event without a valid `{what}`");
        if name == "summary" {
            // A summary printed on request is a look at a running server, not its end.
            if l.is_final == Some(false) {
                return Ok(None);
            }
            return Ok(Some(Raw::Summary));
        }
        if name == "stalled" {
            let late = l
                .late_ms
                .and_then(ms_to_duration)
                .ok_or_else(|| need("late_ms"))?;
            return Ok(Some(Raw::Stalled {
                late_ns: late.as_nanos() as u64,
            }));
        }
        let Some(who) = l.client.as_deref() else {
            // A connection that never identified itself: nothing about a client.
            return if name == "disconnected" {
                Ok(None)
            } else {
                Err(need("client"))
            };
        };
        let client = self.intern(index, who);
        let seq = || l.seq.ok_or_else(|| need("seq"));
        let count = || l.count.ok_or_else(|| need("count"));
        Ok(Some(match name {
            "heartbeat" => Raw::Beat {
                client,
                seq: seq()?,
                received: l
                    .received
                    .and_then(|s| s.0)
                    .ok_or_else(|| need("received"))?,
            },
            "burst" => Raw::Burst {
                client,
                count: count()?,
            },
            "connected" => Raw::Connected {
                client,
                conn: l.conn.ok_or_else(|| need("conn"))?,
                interval: l
                    .interval_ms
                    .and_then(ms_to_duration)
                    .filter(|d| !d.is_zero()),
                resumed: l.resumed.unwrap_or(false),
            },
            "disconnected" => Raw::Disconnected {
                client,
                reason: l.reason.as_deref().unwrap_or("unknown").into(),
            },
            "duplicate" => Raw::Duplicate {
                client,
                seq: seq()?,
            },
            // A client forgotten after --forget-after is gone as an evicted one is.
            "evicted" | "forgotten" => Raw::Evicted { client },
            "missed" => Raw::Missed {
                client,
                count: count()?,
            },
            "restarted" => Raw::Restarted {
                client,
                nonce: l.seq.is_none(),
            },
            "transition" => Raw::Transition {
                client,
                from: state(l.from.as_deref()).ok_or_else(|| need("from"))?,
                to: state(l.to.as_deref()).ok_or_else(|| need("to"))?,
                since_last: l.since_last_ms.and_then(ms_to_duration),
            },
            _ => return Ok(None),
        }))
    }
}

/// Reads a whole log from `input`, parsing on `jobs` threads (1: on this one). `Err` only when
/// `input` cannot be read; what is wrong in its content is in [`ReadStats`](super::ReadStats).
pub fn read(mut input: impl Read, jobs: usize) -> io::Result<ServerLog> {
    let mut stitch = Stitch::default();
    if jobs <= 1 {
        let mut carry = Vec::new();
        while let Some(block) = next_block(&mut input, &mut carry)? {
            stitch.add(Block::parse(&block));
        }
        return Ok(stitch.finish());
    }
    std::thread::scope(|scope| {
        let (done_tx, done_rx) = mpsc::channel::<(usize, Block)>();
        let mut workers = Vec::new();
        for _ in 0..jobs {
            let (tx, rx) = mpsc::sync_channel::<(usize, Vec<u8>)>(2);
            let done = done_tx.clone();
            scope.spawn(move || {
                for (k, text) in rx {
                    if done.send((k, Block::parse(&text))).is_err() {
                        break;
                    }
                }
            });
            workers.push(tx);
        }
        drop(done_tx);
        // Blocks come back in any order; they are stitched in order.
        let mut waiting: BTreeMap<usize, Block> = BTreeMap::new();
        let mut next = 0;
        let mut take = |waiting: &mut BTreeMap<usize, Block>, stitch: &mut Stitch| {
            while let Some(b) = waiting.remove(&next) {
                stitch.add(b);
                next += 1;
            }
        };
        let mut carry = Vec::new();
        let mut k = 0;
        let result = loop {
            match next_block(&mut input, &mut carry) {
                Ok(Some(block)) => {
                    // A worker that is gone panicked; the scope reports it.
                    let _ = workers[k % jobs].send((k, block));
                    k += 1;
                    while let Ok((i, b)) = done_rx.try_recv() {
                        waiting.insert(i, b);
                    }
                    take(&mut waiting, &mut stitch);
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        drop(workers);
        for (i, b) in done_rx {
            waiting.insert(i, b);
        }
        take(&mut waiting, &mut stitch);
        result.map(|()| stitch.finish())
    })
}

/// The next block of whole lines (about [`BLOCK`] bytes; the last may lack its newline), or
/// `None` at the end. `carry` holds the start of a line cut by the previous read.
fn next_block(input: &mut impl Read, carry: &mut Vec<u8>) -> io::Result<Option<Vec<u8>>> {
    let mut buf = std::mem::take(carry);
    let want = buf.len() + BLOCK;
    buf.reserve(BLOCK);
    // `read_to_end` on `take` fills the spare capacity without zeroing it first.
    loop {
        match input
            .by_ref()
            .take((want - buf.len()) as u64)
            .read_to_end(&mut buf)
        {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(super::read_error(e)),
        }
    }
    if buf.is_empty() {
        return Ok(None);
    }
    if buf.len() == want {
        // More may follow: keep the cut line for the next block (a line longer than a block
        // grows the next one).
        match buf.iter().rposition(|&c| c == b'\n') {
            Some(end) => *carry = buf.split_off(end + 1),
            None => {
                *carry = buf;
                return next_block(input, carry);
            }
        }
    }
    Ok(Some(buf))
}

/// The calling thread's part: blocks in order, resolved into a [`ServerLog`].
#[derive(Debug, Default)]
struct Stitch {
    log: ServerLog,
    index: HashMap<String, u32>,
    /// The latest time known (absolute Unix ns).
    latest: Option<u64>,
    /// Items before the first time was known: their indices.
    untimed: Vec<usize>,
    /// Each client's last heartbeat (absolute Unix ns).
    last_beat: Vec<Option<u64>>,
    /// The connection numbers identified in the current run.
    conns: HashSet<u64>,
    /// A `summary` ended the current run.
    run_ended: bool,
    /// The previous item's time, for the restart marker.
    run_last: u64,
}

impl Stitch {
    fn add(&mut self, b: Block) {
        let first_line = self.log.stats.lines;
        let stats = &mut self.log.stats;
        stats.lines += b.lines;
        stats.skipped += b.skipped;
        stats.malformed += b.malformed;
        for (line, why) in b.errors {
            if stats.errors.len() < MAX_REPORTED {
                stats.errors.push((first_line + line + 1, why));
            }
        }
        let global: Vec<u32> = b
            .names
            .into_iter()
            .map(|name| match self.index.get(&name) {
                Some(&i) => i,
                None => {
                    let i = self.log.clients.len() as u32;
                    self.log.clients.push(ClientInfo {
                        name: name.clone(),
                        interval: None,
                    });
                    self.last_beat.push(None);
                    self.index.insert(name, i);
                    i
                }
            })
            .collect();
        for (time, raw) in b.raws {
            self.resolve(time, raw, &global);
        }
    }

    /// Gives one event its time, its global client and its place among the server runs.
    fn resolve(&mut self, time: Option<u64>, raw: Raw, global: &[u32]) {
        let g = |c: u32| global[c as usize];
        self.log.stats.events += 1;
        if let Raw::Summary = raw {
            self.run_ended = true;
            if let Some(t) = time {
                self.advance(t);
            }
            return;
        }
        // Connection numbers are never reused within a run, but clients identify themselves in
        // any order: a number identified twice is a new run, a smaller one is not.
        let new_run = match raw {
            Raw::Connected { conn, .. } => !self.conns.insert(conn),
            _ => false,
        };
        let own = match &raw {
            Raw::Beat { received, .. } => Some(*received),
            Raw::Transition {
                client,
                to,
                since_last: Some(since),
                ..
            } if time.is_none() && *to != Liveness::Up => self.last_beat[g(*client) as usize]
                .map(|t| t.saturating_add(since.as_nanos() as u64)),
            _ => time,
        };
        if (self.run_ended || new_run) && self.log.stats.runs > 0 {
            self.conns.clear();
            if let Raw::Connected { conn, .. } = raw {
                self.conns.insert(conn);
            }
            self.run_ended = false;
            let previous_end = self.run_last;
            let at = own.map_or(self.latest.unwrap_or(0), |t| self.at(t));
            self.push(
                at,
                Item::ServerRestart {
                    previous_end_ns: previous_end,
                },
            );
            self.log.stats.runs += 1;
        } else if self.log.stats.runs == 0 {
            self.log.stats.runs = 1;
            self.run_ended = false;
        }
        let at = match own {
            Some(t) => self.at(t),
            None => self.latest.unwrap_or(0),
        };
        let item = match raw {
            Raw::Beat { client, seq, .. } => {
                self.last_beat[g(client) as usize] = Some(at);
                Item::Beat {
                    client: g(client),
                    seq,
                }
            }
            Raw::Burst { client, count } => Item::Burst {
                client: g(client),
                count,
            },
            Raw::Connected {
                client,
                interval,
                resumed,
                ..
            } => {
                let info = &mut self.log.clients[g(client) as usize];
                if info.interval.is_none() {
                    info.interval = interval;
                }
                Item::Connected {
                    client: g(client),
                    hello: interval.is_some(),
                    resumed,
                }
            }
            Raw::Disconnected { client, reason } => {
                let reasons = &mut self.log.reasons;
                let r = match reasons.iter().position(|x| **x == *reason) {
                    Some(r) => r,
                    None => {
                        reasons.push(reason.into());
                        reasons.len() - 1
                    }
                };
                Item::Disconnected {
                    client: g(client),
                    reason: r as u32,
                }
            }
            Raw::Duplicate { client, seq } => Item::Duplicate {
                client: g(client),
                seq,
            },
            Raw::Evicted { client } => Item::Evicted { client: g(client) },
            Raw::Missed { client, count } => Item::Missed {
                client: g(client),
                count,
            },
            Raw::Restarted { client, nonce } => Item::Restarted {
                client: g(client),
                nonce,
            },
            Raw::Stalled { late_ns } => Item::Stalled { late_ns },
            Raw::Transition {
                client, from, to, ..
            } => Item::Transition {
                client: g(client),
                from,
                to,
            },
            Raw::Summary => unreachable!("handled above"),
        };
        self.push(at, item);
    }

    /// An absolute time made monotonic: never before the latest known.
    fn at(&mut self, t: u64) -> u64 {
        self.advance(t);
        self.latest.unwrap_or(t)
    }

    fn advance(&mut self, t: u64) {
        match self.latest {
            None => {
                self.latest = Some(t);
                for &i in &self.untimed {
                    self.log.items[i].at_ns = t;
                }
                self.untimed.clear();
            }
            Some(l) if t > l => self.latest = Some(t),
            Some(_) => {}
        }
    }

    fn push(&mut self, at: u64, item: Item) {
        if self.latest.is_none() {
            self.untimed.push(self.log.items.len());
        }
        self.run_last = at;
        self.log.items.push(Stamped { at_ns: at, item });
    }

    fn finish(mut self) -> ServerLog {
        let origin = self
            .log
            .items
            .iter()
            .map(|s| s.at_ns)
            .min()
            .unwrap_or(0)
            .min(self.latest.unwrap_or(0));
        for s in &mut self.log.items {
            s.at_ns -= origin;
            if let Item::ServerRestart { previous_end_ns } = &mut s.item {
                *previous_end_ns = previous_end_ns.saturating_sub(origin);
            }
        }
        self.log.origin_unix_ns = origin;
        self.log.end = Duration::from_nanos(self.latest.unwrap_or(origin) - origin);
        self.log
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn at_ms(log: &ServerLog) -> Vec<(u64, Item)> {
        log.items.iter().map(|s| (s.at_ns / MS, s.item)).collect()
    }

    #[test]
    fn unix_seconds_parse_exactly() {
        assert_eq!(
            parse_unix("1700000000.123456"),
            Some(1_700_000_000_123_456_000)
        );
        assert_eq!(parse_unix("1700000000"), Some(1_700_000_000_000_000_000));
        assert_eq!(parse_unix("1.1234567899"), Some(1_123_456_789));
        for bad in ["", ".5", "1e9", "-1.0", "1.2.3", "12345678901234.0", "1.x"] {
            assert_eq!(parse_unix(bad), None, "{bad}");
        }
    }

    /// Lines that are not events are skipped, unknown events and fields are ignored, and a
    /// malformed line is reported with its line number and skipped.
    #[test]
    fn tolerant_of_what_is_not_an_event() {
        let text = [
            "INFO a log line that is not JSON",
            "",
            r#"{"event":"connected","conn":1,"client":"a","interval_ms":100.0,"future":[1,2]}"#,
            r#"{"event":"heartbeat","client":"a","seq":1,"received":"1700000000.100000"}"#,
            r#"{"event":"gossip","client":"a","seq":"not a number"}"#,
            r#"{"no_event":true}"#,
            r#"{"event":"heartbeat","client":"a","seq":2}"#,
            r#"{"event":"heartbeat","client":"a","seq":-3,"received":"1700000000.3"}"#,
            r#"{"event":"transition","client":"a","from":"up","to":"sideways"}"#,
            r#"{"event":"heartbeat","client":"a","seq":4,"received":"1700000000.400000"}"#,
            r#"{"event":"heartbeat","client":"a","se"#,
        ]
        .join("\n");
        let log = ServerLog::from_text(&text);
        let s = &log.stats;
        assert_eq!((s.lines, s.events, s.skipped, s.malformed), (11, 3, 4, 4));
        let lines: Vec<u64> = s.errors.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, [7, 8, 9, 11]);
        assert!(s.errors[0].1.contains("received"), "{:?}", s.errors);
        assert_eq!(
            at_ms(&log),
            [
                (
                    0,
                    Item::Connected {
                        client: 0,
                        hello: true,
                        resumed: false
                    }
                ),
                (0, Item::Beat { client: 0, seq: 1 }),
                (300, Item::Beat { client: 0, seq: 4 }),
            ]
        );
        assert_eq!(log.clients[0].interval, Some(Duration::from_millis(100)));
        assert_eq!(log.origin_unix_ns, 1_700_000_000_100_000_000);
    }

    /// A `time` field, in either form, dates any event; without one, a transition to down is
    /// dated from the client's last heartbeat, anything else by what came before; times never
    /// go backwards.
    #[test]
    fn times_come_from_the_best_source() {
        let text = [
            r#"{"event":"connected","conn":1,"client":"a","interval_ms":100}"#,
            r#"{"event":"heartbeat","client":"a","seq":1,"received":"1700000000.000000"}"#,
            r#"{"event":"heartbeat","client":"b","seq":1,"received":"1700000000.050000"}"#,
            r#"{"event":"transition","client":"a","from":"up","to":"suspect","since_last_ms":200.0}"#,
            r#"{"event":"missed","client":"a","range":"2-3","first":2,"last":3,"count":2,"time":"1700000000.900000"}"#,
            r#"{"event":"restarted","client":"a","previous":3,"time":1700000001.5}"#,
            r#"{"event":"duplicate","client":"a","seq":1}"#,
            r#"{"event":"heartbeat","client":"a","seq":1,"received":"1699999999.000000"}"#,
            r#"{"event":"stalled","late_ms":6000.0,"time":"RFC 3339 is not read"}"#,
            r#"{"event":"transition","client":"c","from":"unknown","to":"down","since_last_ms":null,"time":1700000001.75}"#,
        ]
        .join("\n");
        let log = ServerLog::from_text(&text);
        assert_eq!(log.stats.malformed, 0, "{:?}", log.stats.errors);
        assert_eq!(
            at_ms(&log),
            [
                (
                    0,
                    Item::Connected {
                        client: 0,
                        hello: true,
                        resumed: false
                    }
                ),
                (0, Item::Beat { client: 0, seq: 1 }),
                (50, Item::Beat { client: 1, seq: 1 }),
                (
                    200,
                    Item::Transition {
                        client: 0,
                        from: Liveness::Up,
                        to: Liveness::Suspect
                    }
                ),
                (
                    900,
                    Item::Missed {
                        client: 0,
                        count: 2
                    }
                ),
                (
                    1500,
                    Item::Restarted {
                        client: 0,
                        nonce: true
                    }
                ),
                (1500, Item::Duplicate { client: 0, seq: 1 }),
                (1500, Item::Beat { client: 0, seq: 1 }),
                (1500, Item::Stalled { late_ns: 6000 * MS }),
                (
                    1750,
                    Item::Transition {
                        client: 2,
                        from: Liveness::Unknown,
                        to: Liveness::Down
                    }
                ),
            ]
        );
        assert_eq!(log.end, Duration::from_millis(1750));
        assert_eq!(log.clients.len(), 3);
    }

    /// A summary, or a connection number identified twice, begins a new server run; clients
    /// identifying themselves out of order do not, nor does a summary printed on request
    /// (`"final": false`, SIGUSR1).
    #[test]
    fn server_restarts_are_found() {
        let beat = |c: &str, t: u64| {
            format!(r#"{{"event":"heartbeat","client":"{c}","seq":1,"received":"{t}.0"}}"#)
        };
        let conn = |n: u64| format!(r#"{{"event":"connected","conn":{n},"client":"a"}}"#);
        let text = [
            conn(3),
            conn(1),
            beat("a", 100),
            conn(2),
            r#"{"event":"summary","final":false,"clients":[]}"#.to_owned(),
            beat("a", 101),
            r#"{"event":"summary","final":true,"clients":[]}"#.to_owned(),
            conn(1),
            beat("a", 200),
            conn(2),
            conn(2),
            beat("a", 300),
        ]
        .join("\n");
        let log = ServerLog::from_text(&text);
        assert_eq!(log.stats.runs, 3);
        let restarts: Vec<(u64, u64)> = log
            .items
            .iter()
            .filter_map(|s| match s.item {
                Item::ServerRestart { previous_end_ns } => {
                    Some((s.at_ns / 1_000_000_000, previous_end_ns / 1_000_000_000))
                }
                _ => None,
            })
            .collect();
        // Seconds since the log's first time (100 s): the first restart at the summary's successor
        // (dated by the run's last event), the second at the repeated connection number.
        assert_eq!(restarts, [(1, 1), (100, 100)]);
    }

    /// Blocks end at line ends whatever the read sizes; the parallel reader gives the same log
    /// as the single-threaded one, line numbers included.
    #[test]
    fn blocks_and_threads_do_not_change_the_result() {
        let mut text = String::new();
        for i in 0..200_000u64 {
            let c = ["a", "b", "c"][(i % 3) as usize];
            text.push_str(&format!(
                r#"{{"event":"heartbeat","client":"{c}","seq":{i},"received":"{}.{:06}"}}"#,
                1_700_000_000 + i / 10,
                (i % 10) * 100_000
            ));
            text.push('\n');
            if i % 50_000 == 7 {
                text.push_str("{broken\n");
            }
        }
        let one = read(text.as_bytes(), 1).unwrap();
        let two = read(text.as_bytes(), 2).unwrap();
        assert!(
            text.len() > 2 * BLOCK,
            "{} bytes: more than one block",
            text.len()
        );
        assert_eq!(one.stats, two.stats);
        assert_eq!(one.items, two.items);
        assert_eq!(one.clients, two.clients);
        assert_eq!(one.stats.events, 200_000);
        assert_eq!(one.stats.malformed, 4);
        assert_eq!(
            one.stats.errors[1].0, 50_010,
            "heartbeat 50007 is line 50009"
        );
        // A reader that hands out a few bytes at a time.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = buf.len().min(self.0.len()).min(7_777);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let trickled = read(Trickle(text.as_bytes()), 2).unwrap();
        assert_eq!(trickled.items, one.items);
    }

    /// Hostile input: nothing panics, whatever the bytes.
    #[test]
    fn garbage_does_not_panic() {
        let mut junk: Vec<u8> = Vec::new();
        let mut x: u32 = 12345;
        for _ in 0..100_000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            junk.push(match x % 7 {
                0 => b'{',
                1 => b'\n',
                2 => b'"',
                _ => (x >> 16) as u8,
            });
        }
        let log = read(&junk[..], 2).unwrap();
        assert!(log.stats.lines > 0);
        let odd = r#"{"event":"heartbeat","client":"\u0000<&>","seq":18446744073709551615,"received":1700000000.5}"#;
        let log = ServerLog::from_text(odd);
        assert_eq!(log.stats.events, 1);
        assert_eq!(log.name(0), "\u{0}<&>");
        // A receive time past what nanoseconds since 1970 hold is malformed, not a panic.
        let far = r#"{"event":"heartbeat","client":"a","seq":1,"received":"99999999999.9"}"#;
        assert_eq!(ServerLog::from_text(far).stats.malformed, 1);
    }
}
