//! The load generator: many connections, each sending on its own drift-free grid, measured.
//!
//! # Shape
//! All on one thread (a `LocalSet`: counters are plain `Cell`s, the RTT histogram one
//! `RefCell`, no atomics, no locks). Each connection has a task that connects at its place in
//! the ramp, says `HELLO` (v1), joins the roster and from then on only reads: `WELCOME`, acks
//! (round trips into the histogram), the server closing. One sweeper task writes every
//! connection's heartbeats: it walks the roster in phase order and sleeps only when the next
//! slot is still ahead, so all heartbeats due in one timer tick go out in one wake-up, each a
//! non-blocking write of a reused buffer. When its last slot is done the sweeper drops the
//! roster; each connection then waits for its outstanding acks (only where the server said
//! `WELCOME`: a sink never acks), says `BYE` (v1) and closes.
//!
//! Why a sweeper rather than a task per connection that sleeps to each of its slots and writes:
//! measured with both builds taking turns (1,000 clients x 10 ms, 5 s windows, release, 2
//! shared cores), this process's CPU per heartbeat against the sink was 3.47 to 4.13 us with a
//! task per connection and 3.22 to 3.35 us with the sweeper (three runs each), and against
//! `heartbeat-server`, acks included, 4.56 to 4.86 us against 4.49 to 4.52 us (two runs each);
//! the sweeper also skipped fewer slots when the machine was busy. Most of the cost is the
//! kernel's (a loopback write runs the receiving side's TCP input too); the difference is a
//! timer re-arm and a task wake-up per heartbeat.
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
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinSet, LocalSet};
use tokio::time::{Instant, MissedTickBehavior, sleep_until};

use super::report::{LoadReport, ProcUsage, RttSummary};
use super::schedule::{Slots, spread};
use heartbeat_net::driver::Clock;
use heartbeat_net::process::ProcSample;

/// Bytes read from the server per `read`: acks are about 30 bytes.
const READ_BUFFER: usize = 512;

/// How often the caller's progress callback runs, and the connect phase checks whether it is
/// over.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// The RTT histogram's range, in microseconds: 1 µs to an hour, 3 significant digits.
const RTT_MAX_US: u64 = 3_600_000_000;

/// What to run.
#[derive(Clone, Debug)]
pub(crate) struct LoadConfig {
    /// The server (or sink) to connect to.
    pub(crate) target: SocketAddr,
    /// Connections to open, one client each (v1 ids `load-0` to `load-<N-1>`).
    pub(crate) clients: usize,
    /// Time between one client's heartbeats.
    pub(crate) interval: Duration,
    /// Length of the measured window.
    pub(crate) duration: Duration,
    /// Connection `i` of `n` starts connecting `ramp * i / n` after the start.
    pub(crate) ramp: Duration,
    /// Speak the seed's legacy format (no `HELLO`, no acks) instead of v1.
    pub(crate) legacy: bool,
    /// Local addresses to spread the connections over, round robin (connection `i` binds
    /// `source_addrs[i % len]` before connecting); empty: the kernel picks.
    pub(crate) source_addrs: Vec<IpAddr>,
    /// How long one connect attempt may take before it counts as failed.
    pub(crate) connect_timeout: Duration,
    /// After its last heartbeat, how long a v1 connection waits for outstanding acks.
    pub(crate) drain_timeout: Duration,
    /// Processes whose CPU time and memory are measured over the window.
    pub(crate) watch: Vec<u32>,
}

impl LoadConfig {
    /// The loopback addresses `127.0.0.1` to `127.0.0.k`.
    pub(crate) fn loopback_sources(k: u8) -> Vec<IpAddr> {
        (1..=k)
            .map(|last| IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
            .collect()
    }
}

/// Why a run could not start. Everything that goes wrong after setup is counted in the report
/// instead.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum LoadError {
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
    /// A process to watch cannot be read (the error names the pid).
    #[error("cannot watch {0}")]
    Watch(io::Error),
    /// Stopped (Ctrl-C) before the window opened.
    #[error("stopped before the measured window opened")]
    Interrupted,
}

/// Where a run is, for a progress line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Opening connections (the ramp).
    Connecting,
    /// After the window: waiting for the last acks and closes.
    Draining,
    /// In the measured window.
    Measuring,
}

