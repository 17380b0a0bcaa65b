//! The ground truth of a run: when each client was reachable, and its crashes
//! ([`ClientTruth`]), recorded as the run goes.

use std::time::Duration;

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
///
/// A client is *reachable* while it is alive, with its link up, and its heartbeats flowing. A
/// reachable period starts when the first heartbeat of a process arrives after the process
/// started, after its link was repaired or released, or after the server restarted, and ends
/// when the process crashes or stops, or its link is cut or held, or the server crashes.
/// Crashes are recorded with the instant they happened and the instant the client was reachable
/// again (or the run ended).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientTruth {
    /// When it was reachable, in order.
    pub reachable: Vec<Period>,
    /// Its crashes, in order.
    pub crashes: Vec<Crash>,
}

/// One client's truth as the run goes.
#[derive(Debug, Default)]
struct Tracker {
    /// Alive and its link up, but no heartbeat arrived yet since then.
    awaiting: bool,
    reachable_since: Option<Duration>,
    /// A crash waiting for the client to be reachable again.
    open_crash: Option<Duration>,
    truth: ClientTruth,
}

/// Every client's truth as the run goes. Times are simulated time since the start.
#[derive(Debug)]
pub(super) struct Truth {
    clients: Vec<Tracker>,
}

impl Truth {
    pub(super) fn new(clients: usize) -> Self {
        Self {
            clients: (0..clients).map(|_| Tracker::default()).collect(),
        }
    }

    /// Client `i` is (or is not) alive with its path up: its next heartbeat from its current
    /// process starts a reachable period.
    pub(super) fn set_awaiting(&mut self, i: usize, awaiting: bool) {
        self.clients[i].awaiting = awaiting;
    }

    /// Ends client `i`'s reachable period at `at`, if one is open.
    pub(super) fn unreachable(&mut self, i: usize, at: Duration) {
        let c = &mut self.clients[i];
        c.awaiting = false;
        if let Some(from) = c.reachable_since.take() {
            c.truth.reachable.push(Period { from, to: at });
        }
    }

    /// Client `i`'s process crashed at `at` (ending its reachable period).
    pub(super) fn crashed(&mut self, i: usize, at: Duration) {
        self.unreachable(i, at);
        let c = &mut self.clients[i];
        if c.open_crash.is_none() {
            c.open_crash = Some(at);
        }
    }

    /// A heartbeat of client `i` arrived at `at`, sent by its current process or not.
    pub(super) fn heard(&mut self, i: usize, at: Duration, current_process: bool) {
        let c = &mut self.clients[i];
        if c.awaiting && current_process {
            c.awaiting = false;
            c.reachable_since = Some(at);
            if let Some(crash) = c.open_crash.take() {
                c.truth.crashes.push(Crash {
                    at: crash,
                    until: at,
                });
            }
        }
    }

    /// Closes what is open at the end of the run, `end`.
    pub(super) fn finish(self, end: Duration) -> Vec<ClientTruth> {
        let close = |mut c: Tracker| {
            if let Some(from) = c.reachable_since.take() {
                c.truth.reachable.push(Period { from, to: end });
            }
            if let Some(at) = c.open_crash.take() {
                c.truth.crashes.push(Crash { at, until: end });
            }
            c.truth
        };
        self.clients.into_iter().map(close).collect()
    }
}
