//! `heartbeat-sim tune`: which detector settings suit a real server's clients, from what the
//! server logged.
//!
//! A production `heartbeat-server --json` log ([`ServerLog`]) holds every heartbeat's arrival
//! time. Which heartbeats arrive, and when, does not depend on the detector, so each client's
//! arrivals can be replayed into any detector setting, through the server's own liveness
//! machine: the log becomes a [`qos::replay`](crate::qos::replay) trace ([`TraceItem`]s, one
//! replay per client and setting), so tuning shares the replay, and through it
//! `heartbeat_core::liveness::Watches`, with the QoS engine. Nothing about liveness is decided
//! here.
//!
//! # What is measured
//! With no ground truth, Chen, Toueg and Aguilera's metrics are read from the trace itself:
//! - **Sessions.** A client is known alive from its first sign of life (its `HELLO`, which the
//!   replay watches it from as the server does, or else its first arrival) to the last arrival
//!   of each of its sessions. A session ends at a new session of the client (`restarted`: a new process), a
//!   goodbye (`transition` to `left`), an eviction, or a server restart; those gaps are not
//!   watched time, and nothing in them is a mistake or a detection.
//! - **Mistakes** are suspicions that begin inside a session: later heartbeats of the same
//!   session prove the client was alive (a paused process, a stalled or cut link that it
//!   survived). Their length T_M runs to the heartbeat that ends them. Suspicions after a
//!   session's last arrival are correct (the client did stop). Mistakes per hour are per hour of
//!   watched time (the sessions' total length), as the QoS tables count them
//!   ([`Tally`]).
//! - **Detection time** T_D, by Chen's method: a crash is assumed right after an arrival (a read
//!   of one or more heartbeats), at that arrival's server receive time; T_D is when the checks
//!   would have declared the client down had nothing arrived after it
//!   ([`Watches::convicts_at`](heartbeat_core::liveness::Watches::convicts_at)), minus that
//!   time. So it runs from the last sign of life. A real crash falls somewhere in the interval
//!   after the client's last send: measured from the crash, T_D is on average about half an
//!   interval shorter (plus the one-way delay). The crash points are every arrival, or a
//!   seeded sample of them (the same for every setting) when a client has more than
//!   `crash_points` arrivals.
//!
//! # What is recommended
//! Advice is judged like a detector: by the worst case of every class of client it applies to
//! ([`advice`]). Each distinct interval (as declared, or as estimated) is a class; a class's
//! T_D p99 and max are the worst of its clients' own (each client's p99 over its own crash
//! points, so a client with few arrivals counts as much as a busy one), and the fleet's are the
//! worst class's. Per class and for the fleet, the pick is the setting with the lowest T_D p99
//! (then max, then grid order) among those with no mistake at the chosen level (`down` unless
//! asked for `suspect`) and no undetected crash point. The server's defaults are always
//! measured, and every pick slower at p99 than the defaults for some class is named in
//! [`Advice::slower`].
//!
//! A stall of the server itself (`stalled`) is not a gap: the replay judges the arrival times
//! as logged, without the server's pause guard, so heartbeats a stalled server read late may
//! count as mistakes the real server did not make. The outcome counts the stalls.

pub mod advice;
pub mod cli;
pub mod render;
pub mod synthetic;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use heartbeat_core::Seq;
use heartbeat_core::detector::{DetectorConfig, DetectorKind};
use heartbeat_core::liveness::Liveness;

use crate::qos::engine::{ClientTruth, Period, TraceBatch, TraceItem};
use crate::qos::label;
use crate::qos::metrics::{Level, Summary, Tally};
use crate::qos::replay::Replay;
use crate::serverlog::{Item, ServerLog};

pub use advice::Advice;

/// Crash points per client by default: more arrivals than this are sampled.
pub const CRASH_POINTS: usize = 100_000;

/// Inter-arrival times a client's interval is estimated from, when it never declared one.
const ESTIMATE_FROM: usize = 1000;

/// Trace items per replay batch.
const BATCH: usize = 4096;

