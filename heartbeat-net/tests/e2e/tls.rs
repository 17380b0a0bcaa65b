//! `--tls-cert/--tls-key` and `--tls --tls-ca`: TLS with and without authentication, a
//! plaintext client at a TLS server, a certificate the client cannot trust. The certificates are
//! made by `openssl` in a temporary directory for each test, never committed.

use std::io::Write as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use crate::util::{
    Proc, arg, assert_counts, client_summary, read_to_close, unix_stamp, write_file,
};

/// A test CA, a server certificate it signed for the name `localhost` only (no IP address, so a
/// client connecting to 127.0.0.1 must say --tls-server-name), and a second, unrelated CA.
pub(crate) struct Pki {
    pub(crate) dir: TempDir,
    pub(crate) ca: PathBuf,
    pub(crate) other_ca: PathBuf,
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

/// Runs `openssl` with `args` (split at spaces: file names here are plain) in `dir`.
pub(crate) fn openssl(dir: &Path, args: &str) {
    let out = Command::new("openssl")
        .args(args.split_whitespace())
        .current_dir(dir)
        .output()
        .expect("openssl must be installed (Debian package `openssl`; .ci/run installs it)");
    assert!(
        out.status.success(),
        "openssl {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A P-256 key and certificate request or self-signed certificate: `openssl req` with `args`.
pub(crate) const NEW_KEY: &str = "req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";

fn new_ca(dir: &Path, name: &str) -> PathBuf {
    openssl(
        dir,
        &format!(
            "{NEW_KEY} -x509 -keyout {name}.key -out {name}.pem -days 2 -subj /CN={name} \
             -addext basicConstraints=critical,CA:TRUE \
             -addext keyUsage=critical,keyCertSign,cRLSign"
        ),
    );
    dir.join(format!("{name}.pem"))
}

pub(crate) fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = new_ca(d, "test-ca");
    let other_ca = new_ca(d, "other-ca");
    openssl(
        d,
        &format!("{NEW_KEY} -keyout server.key -out server.csr -subj /CN=localhost"),
    );
    let ext = "subjectAltName=DNS:localhost\nbasicConstraints=critical,CA:FALSE\n\
               keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n";
    write_file(d, "server.ext", ext, 0o644);
    openssl(
        d,
        "x509 -req -in server.csr -CA test-ca.pem -CAkey test-ca.key -CAcreateserial \
         -out server.pem -days 2 -extfile server.ext",
    );
    let key = d.join("server.key");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    Pki {
        ca,
        other_ca,
        cert: d.join("server.pem"),
        key,
        dir,
    }
}

impl Pki {
    /// `--tls-cert CERT --tls-key KEY`.
    pub(crate) fn server_args(&self) -> [&str; 4] {
        ["--tls-cert", arg(&self.cert), "--tls-key", arg(&self.key)]
    }
}

/// A TLS client flags: `--tls --tls-ca CA --tls-server-name localhost`, then `rest`.
pub(crate) fn tls_client<'a>(ca: &'a Path, rest: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--tls",
        "--tls-ca",
        arg(ca),
        "--tls-server-name",
        "localhost",
    ];
    args.extend_from_slice(rest);
    args
}

/// A TLS server (`p`'s certificate) on a free port and a TLS client "good" sending to it every
/// 100 ms, once its first heartbeat is in: `(server, port, good)`.
fn tls_server_with_good_client(p: &Pki) -> (Proc, u16, Proc) {
    let (mut server, port) = Proc::json_server(&p.server_args());
    let good = Proc::client(
        port,
        "good",
        &tls_client(&p.ca, &["-i", "100", "--id", "good"]),
    );
    server.wait_beat("good", 1);
    (server, port, good)
}

/// Stops client "good" with SIGTERM (it exits 0 and says goodbye), then the server: every
/// heartbeat "good" sent was received, none missed. Returns the server's summary of clients.
fn stop_good_and_count_it(server: &mut Proc, good: &mut Proc) -> Vec<serde_json::Value> {
    good.signal("TERM");
    good.expect_exit(0);
    server.wait_event("good said goodbye", |v| {
        v["event"] == "disconnected" && v["client"] == "good"
    });
    let highest = server.highest_seq("good").unwrap();
    let clients = server.summary();
    assert_counts(client_summary(&clients, "good"), highest, 0);
    clients
}

#[test]
fn tls_and_authentication_together_count_every_heartbeat() {
    let p = pki();
    let secret = "tls-and-auth-secret-0123456789";
    let keys = write_file(p.dir.path(), "keys", &format!("good {secret}\n"), 0o600);
    let key = write_file(p.dir.path(), "good.key", secret, 0o600);
    let mut args = p.server_args().to_vec();
    args.extend(["--auth-keys", arg(&keys)]);
    let (mut server, port) = Proc::json_server(&args);
    server.wait_stderr("TLS on");
    let mut good = Proc::client(
        port,
        "good",
        &tls_client(
            &p.ca,
            &[
                "-i",
                "100",
                "--count",
                "10",
                "--id",
                "good",
                "--auth-key-file",
                arg(&key),
            ],
        ),
    );
    good.expect_exit(0);
    server.wait_event("good said goodbye", |v| {
        v["event"] == "disconnected" && v["client"] == "good"
    });
    let clients = server.summary();
    let good = client_summary(&clients, "good");
    assert_counts(good, 10, 0);
    assert_eq!(good["state"], "left", "{good:#}");
}

