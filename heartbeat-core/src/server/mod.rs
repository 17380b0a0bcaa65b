//! The heartbeat server state machine: many connections, one analysis per client.

mod advice;
mod event;
mod handshake;
mod limits;
mod persist;
pub mod qos;
mod session;
mod stats;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use crate::analysis::Report;
use crate::auth::{AuthFailure, AuthKeys};
use crate::config::ServerConfig;
use crate::detector::ClientDetectors;
use crate::error::{DecodeError, DisconnectReason, Violation};
use crate::frame::{Frame, Inbound, Protocol, StreamDecoder};
use crate::ids::{ClientId, ClientKey, ConnId, Seq};
use crate::liveness::{Change, Watches};
use crate::time::{Now, UnixTime};
use crate::timer::DeadlineQueue;
use handshake::{Challenger, Claim, Refusal};
use limits::Pace;
use session::ClientRecord;
use stats::bump;

pub use crate::liveness::Liveness;
pub use advice::ADVICE_EVERY;
pub use event::{Event, Output, unix_seconds};
pub use persist::{MergedState, Restored, STATE_VERSION, State, StateError};
pub use session::ClientView;
pub use stats::{DELAY_BUCKETS, DelayHistogram, ServerStats};

/// After a stall of the server itself, how long before due timers are looked at again.
const STALL_RECHECK: Duration = Duration::from_secs(1);

/// The heartbeat server: accepts connections, decodes either protocol, acknowledges v1
/// heartbeats, analyses every client on its own and drops dead or hostile connections.
///
/// # Calling rule
/// After every `handle_*` call or command, drain [`poll_output`](Self::poll_output) until it
/// returns `None`, carrying out each output in order (a `Transmit` before a later `Disconnect`
/// of the same connection), then read [`poll_timeout`](Self::poll_timeout). Calling
/// [`handle_timeout`](Self::handle_timeout) early does nothing.
///
/// Every accepted connection ends with exactly one [`Output::Disconnect`], whoever ended it;
/// input for a connection after that is ignored.
///
/// With [`ServerConfig::auth`] on, a v1 connection becomes its client only after answering a
/// challenge with its id's secret; without it, ids are taken on trust and only the identity
/// rule (see `handshake.rs` and `PROTOCOL.md`) protects a live client from a newer connection.
///
/// ```no_run
/// # use std::sync::Arc;
/// # use heartbeat_core::Now;
/// # use heartbeat_core::config::ServerConfig;
/// # use heartbeat_core::server::{Output, Server};
/// # fn now() -> Now { unimplemented!() }
/// let mut server = Server::new(Arc::new(ServerConfig::default()));
/// let conn = server.accept(now(), "127.0.0.1:50000".parse().unwrap());
/// server.handle_input(now(), conn, b"HELLO 1 web-01 1000\nBEAT 1 1752356183.5769\n");
/// while let Some(out) = server.poll_output() {
///     match out {
///         Output::Transmit { conn, bytes } => { /* write_all to conn */ }
///         Output::Disconnect { conn, .. } => { /* close conn */ }
///         Output::Event(event) => println!("{event}"),
///     }
/// }
/// // sleep until server.poll_timeout(), then server.handle_timeout(now())
/// ```
#[derive(Debug)]
pub struct Server {
    config: Arc<ServerConfig>,
    /// Open connections. Looked up per read, never iterated where order matters.
    /// Keyed by ids the server assigns: hashed fast (FxHash), nothing a peer picks.
    conns: FxHashMap<ConnId, Conn>,
    /// Every client ever seen; a connection holds its client's index, so the per-heartbeat path
    /// does no key comparisons. Boxed, so that the vector's spare capacity costs a pointer per
    /// slot rather than a whole record.
    #[allow(
        clippy::vec_box,
        reason = "a growing Vec of 640-byte records holds up to a third of them spare"
    )]
    clients: Vec<Box<ClientRecord>>,
    /// Client keys to indices in `clients`, sorted for reports.
    index: BTreeMap<ClientKey, usize>,
    next_conn: u64,
    /// Connection deadlines (hello and idle timeouts), lazily re-armed.
    deadlines: DeadlineQueue<ConnId>,
    /// Every client's liveness machine, by the same index as `clients`.
    liveness: Watches,
    /// Detector settings per client id ([`set_client_detectors`](Self::set_client_detectors)).
    client_detectors: ClientDetectors,
    /// Challenge nonces, when authentication is on.
    challenger: Option<Challenger>,
    /// Records changed since the last [`persist_changes`](Self::persist_changes).
    changes: Changes,
    /// When disconnected clients are forgotten (client indices, lazily re-checked: an entry
    /// counts only if its client is still gone, since long enough).
    forget: DeadlineQueue<usize>,
    /// Slots of forgotten clients (gone for the forget-after, or an expected client taken off
    /// the list before it was heard from), reused before `clients` grows.
    free: Vec<usize>,
    stats: ServerStats,
    out: VecDeque<Output>,
    /// Buffers reused across reads, so the per-heartbeat path does not allocate them.
    scratch_units: Vec<Inbound>,
    scratch_beats: Vec<(Seq, UnixTime)>,
}

