//! The floor to compare the server with: a bare read-and-discard tokio server that counts
//! heartbeats by their boundaries ([`BeatCounter`]) and nothing else.
//!
//! Same shape as the server's driver where it costs the same: one thread, one task per
//! connection, a read buffer of the server's default size allocated once per connection. What
//! it leaves out is what the comparison measures: the channel to one core task, parsing, the
//! analysis, the detectors, the acks.
//!
//! With `ack` it is the acking floor: it also answers each v1 connection as a server must
//! ([`Acker`]: `WELCOME`, then one `ACK` per heartbeat, the acks of one read in one write).

use std::cell::Cell;
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;
use heartbeat_net::SystemClock;
use heartbeat_net::driver::Clock as _;
use serde::Serialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::Notify;
use tokio::task::{JoinSet, LocalSet};
use tokio::time::MissedTickBehavior;

use super::ack::Acker;
use super::count::BeatCounter;
use heartbeat_net::driver::{Listener, ServerOptions};

/// How long accepting pauses after `accept` fails (out of file descriptors, say).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The sink's counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct SinkCount {
    /// Heartbeats counted, both formats.
    pub(crate) heartbeats: u64,
    /// Connections accepted.
    pub(crate) connections: u64,
    /// Connections open now.
    pub(crate) open: u64,
    /// Bytes read.
    pub(crate) bytes: u64,
}

/// Why the sink reports its count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SinkReason {
    /// The last open connection closed: everything sent so far is counted.
    Idle,
    /// The periodic report (only when something changed).
    Periodic,
}

#[derive(Default)]
struct Counts {
    heartbeats: Cell<u64>,
    connections: Cell<u64>,
    open: Cell<u64>,
    bytes: Cell<u64>,
    idle: Notify,
}

impl Counts {
    fn snapshot(&self) -> SinkCount {
        SinkCount {
            heartbeats: self.heartbeats.get(),
            connections: self.connections.get(),
            open: self.open.get(),
            bytes: self.bytes.get(),
        }
    }
}

/// Accepts and counts until `stop` completes; calls `on_count` every `every` (when the count
/// changed) and whenever the last open connection closes. Returns the final count. With `ack`,
/// v1 connections are answered (the acking floor).
pub(crate) async fn run_sink<L: Listener>(
    listener: L,
    every: Duration,
    ack: bool,
    stop: impl Future<Output = ()>,
    on_count: impl FnMut(SinkCount, SinkReason),
) -> SinkCount {
    LocalSet::new()
        .run_until(sink(listener, every, ack, stop, on_count))
        .await
}

async fn sink<L: Listener>(
    mut listener: L,
    every: Duration,
    ack: bool,
    stop: impl Future<Output = ()>,
    mut on_count: impl FnMut(SinkCount, SinkReason),
) -> SinkCount {
    let counts = Rc::new(Counts::default());
    let read_buffer = ServerOptions::default().read_buffer;
    let mut tasks = JoinSet::new();
    let mut stop = std::pin::pin!(stop);
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last = SinkCount::default();
    let resume = tokio::time::sleep(Duration::ZERO);
    let mut resume = std::pin::pin!(resume);
    let mut paused = false;
    loop {
        tokio::select! {
            biased;
            () = &mut stop => break,
            () = counts.idle.notified() => {
                if counts.open.get() == 0 {
                    last = counts.snapshot();
                    on_count(last, SinkReason::Idle);
                }
            }
            () = &mut resume, if paused => paused = false,
            _ = tick.tick() => {
                let now = counts.snapshot();
                if now != last {
                    last = now;
                    on_count(now, SinkReason::Periodic);
                }
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            r = listener.accept(), if !paused => match r {
                Ok((mut stream, _peer)) => {
                    let counts = counts.clone();
                    counts.connections.set(counts.connections.get() + 1);
                    counts.open.set(counts.open.get() + 1);
                    tasks.spawn_local(async move {
                        let mut buf = vec![0u8; read_buffer].into_boxed_slice();
                        let mut counter = BeatCounter::new();
                        let mut acker = ack.then(Acker::new);
                        let mut answers = BytesMut::new();
                        // End of stream or an error: either way, this connection is over.
                        while let Ok(n @ 1..) = stream.read(&mut buf).await {
                            let beats = counter.feed(&buf[..n]);
                            counts.heartbeats.set(counts.heartbeats.get() + beats);
                            counts.bytes.set(counts.bytes.get() + n as u64);
                            // Legacy clients get no bytes back, as from the server.
                            if let Some(acker) = acker.as_mut().filter(|_| counter.is_v1()) {
                                acker.feed(&buf[..n], SystemClock.unix(), &mut answers);
                                if !answers.is_empty() {
                                    if stream.write_all(&answers).await.is_err() {
                                        break;
                                    }
                                    answers.clear();
                                }
                            }
                        }
                        let beats = counter.finish();
                        counts.heartbeats.set(counts.heartbeats.get() + beats);
                        counts.open.set(counts.open.get() - 1);
                        if counts.open.get() == 0 {
                            counts.idle.notify_one();
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; pausing accepts briefly");
                    paused = true;
                    resume
                        .as_mut()
                        .reset(tokio::time::Instant::now() + ACCEPT_ERROR_PAUSE);
                }
            },
        }
    }
    counts.snapshot()
}
