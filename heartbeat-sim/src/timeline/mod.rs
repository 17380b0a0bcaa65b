//! Timelines as pictures: one lane per client over time, from a server's log
//! ([`ServerLog`]: a real `heartbeat-server --json` output, or a simulated run's), drawn as SVG
//! ([`svg`]). The model and the renderer live in [`heartbeat_core::timeline`] (the server draws
//! its status page with them); this module builds the lanes from logs and scenarios.
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

use std::time::Duration;

use heartbeat_core::liveness::Liveness;
use heartbeat_core::server::Event;
pub use heartbeat_core::timeline::{
    Band, BandKind, DelaySample, Detection, Fault, Lane, MAX_LANES, Mark, Span, Timeline, Window,
    choose, svg,
};

use crate::harness::log::Record;
use crate::harness::world::Outcome;
use crate::scenario::{Action, ClientRule, Expectation, Node};
use crate::serverlog::{Item, ServerLog};

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
                if let (Liveness::Down, Some(from)) = (to, last_beat[i]) {
                    lane.detections.push(Detection {
                        span: Span { from, to: at },
                        value: None,
                    });
                }
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

/// The picture of a server log. `offset` moves every time of the log (0 for a real log);
/// `order` names lanes to draw first; `faults` become bands on their client's lane (or on
/// all); `end` extends the axis past the log's last event.
pub fn build(
    log: &ServerLog,
    offset: Duration,
    order: &[String],
    faults: &[Fault],
    end: Option<Duration>,
) -> Timeline {
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
    Timeline {
        title: String::new(),
        subtitle: String::new(),
        end: last.max(Duration::from_millis(1)),
        lanes,
        hidden,
        bands,
        lines: Vec::new(),
        detector: String::new(),
        windows: Vec::new(),
        verdicts: Vec::new(),
    }
}

/// The picture of a simulated run: the server's events (the same JSON lines as `run
/// --json`, read by the same reader), the scenario's faults as bands, the heal as a line.
pub fn of_run(out: &Outcome) -> Timeline {
    let log = ServerLog::from_text(&crate::serverlog::outcome_lines(out));
    let epoch = Duration::from_secs(crate::scenario::EPOCH_SECS);
    let offset = Duration::from_nanos(log.origin_unix_ns).saturating_sub(epoch);
    let s = &out.scenario;
    let order: Vec<String> = s.clients.iter().map(|c| c.id.clone()).collect();
    let mut t = build(&log, offset, &order, &run_faults(out), Some(out.end));
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
    t.detector = s.server_config().detector_config().to_string();
    let faults = run_faults(out);
    run_lanes(out, &mut t, &faults);
    expectations(out, &mut t, &faults);
    t
}

/// What only a run has, on its drawn lanes: each heartbeat's one-way delay, and detections
/// measured from the truth (a client's crash, when one silenced it; else its last heartbeat)
/// with the detector's value.
fn run_lanes(out: &Outcome, t: &mut Timeline, faults: &[Fault]) {
    let lane_of = |t: &Timeline, name: &str| t.lanes.iter().position(|l| l.name == name);
    for lane in &mut t.lanes {
        lane.detections.clear();
    }
    let mut last_beat: std::collections::BTreeMap<String, Duration> = Default::default();
    let mut prev_down: std::collections::BTreeMap<String, Duration> = Default::default();
    for e in &out.log {
        let Record::Server { event, .. } = &e.record else {
            continue;
        };
        match event {
            Event::Heartbeat {
                client, delay_ns, ..
            } => {
                let name = client.to_string();
                if let Some(i) = lane_of(t, &name) {
                    let delay = Duration::from_nanos(u64::try_from(*delay_ns).unwrap_or(0));
                    t.lanes[i].delays.push(DelaySample {
                        at: e.at,
                        typical: delay,
                        max: delay,
                    });
                }
                last_beat.insert(name, e.at);
            }
            Event::Transition {
                client,
                to: heartbeat_core::Liveness::Down,
                suspicion,
                ..
            } => {
                let name = client.to_string();
                let Some(i) = lane_of(t, &name) else { continue };
                let last = last_beat.get(&name).copied();
                // The truth: the latest crash of this client since its previous `down`.
                let since = prev_down.get(&name).copied().unwrap_or_default();
                let crash = faults
                    .iter()
                    .filter(|f| f.client.as_deref() == Some(name.as_str()))
                    .filter(|f| f.label.contains("crash"))
                    .map(|f| f.span.from)
                    .filter(|from| *from >= since && *from <= e.at)
                    .max();
                prev_down.insert(name, e.at);
                let Some(from) = crash.or(last) else { continue };
                t.lanes[i].detections.push(Detection {
                    span: Span { from, to: e.at },
                    value: suspicion.is_finite().then_some(*suspicion),
                });
            }
            _ => {}
        }
    }
}

/// The run's expectations and their verdicts, all listed in the header, and drawn as windows
/// where an expectation judges a period: each crash of a client that must be declared down
/// within a bound, each hold that must come out as one burst.
fn expectations(out: &Outcome, t: &mut Timeline, faults: &[Fault]) {
    let verdict = crate::oracle::check(out);
    let s = &out.scenario;
    let ok = |name: &str| {
        verdict
            .checks
            .iter()
            .find(|c| c.name == name)
            .is_none_or(crate::oracle::Check::ok)
    };
    let lane_of = |name: &str| t.lanes.iter().position(|l| l.name == name);
    let mut windows = Vec::new();
    let mut verdicts = Vec::new();
    for e in &s.expect {
        let name = e.name();
        verdicts.push((name.clone(), ok(&name)));
        match e {
            Expectation::Client {
                clients,
                rule: ClientRule::DownWithin(bound),
                ..
            } => {
                for &c in clients {
                    let Some(client) = s.clients.get(c) else {
                        continue;
                    };
                    let Some(lane) = lane_of(&client.id) else {
                        continue;
                    };
                    for f in faults.iter().filter(|f| {
                        f.client.as_deref() == Some(client.id.as_str()) && f.label.contains("crash")
                    }) {
                        windows.push(Window {
                            span: Span {
                                from: f.span.from,
                                to: f.span.from + *bound,
                            },
                            lane: Some(lane),
                            label: name.clone(),
                            ok: ok(&name),
                        });
                    }
                }
            }
            Expectation::BurstPerHold => {
                for (c, from, to) in crate::oracle::hold_windows(out) {
                    let Some(client) = s.clients.get(c) else {
                        continue;
                    };
                    let Some(lane) = lane_of(&client.id) else {
                        continue;
                    };
                    windows.push(Window {
                        span: Span { from, to },
                        lane: Some(lane),
                        label: name.clone(),
                        ok: ok(&name),
                    });
                }
            }
            _ => {}
        }
    }
    t.windows = windows;
    t.verdicts = verdicts;
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
