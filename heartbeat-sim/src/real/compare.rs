//! A simulated run and real runs of one scenario, side by side: per client, each liveness
//! transition the server made and when, each reconnect and when, the missed heartbeats and the
//! bursts, with the differences and whether each is inside its tolerance ([`TOLERANCE`], stated
//! in SCENARIOS.md, "Real runs").

use std::fmt::Write as _;
use std::time::Duration;

use heartbeat_core::client;
use heartbeat_core::liveness::Liveness;
use heartbeat_core::server::Event;

use crate::harness::log::Record;
use crate::harness::world::Outcome;
use crate::oracle::client_of;
use crate::timeline::{self, svg};

/// How far a real run may be from the simulated one and still agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tolerance {
    /// A liveness transition's time.
    pub transition: Duration,
    /// A reconnect's time (the client's `connected` after the first).
    pub reconnect: Duration,
    /// Missed heartbeats, per client.
    pub missed: u64,
    /// Bursts, per client.
    pub bursts: u64,
}

/// The tolerances: a detection (a transition to `suspect`, `down` or `left`) within 1 s (the
/// detector is the same code; what differs is when heartbeats arrive: up to 50 ms of simulated
/// latency, and the scheduling of a loaded machine); a reconnect, and a transition back to
/// `up` (which the reconnect's first heartbeat makes), within 2 s or within the backoff the
/// client was waiting out before it (on either side), whichever is longer: the simulated and
/// the real client draw different jitter, so their attempts fall up to one backoff step apart;
/// 2 missed heartbeats (one slot either side of each cut) and 1 burst.
pub const TOLERANCE: Tolerance = Tolerance {
    transition: Duration::from_secs(1),
    reconnect: Duration::from_secs(2),
    missed: 2,
    bursts: 1,
};

/// What one client's history comes to, for comparing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    /// The server's transitions of it: when, to which state.
    pub transitions: Vec<(Duration, Liveness)>,
    /// When its connections after its first one were made (reconnects), over all its runs.
    pub reconnects: Vec<Duration>,
    /// Each backoff it waited out: when it began, and how long (a failed connect's or a lost
    /// connection's `retry_in`).
    pub waits: Vec<(Duration, Duration)>,
    /// Missed heartbeats, as the server's events count them (every server run).
    pub missed: u64,
    /// Bursts, as the server's events count them.
    pub bursts: u64,
}

impl Facts {
    /// The backoff the client was waiting out at `t`: the last one that began before it.
    pub fn wait_before(&self, t: Duration) -> Duration {
        self.waits
            .iter()
            .take_while(|(at, _)| *at < t)
            .last()
            .map_or(Duration::ZERO, |(_, d)| *d)
    }
}

/// The facts of every client of `out`, in the scenario's order.
pub fn facts(out: &Outcome) -> Vec<Facts> {
    let n = out.scenario.clients.len();
    let mut f = vec![Facts::default(); n];
    let mut connects = vec![0u32; n];
    for e in &out.log {
        match &e.record {
            Record::Server { event, .. } => match event {
                Event::Transition { client, to, .. } => {
                    if let Some(i) = client_of(out, client) {
                        f[i].transitions.push((e.at, *to));
                    }
                }
                Event::Missed { client, range, .. } => {
                    if let Some(i) = client_of(out, client) {
                        f[i].missed += range.last.0.saturating_sub(range.first.0) + 1;
                    }
                }
                Event::Burst { client, .. } => {
                    if let Some(i) = client_of(out, client) {
                        f[i].bursts += 1;
                    }
                }
                _ => {}
            },
            Record::Client { client, event, .. } => match event {
                client::Event::Connected { .. } => {
                    connects[*client] += 1;
                    if connects[*client] > 1 {
                        f[*client].reconnects.push(e.at);
                    }
                }
                client::Event::ConnectFailed {
                    retry_in: Some(d), ..
                }
                | client::Event::Disconnected {
                    retry_in: Some(d), ..
                } => f[*client].waits.push((e.at, *d)),
                _ => {}
            },
            _ => {}
        }
    }
    f
}

/// One compared fact.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Which real run (0-based).
    pub run: usize,
    /// The client's id.
    pub client: String,
    /// What (`down #1`, `reconnect #2`, `missed`, `bursts`).
    pub what: String,
    /// The simulated value, rendered (`-` when absent).
    pub sim: String,
    /// The real value, rendered (`-` when absent).
    pub real: String,
    /// The difference, real minus simulated, rendered (`-` when one side is absent).
    pub diff: String,
    /// The difference in seconds (or counts) when both sides have the fact.
    pub delta: Option<f64>,
    /// `transition`, `reconnect`, `missed` or `bursts`.
    pub kind: &'static str,
    /// True inside its tolerance.
    pub ok: bool,
}

