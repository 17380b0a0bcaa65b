//! `--on-transition` and `--webhook`: what a hook gets, a hook that hangs, a flood of
//! transitions into a tiny queue, a webhook to a local HTTP server.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;

use serde_json::Value;

use crate::metrics::{metrics_addr, scrape, state_of, value};
use crate::util::{
    Proc, WAIT, arg, client_summary, hook_counts_in, is_running, read_again, wait_until, write_file,
};

/// A hook that writes its `HEARTBEAT_*` environment to `DIR/<client>-<from>-<to>.env`.
fn env_hook(dir: &Path) -> String {
    let script = write_file(
        dir,
        "hook.sh",
        &format!(
            "#!/bin/sh\nenv | grep '^HEARTBEAT_' | sort > \"{}/$HEARTBEAT_CLIENT-$HEARTBEAT_FROM-$HEARTBEAT_TO.tmp\"\n\
             mv \"{0}/$HEARTBEAT_CLIENT-$HEARTBEAT_FROM-$HEARTBEAT_TO.tmp\" \"{0}/$HEARTBEAT_CLIENT-$HEARTBEAT_FROM-$HEARTBEAT_TO.env\"\n",
            dir.display()
        ),
        0o755,
    );
    arg(&script).to_owned()
}

/// `KEY=value` lines as a map.
fn env_file(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The environment a hook must get for a JSON event: each field as `HEARTBEAT_<FIELD>`,
/// strings as they are, `null` empty, numbers as JSON writes them.
fn env_of(event: &Value) -> BTreeMap<String, String> {
    event
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (format!("HEARTBEAT_{}", k.to_uppercase()), v)
        })
        .collect()
}

/// A client that vanishes (SIGKILL) goes suspect then down; the hook of each transition gets
/// every variable, equal to the event's JSON fields (the time included).
#[test]
fn a_hook_gets_the_transition_in_its_environment() {
    let dir = tempfile::tempdir().unwrap();
    let hook = env_hook(dir.path());
    // A grace of 20 intervals: a loaded machine does not make h1 flap before it is killed.
    let (mut server, port) = Proc::json_server(&[
        "--detector",
        "fixed",
        "--grace",
        "20x",
        "--on-transition",
        &hook,
    ]);
    let mut client = Proc::client(port, "client", &["-i", "50", "--id", "h1"]);
    let connected = server.wait_event("connected", |v| v["event"] == "connected");
    server.wait_beat("h1", 3);
    client.kill();
    let down = server.wait_transition("down");
    let suspect = server.wait_transition("suspect");
    let file = dir.path().join("h1-suspect-down.env");
    wait_until("the hook of the down transition", || file.exists());
    let env = env_file(&file);
    assert_eq!(env, env_of(&down));
    let expected: BTreeMap<&str, String> = [
        ("HEARTBEAT_CLIENT", "h1".to_owned()),
        ("HEARTBEAT_FROM", "suspect".to_owned()),
        ("HEARTBEAT_TO", "down".to_owned()),
        ("HEARTBEAT_DETECTOR", "fixed".to_owned()),
        (
            "HEARTBEAT_PEER",
            connected["peer"].as_str().unwrap().to_owned(),
        ),
        ("HEARTBEAT_EVENT", "transition".to_owned()),
        ("HEARTBEAT_TIME", down["time"].to_string()),
        ("HEARTBEAT_SINCE_LAST_MS", down["since_last_ms"].to_string()),
        ("HEARTBEAT_SUSPICION", down["suspicion"].to_string()),
    ]
    .into_iter()
    .collect();
    for (k, v) in &expected {
        assert_eq!(env.get(*k), Some(v), "{k} in {env:#?}");
    }
    assert_eq!(env.len(), expected.len(), "{env:#?}");
    // Unix seconds, to the microsecond, after the suspect transition's.
    let time: f64 = env["HEARTBEAT_TIME"].parse().unwrap();
    assert!(time > 1.7e9 && time >= suspect["time"].as_f64().unwrap());
    let since: f64 = env["HEARTBEAT_SINCE_LAST_MS"].parse().unwrap();
    assert!(since >= 1050.0, "{since}");
    let up_suspect = dir.path().join("h1-up-suspect.env");
    wait_until("the hook of the suspect transition", || up_suspect.exists());
    assert_eq!(env_file(&up_suspect), env_of(&suspect));
}

