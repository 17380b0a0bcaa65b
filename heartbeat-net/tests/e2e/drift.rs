//! The client's schedule drift, measured against a real server (see BENCHMARKS.md):
//! `cargo test --release -p heartbeat-net --test e2e -- --ignored --nocapture drift`

use crate::util::Proc;

#[test]
#[ignore = "a measurement (10 s), not a check; run it on purpose"]
fn client_schedule_drift_over_1000_heartbeats_at_10ms() {
    const N: u64 = 1000;
    const INTERVAL_NS: i128 = 10_000_000;
    let (mut server, port) = Proc::json_server(&[]);
    let n = N.to_string();
    let mut client = Proc::client(
        port,
        "client",
        &["-i", "10", "--count", &n, "--id", "drift"],
    );
    client.expect_exit(0);
    server.wait_event("goodbye", |v| v["event"] == "disconnected");
    let clients = server.summary();
    let nanos = |s: &str| -> i128 {
        let (secs, frac) = s.split_once('.').unwrap();
        secs.parse::<i128>().unwrap() * 1_000_000_000
            + format!("{frac:0<9}").parse::<i128>().unwrap()
    };
    let beats: Vec<(u64, i128)> = server
        .events()
        .iter()
        .filter(|v| v["event"] == "heartbeat")
        .map(|v| {
            (
                v["seq"].as_u64().unwrap(),
                nanos(v["sent"].as_str().unwrap()),
            )
        })
        .collect();
    let (first_seq, first_sent) = beats[0];
    // Lateness of each send against the ideal grid anchored at the first heartbeat.
    let late: Vec<i128> = beats
        .iter()
        .map(|&(seq, sent)| sent - first_sent - i128::from(seq - first_seq) * INTERVAL_NS)
        .collect();
    let (last_seq, last_sent) = *beats.last().unwrap();
    let span = last_sent - first_sent;
    let ideal = i128::from(last_seq - first_seq) * INTERVAL_NS;
    let ms = |ns: i128| ns as f64 / 1e6;
    // Cumulative drift, free of the first send's special case (it goes out on connect, not on a
    // timer): the mean offset of the last 100 sends minus that of sends 2 to 101.
    let mean = |xs: &[i128]| xs.iter().sum::<i128>() as f64 / xs.len() as f64 / 1e6;
    let early = mean(&late[1..101.min(late.len())]);
    let tail = mean(&late[late.len().saturating_sub(100)..]);
    let mut sorted = late.clone();
    sorted.sort();
    println!(
        "received {} of {N}, last seq {last_seq}, missed {}",
        beats.len(),
        clients[0]["missed"]
    );
    println!(
        "span {:.3} ms vs ideal {:.3} ms: drift {:+.3} ms over {} intervals",
        ms(span),
        ms(ideal),
        ms(span - ideal),
        last_seq - first_seq
    );
    println!(
        "mean offset of sends 2-101 {early:+.3} ms, of the last 100 {tail:+.3} ms: \
         drift {:+.3} ms over ~900 intervals",
        tail - early
    );
    println!(
        "per-send offset from the grid: min {:+.3} ms, p50 {:+.3} ms, p99 {:+.3} ms, max {:+.3} ms",
        ms(sorted[0]),
        ms(sorted[sorted.len() / 2]),
        ms(sorted[sorted.len() * 99 / 100]),
        ms(*sorted.last().unwrap())
    );
}
