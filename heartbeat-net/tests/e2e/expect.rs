//! `--expect`, SIGHUP and SIGUSR1: never-seen clients, a reload that adds, keeps and forgets,
//! a bad file kept out, new keys for the next connections, a report on request.

use std::path::Path;

use crate::metrics::{metrics_addr, scrape, state_of, value};
use crate::util::{Proc, arg, client_summary, write_file};

fn expect_file(dir: &Path, text: &str) -> String {
    arg(&write_file(dir, "expect", text, 0o644)).to_owned()
}

/// An expected client that never comes is down, from `unknown`, when its grace ends; one that
/// comes in time is simply up. SIGHUP adds a client (its grace counted from the reload),
/// forgets a removed one never heard from, keeps a removed one that is connected; a file that
/// cannot be read is logged and the list in force kept. SIGUSR1 prints the report and a summary
/// that is not final, and the server goes on.
#[test]
fn never_seen_clients_and_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let path = expect_file(dir.path(), "# the fleet\nghost 100ms\npresent 50ms\n");
    let (mut server, port) = Proc::json_server(&[
        "--detector",
        "fixed",
        "--grace",
        "20x",
        "--expect",
        &path,
        "--expect-grace",
        "2s",
    ]);
    server.wait_stderr("Expecting 2 client(s) (--expect)");
    let mut present = Proc::client(port, "present", &["-i", "50", "--id", "present"]);
    server.wait_beat("present", 2);
    let ghost = server.wait_event("ghost never seen", |v| {
        v["event"] == "transition" && v["client"] == "ghost"
    });
    assert_eq!(
        (
            &ghost["from"],
            &ghost["to"],
            &ghost["since_last_ms"],
            &ghost["peer"]
        ),
        (
            &"unknown".into(),
            &"down".into(),
            &serde_json::Value::Null,
            &serde_json::Value::Null
        )
    );
    server.wait_stderr("Client ghost is down: expected (--expect) but never heard from");
    assert!(
        !server
            .events()
            .iter()
            .any(|v| v["event"] == "transition" && v["client"] == "present"),
        "heard in time: no transition"
    );

    // The report on request: both clients, the ghost down and never seen.
    server.signal("USR1");
    server.wait_stderr("Report (SIGUSR1), 2 client(s):");
    let summary = server.wait_event("a summary on request", |v| {
        v["event"] == "summary" && v["final"] == false
    });
    let clients = summary["clients"].as_array().unwrap();
    let ghost_row = client_summary(clients, "ghost");
    assert_eq!(
        (
            &ghost_row["state"],
            &ghost_row["expected"],
            &ghost_row["first_seen"]
        ),
        (&"down".into(), &true.into(), &serde_json::Value::Null)
    );
    assert_eq!(client_summary(clients, "present")["state"], "up");

    // Reload: ghost removed (forgotten), present removed (connected: stays), newcomer added.
    expect_file(dir.path(), "newcomer 100ms\n");
    server.signal("HUP");
    let reloaded = server.wait_stderr("Reloaded --expect");
    assert!(
        reloaded.ends_with(
            "1 client(s) expected; added: newcomer; removed: ghost, present (forgotten, never \
             heard from: ghost)"
        ),
        "{reloaded}"
    );
    let newcomer = server.wait_event("newcomer never seen", |v| {
        v["event"] == "transition" && v["client"] == "newcomer"
    });
    // Its grace ran from the reload: two seconds after the ghost's at least.
    let after = newcomer["time"].as_f64().unwrap() - ghost["time"].as_f64().unwrap();
    assert!(after >= 2.0, "{after}");

    // A file that cannot be read: logged, the list in force kept.
    std::fs::remove_file(dir.path().join("expect")).unwrap();
    server.signal("HUP");
    server.wait_stderr("Reloading --expect: cannot read");
    // The server went on all along: the client is still heard.
    let seq = server.highest_seq("present").unwrap();
    server.wait_beat("present", seq + 2);
    present.signal("TERM");
    present.expect_exit(0);
    let clients = server.summary();
    let names: Vec<&str> = clients
        .iter()
        .map(|c| c["client"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["newcomer", "present"]);
    assert_eq!(client_summary(&clients, "newcomer")["expected"], true);
    assert_eq!(client_summary(&clients, "present")["expected"], false);
}

