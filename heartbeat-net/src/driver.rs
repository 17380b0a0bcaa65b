//! One driver loop for both networks: the same `run_client` and `run_server` run over tokio's TCP
//! in production and over turmoil's simulated TCP in `heartbeat-sim`.
//!
//! The loops are generic over the stream type through [`Listener`] and [`Connector`], read time
//! only through [`Clock`] (monotonic time from `tokio::time`, which turmoil virtualises; Unix time
//! from whatever clock the caller hands in) and put no `Send` bound on anything, so they run on a
//! turmoil host's `LocalSet` as well as in the binaries.
//!
//! Shape of each loop (str0m's): drain the core's outputs, writing bytes with `write_all`
//! *outside* `select!` (it is not cancel safe); then `select!` over stop, the core's next timeout
//! and reading (all cancel safe); hand what happened to the core; repeat.
//!
//! # Under another network
//! Wrap the network's listener and stream types in newtypes implementing [`Listener`] and
//! [`Connector`] (the orphan rule wants the newtypes), and pass a [`Clock`] reading that
//! network's wall clock, e.g. for turmoil
//! `|| UnixTime::from_duration(turmoil::since_epoch().unwrap())`. [`run_server`] sets up its own
//! `LocalSet` for its connection tasks, so it runs inside a turmoil host (itself on a `LocalSet`)
//! as well as on a plain tokio runtime; [`run_client`] spawns nothing.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use heartbeat_core::client::{self, Client, Exit};
use heartbeat_core::server::{self, Server};
use heartbeat_core::{ConnId, DisconnectReason, Now, UnixTime};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf, ReadHalf, WriteHalf};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::{JoinSet, LocalSet};
use tracing::Level;

use crate::NetError;
use crate::limits::{ConnectionLimits, Refusal};
use crate::logsummary::LogSummary;
use crate::logsummary::PeerLine;

/// Bytes read from the server per `read` call on the client side. Frames are at most 256 bytes.
const CLIENT_READ_BUFFER: usize = 1024;

/// How long closing a stream (flushing and sending FIN) may take before it is simply dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// How many inbound messages the server handles in one go before it looks at timers, new
/// connections and stop again.
const INBOUND_BATCH: usize = 64;

/// Reads one connection may have waiting for the server task. A connection that reads faster
/// than the server handles its data waits for its own earlier reads, not for room in the
/// shared queue, so the queue holds at most this many reads per connection and the server task
/// takes them round-robin: one connection's flood cannot starve the others.
const READS_IN_FLIGHT: u32 = 2;

/// Connections accepted in one go when several are waiting (a reconnect storm), before the
/// server reads what open connections sent.
const ACCEPT_BATCH: usize = 64;

/// How long the server pauses accepting after `accept` fails (out of file descriptors, say), so a
/// persistent error does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Requests queued for the server task at most; beyond it [`ServerControl`] answers
/// [`ControlError::Busy`] at once instead of piling up work.
const CONTROL_CAPACITY: usize = 16;

/// What only the driver counts: connections it closed at accept, before the core saw them.
/// Everything else is counted by the core ([`Server::stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DriverStats {
    /// Connections closed at accept because `max_connections` were open.
    pub rejected_max_connections: u64,
    /// Connections closed at accept because `max_connections_per_ip` were open from that
    /// address.
    pub rejected_per_ip: u64,
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

/// The receiving side of the control channel: hand it to [`run_server_with_control`].
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
    /// Messages (reads and ends of stream) queued from all connections to the server task.
    /// When full, connections stop reading until there is room (in the order they asked), which
    /// pushes back through TCP flow control. Each connection has at most two reads waiting, so
    /// the server takes them round-robin. Default 4,096.
    pub inbound_capacity: usize,
    /// Writes queued for one connection while its task is busy writing. If it fills, the peer
    /// is dropped at once as not reading its acknowledgements, so one slow client can neither
    /// hold memory nor stall the server task. Default 64.
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
        }
    }
}

/// Drives `client` over streams from `connector` until it ends or `stop` completes.
///
/// Every [`client::Event`] is handed to `on_event` with the time of the call that produced it.
/// On `stop` the client says goodbye and closes ([`Exit::Closed`]). Returns how the client ended;
/// `Err` only for a driver fault, never for anything the network or the server did (those are in
/// [`Exit::Failed`]).
///
/// To pause, resume and watch a client from elsewhere in an application, use
/// [`embed`](crate::embed), which runs this same loop.
pub async fn run_client<C: Connector>(
    connector: C,
    client: Client,
    clock: impl Clock,
    stop: impl Future<Output = ()>,
    mut on_event: impl FnMut(&client::Event, Now),
) -> Result<Exit, NetError> {
    drive_client(connector, client, clock, stop, None, |e, now, _| {
        on_event(e, now)
    })
    .await
}

/// What an application wants of a running client besides `stop` (see [`crate::embed`]). The
/// loop reads the latest wish at every turn, so only the last one counts and none is lost while
/// it was busy (connecting, say).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Wish {
    /// Heartbeats paused ([`Client::pause`]).
    pub(crate) paused: bool,
    /// Say goodbye and end ([`Client::close`]).
    pub(crate) stop: bool,
}

