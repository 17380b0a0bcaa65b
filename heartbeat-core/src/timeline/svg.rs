//! Draws a [`Timeline`] as SVG, by hand: a few kinds of shapes, each with a `class` that says
//! what it stands for (tests count them), coordinates with one decimal, and nothing that
//! depends on anything but the timeline. Same timeline, same bytes.
//!
//! Heartbeat ticks are merged per pixel column: a lane's ticks are one `path` whose
//! `data-beats` attribute counts the heartbeats it stands for, so a week at 10 Hz is as small
//! as a minute. The one-way delay is a band per lane (per pixel column, the median to the
//! largest, full height at the lane's largest delay), so jitter and stalls show even at 100 ms
//! intervals.
//!
//! Shaded periods are at least [`MIN_STATE`] pixels wide, with their length written inside
//! when it fits. Every label (lengths, faults, detections, expectations) is drawn last, on a
//! background of its own, so no shading hides it.

use std::fmt::Write as _;
use std::time::Duration;

use crate::liveness::Liveness;

use super::{BandKind, Mark, Span, Timeline};

const WIDTH: f64 = 1000.0;
const LEFT: f64 = 130.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 58.0;
const LANE: f64 = 40.0;
/// A lane's rows, from its top: labels of faults and detections (baseline), the detection's
/// bracket, heartbeat ticks (top and height), the delay band's base, missed gaps, the
/// connection line.
const ROW_LABEL: f64 = 11.0;
const ROW_DETECTION: f64 = 15.0;
const ROW_TICKS: f64 = 17.0;
const TICKS_H: f64 = 14.0;
const ROW_MISSED: f64 = 31.0;
const ROW_CONN: f64 = 36.0;
const PLOT: f64 = WIDTH - LEFT - RIGHT;
/// The narrowest a shaded period (suspect, down, left) is drawn, in pixels.
pub const MIN_STATE: f64 = 3.0;
/// The width of one character of a label, about (11 px sans-serif).
const CHAR: f64 = 6.2;
/// The height of the delay band at its lane's largest delay.
const DELAY_H: f64 = 14.0;

/// `12.345 s`: a time for people, to the millisecond.
pub fn seconds(d: Duration) -> String {
    format!("{}.{:03} s", d.as_secs(), d.subsec_millis())
}

