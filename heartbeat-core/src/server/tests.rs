use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use super::*;
use crate::ClientId;
use crate::analysis::SeqRange;
use crate::detector::{DetectorConfig, DetectorKind};

// ---- helpers ----

pub(super) fn peer(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn id(s: &str) -> ClientKey {
    ClientKey::Id(ClientId::new(s).unwrap())
}

/// A server with `config` at a fresh origin, and one connection from port 1 that sent `bytes`.
fn opened_with(config: ServerConfig, bytes: &[u8]) -> (Now, Server, ConnId) {
    let t0 = Now::test_origin();
    let mut s = Server::new(Arc::new(config));
    let c = open(&mut s, t0, 1, bytes);
    (t0, s, c)
}

/// Accepts a connection from `port` at `at` that sends `bytes` at once.
fn open(s: &mut Server, at: Now, port: u16, bytes: &[u8]) -> ConnId {
    let c = s.accept(at, peer(port));
    s.handle_input(at, c, bytes);
    c
}

#[track_caller]
fn assert_has(lines: &[String], line: &str) {
    assert!(lines.iter().any(|l| l == line), "{line:?} not in {lines:?}");
}

/// [`opened_with`] the default configuration.
fn opened(bytes: &[u8]) -> (Now, Server, ConnId) {
    opened_with(ServerConfig::default(), bytes)
}

/// Each output as one line: `conn#1 tx ...`, `ev ...` or `conn#1 disconnect ...` (also the
/// handshake's tests).
pub(super) fn drain(s: &mut Server) -> Vec<String> {
    std::iter::from_fn(|| s.poll_output())
        .map(|o| match o {
            Output::Transmit { conn, bytes } => format!(
                "{conn} tx {}",
                String::from_utf8_lossy(&bytes)
                    .trim_end()
                    .replace('\n', " | ")
            ),
            Output::Event(e) => format!("ev {e}"),
            Output::Disconnect { conn, reason } => format!("{conn} disconnect {reason}"),
        })
        .collect()
}

/// The liveness lines (transitions, stalls) among `lines`.
fn liveness(lines: Vec<String>) -> Vec<String> {
    lines
        .into_iter()
        .filter(|l| l.contains("transition") || l.contains("stalled"))
        .collect()
}

fn liveness_lines(s: &mut Server) -> Vec<String> {
    liveness(drain(s))
}

/// Runs every timer due up to `now` in order, as a driver would, then `handle_timeout(now)`.
fn advance_to(s: &mut Server, now: Now) {
    while let Some(at) = s.poll_timeout().filter(|&at| at < now.mono) {
        s.handle_timeout(Now { mono: at, ..now });
    }
    s.handle_timeout(now);
}

/// Sends `BEAT i` on `conn` at `t0 + i` seconds for each `i` in `seqs`, running the timers due
/// by then first, as a driver would.
fn beat_every_second(s: &mut Server, t0: Now, conn: ConnId, seqs: RangeInclusive<u64>) {
    for i in seqs {
        let now = t0.advanced(Duration::from_secs(i));
        s.handle_timeout(now);
        s.handle_input(now, conn, format!("BEAT {i} 1700000000\n").as_bytes());
    }
}

/// Jumps from timer to timer until none is left within the hour after `t0` (the forget-after,
/// a day by default, is beyond it) or `done` says so; returns the instant of the last timer and
/// every output line on the way.
fn run_timers(s: &mut Server, t0: Now, done: impl Fn(&Server) -> bool) -> (Instant, Vec<String>) {
    let mut last = t0.mono;
    let mut log = Vec::new();
    let horizon = t0.mono + Duration::from_secs(3600);
    while let Some(at) = s.poll_timeout().filter(|&at| at <= horizon) {
        last = at;
        s.handle_timeout(Now {
            mono: at,
            unix: t0.unix,
        });
        log.extend(drain(s));
        if done(s) {
            break;
        }
    }
    (last, log)
}

// ---- tests ----

#[test]
fn v1_hello_beats_and_acks() {
    let (t0, mut s, c) = opened(b"HELLO 1 a 1000\nBEAT 1 1700000000.0\n");
    assert_eq!(
        drain(&mut s),
        [
            "ev connected conn#1 client=a peer=127.0.0.1:1 protocol=v1 interval=1000.000ms resumed=false",
            "ev heartbeat client=a seq=1 delay=0.000ms gap=-",
            "conn#1 tx WELCOME 1 | ACK 1 1700000000.000000",
        ]
    );
    let t1 = t0.advanced(Duration::from_millis(1002));
    s.handle_input(t1, c, b"BEAT 2 1700000001.0\n");
    assert_eq!(
        drain(&mut s),
        [
            "ev heartbeat client=a seq=2 delay=2.000ms gap=1002.000ms",
            "conn#1 tx ACK 2 1700000001.002000"
        ]
    );
}

#[test]
fn legacy_burst_counts_every_heartbeat() {
    // The seed's Known Limitation 2: a burst after a firewall is parsed in full.
    let (t0, mut s, c) = opened(b"Sequence #1: Sending heartbeat at 1700000000.0000. ");
    let _ = drain(&mut s);
    let mut burst = Vec::new();
    for seq in 2..=6 {
        burst.extend(
            format!(
                "Sequence #{seq}: Sending heartbeat at 17000000{:02}.0000. ",
                seq - 1
            )
            .bytes(),
        );
    }
    s.handle_input(t0.advanced(Duration::from_secs(6)), c, &burst);
    let out = drain(&mut s);
    assert_eq!(
        out[0],
        "ev burst client=legacy@127.0.0.1:1 seq=2-6 count=5 after_silence=6000.000ms"
    );
    assert_eq!(out.len(), 6, "{out:?}");
    let stats = s.client(&ClientKey::Peer(peer(1))).unwrap();
    assert_eq!(
        (stats.received(), stats.missed(), stats.bursts()),
        (6, 0, 1)
    );
}

#[test]
fn gaps_are_reported_as_ranges_once() {
    // One read, a second after the HELLO (five heartbeats at once are only allowed once the
    // connection is old enough for them).
    let (t0, mut s, c) = opened(b"HELLO 1 a 100\n");
    s.handle_input(
        t0.advanced(Duration::from_secs(1)),
        c,
        b"BEAT 1 1700000000\nBEAT 5 1700000000.4\nBEAT 10 1700000000.9\nBEAT 3 1700000000.9\nBEAT 10 1700000000.9\n",
    );
    let out: Vec<_> = drain(&mut s)
        .into_iter()
        .filter(|l| !l.contains("heartbeat") && !l.contains("tx"))
        .collect();
    assert_eq!(
        out[1..],
        [
            "ev burst client=a seq=1-10 count=5 after_silence=-",
            "ev missed client=a seq=2-4 count=3",
            "ev missed client=a seq=6-9 count=4",
            "ev duplicate client=a seq=10",
        ]
    );
    let st = s.client(&id("a")).unwrap();
    assert_eq!((st.received(), st.missed(), st.duplicates()), (4, 6, 1));
    assert_eq!(
        st.missed_ranges()
            .map(|r| r.to_string())
            .collect::<Vec<_>>(),
        ["2", "4", "6-9"]
    );
}

#[test]
fn reconnect_resumes_the_same_client_and_counts_the_gap_once() {
    let (t0, mut s, c1) = opened(b"HELLO 1 a 1000 1\nBEAT 1 1700000000\nBEAT 2 1700000001\n");
    s.handle_eof(t0, c1);
    let c2 = s.accept(t0, peer(2));
    s.handle_input(
        t0.advanced(Duration::from_secs(5)),
        c2,
        b"HELLO 1 a 1000 1\nBEAT 6 1700000005\n",
    );
    let out = drain(&mut s);
    assert_has(
        &out,
        "ev connected conn#2 client=a peer=127.0.0.1:2 protocol=v1 interval=1000.000ms resumed=true",
    );
    assert_has(&out, "ev missed client=a seq=3-5 count=3");
    let st = s.client(&id("a")).unwrap();
    assert_eq!((st.received(), st.missed(), st.restarts()), (3, 3, 0));
    assert_eq!(s.client_count(), 1);
}

#[test]
fn a_clients_first_heartbeat_here_is_the_baseline_and_gaps_after_it_count() {
    // A client that was heartbeating to an earlier run of the server: its first heartbeat here
    // is #27, and nothing before it was this server's to miss.
    let (t0, mut s, c1) = opened(b"HELLO 1 a 1000 1\nBEAT 27 1700000000\n");
    let out = drain(&mut s);
    assert!(!out.iter().any(|l| l.contains("missed")), "{out:?}");
    // Gaps after it count, across a reconnect of the same session.
    s.handle_input(
        t0.advanced(Duration::from_secs(2)),
        c1,
        b"BEAT 29 1700000002\n",
    );
    s.handle_eof(t0.advanced(Duration::from_secs(2)), c1);
    let t5 = t0.advanced(Duration::from_secs(5));
    let c2 = open(&mut s, t5, 2, b"HELLO 1 a 1000 1\nBEAT 32 1700000005\n");
    let out = drain(&mut s);
    assert_has(&out, "ev missed client=a seq=28 count=1");
    assert_has(&out, "ev missed client=a seq=30-31 count=2");
    let st = s.client(&id("a")).unwrap();
    assert_eq!((st.received(), st.missed()), (3, 3));
    s.handle_eof(t5, c2);
    // A new session of the client counts from its own start, 1.
    let t9 = t0.advanced(Duration::from_secs(9));
    open(&mut s, t9, 3, b"HELLO 1 a 1000 2\nBEAT 3 1700000009\n");
    let out = drain(&mut s);
    assert_has(&out, "ev restarted client=a previous=32");
    assert_has(&out, "ev missed client=a seq=1-2 count=2");
}

#[test]
fn new_session_is_a_restart_not_a_duplicate() {
    let (t0, mut s, c1) = opened(b"HELLO 1 a 1000 1\nBEAT 1 1700000000\nBEAT 2 1700000001\nBYE\n");
    s.handle_eof(t0, c1);
    let out = drain(&mut s);
    assert_eq!(out.last().unwrap(), "conn#1 disconnect client said goodbye");
    open(&mut s, t0, 2, b"HELLO 1 a 1000 2\nBEAT 1 1700000010\n");
    let out = drain(&mut s);
    assert_has(&out, "ev restarted client=a previous=2");
    let st = s.client(&id("a")).unwrap();
    assert_eq!(
        (st.received(), st.missed(), st.duplicates(), st.restarts()),
        (3, 0, 0, 1)
    );
}

#[test]
fn two_clients_are_analysed_apart() {
    // The seed's Known Limitation 3.
    let (t0, mut s, a) = opened(b"HELLO 1 a 1000\n");
    let b = open(&mut s, t0, 2, b"HELLO 1 b 1000\n");
    for i in 1..=3u64 {
        let now = t0.advanced(Duration::from_secs(i));
        for conn in [a, b] {
            s.handle_input(now, conn, format!("BEAT {i} 1700000000\n").as_bytes());
        }
    }
    let report = s.report();
    assert_eq!(report.clients.len(), 2);
    for c in &report.clients {
        assert_eq!((c.received, c.missed, c.bursts), (3, 0, 0));
    }
}

#[test]
fn clients_after_pages_through_the_clients_in_key_order() {
    let (t0, mut s, _) = opened(b"HELLO 1 c 1000\n");
    open(&mut s, t0, 2, b"HELLO 1 a 1000\n");
    open(&mut s, t0, 3, b"HELLO 1 b 1000\n");
    let keys = |after: Option<&str>| -> Vec<String> {
        let after = after.map(id);
        let page = s.clients_after(after.as_ref());
        page.map(|c| c.client().to_string()).collect()
    };
    assert_eq!(keys(None), ["a", "b", "c"]);
    assert_eq!(keys(Some("a")), ["b", "c"]);
    // A key that is not (or no longer) there: the clients after where it would be.
    assert_eq!(keys(Some("bb")), ["c"]);
    assert_eq!(keys(Some("c")), Vec::<String>::new());
}

#[test]
fn garbage_drops_only_that_connection() {
    let (t0, mut s, good) = opened(b"HELLO 1 a 1000\n");
    let bad = open(&mut s, t0, 2, b"GET / HTTP/1.1\r\n");
    let out = drain(&mut s);
    assert_has(
        &out,
        "conn#2 disconnect protocol error: unrecognised protocol: expected `HELLO` (v1) or `Sequence #` (legacy)",
    );
    s.handle_input(t0, bad, b"HELLO 1 b 1000\n");
    s.handle_input(t0, good, b"BEAT 1 1700000000\n");
    assert_eq!(s.connection_count(), 1);
    assert_eq!(s.client(&id("a")).unwrap().received(), 1);
}

#[test]
fn v1_protocol_errors_are_explained_before_closing() {
    let (_, mut s, _) = opened(b"HELLO 1 a 1000\nBEAT 1 nan\n");
    let out = drain(&mut s);
    assert_eq!(
        out[out.len() - 3..],
        [
            "conn#1 tx ERROR invalid timestamp \"nan\"",
            "ev disconnected conn#1 client=a reason=protocol error: invalid timestamp \"nan\"",
            "conn#1 disconnect protocol error: invalid timestamp \"nan\"",
        ]
    );
}

#[test]
fn hello_after_hello_is_a_protocol_error() {
    let (t0, mut s, c) = opened(b"HELLO");
    assert_eq!(drain(&mut s), Vec::<String>::new());
    s.handle_input(t0, c, b" 1 a 10\nHELLO 1 a 10\n");
    let out = drain(&mut s);
    assert_eq!(
        out.last().unwrap(),
        "conn#1 disconnect protocol error: unexpected HELLO after HELLO"
    );
}

/// A client started with `--tls` against a server without TLS: its ClientHello is answered in
/// plaintext, so its handshake fails on a line that says to drop `--tls`, then closed.
#[test]
fn a_tls_hello_is_told_in_plaintext_that_this_server_has_no_tls() {
    let (_, mut s, _) = opened(b"\x16\x03\x01\x00\xf4\x01\x00\x00\xf0\x03\x03");
    assert_eq!(
        drain(&mut s),
        [
            "conn#1 tx ERROR this server does not speak TLS: connect without --tls",
            "ev disconnected conn#1 client=- reason=protocol error: a TLS handshake, and this \
             server does not speak TLS",
            "conn#1 disconnect protocol error: a TLS handshake, and this server does not speak TLS",
        ]
    );
}

#[test]
fn beat_before_hello_is_an_unrecognised_protocol() {
    let (_, mut s, _) = opened(b"BEAT 1 1700000000\n");
    assert_eq!(
        drain(&mut s),
        [
            "ev disconnected conn#1 client=- reason=protocol error: unrecognised protocol: expected `HELLO` (v1) or `Sequence #` (legacy)",
            "conn#1 disconnect protocol error: unrecognised protocol: expected `HELLO` (v1) or `Sequence #` (legacy)",
        ]
    );
}

#[test]
fn silent_and_unidentified_connections_time_out() {
    let (t0, mut s, _quiet) = opened(b"");
    let _live = open(&mut s, t0, 2, b"HELLO 1 a 1000\nBEAT 1 1700000000\n");
    let _partial_v1 = open(&mut s, t0, 3, b"HELLO 1 b");
    let _partial_legacy = open(&mut s, t0, 4, b"Sequence #1: Sending");
    let _ = drain(&mut s);
    let (at, log) = run_timers(&mut s, t0, |_| false);
    assert_eq!(
        log,
        [
            // Phi with Akka's defaults and a 1 s interval, bootstrapped from one heartbeat.
            "ev transition client=a up->suspect since_last=4909.527ms phi=4.000",
            "ev transition client=a suspect->down since_last=5306.496ms phi=8.000",
            "conn#1 tx ERROR timed out waiting for HELLO",
            "ev disconnected conn#1 client=- reason=no identification within 10s",
            "conn#1 disconnect no identification within 10s",
            "ev disconnected conn#2 client=a reason=no data for 10s",
            "conn#2 disconnect no data for 10s",
            // Bytes but no complete first message: a v1 client is told why, a legacy client
            // never reads.
            "conn#3 tx ERROR timed out waiting for HELLO",
            "ev disconnected conn#3 client=- reason=incomplete identification after 10s",
            "conn#3 disconnect incomplete identification after 10s",
            "ev disconnected conn#4 client=- reason=incomplete identification after 10s",
            "conn#4 disconnect incomplete identification after 10s",
        ]
    );
    assert_eq!(at - t0.mono, Duration::from_secs(10));
}

#[test]
fn idle_deadline_is_rearmed_by_traffic() {
    let (t0, mut s, c) = opened(b"HELLO 1 a 1000\n");
    beat_every_second(&mut s, t0, c, 1..=30);
    assert_eq!(s.connection_count(), 1);
    assert_eq!(s.client(&id("a")).unwrap().received(), 30);
}

#[test]
fn a_newer_connection_supersedes_a_half_open_one() {
    let (t0, mut s, _) = opened(b"HELLO 1 a 1000 7\nBEAT 1 1700000000\n");
    open(&mut s, t0, 2, b"HELLO 1 a 1000 7\nBEAT 2 1700000001\n");
    let out = drain(&mut s);
    assert_has(&out, "conn#1 disconnect superseded by conn#2");
    assert_eq!(s.connection_count(), 1);
    assert_eq!(s.client(&id("a")).unwrap().received(), 2);
}

#[test]
fn legacy_final_message_at_eof_counts() {
    let (t0, mut s, c) = opened(b"Sequence #1: Sending heartbeat at 1700000000.0000.");
    s.handle_eof(t0, c);
    assert_eq!(s.client(&ClientKey::Peer(peer(1))).unwrap().received(), 1);
}

#[test]
fn report_renders_text_and_json() {
    let (t0, mut s, c) = opened(b"HELLO 1 a 1000\nBEAT 1 1700000000\n");
    s.handle_input(
        t0.advanced(Duration::from_secs(3)),
        c,
        b"BEAT 4 1700000002.999\n",
    );
    let report = s.report();
    let json = report.to_json();
    let entry = &json["clients"][0];
    assert_eq!(entry["client"], "a");
    assert_eq!(entry["received"], 2);
    assert_eq!(entry["missed"], 2);
    assert_eq!(entry["duplicates"], 0);
    assert_eq!(entry["missed_ranges"][0], "2-3");
    let text = report.to_string();
    assert!(text.contains("missed a: 2-3"), "{text}");
}

/// Runs a client sending every second for 20 s, then silent, until it is down; returns its
/// transitions and how long after the last heartbeat it was declared down.
fn crash_after_20_beats(config: ServerConfig) -> (Vec<String>, Duration) {
    let (t0, mut s, c) = opened_with(config, b"HELLO 1 a 1000\n");
    beat_every_second(&mut s, t0, c, 1..=20);
    let mut log = liveness_lines(&mut s);
    let is_down = |s: &Server| s.client(&id("a")).unwrap().state() == Liveness::Down;
    let (down_at, lines) = run_timers(&mut s, t0, is_down);
    log.extend(liveness(lines));
    (log, down_at - t0.advanced(Duration::from_secs(20)).mono)
}

#[test]
fn every_detector_declares_a_crashed_client_down_within_its_bound() {
    // Steady 1 s heartbeats, then silence. Bounds from each detector's defaults: fixed
    // interval + 2 intervals; phi about 4.5 s (Akka: "around 5.5 s" with jitter); Cassandra's
    // phi = 8 at 18.4 × mean; chen EA + 2α.
    let cases = [
        (DetectorKind::Fixed, Duration::from_secs(3)),
        (DetectorKind::Phi, Duration::from_millis(4600)),
        // 18.4 × the mean, which still holds Cassandra's 2 s bootstrap sample: 19.3 s.
        (DetectorKind::PhiExp, Duration::from_millis(19_500)),
        (DetectorKind::Chen, Duration::from_secs(3)),
    ];
    for (kind, bound) in cases {
        let config = ServerConfig::default().detector(DetectorConfig::new(kind));
        let (log, down_after) = crash_after_20_beats(config);
        assert_eq!(log.len(), 2, "{kind}: {log:?}");
        assert!(
            log[0].contains("up->suspect") && log[1].contains("suspect->down"),
            "{kind}: {log:?}"
        );
        assert!(
            down_after > Duration::from_secs(1) && down_after <= bound,
            "{kind}: down after {down_after:?}"
        );
    }
}

/// A server whose clients are configured by a QoS target: detection within `td_ms`, a mistake
/// at most every `tmr`.
fn with_target(td_ms: u64, tmr: Duration) -> ServerConfig {
    let target = crate::detector::QosTarget::new(Duration::from_millis(td_ms), tmr, None).unwrap();
    ServerConfig::default().qos_target(Some(target))
}

/// [`crash_after_20_beats`], keeping the `target` events with the transitions.
fn crash_under_target(config: ServerConfig) -> (Vec<String>, Duration) {
    let keep = |lines: Vec<String>| {
        lines
            .into_iter()
            .filter(|l| l.contains("transition") || l.starts_with("ev target"))
            .collect::<Vec<_>>()
    };
    let (t0, mut s, c) = opened_with(config, b"HELLO 1 a 1000\n");
    // Stamped as sent (no delay): the delay variance a target measures stays at its prior.
    for i in 1..=20u64 {
        let now = t0.advanced(Duration::from_secs(i));
        s.handle_timeout(now);
        s.handle_input(
            now,
            c,
            format!("BEAT {i} {}\n", 1_700_000_000 + i).as_bytes(),
        );
    }
    let mut log = keep(drain(&mut s));
    let is_down = |s: &Server| s.client(&id("a")).unwrap().state() == Liveness::Down;
    let (down_at, lines) = run_timers(&mut s, t0, is_down);
    log.extend(keep(lines));
    (log, down_at - t0.advanced(Duration::from_secs(20)).mono)
}

/// A 1 s client under a target of 2.5 s and a mistake an hour at most: with the priors (1%
/// loss, (10 ms)² shrinking) f(1 s) = 1 · (1.5²/(V + p·1.5²)) · (0.5²/(V + p·0.5²)) ≈ 10⁴ s
/// ≥ 3600 s, reachable, α = 1.5 s: down 2.5 s after the last heartbeat, where chen's default
/// (2α, α = one interval) says 3 s. Reported once.
#[test]
fn a_reachable_qos_target_sets_the_margin_and_keeps_its_detection_time() {
    let (log, down_after) = crash_under_target(with_target(2500, Duration::from_secs(3600)));
    let targets: Vec<_> = log.iter().filter(|l| l.starts_with("ev target")).collect();
    assert_eq!(targets.len(), 1, "{log:?}");
    assert!(
        targets[0].starts_with(
            "ev target client=a detection=2500.000ms mistake_every=3600000.000ms reachable=true \
             interval=1000.000ms advised=- alpha=1500.000ms"
        ),
        "{targets:?}"
    );
    assert_eq!(down_after, Duration::from_millis(2500), "{log:?}");
}

/// The same client under a mistake every 30 days at most: f(1 s) ≈ 10⁴ s is far short, so it
/// is unreachable (once, not at every heartbeat). Below 750 ms f has a fourth factor, for
/// t = 3 s − 4η: at 746 ms, t = 16 ms and the factor is (V + t²)/(V + p·t²) ≈ 3.7 with the
/// priors (V ≈ 9.1·10⁻⁵ s², p ≈ 0.01), which with the three of about 100 makes
/// f ≈ 2.7·10⁶ s ≥ 30 d: the advice is 746 ms. The detection time is kept (α = 2 s).
#[test]
fn an_unreachable_qos_target_is_reported_once_with_advice() {
    let (log, down_after) = crash_under_target(with_target(3000, Duration::from_secs(30 * 86_400)));
    let targets: Vec<_> = log.iter().filter(|l| l.starts_with("ev target")).collect();
    assert_eq!(targets.len(), 1, "{log:?}");
    assert!(
        targets[0].starts_with(
            "ev target client=a detection=3000.000ms mistake_every=2592000000.000ms \
             reachable=false interval=1000.000ms advised=746.000ms alpha=2000.000ms"
        ),
        "{targets:?}"
    );
    assert_eq!(down_after, Duration::from_millis(3000), "{log:?}");
    let (t0, mut s, c) = opened_with(
        with_target(3000, Duration::from_secs(30 * 86_400)),
        b"HELLO 1 a 1000\n",
    );
    beat_every_second(&mut s, t0, c, 1..=3);
    let view = s.client(&id("a")).unwrap();
    let configured = view.target().unwrap();
    assert!(!configured.reachable);
    assert!(view.loss_estimate().unwrap() > 0.009 && view.delay_variance().unwrap() > 0.0);
}

#[test]
fn a_heartbeat_brings_a_down_client_back_up() {
    let (t0, mut s, _) = opened(b"HELLO 1 a 1000\nBEAT 1 1700000000\n");
    let _ = run_timers(&mut s, t0, |_| false);
    assert_eq!(s.client(&id("a")).unwrap().state(), Liveness::Down);
    assert_eq!(
        s.connection_count(),
        0,
        "the idle connection was dropped too"
    );
    let late = t0.advanced(Duration::from_secs(60));
    open(&mut s, late, 2, b"HELLO 1 a 1000\nBEAT 61 1700000060\n");
    let lines = liveness_lines(&mut s);
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with("ev transition client=a down->up since_last=60000.000ms"),
        "{lines:?}"
    );
    assert_eq!(s.client(&id("a")).unwrap().state(), Liveness::Up);
}

