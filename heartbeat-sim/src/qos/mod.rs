//! Failure detector quality of service, measured against the simulation's ground truth.
//!
//! `heartbeat-sim qos` runs a QoS scenario over many seeds for each detector setting and reports
//! Chen, Toueg and Aguilera's metrics ([`metrics`]): detection time T_D, mistake rate λ_M,
//! mistake duration T_M and query accuracy probability P_A.
//!
//! # Engines
//! turmoil steps every host every tick, far too slow for a simulated week. The QoS runs use the
//! [event-driven engine](engine): the same `heartbeat-core` client and server machines, the
//! same [`Scenario`] values, latency model and seeds as the turmoil world, with a clock that
//! jumps to the next due event. Two ways to run it ([`EngineKind`]):
//! - `machine`: one full simulation per seed and detector setting, each with its own server.
//! - `replay` (the default): one full simulation per seed, whose server runs the first setting;
//!   the arrivals it recorded are replayed into every setting's detector through the server's
//!   own liveness machine ([`replay`], `heartbeat_core::liveness`). Arrivals do not depend on the detector, so this gives
//!   every client the same transitions as `machine` (every run checks it for the first setting,
//!   and a test for all), several times faster.
//!
//! # Scenarios
//! The QoS scenarios are built as [`Scenario`] values (the turmoil world can run them too); v1
//! clients send every `interval` (100 ms by default: 10 Hz, as in the φ paper), the latency is
//! the simulator's model (1-50 ms by default), and schedules scale with the interval:
//! - `steady-jitter`: no faults. Every suspicion is a mistake.
//! - `crash`: each client crashes silently (the host dies: no FIN, in-flight heartbeats lost)
//!   after U(20 s, 60 s) up, stays dead U(10 s, 20 s), then restarts as a new process, again and
//!   again. Each crash is one detection-time sample.
//! - `partition`: each client's link is cut after U(20 s, 60 s), for U(3 s, 15 s), then
//!   repaired, again and again. The stream is lost (turmoil 0.7.2 has no retransmission): the
//!   client notices by its ack timeout and reconnects with backoff. Suspicions from the cut until
//!   the first heartbeat after the repair are correct; outside, they are mistakes.

pub mod cli;
pub mod engine;
pub mod metrics;
pub mod replay;
pub mod table;

use std::ops::Range;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::SmallRng;

use heartbeat_core::config::ServerConfig;
use heartbeat_core::detector::DetectorConfig;
use heartbeat_memnet::seed::schedule_seed;

use crate::scenario::{
    Action, ClientPlan, Latency, Node, Params, Scenario, Source, TICK, Timed, between, lookup,
};
use engine::{ClientTruth, Engine, TraceBatch, Transition};
use metrics::{Summary, Tally};
use replay::Replay;

/// The QoS scenarios: name and one line.
pub const QOS_SCENARIOS: &[(&str, &str)] = &[
    (
        "steady-jitter",
        "a steady link with jitter and no failures: every suspicion is a mistake",
    ),
    (
        "crash",
        "clients crash silently at random times and restart: detection time of each crash",
    ),
    (
        "partition",
        "a client's link is cut and repaired at random times: suspicions during the cut are \
         correct, mistakes outside it are counted",
    ),
];

/// The default heartbeat interval of the QoS scenarios (10 Hz, as in the φ paper).
pub const QOS_INTERVAL: Duration = Duration::from_millis(100);

/// What a QoS scenario is expanded from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QosParams {
    /// Seeds the schedule and the network.
    pub seed: u64,
    /// Simulated time.
    pub duration: Duration,
    /// Heartbeat interval of every client.
    pub interval: Duration,
    /// Number of clients; `None` for the scenario's default (1, 4, 2).
    pub clients: Option<usize>,
    /// Link latency.
    pub latency: Latency,
}

impl QosParams {
    /// Defaults (10 minutes, 100 ms, the scenario's clients, 1-50 ms) with `seed`.
    pub fn seed(seed: u64) -> Self {
        Self {
            seed,
            duration: Duration::from_secs(600),
            interval: QOS_INTERVAL,
            clients: None,
            latency: Latency::default(),
        }
    }
}