#[derive(Debug)]
struct Conn {
    peer: SocketAddr,
    decoder: StreamDecoder,
    state: ConnState,
    /// Monotonic time of the last bytes received (or of accept).
    last_rx: Instant,
    /// The deadline this connection has in the queue.
    queued: Instant,
    /// Its heartbeats against its interval.
    pace: Pace,
    /// Set once its `HELLO` negotiated advice (and it was welcomed).
    advice: Option<advice::Advice>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ConnState {
    /// A v1 `HELLO` was challenged (authentication on); waiting for `AUTH`.
    Challenged(Box<Claim>),
    /// Waiting for the first bytes, or for `HELLO` on a v1 connection.
    Opening,
    /// Identified.
    Live {
        key: ClientKey,
        idx: usize,
        protocol: Protocol,
    },
}

impl Server {
    /// An empty server.
    pub fn new(config: Arc<ServerConfig>) -> Self {
        Self {
            liveness: Watches::with_flap(config.detector.clone(), config.flap),
            client_detectors: ClientDetectors::default(),
            challenger: config.auth.as_ref().map(|a| Challenger::new(a.rng_seed)),
            changes: Changes::default(),
            config,
            conns: FxHashMap::default(),
            clients: Vec::new(),
            index: BTreeMap::new(),
            next_conn: 1,
            deadlines: DeadlineQueue::new(),
            forget: DeadlineQueue::new(),
            free: Vec::new(),
            stats: ServerStats::default(),
            out: VecDeque::new(),
            scratch_units: Vec::new(),
            scratch_beats: Vec::new(),
        }
    }

    // ---- getters ----

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Open connections.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Clients remembered (listed in reports): not forgotten or evicted.
    pub fn client_count(&self) -> usize {
        self.index.len()
    }

    /// What the server counted, server-wide (connections, refusals, delays).
    pub fn stats(&self) -> &ServerStats {
        &self.stats
    }

    /// One client's analysis and liveness.
    pub fn client(&self, key: &ClientKey) -> Option<ClientView<'_>> {
        self.index.get(key).map(|&i| self.view(i))
    }

    /// Every client's analysis and liveness, sorted by key.
    pub fn clients(&self) -> impl Iterator<Item = ClientView<'_>> + '_ {
        self.index.values().map(|&i| self.view(i))
    }

    /// The clients after `after` (all of them for `None`), sorted by key: a report or a
    /// snapshot taken a page at a time, so that no single call holds the caller for long.
    pub fn clients_after(
        &self,
        after: Option<&ClientKey>,
    ) -> impl Iterator<Item = ClientView<'_>> + '_ {
        use std::ops::Bound::{Excluded, Unbounded};
        let from = after.map_or(Unbounded, |k| Excluded(k.clone()));
        self.index
            .range((from, Unbounded))
            .map(|(_, &i)| self.view(i))
    }

    /// The report of every client, sorted by key.
    pub fn report(&self) -> Report {
        Report {
            clients: self.clients().map(|c| c.summary()).collect(),
        }
    }

    /// Every client's record as kept across restarts (see [`State`] for what is kept), sorted
    /// by key: for a driver to save, and to [`restore`](Self::restore) into the next server.
    pub fn persist(&self) -> State {
        let clients = self
            .index
            .values()
            .map(|&i| self.clients[i].to_state(self.liveness.state(i)))
            .collect();
        State::new(clients, Vec::new())
    }

    /// True when a record changed (or a client was forgotten) since the last
    /// [`persist_changes`](Self::persist_changes).
    pub fn has_changes(&self) -> bool {
        !self.changes.list.is_empty() || !self.changes.forgotten.is_empty()
    }

    // ---- inputs ----

    /// A connection was accepted from `peer`. The core allocates its id.
    pub fn accept(&mut self, now: Now, peer: SocketAddr) -> ConnId {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        bump(&mut self.stats.connections_accepted);
        let deadline = now.mono + self.config.hello_timeout;
        self.conns.insert(
            conn,
            Conn {
                peer,
                decoder: StreamDecoder::new(),
                state: ConnState::Opening,
                last_rx: now.mono,
                queued: deadline,
                pace: Pace::new(now),
                advice: None,
            },
        );
        self.deadlines.push(deadline, conn);
        conn
    }