#[test]
fn goodbye_is_left_not_down() {
    let (t0, mut s, c) = opened(b"HELLO 1 a 1000\nBEAT 1 1700000000\nBYE\n");
    s.handle_eof(t0, c);
    let lines = liveness_lines(&mut s);
    assert_eq!(
        lines,
        ["ev transition client=a up->left since_last=0.000ms phi=0.000"]
    );
    assert_eq!(
        s.poll_timeout(),
        Some(t0.mono + ServerConfig::default().forget_after_value()),
        "a client that left is not watched: the only timer left is when to forget it"
    );
    assert_eq!(s.report().clients[0].state, Liveness::Left);
}

#[test]
fn a_stalled_server_convicts_nobody_on_that_evidence() {
    let (t0, mut s, c) = opened(b"HELLO 1 a 1000\n");
    beat_every_second(&mut s, t0, c, 1..=5);
    let _ = drain(&mut s);
    // The server process is suspended from t=5 s to t=30 s; the client kept sending, and its
    // heartbeats wait in the socket buffer.
    let woke = t0.advanced(Duration::from_secs(30));
    s.handle_timeout(woke);
    let lines = drain(&mut s);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("ev stalled: the server ran"),
        "{lines:?}"
    );
    assert_eq!(s.client(&id("a")).unwrap().state(), Liveness::Up);
    assert_eq!(s.connection_count(), 1);
    // The driver then reads what arrived meanwhile.
    let mut burst = String::new();
    for i in 6..=30u64 {
        burst.push_str(&format!("BEAT {i} 1700000000\n"));
    }
    s.handle_input(woke, c, burst.as_bytes());
    s.handle_timeout(woke.advanced(Duration::from_secs(1)));
    assert!(liveness_lines(&mut s).is_empty());
    assert_eq!(s.client(&id("a")).unwrap().state(), Liveness::Up);
}

