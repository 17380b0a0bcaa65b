//! A trace from the real binaries: a client runs, is paused with SIGSTOP, resumes, and says
//! goodbye; the tuner must see the pause as a mistake of a tight setting, and of no loose one.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use serde_json::Value;

use heartbeat_core::detector::DetectorKind;
use heartbeat_sim::qos::metrics::Level;
use heartbeat_sim::serverlog::ServerLog;
use heartbeat_sim::tune::render::Input;
use heartbeat_sim::tune::{self, Study};

use super::binary;

/// Long enough for a loaded two-core machine; every wait ends as soon as its line comes.
const WAIT: Duration = Duration::from_secs(20);

/// Real time, for waiting on real processes: nothing here is simulated.
#[allow(clippy::disallowed_methods)]
fn real_now() -> Instant {
    Instant::now()
}

/// A child process, killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.0.id().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{sig}");
    }
}

/// The lines of a stream, read on a thread.
fn lines(r: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a line satisfying `pred`, keeping every line read in `seen`.
fn wait_for(
    rx: &Receiver<String>,
    seen: &mut Vec<String>,
    what: &str,
    pred: impl Fn(&str) -> bool,
) {
    let deadline = real_now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(real_now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let hit = pred(&line);
                seen.push(line);
                if hit {
                    return;
                }
            }
            Err(_) => panic!("no {what} within {WAIT:?}; got:\n{}", seen.join("\n")),
        }
    }
}

fn is_beat(line: &str, seq: u64) -> bool {
    serde_json::from_str::<Value>(line).is_ok_and(|v| v["event"] == "heartbeat" && v["seq"] == seq)
}

#[test]
fn a_paused_client_is_a_mistake_for_a_tight_setting() {
    let mut server = Command::new(binary("heartbeat-server"))
        .args(["--bind", "127.0.0.1", "-p", "0", "--json"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn heartbeat-server");
    let out = lines(server.stdout.take().unwrap());
    let err = lines(server.stderr.take().unwrap());
    let server = Proc(server);
    let mut log = Vec::new();
    wait_for(&err, &mut log, "port", |l| l.contains("on port"));
    let port = log
        .last()
        .and_then(|l| l.rsplit("on port ").next())
        .map(|p| p.trim_end_matches("...").to_owned())
        .expect("a port");
    let client = Proc(
        Command::new(binary("heartbeat-client"))
            .args([
                "-H",
                "127.0.0.1",
                "-p",
                &port,
                "--interval",
                "100",
                "--id",
                "paused",
            ])
            .args(["--reconnect"])
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn heartbeat-client"),
    );
    let mut events = Vec::new();
    wait_for(&out, &mut events, "heartbeat 20", |l| is_beat(l, 20));
    // A 700 ms pause: seven intervals, under the server's idle timeout (five seconds at least).
    client.signal("STOP");
    std::thread::sleep(Duration::from_millis(700));
    client.signal("CONT");
    wait_for(&out, &mut events, "heartbeat 40", |l| is_beat(l, 40));
    client.signal("TERM");
    wait_for(&out, &mut events, "goodbye", |l| {
        l.contains("\"to\":\"left\"")
    });
    server.signal("TERM");
    wait_for(&out, &mut events, "summary", |l| l.contains("\"summary\""));
    drop(client);
    drop(server);

    // What `heartbeat-sim tune EVENTS --json` prints.
    let log = ServerLog::from_text(&(events.join("\n") + "\n"));
    let study = Study {
        settings: tune::grid(&DetectorKind::ALL),
        clients: Vec::new(),
        crash_points: tune::CRASH_POINTS,
        seed: 1,
        jobs: 2,
        level: Level::Down,
    };
    let outcome = tune::run(&log, &study).unwrap();
    let input = Input {
        file: "events.jsonl",
        stats: &log.stats,
        seed: 1,
    };
    let v = tune::render::json(&outcome, &input);

    // The shape: the log read without loss, one client, the whole grid, a recommendation.
    assert_eq!(
        (v["malformed"].as_u64(), v["runs"].as_u64()),
        (Some(0), Some(1)),
        "{v:#}"
    );
    let clients = v["clients"].as_array().unwrap();
    assert_eq!(clients.len(), 1);
    assert_eq!(clients[0]["client"], "paused");
    assert_eq!(clients[0]["interval_ms"], 100.0);
    // Forty slots, less those the client skipped while stopped.
    assert!(clients[0]["heartbeats"].as_u64().unwrap() >= 30, "{v:#}");
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 33);
    let row = |label: &str| {
        rows.iter()
            .find(|r| r["label"] == label)
            .unwrap_or_else(|| panic!("no row {label}"))
    };
    for r in rows {
        for level in ["down", "suspect"] {
            for field in [
                "detected",
                "mistakes",
                "detection_mean_ms",
                "mistakes_per_hour",
            ] {
                assert!(!r[level][field].is_null(), "{level}.{field} in {r:#}");
            }
        }
        assert!(r["flags"].as_str().unwrap().starts_with("--detector "));
    }
    // Too tight for a 700 ms pause: down after 200 ms of silence. Loose: 2.1 s.
    let tight = row("fixed grace=1x");
    assert!(
        tight["down"]["mistakes"].as_u64().unwrap() >= 1,
        "{tight:#}"
    );
    let loose = row("fixed grace=20x");
    assert_eq!(loose["down"]["mistakes"], 0, "{loose:#}");
    assert_eq!(tight["down"]["detection_p99_ms"], 200.0);
    // The goodbye ends the session: the silence after it is no mistake and no detection.
    let fleet = &v["advice"]["fleet"]["recommended"];
    assert_eq!(fleet["mistakes_down"], 0, "{v:#}");
}
