//! `--auth-keys` and `--auth-key-file`: the issue's attacks fail, the identity rule holds
//! without keys, a client with a key refuses a server without, key files are checked. Every
//! test also checks that the honest client's heartbeats were all counted.

use std::io::Write as _;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use tempfile::TempDir;

use crate::util::{
    CLIENT, Proc, SERVER, arg, assert_counts, client_summary, exchange, skipped_by, unix_stamp,
    write_file,
};

const GOOD_KEY: &str = "good-secret-0123456789abcdef";
const VICTIM_KEY: &str = "victim-secret-0123456789abcdef";

/// A server key file for `good` and `victim`, and each client's own key file.
struct Keys {
    _dir: TempDir,
    server: PathBuf,
    good: PathBuf,
    victim: PathBuf,
}

fn keys() -> Keys {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let table = format!("# the test fleet\ngood {GOOD_KEY}\n\nvictim {VICTIM_KEY}\n");
    Keys {
        server: write_file(d, "auth-keys", &table, 0o600),
        good: write_file(d, "good.key", &format!("{GOOD_KEY}\n"), 0o600),
        victim: write_file(d, "victim.key", &format!("{VICTIM_KEY}\n"), 0o600),
        _dir: dir,
    }
}

/// `heartbeat-client --id ID -i 100 --auth-key-file KEY` (no key: `None`).
fn honest(port: u16, id: &str, key: Option<&PathBuf>) -> Proc {
    let mut args = vec!["-i", "100", "--id", id];
    if let Some(key) = key {
        args.extend(["--auth-key-file", arg(key)]);
    }
    Proc::client(port, id, &args)
}

/// Stops the honest client `id`, then the server; checks that every heartbeat it sent was
/// counted and that the only slots missed are those it says it skipped (woken too late on a
/// loaded machine). Returns the summary.
fn stop_and_check_all_counted(server: &mut Proc, client: &mut Proc, id: &str) -> Vec<Value> {
    client.signal("TERM");
    client.expect_exit(0);
    server.wait_event(&format!("{id} said goodbye"), |v| {
        v["event"] == "disconnected" && v["client"] == id
    });
    let highest = server
        .highest_seq(id)
        .expect("heartbeats of the honest client");
    let not_sent = skipped_by(client);
    let clients = server.summary();
    assert_counts(client_summary(&clients, id), highest - not_sent, not_sent);
    clients
}

fn refused(answer: &str) -> bool {
    answer.starts_with("CHALLENGE ") && answer.ends_with("\nERROR authentication failed\n")
}

#[test]
fn the_issues_attacks_fail_under_auth_keys() {
    let k = keys();
    let (mut server, port) = Proc::json_server(&["--auth-keys", arg(&k.server)]);
    let mut good = honest(port, "good", Some(&k.good));
    let mut victim = honest(port, "victim", Some(&k.victim));
    server.wait_beat("victim", 2);

    // Taking over the live client's id.
    // Stamped now, so that only the missing key can refuse it.
    let take_over = format!(
        "HELLO 1 victim 100 00000000000000aa\nBEAT 1 {}\n",
        unix_stamp(6)
    );
    let answer = exchange(port, take_over.as_bytes());
    assert!(refused(&answer), "{answer:?}");

    // Hiding its death: a goodbye in its name, and the one-day interval with one heartbeat.
    victim.kill();
    server.wait_event("victim gone", |v| {
        v["event"] == "disconnected" && v["client"] == "victim"
    });
    let one_day = format!("HELLO 1 victim 86400000\nBEAT 1 {}\n", unix_stamp(6));
    for attack in [&b"HELLO 1 victim 100\nBYE\n"[..], one_day.as_bytes()] {
        let answer = exchange(port, attack);
        assert!(refused(&answer), "{answer:?}");
    }
    server.wait_event("victim declared down", |v| {
        v["event"] == "transition" && v["client"] == "victim" && v["to"] == "down"
    });
    let line = server.wait_stderr("claimed client id victim");
    assert!(line.contains("Authentication failed: 127.0.0.1:"), "{line}");

    let clients = stop_and_check_all_counted(&mut server, &mut good, "good");
    let v = client_summary(&clients, "victim");
    assert_eq!(v["state"], "down", "{v:#}");
    assert_eq!(v["restarts"].as_u64(), Some(0), "{v:#}");
    assert_eq!(v["connections"].as_u64(), Some(1), "{v:#}");
}

