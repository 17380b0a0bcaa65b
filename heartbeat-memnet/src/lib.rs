//! An event-driven in-memory network: the real `heartbeat-core` [`Server`] and [`Client`]
//! machines joined by modelled TCP links, with a clock that jumps from one due thing to the
//! next (no tokio, no ticks, no sleeping).
//!
//! Both in-memory users run on it: the QoS engine (`heartbeat_sim::qos::engine`, simulated
//! weeks) and the core-level tests' `Pair` harness (`tests/src/lib.rs`); neither needs turmoil,
//! tokio or the simulator for it. What it models of the network
//! follows turmoil 0.7.2, which the simulator's scenario runs use (`tests/tests/qos/agreement.rs`
//! checks the two against each other):
//!
//! - **Latency**: drawn per segment from a seeded RNG per client and direction
//!   ([`Latency::sample`]: `min + (max - min) * Exp(5)`, whole milliseconds, clamped to `max`:
//!   turmoil's formula; a fixed latency draws nothing). TCP keeps order: a segment never
//!   overtakes the previous one on its link, so it arrives at `max(sent + latency, previous
//!   arrival)`. Everything due at one instant on one pipe is handed over as one read.
//! - **Connect**: a SYN with the link's latency; the server accepts when it arrives, and the
//!   client is connected at that instant (turmoil's SYN-ACK is not a network message). A crashed
//!   server refuses when the SYN arrives (the SYN waits for the restarted host, which is not
//!   listening yet), a link cut toward the server at once; a SYN held or lost fails after
//!   [`CONNECT_TIMEOUT`], as `SimConnector` does.
//! - **Partition** ([`Net::partition`]): segments in flight are dropped and the link is stuck for
//!   good, even after the repair (no retransmission in turmoil 0.7.2): both sides must time
//!   out. One direction can be cut alone (quinn's `idle_timeout` test drops the acks).
//! - **Hold / release** ([`Net::hold`], [`Net::release`]): segments wait and are delivered at
//!   once on release, in order, as one read.
//! - **Crash** ([`Net::crash_client`], [`Net::crash_server`]): a clean crash sends FIN after
//!   what is in flight; a silent crash drops what is in flight and sends nothing (turmoil:
//!   partition, crash, repair).
//!
//! # The order of one instant
//! This is the one place the order of things due at the same instant is decided. [`Net::step`]
//! does everything due at the current instant, in this order:
//!
//! 1. **Links**, in the order they were opened. For each: its client-to-server pipe (everything
//!    due as one read: a SYN is accepted, the bytes are one `handle_input`, a FIN is one
//!    `handle_eof`), then its server-to-client pipe (the connect's answer, or the bytes as one
//!    read, then a FIN), then its connect timeout.
//! 2. **Client timers**, clients in index order: each due `handle_timeout`.
//! 3. Steps 1 and 2 again, until a round of both does nothing.
//! 4. Only then **the server's timer**: its due `handle_timeout`, once; if it fired, back to 1.
//!
//! A machine's outputs are drained right after the input or timer that caused them, and reach
//! the [`Observer`] in the order the machine emitted them, before the network carries them out.
//! So a heartbeat and a liveness check due at the same instant are judged heartbeat first (as
//! the QoS replay of the arrivals assumes), and client timers fire before the server's.
//!
//! The caller's own commands (faults, process starts and stops) for an instant come before all
//! of it: [`Net::run_before`] stops with the clock at the instant and nothing of it done yet.
//! [`Net::run_until`] does the instant too, so commands issued after it come after everything
//! due at that instant.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod deliver;
mod faults;
mod latency;
mod link;
mod pipe;
pub mod seed;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use heartbeat_core::client::{self, Client};
use heartbeat_core::server::{self, Server};
use heartbeat_core::{ConnId, Now};

pub use latency::Latency;
use link::{Host, Link};
pub use link::{LinkId, Way};

pub use heartbeat_core::config::CONNECT_TIMEOUT;

/// Where a connection came from: its client and the process that opened it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The client (index in the order of [`Net::add_client`]).
    pub client: usize,
    /// The client's process that opened it: 0 for the first one started.
    pub process: u32,
    /// The link.
    pub link: LinkId,
}

/// What the network itself did, as opposed to the machines' outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetEvent {
    /// A SYN reached the server, which accepted it as `conn`. The client is told it is connected
    /// right after (its `handle_connected`).
    Accepted {
        /// The client.
        client: usize,
        /// The server's id for the connection.
        conn: ConnId,
    },
    /// A connect failed: the link is cut toward the server (at once), or the SYN reached a server
    /// that was not listening. The client's `handle_connect_failed` follows.
    Refused {
        /// The client.
        client: usize,
    },
    /// A connect got no answer within [`CONNECT_TIMEOUT`]. The client's
    /// `handle_connect_failed` follows.
    TimedOut {
        /// The client.
        client: usize,
    },
}

