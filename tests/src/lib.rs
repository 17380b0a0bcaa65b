//! The `Pair` harness: one [`Server`], several [`Client`]s on `heartbeat-sim`'s in-memory
//! network ([`heartbeat_memnet`], the one the QoS engine runs on), with a fixed latency,
//! hold, one- or two-way cuts and a manual clock. No sockets, no sleeping: [`Pair::run_until`]
//! jumps the clock from one due thing to the next. The network decides everything about order
//! (its module docs say what happens first at one instant); this crate only adds names and a
//! transcript.
//!
//! Everything the machines emit is written to a [`Transcript`], one `Display` line per output
//! with the time since the start (`t+1500.000ms server ...`), for `insta` snapshots.
//!
//! ```
//! use std::time::Duration;
//!
//! use heartbeat_core::ClientId;
//! use heartbeat_core::config::{ClientConfig, ServerConfig};
//! use heartbeat_tests::Pair;
//!
//! let mut pair = Pair::new(ServerConfig::default(), Duration::from_millis(5));
//! let id = ClientId::new("a").unwrap();
//! pair.add_client("a", ClientConfig::new(id, Duration::from_millis(100)).unwrap());
//! pair.run_until(Duration::from_secs(1));
//! assert_eq!(pair.line("a welcomed"), "t+15.000ms a welcomed");
//! assert_eq!(pair.client(0).acked(), 10);
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use heartbeat_core::client::{self, Client};
use heartbeat_core::config::{ClientConfig, ServerConfig};
use heartbeat_core::server::{self, Server};
use heartbeat_core::{Now, UnixTime, fmt_ms};
use heartbeat_memnet::{Latency, Net, NetEvent, Observer, Way};

/// A firewall on one direction of a client's path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PipeMode {
    /// Drop silently (a firewall that drops packets, like turmoil's `partition`): what is in
    /// flight is lost and the stream is stuck for good; while the client-to-server direction
    /// drops, connects are refused at once.
    Dropping,
    /// Queue without delivering; [`Pair::release`] delivers everything at once (a firewall that
    /// holds packets, like turmoil's `hold`).
    Held,
}

/// The story of a run: every output of every machine, one line each, in order.
#[derive(Debug)]
pub struct Transcript {
    names: Vec<String>,
    /// The lines, in order.
    pub lines: Vec<String>,
    /// Record `Transmit`s too (off by default: events tell the story).
    pub record_transmits: bool,
    /// Record per-heartbeat lines (`Sent`, `Acked`, `Heartbeat`) too (on by default).
    pub record_heartbeats: bool,
}

impl Transcript {
    fn log(&mut self, net: &Net, who: &str, what: impl std::fmt::Display) {
        let line = format!("t+{} {who} {what}", fmt_ms(net.elapsed()));
        self.lines.push(line);
    }
}

impl Observer for Transcript {
    fn on_client_output(&mut self, net: &Net, i: usize, out: &client::Output) {
        let name = &self.names[i];
        let line = match out {
            // Logged when the network answers (`on_net_event`).
            client::Output::Connect => None,
            client::Output::Transmit(bytes) => {
                self.record_transmits.then(|| format!("tx {}", show(bytes)))
            }
            client::Output::Disconnect { reason } => Some(format!("close ({reason})")),
            client::Output::Event(e) => {
                let per_beat =
                    matches!(e, client::Event::Sent { .. } | client::Event::Acked { .. });
                (self.record_heartbeats || !per_beat).then(|| e.to_string())
            }
        };
        if let Some(line) = line {
            let name = name.clone();
            self.log(net, &name, line);
        }
    }

    fn on_net_event(&mut self, net: &Net, event: NetEvent) {
        let (i, what) = match event {
            NetEvent::Accepted { client, conn } => (client, format!("connect -> server {conn}")),
            NetEvent::Refused { client } => (client, "connect -> refused".to_owned()),
            NetEvent::TimedOut { client } => (client, "connect -> timed out".to_owned()),
        };
        let name = self.names[i].clone();
        self.log(net, &name, what);
    }

    fn on_server_output(&mut self, net: &Net, out: &server::Output) {
        match out {
            server::Output::Transmit { conn, bytes } => {
                if self.record_transmits {
                    self.log(net, "server", format_args!("{conn} tx {}", show(bytes)));
                }
            }
            server::Output::Disconnect { conn, reason } => {
                self.log(net, "server", format_args!("{conn} close ({reason})"));
            }
            server::Output::Event(e) => {
                if self.record_heartbeats || !matches!(e, server::Event::Heartbeat { .. }) {
                    self.log(net, "server", e);
                }
            }
        }
    }
}

/// The harness. See the crate docs.
#[derive(Debug)]
pub struct Pair {
    net: Net,
    latency: Duration,
    /// Every output as a line, in order.
    pub transcript: Transcript,
}

