//! The server on several threads (`heartbeat-server --threads N`): a locked core, sharded I/O.
//!
//! One [`Server`] (with the application, the connection limits and a table saying which
//! thread owns each connection) lives in one [`Mutex`] shared by the threads. Each thread owns
//! the streams of the connections it accepted (its own ready queue, read buffer, write
//! deadlines and closing tasks), reads them without the lock, then takes the lock once per
//! read to hand the input to the core and drain its outputs: writes and closes of its own
//! connections are gathered and carried out *after* the lock is released (no syscall under
//! the lock); those of another thread's connections (a timeout, the identity rule closing an
//! older connection) go to that thread's mail, which wakes it. Events go to the application
//! under the lock, in the core's order. So the identity rule, the report, the metrics and the
//! state need nothing new: there is one `Server`.
//!
//! Thread 0 is the caller's loop ([`run_server_app`](crate::run_server_app) is this with one
//! thread): it alone also runs the core's timers, the [`Control`](crate::Control) requests,
//! the application's wakes, and stop. Threads 1 to N-1 are std threads, each with a
//! current-thread tokio runtime and a `LocalSet`, accepting from a listener of their own
//! (made on that thread, so its runtime registers the socket; see
//! [`TcpListener::bind_shards`](crate::TcpListener::bind_shards) for `SO_REUSEPORT`).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::Instant;

use heartbeat_core::server::{self, Server};
use heartbeat_core::{ConnId, Now};
use tokio::task::LocalSet;

use crate::NetError;
use crate::driver::{
    Clock, ControlReceiver, DriverStats, Listener, ReadyQueue, ServerApp, ServerDriver,
    ServerOptions, ServerWake, accept_opt, serve, sleep_until_opt,
};
use crate::limits::ConnectionLimits;

/// Makes one server thread's listener, on that thread (so that thread's runtime registers
/// the socket): see [`run_server_threads`].
pub type MakeListener<L> = Box<dyn FnOnce() -> io::Result<L> + Send>;

/// What one server thread asks of another: carried out by the owner of the connection,
/// outside the core's lock, in the order posted.
#[derive(Debug)]
pub(crate) enum Mail {
    /// Write these bytes to a connection of the receiving thread.
    Write(ConnId, Vec<u8>),
    /// Close a connection of the receiving thread (the core disconnected it).
    Close(ConnId),
    /// Thread 0: the core's next timer or the application's next wake may be earlier than the
    /// one you sleep for.
    Wake,
    /// Stop accepting, read what is ready, then say so ([`Shared::stopped`]).
    Stop,
    /// Every connection was closed: close what is left and end.
    Finish,
}

/// What the threads share, under one lock: the core and whatever keeps it company.
pub(crate) struct Core<A> {
    /// The one core machine.
    pub(crate) server: Server,
    /// The application, fed every event under the lock.
    pub(crate) app: A,
    /// The connection limits, across threads.
    pub(crate) limits: ConnectionLimits,
    /// The driver's counters, with the open connections of each thread.
    pub(crate) stats: DriverStats,
    /// The thread of each open connection; `None` with one thread (all are thread 0's).
    route: Option<HashMap<ConnId, usize>>,
    /// What thread 0 sleeps until for the core's timers and the application (see
    /// [`Mail::Wake`]).
    armed: Option<Instant>,
}

impl<A: ServerApp> Core<A> {
    /// The thread owning `conn`.
    fn owner(&self, conn: ConnId) -> usize {
        self.route
            .as_ref()
            .and_then(|r| r.get(&conn))
            .copied()
            .unwrap_or(0)
    }

    /// Connection `conn` from `peer` was accepted by thread `thread`.
    pub(crate) fn opened(&mut self, conn: ConnId, peer: SocketAddr, thread: usize) {
        self.limits.opened(conn, peer);
        if let Some(route) = &mut self.route {
            route.insert(conn, thread);
        }
        if let Some(n) = self.stats.thread_connections.get_mut(thread) {
            *n += 1;
        }
    }

    /// Connection `conn` is disconnected; returns its thread.
    fn closed(&mut self, conn: ConnId) -> usize {
        self.limits.closed(conn);
        let thread = match &mut self.route {
            Some(route) => route.remove(&conn).unwrap_or(0),
            None => 0,
        };
        if let Some(n) = self.stats.thread_connections.get_mut(thread) {
            *n = n.saturating_sub(1);
        }
        thread
    }

    /// For thread 0, before it sleeps: the core's next timer and the application's next
    /// wake, remembered so that another thread can tell when it must wake thread 0 earlier.
    pub(crate) fn arm(&mut self) -> (Option<Instant>, Option<Instant>) {
        let deadline = self.server.poll_timeout();
        let app = self.app.next_wake();
        self.armed = deadline.into_iter().chain(app).min();
        (deadline, app)
    }

