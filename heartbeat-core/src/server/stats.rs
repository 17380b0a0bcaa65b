//! Server-wide counters: what the server counted across all connections and clients, for an
//! operator's metrics. Plain numbers, updated where the server decides, read through
//! [`Server::stats`](super::Server::stats); nothing here reads a clock or allocates per
//! heartbeat.

use std::collections::BTreeMap;

use crate::error::DisconnectReason;

/// Upper bounds, in seconds, of the buckets of [`DelayHistogram`]: from a loopback's tenth of a
/// millisecond to a held link's ten seconds (beyond it: the `+Inf` bucket).
pub const DELAY_BUCKETS: [f64; 15] = [
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The one-way delay of every heartbeat counted, from all clients, in fixed buckets (a
/// Prometheus histogram: counts per bucket, their sum and their count).
///
/// Delays are measured as in the clients' analysis (from a skewed client's estimated clock
/// offset); a negative delay (a client clock ahead by less than the maximum skew) counts as 0.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DelayHistogram {
    /// Heartbeats per bucket: `buckets[i]` counts the delays in `(DELAY_BUCKETS[i-1],
    /// DELAY_BUCKETS[i]]` (not cumulative); the last entry counts those above every bound.
    pub buckets: [u64; DELAY_BUCKETS.len() + 1],
    /// The sum of the delays, in seconds.
    pub sum_seconds: f64,
    /// Heartbeats counted.
    pub count: u64,
}

impl DelayHistogram {
    /// Counts one delay, in nanoseconds.
    pub(crate) fn record(&mut self, delay_ns: i64) {
        let seconds = delay_ns.max(0) as f64 / 1e9;
        let i = DELAY_BUCKETS.partition_point(|&bound| bound < seconds);
        self.buckets[i] = self.buckets[i].saturating_add(1);
        self.sum_seconds += seconds;
        self.count = self.count.saturating_add(1);
    }
}

/// What the server counted, server-wide. Counters only grow (saturating); a restart of the
/// process starts them again from zero, as Prometheus expects of counters.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct ServerStats {
    /// Connections accepted.
    pub connections_accepted: u64,
    /// Connections ended, by [`DisconnectReason::label`].
    pub disconnects: BTreeMap<&'static str, u64>,
    /// Connections ended because the server refused what they sent, by
    /// [`DisconnectReason::rejection`]: decode errors by kind, broken limits, failed
    /// authentication, refused legacy connections, ids in use. A bounded set of names.
    pub frames_rejected: BTreeMap<&'static str, u64>,
    /// Clients forgotten after being gone longer than the configured forget-after.
    pub clients_forgotten: u64,
    /// Clients evicted to make room under the client limit.
    pub clients_evicted: u64,
    /// The one-way delay of every heartbeat counted.
    pub delay: DelayHistogram,
}

impl ServerStats {
    /// A connection ended for `reason`.
    pub(crate) fn disconnected(&mut self, reason: &DisconnectReason) {
        bump(self.disconnects.entry(reason.label()).or_default());
        if let Some(kind) = reason.rejection() {
            bump(self.frames_rejected.entry(kind).or_default());
        }
    }
}

/// Adds one, saturating.
pub(crate) fn bump(n: &mut u64) {
    *n = n.saturating_add(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_land_in_the_bucket_whose_bound_is_at_or_above_them() {
        let mut h = DelayHistogram::default();
        for ns in [
            -5,
            0,
            100_000,
            100_001,
            1_000_000,
            3_000_000_000,
            60_000_000_000,
        ] {
            h.record(ns);
        }
        // -5 and 0 count as 0 s; 0.1 ms is at the first bound (le is inclusive).
        assert_eq!(h.buckets[0], 3);
        assert_eq!(h.buckets[1], 1, "just above 0.1 ms");
        assert_eq!(h.buckets[2], 1, "1 ms");
        assert_eq!(h.buckets[13], 1, "3 s: in (2.5, 5]");
        assert_eq!(h.buckets[15], 1, "a minute: above every bound");
        assert_eq!(h.count, 7);
        assert!(
            (h.sum_seconds - 63.001_200_001).abs() < 1e-9,
            "{}",
            h.sum_seconds
        );
    }
}
