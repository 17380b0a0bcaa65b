//! Scenarios are data: clients, a latency model and a list of timed actions.
//!
//! A [`Scenario`] is built from its name and the run [`Params`] (seed, duration, client count,
//! latency). Fault times and lengths are drawn from a schedule RNG seeded by the run seed, so a
//! sweep over seeds explores different schedules while one seed always expands to the same list.
//! The expanded scenario is printed with every run, so a failing seed can be read, not only
//! replayed.

use std::fmt;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use heartbeat_core::config::Backoff;

/// The scenarios, in the order `heartbeat-sim list` prints them: name and one line.
pub const SCENARIOS: &[(&str, &str)] = &[
    (
        "steady",
        "no faults: every heartbeat is received live, nothing is missed",
    ),
    (
        "jitter",
        "link latency jumps between 1 and 400 ms: delays vary, nothing is missed, no reconnect",
    ),
    (
        "partition",
        "each client's link is cut, then repaired: both sides notice by timeout, the client \
         reconnects and resumes its sequence, the gap is counted once",
    ),
    (
        "firewall",
        "the seed's limitation 2: the link is held, then released; every held heartbeat \
         arrives in one burst, counted received and late, none missed",
    ),
    (
        "competing-clients",
        "the seed's limitation 3: several clients at once, one joining late, one leaving; each \
         is heard live",
    ),
    (
        "server-restart",
        "the server crashes and restarts: clients see the close, reconnect and resume",
    ),
    (
        "client-crash",
        "c1 crashes cleanly and restarts (new session); c2 dies silently and must be detected \
         dead; the others are witnesses",
    ),
    (
        "swizzle",
        "FoundationDB's swizzle-clog: client links are clogged one by one, then released in \
         random order; nothing held is missed",
    ),
];

/// One end of the network: the server or a client (by index, printed `c1`, `c2`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Node {
    /// A client, by index (0-based; `Client(0)` is `c1`).
    Client(usize),
    /// The server.
    Server,
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Client(i) => write!(f, "c{}", i + 1),
            Self::Server => f.write_str("server"),
        }
    }
}

/// Something done to the simulated world at a given time. Links are always client to server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Restart a node's software: a crashed node starts again, a running one is crashed and
    /// started again. A restarted client is a new process with a new session.
    Bounce(Node),
    /// Crash a node cleanly: its runtime is dropped, so its peers get a FIN (turmoil 0.7.2).
    Crash(Node),
    /// Hold every segment on a client's link, both ways, until `Release` (a firewall).
    Hold(usize),
    /// Set a client link's latency (min = max).
    Latency(usize, Duration),
    /// Cut a client's link: segments in flight and sent later are dropped.
    Partition(usize),
    /// Deliver everything held on a client's link at once and make it healthy.
    Release(usize),
    /// Make a client's link healthy again. Streams cut by a partition stay stuck (no
    /// retransmission in turmoil 0.7.2): both sides must time out.
    Repair(usize),
    /// Crash a node without telling anyone: partition its links, crash, repair, so its FINs are
    /// lost and its peers see a half-open connection.
    SilentCrash(Node),
    /// Start a client's process.
    Start(usize),
    /// Stop a client's process cleanly: it says goodbye and closes.
    Stop(usize),
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = |i: &usize| Node::Client(*i);
        match self {
            Self::Bounce(n) => write!(f, "restart {n}"),
            Self::Crash(n) => write!(f, "crash {n}"),
            Self::Hold(i) => write!(f, "hold {} <-> server", c(i)),
            Self::Latency(i, d) => write!(f, "latency {} <-> server = {}ms", c(i), d.as_millis()),
            Self::Partition(i) => write!(f, "partition {} <-> server", c(i)),
            Self::Release(i) => write!(f, "release {} <-> server", c(i)),
            Self::Repair(i) => write!(f, "repair {} <-> server", c(i)),
            Self::SilentCrash(n) => write!(f, "silent crash {n}"),
            Self::Start(i) => write!(f, "start {}", c(i)),
            Self::Stop(i) => write!(f, "stop {}", c(i)),
        }
    }
}

