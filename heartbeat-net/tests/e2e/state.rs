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

/// A `--state-dir` server on a free port, stopped at once with SIGTERM (it saves at its first
/// wake and at shutdown); returns it, exited, for its log.
fn start_and_stop(dir: &Path, args: &[&str]) -> Proc {
    let mut s = server(free_port(), dir, args);
    s.signal("TERM");
    s.expect_exit(0);
    s
}

/// A file outside the state directory that a link in it points to: it must never change.
struct Victim {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl Victim {
    fn new(text: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(dir.path(), "victim", text, 0o644);
        Self { _dir: dir, path }
    }

    #[track_caller]
    fn assert_untouched(&self, text: &str) {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::read_to_string(&self.path).unwrap(), text);
        let mode = std::fs::metadata(&self.path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644, "{mode:o}");
    }
}

/// `dir/name` is a regular file of mode 0600 (not a link).
#[track_caller]
fn assert_private_file(dir: &Path, name: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::symlink_metadata(dir.join(name)).unwrap();
    assert!(meta.is_file(), "{name}: {meta:?}");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}");
}

/// What was set aside as `name.corrupt-*`, and the warning that said so.
#[track_caller]
fn assert_set_aside(s: &mut Proc, dir: &Path, name: &str, why: &str) {
    let line = s.wait_stderr(&format!("/{name} cannot be used ("));
    assert!(line.contains("WARN") && line.contains(why), "{line}");
    let aside: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&format!("{name}.corrupt-")))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
}

/// A directory anyone but its owner can write in is refused: exit 2, naming it and the
/// `chmod` to run, before anything is written in it.
#[test]
fn a_state_directory_others_can_write_in_is_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir().unwrap();
    for (mode, who) in [
        (0o777, "every user"),
        (0o770, "its group"),
        (0o702, "every user"),
    ] {
        let dir = tmp.path().join(format!("state-{mode:o}"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
        let mut s = Proc::server(&["-p", "0", "--state-dir", arg(&dir)]);
        s.expect_exit(2);
        let line = s.wait_stderr("--state-dir: refusing");
        let shown = dir.display();
        assert!(
            line.contains(&format!(
                "refusing {shown}: it is writable by {who} (mode {mode:04o}); run `chmod go-w \
                 {shown}` (or `chmod 700`)"
            )),
            "{line}"
        );
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "nothing written"
        );
    }
}

/// A directory owned by another user is refused (exit 2, with the `chown` to run). Making one
/// takes root: without it the test says so and checks nothing.
#[test]
fn a_state_directory_owned_by_another_user_is_refused() {
    let euid = rustix::process::geteuid().as_raw();
    if euid != 0 {
        eprintln!("skipped: making a directory owned by another user takes root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("theirs");
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(4242), Some(4242)).unwrap();
    let mut s = Proc::server(&["-p", "0", "--state-dir", arg(&dir)]);
    s.expect_exit(2);
    let line = s.wait_stderr("--state-dir: refusing");
    assert!(
        line.contains(&format!(
            "it is owned by uid 4242, neither the user running this (uid 0) nor root; run `chown \
             0 {}`",
            dir.display()
        )),
        "{line}"
    );
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "nothing written"
    );
}

/// A link at `state.tmp` is set aside, not written through: the file it points to keeps its
/// text and mode, and the save is a fresh private file.
#[test]
fn a_link_at_the_temporary_file_is_never_written_through() {
    let dir = tempfile::tempdir().unwrap();
    let victim = Victim::new("not yours\n");
    std::os::unix::fs::symlink(&victim.path, dir.path().join("state.tmp")).unwrap();
    let mut s = start_and_stop(dir.path(), &[]);
    victim.assert_untouched("not yours\n");
    assert_set_aside(&mut s, dir.path(), "state.tmp", "a symbolic link");
    assert_private_file(dir.path(), "state");
    assert!(!dir.path().join("state.tmp").exists());
}

