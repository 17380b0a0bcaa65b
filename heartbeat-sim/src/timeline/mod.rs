//! Timelines as pictures: one lane per client over time, from a server's log
//! ([`ServerLog`]: a real `heartbeat-server --json` output, or a simulated run's), drawn as SVG
//! ([`svg`]).
//!
//! A lane shows the client's heartbeats as ticks, its missed gaps (from the heartbeat before a
//! gap to the one that revealed it), bursts, its `suspect`, `down` and `left` periods shaded,
//! its connections as a line with connects, reconnects, disconnects and new sessions marked.
//! Across lanes: the scenario's faults as bands (for `heartbeat-sim run`), the server's own
//! restarts (the gap between two runs of the log) and stalls.
//!
//! Beyond [`MAX_LANES`] clients only the worst are drawn: ranked by missed heartbeats (each
//! counted as one interval of the client's silence, 1 s when its interval is unknown) plus the
//! time it was declared down; the rest are counted under the picture.

pub mod cli;
pub mod svg;

use std::time::Duration;

use heartbeat_core::liveness::Liveness;

use crate::harness::log::Record;
use crate::harness::world::Outcome;
use crate::scenario::{Action, Node};
use crate::serverlog::{Item, ServerLog};

/// Lanes drawn at most.
pub const MAX_LANES: usize = 50;

/// A period of time, since the start of the picture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// Start.
    pub from: Duration,
    /// End.
    pub to: Duration,
}

/// Something drawn at one instant of a lane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mark {
    /// The client identified itself on a new connection, unknown before.
    Connect,
    /// The connection ended, for this reason.
    Disconnect(String),
    /// A known client identified itself again.
    Reconnect,
    /// A new session of the client (a new process).
    Restart,
}

/// One client's lane.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Lane {
    /// The client's name.
    pub name: String,
    /// Its heartbeats' arrival times.
    pub beats: Vec<Duration>,
    /// Missed gaps, with how many heartbeats each lost.
    pub missed: Vec<(Span, u64)>,
    /// Bursts: when, and how many heartbeats.
    pub bursts: Vec<(Duration, u64)>,
    /// Periods in `suspect`, `down` or `left`.
    pub states: Vec<(Span, Liveness)>,
    /// Periods with a connection.
    pub connected: Vec<Span>,
    /// Connects, reconnects, disconnects, new sessions.
    pub marks: Vec<(Duration, Mark)>,
    /// Its interval, when declared.
    pub interval: Option<Duration>,
}

impl Lane {
    /// How bad this client's time was: missed heartbeats, each counted as one interval (1 s
    /// when unknown), plus the time declared down.
    pub fn badness(&self) -> Duration {
        let per = self.interval.unwrap_or(Duration::from_secs(1));
        let missed: u64 = self.missed.iter().map(|(_, n)| n).sum();
        let down: Duration = self
            .states
            .iter()
            .filter(|(_, s)| *s == Liveness::Down)
            .map(|(p, _)| p.to - p.from)
            .sum();
        per.saturating_mul(u32::try_from(missed).unwrap_or(u32::MAX)) + down
    }
}

/// What a band across the picture stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BandKind {
    /// A scenario's fault (hold, partition, crash, latency), by name.
    Fault(String),
    /// The server was not running (between two runs of the log).
    ServerDown,
    /// The server itself was stalled.
    Stalled,
}

/// A band: a period on one lane (`lane`, an index in [`Timeline::lanes`]) or on all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Band {
    /// When.
    pub span: Span,
    /// Which lane, `None` for all.
    pub lane: Option<usize>,
    /// What.
    pub kind: BandKind,
}

/// A scenario's fault, before lanes are chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// When.
    pub span: Span,
    /// The client it hit, by name; `None` for the server (every lane).
    pub client: Option<String>,
    /// What, e.g. `hold`.
    pub label: String,
}

