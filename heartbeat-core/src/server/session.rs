//! Per-client records: what one arrival of heartbeats means for one client, what the server
//! counted about it, and the public read view of that.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::analysis::{ClientSummary, Distribution, SeqRange};
use crate::detector::{Configured, Detector};
use crate::frame::Protocol;
use crate::ids::{ClientKey, ConnId, Seq};
use crate::liveness::Liveness;
use crate::time::{Now, UnixTime};

use super::limits::{Schedule, Skew};
use super::qos::QosEstimate;
use super::stats::DelayHistogram;
use super::{Event, Output};

/// One client as the server sees it now: what it counted and the client's liveness. Returned by
/// [`Server::client`](super::Server::client) and [`Server::clients`](super::Server::clients).
#[derive(Clone, Copy, Debug)]
pub struct ClientView<'a> {
    stats: &'a ClientStats,
    state: Liveness,
    detector: Option<&'a dyn Detector>,
    clock_offset: Option<i64>,
    expected: bool,
    qos: Option<&'a QosEstimate>,
    interval: Option<Duration>,
}

impl<'a> ClientView<'a> {
    pub(super) fn new(
        record: &'a ClientRecord,
        state: Liveness,
        detector: Option<&'a dyn Detector>,
    ) -> Self {
        Self {
            stats: &record.stats,
            state,
            detector,
            clock_offset: record.skew.offset(),
            expected: record.expected,
            qos: record.qos.as_deref(),
            interval: record.interval,
        }
    }

    /// The interval the client is judged by: declared in `HELLO` and changed by `INTERVAL`
    /// (v1), or estimated (legacy); `None` while unknown.
    pub fn interval(&self) -> Option<Duration> {
        self.interval
    }

    /// The client's loss probability `p_L` as a quality-of-service target measures it: an
    /// exponential window of about a thousand heartbeats, starting from a prior of 1% and
    /// never below 10⁻⁴ (see [`qos`](super::qos)). `None` without a target.
    pub fn loss_estimate(&self) -> Option<f64> {
        self.qos.map(QosEstimate::loss)
    }

    /// The variance of the client's one-way delay `V(D)`, in seconds squared, as a
    /// quality-of-service target measures it (see [`qos`](super::qos)): offset-invariant, so
    /// a client's clock offset does not matter. `None` without a target.
    pub fn delay_variance(&self) -> Option<f64> {
        self.qos.map(QosEstimate::delay_variance)
    }

    /// What the server's quality-of-service target decided for this client, last time it
    /// looked: the margin in use, whether the target is reachable at its interval, and the
    /// advised interval if not. `None` without a target, or before its first heartbeat.
    pub fn target(&self) -> Option<Configured> {
        self.qos.and_then(QosEstimate::configured)
    }

    /// True when the client is on the server's `--expect` list.
    pub fn is_expected(&self) -> bool {
        self.expected
    }

    /// True when no heartbeat of the client was ever received: with [`state`](Self::state)
    /// `Down`, an expected client "never seen".
    pub fn is_never_heard(&self) -> bool {
        self.stats.first_seen.is_none()
    }

    /// The failure detector's suspicion of the client at `now` (phi, or the silence over the
    /// timeout, depending on the detector; see `DetectorKind`); `None` before its interval is
    /// known. It grows while the client is silent, down or gone.
    pub fn suspicion(&self, now: Instant) -> Option<f64> {
        self.detector.map(|d| d.suspicion(now))
    }

    /// Connections the client made.
    pub fn connections(&self) -> u64 {
        self.stats.connections
    }

    /// True while a connection carries the client.
    pub fn is_connected(&self) -> bool {
        self.stats.connected
    }

    /// Server time of the client's last heartbeat; `None` before its first.
    pub fn last_seen(&self) -> Option<UnixTime> {
        self.stats.last_seen
    }

