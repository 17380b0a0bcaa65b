//! Renders a tuning outcome: a text table (the QoS table's columns), one JSON object, or CSV.
//! Fixed formats throughout, so the same log and arguments always print the same bytes.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

use super::{Outcome, Row, server_flags};
use crate::qos::label;
use crate::qos::metrics::{ms_value, round_value};
use crate::qos::table::{LEVEL_COLUMNS, level_cells, summary_rows};

/// What the header says about the input.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    /// The file name as given.
    pub file: &'a str,
    /// The log's reading statistics.
    pub stats: &'a crate::serverlog::ReadStats,
    /// The crash-point sample's seed.
    pub seed: u64,
}

/// The legend under the table.
const LEGEND: &str = "\
T_D: detection time by Chen, Toueg and Aguilera's method: a crash assumed right after each
  crash point (an arrival), at its server receive time; T_D is when the server's liveness checks
  would declare the client down (suspect) had nothing arrived since, minus that time. Mean, p99
  (nearest rank), max; undet: crash points never convicted.
mistakes/h: suspicions that begin inside a session (from its first to its last arrival) and so
  are proved wrong by later heartbeats of that session, per hour of watched time (the sessions'
  total length; a new session of the client, a goodbye or a server restart ends one, and their
  gaps are not watched); T_M: their mean length; P_A: the share of watched time not suspected.
  Times in ms.
";

fn hours(d: Duration) -> String {
    format!("{:.1} h", d.as_secs_f64() / 3600.0)
}

