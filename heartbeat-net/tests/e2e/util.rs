//! Running the real binaries: spawn, read their output line by line with bounded waits, signal
//! them, and always kill them when the test ends.

use std::io::{BufRead, BufReader, Read, Write as _};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Long enough for a loaded two-core machine; every wait returns as soon as its line comes.
pub(crate) const WAIT: Duration = Duration::from_secs(15);

pub(crate) const SERVER: &str = env!("CARGO_BIN_EXE_heartbeat-server");
pub(crate) const CLIENT: &str = env!("CARGO_BIN_EXE_heartbeat-client");

/// Real time, for waiting on real processes: nothing here is simulated.
#[allow(clippy::disallowed_methods)]
pub(crate) fn real_now() -> Instant {
    Instant::now()
}

/// The wall clock now as `SECONDS.FRACTION` with `decimals` digits, for hand-written
/// heartbeats (the server refuses stamps more than a day from its clock).
#[allow(clippy::disallowed_methods)]
pub(crate) fn unix_stamp(decimals: usize) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let frac = format!("{:09}", now.subsec_nanos());
    format!("{}.{}", now.as_secs(), &frac[..decimals.min(9)])
}

/// A port that was free a moment ago (bound on 127.0.0.1:0, then released).
pub(crate) fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// One output stream of a child, read on a thread; every line is kept for failure messages.
struct Lines {
    rx: Receiver<String>,
    seen: Vec<String>,
    closed: bool,
}

impl Lines {
    fn new(r: impl Read + Send + 'static) -> Self {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(r).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            rx,
            seen: Vec::new(),
            closed: false,
        }
    }

    /// The next line, waiting until `deadline`; `None` at the deadline or end of stream.
    fn next_until(&mut self, deadline: Instant) -> Option<String> {
        if self.closed {
            return None;
        }
        let left = deadline.saturating_duration_since(real_now());
        match self.rx.recv_timeout(left) {
            Ok(line) => {
                self.seen.push(line.clone());
                Some(line)
            }
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                self.closed = true;
                None
            }
        }
    }

    /// Everything until end of stream (the child has exited), or `WAIT`.
    fn rest(&mut self) {
        let deadline = real_now() + WAIT;
        while self.next_until(deadline).is_some() {}
    }
}

/// A running binary. Dropping it kills it.
pub(crate) struct Proc {
    pub(crate) name: String,
    child: Child,
    stdout: Lines,
    stderr: Lines,
    /// A stderr the test does not read yet.
    held_stderr: Option<std::process::ChildStderr>,
    status: Option<ExitStatus>,
}

/// What a test does with a child's output stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pipe {
    /// Read on a thread, line by line (the default).
    Read,
    /// A pipe nobody reads until [`Proc::read_stderr`]: the child's writes block once it is full.
    Held,
    /// A pipe whose reading end is closed at once: the child's writes fail (`EPIPE`).
    Closed,
}

impl Proc {
    pub(crate) fn spawn(bin: &str, name: &str, args: &[&str]) -> Self {
        Self::spawn_piped(bin, name, args, Pipe::Read, Pipe::Read, &[])
    }

    /// [`spawn`](Self::spawn), with what to do with stdout and stderr, and more environment.
    pub(crate) fn spawn_piped(
        bin: &str,
        name: &str,
        args: &[&str],
        stdout: Pipe,
        stderr: Pipe,
        env: &[(&str, &str)],
    ) -> Self {
        let mut child = Command::new(bin)
            .args(args)
            .envs(env.iter().copied())
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let stdout = match stdout {
            Pipe::Read => Lines::new(out),
            Pipe::Held | Pipe::Closed => {
                drop(out);
                Lines::new(std::io::empty())
            }
        };
        let (stderr, held) = match stderr {
            Pipe::Read => (Lines::new(err), None),
            Pipe::Held => (Lines::new(std::io::empty()), Some(err)),
            Pipe::Closed => {
                drop(err);
                (Lines::new(std::io::empty()), None)
            }
        };
        Self {
            name: name.to_owned(),
            child,
            stdout,
            stderr,
            held_stderr: held,
            status: None,
        }
    }

    /// Starts reading a [`Pipe::Held`] stderr: what the child wrote from now on, and what the
    /// pipe holds.
    pub(crate) fn read_stderr(&mut self) {
        if let Some(err) = self.held_stderr.take() {
            self.stderr = Lines::new(err);
        }
    }

    /// `heartbeat-server --bind 127.0.0.1 ARGS`.
    pub(crate) fn server(args: &[&str]) -> Self {
        let mut all = vec!["--bind", "127.0.0.1"];
        all.extend_from_slice(args);
        Self::spawn(SERVER, "server", &all)
    }