/// A picture, ready to draw.
#[derive(Clone, Debug, PartialEq)]
pub struct Timeline {
    /// The first line.
    pub title: String,
    /// The second line.
    pub subtitle: String,
    /// The time axis runs from 0 to here.
    pub end: Duration,
    /// The lanes drawn, in the log's (or the scenario's) order.
    pub lanes: Vec<Lane>,
    /// Clients not drawn.
    pub hidden: usize,
    /// Bands.
    pub bands: Vec<Band>,
    /// Vertical lines across every lane: when, and a label (the simulator's heal).
    pub lines: Vec<(Duration, String)>,
}

/// Builds the lanes of `log`, its times moved by `offset` (the start of the picture is
/// `offset` before the log's first time), clients named in `order` first (even if never heard
/// from), then the others in the log's order.
fn lanes(log: &ServerLog, offset: Duration, order: &[String]) -> (Vec<Lane>, Vec<Band>) {
    let mut names: Vec<String> = order.to_vec();
    for c in &log.clients {
        if !names.contains(&c.name) {
            names.push(c.name.clone());
        }
    }
    let lane_of: Vec<usize> = log
        .clients
        .iter()
        .map(|c| {
            names
                .iter()
                .position(|n| *n == c.name)
                .expect("every client is named")
        })
        .collect();
    let mut lanes: Vec<Lane> = names
        .iter()
        .map(|n| Lane {
            name: n.clone(),
            interval: log
                .clients
                .iter()
                .find(|c| c.name == *n)
                .and_then(|c| c.interval),
            ..Lane::default()
        })
        .collect();
    let n = lanes.len();
    let mut state: Vec<(Liveness, Duration)> = vec![(Liveness::Up, Duration::ZERO); n];
    let mut conn: Vec<Option<Duration>> = vec![None; n];
    let mut last_beat: Vec<Option<Duration>> = vec![None; n];
    let mut bands = Vec::new();
    let shaded = |s: Liveness| matches!(s, Liveness::Suspect | Liveness::Down | Liveness::Left);
    let close_state = |lane: &mut Lane, st: &mut (Liveness, Duration), at: Duration| {
        if shaded(st.0) && at >= st.1 {
            lane.states.push((Span { from: st.1, to: at }, st.0));
        }
        *st = (Liveness::Up, at);
    };
    for s in &log.items {
        let at = offset + s.at();
        match s.item {
            Item::ServerRestart { previous_end_ns } => {
                let end = offset + Duration::from_nanos(previous_end_ns);
                for i in 0..n {
                    close_state(&mut lanes[i], &mut state[i], end);
                    if let Some(from) = conn[i].take() {
                        lanes[i].connected.push(Span { from, to: end });
                    }
                }
                bands.push(Band {
                    span: Span { from: end, to: at },
                    lane: None,
                    kind: BandKind::ServerDown,
                });
                continue;
            }
            Item::Stalled { late_ns } => {
                bands.push(Band {
                    span: Span {
                        from: at.saturating_sub(Duration::from_nanos(late_ns)),
                        to: at,
                    },
                    lane: None,
                    kind: BandKind::Stalled,
                });
                continue;
            }
            _ => {}
        }
        let Some(c) = s.item.client() else { continue };
        let i = lane_of[c as usize];
        let lane = &mut lanes[i];
        match s.item {
            Item::Beat { .. } => {
                lane.beats.push(at);
                last_beat[i] = Some(at);
            }
            Item::Burst { count, .. } => lane.bursts.push((at, count)),
            Item::Missed { count, .. } => {
                let from = last_beat[i].unwrap_or(at);
                lane.missed.push((Span { from, to: at }, count));
            }
            Item::Connected { resumed, .. } => {
                if let Some(from) = conn[i].replace(at) {
                    lane.connected.push(Span { from, to: at });
                }
                let mark = if resumed {
                    Mark::Reconnect
                } else {
                    Mark::Connect
                };
                lane.marks.push((at, mark));
            }
            Item::Disconnected { reason, .. } => {
                if let Some(from) = conn[i].take() {
                    lane.connected.push(Span { from, to: at });
                }
                let why = log.reasons[reason as usize].clone();
                lane.marks.push((at, Mark::Disconnect(why)));
            }
            Item::Restarted { .. } => lane.marks.push((at, Mark::Restart)),
            Item::Transition { to, .. } => {
                close_state(lane, &mut state[i], at);
                state[i] = (to, at);
            }
            Item::Duplicate { .. } | Item::Evicted { .. } => {}
            Item::ServerRestart { .. } | Item::Stalled { .. } => unreachable!("handled above"),
        }
    }
    let end = offset + log.end;
    for i in 0..n {
        close_state(&mut lanes[i], &mut state[i], end);
        if let Some(from) = conn[i].take() {
            lanes[i].connected.push(Span { from, to: end });
        }
    }
    (lanes, bands)
}

