//! Builds the turmoil world for a scenario and runs it with a `step()` loop: the fault phase
//! (the scenario's actions at their times), then heal-and-drain, then the server's report.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use tokio::sync::watch;

use heartbeat_core::analysis::Report;
use heartbeat_core::server::{Event, Server};
use heartbeat_core::{ClientKey, DisconnectReason};
use heartbeat_memnet::seed::client_seeds;

use super::host;
pub use super::kernel::Tcp;
use super::kernel::{Kernel, Links};
use super::log::{Entry, Log, Record};
use super::net::SERVER;
use crate::scenario::{Action, ClientPlan, EPOCH_SECS, Node, Scenario};

/// What became of a client by the end of the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Running at the end: it must be back and counted after heal-and-drain.
    Alive,
    /// Crashed and not restarted: the server must have noticed.
    Dead,
    /// Its process gave up on its own (its connection failed or ended, and it does not
    /// reconnect): the server must not have it up.
    Exited,
    /// Never started.
    Idle,
    /// Stopped cleanly (it said goodbye).
    Stopped,
}

impl Fate {
    /// Each client's fate when a run of `s` starts: alive, or idle until its late start.
    pub fn at_start(s: &Scenario) -> Vec<Self> {
        s.clients
            .iter()
            .map(|c| {
                if c.starts_late {
                    Self::Idle
                } else {
                    Self::Alive
                }
            })
            .collect()
    }
}

/// Everything a run produced.
#[derive(Debug)]
pub struct Outcome {
    /// The scenario that ran.
    pub scenario: Scenario,
    /// Every observation, sorted by time (stable).
    pub log: Vec<Entry>,
    /// The last server incarnation's report at the end of the drain.
    pub report: Report,
    /// Each client's host address.
    pub client_ips: Vec<IpAddr>,
    /// Each client's fate.
    pub fates: Vec<Fate>,
    /// When the heal-and-drain phase began.
    pub heal_at: Duration,
    /// When the run ended (the report's time).
    pub end: Duration,
    /// Simulation steps taken.
    pub steps: u64,
}

struct ClientSignals {
    start: watch::Sender<bool>,
    stop: watch::Sender<bool>,
}

/// Runs `scenario` to the end on Linux's TCP as [`super::kernel`] models it. `Err` when
/// turmoil itself fails (a host panicked or errored).
pub fn run(scenario: &Scenario) -> Result<Outcome, String> {
    run_with(scenario, Tcp::Kernel)
}

/// Runs `scenario` to the end on `tcp` ([`run`] runs the kernel's).
pub fn run_with(scenario: &Scenario, tcp: Tcp) -> Result<Outcome, String> {
    let s = scenario;
    let log = Arc::new(Mutex::new(Log::default()));
    let kernel = Kernel::shared();
    let latency = s.latency;
    let total = s.duration + s.drain;
    let mut sim = turmoil::Builder::new()
        .rng_seed(s.params.seed)
        .epoch(UNIX_EPOCH + Duration::from_secs(EPOCH_SECS))
        .tick_duration(s.tick)
        // Never the limit: the step loop decides when the run ends.
        .simulation_duration(total + Duration::from_secs(3600))
        .min_message_latency(latency.min())
        .max_message_latency(latency.max())
        // Room for long holds and for every client's SYN at once.
        .tcp_capacity(4096)
        .build();

    // The server first, so it is 192.168.0.1; then the clients in order. Registration order is
    // part of the seed (each host's RNG is drawn from the world's at registration).
    let (server_stop, server_slot) = add_server(&mut sim, s, &log, &kernel);
    let signals = s
        .clients
        .iter()
        .enumerate()
        .map(|(i, plan)| add_client(&mut sim, s, i, plan, &log, &kernel))
        .collect::<Result<Vec<_>, _>>()?;
    let names: Vec<String> = s.clients.iter().map(|c| c.id.clone()).collect();
    let client_ips: Vec<IpAddr> = names.iter().map(|n| sim.lookup(n.as_str())).collect();
    let mut links = Links::new(tcp, kernel, client_ips.clone());
    // A client's own latency, on its link only (turmoil: min = max first, then the max).
    for plan in s.clients.iter().filter(|c| c.latency != latency) {
        sim.set_link_latency(plan.id.as_str(), SERVER, plan.latency.min());
        sim.set_link_max_message_latency(plan.id.as_str(), SERVER, plan.latency.max());
    }

    let mut steps = 0u64;
    let mut step = |sim: &mut turmoil::Sim<'_>, links: &mut Links| -> Result<(), String> {
        steps += 1;
        links.step(sim, sim.elapsed());
        sim.step().map(|_| ()).map_err(|e| e.to_string())
    };
    let record = |at: Duration, r: Record| log.lock().expect("log lock").push(at, r);

    // Fault phase.
    let mut fates = Fate::at_start(s);
    let mut actions = s.actions.iter().peekable();
    while sim.elapsed() < s.duration {
        while let Some(t) = actions.next_if(|t| t.at <= sim.elapsed()) {
            record(sim.elapsed(), Record::Action(t.action.clone()));
            apply(&mut sim, &mut links, &t.action, &signals);
            if let Some((i, fate)) = fate_after(&t.action) {
                fates[i] = fate;
            }
        }
        step(&mut sim, &mut links)?;
    }

    // Heal and drain: every link healed (a firewall's held segments delivered at once, a
    // partition's at their next retransmission), the server restarted if it is down; crashed
    // clients stay dead.
    let heal_at = sim.elapsed();
    for i in 0..names.len() {
        links.release(&sim, i);
        links.repair(&sim, i, heal_at);
    }
    let restarted_server = !sim.is_host_running(SERVER);
    if restarted_server {
        links.server_restarted(&mut sim, heal_at);
    }
    record(heal_at, Record::Heal { restarted_server });
    while sim.elapsed() < heal_at + s.drain {
        step(&mut sim, &mut links)?;
    }
    let end = sim.elapsed();

    // Take the report: the server's driver hands the machine back when told to stop.
    record(end, Record::Stop);
    server_stop.send_replace(true);
    let mut waited = 0;
    while server_slot.borrow().is_none() {
        step(&mut sim, &mut links)?;
        waited += 1;
        if waited > 10_000 {
            return Err("the server did not stop within 10000 steps".into());
        }
    }
    let server = server_slot.borrow_mut().take().expect("checked above");
    drop(sim);

    let entries = std::mem::take(&mut log.lock().expect("log lock").entries);
    let (entries, report) = cut_at_stop(entries, server.report());
    gave_up(&entries, &mut fates);
    Ok(Outcome {
        scenario: s.clone(),
        log: entries,
        report,
        client_ips,
        fates,
        heal_at,
        end,
        steps,
    })
}