/// What a user of the network hears: every machine output, before the network carries it out,
/// and what the network itself did. Every method has an empty default.
pub trait Observer {
    /// Client `client` emitted `out`.
    fn on_client_output(&mut self, net: &Net, client: usize, out: &client::Output) {
        let _ = (net, client, out);
    }

    /// The network did something on its own.
    fn on_net_event(&mut self, net: &Net, event: NetEvent) {
        let _ = (net, event);
    }

    /// The server emitted `out`.
    fn on_server_output(&mut self, net: &Net, out: &server::Output) {
        let _ = (net, out);
    }

    /// The server's outputs for one input are all reported: one read, one EOF, one accept or
    /// one timer. The heartbeats of one read end here.
    fn on_server_drained(&mut self, net: &Net) {
        let _ = net;
    }
}

/// The observer that hears nothing.
impl Observer for () {}

/// The network: an optional [`Server`] (it can crash and restart), client hosts each with an
/// optional [`Client`], the links between them, and the clock. See the module docs for the
/// model and the order of one instant.
#[derive(Debug)]
pub struct Net {
    server: Option<Server>,
    /// Server processes started so far.
    server_processes: u32,
    hosts: Vec<Host>,
    /// The links that may still carry something, in the order they were opened (so by id).
    links: Vec<Link>,
    next_link: u64,
    /// The current server process's connections.
    conns: BTreeMap<ConnId, LinkId>,
    origin: Now,
    now: Now,
    /// Scratch space to join several segments due at once into one read.
    joined: Vec<u8>,
}

impl Net {
    /// A network with no server and no client, its clock at `origin`.
    pub fn new(origin: Now) -> Self {
        Self {
            server: None,
            server_processes: 0,
            hosts: Vec::new(),
            links: Vec::new(),
            next_link: 1,
            conns: BTreeMap::new(),
            origin,
            now: origin,
            joined: Vec::new(),
        }
    }

    // ---- getters ----

    /// The current time.
    pub fn now(&self) -> Now {
        self.now
    }

    /// The time [`Net::new`] started the clock at.
    pub fn origin(&self) -> Now {
        self.origin
    }

    /// Time since the origin.
    pub fn elapsed(&self) -> Duration {
        self.now.mono - self.origin.mono
    }

    /// The server, while it runs.
    pub fn server(&self) -> Option<&Server> {
        self.server.as_ref()
    }

    /// Server processes started so far.
    pub fn server_processes(&self) -> u32 {
        self.server_processes
    }

    /// The number of client hosts.
    pub fn client_count(&self) -> usize {
        self.hosts.len()
    }

    /// Client `i`'s process: `None` before its first start and after a crash.
    pub fn client(&self, i: usize) -> Option<&Client> {
        self.hosts[i].machine.as_ref()
    }

    /// True while client `i`'s process runs and has not given up.
    pub fn is_alive(&self, i: usize) -> bool {
        self.hosts[i].is_alive()
    }

    /// Processes started so far on client `i`'s host.
    pub fn processes(&self, i: usize) -> u32 {
        self.hosts[i].processes
    }

    /// True while client `i`'s path is cut in at least one direction.
    pub fn is_cut(&self, i: usize) -> bool {
        self.hosts[i].cut.any()
    }

    /// True while client `i`'s path is held in at least one direction.
    pub fn is_held(&self, i: usize) -> bool {
        self.hosts[i].held.any()
    }

    /// Where the current server's connection `conn` came from; `None` for a connection it does
    /// not have (or that is gone from the network).
    pub fn origin_of(&self, conn: ConnId) -> Option<Origin> {
        let link = &self.links[self.conn_link(conn)?];
        Some(Origin {
            client: link.client,
            process: link.process,
            link: link.id,
        })
    }

    /// When the next thing is due: a segment, a connect timeout or a machine's timer.
    pub fn next_due(&self) -> Option<Instant> {
        let server = self.server.as_ref().and_then(Server::poll_timeout);
        let clients = self
            .hosts
            .iter()
            .filter_map(|h| h.machine.as_ref().and_then(Client::poll_timeout));
        let mut next = clients.chain(server).min();
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        for link in &self.links {
            // Nothing reaches a crashed server: it waits for the restart.
            if self.server.is_some() {
                consider(link.up.due());
            }
            consider(link.down.due());
            consider(link.connecting_until);
        }
        next
    }

