//! Hostile peers against the real server on loopback, each next to an honest client whose every
//! heartbeat must be counted, with nothing missed, and with the server's memory bounded (RSS
//! from /proc). The heavy floods are `#[ignore]`d (they take tens of seconds); `.ci/run` runs
//! them in release mode:
//! `cargo test --release -p heartbeat-net --test e2e -- --ignored hostile::`
//! `flood_rtt_figures` prints the figures of BENCHMARKS.md (`bench/flood.sh`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{Proc, WAIT, client_summary, connect_from, read_again, skipped_by, unix_stamp};

/// Real time, for measuring real processes.
#[allow(clippy::disallowed_methods)]
fn real_now() -> Instant {
    Instant::now()
}

/// The server's resident memory in KiB, from /proc.
fn rss_kib(server: &Proc) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// The memory bound every hostile case holds the server to.
const MAX_RSS_KIB: u64 = 128 * 1024;

/// Stops the honest client, then the server, and checks that the client `id` was heard on one
/// connection, up to heartbeat `at_least` at least, and that the server lost none it sent: the only
/// gaps are the slots the client itself reports it did not send (a client process starved of
/// CPU on a loaded two-core machine skips a slot rather than send it late).
fn assert_honest(server: &mut Proc, honest: &mut Proc, id: &str, at_least: u64) -> Vec<Value> {
    honest.signal("TERM");
    honest.expect_exit(0);
    server.wait_event("the honest goodbye", |v| {
        v["event"] == "disconnected" && v["client"] == id
    });
    let rss = rss_kib(server);
    assert!(rss < MAX_RSS_KIB, "server RSS {rss} KiB");
    let clients = server.summary();
    let c = client_summary(&clients, id);
    let not_sent = skipped_by(honest);
    assert_eq!(c["missed"].as_u64(), Some(not_sent), "{c:#}");
    assert_eq!(
        c["connections"].as_u64(),
        Some(1),
        "never disconnected: {c:#}"
    );
    assert_eq!(c["state"], "left", "{c:#}");
    // `at_least` counts slots (the caller waited for heartbeat #at_least): the ones the client
    // skipped are not received.
    let received = c["received"].as_u64().unwrap();
    assert!(
        received + not_sent >= at_least,
        "{received} heartbeats: {c:#}"
    );
    assert_eq!(
        c["highest_seq"].as_u64(),
        Some(received + not_sent),
        "{c:#}"
    );
    clients
}

/// Writes `bytes` and reads until the server closes; returns what it sent.
fn exchange(stream: &mut TcpStream, bytes: &[u8]) -> String {
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let _ = stream.write_all(bytes);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match read_again(stream, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// `n` connections that declare a 10 ms interval and write heartbeats as fast as they can,
/// never reading what comes back (or reading it, for `read_acks`), reconnecting whenever
/// dropped, until `stop`, each on a thread of its own at nice 10. Returns how many connections
/// they opened in all.
struct Flood {
    stop: Arc<AtomicBool>,
    connections: Arc<AtomicU64>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Flood {
    fn start(port: u16, n: usize, read_acks: bool) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicU64::new(0));
        let threads = (0..n)
            .map(|i| {
                let (stop, connections) = (stop.clone(), connections.clone());
                thread::spawn(move || flooder(port, i, read_acks, &stop, &connections))
            })
            .collect();
        Self {
            stop,
            connections,
            threads,
        }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        self.connections.load(Ordering::Relaxed)
    }
}

/// Lowers this thread's CPU priority to nice 10. A flooder stands for a remote machine: its own
/// busy loop would not run on the server's cores (the kernel work of its connections still
/// does, here as there). At the same priority, 200 busy flooder threads leave the server a few
/// percent of the two cores, and what is measured is the scheduler, not the server.
fn nice_this_thread() {
    let Ok(link) = std::fs::read_link("/proc/thread-self") else {
        return;
    };
    if let Some(tid) = link.file_name() {
        let _ = std::process::Command::new("renice")
            .args(["-n", "10", "-p"])
            .arg(tid)
            .output();
    }
}

fn flooder(port: u16, i: usize, read_acks: bool, stop: &AtomicBool, connections: &AtomicU64) {
    nice_this_thread();
    let stamp = unix_stamp(6);
    let mut beats = Vec::new();
    for seq in 1..=100 {
        beats.extend(format!("BEAT {seq} {stamp}\n").bytes());
    }
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
            thread::sleep(Duration::from_millis(10));
            continue;
        };
        connections.fetch_add(1, Ordering::Relaxed);
        let _ = s.set_write_timeout(Some(Duration::from_millis(200)));
        let _ = s.set_read_timeout(Some(Duration::from_millis(1)));
        if s.write_all(format!("HELLO 1 flood{i} 10\n").as_bytes())
            .is_err()
        {
            continue;
        }
        let mut sink = [0u8; 4096];
        while !stop.load(Ordering::Relaxed) {
            if s.write_all(&beats).is_err() {
                break;
            }
            if read_acks && matches!(s.read(&mut sink), Ok(0)) {
                break;
            }
        }
    }
}

