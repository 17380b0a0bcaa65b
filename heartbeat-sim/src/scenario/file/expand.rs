//! Expanding a [`Spec`] for one run: the clients for the run's count, the actions drawn from
//! the schedule RNG, the expectations resolved against the clients.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use heartbeat_core::config::Backoff;

use super::error::Doc;
use super::{ActionSpec, ExpectSpec, Kind, MAX_ACTIONS, Span, Spec, Target, TimeField};
use crate::scenario::time::{Point, Time, fmt_duration};
use crate::scenario::{
    Action, ClientPlan, Expectation, Latency, Node, Params, Scenario, TICK, Timed,
};

impl Spec {
    /// Expands the file for one run: the clients for `params.clients`, the actions drawn from
    /// the schedule RNG (seeded by `params.seed`), the expectations.
    pub fn expand(&self, params: &Params) -> Result<Scenario, String> {
        let doc = Doc {
            path: &self.path,
            text: &self.text,
        };
        let duration = params.duration.unwrap_or(self.duration);
        if let Some(min) = self.min_duration.filter(|&m| duration < m) {
            return Err(format!(
                "duration {duration:?} too short: scenario {} needs at least {}",
                self.name,
                fmt_duration(min)
            ));
        }
        let n = params.clients.unwrap_or(self.count);
        if n < self.min_clients || n > self.max_clients {
            return Err(format!(
                "scenario {} needs {} to {} clients, got {n}",
                self.name, self.min_clients, self.max_clients
            ));
        }
        let latency = params.latency.unwrap_or(self.latency);
        let tick = params.tick.map_or(Ok(TICK), crate::scenario::check_tick)?;
        let clients = self.plans(n, latency);
        // The schedule RNG is separate from turmoil's, so the schedule does not move when the
        // network draws more or fewer numbers.
        let mut rng = SmallRng::seed_from_u64(params.seed ^ 0x5ce9_a810_0000_0000);
        let (mut out, mut late) = (Vec::new(), Vec::new());
        for a in &self.actions {
            let drawn = (&mut rng, &mut out, &mut late);
            self.expand_action(&doc, a, &clients, duration, drawn)?;
        }
        out.sort_by_key(|t| t.at);
        late.sort_by_key(|t| t.at);
        let mut s = Scenario {
            name: self.name.clone(),
            summary: self.summary.clone(),
            source: self.source.clone(),
            params: params.clone(),
            latency,
            detector: self.detector.clone(),
            tick,
            clients,
            actions: out,
            duration,
            drain: Duration::ZERO,
            expect: Vec::new(),
            late,
        };
        for a in &s.actions {
            if let Action::Start(i) = a.action {
                s.clients[i].starts_late = true;
            }
        }
        self.check_start_before_stop(&doc, &s)?;
        for e in &self.expect {
            s.expect.push(match e {
                ExpectSpec::Named(x) => x.clone(),
                ExpectSpec::Client {
                    on,
                    on_span,
                    rule,
                    text,
                } => Expectation::Client {
                    clients: self.resolve_fixed(&doc, on, on_span, "expect.on", &s.clients)?,
                    label: format!("{on} {text}"),
                    rule: rule.clone(),
                },
            });
        }
        s.drain = s.drain_bound();
        Ok(s)
    }

    /// The first `n` clients' plans.
    fn plans(&self, n: usize, latency: Latency) -> Vec<ClientPlan> {
        (0..n)
            .map(|i| {
                let s = self.clients.get(i).map_or_else(
                    || self.defaults.clone(),
                    |e| e.settings.over(&self.defaults),
                );
                ClientPlan {
                    id: self.id_of(i),
                    interval: s.interval.map_or(crate::scenario::INTERVAL, |iv| iv.0),
                    latency: s.latency.unwrap_or(latency),
                    ack_timeout: s.ack_timeout.map(|t| t.0),
                    reconnect: s.reconnect.unwrap_or(Some(Backoff::default())),
                    legacy: s.legacy.unwrap_or(false),
                    starts_late: false,
                }
            })
            .collect()
    }

