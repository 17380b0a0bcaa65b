//! Timelines as pictures (`heartbeat-sim run --svg`, `heartbeat-sim timeline`): the SVG parsed
//! with an XML parser and what it draws counted against its input, the 50-lane limit, hostile
//! names, determinism, and one reviewed snapshot.
//!
//! Snapshots live in `snapshots/` beside this file; review a deliberate change with
//! `cargo insta review` (CI runs with `INSTA_UPDATE=no`).

use std::collections::BTreeMap;
use std::time::Duration;

use heartbeat_sim::log::Record;
use heartbeat_sim::scenario::{Latency, Node, Params, Scenario};
use heartbeat_sim::serverlog::{Item, ServerLog, outcome_lines};
use heartbeat_sim::timeline::{self, MAX_LANES, cli, run_faults, svg};
use heartbeat_sim::world::{self, Outcome};

fn fixed_latency(seed: u64) -> Params {
    Params {
        latency: Some(Latency::Fixed(Duration::from_millis(10))),
        ..Params::seed(seed)
    }
}

fn run(name: &str, params: &Params) -> Outcome {
    world::run(&Scenario::build(name, params).unwrap()).unwrap()
}

/// How many elements of each class the SVG draws, and the heartbeats its ticks stand for.
#[derive(Debug, Default, PartialEq, Eq)]
struct Drawn {
    lanes: usize,
    classes: BTreeMap<String, usize>,
    beats: u64,
    missed: u64,
}

impl Drawn {
    fn of(svg: &str) -> Self {
        let doc = roxmltree::Document::parse(svg).expect("the SVG is well-formed XML");
        let mut d = Self::default();
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "svg");
        for lane in root
            .children()
            .filter(|n| n.attribute("class") == Some("lane"))
        {
            d.lanes += 1;
            for n in lane.descendants().filter(|n| n.is_element()) {
                let Some(class) = n.attribute("class") else {
                    continue;
                };
                *d.classes.entry(class.to_owned()).or_default() += 1;
                if class == "beats" {
                    d.beats += n.attribute("data-beats").unwrap().parse::<u64>().unwrap();
                }
                if class == "missed" {
                    d.missed += n.attribute("data-count").unwrap().parse::<u64>().unwrap();
                }
            }
        }
        for n in root.children().filter(|n| n.is_element()) {
            if let Some(class @ ("fault" | "server-down" | "stall" | "heal")) = n.attribute("class")
            {
                *d.classes.entry(format!("all:{class}")).or_default() += 1;
            }
        }
        d
    }

    fn count(&self, class: &str) -> usize {
        self.classes.get(class).copied().unwrap_or(0)
    }
}

/// What the log says the picture must show.
fn expected(log: &ServerLog) -> BTreeMap<&'static str, usize> {
    let mut e: BTreeMap<&'static str, usize> = BTreeMap::new();
    for s in &log.items {
        let key = match s.item {
            Item::Beat { .. } => "beat",
            Item::Burst { .. } => "burst",
            Item::Missed { .. } => "missed",
            Item::Connected { resumed: false, .. } => "connect",
            Item::Connected { resumed: true, .. } => "reconnect",
            Item::Disconnected { .. } => "disconnect",
            Item::Restarted { .. } => "restart",
            Item::ServerRestart { .. } => "server-down",
            Item::Transition { to, .. } => match to.as_str() {
                "suspect" => "suspect",
                "down" => "down",
                "left" => "left",
                _ => continue,
            },
            _ => continue,
        };
        *e.entry(key).or_default() += 1;
    }
    e
}

