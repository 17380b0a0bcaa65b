//! A scenario run on real kernel TCP: the namespaces ([`super::netns`]), the binaries
//! ([`super::procs`]), the scenario's actions carried out at their times (real seconds), then
//! heal-and-drain as in a simulated run; the lines the processes printed are read back into the
//! simulated run's [`Outcome`], so the same oracles judge it and the same renderer prints it.
//!
//! # What becomes of each action
//! | action | on the kernel |
//! |---|---|
//! | partition / repair | `blackhole` rules in the router / removed |
//! | hold / release | **not realised** (no netem, no plug qdisc: nothing can queue segments); listed, skipped, not recorded |
//! | crash | SIGKILL: the kernel closes the sockets (FIN, or RST with unread data) |
//! | silent crash | `blackhole`, SIGKILL, the node's link down, rules removed: its FIN never leaves |
//! | restart | SIGKILL if running, link up, started again (a client: a new session) |
//! | start / stop | started / SIGTERM (the client says goodbye) |
//! | latency | not realised (no `netem` here): listed, skipped |
//!
//! # What is read back
//! The server's `--json` lines are the core's own `Event`s (read with its `Deserialize`), at
//! their `time`; its final `summary` is the report. A client's log lines (`Sending heartbeat`,
//! `connected`, `Failed to connect`, `closed the connection`, `not sent`) are its events at
//! their timestamps; what it sent is taken as what it wrote (no stream tap here), its stamp
//! completed from the server's copy when the server received it (the log prints 4 decimals).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize as _;
use serde_json::Value;

use heartbeat_core::analysis::{ClientSummary, Report};
use heartbeat_core::client;
use heartbeat_core::frame::{Frame, VERSION};
use heartbeat_core::server::Event;
use heartbeat_core::{ClientId, ClientKey, DisconnectReason, Seq, UnixTime};

use super::netns::{self, Net, NetnsError, Path, SERVER_IP};
use super::procs::{Line, PORT, ProcError, Procs, Stream};
use crate::harness::log::{Entry, Record};
use crate::harness::world::{self, Fate, Outcome};
use crate::scenario::{Action, Node, Scenario, Timed};

/// Why a real run could not be made.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RealError {
    /// The namespaces could not be made or changed.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// A process could not be started.
    #[error(transparent)]
    Proc(#[from] ProcError),
    /// Not running as root.
    #[error("a real run needs root (network namespaces): run it with sudo")]
    NotRoot,
    /// The server did not start listening.
    #[error("the server did not start within {0:?}: {1}")]
    ServerStart(Duration, String),
    /// Interrupted (SIGINT or SIGTERM); everything was cleaned up.
    #[error("interrupted; namespaces and processes removed")]
    Interrupted,
}

/// How a real run is made.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where `heartbeat-server` and `heartbeat-client` are.
    pub bin_dir: PathBuf,
}

/// A real run: its outcome, in the simulated run's shape, and what it could not realise.
#[derive(Debug)]
pub struct Real {
    /// The outcome (`steps` is 0: no simulation steps).
    pub outcome: Outcome,
    /// What of the scenario this kernel cannot make, each said once; skipped, never faked.
    pub skipped: Vec<String>,
}

/// What of `s` a real run cannot make on this machine (no `netem`; only the binaries' flags),
/// one line each: the run goes on without it.
pub fn unrealisable(s: &Scenario) -> Vec<String> {
    let mut out = vec![format!(
        "latency {}: the veth links have none to speak of (no netem here); the scenario's \
         latency is kept only as the oracles' bound on delays",
        s.latency
    )];
    let default = crate::scenario::ClientPlan::numbered(0, s.clients[0].interval, s.latency);
    for c in &s.clients {
        if c.latency != s.latency {
            out.push(format!(
                "{}: its own latency {} (no netem)",
                c.id, c.latency
            ));
        }
        if c.reconnect.is_some() && c.reconnect != default.reconnect {
            out.push(format!(
                "{}: its own backoff (heartbeat-client --reconnect has the default one)",
                c.id
            ));
        }
    }
    if s.detector.is_some() {
        out.push("the scenario's detector (the server runs its default)".to_owned());
    }
    let mut seen = Vec::new();
    for t in &s.actions {
        let line = match &t.action {
            Action::Latency(..) => "latency actions (no netem): skipped",
            Action::Hold(_) => {
                "hold / release (a firewall that queues, then lets everything through at once): \
                 no netem or plug qdisc here, so nothing can hold segments; skipped (a blackhole \
                 would be a dropping firewall, a partition: its backlog comes at the next \
                 retransmission, not at the release)"
            }
            _ => continue,
        };
        if !seen.contains(&line) {
            seen.push(line);
            out.push(line.to_owned());
        }
    }
    out
}

