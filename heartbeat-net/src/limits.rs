//! How many connections a listener holds open, in all and per peer address, so one host cannot
//! take every slot: the heartbeat port (the server driver, keyed by [`ConnId`]) and the metrics
//! endpoint (`--metrics-addr`, keyed by its own connection numbers) keep the same rule here.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};

use heartbeat_core::ConnId;

use crate::logsummary::PeerLine;

/// Why a new connection was closed as soon as it was accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `--max-connections` are open.
    Total,
    /// `--max-connections-per-ip` are open from this address.
    PerIp,
}

impl Refusal {
    /// The log kind, as the log summary counts it.
    pub fn kind(self) -> PeerLine {
        match self {
            Self::Total => PeerLine::RefusedMaxConnections,
            Self::PerIp => PeerLine::RefusedPerIp,
        }
    }

    /// The flag that sets the limit.
    pub fn flag(self) -> &'static str {
        match self {
            Self::Total => "--max-connections",
            Self::PerIp => "--max-connections-per-ip",
        }
    }

    /// A short, stable name (`max_connections`, `max_connections_per_ip`), as in the `--json`
    /// `unidentified` event.
    pub fn label(self) -> &'static str {
        match self {
            Self::Total => "max_connections",
            Self::PerIp => "max_connections_per_ip",
        }
    }
}

/// One address's share of `max_total` when none is configured: a quarter, so one host (or
/// three) cannot take every slot.
pub fn default_share(max_total: usize) -> usize {
    max_total / 4
}

/// Open connections, counted in all and per peer address (IPv4-mapped IPv6 addresses count
/// as their IPv4 address), each known by its key `K`.
#[derive(Debug)]
pub struct ConnectionLimits<K = ConnId> {
    max_total: usize,
    max_per_ip: usize,
    per_ip: HashMap<IpAddr, usize>,
    open: HashMap<K, IpAddr>,
}

impl<K: Copy + Eq + Hash> ConnectionLimits<K> {
    /// At most `max_total` connections, `max_per_ip` of them from one address (each at least 1).
    pub fn new(max_total: usize, max_per_ip: usize) -> Self {
        Self {
            max_total: max_total.max(1),
            max_per_ip: max_per_ip.max(1),
            per_ip: HashMap::new(),
            open: HashMap::new(),
        }
    }

    /// Whether a connection from `peer` may open now.
    pub fn check(&self, peer: SocketAddr) -> Result<(), Refusal> {
        if self.open.len() >= self.max_total {
            return Err(Refusal::Total);
        }
        let from_peer = self.per_ip.get(&ip(peer)).copied().unwrap_or(0);
        if from_peer >= self.max_per_ip {
            return Err(Refusal::PerIp);
        }
        Ok(())
    }

    /// Connection `conn` from `peer` is open.
    pub fn opened(&mut self, conn: K, peer: SocketAddr) {
        let ip = ip(peer);
        *self.per_ip.entry(ip).or_insert(0) += 1;
        self.open.insert(conn, ip);
    }

    /// Connection `conn` is closed (a second call does nothing).
    pub fn closed(&mut self, conn: K) {
        let Some(ip) = self.open.remove(&conn) else {
            return;
        };
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }
}

fn ip(peer: SocketAddr) -> IpAddr {
    peer.ip().to_canonical()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_address_and_total_limits() {
        let a: SocketAddr = "10.0.0.1:1".parse().unwrap();
        let a_mapped: SocketAddr = "[::ffff:10.0.0.1]:2".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:1".parse().unwrap();
        let mut l: ConnectionLimits = ConnectionLimits::new(3, 2);
        l.opened(ConnId(1), a);
        assert_eq!(l.check(a_mapped), Ok(()));
        l.opened(ConnId(2), a_mapped);
        assert_eq!(l.check(a), Err(Refusal::PerIp));
        assert_eq!(l.check(b), Ok(()));
        l.opened(ConnId(3), b);
        assert_eq!(l.check(b), Err(Refusal::Total));
        l.closed(ConnId(1));
        l.closed(ConnId(1));
        assert_eq!(l.check(a), Ok(()));
    }
}
