//! The event-driven engine: a [`Scenario`] played on the [in-memory network](heartbeat_memnet)
//! (the real `heartbeat-core` machines, a clock that jumps from one due event to the next: no
//! tokio, no ticks), recording the ground truth and the server's decisions.
//!
//! It runs the same [`Scenario`] values as the turmoil world ([`crate::harness::world::run`]): the same
//! clients and configurations, the same actions at the same times, the same
//! [`Latency`](crate::scenario::Latency) model, the same per-process session nonces and backoff
//! seeds, and the same heal-and-drain at the end. The network model, and the order of things due
//! at one instant, are the network's ([`heartbeat_memnet`]); the scenario's actions for an instant
//! come before everything else due then.
//!
//! Besides the server's liveness transitions ([`Transition`]), a run records the ground truth
//! ([`ClientTruth`]: when each client was reachable, and its crashes) and, when asked, the
//! server's liveness inputs ([`TraceItem`]) for a replay.
//!
//! Its concerns, one file each: the loop (`mod.rs`), the scenario's actions and what they mean
//! for the ground truth (`faults.rs`), the ground truth (`truth.rs`) and the server's
//! transitions and trace (`trace.rs`).

mod faults;
mod trace;
mod truth;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use heartbeat_core::analysis::Report;
use heartbeat_core::client;
use heartbeat_core::config::ServerConfig;
use heartbeat_core::liveness::Liveness;
use heartbeat_core::server::{self, Event, Server};
use heartbeat_core::{ClientKey, Now, UnixTime};

use crate::scenario::EPOCH_SECS;
use crate::scenario::Scenario;
use faults::Plan;
use heartbeat_memnet::{Net, Observer};
use trace::Recorder;
pub use trace::{TraceBatch, TraceItem, Transition, per_client};
use truth::Truth;
pub use truth::{ClientTruth, Crash, Period};

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

/// The engine. Build with [`Engine::new`], then [`Engine::run`].
#[derive(Debug)]
pub struct Engine<'s> {
    plan: Plan<'s>,
    net: Net,
    trace: bool,
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
        let plan = Plan::new(scenario, server_config)?;
        let mut net = Net::new(origin);
        plan.add_hosts(&mut net);
        Ok(Self { plan, net, trace })
    }

    /// Runs the scenario to its end (fault phase, heal, drain). `sink` gets the trace in
    /// batches (it may take the batch's contents; the engine clears it afterwards);
    /// `progress` counts simulated milliseconds as they pass.
    pub fn run(self, sink: &mut dyn FnMut(&mut TraceBatch), progress: Option<&AtomicU64>) -> Run {
        let Self {
            plan,
            mut net,
            trace,
        } = self;
        let s = plan.scenario;
        let mut w = Witness::new(&plan, trace, sink);
        let origin = net.origin().mono;
        let heal_at = origin + s.duration;
        let end = heal_at + s.drain;
        plan.start_server(&mut net, &mut w);
        for (i, c) in s.clients.iter().enumerate() {
            if !c.starts_late {
                plan.start_client(&mut net, &mut w, i);
            }
        }
        let mut next_action = 0;
        let mut healed = false;
        let mut reported = origin;
        loop {
            // The engine's own business at this instant comes first: the actions, the heal.
            let now = net.now().mono;
            while let Some(a) = s.actions.get(next_action) {
                if origin + a.at > now {
                    break;
                }
                next_action += 1;
                plan.apply(&mut net, &mut w, &a.action);
            }
            if !healed && heal_at <= now {
                healed = true;
                plan.heal(&mut net, &mut w);
            }
            if now - reported >= PROGRESS_EVERY {
                if let Some(p) = progress {
                    p.fetch_add((now - reported).as_millis() as u64, Ordering::Relaxed);
                }
                reported = now;
            }
            if now >= end {
                break;
            }
            let mut stop = end.min(reported + PROGRESS_EVERY);
            if let Some(a) = s.actions.get(next_action) {
                stop = stop.min(origin + a.at);
            }
            if !healed {
                stop = stop.min(heal_at);
            }
            net.run_before(stop, &mut w);
        }
        net.step(&mut w);
        w.trace.flush(w.sink, true);
        if let Some(p) = progress {
            p.fetch_add((end - reported).as_millis() as u64, Ordering::Relaxed);
        }
        let end = net.elapsed();
        let report = net.server().map_or_else(
            || Report {
                clients: Vec::new(),
            },
            Server::report,
        );
        Run {
            transitions: w.transitions,
            truth: w.truth.finish(end),
            report,
            end,
            origin,
            sent: w.sent,
            received: w.received,
        }
    }

    /// The monotonic instant the run starts at; trace items are instants after it.
    pub fn origin(&self) -> Instant {
        self.net.origin().mono
    }

    /// The key the server knows client `i` by.
    pub fn key(&self, i: usize) -> &ClientKey {
        &self.plan.keys[i]
    }
}

