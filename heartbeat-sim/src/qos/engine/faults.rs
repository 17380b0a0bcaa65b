//! The scenario's actions on the network, and what each means for the ground truth.

use std::net::SocketAddr;
use std::sync::Arc;

use heartbeat_core::ClientKey;
use heartbeat_core::config::{ClientConfig, ServerConfig};
use heartbeat_core::server::Server;

use super::trace::{Recorder, TraceItem};
use super::truth::Truth;
use crate::scenario::{Action, Latency, Node, Scenario};
use heartbeat_memnet::seed::{client_seeds, link_seeds};
use heartbeat_memnet::{Net, Observer, Way};

/// What the faults tell as they act: the network's observer, which also keeps the ground truth
/// and the trace (the engine's witness).
pub(super) trait Witnessing: Observer {
    /// The ground truth of every client's reachability.
    fn truth(&mut self) -> &mut Truth;
    /// The trace that replays feed to other detectors.
    fn trace(&mut self) -> &mut Recorder;
}

/// What a run plays: the scenario, and the machines' configurations it implies.
#[derive(Debug)]
pub(super) struct Plan<'s> {
    pub(super) scenario: &'s Scenario,
    pub(super) server_config: Arc<ServerConfig>,
    /// Each client's configuration, before its per-process session and seed.
    configs: Vec<ClientConfig>,
    /// The key the server knows each client by.
    pub(super) keys: Vec<ClientKey>,
}

impl<'s> Plan<'s> {
    /// The plan of `scenario` with `server_config`; `Err` for a client the core rejects.
    pub(super) fn new(scenario: &'s Scenario, server_config: ServerConfig) -> Result<Self, String> {
        let mut configs = Vec::new();
        let mut keys = Vec::new();
        for plan in &scenario.clients {
            if plan.legacy {
                // The engine's ground truth follows clients by identity; a legacy client has
                // none on the wire (the server keys it by peer address).
                return Err(format!(
                    "{}: legacy clients are not supported by the event-driven engine",
                    plan.id
                ));
            }
            let config = plan.config()?;
            keys.push(ClientKey::Id(config.id().clone()));
            configs.push(config);
        }
        Ok(Self {
            scenario,
            server_config: Arc::new(server_config),
            configs,
            keys,
        })
    }

    /// Adds every client's host to `net`, with its link's latency and per-client seeds.
    pub(super) fn add_hosts(&self, net: &mut Net) {
        let seed = self.scenario.params.seed;
        for (i, plan) in self.scenario.clients.iter().enumerate() {
            let addr = SocketAddr::from(([10, 0, (i / 250) as u8, 1 + (i % 250) as u8], 49_152));
            let (up, down) = link_seeds(seed, i);
            net.add_client(addr, plan.latency, up, down);
        }
    }

    /// Applies one of the scenario's actions now.
    pub(super) fn apply(&self, net: &mut Net, w: &mut impl Witnessing, action: &Action) {
        let at = net.elapsed();
        match *action {
            Action::Bounce(Node::Client(i)) => {
                crash_client(net, w, i, false);
                self.start_client(net, w, i);
            }
            Action::Bounce(Node::Server) => {
                crash_server(net, w, false);
                self.start_server(net, w);
            }
            Action::Crash(Node::Client(i)) => crash_client(net, w, i, false),
            Action::Crash(Node::Server) => crash_server(net, w, false),
            Action::SilentCrash(Node::Client(i)) => crash_client(net, w, i, true),
            Action::SilentCrash(Node::Server) => crash_server(net, w, true),
            Action::Hold(i) => {
                w.truth().unreachable(i, at);
                net.hold(i, Way::Both);
            }
            Action::Release(i) => release(net, w, i),
            Action::Latency(i, d) => net.set_latency(i, Latency::Fixed(d)),
            Action::Partition(i) => {
                w.truth().unreachable(i, at);
                net.partition(i, Way::Both);
            }
            Action::Repair(i) => repair(net, w, i),
            Action::Start(i) => {
                if net.client(i).is_none() && net.processes(i) == 0 {
                    self.start_client(net, w, i);
                }
            }
            Action::Stop(i) => {
                w.truth().unreachable(i, at);
                net.close_client(i, w);
            }
        }
    }

    /// The end of the fault phase: every link released and repaired, the server restarted if
    /// it is down (as `world::run` does).
    pub(super) fn heal(&self, net: &mut Net, w: &mut impl Witnessing) {
        for i in 0..net.client_count() {
            release(net, w, i);
            repair(net, w, i);
        }
        if net.server().is_none() {
            self.start_server(net, w);
        }
    }

    /// Starts a server process. After a restart every client is unknown to it: reachable again
    /// from its next heartbeat, if alive and in reach.
    pub(super) fn start_server(&self, net: &mut Net, w: &mut impl Witnessing) {
        net.start_server(Server::new(self.server_config.clone()));
        if net.server_processes() > 1 {
            w.trace().push(
                net.now().mono,
                TraceItem::ServerRestart { at: net.now().mono },
            );
            for i in 0..net.client_count() {
                if net.is_alive(i) && in_reach(net, i) {
                    w.truth().set_awaiting(i, true);
                }
            }
        }
    }

    /// Starts client `i`'s next process: a new session nonce and backoff seed per process, as
    /// the turmoil world gives them.
    pub(super) fn start_client(&self, net: &mut Net, w: &mut impl Witnessing, i: usize) {
        let seed = self.scenario.params.seed;
        let process = u64::from(net.processes(i));
        let seeds = client_seeds(seed, i, process);
        let config = self.configs[i]
            .clone()
            .session(seeds.session)
            .rng_seed(seeds.rng);
        w.truth().set_awaiting(i, in_reach(net, i));
        net.start_client(i, config, w);
    }
}

/// True when client `i`'s path is neither cut nor held and a server runs.
fn in_reach(net: &Net, i: usize) -> bool {
    !net.is_cut(i) && !net.is_held(i) && net.server().is_some()
}

/// Crashes client `i`: cleanly (FIN after what is in flight) or silently (in-flight lost).
fn crash_client(net: &mut Net, w: &mut impl Witnessing, i: usize, silent: bool) {
    if net.is_alive(i) {
        w.truth().crashed(i, net.elapsed());
    }
    net.crash_client(i, silent);
}

fn crash_server(net: &mut Net, w: &mut impl Witnessing, silent: bool) {
    if net.server().is_none() {
        return;
    }
    let at = net.elapsed();
    for i in 0..net.client_count() {
        w.truth().unreachable(i, at);
    }
    net.crash_server(silent);
}

fn release(net: &mut Net, w: &mut impl Witnessing, i: usize) {
    let was_held = net.is_held(i);
    net.release(i);
    back_in_reach(net, w, i, was_held);
}

fn repair(net: &mut Net, w: &mut impl Witnessing, i: usize) {
    let was_cut = net.is_cut(i);
    net.repair(i);
    back_in_reach(net, w, i, was_cut);
}

fn back_in_reach(net: &Net, w: &mut impl Witnessing, i: usize, was_out: bool) {
    if was_out && net.is_alive(i) && in_reach(net, i) {
        w.truth().set_awaiting(i, true);
    }
}