/// Whether a real run of `s` can stand beside its simulated run in `compare`: not when a fault
/// the simulated run makes within the fault phase is one the real run skips (a hold and its
/// release: what a real run never applies). The two runs would then have different faults, and every
/// difference would be the skipped fault's; `Err` says which fault, for one line. Latency
/// stays comparable: on the veth links it is nearly none, and the oracles' bound keeps it.
pub fn comparable(s: &Scenario) -> Result<(), String> {
    match s
        .actions
        .iter()
        .find(|t| t.at < s.duration && !realisable(&t.action))
    {
        None => Ok(()),
        Some(t) => Err(format!(
            "{} holds a link at {:.3}s (hold / release), which this kernel cannot make (no netem \
             or plug qdisc): the real run would skip it, so the two runs would not have the same \
             faults; nothing to compare",
            s.name,
            t.at.as_secs_f64()
        )),
    }
}

/// The actions a run applies, in order: as in a simulated run, those before the end of the fault
/// phase. One at or after it is never applied: the heal comes first (a fault drawn there is
/// warned about, `Scenario::late`; a cut's end drawn there is the heal's to make). Nor is a hold
/// or its release ([`realisable`]): skipped, and not recorded, so no oracle counts on it.
fn applied(s: &Scenario) -> impl Iterator<Item = &Timed> {
    s.actions
        .iter()
        .filter(|t| t.at < s.duration && realisable(&t.action))
}

/// False for what the kernel here cannot make and a run skips: a `hold` and its `release`, a
/// firewall that queues segments and delivers them at once when released (SCENARIOS.md: a
/// dropping firewall is a `partition`). Without netem or the plug qdisc nothing can queue a
/// link's segments; a blackhole in its place is another fault (measured: BENCHMARKS.md, "After
/// the fixes"). A latency action is applied as nothing, and recorded: the oracles' bound.
fn realisable(action: &Action) -> bool {
    !matches!(action, Action::Hold(_) | Action::Release(_))
}

/// The wall clock, read at the edge: a real run is real time.
fn unix_now() -> Duration {
    // Real runs live in real time; nothing simulated reads this clock.
    #[allow(clippy::disallowed_methods)]
    let now = SystemTime::now();
    now.duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// The state of a run in progress.
struct Runner<'a> {
    s: &'a Scenario,
    // Dropped in this order: the processes killed, then the namespaces removed.
    procs: Procs,
    net: Net,
    unix0: Duration,
    log: Vec<Entry>,
    incarnations: BTreeMap<Node, u32>,
    stop: &'a AtomicBool,
}

