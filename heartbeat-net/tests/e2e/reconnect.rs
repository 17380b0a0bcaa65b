//! `--reconnect`: the client keeps its identity and its sequence numbering across a server
//! restart, so the outage shows up as missed heartbeats of the same client.

use crate::util::{Proc, free_port};

#[test]
fn server_restart_keeps_the_client_numbering() {
    let port = free_port();
    let mut first = Proc::json_server_on(port);
    let mut client = Proc::client(port, "client", &["-i", "50", "--reconnect", "--id", "r1"]);
    first.wait_beat("r1", 5);
    first.kill();
    let last_seen = first.highest_seq("r1").unwrap();

    // The client notices, and fails at least once to reconnect while no server is up.
    client.wait_stderr("Server may have abruptly closed the connection");
    client.wait_stderr("retrying in");
    let mut second = Proc::json_server_on(port);

    // The new server knows nothing of r1: its first heartbeat carries on the old numbering and
    // everything before it counts as one missed range.
    let beat = second.wait_event("a beat of r1", |v| {
        v["event"] == "heartbeat" && v["client"] == "r1"
    });
    let seq = beat["seq"].as_u64().unwrap();
    assert!(seq > last_seen + 1, "seq {seq} after {last_seen}");
    let missed: Vec<_> = second
        .events()
        .into_iter()
        .filter(|v| v["event"] == "missed")
        .collect();
    assert_eq!(missed.len(), 1, "{missed:#?}");
    assert_eq!(missed[0]["first"], 1);
    assert_eq!(missed[0]["last"].as_u64(), Some(seq - 1));
    // The client reported the slots that fell in the outage as skipped.
    client.wait_stderr("were not sent");

    client.signal("INT");
    client.expect_exit(0);
    let clients = second.summary();
    assert_eq!(clients.len(), 1);
    assert_eq!(clients[0]["missed"].as_u64(), Some(seq - 1));
    assert_eq!(clients[0]["state"], "left");
}
