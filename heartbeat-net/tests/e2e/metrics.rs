//! `--metrics-addr`: the real server scraped over real HTTP, the exposition parsed with a
//! Prometheus text-format parser (never string matching), and `/clients` read as JSON.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use prometheus_parse::{Sample, Scrape, Value as Metric};
use serde_json::Value;

use crate::util::{Proc, WAIT, client_summary, connect_from};

/// Real time, for waiting on real processes.
#[allow(clippy::disallowed_methods)]
fn real_now() -> Instant {
    Instant::now()
}

/// One HTTP/1.1 request on a fresh connection (closed after the answer); the status code
/// and the body.
pub(crate) fn http(addr: &str, method: &str, path: &str) -> (u16, String) {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let (status, _, body) = http_on(s, addr, method, path);
    (status, body)
}

/// One HTTP/1.1 request on `s`, connected to `addr`; the status code, the head and the body.
fn http_on(mut s: TcpStream, addr: &str, method: &str, path: &str) -> (u16, String, String) {
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    if let Err(e) = s.read_to_string(&mut answer) {
        panic!("{method} {path}: no answer ({e}); read so far: {answer:?}");
    }
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {answer:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, head.to_owned(), body.to_owned())
}

/// `GET /metrics`, parsed.
pub(crate) fn scrape(addr: &str) -> Scrape {
    let (status, body) = http(addr, "GET", "/metrics");
    assert_eq!(status, 200, "{body}");
    Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("a valid exposition")
}

/// The `ADDR` of `Serving metrics on http://ADDR/metrics ...` in the server's log.
pub(crate) fn metrics_addr(server: &mut Proc) -> String {
    let line = server.wait_stderr("Serving metrics on http://");
    let rest = line.split("http://").nth(1).unwrap();
    rest.split('/').next().unwrap().to_owned()
}

/// A sample's value, whatever its type (histograms excluded).
fn number(s: &Sample) -> f64 {
    match s.value {
        Metric::Counter(v) | Metric::Gauge(v) | Metric::Untyped(v) => v,
        ref other => panic!("{} is not a number: {other:?}", s.metric),
    }
}

/// The samples of `metric` whose labels include `labels`.
fn samples<'a>(
    scrape: &'a Scrape,
    metric: &str,
    labels: &[(&str, &str)],
) -> impl Iterator<Item = &'a Sample> {
    let labels: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let metric = metric.to_owned();
    scrape.samples.iter().filter(move |s| {
        s.metric == metric
            && labels
                .iter()
                .all(|(k, v)| s.labels.get(k) == Some(v.as_str()))
    })
}

/// The one value of `metric` with `labels`, `None` without such a series.
pub(crate) fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = samples(scrape, metric, labels);
    let first = found.next().map(number);
    assert!(found.next().is_none(), "several {metric} {labels:?}");
    first
}

/// The state whose `heartbeat_client_state` series is 1 for `client`, checking that exactly
/// one of the five is.
pub(crate) fn state_of(scrape: &Scrape, client: &str) -> Option<String> {
    let states: BTreeMap<String, f64> = samples(scrape, "heartbeat_client_state", &[])
        .filter(|s| s.labels.get("client") == Some(client))
        .map(|s| (s.labels.get("state").unwrap().to_owned(), number(s)))
        .collect();
    if states.is_empty() {
        return None;
    }
    let names: Vec<&str> = states.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["down", "left", "suspect", "unknown", "up"],
        "{client}: {states:?}"
    );
    let on: Vec<&String> = states
        .iter()
        .filter(|(_, v)| **v == 1.0)
        .map(|(k, _)| k)
        .collect();
    assert_eq!(on.len(), 1, "{client}: {states:?}");
    assert_eq!(states.values().sum::<f64>(), 1.0, "{client}: {states:?}");
    Some(on[0].clone())
}

