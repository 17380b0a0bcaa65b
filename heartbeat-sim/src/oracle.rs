//! The oracles: invariants every scenario must satisfy for any seed, checked against the ground
//! truth (what each client really wrote, tapped from its stream), plus each scenario's own
//! expectations.
//!
//! # Definitions
//! - A client's *sessions* are its process runs (one `HELLO` nonce each); within a session,
//!   slot `k` carries sequence number `k + 1`, and every slot up to the last one written was
//!   either written or skipped (while disconnected).
//! - A server *incarnation* is one run of the server process; an *epoch* is the part of one
//!   client's history in one incarnation between two `restarted` events.
//!
//! # Invariants (all scenarios, any seed)
//! 1. `truth`: within a session, a client writes strictly increasing sequence numbers; its core
//!    accounts for every slot up to its last heartbeat once, as sent or skipped; what reached
//!    the stream is what the core sent (a sent heartbeat may miss the stream only when the
//!    connection was lost under it). The ground truth used below is the stream tap.
//! 2. `attribution`: every heartbeat the server counts for client X came over a connection
//!    from X's host and is one X wrote (same sequence number and send stamp); an epoch never
//!    mixes two sessions.
//! 3. `accounting`: in every epoch, each slot from 1 to the highest sequence number received
//!    is counted exactly once, either received or missed (a late arrival moves it from missed
//!    to received); nothing is counted twice, so a gap is counted once.
//! 4. `report`: the final report's `received` and `missed` equal the totals of the last
//!    incarnation's events, and `received <= sent`.
//! 5. `tail`: the heartbeats written after the highest one the server received (so neither
//!    received nor missed) are bounded: for a live session, by what can be in flight
//!    (`1 + ceil((max latency + 2 ticks) / interval)`); for a session that crashed or stopped,
//!    by what a client writes in one ack timeout plus what is in flight (it drops a silent
//!    stream after its ack timeout, and nothing after its last heartbeat can reveal the gap).
//! 6. `held`: every heartbeat written while its link was held (between `hold` and `release`)
//!    is received and never reported missed. This holds while holds stay shorter than the
//!    server's idle timeout (10 s), after which the server rightly gives up on the stream.
//! 7. `liveness`: after heal-and-drain, every surviving client is `up` and connected, still
//!    writing, and its last heartbeat was received within one interval plus latency of the end;
//!    every client that crashed for good is `down` and no longer connected (the detector and the
//!    idle timeout noticed); every stopped client has `left`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use heartbeat_core::analysis::ClientSummary;
use heartbeat_core::client;
use heartbeat_core::frame::Frame;
use heartbeat_core::server::Event;
use heartbeat_core::{ClientKey, ConnId, DisconnectReason, UnixTime};

use crate::log::Record;
use crate::scenario::Action;
use crate::world::{EPOCH_SECS, Fate, Outcome};

/// One checked property.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// Its name (`accounting`, `held`, ...).
    pub name: &'static str,
    /// The failures; empty when it holds.
    pub failures: Vec<String>,
}

impl Check {
    /// True when it holds.
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }
}

/// All checks of one run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// In a fixed order.
    pub checks: Vec<Check>,
}

impl Verdict {
    /// True when every check holds.
    pub fn ok(&self) -> bool {
        self.checks.iter().all(Check::ok)
    }

    /// The failures, each prefixed with its check's name.
    pub fn failures(&self) -> impl Iterator<Item = String> + '_ {
        self.checks
            .iter()
            .flat_map(|c| c.failures.iter().map(move |f| format!("{}: {f}", c.name)))
    }
}

impl fmt::Display for Verdict {
    /// `verdict: ok` or `verdict: FAILED`, then one line per check.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "verdict: {}", if self.ok() { "ok" } else { "FAILED" })?;
        for c in &self.checks {
            if c.ok() {
                writeln!(f, "  ok    {}", c.name)?;
            } else {
                writeln!(f, "  FAIL  {}", c.name)?;
                for (i, failure) in c.failures.iter().enumerate() {
                    if i == 20 {
                        writeln!(f, "        ... {} more", c.failures.len() - 20)?;
                        break;
                    }
                    writeln!(f, "        {failure}")?;
                }
            }
        }
        Ok(())
    }
}

