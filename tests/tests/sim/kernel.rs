//! The simulator's faults as Linux's TCP has them (issue 19, point 3): connects that wait out a
//! partition, a backlog retransmitted after the repair, a killed process's close that survives
//! a partition, a killed server that refuses at once where a machine that is down is silent.

use std::time::Duration;

use heartbeat_core::client::Event as ClientEvent;
use heartbeat_core::frame::Frame;
use heartbeat_core::server::Event as ServerEvent;
use heartbeat_core::{ClientKey, DisconnectReason};
use heartbeat_sim::log::Record;
use heartbeat_sim::scenario::file::Spec;
use heartbeat_sim::scenario::{Params, Source};
use heartbeat_sim::world::{self, Outcome};
use heartbeat_sim::{oracle, render};

/// Runs scenario file `text` with seed 1; panics with the rendering when an oracle fails.
fn run(text: &str) -> Outcome {
    let spec = Spec::parse("k.toml", "k", text, Source::File("k.toml".into())).unwrap();
    let out = world::run(&spec.expand(&Params::seed(1)).unwrap()).unwrap();
    let verdict = oracle::check(&out);
    assert!(verdict.ok(), "{}", render::text(&out, &verdict));
    out
}

fn s(secs: f64) -> Duration {
    Duration::from_secs_f64(secs)
}

/// One connect attempt of a client: when it began (the end of the backoff before it), when it
/// ended, and its error.
#[derive(Debug)]
struct Attempt {
    start: Duration,
    end: Duration,
    error: Option<String>,
}

/// Client `client`'s connect attempts after its first connection.
fn attempts(out: &Outcome, client: usize) -> Vec<Attempt> {
    let mut next = None;
    let mut found = Vec::new();
    for e in &out.log {
        match &e.record {
            Record::Client {
                client: c,
                event:
                    ClientEvent::Disconnected { retry_in, .. }
                    | ClientEvent::ConnectFailed { retry_in, .. },
                ..
            } if *c == client => next = retry_in.map(|r| e.at + r),
            Record::Connect {
                client: c, error, ..
            } if *c == client => {
                if let Some(start) = next.take() {
                    found.push(Attempt {
                        start,
                        end: e.at,
                        error: error.clone(),
                    });
                }
            }
            _ => {}
        }
    }
    found
}

fn close_to(got: Duration, want: Duration, slack: Duration) -> bool {
    got >= want && got <= want + slack
}

/// The server's `disconnected` events for client `id`: when, and why.
fn disconnects(out: &Outcome, id: &str) -> Vec<(Duration, DisconnectReason)> {
    out.log
        .iter()
        .filter_map(|e| match &e.record {
            Record::Server {
                event:
                    ServerEvent::Disconnected {
                        client: Some(ClientKey::Id(c)),
                        reason,
                        ..
                    },
                ..
            } if c.as_str() == id => Some((e.at, reason.clone())),
            _ => None,
        })
        .collect()
}

/// Issue 19's comparison: one client every 1 s, its path cut for 20 s.
const CUT_20S: &str = r#"
    duration = "60s"
    [[client]]
    id = "c1"
    interval = "1s"
    latency = "10ms"
    [[action]]
    do = "partition"
    on = "c1"
    at = "20s"
    for = "20s"
"#;

#[test]
fn a_connect_during_a_partition_waits_for_the_connect_timeout() {
    let out = run(CUT_20S);
    let cut: Vec<_> = attempts(&out, 0)
        .into_iter()
        .filter(|a| a.start >= s(20.0) && a.end < s(40.0))
        .collect();
    // Linux drops nothing at once: the SYN goes unanswered until `CONNECT_TIMEOUT` (turmoil
    // refused it at once, 8 times with backoff).
    assert!(!cut.is_empty(), "{cut:?}");
    for a in &cut {
        let error = a.error.as_deref().unwrap_or_default();
        assert!(error.contains("timed out"), "{a:?}");
        assert!(close_to(a.end - a.start, s(10.0), s(0.005)), "{a:?}");
    }
}

#[test]
fn a_connect_across_the_repair_ends_at_the_syn_s_next_retransmission() {
    let out = run(CUT_20S);
    let repair = s(40.0);
    let a = attempts(&out, 0)
        .into_iter()
        .find(|a| a.end >= repair)
        .expect("a connect after the repair");
    assert!(a.error.is_none(), "{a:?}");
    // The SYN, held since the attempt began, is retransmitted 1 s, 3 s, 7 s after it: the
    // first of those after the repair gets through (plus the link's 10 ms and a few ticks).
    let took = a.end - a.start;
    let at = [1.0, 3.0, 7.0]
        .into_iter()
        .map(s)
        .find(|r| a.start + *r >= repair)
        .expect("the repair comes within the connect timeout");
    assert!(close_to(took, at, s(0.05)), "{a:?}, expected {at:?}");
}

