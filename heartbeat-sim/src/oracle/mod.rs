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
//! 3. `accounting`: in every epoch, each slot from the epoch's *base* to the highest sequence
//!    number received is counted exactly once, either received or missed (a late arrival moves
//!    it from missed to received); nothing is counted twice, so a gap is counted once, and
//!    nothing below the base is counted missed. The base is where the server starts counting:
//!    a client's first epoch in an incarnation (and a legacy connection's, or one after the
//!    server forgot the client) starts at its first heartbeat there (what came before was
//!    sent to an earlier incarnation, or nowhere); an epoch begun by a `restarted` event (a
//!    new session) starts at 1.
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
//!    idle timeout noticed), or unknown to a server restarted after it died; every client that
//!    gave up on its own (no reconnect) is not `up` and not connected; every stopped client has
//!    `left`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use heartbeat_core::UnixTime;
use heartbeat_core::analysis::ClientSummary;
use heartbeat_core::server::Event;

use crate::harness::log::Record;
use crate::harness::world::{Fate, Outcome};
use crate::scenario::EPOCH_SECS;
use crate::scenario::{Action, ClientRule, Expectation, Node, Scenario};

mod model;

use model::{Hold, Index, Seen, View, heard, holds};
pub use model::{Session, Truth, Written, client_of, hold_windows};

/// One checked property.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// Its name (`accounting`, `held`, ...).
    pub name: String,
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

/// `12.345s`: simulated time, truncated to the millisecond.
pub(crate) fn secs(d: Duration) -> String {
    format!("{}.{:03}s", d.as_secs(), d.subsec_millis())
}

/// Checks every oracle on `out`, in a fixed order: the invariants, then the scenario's own
/// expectations.
pub fn check(out: &Outcome) -> Verdict {
    let s = &out.scenario;
    let truth = Truth::new(out);
    let index = Index::new(out);
    let view = View::new(out, &truth, &index);
    // Every report row of each client (a legacy client has one per connection), and its
    // current one: its only row, or the row of its last connection.
    let mut all_rows: BTreeMap<usize, Vec<&ClientSummary>> = BTreeMap::new();
    for c in &out.report.clients {
        if let Some(i) = index.of(&c.client) {
            all_rows.entry(i).or_default().push(c);
        }
    }
    let rows: BTreeMap<usize, &ClientSummary> = all_rows
        .iter()
        .filter_map(|(&i, list)| {
            let current = list
                .iter()
                .find(|r| view.last_keys.get(&i).is_some_and(|k| **k == r.client));
            current.or(list.last()).map(|r| (i, *r))
        })
        .collect();
    let holds = holds(out, &truth);
    let ids: Vec<&str> = s.clients.iter().map(|c| c.id.as_str()).collect();
    let mut checks: Vec<(String, Vec<String>)> = [
        ("truth", truth.failures.clone()),
        ("attribution", attribution(out, &view)),
        ("accounting", accounting(&view, &ids)),
        ("report", report(s, &truth, &view, &all_rows)),
        ("tail", tail(out, &truth, &view)),
        ("held", held(&view, &holds, &ids)),
        ("liveness", liveness(out, &truth, &view, &rows)),
    ]
    .into_iter()
    .map(|(name, failures)| (name.to_owned(), failures))
    .collect();
    for x in &s.expect {
        let failures = match x {
            Expectation::AllLive => all_live(out, &view),
            Expectation::BurstPerHold => burst_per_hold(&view, &holds, &ids),
            Expectation::Client { clients, rule, .. } => {
                client_rule(out, &index, &rows, &all_rows, clients, rule)
            }
            Expectation::NoReconnect => no_reconnect(s, &all_rows),
            Expectation::NoneMissed => none_missed(out),
            Expectation::RestartsSeen => restarts_seen(s, &rows),
        };
        checks.push((x.name(), failures));
    }
    Verdict {
        checks: checks
            .into_iter()
            .map(|(name, failures)| Check { name, failures })
            .collect(),
    }
}