/// Every scenario's picture (fixed latency, seed 1; swizzle with 20 clients and random
/// latencies) is valid XML with
/// one lane per client, one mark per event of the run's server log, one band per fault, and a
/// server-down band for each restart of the world's server.
#[test]
fn runs_draw_every_lane_mark_and_fault() {
    // Random latencies: twenty clients connect at once and identify themselves out of order.
    let many = Params {
        clients: Some(20),
        ..Params::seed(2)
    };
    let runs = [
        ("firewall", fixed_latency(1)),
        ("client-crash", fixed_latency(1)),
        ("server-restart", fixed_latency(1)),
        ("partition", fixed_latency(1)),
        ("competing-clients", fixed_latency(1)),
        ("swizzle", many),
    ];
    for (name, params) in runs {
        let out = run(name, &params);
        let picture = svg::render(&timeline::of_run(&out));
        let drawn = Drawn::of(&picture);
        let log = ServerLog::from_text(&outcome_lines(&out));
        let want = expected(&log);
        let n = |k: &str| want.get(k).copied().unwrap_or(0);
        assert_eq!(drawn.lanes, out.scenario.clients.len(), "{name}");
        assert_eq!(drawn.beats as usize, n("beat"), "{name}");
        for class in [
            "burst",
            "missed",
            "connect",
            "reconnect",
            "disconnect",
            "restart",
        ] {
            assert_eq!(drawn.count(class), n(class), "{name}: {class}");
        }
        // Every suspicion and conviction is a shaded period (each ends at the next change).
        for class in ["suspect", "down", "left"] {
            assert_eq!(drawn.count(class), n(class), "{name}: {class}");
        }
        let missed: u64 = log
            .items
            .iter()
            .map(|s| match s.item {
                Item::Missed { count, .. } => count,
                _ => 0,
            })
            .sum();
        assert_eq!(drawn.missed, missed, "{name}");
        let faults = run_faults(&out);
        let per_lane = faults.iter().filter(|f| f.client.is_some()).count();
        assert_eq!(drawn.count("fault"), per_lane, "{name}: {faults:?}");
        assert_eq!(drawn.count("all:fault"), faults.len() - per_lane, "{name}");
        // The server restarts the world made, and no other: clients that identify themselves
        // out of order are not a restart.
        let restarts = out
            .log
            .iter()
            .filter(|e| {
                matches!(e.record, Record::Started { node: Node::Server, incarnation } if incarnation > 0)
            })
            .count();
        assert_eq!(n("server-down"), restarts, "{name}");
        assert_eq!(drawn.count("all:server-down"), restarts, "{name}");
        assert_eq!(drawn.count("all:heal"), 1, "{name}");
        assert!(!faults.is_empty() || name == "competing-clients", "{name}");
    }
}

/// The same run twice draws the same bytes.
#[test]
fn deterministic() {
    let a = svg::render(&timeline::of_run(&run("client-crash", &Params::seed(3))));
    let b = svg::render(&timeline::of_run(&run("client-crash", &Params::seed(3))));
    assert!(a == b, "two runs of one seed drew different pictures");
}

