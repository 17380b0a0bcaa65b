//! `heartbeat-load` against the real server and against its sink: whatever the generator says
//! it sent, the server counted (nothing missed, every v1 heartbeat acked) and so did the sink.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::util::{Proc, client_summary, free_port};

const LOAD: &str = env!("CARGO_BIN_EXE_heartbeat-load");

const CLIENTS: u64 = 40;
const INTERVAL_MS: u64 = 50;
const SECONDS: u64 = 2;

/// Runs `heartbeat-load --json` against `port` with ARGS, expects exit 0 and returns its
/// report after checking what must hold against any peer.
fn run_load(port: u16, args: &[&str]) -> Value {
    let (port, clients, interval) = (
        port.to_string(),
        CLIENTS.to_string(),
        INTERVAL_MS.to_string(),
    );
    let seconds = SECONDS.to_string();
    let mut all = vec![
        "-H",
        "127.0.0.1",
        "-p",
        &port,
        "--json",
        "--clients",
        &clients,
        "--interval",
        &interval,
        "--duration",
        &seconds,
        "--ramp",
        "0.2",
    ];
    all.extend_from_slice(args);
    let mut load = Proc::spawn(LOAD, "load", &all);
    load.expect_exit(0);
    let r = load.wait_event("report", |v| v["sent"].is_u64());
    for key in ["connect_failures", "disconnects", "errors"] {
        assert_eq!(r[key].as_u64(), Some(0), "{key}: {r:#}");
    }
    assert_eq!(r["connected"].as_u64(), Some(CLIENTS), "{r:#}");
    // Whole intervals in the window: every client has exactly duration / interval slots. A slot
    // the generator could not send on time (its own thread stalled on a loaded machine) is
    // skipped, not sent late, exactly as heartbeat-client does; the server then counts it missed.
    let offered = CLIENTS * SECONDS * 1000 / INTERVAL_MS;
    assert_eq!(r["offered"].as_u64(), Some(offered), "{r:#}");
    let (sent, skipped) = (r["sent"].as_u64().unwrap(), r["skipped"].as_u64().unwrap());
    assert_eq!(sent + skipped, offered, "{r:#}");
    assert!(skipped * 20 <= offered, "more than 5% skipped: {r:#}");
    assert_eq!(r["interrupted"], false);
    r
}

/// Waits until the server reported `n` distinct clients disconnected (everything they sent is
/// then processed).
fn wait_disconnects(server: &mut Proc, n: u64) {
    let mut gone = BTreeSet::new();
    while (gone.len() as u64) < n {
        let v = server.wait_event("another client disconnected", |v| {
            v["event"] == "disconnected" && v["client"].as_str().is_some_and(|c| !gone.contains(c))
        });
        gone.insert(v["client"].as_str().unwrap_or_default().to_owned());
    }
}

/// Stops the server and checks its summary against the generator's report.
fn check_summary(server: &mut Proc, report: &Value, protocol: &str) {
    let clients = server.summary();
    assert_eq!(clients.len() as u64, CLIENTS, "{clients:#?}");
    let (mut received, mut missed) = (0, 0);
    for c in &clients {
        assert_eq!(c["protocol"], protocol, "{c:#}");
        assert_eq!(c["duplicates"].as_u64(), Some(0), "{c:#}");
        received += c["received"].as_u64().unwrap_or_default();
        missed += c["missed"].as_u64().unwrap_or_default();
    }
    // Everything sent was counted; the only gaps are slots the generator skipped.
    assert_eq!(Some(received), report["sent"].as_u64(), "{report:#}");
    assert!(missed <= report["skipped"].as_u64().unwrap(), "{report:#}");
}

