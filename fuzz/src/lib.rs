//! Fuzz targets: the v1 decoder, the legacy decoder, and the server machine fed arbitrary
//! connection events and bytes. Each takes any bytes, must never panic, and checks invariants
//! with `assert!` (a failed assertion is a crash to the fuzzer).
//!
//! One function per target serves every runner: the AFL++ binaries in `fuzz/afl` (coverage
//! guided), and this crate's tests, which replay the committed corpus (`fuzz/corpus`) and run a
//! proptest budget over random inputs in the normal test suite. See `fuzz/README.md`.
//!
//! ```
//! // Any bytes at all: a target returns, or panics on a bug.
//! for (name, target) in heartbeat_fuzz::TARGETS {
//!     target(b"HELLO 1 web-01 1000\nBEAT 1 1700000000.5\n\xff\x00");
//!     println!("{name}: ok");
//! }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use heartbeat_core::config::ServerConfig;
use heartbeat_core::detector::{DetectorConfig, DetectorKind};
use heartbeat_core::frame::{Frame, FrameDecoder, Inbound, LegacyBeat, StreamDecoder};
use heartbeat_core::server::{Event, Output, Server};
use heartbeat_core::{ClientKey, ConnId, Now, UnixTime};

/// A fuzz target: any bytes in, a panic on a broken invariant.
pub type Target = fn(&[u8]);

/// The targets by name, as the corpus directories and AFL binaries are named.
pub const TARGETS: [(&str, Target); 3] = [
    ("legacy_decoder", legacy_decoder),
    ("server_machine", server_machine),
    ("v1_decoder", v1_decoder),
];

/// The v1 line decoder: frames come out the same whether the bytes arrive whole or split at
/// any point, nothing is consumed while a frame is incomplete, and every decoded frame encodes
/// to bytes that decode to a frame with the same encoding.
pub fn v1_decoder(data: &[u8]) {
    let (cut, bytes) = split_point(data);
    let whole = decode_frames(&[bytes]);
    let split = decode_frames(&[&bytes[..cut], &bytes[cut..]]);
    assert_eq!(whole, split, "splitting the stream changed the frames");
    for frame in whole.iter().flatten() {
        let once = frame.to_bytes();
        assert!(once.len() <= heartbeat_core::frame::MAX_FRAME_LEN);
        let mut buf = bytes_mut(&once);
        let again = Frame::decode(&mut buf)
            .expect("an encoded frame decodes")
            .expect("an encoded frame is complete");
        assert_eq!(again.to_bytes(), once, "encoding is not a fixpoint");
        assert!(buf.is_empty());
    }
}

/// The legacy decoder: the same heartbeats whole or split, at end of stream too, and each
/// heartbeat re-encoded in the seed's format decodes again.
pub fn legacy_decoder(data: &[u8]) {
    let (cut, tail) = split_point(data);
    let mut bytes = b"Sequence #".to_vec();
    bytes.extend_from_slice(tail);
    let cut = cut + 10;
    let whole = decode_stream(&[&bytes]);
    let split = decode_stream(&[&bytes[..cut], &bytes[cut..]]);
    assert_eq!(whole, split, "splitting the stream changed the heartbeats");
    for unit in whole.iter().flatten() {
        let Inbound::Legacy(beat) = unit else {
            panic!("a legacy stream gave a v1 frame");
        };
        let encoded = beat.to_bytes();
        let mut buf = bytes_mut(&encoded);
        let again = LegacyBeat::decode(&mut buf)
            .expect("an encoded heartbeat decodes")
            .expect("an encoded heartbeat is complete");
        assert_eq!(again.seq, beat.seq);
    }
}

/// The first byte picks where to split the rest.
fn split_point(data: &[u8]) -> (usize, &[u8]) {
    match data.split_first() {
        Some((&b, rest)) => (usize::from(b) % (rest.len() + 1), rest),
        None => (0, data),
    }
}