/// [`run_client`]'s loop, also taking wishes (a closed channel wishes a stop) and handing
/// `on_event` the client as it is after the event, for counters.
pub(crate) async fn drive_client<C: Connector>(
    mut connector: C,
    mut client: Client,
    clock: impl Clock,
    stop: impl Future<Output = ()>,
    mut wishes: Option<watch::Receiver<Wish>>,
    mut on_event: impl FnMut(&client::Event, Now, &Client),
) -> Result<Exit, NetError> {
    // Writes are a few dozen bytes; one that blocks this long means the server stopped reading,
    // which the ack timeout would report anyway.
    let write_timeout = client.config().ack_timeout_value();
    let mut stream: Option<C::Stream> = None;
    let mut buf = vec![0u8; CLIENT_READ_BUFFER].into_boxed_slice();
    let mut stopped = false;
    let mut stop = std::pin::pin!(stop);
    let mut now = clock.now();

    loop {
        let mut connect = false;
        while let Some(out) = client.poll_output() {
            match out {
                client::Output::Connect => connect = true,
                client::Output::Transmit(bytes) => {
                    let Some(s) = stream.as_mut() else {
                        tracing::debug!(len = bytes.len(), "no stream; transmit dropped");
                        continue;
                    };
                    if let Err(e) = write_bytes(s, &bytes, write_timeout).await {
                        tracing::debug!(error = %e, "write failed");
                        stream = None;
                        now = clock.now();
                        client.handle_eof(now);
                    }
                }
                client::Output::Disconnect { reason } => {
                    if let Some(mut s) = stream.take() {
                        tracing::debug!(%reason, "closing the stream");
                        close_stream(&mut s).await;
                        if matches!(reason, DisconnectReason::Finished | DisconnectReason::Local) {
                            linger(&mut s, &mut buf).await;
                        }
                    }
                }
                client::Output::Event(e) => on_event(&e, now, &client),
            }
        }
        if let Some(exit) = client.exit() {
            return Ok(exit.clone());
        }

        if connect {
            // Connecting may take long (DNS, SYN retries): stay responsive to stop meanwhile.
            let result = tokio::select! {
                biased;
                () = &mut stop, if !stopped => None,
                () = stop_wished(&mut wishes), if !stopped => None,
                r = connector.connect() => Some(r),
            };
            now = clock.now();
            // Before the stream is handed over: a client paused meanwhile sends nothing on it.
            obey(wishes.as_ref(), &mut client, now, &mut stopped);
            match result {
                None => {
                    if !stopped {
                        stopped = true;
                        client.close(now);
                    }
                }
                // Closed meanwhile: whatever was opened is dropped.
                Some(_) if client.is_done() => {}
                Some(Ok(s)) => {
                    stream = Some(s);
                    client.handle_connected(now);
                }
                Some(Err(e)) if crate::error::is_not_tls_server(&e) => {
                    tracing::debug!(error = %e, "the server does not speak TLS");
                    client.handle_connect_fatal(now, client::Failure::NotTls);
                }
                Some(Err(e)) => client.handle_connect_failed(now, e.to_string()),
            }
            continue;
        }

        let deadline = client.poll_timeout();
        if stopped && stream.is_none() && deadline.is_none() {
            // Unreachable with a correct core (close always ends the client); never hang.
            return Err(NetError::Stalled);
        }
        let wake = tokio::select! {
            biased;
            () = &mut stop, if !stopped => ClientWake::Stop,
            () = wish_changed(&mut wishes), if !stopped => ClientWake::Wish,
            () = sleep_until_opt(deadline) => ClientWake::Timeout,
            r = read_opt(&mut stream, &mut buf) => ClientWake::Read(r),
        };
        now = clock.now();
        // After a stall of this process, what the server sent meanwhile (acknowledgements, or its
        // close) is read before the client's timers judge it. One read per turn of the loop,
        // until nothing is waiting.
        let wake = match wake {
            ClientWake::Timeout if client.is_stalled(now.mono) => read_ready(&mut stream, &mut buf)
                .await
                .map_or(ClientWake::Timeout, ClientWake::Read),
            other => other,
        };
        obey(wishes.as_ref(), &mut client, now, &mut stopped);
        match wake {
            ClientWake::Stop => {
                if !stopped {
                    stopped = true;
                    client.close(now);
                }
            }
            ClientWake::Wish => {}
            ClientWake::Timeout => client.handle_timeout(now),
            ClientWake::Read(Ok(0)) => {
                stream = None;
                client.handle_eof(now);
            }
            ClientWake::Read(Ok(n)) => client.handle_input(now, &buf[..n]),
            ClientWake::Read(Err(e)) => {
                tracing::debug!(error = %e, "read failed");
                stream = None;
                client.handle_eof(now);
            }
        }
    }
}

enum ClientWake {
    Read(io::Result<usize>),
    Stop,
    Timeout,
    Wish,
}

/// Brings the client in line with the latest wish: pauses, resumes, or (once) closes it.
fn obey(wishes: Option<&watch::Receiver<Wish>>, client: &mut Client, now: Now, stopped: &mut bool) {
    let Some(rx) = wishes else {
        return;
    };
    let wish = *rx.borrow();
    if wish.stop || rx.is_closed() {
        if !*stopped {
            *stopped = true;
            client.close(now);
        }
        return;
    }
    if wish.paused && !client.is_paused() {
        client.pause(now);
    } else if !wish.paused && client.is_paused() {
        client.resume(now);
    }
}

/// Completes when a wish may have changed (at once when the channel is closed); never without
/// a channel.
async fn wish_changed(wishes: &mut Option<watch::Receiver<Wish>>) {
    match wishes {
        Some(rx) => {
            let _ = rx.changed().await;
        }
        None => std::future::pending().await,
    }
}

/// Completes when a stop is wished (or the channel is closed); never without a channel.
async fn stop_wished(wishes: &mut Option<watch::Receiver<Wish>>) {
    match wishes {
        Some(rx) => {
            let _ = rx.wait_for(|w| w.stop).await;
        }
        None => std::future::pending().await,
    }
}

/// What an application runs inside the server loop ([`run_server_app`]): it handles the core's
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

/// An application that only handles events, with a closure: what [`run_server`] runs.
#[derive(Debug)]
pub struct OnEvent<F>(pub F);

impl<F: FnMut(&server::Event, Now)> ServerApp for OnEvent<F> {
    fn on_event(&mut self, event: &server::Event, now: Now) {
        (self.0)(event, now);
    }
}

/// Serves connections from `listener` with `server` until `stop` completes, then stops
/// accepting, closes every connection and returns the server, whose analysis stays readable
/// ([`Server::report`]).
///
/// One task owns the `Server`; each connection gets a task of its own (spawned on a `LocalSet`
/// this function sets up, so the stream needs no `Send`) that owns the stream, forwards what it
/// reads over one bounded channel and writes what it receives on its own bounded channel.
/// Every [`server::Event`] is handed to `on_event` with the time of the call that produced it.
/// `Err` only for a driver fault; accept errors are logged and retried.
pub async fn run_server<L: Listener>(
    listener: L,
    server: Server,
    options: ServerOptions,
    clock: impl Clock,
    stop: impl Future<Output = ()>,
    on_event: impl FnMut(&server::Event, Now),
) -> Result<Server, NetError> {
    let control = ControlReceiver::none();
    run_server_with_control(listener, server, options, control, clock, stop, on_event).await
}