/// Every client with a series.
fn clients_in(scrape: &Scrape) -> Vec<String> {
    let mut names: Vec<String> = scrape
        .samples
        .iter()
        .filter_map(|s| s.labels.get("client").map(str::to_owned))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Counts, states and the suspect -> down of a killed client, as Prometheus would see them;
/// `/clients` is the report; a client gone longer than `--forget-after` loses its series.
#[test]
fn a_scrape_shows_the_clients_as_the_server_sees_them() {
    let (mut server, port) = Proc::json_server(&[
        "--metrics-addr",
        "127.0.0.1:0",
        // Suspect 1.1 s and down 2.2 s after a 200 ms client's last heartbeat: long enough to
        // be seen suspect in scrapes 50 ms apart on a loaded machine.
        "--detector",
        "fixed",
        "--grace",
        "10x",
        // Long enough to see the killed client down (2.2 s after its last heartbeat) for a
        // few seconds before it is forgotten.
        "--forget-after",
        "5s",
    ]);
    let addr = metrics_addr(&mut server);

    let mut counted = Proc::client(port, "counted", &["--id", "counted", "--interval", "50"]);
    let mut killed = Proc::client(port, "killed", &["--id", "killed", "--interval", "200"]);
    server.wait_beat("killed", 2);
    server.wait_beat("counted", 5);
    counted.signal("TERM");
    counted.expect_exit(0);
    server.wait_transition("left");
    let sent = server.highest_seq("counted").unwrap();

    let live = scrape(&addr);
    assert_eq!(state_of(&live, "counted").as_deref(), Some("left"));
    assert_eq!(state_of(&live, "killed").as_deref(), Some("up"));
    let counted_ = [("client", "counted")];
    let received = value(
        &live,
        "heartbeat_client_heartbeats_received_total",
        &counted_,
    );
    assert_eq!(
        received,
        Some(sent as f64),
        "every heartbeat sent is counted"
    );
    for metric in [
        "heartbeat_client_heartbeats_missed_total",
        "heartbeat_client_duplicates_total",
        "heartbeat_client_restarts_total",
    ] {
        assert_eq!(value(&live, metric, &counted_), Some(0.0), "{metric}");
    }
    assert_eq!(
        value(&live, "heartbeat_client_connections_total", &counted_),
        Some(1.0)
    );
    assert_eq!(
        value(&live, "heartbeat_client_expected", &counted_),
        Some(0.0)
    );
    let last = value(
        &live,
        "heartbeat_client_last_heartbeat_timestamp_seconds",
        &counted_,
    );
    let last_event = server
        .events()
        .iter()
        .rev()
        .find(|e| e["event"] == "heartbeat" && e["client"] == "counted")
        .map(|e| e["received"].as_str().unwrap().parse::<f64>().unwrap());
    assert!(
        (last.unwrap() - last_event.unwrap()).abs() < 1e-5,
        "{last:?} {last_event:?}"
    );
    assert_eq!(
        value(&live, "heartbeat_clients", &[("state", "up")]),
        Some(1.0)
    );
    assert_eq!(
        value(&live, "heartbeat_clients", &[("state", "left")]),
        Some(1.0)
    );
    assert_eq!(value(&live, "heartbeat_connections_open", &[]), Some(1.0));
    assert_eq!(
        value(
            &live,
            "heartbeat_disconnects_total",
            &[("reason", "goodbye")]
        ),
        Some(1.0)
    );
    let delays = samples(&live, "heartbeat_delay_seconds", &[])
        .next()
        .unwrap();
    let Metric::Histogram(buckets) = &delays.value else {
        panic!("{:?}", delays.value);
    };
    let all = buckets
        .iter()
        .find(|b| b.less_than == f64::INFINITY)
        .unwrap();
    let received_all: f64 = samples(&live, "heartbeat_client_heartbeats_received_total", &[])
        .map(number)
        .sum();
    assert!(
        all.count >= received_all,
        "every heartbeat counted has a delay"
    );
    let version = [("version", env!("CARGO_PKG_VERSION"))];
    assert_eq!(value(&live, "heartbeat_build_info", &version), Some(1.0));

    // /clients: the report, with the fields of the --json summary.
    let (status, body) = http(&addr, "GET", "/clients");
    assert_eq!(status, 200, "{body}");
    let report: Value = serde_json::from_str(&body).unwrap();
    let clients = report["clients"].as_array().unwrap().clone();
    let counted_now = client_summary(&clients, "counted").clone();
    assert_eq!(counted_now["received"], sent);
    assert_eq!(counted_now["state"], "left");
    assert_eq!(counted_now["expected"], false, "written when false too");

    // Killed: suspect, then down, in the series.
    killed.kill();
    let deadline = real_now() + WAIT;
    let mut seen: Vec<String> = Vec::new();
    while seen.last().map(String::as_str) != Some("down") {
        assert!(real_now() < deadline, "never down; states seen: {seen:?}");
        let state = state_of(&scrape(&addr), "killed").expect("killed still listed");
        if seen.last() != Some(&state) {
            seen.push(state);
        }
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(seen, ["up", "suspect", "down"]);

    // Both gone for --forget-after: forgotten, their series gone, the server-wide ones stay.
    server.wait_event("killed forgotten", |e| {
        e["event"] == "forgotten" && e["client"] == "killed"
    });
    server.wait_event("counted forgotten", |e| {
        e["event"] == "forgotten" && e["client"] == "counted"
    });
    let after = scrape(&addr);
    assert_eq!(clients_in(&after), Vec::<String>::new());
    assert_eq!(
        value(&after, "heartbeat_clients_forgotten_total", &[]),
        Some(2.0)
    );
    assert_eq!(
        value(&after, "heartbeat_clients", &[("state", "down")]),
        Some(0.0)
    );
    let (_, body) = http(&addr, "GET", "/clients");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["clients"],
        serde_json::json!([])
    );

    // The summary at shutdown is the same report: /clients said what it will say.
    let summary = server.summary();
    assert_eq!(summary, Vec::<Value>::new());
    let mut fields: Vec<&String> = counted_now.as_object().unwrap().keys().collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            "bursts",
            "client",
            "connected",
            "connections",
            "delay_ms",
            "duplicates",
            "expected",
            "first_seen",
            "highest_seq",
            "inter_arrival_ms",
            "interval_ms",
            "last_seen",
            "missed",
            "missed_ranges",
            "negative_delays",
            "protocol",
            "received",
            "restarts",
            "state"
        ]
    );
}

