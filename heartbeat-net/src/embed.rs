//! Heartbeats from inside a Rust service, on the service's own tokio runtime.
//!
//! A service that sends its own heartbeats stops sending them when it dies and, once they are
//! tied to its health, when it hangs: the server then sees it go late and down, as it sees a
//! killed `heartbeat-client`. [`Builder`] takes a [`ClientConfig`] and the server's address;
//! [`spawn`](Builder::spawn) starts the client as a task and returns a [`Handle`] (cheap to
//! clone) that reads the client's [`Stats`], [`pause`](Handle::pause)s and
//! [`resume`](Handle::resume)s its heartbeats, and [`shutdown`](Handle::shutdown)s it
//! gracefully: with a `BYE`, so the server records the client as `left`, not down.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use heartbeat_net::embed::{Backoff, Builder, ClientConfig, ClientId};
//!
//! # async fn service() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ClientConfig::new(ClientId::new("orders-1")?, Duration::from_secs(1))?
//!     .reconnect(Some(Backoff::default()));
//! let heartbeat = Builder::new(config, "monitor.example.net", 6510).spawn();
//! // ... the service runs ...
//! println!("{} heartbeats acknowledged", heartbeat.stats().acked);
//! heartbeat.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! Give the configuration a reconnect [`Backoff`], as above: without one, the first lost
//! connection (a server restart) ends the client for good, as it ends `heartbeat-client`
//! without `--reconnect`.
//!
//! # Tying heartbeats to the service's health
//! Whether a hang stops the heartbeats by itself depends on what hangs:
//! - the whole runtime (a current-thread runtime blocked in a system call, every worker thread
//!   stuck): the client's task cannot run either, so the heartbeats stop;
//! - one task or one thread (an async deadlock, a lock never released, a worker in an endless
//!   loop) while the runtime goes on: the client's task still runs, and the heartbeats go on.
//!
//! Only the application can tell the second kind, so it says so: [`Handle::pause`] when it is
//! unhealthy, [`Handle::resume`] when it is well again. While paused, the slots that pass are
//! skipped, not queued: the server sees the client go late and, by its detector, down. On
//! resume the numbering goes on following the clock, so the server counts the pause as missed
//! heartbeats, once ([`Client::pause`] has the details).
//!
//! The usual shape is a watchdog: the main loop counts its turns, and a watchdog task resumes
//! the heartbeats only while the count moves.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use std::time::Duration;
//!
//! use heartbeat_net::embed::{Backoff, Builder, ClientConfig, ClientId, Handle};
//! use tokio::time::{Instant, MissedTickBehavior};
//!
//! /// Heartbeats only while `turns` moves: a main loop stuck for a `period` pauses them.
//! async fn watchdog(heartbeat: Handle, turns: Arc<AtomicU64>, period: Duration) {
//!     // The first look one period in (a plain `interval` ticks at once, before any turn).
//!     let mut tick = tokio::time::interval_at(Instant::now() + period, period);
//!     // After a stall, one tick, not a burst of them a few microseconds apart.
//!     tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
//!     let mut last = turns.load(Ordering::Relaxed);
//!     loop {
//!         tick.tick().await;
//!         let now = turns.load(Ordering::Relaxed);
//!         if now == last {
//!             heartbeat.pause();
//!         } else {
//!             heartbeat.resume();
//!         }
//!         last = now;
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let config = ClientConfig::new(ClientId::new("orders-1")?, Duration::from_secs(1))?
//!         .reconnect(Some(Backoff::default()));
//!     let heartbeat = Builder::new(config, "monitor.example.net", 6510).spawn();
//!     let turns = Arc::new(AtomicU64::new(0));
//!     tokio::spawn(watchdog(heartbeat.clone(), turns.clone(), Duration::from_secs(5)));
//!     loop {
//!         // Wait for work with a timeout, so that an idle service still turns.
//!         # let job: Option<()> = None;
//!         // ... take a job (or time out), do it ...
//!         turns.fetch_add(1, Ordering::Relaxed);
//!         # if job.is_none() { break; }
//!     }
//!     heartbeat.shutdown().await;
//!     Ok(())
//! }
//! ```
//!
//! Pick the watchdog's period well above the main loop's slowest ordinary turn; the server's
//! detector adds its own margin on top. A pause beyond the server's idle limit (10 intervals and
//! at least 5 s, by default) ends the connection at the server's side; the client opens a new
//! one on resume. `heartbeat-net/examples/embedded.rs` is a service that does all of this.
//!
//! # Send, and where the task runs
//! [`Builder::spawn`] starts the client with `tokio::spawn`, so it needs a tokio runtime (either
//! flavour) and a `Send` task: the TCP and TLS streams are `Send`, and an
//! [`on_event`](Builder::on_event) callback must be. [`Builder::build`] returns the same task
//! unspawned, for an application that spawns its own (in a `JoinSet`, under a task tracker).
//!
//! The driver loop puts no `Send` bound on anything (see [`driver`](crate::driver)), so
//! [`Builder::build_with`] runs the client over any [`Connector`] and [`Clock`] (another
//! transport, a simulated network) and promises no `Send`: spawn its task with
//! `tokio::task::spawn_local` on a `LocalSet` (turmoil's hosts run on one), or with
//! `tokio::spawn` when its connector's streams and futures are `Send`.
//!
//! # Ending
//! The client runs while a [`Handle`] to it exists: when the last one is dropped, the client says
//! goodbye and ends, as on [`shutdown`](Handle::shutdown). Dropping the runtime ends it abruptly,
//! as a crash would: no `BYE`, so the server sees the connection close and then, by its
//! detector, the client go down.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::sync::watch;

