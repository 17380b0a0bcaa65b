//! `--state-dir`: the server's memory across restarts, after SIGTERM and after `kill -9`, and
//! what it does with a state directory it cannot use.

use std::path::Path;

use serde_json::Value;

use crate::util::{Proc, arg, assert_counts, client_summary, free_port, write_file};

/// A `--json` server on `port` keeping its state in `dir`, with `args`.
fn server(port: u16, dir: &Path, args: &[&str]) -> Proc {
    let mut all = vec!["--state-dir", arg(dir)];
    all.extend_from_slice(args);
    Proc::json_server_on_with(port, &all)
}

/// The `missed` events of `client`, as `(first, last)`.
fn missed(p: &Proc, client: &str) -> Vec<(u64, u64)> {
    p.events()
        .iter()
        .filter(|v| v["event"] == "missed" && v["client"] == client)
        .map(|v| (v["first"].as_u64().unwrap(), v["last"].as_u64().unwrap()))
        .collect()
}

fn count(p: &Proc, event: &str, client: &str) -> usize {
    p.events()
        .iter()
        .filter(|v| v["event"] == event && v["client"] == client)
        .count()
}

#[test]
fn after_kill_9_counting_goes_on_exactly_where_the_old_server_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // Full saves every 200 ms: the restart reads the last of them (written from the state the
    // writer keeps) and the journal after it.
    let mut first = server(port, dir.path(), &["--state-interval", "200ms"]);
    let mut client = Proc::client(port, "client", &["-i", "50", "--reconnect", "--id", "k9"]);
    first.wait_beat("k9", 20);
    // Between two heartbeats, none in flight: stop the client for a moment, kill the server.
    client.signal("STOP");
    std::thread::sleep(std::time::Duration::from_millis(300));
    first.kill_and_read();
    let last = first.highest_seq("k9").unwrap();
    let old_received = count(&first, "heartbeat", "k9") as u64;
    let old_missed: u64 = missed(&first, "k9").iter().map(|(f, l)| l - f + 1).sum();
    assert_eq!(
        old_received + old_missed,
        last,
        "the first server counted #1 to #{last}"
    );

    let mut second = server(port, dir.path(), &[]);
    second.wait_stderr("State: 1 client(s) restored from ");
    client.signal("CONT");
    let beat = second.wait_event("a beat of k9", |v| {
        v["event"] == "heartbeat" && v["client"] == "k9"
    });
    let resumed = beat["seq"].as_u64().unwrap();
    assert!(resumed > last + 1, "#{resumed} after #{last}");
    second.wait_event("a later beat of k9", |v| {
        v["event"] == "heartbeat" && v["client"] == "k9" && v["seq"].as_u64() > Some(resumed + 2)
    });
    // Every heartbeat the old server handled counts once, received; exactly the slots between
    // its last and the new server's first are missed, once; nothing is a duplicate.
    assert_eq!(
        missed(&second, "k9").first(),
        Some(&(last + 1, resumed - 1))
    );
    assert_eq!(count(&second, "duplicate", "k9"), 0);
    // The client says why: those slots fell while it was stopped and reconnecting.
    client.wait_stderr("were not sent");
    client.signal("INT");
    client.expect_exit(0);
    let clients = second.summary();
    let k9 = client_summary(&clients, "k9");
    let (received, missed_total) = (
        k9["received"].as_u64().unwrap(),
        k9["missed"].as_u64().unwrap(),
    );
    assert_eq!(
        received + missed_total,
        k9["highest_seq"].as_u64().unwrap(),
        "every slot counted once: {k9:#}"
    );
    assert_eq!(
        received,
        old_received + count(&second, "heartbeat", "k9") as u64
    );
    assert_eq!(k9["duplicates"], 0);
    assert_eq!(k9["connections"], 2);
}

#[test]
fn kill_9_under_traffic_counts_no_heartbeat_twice() {
    // Killed while heartbeats arrive every 10 ms (some read and not yet journaled, some in
    // flight): whatever is lost is missed, never received twice, and every slot is counted once.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let args = ["--state-interval", "50ms"];
    let mut srv = server(port, dir.path(), &args);
    let mut client = Proc::client(port, "client", &["-i", "10", "--reconnect", "--id", "busy"]);
    let mut handled = 0;
    for _ in 0..3 {
        srv.wait_event_after(30, "heartbeats of busy", |v| {
            v["event"] == "heartbeat" && v["client"] == "busy"
        });
        srv.kill_and_read();
        handled += count(&srv, "heartbeat", "busy") as u64;
        srv = server(port, dir.path(), &args);
        srv.wait_stderr("State: 1 client(s) restored from ");
    }
    srv.wait_event_after(30, "heartbeats of busy", |v| {
        v["event"] == "heartbeat" && v["client"] == "busy"
    });
    client.signal("INT");
    client.expect_exit(0);
    srv.wait_transition("left");
    handled += count(&srv, "heartbeat", "busy") as u64;
    let clients = srv.summary();
    let busy = client_summary(&clients, "busy");
    let received = busy["received"].as_u64().unwrap();
    assert_eq!(
        received + busy["missed"].as_u64().unwrap(),
        busy["highest_seq"].as_u64().unwrap(),
        "every slot counted once: {busy:#}"
    );
    // Each server printed a heartbeat's event before it journaled it: a heartbeat received
    // twice would make `received` exceed what the servers handled.
    assert!(
        received <= handled,
        "{received} received of {handled} handled"
    );
    assert_eq!(busy["duplicates"], 0);
    assert_eq!(busy["connections"], 4);
}