/// An action and when it happens (simulated time since the start).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timed {
    /// When.
    pub at: Duration,
    /// What.
    pub action: Action,
}

/// The latency of every link: fixed (snapshots) or drawn per message by turmoil (sweeps).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Latency {
    /// Every message takes exactly this long.
    Fixed(Duration),
    /// Each message takes `min + (max - min) * Exp(5)`, clamped to `max`, in whole ms.
    Range {
        /// Smallest latency.
        min: Duration,
        /// Largest latency.
        max: Duration,
    },
}

impl Latency {
    /// The smallest latency.
    pub fn min(&self) -> Duration {
        match *self {
            Self::Fixed(d) => d,
            Self::Range { min, .. } => min,
        }
    }

    /// The largest latency.
    pub fn max(&self) -> Duration {
        match *self {
            Self::Fixed(d) => d,
            Self::Range { max, .. } => max,
        }
    }

    /// Parses `10` (fixed, ms) or `1-50` (range, ms).
    pub fn parse(s: &str) -> Result<Self, String> {
        let ms = |x: &str| {
            x.trim()
                .parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| format!("invalid latency {s:?}: expected MS or MIN-MAX in ms"))
        };
        match s.split_once('-') {
            None => Ok(Self::Fixed(ms(s)?)),
            Some((a, b)) => {
                let (min, max) = (ms(a)?, ms(b)?);
                if max < min {
                    return Err(format!("invalid latency {s:?}: max below min"));
                }
                Ok(if min == max {
                    Self::Fixed(min)
                } else {
                    Self::Range { min, max }
                })
            }
        }
    }
}

impl fmt::Display for Latency {
    /// The form `parse` reads: `10` or `1-50`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fixed(d) => write!(f, "{}", d.as_millis()),
            Self::Range { min, max } => write!(f, "{}-{}", min.as_millis(), max.as_millis()),
        }
    }
}

impl Default for Latency {
    /// 1 to 50 ms.
    fn default() -> Self {
        Self::Range {
            min: Duration::from_millis(1),
            max: Duration::from_millis(50),
        }
    }
}

/// What a run is asked for on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    /// Seeds turmoil's RNG, the schedule RNG and the clients' jitter and session nonces.
    pub seed: u64,
    /// Length of the fault phase; `None` for the scenario's default (60 s).
    pub duration: Option<Duration>,
    /// Number of clients; `None` for the scenario's default.
    pub clients: Option<usize>,
    /// Link latency.
    pub latency: Latency,
}

impl Params {
    /// The default parameters with this seed.
    pub fn seed(seed: u64) -> Self {
        Self {
            seed,
            duration: None,
            clients: None,
            latency: Latency::default(),
        }
    }
}

/// A simulated client process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientPlan {
    /// Its identity, `c1`, `c2`, ...
    pub id: String,
    /// Its ack timeout, when not the default `max(5 * interval, 2 s)`.
    pub ack_timeout: Option<Duration>,
    /// True when a `Start` action starts it; otherwise it starts at time 0.
    pub starts_late: bool,
}

impl ClientPlan {
    /// Client `i` (0-based) with the defaults: named `c{i+1}`, default ack timeout, starting at 0.
    pub fn numbered(i: usize) -> Self {
        Self {
            id: format!("c{}", i + 1),
            ack_timeout: None,
            starts_late: false,
        }
    }
}

/// Extra expectations of one scenario, on top of the oracles every scenario passes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Expect {
    /// No client has a missed heartbeat.
    pub none_missed: bool,
    /// No client reconnected (one connection each, per server incarnation).
    pub no_reconnect: bool,
    /// Every heartbeat arrived within the latency bound and no burst was seen.
    pub all_live: bool,
    /// Every hold produced one burst carrying all the heartbeats it held.
    pub burst_per_hold: bool,
    /// Every restarted client is seen restarting (a new session) by the server.
    pub restarts_seen: bool,
}