/// A fresh connection during the flood: time from connecting to its first `ACK`.
fn first_ack_after_connect(port: u16) -> Duration {
    let start = real_now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let hello = format!("HELLO 1 fresh 1000\nBEAT 1 {}\n", unix_stamp(6));
    s.write_all(hello.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&got).contains("ACK 1 ") {
        let n = read_again(&mut s, &mut buf).unwrap();
        assert!(n > 0, "closed before the first ACK: {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
    let took = real_now() - start;
    let _ = s.write_all(b"BYE\n");
    took
}

/// The round-trip times the honest client logged with `-d`, in milliseconds.
fn rtts_ms(client: &Proc) -> Vec<f64> {
    client
        .stderr()
        .iter()
        .filter_map(|l| l.split("acknowledged: RTT ").nth(1))
        .filter_map(|r| r.split("ms").next()?.parse().ok())
        .collect()
}

fn p99(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[(xs.len() * 99 / 100).min(xs.len() - 1)]
}

/// `flooders` flooding connections (not reading, or reading) for `secs` next to an honest
/// 20 ms client; checks the honest client and a fresh connection; returns the honest client's
/// RTTs, the fresh connection's first-ACK time and the flood's connection count.
fn flood_case(flooders: usize, read_acks: bool, secs: u64) -> (Vec<f64>, Duration, u64) {
    let (mut server, port) = Proc::json_server(&[]);
    let mut honest = Proc::client(port, "honest", &["-i", "20", "--id", "honest", "-d"]);
    server.wait_beat("honest", 1);
    let flood = Flood::start(port, flooders, read_acks);
    thread::sleep(Duration::from_secs(secs) / 2);
    let first_ack = first_ack_after_connect(port);
    thread::sleep(Duration::from_secs(secs) / 2);
    let connections = flood.stop();
    let expected = secs * 1000 / 20 / 2;
    assert_honest(&mut server, &mut honest, "honest", expected);
    let rtts = rtts_ms(&honest);
    // The log stayed bounded: per kind a few lines a second, heartbeat lines at most 1000 a
    // second, whatever the number of flooders.
    let lines = server.stderr().len() as u64;
    assert!(lines < 500 + secs * 1_500, "{lines} log lines");
    assert!(
        first_ack < Duration::from_secs(1),
        "first ACK after {first_ack:?}"
    );
    (rtts, first_ack, connections)
}

#[test]
fn twenty_flooders_that_do_not_read_cannot_starve_an_honest_client() {
    let (rtts, _, connections) = flood_case(20, false, 3);
    assert!(connections >= 20, "{connections}");
    assert!(!rtts.is_empty());
}

#[test]
#[ignore = "heavy: 200 flooding connections for 10 s; .ci/run runs it in release mode"]
fn two_hundred_flooders_that_do_not_read_cannot_starve_an_honest_client() {
    let (rtts, first_ack, connections) = flood_case(200, false, 10);
    println!(
        "200 flooders: {connections} connections, honest RTT p99 {:.3} ms, fresh first ACK {first_ack:?}",
        p99(rtts)
    );
}

#[test]
#[ignore = "heavy: 200 flooding connections reading their acks for 10 s; run by .ci/run"]
fn two_hundred_fast_readers_cannot_starve_an_honest_client() {
    flood_case(200, true, 10);
}

/// The figures of BENCHMARKS.md: the honest client's ACK RTT p99 with 0, 20 and 200 flooders.
#[test]
#[ignore = "a measurement (35 s), not a check; bench/flood.sh runs it"]
fn flood_rtt_figures() {
    for flooders in [0, 20, 200] {
        let (rtts, first_ack, connections) = flood_case(flooders, false, 10);
        println!(
            "flooders={flooders} flood_connections={connections} honest_acks={} rtt_p50_ms={:.3} \
             rtt_p99_ms={:.3} rtt_max_ms={:.3} fresh_first_ack_ms={:.3}",
            rtts.len(),
            p99_at(&rtts, 50),
            p99(rtts.clone()),
            rtts.iter().copied().fold(0.0, f64::max),
            first_ack.as_secs_f64() * 1000.0
        );
    }
}

fn p99_at(xs: &[f64], pct: usize) -> f64 {
    let mut xs = xs.to_vec();
    xs.sort_by(f64::total_cmp);
    xs[(xs.len() * pct / 100).min(xs.len() - 1)]
}

#[test]
fn a_fast_client_reading_its_acks_is_dropped_and_the_log_stays_small() {
    let (mut server, port) = Proc::json_server(&[]);
    let mut honest = Proc::client(port, "honest", &["-i", "20", "--id", "honest"]);
    server.wait_beat("honest", 1);
    let flood = Flood::start(port, 1, true);
    thread::sleep(Duration::from_secs(2));
    let connections = flood.stop();
    server.wait_event("a fast client dropped", |v| {
        v["event"] == "disconnected"
            && v["reason"]
                .as_str()
                .is_some_and(|r| r.contains("faster than one per 10ms"))
    });
    assert_honest(&mut server, &mut honest, "honest", 50);
    // The seed logged a line per heartbeat, as fast as the client could send: 640 MB in 10 s.
    // Now each connection gets a handful of heartbeats, and repeated lines are summarised.
    let lines = server.stderr().len() as u64;
    assert!(connections >= 1);
    assert!(
        lines < 500 + 2 * 1_500,
        "{lines} lines for {connections} connections"
    );
}

#[test]
fn day_long_intervals_cannot_hold_the_slots() {
    let (mut server, port) = Proc::json_server(&[
        "--max-connections",
        "10",
        "--max-connections-per-ip",
        "10",
        "--max-idle",
        "2s",
    ]);
    let holders: Vec<TcpStream> = (0..10)
        .map(|i| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(format!("HELLO 1 holder{i} 86400000\n").as_bytes())
                .unwrap();
            s
        })
        .collect();
    for i in 0..10 {
        server.wait_event("a holder identified", |v| {
            v["event"] == "connected" && v["client"] == format!("holder{i}")
        });
    }
    // Every slot is taken: a newcomer is closed at once...
    let mut refused = TcpStream::connect(("127.0.0.1", port)).unwrap();
    assert_eq!(exchange(&mut refused, b""), "");
    // ... but only until the holders' max idle (2 s, not 10 days) frees the slots.
    for i in 0..10 {
        let holder = format!("holder{i}");
        let gone = server.wait_event("a holder dropped", |v| {
            v["event"] == "disconnected" && v["client"] == holder.as_str()
        });
        assert_eq!(gone["reason"], "no data for 2s");
    }
    drop(holders);
    let mut honest = Proc::client(port, "honest", &["-i", "50", "--id", "honest"]);
    server.wait_beat("honest", 10);
    let clients = assert_honest(&mut server, &mut honest, "honest", 10);
    assert_eq!(clients.len(), 11);
}

#[test]
fn one_address_cannot_take_every_slot() {
    let (mut server, port) = Proc::json_server(&["--max-connections", "8"]);
    // The attacker comes from 127.0.0.2; a quarter of the slots (2) are its share.
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let attacker = connect_from([127, 0, 0, 2].into(), addr, 30);
    let mut honest = Proc::client(port, "honest", &["-i", "20", "--id", "honest"]);
    server.wait_beat("honest", 20);
    // 28 refused: ten lines, then one summary line with the rest.
    server.wait_stderr("--max-connections-per-ip = 2");
    server.wait_stderr("more \"connection refused: --max-connections-per-ip reached\"");
    drop(attacker);
    assert_honest(&mut server, &mut honest, "honest", 20);
}

#[test]
fn implausible_numbers_are_refused_and_counters_never_wrap() {
    let (mut server, port) = Proc::json_server(&[]);
    let mut honest = Proc::client(port, "honest", &["-i", "20", "--id", "honest"]);
    server.wait_beat("honest", 1);
    let stamp = unix_stamp(6);
    // A jump far past what the elapsed time allows, after two honest heartbeats.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let answer = exchange(
        &mut s,
        format!("HELLO 1 jumper 1000 1\nBEAT 1 {stamp}\nBEAT 2 {stamp}\nBEAT 9223372036854775808 {stamp}\n")
            .as_bytes(),
    );
    assert!(
        answer.contains("ERROR sequence number 9223372036854775808 is ahead of the schedule"),
        "{answer}"
    );
    // Again and again, in new sessions: each first heartbeat from before 1970 is refused.
    for session in 2..=6 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let answer = exchange(
            &mut s,
            format!("HELLO 1 jumper 1000 {session}\nBEAT 9223372036854775808 {stamp}\n").as_bytes(),
        );
        assert!(answer.contains("is ahead of the schedule"), "{answer}");
    }
    // Zero and far-future stamps are not times at all; an hour ahead is clock skew.
    for bad in ["0", "7258118400.0"] {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let answer = exchange(
            &mut s,
            format!("HELLO 1 stamper 1000\nBEAT 1 {bad}\n").as_bytes(),
        );
        assert!(answer.contains("is implausible"), "{answer}");
    }
    let ahead = {
        let secs: f64 = stamp.parse().unwrap();
        format!("{:.6}", secs + 3600.0)
    };
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(format!("HELLO 1 ahead 1000\nBEAT 1 {ahead}\n").as_bytes())
        .unwrap();
    let skew = server.wait_event("clock skew", |v| {
        v["event"] == "clock_skew" && v["client"] == "ahead"
    });
    let offset = skew["offset_ms"].as_f64().unwrap();
    assert!((3_590_000.0..3_610_000.0).contains(&offset), "{skew}");
    server.wait_stderr("Clock of client ahead is off by 3");
    let _ = s.write_all(b"BYE\n");
    drop(s);
    let clients = assert_honest(&mut server, &mut honest, "honest", 1);
    let jumper = client_summary(&clients, "jumper");
    assert_eq!(
        (jumper["received"].as_u64(), jumper["missed"].as_u64()),
        (Some(2), Some(0)),
        "{jumper:#}"
    );
    let ahead = client_summary(&clients, "ahead");
    let delay_max = ahead["delay_ms"]["max_ms"].as_f64().unwrap();
    assert!(
        delay_max.abs() < 1000.0,
        "a skewed clock is not delay: {ahead:#}"
    );
}