/// A short length for a label: `158 ms`, `2.31 s`, `4 min 5 s`, `2 h 3 min`.
pub fn length(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{} ms", d.as_millis()),
        1..60 => format!("{:.2} s", d.as_secs_f64()),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

/// Text made safe for XML: markup characters escaped, characters XML cannot hold replaced.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(' '),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// A client name for the lane label: at most 18 characters.
fn short(name: &str) -> String {
    if name.chars().count() <= 18 {
        name.to_owned()
    } else {
        let head: String = name.chars().take(17).collect();
        format!("{head}…")
    }
}

/// The axis step: the smallest round step that gives at most ten ticks, and its unit.
fn step(end: Duration) -> (Duration, &'static str, Duration) {
    const MS: u64 = 1;
    const S: u64 = 1000;
    const MIN: u64 = 60 * S;
    const H: u64 = 60 * MIN;
    const D: u64 = 24 * H;
    let steps: [(u64, &str, u64); 28] = [
        (MS, "ms", MS),
        (2 * MS, "ms", MS),
        (5 * MS, "ms", MS),
        (10 * MS, "ms", MS),
        (20 * MS, "ms", MS),
        (50 * MS, "ms", MS),
        (100 * MS, "ms", MS),
        (200 * MS, "ms", MS),
        (500 * MS, "ms", MS),
        (S, "s", S),
        (2 * S, "s", S),
        (5 * S, "s", S),
        (10 * S, "s", S),
        (15 * S, "s", S),
        (30 * S, "s", S),
        (MIN, "min", MIN),
        (2 * MIN, "min", MIN),
        (5 * MIN, "min", MIN),
        (10 * MIN, "min", MIN),
        (15 * MIN, "min", MIN),
        (30 * MIN, "min", MIN),
        (H, "h", H),
        (2 * H, "h", H),
        (3 * H, "h", H),
        (6 * H, "h", H),
        (12 * H, "h", H),
        (D, "d", D),
        (7 * D, "d", D),
    ];
    let end_ms = end.as_millis();
    let (k, unit, per) = steps
        .into_iter()
        .find(|&(k, ..)| end_ms / u128::from(k) <= 10)
        .unwrap_or_else(|| {
            let days = (end_ms / u128::from(D)).div_ceil(10);
            (u64::try_from(days).unwrap_or(u64::MAX / D) * D, "d", D)
        });
    (Duration::from_millis(k), unit, Duration::from_millis(per))
}

/// The legend's entries: class and label.
const LEGEND: [(&str, &str); 17] = [
    ("beats", "heartbeat"),
    ("delay", "delay p50-max"),
    ("missed", "missed gap"),
    ("burst", "burst"),
    ("suspect", "suspect"),
    ("down", "down"),
    ("left", "left (goodbye)"),
    ("conn", "connected"),
    ("connect", "connect"),
    ("reconnect", "reconnect"),
    ("disconnect", "disconnect"),
    ("restart", "new session"),
    ("fault", "fault"),
    ("server-down", "server down"),
    ("stall", "server stalled"),
    ("detection", "detection time"),
    ("window", "expectation"),
];

const STYLE: &str = "\
text{font-family:sans-serif;font-size:11px;fill:#222}\
.title{font-size:14px;font-weight:bold}.sub{fill:#555}\
.bg0{fill:#ffffff}.bg1{fill:#f4f5f7}\
.beats{stroke:#1f7a3a;stroke-width:1;fill:none}\
.missed{fill:#d62728}\
.burst{fill:#7b3fbf}\
.suspect{fill:#ffbf47;fill-opacity:.55}\
.down{fill:#e8474b;fill-opacity:.5}\
.left{fill:#9aa0a6;fill-opacity:.35}\
.conn{stroke:#4a4a4a;stroke-width:1.5}\
.connect{fill:#1f7a3a}\
.reconnect{fill:#fff;stroke:#1f7a3a;stroke-width:1.5}\
.disconnect{stroke:#222;stroke-width:1.5;fill:none}\
.restart{fill:#e07b00}\
.fault{fill:#3b6fd8;fill-opacity:.18;stroke:#3b6fd8;stroke-opacity:.5}\
.server-down{fill:#555;fill-opacity:.25}\
.stall{fill:#b5179e;fill-opacity:.2}\
.heal{stroke:#3b6fd8;stroke-dasharray:4 3}\
.axis{stroke:#888}.grid{stroke:#ddd}\
.counted{fill:#1f7a3a;fill-opacity:.45}\
.delay{stroke:#1c4fa8;stroke-width:1.2;fill:none}\
.delay-max{stroke:#6f9be0;stroke-opacity:.7;stroke-width:1.2;fill:none}\
.detection{stroke:#8a1c1c;stroke-width:1.5;fill:none}\
.detection-label{fill:#8a1c1c;font-size:10px}\
.dur{font-size:10px;fill:#222}\
.fault-label{fill:#1d3f8a}\
.label-bg{fill:#fff;fill-opacity:.85}\
.window{fill:none;stroke-width:1.5;stroke-dasharray:5 2}\
.window.ok{stroke:#1f7a3a}.window.fail{stroke:#d62728}\
text.ok,tspan.ok{fill:#1f7a3a}text.fail,tspan.fail{fill:#d62728}\
.detector{fill:#555}\
";

struct Canvas {
    out: String,
    end: f64,
    /// The y of the first lane.
    top: f64,
    /// Labels, drawn last.
    labels: Vec<Label>,
}

/// A label, drawn last on a background of its own.
struct Label {
    x: f64,
    /// Its baseline.
    y: f64,
    class: &'static str,
    text: String,
    /// Centred at `x`, else starting there.
    centred: bool,
    /// Drawn only where it overlaps no other label.
    optional: bool,
}

impl Canvas {
    /// The x of time `t`.
    fn x(&self, t: Duration) -> f64 {
        LEFT + (t.as_secs_f64() / self.end).clamp(0.0, 1.0) * PLOT
    }

    /// Queues a label at `x`, `y` (its baseline; its middle if `centred`), drawn last.
    fn label(&mut self, x: f64, y: f64, class: &'static str, text: String, centred: bool) {
        self.labels.push(Label {
            x,
            y,
            class,
            text,
            centred,
            optional: false,
        });
    }

    /// Queues a label drawn only where it overlaps none of the others.
    fn optional_label(&mut self, x: f64, y: f64, class: &'static str, text: String) {
        self.labels.push(Label {
            x,
            y,
            class,
            text,
            centred: false,
            optional: true,
        });
    }

    /// The queued labels, each on a background of its own: the others first, each moved
    /// right past any it would overlap on its row; then the optional ones that overlap none.
    fn draw_labels(&mut self) {
        let mut labels = std::mem::take(&mut self.labels);
        labels.sort_by_key(|l| l.optional);
        let mut placed: Vec<(f64, f64, f64)> = Vec::new(); // y, left, right
        for l in labels {
            let w = l.text.chars().count() as f64 * CHAR + 4.0;
            let mut left = if l.centred { l.x - w / 2.0 } else { l.x };
            let overlaps = |left: f64, placed: &[(f64, f64, f64)]| {
                placed
                    .iter()
                    .filter(|(y, a, b)| (*y - l.y).abs() < 12.0 && left < *b && left + w > *a)
                    .map(|(_, _, b)| *b)
                    .fold(None, |m: Option<f64>, b| Some(m.map_or(b, |m| m.max(b))))
            };
            while let Some(right) = overlaps(left, &placed) {
                if l.optional {
                    break;
                }
                left = right + 2.0;
            }
            if l.optional && (overlaps(left, &placed).is_some() || left + w > WIDTH) {
                continue;
            }
            placed.push((l.y, left, left + w));
            let _ = writeln!(
                self.out,
                "<rect class=\"label-bg\" x=\"{left:.1}\" y=\"{:.1}\" width=\"{w:.1}\" \
                 height=\"12\"/><text class=\"{}\" x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                l.y - 9.5,
                l.class,
                left + 2.0,
                l.y,
                esc(&l.text)
            );
        }
    }

    /// The left x and width of `span`, at least `min` wide.
    fn span(&self, s: Span, min: f64) -> (f64, f64) {
        let (a, b) = (self.x(s.from), self.x(s.to));
        let w = (b - a).max(min);
        (a.min(LEFT + PLOT - w).max(LEFT), w)
    }
}

/// A diamond (burst) centred at `x`, `y`.
fn diamond(x: f64, y: f64) -> String {
    format!("M{x:.1} {:.1}l4 4l-4 4l-4-4z", y - 4.0)
}

/// The SVG of `t`.
pub fn render(t: &Timeline) -> String {
    let top = TOP + if t.verdicts.is_empty() { 0.0 } else { 16.0 };
    let lanes_h = LANE * t.lanes.len().max(1) as f64;
    let axis_y = top + lanes_h;
    let legend_y = axis_y + 36.0;
    let rows = LEGEND.len().div_ceil(7) as f64;
    let footer = if t.hidden > 0 { 18.0 } else { 0.0 };
    let height = legend_y + rows * 18.0 + footer + 8.0;
    let mut c = Canvas {
        out: String::new(),
        end: t.end.as_secs_f64().max(1e-9),
        top,
        labels: Vec::new(),
    };
    let _ = write!(
        c.out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH:.0}\" height=\"{height:.0}\" \
         viewBox=\"0 0 {WIDTH:.0} {height:.0}\">\n<style>{STYLE}</style>\n"
    );
    let _ = writeln!(
        c.out,
        "<rect x=\"0\" y=\"0\" width=\"{WIDTH:.0}\" height=\"{height:.0}\" class=\"bg0\"/>"
    );
    let _ = writeln!(
        c.out,
        "<text class=\"title\" x=\"10\" y=\"20\">{}</text>\n<text class=\"sub\" x=\"10\" \
         y=\"38\">{}</text>",
        esc(&t.title),
        esc(&t.subtitle)
    );
    if !t.detector.is_empty() {
        let _ = writeln!(
            c.out,
            "<text class=\"detector\" x=\"{:.1}\" y=\"20\" text-anchor=\"end\">detector {}</text>",
            WIDTH - RIGHT,
            esc(&t.detector)
        );
    }
    if !t.verdicts.is_empty() {
        let _ = write!(
            c.out,
            "<text class=\"verdicts\" x=\"10\" y=\"56\">expectations:"
        );
        for (name, ok) in &t.verdicts {
            let (class, mark) = if *ok { ("ok", "✓") } else { ("fail", "✗") };
            let _ = write!(
                c.out,
                " <tspan class=\"{class}\">{mark} {}</tspan>",
                esc(name)
            );
        }
        c.out.push_str("</text>\n");
    }
    grid(&mut c, t, axis_y);
    for (i, lane) in t.lanes.iter().enumerate() {
        draw_lane(&mut c, t, i, lane);
    }
    for b in t.bands.iter().filter(|b| b.lane.is_none()) {
        let (x, w) = c.span(b.span, 1.5);
        let (class, title) = match &b.kind {
            BandKind::Fault(label) => ("fault", label.clone()),
            BandKind::ServerDown => ("server-down", "server down".to_owned()),
            BandKind::Stalled => ("stall", "server stalled".to_owned()),
        };
        let _ = writeln!(
            c.out,
            "<rect class=\"{class}\" x=\"{x:.1}\" y=\"{top:.1}\" width=\"{w:.1}\" \
             height=\"{lanes_h:.1}\"><title>{} from {} to {}</title></rect>",
            esc(&title),
            seconds(b.span.from),
            seconds(b.span.to)
        );
    }
    for win in &t.windows {
        let (x, w) = c.span(win.span, 2.0);
        let (y, h) = match win.lane {
            Some(i) => (top + LANE * i as f64 + 0.5, LANE - 1.0),
            None => (top, lanes_h),
        };
        let (class, mark) = if win.ok {
            ("ok", "✓")
        } else {
            ("fail", "✗")
        };
        let _ = writeln!(
            c.out,
            "<rect class=\"window {class}\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" \
             height=\"{h:.1}\"><title>{mark} {} from {} to {}</title></rect>",
            esc(&win.label),
            seconds(win.span.from),
            seconds(win.span.to)
        );
        c.label(x + w - 12.0, y + ROW_LABEL, class, mark.to_owned(), false);
    }
    for (at, label) in &t.lines {
        let x = c.x(*at);
        let _ = writeln!(
            c.out,
            "<line class=\"heal\" x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{axis_y:.1}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            top - 4.0,
            x + 3.0,
            top - 6.0,
            esc(label)
        );
    }
    c.draw_labels();
    legend(&mut c, legend_y);
    if t.hidden > 0 {
        let _ = writeln!(
            c.out,
            "<text class=\"hidden\" x=\"10\" y=\"{:.1}\">and {} more clients not shown: these \
             {} have the most missed heartbeats and time down</text>",
            legend_y + rows * 18.0 + 8.0,
            t.hidden,
            t.lanes.len()
        );
    }
    c.out.push_str("</svg>\n");
    c.out
}

