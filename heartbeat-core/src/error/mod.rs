//! Error types. Faults of the peer are [`DecodeError`]s carried in a [`DisconnectReason`]; they
//! never make a `handle_*` call fail. Mistakes in configuration are [`ConfigError`]s.

use std::time::Duration;

use thiserror::Error;

use crate::ids::Seq;
use crate::time::UnixTime;

pub(crate) mod config;
pub use config::ConfigError;

/// Bytes from the network that are not a valid frame. The connection they came on is dropped.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// A frame was longer than the protocol allows.
    #[error("frame longer than {limit} bytes")]
    TooLong {
        /// The limit, in bytes.
        limit: usize,
    },
    /// A frame was not valid UTF-8.
    #[error("frame is not valid UTF-8")]
    NotUtf8,
    /// A frame held a control character or a byte the text protocol never uses.
    #[error("frame contains a control character")]
    ControlChar,
    /// The first bytes of a connection were neither `HELLO ` nor `Sequence #`.
    #[error("unrecognised protocol: expected `HELLO` (v1) or `Sequence #` (legacy)")]
    UnknownProtocol,
    /// The first bytes of a connection were a TLS handshake record: a client started with
    /// `--tls` connected to a server without TLS.
    #[error("a TLS handshake, and this server does not speak TLS")]
    TlsHandshake,
    /// A v1 frame started with an unknown command word.
    #[error("unknown command {0:?}")]
    UnknownCommand(String),
    /// A frame had the wrong number of fields.
    #[error("{command}: expected {expected}")]
    Arity {
        /// The command.
        command: &'static str,
        /// A description of the expected fields.
        expected: &'static str,
    },
    /// A `HELLO` named a protocol version this side does not speak.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(String),
    /// A sequence number was not a decimal integer in `1..=2^63`.
    #[error("invalid sequence number {0:?}")]
    Seq(String),
    /// A timestamp was not `SECONDS[.FRACTION]` with at most 9 fractional digits, or overflowed.
    #[error("invalid timestamp {0:?}")]
    Timestamp(String),
    /// An interval was not a decimal number of milliseconds in range.
    #[error("invalid interval {0:?}")]
    Interval(String),
    /// A session nonce was not 1 to 16 hexadecimal digits.
    #[error("invalid session {0:?}")]
    Session(String),
    /// A challenge nonce or an answer was not exactly its number of hexadecimal digits.
    #[error("invalid {what}: expected {digits} hex digits, got {got:?}")]
    Hex {
        /// What it was (`nonce`, `answer`).
        what: &'static str,
        /// The hex digits it must have.
        digits: usize,
        /// What came (cut to 32 characters).
        got: String,
    },
    /// A client identity broke the identity rules.
    #[error("invalid client id: {0}")]
    ClientId(ConfigError),
    /// A legacy message did not match `Sequence #<n>: Sending heartbeat at <secs>. `.
    #[error("malformed legacy heartbeat: {0}")]
    Legacy(&'static str),
    /// A frame that is valid but not allowed in the connection's current state.
    #[error("unexpected {got} {when}")]
    Unexpected {
        /// The frame's command word.
        got: &'static str,
        /// When it came.
        when: &'static str,
    },
    /// Client: an `ACK` for a heartbeat that was never sent on the connection (a sequence
    /// number beyond the last one sent, or before the first one sent on it).
    #[error("ACK for heartbeat {0}, which this client never sent on the connection")]
    UnsentAck(Seq),
    /// Server: a valid frame whose numbers the server does not accept (see [`Violation`]).
    #[error("{0}")]
    Violation(#[from] Violation),
}

/// Server: a well-formed frame that breaks one of the server's limits or makes a claim that
/// time does not allow. Its connection is dropped (a v1 peer is told why with `ERROR`) and
/// nothing it claimed is counted. See `PROTOCOL.md`, "Limits and plausibility".
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Violation {
    /// `HELLO` declared an interval below the server's minimum (`--min-interval`).
    #[error("interval {}ms is below the server's minimum of {}ms", .got.as_millis(), .min.as_millis())]
    IntervalBelowMinimum {
        /// The declared interval.
        got: Duration,
        /// The server's minimum.
        min: Duration,
    },
    /// A heartbeat's sequence number is further ahead than the time since the client's earlier
    /// heartbeats allows at its interval (or, for its first, than the time since 1970).
    #[error("sequence number {seq} is ahead of the schedule (at most {max} by now)")]
    SeqAhead {
        /// The sequence number received.
        seq: Seq,
        /// The highest the server would have accepted.
        max: Seq,
    },
    /// An `INTERVAL` names a heartbeat already received (or one no later than an earlier
    /// `INTERVAL` of the connection): an interval changes only from a heartbeat still to come.
    #[error("INTERVAL from heartbeat {seq}, which is not after heartbeat {after}")]
    IntervalSeq {
        /// The sequence number the `INTERVAL` named.
        seq: Seq,
        /// The highest heartbeat received, or the last `INTERVAL`'s, whichever is later.
        after: Seq,
    },
    /// A heartbeat's timestamp is more than a day from the server's clock: not a clock that is
    /// off, but no clock at all (an unset clock, a stamp of 0, a year far away).
    #[error("timestamp {sent} is implausible: {}s from the server's clock (at most {}s)", .offset_secs, MAX_STAMP_OFFSET.as_secs())]
    Timestamp {
        /// The stamp received.
        sent: UnixTime,
        /// How far ahead of the server's clock it is, in whole seconds (negative: behind).
        offset_secs: i64,
    },
    /// More heartbeats came on one connection than its interval allows in the time it has been
    /// open.
    #[error("{beats} heartbeats in {}ms is faster than one per {}ms", .elapsed.as_millis(), .interval.as_millis())]
    TooFast {
        /// Heartbeats received on the connection, this one included.
        beats: u64,
        /// Time since the connection was accepted.
        elapsed: Duration,
        /// The interval they were measured against.
        interval: Duration,
    },
}

/// How far a heartbeat's timestamp may be from the server's clock before it is no time at all
/// ([`Violation::Timestamp`]). Closer than this but further than the configured maximum clock
/// skew, it is reported as skew.
pub const MAX_STAMP_OFFSET: Duration = Duration::from_secs(86_400);

/// Why a connection ended.
///
/// One type for both ends, so a driver handles every close alike; each variant says which side
/// produces it. Faults of the peer are [`Protocol`](Self::Protocol) (or, seen by a client,
/// [`ServerError`](Self::ServerError)); timeouts are their own variants, never protocol errors.
/// Failed authentication and the identity rule have their own variants too, so an operator can
/// tell an impostor from a broken client.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// Client: the server stopped acknowledging.
    #[error("no ack for {0:?}")]
    AckTimeout(Duration),
    /// Server, with authentication on: the connection claimed `client` in its `HELLO` but did
    /// not prove it holds that id's secret (wrong answer, unknown id, or something else than
    /// `AUTH` after the challenge). It never became that client: nothing in the client's
    /// record changed. The peer was told only `ERROR authentication failed`.
    #[error("authentication failed for {client}: {why}")]
    AuthFailed {
        /// The id the connection claimed.
        client: crate::ClientId,
        /// What was wrong.
        why: AuthFailure,
    },
    /// Client: the server sent a challenge, and this client has no key to answer it with.
    #[error("the server requires authentication and this client has no key")]
    AuthRequired,
    /// Server, with authentication on: a `HELLO` claiming `client` was challenged but no `AUTH`
    /// came within the hello timeout (counted from the connection's accept). A timeout, not a
    /// protocol error; nothing in the client's record changed.
    #[error("no answer to the challenge for {client} within {after:?}")]
    AuthTimeout {
        /// The id the connection claimed.
        client: crate::ClientId,
        /// The hello timeout.
        after: Duration,
    },
    /// Either side: the remote side closed the stream (EOF), or the driver saw an I/O error.
    #[error("closed by peer")]
    ClosedByPeer,
    /// Client: it sent all the heartbeats it was asked to send.
    #[error("finished")]
    Finished,
    /// Server: the client said `BYE` before closing, a clean goodbye, not a failure.
    #[error("client said goodbye")]
    Goodbye,
    /// Server: the connection did not identify itself (no `HELLO`, no legacy heartbeat) within
    /// the hello timeout, and sent nothing at all.
    #[error("no identification within {0:?}")]
    HelloTimeout(Duration),
    /// Server, without authentication: a `HELLO` claimed `client`, which is live on `holder`
    /// under another session. The identity rule keeps the live connection; the newer one is
    /// told so (`ERROR`, naming `--id`) and changes nothing in the client's record.
    #[error("client id {client} is in use by {holder} with another session")]
    IdInUse {
        /// The id claimed.
        client: crate::ClientId,
        /// The live connection that holds it.
        holder: crate::ConnId,
    },
    /// Server: nothing came from an identified client for too long; the stream is presumed dead
    /// (half-open).
    #[error("no data for {0:?}")]
    IdleTimeout(Duration),
    /// Server: the connection sent bytes within the hello timeout, but not a complete `HELLO`
    /// or legacy heartbeat.
    #[error("incomplete identification after {0:?}")]
    IncompleteHello(Duration),
    /// Server, with authentication on and legacy connections not allowed: a connection spoke
    /// the legacy format, which cannot authenticate. Nothing is written to it (legacy clients
    /// never read).
    #[error("legacy connection refused: authentication is required")]
    LegacyRefused,
    /// Either side: the local application closed it.
    #[error("closed locally")]
    Local,
    /// Client, with a key: the server answered `HELLO` without a challenge (`WELCOME` or
    /// anything else but `CHALLENGE` or `ERROR`). The client refuses to go on unauthenticated
    /// (no silent downgrade): a misconfigured server, or an impostor.
    #[error("the server did not ask this client to authenticate")]
    NotChallenged,
    /// Server: the peer stopped reading what the server writes (its acknowledgements): a write
    /// blocked for longer than the driver's bound, or too many writes queued behind it. Reported
    /// by the driver through `Server::handle_write_blocked`.
    #[error("not reading acknowledgements")]
    NotReadingAcks,
    /// Either side: the peer sent something invalid.
    #[error("protocol error: {0}")]
    Protocol(DecodeError),
    /// Client: the server refused it, with this message (an `ERROR` frame).
    #[error("server error: {0}")]
    ServerError(String),
    /// Server: a newer connection with the same client identity took over: an authenticated
    /// one, or without authentication one with the same session (the identity rule).
    #[error("superseded by {0}")]
    Superseded(crate::ConnId),
    /// Server with TLS (reported by its driver): the TLS handshake failed or timed out, with
    /// the TLS library's reason: a plaintext client, a port scanner, a client that does not
    /// trust the certificate, a silent peer. The connection never identified.
    #[error("TLS handshake failed: {0}")]
    TlsFailed(String),
    /// Client: its interval is too long for a connection to stay open between heartbeats (see
    /// `ClientConfig::connect_per_beat`), so it closes once a heartbeat is acknowledged and
    /// connects again for the next one.
    #[error("closed until the next heartbeat")]
    UntilNextBeat,
    /// A reason read back from an event log (`disconnected`'s `reason`), by the text the
    /// server wrote: never produced by a live connection.
    #[error("{0}")]
    Logged(String),
}