/// Runs each timer due within `secs` seconds after `t0` on time, telling the core that input
/// has waited `unread` on another of the driver's threads; the output lines.
fn timers_with_unread(s: &mut Server, t0: Now, secs: u64, unread: Option<Duration>) -> Vec<String> {
    let until = t0.mono + Duration::from_secs(secs);
    let mut log = Vec::new();
    while let Some(at) = s.poll_timeout().filter(|&at| at <= until) {
        s.handle_timeout_with_unread(Now { mono: at, ..t0 }, unread);
        log.extend(drain(s));
    }
    log
}

#[test]
fn input_unread_on_another_thread_past_the_pause_guard_convicts_nobody() {
    // The client's heartbeats stop reaching the core at t=5 s: the thread that reads its
    // connection stopped taking turns (its heartbeats wait in the socket buffer), while the
    // thread with the timers runs on time.
    let (t0, mut s, c) = opened(b"HELLO 1 a 1000\n");
    beat_every_second(&mut s, t0, c, 1..=5);
    let _ = drain(&mut s);
    let lines = timers_with_unread(&mut s, t0, 30, Some(Duration::from_secs(6)));
    assert!(!lines.is_empty());
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("ev stalled: the server ran 6000.000ms late")),
        "{lines:?}"
    );
    assert_eq!(s.client(&id("a")).unwrap().state(), Liveness::Up);
    assert_eq!(s.connection_count(), 1);

    // Unread for less than the pause guard (5 s by default): judged as ever.
    let (t0, mut s, c) = opened(b"HELLO 1 a 1000\n");
    beat_every_second(&mut s, t0, c, 1..=5);
    let _ = drain(&mut s);
    let lines = liveness(timers_with_unread(
        &mut s,
        t0,
        30,
        Some(Duration::from_secs(4)),
    ));
    assert!(lines.iter().any(|l| l.contains("->down")), "{lines:?}");
    assert!(!lines.iter().any(|l| l.contains("stalled")), "{lines:?}");
}

#[test]
fn the_client_limit_evicts_the_longest_silent_disconnected_client() {
    let t0 = Now::test_origin();
    let mut s = Server::new(Arc::new(ServerConfig::default().max_clients(2)));
    let mut at = t0;
    for (i, name) in ["old", "mid"].iter().enumerate() {
        at = at.advanced(Duration::from_secs(1));
        let c = s.accept(at, peer(i as u16));
        s.handle_input(
            at,
            c,
            format!("HELLO 1 {name} 1000\nBEAT 1 1700000000\n").as_bytes(),
        );
        s.handle_eof(at, c);
    }
    let _ = drain(&mut s);
    // A connected client is never evicted: "live" keeps its connection.
    open(&mut s, at, 9, b"HELLO 1 live 1000\n");
    assert_has(
        &drain(&mut s),
        "ev evicted client=old (client limit reached)",
    );
    open(&mut s, at, 10, b"HELLO 1 extra 1000\n");
    assert_has(
        &drain(&mut s),
        "ev evicted client=mid (client limit reached)",
    );
    open(&mut s, at, 11, b"HELLO 1 fourth 1000\nBEAT 1 1700000000\n");
    let names: Vec<String> = s
        .report()
        .clients
        .iter()
        .map(|c| c.client.to_string())
        .collect();
    assert_eq!(
        names,
        ["extra", "fourth", "live"],
        "all connected: the limit bends instead"
    );
}

#[test]
fn a_client_gone_for_the_forget_after_is_forgotten_and_its_slot_reused() {
    let t0 = Now::test_origin();
    let hour = Duration::from_secs(3600);
    let config = ServerConfig::default().forget_after(hour).unwrap();
    let mut s = Server::new(Arc::new(config));
    let gone = open(&mut s, t0, 1, b"HELLO 1 gone 1000\nBEAT 1 1700000000\n");
    let back = open(&mut s, t0, 2, b"HELLO 1 back 1000\nBEAT 1 1700000000\n");
    let stays = open(&mut s, t0, 3, b"HELLO 1 stays 60000\nBEAT 1 1700000000\n");
    let t1 = t0.advanced(Duration::from_secs(1));
    s.handle_eof(t1, gone);
    s.handle_eof(t1, back);
    let _ = drain(&mut s);
    // "back" returns half an hour later and leaves again: it is gone from then on.
    let t2 = t1.advanced(hour / 2);
    let back = open(&mut s, t2, 4, b"HELLO 1 back 1000\nBEAT 1800 1700001800\n");
    s.handle_eof(t2, back);
    // "stays" stays connected: a heartbeat a minute, as it declared.
    let mut forgotten = Vec::new();
    let mut now = t1;
    for minute in 1..=120u64 {
        now = t1.advanced(Duration::from_secs(60 * minute));
        advance_to(&mut s, now);
        let beat = format!("BEAT {} 1700000000\n", 1 + minute);
        s.handle_input(now, stays, beat.as_bytes());
        forgotten.extend(
            drain(&mut s)
                .into_iter()
                .filter(|l| l.contains("forgotten")),
        );
        if minute == 60 {
            assert_eq!(
                forgotten,
                ["ev forgotten client=gone gone_for=3600000.000ms"]
            );
            assert!(s.client(&id("gone")).is_none(), "not in reports any more");
            assert!(
                s.client(&id("back")).is_some(),
                "back was gone for half an hour only"
            );
        }
    }
    assert_eq!(
        forgotten,
        [
            "ev forgotten client=gone gone_for=3600000.000ms",
            "ev forgotten client=back gone_for=3600000.000ms"
        ]
    );
    assert_eq!(s.client_count(), 1, "a connected client is never forgotten");
    assert_eq!(s.stats().clients_forgotten, 2);
    // A forgotten client that comes back is a new client, in a reused slot.
    let slots = s.clients.len();
    open(&mut s, now, 5, b"HELLO 1 gone 1000\nBEAT 1 1700000000\n");
    assert_eq!(s.clients.len(), slots, "the slot was reused");
    let again = s.client(&id("gone")).unwrap();
    assert_eq!((again.received(), again.connections()), (1, 1));
    assert_eq!(again.state(), Liveness::Up);
}

#[test]
fn the_server_counts_refusals_by_kind_and_delays_in_buckets() {
    let (t0, mut s, _) = opened(b"HELLO 1 a 1000\nBEAT 1 1700000000\n");
    // A 3 ms delay, then garbage on two more connections and a flood on a third.
    let t1 = t0.advanced(Duration::from_secs(1));
    let c = s.client(&id("a")).unwrap();
    assert_eq!(c.connections(), 1);
    assert!(c.is_connected());
    assert_eq!(c.last_seen(), Some(t0.unix));
    assert!(c.suspicion(t1.mono).is_some_and(|x| x >= 0.0));
    open(&mut s, t1, 2, b"\x00\x01garbage\n");
    open(&mut s, t1, 3, b"HELLO 1 b 1000\nBEAT x 1\n");
    let mut flood = String::from("HELLO 1 c 10\n");
    for seq in 1..=20 {
        flood.push_str(&format!("BEAT {seq} 1700000001\n"));
    }
    open(&mut s, t1, 4, flood.as_bytes());
    let _ = drain(&mut s);
    let stats = s.stats();
    assert_eq!(stats.connections_accepted, 4);
    let rejected: Vec<_> = stats
        .frames_rejected
        .iter()
        .map(|(k, n)| (*k, *n))
        .collect();
    assert_eq!(
        rejected,
        [("invalid_seq", 1), ("too_fast", 1), ("unknown_protocol", 1)]
    );
    assert_eq!(stats.disconnects.get("protocol"), Some(&3));
    // Every heartbeat counted is in the histogram: 1 from a, 9 from c before its flood broke
    // the pace (one per interval since accept, plus 8).
    assert_eq!(
        stats.delay.count,
        s.report().clients.iter().map(|c| c.received).sum::<u64>()
    );
    assert_eq!(stats.delay.buckets.iter().sum::<u64>(), stats.delay.count);
}

