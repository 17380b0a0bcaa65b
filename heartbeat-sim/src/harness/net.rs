//! The simulated network seen by the driver: newtypes over `turmoil::net`.
//!
//! [`SimListener`] and [`SimConnector`] are what the server and client drivers get instead of
//! tokio's sockets. [`SimStream`] adds two things to turmoil's stream:
//! - reads coalesce every segment that has already arrived, as a kernel receive buffer does
//!   (turmoil hands out one segment per read, so a released firewall would otherwise look like
//!   separate arrivals instead of one burst);
//! - a flow whose sender's kernel gave up retransmitting ([`super::kernel`]) fails the stream
//!   with `TimedOut`, as a socket whose `tcp_retries2` ran out does;
//! - on the client side, a tap decodes every frame the client writes into the run's
//!   [`Log`], which is the ground truth the oracles check the server's analysis against.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use bytes::BytesMut;

use heartbeat_core::DecodeError;
use heartbeat_core::frame::{Frame, FrameDecoder, LegacyBeat, Protocol};
use heartbeat_net::driver::{Connector, Listener};

use super::kernel::{Flow, Kernel};
use super::log::{Log, Record};
use crate::scenario::Node;

/// The port the simulated server listens on.
pub const PORT: u16 = 6510;

/// The server's host name in the simulation (kept with the kernel model, which cuts and
/// repairs the links to it; named here too, as the network's).
pub use super::kernel::SERVER;

pub use heartbeat_core::config::CONNECT_TIMEOUT;

/// A listener on the simulated network.
pub struct SimListener {
    inner: turmoil::net::TcpListener,
    kernel: Option<Arc<Mutex<Kernel>>>,
}

impl std::fmt::Debug for SimListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimListener")
            .field("local_addr", &self.inner.local_addr().ok())
            .finish()
    }
}

impl SimListener {
    /// Binds `0.0.0.0:port` on the current simulated host.
    pub async fn bind(port: u16) -> io::Result<Self> {
        let inner = turmoil::net::TcpListener::bind(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port,
        ))
        .await?;
        Ok(Self {
            inner,
            kernel: None,
        })
    }

    /// Its streams fail as the shared [`Kernel`] model says (without it, as turmoil's do).
    pub fn with_kernel(mut self, kernel: Arc<Mutex<Kernel>>) -> Self {
        self.kernel = Some(kernel);
        self
    }
}

impl Listener for SimListener {
    type Stream = SimStream;

    async fn accept(&mut self) -> io::Result<(SimStream, SocketAddr)> {
        let (stream, peer) = self.inner.accept().await?;
        Ok((SimStream::new(stream, None, self.kernel.clone()), peer))
    }
}

/// Connects a simulated client to the simulated server, tapping what it writes.
#[derive(Debug, Clone)]
pub struct SimConnector {
    client: usize,
    incarnation: u32,
    protocol: Protocol,
    log: Arc<Mutex<Log>>,
    kernel: Option<Arc<Mutex<Kernel>>>,
}

impl SimConnector {
    /// A connector for run `incarnation` of client `client` (0-based), which speaks
    /// `protocol`, recording into `log`.
    pub fn new(client: usize, incarnation: u32, protocol: Protocol, log: Arc<Mutex<Log>>) -> Self {
        Self {
            client,
            incarnation,
            protocol,
            log,
            kernel: None,
        }
    }

    /// Connects as the shared [`Kernel`] model says (without it, as turmoil does).
    pub fn with_kernel(mut self, kernel: Arc<Mutex<Kernel>>) -> Self {
        self.kernel = Some(kernel);
        self
    }

    fn server_killed(&self) -> bool {
        self.kernel
            .as_ref()
            .is_some_and(|k| k.lock().expect("kernel lock").server_killed())
    }

    /// One turmoil connect, bounded by [`CONNECT_TIMEOUT`].
    async fn attempt(&self) -> io::Result<turmoil::net::TcpStream> {
        let attempt = turmoil::net::TcpStream::connect((SERVER, PORT));
        match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(e)) => Err(io::Error::new(
                e.kind(),
                format!("{SERVER}:{PORT}: {}", e.kind()),
            )),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connecting to {SERVER}:{PORT} timed out after {CONNECT_TIMEOUT:?}"),
            )),
        }
    }
}

impl Connector for SimConnector {
    type Stream = SimStream;

    /// Opens a connection to the server, giving up after [`CONNECT_TIMEOUT`] like the tokio
    /// connector. With the [`Kernel`] model, as on Linux: a server whose process was killed
    /// (its machine up) refuses at once; across a partition, or to a server whose machine is
    /// down, the SYN is held and retransmitted (1 s, 3 s, 7 s after it), so the attempt ends
    /// at the first retransmission after the repair, or times out.
    async fn connect(&mut self) -> io::Result<SimStream> {
        let result = if self.server_killed() {
            let kind = io::ErrorKind::ConnectionRefused;
            Err(io::Error::new(kind, format!("{SERVER}:{PORT}: {kind}")))
        } else {
            if let Some(k) = &self.kernel {
                k.lock().expect("kernel lock").sent();
            }
            self.attempt().await
        };
        let at = super::log::now();
        let mut log = self.log.lock().expect("log lock");
        match result {
            Ok(stream) => {
                let local = stream.local_addr().ok();
                log.push(
                    at,
                    Record::Connect {
                        client: self.client,
                        local,
                        error: None,
                    },
                );
                let decoder = match self.protocol {
                    Protocol::Legacy => TapDecoder::Legacy(BytesMut::new()),
                    _ => TapDecoder::V1(FrameDecoder::new()),
                };
                let tap = Tap {
                    client: self.client,
                    incarnation: self.incarnation,
                    log: self.log.clone(),
                    decoder,
                };
                Ok(SimStream::new(stream, Some(tap), self.kernel.clone()))
            }
            Err(e) => {
                log.push(
                    at,
                    Record::Connect {
                        client: self.client,
                        local: None,
                        error: Some(e.to_string()),
                    },
                );
                Err(e)
            }
        }
    }
}