/// What the server refused shows in the server-wide counters, by kind; only GET and HEAD of
/// the two paths are served.
#[test]
fn refusals_are_counted_by_kind_and_other_paths_are_not_found() {
    let (mut server, port) =
        Proc::json_server(&["--metrics-addr", "127.0.0.1:0", "--max-connections", "1"]);
    let addr = metrics_addr(&mut server);
    // The one slot, then one connection too many (closed at accept, before any byte).
    let mut held = TcpStream::connect(("127.0.0.1", port)).unwrap();
    held.write_all(b"HELLO 1 held 1000\n").unwrap();
    server.wait_event("held connected", |e| e["event"] == "connected");
    let mut refused = TcpStream::connect(("127.0.0.1", port)).unwrap();
    refused.set_read_timeout(Some(WAIT)).unwrap();
    let _ = refused.read(&mut [0u8; 16]);
    // The held connection breaks the pace: 20 heartbeats at once on a 1 s interval (the same
    // one, so that no sequence number runs ahead of the schedule first).
    for _ in 1..=20 {
        let _ = writeln!(held, "BEAT 1 {}", crate::util::unix_stamp(6));
    }
    server.wait_event("held dropped", |e| e["event"] == "disconnected");
    // And one that is no protocol at all, once the slot is free.
    let mut garbage = TcpStream::connect(("127.0.0.1", port)).unwrap();
    garbage.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    server.wait_unidentified("protocol", 1);

    let s = scrape(&addr);
    let rejected = |reason| {
        value(
            &s,
            "heartbeat_connections_rejected_total",
            &[("reason", reason)],
        )
    };
    assert_eq!(rejected("max_connections"), Some(1.0));
    assert_eq!(rejected("max_connections_per_ip"), Some(0.0));
    let frames = |reason| value(&s, "heartbeat_frames_rejected_total", &[("reason", reason)]);
    assert_eq!(frames("too_fast"), Some(1.0));
    assert_eq!(frames("unknown_protocol"), Some(1.0));
    assert_eq!(
        value(&s, "heartbeat_connections_accepted_total", &[]),
        Some(2.0)
    );

    assert_eq!(http(&addr, "GET", "/nothing").0, 404);
    assert_eq!(http(&addr, "POST", "/metrics").0, 405);
    let (status, body) = http(&addr, "HEAD", "/metrics");
    assert_eq!((status, body.as_str()), (200, ""));
    drop(held);
}

