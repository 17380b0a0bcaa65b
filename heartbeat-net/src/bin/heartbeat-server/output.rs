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
//! A writer wakes once per batch, not once per line: it takes everything queued, writes it with
//! one `write` call, then lingers [`LINGER`] before it looks again, so that the lines queued
//! meanwhile cost the server's loop no wake-up (queueing to a writer that is not waiting on the
//! queue is a plain store, no system call). A line therefore waits at most [`LINGER`] (10 ms)
//! for its writer, beyond the time the reader takes to accept the lines ahead of it; a
//! [`Stream::flush`] answers within the same bound.
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

/// How long a writer waits after writing a batch before it takes the next one: the most a line
/// waits for its writer (beyond the reader's own pace), and the most a [`Stream::flush`] waits
/// for it. Under a steady trickle of lines the writer wakes once per `LINGER` instead of once
/// per line. 10 ms: each wake costs the writer some 20 us of CPU on a shared machine, and 5 ms
/// cost it half as much again at 1,000 lines a second (BENCHMARKS.md, "The log writer at a low
/// rate"). A queue fills during one linger only above `capacity / LINGER` lines a second
/// (409,600 for stderr's), and a writer that took a quarter of its queue at once does not
/// linger.
pub(crate) const LINGER: Duration = Duration::from_millis(10);

/// A batch is written once it holds this many bytes, even if more lines are queued.
const BATCH_BYTES: usize = 64 * 1024;

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
        let capacity = capacity.max(1);
        let (tx, rx) = mpsc::sync_channel(capacity);
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
            .spawn(move || write_loop(&s, sink, &rx, capacity, notice))?;
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
    /// never drains the stream does not hold up the exit). True if it was. A writer that
    /// lingers after a batch takes the request within [`LINGER`].
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