    /// Bytes arrived on `conn`. One call is one arrival: several heartbeats in it after a
    /// silence are a burst.
    pub fn handle_input(&mut self, now: Now, conn: ConnId, bytes: &[u8]) {
        let Some(c) = self.conns.get_mut(&conn) else {
            tracing::debug!(%conn, len = bytes.len(), "input for a closed connection; ignored");
            return;
        };
        c.last_rx = now.mono;
        c.decoder.push(bytes);
        let mut units = std::mem::take(&mut self.scratch_units);
        let result = loop {
            match c.decoder.decode_next() {
                Ok(Some(u)) => units.push(u),
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        self.process(now, conn, &mut units, result);
        self.scratch_units = units;
    }

    /// `conn` reached end of stream, or reading it failed.
    pub fn handle_eof(&mut self, now: Now, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let mut units = Vec::new();
        let result = c.decoder.finish().map(|u| units.extend(u));
        self.process(now, conn, &mut units, result);
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let reason = match &c.state {
            ConnState::Challenged(claim) => DisconnectReason::AuthFailed {
                client: claim.client.clone(),
                why: AuthFailure::Unanswered {
                    instead: "the end of the stream",
                },
            },
            ConnState::Live { idx, .. } if self.clients[*idx].left => DisconnectReason::Goodbye,
            _ => DisconnectReason::ClosedByPeer,
        };
        self.drop_conn(now, conn, reason);
    }

    /// Time passed: runs the clients' due liveness checks (which may emit transitions), then
    /// drops connections whose hello or idle deadline is over, then forgets clients gone for
    /// longer than the forget-after ([`Event::Forgotten`]). Woken later than the pause guard
    /// after the earliest timer, it only defers what is due and emits [`Event::Stalled`].
    pub fn handle_timeout(&mut self, now: Now) {
        if let Some(due) = self.poll_timeout() {
            let late = now.mono.saturating_duration_since(due);
            if late > self.config.pause_guard {
                self.defer_after_stall(now, late);
                return;
            }
        }
        let (clients, out, changes) = (&self.clients, &mut self.out, &mut self.changes);
        self.liveness.handle_timeout(now.mono, |c| {
            changes.mark(c.client);
            out.push_back(transition(clients, c));
        });
        while let Some((at, conn)) = self.deadlines.pop_due(now.mono) {
            self.connection_deadline(now, conn, at);
        }
        while let Some((_, idx)) = self.forget.pop_due(now.mono) {
            self.forget_if_gone(now, idx);
        }
    }

    /// [`handle_timeout`](Self::handle_timeout), for a driver that reads on several threads:
    /// `unread` is the longest that input has waited unread on a thread other than the caller's
    /// (that thread took no turn since it arrived). Past the pause guard that is a stall of the
    /// server as much as a late wake-up is: what is due now is judged on stale evidence, so it
    /// is deferred as after the server's own stall ([`Event::Stalled`]), never convicted.
    pub fn handle_timeout_with_unread(&mut self, now: Now, unread: Option<Duration>) {
        let due = self.poll_timeout().is_some_and(|due| due <= now.mono);
        match unread.filter(|late| due && *late > self.config.pause_guard) {
            Some(late) => self.defer_after_stall(now, late),
            None => self.handle_timeout(now),
        }
    }

    /// The driver could not write to `conn` for longer than its bound, or has too many writes
    /// queued for it: the peer is not reading its acknowledgements. The connection is dropped
    /// ([`DisconnectReason::NotReadingAcks`]).
    pub fn handle_write_blocked(&mut self, now: Now, conn: ConnId) {
        if self.conns.contains_key(&conn) {
            self.drop_conn(now, conn, DisconnectReason::NotReadingAcks);
        }
    }

    // ---- commands ----

    /// The records that changed since the last call (a heartbeat, a connection, a liveness
    /// change, a goodbye), sorted by key, and the clients forgotten meanwhile: a state of
    /// changes, for a driver that keeps a journal between full saves. [`State::merge`] applies
    /// it to the full state it followed. Each change is in exactly one such state.
    pub fn persist_changes(&mut self) -> State {
        let list = std::mem::take(&mut self.changes.list);
        for &i in &list {
            self.changes.flags[i] = false;
        }
        let mut clients: Vec<_> = list
            .iter()
            // A slot whose client was forgotten since (and not yet reused) holds no client.
            .filter(|&&i| self.index.get(&self.clients[i].stats.client) == Some(&i))
            .map(|&i| self.clients[i].to_state(self.liveness.state(i)))
            .collect();
        clients.sort_unstable_by(|a, b| a.client.cmp(&b.client));
        let forgotten = std::mem::take(&mut self.changes.forgotten)
            .iter()
            .map(persist::StateKey::from)
            .collect();
        State::new(clients, forgotten)
    }

    /// Takes in the clients of `state` (saved by an earlier server with
    /// [`persist`](Self::persist)) at `now`, all disconnected. This server must be fresh (no
    /// client yet). Every entry is checked first: on `Err` nothing is taken.
    ///
    /// What a restored client's counting and liveness become is in [`State`]'s module docs: in
    /// short, its counters and its session go on (a heartbeat at or below the saved highest
    /// sequence number is a duplicate, a gap above it is missed once), and a client that was
    /// `up` is declared down after its detector's grace from `now` unless it is heard from.
    /// Its forget-after counts from when it was last heard, not from `now`. Beyond the client
    /// limit, the clients heard from longest ago are left out.
    pub fn restore(&mut self, state: State, now: Now) -> Result<Restored, StateError> {
        if !self.clients.is_empty() {
            return Err(StateError::NotFresh);
        }
        let mut records = persist::records(state.into_clients(), self.config.max_missed_ranges)?;
        let total = records.len();
        if total > self.config.max_clients {
            // The most recently heard first; never-heard ones last.
            records.sort_by_key(|r| std::cmp::Reverse(r.0.stats.last_seen));
            records.truncate(self.config.max_clients);
        }
        let restored = records.len();
        for (mut record, state) in records {
            let idx = self.clients.len();
            self.index.insert(record.stats.client.clone(), idx);
            let interval = record.interval;
            // Gone since it was last heard (the restore's instant when that is unknown or not
            // representable): the forget-after counts from then, across restarts.
            let gone_for = record.stats.last_seen.map_or(Duration::ZERO, |seen| {
                now.unix.as_duration().saturating_sub(seen.as_duration())
            });
            let since = now.mono.checked_sub(gone_for).unwrap_or(now.mono);
            record.gone_since = Some(since);
            if let Some(at) = since.checked_add(self.config.forget_after) {
                self.forget.push(at.max(now.mono), idx);
            }
            self.clients.push(Box::new(record));
            self.liveness.restore(now.mono, idx, state, interval);
            self.configure_detector(now, idx);
        }
        Ok(Restored {
            clients: restored,
            dropped: total - restored,
        })
    }

    /// The driver's TLS handshake with `conn` failed (`why`, the TLS library's reason): the
    /// connection ends as [`DisconnectReason::TlsFailed`], never having identified.
    pub fn handle_tls_failed(&mut self, now: Now, conn: ConnId, why: String) {
        if self.conns.contains_key(&conn) {
            self.drop_conn(now, conn, DisconnectReason::TlsFailed(why));
        }
    }

    /// Closes `conn` locally.
    pub fn close(&mut self, now: Now, conn: ConnId) {
        if self.conns.contains_key(&conn) {
            self.drop_conn(now, conn, DisconnectReason::Local);
        }
    }

    /// Closes every connection (server shutdown). The analysis stays readable.
    pub fn close_all(&mut self, now: Now) {
        let mut conns: Vec<ConnId> = self.conns.keys().copied().collect();
        conns.sort_unstable();
        for conn in conns {
            self.close(now, conn);
        }
    }

    /// Sets the clients that should be there (the server's `--expect` list), replacing the
    /// previous list; returns what changed.
    ///
    /// - An added client not heard from yet is watched from `now`: [`Liveness::Unknown`], and
    ///   `Down` ("never seen": a transition from `Unknown`) when its grace is over unless it is
    ///   heard from before. The grace is [`Expected::grace`], or by default what the liveness
    ///   rule needs to declare down a client of [`Expected::interval`] heard from once (see
    ///   [`Watches::time_to_down`](crate::liveness::Watches::time_to_down)). An added client
    ///   heard from before (a heartbeat, or a `HELLO`) is only marked expected: its detector
    ///   watches it already. So is
    ///   one already `Down` or `Left` (restored after a restart, or announced never seen):
    ///   a restart announces nothing that was announced before it.
    /// - An added client that left (a goodbye) is expected back within the left grace
    ///   ([`ServerConfig::left_grace`]) of when it went: `Down` from `Left` if it is not.
    /// - A client on both lists keeps its grace (a reload does not restart it).
    /// - A removed client never heard from and not connected is forgotten (gone from reports);
    ///   any other removed client stays, as an ordinary client (and `Up` if it was `Unknown`).
    ///
    /// Expected clients are never evicted for room (`max_clients`).
    pub fn set_expected(&mut self, now: Now, list: &[Expected]) -> ExpectChanges {
        let mut changes = ExpectChanges::default();
        let wanted: BTreeMap<&ClientId, &Expected> = list.iter().map(|e| (&e.client, e)).collect();
        let was: Vec<(ClientId, usize)> = self
            .index
            .iter()
            .filter(|&(_, &i)| self.clients[i].expected)
            .filter_map(|(k, &i)| match k {
                ClientKey::Id(id) => Some((id.clone(), i)),
                ClientKey::Peer(_) => None,
            })
            .collect();
        for (id, idx) in was {
            if wanted.contains_key(&id) {
                continue;
            }
            let r = &mut self.clients[idx];
            r.expected = false;
            self.liveness.unexpect(idx);
            // Heard from: a heartbeat or a HELLO, by this server or the one whose state it
            // restored (a restored record has no arrival instant, but its counters).
            let heard = r.stats.first_seen.is_some() || r.stats.connections > 0;
            if !heard && r.conn.is_none() {
                self.index.remove(&r.stats.client);
                self.changes.forgotten.push(r.stats.client.clone());
                self.liveness.start(idx);
                self.free.push(idx);
                changes.forgotten.push(id.clone());
            } else if let Some(at) = r
                .gone_since
                .filter(|_| r.conn.is_none())
                .and_then(|since| since.checked_add(self.config.forget_after))
            {
                // Gone, and an ordinary client now: forgotten at the forget-after as any other
                // (at once if that has passed).
                self.forget.push(at.max(now.mono), idx);
            }
            changes.removed.push(id);
        }
        for (id, e) in wanted {
            let key = ClientKey::Id(id.clone());
            let idx = match self.index.get(&key) {
                Some(&idx) if self.clients[idx].expected => continue,
                Some(&idx) => idx,
                None => {
                    let max_ranges = self.config.max_missed_ranges;
                    let idx =
                        self.new_slot(ClientRecord::new(key.clone(), Protocol::V1, max_ranges));
                    self.index.insert(key, idx);
                    self.liveness.start(idx);
                    idx
                }
            };
            let r = &mut self.clients[idx];
            r.expected = true;
            changes.added.push(id.clone());
            // Only a client this server, or the one whose state it restored, never heard
            // from and never announced gets the never-seen watch. A restored one that was
            // heard from is watched by its detector (primed at the restore) or stays `Down`
            // or `Left` as announced; a never-heard one announced `Down` before the restart
            // stays so: one announcement per outage, not one per server start. A `HELLO` is
            // hearing from it: one that connected is watched by its detector (primed then).
            let announced = matches!(self.liveness.state(idx), Liveness::Down | Liveness::Left);
            let heard = r.stats.first_seen.is_some() || r.stats.connections > 0;
            if self.liveness.state(idx) == Liveness::Left {
                // Gone with a goodbye (before a restart, or before the reload that lists it):
                // expected back within the left grace of when it went, then `Down` once.
                // A grace past what an `Instant` can hold never ends: not armed, as the
                // forget-after is not.
                let since = r.gone_since.unwrap_or(now.mono);
                if let Some(by) = since.checked_add(self.config.left_grace) {
                    self.liveness.expect_back(idx, by);
                }
            } else if !heard && !announced {
                let grace = e
                    .grace
                    .or_else(|| self.liveness.time_to_down(now.mono, e.interval))
                    .unwrap_or(e.interval.saturating_mul(NEVER_SEEN_FALLBACK_INTERVALS));
                self.liveness.expect(idx, now.mono + grace);
            }
        }
        changes
    }

    /// Replaces the keys clients authenticate with (a reloaded `--auth-keys` file): the next
    /// challenge answered is checked against them; connections already identified stay. False
    /// (nothing changed) when authentication is off.
    pub fn set_auth_keys(&mut self, keys: AuthKeys) -> bool {
        if self.config.auth.is_none() {
            return false;
        }
        if let Some(auth) = Arc::make_mut(&mut self.config).auth.as_mut() {
            auth.keys = keys;
        }
        true
    }

    /// Replaces the detector settings per client id (a reloaded `--client-settings` file): a
    /// client whose id matches a rule is watched by that rule's detector, the first match
    /// winning; any other by the configured one ([`ServerConfig::detector`]). Legacy clients,
    /// known by their address, match no rule.
    ///
    /// Each client's rule is looked up when it identifies (`HELLO`), and here for every client
    /// remembered: one whose rule changed gets a detector of the new rule at once, primed by
    /// its last heartbeat, so its silence is judged by the new rule from its last sign of life
    /// ([`Watches::configure`](crate::liveness::Watches::configure)); nothing is announced
    /// until a check runs. An expected client never heard from keeps the grace it was given.
    /// Returns the clients whose detector changed, in key order. Read
    /// [`poll_timeout`](Self::poll_timeout) again afterwards.
    pub fn set_client_detectors(&mut self, now: Now, rules: ClientDetectors) -> Vec<ClientKey> {
        self.client_detectors = rules;
        let clients: Vec<(ClientKey, usize)> =
            self.index.iter().map(|(k, &i)| (k.clone(), i)).collect();
        clients
            .into_iter()
            .filter(|&(_, idx)| self.configure_detector(now, idx))
            .map(|(key, _)| key)
            .collect()
    }

    /// The detector settings per client id in force.
    pub fn client_detectors(&self) -> &ClientDetectors {
        &self.client_detectors
    }

    /// Looks up client `idx`'s rule and hands it to its liveness machine: whether its
    /// detector's configuration changed.
    fn configure_detector(&mut self, now: Now, idx: usize) -> bool {
        let config = match &self.clients[idx].stats.client {
            ClientKey::Id(id) => self.client_detectors.config_for(id.as_str()).cloned(),
            ClientKey::Peer(_) => None,
        };
        self.liveness.configure(now.mono, idx, config)
    }

    /// Forgets `client` now, at the application's request (an operator decommissioning a
    /// machine), and returns how long it had been gone. As at the forget-after, its record,
    /// liveness and line in reports go ([`Event::Forgotten`], with `requested`), it counts in
    /// [`ServerStats::clients_forgotten`], and the next [`persist_changes`](Self::persist_changes)
    /// says so; if it comes back it is a new client.
    ///
    /// Refused, changing nothing, for a client this server does not know, one that is
    /// connected (it would be back at once, as a new client), and one that is expected (it
    /// would be watched again from its next listing: take it off the list first).
    pub fn forget(&mut self, now: Now, client: &ClientKey) -> Result<Duration, ForgetError> {
        let Some(&idx) = self.index.get(client) else {
            return Err(ForgetError::Unknown(client.clone()));
        };
        let r = &self.clients[idx];
        if r.expected {
            return Err(ForgetError::Expected(client.clone()));
        }
        if r.conn.is_some() {
            return Err(ForgetError::Connected(client.clone()));
        }
        let gone_for = r.gone_since.map_or(Duration::ZERO, |since| {
            now.mono.saturating_duration_since(since)
        });
        self.drop_client(idx, gone_for, true);
        Ok(gone_for)
    }

    // ---- outputs ----

    /// The next thing the driver must do. Drain to `None` after every input or command.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next: the earliest connection
    /// deadline, client liveness check or time to forget a gone client; `None` when there is
    /// none (no connections, no client left to convict or forget).
    ///
    /// Changes after `accept`, `handle_*` and `close`. It may be earlier than any real deadline
    /// (deadlines and checks are re-armed lazily); an early `handle_timeout` is harmless.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.deadlines.next(),
            self.liveness.next_check(),
            self.forget.next(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ---- internals ----

    /// The server was woken `late`: whatever is due now is judged on stale evidence (heartbeats
    /// may be waiting unread in socket buffers), so nothing is convicted or dropped; every due
    /// timer moves to a second from now, after the driver has read what arrived meanwhile.
    fn defer_after_stall(&mut self, now: Now, late: Duration) {
        let again = now.mono + STALL_RECHECK;
        self.liveness.defer_due(now.mono, again);
        while let Some((at, conn)) = self.deadlines.pop_due(now.mono) {
            if let Some(c) = self.conns.get_mut(&conn).filter(|c| c.queued == at) {
                c.queued = again;
                c.last_rx = c.last_rx.max(now.mono);
                self.deadlines.push(again, conn);
            }
        }
        while let Some((_, idx)) = self.forget.pop_due(now.mono) {
            self.forget.push(again, idx);
        }
        self.out.push_back(Output::Event(Event::Stalled { late }));
    }

    /// At the client limit, forgets the disconnected client heard from longest ago and returns
    /// its slot for reuse. `None` below the limit, or when every client is connected (then the
    /// limit is exceeded rather than a live client forgotten; connections are bounded by the
    /// driver). O(clients), and only once the limit is reached.
    fn evict_for_new_client(&mut self) -> Option<usize> {
        if self.index.len() < self.config.max_clients {
            return None;
        }
        let (key, idx) = self
            .index
            .iter()
            .filter(|&(_, &i)| self.clients[i].conn.is_none() && !self.clients[i].expected)
            .min_by_key(|&(_, &i)| self.clients[i].last_arrival)
            .map(|(k, &i)| (k.clone(), i))?;
        self.index.remove(&key);
        self.changes.forgotten.push(key.clone());
        bump(&mut self.stats.clients_evicted);
        self.out
            .push_back(Output::Event(Event::Evicted { client: key }));
        Some(idx)
    }

    /// A slot for a new client's `record`: a forgotten client's, an evicted one's at the client
    /// limit, or a new one.
    fn new_slot(&mut self, record: ClientRecord) -> usize {
        let idx = self.free.pop().or_else(|| self.evict_for_new_client());
        match idx {
            Some(idx) => {
                *self.clients[idx] = record;
                idx
            }
            None => {
                self.clients.push(Box::new(record));
                self.clients.len() - 1
            }
        }
    }

    /// A forget deadline of client slot `idx` is due: forgets its client if it is still
    /// disconnected and has been for the forget-after. Its slot is reused for a later new
    /// client; its liveness watch stops.
    fn forget_if_gone(&mut self, now: Now, idx: usize) {
        let r = &self.clients[idx];
        let Some(since) = r.gone_since.filter(|_| r.conn.is_none() && !r.expected) else {
            // Back, the slot holds a newer client, or an expected client: never forgotten
            // while on the list (taking it off re-arms this, see `set_expected`).
            return;
        };
        let gone_for = now.mono.saturating_duration_since(since);
        if gone_for < self.config.forget_after || self.index.get(&r.stats.client) != Some(&idx) {
            return; // re-armed by a later disconnect, or already forgotten or evicted
        }
        self.drop_client(idx, gone_for, false);
    }

    /// Forgets the client in slot `idx`, gone for `gone_for` (at the forget-after, or
    /// `requested` by the application): out of the index and the state, its slot free for
    /// reuse, its liveness watch stopped, counted and told ([`Event::Forgotten`]).
    fn drop_client(&mut self, idx: usize, gone_for: Duration, requested: bool) {
        let client = self.clients[idx].stats.client.clone();
        self.index.remove(&client);
        self.changes.forgotten.push(client.clone());
        self.free.push(idx);
        self.liveness.start(idx);
        bump(&mut self.stats.clients_forgotten);
        self.out.push_back(Output::Event(Event::Forgotten {
            client,
            gone_for,
            requested,
        }));
    }

    /// Connection `conn`'s deadline `at` is due: the hello timeout of an opening connection,
    /// or the idle timeout of a live one, which traffic may have moved later (then it re-arms).
    fn connection_deadline(&mut self, now: Now, conn: ConnId, at: Instant) {
        let Some(c) = self.conns.get_mut(&conn).filter(|c| c.queued == at) else {
            return; // closed, or a stale entry: the connection was re-armed
        };
        let reason = match &c.state {
            ConnState::Opening => {
                let timeout = self.config.hello_timeout;
                let partial = c.decoder.buffered() > 0;
                // A v1 client, or a silent one that may be: tell it why. A legacy client never
                // reads.
                if !partial || c.decoder.protocol() == Some(Protocol::V1) {
                    let bytes = Frame::Error {
                        message: "timed out waiting for HELLO".into(),
                    }
                    .to_bytes();
                    self.out.push_back(Output::Transmit { conn, bytes });
                }
                if partial {
                    DisconnectReason::IncompleteHello(timeout)
                } else {
                    DisconnectReason::HelloTimeout(timeout)
                }
            }
            ConnState::Challenged(claim) => {
                let reason = DisconnectReason::AuthTimeout {
                    client: claim.client.clone(),
                    after: self.config.hello_timeout,
                };
                let bytes = Frame::Error {
                    message: "timed out waiting for AUTH".into(),
                }
                .to_bytes();
                self.out.push_back(Output::Transmit { conn, bytes });
                reason
            }
            ConnState::Live { idx, .. } => {
                let idle = self.config.idle_timeout_for(self.clients[*idx].interval);
                let deadline = c.last_rx + idle;
                if deadline > now.mono {
                    c.queued = deadline;
                    self.deadlines.push(deadline, conn);
                    return;
                }
                DisconnectReason::IdleTimeout(idle)
            }
        };
        self.drop_conn(now, conn, reason);
    }

    fn view(&self, idx: usize) -> ClientView<'_> {
        ClientView::new(
            &self.clients[idx],
            self.liveness.state(idx),
            self.liveness.detector(idx),
        )
    }

    fn client_of(&self, conn: ConnId) -> Option<usize> {
        match &self.conns.get(&conn)?.state {
            ConnState::Live { idx, .. } => Some(*idx),
            ConnState::Challenged(_) | ConnState::Opening => None,
        }
    }

    fn process(
        &mut self,
        now: Now,
        conn: ConnId,
        units: &mut Vec<Inbound>,
        result: Result<(), DecodeError>,
    ) {
        let mut beats = std::mem::take(&mut self.scratch_beats);
        let mut acks: Vec<u8> = Vec::new();
        // Units decoded before a decode error are handled; after a bad or refused unit, none
        // are.
        let mut failure = None;
        for unit in units.drain(..) {
            if failure.is_none() {
                failure = self.unit(now, conn, unit, &mut beats, &mut acks).err();
            }
        }
        let failure = failure.or(result.err().map(Refusal::from));
        self.flush_beats(now, conn, &mut beats);
        self.scratch_beats = beats;
        if failure.is_none() {
            // After the replies, so that advice never precedes the `WELCOME` that allows it.
            self.advise_if_changed(conn, now, &mut acks);
        }
        if !acks.is_empty() {
            self.out.push_back(Output::Transmit { conn, bytes: acks });
        }
        if let Some(Refusal { reply, reason }) = failure {
            // A v1 client is told why; so is a TLS client (its handshake fails on the line,
            // and it says to drop --tls). A legacy client never reads.
            let told = matches!(
                reason,
                DisconnectReason::Protocol(DecodeError::TlsHandshake)
            ) || self
                .conns
                .get(&conn)
                .is_some_and(|c| c.decoder.protocol() == Some(Protocol::V1));
            if let Some(message) = reply.filter(|_| told) {
                let bytes = Frame::Error { message }.to_bytes();
                self.out.push_back(Output::Transmit { conn, bytes });
            }
            self.drop_conn(now, conn, reason);
        }
    }

    /// Handles one decoded unit. Heartbeats are gathered in `beats` and analysed together, as
    /// one arrival, by `flush_beats`; replies (acks, and the handshake's) are gathered in `acks`
    /// and written in one go. A refusal leaves the connection for the caller to drop.
    fn unit(
        &mut self,
        now: Now,
        conn: ConnId,
        unit: Inbound,
        beats: &mut Vec<(Seq, crate::UnixTime)>,
        acks: &mut Vec<u8>,
    ) -> Result<(), Refusal> {
        let c = self
            .conns
            .get_mut(&conn)
            .expect("caller checked the connection");
        match (unit, &c.state) {
            (Inbound::Legacy(_), ConnState::Opening)
                if self.config.auth.as_ref().is_some_and(|a| !a.allow_legacy) =>
            {
                return Err(Refusal::legacy());
            }
            (Inbound::Legacy(beat), ConnState::Opening) => {
                limits::check_stamp(now.unix, beat.sent)?;
                let key = ClientKey::Peer(c.peer);
                self.identify(now, conn, key, Protocol::Legacy, None, None);
                self.admit_beat(now, conn, beat.seq, beat.sent)?;
                beats.push((beat.seq, beat.sent));
            }
            (Inbound::Legacy(beat), ConnState::Live { .. }) => {
                self.admit_beat(now, conn, beat.seq, beat.sent)?;
                beats.push((beat.seq, beat.sent));
            }
            // The decoder keeps the protocol it detected: a challenged (v1) connection never
            // yields a legacy heartbeat.
            (Inbound::Legacy(_), ConnState::Challenged(_)) => {
                return Err(DecodeError::Unexpected {
                    got: "legacy heartbeat",
                    when: "on a v1 connection",
                }
                .into());
            }
            (
                Inbound::Frame(Frame::Hello {
                    client,
                    interval,
                    session,
                    advice,
                    ..
                }),
                ConnState::Opening,
            ) => {
                let min = self.config.min_interval;
                if interval < min {
                    return Err(Violation::IntervalBelowMinimum { got: interval, min }.into());
                }
                return self.on_hello(now, conn, client, interval, session, advice, acks);
            }
            (Inbound::Frame(Frame::Auth { answer }), ConnState::Challenged(_)) => {
                let ConnState::Challenged(claim) =
                    std::mem::replace(&mut c.state, ConnState::Opening)
                else {
                    unreachable!("matched as challenged");
                };
                return self.on_auth(now, conn, *claim, answer, acks);
            }
            (Inbound::Frame(f), ConnState::Challenged(claim)) => {
                let instead = f.command();
                return Err(Refusal::auth_failed(
                    claim.client.clone(),
                    AuthFailure::Unanswered { instead },
                ));
            }
            (Inbound::Frame(Frame::Beat { seq, sent }), ConnState::Live { .. }) => {
                self.admit_beat(now, conn, seq, sent)?;
                beats.push((seq, sent));
                Frame::Ack {
                    seq,
                    received: now.unix,
                }
                .encode(acks);
            }
            (Inbound::Frame(Frame::Interval { interval, seq }), ConnState::Live { idx, .. }) => {
                let idx = *idx;
                return self.on_interval(now, conn, idx, interval, seq, beats);
            }
            (Inbound::Frame(Frame::Bye), ConnState::Live { idx, .. }) => {
                let idx = *idx;
                self.flush_beats(now, conn, beats);
                self.clients[idx].left = true;
                self.changes.mark(idx);
                if let Some(change) = self.liveness.leave(now.mono, idx) {
                    self.out.push_back(transition(&self.clients, change));
                }
                let back_by = now.mono.checked_add(self.config.left_grace);
                if let Some(by) = back_by.filter(|_| self.clients[idx].expected) {
                    self.liveness.expect_back(idx, by);
                }
            }
            // The decoder speaks v1 only after a leading `HELLO`, so an opening connection's
            // first frame is always `HELLO`: any other frame comes after it.
            (Inbound::Frame(f), _) => {
                return Err(DecodeError::Unexpected {
                    got: f.command(),
                    when: "after HELLO",
                }
                .into());
            }
        }
        Ok(())
    }

    /// The limits one heartbeat must pass before it counts (see [`limits`]): a stamp that is a
    /// time, no faster than the connection's interval (declared, or the minimum for a legacy
    /// connection), and a sequence number no further ahead than time allows.
    fn admit_beat(
        &mut self,
        now: Now,
        conn: ConnId,
        seq: Seq,
        sent: UnixTime,
    ) -> Result<(), Violation> {
        limits::check_stamp(now.unix, sent)?;
        let c = self
            .conns
            .get_mut(&conn)
            .expect("caller checked the connection");
        let ConnState::Live { idx, protocol, .. } = &c.state else {
            debug_assert!(false, "a heartbeat is admitted on an identified connection");
            return Ok(());
        };
        let record = &mut self.clients[*idx];
        let interval = match protocol {
            Protocol::V1 => record.interval.unwrap_or(self.config.min_interval),
            Protocol::Legacy => self.config.min_interval,
        };
        c.pace.beat(now, interval)?;
        record.schedule.check(now, seq, interval)
    }

    fn identify(
        &mut self,
        now: Now,
        conn: ConnId,
        key: ClientKey,
        protocol: Protocol,
        interval: Option<Duration>,
        session: Option<u64>,
    ) {
        let max_ranges = self.config.max_missed_ranges;
        let peer = self.conns[&conn].peer;
        // Known from an earlier connection (an expected client never connected is not).
        let resumed = self
            .index
            .get(&key)
            .is_some_and(|&i| self.clients[i].stats.connections > 0);
        let idx = match self.index.get(&key) {
            Some(&idx) => idx,
            None => {
                let idx = self.new_slot(ClientRecord::new(key.clone(), protocol, max_ranges));
                self.index.insert(key.clone(), idx);
                self.liveness.start(idx);
                idx
            }
        };
        self.changes.mark(idx);
        let record = &mut self.clients[idx];
        let previous_conn = record.conn.replace(conn);
        record.stats.connections = record.stats.connections.saturating_add(1);
        record.stats.protocol = protocol;
        record.stats.connected = true;
        record.peer = Some(peer);
        record.gone_since = None;
        record.left = false;
        if interval.is_some() {
            record.interval = interval;
        }
        let restarted = session.is_some_and(|s| record.session.is_some_and(|old| old != s));
        if session.is_some() {
            record.session = session;
        }
        let c = self
            .conns
            .get_mut(&conn)
            .expect("caller checked the connection");
        c.state = ConnState::Live {
            key: key.clone(),
            idx,
            protocol,
        };
        c.last_rx = now.mono;
        let connected = Event::Connected {
            conn,
            client: key.clone(),
            peer,
            protocol,
            interval,
            resumed,
        };
        self.out.push_back(Output::Event(connected));
        if restarted {
            // A new session nonce: the client process restarted.
            self.clients[idx].restart(conn, &mut self.out);
            self.liveness.reset(idx);
        }
        self.configure_detector(now, idx);
        if let (Protocol::V1, Some(interval)) = (protocol, interval) {
            // The HELLO is the first sign of life: a client that sends nothing after it goes
            // suspect and down like any other silence.
            self.liveness.hello(now.mono, idx, interval);
        }
        if let Some(old) = previous_conn.filter(|old| self.conns.contains_key(old)) {
            // A client that reconnects while its old stream still looks open (half-open after a
            // partition): the new one wins.
            self.drop_conn(now, old, DisconnectReason::Superseded(conn));
        }
    }

    fn flush_beats(&mut self, now: Now, conn: ConnId, beats: &mut Vec<(Seq, crate::UnixTime)>) {
        if beats.is_empty() {
            return;
        }
        let Some(idx) = self.client_of(conn) else {
            return;
        };
        let gap = self.config.burst_gap_intervals;
        let skew = self.config.max_clock_skew;
        self.changes.mark(idx);
        let r = &mut self.clients[idx];
        if self.config.target.is_some() {
            r.qos.get_or_insert_with(Box::default);
        }
        let delays = &mut self.stats.delay;
        if r.on_arrival(conn, now, beats, gap, skew, delays, &mut self.out) {
            self.liveness.reset(idx);
        }
        let seqs = beats.iter().map(|&(seq, _)| seq);
        if let Some(change) = self.liveness.observe(now.mono, idx, r.interval, seqs) {
            self.out.push_back(transition(&self.clients, change));
        }
        // After `observe`, which may have built the client's detector afresh.
        if let Some(event) = self.apply_target(idx) {
            self.out.push_back(Output::Event(event));
        }
        beats.clear();
    }

    /// Under a QoS target: configures client `idx` again if due, and gives its detector the
    /// margin in use (every arrival: a detector built afresh starts from its default). Returns the event to report when the
    /// target's reachability changed (or was decided for the first time).
    fn apply_target(&mut self, idx: usize) -> Option<Event> {
        let target = self.config.target?;
        let r = &mut self.clients[idx];
        let interval = r.interval?;
        let qos = r.qos.as_mut()?;
        let changed = qos.reconfigure(&target, interval);
        let configured = qos.configured()?;
        let (loss, delay_variance) = (qos.loss(), qos.delay_variance());
        self.liveness.set_margin(idx, configured.alpha);
        let (c, true) = changed? else {
            return None;
        };
        Some(Event::Target {
            client: r.stats.client.clone(),
            detection: target.detection(),
            mistake_every: target.mistake_every(),
            reachable: c.reachable,
            interval,
            advised_interval: c.advised_interval,
            alpha: c.alpha,
            loss,
            delay_variance,
        })
    }

    fn drop_conn(&mut self, now: Now, conn: ConnId, reason: DisconnectReason) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        self.deadlines.remove(c.queued, &conn);
        self.stats.disconnected(&reason);
        let client = match c.state {
            ConnState::Live { key, idx, .. } => {
                let r = &mut self.clients[idx];
                if r.conn == Some(conn) {
                    r.conn = None;
                    r.stats.connected = false;
                    r.gone_since = Some(now.mono);
                    let at = now.mono.checked_add(self.config.forget_after);
                    if let Some(at) = at {
                        self.forget.push(at, idx);
                    }
                }
                Some(key)
            }
            ConnState::Challenged(_) | ConnState::Opening => None,
        };
        self.out.push_back(Output::Event(Event::Disconnected {
            conn,
            client,
            peer: c.peer,
            reason: reason.clone(),
        }));
        self.out.push_back(Output::Disconnect { conn, reason });
    }
}

/// The clients whose records changed since a driver last took them
/// ([`Server::persist_changes`]), each once, and the clients forgotten meanwhile.
#[derive(Debug, Default)]
struct Changes {
    /// By client index: already in `list`.
    flags: Vec<bool>,
    list: Vec<usize>,
    forgotten: Vec<ClientKey>,
}

impl Changes {
    fn mark(&mut self, idx: usize) {
        if idx >= self.flags.len() {
            self.flags.resize(idx + 1, false);
        }
        if !self.flags[idx] {
            self.flags[idx] = true;
            self.list.push(idx);
        }
    }
}

/// The event for a liveness change of client `change.client`.
fn transition(clients: &[Box<ClientRecord>], change: Change) -> Output {
    let record = &clients[change.client];
    Output::Event(Event::Transition {
        client: record.stats.client.clone(),
        peer: record.peer,
        from: change.from,
        to: change.to,
        since_last: change.since_last,
        suspicion: change.suspicion,
        detector: change.detector,
    })
}

/// Why [`Server::forget`] refused to forget a client.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForgetError {
    /// No such client is known (never seen, or forgotten already).
    #[error("no client {0} is known to this server")]
    Unknown(ClientKey),
    /// The client is connected: forgotten, it would be back at once as a new client.
    #[error("{0} is connected: stop it first, then forget it")]
    Connected(ClientKey),
    /// The client is expected (`--expect`): forgotten, it would be watched again.
    #[error("{0} is expected: take it off the expected list first")]
    Expected(ClientKey),
}

/// When a detector would never declare a client down, an expected client's default grace is
/// this many of its intervals.
const NEVER_SEEN_FALLBACK_INTERVALS: u32 = 10;

/// A client that should be there (one line of the server's `--expect` file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    /// Its id.
    pub client: ClientId,
    /// The interval it promises.
    pub interval: Duration,
    /// How long after it is expected it is declared down if never heard from; `None`: what the
    /// liveness rule needs for a client of `interval` (see [`Server::set_expected`]).
    pub grace: Option<Duration>,
}

/// What [`Server::set_expected`] changed, each list sorted by id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExpectChanges {
    /// Clients expected now and not before.
    pub added: Vec<ClientId>,
    /// Clients expected before and not now.
    pub removed: Vec<ClientId>,
    /// Of the removed, those forgotten: never heard from and not connected.
    pub forgotten: Vec<ClientId>,
}

#[cfg(test)]
mod tests;
