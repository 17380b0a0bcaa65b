//! The server's log of refused connections: failed authentication (with the peer and the id it
//! claimed) and the identity rule's refusals. Under a flood it writes at most one line a second
//! per kind, and says how many it held back, so an attacker cannot drown the log (or the disk)
//! in one line per attempt. Every refusal is still an event (`disconnected`, in `--json`).

use std::time::{Duration, Instant};

use heartbeat_core::DisconnectReason;
use heartbeat_core::server::Event;

/// Lines per kind of refusal: at most one per this period.
pub const PERIOD: Duration = Duration::from_secs(1);

/// At most one line per period for one kind of repeated event, and a count of the rest.
#[derive(Debug)]
pub struct Throttle {
    period: Duration,
    /// What the summary calls the events, e.g. `failed authentication(s)`.
    what: &'static str,
    last_line: Option<Instant>,
    held: u64,
    /// The most recent event held back, for the summary.
    last_held: Option<String>,
}

impl Throttle {
    /// A throttle allowing one line per `period`; `what` names the events in summaries.
    pub fn new(period: Duration, what: &'static str) -> Self {
        Self {
            period,
            what,
            last_line: None,
            held: 0,
            last_held: None,
        }
    }

    /// An event at `now`, described by `line`: the line to log now, or `None` when the event
    /// is only counted (a line went out less than a period ago).
    pub fn record(&mut self, now: Instant, line: String) -> Option<String> {
        if self.is_quiet(now) {
            let line = match self.summary() {
                Some(held) => format!("{line} ({held})"),
                None => line,
            };
            self.last_line = Some(now);
            return Some(line);
        }
        self.held += 1;
        self.last_held = Some(line);
        None
    }

    /// The summary of the events held back, once a period has passed since the last line (a
    /// flood that stopped is still reported, at the next event of any kind).
    pub fn flush(&mut self, now: Instant) -> Option<String> {
        if self.held == 0 || !self.is_quiet(now) {
            return None;
        }
        self.last_line = Some(now);
        self.summary_line()
    }

    /// The summary of the events held back, whatever the time (at shutdown).
    pub fn finish(&mut self) -> Option<String> {
        self.summary_line()
    }

    fn is_quiet(&self, now: Instant) -> bool {
        self.last_line
            .is_none_or(|t| now.saturating_duration_since(t) >= self.period)
    }

    /// `N more <what> held back`, taking the count.
    fn summary(&mut self) -> Option<String> {
        let n = std::mem::take(&mut self.held);
        self.last_held = None;
        (n > 0).then(|| format!("{n} more {} held back", self.what))
    }

    fn summary_line(&mut self) -> Option<String> {
        let last = self.last_held.take();
        let summary = self.summary()?;
        Some(match last {
            Some(last) => format!("{summary}; the last: {last}"),
            None => summary,
        })
    }
}

/// The two kinds of refusal the server logs, each throttled on its own.
#[derive(Debug)]
pub struct RefusalLog {
    auth: Throttle,
    identity: Throttle,
}

impl Default for RefusalLog {
    fn default() -> Self {
        Self::new()
    }
}

impl RefusalLog {
    /// One line per second per kind at most.
    pub fn new() -> Self {
        Self {
            auth: Throttle::new(PERIOD, "failed authentication(s)"),
            identity: Throttle::new(PERIOD, "refusal(s) under the identity rule"),
        }
    }

    /// Logs `e` if it is a refused connection (and returns true: the caller logs nothing more
    /// for it), and any summary that has come due.
    pub fn on_event(&mut self, e: &Event, now: Instant) -> bool {
        for summary in [self.auth.flush(now), self.identity.flush(now)]
            .into_iter()
            .flatten()
        {
            tracing::warn!("{summary}");
        }
        let Some((kind, line)) = describe(e) else {
            return false;
        };
        let throttle = match kind {
            Kind::Auth => &mut self.auth,
            Kind::Identity => &mut self.identity,
        };
        if let Some(line) = throttle.record(now, line) {
            tracing::warn!("{line}");
        }
        true
    }

