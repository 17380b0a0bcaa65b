//! Delivery: what is due on a link reaches its end, and what the machines emit goes onto the
//! links. The order in which [`Net::step`] calls these is the module's rule (module docs).

use heartbeat_core::client::{self, Client};
use heartbeat_core::server::{self, Server};

use crate::link::{Link, LinkId};
use crate::pipe::{Pipe, Segment};
use crate::{CONNECT_TIMEOUT, Net, NetEvent, Observer};

impl Net {
    // ---- delivery ----

    /// Delivers what is due on link `k`'s client-to-server pipe: a SYN, or one read and a FIN.
    pub(super) fn deliver_up<O: Observer>(&mut self, k: usize, obs: &mut O) -> bool {
        let now = self.now;
        let link = &mut self.links[k];
        if self.server.is_none() || link.up.due().is_none_or(|t| t > now.mono) {
            return false;
        }
        let read = link.up.take_due(now.mono, &mut self.joined);
        if matches!(read.end, Some(Segment::Syn)) {
            self.accept(k, obs);
            return true;
        }
        let link = &self.links[k];
        let open = link.server_process == self.server_processes && link.server_open;
        let Some(conn) = link.conn.filter(|_| open) else {
            return true; // for a server that closed its end or is gone: discarded
        };
        let bytes = read.bytes(&self.joined);
        if !bytes.is_empty() {
            if let Some(s) = self.server.as_mut() {
                s.handle_input(now, conn, bytes);
            }
            self.drain_server(obs);
        }
        if read.is_fin() {
            if let Some(s) = self.server.as_mut() {
                s.handle_eof(now, conn);
            }
            self.drain_server(obs);
        }
        true
    }

    /// Delivers what is due on link `k`'s server-to-client pipe: the connect's answer, or one
    /// read and a FIN. Only the process whose link it is hears it.
    pub(super) fn deliver_down<O: Observer>(&mut self, k: usize, obs: &mut O) -> bool {
        let now = self.now;
        let link = &mut self.links[k];
        if link.down.due().is_none_or(|t| t > now.mono) {
            return false;
        }
        let read = link.down.take_due(now.mono, &mut self.joined);
        let i = link.client;
        let current = self.hosts[i].link == Some(link.id) && link.client_open;
        if !current {
            return true;
        }
        match read.end {
            Some(Segment::SynAck | Segment::Refused) if link.connecting_until.is_none() => {}
            Some(Segment::SynAck) => {
                link.connecting_until = None;
                if let Some(m) = self.hosts[i].machine.as_mut() {
                    m.handle_connected(now);
                }
                self.drain_client(i, obs);
            }
            Some(Segment::Refused) => {
                link.connecting_until = None;
                link.client_open = false;
                self.hosts[i].link = None;
                obs.on_net_event(self, NetEvent::Refused { client: i });
                if let Some(m) = self.hosts[i].machine.as_mut() {
                    m.handle_connect_failed(now, "connection refused");
                }
                self.drain_client(i, obs);
            }
            _ => {
                let fin = read.is_fin();
                if fin {
                    link.client_open = false;
                    self.hosts[i].link = None;
                }
                if let Some(m) = self.hosts[i].machine.as_mut() {
                    let bytes = read.bytes(&self.joined);
                    if !bytes.is_empty() {
                        m.handle_input(now, bytes);
                    }
                    if fin {
                        m.handle_eof(now);
                    }
                }
                self.drain_client(i, obs);
            }
        }
        true
    }

    /// A SYN arrives on link `k`: the server accepts it and answers in-process, not over the
    /// network (turmoil), so the client learns it is connected at once: a connect costs one
    /// latency.
    fn accept<O: Observer>(&mut self, k: usize, obs: &mut O) {
        let now = self.now;
        let i = self.links[k].client;
        let peer = self.hosts[i].addr;
        let Some(server) = self.server.as_mut() else {
            return;
        };
        let conn = server.accept(now, peer);
        let link = &mut self.links[k];
        let replaced = self.conns.insert(conn, link.id);
        debug_assert!(replaced.is_none(), "the server reused {conn}");
        link.conn = Some(conn);
        link.server_process = self.server_processes;
        link.server_open = true;
        link.down.push(now.mono, Segment::SynAck);
        obs.on_net_event(self, NetEvent::Accepted { client: i, conn });
        self.drain_server(obs);
    }

