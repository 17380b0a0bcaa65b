//! What the server accepts from a connection beyond the grammar: heartbeats no faster than the
//! declared interval ([`Pace`]), sequence numbers no further ahead than time allows
//! ([`Schedule`]), timestamps that are a time at all ([`check_stamp`]), and the per-client
//! clock offset ([`Skew`]) that keeps a skewed client's delays meaningful.
//!
//! Every check allows what an honest client on a bad network does: a released firewall
//! delivers old heartbeats in a burst (old numbers, sent in real time), a reconnecting client
//! jumps to the slot due now, clocks run at slightly different rates, and a suspended server's
//! monotonic clock misses the suspension (so elapsed time is read from both clocks, the larger
//! wins). See `PROTOCOL.md`, "Limits and plausibility".

use std::time::Duration;

use crate::error::{MAX_STAMP_OFFSET, Violation};
use crate::ids::Seq;
use crate::time::{Now, UnixTime};

/// Heartbeats a connection may send beyond one per interval since it was accepted. An honest
/// client needs two (the one sent on connect, and the next slot, which may follow at once);
/// the rest lets a legacy client, held to the minimum interval, deliver a small burst on a
/// young connection.
const SLACK_BEATS: u64 = 8;

/// Clocks may run apart by this much (1/1000, far more than any crystal): elapsed time is
/// stretched by it before it is turned into heartbeats.
const RATE_TOLERANCE_DIVISOR: i128 = 1000;

/// How much later than the freshest heartbeat a client has sent the reference heartbeat of a
/// [`Schedule`] may have arrived. A sequence number is judged against the client's freshest
/// heartbeat so far, so only a client whose every heartbeat was delayed this long could be
/// wronged, and a wronged client only loses the connection: the next one starts afresh.
const DELAY_ALLOWANCE: Duration = Duration::from_secs(5);

/// Arrivals the clock offset is estimated over ([`Skew`]).
const SKEW_WINDOW: usize = 16;

/// Time from `from` to `to`, the larger of the two clocks' readings: a suspended machine's
/// monotonic clock misses the suspension, and a wall clock can be stepped back.
fn elapsed(from: Now, to: Now) -> Duration {
    let mono = to.mono.saturating_duration_since(from.mono);
    let unix = to
        .unix
        .as_duration()
        .saturating_sub(from.unix.as_duration());
    mono.max(unix)
}

fn nanos(d: Duration) -> i128 {
    i128::try_from(d.as_nanos()).unwrap_or(i128::MAX)
}

/// `d` stretched by the rate tolerance, in nanoseconds.
fn tolerant_nanos(d: Duration) -> i128 {
    let n = nanos(d);
    n.saturating_add(n / RATE_TOLERANCE_DIVISOR)
}

/// One connection's heartbeat count against its interval: at most one per interval since the
/// connection was accepted, plus [`SLACK_BEATS`]. A burst of held heartbeats passes (they were
/// sent in real time after the connection opened); a flood, or a stream of repeats, does not.
#[derive(Clone, Copy, Debug)]
pub(super) struct Pace {
    since: Now,
    beats: u64,
}

impl Pace {
    /// A connection accepted at `now`.
    pub(super) fn new(now: Now) -> Self {
        Self {
            since: now,
            beats: 0,
        }
    }

    /// One more heartbeat at `now`, against `interval`.
    pub(super) fn beat(&mut self, now: Now, interval: Duration) -> Result<(), Violation> {
        self.beats = self.beats.saturating_add(1);
        let elapsed = elapsed(self.since, now);
        let slots = tolerant_nanos(elapsed) / nanos(interval).max(1);
        let allowed = u64::try_from(slots)
            .unwrap_or(u64::MAX)
            .saturating_add(SLACK_BEATS);
        if self.beats > allowed {
            return Err(Violation::TooFast {
                beats: self.beats,
                elapsed,
                interval,
            });
        }
        Ok(())
    }

