//! The driver's errors and the mapping of core disconnect reasons to `io` errors.

use std::io;

use heartbeat_core::DisconnectReason;
use thiserror::Error;

/// A fault of the driver or of its setup. Faults of the peer or the network never come back
/// as a `NetError`: the core turns them into events and exits.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum NetError {
    /// No listening socket could be bound.
    #[error("cannot listen on {addr}{}", in_parens(.hint.as_deref()))]
    Bind {
        /// What was asked for, `HOST:PORT`.
        addr: String,
        /// What to do about it, for a port in use or a privileged port.
        hint: Option<String>,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A host name did not resolve to any address.
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        /// The host name.
        host: String,
        /// The resolver's error.
        #[source]
        source: io::Error,
    },
    /// The driver found nothing to wait for while the core was not done (a bug).
    #[error("driver stalled: nothing to wait for and the core is not done")]
    Stalled,
}

impl NetError {
    /// The `io::ErrorKind` behind the error, when there is one.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            Self::Bind { source, .. } | Self::Resolve { source, .. } => Some(source.kind()),
            Self::Stalled => None,
        }
    }
}

fn in_parens(hint: Option<&str>) -> String {
    hint.map(|h| format!(" ({h})")).unwrap_or_default()
}

/// How a connection's end reads as an `io::ErrorKind`, for callers that speak `io::Error`.
pub fn disconnect_error_kind(reason: &DisconnectReason) -> io::ErrorKind {
    match reason {
        DisconnectReason::ClosedByPeer => io::ErrorKind::ConnectionReset,
        DisconnectReason::Goodbye | DisconnectReason::Superseded(_) => {
            io::ErrorKind::ConnectionAborted
        }
        DisconnectReason::IdleTimeout(_) | DisconnectReason::AckTimeout(_) => {
            io::ErrorKind::TimedOut
        }
        DisconnectReason::Local | DisconnectReason::Finished => io::ErrorKind::NotConnected,
        DisconnectReason::Protocol(_) => io::ErrorKind::InvalidData,
        DisconnectReason::ServerError(_) => io::ErrorKind::ConnectionRefused,
        _ => io::ErrorKind::Other,
    }
}

/// A connection's end as an `io::Error` of [`disconnect_error_kind`], with the reason as text.
pub fn disconnect_error(reason: &DisconnectReason) -> io::Error {
    io::Error::new(disconnect_error_kind(reason), reason.to_string())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn reasons_map_to_error_kinds() {
        let kind = |r| disconnect_error_kind(&r);
        assert_eq!(
            kind(DisconnectReason::ClosedByPeer),
            io::ErrorKind::ConnectionReset
        );
        assert_eq!(
            kind(DisconnectReason::IdleTimeout(Duration::from_secs(5))),
            io::ErrorKind::TimedOut
        );
        let e = disconnect_error(&DisconnectReason::AckTimeout(Duration::from_secs(2)));
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(e.to_string(), "no ack for 2s");
    }
}
