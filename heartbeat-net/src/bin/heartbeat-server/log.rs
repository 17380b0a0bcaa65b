//! The server's log lines: the seed's lines, kept as the seed wrote them (`Received data at
//! ...: '...'`, followed by the client's name; `No data received. Connection likely closed by
//! client.`, followed by who), plus what the seed could not see. Every line goes through the
//! [`LogSummary`], so a hostile peer cannot flood the log.

use std::net::SocketAddr;
use std::time::Duration;

use heartbeat_core::liveness::Liveness;
use heartbeat_core::server::Event;
use heartbeat_core::units::fmt_duration;
use heartbeat_core::{ClientKey, ConnId, DisconnectReason, Now, fmt_ms, fmt_signed_ms};
use tracing::Level;

use heartbeat_net::LogSummary;
use heartbeat_net::logsummary::PeerLine;

/// The seed's log lines, kept recognisable, plus what the seed could not see. Every line goes
/// through the log summary, so a hostile peer cannot flood the log: per kind, a few lines a
/// second (heartbeats: a thousand in all, [`PeerLine::Heartbeat`]), then one line with how
/// many were left out. Each kind is a [`PeerLine`].
pub(crate) fn log_event(log: &LogSummary, e: &Event, now: Now) {
    let line = |level: Level, kind: PeerLine, text: std::fmt::Arguments<'_>| {
        log.peer(now.mono, level, kind, text);
    };
    match e {
        Event::Connected {
            conn,
            client,
            peer,
            protocol,
            interval,
            resumed,
        } => {
            let interval = interval.map_or_else(|| "unknown".to_owned(), fmt_ms);
            let again = if *resumed { ", seen before" } else { "" };
            line(
                Level::INFO,
                PeerLine::Identified,
                format_args!(
                    "Client {client} identified on {conn} from {peer} (protocol {protocol}, interval {interval}{again})"
                ),
            );
        }
        Event::Heartbeat { .. } => log_heartbeat(log, e, now),
        Event::Missed { client, range, .. } => line(
            Level::WARN,
            PeerLine::Missed,
            format_args!(
                "Missed {} heartbeat(s) from {client}: #{range}",
                range.count()
            ),
        ),
        Event::Burst {
            client,
            first,
            last,
            count,
            silence,
            ..
        } => {
            let silence = silence.map_or_else(|| "-".to_owned(), fmt_ms);
            line(
                Level::WARN,
                PeerLine::Burst,
                format_args!(
                    "{count} heartbeats from {client} (#{first}-#{last}) arrived at once after {silence} of silence"
                ),
            );
        }
        Event::Duplicate { client, seq, .. } => line(
            Level::WARN,
            PeerLine::Duplicate,
            format_args!("Duplicate heartbeat #{seq} from {client}"),
        ),
        Event::Restarted {
            client, previous, ..
        } => line(
            Level::WARN,
            PeerLine::Restarted,
            format_args!(
                "Client {client} restarted (its previous run reached #{previous}); counting anew"
            ),
        ),
        Event::ClockSkew {
            client,
            offset_ns,
            skewed,
            ..
        } => {
            let (level, text) = if *skewed {
                (
                    Level::WARN,
                    "its delays are measured from that offset from now on",
                )
            } else {
                (Level::INFO, "back in sync")
            };
            let offset = fmt_signed_ms(*offset_ns);
            line(
                level,
                PeerLine::ClockSkew,
                format_args!("Clock of client {client} is off by {offset} ({text})"),
            );
        }
        Event::Disconnected {
            conn,
            client,
            peer,
            reason,
        } => log_disconnect(log, now, *conn, client.as_ref(), *peer, reason),
        Event::Transition {
            client,
            from,
            to,
            since_last,
            suspicion,
            detector,
            ..
        } => {
            let (level, kind) = match to {
                Liveness::Down => (Level::ERROR, PeerLine::ClientsDown),
                Liveness::Suspect => (Level::WARN, PeerLine::ClientsSuspect),
                _ => (Level::INFO, PeerLine::ClientsBackOrLeft),
            };
            let text = transition_line(client, *from, *to, *since_last, detector, *suspicion);
            line(level, kind, format_args!("{text}"));
        }
        Event::Evicted { client } => line(
            Level::WARN,
            PeerLine::Forgotten,
            format_args!("Forgot client {client}: the --max-clients limit was reached"),
        ),
        Event::Forgotten {
            client,
            gone_for,
            requested,
        } => line(
            Level::INFO,
            PeerLine::Forgotten,
            format_args!(
                "Forgot client {client}: gone for {} ({})",
                fmt_ms(*gone_for),
                if *requested {
                    "heartbeat-server ctl forget"
                } else {
                    "--forget-after"
                }
            ),
        ),
        Event::Stalled { late } => line(
            Level::WARN,
            PeerLine::Stalled,
            format_args!(
                "The server itself was stalled for {}: nobody is declared down on that evidence",
                fmt_ms(*late)
            ),
        ),
        Event::Target { .. } => {
            let (level, text) = target_line(e);
            line(level, PeerLine::Target, format_args!("{text}"));
        }
        Event::IntervalChanged {
            client,
            from,
            to,
            seq,
            ..
        } => line(
            Level::INFO,
            PeerLine::OtherEvents,
            format_args!(
                "Client {client} now sends every {} (was {}), from heartbeat #{seq}: judged by \
                 the new interval from that heartbeat on",
                fmt_duration(*to),
                fmt_duration(*from)
            ),
        ),
        // A sum of connections whose own lines were logged, each through the summary.
        Event::Unidentified { .. } => {}
        other => line(Level::INFO, PeerLine::OtherEvents, format_args!("{other}")),
    }
}

