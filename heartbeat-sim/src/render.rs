//! The two renderings of a run: text (header, timeline, the server's report, the verdict) and
//! JSON lines in the shape of `heartbeat-server --json`.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

use heartbeat_core::client;
use heartbeat_core::config::Backoff;
use heartbeat_core::server::Event;

use crate::harness::log::{Entry, Record};
use crate::harness::world::Outcome;
use crate::oracle::{Truth, Verdict, secs};
use crate::scenario::{ClientPlan, Node, Scenario};

/// The timeline line of an entry, or `None` for the routine ones (heartbeats, acks, writes).
fn timeline_line(s: &Scenario, e: &Entry) -> Option<(String, String)> {
    let (who, what) = match &e.record {
        Record::Action(a) => ("fault".to_owned(), s.describe(a)),
        Record::Heal { restarted_server } => (
            "heal".to_owned(),
            if *restarted_server {
                "every link released and repaired, the server restarted; drain".to_owned()
            } else {
                "every link released and repaired; drain".to_owned()
            },
        ),
        Record::Started { node, incarnation } => (
            s.node_name(*node),
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
                (s.node_name(Node::Client(*client)), event.to_string())
            }
            _ => return None,
        },
        Record::Note { node, text } => (s.node_name(*node), text.clone()),
        Record::Connect { .. } | Record::Exited { .. } | Record::Stop | Record::Wrote { .. } => {
            return None;
        }
    };
    Some((who, what))
}

/// The scenario lines of the text rendering: what ran, with which parameters, and how to replay
/// it. When the clients differ, one line per client gives its settings; the detector is named
/// when it is not the server's default.
fn header(o: &mut String, s: &Scenario) {
    let _ = writeln!(o, "scenario {}: {}", s.name, s.summary);
    let first = s.clients.first();
    let alike = |a: &ClientPlan, b: &ClientPlan| {
        (a.interval, a.latency, a.legacy, a.ack_timeout, a.reconnect)
            == (b.interval, b.latency, b.legacy, b.ack_timeout, b.reconnect)
    };
    let uniform = first.is_none_or(|f| s.clients.iter().all(|c| alike(f, c)));
    let interval = match first {
        Some(f) if s.clients.iter().all(|c| c.interval == f.interval) => {
            format!("interval {} ms", f.interval.as_millis())
        }
        _ => "intervals per client".to_owned(),
    };
    let mut common = String::new();
    if let Some(f) = first.filter(|_| uniform) {
        common = client_extras(f);
    }
    let _ = writeln!(
        o,
        "seed {}, latency {}, {} clients, {interval}{common}, faults for {}, heal-and-drain {}",
        s.params.seed,
        s.latency,
        s.clients.len(),
        secs(s.duration),
        secs(s.drain),
    );
    if !uniform {
        for c in &s.clients {
            let ack = c
                .ack_timeout
                .map_or_else(String::new, |t| format!(", ack timeout {}", secs(t)));
            let _ = writeln!(
                o,
                "  {:<6} interval {} ms, latency {}{ack}{}",
                c.id,
                c.interval.as_millis(),
                c.latency,
                client_extras(c)
            );
        }
    }
    if let Some(d) = &s.detector {
        let _ = writeln!(o, "detector {d}");
    }
    let _ = writeln!(o, "replay: {}", s.replay_command());
}

/// What sets a client apart from a v1 client reconnecting with the default backoff: `, legacy`,
/// `, no reconnect`, `, backoff 0.100s..10.000s`; empty for such a client.
fn client_extras(c: &ClientPlan) -> String {
    let mut extras = String::new();
    if c.legacy {
        extras.push_str(", legacy");
    }
    match c.reconnect {
        None => extras.push_str(", no reconnect"),
        Some(b) if b != Backoff::default() => extras.push_str(&format!(
            ", backoff {}..{}",
            secs(b.initial()),
            secs(b.max())
        )),
        Some(_) => {}
    }
    extras
}