/// A hook that hangs is killed with its process group at the timeout and counted; the monitor
/// goes on acknowledging meanwhile.
#[test]
fn a_hung_hook_is_killed_and_the_monitor_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    // The hook's shell and a child of it (same process group) record their pids, then wait.
    let hook = format!(
        "sleep 60 & echo $! > {d}/child-$HEARTBEAT_TO.pid; echo $$ > {d}/sh-$HEARTBEAT_TO.pid; wait"
    );
    let (mut server, port) = Proc::json_server(&[
        "--detector",
        "fixed",
        "--on-transition",
        &hook,
        "--hook-timeout",
        "1s",
    ]);
    let mut doomed = Proc::client(port, "doomed", &["-i", "50", "--id", "doomed"]);
    server.wait_beat("doomed", 2);
    let mut steady = Proc::client(
        port,
        "steady",
        &["-i", "20", "--count", "150", "--id", "steady"],
    );
    doomed.kill();
    server.wait_transition("down");
    let pid = |name: &str| -> u32 {
        let path = dir.path().join(name);
        wait_until(name, || {
            std::fs::read_to_string(&path).is_ok_and(|s| s.ends_with('\n'))
        });
        std::fs::read_to_string(&path)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let (sh, child) = (pid("sh-down.pid"), pid("child-down.pid"));
    assert!(is_running(child), "the hook runs for now");
    // Three seconds of heartbeats at 20 ms, across both hooks' timeouts: every one acked.
    steady.expect_exit(0);
    steady.wait_stderr("Done: sent 150 heartbeat(s), 150 acknowledged");
    server.wait_stderr("did not finish within 1s (--hook-timeout); killed");
    wait_until("the hook's process group to be killed", || {
        !is_running(sh) && !is_running(child)
    });
    // Both of the doomed client's (more if the loaded machine made the steady one flap).
    server.wait_hook_counts("2 timed out", |[ok, failed, timed_out, dropped]| {
        ok == 0 && failed == 0 && timed_out >= 2 && dropped == 0
    });
    let clients = server.summary();
    assert_eq!(client_summary(&clients, "steady")["received"], 150);
}

/// Twenty expected clients never seen are down at once, in one go of the loop; with a queue of
/// one, one alert gets in and nineteen are dropped: counted, and logged once with a count, not
/// once each.
#[test]
fn a_flood_of_transitions_into_a_tiny_queue_is_counted_and_logged_once() {
    let dir = tempfile::tempdir().unwrap();
    let list: String = (1..=20).map(|i| format!("flood-{i:02} 100ms\n")).collect();
    let mut server = server_expecting(
        dir.path(),
        &list,
        "300ms",
        &[
            "--on-transition",
            "sleep 0.2",
            "--hook-queue",
            "1",
            "--hook-concurrency",
            "1",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
    );
    let addr = metrics_addr(&mut server);
    server.wait_event("the last never-seen client down", |v| {
        v["event"] == "transition" && v["client"] == "flood-20" && v["from"] == "unknown"
    });
    let dropped = server.wait_stderr("Hook queue full (1 alerts, --hook-queue): dropped");
    assert!(dropped.contains("flood-02 unknown->down"), "{dropped}");
    server.wait_stderr(r#"and 18 more "hook alerts dropped (queue full)""#);
    server.wait_hook_counts("1 ok, 19 dropped", |c| c == [1, 0, 0, 19]);
    let lines = server
        .stderr()
        .iter()
        .filter(|l| l.contains("Hook queue full"))
        .count();
    assert_eq!(lines, 1, "one line, then a count: {:#?}", server.stderr());
    // The same counts in /metrics.
    let s = scrape(&addr);
    let runs = |result| value(&s, "heartbeat_hook_runs_total", &[("result", result)]);
    assert_eq!(
        [runs("ok"), runs("failed"), runs("timeout")],
        [Some(1.0), Some(0.0), Some(0.0)]
    );
    assert_eq!(value(&s, "heartbeat_hook_dropped_total", &[]), Some(19.0));
    assert_eq!(state_of(&s, "flood-01").as_deref(), Some("down"));
    let clients = server.summary();
    assert_eq!(clients.len(), 20);
    assert!(
        clients
            .iter()
            .all(|c| c["state"] == "down" && c["expected"] == true)
    );
}

/// One HTTP request as the test's server read it.
struct Request {
    head: String,
    body: String,
}

/// The next connection to `listener`, its reads timing out after [`WAIT`]; `None` if accepting
/// failed.
fn accept_one(listener: &TcpListener) -> Option<TcpStream> {
    let (stream, _) = listener.accept().ok()?;
    stream.set_read_timeout(Some(WAIT)).unwrap();
    Some(stream)
}

/// Reads an HTTP request's head, up to the blank line (or the end, or a read error): the head's
/// lines as read and its `content-length` (0 if none or unreadable).
fn read_head(reader: &mut impl BufRead) -> (String, usize) {
    let mut head = String::new();
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        head.push_str(&line);
    }
    (head, length)
}

/// A one-request HTTP server on a free port that answers `status`; the request arrives on the
/// returned channel.
fn http_server(status: &'static str) -> (u16, mpsc::Receiver<Request>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let Some(stream) = accept_one(&listener) else {
            return;
        };
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let (head, length) = read_head(&mut reader);
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let mut stream = stream;
        let _ = write!(
            stream,
            "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        );
        let _ = tx.send(Request {
            head,
            body: String::from_utf8(body).unwrap(),
        });
    });
    (port, rx)
}

