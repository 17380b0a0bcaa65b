//! The wire codec: the v1 line protocol and the seed's legacy text format.
//!
//! Both are decoded incrementally from a byte buffer: `decode` returns `Ok(None)` while a frame is
//! incomplete (h11's `NEED_DATA`) and consumes exactly one frame's bytes when it returns one, so
//! however the stream is split or coalesced the same frames come out in the same order.
//! See `PROTOCOL.md` at the repository root for the grammar and examples.

use std::fmt::Write as _;
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};

use crate::auth::{ANSWER_LEN, Answer, NONCE_LEN, Nonce};
use crate::error::DecodeError;
use crate::ids::{ClientId, Seq};
use crate::time::UnixTime;

/// The longest frame accepted, newline included, in either format. Longer input is hostile.
pub const MAX_FRAME_LEN: usize = 256;

/// The v1 protocol version this crate speaks.
pub const VERSION: u32 = 1;

/// The largest sequence number accepted, so `seq + 1` never overflows and fits a JSON integer
/// in every language that parses `i64`.
pub const MAX_SEQ: u64 = 1 << 63;

/// The largest interval the wire carries: one day, in milliseconds.
pub const MAX_INTERVAL_MS: u64 = 86_400_000;

/// The token a client adds to `HELLO` (after its session) to ask for interval advice, and a
/// server that gives advice adds to its `WELCOME`: the negotiated extension of `PROTOCOL.md`,
/// "Advice (negotiated)". Neither side sends `ADVISE` or `INTERVAL` without it.
pub const ADVICE_TOKEN: &str = "advice";

/// What the first bytes of a server connection say it speaks.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// The seed's text format: `Sequence #<n>: Sending heartbeat at <secs>. `, no acks.
    Legacy,
    /// This project's line protocol, starting with `HELLO`.
    V1,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Legacy => "legacy",
            Self::V1 => "v1",
        })
    }
}

const LEGACY_PREFIX: &[u8] = b"Sequence #";
const V1_PREFIX: &[u8] = b"HELLO ";

/// The `ERROR` text of a server that refused a client's authentication. It says no more, so a
/// client cannot probe which ids have keys; the client knows it by this text.
pub const AUTH_FAILED_MESSAGE: &str = "authentication failed";

/// The `ERROR` text a TLS server writes, in plaintext, to a client that spoke plaintext to it
/// (a `HELLO` or the legacy format) before closing the connection. The client knows it by this
/// text and ends at once: connecting again without TLS can never succeed.
pub const TLS_EXPECTED_MESSAGE: &str = "this server speaks TLS: connect with --tls";

/// The `ERROR` text a server without TLS writes, in plaintext, to a client whose first bytes
/// are a TLS handshake, before closing the connection. The client's TLS handshake fails on
/// those bytes, and it says to drop `--tls`.
pub const TLS_UNEXPECTED_MESSAGE: &str = "this server does not speak TLS: connect without --tls";

/// The first byte of a TLS record that carries a handshake (a ClientHello): TLS's content
/// type 22.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The `ERROR` text of a server whose identity rule refuses a `HELLO` for `client`. It names
/// `--id`: two clients started with the same id are the usual cause. The client knows it by
/// this text (the server and the client share this one definition).
pub(crate) fn id_in_use_message(client: &ClientId) -> String {
    format!(
        "client id {client} is in use by a live connection with another session; a newer \
         connection replaces it only with the same session: give each client its own --id"
    )
}

/// Tells the protocol from the first bytes of a connection.
///
/// `Ok(None)` means the bytes so far are a prefix of both or either and more are needed.
pub fn detect(first: &[u8]) -> Result<Option<Protocol>, DecodeError> {
    if first.first() == Some(&TLS_HANDSHAKE_RECORD) {
        return Err(DecodeError::TlsHandshake);
    }
    for (prefix, protocol) in [(LEGACY_PREFIX, Protocol::Legacy), (V1_PREFIX, Protocol::V1)] {
        let n = first.len().min(prefix.len());
        if first[..n] == prefix[..n] {
            return Ok((n == prefix.len()).then_some(protocol));
        }
    }
    Err(DecodeError::UnknownProtocol)
}