impl DecodeError {
    /// A short, stable name of the kind of error (`too_long`, `seq_ahead`, ...): a bounded
    /// label for metrics, without the offending bytes. A [`Violation`] is named by its own
    /// [`label`](Violation::label).
    pub fn label(&self) -> &'static str {
        match self {
            Self::TooLong { .. } => "too_long",
            Self::NotUtf8 => "not_utf8",
            Self::ControlChar => "control_char",
            Self::UnknownProtocol => "unknown_protocol",
            Self::TlsHandshake => "tls_handshake",
            Self::UnknownCommand(_) => "unknown_command",
            Self::Arity { .. } => "arity",
            Self::UnsupportedVersion(_) => "unsupported_version",
            Self::Seq(_) => "invalid_seq",
            Self::Timestamp(_) => "invalid_timestamp",
            Self::Interval(_) => "invalid_interval",
            Self::Session(_) => "invalid_session",
            Self::Hex { .. } => "invalid_hex",
            Self::ClientId(_) => "invalid_client_id",
            Self::Legacy(_) => "malformed_legacy",
            Self::Unexpected { .. } => "unexpected_frame",
            Self::UnsentAck(_) => "unsent_ack",
            Self::Violation(v) => v.label(),
        }
    }
}

impl Violation {
    /// A short, stable name of the limit broken (`too_fast`, ...): a bounded label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::IntervalBelowMinimum { .. } => "interval_below_minimum",
            Self::IntervalSeq { .. } => "interval_seq",
            Self::SeqAhead { .. } => "seq_ahead",
            Self::Timestamp { .. } => "implausible_timestamp",
            Self::TooFast { .. } => "too_fast",
        }
    }
}

