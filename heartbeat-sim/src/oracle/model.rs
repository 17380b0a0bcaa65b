//! The oracles' model of a run: the ground truth (what each client wrote, per session, from the
//! stream tap), and the server's view of it (every heartbeat it counted, indexed by client,
//! epoch and connection), which the oracles in [`super`] hold against each other.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use heartbeat_core::client;
use heartbeat_core::frame::Frame;
use heartbeat_core::server::Event;
use heartbeat_core::{ClientKey, ConnId, DisconnectReason, Seq, UnixTime};

use crate::harness::log::Record;
use crate::harness::world::Outcome;
use crate::scenario::Action;

/// One heartbeat a client wrote.
#[derive(Clone, Copy, Debug)]
pub struct Written {
    /// Its send stamp.
    pub stamp: UnixTime,
    /// When it was written.
    pub at: Duration,
}

/// One session of a client, as written.
#[derive(Clone, Debug, Default)]
pub struct Session {
    /// Its `HELLO` nonce.
    pub nonce: u64,
    /// The heartbeats written, by sequence number.
    pub beats: BTreeMap<u64, Written>,
}

impl Session {
    /// The last sequence number written (0 when none).
    pub fn last(&self) -> u64 {
        self.beats.keys().next_back().copied().unwrap_or(0)
    }
}

/// What each client wrote: the ground truth.
#[derive(Clone, Debug, Default)]
pub struct Truth {
    /// Per client, its sessions in order, as written to the stream (the tap).
    pub sessions: Vec<Vec<Session>>,
    /// Per client, slots its core reported skipped (`Skipped` events), over all its runs.
    pub skipped: Vec<u64>,
    /// Failures of the `truth` check.
    pub(super) failures: Vec<String>,
}

/// One run of a client process as its own events tell it.
#[derive(Clone, Debug, Default)]
pub(super) struct Run {
    pub(super) sent: BTreeMap<u64, UnixTime>,
    pub(super) skipped: BTreeSet<u64>,
    /// Connections lost because the peer closed or a read or write failed: a heartbeat the core
    /// sent may not have reached the stream.
    pub(super) lost: u64,
}

impl Truth {
    /// Reads the tapped frames of `out`, checking invariant 1, `truth`: within a session, a
    /// client writes strictly increasing sequence numbers, and its core's own account agrees with
    /// the stream (see `cross_check`).
    pub fn new(out: &Outcome) -> Self {
        let n = out.scenario.clients.len();
        let ids: Vec<&str> = out.scenario.clients.iter().map(|c| c.id.as_str()).collect();
        let mut t = Self {
            sessions: vec![Vec::new(); n],
            skipped: vec![0; n],
            failures: Vec::new(),
        };
        let mut runs: BTreeMap<(usize, u32), Run> = BTreeMap::new();
        for e in &out.log {
            if let Record::Client {
                client,
                incarnation,
                event,
            } = &e.record
            {
                let run = runs.entry((*client, *incarnation)).or_default();
                match event {
                    client::Event::Sent { seq, at, .. } => {
                        // A legacy heartbeat carries its stamp to 4 decimals (truncated).
                        let at = if out.scenario.clients[*client].legacy {
                            UnixTime::from_nanos(at.as_nanos() - at.as_nanos() % 100_000)
                        } else {
                            *at
                        };
                        run.sent.insert(seq.0, at);
                    }
                    client::Event::Skipped { first, last } => {
                        run.skipped.extend(first.0..=last.0);
                        t.skipped[*client] += last.0 - first.0 + 1;
                    }
                    client::Event::Disconnected {
                        reason: DisconnectReason::ClosedByPeer,
                        ..
                    } => run.lost += 1,
                    _ => {}
                }
                continue;
            }
            let Record::Wrote {
                client,
                incarnation,
                frame,
            } = &e.record
            else {
                continue;
            };
            let sessions = &mut t.sessions[*client];
            // A legacy client has no HELLO: each run of its process is a session, its nonce
            // the run's number.
            let legacy = out.scenario.clients[*client].legacy;
            let nonce = u64::from(*incarnation);
            if legacy && sessions.last().is_none_or(|s| s.nonce != nonce) {
                sessions.push(Session {
                    nonce,
                    beats: BTreeMap::new(),
                });
            }
            match frame {
                Frame::Hello { session, .. }
                    if sessions.last().is_none_or(|s| s.nonce != *session) =>
                {
                    sessions.push(Session {
                        nonce: *session,
                        beats: BTreeMap::new(),
                    });
                }
                Frame::Beat { seq, sent } => {
                    let Some(s) = sessions.last_mut() else {
                        t.failures
                            .push(format!("{} wrote BEAT {seq} before HELLO", ids[*client]));
                        continue;
                    };
                    if seq.0 <= s.last() {
                        t.failures.push(format!(
                            "{} wrote BEAT {seq} after BEAT {}",
                            ids[*client],
                            s.last()
                        ));
                    }
                    s.beats.insert(
                        seq.0,
                        Written {
                            stamp: *sent,
                            at: e.at,
                        },
                    );
                }
                _ => {}
            }
        }
        t.cross_check(&runs, &ids);
        t
    }

