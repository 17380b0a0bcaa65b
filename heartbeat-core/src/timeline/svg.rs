//! Draws a [`Timeline`] as SVG, by hand: a few kinds of shapes, each with a `class` that says
//! what it stands for (tests count them), coordinates with one decimal, and nothing that
//! depends on anything but the timeline. Same timeline, same bytes.
//!
//! Heartbeat ticks are merged per pixel column: a lane's ticks are one `path` whose
//! `data-beats` attribute counts the heartbeats it stands for, so a week at 10 Hz is as small
//! as a minute.

use std::fmt::Write as _;
use std::time::Duration;

use crate::liveness::Liveness;

use super::{BandKind, Mark, Span, Timeline};

const WIDTH: f64 = 1000.0;
const LEFT: f64 = 130.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 58.0;
const LANE: f64 = 26.0;
const PLOT: f64 = WIDTH - LEFT - RIGHT;

/// `12.345 s`: a time for people, to the millisecond.
pub fn seconds(d: Duration) -> String {
    format!("{}.{:03} s", d.as_secs(), d.subsec_millis())
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
const LEGEND: [(&str, &str); 14] = [
    ("beats", "heartbeat"),
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
";

struct Canvas {
    out: String,
    end: f64,
}

impl Canvas {
    /// The x of time `t`.
    fn x(&self, t: Duration) -> f64 {
        LEFT + (t.as_secs_f64() / self.end).clamp(0.0, 1.0) * PLOT
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
    let lanes_h = LANE * t.lanes.len().max(1) as f64;
    let axis_y = TOP + lanes_h;
    let legend_y = axis_y + 36.0;
    let rows = LEGEND.len().div_ceil(7) as f64;
    let footer = if t.hidden > 0 { 18.0 } else { 0.0 };
    let height = legend_y + rows * 18.0 + footer + 8.0;
    let mut c = Canvas {
        out: String::new(),
        end: t.end.as_secs_f64().max(1e-9),
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
            "<rect class=\"{class}\" x=\"{x:.1}\" y=\"{TOP:.1}\" width=\"{w:.1}\" \
             height=\"{lanes_h:.1}\"><title>{} from {} to {}</title></rect>",
            esc(&title),
            seconds(b.span.from),
            seconds(b.span.to)
        );
    }
    for (at, label) in &t.lines {
        let x = c.x(*at);
        let _ = writeln!(
            c.out,
            "<line class=\"heal\" x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{axis_y:.1}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            TOP - 4.0,
            x + 3.0,
            TOP - 6.0,
            esc(label)
        );
    }
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
            "<line class=\"grid\" x1=\"{x:.1}\" y1=\"{TOP:.1}\" x2=\"{x:.1}\" y2=\"{axis_y:.1}\"/>\
             <line class=\"axis\" x1=\"{x:.1}\" y1=\"{axis_y:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\"/>\
             <text class=\"tick\" x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{value} {unit}</text>",
            axis_y + 4.0,
            axis_y + 16.0
        );
        at += step;
    }
}

/// One lane: background, name, its bands, shaded states, connections, ticks and marks.
fn draw_lane(c: &mut Canvas, t: &Timeline, i: usize, lane: &super::Lane) {
    let y = TOP + LANE * i as f64;
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
        y + 17.0,
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
            if w > 40.0 {
                let _ = writeln!(
                    c.out,
                    "<text class=\"fault-label\" x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                    x + 3.0,
                    y + 9.0,
                    esc(label)
                );
            }
        }
    }
    for (span, state) in &lane.states {
        let class = match state {
            Liveness::Suspect => "suspect",
            Liveness::Down => "down",
            _ => "left",
        };
        let (x, w) = c.span(*span, 1.0);
        let _ = writeln!(
            c.out,
            "<rect class=\"{class}\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{:.1}\">\
             <title>{class} from {} to {}</title></rect>",
            y + 2.0,
            LANE - 4.0,
            seconds(span.from),
            seconds(span.to)
        );
    }
    for span in &lane.connected {
        let (x, w) = c.span(*span, 0.5);
        let _ = writeln!(
            c.out,
            "<line class=\"conn\" x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\"/>",
            y + LANE - 4.0,
            x + w,
            y + LANE - 4.0
        );
    }
    // Ticks, one per pixel column.
    let mut d = String::new();
    let mut last_col = None;
    for &at in &lane.beats {
        let col = c.x(at).round();
        if last_col != Some(col) {
            let _ = write!(d, "M{col:.1} {:.1}v{:.1}", y + 5.0, LANE - 12.0);
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
                "M{x:.1} {:.1}h{w:.1}v{:.1}h-{w:.1}z",
                y + 5.0,
                LANE - 12.0
            );
        }
        let n: u64 = lane.counted.iter().map(|&(_, n)| n).sum();
        let _ = writeln!(
            c.out,
            "<path class=\"counted\" fill=\"#1f7a3a\" fill-opacity=\".45\" data-beats=\"{n}\" \
             d=\"{d}\"/>"
        );
    }
    for (span, count) in &lane.missed {
        let (x, w) = c.span(*span, 2.0);
        let _ = writeln!(
            c.out,
            "<rect class=\"missed\" data-count=\"{count}\" x=\"{x:.1}\" y=\"{:.1}\" \
             width=\"{w:.1}\" height=\"3\"><title>{count} missed before {}</title></rect>",
            y + LANE - 8.0,
            seconds(span.to)
        );
    }
    for (at, count) in &lane.bursts {
        let x = c.x(*at);
        let _ = writeln!(
            c.out,
            "<path class=\"burst\" data-count=\"{count}\" d=\"{}\"><title>burst of {count} at {}\
             </title></path>",
            diamond(x, y + 4.0),
            seconds(*at)
        );
    }
    for (at, mark) in &lane.marks {
        let x = c.x(*at);
        let cy = y + LANE - 4.0;
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