/// The text rendering.
pub fn text(out: &Outcome, verdict: &Verdict) -> String {
    let s = &out.scenario;
    let mut o = String::new();
    header(&mut o, s);
    let _ = writeln!(o);
    let _ = writeln!(o, "timeline");
    for e in &out.log {
        if let Some((who, what)) = timeline_line(s, e) {
            let _ = writeln!(o, "  {:>9}  {who:<7} {what}", secs(e.at));
        }
    }
    let _ = writeln!(o, "  {:>9}  {:<7} report taken", secs(out.end), "end");
    let _ = writeln!(o);
    let _ = writeln!(o, "report");
    let _ = write!(o, "{}", out.report);
    let truth = Truth::new(out);
    let _ = writeln!(o, "ground truth (what the clients wrote)");
    for (i, c) in s.clients.iter().enumerate() {
        let sessions: Vec<String> = truth.sessions[i]
            .iter()
            .map(|s| s.last().to_string())
            .collect();
        let _ = writeln!(
            o,
            "{:<6}  sent {:>5}  skipped {:>4}  last seq per session {}",
            c.id,
            truth.sent(i),
            truth.skipped[i],
            if sessions.is_empty() {
                "-".to_owned()
            } else {
                sessions.join(", ")
            },
        );
    }
    let _ = writeln!(o);
    let _ = write!(o, "{verdict}");
    if !verdict.ok() {
        let _ = writeln!(o, "replay: {}", s.replay_command());
    }
    o
}

/// One JSON line with `"event"` first (as `heartbeat-server --json` writes its summary), then
/// the other fields in the order given.
fn event_line(o: &mut String, event: &str, fields: &[(&str, Value)]) {
    o.push_str("{\"event\":");
    o.push_str(&Value::from(event).to_string());
    for (k, v) in fields {
        o.push(',');
        o.push_str(&Value::from(*k).to_string());
        o.push(':');
        o.push_str(&v.to_string());
    }
    o.push_str("}\n");
}

/// The JSON lines rendering: the server's events (as `heartbeat-server --json` prints them, with
/// the simulated Unix time as `time`), the
/// simulator's actions and heal, the summary line with each client's `sent` and `skipped`
/// (ground truth), then the verdict.
pub fn json_lines(out: &Outcome, verdict: &Verdict) -> String {
    let s = &out.scenario;
    let mut o = String::new();
    let ms = |d: Duration| json!((d.as_nanos() as f64 / 1_000.0).round() / 1_000.0);
    for e in &out.log {
        match &e.record {
            Record::Server { event, .. } => {
                let unix = Duration::from_secs(crate::scenario::EPOCH_SECS) + e.at;
                let time = heartbeat_core::UnixTime::from_duration(unix);
                o.push_str(&event.to_json_at(time).to_string());
                o.push('\n');
            }
            Record::Action(a) => event_line(
                &mut o,
                "action",
                &[("at_ms", ms(e.at)), ("action", json!(s.describe(a)))],
            ),
            Record::Heal { restarted_server } => event_line(
                &mut o,
                "heal",
                &[
                    ("at_ms", ms(e.at)),
                    ("restarted_server", json!(restarted_server)),
                ],
            ),
            _ => {}
        }
    }
    let truth = Truth::new(out);
    let mut clients = out.report.to_json()["clients"].take();
    // The JSON rows are the report's, in its order.
    let rows = clients.as_array_mut().into_iter().flatten();
    for (c, row) in rows.zip(&out.report.clients) {
        if let Some(i) = crate::oracle::client_of(out, &row.client) {
            c["sent"] = json!(truth.sent(i));
            c["skipped"] = json!(truth.skipped[i]);
        }
    }
    event_line(&mut o, "summary", &[("clients", clients)]);
    let checks: Vec<Value> = verdict
        .checks
        .iter()
        .map(|c| json!({"name": c.name, "ok": c.ok(), "failures": c.failures}))
        .collect();
    event_line(
        &mut o,
        "verdict",
        &[
            ("ok", json!(verdict.ok())),
            ("scenario", json!(s.name)),
            ("seed", json!(s.params.seed)),
            ("replay", json!(s.replay_command())),
            ("checks", json!(checks)),
        ],
    );
    o
}