#[test]
fn acks_due_before_a_half_close_are_all_delivered() {
    let (mut server, port) = Proc::json_server(&[]);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"HELLO 1 half 10\n").unwrap();
    // Old enough for 100 heartbeats at once at its 10 ms pace.
    thread::sleep(Duration::from_millis(1100));
    let stamp = unix_stamp(6);
    let beats: String = (1..=100).map(|i| format!("BEAT {i} {stamp}\n")).collect();
    s.write_all(beats.as_bytes()).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let answer = exchange(&mut s, b"");
    let acks = answer.lines().filter(|l| l.starts_with("ACK ")).count();
    assert_eq!(acks, 100, "{answer}");
    let clients = server.summary();
    assert_eq!(
        client_summary(&clients, "half")["received"].as_u64(),
        Some(100)
    );
}

#[test]
#[ignore = "heavy: fills a loopback socket buffer with acks (about 10 s); run by .ci/run"]
fn a_peer_that_does_not_read_is_dropped_for_that() {
    let (mut server, port) = Proc::json_server(&["--write-timeout", "1s", "--send-buffer", "4096"]);
    let mut honest = Proc::client(port, "honest", &["-i", "20", "--id", "honest"]);
    // A peer at its declared pace that never reads, with a small receive buffer: its acks fill
    // the socket buffers, then the server's writes block.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut deaf = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket
            .connect(SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .unwrap();
        let stream = stream.into_std().unwrap();
        stream.set_nonblocking(false).unwrap();
        stream
    });
    deaf.write_all(b"HELLO 1 deaf 10\n").unwrap();
    let start = real_now();
    let mut seq = 0u64;
    // Written until the server drops it (then a write fails), for at most a minute.
    let gone = loop {
        seq += 1;
        let line = format!("BEAT {seq} {}\n", unix_stamp(6));
        if deaf.write_all(line.as_bytes()).is_err() {
            break true;
        }
        if real_now() - start > Duration::from_secs(60) {
            break false;
        }
        thread::sleep(Duration::from_millis(10));
    };
    assert!(gone, "the deaf peer was never dropped");
    let dropped = server.wait_event("deaf dropped", |v| {
        v["event"] == "disconnected" && v["client"] == "deaf"
    });
    assert_eq!(
        dropped["reason"], "not reading acknowledgements",
        "{dropped}"
    );
    assert_honest(&mut server, &mut honest, "honest", 10);
}