#[test]
fn a_clean_stop_saves_and_the_next_server_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut first = server(port, dir.path(), &[]);
    let mut a = Proc::client(port, "a", &["-i", "20", "--count", "5", "--id", "a"]);
    a.expect_exit(0);
    first.wait_transition("left");
    let clients = first.summary();
    let before = client_summary(&clients, "a");
    assert_eq!(before["received"], 5);
    // A slot skipped on a loaded machine is missed, and must be remembered too.
    let missed_before = before["missed"].as_u64().unwrap();

    let mut second = server(port, dir.path(), &[]);
    second.wait_stderr("State: 1 client(s) restored from ");
    // A new run of `a` is a restart of a known client, counted on top of the first.
    let mut again = Proc::client(port, "again", &["-i", "20", "--count", "3", "--id", "a"]);
    again.expect_exit(0);
    second.wait_event("a restart of a", |v| {
        v["event"] == "restarted" && v["client"] == "a" && v["previous"] == 5
    });
    second.wait_transition("left");
    let clients = second.summary();
    let a = client_summary(&clients, "a");
    let missed_after: u64 = missed(&second, "a").iter().map(|(f, l)| l - f + 1).sum();
    assert_counts(a, 8, missed_before + missed_after);
    assert_eq!(
        (a["restarts"].as_u64(), a["connections"].as_u64()),
        (Some(1), Some(2))
    );
}

#[test]
fn a_client_that_died_while_the_server_was_down_is_declared_down_a_grace_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let fixed = ["--detector", "fixed"];
    let mut first = server(port, dir.path(), &fixed);
    let mut client = Proc::client(port, "client", &["-i", "100", "--id", "gone"]);
    first.wait_beat("gone", 5);
    client.kill();
    first.kill_and_read();
    assert!(
        !first
            .events()
            .iter()
            .any(|v| v["event"] == "transition" && v["to"] == "down"),
        "the first server was killed at once"
    );

    let mut second = server(port, dir.path(), &fixed);
    second.wait_stderr("State: 1 client(s) restored from ");
    let down = second.wait_event("gone down", |v| {
        v["event"] == "transition" && v["client"] == "gone" && v["to"] == "down"
    });
    // The fixed detector: down an interval and a grace of two intervals after the last sign of
    // life, here the restart (the detector's history is not kept).
    let since = down["since_last_ms"].as_f64().unwrap();
    assert!((300.0..5000.0).contains(&since), "{down}");
    let clients = second.summary();
    assert_eq!(client_summary(&clients, "gone")["state"], "down");
}

#[test]
fn a_file_that_is_not_a_state_is_set_aside_and_the_server_starts_empty() {
    let dir = tempfile::tempdir().unwrap();
    let saved = {
        let port = free_port();
        let mut s = server(port, dir.path(), &[]);
        let mut c = Proc::client(port, "c", &["-i", "20", "--count", "2", "--id", "c"]);
        c.expect_exit(0);
        s.wait_transition("left");
        s.signal("TERM");
        s.expect_exit(0);
        std::fs::read_to_string(dir.path().join("state")).unwrap()
    };
    let damaged = saved.replacen("\"received\":2", "\"received\":3", 1);
    assert_ne!(damaged, saved);
    let newer = saved.replacen("heartbeat-state 1 ", "heartbeat-state 2 ", 1);
    for (text, why) in [
        (
            "{\"clients\":[]}\n".to_owned(),
            "not a heartbeat state file",
        ),
        (damaged, "its checksum does not match"),
        (
            newer,
            "a state file of version 2; this server reads version 1",
        ),
    ] {
        write_file(dir.path(), "state", &text, 0o600);
        let port = free_port();
        let mut s = server(port, dir.path(), &[]);
        let line = s.wait_stderr("cannot be used");
        assert!(line.contains("WARN") && line.contains(why), "{line}");
        assert!(line.contains("state.corrupt-"), "{line}");
        // Set aside, not deleted; and the server serves, starting with no clients.
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("state.corrupt-"))
            .collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join(&aside[0])).unwrap(),
            text
        );
        std::fs::remove_file(dir.path().join(&aside[0])).unwrap();
        let mut c = Proc::client(port, "c", &["-i", "20", "--count", "2", "--id", "new"]);
        c.expect_exit(0);
        s.wait_transition("left");
        let clients = s.summary();
        assert_eq!(clients.len(), 1, "{clients:#?}");
        assert_counts(client_summary(&clients, "new"), 2, 0);
    }
}

#[test]
fn two_servers_cannot_share_a_state_directory() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _first = server(port, dir.path(), &[]);
    let mut second = Proc::server(&["-p", "0", "--state-dir", arg(dir.path())]);
    second.expect_exit(1);
    let line = second.wait_stderr("in use by another heartbeat-server");
    assert!(line.contains("ERROR"), "{line}");
}

/// The state file is private: it holds the clients' sessions.
#[test]
fn the_state_files_are_readable_by_the_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("new");
    let port = free_port();
    let mut s = server(port, &sub, &[]);
    s.signal("TERM");
    s.expect_exit(0);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&sub), 0o700);
    for file in ["state", "journal"] {
        assert_eq!(mode(&sub.join(file)), 0o600, "{file}");
    }
    let _: Value = serde_json::from_str(
        std::fs::read_to_string(sub.join("state"))
            .unwrap()
            .lines()
            .nth(1)
            .unwrap(),
    )
    .unwrap();
}