/// The comparison of a simulated run with real runs.
#[derive(Clone, Debug)]
pub struct Comparison {
    /// The first line: scenario, seed, what was compared.
    pub title: String,
    /// Every compared fact.
    pub rows: Vec<Row>,
}

impl Comparison {
    /// True when every fact is inside its tolerance.
    pub fn ok(&self) -> bool {
        self.rows.iter().all(|r| r.ok)
    }

    /// The largest absolute difference of a kind, among the facts both sides have.
    pub fn largest(&self, kind: &str) -> Option<f64> {
        self.rows
            .iter()
            .filter(|r| r.kind == kind)
            .filter_map(|r| r.delta.map(f64::abs))
            .fold(None, |m, d| Some(m.map_or(d, |m: f64| m.max(d))))
    }

    /// The text rendering: a header, one line per fact, a summary, the verdict.
    pub fn text(&self) -> String {
        let mut o = String::new();
        let t = TOLERANCE;
        let _ = writeln!(o, "{}", self.title);
        let _ = writeln!(
            o,
            "tolerance: detection ±{:.3}s, reconnect and back up ±{:.3}s (or the backoff waited \
             out), missed ±{}, bursts ±{}",
            t.transition.as_secs_f64(),
            t.reconnect.as_secs_f64(),
            t.missed,
            t.bursts
        );
        let _ = writeln!(
            o,
            "{:<4} {:<8} {:<16} {:>10} {:>10} {:>9}",
            "run", "client", "what", "sim", "real", "diff"
        );
        for r in &self.rows {
            let _ = writeln!(
                o,
                "{:<4} {:<8} {:<16} {:>10} {:>10} {:>9}  {}",
                r.run + 1,
                r.client,
                r.what,
                r.sim,
                r.real,
                r.diff,
                if r.ok { "ok" } else { "OUTSIDE" }
            );
        }
        let inside = self.rows.iter().filter(|r| r.ok).count();
        let share = 100.0 * inside as f64 / self.rows.len().max(1) as f64;
        let fmt = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.3}s"));
        let _ = writeln!(
            o,
            "summary: {inside} of {} comparisons inside tolerance ({share:.1}%); largest \
             difference: transition {}, reconnect {}",
            self.rows.len(),
            fmt(self.largest("transition")),
            fmt(self.largest("reconnect")),
        );
        let _ = writeln!(o, "verdict: {}", if self.ok() { "ok" } else { "FAILED" });
        o
    }
}

fn secs(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

/// Pairs the `k`-th timed fact of each side; a fact on one side only is outside tolerance.
/// `facts` are the two sides' facts of the client, for the backoff each was waiting out.
fn timed(
    rows: &mut Vec<Row>,
    base: &Row,
    sim: &[(Duration, String)],
    real: &[(Duration, String)],
    facts: (&Facts, &Facts),
) {
    let mut seen: Vec<(String, usize)> = Vec::new();
    let mut number = |name: &str| {
        let n = match seen.iter_mut().find(|(w, _)| w == name) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                seen.push((name.to_owned(), 1));
                1
            }
        };
        format!("{name} #{n}")
    };
    for k in 0..sim.len().max(real.len()) {
        let (s, r) = (sim.get(k), real.get(k));
        let name = s.or(r).map_or("?", |(_, w)| w.as_str());
        let mut row = Row {
            what: number(name),
            sim: s.map_or("-".into(), |(t, w)| label(*t, w, name)),
            real: r.map_or("-".into(), |(t, w)| label(*t, w, name)),
            ..base.clone()
        };
        if let (Some((ts, ws)), Some((tr, wr))) = (s, r) {
            let d = tr.as_secs_f64() - ts.as_secs_f64();
            row.delta = Some(d);
            row.diff = format!("{d:+.3}s");
            // A return to `up` comes with the reconnect that carries it.
            let tolerance = if row.kind == "reconnect" || wr == "up" {
                TOLERANCE
                    .reconnect
                    .max(facts.0.wait_before(*ts))
                    .max(facts.1.wait_before(*tr))
            } else {
                TOLERANCE.transition
            };
            row.ok = ws == wr && d.abs() <= tolerance.as_secs_f64();
        }
        rows.push(row);
    }
}

/// A time, with the fact's name when it is not the row's (a different transition).
fn label(t: Duration, what: &str, row: &str) -> String {
    if what == row {
        secs(t)
    } else {
        format!("{what}@{}", secs(t))
    }
}

