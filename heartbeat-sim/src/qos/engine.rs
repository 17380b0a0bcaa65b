//! The event-driven engine: the real `heartbeat-core` [`Client`] and [`Server`] machines on a
//! modelled network, with a clock that jumps from one due event to the next (no tokio, no ticks).
//!
//! It runs the same [`Scenario`] values as the turmoil world ([`crate::world::run`]): the same
//! clients and configurations, the same actions at the same times, the same [`Latency`] model,
//! the same per-process session nonces and backoff seeds, and the same heal-and-drain at the
//! end. What it models of the network, and how that matches turmoil 0.7.2:
//!
//! - **Latency**: drawn per message from a seeded RNG per client and direction
//!   (`min + (max - min) * Exp(5)`, whole milliseconds, clamped to `max`: turmoil's formula).
//!   TCP keeps order: a message never overtakes the previous one on the same connection, so a
//!   message arrives at `max(sent + latency, previous arrival)`. Everything due at one instant on
//!   one connection is handed over as one read.
//! - **Connect**: a SYN with the link's latency; the server accepts when it arrives, and the
//!   client is connected at that instant (turmoil's SYN-ACK is not a network message). A crashed
//!   server refuses when the SYN arrives, a partitioned link at once; a SYN lost in a partition
//!   fails after [`CONNECT_TIMEOUT`], as `SimConnector` does.
//! - **Partition**: segments in flight are dropped and the connection is stuck for good, even
//!   after the repair (no retransmission in turmoil 0.7.2): both sides must time out.
//! - **Hold / release**: segments wait and are delivered at once on release.
//! - **Crash**: a clean crash sends FIN after what is in flight; a silent crash drops what is in
//!   flight and sends nothing (turmoil: partition, crash, repair).
//!
//! # Ground truth
//! Besides the server's liveness transitions, a run records for every client when it was
//! *reachable*: alive, with its link up, and its heartbeats flowing. A reachable period starts
//! when the first heartbeat of a process arrives after the process started, after its link was
//! repaired or released, or after the server restarted, and ends when the process crashes or
//! stops, or its link is cut or held, or the server crashes. Crashes are recorded with the
//! instant they happened and the instant the client was reachable again (or the run ended).

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use heartbeat_core::analysis::Report;
use heartbeat_core::client::{self, Client};
use heartbeat_core::config::{Backoff, ClientConfig, ServerConfig};
use heartbeat_core::server::{self, Event, Liveness, Server};
use heartbeat_core::{ClientId, ClientKey, ConnId, Now, Seq, UnixTime};

use crate::net::CONNECT_TIMEOUT;
use crate::scenario::{Action, Latency, Node, Scenario};
use crate::world::{EPOCH_SECS, derive_seed};

/// Draws one message latency from `latency`: turmoil's model, `min + (max - min) * Exp(5)` in
/// whole milliseconds, clamped to `max`. A fixed latency draws nothing.
pub fn sample_latency(latency: &Latency, rng: &mut SmallRng) -> Duration {
    match *latency {
        Latency::Fixed(d) => d,
        Latency::Range { min, max } => {
            let range_ms = (max - min).as_millis() as f64;
            // Exp(5) by inversion; `1 - u` is in (0, 1], so the logarithm is finite.
            let u: f64 = rng.random();
            let mult = -(1.0 - u).ln() / 5.0;
            let extra = Duration::from_millis((range_ms * mult) as u64);
            (min + extra).min(max)
        }
    }
}

/// A liveness change the server reported, with the time it happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// Simulated time since the start.
    pub at: Duration,
    /// The client, by index in the scenario.
    pub client: usize,
    /// The state before.
    pub from: Liveness,
    /// The state after.
    pub to: Liveness,
}

/// The transitions grouped by client, each client's in order: the form in which two runs are
/// compared. Between clients, the order of transitions at one instant is the server's (its
/// checks due at one instant run in the order the clients first connected), which a replay
/// does not reproduce and nothing depends on.
pub fn per_client(transitions: &[Transition]) -> Vec<Transition> {
    let mut v = transitions.to_vec();
    v.sort_by_key(|t| t.client); // stable: each client's order is kept
    v
}

/// A half-open span of simulated time, `[from, to)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Period {
    /// Start (included).
    pub from: Duration,
    /// End (excluded).
    pub to: Duration,
}

/// A client crash and how long it lasted, as far as the monitor could tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Crash {
    /// When the process crashed.
    pub at: Duration,
    /// When its next process was reachable again (its first heartbeat arrived), or the end of
    /// the run: the window in which the monitor should have declared it down.
    pub until: Duration,
}

