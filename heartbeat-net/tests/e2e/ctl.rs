//! `heartbeat-server ctl`: a maintenance window (silence) and a decommission (forget) on a
//! running server, across restarts, against the hooks, `/clients`, `/metrics` and `--expect`;
//! and a control socket that garbage, floods and missing servers do not hurt.

use std::io::{Read as _, Write as _};
use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::Duration;

use serde_json::Value;

use crate::metrics::{http, metrics_addr, scrape, value};
use crate::util::{Proc, SERVER, WAIT, arg, wait_until, write_file};

/// `heartbeat-server ctl --socket SOCKET ARGS`: the exit code, stdout and stderr.
fn ctl(socket: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(SERVER)
        .args(["ctl", "--socket", arg(socket)])
        .args(args)
        .output()
        .expect("run heartbeat-server ctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `ctl` that must exit `code`; its stdout and stderr.
#[track_caller]
fn ctl_exits(socket: &Path, args: &[&str], code: i32) -> (String, String) {
    let (got, out, err) = ctl(socket, args);
    assert_eq!(got, code, "ctl {args:?}: stdout {out:?} stderr {err:?}");
    (out, err)
}

/// A hook that appends `CLIENT FROM TO SILENCE_ENDED` to `DIR/hooks.log`.
fn log_hook(dir: &Path) -> (String, PathBuf) {
    let log = dir.join("hooks.log");
    let script = write_file(
        dir,
        "hook.sh",
        &format!(
            "#!/bin/sh\necho \"$HEARTBEAT_CLIENT $HEARTBEAT_FROM $HEARTBEAT_TO \
             $HEARTBEAT_SILENCE_ENDED\" >> \"{}\"\n",
            log.display()
        ),
        0o755,
    );
    (arg(&script).to_owned(), log)
}

/// The lines of the hook log about `client`.
fn hook_lines(log: &Path, client: &str) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.split(' ').next() == Some(client))
        .map(str::to_owned)
        .collect()
}

