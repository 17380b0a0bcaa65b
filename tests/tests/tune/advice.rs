//! Tune's advice on a synthetic mixed fleet, the issue's shape in small: two clients every
//! 100 ms, one every 250 ms, three every second (one steady, one killed half-way, one stopped
//! twice for 2.5 s). The table and the pasteable advice are snapshots: review a change with
//! `cargo insta review`.

use heartbeat_core::detector::DetectorKind;
use heartbeat_sim::qos::metrics::Level;
use heartbeat_sim::serverlog::ServerLog;
use heartbeat_sim::tune::render::{self, Input};
use heartbeat_sim::tune::{self, Study};

/// Unix milliseconds of the log's first line.
const EPOCH_MS: u64 = 1_700_000_000_000;

fn stamp(at_ms: u64) -> String {
    let t = EPOCH_MS + at_ms;
    format!("{}.{:03}000", t / 1000, t % 1000)
}

/// One client of the fleet: its name, interval, last send, and its stops `(from, length)`.
struct Member {
    name: &'static str,
    every: u64,
    until: u64,
    stops: &'static [(u64, u64)],
}

const FLEET: [Member; 6] = [
    Member {
        name: "web-1",
        every: 100,
        until: 90_000,
        stops: &[],
    },
    Member {
        name: "web-2",
        every: 100,
        until: 90_000,
        stops: &[],
    },
    Member {
        name: "api-1",
        every: 250,
        until: 90_000,
        stops: &[],
    },
    Member {
        name: "batch-1",
        every: 1_000,
        until: 90_000,
        stops: &[],
    },
    Member {
        name: "batch-killed",
        every: 1_000,
        until: 45_000,
        stops: &[],
    },
    Member {
        name: "batch-paused",
        every: 1_000,
        until: 90_000,
        stops: &[(20_000, 2_500), (60_000, 2_500)],
    },
];

/// The server's `--json` log of `FLEET`: a `HELLO` each, then heartbeats with a few ms of
/// deterministic jitter, in time order.
fn fleet_log() -> String {
    let mut lines: Vec<(u64, String)> = Vec::new();
    for (conn, m) in FLEET.iter().enumerate() {
        let conn = conn + 1;
        lines.push((
            0,
            format!(
                r#"{{"event":"connected","conn":{conn},"client":"{}","peer":"127.0.0.1:4000","protocol":"v1","interval_ms":{}.0,"resumed":false,"time":"{}"}}"#,
                m.name,
                m.every,
                stamp(0)
            ),
        ));
        let mut seq = 0u64;
        let mut slot = m.every;
        while slot <= m.until {
            seq += 1;
            let stopped = m
                .stops
                .iter()
                .find(|(from, len)| slot > *from && slot < from + len);
            if let Some((from, len)) = stopped {
                // Stopped: the slots in the stop are sent late, all at once, when it ends.
                slot = from + len;
            }
            let at = slot + (seq * 7 + conn as u64 * 3) % 11;
            lines.push((
                at,
                format!(
                    r#"{{"event":"heartbeat","conn":{conn},"client":"{}","seq":{seq},"sent":"{1}","received":"{1}","delay_ms":0.0,"inter_arrival_ms":null,"recovered":false}}"#,
                    m.name,
                    stamp(at)
                ),
            ));
            slot += m.every;
        }
    }
    lines.sort_by_key(|(t, _)| *t);
    lines.into_iter().map(|(_, l)| l + "\n").collect()
}

fn tuned(level: Level) -> (ServerLog, tune::Outcome) {
    let log = ServerLog::from_text(&fleet_log());
    assert_eq!(log.stats.malformed, 0, "{:?}", log.stats.errors);
    let study = Study {
        settings: tune::grid(&DetectorKind::ALL),
        clients: Vec::new(),
        crash_points: 0,
        seed: 1,
        jobs: 2,
        level,
    };
    let outcome = tune::run(&log, &study).unwrap();
    (log, outcome)
}

/// The whole text output: the pooled table, the per-class advice, the fleet's flags and the
/// per-class settings file.
#[test]
fn mixed_fleet_advice() {
    let (log, o) = tuned(Level::Down);
    let input = Input {
        file: "fleet.jsonl",
        stats: &log.stats,
        seed: 1,
    };
    // No pick is slower than the defaults for any class without a line saying so.
    let text = render::text(&o, &input);
    for (k, class) in o.advice.classes.iter().enumerate() {
        for pick in [class.pick, o.advice.fleet.pick].into_iter().flatten() {
            let (p99, defaults) = (class.cells[pick].p99, class.cells[o.advice.defaults].p99);
            if p99 > defaults {
                assert!(
                    o.advice
                        .slower
                        .iter()
                        .any(|s| s.class == k && s.setting == pick),
                    "{text}"
                );
            }
        }
    }
    insta::assert_snapshot!("mixed_fleet", text);
}

/// The same advice as JSON, at the suspect level.
#[test]
fn mixed_fleet_advice_json_at_the_suspect_level() {
    let (log, o) = tuned(Level::Suspect);
    let input = Input {
        file: "fleet.jsonl",
        stats: &log.stats,
        seed: 1,
    };
    let v = render::json(&o, &input);
    assert_eq!(v["advice"]["level"], "suspect");
    insta::assert_snapshot!(
        "mixed_fleet_suspect_json",
        serde_json::to_string_pretty(&v["advice"]).unwrap()
    );
}