/// One heartbeat a client wrote.
#[derive(Clone, Copy, Debug)]
pub struct Written {
    /// Its send stamp.
    pub stamp: UnixTime,
    /// When it was written.
    pub at: Duration,
}

/// One session of a client, as written.
#[derive(Clone, Debug, Default)]
pub struct Session {
    /// Its `HELLO` nonce.
    pub nonce: u64,
    /// The heartbeats written, by sequence number.
    pub beats: BTreeMap<u64, Written>,
}

impl Session {
    /// The last sequence number written (0 when none).
    pub fn last(&self) -> u64 {
        self.beats.keys().next_back().copied().unwrap_or(0)
    }
}

/// What each client wrote: the ground truth.
#[derive(Clone, Debug, Default)]
pub struct Truth {
    /// Per client, its sessions in order, as written to the stream (the tap).
    pub sessions: Vec<Vec<Session>>,
    /// Per client, slots its core reported skipped (`Skipped` events), over all its runs.
    pub skipped: Vec<u64>,
    /// Failures of the `truth` check.
    failures: Vec<String>,
}

/// One run of a client process as its own events tell it.
#[derive(Clone, Debug, Default)]
struct Run {
    sent: BTreeMap<u64, UnixTime>,
    skipped: BTreeSet<u64>,
    /// Connections lost because the peer closed or a read or write failed: a heartbeat the core
    /// sent may not have reached the stream.
    lost: u64,
}

impl Truth {
    /// Reads the tapped frames of `out`.
    pub fn new(out: &Outcome) -> Self {
        let n = out.scenario.clients.len();
        let mut t = Self {
            sessions: vec![Vec::new(); n],
            skipped: vec![0; n],
            failures: Vec::new(),
        };
        let mut runs: BTreeMap<(usize, u32), Run> = BTreeMap::new();
        for e in &out.log {
            if let Record::Client {
                client,
                incarnation,
                event,
            } = &e.record
            {
                let run = runs.entry((*client, *incarnation)).or_default();
                match event {
                    client::Event::Sent { seq, at, .. } => {
                        run.sent.insert(seq.0, *at);
                    }
                    client::Event::Skipped { first, last } => {
                        run.skipped.extend(first.0..=last.0);
                        t.skipped[*client] += last.0 - first.0 + 1;
                    }
                    client::Event::Disconnected {
                        reason: DisconnectReason::ClosedByPeer,
                        ..
                    } => run.lost += 1,
                    _ => {}
                }
                continue;
            }
            let Record::Wrote { client, frame } = &e.record else {
                continue;
            };
            let sessions = &mut t.sessions[*client];
            match frame {
                Frame::Hello { session, .. }
                    if sessions.last().is_none_or(|s| s.nonce != *session) =>
                {
                    sessions.push(Session {
                        nonce: *session,
                        beats: BTreeMap::new(),
                    });
                }
                Frame::Beat { seq, sent } => {
                    let Some(s) = sessions.last_mut() else {
                        t.failures
                            .push(format!("c{} wrote BEAT {seq} before HELLO", client + 1));
                        continue;
                    };
                    if seq.0 <= s.last() {
                        t.failures.push(format!(
                            "c{} wrote BEAT {seq} after BEAT {}",
                            client + 1,
                            s.last()
                        ));
                    }
                    s.beats.insert(
                        seq.0,
                        Written {
                            stamp: *sent,
                            at: e.at,
                        },
                    );
                }
                _ => {}
            }
        }
        t.cross_check(&runs);
        t
    }

