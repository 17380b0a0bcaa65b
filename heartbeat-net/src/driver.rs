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
//! `LocalSet` for the tasks that close connections, so it runs inside a turmoil host (itself on a `LocalSet`)
//! as well as on a plain tokio runtime; [`run_client`] spawns nothing.

use std::collections::{BTreeSet, VecDeque};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use heartbeat_core::client::{self, Client, Exit};
use heartbeat_core::server::{self, Server};
use heartbeat_core::{ConnId, DisconnectReason, Now};
use rustc_hash::FxHashMap;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;
use tokio::task::{JoinSet, LocalSet};
use tracing::Level;

use crate::NetError;
pub use crate::driver_api::{
    Clock, Connector, Control, ControlError, ControlReceiver, DriverStats, InspectFn, Listener,
    OnEvent, ServerApp, ServerControl, ServerOptions, SystemClock, UpdateFn, mono_now,
    sleep_until_opt,
};
use crate::logsummary::PeerLine;
use crate::shard::{
    Act, ConnWaker, Core, Mail, Outbox, ReadyQueue, Shared, WriteFailure, drain_into,
};

/// Bytes read from the server per `read` call on the client side. Frames are at most 256 bytes.
const CLIENT_READ_BUFFER: usize = 1024;

/// How long closing a stream (flushing and sending FIN) may take before it is simply dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// How many ready connections the server polls (one read each) in one go before it looks at
/// timers, new connections and stop again.
pub(crate) const READY_BATCH: usize = 64;

/// Connections accepted in one go when several are waiting (a reconnect storm), before the
/// server reads what open connections sent.
const ACCEPT_BATCH: usize = 64;

/// How long the server pauses accepting after `accept` fails (out of file descriptors, say), so a
/// persistent error does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Bytes of the driver's write buffer kept between drains; a larger one (after a burst of
/// replies) is freed.
const WRITE_BUFFER_KEEP: usize = 4096;

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

/// Serves connections from `listener` with `server` until `stop` completes, then stops
/// accepting, closes every connection and returns the server, whose analysis stays readable
/// ([`Server::report`]).
///
/// One task owns the `Server` and every stream: it polls the connections that woke (one read
/// each per turn, into one shared buffer, handed to the core in place), and writes the acks of
/// one read as one write straight to the stream, queueing (bounded) only what would block. A
/// connection the core disconnects is flushed and shut down in a task of its own, spawned on a
/// `LocalSet` this function sets up (so the stream needs no `Send`).
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
    let shared = Arc::new(Shared::new(server, app, &options, 1));
    LocalSet::new()
        .run_until(serve(
            listener,
            Arc::clone(&shared),
            Vec::new(),
            options,
            control,
            clock,
            stop,
        ))
        .await?;
    Ok(Shared::into_parts(shared)?.0)
}

/// One open connection, owned by the server task.
struct Conn<S> {
    stream: S,
    /// Wakes the server task for this connection (both directions).
    waker: Arc<ConnWaker>,
    /// Writes the stream would not take at once, in order; bounded by `outbound_capacity`.
    queue: VecDeque<Bytes>,
    /// Written, but the flush (TLS) would have had to wait.
    unflushed: bool,
    /// When the write now waiting must be done by (`write_timeout` after it started waiting).
    write_deadline: Option<Instant>,
    /// The read side ended (end of stream, an error, a failed handshake): only writes remain.
    read_done: bool,
    /// A write failed or timed out (already reported): later writes are discarded.
    broken: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    fn waiting_to_write(&self) -> bool {
        self.unflushed || !self.queue.is_empty()
    }

