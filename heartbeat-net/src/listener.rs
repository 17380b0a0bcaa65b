//! The driver traits implemented for tokio's TCP.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::NetError;
use crate::driver::{Connector, Listener};

/// The listen backlog asked for: connections whose handshake is complete but which the server
/// has not accepted yet. tokio's `TcpListener::bind` asks for 1,024, which a reconnect storm
/// of thousands of clients overflows (the kernel then drops SYNs, and clients retry after 1,
/// 3, 7, 15 s). Linux caps the value at `net.core.somaxconn` (4,096 by default since 5.4; raise
/// it with `sysctl -w net.core.somaxconn=65535` for a deeper queue).
pub const LISTEN_BACKLOG: u32 = 65_535;

/// A bound tokio TCP listener.
#[derive(Debug)]
pub struct TcpListener {
    inner: tokio::net::TcpListener,
    send_buffer: Option<usize>,
}

impl TcpListener {
    /// Binds `host:port`. The host is resolved and the first address that binds wins, IPv4
    /// addresses first (so `localhost` means 127.0.0.1, as in the seed). Port 0 picks a free
    /// port; see [`local_addr`](Self::local_addr). It listens with a backlog of
    /// [`LISTEN_BACKLOG`] (capped by the kernel at `net.core.somaxconn`).
    ///
    /// The error says in words when the port is in use (`Address already in use`) or privileged.
    pub async fn bind(host: &str, port: u16) -> Result<Self, NetError> {
        let (first, _) = Self::bind_shards(host, port, 1).await?;
        Ok(first)
    }

    /// [`bind`](Self::bind) for `n` server threads: `n` listeners on the same address (the
    /// port of the first when 0 was asked for), the kernel spreading new connections across
    /// them by their addresses and ports. The first is for this thread; each of the others
    /// becomes a listener on the thread that serves it ([`ListenerShard::into_listener`]).
    ///
    /// With `n` above 1 every listener sets `SO_REUSEPORT`, which also lets another process
    /// of the same user bind the same port and take a share of the connections; with `n` = 1
    /// it does not (as [`bind`](Self::bind)).
    pub async fn bind_shards(
        host: &str,
        port: u16,
        n: usize,
    ) -> Result<(Self, Vec<ListenerShard>), NetError> {
        let shared = n > 1;
        let first = Self::bind_first(host, port, shared).await?;
        let addr = first.local_addr().map_err(|source| NetError::Bind {
            addr: format!("{host}:{port}"),
            hint: None,
            source,
        })?;
        let mut more = Vec::with_capacity(n.saturating_sub(1));
        for _ in 1..n {
            let l = listen(addr, true)
                .and_then(tokio::net::TcpListener::into_std)
                .map_err(|source| NetError::Bind {
                    addr: addr.to_string(),
                    hint: None,
                    source,
                })?;
            more.push(ListenerShard(l));
        }
        Ok((first, more))
    }

    async fn bind_first(host: &str, port: u16, reuse_port: bool) -> Result<Self, NetError> {
        let addr = format!("{host}:{port}");
        let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|source| NetError::Resolve {
                host: host.to_owned(),
                source,
            })?
            .collect();
        addrs.sort_by_key(SocketAddr::is_ipv6);
        let mut first_error = None;
        for a in addrs {
            match listen(a, reuse_port) {
                Ok(l) => return Ok(Self::from_tokio(l)),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        let source = first_error.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "the host has no addresses")
        });
        let hint = match source.kind() {
            // Not only a listener: a connection of this host whose local port it is (a client's
            // ephemeral port, or one in TIME_WAIT) blocks the bind as well.
            io::ErrorKind::AddrInUse => Some(format!(
                "port {port} is in use on this host: another process listens on it, or a \
                 connection holds it as its local port (`ss -tanp 'sport = :{port}'` shows which); \
                 stop it or pick another port"
            )),
            io::ErrorKind::PermissionDenied if port < 1024 => Some(format!(
                "port {port} is a privileged port, below 1024: run as root or pick a port from \
                 1024 up"
            )),
            _ => None,
        };
        Err(NetError::Bind { addr, hint, source })
    }

    /// Wraps a listener bound elsewhere.
    pub fn from_tokio(l: tokio::net::TcpListener) -> Self {
        Self {
            inner: l,
            send_buffer: None,
        }
    }

    /// Sets the kernel send buffer of every accepted connection to `bytes` (`SO_SNDBUF`; Linux
    /// doubles it), instead of letting it grow to megabytes. It bounds the kernel memory a
    /// peer that does not read can hold, and how long it takes until the server's writes to
    /// it block and it is dropped as not reading its acknowledgements. `None`: the system's.
    pub fn send_buffer(mut self, bytes: Option<usize>) -> Self {
        self.send_buffer = bytes;
        self
    }

    /// The address it is bound to (the actual port when 0 was asked for).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