/// [`run_server`], also carrying out the [`Control`] requests sent through the
/// [`ServerControl`] paired with `control`, between events.
pub async fn run_server_with_control<L: Listener>(
    listener: L,
    server: Server,
    options: ServerOptions,
    control: ControlReceiver,
    clock: impl Clock,
    stop: impl Future<Output = ()>,
    on_event: impl FnMut(&server::Event, Now),
) -> Result<Server, NetError> {
    let app = OnEvent(on_event);
    run_server_app(listener, server, options, control, clock, stop, app).await
}

/// [`run_server_with_control`] with an application that works on the server inside the loop
/// (see [`ServerApp`]), instead of an event handler.
pub async fn run_server_app<L: Listener>(
    listener: L,
    server: Server,
    options: ServerOptions,
    control: ControlReceiver,
    clock: impl Clock,
    stop: impl Future<Output = ()>,
    app: impl ServerApp,
) -> Result<Server, NetError> {
    LocalSet::new()
        .run_until(serve(listener, server, options, control, clock, stop, app))
        .await
}

/// What a connection task tells the server task.
#[derive(Debug)]
enum Inbound {
    /// Bytes read from the connection, and the permit that lets it read again once they are
    /// handled.
    Data(ConnId, Bytes, OwnedSemaphorePermit),
    /// The connection reached end of stream, or reading or writing it failed.
    Eof(ConnId),
    /// A write blocked for longer than the write timeout: the peer is not reading.
    WriteBlocked(ConnId),
    /// The TLS handshake failed, for this reason ([`crate::tls::HandshakeFailed`], read with `handshake_failure`).
    TlsFailed(ConnId, String),
}

enum ServerWake<S> {
    Accepted(io::Result<(S, SocketAddr)>),
    AcceptResume,
    App,
    Control(Control),
    FlushLog,
    Inbound(Inbound),
    Stop,
    TaskEnded(Result<(), tokio::task::JoinError>),
    Timeout,
}

struct ServerDriver {
    server: Server,
    /// The write channel of every connection the core has not disconnected yet. Dropping a
    /// sender tells its task to flush and close.
    conns: HashMap<ConnId, OutboxTx>,
    limits: ConnectionLimits,
    tasks: JoinSet<()>,
    options: ServerOptions,
    stats: DriverStats,
    /// The read buffer every connection task borrows.
    scratch: ReadScratch,
}

async fn serve<L: Listener>(
    mut listener: L,
    server: Server,
    options: ServerOptions,
    mut control: ControlReceiver,
    clock: impl Clock,
    stop: impl Future<Output = ()>,
    mut app: impl ServerApp,
) -> Result<Server, NetError> {
    let (inbound_tx, mut inbound_rx) = mpsc::channel(options.inbound_capacity.max(1));
    let mut d = ServerDriver {
        server,
        conns: HashMap::new(),
        limits: ConnectionLimits::new(
            options.max_connections,
            options.max_connections_per_ip_value(),
        ),
        tasks: JoinSet::new(),
        scratch: ReadScratch::new(options.read_buffer),
        options,
        stats: DriverStats::default(),
    };
    let mut stop = std::pin::pin!(stop);
    let mut accept_paused_until: Option<Instant> = None;
    let mut now = clock.now();

    loop {
        d.drain(now, &mut app);
        app.on_wake(&mut d.server, now);
        d.drain(now, &mut app);
        let deadline = d.server.poll_timeout();
        let wake = tokio::select! {
            biased;
            () = &mut stop => ServerWake::Stop,
            () = sleep_until_opt(deadline) => ServerWake::Timeout,
            () = sleep_until_opt(app.next_wake()) => ServerWake::App,
            c = control.recv() => ServerWake::Control(c),
            Some(r) = d.tasks.join_next(), if !d.tasks.is_empty() => ServerWake::TaskEnded(r),
            () = sleep_until_opt(accept_paused_until) => ServerWake::AcceptResume,
            r = listener.accept(), if accept_paused_until.is_none() => ServerWake::Accepted(r),
            Some(m) = inbound_rx.recv() => ServerWake::Inbound(m),
            () = sleep_until_opt(d.options.log.next_flush()) => ServerWake::FlushLog,
        };
        now = clock.now();
        match wake {
            ServerWake::Stop => break,
            ServerWake::App => {}
            ServerWake::FlushLog => d.options.log.flush(now.mono),
            ServerWake::Timeout => {
                // What the connections already read counts before any deadline is judged: a
                // server behind on a reconnect storm must not time out a HELLO waiting in its
                // own queue (bounded: what is queued now, at most `inbound_capacity`).
                let queued = inbound_rx.len();
                d.inbound_batch(now, None, &mut inbound_rx, &mut app, queued);
                d.drain(now, &mut app);
                d.server.handle_timeout(now);
            }
            ServerWake::Control(Control::Inspect(f)) => f(&d.server, &d.stats, now),
            // The loop drains what the change output before it waits again.
            ServerWake::Control(Control::Update(f)) => f(&mut d.server, now),
            ServerWake::TaskEnded(r) => {
                if let Err(e) = r {
                    d.options.log.peer(
                        now.mono,
                        Level::ERROR,
                        PeerLine::ConnectionTaskFailed,
                        format_args!("connection task failed: {e}"),
                    );
                }
            }
            ServerWake::AcceptResume => accept_paused_until = None,
            ServerWake::Accepted(Ok((stream, peer))) => {
                d.accept(now, stream, peer, &inbound_tx, &mut app);
                // A storm: take the connections already waiting in the listen queue too, a
                // batch at a time, without going round the loop for each.
                for _ in 1..ACCEPT_BATCH {
                    match accept_ready(&mut listener) {
                        Some(Ok((stream, peer))) => {
                            d.accept(now, stream, peer, &inbound_tx, &mut app);
                        }
                        Some(Err(e)) => {
                            d.accept_failed(now, &e);
                            accept_paused_until = Some(now.mono + ACCEPT_ERROR_PAUSE);
                            break;
                        }
                        None => break,
                    }
                }
                // Connects and data take turns: after each accept, a batch of what open
                // connections sent, so a flood of connects cannot starve the clients already
                // connected (accepting comes first above, so data cannot starve connects).
                d.inbound_batch(now, None, &mut inbound_rx, &mut app, INBOUND_BATCH);
            }
            ServerWake::Accepted(Err(e)) => {
                d.accept_failed(now, &e);
                accept_paused_until = Some(now.mono + ACCEPT_ERROR_PAUSE);
            }
            ServerWake::Inbound(m) => {
                d.inbound_batch(now, Some(m), &mut inbound_rx, &mut app, INBOUND_BATCH);
            }
        }
    }

    // Stop: no new connections; what was already read still counts; close every open
    // connection; let the tasks flush for a moment.
    drop(listener);
    now = clock.now();
    while let Ok(m) = inbound_rx.try_recv() {
        d.handle_inbound(now, m);
        d.drain(now, &mut app);
    }
    d.server.close_all(now);
    d.drain(now, &mut app);
    app.on_wake(&mut d.server, now);
    d.drain(now, &mut app);
    // Connection tasks blocked on a full inbound channel see it closed and end.
    drop(inbound_rx);
    drop(inbound_tx);
    let grace = d.options.shutdown_grace;
    let tasks = &mut d.tasks;
    let flushed =
        tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    if flushed.is_err() {
        tracing::debug!(left = tasks.len(), "connections still closing; dropped");
    }
    tasks.abort_all();
    d.options.log.flush_all(clock.now().mono);
    Ok(d.server)
}