/// A bad expect file at start is a usage error naming the line.
#[test]
fn a_bad_expect_file_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = expect_file(dir.path(), "a 1s\nb ten\n");
    let mut server = Proc::server(&["-p", "0", "--expect", &path]);
    server.expect_exit(2);
    server.wait_stderr(&format!("{path}:2: interval"));
}

/// SIGHUP reloads the key table: the next connections are checked against the new keys,
/// the connected client stays; a bad table is refused and the old one kept.
#[test]
fn sighup_reloads_the_keys_for_the_next_connections() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let old = "old-secret-0123456789abcdef";
    let new = "new-secret-0123456789abcdef";
    let table = write_file(d, "auth-keys", &format!("a {old}\nb {old}\n"), 0o600);
    let old_key = write_file(d, "old.key", &format!("{old}\n"), 0o600);
    let new_key = write_file(d, "new.key", &format!("{new}\n"), 0o600);
    let (mut server, port) = Proc::json_server(&["--auth-keys", arg(&table)]);
    let auth = |id: &str, key: &Path| {
        Proc::client(
            port,
            id,
            &["-i", "50", "--id", id, "--auth-key-file", arg(key)],
        )
    };
    let mut a = auth("a", &old_key);
    server.wait_beat("a", 2);
    write_file(
        d,
        "auth-keys",
        &format!("a {new}\nb {new}\nc {new}\n"),
        0o600,
    );
    server.signal("HUP");
    server.wait_stderr("Reloaded --auth-keys");
    // The old key no longer lets anyone in; the new one does; `a` stays connected.
    let mut stale = auth("b", &old_key);
    server.wait_stderr("Authentication failed");
    let mut b = auth("b", &new_key);
    server.wait_beat("b", 2);
    let seq = server.highest_seq("a").unwrap();
    server.wait_beat("a", seq + 2);
    // A table others may write is refused on reload too; the keys in force stay (only they
    // know `c`).
    write_file(d, "auth-keys", &format!("b {old}\n"), 0o666);
    server.signal("HUP");
    server.wait_stderr("Reloading --auth-keys: refusing");
    let mut c = auth("c", &new_key);
    server.wait_beat("c", 2);
    for p in [&mut a, &mut b, &mut stale, &mut c] {
        p.kill();
    }
    server.kill();
}

/// In `/metrics`, an expected client not heard from yet is `unknown`, with
/// `heartbeat_client_expected` 1 and no last-heartbeat series (what the `HeartbeatClientNeverSeen`
/// rule reads); one that is heard from is `up`, still expected.
#[test]
fn expected_clients_in_the_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let path = expect_file(dir.path(), "waiting 1s\ncomes 50ms\n");
    let (mut server, port) = Proc::json_server(&[
        "--expect",
        &path,
        "--expect-grace",
        "10min",
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    let addr = metrics_addr(&mut server);
    let mut comes = Proc::client(port, "comes", &["-i", "50", "--id", "comes"]);
    server.wait_beat("comes", 2);
    let s = scrape(&addr);
    let waiting = [("client", "waiting")];
    assert_eq!(state_of(&s, "waiting").as_deref(), Some("unknown"));
    assert_eq!(value(&s, "heartbeat_client_expected", &waiting), Some(1.0));
    assert_eq!(
        value(
            &s,
            "heartbeat_client_last_heartbeat_timestamp_seconds",
            &waiting
        ),
        None
    );
    assert_eq!(state_of(&s, "comes").as_deref(), Some("up"));
    let comes_label = [("client", "comes")];
    assert_eq!(
        value(&s, "heartbeat_client_expected", &comes_label),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "heartbeat_clients", &[("state", "unknown")]),
        Some(1.0)
    );
    comes.kill();
}

