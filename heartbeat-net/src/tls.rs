//! Optional TLS over the same driver loops, with rustls (ring provider) through tokio-rustls.
//!
//! - [`TlsListener`] wraps any [`Listener`]: `accept` hands over the stream at once, and the TLS
//!   handshake runs when the connection's own task first reads or writes, bounded by
//!   [`HANDSHAKE_TIMEOUT`]. A slow, silent or plaintext peer therefore holds up neither the
//!   accept loop nor any other connection; a failed handshake is a [`HandshakeFailed`] error,
//!   which the server driver reports as `DisconnectReason::TlsFailed`: a summarised log line
//!   naming the peer (see [`PeerLine::TlsFailed`](crate::logsummary::PeerLine::TlsFailed)).
//!   A peer whose first bytes are plaintext heartbeats (`HELLO `, or the legacy `Sequence #`)
//!   is answered first, in plaintext, with one `ERROR` line ([`TLS_EXPECTED_MESSAGE`]) and a
//!   close, so the client can say "use --tls" instead of "closed by peer".
//! - [`TlsConnector`] wraps any [`Connector`]: it connects, then handshakes (with the same
//!   timeout) and checks the server's certificate against the given CA and server name; a
//!   failure is a failed connect attempt. A server that answers with bytes that are not TLS
//!   (a plaintext server) fails it with [`NotTlsServer`], which no retry can mend.
//!
//! The simulator does not use this module: it runs the same loops over plaintext turmoil
//! streams.

use std::fs;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use heartbeat_core::frame::{self, Frame, TLS_EXPECTED_MESSAGE};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::driver::{Connector, Listener};
pub use crate::error::{HandshakeFailed, NotTlsServer, handshake_failure, is_not_tls_server};
use crate::keys::{self, KeyFileError};

/// How long a TLS handshake may take, on either side, before the connection is given up.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS setup that cannot be used: a certificate, key or CA file that cannot be read or
/// parsed, or a configuration rustls rejects.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read, or holds no item of the kind wanted.
    #[error("{path}: {why}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// The private key file is not safe to use (see [`keys`]).
    #[error(transparent)]
    KeyFile(#[from] KeyFileError),
    /// rustls refused the configuration (for example a key that does not match the
    /// certificate).
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    /// A server name that is neither a DNS name nor an IP address.
    #[error("invalid TLS server name {0:?}")]
    ServerName(String),
}

/// The crypto provider: ring (it builds with a C compiler alone; aws-lc-rs needs more).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn pem_error(path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::Pem {
        path: path.to_owned(),
        why: e.to_string(),
    }
}

/// The certificate chain in a PEM file (leaf first), at least one certificate.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(pem_error(path, "no certificate in the file"));
    }
    Ok(certs)
}

/// A server configuration from a PEM certificate chain and private key. The key file is
/// checked like any key file first; the warnings (a world-readable key) are returned.
pub fn server_config(
    cert: &Path,
    key: &Path,
) -> Result<(Arc<rustls::ServerConfig>, Vec<String>), TlsError> {
    let warnings = keys::check_private_file(key)?;
    let chain = certificates(cert)?;
    // Read through `fs` first so an unreadable file is reported as such, not as "no key".
    let pem = fs::read(key).map_err(|e| pem_error(key, e))?;
    let key_der = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| pem_error(key, e))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)?;
    Ok((Arc::new(config), warnings))
}