    /// The client's own account (its `Sent` and `Skipped` events) against the wire: every slot
    /// up to the last is sent or skipped, once; every heartbeat on the wire was sent by the core;
    /// a sent heartbeat is missing from the wire only after a lost connection.
    fn cross_check(&mut self, runs: &BTreeMap<(usize, u32), Run>) {
        for (&(i, inc), run) in runs {
            let c = i + 1;
            let last = run.sent.keys().next_back().copied().unwrap_or(0);
            let both = run.sent.keys().filter(|s| run.skipped.contains(s)).count();
            let covered = run.sent.len() + run.skipped.iter().filter(|&&s| s <= last).count();
            if both > 0 || covered as u64 != last {
                self.failures.push(format!(
                    "c{c} run {inc}: {} sent + {} skipped do not cover slots 1..={last} once",
                    run.sent.len(),
                    run.skipped.len()
                ));
            }
            let on_wire = |seq: u64, stamp: UnixTime| {
                self.sessions[i]
                    .iter()
                    .any(|s| s.beats.get(&seq).is_some_and(|w| w.stamp == stamp))
            };
            let unwritten = run
                .sent
                .iter()
                .filter(|&(&seq, &stamp)| !on_wire(seq, stamp))
                .count() as u64;
            if unwritten > run.lost {
                self.failures.push(format!(
                    "c{c} run {inc}: {unwritten} heartbeats sent by the core never reached the                      stream ({} connections lost)",
                    run.lost
                ));
            }
        }
        for (i, sessions) in self.sessions.iter().enumerate() {
            for (seq, w) in sessions.iter().flat_map(|s| s.beats.iter()) {
                let sent = runs
                    .range((i, 0)..=(i, u32::MAX))
                    .any(|(_, r)| r.sent.get(seq) == Some(&w.stamp));
                if !sent {
                    self.failures.push(format!(
                        "c{}: BEAT {seq} on the wire was never sent by the core",
                        i + 1
                    ));
                }
            }
        }
    }

    /// Heartbeats client `i` wrote, over all its sessions.
    pub fn sent(&self, i: usize) -> u64 {
        self.sessions[i].iter().map(|s| s.beats.len() as u64).sum()
    }

    /// The session of client `i` that wrote `seq` with `stamp`.
    fn find(&self, i: usize, seq: u64, stamp: UnixTime) -> Option<usize> {
        self.sessions[i]
            .iter()
            .position(|s| s.beats.get(&seq).is_some_and(|w| w.stamp == stamp))
    }
}

/// One client's history in one server incarnation between two restarts.
#[derive(Clone, Debug, Default)]
struct Epoch {
    received: BTreeMap<u64, UnixTime>,
    missed: BTreeSet<u64>,
    /// Truth session of the beats received, when consistent.
    session: Option<usize>,
}

impl Epoch {
    fn highest(&self) -> u64 {
        self.received.keys().next_back().copied().unwrap_or(0)
    }
}

/// The server's view, rebuilt from its events.
#[derive(Debug, Default)]
struct View {
    /// Per incarnation, per client index, its epochs.
    incarnations: BTreeMap<u32, BTreeMap<usize, Vec<Epoch>>>,
    bursts: Vec<(usize, u64, u64)>,
    /// Heartbeat delays over the live bound and liveness changes away from `up`, as failures of
    /// `all_live`.
    late: Vec<String>,
}

