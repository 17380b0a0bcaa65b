//! The load generator: many connections, each sending on its own drift-free grid, measured.
//!
//! # Shape
//! One task per connection on one thread (a `LocalSet`: counters are plain `Cell`s, the RTT
//! histogram one `RefCell`, no atomics, no locks). A task connects at its place in the ramp,
//! says `HELLO` (v1), then waits for the measured window to open; in the window it sleeps until
//! its next slot (one `Sleep`, reset, never re-allocated), writes the heartbeat from a reused
//! buffer and reads acks whenever they come. After its last slot it waits for its outstanding
//! acks (only where the server said `WELCOME`: a sink never acks), says `BYE` (v1) and closes.
//!
//! # The window
//! The window opens once the ramp is over and every connection attempt has succeeded or failed
//! (connection setup is not measured), and lasts `duration`. Every heartbeat slot lies inside
//! it, so "sent" is both what the window achieved and what the server should count. CPU time of
//! the watched processes is read when the window opens and when it closes.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use hdrhistogram::Histogram;
use heartbeat_core::frame::{Frame, FrameDecoder, LegacyBeat, VERSION};
use heartbeat_core::{ClientId, Seq};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinSet, LocalSet};
use tokio::time::{Instant, MissedTickBehavior, sleep_until};

use super::process::ProcSample;
use super::report::{LoadReport, ProcUsage, RttSummary};
use super::schedule::{Slots, spread};
use crate::driver::Clock;

/// Bytes read from the server per `read`: acks are about 30 bytes.
const READ_BUFFER: usize = 512;

/// How often the caller's progress callback runs, and the connect phase checks whether it is
/// over.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// The RTT histogram's range, in microseconds: 1 µs to an hour, 3 significant digits.
const RTT_MAX_US: u64 = 3_600_000_000;

/// What to run.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// The server (or sink) to connect to.
    pub target: SocketAddr,
    /// Connections to open, one client each (v1 ids `load-0` to `load-<N-1>`).
    pub clients: usize,
    /// Time between one client's heartbeats.
    pub interval: Duration,
    /// Length of the measured window.
    pub duration: Duration,
    /// Connection `i` of `n` starts connecting `ramp * i / n` after the start.
    pub ramp: Duration,
    /// Speak the seed's legacy format (no `HELLO`, no acks) instead of v1.
    pub legacy: bool,
    /// Local addresses to spread the connections over, round robin (connection `i` binds
    /// `source_addrs[i % len]` before connecting); empty: the kernel picks.
    pub source_addrs: Vec<IpAddr>,
    /// How long one connect attempt may take before it counts as failed.
    pub connect_timeout: Duration,
    /// After its last heartbeat, how long a v1 connection waits for outstanding acks.
    pub drain_timeout: Duration,
    /// Processes whose CPU time and memory are measured over the window.
    pub watch: Vec<u32>,
}

impl LoadConfig {
    /// The loopback addresses `127.0.0.1` to `127.0.0.k`.
    pub fn loopback_sources(k: u8) -> Vec<IpAddr> {
        (1..=k)
            .map(|last| IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
            .collect()
    }
}

/// Why a run could not start. Everything that goes wrong after setup is counted in the report
/// instead.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// Not one connection could be opened.
    #[error("no connection to {target} could be opened ({attempts} attempts): {first_error}")]
    NoConnection {
        /// The server.
        target: SocketAddr,
        /// Connections tried.
        attempts: usize,
        /// The first attempt's error.
        first_error: String,
    },
    /// A source address cannot reach the target (only loopback sources reach a loopback
    /// target, and the other way round; the families must match).
    #[error("source address {source_addr} cannot reach {target}")]
    SourceAddr {
        /// The source address.
        source_addr: IpAddr,
        /// The target.
        target: SocketAddr,
    },
    /// A process to watch cannot be read.
    #[error("cannot watch {0}")]
    Watch(#[source] io::Error),
    /// Stopped (Ctrl-C) before the window opened.
    #[error("stopped before the measured window opened")]
    Interrupted,
}

/// Where a run is, for a progress line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Opening connections (the ramp).
    Connecting,
    /// After the window: waiting for the last acks and closes.
    Draining,
    /// In the measured window.
    Measuring,
}

