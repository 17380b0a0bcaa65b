//! Per-client analysis: counts, missed ranges, delay and inter-arrival statistics, and the two
//! renderings (a text table and JSON) with stable ordering.

use std::fmt::{self, Write as _};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::frame::Protocol;
use crate::ids::{ClientKey, Seq};
use crate::liveness::Liveness;
use crate::time::UnixTime;

/// An inclusive range of sequence numbers, printed `5-9` (or `5` for one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SeqRange {
    /// First sequence number.
    pub first: Seq,
    /// Last sequence number (inclusive).
    pub last: Seq,
}

impl SeqRange {
    /// How many sequence numbers it holds (at least one: the range is inclusive).
    pub fn count(&self) -> u64 {
        (self.last.0 - self.first.0).saturating_add(1)
    }

    /// True if `seq` is inside.
    pub fn contains(&self, seq: Seq) -> bool {
        self.first <= seq && seq <= self.last
    }
}

impl fmt::Display for SeqRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

impl Serialize for SeqRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

const MAX_HIST_MICROS: u64 = 3_600_000_000;

/// A distribution of durations (or signed delays) with exact min, max and mean and histogram
/// percentiles (2 significant digits, microsecond resolution, memory grows with the range seen,
/// not with the sample count).
#[derive(Clone, Debug)]
pub struct Distribution {
    hist: Histogram<u32>,
    count: u64,
    sum_ns: i128,
    min_ns: i64,
    max_ns: i64,
    negative: u64,
}

impl Default for Distribution {
    fn default() -> Self {
        Self {
            hist: Histogram::new(2).expect("2 significant figures is a valid histogram"),
            count: 0,
            sum_ns: 0,
            min_ns: i64::MAX,
            max_ns: i64::MIN,
            negative: 0,
        }
    }
}

impl Distribution {
    /// Records a non-negative duration.
    pub fn record(&mut self, d: Duration) {
        self.record_signed(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    }

    /// Records a signed sample in nanoseconds. Negative samples (a client clock ahead of the
    /// server's) count in min, mean and `negative`, and as 0 in the percentiles.
    pub fn record_signed(&mut self, nanos: i64) {
        self.count += 1;
        self.sum_ns += i128::from(nanos);
        self.min_ns = self.min_ns.min(nanos);
        self.max_ns = self.max_ns.max(nanos);
        if nanos < 0 {
            self.negative += 1;
        }
        // Capped at one hour so one absurd sample cannot grow the (auto-resizing) histogram far;
        // min, max and mean stay exact.
        let micros = u64::try_from(nanos.max(0) / 1000)
            .unwrap_or(0)
            .min(MAX_HIST_MICROS);
        if self.hist.record(micros).is_err() {
            self.hist.saturating_record(micros);
        }
    }

    /// How many samples.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Samples below zero.
    pub fn negative(&self) -> u64 {
        self.negative
    }

    /// The summary in milliseconds, `None` without samples.
    pub fn summary(&self) -> Option<Summary> {
        if self.count == 0 {
            return None;
        }
        let ms = |ns: f64| (ns / 1_000.0).round() / 1_000.0;
        // The lowest value of the percentile's bucket, clamped into the exact [min, max].
        let pct = |q: f64| {
            let micros = self.hist.lowest_equivalent(self.hist.value_at_quantile(q)) as f64;
            ms((micros * 1_000.0).clamp(self.min_ns.max(0) as f64, self.max_ns.max(0) as f64))
        };
        Some(Summary {
            count: self.count,
            min_ms: ms(self.min_ns as f64),
            mean_ms: ms(self.sum_ns as f64 / self.count as f64),
            p50_ms: pct(0.5),
            p99_ms: pct(0.99),
            max_ms: ms(self.max_ns as f64),
        })
    }
}

/// Five numbers and a count, in milliseconds rounded to the microsecond.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// Samples.
    pub count: u64,
    /// Smallest sample.
    pub min_ms: f64,
    /// Mean.
    pub mean_ms: f64,
    /// Median (histogram, about 1 % precision).
    pub p50_ms: f64,
    /// 99th percentile (histogram, about 1 % precision).
    pub p99_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
}

