//! What the server saw and decided: its liveness transitions, and the trace of its liveness
//! inputs that a [replay](crate::qos::replay) feeds to other detectors.

use std::time::{Duration, Instant};

use heartbeat_core::Seq;
use heartbeat_core::liveness::Liveness;

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
    /// The client said `HELLO` (a v1 client, declaring its interval): its first sign of life,
    /// which starts a detector for a client without one. Recorded at the server's `connected`,
    /// and again after a `restarted` for a new session nonce in the same `HELLO` (the server
    /// announces the connection before it resets the client, then watches it from the `HELLO`).
    Hello {
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

/// A batch of trace items, handed to the trace sink every few thousand items.
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

/// Items per trace batch: a batch is handed over once it holds this many, at the end of a read.
const BATCH: usize = 4096;

/// Records the trace, when asked to, and hands it to a sink in batches.
#[derive(Debug)]
pub(super) struct Recorder {
    batch: Option<TraceBatch>,
    /// The arrival being gathered while the server's outputs for one read are reported: its
    /// client and where its sequence numbers start in the batch.
    pending: Option<(usize, usize)>,
}

impl Recorder {
    /// A recorder that records only with `on`.
    pub(super) fn new(on: bool) -> Self {
        Self {
            batch: on.then(TraceBatch::default),
            pending: None,
        }
    }

    /// Records `item` (after the arrival being gathered, if any, which `item` ends).
    pub(super) fn push(&mut self, now: Instant, item: TraceItem) {
        self.close_arrival(now);
        if let Some(b) = self.batch.as_mut() {
            b.items.push(item);
        }
    }

    /// Records heartbeat `seq` of client `i`, read now: part of the arrival being gathered, or
    /// the start of a new one if that was another client's.
    pub(super) fn seq(&mut self, now: Instant, i: usize, seq: Seq) {
        if self.batch.is_none() {
            return;
        }
        if self.pending.is_some_and(|(c, _)| c != i) {
            self.close_arrival(now);
        }
        let Some(b) = self.batch.as_mut() else {
            return;
        };
        if self.pending.is_none() {
            self.pending = Some((i, b.seqs.len()));
        }
        b.seqs.push(seq);
    }

    /// Ends the arrival being gathered (one read's heartbeats), if any.
    pub(super) fn close_arrival(&mut self, now: Instant) {
        if let (Some((client, start)), Some(b)) = (self.pending.take(), self.batch.as_mut()) {
            let end = b.seqs.len();
            b.items.push(TraceItem::Arrival {
                at: now,
                client,
                seqs: start..end,
            });
        }
    }

    /// Hands the batch to `sink` once it is full (or, with `all`, if it holds anything), then
    /// empties it. The sink may take the batch's contents.
    pub(super) fn flush(&mut self, sink: &mut dyn FnMut(&mut TraceBatch), all: bool) {
        debug_assert!(
            self.pending.is_none(),
            "flushed in the middle of an arrival"
        );
        if let Some(b) = self.batch.as_mut() {
            let due = if all {
                !b.items.is_empty()
            } else {
                b.items.len() >= BATCH
            };
            if due {
                sink(b);
                b.clear();
            }
        }
    }
}