#[test]
fn v1_load_is_counted_and_acked_by_the_server() {
    let (mut server, port) = Proc::json_server(&[]);
    let pid = server.pid().to_string();
    let r = run_load(port, &["--watch-pid", &pid]);
    // Every heartbeat was acked: the generator waits for the last acks before it closes.
    assert_eq!(r["acks"], r["sent"], "{r:#}");
    assert_eq!(r["rtt_us"]["count"], r["sent"], "{r:#}");
    let watched = &r["watched"][0];
    assert_eq!(
        watched["pid"].as_u64(),
        Some(u64::from(server.pid())),
        "{r:#}"
    );
    assert!(watched["cpu_us_per_heartbeat"].is_f64(), "{r:#}");
    assert!(watched["peak_rss_kib"].as_u64() > Some(0), "{r:#}");
    wait_disconnects(&mut server, CLIENTS);
    check_summary(&mut server, &r, "v1");
    let last = format!("load-{}", CLIENTS - 1);
    let clients = server.events();
    let summary = clients
        .iter()
        .find(|v| v["event"] == "summary")
        .expect("a summary");
    let c = client_summary(summary["clients"].as_array().unwrap(), &last);
    // The generator said BYE after its last ack.
    assert_eq!(c["state"], "left", "{c:#}");
}

#[test]
fn legacy_load_is_counted_by_the_server() {
    let (mut server, port) = Proc::json_server(&[]);
    let r = run_load(port, &["--legacy"]);
    assert_eq!(r["acks"].as_u64(), Some(0), "{r:#}");
    assert!(r["rtt_us"].is_null(), "{r:#}");
    // Legacy has no acks: the server has processed everything once it saw every close.
    wait_disconnects(&mut server, CLIENTS);
    check_summary(&mut server, &r, "legacy");
}

#[test]
fn the_sink_counts_what_is_sent_in_both_formats() {
    let mut sink = Proc::spawn(
        LOAD,
        "sink",
        &["sink", "-p", "0", "--bind", "127.0.0.1", "--json"],
    );
    let port = sink.port();
    let pid = sink.pid().to_string();
    let v1 = run_load(port, &["--watch-pid", &pid]);
    // A sink never says WELCOME: no acks, and no waiting for them.
    assert_eq!(v1["acks"].as_u64(), Some(0), "{v1:#}");
    let sent = v1["sent"].as_u64().unwrap();
    sink.wait_event("idle after v1, all counted", |v| {
        v["event"] == "idle" && v["heartbeats"].as_u64() == Some(sent)
    });
    let legacy = run_load(port, &["--legacy"]);
    let total = sent + legacy["sent"].as_u64().unwrap();
    sink.wait_event("idle after legacy, all counted", |v| {
        v["event"] == "idle" && v["heartbeats"].as_u64() == Some(total)
    });
    sink.signal("TERM");
    sink.expect_exit(0);
    let summary = sink.wait_event("summary", |v| v["event"] == "summary");
    assert_eq!(summary["heartbeats"].as_u64(), Some(total), "{summary:#}");
    assert_eq!(
        summary["connections"].as_u64(),
        Some(2 * CLIENTS),
        "{summary:#}"
    );
    assert_eq!(summary["open"].as_u64(), Some(0), "{summary:#}");
}

#[test]
fn the_acking_sink_acks_every_v1_heartbeat_and_answers_legacy_with_nothing() {
    let mut sink = Proc::spawn(
        LOAD,
        "sink",
        &["sink", "--ack", "-p", "0", "--bind", "127.0.0.1", "--json"],
    );
    let port = sink.port();
    let v1 = run_load(port, &[]);
    // WELCOME, so the generator waits for every ack before it closes; each is a valid frame.
    assert_eq!(v1["acks"], v1["sent"], "{v1:#}");
    assert_eq!(v1["rtt_us"]["count"], v1["sent"], "{v1:#}");
    let sent = v1["sent"].as_u64().unwrap();
    sink.wait_event("idle after v1, all counted", |v| {
        v["event"] == "idle" && v["heartbeats"].as_u64() == Some(sent)
    });
    let legacy = run_load(port, &["--legacy"]);
    assert_eq!(legacy["acks"].as_u64(), Some(0), "{legacy:#}");
    let total = sent + legacy["sent"].as_u64().unwrap();
    sink.wait_event("idle after legacy, all counted", |v| {
        v["event"] == "idle" && v["heartbeats"].as_u64() == Some(total)
    });
}

#[test]
fn no_connection_at_all_exits_1_saying_why() {
    let port = free_port().to_string();
    let mut load = Proc::spawn(
        LOAD,
        "load",
        &["-H", "127.0.0.1", "-p", &port, "-c", "3", "--duration", "1"],
    );
    load.expect_exit(1);
    load.wait_stderr("no connection to 127.0.0.1");
    load.wait_stderr("Connection refused");
}