/// Expands QoS scenario `name` (see [`QOS_SCENARIOS`]).
pub fn scenario(name: &str, p: &QosParams) -> Result<Scenario, String> {
    let name = lookup(QOS_SCENARIOS, "QoS scenario", name)?;
    let iv = p.interval;
    // Schedules are in seconds at 10 Hz and never shorter than so many intervals.
    let span = |secs: u64, intervals: u32| Duration::from_secs(secs).max(iv * intervals);
    let (up, dead, cut) = (
        (span(20, 200), span(60, 600)),
        (span(10, 100), span(20, 200)),
        (span(3, 30), span(15, 150)),
    );
    let default_clients = match name {
        "crash" => 4,
        "partition" => 2,
        _ => 1,
    };
    let n = p.clients.unwrap_or(default_clients);
    if n == 0 || n > 64 {
        return Err(format!("QoS scenarios take 1 to 64 clients, got {n}"));
    }
    let shortest = match name {
        "crash" => up.0 + dead.0,
        "partition" => up.0 + cut.0,
        _ => iv * 10,
    };
    if p.duration < shortest {
        return Err(format!(
            "duration {:?} too short: {name} needs at least {:?} at this interval",
            p.duration, shortest
        ));
    }
    let mut actions = Vec::new();
    for i in 0..n {
        // One schedule RNG per client, so adding clients does not move the others' faults.
        let mut rng = SmallRng::seed_from_u64(schedule_seed(p.seed, i));
        // Up for U(up), then the fault for U(down), then the fault's end, again and again.
        let (fault, end, down) = match name {
            "crash" => (
                Action::SilentCrash(Node::Client(i)),
                Action::Bounce(Node::Client(i)),
                dead,
            ),
            "partition" => (Action::Partition(i), Action::Repair(i), cut),
            _ => continue,
        };
        let mut t = between(&mut rng, up.0, up.1);
        while t + down.0 <= p.duration {
            actions.push(Timed {
                at: t,
                action: fault.clone(),
            });
            let back = t + between(&mut rng, down.0, down.1);
            if back >= p.duration {
                break;
            }
            actions.push(Timed {
                at: back,
                action: end.clone(),
            });
            t = back + between(&mut rng, up.0, up.1);
        }
    }
    actions.sort_by_key(|t| t.at);
    let summary = QOS_SCENARIOS
        .iter()
        .find(|(n, _)| *n == name)
        .map_or("", |(_, d)| d);
    Ok(Scenario {
        name: name.to_owned(),
        summary: summary.to_owned(),
        source: Source::Builtin,
        params: Params {
            seed: p.seed,
            duration: Some(p.duration),
            clients: Some(n),
            latency: Some(p.latency),
            tick: None,
        },
        latency: p.latency,
        detector: None,
        tick: TICK,
        late: Vec::new(),
        clients: (0..n)
            .map(|i| ClientPlan::numbered(i, iv, p.latency))
            .collect(),
        actions,
        duration: p.duration,
        drain: Duration::ZERO,
        expect: Vec::new(),
    })
}

/// How the detectors are run; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineKind {
    /// One full machine simulation per seed and setting.
    Machine,
    /// One full machine simulation per seed, replayed into every setting.
    Replay,
}

impl EngineKind {
    /// `machine` or `replay`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Machine => "machine",
            Self::Replay => "replay",
        }
    }
}

/// The label of a detector setting: its kind and the parameters that differ from the kind's
/// defaults (`phi`, `phi threshold=12`).
pub fn label(config: &DetectorConfig) -> String {
    let defaults = DetectorConfig::new(config.kind()).to_string();
    let defaults: Vec<&str> = defaults.split_whitespace().collect();
    let shown = config.to_string();
    let mut words = shown.split_whitespace();
    let mut out = words.next().unwrap_or_default().to_owned();
    for w in words.filter(|w| !defaults.contains(w)) {
        out.push(' ');
        out.push_str(w);
    }
    out
}