/// Checks every oracle on `out`.
pub fn check(out: &Outcome) -> Verdict {
    let s = &out.scenario;
    let truth = Truth::new(out);
    let index: BTreeMap<String, usize> = s
        .clients
        .iter()
        .enumerate()
        .map(|(i, c)| (c.id.clone(), i))
        .collect();
    let client_of = |key: &ClientKey| match key {
        ClientKey::Id(id) => index.get(id.as_str()).copied(),
        ClientKey::Peer(_) => None,
    };
    let mut attribution = Vec::new();
    let mut accounting = Vec::new();
    let mut view = View::default();
    let live_bound = s.params.latency.max() + s.tick * 2;

    // Rebuild the server's view, checking attribution and double counting as we go.
    let mut peers: BTreeMap<(u32, ConnId), std::net::IpAddr> = BTreeMap::new();
    for e in &out.log {
        let Record::Server { incarnation, event } = &e.record else {
            continue;
        };
        let inc = *incarnation;
        let epochs = view.incarnations.entry(inc).or_default();
        let current = |key: &ClientKey, epochs: &mut BTreeMap<usize, Vec<Epoch>>| {
            let i = client_of(key)?;
            let list = epochs.entry(i).or_default();
            if list.is_empty() {
                list.push(Epoch::default());
            }
            Some(i)
        };
        match event {
            Event::Connected { conn, peer, .. } => {
                peers.insert((inc, *conn), peer.ip());
            }
            Event::Restarted { client, .. } => {
                if let Some(i) = current(client, epochs) {
                    epochs.get_mut(&i).expect("created").push(Epoch::default());
                }
            }
            Event::Missed { client, range, .. } => {
                let Some(i) = current(client, epochs) else {
                    attribution.push(format!("missed for unknown client {client}"));
                    continue;
                };
                let epoch = epochs
                    .get_mut(&i)
                    .and_then(|l| l.last_mut())
                    .expect("created");
                for seq in range.first.0..=range.last.0 {
                    if epoch.received.contains_key(&seq) || !epoch.missed.insert(seq) {
                        accounting.push(format!(
                            "server#{inc} {client}: seq {seq} counted twice (missed again)"
                        ));
                    }
                }
            }
            Event::Heartbeat {
                conn,
                client,
                seq,
                sent,
                received,
                recovered,
                ..
            } => {
                let Some(i) = current(client, epochs) else {
                    attribution.push(format!("heartbeat for unknown client {client}"));
                    continue;
                };
                match peers.get(&(inc, *conn)) {
                    Some(ip) if *ip == out.client_ips[i] => {}
                    other => attribution.push(format!(
                        "server#{inc} counted {client} seq {seq} from {conn} of host {other:?}, \
                         not {}",
                        out.client_ips[i]
                    )),
                }
                let session = truth.find(i, seq.0, *sent);
                if session.is_none() {
                    attribution.push(format!(
                        "server#{inc} counted {client} seq {seq} sent at {sent}, which {client} \
                         never wrote"
                    ));
                }
                let epoch = epochs
                    .get_mut(&i)
                    .and_then(|l| l.last_mut())
                    .expect("created");
                match (epoch.session, session) {
                    (None, s) => epoch.session = s,
                    (Some(a), Some(b)) if a != b => attribution.push(format!(
                        "server#{inc} {client}: one epoch holds heartbeats of sessions {a} and {b}"
                    )),
                    _ => {}
                }
                let was_missed = epoch.missed.remove(&seq.0);
                if *recovered != was_missed {
                    accounting.push(format!(
                        "server#{inc} {client}: seq {seq} recovered={recovered} but was \
                         {}reported missed",
                        if was_missed { "" } else { "not " }
                    ));
                }
                if epoch.received.insert(seq.0, *sent).is_some() {
                    accounting.push(format!(
                        "server#{inc} {client}: seq {seq} counted received twice"
                    ));
                }
                let delay = received.signed_nanos_since(*sent);
                if delay < 0 || delay as u128 > live_bound.as_nanos() {
                    view.late.push(format!(
                        "{client} seq {seq} took {}",
                        heartbeat_core::fmt_signed_ms(delay)
                    ));
                }
            }
            Event::Transition {
                client, from, to, ..
            } if matches!(to.as_str(), "suspect" | "down") => {
                view.late
                    .push(format!("server#{inc} {client} went {from}->{to}"));
            }
            Event::Burst {
                client,
                first,
                last,
                ..
            } => {
                if let Some(i) = client_of(client) {
                    view.bursts.push((i, first.0, last.0));
                }
            }
            _ => {}
        }
    }

    // Accounting: each slot up to the highest is received or missed.
    for (inc, clients) in &view.incarnations {
        for (i, epochs) in clients {
            for (k, epoch) in epochs.iter().enumerate() {
                let highest = epoch.highest();
                let counted = epoch.received.len() as u64
                    + epoch.missed.iter().filter(|&&m| m <= highest).count() as u64;
                if counted != highest || epoch.missed.iter().any(|&m| m > highest) {
                    accounting.push(format!(
                        "server#{inc} c{} epoch {k}: received {} + missed {} != highest {highest}",
                        i + 1,
                        epoch.received.len(),
                        epoch.missed.len()
                    ));
                }
            }
        }
    }

    let last_inc = view.incarnations.keys().next_back().copied().unwrap_or(0);
    let empty = BTreeMap::new();
    let final_view = view.incarnations.get(&last_inc).unwrap_or(&empty);
    let rows: BTreeMap<usize, &ClientSummary> = out
        .report
        .clients
        .iter()
        .filter_map(|c| client_of(&c.client).map(|i| (i, c)))
        .collect();

    // The report agrees with the events, and received <= sent.
    let mut report = Vec::new();
    for (i, plan) in s.clients.iter().enumerate() {
        let epochs = final_view.get(&i).map(Vec::as_slice).unwrap_or_default();
        let received: u64 = epochs.iter().map(|e| e.received.len() as u64).sum();
        let missed: u64 = epochs.iter().map(|e| e.missed.len() as u64).sum();
        let (r_received, r_missed) = rows.get(&i).map_or((0, 0), |r| (r.received, r.missed));
        if (r_received, r_missed) != (received, missed) {
            report.push(format!(
                "{}: report says received {r_received} missed {r_missed}, events say {received} \
                 and {missed}",
                plan.id
            ));
        }
        if r_received > truth.sent(i) {
            report.push(format!(
                "{}: received {r_received} > sent {}",
                plan.id,
                truth.sent(i)
            ));
        }
    }

    // Tails: what was written after the highest received heartbeat of each session.
    let mut tail = Vec::new();
    for (i, plan) in s.clients.iter().enumerate() {
        let sessions = &truth.sessions[i];
        let epochs = final_view.get(&i).map(Vec::as_slice).unwrap_or_default();
        for (k, session) in sessions.iter().enumerate() {
            let live = k + 1 == sessions.len() && out.fates[i] == Fate::Alive;
            let bound = if live {
                s.in_flight_bound()
            } else {
                s.crash_tail_bound(plan)
            };
            let heard_by = |epochs: &[Epoch]| {
                epochs
                    .iter()
                    .filter(|e| e.session == Some(k))
                    .map(Epoch::highest)
                    .max()
            };
            // The last incarnation's view; a session that ended before the server restarted
            // was heard by an earlier one.
            let highest = heard_by(epochs)
                .or_else(|| {
                    view.incarnations
                        .values()
                        .filter_map(|c| c.get(&i).and_then(|e| heard_by(e)))
                        .max()
                })
                .unwrap_or(0);
            let unaccounted = session.last().saturating_sub(highest);
            if unaccounted > bound {
                tail.push(format!(
                    "{} session {k}: wrote up to {}, server's highest {highest}: {unaccounted} \
                     unaccounted > bound {bound}",
                    plan.id,
                    session.last()
                ));
            }
        }
    }

    // Holds: every heartbeat written while held is received, never missed.
    let holds = hold_windows(out);
    let mut held = Vec::new();
    let mut held_sets: Vec<(usize, Vec<u64>)> = Vec::new();
    for &(i, from, to) in &holds {
        let mut seqs = Vec::new();
        for (k, session) in truth.sessions[i].iter().enumerate() {
            for (&seq, w) in &session.beats {
                if w.at < from || w.at >= to {
                    continue;
                }
                seqs.push(seq);
                let mut got = false;
                for clients in view.incarnations.values() {
                    for e in clients.get(&i).into_iter().flatten() {
                        if e.session != Some(k) {
                            continue;
                        }
                        if e.missed.contains(&seq) {
                            held.push(format!(
                                "c{} seq {seq}, written while held, is reported missed",
                                i + 1
                            ));
                        }
                        got |= e.received.contains_key(&seq);
                    }
                }
                if !got {
                    held.push(format!(
                        "c{} seq {seq}, written while held, was never received",
                        i + 1
                    ));
                }
            }
        }
        held_sets.push((i, seqs));
    }

    // Liveness after heal-and-drain.
    let mut liveness = Vec::new();
    let end_unix = UnixTime::from_duration(Duration::from_secs(EPOCH_SECS) + out.end);
    let recent = s.interval + s.params.latency.max() + s.tick * 2;
    for (i, plan) in s.clients.iter().enumerate() {
        let row = rows.get(&i);
        let state = row.map_or("absent", |r| r.state.as_str());
        let connected = row.is_some_and(|r| r.connected);
        match out.fates[i] {
            Fate::Alive => {
                if state != "up" || !connected {
                    liveness.push(format!(
                        "{} survived but is {state}{}",
                        plan.id,
                        if connected { "" } else { ", not connected" }
                    ));
                }
                let last_written = truth.sessions[i]
                    .last()
                    .and_then(|s| s.beats.values().next_back())
                    .map(|w| w.at);
                if last_written.is_none_or(|at| out.end.saturating_sub(at) > s.interval + s.tick) {
                    liveness.push(format!(
                        "{} survived but last wrote at {last_written:?} (end {:?})",
                        plan.id, out.end
                    ));
                }
                let last_seen = row.and_then(|r| r.last_seen);
                if last_seen
                    .is_none_or(|t| end_unix.signed_nanos_since(t) > recent.as_nanos() as i64)
                {
                    liveness.push(format!(
                        "{} survived but was last heard at {}",
                        plan.id,
                        last_seen.map_or_else(|| "never".to_owned(), |t| t.to_string())
                    ));
                }
            }
            Fate::Dead if state != "down" || connected => {
                liveness.push(format!(
                    "{} is dead but the server has it {state}{}",
                    plan.id,
                    if connected { ", connected" } else { "" }
                ));
            }
            Fate::Stopped if state != "left" => {
                liveness.push(format!("{} stopped but is {state}, not left", plan.id));
            }
            _ => {}
        }
    }

    let mut checks = vec![
        Check {
            name: "truth",
            failures: truth.failures.clone(),
        },
        Check {
            name: "attribution",
            failures: attribution,
        },
        Check {
            name: "accounting",
            failures: accounting,
        },
        Check {
            name: "report",
            failures: report,
        },
        Check {
            name: "tail",
            failures: tail,
        },
        Check {
            name: "held",
            failures: held,
        },
        Check {
            name: "liveness",
            failures: liveness,
        },
    ];

    // The scenario's own expectations.
    let x = s.expect;
    if x.none_missed {
        let failures = out
            .report
            .clients
            .iter()
            .filter(|c| c.missed > 0)
            .map(|c| format!("{} missed {}", c.client, c.missed))
            .collect();
        checks.push(Check {
            name: "none-missed",
            failures,
        });
    }
    if x.no_reconnect {
        let failures = out
            .report
            .clients
            .iter()
            .filter(|c| c.connections != 1)
            .map(|c| format!("{} connected {} times", c.client, c.connections))
            .collect();
        checks.push(Check {
            name: "no-reconnect",
            failures,
        });
    }
    if x.all_live {
        let mut failures = view.late.clone();
        failures.extend(
            out.report
                .clients
                .iter()
                .filter(|c| c.bursts > 0)
                .map(|c| format!("{} had {} bursts", c.client, c.bursts)),
        );
        checks.push(Check {
            name: "all-live",
            failures,
        });
    }
    if x.burst_per_hold {
        let mut failures = Vec::new();
        for (i, seqs) in &held_sets {
            let (Some(lo), Some(hi)) = (seqs.iter().min(), seqs.iter().max()) else {
                continue;
            };
            let found = view
                .bursts
                .iter()
                .any(|&(c, first, last)| c == *i && first <= *lo && last >= *hi);
            if !found {
                failures.push(format!(
                    "c{}: no burst carried the held heartbeats {lo}-{hi}",
                    i + 1
                ));
            }
        }
        checks.push(Check {
            name: "burst-per-hold",
            failures,
        });
    }
    if x.restarts_seen {
        let mut failures = Vec::new();
        for (i, plan) in s.clients.iter().enumerate() {
            let restarts = s
                .actions
                .iter()
                .filter(|t| t.action == Action::Bounce(crate::scenario::Node::Client(i)))
                .count() as u64;
            let seen = rows.get(&i).map_or(0, |r| r.restarts);
            if seen != restarts {
                failures.push(format!(
                    "{} restarted {restarts} times, the server saw {seen}",
                    plan.id
                ));
            }
        }
        checks.push(Check {
            name: "restarts-seen",
            failures,
        });
    }
    Verdict { checks }
}