/// The seed's line per heartbeat, up to a thousand a second in all (a client is held to its
/// declared pace, but a flood of new connections is not), and its timing at debug level.
fn log_heartbeat(log: &LogSummary, e: &Event, now: Now) {
    let Event::Heartbeat {
        client,
        seq,
        sent,
        received,
        delay_ns,
        inter_arrival,
        recovered,
        ..
    } = e
    else {
        return;
    };
    log.peer(
        now.mono,
        Level::INFO,
        PeerLine::Heartbeat,
        format_args!(
            "Received data at {}: 'Sequence #{seq}: Sending heartbeat at {}. ' from {client}",
            received.display_secs(4),
            sent.display_secs(4),
        ),
    );
    // Its words cost an allocation: made only when debug lines are written.
    if !tracing::enabled!(Level::DEBUG) {
        return;
    }
    let gap = inter_arrival.map_or_else(|| "-".to_owned(), fmt_ms);
    let late = if *recovered {
        " (late: was reported missed)"
    } else {
        ""
    };
    tracing::debug!(
        "Heartbeat #{seq} from {client}: delay {}, since previous {gap}{late}",
        fmt_signed_ms(*delay_ns)
    );
}

/// The line of a change of a client's quality-of-service target, and its level: e.g. `web-1:
/// detection within 3s with a mistake at most every 30d needs heartbeats every 420ms or
/// faster; it sends every 1000ms`.
fn target_line(e: &Event) -> (Level, String) {
    let Event::Target {
        client,
        detection,
        mistake_every,
        reachable,
        interval,
        advised_interval,
        alpha,
        loss,
        delay_variance,
    } = e
    else {
        return (Level::INFO, e.to_string());
    };
    let ms = |d: &Duration| format!("{}ms", d.as_millis());
    let wanted = format!(
        "{client}: detection within {} with a mistake at most every {}",
        fmt_duration(*detection),
        fmt_duration(*mistake_every)
    );
    let measured = format!(
        "measured loss {:.2}%, delay deviation {:.1}ms",
        loss * 100.0,
        delay_variance.max(0.0).sqrt() * 1e3
    );
    if *reachable {
        let text = format!(
            "{wanted} is reachable at its interval of {} (down {} after a heartbeat is due; {measured})",
            ms(interval),
            ms(alpha)
        );
        return (Level::INFO, text);
    }
    let text = match advised_interval {
        Some(advised) => format!(
            "{wanted} needs heartbeats every {} or faster; it sends every {} ({measured})",
            ms(advised),
            ms(interval)
        ),
        None => format!(
            "{wanted} is out of reach at any interval; it sends every {} ({measured})",
            ms(interval)
        ),
    };
    (Level::WARN, text)
}

