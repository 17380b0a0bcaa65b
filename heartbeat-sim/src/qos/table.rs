//! Renders QoS outcomes: a text table (default), JSON lines or CSV. Every figure has a fixed
//! format, so the same arguments always print the same bytes.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

use super::metrics::{LevelSummary, Summary, round_value};
use super::{Outcome, label};

/// Milliseconds with one decimal, or `-`.
fn ms(d: Option<Duration>) -> String {
    d.map_or_else(
        || "-".to_owned(),
        |d| {
            let tenths = (d.as_micros() + 50) / 100;
            format!("{}.{}", tenths / 10, tenths % 10)
        },
    )
}

fn fixed(x: Option<f64>, decimals: usize) -> String {
    x.map_or_else(|| "-".to_owned(), |x| format!("{x:.decimals$}"))
}

fn clients(n: usize) -> String {
    if n == 1 {
        "1 client".to_owned()
    } else {
        format!("{n} clients")
    }
}

/// How many clients each run had.
fn client_count(o: &Outcome) -> usize {
    let s = &o.study;
    s.params
        .clients
        .or_else(|| {
            super::scenario(&s.scenario, &s.params)
                .ok()
                .map(|x| x.clients.len())
        })
        .unwrap_or(0)
}

/// The one-line description of what ran.
fn heading(o: &Outcome) -> String {
    let s = &o.study;
    let n = client_count(o);
    format!(
        "qos {}: seeds {}..{} x {} s, {} every {} ms, latency {}, engine {}",
        s.scenario,
        s.seeds.start,
        s.seeds.end,
        s.params.duration.as_secs(),
        clients(n),
        s.params.interval.as_millis(),
        s.params.latency,
        s.engine.as_str(),
    )
}

/// The legend printed under every table.
const LEGEND: &str = "\
T_D: from a crash to the start of the suspicion still in force when the client is back (or the
  run ends): mean, p99 (nearest rank), max; undet: crashes never suspected that long.
mistakes/h: suspicions that begin while the client is reachable (alive, link up, heartbeats
  flowing), per hour of reachable time; T_M: their mean length; P_A: the share of reachable
  time not suspected. Times in ms.
";

/// The text table of one outcome.
pub fn text(o: &Outcome) -> String {
    let mut out = String::new();
    let reachable = o
        .rows
        .first()
        .map_or(Duration::ZERO, |r| r.summary.reachable);
    let crashes = if o.crashes == 1 {
        "1 crash".to_owned()
    } else {
        format!("{} crashes", o.crashes)
    };
    let _ = writeln!(out, "{}", heading(o));
    let _ = writeln!(
        out,
        "{} heartbeats sent, {crashes}, {:.1} s reachable",
        o.heartbeats,
        reachable.as_secs_f64()
    );
    out.push('\n');
    let rows: Vec<(String, &Summary)> = o
        .rows
        .iter()
        .map(|r| (label(&r.setting), &r.summary))
        .collect();
    out.push_str(&summary_rows(&rows, o.crashes > 0));
    out.push('\n');
    out.push_str(LEGEND);
    out
}

/// The table of several settings' metrics: a header of two column groups (down, suspect or
/// down), then one line per `(label, summary)`; `any_crash` shows the undetected count (`-`
/// when there was nothing to detect). Shared by `qos` and `tune`.
pub fn summary_rows(rows: &[(String, &Summary)], any_crash: bool) -> String {
    let mut out = String::new();
    let width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0).max(7);
    let groups: [(&str, &[(&str, usize)]); 2] = [
        (
            "down (declared dead)",
            &[
                ("T_D mean", 8),
                ("T_D p99", 8),
                ("T_D max", 8),
                ("undet", 5),
                ("mistakes/h", 10),
                ("T_M mean", 8),
                ("P_A", 8),
            ],
        ),
        (
            "suspect or down",
            &[
                ("T_D mean", 8),
                ("mistakes/h", 10),
                ("T_M mean", 8),
                ("P_A", 8),
            ],
        ),
    ];
    let _ = write!(out, "{:width$}", "");
    for (name, cols) in groups {
        let span = cols.iter().map(|(_, w)| w + 2).sum::<usize>() - 2;
        let dashes = span.saturating_sub(name.len() + 2);
        let left = dashes / 2;
        let _ = write!(
            out,
            "  {} {name} {}",
            "-".repeat(left),
            "-".repeat(dashes - left)
        );
    }
    out.push('\n');
    let _ = write!(out, "{:<width$}", "setting");
    for (_, cols) in groups {
        for (name, w) in cols {
            let _ = write!(out, "  {name:>w$}");
        }
    }
    out.push('\n');
    for (label, summary) in rows {
        let d = &summary.down;
        let s = &summary.suspect;
        let undetected = if any_crash {
            d.undetected.to_string()
        } else {
            "-".to_owned()
        };
        let cells = [
            ms(d.detection_mean),
            ms(d.detection_p99),
            ms(d.detection_max),
            undetected,
            fixed(d.mistakes_per_hour, 3),
            ms(d.mistake_mean),
            fixed(d.accuracy, 6),
            ms(s.detection_mean),
            fixed(s.mistakes_per_hour, 3),
            ms(s.mistake_mean),
            fixed(s.accuracy, 6),
        ];
        let widths = groups
            .iter()
            .flat_map(|(_, cols)| cols.iter().map(|(_, w)| *w));
        let _ = write!(out, "{label:<width$}");
        for (w, cell) in widths.zip(cells) {
            let _ = write!(out, "  {cell:>w$}");
        }
        out.push('\n');
    }
    out
}