    /// Writes what is queued (then flushes) as far as the stream takes it now. `Ready(Ok)`
    /// once nothing is left waiting.
    fn poll_writes(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(front) = self.queue.front_mut() {
            match Pin::new(&mut self.stream).poll_write(cx, front) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) if n < front.len() => {
                    bytes::Buf::advance(front, n);
                }
                Poll::Ready(Ok(_)) => {
                    self.queue.pop_front();
                    self.unflushed = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        if self.unflushed {
            match Pin::new(&mut self.stream).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.unflushed = false,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        // Idle again: hold no queue (the usual case, one ack at a time).
        self.queue = VecDeque::new();
        Poll::Ready(Ok(()))
    }
}

/// The open connections. Dropped (the server task cancelled: a crash in the simulator) in the
/// order they were accepted, not the map's, so that what the peers see is reproducible.
/// Keyed by ids the server assigns: hashed fast (FxHash), nothing a peer picks.
struct Conns<S>(FxHashMap<ConnId, Conn<S>>);

impl<S> Drop for Conns<S> {
    fn drop(&mut self) {
        let mut conns: Vec<_> = self.0.drain().collect();
        conns.sort_unstable_by_key(|(conn, _)| *conn);
        for (_, c) in conns {
            drop(c);
        }
    }
}

pub(crate) enum ServerWake<S> {
    Accepted(io::Result<(S, SocketAddr)>),
    AcceptResume,
    App,
    Control(Control),
    FlushLog,
    Ready,
    Stop,
    TaskEnded(Result<(), tokio::task::JoinError>),
    Timeout,
    WriteTimeout,
}

/// What one read of a connection brought, to hand to the core (under the lock).
enum ReadResult {
    /// Nothing yet (the waker is registered), or the connection is gone or done reading.
    Nothing,
    /// This many bytes, in the thread's read buffer.
    Data(usize),
    /// The end of the stream, or a read error.
    Eof,
    /// The TLS handshake failed, for this reason.
    TlsFailed(String),
}

/// One server thread's side of the server: its connections' streams, its ready queue, write
/// deadlines, closing tasks and read buffer. The core (the [`Server`], the application, the
/// connection limits) is in [`Shared`], locked for each call.
pub(crate) struct ServerDriver<S, A> {
    pub(crate) shared: Arc<Shared<A>>,
    /// This thread's number (0: the caller's, which also runs timers and control requests).
    me: usize,
    /// Every connection of this thread the core has not disconnected yet.
    conns: Conns<S>,
    ready: Arc<ReadyQueue>,
    /// Connections with a write waiting, by when it must be done.
    pub(crate) write_deadlines: BTreeSet<(Instant, ConnId)>,
    /// Connections closing (flushing what is queued, then shutting down), after the core
    /// disconnected them.
    pub(crate) tasks: JoinSet<()>,
    pub(crate) options: ServerOptions,
    /// The one read buffer of this thread's connections.
    scratch: Box<[u8]>,
    /// What the core output for this thread's connections, carried out after the lock.
    out: Outbox,
    /// Mail taken from the ready queue, being carried out (kept for its allocation).
    mail: Vec<Mail>,
}

/// What [`ServerDriver::take_mail`] saw besides writes and closes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Signals {
    /// Thread 0 stopped: stop accepting.
    pub(crate) stop: bool,
    /// Thread 0 closed everything: end.
    pub(crate) finish: bool,
}

/// Serves on thread 0 (the caller's) until `stop`; the threads in `threads` (already
/// started, sharing `shared`) are stopped with it. See [`run_server`].
pub(crate) async fn serve<L: Listener, A: ServerApp>(
    listener: L,
    shared: Arc<Shared<A>>,
    threads: Vec<ThreadEnd>,
    options: ServerOptions,
    mut control: ControlReceiver,
    clock: impl Clock,
    stop: impl Future<Output = ()>,
) -> Result<(), NetError> {
    let mut listener = Some(listener);
    let mut d: ServerDriver<L::Stream, A> = ServerDriver::new(shared, 0, options);
    let ready = d.ready.clone();
    let mut stop = std::pin::pin!(stop);
    let mut accept_paused_until: Option<Instant> = None;

    loop {
        d.with_core(&clock, |core, now| core.app.on_wake(&mut core.server, now));
        let (deadline, app_wake) = d.shared.lock().arm();
        let write_deadline = d.write_deadlines.first().map(|&(t, _)| t);
        let wake = tokio::select! {
            biased;
            () = &mut stop => ServerWake::Stop,
            () = sleep_until_opt(deadline) => ServerWake::Timeout,
            () = sleep_until_opt(app_wake) => ServerWake::App,
            c = control.recv() => ServerWake::Control(c),
            Some(r) = d.tasks.join_next(), if !d.tasks.is_empty() => ServerWake::TaskEnded(r),
            () = sleep_until_opt(accept_paused_until) => ServerWake::AcceptResume,
            r = accept_opt(&mut listener), if accept_paused_until.is_none() => {
                ServerWake::Accepted(r)
            }
            () = ready.wait() => ServerWake::Ready,
            () = sleep_until_opt(write_deadline) => ServerWake::WriteTimeout,
            () = sleep_until_opt(d.options.log.next_flush()) => ServerWake::FlushLog,
        };
        match wake {
            ServerWake::Stop => break,
            ServerWake::App => {}
            ServerWake::Timeout => {
                // What the connections already have ready counts before any deadline is
                // judged: a server behind on a reconnect storm must not time out a HELLO
                // waiting for its turn (bounded: the connections ready now).
                d.take_mail(&clock);
                let queued = d.ready.len();
                d.ready_batch(&clock, queued);
                // Another thread reads its own connections; one stuck in its turn (or not
                // taking it) for longer than the pause guard stalls the server's judgement too.
                let shared = Arc::clone(&d.shared);
                d.with_core(&clock, |core, now| {
                    let unread = shared
                        .queues
                        .iter()
                        .filter_map(|q| q.behind_for(now.mono))
                        .max();
                    core.server.handle_timeout_with_unread(now, unread);
                });
            }
            ServerWake::Control(Control::Inspect(f)) => {
                d.with_core(&clock, |core, now| f(&core.server, &core.stats, now));
            }
            // The outputs of the change are carried out as after any input.
            ServerWake::Control(Control::Update(f)) => {
                d.with_core(&clock, |core, now| f(&mut core.server, now));
            }
            ServerWake::Ready => {
                d.take_mail(&clock);
                d.ready_batch(&clock, READY_BATCH);
            }
            other => d.on_wake(other, &clock, &mut listener, &mut accept_paused_until),
        }
    }

    // Stop: no new connections on any thread; what was already ready still counts; close
    // every open connection; let them flush for a moment.
    for q in &d.shared.queues[1..] {
        q.post(Mail::Stop);
    }
    drop(listener);
    d.take_mail(&clock);
    let queued = d.ready.len();
    d.ready_batch(&clock, queued);
    // The other threads read what they had ready too, and stop accepting, before the core
    // closes every connection.
    let started = threads.len();
    let waited = tokio::time::timeout(d.options.shutdown_grace, async {
        while d.shared.stopped.load(Ordering::Acquire) < started {
            ready.wait().await;
            d.take_mail(&clock);
            d.ready_batch(&clock, READY_BATCH);
            // The wait above returns at once while connections are ready: let the timeout
            // run.
            tokio::task::yield_now().await;
        }
    })
    .await;
    if waited.is_err() {
        tracing::debug!("server threads slow to stop; closing their connections anyway");
    }
    d.with_core(&clock, |core, now| core.server.close_all(now));
    d.with_core(&clock, |core, now| core.app.on_wake(&mut core.server, now));
    for q in &d.shared.queues[1..] {
        q.post(Mail::Finish);
    }
    d.take_mail(&clock);
    d.finish().await;
    for end in threads {
        end.join().await;
    }
    d.options.log.flush_all(clock.now().mono);
    Ok(())
}

/// Hands the core the writes that failed, emptying `failed`: one blocked or timed out as a peer
/// not reading its acknowledgements, any other as an end of stream.
fn hand_failures(server: &mut Server, failed: &mut Vec<(ConnId, WriteFailure)>, now: Now) {
    for (conn, failure) in failed.drain(..) {
        match failure {
            WriteFailure::Blocked | WriteFailure::Io(io::ErrorKind::TimedOut) => {
                server.handle_write_blocked(now, conn);
            }
            WriteFailure::Io(_) => server.handle_eof(now, conn),
        }
    }
}

/// Accepts from the listener if there is one; pending forever otherwise. Cancel safe.
pub(crate) async fn accept_opt<L: Listener>(
    listener: &mut Option<L>,
) -> io::Result<(L::Stream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + 'static, A: ServerApp> ServerDriver<S, A> {
    /// Thread `me`'s side of the server sharing `shared`.
    pub(crate) fn new(shared: Arc<Shared<A>>, me: usize, options: ServerOptions) -> Self {
        Self {
            ready: Arc::clone(&shared.queues[me]),
            shared,
            me,
            conns: Conns(FxHashMap::default()),
            write_deadlines: BTreeSet::new(),
            tasks: JoinSet::new(),
            scratch: vec![0u8; options.read_buffer.max(1)].into_boxed_slice(),
            options,
            out: Outbox::default(),
            mail: Vec::new(),
        }
    }

    /// The wakes every server thread handles alike: accepting, closing tasks, write
    /// deadlines, log flushes.
    pub(crate) fn on_wake<L: Listener<Stream = S>>(
        &mut self,
        wake: ServerWake<S>,
        clock: &impl Clock,
        listener: &mut Option<L>,
        accept_paused_until: &mut Option<Instant>,
    ) {
        match wake {
            ServerWake::FlushLog => self.options.log.flush(clock.now().mono),
            ServerWake::WriteTimeout => self.write_timeouts(clock),
            ServerWake::TaskEnded(r) => {
                if let Err(e) = r {
                    self.options.log.peer(
                        clock.now().mono,
                        Level::ERROR,
                        PeerLine::ConnectionTaskFailed,
                        format_args!("connection task failed: {e}"),
                    );
                }
            }
            ServerWake::AcceptResume => *accept_paused_until = None,
            ServerWake::Accepted(Ok((stream, peer))) => {
                self.accept(clock, stream, peer);
                // A storm: take the connections already waiting in the listen queue too, a
                // batch at a time, without going round the loop for each.
                for _ in 1..ACCEPT_BATCH {
                    let Some(l) = listener.as_mut() else { break };
                    match accept_ready(l) {
                        Some(Ok((stream, peer))) => self.accept(clock, stream, peer),
                        Some(Err(e)) => {
                            let now = clock.now();
                            self.accept_failed(now, &e);
                            *accept_paused_until = Some(now.mono + ACCEPT_ERROR_PAUSE);
                            break;
                        }
                        None => break,
                    }
                }
                // Connects and data take turns: after each accept, a batch of what open
                // connections sent, so a flood of connects cannot starve the clients already
                // connected (accepting comes first above, so data cannot starve connects).
                self.ready_batch(clock, READY_BATCH);
            }
            ServerWake::Accepted(Err(e)) => {
                let now = clock.now();
                self.accept_failed(now, &e);
                *accept_paused_until = Some(now.mono + ACCEPT_ERROR_PAUSE);
            }
            ServerWake::Ready => {
                self.take_mail(clock);
                self.ready_batch(clock, READY_BATCH);
            }
            ServerWake::App | ServerWake::Control(_) | ServerWake::Stop | ServerWake::Timeout => {}
        }
    }

    /// Runs `f` on the core under the lock, with the time read under it (so the core sees
    /// time in order across threads), then carries out what the core output: after the
    /// lock for this thread's connections, through the mail for other threads'.
    pub(crate) fn with_core<R>(
        &mut self,
        clock: &impl Clock,
        f: impl FnOnce(&mut Core<A>, Now) -> R,
    ) -> R {
        let mut core = self.shared.lock();
        let now = clock.now();
        let r = f(&mut core, now);
        drain_into(&mut core, self.me, now, &mut self.out, &self.shared.queues);
        drop(core);
        self.settle(clock, now);
        r
    }

    /// Carries out what [`drain_into`] gathered for this thread, then hands the core the
    /// writes that failed (under the lock), until nothing is left.
    fn settle(&mut self, clock: &impl Clock, now: Now) {
        loop {
            self.carry_out(now);
            if self.out.failed.is_empty() {
                return;
            }
            let mut core = self.shared.lock();
            let now = clock.now();
            hand_failures(&mut core.server, &mut self.out.failed, now);
            drain_into(&mut core, self.me, now, &mut self.out, &self.shared.queues);
        }
    }

    /// Carries out the writes and closes gathered in the outbox, in order.
    fn carry_out(&mut self, now: Now) {
        let mut acts = std::mem::take(&mut self.out.acts);
        let wbuf = std::mem::take(&mut self.out.wbuf);
        let mut start = 0;
        for act in acts.drain(..) {
            match act {
                Act::Write { conn, end } => {
                    self.transmit(now, conn, &wbuf[start..end]);
                    start = end;
                }
                Act::Close(conn) => self.close(conn),
            }
        }
        self.out.acts = acts;
        self.out.wbuf = wbuf;
        self.out.wbuf.clear();
        if self.out.wbuf.capacity() > WRITE_BUFFER_KEEP {
            self.out.wbuf = Vec::new();
        }
    }

    /// Carries out the mail of other threads (writes and closes of this thread's
    /// connections), and says whether it held a stop or a finish.
    pub(crate) fn take_mail(&mut self, clock: &impl Clock) -> Signals {
        self.ready.take_mail(&mut self.mail);
        let mut signals = Signals::default();
        if self.mail.is_empty() {
            return signals;
        }
        let now = clock.now();
        let mut mail = std::mem::take(&mut self.mail);
        for m in mail.drain(..) {
            match m {
                Mail::Write(conn, bytes) => self.transmit(now, conn, &bytes),
                Mail::Close(conn) => self.close(conn),
                Mail::Wake => {}
                Mail::Stop => signals.stop = true,
                Mail::Finish => signals.finish = true,
            }
        }
        self.mail = mail;
        if !self.out.failed.is_empty() {
            self.settle(clock, now);
        }
        signals
    }

    /// Writes `bytes` to `conn` (if it is still open): straight to the stream when nothing
    /// waits ahead of it; what the stream does not take now is queued, and written when the
    /// connection wakes as writable. A failure is kept for the core (see [`Self::settle`]).
    fn transmit(&mut self, now: Now, conn: ConnId, bytes: &[u8]) {
        let capacity = self.options.outbound_capacity.max(1);
        let result = match self.conns.0.get_mut(&conn) {
            None => Ok(()),
            Some(c) if c.broken => Ok(()),
            Some(c) if c.waiting_to_write() => {
                if c.queue.len() >= capacity {
                    Err(None)
                } else {
                    c.queue.push_back(Bytes::copy_from_slice(bytes));
                    Ok(())
                }
            }
            Some(c) => {
                let waker = Waker::from(c.waker.clone());
                let mut cx = Context::from_waker(&waker);
                let mut done = 0;
                let mut result = Ok(());
                while done < bytes.len() {
                    match Pin::new(&mut c.stream).poll_write(&mut cx, &bytes[done..]) {
                        Poll::Ready(Ok(0)) => {
                            result = Err(Some(io::ErrorKind::WriteZero.into()));
                            break;
                        }
                        Poll::Ready(Ok(n)) => done += n,
                        Poll::Ready(Err(e)) => {
                            result = Err(Some(e));
                            break;
                        }
                        Poll::Pending => {
                            c.queue.push_back(Bytes::copy_from_slice(&bytes[done..]));
                            break;
                        }
                    }
                }
                if result.is_ok() && c.queue.is_empty() {
                    match Pin::new(&mut c.stream).poll_flush(&mut cx) {
                        Poll::Ready(Ok(())) => {}
                        Poll::Ready(Err(e)) => result = Err(Some(e)),
                        Poll::Pending => c.unflushed = true,
                    }
                }
                if result.is_ok() && c.waiting_to_write() {
                    let deadline = now.mono + self.options.write_timeout;
                    c.write_deadline = Some(deadline);
                    self.write_deadlines.insert((deadline, conn));
                }
                result
            }
        };
        match result {
            Ok(()) => {}
            Err(None) => self.out.failed.push((conn, WriteFailure::Blocked)),
            Err(Some(e)) => self.write_failed(conn, &e),
        }
    }

    /// A write failed: later ones are discarded, and the core will hear of it as an end of
    /// stream (a timed-out one as a peer not reading).
    fn write_failed(&mut self, conn: ConnId, e: &io::Error) {
        tracing::debug!(%conn, error = %e, "write failed");
        if let Some(c) = self.conns.0.get_mut(&conn) {
            c.broken = true;
            c.queue = VecDeque::new();
            c.unflushed = false;
            if let Some(t) = c.write_deadline.take() {
                self.write_deadlines.remove(&(t, conn));
            }
        }
        self.out.failed.push((conn, WriteFailure::Io(e.kind())));
    }

    /// Connections whose waiting write passed its deadline: peers not reading.
    fn write_timeouts(&mut self, clock: &impl Clock) {
        let now = clock.now();
        while let Some(&(t, conn)) = self.write_deadlines.first() {
            if t > now.mono {
                break;
            }
            self.write_deadlines.pop_first();
            if let Some(c) = self.conns.0.get_mut(&conn) {
                c.write_deadline = None;
            }
            let e = io::Error::new(io::ErrorKind::TimedOut, "write timed out");
            self.write_failed(conn, &e);
            self.settle(clock, now);
        }
    }

    /// Closes a connection the core disconnected: what is queued is written and the stream
    /// shut down in a task of its own (bounded by the write timeout and [`CLOSE_TIMEOUT`]).
    fn close(&mut self, conn: ConnId) {
        let Some(mut c) = self.conns.0.remove(&conn) else {
            return;
        };
        if let Some(t) = c.write_deadline.take() {
            self.write_deadlines.remove(&(t, conn));
        }
        if c.broken {
            return;
        }
        let write_timeout = self.options.write_timeout;
        self.tasks.spawn_local(async move {
            let flushed =
                tokio::time::timeout(write_timeout, std::future::poll_fn(|cx| c.poll_writes(cx)))
                    .await;
            if matches!(flushed, Ok(Ok(()))) {
                close_stream(&mut c.stream).await;
            }
        });
    }

    /// Closes what the core left open (none, normally) in a fixed order (the simulator
    /// replays runs), then lets the closing connections flush for `shutdown_grace`.
    pub(crate) async fn finish(&mut self) {
        let mut left: Vec<ConnId> = self.conns.0.keys().copied().collect();
        left.sort_unstable();
        for conn in left {
            self.close(conn);
        }
        let grace = self.options.shutdown_grace;
        let tasks = &mut self.tasks;
        let flushed =
            tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        if flushed.is_err() {
            tracing::debug!(left = tasks.len(), "connections still closing; dropped");
        }
        tasks.abort_all();
    }

    /// Polls up to `limit` ready connections, each once: what is waiting to be written, then
    /// one read, handed to the core straight from the shared buffer (one lock per read). A
    /// connection that read something is listed again at the back, so a flooding peer gets
    /// one read per turn like everyone else.
    ///
    /// What is read is stamped with the clock read after that read (under the lock), never
    /// with one read before it: a heartbeat that arrived after the loop woke must not be
    /// received before it was sent (a negative one-way delay).
    pub(crate) fn ready_batch(&mut self, clock: &impl Clock, limit: usize) {
        self.ready.turn_started();
        self.ready_turn(clock, limit);
        self.ready.turn_ended();
    }

    /// [`Self::ready_batch`]'s work.
    fn ready_turn(&mut self, clock: &impl Clock, limit: usize) {
        for _ in 0..limit {
            let Some(conn) = self.ready.pop() else { break };
            let read = self.poll_conn(conn);
            if let ReadResult::Nothing = read {
                if !self.out.failed.is_empty() {
                    self.settle(clock, clock.now());
                }
                continue;
            }
            let mut core = self.shared.lock();
            let now = clock.now();
            hand_failures(&mut core.server, &mut self.out.failed, now);
            match read {
                ReadResult::Nothing => {}
                ReadResult::Data(n) => core.server.handle_input(now, conn, &self.scratch[..n]),
                ReadResult::Eof => core.server.handle_eof(now, conn),
                ReadResult::TlsFailed(why) => core.server.handle_tls_failed(now, conn, why),
            }
            drain_into(&mut core, self.me, now, &mut self.out, &self.shared.queues);
            drop(core);
            self.settle(clock, now);
        }
    }

    /// Polls one connection (see [`Self::ready_batch`]) without the core: a write failure is
    /// kept in the outbox, what was read is returned.
    fn poll_conn(&mut self, conn: ConnId) -> ReadResult {
        let Some(c) = self.conns.0.get_mut(&conn) else {
            return ReadResult::Nothing;
        };
        c.waker.queued.store(false, Ordering::Release);
        let waker = Waker::from(c.waker.clone());
        let mut cx = Context::from_waker(&waker);
        if !c.broken && c.waiting_to_write() {
            match c.poll_writes(&mut cx) {
                Poll::Pending => {}
                Poll::Ready(Ok(())) => {
                    if let Some(t) = c.write_deadline.take() {
                        self.write_deadlines.remove(&(t, conn));
                    }
                }
                Poll::Ready(Err(e)) => {
                    self.write_failed(conn, &e);
                    return ReadResult::Nothing;
                }
            }
        }
        if c.read_done {
            return ReadResult::Nothing;
        }
        let mut buf = ReadBuf::new(&mut self.scratch);
        match Pin::new(&mut c.stream).poll_read(&mut cx, &mut buf) {
            Poll::Pending => ReadResult::Nothing,
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len();
                if n == 0 {
                    c.read_done = true;
                    ReadResult::Eof
                } else {
                    // Read again on its next turn (until it would block, which registers the
                    // waker; a short read usually already knows it would).
                    c.waker.wake_by_ref();
                    ReadResult::Data(n)
                }
            }
            Poll::Ready(Err(e)) => {
                c.read_done = true;
                match crate::error::handshake_failure(&e) {
                    Some(why) => ReadResult::TlsFailed(why.to_owned()),
                    None => {
                        tracing::debug!(%conn, error = %e, "read failed");
                        ReadResult::Eof
                    }
                }
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

    fn accept(&mut self, clock: &impl Clock, stream: S, peer: SocketAddr) {
        let mut core = self.shared.lock();
        let now = clock.now();
        if let Err(refusal) = core.limits.check(peer) {
            let limit = match refusal {
                crate::limits::Refusal::Total => {
                    core.stats.rejected_max_connections += 1;
                    self.options.max_connections
                }
                crate::limits::Refusal::PerIp => {
                    core.stats.rejected_per_ip += 1;
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
            core.app.on_refused(refusal, peer, now);
            return;
        }
        let conn = core.server.accept(now, peer);
        core.opened(conn, peer, self.me);
        self.options.log.peer(
            now.mono,
            Level::INFO,
            PeerLine::Accepted,
            format_args!("Accepted connection from {}", seed_peer(peer)),
        );
        drain_into(&mut core, self.me, now, &mut self.out, &self.shared.queues);
        drop(core);
        let waker = Arc::new(ConnWaker {
            conn,
            queued: AtomicBool::new(true),
            ready: self.ready.clone(),
        });
        // Polled on its first turn: that registers its waker (and reads what it already sent).
        self.ready.list_new(conn);
        self.conns.0.insert(
            conn,
            Conn {
                stream,
                waker,
                queue: VecDeque::new(),
                unflushed: false,
                write_deadline: None,
                read_done: false,
                broken: false,
            },
        );
        self.settle(clock, now);
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
    // Boxed: the timer is large and rarely needed, and the caller's future would otherwise
    // carry room for it.
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

/// Makes one server thread's listener, on that thread (so that thread's runtime registers
/// the socket): see [`run_server_threads`].
pub type MakeListener<L> = Box<dyn FnOnce() -> io::Result<L> + Send>;

/// A started server thread: its end is awaited at stop.
pub(crate) struct ThreadEnd {
    done: tokio::sync::oneshot::Receiver<()>,
    handle: std::thread::JoinHandle<()>,
}

impl ThreadEnd {
    /// Waits until the thread ended.
    pub(crate) async fn join(self) {
        let _ = self.done.await;
        if self.handle.join().is_err() {
            tracing::error!("a server thread panicked"); // not caused by a peer
        }
    }
}

/// [`run_server_app`] on `1 + more.len()` threads: this one (thread
/// 0) serves `listener`, and each of `more` makes the listener of one more thread, on that
/// thread. The connections each listener accepts are served by its thread; the core, the
/// application and the connection limits are shared under one lock (see the module docs).
/// With `more` empty this is exactly `run_server_app`.
///
/// Returns the server and the application once every thread has ended. A thread that cannot
/// be started is logged and served without (its listener is closed).
#[allow(clippy::too_many_arguments)]
pub async fn run_server_threads<L, A, C>(
    listener: L,
    more: Vec<MakeListener<L>>,
    server: Server,
    options: ServerOptions,
    control: ControlReceiver,
    clock: C,
    stop: impl Future<Output = ()>,
    app: A,
) -> Result<(Server, A), NetError>
where
    L: Listener + 'static,
    A: ServerApp + Send + 'static,
    C: Clock + Clone + Send + 'static,
{
    let shared = Arc::new(Shared::new(server, app, &options, 1 + more.len()));
    let mut threads = Vec::new();
    for (i, make) in more.into_iter().enumerate() {
        let me = i + 1;
        let (done_tx, done) = tokio::sync::oneshot::channel();
        let (shared, options, clock) = (Arc::clone(&shared), options.clone(), clock.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("heartbeat-{me}"))
            .spawn(move || {
                run_thread(make, &shared, me, options, clock);
                drop(shared);
                let _ = done_tx.send(());
            });
        match spawned {
            Ok(handle) => threads.push(ThreadEnd { done, handle }),
            Err(e) => tracing::error!("cannot start server thread {me}: {e}"), // not caused by a peer
        }
    }
    LocalSet::new()
        .run_until(serve(
            listener,
            Arc::clone(&shared),
            threads,
            options,
            control,
            clock,
            stop,
        ))
        .await?;
    Shared::into_parts(shared)
}

/// Runs server thread `me` on a runtime of its own until thread 0 finishes it.
fn run_thread<L: Listener, A: ServerApp>(
    make: MakeListener<L>,
    shared: &Arc<Shared<A>>,
    me: usize,
    options: ServerOptions,
    clock: impl Clock,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the runtime of server thread {me}: {e}"); // not caused by a peer
            // Counted as stopped, so thread 0 does not wait for it.
            shared.stopped.fetch_add(1, Ordering::AcqRel);
            return;
        }
    };
    LocalSet::new().block_on(&rt, async {
        let listener = match make() {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::error!("server thread {me} cannot listen: {e}"); // not caused by a peer
                None
            }
        };
        shard(listener, Arc::clone(shared), me, options, clock).await;
    });
}

/// The loop of server thread `me` (not 0): accept, read, carry out the mail, until
/// [`Mail::Finish`].
async fn shard<L: Listener, A: ServerApp>(
    mut listener: Option<L>,
    shared: Arc<Shared<A>>,
    me: usize,
    options: ServerOptions,
    clock: impl Clock,
) {
    let mut d: ServerDriver<L::Stream, A> = ServerDriver::new(shared, me, options);
    let ready = Arc::clone(&d.shared.queues[me]);
    let mut accept_paused_until: Option<Instant> = None;
    let mut stopped = false;
    loop {
        let write_deadline = d.write_deadlines.first().map(|&(t, _)| t);
        let wake = tokio::select! {
            biased;
            Some(r) = d.tasks.join_next(), if !d.tasks.is_empty() => ServerWake::TaskEnded(r),
            () = sleep_until_opt(accept_paused_until) => ServerWake::AcceptResume,
            r = accept_opt(&mut listener), if accept_paused_until.is_none() => {
                ServerWake::Accepted(r)
            }
            () = ready.wait() => ServerWake::Ready,
            () = sleep_until_opt(write_deadline) => ServerWake::WriteTimeout,
            () = sleep_until_opt(d.options.log.next_flush()) => ServerWake::FlushLog,
        };
        if let ServerWake::Ready = wake {
            let signals = d.take_mail(&clock);
            if signals.stop && !stopped {
                stopped = true;
                listener = None;
                accept_paused_until = None;
                let queued = ready.len();
                d.ready_batch(&clock, queued);
                d.shared.stopped.fetch_add(1, Ordering::AcqRel);
                if let Some(q) = d.shared.queues.first() {
                    q.post(Mail::Wake);
                }
            }
            if signals.finish {
                break;
            }
            d.ready_batch(&clock, crate::driver::READY_BATCH);
        } else {
            d.on_wake(wake, &clock, &mut listener, &mut accept_paused_until);
        }
    }
    d.finish().await;
}

#[cfg(test)]
mod tests {
    use heartbeat_core::UnixTime;
    use tokio::sync::mpsc;

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

#[cfg(test)]
mod thread_tests {
    use std::sync::Mutex;

    use std::time::Duration;

    use heartbeat_core::config::ServerConfig;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio::sync::mpsc;

    use super::*;
    use crate::driver::{OnEvent, ServerControl};
    use crate::{ServerOptions, SystemClock};

    /// Streams (from memory) handed to the thread of the test's choice.
    struct MemListener<S = DuplexStream>(mpsc::Receiver<(S, SocketAddr)>);

    impl<S: AsyncRead + AsyncWrite + Unpin + 'static> Listener for MemListener<S> {
        type Stream = S;

        async fn accept(&mut self) -> io::Result<(S, SocketAddr)> {
            match self.0.recv().await {
                Some(s) => Ok(s),
                None => std::future::pending().await,
            }
        }
    }

    type Accept = mpsc::Sender<(DuplexStream, SocketAddr)>;

    /// A new connection on the thread fed by `accept`; the peer's end.
    async fn connect(accept: &Accept, port: u16) -> DuplexStream {
        let (ours, theirs) = tokio::io::duplex(4096);
        let peer = SocketAddr::from(([127, 0, 0, 1], port));
        accept.send((theirs, peer)).await.unwrap();
        ours
    }

    /// Reads from `peer` until the server closes it (at most 5 s); what it sent.
    async fn read_to_close(peer: &mut DuplexStream) -> String {
        let mut got = String::new();
        tokio::time::timeout(Duration::from_secs(5), peer.read_to_string(&mut got))
            .await
            .expect("the server did not close the connection")
            .unwrap();
        got
    }

    /// The unix time now, as a heartbeat stamp.
    fn stamp() -> String {
        let t = SystemClock.unix().as_duration();
        format!("{}.{:06}", t.as_secs(), t.subsec_micros())
    }

    #[tokio::test]
    async fn two_threads_share_one_core() {
        LocalSet::new().run_until(two_threads()).await;
    }

    /// [`two_threads_share_one_core`], on a `LocalSet`.
    async fn two_threads() {
        let config = ServerConfig::default()
            .hello_timeout(Duration::from_millis(300))
            .unwrap();
        let (accept0, rx0) = mpsc::channel(4);
        let (accept1, rx1) = mpsc::channel(4);
        let more: Vec<MakeListener<MemListener>> = vec![Box::new(move || Ok(MemListener(rx1)))];
        let (control, control_rx) = ServerControl::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let events = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&events);
        let app = OnEvent(move |e: &server::Event, _: Now| {
            if let server::Event::Disconnected { client, reason, .. } = e {
                let who = client.as_ref().map_or("-".to_owned(), ToString::to_string);
                seen.lock()
                    .unwrap()
                    .push(format!("{who}: {}", reason.label()));
            }
        });
        let served = tokio::task::spawn_local(run_server_threads(
            MemListener(rx0),
            more,
            Server::new(Arc::new(config)),
            ServerOptions::default(),
            control_rx,
            SystemClock,
            async {
                let _ = stop_rx.await;
            },
            app,
        ));

        // A connection of thread 1 that never says HELLO: its accept moved the core's next
        // timer, which thread 0 runs; thread 0 must have been woken for it.
        let mut silent = connect(&accept1, 30_000).await;
        let told = read_to_close(&mut silent).await;
        assert!(
            told.starts_with("ERROR timed out waiting for HELLO"),
            "{told:?}"
        );

        // One client on each thread: every heartbeat acknowledged on its own connection.
        let mut a = connect(&accept0, 30_001).await;
        let mut b = connect(&accept1, 30_002).await;
        for (peer, id) in [(&mut a, "a"), (&mut b, "b")] {
            let beats: String = (1..=5).map(|s| format!("BEAT {s} {}\n", stamp())).collect();
            let hello = format!("HELLO 1 {id} 1000 00000000000000aa\n{beats}");
            peer.write_all(hello.as_bytes()).await.unwrap();
        }
        for peer in [&mut a, &mut b] {
            let mut got = String::new();
            while got.matches("ACK ").count() < 5 {
                let mut buf = [0u8; 1024];
                let n = peer.read(&mut buf).await.unwrap();
                assert!(n > 0, "{got}");
                got.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
        let timeout = Duration::from_secs(5);
        let per_thread = control
            .inspect(timeout, |_, d, _| d.thread_connections.clone())
            .await
            .unwrap();
        assert_eq!(per_thread, [1, 1]);

        // The identity rule across threads: the same client (same session) again, on thread
        // 1, replaces the live connection of thread 0, which thread 0 closes.
        let mut a2 = connect(&accept1, 30_003).await;
        a2.write_all(b"HELLO 1 a 1000 00000000000000aa\n")
            .await
            .unwrap();
        let rest = read_to_close(&mut a).await;
        assert!(!rest.contains("ACK"), "{rest:?}");
        let per_thread = control
            .inspect(timeout, |_, d, _| d.thread_connections.clone())
            .await
            .unwrap();
        assert_eq!(per_thread, [0, 2]);

        let _ = stop_tx.send(());
        let (server, _app) = served.await.unwrap().unwrap();
        let report = server.report();
        let received: Vec<(String, u64)> = report
            .clients
            .iter()
            .map(|c| (c.client.to_string(), c.received))
            .collect();
        assert_eq!(received, [("a".to_owned(), 5), ("b".to_owned(), 5)]);
        let events = events.lock().unwrap().clone();
        assert_eq!(
            events.first().map(String::as_str),
            Some("-: hello_timeout"),
            "{events:?}"
        );
        assert_eq!(events.len(), 4, "{events:?}");
        for peer in [&mut b, &mut a2] {
            read_to_close(peer).await;
        }
    }

    /// A stream from memory whose next read, once `stall` holds a duration, first blocks its
    /// thread that long: a server thread descheduled or stuck with input waiting.
    struct Stalling {
        inner: DuplexStream,
        stall: Arc<Mutex<Option<Duration>>>,
    }

    impl tokio::io::AsyncRead for Stalling {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            let stall = self.stall.lock().unwrap().take();
            if let Some(d) = stall {
                std::thread::sleep(d);
            }
            std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl tokio::io::AsyncWrite for Stalling {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<io::Result<usize>> {
            std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
        }

        fn poll_flush(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::pin::Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    #[tokio::test]
    async fn a_thread_stalled_with_input_waiting_gets_its_clients_convicted_by_nobody() {
        LocalSet::new().run_until(stalled_thread()).await;
    }

    /// [`a_thread_stalled_with_input_waiting_gets_its_clients_convicted_by_nobody`]: a client
    /// of thread 1 keeps sending while thread 1 is blocked for 1.5 s; thread 0, which judges
    /// every deadline on time, must not declare it down on the evidence it cannot read.
    async fn stalled_thread() {
        let config = ServerConfig::default()
            .detector(heartbeat_core::DetectorConfig::new(
                heartbeat_core::DetectorKind::Fixed,
            ))
            .pause_guard(Duration::from_millis(50))
            .unwrap();
        let (_accept0, rx0) = mpsc::channel(4);
        let (accept1, rx1) = mpsc::channel(4);
        let more: Vec<MakeListener<MemListener<Stalling>>> =
            vec![Box::new(move || Ok(MemListener(rx1)))];
        let (_control, control_rx) = ServerControl::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let events = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&events);
        let app = OnEvent(move |e: &server::Event, _: Now| match e {
            server::Event::Transition { .. } | server::Event::Stalled { .. } => {
                seen.lock().unwrap().push(e.to_string());
            }
            _ => {}
        });
        let served = tokio::task::spawn_local(run_server_threads(
            MemListener(rx0),
            more,
            Server::new(Arc::new(config)),
            ServerOptions::default(),
            control_rx,
            SystemClock,
            async {
                let _ = stop_rx.await;
            },
            app,
        ));

        let (mut b, theirs) = tokio::io::duplex(1 << 16);
        let stall = Arc::new(Mutex::new(None));
        let stream = Stalling {
            inner: theirs,
            stall: Arc::clone(&stall),
        };
        accept1
            .send((stream, SocketAddr::from(([127, 0, 0, 1], 30_010))))
            .await
            .unwrap();
        b.write_all(b"HELLO 1 b 100 00000000000000bb\n")
            .await
            .unwrap();
        // Acks are read (and dropped) meanwhile, so that the server never waits on b.
        let (mut b_read, mut b_write) = tokio::io::split(b);
        let reader = tokio::task::spawn_local(async move {
            let mut sink = Vec::new();
            let _ = b_read.read_to_end(&mut sink).await;
        });
        for seq in 1..=30u64 {
            if seq == 6 {
                // Thread 1's next read blocks it for 1.5 s: fifteen intervals, where the
                // fixed detector declares b down after three.
                *stall.lock().unwrap() = Some(Duration::from_millis(1500));
            }
            let beat = format!("BEAT {seq} {}\n", stamp());
            b_write.write_all(beat.as_bytes()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = stop_tx.send(());
        let (server, _app) = served.await.unwrap().unwrap();
        drop(b_write);
        let _ = reader.await;
        let events = events.lock().unwrap().clone();
        assert!(
            !events.iter().any(|e| e.contains("->down")),
            "b was convicted while its thread stalled: {events:?}"
        );
        assert!(
            events.iter().any(|e| e.starts_with("stalled")),
            "{events:?}"
        );
        let report = server.report();
        assert_eq!(report.clients[0].received, 30, "{events:?}");
    }
}
