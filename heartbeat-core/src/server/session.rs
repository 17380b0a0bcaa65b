//! Per-client sequence analysis: what one arrival of heartbeats means for one client.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::analysis::{ClientStats, SeqRange};
use crate::detector::Detector;
use crate::frame::Protocol;
use crate::ids::{ClientKey, ConnId, Seq};
use crate::server::{Event, Output};
use crate::time::UnixTime;

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
    /// The failure detector, built at the first heartbeat whose interval is known.
    pub(crate) detector: Option<Box<dyn Detector>>,
    /// The liveness check this client has in the server's queue.
    pub(crate) check_at: Option<Instant>,
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
            detector: None,
            check_at: None,
        }
    }

    /// A new session started (a different nonce in `HELLO`): sequence tracking starts over, the
    /// history stays.
    pub(crate) fn restart(&mut self, conn: ConnId, out: &mut VecDeque<Output>) {
        if let Some(previous) = self.stats.highest.take() {
            self.stats.restarts += 1;
            out.push_back(Output::Event(Event::Restarted {
                conn,
                client: self.stats.client.clone(),
                previous,
                seq: None,
            }));
        }
        self.last_sent = None;
        // A new process: its timing history says nothing about this one.
        self.detector = None;
    }

    /// Analyses the heartbeats of one arrival (one `handle_input` call) in order.
    pub(crate) fn on_arrival(
        &mut self,
        conn: ConnId,
        now: Instant,
        received: UnixTime,
        beats: &[(Seq, UnixTime)],
        burst_gap_intervals: u32,
        out: &mut VecDeque<Output>,
    ) {
        let Some(&(first, _)) = beats.first() else {
            return;
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
                self.stats.bursts += 1;
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
        for (i, &(seq, sent)) in beats.iter().enumerate() {
            let inter_arrival = if i == 0 {
                silence
            } else {
                Some(Duration::ZERO)
            };
            self.on_beat(conn, seq, sent, received, inter_arrival, out);
        }
        self.last_arrival = Some(now);
        if self.stats.first_seen.is_none() {
            self.stats.first_seen = Some(received);
        }
        self.stats.last_seen = Some(received);
    }

    fn on_beat(
        &mut self,
        conn: ConnId,
        seq: Seq,
        sent: UnixTime,
        received: UnixTime,
        inter_arrival: Option<Duration>,
        out: &mut VecDeque<Output>,
    ) {
        let client = self.stats.client.clone();
        let mut recovered = false;
        match self.stats.highest {
            Some(h) if seq <= h => {
                if seq == Seq(1) && h > Seq(1) {
                    // The seed's heuristic for clients that cannot tell us: starting over at 1 is
                    // a restart.
                    self.stats.restarts += 1;
                    out.push_back(Output::Event(Event::Restarted {
                        conn,
                        client: client.clone(),
                        previous: h,
                        seq: Some(seq),
                    }));
                    self.stats.highest = Some(seq);
                    self.last_sent = None;
                    self.detector = None;
                } else if self.stats.recover_missed(seq) {
                    recovered = true;
                } else {
                    self.stats.duplicates += 1;
                    out.push_back(Output::Event(Event::Duplicate { conn, client, seq }));
                    return;
                }
            }
            highest => {
                let expected = highest.map_or(1, |h| h.0 + 1);
                if seq.0 > expected {
                    let range = SeqRange {
                        first: Seq(expected),
                        last: Seq(seq.0 - 1),
                    };
                    self.stats.add_missed(range);
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
        self.stats.received += 1;
        let delay_ns = received.signed_nanos_since(sent);
        self.stats.delay.record_signed(delay_ns);
        if let Some(ia) = inter_arrival {
            self.stats.inter_arrival.record(ia);
        }
        out.push_back(Output::Event(Event::Heartbeat {
            conn,
            client: self.stats.client.clone(),
            seq,
            sent,
            received,
            delay_ns,
            inter_arrival,
            recovered,
        }));
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