/// `GET /clients`: the client `id`'s object, if it is listed.
fn listed(addr: &str, id: &str) -> Option<Value> {
    let (status, body) = http(addr, "GET", "/clients");
    assert_eq!(status, 200, "{body}");
    let report: Value = serde_json::from_str(&body).unwrap();
    report["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["client"] == id)
        .cloned()
}

/// A `--json` server with the state directory `state`, metrics, the hook, a quick detector
/// (down a second after a 50 ms client goes quiet) and one hook at a time, plus `more`.
fn server(state: &Path, hook: &str, more: &[&str]) -> (Proc, String) {
    let mut args = vec![
        "-p",
        "0",
        "--json",
        "--state-dir",
        arg(state),
        "--metrics-addr",
        "127.0.0.1:0",
        "--on-transition",
        hook,
        "--hook-concurrency",
        "1",
        "--detector",
        "fixed",
        "--grace",
        "20x",
    ];
    args.extend_from_slice(more);
    let mut s = Proc::server(&args);
    let _ = s.port();
    let addr = metrics_addr(&mut s);
    s.wait_stderr("Control socket on");
    (s, addr)
}

/// A silenced client that dies pages nobody, and is shown as silenced; a restart keeps the
/// silence (and announces nothing); unsilencing it while it is down runs its hook once.
#[test]
fn a_silenced_client_pages_nobody_until_its_silence_ends() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let socket = state.join("control.sock");
    let (hook, log) = log_hook(dir.path());
    let (mut s, addr) = server(&state, &hook, &[]);
    let port = s.port().to_string();
    let mut web2 = Proc::client(
        port.parse().unwrap(),
        "web-2",
        &["-i", "50", "--id", "web-2"],
    );
    let mut web3 = Proc::client(
        port.parse().unwrap(),
        "web-3",
        &["-i", "50", "--id", "web-3"],
    );
    s.wait_beat("web-2", 3);
    s.wait_beat("web-3", 3);
    let mode = std::fs::symlink_metadata(&socket).unwrap();
    assert!(mode.file_type().is_socket());
    assert_eq!(mode.permissions().mode() & 0o777, 0o600);

    let (out, _) = ctl_exits(&socket, &["silence", "web-2", "--until", "1h"], 0);
    assert!(out.starts_with("web-2 silenced until "), "{out}");
    let (out, _) = ctl_exits(&socket, &["list"], 0);
    assert!(
        out.starts_with("web-2 silenced until ") && out.contains("(in 59m)"),
        "{out}"
    );

    // web-2 dies first, web-3 after: hooks run in order, one at a time, so once web-3's down
    // hook ran, web-2's would have.
    web2.kill();
    let down = s.wait_event("web-2 down", |v| {
        v["event"] == "transition" && v["client"] == "web-2" && v["to"] == "down"
    });
    let until = down["silenced_until"]
        .as_f64()
        .expect("marked silenced in --json");
    s.wait_stderr("Client web-2 is silenced until");
    web3.kill();
    s.wait_event("web-3 down", |v| {
        v["event"] == "transition" && v["client"] == "web-3" && v["to"] == "down"
    });
    wait_until("web-3's down hook", || {
        hook_lines(&log, "web-3")
            .iter()
            .any(|l| l.contains(" down"))
    });
    assert_eq!(hook_lines(&log, "web-2"), Vec::<String>::new());

    // Shown: /clients and /metrics.
    let c = listed(&addr, "web-2").expect("a silenced client is still shown");
    assert_eq!(c["silenced_until"].as_f64(), Some(until));
    assert!(
        listed(&addr, "web-3")
            .unwrap()
            .get("silenced_until")
            .is_none()
    );
    wait_until("the silence in /metrics", || {
        let m = scrape(&addr);
        value(&m, "heartbeat_client_silenced", &[("client", "web-2")]) == Some(1.0)
    });
    let m = scrape(&addr);
    assert_eq!(
        value(&m, "heartbeat_client_silenced", &[("client", "web-3")]),
        Some(0.0)
    );

    // A restart: still silenced, still down, nothing announced.
    s.signal("TERM");
    s.expect_exit(0);
    assert!(!socket.exists(), "the socket is removed at a clean stop");
    let (mut s, addr) = server(&state, &hook, &[]);
    s.wait_stderr("Silences: 1 restored");
    let (out, _) = ctl_exits(&socket, &["list"], 0);
    assert!(out.starts_with("web-2 silenced until "), "{out}");
    assert_eq!(
        listed(&addr, "web-2").unwrap()["silenced_until"].as_f64(),
        Some(until)
    );
    let m = scrape(&addr);
    assert_eq!(
        value(&m, "heartbeat_client_silenced", &[("client", "web-2")]),
        Some(1.0)
    );

    // Unsilenced while down: announced once, then, as a transition from down to down.
    let (out, _) = ctl_exits(&socket, &["unsilence", "web-2"], 0);
    assert!(out.contains("it is down: announced now"), "{out}");
    let ended = s.wait_event("the end of the silence", |v| {
        v["event"] == "transition" && v["client"] == "web-2" && v["silence_ended"] == true
    });
    assert_eq!(
        (&ended["from"], &ended["to"]),
        (&"down".into(), &"down".into())
    );
    wait_until("web-2's hook", || !hook_lines(&log, "web-2").is_empty());
    let (out, _) = ctl_exits(&socket, &["list"], 0);
    assert_eq!(out.trim(), "No client is silenced.");
    // web-3's restored `down` is not announced again: its hook ran once, before the restart.
    thread::sleep(Duration::from_millis(500));
    assert_eq!(hook_lines(&log, "web-2"), ["web-2 down down true"]);
    assert_eq!(
        hook_lines(&log, "web-3")
            .iter()
            .filter(|l| l.contains(" down"))
            .count(),
        1
    );
    let (_, err) = ctl_exits(&socket, &["unsilence", "web-2"], 1);
    assert_eq!(err.trim(), "heartbeat-server ctl: web-2 is not silenced");
}

/// A silence that runs out while its client is down is announced once, then; a restart after
/// it announces nothing again.
#[test]
fn a_silence_that_runs_out_is_announced_once_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let socket = state.join("control.sock");
    let (hook, log) = log_hook(dir.path());
    let (mut s, _) = server(&state, &hook, &[]);
    let port: u16 = s.port();
    let mut web2 = Proc::client(port, "web-2", &["-i", "50", "--id", "web-2"]);
    s.wait_beat("web-2", 3);
    ctl_exits(&socket, &["silence", "web-2", "--until", "5s"], 0);
    web2.kill();
    s.wait_event("web-2 down, silenced", |v| {
        v["event"] == "transition" && v["to"] == "down" && v["silenced_until"].is_number()
    });
    s.wait_event("the end of the silence", |v| v["silence_ended"] == true);
    wait_until("web-2's hook", || !hook_lines(&log, "web-2").is_empty());
    s.signal("TERM");
    s.expect_exit(0);
    let (mut s, _) = server(&state, &hook, &[]);
    s.wait_stderr("State: ");
    thread::sleep(Duration::from_millis(1000));
    s.signal("TERM");
    s.expect_exit(0);
    assert!(
        !s.events().iter().any(|v| v["event"] == "transition"),
        "{:?}",
        s.events()
    );
    assert_eq!(hook_lines(&log, "web-2"), ["web-2 down down true"]);
}

