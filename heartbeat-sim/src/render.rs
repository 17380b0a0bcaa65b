//! The two renderings of a run: text (header, timeline, the server's report, the verdict) and
//! JSON lines in the shape of `heartbeat-server --json`.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

use heartbeat_core::client;
use heartbeat_core::server::Event;

use crate::log::{Entry, Record};
use crate::oracle::{Truth, Verdict};
use crate::scenario::{Node, SCENARIOS};
use crate::world::Outcome;

/// `12.345s`: simulated time, truncated to the millisecond.
fn secs(d: Duration) -> String {
    format!("{}.{:03}s", d.as_secs(), d.subsec_millis())
}

/// The timeline line of an entry, or `None` for the routine ones (heartbeats, acks, writes).
fn timeline_line(e: &Entry) -> Option<(String, String)> {
    let (who, what) = match &e.record {
        Record::Action(a) => ("fault".to_owned(), a.to_string()),
        Record::Heal => (
            "heal".to_owned(),
            "every link repaired and released, a crashed server restarted".to_owned(),
        ),
        Record::Started { node, incarnation } => (
            node.to_string(),
            if *incarnation == 0 {
                "started".to_owned()
            } else {
                format!("restarted (run {})", incarnation + 1)
            },
        ),
        Record::Server { event, .. } => match event {
            Event::Heartbeat { .. } => return None,
            other => ("server".to_owned(), other.to_string()),
        },
        Record::Client { client, event, .. } => match event {
            client::Event::ConnectFailed { .. }
            | client::Event::Disconnected { .. }
            | client::Event::ServerSilent { .. }
            | client::Event::Skipped { .. } => {
                (Node::Client(*client).to_string(), event.to_string())
            }
            _ => return None,
        },
        Record::Note { node, text } => (node.to_string(), text.clone()),
        Record::Connect { .. } | Record::Stop | Record::Wrote { .. } => return None,
    };
    Some((who, what))
}

/// The text rendering.
pub fn text(out: &Outcome, verdict: &Verdict) -> String {
    let s = &out.scenario;
    let mut o = String::new();
    let summary = SCENARIOS
        .iter()
        .find(|(n, _)| *n == s.name)
        .map_or("", |(_, d)| d);
    let _ = writeln!(o, "scenario {}: {summary}", s.name);
    let _ = writeln!(
        o,
        "seed {}, latency {} ms, {} clients, interval {} ms, faults for {}, heal-and-drain {}",
        s.params.seed,
        s.params.latency,
        s.clients.len(),
        s.interval.as_millis(),
        secs(s.duration),
        secs(s.drain),
    );
    let _ = writeln!(o, "replay: {}", s.replay_command());
    let _ = writeln!(o);
    let _ = writeln!(o, "timeline");
    for e in &out.log {
        if let Some((who, what)) = timeline_line(e) {
            let _ = writeln!(o, "  {:>9}  {who:<7} {what}", secs(e.at));
        }
    }
    let _ = writeln!(o, "  {:>9}  {:<7} report taken", secs(out.end), "end");
    let _ = writeln!(o);
    let _ = writeln!(o, "report");
    let _ = write!(o, "{}", out.report);
    let truth = Truth::new(out);
    let sent: Vec<String> = s
        .clients
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{}={}", c.id, truth.sent(i)))
        .collect();
    let _ = writeln!(o, "sent (ground truth): {}", sent.join(" "));
    let _ = writeln!(o);
    let _ = write!(o, "{verdict}");
    if !verdict.ok() {
        let _ = writeln!(o, "replay: {}", s.replay_command());
    }
    o
}

/// The JSON lines rendering: the server's events (as `heartbeat-server --json` prints them),
/// the simulator's actions, the summary with each client's `sent`, then the verdict.
pub fn json_lines(out: &Outcome, verdict: &Verdict) -> String {
    let s = &out.scenario;
    let mut o = String::new();
    let ms = |d: Duration| (d.as_nanos() as f64 / 1_000.0).round() / 1_000.0;
    let mut line = |v: Value| {
        o.push_str(&v.to_string());
        o.push('\n');
    };
    for e in &out.log {
        match &e.record {
            Record::Server { event, .. } => line(event.to_json()),
            Record::Action(a) => {
                line(json!({"event": "action", "at_ms": ms(e.at), "action": a.to_string()}))
            }
            Record::Heal => line(json!({"event": "heal", "at_ms": ms(e.at)})),
            _ => {}
        }
    }
    let truth = Truth::new(out);
    let mut summary = out.report.to_json();
    if let Some(clients) = summary.get_mut("clients").and_then(Value::as_array_mut) {
        for c in clients {
            let id = c.get("client").and_then(Value::as_str).unwrap_or_default();
            if let Some(i) = s.clients.iter().position(|p| p.id == id) {
                c["sent"] = json!(truth.sent(i));
            }
        }
    }
    let mut summary_line = json!({"event": "summary"});
    summary_line["clients"] = summary["clients"].take();
    line(summary_line);
    let checks: Vec<Value> = verdict
        .checks
        .iter()
        .map(|c| json!({"name": c.name, "ok": c.ok(), "failures": c.failures}))
        .collect();
    line(json!({
        "event": "verdict",
        "ok": verdict.ok(),
        "scenario": s.name,
        "seed": s.params.seed,
        "checks": checks,
        "replay": s.replay_command(),
    }));
    o
}