/// The hold windows `(client, from, to)`, closed by `release` or by the heal.
pub fn hold_windows(out: &Outcome) -> Vec<(usize, Duration, Duration)> {
    let mut open: BTreeMap<usize, Duration> = BTreeMap::new();
    let mut windows = Vec::new();
    for e in &out.log {
        match &e.record {
            Record::Action(Action::Hold(i)) => {
                open.entry(*i).or_insert(e.at);
            }
            Record::Action(Action::Release(i)) => {
                if let Some(from) = open.remove(i) {
                    windows.push((*i, from, e.at));
                }
            }
            Record::Heal { .. } => {
                windows.extend(
                    std::mem::take(&mut open)
                        .into_iter()
                        .map(|(i, from)| (i, from, e.at)),
                );
            }
            _ => {}
        }
    }
    windows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{Latency, Params, Scenario, Timed};
    use crate::world;

    fn params() -> Params {
        Params {
            latency: Latency::Fixed(Duration::from_millis(10)),
            ..Params::seed(3)
        }
    }

    fn failing(v: &Verdict) -> Vec<&'static str> {
        v.checks
            .iter()
            .filter(|c| !c.ok())
            .map(|c| c.name)
            .collect()
    }

    #[test]
    fn a_hold_longer_than_the_idle_timeout_is_caught() {
        // The oracles must be able to fail: held for 15 s, the server gives up on the stream
        // after 10 s and the held heartbeats are lost, then reported missed.
        let mut s = Scenario::build("firewall", &params()).unwrap();
        s.actions = vec![
            Timed {
                at: Duration::from_secs(20),
                action: Action::Hold(0),
            },
            Timed {
                at: Duration::from_secs(35),
                action: Action::Release(0),
            },
        ];
        let out = world::run(&s).unwrap();
        let v = check(&out);
        let failing = failing(&v);
        assert!(failing.contains(&"held"), "{v}");
        assert!(failing.contains(&"none-missed"), "{v}");
        let text = crate::render::text(&out, &v);
        assert!(text.contains("verdict: FAILED"), "{text}");
        assert!(
            text.ends_with("replay: heartbeat-sim run firewall --seed 3 --latency 10\n"),
            "{text}"
        );
        let json = crate::render::json_lines(&out, &v);
        assert!(
            json.lines().last().unwrap().contains(r#""ok":false"#),
            "{json}"
        );
    }

    #[test]
    fn a_partition_in_steady_is_caught() {
        let mut s = Scenario::build("steady", &params()).unwrap();
        s.actions = vec![
            Timed {
                at: Duration::from_secs(20),
                action: Action::Partition(0),
            },
            Timed {
                at: Duration::from_secs(30),
                action: Action::Repair(0),
            },
        ];
        let out = world::run(&s).unwrap();
        let v = check(&out);
        assert_eq!(
            failing(&v),
            ["none-missed", "no-reconnect", "all-live"],
            "{v}"
        );
    }

    #[test]
    fn a_client_left_partitioned_is_not_live() {
        // Shorten the drain below what a reconnect needs: liveness must fail.
        let mut s = Scenario::build("partition", &params()).unwrap();
        s.actions = vec![Timed {
            at: Duration::from_secs(50),
            action: Action::Partition(0),
        }];
        s.drain = Duration::from_secs(1);
        let out = world::run(&s).unwrap();
        let v = check(&out);
        assert!(failing(&v).contains(&"liveness"), "{v}");
    }
}