/// The ground truth of one client.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientTruth {
    /// When it was reachable (see the module docs), in order.
    pub reachable: Vec<Period>,
    /// Its crashes, in order.
    pub crashes: Vec<Crash>,
}

/// One input of the server's liveness machinery, as the server received it: what a replay of
/// the same run needs to reproduce every detector's decisions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TraceItem {
    /// Heartbeats arrived in one read (`seqs` indexes [`TraceBatch::seqs`]), duplicates included.
    Arrival {
        /// Monotonic arrival time.
        at: Instant,
        /// The client.
        client: usize,
        /// Their sequence numbers.
        seqs: std::ops::Range<usize>,
    },
    /// The server forgot the client altogether (evicted at its client limit): it is a new
    /// client when it comes back.
    Forget {
        /// When.
        at: Instant,
        /// The client.
        client: usize,
    },
    /// The client said goodbye.
    Left {
        /// When.
        at: Instant,
        /// The client.
        client: usize,
    },
    /// The server forgot the client's timing history (a new session).
    Reset {
        /// When.
        at: Instant,
        /// The client.
        client: usize,
    },
    /// The server restarted: every client is unknown again.
    ServerRestart {
        /// When.
        at: Instant,
    },
}

/// A batch of trace items, handed to the trace sink every few thousand arrivals.
#[derive(Clone, Debug, Default)]
pub struct TraceBatch {
    /// The items, in the order the server saw them.
    pub items: Vec<TraceItem>,
    /// The sequence numbers the arrivals index.
    pub seqs: Vec<Seq>,
}

impl TraceBatch {
    /// Empties the batch, keeping its allocations.
    pub fn clear(&mut self) {
        self.items.clear();
        self.seqs.clear();
    }
}

/// Arrivals per trace batch.
const BATCH: usize = 4096;

/// How much simulated time passes between two progress reports.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// Everything one run produced.
#[derive(Debug)]
pub struct Run {
    /// The server's liveness transitions, in order.
    pub transitions: Vec<Transition>,
    /// Ground truth per client.
    pub truth: Vec<ClientTruth>,
    /// The last server incarnation's report at the end.
    pub report: Report,
    /// The end of the run (the fault phase plus the drain).
    pub end: Duration,
    /// The monotonic origin of the run (trace items are instants).
    pub origin: Instant,
    /// Heartbeats the clients sent.
    pub sent: u64,
    /// Heartbeats the server received (duplicates excluded).
    pub received: u64,
}

#[derive(Debug)]
enum Delivery {
    Syn,
    SynAck,
    Refused,
    Bytes(Vec<u8>),
    Eof,
}

#[derive(Debug, Default)]
struct Pipe {
    queue: VecDeque<(Instant, Delivery)>,
    tail: Option<Instant>,
}

impl Pipe {
    /// Queues `d` for `at`, but never before the previous message (TCP order).
    fn push(&mut self, at: Instant, d: Delivery) {
        let at = self.tail.map_or(at, |t| t.max(at));
        self.tail = Some(at);
        self.queue.push_back((at, d));
    }

    fn head(&self) -> Option<Instant> {
        self.queue.front().map(|(at, _)| *at)
    }

    fn clear(&mut self) {
        self.queue.clear();
    }

    fn release(&mut self, now: Instant) {
        for (at, _) in &mut self.queue {
            *at = (*at).max(now);
        }
        self.tail = self.tail.map(|t| t.max(now));
    }
}

/// One connection (attempt) between a client process and the server.
#[derive(Debug)]
struct Link {
    client: usize,
    /// The client process that opened it.
    incarnation: u32,
    /// The server process that accepted it.
    server_inc: u32,
    conn: Option<ConnId>,
    up: Pipe,
    down: Pipe,
    /// Cut by a partition: everything on it is lost, for good.
    broken: bool,
    held: bool,
    client_open: bool,
    server_open: bool,
    /// While the handshake is under way: when the client gives up on it.
    connecting_until: Option<Instant>,
}

impl Link {
    fn is_finished(&self) -> bool {
        !self.client_open
            && !self.server_open
            && self.connecting_until.is_none()
            && (self.broken || (self.up.queue.is_empty() && self.down.queue.is_empty()))
    }
}

#[derive(Debug)]
struct Proc {
    key: ClientKey,
    addr: SocketAddr,
    config: ClientConfig,
    machine: Option<Client>,
    /// Processes started so far (the running one is `incarnation - 1`).
    incarnation: u32,
    link: Option<usize>,
    cut: bool,
    held: bool,
    latency: Latency,
    up_rng: SmallRng,
    down_rng: SmallRng,
    /// Alive and its link up, but no heartbeat arrived yet since then.
    awaiting: bool,
    reachable_since: Option<Duration>,
    truth: ClientTruth,
    /// An open crash waiting for the client to be reachable again.
    open_crash: Option<Duration>,
}