/// A snapshot of the counters, handed to the progress callback.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Progress {
    /// Where the run is.
    pub(crate) phase: Phase,
    /// Time since the phase began.
    pub(crate) elapsed: Duration,
    /// Connections to open in all.
    pub(crate) clients: u64,
    /// Connections open so far (including those that went away since).
    pub(crate) connected: u64,
    /// Connect attempts that failed.
    pub(crate) connect_failures: u64,
    /// Connections that ended before their run was over.
    pub(crate) disconnects: u64,
    /// Errors of any kind (see [`LoadReport::errors`]).
    pub(crate) errors: u64,
    /// Heartbeats written.
    pub(crate) sent: u64,
    /// Acks received.
    pub(crate) acks: u64,
    /// Tasks that have ended.
    pub(crate) finished: u64,
    /// RTT 99th percentile so far, µs (0 before the first ack).
    pub(crate) rtt_p99_us: u64,
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
    /// Every connection that said `HELLO` (v1) or just connected (legacy), for the sweeper.
    roster: RefCell<Vec<Rc<Link>>>,
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
pub(crate) async fn run_load<C: Clock + 'static>(
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

async fn coordinate<C: Clock + 'static>(
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
        roster: RefCell::new(Vec::new()),
    });
    // True while the sweeper sends; connections then wait for their last acks.
    let (sending_tx, sending) = watch::channel(true);
    let mut tasks = JoinSet::new();
    for i in 0..n {
        tasks.spawn_local(connection(i, shared.clone(), sending.clone()));
    }
    drop(sending);
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
    let roster = shared.roster.take();
    tasks.spawn_local(sweep(shared.clone(), roster, t0, clock, sending_tx));
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
        setup_s: (t0 - started).as_secs_f64(),
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

/// One open connection, shared by its reader task and the sweeper.
struct Link {
    index: usize,
    stream: TcpStream,
    /// v1 heartbeats written and not acked yet, with when they were written, oldest first.
    in_flight: RefCell<VecDeque<(Seq, Instant)>>,
    /// The tail of a heartbeat the socket took only in part; written before the next one.
    pending: RefCell<Vec<u8>>,
    /// The reader saw the end (or the sweeper a write error): nothing more is written.
    closed: Cell<bool>,
}

/// The whole life of connection `index`: connect at its place in the ramp, `HELLO`, join the
/// roster, then read (acks) until the sweeper is done and the last acks are in, `BYE`, close.
async fn connection(index: usize, shared: Rc<Shared>, mut sending: watch::Receiver<bool>) {
    let config = &shared.config;
    let c = &shared.counters;
    sleep_until(shared.started + spread(index, config.clients, config.ramp)).await;
    let mut stream = match connect(config, index).await {
        Ok(s) => s,
        Err(e) => {
            bump(&c.connect_failures);
            let mut first = shared.first_connect_error.borrow_mut();
            if first.is_none() {
                *first = Some(e.to_string());
            }
            bump(&c.resolved);
            bump(&c.finished);
            return;
        }
    };
    bump(&c.connected);
    if !config.legacy {
        let hello = Frame::Hello {
            version: VERSION,
            client: ClientId::new(&format!("load-{index}")).expect("load-N is a valid client id"),
            interval: config.interval,
            session: 0,
            advice: false,
        };
        if let Err(e) = stream.write_all(&hello.to_bytes()).await {
            bump(&c.disconnects);
            shared.error(|| format!("load-{index}: write failed: {e}"));
            bump(&c.resolved);
            bump(&c.finished);
            return;
        }
    }
    let link = Rc::new(Link {
        index,
        stream,
        in_flight: RefCell::new(VecDeque::with_capacity(4)),
        pending: RefCell::new(Vec::new()),
        closed: Cell::new(false),
    });
    shared.roster.borrow_mut().push(link.clone());
    // Counted only now, so the roster is complete when the window opens.
    bump(&c.resolved);
    let mut reader = Reader {
        shared: shared.clone(),
        link,
        buf: [0; READ_BUFFER],
        decoder: FrameDecoder::new(),
        welcomed: false,
    };
    if reader.run(&mut sending).await {
        reader.goodbye().await;
    }
    bump(&c.finished);
}