    /// The rest of invariant 1, the client's own account (its `Sent` and `Skipped` events)
    /// against the wire: every slot up to the last is sent or skipped, once; every heartbeat on
    /// the wire was sent by the core; a sent heartbeat is missing from the wire only after a lost
    /// connection.
    pub(super) fn cross_check(&mut self, runs: &BTreeMap<(usize, u32), Run>, ids: &[&str]) {
        for (&(i, inc), run) in runs {
            let c = ids[i];
            let last = run.sent.keys().next_back().copied().unwrap_or(0);
            let both = run.sent.keys().filter(|s| run.skipped.contains(s)).count();
            let covered = run.sent.len() + run.skipped.iter().filter(|&&s| s <= last).count();
            if both > 0 || covered as u64 != last {
                self.failures.push(format!(
                    "{c} run {inc}: {} sent + {} skipped do not cover slots 1..={last} once",
                    run.sent.len(),
                    run.skipped.len()
                ));
            }
            let on_wire = |seq: u64, stamp: UnixTime| {
                self.sessions[i]
                    .iter()
                    .any(|s| s.beats.get(&seq).is_some_and(|w| w.stamp == stamp))
            };
            let unwritten = run
                .sent
                .iter()
                .filter(|&(&seq, &stamp)| !on_wire(seq, stamp))
                .count() as u64;
            if unwritten > run.lost {
                self.failures.push(format!(
                    "{c} run {inc}: {unwritten} heartbeats sent by the core never reached the \
                     stream ({} connections lost)",
                    run.lost
                ));
            }
        }
        for (i, sessions) in self.sessions.iter().enumerate() {
            for (seq, w) in sessions.iter().flat_map(|s| s.beats.iter()) {
                let sent = runs
                    .range((i, 0)..=(i, u32::MAX))
                    .any(|(_, r)| r.sent.get(seq) == Some(&w.stamp));
                if !sent {
                    self.failures.push(format!(
                        "{}: BEAT {seq} on the wire was never sent by the core",
                        ids[i]
                    ));
                }
            }
        }
    }

    /// Heartbeats client `i` wrote, over all its sessions.
    pub fn sent(&self, i: usize) -> u64 {
        self.sessions[i].iter().map(|s| s.beats.len() as u64).sum()
    }

    /// The session of client `i` that wrote `seq` with `stamp`.
    pub(super) fn find(&self, i: usize, seq: u64, stamp: UnixTime) -> Option<usize> {
        self.sessions[i]
            .iter()
            .position(|s| s.beats.get(&seq).is_some_and(|w| w.stamp == stamp))
    }
}