    /// The client's clock offset (its clock minus the server's, in nanoseconds) while it is
    /// beyond the maximum clock skew; `None` while it is in sync.
    pub fn clock_offset_ns(&self) -> Option<i64> {
        self.clock_offset
    }

    /// The client's key.
    pub fn client(&self) -> &'a ClientKey {
        &self.stats.client
    }

    /// Heartbeats received (duplicates excluded).
    pub fn received(&self) -> u64 {
        self.stats.received
    }

    /// Heartbeats never received (sequence gaps), exact.
    pub fn missed(&self) -> u64 {
        self.stats.missed
    }

    /// Heartbeats reported missed that arrived late after all (each took one off
    /// [`missed`](Self::missed)). `missed + recovered` only grows: every heartbeat ever
    /// reported missed.
    pub fn recovered(&self) -> u64 {
        self.stats.recovered
    }

    /// The most recent missed ranges (at most the configured number).
    pub fn missed_ranges(&self) -> impl Iterator<Item = SeqRange> + 'a {
        self.stats.missed_ranges.iter().copied()
    }

    /// Heartbeats received twice.
    pub fn duplicates(&self) -> u64 {
        self.stats.duplicates
    }

    /// Times the client restarted its sequence.
    pub fn restarts(&self) -> u64 {
        self.stats.restarts
    }

    /// Bursts seen.
    pub fn bursts(&self) -> u64 {
        self.stats.bursts
    }

    /// Liveness as the failure detector sees it.
    pub fn state(&self) -> Liveness {
        self.state
    }

    /// Highest sequence number in the current session.
    pub fn highest(&self) -> Option<Seq> {
        self.stats.highest
    }

    /// The summary row for reports.
    pub fn summary(&self) -> ClientSummary {
        let s = self.stats;
        let target = self.target();
        // Milliseconds to the microsecond, as the other `_ms` fields.
        let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
        ClientSummary {
            client: s.client.clone(),
            protocol: s.protocol,
            state: self.state,
            expected: self.expected,
            connected: s.connected,
            interval_ms: self.interval.map(ms),
            received: s.received,
            missed: s.missed,
            missed_ranges: s.missed_ranges.iter().copied().collect(),
            duplicates: s.duplicates,
            restarts: s.restarts,
            bursts: s.bursts,
            connections: s.connections,
            highest_seq: s.highest,
            first_seen: s.first_seen,
            last_seen: s.last_seen,
            delay_ms: s.delay.summary(),
            negative_delays: s.delay.negative(),
            inter_arrival_ms: s.inter_arrival.summary(),
            clock_offset_ms: self
                .clock_offset
                .map(|ns| (ns as f64 / 1_000.0).round() / 1_000.0),
            target_reachable: target.map(|c| c.reachable),
            advised_interval_ms: target.map(|c| c.advised_interval.map(ms)),
            alpha_ms: target.map(|c| ms(c.alpha)),
            loss: target.and(self.loss_estimate()),
            delay_variance: target.and(self.delay_variance()),
        }
    }
}

/// One client's record, kept across its connections.
#[derive(Debug)]
pub(crate) struct ClientRecord {
    pub(crate) stats: ClientStats,
    /// The connection currently carrying this client, if any.
    pub(crate) conn: Option<ConnId>,
    /// The session nonce of the last `HELLO`.
    pub(crate) session: Option<u64>,
    /// Declared (v1) or estimated (legacy) interval.
    pub(crate) interval: Option<Duration>,
    /// Monotonic time of the last arrival carrying a heartbeat.
    pub(crate) last_arrival: Option<Instant>,
    /// The previous heartbeat's send stamp, for estimating a legacy client's interval.
    last_sent: Option<(Seq, UnixTime)>,
    /// The client said `BYE`.
    pub(crate) left: bool,
    /// On the server's `--expect` list.
    pub(crate) expected: bool,
    /// The peer address of its latest connection.
    pub(crate) peer: Option<std::net::SocketAddr>,
    /// Monotonic time its last connection ended, while it has none (for the forget-after).
    pub(crate) gone_since: Option<Instant>,
    /// Its sequence numbers against time, for the current session.
    pub(crate) schedule: Schedule,
    /// Its clock's offset from the server's.
    pub(crate) skew: Skew,
    /// Its loss and delay variance, and its configuration, under a QoS target (`None`
    /// without one: a pointer's worth of the record, which must stay small).
    pub(crate) qos: Option<Box<QosEstimate>>,
}