impl DisconnectReason {
    /// A short, stable name of the reason (`closed_by_peer`, `idle_timeout`, `protocol`, ...):
    /// a bounded label for metrics, without ids or numbers.
    pub fn label(&self) -> &'static str {
        match self {
            Self::AckTimeout(_) => "ack_timeout",
            Self::AuthFailed { .. } => "auth_failed",
            Self::AuthRequired => "auth_required",
            Self::AuthTimeout { .. } => "auth_timeout",
            Self::ClosedByPeer => "closed_by_peer",
            Self::Finished => "finished",
            Self::Goodbye => "goodbye",
            Self::HelloTimeout(_) => "hello_timeout",
            Self::IdInUse { .. } => "id_in_use",
            Self::IdleTimeout(_) => "idle_timeout",
            Self::IncompleteHello(_) => "incomplete_hello",
            Self::LegacyRefused => "legacy_refused",
            Self::Local => "local",
            Self::NotChallenged => "not_challenged",
            Self::NotReadingAcks => "not_reading_acks",
            Self::Protocol(_) => "protocol",
            Self::ServerError(_) => "server_error",
            Self::Superseded(_) => "superseded",
            Self::TlsFailed(_) => "tls_failed",
            Self::UntilNextBeat => "until_next_beat",
            Self::Logged(_) => "logged",
        }
    }

    /// Server: when the connection ended because the server refused what the peer sent (a
    /// frame that does not decode, a broken limit, a failed authentication, a refused legacy
    /// connection, an id in use under another session), the kind of refusal: the
    /// [`DecodeError::label`] (or [`Violation::label`]) of a protocol error, else this reason's
    /// [`label`](Self::label). `None` for every other end (timeouts, closes, goodbyes).
    pub fn rejection(&self) -> Option<&'static str> {
        match self {
            Self::Protocol(e) => Some(e.label()),
            Self::AuthFailed { .. } | Self::LegacyRefused | Self::IdInUse { .. } => {
                Some(self.label())
            }
            _ => None,
        }
    }
}