/// One instance of every event variant with its exact JSON line and text line: any change to
/// either rendering must show up here first.
#[test]
fn every_event_renders_as_pinned() {
    use crate::detector::DetectorKind;
    let ms = Duration::from_millis;
    let at = |nanos| UnixTime::from_nanos(nanos);
    let legacy = ClientKey::Peer(peer(4001));
    let cases = [
        (
            Event::Burst {
                conn: ConnId(3),
                client: id("a"),
                first: Seq(4),
                last: Seq(9),
                count: 6,
                silence: Some(Duration::from_micros(6_000_123_456)),
            },
            "burst client=a seq=4-9 count=6 after_silence=6000123.456ms",
            r#"{"client":"a","conn":3,"count":6,"event":"burst","first":4,"last":9,"silence_ms":6000123.456}"#,
        ),
        (
            Event::Burst {
                conn: ConnId(3),
                client: id("a"),
                first: Seq(1),
                last: Seq(2),
                count: 2,
                silence: None,
            },
            "burst client=a seq=1-2 count=2 after_silence=-",
            r#"{"client":"a","conn":3,"count":2,"event":"burst","first":1,"last":2,"silence_ms":null}"#,
        ),
        (
            Event::ClockSkew {
                conn: ConnId(3),
                client: id("a"),
                offset_ns: -3_599_994_123_456,
                skewed: true,
            },
            "clock_skew client=a offset=-3599994.123ms (skewed)",
            r#"{"client":"a","conn":3,"event":"clock_skew","offset_ms":-3599994.123,"skewed":true}"#,
        ),
        (
            Event::Disconnected {
                conn: ConnId(6),
                client: Some(id("a")),
                peer: peer(4000),
                reason: DisconnectReason::NotReadingAcks,
            },
            "disconnected conn#6 client=a reason=not reading acknowledgements",
            r#"{"client":"a","conn":6,"event":"disconnected","peer":"127.0.0.1:4000","reason":"not reading acknowledgements"}"#,
        ),
        (
            Event::Disconnected {
                conn: ConnId(7),
                client: Some(id("a")),
                peer: peer(4000),
                reason: DisconnectReason::Protocol(DecodeError::Violation(Violation::SeqAhead {
                    seq: Seq(1 << 63),
                    max: Seq(17),
                })),
            },
            "disconnected conn#7 client=a reason=protocol error: sequence number 9223372036854775808 is ahead of the schedule (at most 17 by now)",
            r#"{"client":"a","conn":7,"event":"disconnected","peer":"127.0.0.1:4000","reason":"protocol error: sequence number 9223372036854775808 is ahead of the schedule (at most 17 by now)"}"#,
        ),
        (
            Event::Connected {
                conn: ConnId(3),
                client: id("a"),
                peer: peer(4000),
                protocol: Protocol::V1,
                interval: Some(ms(1000)),
                resumed: true,
            },
            "connected conn#3 client=a peer=127.0.0.1:4000 protocol=v1 interval=1000.000ms resumed=true",
            r#"{"client":"a","conn":3,"event":"connected","interval_ms":1000.0,"peer":"127.0.0.1:4000","protocol":"v1","resumed":true}"#,
        ),
        (
            Event::Connected {
                conn: ConnId(4),
                client: legacy.clone(),
                peer: peer(4001),
                protocol: Protocol::Legacy,
                interval: None,
                resumed: false,
            },
            "connected conn#4 client=legacy@127.0.0.1:4001 peer=127.0.0.1:4001 protocol=legacy interval=- resumed=false",
            r#"{"client":"legacy@127.0.0.1:4001","conn":4,"event":"connected","interval_ms":null,"peer":"127.0.0.1:4001","protocol":"legacy","resumed":false}"#,
        ),
        (
            Event::Disconnected {
                conn: ConnId(3),
                client: Some(id("a")),
                peer: peer(4000),
                reason: DisconnectReason::IdleTimeout(ms(10_000)),
            },
            "disconnected conn#3 client=a reason=no data for 10s",
            r#"{"client":"a","conn":3,"event":"disconnected","peer":"127.0.0.1:4000","reason":"no data for 10s"}"#,
        ),
        (
            Event::Disconnected {
                conn: ConnId(5),
                client: None,
                peer: "[::1]:4002".parse().unwrap(),
                reason: DisconnectReason::Protocol(DecodeError::Seq("x\"y".into())),
            },
            "disconnected conn#5 client=- reason=protocol error: invalid sequence number \"x\\\"y\"",
            r#"{"client":null,"conn":5,"event":"disconnected","peer":"[::1]:4002","reason":"protocol error: invalid sequence number \"x\\\"y\""}"#,
        ),
        (
            Event::Duplicate {
                conn: ConnId(3),
                client: id("a"),
                seq: Seq(7),
            },
            "duplicate client=a seq=7",
            r#"{"client":"a","conn":3,"event":"duplicate","seq":7}"#,
        ),
        (
            Event::Evicted {
                client: legacy.clone(),
            },
            "evicted client=legacy@127.0.0.1:4001 (client limit reached)",
            r#"{"client":"legacy@127.0.0.1:4001","event":"evicted"}"#,
        ),
        (
            Event::Heartbeat {
                conn: ConnId(3),
                client: id("a"),
                seq: Seq(12),
                sent: at(1_700_000_000_123_456_789),
                received: at(1_700_000_000_125_000_000),
                delay_ns: 1_543_211,
                inter_arrival: Some(Duration::from_nanos(999_999_500)),
                recovered: false,
            },
            "heartbeat client=a seq=12 delay=1.543ms gap=999.999ms",
            r#"{"client":"a","conn":3,"delay_ms":1.543,"event":"heartbeat","inter_arrival_ms":1000.0,"received":"1700000000.125000","recovered":false,"sent":"1700000000.123456","seq":12}"#,
        ),
        (
            Event::Heartbeat {
                conn: ConnId(3),
                client: id("a"),
                seq: Seq(1),
                sent: at(1_700_000_001_000_000_000),
                received: at(1_700_000_000_999_000_000),
                delay_ns: -1_000_000,
                inter_arrival: None,
                recovered: true,
            },
            "heartbeat client=a seq=1 delay=-1.000ms gap=- recovered",
            r#"{"client":"a","conn":3,"delay_ms":-1.0,"event":"heartbeat","inter_arrival_ms":null,"received":"1700000000.999000","recovered":true,"sent":"1700000001.000000","seq":1}"#,
        ),
        (
            Event::Missed {
                conn: ConnId(3),
                client: id("a"),
                range: SeqRange {
                    first: Seq(5),
                    last: Seq(9),
                },
            },
            "missed client=a seq=5-9 count=5",
            r#"{"client":"a","conn":3,"count":5,"event":"missed","first":5,"last":9,"range":"5-9"}"#,
        ),
        (
            Event::Missed {
                conn: ConnId(3),
                client: id("a"),
                range: SeqRange {
                    first: Seq(5),
                    last: Seq(5),
                },
            },
            "missed client=a seq=5 count=1",
            r#"{"client":"a","conn":3,"count":1,"event":"missed","first":5,"last":5,"range":"5"}"#,
        ),
        (
            Event::Restarted {
                conn: ConnId(3),
                client: id("a"),
                previous: Seq(40),
                seq: None,
            },
            "restarted client=a previous=40",
            r#"{"client":"a","conn":3,"event":"restarted","previous":40,"seq":null}"#,
        ),
        (
            Event::Restarted {
                conn: ConnId(3),
                client: id("a"),
                previous: Seq(40),
                seq: Some(Seq(1)),
            },
            "restarted client=a previous=40 seq=1",
            r#"{"client":"a","conn":3,"event":"restarted","previous":40,"seq":1}"#,
        ),
        (
            Event::Stalled {
                late: Duration::from_nanos(25_000_000_499),
            },
            "stalled: the server ran 25000.000ms late; no client convicted on that evidence",
            r#"{"event":"stalled","late_ms":25000.0}"#,
        ),
        (
            Event::Transition {
                client: id("a"),
                peer: Some("192.0.2.7:4000".parse().unwrap()),
                from: Liveness::Up,
                to: Liveness::Suspect,
                since_last: Some(Duration::from_nanos(4_909_527_300)),
                suspicion: 4.000_49,
                detector: DetectorKind::Phi,
            },
            "transition client=a up->suspect since_last=4909.527ms phi=4.000",
            r#"{"client":"a","detector":"phi","event":"transition","from":"up","peer":"192.0.2.7:4000","since_last_ms":4909.527,"suspicion":4.0,"to":"suspect"}"#,
        ),
        (
            Event::Transition {
                client: id("a"),
                peer: None,
                from: Liveness::Suspect,
                to: Liveness::Down,
                since_last: None,
                suspicion: f64::INFINITY,
                detector: DetectorKind::PhiExp,
            },
            "transition client=a suspect->down since_last=- phi-exp=179769313486231570814527423731704356798070567525844996598917476803157260780028538760589558632766878171540458953514382464234321326889464182768467546703537516986049910576551282076245490090389328944075868508455133942304583236903222948165808559332123348274797826204144723168738177180919299881250404026184124858368.000",
            r#"{"client":"a","detector":"phi-exp","event":"transition","from":"suspect","peer":null,"since_last_ms":null,"suspicion":1.7976931348623157e+308,"to":"down"}"#,
        ),
        (
            Event::Forgotten {
                client: legacy.clone(),
                gone_for: Duration::from_secs(86_400),
                requested: false,
            },
            "forgotten client=legacy@127.0.0.1:4001 gone_for=86400000.000ms",
            r#"{"client":"legacy@127.0.0.1:4001","event":"forgotten","gone_for_ms":86400000.0}"#,
        ),
        (
            Event::Transition {
                client: id("a"),
                peer: None,
                from: Liveness::Down,
                to: Liveness::Left,
                since_last: Some(ms(0)),
                suspicion: 0.0,
                detector: DetectorKind::Chen,
            },
            "transition client=a down->left since_last=0.000ms chen=0.000",
            r#"{"client":"a","detector":"chen","event":"transition","from":"down","peer":null,"since_last_ms":0.0,"suspicion":0.0,"to":"left"}"#,
        ),
    ];
    let mut names = std::collections::BTreeSet::new();
    for (event, text, json) in &cases {
        names.insert(event.name());
        assert_eq!(event.to_json()["event"], event.name());
        assert_eq!(event.to_string(), *text);
        assert_eq!(event.to_json().to_string(), *json, "{text}");
    }
    assert_eq!(names.len(), 12, "one case at least per variant: {names:?}");
}

// ---- limits and plausibility ----

/// The disconnect line of `lines`, if any.
fn disconnect_of(lines: &[String]) -> Option<&str> {
    lines
        .iter()
        .find(|l| l.contains(" disconnect "))
        .map(String::as_str)
}

#[test]
fn a_hello_below_the_minimum_interval_is_refused_with_error() {
    let (_, mut s, _) = opened(b"HELLO 1 x 1\nBEAT 1 1700000000\n");
    let out = drain(&mut s);
    assert_eq!(
        out,
        [
            "conn#1 tx ERROR interval 1ms is below the server's minimum of 10ms",
            "ev disconnected conn#1 client=- reason=protocol error: interval 1ms is below the server's minimum of 10ms",
            "conn#1 disconnect protocol error: interval 1ms is below the server's minimum of 10ms",
        ]
    );
    assert_eq!(
        s.client_count(),
        0,
        "a refused HELLO leaves no client behind"
    );
}

#[test]
fn a_connection_faster_than_its_interval_is_dropped_and_others_carry_on() {
    let (t0, mut s, honest) = opened(b"HELLO 1 honest 20\n");
    let flood = open(&mut s, t0, 2, b"HELLO 1 flood 10\n");
    let _ = drain(&mut s);
    let mut bytes = Vec::new();
    for i in 1..=50u64 {
        bytes.extend(format!("BEAT {i} 1700000000\n").bytes());
    }
    let at = t0.advanced(Duration::from_millis(20));
    s.handle_input(at, flood, &bytes);
    s.handle_input(at, honest, b"BEAT 1 1700000000\n");
    let out = drain(&mut s);
    // Two slots in 20 ms plus the slack: the 11th heartbeat is one too many, and it and the
    // rest are not counted.
    assert_eq!(
        disconnect_of(&out),
        Some("conn#2 disconnect protocol error: 11 heartbeats in 20ms is faster than one per 10ms")
    );
    assert_has(
        &out,
        "conn#2 tx ERROR 11 heartbeats in 20ms is faster than one per 10ms",
    );
    assert_eq!(s.client(&id("flood")).unwrap().received(), 10);
    assert_eq!(s.client(&id("honest")).unwrap().received(), 1);
    assert_eq!(s.connection_count(), 1);
}

#[test]
fn a_released_burst_of_old_heartbeats_is_not_a_flood() {
    // The firewall case: 30 heartbeats held for 3 s, then delivered at once.
    let (t0, mut s, c) = opened(b"HELLO 1 a 100\nBEAT 1 1700000000\n");
    let mut held = Vec::new();
    for i in 2..=31u64 {
        held.extend(format!("BEAT {i} 1700000000.{:03}\n", (i - 1) * 100 % 1000).bytes());
    }
    s.handle_input(t0.advanced(Duration::from_secs(3)), c, &held);
    let out = drain(&mut s);
    assert_eq!(disconnect_of(&out), None, "{out:?}");
    let a = s.client(&id("a")).unwrap();
    assert_eq!((a.received(), a.missed(), a.bursts()), (31, 0, 1));
}

#[test]
fn a_sequence_jump_beyond_the_elapsed_time_is_refused_and_counts_nothing() {
    let (t0, mut s, c) = opened(b"HELLO 1 a 1000\nBEAT 1 1700000000\nBEAT 2 1700000000\n");
    let _ = drain(&mut s);
    let at = t0.advanced(Duration::from_secs(1));
    s.handle_input(at, c, b"BEAT 9223372036854775808 1700000001\n");
    let out = drain(&mut s);
    assert_eq!(
        disconnect_of(&out),
        Some(
            "conn#1 disconnect protocol error: sequence number 9223372036854775808 is ahead of \
             the schedule (at most 7 by now)"
        )
    );
    let a = s.client(&id("a")).unwrap();
    assert_eq!(
        (a.received(), a.missed(), a.highest()),
        (2, 0, Some(Seq(2)))
    );
    // A reconnect that jumps as far as the outage allows is a gap, counted once.
    let later = t0.advanced(Duration::from_secs(10));
    open(&mut s, later, 2, b"HELLO 1 a 1000\nBEAT 11 1700000010\n");
    let out = drain(&mut s);
    assert_has(&out, "ev missed client=a seq=3-10 count=8");
    assert_eq!(disconnect_of(&out), None);
}

