//! What the server tells its driver ([`Output`]) and its application ([`Event`]), and the two
//! renderings of an event: a text line for people ([`Display`](fmt::Display)) and a JSON object
//! for programs ([`Event::to_json`], derived).

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::ser::SerializeMap as _;
use serde::{Serialize, Serializer};

use crate::analysis::SeqRange;
use crate::detector::DetectorKind;
use crate::error::DisconnectReason;
use crate::frame::Protocol;
use crate::ids::{ClientKey, ConnId, Seq};
use crate::time::{UnixTime, fmt_ms, fmt_signed_ms};

use super::Liveness;

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub enum Output {
    /// Close `conn` after writing every earlier `Transmit` to it. Emitted exactly once per
    /// accepted connection.
    Disconnect {
        /// The connection.
        conn: ConnId,
        /// Why it ends.
        reason: DisconnectReason,
    },
    /// Something for the application.
    Event(Event),
    /// Write all of `bytes` to `conn`, in order.
    Transmit {
        /// The connection.
        conn: ConnId,
        /// The bytes.
        bytes: Vec<u8>,
    },
}

/// What the server observed, in the order it happened. Events about one connection name it
/// (`conn`); events about a client's record (`Evicted`, `Transition`) or the server itself
/// (`Stalled`) do not.
///
/// # JSON
/// [`to_json`](Self::to_json) is derived from this definition, so a new field is one edit: one
/// object per event, tagged by `"event"` ([`name`](Self::name)), fields by their names, with
/// durations in milliseconds rounded to the microsecond in fields named `*_ms`, `conn` as its
/// number, `peer` and `reason` as text, and a missed `range` also as `first`, `last` and
/// `count`. The text line ([`Display`](fmt::Display)) is written by hand, for people.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// Several heartbeats arrived in one read after a silence of at least the configured number
    /// of intervals (a released firewall, a stalled path). Fires before their `Heartbeat`s.
    Burst {
        /// The connection.
        conn: ConnId,
        /// The client.
        client: ClientKey,
        /// First sequence number in the burst.
        first: Seq,
        /// Last sequence number in the burst.
        last: Seq,
        /// Heartbeats in the burst.
        count: u64,
        /// The silence before it (`None` for the first arrival of a client).
        #[serde(rename = "silence_ms", serialize_with = "opt_ms")]
        silence: Option<Duration>,
    },
    /// A client's clock is off from the server's by more than the maximum clock skew
    /// (`skewed`), or back within half of it (not `skewed`). Fires on the arrival that showed
    /// it, before its `Heartbeat`s, and again only when the offset changes by more than the
    /// maximum. While skewed, the client's delays are measured from this offset.
    ///
    /// The offset is estimated from the least delayed heartbeat of the client's recent
    /// arrivals, so a clock ahead (negative delays) is certain at once, while a clock behind is
    /// reported only after several arrivals all that late (it could be a slow path).
    ClockSkew {
        /// The connection.
        conn: ConnId,
        /// The client.
        client: ClientKey,
        /// The client's clock minus the server's, in nanoseconds (negative: behind).
        #[serde(rename = "offset_ms", serialize_with = "ns_as_ms")]
        offset_ns: i64,
        /// True when the offset is beyond the maximum clock skew.
        skewed: bool,
    },
    /// A connection identified itself: after `HELLO` (v1) or the first legacy bytes.
    Connected {
        /// The connection.
        conn: ConnId,
        /// The client.
        client: ClientKey,
        /// Its peer address.
        #[serde(serialize_with = "display")]
        peer: SocketAddr,
        /// The protocol it speaks.
        protocol: Protocol,
        /// Its declared interval (v1).
        #[serde(rename = "interval_ms", serialize_with = "opt_ms")]
        interval: Option<Duration>,
        /// True when the client was known before (a reconnect).
        resumed: bool,
    },
    /// A connection ended. Fires once per accepted connection, with the same reason as its
    /// `Output::Disconnect`.
    Disconnected {
        /// The connection.
        conn: ConnId,
        /// The client, if it identified itself.
        client: Option<ClientKey>,
        /// Its peer address.
        #[serde(serialize_with = "display")]
        peer: SocketAddr,
        /// Why.
        #[serde(serialize_with = "display")]
        reason: DisconnectReason,
    },
    /// A disconnected client was forgotten to make room for a new one (the client limit was
    /// reached). Its analysis is gone from reports.
    Evicted {
        /// The forgotten client.
        client: ClientKey,
    },
    /// A client gone (disconnected, not heard from) for longer than the configured
    /// forget-after was forgotten, so that what is remembered (and exported as metrics) stays
    /// bounded. Its analysis is gone from reports; if it comes back it is a new client.
    Forgotten {
        /// The forgotten client.
        client: ClientKey,
        /// How long it had been gone (since its last connection ended).
        #[serde(rename = "gone_for_ms", serialize_with = "ms")]
        gone_for: Duration,
    },
    /// A heartbeat at or below the highest sequence number already received.
    Duplicate {
        /// The connection.
        conn: ConnId,
        /// The client.
        client: ClientKey,
        /// Its sequence number.
        seq: Seq,
    },
    /// A heartbeat was received (not a duplicate). One per heartbeat.
    Heartbeat {
        /// The connection.
        conn: ConnId,
        /// The client.
        client: ClientKey,
        /// Its sequence number.
        seq: Seq,
        /// The client's send stamp.
        sent: UnixTime,
        /// The server's receive stamp.
        received: UnixTime,
        /// One-way delay, `received - sent`, in nanoseconds; negative under clock skew.
        #[serde(rename = "delay_ms", serialize_with = "ns_as_ms")]
        delay_ns: i64,
        /// Monotonic time since the client's previous arrival (`None` for the first).
        #[serde(rename = "inter_arrival_ms", serialize_with = "opt_ms")]
        inter_arrival: Option<Duration>,
        /// True when it filled a gap that had been reported missed.
        recovered: bool,
    },
    /// Sequence numbers were skipped: these heartbeats were never received. Fires once per gap.
    Missed {
        /// The connection.
        conn: ConnId,
        /// The client.
        client: ClientKey,
        /// The missing range.
        #[serde(flatten, serialize_with = "range_fields")]
        range: SeqRange,
    },
    /// The client started a new sequence: a new session nonce in `HELLO`, or sequence number 1
    /// after higher ones.
    Restarted {
        /// The connection.
        conn: ConnId,
        /// The client.
        client: ClientKey,
        /// The highest sequence number of the previous session.
        previous: Seq,
        /// The first sequence number of the new session, when it restarted mid-stream.
        seq: Option<Seq>,
    },
    /// The server itself did not run for a while (woken `late` after its earliest timer): it
    /// convicted nobody and dropped no connection on that evidence, and looks again shortly.
    Stalled {
        /// How late the server was woken.
        #[serde(rename = "late_ms", serialize_with = "ms")]
        late: Duration,
    },
    /// `count` connections that never identified ended for the same reason `kind` within
    /// `window` from `time` on: TLS failures, refusals before or at `HELLO`, protocol errors
    /// and timeouts before identifying, connection limits. The core never emits it: the
    /// server application sums up such connections' `Disconnected` events in it (one event per
    /// kind and second, rather than one per connection a flood can open), while every event
    /// about an identified client stays an event of its own.
    Unidentified {
        /// Why they ended: a [`DisconnectReason::label`] (`tls_failed`, `protocol`,
        /// `hello_timeout`, `auth_failed`, `id_in_use`, ...), or the connection limit that
        /// closed them at once (`max_connections`, `max_connections_per_ip`).
        kind: &'static str,
        /// How many.
        count: u64,
        /// The span they were counted over.
        #[serde(rename = "window_ms", serialize_with = "ms")]
        window: Duration,
    },
    /// A client's liveness changed. Fires on every change, in order; `to == Up` fires on the
    /// heartbeat that brought the client back. `from == Unknown` (to `Down`) is an expected
    /// client never heard from within its grace ("never seen"); an expected client heard from
    /// in time becomes `Up` without a transition (nothing was announced about it).
    Transition {
        /// The client.
        client: ClientKey,
        /// The peer address of the client's latest connection (`None` if it never connected).
        #[serde(serialize_with = "opt_display")]
        peer: Option<SocketAddr>,
        /// The state before.
        from: Liveness,
        /// The state after.
        to: Liveness,
        /// Time since the client's last heartbeat before this change (`None` before the first).
        #[serde(rename = "since_last_ms", serialize_with = "opt_ms")]
        since_last: Option<Duration>,
        /// The detector's suspicion value when it changed (for `Up`, just before the heartbeat).
        #[serde(serialize_with = "round3")]
        suspicion: f64,
        /// Which detector decided.
        detector: DetectorKind,
    },
}

