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

use heartbeat_core::ClientKey;
use heartbeat_core::liveness::Liveness;
use heartbeat_core::server::Event;

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

/// What a line that is not an [`Event`] was meant to be: a `summary`, an event this reader
/// does not know (a newer server's), or a malformed event.
#[derive(Deserialize)]
struct NameOnly<'a> {
    #[serde(borrow, default)]
    event: Option<Cow<'a, str>>,
    /// `false` on a summary the server printed on request (SIGUSR1) without stopping.
    #[serde(rename = "final", default)]
    is_final: Option<bool>,
}

/// True when `name` is one of the core's [`Event`] kinds: asked of `Event`'s own derived
/// reader (an object with only that `"event"` is refused for a missing field, not for an
/// unknown variant), so there is no list of names to keep.
fn is_event_kind(name: &str) -> bool {
    #[derive(Debug)]
    struct Probe(bool);
    impl fmt::Display for Probe {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "known: {}", self.0)
        }
    }
    impl std::error::Error for Probe {}
    impl de::Error for Probe {
        fn custom<T: fmt::Display>(_: T) -> Self {
            Self(true)
        }
        fn unknown_variant(_: &str, _: &'static [&'static str]) -> Self {
            Self(false)
        }
    }
    let only = de::value::MapDeserializer::<_, Probe>::new(std::iter::once(("event", name)));
    match Event::deserialize(only) {
        Ok(_) => true,
        Err(Probe(known)) => known,
    }
}

/// One line as parsed, before its time and client are resolved.
#[derive(Debug)]
enum Line {
    Event(Event),
    Summary,
}

/// A parsed block of lines: clients by block-local index.
#[derive(Debug, Default)]
struct Block {
    lines: u64,
    names: Vec<String>,
    /// Each event's `time` and block-local client.
    events: Vec<(Option<u64>, Option<u32>, Line)>,
    skipped: u64,
    malformed: u64,
    /// The first malformed lines, by block-local line number (from 0).
    errors: Vec<(u64, String)>,
    /// The client of the last event.
    last: Option<u32>,
}

/// The client an event is about, if any.
fn client_of(e: &Event) -> Option<&ClientKey> {
    match e {
        Event::Burst { client, .. }
        | Event::ClockSkew { client, .. }
        | Event::Connected { client, .. }
        | Event::Duplicate { client, .. }
        | Event::Evicted { client }
        | Event::Forgotten { client, .. }
        | Event::Heartbeat { client, .. }
        | Event::Missed { client, .. }
        | Event::Restarted { client, .. }
        | Event::Transition { client, .. } => Some(client),
        Event::Disconnected { client, .. } => client.as_ref(),
        Event::Stalled { .. } | Event::Unidentified { .. } => None,
        _ => None,
    }
}

impl Block {
    fn intern(&mut self, index: &mut HashMap<String, u32>, key: &ClientKey) -> u32 {
        let name = match key {
            ClientKey::Id(id) => Cow::Borrowed(id.as_str()),
            ClientKey::Peer(_) => Cow::Owned(key.to_string()),
        };
        // Most lines name the client of the line before.
        if let Some(i) = self.last.filter(|&i| self.names[i as usize] == name) {
            return i;
        }
        let i = match index.get(name.as_ref()) {
            Some(&i) => i,
            None => {
                let i = self.names.len() as u32;
                self.names.push(name.clone().into_owned());
                index.insert(name.into_owned(), i);
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
            match serde_json::from_slice::<Event>(trimmed) {
                Ok(event) => {
                    let client = client_of(&event).map(|c| b.intern(&mut index, c));
                    let time = match event {
                        // At its `received` stamp: nearly every line, read once.
                        Event::Heartbeat { .. } => None,
                        _ => time_of(trimmed),
                    };
                    b.events.push((time, client, Line::Event(event)));
                }
                Err(e) => match serde_json::from_slice::<NameOnly<'_>>(trimmed) {
                    Ok(NameOnly {
                        event: Some(name),
                        is_final,
                    }) if name == "summary" => {
                        // A summary printed on request is a look at a running server, not its
                        // end.
                        if is_final == Some(false) {
                            b.skipped += 1;
                        } else {
                            b.events.push((time_of(trimmed), None, Line::Summary));
                        }
                    }
                    Ok(NameOnly {
                        event: Some(name), ..
                    }) if is_event_kind(&name) => {
                        b.malformed(n as u64, format!("{name} event: {e}"));
                    }
                    Ok(_) => b.skipped += 1,
                    Err(e) => b.malformed(n as u64, format!("not valid JSON: {e}")),
                },
            }
        }
        b
    }
}

