//! Hostile or broken input drops only the connection it came on.

use std::io::Write;
use std::net::TcpStream;

use crate::util::{Proc, free_port, read_to_close, real_now, unix_stamp};

#[test]
fn garbage_drops_only_that_connection() {
    let (mut server, port) = Proc::json_server(&[]);
    let mut good = Proc::client(port, "good", &["-i", "50", "--id", "good"]);
    server.wait_beat("good", 1);

    // Not a heartbeat protocol at all.
    let mut http = TcpStream::connect(("127.0.0.1", port)).unwrap();
    http.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    read_to_close(&mut http);

    // A v1 client that turns to garbage after its HELLO is told why, then dropped.
    let mut v1 = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let beat = format!("BEAT 1 {}\n", unix_stamp(6));
    v1.write_all(b"HELLO 1 bad 20\n").unwrap();
    v1.write_all(beat.as_bytes()).unwrap();
    v1.write_all(b"BEAT \x00\x01\x02\n").unwrap();
    let answer = read_to_close(&mut v1);
    assert!(answer.starts_with("WELCOME 1\nACK 1 "), "{answer:?}");
    assert!(answer.contains("ERROR "), "{answer:?}");

    // An endless line without a newline.
    let mut long = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let _ = long.write_all(&[b'A'; 4096]);
    read_to_close(&mut long);

    // The identified client's drop is an event of its own; the two that never identified are
    // counted in `unidentified` events.
    let protocol_errors = |server: &Proc| {
        let identified = server
            .events()
            .iter()
            .filter(|v| {
                v["event"] == "disconnected"
                    && v["reason"]
                        .as_str()
                        .is_some_and(|r| r.starts_with("protocol error"))
            })
            .count() as u64;
        identified + server.unidentified("protocol")
    };
    server.wait_event("third protocol error", |v| {
        v["event"] == "disconnected" && v["client"] == "bad"
    });
    // The good client carried on all along, on its first connection.
    let now = server.highest_seq("good").unwrap();
    server.wait_event("good carries on", |v| {
        v["event"] == "heartbeat" && v["client"] == "good" && v["seq"].as_u64() > Some(now + 2)
    });
    good.signal("TERM");
    good.expect_exit(0);
    let clients = server.summary();
    assert_eq!(protocol_errors(&server), 3, "{:#?}", server.events());
    let good = crate::util::client_summary(&clients, "good");
    assert_eq!(good["missed"].as_u64(), Some(0), "{good:#}");
    assert_eq!(good["connections"].as_u64(), Some(1), "{good:#}");
}

#[test]
fn connections_beyond_the_limit_are_closed_at_once() {
    let (mut server, port) = Proc::json_server(&["--max-connections", "1"]);
    let mut first = Proc::client(port, "first", &["-i", "50", "--id", "first"]);
    server.wait_beat("first", 1);
    let mut extra = TcpStream::connect(("127.0.0.1", port)).unwrap();
    assert_eq!(read_to_close(&mut extra), "");
    server.wait_stderr("connection limit reached");
    // Room again once the first is gone.
    first.kill();
    server.wait_event("first gone", |v| v["event"] == "disconnected");
    let mut next = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let beat = format!("Sequence #1: Sending heartbeat at {}. ", unix_stamp(4));
    next.write_all(beat.as_bytes()).unwrap();
    server.wait_beat(&format!("legacy@{}", next.local_addr().unwrap()), 1);
}

#[test]
fn client_warns_when_the_server_goes_silent() {
    // A "server" that accepts and reads but never acknowledges (the seed's first limitation:
    // its client never noticed).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let sink = std::thread::spawn(move || {
        let (mut s, _) = silent.accept().unwrap();
        let mut buf = [0u8; 1024];
        while matches!(crate::util::read_again(&mut s, &mut buf), Ok(n) if n > 0) {}
    });
    let mut client = Proc::client(port, "client", &["-i", "50", "--id", "lonely"]);
    client.wait_stderr("Server silent: no acknowledgement for");
    // Then it gives up (no --reconnect) like the seed does when the server goes away.
    client.expect_exit(1);
    client.wait_stderr("Server may have abruptly closed the connection (no ack for");
    sink.join().unwrap();
}

#[test]
fn a_client_with_a_short_ack_timeout_gives_up_on_a_stopped_server_after_it() {
    // A 1 s interval: the default ack timeout would be 5 s; --ack-timeout makes it 1.5 s.
    let (mut server, port) = Proc::json_server(&[]);
    let mut client = Proc::client(
        port,
        "client",
        &["-i", "1000", "--id", "short", "--ack-timeout", "1500ms"],
    );
    server.wait_beat("short", 2);
    // The server still holds the connection open, but answers nothing (SIGSTOP).
    server.signal("STOP");
    let stopped = real_now();
    client.expect_exit(1);
    let took = stopped.elapsed();
    server.signal("CONT");
    let line = client.wait_stderr("(no ack for ");
    let waited: f64 = line
        .split("no ack for ")
        .nth(1)
        .and_then(|t| t.split(['s', ')']).next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no duration in {line:?}"));
    assert!((1.5..2.5).contains(&waited), "{line}");
    // At most one ack timeout after the stop, well before the default's 5 s.
    assert!(
        took < std::time::Duration::from_millis(3_500),
        "{took:?}: {line}"
    );
}

#[test]
fn an_ack_timeout_not_above_the_interval_is_a_bad_flag_value() {
    // The core's rule and sentence, as a usage error (exit 2) before anything connects.
    let mut client = Proc::client(
        free_port(),
        "client",
        &["-i", "1000", "--id", "x", "--ack-timeout", "1s"],
    );
    client.expect_exit(2);
    let line =
        client.wait_stderr("--ack-timeout: ack timeout (1s) must be longer than the interval (1s)");
    assert!(line.starts_with("error:"), "{line}");
}