/// One client's row in a report, the shape of each entry of the JSON `clients` array.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClientSummary {
    /// The client's key (`id`, or `legacy@ADDR`).
    pub client: ClientKey,
    /// `v1` or `legacy`.
    pub protocol: Protocol,
    /// Liveness, as the failure detector sees it: `up`, `suspect`, `down`, `left`, or `unknown`
    /// for an expected client not heard from within its grace yet. `down` with `first_seen`
    /// absent (`null`) is an expected client never seen.
    pub state: Liveness,
    /// True for a client on the server's `--expect` list (written only then).
    #[serde(skip_serializing_if = "is_false")]
    pub expected: bool,
    /// True while a connection carries the client.
    pub connected: bool,
    /// Heartbeats received (duplicates excluded).
    pub received: u64,
    /// Heartbeats never received.
    pub missed: u64,
    /// The most recent missed ranges, oldest first.
    pub missed_ranges: Vec<SeqRange>,
    /// Heartbeats received more than once.
    pub duplicates: u64,
    /// Sequence restarts (client process restarts).
    pub restarts: u64,
    /// Arrivals of several heartbeats at once after a silence.
    pub bursts: u64,
    /// Connections made.
    pub connections: u64,
    /// Highest sequence number of the current session.
    pub highest_seq: Option<Seq>,
    /// Server time of the first heartbeat.
    pub first_seen: Option<UnixTime>,
    /// Server time of the last heartbeat.
    pub last_seen: Option<UnixTime>,
    /// One-way delay (server receive time minus client send time).
    pub delay_ms: Option<Summary>,
    /// Heartbeats whose one-way delay was negative (client clock ahead).
    pub negative_delays: u64,
    /// Time between consecutive arrivals.
    pub inter_arrival_ms: Option<Summary>,
    /// The client's clock minus the server's, while beyond the maximum clock skew (its delays
    /// are then measured from this offset); absent while in sync.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clock_offset_ms: Option<f64>,
}

/// The analysis of every client, sorted by client key.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// One entry per client.
    pub clients: Vec<ClientSummary>,
}

impl Report {
    /// The JSON value `{"clients":[...]}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a report is always serialisable")
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn fmt_opt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |x| format!("{x:.3}"))
}

impl fmt::Display for Report {
    /// A fixed-width table, one row per client, then each client's missed ranges.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self
            .clients
            .iter()
            .map(|c| c.client.to_string().len())
            .max()
            .unwrap_or(6)
            .max(6);
        writeln!(
            f,
            "{:<width$}  {:<6}  {:<12}  {:>8}  {:>7}  {:>4}  {:>4}  {:>5}  {:>9}  {:>9}  {:>9}  {:>9}",
            "client",
            "proto",
            "state",
            "received",
            "missed",
            "dup",
            "rst",
            "burst",
            "delay p50",
            "delay p99",
            "delay max",
            "gap p99"
        )?;
        for c in &self.clients {
            let d = c.delay_ms;
            writeln!(
                f,
                "{:<width$}  {:<6}  {:<12}  {:>8}  {:>7}  {:>4}  {:>4}  {:>5}  {:>9}  {:>9}  {:>9}  {:>9}",
                c.client.to_string(),
                c.protocol.to_string(),
                c.state.as_str(),
                c.received,
                c.missed,
                c.duplicates,
                c.restarts,
                c.bursts,
                fmt_opt_ms(d.map(|s| s.p50_ms)),
                fmt_opt_ms(d.map(|s| s.p99_ms)),
                fmt_opt_ms(d.map(|s| s.max_ms)),
                fmt_opt_ms(c.inter_arrival_ms.map(|s| s.p99_ms)),
            )?;
        }
        for c in self.clients.iter().filter(|c| !c.missed_ranges.is_empty()) {
            let mut ranges = String::new();
            for (i, r) in c.missed_ranges.iter().enumerate() {
                let _ = write!(ranges, "{}{r}", if i == 0 { "" } else { ", " });
            }
            writeln!(f, "missed {}: {ranges}", c.client)?;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The range `a-b`.
    pub(crate) fn r(a: u64, b: u64) -> SeqRange {
        SeqRange {
            first: Seq(a),
            last: Seq(b),
        }
    }

    #[test]
    fn ranges_print_compactly() {
        assert_eq!(r(5, 9).to_string(), "5-9");
        assert_eq!(r(5, 5).to_string(), "5");
        assert_eq!(r(5, 9).count(), 5);
        assert_eq!(r(5, 5).count(), 1);
    }

    #[test]
    fn distribution_summary() {
        let mut d = Distribution::default();
        assert_eq!(d.summary(), None);
        for ms in [1u64, 2, 3, 4, 100] {
            d.record(Duration::from_millis(ms));
        }
        d.record_signed(-2_000_000);
        let s = d.summary().unwrap();
        assert_eq!((s.count, s.min_ms, s.max_ms), (6, -2.0, 100.0));
        assert_eq!(s.mean_ms, 18.0);
        assert_eq!(s.p50_ms, 2.0);
        assert!((99.0..=101.0).contains(&s.p99_ms), "{}", s.p99_ms);
        assert_eq!(d.negative(), 1);
    }
}