/// The time axis below the lanes, with grid lines across them.
fn grid(c: &mut Canvas, t: &Timeline, axis_y: f64) {
    let (step, unit, per) = step(t.end);
    let top = c.top;
    let _ = writeln!(
        c.out,
        "<line class=\"axis\" x1=\"{LEFT:.1}\" y1=\"{axis_y:.1}\" x2=\"{:.1}\" y2=\"{axis_y:.1}\"/>",
        LEFT + PLOT
    );
    let mut at = Duration::ZERO;
    while at <= t.end {
        let x = c.x(at);
        let value = at.as_millis() / per.as_millis().max(1);
        let _ = writeln!(
            c.out,
            "<line class=\"grid\" x1=\"{x:.1}\" y1=\"{top:.1}\" x2=\"{x:.1}\" y2=\"{axis_y:.1}\"/>\
             <line class=\"axis\" x1=\"{x:.1}\" y1=\"{axis_y:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\"/>\
             <text class=\"tick\" x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{value} {unit}</text>",
            axis_y + 4.0,
            axis_y + 16.0
        );
        at += step;
    }
}

/// The delay band of `lane` at `y`: per pixel column, the median of the delays drawn there
/// and the largest, full height ([`DELAY_H`]) at the lane's largest delay.
fn delay_band(c: &mut Canvas, lane: &super::Lane, y: f64) {
    if lane.delays.is_empty() {
        return;
    }
    // Full height at the lane's largest delay (at least 50 ms), so jitter shows at any
    // interval and a stall stands out.
    let largest = lane.delays.iter().map(|d| d.max).max().unwrap_or_default();
    let scale = largest.max(Duration::from_millis(50)).as_secs_f64();
    let h = |d: Duration| (d.as_secs_f64() / scale).clamp(0.0, 1.0) * DELAY_H;
    let base = y + ROW_TICKS + DELAY_H;
    let (mut med, mut max) = (String::new(), String::new());
    let mut column: Vec<Duration> = Vec::new();
    let mut top = Duration::ZERO;
    let mut worst = Duration::ZERO;
    let mut flush = |col: f64, column: &mut Vec<Duration>, top: Duration| {
        if column.is_empty() {
            return;
        }
        column.sort_unstable();
        let p50 = column[(column.len() - 1) / 2];
        let _ = write!(max, "M{col:.1} {base:.1}v-{:.1}", h(top).max(0.5));
        let _ = write!(med, "M{col:.1} {base:.1}v-{:.1}", h(p50).max(0.5));
        column.clear();
    };
    let mut last_col = None;
    for s in &lane.delays {
        let col = c.x(s.at).round();
        if last_col != Some(col) {
            if let Some(prev) = last_col {
                flush(prev, &mut column, top);
            }
            last_col = Some(col);
            top = Duration::ZERO;
        }
        column.push(s.typical);
        top = top.max(s.max);
        worst = worst.max(s.max);
    }
    if let Some(prev) = last_col {
        flush(prev, &mut column, top);
    }
    let _ = writeln!(
        c.out,
        "<path class=\"delay-max\" data-max-ms=\"{:.1}\" d=\"{max}\"/><path class=\"delay\" \
         d=\"{med}\"><title>one-way delay, median to largest per column; at most {}</title></path>",
        worst.as_secs_f64() * 1e3,
        length(worst)
    );
}

