//! The run's log: everything the hosts and the step loop observed, in the order it happened,
//! each stamped with simulated time.

use std::net::SocketAddr;
use std::time::Duration;

use heartbeat_core::client;
use heartbeat_core::frame::Frame;
use heartbeat_core::server;

use crate::scenario::{Action, Node};

/// Simulated time since the start, read inside a host (sub-tick precise), or zero outside one.
pub(crate) fn now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

/// One observation.
#[derive(Clone, Debug)]
pub enum Record {
    /// The step loop carried out an action.
    Action(Action),
    /// A client's connect attempt ended; `error` is the error kind when it failed.
    Connect {
        /// The client.
        client: usize,
        /// The local address of the new stream.
        local: Option<SocketAddr>,
        /// Why it failed.
        error: Option<String>,
    },
    /// A client event, from the client's driver.
    Client {
        /// The client.
        client: usize,
        /// Which run of the client's process (0 first, +1 per restart).
        incarnation: u32,
        /// The event.
        event: client::Event,
    },
    /// A client's process ended on its own: its driver returned (it gave up without
    /// reconnecting, or was told to stop).
    Exited {
        /// The client.
        client: usize,
        /// Which run of its process.
        incarnation: u32,
        /// True when it gave up (its connection failed or ended and it does not reconnect).
        failed: bool,
    },
    /// The heal-and-drain phase began: every link released and repaired, and the server
    /// restarted if it was down.
    Heal {
        /// True when the server was down and was restarted.
        restarted_server: bool,
    },
    /// A free-form note.
    Note {
        /// Who.
        node: Node,
        /// What.
        text: String,
    },
    /// A server event, from the server's driver.
    Server {
        /// Which run of the server's process (0 first, +1 per restart).
        incarnation: u32,
        /// The event.
        event: server::Event,
    },
    /// A process started (or restarted).
    Started {
        /// Who.
        node: Node,
        /// Which run of its process.
        incarnation: u32,
    },
    /// The run ended here; what follows is the server being stopped to hand back its report.
    Stop,
    /// A client wrote a frame to its stream (the tap: ground truth of what was sent). A legacy
    /// heartbeat is recorded as the `BEAT` frame with its sequence number and stamp.
    Wrote {
        /// The client.
        client: usize,
        /// Which run of the client's process wrote it.
        incarnation: u32,
        /// The frame.
        frame: Frame,
    },
}

/// A record and when it happened.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Simulated time since the start.
    pub at: Duration,
    /// What.
    pub record: Record,
}

/// Everything observed during one run, in order.
#[derive(Debug, Default)]
pub struct Log {
    /// The entries, in the order they were observed.
    pub entries: Vec<Entry>,
}

impl Log {
    /// Appends an entry.
    pub fn push(&mut self, at: Duration, record: Record) {
        self.entries.push(Entry { at, record });
    }
}