#[test]
fn a_first_sequence_number_from_before_1970_is_refused() {
    let (_, mut s, _) = opened(b"HELLO 1 a 10\nBEAT 9223372036854775808 1700000000\n");
    let out = drain(&mut s);
    assert!(
        disconnect_of(&out).is_some_and(|l| l.contains("is ahead of the schedule")),
        "{out:?}"
    );
    assert_eq!(s.client(&id("a")).unwrap().missed(), 0);
}

#[test]
fn timestamps_a_day_off_are_refused_and_an_hour_off_is_skew_not_delay() {
    for stamp in ["0", "7258118400"] {
        let (_, mut s, _) = opened(format!("HELLO 1 a 1000\nBEAT 1 {stamp}\n").as_bytes());
        let out = drain(&mut s);
        assert!(
            disconnect_of(&out)
                .is_some_and(|l| l.contains("timestamp") && l.contains("is implausible")),
            "{out:?}"
        );
        assert_eq!(s.client(&id("a")).unwrap().received(), 0);
    }
    // A client one hour ahead: reported once as skew; its delays are what the network added.
    let (t0, mut s, c) = opened(b"HELLO 1 ahead 1000\nBEAT 1 1700003600.000\n");
    beat_every_second_stamped(&mut s, t0, c, 2..=20, 3_600_000, 5);
    let out = drain(&mut s);
    let skews: Vec<_> = out.iter().filter(|l| l.contains("clock_skew")).collect();
    assert_eq!(
        skews,
        ["ev clock_skew client=ahead offset=3600000.000ms (skewed)"]
    );
    let report = s.report();
    let d = report.clients[0].delay_ms.unwrap();
    assert!(d.min_ms >= 0.0 && d.max_ms <= 5.0, "{d:?}");
    assert_eq!(report.clients[0].clock_offset_ms, Some(3_600_000.0));
    assert_eq!(report.clients[0].negative_delays, 0);
}

#[test]
fn a_client_in_sync_is_never_reported_skewed() {
    let (t0, mut s, c) = opened(b"HELLO 1 a 1000\nBEAT 1 1700000000\n");
    beat_every_second_stamped(&mut s, t0, c, 2..=40, 0, 3);
    let out = drain(&mut s);
    assert!(!out.iter().any(|l| l.contains("clock_skew")), "{out:?}");
    assert_eq!(s.report().clients[0].clock_offset_ms, None);
}

/// Sends `BEAT i` on `conn` at `t0 + i` seconds for each `i` in `seqs`, stamped with the
/// server's clock plus `ahead_ms`, minus a delay of `i % (max_delay_ms + 1)` ms.
fn beat_every_second_stamped(
    s: &mut Server,
    t0: Now,
    conn: ConnId,
    seqs: RangeInclusive<u64>,
    ahead_ms: u64,
    max_delay_ms: u64,
) {
    for i in seqs {
        let now = t0.advanced(Duration::from_secs(i - 1));
        let sent = now
            .unix
            .saturating_add(Duration::from_millis(ahead_ms))
            .as_nanos()
            - Duration::from_millis(i % (max_delay_ms + 1)).as_nanos() as u64;
        s.handle_timeout(now);
        let line = format!("BEAT {i} {}\n", UnixTime::from_nanos(sent));
        s.handle_input(now, conn, line.as_bytes());
    }
}

#[test]
fn a_peer_that_stops_reading_is_dropped_for_that() {
    let (t0, mut s, c) = opened(b"HELLO 1 a 1000\nBEAT 1 1700000000\n");
    let _ = drain(&mut s);
    s.handle_write_blocked(t0, c);
    assert_eq!(
        drain(&mut s),
        [
            "ev disconnected conn#1 client=a reason=not reading acknowledgements",
            "conn#1 disconnect not reading acknowledgements",
        ]
    );
    s.handle_write_blocked(t0, c);
    assert_eq!(drain(&mut s), Vec::<String>::new(), "once");
}

#[test]
fn a_day_long_interval_holds_a_connection_for_max_idle_only() {
    let (t0, mut s, _) = opened(b"HELLO 1 slow 86400000\nBEAT 1 1700000000\n");
    let _ = drain(&mut s);
    let (_, log) = run_timers(&mut s, t0, |s| s.connection_count() == 0);
    assert_has(&log, "conn#1 disconnect no data for 600s");
}

// ---- expected clients, flap control, reloaded keys, event times ----

fn expected(name: &str, interval_ms: u64, grace: Option<Duration>) -> Expected {
    Expected {
        client: ClientId::new(name).unwrap(),
        interval: Duration::from_millis(interval_ms),
        grace,
    }
}

fn fixed_config() -> ServerConfig {
    ServerConfig::default().detector(crate::DetectorConfig::new(crate::DetectorKind::Fixed))
}

fn ids(v: &[ClientId]) -> Vec<&str> {
    v.iter().map(ClientId::as_str).collect()
}

/// An expected client never heard from is `unknown`, then `down` ("never seen", from
/// `unknown`) exactly when the detector's grace for its interval ends: the fixed detector
/// needs 3 s for a 1 s client. One heard from in time is up without a transition.
#[test]
fn an_expected_client_never_heard_from_is_down_when_its_grace_ends() {
    let t0 = Now::test_origin();
    let mut s = Server::new(Arc::new(fixed_config()));
    let changes = s.set_expected(
        t0,
        &[
            expected("web-01", 1000, None),
            expected("web-02", 1000, None),
        ],
    );
    assert_eq!(ids(&changes.added), ["web-01", "web-02"]);
    let state = |s: &Server, name| s.client(&id(name)).map(|c| (c.state(), c.is_expected()));
    assert_eq!(state(&s, "web-01"), Some((Liveness::Unknown, true)));
    assert_eq!(
        s.report().clients.len(),
        2,
        "expected clients are in the report"
    );
    // web-02 arrives within its grace: up, and nothing to announce.
    open(
        &mut s,
        t0.advanced(Duration::from_secs(1)),
        1,
        b"HELLO 1 web-02 1000\nBEAT 1 1700000001\n",
    );
    assert_eq!(liveness_lines(&mut s), Vec::<String>::new());
    assert_eq!(state(&s, "web-02"), Some((Liveness::Up, true)));
    let just_before = t0.advanced(Duration::from_secs(3) - Duration::from_nanos(1));
    s.handle_timeout(just_before);
    assert_eq!(liveness_lines(&mut s), Vec::<String>::new());
    s.handle_timeout(t0.advanced(Duration::from_secs(3)));
    let lines: Vec<String> = liveness_lines(&mut s)
        .into_iter()
        .filter(|l| l.contains("web-01"))
        .collect();
    assert_eq!(
        lines,
        ["ev transition client=web-01 unknown->down since_last=- fixed=0.000"]
    );
    let web01 = s.client(&id("web-01")).unwrap();
    assert!(web01.is_never_heard() && web01.state() == Liveness::Down);
    let row = s.report().to_json()["clients"][0].clone();
    assert_eq!(
        (&row["state"], &row["expected"], &row["first_seen"]),
        (
            &serde_json::json!("down"),
            &serde_json::json!(true),
            &serde_json::Value::Null
        )
    );
    // Heard from at last: down -> up. Its first connection is not a reconnect.
    let t5 = t0.advanced(Duration::from_secs(5));
    open(&mut s, t5, 2, b"HELLO 1 web-01 1000\nBEAT 1 1700000005\n");
    let lines = drain(&mut s);
    assert!(lines[0].ends_with("resumed=false"), "{lines:?}");
    assert_eq!(
        liveness(lines),
        ["ev transition client=web-01 down->up since_last=- fixed=0.000"]
    );
}

/// Never seen, through the server, for every detector and with and without flap control: an
/// expected client with the default grace is down exactly when a client of the same interval
/// heard from once at the same instant is, and not a nanosecond earlier.
#[test]
fn never_seen_is_down_with_a_client_heard_once_for_every_detector() {
    let t0 = Now::test_origin();
    for flap in [
        crate::FlapControl::default(),
        crate::FlapControl::new(3, 2).unwrap(),
    ] {
        for kind in crate::DetectorKind::ALL {
            let start = || {
                let config = ServerConfig::default()
                    .detector(crate::DetectorConfig::new(kind))
                    .flap_control(flap);
                let mut s = Server::new(Arc::new(config));
                s.set_expected(t0, &[expected("ghost", 1000, None)]);
                open(&mut s, t0, 1, b"HELLO 1 twin 1000\nBEAT 1 1700000000\n");
                drain(&mut s);
                s
            };
            let mut s = start();
            let down = |s: &Server, name| {
                s.client(&id(name))
                    .is_some_and(|c| c.state() == Liveness::Down)
            };
            let (at, lines) = run_timers(&mut s, t0, |s| down(s, "ghost"));
            assert!(
                down(&s, "ghost") && down(&s, "twin"),
                "{kind} {flap}: {lines:?}"
            );
            let ghost: Vec<&String> = lines.iter().filter(|l| l.contains("ghost")).collect();
            assert_eq!(ghost.len(), 1, "{kind} {flap}: {ghost:?}");
            assert!(
                ghost[0].starts_with("ev transition client=ghost unknown->down since_last=- "),
                "{kind} {flap}: {ghost:?}"
            );
            assert!(at > t0.mono, "{kind} {flap}");
            // The twin was convicted at that same instant, not before. (Every timer before it
            // is run on time: a wake-up later than --pause-guard would defer convictions.)
            let mut s = start();
            while let Some(next) = s.poll_timeout().filter(|&next| next < at) {
                s.handle_timeout(Now {
                    mono: next,
                    unix: t0.unix,
                });
            }
            s.handle_timeout(Now {
                mono: at - Duration::from_nanos(1),
                unix: t0.unix,
            });
            drain(&mut s);
            let states =
                |s: &Server| ["ghost", "twin"].map(|n| s.client(&id(n)).map(|c| c.state()));
            assert_eq!(states(&s)[0], Some(Liveness::Unknown), "{kind} {flap}");
            assert_ne!(states(&s)[1], Some(Liveness::Down), "{kind} {flap}");
            s.handle_timeout(Now {
                mono: at,
                unix: t0.unix,
            });
            assert_eq!(
                states(&s),
                [Some(Liveness::Down), Some(Liveness::Down)],
                "{kind} {flap}"
            );
        }
    }
}

/// A `HELLO` and nothing more is a sign of life followed by silence: for every detector, the
/// client goes suspect and then down at the very instants a client heard once at the `HELLO`
/// would, with nothing received. One whose heartbeats follow is counted from its first one as
/// before: no transition, nothing missed.
#[test]
fn a_hello_with_no_heartbeat_is_suspect_then_down_in_the_detectors_time() {
    let t0 = Now::test_origin();
    for kind in crate::DetectorKind::ALL {
        let config = ServerConfig::default().detector(crate::DetectorConfig::new(kind));
        // The liveness lines until the client is down, each with its instant from t0, and
        // what was received.
        let convictions = |bytes: &[u8]| {
            let mut s = Server::new(Arc::new(config.clone()));
            open(&mut s, t0, 1, bytes);
            drain(&mut s);
            let mut at = Vec::new();
            let horizon = t0.mono + Duration::from_secs(3600);
            while let Some(next) = s.poll_timeout().filter(|&n| n <= horizon) {
                s.handle_timeout(Now {
                    mono: next,
                    unix: t0.unix,
                });
                for l in liveness(drain(&mut s)) {
                    let l = l.split(" since_last").next().unwrap_or_default().to_owned();
                    at.push((next - t0.mono, l));
                }
                if s.client(&id("a")).unwrap().state() == Liveness::Down {
                    break;
                }
            }
            (s.client(&id("a")).unwrap().received(), at)
        };
        let (received, hello_only) = convictions(b"HELLO 1 a 1000\n");
        assert_eq!(received, 0, "{kind}");
        assert_eq!(
            hello_only
                .iter()
                .map(|(_, l)| l.as_str())
                .collect::<Vec<_>>(),
            [
                "ev transition client=a up->suspect",
                "ev transition client=a suspect->down"
            ],
            "{kind}"
        );
        let (_, heard_once) = convictions(b"HELLO 1 a 1000\nBEAT 1 1700000000\n");
        assert_eq!(hello_only, heard_once, "{kind}");
    }

    // Heartbeats that follow the HELLO (the first one late) count as before.
    let (t0, mut s, c) = opened(b"HELLO 1 a 1000\n");
    let late = t0.advanced(Duration::from_millis(1500));
    s.handle_timeout(late);
    s.handle_input(late, c, b"BEAT 1 1700000001.5\n");
    beat_every_second(&mut s, t0.advanced(Duration::from_millis(500)), c, 2..=6);
    let lines = drain(&mut s);
    assert_eq!(liveness(lines.clone()), Vec::<String>::new());
    let a = s.client(&id("a")).unwrap();
    assert_eq!((a.received(), a.missed(), a.state()), (6, 0, Liveness::Up));
}

