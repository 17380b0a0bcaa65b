//! Output that never blocks the monitor: the log (stderr) and the `--json` events (stdout) are
//! written by a thread of their own each, from a bounded queue of lines.
//!
//! The server's loop only queues a line (`try_send`, never waiting). When a stream's reader
//! does not keep up (a stuck log shipper, a paused terminal, a pipe nobody drains), its queue
//! fills and further lines are dropped and counted; once the writer gets going again, the
//! stream says how many were lost, where they were lost (before the next line queued after
//! them, or once the queue is written out): `dropped 1234 log lines while stderr was blocked`
//! on stderr, a `{"event":"dropped","lines":1234,...}` line on stdout.
//! Meanwhile the monitor goes on acknowledging and judging its clients.
//!
//! A stdout that cannot be written at all (closed: the `--json` consumer died, `EPIPE`) is not
//! something to go on without: [`Stream::failed`] completes, the server stops, logs why and
//! exits 1, so that a supervisor restarts it with a reader. A failing stderr just ends the log.
//!
//! [`OutputCounts`] is what `/metrics` can publish about it.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use heartbeat_core::server::unix_seconds;
use tokio::sync::Notify;

use heartbeat_net::{Clock as _, SystemClock};

/// Log lines queued for stderr at most; beyond them lines are dropped and counted.
pub(crate) const STDERR_QUEUE: usize = 4096;

/// JSON lines queued for stdout at most; beyond them lines are dropped and counted.
pub(crate) const STDOUT_QUEUE: usize = 16_384;

/// Lines dropped and written so far on one stream: for `/metrics`
/// (`heartbeat_output_dropped_lines_total{stream}`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct OutputCounts {
    /// Lines written.
    pub(crate) written: u64,
    /// Lines dropped because the queue was full (the reader did not keep up) or the stream had
    /// failed.
    pub(crate) dropped: u64,
}

/// What a stream's writer thread is handed.
enum Msg {
    Line(Vec<u8>),
    /// So many lines were dropped here: say so.
    Dropped(u64),
    /// Answer once everything before is written.
    Flush(mpsc::Sender<()>),
}

/// One output stream, written by its own thread from a bounded queue. Clones share the queue.
#[derive(Clone)]
pub(crate) struct Stream {
    tx: SyncSender<Msg>,
    shared: Arc<Shared>,
}

struct Shared {
    /// `stderr` or `stdout`, for messages.
    name: &'static str,
    /// Dropped since the last notice was queued.
    pending: AtomicU64,
    dropped: AtomicU64,
    written: AtomicU64,
    /// The writer gave up (a write failed).
    failed: AtomicBool,
    error: Mutex<Option<io::Error>>,
    failed_notify: Notify,
}

impl Stream {
    /// A stream writing to `sink` on a thread named `name`, with `capacity` lines queued at
    /// most; `notice(n)` is the line (newline included) that says `n` lines were dropped.
    pub(crate) fn spawn(
        name: &'static str,
        capacity: usize,
        sink: impl io::Write + Send + 'static,
        notice: fn(&'static str, u64) -> Vec<u8>,
    ) -> io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel(capacity.max(1));
        let shared = Arc::new(Shared {
            name,
            pending: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            written: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            error: Mutex::new(None),
            failed_notify: Notify::new(),
        });
        let s = Arc::clone(&shared);
        thread::Builder::new()
            .name(format!("{name} writer"))
            .spawn(move || write_loop(&s, sink, &rx, notice))?;
        Ok(Self { tx, shared })
    }

    /// Queues `line` (a newline is added), or drops and counts it when the queue is full.
    /// Never waits.
    pub(crate) fn line(&self, line: impl Into<Vec<u8>>) {
        let mut bytes = line.into();
        if bytes.last() != Some(&b'\n') {
            bytes.push(b'\n');
        }
        self.send(bytes);
    }

    /// Lines written and dropped so far.
    pub(crate) fn counts(&self) -> OutputCounts {
        OutputCounts {
            written: self.shared.written.load(Ordering::Relaxed),
            dropped: self.shared.dropped.load(Ordering::Relaxed),
        }
    }

