//! The embedding API (`heartbeat_net::embed`) against a real `heartbeat-server`: a service's own
//! client pauses, is declared down, resumes with the gap counted once, and leaves.

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use heartbeat_net::embed::{Backoff, Builder, ClientConfig, ClientId, Event, Exit, Handle, Stats};
use serde_json::Value;

use crate::util::{Proc, WAIT, client_summary};

/// Polls `handle`'s stats until `cond` holds (a real client on real sockets: it takes what
/// it takes, up to `WAIT`).
#[track_caller]
fn wait_stats(handle: &Handle, what: &str, cond: impl Fn(&Stats) -> bool) -> Stats {
    let step = Duration::from_millis(5);
    for _ in 0..WAIT.as_millis() / step.as_millis() {
        let stats = handle.stats();
        if cond(&stats) {
            return stats;
        }
        thread::sleep(step);
    }
    panic!("no {what} within {WAIT:?}: {:?}", handle.stats());
}

fn is(event: &Value, kind: &str, client: &str) -> bool {
    event["event"] == kind && event["client"] == client
}

#[test]
fn an_embedded_client_is_declared_down_while_paused_and_leaves_on_shutdown() {
    let (mut server, port) = Proc::json_server(&["--detector", "fixed", "--grace", "1x"]);
    // The application's runtime: the client runs on its workers while this thread waits.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let config = ClientConfig::new(
        ClientId::new("embedded").unwrap(),
        Duration::from_millis(20),
    )
    .unwrap()
    .reconnect(Some(Backoff::default()));
    let recorded = events.clone();
    let heartbeat = {
        let _runtime = runtime.enter();
        Builder::new(config, "127.0.0.1", port)
            .on_event(move |e| recorded.lock().unwrap().push(e.clone()))
            .spawn()
    };

    let stats = wait_stats(&heartbeat, "5 acks", |s| s.acked >= 5);
    assert!(stats.connected && stats.last_rtt.is_some(), "{stats:?}");

    heartbeat.pause();
    wait_stats(&heartbeat, "the pause", |s| s.paused);
    let last_before = events
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find_map(|e| match e {
            Event::Sent { seq, .. } => Some(seq.0),
            _ => None,
        })
        .unwrap();
    // Everything the server says after the last heartbeat before the pause is about the pause.
    let (beat, _) = server.wait_event_after(0, "the last beat before the pause", |v| {
        is(v, "heartbeat", "embedded") && v["seq"] == last_before
    });
    let down_to =
        |to: &'static str| move |v: &Value| is(v, "transition", "embedded") && v["to"] == to;
    server.wait_event_after(beat, "suspect", down_to("suspect"));
    let (down, _) = server.wait_event_after(beat, "down", down_to("down"));

    heartbeat.resume();
    server.wait_event_after(down, "up again", down_to("up"));
    let (first, last) = events
        .lock()
        .unwrap()
        .iter()
        .skip_while(|e| !matches!(e, Event::Resumed { .. }))
        .find_map(|e| match e {
            Event::Skipped { first, last } => Some((first.0, last.0)),
            _ => None,
        })
        .unwrap();
    assert_eq!(first, last_before + 1, "numbering went on from the pause");
    let (_, missed) = server.wait_event_after(beat, "the pause, missed", |v| {
        is(v, "missed", "embedded") && v["first"] == first
    });
    assert_eq!(missed["last"], last, "{missed}");

    let exit = runtime.block_on(heartbeat.shutdown());
    assert_eq!(exit, Some(Exit::Closed));
    let stats = heartbeat.stats();
    assert!(!stats.connected && !stats.paused, "{stats:?}");
    server.wait_event("left", down_to("left"));
    let clients = server.summary();
    let summary = client_summary(&clients, "embedded");
    assert_eq!(summary["state"], "left", "{summary:#}");
    // Everything sent was received, and everything not sent (the pause, and any slot a busy
    // machine made the client miss) was counted as missed.
    assert_eq!(summary["received"], stats.sent, "{summary:#}");
    assert_eq!(summary["missed"], stats.skipped, "{summary:#}");
    let pause_missed = server
        .events()
        .iter()
        .filter(|v| is(v, "missed", "embedded") && v["first"] == first)
        .count();
    assert_eq!(pause_missed, 1, "the pause is counted once");
}