/// `ctl forget`, the decommission: refused for a connected, an expected or an unknown client;
/// a gone one is dropped at once from /clients, /metrics and the state, and stays gone after a
/// restart. An expected one, heard from before a restart, is forgotten once it is taken off the
/// list and the server reloaded.
#[test]
fn a_forgotten_client_is_gone_now_and_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let socket = state.join("control.sock");
    let (hook, _) = log_hook(dir.path());
    let expect = write_file(dir.path(), "expect", "db-1 50ms\nweb-2 50ms\n", 0o644);
    let expect_args = ["--expect", arg(&expect)];
    let (mut s, addr) = server(&state, &hook, &expect_args);
    let port: u16 = s.port();
    let mut web2 = Proc::client(port, "web-2", &["-i", "50", "--id", "web-2"]);
    let mut web3 = Proc::client(port, "web-3", &["-i", "50", "--id", "web-3"]);
    s.wait_beat("web-2", 3);
    s.wait_beat("web-3", 3);

    let (_, err) = ctl_exits(&socket, &["forget", "web-3"], 1);
    assert!(
        err.contains("web-3 is connected: stop its heartbeat-client first"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    let (_, err) = ctl_exits(&socket, &["forget", "web-9"], 1);
    assert!(err.contains("no client web-9 is known"), "{err}");

    web2.kill();
    web3.kill();
    for id in ["web-2", "web-3"] {
        s.wait_event("gone", |v| {
            v["event"] == "disconnected" && v["client"] == id
        });
    }
    let (_, err) = ctl_exits(&socket, &["forget", "web-2"], 1);
    assert!(
        err.contains("web-2 is expected: remove it from the --expect file")
            && err.contains("systemctl reload heartbeat-server"),
        "{err}"
    );
    let (out, _) = ctl_exits(&socket, &["forget", "web-3"], 0);
    assert!(out.starts_with("Forgot web-3"), "{out}");
    s.wait_event("forgotten", |v| {
        v["event"] == "forgotten" && v["client"] == "web-3" && v["requested"] == true
    });
    assert!(listed(&addr, "web-3").is_none());
    assert!(listed(&addr, "web-2").is_some());
    let m = scrape(&addr);
    assert!(
        !m.samples
            .iter()
            .any(|x| x.labels.get("client") == Some("web-3")),
        "web-3's series are gone"
    );
    assert_eq!(
        value(&m, "heartbeat_clients_forgotten_total", &[]),
        Some(1.0)
    );

    // kill -9: what the journal had is what the next server restores.
    s.kill();
    let (mut s, addr) = server(&state, &hook, &expect_args);
    s.wait_stderr("State: ");
    assert!(listed(&addr, "web-3").is_none());
    let (_, err) = ctl_exits(&socket, &["forget", "web-3"], 1);
    assert!(err.contains("no client web-3 is known"), "{err}");

    // The decommission of an expected client: off the list, reload, forget.
    write_file(dir.path(), "expect", "db-1 50ms\n", 0o644);
    s.signal("HUP");
    s.wait_stderr("Reloaded --expect");
    let (out, _) = ctl_exits(&socket, &["forget", "web-2"], 0);
    assert!(out.starts_with("Forgot web-2"), "{out}");
    assert!(listed(&addr, "web-2").is_none());
    s.signal("TERM");
    s.expect_exit(0);
    let (_last, addr) = server(&state, &hook, &expect_args);
    assert!(listed(&addr, "web-2").is_none());
    assert!(listed(&addr, "web-3").is_none());
    assert!(listed(&addr, "db-1").is_some());
}

/// Without a server, `ctl` says so in one line and exits 2; so does a bad `--until`. A socket
/// file a dead server left is replaced; one a live server answers on is refused (exit 2).
#[test]
fn ctl_without_a_server_exits_2_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("c.sock");
    let (_, err) = ctl_exits(&socket, &["list"], 2);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("heartbeat-server ctl: no control socket at"),
        "{err}"
    );
    let (_, err) = ctl_exits(&socket, &["silence", "web-2", "--until", "soon"], 2);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("--until \"soon\": expected a duration from now"),
        "{err}"
    );
    // A socket nobody answers on: what a killed server leaves.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let (_, err) = ctl_exits(&socket, &["list"], 2);
    assert!(err.contains("nothing answers on"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    let mut s = Proc::server(&["-p", "0", "--control-socket", arg(&socket)]);
    s.wait_stderr("replacing the one a stopped server left");
    s.wait_stderr("Control socket on");
    ctl_exits(&socket, &["list"], 0);
    let mut second = Proc::server(&["-p", "0", "--control-socket", arg(&socket)]);
    second.expect_exit(2);
    assert!(
        second
            .stderr()
            .iter()
            .any(|l| l.contains("another heartbeat-server answers on it")),
        "{:?}",
        second.stderr()
    );
    ctl_exits(&socket, &["list"], 0);
}

/// Garbage, an oversized request, a peer that sends nothing and more connections than the
/// socket serves at once: each is refused or closed, and the server goes on (heartbeats
/// acknowledged, the next request served).
#[test]
fn garbage_on_the_control_socket_hurts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("c.sock");
    let (mut s, port) = Proc::json_server(&["--control-socket", arg(&socket)]);
    s.wait_stderr("Control socket on");
    let _client = Proc::client(port, "c", &["-i", "50", "--id", "web-2"]);
    s.wait_beat("web-2", 2);

    let answer = |bytes: &[u8]| -> String {
        let mut c = UnixStream::connect(&socket).unwrap();
        c.set_read_timeout(Some(WAIT)).unwrap();
        let _ = c.write_all(bytes);
        let mut out = String::new();
        let _ = c.read_to_string(&mut out);
        out
    };
    let garbage = answer(b"\x00\xffnot json\n");
    assert!(
        garbage.contains("\"ok\":false") && garbage.contains("not a request"),
        "{garbage}"
    );
    let unknown = answer(b"{\"op\":\"reboot\"}\n");
    assert!(unknown.contains("\"ok\":false"), "{unknown}");
    let big = answer(&vec![b'x'; 64 * 1024]);
    assert!(big.contains("longer than 4096 bytes"), "{big}");
    // Silent peers hold every slot for a moment; the next connection is closed at once.
    let silent: Vec<UnixStream> = (0..4)
        .map(|_| UnixStream::connect(&socket).unwrap())
        .collect();
    thread::sleep(Duration::from_millis(200));
    assert_eq!(
        answer(b"{\"op\":\"list\"}\n"),
        "",
        "closed: every slot taken"
    );
    s.wait_stderr("requests at once already");
    drop(silent);
    let seq = s.highest_seq("web-2").unwrap();
    s.wait_beat("web-2", seq + 5);
    // The silent peers' ends free their slots.
    wait_until("a free slot", || ctl(&socket, &["list"]).0 == 0);
    let (out, _) = ctl_exits(&socket, &["silence", "web-2", "--until", "10m"], 0);
    assert!(out.starts_with("web-2 silenced until"), "{out}");
}