#[test]
fn a_repaired_partition_delivers_the_backlog_as_one_burst_at_the_retransmission_time() {
    // The client keeps its stream through the cut (an ack timeout longer than it), and the cut
    // is shorter than the server's idle timeout: the connection survives, as on Linux.
    let out = run(r#"
        duration = "40s"
        [[client]]
        id = "c1"
        interval = "1s"
        latency = "10ms"
        ack-timeout = "30s"
        [[action]]
        do = "partition"
        on = "c1"
        at = "20s"
        for = "5s"
    "#);
    let first_held = out
        .log
        .iter()
        .find(|e| {
            e.at >= s(20.0)
                && matches!(
                    e.record,
                    Record::Wrote {
                        frame: Frame::Beat { .. },
                        ..
                    }
                )
        })
        .expect("a heartbeat written during the cut")
        .at;
    let (at, count) = out
        .log
        .iter()
        .find_map(|e| match e.record {
            Record::Server {
                event: ServerEvent::Burst { count, .. },
                ..
            } => Some((e.at, count)),
            _ => None,
        })
        .expect("a burst after the repair");
    // Retransmissions 0.2, 0.6, 1.4, 3.0, 6.2 s after the first unacknowledged send: the repair
    // at 25 s is caught by the one at 6.2 s, which carries the five heartbeats of the cut and
    // the one sent since.
    assert!(
        close_to(at - first_held, s(6.2), s(0.03)),
        "{at:?} {first_held:?}"
    );
    assert!(count >= 6, "{count}");
    assert!(disconnects(&out, "c1").is_empty());
}

#[test]
fn a_killed_client_s_close_survives_a_partition_where_a_crashed_machine_s_does_not() {
    // Both clients are cut for 4 s; c1's process is killed during the cut (its kernel
    // retransmits the FIN), c2's machine stops (nothing more is sent).
    let out = run(r#"
        duration = "60s"
        [clients]
        count = 2
        interval = "1s"
        latency = "10ms"
        [[action]]
        do = "partition"
        on = "each"
        at = "20s"
        for = "4s"
        [[action]]
        do = "crash"
        on = "c1"
        at = "21s"
        [[action]]
        do = "crash"
        silent = true
        on = "c2"
        at = "21s"
    "#);
    let c1 = disconnects(&out, "c1");
    let c2 = disconnects(&out, "c2");
    assert!(
        matches!(c1.as_slice(), [(at, DisconnectReason::ClosedByPeer)] if *at > s(24.0) && *at < s(28.0)),
        "{c1:?}"
    );
    assert!(
        matches!(c2.as_slice(), [(_, DisconnectReason::IdleTimeout(_))]),
        "{c2:?}"
    );
}

#[test]
fn a_killed_server_refuses_at_once_a_server_machine_that_is_down_answers_nothing() {
    let scenario = |silent: bool| {
        format!(
            r#"
            duration = "60s"
            [[client]]
            id = "c1"
            interval = "1s"
            latency = "10ms"
            [[action]]
            do = "crash"
            silent = {silent}
            on = "server"
            at = "20s"
            for = "15s"
            "#
        )
    };
    let down = |a: &&Attempt| a.start > s(20.0) && a.end < s(35.0);
    let killed = run(&scenario(false));
    let refused: Vec<_> = attempts(&killed, 0)
        .into_iter()
        .filter(|a| down(&a))
        .collect();
    assert!(refused.len() >= 2, "{refused:?}");
    for a in &refused {
        assert!(a.end - a.start < s(0.005), "{a:?}");
        assert!(
            a.error.as_deref().unwrap_or_default().contains("refused"),
            "{a:?}"
        );
    }
    let silent = run(&scenario(true));
    let waited: Vec<_> = attempts(&silent, 0)
        .into_iter()
        .filter(|a| down(&a))
        .collect();
    assert!(!waited.is_empty(), "{waited:?}");
    for a in &waited {
        assert!(close_to(a.end - a.start, s(10.0), s(0.005)), "{a:?}");
    }
}

#[test]
fn a_stream_whose_data_outlasts_the_retransmission_limit_times_out() {
    // A legacy client reads nothing, so only its kernel can tell it the path is gone: after
    // tcp_retries2 (924.6 s after the first unacknowledged heartbeat) its stream fails, where
    // turmoil alone let it write into the cut for good.
    let out = run(r#"
        duration = "1000s"
        [[client]]
        id = "c1"
        interval = "1s"
        latency = "10ms"
        protocol = "legacy"
        [[action]]
        do = "partition"
        on = "c1"
        at = "10s"
        for = "980s"
    "#);
    let first_held = out
        .log
        .iter()
        .find(|e| e.at >= s(10.0) && matches!(e.record, Record::Wrote { .. }))
        .expect("a heartbeat written during the cut")
        .at;
    let lost = out
        .log
        .iter()
        .find_map(|e| match &e.record {
            Record::Client {
                event: ClientEvent::Disconnected { .. },
                ..
            } => Some(e.at),
            _ => None,
        })
        .expect("the client's stream failed");
    assert!(
        close_to(lost - first_held, s(924.6), s(0.005)),
        "{lost:?} {first_held:?}"
    );
}