/// What the engine hears from the network: the ground truth, the trace and the transitions.
struct Witness<'k> {
    by_key: BTreeMap<ClientKey, usize>,
    truth: Truth,
    trace: Recorder,
    sink: &'k mut dyn FnMut(&mut TraceBatch),
    transitions: Vec<Transition>,
    sent: u64,
    received: u64,
}

impl<'k> Witness<'k> {
    fn new(plan: &Plan<'_>, trace: bool, sink: &'k mut dyn FnMut(&mut TraceBatch)) -> Self {
        let by_key = plan.keys.iter().cloned().zip(0..).collect();
        Self {
            by_key,
            truth: Truth::new(plan.keys.len()),
            trace: Recorder::new(trace),
            sink,
            transitions: Vec::new(),
            sent: 0,
            received: 0,
        }
    }

    fn on_event(&mut self, net: &Net, e: &Event) {
        let now = net.now().mono;
        match e {
            Event::Heartbeat { conn, seq, .. } => {
                self.received += 1;
                let Some(o) = net.origin_of(*conn) else {
                    debug_assert!(
                        false,
                        "a heartbeat on {conn}, which the network does not know"
                    );
                    return;
                };
                let current = o.process + 1 == net.processes(o.client);
                self.truth.heard(o.client, net.elapsed(), current);
                self.trace.seq(now, o.client, *seq);
            }
            Event::Duplicate { conn, seq, .. } => {
                if let Some(o) = net.origin_of(*conn) {
                    self.trace.seq(now, o.client, *seq);
                }
            }
            Event::Connected { client, .. } | Event::Restarted { client, .. } => {
                if let Some(&i) = self.by_key.get(client) {
                    for item in session_items(e, i, now).into_iter().flatten() {
                        self.trace.push(now, item);
                    }
                }
            }
            Event::Evicted { client } | Event::Forgotten { client, .. } => {
                if let Some(&i) = self.by_key.get(client) {
                    self.trace
                        .push(now, TraceItem::Forget { at: now, client: i });
                }
            }
            Event::Transition {
                client, from, to, ..
            } => {
                let Some(&i) = self.by_key.get(client) else {
                    return;
                };
                self.transitions.push(Transition {
                    at: net.elapsed(),
                    client: i,
                    from: *from,
                    to: *to,
                });
                if *to == Liveness::Left {
                    // The heartbeats read before the goodbye were one arrival of their own.
                    self.trace.push(now, TraceItem::Left { at: now, client: i });
                }
            }
            _ => {}
        }
    }
}

/// The trace items that a `connected` or `restarted` event `e` of client `i` at `at` stands
/// for: a v1 client's `HELLO` (a legacy one declares no interval, and says none); for a new
/// session (a reset), and when that session is a new nonce in the `HELLO` just announced
/// (`seq` is `None`), the `HELLO` again, since the server announces the connection, then resets
/// the client, then watches it from that `HELLO`.
fn session_items(e: &Event, i: usize, at: Instant) -> [Option<TraceItem>; 2] {
    let hello = TraceItem::Hello { at, client: i };
    match e {
        Event::Connected {
            interval: Some(_), ..
        } => [Some(hello), None],
        Event::Restarted { seq, .. } => [
            Some(TraceItem::Reset { at, client: i }),
            seq.is_none().then_some(hello),
        ],
        _ => [None, None],
    }
}

impl faults::Witnessing for Witness<'_> {
    fn truth(&mut self) -> &mut Truth {
        &mut self.truth
    }

    fn trace(&mut self) -> &mut Recorder {
        &mut self.trace
    }
}

