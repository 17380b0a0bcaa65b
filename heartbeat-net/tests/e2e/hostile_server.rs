//! Misbehaving servers against the real client with `--reconnect`: each test is a small
//! listener on 127.0.0.1 playing one fault to every connection for [`RUN`]. The client must name
//! the fault in its log, and after its first few attempts reconnect at most once a second on
//! average: its backoff starts afresh only after a connection carried acknowledged heartbeats
//! for an ack timeout, never on a `WELCOME` or an `ACK` alone.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::util::{Proc, unix_stamp};

/// How long each misbehaving server plays its part.
const RUN: Duration = Duration::from_secs(10);

/// The attempts allowed before the one-a-second average must hold.
const FIRST_FEW: u64 = 3;

/// What the fake server does to every connection, after reading the client's first bytes (its
/// `HELLO`), except [`NeverReads`](Self::NeverReads).
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// `WELCOME`, then a line that never ends.
    EndlessLine,
    /// `WELCOME`, then a line that is no frame, then it closes.
    Garbage,
    /// `WELCOME` and an `ACK` for a heartbeat the client never sent, then it closes.
    UnsentAck,
    /// `WELCOME`, then it never reads and never writes again, and keeps the connection open.
    NeverReads,
    /// `WELCOME`, then it closes.
    ClosesAfterWelcome,
}

/// A fake server on 127.0.0.1 playing `fault`, counting the connections it accepted.
struct FakeServer {
    port: u16,
    accepted: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    acceptor: Option<thread::JoinHandle<()>>,
}

impl FakeServer {
    fn start(fault: Fault) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, halt) = (accepted.clone(), stop.clone());
        let acceptor = thread::spawn(move || {
            // Connections a server that never reads keeps open until the end.
            let held = Arc::new(Mutex::new(Vec::new()));
            while !halt.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        count.fetch_add(1, Ordering::Relaxed);
                        s.set_nonblocking(false).unwrap();
                        let (halt, held) = (halt.clone(), held.clone());
                        thread::spawn(move || play(s, fault, &halt, &held));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self {
            port,
            accepted,
            stop,
            acceptor: Some(acceptor),
        }
    }

    fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

/// One connection of the fake server.
fn play(mut s: TcpStream, fault: Fault, stop: &AtomicBool, held: &Mutex<Vec<TcpStream>>) {
    let welcome = b"WELCOME 1\n";
    if let Fault::NeverReads = fault {
        let _ = s.write_all(welcome);
        held.lock().unwrap().push(s);
        return;
    }
    let mut buf = [0u8; 1024];
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let _ = s.read(&mut buf);
    let _ = s.write_all(welcome);
    match fault {
        Fault::EndlessLine => {
            let chunk = [b'x'; 1024];
            while !stop.load(Ordering::Relaxed) && s.write_all(&chunk).is_ok() {}
            return;
        }
        Fault::Garbage => {
            let _ = s.write_all(b"NONSENSE 1 2 3\n");
        }
        Fault::UnsentAck => {
            let _ = s.write_all(format!("ACK 999999 {}\n", unix_stamp(6)).as_bytes());
        }
        Fault::ClosesAfterWelcome | Fault::NeverReads => {}
    }
    // Close the sending side, and read until the client closes: closing with its bytes unread
    // would reset the connection, which may discard what was sent before the client reads it.
    let _ = s.shutdown(Shutdown::Write);
    while !stop.load(Ordering::Relaxed) {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break,
        }
    }
}

/// Runs the real client against a fake server playing `fault` for [`RUN`]; checks that it named
/// the fault with a log line containing `says`, and that it averaged at most one attempt a
/// second after its first few.
fn misbehaving_server(fault: Fault, says: &str) {
    let server = FakeServer::start(fault);
    let mut client = Proc::client(
        server.port,
        "client",
        &["-i", "100", "--reconnect", "--id", "victim"],
    );
    thread::sleep(RUN);
    let accepted = server.accepted();
    eprintln!("{fault:?}: {accepted} connections in {RUN:?}");
    let most = FIRST_FEW + RUN.as_secs();
    assert!(
        (1..=most).contains(&accepted),
        "{fault:?}: {accepted} connections in {RUN:?}, at most {most} allowed"
    );
    client.wait_stderr(says);
}

#[test]
fn a_server_sending_an_endless_line_is_named_and_backed_off_from() {
    misbehaving_server(
        Fault::EndlessLine,
        "The server broke the protocol: frame longer than 256 bytes",
    );
}

#[test]
fn a_server_sending_garbage_after_welcome_is_named_and_backed_off_from() {
    misbehaving_server(
        Fault::Garbage,
        "The server broke the protocol: unknown command \"NONSENSE\"",
    );
}

#[test]
fn a_server_acknowledging_unsent_heartbeats_is_named_and_backed_off_from() {
    misbehaving_server(
        Fault::UnsentAck,
        "The server broke the protocol: ACK for heartbeat 999999, which this client never sent",
    );
}

#[test]
fn a_server_that_never_reads_is_named_and_backed_off_from() {
    misbehaving_server(
        Fault::NeverReads,
        "The server acknowledged no heartbeat for",
    );
}

#[test]
fn a_server_closing_after_welcome_is_named_and_backed_off_from() {
    misbehaving_server(
        Fault::ClosesAfterWelcome,
        "The server closed the connection before it acknowledged any heartbeat",
    );
}