fn bytes_mut(b: &[u8]) -> BytesMut {
    BytesMut::from(b)
}

/// Every frame (or the error that ended the stream) from `chunks` pushed in turn.
fn decode_frames(chunks: &[&[u8]]) -> Vec<Result<Frame, String>> {
    let mut d = FrameDecoder::new();
    let mut out = Vec::new();
    for c in chunks {
        d.push(c);
        loop {
            match d.decode_next() {
                Ok(Some(f)) => out.push(Ok(f)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    return out;
                }
            }
        }
    }
    out
}

/// Every unit (or the error that ended the stream) of a server stream, end of stream included.
fn decode_stream(chunks: &[&[u8]]) -> Vec<Result<Inbound, String>> {
    let mut d = StreamDecoder::new();
    let mut out = Vec::new();
    for c in chunks {
        d.push(c);
        loop {
            match d.decode_next() {
                Ok(Some(u)) => out.push(Ok(u)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    return out;
                }
            }
        }
        assert!(d.buffered() <= heartbeat_core::frame::MAX_FRAME_LEN);
    }
    match d.finish() {
        Ok(u) => out.extend(u.map(Ok)),
        Err(e) => out.push(Err(e.to_string())),
    }
    out
}

/// Reads the fuzzer's bytes as a program.
struct Ops<'a>(&'a [u8]);

impl Ops<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }

    /// One of `table`, picked by the next byte (the first when none is left).
    fn pick<T: Copy>(&mut self, table: &[T]) -> T {
        let b = self.byte().unwrap_or(0);
        table[usize::from(b) % table.len()]
    }
}

/// Time steps the program can take, in milliseconds.
const STEPS_MS: [u64; 9] = [0, 1, 7, 20, 100, 1_000, 10_000, 600_000, 86_400_000];

/// Sequence numbers worth trying besides small ones: the wire's limit, beyond it, 0.
const SEQS: [u64; 6] = [0, 1, 2, 1 << 32, 1 << 62, 1 << 63];

/// Stamp offsets from the server's clock, in milliseconds (the last ones are implausible).
const STAMP_OFFSETS_MS: [i64; 8] = [
    0,
    -3,
    900,
    -1_500,
    3_600_000,
    -3_600_000,
    90_000_000,
    i64::MIN,
];

/// Intervals a `HELLO` can declare, in milliseconds (1 is below the minimum).
const INTERVALS_MS: [u64; 6] = [1, 10, 20, 1_000, 60_000, 86_400_000];