/// A stale `state.tmp` (a crash) is removed and created afresh, never opened as found: here a
/// hard link to another file, which keeps its text.
#[test]
fn a_stale_temporary_file_is_replaced_not_reused() {
    let dir = tempfile::tempdir().unwrap();
    let victim = Victim::new("not yours\n");
    std::fs::hard_link(&victim.path, dir.path().join("state.tmp")).unwrap();
    let mut s = start_and_stop(dir.path(), &[]);
    victim.assert_untouched("not yours\n");
    assert_set_aside(&mut s, dir.path(), "state.tmp", "2 names (hard links)");
    // A plain one left by a crash is simply replaced.
    write_file(dir.path(), "state.tmp", "half a save", 0o644);
    start_and_stop(dir.path(), &[]);
    assert_private_file(dir.path(), "state");
    assert!(!dir.path().join("state.tmp").exists());
    let text = std::fs::read_to_string(dir.path().join("state")).unwrap();
    assert!(text.starts_with("heartbeat-state 1 "), "{text}");
}

/// A state file that is a link is not read: set aside (with its journal), the server starts
/// empty, and the file it points to is left alone.
#[test]
fn a_link_at_the_state_file_is_never_read() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut first = server(port, dir.path(), &[]);
    let mut c = Proc::client(port, "c", &["-i", "20", "--count", "2", "--id", "c"]);
    c.expect_exit(0);
    first.wait_transition("left");
    first.signal("TERM");
    first.expect_exit(0);
    let saved = std::fs::read_to_string(dir.path().join("state")).unwrap();
    let victim = Victim::new(&saved);
    std::fs::remove_file(dir.path().join("state")).unwrap();
    std::os::unix::fs::symlink(&victim.path, dir.path().join("state")).unwrap();
    let mut second = server(free_port(), dir.path(), &[]);
    assert!(second.summary().is_empty(), "nothing restored");
    assert_set_aside(&mut second, dir.path(), "state", "a symbolic link");
    second.wait_stderr("State: nothing saved in ");
    assert!(
        !second.stderr().iter().any(|l| l.contains("restored from")),
        "{:#?}",
        second.stderr()
    );
    victim.assert_untouched(&saved);
    assert_private_file(dir.path(), "state");
}

/// A journal that is a link is set aside, not appended to nor emptied at the save: a line
/// another process writes in the file it points to stays.
#[test]
fn a_link_at_the_journal_is_never_written_through() {
    let dir = tempfile::tempdir().unwrap();
    start_and_stop(dir.path(), &[]);
    let victim = Victim::new("");
    std::fs::remove_file(dir.path().join("journal")).unwrap();
    std::os::unix::fs::symlink(&victim.path, dir.path().join("journal")).unwrap();
    let port = free_port();
    let mut s = server(port, dir.path(), &["--state-interval", "10min"]);
    let mut c = Proc::client(port, "c", &["-i", "20", "--count", "5", "--id", "j"]);
    c.expect_exit(0);
    s.wait_transition("left");
    // Another process's line, which a save must not wipe.
    std::fs::write(&victim.path, "another process's line\n").unwrap();
    let clients = s.summary();
    assert_eq!(client_summary(&clients, "j")["received"], 5);
    victim.assert_untouched("another process's line\n");
    assert_set_aside(&mut s, dir.path(), "journal", "a symbolic link");
    assert_private_file(dir.path(), "journal");
    // The changes went to the journal of its own, and the next server has them.
    let mut next = server(free_port(), dir.path(), &[]);
    next.wait_stderr("State: 1 client(s) restored from ");
}

/// A lock that is a link is set aside: the file it points to is not created, and the server
/// locks a lock of its own.
#[test]
fn a_link_at_the_lock_is_never_followed() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let target = elsewhere.path().join("created-by-the-server");
    std::os::unix::fs::symlink(&target, dir.path().join("lock")).unwrap();
    let mut s = start_and_stop(dir.path(), &[]);
    assert!(!target.exists(), "the link was followed");
    assert_set_aside(&mut s, dir.path(), "lock", "a symbolic link");
    assert_private_file(dir.path(), "lock");
}