/// The socket answers only the server's user and root: another user is kept out by its mode
/// (0600: `ctl` cannot connect, exit 2), and, were the mode opened, by its credentials
/// (`SO_PEERCRED`: refused, exit 1). Drops from root to `nobody` (setpriv), so it runs as root
/// only: ignored by the plain test command, run by name in `.ci/run`.
#[test]
#[ignore = "needs root and setpriv (drops to nobody); .ci/run runs it as root"]
fn another_user_is_refused_by_mode_and_by_credentials() {
    let uid = Command::new("id").arg("-u").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "must run as root"
    );
    let dir = tempfile::tempdir().unwrap();
    // nobody must reach the socket and the binary: a directory it can enter, not write.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let socket = dir.path().join("c.sock");
    let copy = dir.path().join("heartbeat-server");
    std::fs::copy(SERVER, &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut s = Proc::server(&["-p", "0", "--control-socket", arg(&socket)]);
    s.wait_stderr("Control socket on");
    let as_nobody = || {
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&copy)
            .args(["ctl", "--socket", arg(&socket), "list"])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = as_nobody();
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("permission denied"), "{err}");
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (code, err) = as_nobody();
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("only the server's user or root"), "{err}");
    s.wait_stderr("uid 65534 is neither the server's");
    ctl_exits(&socket, &["list"], 0);
}