    /// For threads other than 0, after a call into the core: whether thread 0 now sleeps too
    /// long (its timers moved earlier); if so, it is remembered as woken.
    fn rearm(&mut self) -> bool {
        let next = self
            .server
            .poll_timeout()
            .into_iter()
            .chain(self.app.next_wake())
            .min();
        match (next, self.armed) {
            (Some(n), Some(a)) if n >= a => false,
            (None, _) => false,
            (Some(n), _) => {
                self.armed = Some(n);
                true
            }
        }
    }
}

/// The core's lock, each thread's queue, and the count of threads stopped.
pub(crate) struct Shared<A> {
    core: Mutex<Core<A>>,
    /// The ready queue and mail of each thread, by thread number.
    pub(crate) queues: Vec<Arc<ReadyQueue>>,
    /// Threads (other than 0) that stopped accepting after [`Mail::Stop`].
    pub(crate) stopped: AtomicUsize,
    /// Time under the lock, when measured ([`ServerOptions::measure_lock`]).
    held: Option<LockTimes>,
}

/// How long the core's lock was held, and how often it was waited for.
#[derive(Debug)]
struct LockTimes {
    since: Instant,
    held_ns: AtomicU64,
    taken: AtomicU64,
    contended: AtomicU64,
}

/// The core, locked; with [`ServerOptions::measure_lock`], times how long it is held.
pub(crate) struct CoreGuard<'a, A> {
    guard: MutexGuard<'a, Core<A>>,
    times: Option<(&'a LockTimes, Instant)>,
}

impl<A> std::ops::Deref for CoreGuard<'_, A> {
    type Target = Core<A>;

    fn deref(&self) -> &Core<A> {
        &self.guard
    }
}

impl<A> std::ops::DerefMut for CoreGuard<'_, A> {
    fn deref_mut(&mut self) -> &mut Core<A> {
        &mut self.guard
    }
}

impl<A> Drop for CoreGuard<'_, A> {
    fn drop(&mut self) {
        if let Some((times, at)) = self.times {
            let ns = u64::try_from(at.elapsed().as_nanos()).unwrap_or(u64::MAX);
            times.held_ns.fetch_add(ns, Ordering::Relaxed);
        }
    }
}

impl<A: ServerApp> Shared<A> {
    /// The core of `server` and `app`, for `threads` threads.
    pub(crate) fn new(server: Server, app: A, options: &ServerOptions, threads: usize) -> Self {
        let threads = threads.max(1);
        let stats = DriverStats {
            thread_connections: vec![0; threads],
            ..DriverStats::default()
        };
        Self {
            core: Mutex::new(Core {
                server,
                app,
                limits: ConnectionLimits::new(
                    options.max_connections,
                    options.max_connections_per_ip_value(),
                ),
                stats,
                route: (threads > 1).then(HashMap::new),
                armed: None,
            }),
            queues: (0..threads)
                .map(|i| Arc::new(ReadyQueue::new(i > 0)))
                .collect(),
            stopped: AtomicUsize::new(0),
            held: options.measure_lock.then(|| LockTimes {
                // CPU time under the lock, not the core's time: the real clock even in a
                // simulation.
                #[allow(clippy::disallowed_methods)]
                since: Instant::now(),
                held_ns: AtomicU64::new(0),
                taken: AtomicU64::new(0),
                contended: AtomicU64::new(0),
            }),
        }
    }

    /// Locks the core. A thread that panicked under the lock leaves it poisoned; the core is
    /// still used (a panic in the core is a bug that the other threads should not turn into
    /// a hang).
    pub(crate) fn lock(&self) -> CoreGuard<'_, A> {
        let guard = match self.core.try_lock() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => {
                if let Some(t) = &self.held {
                    t.contended.fetch_add(1, Ordering::Relaxed);
                }
                self.core
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
            }
        };
        let times = self.held.as_ref().map(|t| {
            t.taken.fetch_add(1, Ordering::Relaxed);
            // As `since`: real time under the lock.
            #[allow(clippy::disallowed_methods)]
            let at = Instant::now();
            (t, at)
        });
        CoreGuard { guard, times }
    }

    /// The server and the application back, once every thread let go of them;
    /// [`NetError::Stalled`] if one still holds them (a thread that did not end).
    pub(crate) fn into_parts(shared: Arc<Self>) -> Result<(Server, A), NetError> {
        let shared = Arc::try_unwrap(shared).map_err(|_| NetError::Stalled)?;
        if let Some(t) = &shared.held {
            let total = t.since.elapsed();
            let held = t.held_ns.load(Ordering::Relaxed);
            #[allow(clippy::cast_precision_loss)]
            let share = held as f64 / total.as_nanos().max(1) as f64 * 100.0;
            tracing::info!(
                "Core lock: held {:.3} s of {:.3} s ({share:.2}%), taken {} times, {} of them \
                 waited for",
                held as f64 / 1e9,
                total.as_secs_f64(),
                t.taken.load(Ordering::Relaxed),
                t.contended.load(Ordering::Relaxed),
            );
        }
        let core = shared
            .core
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok((core.server, core.app))
    }
}