/// A log of 60 clients, of which 12 miss heartbeats or are declared down: 50 lanes, the 12
/// among them, and the other 10 counted. (Client names cannot be hostile markup: the log is
/// read through the core's `Event`, which refuses an id the server would not accept.)
#[test]
fn beyond_fifty_clients_the_worst_are_drawn() {
    let mut lines = Vec::new();
    let name = |i: usize| format!("c{i}@rack/3:a_b.c-d");
    let json_name = |i: usize| serde_json::to_string(&name(i)).unwrap();
    for i in 0..60 {
        lines.push(format!(
            r#"{{"event":"connected","conn":{},"client":{},"peer":"192.0.2.1:4000","protocol":"v1","interval_ms":1000.0,"resumed":false}}"#,
            i + 1,
            json_name(i)
        ));
    }
    for seq in 1..=20u64 {
        for i in 0..60 {
            let bad = i % 5 == 0;
            if bad && seq == 10 {
                // Two heartbeats lost, then reported when the next arrives.
                lines.push(format!(
                    r#"{{"event":"missed","conn":1,"client":{},"range":"10-11","first":10,"last":11,"count":2}}"#,
                    json_name(i)
                ));
            }
            if bad && (seq == 10 || seq == 11) {
                continue;
            }
            lines.push(format!(
                r#"{{"event":"heartbeat","conn":1,"client":{},"seq":{seq},"sent":"{t}","received":"{t}","delay_ms":0.0,"inter_arrival_ms":null,"recovered":false}}"#,
                json_name(i),
                t = format_args!("{}.{:03}", 1_700_000_000 + seq, i),
            ));
        }
    }
    let log = ServerLog::from_text(&lines.join("\n"));
    assert_eq!(log.stats.malformed, 0, "{:?}", log.stats.errors);
    let t = cli::of_log(&log, "many.jsonl");
    assert_eq!((t.lanes.len(), t.hidden), (MAX_LANES, 10));
    let picture = svg::render(&t);
    let drawn = Drawn::of(&picture);
    assert_eq!(drawn.lanes, MAX_LANES);
    assert_eq!(drawn.count("missed"), 12);
    assert!(picture.contains("and 10 more clients not shown"));
    let doc = roxmltree::Document::parse(&picture).unwrap();
    let shown: Vec<&str> = doc
        .descendants()
        .filter_map(|n| n.attribute("data-client"))
        .collect();
    for i in (0..60).step_by(5) {
        let expect = name(i);
        assert!(shown.contains(&expect.as_str()), "{expect:?} not drawn");
    }
    // The others keep the log's order.
    assert_eq!(shown[0], "c0@rack/3:a_b.c-d");
    assert!(shown.windows(2).all(|w| {
        let k = |s: &str| s[1..s.find('@').unwrap()].parse::<usize>().unwrap();
        k(w[0]) < k(w[1])
    }));
}

/// The reviewed picture of a small run: the firewall scenario, seed 1, fixed 10 ms latency.
#[test]
fn snapshot_of_the_firewall() {
    let picture = svg::render(&timeline::of_run(&run("firewall", &fixed_latency(1))));
    insta::assert_snapshot!("firewall", picture);
}

/// The classes of the picture's elements in document order, the legend left out.
fn in_order(doc: &roxmltree::Document<'_>) -> Vec<String> {
    doc.descendants()
        .filter(|n| {
            !n.ancestors()
                .any(|a| a.attribute("class") == Some("legend"))
        })
        .filter_map(|n| n.attribute("class").map(str::to_owned))
        .collect()
}

/// A number attribute of `n`.
fn num(n: roxmltree::Node<'_, '_>, attr: &str) -> f64 {
    n.attribute(attr).unwrap().parse().unwrap()
}

