//! The server's memory across restarts, Sans-IO: what is kept of each client ([`ClientState`]),
//! taken from a running server ([`Server::persist`](super::Server::persist), or only what
//! changed since the last time with
//! [`Server::persist_changes`](super::Server::persist_changes)) and given to a fresh one
//! ([`Server::restore`](super::Server::restore)). Reading and writing files is the driver's
//! business (`heartbeat-net`'s `server::state`); this module only says what a state is, in a
//! strict serde form (unknown fields are errors), and checks what it is given before trusting
//! it: a state file is input like any other.
//!
//! # What is kept, and what is not
//! Kept, per client: its key, protocol, session, interval, liveness, counters (received,
//! missed and the most recent missed ranges, duplicates, restarts, bursts, connections), the
//! highest sequence number of its session, and when it was first and last heard. That is what
//! the report, the identity rule (the session) and the liveness watch (state and interval)
//! need. Not kept: the delay and gap statistics (a restarted server measures afresh), the
//! clock-skew estimate and the sequence-number plausibility reference (both re-learned from the
//! next heartbeats), and the failure detector's history.
//!
//! # Liveness after a restore
//! A client that was `left` stays `left`, one that was `down` stays `down` (until it is heard
//! from). One that was `up` or `suspect` is watched again as if it had just been heard from at
//! the restore: a detector primed with one arrival at that instant convicts it after the
//! detector's usual grace unless a heartbeat comes, so a client that died while the server was
//! down is declared down that long after the restart. The first real heartbeat replaces the
//! primed detector with a fresh one, so the restore's instant is never learned as an interval.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::analysis::SeqRange;
use crate::frame::{MAX_INTERVAL_MS, Protocol};
use crate::ids::{ClientId, ClientKey, Seq};
use crate::liveness::Liveness;
use crate::time::UnixTime;

use super::session::ClientRecord;

/// The version of the state's layout. A state of another version is not restored: the driver
/// sets its file aside.
pub const STATE_VERSION: u32 = 1;

/// The records of a server's clients, as kept across restarts: every client
/// ([`Server::persist`](super::Server::persist)), or the clients that changed since the last
/// time, and those forgotten ([`Server::persist_changes`](super::Server::persist_changes)).
///
/// Serialised with serde; deserialising is strict (unknown fields are errors), and
/// [`Server::restore`](super::Server::restore) checks every value before it uses any.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// One entry per client, sorted by key.
    clients: Vec<ClientState>,
    /// Clients forgotten since the previous state (evicted at the client limit), when this
    /// state holds changes only; empty in a full state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    forgotten: Vec<StateKey>,
}

impl State {
    /// How many clients it holds.
    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    /// True when it holds no client and forgets none.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty() && self.forgotten.is_empty()
    }

    /// Applies `later`, a state of changes taken after this one: its clients replace or join
    /// this state's, and the clients it forgot leave it. Applying a full state and then every
    /// later state of changes, in order, gives the full state as of the last one.
    ///
    /// It rebuilds the state: to apply many states of changes, use a [`MergedState`].
    pub fn merge(&mut self, later: Self) {
        let forgotten = std::mem::take(&mut self.forgotten);
        let mut merged = MergedState::new(std::mem::take(self));
        merged.merge(later);
        *self = merged.into_state();
        self.forgotten = forgotten;
    }

    pub(super) fn new(clients: Vec<ClientState>, forgotten: Vec<StateKey>) -> Self {
        Self { clients, forgotten }
    }

    pub(super) fn into_clients(self) -> Vec<ClientState> {
        self.clients
    }
}

/// A full [`State`] kept current by merging states of changes into it
/// ([`Server::persist_changes`](super::Server::persist_changes)), at a cost per change rather
/// than per client: what a journal's reader, and a writer that keeps the full state off the
/// server's loop, hold between full saves.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MergedState {
    clients: BTreeMap<StateKey, ClientState>,
}

impl MergedState {
    /// Starts from a full state (the clients it says are forgotten are ignored).
    pub fn new(full: State) -> Self {
        Self {
            clients: full
                .clients
                .into_iter()
                .map(|c| (c.client.clone(), c))
                .collect(),
        }
    }

    /// Applies `later`, a state of changes taken after the last one applied: its clients
    /// replace or join, and the clients it forgot leave.
    pub fn merge(&mut self, later: State) {
        for key in later.forgotten {
            self.clients.remove(&key);
        }
        for c in later.clients {
            self.clients.insert(c.client.clone(), c);
        }
    }

    /// How many clients it holds.
    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    /// The full state as of the last merge (a copy).
    pub fn to_state(&self) -> State {
        State::new(self.clients.values().cloned().collect(), Vec::new())
    }

    /// The full state as of the last merge.
    pub fn into_state(self) -> State {
        State::new(self.clients.into_values().collect(), Vec::new())
    }
}

/// A client key as kept in a state: `{"id": "web-01"}` or `{"legacy": "127.0.0.1:37506"}`.
/// (A client id may itself read `legacy@...`, so the text form of a [`ClientKey`] would be
/// ambiguous.)
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub(super) enum StateKey {
    /// A v1 client's id, checked when restored.
    Id(String),
    /// A legacy client's peer address.
    Legacy(SocketAddr),
}