    /// `heartbeat-server --bind 127.0.0.1 -p 0 --json ARGS`, waiting for its port.
    pub(crate) fn json_server(args: &[&str]) -> (Self, u16) {
        let mut all = vec!["-p", "0", "--json"];
        all.extend_from_slice(args);
        let mut s = Self::server(&all);
        let port = s.port();
        (s, port)
    }

    /// `heartbeat-server --bind 127.0.0.1 -p PORT --json`, waiting until it listens.
    pub(crate) fn json_server_on(port: u16) -> Self {
        Self::json_server_on_with(port, &[])
    }

    /// `heartbeat-server --bind 127.0.0.1 -p PORT --json ARGS`, waiting until it listens.
    pub(crate) fn json_server_on_with(port: u16, args: &[&str]) -> Self {
        let port_arg = port.to_string();
        let mut all = vec!["-p", &port_arg, "--json"];
        all.extend_from_slice(args);
        let mut s = Self::server(&all);
        assert_eq!(s.port(), port);
        s
    }

    /// `heartbeat-client -H 127.0.0.1 -p PORT ARGS`.
    pub(crate) fn client(port: u16, name: &str, args: &[&str]) -> Self {
        let port = port.to_string();
        let mut all = vec!["-H", "127.0.0.1", "-p", &port];
        all.extend_from_slice(args);
        Self::spawn(CLIENT, name, &all)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The port from `Awaiting connection from client on port P...`.
    pub(crate) fn port(&mut self) -> u16 {
        let line = self.wait_stderr("Awaiting connection from client on port");
        let tail = line.rsplit("on port ").next().unwrap();
        tail.trim_end_matches("...")
            .parse()
            .unwrap_or_else(|_| panic!("no port in {line:?}"))
    }

    /// Waits for a stderr line containing `needle` and returns it.
    pub(crate) fn wait_stderr(&mut self, needle: &str) -> String {
        self.wait_stderr_for(needle, |l| l.contains(needle))
    }

    /// Waits for a stderr line matching `pred`.
    pub(crate) fn wait_stderr_for(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = real_now() + WAIT;
        if let Some(l) = self.stderr.seen.iter().find(|l| pred(l)) {
            return l.clone();
        }
        while let Some(line) = self.stderr.next_until(deadline) {
            if pred(&line) {
                return line;
            }
        }
        self.fail(&format!("no stderr line with {what:?}"))
    }

    /// Reads stderr until `pred` holds for every line so far, at most [`WAIT`].
    pub(crate) fn wait_stderr_until(&mut self, what: &str, pred: impl Fn(&[String]) -> bool) {
        let deadline = real_now() + WAIT;
        while !pred(&self.stderr.seen) {
            if self.stderr.next_until(deadline).is_none() {
                self.fail(&format!("stderr never had {what}"));
            }
        }
    }

    /// Waits for a stderr line containing `needle` among those not looked at yet (an earlier
    /// line with it does not count).
    pub(crate) fn wait_new_stderr(&mut self, needle: &str) -> String {
        let deadline = real_now() + WAIT;
        while let Some(line) = self.stderr.next_until(deadline) {
            if line.contains(needle) {
                return line;
            }
        }
        self.fail(&format!("no new stderr line with {needle:?}"))
    }

    /// Asks for the report (SIGUSR1) until its hook counters (ok, failed, timed out, dropped)
    /// satisfy `pred` (runs end a moment after their effects show); returns them.
    pub(crate) fn wait_hook_counts(
        &mut self,
        what: &str,
        pred: impl Fn([u64; 4]) -> bool,
    ) -> [u64; 4] {
        let mut last = [0; 4];
        for _ in 0..50 {
            self.signal("USR1");
            let line = self.wait_new_stderr("hooks: ");
            last = hook_counts_in(&line);
            if pred(last) {
                return last;
            }
            thread::sleep(Duration::from_millis(100));
        }
        self.fail(&format!("hook counts never {what}: last {last:?}"))
    }

    /// Waits for a JSON event on stdout matching `pred`.
    pub(crate) fn wait_event(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_event_after(0, what, pred).1
    }

    /// Waits for a JSON event on stdout matching `pred`, not counting the first `skip` events;
    /// returns its index among the events (from 0) and the event.
    pub(crate) fn wait_event_after(
        &mut self,
        skip: usize,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> (usize, Value) {
        let deadline = real_now() + WAIT;
        let parse = |l: &str| serde_json::from_str::<Value>(l).ok();
        let seen = self.stdout.seen.iter().filter_map(|l| parse(l));
        let mut index = 0;
        for v in seen {
            if index >= skip && pred(&v) {
                return (index, v);
            }
            index += 1;
        }
        while let Some(line) = self.stdout.next_until(deadline) {
            if let Some(v) = parse(&line) {
                if index >= skip && pred(&v) {
                    return (index, v);
                }
                index += 1;
            }
        }
        self.fail(&format!("no JSON event {what} after the first {skip}"))
    }

    /// Waits until the `unidentified` events of `kind` (connections that never identified,
    /// counted per kind and second) add up to `n` at least; returns their sum.
    pub(crate) fn wait_unidentified(&mut self, kind: &str, n: u64) -> u64 {
        let (mut skip, mut sum) = (0, 0);
        while sum < n {
            let what = format!("unidentified {kind} adding up to {n} (so far {sum})");
            let (i, v) = self.wait_event_after(skip, &what, |v| {
                v["event"] == "unidentified" && v["kind"] == kind
            });
            sum += v["count"].as_u64().unwrap_or(0);
            skip = i + 1;
        }
        sum
    }

    /// The sum of the counts of the `unidentified` events of `kind` so far.
    pub(crate) fn unidentified(&self, kind: &str) -> u64 {
        self.events()
            .iter()
            .filter(|v| v["event"] == "unidentified" && v["kind"] == kind)
            .filter_map(|v| v["count"].as_u64())
            .sum()
    }

    /// Waits for the `heartbeat` event of `client` with sequence number `seq`.
    pub(crate) fn wait_beat(&mut self, client: &str, seq: u64) -> Value {
        self.wait_event(&format!("heartbeat {seq} of {client}"), |v| {
            v["event"] == "heartbeat" && v["client"] == client && v["seq"] == seq
        })
    }

    /// Waits for a `transition` event to state `to`.
    pub(crate) fn wait_transition(&mut self, to: &str) -> Value {
        self.wait_event(&format!("transition to {to}"), |v| {
            v["event"] == "transition" && v["to"] == to
        })
    }

    /// The highest sequence number in the `heartbeat` events of `client` so far.
    pub(crate) fn highest_seq(&self, client: &str) -> Option<u64> {
        self.events()
            .iter()
            .filter(|v| v["event"] == "heartbeat" && v["client"] == client)
            .filter_map(|v| v["seq"].as_u64())
            .max()
    }

    /// Waits for the process to exit.
    pub(crate) fn wait_exit(&mut self) -> ExitStatus {
        if let Some(s) = self.status {
            return s;
        }
        let deadline = real_now() + WAIT;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                self.status = Some(s);
                self.stdout.rest();
                self.stderr.rest();
                return s;
            }
            if real_now() > deadline {
                self.fail("did not exit");
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the exit and checks its code.
    pub(crate) fn expect_exit(&mut self, code: i32) {
        let s = self.wait_exit();
        if s.code() != Some(code) {
            self.fail(&format!("exit {s}, expected code {code}"));
        }
    }

    /// Sends a signal with `kill(1)`.
    pub(crate) fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{sig} {}", self.pid());
    }

    /// Kills it now (SIGKILL) and reaps it.
    pub(crate) fn kill(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
    }

    /// Kills it now (SIGKILL), reaps it and reads everything it wrote before it died.
    pub(crate) fn kill_and_read(&mut self) {
        self.kill();
        self.stdout.rest();
        self.stderr.rest();
    }

    /// Stops a `--json` server with SIGTERM and returns its summary's clients.
    pub(crate) fn summary(&mut self) -> Vec<Value> {
        self.signal("TERM");
        self.expect_exit(0);
        let summary = self.wait_event("final summary", |v| {
            v["event"] == "summary" && v["final"] != false
        });
        summary["clients"].as_array().cloned().unwrap_or_default()
    }

    /// All stderr lines so far.
    pub(crate) fn stderr(&self) -> &[String] {
        &self.stderr.seen
    }

    /// All stdout JSON events so far.
    pub(crate) fn events(&self) -> Vec<Value> {
        self.stdout
            .seen
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn fail(&mut self, why: &str) -> ! {
        self.kill();
        self.stdout.rest();
        self.stderr.rest();
        panic!(
            "{} (pid {}): {why}\n--- stderr ---\n{}\n--- stdout ---\n{}",
            self.name,
            self.pid(),
            self.stderr.seen.join("\n"),
            self.stdout.seen.join("\n")
        );
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The hook counters (ok, failed, timed out, dropped) in a line with
/// `hooks: 1 ok, 0 failed, 0 timed out, 19 alerts dropped` (the SIGUSR1 report, the shutdown).
#[track_caller]
pub(crate) fn hook_counts_in(line: &str) -> [u64; 4] {
    let numbers: Vec<u64> = line
        .split("hooks: ")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .into_iter()
        .flat_map(|s| s.split(", "))
        .filter_map(|part| part.split_whitespace().next()?.parse().ok())
        .collect();
    numbers
        .try_into()
        .unwrap_or_else(|n| panic!("counts in {line:?}: {n:?}"))
}

/// Checks the `received` and `missed` counts of a summary entry.
#[track_caller]
pub(crate) fn assert_counts(c: &Value, received: u64, missed: u64) {
    assert_eq!(
        (c["received"].as_u64(), c["missed"].as_u64()),
        (Some(received), Some(missed)),
        "{c:#}"
    );
}

/// Every one of the `sent` heartbeats of a client's summary `c` was received, and every slot up
/// to its highest is counted once: what holds on a loaded machine too, where the client may skip
/// a slot it woke too late for (then missed, rightly).
pub(crate) fn assert_sent_all_counted(c: &Value, sent: u64) {
    let (received, missed, highest) = (
        c["received"].as_u64(),
        c["missed"].as_u64().unwrap_or(0),
        c["highest_seq"].as_u64().unwrap_or(0),
    );
    assert_eq!(received, Some(sent), "{c:#}");
    assert_eq!(sent + missed, highest, "{c:#}");
}

/// The heartbeats a client reports it did not send (`Heartbeats #a-#b were not sent`).
pub(crate) fn skipped_by(client: &Proc) -> u64 {
    client
        .stderr()
        .iter()
        .filter_map(|l| {
            l.split("Heartbeats #")
                .nth(1)?
                .split(" were not sent")
                .next()
        })
        .filter_map(|range| {
            let (a, b) = range.split_once("-#")?;
            Some(b.parse::<u64>().ok()? - a.parse::<u64>().ok()? + 1)
        })
        .sum()
}

/// The summary entry of `client` (an id, or `legacy@ADDR`).
pub(crate) fn client_summary<'a>(clients: &'a [Value], client: &str) -> &'a Value {
    clients
        .iter()
        .find(|c| c["client"] == client)
        .unwrap_or_else(|| panic!("no {client} in {clients:#?}"))
}

/// One `read`, again after an interruption. A socket read with a timeout is never restarted by
/// the kernel: a signal, or the test process being stopped and continued (a frozen container),
/// fails it with EINTR, which says nothing about the peer (std's `read_to_end` retries too).
pub(crate) fn read_again(stream: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match stream.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Reads until the server closes the stream; returns what it sent.
pub(crate) fn read_to_close(stream: &mut TcpStream) -> String {
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        match read_again(stream, &mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            // A reset after unread input is a close too.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("server did not close the connection: {e}"),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Sends `bytes` on a new connection to `port` and returns what the server wrote before it
/// closed the connection. (The sending side stays open: the driver stops writing to a peer
/// once it has read its end of stream.)
pub(crate) fn exchange(port: u16, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(bytes).unwrap();
    read_to_close(&mut s)
}

/// `n` connections to `to` from the local address `from`, bound before connecting (Linux
/// routes all of 127/8 to the loopback, so 127.0.0.2 is another host to a per-address limit).
/// Blocking streams; each is open until dropped, or closed by the server.
pub(crate) fn connect_from(from: IpAddr, to: SocketAddr, n: usize) -> Vec<TcpStream> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut held = Vec::with_capacity(n);
        for _ in 0..n {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(SocketAddr::new(from, 0)).unwrap();
            let stream = socket.connect(to).await.unwrap().into_std().unwrap();
            stream.set_nonblocking(false).unwrap();
            held.push(stream);
        }
        held
    })
}

/// Writes `text` to `dir/name` with `mode` (0o600 for a key file); returns the path.
pub(crate) fn write_file(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// The path as a flag value.
pub(crate) fn arg(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

/// Waits until something listens on `port` (a server whose stderr is not read cannot say so).
pub(crate) fn wait_listening(port: u16) {
    let deadline = real_now() + WAIT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(real_now() < deadline, "nothing listens on port {port}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `pred` holds, checking every 20 ms, at most [`WAIT`].
pub(crate) fn wait_until(what: &str, pred: impl Fn() -> bool) {
    let deadline = real_now() + WAIT;
    while !pred() {
        assert!(real_now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// True while process `pid` runs (not gone, not a zombie).
pub(crate) fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // The state follows the command name in parentheses, which may contain spaces.
            let after = stat.rsplit_once(')')?.1;
            after.split_whitespace().next().map(|state| state != "Z")
        })
        .unwrap_or(false)
}