impl ClientRecord {
    pub(crate) fn new(key: ClientKey, protocol: Protocol, max_missed_ranges: usize) -> Self {
        Self {
            stats: ClientStats::new(key, protocol, max_missed_ranges),
            conn: None,
            session: None,
            interval: None,
            last_arrival: None,
            last_sent: None,
            left: false,
            expected: false,
            peer: None,
            gone_since: None,
            schedule: Schedule::default(),
            skew: Skew::default(),
            qos: None,
        }
    }

    /// A new session started (a different nonce in `HELLO`): sequence tracking starts over, the
    /// history stays. The caller resets the client's liveness watch too: a new process's timing
    /// says nothing about the old one's.
    pub(crate) fn restart(&mut self, conn: ConnId, out: &mut VecDeque<Output>) {
        self.schedule.reset();
        if let Some(previous) = self.stats.highest.take() {
            self.stats.restarts = self.stats.restarts.saturating_add(1);
            out.push_back(Output::Event(Event::Restarted {
                conn,
                client: self.stats.client.clone(),
                previous,
                seq: None,
            }));
        }
        self.last_sent = None;
    }

    /// Analyses the heartbeats of one arrival (one `handle_input` call) in order, counting
    /// their delays in the server-wide `delays` too. True when they restarted the client's
    /// sequence (a new process): the caller resets its liveness watch.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_arrival(
        &mut self,
        conn: ConnId,
        now: Now,
        beats: &[(Seq, UnixTime)],
        burst_gap_intervals: u32,
        max_clock_skew: Duration,
        delays: &mut DelayHistogram,
        out: &mut VecDeque<Output>,
    ) -> bool {
        let (now, received) = (now.mono, now.unix);
        let Some(&(first, _)) = beats.first() else {
            return false;
        };
        let client = &self.stats.client;
        let silence = self.last_arrival.map(|t| now.saturating_duration_since(t));
        if beats.len() >= 2 {
            let gap = self.interval.map(|i| i * burst_gap_intervals);
            let is_burst = match (silence, gap) {
                (Some(s), Some(g)) => s >= g,
                // No history or no interval known yet: several at once is a burst.
                _ => true,
            };
            if is_burst {
                self.stats.bursts = self.stats.bursts.saturating_add(1);
                let last = beats[beats.len() - 1].0;
                out.push_back(Output::Event(Event::Burst {
                    conn,
                    client: client.clone(),
                    first,
                    last,
                    count: beats.len() as u64,
                    silence,
                }));
            }
        }
        let least_delay = beats
            .iter()
            .map(|&(_, sent)| received.signed_nanos_since(sent))
            .min();
        if let Some(change) = least_delay.and_then(|d| self.skew.on_arrival(d, max_clock_skew)) {
            out.push_back(Output::Event(Event::ClockSkew {
                conn,
                client: self.stats.client.clone(),
                offset_ns: change.offset_ns,
                skewed: change.skewed,
            }));
        }
        let mut restarted = false;
        for (i, &(seq, sent)) in beats.iter().enumerate() {
            let inter_arrival = if i == 0 {
                silence
            } else {
                Some(Duration::ZERO)
            };
            restarted |= self.on_beat(conn, seq, sent, received, inter_arrival, delays, out);
        }
        self.last_arrival = Some(now);
        if self.stats.first_seen.is_none() {
            self.stats.first_seen = Some(received);
        }
        self.stats.last_seen = Some(received);
        restarted
    }

    #[allow(clippy::too_many_arguments)]
    fn on_beat(
        &mut self,
        conn: ConnId,
        seq: Seq,
        sent: UnixTime,
        received: UnixTime,
        inter_arrival: Option<Duration>,
        delays: &mut DelayHistogram,
        out: &mut VecDeque<Output>,
    ) -> bool {
        let client = self.stats.client.clone();
        let mut recovered = false;
        let mut restarted = false;
        match self.stats.highest {
            Some(h) if seq <= h => {
                if seq == Seq(1) && h > Seq(1) {
                    // The seed's heuristic for clients that cannot tell us: starting over at 1 is
                    // a restart.
                    self.stats.restarts = self.stats.restarts.saturating_add(1);
                    out.push_back(Output::Event(Event::Restarted {
                        conn,
                        client: client.clone(),
                        previous: h,
                        seq: Some(seq),
                    }));
                    self.stats.highest = Some(seq);
                    self.last_sent = None;
                    self.schedule.reset();
                    restarted = true;
                } else if self.stats.recover_missed(seq) {
                    recovered = true;
                } else {
                    self.stats.duplicates = self.stats.duplicates.saturating_add(1);
                    out.push_back(Output::Event(Event::Duplicate { conn, client, seq }));
                    return false;
                }
            }
            highest => {
                // The client's first heartbeat in this server's life is its baseline: what it
                // sent before went to an earlier run of the server (or nowhere), so nothing
                // before it is missed here. From then on every gap counts, across reconnects,
                // and a new session (after `restart`) counts from 1 again.
                let expected = match highest {
                    Some(h) => h.0 + 1,
                    None if self.stats.first_seen.is_none() => seq.0,
                    None => 1,
                };
                if seq.0 > expected {
                    let range = SeqRange {
                        first: Seq(expected),
                        last: Seq(seq.0 - 1),
                    };
                    self.stats.add_missed(range);
                    if let Some(q) = &mut self.qos {
                        q.on_missed(range.count());
                    }
                    out.push_back(Output::Event(Event::Missed {
                        conn,
                        client: client.clone(),
                        range,
                    }));
                }
                self.stats.highest = Some(seq);
            }
        }
        if self.stats.protocol == Protocol::Legacy {
            self.estimate_interval(seq, sent);
        }
        self.stats.received = self.stats.received.saturating_add(1);
        // Measured from the client's estimated clock offset while it is skewed, so a skewed
        // clock is reported as skew (`Event::ClockSkew`), not as network delay.
        let delay_ns = received
            .signed_nanos_since(sent)
            .saturating_sub(self.skew.correction());
        self.stats.delay.record_signed(delay_ns);
        if let Some(q) = &mut self.qos {
            q.on_received(delay_ns);
        }
        delays.record(delay_ns);
        if let Some(ia) = inter_arrival {
            self.stats.inter_arrival.record(ia);
        }
        out.push_back(Output::Event(Event::Heartbeat {
            conn,
            client,
            seq,
            sent,
            received,
            delay_ns,
            inter_arrival,
            recovered,
        }));
        restarted
    }

    /// A legacy client does not declare its interval; its send stamps tell it.
    fn estimate_interval(&mut self, seq: Seq, sent: UnixTime) {
        if let Some((prev_seq, prev_sent)) = self.last_sent {
            if seq > prev_seq && sent > prev_sent {
                let per = (sent.as_nanos() - prev_sent.as_nanos()) / (seq.0 - prev_seq.0);
                if per > 0 {
                    self.interval = Some(Duration::from_nanos(per));
                }
            }
        }
        self.last_sent = Some((seq, sent));
    }
}