impl ServerDriver {
    /// Carries out every output of the core.
    fn drain(&mut self, now: Now, app: &mut impl ServerApp) {
        while let Some(out) = self.server.poll_output() {
            match out {
                server::Output::Transmit { conn, bytes } => {
                    let Some(tx) = self.conns.get(&conn) else {
                        continue;
                    };
                    match tx.try_send(Bytes::from(bytes)) {
                        Ok(()) => {}
                        Err(TrySendError::Full(_)) => self.server.handle_write_blocked(now, conn),
                        // The task already ended; its end of stream is on the way to the core.
                        Err(TrySendError::Closed(_)) => {}
                    }
                }
                server::Output::Disconnect { conn, reason } => {
                    tracing::debug!(%conn, %reason, "closing");
                    self.conns.remove(&conn);
                    self.limits.closed(conn);
                }
                server::Output::Event(e) => app.on_event(&e, now),
            }
        }
    }

    /// Logs a failed accept (summarised: under a connection flood it may fail for each one).
    fn accept_failed(&self, now: Now, e: &io::Error) {
        self.options.log.peer(
            now.mono,
            Level::WARN,
            PeerLine::AcceptFailed,
            format_args!("accept failed ({e}); pausing accepts briefly"),
        );
    }

    fn accept<S: AsyncRead + AsyncWrite + Unpin + 'static>(
        &mut self,
        now: Now,
        stream: S,
        peer: SocketAddr,
        inbound: &mpsc::Sender<Inbound>,
        app: &mut impl ServerApp,
    ) {
        if let Err(refusal) = self.limits.check(peer) {
            let limit = match refusal {
                crate::limits::Refusal::Total => {
                    self.stats.rejected_max_connections += 1;
                    self.options.max_connections
                }
                crate::limits::Refusal::PerIp => {
                    self.stats.rejected_per_ip += 1;
                    self.options.max_connections_per_ip_value()
                }
            };
            self.options.log.peer(
                now.mono,
                Level::WARN,
                refusal.kind(),
                format_args!(
                    "connection limit reached ({} = {limit}); closing the new connection from {peer}",
                    refusal.flag(),
                ),
            );
            drop(stream);
            app.on_refused(refusal, peer, now);
            return;
        }
        let conn = self.server.accept(now, peer);
        self.limits.opened(conn, peer);
        self.options.log.peer(
            now.mono,
            Level::INFO,
            PeerLine::Accepted,
            format_args!("Accepted connection from {}", seed_peer(peer)),
        );
        let (tx, rx) = outbox(self.options.outbound_capacity.max(1));
        self.conns.insert(conn, tx);
        let task = ConnTask {
            conn,
            inbound: inbound.clone(),
            writes: rx,
            reads: Arc::new(Semaphore::new(READS_IN_FLIGHT as usize)),
            scratch: self.scratch.clone(),
            write_timeout: self.options.write_timeout,
        };
        self.tasks.spawn_local(task.run(stream));
    }

    /// Handles `first` and what else is queued, `limit` messages at most, without waiting.
    fn inbound_batch(
        &mut self,
        now: Now,
        first: Option<Inbound>,
        inbound: &mut mpsc::Receiver<Inbound>,
        app: &mut impl ServerApp,
        limit: usize,
    ) {
        let handled = usize::from(first.is_some());
        if let Some(m) = first {
            self.handle_inbound(now, m);
        }
        for _ in handled..limit {
            self.drain(now, app);
            match inbound.try_recv() {
                Ok(m) => self.handle_inbound(now, m),
                Err(_) => break,
            }
        }
    }

    fn handle_inbound(&mut self, now: Now, m: Inbound) {
        match m {
            // The permit is released once the bytes are handled: the task may read again.
            Inbound::Data(conn, bytes, _permit) => self.server.handle_input(now, conn, &bytes),
            Inbound::Eof(conn) => self.server.handle_eof(now, conn),
            Inbound::TlsFailed(conn, why) => self.server.handle_tls_failed(now, conn, why),
            Inbound::WriteBlocked(conn) => self.server.handle_write_blocked(now, conn),
        }
    }
}

/// One connection: reads into the server's shared buffer and forwards what it reads, and writes what the
/// server task sends, at the same time. Reading goes on while a write blocks (so a peer that
/// does not read its acks still has its heartbeats counted until the write timeout), and
/// writing goes on after end of stream (so the acks and `ERROR` due to a peer that half-closed
/// reach it). The task ends when the server task drops its sender: what was queued is written,
/// then the stream is shut down.
struct ConnTask {
    conn: ConnId,
    inbound: mpsc::Sender<Inbound>,
    writes: OutboxRx,
    /// [`READS_IN_FLIGHT`] permits: one is held by each read waiting for the server task.
    reads: Arc<Semaphore>,
    scratch: ReadScratch,
    write_timeout: Duration,
}