/// A `--json` server on a free port that expects the clients of `list` (an `--expect` file
/// written in `dir`) with an `--expect-grace` of `grace`, and `extra` arguments.
fn server_expecting(dir: &Path, list: &str, grace: &str, extra: &[&str]) -> Proc {
    let expect = write_file(dir, "expect", list, 0o644);
    let mut args = vec!["--expect", arg(&expect), "--expect-grace", grace];
    args.extend_from_slice(extra);
    Proc::json_server(&args).0
}

/// The webhook gets the transition as `--json` prints it, as a JSON POST.
#[test]
fn a_webhook_posts_the_transition_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let (http_port, requests) = http_server("200 OK");
    let url = format!("http://127.0.0.1:{http_port}/alerts/heartbeat?team=ops");
    let mut server = server_expecting(dir.path(), "web-07 500ms\n", "200ms", &["--webhook", &url]);
    let event = server.wait_transition("down");
    let request = requests.recv_timeout(WAIT).expect("the webhook was called");
    let first = request.head.lines().next().unwrap();
    assert_eq!(first, "POST /alerts/heartbeat?team=ops HTTP/1.1");
    let head = request.head.to_ascii_lowercase();
    assert!(head.contains("content-type: application/json"), "{head}");
    assert!(
        head.contains(&format!("host: 127.0.0.1:{http_port}")),
        "{head}"
    );
    let body: Value = serde_json::from_str(&request.body).unwrap();
    assert_eq!(body, event);
    assert_eq!(
        (
            &body["client"],
            &body["from"],
            &body["to"],
            &body["since_last_ms"]
        ),
        (
            &Value::from("web-07"),
            &Value::from("unknown"),
            &Value::from("down"),
            &Value::Null
        )
    );
    server.wait_hook_counts("1 ok", |c| c == [1, 0, 0, 0]);
}

/// A webhook that answers an error is a failed run, logged with the status.
#[test]
fn a_webhook_error_is_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let (http_port, requests) = http_server("503 Service Unavailable");
    let url = format!("http://127.0.0.1:{http_port}/");
    let mut server = server_expecting(dir.path(), "web-08\n", "100ms", &["--webhook", &url]);
    requests.recv_timeout(WAIT).expect("the webhook was called");
    server.wait_stderr(
        "Hook --webhook for web-08 unknown->down failed: answered 503 Service Unavailable",
    );
    server.wait_hook_counts("1 failed", |c| c == [0, 1, 0, 0]);
}

