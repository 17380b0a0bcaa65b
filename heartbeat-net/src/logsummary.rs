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

/// Declares [`PeerLine`] and its table at once, so that no kind is left out of
/// [`PeerLine::ALL`] (what the tests iterate over).
macro_rules! peer_lines {
    ($($(#[doc = $doc:literal])* $kind:ident => $name:literal, $burst:expr;)*) => {
        /// Every kind of log line a remote peer can cause, one per cause: each goes through
        /// [`LogSummary::peer`], so each is at most its [`burst`](Self::burst) lines per window
        /// (ten a second by default), then one summary line with how many were left out.
        ///
        /// This is the whole class of peer-caused lines at the levels logged by default (info
        /// and above): the server writes no such line any other way (a unit test checks the
        /// server's source files for direct `tracing` calls). Debug lines (`RUST_LOG=debug`)
        /// are per-event diagnostics asked for by the operator, and are not summarised.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum PeerLine {
            $($(#[doc = $doc])* $kind,)*
        }

        impl PeerLine {
            /// Every kind, in declaration order.
            pub const ALL: &'static [PeerLine] = &[$(PeerLine::$kind,)*];

            /// The kind's name in the summary line (`... and 12 more "failed authentication"`).
            pub fn name(self) -> &'static str {
                match self {
                    $(PeerLine::$kind => $name,)*
                }
            }

            /// Lines of this kind written per window before the rest are counted.
            pub fn burst(self) -> u32 {
                match self {
                    $(PeerLine::$kind => $burst,)*
                }
            }
        }
    };
}

peer_lines! {
    /// A connection was accepted (the seed's `Accepted connection from ...`).
    Accepted => "Accepted connection", DEFAULT_BURST;
    /// A connection was closed at once: `--max-connections` are open.
    RefusedMaxConnections => "connection refused: --max-connections reached", DEFAULT_BURST;
    /// A connection was closed at once: `--max-connections-per-ip` are open from its address.
    RefusedPerIp => "connection refused: --max-connections-per-ip reached", DEFAULT_BURST;
    /// Accepting failed (out of file descriptors under a connection flood, say).
    AcceptFailed => "accept failed", DEFAULT_BURST;
    /// A connection's task ended with a panic.
    ConnectionTaskFailed => "connection task failed", DEFAULT_BURST;
    /// The TLS handshake failed or timed out: a plaintext client, a port scanner, a client
    /// that does not trust the certificate, a silent peer.
    TlsFailed => "TLS handshake failed", DEFAULT_BURST;
    /// A connection identified itself as a client.
    Identified => "clients identified", DEFAULT_BURST;
    /// The seed's line per heartbeat: many by nature, so a budget of its own for all clients.
    Heartbeat => "heartbeat lines", 1000;
    /// A client's heartbeats were missed.
    Missed => "missed heartbeats", DEFAULT_BURST;
    /// A client's heartbeats arrived at once after a silence.
    Burst => "bursts", DEFAULT_BURST;
    /// A client sent a heartbeat twice.
    Duplicate => "duplicate heartbeats", DEFAULT_BURST;
    /// A client restarted (its sequence numbers began again).
    Restarted => "restarts", DEFAULT_BURST;
    /// A client's clock is off, or back in sync.
    ClockSkew => "clock skew", DEFAULT_BURST;
    /// The seed's `No data received. Connection likely closed by client.`
    ClosedByClient => "connections closed by clients", DEFAULT_BURST;
    /// A connection was dropped for a protocol error: garbage, a broken pace, an implausible
    /// sequence number or timestamp, an interval below the minimum.
    DroppedProtocol => "connections dropped: protocol error", DEFAULT_BURST;
    /// A connection was dropped for not reading its acknowledgements.
    DroppedNotReading => "connections dropped: not reading acknowledgements", DEFAULT_BURST;
    /// A connection was dropped for a timeout: no identification, or idle.
    DroppedTimeout => "connections dropped: timeout", DEFAULT_BURST;
    /// Any other end of a connection.
    Closed => "connections closed", DEFAULT_BURST;
    /// Failed authentication (or a legacy connection where authentication is required): one
    /// line a window.
    AuthFailed => "failed authentication", 1;
    /// A `HELLO` refused under the identity rule (its id is live on another connection): one
    /// line a window.
    IdRefused => "refusals under the identity rule", 1;
    /// A client is down.
    ClientsDown => "clients down", DEFAULT_BURST;
    /// A client is suspect.
    ClientsSuspect => "clients suspect", DEFAULT_BURST;
    /// A client is up again, or left.
    ClientsBackOrLeft => "clients back or left", DEFAULT_BURST;
    /// A client was forgotten (`--max-clients`, `--forget-after`).
    Forgotten => "clients forgotten", DEFAULT_BURST;
    /// The server's loop was stalled (under a flood, say).
    Stalled => "server stalls", DEFAULT_BURST;
    /// A client's quality-of-service target became reachable or unreachable (at most one
    /// line every ten heartbeats of a client, and only on a change).
    Target => "quality-of-service targets", DEFAULT_BURST;
    /// Any other event of the core.
    OtherEvents => "other events", DEFAULT_BURST;
    /// The metrics endpoint refused a connection (`503`, or closed when too many are being
    /// refused): `server::http`.
    HttpRefused => "metrics endpoint: refused", DEFAULT_BURST;
    /// A request on the control socket (`heartbeat-server ctl`), done or refused, or a
    /// connection there that sent none: `server::ctl`.
    Control => "control socket requests", DEFAULT_BURST;
    /// A transition of a silenced client, which ran no hook, or the end of a silence:
    /// `server::silence`.
    Silenced => "silenced clients", DEFAULT_BURST;
}

impl fmt::Display for PeerLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

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

    /// Logs a line a remote peer caused: `line` at `level`, within the budget of its `kind`
    /// ([`PeerLine::burst`] lines per window), then counted for the summary. Returns true if it
    /// was written. Every peer-caused line goes through here.
    pub fn peer(
        &self,
        now: Instant,
        level: Level,
        kind: PeerLine,
        line: fmt::Arguments<'_>,
    ) -> bool {
        self.log_up_to(now, level, kind.name(), kind.burst(), line)
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

    /// The class of peer-caused lines, enumerated: a flood of each kind is its burst of
    /// lines, and the rest is counted for the summary.
    #[test]
    fn every_peer_caused_kind_is_held_to_its_burst() {
        let t0 = crate::mono_now();
        let log = LogSummary::default();
        let names: std::collections::BTreeSet<_> = PeerLine::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names.len(), PeerLine::ALL.len(), "two kinds share a name");
        for &kind in PeerLine::ALL {
            let written = (0..1000)
                .filter(|i| log.peer(t0, Level::WARN, kind, format_args!("{kind} {i}")))
                .count();
            assert!(kind.burst() <= DEFAULT_BURST || kind == PeerLine::Heartbeat);
            assert_eq!(written, kind.burst() as usize, "{kind}");
            assert_eq!(log.suppressed(kind.name()), 1000 - u64::from(kind.burst()));
        }
    }

    /// The files whose code runs on what a peer sends: the server driver, the listeners, TLS,
    /// the connection limits, the server's log lines and `--json` events, and the core's server.
    const PEER_FACING: &[(&str, &str)] = &[
        ("driver.rs", include_str!("driver.rs")),
        ("shard.rs", include_str!("shard.rs")),
        ("limits.rs", include_str!("limits.rs")),
        ("listener.rs", include_str!("listener.rs")),
        ("tls.rs", include_str!("tls.rs")),
        ("server/log.rs", include_str!("bin/heartbeat-server/log.rs")),
        (
            "server/refusals.rs",
            include_str!("bin/heartbeat-server/refusals.rs"),
        ),
        (
            "server/unidentified.rs",
            include_str!("bin/heartbeat-server/unidentified.rs"),
        ),
        (
            "server/output.rs",
            include_str!("bin/heartbeat-server/output.rs"),
        ),
        (
            "server/http.rs",
            include_str!("bin/heartbeat-server/http.rs"),
        ),
        ("server/ctl.rs", include_str!("bin/heartbeat-server/ctl.rs")),
        (
            "server/silence.rs",
            include_str!("bin/heartbeat-server/silence.rs"),
        ),
        (
            "core server/mod.rs",
            include_str!("../../heartbeat-core/src/server/mod.rs"),
        ),
        (
            "core server/handshake.rs",
            include_str!("../../heartbeat-core/src/server/handshake.rs"),
        ),
        (
            "core server/session.rs",
            include_str!("../../heartbeat-core/src/server/session.rs"),
        ),
        (
            "core server/limits.rs",
            include_str!("../../heartbeat-core/src/server/limits.rs"),
        ),
        (
            "core server/stats.rs",
            include_str!("../../heartbeat-core/src/server/stats.rs"),
        ),
    ];

    /// No exception to the summariser: in the code a peer's input reaches, no line is logged at
    /// a default level (info, warn, error) except through [`LogSummary::peer`]. A line there
    /// that no peer can cause says so in a comment on it or the line before: `not caused by a
    /// peer`.
    #[test]
    fn peer_facing_code_logs_only_through_the_summary() {
        let mut direct = Vec::new();
        for (file, text) in PEER_FACING {
            let lines: Vec<&str> = text.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                let logs = ["info!(", "warn!(", "error!("]
                    .iter()
                    .any(|m| code.contains(m));
                let excused = |l: &str| l.contains("not caused by a peer");
                let before = i.checked_sub(1).map_or("", |j| lines[j]);
                if logs && !excused(line) && !excused(before) {
                    direct.push(format!("{file}:{}: {}", i + 1, line.trim()));
                }
            }
        }
        assert!(
            direct.is_empty(),
            "lines a peer can cause must go through LogSummary::peer with a PeerLine kind:\n{}",
            direct.join("\n")
        );
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