/// One client's history in one server incarnation between two restarts.
#[derive(Clone, Debug, Default)]
pub(super) struct Epoch {
    pub(super) received: BTreeMap<u64, UnixTime>,
    pub(super) missed: BTreeSet<u64>,
    /// Truth session of the beats received: the first one's.
    pub(super) session: Option<usize>,
    /// The first slot it accounts for (invariant 3): 1 for a new session; for a client new to
    /// the incarnation, its first heartbeat's sequence number (`None` until it comes).
    pub(super) base: Option<u64>,
}

impl Epoch {
    /// The epoch of a new session of a client the incarnation knows: counted from slot 1.
    pub(super) fn new_session() -> Self {
        Self {
            base: Some(1),
            ..Self::default()
        }
    }

    pub(super) fn highest(&self) -> u64 {
        self.received.keys().next_back().copied().unwrap_or(0)
    }
}

/// The highest sequence number the server received of session `k`, over `epochs`.
pub(super) fn heard<'e>(epochs: impl IntoIterator<Item = &'e Epoch>, k: usize) -> Option<u64> {
    epochs
        .into_iter()
        .filter(|e| e.session == Some(k))
        .map(Epoch::highest)
        .max()
}

/// Client indices by the key the server knows them by: a v1 client by its id, a legacy one
/// by its peer address (its host's, whatever the port: each connection of a legacy client is
/// a new client to the server).
pub(super) struct Index<'a> {
    pub(super) ids: BTreeMap<&'a str, usize>,
    pub(super) legacy: BTreeMap<IpAddr, usize>,
}

impl<'a> Index<'a> {
    pub(super) fn new(out: &'a Outcome) -> Self {
        let s = &out.scenario;
        Self {
            ids: s
                .clients
                .iter()
                .enumerate()
                .filter(|(_, c)| !c.legacy)
                .map(|(i, c)| (c.id.as_str(), i))
                .collect(),
            legacy: s
                .clients
                .iter()
                .enumerate()
                .filter(|(_, c)| c.legacy)
                .map(|(i, _)| (out.client_ips[i], i))
                .collect(),
        }
    }

    /// The index of the client `key` names; `None` for one no plan names.
    pub(super) fn of(&self, key: &ClientKey) -> Option<usize> {
        match key {
            ClientKey::Id(id) => self.ids.get(id.as_str()).copied(),
            ClientKey::Peer(addr) => self.legacy.get(&addr.ip()).copied(),
        }
    }
}

/// The index of the client the server knows by `key`, if the scenario has it.
pub fn client_of(out: &Outcome, key: &ClientKey) -> Option<usize> {
    Index::new(out).of(key)
}

/// A heartbeat the server counted for a client the scenario names, with what the view held for
/// that client's current epoch when it came.
pub(super) struct Beat<'a> {
    pub(super) inc: u32,
    pub(super) conn: ConnId,
    pub(super) client: &'a ClientKey,
    /// The client's index.
    pub(super) index: usize,
    pub(super) seq: Seq,
    pub(super) sent: UnixTime,
    pub(super) received: UnixTime,
    /// The server says it filled a gap reported missed.
    pub(super) recovered: bool,
    /// The host its connection came from, if the server reported that connection.
    pub(super) host: Option<IpAddr>,
    /// The truth session that wrote it (same sequence number and send stamp), if any.
    pub(super) session: Option<usize>,
    /// The truth session its epoch held before it came.
    pub(super) epoch_session: Option<usize>,
    /// Its epoch had it as missed (it now counts as received).
    pub(super) was_missed: bool,
    /// Its epoch had already received it.
    pub(super) again: bool,
}