/// A fully expanded scenario: everything a run needs, nothing drawn later.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scenario {
    /// Its name, as in `heartbeat-sim run NAME`.
    pub name: &'static str,
    /// The parameters it was expanded from.
    pub params: Params,
    /// Heartbeat interval of every client.
    pub interval: Duration,
    /// Simulation tick (network delivery granularity).
    pub tick: Duration,
    /// The clients.
    pub clients: Vec<ClientPlan>,
    /// The actions, sorted by time (stable: equal times keep their order).
    pub actions: Vec<Timed>,
    /// Length of the fault phase. At this time every link is healed and a crashed server is
    /// restarted.
    pub duration: Duration,
    /// Length of the heal-and-drain phase: every surviving client must be back and counted by
    /// its end.
    pub drain: Duration,
    /// The scenario's own expectations.
    pub expect: Expect,
}

/// The default heartbeat interval, the seed's 1000 ms.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// The default fault phase.
pub const DURATION: Duration = Duration::from_secs(60);
/// The simulation tick.
pub const TICK: Duration = Duration::from_millis(1);

/// A uniform draw in `[lo, hi]`, in whole milliseconds, so schedules print exactly.
pub(crate) fn between(rng: &mut SmallRng, lo: Duration, hi: Duration) -> Duration {
    Duration::from_millis(rng.random_range(lo.as_millis() as u64..=hi.as_millis() as u64))
}

/// [`between`] with bounds in seconds, truncated to whole milliseconds.
fn secs(rng: &mut SmallRng, lo: f64, hi: f64) -> Duration {
    let ms = |secs: f64| Duration::from_millis((secs * 1000.0) as u64);
    between(rng, ms(lo), ms(hi))
}