fn ms(d: Option<Duration>) -> String {
    d.map_or_else(
        || "-".to_owned(),
        |d| format!("{:.1} ms", d.as_secs_f64() * 1000.0),
    )
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The clients line: `1 client (c1 every 100 ms)` or `3 clients (intervals 100 ms to 1 s)`.
fn clients_line(o: &Outcome) -> String {
    let n = o.clients.len() as u64;
    let mut iv: Vec<Duration> = o.clients.iter().map(|c| c.interval).collect();
    iv.sort_unstable();
    let shown = |d: Duration| {
        format!(
            "{} ms",
            (d.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0
        )
    };
    let detail = match (iv.first(), iv.last()) {
        (Some(a), Some(b)) if a == b && n == 1 => {
            format!("{} every {}", o.clients[0].name, shown(*a))
        }
        (Some(a), Some(b)) if a == b => format!("every {}", shown(*a)),
        (Some(a), Some(b)) => format!("intervals {} to {}", shown(*a), shown(*b)),
        _ => String::new(),
    };
    let estimated = o.clients.iter().filter(|c| c.estimated).count() as u64;
    let note = if estimated > 0 {
        format!(", {estimated} estimated from arrivals")
    } else {
        String::new()
    };
    format!("{} ({detail}{note})", plural(n, "client", "clients"))
}

/// One recommendation line pair.
fn pick(out: &mut String, what: &str, row: Option<&Row>) {
    let _ = writeln!(out, "  {what}:");
    match row {
        Some(r) => {
            let d = &r.summary.down;
            let _ = writeln!(
                out,
                "    {}  (T_D mean {}, p99 {}; {} mistakes/h)",
                label(&r.setting),
                ms(d.detection_mean),
                ms(d.detection_p99),
                d.mistakes_per_hour
                    .map_or_else(|| "-".to_owned(), |h| format!("{h:.3}"))
            );
            let _ = writeln!(out, "    heartbeat-server {}", server_flags(&r.setting));
        }
        None => {
            let _ = writeln!(out, "    none of the settings tried");
        }
    }
}

/// The text rendering.
pub fn text(o: &Outcome, input: &Input<'_>) -> String {
    let mut out = String::new();
    let s = input.stats;
    let _ = writeln!(
        out,
        "tune {}: {}, {} in {} over {} watched",
        input.file,
        clients_line(o),
        plural(o.heartbeats(), "heartbeat", "heartbeats"),
        plural(o.arrivals(), "arrival", "arrivals"),
        hours(o.watched()),
    );
    let _ = writeln!(
        out,
        "log: {} read, {} skipped, {} malformed; {}, {}; the server declared {}",
        plural(s.lines, "line", "lines"),
        s.skipped,
        s.malformed,
        plural(o.runs, "server run", "server runs"),
        plural(o.stalls, "stall", "stalls"),
        plural(o.server_downs, "client down", "clients down"),
    );
    let _ = writeln!(
        out,
        "crash points: {} of {} arrivals (seed {})",
        o.crash_points(),
        o.arrivals(),
        input.seed
    );
    for (name, why) in &o.left_out {
        let _ = writeln!(out, "left out: {name}: {why}");
    }
    out.push('\n');
    let rows: Vec<(String, &crate::qos::metrics::Summary)> = o
        .rows
        .iter()
        .map(|r| (label(&r.setting), &r.summary))
        .collect();
    out.push_str(&summary_rows(&rows, true));
    out.push('\n');
    let _ = writeln!(out, "recommendation (fastest mean T_D at the down level)");
    let rec = o.recommendation;
    pick(
        &mut out,
        "no mistake on this trace",
        rec.zero_mistakes.map(|i| &o.rows[i]),
    );
    pick(
        &mut out,
        "at most one mistake a day",
        rec.one_per_day.map(|i| &o.rows[i]),
    );
    out.push('\n');
    out.push_str(LEGEND);
    out
}

fn row_json(r: &Row) -> Value {
    json!({
        "label": label(&r.setting),
        "detector": r.setting.kind().as_str(),
        "setting": r.setting.to_string(),
        "flags": server_flags(&r.setting),
        "down": r.summary.down.to_json(),
        "suspect": r.summary.suspect.to_json(),
    })
}

/// The JSON rendering: one object (times in ms).
pub fn json(o: &Outcome, input: &Input<'_>) -> Value {
    let s = input.stats;
    let clients: Vec<Value> = o
        .clients
        .iter()
        .map(|c| {
            json!({
                "client": c.name,
                "interval_ms": ms_value(Some(c.interval)),
                "interval_estimated": c.estimated,
                "heartbeats": c.heartbeats,
                "arrivals": c.arrivals,
                "crash_points": c.crash_points,
                "watched_s": round_value(Some(c.watched.as_secs_f64()), 3),
            })
        })
        .collect();
    let left_out: Vec<Value> = o
        .left_out
        .iter()
        .map(|(name, why)| json!({"client": name, "why": why}))
        .collect();
    let recommendation = |i: Option<usize>| i.map_or(Value::Null, |i| row_json(&o.rows[i]));
    let errors: Vec<Value> = s
        .errors
        .iter()
        .map(|(line, why)| json!({"line": line, "error": why}))
        .collect();
    json!({
        "file": input.file,
        "lines": s.lines,
        "skipped": s.skipped,
        "malformed": s.malformed,
        "errors": errors,
        "runs": o.runs,
        "stalls": o.stalls,
        "server_downs": o.server_downs,
        "seed": input.seed,
        "clients": clients,
        "left_out": left_out,
        "heartbeats": o.heartbeats(),
        "arrivals": o.arrivals(),
        "crash_points": o.crash_points(),
        "watched_s": round_value(Some(o.watched().as_secs_f64()), 3),
        "rows": o.rows.iter().map(row_json).collect::<Vec<_>>(),
        "recommendation": {
            "zero_mistakes": recommendation(o.recommendation.zero_mistakes),
            "one_per_day": recommendation(o.recommendation.one_per_day),
        },
    })
}

/// The CSV rendering: a header and one line per setting.
pub fn csv(o: &Outcome, input: &Input<'_>) -> String {
    let mut cols: Vec<String> = [
        "file",
        "detector",
        "setting",
        "flags",
        "clients",
        "heartbeats",
        "arrivals",
        "crash_points",
        "watched_s",
        "recommended",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    for level in ["down", "suspect"] {
        cols.extend(LEVEL_COLUMNS.iter().map(|c| format!("{level}_{c}")));
    }
    let mut out = cols.join(",") + "\n";
    let quote = |s: &str| {
        if s.contains([',', '"', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_owned()
        }
    };
    for (i, r) in o.rows.iter().enumerate() {
        let rec = o.recommendation;
        let recommended = match (rec.zero_mistakes == Some(i), rec.one_per_day == Some(i)) {
            (true, true) => "zero_mistakes+one_per_day",
            (true, false) => "zero_mistakes",
            (false, true) => "one_per_day",
            (false, false) => "",
        };
        let mut cells = vec![
            quote(input.file),
            r.setting.kind().as_str().to_owned(),
            r.setting.to_string(),
            server_flags(&r.setting),
            o.clients.len().to_string(),
            o.heartbeats().to_string(),
            o.arrivals().to_string(),
            o.crash_points().to_string(),
            format!("{:.3}", o.watched().as_secs_f64()),
            recommended.to_owned(),
        ];
        cells.extend(level_cells(&r.summary.down));
        cells.extend(level_cells(&r.summary.suspect));
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}
