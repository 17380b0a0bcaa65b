//! `--target-detection` and `--target-mistake-every`: detection configured by its quality of
//! service (Chen, Toueg and Aguilera). The real server and clients on loopback: a fast client
//! reaches the target, a slow one is told the interval that would, once; the fast one, killed,
//! is down within the target detection time of its last heartbeat.

use serde_json::Value;

use crate::metrics::{metrics_addr, scrape, value};
use crate::util::{Proc, client_summary};

/// The `/clients` entry of `client`.
fn clients_entry(addr: &str, client: &str) -> Value {
    let (status, body) = crate::metrics::http(addr, "GET", "/clients");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    client_summary(v["clients"].as_array().unwrap(), client).clone()
}

#[test]
fn each_client_is_told_whether_the_target_is_reachable_and_the_fast_one_is_down_in_time() {
    let (mut server, port) = Proc::json_server(&[
        "--metrics-addr",
        "127.0.0.1:0",
        "--target-detection",
        "1s",
        "--target-mistake-every",
        "30d",
    ]);
    let addr = metrics_addr(&mut server);
    let mut fast = Proc::client(port, "fast", &["--id", "fast", "--interval", "100"]);
    let _slow = Proc::client(port, "slow", &["--id", "slow", "--interval", "1000"]);
    server.wait_beat("fast", 25);
    server.wait_beat("slow", 3);

    // The fast client: reachable, with the rest of the detection time as margin (1 s − 100 ms).
    let f = clients_entry(&addr, "fast");
    assert_eq!(f["target_reachable"], true, "{f}");
    assert_eq!(f["alpha_ms"], 900.0, "{f}");
    assert!(f["advised_interval_ms"].is_null(), "{f}");
    assert!(f["loss"].as_f64().unwrap() > 0.0, "{f}");
    assert!(f["delay_variance"].as_f64().unwrap() > 0.0, "{f}");
    // The slow one: at 1 s there is no margin left for a 1 s detection; told a shorter one.
    let s = clients_entry(&addr, "slow");
    assert_eq!(s["target_reachable"], false, "{s}");
    let advised = s["advised_interval_ms"].as_f64().unwrap();
    assert!(advised > 0.0 && advised < 1000.0, "{s}");

    let m = scrape(&addr);
    let fast_ = [("client", "fast")];
    let slow_ = [("client", "slow")];
    let reachable = "heartbeat_client_target_reachable";
    assert_eq!(value(&m, reachable, &fast_), Some(1.0));
    assert_eq!(value(&m, reachable, &slow_), Some(0.0));
    let advised_metric = "heartbeat_client_advised_interval_seconds";
    assert_eq!(value(&m, advised_metric, &fast_), None);
    let advised_s = value(&m, advised_metric, &slow_).unwrap();
    assert!(
        (advised_s - advised / 1e3).abs() < 1e-9,
        "{advised_s} {advised}"
    );
    let margin = "heartbeat_client_safety_margin_seconds";
    assert_eq!(value(&m, margin, &fast_), Some(0.9));

    // The log line for the slow client, once (its reachability does not change).
    let line = server.wait_stderr("slow: detection within 1s with a mistake at most every 30d");
    assert!(
        line.contains(&format!("needs heartbeats every {advised}ms or faster"))
            && line.contains("it sends every 1000ms"),
        "{line}"
    );

    // Kill the fast client: down within the target detection time of its last heartbeat.
    server.wait_beat("fast", 40);
    fast.kill();
    let down = server.wait_event("fast down", |e| {
        e["event"] == "transition" && e["client"] == "fast" && e["to"] == "down"
    });
    let since_last = down["since_last_ms"].as_f64().unwrap();
    // Down is due 1 s after the last heartbeat's place on the schedule; the slack is the
    // server's own wake-up latency on a loaded machine (2 cores, several builds).
    assert!(
        since_last <= 1000.0 + 100.0,
        "down {since_last} ms after its last heartbeat: {down}"
    );
    // Past the slow client's second configuration (at its 11th heartbeat): still one line.
    server.wait_beat("slow", 12);
    let lines = server
        .stderr()
        .iter()
        .filter(|l| l.contains("slow: detection within"))
        .count();
    assert_eq!(lines, 1, "the slow client's line, once");
}
