//! The `Pair` harness: one [`Server`], several [`Client`]s, a byte pipe per direction with
//! latency, drop and hold switches, and a manual clock. No sockets, no sleeping: [`Pair::step`]
//! jumps the clock to the next thing that can happen (a byte delivery or a machine's timeout).
//!
//! Everything the machines emit is written to a transcript, one `Display` line per output with
//! the time since the start (`t+1500.000ms server ...`), for `insta` snapshots.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use heartbeat_core::client::{self, Client};
use heartbeat_core::config::{ClientConfig, ServerConfig};
use heartbeat_core::server::{self, Server};
use heartbeat_core::{ConnId, Now, UnixTime, fmt_ms};

/// How a pipe treats bytes written into it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PipeMode {
    /// Deliver after the latency.
    Open,
    /// Queue without delivering; [`Pair::release`] delivers everything at once (a firewall that
    /// holds packets, like turmoil's `hold`).
    Held,
    /// Drop silently (a firewall that drops packets, like turmoil's `partition`).
    Dropping,
}

#[derive(Debug)]
struct Pipe {
    queue: VecDeque<(Instant, Delivery)>,
    mode: PipeMode,
}

#[derive(Debug)]
enum Delivery {
    Bytes(Vec<u8>),
    Eof,
}

impl Pipe {
    fn new() -> Self {
        Self {
            queue: VecDeque::new(),
            mode: PipeMode::Open,
        }
    }

    fn send(&mut self, at: Instant, d: Delivery) {
        if self.mode != PipeMode::Dropping {
            self.queue.push_back((at, d));
        }
    }

    fn next_due(&self) -> Option<Instant> {
        if self.mode == PipeMode::Open {
            self.queue.front().map(|(at, _)| *at)
        } else {
            None
        }
    }

    /// Everything due at `now`, bytes coalesced as one read (up to an EOF).
    fn take_due(&mut self, now: Instant) -> (Vec<u8>, bool) {
        let mut bytes = Vec::new();
        let mut eof = false;
        while self.mode == PipeMode::Open && self.queue.front().is_some_and(|(at, _)| *at <= now) {
            match self.queue.pop_front().expect("checked").1 {
                Delivery::Bytes(b) => bytes.extend(b),
                Delivery::Eof => {
                    eof = true;
                    self.queue.clear();
                }
            }
        }
        (bytes, eof)
    }
}

/// A connection between client `i` and the server: one pipe each way.
#[derive(Debug)]
struct Link {
    conn: ConnId,
    up: Pipe,
    down: Pipe,
    /// The server has closed its side.
    server_gone: bool,
}

/// One simulated client and its network state.
#[derive(Debug)]
pub struct Peer {
    /// Its name in the transcript.
    pub name: String,
    /// The machine.
    pub client: Client,
    link: Option<usize>,
    /// When false, connection attempts are refused (server unreachable).
    pub reachable: bool,
    /// The address the server sees.
    pub addr: SocketAddr,
}