use heartbeat_core::client::Client;
use heartbeat_core::{ConfigError, DisconnectReason};

use crate::driver::{Clock, Connector, SystemClock, Wish, drive_client};
use crate::tls::{TlsConnector, TlsError};
use crate::{NetError, TcpConnector};

#[doc(no_inline)]
pub use heartbeat_core::client::{Event, Exit, Failure};
#[doc(no_inline)]
pub use heartbeat_core::config::{Backoff, ClientConfig};
#[doc(no_inline)]
pub use heartbeat_core::{ClientId, Secret};

/// An event callback, run on the client's task.
type OnEvent = Box<dyn FnMut(&Event) + Send>;

/// Builds an embedded heartbeat client and starts it. See the [module docs](self).
///
/// The server has one address today; a builder method for more may come, so the address is
/// given here rather than baked into a type.
pub struct Builder {
    config: ClientConfig,
    host: String,
    port: u16,
    connect_timeout: Option<Duration>,
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    on_event: Option<OnEvent>,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("config", &self.config)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("connect_timeout", &self.connect_timeout)
            .field("tls", &self.tls.as_ref().map(|(_, name)| name))
            .field("on_event", &self.on_event.is_some())
            .finish()
    }
}

impl Builder {
    /// A client with `config` for the server at `host:port`. The host is resolved again at
    /// every connect attempt, as [`TcpConnector`] does.
    pub fn new(config: ClientConfig, host: impl Into<String>, port: u16) -> Self {
        Self {
            config,
            host: host.into(),
            port,
            connect_timeout: None,
            tls: None,
            on_event: None,
        }
    }

    /// Connects with TLS, trusting what `tls` trusts (make one from a CA file with
    /// [`tls::client_config`](crate::tls::client_config)) and expecting a certificate for
    /// `server_name`. An error for a name that is neither a DNS name nor an IP address.
    pub fn tls(
        mut self,
        tls: Arc<rustls::ClientConfig>,
        server_name: &str,
    ) -> Result<Self, TlsError> {
        let name = ServerName::try_from(server_name.to_owned())
            .map_err(|_| TlsError::ServerName(server_name.to_owned()))?;
        self.tls = Some((tls, name));
        Ok(self)
    }