impl Observer for Witness<'_> {
    fn on_client_output(&mut self, _: &Net, _: usize, out: &client::Output) {
        if matches!(out, client::Output::Event(client::Event::Sent { .. })) {
            self.sent += 1;
        }
    }

    fn on_server_output(&mut self, net: &Net, out: &server::Output) {
        if let server::Output::Event(e) = out {
            self.on_event(net, e);
        }
    }

    fn on_server_drained(&mut self, net: &Net) {
        self.trace.close_arrival(net.now().mono);
        self.trace.flush(self.sink, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::file::Spec;
    use crate::scenario::{Params, Source};

    /// A client that restarts as a new process (a new session nonce) and says `HELLO` and
    /// nothing more: the server watches the new session from that `HELLO`, and so does a
    /// replay of the trace its events stand for (the `HELLO` again after the reset), for every
    /// detector.
    #[test]
    fn a_new_session_that_only_says_hello_replays_as_the_server_decided() {
        use std::net::SocketAddr;
        use std::sync::Arc;

        use heartbeat_core::detector::{DetectorConfig, DetectorKind};

        use crate::qos::replay::Replay;

        let origin = Now {
            #[allow(clippy::disallowed_methods)] // an arbitrary origin
            mono: Instant::now(),
            unix: UnixTime::from_duration(Duration::from_secs(EPOCH_SECS)),
        };
        let at = |ms: u64| origin.advanced(Duration::from_millis(ms));
        let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let beat = |seq: u64| format!("BEAT {seq} {EPOCH_SECS}.{:03}\n", (seq - 1) * 100);
        for kind in DetectorKind::ALL {
            let config = ServerConfig::default().detector(DetectorConfig::new(kind));
            let mut s = Server::new(Arc::new(config));
            let mut batch = TraceBatch::default();
            let mut transitions = Vec::new();
            let mut drain = |s: &mut Server, now: Now, batch: &mut TraceBatch| {
                let from = batch.seqs.len();
                while let Some(out) = s.poll_output() {
                    let server::Output::Event(e) = out else {
                        continue;
                    };
                    match &e {
                        Event::Heartbeat { seq, .. } => batch.seqs.push(*seq),
                        Event::Transition { from, to, .. } => transitions.push(Transition {
                            at: now.mono - origin.mono,
                            client: 0,
                            from: *from,
                            to: *to,
                        }),
                        _ => {}
                    }
                    batch
                        .items
                        .extend(session_items(&e, 0, now.mono).into_iter().flatten());
                }
                if batch.seqs.len() > from {
                    let seqs = from..batch.seqs.len();
                    batch.items.push(TraceItem::Arrival {
                        at: now.mono,
                        client: 0,
                        seqs,
                    });
                }
            };
            let a = s.accept(at(0), peer);
            s.handle_input(at(0), a, b"HELLO 1 c1 100 aa\n");
            drain(&mut s, at(0), &mut batch);
            for seq in 1..=10 {
                let now = at((seq - 1) * 100);
                s.handle_timeout(now);
                s.handle_input(now, a, beat(seq).as_bytes());
                drain(&mut s, now, &mut batch);
            }
            s.handle_eof(at(950), a);
            let b = s.accept(at(950), peer);
            s.handle_input(at(950), b, b"HELLO 1 c1 100 bb\n");
            drain(&mut s, at(950), &mut batch);
            while let Some(next) = s.poll_timeout().filter(|&t| t <= at(60_000).mono) {
                let now = Now {
                    mono: next,
                    unix: origin.unix,
                };
                s.handle_timeout(now);
                drain(&mut s, now, &mut batch);
            }
            let down = |t: &[Transition]| t.iter().any(|t| t.to == Liveness::Down);
            assert!(down(&transitions), "{kind}: {transitions:?}");
            let mut replay = Replay::new(
                DetectorConfig::new(kind),
                vec![Duration::from_millis(100)],
                origin.mono,
            );
            replay.feed(&batch);
            assert_eq!(replay.finish(at(60_000).mono), transitions, "{kind}");
        }
    }

    /// Each client sends at its own interval over a link of its own latency, as in the turmoil
    /// world.
    #[test]
    fn clients_keep_their_own_interval_and_latency() {
        let text = r#"
            duration = "30s"
            [[client]]
            interval = "200ms"
            latency = "5ms"
            [[client]]
            interval = "1s"
            latency = "30ms"
        "#;
        let spec = Spec::parse("t.toml", "t", text, Source::File("t.toml".into())).unwrap();
        let sc = spec.expand(&Params::seed(1)).unwrap();
        let run = Engine::new(&sc, sc.server_config(), false)
            .unwrap()
            .run(&mut |_| {}, None);
        let row = |id: &str| {
            run.report
                .clients
                .iter()
                .find(|c| c.client.to_string() == id)
                .unwrap()
        };
        let (c1, c2) = (row("c1"), row("c2"));
        assert_eq!(c1.delay_ms.unwrap().max_ms, 5.0);
        assert_eq!(c2.delay_ms.unwrap().max_ms, 30.0);
        assert_eq!(c1.inter_arrival_ms.unwrap().max_ms, 200.0);
        assert_eq!(c2.inter_arrival_ms.unwrap().max_ms, 1000.0);
        // About 5 times as many heartbeats from the faster client.
        assert!(
            c1.received > 4 * c2.received,
            "{} {}",
            c1.received,
            c2.received
        );
    }
}