/// The settings tune replays for `kinds`, in the order given: each kind's
/// [`DetectorKind::tune_grid`] (the core's table: multiples of the client's interval where the
/// parameter scales with it). Duplicates are dropped.
pub fn grid(kinds: &[DetectorKind]) -> Vec<DetectorConfig> {
    let mut out: Vec<DetectorConfig> = Vec::new();
    for p in kinds.iter().flat_map(|k| k.tune_grid()) {
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// The `heartbeat-server` flags that select `config`: `--detector` and every parameter that
/// differs from the kind's default, e.g. `--detector chen --alpha 3x`.
pub fn server_flags(config: &DetectorConfig) -> String {
    let label = label(config);
    let mut words = label.split_whitespace();
    let mut out = format!("--detector {}", words.next().unwrap_or_default());
    for w in words {
        let (name, value) = w.split_once('=').unwrap_or((w, ""));
        out.push_str(&format!(" --{name} {value}"));
    }
    out
}

/// What to tune.
#[derive(Clone, Debug)]
pub struct Study {
    /// The settings, in the table's order.
    pub settings: Vec<DetectorConfig>,
    /// Only these clients (by name); all when empty.
    pub clients: Vec<String>,
    /// Crash points per client at most (0: every arrival).
    pub crash_points: usize,
    /// Seeds the crash-point sample.
    pub seed: u64,
    /// Threads.
    pub jobs: usize,
    /// The level at which a recommended setting makes no mistake (and whose detection time
    /// ranks it).
    pub level: Level,
}

/// One client as tuned.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientRow {
    /// Its name.
    pub name: String,
    /// The interval its detectors were built with.
    pub interval: Duration,
    /// True when it was estimated from arrivals (no declared interval in the log).
    pub estimated: bool,
    /// Heartbeats (duplicates included).
    pub heartbeats: u64,
    /// Arrivals (reads of one or more heartbeats).
    pub arrivals: u64,
    /// Crash points sampled.
    pub crash_points: u64,
    /// Watched time: its sessions' total length.
    pub watched: Duration,
}

/// One setting's result: Chen's metrics over every client (detection from the crash points),
/// the QoS lab's row.
pub use crate::qos::Row;

/// What tuning found.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// One row per setting, in the study's order, then the server's defaults if the study
    /// did not have them: every client's arrivals pooled.
    pub rows: Vec<Row>,
    /// The clients tuned, in the log's order.
    pub clients: Vec<ClientRow>,
    /// Per client (in [`Outcome::clients`]' order), per setting (in [`Outcome::rows`]' order):
    /// that client's own metrics.
    pub per_client: Vec<Vec<Summary>>,
    /// The index in [`Outcome::rows`] of the server's defaults (`--detector phi`), always
    /// measured.
    pub defaults: usize,
    /// Selected clients that could not be tuned: name and why (no interval known).
    pub left_out: Vec<(String, String)>,
    /// The advice: per class of clients and for the fleet.
    pub advice: Advice,
    /// Server runs in the log.
    pub runs: u64,
    /// Downs the server that wrote the log declared (its own detector, for comparison).
    pub server_downs: u64,
    /// Times the server that wrote the log was stalled (`stalled` events).
    pub stalls: u64,
}

impl Outcome {
    /// Heartbeats over every client.
    pub fn heartbeats(&self) -> u64 {
        self.clients.iter().map(|c| c.heartbeats).sum()
    }

    /// Arrivals over every client.
    pub fn arrivals(&self) -> u64 {
        self.clients.iter().map(|c| c.arrivals).sum()
    }

    /// Crash points over every client.
    pub fn crash_points(&self) -> u64 {
        self.clients.iter().map(|c| c.crash_points).sum()
    }

    /// Watched time over every client.
    pub fn watched(&self) -> Duration {
        self.clients.iter().map(|c| c.watched).sum()
    }
}

/// One step of a client's trace, times in ns since the log's origin.
#[derive(Clone, Debug)]
enum Step {
    Arrival { at: u64, seqs: std::ops::Range<u32> },
    Forget(u64),
    Hello(u64),
    Left(u64),
    Reset(u64),
    ServerRestart(u64),
}

/// One client's part of the log, ready to replay.
#[derive(Debug, Default)]
struct ClientTrace {
    client: u32,
    interval: Option<Duration>,
    estimated: bool,
    steps: Vec<Step>,
    seqs: Vec<Seq>,
    arrivals: u64,
    sessions: Vec<Period>,
    open: Option<Period>,
    /// Arrival indices that are crash points, as a bit set; `None`: all of them.
    sample: Option<Vec<u64>>,
    crash_points: u64,
}

