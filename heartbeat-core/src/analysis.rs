//! Per-client analysis: counts, missed ranges, delay and inter-arrival statistics, and the two
//! renderings (a text table and JSON) with stable ordering.

use std::fmt::{self, Write as _};
use std::time::Duration;

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

/// Values below `2^SUB_BITS · 2` µs have a bucket each; above, every power of two is split into
/// `2^SUB_BITS` buckets of equal width, so a bucket is at most 1/16 of its lowest value wide.
const SUB_BITS: u32 = 4;
const SUB: u64 = 1 << SUB_BITS;

/// The bucket of a value in µs (below 464 for values below 2³² µs).
fn bucket(micros: u64) -> usize {
    if micros < 2 * SUB {
        return micros as usize;
    }
    let shift = 63 - micros.leading_zeros() - SUB_BITS;
    (u64::from(shift) * SUB + (micros >> shift)) as usize
}

/// The lowest value of a bucket and its width, in µs.
fn bucket_range(index: usize) -> (u64, u64) {
    let index = index as u64;
    if index < 2 * SUB {
        return (index, 1);
    }
    let shift = index / SUB - 1;
    ((index % SUB + SUB) << shift, 1 << shift)
}

/// A distribution of durations (or signed delays) with exact min, max and mean and percentiles
/// from a compact log-bucketed histogram of microseconds: exact below 32 µs, above that
/// within 1/32 (3.2 %) of the sample at that rank (16 buckets per power of two, each reported
/// at its middle). Its counts are `u16` (`u32` once a bucket passes 65,535) and it holds only
/// the buckets between the lowest and the highest sample seen: a few hundred bytes for a
/// steady client, 0.9 KB at most (1.9 KB with `u32` counts) for samples from 1 µs to the
/// one-hour cap.
#[derive(Clone, Debug, Default)]
pub struct Distribution {
    /// Counts of the buckets `first..first + counts.len()`.
    counts: Counts,
    first: u16,
    count: u64,
    sum_ns: i128,
    min_ns: i64,
    max_ns: i64,
    negative: u64,
}