impl Event {
    /// The event's name in JSON output (`"heartbeat"`, `"missed"`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Burst { .. } => "burst",
            Self::ClockSkew { .. } => "clock_skew",
            Self::Connected { .. } => "connected",
            Self::Disconnected { .. } => "disconnected",
            Self::Duplicate { .. } => "duplicate",
            Self::Evicted { .. } => "evicted",
            Self::Forgotten { .. } => "forgotten",
            Self::Heartbeat { .. } => "heartbeat",
            Self::Missed { .. } => "missed",
            Self::Restarted { .. } => "restarted",
            Self::Stalled { .. } => "stalled",
            Self::Transition { .. } => "transition",
            Self::Unidentified { .. } => "unidentified",
        }
    }

    /// The event as one JSON object with an `"event"` field naming it (see [`name`](Self::name)).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("an event is always serialisable")
    }

    /// [`to_json`](Self::to_json) with a `time` field: when it happened, `now.unix` of the call
    /// that produced it, in Unix seconds as a number rounded to the microsecond (see
    /// [`unix_seconds`]). What `heartbeat-server --json` writes, one line per event.
    pub fn to_json_at(&self, time: UnixTime) -> serde_json::Value {
        let mut v = self.to_json();
        v["time"] = unix_seconds(time);
        v
    }
}