/// The reading side of one connection: acks, `WELCOME`, the server closing.
struct Reader {
    shared: Rc<Shared>,
    link: Rc<Link>,
    buf: [u8; READ_BUFFER],
    decoder: FrameDecoder,
    welcomed: bool,
}

impl Reader {
    /// Reads until the sweeper is done and the last acks are in (only where the server said
    /// `WELCOME`: a sink never acks) or the drain timeout passed. `false` when the connection
    /// ended early (counted as a disconnect).
    async fn run(&mut self, sending: &mut watch::Receiver<bool>) -> bool {
        let mut over = false;
        let drain = sleep_until(Instant::now());
        let mut drain = std::pin::pin!(drain);
        loop {
            if over && (!self.welcomed || self.link.in_flight.borrow().is_empty()) {
                return true;
            }
            tokio::select! {
                biased;
                r = self.link.stream.readable() => {
                    let r = match r {
                        Ok(()) => self.link.stream.try_read(&mut self.buf),
                        Err(e) => Err(e),
                    };
                    match r {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        r => {
                            if !self.handle_read(r) {
                                self.link.closed.set(true);
                                return false;
                            }
                        }
                    }
                }
                // Done, or the sweeper is gone: either way nothing more is sent.
                _ = sending.wait_for(|s| !*s), if !over => {
                    over = true;
                    let timeout = self.shared.config.drain_timeout;
                    drain.as_mut().reset(Instant::now() + timeout);
                }
                () = &mut drain, if over => return true,
            }
        }
    }

    /// What is left of a heartbeat, `BYE` (v1), and close; bounded by the drain timeout.
    async fn goodbye(self) {
        let Ok(link) = Rc::try_unwrap(self.link) else {
            // The sweeper drops its roster before it says it is done; keep the stream open
            // rather than write beside it.
            return;
        };
        let mut stream = link.stream;
        let mut tail = link.pending.into_inner();
        if !self.shared.config.legacy {
            Frame::Bye.encode(&mut tail);
        }
        let close = async {
            stream.write_all(&tail).await?;
            stream.shutdown().await
        };
        let _ = tokio::time::timeout(self.shared.config.drain_timeout, close).await;
    }

    /// Handles the result of one read; `false` when the connection is over (counted).
    fn handle_read(&mut self, r: io::Result<usize>) -> bool {
        let index = self.link.index;
        let n = match r {
            Ok(0) => {
                bump(&self.shared.counters.disconnects);
                return false;
            }
            Ok(n) => n,
            Err(e) => {
                bump(&self.shared.counters.disconnects);
                self.shared
                    .error(|| format!("load-{index}: read failed: {e}"));
                return false;
            }
        };
        if self.shared.config.legacy {
            // The server never writes on a legacy connection.
            self.shared
                .error(|| format!("load-{index}: {n} unexpected bytes on a legacy connection"));
            return true;
        }
        self.decoder.push(&self.buf[..n]);
        loop {
            match self.decoder.decode_next() {
                Ok(None) => return true,
                Ok(Some(Frame::Ack { seq, .. })) => self.ack(seq),
                Ok(Some(Frame::Welcome { .. })) => self.welcomed = true,
                Ok(Some(Frame::Error { message })) => {
                    // The server closes next; the end of stream is counted then.
                    self.shared
                        .error(|| format!("load-{index}: server said ERROR {message}"));
                }
                Ok(Some(other)) => self.shared.error(|| {
                    format!(
                        "load-{index}: unexpected {} from the server",
                        other.command()
                    )
                }),
                Err(e) => {
                    bump(&self.shared.counters.disconnects);
                    self.shared
                        .error(|| format!("load-{index}: undecodable input: {e}"));
                    return false;
                }
            }
        }
    }

    /// Matches an ack with its heartbeat (acks come in order, one per heartbeat) and records
    /// the round trip.
    fn ack(&mut self, seq: Seq) {
        let now = Instant::now();
        let index = self.link.index;
        let mut in_flight = self.link.in_flight.borrow_mut();
        while let Some(&(s, at)) = in_flight.front() {
            if s > seq {
                break;
            }
            in_flight.pop_front();
            if s == seq {
                let us = u64::try_from(now.duration_since(at).as_micros()).unwrap_or(u64::MAX);
                self.shared.rtt.borrow_mut().saturating_record(us.max(1));
                bump(&self.shared.counters.acks);
                return;
            }
            self.shared
                .error(|| format!("load-{index}: heartbeat {s} was never acked"));
        }
        self.shared
            .error(|| format!("load-{index}: ack {seq} matches no heartbeat"));
    }
}