impl Proc {
    fn alive(&self) -> bool {
        self.machine.as_ref().is_some_and(|m| !m.is_done())
    }
}

/// The engine. Build with [`Engine::new`], then [`Engine::run`].
#[derive(Debug)]
pub struct Engine<'s> {
    scenario: &'s Scenario,
    server_config: Arc<ServerConfig>,
    server: Option<Server>,
    server_inc: u32,
    procs: Vec<Proc>,
    by_key: BTreeMap<ClientKey, usize>,
    links: Vec<Link>,
    /// Links that may still carry something, in creation order.
    live: Vec<usize>,
    /// Links by the current server's connection ids (`ConnId(n)` is at `n - 1`).
    conn_links: Vec<usize>,
    origin: Now,
    now: Now,
    next_action: usize,
    healed: bool,
    transitions: Vec<Transition>,
    sent: u64,
    received: u64,
    trace: Option<TraceBatch>,
    /// The arrival being gathered while the server's outputs for one read are drained: its
    /// client and where its sequence numbers start in the batch.
    pending: Option<(usize, usize)>,
    /// Scratch space to join several messages due at once into one read.
    read: Vec<u8>,
}

impl<'s> Engine<'s> {
    /// An engine for `scenario` whose server runs with `server_config`. With `trace`, the
    /// server's liveness inputs are recorded for [`Engine::run`]'s sink.
    pub fn new(
        scenario: &'s Scenario,
        server_config: ServerConfig,
        trace: bool,
    ) -> Result<Self, String> {
        // An arbitrary origin: only offsets from it are ever rendered.
        #[allow(clippy::disallowed_methods)]
        let mono = Instant::now();
        let origin = Now {
            mono,
            unix: UnixTime::from_duration(Duration::from_secs(EPOCH_SECS)),
        };
        let seed = scenario.params.seed;
        let mut procs = Vec::new();
        let mut by_key = BTreeMap::new();
        for (i, plan) in scenario.clients.iter().enumerate() {
            let id = ClientId::new(&plan.id).map_err(|e| e.to_string())?;
            let mut config = ClientConfig::new(id.clone(), scenario.interval)
                .map_err(|e| e.to_string())?
                .reconnect(Some(Backoff::default()));
            if let Some(t) = plan.ack_timeout {
                config = config.ack_timeout(t).map_err(|e| e.to_string())?;
            }
            let key = ClientKey::Id(id);
            by_key.insert(key.clone(), i);
            let i64 = i as u64;
            procs.push(Proc {
                key,
                addr: SocketAddr::from(([10, 0, (i / 250) as u8, 1 + (i % 250) as u8], 49_152)),
                config,
                machine: None,
                incarnation: 0,
                link: None,
                cut: false,
                held: false,
                latency: scenario.params.latency,
                up_rng: SmallRng::seed_from_u64(derive_seed(seed, 3001 + i64, 0)),
                down_rng: SmallRng::seed_from_u64(derive_seed(seed, 4001 + i64, 0)),
                awaiting: false,
                reachable_since: None,
                truth: ClientTruth::default(),
                open_crash: None,
            });
        }
        Ok(Self {
            scenario,
            server_config: Arc::new(server_config),
            server: None,
            server_inc: 0,
            procs,
            by_key,
            links: Vec::new(),
            live: Vec::new(),
            conn_links: Vec::new(),
            origin,
            now: origin,
            next_action: 0,
            healed: false,
            transitions: Vec::new(),
            sent: 0,
            received: 0,
            trace: trace.then(TraceBatch::default),
            pending: None,
            read: Vec::new(),
        })
    }