    /// The clients a fixed target names (not a random one), by index.
    fn resolve_fixed(
        &self,
        doc: &Doc<'_>,
        on: &Target,
        span: &Span,
        field: &str,
        clients: &[ClientPlan],
    ) -> Result<Vec<usize>, String> {
        let n = clients.len();
        Ok(match on {
            Target::Each => (0..n).collect(),
            Target::Last => vec![n - 1],
            Target::Ids(ids) => ids
                .iter()
                .map(|id| {
                    clients.iter().position(|c| &c.id == id).ok_or_else(|| {
                        doc.error(
                            span,
                            field,
                            format!("no client {id:?} in a run of {n} clients"),
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
            Target::Random(_) | Target::Server => {
                return Err(doc.error(span, field, "expected clients"));
            }
        })
    }

    /// Draws one action's occurrences into `out`. The draw order is part of the format (see
    /// `SCENARIOS.md`): the random subset first, then per target: `at`, then per occurrence
    /// `to`, `for`, `every`.
    ///
    /// A fault drawn at or after the end of the fault phase `d` also goes to `late` (only the
    /// fault: its end past the phase, a repair or a release, is what the heal phase does
    /// anyway).
    fn expand_action(
        &self,
        doc: &Doc<'_>,
        a: &ActionSpec,
        clients: &[ClientPlan],
        d: Duration,
        (rng, out, late): (&mut SmallRng, &mut Vec<Timed>, &mut Vec<Timed>),
    ) -> Result<(), String> {
        let n = clients.len();
        let field = |name: &str| format!("action[{}].{name}", a.index);
        let fields = [
            ("at", Some(&a.at)),
            ("for", a.length.as_ref()),
            ("every", a.every.as_ref()),
            ("to", a.to.as_ref()),
        ];
        for (name, t) in fields.into_iter().filter_map(|(n, t)| t.map(|t| (n, t))) {
            let (lo, hi) = t.time.bounds_ms(d);
            if lo > hi {
                return Err(doc.error(
                    &t.span,
                    &field(name),
                    format!(
                        "the range {} ends before it starts in a fault phase of {}",
                        t.time,
                        fmt_duration(d)
                    ),
                ));
            }
            if name == "every" && lo == 0 {
                return Err(doc.error(
                    &t.span,
                    &field(name),
                    format!(
                        "a repetition must be longer than 0 ms ({} in a fault phase of {})",
                        t.time,
                        fmt_duration(d)
                    ),
                ));
            }
        }
        let nodes: Vec<Node> = match &a.on {
            Target::Server => vec![Node::Server],
            Target::Random(count) => {
                let mut order: Vec<usize> = (0..n).collect();
                order.shuffle(rng);
                let lo = count.lo.of(n);
                let k = match count.hi {
                    Some(hi) => {
                        let hi = hi.of(n);
                        if lo > hi {
                            return Err(doc.error(
                                &a.on_span,
                                &field("on"),
                                format!("the range {} ends before it starts", count.text),
                            ));
                        }
                        // A usize draw, as the built-in swizzle drew its subset size.
                        rng.random_range(lo..=hi)
                    }
                    None => lo,
                };
                order.truncate(k);
                order.into_iter().map(Node::Client).collect()
            }
            on => self
                .resolve_fixed(doc, on, &a.on_span, &field("on"), clients)?
                .into_iter()
                .map(Node::Client)
                .collect(),
        };
        if a.kind == Kind::Swizzle {
            swizzle(a, &nodes, d, rng, out);
            return Ok(());
        }
        for node in nodes {
            // Only crash and restart apply to the server (checked when read).
            let i = match node {
                Node::Client(i) => i,
                Node::Server => usize::MAX,
            };
            let mut t = a.at.time.draw(rng, d);
            loop {
                if let Some(until) = a.until.as_ref().or(a.every.as_ref().map(|_| &END)) {
                    if t.as_secs_f64() >= until.time.lo.secs(d) {
                        break;
                    }
                }
                let to = a.to.as_ref().map(|to| to.time.draw(rng, d));
                let (fault, undo) = match a.kind {
                    Kind::Crash if a.silent => {
                        (Action::SilentCrash(node), Some(Action::Bounce(node)))
                    }
                    Kind::Crash => (Action::Crash(node), Some(Action::Bounce(node))),
                    Kind::Hold => (Action::Hold(i), Some(Action::Release(i))),
                    Kind::Latency => (Action::Latency(i, to.unwrap_or_default()), None),
                    Kind::Partition => (Action::Partition(i), Some(Action::Repair(i))),
                    Kind::Release => (Action::Release(i), None),
                    Kind::Repair => (Action::Repair(i), None),
                    Kind::Restart => (Action::Bounce(node), None),
                    Kind::Start => (Action::Start(i), None),
                    Kind::Stop | Kind::Swizzle => (Action::Stop(i), None),
                };
                let fault = Timed {
                    at: t,
                    action: fault,
                };
                if t >= d {
                    late.push(fault.clone());
                }
                out.push(fault);
                if let (Some(len), Some(undo)) = (&a.length, undo) {
                    out.push(Timed {
                        at: t + len.time.draw(rng, d),
                        action: undo,
                    });
                }
                match &a.every {
                    Some(every) => t += every.time.draw(rng, d),
                    None => break,
                }
                if out.len() > MAX_ACTIONS {
                    return Err(doc.error(
                        &a.at.span,
                        &field("every"),
                        format!("the scenario expands to more than {MAX_ACTIONS} actions"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// A client's `stop` must come after its `start` (for every seed, so their ranges must not
    /// overlap).
    fn check_start_before_stop(&self, doc: &Doc<'_>, s: &Scenario) -> Result<(), String> {
        let d = s.duration;
        let bounds = |kind: Kind, i: usize| {
            self.actions
                .iter()
                .filter(move |a| a.kind == kind && a.every.is_none())
                .filter(move |a| {
                    self.resolve_fixed(doc, &a.on, &a.on_span, "", &s.clients)
                        .is_ok_and(|v| v.contains(&i))
                })
                .map(move |a| (a, a.at.time.bounds_ms(d)))
        };
        for i in 0..s.clients.len() {
            for (start, (_, start_hi)) in bounds(Kind::Start, i) {
                for (stop, (stop_lo, _)) in bounds(Kind::Stop, i) {
                    if stop_lo <= start_hi {
                        return Err(doc.error(
                            &stop.at.span,
                            &format!("action[{}].at", stop.index),
                            format!(
                                "{} may stop (from {}) before it starts (action[{}], up to {}): \
                                 a stop must come after the start for every seed",
                                s.clients[i].id,
                                fmt_duration(Duration::from_millis(stop_lo)),
                                start.index,
                                fmt_duration(Duration::from_millis(start_hi)),
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// The end of the fault phase, where repetitions stop unless told otherwise.
pub(super) const END: TimeField = TimeField {
    time: Time {
        lo: Point::BeforeEnd(Duration::ZERO),
        hi: None,
    },
    span: 0..0,
};

/// FoundationDB's swizzle-clog: hold the targets' links one by one (each next one within
/// `clog-spread / k`), then after `for` release them one by one (each within
/// `release-spread / k`) in a random order.
pub(super) fn swizzle(
    a: &ActionSpec,
    nodes: &[Node],
    d: Duration,
    rng: &mut SmallRng,
    out: &mut Vec<Timed>,
) {
    let clogged: Vec<usize> = nodes
        .iter()
        .filter_map(|n| match n {
            Node::Client(i) => Some(*i),
            Node::Server => None,
        })
        .collect();
    let k = clogged.len().max(1) as f64;
    let upto = |spread: &Time, rng: &mut SmallRng| {
        let step = spread.lo.secs(d) / k;
        let hi = Time {
            lo: Point::Fixed(Duration::ZERO),
            hi: Some(Point::Fixed(Duration::from_millis((step * 1000.0) as u64))),
        };
        hi.draw(rng, d)
    };
    let mut t = a.at.time.draw(rng, d);
    for &i in &clogged {
        out.push(Timed {
            at: t,
            action: Action::Hold(i),
        });
        t += upto(&a.clog_spread, rng);
    }
    let mut release = clogged;
    release.shuffle(rng);
    let hold = a
        .length
        .as_ref()
        .map_or(Duration::ZERO, |l| l.time.draw(rng, d));
    let mut t = t + hold;
    for i in release {
        out.push(Timed {
            at: t,
            action: Action::Release(i),
        });
        t += upto(&a.release_spread, rng);
    }
}