/// The worst [`MAX_LANES`] lanes (by [`Lane::badness`], ties by order), kept in order; the
/// others' count; and each kept lane's old index.
fn choose(lanes: Vec<Lane>) -> (Vec<Lane>, usize, Vec<usize>) {
    if lanes.len() <= MAX_LANES {
        let kept = (0..lanes.len()).collect();
        return (lanes, 0, kept);
    }
    let mut rank: Vec<(Duration, usize)> = lanes
        .iter()
        .enumerate()
        .map(|(i, l)| (l.badness(), i))
        .collect();
    rank.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut kept: Vec<usize> = rank[..MAX_LANES].iter().map(|&(_, i)| i).collect();
    kept.sort_unstable();
    let hidden = lanes.len() - MAX_LANES;
    let mut lanes: Vec<Option<Lane>> = lanes.into_iter().map(Some).collect();
    let chosen = kept
        .iter()
        .map(|&i| lanes[i].take().expect("once"))
        .collect();
    (chosen, hidden, kept)
}

impl Timeline {
    /// The picture of a server log. `offset` moves every time of the log (0 for a real log);
    /// `order` names lanes to draw first; `faults` become bands on their client's lane (or on
    /// all); `end` extends the axis past the log's last event.
    pub fn build(
        log: &ServerLog,
        offset: Duration,
        order: &[String],
        faults: &[Fault],
        end: Option<Duration>,
    ) -> Self {
        let (all, mut bands) = lanes(log, offset, order);
        let names: Vec<String> = all.iter().map(|l| l.name.clone()).collect();
        let (lanes, hidden, kept) = choose(all);
        for f in faults {
            let lane = match &f.client {
                None => None,
                Some(name) => {
                    let Some(old) = names.iter().position(|n| n == name) else {
                        continue;
                    };
                    match kept.iter().position(|&k| k == old) {
                        Some(new) => Some(new),
                        None => continue,
                    }
                }
            };
            bands.push(Band {
                span: f.span,
                lane,
                kind: BandKind::Fault(f.label.clone()),
            });
        }
        let last = faults
            .iter()
            .map(|f| f.span.to)
            .chain(end)
            .fold(offset + log.end, Duration::max);
        Self {
            title: String::new(),
            subtitle: String::new(),
            end: last.max(Duration::from_millis(1)),
            lanes,
            hidden,
            bands,
            lines: Vec::new(),
        }
    }