/// What a picture says without its tooltips (issue 20): the detector in the header; a delay
/// band on every lane with heartbeats; every shaded period at least `MIN_STATE` wide, its
/// length written where it fits; the silently crashed client's detection time drawn from the
/// crash (the truth), not from its last heartbeat, with its length; and every label drawn
/// after every shading, on a background of its own.
#[test]
fn pictures_say_what_happened() {
    let out = run("client-crash", &fixed_latency(1));
    let t = timeline::of_run(&out);
    let picture = svg::render(&t);
    let doc = roxmltree::Document::parse(&picture).unwrap();
    let text_of = |class: &str| -> Vec<String> {
        doc.descendants()
            .filter(|n| n.attribute("class") == Some(class))
            .map(|n| n.text().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(
        text_of("detector"),
        [format!(
            "detector {}",
            out.scenario.server_config().detector_config()
        )]
    );
    let drawn = Drawn::of(&picture);
    assert_eq!(drawn.count("delay"), drawn.lanes, "a delay band per lane");
    assert_eq!(drawn.count("delay-max"), drawn.lanes);
    for n in doc.descendants().filter(|n| {
        matches!(n.attribute("class"), Some("suspect" | "down" | "left"))
            && n.tag_name().name() == "rect"
            && n.attribute("width").is_some()
            && n.parent().and_then(|p| p.attribute("class")) == Some("lane")
    }) {
        assert!(num(n, "width") >= svg::MIN_STATE, "{n:?}");
    }
    // c2 (silent crash) is detected from its crash; the down period's length is written.
    let crash = run_faults(&out)
        .into_iter()
        .find(|f| f.client.as_deref() == Some("c2") && f.label == "silent crash")
        .expect("c2 crashes silently");
    let c2 = &t.lanes[1];
    assert_eq!(c2.name, "c2");
    assert_eq!(c2.detections.len(), 1, "{:?}", c2.detections);
    let d = c2.detections[0];
    assert_eq!(d.span.from, crash.span.from, "from the truth's crash");
    let down = c2
        .states
        .iter()
        .find(|(_, s)| *s == heartbeat_core::Liveness::Down)
        .unwrap()
        .0;
    assert_eq!(d.span.to, down.from, "to down");
    assert!(d.value.is_some_and(|v| v > 0.0));
    assert!(
        text_of("detection-label").contains(&format!(
            "down after {}",
            svg::length(d.span.to - d.span.from)
        )),
        "{picture}"
    );
    assert!(text_of("dur").contains(&svg::length(down.to - down.from)));
    // Labels last: after every shading, each on a background.
    let order = in_order(&doc);
    let last_shade = order
        .iter()
        .rposition(|c| matches!(c.as_str(), "suspect" | "down" | "left" | "fault"))
        .unwrap();
    let first_label = order
        .iter()
        .position(|c| matches!(c.as_str(), "dur" | "fault-label" | "detection-label"))
        .unwrap();
    assert!(first_label > last_shade, "a label before a shading");
    for (i, c) in order.iter().enumerate() {
        if matches!(c.as_str(), "dur" | "fault-label" | "detection-label") {
            assert_eq!(order[i - 1], "label-bg", "{c} without a background");
        }
    }
}

/// A run's expectations are in the header with their verdicts, and one that judges a period
/// (`down-within`, after each crash) is drawn as a window on its client's lane with its
/// verdict: held, and failed when the bound is shorter than the detector can be.
#[test]
fn expectations_are_windows_with_verdicts() {
    use heartbeat_sim::scenario::Source;
    use heartbeat_sim::scenario::file::Spec;
    let file = |within: &str| {
        format!(
            r#"
            duration = "30s"
            latency = "10ms"
            [[client]]
            id = "web"
            [[client]]
            id = "db"
            [[action]]
            do = "crash"
            silent = true
            on = "db"
            at = "10s"
            [[expect]]
            on = "db"
            down-within = "{within}"
            [[expect]]
            check = "none-missed"
            "#
        )
    };
    for (within, ok) in [("8s", true), ("1s", false)] {
        let text = file(within);
        let spec = Spec::parse("t.toml", "t", &text, Source::File("t.toml".into())).unwrap();
        let out = world::run(&spec.expand(&Params::seed(1)).unwrap()).unwrap();
        let t = timeline::of_run(&out);
        let label = format!("db down within {within} of a crash");
        assert_eq!(
            t.verdicts,
            [(label.clone(), ok), ("none-missed".to_owned(), true)],
            "{within}"
        );
        assert_eq!(t.windows.len(), 1, "{:?}", t.windows);
        let w = &t.windows[0];
        assert_eq!(
            (w.lane, w.label.as_str(), w.ok),
            (Some(1), label.as_str(), ok)
        );
        assert_eq!(w.span.from, Duration::from_secs(10));
        let picture = svg::render(&t);
        let class = if ok { "window ok" } else { "window fail" };
        let doc = roxmltree::Document::parse(&picture).unwrap();
        let windows = in_order(&doc).iter().filter(|c| *c == class).count();
        assert_eq!(windows, 1, "{picture}");
        let mark = if ok { "✓" } else { "✗" };
        assert!(picture.contains(&format!(
            "<tspan class=\"{}\">{mark} {label}</tspan>",
            if ok { "ok" } else { "fail" }
        )));
    }
}