impl ConnTask {
    async fn run<S: AsyncRead + AsyncWrite>(self, stream: S) {
        let (reader, writer) = tokio::io::split(stream);
        let Self {
            conn,
            inbound,
            writes,
            reads,
            scratch,
            write_timeout,
        } = self;
        let reading = read_loop(conn, inbound.clone(), reads, reader, scratch);
        let writing = write_loop(conn, inbound, writes, writer, write_timeout);
        tokio::select! {
            () = writing => {}
            // Only when the server task is gone; after end of stream the reader waits forever.
            () = reading => {}
        }
    }
}

/// Reads and forwards until end of stream or an error (reported as `Eof`), then waits forever.
/// Returns only when the server task is gone.
///
/// It holds no buffer of its own: each read goes into the server's one [`ReadScratch`], borrowed
/// only inside a `poll_read` that found bytes (or end of stream), and what it read is copied
/// out at once. An idle connection costs its task and nothing more.
async fn read_loop<S: AsyncRead>(
    conn: ConnId,
    inbound: mpsc::Sender<Inbound>,
    reads: Arc<Semaphore>,
    mut reader: ReadHalf<S>,
    scratch: ReadScratch,
) {
    loop {
        // Wait for this connection's earlier reads to be handled: the per-connection budget.
        // (The waits here and below are boxed on their rare slow path, so that an idle
        // connection's task holds no room for them.)
        let permit = match reads.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => match Box::pin(reads.clone().acquire_owned()).await {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let msg = match scratch.read(&mut reader).await {
            Ok(bytes) if bytes.is_empty() => None,
            Ok(bytes) => Some(Inbound::Data(conn, bytes, permit)),
            Err(e) => match crate::error::handshake_failure(&e) {
                Some(why) => Some(Inbound::TlsFailed(conn, why.to_owned())),
                None => {
                    tracing::debug!(%conn, error = %e, "read failed");
                    None
                }
            },
        };
        let (msg, more) = match msg {
            Some(m @ Inbound::TlsFailed(..)) => (m, false),
            Some(m) => (m, true),
            None => (Inbound::Eof(conn), false),
        };
        // Waits while the server task is behind: the backpressure that bounds memory.
        if send_inbound(&inbound, msg).await.is_err() {
            return;
        }
        if !more {
            return std::future::pending().await;
        }
    }
}

/// A connection's queue of writes, from the server task to the connection task. Both run on
/// one thread (the server's `LocalSet`), so it needs no lock; unlike a tokio channel (which
/// allocates a block of 32 slots up front) it holds nothing until something is queued, so an
/// idle connection costs a few dozen bytes here.
struct Outbox {
    queue: RefCell<VecDeque<Bytes>>,
    capacity: usize,
    /// The server task dropped its end: write what is queued, then close.
    closed: Cell<bool>,
    /// The connection task is gone: nothing more will be written.
    gone: Cell<bool>,
    ready: Notify,
}

/// The server task's end of an [`Outbox`]; dropping it tells the connection to flush and close.
struct OutboxTx(Rc<Outbox>);

/// The connection task's end of an [`Outbox`].
struct OutboxRx(Rc<Outbox>);

fn outbox(capacity: usize) -> (OutboxTx, OutboxRx) {
    let shared = Rc::new(Outbox {
        queue: RefCell::new(VecDeque::new()),
        capacity,
        closed: Cell::new(false),
        gone: Cell::new(false),
        ready: Notify::new(),
    });
    (OutboxTx(shared.clone()), OutboxRx(shared))
}

impl OutboxTx {
    /// Queues `bytes` without waiting: `Full` at capacity, `Closed` once the task is gone.
    fn try_send(&self, bytes: Bytes) -> Result<(), TrySendError<Bytes>> {
        if self.0.gone.get() {
            return Err(TrySendError::Closed(bytes));
        }
        let mut queue = self.0.queue.borrow_mut();
        if queue.len() >= self.0.capacity {
            return Err(TrySendError::Full(bytes));
        }
        queue.push_back(bytes);
        drop(queue);
        self.0.ready.notify_one();
        Ok(())
    }
}

impl Drop for OutboxTx {
    fn drop(&mut self) {
        self.0.closed.set(true);
        self.0.ready.notify_one();
    }
}

impl OutboxRx {
    /// The next write, `None` once the sender is dropped and everything queued was taken.
    /// Cancel safe. (`notify_one` keeps a permit when nobody waits, so no wake-up is lost.)
    async fn recv(&mut self) -> Option<Bytes> {
        loop {
            if let Some(bytes) = self.pop() {
                return Some(bytes);
            }
            if self.0.closed.get() {
                return None;
            }
            self.0.ready.notified().await;
        }
    }
}

impl OutboxRx {
    fn pop(&self) -> Option<Bytes> {
        let mut queue = self.0.queue.borrow_mut();
        let bytes = queue.pop_front()?;
        if queue.is_empty() {
            // Idle again: hold no queue (the usual case, one ack at a time).
            *queue = VecDeque::new();
        }
        Some(bytes)
    }
}

impl Drop for OutboxRx {
    fn drop(&mut self) {
        self.0.gone.set(true);
        self.0.queue.borrow_mut().clear();
    }
}

/// Sends to the server task, waiting (in a boxed future: rarely needed) only when its queue is
/// full. `Err` when the server task is gone.
async fn send_inbound(inbound: &mpsc::Sender<Inbound>, msg: Inbound) -> Result<(), ()> {
    match inbound.try_send(msg) {
        Ok(()) => Ok(()),
        Err(TrySendError::Closed(_)) => Err(()),
        Err(TrySendError::Full(msg)) => Box::pin(inbound.send(msg)).await.map_err(|_| ()),
    }
}

/// The server's one read buffer, shared by every connection task on its `LocalSet` (one
/// thread: a task borrows it only for the duration of one `poll_read`, never across an
/// `await`), so that 10,000 idle connections do not hold 10,000 buffers.
#[derive(Clone)]
struct ReadScratch(Rc<RefCell<Box<[u8]>>>);

impl ReadScratch {
    fn new(len: usize) -> Self {
        Self(Rc::new(RefCell::new(
            vec![0u8; len.max(1)].into_boxed_slice(),
        )))
    }

    /// Reads once: the bytes read, empty at end of stream. Cancel safe (nothing is read until
    /// the bytes are returned).
    async fn read<R: AsyncRead + Unpin>(&self, reader: &mut R) -> io::Result<Bytes> {
        std::future::poll_fn(|cx| {
            let mut buf = self.0.borrow_mut();
            let mut read = ReadBuf::new(&mut buf);
            match Pin::new(&mut *reader).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) => Poll::Ready(Ok(Bytes::copy_from_slice(read.filled()))),
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }
}

/// Writes what the server task sends until it drops its sender, then shuts the stream down.
/// A write that blocks past `write_timeout` is reported as `WriteBlocked`, one that fails as
/// `Eof`; later writes are then discarded.
async fn write_loop<S: AsyncWrite>(
    conn: ConnId,
    inbound: mpsc::Sender<Inbound>,
    mut writes: OutboxRx,
    mut writer: WriteHalf<S>,
    write_timeout: Duration,
) {
    let mut broken = false;
    while let Some(bytes) = writes.recv().await {
        if broken {
            continue;
        }
        if let Err(e) = write_bytes(&mut writer, &bytes, write_timeout).await {
            tracing::debug!(%conn, error = %e, "write failed");
            broken = true;
            let msg = if e.kind() == io::ErrorKind::TimedOut {
                Inbound::WriteBlocked(conn)
            } else {
                Inbound::Eof(conn)
            };
            if send_inbound(&inbound, msg).await.is_err() {
                return;
            }
        }
    }
    if !broken {
        close_stream(&mut writer).await;
    }
}

async fn write_bytes<S: AsyncWrite + Unpin>(
    s: &mut S,
    bytes: &[u8],
    timeout: Duration,
) -> io::Result<()> {
    let write = async {
        s.write_all(bytes).await?;
        s.flush().await
    };
    let mut write = std::pin::pin!(write);
    // Nearly every write completes at once: only one that has to wait arms the timer, so an
    // ack costs no timer registration.
    if let Poll::Ready(r) = std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await {
        return r;
    }
    // Boxed: the timer is large and rarely needed, and every idle connection task would
    // otherwise carry room for it.
    match Box::pin(tokio::time::timeout(timeout, write)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")),
    }
}

/// Flushes and shuts the stream down (FIN), giving up after [`CLOSE_TIMEOUT`].
async fn close_stream<S: AsyncWrite + Unpin>(s: &mut S) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, s.shutdown()).await;
}

