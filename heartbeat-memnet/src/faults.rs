//! The network's commands: hosts and processes coming and going, and the faults on a client's
//! path to the server. Each takes effect at the current instant (see the module docs for where
//! that is in the order of the instant).

use std::net::SocketAddr;

use heartbeat_core::Now;
use heartbeat_core::client::Client;
use heartbeat_core::config::ClientConfig;
use heartbeat_core::server::Server;

use crate::Latency;
use crate::link::{Host, Way, Ways};
use crate::pipe::Segment;
use crate::{Net, Observer};

impl Net {
    /// Adds a client host at `addr` whose segments take `latency`, drawn from RNGs seeded with
    /// `up_seed` (client to server) and `down_seed`. No process runs on it yet. Returns its
    /// index.
    pub fn add_client(
        &mut self,
        addr: SocketAddr,
        latency: Latency,
        up_seed: u64,
        down_seed: u64,
    ) -> usize {
        self.hosts
            .push(Host::new(addr, latency, up_seed, down_seed));
        self.hosts.len() - 1
    }

    /// Sets the latency of client `i`'s path from now on.
    pub fn set_latency(&mut self, i: usize, latency: Latency) {
        self.hosts[i].latency = latency;
    }

    // ---- processes ----

    /// Starts a server process. SYNs that waited for a crashed server reach the new one before
    /// it listens, and are refused (turmoil delivers them to the restarted host, which has no
    /// listener yet).
    pub fn start_server(&mut self, server: Server) {
        debug_assert!(self.server.is_none(), "a server already runs");
        self.server = Some(server);
        self.server_processes += 1;
        self.conns.clear();
        if self.server_processes > 1 {
            let now = self.now.mono;
            for link in &mut self.links {
                if link.up.take_due_syn(now) {
                    link.down.push(now, Segment::Refused);
                }
            }
        }
    }

    /// Crashes the server process, if one runs: cleanly (each open connection gets a FIN after
    /// what is in flight) or silently (what is in flight is lost, nothing is sent, and its
    /// links are stuck for good: the clients must time out).
    pub fn crash_server(&mut self, silent: bool) {
        if self.server.take().is_none() {
            return;
        }
        let current = self.server_processes;
        for link in &mut self.links {
            if link.server_process != current || !link.server_open {
                continue;
            }
            link.server_open = false;
            if silent {
                link.up.cut();
                link.down.cut();
            } else if link.client_open && !link.down.cut {
                let at = self.now.mono + self.hosts[link.client].draw_down();
                link.down.push(at, Segment::Fin);
            }
        }
    }

    /// Starts a new process on client `i`'s host with `config` (a process still there is
    /// crashed cleanly first). Its first outputs (a connect) reach `obs`.
    pub fn start_client<O: Observer>(&mut self, i: usize, config: ClientConfig, obs: &mut O) {
        if self.hosts[i].machine.is_some() {
            self.crash_client(i, false);
        }
        let host = &mut self.hosts[i];
        host.processes += 1;
        host.machine = Some(Client::new(config, self.now));
        self.drain_client(i, obs);
    }

    /// Stops client `i`'s process cleanly: it says goodbye and closes ([`Client::close`]).
    pub fn close_client<O: Observer>(&mut self, i: usize, obs: &mut O) {
        self.command_client(i, obs, Client::close);
    }

    /// Gives client `i`'s process a command now (such as [`Client::pause`] or
    /// [`Client::resume`]) and carries out what it asks for. Nothing happens when no process
    /// runs there.
    pub fn command_client<O: Observer>(
        &mut self,
        i: usize,
        obs: &mut O,
        command: impl FnOnce(&mut Client, Now),
    ) {
        let now = self.now;
        if let Some(m) = self.hosts[i].machine.as_mut() {
            command(m, now);
        }
        self.drain_client(i, obs);
    }

    /// Crashes client `i`'s process: cleanly (its runtime is dropped, so a FIN follows what is
    /// in flight) or silently (the host dies: what is in flight is lost, nothing is sent, and
    /// the server sees a half-open connection).
    pub fn crash_client(&mut self, i: usize, silent: bool) {
        self.hosts[i].machine = None;
        let id = self.hosts[i].link.take();
        if let Some(k) = id.and_then(|id| self.link_index(id)) {
            if silent {
                self.links[k].up.cut();
                self.links[k].down.cut();
            }
            self.close_client_side(k, !silent);
        }
    }

    // ---- faults on a client's path ----

    /// Holds client `i`'s path in `way`: segments wait (connects too) until [`Net::release`].
    /// Links opened meanwhile are held as well.
    pub fn hold(&mut self, i: usize, way: Way) {
        self.hosts[i].held.set(way);
        for link in self.links.iter_mut().filter(|l| l.client == i) {
            link.up.held |= way.has_up();
            link.down.held |= way.has_down();
        }
    }

    /// Ends every hold on client `i`'s path: everything held is delivered now, in order, each
    /// pipe's as one read.
    pub fn release(&mut self, i: usize) {
        let now = self.now.mono;
        self.hosts[i].held = Ways::default();
        for link in self.links.iter_mut().filter(|l| l.client == i) {
            link.up.release(now);
            link.down.release(now);
        }
    }

    /// Cuts client `i`'s path in `way`: segments in flight are lost, its links stay stuck for
    /// good in that way (no retransmission), and while the client-to-server way is cut a
    /// connect is refused at once. Links opened meanwhile are cut in that way as well.
    pub fn partition(&mut self, i: usize, way: Way) {
        self.hosts[i].cut.set(way);
        for link in self.links.iter_mut().filter(|l| l.client == i) {
            if way.has_up() {
                link.up.cut();
            }
            if way.has_down() {
                link.down.cut();
            }
        }
    }

    /// Repairs client `i`'s path: new links work again. Links cut before stay stuck.
    pub fn repair(&mut self, i: usize) {
        self.hosts[i].cut = Ways::default();
    }
}