impl Distribution {
    /// Records a non-negative duration.
    pub fn record(&mut self, d: Duration) {
        self.record_signed(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    }

    /// Records a signed sample in nanoseconds. Negative samples (a client clock ahead of the
    /// server's) count in min, mean and `negative`, and as 0 in the percentiles.
    pub fn record_signed(&mut self, nanos: i64) {
        if self.count == 0 {
            self.min_ns = nanos;
            self.max_ns = nanos;
        }
        self.count += 1;
        self.sum_ns += i128::from(nanos);
        self.min_ns = self.min_ns.min(nanos);
        self.max_ns = self.max_ns.max(nanos);
        if nanos < 0 {
            self.negative += 1;
        }
        // Capped at one hour so that one absurd sample cannot widen the histogram far; min, max
        // and mean stay exact.
        let micros = u64::try_from(nanos.max(0) / 1000)
            .unwrap_or(0)
            .min(MAX_HIST_MICROS);
        let index = bucket(micros);
        let slot = self.slot(index);
        self.counts.increment(slot);
    }

    /// The position of bucket `index` in `counts`, widening the held range to it (exactly: a
    /// histogram grows only by the buckets it needs).
    fn slot(&mut self, index: usize) -> usize {
        let first = usize::from(self.first);
        let len = self.counts.len();
        if len == 0 {
            self.first = index as u16;
            self.counts.widen(0, 1);
            return 0;
        }
        if index < first {
            self.counts.widen(first - index, 0);
            self.first = index as u16;
            return 0;
        }
        if index >= first + len {
            self.counts.widen(0, index + 1 - first - len);
        }
        index - first
    }

    /// The histogram's middle value of the sample at quantile `q`, in µs: the sample of rank
    /// `max(1, ⌈q·n⌉)`, as hdrhistogram ranks.
    fn quantile_micros(&self, q: f64) -> f64 {
        let total: u64 = (0..self.counts.len()).map(|i| self.counts.get(i)).sum();
        let rank = ((q * total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for i in 0..self.counts.len() {
            seen += self.counts.get(i);
            if seen >= rank {
                let (low, width) = bucket_range(usize::from(self.first) + i);
                return (low + width / 2) as f64;
            }
        }
        0.0
    }

    /// Heap bytes held, for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        self.counts.heap_bytes()
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
        // The middle of the percentile's bucket, clamped into the exact [min, max].
        let pct = |q: f64| {
            let micros = self.quantile_micros(q);
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

/// A histogram's bucket counts: `u16` until one would pass 65,535, then `u32` (saturating), so
/// a client's histograms cost half as much until a bucket has seen 65,535 samples (18 hours of
/// one-second heartbeats all in one bucket).
#[derive(Clone, Debug)]
enum Counts {
    Narrow(Vec<u16>),
    Wide(Vec<u32>),
}

impl Default for Counts {
    fn default() -> Self {
        Self::Narrow(Vec::new())
    }
}

impl Counts {
    fn len(&self) -> usize {
        match self {
            Self::Narrow(v) => v.len(),
            Self::Wide(v) => v.len(),
        }
    }

    fn get(&self, i: usize) -> u64 {
        match self {
            Self::Narrow(v) => u64::from(v[i]),
            Self::Wide(v) => u64::from(v[i]),
        }
    }

    fn increment(&mut self, i: usize) {
        match self {
            Self::Narrow(v) if v[i] == u16::MAX => {
                let mut wide: Vec<u32> = Vec::with_capacity(v.len());
                wide.extend(v.iter().map(|&c| u32::from(c)));
                wide[i] += 1;
                *self = Self::Wide(wide);
            }
            Self::Narrow(v) => v[i] += 1,
            Self::Wide(v) => v[i] = v[i].saturating_add(1),
        }
    }

    /// Adds `front` zero counts before the held ones and `back` after, allocating exactly.
    fn widen(&mut self, front: usize, back: usize) {
        fn widen<T: Copy + Default>(v: &mut Vec<T>, front: usize, back: usize) {
            let len = front + v.len() + back;
            let mut wider = Vec::with_capacity(len);
            wider.resize(front, T::default());
            wider.extend_from_slice(v);
            wider.resize(len, T::default());
            *v = wider;
        }
        match self {
            Self::Narrow(v) => widen(v, front, back),
            Self::Wide(v) => widen(v, front, back),
        }
    }

    fn heap_bytes(&self) -> usize {
        match self {
            Self::Narrow(v) => v.capacity() * size_of::<u16>(),
            Self::Wide(v) => v.capacity() * size_of::<u32>(),
        }
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
    /// Median (histogram: exact below 32 µs, else within 3.2 %).
    pub p50_ms: f64,
    /// 99th percentile (histogram: exact below 32 µs, else within 3.2 %).
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
    /// True for a client on the server's `--expect` list, false for any other (always written,
    /// so a reader need not know that an absent field means false).
    pub expected: bool,
    /// True while a connection carries the client.
    pub connected: bool,
    /// The interval the client is judged by, in milliseconds: declared in `HELLO` and changed
    /// by `INTERVAL` (v1), or estimated (legacy); absent while unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<f64>,
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
    /// Under a quality-of-service target (`--target-detection`): true when it is reachable at
    /// the client's interval; absent without a target or before the client's first heartbeat
    /// (and so are the four fields after it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_reachable: Option<bool>,
    /// Under a target that is not reachable: the longest interval that would reach it, in
    /// milliseconds (`null` when no interval would).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advised_interval_ms: Option<Option<f64>>,
    /// Under a target: the margin in use, in milliseconds (down this long after a heartbeat
    /// is due).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alpha_ms: Option<f64>,
    /// Under a target: the measured loss probability `p_L`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    /// Under a target: the measured variance of the one-way delay `V(D)`, in seconds squared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_variance: Option<f64>,
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
        // 2 ms falls in the bucket 1.984..2.048 ms, reported at its middle.
        assert_eq!(s.p50_ms, 2.016);
        assert!(
            (100.0 * 31.0 / 32.0..=100.0).contains(&s.p99_ms),
            "{}",
            s.p99_ms
        );
        assert_eq!(d.negative(), 1);
    }

    #[test]
    fn buckets_tile_the_range_within_a_sixteenth() {
        let mut next = 0;
        for index in 0..bucket(MAX_HIST_MICROS) + 1 {
            let (low, width) = bucket_range(index);
            assert_eq!(low, next, "bucket {index}");
            assert_eq!(bucket(low), index);
            assert_eq!(bucket(low + width - 1), index);
            assert!(low < 2 * SUB || width * SUB <= low, "bucket {index}");
            next = low + width;
        }
        assert!(bucket(MAX_HIST_MICROS) < 464);
    }

    #[test]
    fn counts_widen_past_u16_without_losing_any() {
        let mut d = Distribution::default();
        for _ in 0..70_000 {
            d.record(Duration::from_micros(10));
        }
        d.record(Duration::from_micros(1000));
        assert!(matches!(d.counts, Counts::Wide(_)));
        let total: u64 = (0..d.counts.len()).map(|i| d.counts.get(i)).sum();
        assert_eq!(total, 70_001);
        assert_eq!(d.quantile_micros(0.5), 10.0);
        assert_eq!(d.summary().unwrap().p99_ms, 0.01);
    }

    proptest::proptest! {
        /// Every percentile is within 1/32 of the exact sample of that rank (or exact below
        /// 32 µs), and the histogram holds only the range between the extremes.
        #[test]
        fn percentiles_are_within_a_thirty_second(
            mut micros in proptest::collection::vec(0u64..5_000_000, 1..300),
        ) {
            let mut d = Distribution::default();
            for &m in &micros {
                d.record(Duration::from_micros(m));
            }
            micros.sort_unstable();
            for q in [0.5, 0.99] {
                let rank = ((q * micros.len() as f64).ceil() as usize).max(1);
                let exact = micros[rank - 1] as f64;
                let got = d.quantile_micros(q);
                proptest::prop_assert!((got - exact).abs() <= exact / 32.0, "{} vs {}", got, exact);
            }
            let span = bucket(micros[micros.len() - 1]) - bucket(micros[0]) + 1;
            proptest::prop_assert_eq!(d.heap_bytes(), span * 2);
        }
    }
}