impl ClientTrace {
    fn arrive(&mut self, at: u64, seq: u64) {
        let n = self.seqs.len() as u32;
        self.seqs.push(Seq(seq));
        match self.steps.last_mut() {
            Some(Step::Arrival { at: last, seqs }) if *last == at && seqs.end == n => {
                seqs.end += 1;
            }
            _ => {
                self.steps.push(Step::Arrival { at, seqs: n..n + 1 });
                self.arrivals += 1;
            }
        }
        let t = Duration::from_nanos(at);
        match &mut self.open {
            Some(p) => p.to = t,
            None => self.open = Some(Period { from: t, to: t }),
        }
    }

    /// A `HELLO` at `at`: the replay watches the client from it, and it opens a session.
    fn hello(&mut self, at: u64) {
        self.steps.push(Step::Hello(at));
        if self.open.is_none() {
            let t = Duration::from_nanos(at);
            self.open = Some(Period { from: t, to: t });
        }
    }

    fn end_session(&mut self) {
        self.sessions.extend(self.open.take());
    }

    fn is_crash_point(&self, k: u64) -> bool {
        self.sample
            .as_ref()
            .is_none_or(|bits| bits[(k / 64) as usize] & (1 << (k % 64)) != 0)
    }

    /// The interval estimated from the first inter-arrival times: their median.
    fn estimate_interval(&self) -> Option<Duration> {
        let mut gaps: Vec<u64> = Vec::new();
        let mut prev = None;
        for s in &self.steps {
            match *s {
                Step::Arrival { at, .. } => {
                    if let Some(p) = prev.filter(|&p| at > p) {
                        gaps.push(at - p);
                    }
                    prev = Some(at);
                    if gaps.len() >= ESTIMATE_FROM {
                        break;
                    }
                }
                _ => prev = None,
            }
        }
        gaps.sort_unstable();
        gaps.get(gaps.len() / 2).map(|&ns| Duration::from_nanos(ns))
    }

    /// Picks about `n` crash points among the arrivals (all when `n` is 0 or more than there
    /// are), each arrival with the same chance, from `seed`.
    fn choose_crash_points(&mut self, n: usize, seed: u64) {
        if n == 0 || self.arrivals <= n as u64 {
            self.crash_points = self.arrivals;
            return;
        }
        let p = n as f64 / self.arrivals as f64;
        let mut rng = SmallRng::seed_from_u64(seed ^ u64::from(self.client).rotate_left(32));
        let mut bits = vec![0u64; self.arrivals.div_ceil(64) as usize];
        for k in 0..self.arrivals {
            if rng.random::<f64>() < p {
                bits[(k / 64) as usize] |= 1 << (k % 64);
                self.crash_points += 1;
            }
        }
        self.sample = Some(bits);
    }
}