    /// Runs the scenario to its end (fault phase, heal, drain). `sink` gets the trace in
    /// batches (it may take the batch's contents; the engine clears it afterwards);
    /// `progress` counts simulated milliseconds as they pass.
    pub fn run(
        mut self,
        sink: &mut dyn FnMut(&mut TraceBatch),
        progress: Option<&AtomicU64>,
    ) -> Run {
        let s = self.scenario;
        let end = self.origin.mono + s.duration + s.drain;
        self.start_server();
        for i in 0..self.procs.len() {
            if !s.clients[i].starts_late {
                self.start_client(i);
            }
        }
        let mut reported = self.origin.mono;
        let mut report_at = reported + PROGRESS_EVERY;
        while let Some(t) = self.next_event().filter(|t| *t <= end) {
            self.advance(t);
            self.step_now();
            if self.trace.as_ref().is_some_and(|b| b.items.len() >= BATCH) {
                self.flush_trace(sink);
            }
            if self.now.mono >= report_at {
                if let Some(p) = progress {
                    let since = self.now.mono - reported;
                    p.fetch_add(since.as_millis() as u64, Ordering::Relaxed);
                }
                reported = self.now.mono;
                report_at = reported + PROGRESS_EVERY;
            }
        }
        self.advance(end);
        self.step_now();
        self.flush_trace(sink);
        if let Some(p) = progress {
            p.fetch_add((end - reported).as_millis() as u64, Ordering::Relaxed);
        }
        let end_d = self.elapsed();
        let mut truth = Vec::with_capacity(self.procs.len());
        for p in &mut self.procs {
            if let Some(from) = p.reachable_since.take() {
                p.truth.reachable.push(Period { from, to: end_d });
            }
            if let Some(at) = p.open_crash.take() {
                p.truth.crashes.push(Crash { at, until: end_d });
            }
            truth.push(std::mem::take(&mut p.truth));
        }
        let report = self.server.as_ref().map_or_else(
            || Report {
                clients: Vec::new(),
            },
            Server::report,
        );
        Run {
            transitions: self.transitions,
            truth,
            report,
            end: end_d,
            origin: self.origin.mono,
            sent: self.sent,
            received: self.received,
        }
    }

    fn flush_trace(&mut self, sink: &mut dyn FnMut(&mut TraceBatch)) {
        if let Some(batch) = self.trace.as_mut() {
            if !batch.items.is_empty() {
                sink(batch);
                batch.clear();
            }
        }
    }

    fn elapsed(&self) -> Duration {
        self.now.mono - self.origin.mono
    }

    fn advance(&mut self, t: Instant) {
        if t > self.now.mono {
            self.now = self.now.advanced(t - self.now.mono);
        }
    }

    fn next_event(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        if let Some(a) = self.scenario.actions.get(self.next_action) {
            consider(Some(self.origin.mono + a.at));
        }
        if !self.healed {
            consider(Some(self.origin.mono + self.scenario.duration));
        }
        consider(self.server.as_ref().and_then(Server::poll_timeout));
        for p in &self.procs {
            consider(p.machine.as_ref().and_then(Client::poll_timeout));
        }
        for &l in &self.live {
            let link = &self.links[l];
            if !link.held {
                // Nothing reaches a crashed server: it waits for the restart.
                if self.server.is_some() {
                    consider(link.up.head());
                }
                consider(link.down.head());
            }
            consider(link.connecting_until);
        }
        next
    }

    /// Does everything due now, until nothing more is.
    fn step_now(&mut self) {
        loop {
            let now = self.now.mono;
            let mut progressed = false;
            let scenario = self.scenario;
            while let Some(a) = scenario.actions.get(self.next_action) {
                if self.origin.mono + a.at > now {
                    break;
                }
                self.next_action += 1;
                self.apply(&a.action);
                progressed = true;
            }
            if !self.healed && self.origin.mono + self.scenario.duration <= now {
                self.healed = true;
                self.heal();
                progressed = true;
            }
            let mut k = 0;
            while k < self.live.len() {
                let l = self.live[k];
                progressed |= self.deliver_up(l);
                progressed |= self.deliver_down(l);
                if self.links[l]
                    .connecting_until
                    .is_some_and(|until| until <= now)
                {
                    self.connect_timed_out(l);
                    progressed = true;
                }
                k += 1;
            }
            for i in 0..self.procs.len() {
                let due = self.procs[i]
                    .machine
                    .as_ref()
                    .and_then(Client::poll_timeout)
                    .is_some_and(|t| t <= now);
                if due {
                    let at = self.now;
                    if let Some(m) = self.procs[i].machine.as_mut() {
                        m.handle_timeout(at);
                    }
                    self.drain_client(i);
                    progressed = true;
                }
            }
            if progressed {
                continue;
            }
            // The server's timers last, once every arrival due now has been read: a heartbeat
            // and a liveness check due at the same instant are judged heartbeat first (as a
            // replay of the arrivals does; see `replay`).
            if self
                .server
                .as_ref()
                .and_then(Server::poll_timeout)
                .is_some_and(|t| t <= now)
            {
                let at = self.now;
                if let Some(s) = self.server.as_mut() {
                    s.handle_timeout(at);
                }
                self.drain_server();
                progressed = true;
            }
            if !progressed {
                break;
            }
        }
        let links = &self.links;
        self.live.retain(|&l| !links[l].is_finished());
    }