    /// Completes when a write failed (for stdout: closed, `EPIPE`); at once if it already did.
    pub(crate) async fn failed(&self) {
        loop {
            let notified = self.shared.failed_notify.notified();
            if self.shared.failed.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    /// The error that ended the writer, if a write failed.
    pub(crate) fn error(&self) -> Option<String> {
        self.shared
            .error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(ToString::to_string)
    }

    /// Waits until everything queued so far is written, at most `timeout` (a reader that
    /// never drains the stream does not hold up the exit). True if it was.
    pub(crate) fn flush(&self, timeout: Duration) -> bool {
        const STEP: Duration = Duration::from_millis(5);
        let (done_tx, done_rx) = mpsc::channel();
        let mut msg = Msg::Flush(done_tx);
        let mut waited = Duration::ZERO;
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Full(m)) if waited < timeout => {
                    msg = m;
                    thread::sleep(STEP);
                    waited += STEP;
                }
                Err(_) => return false,
            }
        }
        done_rx.recv_timeout(timeout.saturating_sub(waited)).is_ok()
    }

    /// A writer for one `tracing` event: collects what the formatter writes and queues it as
    /// one line when dropped.
    pub(crate) fn event_writer(&self) -> EventWriter {
        EventWriter {
            stream: self.clone(),
            buf: Vec::new(),
        }
    }

    fn send(&self, bytes: Vec<u8>) {
        let s = &self.shared;
        if s.failed.load(Ordering::Relaxed) {
            s.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // Lines dropped before this one are announced first, in their place.
        let pending = s.pending.swap(0, Ordering::Relaxed);
        if pending > 0 && self.tx.try_send(Msg::Dropped(pending)).is_err() {
            s.pending.fetch_add(pending + 1, Ordering::Relaxed);
            s.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.tx.try_send(Msg::Line(bytes)).is_err() {
            s.pending.fetch_add(1, Ordering::Relaxed);
            s.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("name", &self.shared.name)
            .field("counts", &self.counts())
            .finish_non_exhaustive()
    }
}

fn write_loop(
    s: &Shared,
    mut sink: impl io::Write,
    rx: &mpsc::Receiver<Msg>,
    notice: fn(&'static str, u64) -> Vec<u8>,
) {
    loop {
        let msg = match rx.try_recv() {
            Ok(msg) => msg,
            Err(mpsc::TryRecvError::Empty) => {
                // Caught up: lines dropped meanwhile and not announced yet are announced now,
                // even if nothing else is ever written.
                let n = s.pending.swap(0, Ordering::Relaxed);
                if n > 0 {
                    if let Err(e) = sink
                        .write_all(&notice(s.name, n))
                        .and_then(|()| sink.flush())
                    {
                        fail(s, rx, e);
                        return;
                    }
                }
                match rx.recv() {
                    Ok(msg) => msg,
                    Err(_) => return,
                }
            }
            Err(mpsc::TryRecvError::Disconnected) => return,
        };
        let line = matches!(msg, Msg::Line(_));
        let result = match msg {
            Msg::Line(bytes) => sink.write_all(&bytes).and_then(|()| sink.flush()),
            Msg::Dropped(n) => sink
                .write_all(&notice(s.name, n))
                .and_then(|()| sink.flush()),
            Msg::Flush(done) => {
                let r = sink.flush();
                let _ = done.send(());
                r
            }
        };
        match result {
            Ok(()) if line => {
                s.written.fetch_add(1, Ordering::Relaxed);
            }
            Ok(()) => {}
            Err(e) => {
                if line {
                    s.dropped.fetch_add(1, Ordering::Relaxed);
                }
                fail(s, rx, e);
                return;
            }
        }
    }
}

/// A write failed: the stream is over. Everything still queued is counted as dropped, and
/// whoever waits for the failure or a flush is told (a flush fails).
fn fail(s: &Shared, rx: &mpsc::Receiver<Msg>, e: io::Error) {
    *s.error.lock().unwrap_or_else(PoisonError::into_inner) = Some(e);
    s.failed.store(true, Ordering::Release);
    s.failed_notify.notify_waiters();
    while let Ok(msg) = rx.try_recv() {
        match msg {
            Msg::Line(_) => {
                s.dropped.fetch_add(1, Ordering::Relaxed);
            }
            // Dropping the answer's sender tells a waiting flush that nothing was written.
            Msg::Flush(_) | Msg::Dropped(_) => {}
        }
    }
}

/// One `tracing` event's bytes, queued as one line on drop.
pub(crate) struct EventWriter {
    stream: Stream,
    buf: Vec<u8>,
}

impl io::Write for EventWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.stream.send(std::mem::take(&mut self.buf));
        }
    }
}

