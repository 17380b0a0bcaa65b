//! Replay: the server's liveness rule applied to a recorded arrival trace, for any detector.
//!
//! Which heartbeats reach the server, and when, does not depend on the server's detector: the
//! detector only decides liveness transitions, which change nothing on the wire. So one
//! machine run's arrival trace ([`TraceItem`]s) can be fed to any number of detectors, each
//! with a mirror of the server's rule (`heartbeat_core::server`, `observe` / `evaluate` / `arm`):
//!
//! - an arrival feeds every heartbeat of the read to the client's detector (built at its first
//!   arrival, or after a reset, from the declared interval); a client that was not `up` is `up`
//!   again; then the next check is armed;
//! - the check is armed at `reaches(suspect)` when `up`, at `reaches(down)` when `suspect`, and
//!   not at all when `down` or `left`; an earlier queued check is kept (it re-arms when it pops);
//! - a check that pops moves `up` to `suspect` and `suspect` to `down` as far as the suspicion
//!   allows, telling the detector `set_available(false)` on `down`;
//! - a reset (a new session) forgets the detector, a goodbye makes the client `left` and drops
//!   its check, an eviction forgets the client, a server restart forgets every client.
//!
//! At one instant, arrivals come before checks, as in the engine. A replay of the trace of a
//! run whose server had detector D gives every client exactly the transitions that server gave
//! it (tested); only the order between clients at one instant may differ
//! ([`per_client`](super::engine::per_client)).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use heartbeat_core::detector::{Detector, DetectorConfig};
use heartbeat_core::server::Liveness;

use super::engine::{TraceBatch, TraceItem, Transition};

#[derive(Debug)]
struct Watch {
    state: Liveness,
    detector: Option<Box<dyn Detector>>,
    check_at: Option<Instant>,
}

impl Watch {
    fn new() -> Self {
        Self {
            state: Liveness::Up,
            detector: None,
            check_at: None,
        }
    }
}

/// One detector configuration watching every client of one run.
#[derive(Debug)]
pub struct Replay {
    config: DetectorConfig,
    interval: Duration,
    origin: Instant,
    watches: Vec<Watch>,
    checks: BinaryHeap<Reverse<(Instant, usize)>>,
    transitions: Vec<Transition>,
}

impl Replay {
    /// A replay of `clients` clients sending every `interval`, with times measured from
    /// `origin` (the run's [`Run::origin`](super::engine::Run::origin)).
    pub fn new(
        config: DetectorConfig,
        interval: Duration,
        clients: usize,
        origin: Instant,
    ) -> Self {
        Self {
            config,
            interval,
            origin,
            watches: (0..clients).map(|_| Watch::new()).collect(),
            checks: BinaryHeap::new(),
            transitions: Vec::new(),
        }
    }

    /// Feeds one batch of the trace, in order.
    pub fn feed(&mut self, batch: &TraceBatch) {
        for item in &batch.items {
            match item {
                TraceItem::Arrival { at, client, seqs } => {
                    self.checks_before(*at);
                    self.arrival(*at, *client, &batch.seqs[seqs.clone()]);
                }
                TraceItem::Left { at, client } => {
                    self.checks_before(*at);
                    let w = &mut self.watches[*client];
                    if w.state != Liveness::Left {
                        let from = w.state;
                        w.state = Liveness::Left;
                        w.check_at = None;
                        self.push(*at, *client, from, Liveness::Left);
                    }
                }
                TraceItem::Forget { at, client } => {
                    self.checks_before(*at);
                    self.watches[*client] = Watch::new();
                }
                TraceItem::Reset { at, client } => {
                    self.checks_before(*at);
                    self.watches[*client].detector = None;
                }
                TraceItem::ServerRestart { at } => {
                    self.checks_before(*at);
                    for w in &mut self.watches {
                        *w = Watch::new();
                    }
                    self.checks.clear();
                }
            }
        }
    }

    /// Runs the checks due up to `end` (included) and returns every transition, in order.
    pub fn finish(mut self, end: Instant) -> Vec<Transition> {
        while let Some(&Reverse((at, i))) = self.checks.peek() {
            if at > end {
                break;
            }
            self.checks.pop();
            self.check(at, i);
        }
        self.transitions
    }

    /// Runs the checks due strictly before `t`: those due at `t` itself wait until every
    /// arrival at `t` has been fed.
    fn checks_before(&mut self, t: Instant) {
        while let Some(&Reverse((at, i))) = self.checks.peek() {
            if at >= t {
                break;
            }
            self.checks.pop();
            self.check(at, i);
        }
    }

    fn check(&mut self, at: Instant, i: usize) {
        if self.watches[i].check_at != Some(at) {
            return; // stale: re-armed or dropped since
        }
        self.watches[i].check_at = None;
        let w = &mut self.watches[i];
        let Some(det) = w.detector.as_mut() else {
            return;
        };
        let levels = det.levels();
        let suspicion = det.suspicion(at);
        let mut steps = [None, None];
        if w.state == Liveness::Up && suspicion >= levels.suspect {
            w.state = Liveness::Suspect;
            steps[0] = Some((Liveness::Up, Liveness::Suspect));
        }
        if w.state == Liveness::Suspect && suspicion >= levels.down {
            w.state = Liveness::Down;
            det.set_available(false);
            steps[1] = Some((Liveness::Suspect, Liveness::Down));
        }
        for (from, to) in steps.into_iter().flatten() {
            self.push(at, i, from, to);
        }
        self.arm(i);
    }

    fn arrival(&mut self, at: Instant, i: usize, seqs: &[heartbeat_core::Seq]) {
        let w = &mut self.watches[i];
        let det = w
            .detector
            .get_or_insert_with(|| self.config.build(self.interval));
        for &seq in seqs {
            det.heartbeat(at, seq);
        }
        if w.state != Liveness::Up {
            let from = w.state;
            w.state = Liveness::Up;
            self.push(at, i, from, Liveness::Up);
        }
        self.arm(i);
    }

    fn arm(&mut self, i: usize) {
        let w = &mut self.watches[i];
        let Some(det) = w.detector.as_ref() else {
            return;
        };
        let levels = det.levels();
        let level = match w.state {
            Liveness::Up => levels.suspect,
            Liveness::Suspect => levels.down,
            Liveness::Down | Liveness::Left => return,
        };
        let Some(at) = det.reaches(level) else {
            return;
        };
        if w.check_at.is_some_and(|queued| queued <= at) {
            return;
        }
        w.check_at = Some(at);
        self.checks.push(Reverse((at, i)));
    }

    fn push(&mut self, at: Instant, client: usize, from: Liveness, to: Liveness) {
        self.transitions.push(Transition {
            at: at - self.origin,
            client,
            from,
            to,
        });
    }
}
