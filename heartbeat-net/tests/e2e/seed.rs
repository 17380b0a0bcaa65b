//! The seed's own integration scenarios.

use std::net::TcpListener;
use std::process::Command;

use crate::util::{CLIENT, Proc, SERVER, assert_counts, client_summary, free_port};

#[test]
fn help_states_the_seed_defaults() {
    let help = |bin: &str| {
        let out = Command::new(bin).arg("--help").output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let server = help(SERVER);
    assert!(server.contains("[default: 6510]"), "{server}");
    assert!(server.contains("[default: localhost]"), "{server}");
    let client = help(CLIENT);
    for default in ["[default: 6510]", "[default: localhost]", "[default: 1000]"] {
        assert!(client.contains(default), "{client}");
    }
}

#[test]
fn defaults_send_one_heartbeat_a_second() {
    let mut server = Proc::server(&["-p", "0"]);
    let port = server.port();
    // Default interval (1 s) and default identity (the host name).
    let mut client = Proc::client(port, "client", &["--count", "2"]);
    client.wait_stderr(&format!("Successfully connected to 127.0.0.1:{port}"));
    client.wait_stderr("Sequence #1: Sending heartbeat at ");
    client.wait_stderr("Sequence #2: Sending heartbeat at ");
    client.expect_exit(0);
    server.wait_stderr("Accepted connection from 127.0.0.1:");
    let line = server.wait_stderr("Received data at ");
    assert!(
        line.contains("'Sequence #1: Sending heartbeat at "),
        "{line}"
    );
    // The default id is the host name.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert!(
        line.trim_end().ends_with(&format!(" from {}", host.trim())),
        "{line}"
    );
    server.wait_stderr("'Sequence #2: Sending heartbeat at ");
    // The two arrivals are about a second apart.
    let beats = server
        .stderr()
        .iter()
        .filter(|l| l.contains("Received data at "))
        .count();
    assert_eq!(beats, 2);
}

#[test]
fn custom_port_with_debug() {
    let port = free_port();
    let p = port.to_string();
    let mut server = Proc::server(&["--port", &p, "--debug"]);
    server.wait_stderr(&format!(
        "Awaiting connection from client on port {port}..."
    ));
    // The seed's `-ho` spelling of --host still works.
    let mut client = Proc::spawn(
        CLIENT,
        "client",
        &[
            "-ho",
            "127.0.0.1",
            "-p",
            &p,
            "-i",
            "20",
            "--count",
            "3",
            "-d",
        ],
    );
    client.expect_exit(0);
    client.wait_stderr("acknowledged: RTT ");
    server.wait_stderr("Heartbeat #3 from ");
    assert!(
        server
            .stderr()
            .iter()
            .any(|l| l.contains("DEBUG") && l.contains(": delay ")),
        "{:#?}",
        server.stderr()
    );
}

#[test]
fn client_started_before_the_server() {
    let port = free_port();
    // Without --reconnect: fails like the seed.
    let mut early = Proc::client(port, "early", &["-i", "20", "--count", "3"]);
    early.expect_exit(1);
    early.wait_stderr("Failed to connect to server");

    // With --reconnect: keeps trying and succeeds once the server is up.
    let mut patient = Proc::client(
        port,
        "patient",
        &["-i", "50", "--count", "5", "--reconnect", "--id", "patient"],
    );
    patient.wait_stderr("retrying in");
    let mut server = Proc::json_server_on(port);
    patient.expect_exit(0);
    patient.wait_stderr(&format!("Successfully connected to 127.0.0.1:{port}"));
    let clients = server.summary();
    assert_counts(client_summary(&clients, "patient"), 5, 0);
}

#[test]
fn port_in_use() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let mut server = Proc::server(&["-p", &port]);
    server.expect_exit(1);
    server.wait_stderr("Address already in use");
}

#[test]
fn bad_flag_values_exit_2() {
    for (bin, args) in [
        (SERVER, &["-p", "70000"][..]),
        (SERVER, &["--port", "x"][..]),
        (CLIENT, &["-i", "0"][..]),
        (CLIENT, &["-i", "-5"][..]),
        (CLIENT, &["--id", "has space"][..]),
        (CLIENT, &["--count", "0"][..]),
    ] {
        let out = Command::new(bin).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{bin} {args:?}");
        assert!(!out.stderr.is_empty());
    }
}

#[test]
fn a_second_client_after_the_first_died() {
    let (mut server, port) = Proc::json_server(&[]);
    let mut first = Proc::client(port, "first", &["-i", "20", "--id", "first"]);
    server.wait_beat("first", 3);
    first.kill();
    let gone = server.wait_event("first disconnected", |v| {
        v["event"] == "disconnected" && v["client"] == "first"
    });
    assert_eq!(gone["reason"], "closed by peer");
    server.wait_stderr("Client first at 127.0.0.1:");

    let mut second = Proc::client(
        port,
        "second",
        &["-i", "50", "--count", "4", "--id", "second"],
    );
    second.expect_exit(0);
    let clients = server.summary();
    assert_counts(client_summary(&clients, "second"), 4, 0);
    assert_eq!(client_summary(&clients, "first")["connected"], false);
}

#[test]
fn client_exits_1_when_the_server_goes_away() {
    let (mut server, port) = Proc::json_server(&[]);
    let mut client = Proc::client(port, "client", &["-i", "20", "--id", "orphan"]);
    server.wait_beat("orphan", 2);
    server.kill();
    client.expect_exit(1);
    client.wait_stderr("Server may have abruptly closed the connection");
}

/// The seed's note: a privileged port needs root. As an unprivileged user the server exits 1
/// and says why. The test drops from root to `nobody` (setpriv), so it cannot run as anyone else:
/// ignored by the plain test command, run by name in `.ci/run`, which runs as root.
#[test]
#[ignore = "needs root and setpriv (drops to nobody); .ci/run runs it as root"]
fn privileged_port_without_rights_exits_1_saying_so() {
    use std::os::unix::fs::PermissionsExt;
    let uid = Command::new("id").arg("-u").output().unwrap();
    let uid = String::from_utf8_lossy(&uid.stdout);
    assert_eq!(uid.trim(), "0", "must run as root, to drop to nobody");
    let setpriv = Command::new("setpriv").arg("--version").output();
    assert!(
        setpriv.is_ok_and(|o| o.status.success()),
        "needs setpriv (util-linux) to drop to nobody"
    );
    // The build directory may not be reachable by `nobody` (mktemp -d is 0700): copy the binary.
    let copy =
        std::env::temp_dir().join(format!("heartbeat-server-privtest-{}", std::process::id()));
    std::fs::copy(SERVER, &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&copy)
        .args(["--port", "80", "--bind", "127.0.0.1"])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&copy);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("privileged port"), "{stderr}");
}