/// The server's two streams.
#[derive(Clone, Debug)]
pub(crate) struct Output {
    /// The log, and the text reports.
    pub(crate) stderr: Stream,
    /// The `--json` events.
    pub(crate) stdout: Stream,
}

impl Output {
    /// Starts both writer threads.
    pub(crate) fn start() -> io::Result<Self> {
        Ok(Self {
            stderr: Stream::spawn("stderr", STDERR_QUEUE, io::stderr(), log_notice)?,
            stdout: Stream::spawn("stdout", STDOUT_QUEUE, io::stdout(), json_notice)?,
        })
    }

    /// Writes what is queued on both, within `timeout` each (at exit).
    pub(crate) fn flush(&self, timeout: Duration) {
        self.stdout.flush(timeout);
        self.stderr.flush(timeout);
    }
}

/// `WARN dropped N log lines while stderr was blocked`, in the log's own shape.
fn log_notice(name: &'static str, n: u64) -> Vec<u8> {
    format!(
        "{}  WARN dropped {n} log lines while {name} was blocked (the monitor went on)\n",
        SystemClock.unix().display_secs(6)
    )
    .into_bytes()
}

/// `{"event":"dropped","lines":N,"time":T}`: a JSON consumer can tell that it missed events.
fn json_notice(_: &'static str, n: u64) -> Vec<u8> {
    let v = serde_json::json!({
        "event": "dropped",
        "lines": n,
        "time": unix_seconds(SystemClock.unix()),
    });
    format!("{v}\n").into_bytes()
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::Receiver;

    use super::*;

    /// A sink that blocks each write until the test lets it go, and keeps what it wrote.
    struct Gate {
        go: Receiver<()>,
        out: Arc<Mutex<Vec<u8>>>,
    }

    impl io::Write for Gate {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.go
                .recv()
                .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))?;
            self.out.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn counting(_: &'static str, n: u64) -> Vec<u8> {
        format!("[dropped {n}]\n").into_bytes()
    }

    #[test]
    fn lines_are_never_waited_for_and_losses_are_announced() {
        let (go, rx) = mpsc::channel();
        let out = Arc::new(Mutex::new(Vec::new()));
        let s = Stream::spawn(
            "test",
            2,
            Gate {
                go: rx,
                out: Arc::clone(&out),
            },
            counting,
        )
        .unwrap();
        for i in 0..10 {
            s.line(format!("{i}"));
        }
        // At most the one line the writer holds and the two queued made it; none waited.
        let dropped = s.counts().dropped;
        assert!((7..=8).contains(&dropped), "{dropped}");
        // The reader comes back: everything queued is written, then the next line is
        // preceded by the count of what was lost.
        for _ in 0..20 {
            go.send(()).unwrap();
        }
        assert!(s.flush(Duration::from_secs(5)));
        s.line("after");
        assert!(s.flush(Duration::from_secs(5)));
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[lines.len() - 2..],
            [format!("[dropped {dropped}]").as_str(), "after"],
            "{text}"
        );
        assert_eq!(s.counts().written + dropped, 11);
    }

    #[tokio::test]
    async fn a_failed_write_ends_the_stream_and_is_reported() {
        let (go, rx) = mpsc::channel::<()>();
        drop(go);
        let s = Stream::spawn(
            "test",
            4,
            Gate {
                go: rx,
                out: Arc::default(),
            },
            counting,
        )
        .unwrap();
        s.line("lost");
        tokio::time::timeout(Duration::from_secs(5), s.failed())
            .await
            .expect("the failure is reported");
        assert!(s.error().unwrap().contains("pipe"), "{:?}", s.error());
        s.line("after the failure");
        assert_eq!(
            s.counts(),
            OutputCounts {
                written: 0,
                dropped: 2
            }
        );
        assert!(
            !s.flush(Duration::from_millis(100)),
            "nothing to flush into"
        );
    }
}