/// A client configuration trusting only the CA certificates in a PEM file.
pub fn client_config(ca: &Path) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(ca)? {
        roots.add(cert)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A [`Listener`] whose streams speak TLS. See the module docs.
pub struct TlsListener<L> {
    inner: L,
    config: TlsReload,
    timeout: Duration,
}

/// Changes the certificate of a running [`TlsListener`] (a reload on SIGHUP): connections
/// accepted afterwards use the new configuration, those already open keep theirs.
#[derive(Clone, Debug)]
pub struct TlsReload(Arc<std::sync::Mutex<Arc<rustls::ServerConfig>>>);

impl TlsReload {
    /// The configuration for the next connections.
    pub fn set(&self, config: Arc<rustls::ServerConfig>) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = config;
    }

    fn current(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(
            &self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

impl<L> TlsListener<L> {
    /// TLS over `inner`'s connections, with `config`.
    pub fn new(inner: L, config: Arc<rustls::ServerConfig>) -> Self {
        Self {
            inner,
            config: TlsReload(Arc::new(std::sync::Mutex::new(config))),
            timeout: HANDSHAKE_TIMEOUT,
        }
    }

    /// TLS over `inner`'s connections, with the configuration `reload` holds and changes
    /// (another listener's [`reload_handle`](Self::reload_handle): one reload reaches both).
    pub fn with_reload(inner: L, reload: TlsReload) -> Self {
        Self {
            inner,
            config: reload,
            timeout: HANDSHAKE_TIMEOUT,
        }
    }

    /// A handle to change the configuration while the listener runs.
    pub fn reload_handle(&self) -> TlsReload {
        self.config.clone()
    }

    /// How long a handshake may take (default [`HANDSHAKE_TIMEOUT`]).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The wrapped listener.
    pub fn inner(&self) -> &L {
        &self.inner
    }
}

impl<L: Listener> Listener for TlsListener<L> {
    type Stream = ServerTlsStream<L::Stream>;

    async fn accept(&mut self) -> io::Result<(Self::Stream, SocketAddr)> {
        let (stream, peer) = self.inner.accept().await?;
        // `accept` only builds the handshake future: nothing is read or written yet.
        let acceptor = tokio_rustls::TlsAcceptor::from(self.config.current());
        let handshake = acceptor.accept(Sniff::new(stream)).into_fallible();
        Ok((ServerTlsStream::new(handshake, self.timeout), peer))
    }
}

/// The stream under a server-side handshake: it keeps the first bytes read, to tell a plaintext
/// heartbeat client from other failed handshakes.
struct Sniff<S> {
    inner: S,
    seen: [u8; SNIFF_LEN],
    len: usize,
}

/// Enough for the longer plaintext opening, the legacy `Sequence #`.
const SNIFF_LEN: usize = 10;

impl<S> Sniff<S> {
    fn new(inner: S) -> Self {
        Self {
            inner,
            seen: [0; SNIFF_LEN],
            len: 0,
        }
    }

    /// True when the first bytes are (the start of) a plaintext `HELLO ` or `Sequence #`: at
    /// least a TLS record header's worth (5 bytes), which is what rustls reads before it fails.
    fn is_plaintext(&self) -> bool {
        let seen = &self.seen[..self.len];
        seen.len() >= 5 && frame::detect(seen).is_ok()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Sniff<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if this.len < SNIFF_LEN {
            let new = &buf.filled()[before..];
            let n = new.len().min(SNIFF_LEN - this.len);
            this.seen[this.len..this.len + n].copy_from_slice(&new[..n]);
            this.len += n;
            if this.is_plaintext() {
                // Kept from rustls: it would answer with a TLS alert, which the plaintext
                // client would read before the `ERROR` line, as garbage.
                buf.set_filled(before);
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a plaintext client: told to connect with --tls",
                )));
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Sniff<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A server-side TLS stream whose handshake runs on its first read or write, in the task that
/// owns it, within a deadline.
pub struct ServerTlsStream<S> {
    state: Handshake<S>,
}

enum Handshake<S> {
    Running {
        accept: Pin<Box<tokio_rustls::FallibleAccept<Sniff<S>>>>,
        deadline: Pin<Box<tokio::time::Sleep>>,
        timeout: Duration,
    },
    /// A plaintext client: writing it the `ERROR` line, then closing, within the handshake's
    /// deadline; `error` is the handshake's failure, returned once done.
    Refusing {
        stream: Sniff<S>,
        line: Vec<u8>,
        written: usize,
        deadline: Pin<Box<tokio::time::Sleep>>,
        error: io::Error,
    },
    Done(Box<tokio_rustls::server::TlsStream<Sniff<S>>>),
    Failed,
}

impl<S> ServerTlsStream<S> {
    fn new(accept: tokio_rustls::FallibleAccept<Sniff<S>>, timeout: Duration) -> Self {
        Self {
            state: Handshake::Running {
                accept: Box::pin(accept),
                deadline: Box::pin(tokio::time::sleep(timeout)),
                timeout,
            },
        }
    }
}

/// A failed handshake, as the driver recognises it ([`HandshakeFailed`]).
fn handshake_error(kind: io::ErrorKind, why: String) -> io::Error {
    io::Error::new(kind, HandshakeFailed(why))
}

impl<S: AsyncRead + AsyncWrite + Unpin> ServerTlsStream<S> {
    /// Drives the handshake; the TLS stream once it is done.
    fn poll_handshake(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<&mut tokio_rustls::server::TlsStream<Sniff<S>>>> {
        ready!(self.poll_progress(cx))?;
        match &mut self.state {
            Handshake::Done(stream) => Poll::Ready(Ok(stream)),
            _ => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the TLS handshake failed",
            ))),
        }
    }

    /// Moves the handshake on until it is done (`Ok`), failed for good (`Ok`, state `Failed`),
    /// or fails now (`Err`, once).
    fn poll_progress(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            match std::mem::replace(&mut self.state, Handshake::Failed) {
                Handshake::Running {
                    mut accept,
                    mut deadline,
                    timeout,
                } => match accept.as_mut().poll(cx) {
                    Poll::Ready(Ok(stream)) => self.state = Handshake::Done(Box::new(stream)),
                    // A plaintext client, a port scanner, a client that does not trust our
                    // certificate: the driver logs it, summarised. A plaintext heartbeat
                    // client is told first.
                    Poll::Ready(Err((e, stream))) if stream.is_plaintext() => {
                        self.state = Handshake::Refusing {
                            stream,
                            line: Frame::Error {
                                message: TLS_EXPECTED_MESSAGE.to_owned(),
                            }
                            .to_bytes(),
                            written: 0,
                            deadline,
                            error: handshake_error(e.kind(), e.to_string()),
                        };
                    }
                    Poll::Ready(Err((e, _))) => {
                        return Poll::Ready(Err(handshake_error(e.kind(), e.to_string())));
                    }
                    Poll::Pending => {
                        if deadline.as_mut().poll(cx).is_ready() {
                            return Poll::Ready(Err(handshake_error(
                                io::ErrorKind::TimedOut,
                                format!("no TLS handshake within {timeout:?}"),
                            )));
                        }
                        self.state = Handshake::Running {
                            accept,
                            deadline,
                            timeout,
                        };
                        return Poll::Pending;
                    }
                },
                Handshake::Refusing {
                    mut stream,
                    line,
                    mut written,
                    mut deadline,
                    error,
                } => {
                    // The line, then a FIN after it, so the client reads it before the close.
                    let step = if written < line.len() {
                        Pin::new(&mut stream)
                            .poll_write(cx, &line[written..])
                            .map_ok(Some)
                    } else {
                        Pin::new(&mut stream).poll_shutdown(cx).map_ok(|()| None)
                    };
                    let pending = match step {
                        Poll::Ready(Ok(Some(n))) if n > 0 => {
                            written += n;
                            false
                        }
                        Poll::Pending if deadline.as_mut().poll(cx).is_pending() => true,
                        // Closed, a write error, or out of time: the client is not told.
                        _ => return Poll::Ready(Err(error)),
                    };
                    self.state = Handshake::Refusing {
                        stream,
                        line,
                        written,
                        deadline,
                        error,
                    };
                    if pending {
                        return Poll::Pending;
                    }
                }
                state @ (Handshake::Done(_) | Handshake::Failed) => {
                    self.state = state;
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for ServerTlsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let stream = ready!(self.get_mut().poll_handshake(cx))?;
        Pin::new(stream).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ServerTlsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let stream = ready!(self.get_mut().poll_handshake(cx))?;
        Pin::new(stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let stream = ready!(self.get_mut().poll_handshake(cx))?;
        Pin::new(stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().state {
            // Sends close_notify, then shuts the transport down.
            Handshake::Done(stream) => Pin::new(stream).poll_shutdown(cx),
            // Nothing was agreed to close; dropping the stream closes the transport.
            Handshake::Running { .. } | Handshake::Refusing { .. } | Handshake::Failed => {
                Poll::Ready(Ok(()))
            }
        }
    }
}

/// A [`Connector`] whose streams speak TLS, checking the server's certificate.
pub struct TlsConnector<C> {
    inner: C,
    connector: tokio_rustls::TlsConnector,
    server_name: ServerName<'static>,
    timeout: Duration,
}

impl<C> TlsConnector<C> {
    /// TLS over `inner`'s connections with `config`, expecting a certificate for
    /// `server_name` (a DNS name or an IP address).
    pub fn new(
        inner: C,
        config: Arc<rustls::ClientConfig>,
        server_name: &str,
    ) -> Result<Self, TlsError> {
        let server_name = ServerName::try_from(server_name.to_owned())
            .map_err(|_| TlsError::ServerName(server_name.to_owned()))?;
        Ok(Self::with_server_name(inner, config, server_name))
    }

    /// The same, with a server name already parsed.
    pub fn with_server_name(
        inner: C,
        config: Arc<rustls::ClientConfig>,
        server_name: ServerName<'static>,
    ) -> Self {
        Self {
            inner,
            connector: tokio_rustls::TlsConnector::from(config),
            server_name,
            timeout: HANDSHAKE_TIMEOUT,
        }
    }
}

impl<C: Connector> Connector for TlsConnector<C> {
    type Stream = tokio_rustls::client::TlsStream<C::Stream>;

    async fn connect(&mut self) -> io::Result<Self::Stream> {
        let stream = self.inner.connect().await?;
        let name = self.server_name.to_str();
        let handshake = self.connector.connect(self.server_name.clone(), stream);
        match tokio::time::timeout(self.timeout, handshake).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(e)) => Err(client_handshake_error(&name, e)),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "TLS handshake with {name} timed out after {:?}",
                    self.timeout
                ),
            )),
        }
    }
}

/// A failed client handshake with `name`, said so that the user knows what to do when the
/// server does not speak TLS: bytes that are not TLS are a [`NotTlsServer`] (no retry can mend
/// it); a close during the handshake may be one too, or a refusal (a server at its connection
/// limit closes at once), so it stays an ordinary failure with a hint.
fn client_handshake_error(name: &str, e: io::Error) -> io::Error {
    let not_tls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|e| matches!(e, rustls::Error::InvalidMessage(_)));
    if not_tls {
        return io::Error::new(
            e.kind(),
            NotTlsServer(format!("TLS handshake with {name} failed: {e}")),
        );
    }
    if e.kind() == io::ErrorKind::UnexpectedEof {
        return io::Error::new(
            e.kind(),
            format!(
                "TLS handshake with {name} failed: the server closed the connection ({e}); if \
                 the server does not speak TLS: drop --tls (or check the port)"
            ),
        );
    }
    io::Error::new(e.kind(), format!("TLS handshake with {name} failed: {e}"))
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// A certificate resolver with nothing to offer: enough for peers that never get as far as
    /// asking for a certificate.
    #[derive(Debug)]
    struct NoCertificate;

    impl rustls::server::ResolvesServerCert for NoCertificate {
        fn resolve(
            &self,
            _: rustls::server::ClientHello<'_>,
        ) -> Option<Arc<rustls::sign::CertifiedKey>> {
            None
        }
    }

    /// A server-side stream over an in-memory pipe; the other end is returned for the peer.
    fn stream() -> (
        ServerTlsStream<tokio::io::DuplexStream>,
        tokio::io::DuplexStream,
    ) {
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(NoCertificate));
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let (ours, theirs) = tokio::io::duplex(1024);
        let s = ServerTlsStream::new(
            acceptor.accept(Sniff::new(ours)).into_fallible(),
            HANDSHAKE_TIMEOUT,
        );
        (s, theirs)
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_is_given_up_after_the_handshake_timeout() {
        let (mut s, _silent) = stream();
        let t0 = tokio::time::Instant::now();
        let mut buf = [0u8; 16];
        let e = s.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(handshake_failure(&e), Some("no TLS handshake within 10s"));
        assert_eq!(t0.elapsed(), HANDSHAKE_TIMEOUT);
        // Failed for good, and closing it is harmless.
        assert_eq!(
            s.read(&mut buf).await.unwrap_err().kind(),
            io::ErrorKind::NotConnected
        );
        s.shutdown().await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_plaintext_peer_fails_the_handshake_at_once() {
        let (mut s, mut plain) = stream();
        plain.write_all(b"HELLO 1 web-01 1000\n").await.unwrap();
        let t0 = tokio::time::Instant::now();
        let mut buf = [0u8; 16];
        let e = s.read(&mut buf).await.unwrap_err();
        assert!(handshake_failure(&e).is_some(), "{e:?}");
        assert_eq!(t0.elapsed(), Duration::ZERO);
        assert!(s.write_all(b"ACK 1 1.0\n").await.is_err());
        // Told in plaintext, with nothing before: one valid `ERROR` line, then the close.
        let mut told = String::new();
        plain.read_to_string(&mut told).await.unwrap();
        assert_eq!(told, format!("ERROR {TLS_EXPECTED_MESSAGE}\n"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_is_neither_tls_nor_a_heartbeat_client_is_told_nothing() {
        let (mut s, mut other) = stream();
        other.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 16];
        let e = s.read(&mut buf).await.unwrap_err();
        assert!(handshake_failure(&e).is_some(), "{e:?}");
        drop(s);
        let mut told = Vec::new();
        other.read_to_end(&mut told).await.unwrap();
        assert!(!told.starts_with(b"ERROR"), "{told:?}");
    }

    #[test]
    fn unusable_files_are_named() {
        let e = client_config(Path::new("/nonexistent/ca.pem")).unwrap_err();
        assert!(e.to_string().starts_with("/nonexistent/ca.pem: "), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        fs::write(&empty, "not PEM\n").unwrap();
        let e = client_config(&empty).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{}: no certificate in the file", empty.display())
        );
        assert!(matches!(
            TlsConnector::new(
                (),
                Arc::new(
                    rustls::ClientConfig::builder_with_provider(provider())
                        .with_safe_default_protocol_versions()
                        .unwrap()
                        .with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth(),
                ),
                "not a name!"
            ),
            Err(TlsError::ServerName(_))
        ));
    }
}