/// What the server counted about one client, across all its connections: the mutable record
/// behind a [`ClientView`] and a report's [`ClientSummary`].
#[derive(Clone, Debug)]
pub(crate) struct ClientStats {
    pub(super) client: ClientKey,
    pub(super) protocol: Protocol,
    pub(super) received: u64,
    pub(super) missed: u64,
    pub(super) recovered: u64,
    pub(super) missed_ranges: VecDeque<SeqRange>,
    pub(super) max_missed_ranges: usize,
    pub(super) duplicates: u64,
    pub(super) restarts: u64,
    pub(super) bursts: u64,
    pub(super) connections: u64,
    pub(super) highest: Option<Seq>,
    pub(super) first_seen: Option<UnixTime>,
    pub(super) last_seen: Option<UnixTime>,
    pub(super) delay: Distribution,
    pub(super) inter_arrival: Distribution,
    pub(super) connected: bool,
}

impl ClientStats {
    pub(super) fn new(client: ClientKey, protocol: Protocol, max_missed_ranges: usize) -> Self {
        Self {
            client,
            protocol,
            received: 0,
            missed: 0,
            recovered: 0,
            missed_ranges: VecDeque::new(),
            max_missed_ranges,
            duplicates: 0,
            restarts: 0,
            bursts: 0,
            connections: 0,
            highest: None,
            first_seen: None,
            last_seen: None,
            delay: Distribution::default(),
            inter_arrival: Distribution::default(),
            connected: false,
        }
    }

