//! A toy service that sends its own heartbeats (`heartbeat_net::embed`), tied to its health.
//!
//! Its main loop does a job every 50 ms, each under a lock, and counts its turns; a watchdog
//! resumes the heartbeats only while the count moves. A few seconds in, another task holds
//! the lock for too long: the main loop hangs, but the runtime (and the heartbeat task) does
//! not, so only the watchdog can notice. It pauses the heartbeats, and the server declares the
//! service down. Once the lock is free the loop turns again, the heartbeats resume, and the
//! server counts the hang as missed heartbeats, once. At the end (or on Ctrl-C) the service
//! shuts the client down: a goodbye, and the server records it as `left`.
//!
//! ```sh
//! cargo run --bin heartbeat-server -- --detector fixed     # in one terminal
//! cargo run -p heartbeat-net --example embedded            # in another
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::Parser;
use heartbeat_net::embed::{Backoff, Builder, ClientConfig, ClientId, Event, Handle};
use tokio::sync::Mutex;
use tokio::time::{Instant, MissedTickBehavior};

/// A toy service that heartbeats to a heartbeat-server while it is healthy.
#[derive(Debug, Parser)]
struct Opt {
    /// The server's host.
    #[arg(short = 'H', long, default_value = "localhost")]
    host: String,

    /// The server's port.
    #[arg(short, long, default_value_t = 6510)]
    port: u16,

    /// The service's client id.
    #[arg(long, default_value = "embedded-example")]
    id: String,

    /// Milliseconds between heartbeats.
    #[arg(short, long, default_value_t = 100)]
    interval: u64,

    /// Seconds from the start until the main loop hangs.
    #[arg(long, default_value_t = 3)]
    hang_at: u64,

    /// Seconds the main loop hangs.
    #[arg(long, default_value_t = 4)]
    hang_for: u64,

    /// Seconds the service runs in all.
    #[arg(long, default_value_t = 10)]
    run_for: u64,
}

/// How often the watchdog looks: well above the main loop's slowest ordinary turn (50 ms).
const WATCHDOG_PERIOD: Duration = Duration::from_millis(500);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let opt = Opt::parse();
    heartbeat_net::app::init_tracing(false);
    let stop = heartbeat_net::app::shutdown_signal()?;

    let config = ClientConfig::new(ClientId::new(&opt.id)?, Duration::from_millis(opt.interval))?
        .reconnect(Some(Backoff::default()));
    let heartbeat = Builder::new(config, opt.host, opt.port)
        .on_event(|e| match e {
            // Per-heartbeat events are left to the stats line.
            Event::Sent { .. } | Event::Acked { .. } => {}
            other => tracing::info!("heartbeat: {other}"),
        })
        .spawn();

    let turns = Arc::new(AtomicU64::new(0));
    let lock = Arc::new(Mutex::new(()));
    let watchdog = tokio::spawn(watchdog(heartbeat.clone(), turns.clone()));
    let reporter = tokio::spawn(report(heartbeat.clone()));
    tokio::spawn(hog(
        lock.clone(),
        Duration::from_secs(opt.hang_at),
        Duration::from_secs(opt.hang_for),
    ));

    let service = main_loop(lock, turns, Duration::from_secs(opt.run_for));
    tokio::select! {
        () = service => tracing::info!("service: done"),
        () = stop => {}
    }
    watchdog.abort();
    reporter.abort();
    let exit = heartbeat.shutdown().await;
    tracing::info!("heartbeat client ended: {exit:?}; {:?}", heartbeat.stats());
    Ok(())
}

/// The service: a job every 50 ms, each under the lock, counted in `turns`.
async fn main_loop(lock: Arc<Mutex<()>>, turns: Arc<AtomicU64>, run_for: Duration) {
    let end = Instant::now() + run_for;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _job = lock.lock().await;
        turns.fetch_add(1, Ordering::Relaxed);
    }
}

/// Another task that takes the lock at `at` and keeps it for `hold`: the main loop hangs.
async fn hog(lock: Arc<Mutex<()>>, at: Duration, hold: Duration) {
    tokio::time::sleep(at).await;
    let _held = lock.lock().await;
    tracing::warn!("service: the lock is held for {hold:?}; the main loop hangs");
    tokio::time::sleep(hold).await;
    tracing::info!("service: the lock is free again");
}

/// Heartbeats only while `turns` moves: a main loop stuck for a period pauses them.
async fn watchdog(heartbeat: Handle, turns: Arc<AtomicU64>) {
    // The first look one period in (a plain `interval` ticks at once, before any turn).
    let mut tick = tokio::time::interval_at(Instant::now() + WATCHDOG_PERIOD, WATCHDOG_PERIOD);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last = turns.load(Ordering::Relaxed);
    loop {
        tick.tick().await;
        let now = turns.load(Ordering::Relaxed);
        if now == last {
            heartbeat.pause();
        } else {
            heartbeat.resume();
        }
        last = now;
    }
}

/// One line a second with the client's counters.
async fn report(heartbeat: Handle) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let s = heartbeat.stats();
        let rtt = s
            .last_rtt
            .map_or_else(|| "-".to_owned(), heartbeat_core::fmt_ms);
        tracing::info!(
            "heartbeat: sent {} acked {} skipped {} reconnects {} rtt {rtt} connected {} paused {}",
            s.sent,
            s.acked,
            s.skipped,
            s.reconnects,
            s.connected,
            s.paused
        );
    }
}