    /// Authenticates with `key` (as [`ClientConfig::auth_key`]; read one from a key file with
    /// [`keys::load_client_key`](crate::keys::load_client_key)). An error for a legacy client.
    pub fn auth_key(mut self, key: Secret) -> Result<Self, ConfigError> {
        self.config = self.config.auth_key(Some(key))?;
        Ok(self)
    }

    /// How long one connect attempt (resolving, then connecting to each address) may take
    /// before it counts as failed. Default 10 s, as [`TcpConnector`]'s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// Calls `f` with every event of the client (connected, sent, acknowledged, skipped, paused,
    /// ...). It runs on the client's task, between heartbeats: it must return quickly. Events
    /// are also logged with `tracing` at debug level.
    pub fn on_event(mut self, f: impl FnMut(&Event) + Send + 'static) -> Self {
        self.on_event = Some(Box::new(f));
        self
    }

    /// Starts the client as a task on the current tokio runtime (`tokio::spawn`) and returns
    /// its handle.
    ///
    /// Like `heartbeat-client`, the client gets a fresh random session nonce and jitter seed
    /// when the configuration leaves them at 0, their defaults: the server tells a restarted
    /// process by its new session, and clients sharing a seed would reconnect in step after a
    /// server restart. (Should the operating system have no randomness to give, the client
    /// starts with the zeros, and says so in a warning.)
    ///
    /// # Panics
    /// Outside a tokio runtime, as `tokio::spawn` does.
    #[must_use = "the client stops when the last Handle is dropped"]
    pub fn spawn(self) -> Handle {
        let (handle, task) = self.build();
        tokio::spawn(task);
        handle
    }

    /// The client's handle and its task, not yet started: [`spawn`](Self::spawn) for a caller
    /// that spawns its own tasks. The task's output is how the client ended (`Err` only for a
    /// fault of the driver, see [`run_client`](crate::run_client)).
    pub fn build(
        self,
    ) -> (
        Handle,
        impl Future<Output = Result<Exit, NetError>> + Send + 'static,
    ) {
        let mut tcp = TcpConnector::new(self.host, self.port);
        if let Some(timeout) = self.connect_timeout {
            tcp = tcp.timeout(timeout);
        }
        let config = fresh_randomness(self.config);
        let (handle, ends) = Handle::new();
        let (tls, on_event) = (self.tls, self.on_event);
        let task = async move {
            match tls {
                None => run(tcp, config, SystemClock, ends, on_event).await,
                Some((tls, name)) => {
                    let connector = TlsConnector::with_server_name(tcp, tls, name);
                    run(connector, config, SystemClock, ends, on_event).await
                }
            }
        };
        (handle, task)
    }

    /// The client's handle and its task over `connector`, reading time from `clock`: for
    /// another transport, or a simulated network. The builder's address, TLS and connect
    /// timeout are not used (the connector decides where and how to connect), and the
    /// configuration is taken as it is, zeros included, so a simulated run stays reproducible.
    ///
    /// No `Send` is promised: spawn the task with `tokio::task::spawn_local` on a `LocalSet`,
    /// or with `tokio::spawn` when it is `Send`.
    pub fn build_with<C: Connector>(
        self,
        connector: C,
        clock: impl Clock,
    ) -> (Handle, impl Future<Output = Result<Exit, NetError>>) {
        let (handle, ends) = Handle::new();
        let task = run(connector, self.config, clock, ends, self.on_event);
        (handle, task)
    }
}

/// The configuration with a fresh session nonce and jitter seed where it has zeros.
fn fresh_randomness(mut config: ClientConfig) -> ClientConfig {
    let fresh = |what: &str| match crate::app::random_u64() {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!("cannot read randomness for the {what}: {e}; using 0");
            0
        }
    };
    if config.session_value() == 0 {
        config = config.session(fresh("session nonce"));
    }
    if config.rng_seed_value() == 0 {
        config = config.rng_seed(fresh("backoff jitter seed"));
    }
    config
}

