//! The client says what went wrong (issue 17 point 5): with `--count` it waits for the verdict
//! on its last heartbeat and exits 1 without an acknowledgement; TLS on one side only is told
//! in one line, with the flag to add or drop.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::thread;
use std::time::Duration;

use crate::tls::pki;
use crate::util::{Proc, arg, exchange, real_now, write_file};

/// The line a TLS server writes to a plaintext heartbeat client before it closes.
const TLS_EXPECTED: &str = "ERROR this server speaks TLS: connect with --tls\n";

/// A `--json` server with `--auth-keys` listing `good`, and the key files of a right and a
/// wrong key (the directory must outlive the test).
fn auth_server() -> (Proc, u16, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let keys = write_file(dir.path(), "keys", "good good-secret-0123456789\n", 0o600);
    write_file(dir.path(), "wrong.key", "wrong-secret-0123456789\n", 0o600);
    let (server, port) = Proc::json_server(&["--auth-keys", arg(&keys)]);
    (server, port, dir)
}

/// Stderr of `p` as one string, for `contains`.
fn said(p: &Proc) -> String {
    p.stderr().join("\n")
}

#[test]
fn a_wrong_key_with_count_one_exits_1_saying_authentication_failed() {
    let (mut server, port, dir) = auth_server();
    let wrong = dir.path().join("wrong.key");
    let args = [
        "-i",
        "100",
        "--id",
        "good",
        "--count",
        "1",
        "--auth-key-file",
    ];
    let mut client = Proc::client(port, "wrong", &[&args[..], &[arg(&wrong)]].concat());
    client.expect_exit(1);
    assert!(
        said(&client).contains("Authentication failed"),
        "{:#?}",
        client.stderr()
    );
    server.kill();
}

#[test]
fn no_key_to_a_server_that_asks_for_one_with_count_one_exits_1() {
    let (mut server, port, _dir) = auth_server();
    let args = ["-i", "100", "--id", "good", "--count", "1"];
    let mut client = Proc::client(port, "keyless", &args);
    client.expect_exit(1);
    assert!(
        said(&client).contains("--auth-key-file"),
        "{:#?}",
        client.stderr()
    );
    server.kill();
}

#[test]
fn a_last_heartbeat_never_acknowledged_exits_1_after_the_ack_timeout() {
    // A server that welcomes and reads but never acknowledges.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let fake = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut lines = BufReader::new(stream.try_clone().unwrap());
        let mut hello = String::new();
        lines.read_line(&mut hello).unwrap();
        assert!(hello.starts_with("HELLO "), "{hello:?}");
        (&stream).write_all(b"WELCOME 1\n").unwrap();
        let mut rest = Vec::new();
        let _ = lines.read_to_end(&mut rest);
        String::from_utf8_lossy(&rest).into_owned()
    });
    let t0 = real_now();
    let args = ["-i", "100", "--id", "unacked", "--count", "1"];
    let mut client = Proc::client(port, "unacked", &args);
    client.expect_exit(1);
    let waited = t0.elapsed();
    // The ack timeout: 5 intervals, at least 2 s.
    assert!(waited >= Duration::from_secs(2), "{waited:?}");
    assert!(
        said(&client).contains("Heartbeat #1 was not acknowledged within"),
        "{:#?}",
        client.stderr()
    );
    // It still said goodbye.
    let rest = fake.join().unwrap();
    assert!(rest.ends_with("BYE\n"), "{rest:?}");
}

#[test]
fn a_plaintext_client_to_a_tls_server_is_told_to_add_tls_and_exits_1() {
    let p = pki();
    let (mut server, port) = Proc::json_server(&p.server_args());
    server.wait_stderr("TLS on");
    // The server answers a plaintext HELLO, and a legacy heartbeat, with one plaintext line.
    assert_eq!(exchange(port, b"HELLO 1 raw 100\n"), TLS_EXPECTED);
    assert_eq!(exchange(port, b"Sequence #1: 1.0\n"), TLS_EXPECTED);
    // The client says so in one line and exits 1, reconnecting or not: a configuration error.
    for extra in [&[][..], &["--reconnect"]] {
        let args = [&["-i", "100", "--id", "plain", "--count", "1"][..], extra].concat();
        let mut client = Proc::client(port, "plain", &args);
        client.expect_exit(1);
        let lines: Vec<_> = client
            .stderr()
            .iter()
            .filter(|l| l.contains("start the client with --tls"))
            .collect();
        assert_eq!(lines.len(), 1, "{:#?}", client.stderr());
    }
    server.kill();
}

/// `--tls --tls-ca CA --tls-server-name localhost --count 1 -i 100`, then `extra`.
fn tls_client(port: u16, ca: &std::path::Path, extra: &[&str]) -> Proc {
    let args = [
        "--tls",
        "--tls-ca",
        arg(ca),
        "--tls-server-name",
        "localhost",
        "--count",
        "1",
        "-i",
        "100",
        "--id",
        "tls",
    ];
    Proc::client(port, "tls", &[&args[..], extra].concat())
}

#[test]
fn a_tls_client_to_a_plaintext_server_is_told_to_drop_tls_and_exits_1() {
    let p = pki();
    // Our plaintext server answers a TLS hello with a plaintext ERROR: the client knows for
    // sure, in one line, and does not retry even with --reconnect.
    let (mut server, port) = Proc::json_server(&[]);
    assert_eq!(
        exchange(port, b"\x16\x03\x01\x00\xf4\x01\x00\x00\xf0\x03\x03"),
        "ERROR this server does not speak TLS: connect without --tls\n"
    );
    for extra in [&[][..], &["--reconnect"]] {
        let mut client = tls_client(port, &p.ca, extra);
        client.expect_exit(1);
        let lines: Vec<_> = client
            .stderr()
            .iter()
            .filter(|l| l.contains("The server does not speak TLS: drop --tls"))
            .collect();
        assert_eq!(lines.len(), 1, "{:#?}", client.stderr());
    }
    server.kill();
    // A plaintext server that answers in plaintext: the client knows for sure, and does not
    // retry even with --reconnect.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let fake = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut buf = [0u8; 512];
        let _ = stream.read(&mut buf);
        let _ = stream.write_all(b"ERROR unrecognised protocol\n");
        // A second connection would be a retry.
        listener.set_nonblocking(true).unwrap();
        thread::sleep(Duration::from_millis(500));
        listener.accept().is_err()
    });
    let mut client = tls_client(port, &p.ca, &["--reconnect"]);
    client.expect_exit(1);
    let lines: Vec<_> = client
        .stderr()
        .iter()
        .filter(|l| l.contains("The server does not speak TLS: drop --tls (or check the port)"))
        .collect();
    assert_eq!(lines.len(), 1, "{:#?}", client.stderr());
    assert!(fake.join().unwrap(), "the client connected again");
}