#[test]
fn without_auth_a_live_id_cannot_be_taken_over() {
    let (mut server, port) = Proc::json_server(&[]);
    let mut victim = honest(port, "victim", None);
    server.wait_beat("victim", 2);
    let attack = format!(
        "HELLO 1 victim 86400000 00000000000000aa\nBEAT 1 {}\nBYE\n",
        unix_stamp(6)
    );
    let answer = exchange(port, attack.as_bytes());
    assert!(
        answer.starts_with("ERROR client id victim is in use by a live connection"),
        "{answer:?}"
    );
    assert!(answer.contains("--id"), "{answer:?}");
    server.wait_stderr("client id victim is in use by conn#1 with another session");
    let before = server.highest_seq("victim").unwrap();
    server.wait_beat("victim", before + 2);
    let clients = stop_and_check_all_counted(&mut server, &mut victim, "victim");
    let v = client_summary(&clients, "victim");
    assert_eq!(v["restarts"].as_u64(), Some(0), "{v:#}");
    assert_eq!(v["connections"].as_u64(), Some(1), "{v:#}");
}

#[test]
fn a_client_with_a_key_refuses_a_server_without_auth() {
    let k = keys();
    let (mut server, port) = Proc::json_server(&[]);
    let mut good = honest(port, "good", None);
    // --reconnect does not help: a server that does not challenge is refused for good.
    let mut keyed = Proc::client(
        port,
        "keyed",
        &[
            "-i",
            "100",
            "--id",
            "victim",
            "--reconnect",
            "--auth-key-file",
            arg(&k.victim),
        ],
    );
    keyed.expect_exit(1);
    keyed.wait_stderr("Refusing the server: it did not ask this client to authenticate");
    // It sent no heartbeat.
    assert!(
        !keyed
            .stderr()
            .iter()
            .any(|l| l.contains("Sending heartbeat")),
        "{:#?}",
        keyed.stderr()
    );
    server.wait_beat("good", 3);
    let clients = stop_and_check_all_counted(&mut server, &mut good, "good");
    if let Some(v) = clients.iter().find(|c| c["client"] == "victim") {
        assert_eq!(v["received"].as_u64(), Some(0), "{v:#}");
    }
}

#[test]
fn a_client_without_a_key_is_told_to_use_one() {
    let k = keys();
    let (mut server, port) = Proc::json_server(&["--auth-keys", arg(&k.server)]);
    let mut good = honest(port, "good", Some(&k.good));
    let mut keyless = Proc::client(port, "keyless", &["-i", "100", "--id", "victim"]);
    keyless.expect_exit(1);
    keyless.wait_stderr("the server requires authentication and this client has no key");
    keyless.wait_stderr("--auth-key-file");
    server.wait_beat("good", 3);
    stop_and_check_all_counted(&mut server, &mut good, "good");
}

#[test]
fn legacy_clients_are_refused_under_auth_keys_unless_allowed() {
    let k = keys();
    // Stamped now: a stamp a day away from the server's clock is implausible and refused.
    let legacy = format!("Sequence #1: Sending heartbeat at {}. ", unix_stamp(4));
    let legacy = legacy.as_bytes();
    for (extra, allowed) in [(None, false), (Some("--allow-legacy"), true)] {
        let mut args = vec!["--auth-keys", arg(&k.server)];
        args.extend(extra);
        let (mut server, port) = Proc::json_server(&args);
        let mut good = honest(port, "good", Some(&k.good));
        if allowed {
            // Let in, never written to, counted; it leaves by closing.
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(legacy).unwrap();
            let addr = s.local_addr().unwrap();
            server.wait_beat(&format!("legacy@{addr}"), 1);
            drop(s);
        } else {
            assert_eq!(
                exchange(port, legacy),
                "",
                "a legacy client is never written to"
            );
        }
        if allowed {
            let gone = server.wait_event("legacy connection closed", |v| {
                v["event"] == "disconnected" && v["peer"] != Value::Null && v["client"] != "good"
            });
            assert_eq!(gone["reason"], "closed by peer", "{gone:#}");
        } else {
            // A connection that never identified is counted, not an event of its own.
            assert_eq!(server.wait_unidentified("legacy_refused", 1), 1);
            server.wait_stderr("Refused a legacy connection from 127.0.0.1:");
        }
        server.wait_beat("good", 2);
        let clients = stop_and_check_all_counted(&mut server, &mut good, "good");
        let legacy_counted = clients.iter().any(|c| {
            c["client"]
                .as_str()
                .is_some_and(|s| s.starts_with("legacy@"))
        });
        assert_eq!(legacy_counted, allowed);
    }
}