impl From<&ClientKey> for StateKey {
    fn from(key: &ClientKey) -> Self {
        match key {
            ClientKey::Id(id) => Self::Id(id.as_str().to_owned()),
            ClientKey::Peer(addr) => Self::Legacy(*addr),
        }
    }
}

/// One client's record as kept across restarts (see the module docs for what is and is not).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ClientState {
    pub(super) client: StateKey,
    pub(super) protocol: Protocol,
    /// The session nonce of its last `HELLO` (v1).
    pub(super) session: Option<u64>,
    /// Declared (v1) or estimated (legacy) interval, in nanoseconds.
    pub(super) interval_ns: Option<u64>,
    pub(super) state: Liveness,
    pub(super) received: u64,
    pub(super) missed: u64,
    /// The most recent missed ranges, oldest first, as `[first, last]`.
    pub(super) missed_ranges: Vec<[u64; 2]>,
    pub(super) duplicates: u64,
    pub(super) restarts: u64,
    pub(super) bursts: u64,
    pub(super) connections: u64,
    /// Highest sequence number of the current session.
    pub(super) highest: Option<u64>,
    /// Server time of its first and last heartbeat, in nanoseconds since the epoch.
    pub(super) first_seen_ns: Option<u64>,
    pub(super) last_seen_ns: Option<u64>,
}

/// Why a state cannot be restored. Nothing of it is used then: the server stays empty.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StateError {
    /// The server already has clients: a state is restored into a fresh server only.
    #[error("the server already has clients; a state is restored into a fresh server only")]
    NotFresh,
    /// A client's entry holds a value no server could have written.
    #[error("client entry {index}: {what}")]
    Invalid {
        /// The entry's position in the state.
        index: usize,
        /// What is wrong with it.
        what: String,
    },
    /// Two entries name the same client.
    #[error("client entry {index}: {client} is listed twice")]
    Duplicate {
        /// The second entry's position.
        index: usize,
        /// The client.
        client: String,
    },
}

/// What a restore did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Restored {
    /// Clients restored.
    pub clients: usize,
    /// Clients left out because the state held more than the client limit (the ones heard
    /// from longest ago).
    pub dropped: usize,
}

impl ClientRecord {
    /// The record as kept across restarts, with the client's liveness `state`.
    pub(super) fn to_state(&self, state: Liveness) -> ClientState {
        let s = &self.stats;
        ClientState {
            client: StateKey::from(&s.client),
            protocol: s.protocol,
            session: self.session,
            interval_ns: self
                .interval
                .map(|i| u64::try_from(i.as_nanos()).unwrap_or(u64::MAX)),
            state,
            received: s.received,
            missed: s.missed,
            missed_ranges: s
                .missed_ranges
                .iter()
                .map(|r| [r.first.0, r.last.0])
                .collect(),
            duplicates: s.duplicates,
            restarts: s.restarts,
            bursts: s.bursts,
            connections: s.connections,
            highest: s.highest.map(|h| h.0),
            first_seen_ns: s.first_seen.map(UnixTime::as_nanos),
            last_seen_ns: s.last_seen.map(UnixTime::as_nanos),
        }
    }

    /// A disconnected record from a kept one, checked; the interval it declared (or that was
    /// estimated) and its liveness come back beside it, for the caller's liveness watch.
    pub(super) fn from_state(
        c: ClientState,
        max_missed_ranges: usize,
    ) -> Result<(Self, Liveness), String> {
        let key = match c.client {
            StateKey::Id(id) => ClientKey::Id(ClientId::new(&id).map_err(|e| e.to_string())?),
            StateKey::Legacy(addr) => ClientKey::Peer(addr),
        };
        let interval = c.interval_ns.map(Duration::from_nanos);
        if interval.is_some_and(|i| i.is_zero() || i > Duration::from_millis(MAX_INTERVAL_MS)) {
            return Err(format!(
                "interval {:?} is out of range",
                interval.unwrap_or_default()
            ));
        }
        let is_id = matches!(key, ClientKey::Id(_));
        if c.protocol == Protocol::Legacy && (c.session.is_some() || is_id) {
            return Err("a legacy client has neither an id nor a session".into());
        }
        if c.protocol == Protocol::V1 && !is_id {
            return Err("a v1 client is keyed by its id".into());
        }
        let mut ranges = Vec::with_capacity(c.missed_ranges.len());
        let mut in_ranges = 0u64;
        for [first, last] in c.missed_ranges {
            if first == 0 || last < first {
                return Err(format!("missed range {first}-{last} is not a range"));
            }
            in_ranges = in_ranges.saturating_add(last - first + 1);
            ranges.push(SeqRange {
                first: Seq(first),
                last: Seq(last),
            });
        }
        if in_ranges > c.missed {
            return Err(format!(
                "its missed ranges hold {in_ranges} heartbeats, more than the {} missed",
                c.missed
            ));
        }
        if c.highest == Some(0) {
            return Err("sequence numbers start at 1".into());
        }
        if let (Some(first), Some(last)) = (c.first_seen_ns, c.last_seen_ns) {
            if last < first {
                return Err("last seen before first seen".into());
            }
        }
        let mut record = Self::new(key, c.protocol, max_missed_ranges);
        let s = &mut record.stats;
        s.received = c.received;
        s.missed = c.missed;
        // Keep the most recent ones, as a running server does.
        let skip = ranges.len().saturating_sub(max_missed_ranges.max(1));
        s.missed_ranges = ranges.into_iter().skip(skip).collect();
        s.duplicates = c.duplicates;
        s.restarts = c.restarts;
        s.bursts = c.bursts;
        s.connections = c.connections;
        s.highest = c.highest.map(Seq);
        s.first_seen = c.first_seen_ns.map(UnixTime::from_nanos);
        s.last_seen = c.last_seen_ns.map(UnixTime::from_nanos);
        record.session = c.session;
        record.interval = interval;
        record.left = c.state == Liveness::Left;
        Ok((record, c.state))
    }
}