/// Invariant 2, `attribution`: every heartbeat the server counts for client X came over a
/// connection from X's host and is one X wrote (same sequence number and send stamp); an epoch
/// never mixes two sessions.
fn attribution(out: &Outcome, view: &View<'_>) -> Vec<String> {
    let mut failures = Vec::new();
    for seen in &view.seen {
        match seen {
            Seen::Unknown { what, client } => {
                failures.push(format!("{what} for unknown client {client}"));
            }
            Seen::Beat(b) => {
                let (inc, client, seq) = (b.inc, b.client, b.seq);
                let ip = out.client_ips[b.index];
                if b.host != Some(ip) {
                    failures.push(format!(
                        "server#{inc} counted {client} seq {seq} from {} of host {:?}, not {ip}",
                        b.conn, b.host
                    ));
                }
                if b.session.is_none() {
                    failures.push(format!(
                        "server#{inc} counted {client} seq {seq} sent at {}, which {client} \
                         never wrote",
                        b.sent
                    ));
                }
                match (b.epoch_session, b.session) {
                    (Some(a), Some(b)) if a != b => failures.push(format!(
                        "server#{inc} {client}: one epoch holds heartbeats of sessions {a} and {b}"
                    )),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    failures
}

/// Invariant 3, `accounting`: in every epoch, each slot from its base (1 for a new session, the
/// first heartbeat for a client new to the incarnation) to the highest sequence number received
/// is counted exactly once, received or missed (a late arrival moves it from missed to received,
/// and says so); nothing is counted twice, nothing below the base is missed.
fn accounting(view: &View<'_>, ids: &[&str]) -> Vec<String> {
    let mut failures = Vec::new();
    for seen in &view.seen {
        match seen {
            Seen::Missed { inc, client, again } => {
                for seq in again {
                    failures.push(format!(
                        "server#{inc} {client}: seq {seq} counted twice (missed again)"
                    ));
                }
            }
            Seen::Beat(b) => {
                let (inc, client, seq) = (b.inc, b.client, b.seq);
                if b.recovered != b.was_missed {
                    failures.push(format!(
                        "server#{inc} {client}: seq {seq} recovered={} but was {}reported missed",
                        b.recovered,
                        if b.was_missed { "" } else { "not " }
                    ));
                }
                if b.again {
                    failures.push(format!(
                        "server#{inc} {client}: seq {seq} counted received twice"
                    ));
                }
            }
            _ => {}
        }
    }
    for (inc, clients) in &view.incarnations {
        for (i, epochs) in clients {
            for (k, epoch) in epochs.iter().enumerate() {
                let highest = epoch.highest();
                // Without a heartbeat, an epoch counts nothing: its base is past anything missed.
                let base = epoch.base.unwrap_or(highest + 1);
                let counted = epoch.received.len() as u64
                    + epoch.missed.iter().filter(|&&m| m <= highest).count() as u64;
                let slots = (highest + 1).saturating_sub(base);
                let outside = epoch.missed.iter().any(|&m| m > highest || m < base);
                if counted != slots || outside {
                    failures.push(format!(
                        "server#{inc} {} epoch {k}: received {} + missed {} != slots {base} to \
                         {highest}",
                        ids[*i],
                        epoch.received.len(),
                        epoch.missed.len()
                    ));
                }
            }
        }
    }
    failures
}

/// Invariant 4, `report`: the final report's `received` and `missed` equal the totals of the
/// last incarnation's events, and `received <= sent`.
fn report(
    s: &Scenario,
    truth: &Truth,
    view: &View<'_>,
    all_rows: &BTreeMap<usize, Vec<&ClientSummary>>,
) -> Vec<String> {
    let mut failures = Vec::new();
    for (i, plan) in s.clients.iter().enumerate() {
        let epochs = view.last_epochs(i);
        let received: u64 = epochs.iter().map(|e| e.received.len() as u64).sum();
        let missed: u64 = epochs.iter().map(|e| e.missed.len() as u64).sum();
        let rows = all_rows.get(&i).map_or(&[][..], Vec::as_slice);
        let r_received: u64 = rows.iter().map(|r| r.received).sum();
        let r_missed: u64 = rows.iter().map(|r| r.missed).sum();
        if (r_received, r_missed) != (received, missed) {
            failures.push(format!(
                "{}: report says received {r_received} missed {r_missed}, events say {received} \
                 and {missed}",
                plan.id
            ));
        }
        if r_received > truth.sent(i) {
            failures.push(format!(
                "{}: received {r_received} > sent {}",
                plan.id,
                truth.sent(i)
            ));
        }
    }
    failures
}

/// Invariant 5, `tail`: what each session wrote after the highest heartbeat the server received
/// of it is bounded: by what can be in flight for a live session, by one ack timeout plus what
/// is in flight for one that crashed or stopped.
fn tail(out: &Outcome, truth: &Truth, view: &View<'_>) -> Vec<String> {
    let s = &out.scenario;
    let mut failures = Vec::new();
    for (i, plan) in s.clients.iter().enumerate() {
        let sessions = &truth.sessions[i];
        for (k, session) in sessions.iter().enumerate() {
            let live = k + 1 == sessions.len() && out.fates[i] == Fate::Alive;
            let bound = if live {
                s.in_flight_bound(plan)
            } else {
                s.crash_tail_bound(plan)
            };
            // The last incarnation's view; a session that ended before the server restarted
            // was heard by an earlier one.
            let highest = heard(view.last_epochs(i), k)
                .or_else(|| heard(view.epochs(i), k))
                .unwrap_or(0);
            let unaccounted = session.last().saturating_sub(highest);
            if unaccounted > bound {
                failures.push(format!(
                    "{} session {k}: wrote up to {}, server's highest {highest}: {unaccounted} \
                     unaccounted > bound {bound}",
                    plan.id,
                    session.last()
                ));
            }
        }
    }
    failures
}

/// Invariant 6, `held`: every heartbeat written while its link was held is received and never
/// reported missed (while holds stay shorter than the server's idle timeout).
fn held(view: &View<'_>, holds: &[Hold], ids: &[&str]) -> Vec<String> {
    let mut failures = Vec::new();
    for h in holds {
        let c = ids[h.client];
        for &(k, seq) in &h.beats {
            let mut got = false;
            for e in view.epochs(h.client).filter(|e| e.session == Some(k)) {
                if e.missed.contains(&seq) {
                    failures.push(format!(
                        "{c} seq {seq}, written while held, is reported missed"
                    ));
                }
                got |= e.received.contains_key(&seq);
            }
            if !got {
                failures.push(format!(
                    "{c} seq {seq}, written while held, was never received"
                ));
            }
        }
    }
    failures
}

/// Invariant 7, `liveness`: after heal-and-drain, every surviving client is `up` and connected,
/// still writing, and was last heard within one interval plus latency of the end; every client
/// that crashed for good is `down` and not connected (or unknown to a server restarted since);
/// every stopped client has `left`.
fn liveness(
    out: &Outcome,
    truth: &Truth,
    view: &View<'_>,
    rows: &BTreeMap<usize, &ClientSummary>,
) -> Vec<String> {
    let s = &out.scenario;
    let mut failures = Vec::new();
    let end_unix = UnixTime::from_duration(Duration::from_secs(EPOCH_SECS) + out.end);
    for (i, plan) in s.clients.iter().enumerate() {
        let recent = plan.interval + plan.latency.max() + s.tick * 2;
        let row = rows.get(&i);
        let state = row.map_or("absent", |r| r.state.as_str());
        let connected = row.is_some_and(|r| r.connected);
        match out.fates[i] {
            Fate::Alive => {
                if state != "up" || !connected {
                    failures.push(format!(
                        "{} survived but is {state}{}",
                        plan.id,
                        if connected { "" } else { ", not connected" }
                    ));
                }
                let last_written = truth.sessions[i]
                    .last()
                    .and_then(|s| s.beats.values().next_back())
                    .map(|w| w.at);
                if last_written.is_none_or(|at| out.end.saturating_sub(at) > plan.interval + s.tick)
                {
                    failures.push(format!(
                        "{} survived but last wrote at {last_written:?} (end {:?})",
                        plan.id, out.end
                    ));
                }
                let last_seen = row.and_then(|r| r.last_seen);
                if last_seen
                    .is_none_or(|t| end_unix.signed_nanos_since(t) > recent.as_nanos() as i64)
                {
                    failures.push(format!(
                        "{} survived but was last heard at {}",
                        plan.id,
                        last_seen.map_or_else(|| "never".to_owned(), |t| t.to_string())
                    ));
                }
            }
            // A server restarted after the crash never heard of it: absent is right too.
            Fate::Dead
                if connected
                    || !(state == "down" || (state == "absent" && view.restarted_without(i))) =>
            {
                failures.push(format!(
                    "{} is dead but the server has it {state}{}",
                    plan.id,
                    if connected { ", connected" } else { "" }
                ));
            }
            Fate::Exited if state == "up" || connected => {
                failures.push(format!(
                    "{} gave up but the server has it {state}{}",
                    plan.id,
                    if connected { ", connected" } else { "" }
                ));
            }
            Fate::Stopped if state != "left" => {
                failures.push(format!("{} stopped but is {state}, not left", plan.id));
            }
            _ => {}
        }
    }
    failures
}

/// Expectation `none-missed`: the final report has no missed heartbeat for any client.
fn none_missed(out: &Outcome) -> Vec<String> {
    out.report
        .clients
        .iter()
        .filter(|c| c.missed > 0)
        .map(|c| format!("{} missed {}", c.client, c.missed))
        .collect()
}

/// Expectation `no-reconnect`: the final report shows every client on exactly one connection
/// (a legacy client's connections are its rows, one each).
fn no_reconnect(s: &Scenario, all_rows: &BTreeMap<usize, Vec<&ClientSummary>>) -> Vec<String> {
    all_rows
        .iter()
        .map(|(&i, rows)| (i, rows.iter().map(|r| r.connections).sum::<u64>()))
        .filter(|&(_, n)| n != 1)
        .map(|(i, n)| format!("{} connected {n} times", s.clients[i].id))
        .collect()
}

/// Expectation `all-live`: every heartbeat of a known client arrived within its link's latency
/// bound (max latency + 2 ticks, never before it was sent), no client ever went `suspect` or
/// `down`, and the final report has no burst.
fn all_live(out: &Outcome, view: &View<'_>) -> Vec<String> {
    let s = &out.scenario;
    let mut failures = Vec::new();
    for seen in &view.seen {
        match seen {
            Seen::Beat(b) => {
                let live_bound = s.clients[b.index].latency.max() + s.tick * 2;
                let delay = b.received.signed_nanos_since(b.sent);
                if delay < 0 || delay as u128 > live_bound.as_nanos() {
                    failures.push(format!(
                        "{} seq {} took {}",
                        b.client,
                        b.seq,
                        heartbeat_core::fmt_signed_ms(delay)
                    ));
                }
            }
            Seen::Transition {
                inc,
                client,
                from,
                to,
            } if matches!(*to, "suspect" | "down") => {
                failures.push(format!("server#{inc} {client} went {from}->{to}"));
            }
            _ => {}
        }
    }
    failures.extend(
        out.report
            .clients
            .iter()
            .filter(|c| c.bursts > 0)
            .map(|c| format!("{} had {} bursts", c.client, c.bursts)),
    );
    failures
}

/// Expectation `burst-per-hold`: for every hold that held heartbeats, one burst the server
/// reported carried all of them (its range covers the lowest to the highest held).
fn burst_per_hold(view: &View<'_>, holds: &[Hold], ids: &[&str]) -> Vec<String> {
    let mut failures = Vec::new();
    for h in holds {
        let seqs = || h.beats.iter().map(|&(_, seq)| seq);
        let (Some(lo), Some(hi)) = (seqs().min(), seqs().max()) else {
            continue;
        };
        let found = view.seen.iter().any(|seen| {
            matches!(*seen, Seen::Burst { index, first, last }
                if index == h.client && first <= lo && last >= hi)
        });
        if !found {
            failures.push(format!(
                "{}: no burst carried the held heartbeats {lo}-{hi}",
                ids[h.client]
            ));
        }
    }
    failures
}

/// Expectation `restarts-seen`: the final report counts, for every v1 client, as many restarts
/// (new sessions) as the scenario restarted it. (A restarted legacy client connects from a new
/// port: a new client to the server, which cannot tell.)
fn restarts_seen(s: &Scenario, rows: &BTreeMap<usize, &ClientSummary>) -> Vec<String> {
    let mut failures = Vec::new();
    for (i, plan) in s.clients.iter().enumerate().filter(|(_, c)| !c.legacy) {
        let restarts = s
            .actions
            .iter()
            .filter(|t| t.action == Action::Bounce(Node::Client(i)))
            .count() as u64;
        let seen = rows.get(&i).map_or(0, |r| r.restarts);
        if seen != restarts {
            failures.push(format!(
                "{} restarted {restarts} times, the server saw {seen}",
                plan.id
            ));
        }
    }
    failures
}

/// A scenario's expectation on `clients`: each satisfies `rule`. A counter sums the client's
/// rows (a legacy client has one per connection); the state is its current row's.
fn client_rule(
    out: &Outcome,
    index: &Index<'_>,
    rows: &BTreeMap<usize, &ClientSummary>,
    all_rows: &BTreeMap<usize, Vec<&ClientSummary>>,
    clients: &[usize],
    rule: &ClientRule,
) -> Vec<String> {
    let s = &out.scenario;
    let mut failures = Vec::new();
    for &i in clients {
        let id = &s.clients[i].id;
        let row = rows.get(&i);
        match *rule {
            ClientRule::Count {
                counter,
                cmp,
                value,
            } => {
                let got = all_rows
                    .get(&i)
                    .map_or(0, |list| list.iter().map(|r| counter_of(r, counter)).sum());
                if !cmp.holds(got, value) {
                    failures.push(format!(
                        "{id} {} {got}, expected {} {value}",
                        counter.as_str(),
                        cmp.as_str()
                    ));
                }
            }
            ClientRule::DownWithin(within) => {
                failures.extend(down_within(out, index, i, within));
            }
            ClientRule::State(want) => {
                let got = row.map_or("absent", |r| r.state.as_str());
                if got != want.as_str() {
                    failures.push(format!(
                        "{id} is {got} at the end, expected {}",
                        want.as_str()
                    ));
                }
            }
        }
    }
    failures
}

/// Counter `c` of a report row.
fn counter_of(r: &ClientSummary, c: crate::scenario::Counter) -> u64 {
    use crate::scenario::Counter as C;
    match c {
        C::Bursts => r.bursts,
        C::Connections => r.connections,
        C::Duplicates => r.duplicates,
        C::Missed => r.missed,
        C::Received => r.received,
        C::Restarts => r.restarts,
    }
}

/// Expectation `down within`: after each crash of client `i` that lasted at least `within`
/// (no restart or start before), the server declared it `down` within `within`.
fn down_within(out: &Outcome, index: &Index<'_>, i: usize, within: Duration) -> Vec<String> {
    let s = &out.scenario;
    let id = &s.clients[i].id;
    let crashes: Vec<Duration> = out
        .log
        .iter()
        .filter_map(|e| match e.record {
            Record::Action(
                Action::Crash(Node::Client(c)) | Action::SilentCrash(Node::Client(c)),
            ) if c == i => Some(e.at),
            _ => None,
        })
        .collect();
    let mut failures = Vec::new();
    for at in crashes {
        let back = out
            .log
            .iter()
            .filter(|e| e.at > at)
            .find_map(|e| match e.record {
                Record::Action(Action::Bounce(Node::Client(c)) | Action::Start(c)) if c == i => {
                    Some(e.at)
                }
                _ => None,
            })
            .unwrap_or(out.end);
        let down = out
            .log
            .iter()
            .filter(|e| e.at >= at)
            .find_map(|e| match &e.record {
                Record::Server {
                    event: Event::Transition { client, to, .. },
                    ..
                } if *to == heartbeat_core::liveness::Liveness::Down
                    && index.of(client) == Some(i) =>
                {
                    Some(e.at)
                }
                _ => None,
            });
        let in_time = down.is_some_and(|d| d <= at + within);
        if !in_time && back - at >= within {
            failures.push(format!(
                "{id} crashed at {}, not down within {} ({})",
                secs(at),
                secs(within),
                down.map_or_else(
                    || "never down".to_owned(),
                    |d| format!("down at {}", secs(d))
                )
            ));
        }
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::world;
    use crate::scenario::{Latency, Params, Timed};
    use heartbeat_core::analysis::SeqRange;
    use heartbeat_core::{ConnId, Seq};

    fn params() -> Params {
        Params {
            latency: Some(Latency::Fixed(Duration::from_millis(10))),
            ..Params::seed(3)
        }
    }

    /// Scenario `name` with its actions replaced by `actions`, at whole seconds.
    fn scenario(name: &str, actions: &[(u64, Action)]) -> Scenario {
        let mut s = Scenario::build(name, &params()).unwrap();
        s.actions = actions
            .iter()
            .map(|(secs, action)| Timed {
                at: Duration::from_secs(*secs),
                action: action.clone(),
            })
            .collect();
        s
    }

    fn run(s: &Scenario) -> (Outcome, Verdict) {
        let out = world::run(s).unwrap();
        let v = check(&out);
        (out, v)
    }

    fn failing(v: &Verdict) -> Vec<&str> {
        v.checks
            .iter()
            .filter(|c| !c.ok())
            .map(|c| c.name.as_str())
            .collect()
    }

    #[test]
    fn a_hold_longer_than_the_idle_timeout_is_caught() {
        // The oracles must be able to fail: held for 15 s, the server gives up on the stream
        // after 10 s and the held heartbeats are lost, then reported missed.
        let s = scenario(
            "firewall",
            &[(20, Action::Hold(0)), (35, Action::Release(0))],
        );
        let (out, v) = run(&s);
        let failing = failing(&v);
        assert!(failing.contains(&"held"), "{v}");
        assert!(failing.contains(&"none-missed"), "{v}");
        let text = crate::render::text(&out, &v);
        assert!(text.contains("verdict: FAILED"), "{text}");
        assert!(
            text.ends_with("replay: heartbeat-sim run firewall --seed 3 --latency 10ms\n"),
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
        let s = scenario(
            "steady",
            &[(20, Action::Partition(0)), (30, Action::Repair(0))],
        );
        let (_, v) = run(&s);
        assert_eq!(
            failing(&v),
            ["none-missed", "no-reconnect", "all-live"],
            "{v}"
        );
    }

    #[test]
    fn a_client_left_partitioned_is_not_live() {
        // Shorten the drain below what a reconnect needs: liveness must fail.
        let mut s = scenario("partition", &[(50, Action::Partition(0))]);
        s.drain = Duration::from_secs(1);
        let (_, v) = run(&s);
        assert!(failing(&v).contains(&"liveness"), "{v}");
    }

    #[test]
    fn a_tampered_server_log_is_caught() {
        // Attribution and accounting hold in every honest run: forge the server's events.
        let (mut out, v) = run(&scenario("steady", &[]));
        assert!(v.ok(), "{v}");
        let mut beats = out.log.iter_mut().filter_map(|e| match &mut e.record {
            Record::Server {
                event:
                    Event::Heartbeat {
                        conn,
                        sent,
                        recovered,
                        ..
                    },
                ..
            } => Some((conn, sent, recovered)),
            _ => None,
        });
        // Seq 5 over a connection never made, seq 10 with a stamp c1 never wrote, seq 15 said
        // to fill a gap nobody reported.
        *beats.nth(4).unwrap().0 = ConnId(999);
        let sent = beats.nth(4).unwrap().1;
        *sent = UnixTime::from_nanos(sent.as_nanos() + 1);
        *beats.nth(4).unwrap().2 = true;
        let v = check(&out);
        assert_eq!(failing(&v), ["attribution", "accounting"], "{v}");
        let failures: Vec<String> = v.failures().collect();
        assert_eq!(failures.len(), 3, "{v}");
        assert!(
            failures[0].contains("c1 seq 5 from conn#999 of host None"),
            "{v}"
        );
        assert!(failures[1].contains("c1 seq 10 sent at"), "{v}");
        assert!(failures[1].ends_with("which c1 never wrote"), "{v}");
        assert!(
            failures[2].contains("seq 15 recovered=true but was not reported"),
            "{v}"
        );

        // Without its `restarted` events, the server's view mixes c1's two sessions.
        let (mut out, v) = run(&Scenario::build("client-crash", &params()).unwrap());
        assert!(v.ok(), "{v}");
        out.log.retain(|e| {
            !matches!(
                e.record,
                Record::Server {
                    event: Event::Restarted { .. },
                    ..
                }
            )
        });
        let v = check(&out);
        assert!(failing(&v).contains(&"attribution"), "{v}");
        assert!(
            v.failures()
                .any(|f| f.ends_with("c1: one epoch holds heartbeats of sessions 0 and 1")),
            "{v}"
        );
    }

    #[test]
    fn missed_slots_before_the_baseline_are_caught() {
        // A restarted server counts a client from its first heartbeat: the slots before went to
        // the earlier incarnation. Forge the old behaviour, all of them reported missed.
        let (mut out, v) = run(&Scenario::build("server-restart", &params()).unwrap());
        assert!(v.ok(), "{v}");
        let (at, incarnation, conn, client, first) = out
            .log
            .iter()
            .find_map(|e| match &e.record {
                Record::Server {
                    incarnation: inc @ 1..,
                    event:
                        Event::Heartbeat {
                            conn, client, seq, ..
                        },
                } => Some((e.at, *inc, *conn, client.clone(), *seq)),
                _ => None,
            })
            .expect("a heartbeat after the restart");
        assert!(first.0 > 1, "{first}");
        let pos = out.log.iter().position(|e| e.at >= at).unwrap();
        let range = SeqRange {
            first: Seq(1),
            last: Seq(first.0 - 1),
        };
        out.log.insert(
            pos,
            crate::harness::log::Entry {
                at,
                record: Record::Server {
                    incarnation,
                    event: Event::Missed {
                        conn,
                        client,
                        range,
                    },
                },
            },
        );
        let v = check(&out);
        assert!(failing(&v).contains(&"accounting"), "{v}");
        assert!(
            v.failures()
                .any(|f| f.contains(&format!("!= slots {first} to "))),
            "{v}"
        );
    }
}