/// An expected client that says `HELLO` and nothing more was heard from: it is `up` without a
/// word, then suspect and down in the detector's time from the `HELLO` (the fixed detector: 2 s
/// and 3 s), not `unknown` until its grace ends. So is one that said only `HELLO` before a
/// reload put it on the list: a client that connected gets no never-seen watch.
#[test]
fn an_expected_client_that_only_says_hello_is_down_in_the_detectors_time() {
    let t0 = Now::test_origin();
    let mut s = Server::new(Arc::new(fixed_config()));
    let long = Some(Duration::from_secs(60));
    s.set_expected(t0, &[expected("web", 1000, long)]);
    let t1 = t0.advanced(Duration::from_secs(1));
    open(&mut s, t1, 1, b"HELLO 1 web 1000\n");
    open(&mut s, t1, 2, b"HELLO 1 db 1000\n");
    drain(&mut s);
    assert_eq!(s.client(&id("web")).unwrap().state(), Liveness::Up);
    let list = [expected("web", 1000, long), expected("db", 1000, long)];
    s.set_expected(t1, &list);
    let (at, log) = run_timers(&mut s, t1, |s| {
        ["web", "db"].map(|n| s.client(&id(n)).unwrap().state()) == [Liveness::Down; 2]
    });
    assert_eq!(at - t1.mono, Duration::from_secs(3));
    let lines: Vec<String> = liveness(log)
        .iter()
        .map(|l| l.split(" since_last").next().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        lines,
        [
            "ev transition client=web up->suspect",
            "ev transition client=db up->suspect",
            "ev transition client=web suspect->down",
            "ev transition client=db suspect->down",
        ]
    );
}

/// A reload: added clients get their grace from it, clients on both lists keep theirs,
/// removed ones never heard from are forgotten, removed ones connected stay.
#[test]
fn a_new_expect_list_adds_keeps_and_forgets() {
    let t0 = Now::test_origin();
    let mut s = Server::new(Arc::new(fixed_config()));
    let grace = Some(Duration::from_secs(10));
    s.set_expected(
        t0,
        &[
            expected("a", 1000, grace),
            expected("b", 1000, grace),
            expected("c", 1000, grace),
        ],
    );
    // b connects but sends nothing yet; c is heard from.
    let t1 = t0.advanced(Duration::from_secs(1));
    open(&mut s, t1, 1, b"HELLO 1 b 1000\n");
    open(&mut s, t1, 2, b"HELLO 1 c 1000\nBEAT 1 1700000001\n");
    drain(&mut s);
    let t5 = t0.advanced(Duration::from_secs(5));
    let changes = s.set_expected(
        t5,
        &[expected("a", 1000, grace), expected("d", 1000, grace)],
    );
    assert_eq!(ids(&changes.added), ["d"]);
    assert_eq!(ids(&changes.removed), ["b", "c"]);
    assert_eq!(
        ids(&changes.forgotten),
        Vec::<&str>::new(),
        "b is connected, c was heard"
    );
    assert_eq!(
        s.client(&id("b")).map(|c| (c.state(), c.is_expected())),
        Some((Liveness::Up, false))
    );
    // a keeps its grace (t0 + 10 s), d has its own (t5 + 10 s).
    let (last, lines) = run_timers(&mut s, t0, |s| {
        s.client(&id("d"))
            .is_some_and(|c| c.state() == Liveness::Down)
    });
    let never: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("unknown->down"))
        .collect();
    assert_eq!(
        never,
        [
            "ev transition client=a unknown->down since_last=- fixed=0.000",
            "ev transition client=d unknown->down since_last=- fixed=0.000"
        ]
    );
    assert_eq!(last, t5.mono + Duration::from_secs(10));
    // Taken off the list while never heard from and not connected: forgotten, slot reused.
    let later = t0.advanced(Duration::from_secs(30));
    let changes = s.set_expected(later, &[]);
    assert_eq!(ids(&changes.forgotten), ["a", "d"]);
    assert!(s.client(&id("a")).is_none());
    let (count, slots) = (s.client_count(), s.clients.len());
    s.set_expected(later, &[expected("e", 1000, grace)]);
    assert_eq!(
        (s.client_count(), s.clients.len()),
        (count + 1, slots),
        "a forgotten slot is reused"
    );
}

/// `--forget-after` does not forget a client while it is expected (it stays, down, in reports
/// and metrics); taken off the list, it is forgotten at the forget-after as any gone client
/// (at once when that has passed).
#[test]
fn expected_clients_are_not_forgotten_until_taken_off_the_list() {
    let t0 = Now::test_origin();
    let minute = Duration::from_secs(60);
    let config = fixed_config().forget_after(minute).unwrap();
    let mut s = Server::new(Arc::new(config));
    s.set_expected(t0, &[expected("a", 1000, None), expected("b", 1000, None)]);
    let a = open(&mut s, t0, 1, b"HELLO 1 a 1000\nBEAT 1 1700000000\n");
    let b = open(&mut s, t0, 2, b"HELLO 1 b 1000\nBEAT 1 1700000000\n");
    let t1 = t0.advanced(Duration::from_secs(1));
    s.handle_eof(t1, a);
    s.handle_eof(t1, b);
    drain(&mut s);
    let forgotten = |s: &mut Server| -> Vec<String> {
        drain(s)
            .into_iter()
            .filter(|l| l.contains("forgotten"))
            .collect()
    };
    advance_to(&mut s, t1.advanced(10 * minute));
    assert_eq!(forgotten(&mut s), Vec::<String>::new());
    assert_eq!(s.client(&id("a")).map(|c| c.state()), Some(Liveness::Down));
    // a is taken off the list long after its forget-after: forgotten at once; b is kept.
    let t2 = t1.advanced(11 * minute);
    s.set_expected(t2, &[expected("b", 1000, None)]);
    advance_to(&mut s, t2);
    assert_eq!(forgotten(&mut s).len(), 1);
    assert!(s.client(&id("a")).is_none());
    assert!(s.client(&id("b")).is_some());
}

/// Expected clients are never evicted to make room, even never heard from.
#[test]
fn expected_clients_are_not_evicted() {
    let t0 = Now::test_origin();
    let mut s = Server::new(Arc::new(fixed_config().max_clients(2)));
    s.set_expected(t0, &[expected("x", 1000, None)]);
    for (port, name) in [(1, "p"), (2, "q"), (3, "r")] {
        let c = open(
            &mut s,
            t0,
            port,
            format!("HELLO 1 {name} 1000\nBEAT 1 1700000000\n").as_bytes(),
        );
        s.close(t0, c);
    }
    assert!(s.client(&id("x")).is_some());
    assert!(
        drain(&mut s)
            .iter()
            .any(|l| l == "ev evicted client=p (client limit reached)")
    );
}

/// Flap control through the server's configuration: down two periods after the detector said
/// so, up at the second arrival.
#[test]
fn flap_control_from_the_server_config() {
    let flap = crate::FlapControl::new(3, 2).unwrap();
    let (t0, mut s, c) = opened_with(
        fixed_config().flap_control(flap),
        b"HELLO 1 a 1000\nBEAT 1 1700000000\n",
    );
    drain(&mut s);
    let (last, lines) = run_timers(&mut s, t0, |s| {
        s.client(&id("a"))
            .is_some_and(|c| c.state() == Liveness::Down)
    });
    assert_eq!(last, t0.mono + Duration::from_secs(5), "3 s + 2 periods");
    assert_eq!(liveness(lines).len(), 2);
    let t = t0.advanced(Duration::from_secs(6));
    s.handle_input(t, c, b"BEAT 6 1700000006\n");
    assert_eq!(
        liveness_lines(&mut s),
        Vec::<String>::new(),
        "one arrival of two"
    );
    let t = t0.advanced(Duration::from_secs(7));
    s.handle_input(t, c, b"BEAT 7 1700000007\n");
    assert_eq!(
        liveness_lines(&mut s),
        ["ev transition client=a down->up since_last=1000.000ms fixed=0.000"]
    );
}

/// A transition names the peer of the client's latest connection; every event's JSON can
/// carry its time, in seconds to the microsecond.
#[test]
fn transitions_name_the_peer_and_events_carry_their_time() {
    let (t0, mut s, _) = opened_with(fixed_config(), b"HELLO 1 a 1000\nBEAT 1 1700000000\n");
    drain(&mut s);
    s.handle_timeout(t0.advanced(Duration::from_secs(2)));
    let Some(Output::Event(e)) = s.poll_output() else {
        panic!("a transition");
    };
    let time = UnixTime::from_nanos(1_700_000_002_123_456_789);
    let json = e.to_json_at(time);
    assert_eq!(json["peer"], "127.0.0.1:1");
    assert_eq!(json["time"].to_string(), "1700000002.123457");
    assert_eq!(
        unix_seconds(UnixTime::from_nanos(1_700_000_000_000_000_000)).to_string(),
        "1700000000.0"
    );
    assert_eq!(
        unix_seconds(UnixTime::from_nanos(4_294_967_295_999_999_000)).to_string(),
        "4294967295.999999"
    );
}

/// Reloaded keys: the next challenge is answered with the new secret; without authentication
/// there is nothing to reload.
#[test]
fn reloaded_keys_apply_to_the_next_connection() {
    use crate::auth::{Answer, AuthConfig, AuthKeys, Secret};
    let old = Secret::new("old-secret-0123456789").unwrap();
    let new = Secret::new("new-secret-0123456789").unwrap();
    let keys = |secret: &Secret| {
        let mut k = AuthKeys::new();
        k.insert(ClientId::new("a").unwrap(), secret.clone());
        k
    };
    let config = ServerConfig::default().auth(Some(AuthConfig::new(keys(&old), [7; 32])));
    let mut s = Server::new(Arc::new(config));
    assert!(!Server::new(Arc::new(ServerConfig::default())).set_auth_keys(keys(&new)));
    assert!(s.set_auth_keys(keys(&new)));
    let t0 = Now::test_origin();
    let answer = |s: &mut Server, port, secret: &Secret| {
        let c = open(s, t0, port, b"HELLO 1 a 1000 5\n");
        let lines = drain(s);
        let nonce = lines[0].rsplit(' ').next().unwrap().to_owned();
        let nonce = crate::auth::Nonce(
            (0..nonce.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&nonce[i..i + 2], 16).unwrap())
                .collect::<Vec<u8>>()
                .try_into()
                .unwrap(),
        );
        let a = Answer::compute(
            secret,
            &nonce,
            &ClientId::new("a").unwrap(),
            Duration::from_secs(1),
            5,
        );
        s.handle_input(t0, c, format!("AUTH {a}\n").as_bytes());
        drain(s)
    };
    let refused = answer(&mut s, 1, &old);
    assert!(
        refused.iter().any(|l| l.contains("disconnect")),
        "{refused:?}"
    );
    let welcomed = answer(&mut s, 2, &new);
    assert!(
        welcomed.iter().any(|l| l.contains("WELCOME")),
        "{welcomed:?}"
    );
}

// ---- state across restarts ----

/// The report lines that a restore keeps (counters, ranges, state), without the delay and gap
/// statistics, which a restarted server measures afresh, and `connected`.
fn kept(s: &Server) -> Vec<String> {
    s.report()
        .clients
        .iter()
        .map(|c| {
            format!(
                "{} {} {} received={} missed={} ranges={:?} dup={} rst={} bursts={} conns={} \
                 highest={:?} first={:?} last={:?}",
                c.client,
                c.protocol,
                c.state,
                c.received,
                c.missed,
                c.missed_ranges
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>(),
                c.duplicates,
                c.restarts,
                c.bursts,
                c.connections,
                c.highest_seq,
                c.first_seen,
                c.last_seen
            )
        })
        .collect()
}