/// After our goodbye and FIN, reads and discards until the peer closes too, for at most
/// [`CLOSE_TIMEOUT`]: a socket dropped with unread bytes (an acknowledgement still on its way)
/// is closed with a reset, which can overtake the goodbye and make the server see a crash
/// instead of a leave (TCP discards what the receiver had not read yet). The server closes on
/// our FIN, so this usually ends within a round trip.
async fn linger<S: AsyncRead + Unpin>(s: &mut S, buf: &mut [u8]) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        while let Ok(1..) = s.read(buf).await {}
    })
    .await;
}

/// A peer address as the seed's server logged it (Python's socket address tuple):
/// `('127.0.0.1', 37506)`, or `('::1', 37506, 0, 0)` for IPv6.
fn seed_peer(peer: SocketAddr) -> String {
    match peer {
        SocketAddr::V4(a) => format!("('{}', {})", a.ip(), a.port()),
        SocketAddr::V6(a) => format!(
            "('{}', {}, {}, {})",
            a.ip(),
            a.port(),
            a.flowinfo(),
            a.scope_id()
        ),
    }
}

/// Reads from the stream if there is one; pending forever otherwise. Cancel safe.
async fn read_opt<S: AsyncRead + Unpin>(s: &mut Option<S>, buf: &mut [u8]) -> io::Result<usize> {
    match s {
        Some(s) => s.read(buf).await,
        None => std::future::pending().await,
    }
}

/// The next connection if one is waiting, without waiting for one (`accept` is cancel safe).
fn accept_ready<L: Listener>(listener: &mut L) -> Option<io::Result<(L::Stream, SocketAddr)>> {
    let mut cx = Context::from_waker(Waker::noop());
    match std::pin::pin!(listener.accept()).poll(&mut cx) {
        Poll::Ready(r) => Some(r),
        Poll::Pending => None,
    }
}

/// Reads from the stream if it has bytes (or its end) waiting now; `None` without waiting when
/// it has not, or there is no stream. Cancel safe, as `read_opt`.
async fn read_ready<S: AsyncRead + Unpin>(
    s: &mut Option<S>,
    buf: &mut [u8],
) -> Option<io::Result<usize>> {
    let s = s.as_mut()?;
    tokio::select! {
        biased;
        r = s.read(buf) => Some(r),
        () = std::future::ready(()) => None,
    }
}

