//! What the server tells its driver ([`Output`]) and its application ([`Event`]), and the two
//! renderings of an event: a text line for people ([`Display`](fmt::Display)) and a JSON object
//! for programs ([`Event::to_json`], derived).

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::ser::SerializeMap as _;
use serde::{Deserialize, Serialize, Serializer};

use crate::analysis::SeqRange;
use crate::detector::DetectorKind;
use crate::error::DisconnectReason;
use crate::frame::Protocol;
use crate::ids::{ClientKey, ConnId, Seq, from_text};
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
///
/// The JSON reads back ([`Deserialize`], derived too) into the same event, from the same form:
/// what a reader of the log (`heartbeat-sim tune`, `timeline`) takes. Unknown fields (a
/// `time`, a newer server's) are ignored, an unknown `"event"` is an error, and every field is
/// required except those that may be `null` (absent reads as `null`). Two values read back as
/// text only: a `reason` becomes [`DisconnectReason::Logged`], and an `Unidentified` `kind`
/// one of the first 64 distinct kinds read (then `"other"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
        #[serde(default, deserialize_with = "de_opt_ms")]
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
        #[serde(
            rename = "offset_ms",
            serialize_with = "ns_as_ms",
            deserialize_with = "de_ns"
        )]
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
        #[serde(serialize_with = "display", deserialize_with = "de_parse")]
        peer: SocketAddr,
        /// The protocol it speaks.
        protocol: Protocol,
        /// Its declared interval (v1).
        #[serde(rename = "interval_ms", serialize_with = "opt_ms")]
        #[serde(default, deserialize_with = "de_opt_ms")]
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
        #[serde(serialize_with = "display", deserialize_with = "de_parse")]
        peer: SocketAddr,
        /// Why.
        #[serde(serialize_with = "display", deserialize_with = "de_reason")]
        reason: DisconnectReason,
    },
    /// A client that negotiated advice changed its interval with `INTERVAL`: from heartbeat
    /// `seq` on it sends every `to`, and the server judges it by that interval from `seq` on
    /// (its detector starts afresh; missed heartbeats are still counted by sequence number).
    /// Fires when the `INTERVAL` frame is read, before the heartbeat `seq`.
    IntervalChanged {
        /// The connection.
        conn: ConnId,
        /// The client.
        client: ClientKey,
        /// The interval before.
        #[serde(rename = "from_ms", serialize_with = "ms", deserialize_with = "de_ms")]
        from: Duration,
        /// The interval from `seq` on.
        #[serde(
            rename = "interval_ms",
            serialize_with = "ms",
            deserialize_with = "de_ms"
        )]
        to: Duration,
        /// The first heartbeat sent under the new interval.
        seq: Seq,
    },
    /// A disconnected client was forgotten to make room for a new one (the client limit was
    /// reached). Its analysis is gone from reports.
    Evicted {
        /// The forgotten client.
        client: ClientKey,
    },
    /// A client gone (disconnected, not heard from) for longer than the configured
    /// forget-after was forgotten, so that what is remembered (and exported as metrics) stays
    /// bounded; or the application asked for it ([`Server::forget`](super::Server::forget),
    /// `requested`). Its analysis is gone from reports; if it comes back it is a new client.
    Forgotten {
        /// The forgotten client.
        client: ClientKey,
        /// How long it had been gone (since its last connection ended; zero for an expected
        /// client never heard from).
        #[serde(
            rename = "gone_for_ms",
            serialize_with = "ms",
            deserialize_with = "de_ms"
        )]
        gone_for: Duration,
        /// True when the application asked for it ([`Server::forget`](super::Server::forget)),
        /// false when the forget-after passed. In JSON only when true.
        #[serde(default, skip_serializing_if = "is_false")]
        requested: bool,
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
        #[serde(deserialize_with = "de_unix")]
        sent: UnixTime,
        /// The server's receive stamp.
        #[serde(deserialize_with = "de_unix")]
        received: UnixTime,
        /// One-way delay, `received - sent`, in nanoseconds; negative under clock skew.
        #[serde(
            rename = "delay_ms",
            serialize_with = "ns_as_ms",
            deserialize_with = "de_ns"
        )]
        delay_ns: i64,
        /// Monotonic time since the client's previous arrival (`None` for the first).
        #[serde(rename = "inter_arrival_ms", serialize_with = "opt_ms")]
        #[serde(default, deserialize_with = "de_opt_ms")]
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
        #[serde(
            flatten,
            serialize_with = "range_fields",
            deserialize_with = "de_range"
        )]
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
        #[serde(default)]
        seq: Option<Seq>,
    },
    /// The server itself did not run for a while (woken `late` after its earliest timer): it
    /// convicted nobody and dropped no connection on that evidence, and looks again shortly.
    Stalled {
        /// How late the server was woken.
        #[serde(rename = "late_ms", serialize_with = "ms", deserialize_with = "de_ms")]
        late: Duration,
    },
    /// The server's quality-of-service target (`--target-detection`, ...) became reachable or
    /// unreachable for a client at its interval, with the loss and delay variance measured so
    /// far; also at the client's first heartbeat under a target. Fires after the `Heartbeat`s
    /// of the arrival that changed it, at most once every ten heartbeats of the client.
    Target {
        /// The client.
        client: ClientKey,
        /// The target's detection time `T_D^U`.
        #[serde(
            rename = "detection_ms",
            serialize_with = "ms",
            deserialize_with = "de_ms"
        )]
        detection: Duration,
        /// The target's mean mistake recurrence time `T_MR^L`.
        #[serde(
            rename = "mistake_every_ms",
            serialize_with = "ms",
            deserialize_with = "de_ms"
        )]
        mistake_every: Duration,
        /// True when the target is reachable at the client's interval.
        reachable: bool,
        /// The client's interval.
        #[serde(
            rename = "interval_ms",
            serialize_with = "ms",
            deserialize_with = "de_ms"
        )]
        interval: Duration,
        /// When not reachable: the longest interval that would reach it (`None` when
        /// reachable, or when no interval would).
        #[serde(rename = "advised_interval_ms", serialize_with = "opt_ms")]
        #[serde(default, deserialize_with = "de_opt_ms")]
        advised_interval: Option<Duration>,
        /// The margin in use: down this long after the next heartbeat's expected arrival.
        #[serde(rename = "alpha_ms", serialize_with = "ms", deserialize_with = "de_ms")]
        alpha: Duration,
        /// The measured loss probability `p_L`.
        loss: f64,
        /// The measured variance of the one-way delay `V(D)`, in seconds squared.
        delay_variance: f64,
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
        #[serde(deserialize_with = "de_kind")]
        kind: Label,
        /// How many.
        count: u64,
        /// The span they were counted over.
        #[serde(
            rename = "window_ms",
            serialize_with = "ms",
            deserialize_with = "de_ms"
        )]
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
        #[serde(default, deserialize_with = "de_opt_parse")]
        peer: Option<SocketAddr>,
        /// The state before.
        from: Liveness,
        /// The state after.
        to: Liveness,
        /// Time since the client's last heartbeat before this change (`None` before the first).
        #[serde(rename = "since_last_ms", serialize_with = "opt_ms")]
        #[serde(default, deserialize_with = "de_opt_ms")]
        since_last: Option<Duration>,
        /// The detector's suspicion value when it changed (for `Up`, just before the heartbeat).
        #[serde(serialize_with = "round3")]
        suspicion: f64,
        /// Which detector decided.
        #[serde(deserialize_with = "de_parse")]
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
            Self::IntervalChanged { .. } => "interval_changed",
            Self::Missed { .. } => "missed",
            Self::Restarted { .. } => "restarted",
            Self::Stalled { .. } => "stalled",
            Self::Target { .. } => "target",
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
            Self::Forgotten {
                client,
                gone_for,
                requested,
            } => {
                write!(
                    f,
                    "forgotten client={client} gone_for={}{}",
                    fmt_ms(*gone_for),
                    if *requested { " (requested)" } else { "" }
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
            Self::IntervalChanged {
                client,
                from,
                to,
                seq,
                ..
            } => write!(
                f,
                "interval_changed client={client} from={} to={} seq={seq}",
                fmt_ms(*from),
                fmt_ms(*to)
            ),
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
            Self::Target {
                client,
                detection,
                mistake_every,
                reachable,
                interval,
                advised_interval,
                alpha,
                loss,
                delay_variance,
            } => write!(
                f,
                "target client={client} detection={} mistake_every={} reachable={reachable} \
                 interval={} advised={} alpha={} loss={loss:.6} delay_variance={delay_variance:.3e}",
                fmt_ms(*detection),
                fmt_ms(*mistake_every),
                fmt_ms(*interval),
                or_dash(advised_interval),
                fmt_ms(*alpha),
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

/// For `skip_serializing_if`: a flag written only when set.
#[allow(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde passes a reference"
)]
fn is_false(b: &bool) -> bool {
    !*b
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

// ---- JSON field readers (`deserialize_with`): each reads what its writer above writes ----

/// `&'static str` under another name, so that serde's derive does not take `kind` for a string
/// borrowed from the input (which would make events readable only from `'static` text).
type Label = &'static str;

/// How many distinct `Unidentified` kinds are kept when reading; later ones read as `"other"`
/// (a kind is a `&'static str`, so each is kept for good: a hostile log cannot grow it).
const MAX_KINDS: usize = 64;

/// Milliseconds (a number) to a duration; negative, non-finite or too large is an error.
fn ms_to_duration<E: de::Error>(ms: f64) -> Result<Duration, E> {
    if !(ms.is_finite() && ms >= 0.0) {
        return Err(E::custom(format!("{ms} ms is not a duration")));
    }
    Duration::try_from_secs_f64(ms / 1000.0).map_err(E::custom)
}

fn de_ms<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    ms_to_duration(f64::deserialize(d)?)
}

fn de_opt_ms<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    Option::<f64>::deserialize(d)?
        .map(ms_to_duration)
        .transpose()
}