/// Splits the log into the selected clients' traces.
fn split(log: &ServerLog, selected: &[String]) -> Vec<ClientTrace> {
    let chosen: Vec<bool> = log
        .clients
        .iter()
        .map(|c| selected.is_empty() || selected.contains(&c.name))
        .collect();
    let mut traces: Vec<ClientTrace> = (0..log.clients.len())
        .map(|i| ClientTrace {
            client: i as u32,
            interval: log.clients[i].interval,
            ..ClientTrace::default()
        })
        .collect();
    for s in &log.items {
        let at = s.at_ns;
        if let Item::ServerRestart { previous_end_ns } = s.item {
            // The old run's checks stop at its last event: nothing is judged in the gap.
            let restart = (previous_end_ns + 1).min(at);
            for t in &mut traces {
                t.end_session();
                if !t.steps.is_empty() {
                    t.steps.push(Step::ServerRestart(restart));
                }
            }
            continue;
        }
        let Some(c) = s.item.client().filter(|&c| chosen[c as usize]) else {
            continue;
        };
        let t = &mut traces[c as usize];
        match s.item {
            Item::Beat { seq, .. } | Item::Duplicate { seq, .. } => t.arrive(at, seq),
            Item::Connected { hello: true, .. } => t.hello(at),
            Item::Restarted { nonce, .. } => {
                t.end_session();
                t.steps.push(Step::Reset(at));
                if nonce {
                    // The server announced the HELLO's connection, then reset the client for
                    // its new session, then watched it from that HELLO.
                    t.hello(at);
                }
            }
            Item::Evicted { .. } => {
                t.end_session();
                t.steps.push(Step::Forget(at));
            }
            Item::Transition {
                to: Liveness::Left, ..
            } => {
                t.end_session();
                t.steps.push(Step::Left(at));
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for (mut t, chosen) in traces.into_iter().zip(chosen) {
        t.end_session();
        if !chosen || t.arrivals == 0 {
            continue;
        }
        if t.interval.is_none() {
            t.interval = t.estimate_interval();
            t.estimated = true;
        }
        out.push(t);
    }
    out
}

/// What one replay of one client with one setting gives.
#[derive(Debug, Default)]
struct UnitResult {
    transitions: Vec<crate::qos::engine::Transition>,
    down: Vec<Duration>,
    suspect: Vec<Duration>,
    undetected_down: u64,
    undetected_suspect: u64,
}

/// Replays one client's trace into one setting.
fn replay(
    trace: &ClientTrace,
    config: &DetectorConfig,
    origin: Instant,
    end: Duration,
) -> UnitResult {
    let interval = trace
        .interval
        .expect("only clients with an interval are replayed");
    let mut replay = Replay::new(config.clone(), vec![interval], origin);
    let mut r = UnitResult::default();
    let mut batch = TraceBatch::default();
    let mut k = 0u64;
    let instant = |ns: u64| origin + Duration::from_nanos(ns);
    for chunk in trace.steps.chunks(BATCH) {
        batch.clear();
        for step in chunk {
            let item = match *step {
                Step::Arrival { at, ref seqs } => {
                    let from = batch.seqs.len();
                    batch
                        .seqs
                        .extend_from_slice(&trace.seqs[seqs.start as usize..seqs.end as usize]);
                    TraceItem::Arrival {
                        at: instant(at),
                        client: 0,
                        seqs: from..batch.seqs.len(),
                    }
                }
                Step::Forget(at) => TraceItem::Forget {
                    at: instant(at),
                    client: 0,
                },
                Step::Hello(at) => TraceItem::Hello {
                    at: instant(at),
                    client: 0,
                },
                Step::Left(at) => TraceItem::Left {
                    at: instant(at),
                    client: 0,
                },
                Step::Reset(at) => TraceItem::Reset {
                    at: instant(at),
                    client: 0,
                },
                Step::ServerRestart(at) => TraceItem::ServerRestart { at: instant(at) },
            };
            batch.items.push(item);
        }
        replay.feed_with(&batch, |watches, client, at| {
            if trace.is_crash_point(k) {
                match watches.convicts_at(client, Liveness::Down) {
                    Some(t) => r.down.push(t - at),
                    None => r.undetected_down += 1,
                }
                match watches.convicts_at(client, Liveness::Suspect) {
                    Some(t) => r.suspect.push(t - at),
                    None => r.undetected_suspect += 1,
                }
            }
            k += 1;
        });
    }
    r.transitions = replay.finish(origin + end);
    r
}

/// Tunes: every selected client's trace replayed into every setting, on `study.jobs` threads.
pub fn run(log: &ServerLog, study: &Study) -> Result<Outcome, String> {
    if study.settings.is_empty() {
        return Err("no detector settings".into());
    }
    // The defaults are always measured: advice is compared with them.
    let mut settings = study.settings.clone();
    let defaults = DetectorConfig::default();
    let defaults = match settings.iter().position(|s| *s == defaults) {
        Some(i) => i,
        None => {
            settings.push(defaults);
            settings.len() - 1
        }
    };
    for name in &study.clients {
        if log.client(name).is_none() {
            return Err(format!("no client {name:?} in the log"));
        }
    }
    let mut left_out = Vec::new();
    let mut traces: Vec<ClientTrace> = Vec::new();
    for mut t in split(log, &study.clients) {
        if t.interval.is_none() {
            left_out.push((
                log.name(t.client).to_owned(),
                "no interval declared, and too few arrivals to estimate one".to_owned(),
            ));
            continue;
        }
        t.choose_crash_points(study.crash_points, study.seed);
        traces.push(t);
    }
    if traces.is_empty() {
        return Err("no client with heartbeats to tune".into());
    }
    // An arbitrary origin: only offsets from it matter, and nothing here is rendered from it.
    #[allow(clippy::disallowed_methods)]
    let origin = Instant::now();
    let end = log.end;
    let units: Vec<(usize, usize)> = (0..traces.len())
        .flat_map(|c| (0..settings.len()).map(move |s| (c, s)))
        .collect();
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel::<(usize, UnitResult)>();
    let mut results: Vec<Option<UnitResult>> = (0..units.len()).map(|_| None).collect();
    std::thread::scope(|scope| {
        for _ in 0..study.jobs.clamp(1, units.len()) {
            let tx = tx.clone();
            let (units, next, traces, settings) = (&units, &next, &traces, &settings);
            scope.spawn(move || {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(c, s)) = units.get(k) else { break };
                    let r = replay(&traces[c], &settings[s], origin, end);
                    if tx.send((k, r)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        for (k, r) in rx {
            results[k] = Some(r);
        }
    });
    let mut tallies = vec![Tally::default(); settings.len()];
    let mut per_client = vec![Vec::with_capacity(settings.len()); traces.len()];
    for (&(c, s), r) in units.iter().zip(results) {
        let r = r.ok_or("a replay thread panicked")?;
        let truth = ClientTruth {
            reachable: traces[c].sessions.clone(),
            crashes: Vec::new(),
        };
        let mut mine = Tally::default();
        mine.add_run(&r.transitions, std::slice::from_ref(&truth), end);
        mine.down.detection = r.down;
        mine.down.undetected = r.undetected_down;
        mine.suspect.detection = r.suspect;
        mine.suspect.undetected = r.undetected_suspect;
        per_client[c].push(mine.summary());
        tallies[s].merge(mine);
    }
    let rows = Row::all(&settings, &tallies);
    let clients: Vec<ClientRow> = traces
        .iter()
        .map(|t| ClientRow {
            name: log.name(t.client).to_owned(),
            interval: t.interval.unwrap_or_default(),
            estimated: t.estimated,
            heartbeats: t.seqs.len() as u64,
            arrivals: t.arrivals,
            crash_points: t.crash_points,
            watched: t.sessions.iter().map(|p| p.to - p.from).sum(),
        })
        .collect();
    let server_downs = log
        .items
        .iter()
        .filter(|s| {
            matches!(
                s.item,
                Item::Transition {
                    to: Liveness::Down,
                    ..
                }
            )
        })
        .count() as u64;
    let stalls = log
        .items
        .iter()
        .filter(|s| matches!(s.item, Item::Stalled { .. }))
        .count() as u64;
    let advice = Advice::new(&clients, &per_client, defaults, study.level);
    Ok(Outcome {
        advice,
        stalls,
        rows,
        clients,
        per_client,
        defaults,
        left_out,
        runs: log.stats.runs,
        server_downs,
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use heartbeat_core::detector::{FixedConfig, Span};
    use heartbeat_net::cli::DetectorArgs;

    use super::*;

    #[derive(Debug, Parser)]
    struct Server {
        #[command(flatten)]
        detector: DetectorArgs,
    }

    /// The recommended flags are the setting: parsed as `heartbeat-server` parses them, every
    /// grid point comes back equal.
    #[test]
    fn server_flags_select_the_setting() {
        let settings = grid(&DetectorKind::ALL);
        assert_eq!(settings.len(), 33);
        for setting in settings {
            let flags = server_flags(&setting);
            let args = std::iter::once("heartbeat-server").chain(flags.split_whitespace());
            let parsed = Server::try_parse_from(args).unwrap_or_else(|e| panic!("{flags}: {e}"));
            assert_eq!(parsed.detector.config().unwrap(), setting, "{flags}");
        }
        assert_eq!(
            server_flags(&DetectorConfig::new(DetectorKind::Phi)),
            "--detector phi"
        );
    }

    fn log(lines: &[String]) -> ServerLog {
        ServerLog::from_text(&lines.join("\n"))
    }

    fn beat(client: &str, seq: u64, at_ms: u64) -> String {
        let t = 1_700_000_000_000 + at_ms;
        format!(
            r#"{{"event":"heartbeat","conn":1,"client":"{client}","seq":{seq},"sent":"{0}.{1:03}000","received":"{0}.{1:03}000","delay_ms":0.0,"inter_arrival_ms":null,"recovered":false}}"#,
            t / 1000,
            t % 1000
        )
    }

    /// A v1 client's `HELLO` at `at_ms`, timed as the server writes it.
    fn connected(client: &str, conn: u64, at_ms: u64) -> String {
        connected_every(client, conn, at_ms, 100)
    }

    /// A v1 client's `HELLO` declaring `interval_ms`.
    fn connected_every(client: &str, conn: u64, at_ms: u64, interval_ms: u64) -> String {
        let t = 1_700_000_000_000 + at_ms;
        format!(
            r#"{{"event":"connected","conn":{conn},"client":"{client}","peer":"192.0.2.1:4000","protocol":"v1","interval_ms":{interval_ms}.0,"resumed":false,"time":"{}.{:03}000"}}"#,
            t / 1000,
            t % 1000
        )
    }

    /// A client of a fleet: its name, interval, when it stops for good (killed: no goodbye),
    /// and one silence `(after_ms, length_ms)` (a SIGSTOP).
    struct Member {
        name: &'static str,
        every: u64,
        until: u64,
        pause: Option<(u64, u64)>,
    }

    /// A log of `members` connecting at once and sending until their `until`, in time order.
    fn fleet(members: &[Member]) -> ServerLog {
        let mut lines: Vec<(u64, String)> = Vec::new();
        for (conn, m) in members.iter().enumerate() {
            lines.push((0, connected_every(m.name, conn as u64 + 1, 0, m.every)));
            let (mut t, mut seq) = (m.every, 1);
            while t <= m.until {
                lines.push((t, beat(m.name, seq, t)));
                seq += 1;
                t += m.every;
                if let Some((after, length)) = m.pause.filter(|&(after, _)| t > after) {
                    if t - m.every <= after {
                        t = after + length;
                    }
                }
            }
        }
        lines.sort_by_key(|(t, _)| *t);
        log(&lines.into_iter().map(|(_, l)| l).collect::<Vec<_>>())
    }

    fn fixed_ms(grace: u64) -> DetectorConfig {
        FixedConfig::default()
            .grace(Span::Fixed(Duration::from_millis(grace)))
            .unwrap()
            .into()
    }

    const MINUTE: u64 = 60_000;

    /// Two clients every 100 ms outnumber one every second ten to one in arrivals. A mean over
    /// arrivals (the old ranking) prefers grace = 2 intervals (300 ms for the fast ones, 3 s
    /// for the slow one); the worst case per client prefers grace = 1 s (2 s for the slow one),
    /// and each class gets its own pick.
    #[test]
    fn fast_clients_do_not_decide_for_the_slow_ones() {
        let log = fleet(&[
            Member {
                name: "fast-1",
                every: 100,
                until: MINUTE,
                pause: None,
            },
            Member {
                name: "fast-2",
                every: 100,
                until: MINUTE,
                pause: None,
            },
            Member {
                name: "slow-1",
                every: 1_000,
                until: MINUTE,
                pause: None,
            },
        ]);
        let o = run(&log, &study(vec![fixed(2.0), fixed_ms(1_000)], 0)).unwrap();
        // The pooled mean, which the old ranking sorted by, favours the relative setting.
        let mean = |i: usize| o.rows[i].summary.down.detection_mean.unwrap();
        assert!(mean(0) < mean(1), "{:?} {:?}", mean(0), mean(1));
        let a = &o.advice;
        assert_eq!(a.defaults, 2, "the defaults are measured too");
        assert_eq!(a.fleet.pick, Some(1));
        assert_eq!(a.fleet.cells[0].p99, Some(Duration::from_secs(3)));
        assert_eq!(a.fleet.cells[1].p99, Some(Duration::from_secs(2)));
        let classes: Vec<_> = a
            .classes
            .iter()
            .map(|c| (c.interval, c.clients.len(), c.pick))
            .collect();
        assert_eq!(
            classes,
            [
                (Some(Duration::from_millis(100)), 2, Some(0)),
                (Some(Duration::from_secs(1)), 1, Some(1)),
            ]
        );
        assert!(a.slower.is_empty(), "{:?}", a.slower);
    }

    /// A 1 s client killed half-way and one stopped for 5.5 s: a 1 s grace takes the pause for
    /// a death, the defaults (φ, pause 3 s) too; a 5 s grace makes no mistake, so it is the
    /// class's pick, and the output must say it is slower at p99 than the defaults there. The
    /// killed client's last heartbeat is a crash point like any other. At the suspect level
    /// (half the silence) no setting is free of mistakes.
    #[test]
    fn a_killed_client_and_a_pause_against_the_defaults() {
        let members = [
            Member {
                name: "fast",
                every: 100,
                until: MINUTE,
                pause: None,
            },
            Member {
                name: "killed",
                every: 1_000,
                until: MINUTE / 2,
                pause: None,
            },
            Member {
                name: "paused",
                every: 1_000,
                until: MINUTE,
                pause: Some((20_000, 5_500)),
            },
        ];
        let log = fleet(&members);
        let settings = vec![fixed_ms(1_000), fixed_ms(5_000)];
        let o = run(&log, &study(settings.clone(), 0)).unwrap();
        let a = &o.advice;
        let slow = &a.classes[1];
        assert_eq!(slow.interval, Some(Duration::from_secs(1)));
        assert!(slow.cells[0].mistakes_down >= 1);
        assert!(
            slow.cells[a.defaults].mistakes_down >= 1,
            "{:?}",
            slow.cells
        );
        assert_eq!(slow.pick, Some(1));
        assert_eq!(slow.cells[1].p99, Some(Duration::from_secs(6)));
        let killed = o.clients.iter().position(|c| c.name == "killed").unwrap();
        assert_eq!(o.clients[killed].crash_points, 30);
        assert_eq!(
            o.per_client[killed][1].down.detection_max,
            Some(Duration::from_secs(6))
        );
        let defaults_p99 = slow.cells[a.defaults].p99.unwrap();
        assert!(defaults_p99 < Duration::from_secs(6), "{defaults_p99:?}");
        assert!(
            a.slower.contains(&advice::Slower {
                class: 1,
                fleet: false,
                setting: 1,
                p99: Duration::from_secs(6),
                defaults_p99,
            }),
            "{:?}",
            a.slower
        );
        // The per-class settings are a settings file: one entry per client of each class.
        let file = render::settings_file(&o);
        let parsed: toml::Table = toml::from_str(&file).unwrap();
        let entries = parsed["client"].as_array().unwrap();
        assert_eq!(entries.len(), 3, "{file}");
        assert!(file.contains("match = \"paused\"\ndetector = \"fixed\"\ngrace = \"5s\""));
        let suspect = run(
            &log,
            &Study {
                level: Level::Suspect,
                ..study(settings, 0)
            },
        )
        .unwrap();
        assert_eq!(suspect.advice.classes[1].pick, None);
    }

    fn study(settings: Vec<DetectorConfig>, crash_points: usize) -> Study {
        Study {
            settings,
            clients: Vec::new(),
            crash_points,
            seed: 1,
            jobs: 2,
            level: Level::Down,
        }
    }

    fn fixed(grace: f64) -> DetectorConfig {
        FixedConfig::default()
            .grace(Span::Intervals(grace))
            .unwrap()
            .into()
    }

    /// A steady client paused once for a second: a fixed detector tighter than the pause makes
    /// one mistake that lasts until the pause ends; a looser one makes none. Detection time is
    /// the interval plus the grace from every arrival.
    #[test]
    fn a_pause_is_a_mistake_for_a_tight_detector_only() {
        let mut lines = vec![connected("c1", 1, 100)];
        let mut t = 0;
        for seq in 1..=100 {
            t += if seq == 50 { 1_100 } else { 100 };
            lines.push(beat("c1", seq, t));
        }
        let o = run(&log(&lines), &study(vec![fixed(2.0), fixed(20.0)], 0)).unwrap();
        let (tight, loose) = (&o.rows[0].summary.down, &o.rows[1].summary.down);
        assert_eq!(tight.mistakes, 1);
        // Down 300 ms after seq 49, up at seq 50, 1100 ms after it.
        assert_eq!(tight.mistake_mean, Some(Duration::from_millis(800)));
        assert_eq!(loose.mistakes, 0);
        assert_eq!(tight.detection_mean, Some(Duration::from_millis(300)));
        assert_eq!(loose.detection_p99, Some(Duration::from_millis(2100)));
        assert_eq!(o.clients[0].crash_points, 100);
        assert_eq!(o.advice.fleet.pick, Some(1));
        assert_eq!(
            o.clients[0].watched,
            Duration::from_millis(100 * 98 + 1_100)
        );
    }

    /// A client that stops and comes back as a new process, a goodbye, and a server restart:
    /// none of those gaps is a mistake, however tight the detector.
    #[test]
    fn gaps_between_sessions_are_not_mistakes() {
        let mut lines = vec![connected("c1", 1, 100)];
        let mut t = 0;
        let mut seq = 0;
        let mut beats = |lines: &mut Vec<String>, n: u64, t: &mut u64| {
            for _ in 0..n {
                seq += 1;
                *t += 100;
                lines.push(beat("c1", seq, *t));
            }
        };
        beats(&mut lines, 20, &mut t);
        // A new process 5 s later (the server saw it restart).
        t += 5_000;
        lines.push(connected("c1", 2, t + 100));
        lines.push(
            r#"{"event":"restarted","conn":2,"client":"c1","previous":20,"seq":null}"#.into(),
        );
        beats(&mut lines, 20, &mut t);
        lines.push(
            r#"{"event":"transition","client":"c1","peer":null,"from":"up","to":"left","since_last_ms":5.0,"suspicion":0.0,"detector":"fixed"}"#
                .into(),
        );
        t += 60_000;
        lines.push(connected("c1", 3, t + 100));
        beats(&mut lines, 20, &mut t);
        // The server restarts (a summary, then connection numbers from 1 again).
        lines.push(r#"{"event":"summary","clients":[]}"#.into());
        t += 600_000;
        lines.push(connected("c1", 1, t + 100));
        beats(&mut lines, 20, &mut t);
        let log = log(&lines);
        assert_eq!(log.stats.runs, 2);
        let o = run(&log, &study(vec![fixed(0.5)], 0)).unwrap();
        let d = &o.rows[0].summary.down;
        assert_eq!((d.mistakes, d.detected), (0, 80));
        assert_eq!(o.clients[0].watched, Duration::from_millis(4 * 1_900));
    }

    /// A `HELLO` is the first sign of life: the replay watches the client from it, as the
    /// server does, and its session starts there. A first heartbeat 1 s late is a mistake for a
    /// fixed detector whose down level (300 ms at 100 ms) comes before it, and none for a loose
    /// one.
    #[test]
    fn a_hello_starts_the_watch_and_the_session() {
        let mut lines = vec![connected("c1", 1, 0)];
        for seq in 1..=20 {
            lines.push(beat("c1", seq, 1_000 + (seq - 1) * 100));
        }
        let o = run(&log(&lines), &study(vec![fixed(2.0), fixed(20.0)], 0)).unwrap();
        let (tight, loose) = (&o.rows[0].summary.down, &o.rows[1].summary.down);
        assert_eq!(tight.mistakes, 1);
        assert_eq!(tight.mistake_mean, Some(Duration::from_millis(700)));
        assert_eq!(loose.mistakes, 0);
        assert_eq!(o.clients[0].watched, Duration::from_millis(2_900));
    }

    /// The crash-point sample is seeded, the same for every setting, and about the size asked.
    #[test]
    fn crash_points_are_sampled_when_there_are_many() {
        let mut lines = vec![connected("c1", 1, 100)];
        for seq in 1..=5000 {
            lines.push(beat("c1", seq, seq * 100));
        }
        let log = log(&lines);
        let o = run(&log, &study(vec![fixed(1.0), fixed(2.0)], 500)).unwrap();
        let n = o.clients[0].crash_points;
        assert!((400..600).contains(&n), "{n}");
        for r in &o.rows {
            assert_eq!(r.summary.down.detected, n);
        }
        let again = run(&log, &study(vec![fixed(1.0)], 500)).unwrap();
        assert_eq!(again.clients[0].crash_points, n);
    }
}
