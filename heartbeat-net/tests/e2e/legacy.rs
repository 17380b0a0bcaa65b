//! The seed's legacy text format: auto-detected, every heartbeat of a burst counted.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::util::{
    Proc, assert_counts, assert_sent_all_counted, client_summary, skipped_by, unix_stamp,
};

#[test]
fn a_burst_of_five_in_one_write_counts_five() {
    let (mut server, port) = Proc::json_server(&[]);
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let key = format!("legacy@{}", stream.local_addr().unwrap());
    // Exactly what the seed's client.py writes, five times, in one write.
    let stamp = unix_stamp(4);
    let burst: String = (1..=5)
        .map(|i| format!("Sequence #{i}: Sending heartbeat at {stamp}. "))
        .collect();
    stream.write_all(burst.as_bytes()).unwrap();
    server.wait_beat(&key, 5);
    drop(stream);
    server.wait_event("legacy disconnect", |v| {
        v["event"] == "disconnected" && v["client"] == key.as_str()
    });
    let clients = server.summary();
    let c = client_summary(&clients, &key);
    assert_eq!(c["protocol"], "legacy");
    assert_counts(c, 5, 0);
}

#[test]
fn legacy_client_against_our_server() {
    let (mut server, port) = Proc::json_server(&[]);
    let mut client = Proc::client(port, "legacy", &["--legacy", "-i", "50", "--count", "4"]);
    client.expect_exit(0);
    server.wait_event("legacy disconnect", |v| v["event"] == "disconnected");
    // A slot the client woke too late for (a loaded machine) is skipped, not sent late: the
    // server then counts it missed. `--count 4` is four heartbeats sent, all received.
    let sent = client
        .stderr()
        .iter()
        .filter(|l| l.contains(": Sending heartbeat at "))
        .count() as u64;
    assert_eq!(sent, 4, "{:#?}", client.stderr());
    let clients = server.summary();
    assert_eq!(clients.len(), 1);
    assert_eq!(clients[0]["protocol"], "legacy");
    assert_sent_all_counted(&clients[0], sent);
    assert_eq!(
        clients[0]["missed"].as_u64(),
        Some(skipped_by(&client)),
        "{:#}",
        clients[0]
    );
}

#[test]
fn legacy_connection_gets_no_bytes_back() {
    let (mut server, port) = Proc::json_server(&[]);
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let beat = format!("Sequence #1: Sending heartbeat at {}. ", unix_stamp(4));
    stream.write_all(beat.as_bytes()).unwrap();
    server.wait_beat(&format!("legacy@{}", stream.local_addr().unwrap()), 1);
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(n) => panic!("got {n} bytes: {:?}", &buf[..n]),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{e}"
        ),
    }
}