/// The line of a transition of `client` from `from` to `to`.
fn transition_line(
    client: &ClientKey,
    from: Liveness,
    to: Liveness,
    since_last: Option<Duration>,
    detector: impl std::fmt::Display,
    suspicion: f64,
) -> String {
    if from == Liveness::Unknown {
        format!(
            "Client {client} is {to}: expected (--expect) but never heard from within its grace"
        )
    } else if from == Liveness::Left {
        let since = since_last.map_or_else(|| "-".to_owned(), fmt_ms);
        format!(
            "Client {client} is {to}: expected (--expect), it said goodbye and has not come back \
             within --left-grace (last heartbeat {since} ago)"
        )
    } else if since_last.is_none() && to == Liveness::Up {
        format!("Client {client} is {to} (was {from}): first heartbeat")
    } else {
        let since = since_last.map_or_else(|| "-".to_owned(), fmt_ms);
        format!(
            "Client {client} is {to} (was {from}): last heartbeat {since} ago, {detector} \
             {suspicion:.2}"
        )
    }
}

/// The lines of a connection that ended: the seed's line when the client went away or said
/// goodbye (a warning when it just went away, information after its goodbye; with the client's
/// name, or its address), then why it ended, one kind per cause.
fn log_disconnect(
    log: &LogSummary,
    now: Now,
    conn: ConnId,
    client: Option<&ClientKey>,
    peer: SocketAddr,
    reason: &DisconnectReason,
) {
    let line = |level: Level, kind: PeerLine, text: std::fmt::Arguments<'_>| {
        log.peer(now.mono, level, kind, text);
    };
    let by_client = match reason {
        DisconnectReason::ClosedByPeer => Some(Level::WARN),
        DisconnectReason::Goodbye => Some(Level::INFO),
        _ => None,
    };
    if let Some(level) = by_client {
        let who = client.map_or_else(|| peer.to_string(), ToString::to_string);
        line(
            level,
            PeerLine::ClosedByClient,
            format_args!("No data received. Connection likely closed by client. ({who})"),
        );
    }
    let (level, kind) = disconnect_kind(reason);
    match (reason, client) {
        (DisconnectReason::TlsFailed(why), _) => line(
            level,
            kind,
            format_args!(
                "TLS handshake with {peer} failed ({why}); dropping the connection ({conn})"
            ),
        ),
        (_, Some(client)) => line(
            level,
            kind,
            format_args!("Client {client} at {peer} went away ({conn}: {reason})"),
        ),
        (_, None) => line(
            level,
            kind,
            format_args!("Connection from {peer} closed ({conn}: {reason})"),
        ),
    }
}

/// The level and log kind of a disconnect: ordinary ends are information, the server's own
/// drops are warnings, one kind per cause.
fn disconnect_kind(reason: &DisconnectReason) -> (Level, PeerLine) {
    match reason {
        DisconnectReason::Protocol(_) => (Level::WARN, PeerLine::DroppedProtocol),
        DisconnectReason::NotReadingAcks => (Level::WARN, PeerLine::DroppedNotReading),
        DisconnectReason::HelloTimeout(_)
        | DisconnectReason::IncompleteHello(_)
        | DisconnectReason::IdleTimeout(_) => (Level::WARN, PeerLine::DroppedTimeout),
        DisconnectReason::TlsFailed(_) => (Level::WARN, PeerLine::TlsFailed),
        _ => (Level::INFO, PeerLine::Closed),
    }
}