/// `--expect` and `--state-dir` together, as an SRE runs them: a client heard from and then
/// killed is paged once (`up->suspect`, `suspect->down`), an expected client never heard from
/// once (`unknown->down`), a client that said goodbye once (`up->left`), and none of them again
/// across three restarts, clean or `kill -9`: the hook runs for no state announced before a
/// restart, and the restarted servers' event streams hold no transition.
#[test]
fn restarts_page_nobody_already_paged() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let pages = dir.path().join("pages");
    let hook = write_file(
        dir.path(),
        "hook.sh",
        &format!(
            "#!/bin/sh\necho \"$HEARTBEAT_CLIENT $HEARTBEAT_FROM->$HEARTBEAT_TO\" >> \"{}\"\n",
            pages.display()
        ),
        0o755,
    );
    let list = expect_file(dir.path(), "db 100ms\nghost 100ms\nbye 100ms\n");
    let port = crate::util::free_port();
    let args = [
        "--detector",
        "fixed",
        "--expect",
        &list,
        "--state-dir",
        arg(&state),
        "--on-transition",
        arg(&hook),
    ];
    let read_pages = || {
        let mut lines: Vec<String> = std::fs::read_to_string(&pages)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        lines.sort();
        lines
    };
    let paged = [
        "bye up->left",
        "db suspect->down",
        "db up->suspect",
        "ghost unknown->down",
    ];
    let mut first = Proc::json_server_on_with(port, &args);
    let mut db = Proc::client(port, "db", &["-i", "100", "--id", "db"]);
    let mut bye = Proc::client(port, "bye", &["-i", "100", "--id", "bye", "--count", "3"]);
    bye.expect_exit(0);
    first.wait_beat("db", 5);
    db.kill();
    for _ in 0..150 {
        if read_pages() == paged {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(read_pages(), paged, "before the first restart");
    first.signal("TERM");
    first.wait_exit();

    for (restart, kill_9) in [(1, false), (2, true), (3, false)] {
        let mut again = Proc::json_server_on_with(port, &args);
        again.wait_stderr("State: 3 client(s) restored from ");
        // Past every grace a restart could start: the never-seen grace and the detector's.
        std::thread::sleep(std::time::Duration::from_millis(1500));
        let clients = if kill_9 {
            again.kill_and_read();
            Vec::new()
        } else {
            again.summary()
        };
        let transitions: Vec<String> = again
            .events()
            .iter()
            .filter(|v| v["event"] == "transition")
            .map(ToString::to_string)
            .collect();
        assert_eq!(transitions, Vec::<String>::new(), "restart {restart}");
        for (name, state) in [("db", "down"), ("ghost", "down"), ("bye", "left")] {
            if !clients.is_empty() {
                assert_eq!(client_summary(&clients, name)["state"], state, "{name}");
            }
        }
        assert_eq!(read_pages(), paged, "restart {restart}");
    }
}

/// `--left-grace`: an expected client that said goodbye and stays away is down once the grace
/// is over (the hook runs for `left->down`, the log says why); one that comes back in time is
/// simply up again.
#[test]
fn an_expected_client_that_left_and_never_came_back_is_down_after_the_left_grace() {
    let dir = tempfile::tempdir().unwrap();
    let list = expect_file(dir.path(), "gone 100ms\nback 100ms\n");
    let (mut server, port) = Proc::json_server(&[
        "--detector",
        "fixed",
        "--expect",
        &list,
        "--left-grace",
        "2s",
    ]);
    server.wait_stderr("Expecting 2 client(s) (--expect)");
    for id in ["gone", "back"] {
        Proc::client(port, id, &["-i", "100", "--id", id, "--count", "3"]).expect_exit(0);
    }
    let mut back = Proc::client(port, "back", &["-i", "100", "--id", "back"]);
    let left = server.wait_event("gone left", |v| {
        v["event"] == "transition" && v["client"] == "gone" && v["to"] == "left"
    });
    let down = server.wait_event("gone down", |v| {
        v["event"] == "transition" && v["client"] == "gone" && v["to"] == "down"
    });
    assert_eq!(down["from"], "left", "{down}");
    let after = down["time"].as_f64().unwrap() - left["time"].as_f64().unwrap();
    assert!(
        (1.9..4.0).contains(&after),
        "down {after:.3} s after it left"
    );
    server.wait_stderr("Client gone is down: expected (--expect), it said goodbye and has not come back within --left-grace");
    back.kill();
    assert!(
        !server.events().iter().any(|v| v["event"] == "transition"
            && v["client"] == "back"
            && v["from"] == "left"
            && v["to"] == "down"),
        "back came back in time"
    );
}