/// Sleeps until `deadline`, or forever without one (a `select!` arm for an optional timer).
pub async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use heartbeat_core::ClientId;
    use heartbeat_core::config::{ClientConfig, ServerConfig};

    use super::*;
    use crate::{TcpConnector, TcpListener};

    /// A simulated wall clock that follows tokio's paused clock from now on, as the
    /// simulator's does.
    fn paused_clock() -> impl Fn() -> UnixTime + Copy {
        let t0 = tokio::time::Instant::now();
        move || UnixTime::from_duration(Duration::from_secs(1_700_000_000) + t0.elapsed())
    }

    #[tokio::test]
    async fn client_and_server_round_trip_over_loopback() {
        let listener = TcpListener::bind("127.0.0.1", 0).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = Server::new(Arc::new(ServerConfig::default()));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let mut server_events = Vec::new();
        let serve = run_server(
            listener,
            server,
            ServerOptions::default(),
            SystemClock,
            async {
                let _ = stop_rx.await;
            },
            |e: &server::Event, _| server_events.push(e.name()),
        );
        let config = ClientConfig::new(ClientId::new("t1").unwrap(), Duration::from_millis(10))
            .unwrap()
            .count(Some(5))
            .unwrap();
        let client = Client::new(config, SystemClock.now());
        let (mut acked, mut skipped) = (0, 0);
        let run = async {
            let exit = run_client(
                TcpConnector::new("127.0.0.1", port),
                client,
                SystemClock,
                std::future::pending(),
                |e: &client::Event, _| {
                    if let client::Event::Acked { .. } = e {
                        acked += 1;
                    }
                    // A slot the client passed while the machine was loaded (a 10 ms
                    // interval, real time) is skipped, and then missed by the server.
                    if let client::Event::Skipped { first, last } = e {
                        skipped += last.0 - first.0 + 1;
                    }
                },
            )
            .await;
            let _ = stop_tx.send(());
            exit
        };
        let (served, exit) = tokio::join!(serve, run);
        assert_eq!(exit.unwrap(), Exit::Finished);
        assert_eq!(acked, 5);
        let report = served.unwrap().report();
        assert_eq!(report.clients.len(), 1);
        assert_eq!(report.clients[0].received, 5);
        assert_eq!(report.clients[0].missed, skipped);
        assert_eq!(server_events.first(), Some(&"connected"));
        assert_eq!(server_events.last(), Some(&"disconnected"));
    }

    #[test]
    fn peers_are_logged_as_the_seed_logged_them() {
        let v4: SocketAddr = "127.0.0.1:37506".parse().unwrap();
        assert_eq!(seed_peer(v4), "('127.0.0.1', 37506)");
        let v6: SocketAddr = "[::1]:37506".parse().unwrap();
        assert_eq!(seed_peer(v6), "('::1', 37506, 0, 0)");
    }

    #[tokio::test]
    async fn stop_closes_a_client_that_cannot_connect() {
        // Nothing listens on this port (bound then released), and the client reconnects forever.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let config = ClientConfig::new(ClientId::new("t2").unwrap(), Duration::from_millis(10))
            .unwrap()
            .reconnect(Some(heartbeat_core::config::Backoff::default()));
        let client = Client::new(config, SystemClock.now());
        let exit = run_client(
            TcpConnector::new("127.0.0.1", port),
            client,
            SystemClock,
            tokio::time::sleep(Duration::from_millis(300)),
            |_: &client::Event, _| {},
        )
        .await
        .unwrap();
        assert_eq!(exit, Exit::Closed);
    }

    /// Streams from memory: shows the loops are generic, and lets a test hold a peer that never
    /// reads.
    struct MemListener(mpsc::Receiver<(tokio::io::DuplexStream, SocketAddr)>);

    impl Listener for MemListener {
        type Stream = tokio::io::DuplexStream;

        async fn accept(&mut self) -> io::Result<(Self::Stream, SocketAddr)> {
            match self.0.recv().await {
                Some(s) => Ok(s),
                None => std::future::pending().await,
            }
        }
    }

    struct MemConnector(mpsc::Sender<(tokio::io::DuplexStream, SocketAddr)>);

    impl Connector for MemConnector {
        type Stream = tokio::io::DuplexStream;

        async fn connect(&mut self) -> io::Result<Self::Stream> {
            let (ours, theirs) = tokio::io::duplex(4096);
            let peer = SocketAddr::from(([127, 0, 0, 1], 40_000));
            self.0
                .send((theirs, peer))
                .await
                .map_err(|_| io::Error::from(io::ErrorKind::ConnectionRefused))?;
            Ok(ours)
        }
    }

    /// [`run_server`] with the default configuration on the memory listener fed by
    /// `accept_rx`, until `stop_rx` fires (or its sender is dropped); each disconnect goes to
    /// `on_disconnect`, with the client if it identified itself.
    async fn serve_in_memory(
        accept_rx: mpsc::Receiver<(tokio::io::DuplexStream, SocketAddr)>,
        options: ServerOptions,
        clock: impl Clock,
        stop_rx: tokio::sync::oneshot::Receiver<()>,
        mut on_disconnect: impl FnMut(Option<&heartbeat_core::ClientKey>, &DisconnectReason),
    ) -> Result<Server, NetError> {
        run_server(
            MemListener(accept_rx),
            Server::new(Arc::new(ServerConfig::default())),
            options,
            clock,
            async {
                let _ = stop_rx.await;
            },
            |e: &server::Event, _| {
                if let server::Event::Disconnected { client, reason, .. } = e {
                    on_disconnect(client.as_ref(), reason);
                }
            },
        )
        .await
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_does_not_read_times_out_and_others_carry_on() {
        let clock = paused_clock();
        let (accept_tx, accept_rx) = mpsc::channel(4);
        let options = ServerOptions {
            outbound_capacity: 2,
            write_timeout: Duration::from_secs(1),
            ..ServerOptions::default()
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let mut dropped = Vec::new();
        let serve = serve_in_memory(accept_rx, options, clock, stop_rx, |client, reason| {
            if let Some(c) = client {
                dropped.push(format!("{c}: {reason}"));
            }
        });

        // The slow peer: an 8-byte pipe it never reads, so the server's first write blocks.
        let (mut slow, theirs) = tokio::io::duplex(8);
        accept_tx
            .send((theirs, SocketAddr::from(([127, 0, 0, 1], 30_000))))
            .await
            .unwrap();
        let writer = tokio::spawn(async move {
            let _ = slow.write_all(b"HELLO 1 slow 10\n").await;
            for seq in 1..=40 {
                let beat = format!("BEAT {seq} 1700000000.{seq:03}\n");
                if slow.write_all(beat.as_bytes()).await.is_err() {
                    break;
                }
            }
            slow
        });

        let config = ClientConfig::new(ClientId::new("good").unwrap(), Duration::from_millis(10))
            .unwrap()
            .count(Some(20))
            .unwrap();
        let client = Client::new(config, clock.now());
        let mut acked = 0;
        let run = async {
            let exit = run_client(
                MemConnector(accept_tx.clone()),
                client,
                clock,
                std::future::pending(),
                |e: &client::Event, _| {
                    if let client::Event::Acked { .. } = e {
                        acked += 1;
                    }
                },
            )
            .await;
            // Give the slow peer's blocked write time to hit its timeout before stopping
            // (paused time: no real wait).
            tokio::time::sleep(Duration::from_secs(2)).await;
            let _ = stop_tx.send(());
            exit
        };
        let (served, exit) = tokio::join!(serve, run);
        drop(writer.await.unwrap());
        assert_eq!(exit.unwrap(), Exit::Finished);
        assert_eq!(acked, 20);
        // The slow peer's task blocked on its first write while it kept reading, so its acks
        // queued up until the queue was full: it was dropped for not reading them (not "closed
        // by peer", not "no data"). The server task and the good client never waited for it.
        assert_eq!(
            dropped,
            [
                "slow: not reading acknowledgements",
                "good: client said goodbye"
            ]
        );
        let report = served.unwrap().report();
        let good = report
            .clients
            .iter()
            .find(|c| c.client.to_string() == "good");
        assert_eq!(good.map(|c| (c.received, c.missed)), Some((20, 0)));
    }

    /// What a test server hands back: every disconnect reason, and the report.
    type Served = tokio::task::JoinHandle<(Vec<String>, heartbeat_core::Report)>;

    /// A paused-clock server on a memory listener, spawned on the current `LocalSet`; returns
    /// where to send accepted streams, its stop switch and its outcome.
    fn paused_server(
        options: ServerOptions,
    ) -> (
        mpsc::Sender<(tokio::io::DuplexStream, SocketAddr)>,
        tokio::sync::oneshot::Sender<()>,
        Served,
    ) {
        let clock = paused_clock();
        let (accept_tx, accept_rx) = mpsc::channel(4);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::task::spawn_local(async move {
            let mut reasons = Vec::new();
            let server = serve_in_memory(accept_rx, options, clock, stop_rx, |_, reason| {
                reasons.push(reason.to_string());
            })
            .await
            .unwrap();
            (reasons, server.report())
        });
        (accept_tx, stop_tx, served)
    }

    #[tokio::test(start_paused = true)]
    async fn acks_due_when_the_peer_half_closes_are_all_delivered() {
        LocalSet::new()
            .run_until(async {
                let (accept_tx, stop_tx, served) = paused_server(ServerOptions::default());
                let (mut peer, theirs) = tokio::io::duplex(1 << 16);
                accept_tx
                    .send((theirs, SocketAddr::from(([127, 0, 0, 1], 30_001))))
                    .await
                    .unwrap();
                peer.write_all(b"HELLO 1 half 10\n").await.unwrap();
                // A second later (paused time), 100 heartbeats at once, then half-close.
                tokio::time::sleep(Duration::from_secs(1)).await;
                let mut beats = String::new();
                for seq in 1..=100 {
                    beats.push_str(&format!("BEAT {seq} 1700000000.5\n"));
                }
                peer.write_all(beats.as_bytes()).await.unwrap();
                peer.shutdown().await.unwrap();
                let mut answer = String::new();
                peer.read_to_string(&mut answer).await.unwrap();
                let _ = stop_tx.send(());
                let acks = answer.lines().filter(|l| l.starts_with("ACK ")).count();
                assert_eq!(acks, 100, "{answer}");
                assert_eq!(served.await.unwrap().0, ["closed by peer"]);
            })
            .await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_blocked_past_the_timeout_drops_the_peer_for_not_reading() {
        LocalSet::new()
            .run_until(async {
                let options = ServerOptions {
                    write_timeout: Duration::from_millis(300),
                    ..ServerOptions::default()
                };
                let (accept_tx, stop_tx, served) = paused_server(options);
                // A 64-byte pipe the peer never reads: a few acks fill it.
                let (mut peer, theirs) = tokio::io::duplex(64);
                accept_tx
                    .send((theirs, SocketAddr::from(([127, 0, 0, 1], 30_002))))
                    .await
                    .unwrap();
                peer.write_all(b"HELLO 1 deaf 20\n").await.unwrap();
                for seq in 1..=30 {
                    let line = format!("BEAT {seq} 1700000000.5\n");
                    if peer.write_all(line.as_bytes()).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let _ = stop_tx.send(());
                let (reasons, report) = served.await.unwrap();
                assert_eq!(reasons, ["not reading acknowledgements"]);
                // It was heard until the write timeout: about 300 ms of heartbeats after the
                // pipe filled, none refused, none missed.
                let deaf = &report.clients[0];
                assert!(deaf.received >= 15, "{deaf:?}");
                assert_eq!(deaf.missed, 0);
                drop(peer);
            })
            .await;
    }

    #[tokio::test(start_paused = true)]
    async fn control_requests_run_on_the_server_task_between_events() {
        LocalSet::new()
            .run_until(async {
                let clock = paused_clock();
                let (accept_tx, accept_rx) = mpsc::channel(4);
                let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
                let (control, control_rx) = ServerControl::channel();
                let options = ServerOptions {
                    max_connections: 1,
                    ..ServerOptions::default()
                };
                let served = tokio::task::spawn_local(run_server_with_control(
                    MemListener(accept_rx),
                    Server::new(Arc::new(ServerConfig::default())),
                    options,
                    control_rx,
                    clock,
                    async {
                        let _ = stop_rx.await;
                    },
                    |_: &server::Event, _| {},
                ));
                let (mut peer, theirs) = tokio::io::duplex(4096);
                let addr = SocketAddr::from(([127, 0, 0, 1], 30_003));
                accept_tx.send((theirs, addr)).await.unwrap();
                peer.write_all(b"HELLO 1 seen 1000\nBEAT 1 1700000000.5\n")
                    .await
                    .unwrap();
                // One connection too many: closed at accept, counted by the driver.
                let (_refused, theirs) = tokio::io::duplex(64);
                accept_tx.send((theirs, addr)).await.unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;

                let timeout = Duration::from_secs(1);
                let (open, received, rejected) = control
                    .inspect(timeout, |s, d, _| {
                        let c = s.clients().next().map(|c| c.received());
                        (s.connection_count(), c, d.rejected_max_connections)
                    })
                    .await
                    .unwrap();
                assert_eq!((open, received, rejected), (1, Some(1), 1));
                // An update's outputs are carried out: closing the connection reaches the peer.
                let conn = control
                    .update(timeout, |s, now| {
                        let conn = heartbeat_core::ConnId(1);
                        s.close(now, conn);
                        s.connection_count()
                    })
                    .await
                    .unwrap();
                assert_eq!(conn, 0);
                let mut rest = String::new();
                peer.read_to_string(&mut rest).await.unwrap();
                assert!(rest.starts_with("WELCOME 1"), "{rest:?}");

                let _ = stop_tx.send(());
                served.await.unwrap().unwrap();
                let gone = control.inspect(timeout, |s, _, _| s.client_count()).await;
                assert_eq!(gone, Err(ControlError::Stopped));
            })
            .await;
    }
}