/// `https://`: the webhook checks the server's certificate against the system's CAs (here
/// `SSL_CERT_FILE`, the test CA) and posts over TLS.
#[test]
fn a_webhook_over_https() {
    let pki = crate::tls::pki();
    let dir = pki.dir.path();
    let expect = write_file(dir, "expect", "web-09\n", 0o644);
    let (config, _) = heartbeat_net::tls::server_config(&pki.cert, &pki.key).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let Some(tcp) = accept_one(&listener) else {
            return;
        };
        let conn = rustls::ServerConnection::new(config).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        // Until the head and the whole body (the JSON object's closing brace) are in.
        while !got.ends_with(b"}") {
            match read_again(&mut tls, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        let _ = tls.write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n");
        let _ = tls.flush();
        let _ = tx.send(String::from_utf8_lossy(&got).into_owned());
    });
    let url = format!("https://localhost:{port}/hook");
    let ca = arg(&pki.ca).to_owned();
    let mut server = Proc::spawn_piped(
        crate::util::SERVER,
        "server",
        &[
            "--bind",
            "127.0.0.1",
            "-p",
            "0",
            "--json",
            "--expect",
            arg(&expect),
            "--expect-grace",
            "100ms",
            "--webhook",
            &url,
        ],
        crate::util::Pipe::Read,
        crate::util::Pipe::Read,
        &[("SSL_CERT_FILE", &ca)],
    );
    let event = server.wait_transition("down");
    let request = rx
        .recv_timeout(WAIT)
        .expect("the webhook was called over TLS");
    assert!(request.starts_with("POST /hook HTTP/1.1\r\n"), "{request}");
    let body = request.split("\r\n\r\n").nth(1).unwrap();
    assert_eq!(serde_json::from_str::<Value>(body).unwrap(), event);
    server.wait_hook_counts("1 ok", |c| c == [1, 0, 0, 0]);
}

/// A webhook that answers each call after 250 ms, one connection at a time per call; returns
/// its port and the number of calls it answered so far.
fn slow_webhook() -> (u16, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let answered = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&answered);
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let count = Arc::clone(&count);
            thread::spawn(move || {
                stream.set_read_timeout(Some(WAIT)).unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let (_, length) = read_head(&mut reader);
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_err() {
                    return;
                }
                thread::sleep(std::time::Duration::from_millis(250));
                let mut stream = stream;
                let answer = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
                if stream.write_all(answer.as_bytes()).is_ok() {
                    count.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    (port, answered)
}

/// Alerts still queued at SIGTERM get `--hook-timeout` to drain; what is left is counted as
/// dropped and logged with its number in one line, before the final report: every alert queued
/// is delivered, timed out or dropped, none vanishes.
#[test]
fn alerts_queued_at_shutdown_drain_for_the_hook_timeout_then_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let list: String = (1..=30).map(|i| format!("late-{i:02} 100ms\n")).collect();
    let (port, answered) = slow_webhook();
    let url = format!("http://127.0.0.1:{port}/");
    let mut server = server_expecting(
        dir.path(),
        &list,
        "200ms",
        &[
            "--webhook",
            &url,
            "--hook-concurrency",
            "1",
            "--hook-timeout",
            "1s",
        ],
    );
    for i in 1..=30 {
        let id = format!("late-{i:02}");
        server.wait_event(&id, |v| {
            v["event"] == "transition" && v["client"] == id.as_str()
        });
    }
    // 30 alerts at 250 ms each, one at a time: most are still queued now.
    let clients = server.summary();
    assert_eq!(clients.len(), 30);
    let stderr = server.stderr().to_vec();
    let at = |needle: &str| stderr.iter().position(|l| l.contains(needle));
    let line = at("shutdown: ")
        .map(|i| stderr[i].clone())
        .unwrap_or_else(|| panic!("no shutdown line: {stderr:#?}"));
    let left: u64 = line
        .split("shutdown: ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number in {line:?}"));
    assert!(
        line.contains(&format!(
            "shutdown: {left} alerts not delivered within --hook-timeout 1s; counted in \
             heartbeat_hook_dropped_total"
        )),
        "{line}"
    );
    assert!(line.contains("WARN"), "{line}");
    let [ok, failed, timed_out, dropped] = hook_counts_in(&line);
    assert!(left > 0, "{line}");
    assert_eq!(
        dropped, left,
        "no alert was dropped for a full queue: {line}"
    );
    assert_eq!(
        ok + failed + timed_out + dropped,
        30,
        "every alert accounted for: {line}"
    );
    assert_eq!(failed, 0, "{line}");
    // The webhook answered every delivered call (and maybe one the server had given up on).
    let answered = answered.load(Ordering::SeqCst);
    assert!(
        (ok..=ok + timed_out).contains(&answered),
        "{answered} answered: {line}"
    );
    // Logged before the final report.
    let report = at("  proto  ").expect("the final report");
    assert!(at("shutdown: ").unwrap() < report, "{stderr:#?}");
}