    // ---- delivery ----

    /// Delivers what is due on `l`'s client-to-server pipe.
    fn deliver_up(&mut self, l: usize) -> bool {
        let now = self.now.mono;
        let link = &mut self.links[l];
        if link.held || self.server.is_none() || link.up.head().is_none_or(|t| t > now) {
            return false;
        }
        let mut bytes: Option<Vec<u8>> = None;
        self.read.clear();
        let mut eof = false;
        let mut syn = false;
        while let Some((at, _)) = link.up.queue.front() {
            if *at > now {
                break;
            }
            let (_, d) = link.up.queue.pop_front().expect("checked");
            match d {
                Delivery::Bytes(b) => {
                    if let Some(first) = bytes.take() {
                        self.read.extend_from_slice(&first);
                    }
                    if self.read.is_empty() {
                        bytes = Some(b);
                    } else {
                        self.read.extend_from_slice(&b);
                    }
                }
                Delivery::Eof => {
                    eof = true;
                    link.up.clear();
                    break;
                }
                Delivery::Syn => {
                    syn = true;
                    break;
                }
                Delivery::SynAck | Delivery::Refused => {}
            }
        }
        if syn {
            self.on_syn(l);
            return true;
        }
        let link = &self.links[l];
        let same_server = link.server_inc == self.server_inc && link.server_open;
        let conn = link.conn;
        if let (true, Some(conn)) = (same_server, conn) {
            let read = std::mem::take(&mut self.read);
            let data: &[u8] = bytes.as_deref().unwrap_or(&read);
            if !data.is_empty() {
                let at = self.now;
                if let Some(s) = self.server.as_mut() {
                    s.handle_input(at, conn, data);
                }
                self.drain_server();
            }
            self.read = read;
            if eof {
                let at = self.now;
                if let Some(s) = self.server.as_mut() {
                    s.handle_eof(at, conn);
                }
                self.drain_server();
            }
        }
        true
    }

    /// Delivers what is due on `l`'s server-to-client pipe.
    fn deliver_down(&mut self, l: usize) -> bool {
        let now = self.now.mono;
        let link = &mut self.links[l];
        if link.held || link.down.head().is_none_or(|t| t > now) {
            return false;
        }
        self.read.clear();
        let mut eof = false;
        let mut handshake = None;
        while let Some((at, _)) = link.down.queue.front() {
            if *at > now {
                break;
            }
            let (_, d) = link.down.queue.pop_front().expect("checked");
            match d {
                Delivery::Bytes(b) => self.read.extend_from_slice(&b),
                Delivery::Eof => {
                    eof = true;
                    link.down.clear();
                    break;
                }
                d @ (Delivery::SynAck | Delivery::Refused) => {
                    handshake = Some(d);
                    break;
                }
                Delivery::Syn => {}
            }
        }
        let i = link.client;
        let current = self.procs[i].link == Some(l) && link.client_open;
        if let Some(d) = handshake {
            if current && link.connecting_until.is_some() {
                self.links[l].connecting_until = None;
                let at = self.now;
                match d {
                    Delivery::SynAck => {
                        if let Some(m) = self.procs[i].machine.as_mut() {
                            m.handle_connected(at);
                        }
                    }
                    _ => {
                        self.links[l].client_open = false;
                        self.procs[i].link = None;
                        if let Some(m) = self.procs[i].machine.as_mut() {
                            m.handle_connect_failed(at, "connection refused");
                        }
                    }
                }
                self.drain_client(i);
            }
            return true;
        }
        if current {
            let at = self.now;
            if !self.read.is_empty() {
                if let Some(m) = self.procs[i].machine.as_mut() {
                    m.handle_input(at, &self.read);
                }
            }
            if eof {
                self.links[l].client_open = false;
                self.procs[i].link = None;
                if let Some(m) = self.procs[i].machine.as_mut() {
                    m.handle_eof(at);
                }
            }
            self.drain_client(i);
        }
        true
    }

    /// A SYN arrives. turmoil answers in-process, not over the network: the client learns at
    /// once that it is connected (or refused), so a connect costs one latency.
    fn on_syn(&mut self, l: usize) {
        let at = self.now.mono;
        let i = self.links[l].client;
        let peer = self.procs[i].addr;
        let now = self.now;
        let server = self.server.as_mut().expect("checked");
        let conn = server.accept(now, peer);
        debug_assert_eq!(conn.0 as usize, self.conn_links.len() + 1);
        self.conn_links.push(l);
        let link = &mut self.links[l];
        link.conn = Some(conn);
        link.server_inc = self.server_inc;
        link.server_open = true;
        link.down.push(at, Delivery::SynAck);
        self.drain_server();
    }

