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

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::task::{Poll, Wake, Waker};
use std::time::{Duration, Instant};

use heartbeat_core::server::{self, Server};
use heartbeat_core::{ConnId, Now};
use rustc_hash::FxHashMap;

use crate::NetError;
use crate::driver_api::{DriverStats, ServerApp, ServerOptions, mono_now};
use crate::limits::ConnectionLimits;

/// Why a write could not be carried out, for the core.
pub(crate) enum WriteFailure {
    /// The connection's queue is full: the peer does not read.
    Blocked,
    /// The write failed (a timed-out one: the peer does not read).
    Io(io::ErrorKind),
}

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
    route: Option<FxHashMap<ConnId, usize>>,
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
                route: (threads > 1).then(FxHashMap::default),
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
            // Once, at exit, with --measure-lock: not caused by a peer.
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
    pub(crate) failed: Vec<(ConnId, WriteFailure)>,
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

/// The connections whose stream woke up (readable, writable, or a TLS handshake's timer), in
/// the order they woke, and the mail of one server thread (see [`Mail`]): each connection's
/// [`Waker`] puts its id here once until the server task takes it, and wakes the server task.
/// The server task owns every stream of its thread and polls only the connections listed
/// here, so a heartbeat costs no task switch and no channel.
#[derive(Debug, Default)]
pub(crate) struct ReadyQueue {
    inner: Mutex<ReadyInner>,
    /// Whether [`ReadyInner::since`] is kept: a queue of a thread other than 0's, read by
    /// thread 0 before it judges a deadline ([`ReadyQueue::behind_for`]).
    track: bool,
}

#[derive(Debug, Default)]
struct ReadyInner {
    ids: VecDeque<ConnId>,
    /// What other server threads ask of this one, in order.
    mail: Vec<Mail>,
    /// The server task, while it waits for a connection to wake.
    task: Option<Waker>,
    /// With [`ReadyQueue::track`]: since when this queue's thread has had work it has not finished: the start of its turn
    /// under way, or when a connection was listed while it was between turns. `None` when it
    /// is idle.
    since: Option<Instant>,
}

impl ReadyQueue {
    /// A queue; with `track`, it keeps how long what it lists has waited (for a server of
    /// several threads, whose thread 0 judges every deadline).
    pub(crate) fn new(track: bool) -> Self {
        Self {
            inner: Mutex::default(),
            track,
        }
    }

    /// This queue's thread starts a turn.
    pub(crate) fn turn_started(&self) {
        if self.track {
            self.lock().since = Some(mono_now());
        }
    }

    /// This queue's thread ended its turn: what is still listed waits from now.
    pub(crate) fn turn_ended(&self) {
        if self.track {
            let now = mono_now();
            let mut inner = self.lock();
            inner.since = (!inner.ids.is_empty()).then_some(now);
        }
    }

    /// How long, at `now`, this queue's thread has been behind: in a turn, or with
    /// connections listed that it has not taken yet (`None` when it is idle, or the queue does
    /// not keep it). A thread blocked or descheduled in its turn shows here; one descheduled
    /// while waiting does not (its connections are listed only when it polls for readiness).
    pub(crate) fn behind_for(&self, now: Instant) -> Option<Duration> {
        let inner = self.lock();
        inner
            .since
            .map(|since| now.saturating_duration_since(since))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReadyInner> {
        // Nothing panics while holding it; a poisoned lock holds a consistent queue anyway.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits until a connection is ready or mail came. Cancel safe.
    pub(crate) async fn wait(&self) {
        std::future::poll_fn(|cx| {
            let mut inner = self.lock();
            if inner.ids.is_empty() && inner.mail.is_empty() {
                if !inner.task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    inner.task = Some(cx.waker().clone());
                }
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
    }

    /// Lists a connection just accepted (its waker starts as listed), to be polled on this
    /// thread's next turn: that registers its waker and reads what it already sent.
    pub(crate) fn list_new(&self, conn: ConnId) {
        self.lock().ids.push_back(conn);
    }

    pub(crate) fn pop(&self) -> Option<ConnId> {
        self.lock().ids.pop_front()
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().ids.len()
    }

    /// Hands `mail` to this queue's thread and wakes it.
    pub(crate) fn post(&self, mail: Mail) {
        let task = {
            let mut inner = self.lock();
            inner.mail.push(mail);
            inner.task.take()
        };
        if let Some(task) = task {
            task.wake();
        }
    }

    /// Moves the mail waiting into `into` (empty), in order.
    pub(crate) fn take_mail(&self, into: &mut Vec<Mail>) {
        std::mem::swap(&mut self.lock().mail, into);
    }
}

/// One connection's waker: lists the connection in the [`ReadyQueue`] (once until it is
/// polled) and wakes the server task.
#[derive(Debug)]
pub(crate) struct ConnWaker {
    pub(crate) conn: ConnId,
    pub(crate) queued: AtomicBool,
    pub(crate) ready: Arc<ReadyQueue>,
}

impl Wake for ConnWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            let task = {
                let mut inner = self.ready.lock();
                if self.ready.track && inner.since.is_none() {
                    inner.since = Some(mono_now());
                }
                inner.ids.push_back(self.conn);
                inner.task.take()
            };
            if let Some(task) = task {
                task.wake();
            }
        }
    }
}
