//! Failure detector quality of service (`heartbeat-sim qos`): the event-driven engine against
//! turmoil, the replay against the machines, what each detector promises, and a reviewed
//! snapshot of the table.
//!
//! Snapshots live in `snapshots/` beside this file; review a deliberate change with
//! `cargo insta review` (CI runs with `INSTA_UPDATE=no`).

mod agreement;
mod promises;
mod replay;

use std::ops::Range;
use std::time::Duration;

use heartbeat_core::detector::{DetectorConfig, DetectorKind};
use heartbeat_sim::Latency;
use heartbeat_sim::qos::{self, EngineKind, Outcome, QOS_SCENARIOS, QosParams, Study, table};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn defaults() -> Vec<DetectorConfig> {
    DetectorKind::ALL
        .into_iter()
        .map(DetectorConfig::new)
        .collect()
}

/// Runs a study on one thread.
fn study(
    scenario: &str,
    seeds: Range<u64>,
    params: QosParams,
    settings: Vec<DetectorConfig>,
    engine: EngineKind,
) -> Outcome {
    let study = Study {
        scenario: scenario.to_owned(),
        seeds,
        params,
        settings,
        engine,
        jobs: 1,
    };
    qos::run(&study, |_, _| {}).unwrap()
}

fn params(duration_s: u64, latency: Latency) -> QosParams {
    QosParams {
        duration: Duration::from_secs(duration_s),
        latency,
        ..QosParams::seed(0)
    }
}

/// The tables of every QoS scenario, three seeds of two minutes each, the four detectors with
/// their defaults, with latencies of 1 to 300 ms: enough jitter for the tight detectors to make
/// mistakes (the calm default is tested in `promises`).
fn tables(engine: EngineKind) -> String {
    let mut out = String::new();
    for (name, _) in QOS_SCENARIOS {
        let o = study(
            name,
            1..4,
            params(120, Latency::parse("1-300").unwrap()),
            defaults(),
            engine,
        );
        out.push_str(&table::text(&o));
        out.push('\n');
    }
    out
}

#[test]
fn table_snapshot() {
    let text = tables(EngineKind::Replay);
    insta::assert_snapshot!("tables", text);
    // The same arguments print the same bytes, and the full machines print the same figures.
    assert_eq!(text, tables(EngineKind::Replay));
    let machine = tables(EngineKind::Machine);
    assert_eq!(
        text.replace("engine replay", "engine machine"),
        machine,
        "the machine engine disagrees with the replay"
    );
}

/// More threads than seeds: each seed's replays run on helper threads, fed batch by batch. The
/// figures must not move.
#[test]
fn threads_do_not_change_the_figures() {
    let run = |jobs| {
        let study = Study {
            scenario: "partition".to_owned(),
            seeds: 5..6,
            params: params(200, Latency::parse("1-300").unwrap()),
            settings: qos::grid(&defaults()),
            engine: EngineKind::Replay,
            jobs,
        };
        table::text(&qos::run(&study, |_, _| {}).unwrap())
    };
    let one = run(1);
    assert!(one.contains("mistakes/h"));
    assert_eq!(one, run(3));
}

#[test]
fn json_and_csv_carry_every_row() {
    let o = study(
        "crash",
        1..2,
        params(60, Latency::default()),
        defaults(),
        EngineKind::Replay,
    );
    let v = table::json(&o);
    let rows = v["rows"].as_array().unwrap();
    let labels: Vec<&str> = rows.iter().map(|r| r["label"].as_str().unwrap()).collect();
    assert_eq!(labels, ["chen", "fixed", "phi", "phi-exp"]);
    assert_eq!(v["scenario"], "crash");
    assert!(rows.iter().all(|r| r["down"]["undetected"] == 0));
    let csv = table::csv_header() + &table::csv_rows(&o);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 5);
    let width = lines[0].split(',').count();
    assert!(lines.iter().all(|l| l.split(',').count() == width), "{csv}");
    assert!(lines[3].starts_with("crash,1..2,60,100,1-50,replay,phi,phi threshold=8 "));
}