    // ---- the step loop ----

    /// Does everything due before `t`, instant by instant, then moves the clock to `t` (nothing
    /// due at `t` is done yet: the caller's commands for `t` come first).
    pub fn run_before<O: Observer>(&mut self, t: Instant, obs: &mut O) {
        while let Some(next) = self.next_due().filter(|next| *next < t) {
            self.advance_to(next);
            self.step(obs);
        }
        self.advance_to(t);
    }

    /// Does everything due up to and including `t`, leaving the clock at `t`.
    pub fn run_until<O: Observer>(&mut self, t: Instant, obs: &mut O) {
        self.run_before(t, obs);
        self.step(obs);
    }

    /// Does everything due at the current instant, in the order the module docs give.
    pub fn step<O: Observer>(&mut self, obs: &mut O) {
        let now = self.now.mono;
        loop {
            let mut progressed = false;
            // Links opened during the round (a client timer's reconnect) are visited in it too.
            let mut k = 0;
            while k < self.links.len() {
                progressed |= self.deliver_up(k, obs);
                progressed |= self.deliver_down(k, obs);
                if self.links[k].connecting_until.is_some_and(|t| t <= now) {
                    self.connect_timed_out(k, obs);
                    progressed = true;
                }
                k += 1;
            }
            for i in 0..self.hosts.len() {
                let due = self.hosts[i]
                    .machine
                    .as_ref()
                    .and_then(Client::poll_timeout)
                    .is_some_and(|t| t <= now);
                if due {
                    let at = self.now;
                    if let Some(m) = self.hosts[i].machine.as_mut() {
                        m.handle_timeout(at);
                    }
                    self.drain_client(i, obs);
                    progressed = true;
                }
            }
            if progressed {
                continue;
            }
            let due = self
                .server
                .as_ref()
                .and_then(Server::poll_timeout)
                .is_some_and(|t| t <= now);
            if !due {
                break;
            }
            let at = self.now;
            if let Some(s) = self.server.as_mut() {
                s.handle_timeout(at);
            }
            self.drain_server(obs);
        }
        let before = self.links.len();
        self.links.retain(|l| !l.is_finished());
        if self.links.len() < before {
            let links = &self.links;
            self.conns
                .retain(|_, id| links.binary_search_by_key(id, |l| l.id).is_ok());
        }
    }

    fn advance_to(&mut self, t: Instant) {
        if t > self.now.mono {
            self.now = self.now.advanced(t - self.now.mono);
        }
    }

    // ---- lookups ----

    /// The index of link `id` in `links`, if it is still there.
    fn link_index(&self, id: LinkId) -> Option<usize> {
        self.links.binary_search_by_key(&id, |l| l.id).ok()
    }

    /// The index of the link of the current server's connection `conn`.
    fn conn_link(&self, conn: ConnId) -> Option<usize> {
        self.link_index(*self.conns.get(&conn)?)
    }