struct Tap {
    client: usize,
    incarnation: u32,
    log: Arc<Mutex<Log>>,
    decoder: TapDecoder,
}

/// The tap's decoder: the client's own protocol.
enum TapDecoder {
    Legacy(BytesMut),
    V1(FrameDecoder),
}

impl TapDecoder {
    fn push(&mut self, bytes: &[u8]) {
        match self {
            Self::Legacy(buf) => buf.extend_from_slice(bytes),
            Self::V1(d) => d.push(bytes),
        }
    }

    /// The next whole frame written; a legacy heartbeat as the `BEAT` it stands for.
    fn decode_next(&mut self) -> Result<Option<Frame>, DecodeError> {
        match self {
            Self::Legacy(buf) => Ok(LegacyBeat::decode(buf)?.map(|b| Frame::Beat {
                seq: b.seq,
                sent: b.sent,
            })),
            Self::V1(d) => d.decode_next(),
        }
    }

    fn clear(&mut self) {
        match self {
            Self::Legacy(buf) => buf.clear(),
            Self::V1(d) => d.clear(),
        }
    }
}

/// A simulated TCP stream (see the module docs for what it adds to turmoil's).
pub struct SimStream {
    inner: turmoil::net::TcpStream,
    tap: Option<Tap>,
    /// The kernel model and the flow this stream sends on.
    kernel: Option<(Arc<Mutex<Kernel>>, Flow)>,
}

impl SimStream {
    fn new(
        inner: turmoil::net::TcpStream,
        tap: Option<Tap>,
        kernel: Option<Arc<Mutex<Kernel>>>,
    ) -> Self {
        let flow = inner.local_addr().ok().zip(inner.peer_addr().ok());
        let kernel = kernel.zip(flow);
        Self { inner, tap, kernel }
    }

    /// `Err(TimedOut)` once the kernel gave up retransmitting what this stream sent; otherwise
    /// `None`, and the stream is woken when that happens.
    fn timed_out(&self, cx: &Context<'_>) -> Option<io::Error> {
        let (kernel, flow) = self.kernel.as_ref()?;
        let mut kernel = kernel.lock().expect("kernel lock");
        if kernel.expired(flow) {
            return Some(io::Error::new(
                io::ErrorKind::TimedOut,
                "the connection timed out: its data went unacknowledged through every retransmission",
            ));
        }
        kernel.wait(*flow, cx.waker());
        None
    }

    /// Tells the kernel model this stream sends a segment.
    fn sends(&self) {
        if let Some((kernel, _)) = &self.kernel {
            if let Ok(mut k) = kernel.lock() {
                k.sent();
            }
        }
    }
}

impl Drop for SimStream {
    fn drop(&mut self) {
        if let Some((kernel, flow)) = &self.kernel {
            if let Ok(mut k) = kernel.lock() {
                // Its FIN or RST goes out; what it had not delivered is an orphan's.
                k.close(*flow);
            }
        }
    }
}

impl std::fmt::Debug for SimStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimStream")
            .field("tapped", &self.tap.is_some())
            .finish()
    }
}

impl AsyncRead for SimStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(e) = self.timed_out(cx) {
            return Poll::Ready(Err(e));
        }
        let start = buf.filled().len();
        loop {
            let before = buf.filled().len();
            match Pin::new(&mut self.inner).poll_read(cx, buf) {
                Poll::Ready(Ok(())) if buf.filled().len() > before && buf.remaining() > 0 => {
                    // More may have arrived in the same tick: take it in the same read.
                    continue;
                }
                Poll::Ready(Ok(())) => return Poll::Ready(Ok(())),
                // EOF and errors are sticky in turmoil's stream: hand out the data first, they
                // come again on the next read.
                Poll::Ready(Err(_)) | Poll::Pending if buf.filled().len() > start => {
                    return Poll::Ready(Ok(()));
                }
                other => return other,
            }
        }
    }
}

impl AsyncWrite for SimStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(e) = self.timed_out(cx) {
            return Poll::Ready(Err(e));
        }
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(_))) {
            this.sends();
        }
        if let (Poll::Ready(Ok(n)), Some(tap)) = (&result, this.tap.as_mut()) {
            tap.decoder.push(&buf[..*n]);
            let at = super::log::now();
            let mut log = tap.log.lock().expect("log lock");
            // The client only writes frames the core encoded; a decode error would be a core
            // bug, recorded as such for the oracles.
            loop {
                match tap.decoder.decode_next() {
                    Ok(Some(frame)) => log.push(
                        at,
                        Record::Wrote {
                            client: tap.client,
                            incarnation: tap.incarnation,
                            frame,
                        },
                    ),
                    Ok(None) => break,
                    Err(e) => {
                        log.push(
                            at,
                            Record::Note {
                                node: Node::Client(tap.client),
                                text: format!("wrote an undecodable frame: {e}"),
                            },
                        );
                        tap.decoder.clear();
                        break;
                    }
                }
            }
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.sends();
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