impl Runner<'_> {
    fn now(&self) -> Duration {
        unix_now().saturating_sub(self.unix0)
    }

    fn record(&mut self, r: Record) {
        let at = self.now();
        self.log.push(Entry { at, record: r });
    }

    /// Sleeps until `at` (run time); `Err` when interrupted.
    fn wait_until(&self, at: Duration) -> Result<(), RealError> {
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Err(RealError::Interrupted);
            }
            let now = self.now();
            if now >= at {
                return Ok(());
            }
            std::thread::sleep((at - now).min(Duration::from_millis(5)));
        }
    }

    fn ns(&self, node: Node) -> String {
        match node {
            Node::Server => self.net.server().to_owned(),
            Node::Client(i) => self.net.client(i).to_owned(),
        }
    }

    fn start(&mut self, node: Node) -> Result<(), RealError> {
        let inc = match self.incarnations.get(&node) {
            Some(i) => i + 1,
            None => 0,
        };
        self.incarnations.insert(node, inc);
        let args: Vec<String> = match node {
            Node::Server => vec![
                "--json".into(),
                "--bind".into(),
                SERVER_IP.to_string(),
                "--port".into(),
                PORT.to_string(),
            ],
            Node::Client(i) => {
                let c = &self.s.clients[i];
                let mut a = vec![
                    "--host".into(),
                    SERVER_IP.to_string(),
                    "--port".into(),
                    PORT.to_string(),
                    "--id".into(),
                    c.id.clone(),
                    "--interval".into(),
                    c.interval.as_millis().to_string(),
                ];
                if c.reconnect.is_some() {
                    a.push("--reconnect".into());
                }
                // Its own ack timeout only: the default is the client's own rule already.
                if c.ack_timeout.is_some() {
                    a.push("--ack-timeout".into());
                    a.push(format!("{}ms", c.ack_timeout().as_millis()));
                }
                if c.legacy {
                    a.push("--legacy".into());
                }
                a
            }
        };
        let ns = self.ns(node);
        self.procs.start(node, inc, &ns, &args)?;
        self.record(Record::Started {
            node,
            incarnation: inc,
        });
        Ok(())
    }

    fn clients_of(&self, node: Node) -> Vec<usize> {
        match node {
            Node::Client(i) => vec![i],
            Node::Server => (0..self.s.clients.len()).collect(),
        }
    }

    fn link(node: Node) -> Option<usize> {
        match node {
            Node::Client(i) => Some(i),
            Node::Server => None,
        }
    }

    /// Carries out `action` on the kernel (see the module's table).
    fn apply(&mut self, action: &Action) -> Result<(), RealError> {
        match action {
            Action::Bounce(n) => {
                self.procs.kill(*n);
                self.net.set_link(Self::link(*n), true)?;
                self.start(*n)?;
            }
            Action::Crash(n) => self.procs.kill(*n),
            Action::Partition(i) => self.net.set_path(*i, Path::Blackhole)?,
            // Never applied (see `realisable`): nothing here can hold a link's segments.
            Action::Hold(_) | Action::Release(_) | Action::Latency(..) => {}
            Action::Repair(i) => self.net.set_path(*i, Path::Open)?,
            Action::SilentCrash(n) => {
                let cut = self.clients_of(*n);
                for &i in &cut {
                    self.net.set_path(i, Path::Blackhole)?;
                }
                self.procs.kill(*n);
                self.net.set_link(Self::link(*n), false)?;
                for &i in &cut {
                    self.net.set_path(i, Path::Open)?;
                }
            }
            Action::Start(i) => self.start(Node::Client(*i))?,
            Action::Stop(i) => {
                self.procs
                    .terminate(Node::Client(*i), Duration::from_secs(3));
                let inc = self
                    .incarnations
                    .get(&Node::Client(*i))
                    .copied()
                    .unwrap_or(0);
                self.record(Record::Exited {
                    client: *i,
                    incarnation: inc,
                    failed: false,
                });
            }
        }
        Ok(())
    }

    /// Waits until the server's log says it listens.
    fn await_server(&self) -> Result<(), RealError> {
        let limit = Duration::from_secs(5);
        let start = self.now();
        loop {
            let lines = self.procs.lines();
            if lines
                .iter()
                .any(|l| l.node == Node::Server && l.text.contains("Awaiting connection"))
            {
                return Ok(());
            }
            if self.now() - start > limit {
                let said: Vec<String> = lines.into_iter().map(|l| l.text).collect();
                return Err(RealError::ServerStart(limit, said.join(" / ")));
            }
            if self.stop.load(Ordering::Relaxed) {
                return Err(RealError::Interrupted);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Runs `s` on the kernel; `stop` (set by a signal handler) interrupts it. Whatever happens,
/// the namespaces and processes are gone when it returns (or unwinds).
pub fn run(s: &Scenario, opts: &Options, stop: &AtomicBool) -> Result<Real, RealError> {
    if !netns::is_root() {
        return Err(RealError::NotRoot);
    }
    netns::sweep();
    let procs = Procs::new(&opts.bin_dir)?;
    let net = Net::create(s.clients.len())?;
    let mut r = Runner {
        s,
        procs,
        net,
        unix0: unix_now(),
        log: Vec::new(),
        incarnations: BTreeMap::new(),
        stop,
    };
    r.start(Node::Server)?;
    r.await_server()?;
    // Time 0 is when the server listens: the simulated server is up at 0 as well.
    let shift = r.now();
    r.unix0 += shift;
    for e in &mut r.log {
        e.at = Duration::ZERO;
    }
    let mut fates = Fate::at_start(s);
    for (i, c) in s.clients.iter().enumerate() {
        if !c.starts_late {
            r.start(Node::Client(i))?;
        }
    }
    for t in applied(s) {
        r.wait_until(t.at)?;
        r.record(Record::Action(t.action.clone()));
        r.apply(&t.action)?;
        if let Some((i, fate)) = world::fate_after(&t.action) {
            fates[i] = fate;
        }
    }
    r.wait_until(s.duration)?;

    // Heal and drain.
    let heal_at = r.now();
    for i in 0..s.clients.len() {
        r.net.set_path(i, Path::Open)?;
    }
    let restarted_server = !r.procs.is_running(Node::Server);
    if restarted_server {
        r.net.set_link(None, true)?;
        r.start(Node::Server)?;
    }
    r.record(Record::Heal { restarted_server });
    r.wait_until(heal_at + s.drain)?;
    let end = r.now();
    // A client that is meant to be alive but whose process ended gave up on its own.
    for (i, fate) in fates.iter().enumerate() {
        let node = Node::Client(i);
        if *fate == Fate::Alive && !r.procs.is_running(node) {
            let inc = r.incarnations.get(&node).copied().unwrap_or(0);
            r.record(Record::Exited {
                client: i,
                incarnation: inc,
                failed: true,
            });
        }
    }
    r.record(Record::Stop);
    r.procs.terminate(Node::Server, Duration::from_secs(10));
    for i in 0..s.clients.len() {
        r.procs.kill(Node::Client(i));
    }
    let lines = r.procs.lines();
    let server_incarnation = r.incarnations.get(&Node::Server).copied().unwrap_or(0);
    let unix0 = r.unix0;
    let mut log = std::mem::take(&mut r.log);
    drop(r);

    let report = read_lines(s, &lines, unix0, server_incarnation, &mut log);
    let (log, report) = world::cut_at_stop(log, report);
    world::gave_up(&log, &mut fates);
    let client_ips = (0..s.clients.len())
        .map(|i| std::net::IpAddr::V4(netns::client_ip(i)))
        .collect();
    Ok(Real {
        outcome: Outcome {
            scenario: s.clone(),
            log,
            report,
            client_ips,
            fates,
            heal_at,
            end,
            steps: 0,
        },
        skipped: unrealisable(s),
    })
}

/// Reads the processes' lines into `log` (server events, client events and what they wrote);
/// returns the last server run's final report.
fn read_lines(
    s: &Scenario,
    lines: &[Line],
    unix0: Duration,
    last_server: u32,
    log: &mut Vec<Entry>,
) -> Report {
    let at = |unix: Duration| unix.saturating_sub(unix0);
    let mut report = Report {
        clients: Vec::new(),
    };
    // (client, seq) -> the send stamps the server received.
    let mut stamps: BTreeMap<(usize, u64), Vec<UnixTime>> = BTreeMap::new();
    let index = |key: &ClientKey| s.clients.iter().position(|c| c.id == key.to_string());
    for l in lines {
        if l.node != Node::Server || l.stream != Stream::Stdout {
            continue;
        }
        let Ok(v) = serde_json::from_str::<Value>(&l.text) else {
            continue;
        };
        let time = v
            .get("time")
            .and_then(Value::as_f64)
            .map_or(Duration::ZERO, |t| Duration::from_secs_f64(t.max(0.0)));
        if v.get("event").and_then(Value::as_str) == Some("summary") {
            if l.incarnation == last_server {
                report = summary(&v);
            }
            continue;
        }
        let Ok(mut event) = Event::deserialize(&v) else {
            continue;
        };
        if let Event::Disconnected { reason, .. } = &mut event {
            *reason = reason_of(reason);
        }
        if let Event::Heartbeat {
            client, seq, sent, ..
        } = &event
        {
            if let Some(i) = index(client) {
                stamps.entry((i, seq.0)).or_default().push(*sent);
            }
        }
        log.push(Entry {
            at: at(time),
            record: Record::Server {
                incarnation: l.incarnation,
                event,
            },
        });
    }
    for l in lines {
        let Node::Client(i) = l.node else { continue };
        let Some((unix, text)) = client_line(&l.text) else {
            continue;
        };
        let Some(event) = client_event(text) else {
            continue;
        };
        let event = match event {
            client::Event::Sent { seq, at, late } => {
                // The log prints 4 decimals; the server's copy has them all.
                let full = stamps.get(&(i, seq.0)).and_then(|v| {
                    v.iter()
                        .find(|t| t.as_nanos() / 100_000 == at.as_nanos() / 100_000)
                        .copied()
                });
                client::Event::Sent {
                    seq,
                    at: full.unwrap_or(at),
                    late,
                }
            }
            other => other,
        };
        let when = at(unix);
        let wrote = match &event {
            client::Event::Connected { .. } if !s.clients[i].legacy => {
                ClientId::new(&s.clients[i].id).ok().map(|id| Frame::Hello {
                    version: VERSION,
                    client: id,
                    interval: s.clients[i].interval,
                    session: u64::from(l.incarnation) + 1,
                    advice: false,
                })
            }
            client::Event::Sent { seq, at, .. } => Some(Frame::Beat {
                seq: *seq,
                sent: *at,
            }),
            _ => None,
        };
        log.push(Entry {
            at: when,
            record: Record::Client {
                client: i,
                incarnation: l.incarnation,
                event,
            },
        });
        if let Some(frame) = wrote {
            log.push(Entry {
                at: when,
                record: Record::Wrote {
                    client: i,
                    incarnation: l.incarnation,
                    frame,
                },
            });
        }
    }
    log.sort_by_key(|e| e.at);
    report
}

/// A reason read back from JSON (its text, [`DisconnectReason::Logged`]) as the variant it
/// names, for the reasons without fields (the stop's `Local` is how a run's end is told apart).
fn reason_of(reason: &DisconnectReason) -> DisconnectReason {
    let DisconnectReason::Logged(text) = reason else {
        return reason.clone();
    };
    [
        DisconnectReason::ClosedByPeer,
        DisconnectReason::Goodbye,
        DisconnectReason::Local,
    ]
    .into_iter()
    .find(|r| r.to_string() == *text)
    .unwrap_or_else(|| reason.clone())
}

/// The report of a `summary` line: the rows' counters and states (the distributions are left
/// out: nothing judges them).
fn summary(v: &Value) -> Report {
    let rows = v
        .get("clients")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    let mut clients = Vec::new();
    for r in rows {
        let field = |name: &str| r.get(name).cloned().unwrap_or(Value::Null);
        let num = |name: &str| field(name).as_u64().unwrap_or(0);
        let unix = |name: &str| {
            field(name)
                .as_str()
                .and_then(crate::serverlog::parse_unix)
                .map(UnixTime::from_nanos)
        };
        let (Ok(client), Ok(protocol), Ok(state)) = (
            serde_json::from_value(field("client")),
            serde_json::from_value(field("protocol")),
            serde_json::from_value(field("state")),
        ) else {
            continue;
        };
        clients.push(ClientSummary {
            client,
            protocol,
            state,
            expected: field("expected").as_bool().unwrap_or(false),
            connected: field("connected").as_bool().unwrap_or(false),
            interval_ms: field("interval_ms").as_f64(),
            received: num("received"),
            missed: num("missed"),
            missed_ranges: Vec::new(),
            duplicates: num("duplicates"),
            restarts: num("restarts"),
            bursts: num("bursts"),
            connections: num("connections"),
            highest_seq: field("highest_seq").as_u64().map(Seq),
            first_seen: unix("first_seen"),
            last_seen: unix("last_seen"),
            delay_ms: None,
            negative_delays: num("negative_delays"),
            inter_arrival_ms: None,
            clock_offset_ms: None,
            // Real runs set no QoS target (a scenario's detector is not realised).
            target_reachable: None,
            advised_interval_ms: None,
            alpha_ms: None,
            loss: None,
            delay_variance: None,
        });
    }
    Report { clients }
}

/// A client log line's timestamp (Unix time) and message: `2026-12-05T02:11:17.342734Z  INFO
/// message`.
fn client_line(line: &str) -> Option<(Duration, &str)> {
    let (stamp, rest) = line.split_once(' ')?;
    let rest = rest.trim_start();
    let (_level, msg) = rest.split_once(' ')?;
    Some((rfc3339(stamp)?, msg.trim_start()))
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` as Unix time.
fn rfc3339(s: &str) -> Option<Duration> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<u64>().ok());
    let (h, min, sec) = (t.next()??, t.next()??, t.next()??);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
    let nanos = crate::serverlog::parse_unix(&format!("0.{frac}"))?;
    Some(
        Duration::from_secs(days * 86_400 + h * 3600 + min * 60 + sec)
            + Duration::from_nanos(nanos),
    )
}

/// `78.505ms` (as the client prints durations).
fn ms(s: &str) -> Option<Duration> {
    let v: f64 = s.trim().strip_suffix("ms")?.parse().ok()?;
    (v.is_finite() && v >= 0.0).then(|| Duration::from_secs_f64(v / 1000.0))
}

/// The client event a log message tells of, as far as the message says it.
fn client_event(msg: &str) -> Option<client::Event> {
    if msg.starts_with("Successfully connected to ") {
        return Some(client::Event::Connected { attempt: 0 });
    }
    if let Some(rest) = msg.strip_prefix("Sequence #") {
        let (seq, rest) = rest.split_once(": Sending heartbeat at ")?;
        let at = crate::serverlog::parse_unix(rest.trim_end_matches('.'))?;
        return Some(client::Event::Sent {
            seq: Seq(seq.parse().ok()?),
            at: UnixTime::from_nanos(at),
            late: Duration::ZERO,
        });
    }
    if let Some(rest) = msg.strip_prefix("Heartbeats #") {
        let (range, _) = rest.split_once(" were not sent")?;
        let (a, b) = range.split_once("-#")?;
        return Some(client::Event::Skipped {
            first: Seq(a.parse().ok()?),
            last: Seq(b.parse().ok()?),
        });
    }
    if let Some(rest) = msg.strip_prefix("Failed to connect to server: ") {
        let (reason, retry) = rest.rsplit_once("; retrying in ")?;
        return Some(client::Event::ConnectFailed {
            attempt: 0,
            reason: reason.to_owned(),
            retry_in: ms(retry),
        });
    }
    if let Some(rest) = msg.strip_prefix("Server may have abruptly closed the connection (") {
        let (reason, retry) = rest.rsplit_once("); reconnecting in ")?;
        let ack = reason
            .strip_prefix("no ack for ")
            .and_then(|d| heartbeat_core::units::parse_duration(d).ok());
        let reason = if let Some(d) = ack {
            DisconnectReason::AckTimeout(d)
        } else {
            DisconnectReason::ClosedByPeer
        };
        return Some(client::Event::Disconnected {
            reason,
            retry_in: ms(retry),
        });
    }
    if let Some(rest) = msg.strip_prefix("Server silent: no acknowledgement for ") {
        let (silence, _) = rest.split_once(';')?;
        return Some(client::Event::ServerSilent {
            silence: ms(silence)?,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Params;

    #[test]
    fn an_action_after_the_fault_phase_is_not_applied_the_heal_comes_first() {
        // `partition` with seed 6 over 20 s draws a cut at 11.67 s for 11.7 s: its repair at
        // 23.37 s is after the heal at 20 s, which ends the cut in a simulated run. A real run
        // used to wait for it, and healed 3.4 s late.
        let params = Params {
            duration: Some(Duration::from_secs(20)),
            ..Params::seed(6)
        };
        let s = Scenario::build("partition", &params).expect("built-in");
        let last = s.actions.last().expect("the cut and its repair");
        assert_eq!(last.action, Action::Repair(0));
        assert_eq!(last.at, Duration::from_millis(23_369));
        let applied: Vec<_> = applied(&s).map(|t| t.action.clone()).collect();
        assert_eq!(applied, [Action::Partition(0)]);
    }

    #[test]
    fn a_hold_is_listed_as_not_realised_and_never_applied_nor_recorded() {
        // A blackhole in a hold's place was a dropping firewall: its backlog came at the next
        // retransmission, 0.7 to 0.9 s after the release, one heartbeat then the rest, never the
        // one burst the scenario's `burst-per-hold` checks.
        let params = Params {
            duration: Some(Duration::from_secs(20)),
            ..Params::seed(1)
        };
        let s = Scenario::build("firewall", &params).expect("built-in");
        assert!(
            applied_all(&s).any(|t| matches!(t.action, Action::Hold(_))),
            "{:?}",
            s.actions
        );
        assert!(
            applied(&s).all(|t| !matches!(t.action, Action::Hold(_) | Action::Release(_))),
            "{:?}",
            applied(&s).collect::<Vec<_>>()
        );
        let listed = unrealisable(&s);
        assert!(
            listed
                .iter()
                .any(|l| l.starts_with("hold / release") && l.contains("skipped")),
            "{listed:#?}"
        );
    }

    #[test]
    fn a_scenario_with_a_hold_is_not_comparable_and_one_without_is() {
        let params = Params {
            duration: Some(Duration::from_secs(20)),
            ..Params::seed(1)
        };
        for name in ["firewall", "swizzle"] {
            let s = Scenario::build(name, &params).expect("built-in");
            let why = comparable(&s).unwrap_err();
            assert!(
                why.contains("hold / release") && why.contains("nothing to compare"),
                "{why}"
            );
        }
        for name in [
            "steady",
            "partition",
            "client-crash",
            "server-restart",
            "competing-clients",
        ] {
            let s = Scenario::build(name, &params).expect("built-in");
            assert_eq!(comparable(&s), Ok(()), "{name}");
        }
    }

    /// The scenario's actions within the fault phase, realisable or not.
    fn applied_all(s: &Scenario) -> impl Iterator<Item = &Timed> {
        s.actions.iter().filter(|t| t.at < s.duration)
    }

    #[test]
    fn a_client_log_line_reads_back_into_its_event() {
        let (t, msg) = client_line(
            "2026-12-05T02:11:17.342734Z  INFO Sequence #1: Sending heartbeat at 1796436677.3427.",
        )
        .expect("a line");
        assert_eq!(t, Duration::from_nanos(1_796_436_677_342_734_000));
        let Some(client::Event::Sent { seq, at, .. }) = client_event(msg) else {
            panic!("not a Sent: {msg}");
        };
        assert_eq!((seq, at.as_nanos()), (Seq(1), 1_796_436_677_342_700_000));
        let e = client_event(
            "Failed to connect to server: 10.231.0.2:6510: Connection refused (os error 111); retrying in 78.505ms",
        );
        assert!(
            matches!(e, Some(client::Event::ConnectFailed { retry_in: Some(d), .. }) if d == Duration::from_micros(78_505)),
            "{e:?}"
        );
        assert!(client_event("Heartbeats #3-#7 were not sent (disconnected, or ...)").is_some());
        assert_eq!(
            rfc3339("1970-01-01T00:00:01.5Z"),
            Some(Duration::from_millis(1500))
        );
    }
}
