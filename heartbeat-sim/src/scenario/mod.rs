//! Scenarios are data: clients, a latency model and a list of timed actions.
//!
//! A [`Scenario`] is expanded from a scenario file ([`file::Spec`]: a built-in one, see
//! [`builtin`], or the user's own) and the run [`Params`] (seed, duration, client count,
//! latency). Fault times and lengths are drawn from a schedule RNG seeded by the run seed, so a
//! sweep over seeds explores different schedules while one seed always expands to the same list.
//! The expanded scenario is printed with every run, so a failing seed can be read, not only
//! replayed.

pub mod builtin;
pub mod file;
pub mod time;

use std::fmt;
use std::time::Duration;

use rand::Rng;
use rand::rngs::SmallRng;

use heartbeat_core::ClientId;
use heartbeat_core::config::{Backoff, ClientConfig, ServerConfig};
use heartbeat_core::detector::DetectorConfig;
use heartbeat_core::liveness::Liveness;
pub use heartbeat_memnet::Latency;

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
    /// Kill a node's process, its machine staying up: its peers get a FIN (or RST), as a
    /// killed process's kernel sends; a killed server's kernel refuses connects at once.
    Crash(Node),
    /// Hold every segment on a client's link, both ways, until `Release` (a firewall).
    Hold(usize),
    /// Set a client link's latency (min = max).
    Latency(usize, Duration),
    /// Cut a client's link, silently as a blackhole route does: nothing gets through, a connect
    /// waits for its SYN's retransmission or times out (see `harness::kernel`).
    Partition(usize),
    /// Deliver everything held on a client's link at once and make it healthy.
    Release(usize),
    /// Make a client's link healthy again. What was sent across the cut arrives as one burst at
    /// its sender's next retransmission time, unless that sender gave up first.
    Repair(usize),
    /// Stop a node's machine without a word: its FINs and what its links carry are lost, its
    /// peers see a half-open connection, and a server that is down answers no SYN until it is
    /// restarted.
    SilentCrash(Node),
    /// Start a client's process.
    Start(usize),
    /// Stop a client's process cleanly: it says goodbye and closes.
    Stop(usize),
}

impl Action {
    /// The action in words, naming each node as `name` says (`partition web <-> server`).
    pub fn describe(&self, name: impl Fn(Node) -> String) -> String {
        let c = |i: &usize| name(Node::Client(*i));
        match self {
            Self::Bounce(n) => format!("restart {}", name(*n)),
            Self::Crash(n) => format!("crash {}", name(*n)),
            Self::Hold(i) => format!("hold {} <-> server", c(i)),
            Self::Latency(i, d) => format!("latency {} <-> server = {}ms", c(i), d.as_millis()),
            Self::Partition(i) => format!("partition {} <-> server", c(i)),
            Self::Release(i) => format!("release {} <-> server", c(i)),
            Self::Repair(i) => format!("repair {} <-> server", c(i)),
            Self::SilentCrash(n) => format!("silent crash {}", name(*n)),
            Self::Start(i) => format!("start {}", c(i)),
            Self::Stop(i) => format!("stop {}", c(i)),
        }
    }
}

impl fmt::Display for Action {
    /// The action in words, clients named by place (`c1`, `c2`, ...).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe(|n| n.to_string()))
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

/// What a run is asked for on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    /// Seeds turmoil's RNG, the schedule RNG and the clients' jitter and session nonces.
    pub seed: u64,
    /// Length of the fault phase; `None` for the scenario's default (60 s).
    pub duration: Option<Duration>,
    /// Number of clients; `None` for the scenario's default.
    pub clients: Option<usize>,
    /// Link latency; `None` for the scenario's own (1-50 ms unless its file says otherwise).
    /// Clients with a latency of their own keep it.
    pub latency: Option<Latency>,
    /// Simulation tick; `None` for [`TICK`] (1 ms). A coarser tick runs proportionally faster
    /// (the cost is per tick), but every delivery is rounded to it: see [`Scenario::tick`].
    pub tick: Option<Duration>,
}

impl Params {
    /// The default parameters with this seed.
    pub fn seed(seed: u64) -> Self {
        Self {
            seed,
            duration: None,
            clients: None,
            latency: None,
            tick: None,
        }
    }
}

