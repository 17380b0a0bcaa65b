//! The embedding API (`heartbeat_net::embed`) against a real `heartbeat-server`: a service's own
//! client pauses, is declared down, resumes with the gap counted once, and leaves.

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use heartbeat_net::embed::{Backoff, Builder, ClientConfig, ClientId, Event, Exit, Handle, Stats};
use serde_json::Value;

use crate::tls::pki;
use crate::util::{Proc, WAIT, arg, client_summary, write_file};

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

/// The application's runtime: the client runs on its workers while the test's thread waits.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn is(event: &Value, kind: &str, client: &str) -> bool {
    event["event"] == kind && event["client"] == client
}

#[test]
fn an_embedded_client_is_declared_down_while_paused_and_leaves_on_shutdown() {
    let (mut server, port) = Proc::json_server(&["--detector", "fixed", "--grace", "1x"]);
    let runtime = runtime();
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

#[test]
fn an_embedded_client_with_tls_and_a_key_is_heard_and_leaves() {
    let p = pki();
    let secret = "embedded-tls-secret-0123456789";
    let keys = write_file(p.dir.path(), "keys", &format!("svc {secret}\n"), 0o600);
    let key_file = write_file(p.dir.path(), "svc.key", secret, 0o600);
    let mut args = p.server_args().to_vec();
    args.extend(["--auth-keys", arg(&keys)]);
    let (mut server, port) = Proc::json_server(&args);
    let tls = heartbeat_net::tls::client_config(&p.ca).unwrap();
    let key = heartbeat_net::keys::load_client_key(&key_file)
        .unwrap()
        .value;
    let config =
        ClientConfig::new(ClientId::new("svc").unwrap(), Duration::from_millis(20)).unwrap();
    let runtime = runtime();
    let heartbeat = {
        let _runtime = runtime.enter();
        // The certificate names `localhost` only: connect by address, check that name.
        Builder::new(config, "127.0.0.1", port)
            .tls(tls, "localhost")
            .unwrap()
            .auth_key(key)
            .unwrap()
            .spawn()
    };
    wait_stats(&heartbeat, "5 acks", |s| s.acked >= 5);
    assert_eq!(runtime.block_on(heartbeat.shutdown()), Some(Exit::Closed));
    let stats = heartbeat.stats();
    server.wait_event("left", |v| is(v, "transition", "svc") && v["to"] == "left");
    let clients = server.summary();
    let summary = client_summary(&clients, "svc");
    assert_eq!(summary["received"], stats.sent, "{summary:#}");
    assert_eq!(summary["missed"], stats.skipped, "{summary:#}");
    assert_eq!(stats.last_error, None);
}
