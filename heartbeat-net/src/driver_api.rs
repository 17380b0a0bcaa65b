//! The driver's edges: what its loops take (a [`Clock`], a [`Listener`] or [`Connector`],
//! [`ServerOptions`], a [`ServerApp`]) and what they answer ([`ServerControl`],
//! [`DriverStats`]). Kept apart from the loops ([`crate::driver`], which re-exports all of it)
//! so that the server's locked core ([`crate::shard`]) can name them without the loops.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use heartbeat_core::server::{self, Server};
use heartbeat_core::{Now, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use crate::limits::Refusal;
use crate::logsummary::LogSummary;

/// Requests queued for the server task at most; beyond it [`ServerControl`] answers
/// [`ControlError::Busy`] at once instead of piling up work.
const CONTROL_CAPACITY: usize = 16;

/// What only the driver counts: connections it closed at accept, before the core saw them.
/// Everything else is counted by the core ([`Server::stats`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DriverStats {
    /// Connections closed at accept because `max_connections` were open.
    pub rejected_max_connections: u64,
    /// Connections closed at accept because `max_connections_per_ip` were open from that
    /// address.
    pub rejected_per_ip: u64,
    /// Open connections of each server thread, by thread number (one entry per thread; see
    /// [`run_server_threads`](crate::run_server_threads)).
    pub thread_connections: Vec<usize>,
}

/// A request to the server task from elsewhere in the application (the metrics endpoint,
/// signal handlers), carried out between two events of the loop, so it sees the server in a
/// consistent state and never races it. Send them through a [`ServerControl`].
///
/// The function runs *on* the server task: whatever it costs delays every client's
/// heartbeats by as much. Keep it to copying out what you need (counters, a report) and do
/// the heavy work (encoding, printing, I/O) after it returned, elsewhere.
pub enum Control {
    /// Reads the server, the driver's own counters and the time: for a snapshot (metrics), a
    /// report to print (SIGUSR1).
    Inspect(InspectFn),
    /// Changes the server (for example its expected clients, reloaded on SIGHUP); the driver
    /// then carries out whatever the core output, as after any input.
    Update(UpdateFn),
}

/// The function of a [`Control::Inspect`].
pub type InspectFn = Box<dyn FnOnce(&Server, &DriverStats, Now) + Send>;

/// The function of a [`Control::Update`].
pub type UpdateFn = Box<dyn FnOnce(&mut Server, Now) + Send>;

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Inspect(_) => "Control::Inspect",
            Self::Update(_) => "Control::Update",
        })
    }
}

/// Why a [`ServerControl`] request got no answer.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ControlError {
    /// Too many requests are queued for the server task already.
    #[error("the server is busy with earlier requests")]
    Busy,
    /// The server task is gone (stopped), or was not given this control's receiver.
    #[error("the server is not running")]
    Stopped,
    /// The server task did not get to the request in time (it is overloaded or stalled).
    #[error("the server did not answer within {0:?}")]
    TimedOut(Duration),
}

/// The sending side of the control channel of one server task: cheap to clone, usable from
/// any task or thread (any tokio runtime). Requests are bounded (at most 16 queued, then
/// [`ControlError::Busy`]) and timed out, so a stuck server task never blocks the sender.
#[derive(Clone, Debug)]
pub struct ServerControl {
    tx: mpsc::Sender<Control>,
}

/// The receiving side of the control channel: hand it to [`run_server_with_control`](crate::run_server_with_control).
#[derive(Debug)]
pub struct ControlReceiver(Option<mpsc::Receiver<Control>>);

impl ServerControl {
    /// A new control channel.
    pub fn channel() -> (Self, ControlReceiver) {
        let (tx, rx) = mpsc::channel(CONTROL_CAPACITY);
        (Self { tx }, ControlReceiver(Some(rx)))
    }