/// A simulated client process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientPlan {
    /// Its identity, `c1`, `c2`, ...
    pub id: String,
    /// Its heartbeat interval.
    pub interval: Duration,
    /// The latency of its link to the server.
    pub latency: Latency,
    /// Its ack timeout, when not the default `max(5 * interval, 2 s)`.
    pub ack_timeout: Option<Duration>,
    /// Its reconnect backoff; `None` when it does not reconnect (it finishes when its
    /// connection ends or fails).
    pub reconnect: Option<Backoff>,
    /// True when it speaks the seed's legacy text format (no `HELLO`, no acks).
    pub legacy: bool,
    /// True when a `Start` action starts it; otherwise it starts at time 0.
    pub starts_late: bool,
}

impl ClientPlan {
    /// Client `i` (0-based) with the defaults: named `c{i+1}`, sending every `interval` over a
    /// link of `latency`, v1, default ack timeout, reconnecting with the default backoff,
    /// starting at 0.
    pub fn numbered(i: usize, interval: Duration, latency: Latency) -> Self {
        Self {
            id: format!("c{}", i + 1),
            interval,
            latency,
            ack_timeout: None,
            reconnect: Some(Backoff::default()),
            legacy: false,
            starts_late: false,
        }
    }

    /// Its ack timeout (its own, or the core's default). A legacy client has none: it never
    /// reads, so it never drops a silent stream.
    pub fn ack_timeout(&self) -> Duration {
        self.ack_timeout
            .unwrap_or_else(|| (self.interval * 5).max(Duration::from_secs(2)))
    }

    /// The client configuration every process of this client starts from (each process then
    /// gets its own session nonce and backoff seed). The one place a plan becomes a
    /// configuration, for the turmoil world and the event-driven engine alike.
    pub fn config(&self) -> Result<ClientConfig, String> {
        let id = ClientId::new(&self.id).map_err(|e| e.to_string())?;
        let mut config = ClientConfig::new(id, self.interval)
            .map_err(|e| e.to_string())?
            .reconnect(self.reconnect)
            .legacy(self.legacy)
            .map_err(|e| e.to_string())?;
        if let Some(t) = self.ack_timeout {
            config = config.ack_timeout(t).map_err(|e| e.to_string())?;
        }
        Ok(config)
    }
}

/// Where a scenario comes from: the name `run NAME` takes, or a file `run --file PATH` reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A built-in scenario (its file is embedded in the binary).
    Builtin,
    /// A scenario file, by the path it was given as.
    File(String),
}

/// A client counter of the server's final report, as an expectation names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Bursts seen (`bursts`).
    Bursts,
    /// Connections (`connections`).
    Connections,
    /// Duplicate heartbeats (`duplicates`).
    Duplicates,
    /// Missed heartbeats (`missed`).
    Missed,
    /// Received heartbeats (`received`).
    Received,
    /// Restarts seen (`restarts`).
    Restarts,
}

impl Counter {
    /// Every counter, by the name a scenario file uses.
    pub const ALL: [(&'static str, Self); 6] = [
        ("bursts", Self::Bursts),
        ("connections", Self::Connections),
        ("duplicates", Self::Duplicates),
        ("missed", Self::Missed),
        ("received", Self::Received),
        ("restarts", Self::Restarts),
    ];

    /// The name a scenario file uses.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, c)| *c == self)
            .map_or("?", |(n, _)| n)
    }
}

/// How a counter compares with a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    /// `==`
    Eq,
    /// `>=`
    Ge,
    /// `>`
    Gt,
    /// `<=`
    Le,
    /// `<`
    Lt,
}

impl Cmp {
    /// Every comparison, longest operator first (so `>=` is read before `>`).
    pub const ALL: [(&'static str, Self); 5] = [
        ("==", Self::Eq),
        (">=", Self::Ge),
        ("<=", Self::Le),
        (">", Self::Gt),
        ("<", Self::Lt),
    ];

    /// True when `got` compares so with `value`.
    pub fn holds(self, got: u64, value: u64) -> bool {
        match self {
            Self::Eq => got == value,
            Self::Ge => got >= value,
            Self::Gt => got > value,
            Self::Le => got <= value,
            Self::Lt => got < value,
        }
    }

    /// The operator.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, c)| *c == self)
            .map_or("?", |(n, _)| n)
    }
}