/// The name of entry `name` of a scenario table such as [`SCENARIOS`]; `Err` names the known
/// ones, calling them `what`.
pub(crate) fn lookup(
    table: &[(&'static str, &str)],
    what: &str,
    name: &str,
) -> Result<&'static str, String> {
    match table.iter().find(|(n, _)| *n == name) {
        Some(&(name, _)) => Ok(name),
        None => {
            let names: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
            Err(format!(
                "unknown {what} {name:?}; known: {}",
                names.join(", ")
            ))
        }
    }
}

impl Scenario {
    /// Expands scenario `name` with `params`; `Err` names the known scenarios.
    pub fn build(name: &str, params: &Params) -> Result<Self, String> {
        let name = lookup(SCENARIOS, "scenario", name)?;
        let duration = params.duration.unwrap_or(DURATION);
        if duration < Duration::from_secs(20) {
            return Err(format!(
                "duration {duration:?} too short: scenarios need at least 20 s"
            ));
        }
        let (default_clients, min_clients) = match name {
            "competing-clients" => (3, 2),
            "client-crash" => (3, 2),
            "server-restart" => (2, 1),
            "swizzle" => (6, 1),
            _ => (1, 1),
        };
        let n = params.clients.unwrap_or(default_clients);
        if n < min_clients || n > 64 {
            return Err(format!(
                "scenario {name} needs {min_clients} to 64 clients, got {n}"
            ));
        }
        let mut s = Self {
            name,
            params: params.clone(),
            interval: INTERVAL,
            tick: TICK,
            clients: (0..n).map(ClientPlan::numbered).collect(),
            actions: Vec::new(),
            duration,
            drain: Duration::ZERO,
            expect: Expect::default(),
        };
        s.schedule();
        s.drain = s.drain_bound();
        Ok(s)
    }

    /// Draws the scenario's actions and sets its expectations (and the plans that differ from
    /// the default), from the schedule RNG.
    fn schedule(&mut self) {
        let (name, n) = (self.name, self.clients.len());
        // The schedule RNG is separate from turmoil's, so the schedule does not move when the
        // network draws more or fewer numbers.
        let mut rng = SmallRng::seed_from_u64(self.params.seed ^ 0x5ce9_a810_0000_0000);
        let d = self.duration.as_secs_f64();
        let mut actions = Vec::new();
        let mut at = |t: Duration, action: Action| actions.push(Timed { at: t, action });
        // What the scenarios without cuts or crashes expect: nothing lost, nothing reconnected.
        let intact = Expect {
            none_missed: true,
            no_reconnect: true,
            ..Expect::default()
        };
        match name {
            "steady" => {
                self.expect = Expect {
                    all_live: true,
                    ..intact
                };
            }
            "jitter" => {
                for i in 0..n {
                    let mut t = secs(&mut rng, 1.0, 3.0);
                    while t.as_secs_f64() < d - 5.0 {
                        let ms = rng.random_range(1..=400);
                        at(t, Action::Latency(i, Duration::from_millis(ms)));
                        t += secs(&mut rng, 1.0, 5.0);
                    }
                }
                self.expect = intact;
            }
            "partition" => {
                for i in 0..n {
                    let from = secs(&mut rng, 0.2 * d, 0.6 * d);
                    let len = secs(&mut rng, 3.0, 15.0);
                    at(from, Action::Partition(i));
                    at(from + len, Action::Repair(i));
                }
            }
            "firewall" => {
                // Like the seed's client, which never checks for acks, these clients keep
                // sending into the firewall: an ack timeout longer than the hold. The hold stays
                // under the server's idle timeout (10 s), or the server would rightly give up.
                for (i, c) in self.clients.iter_mut().enumerate() {
                    c.ack_timeout = Some(Duration::from_secs(30));
                    let from = secs(&mut rng, 0.2 * d, 0.6 * d);
                    let len = secs(&mut rng, 5.0, 8.0);
                    at(from, Action::Hold(i));
                    at(from + len, Action::Release(i));
                }
                self.expect = Expect {
                    burst_per_hold: true,
                    ..intact
                };
            }
            "competing-clients" => {
                // All but the last start in the same tick; the last joins late; c1 leaves.
                self.clients[n - 1].starts_late = true;
                at(secs(&mut rng, 0.2 * d, 0.4 * d), Action::Start(n - 1));
                at(secs(&mut rng, 0.5 * d, 0.8 * d), Action::Stop(0));
                self.expect = Expect {
                    all_live: true,
                    ..intact
                };
            }
            "server-restart" => {
                let from = secs(&mut rng, 0.3 * d, 0.6 * d);
                at(from, Action::Crash(Node::Server));
                at(
                    from + secs(&mut rng, 0.5, 5.0),
                    Action::Bounce(Node::Server),
                );
            }
            "client-crash" => {
                let from = secs(&mut rng, 0.2 * d, 0.4 * d);
                at(from, Action::Crash(Node::Client(0)));
                at(
                    from + secs(&mut rng, 1.0, 5.0),
                    Action::Bounce(Node::Client(0)),
                );
                at(
                    secs(&mut rng, 0.2 * d, 0.5 * d),
                    Action::SilentCrash(Node::Client(1)),
                );
                self.expect = Expect {
                    restarts_seen: true,
                    ..Expect::default()
                };
            }
            "swizzle" => {
                // Clog a random subset (at least one) one by one, then unclog in random order.
                let mut order: Vec<usize> = (0..n).collect();
                order.shuffle(&mut rng);
                let k = rng.random_range(n.div_ceil(2)..=n);
                let clogged = &order[..k];
                // Every hold lasts at least 2.5 s (more than two intervals: a burst) and at most
                // 3 + 3 + 2.5 s, under the server's idle timeout (10 s), whatever the order.
                let step = 3.0 / k as f64;
                let mut t = secs(&mut rng, 0.2 * d, 0.4 * d);
                for &i in clogged {
                    at(t, Action::Hold(i));
                    t += secs(&mut rng, 0.0, step);
                }
                let mut release: Vec<usize> = clogged.to_vec();
                release.shuffle(&mut rng);
                let step = 2.5 / k as f64;
                let mut t = t + secs(&mut rng, 2.5, 3.0);
                for i in release {
                    at(t, Action::Release(i));
                    t += secs(&mut rng, 0.0, step);
                }
                self.expect = Expect {
                    burst_per_hold: true,
                    ..Expect::default()
                };
            }
            _ => unreachable!("names come from SCENARIOS"),
        }
        self.actions = actions;
        self.actions.sort_by_key(|t| t.at);
    }

    /// How long every surviving client may take to be back after the heal: a client on a stuck
    /// stream notices after its ack timeout, then waits at most the largest backoff, then its
    /// next slot comes within one interval; plus latency both ways and a margin of one interval.
    pub fn drain_bound(&self) -> Duration {
        let ack = self
            .clients
            .iter()
            .map(|c| self.ack_timeout(c))
            .max()
            .unwrap_or_default();
        ack + Backoff::default().max()
            + self.interval * 2
            + self.params.latency.max() * 2
            + self.tick * 2
    }

    /// A client's ack timeout (its plan's, or the core's default).
    pub fn ack_timeout(&self, c: &ClientPlan) -> Duration {
        c.ack_timeout
            .unwrap_or_else(|| (self.interval * 5).max(Duration::from_secs(2)))
    }

    /// The command that replays this run.
    pub fn replay_command(&self) -> String {
        let mut cmd = format!(
            "heartbeat-sim run {} --seed {} --latency {}",
            self.name, self.params.seed, self.params.latency
        );
        if let Some(d) = self.params.duration {
            if d.subsec_nanos() == 0 {
                cmd.push_str(&format!(" --duration {}", d.as_secs()));
            } else {
                cmd.push_str(&format!(" --duration {}ms", d.as_millis()));
            }
        }
        if let Some(k) = self.params.clients {
            cmd.push_str(&format!(" --clients {k}"));
        }
        cmd
    }

    /// The heartbeats that can be in flight at any moment: written but not yet delivered.
    pub fn in_flight_bound(&self) -> u64 {
        let window = self.params.latency.max() + self.tick * 2;
        1 + window.as_nanos().div_ceil(self.interval.as_nanos()) as u64
    }

    /// The heartbeats a crashed client may have written without the server ever learning of
    /// them (no later heartbeat reveals the gap): at most those of its last ack timeout, after
    /// which it would have dropped the stream itself, plus those in flight.
    pub fn crash_tail_bound(&self, c: &ClientPlan) -> u64 {
        let ack = self.ack_timeout(c);
        ack.as_nanos().div_ceil(self.interval.as_nanos()) as u64 + self.in_flight_bound()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_scenario_builds_and_is_sorted() {
        for (name, _) in SCENARIOS {
            let s = Scenario::build(name, &Params::seed(1)).unwrap();
            assert!(s.actions.windows(2).all(|w| w[0].at <= w[1].at), "{name}");
            assert!(s.actions.iter().all(|t| t.at < s.duration), "{name}");
            assert_eq!(s, Scenario::build(name, &Params::seed(1)).unwrap());
        }
        assert!(Scenario::build("nope", &Params::seed(1)).is_err());
    }

    #[test]
    fn latency_parses_both_forms() {
        assert_eq!(
            Latency::parse("10"),
            Ok(Latency::Fixed(Duration::from_millis(10)))
        );
        assert_eq!(Latency::parse("1-50"), Ok(Latency::default()));
        assert_eq!(Latency::parse("1-50").unwrap().to_string(), "1-50");
        assert!(Latency::parse("50-1").is_err());
        assert!(Latency::parse("x").is_err());
    }

    #[test]
    fn swizzle_holds_stay_between_burst_and_idle_timeout() {
        for seed in 0..200 {
            let s = Scenario::build("swizzle", &Params::seed(seed)).unwrap();
            for t in &s.actions {
                if let Action::Hold(i) = t.action {
                    let release = s
                        .actions
                        .iter()
                        .find(|r| r.action == Action::Release(i))
                        .unwrap();
                    let len = release.at - t.at;
                    assert!(len >= Duration::from_millis(2500), "{seed}: {len:?}");
                    assert!(len < Duration::from_secs(9), "{seed}: {len:?}");
                }
            }
        }
    }
}