    /// The connection's interval changes at `now` from `old` (an `INTERVAL`): what it sent
    /// beyond one per `old` interval so far stays counted, and from now on heartbeats are
    /// measured against the new interval. A client slowing down is not blamed for the
    /// heartbeats it sent faster before, and a fast one cannot clear its excess this way.
    pub(super) fn rebase(&mut self, now: Now, old: Duration) {
        let elapsed = elapsed(self.since, now);
        let slots = tolerant_nanos(elapsed) / nanos(old).max(1);
        let slots = u64::try_from(slots).unwrap_or(u64::MAX);
        self.beats = self.beats.saturating_sub(slots);
        self.since = now;
    }
}

/// One client session's sequence numbers against time (the session spans reconnects).
///
/// Heartbeat `s` is sent at `start + (s − 1) × interval`, so its offset
/// `arrival − (s − 1) × interval` is `start` plus its delay: never earlier than `start`. The
/// schedule keeps a reference offset, that of the freshest heartbeat seen (moved down by at most
/// a quarter interval per heartbeat, so a client cannot talk it down), and refuses a heartbeat
/// whose offset is earlier than the reference by more than [`DELAY_ALLOWANCE`] plus the rate
/// tolerance of the time since the session's first heartbeat. The first heartbeat of a session
/// may carry any number whose schedule starts after 1970.
///
/// A client that changes its interval (`INTERVAL`) sends heartbeat `s ≥ s₀` at
/// `start + shift + (s − s₀) × new interval`, where `shift` is the time its earlier heartbeats
/// took: [`rebase`](Self::rebase) moves the base to `s₀` and keeps the shift, so the schedule
/// stays anchored to the session's first heartbeat.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Schedule {
    base: Option<Base>,
}

#[derive(Clone, Copy, Debug)]
struct Base {
    /// The session's first heartbeat: when it arrived and its sequence number.
    at: Now,
    seq: u64,
    /// Nanoseconds from the first heartbeat's schedule slot to that of `seq`: 0 until the
    /// interval changes, then the time the heartbeats before `seq` took at their intervals.
    shift: i128,
    /// The reference offset, in nanoseconds relative to the first heartbeat's.
    reference: i128,
}

impl Schedule {
    /// Checks heartbeat `seq` arriving at `now` from a client sending every `interval`, and
    /// learns from it. On `Err` nothing is learned and the schedule starts afresh with the
    /// client's next heartbeat (a wrong reference cannot lock a client out).
    pub(super) fn check(
        &mut self,
        now: Now,
        seq: Seq,
        interval: Duration,
    ) -> Result<(), Violation> {
        let per = nanos(interval).max(1);
        let Some(base) = &mut self.base else {
            let since_epoch = nanos(now.unix.as_duration());
            let max = since_epoch / per + 1;
            if i128::from(seq.0) > max {
                return Err(seq_ahead(seq, max));
            }
            self.base = Some(Base {
                at: now,
                seq: seq.0,
                shift: 0,
                reference: 0,
            });
            return Ok(());
        };
        let elapsed = elapsed(base.at, now);
        let since = nanos(elapsed) - base.shift;
        let offset = since - (i128::from(seq.0) - i128::from(base.seq)) * per;
        let allowance = tolerant_nanos(elapsed) - nanos(elapsed) + nanos(DELAY_ALLOWANCE);
        if offset < base.reference - allowance {
            let max = i128::from(base.seq) + (since - base.reference + allowance) / per;
            self.base = None;
            return Err(seq_ahead(seq, max));
        }
        if offset < base.reference {
            base.reference = offset.max(base.reference - per / 4);
        }
        Ok(())
    }