/// What an expectation on some clients requires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientRule {
    /// A counter of its row in the final report compares so with a value.
    Count {
        /// The counter.
        counter: Counter,
        /// The comparison.
        cmp: Cmp,
        /// The value.
        value: u64,
    },
    /// After each of its crashes that it stays crashed for at least this long, the server
    /// declares it `down` within this long.
    DownWithin(Duration),
    /// Its state in the final report.
    State(Liveness),
}

/// One expectation of a scenario, checked after the invariants, in the scenario's order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expectation {
    /// `all-live`: every heartbeat arrived within its link's latency bound, no client went
    /// `suspect` or `down`, and no burst was seen.
    AllLive,
    /// `burst-per-hold`: every hold produced one burst carrying all the heartbeats it held.
    BurstPerHold,
    /// A rule on some clients, named by `label` in the verdict.
    Client {
        /// The clients, by index.
        clients: Vec<usize>,
        /// The check's name, e.g. `c2 down within 5s`.
        label: String,
        /// What each must satisfy.
        rule: ClientRule,
    },
    /// `no-reconnect`: every client connected exactly once (per server run).
    NoReconnect,
    /// `none-missed`: no client has a missed heartbeat.
    NoneMissed,
    /// `restarts-seen`: every restarted client is seen restarting (a new session) by the
    /// server, as many times as it was restarted.
    RestartsSeen,
}

impl Expectation {
    /// The scenario-wide expectations, by the name a scenario file and the verdict use.
    pub const NAMED: [(&'static str, Self); 5] = [
        ("all-live", Self::AllLive),
        ("burst-per-hold", Self::BurstPerHold),
        ("no-reconnect", Self::NoReconnect),
        ("none-missed", Self::NoneMissed),
        ("restarts-seen", Self::RestartsSeen),
    ];

    /// Its name in the verdict.
    pub fn name(&self) -> String {
        match self {
            Self::Client { label, .. } => label.clone(),
            named => Self::NAMED
                .iter()
                .find(|(_, e)| e == named)
                .map_or_else(|| "?".to_owned(), |(n, _)| (*n).to_owned()),
        }
    }
}

/// A fully expanded scenario: everything a run needs, nothing drawn later.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// Its name, as in `heartbeat-sim run NAME`, or its file's.
    pub name: String,
    /// One line saying what it shows.
    pub summary: String,
    /// Where it comes from.
    pub source: Source,
    /// The parameters it was expanded from.
    pub params: Params,
    /// The default latency of the client links (the `--latency` given, or the scenario's).
    pub latency: Latency,
    /// The server's failure detector; `None` for the server's default.
    pub detector: Option<DetectorConfig>,
    /// Simulation tick: turmoil advances every host one tick at a time and delivers messages
    /// only at tick boundaries, so a message's latency is rounded up to the tick grid, counted
    /// from the start of the tick it was sent in; actions take effect at the first tick boundary
    /// at or after their time. Timers inside a host stay exact. The run's cost is per tick and
    /// per host, whatever happens in it.
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
    /// The scenario's own expectations, in order.
    pub expect: Vec<Expectation>,
    /// Faults drawn at or after the end of the fault phase (also in `actions`): a run never
    /// applies them, since the heal phase starts there. `heartbeat-sim run` and `sweep` warn
    /// about them; `check` refuses the file.
    pub late: Vec<Timed>,
}

/// The default heartbeat interval, the seed's 1000 ms.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// The default fault phase.
pub const DURATION: Duration = Duration::from_secs(60);
/// The default simulation tick: the latency model's own resolution (whole milliseconds).
pub const TICK: Duration = Duration::from_millis(1);
/// The coarsest tick a run may ask for: a hundredth of the default heartbeat interval.
pub const MAX_TICK: Duration = Duration::from_millis(10);

/// The simulated wall clock starts here (2023-11-14T22:13:20Z), fixed so runs repeat.
pub const EPOCH_SECS: u64 = 1_700_000_000;

