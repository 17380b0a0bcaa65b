//! SIGINT and SIGTERM: stop accepting, print the summary, exit 0.

use crate::util::{Proc, client_summary};

#[test]
fn sigterm_prints_the_summary() {
    let (mut server, port) = Proc::json_server(&[]);
    let mut client = Proc::client(port, "client", &["-i", "50", "--count", "3", "--id", "s1"]);
    client.expect_exit(0);
    server.wait_event("goodbye", |v| v["event"] == "disconnected");
    let clients = server.summary();
    let s1 = client_summary(&clients, "s1");
    assert_eq!(s1["received"].as_u64(), Some(3));
    // The text report goes to stderr.
    server.wait_stderr_for("report header", |l| {
        l.starts_with("client") && l.contains("received") && l.contains("missed")
    });
    server.wait_stderr_for("report row", |l| l.starts_with("s1 "));
    server.wait_stderr("Received SIGTERM");
    // The summary is the last line on stdout.
    let events = server.events();
    assert_eq!(events.last().unwrap()["event"], "summary");
}

#[test]
fn sigint_stops_a_server_with_a_live_client() {
    let (mut server, port) = Proc::json_server(&[]);
    let mut client = Proc::client(port, "client", &["-i", "20", "--id", "live"]);
    server.wait_beat("live", 2);
    server.signal("INT");
    server.expect_exit(0);
    let summary = server.wait_event("summary", |v| v["event"] == "summary");
    assert_eq!(summary["clients"][0]["client"], "live");
    // The client sees the server close and, without --reconnect, exits 1 like the seed.
    client.expect_exit(1);
}

#[test]
fn sigterm_stops_a_client_cleanly() {
    let (mut server, port) = Proc::json_server(&[]);
    let mut client = Proc::client(port, "client", &["-i", "20", "--id", "bye"]);
    server.wait_beat("bye", 2);
    client.signal("TERM");
    client.expect_exit(0);
    let gone = server.wait_event("goodbye", |v| v["event"] == "disconnected");
    assert_eq!(gone["reason"], "client said goodbye");
}