#[test]
fn a_client_whose_interval_outlasts_max_idle_connects_for_each_heartbeat() {
    // The server keeps an idle connection 1 s at most; a 600 ms interval does not fit twice.
    let (mut server, port) = Proc::json_server(&["--max-idle", "1s"]);
    let mut client = Proc::client(
        port,
        "long",
        &[
            "-i",
            "600",
            "--id",
            "long",
            "--count",
            "4",
            "--server-max-idle",
            "1",
        ],
    );
    client.wait_stderr("connecting for each heartbeat");
    client.expect_exit(0);
    server.wait_event("the goodbye", |v| {
        v["event"] == "disconnected" && v["reason"] == "client said goodbye"
    });
    let clients = server.summary();
    let long = client_summary(&clients, "long");
    assert_eq!(long["received"].as_u64(), Some(4), "{long:#}");
    assert_eq!(long["missed"].as_u64(), Some(0), "{long:#}");
    assert_eq!(long["connections"].as_u64(), Some(4), "{long:#}");
    // Between heartbeats the client closed its connection itself: no idle timeouts, and no
    // goodbye but the last.
    let ends: Vec<_> = server
        .events()
        .iter()
        .filter(|v| v["event"] == "disconnected")
        .map(|v| v["reason"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        ends,
        [
            "closed by peer",
            "closed by peer",
            "closed by peer",
            "client said goodbye"
        ]
    );
}

/// A flood's connections per cause: enough for several windows of the log summary in a debug
/// build, few enough for a second or two each.
const FLOOD: u64 = 300;

/// One kind of log line under a flood: the text of its own lines, and its name in the summary
/// (`... and 12 more "NAME" in the last ...`).
struct Kind {
    line: &'static str,
    name: &'static str,
    /// Lines written per window of the summary (one second).
    burst: u64,
}

const ACCEPTED: Kind = Kind {
    line: "Accepted connection from",
    name: "Accepted connection",
    burst: 10,
};

/// Waits until the lines of `kind` and the counts of its summaries add up to `n` (nothing lost:
/// the last window's summary comes when the window ends), then checks that at most `burst` of
/// them were written per second since the flood began (`since`), plus the window it began in.
fn assert_summarised(server: &mut Proc, kind: &Kind, n: u64, since: Instant) {
    let summary = format!(" more \"{}\" in the last ", kind.name);
    let written = |lines: &[String]| lines.iter().filter(|l| l.contains(kind.line)).count() as u64;
    let held = |lines: &[String]| -> u64 {
        lines
            .iter()
            .filter_map(|l| l.split_once(&summary))
            .filter_map(|(before, _)| before.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let what = format!("{n} {:?} lines, written or summarised", kind.name);
    server.wait_stderr_until(&what, |lines| written(lines) + held(lines) >= n);
    let lines = server.stderr();
    let (w, h) = (written(lines), held(lines));
    assert_eq!(w + h, n, "{:?}: {w} written, {h} summarised", kind.name);
    let took = since.elapsed();
    let windows = took.as_secs() + 2;
    assert!(
        w <= kind.burst * windows,
        "{:?}: {w} lines for {n} in {took:?}",
        kind.name
    );
}

/// Runs `one` for connections `0..n` one after the other.
fn flood(n: u64, one: impl FnMut(u64)) {
    (0..n).for_each(one);
}

/// Connects to `port` from `127.0.0.1`, writes `bytes` and reads until the server closes.
fn hit(port: u16, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    exchange(&mut s, bytes)
}

/// Plaintext clients, and peers that close before finishing the handshake, against a TLS
/// server: each was once a warning of its own (30,000 in 1.9 s).
#[test]
fn tls_failures_are_summarised_under_a_flood() {
    let p = crate::tls::pki();
    let (mut server, port) = Proc::json_server(&p.server_args());
    let tls = Kind {
        line: "TLS handshake with",
        name: "TLS handshake failed",
        burst: 10,
    };
    let plaintext = format!("HELLO 1 plain 100\nBEAT 1 {}\n", unix_stamp(6));
    let since = real_now();
    flood(FLOOD, |_| {
        hit(port, plaintext.as_bytes());
    });
    flood(FLOOD, |_| {
        drop(TcpStream::connect(("127.0.0.1", port)).unwrap());
    });
    assert_summarised(&mut server, &tls, 2 * FLOOD, since);
    assert_summarised(&mut server, &ACCEPTED, 2 * FLOOD, since);
    assert_eq!(server.wait_unidentified("tls_failed", 2 * FLOOD), 2 * FLOOD);
    assert_no_unidentified_disconnects(&server);
}

/// `--json`: none of the connections that never identified is an event of its own.
fn assert_no_unidentified_disconnects(server: &Proc) {
    let events = server.events();
    let single = events
        .iter()
        .filter(|v| v["event"] == "disconnected" && v["client"].is_null())
        .count();
    assert_eq!(single, 0);
    let sums = events
        .iter()
        .filter(|v| v["event"] == "unidentified")
        .count();
    assert!(sums < 30, "{sums} unidentified events");
}

/// Garbage before `HELLO`, a broken pace and implausible numbers after it: one kind of line,
/// protocol errors.
#[test]
fn protocol_errors_pace_and_plausibility_are_summarised_under_a_flood() {
    let (mut server, port) = Proc::json_server(&[]);
    let protocol = |line| Kind {
        line,
        name: "connections dropped: protocol error",
        burst: 10,
    };
    // The three causes share the kind: its lines and summaries add up to all of them so far.
    let all = protocol("protocol error: ");
    let since = real_now();
    flood(FLOOD, |_| {
        hit(port, b"GET / HTTP/1.0\r\n\r\n");
    });
    assert_summarised(&mut server, &all, FLOOD, since);
    flood(FLOOD, |i| {
        let mut beats = format!("HELLO 1 pace{i} 1000\n");
        for _ in 0..12 {
            beats.push_str(&format!("BEAT 1 {}\n", unix_stamp(6)));
        }
        hit(port, beats.as_bytes());
    });
    assert_summarised(&mut server, &all, 2 * FLOOD, since);
    flood(FLOOD, |i| {
        hit(
            port,
            format!("HELLO 1 stamp{i} 1000\nBEAT 1 0.5\n").as_bytes(),
        );
    });
    assert_summarised(&mut server, &all, 3 * FLOOD, since);
    assert_summarised(&mut server, &ACCEPTED, 3 * FLOOD, since);
    let lines = server.stderr();
    for cause in [
        "unrecognised protocol",
        "is faster than one per",
        "is implausible",
    ] {
        assert!(
            lines.iter().any(|l| l.contains(cause)),
            "no line with {cause:?}"
        );
    }
    assert_eq!(server.wait_unidentified("protocol", FLOOD), FLOOD);
}

/// Failed authentication, and `HELLO`s refused under the identity rule: one line a second each.
#[test]
fn refusals_are_summarised_under_a_flood() {
    let dir = tempfile::tempdir().unwrap();
    let key = "0123456789abcdef0123456789abcdef";
    let table = crate::util::write_file(dir.path(), "keys", &format!("victim {key}\n"), 0o600);
    let (mut server, port) = Proc::json_server(&["--auth-keys", crate::util::arg(&table)]);
    let since = real_now();
    flood(FLOOD, |i| {
        hit(port, format!("HELLO 1 victim 100 {i:x}\nBYE\n").as_bytes());
    });
    let auth = Kind {
        line: "Authentication failed: ",
        name: "failed authentication",
        burst: 1,
    };
    assert_summarised(&mut server, &auth, FLOOD, since);
    assert_eq!(server.wait_unidentified("auth_failed", FLOOD), FLOOD);

    let (mut server, port) = Proc::json_server(&[]);
    let mut holder = TcpStream::connect(("127.0.0.1", port)).unwrap();
    holder.write_all(b"HELLO 1 taken 60000 1\n").unwrap();
    server.wait_event("the holder", |v| v["event"] == "connected");
    let since = real_now();
    flood(FLOOD, |i| {
        hit(
            port,
            format!("HELLO 1 taken 60000 {:x}\n", i + 2).as_bytes(),
        );
    });
    let refused = Kind {
        line: "is in use by",
        name: "refusals under the identity rule",
        burst: 1,
    };
    assert_summarised(&mut server, &refused, FLOOD, since);
    assert_eq!(server.wait_unidentified("id_in_use", FLOOD), FLOOD);
    drop(holder);
}

/// Connections beyond `--max-connections` and `--max-connections-per-ip`, closed at accept.
#[test]
fn connection_limits_are_summarised_under_a_flood() {
    for (flags, line, name, label) in [
        (
            ["--max-connections", "2", "--max-connections-per-ip", "2"],
            "(--max-connections = 2)",
            "connection refused: --max-connections reached",
            "max_connections",
        ),
        (
            ["--max-connections", "100", "--max-connections-per-ip", "2"],
            "(--max-connections-per-ip = 2)",
            "connection refused: --max-connections-per-ip reached",
            "max_connections_per_ip",
        ),
    ] {
        let (mut server, port) = Proc::json_server(&flags);
        let held: Vec<TcpStream> = (0..2)
            .map(|i| {
                let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                s.write_all(format!("HELLO 1 held{i} 60000\n").as_bytes())
                    .unwrap();
                s
            })
            .collect();
        for i in 0..2 {
            server.wait_event("a holder", |v| {
                v["event"] == "connected" && v["client"] == format!("held{i}")
            });
        }
        let since = real_now();
        flood(FLOOD, |_| {
            hit(port, b"");
        });
        let kind = Kind {
            line,
            name,
            burst: 10,
        };
        assert_summarised(&mut server, &kind, FLOOD, since);
        assert_eq!(server.wait_unidentified(label, FLOOD), FLOOD);
        drop(held);
    }
}

/// Identified connections that then say nothing, dropped at `--max-idle` all at once.
#[test]
fn idle_drops_are_summarised_under_a_flood() {
    let (mut server, port) = Proc::json_server(&["--max-idle", "1s"]);
    let mut held = Vec::new();
    let since = real_now();
    flood(FLOOD, |i| {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(format!("HELLO 1 idle{i} 100\n").as_bytes())
            .unwrap();
        held.push(s);
    });
    let idle = Kind {
        line: "no data for 1s",
        name: "connections dropped: timeout",
        burst: 10,
    };
    assert_summarised(&mut server, &idle, FLOOD, since);
    let identified = Kind {
        line: "identified on conn#",
        name: "clients identified",
        burst: 10,
    };
    assert_summarised(&mut server, &identified, FLOOD, since);
    // Every one of them identified: each drop is an event of its own.
    server.summary();
    let drops = server
        .events()
        .iter()
        .filter(|v| v["event"] == "disconnected" && v["reason"] == "no data for 1s")
        .count() as u64;
    assert_eq!(drops, FLOOD);
}