/// The server machine under any interleaving of accepts, input (raw bytes or well-formed
/// frames with hostile numbers), ends of stream, timeouts, closes and blocked writes, on a
/// configuration picked by the first byte. Invariants, checked after every step:
/// - exactly one `Disconnect` per accepted connection (all of them by the end), and no write
///   to a connection after it;
/// - one `Disconnected` event per `Disconnect`, and `connection_count` is what is open;
/// - each client's counters agree with the events: `received` is its `Heartbeat` events,
///   `duplicates` its `Duplicate` events, `missed` its `Missed` counts minus recovered
///   heartbeats; its missed ranges stay within the cap and hold at most `missed` numbers;
/// - every event and the report render (text and JSON).
pub fn server_machine(data: &[u8]) {
    let mut ops = Ops(data);
    let kind = ops.pick(&DetectorKind::ALL);
    let max_ranges = usize::from(ops.byte().unwrap_or(0) % 5) + 1;
    let config = ServerConfig::default()
        .detector(DetectorConfig::new(kind))
        .max_missed_ranges(max_ranges)
        .max_clients(usize::from(ops.byte().unwrap_or(0) % 6) + 1);
    let mut m = Machine::new(config, max_ranges);
    while let Some(op) = ops.byte() {
        match op % 9 {
            0 => {
                let port = u16::from(ops.byte().unwrap_or(0) % 4);
                m.accept(port);
            }
            1 => {
                let conn = m.pick_conn(&mut ops);
                let len = usize::from(ops.byte().unwrap_or(0));
                let bytes = ops.take(len).to_vec();
                m.input(conn, &bytes);
            }
            2 => {
                let conn = m.pick_conn(&mut ops);
                let frame = m.frame(&mut ops);
                m.input(conn, &frame);
            }
            3 => {
                let conn = m.pick_conn(&mut ops);
                m.server.handle_eof(m.now, conn);
            }
            4 => {
                let step = Duration::from_millis(ops.pick(&STEPS_MS));
                m.now = m.now.advanced(step);
            }
            5 => m.server.handle_timeout(m.now),
            6 => {
                let conn = m.pick_conn(&mut ops);
                if ops.byte().unwrap_or(0) % 2 == 0 {
                    m.server.close(m.now, conn);
                } else {
                    m.server.handle_write_blocked(m.now, conn);
                }
            }
            7 => {
                // The server's wall clock steps alone (NTP), either way.
                let step = Duration::from_millis(ops.pick(&STEPS_MS));
                m.now.unix = if ops.byte().unwrap_or(0) % 2 == 0 {
                    m.now.unix.saturating_add(step)
                } else {
                    UnixTime::from_duration(m.now.unix.as_duration().saturating_sub(step))
                };
            }
            _ => m.server.close_all(m.now),
        }
        m.check();
    }
    m.server.close_all(m.now);
    m.check();
    assert_eq!(m.server.connection_count(), 0);
    for conn in &m.accepted {
        assert!(
            m.disconnected.contains(conn),
            "{conn} never got its Disconnect"
        );
    }
    let report = m.server.report();
    let _ = report.to_string();
    let _ = report.to_json();
}

/// The server under test and what its outputs said so far.
struct Machine {
    server: Server,
    max_ranges: usize,
    now: Now,
    accepted: Vec<ConnId>,
    disconnected: BTreeSet<ConnId>,
    disconnected_events: usize,
    counts: BTreeMap<ClientKey, Counts>,
}

/// One client's counters as its events tell them.
#[derive(Default)]
struct Counts {
    received: u64,
    duplicates: u64,
    missed: u128,
    recovered: u128,
}

impl Machine {
    fn new(config: ServerConfig, max_ranges: usize) -> Self {
        #[allow(clippy::disallowed_methods)] // an arbitrary origin; only offsets from it matter
        let mono = Instant::now();
        Self {
            max_ranges,
            server: Server::new(Arc::new(config)),
            now: Now {
                mono,
                unix: UnixTime::from_nanos(1_700_000_000_000_000_000),
            },
            accepted: Vec::new(),
            disconnected: BTreeSet::new(),
            disconnected_events: 0,
            counts: BTreeMap::new(),
        }
    }

    fn accept(&mut self, port: u16) {
        let conn = self
            .server
            .accept(self.now, SocketAddr::from(([127, 0, 0, 1], 40_000 + port)));
        assert!(!self.accepted.contains(&conn), "{conn} allocated twice");
        self.accepted.push(conn);
    }

    /// An accepted connection (open or not), or one never accepted.
    fn pick_conn(&mut self, ops: &mut Ops<'_>) -> ConnId {
        let b = usize::from(ops.byte().unwrap_or(0));
        match self.accepted.len() {
            0 => ConnId(1_000),
            n if b < 250 => self.accepted[b % n],
            _ => ConnId(1_000 + b as u64),
        }
    }

    fn input(&mut self, conn: ConnId, bytes: &[u8]) {
        self.server.handle_input(self.now, conn, bytes);
    }