/// A v1 frame. Client to server: `Hello`, `Auth`, `Beat`, `Bye`, `Interval`. Server to client:
/// `Challenge`, `Welcome`, `Ack`, `Advise`, `Error`. `Advise` and `Interval` belong to the
/// advice extension, negotiated by [`ADVICE_TOKEN`] in `HELLO` and `WELCOME`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Frame {
    /// `ACK <seq> <secs>`: the server received heartbeat `seq` at its wall-clock time `received`.
    Ack {
        /// The acknowledged sequence number.
        seq: Seq,
        /// The server's receive time.
        received: UnixTime,
    },
    /// `ADVISE <interval-ms>`: the server advises the client to send every `interval`. Only to
    /// a client whose `HELLO` asked for advice, and only after its `WELCOME` said so.
    Advise {
        /// The advised interval.
        interval: Duration,
    },
    /// `AUTH <64 hex>`: the client's answer to the server's challenge (see [`crate::auth`]).
    Auth {
        /// HMAC-SHA256 of the transcript, keyed by the client's secret.
        answer: Answer,
    },
    /// `BEAT <seq> <secs>`: heartbeat `seq`, sent at the client's wall-clock time `sent`.
    Beat {
        /// The sequence number.
        seq: Seq,
        /// The client's send time.
        sent: UnixTime,
    },
    /// `BYE`: the client is stopping on purpose; its silence from now on is not a failure.
    Bye,
    /// `CHALLENGE <32 hex>`: a server that authenticates clients answers `HELLO` with a fresh
    /// random nonce, which the client must answer with `AUTH`.
    Challenge {
        /// The nonce.
        nonce: Nonce,
    },
    /// `ERROR <text>`: the server is about to close the connection, and why.
    Error {
        /// Human-readable reason.
        message: String,
    },
    /// `HELLO <version> <client-id> <interval-ms> [<session-hex> [advice]]`: the first v1 frame.
    Hello {
        /// Protocol version, [`VERSION`].
        version: u32,
        /// The client's stable identity.
        client: ClientId,
        /// The interval the client promises between heartbeats.
        interval: Duration,
        /// A nonce the client picks when its process starts and keeps across reconnects; a new
        /// session under the same identity means the client restarted. 0 when omitted.
        session: u64,
        /// The client asks for interval advice ([`ADVICE_TOKEN`] after the session, which is
        /// then written even when 0).
        advice: bool,
    },
    /// `INTERVAL <interval-ms> <seq>`: from heartbeat `seq` on, the client sends every
    /// `interval`. Only from a client that negotiated advice, right before heartbeat `seq`.
    Interval {
        /// The new interval.
        interval: Duration,
        /// The first heartbeat sent under it.
        seq: Seq,
    },
    /// `WELCOME <version> [advice]`: the server accepted the `HELLO`.
    Welcome {
        /// Protocol version, [`VERSION`].
        version: u32,
        /// The server gives advice ([`ADVICE_TOKEN`]): only in answer to a `HELLO` that asked.
        advice: bool,
    },
}

impl Frame {
    /// The command word, e.g. `"BEAT"`.
    pub fn command(&self) -> &'static str {
        match self {
            Self::Ack { .. } => "ACK",
            Self::Advise { .. } => "ADVISE",
            Self::Auth { .. } => "AUTH",
            Self::Beat { .. } => "BEAT",
            Self::Bye => "BYE",
            Self::Challenge { .. } => "CHALLENGE",
            Self::Error { .. } => "ERROR",
            Self::Hello { .. } => "HELLO",
            Self::Interval { .. } => "INTERVAL",
            Self::Welcome { .. } => "WELCOME",
        }
    }

    /// Decodes one frame from the front of `src`, consuming its bytes.
    ///
    /// `Ok(None)`: no complete frame yet, nothing consumed. An error leaves `src` unspecified:
    /// the connection is to be dropped.
    pub fn decode(src: &mut BytesMut) -> Result<Option<Self>, DecodeError> {
        let Some(line) = take_line(src)? else {
            return Ok(None);
        };
        parse_v1(&line).map(Some)
    }

    /// Appends the frame's bytes, `\n` included, to `dst`.
    pub fn encode(&self, dst: &mut impl BufMut) {
        let mut s = Line::new();
        match self {
            Self::Ack { seq, received } => write!(s, "ACK {seq} {received}"),
            Self::Advise { interval } => write!(s, "ADVISE {}", interval.as_millis()),
            Self::Auth { answer } => write!(s, "AUTH {answer}"),
            Self::Beat { seq, sent } => write!(s, "BEAT {seq} {sent}"),
            Self::Bye => write!(s, "BYE"),
            Self::Challenge { nonce } => write!(s, "CHALLENGE {nonce}"),
            Self::Error { message } => {
                s.push_str("ERROR ");
                // Keep the frame decodable: no control characters, no overflow of the limit.
                for c in message
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                {
                    if s.len() + c.len_utf8() >= MAX_FRAME_LEN {
                        break;
                    }
                    s.push(c);
                }
                Ok(())
            }
            Self::Hello {
                version,
                client,
                interval,
                session,
                advice,
            } => write!(s, "HELLO {version} {client} {}", interval.as_millis()).and_then(
                |()| match (*session != 0, *advice) {
                    (_, true) => write!(s, " {session:016x} {ADVICE_TOKEN}"),
                    (true, false) => write!(s, " {session:016x}"),
                    (false, false) => Ok(()),
                },
            ),
            Self::Interval { interval, seq } => {
                write!(s, "INTERVAL {} {seq}", interval.as_millis())
            }
            Self::Welcome { version, advice } => write!(s, "WELCOME {version}").and_then(|()| {
                if *advice {
                    write!(s, " {ADVICE_TOKEN}")
                } else {
                    Ok(())
                }
            }),
        }
        .expect("every v1 frame fits MAX_FRAME_LEN");
        s.push('\n');
        dst.put_slice(s.as_bytes());
    }

    /// The frame's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(48);
        self.encode(&mut v);
        v
    }
}

