//! Output never stalls the monitor: a stderr nobody drains, a stdout whose reader is gone.

use crate::util::{Pipe, Proc, SERVER, free_port, wait_listening};

/// The server's stderr is a pipe the test does not read: it fills after a few hundred lines.
/// The clients are acknowledged all along (they used to give up once it was full); the lines
/// beyond the queue are dropped, and the server says how many once the pipe is read again.
#[test]
fn a_stderr_nobody_reads_does_not_stall_the_monitor() {
    let port = free_port();
    let port_arg = port.to_string();
    // -d: a debug line per heartbeat too, so the lines outgrow the pipe and the queue.
    let mut server = Proc::spawn_piped(
        SERVER,
        "server",
        &["--bind", "127.0.0.1", "-p", &port_arg, "--json", "-d"],
        Pipe::Read,
        Pipe::Held,
        &[],
    );
    wait_listening(port);
    let count = "500";
    let mut clients: Vec<Proc> = (0..8)
        .map(|i| {
            let id = format!("quiet-{i}");
            Proc::client(port, &id, &["-i", "10", "--count", count, "--id", &id])
        })
        .collect();
    for c in &mut clients {
        c.expect_exit(0);
        c.wait_stderr("Done: sent 500 heartbeat(s), 500 acknowledged");
    }
    // The pipe is read again: the server says what it had to drop.
    server.read_stderr();
    let line = server.wait_new_stderr("log lines while stderr was blocked");
    let n: u64 = line
        .split("dropped ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {line:?}"));
    assert!(n > 0, "{line}");
    let summary = server.summary();
    assert_eq!(summary.len(), 8);
    for c in &summary {
        assert_eq!(c["received"], 500, "{c:#}");
    }
}

/// A `--json` server whose stdout reader is gone (EPIPE) does not go on silently: it says so
/// on stderr and exits 1, for a supervisor to restart it with a reader.
#[test]
fn a_closed_stdout_is_an_error_and_exit_1() {
    let port = free_port();
    let port_arg = port.to_string();
    let mut server = Proc::spawn_piped(
        SERVER,
        "server",
        &["--bind", "127.0.0.1", "-p", &port_arg, "--json"],
        Pipe::Closed,
        Pipe::Read,
        &[],
    );
    assert_eq!(server.port(), port);
    // The first event is the first write to stdout.
    let mut client = Proc::client(port, "client", &["-i", "50", "--count", "3", "--id", "c"]);
    server.expect_exit(1);
    server.wait_stderr("cannot write to stdout");
    server.wait_stderr("the reader of --json went away");
    client.kill();
}
