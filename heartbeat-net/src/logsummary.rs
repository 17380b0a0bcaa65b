//! Bounded logging under attack: the one place every repeated log line goes through.
//!
//! A hostile peer can make the server repeat a line as often as it can open connections or
//! send frames (limit reached, frame rejected, connection dropped). [`LogSummary`] writes the
//! first few lines of each kind in every window and counts the rest; when the window ends, one
//! line says how many were left out (`... and 1234 more "connection refused: per-IP limit" in
//! the last 1.000s`). The JSON event stream is not affected: events are data and every one is
//! written.
//!
//! The summary reads no clock: callers pass the driver's monotonic `now`, and the server
//! driver calls [`flush`](LogSummary::flush) when [`next_flush`](LogSummary::next_flush) is
//! due, so a summary comes out even when the attack stops.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use heartbeat_core::fmt_ms;
use tracing::Level;

/// Lines of one kind written per window before the rest are counted. Default 10.
pub const DEFAULT_BURST: u32 = 10;

/// The window lines are counted over. Default 1 s.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(1);

/// Rate-limited, summarised logging, shared by the server driver and the binary that prints
/// its events (clones share the counts).
#[derive(Clone, Debug)]
pub struct LogSummary {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug)]
struct Inner {
    window: Duration,
    burst: u32,
    kinds: BTreeMap<&'static str, Kind>,
}

#[derive(Clone, Copy, Debug)]
struct Kind {
    level: Level,
    /// Lines written per window.
    burst: u32,
    /// When the current window started.
    start: Instant,
    written: u32,
    suppressed: u64,
}

impl Default for LogSummary {
    /// [`DEFAULT_BURST`] lines per kind per [`DEFAULT_WINDOW`].
    fn default() -> Self {
        Self::new(DEFAULT_WINDOW, DEFAULT_BURST)
    }
}

impl LogSummary {
    /// Writes at most `burst` lines of each kind per `window`, and summarises the rest.
    pub fn new(window: Duration, burst: u32) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                window: window.max(Duration::from_millis(1)),
                burst,
                kinds: BTreeMap::new(),
            })),
        }
    }

    /// Logs `line` at `level` unless `kind` already had its lines in the current window; then
    /// it is counted for the summary. Returns true if it was written.
    pub fn log(
        &self,
        now: Instant,
        level: Level,
        kind: &'static str,
        line: fmt::Arguments<'_>,
    ) -> bool {
        let burst = self.lock().burst;
        self.log_up_to(now, level, kind, burst, line)
    }

    /// Like [`log`](Self::log) with a budget of its own for `kind`: `burst` lines per window
    /// (for lines that are many by nature, such as one per heartbeat).
    pub fn log_up_to(
        &self,
        now: Instant,
        level: Level,
        kind: &'static str,
        burst: u32,
        line: fmt::Arguments<'_>,
    ) -> bool {
        let admitted = {
            let mut inner = self.lock();
            let window = inner.window;
            let fresh = Kind {
                level,
                burst,
                start: now,
                written: 0,
                suppressed: 0,
            };
            let k = inner.kinds.entry(kind).or_insert(fresh);
            if now.saturating_duration_since(k.start) >= window {
                let ended = std::mem::replace(k, fresh);
                summarise(kind, &ended, now);
            }
            if k.written < k.burst {
                k.written += 1;
                true
            } else {
                k.suppressed = k.suppressed.saturating_add(1);
                false
            }
        };
        if admitted {
            write(level, line);
        }
        admitted
    }

    /// Writes the summary of every window that ended by `now` with lines left out, and forgets
    /// kinds that were quiet for a whole window.
    pub fn flush(&self, now: Instant) {
        let mut inner = self.lock();
        let window = inner.window;
        inner.kinds.retain(|kind, k| {
            if now.saturating_duration_since(k.start) < window {
                return true;
            }
            summarise(kind, k, now);
            false
        });
    }

    /// Writes every summary now, windows over or not (at shutdown).
    pub fn flush_all(&self, now: Instant) {
        let mut inner = self.lock();
        for (kind, k) in std::mem::take(&mut inner.kinds) {
            summarise(kind, &k, now);
        }
    }

    /// When [`flush`](Self::flush) has a summary to write: the end of the earliest window with
    /// lines left out. `None` while nothing was left out.
    pub fn next_flush(&self) -> Option<Instant> {
        let inner = self.lock();
        inner
            .kinds
            .values()
            .filter(|k| k.suppressed > 0)
            .map(|k| k.start + inner.window)
            .min()
    }

    /// Lines of `kind` left out in its current window (for tests).
    pub fn suppressed(&self, kind: &str) -> u64 {
        self.lock().kinds.get(kind).map_or(0, |k| k.suppressed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves only counters behind: keep logging.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn summarise(kind: &str, k: &Kind, now: Instant) {
    if k.suppressed == 0 {
        return;
    }
    let over = fmt_ms(now.saturating_duration_since(k.start));
    write(
        k.level,
        format_args!(
            "... and {} more {kind:?} in the last {over} (logging at most some per second per kind)",
            k.suppressed
        ),
    );
}

/// `tracing` wants its level at compile time: one call per level.
fn write(level: Level, line: fmt::Arguments<'_>) {
    match level {
        Level::ERROR => tracing::error!("{line}"),
        Level::WARN => tracing::warn!("{line}"),
        Level::INFO => tracing::info!("{line}"),
        Level::DEBUG => tracing::debug!("{line}"),
        _ => tracing::trace!("{line}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_gets_its_burst_per_window_and_the_rest_is_counted() {
        let t0 = crate::mono_now();
        let log = LogSummary::new(Duration::from_secs(1), 3);
        let written: Vec<bool> = (0..5)
            .map(|i| log.log(t0, Level::WARN, "refused", format_args!("refused {i}")))
            .collect();
        assert_eq!(written, [true, true, true, false, false]);
        assert_eq!(log.suppressed("refused"), 2);
        // Another kind has its own budget.
        assert!(log.log(t0, Level::INFO, "other", format_args!("other")));
        assert_eq!(log.next_flush(), Some(t0 + Duration::from_secs(1)));
        // The window ends: the summary is written and the kind starts afresh.
        log.flush(t0 + Duration::from_secs(1));
        assert_eq!(log.suppressed("refused"), 0);
        assert_eq!(log.next_flush(), None);
        let later = t0 + Duration::from_secs(2);
        assert!(log.log(later, Level::WARN, "refused", format_args!("again")));
    }

    #[test]
    fn a_new_window_starts_on_the_next_line_too() {
        let t0 = crate::mono_now();
        let log = LogSummary::new(Duration::from_secs(1), 1);
        assert!(log.log(t0, Level::WARN, "k", format_args!("1")));
        assert!(!log.log(t0, Level::WARN, "k", format_args!("2")));
        assert!(log.log(
            t0 + Duration::from_secs(1),
            Level::WARN,
            "k",
            format_args!("3")
        ));
        assert_eq!(log.suppressed("k"), 0);
    }
}