impl Pair {
    /// A server with `config` and no clients, one-way latency `latency`, clock at
    /// 1 700 000 000 s Unix time.
    pub fn new(config: ServerConfig, latency: Duration) -> Self {
        #[allow(clippy::disallowed_methods)] // an arbitrary origin; only offsets from it are used
        let start = Now {
            mono: Instant::now(),
            unix: UnixTime::from_nanos(1_700_000_000_000_000_000),
        };
        let mut net = Net::new(start);
        net.start_server(Server::new(Arc::new(config)));
        Self {
            net,
            latency,
            transcript: Transcript {
                names: Vec::new(),
                lines: Vec::new(),
                record_transmits: false,
                record_heartbeats: true,
            },
        }
    }

    /// Adds a client host and starts a process with `config` on it now. Returns its index.
    pub fn add_client(&mut self, name: &str, config: ClientConfig) -> usize {
        let i = self.net.client_count();
        let addr = SocketAddr::from(([10, 0, 0, 1 + i as u8], 40_000 + i as u16));
        // A fixed latency draws nothing: the seeds do not matter.
        self.net
            .add_client(addr, Latency::Fixed(self.latency), 0, 0);
        self.transcript.names.push(name.to_owned());
        self.net.start_client(i, config, &mut self.transcript);
        i
    }

    /// The server.
    pub fn server(&self) -> &Server {
        self.net.server().expect("the pair's server never crashes")
    }

    /// Client `i`'s process; panics if it crashed.
    pub fn client(&self, i: usize) -> &Client {
        let name = &self.transcript.names[i];
        self.net
            .client(i)
            .unwrap_or_else(|| panic!("client {name} crashed"))
    }

    /// The current time.
    pub fn now(&self) -> Now {
        self.net.now()
    }

    /// Time since the start.
    pub fn elapsed(&self) -> Duration {
        self.net.elapsed()
    }

    /// The transcript as one string, for snapshots.
    pub fn render(&self) -> String {
        let mut s = self.transcript.lines.join("\n");
        s.push('\n');
        s
    }

    /// The first transcript line containing `needle`; panics with the whole transcript if none.
    pub fn line(&self, needle: &str) -> &str {
        let found = self.transcript.lines.iter().find(|l| l.contains(needle));
        found.unwrap_or_else(|| panic!("no {needle:?} in\n{}", self.render()))
    }

    /// Puts a firewall on client `i`'s path, in one direction or both.
    pub fn set_link(&mut self, i: usize, up: Option<PipeMode>, down: Option<PipeMode>) {
        for (way, mode) in [(Way::Up, up), (Way::Down, down)] {
            match mode {
                Some(PipeMode::Dropping) => self.net.partition(i, way),
                Some(PipeMode::Held) => self.net.hold(i, way),
                None => {}
            }
        }
        let name = self.transcript.names[i].clone();
        let what = format!("link {name} up={up:?} down={down:?}");
        self.transcript.log(&self.net, "net", what);
    }

    /// Releases a held link: everything held is delivered at once, as one read.
    pub fn release(&mut self, i: usize) {
        self.net.release(i);
        let name = self.transcript.names[i].clone();
        self.transcript
            .log(&self.net, "net", format_args!("release {name}"));
    }

    /// Lifts the cuts on client `i`'s path: connects work again; a stream that was cut stays
    /// stuck. Not written to the transcript (the snapshots tell the story by the connects).
    pub fn repair(&mut self, i: usize) {
        self.net.repair(i);
    }

    /// Crashes client `i` silently: its process stops and nothing in flight or later reaches
    /// the server (no FIN).
    pub fn crash_silently(&mut self, i: usize) {
        self.net.crash_client(i, true);
        let name = self.transcript.names[i].clone();
        self.transcript
            .log(&self.net, "net", format_args!("silent crash {name}"));
    }

    /// Pauses client `i`'s heartbeats now ([`Client::pause`]).
    pub fn pause(&mut self, i: usize) {
        self.net
            .command_client(i, &mut self.transcript, Client::pause);
    }

    /// Resumes client `i`'s heartbeats now ([`Client::resume`]).
    pub fn resume(&mut self, i: usize) {
        self.net
            .command_client(i, &mut self.transcript, Client::resume);
    }

    /// Runs until `elapsed() == until` (from the start), doing everything due up to and
    /// including that instant.
    pub fn run_until(&mut self, until: Duration) {
        let t = self.net.origin().mono + until;
        self.net.run_until(t, &mut self.transcript);
    }

    /// Runs for `d` more.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.elapsed() + d;
        self.run_until(until);
    }
}

fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .trim_end()
        .replace('\n', " | ")
}