/// One QoS study: a scenario over seeds, for several detector settings.
#[derive(Clone, Debug)]
pub struct Study {
    /// The QoS scenario.
    pub scenario: String,
    /// Seeds, `A..B`.
    pub seeds: Range<u64>,
    /// The scenario parameters (the seed is replaced by each of `seeds`).
    pub params: QosParams,
    /// The detector settings, in the order of the table.
    pub settings: Vec<DetectorConfig>,
    /// How to run them.
    pub engine: EngineKind,
    /// Threads.
    pub jobs: usize,
}

/// One row of the result.
#[derive(Clone, Debug)]
pub struct Row {
    /// The setting.
    pub setting: DetectorConfig,
    /// Its metrics.
    pub summary: Summary,
}

impl Row {
    /// One row per setting, in order, each with its tally's summary.
    pub(crate) fn all(settings: &[DetectorConfig], tallies: &[Tally]) -> Vec<Self> {
        settings
            .iter()
            .zip(tallies)
            .map(|(setting, t)| Self {
                setting: setting.clone(),
                summary: t.summary(),
            })
            .collect()
    }
}

/// What a study measured.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The study.
    pub study: Study,
    /// One row per setting, in order.
    pub rows: Vec<Row>,
    /// Heartbeats sent, per seed summed (one simulation's worth per seed).
    pub heartbeats: u64,
    /// Client processes' crashes (per seed summed).
    pub crashes: u64,
}

/// One seed's result for one setting.
struct SeedRun {
    seed: u64,
    setting: usize,
    transitions: Vec<Transition>,
    truth: Arc<Vec<ClientTruth>>,
    end: Duration,
    sent: u64,
}

/// Runs a study. `progress(done, total)` is called on the calling thread now and then, with
/// simulated milliseconds.
pub fn run(study: &Study, progress: impl FnMut(u64, u64)) -> Result<Outcome, String> {
    run_configured(study, &server_config, progress)
}

/// [`run`], with each setting's server configured by `configure` instead of [`server_config`]
/// (a QoS target, `ServerConfig::qos_target`, is one). Only the `machine` engine runs a server
/// per setting; the `replay` engine runs `configure` for the first setting and replays its
/// arrivals into plain detectors, so it is for configurations that only choose the detector.
pub fn run_configured(
    study: &Study,
    configure: &(dyn Fn(&DetectorConfig) -> ServerConfig + Sync),
    mut progress: impl FnMut(u64, u64),
) -> Result<Outcome, String> {
    if study.settings.is_empty() {
        return Err("no detector settings".into());
    }
    // Fail fast on bad parameters, before starting threads.
    let probe = scenario(&study.scenario, &study.params)?;
    let per_run = (probe.duration + probe.drain).as_millis() as u64;
    let seeds: Vec<u64> = study.seeds.clone().collect();
    let units: Vec<(u64, Option<usize>)> = match study.engine {
        EngineKind::Machine => seeds
            .iter()
            .flat_map(|&s| (0..study.settings.len()).map(move |k| (s, Some(k))))
            .collect(),
        EngineKind::Replay => seeds.iter().map(|&s| (s, None)).collect(),
    };
    let total = per_run * units.len() as u64;
    let jobs = study.jobs.max(1);
    // With fewer seeds than threads, each replayed seed gets helper threads for its replays.
    let helpers = if study.engine == EngineKind::Replay && units.len() < jobs {
        (jobs / units.len())
            .saturating_sub(1)
            .min(study.settings.len())
    } else {
        0
    };
    let done = AtomicU64::new(0);
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel::<Result<Vec<SeedRun>, String>>();
    let mut results: Vec<SeedRun> = Vec::new();
    let mut failure = None;
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(units.len()) {
            let tx = tx.clone();
            let (units, next, done) = (&units, &next, &done);
            scope.spawn(move || {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(seed, setting)) = units.get(k) else {
                        break;
                    };
                    let r = run_unit(study, configure, seed, setting, helpers, done);
                    let failed = r.is_err();
                    if tx.send(r).is_err() || failed {
                        break;
                    }
                }
            });
        }
        drop(tx);
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(Ok(runs)) => results.extend(runs),
                Ok(Err(e)) => {
                    failure.get_or_insert(e);
                    // Let the others run out of work.
                    next.store(units.len(), Ordering::Relaxed);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            progress(done.load(Ordering::Relaxed).min(total), total);
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    progress(total, total);
    results.sort_by_key(|r| (r.seed, r.setting));
    let mut tallies = vec![Tally::default(); study.settings.len()];
    let mut heartbeats = 0;
    let mut crashes = 0;
    for r in &results {
        tallies[r.setting].add_run(&r.transitions, &r.truth, r.end);
        if r.setting == 0 {
            heartbeats += r.sent;
            crashes += r.truth.iter().map(|t| t.crashes.len() as u64).sum::<u64>();
        }
    }
    Ok(Outcome {
        study: study.clone(),
        rows: Row::all(&study.settings, &tallies),
        heartbeats,
        crashes,
    })
}