    /// A well-formed frame with numbers picked to hurt: `HELLO` (asking for advice or not),
    /// `BEAT`, `INTERVAL`, `BYE` or a legacy heartbeat.
    fn frame(&self, ops: &mut Ops<'_>) -> Vec<u8> {
        let which = ops.byte().unwrap_or(0);
        let seq = match ops.byte().unwrap_or(0) {
            b if b < 200 => u64::from(b % 40) + 1,
            b => SEQS[usize::from(b) % SEQS.len()],
        };
        let offset = ops.pick(&STAMP_OFFSETS_MS);
        let now_ns = i128::from(self.now.unix.as_nanos());
        let sent_ns = (now_ns + i128::from(offset) * 1_000_000).clamp(0, i128::from(u64::MAX));
        let sent = UnixTime::from_nanos(u64::try_from(sent_ns).unwrap_or(0));
        match which % 5 {
            0 => {
                let id = ops.byte().unwrap_or(0) % 3;
                let interval = ops.pick(&INTERVALS_MS);
                let session = ops.byte().unwrap_or(0) % 3;
                // Every other HELLO asks for advice (the negotiated extension).
                let advice = if which / 5 % 2 == 1 { " advice" } else { "" };
                format!("HELLO 1 c{id} {interval} {session:x}{advice}\n").into_bytes()
            }
            // One in eight of these changes the interval (advice), from `seq` on.
            1 | 2 if which / 5 % 8 == 7 => {
                let interval = ops.pick(&INTERVALS_MS);
                format!("INTERVAL {interval} {seq}\n").into_bytes()
            }
            1 | 2 => format!("BEAT {seq} {sent}\n").into_bytes(),
            3 => b"BYE\n".to_vec(),
            _ => format!(
                "Sequence #{seq}: Sending heartbeat at {}. ",
                sent.display_secs(4)
            )
            .into_bytes(),
        }
    }

    /// Drains the outputs and checks the invariants.
    fn check(&mut self) {
        while let Some(out) = self.server.poll_output() {
            match out {
                Output::Disconnect { conn, .. } => {
                    assert!(self.accepted.contains(&conn), "{conn} was never accepted");
                    assert!(self.disconnected.insert(conn), "{conn} disconnected twice");
                }
                Output::Transmit { conn, bytes } => {
                    assert!(self.accepted.contains(&conn), "{conn} was never accepted");
                    assert!(!self.disconnected.contains(&conn), "write to closed {conn}");
                    assert!(!bytes.is_empty());
                }
                Output::Event(e) => self.event(&e),
            }
        }
        assert_eq!(self.disconnected_events, self.disconnected.len());
        let open = self.accepted.len() - self.disconnected.len();
        assert_eq!(self.server.connection_count(), open);
        for view in self.server.clients() {
            let c = self.counts.get(view.client());
            let (received, duplicates, missed) = c.map_or((0, 0, 0), |c| {
                (
                    c.received,
                    c.duplicates,
                    c.missed.saturating_sub(c.recovered),
                )
            });
            assert_eq!(view.received(), received, "{}", view.client());
            assert_eq!(view.duplicates(), duplicates, "{}", view.client());
            if missed < u128::from(u64::MAX) {
                assert_eq!(u128::from(view.missed()), missed, "{}", view.client());
            }
            let ranges: Vec<_> = view.missed_ranges().collect();
            assert!(ranges.len() <= self.max_ranges, "{} ranges", ranges.len());
            let in_ranges: u128 = ranges.iter().map(|r| u128::from(r.count())).sum();
            assert!(in_ranges <= u128::from(view.missed()));
        }
    }

    fn event(&mut self, e: &Event) {
        let _ = e.to_string();
        let _ = e.to_json();
        match e {
            Event::Disconnected { .. } => self.disconnected_events += 1,
            Event::Evicted { client } | Event::Forgotten { client, .. } => {
                self.counts.remove(client);
            }
            Event::Heartbeat {
                client, recovered, ..
            } => {
                let c = self.counts.entry(client.clone()).or_default();
                c.received += 1;
                c.recovered += u128::from(*recovered);
            }
            Event::Duplicate { client, .. } => {
                self.counts.entry(client.clone()).or_default().duplicates += 1;
            }
            Event::Missed { client, range, .. } => {
                self.counts.entry(client.clone()).or_default().missed += u128::from(range.count());
            }
            _ => {}
        }
    }
}