    /// The picture of a simulated run: the server's events (the same JSON lines as `run
    /// --json`, read by the same reader), the scenario's faults as bands, the heal as a line.
    pub fn of_run(out: &Outcome) -> Self {
        let log = ServerLog::from_text(&crate::serverlog::outcome_lines(out));
        let epoch = Duration::from_secs(crate::scenario::EPOCH_SECS);
        let offset = Duration::from_nanos(log.origin_unix_ns).saturating_sub(epoch);
        let s = &out.scenario;
        let order: Vec<String> = s.clients.iter().map(|c| c.id.clone()).collect();
        let mut t = Self::build(&log, offset, &order, &run_faults(out), Some(out.end));
        t.title = format!("heartbeat-sim run {}", s.name);
        // Clients may have intervals of their own: the range, or the one they share.
        let ms = |c: &crate::scenario::ClientPlan| c.interval.as_millis();
        let (lo, hi) = (
            s.clients.iter().map(ms).min().unwrap_or_default(),
            s.clients.iter().map(ms).max().unwrap_or_default(),
        );
        let every = if lo == hi {
            format!("{lo}")
        } else {
            format!("{lo}-{hi}")
        };
        t.subtitle = format!(
            "seed {}, latency {}, {} client{} every {every} ms; faults until {}, heal and \
             drain until {}",
            s.params.seed,
            s.latency,
            s.clients.len(),
            if s.clients.len() == 1 { "" } else { "s" },
            svg::seconds(out.heal_at),
            svg::seconds(out.end),
        );
        t.lines.push((out.heal_at, "heal".to_owned()));
        t
    }
}

/// The scenario's faults of a run, as periods: holds until their release, cuts until their
/// repair, crashes until the restart, latency changes until the next one; whatever is still
/// open at the heal ends there (links released and repaired, a crashed server restarted),
/// except crashed clients, which stay dead to the end.
pub fn run_faults(out: &Outcome) -> Vec<Fault> {
    let names: Vec<String> = out.scenario.clients.iter().map(|c| c.id.clone()).collect();
    let mut open: Vec<(Option<usize>, &'static str, Duration, String)> = Vec::new();
    let mut faults = Vec::new();
    let mut close = |open: &mut Vec<(Option<usize>, &'static str, Duration, String)>,
                     who: Option<usize>,
                     kinds: &[&str],
                     at: Duration| {
        open.retain(|(w, kind, from, label)| {
            if *w == who && kinds.contains(kind) {
                faults.push(Fault {
                    span: Span {
                        from: *from,
                        to: at,
                    },
                    client: w.map(|i| names[i].clone()),
                    label: label.clone(),
                });
                false
            } else {
                true
            }
        });
    };
    for e in &out.log {
        let at = e.at;
        match &e.record {
            Record::Action(a) => match *a {
                Action::Hold(i) => open.push((Some(i), "hold", at, "hold".into())),
                Action::Release(i) => close(&mut open, Some(i), &["hold"], at),
                Action::Partition(i) => open.push((Some(i), "cut", at, "partition".into())),
                Action::Repair(i) => close(&mut open, Some(i), &["cut"], at),
                Action::Latency(i, d) => {
                    close(&mut open, Some(i), &["latency"], at);
                    let label = format!("latency {} ms", d.as_millis());
                    open.push((Some(i), "latency", at, label));
                }
                Action::Crash(n) | Action::SilentCrash(n) => {
                    let who = match n {
                        Node::Client(i) => Some(i),
                        Node::Server => None,
                    };
                    let label = match (a, n) {
                        (Action::SilentCrash(_), Node::Server) => "server silent crash",
                        (_, Node::Server) => "server crash",
                        (Action::SilentCrash(_), _) => "silent crash",
                        _ => "crash",
                    };
                    open.push((who, "crash", at, label.into()));
                }
                Action::Bounce(n) => {
                    let who = match n {
                        Node::Client(i) => Some(i),
                        Node::Server => None,
                    };
                    close(&mut open, who, &["crash"], at);
                }
                Action::Start(_) | Action::Stop(_) => {}
            },
            Record::Heal { .. } => {
                for who in (0..names.len()).map(Some) {
                    close(&mut open, who, &["hold", "cut", "latency"], at);
                }
                close(&mut open, None, &["crash"], at);
            }
            _ => {}
        }
    }
    let rest: Vec<Option<usize>> = open.iter().map(|(w, ..)| *w).collect();
    for who in rest {
        close(
            &mut open,
            who,
            &["hold", "cut", "latency", "crash"],
            out.end,
        );
    }
    faults.sort_by_key(|f| (f.span.from, f.span.to));
    faults
}