/// The client task's ends of the handle's channels.
struct TaskEnds {
    wishes: watch::Receiver<Wish>,
    stats: watch::Sender<Stats>,
}

/// Runs the client until it ends, publishing its stats after every event and its exit at the
/// end.
async fn run<C: Connector>(
    connector: C,
    config: ClientConfig,
    clock: impl Clock,
    ends: TaskEnds,
    mut on_event: Option<OnEvent>,
) -> Result<Exit, NetError> {
    let TaskEnds { wishes, stats } = ends;
    let client = Client::new(config, clock.now());
    let mut connected_before = false;
    let stop = std::future::pending();
    let exit = drive_client(
        connector,
        client,
        clock,
        stop,
        Some(wishes),
        |e, _, client| {
            tracing::debug!("heartbeat client: {e}");
            stats.send_modify(|s| s.observe(e, client, &mut connected_before));
            if let Some(f) = on_event.as_mut() {
                f(e);
            }
        },
    )
    .await;
    stats.send_modify(|s| {
        s.connected = false;
        s.exit = exit.as_ref().ok().cloned();
    });
    exit
}

/// A running embedded client: reads its [`Stats`], pauses and resumes its heartbeats, shuts it
/// down. Cheap to clone; every clone controls the same client, which ends when the last clone
/// is dropped (see the [module docs](self#ending)).
#[derive(Clone, Debug)]
pub struct Handle {
    wishes: watch::Sender<Wish>,
    stats: watch::Receiver<Stats>,
}

impl Handle {
    fn new() -> (Self, TaskEnds) {
        let (wishes_tx, wishes) = watch::channel(Wish::default());
        let (stats, stats_rx) = watch::channel(Stats::default());
        let handle = Self {
            wishes: wishes_tx,
            stats: stats_rx,
        };
        (handle, TaskEnds { wishes, stats })
    }

    /// The client's counters and state now.
    pub fn stats(&self) -> Stats {
        self.stats.borrow().clone()
    }

    /// Stops the heartbeats until [`resume`](Self::resume), for an application that knows it
    /// is unhealthy: the server sees the client go late, then down (see [`Client::pause`]).
    /// Takes effect at once, or when a connect attempt under way ends. Does nothing when
    /// paused already, or once the client has ended.
    pub fn pause(&self) {
        self.wish(|w| &mut w.paused, true);
    }

    /// Sends heartbeats again after [`pause`](Self::pause): the one due now at once, numbered
    /// on the clock grid, so the server counts the pause as missed heartbeats once (see
    /// [`Client::resume`]). Does nothing when not paused.
    pub fn resume(&self) {
        self.wish(|w| &mut w.paused, false);
    }

    /// Says goodbye (a `BYE`, so the server records the client as `left`), closes the
    /// connection, and waits until the client has ended. Returns how it ended:
    /// [`Exit::Closed`], or an earlier exit when it had ended already (its `count` sent, or
    /// failed without reconnecting); `None` as for [`exited`](Self::exited).
    ///
    /// A client that is between connections at that moment (reconnecting, or its connection
    /// dropped during a pause) has no one to say goodbye to: it just ends, and the server keeps
    /// the state it had.
    pub async fn shutdown(&self) -> Option<Exit> {
        self.wish(|w| &mut w.stop, true);
        self.exited().await
    }

    /// Waits until the client has ended, without asking it to. `None` when its task ended
    /// without an exit: it was dropped unfinished (its runtime shut down, or the task was
    /// aborted or, from [`Builder::build`], never run to the end), an `on_event` callback
    /// panicked, or the driver failed (the task's output says how).
    pub async fn exited(&self) -> Option<Exit> {
        let mut stats = self.stats.clone();
        let ended = stats.wait_for(|s| s.exit.is_some()).await;
        ended.ok().and_then(|s| s.exit.clone())
    }

    /// True once the client has ended (or its task is gone).
    pub fn is_finished(&self) -> bool {
        self.stats.borrow().exit.is_some() || self.stats.has_changed().is_err()
    }

