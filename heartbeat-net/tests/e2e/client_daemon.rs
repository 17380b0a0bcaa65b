//! The client as a daemon: its default id (the host name) and what happens when two clients on
//! one host share it, several servers at once, and a client stalled by SIGSTOP.

use serde_json::Value;

use crate::util::{CLIENT, Proc, client_summary, free_port};

/// This machine's host name, as the client reads it (the kernel's).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned()
}

fn seqs(p: &Proc, client: &str) -> Vec<u64> {
    p.events()
        .iter()
        .filter(|v| v["event"] == "heartbeat" && v["client"] == client)
        .filter_map(|v| v["seq"].as_u64())
        .collect()
}

#[test]
fn a_second_client_with_the_same_default_id_is_refused_and_exits_1_saying_why() {
    let host = host_name();
    let (mut server, port) = Proc::json_server(&[]);
    let mut first = Proc::client(port, "first", &["-i", "50"]);
    server.wait_beat(&host, 2);
    // Without --reconnect the refusal ends it at once.
    let mut second = Proc::client(port, "second", &["-i", "50"]);
    second.expect_exit(1);
    let line = second.wait_stderr("refused this client's id");
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains(&format!("id {host}:")), "{line}");
    assert!(line.contains("--id"), "{line}");
    // The first one was not disturbed: still connected, never restarted.
    let more = seqs(&server, &host).len() as u64 + 2;
    server.wait_event("more beats of the first", |v| {
        v["event"] == "heartbeat" && v["client"] == host.as_str() && v["seq"].as_u64() > Some(more)
    });
    first.signal("INT");
    first.expect_exit(0);
    let clients = server.summary();
    let c = client_summary(&clients, &host);
    assert_eq!(
        (c["restarts"].as_u64(), c["connections"].as_u64()),
        (Some(0), Some(1))
    );
}

#[test]
fn with_reconnect_a_refused_id_is_retried_for_the_servers_idle_timeout_then_exits_1() {
    let (mut server, port) = Proc::json_server(&[]);
    let mut first = Proc::client(port, "first", &["-i", "50", "--id", "twin"]);
    server.wait_beat("twin", 2);
    // It could be this client's own previous run, half-open: the server drops that after its
    // idle timeout (5 s for a 50 ms interval). Beyond it, it is another client.
    let mut second = Proc::client(port, "second", &["-i", "50", "--id", "twin", "--reconnect"]);
    second.wait_stderr("reconnecting in");
    second.expect_exit(1);
    second.wait_stderr("refused this client's id twin");
    first.signal("INT");
    first.expect_exit(0);
}

