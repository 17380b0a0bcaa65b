//! The heartbeat client state machine.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::SmallRng;

use crate::auth::{Answer, Nonce};
use crate::config::ClientConfig;
use crate::error::{DecodeError, DisconnectReason};
use crate::frame::{
    AUTH_FAILED_MESSAGE, Frame, FrameDecoder, LegacyBeat, Protocol, TLS_EXPECTED_MESSAGE, VERSION,
    id_in_use_message,
};
use crate::ids::Seq;
use crate::time::{Now, UnixTime, fmt_ms};
use crate::timer::TimerTable;

/// Outstanding heartbeats remembered for RTT matching. Older ones are forgotten (their acks, if
/// they ever come, give no RTT sample).
const MAX_IN_FLIGHT: usize = 1024;

/// A wake this many intervals (and at least [`STALL_FLOOR`]) after the timer that was due is a
/// stall of the client itself, not of the server: see [`Client::is_stalled`].
const STALL_SLOTS: u32 = 3;

/// The shortest lateness taken for a stall: below it, a late wake is scheduling jitter.
const STALL_FLOOR: Duration = Duration::from_secs(1);

/// The heartbeat client: a fixed-rate sender that connects, says `HELLO`, sends `BEAT`s on a
/// drift-free schedule, matches `ACK`s for round-trip times, notices a silent server, and
/// reconnects with backoff.
///
/// With a key ([`ClientConfig::auth_key`]) it sends no heartbeat on a connection before it has
/// answered the server's `CHALLENGE` with `AUTH`, and it refuses a server that does not
/// challenge ([`Failure::Downgrade`]), whether or not it reconnects.
///
/// # Calling rule
/// After [`new`](Self::new) and after every `handle_*` call or command, drain
/// [`poll_output`](Self::poll_output) until it returns `None`, carrying out each output in order,
/// then read [`poll_timeout`](Self::poll_timeout) and call [`handle_timeout`](Self::handle_timeout)
/// once that instant has passed. Calling `handle_timeout` early does nothing.
///
/// # Schedule
/// Heartbeat `k` (sequence number `k + 1`) is due at `start + k * interval`, where `start` is the
/// first successful connect (with a key: the first answered challenge). Processing time never shifts the schedule. A driver that wakes late
/// sends only the heartbeat due now and reports the slots it jumped over as
/// [`Event::Skipped`], as it does for slots that fell in a disconnection: sequence numbers follow
/// the clock, so the server counts an outage as missed heartbeats of the same client. Clients
/// that must number alike (one per server, in one process) share an origin with
/// [`start_schedule`](Self::start_schedule).
///
/// # Advice
/// A client configured to follow advice ([`ClientConfig::follow_advice`]) asks for it in
/// `HELLO`; when the server advises an interval ([`Event::Advised`]), clamped into the
/// client's range, the next heartbeat goes out at its slot of the current grid, announced by
/// `INTERVAL`, and the grid is re-based there: every later heartbeat follows at the new
/// interval ([`Event::IntervalChanged`]); numbering goes on without a gap. A server that does
/// not know the extension is asked once ([`Event::AdviceRefused`]). Clients sharing an origin
/// each follow their own server's advice, so their grids part when one changes.
///
/// # Stalls
/// A client whose own process did not run for a while (stopped, suspended, starved of CPU)
/// wakes long after its timers were due. It does not blame the server for a silence it did not
/// watch: such a wake ([`is_stalled`](Self::is_stalled)) is reported as [`Event::Stalled`], and
/// the server's silence is counted afresh from it, so an ack timeout fires only if the server
/// stays silent after the stall. A driver reads what arrived during the stall before it calls
/// `handle_timeout`, so that the acknowledgements (or the close) waiting in the socket are seen
/// first.
///
/// # Pausing
/// An application that knows it is unhealthy can [`pause`](Self::pause) the heartbeats and
/// [`resume`](Self::resume) them later: slots that pass meanwhile are skipped, not queued, so the
/// server sees the client go late and then down, and on resume counts the gap as missed
/// heartbeats, once.
///
/// ```no_run
/// # use std::time::Duration;
/// # use heartbeat_core::{ClientId, Now};
/// # use heartbeat_core::client::{Client, Output};
/// # use heartbeat_core::config::ClientConfig;
/// # fn now() -> Now { unimplemented!() }
/// let id = ClientId::new("web-01").unwrap();
/// let config = ClientConfig::new(id, Duration::from_secs(1)).unwrap();
/// let mut client = Client::new(config, now());
/// loop {
///     while let Some(out) = client.poll_output() {
///         match out {
///             Output::Connect => { /* open the stream, then handle_connected / handle_connect_failed */ }
///             Output::Transmit(bytes) => { /* write_all(bytes) */ }
///             Output::Disconnect { .. } => { /* close the stream */ }
///             Output::Event(event) => println!("{event}"),
///         }
///     }
///     if client.is_done() { break; }
///     // sleep until client.poll_timeout(), or read bytes -> client.handle_input(now(), &bytes)
///     client.handle_timeout(now());
/// }
/// ```
#[derive(Debug)]
pub struct Client {
    config: Arc<ClientConfig>,
    state: State,
    /// Schedule origin: when slot `base_slot` is due (the first successful connect, for slot 0).
    start: Option<Instant>,
    /// The slot `start` is the due time of: 0 until the interval changes, then the slot of the
    /// first heartbeat sent under the new interval.
    base_slot: u64,
    /// The interval in force: the configured one until the client follows advice.
    interval: Duration,
    /// Where interval advice stands.
    advice: AdviceState,
    /// The next slot not yet sent or skipped (slot `k` carries sequence number `k + 1`).
    next_slot: u64,
    sent: u64,
    acked: u64,
    skipped: u64,
    /// When [`Client::pause`] took effect; `None` while heartbeats flow.
    paused: Option<Instant>,
    in_flight: VecDeque<(Seq, Instant)>,
    /// The first heartbeat sent on the current connection: with the last one sent, the range of
    /// sequence numbers an `ACK` on it may name.
    conn_first: Option<Seq>,
    /// When the server first refused this client's id under the identity rule, in the current
    /// run of refusals.
    refused_since: Option<Instant>,
    decoder: FrameDecoder,
    rng: SmallRng,
    timers: TimerTable<Timer, { Timer::COUNT }>,
    out: VecDeque<Output>,
}

/// Interval advice (`PROTOCOL.md`, "Advice (negotiated)"), for a client that follows it.
#[derive(Clone, Copy, Debug, Default)]
struct AdviceState {
    /// This process still asks for advice: it follows advice, and no server refused the
    /// advice token yet.
    asking: bool,
    /// The current connection's `HELLO` asked for advice.
    asked: bool,
    /// The current connection's `WELCOME` came (with or without advice).
    welcomed: bool,
    /// The current connection's `WELCOME` said the server gives advice.
    negotiated: bool,
    /// An advised interval (clamped) to adopt from the next heartbeat on.
    pending: Option<Duration>,
}

#[derive(Clone, Copy, Debug)]
enum Timer {
    /// The next heartbeat slot.
    Beat = 0,
    /// Warn that the server is silent.
    Silence = 1,
    /// Give up on a silent server.
    AckTimeout = 2,
    /// Try to connect again.
    Reconnect = 3,
}

impl Timer {
    const COUNT: usize = 4;
}

impl From<Timer> for usize {
    fn from(timer: Timer) -> Self {
        timer as Self
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// `Output::Connect` was emitted; waiting for `handle_connected` or `handle_connect_failed`.
    Connecting { attempt: u32 },
    /// The stream is up.
    Connected {
        attempt: u32,
        last_heard: Instant,
        proof: Proof,
        handshake: Handshake,
    },
    /// All `count` heartbeats are sent; waiting for the last ack before saying goodbye.
    Finishing { last: Seq },
    /// Waiting before the next connect attempt.
    Backoff { attempt: u32 },
    /// Finished; no more outputs.
    Done(Exit),
}

/// How far a connection has proved the server sound, which decides whether losing it starts the
/// backoff afresh. Only acknowledged heartbeats count, over at least one ack timeout: a `WELCOME`,
/// or an `ACK` or two, is what a broken or hostile server sends too before it fails, and a
/// backoff reset by them lets such a server draw a reconnect every 100 ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proof {
    /// No heartbeat acknowledged yet (legacy: written) on this connection.
    Unproven,
    /// Heartbeats acknowledged (legacy: written) since this instant, for less than an ack
    /// timeout so far.
    Since(Instant),
    /// Heartbeats acknowledged (legacy: written) over at least one ack timeout: losing the
    /// connection now resets the backoff.
    Proven,
}

/// Where a connection's v1 handshake stands: whether heartbeats may go out yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handshake {
    /// `HELLO` went out with a key: nothing more until the server's `CHALLENGE` is answered.
    AwaitingChallenge,
    /// Heartbeats may go out: no key (they follow `HELLO` at once), `AUTH` sent, or legacy.
    Open,
}

/// How a client ended. Drivers map it to the process exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Exit {
    /// Stopped by [`Client::close`].
    Closed,
    /// Could not connect, or the connection ended, and reconnecting was not enabled.
    Failed(Failure),
    /// Sent the configured number of heartbeats.
    Finished,
}

impl Exit {
    /// True for the exits that are a success (`Closed`, `Finished`).
    pub fn is_success(&self) -> bool {
        !matches!(self, Self::Failed(_))
    }
}

/// Why a client failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Failure {
    /// The first connection attempt failed; the driver's error text.
    #[error("Failed to connect to server: {0}")]
    Connect(String),
    /// The client has a key and the server did not challenge it: the client refused to send
    /// heartbeats unauthenticated. Never retried: a server without authentication, or an
    /// impostor, stays one.
    #[error(
        "Refusing the server: it did not ask this client to authenticate, and this client has a \
         key (no downgrade to unauthenticated heartbeats; is the server run without --auth-keys, \
         or is it an impostor?)"
    )]
    Downgrade,
    /// The server refused the client's id under the identity rule: a live connection with
    /// another session holds it. Without reconnecting, at once; with, once the refusals outlast
    /// the time the server takes to drop a half-open connection of the client's own previous
    /// run ([`ClientConfig::server_max_idle`]): then it is another client with the same id.
    #[error(
        "The server refused this client's id {0}: a live connection of another client holds it. \
         Two clients with the same --id? (The default is the host name, so two clients on one \
         host need an --id each.)"
    )]
    IdInUse(crate::ids::ClientId),
    /// An established connection ended.
    #[error("Server may have abruptly closed the connection ({0})")]
    Lost(DisconnectReason),
    /// The server speaks TLS and this client connected without it: the server said so with
    /// [`TLS_EXPECTED_MESSAGE`]. Never retried: a configuration error.
    #[error("The server speaks TLS: start the client with --tls (and --tls-ca)")]
    NeedsTls,
    /// This client connected with TLS and the server answered in plaintext: it does not speak
    /// TLS, or this is another port. Never retried: a configuration error.
    #[error("The server does not speak TLS: drop --tls (or check the port)")]
    NotTls,
    /// With a count, the last heartbeat got no acknowledgement within the ack timeout: the
    /// server may not have received it.
    #[error(
        "Heartbeat #{seq} was not acknowledged within {}: the server may not have received it",
        fmt_ms(*waited)
    )]
    Unacknowledged {
        /// The last heartbeat.
        seq: Seq,
        /// How long the client waited for its acknowledgement (the ack timeout).
        waited: Duration,
    },
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Output {
    /// Open a connection to the server, then call `handle_connected` or `handle_connect_failed`.
    Connect,
    /// Close the stream after writing every earlier `Transmit`.
    Disconnect {
        /// Why.
        reason: DisconnectReason,
    },
    /// Something for the application to log or count.
    Event(Event),
    /// Write all of these bytes, in order.
    Transmit(Vec<u8>),
}

