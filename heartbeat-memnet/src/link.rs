//! One connection (attempt) between a client process and the server, and a client's host.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::SmallRng;

use heartbeat_core::ConnId;
use heartbeat_core::client::Client;

use crate::Latency;
use crate::pipe::Pipe;

/// A link's id: links are numbered in the order they are opened, from 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LinkId(pub u64);

impl fmt::Display for LinkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "link#{}", self.0)
    }
}

/// The directions a fault applies to, seen from the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Way {
    /// Both directions.
    Both,
    /// Server to client.
    Down,
    /// Client to server.
    Up,
}

impl Way {
    pub(crate) fn has_up(self) -> bool {
        matches!(self, Self::Both | Self::Up)
    }

    pub(crate) fn has_down(self) -> bool {
        matches!(self, Self::Both | Self::Down)
    }
}

/// A flag per direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Ways {
    pub(crate) up: bool,
    pub(crate) down: bool,
}

impl Ways {
    pub(crate) fn set(&mut self, way: Way) {
        self.up |= way.has_up();
        self.down |= way.has_down();
    }

    pub(crate) fn any(self) -> bool {
        self.up || self.down
    }
}

/// One connection (attempt) between a client process and the server.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) id: LinkId,
    /// The client (host index).
    pub(crate) client: usize,
    /// The client process that opened it (0 for the first).
    pub(crate) process: u32,
    /// The server process that accepted it (1 for the first).
    pub(crate) server_process: u32,
    /// The server's id for it, once the SYN arrived.
    pub(crate) conn: Option<ConnId>,
    /// Client to server.
    pub(crate) up: Pipe,
    /// Server to client.
    pub(crate) down: Pipe,
    pub(crate) client_open: bool,
    pub(crate) server_open: bool,
    /// While the handshake is under way: when the client gives up on it.
    pub(crate) connecting_until: Option<Instant>,
}

impl Link {
    /// Nothing can happen on it any more: both ends closed and nothing in flight.
    pub(crate) fn is_finished(&self) -> bool {
        !self.client_open
            && !self.server_open
            && self.connecting_until.is_none()
            && self.up.is_empty()
            && self.down.is_empty()
    }
}

/// A client's host: its process, its current link, the faults on its path to the server and
/// its latency model.
#[derive(Debug)]
pub(crate) struct Host {
    pub(crate) addr: SocketAddr,
    /// The running process; `None` before the first start and after a crash.
    pub(crate) machine: Option<Client>,
    /// Processes started so far.
    pub(crate) processes: u32,
    /// The link of the running process, while open.
    pub(crate) link: Option<LinkId>,
    /// Held directions: links opened later start held too.
    pub(crate) held: Ways,
    /// Cut directions: links opened later start cut too, and a connect is refused at once
    /// while the client-to-server direction is cut.
    pub(crate) cut: Ways,
    pub(crate) latency: Latency,
    up_rng: SmallRng,
    down_rng: SmallRng,
}

impl Host {
    pub(crate) fn new(addr: SocketAddr, latency: Latency, up_seed: u64, down_seed: u64) -> Self {
        Self {
            addr,
            machine: None,
            processes: 0,
            link: None,
            held: Ways::default(),
            cut: Ways::default(),
            latency,
            up_rng: SmallRng::seed_from_u64(up_seed),
            down_rng: SmallRng::seed_from_u64(down_seed),
        }
    }

    /// True while a process runs and has not given up.
    pub(crate) fn is_alive(&self) -> bool {
        self.machine.as_ref().is_some_and(|m| !m.is_done())
    }

    /// The latency of the next client-to-server segment.
    pub(crate) fn draw_up(&mut self) -> Duration {
        self.latency.sample(&mut self.up_rng)
    }

    /// The latency of the next server-to-client segment.
    pub(crate) fn draw_down(&mut self) -> Duration {
        self.latency.sample(&mut self.down_rng)
    }
}
