//! Renders a tuning outcome: a text table (the QoS table's columns), one JSON object, or CSV.
//! Fixed formats throughout, so the same log and arguments always print the same bytes.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

use heartbeat_core::units::fmt_duration;

use super::advice::{Cell, Group};
use super::{Outcome, Row, server_flags};
use crate::qos::label;
use crate::qos::metrics::{Level, ms_value, round_value};
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
advice: per class of clients (each distinct interval) and for the fleet, the setting with the
  lowest T_D p99, then max, among those with no mistake at the level (and no undetected crash
  point); a class's p99 and max are its worst client's own, the fleet's its worst class's.
  mistakes: on the whole trace, at the down and the suspect level. defaults: the server's
  (--detector phi), always measured.
";

/// A level's name, as `--level` takes it.
pub fn level_name(level: Level) -> &'static str {
    match level {
        Level::Down => "down",
        Level::Suspect => "suspect",
    }
}

/// A class's name: its interval (`100ms`), or `fleet`.
fn class_name(g: &Group) -> String {
    g.interval.map_or_else(|| "fleet".to_owned(), fmt_duration)
}

/// `1234.5` (ms, one decimal), or `-`.
fn ms_cell(d: Option<Duration>) -> String {
    d.map_or_else(
        || "-".to_owned(),
        |d| format!("{:.1}", d.as_secs_f64() * 1000.0),
    )
}

/// The advice table: one line per class, then the fleet.
fn advice_table(o: &Outcome) -> String {
    let a = &o.advice;
    let groups: Vec<&Group> = a.classes.iter().chain([&a.fleet]).collect();
    let names: Vec<String> = groups
        .iter()
        .map(|g| {
            g.pick.map_or_else(
                || "none without a mistake".to_owned(),
                |i| label(&o.rows[i].setting),
            )
        })
        .collect();
    let width = names.iter().map(String::len).max().unwrap_or(0).max(11);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:8}  {:>7}  {:width$}  {:>9}  {:>9}  {:>13}  {:>8}  {:>12}",
        "class",
        "clients",
        "recommended",
        "T_D p99",
        "T_D max",
        "mistakes down",
        "suspect",
        "defaults p99"
    );
    for (g, name) in groups.iter().zip(&names) {
        let cell = g.pick.map(|i| g.cells[i]).unwrap_or_default();
        let defaults = g.cells.get(a.defaults).copied().unwrap_or_default();
        let count = |n: u64| {
            if g.pick.is_some() {
                n.to_string()
            } else {
                "-".to_owned()
            }
        };
        let _ = writeln!(
            out,
            "{:8}  {:>7}  {name:width$}  {:>9}  {:>9}  {:>13}  {:>8}  {:>12}",
            class_name(g),
            g.clients.len(),
            ms_cell(cell.p99),
            ms_cell(cell.max),
            count(cell.mistakes_down),
            count(cell.mistakes_suspect),
            ms_cell(defaults.p99),
        );
    }
    out
}

/// The lines that say where a pick is slower at p99 than the defaults.
fn slower_lines(o: &Outcome) -> Vec<String> {
    let a = &o.advice;
    a.slower
        .iter()
        .map(|s| {
            let class = &a.classes[s.class];
            let defaults = class.cells[a.defaults];
            format!(
                "slower than the defaults: class {}: {} {} has T_D p99 {}, the defaults {} (which \
                 make {} at the {} level{})",
                class_name(class),
                if s.fleet {
                    "the fleet's pick"
                } else {
                    "its pick"
                },
                label(&o.rows[s.setting].setting),
                ms(Some(s.p99)),
                ms(Some(s.defaults_p99)),
                plural(defaults.mistakes(a.level), "mistake", "mistakes"),
                level_name(a.level),
                if defaults.undetected > 0 {
                    format!(", {} undetected", defaults.undetected)
                } else {
                    String::new()
                },
            )
        })
        .collect()
}