#[test]
fn a_flood_of_failed_authentications_is_summarised() {
    let k = keys();
    let (mut server, port) = Proc::json_server(&["--auth-keys", arg(&k.server)]);
    let mut good = honest(port, "good", Some(&k.good));
    server.wait_beat("good", 1);
    let attempts = 200;
    for i in 0..attempts {
        let answer = exchange(port, format!("HELLO 1 victim 100 {i:x}\nBYE\n").as_bytes());
        assert!(refused(&answer), "{answer:?}");
    }
    // Every attempt is counted in the `unidentified` events (one per second at most: the
    // connections never became a client); the log has a line a second at most, with a count.
    assert_eq!(server.wait_unidentified("auth_failed", attempts), attempts);
    let clients = stop_and_check_all_counted(&mut server, &mut good, "good");
    assert!(clients.iter().all(|c| c["client"] != "victim"));
    let events = server
        .events()
        .iter()
        .filter(|v| v["event"] == "unidentified" || v["event"] == "disconnected")
        .count();
    assert!(events < 20, "{events} events for {attempts} attempts");
    let lines: Vec<&String> = server
        .stderr()
        .iter()
        .filter(|l| l.contains(r#"more "failed authentication""#) || is_failure_line(l))
        .collect();
    let logged = lines.iter().filter(|l| is_failure_line(l)).count() as u64;
    let held: u64 = lines.iter().map(|l| held_back(l)).sum();
    // One line per attempt that was logged, the rest counted in summaries: nothing lost, and
    // far fewer lines than attempts (one a second at most, and the flood took seconds).
    assert_eq!(logged + held, attempts, "{lines:#?}");
    assert!(
        lines.len() < 20,
        "{} lines for {attempts} attempts",
        lines.len()
    );
}

/// A log line about one failed authentication (not a summary quoting one).
fn is_failure_line(line: &str) -> bool {
    line.contains("WARN Authentication failed: ")
}

/// The count in the log summary's `... and N more "failed authentication" in the last ...`, 0
/// without one.
fn held_back(line: &str) -> u64 {
    line.split_once(r#" more "failed authentication""#)
        .and_then(|(before, _)| before.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn unusable_key_files_exit_2_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let malformed = write_file(d, "malformed", &format!("good {GOOD_KEY}\nvictim\n"), 0o600);
    let writable = write_file(d, "writable", &format!("good {GOOD_KEY}\n"), 0o666);
    let short = write_file(d, "short", "tooshort\n", 0o600);
    let cases: [(&str, Vec<&str>, String); 5] = [
        (
            SERVER,
            vec!["--auth-keys", arg(&malformed)],
            format!("{}:2: expected", malformed.display()),
        ),
        (
            SERVER,
            vec!["--auth-keys", arg(&writable)],
            format!(
                "refusing {}: it is writable by every user",
                writable.display()
            ),
        ),
        (SERVER, vec!["--allow-legacy"], "--auth-keys".to_owned()),
        (
            CLIENT,
            vec!["--auth-key-file", arg(&short)],
            format!("{}:1: the secret is not valid", short.display()),
        ),
        (
            CLIENT,
            vec!["--auth-key-file", "/nonexistent/key"],
            "cannot read /nonexistent/key".to_owned(),
        ),
    ];
    for (bin, args, needle) in cases {
        let out = Command::new(bin)
            .args(&args)
            .args(["-p", "1"])
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bin} {args:?}: {stderr}");
        assert!(stderr.contains(&needle), "{bin} {args:?}: {stderr}");
        assert!(!stderr.contains(GOOD_KEY), "a secret was shown: {stderr}");
    }
}

#[test]
fn a_world_readable_key_file_is_used_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let table = write_file(dir.path(), "keys", &format!("good {GOOD_KEY}\n"), 0o644);
    let key = write_file(dir.path(), "good.key", GOOD_KEY, 0o644);
    let (mut server, port) = Proc::json_server(&["--auth-keys", arg(&table)]);
    server.wait_stderr("is readable by every user on this machine");
    let mut good = honest(port, "good", Some(&key));
    good.wait_stderr("is readable by every user on this machine");
    server.wait_beat("good", 3);
    stop_and_check_all_counted(&mut server, &mut good, "good");
}