/// Compares `sim` with each of `reals` (runs of the same scenario).
pub fn compare(sim: &Outcome, reals: &[Outcome]) -> Comparison {
    let s = &sim.scenario;
    let title = format!(
        "compare {} seed {}: simulated (turmoil, latency {}) against {} real run(s) (kernel TCP, \
         network namespaces)",
        s.name,
        s.params.seed,
        s.latency,
        reals.len()
    );
    let fs = facts(sim);
    let mut rows = Vec::new();
    for (k, real) in reals.iter().enumerate() {
        let fr = facts(real);
        for (i, c) in s.clients.iter().enumerate() {
            let (a, b) = (&fs[i], &fr[i]);
            let base = Row {
                run: k,
                client: c.id.clone(),
                what: String::new(),
                sim: "-".into(),
                real: "-".into(),
                diff: "-".into(),
                delta: None,
                kind: "transition",
                ok: false,
            };
            let tr = |f: &Facts| -> Vec<(Duration, String)> {
                f.transitions
                    .iter()
                    .map(|(t, to)| (*t, to.to_string()))
                    .collect()
            };
            timed(&mut rows, &base, &tr(a), &tr(b), (a, b));
            let rc = |f: &Facts| -> Vec<(Duration, String)> {
                f.reconnects
                    .iter()
                    .map(|t| (*t, "reconnect".to_owned()))
                    .collect()
            };
            let base = Row {
                kind: "reconnect",
                ..base
            };
            timed(&mut rows, &base, &rc(a), &rc(b), (a, b));
            for (kind, x, y, tol) in [
                ("missed", a.missed, b.missed, TOLERANCE.missed),
                ("bursts", a.bursts, b.bursts, TOLERANCE.bursts),
            ] {
                let d = y as i64 - x as i64;
                rows.push(Row {
                    what: kind.to_owned(),
                    sim: x.to_string(),
                    real: y.to_string(),
                    diff: format!("{d:+}"),
                    delta: Some(d as f64),
                    kind,
                    ok: d.unsigned_abs() <= tol,
                    ..base.clone()
                });
            }
        }
    }
    Comparison { title, rows }
}

/// Draws `sim`'s timeline above `real`'s in one SVG file at `path`.
pub fn write_svg(sim: &Outcome, real: &Outcome, path: &str) -> Result<(), String> {
    let mut top = timeline::of_run(sim);
    top.title = format!("simulated: {}", top.title);
    let mut bottom = timeline::of_run(real);
    bottom.title = format!("real (kernel TCP): {}", bottom.title);
    // The same time axis for both.
    let end = top.end.max(bottom.end);
    top.end = end;
    bottom.end = end;
    let (a, b) = (svg::render(&top), svg::render(&bottom));
    let size = |s: &str, attr: &str| -> f64 {
        let key = format!("{attr}=\"");
        s.find(&key)
            .and_then(|i| {
                let rest = &s[i + key.len()..];
                rest.split('"').next().and_then(|v| v.parse().ok())
            })
            .unwrap_or(0.0)
    };
    let (ha, hb) = (size(&a, "height"), size(&b, "height"));
    let width = size(&a, "width").max(size(&b, "width"));
    let height = ha + hb;
    let out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" \
         viewBox=\"0 0 {width:.0} {height:.0}\">\n<svg x=\"0\" y=\"0\">{a}</svg>\n<svg x=\"0\" \
         y=\"{ha:.0}\">{b}</svg>\n</svg>\n"
    );
    std::fs::write(path, out).map_err(|e| format!("cannot write {path}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{Params, Scenario};

    fn partition() -> Outcome {
        let mut params = Params::seed(1);
        params.duration = Some(Duration::from_secs(20));
        let s = Scenario::build("partition", &params).unwrap();
        crate::world::run(&s).unwrap()
    }

    /// Moves the `k`-th server transition of the run to `to` by `by`.
    fn shift(out: &mut Outcome, to: Liveness, by: Duration) {
        let e = out
            .log
            .iter_mut()
            .find(|e| {
                matches!(&e.record, Record::Server { event: Event::Transition { to: t, .. }, .. }
                    if *t == to)
            })
            .unwrap();
        e.at += by;
    }

    #[test]
    fn a_run_agrees_with_itself_and_a_late_detection_leaves_its_tolerance() {
        let sim = partition();
        let same = compare(&sim, &[partition()]);
        assert!(same.ok(), "{}", same.text());
        assert!(
            same.rows.iter().any(|r| r.what == "down #1"),
            "{}",
            same.text()
        );
        assert_eq!(same.largest("transition"), Some(0.0));

        let mut late = partition();
        shift(&mut late, Liveness::Down, Duration::from_millis(1500));
        let cmp = compare(&sim, &[late]);
        let down = cmp.rows.iter().find(|r| r.what == "down #1").unwrap();
        assert!(!down.ok, "{}", cmp.text());
        assert!(!cmp.ok());
        assert!(cmp.text().contains("OUTSIDE"), "{}", cmp.text());

        // Back up 1.5 s late: inside, a reconnect's tolerance.
        let mut late_up = partition();
        shift(&mut late_up, Liveness::Up, Duration::from_millis(1500));
        let cmp = compare(&sim, &[late_up]);
        assert!(cmp.ok(), "{}", cmp.text());
    }
}