/// A snapshot of the counters, handed to the progress callback.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// Where the run is.
    pub phase: Phase,
    /// Time since the phase began.
    pub elapsed: Duration,
    /// Connections to open in all.
    pub clients: u64,
    /// Connections open so far (including those that went away since).
    pub connected: u64,
    /// Connect attempts that failed.
    pub connect_failures: u64,
    /// Connections that ended before their run was over.
    pub disconnects: u64,
    /// Errors of any kind (see [`LoadReport::errors`]).
    pub errors: u64,
    /// Heartbeats written.
    pub sent: u64,
    /// Acks received.
    pub acks: u64,
    /// Tasks that have ended.
    pub finished: u64,
    /// RTT 99th percentile so far, µs (0 before the first ack).
    pub rtt_p99_us: u64,
}

/// The counters every connection task adds to.
#[derive(Default)]
struct Counters {
    acks: Cell<u64>,
    connect_failures: Cell<u64>,
    connected: Cell<u64>,
    disconnects: Cell<u64>,
    errors: Cell<u64>,
    finished: Cell<u64>,
    /// Connect attempts that are over, one way or the other.
    resolved: Cell<u64>,
    sent: Cell<u64>,
    skipped: Cell<u64>,
}

fn bump(c: &Cell<u64>) {
    c.set(c.get() + 1);
}

struct Shared {
    config: LoadConfig,
    counters: Counters,
    /// Ack round trips, µs.
    rtt: RefCell<Histogram<u64>>,
    first_connect_error: RefCell<Option<String>>,
    first_error: RefCell<Option<String>>,
    /// When the run started: the ramp is measured from it.
    started: Instant,
}

impl Shared {
    fn error(&self, what: impl FnOnce() -> String) {
        bump(&self.counters.errors);
        let mut first = self.first_error.borrow_mut();
        if first.is_none() {
            *first = Some(what());
        }
    }

    fn progress(&self, phase: Phase, since: Instant) -> Progress {
        let c = &self.counters;
        let rtt = self.rtt.borrow();
        Progress {
            phase,
            elapsed: since.elapsed(),
            clients: self.config.clients as u64,
            connected: c.connected.get(),
            connect_failures: c.connect_failures.get(),
            disconnects: c.disconnects.get(),
            errors: c.errors.get(),
            sent: c.sent.get(),
            acks: c.acks.get(),
            finished: c.finished.get(),
            rtt_p99_us: if rtt.is_empty() {
                0
            } else {
                rtt.value_at_quantile(0.99)
            },
        }
    }
}

/// Runs the load described by `config` until it is over or `stop` completes, calling
/// `on_progress` about every 100 ms; returns what was measured.
///
/// `clock` stamps the heartbeats (wall-clock time); monotonic time comes from `tokio::time`.
/// `Err` only when the run could not start (see [`LoadError`]); a `stop` during the window ends
/// it early with [`LoadReport::interrupted`] set.
pub async fn run_load<C: Clock + Clone + 'static>(
    config: LoadConfig,
    clock: C,
    stop: impl Future<Output = ()>,
    on_progress: impl FnMut(&Progress),
) -> Result<LoadReport, LoadError> {
    for &source_addr in &config.source_addrs {
        let target = config.target;
        let reaches = source_addr.is_ipv4() == target.is_ipv4()
            && source_addr.is_loopback() == target.ip().is_loopback();
        if !reaches {
            return Err(LoadError::SourceAddr {
                source_addr,
                target,
            });
        }
    }
    for &pid in &config.watch {
        ProcSample::read(pid).map_err(LoadError::Watch)?;
    }
    LocalSet::new()
        .run_until(coordinate(config, clock, stop, on_progress))
        .await
}

