//! The server's log of refused connections: failed authentication (with the peer and the id it
//! claimed) and the identity rule's refusals. They go through the one log summariser
//! ([`LogSummary`]) with a budget of one line a second per kind ([`PeerLine::AuthFailed`],
//! [`PeerLine::IdRefused`]), so an attacker cannot drown
//! the log (or the disk) in one line per attempt; the summary says how many were left out.
//! Every refusal is still an event (`disconnected`, in `--json`).

use std::time::Instant;

use heartbeat_core::DisconnectReason;
use heartbeat_core::server::Event;
use tracing::Level;

use heartbeat_net::LogSummary;
use heartbeat_net::logsummary::PeerLine;

/// Logs `e` through `log` if it is a refused connection, and returns true (the caller logs
/// nothing more for it); false for any other event.
pub(crate) fn log_refusal(log: &LogSummary, e: &Event, now: Instant) -> bool {
    let Some((kind, line)) = describe(e) else {
        return false;
    };
    log.peer(now, Level::WARN, kind, format_args!("{line}"));
    true
}

/// The log line of a refused connection, and its kind; `None` for any other event.
fn describe(e: &Event) -> Option<(PeerLine, String)> {
    let Event::Disconnected {
        conn, peer, reason, ..
    } = e
    else {
        return None;
    };
    Some(match reason {
        DisconnectReason::AuthFailed { client, why } => (
            PeerLine::AuthFailed,
            format!("Authentication failed: {peer} ({conn}) claimed client id {client}: {why}"),
        ),
        DisconnectReason::AuthTimeout { client, after } => (
            PeerLine::AuthFailed,
            format!(
                "Authentication failed: {peer} ({conn}) claimed client id {client} and did not \
                 answer the challenge within {after:?}"
            ),
        ),
        DisconnectReason::LegacyRefused => (
            PeerLine::AuthFailed,
            format!(
                "Refused a legacy connection from {peer} ({conn}): legacy clients cannot \
                 authenticate (--allow-legacy lets them in)"
            ),
        ),
        DisconnectReason::IdInUse { client, holder } => (
            PeerLine::IdRefused,
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

    fn ms(n: u64) -> std::time::Duration {
        std::time::Duration::from_millis(n)
    }

    #[test]
    fn a_flood_is_one_line_a_window_per_kind_with_a_count() {
        let t0 = origin();
        let log = LogSummary::default();
        let victim = ClientId::new("victim").unwrap();
        let failed = Event::Disconnected {
            conn: ConnId(3),
            client: None,
            peer: "192.0.2.7:4000".parse().unwrap(),
            reason: DisconnectReason::AuthFailed {
                client: victim,
                why: AuthFailure::WrongAnswer,
            },
        };
        for i in 0..1000 {
            assert!(log_refusal(&log, &failed, t0 + ms(i)));
        }
        assert_eq!(log.suppressed(PeerLine::AuthFailed.name()), 999);
        let other = Event::Evicted {
            client: heartbeat_core::ClientKey::Id(ClientId::new("x").unwrap()),
        };
        assert!(!log_refusal(&log, &other, t0));
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
        assert_eq!(kind, PeerLine::AuthFailed);
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
        assert_eq!(kind, PeerLine::IdRefused);
        assert!(line.contains("victim is in use by conn#1"), "{line}");
        assert_eq!(describe(&gone(DisconnectReason::ClosedByPeer)), None);
    }
}