#[test]
fn a_client_stopped_for_longer_than_its_ack_timeout_says_it_stalled_and_carries_on() {
    let (mut server, port) = Proc::json_server(&[]);
    // 200 ms: the ack timeout is 2 s; stopped for 3 s.
    let mut client = Proc::client(port, "client", &["-i", "200", "--count", "20", "--id", "z"]);
    server.wait_beat("z", 3);
    client.signal("STOP");
    std::thread::sleep(std::time::Duration::from_secs(3));
    client.signal("CONT");
    client.expect_exit(0);
    let line = client.wait_stderr("This client was stalled for ");
    assert!(line.contains("WARN"), "{line}");
    let secs: f64 = line
        .split("stalled for ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|t| t.parse().ok())
        .unwrap();
    assert!((2.5..10.0).contains(&secs), "{line}");
    assert!(
        !client
            .stderr()
            .iter()
            .any(|l| l.contains("abruptly closed")),
        "{:#?}",
        client.stderr()
    );
    // Every heartbeat it sent was counted; the slots of the stall are missed, once.
    let clients = server.summary();
    let z = client_summary(&clients, "z");
    assert_eq!(z["received"], 20);
    assert!(z["missed"].as_u64() >= Some(10), "{z:#}");
}

/// Two JSON servers `a` and `b` on free ports, and a client `id` sending to both every 50 ms
/// with `extra` arguments, once each server has heard its heartbeat `beats`:
/// `(a, b, a's address, b's address, client)`.
fn two_servers_one_client(
    id: &str,
    extra: &[&str],
    beats: u64,
) -> (Proc, Proc, String, String, Proc) {
    let (mut a, pa) = Proc::json_server(&[]);
    let (mut b, pb) = Proc::json_server(&[]);
    let (sa, sb) = (format!("127.0.0.1:{pa}"), format!("127.0.0.1:{pb}"));
    let mut args = vec!["--server", &sa, "--server", &sb, "-i", "50", "--id", id];
    args.extend_from_slice(extra);
    let client = Proc::spawn(CLIENT, "client", &args);
    a.wait_beat(id, beats);
    b.wait_beat(id, beats);
    (a, b, sa, sb, client)
}

#[test]
fn several_servers_get_the_same_numbering_and_one_lost_is_not_fatal() {
    let (mut a, mut b, sa, sb, mut client) = two_servers_one_client("m", &["--count", "40"], 5);
    b.kill_and_read();
    // Without --reconnect the lost server is given up; the client goes on with the other.
    let lost = client.wait_stderr(&format!("Lost server {sb}"));
    assert!(
        lost.contains("giving up on it: 1 of 2 servers reachable"),
        "{lost}"
    );
    client.expect_exit(0);
    let clients = a.summary();
    assert_eq!(client_summary(&clients, "m")["received"], 40);
    // One schedule: both heard #1 first, and a number heard by both was sent at the same time
    // to each (within the interval).
    let stamps = |p: &Proc| -> std::collections::BTreeMap<u64, f64> {
        p.events()
            .iter()
            .filter(|v| v["event"] == "heartbeat" && v["client"] == "m")
            .map(|v| {
                let sent = v["sent"].as_str().unwrap().parse().unwrap();
                (v["seq"].as_u64().unwrap(), sent)
            })
            .collect()
    };
    let (on_a, on_b) = (stamps(&a), stamps(&b));
    assert_eq!(
        (on_a.keys().next(), on_b.keys().next()),
        (Some(&1), Some(&1))
    );
    let both: Vec<_> = on_b
        .iter()
        .filter(|(seq, _)| on_a.contains_key(seq))
        .collect();
    assert!(both.len() >= 5, "{on_b:?}");
    for (seq, sent) in both {
        assert!(
            (on_a[seq] - sent).abs() < 0.05,
            "#{seq}: {} vs {sent}",
            on_a[seq]
        );
    }
    let to_a = format!("[{sa}] Sequence #");
    assert!(client.stderr().iter().any(|l| l.contains(&to_a)));
}

#[test]
fn with_several_servers_the_client_fails_only_when_all_are_gone() {
    let (mut a, mut b, sa, _, mut client) = two_servers_one_client("m2", &[], 3);
    a.kill();
    client.wait_stderr(&format!("Lost server {sa}"));
    b.kill();
    client.expect_exit(1);
    client.wait_stderr("Every server is gone");
}

#[test]
fn with_reconnect_a_lost_server_is_regained() {
    let (mut a, pa) = Proc::json_server(&[]);
    let pb = free_port();
    let mut b = Proc::json_server_on(pb);
    let (sa, sb) = (format!("127.0.0.1:{pa}"), format!("127.0.0.1:{pb}"));
    let mut client = Proc::spawn(
        CLIENT,
        "client",
        &[
            "--server",
            &sa,
            "--server",
            &sb,
            "-i",
            "50",
            "--reconnect",
            "--id",
            "r",
        ],
    );
    b.wait_beat("r", 3);
    b.kill();
    let lost = client.wait_stderr(&format!("Lost server {sb}"));
    assert!(
        lost.contains("reconnecting: 1 of 2 servers reachable"),
        "{lost}"
    );
    let mut b = Proc::json_server_on(pb);
    let regained = client.wait_stderr(&format!("Regained server {sb}"));
    assert!(regained.contains("2 of 2 servers reachable"), "{regained}");
    let first: Value = b.wait_event("a beat of r", |v| {
        v["event"] == "heartbeat" && v["client"] == "r"
    });
    // The new b takes the numbering where the schedule is: a hears the same numbers meanwhile.
    let seq = first["seq"].as_u64().unwrap();
    a.wait_event("a beat of r as late", |v| {
        v["event"] == "heartbeat" && v["client"] == "r" && v["seq"].as_u64() >= Some(seq)
    });
    client.signal("TERM");
    client.expect_exit(0);
}