async fn coordinate<C: Clock + Clone + 'static>(
    config: LoadConfig,
    clock: C,
    stop: impl Future<Output = ()>,
    mut on_progress: impl FnMut(&Progress),
) -> Result<LoadReport, LoadError> {
    let mut stop = std::pin::pin!(stop);
    let started = Instant::now();
    let n = config.clients;
    let shared = Rc::new(Shared {
        rtt: RefCell::new(
            Histogram::new_with_bounds(1, RTT_MAX_US, 3).expect("valid histogram bounds"),
        ),
        config,
        counters: Counters::default(),
        first_connect_error: RefCell::new(None),
        first_error: RefCell::new(None),
        started,
    });
    let (open_window, window) = watch::channel(None);
    let mut tasks = JoinSet::new();
    for i in 0..n {
        let task = Connection::run(i, shared.clone(), window.clone(), clock.clone());
        tasks.spawn_local(task);
    }
    drop(window);
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);

    // Connecting: until the ramp is over and every attempt has ended.
    let ramp_end = started + shared.config.ramp;
    loop {
        let c = &shared.counters;
        if c.resolved.get() == n as u64 && Instant::now() >= ramp_end {
            break;
        }
        tokio::select! {
            biased;
            () = &mut stop => return Err(LoadError::Interrupted),
            _ = tick.tick() => on_progress(&shared.progress(Phase::Connecting, started)),
        }
    }
    if shared.counters.connected.get() == 0 {
        return Err(LoadError::NoConnection {
            target: shared.config.target,
            attempts: n,
            first_error: shared
                .first_connect_error
                .borrow()
                .clone()
                .unwrap_or_else(|| "no attempt was made".to_owned()),
        });
    }

    // The window.
    let me = std::process::id();
    let watched: Vec<u32> = shared.config.watch.clone();
    let before: Vec<_> = std::iter::once(me)
        .chain(watched.iter().copied())
        .map(|pid| ProcSample::read(pid).ok())
        .collect();
    let t0 = Instant::now();
    let _ = open_window.send(Some(t0));
    let end = t0 + shared.config.duration;
    let mut interrupted = false;
    loop {
        tokio::select! {
            biased;
            () = &mut stop => {
                interrupted = true;
                break;
            }
            () = sleep_until(end) => break,
            _ = tick.tick() => on_progress(&shared.progress(Phase::Measuring, t0)),
        }
    }
    let window = t0.elapsed();
    let after: Vec<_> = std::iter::once(me)
        .chain(watched.iter().copied())
        .map(|pid| ProcSample::read(pid).ok())
        .collect();

    // Draining: every task ends by itself (last ack or drain timeout, then close).
    if !interrupted {
        let drain_start = Instant::now();
        loop {
            tokio::select! {
                biased;
                () = &mut stop => {
                    interrupted = true;
                    break;
                }
                r = tasks.join_next() => match r {
                    Some(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    Some(_) => {}
                    None => break,
                },
                _ = tick.tick() => on_progress(&shared.progress(Phase::Draining, drain_start)),
            }
        }
    }
    tasks.abort_all();

    let sent = shared.counters.sent.get();
    let usage = |i: usize, pid: u32| ProcUsage::new(pid, before[i], after[i], sent);
    let generator = usage(0, me);
    let watched = watched
        .iter()
        .enumerate()
        .map(|(i, &pid)| usage(i + 1, pid))
        .collect();
    let config = &shared.config;
    let offered: u64 = (0..n)
        .map(|i| Slots::new(i, n, config.interval, config.duration).count())
        .sum();
    let c = &shared.counters;
    let rtt = RttSummary::new(&shared.rtt.borrow());
    Ok(LoadReport {
        protocol: if config.legacy { "legacy" } else { "v1" },
        target: config.target.to_string(),
        clients: n as u64,
        interval_ms: config.interval.as_secs_f64() * 1e3,
        ramp_s: config.ramp.as_secs_f64(),
        duration_s: window.as_secs_f64(),
        source_addrs: config.source_addrs.len().max(1) as u64,
        interrupted,
        connected: c.connected.get(),
        connect_failures: c.connect_failures.get(),
        disconnects: c.disconnects.get(),
        errors: c.errors.get(),
        offered,
        sent,
        skipped: c.skipped.get(),
        offered_per_s: offered as f64 / config.duration.as_secs_f64(),
        achieved_per_s: sent as f64 / window.as_secs_f64(),
        acks: c.acks.get(),
        rtt_us: rtt,
        generator,
        watched,
        first_connect_error: shared.first_connect_error.borrow().clone(),
        first_error: shared.first_error.borrow().clone(),
    })
}

/// One client's connection and the buffers it reuses for its whole life.
struct Connection<C> {
    index: usize,
    shared: Rc<Shared>,
    clock: C,
    stream: TcpStream,
    read_buf: [u8; READ_BUFFER],
    write_buf: Vec<u8>,
    decoder: FrameDecoder,
    /// Heartbeats written and not acked yet, with when they were written, oldest first.
    in_flight: VecDeque<(Seq, Instant)>,
    welcomed: bool,
}