/// One lane: background, name, its bands, shaded states, connections, ticks, delays,
/// detections and marks; its labels are queued.
fn draw_lane(c: &mut Canvas, t: &Timeline, i: usize, lane: &super::Lane) {
    let y = c.top + LANE * i as f64;
    let _ = writeln!(
        c.out,
        "<g class=\"lane\" data-client=\"{}\">",
        esc(&lane.name)
    );
    let _ = writeln!(
        c.out,
        "<rect class=\"bg{}\" x=\"0\" y=\"{y:.1}\" width=\"{WIDTH:.0}\" height=\"{LANE:.1}\"/>\
         <text class=\"name\" x=\"8\" y=\"{:.1}\">{}<title>{}</title></text>",
        i % 2,
        y + LANE / 2.0 + 4.0,
        esc(&short(&lane.name)),
        esc(&lane.name)
    );
    for b in t.bands.iter().filter(|b| b.lane == Some(i)) {
        if let BandKind::Fault(label) = &b.kind {
            let (x, w) = c.span(b.span, 1.5);
            let _ = writeln!(
                c.out,
                "<rect class=\"fault\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{:.1}\">\
                 <title>{} from {} to {}</title></rect>",
                y + 1.0,
                LANE - 2.0,
                esc(label),
                seconds(b.span.from),
                seconds(b.span.to)
            );
            // Required where it fits in its band, else only where it overlaps no other.
            if w >= label.chars().count() as f64 * CHAR + 4.0 {
                c.label(x + 1.0, y + ROW_LABEL, "fault-label", label.clone(), false);
            } else {
                c.optional_label(x + 1.0, y + ROW_LABEL, "fault-label", label.clone());
            }
        }
    }
    for (span, state) in &lane.states {
        let class = match state {
            Liveness::Suspect => "suspect",
            Liveness::Down => "down",
            _ => "left",
        };
        let (x, w) = c.span(*span, MIN_STATE);
        let _ = writeln!(
            c.out,
            "<rect class=\"{class}\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{:.1}\">\
             <title>{class} from {} to {}</title></rect>",
            y + 2.0,
            LANE - 4.0,
            seconds(span.from),
            seconds(span.to)
        );
        let text = length(span.to.saturating_sub(span.from));
        if w >= text.chars().count() as f64 * CHAR + 6.0 {
            c.label(
                x + w / 2.0,
                y + ROW_TICKS + TICKS_H - 2.0,
                "dur",
                text,
                true,
            );
        }
    }
    for span in &lane.connected {
        let (x, w) = c.span(*span, 0.5);
        let _ = writeln!(
            c.out,
            "<line class=\"conn\" x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\"/>",
            y + ROW_CONN,
            x + w,
            y + ROW_CONN
        );
    }
    // Ticks, one per pixel column.
    let mut d = String::new();
    let mut last_col = None;
    for &at in &lane.beats {
        let col = c.x(at).round();
        if last_col != Some(col) {
            let _ = write!(d, "M{col:.1} {:.1}v{TICKS_H:.1}", y + ROW_TICKS);
            last_col = Some(col);
        }
    }
    if !lane.beats.is_empty() {
        let _ = writeln!(
            c.out,
            "<path class=\"beats\" data-beats=\"{}\" d=\"{d}\"/>",
            lane.beats.len()
        );
    }
    // Counted heartbeats: one band per period that had any.
    if !lane.counted.is_empty() {
        let mut d = String::new();
        for (span, _) in &lane.counted {
            let (x, w) = c.span(*span, 1.0);
            let _ = write!(
                d,
                "M{x:.1} {:.1}h{w:.1}v{TICKS_H:.1}h-{w:.1}z",
                y + ROW_TICKS
            );
        }
        let n: u64 = lane.counted.iter().map(|&(_, n)| n).sum();
        let _ = writeln!(
            c.out,
            "<path class=\"counted\" data-beats=\"{n}\" d=\"{d}\"/>"
        );
    }
    for (span, count) in &lane.missed {
        let (x, w) = c.span(*span, 2.0);
        let _ = writeln!(
            c.out,
            "<rect class=\"missed\" data-count=\"{count}\" x=\"{x:.1}\" y=\"{:.1}\" \
             width=\"{w:.1}\" height=\"3\"><title>{count} missed before {}</title></rect>",
            y + ROW_MISSED,
            seconds(span.to)
        );
    }
    for (at, count) in &lane.bursts {
        let x = c.x(*at);
        let _ = writeln!(
            c.out,
            "<path class=\"burst\" data-count=\"{count}\" d=\"{}\"><title>burst of {count} at {}\
             </title></path>",
            diamond(x, y + ROW_TICKS - 4.0),
            seconds(*at)
        );
    }
    delay_band(c, lane, y);
    for d in &lane.detections {
        let (x1, x2) = (c.x(d.span.from), c.x(d.span.to));
        let dy = y + ROW_DETECTION;
        let value = d
            .value
            .map(|v| format!(", value {v:.2}"))
            .unwrap_or_default();
        let _ = writeln!(
            c.out,
            "<path class=\"detection\" d=\"M{x1:.1} {:.1}v4M{x1:.1} {dy:.1}H{x2:.1}M{x2:.1} {:.1}v4\">\
             <title>down after {} (from {} to {}){value}</title></path>",
            dy - 2.0,
            dy - 2.0,
            length(d.span.to.saturating_sub(d.span.from)),
            seconds(d.span.from),
            seconds(d.span.to)
        );
        let text = format!(
            "down after {}",
            length(d.span.to.saturating_sub(d.span.from))
        );
        c.label(x2 + 3.0, y + ROW_LABEL, "detection-label", text, false);
    }
    for (at, mark) in &lane.marks {
        let x = c.x(*at);
        let cy = y + ROW_CONN;
        let _ = match mark {
            Mark::Connect | Mark::Reconnect => {
                let class = if *mark == Mark::Connect {
                    "connect"
                } else {
                    "reconnect"
                };
                writeln!(
                    c.out,
                    "<circle class=\"{class}\" cx=\"{x:.1}\" cy=\"{cy:.1}\" r=\"3\">\
                     <title>{class} at {}</title></circle>",
                    seconds(*at)
                )
            }
            Mark::Disconnect(why) => writeln!(
                c.out,
                "<path class=\"disconnect\" d=\"M{:.1} {:.1}l6 6m0-6l-6 6\"><title>disconnect at {}: \
                 {}</title></path>",
                x - 3.0,
                cy - 3.0,
                seconds(*at),
                esc(why)
            ),
            Mark::Restart => writeln!(
                c.out,
                "<path class=\"restart\" d=\"M{:.1} {:.1}l4 7h-8z\"><title>new session at {}\
                 </title></path>",
                x,
                y + 1.0,
                seconds(*at)
            ),
        };
    }
    c.out.push_str("</g>\n");
}