/// Checks every entry of `clients` and builds its record, or says what is wrong with the first
/// bad one. Entries are kept in the state's order.
pub(super) fn records(
    clients: Vec<ClientState>,
    max_missed_ranges: usize,
) -> Result<Vec<(ClientRecord, Liveness)>, StateError> {
    let mut seen = BTreeMap::new();
    let mut out = Vec::with_capacity(clients.len());
    for (index, c) in clients.into_iter().enumerate() {
        let key = c.client.clone();
        if seen.insert(key.clone(), index).is_some() {
            let client = match key {
                StateKey::Id(id) => id,
                StateKey::Legacy(addr) => format!("legacy@{addr}"),
            };
            return Err(StateError::Duplicate { index, client });
        }
        let record = ClientRecord::from_state(c, max_missed_ranges)
            .map_err(|what| StateError::Invalid { index, what })?;
        out.push(record);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str) -> ClientState {
        ClientState {
            client: StateKey::Id(id.into()),
            protocol: Protocol::V1,
            session: Some(7),
            interval_ns: Some(1_000_000_000),
            state: Liveness::Up,
            received: 10,
            missed: 3,
            missed_ranges: vec![[4, 5], [8, 8]],
            duplicates: 0,
            restarts: 0,
            bursts: 0,
            connections: 1,
            highest: Some(13),
            first_seen_ns: Some(1),
            last_seen_ns: Some(2),
        }
    }

    #[test]
    fn json_is_strict_and_round_trips() {
        let state = State::new(vec![entry("a")], vec![]);
        let json = serde_json::to_string(&state).unwrap();
        assert!(json.starts_with(r#"{"clients":[{"client":{"id":"a"},"protocol":"v1","#));
        assert_eq!(serde_json::from_str::<State>(&json).unwrap(), state);
        let extra = json.replacen(r#""received":10"#, r#""received":10,"extra":1"#, 1);
        assert!(serde_json::from_str::<State>(&extra).is_err());
        let negative = json.replacen(r#""received":10"#, r#""received":-1"#, 1);
        assert!(serde_json::from_str::<State>(&negative).is_err());
        let missing = json.replacen(r#""received":10,"#, "", 1);
        assert!(serde_json::from_str::<State>(&missing).is_err());
    }

    #[test]
    fn merging_replaces_adds_and_forgets_by_key() {
        let mut full = State::new(vec![entry("a"), entry("b")], vec![]);
        let mut later_b = entry("b");
        later_b.received = 99;
        let changes = State::new(
            vec![entry("c"), later_b.clone()],
            vec![StateKey::Id("a".into())],
        );
        full.merge(changes);
        assert_eq!(full, State::new(vec![later_b, entry("c")], vec![]));
    }

    #[test]
    fn bad_entries_are_refused_with_their_position() {
        let check = |c: ClientState| records(vec![entry("ok"), c], 64).map(|_| ()).unwrap_err();
        let mut bad = entry("x");
        bad.client = StateKey::Id("has space".into());
        assert!(matches!(check(bad), StateError::Invalid { index: 1, .. }));
        let mut bad = entry("x");
        bad.missed_ranges = vec![[5, 4]];
        assert_eq!(
            check(bad).to_string(),
            "client entry 1: missed range 5-4 is not a range"
        );
        let mut bad = entry("x");
        bad.missed = 1;
        assert!(check(bad).to_string().contains("more than the 1 missed"));
        let mut bad = entry("x");
        bad.interval_ns = Some(0);
        assert!(check(bad).to_string().contains("interval"));
        let mut bad = entry("x");
        bad.protocol = Protocol::Legacy;
        assert!(check(bad).to_string().contains("legacy"));
        let mut bad = entry("x");
        bad.highest = Some(0);
        assert!(check(bad).to_string().contains("start at 1"));
        assert_eq!(
            check(entry("ok")),
            StateError::Duplicate {
                index: 1,
                client: "ok".into()
            }
        );
    }
}
