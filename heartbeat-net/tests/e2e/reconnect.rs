//! `--reconnect`: the client keeps its identity and its sequence numbering across a server
//! restart. The slots of the outage are skipped by the client; a server without a state
//! directory counts the client from the first heartbeat it gets (see `state.rs` for one that
//! remembers).

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
    // is the baseline there (what came before went to the first server, or nowhere while
    // none was up); nothing is missed. The client reported the slots of the outage as skipped.
    let beat = second.wait_event("a beat of r1", |v| {
        v["event"] == "heartbeat" && v["client"] == "r1"
    });
    let seq = beat["seq"].as_u64().unwrap();
    assert!(seq > last_seen + 1, "seq {seq} after {last_seen}");
    client.wait_stderr("were not sent");
    second.wait_event("a later beat of r1", |v| {
        v["event"] == "heartbeat" && v["client"] == "r1" && v["seq"].as_u64() > Some(seq + 2)
    });

    client.signal("INT");
    client.expect_exit(0);
    let clients = second.summary();
    assert_eq!(clients.len(), 1);
    // Nothing at or before the baseline is missed (a slot the client skipped later, on a
    // loaded machine, would rightly be).
    let early: Vec<_> = second
        .events()
        .into_iter()
        .filter(|v| v["event"] == "missed" && v["first"].as_u64() <= Some(seq))
        .collect();
    assert!(early.is_empty(), "{early:#?}");
    assert_eq!(clients[0]["state"], "left");
}