/// A server that heard `a` (gaps, still connected), `b` (said goodbye) and a legacy client.
fn server_with_history() -> (Now, Server, ConnId) {
    let (t0, mut s, a) = opened(b"HELLO 1 a 1000 aa\nBEAT 1 1700000000\n");
    beat_every_second(&mut s, t0, a, 3..=5);
    open(
        &mut s,
        t0,
        2,
        b"HELLO 1 b 1000 bb\nBEAT 1 1700000000\nBYE\n",
    );
    let legacy = b"Sequence #1: Sending heartbeat at 1700000000.0000. ";
    open(&mut s, t0, 3, legacy);
    let _ = drain(&mut s);
    (t0, s, a)
}

#[test]
fn a_restored_server_goes_on_counting_where_the_saved_one_stopped() {
    let (t0, old, _) = server_with_history();
    let json = serde_json::to_string(&old.persist()).unwrap();
    let state: State = serde_json::from_str(&json).unwrap();
    assert_eq!(state.client_count(), 3);
    let t1 = t0.advanced(Duration::from_secs(60));
    let mut new = Server::new(Arc::new(ServerConfig::default()));
    let restored = new.restore(state, t1).unwrap();
    assert_eq!((restored.clients, restored.dropped), (3, 0));
    assert_eq!(kept(&new), kept(&old));
    assert!(new.clients().all(|c| !c.summary().connected));
    // `a` comes back in the same session: #5 again is a duplicate, #9 misses #6-8 once.
    let c = open(&mut new, t1, 9, b"HELLO 1 a 1000 aa\nBEAT 5 1700000060\n");
    let out = drain(&mut new);
    assert_has(&out, "ev duplicate client=a seq=5");
    assert!(out.iter().any(|l| l.contains("resumed=true")), "{out:?}");
    new.handle_input(
        t1.advanced(Duration::from_secs(1)),
        c,
        b"BEAT 9 1700000061\n",
    );
    let out = drain(&mut new);
    assert_has(&out, "ev missed client=a seq=6-8 count=3");
    let a = new.client(&id("a")).unwrap();
    assert_eq!((a.received(), a.missed(), a.duplicates()), (5, 4, 1));
    // `b` left: it stays left, and a new session of it is a restart as before.
    assert_eq!(new.client(&id("b")).unwrap().state(), Liveness::Left);
    open(&mut new, t1, 10, b"HELLO 1 b 1000 cc\nBEAT 1 1700000060\n");
    assert_has(&drain(&mut new), "ev restarted client=b previous=1");
}

#[test]
fn a_client_that_died_while_the_server_was_down_is_declared_down_a_grace_after_the_restart() {
    let config = ServerConfig::default().detector(DetectorConfig::new(DetectorKind::Fixed));
    let (t0, old, _) = {
        let t0 = Now::test_origin();
        let mut s = Server::new(Arc::new(config.clone()));
        let c = open(&mut s, t0, 1, b"HELLO 1 a 1000 aa\nBEAT 1 1700000000\n");
        beat_every_second(&mut s, t0, c, 2..=3);
        let _ = drain(&mut s);
        (t0, s, c)
    };
    assert_eq!(old.client(&id("a")).unwrap().state(), Liveness::Up);
    let t1 = t0.advanced(Duration::from_secs(600));
    let mut new = Server::new(Arc::new(config));
    new.restore(old.persist(), t1).unwrap();
    assert_eq!(new.client(&id("a")).unwrap().state(), Liveness::Up);
    // The fixed detector's grace (2 intervals, down at interval + grace) from the restart.
    let (at, log) = run_timers(&mut new, t1, |s| {
        s.client(&id("a")).unwrap().state() == Liveness::Down
    });
    assert_eq!(at - t1.mono, Duration::from_secs(3));
    assert!(
        log.iter()
            .any(|l| l.starts_with("ev transition client=a suspect->down")),
        "{log:?}"
    );
}

#[test]
fn changes_are_taken_once_and_merge_into_the_full_state() {
    let (t0, mut s, a) = server_with_history();
    let full = s.persist();
    let first = s.persist_changes();
    assert_eq!(
        first.client_count(),
        3,
        "every client changed since the start"
    );
    assert!(!s.has_changes());
    assert!(s.persist_changes().is_empty());
    beat_every_second(&mut s, t0, a, 8..=8);
    assert!(s.has_changes());
    let changes = s.persist_changes();
    assert_eq!(changes.client_count(), 1, "only a changed");
    let mut merged = full;
    merged.merge(changes);
    assert_eq!(merged, s.persist());
}

#[test]
fn a_forgotten_client_leaves_the_state_through_the_changes() {
    let t0 = Now::test_origin();
    let mut s = Server::new(Arc::new(ServerConfig::default().max_clients(1)));
    let c = open(&mut s, t0, 1, b"HELLO 1 a 1000\nBEAT 1 1700000000\n");
    s.handle_eof(t0, c);
    let mut saved = s.persist();
    let _ = s.persist_changes();
    open(&mut s, t0, 2, b"HELLO 1 b 1000\nBEAT 1 1700000000\n");
    saved.merge(s.persist_changes());
    assert_eq!(saved, s.persist());
    assert_eq!(saved.client_count(), 1);
}

#[test]
fn a_state_is_restored_into_a_fresh_server_only_and_up_to_the_client_limit() {
    let (t0, old, _) = server_with_history();
    let mut busy = Server::new(Arc::new(ServerConfig::default()));
    open(&mut busy, t0, 1, b"HELLO 1 z 1000\nBEAT 1 1700000000\n");
    assert_eq!(busy.restore(old.persist(), t0), Err(StateError::NotFresh));
    assert_eq!(busy.client_count(), 1);
    let mut small = Server::new(Arc::new(ServerConfig::default().max_clients(2)));
    let restored = small.restore(old.persist(), t0).unwrap();
    assert_eq!((restored.clients, restored.dropped), (2, 1));
}

/// Merges the changes since the last call into `merged`, which must then be the full state.
fn merge_changes_and_compare(s: &mut Server, merged: &mut MergedState, step: &str) {
    merged.merge(s.persist_changes());
    assert_eq!(merged.to_state(), s.persist(), "after {step}");
    let _ = drain(s);
}

#[test]
fn every_change_to_a_record_is_in_the_changes() {
    // What a journal replays after a crash, and what the state writer keeps between full
    // saves: the first full state and every later state of changes, merged, are the full
    // state, whatever happened to the records.
    let t0 = Now::test_origin();
    let mut s = Server::new(Arc::new(ServerConfig::default().max_clients(2)));
    let mut merged = MergedState::new(s.persist());
    let a = open(&mut s, t0, 1, b"HELLO 1 a 1000 aa\nBEAT 1 1700000000\n");
    merge_changes_and_compare(&mut s, &mut merged, "a's first heartbeat");
    beat_every_second(&mut s, t0, a, 2..=3);
    beat_every_second(&mut s, t0, a, 6..=6);
    let t6 = t0.advanced(Duration::from_secs(6));
    s.handle_input(t6, a, b"BEAT 2 1700000000\n");
    merge_changes_and_compare(&mut s, &mut merged, "a gap and a duplicate");
    let b = open(&mut s, t6, 2, b"HELLO 1 b 1000 bb\nBEAT 1 1700000000\n");
    s.handle_eof(t6, b);
    merge_changes_and_compare(&mut s, &mut merged, "b connected and gone");
    let (last, log) = run_timers(&mut s, t6, |s| {
        s.clients().all(|c| c.state() == Liveness::Down)
    });
    assert!(log.iter().any(|l| l.contains("suspect")), "{log:?}");
    merge_changes_and_compare(&mut s, &mut merged, "liveness changes on timers");
    let later = t0.advanced(last - t0.mono);
    s.handle_input(later, a, b"BYE\n");
    s.handle_eof(later, a);
    merge_changes_and_compare(&mut s, &mut merged, "a goodbye");
    open(&mut s, later, 3, b"HELLO 1 b 1000 b2\nBEAT 1 1700000000\n");
    merge_changes_and_compare(&mut s, &mut merged, "b restarted");
    open(&mut s, later, 4, b"HELLO 1 c 1000 cc\nBEAT 1 1700000000\n");
    merge_changes_and_compare(&mut s, &mut merged, "a forgotten at the limit for c");
    assert_eq!(merged.client_count(), 2);
}

#[test]
fn a_client_forgotten_after_its_time_leaves_the_state_and_a_restored_one_is_forgotten_in_time() {
    let t0 = Now::test_origin();
    let config = ServerConfig::default()
        .forget_after(Duration::from_secs(60))
        .unwrap();
    let mut s = Server::new(Arc::new(config.clone()));
    let mut merged = MergedState::new(s.persist());
    let a = open(&mut s, t0, 1, b"HELLO 1 a 1000 aa\nBEAT 1 1700000000\n");
    open(&mut s, t0, 2, b"HELLO 1 b 1000 bb\nBEAT 1 1700000000\n");
    s.handle_eof(t0, a);
    merge_changes_and_compare(&mut s, &mut merged, "a gone");
    // Its liveness changes mark its slot again before it is forgotten: the freed slot must not
    // bring it back into the changes.
    let (_, log) = run_timers(&mut s, t0, |s| s.clients().count() == 1);
    assert!(log.iter().any(|l| l.contains("down")), "{log:?}");
    merge_changes_and_compare(&mut s, &mut merged, "a forgotten");
    assert_eq!(merged.client_count(), 1);

    // b was last heard at t0; restored 50 s later, it is forgotten 60 s after t0, not after
    // the restore.
    let t1 = t0.advanced(Duration::from_secs(50));
    let mut new = Server::new(Arc::new(config));
    new.restore(merged.to_state(), t1).unwrap();
    let (last, _) = run_timers(&mut new, t1, |s| s.clients().count() == 0);
    assert_eq!(new.clients().count(), 0);
    assert_eq!(last - t1.mono, Duration::from_secs(10));
    assert!(new.persist_changes().client_count() == 0);
}

/// Restarts are silent to the pager (issue 17): with an expected list and a saved state
/// together, a client already announced `down` (heard from, then died), an expected client
/// already announced `down` as never seen, and one that left stay so across any number of
/// restarts: no transition fires again for a state announced before the restart. A client up
/// at the save and silent since is convicted once, a grace after the first restart.
#[test]
fn restarts_with_an_expected_list_announce_nothing_already_announced() {
    // A left grace longer than the test: `gone` stays `Left` (the grace has a test of its own).
    let config = fixed_config()
        .left_grace(Duration::from_secs(86_400))
        .unwrap();
    let list = [
        expected("db", 1000, None),
        expected("ghost", 1000, None),
        expected("gone", 1000, None),
        expected("web", 1000, None),
    ];
    let t0 = Now::test_origin();
    let mut s = Server::new(Arc::new(config.clone()));
    s.set_expected(t0, &list);
    let t1 = t0.advanced(Duration::from_secs(1));
    let db = open(&mut s, t1, 1, b"HELLO 1 db 1000 aa\nBEAT 1 1700000001\n");
    beat_every_second(&mut s, t0, db, 2..=3);
    let t3 = t0.advanced(Duration::from_secs(3));
    s.handle_eof(t3, db);
    open(
        &mut s,
        t3,
        2,
        b"HELLO 1 gone 1000 bb\nBEAT 1 1700000003\nBYE\n",
    );
    run_timers(&mut s, t3, |s| {
        s.client(&id("db")).unwrap().state() == Liveness::Down
            && s.client(&id("ghost")).unwrap().state() == Liveness::Down
    });
    for (name, state) in [
        ("db", Liveness::Down),
        ("ghost", Liveness::Down),
        ("gone", Liveness::Left),
        ("web", Liveness::Down),
    ] {
        assert_eq!(s.client(&id(name)).unwrap().state(), state, "{name}");
    }
    // `web` comes up at last, then the server stops with it up.
    let t10 = t0.advanced(Duration::from_secs(10));
    open(&mut s, t10, 3, b"HELLO 1 web 1000 cc\nBEAT 1 1700000010\n");
    drain(&mut s);
    let mut saved = s.persist();
    let mut announced = Vec::new();
    for restart in 1..=4u64 {
        let at = t10.advanced(Duration::from_secs(600 * restart));
        let mut new = Server::new(Arc::new(config.clone()));
        new.restore(saved, at).unwrap();
        new.set_expected(at, &list);
        let (_, log) = run_timers(&mut new, at, |_| false);
        announced.extend(
            liveness(log)
                .into_iter()
                .map(|l| format!("restart {restart}: {l}")),
        );
        for (name, state) in [
            ("db", Liveness::Down),
            ("ghost", Liveness::Down),
            ("gone", Liveness::Left),
            ("web", Liveness::Down),
        ] {
            assert_eq!(new.client(&id(name)).unwrap().state(), state, "{name}");
        }
        assert_eq!(new.client(&id("db")).unwrap().received(), 3);
        saved = new.persist();
    }
    assert_eq!(
        announced
            .iter()
            .map(|l| l.split(" since_last").next().unwrap_or_default())
            .collect::<Vec<_>>(),
        [
            "restart 1: ev transition client=web up->suspect",
            "restart 1: ev transition client=web suspect->down",
        ]
    );
}