    /// The client sends every new interval from heartbeat `seq` on, after `old` before it:
    /// later heartbeats are checked against the new interval (passed to
    /// [`check`](Self::check)) from `seq`'s slot on. Nothing to do before the session's first
    /// heartbeat.
    pub(super) fn rebase(&mut self, seq: Seq, old: Duration) {
        if let Some(base) = &mut self.base {
            let slots = i128::from(seq.0) - i128::from(base.seq);
            base.shift = base
                .shift
                .saturating_add(slots.saturating_mul(nanos(old).max(1)));
            base.seq = seq.0;
        }
    }

    /// Forgets the session: its next heartbeat is a first one (a new session, a restart).
    pub(super) fn reset(&mut self) {
        self.base = None;
    }
}

fn seq_ahead(seq: Seq, max: i128) -> Violation {
    Violation::SeqAhead {
        seq,
        max: Seq(u64::try_from(max.max(1)).unwrap_or(u64::MAX)),
    }
}

/// Refuses a stamp further than [`MAX_STAMP_OFFSET`] from the server's clock `now`.
pub(super) fn check_stamp(now: UnixTime, sent: UnixTime) -> Result<(), Violation> {
    let ahead = i128::from(sent.as_nanos()) - i128::from(now.as_nanos());
    if ahead.unsigned_abs() > MAX_STAMP_OFFSET.as_nanos() {
        let secs = ahead / 1_000_000_000;
        return Err(Violation::Timestamp {
            sent,
            offset_secs: i64::try_from(secs).unwrap_or(i64::MAX),
        });
    }
    Ok(())
}

/// A client's clock offset, estimated from the smallest one-way delay of each of its last
/// [`SKEW_WINDOW`] arrivals: the least delayed heartbeat is the one closest to the pure
/// offset. A negative estimate (the client's clock ahead) is certain at once; a positive one
/// (behind, or a path that is that slow) only once the window is full.
///
/// While the estimate is beyond the maximum skew, the client is skewed: delays are measured
/// from the estimate (what the network added beyond the fastest recent heartbeat), so its
/// delay statistics stay meaningful. It is skewed again only when it changes by more than the
/// maximum skew, and in sync again once within half of it.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Skew {
    minima: [i64; SKEW_WINDOW],
    len: usize,
    next: usize,
    /// The estimate last reported as skew, while skewed.
    reported: Option<i64>,
}

/// A change [`Skew`] reports: the estimated offset (the client's clock minus the server's,
/// nanoseconds) and whether the client is now skewed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SkewChange {
    pub(crate) offset_ns: i64,
    pub(crate) skewed: bool,
}

impl Skew {
    /// One arrival whose least delayed heartbeat took `min_delay_ns` (receive minus send
    /// stamp). Returns a change to report.
    pub(crate) fn on_arrival(&mut self, min_delay_ns: i64, max: Duration) -> Option<SkewChange> {
        self.minima[self.next] = min_delay_ns;
        self.next = (self.next + 1) % SKEW_WINDOW;
        self.len = (self.len + 1).min(SKEW_WINDOW);
        let estimate = self.estimate()?;
        let max = i64::try_from(max.as_nanos()).unwrap_or(i64::MAX);
        let beyond = estimate < -max || (estimate > max && self.len == SKEW_WINDOW);
        let change = match self.reported {
            None if beyond => true,
            Some(_) if estimate.unsigned_abs() <= (max / 2).unsigned_abs() => {
                self.reported = None;
                return Some(SkewChange {
                    offset_ns: estimate.saturating_neg(),
                    skewed: false,
                });
            }
            Some(r) => beyond && estimate.abs_diff(r) > max.unsigned_abs(),
            None => false,
        };
        if !change {
            return None;
        }
        self.reported = Some(estimate);
        Some(SkewChange {
            offset_ns: estimate.saturating_neg(),
            skewed: true,
        })
    }

    /// What to subtract from a delay (receive minus send stamp) while skewed: the least delay
    /// of the recent arrivals, which is the server's clock minus the client's; else 0.
    pub(crate) fn correction(&self) -> i64 {
        match self.reported {
            Some(_) => self.estimate().unwrap_or(0),
            None => 0,
        }
    }