/// The server configuration of a QoS run: the defaults with `detector`, and intervals from 1 ms.
pub fn server_config(detector: &DetectorConfig) -> ServerConfig {
    // Any interval the wire carries (`--interval 1`): the simulated clients are honest, and the
    // production minimum protects a real server from floods, which is not measured here.
    ServerConfig::default()
        .detector(detector.clone())
        .min_interval(Duration::from_millis(1))
        .expect("1 ms is a valid minimum interval")
}

/// Runs one seed: for `Some(setting)` one machine run; for `None` one machine run with the first
/// setting, replayed into all (on `helpers` extra threads when given).
fn run_unit(
    study: &Study,
    configure: &(dyn Fn(&DetectorConfig) -> ServerConfig + Sync),
    seed: u64,
    setting: Option<usize>,
    helpers: usize,
    done: &AtomicU64,
) -> Result<Vec<SeedRun>, String> {
    let params = QosParams {
        seed,
        ..study.params.clone()
    };
    let sc = scenario(&study.scenario, &params)?;
    let fail = |e: String| format!("{} seed {seed}: {e}", study.scenario);
    if let Some(k) = setting {
        let engine = Engine::new(&sc, configure(&study.settings[k]), false).map_err(fail)?;
        let run = engine.run(&mut |_| {}, Some(done));
        return Ok(vec![SeedRun {
            seed,
            setting: k,
            transitions: run.transitions,
            truth: Arc::new(run.truth),
            end: run.end,
            sent: run.sent,
        }]);
    }
    let engine = Engine::new(&sc, configure(&study.settings[0]), true).map_err(fail)?;
    let origin = engine.origin();
    let intervals: Vec<Duration> = sc.clients.iter().map(|c| c.interval).collect();
    let new_replay = |c: &DetectorConfig| Replay::new(c.clone(), intervals.clone(), origin);
    let (run, transitions) = if helpers == 0 {
        let mut replays: Vec<Replay> = study.settings.iter().map(new_replay).collect();
        let run = engine.run(
            &mut |b| replays.iter_mut().for_each(|r| r.feed(b)),
            Some(done),
        );
        let end = run.origin + run.end;
        let t: Vec<Vec<Transition>> = replays.into_iter().map(|r| r.finish(end)).collect();
        (run, t)
    } else {
        // The machine run on this thread; the replays on `helpers` threads, each fed every
        // batch of the trace.
        let groups: Vec<Vec<usize>> = (0..helpers)
            .map(|h| (h..study.settings.len()).step_by(helpers).collect())
            .collect();
        std::thread::scope(|scope| {
            let mut senders = Vec::new();
            let mut handles = Vec::new();
            for g in &groups {
                let (btx, brx) = mpsc::sync_channel::<Arc<TraceBatch>>(16);
                senders.push(btx);
                let mut replays: Vec<Replay> =
                    g.iter().map(|&k| new_replay(&study.settings[k])).collect();
                handles.push(scope.spawn(move || {
                    for b in brx {
                        replays.iter_mut().for_each(|r| r.feed(&b));
                    }
                    replays
                }));
            }
            let run = engine.run(
                &mut |b| {
                    let batch = Arc::new(std::mem::take(b));
                    for s in &senders {
                        // A helper that is gone panicked; the join below reports it.
                        let _ = s.send(batch.clone());
                    }
                },
                Some(done),
            );
            drop(senders);
            let mut t: Vec<Option<Vec<Transition>>> = vec![None; study.settings.len()];
            let end = run.origin + run.end;
            for (g, h) in groups.iter().zip(handles) {
                let replays = h
                    .join()
                    .map_err(|_| fail("a replay thread panicked".into()))?;
                for (&k, r) in g.iter().zip(replays) {
                    t[k] = Some(r.finish(end));
                }
            }
            Ok::<_, String>((run, t.into_iter().map(Option::unwrap_or_default).collect()))
        })?
    };
    if engine::per_client(&transitions[0]) != engine::per_client(&run.transitions) {
        return Err(fail(format!(
            "the replay of {} diverged from the machine run ({} against {} transitions)",
            label(&study.settings[0]),
            transitions[0].len(),
            run.transitions.len()
        )));
    }
    let truth = Arc::new(run.truth);
    Ok(transitions
        .into_iter()
        .enumerate()
        .map(|(k, transitions)| SeedRun {
            seed,
            setting: k,
            transitions,
            truth: truth.clone(),
            end: run.end,
            sent: run.sent,
        })
        .collect())
}