/// Milliseconds (a number, maybe negative) to nanoseconds.
fn de_ns<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let ms = f64::deserialize(d)?;
    let ns = (ms * 1e6).round();
    if !(ns.is_finite() && ns.abs() < 9.2e18) {
        return Err(de::Error::custom(format!("{ms} ms is out of range")));
    }
    Ok(ns as i64)
}

/// Unix seconds as the protocol writes them, a string (`"1700000000.123456"`).
fn de_unix<'de, D: Deserializer<'de>>(d: D) -> Result<UnixTime, D::Error> {
    from_text(d, "Unix seconds as text", crate::frame::parse_unix)
}

/// A value written by its `Display`, read by its `FromStr`.
fn de_parse<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: fmt::Display,
{
    from_text(d, "text", str::parse)
}

fn de_opt_parse<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: fmt::Display,
{
    Option::<std::borrow::Cow<'de, str>>::deserialize(d)?
        .map(|s| s.parse().map_err(de::Error::custom))
        .transpose()
}

/// A reason's text, kept as written.
fn de_reason<'de, D: Deserializer<'de>>(d: D) -> Result<DisconnectReason, D::Error> {
    String::deserialize(d).map(DisconnectReason::Logged)
}

/// An `Unidentified` kind, kept once per distinct text (at most [`MAX_KINDS`]).
fn de_kind<'de, D: Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    static KINDS: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    let mut kinds = KINDS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(k) = kinds.iter().find(|k| **k == s) {
        return Ok(k);
    }
    if kinds.len() >= MAX_KINDS {
        return Ok("other");
    }
    let k: &'static str = Box::leak(s.into_owned().into_boxed_str());
    kinds.push(k);
    Ok(k)
}