/// What happened, for the application.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The server refused the `HELLO` that asked for advice: it does not know the extension.
    /// The client asks no more in this process, and connects again at once without asking
    /// (not counted as a failure). Fires once per process.
    AdviceRefused {
        /// The server's `ERROR` text.
        message: String,
    },
    /// The server advised an interval (`ADVISE`). `adopt` is the advice clamped into the
    /// client's range; when it differs from the interval in force, the client switches from
    /// its next heartbeat on ([`Event::IntervalChanged`]).
    Advised {
        /// What the server advised.
        interval: Duration,
        /// What the client will send at: the advice within `--interval-min..=--interval-max`.
        adopt: Duration,
    },
    /// An ack matched an outstanding heartbeat. Fires once per ack of a remembered heartbeat.
    Acked {
        /// The acknowledged heartbeat.
        seq: Seq,
        /// Round-trip time from send to ack, on the monotonic clock.
        rtt: Duration,
        /// The server's wall-clock receive time.
        received: UnixTime,
    },
    /// A connect attempt failed. `retry_in` is `None` when the client gives up.
    ConnectFailed {
        /// 0 for the first attempt after start or after a lost connection.
        attempt: u32,
        /// The driver's error text.
        reason: String,
        /// The backoff before the next attempt.
        retry_in: Option<Duration>,
    },
    /// The stream is up (after `handle_connected`).
    Connected {
        /// How many attempts failed before this one.
        attempt: u32,
    },
    /// An established connection ended. `retry_in` is `None` when the client gives up.
    Disconnected {
        /// Why.
        reason: DisconnectReason,
        /// The backoff before the next attempt.
        retry_in: Option<Duration>,
    },
    /// All configured heartbeats were sent (and, in v1, acked or timed out); the client ends.
    Finished {
        /// Heartbeats written.
        sent: u64,
        /// Heartbeats acknowledged.
        acked: u64,
    },
    /// Heartbeats stopped at the application's request ([`Client::pause`]). Until
    /// [`Event::Resumed`] no slot is sent, the server's silence is not held against it, and no
    /// connection is opened. Fires once per pause.
    Paused,
    /// Heartbeats go out again after [`Event::Paused`] ([`Client::resume`]). When connected, the
    /// slots that passed follow as one [`Event::Skipped`], then the heartbeat due now.
    Resumed {
        /// How long the client was paused.
        paused_for: Duration,
    },
    /// The client follows advice: from heartbeat `seq` (sent right after this, on the old
    /// schedule's slot) on it sends every `to`, and said so on the wire (`INTERVAL`). Fires
    /// before that heartbeat's [`Event::Sent`].
    IntervalChanged {
        /// The interval before.
        from: Duration,
        /// The interval from `seq` on.
        to: Duration,
        /// The first heartbeat under the new interval.
        seq: Seq,
    },
    /// A heartbeat is being sent now (the matching `Transmit` follows).
    Sent {
        /// Its sequence number.
        seq: Seq,
        /// Its wall-clock stamp.
        at: UnixTime,
        /// How late after its slot it went out.
        late: Duration,
    },
    /// No ack or welcome for `silence` while heartbeats were going out. Fires once per silence.
    ServerSilent {
        /// Time since the server was last heard.
        silence: Duration,
    },
    /// The client itself did not run for a while: it woke `late` after its earliest timer
    /// (see [`Client::is_stalled`]). Fires before the heartbeat and the `Skipped` slots of that
    /// wake; the server's silence is counted from now on.
    Stalled {
        /// How late the client woke.
        late: Duration,
    },
    /// Slots `first..=last` were not sent: the driver woke late, or the client was disconnected
    /// or paused. Reported when the next heartbeat goes out.
    Skipped {
        /// First skipped sequence number.
        first: Seq,
        /// Last skipped sequence number.
        last: Seq,
    },
    /// The server accepted the `HELLO`.
    Welcomed,
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AdviceRefused { message } => write!(
                f,
                "advice refused: server gives no advice; following none (it said {message:?})"
            ),
            Self::Advised { interval, adopt } => write!(
                f,
                "advised interval={} adopt={}",
                fmt_ms(*interval),
                fmt_ms(*adopt)
            ),
            Self::Acked { seq, rtt, received } => {
                write!(
                    f,
                    "ack seq={seq} rtt={} server_time={received}",
                    fmt_ms(*rtt)
                )
            }
            Self::ConnectFailed {
                attempt,
                reason,
                retry_in,
            } => {
                write!(f, "connect failed attempt={attempt} reason={reason:?}")?;
                retry(f, *retry_in)
            }
            Self::Connected { attempt } => write!(f, "connected attempt={attempt}"),
            Self::Disconnected { reason, retry_in } => {
                write!(f, "disconnected reason={reason:?}")?;
                retry(f, *retry_in)
            }
            Self::Finished { sent, acked } => write!(f, "finished sent={sent} acked={acked}"),
            Self::IntervalChanged { from, to, seq } => write!(
                f,
                "interval changed from={} to={} seq={seq}",
                fmt_ms(*from),
                fmt_ms(*to)
            ),
            Self::Paused => write!(f, "paused"),
            Self::Resumed { paused_for } => write!(f, "resumed after {}", fmt_ms(*paused_for)),
            Self::Sent { seq, at, late } => {
                write!(f, "sent seq={seq} at={at} late={}", fmt_ms(*late))
            }
            Self::ServerSilent { silence } => write!(f, "server silent for {}", fmt_ms(*silence)),
            Self::Stalled { late } => write!(f, "stalled for {}", fmt_ms(*late)),
            Self::Skipped { first, last } => write!(f, "skipped seq={first}-{last}"),
            Self::Welcomed => write!(f, "welcomed"),
        }
    }
}

fn retry(f: &mut fmt::Formatter<'_>, retry_in: Option<Duration>) -> fmt::Result {
    match retry_in {
        Some(d) => write!(f, " retry_in={}", fmt_ms(d)),
        None => write!(f, " giving up"),
    }
}

impl Client {
    /// A client that will connect right away (the first output is [`Output::Connect`]).
    pub fn new(config: ClientConfig, _now: Now) -> Self {
        let rng = SmallRng::seed_from_u64(config.rng_seed);
        let asking = config.follow_advice.is_some() && config.protocol == Protocol::V1;
        let interval = config.interval;
        let mut client = Self {
            config: Arc::new(config),
            state: State::Connecting { attempt: 0 },
            start: None,
            base_slot: 0,
            interval,
            advice: AdviceState {
                asking,
                ..AdviceState::default()
            },
            next_slot: 0,
            sent: 0,
            acked: 0,
            skipped: 0,
            paused: None,
            in_flight: VecDeque::new(),
            conn_first: None,
            refused_since: None,
            decoder: FrameDecoder::new(),
            rng,
            timers: TimerTable::new(),
            out: VecDeque::new(),
        };
        client.out.push_back(Output::Connect);
        client
    }

