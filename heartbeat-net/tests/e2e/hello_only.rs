//! A client that says `HELLO` and nothing more: its `HELLO` is its first sign of life, and its
//! silence after it is judged like any other, suspect and then down in the detector's time for
//! the declared interval (it was `up` forever).

use std::io::Write as _;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::util::Proc;

/// Real time, for measuring real processes.
#[allow(clippy::disallowed_methods)]
fn real_now() -> Instant {
    Instant::now()
}

#[test]
fn a_hello_with_no_heartbeat_goes_suspect_then_down() {
    let (mut server, port) = Proc::json_server(&[]);
    let mut peer = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let hello_at = real_now();
    peer.write_all(b"HELLO 1 mute 200 0123456789abcdef\n")
        .unwrap();
    server.wait_event("mute connected", |v| {
        v["event"] == "connected" && v["client"] == "mute"
    });
    let transition = |to: &'static str| {
        move |v: &serde_json::Value| {
            v["event"] == "transition" && v["client"] == "mute" && v["to"] == to
        }
    };
    let (suspect, _) = server.wait_event_after(0, "mute suspect", transition("suspect"));
    let (down, _) = server.wait_event_after(suspect, "mute down", transition("down"));
    let took = real_now() - hello_at;
    // At 200 ms, a client heard once is down within a few seconds under every detector; the
    // bound leaves room for a loaded machine.
    assert!(took < Duration::from_secs(10), "down after {took:?}");
    assert!(down > suspect);
    let clients = server.summary();
    let mute = crate::util::client_summary(&clients, "mute");
    assert_eq!(mute["received"].as_u64(), Some(0), "{mute:#}");
    drop(peer);
}