/// One outcome as one JSON object (times in ms).
pub fn json(o: &Outcome) -> Value {
    let s = &o.study;
    let rows: Vec<Value> = o
        .rows
        .iter()
        .map(|r| {
            json!({
                "label": label(&r.setting),
                "detector": r.setting.kind().as_str(),
                "setting": r.setting.to_string(),
                "reachable_s": round_value(Some(r.summary.reachable.as_secs_f64()), 3),
                "crashes": r.summary.crashes,
                "down": r.summary.down.to_json(),
                "suspect": r.summary.suspect.to_json(),
            })
        })
        .collect();
    json!({
        "scenario": s.scenario,
        "seeds": format!("{}..{}", s.seeds.start, s.seeds.end),
        "duration_s": s.params.duration.as_secs_f64(),
        "interval_ms": s.params.interval.as_millis() as u64,
        "clients": client_count(o),
        "latency_ms": s.params.latency.to_ms_text(),
        "engine": s.engine.as_str(),
        "heartbeats": o.heartbeats,
        "crashes": o.crashes,
        "rows": rows,
    })
}

pub(crate) const LEVEL_COLUMNS: [&str; 10] = [
    "detected",
    "td_mean_ms",
    "td_p99_ms",
    "td_max_ms",
    "undetected",
    "mistakes",
    "mistakes_per_hour",
    "tm_mean_ms",
    "tmr_mean_ms",
    "pa",
];

pub(crate) fn level_cells(l: &LevelSummary) -> Vec<String> {
    let v = l.to_json();
    [
        "detected",
        "detection_mean_ms",
        "detection_p99_ms",
        "detection_max_ms",
        "undetected",
        "mistakes",
        "mistakes_per_hour",
        "mistake_mean_ms",
        "recurrence_mean_ms",
        "query_accuracy",
    ]
    .iter()
    .map(|k| match &v[*k] {
        Value::Null => String::new(),
        x => x.to_string(),
    })
    .collect()
}

/// The CSV header line.
pub fn csv_header() -> String {
    let mut cols = vec![
        "scenario".to_owned(),
        "seeds".to_owned(),
        "duration_s".to_owned(),
        "interval_ms".to_owned(),
        "latency_ms".to_owned(),
        "engine".to_owned(),
        "detector".to_owned(),
        "setting".to_owned(),
        "heartbeats".to_owned(),
        "crashes".to_owned(),
        "reachable_s".to_owned(),
    ];
    for level in ["down", "suspect"] {
        cols.extend(LEVEL_COLUMNS.iter().map(|c| format!("{level}_{c}")));
    }
    cols.join(",") + "\n"
}

/// One CSV line per row of the outcome.
pub fn csv_rows(o: &Outcome) -> String {
    let s = &o.study;
    let mut out = String::new();
    for r in &o.rows {
        let mut cells = vec![
            s.scenario.clone(),
            format!("{}..{}", s.seeds.start, s.seeds.end),
            s.params.duration.as_secs().to_string(),
            s.params.interval.as_millis().to_string(),
            s.params.latency.to_ms_text(),
            s.engine.as_str().to_owned(),
            r.setting.kind().as_str().to_owned(),
            r.setting.to_string(),
            o.heartbeats.to_string(),
            r.summary.crashes.to_string(),
            format!("{:.3}", r.summary.reachable.as_secs_f64()),
        ];
        cells.extend(level_cells(&r.summary.down));
        cells.extend(level_cells(&r.summary.suspect));
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}