/// A server event the checks judge, with what the view knew when it came.
pub(super) enum Seen<'a> {
    /// A heartbeat of a client the scenario names.
    Beat(Beat<'a>),
    /// A burst of client `index`.
    Burst { index: usize, first: u64, last: u64 },
    /// A missed range of a client the scenario names; `again` lists the slots its epoch had
    /// already counted, received or missed.
    Missed {
        inc: u32,
        client: &'a ClientKey,
        again: Vec<u64>,
    },
    /// A liveness change.
    Transition {
        inc: u32,
        client: &'a ClientKey,
        from: &'static str,
        to: &'static str,
    },
    /// A heartbeat or a missed range (`what`) for a client no plan names.
    Unknown {
        what: &'static str,
        client: &'a ClientKey,
    },
}

/// The server's view, rebuilt once from its events and shared by the checks.
pub(super) struct View<'a> {
    /// Per incarnation, per client index, its epochs.
    pub(super) incarnations: BTreeMap<u32, BTreeMap<usize, Vec<Epoch>>>,
    /// Per client index, the key of its last connection in the last incarnation (a legacy
    /// client has one per connection).
    pub(super) last_keys: BTreeMap<usize, &'a ClientKey>,
    /// The events the checks judge, in log order.
    pub(super) seen: Vec<Seen<'a>>,
}

impl<'a> View<'a> {
    /// Replays the server's events of `out` into epochs, matching each heartbeat to the truth.
    pub(super) fn new(out: &'a Outcome, truth: &Truth, index: &Index<'_>) -> Self {
        let mut incarnations: BTreeMap<u32, BTreeMap<usize, Vec<Epoch>>> = BTreeMap::new();
        let mut seen = Vec::new();
        let mut hosts: BTreeMap<(u32, ConnId), IpAddr> = BTreeMap::new();
        let mut last_keys = BTreeMap::new();
        for e in &out.log {
            let Record::Server { incarnation, event } = &e.record else {
                continue;
            };
            let inc = *incarnation;
            if incarnations
                .keys()
                .next_back()
                .is_some_and(|&last| last < inc)
            {
                last_keys.clear();
            }
            let epochs = incarnations.entry(inc).or_default();
            seen.push(match event {
                Event::Connected {
                    conn, peer, client, ..
                } => {
                    hosts.insert((inc, *conn), peer.ip());
                    if let Some(i) = index.of(client) {
                        // A legacy connection is a new client to the server: a new epoch.
                        if matches!(client, ClientKey::Peer(_)) {
                            epochs.entry(i).or_default().push(Epoch::default());
                        }
                        last_keys.insert(i, client);
                    }
                    continue;
                }
                Event::Restarted { client, .. } => {
                    if let Some(i) = index.of(client) {
                        current(epochs, i);
                        epochs.entry(i).or_default().push(Epoch::new_session());
                    }
                    continue;
                }
                Event::Evicted { client } => {
                    // Forgotten: if it comes back, the server counts it from its next heartbeat.
                    if let Some(i) = index.of(client) {
                        epochs.entry(i).or_default().push(Epoch::default());
                    }
                    continue;
                }
                Event::Missed { client, range, .. } => {
                    let Some(i) = index.of(client) else {
                        seen.push(Seen::Unknown {
                            what: "missed",
                            client,
                        });
                        continue;
                    };
                    let epoch = current(epochs, i);
                    let mut again = Vec::new();
                    for seq in range.first.0..=range.last.0 {
                        if epoch.received.contains_key(&seq) || !epoch.missed.insert(seq) {
                            again.push(seq);
                        }
                    }
                    Seen::Missed { inc, client, again }
                }
                Event::Heartbeat {
                    conn,
                    client,
                    seq,
                    sent,
                    received,
                    recovered,
                    ..
                } => {
                    let Some(i) = index.of(client) else {
                        seen.push(Seen::Unknown {
                            what: "heartbeat",
                            client,
                        });
                        continue;
                    };
                    let session = truth.find(i, seq.0, *sent);
                    let epoch = current(epochs, i);
                    let epoch_session = epoch.session;
                    epoch.session = epoch_session.or(session);
                    epoch.base.get_or_insert(seq.0);
                    Seen::Beat(Beat {
                        inc,
                        conn: *conn,
                        client,
                        index: i,
                        seq: *seq,
                        sent: *sent,
                        received: *received,
                        recovered: *recovered,
                        host: hosts.get(&(inc, *conn)).copied(),
                        session,
                        epoch_session,
                        was_missed: epoch.missed.remove(&seq.0),
                        again: epoch.received.insert(seq.0, *sent).is_some(),
                    })
                }
                Event::Transition {
                    client, from, to, ..
                } => Seen::Transition {
                    inc,
                    client,
                    from: from.as_str(),
                    to: to.as_str(),
                },
                Event::Burst {
                    client,
                    first,
                    last,
                    ..
                } => {
                    let Some(i) = index.of(client) else {
                        continue;
                    };
                    Seen::Burst {
                        index: i,
                        first: first.0,
                        last: last.0,
                    }
                }
                _ => continue,
            });
        }
        Self {
            incarnations,
            last_keys,
            seen,
        }
    }