/// One write or close of the calling thread's connections, gathered under the lock.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Act {
    /// Write the outbox's buffer from the previous write's end up to `end`.
    Write {
        /// The connection.
        conn: ConnId,
        /// Where its bytes end in the buffer.
        end: usize,
    },
    /// Close the connection.
    Close(ConnId),
}

/// What the core output for one thread's connections, to carry out after the lock: writes
/// (consecutive ones to one connection, the acks of one read, gathered into one) and closes,
/// in order, and the writes that failed (for the core).
#[derive(Default)]
pub(crate) struct Outbox {
    pub(crate) wbuf: Vec<u8>,
    pub(crate) acts: Vec<Act>,
    pub(crate) failed: Vec<(ConnId, crate::driver::WriteFailure)>,
}

/// Takes every output of the core (under the lock): events go to the application now;
/// writes and closes of thread `me`'s connections to `out`, other threads' to their mail.
pub(crate) fn drain_into<A: ServerApp>(
    core: &mut Core<A>,
    me: usize,
    now: Now,
    out: &mut Outbox,
    queues: &[Arc<ReadyQueue>],
) {
    while let Some(o) = core.server.poll_output() {
        match o {
            server::Output::Transmit { conn, bytes } => {
                let owner = core.owner(conn);
                if owner != me {
                    if let Some(q) = queues.get(owner) {
                        q.post(Mail::Write(conn, bytes));
                    }
                    continue;
                }
                out.wbuf.extend_from_slice(&bytes);
                let end = out.wbuf.len();
                match out.acts.last_mut() {
                    Some(Act::Write { conn: c, end: e }) if *c == conn => *e = end,
                    _ => out.acts.push(Act::Write { conn, end }),
                }
            }
            server::Output::Disconnect { conn, reason } => {
                tracing::debug!(%conn, %reason, "closing");
                let owner = core.closed(conn);
                if owner == me {
                    out.acts.push(Act::Close(conn));
                } else if let Some(q) = queues.get(owner) {
                    q.post(Mail::Close(conn));
                }
            }
            server::Output::Event(e) => core.app.on_event(&e, now),
        }
    }
    // Any call may have moved a timer (an accepted connection's HELLO deadline, say), output
    // or not.
    if me != 0 && core.rearm() {
        if let Some(q) = queues.first() {
            q.post(Mail::Wake);
        }
    }
}

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
            tracing::error!("a server thread panicked");
        }
    }
}

/// [`run_server_app`](crate::run_server_app) on `1 + more.len()` threads: this one (thread
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
            Err(e) => tracing::error!("cannot start server thread {me}: {e}"),
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
            tracing::error!("cannot start the runtime of server thread {me}: {e}");
            // Counted as stopped, so thread 0 does not wait for it.
            shared.stopped.fetch_add(1, Ordering::AcqRel);
            return;
        }
    };
    LocalSet::new().block_on(&rt, async {
        let listener = match make() {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::error!("server thread {me} cannot listen: {e}");
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
    use std::time::Duration;

    use heartbeat_core::config::ServerConfig;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio::sync::mpsc;

    use super::*;
    use crate::driver::{OnEvent, ServerControl};
    use crate::{ServerOptions, SystemClock};

    /// Streams from memory, handed to the thread of the test's choice.
    struct MemListener(mpsc::Receiver<(DuplexStream, SocketAddr)>);

    impl Listener for MemListener {
        type Stream = DuplexStream;

        async fn accept(&mut self) -> io::Result<(DuplexStream, SocketAddr)> {
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

    struct StallingListener(mpsc::Receiver<(Stalling, SocketAddr)>);

    impl Listener for StallingListener {
        type Stream = Stalling;

        async fn accept(&mut self) -> io::Result<(Stalling, SocketAddr)> {
            match self.0.recv().await {
                Some(s) => Ok(s),
                None => std::future::pending().await,
            }
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
        let more: Vec<MakeListener<StallingListener>> =
            vec![Box::new(move || Ok(StallingListener(rx1)))];
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
            StallingListener(rx0),
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