/// The harness. See the crate docs.
#[derive(Debug)]
pub struct Pair {
    /// The server machine.
    pub server: Server,
    /// The clients, in the order they were added.
    pub peers: Vec<Peer>,
    links: Vec<Link>,
    by_conn: BTreeMap<ConnId, usize>,
    latency: Duration,
    start: Now,
    now: Now,
    /// Every output as a line, in order.
    pub transcript: Vec<String>,
    /// Record `Transmit`s in the transcript too (off by default: events tell the story).
    pub record_transmits: bool,
    /// Record per-heartbeat lines (`Sent`, `Acked`, `Heartbeat`) too (on by default).
    pub record_heartbeats: bool,
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
        Self {
            server: Server::new(Arc::new(config)),
            peers: Vec::new(),
            links: Vec::new(),
            by_conn: BTreeMap::new(),
            latency,
            start,
            now: start,
            transcript: Vec::new(),
            record_transmits: false,
            record_heartbeats: true,
        }
    }

    /// Adds a client that starts now. Returns its index.
    pub fn add_client(&mut self, name: &str, config: ClientConfig) -> usize {
        let i = self.peers.len();
        let client = Client::new(config, self.now);
        let addr = SocketAddr::from(([10, 0, 0, 1 + i as u8], 40_000 + i as u16));
        self.peers.push(Peer {
            name: name.to_owned(),
            client,
            link: None,
            reachable: true,
            addr,
        });
        self.drain();
        i
    }

    /// The current time.
    pub fn now(&self) -> Now {
        self.now
    }

    /// Time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now.mono - self.start.mono
    }

    fn stamp(&self) -> String {
        format!("t+{}", fmt_ms(self.elapsed()))
    }

    fn log(&mut self, who: &str, what: String) {
        let line = format!("{} {who} {what}", self.stamp());
        self.transcript.push(line);
    }

    /// The transcript as one string, for snapshots.
    pub fn render(&self) -> String {
        let mut s = self.transcript.join("\n");
        s.push('\n');
        s
    }

    /// The first transcript line containing `needle`; panics with the whole transcript if none.
    pub fn line(&self, needle: &str) -> &str {
        let found = self.transcript.iter().find(|l| l.contains(needle));
        found.unwrap_or_else(|| panic!("no {needle:?} in\n{}", self.render()))
    }

    /// Sets the mode of client `i`'s current link, in one direction or both.
    pub fn set_link(&mut self, i: usize, up: Option<PipeMode>, down: Option<PipeMode>) {
        let Some(l) = self.peers[i].link else { return };
        let link = &mut self.links[l];
        if let Some(m) = up {
            link.up.mode = m;
            if m == PipeMode::Dropping {
                link.up.queue.clear();
            }
        }
        if let Some(m) = down {
            link.down.mode = m;
            if m == PipeMode::Dropping {
                link.down.queue.clear();
            }
        }
        self.log(
            "net",
            format!("link {} up={up:?} down={down:?}", self.peers[i].name),
        );
    }

    /// Releases a held link: everything held is delivered at once, as one read.
    pub fn release(&mut self, i: usize) {
        let now = self.now.mono;
        if let Some(l) = self.peers[i].link {
            let link = &mut self.links[l];
            for pipe in [&mut link.up, &mut link.down] {
                if pipe.mode == PipeMode::Held {
                    pipe.mode = PipeMode::Open;
                    for (at, _) in pipe.queue.iter_mut() {
                        *at = (*at).max(now);
                    }
                }
            }
        }
        self.log("net", format!("release {}", self.peers[i].name));
    }

    /// Runs until `elapsed() == until` (from the start), processing everything due on the way.
    pub fn run_until(&mut self, until: Duration) {
        let end = self.start.mono + until;
        while let Some(next) = self.next_event() {
            if next > end {
                break;
            }
            self.advance_to(next);
            self.step_now();
        }
        self.advance_to(end.max(self.now.mono));
        self.step_now();
    }

    /// Runs for `d` more.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.elapsed() + d;
        self.run_until(until);
    }

    fn advance_to(&mut self, t: Instant) {
        if t > self.now.mono {
            let d = t - self.now.mono;
            self.now = self.now.advanced(d);
        }
    }

    fn next_event(&self) -> Option<Instant> {
        let machines = self
            .peers
            .iter()
            .filter_map(|p| p.client.poll_timeout())
            .chain(self.server.poll_timeout());
        let pipes = self
            .links
            .iter()
            .flat_map(|l| [l.up.next_due(), l.down.next_due()])
            .flatten();
        machines.chain(pipes).min()
    }

    /// Delivers everything due now and fires due timers, until nothing more is due now.
    fn step_now(&mut self) {
        loop {
            let now = self.now;
            let mut progressed = false;
            for l in 0..self.links.len() {
                let (bytes, eof) = self.links[l].up.take_due(now.mono);
                let conn = self.links[l].conn;
                if !bytes.is_empty() && !self.links[l].server_gone {
                    self.server.handle_input(now, conn, &bytes);
                    progressed = true;
                }
                if eof && !self.links[l].server_gone {
                    self.server.handle_eof(now, conn);
                    progressed = true;
                }
                let (bytes, eof) = self.links[l].down.take_due(now.mono);
                if let Some(i) = self.peers.iter().position(|p| p.link == Some(l)) {
                    if !bytes.is_empty() {
                        self.peers[i].client.handle_input(now, &bytes);
                        progressed = true;
                    }
                    if eof {
                        self.peers[i].client.handle_eof(now);
                        self.peers[i].link = None;
                        progressed = true;
                    }
                }
                self.drain();
            }
            if self.server.poll_timeout().is_some_and(|t| t <= now.mono) {
                self.server.handle_timeout(now);
                progressed = true;
            }
            for i in 0..self.peers.len() {
                if self.peers[i]
                    .client
                    .poll_timeout()
                    .is_some_and(|t| t <= now.mono)
                {
                    self.peers[i].client.handle_timeout(now);
                    progressed = true;
                }
            }
            self.drain();
            if !progressed {
                break;
            }
        }
    }

    /// Drains every machine's outputs until all are quiet.
    fn drain(&mut self) {
        loop {
            let mut any = false;
            while let Some(out) = self.server.poll_output() {
                any = true;
                self.on_server_output(out);
            }
            for i in 0..self.peers.len() {
                while let Some(out) = self.peers[i].client.poll_output() {
                    any = true;
                    self.on_client_output(i, out);
                }
            }
            if !any {
                break;
            }
        }
    }

    fn on_server_output(&mut self, out: server::Output) {
        let at = self.now.mono + self.latency;
        match out {
            server::Output::Transmit { conn, bytes } => {
                if self.record_transmits {
                    self.log("server", format!("{conn} tx {}", show(&bytes)));
                }
                if let Some(&l) = self.by_conn.get(&conn) {
                    self.links[l].down.send(at, Delivery::Bytes(bytes));
                }
            }
            server::Output::Disconnect { conn, reason } => {
                self.log("server", format!("{conn} close ({reason})"));
                if let Some(&l) = self.by_conn.get(&conn) {
                    self.links[l].server_gone = true;
                    self.links[l].down.send(at, Delivery::Eof);
                }
            }
            server::Output::Event(e) => {
                if self.record_heartbeats || !matches!(e, server::Event::Heartbeat { .. }) {
                    self.log("server", e.to_string());
                }
            }
        }
    }

    fn on_client_output(&mut self, i: usize, out: client::Output) {
        let name = self.peers[i].name.clone();
        let at = self.now.mono + self.latency;
        match out {
            client::Output::Connect => {
                if self.peers[i].reachable {
                    let conn = self.server.accept(self.now, self.peers[i].addr);
                    let l = self.links.len();
                    self.links.push(Link {
                        conn,
                        up: Pipe::new(),
                        down: Pipe::new(),
                        server_gone: false,
                    });
                    self.by_conn.insert(conn, l);
                    self.peers[i].link = Some(l);
                    self.log(&name, format!("connect -> server {conn}"));
                    self.peers[i].client.handle_connected(self.now);
                } else {
                    self.log(&name, "connect -> refused".to_owned());
                    self.peers[i]
                        .client
                        .handle_connect_failed(self.now, "connection refused");
                }
            }
            client::Output::Transmit(bytes) => {
                if self.record_transmits {
                    self.log(&name, format!("tx {}", show(&bytes)));
                }
                if let Some(l) = self.peers[i].link {
                    self.links[l].up.send(at, Delivery::Bytes(bytes));
                }
            }
            client::Output::Disconnect { reason } => {
                self.log(&name, format!("close ({reason})"));
                if let Some(l) = self.peers[i].link.take() {
                    self.links[l].up.send(at, Delivery::Eof);
                }
            }
            client::Output::Event(e) => {
                let per_beat =
                    matches!(e, client::Event::Sent { .. } | client::Event::Acked { .. });
                if self.record_heartbeats || !per_beat {
                    self.log(&name, e.to_string());
                }
            }
        }
    }

    /// Crashes client `i` silently: its machine stops and nothing reaches the server (no FIN).
    pub fn crash_silently(&mut self, i: usize) {
        if let Some(l) = self.peers[i].link.take() {
            self.links[l].up.mode = PipeMode::Dropping;
            self.links[l].up.queue.clear();
        }
        let now = self.now;
        self.peers[i].client.close(now);
        while self.peers[i].client.poll_output().is_some() {}
        self.log("net", format!("silent crash {}", self.peers[i].name));
    }
}

fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .trim_end()
        .replace('\n', " | ")
}