#[test]
fn a_plaintext_client_is_dropped_with_one_line_and_the_server_keeps_serving() {
    let p = pki();
    let (mut server, port, mut good) = tls_server_with_good_client(&p);
    // A peer that connects and says nothing holds up no one (its handshake runs in its own
    // connection's task).
    let silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
    // A plaintext heartbeat client.
    let mut plain = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let addr = plain.local_addr().unwrap();
    let hello = format!("HELLO 1 plain 100\nBEAT 1 {}\n", unix_stamp(6));
    plain.write_all(hello.as_bytes()).unwrap();
    let answer = read_to_close(&mut plain);
    assert!(!answer.contains("WELCOME"), "{answer:?}");
    let needle = format!("TLS handshake with {addr} failed");
    server.wait_stderr(&needle);
    let now = server.highest_seq("good").unwrap();
    server.wait_beat("good", now + 3);
    drop(silent);
    let clients = stop_good_and_count_it(&mut server, &mut good);
    assert!(clients.iter().all(|c| c["client"] != "plain"));
    let tls_lines = server
        .stderr()
        .iter()
        .filter(|l| l.contains(&needle))
        .count();
    assert_eq!(tls_lines, 1, "{:#?}", server.stderr());
}

#[test]
fn the_client_refuses_a_certificate_it_cannot_verify() {
    let p = pki();
    let (mut server, port, mut good) = tls_server_with_good_client(&p);

    // Signed by a CA the client does not trust.
    let mut wrong_ca = Proc::client(
        port,
        "wrong-ca",
        &tls_client(&p.other_ca, &["-i", "100", "--count", "2", "--id", "w1"]),
    );
    wrong_ca.expect_exit(1);
    wrong_ca.wait_stderr("invalid peer certificate");
    // The right CA, but the certificate does not name 127.0.0.1 (only localhost).
    let mut wrong_name = Proc::client(
        port,
        "wrong-name",
        &[
            "--tls",
            "--tls-ca",
            arg(&p.ca),
            "-i",
            "100",
            "--count",
            "2",
            "--id",
            "w2",
        ],
    );
    wrong_name.expect_exit(1);
    wrong_name.wait_stderr("invalid peer certificate");
    // A TLS client at a plaintext server fails too, and says what to do (the server answers its
    // hello in plaintext).
    let (mut plain_server, plain_port) = Proc::json_server(&[]);
    let mut tls_at_plain = Proc::client(
        plain_port,
        "tls-at-plain",
        &tls_client(&p.ca, &["-i", "100", "--count", "2", "--id", "w3"]),
    );
    tls_at_plain.expect_exit(1);
    tls_at_plain.wait_stderr("The server does not speak TLS: drop --tls");
    assert!(plain_server.summary().is_empty());

    let clients = stop_good_and_count_it(&mut server, &mut good);
    assert_eq!(clients.len(), 1, "{clients:#?}");
}

#[test]
fn unusable_tls_files_exit_2() {
    let p = pki();
    let writable_key = write_file(p.dir.path(), "writable.key", "x", 0o666);
    let cases: [(&str, Vec<&str>, &str); 4] = [
        (
            crate::util::SERVER,
            vec!["--tls-cert", arg(&p.cert)],
            "--tls-key",
        ),
        (
            crate::util::SERVER,
            vec!["--tls-cert", arg(&p.ca), "--tls-key", arg(&p.key)],
            "TLS configuration",
        ),
        (
            crate::util::SERVER,
            vec!["--tls-cert", arg(&p.cert), "--tls-key", arg(&writable_key)],
            "it is writable by every user",
        ),
        (
            crate::util::CLIENT,
            vec!["--tls", "--tls-ca", arg(&p.key)],
            "no certificate in the file",
        ),
    ];
    for (bin, args, needle) in cases {
        let out = Command::new(bin)
            .args(&args)
            .args(["-p", "1"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bin} {args:?}: {stderr}");
        assert!(stderr.contains(needle), "{bin} {args:?}: {stderr}");
    }
}

/// SIGHUP reloads the certificate: connections after it get the new one (here signed by
/// another CA, which a client trusting only that CA accepts), the connected client stays.
#[test]
fn sighup_reloads_the_certificate_for_the_next_connections() {
    let p = pki();
    let d = p.dir.path();
    let (mut server, port) = Proc::json_server(&p.server_args());
    let mut first = Proc::client(
        port,
        "first",
        &tls_client(&p.ca, &["-i", "50", "--id", "first"]),
    );
    server.wait_beat("first", 2);
    // A new certificate for the same name, from the other CA, in the same files.
    openssl(
        d,
        &format!("{NEW_KEY} -keyout next.key -out next.csr -subj /CN=localhost"),
    );
    openssl(
        d,
        "x509 -req -in next.csr -CA other-ca.pem -CAkey other-ca.key -CAcreateserial \
         -out next.pem -days 2 -extfile server.ext",
    );
    std::fs::rename(d.join("next.pem"), &p.cert).unwrap();
    std::fs::rename(d.join("next.key"), &p.key).unwrap();
    std::fs::set_permissions(&p.key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    server.signal("HUP");
    server.wait_stderr("Reloaded --tls-cert");
    let mut second = Proc::client(
        port,
        "second",
        &tls_client(&p.other_ca, &["-i", "50", "--id", "second", "--count", "3"]),
    );
    second.expect_exit(0);
    let seq = server.highest_seq("first").unwrap();
    server.wait_beat("first", seq + 2);
    // A certificate file that holds no certificate: refused, the pair in force kept.
    std::fs::copy(d.join("server.csr"), &p.cert).unwrap();
    server.signal("HUP");
    server.wait_stderr("Reloading the TLS certificate:");
    let mut third = Proc::client(
        port,
        "third",
        &tls_client(&p.other_ca, &["-i", "50", "--id", "third", "--count", "2"]),
    );
    third.expect_exit(0);
    first.kill();
    server.kill();
}