/// The grid of `--grid`: each of `base` varied along its main parameters
/// ([`DetectorConfig::qos_grid`], the core's table). Duplicates are dropped.
pub fn grid(base: &[DetectorConfig]) -> Vec<DetectorConfig> {
    let mut out: Vec<DetectorConfig> = Vec::new();
    for p in base.iter().flat_map(DetectorConfig::qos_grid) {
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use heartbeat_core::detector::DetectorKind;

    #[test]
    fn schedules_alternate_and_stay_inside_the_run() {
        for (name, _) in QOS_SCENARIOS {
            for seed in 0..50 {
                let p = QosParams::seed(seed);
                let s = scenario(name, &p).unwrap();
                assert_eq!(s, scenario(name, &p).unwrap(), "{name}");
                assert!(s.actions.windows(2).all(|w| w[0].at <= w[1].at));
                assert!(s.actions.iter().all(|t| t.at < s.duration));
                for i in 0..s.clients.len() {
                    let mine: Vec<&Action> = s
                        .actions
                        .iter()
                        .filter(|t| match t.action {
                            Action::SilentCrash(Node::Client(c))
                            | Action::Bounce(Node::Client(c))
                            | Action::Partition(c)
                            | Action::Repair(c) => c == i,
                            _ => false,
                        })
                        .map(|t| &t.action)
                        .collect();
                    // Fault, recovery, fault, ...: never two faults in a row.
                    for (k, a) in mine.iter().enumerate() {
                        let fault = matches!(a, Action::SilentCrash(_) | Action::Partition(_));
                        assert_eq!(fault, k % 2 == 0, "{name} seed {seed}: {mine:?}");
                    }
                    match *name {
                        "steady-jitter" => assert!(mine.is_empty()),
                        _ => assert!(!mine.is_empty(), "{name} seed {seed}"),
                    }
                }
            }
        }
        assert!(scenario("nope", &QosParams::seed(1)).is_err());
        let short = QosParams {
            duration: Duration::from_secs(10),
            ..QosParams::seed(1)
        };
        assert!(scenario("crash", &short).is_err());
        assert!(scenario("steady-jitter", &short).is_ok());
    }

    #[test]
    fn labels_show_what_differs_from_the_defaults() {
        let settings = grid(&DetectorKind::ALL.map(DetectorConfig::new));
        let labels: Vec<String> = settings.iter().map(label).collect();
        assert_eq!(
            labels,
            [
                "chen alpha=0.5x",
                "chen",
                "chen alpha=2x",
                "fixed grace=1x",
                "fixed",
                "fixed grace=4x",
                "phi threshold=4",
                "phi",
                "phi threshold=12",
                "phi acceptable-pause=0s",
                "phi acceptable-pause=1s",
                "phi-exp threshold=4",
                "phi-exp",
                "phi-exp threshold=12",
            ]
        );
    }
}