/// A machine that shut down cleanly and never came back is announced once (issue 17): an
/// expected client that said goodbye is `Down` (from `Left`) when the left grace ends, unless
/// it came back; a client not expected stays `Left`. Across a restart, the grace counts from
/// when it left, and once it is announced a restart says nothing more.
#[test]
fn an_expected_client_that_left_and_stays_away_is_down_after_the_left_grace() {
    let config = fixed_config().left_grace(Duration::from_secs(60)).unwrap();
    let list = [expected("db", 1000, None), expected("web", 1000, None)];
    let t0 = Now::test_origin();
    let mut s = Server::new(Arc::new(config.clone()));
    s.set_expected(t0, &list);
    for (port, name) in [(1, "db"), (2, "web"), (3, "batch")] {
        let hello = format!("HELLO 1 {name} 1000\nBEAT 1 1700000000\nBYE\n");
        let c = open(&mut s, t0, port, hello.as_bytes());
        s.handle_eof(t0, c);
    }
    drain(&mut s);
    // web comes back within its grace and keeps beating; db and batch stay away.
    let t30 = t0.advanced(Duration::from_secs(30));
    let web = open(&mut s, t30, 4, b"HELLO 1 web 1000 bb\nBEAT 30 1700000030\n");
    beat_every_second(&mut s, t0, web, 31..=70);
    let lines = liveness_lines(&mut s);
    assert_eq!(
        lines
            .iter()
            .map(|l| l.split(" since_last").next().unwrap_or_default())
            .collect::<Vec<_>>(),
        [
            "ev transition client=web left->up",
            "ev transition client=db left->down"
        ],
        "{lines:?}"
    );
    let state = |s: &Server, name| s.client(&id(name)).unwrap().state();
    assert_eq!(
        state(&s, "batch"),
        Liveness::Left,
        "not expected: stays left"
    );

    // Restarts: a client that left 30 s before the restart is down 30 s after it; one
    // already announced down stays down without a word.
    let (t10, mut gone) = (t0.advanced(Duration::from_secs(10)), {
        let mut g = Server::new(Arc::new(config.clone()));
        g.set_expected(t0, &list);
        g
    });
    let c = open(
        &mut gone,
        t10,
        1,
        b"HELLO 1 db 1000\nBEAT 1 1700000010\nBYE\n",
    );
    gone.handle_eof(t10, c);
    drain(&mut gone);
    let t40 = t0.advanced(Duration::from_secs(40));
    let mut restarted = Server::new(Arc::new(config.clone()));
    restarted.restore(gone.persist(), t40).unwrap();
    restarted.set_expected(t40, &list);
    let (at, log) = run_timers(&mut restarted, t40, |s| state(s, "db") == Liveness::Down);
    assert_eq!(at - t40.mono, Duration::from_secs(30), "60 s after it left");
    assert!(
        liveness(log)
            .iter()
            .any(|l| l.starts_with("ev transition client=db left->down")),
    );
    let t200 = t0.advanced(Duration::from_secs(200));
    let mut again = Server::new(Arc::new(config));
    again.restore(restarted.persist(), t200).unwrap();
    again.set_expected(t200, &list);
    let (_, log) = run_timers(&mut again, t200, |_| false);
    let db: Vec<String> = liveness(log)
        .into_iter()
        .filter(|l| l.contains("client=db"))
        .collect();
    assert_eq!(db, Vec::<String>::new());
    assert_eq!(state(&again, "db"), Liveness::Down);
}

/// A left grace past what an `Instant` can hold is never over: a goodbye, a reload and a
/// restore arm nothing and panic nowhere.
#[test]
fn a_left_grace_beyond_any_instant_never_ends_and_never_panics() {
    let config = fixed_config().left_grace(Duration::MAX).unwrap();
    let list = [expected("db", 1000, None)];
    let t0 = Now::test_origin();
    let mut s = Server::new(Arc::new(config.clone()));
    s.set_expected(t0, &list);
    let c = open(&mut s, t0, 1, b"HELLO 1 db 1000\nBEAT 1 1700000000\nBYE\n");
    s.handle_eof(t0, c);
    run_timers(&mut s, t0, |_| false);
    assert_eq!(s.client(&id("db")).unwrap().state(), Liveness::Left);
    let mut again = Server::new(Arc::new(config));
    again
        .restore(s.persist(), t0.advanced(Duration::from_secs(10)))
        .unwrap();
    again.set_expected(t0.advanced(Duration::from_secs(10)), &list);
    run_timers(&mut again, t0, |_| false);
    assert_eq!(again.client(&id("db")).unwrap().state(), Liveness::Left);
}

/// Two clients, `fast-1` and `slow-1`, every second, both silent after their fifth heartbeat:
/// the times after the last one at which each is down.
fn downs_after_silence(s: &mut Server, t0: Now, rules: Option<ClientDetectors>) -> Vec<String> {
    let a = open(s, t0, 1, b"HELLO 1 fast-1 1000\n");
    let b = open(s, t0, 2, b"HELLO 1 slow-1 1000\n");
    for i in 1..=5 {
        let now = t0.advanced(Duration::from_secs(i));
        s.handle_timeout(now);
        for c in [a, b] {
            s.handle_input(now, c, format!("BEAT {i} 1700000000\n").as_bytes());
        }
    }
    let last = t0.advanced(Duration::from_secs(5));
    if let Some(rules) = rules {
        let changed = s.set_client_detectors(last, rules);
        assert_eq!(changed, [id("slow-1")], "only slow-1's rule changed");
    }
    drain(s);
    let mut downs = Vec::new();
    for tenth in 1..=40 {
        let now = last.advanced(Duration::from_millis(100 * tenth));
        advance_to(s, now);
        for line in liveness_lines(s) {
            if line.contains("->down") {
                downs.push(format!("+{}ms {line}", 100 * tenth));
            }
        }
    }
    downs
}

fn fixed_grace(ms: u64) -> DetectorConfig {
    crate::detector::FixedConfig::default()
        .grace(crate::detector::Span::Fixed(Duration::from_millis(ms)))
        .unwrap()
        .into()
}

/// A client matching a rule is watched by the rule's detector from its `HELLO`; new rules
/// rebuild the detectors of the clients whose rule changed, judged from their last heartbeat.
#[test]
fn per_client_detectors_apply_at_hello_and_on_replacement() {
    use crate::detector::ClientRule;
    let config = ServerConfig::default().detector(DetectorConfig::new(DetectorKind::Fixed));
    let t0 = Now::test_origin();
    // At HELLO: fast-* gets a 1 s grace (down 2 s after the last heartbeat), slow-1 the
    // server's fixed detector (3 s).
    let mut s = Server::new(Arc::new(config.clone()));
    let rules = ClientDetectors::new(vec![ClientRule::new("fast-*", fixed_grace(1_000))]);
    assert!(s.set_client_detectors(t0, rules.clone()).is_empty());
    let downs = downs_after_silence(&mut s, t0, None);
    assert_eq!(downs.len(), 2, "{downs:?}");
    assert!(
        downs[0].starts_with("+2000ms") && downs[0].contains("fast-1"),
        "{downs:?}"
    );
    assert!(
        downs[1].starts_with("+3000ms") && downs[1].contains("slow-1"),
        "{downs:?}"
    );
    // Replaced after the last heartbeats: slow-1 gets a 500 ms grace, judged from its last
    // heartbeat at once; fast-1's rule is the same, its detector untouched.
    let mut s = Server::new(Arc::new(config));
    s.set_client_detectors(t0, rules);
    let tighter = ClientDetectors::new(vec![
        ClientRule::new("fast-*", fixed_grace(1_000)),
        ClientRule::new("slow-1", fixed_grace(500)),
    ]);
    let downs = downs_after_silence(&mut s, t0, Some(tighter.clone()));
    assert!(
        downs[0].starts_with("+1500ms") && downs[0].contains("slow-1"),
        "{downs:?}"
    );
    assert!(
        downs[1].starts_with("+2000ms") && downs[1].contains("fast-1"),
        "{downs:?}"
    );
    assert_eq!(s.client_detectors(), &tighter);
}

/// `forget` at the application's request: refused (changing nothing) for an unknown, a
/// connected and an expected client; a gone client goes at once, as at the forget-after, is
/// told, counted, journaled as forgotten, survives no restore, and comes back a new client.
#[test]
fn a_gone_client_is_forgotten_on_request_and_comes_back_new() {
    let t0 = Now::test_origin();
    let mut s = Server::new(Arc::new(ServerConfig::default()));
    s.set_expected(t0, &[expected("db", 1000, None)]);
    let web = open(
        &mut s,
        t0,
        1,
        b"HELLO 1 web 1000\nBEAT 1 1700000000\nBEAT 2 1700000001\n",
    );
    let _ = drain(&mut s);
    let _ = s.persist_changes();
    assert_eq!(
        s.forget(t0, &id("nobody")),
        Err(ForgetError::Unknown(id("nobody")))
    );
    assert_eq!(
        s.forget(t0, &id("web")),
        Err(ForgetError::Connected(id("web")))
    );
    assert_eq!(
        s.forget(t0, &id("db")),
        Err(ForgetError::Expected(id("db")))
    );
    assert!(drain(&mut s).is_empty(), "a refusal changes nothing");
    assert!(!s.has_changes());

    let t1 = t0.advanced(Duration::from_secs(1));
    s.handle_eof(t1, web);
    let _ = drain(&mut s);
    let t2 = t1.advanced(Duration::from_secs(60));
    assert_eq!(s.forget(t2, &id("web")), Ok(Duration::from_secs(60)));
    assert_eq!(
        drain(&mut s),
        ["ev forgotten client=web gone_for=60000.000ms (requested)"]
    );
    assert!(s.client(&id("web")).is_none());
    assert_eq!(s.stats().clients_forgotten, 1);
    let mut full = s.persist();
    full.merge(s.persist_changes());
    assert_eq!(
        full.client_count(),
        1,
        "only the expected db is kept: {full:?}"
    );
    // Its forget-after deadline, still queued, finds nothing to forget.
    advance_to(&mut s, t2.advanced(Duration::from_secs(86_400 * 2)));
    assert!(!drain(&mut s).iter().any(|l| l.contains("forgotten")));
    // Back: a new client, its first connection.
    let t3 = t2.advanced(Duration::from_secs(1));
    open(&mut s, t3, 2, b"HELLO 1 web 1000\nBEAT 1 1700000100\n");
    let lines = drain(&mut s);
    assert!(
        lines.iter().any(|l| l.contains("resumed=false")),
        "{lines:?}"
    );
    let again = s.client(&id("web")).unwrap();
    assert_eq!((again.received(), again.connections()), (1, 1));
}

/// A client heard from before a restart and then taken off the expected list stays, as an
/// ordinary client (to be forgotten at its forget-after, or on request): only one never heard
/// from is forgotten at once. Its restored record has no arrival instant, only its counters.
#[test]
fn a_restored_client_taken_off_the_list_stays() {
    let t0 = Now::test_origin();
    let config = Arc::new(fixed_config());
    let mut s = Server::new(Arc::clone(&config));
    s.set_expected(
        t0,
        &[expected("a", 1000, None), expected("never", 1000, None)],
    );
    let a = open(&mut s, t0, 1, b"HELLO 1 a 1000\nBEAT 1 1700000000\n");
    s.handle_eof(t0, a);
    let _ = drain(&mut s);
    let state = s.persist();
    let t1 = t0.advanced(Duration::from_secs(5));
    let mut s = Server::new(config);
    s.restore(state, t1).unwrap();
    s.set_expected(
        t1,
        &[expected("a", 1000, None), expected("never", 1000, None)],
    );
    let changes = s.set_expected(t1, &[]);
    assert_eq!(changes.forgotten, [ClientId::new("never").unwrap()]);
    assert!(
        s.client(&id("a")).is_some(),
        "heard from before the restart"
    );
    assert!(s.client(&id("never")).is_none());
    assert_eq!(s.forget(t1, &id("a")), Ok(Duration::from_secs(5)));
}
