//! `--json` under a flood of connections that never identify: one `unidentified` event per kind
//! and second, with a count, instead of one `disconnected` event per connection a peer can
//! open. A connection that never said who it is (a TLS failure, a refusal at `HELLO`, a
//! protocol error or a timeout before identifying, a connection limit) is about no client;
//! what an operator needs of a flood of them is how many, and why. Every event about an
//! identified client stays an event of its own.
//!
//! Like the log summary it reads no clock: the server's loop passes its `now`, and wakes at
//! [`next_flush`](Unidentified::next_flush) so a window's event comes out when it ends.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use heartbeat_core::server::Event;
use heartbeat_core::{Now, UnixTime};

/// The span one `unidentified` event counts over, per kind.
pub(super) const WINDOW: Duration = Duration::from_secs(1);

/// Counts of connections that never identified, per kind, over windows of [`WINDOW`].
#[derive(Debug, Default)]
pub(super) struct Unidentified {
    open: BTreeMap<&'static str, Window>,
}

#[derive(Clone, Copy, Debug)]
struct Window {
    start: Instant,
    count: u64,
}

impl Window {
    /// The window's event, written at `now`: its `time` is `now`, and it counts over the span
    /// from its first connection to `now`, so the stream's times stay in order.
    fn event(&self, kind: &'static str, now: Now) -> (Event, UnixTime) {
        let e = Event::Unidentified {
            kind,
            count: self.count,
            window: now.mono.saturating_duration_since(self.start),
        };
        (e, now.unix)
    }
}

impl Unidentified {
    /// Counts one connection of `kind` at `now`. Returns the event of the kind's previous
    /// window if it ended before `now` and was not flushed yet (write it first).
    pub(super) fn count(&mut self, kind: &'static str, now: Now) -> Option<(Event, UnixTime)> {
        let fresh = Window {
            start: now.mono,
            count: 0,
        };
        let w = self.open.entry(kind).or_insert(fresh);
        let ended = if now.mono.saturating_duration_since(w.start) >= WINDOW {
            let ended = std::mem::replace(w, fresh);
            Some(ended.event(kind, now))
        } else {
            None
        };
        w.count = w.count.saturating_add(1);
        ended
    }

    /// When the earliest open window ends; `None` when none is open.
    pub(super) fn next_flush(&self) -> Option<Instant> {
        self.open.values().map(|w| w.start + WINDOW).min()
    }

    /// The events of every window that ended by `now`, each with `now` as its time.
    pub(super) fn flush(&mut self, now: Now) -> Vec<(Event, UnixTime)> {
        let mut out = Vec::new();
        self.open.retain(|kind, w| {
            if now.mono.saturating_duration_since(w.start) < WINDOW {
                return true;
            }
            out.push(w.event(kind, now));
            false
        });
        out
    }

    /// The events of every open window, ended or not (at shutdown): a window cut short says so
    /// in its `window_ms`.
    pub(super) fn flush_all(&mut self, now: Now) -> Vec<(Event, UnixTime)> {
        std::mem::take(&mut self.open)
            .into_iter()
            .map(|(kind, w)| w.event(kind, now))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Now, ms: u64) -> Now {
        t0.advanced(Duration::from_millis(ms))
    }

    fn counts(events: &[(Event, UnixTime)]) -> Vec<(&'static str, u64)> {
        events
            .iter()
            .map(|(e, _)| match e {
                Event::Unidentified { kind, count, .. } => (*kind, *count),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_flood_is_one_event_per_kind_and_window_with_its_count() {
        let t0 = Now {
            mono: heartbeat_net::mono_now(),
            unix: UnixTime::from_duration(Duration::from_secs(1_700_000_000)),
        };
        let mut u = Unidentified::default();
        for i in 0..1000 {
            assert!(u.count("tls_failed", at(t0, i % 1000)).is_none());
        }
        assert!(u.count("protocol", at(t0, 500)).is_none());
        assert_eq!(u.next_flush(), Some(t0.mono + WINDOW));
        assert!(u.flush(at(t0, 999)).is_empty());
        let ended = u.flush(at(t0, 1000));
        assert_eq!(counts(&ended), [("tls_failed", 1000)]);
        assert_eq!(ended[0].1, at(t0, 1000).unix);
        // Not flushed in time: the next one of the kind brings the ended window out first.
        let late = u.count("protocol", at(t0, 1600)).unwrap();
        assert_eq!(counts(&[late]), [("protocol", 1)]);
        let rest = u.flush_all(at(t0, 1700));
        assert_eq!(counts(&rest), [("protocol", 1)]);
        let json = rest[0].0.to_json_at(rest[0].1);
        assert_eq!(json["event"], "unidentified");
        assert_eq!(json["window_ms"], 100.0);
        assert_eq!(u.next_flush(), None);
    }
}