impl Listener for TcpListener {
    type Stream = TcpStream;

    async fn accept(&mut self) -> io::Result<(TcpStream, SocketAddr)> {
        let (stream, peer) = self.inner.accept().await?;
        // Heartbeats and acks are tiny and latency is what is measured: never wait to coalesce.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "set_nodelay failed");
        }
        if let Some(bytes) = self.send_buffer {
            // tokio does not expose SO_SNDBUF on a stream; socket2 sets it on the same fd.
            if let Err(e) = socket2::SockRef::from(&stream).set_send_buffer_size(bytes) {
                tracing::debug!(%peer, error = %e, "setting the send buffer failed");
            }
        }
        Ok((stream, peer))
    }
}

/// One more server thread's listener from [`TcpListener::bind_shards`], bound and listening
/// but not yet registered with a runtime: it can move to another thread.
#[derive(Debug)]
pub struct ListenerShard(std::net::TcpListener);

impl ListenerShard {
    /// The listener, registered with the runtime of the calling thread (call it there), with
    /// `send_buffer` as [`TcpListener::send_buffer`].
    pub fn into_listener(self, send_buffer: Option<usize>) -> io::Result<TcpListener> {
        let l = tokio::net::TcpListener::from_std(self.0)?;
        Ok(TcpListener::from_tokio(l).send_buffer(send_buffer))
    }
}

/// Binds and listens as tokio's `TcpListener::bind` does (`SO_REUSEADDR` on Unix, so a
/// restarted server can bind while old connections linger in TIME_WAIT), with a deep backlog;
/// with `reuse_port`, also `SO_REUSEPORT` (several listeners on one port).
fn listen(addr: SocketAddr, reuse_port: bool) -> io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    #[cfg(unix)]
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    #[cfg(not(unix))]
    let _ = reuse_port;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Connects to `host:port` over TCP, resolving the host again at every attempt (a server that
/// moved is found after a reconnect).
#[derive(Clone, Debug)]
pub struct TcpConnector {
    host: String,
    port: u16,
    timeout: Duration,
}

impl TcpConnector {
    /// A connector to `host:port` whose attempts give up after
    /// [`CONNECT_TIMEOUT`](heartbeat_core::config::CONNECT_TIMEOUT) (10 s).
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            timeout: heartbeat_core::config::CONNECT_TIMEOUT,
        }
    }

    /// How long one attempt (resolving and connecting to each address) may take.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The host.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    async fn attempt(&self) -> io::Result<TcpStream> {
        let (host, port) = (self.host.as_str(), self.port);
        let addrs = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("cannot resolve host {host:?}: {e}")))?;
        let mut last = None;
        for a in addrs {
            match TcpStream::connect(a).await {
                Ok(s) => {
                    if let Err(e) = s.set_nodelay(true) {
                        tracing::debug!(error = %e, "set_nodelay failed");
                    }
                    return Ok(s);
                }
                Err(e) => last = Some(io::Error::new(e.kind(), format!("{a}: {e}"))),
            }
        }
        Err(last.unwrap_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("host {host:?} has no addresses"),
            )
        }))
    }
}

impl Connector for TcpConnector {
    type Stream = TcpStream;

    async fn connect(&mut self) -> io::Result<TcpStream> {
        match tokio::time::timeout(self.timeout, self.attempt()).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "connecting to {}:{} timed out after {:?}",
                    self.host, self.port, self.timeout
                ),
            )),
        }
    }
}