    /// Logs what is still held back (at shutdown).
    pub fn finish(&mut self) {
        for summary in [self.auth.finish(), self.identity.finish()]
            .into_iter()
            .flatten()
        {
            tracing::warn!("{summary}");
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Auth,
    Identity,
}

/// The log line of a refused connection, and its kind; `None` for any other event.
fn describe(e: &Event) -> Option<(Kind, String)> {
    let Event::Disconnected {
        conn, peer, reason, ..
    } = e
    else {
        return None;
    };
    Some(match reason {
        DisconnectReason::AuthFailed { client, why } => (
            Kind::Auth,
            format!("Authentication failed: {peer} ({conn}) claimed client id {client}: {why}"),
        ),
        DisconnectReason::AuthTimeout { client, after } => (
            Kind::Auth,
            format!(
                "Authentication failed: {peer} ({conn}) claimed client id {client} and did not \
                 answer the challenge within {after:?}"
            ),
        ),
        DisconnectReason::LegacyRefused => (
            Kind::Auth,
            format!(
                "Refused a legacy connection from {peer} ({conn}): legacy clients cannot \
                 authenticate (--allow-legacy lets them in)"
            ),
        ),
        DisconnectReason::IdInUse { client, holder } => (
            Kind::Identity,
            format!(
                "Refused {peer} ({conn}): client id {client} is in use by {holder} with another \
                 session (two clients started with the same --id?)"
            ),
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use heartbeat_core::auth::AuthFailure;
    use heartbeat_core::{ClientId, ConnId};

    use super::*;

    #[allow(clippy::disallowed_methods)] // an arbitrary origin; only offsets from it matter
    fn origin() -> Instant {
        Instant::now()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_flood_is_one_line_a_second_with_a_count() {
        let t0 = origin();
        let mut t = Throttle::new(PERIOD, "failures");
        assert_eq!(t.record(t0, "a".into()), Some("a".into()));
        // 999 more within the second: counted, not logged.
        for i in 1..1000 {
            assert_eq!(t.record(t0 + ms(i), format!("x{i}")), None);
        }
        assert_eq!(t.flush(t0 + ms(999)), None);
        assert_eq!(
            t.record(t0 + ms(1000), "b".into()),
            Some("b (999 more failures held back)".into())
        );
        assert_eq!(t.record(t0 + ms(1500), "c".into()), None);
        // The flood stopped: the next event of any kind, a period later, reports the rest.
        assert_eq!(
            t.flush(t0 + ms(2000)),
            Some("1 more failures held back; the last: c".into())
        );
        assert_eq!(t.flush(t0 + ms(5000)), None);
        assert_eq!(t.record(t0 + ms(5000), "d".into()), Some("d".into()));
        assert_eq!(t.record(t0 + ms(5001), "e".into()), None);
        assert_eq!(
            t.finish(),
            Some("1 more failures held back; the last: e".into())
        );
        assert_eq!(t.finish(), None);
    }

    #[test]
    fn refusals_name_the_peer_and_the_claimed_id() {
        let peer: SocketAddr = "192.0.2.7:4000".parse().unwrap();
        let gone = |reason| Event::Disconnected {
            conn: ConnId(3),
            client: None,
            peer,
            reason,
        };
        let victim = ClientId::new("victim").unwrap();
        let (kind, line) = describe(&gone(DisconnectReason::AuthFailed {
            client: victim.clone(),
            why: AuthFailure::WrongAnswer,
        }))
        .unwrap();
        assert_eq!(kind, Kind::Auth);
        assert_eq!(
            line,
            "Authentication failed: 192.0.2.7:4000 (conn#3) claimed client id victim: wrong \
             answer to the challenge"
        );
        let (kind, line) = describe(&gone(DisconnectReason::IdInUse {
            client: victim,
            holder: ConnId(1),
        }))
        .unwrap();
        assert_eq!(kind, Kind::Identity);
        assert!(line.contains("victim is in use by conn#1"), "{line}");
        assert_eq!(describe(&gone(DisconnectReason::ClosedByPeer)), None);
    }
}