    fn connect_timed_out(&mut self, l: usize) {
        let link = &mut self.links[l];
        link.connecting_until = None;
        link.client_open = false;
        let i = link.client;
        if self.procs[i].link == Some(l) {
            self.procs[i].link = None;
            let at = self.now;
            if let Some(m) = self.procs[i].machine.as_mut() {
                m.handle_connect_failed(at, "connect timed out");
            }
            self.drain_client(i);
        }
    }

    fn draw_up(&mut self, i: usize) -> Duration {
        let p = &mut self.procs[i];
        sample_latency(&p.latency, &mut p.up_rng)
    }

    fn draw_down(&mut self, i: usize) -> Duration {
        let p = &mut self.procs[i];
        sample_latency(&p.latency, &mut p.down_rng)
    }

    // ---- machine outputs ----

    fn drain_server(&mut self) {
        while let Some(out) = self.server.as_mut().and_then(Server::poll_output) {
            match out {
                server::Output::Transmit { conn, bytes } => {
                    let Some(&l) = self.conn_links.get(conn.0 as usize - 1) else {
                        continue;
                    };
                    let link = &self.links[l];
                    if link.broken || !link.client_open {
                        continue;
                    }
                    let i = link.client;
                    let at = self.now.mono + self.draw_down(i);
                    self.links[l].down.push(at, Delivery::Bytes(bytes));
                }
                server::Output::Disconnect { conn, .. } => {
                    let Some(&l) = self.conn_links.get(conn.0 as usize - 1) else {
                        continue;
                    };
                    let link = &self.links[l];
                    if !link.server_open {
                        continue;
                    }
                    let (broken, open, i) = (link.broken, link.client_open, link.client);
                    self.links[l].server_open = false;
                    if !broken && open {
                        let at = self.now.mono + self.draw_down(i);
                        self.links[l].down.push(at, Delivery::Eof);
                    }
                }
                server::Output::Event(e) => self.on_server_event(e),
            }
        }
        self.close_arrival();
    }

    fn on_server_event(&mut self, e: Event) {
        match e {
            Event::Heartbeat { conn, seq, .. } => {
                self.received += 1;
                let l = self.conn_links[conn.0 as usize - 1];
                let i = self.links[l].client;
                let p = &mut self.procs[i];
                if p.awaiting && self.links[l].incarnation + 1 == p.incarnation {
                    p.awaiting = false;
                    let at = self.now.mono - self.origin.mono;
                    p.reachable_since = Some(at);
                    if let Some(c) = p.open_crash.take() {
                        p.truth.crashes.push(Crash { at: c, until: at });
                    }
                }
                self.trace_seq(i, seq);
            }
            Event::Duplicate { conn, seq, .. } => {
                let l = self.conn_links[conn.0 as usize - 1];
                let i = self.links[l].client;
                self.trace_seq(i, seq);
            }
            Event::Restarted { client, .. } => {
                if let Some(&i) = self.by_key.get(&client) {
                    let at = self.now.mono;
                    if let Some(b) = self.trace.as_mut() {
                        b.items.push(TraceItem::Reset { at, client: i });
                    }
                }
            }
            Event::Evicted { client } => {
                if let Some(&i) = self.by_key.get(&client) {
                    let at = self.now.mono;
                    if let Some(b) = self.trace.as_mut() {
                        b.items.push(TraceItem::Forget { at, client: i });
                    }
                }
            }
            Event::Transition {
                client, from, to, ..
            } => {
                let Some(&i) = self.by_key.get(&client) else {
                    return;
                };
                let at = self.elapsed();
                self.transitions.push(Transition {
                    at,
                    client: i,
                    from,
                    to,
                });
                if to == Liveness::Left {
                    // The heartbeats read before the goodbye were one arrival of their own.
                    self.close_arrival();
                    let at = self.now.mono;
                    if let Some(b) = self.trace.as_mut() {
                        b.items.push(TraceItem::Left { at, client: i });
                    }
                }
            }
            _ => {}
        }
    }

    fn trace_seq(&mut self, i: usize, seq: Seq) {
        let Some(b) = self.trace.as_mut() else {
            return;
        };
        match self.pending {
            Some((c, _)) if c == i => {}
            Some(_) => {
                self.close_arrival();
                let b = self.trace.as_mut().expect("checked");
                self.pending = Some((i, b.seqs.len()));
            }
            None => self.pending = Some((i, b.seqs.len())),
        }
        self.trace.as_mut().expect("checked").seqs.push(seq);
    }