/// A frame being written, on the stack: encoding an ack or a heartbeat allocates nothing.
struct Line {
    buf: [u8; MAX_FRAME_LEN],
    len: usize,
}

impl Line {
    fn new() -> Self {
        Self {
            buf: [0; MAX_FRAME_LEN],
            len: 0,
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn push(&mut self, c: char) {
        let _ = self.write_char(c);
    }

    fn push_str(&mut self, s: &str) {
        let _ = self.write_str(s);
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl std::fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let dst = self.buf.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// One heartbeat in the seed's legacy format:
/// `Sequence #<n>: Sending heartbeat at <unix seconds, 4 decimals>. ` with nothing between.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LegacyBeat {
    /// The sequence number.
    pub seq: Seq,
    /// The client's send time.
    pub sent: UnixTime,
}

impl LegacyBeat {
    /// Decodes one legacy heartbeat from the front of `src`, consuming its bytes.
    ///
    /// A message ends at the first `". "` (the decimal point inside the stamp is always followed
    /// by a digit). `Ok(None)` means more bytes are needed.
    pub fn decode(src: &mut BytesMut) -> Result<Option<Self>, DecodeError> {
        let window = &src[..src.len().min(MAX_FRAME_LEN)];
        let Some(end) = window.windows(2).position(|w| w == b". ") else {
            // The bytes are judged before the length, and only within the longest frame, so
            // the same bytes give the same error however they were split.
            check_legacy_bytes(window)?;
            if src.len() >= MAX_FRAME_LEN {
                return Err(DecodeError::TooLong {
                    limit: MAX_FRAME_LEN,
                });
            }
            return Ok(None);
        };
        let msg = src.split_to(end + 2);
        parse_legacy(&msg[..end]).map(Some)
    }

    /// Like [`decode`](Self::decode), at end of stream: a last message whose trailing space was
    /// cut (`... at 1752356183.5769.`) is still a heartbeat. Anything else left over is an error.
    pub fn decode_eof(src: &mut BytesMut) -> Result<Option<Self>, DecodeError> {
        if let Some(beat) = Self::decode(src)? {
            return Ok(Some(beat));
        }
        if src.is_empty() {
            return Ok(None);
        }
        let rest = src.split();
        match rest.strip_suffix(b".") {
            Some(body) => parse_legacy(body).map(Some),
            None => Err(DecodeError::Legacy("stream ended inside a message")),
        }
    }

    /// Appends the message exactly as the seed's `client.py` writes it (4 decimals, trailing
    /// space).
    pub fn encode(&self, dst: &mut impl BufMut) {
        // On the stack, as `Frame::encode`: a legacy beat allocates nothing either.
        let mut s = Line::new();
        write!(
            s,
            "Sequence #{}: Sending heartbeat at {}. ",
            self.seq,
            self.sent.display_secs(4)
        )
        .expect("a legacy heartbeat (at most 79 bytes) fits MAX_FRAME_LEN");
        dst.put_slice(s.as_bytes());
    }

    /// The message's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(56);
        self.encode(&mut v);
        v
    }
}

/// Rejects a legacy message, or the start of one, whose bytes can never be valid: a prefix
/// other than `Sequence #`, then the first control or non-ASCII byte. Partial messages are
/// checked early, so a hostile peer cannot park up to `MAX_FRAME_LEN` bytes of garbage per
/// connection for free; whole ones the same way, so the error does not depend on where the
/// stream was split.
fn check_legacy_bytes(bytes: &[u8]) -> Result<(), DecodeError> {
    let n = bytes.len().min(LEGACY_PREFIX.len());
    if bytes[..n] != LEGACY_PREFIX[..n] {
        return Err(DecodeError::Legacy("expected `Sequence #`"));
    }
    if let Some(&b) = bytes.iter().find(|b| b.is_ascii_control() || !b.is_ascii()) {
        return Err(if b.is_ascii() {
            DecodeError::ControlChar
        } else {
            DecodeError::NotUtf8
        });
    }
    Ok(())
}

fn parse_legacy(body: &[u8]) -> Result<LegacyBeat, DecodeError> {
    check_legacy_bytes(body)?;
    let body = std::str::from_utf8(body).map_err(|_| DecodeError::NotUtf8)?;
    let rest = body
        .strip_prefix("Sequence #")
        .ok_or(DecodeError::Legacy("expected `Sequence #`"))?;
    let (seq, stamp) = rest
        .split_once(": Sending heartbeat at ")
        .ok_or(DecodeError::Legacy("expected `: Sending heartbeat at `"))?;
    Ok(LegacyBeat {
        seq: parse_seq(seq)?,
        sent: parse_unix(stamp)?,
    })
}

/// Takes one `\n`-terminated line (without `\n` and an optional `\r`) from the front of `src`.
fn take_line(src: &mut BytesMut) -> Result<Option<BytesMut>, DecodeError> {
    let window = &src[..src.len().min(MAX_FRAME_LEN)];
    let Some(nl) = window.iter().position(|&b| b == b'\n') else {
        if src.len() >= MAX_FRAME_LEN {
            return Err(DecodeError::TooLong {
                limit: MAX_FRAME_LEN,
            });
        }
        return Ok(None);
    };
    let mut line = src.split_to(nl + 1);
    line.truncate(nl);
    if line.last() == Some(&b'\r') {
        line.truncate(nl - 1);
    }
    Ok(Some(line))
}

fn parse_v1(line: &[u8]) -> Result<Frame, DecodeError> {
    let line = std::str::from_utf8(line).map_err(|_| DecodeError::NotUtf8)?;
    if line.chars().any(char::is_control) {
        return Err(DecodeError::ControlChar);
    }
    let (command, rest) = line.split_once(' ').unwrap_or((line, ""));
    // At most 5 fields are ever valid; a sixth only marks "too many" (no allocation per line).
    let mut slots = [""; 6];
    let mut n = 0;
    for (slot, field) in slots.iter_mut().zip(rest.split_ascii_whitespace()) {
        *slot = field;
        n += 1;
    }
    let fields = &slots[..n];
    match command {
        "ACK" => seq_and_secs(fields, "ACK", "ACK <seq> <secs>")
            .map(|(seq, received)| Frame::Ack { seq, received }),
        "ADVISE" => match fields[..] {
            [i] => Ok(Frame::Advise {
                interval: parse_interval(i)?,
            }),
            _ => Err(DecodeError::Arity {
                command: "ADVISE",
                expected: "ADVISE <interval-ms>",
            }),
        },
        "AUTH" => match fields[..] {
            [a] => Ok(Frame::Auth {
                answer: Answer(parse_hex(a, "answer")?),
            }),
            _ => Err(DecodeError::Arity {
                command: "AUTH",
                expected: "AUTH <64 hex digits>",
            }),
        },
        "BEAT" => seq_and_secs(fields, "BEAT", "BEAT <seq> <secs>")
            .map(|(seq, sent)| Frame::Beat { seq, sent }),
        "BYE" if fields.is_empty() => Ok(Frame::Bye),
        "BYE" => Err(DecodeError::Arity {
            command: "BYE",
            expected: "no arguments",
        }),
        "CHALLENGE" => match fields[..] {
            [n] => Ok(Frame::Challenge {
                nonce: Nonce(parse_hex(n, "nonce")?),
            }),
            _ => Err(DecodeError::Arity {
                command: "CHALLENGE",
                expected: "CHALLENGE <32 hex digits>",
            }),
        },
        "ERROR" => Ok(Frame::Error {
            message: rest.to_owned(),
        }),
        "HELLO" => {
            let (version, client, interval, session, advice) = match fields[..] {
                [v, c, i] => (v, c, i, None, false),
                [v, c, i, s] => (v, c, i, Some(s), false),
                [v, c, i, s, ADVICE_TOKEN] => (v, c, i, Some(s), true),
                _ => {
                    return Err(DecodeError::Arity {
                        command: "HELLO",
                        expected: "HELLO <version> <client-id> <interval-ms> [<session-hex> [advice]]",
                    });
                }
            };
            Ok(Frame::Hello {
                version: parse_version(version)?,
                client: ClientId::new(client).map_err(DecodeError::ClientId)?,
                interval: parse_interval(interval)?,
                session: session.map(parse_session).transpose()?.unwrap_or(0),
                advice,
            })
        }
        "INTERVAL" => match fields[..] {
            [i, seq] => Ok(Frame::Interval {
                interval: parse_interval(i)?,
                seq: parse_seq(seq)?,
            }),
            _ => Err(DecodeError::Arity {
                command: "INTERVAL",
                expected: "INTERVAL <interval-ms> <seq>",
            }),
        },
        "WELCOME" => match fields[..] {
            [v] => Ok(Frame::Welcome {
                version: parse_version(v)?,
                advice: false,
            }),
            [v, ADVICE_TOKEN] => Ok(Frame::Welcome {
                version: parse_version(v)?,
                advice: true,
            }),
            _ => Err(DecodeError::Arity {
                command: "WELCOME",
                expected: "WELCOME <version> [advice]",
            }),
        },
        other => Err(DecodeError::UnknownCommand(truncated(other))),
    }
}

/// The fields `<seq> <secs>` that `ACK` and `BEAT` share.
fn seq_and_secs(
    fields: &[&str],
    command: &'static str,
    expected: &'static str,
) -> Result<(Seq, UnixTime), DecodeError> {
    match *fields {
        [seq, secs] => Ok((parse_seq(seq)?, parse_unix(secs)?)),
        _ => Err(DecodeError::Arity { command, expected }),
    }
}

fn truncated(s: &str) -> String {
    s.chars().take(32).collect()
}

fn parse_u64_digits(s: &str, max_digits: usize) -> Option<u64> {
    if s.is_empty() || s.len() > max_digits || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_seq(s: &str) -> Result<Seq, DecodeError> {
    match parse_u64_digits(s, 20) {
        Some(n) if (1..=MAX_SEQ).contains(&n) => Ok(Seq(n)),
        _ => Err(DecodeError::Seq(truncated(s))),
    }
}

fn parse_version(s: &str) -> Result<u32, DecodeError> {
    match parse_u64_digits(s, 9) {
        Some(v) if v == u64::from(VERSION) => Ok(VERSION),
        _ => Err(DecodeError::UnsupportedVersion(truncated(s))),
    }
}

fn parse_interval(s: &str) -> Result<Duration, DecodeError> {
    match parse_u64_digits(s, 9) {
        Some(ms) if (1..=MAX_INTERVAL_MS).contains(&ms) => Ok(Duration::from_millis(ms)),
        _ => Err(DecodeError::Interval(truncated(s))),
    }
}

/// Exactly `2 * N` hex digits (either case) into `N` bytes.
fn parse_hex<const N: usize>(s: &str, what: &'static str) -> Result<[u8; N], DecodeError> {
    let err = || DecodeError::Hex {
        what,
        digits: 2 * N,
        got: truncated(s),
    };
    if s.len() != 2 * N {
        return Err(err());
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(s.as_bytes().chunks_exact(2)) {
        let pair = std::str::from_utf8(pair).map_err(|_| err())?;
        if !pair.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(err());
        }
        *byte = u8::from_str_radix(pair, 16).map_err(|_| err())?;
    }
    Ok(out)
}

// The lengths the wire grammar states (`PROTOCOL.md`) are the lengths the types hold.
const _: () = assert!(NONCE_LEN == 16 && ANSWER_LEN == 32);

fn parse_session(s: &str) -> Result<u64, DecodeError> {
    if s.is_empty() || s.len() > 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(DecodeError::Session(truncated(s)));
    }
    u64::from_str_radix(s, 16).map_err(|_| DecodeError::Session(truncated(s)))
}

/// Parses `SECONDS[.FRACTION]` (at most 9 fractional digits) into exact nanoseconds. No floats:
/// `inf`, `NaN`, exponents and signs are rejected, and overflow is an error.
pub fn parse_unix(s: &str) -> Result<UnixTime, DecodeError> {
    let err = || DecodeError::Timestamp(truncated(s));
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs = parse_u64_digits(secs, 20).ok_or_else(err)?;
    let frac_nanos = if frac.is_empty() {
        if s.ends_with('.') {
            return Err(err());
        }
        0
    } else {
        let digits = parse_u64_digits(frac, 9).ok_or_else(err)?;
        digits * 10u64.pow(9 - frac.len() as u32)
    };
    secs.checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(frac_nanos))
        .map(UnixTime::from_nanos)
        .ok_or_else(err)
}

/// One unit of input on a server connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inbound {
    /// A v1 frame.
    Frame(Frame),
    /// A legacy heartbeat.
    Legacy(LegacyBeat),
}