/// Registers the server's host, first, so it is 192.168.0.1. Returns its stop signal and the
/// slot its driver hands the machine back in when stopped.
fn add_server(
    sim: &mut turmoil::Sim<'_>,
    s: &Scenario,
    log: &Arc<Mutex<Log>>,
    kernel: &Arc<Mutex<Kernel>>,
) -> (watch::Sender<bool>, Rc<RefCell<Option<Server>>>) {
    let kernel = kernel.clone();
    let (stop, stop_rx) = watch::channel(false);
    let server_slot: Rc<RefCell<Option<Server>>> = Rc::new(RefCell::new(None));
    let log = log.clone();
    let slot = server_slot.clone();
    let incarnation = Rc::new(Cell::new(0u32));
    let config = Arc::new(s.server_config());
    sim.host(SERVER, move || {
        let inc = incarnation.replace(incarnation.get() + 1);
        host::server(
            inc,
            Server::new(config.clone()),
            log.clone(),
            kernel.clone(),
            slot.clone(),
            stop_rx.clone(),
        )
    });
    (stop, server_slot)
}

/// Registers client `i`'s host, as `plan` says. Each start of the host is a new process.
fn add_client(
    sim: &mut turmoil::Sim<'_>,
    s: &Scenario,
    i: usize,
    plan: &ClientPlan,
    log: &Arc<Mutex<Log>>,
    kernel: &Arc<Mutex<Kernel>>,
) -> Result<ClientSignals, String> {
    let kernel = kernel.clone();
    let (start, start_rx) = watch::channel(!plan.starts_late);
    let (stop, stop_rx) = watch::channel(false);
    let log = log.clone();
    let incarnation = Rc::new(Cell::new(0u32));
    let config = plan.config()?;
    let seed = s.params.seed;
    sim.host(plan.id.as_str(), move || {
        let inc = incarnation.replace(incarnation.get() + 1);
        // A new process: a new session nonce and a new jitter seed.
        let seeds = client_seeds(seed, i, u64::from(inc));
        let config = config.clone().session(seeds.session).rng_seed(seeds.rng);
        host::client(
            i,
            inc,
            config,
            log.clone(),
            kernel.clone(),
            start_rx.clone(),
            stop_rx.clone(),
        )
    });
    Ok(ClientSignals { start, stop })
}