    /// Ends the arrival being gathered (one read's heartbeats).
    fn close_arrival(&mut self) {
        if let (Some((client, start)), Some(b)) = (self.pending.take(), self.trace.as_mut()) {
            let end = b.seqs.len();
            b.items.push(TraceItem::Arrival {
                at: self.now.mono,
                client,
                seqs: start..end,
            });
        }
    }

    fn drain_client(&mut self, i: usize) {
        while let Some(out) = self.procs[i].machine.as_mut().and_then(Client::poll_output) {
            match out {
                client::Output::Connect => self.connect(i),
                client::Output::Transmit(bytes) => {
                    let Some(l) = self.procs[i].link else {
                        continue;
                    };
                    if self.links[l].broken || !self.links[l].client_open {
                        continue;
                    }
                    let at = self.now.mono + self.draw_up(i);
                    self.links[l].up.push(at, Delivery::Bytes(bytes));
                }
                client::Output::Disconnect { .. } => {
                    if let Some(l) = self.procs[i].link.take() {
                        self.close_client_side(l, true);
                    }
                }
                client::Output::Event(client::Event::Sent { .. }) => self.sent += 1,
                client::Output::Event(_) => {}
            }
        }
    }

    /// The client's end of `l` closes: with `fin`, a FIN follows what is in flight.
    fn close_client_side(&mut self, l: usize, fin: bool) {
        let i = self.links[l].client;
        let link = &self.links[l];
        let send_fin = fin && !link.broken && link.client_open && link.connecting_until.is_none();
        if send_fin {
            let at = self.now.mono + self.draw_up(i);
            self.links[l].up.push(at, Delivery::Eof);
        }
        let link = &mut self.links[l];
        link.client_open = false;
        link.connecting_until = None;
        link.down.clear();
    }

    fn connect(&mut self, i: usize) {
        let now = self.now;
        if self.procs[i].cut {
            // turmoil drops a SYN into a cut link at once and fails the connect.
            if let Some(m) = self.procs[i].machine.as_mut() {
                m.handle_connect_failed(now, "connection refused");
            }
            return;
        }
        let l = self.links.len();
        let p = &self.procs[i];
        self.links.push(Link {
            client: i,
            incarnation: p.incarnation - 1,
            server_inc: self.server_inc,
            conn: None,
            up: Pipe::default(),
            down: Pipe::default(),
            broken: false,
            held: p.held,
            client_open: true,
            server_open: false,
            connecting_until: Some(now.mono + CONNECT_TIMEOUT),
        });
        self.live.push(l);
        self.procs[i].link = Some(l);
        let at = now.mono + self.draw_up(i);
        self.links[l].up.push(at, Delivery::Syn);
    }

    // ---- processes and faults ----

    fn start_server(&mut self) {
        self.server = Some(Server::new(self.server_config.clone()));
        self.server_inc += 1;
        self.conn_links.clear();
        if self.server_inc > 1 {
            // SYNs that waited for the crashed server reach the new one before it listens:
            // refused (turmoil delivers them to the restarted host, which has no listener yet).
            let now = self.now.mono;
            for k in 0..self.live.len() {
                let link = &mut self.links[self.live[k]];
                if link
                    .up
                    .queue
                    .front()
                    .is_some_and(|(at, d)| *at <= now && matches!(d, Delivery::Syn))
                {
                    link.up.queue.pop_front();
                    link.down.push(now, Delivery::Refused);
                }
            }
            let at = self.now.mono;
            if let Some(b) = self.trace.as_mut() {
                b.items.push(TraceItem::ServerRestart { at });
            }
            for p in &mut self.procs {
                if p.alive() && !p.cut && !p.held {
                    p.awaiting = true;
                }
            }
        }
    }

    fn start_client(&mut self, i: usize) {
        let seed = self.scenario.params.seed;
        let p = &mut self.procs[i];
        let inc = u64::from(p.incarnation);
        let idx = i as u64;
        let config = p
            .config
            .clone()
            .session(derive_seed(seed, 1 + idx, inc))
            .rng_seed(derive_seed(seed, 1001 + idx, inc));
        p.incarnation += 1;
        p.machine = Some(Client::new(config, self.now));
        p.awaiting = !p.cut && !p.held && self.server.is_some();
        self.drain_client(i);
    }