/// The writer thread: takes what is queued as one batch, writes it with one `write` call, then
/// lingers [`LINGER`] (unless the batch was large: a quarter of the queue or more) so that lines
/// queued meanwhile need no wake-up. Only when the queue is found empty does it wait on it.
fn write_loop(
    s: &Shared,
    mut sink: impl io::Write,
    rx: &mpsc::Receiver<Msg>,
    capacity: usize,
    notice: fn(&'static str, u64) -> Vec<u8>,
) {
    let mut batch = Batch::default();
    loop {
        let first = match rx.try_recv() {
            Ok(msg) => msg,
            Err(mpsc::TryRecvError::Empty) => {
                // Caught up: lines dropped meanwhile and not announced yet are announced now,
                // even if nothing else is ever written.
                let n = s.pending.swap(0, Ordering::Relaxed);
                if n > 0 {
                    batch.bytes.extend_from_slice(&notice(s.name, n));
                    if let Err(e) = batch.write(s, &mut sink) {
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
        let mut taken = 0;
        // Whether the batch took everything queued (rather than stopping at `BATCH_BYTES`).
        let mut drained = false;
        let mut next = Some(first);
        while let Some(msg) = next {
            batch.add(s, msg, notice);
            taken += 1;
            next = if batch.bytes.len() < BATCH_BYTES {
                let more = rx.try_recv().ok();
                drained = more.is_none();
                more
            } else {
                None
            };
        }
        if let Err(e) = batch.write(s, &mut sink) {
            fail(s, rx, e);
            return;
        }
        // Lingering is for a trickle: a writer that left lines queued (a batch full of bytes),
        // or took a quarter of its queue, goes straight on, or it would cap the stream at one
        // batch per linger (64 KiB per 10 ms) and drop lines under a flood.
        if drained && taken < (capacity / 4).max(1) {
            thread::sleep(LINGER);
        }
    }
}

/// What a writer takes from its queue at once, written with one `write` call.
#[derive(Default)]
struct Batch {
    /// The lines and notices, in queue order.
    bytes: Vec<u8>,
    /// Lines in `bytes` (notices are not lines).
    lines: u64,
    /// Flush requests taken, answered once `bytes` is written.
    flushes: Vec<mpsc::Sender<()>>,
}

impl Batch {
    fn add(&mut self, s: &Shared, msg: Msg, notice: fn(&'static str, u64) -> Vec<u8>) {
        match msg {
            Msg::Line(bytes) => {
                self.bytes.extend_from_slice(&bytes);
                self.lines += 1;
            }
            Msg::Dropped(n) => self.bytes.extend_from_slice(&notice(s.name, n)),
            Msg::Flush(done) => self.flushes.push(done),
        }
    }

    /// Writes and empties the batch, counting its lines as written, or as dropped when the
    /// write fails (part of them may have reached the reader: the count errs on the side of
    /// loss). The flushes are answered only when it was written.
    fn write(&mut self, s: &Shared, sink: &mut impl io::Write) -> io::Result<()> {
        let result = if self.bytes.is_empty() {
            sink.flush()
        } else {
            sink.write_all(&self.bytes).and_then(|()| sink.flush())
        };
        let counter = if result.is_ok() {
            &s.written
        } else {
            &s.dropped
        };
        counter.fetch_add(self.lines, Ordering::Relaxed);
        for done in self.flushes.drain(..) {
            if result.is_ok() {
                let _ = done.send(());
            }
        }
        self.bytes.clear();
        // One burst of long lines should not keep its memory for good.
        if self.bytes.capacity() > 4 * BATCH_BYTES {
            self.bytes.shrink_to(BATCH_BYTES);
        }
        self.lines = 0;
        result
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
    use std::sync::mpsc::{Receiver, Sender};

    use super::*;

    /// A sink that says when a write begins, blocks it until the test lets it go, and keeps
    /// what it wrote.
    struct Gate {
        entered: Sender<()>,
        go: Receiver<()>,
        out: Arc<Mutex<Vec<u8>>>,
    }

    impl io::Write for Gate {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            let _ = self.entered.send(());
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

    /// A sink that keeps each write call's bytes apart.
    struct Recorder(Arc<Mutex<Vec<Vec<u8>>>>);

    impl io::Write for Recorder {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().push(bytes.to_vec());
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn counting(_: &'static str, n: u64) -> Vec<u8> {
        format!("[dropped {n}]\n").into_bytes()
    }

    /// A stream writing to a [`Gate`] that holds its first write.
    struct Held {
        s: Stream,
        /// Lets one write through.
        go: Sender<()>,
        /// A write began.
        entered: Receiver<()>,
        /// What was written.
        out: Arc<Mutex<Vec<u8>>>,
    }

    /// A stream of `capacity` lines whose writer is inside the write of a line `first`, and
    /// holds nothing else.
    fn held(capacity: usize) -> Held {
        let (go, go_rx) = mpsc::channel();
        let (entered_tx, entered) = mpsc::channel();
        let out = Arc::new(Mutex::new(Vec::new()));
        let s = Stream::spawn(
            "test",
            capacity,
            Gate {
                entered: entered_tx,
                go: go_rx,
                out: Arc::clone(&out),
            },
            counting,
        )
        .unwrap();
        s.line("first");
        entered
            .recv_timeout(Duration::from_secs(5))
            .expect("the writer takes the first line");
        Held {
            s,
            go,
            entered,
            out,
        }
    }

    #[test]
    fn lines_are_never_waited_for_and_losses_are_announced() {
        let Held { s, go, out, .. } = held(2);
        for i in 0..10 {
            s.line(format!("{i}"));
        }
        // The writer is stuck in its write: two lines queued, eight dropped; none waited.
        assert_eq!(s.counts().dropped, 8);
        // The reader comes back: everything queued is written, then the next line is
        // preceded by the count of what was lost.
        for _ in 0..20 {
            go.send(()).unwrap();
        }
        assert!(s.flush(Duration::from_secs(5)));
        s.line("after");
        assert!(s.flush(Duration::from_secs(5)));
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        assert_eq!(text, "first\n0\n1\n[dropped 8]\nafter\n");
        assert_eq!(
            s.counts(),
            OutputCounts {
                written: 4,
                dropped: 8
            }
        );
    }

    #[test]
    fn lines_queued_while_the_writer_is_busy_are_written_at_once() {
        let Held {
            s,
            go,
            entered,
            out,
        } = held(128);
        for i in 0..100 {
            s.line(format!("{i}"));
        }
        // Enough for a write per line, as the writer once made.
        for _ in 0..101 {
            go.send(()).unwrap();
        }
        assert!(s.flush(Duration::from_secs(5)));
        let writes = 1 + entered.try_iter().count();
        assert_eq!(
            writes, 2,
            "one write for the first line, one for the hundred queued"
        );
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        let expected: String = std::iter::once("first".to_owned())
            .chain((0..100).map(|i| i.to_string()))
            .map(|l| l + "\n")
            .collect();
        assert_eq!(text, expected);
        assert_eq!(
            s.counts(),
            OutputCounts {
                written: 101,
                dropped: 0
            }
        );
    }

    #[test]
    fn a_trickle_of_lines_is_written_in_batches() {
        let writes = Arc::new(Mutex::new(Vec::new()));
        let s = Stream::spawn("test", 64, Recorder(Arc::clone(&writes)), counting).unwrap();
        // 5,000 lines a second for 10 ms or more: the writer, lingering after each batch,
        // takes several at a time. Generous for a loaded machine: only if the sender stalled
        // for more than LINGER between most of its lines would there be a write per line.
        for i in 0..50 {
            s.line(format!("{i}"));
            thread::sleep(Duration::from_micros(200));
        }
        assert!(s.flush(Duration::from_secs(5)));
        let writes = writes.lock().unwrap();
        assert!(writes.len() <= 25, "{} writes for 50 lines", writes.len());
        assert_eq!(
            writes.concat(),
            (0..50)
                .map(|i| format!("{i}\n"))
                .collect::<String>()
                .into_bytes()
        );
        assert_eq!(s.counts().written, 50);
    }

    #[test]
    fn a_flood_of_long_lines_is_not_capped_at_one_batch_per_linger() {
        // 250 lines of 1 KiB every 20 ms (12.5 MB/s, as a --json server under a connection
        // flood writes): a writer that lingered after every batch of BATCH_BYTES would write
        // 64 KiB per LINGER (6.4 MB/s), fill this 1,024-line queue within ten rounds and drop
        // thousands. Generous for a loaded machine: the queue holds four rounds, so only a
        // writer kept off the CPU for 80 ms would drop a line.
        let writes = Arc::new(Mutex::new(Vec::new()));
        let s = Stream::spawn("test", 1024, Recorder(Arc::clone(&writes)), counting).unwrap();
        let line = "x".repeat(1023);
        for _ in 0..30 {
            for _ in 0..250 {
                s.line(line.as_str());
            }
            thread::sleep(Duration::from_millis(20));
        }
        assert!(s.flush(Duration::from_secs(5)));
        assert_eq!(
            s.counts(),
            OutputCounts {
                written: 7_500,
                dropped: 0
            }
        );
    }

    #[test]
    fn a_lone_line_is_written_without_a_flush() {
        let writes = Arc::new(Mutex::new(Vec::new()));
        let s = Stream::spawn("test", 64, Recorder(Arc::clone(&writes)), counting).unwrap();
        let written = |text: &str| {
            // The bound is LINGER; this waits up to 100 times that (a loaded machine), by
            // polling, without a flush to hurry the writer.
            (0..1000).any(|_| {
                if writes.lock().unwrap().concat() == text.as_bytes() {
                    return true;
                }
                thread::sleep(Duration::from_millis(1));
                false
            })
        };
        s.line("one");
        assert!(written("one\n"));
        // Again while the writer lingers or waits on the queue.
        s.line("two");
        assert!(written("one\ntwo\n"));
    }

    #[tokio::test]
    async fn a_failed_write_ends_the_stream_and_is_reported() {
        let (go, rx) = mpsc::channel::<()>();
        drop(go);
        let s = Stream::spawn(
            "test",
            4,
            Gate {
                entered: mpsc::channel().0,
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
