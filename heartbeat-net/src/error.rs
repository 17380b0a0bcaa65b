//! The driver's errors.

use std::io;

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

/// The error of a [`ServerTlsStream`](crate::tls::ServerTlsStream) whose handshake failed or
/// timed out, with the reason (inside an [`io::Error`] of the read or write that ran the
/// handshake). Here, not in `tls`, so the driver reads it without depending on TLS.
#[derive(Debug, Error)]
#[error("{0}")]
pub struct HandshakeFailed(pub String);

/// The reason of a failed server-side handshake, if `e` is one ([`HandshakeFailed`]).
pub fn handshake_failure(e: &io::Error) -> Option<&str> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<HandshakeFailed>())
        .map(|h| h.0.as_str())
}

/// The error of a [`TlsConnector`](crate::tls::TlsConnector) whose server answered the
/// handshake with bytes that are not TLS (a plaintext heartbeat server, or another service on
/// that port), with the details (inside the [`io::Error`] of the connect). No retry can mend it:
/// the client driver ends the client with
/// [`Failure::NotTls`](heartbeat_core::client::Failure::NotTls). Here, not in `tls`, so the
/// driver reads it without depending on TLS.
#[derive(Debug, Error)]
#[error("{0}")]
pub struct NotTlsServer(pub String);

/// True when `e` is a connect that failed because the server does not speak TLS
/// ([`NotTlsServer`]).
pub fn is_not_tls_server(e: &io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.downcast_ref::<NotTlsServer>().is_some())
}