/// The legend: a swatch of each kind of mark and what it means, seven to a row.
fn legend(c: &mut Canvas, top: f64) {
    c.out.push_str("<g class=\"legend\">\n");
    for (k, (class, label)) in LEGEND.iter().enumerate() {
        let x = 10.0 + (k % 7) as f64 * 140.0;
        let y = top + (k / 7) as f64 * 18.0;
        let swatch = match *class {
            "beats" => format!(
                "<path class=\"beats\" d=\"M{:.1} {:.1}v10\"/>",
                x + 6.0,
                y - 9.0
            ),
            "burst" => format!(
                "<path class=\"burst\" d=\"{}\"/>",
                diamond(x + 6.0, y - 8.0)
            ),
            "conn" => format!(
                "<line class=\"conn\" x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\"/>",
                y - 4.0,
                x + 14.0,
                y - 4.0
            ),
            "connect" | "reconnect" => format!(
                "<circle class=\"{class}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\"/>",
                x + 6.0,
                y - 4.0
            ),
            "disconnect" => format!(
                "<path class=\"disconnect\" d=\"M{:.1} {:.1}l6 6m0-6l-6 6\"/>",
                x + 3.0,
                y - 7.0
            ),
            "restart" => format!(
                "<path class=\"restart\" d=\"M{:.1} {:.1}l4 7h-8z\"/>",
                x + 6.0,
                y - 9.0
            ),
            "delay" => format!(
                "<path class=\"delay-max\" d=\"M{:.1} {:.1}v-10\"/><path class=\"delay\" \
                 d=\"M{:.1} {:.1}v-5\"/>",
                x + 4.0,
                y + 1.0,
                x + 8.0,
                y + 1.0
            ),
            "detection" => format!(
                "<path class=\"detection\" d=\"M{x:.1} {:.1}v4M{x:.1} {:.1}h14v-2v4\"/>",
                y - 7.0,
                y - 5.0
            ),
            "window" => format!(
                "<rect class=\"window ok\" x=\"{x:.1}\" y=\"{:.1}\" width=\"14\" height=\"10\"/>",
                y - 9.0
            ),
            "missed" => format!(
                "<rect class=\"missed\" x=\"{x:.1}\" y=\"{:.1}\" width=\"14\" height=\"3\"/>",
                y - 5.0
            ),
            _ => format!(
                "<rect class=\"{class}\" x=\"{x:.1}\" y=\"{:.1}\" width=\"14\" height=\"10\"/>",
                y - 9.0
            ),
        };
        let _ = writeln!(
            c.out,
            "{swatch}<text x=\"{:.1}\" y=\"{y:.1}\">{label}</text>",
            x + 20.0
        );
    }
    c.out.push_str("</g>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_round_and_few() {
        let s = |ms: u64| {
            let (k, unit, _) = step(Duration::from_millis(ms));
            format!("{}ms {unit}", k.as_millis())
        };
        assert_eq!(s(1), "1ms ms");
        assert_eq!(s(102_022), "10000ms s");
        assert_eq!(s(3_600_000), "600000ms min");
        assert_eq!(s(7 * 86_400_000), "86400000ms d");
        assert_eq!(s(1000 * 86_400_000), "8640000000ms d");
    }

    #[test]
    fn text_is_made_safe() {
        assert_eq!(
            esc("a<b>&\"c'\u{0}\n"),
            "a&lt;b&gt;&amp;&quot;c&apos;\u{fffd} "
        );
        assert_eq!(short("abcdefghijklmnopqrstuvwxyz"), "abcdefghijklmnopq…");
    }
}