/// A missed range from its `first` and `last` fields (`range` and `count` repeat them).
fn de_range<'de, D: Deserializer<'de>>(d: D) -> Result<SeqRange, D::Error> {
    #[derive(Deserialize)]
    struct Fields {
        first: Seq,
        last: Seq,
    }
    let Fields { first, last } = Fields::deserialize(d)?;
    if first > last {
        return Err(de::Error::custom(format!("range {first}-{last} is empty")));
    }
    Ok(SeqRange { first, last })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClientId;

    fn id(s: &str) -> ClientKey {
        ClientKey::Id(ClientId::new(s).unwrap())
    }

    /// One event of every kind, with values the JSON holds exactly (durations in whole
    /// microseconds, suspicions to three decimals).
    fn one_of_each() -> Vec<Event> {
        let peer: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        let ms = |n: u64| Duration::from_micros(n * 1_000 + 250);
        vec![
            Event::Burst {
                conn: ConnId(1),
                client: id("web-01"),
                first: Seq(5),
                last: Seq(9),
                count: 5,
                silence: Some(ms(1500)),
            },
            Event::ClockSkew {
                conn: ConnId(1),
                client: id("web-01"),
                offset_ns: -2_500_123_000,
                skewed: true,
            },
            Event::Connected {
                conn: ConnId(2),
                client: ClientKey::Peer(peer),
                peer,
                protocol: Protocol::Legacy,
                interval: None,
                resumed: true,
            },
            Event::Disconnected {
                conn: ConnId(3),
                client: None,
                peer,
                reason: DisconnectReason::Logged("no data for 5s".into()),
            },
            Event::Duplicate {
                conn: ConnId(1),
                client: id("a"),
                seq: Seq(3),
            },
            Event::Evicted { client: id("b") },
            Event::Forgotten {
                client: id("c"),
                gone_for: ms(86_400_000),
                requested: false,
            },
            Event::Forgotten {
                client: id("d"),
                gone_for: ms(60_000),
                requested: true,
            },
            Event::Heartbeat {
                conn: ConnId(1),
                client: id("web-01"),
                seq: Seq(u64::MAX),
                sent: UnixTime::from_nanos(1_700_000_000_123_456_000),
                received: UnixTime::from_nanos(1_700_000_000_125_000_000),
                delay_ns: 1_544_000,
                inter_arrival: Some(ms(100)),
                recovered: true,
            },
            Event::IntervalChanged {
                conn: ConnId(1),
                client: id("web-01"),
                from: ms(1000),
                to: ms(200),
                seq: Seq(42),
            },
            Event::Missed {
                conn: ConnId(1),
                client: id("web-01"),
                range: SeqRange {
                    first: Seq(10),
                    last: Seq(11),
                },
            },
            Event::Restarted {
                conn: ConnId(1),
                client: id("web-01"),
                previous: Seq(20),
                seq: Some(Seq(1)),
            },
            Event::Stalled { late: ms(6000) },
            Event::Target {
                client: id("web-01"),
                detection: ms(3000),
                mistake_every: ms(2_592_000_000),
                reachable: false,
                interval: ms(1000),
                advised_interval: Some(ms(420)),
                alpha: ms(2000),
                loss: 0.0123,
                delay_variance: 2.5e-5,
            },
            Event::Unidentified {
                kind: "tls_failed",
                count: 17,
                window: Duration::from_secs(1),
            },
            Event::Transition {
                client: id("web-01"),
                peer: Some(peer),
                from: Liveness::Up,
                to: Liveness::Suspect,
                since_last: Some(ms(300)),
                suspicion: 8.125,
                detector: DetectorKind::PhiExp,
            },
        ]
    }

    /// Which variant an event is: an exhaustive match, so a new variant does not compile
    /// until it is placed here, and [`one_of_each`] is checked to hold it.
    fn variant(e: &Event) -> usize {
        match e {
            Event::Burst { .. } => 0,
            Event::ClockSkew { .. } => 1,
            Event::Connected { .. } => 2,
            Event::Disconnected { .. } => 3,
            Event::Duplicate { .. } => 4,
            Event::Evicted { .. } => 5,
            Event::Forgotten { .. } => 6,
            Event::Heartbeat { .. } => 7,
            Event::Missed { .. } => 8,
            Event::Restarted { .. } => 9,
            Event::Stalled { .. } => 10,
            Event::Unidentified { .. } => 11,
            Event::Transition { .. } => 12,
            Event::Target { .. } => 13,
            Event::IntervalChanged { .. } => 14,
        }
    }

    /// Every variant written as `heartbeat-server --json` writes it (with its `time`) reads
    /// back equal, and writes the same line again.
    #[test]
    fn every_event_reads_back_as_written() {
        let events = one_of_each();
        let mut seen: Vec<usize> = events.iter().map(variant).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen, (0..15).collect::<Vec<_>>(), "one event of every kind");
        let time = UnixTime::from_nanos(1_700_000_000_500_000_000);
        for e in events {
            let line = e.to_json_at(time).to_string();
            let back: Event =
                serde_json::from_str(&line).unwrap_or_else(|err| panic!("{line}: {err}"));
            assert_eq!(back, e, "{line}");
            assert_eq!(back.to_json_at(time).to_string(), line);
        }
    }

    /// A live reason reads back as its text, and writes the same JSON; `null`s read as `None`,
    /// and so do absent nullable fields.
    #[test]
    fn reasons_and_nulls_read_back() {
        let e = Event::Disconnected {
            conn: ConnId(3),
            client: Some(id("a")),
            peer: "[::1]:9".parse().unwrap(),
            reason: DisconnectReason::IdleTimeout(Duration::from_secs(5)),
        };
        let back: Event = serde_json::from_value(e.to_json()).unwrap();
        assert_eq!(back.to_json(), e.to_json());
        let Event::Disconnected { reason, .. } = back else {
            panic!("{back:?}")
        };
        assert_eq!(reason, DisconnectReason::Logged("no data for 5s".into()));
        let restarted = r#"{"event":"restarted","conn":1,"client":"a","previous":3}"#;
        let back: Event = serde_json::from_str(restarted).unwrap();
        assert!(
            matches!(back, Event::Restarted { seq: None, .. }),
            "{back:?}"
        );
    }

    /// What the server never writes is an error, not a guess: an unknown event, a missing
    /// field, an invalid client id, an empty range, a negative duration.
    #[test]
    fn what_the_server_never_writes_is_refused() {
        for bad in [
            r#"{"event":"gossip","client":"a"}"#,
            r#"{"event":"evicted"}"#,
            r#"{"event":"evicted","client":"a b"}"#,
            r#"{"event":"missed","conn":1,"client":"a","first":9,"last":5}"#,
            r#"{"event":"stalled","late_ms":-1.0}"#,
            r#"{"event":"heartbeat","conn":1,"client":"a","seq":1,"sent":"1.0","received":"x","delay_ms":0.0,"inter_arrival_ms":null,"recovered":false}"#,
        ] {
            assert!(serde_json::from_str::<Event>(bad).is_err(), "{bad}");
        }
    }
}