    /// Ends client `i`'s reachable period now, if one is open.
    fn unreachable(&mut self, i: usize) {
        let at = self.elapsed();
        let p = &mut self.procs[i];
        p.awaiting = false;
        if let Some(from) = p.reachable_since.take() {
            p.truth.reachable.push(Period { from, to: at });
        }
    }

    /// Crashes client `i`: cleanly (FIN after what is in flight) or silently (in-flight lost).
    fn crash_client(&mut self, i: usize, silent: bool) {
        if !self.procs[i].alive() {
            self.procs[i].machine = None;
            return;
        }
        self.unreachable(i);
        let at = self.elapsed();
        let p = &mut self.procs[i];
        p.machine = None;
        if p.open_crash.is_none() {
            p.open_crash = Some(at);
        }
        if let Some(l) = p.link.take() {
            if silent {
                self.break_link(l);
            }
            self.close_client_side(l, !silent);
        }
    }

    fn break_link(&mut self, l: usize) {
        let link = &mut self.links[l];
        link.broken = true;
        link.up.clear();
        link.down.clear();
    }

    fn crash_server(&mut self, silent: bool) {
        if self.server.take().is_none() {
            return;
        }
        for i in 0..self.procs.len() {
            self.unreachable(i);
        }
        for k in 0..self.live.len() {
            let l = self.live[k];
            if self.links[l].server_inc != self.server_inc || !self.links[l].server_open {
                continue;
            }
            self.links[l].server_open = false;
            if silent {
                self.break_link(l);
            } else if self.links[l].client_open && !self.links[l].broken {
                let i = self.links[l].client;
                let at = self.now.mono + self.draw_down(i);
                self.links[l].down.push(at, Delivery::Eof);
            }
        }
    }

    fn links_of(&self, i: usize) -> Vec<usize> {
        self.live
            .iter()
            .copied()
            .filter(|&l| self.links[l].client == i)
            .collect()
    }

    fn apply(&mut self, action: &Action) {
        match *action {
            Action::Bounce(Node::Client(i)) => {
                self.crash_client(i, false);
                self.start_client(i);
            }
            Action::Bounce(Node::Server) => {
                self.crash_server(false);
                self.start_server();
            }
            Action::Crash(Node::Client(i)) => self.crash_client(i, false),
            Action::Crash(Node::Server) => self.crash_server(false),
            Action::SilentCrash(Node::Client(i)) => self.crash_client(i, true),
            Action::SilentCrash(Node::Server) => self.crash_server(true),
            Action::Hold(i) => {
                self.unreachable(i);
                self.procs[i].held = true;
                for l in self.links_of(i) {
                    self.links[l].held = true;
                }
            }
            Action::Release(i) => self.release(i),
            Action::Latency(i, d) => self.procs[i].latency = Latency::Fixed(d),
            Action::Partition(i) => {
                self.unreachable(i);
                self.procs[i].cut = true;
                for l in self.links_of(i) {
                    self.break_link(l);
                }
            }
            Action::Repair(i) => self.repair(i),
            Action::Start(i) => {
                if self.procs[i].machine.is_none() && self.procs[i].incarnation == 0 {
                    self.start_client(i);
                }
            }
            Action::Stop(i) => {
                self.unreachable(i);
                let now = self.now;
                if let Some(m) = self.procs[i].machine.as_mut() {
                    m.close(now);
                }
                self.drain_client(i);
            }
        }
    }

    fn release(&mut self, i: usize) {
        let now = self.now.mono;
        let was = std::mem::replace(&mut self.procs[i].held, false);
        for l in self.links_of(i) {
            let link = &mut self.links[l];
            link.held = false;
            link.up.release(now);
            link.down.release(now);
        }
        self.back_in_reach(i, was);
    }

    fn repair(&mut self, i: usize) {
        let was = std::mem::replace(&mut self.procs[i].cut, false);
        self.back_in_reach(i, was);
    }

    fn back_in_reach(&mut self, i: usize, was_out: bool) {
        let p = &mut self.procs[i];
        if was_out && p.alive() && !p.cut && !p.held && self.server.is_some() {
            p.awaiting = true;
        }
    }

    /// The end of the fault phase: every link released and repaired, the server restarted if
    /// it is down (as `world::run` does).
    fn heal(&mut self) {
        for i in 0..self.procs.len() {
            self.release(i);
            self.repair(i);
        }
        if self.server.is_none() {
            self.start_server();
        }
    }

    /// The monotonic instant the run starts at; trace items are instants after it.
    pub fn origin(&self) -> Instant {
        self.origin.mono
    }

    /// The key the server knows client `i` by.
    pub fn key(&self, i: usize) -> &ClientKey {
        &self.procs[i].key
    }
}