impl fmt::Display for Event {
    /// One stable line, e.g. `heartbeat client=web-01 seq=3 delay=1.200ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let or_dash = |d: &Option<Duration>| d.map_or_else(|| "-".to_owned(), fmt_ms);
        match self {
            Self::Burst {
                client,
                first,
                last,
                count,
                silence,
                ..
            } => write!(
                f,
                "burst client={client} seq={first}-{last} count={count} after_silence={}",
                or_dash(silence)
            ),
            Self::ClockSkew {
                client,
                offset_ns,
                skewed,
                ..
            } => {
                let state = if *skewed { "skewed" } else { "in sync" };
                write!(
                    f,
                    "clock_skew client={client} offset={} ({state})",
                    fmt_signed_ms(*offset_ns)
                )
            }
            Self::Connected {
                conn,
                client,
                peer,
                protocol,
                interval,
                resumed,
            } => write!(
                f,
                "connected {conn} client={client} peer={peer} protocol={protocol} interval={} resumed={resumed}",
                or_dash(interval)
            ),
            Self::Disconnected {
                conn,
                client,
                reason,
                ..
            } => {
                let client = client
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), ToString::to_string);
                write!(f, "disconnected {conn} client={client} reason={reason}")
            }
            Self::Duplicate { client, seq, .. } => write!(f, "duplicate client={client} seq={seq}"),
            Self::Evicted { client } => write!(f, "evicted client={client} (client limit reached)"),
            Self::Forgotten { client, gone_for } => {
                write!(
                    f,
                    "forgotten client={client} gone_for={}",
                    fmt_ms(*gone_for)
                )
            }
            Self::Heartbeat {
                client,
                seq,
                delay_ns,
                inter_arrival,
                recovered,
                ..
            } => {
                write!(
                    f,
                    "heartbeat client={client} seq={seq} delay={} gap={}",
                    fmt_signed_ms(*delay_ns),
                    or_dash(inter_arrival)
                )?;
                if *recovered {
                    write!(f, " recovered")?;
                }
                Ok(())
            }
            Self::Missed { client, range, .. } => write!(
                f,
                "missed client={client} seq={range} count={}",
                range.count()
            ),
            Self::Restarted {
                client,
                previous,
                seq,
                ..
            } => {
                write!(f, "restarted client={client} previous={previous}")?;
                if let Some(seq) = seq {
                    write!(f, " seq={seq}")?;
                }
                Ok(())
            }
            Self::Unidentified {
                kind,
                count,
                window,
            } => write!(
                f,
                "unidentified kind={kind} count={count} window={}",
                fmt_ms(*window)
            ),
            Self::Stalled { late } => write!(
                f,
                "stalled: the server ran {} late; no client convicted on that evidence",
                fmt_ms(*late)
            ),
            Self::Transition {
                client,
                from,
                to,
                since_last,
                suspicion,
                detector,
                ..
            } => write!(
                f,
                "transition client={client} {from}->{to} since_last={} {detector}={:.3}",
                or_dash(since_last),
                rounded3(*suspicion)
            ),
        }
    }
}

/// A Unix time as a JSON number of seconds, rounded to the microsecond: at most six decimals
/// (trailing zeros dropped), exact to the microsecond until 2106, when an `f64` stops holding
/// every microsecond. The form of every `time` field (the `sent` and `received` stamps of
/// heartbeats stay strings with six decimals, as the protocol writes them).
pub fn unix_seconds(time: UnixTime) -> serde_json::Value {
    let micros = time.as_nanos().saturating_add(500) / 1_000;
    serde_json::Value::from(micros as f64 / 1e6)
}

// ---- JSON field helpers (`serialize_with`) ----

fn opt_display<S: Serializer>(x: &Option<impl fmt::Display>, s: S) -> Result<S::Ok, S::Error> {
    match x {
        Some(x) => s.collect_str(x),
        None => s.serialize_none(),
    }
}

/// Nanoseconds to milliseconds, rounded to the microsecond.
fn ns_to_ms(nanos: f64) -> f64 {
    (nanos / 1_000.0).round() / 1_000.0
}

fn ms<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(ns_to_ms(d.as_nanos() as f64))
}

fn opt_ms<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => ms(d, s),
        None => s.serialize_none(),
    }
}

fn ns_as_ms<S: Serializer>(nanos: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(ns_to_ms(*nanos as f64))
}

fn display<S: Serializer>(x: &impl fmt::Display, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(x)
}

/// Three decimals, so JSON output does not depend on the last bits of a float; a non-finite
/// suspicion is written as the largest finite `f64` (JSON has no infinity).
fn round3<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(rounded3(*x))
}

fn rounded3(x: f64) -> f64 {
    if x.is_finite() {
        (x * 1000.0).round() / 1000.0
    } else {
        f64::MAX
    }
}

/// A missed range as four fields: `range` (`5-9`), `first`, `last` and `count`.
fn range_fields<S: Serializer>(r: &SeqRange, s: S) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(4))?;
    map.serialize_entry("range", r)?;
    map.serialize_entry("first", &r.first)?;
    map.serialize_entry("last", &r.last)?;
    map.serialize_entry("count", &r.count())?;
    map.end()
}