    /// Client `i`'s epochs in the last incarnation, the one the final report covers.
    pub(super) fn last_epochs(&self, i: usize) -> &[Epoch] {
        self.incarnations
            .values()
            .next_back()
            .and_then(|clients| clients.get(&i))
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// True when the server restarted and its last incarnation never heard of client `i`.
    pub(super) fn restarted_without(&self, i: usize) -> bool {
        self.incarnations.len() > 1 && self.last_epochs(i).is_empty()
    }

    /// Client `i`'s epochs in every incarnation, in order.
    pub(super) fn epochs(&self, i: usize) -> impl Iterator<Item = &Epoch> {
        self.incarnations
            .values()
            .filter_map(move |clients| clients.get(&i))
            .flatten()
    }
}

/// Client `i`'s current epoch in one incarnation, the first one if it has none yet.
pub(super) fn current(epochs: &mut BTreeMap<usize, Vec<Epoch>>, i: usize) -> &mut Epoch {
    let list = epochs.entry(i).or_default();
    if list.is_empty() {
        list.push(Epoch::default());
    }
    list.last_mut().expect("one pushed above")
}

/// The heartbeats written while one link was held.
pub(super) struct Hold {
    /// The client index.
    pub(super) client: usize,
    /// `(truth session, sequence number)` of each, in session then sequence order.
    pub(super) beats: Vec<(usize, u64)>,
}

/// The heartbeats written in each hold window (see [`hold_windows`]).
pub(super) fn holds(out: &Outcome, truth: &Truth) -> Vec<Hold> {
    hold_windows(out)
        .into_iter()
        .map(|(i, from, to)| Hold {
            client: i,
            beats: truth.sessions[i]
                .iter()
                .enumerate()
                .flat_map(|(k, session)| {
                    session
                        .beats
                        .iter()
                        .filter(move |(_, w)| from <= w.at && w.at < to)
                        .map(move |(&seq, _)| (k, seq))
                })
                .collect(),
        })
        .collect()
}

/// The hold windows `(client, from, to)`, closed by `release` or by the heal.
pub fn hold_windows(out: &Outcome) -> Vec<(usize, Duration, Duration)> {
    let mut open: BTreeMap<usize, Duration> = BTreeMap::new();
    let mut windows = Vec::new();
    for e in &out.log {
        match &e.record {
            Record::Action(Action::Hold(i)) => {
                open.entry(*i).or_insert(e.at);
            }
            Record::Action(Action::Release(i)) => {
                if let Some(from) = open.remove(i) {
                    windows.push((*i, from, e.at));
                }
            }
            Record::Heal { .. } => {
                windows.extend(
                    std::mem::take(&mut open)
                        .into_iter()
                        .map(|(i, from)| (i, from, e.at)),
                );
            }
            _ => {}
        }
    }
    windows
}