    /// Sets one wish to `value`, waking the client only when that changes it.
    fn wish(&self, field: impl Fn(&mut Wish) -> &mut bool, value: bool) {
        self.wishes
            .send_if_modified(|w| std::mem::replace(field(w), value) != value);
    }
}

/// A client's counters and state, as [`Handle::stats`] reads them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Heartbeats written.
    pub sent: u64,
    /// Heartbeats acknowledged by the server.
    pub acked: u64,
    /// Slots not sent (disconnected, paused, or the task woke late), counted when the next
    /// heartbeat goes out.
    pub skipped: u64,
    /// Connections opened after the first: after a lost connection or, for an interval too
    /// long to keep a connection open ([`ClientConfig::connect_per_beat`]), one per heartbeat.
    pub reconnects: u64,
    /// The round-trip time of the last acknowledged heartbeat.
    pub last_rtt: Option<Duration>,
    /// True while a connection to the server is up.
    pub connected: bool,
    /// True while the heartbeats are paused.
    pub paused: bool,
    /// What last went wrong, in words: a failed connect attempt or a lost connection. Kept
    /// after the client connects again (`connected` says whether it has).
    pub last_error: Option<String>,
    /// How the client ended, once it has and its connection is closed.
    pub exit: Option<Exit>,
}

impl Stats {
    /// Takes in event `e`, with `client` as it is after it.
    fn observe(&mut self, e: &Event, client: &Client, connected_before: &mut bool) {
        self.sent = client.sent();
        self.acked = client.acked();
        self.skipped = client.skipped();
        self.connected = client.is_connected();
        self.paused = client.is_paused();
        match e {
            Event::Acked { rtt, .. } => self.last_rtt = Some(*rtt),
            Event::Connected { .. } => {
                self.reconnects += u64::from(*connected_before);
                *connected_before = true;
            }
            Event::ConnectFailed { reason, .. } => self.last_error = Some(reason.clone()),
            Event::Disconnected { reason, .. } if *reason != DisconnectReason::UntilNextBeat => {
                self.last_error = Some(reason.to_string());
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use heartbeat_core::UnixTime;
    use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader, DuplexStream};
    use tokio::sync::mpsc;

    use super::*;

    /// Connects when the test hands over a stream, and fails once it stops handing them.
    struct Handover(mpsc::Receiver<DuplexStream>);

    impl Connector for Handover {
        type Stream = DuplexStream;

        async fn connect(&mut self) -> io::Result<DuplexStream> {
            self.0
                .recv()
                .await
                .ok_or_else(|| io::Error::from(io::ErrorKind::ConnectionRefused))
        }
    }

    fn clock() -> UnixTime {
        UnixTime::from_duration(Duration::from_secs(1_700_000_000))
    }

    /// The next line the client wrote, or `None` if it wrote nothing for 2 s (paused time).
    async fn line(server: &mut BufReader<DuplexStream>) -> Option<String> {
        let mut line = String::new();
        let read = server.read_line(&mut line);
        match tokio::time::timeout(Duration::from_secs(2), read).await {
            Ok(Ok(n)) if n > 0 => Some(line.trim_end().to_owned()),
            _ => None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_asked_for_while_connecting_holds_back_the_first_heartbeat() {
        let config = ClientConfig::new(ClientId::new("t").unwrap(), Duration::from_millis(100))
            .unwrap()
            .session(1);
        let (streams, rx) = mpsc::channel(1);
        let (handle, task) = Builder::new(config, "unused", 0).build_with(Handover(rx), clock);
        let task = tokio::spawn(task);
        tokio::task::yield_now().await;
        handle.pause();
        let (ours, theirs) = tokio::io::duplex(4096);
        streams.send(theirs).await.unwrap();
        let mut server = BufReader::new(ours);
        assert_eq!(
            line(&mut server).await.as_deref(),
            Some("HELLO 1 t 100 0000000000000001")
        );
        assert_eq!(
            line(&mut server).await,
            None,
            "nothing goes out while paused"
        );
        let stats = handle.stats();
        assert!(
            stats.connected && stats.paused && stats.sent == 0,
            "{stats:?}"
        );

        handle.resume();
        handle.resume();
        let beat = line(&mut server).await.unwrap();
        assert!(beat.starts_with("BEAT 1 "), "{beat}");
        assert!(!handle.stats().paused);

        // The last handle gone, the client says goodbye and ends.
        drop(handle);
        assert_eq!(line(&mut server).await.as_deref(), Some("BYE"));
        assert_eq!(server.read(&mut [0; 8]).await.unwrap(), 0, "closed");
        assert_eq!(task.await.unwrap().unwrap(), Exit::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_while_connecting_ends_at_once_and_exited_agrees() {
        let config =
            ClientConfig::new(ClientId::new("t").unwrap(), Duration::from_secs(1)).unwrap();
        let (_streams, rx) = mpsc::channel(1);
        let (handle, task) = Builder::new(config, "unused", 0).build_with(Handover(rx), clock);
        tokio::spawn(task);
        assert!(!handle.is_finished());
        assert_eq!(handle.clone().shutdown().await, Some(Exit::Closed));
        assert_eq!(handle.exited().await, Some(Exit::Closed));
        assert!(handle.is_finished());
        let stats = handle.stats();
        assert_eq!((stats.sent, stats.connected), (0, false));
    }

    #[tokio::test]
    async fn a_task_that_never_ran_to_its_end_has_no_exit() {
        let config =
            ClientConfig::new(ClientId::new("t").unwrap(), Duration::from_secs(1)).unwrap();
        let (handle, task) = Builder::new(config, "127.0.0.1", 1).build();
        drop(task);
        assert_eq!(handle.exited().await, None);
        assert!(handle.is_finished());
    }

    #[test]
    fn stats_follow_the_events_and_the_clients_counters() {
        let config = ClientConfig::new(ClientId::new("t").unwrap(), Duration::from_secs(1))
            .unwrap()
            .reconnect(Some(Backoff::default()));
        let t0 = heartbeat_core::Now {
            mono: crate::mono_now(),
            unix: clock(),
        };
        let mut client = Client::new(config, t0);
        let mut stats = Stats::default();
        let mut before = false;
        let mut feed = |client: &mut Client, stats: &mut Stats| {
            while let Some(out) = client.poll_output() {
                if let heartbeat_core::client::Output::Event(e) = out {
                    stats.observe(&e, client, &mut before);
                }
            }
        };
        feed(&mut client, &mut stats);
        client.handle_connect_failed(t0, "refused");
        feed(&mut client, &mut stats);
        assert_eq!(stats.last_error.as_deref(), Some("refused"));
        let at = client.poll_timeout().unwrap();
        let t1 = t0.advanced(at - t0.mono);
        client.handle_timeout(t1);
        client.handle_connected(t1);
        client.handle_input(t1.advanced(Duration::from_millis(3)), b"ACK 1 1.0\n");
        feed(&mut client, &mut stats);
        assert_eq!(
            (stats.sent, stats.acked, stats.reconnects, stats.connected),
            (1, 1, 0, true)
        );
        assert_eq!(stats.last_rtt, Some(Duration::from_millis(3)));
        client.handle_eof(t1.advanced(Duration::from_secs(1)));
        feed(&mut client, &mut stats);
        assert_eq!(stats.last_error.as_deref(), Some("closed by peer"));
        assert!(!stats.connected);
        let at = client.poll_timeout().unwrap();
        let t2 = t0.advanced(at - t0.mono);
        client.handle_timeout(t2);
        client.handle_connected(t2);
        client.pause(t2);
        feed(&mut client, &mut stats);
        assert_eq!((stats.reconnects, stats.paused), (1, true));
        assert_eq!(stats.last_error.as_deref(), Some("closed by peer"), "kept");
    }
}