/// Writes every connection's heartbeats on its grid, in phase order, then drops the roster
/// and says sending is over.
///
/// Slots of all connections are visited round robin in phase order (the phases are sorted
/// and the interval is shared, so that is the order they fall due in); the sweeper sleeps only
/// when the next slot is still ahead, so a timer tick's worth of due heartbeats goes out in one
/// wake-up.
async fn sweep<C: Clock>(
    shared: Rc<Shared>,
    mut links: Vec<Rc<Link>>,
    t0: Instant,
    clock: C,
    sending: watch::Sender<bool>,
) {
    let config = &shared.config;
    links.sort_by_key(|l| l.index);
    let mut plan: Vec<(Slots, u64)> = links
        .iter()
        .map(|l| {
            let slots = Slots::new(l.index, config.clients, config.interval, config.duration);
            (slots, 0)
        })
        .collect();
    let mut active = plan.iter().filter(|(s, _)| s.count() > 0).count();
    let mut buf = Vec::with_capacity(128);
    let c = &shared.counters;
    let mut cursor = 0;
    while active > 0 {
        let i = cursor;
        cursor = (cursor + 1) % links.len();
        let (slots, next) = plan[i];
        let count = slots.count();
        if next >= count {
            continue;
        }
        let link = &links[i];
        if link.closed.get() {
            // Its remaining slots are neither sent nor skipped: offered, not achieved.
            plan[i].1 = count;
            active -= 1;
            continue;
        }
        let at = t0 + slots.offset(next);
        if at > Instant::now() {
            sleep_until(at).await;
        }
        // Woken late by more than an interval: send the heartbeat due now, with its own
        // number, and count the ones that could not go out on time as skipped (the server
        // counts them as missed), as the real client does.
        let due = slots
            .due(Instant::now().saturating_duration_since(t0))
            .unwrap_or(next)
            .max(next);
        if due >= count {
            add(&c.skipped, count - next);
            plan[i].1 = count;
            active -= 1;
            continue;
        }
        add(&c.skipped, due - next);
        write_beat(&shared, link, Seq(due + 1), &mut buf, &clock);
        plan[i].1 = due + 1;
        if due + 1 == count {
            active -= 1;
        }
    }
    // Readers may now own their streams again (to say BYE and close).
    drop(links);
    let _ = sending.send(false);
}

fn add(c: &Cell<u64>, n: u64) {
    c.set(c.get() + n);
}

/// Writes heartbeat `seq`, stamped now, without waiting: a socket that cannot take it (the
/// server has not read for a long while) skips the heartbeat.
fn write_beat(shared: &Shared, link: &Link, seq: Seq, buf: &mut Vec<u8>, clock: &impl Clock) {
    let c = &shared.counters;
    let index = link.index;
    let fail = |e: io::Error| {
        link.closed.set(true);
        shared.error(|| format!("load-{index}: write failed: {e}"));
    };
    let mut pending = link.pending.borrow_mut();
    if !pending.is_empty() {
        match link.stream.try_write(&pending) {
            Ok(n) => drop(pending.drain(..n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return fail(e),
        }
        if !pending.is_empty() {
            bump(&c.skipped);
            return;
        }
    }
    buf.clear();
    let sent = clock.unix();
    if shared.config.legacy {
        LegacyBeat { seq, sent }.encode(buf);
    } else {
        Frame::Beat { seq, sent }.encode(buf);
        link.in_flight.borrow_mut().push_back((seq, Instant::now()));
    }
    match link.stream.try_write(buf) {
        Ok(n) => {
            // A part is out: the rest goes first next time (or with the goodbye).
            pending.extend_from_slice(&buf[n..]);
            bump(&c.sent);
        }
        Err(e) => {
            if !shared.config.legacy {
                link.in_flight.borrow_mut().pop_back();
            }
            if e.kind() == io::ErrorKind::WouldBlock {
                bump(&c.skipped);
            } else {
                fail(e);
            }
        }
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