impl<C: Clock> Connection<C> {
    /// The whole life of connection `index`: connect, hello, wait for the window, send on the
    /// grid, wait for the last acks, goodbye.
    async fn run(
        index: usize,
        shared: Rc<Shared>,
        mut window: watch::Receiver<Option<Instant>>,
        clock: C,
    ) {
        let config = &shared.config;
        let start = shared.started + spread(index, config.clients, config.ramp);
        sleep_until(start).await;
        let stream = connect(config, index).await;
        bump(&shared.counters.resolved);
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                bump(&shared.counters.connect_failures);
                let mut first = shared.first_connect_error.borrow_mut();
                if first.is_none() {
                    *first = Some(e.to_string());
                }
                bump(&shared.counters.finished);
                return;
            }
        };
        bump(&shared.counters.connected);
        let mut conn = Self {
            index,
            shared: shared.clone(),
            clock,
            stream,
            read_buf: [0; READ_BUFFER],
            write_buf: Vec::with_capacity(128),
            decoder: FrameDecoder::new(),
            in_flight: VecDeque::with_capacity(4),
            welcomed: false,
        };
        if conn.hello_and_beats(&mut window).await {
            conn.goodbye().await;
        }
        bump(&shared.counters.finished);
    }

    /// `false` when the connection ended early (counted as a disconnect).
    async fn hello_and_beats(&mut self, window: &mut watch::Receiver<Option<Instant>>) -> bool {
        let shared = self.shared.clone();
        let config = &shared.config;
        if !config.legacy {
            let id = format!("load-{}", self.index);
            let hello = Frame::Hello {
                version: VERSION,
                client: ClientId::new(&id).expect("load-N is a valid client id"),
                interval: config.interval,
                session: 0,
            };
            self.write_buf.clear();
            hello.encode(&mut self.write_buf);
            if !self.write().await {
                return false;
            }
        }

        // Until the window opens: read what comes (WELCOME, or the server closing).
        let t0 = loop {
            tokio::select! {
                biased;
                r = self.stream.read(&mut self.read_buf) => {
                    if !self.handle_read(r) {
                        return false;
                    }
                }
                w = window.wait_for(Option::is_some) => match w {
                    Ok(t0) => break t0.expect("waited for Some"),
                    // The run was dropped before the window opened.
                    Err(_) => return false,
                },
            }
        };

        let slots = Slots::new(self.index, config.clients, config.interval, config.duration);
        let count = slots.count();
        let mut next = 0;
        let sleep = sleep_until(t0 + slots.offset(0));
        let mut sleep = std::pin::pin!(sleep);
        while next < count {
            tokio::select! {
                biased;
                r = self.stream.read(&mut self.read_buf) => {
                    if !self.handle_read(r) {
                        return false;
                    }
                }
                () = &mut sleep => {
                    // Woken late by more than an interval: send the heartbeat due now, with its
                    // own number, and count the ones that could not go out on time as skipped
                    // (the server counts them as missed), as the real client does.
                    let due = slots
                        .due(Instant::now().saturating_duration_since(t0))
                        .unwrap_or(next)
                        .max(next);
                    let counters = &shared.counters;
                    if due >= count {
                        counters.skipped.set(counters.skipped.get() + (count - next));
                        break;
                    }
                    counters.skipped.set(counters.skipped.get() + (due - next));
                    if !self.beat(Seq(due + 1)).await {
                        return false;
                    }
                    next = due + 1;
                    sleep.as_mut().reset(t0 + slots.offset(next));
                }
            }
        }

        // The last acks, where acks come at all.
        if self.welcomed && !self.in_flight.is_empty() {
            let deadline = sleep_until(Instant::now() + config.drain_timeout);
            let mut deadline = std::pin::pin!(deadline);
            while !self.in_flight.is_empty() {
                tokio::select! {
                    biased;
                    r = self.stream.read(&mut self.read_buf) => {
                        if !self.handle_read(r) {
                            return false;
                        }
                    }
                    () = &mut deadline => break,
                }
            }
        }
        true
    }

    /// Writes heartbeat `seq`, stamped now; `false` if the connection failed.
    async fn beat(&mut self, seq: Seq) -> bool {
        let sent = self.clock.unix();
        self.write_buf.clear();
        if self.shared.config.legacy {
            LegacyBeat { seq, sent }.encode(&mut self.write_buf);
        } else {
            Frame::Beat { seq, sent }.encode(&mut self.write_buf);
            self.in_flight.push_back((seq, Instant::now()));
        }
        let ok = self.write().await;
        if ok {
            bump(&self.shared.counters.sent);
        }
        ok
    }

    /// `BYE` (v1) and close.
    async fn goodbye(&mut self) {
        if !self.shared.config.legacy {
            self.write_buf.clear();
            Frame::Bye.encode(&mut self.write_buf);
            let _ = self.stream.write_all(&self.write_buf).await;
        }
        let _ = self.stream.shutdown().await;
    }

    /// Writes `write_buf`; `false` (counted) if that failed.
    async fn write(&mut self) -> bool {
        match self.stream.write_all(&self.write_buf).await {
            Ok(()) => true,
            Err(e) => {
                bump(&self.shared.counters.disconnects);
                self.shared
                    .error(|| format!("load-{}: write failed: {e}", self.index));
                false
            }
        }
    }

    /// Handles the result of one read; `false` when the connection is over (counted).
    fn handle_read(&mut self, r: io::Result<usize>) -> bool {
        let n = match r {
            Ok(0) => {
                bump(&self.shared.counters.disconnects);
                return false;
            }
            Ok(n) => n,
            Err(e) => {
                bump(&self.shared.counters.disconnects);
                self.shared
                    .error(|| format!("load-{}: read failed: {e}", self.index));
                return false;
            }
        };
        if self.shared.config.legacy {
            // The server never writes on a legacy connection.
            self.shared.error(|| {
                format!(
                    "load-{}: {n} unexpected bytes on a legacy connection",
                    self.index
                )
            });
            return true;
        }
        self.decoder.push(&self.read_buf[..n]);
        loop {
            match self.decoder.decode_next() {
                Ok(None) => return true,
                Ok(Some(Frame::Ack { seq, .. })) => self.ack(seq),
                Ok(Some(Frame::Welcome { .. })) => self.welcomed = true,
                Ok(Some(Frame::Error { message })) => {
                    // The server closes next; the end of stream is counted then.
                    self.shared
                        .error(|| format!("load-{}: server said ERROR {message}", self.index));
                }
                Ok(Some(other)) => self.shared.error(|| {
                    format!(
                        "load-{}: unexpected {} from the server",
                        self.index,
                        other.command()
                    )
                }),
                Err(e) => {
                    bump(&self.shared.counters.disconnects);
                    self.shared
                        .error(|| format!("load-{}: undecodable input: {e}", self.index));
                    return false;
                }
            }
        }
    }

    /// Matches an ack with its heartbeat (acks come in order, one per heartbeat) and records
    /// the round trip.
    fn ack(&mut self, seq: Seq) {
        let now = Instant::now();
        while let Some(&(s, at)) = self.in_flight.front() {
            if s > seq {
                break;
            }
            self.in_flight.pop_front();
            if s == seq {
                let us = u64::try_from(now.duration_since(at).as_micros()).unwrap_or(u64::MAX);
                self.shared.rtt.borrow_mut().saturating_record(us.max(1));
                bump(&self.shared.counters.acks);
                return;
            }
            self.shared
                .error(|| format!("load-{}: heartbeat {s} was never acked", self.index));
        }
        self.shared
            .error(|| format!("load-{}: ack {seq} matches no heartbeat", self.index));
    }
}

/// Opens connection `index`, bound to its source address when there are several.
async fn connect(config: &LoadConfig, index: usize) -> io::Result<TcpStream> {
    let target = config.target;
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if !config.source_addrs.is_empty() {
        let source = config.source_addrs[index % config.source_addrs.len()];
        socket
            .bind(SocketAddr::new(source, 0))
            .map_err(|e| io::Error::new(e.kind(), format!("binding {source}: {e}")))?;
    }
    let stream = match tokio::time::timeout(config.connect_timeout, socket.connect(target)).await {
        Ok(r) => r.map_err(|e| io::Error::new(e.kind(), format!("connecting to {target}: {e}")))?,
        Err(_) => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "connecting to {target} timed out after {:?}",
                    config.connect_timeout
                ),
            ));
        }
    };
    // Heartbeats are tiny and latency is measured: never wait to coalesce.
    stream.set_nodelay(true)?;
    Ok(stream)
}