/// A TOML string, quoted and escaped.
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// Each class's pick as entries of a `heartbeat-server --client-settings` file: one
/// `[[client]]` per client, its detector and every parameter that differs from the detector's
/// defaults (the flags' names and grammar). Classes with no pick are a comment.
pub fn settings_file(o: &Outcome) -> String {
    let a = &o.advice;
    let mut out = String::new();
    for class in &a.classes {
        let Some(i) = class.pick else {
            let _ = writeln!(
                out,
                "# class {}: no setting without a mistake at the {} level",
                class_name(class),
                level_name(a.level)
            );
            continue;
        };
        let setting = label(&o.rows[i].setting);
        let _ = writeln!(
            out,
            "# class {}: {setting} (T_D p99 {}, no mistake at the {} level)",
            class_name(class),
            ms(class.cells[i].p99),
            level_name(a.level),
        );
        for &c in &class.clients {
            let mut words = setting.split_whitespace();
            let _ = writeln!(out, "[[client]]");
            let _ = writeln!(out, "match = {}", toml_string(&o.clients[c].name));
            let _ = writeln!(
                out,
                "detector = {}",
                toml_string(words.next().unwrap_or_default())
            );
            for w in words {
                let (name, value) = w.split_once('=').unwrap_or((w, ""));
                if value.parse::<f64>().is_ok() {
                    let _ = writeln!(out, "{name} = {value}");
                } else {
                    let _ = writeln!(out, "{name} = {}", toml_string(value));
                }
            }
        }
    }
    out
}

/// The JSON of one pick (or of the defaults) for a group.
fn cell_json(o: &Outcome, setting: Option<usize>, cell: &Cell) -> Value {
    let Some(i) = setting else {
        return Value::Null;
    };
    json!({
        "label": label(&o.rows[i].setting),
        "flags": server_flags(&o.rows[i].setting),
        "detection_p99_ms": ms_value(cell.p99),
        "detection_max_ms": ms_value(cell.max),
        "undetected": cell.undetected,
        "mistakes_down": cell.mistakes_down,
        "mistakes_suspect": cell.mistakes_suspect,
    })
}

/// The advice as JSON.
fn advice_json(o: &Outcome) -> Value {
    let a = &o.advice;
    let group = |g: &Group| {
        let cell = g.pick.map(|i| g.cells[i]).unwrap_or_default();
        let defaults = g.cells.get(a.defaults).copied().unwrap_or_default();
        json!({
            "class": class_name(g),
            "interval_ms": ms_value(g.interval),
            "clients": g.clients.iter().map(|&c| o.clients[c].name.clone()).collect::<Vec<_>>(),
            "recommended": cell_json(o, g.pick, &cell),
            "defaults": cell_json(o, Some(a.defaults), &defaults),
            "fleet_pick": cell_json(o, a.fleet.pick, &a.fleet.pick.map(|i| g.cells[i]).unwrap_or_default()),
        })
    };
    json!({
        "level": level_name(a.level),
        "classes": a.classes.iter().map(group).collect::<Vec<_>>(),
        "fleet": group(&a.fleet),
        "fleet_flags": a.fleet.pick.map(|i| format!("heartbeat-server {}", server_flags(&o.rows[i].setting))),
        "slower_than_defaults": slower_lines(o),
        "client_settings": settings_file(o),
    })
}

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
    let _ = writeln!(out, "every setting, every client's arrivals pooled:");
    out.push_str(&summary_rows(&rows, true));
    out.push('\n');
    let a = &o.advice;
    let _ = writeln!(
        out,
        "advice (no mistake at the {} level; ranked by T_D p99 then max at that level, per \
         client; times in ms)",
        level_name(a.level)
    );
    out.push_str(&advice_table(o));
    for line in slower_lines(o) {
        let _ = writeln!(out, "{line}");
    }
    out.push('\n');
    let _ = writeln!(out, "fleet-wide flags:");
    match a.fleet.pick {
        Some(i) => {
            let _ = writeln!(
                out,
                "  heartbeat-server {}",
                server_flags(&o.rows[i].setting)
            );
        }
        None => {
            let _ = writeln!(out, "  none of the settings tried makes no mistake");
        }
    }
    let _ = writeln!(
        out,
        "per-class settings (heartbeat-server --client-settings FILE; first match wins):"
    );
    for line in settings_file(o).lines() {
        let _ = writeln!(out, "  {line}");
    }
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
        "defaults": row_json(&o.rows[o.defaults]),
        "advice": advice_json(o),
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
        let a = &o.advice;
        let mut picked: Vec<String> = a
            .classes
            .iter()
            .chain([&a.fleet])
            .filter(|g| g.pick == Some(i))
            .map(class_name)
            .collect();
        if i == o.defaults {
            picked.push("defaults".to_owned());
        }
        let recommended = picked.join("+");
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
            recommended,
        ];
        cells.extend(level_cells(&r.summary.down));
        cells.extend(level_cells(&r.summary.suspect));
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}