    /// Runs `f` on the server task (see [`Control::Inspect`]) and returns what it returned,
    /// waiting at most `timeout`.
    pub async fn inspect<T: Send + 'static>(
        &self,
        timeout: Duration,
        f: impl FnOnce(&Server, &DriverStats, Now) -> T + Send + 'static,
    ) -> Result<T, ControlError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let request = Control::Inspect(Box::new(move |server, driver, now| {
            let _ = tx.send(f(server, driver, now));
        }));
        self.request(request, rx, timeout).await
    }

    /// Runs `f` on the server task with the server mutable (see [`Control::Update`]) and
    /// returns what it returned, waiting at most `timeout`.
    pub async fn update<T: Send + 'static>(
        &self,
        timeout: Duration,
        f: impl FnOnce(&mut Server, Now) -> T + Send + 'static,
    ) -> Result<T, ControlError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let request = Control::Update(Box::new(move |server, now| {
            let _ = tx.send(f(server, now));
        }));
        self.request(request, rx, timeout).await
    }

    async fn request<T>(
        &self,
        request: Control,
        answer: tokio::sync::oneshot::Receiver<T>,
        timeout: Duration,
    ) -> Result<T, ControlError> {
        self.tx.try_send(request).map_err(|e| match e {
            TrySendError::Full(_) => ControlError::Busy,
            TrySendError::Closed(_) => ControlError::Stopped,
        })?;
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(t)) => Ok(t),
            Ok(Err(_)) => Err(ControlError::Stopped),
            Err(_) => Err(ControlError::TimedOut(timeout)),
        }
    }
}

impl ControlReceiver {
    /// A receiver nobody sends to: the server task takes no requests.
    pub fn none() -> Self {
        Self(None)
    }

    /// The next request; pending forever once every sender is gone. Cancel safe. (The server
    /// loop takes them; a test standing in for the loop can too.)
    pub async fn recv(&mut self) -> Control {
        if let Some(rx) = &mut self.0 {
            if let Some(c) = rx.recv().await {
                return c;
            }
            self.0 = None;
        }
        std::future::pending().await
    }
}

/// A source of incoming streams: a bound TCP listener, or turmoil's in the simulator.
pub trait Listener {
    /// The stream type of one accepted connection.
    type Stream: AsyncRead + AsyncWrite + Unpin + 'static;

    /// Waits for the next connection. Must be cancel safe (tokio's and turmoil's are): the
    /// server selects on it alongside its other work.
    ///
    /// An error is treated as transient (for example, out of file descriptors): the server logs
    /// it, pauses accepting briefly and tries again.
    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>>;
}

/// A way to open a stream to the server, used once per connect attempt of the client.
pub trait Connector {
    /// The stream type of one connection.
    type Stream: AsyncRead + AsyncWrite + Unpin + 'static;

    /// Opens a new connection. The error's text reaches the user as the reason in
    /// `Failed to connect to server: <reason>`, so it should name what was tried. It is dropped
    /// unfinished when the client is stopped, and should give up by itself after a while (the
    /// core has no connect timeout).
    fn connect(&mut self) -> impl Future<Output = io::Result<Self::Stream>>;
}

/// Both clocks the core needs, read at the driver's edge.
///
/// Implement [`unix`](Self::unix); the provided [`now`](Self::now) takes monotonic time from
/// `tokio::time` (paused and simulated under turmoil). Any `Fn() -> UnixTime` is a `Clock`.
pub trait Clock {
    /// The wall-clock time now.
    fn unix(&self) -> UnixTime;

    /// Both clocks now. The monotonic part must come from [`mono_now`], because the driver
    /// sleeps with `tokio::time::sleep_until` on the instants the core derives from it.
    fn now(&self) -> Now {
        Now {
            mono: mono_now(),
            unix: self.unix(),
        }
    }
}

impl<F: Fn() -> UnixTime> Clock for F {
    fn unix(&self) -> UnixTime {
        self()
    }
}

/// The production clock: the operating system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn unix(&self) -> UnixTime {
        // The one place the production driver reads the wall clock: heartbeat stamps and one-way
        // delays are wall-clock by definition. The simulator passes its own `Clock` instead.
        #[allow(clippy::disallowed_methods)]
        let now = std::time::SystemTime::now();
        // A clock set before 1970 stamps the epoch rather than failing.
        UnixTime::from_duration(
            now.duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default(),
        )
    }
}