    pub(super) fn add_missed(&mut self, range: SeqRange) {
        self.missed = self.missed.saturating_add(range.count());
        self.missed_ranges.push_back(range);
        self.trim_missed_ranges();
    }

    /// Keeps the most recent `max_missed_ranges` ranges.
    fn trim_missed_ranges(&mut self) {
        while self.missed_ranges.len() > self.max_missed_ranges {
            self.missed_ranges.pop_front();
        }
    }

    /// Takes a late arrival out of the missed ranges. True if it was there.
    pub(super) fn recover_missed(&mut self, seq: Seq) -> bool {
        let Some(i) = self.missed_ranges.iter().position(|r| r.contains(seq)) else {
            return false;
        };
        let r = self.missed_ranges[i];
        self.missed = self.missed.saturating_sub(1);
        self.recovered = self.recovered.saturating_add(1);
        let below = (r.first < seq).then(|| SeqRange {
            first: r.first,
            last: Seq(seq.0 - 1),
        });
        let above = (seq < r.last).then(|| SeqRange {
            first: Seq(seq.0 + 1),
            last: r.last,
        });
        match (below, above) {
            (Some(b), Some(a)) => {
                self.missed_ranges[i] = b;
                self.missed_ranges.insert(i + 1, a);
                self.trim_missed_ranges();
            }
            (Some(x), None) | (None, Some(x)) => self.missed_ranges[i] = x,
            (None, None) => {
                self.missed_ranges.remove(i);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::tests::r;

    #[test]
    fn missed_ranges_are_capped_but_counts_stay_exact() {
        let mut s = ClientStats::new(
            ClientKey::Id(crate::ClientId::new("a").unwrap()),
            Protocol::V1,
            2,
        );
        s.add_missed(r(2, 3));
        s.add_missed(r(5, 9));
        s.add_missed(r(11, 11));
        assert_eq!(s.missed, 8);
        assert_eq!(
            s.missed_ranges.iter().copied().collect::<Vec<_>>(),
            [r(5, 9), r(11, 11)]
        );
        // A recovery that splits a range must not leave the list past its cap, and the list
        // must keep to it afterwards (it once only trimmed when exactly at the cap).
        assert!(s.recover_missed(Seq(7)));
        assert_eq!(
            s.missed_ranges.iter().copied().collect::<Vec<_>>(),
            [r(8, 9), r(11, 11)]
        );
        s.add_missed(r(13, 14));
        s.add_missed(r(16, 16));
        assert_eq!(
            s.missed_ranges.iter().copied().collect::<Vec<_>>(),
            [r(13, 14), r(16, 16)]
        );
        assert!(s.recover_missed(Seq(16)));
        assert!(!s.recover_missed(Seq(16)));
        assert_eq!((s.missed, s.recovered), (9, 2));
    }
}