/// Incremental decoder for one server connection: detects the protocol from the first bytes, then
/// decodes frames of that protocol. Its buffer never holds more than [`MAX_FRAME_LEN`] bytes of
/// an incomplete frame.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    buf: BytesMut,
    protocol: Option<Protocol>,
}

impl StreamDecoder {
    /// A decoder that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The protocol, once the first bytes told it.
    pub fn protocol(&self) -> Option<Protocol> {
        self.protocol
    }

    /// Appends received bytes. Call [`decode_next`](Self::decode_next) until it returns `Ok(None)` after each.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held that are not yet a whole frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete unit, `Ok(None)` if more bytes are needed.
    pub fn decode_next(&mut self) -> Result<Option<Inbound>, DecodeError> {
        let protocol = match self.protocol {
            Some(p) => p,
            None => match detect(&self.buf)? {
                Some(p) => *self.protocol.insert(p),
                None => return Ok(None),
            },
        };
        let unit = match protocol {
            Protocol::V1 => Frame::decode(&mut self.buf)?.map(Inbound::Frame),
            Protocol::Legacy => LegacyBeat::decode(&mut self.buf)?.map(Inbound::Legacy),
        };
        if unit.is_none() && self.buf.is_empty() && self.buf.capacity() > 0 {
            // Nothing left over, the usual case between reads: an idle connection holds no
            // buffer (10,000 idle connections, 1.3 MB).
            self.buf = BytesMut::new();
        }
        Ok(unit)
    }

