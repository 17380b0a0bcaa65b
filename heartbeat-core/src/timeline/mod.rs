//! Timelines as pictures: one lane per client over time, drawn as SVG ([`svg`]). The model and
//! the renderer only: whoever has the events builds the lanes (the simulator from a server log or
//! a run, the server from its per-client history) and calls [`svg::render`]. Pure functions of
//! their input, no I/O, no clock: same timeline, same bytes.
//!
//! A lane shows the client's heartbeats as ticks, its missed gaps (from the heartbeat before a
//! gap to the one that revealed it), bursts, its `suspect`, `down` and `left` periods shaded,
//! its connections as a line with connects, reconnects, disconnects and new sessions marked.
//! Across lanes: faults as bands, the server's own restarts (the gap between two runs of a log)
//! and stalls.
//!
//! Beyond [`MAX_LANES`] clients only the worst are drawn ([`choose`]): ranked by missed
//! heartbeats (each counted as one interval of the client's silence, 1 s when its interval is
//! unknown) plus the time it was declared down; the rest are counted under the picture.

pub mod history;
pub mod svg;

use std::time::Duration;

use crate::liveness::Liveness;

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
    /// Heartbeats counted rather than kept one by one (a server's [`history`]): the period
    /// they arrived in, and how many. Drawn as a band over the period.
    pub counted: Vec<(Span, u64)>,
    /// One-way delays, in time order: one per heartbeat, or one per counted period.
    pub delays: Vec<DelaySample>,
    /// Detection times: from the last heartbeat (or the injected crash) to `down`.
    pub detections: Vec<Detection>,
}

/// One-way delay at one time of a lane: one heartbeat's (`typical` = `max`), or a period's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DelaySample {
    /// When.
    pub at: Duration,
    /// The typical delay (a heartbeat's own, or a period's mean).
    pub typical: Duration,
    /// The largest.
    pub max: Duration,
}

/// A detection: how long the detector took to declare a client `down`, drawn as an interval
/// with its length.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Detection {
    /// From the last heartbeat (or the crash that silenced it, in a simulated run) to `down`.
    pub span: Span,
    /// The detector's value (suspicion) when it declared the client down, when known.
    pub value: Option<f64>,
}

/// An expectation's window (a simulated run's): the time it judges and its verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// When.
    pub span: Span,
    /// Which lane, `None` for all.
    pub lane: Option<usize>,
    /// The expectation, e.g. `c2 down within 5s`.
    pub label: String,
    /// Whether it held.
    pub ok: bool,
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
    /// The failure detector and its settings, e.g. `phi threshold=8`; empty when unknown.
    pub detector: String,
    /// Expectations judged over a window (on a lane or on all).
    pub windows: Vec<Window>,
    /// Expectations judged over the whole run: name and verdict.
    pub verdicts: Vec<(String, bool)>,
}

/// The worst [`MAX_LANES`] lanes (by [`Lane::badness`], ties by order), kept in order; the
/// others' count; and each kept lane's old index.
pub fn choose(lanes: Vec<Lane>) -> (Vec<Lane>, usize, Vec<usize>) {
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
    /// A picture of `lanes` (at most [`MAX_LANES`] of them drawn, the worst, see [`choose`])
    /// over `0..end`, with a title and a subtitle: what a caller with lanes of its own (a
    /// server's history, a real-kernel run) hands to [`svg::render`].
    pub fn of_lanes(title: &str, subtitle: &str, lanes: Vec<Lane>, end: Duration) -> Self {
        let (lanes, hidden, _) = choose(lanes);
        Self {
            title: title.to_owned(),
            subtitle: subtitle.to_owned(),
            end: end.max(Duration::from_millis(1)),
            lanes,
            hidden,
            bands: Vec::new(),
            lines: Vec::new(),
            detector: String::new(),
            windows: Vec::new(),
            verdicts: Vec::new(),
        }
    }
}
