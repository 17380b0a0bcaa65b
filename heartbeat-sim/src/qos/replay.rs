//! Replay: the server's liveness machine applied to a recorded arrival trace, for any detector.
//!
//! Which heartbeats reach the server, and when, does not depend on the server's detector: the
//! detector only decides liveness transitions, which change nothing on the wire. So one
//! machine run's arrival trace ([`TraceItem`]s) can be fed to any number of detectors, each
//! through the very machine the server runs ([`heartbeat_core::liveness::Watches`]; its docs
//! state the rule). What a replay adds is only the mapping of the trace onto it:
//!
//! - an arrival is [`observe`](Watches::observe)d with its client's declared interval, a `HELLO`
//!   is a [`hello`](Watches::hello) with the same interval, a goodbye is a
//!   [`leave`](Watches::leave), a reset (a new session) a [`reset`](Watches::reset), an eviction
//!   a fresh [`start`](Watches::start), and a server restart starts every client over;
//! - at one instant, arrivals come before checks, as in the engine: checks due strictly before
//!   an item run before it, each at its own instant.
//!
//! A replay of the trace of a run whose server had detector D gives every client exactly the
//! transitions that server gave it (tested); only the order between clients at one instant may
//! differ ([`per_client`](super::engine::per_client)).

use std::time::{Duration, Instant};

use heartbeat_core::detector::DetectorConfig;
use heartbeat_core::liveness::{Change, FlapControl, Watches};

use super::engine::{TraceBatch, TraceItem, Transition};

/// One detector configuration watching every client of one run.
#[derive(Debug)]
pub struct Replay {
    config: DetectorConfig,
    flap: FlapControl,
    /// Each client's declared interval.
    intervals: Vec<Duration>,
    origin: Instant,
    watches: Watches,
    transitions: Vec<Transition>,
}

impl Replay {
    /// A replay of clients each sending every `intervals[i]` (one per client, as they declare
    /// it), with times measured from `origin` (the run's
    /// [`Run::origin`](super::engine::Run::origin)).
    pub fn new(config: DetectorConfig, intervals: Vec<Duration>, origin: Instant) -> Self {
        Self {
            watches: fresh(&config, FlapControl::default(), intervals.len()),
            config,
            flap: FlapControl::default(),
            intervals,
            origin,
            transitions: Vec::new(),
        }
    }

    /// The same replay with flap control (the server's `--down-after` and `--up-after`), before
    /// anything is fed.
    pub fn flap(mut self, flap: FlapControl) -> Self {
        self.flap = flap;
        self.watches = fresh(&self.config, flap, self.intervals.len());
        self
    }

    /// Feeds one batch of the trace, in order.
    pub fn feed(&mut self, batch: &TraceBatch) {
        self.feed_with(batch, |_, _, _| {});
    }

    /// [`feed`](Self::feed), calling `after_arrival(watches, client, at)` as soon as each
    /// arrival has been observed, with the machine exactly as that arrival left it: where a
    /// read-ahead such as [`Watches::convicts_at`] answers "what if nothing arrived after this
    /// one?" (`heartbeat-sim tune`'s detection time).
    pub fn feed_with(
        &mut self,
        batch: &TraceBatch,
        mut after_arrival: impl FnMut(&Watches, usize, Instant),
    ) {
        for item in &batch.items {
            match item {
                TraceItem::Arrival { at, client, seqs } => {
                    self.checks_before(*at);
                    let seqs = batch.seqs[seqs.clone()].iter().copied();
                    let change =
                        self.watches
                            .observe(*at, *client, Some(self.intervals[*client]), seqs);
                    self.record(*at, change);
                    after_arrival(&self.watches, *client, *at);
                }
                TraceItem::Hello { at, client } => {
                    self.checks_before(*at);
                    self.watches.hello(*at, *client, self.intervals[*client]);
                }
                TraceItem::Left { at, client } => {
                    self.checks_before(*at);
                    let change = self.watches.leave(*at, *client);
                    self.record(*at, change);
                }
                TraceItem::Forget { at, client } => {
                    self.checks_before(*at);
                    self.watches.start(*client);
                }
                TraceItem::Reset { at, client } => {
                    self.checks_before(*at);
                    self.watches.reset(*client);
                }
                TraceItem::ServerRestart { at } => {
                    self.checks_before(*at);
                    self.watches = fresh(&self.config, self.flap, self.intervals.len());
                }
            }
        }
    }

    /// Runs the checks due up to `end` (included) and returns every transition, in order.
    pub fn finish(mut self, end: Instant) -> Vec<Transition> {
        self.run_checks(|at| at <= end);
        self.transitions
    }

    /// Runs the checks due strictly before `t`: those due at `t` itself wait until every
    /// arrival at `t` has been fed.
    fn checks_before(&mut self, t: Instant) {
        self.run_checks(|at| at < t);
    }

    /// Runs the due checks in order, each at its own instant, while `due` says so.
    fn run_checks(&mut self, due: impl Fn(Instant) -> bool) {
        while let Some(at) = self.watches.next_check().filter(|&at| due(at)) {
            let (origin, transitions) = (self.origin, &mut self.transitions);
            self.watches
                .handle_timeout(at, |c| transitions.push(transition(origin, at, c)));
        }
    }

    fn record(&mut self, at: Instant, change: Option<Change>) {
        if let Some(c) = change {
            self.transitions.push(transition(self.origin, at, c));
        }
    }
}

/// Every client of a run, unknown to the machine: `Up`, no detector, no check.
fn fresh(config: &DetectorConfig, flap: FlapControl, clients: usize) -> Watches {
    let mut watches = Watches::with_flap(config.clone(), flap);
    for client in 0..clients {
        watches.start(client);
    }
    watches
}

fn transition(origin: Instant, at: Instant, c: Change) -> Transition {
    Transition {
        at: at - origin,
        client: c.client,
        from: c.from,
        to: c.to,
    }
}