    // ---- getters ----

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// True once the client has ended; see [`exit`](Self::exit).
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done(_))
    }

    /// True while a stream is up.
    pub fn is_connected(&self) -> bool {
        matches!(
            self.state,
            State::Connected { .. } | State::Finishing { .. }
        )
    }

    /// How the client ended, once it has.
    pub fn exit(&self) -> Option<&Exit> {
        match &self.state {
            State::Done(exit) => Some(exit),
            _ => None,
        }
    }

    /// The interval in force: the configured one, or the advice it follows.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Heartbeats written so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Heartbeats acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Slots skipped so far (disconnected, paused or late), counted when the next heartbeat goes
    /// out.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// True between [`pause`](Self::pause) and [`resume`](Self::resume).
    pub fn is_paused(&self) -> bool {
        self.paused.is_some()
    }

    /// The sequence number of the last heartbeat sent.
    pub fn last_sent(&self) -> Option<Seq> {
        (self.next_slot > 0 && self.sent > 0).then_some(Seq(self.next_slot))
    }

    /// True when a wake at `now` is a stall of the client itself: `now` is later than the
    /// earliest timer by at least three intervals and at least a second. `handle_timeout(now)`
    /// then reports [`Event::Stalled`] and counts the server's silence afresh; a driver reads
    /// what the connection has for it first. Changes with `now` and after any `handle_*` call.
    pub fn is_stalled(&self, now: Instant) -> bool {
        self.stall(now).is_some()
    }

    // ---- inputs ----

    /// The connection asked for by [`Output::Connect`] is up.
    pub fn handle_connected(&mut self, now: Now) {
        let State::Connecting { attempt } = self.state else {
            debug_assert!(false, "handle_connected while {:?}", self.state);
            tracing::error!(state = ?self.state, "handle_connected called while not connecting; ignored");
            return;
        };
        self.decoder.clear();
        self.in_flight.clear();
        self.conn_first = None;
        self.advice = AdviceState {
            asking: self.advice.asking,
            asked: self.advice.asking,
            ..AdviceState::default()
        };
        let handshake = if self.config.auth_key.is_some() {
            Handshake::AwaitingChallenge
        } else {
            Handshake::Open
        };
        self.state = State::Connected {
            attempt,
            last_heard: now.mono,
            proof: Proof::Unproven,
            handshake,
        };
        self.event(Event::Connected { attempt });
        if self.config.protocol == Protocol::V1 {
            let hello = Frame::Hello {
                version: VERSION,
                client: self.config.id.clone(),
                interval: self.interval,
                session: self.config.session,
                advice: self.advice.asked,
            };
            self.out.push_back(Output::Transmit(hello.to_bytes()));
            self.arm_silence(now.mono);
        }
        if handshake == Handshake::Open {
            self.open_schedule(now);
        }
    }

    /// The connection asked for by [`Output::Connect`] could not be made; `reason` is the
    /// driver's error text.
    pub fn handle_connect_failed(&mut self, now: Now, reason: impl Into<String>) {
        let State::Connecting { attempt } = self.state else {
            debug_assert!(false, "handle_connect_failed while {:?}", self.state);
            tracing::error!(state = ?self.state, "handle_connect_failed called while not connecting; ignored");
            return;
        };
        let reason = reason.into();
        match self.config.reconnect {
            Some(backoff) => {
                let delay = backoff.delay(attempt, &mut self.rng);
                self.event(Event::ConnectFailed {
                    attempt,
                    reason,
                    retry_in: Some(delay),
                });
                self.state = State::Backoff {
                    attempt: attempt.saturating_add(1),
                };
                self.timers.set(Timer::Reconnect, now.mono + delay);
            }
            None => {
                self.event(Event::ConnectFailed {
                    attempt,
                    reason: reason.clone(),
                    retry_in: None,
                });
                self.finish(Exit::Failed(Failure::Connect(reason)));
            }
        }
    }

    /// The connection asked for by [`Output::Connect`] could not be made for a reason no retry
    /// can mend, such as [`Failure::NotTls`] (TLS on one side only): the client ends with
    /// `failure` at once, whether it reconnects or not.
    pub fn handle_connect_fatal(&mut self, _now: Now, failure: Failure) {
        let State::Connecting { attempt } = self.state else {
            debug_assert!(false, "handle_connect_fatal while {:?}", self.state);
            tracing::error!(state = ?self.state, "handle_connect_fatal called while not connecting; ignored");
            return;
        };
        self.event(Event::ConnectFailed {
            attempt,
            reason: failure.to_string(),
            retry_in: None,
        });
        self.finish(Exit::Failed(failure));
    }

    /// Bytes arrived from the server.
    pub fn handle_input(&mut self, now: Now, bytes: &[u8]) {
        if !self.is_connected() {
            tracing::debug!(len = bytes.len(), "input while not connected; ignored");
            return;
        }
        if self.config.protocol == Protocol::Legacy {
            // The seed's server never writes; anything it sends is ignored, as the seed did.
            return;
        }
        self.decoder.push(bytes);
        loop {
            match self.decoder.decode_next() {
                Ok(Some(frame)) => self.handle_frame(now, frame),
                Ok(None) => break,
                Err(e) => {
                    self.lose(now, DisconnectReason::Protocol(e), true);
                    break;
                }
            }
            if !self.is_connected() {
                break;
            }
        }
    }

    /// The server closed the stream, or reading or writing it failed.
    pub fn handle_eof(&mut self, now: Now) {
        if self.is_connected() {
            self.lose(now, DisconnectReason::ClosedByPeer, false);
        }
    }

    /// Time passed; call when [`poll_timeout`](Self::poll_timeout) is reached.
    pub fn handle_timeout(&mut self, now: Now) {
        if let Some(late) = self.stall(now.mono) {
            self.event(Event::Stalled { late });
            // The server's silence is what it was before the stall: count it from now.
            match &mut self.state {
                State::Connected { last_heard, .. } => {
                    *last_heard = now.mono;
                    self.arm_silence(now.mono);
                }
                State::Finishing { .. } => self
                    .timers
                    .set(Timer::AckTimeout, now.mono + self.ack_timeout()),
                _ => {}
            }
        }
        if self.paused.is_some() {
            // A paused client opens no connection: `resume` does, once the backoff is over.
            let _ = self.timers.take_expired(Timer::Reconnect, now.mono);
        }
        if self.timers.take_expired(Timer::Reconnect, now.mono) {
            if let State::Backoff { attempt } = self.state {
                self.state = State::Connecting { attempt };
                self.out.push_back(Output::Connect);
            }
        }
        if self.timers.take_expired(Timer::AckTimeout, now.mono) {
            if let State::Connected { last_heard, .. } = self.state {
                self.lose(
                    now,
                    DisconnectReason::AckTimeout(now.mono - last_heard),
                    true,
                );
            } else if let State::Finishing { last } = self.state {
                self.give_up_on_last(last);
            }
        }
        if self.timers.take_expired(Timer::Silence, now.mono) {
            if let State::Connected { last_heard, .. } = self.state {
                self.event(Event::ServerSilent {
                    silence: now.mono - last_heard,
                });
            }
        }
        if self.timers.take_expired(Timer::Beat, now.mono) {
            self.send_due(now);
        }
    }

    // ---- commands ----

    /// Fixes the schedule's origin at `start` (heartbeat `k` is due at `start + k × interval`)
    /// instead of the first connect: clients that must number their heartbeats alike, one per
    /// server in one process, get the same origin. Call it before the schedule starts (right
    /// after [`new`](Self::new)); later it is a caller mistake and ignored.
    pub fn start_schedule(&mut self, start: Instant) {
        if self.start.is_some() {
            debug_assert!(false, "start_schedule after the schedule started");
            tracing::error!("start_schedule called after the schedule started; ignored");
            return;
        }
        self.start = Some(start);
    }

    /// Stops the client: says goodbye (v1) and closes. Ends with [`Exit::Closed`].
    pub fn close(&mut self, _now: Now) {
        match self.state {
            State::Done(_) => {}
            State::Connected { .. } | State::Finishing { .. } => self.say_goodbye(Exit::Closed),
            State::Connecting { .. } => {
                // The driver may be mid-connect; tell it to drop whatever it opens.
                self.out.push_back(Output::Disconnect {
                    reason: DisconnectReason::Local,
                });
                self.finish(Exit::Closed);
            }
            State::Backoff { .. } => self.finish(Exit::Closed),
        }
    }

    /// Stops sending heartbeats until [`resume`](Self::resume), for an application that knows it
    /// is unhealthy (a stuck main loop, a lost database): the server then sees it go late and
    /// down, as it would a hung process.
    ///
    /// While paused, slots pass unsent and are not queued. The connection stays open, but the
    /// client asks nothing of the server, so the server's silence is neither warned about nor
    /// timed out; heartbeats still unacknowledged are not waited for. No connection is opened:
    /// one that ends meanwhile (a server restart, or a pause beyond the server's idle limit of
    /// 10 intervals and at least 5 s) is reopened by `resume`, or ends the client when it does
    /// not reconnect. [`close`](Self::close) still says goodbye.
    ///
    /// Emits [`Event::Paused`]. Pausing a paused or finished client does nothing.
    pub fn pause(&mut self, now: Now) {
        if self.paused.is_some() || self.is_done() {
            return;
        }
        self.paused = Some(now.mono);
        self.timers.stop(Timer::Beat);
        if self.is_sending() {
            self.timers.stop(Timer::Silence);
            self.timers.stop(Timer::AckTimeout);
        }
        self.event(Event::Paused);
    }

    /// Sends heartbeats again after [`pause`](Self::pause).
    ///
    /// Numbering goes on following the clock: when connected, the heartbeat due now goes out at
    /// once, after one [`Event::Skipped`] for the slots that passed, so the server counts the
    /// pause as missed heartbeats exactly once. The server's silence counts from now. A
    /// connection that ended during the pause is reopened now, or when the backoff under way
    /// ends; a pause that began before the first connection starts the schedule at seq 1 once
    /// connected.
    ///
    /// Emits [`Event::Resumed`]. Resuming a client that is not paused does nothing.
    pub fn resume(&mut self, now: Now) {
        let Some(since) = self.paused.take() else {
            return;
        };
        if self.is_done() {
            return;
        }
        self.event(Event::Resumed {
            paused_for: now.mono.saturating_duration_since(since),
        });
        match &mut self.state {
            State::Connected {
                last_heard,
                handshake: Handshake::Open,
                ..
            } => {
                // Nothing was asked of the server while paused: its silence then is no evidence.
                *last_heard = now.mono;
                if self.config.protocol == Protocol::V1 {
                    self.arm_silence(now.mono);
                }
                self.open_schedule(now);
            }
            State::Backoff { attempt } if !self.timers.is_set(Timer::Reconnect) => {
                // The backoff ended while paused.
                self.state = State::Connecting { attempt: *attempt };
                self.out.push_back(Output::Connect);
            }
            _ => {}
        }
    }

    // ---- outputs ----

    /// The next thing the driver must do. Drain to `None` after every input or command.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next; `None` when no timer runs.
    ///
    /// Changes after any `handle_*` call or command.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_timeout()
    }

    // ---- internals ----

    fn event(&mut self, e: Event) {
        self.out.push_back(Output::Event(e));
    }

    /// How late a wake at `now` is, when it is a stall (see [`is_stalled`](Self::is_stalled)).
    fn stall(&self, now: Instant) -> Option<Duration> {
        let due = self.timers.next_timeout()?;
        let late = now.saturating_duration_since(due);
        let threshold = self.interval.saturating_mul(STALL_SLOTS).max(STALL_FLOOR);
        (late >= threshold).then_some(late)
    }

    /// When slot `slot` is due: `start + (slot − base_slot) × interval` (the grid re-based
    /// where the interval last changed; no earlier slot is asked for after that).
    fn slot_due(&self, slot: u64) -> Option<Instant> {
        let start = self.start?;
        let offset = self
            .interval
            .checked_mul(u32::try_from(slot.checked_sub(self.base_slot)?).ok()?)?;
        start.checked_add(offset)
    }

    /// The slot whose time has come at `now` (the latest with `due <= now`).
    fn current_slot(&self, now: Instant) -> u64 {
        let Some(start) = self.start else { return 0 };
        let elapsed = now.saturating_duration_since(start).as_nanos();
        let slots = u64::try_from(elapsed / self.interval.as_nanos()).unwrap_or(u64::MAX);
        self.base_slot.saturating_add(slots)
    }

    /// The ack timeout in force: the configured one, and, once advice changed the interval,
    /// at least five intervals (a slower interval must not outlast it).
    fn ack_timeout(&self) -> Duration {
        if self.interval == self.config.interval {
            self.config.ack_timeout
        } else {
            self.config.ack_timeout.max(self.interval.saturating_mul(5))
        }
    }

    /// Adopts the pending advice, if any, for heartbeat `seq` of slot `slot`, about to go out:
    /// the grid is re-based at that slot's due time on the old grid (so it goes out as it
    /// would have), every later slot follows at the new interval, and `INTERVAL` tells the
    /// server right before the heartbeat.
    fn adopt_advice(&mut self, slot: u64, seq: Seq) {
        if !self.advice.negotiated {
            return;
        }
        let Some(to) = self.advice.pending.take() else {
            return;
        };
        if to == self.interval {
            return;
        }
        if let Some(due) = self.slot_due(slot) {
            self.start = Some(due);
            self.base_slot = slot;
        }
        let from = std::mem::replace(&mut self.interval, to);
        self.event(Event::IntervalChanged { from, to, seq });
        let frame = Frame::Interval { interval: to, seq };
        self.out.push_back(Output::Transmit(frame.to_bytes()));
    }

    /// `ADVISE`: clamps the advice into the client's range and adopts it from the next
    /// heartbeat on (or drops a pending change, when the advice is the interval in force).
    fn on_advice(&mut self, now: Now, interval: Duration) {
        let Some((min, max)) = self.config.follow_advice.filter(|_| self.advice.negotiated) else {
            self.lose(
                now,
                DisconnectReason::Protocol(DecodeError::Unexpected {
                    got: "ADVISE",
                    when: "without advice negotiated",
                }),
                true,
            );
            return;
        };
        let adopt = interval.clamp(min, max);
        self.advice.pending = (adopt != self.interval).then_some(adopt);
        self.event(Event::Advised { interval, adopt });
    }

    /// An `ERROR` before `WELCOME` on a connection whose `HELLO` asked for advice, other than
    /// the refusals the client knows: a server that does not know the extension (it refuses
    /// the extra field). The client asks no more, and connects again at once without the
    /// token, neither counted as a failure nor backed off. True when it did so.
    fn advice_refused(&mut self, message: &str) -> bool {
        let State::Connected { attempt, .. } = self.state else {
            return false;
        };
        if !self.advice.asked
            || self.advice.welcomed
            || message == TLS_EXPECTED_MESSAGE
            || message == id_in_use_message(&self.config.id)
            || message == AUTH_FAILED_MESSAGE
        {
            return false;
        }
        self.advice = AdviceState::default();
        self.event(Event::AdviceRefused {
            message: message.to_owned(),
        });
        self.out.push_back(Output::Disconnect {
            reason: DisconnectReason::ServerError(message.to_owned()),
        });
        self.timers.stop_all();
        self.state = State::Connecting { attempt };
        self.out.push_back(Output::Connect);
        true
    }

    /// True when heartbeats may go out on the connection (it is up, and answered the challenge
    /// if there was one), paused or not.
    fn is_sending(&self) -> bool {
        matches!(
            self.state,
            State::Connected {
                handshake: Handshake::Open,
                ..
            }
        )
    }

    /// Heartbeats may go out on this connection: starts the schedule on the first one, and
    /// sends what is due. While paused, it waits for `resume`.
    fn open_schedule(&mut self, now: Now) {
        if self.paused.is_some() {
            return;
        }
        if self.start.is_none() {
            self.start = Some(now.mono);
        }
        self.send_due(now);
    }

    /// Sends the heartbeat due now, if any, reporting skipped slots, and arms the next slot.
    fn send_due(&mut self, now: Now) {
        if self.paused.is_some() {
            return;
        }
        if !matches!(
            self.state,
            State::Connected {
                handshake: Handshake::Open,
                ..
            }
        ) {
            return;
        }
        let current = self.current_slot(now.mono);
        if current >= self.next_slot {
            if current > self.next_slot {
                let (first, last) = (Seq(self.next_slot + 1), Seq(current));
                self.skipped += current - self.next_slot;
                self.event(Event::Skipped { first, last });
            }
            let seq = Seq(current + 1);
            let late = self.slot_due(current).map_or(Duration::ZERO, |due| {
                now.mono.saturating_duration_since(due)
            });
            if self.config.protocol == Protocol::V1 {
                self.adopt_advice(current, seq);
            }
            self.next_slot = current + 1;
            self.sent += 1;
            self.conn_first.get_or_insert(seq);
            self.event(Event::Sent {
                seq,
                at: now.unix,
                late,
            });
            let bytes = match self.config.protocol {
                Protocol::V1 => {
                    if self.in_flight.len() == MAX_IN_FLIGHT {
                        self.in_flight.pop_front();
                    }
                    self.in_flight.push_back((seq, now.mono));
                    Frame::Beat {
                        seq,
                        sent: now.unix,
                    }
                    .to_bytes()
                }
                Protocol::Legacy => {
                    // No acks come in the legacy format: a written heartbeat is all the proof.
                    self.carried(now.mono);
                    LegacyBeat {
                        seq,
                        sent: now.unix,
                    }
                    .to_bytes()
                }
            };
            self.out.push_back(Output::Transmit(bytes));
            let finished = self.config.count.is_some_and(|n| self.sent >= n);
            if self.config.protocol == Protocol::Legacy && !finished {
                // No acks to wait for.
                self.park_if_per_beat(now);
                if !matches!(self.state, State::Connected { .. }) {
                    return;
                }
            }
            if finished {
                self.timers.stop(Timer::Beat);
                if self.config.protocol == Protocol::V1 {
                    self.state = State::Finishing { last: seq };
                    self.timers.stop(Timer::Silence);
                    self.timers
                        .set(Timer::AckTimeout, now.mono + self.ack_timeout());
                } else {
                    self.say_goodbye(Exit::Finished);
                }
                return;
            }
        }
        match self.slot_due(self.next_slot) {
            Some(due) => self.timers.set(Timer::Beat, due),
            None => self.timers.stop(Timer::Beat),
        }
    }

    fn handle_frame(&mut self, now: Now, frame: Frame) {
        if let State::Connected {
            handshake: Handshake::AwaitingChallenge,
            ..
        } = self.state
        {
            // With a key, the server's first word must be its challenge (or a refusal).
            match frame {
                Frame::Challenge { nonce } => self.answer(now, nonce),
                Frame::Error { message } if message == TLS_EXPECTED_MESSAGE => {
                    self.end(DisconnectReason::ServerError(message), Failure::NeedsTls)
                }
                Frame::Error { message } if self.advice_refused(&message) => {}
                Frame::Error { message } => {
                    self.lose(now, DisconnectReason::ServerError(message), true)
                }
                _ => self.end(DisconnectReason::NotChallenged, Failure::Downgrade),
            }
            return;
        }
        match frame {
            Frame::Ack { seq, received } => {
                if !self.was_sent_here(seq) {
                    self.lose(
                        now,
                        DisconnectReason::Protocol(DecodeError::UnsentAck(seq)),
                        true,
                    );
                    return;
                }
                self.heard(now.mono);
                self.carried(now.mono);
                while let Some(&(s, sent_at)) = self.in_flight.front() {
                    if s > seq {
                        break;
                    }
                    self.in_flight.pop_front();
                    if s == seq {
                        self.acked += 1;
                        self.event(Event::Acked {
                            seq,
                            rtt: now.mono - sent_at,
                            received,
                        });
                    }
                }
                if let State::Finishing { last } = self.state {
                    if seq >= last {
                        self.say_goodbye(Exit::Finished);
                    }
                }
                if self.in_flight.is_empty() {
                    self.park_if_per_beat(now);
                }
            }
            Frame::Welcome { advice, .. } => {
                self.heard(now.mono);
                self.refused_since = None;
                self.advice.welcomed = true;
                self.advice.negotiated = advice && self.advice.asked;
                self.event(Event::Welcomed);
            }
            Frame::Advise { interval } => self.on_advice(now, interval),
            Frame::Error { message } if message == id_in_use_message(&self.config.id) => {
                self.id_refused(now, message);
            }
            Frame::Error { message } if message == TLS_EXPECTED_MESSAGE => {
                self.end(DisconnectReason::ServerError(message), Failure::NeedsTls)
            }
            Frame::Error { message } if self.advice_refused(&message) => {}
            Frame::Error { message } => {
                self.lose(now, DisconnectReason::ServerError(message), true)
            }
            Frame::Challenge { .. } if self.config.auth_key.is_none() => {
                self.lose(now, DisconnectReason::AuthRequired, true)
            }
            other => {
                let got = other.command();
                self.lose(
                    now,
                    DisconnectReason::Protocol(DecodeError::Unexpected {
                        got,
                        when: "from a server",
                    }),
                    true,
                );
            }
        }
    }

    /// Answers the server's challenge with `AUTH`, then lets heartbeats go out. The server was
    /// heard from, but has not acknowledged a heartbeat yet: the connection proves nothing.
    fn answer(&mut self, now: Now, nonce: Nonce) {
        let Some(key) = &self.config.auth_key else {
            debug_assert!(false, "awaiting a challenge without a key");
            return;
        };
        let c = &self.config;
        let answer = Answer::compute(key, &nonce, &c.id, self.interval, c.session);
        self.out
            .push_back(Output::Transmit(Frame::Auth { answer }.to_bytes()));
        if let State::Connected {
            last_heard,
            handshake,
            ..
        } = &mut self.state
        {
            *last_heard = now.mono;
            *handshake = Handshake::Open;
        }
        self.arm_silence(now.mono);
        self.open_schedule(now);
    }

    /// The server refused the client's id under the identity rule. Retried (with reconnecting
    /// on) while the refusals may still be the client's own previous run's half-open connection,
    /// which the server drops after its idle timeout; after that, or without reconnecting, it
    /// is another client with the same id, and the client ends ([`Failure::IdInUse`]).
    fn id_refused(&mut self, now: Now, message: String) {
        let since = *self.refused_since.get_or_insert(now.mono);
        let reason = DisconnectReason::ServerError(message);
        let patient = now.mono.saturating_duration_since(since) < self.config.id_patience;
        if self.config.reconnect.is_some() && patient {
            self.lose(now, reason, true);
            return;
        }
        self.out.push_back(Output::Disconnect {
            reason: reason.clone(),
        });
        self.event(Event::Disconnected {
            reason,
            retry_in: None,
        });
        self.finish(Exit::Failed(Failure::IdInUse(self.config.id.clone())));
    }

    /// Closes the connection and ends for good with `failure`, reconnecting or not: for what no
    /// retry can mend (a server that did not challenge a client with a key can never be made
    /// safe to talk to; a TLS server never speaks plaintext).
    fn end(&mut self, reason: DisconnectReason, failure: Failure) {
        self.out.push_back(Output::Disconnect {
            reason: reason.clone(),
        });
        self.event(Event::Disconnected {
            reason,
            retry_in: None,
        });
        self.finish(Exit::Failed(failure));
    }

    /// With a count, the last heartbeat `last` got no acknowledgement within the ack timeout:
    /// say goodbye all the same (the server keeps its verdict), and fail.
    fn give_up_on_last(&mut self, last: Seq) {
        let waited = self.ack_timeout();
        self.out.push_back(Output::Transmit(Frame::Bye.to_bytes()));
        self.out.push_back(Output::Disconnect {
            reason: DisconnectReason::AckTimeout(waited),
        });
        self.event(Event::Finished {
            sent: self.sent,
            acked: self.acked,
        });
        self.finish(Exit::Failed(Failure::Unacknowledged { seq: last, waited }));
    }

    /// In per-beat mode, with every heartbeat sent so far acknowledged (v1) or written
    /// (legacy): closes the connection without a goodbye and waits for the next slot, when the
    /// reconnect timer connects again.
    fn park_if_per_beat(&mut self, now: Now) {
        if !self.config.connect_per_beat || !matches!(self.state, State::Connected { .. }) {
            return;
        }
        let Some(due) = self.slot_due(self.next_slot) else {
            return;
        };
        let reason = DisconnectReason::UntilNextBeat;
        self.out.push_back(Output::Disconnect {
            reason: reason.clone(),
        });
        self.timers.stop_all();
        self.event(Event::Disconnected {
            reason,
            retry_in: Some(due.saturating_duration_since(now.mono)),
        });
        self.state = State::Backoff { attempt: 0 };
        self.timers.set(Timer::Reconnect, due);
    }

    /// True when heartbeat `seq` went out on the current connection: an `ACK` naming any other
    /// is a protocol error of the server (it acknowledges what it never received).
    fn was_sent_here(&self, seq: Seq) -> bool {
        self.conn_first
            .is_some_and(|first| first <= seq && seq <= Seq(self.next_slot))
    }

    /// The connection carried a heartbeat at `now` (acknowledged; legacy: written): it is
    /// proven once it has carried them for an ack timeout (see [`Proof`]).
    fn carried(&mut self, now: Instant) {
        let ack_timeout = self.ack_timeout();
        if let State::Connected { proof, .. } = &mut self.state {
            *proof = match *proof {
                Proof::Unproven => Proof::Since(now),
                Proof::Since(since) if now.saturating_duration_since(since) >= ack_timeout => {
                    Proof::Proven
                }
                other => other,
            };
        }
    }

    /// The server was heard from: reset the silence and ack timers.
    fn heard(&mut self, now: Instant) {
        if let State::Connected { last_heard, .. } = &mut self.state {
            *last_heard = now;
        }
        if matches!(self.state, State::Connected { .. }) {
            self.arm_silence(now);
        }
    }

    fn arm_silence(&mut self, from: Instant) {
        if self.paused.is_some() && self.is_sending() {
            // Paused: nothing is asked of the server, so its silence means nothing.
            self.timers.stop(Timer::Silence);
            self.timers.stop(Timer::AckTimeout);
            return;
        }
        // Floored at 1 s: a few 10 ms intervals without an ack is ordinary network jitter.
        let silence = (self.interval * self.config.silence_intervals).max(Duration::from_secs(1));
        if silence < self.ack_timeout() {
            self.timers.set(Timer::Silence, from + silence);
        }
        self.timers
            .set(Timer::AckTimeout, from + self.ack_timeout());
    }

    /// The connection is gone or must go: reconnect or fail.
    fn lose(&mut self, now: Now, reason: DisconnectReason, close_stream: bool) {
        let attempt = match self.state {
            // A connection that did not carry acknowledged heartbeats for an ack timeout keeps
            // escalating the backoff, however welcoming the server was.
            State::Connected {
                attempt,
                proof: Proof::Unproven | Proof::Since(_),
                ..
            } => attempt.saturating_add(1),
            _ => 0,
        };
        if close_stream {
            self.out.push_back(Output::Disconnect {
                reason: reason.clone(),
            });
        }
        self.timers.stop_all();
        if let State::Finishing { .. } = self.state {
            // The last heartbeat was not acknowledged (its ack ends the client before any
            // loss): the server refused it, or went away before its verdict.
            self.event(Event::Disconnected {
                reason: reason.clone(),
                retry_in: None,
            });
            self.event(Event::Finished {
                sent: self.sent,
                acked: self.acked,
            });
            self.finish(Exit::Failed(Failure::Lost(reason)));
            return;
        }
        match self.config.reconnect {
            Some(backoff) => {
                let delay = backoff.delay(attempt, &mut self.rng);
                self.event(Event::Disconnected {
                    reason,
                    retry_in: Some(delay),
                });
                self.state = State::Backoff { attempt };
                self.timers.set(Timer::Reconnect, now.mono + delay);
            }
            None => {
                self.event(Event::Disconnected {
                    reason: reason.clone(),
                    retry_in: None,
                });
                self.finish(Exit::Failed(Failure::Lost(reason)));
            }
        }
    }

    fn say_goodbye(&mut self, exit: Exit) {
        // Before the challenge is answered the server knows no client here to say goodbye for.
        let unanswered = matches!(
            self.state,
            State::Connected {
                handshake: Handshake::AwaitingChallenge,
                ..
            }
        );
        if self.config.protocol == Protocol::V1 && !unanswered {
            self.out.push_back(Output::Transmit(Frame::Bye.to_bytes()));
        }
        let reason = if exit == Exit::Finished {
            DisconnectReason::Finished
        } else {
            DisconnectReason::Local
        };
        self.out.push_back(Output::Disconnect { reason });
        if exit == Exit::Finished {
            self.event(Event::Finished {
                sent: self.sent,
                acked: self.acked,
            });
        }
        self.finish(exit);
    }

    fn finish(&mut self, exit: Exit) {
        self.timers.stop_all();
        self.state = State::Done(exit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Backoff;
    use crate::error::ConfigError;
    use crate::ids::ClientId;

    fn origin() -> Now {
        Now::test_origin()
    }

    fn config(interval_ms: u64) -> ClientConfig {
        ClientConfig::new(
            ClientId::new("c1").unwrap(),
            Duration::from_millis(interval_ms),
        )
        .unwrap()
    }

    /// A client with `config`, connected at a fresh origin, its first outputs drained.
    fn connected(config: ClientConfig) -> (Now, Client) {
        let t0 = origin();
        let mut c = Client::new(config, t0);
        let _ = drain(&mut c);
        c.handle_connected(t0);
        let _ = drain(&mut c);
        (t0, c)
    }

    fn drain(c: &mut Client) -> Vec<Output> {
        std::iter::from_fn(|| c.poll_output()).collect()
    }

    /// `c` has ended, failed: the server was silent for the whole ack timeout (5 s).
    fn assert_lost_to_the_ack_timeout(c: &Client) {
        assert_eq!(
            c.exit(),
            Some(&Exit::Failed(Failure::Lost(DisconnectReason::AckTimeout(
                Duration::from_secs(5)
            ))))
        );
    }

    fn text(outs: &[Output]) -> Vec<String> {
        outs.iter()
            .map(|o| match o {
                Output::Transmit(b) => format!("tx {}", String::from_utf8_lossy(b).trim_end()),
                Output::Event(e) => format!("ev {e}"),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn connects_says_hello_and_sends_on_a_fixed_grid() {
        let t0 = origin();
        let mut c = Client::new(config(100).session(0xab), t0);
        assert_eq!(drain(&mut c), vec![Output::Connect]);
        c.handle_connected(t0);
        assert_eq!(
            text(&drain(&mut c)),
            [
                "ev connected attempt=0",
                "tx HELLO 1 c1 100 00000000000000ab",
                "ev sent seq=1 at=1700000000.000000 late=0.000ms",
                "tx BEAT 1 1700000000.000000",
            ]
        );
        assert_eq!(c.poll_timeout(), Some(t0.mono + Duration::from_millis(100)));
        // Waking 7 ms late does not shift the next slot.
        let t = t0.advanced(Duration::from_millis(107));
        c.handle_timeout(t);
        assert_eq!(
            text(&drain(&mut c))[0],
            "ev sent seq=2 at=1700000000.107000 late=7.000ms"
        );
        assert_eq!(c.poll_timeout(), Some(t0.mono + Duration::from_millis(200)));
    }

    #[test]
    fn early_timeout_does_nothing() {
        let (t0, mut c) = connected(config(100));
        c.handle_timeout(t0.advanced(Duration::from_millis(99)));
        assert_eq!(drain(&mut c), vec![]);
    }

    #[test]
    fn waking_late_skips_slots_instead_of_bursting() {
        let (t0, mut c) = connected(config(10));
        c.handle_timeout(t0.advanced(Duration::from_millis(55)));
        let outs = text(&drain(&mut c));
        assert_eq!(outs[0], "ev skipped seq=2-5");
        assert_eq!(outs[1], "ev sent seq=6 at=1700000000.055000 late=5.000ms");
        assert_eq!(outs.len(), 3);
        assert_eq!((c.sent(), c.skipped()), (2, 4));
        assert_eq!(c.poll_timeout(), Some(t0.mono + Duration::from_millis(60)));
    }

    #[test]
    fn acks_give_rtt_samples() {
        let (t0, mut c) = connected(config(100));
        c.handle_input(
            t0.advanced(Duration::from_millis(3)),
            b"WELCOME 1\nACK 1 1700000000.001",
        );
        assert_eq!(text(&drain(&mut c)), ["ev welcomed"]);
        c.handle_input(t0.advanced(Duration::from_millis(4)), b"500\n");
        assert_eq!(
            text(&drain(&mut c)),
            ["ev ack seq=1 rtt=4.000ms server_time=1700000000.001500"]
        );
        assert_eq!(c.acked(), 1);
    }

    #[test]
    fn silent_server_is_warned_about_then_dropped() {
        let (t0, mut c) = connected(config(1000));
        let mut log = Vec::new();
        let mut now = t0;
        while let Some(at) = c.poll_timeout() {
            now = Now {
                mono: at,
                unix: t0.unix.saturating_add(at - t0.mono),
            };
            c.handle_timeout(now);
            log.extend(
                text(&drain(&mut c))
                    .into_iter()
                    .filter(|l| !l.starts_with("tx BEAT")),
            );
        }
        assert_eq!(now.mono - t0.mono, Duration::from_secs(5));
        assert!(
            log.contains(&"ev server silent for 3000.000ms".to_string()),
            "{log:?}"
        );
        assert!(
            log.contains(&"Disconnect { reason: AckTimeout(5s) }".to_string()),
            "{log:?}"
        );
        assert_lost_to_the_ack_timeout(&c);
    }

    #[test]
    fn reconnect_keeps_sequence_numbers_following_the_clock() {
        let t0 = origin();
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).unwrap();
        let mut c = Client::new(config(100).reconnect(Some(backoff)).rng_seed(7), t0);
        let _ = drain(&mut c);
        c.handle_connected(t0);
        c.handle_input(t0, b"WELCOME 1\n");
        let _ = drain(&mut c);
        c.handle_eof(t0.advanced(Duration::from_millis(150)));
        let outs = drain(&mut c);
        let Some(Output::Event(Event::Disconnected {
            retry_in: Some(d), ..
        })) = outs.first()
        else {
            panic!("{outs:?}")
        };
        // A WELCOME proves nothing: the connection ended before it carried acknowledged
        // heartbeats for an ack timeout, so the backoff escalates (attempt 1: 100 ms nominal).
        assert!(*d >= Duration::from_millis(100) && *d <= Duration::from_millis(200));
        let at = t0.advanced(Duration::from_millis(150) + *d);
        c.handle_timeout(at);
        assert_eq!(drain(&mut c), vec![Output::Connect]);
        let at = t0.advanced(Duration::from_millis(420));
        c.handle_connected(at);
        let outs = text(&drain(&mut c));
        assert_eq!(outs[2], "ev skipped seq=2-4");
        assert_eq!(outs[3], "ev sent seq=5 at=1700000000.420000 late=20.000ms");
    }

    #[test]
    fn first_connect_failure_without_reconnect_fails_like_the_seed() {
        let t0 = origin();
        let mut c = Client::new(config(100), t0);
        let _ = drain(&mut c);
        c.handle_connect_failed(t0, "Connection refused (os error 111)");
        let _ = drain(&mut c);
        let exit = c.exit().unwrap();
        assert!(!exit.is_success());
        let Exit::Failed(f) = exit else { panic!() };
        assert_eq!(
            f.to_string(),
            "Failed to connect to server: Connection refused (os error 111)"
        );
        assert_eq!(c.poll_timeout(), None);
    }

    #[test]
    fn count_waits_for_the_last_ack_then_says_bye() {
        let (t0, mut c) = connected(config(10).count(Some(2)).unwrap());
        c.handle_timeout(t0.advanced(Duration::from_millis(10)));
        let _ = drain(&mut c);
        assert!(!c.is_done());
        c.handle_input(
            t0.advanced(Duration::from_millis(11)),
            b"ACK 1 1.0\nACK 2 1.0\n",
        );
        let outs = text(&drain(&mut c));
        assert_eq!(
            outs[2..],
            [
                "tx BYE",
                "Disconnect { reason: Finished }",
                "ev finished sent=2 acked=2"
            ]
        );
        assert_eq!(c.exit(), Some(&Exit::Finished));
    }

    #[test]
    fn count_fails_when_the_last_heartbeat_is_refused_instead_of_acked() {
        for (reply, reason) in [
            (
                &b"ERROR authentication failed\n"[..],
                DisconnectReason::ServerError("authentication failed".to_owned()),
            ),
            (
                b"CHALLENGE 00112233445566778899aabbccddeeff\n",
                DisconnectReason::AuthRequired,
            ),
        ] {
            let (t0, mut c) = connected(config(10).count(Some(1)).unwrap());
            assert_eq!(c.sent(), 1);
            c.handle_input(t0.advanced(Duration::from_millis(1)), reply);
            let _ = drain(&mut c);
            assert_eq!(c.exit(), Some(&Exit::Failed(Failure::Lost(reason))));
        }
        // The server closing before its verdict fails too.
        let (t0, mut c) = connected(config(10).count(Some(1)).unwrap());
        c.handle_eof(t0.advanced(Duration::from_millis(1)));
        assert_eq!(
            c.exit(),
            Some(&Exit::Failed(Failure::Lost(DisconnectReason::ClosedByPeer)))
        );
    }

    #[test]
    fn count_fails_when_the_last_heartbeat_is_not_acked_within_the_ack_timeout() {
        let (t0, mut c) = connected(config(1000).count(Some(1)).unwrap());
        let waited = c.config().ack_timeout_value();
        assert_eq!(c.poll_timeout(), Some(t0.mono + waited));
        c.handle_timeout(t0.advanced(waited));
        assert_eq!(
            text(&drain(&mut c)),
            [
                "tx BYE".to_owned(),
                format!("Disconnect {{ reason: AckTimeout({waited:?}) }}"),
                "ev finished sent=1 acked=0".to_owned(),
            ]
        );
        assert_eq!(
            c.exit(),
            Some(&Exit::Failed(Failure::Unacknowledged {
                seq: Seq(1),
                waited
            }))
        );
        assert_eq!(c.poll_timeout(), None);
    }

    #[test]
    fn a_tls_server_ends_a_plaintext_client_even_when_reconnecting() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).unwrap();
        let line = format!("ERROR {TLS_EXPECTED_MESSAGE}\n");
        for config in [config(100), keyed(100)] {
            let (t0, mut c) = connected(config.reconnect(Some(backoff)));
            c.handle_input(t0, line.as_bytes());
            let outs = drain(&mut c);
            assert!(!outs.contains(&Output::Connect), "{outs:?}");
            assert_eq!(c.exit(), Some(&Exit::Failed(Failure::NeedsTls)));
            assert_eq!(c.poll_timeout(), None);
        }
    }

    #[test]
    fn a_fatal_connect_failure_ends_the_client_even_when_reconnecting() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).unwrap();
        let t0 = origin();
        let mut c = Client::new(config(100).reconnect(Some(backoff)), t0);
        assert_eq!(drain(&mut c), vec![Output::Connect]);
        c.handle_connect_fatal(t0, Failure::NotTls);
        assert_eq!(
            text(&drain(&mut c)),
            [format!(
                "ev connect failed attempt=0 reason={:?} giving up",
                Failure::NotTls.to_string()
            )]
        );
        assert_eq!(c.exit(), Some(&Exit::Failed(Failure::NotTls)));
        assert_eq!(c.poll_timeout(), None);
    }

    #[test]
    fn legacy_mode_speaks_the_seed_format_and_ignores_acks() {
        let t0 = origin();
        let mut c = Client::new(
            config(1000).legacy(true).unwrap().count(Some(1)).unwrap(),
            t0,
        );
        let _ = drain(&mut c);
        c.handle_connected(t0);
        let outs = text(&drain(&mut c));
        assert_eq!(
            outs[2],
            "tx Sequence #1: Sending heartbeat at 1700000000.0000."
        );
        assert_eq!(c.exit(), Some(&Exit::Finished));
    }

    #[test]
    fn server_error_frame_drops_the_connection() {
        let (t0, mut c) = connected(config(100));
        c.handle_input(t0, b"ERROR go away\n");
        let outs = drain(&mut c);
        assert_eq!(
            outs[0],
            Output::Disconnect {
                reason: DisconnectReason::ServerError("go away".into())
            }
        );
        assert!(c.is_done());
    }
    const KEY: &str = "client-key-0123456789";

    fn keyed(interval_ms: u64) -> ClientConfig {
        config(interval_ms)
            .session(0x7)
            .auth_key(Some(crate::auth::Secret::new(KEY).unwrap()))
            .unwrap()
    }

    #[test]
    fn with_a_key_no_heartbeat_goes_out_before_the_challenge_is_answered() {
        let (t0, mut c) = connected(keyed(100));
        // HELLO went out (drained by `connected`), and nothing else, even once slots are due.
        c.handle_timeout(t0.advanced(Duration::from_millis(250)));
        assert_eq!(text(&drain(&mut c)), Vec::<String>::new());
        let nonce = crate::auth::Nonce([0x11; crate::auth::NONCE_LEN]);
        let t = t0.advanced(Duration::from_millis(260));
        c.handle_input(t, format!("CHALLENGE {nonce}\n").as_bytes());
        let answer = Answer::compute(
            &crate::auth::Secret::new(KEY).unwrap(),
            &nonce,
            &ClientId::new("c1").unwrap(),
            Duration::from_millis(100),
            0x7,
        );
        // The schedule starts at the answer: heartbeat 1 goes out right behind AUTH.
        assert_eq!(
            text(&drain(&mut c)),
            [
                format!("tx AUTH {answer}"),
                "ev sent seq=1 at=1700000000.260000 late=0.000ms".to_owned(),
                "tx BEAT 1 1700000000.260000".to_owned(),
            ]
        );
        c.handle_input(t, b"WELCOME 1\nACK 1 1700000000.261\n");
        assert_eq!(text(&drain(&mut c))[0], "ev welcomed");
    }

    #[test]
    fn a_key_holder_refuses_a_server_that_does_not_challenge_even_when_reconnecting() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).unwrap();
        for reply in [&b"WELCOME 1\n"[..], b"ACK 1 1.0\n"] {
            let (t0, mut c) = connected(keyed(100).reconnect(Some(backoff)));
            c.handle_input(t0, reply);
            assert_eq!(
                text(&drain(&mut c)),
                [
                    "Disconnect { reason: NotChallenged }",
                    "ev disconnected reason=NotChallenged giving up",
                ]
            );
            assert_eq!(c.exit(), Some(&Exit::Failed(Failure::Downgrade)));
            assert_eq!(c.sent(), 0);
            assert_eq!(c.poll_timeout(), None);
        }
    }

    #[test]
    fn a_refusal_before_the_challenge_is_a_server_error() {
        let (t0, mut c) = connected(keyed(100));
        c.handle_input(t0, b"ERROR authentication failed\n");
        assert_eq!(
            c.exit(),
            Some(&Exit::Failed(Failure::Lost(DisconnectReason::ServerError(
                "authentication failed".into()
            ))))
        );
    }

    #[test]
    fn a_keyless_client_asked_to_authenticate_says_why_it_cannot() {
        let (t0, mut c) = connected(config(100));
        c.handle_input(t0, b"CHALLENGE 00000000000000000000000000000000\n");
        assert_eq!(
            drain(&mut c)[0],
            Output::Disconnect {
                reason: DisconnectReason::AuthRequired
            }
        );
        assert!(c.is_done());
    }

    #[test]
    fn stopping_before_the_challenge_sends_no_goodbye() {
        let (t0, mut c) = connected(keyed(100));
        c.close(t0);
        assert_eq!(text(&drain(&mut c)), ["Disconnect { reason: Local }"]);
        assert_eq!(c.exit(), Some(&Exit::Closed));
    }

    #[test]
    fn per_beat_mode_connects_for_each_heartbeat_and_never_says_goodbye() {
        let hour = Duration::from_secs(3600);
        let config = ClientConfig::new(ClientId::new("c1").unwrap(), hour)
            .unwrap()
            .connect_per_beat(true);
        let t0 = origin();
        let mut c = Client::new(config, t0);
        assert_eq!(drain(&mut c), [Output::Connect]);
        c.handle_connected(t0);
        let out = text(&drain(&mut c));
        assert_eq!(out[1], "tx HELLO 1 c1 3600000");
        assert!(out[3].starts_with("tx BEAT 1 "), "{out:?}");
        let t1 = t0.advanced(Duration::from_millis(3));
        c.handle_input(t1, b"WELCOME 1\nACK 1 1.0\n");
        let out = drain(&mut c);
        assert_eq!(
            out[out.len() - 2..],
            [
                Output::Disconnect {
                    reason: DisconnectReason::UntilNextBeat
                },
                Output::Event(Event::Disconnected {
                    reason: DisconnectReason::UntilNextBeat,
                    retry_in: Some(hour - Duration::from_millis(3)),
                }),
            ]
        );
        assert!(!c.is_connected());
        assert_eq!(c.poll_timeout(), Some(t0.mono + hour));
        // The next slot: connect, HELLO, the heartbeat due then; no slot skipped, no BYE.
        let t2 = t0.advanced(hour);
        c.handle_timeout(t2);
        assert_eq!(drain(&mut c), [Output::Connect]);
        let t3 = t2.advanced(Duration::from_millis(2));
        c.handle_connected(t3);
        let out = text(&drain(&mut c));
        assert!(out.iter().any(|l| l.starts_with("tx BEAT 2 ")), "{out:?}");
        assert!(
            !out.iter()
                .any(|l| l.contains("skipped") || l.contains("BYE")),
            "{out:?}"
        );
        c.handle_input(t3, b"WELCOME 1\nACK 2 1.0\n");
        assert_eq!(c.poll_timeout(), Some(t0.mono + 2 * hour));
        assert_eq!((c.sent(), c.acked(), c.skipped()), (2, 2, 0));
    }

    #[test]
    fn a_stalled_client_says_so_and_gives_the_server_a_fresh_silence() {
        let (t0, mut c) = connected(config(1000));
        c.handle_input(t0, b"WELCOME 1\nACK 1 1700000000.0\n");
        let _ = drain(&mut c);
        // Scheduling jitter is no stall; six seconds without running is (three slots and 1 s).
        assert!(!c.is_stalled(t0.mono + Duration::from_millis(1500)));
        let woke = t0.advanced(Duration::from_millis(6500));
        assert!(c.is_stalled(woke.mono));
        c.handle_timeout(woke);
        assert_eq!(
            text(&drain(&mut c)),
            [
                "ev stalled for 5500.000ms",
                "ev skipped seq=2-6",
                "ev sent seq=7 at=1700000006.500000 late=500.000ms",
                "tx BEAT 7 1700000006.500000",
            ]
        );
        assert!(c.is_connected(), "the server is not blamed for the stall");
        // The server's silence counts from the wake: the ack timeout (5 s) is 5 s away.
        let mut now = woke;
        while let Some(at) = c.poll_timeout() {
            now = Now {
                mono: at,
                unix: woke.unix.saturating_add(at - woke.mono),
            };
            c.handle_timeout(now);
            let _ = drain(&mut c);
            if c.is_done() {
                break;
            }
        }
        assert_eq!(now.mono - woke.mono, Duration::from_secs(5));
        assert_lost_to_the_ack_timeout(&c);
    }

    #[test]
    fn a_pause_skips_slots_and_resume_reports_them_once_on_the_grid() {
        let (t0, mut c) = connected(config(100));
        c.handle_input(t0, b"WELCOME 1\nACK 1 1.0\n");
        let _ = drain(&mut c);
        c.pause(t0.advanced(Duration::from_millis(50)));
        assert_eq!(text(&drain(&mut c)), ["ev paused"]);
        assert!(c.is_paused());
        // Nothing to wake for: no slot, no silence to watch.
        assert_eq!(c.poll_timeout(), None);
        c.handle_timeout(t0.advanced(Duration::from_secs(60)));
        c.pause(t0.advanced(Duration::from_secs(61)));
        assert_eq!(drain(&mut c), []);
        c.resume(t0.advanced(Duration::from_millis(1050)));
        assert_eq!(
            text(&drain(&mut c)),
            [
                "ev resumed after 1000.000ms",
                "ev skipped seq=2-10",
                "ev sent seq=11 at=1700000001.050000 late=50.000ms",
                "tx BEAT 11 1700000001.050000",
            ]
        );
        assert_eq!(
            c.poll_timeout(),
            Some(t0.mono + Duration::from_millis(1100))
        );
        assert_eq!((c.sent(), c.skipped(), c.is_paused()), (2, 9, false));
        c.resume(t0.advanced(Duration::from_millis(1060)));
        assert_eq!(drain(&mut c), []);
    }

    #[test]
    fn a_paused_client_holds_no_silence_against_the_server() {
        let (t0, mut c) = connected(config(1000));
        // Heartbeat 1 is never acknowledged: not waited for while paused.
        c.pause(t0.advanced(Duration::from_millis(500)));
        let _ = drain(&mut c);
        c.handle_input(t0.advanced(Duration::from_secs(1)), b"WELCOME 1\n");
        assert_eq!(text(&drain(&mut c)), ["ev welcomed"]);
        assert_eq!(c.poll_timeout(), None);
        let resumed = t0.advanced(Duration::from_millis(60_500));
        c.resume(resumed);
        assert_eq!(text(&drain(&mut c))[1], "ev skipped seq=2-60");
        // From the resume on, silence counts again, from the resume.
        let mut log = Vec::new();
        while let Some(at) = c.poll_timeout() {
            let now = resumed.advanced(at - resumed.mono);
            c.handle_timeout(now);
            log.extend(text(&drain(&mut c)));
        }
        assert!(
            log.contains(&"ev server silent for 3000.000ms".to_owned()),
            "{log:?}"
        );
        assert_lost_to_the_ack_timeout(&c);
    }

    #[test]
    fn a_refused_id_ends_the_client_or_is_retried_while_it_may_be_its_own_old_connection() {
        let refusal = format!(
            "ERROR {}\n",
            id_in_use_message(&ClientId::new("c1").unwrap())
        );
        let (t0, mut c) = connected(config(1000));
        c.handle_input(t0, refusal.as_bytes());
        let _ = drain(&mut c);
        assert_eq!(
            c.exit(),
            Some(&Exit::Failed(Failure::IdInUse(
                ClientId::new("c1").unwrap()
            )))
        );
        // Reconnecting: refusals are retried for the server's idle timeout of a 1 s client
        // (10 s), then it is another client.
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).unwrap();
        let (t0, mut c) = connected(config(1000).reconnect(Some(backoff)));
        let mut at = t0;
        let mut refusals = 0;
        while !c.is_done() {
            c.handle_input(at, refusal.as_bytes());
            refusals += 1;
            let _ = drain(&mut c);
            if let Some(next) = c.poll_timeout() {
                at = Now {
                    mono: next,
                    unix: t0.unix.saturating_add(next - t0.mono),
                };
                c.handle_timeout(at);
                assert_eq!(drain(&mut c), [Output::Connect]);
                c.handle_connected(at);
                let _ = drain(&mut c);
            }
        }
        assert!(refusals > 5, "{refusals}");
        assert!(at.mono - t0.mono >= Duration::from_secs(10));
        assert!(matches!(c.exit(), Some(Exit::Failed(Failure::IdInUse(_)))));
        // Any other ERROR is an ordinary loss.
        let (t0, mut c) = connected(config(1000));
        c.handle_input(t0, b"ERROR client id c2 is in use\n");
        assert!(matches!(c.exit(), Some(Exit::Failed(Failure::Lost(_)))));
    }

    #[test]
    fn clients_that_share_a_schedule_number_alike_whenever_they_connect() {
        let t0 = origin();
        let mut early = Client::new(config(100), t0);
        let mut late = Client::new(config(100), t0);
        early.start_schedule(t0.mono);
        late.start_schedule(t0.mono);
        let _ = (drain(&mut early), drain(&mut late));
        early.handle_connected(t0);
        assert_eq!(
            text(&drain(&mut early))[2],
            "ev sent seq=1 at=1700000000.000000 late=0.000ms"
        );
        let t = t0.advanced(Duration::from_millis(430));
        late.handle_connected(t);
        let out = text(&drain(&mut late));
        assert_eq!(out[2], "ev skipped seq=1-4");
        assert_eq!(out[3], "ev sent seq=5 at=1700000000.430000 late=30.000ms");
        early.handle_timeout(t0.advanced(Duration::from_millis(500)));
        late.handle_timeout(t0.advanced(Duration::from_millis(500)));
        let (e, l) = (text(&drain(&mut early)), text(&drain(&mut late)));
        assert!(e.last().unwrap().starts_with("tx BEAT 6 "), "{e:?}");
        assert!(l.last().unwrap().starts_with("tx BEAT 6 "), "{l:?}");
    }

    #[test]
    fn a_pause_before_the_first_connection_starts_numbering_at_one_on_resume() {
        let t0 = origin();
        let mut c = Client::new(config(100), t0);
        c.pause(t0);
        assert_eq!(text(&drain(&mut c)), ["Connect", "ev paused"]);
        c.handle_connected(t0.advanced(Duration::from_millis(10)));
        assert_eq!(
            text(&drain(&mut c)),
            ["ev connected attempt=0", "tx HELLO 1 c1 100"]
        );
        c.resume(t0.advanced(Duration::from_millis(500)));
        assert_eq!(
            text(&drain(&mut c))[1..],
            [
                "ev sent seq=1 at=1700000000.500000 late=0.000ms",
                "tx BEAT 1 1700000000.500000"
            ]
        );
        assert_eq!(c.skipped(), 0);
    }

    #[test]
    fn a_connection_lost_while_paused_is_reopened_by_resume() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).unwrap();
        let (t0, mut c) = connected(config(100).reconnect(Some(backoff)));
        c.pause(t0.advanced(Duration::from_millis(10)));
        c.handle_eof(t0.advanced(Duration::from_millis(20)));
        let _ = drain(&mut c);
        // The backoff ends, and nothing is opened while paused.
        let at = c.poll_timeout().unwrap();
        c.handle_timeout(t0.advanced(at - t0.mono));
        assert_eq!(drain(&mut c), []);
        assert_eq!(c.poll_timeout(), None);
        c.resume(t0.advanced(Duration::from_secs(1)));
        assert_eq!(
            text(&drain(&mut c)),
            ["ev resumed after 990.000ms", "Connect"]
        );
        c.handle_connected(t0.advanced(Duration::from_millis(1005)));
        let out = text(&drain(&mut c));
        assert_eq!(
            out[2..4],
            [
                "ev skipped seq=2-10",
                "ev sent seq=11 at=1700000001.005000 late=5.000ms"
            ]
        );

        // Resumed before the backoff ends: the backoff runs its course.
        let (t0, mut c) = connected(config(100).reconnect(Some(backoff)));
        c.pause(t0);
        c.handle_eof(t0);
        let _ = drain(&mut c);
        let at = c.poll_timeout().unwrap();
        c.resume(t0);
        assert_eq!(text(&drain(&mut c)), ["ev resumed after 0.000ms"]);
        assert_eq!(c.poll_timeout(), Some(at));
        c.handle_timeout(t0.advanced(at - t0.mono));
        assert_eq!(drain(&mut c), [Output::Connect]);
    }

    #[test]
    fn close_while_paused_says_goodbye_and_a_finished_client_ignores_pause() {
        let (t0, mut c) = connected(config(100));
        c.pause(t0);
        let _ = drain(&mut c);
        c.close(t0);
        assert_eq!(
            text(&drain(&mut c)),
            ["tx BYE", "Disconnect { reason: Local }"]
        );
        c.resume(t0);
        c.pause(t0);
        assert_eq!(drain(&mut c), []);
        assert_eq!(c.exit(), Some(&Exit::Closed));
    }

    #[test]
    fn a_connection_is_kept_while_two_intervals_fit_the_servers_idle_limit() {
        use crate::config::keeps_connection;
        let max_idle = Duration::from_secs(600);
        assert!(keeps_connection(Duration::from_secs(300), max_idle));
        assert!(!keeps_connection(Duration::from_secs(301), max_idle));
        assert!(!keeps_connection(Duration::from_secs(86_400), max_idle));
    }

    /// A reconnecting client (100 ms doubling to 10 s, 100 ms interval, 2 s ack timeout).
    fn reconnecting() -> (Now, Client) {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10)).unwrap();
        let t0 = origin();
        let mut c = Client::new(config(100).reconnect(Some(backoff)).rng_seed(3), t0);
        let _ = drain(&mut c);
        (t0, c)
    }

    /// Runs `c`'s timers until `until` (from `t0`), the server acknowledging every heartbeat at
    /// once; returns the outputs and the time reached.
    fn run_acked(c: &mut Client, t0: Now, until: Duration) -> (Vec<Output>, Now) {
        let mut outs = Vec::new();
        let mut now = t0;
        while let Some(at) = c.poll_timeout().filter(|&at| at <= t0.mono + until) {
            now = t0.advanced(at - t0.mono);
            c.handle_timeout(now);
            let got = drain(c);
            for o in &got {
                if let Output::Event(Event::Sent { seq, .. }) = o {
                    c.handle_input(now, format!("ACK {seq} 1700000000.5\n").as_bytes());
                }
            }
            outs.extend(got);
            outs.extend(drain(c));
        }
        (outs, now)
    }

    /// The backoff of the first `Disconnected` in `outs`.
    fn retry_in(outs: &[Output]) -> Duration {
        outs.iter()
            .find_map(|o| match o {
                Output::Event(Event::Disconnected {
                    retry_in: Some(d), ..
                }) => Some(*d),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no reconnecting disconnect in {outs:?}"))
    }

    #[test]
    fn an_ack_for_a_heartbeat_never_sent_is_a_protocol_error() {
        // Beyond the last heartbeat sent (only seq 1 went out).
        let (t0, mut c) = connected(config(100));
        c.handle_input(t0, b"WELCOME 1\nACK 7 1700000000.5\n");
        let unsent = DisconnectReason::Protocol(DecodeError::UnsentAck(Seq(7)));
        assert_eq!(
            drain(&mut c)[1..],
            [
                Output::Disconnect {
                    reason: unsent.clone()
                },
                Output::Event(Event::Disconnected {
                    reason: unsent.clone(),
                    retry_in: None
                }),
            ]
        );
        assert_eq!(c.exit(), Some(&Exit::Failed(Failure::Lost(unsent))));
        assert_eq!(c.acked(), 0);
        assert_eq!(
            DisconnectReason::Protocol(DecodeError::UnsentAck(Seq(7))).to_string(),
            "protocol error: ACK for heartbeat 7, which this client never sent on the connection"
        );

        // Before the first heartbeat sent on this connection (seq 1 went out on an earlier one).
        let (t0, mut c) = reconnecting();
        c.handle_connected(t0);
        c.handle_eof(t0.advanced(Duration::from_millis(10)));
        let _ = drain(&mut c);
        let t = t0.advanced(Duration::from_millis(450));
        c.handle_timeout(t);
        c.handle_connected(t);
        assert!(text(&drain(&mut c)).contains(&"tx BEAT 5 1700000000.450000".to_string()));
        c.handle_input(t, b"WELCOME 1\nACK 1 1700000000.5\n");
        let outs = drain(&mut c);
        assert_eq!(
            outs[1],
            Output::Disconnect {
                reason: DisconnectReason::Protocol(DecodeError::UnsentAck(Seq(1)))
            }
        );
        // Attempt 2: the second connection that proved nothing.
        let d = retry_in(&outs);
        assert!(d >= Duration::from_millis(200) && d <= Duration::from_millis(400));

        // On a connection that has sent nothing yet (paused before it opened).
        let t0 = origin();
        let mut c = Client::new(config(100), t0);
        c.pause(t0);
        c.handle_connected(t0);
        let _ = drain(&mut c);
        c.handle_input(t0, b"WELCOME 1\nACK 1 1700000000.5\n");
        assert!(!c.is_connected());
    }

    #[test]
    fn a_welcome_or_a_few_acks_do_not_reset_the_backoff_an_ack_timeout_of_acks_does() {
        let (t0, mut c) = reconnecting();
        let mut now = t0;
        // A server that welcomes and closes: every attempt waits twice as long as the one before.
        for attempt in 1..=6u32 {
            c.handle_connected(now);
            c.handle_input(now, b"WELCOME 1\n");
            c.handle_eof(now);
            let d = retry_in(&drain(&mut c));
            let nominal = Duration::from_millis(100) * 2u32.pow(attempt);
            assert!(d >= nominal / 2 && d <= nominal, "attempt {attempt}: {d:?}");
            now = now.advanced(d);
            c.handle_timeout(now);
            assert_eq!(drain(&mut c), [Output::Connect]);
        }
        // A server that acknowledges for less than the ack timeout (2 s), then closes: still
        // no proof, the backoff grows on (attempt 7).
        c.handle_connected(now);
        c.handle_input(now, b"WELCOME 1\n");
        let (_, at) = run_acked(&mut c, now, Duration::from_millis(1900));
        assert!(c.acked() >= 15, "{}", c.acked());
        c.handle_eof(at);
        let d = retry_in(&drain(&mut c));
        assert!(d >= Duration::from_millis(6400) / 2, "{d:?}");
        now = at.advanced(d);
        c.handle_timeout(now);
        let _ = drain(&mut c);
        // One that acknowledges over the ack timeout: the next loss starts afresh (attempt 0).
        c.handle_connected(now);
        c.handle_input(now, b"WELCOME 1\n");
        let (_, at) = run_acked(&mut c, now, Duration::from_millis(2100));
        c.handle_eof(at);
        let d = retry_in(&drain(&mut c));
        assert!(d >= Duration::from_millis(50) && d <= Duration::from_millis(100));
    }

    #[test]
    fn a_legacy_connection_is_proven_by_heartbeats_written_over_an_ack_timeout() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10)).unwrap();
        let config = config(100).legacy(true).unwrap().reconnect(Some(backoff));
        let t0 = origin();
        let mut c = Client::new(config, t0);
        let _ = drain(&mut c);
        // Closed at once: the backoff grows.
        c.handle_connected(t0);
        c.handle_eof(t0);
        let d = retry_in(&drain(&mut c));
        assert!(d >= Duration::from_millis(100), "{d:?}");
        let now = t0.advanced(d);
        c.handle_timeout(now);
        let _ = drain(&mut c);
        // Written to for more than the ack timeout: it starts afresh.
        c.handle_connected(now);
        let (_, at) = run_acked(&mut c, now, Duration::from_millis(2100));
        c.handle_eof(at);
        let d = retry_in(&drain(&mut c));
        assert!(d <= Duration::from_millis(100), "{d:?}");
    }

    /// A client following advice between 100 ms and 2 s, at 1 s, connected at the origin and
    /// welcomed with advice; the outputs so far drained.
    fn following() -> (Now, Client) {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).unwrap();
        let config = config(1000)
            .session(0x5f)
            .reconnect(Some(backoff))
            .follow_advice(Duration::from_millis(100), Duration::from_secs(2))
            .unwrap();
        let t0 = origin();
        let mut c = Client::new(config, t0);
        let _ = drain(&mut c);
        c.handle_connected(t0);
        assert_eq!(
            text(&drain(&mut c))[1],
            "tx HELLO 1 c1 1000 000000000000005f advice"
        );
        c.handle_input(t0, b"WELCOME 1 advice\n");
        let _ = drain(&mut c);
        (t0, c)
    }

    #[test]
    fn advice_is_adopted_at_the_next_slot_of_the_old_grid_then_every_new_interval() {
        let (t0, mut c) = following();
        let ms = |n| t0.advanced(Duration::from_millis(n));
        c.handle_input(ms(10), b"ADVISE 200\n");
        assert_eq!(
            text(&drain(&mut c)),
            ["ev advised interval=200.000ms adopt=200.000ms"]
        );
        // Nothing moves before the old grid's next slot.
        assert_eq!(
            c.poll_timeout().map(|t| t - t0.mono),
            Some(Duration::from_secs(1))
        );
        c.handle_timeout(ms(1000));
        let outs = text(&drain(&mut c));
        assert_eq!(
            outs,
            [
                "ev interval changed from=1000.000ms to=200.000ms seq=2",
                "tx INTERVAL 200 2",
                "ev sent seq=2 at=1700000001.000000 late=0.000ms",
                "tx BEAT 2 1700000001.000000",
            ]
        );
        assert_eq!(c.interval(), Duration::from_millis(200));
        // Then every 200 ms on the new grid, late wakes not shifting it.
        assert_eq!(c.poll_timeout(), Some(ms(1200).mono));
        c.handle_timeout(ms(1207));
        assert_eq!(
            text(&drain(&mut c))[0],
            "ev sent seq=3 at=1700000001.207000 late=7.000ms"
        );
        assert_eq!(c.poll_timeout(), Some(ms(1400).mono));
        // The same advice again changes nothing; no second INTERVAL.
        c.handle_input(ms(1300), b"ADVISE 200\n");
        c.handle_timeout(ms(1400));
        let outs = text(&drain(&mut c));
        assert!(!outs.iter().any(|l| l.contains("INTERVAL")), "{outs:?}");
    }

    #[test]
    fn advice_is_clamped_into_the_clients_range() {
        let (t0, mut c) = following();
        c.handle_input(t0, b"ADVISE 20\n");
        assert_eq!(
            text(&drain(&mut c)),
            ["ev advised interval=20.000ms adopt=100.000ms"]
        );
        c.handle_input(t0, b"ADVISE 60000\n");
        assert_eq!(
            text(&drain(&mut c)),
            ["ev advised interval=60000.000ms adopt=2000.000ms"]
        );
        c.handle_timeout(t0.advanced(Duration::from_secs(1)));
        assert_eq!(text(&drain(&mut c))[1], "tx INTERVAL 2000 2");
        // Advice back to the interval in force, before the switch, cancels it.
        let (t0, mut c) = following();
        c.handle_input(t0, b"ADVISE 200\nADVISE 1000\n");
        let _ = drain(&mut c);
        c.handle_timeout(t0.advanced(Duration::from_secs(1)));
        let outs = text(&drain(&mut c));
        assert!(!outs.iter().any(|l| l.contains("INTERVAL")), "{outs:?}");
        // The range must hold the interval and be wider than it.
        for (min, max) in [(1000, 1000), (1100, 2000), (100, 900)] {
            assert!(matches!(
                config(1000).follow_advice(Duration::from_millis(min), Duration::from_millis(max)),
                Err(ConfigError::AdviceRange { .. })
            ));
        }
        assert!(matches!(
            config(1000)
                .legacy(true)
                .unwrap()
                .follow_advice(Duration::from_millis(100), Duration::from_secs(2)),
            Err(ConfigError::LegacyAdvice)
        ));
    }

    #[test]
    fn a_reconnecting_client_keeps_the_interval_it_follows() {
        let (t0, mut c) = following();
        let ms = |n| t0.advanced(Duration::from_millis(n));
        c.handle_input(ms(10), b"ADVISE 200\n");
        c.handle_timeout(ms(1000));
        let _ = drain(&mut c);
        c.handle_eof(ms(1100));
        let _ = drain(&mut c);
        let retry = c.poll_timeout().unwrap();
        c.handle_timeout(Now {
            mono: retry,
            ..ms(1100)
        });
        assert_eq!(drain(&mut c), vec![Output::Connect]);
        c.handle_connected(ms(1450));
        let outs = text(&drain(&mut c));
        // The HELLO declares the interval in force, still asking; numbering follows the new
        // grid (slot of 1.4 s is seq 4: seq 3 at 1.2 s was missed).
        assert_eq!(outs[1], "tx HELLO 1 c1 200 000000000000005f advice");
        assert_eq!(outs[2], "ev skipped seq=3-3");
        assert_eq!(outs[3], "ev sent seq=4 at=1700000001.450000 late=50.000ms");
        assert_eq!(c.poll_timeout(), Some(ms(1600).mono));
    }

    #[test]
    fn a_server_without_advice_is_asked_once_then_never_again() {
        let (t0, mut c) = {
            let config = config(1000)
                .session(0x5f)
                .follow_advice(Duration::from_millis(100), Duration::from_secs(2))
                .unwrap();
            let t0 = origin();
            let mut c = Client::new(config, t0);
            let _ = drain(&mut c);
            c.handle_connected(t0);
            let _ = drain(&mut c);
            (t0, c)
        };
        // What a server before the extension says to the extra field.
        c.handle_input(
            t0,
            b"ERROR HELLO: expected HELLO <version> <client-id> <interval-ms> [<session-hex>]\n",
        );
        let outs = drain(&mut c);
        assert!(
            matches!(outs[0], Output::Event(Event::AdviceRefused { .. })),
            "{outs:?}"
        );
        assert!(matches!(outs[1], Output::Disconnect { .. }), "{outs:?}");
        // At once, not counted as a failure, even without --reconnect.
        assert_eq!(outs[2], Output::Connect);
        assert_eq!(outs.len(), 3, "{outs:?}");
        assert!(!c.is_done());
        c.handle_connected(t0.advanced(Duration::from_millis(1)));
        assert_eq!(
            text(&drain(&mut c))[1],
            "tx HELLO 1 c1 1000 000000000000005f"
        );
        // A later refusal is an ordinary one.
        c.handle_input(t0, b"ERROR go away\n");
        assert!(c.is_done());
    }

    #[test]
    fn advice_to_a_client_that_did_not_ask_is_a_protocol_error() {
        let (t0, mut c) = connected(config(1000).reconnect(None));
        c.handle_input(t0, b"WELCOME 1\nADVISE 200\n");
        assert!(matches!(
            c.exit(),
            Some(Exit::Failed(Failure::Lost(DisconnectReason::Protocol(
                DecodeError::Unexpected { got: "ADVISE", .. }
            ))))
        ));
    }
}