    /// The last unit at end of stream. `Ok(None)` means the stream ended cleanly between frames;
    /// a truncated frame is an error.
    pub fn finish(&mut self) -> Result<Option<Inbound>, DecodeError> {
        if let Some(unit) = self.decode_next()? {
            return Ok(Some(unit));
        }
        match self.protocol {
            _ if self.buf.is_empty() => Ok(None),
            Some(Protocol::Legacy) => {
                Ok(LegacyBeat::decode_eof(&mut self.buf)?.map(Inbound::Legacy))
            }
            Some(Protocol::V1) => {
                // A last line without its newline: accept it, as `nc` users often send one.
                let line = self.buf.split();
                parse_v1(line.chunk()).map(|f| Some(Inbound::Frame(f)))
            }
            None => Err(DecodeError::UnknownProtocol),
        }
    }
}

/// Incremental decoder for the client side of a v1 connection (`WELCOME`, `ACK`, `ERROR`).
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: BytesMut,
}

impl FrameDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    pub fn decode_next(&mut self) -> Result<Option<Frame>, DecodeError> {
        Frame::decode(&mut self.buf)
    }

    /// Forgets buffered bytes (on reconnect).
    pub fn clear(&mut self) {
        self.buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(nanos: u64) -> UnixTime {
        UnixTime::from_nanos(nanos)
    }

    fn decode_all(bytes: &[u8]) -> Result<Vec<Inbound>, DecodeError> {
        let mut d = StreamDecoder::new();
        d.push(bytes);
        let mut out = Vec::new();
        while let Some(u) = d.decode_next()? {
            out.push(u);
        }
        out.extend(d.finish()?);
        Ok(out)
    }

    #[test]
    fn seed_readme_lines_decode_exactly() {
        // The seed README's example client output, as the server received it.
        let wire = b"Sequence #1: Sending heartbeat at 1752356183.5769. \
Sequence #2: Sending heartbeat at 1752356183.6781. \
Sequence #3: Sending heartbeat at 1752356183.7790. \
Sequence #4: Sending heartbeat at 1752356183.8798. \
Sequence #5: Sending heartbeat at 1752356183.9805. ";
        let got = decode_all(wire).unwrap();
        let want: Vec<_> = [
            (1, 1_752_356_183_576_900_000),
            (2, 1_752_356_183_678_100_000),
            (3, 1_752_356_183_779_000_000),
            (4, 1_752_356_183_879_800_000),
            (5, 1_752_356_183_980_500_000),
        ]
        .into_iter()
        .map(|(s, n)| {
            Inbound::Legacy(LegacyBeat {
                seq: Seq(s),
                sent: t(n),
            })
        })
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn legacy_encode_is_byte_for_byte_the_seed() {
        let b = LegacyBeat {
            seq: Seq(1),
            sent: t(1_752_356_183_576_912_345),
        };
        assert_eq!(
            b.to_bytes(),
            b"Sequence #1: Sending heartbeat at 1752356183.5769. "
        );
        // The longest legacy beat fits the stack buffer `encode` writes into.
        let longest = LegacyBeat {
            seq: Seq(u64::MAX),
            sent: t(u64::MAX),
        };
        assert_eq!(
            longest.to_bytes(),
            b"Sequence #18446744073709551615: Sending heartbeat at 18446744073.7095. "
        );
    }

    #[test]
    fn v1_frames_round_trip_with_exact_bytes() {
        let client = ClientId::new("web-01").unwrap();
        let cases: Vec<(Frame, &[u8])> = vec![
            (
                Frame::Hello {
                    version: 1,
                    client: client.clone(),
                    interval: Duration::from_millis(1000),
                    session: 0x00ab_cdef,
                    advice: false,
                },
                b"HELLO 1 web-01 1000 0000000000abcdef\n",
            ),
            (
                Frame::Hello {
                    version: 1,
                    client: client.clone(),
                    interval: Duration::from_millis(250),
                    session: 0,
                    advice: false,
                },
                b"HELLO 1 web-01 250\n",
            ),
            (
                Frame::Hello {
                    version: 1,
                    client: client.clone(),
                    interval: Duration::from_millis(1000),
                    session: 0x5f3a_9c0e_21d4_b7a8,
                    advice: true,
                },
                b"HELLO 1 web-01 1000 5f3a9c0e21d4b7a8 advice\n",
            ),
            (
                // Asking for advice writes the session even when it is 0.
                Frame::Hello {
                    version: 1,
                    client,
                    interval: Duration::from_millis(1000),
                    session: 0,
                    advice: true,
                },
                b"HELLO 1 web-01 1000 0000000000000000 advice\n",
            ),
            (
                Frame::Welcome {
                    version: 1,
                    advice: false,
                },
                b"WELCOME 1\n",
            ),
            (
                Frame::Welcome {
                    version: 1,
                    advice: true,
                },
                b"WELCOME 1 advice\n",
            ),
            (
                Frame::Advise {
                    interval: Duration::from_millis(200),
                },
                b"ADVISE 200\n",
            ),
            (
                Frame::Interval {
                    interval: Duration::from_millis(200),
                    seq: Seq(42),
                },
                b"INTERVAL 200 42\n",
            ),
            (
                Frame::Challenge {
                    nonce: Nonce([0x0f; NONCE_LEN]),
                },
                b"CHALLENGE 0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f\n",
            ),
            (
                Frame::Auth {
                    answer: Answer([0xa0; ANSWER_LEN]),
                },
                b"AUTH a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0\n",
            ),
            (
                Frame::Beat {
                    seq: Seq(7),
                    sent: t(1_752_356_183_576_900_000),
                },
                b"BEAT 7 1752356183.576900\n",
            ),
            (
                Frame::Ack {
                    seq: Seq(7),
                    received: t(1_752_356_183_577_800_000),
                },
                b"ACK 7 1752356183.577800\n",
            ),
            (Frame::Bye, b"BYE\n"),
            (
                Frame::Error {
                    message: "bad\nthing".into(),
                },
                b"ERROR bad thing\n",
            ),
        ];
        for (frame, bytes) in cases {
            assert_eq!(frame.to_bytes(), bytes, "{frame:?}");
            let mut buf = BytesMut::from(bytes);
            let back = Frame::decode(&mut buf).unwrap().unwrap();
            if let Frame::Error { .. } = frame {
                assert_eq!(
                    back,
                    Frame::Error {
                        message: "bad thing".into()
                    }
                );
            } else {
                assert_eq!(back, frame);
            }
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn a_welcome_carries_the_advice_token_or_nothing() {
        for (line, want) in [
            (&b"WELCOME 1 advice\n"[..], Ok(true)),
            (b"WELCOME 1\n", Ok(false)),
            (b"WELCOME 1 Advice\n", Err(())),
            (b"WELCOME 1 advice advice\n", Err(())),
        ] {
            let mut buf = BytesMut::from(line);
            let got = match Frame::decode(&mut buf) {
                Ok(Some(Frame::Welcome { advice, .. })) => Ok(advice),
                _ => Err(()),
            };
            assert_eq!(got, want, "{:?}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn crlf_and_missing_final_newline_are_accepted() {
        let got = decode_all(b"HELLO 1 nc 1000\r\nBEAT 1 10.5\r\nBEAT 2 11").unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(
            got[2],
            Inbound::Frame(Frame::Beat {
                seq: Seq(2),
                sent: t(11_000_000_000)
            })
        );
    }

    #[test]
    fn legacy_final_message_without_trailing_space() {
        let got = decode_all(b"Sequence #9: Sending heartbeat at 100.0001.").unwrap();
        assert_eq!(
            got,
            vec![Inbound::Legacy(LegacyBeat {
                seq: Seq(9),
                sent: t(100_000_100_000)
            })]
        );
    }

    #[test]
    fn partial_input_needs_more() {
        let mut d = StreamDecoder::new();
        for chunk in [&b"Seq"[..], b"uence #1: Sending heartbeat at 5.0", b"000"] {
            d.push(chunk);
            assert_eq!(d.decode_next(), Ok(None));
        }
        d.push(b". ");
        assert!(matches!(d.decode_next(), Ok(Some(Inbound::Legacy(_)))));
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn hostile_input_gives_typed_errors() {
        let cases: Vec<(&[u8], DecodeError)> = vec![
            (b"GET / HTTP/1.1\r\n", DecodeError::UnknownProtocol),
            (b"\xff\xfe", DecodeError::UnknownProtocol),
            (b"\x16\x03\x01\x02\x00", DecodeError::TlsHandshake),
            (
                b"HELLO 2 a 1000\n",
                DecodeError::UnsupportedVersion("2".into()),
            ),
            (b"HELLO 1 a 0\n", DecodeError::Interval("0".into())),
            (
                b"HELLO 1 a b c d e\n",
                DecodeError::Arity {
                    command: "HELLO",
                    expected: "HELLO <version> <client-id> <interval-ms> [<session-hex> [advice]]",
                },
            ),
            // The advice token is a word, exactly, and only after a session.
            (
                b"HELLO 1 a 10 5f advise\n",
                DecodeError::Arity {
                    command: "HELLO",
                    expected: "HELLO <version> <client-id> <interval-ms> [<session-hex> [advice]]",
                },
            ),
            (
                b"HELLO 1 a 10 advice\n",
                DecodeError::Session("advice".into()),
            ),
            (
                b"HELLO 1 a 10 5f advice more\n",
                DecodeError::Arity {
                    command: "HELLO",
                    expected: "HELLO <version> <client-id> <interval-ms> [<session-hex> [advice]]",
                },
            ),
            (
                b"HELLO 1 a 10\nINTERVAL 0 2\n",
                DecodeError::Interval("0".into()),
            ),
            (
                b"HELLO 1 a 10\nINTERVAL 86400001 2\n",
                DecodeError::Interval("86400001".into()),
            ),
            (
                b"HELLO 1 a 10\nINTERVAL 100 0\n",
                DecodeError::Seq("0".into()),
            ),
            (
                b"HELLO 1 a 10\nINTERVAL 100\n",
                DecodeError::Arity {
                    command: "INTERVAL",
                    expected: "INTERVAL <interval-ms> <seq>",
                },
            ),
            (
                b"HELLO 1 a 10\nINTERVAL 100 2 3\n",
                DecodeError::Arity {
                    command: "INTERVAL",
                    expected: "INTERVAL <interval-ms> <seq>",
                },
            ),
            (
                b"HELLO 1 a 10\nADVISE -5\n",
                DecodeError::Interval("-5".into()),
            ),
            (
                b"HELLO 1 a 10\nADVISE\n",
                DecodeError::Arity {
                    command: "ADVISE",
                    expected: "ADVISE <interval-ms>",
                },
            ),
            (b"HELLO 1 a 10\nBEAT 1 1\xc3\x28\n", DecodeError::NotUtf8),
            (b"HELLO 1 a 10\nBEAT 1 1\x07\n", DecodeError::ControlChar),
            (
                b"HELLO 1 a 10\nBEAT 1\n",
                DecodeError::Arity {
                    command: "BEAT",
                    expected: "BEAT <seq> <secs>",
                },
            ),
            (
                b"HELLO 1 a 10\nPING\n",
                DecodeError::UnknownCommand("PING".into()),
            ),
            (
                b"HELLO 1 a 10\nAUTH abc\n",
                DecodeError::Hex {
                    what: "answer",
                    digits: 64,
                    got: "abc".into(),
                },
            ),
            (
                b"HELLO 1 a 10\nAUTH 0x00000000000000000000000000000000000000000000000000000000000000\n",
                DecodeError::Hex {
                    what: "answer",
                    digits: 64,
                    got: "0x000000000000000000000000000000".into(),
                },
            ),
            (
                b"HELLO 1 a 10\nAUTH\n",
                DecodeError::Arity {
                    command: "AUTH",
                    expected: "AUTH <64 hex digits>",
                },
            ),
            (
                b"Sequence #x: Sending heartbeat at 1.0. ",
                DecodeError::Seq("x".into()),
            ),
            (
                b"Sequence #1: Sending heartbeat at nan. ",
                DecodeError::Timestamp("nan".into()),
            ),
            (
                b"Sequence #1 Sending heartbeat at 1.0. ",
                DecodeError::Legacy("expected `: Sending heartbeat at `"),
            ),
            (b"Sequence #1: \x00", DecodeError::ControlChar),
            (b"Sequence #1: \xff", DecodeError::NotUtf8),
        ];
        for (input, want) in cases {
            assert_eq!(
                decode_all(input),
                Err(want),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        // A BEAT after a valid HELLO with a bad sequence number or timestamp.
        let seqs =
            ["0", "99999999999999999999"].map(|seq| (seq, "1", DecodeError::Seq(seq.into())));
        let stamps = ["inf", "NaN", "-1.0", "1e9", "18446744074.0", "1.0000000001"]
            .map(|sent| ("1", sent, DecodeError::Timestamp(sent.into())));
        for (seq, sent, want) in seqs.into_iter().chain(stamps) {
            let input = format!("HELLO 1 a 10\nBEAT {seq} {sent}\n");
            assert_eq!(decode_all(input.as_bytes()), Err(want), "{input:?}");
        }
    }

    #[test]
    fn oversized_frames_are_rejected_without_newline() {
        for (prefix, filler) in [(&b"HELLO "[..], b'a'), (b"Sequence #", b'1')] {
            let mut d = StreamDecoder::new();
            d.push(prefix);
            d.push(&[filler; MAX_FRAME_LEN]);
            assert_eq!(
                d.decode_next(),
                Err(DecodeError::TooLong {
                    limit: MAX_FRAME_LEN
                }),
                "{:?}",
                String::from_utf8_lossy(prefix)
            );
        }
    }

    /// Found by the legacy_decoder fuzz target: a long run of bytes with a bad byte early
    /// gave "frame longer than 256 bytes" when it arrived whole but "not valid UTF-8" when the
    /// bad byte came in a first, shorter read. The error must not depend on the split.
    #[test]
    fn a_legacy_error_does_not_depend_on_where_the_stream_was_split() {
        let mut bytes = b"Sequence #1\xff".to_vec();
        bytes.extend([b'2'; 300]);
        let whole = decode_all(&bytes);
        let mut d = StreamDecoder::new();
        d.push(&bytes[..12]);
        let first = d.decode_next();
        assert_eq!(whole, Err(DecodeError::NotUtf8));
        assert_eq!(first, Err(DecodeError::NotUtf8));
    }

    #[test]
    fn detection_waits_for_a_whole_prefix() {
        assert_eq!(detect(b""), Ok(None));
        assert_eq!(detect(b"Seq"), Ok(None));
        assert_eq!(detect(b"HEL"), Ok(None));
        assert_eq!(detect(b"Sequence #"), Ok(Some(Protocol::Legacy)));
        assert_eq!(detect(b"HELLO 1"), Ok(Some(Protocol::V1)));
        assert_eq!(detect(b"HELP"), Err(DecodeError::UnknownProtocol));
    }

    #[test]
    fn timestamps_parse_exactly() {
        assert_eq!(parse_unix("0"), Ok(t(0)));
        assert_eq!(parse_unix("1.5"), Ok(t(1_500_000_000)));
        assert_eq!(parse_unix("1.000000001"), Ok(t(1_000_000_001)));
        assert_eq!(parse_unix("18446744073.709551615"), Ok(t(u64::MAX)));
        assert!(parse_unix("18446744073.709551616").is_err());
        assert!(parse_unix("1.").is_err());
        assert!(parse_unix(".5").is_err());
        assert!(parse_unix("").is_err());
    }
}