/// The log and the report of a run as they stood at its end (the `Stop` record), sorted by time.
pub(crate) fn cut_at_stop(mut entries: Vec<Entry>, report: Report) -> (Vec<Entry>, Report) {
    let stop_at = entries
        .iter()
        .position(|e| matches!(e.record, Record::Stop))
        .expect("recorded before the stop");
    let after_stop = entries.split_off(stop_at);
    let report = report_before_stop(report, &after_stop);
    // On stop the server still handles what its connections had already read: those events
    // are part of the report. Its closing of every connection, and what the clients saw of it,
    // are not part of the run.
    entries.extend(after_stop.into_iter().filter(|e| match &e.record {
        Record::Server { event, .. } => !matches!(
            event,
            Event::Disconnected {
                reason: DisconnectReason::Local,
                ..
            }
        ),
        _ => false,
    }));
    // Hosts run one after the other within a step, each stamping sub-tick times: order by time,
    // keeping the observed order for equal times.
    entries.sort_by_key(|e| e.at);
    (entries, report)
}

/// The report as it stood when the run ended.
///
/// `heartbeat_net::run_server` closes every connection before it hands the server back, which
/// marks every connected client as not connected. The stop's own `disconnected` events (reason:
/// closed locally) name exactly those clients, so they are marked connected again; liveness
/// states and counts are untouched by closing.
fn report_before_stop(mut report: Report, after_stop: &[Entry]) -> Report {
    let closed: BTreeSet<&ClientKey> = after_stop
        .iter()
        .filter_map(|e| match &e.record {
            Record::Server {
                event:
                    Event::Disconnected {
                        client: Some(key),
                        reason: DisconnectReason::Local,
                        ..
                    },
                ..
            } => Some(key),
            _ => None,
        })
        .collect();
    for c in &mut report.clients {
        if closed.contains(&c.client) {
            c.connected = true;
        }
    }
    report
}

/// Marks `Exited` the clients still thought alive whose last process gave up on its own.
pub(crate) fn gave_up(entries: &[Entry], fates: &mut [Fate]) {
    let mut last: Vec<Option<u32>> = vec![None; fates.len()];
    let mut failed: Vec<Option<u32>> = vec![None; fates.len()];
    for e in entries {
        match e.record {
            Record::Started {
                node: Node::Client(i),
                incarnation,
            } => last[i] = Some(incarnation),
            Record::Exited {
                client,
                incarnation,
                failed: true,
            } => failed[client] = Some(incarnation),
            _ => {}
        }
    }
    for (i, fate) in fates.iter_mut().enumerate() {
        if *fate == Fate::Alive && last[i].is_some() && failed[i] == last[i] {
            *fate = Fate::Exited;
        }
    }
}

/// The client whose fate `action` decides, and that fate.
pub(crate) fn fate_after(action: &Action) -> Option<(usize, Fate)> {
    match *action {
        Action::Bounce(Node::Client(i)) | Action::Start(i) => Some((i, Fate::Alive)),
        Action::Crash(Node::Client(i)) | Action::SilentCrash(Node::Client(i)) => {
            Some((i, Fate::Dead))
        }
        Action::Stop(i) => Some((i, Fate::Stopped)),
        _ => None,
    }
}

/// Carries out `action` on the simulated world, links as the kernel model says
/// ([`super::kernel`]): a partition holds the link and its backlog comes through at the next
/// retransmission after the repair; a crash kills the process (its kernel closes its
/// connections); a silent crash stops the machine (nothing is sent, and a server that is down
/// answers no SYN until it is restarted).
fn apply(
    sim: &mut turmoil::Sim<'_>,
    links: &mut Links,
    action: &Action,
    signals: &[ClientSignals],
) {
    let now = sim.elapsed();
    match action {
        Action::Bounce(Node::Server) => links.server_restarted(sim, now),
        Action::Bounce(Node::Client(i)) => sim.bounce(links.client_ip(*i)),
        Action::Crash(Node::Server) => links.kill_server(sim),
        Action::Crash(Node::Client(i)) => sim.crash(links.client_ip(*i)),
        Action::Hold(i) => links.hold(sim, *i),
        Action::Latency(i, d) => sim.set_link_latency(links.client_ip(*i), SERVER, *d),
        Action::Partition(i) => links.partition(sim, *i, now),
        Action::Release(i) => links.release(sim, *i),
        Action::Repair(i) => links.repair(sim, *i, now),
        Action::SilentCrash(Node::Client(i)) => links.silent_crash_client(sim, *i, now),
        Action::SilentCrash(Node::Server) => links.silent_crash_server(sim, now),
        Action::Start(i) => {
            signals[*i].start.send_replace(true);
        }
        Action::Stop(i) => {
            signals[*i].stop.send_replace(true);
        }
    }
}