/// Checks a tick a run asks for: whole milliseconds, from [`TICK`] to [`MAX_TICK`].
pub fn check_tick(tick: Duration) -> Result<Duration, String> {
    if tick.subsec_nanos() % 1_000_000 != 0 || tick < TICK || tick > MAX_TICK {
        return Err(format!(
            "invalid tick {tick:?}: expected whole milliseconds from {} to {} ms",
            TICK.as_millis(),
            MAX_TICK.as_millis()
        ));
    }
    Ok(tick)
}

/// A uniform draw in `[lo, hi]`, in whole milliseconds, so schedules print exactly.
pub(crate) fn between(rng: &mut SmallRng, lo: Duration, hi: Duration) -> Duration {
    Duration::from_millis(rng.random_range(lo.as_millis() as u64..=hi.as_millis() as u64))
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
    /// One line for each of [`late`](Self::late): what, when, and that it is not applied.
    pub fn late_warnings(&self) -> Vec<String> {
        let name = |n: Node| match n {
            Node::Client(i) => self.clients[i].id.to_string(),
            Node::Server => "server".to_owned(),
        };
        self.late
            .iter()
            .map(|t| {
                format!(
                    "{} at {:.3}s is at or after the end of the fault phase ({:.3}s): not applied",
                    t.action.describe(name),
                    t.at.as_secs_f64(),
                    self.duration.as_secs_f64()
                )
            })
            .collect()
    }

    /// How long every surviving client may take to be back after the heal: a client on a stuck
    /// stream notices after its ack timeout (a legacy client, which reads no acks, when the
    /// server's idle timeout closes the stream and the close reaches it), then waits at most its
    /// largest backoff, then its next slot comes within one interval; plus latency both ways and
    /// a margin of one interval. The largest over the clients.
    pub fn drain_bound(&self) -> Duration {
        let server = self.server_config();
        let back = |c: &ClientPlan| {
            let notice = if c.legacy {
                server.idle_timeout_for(Some(c.interval)) + c.latency.max()
            } else {
                c.ack_timeout()
            };
            notice
                + c.reconnect.map_or(Duration::ZERO, |b| b.max())
                + c.interval * 2
                + c.latency.max() * 2
        };
        self.clients.iter().map(back).max().unwrap_or_default() + self.tick * 2
    }

    /// A node's name: the server, or the client's id.
    pub fn node_name(&self, node: Node) -> String {
        match node {
            Node::Client(i) => self
                .clients
                .get(i)
                .map_or_else(|| node.to_string(), |c| c.id.clone()),
            Node::Server => node.to_string(),
        }
    }

    /// An action in words, naming the clients by their ids.
    pub fn describe(&self, action: &Action) -> String {
        action.describe(|n| self.node_name(n))
    }

    /// The server's configuration: the defaults, with the scenario's detector.
    pub fn server_config(&self) -> ServerConfig {
        let config = ServerConfig::default();
        match &self.detector {
            Some(d) => config.detector(d.clone()),
            None => config,
        }
    }

    /// The command that replays this run.
    pub fn replay_command(&self) -> String {
        let mut cmd = match &self.source {
            Source::Builtin => format!("heartbeat-sim run {}", self.name),
            Source::File(path) => format!("heartbeat-sim run --file {path}"),
        };
        cmd.push_str(&format!(
            " --seed {} --latency {}",
            self.params.seed, self.latency
        ));
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
        if self.tick != TICK {
            cmd.push_str(&format!(" --tick {}", self.tick.as_millis()));
        }
        cmd
    }

    /// The heartbeats of client `c` that can be in flight at any moment: written but not yet
    /// delivered.
    pub fn in_flight_bound(&self, c: &ClientPlan) -> u64 {
        let window = c.latency.max() + self.tick * 2;
        1 + window.as_nanos().div_ceil(c.interval.as_nanos()) as u64
    }

    /// The heartbeats a crashed client may have written without the server ever learning of
    /// them (no later heartbeat reveals the gap): at most those of its last ack timeout, after
    /// which it would have dropped the stream itself, plus those in flight. A legacy client
    /// reads no acks and never drops a silent stream: no bound.
    pub fn crash_tail_bound(&self, c: &ClientPlan) -> u64 {
        if c.legacy {
            return u64::MAX;
        }
        let ack = c.ack_timeout();
        ack.as_nanos().div_ceil(c.interval.as_nanos()) as u64 + self.in_flight_bound(c)
    }
}
