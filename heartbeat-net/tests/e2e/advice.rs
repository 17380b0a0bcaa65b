//! Interval advice, negotiated (`PROTOCOL.md`, "Advice (negotiated)"): a server whose
//! `--client-settings` advise an interval, a client with `--follow-advice` that switches to it
//! and is judged by it, and a client that did not ask and sees nothing new on the wire.

use std::io::Write as _;
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

use crate::metrics::metrics_addr;
use crate::util::{Proc, arg, client_summary, read_again, unix_stamp, write_file};

/// A JSON server with the fixed detector (down 3 intervals after the last heartbeat), a
/// metrics endpoint, and settings advising `web-*` to send every 200 ms.
fn advising_server(dir: &std::path::Path) -> (Proc, u16, String) {
    let settings = write_file(
        dir,
        "clients.toml",
        "[[client]]\nmatch = \"web-*\"\nadvise-interval = \"200ms\"\n",
        0o644,
    );
    let (mut server, port) = Proc::json_server(&[
        "--metrics-addr",
        "127.0.0.1:0",
        "--detector",
        "fixed",
        "--client-settings",
        arg(&settings),
    ]);
    let addr = metrics_addr(&mut server);
    (server, port, addr)
}

/// The `/clients` entry of `client`.
fn clients_entry(addr: &str, client: &str) -> Value {
    let (status, body) = crate::metrics::http(addr, "GET", "/clients");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    client_summary(v["clients"].as_array().unwrap(), client).clone()
}

/// A client at 1 s following advice down to 100 ms switches to the advised 200 ms from its
/// next slot, announced; the server judges it by 200 ms from then on: `/clients` shows it, and
/// killed, it is down within about a second, not the 3 s its declared interval would take.
#[test]
fn a_following_client_switches_to_the_advice_and_is_judged_by_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, port, addr) = advising_server(dir.path());
    let mut client = Proc::client(
        port,
        "web-1",
        &[
            "--id",
            "web-1",
            "--interval",
            "1000",
            "--follow-advice",
            "--interval-min",
            "100",
        ],
    );
    let changed = server.wait_event("web-1 changes its interval", |e| {
        e["event"] == "interval_changed" && e["client"] == "web-1"
    });
    assert_eq!(changed["from_ms"], 1000.0, "{changed}");
    assert_eq!(changed["interval_ms"], 200.0, "{changed}");
    // The switch is at the next slot of the old schedule: heartbeat 2, 1 s after the first.
    assert_eq!(changed["seq"], 2, "{changed}");
    client.wait_stderr("Sending every 200.000ms from heartbeat #2 on");
    server.wait_beat("web-1", 12);
    let entry = clients_entry(&addr, "web-1");
    assert_eq!(entry["interval_ms"], 200.0, "{entry}");
    assert_eq!(entry["missed"], 0, "{entry}");

    client.kill();
    let down = server.wait_event("web-1 down", |e| {
        e["event"] == "transition" && e["client"] == "web-1" && e["to"] == "down"
    });
    let since_last = down["since_last_ms"].as_f64().unwrap();
    // 600 ms by the new interval (3 s by the old), plus the wake-up latency of a loaded
    // machine.
    assert!(
        (550.0..1_500.0).contains(&since_last),
        "down {since_last} ms after the last heartbeat: {down}"
    );
}

/// Reads what the server writes on `s` for a while (it does not close a live connection).
fn read_for(s: &mut TcpStream, d: Duration) -> String {
    s.set_read_timeout(Some(d)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while let Ok(n) = read_again(s, &mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// The same server, byte for byte: a v1 client that did not ask gets `WELCOME 1` and acks,
/// and never an `ADVISE`, though its id is advised; one that asked gets `WELCOME 1 advice` and
/// the advice at once.
#[test]
fn a_client_that_did_not_ask_sees_no_advice_on_the_wire() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, port, _) = advising_server(dir.path());
    let mut plain = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let beat = format!("BEAT 1 {}\n", unix_stamp(6));
    plain
        .write_all(format!("HELLO 1 web-2 1000 5f\n{beat}").as_bytes())
        .unwrap();
    let got = read_for(&mut plain, Duration::from_millis(1500));
    assert!(got.starts_with("WELCOME 1\nACK 1 "), "{got:?}");
    assert!(
        !got.contains("ADVISE") && !got.contains("advice"),
        "{got:?}"
    );
    assert_eq!(got.lines().count(), 2, "{got:?}");

    let mut asking = TcpStream::connect(("127.0.0.1", port)).unwrap();
    asking
        .write_all(format!("HELLO 1 web-3 1000 5f advice\n{beat}").as_bytes())
        .unwrap();
    let got = read_for(&mut asking, Duration::from_millis(500));
    assert!(
        got.starts_with("WELCOME 1 advice\nADVISE 200\nACK 1 "),
        "{got:?}"
    );
}

/// Under `--target-detection 1s`, a client at 1 s cannot reach the target: following advice,
/// it switches to the interval the server computed, and `/clients` then shows it.
#[test]
fn a_following_client_takes_the_interval_its_target_needs() {
    let (mut server, port) = Proc::json_server(&[
        "--metrics-addr",
        "127.0.0.1:0",
        "--target-detection",
        "1s",
        "--target-mistake-every",
        "30d",
    ]);
    let addr = metrics_addr(&mut server);
    let _client = Proc::client(
        port,
        "slow",
        &[
            "--id",
            "slow",
            "--interval",
            "1000",
            "--follow-advice",
            "--interval-min",
            "50",
        ],
    );
    let target = server.wait_event("slow's target", |e| {
        e["event"] == "target" && e["client"] == "slow"
    });
    assert_eq!(target["reachable"], false, "{target}");
    let advised = target["advised_interval_ms"].as_f64().unwrap();
    let changed = server.wait_event("slow changes its interval", |e| {
        e["event"] == "interval_changed" && e["client"] == "slow"
    });
    assert_eq!(changed["interval_ms"], advised, "{changed}");
    let seq = changed["seq"].as_u64().unwrap();
    server.wait_beat("slow", seq + 5);
    let entry = clients_entry(&addr, "slow");
    assert_eq!(entry["interval_ms"], advised, "{entry}");
}