/// Per-address share and header timeout of the endpoint: 500 idle connections from 127.0.0.2
/// (Linux routes all of 127/8 to the loopback: another host to the limits) hold its share
/// only, and a scraper from 127.0.0.1 is served every time; the refusals are summarised in
/// the log, not written one line each.
#[test]
fn a_scraper_is_served_beside_500_idle_connections_from_another_address() {
    let (mut server, _port) = Proc::json_server(&["--metrics-addr", "127.0.0.1:0"]);
    let addr = metrics_addr(&mut server);
    let to: SocketAddr = addr.parse().unwrap();
    let idle = connect_from([127, 0, 0, 2].into(), to, 500);
    for i in 0..5 {
        let (status, body) = http(&addr, "GET", "/metrics");
        assert_eq!(status, 200, "scrape {i}: {body}");
    }
    server.wait_stderr(r#"more "metrics endpoint: refused""#);
    let lines = server
        .stderr()
        .iter()
        .filter(|l| l.contains("metrics endpoint: 32 connections from one address open"))
        .count();
    assert!(
        (1..=30).contains(&lines),
        "468 refusals, at most 10 lines a second: {lines}"
    );
    drop(idle);
}

/// Beyond its share (32 from one address) or the total (128), a connection is answered 503
/// with Retry-After, not reset; a connection that sends no headers is closed after about 2 s,
/// and its slot is free again.
#[test]
fn beyond_its_limits_the_endpoint_answers_503_and_closes_idle_connections() {
    let (mut server, _port) = Proc::json_server(&["--metrics-addr", "127.0.0.1:0"]);
    let addr = metrics_addr(&mut server);
    let to: SocketAddr = addr.parse().unwrap();
    let opened = real_now();
    let mut idle = connect_from([127, 0, 0, 2].into(), to, 32);
    let assert_busy = |from: [u8; 4]| {
        let s = connect_from(from.into(), to, 1).pop().unwrap();
        let (status, head, _) = http_on(s, &addr, "GET", "/metrics");
        assert_eq!(status, 503, "{head}");
        assert!(
            head.to_ascii_lowercase().contains("\r\nretry-after: "),
            "{head}"
        );
    };
    // The 33rd from one address: its share is taken.
    assert_busy([127, 0, 0, 2]);
    // 128 in all: every other address is answered 503 too.
    for host in 3..=5 {
        idle.extend(connect_from([127, 0, 0, host].into(), to, 32));
    }
    assert_busy([127, 0, 0, 6]);
    assert_busy([127, 0, 0, 1]);
    server.wait_stderr("metrics endpoint: 128 connections open (the most it serves)");
    // Idle connections are closed after the header timeout.
    for s in &mut idle {
        assert_eq!(crate::util::read_to_close(s), "");
    }
    let closed = real_now() - opened;
    assert!(
        closed >= Duration::from_millis(1500) && closed < Duration::from_secs(8),
        "closed after {closed:?}"
    );
    assert_eq!(http(&addr, "GET", "/metrics").0, 200);
}