/// Why a connection failed to authenticate. Carried in
/// [`DisconnectReason::AuthFailed`](crate::DisconnectReason::AuthFailed); the client is only
/// ever told `authentication failed`, so it cannot probe which ids have keys.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthFailure {
    /// The answer was not the HMAC the claimed id's secret gives: a wrong key, a replayed
    /// answer, or fields changed on the way.
    #[error("wrong answer to the challenge")]
    WrongAnswer,
    /// The server has no secret for the claimed id (and no fleet-wide one).
    #[error("no key for this client id")]
    UnknownClient,
    /// The connection sent something else than `AUTH` after the challenge, or ended.
    #[error("answered the challenge with {instead}")]
    Unanswered {
        /// What came instead: a command word, or `the end of the stream`.
        instead: &'static str,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Labels are metric label values: short, lowercase, no spaces, and one per kind.
    #[test]
    fn labels_are_bounded_names() {
        let reasons = [
            DisconnectReason::ClosedByPeer,
            DisconnectReason::Goodbye,
            DisconnectReason::IdleTimeout(Duration::from_secs(5)),
            DisconnectReason::LegacyRefused,
            DisconnectReason::Protocol(DecodeError::UnknownCommand("X".repeat(200))),
            DisconnectReason::Protocol(DecodeError::Violation(Violation::TooFast {
                beats: 11,
                elapsed: Duration::from_millis(20),
                interval: Duration::from_millis(10),
            })),
        ];
        let labels: Vec<_> = reasons.iter().map(DisconnectReason::label).collect();
        assert_eq!(
            labels,
            [
                "closed_by_peer",
                "goodbye",
                "idle_timeout",
                "legacy_refused",
                "protocol",
                "protocol"
            ]
        );
        let rejections: Vec<_> = reasons.iter().map(DisconnectReason::rejection).collect();
        assert_eq!(
            rejections,
            [
                None,
                None,
                None,
                Some("legacy_refused"),
                Some("unknown_command"),
                Some("too_fast")
            ]
        );
        for l in labels.iter().chain(rejections.iter().flatten()) {
            assert!(
                l.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{l}"
            );
        }
    }
}