    pub(super) fn connect_timed_out<O: Observer>(&mut self, k: usize, obs: &mut O) {
        let link = &mut self.links[k];
        link.connecting_until = None;
        link.client_open = false;
        let i = link.client;
        if self.hosts[i].link == Some(link.id) {
            self.hosts[i].link = None;
            obs.on_net_event(self, NetEvent::TimedOut { client: i });
            let now = self.now;
            if let Some(m) = self.hosts[i].machine.as_mut() {
                m.handle_connect_failed(now, "connect timed out");
            }
            self.drain_client(i, obs);
        }
    }

    // ---- machine outputs ----

    /// Reports and carries out the server's outputs until it has none.
    pub(super) fn drain_server<O: Observer>(&mut self, obs: &mut O) {
        while let Some(out) = self.server.as_mut().and_then(Server::poll_output) {
            obs.on_server_output(self, &out);
            match out {
                server::Output::Transmit { conn, bytes } => {
                    let Some(k) = self.conn_link(conn) else {
                        continue;
                    };
                    let link = &self.links[k];
                    if link.down.cut || !link.client_open {
                        continue;
                    }
                    let at = self.now.mono + self.hosts[link.client].draw_down();
                    self.links[k].down.push(at, Segment::Bytes(bytes));
                }
                server::Output::Disconnect { conn, .. } => {
                    let Some(k) = self.conn_link(conn) else {
                        continue;
                    };
                    let link = &mut self.links[k];
                    if !link.server_open {
                        continue;
                    }
                    link.server_open = false;
                    if !link.down.cut && link.client_open {
                        let at = self.now.mono + self.hosts[link.client].draw_down();
                        link.down.push(at, Segment::Fin);
                    }
                }
                server::Output::Event(_) => {}
            }
        }
        obs.on_server_drained(self);
    }

    /// Reports and carries out client `i`'s outputs until it has none.
    pub(super) fn drain_client<O: Observer>(&mut self, i: usize, obs: &mut O) {
        while let Some(out) = self.hosts[i].machine.as_mut().and_then(Client::poll_output) {
            obs.on_client_output(self, i, &out);
            match out {
                client::Output::Connect => self.connect(i, obs),
                client::Output::Transmit(bytes) => {
                    let Some(k) = self.current_link(i) else {
                        continue;
                    };
                    let link = &mut self.links[k];
                    if link.up.cut || !link.client_open {
                        continue;
                    }
                    let at = self.now.mono + self.hosts[i].draw_up();
                    link.up.push(at, Segment::Bytes(bytes));
                }
                client::Output::Disconnect { .. } => {
                    let id = self.hosts[i].link.take();
                    if let Some(k) = id.and_then(|id| self.link_index(id)) {
                        self.close_client_side(k, true);
                    }
                }
                client::Output::Event(_) => {}
            }
        }
    }

    /// Client `i` opens a new link with a SYN, or is refused at once if its path to the server
    /// is cut.
    fn connect<O: Observer>(&mut self, i: usize, obs: &mut O) {
        let now = self.now;
        let host = &mut self.hosts[i];
        if host.cut.up {
            // turmoil drops a SYN into a cut link at once and fails the connect.
            obs.on_net_event(self, NetEvent::Refused { client: i });
            if let Some(m) = self.hosts[i].machine.as_mut() {
                m.handle_connect_failed(now, "connection refused");
            }
            return;
        }
        let id = LinkId(self.next_link);
        self.next_link += 1;
        let mut link = Link {
            id,
            client: i,
            process: host.processes.saturating_sub(1),
            server_process: self.server_processes,
            conn: None,
            up: Pipe::default(),
            down: Pipe::default(),
            client_open: true,
            server_open: false,
            connecting_until: Some(now.mono + CONNECT_TIMEOUT),
        };
        link.up.held = host.held.up;
        link.down.held = host.held.down;
        link.down.cut = host.cut.down;
        link.up.push(now.mono + host.draw_up(), Segment::Syn);
        host.link = Some(id);
        self.links.push(link);
    }

    /// The client's end of link `k` closes: with `fin`, a FIN follows what is in flight.
    pub(super) fn close_client_side(&mut self, k: usize, fin: bool) {
        let link = &mut self.links[k];
        if fin && !link.up.cut && link.client_open && link.connecting_until.is_none() {
            let at = self.now.mono + self.hosts[link.client].draw_up();
            link.up.push(at, Segment::Fin);
        }
        link.client_open = false;
        link.connecting_until = None;
        link.down.clear();
    }
}
