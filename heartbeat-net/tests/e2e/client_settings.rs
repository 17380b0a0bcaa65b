//! `--client-settings`: detector settings per client id, at start and on SIGHUP; a bad file at
//! start exits 2 naming the line, a bad file at SIGHUP keeps the settings in force.

use std::path::Path;

use serde_json::Value;

use crate::util::{Proc, arg, write_file};

fn settings_file(dir: &Path, text: &str) -> String {
    arg(&write_file(dir, "clients.toml", text, 0o644)).to_owned()
}

/// A 300 ms grace for the clients matching `pattern`.
fn quick(pattern: &str) -> String {
    format!("[[client]]\nmatch = \"{pattern}\"\ndetector = \"fixed\"\ngrace = \"300ms\"\n")
}

/// Starts `a` and `b` (every 100 ms), kills both at once, and returns the client declared
/// down first and its `since_last_ms`, then the other's.
fn kill_both(server: &mut Proc, port: u16, a: &str, b: &str) -> [(String, f64); 2] {
    let mut clients: Vec<Proc> = [a, b]
        .iter()
        .map(|id| Proc::client(port, id, &["-i", "100", "--id", id]))
        .collect();
    server.wait_beat(a, 3);
    server.wait_beat(b, 3);
    for c in &mut clients {
        c.kill();
    }
    let is_down =
        |v: &Value, id: &str| v["event"] == "transition" && v["client"] == id && v["to"] == "down";
    let (ia, da) = server.wait_event_after(0, "a down", |v| is_down(v, a));
    let (ib, db) = server.wait_event_after(0, "b down", |v| is_down(v, b));
    let ms = |v: &Value| v["since_last_ms"].as_f64().unwrap();
    let mut downs = [(a.to_owned(), ms(&da), ia), (b.to_owned(), ms(&db), ib)];
    downs.sort_by_key(|d| d.2);
    downs.map(|(id, ms, _)| (id, ms))
}

/// Two clients under a server whose own detector waits 3 s: the one matching an entry with a
/// 300 ms grace is down first, 400 ms after its last heartbeat. SIGHUP with a file that
/// matches the other instead changes which: the running clients' detectors are rebuilt at
/// once. A bad file at SIGHUP is logged and the settings in force are kept.
#[test]
fn a_matching_client_goes_down_first_and_sighup_changes_which() {
    let dir = tempfile::tempdir().unwrap();
    let path = settings_file(dir.path(), &quick("quick-*"));
    let (mut server, port) = Proc::json_server(&[
        "--detector",
        "fixed",
        "--grace",
        "3s",
        "--client-settings",
        &path,
    ]);
    server.wait_stderr("Client settings (--client-settings): 1 rule(s): quick-* fixed grace=300ms");
    let [first, second] = kill_both(&mut server, port, "quick-1", "slow-1");
    assert_eq!(first.0, "quick-1");
    assert!((350.0..1_000.0).contains(&first.1), "{first:?}");
    assert!(second.1 >= 3_000.0, "{second:?}");

    // Reloaded while two new clients run: now the slow-* ones get the short grace.
    let mut running: Vec<Proc> = ["quick-2", "slow-2"]
        .iter()
        .map(|id| Proc::client(port, id, &["-i", "100", "--id", id]))
        .collect();
    server.wait_beat("quick-2", 3);
    server.wait_beat("slow-2", 3);
    settings_file(dir.path(), &quick("slow-*"));
    server.signal("HUP");
    let reloaded = server.wait_stderr("Reloaded --client-settings");
    assert!(
        reloaded.contains("1 rule(s): slow-* fixed grace=300ms")
            && reloaded.ends_with("detector changed for quick-1, quick-2, slow-1, slow-2"),
        "{reloaded}"
    );
    for c in &mut running {
        c.kill();
    }
    let is_down = |v: &Value| v["event"] == "transition" && v["to"] == "down";
    let (i, v) =
        server.wait_event_after(0, "slow-2 down", |v| is_down(v) && v["client"] == "slow-2");
    assert!(v["since_last_ms"].as_f64().unwrap() < 1_000.0, "{v}");
    let (j, _) = server.wait_event_after(0, "quick-2 down", |v| {
        is_down(v) && v["client"] == "quick-2"
    });
    assert!(i < j, "slow-2 first");

    // A bad file: logged, the settings in force kept (slow-* still quick).
    settings_file(
        dir.path(),
        "[[client]]\nmatch = \"quick-*\"\ngrace = \"soon\"\n",
    );
    server.signal("HUP");
    let error = server.wait_stderr("Reloading --client-settings");
    assert!(
        error.contains(&format!("{path}:3: ")) && error.ends_with("keeping the settings in force"),
        "{error}"
    );
    let [first, _] = kill_both(&mut server, port, "quick-3", "slow-3");
    assert_eq!(first.0, "slow-3");
}

/// A bad settings file at start is a usage error naming the line.
#[test]
fn a_bad_settings_file_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = settings_file(
        dir.path(),
        "[[client]]\nmatch = \"a\"\ndetector = \"fixed\"\nthreshold = 3\n",
    );
    let mut server = Proc::server(&["-p", "0", "--client-settings", &path]);
    server.expect_exit(2);
    server.wait_stderr(&format!("{path}:4: a: "));
}

/// Per-client settings and a QoS target would both pick each client's detector: together they
/// are a usage error, not a target silently ignored for the clients a rule matches.
#[test]
fn settings_and_a_qos_target_are_refused_together() {
    let dir = tempfile::tempdir().unwrap();
    let path = settings_file(
        dir.path(),
        "[[client]]\nmatch = \"a\"\ndetector = \"fixed\"\ngrace = \"3s\"\n",
    );
    let mut server = Proc::server(&[
        "-p",
        "0",
        "--client-settings",
        &path,
        "--target-detection",
        "3s",
        "--target-mistake-every",
        "30d",
    ]);
    server.expect_exit(2);
    server.wait_stderr("cannot be used with '--target-detection");
}