/// A line's `time` field (the net layer's, beside the event's own fields), if readable.
fn time_of(line: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    struct TimeOnly {
        #[serde(default)]
        time: Stamp,
    }
    serde_json::from_slice::<TimeOnly>(line).ok()?.time.0
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
        for (time, client, line) in b.events {
            self.resolve(time, client, line, &global);
        }
    }

    /// Gives one event its time, its global client and its place among the server runs, and
    /// makes it an [`Item`]: the one place that reads the core's events, matching on every
    /// kind.
    fn resolve(&mut self, time: Option<u64>, client: Option<u32>, line: Line, global: &[u32]) {
        let client = client.map(|c| global[c as usize]);
        let event = match line {
            Line::Summary => {
                self.log.stats.events += 1;
                self.run_ended = true;
                if let Some(t) = time {
                    self.advance(t);
                }
                return;
            }
            Line::Event(e) => e,
        };
        let Some(item) = self.item(&event, client) else {
            // Nothing tune or timeline use: an unidentified connection's end, a clock skew,
            // a summary of unidentified connections, a kind newer than this reader.
            self.log.stats.skipped += 1;
            return;
        };
        self.log.stats.events += 1;
        // Connection numbers are never reused within a run, but clients identify themselves in
        // any order: a number identified twice is a new run, a smaller one is not.
        let new_run = match &event {
            Event::Connected { conn, .. } => !self.conns.insert(conn.0),
            _ => false,
        };
        let own = match &event {
            Event::Heartbeat { received, .. } => Some(received.as_nanos()),
            Event::Transition {
                to,
                since_last: Some(since),
                ..
            } if time.is_none() && *to != Liveness::Up => client
                .and_then(|c| self.last_beat[c as usize])
                .map(|t| t.saturating_add(since.as_nanos() as u64)),
            _ => time,
        };
        if (self.run_ended || new_run) && self.log.stats.runs > 0 {
            self.conns.clear();
            if let Event::Connected { conn, .. } = &event {
                self.conns.insert(conn.0);
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
        if let Item::Beat { client, .. } = item {
            self.last_beat[client as usize] = Some(at);
        }
        self.push(at, item);
    }

    /// The item of an event about `client` (its global index), and what the log learns from
    /// it (a client's interval, a reason's text); `None` for what tune and timeline do not use.
    fn item(&mut self, event: &Event, client: Option<u32>) -> Option<Item> {
        let item = match event {
            Event::Burst { count, .. } => Item::Burst {
                client: client?,
                count: *count,
            },
            Event::ClockSkew { .. } => return None,
            Event::Connected {
                interval, resumed, ..
            } => {
                let interval = interval.filter(|d| !d.is_zero());
                let info = &mut self.log.clients[client? as usize];
                if info.interval.is_none() {
                    info.interval = interval;
                }
                Item::Connected {
                    client: client?,
                    hello: interval.is_some(),
                    resumed: *resumed,
                }
            }
            Event::Disconnected { reason, .. } => {
                // A connection that never identified itself: nothing about a client.
                let client = client?;
                let reason = reason.to_string();
                let reasons = &mut self.log.reasons;
                let r = match reasons.iter().position(|x| *x == reason) {
                    Some(r) => r,
                    None => {
                        reasons.push(reason);
                        reasons.len() - 1
                    }
                };
                Item::Disconnected {
                    client,
                    reason: r as u32,
                }
            }
            Event::Duplicate { seq, .. } => Item::Duplicate {
                client: client?,
                seq: seq.0,
            },
            // A client forgotten after --forget-after is gone as an evicted one is.
            Event::Evicted { .. } | Event::Forgotten { .. } => Item::Evicted { client: client? },
            Event::Heartbeat { seq, .. } => Item::Beat {
                client: client?,
                seq: seq.0,
            },
            Event::Missed { range, .. } => Item::Missed {
                client: client?,
                count: range.count(),
            },
            Event::Restarted { seq, .. } => Item::Restarted {
                client: client?,
                nonce: seq.is_none(),
            },
            Event::Stalled { late } => Item::Stalled {
                late_ns: u64::try_from(late.as_nanos()).unwrap_or(u64::MAX),
            },
            Event::Transition { from, to, .. } => Item::Transition {
                client: client?,
                from: *from,
                to: *to,
            },
            Event::Unidentified { .. } => return None,
            // A kind newer than this reader (the core's `Event` is non-exhaustive).
            _ => return None,
        };
        Some(item)
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

    /// What a log holds (as [`at_ms`] gives it) when client 0 identified itself with a hello and
    /// sent heartbeat 1 at time 0: those two, then `rest`.
    fn opened_by_hello_and_beat_1(rest: impl IntoIterator<Item = (u64, Item)>) -> Vec<(u64, Item)> {
        let opening = [
            (
                0,
                Item::Connected {
                    client: 0,
                    hello: true,
                    resumed: false,
                },
            ),
            (0, Item::Beat { client: 0, seq: 1 }),
        ];
        opening.into_iter().chain(rest).collect()
    }

    /// A heartbeat as the server writes it, `received` at the given Unix seconds (text).
    fn beat(client: &str, seq: u64, received: &str) -> String {
        format!(
            r#"{{"event":"heartbeat","conn":1,"client":"{client}","seq":{seq},"sent":"{received}","received":"{received}","delay_ms":0.0,"inter_arrival_ms":null,"recovered":false}}"#
        )
    }

    /// A connection identified as the server writes it, `extra` fields before the last brace.
    fn connected(conn: u64, client: &str, interval_ms: &str, extra: &str) -> String {
        format!(
            r#"{{"event":"connected","conn":{conn},"client":"{client}","peer":"192.0.2.1:4000","protocol":"v1","interval_ms":{interval_ms},"resumed":false{extra}}}"#
        )
    }

    /// A transition as the server writes it, `extra` fields before the last brace.
    fn transition(client: &str, from: &str, to: &str, since_last: &str, extra: &str) -> String {
        format!(
            r#"{{"event":"transition","client":"{client}","peer":null,"from":"{from}","to":"{to}","since_last_ms":{since_last},"suspicion":0.0,"detector":"fixed"{extra}}}"#
        )
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
            "INFO a log line that is not JSON".to_owned(),
            String::new(),
            connected(1, "a", "100.0", r#","future":[1,2]"#),
            beat("a", 1, "1700000000.100000"),
            r#"{"event":"gossip","client":"a","seq":"not a number"}"#.to_owned(),
            r#"{"no_event":true}"#.to_owned(),
            beat("a", 2, "1700000000.2").replace(r#","received":"1700000000.2""#, ""),
            beat("a", 3, "1700000000.3").replace(":3,", ":-3,"),
            transition("a", "up", "sideways", "null", ""),
            beat("a", 4, "1700000000.400000"),
            r#"{"event":"heartbeat","client":"a","se"#.to_owned(),
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
            opened_by_hello_and_beat_1([(300, Item::Beat { client: 0, seq: 4 }),])
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
            connected(1, "a", "100", ""),
            beat("a", 1, "1700000000.000000"),
            beat("b", 1, "1700000000.050000"),
            transition("a", "up", "suspect", "200.0", ""),
            r#"{"event":"missed","conn":1,"client":"a","range":"2-3","first":2,"last":3,"count":2,"time":"1700000000.900000"}"#.to_owned(),
            r#"{"event":"restarted","conn":1,"client":"a","previous":3,"seq":null,"time":1700000001.5}"#.to_owned(),
            r#"{"event":"duplicate","conn":1,"client":"a","seq":1}"#.to_owned(),
            beat("a", 1, "1699999999.000000"),
            r#"{"event":"stalled","late_ms":6000.0,"time":"RFC 3339 is not read"}"#.to_owned(),
            transition("c", "unknown", "down", "null", r#","time":1700000001.75"#),
        ]
        .join("\n");
        let log = ServerLog::from_text(&text);
        assert_eq!(log.stats.malformed, 0, "{:?}", log.stats.errors);
        assert_eq!(
            at_ms(&log),
            opened_by_hello_and_beat_1([
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
            ])
        );
        assert_eq!(log.end, Duration::from_millis(1750));
        assert_eq!(log.clients.len(), 3);
    }

    /// A summary, or a connection number identified twice, begins a new server run; clients
    /// identifying themselves out of order do not, nor does a summary printed on request
    /// (`"final": false`, SIGUSR1).
    #[test]
    fn server_restarts_are_found() {
        let beat = |c: &str, t: u64| beat(c, 1, &format!("{t}.0"));
        let conn = |n: u64| connected(n, "a", "null", "");
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
            text.push_str(&beat(
                c,
                i,
                &format!("{}.{:06}", 1_700_000_000 + i / 10, (i % 10) * 100_000),
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
        let odd = beat("a", u64::MAX, "1700000000.5");
        let log = ServerLog::from_text(&odd);
        assert_eq!(log.stats.events, 1);
        // A client id the server never accepts, and a receive time past what nanoseconds since
        // 1970 hold, are malformed, not a panic.
        let bad_id = beat("a", 1, "1700000000.5").replace(r#""a""#, r#""\u0000<&>""#);
        assert_eq!(ServerLog::from_text(&bad_id).stats.malformed, 1);
        let far = beat("a", 1, "99999999999.9");
        assert_eq!(ServerLog::from_text(&far).stats.malformed, 1);
    }
}