/// Monotonic time as the drivers read it: tokio's clock, which turmoil and paused tests control.
pub fn mono_now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Limits of the server driver. Every buffer and queue it has is bounded by one of these.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerOptions {
    /// Open connections at most. A connection accepted beyond it is closed at once (the client
    /// sees the server close, and backs off if it reconnects). Default 65,536.
    pub max_connections: usize,
    /// Open connections from one peer address at most, so one host cannot take every slot;
    /// beyond it, as beyond `max_connections`. `None` (the default): a quarter of
    /// `max_connections`, at least 1.
    pub max_connections_per_ip: Option<usize>,
    /// Bytes read per `read` call, into one buffer the server's connections share (an idle
    /// connection holds none). Default 2,048.
    pub read_buffer: usize,
    /// Unused: the server task reads every connection itself, one read per ready connection
    /// per turn, so nothing is queued between reading and handling (a connection that sends
    /// faster than the server handles waits in its TCP buffers: flow control). Kept so that
    /// existing configurations still build. Default 4,096.
    pub inbound_capacity: usize,
    /// Writes queued for one connection that the stream would not take at once (the server
    /// task writes straight to the stream otherwise). If it fills, the peer is dropped at once
    /// as not reading its acknowledgements, so one slow client can neither hold memory nor
    /// stall the server task. Default 64.
    pub outbound_capacity: usize,
    /// How long one write may block (a peer that does not read its acks) before the connection
    /// is dropped as not reading its acknowledgements. Reading goes on meanwhile, so the
    /// peer's heartbeats still count. Default 10 s.
    pub write_timeout: Duration,
    /// On stop, how long connections get to flush and close before they are dropped.
    /// Default 1 s.
    pub shutdown_grace: Duration,
    /// Where the driver's repeated log lines (connections refused, accepted) are counted and
    /// summarised; share it with the code that logs the server's events. Default: its own.
    pub log: LogSummary,
    /// Measure how long the core's lock is held (a debugging aid: two clock reads per lock),
    /// logged at stop. Default off.
    pub measure_lock: bool,
}

impl ServerOptions {
    /// The per-address limit in force: `max_connections_per_ip`, or a quarter of
    /// `max_connections` (at least 1).
    pub fn max_connections_per_ip_value(&self) -> usize {
        self.max_connections_per_ip
            .unwrap_or_else(|| crate::limits::default_share(self.max_connections))
            .max(1)
    }
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            max_connections: 65_536,
            max_connections_per_ip: None,
            read_buffer: 2048,
            inbound_capacity: 4096,
            outbound_capacity: 64,
            write_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(1),
            log: LogSummary::default(),
            measure_lock: false,
        }
    }
}

/// What an application runs inside the server loop ([`run_server_app`](crate::run_server_app)): it handles the core's
/// events, and may work on the [`Server`] itself (save its state, say) after each wake of the
/// loop. Every method runs on the loop that acknowledges heartbeats and decides liveness, so it
/// must be quick: anything slow (a disk, a network) belongs on another thread or task.
pub trait ServerApp {
    /// One event of the core, with the time of the call that produced it.
    fn on_event(&mut self, event: &server::Event, now: Now);

    /// The latest instant the loop should wake at for [`on_wake`](Self::on_wake) (it wakes
    /// for other reasons too); `None` to be woken only by those. Read after every wake.
    fn next_wake(&self) -> Option<Instant> {
        None
    }

    /// Runs after every wake of the loop, once the outputs of that wake are carried out; what
    /// it makes the server output is carried out right after.
    fn on_wake(&mut self, _server: &mut Server, _now: Now) {}

    /// A connection from `peer` was closed as soon as it was accepted, before the core saw it
    /// (a connection limit, already logged through the summary); the core has no event for it.
    fn on_refused(&mut self, _refusal: Refusal, _peer: SocketAddr, _now: Now) {}
}

/// An application that only handles events, with a closure: what [`run_server`](crate::run_server) runs.
#[derive(Debug)]
pub struct OnEvent<F>(pub F);

impl<F: FnMut(&server::Event, Now)> ServerApp for OnEvent<F> {
    fn on_event(&mut self, event: &server::Event, now: Now) {
        (self.0)(event, now);
    }
}

/// Sleeps until `deadline`, or forever without one (a `select!` arm for an optional timer).
pub async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}