    /// The estimated offset, the client's clock minus the server's, while skewed.
    pub(crate) fn offset(&self) -> Option<i64> {
        self.reported.and(self.estimate()).map(i64::saturating_neg)
    }

    /// The least delay of the recent arrivals: the server's clock minus the client's, plus the
    /// fastest path.
    fn estimate(&self) -> Option<i64> {
        self.minima[..self.len].iter().copied().min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn t0() -> Now {
        Now::test_origin()
    }

    #[test]
    fn pace_allows_one_per_interval_and_a_little_slack() {
        let t0 = t0();
        let mut p = Pace::new(t0);
        for _ in 0..SLACK_BEATS {
            assert_eq!(p.beat(t0, 10 * MS), Ok(()));
        }
        assert!(matches!(
            p.beat(t0, 10 * MS),
            Err(Violation::TooFast { beats, .. }) if beats == SLACK_BEATS + 1
        ));
        // A burst of held heartbeats, sent over a second: fine.
        let mut p = Pace::new(t0);
        let later = t0.advanced(Duration::from_secs(1));
        for _ in 0..100 + SLACK_BEATS {
            assert_eq!(p.beat(later, 10 * MS), Ok(()));
        }
        assert!(p.beat(later, 10 * MS).is_err());
    }

    #[test]
    fn pace_reads_the_larger_clock() {
        // The server was suspended: its monotonic clock missed 10 s, its wall clock did not.
        let t0 = t0();
        let mut p = Pace::new(t0);
        let woke = Now {
            mono: t0.mono + Duration::from_secs(1),
            unix: t0.unix.saturating_add(Duration::from_secs(11)),
        };
        for _ in 0..1100 {
            assert_eq!(p.beat(woke, 10 * MS), Ok(()));
        }
    }

    #[test]
    fn schedule_allows_time_and_refuses_jumps() {
        let t0 = t0();
        let second = Duration::from_secs(1);
        let mut s = Schedule::default();
        assert_eq!(s.check(t0, Seq(2), second), Ok(()));
        // Ten seconds later, seq 12 is due; a reconnect after an outage jumps to it.
        assert_eq!(s.check(t0.advanced(10 * second), Seq(12), second), Ok(()));
        // The allowance (5 s of delay, 0.1 % of rate) but no more.
        assert_eq!(s.check(t0.advanced(10 * second), Seq(17), second), Ok(()));
        assert_eq!(
            s.check(t0.advanced(10 * second), Seq(1 << 62), second),
            Err(Violation::SeqAhead {
                seq: Seq(1 << 62),
                max: Seq(17)
            })
        );
        // After a refusal the next heartbeat starts afresh, within what 1970 allows.
        assert_eq!(s.check(t0.advanced(10 * second), Seq(20), second), Ok(()));
        let mut s = Schedule::default();
        assert!(matches!(
            s.check(t0, Seq(1 << 63), 10 * MS),
            Err(Violation::SeqAhead { .. })
        ));
    }

    #[test]
    fn an_interval_change_keeps_the_schedule_anchored() {
        let t0 = t0();
        let second = Duration::from_secs(1);
        let mut s = Schedule::default();
        // Every second for 10 s (seq 1 to 11), then every 100 ms from seq 11 on.
        assert_eq!(s.check(t0, Seq(1), second), Ok(()));
        assert_eq!(s.check(t0.advanced(10 * second), Seq(11), second), Ok(()));
        s.rebase(Seq(11), second);
        // 2 s later, seq 31 is due at 100 ms; the allowance (5 s) reaches seq 81, no further.
        let later = t0.advanced(12 * second);
        assert_eq!(s.check(later, Seq(31), 100 * MS), Ok(()));
        assert_eq!(s.check(later, Seq(81), 100 * MS), Ok(()));
        assert!(matches!(
            s.check(later, Seq(83), 100 * MS),
            Err(Violation::SeqAhead { .. })
        ));
        // Without the shift (a base moved to seq 11 at t0), seq 131 would pass: 10 s early.
        let mut s = Schedule::default();
        assert_eq!(s.check(t0, Seq(1), second), Ok(()));
        assert_eq!(s.check(t0.advanced(10 * second), Seq(11), second), Ok(()));
        s.rebase(Seq(11), second);
        assert!(s.check(later, Seq(131), 100 * MS).is_err());
    }

    #[test]
    fn pace_keeps_the_excess_across_an_interval_change() {
        let t0 = t0();
        let second = Duration::from_secs(1);
        // 60 s at 100 ms (600 heartbeats, honest), then every second: not too fast.
        let mut p = Pace::new(t0);
        let minute = t0.advanced(60 * second);
        for _ in 0..600 {
            assert_eq!(p.beat(minute, 100 * MS), Ok(()));
        }
        p.rebase(minute, 100 * MS);
        assert_eq!(p.beat(minute.advanced(second), second), Ok(()));
        // A flood before the change stays a flood after it.
        let mut p = Pace::new(t0);
        for _ in 0..SLACK_BEATS {
            assert_eq!(p.beat(t0, 100 * MS), Ok(()));
        }
        p.rebase(t0, 100 * MS);
        assert!(p.beat(t0, 10 * MS).is_err());
    }

    #[test]
    fn schedule_cannot_be_talked_down() {
        // A client that jumps by the whole allowance at every heartbeat moves the reference by
        // a quarter interval each time, so it runs out of room within a few heartbeats.
        let t0 = t0();
        let second = Duration::from_secs(1);
        let mut s = Schedule::default();
        assert_eq!(s.check(t0, Seq(1), second), Ok(()));
        let mut refused = None;
        for i in 1..40u64 {
            let at = t0.advanced(Duration::from_millis(10 * i));
            if s.check(at, Seq(1 + 5 * i), second).is_err() {
                refused = Some(i);
                break;
            }
        }
        assert_eq!(refused, Some(2));
    }

    #[test]
    fn stamps_more_than_a_day_off_are_refused() {
        let now = UnixTime::from_nanos(1_700_000_000_000_000_000);
        assert_eq!(check_stamp(now, now), Ok(()));
        let hour_ahead = now.saturating_add(Duration::from_secs(3600));
        assert_eq!(check_stamp(now, hour_ahead), Ok(()));
        assert_eq!(
            check_stamp(now, UnixTime::EPOCH),
            Err(Violation::Timestamp {
                sent: UnixTime::EPOCH,
                offset_secs: -1_700_000_000
            })
        );
        assert!(check_stamp(now, UnixTime::from_nanos(u64::MAX)).is_err());
    }

    #[test]
    fn skew_ahead_is_reported_at_once_behind_once_the_window_is_full() {
        let sec = 1_000_000_000i64;
        let mut k = Skew::default();
        let change = k.on_arrival(-3600 * sec, Duration::from_secs(1));
        assert_eq!(
            change,
            Some(SkewChange {
                offset_ns: 3600 * sec,
                skewed: true
            })
        );
        assert_eq!(k.correction(), -3600 * sec);
        assert_eq!(
            k.on_arrival(-3600 * sec + 5_000_000, Duration::from_secs(1)),
            None
        );
        // Behind (or a slow path): only after SKEW_WINDOW arrivals all that late.
        let mut k = Skew::default();
        for _ in 1..SKEW_WINDOW {
            assert_eq!(k.on_arrival(2 * sec, Duration::from_secs(1)), None);
        }
        assert!(k.on_arrival(2 * sec, Duration::from_secs(1)).is_some());
        // Back in sync within half the maximum: a clock 2 s behind never shows 0.4 s.
        assert_eq!(
            k.on_arrival(400_000_000, Duration::from_secs(1)),
            Some(SkewChange {
                offset_ns: -400_000_000,
                skewed: false
            })
        );
        assert_eq!(k.correction(), 0);
    }
}