    /// Client `i`'s current link, if open.
    fn current_link(&self, i: usize) -> Option<usize> {
        self.link_index(self.hosts[i].link?)
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use heartbeat_core::ClientId;
    use heartbeat_core::config::{Backoff, ClientConfig, ServerConfig};
    use heartbeat_core::detector::{DetectorConfig, DetectorKind};
    use heartbeat_core::liveness::Liveness;
    use heartbeat_core::server::Event;
    use heartbeat_core::{ConnId, UnixTime};

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Every transition with its time, and the network's own events.
    #[derive(Default)]
    struct Seen {
        transitions: Vec<(Duration, Liveness, Liveness)>,
        net: Vec<(Duration, NetEvent)>,
    }

    impl Observer for Seen {
        fn on_net_event(&mut self, net: &Net, event: NetEvent) {
            self.net.push((net.elapsed(), event));
        }

        fn on_server_output(&mut self, net: &Net, out: &server::Output) {
            if let server::Output::Event(Event::Transition { from, to, .. }) = out {
                self.transitions.push((net.elapsed(), *from, *to));
            }
        }
    }

    /// A server with the fixed detector (suspect 1 s + half of a 2 s grace after the last
    /// heartbeat) and one client sending every second over a 5 ms link, started at 0.
    fn net() -> (Net, Seen) {
        #[allow(clippy::disallowed_methods)] // an arbitrary origin; only offsets from it matter
        let origin = Now {
            mono: Instant::now(),
            unix: UnixTime::from_duration(Duration::from_secs(1_700_000_000)),
        };
        let mut net = Net::new(origin);
        let config = ServerConfig::default().detector(DetectorConfig::new(DetectorKind::Fixed));
        net.start_server(Server::new(Arc::new(config)));
        let addr = SocketAddr::from(([10, 0, 0, 1], 40_000));
        let i = net.add_client(addr, Latency::Fixed(ms(5)), 0, 0);
        let config = ClientConfig::new(ClientId::new("a").unwrap(), ms(1000)).unwrap();
        let mut seen = Seen::default();
        net.start_client(i, config, &mut seen);
        (net, seen)
    }

    /// The connect costs one latency; heartbeats go at 5 + 1000 k ms and arrive 5 ms later.
    /// The link is held from 2 s, so the last heartbeat arrives at 1010 ms and the server's
    /// check is due at 1010 + 1000 + 1000 = 3010 ms.
    #[test]
    fn a_check_due_alone_fires_at_its_instant() {
        let (mut net, mut seen) = net();
        let origin = net.origin().mono;
        net.run_until(origin + ms(2000), &mut seen);
        net.hold(0, Way::Up);
        net.run_until(origin + ms(3010), &mut seen);
        let accepted = NetEvent::Accepted {
            client: 0,
            conn: ConnId(1),
        };
        assert_eq!(seen.net, [(ms(5), accepted)]);
        assert_eq!(
            seen.transitions,
            [(ms(3010), Liveness::Up, Liveness::Suspect)]
        );
    }

    /// The same check, with the held heartbeats released to arrive at exactly 3010 ms: arrivals
    /// come before the server's timer at one instant, so the check finds them and nothing
    /// changes. (Timer first would give `up -> suspect -> up` at 3010 ms.)
    #[test]
    fn arrivals_due_with_a_check_are_read_before_it() {
        let (mut net, mut seen) = net();
        let origin = net.origin().mono;
        net.run_until(origin + ms(2000), &mut seen);
        net.hold(0, Way::Up);
        net.run_before(origin + ms(3010), &mut seen);
        net.release(0);
        net.run_until(origin + ms(5000), &mut seen);
        assert_eq!(seen.transitions, []);
        let received = net.server().unwrap().clients().next().unwrap().received();
        assert_eq!(
            received, 5,
            "heartbeats 3 and 4 arrived together at 3010 ms"
        );
    }

    /// A cut toward the server refuses connects at once; a cut stream stays stuck after the
    /// repair (neither end hears anything), so only a new connection carries heartbeats again.
    #[test]
    fn a_cut_refuses_connects_and_a_cut_stream_stays_stuck() {
        let (mut net, mut seen) = net();
        let origin = net.origin().mono;
        let backoff = Backoff::new(ms(100), ms(400)).unwrap();
        let config = ClientConfig::new(ClientId::new("b").unwrap(), ms(1000))
            .unwrap()
            .reconnect(Some(backoff));
        let b = net.add_client(
            SocketAddr::from(([10, 0, 0, 2], 40_000)),
            Latency::Fixed(ms(5)),
            0,
            0,
        );
        net.start_client(b, config, &mut seen);
        net.run_until(origin + ms(1500), &mut seen);
        net.partition(b, Way::Both);
        net.run_until(origin + ms(8000), &mut seen);
        // b's last ack came at 1015 ms: it gives up on the stream 5 s later, then every
        // connect is refused at once.
        let refused: Vec<Duration> = (seen.net.iter())
            .filter(|(_, e)| *e == NetEvent::Refused { client: b })
            .map(|(at, _)| *at)
            .collect();
        assert!(refused.len() >= 2, "{:?}", seen.net);
        assert!(
            refused[0] > ms(6015) && refused[0] < ms(6015) + ms(400),
            "{refused:?}"
        );
        net.repair(b);
        net.run_until(origin + ms(12_000), &mut seen);
        let accepted: Vec<_> = (seen.net.iter())
            .filter(|(at, e)| {
                *at > ms(8000) && matches!(e, NetEvent::Accepted { client, .. } if *client == b)
            })
            .collect();
        assert_eq!(accepted.len(), 1, "{:?}", seen.net);
        let key = heartbeat_core::ClientKey::Id(ClientId::new("b").unwrap());
        let st = net.server().unwrap().client(&key).unwrap();
        // Heartbeats 1 and 2 before the cut, the new connection's after it, one gap between.
        let last = net.client(b).unwrap().last_sent().unwrap();
        assert_eq!(st.received() + st.missed(), last.0, "{st:?}");
        assert_eq!(st.missed_ranges().count(), 1, "{st:?}");
        assert!(st.received() > 2, "{st:?}");
        assert!(net.client(b).unwrap().is_connected());
    }
}
