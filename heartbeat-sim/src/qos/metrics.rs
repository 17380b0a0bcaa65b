//! Chen, Toueg and Aguilera's QoS metrics, from the server's liveness transitions and the
//! simulation's ground truth.
//!
//! # Definitions
//! "Suspected" is taken at two levels: `down` (declared dead: the sense of Chen's metrics, and
//! the one the tables lead with) and `suspect` (state `suspect` or `down`).
//!
//! - A client is *reachable* while it is alive, its link is up and its heartbeats flow: from
//!   the arrival of the first heartbeat after its process started, its link was repaired or the
//!   server restarted, until it crashes, stops or its link is cut (see
//!   [`engine`](super::engine)).
//! - **Detection time T_D** of a crash at `c`: from `c` to the start of the suspicion that is
//!   still in force when the client is reachable again (its next process's first heartbeat
//!   arrives) or the run ends; 0 if that suspicion began before the crash. A crash with no such
//!   suspicion is *undetected*. Mean, p99 (nearest rank: the `ceil(0.99 n)`-th smallest) and
//!   max over all crashes.
//! - A **mistake** is a suspicion that begins while the client is reachable. Its **duration
//!   T_M** runs until the suspicion ends or the client stops being reachable (crash, cut),
//!   whichever is first: suspecting a client that is by then really unreachable is not wrong.
//!   A suspicion that begins while the client is unreachable is correct, however long it lasts.
//! - **Mistake rate λ_M**: mistakes per hour of reachable time; its inverse is the mean mistake
//!   recurrence time E(T_MR).
//! - **Query accuracy probability P_A**: the fraction of reachable time in which the client was
//!   not suspected, `1 - Σ T_M / reachable time`; in steady state this is Chen's
//!   `1 - E(T_M) / E(T_MR)`.

use std::time::Duration;

use serde_json::{Value, json};

use heartbeat_core::liveness::Liveness;

use super::engine::{ClientTruth, Period, Transition};

/// A level of suspicion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// `down`: declared dead.
    Down,
    /// `suspect` or worse.
    Suspect,
}

impl Level {
    fn holds(self, state: Liveness) -> bool {
        match self {
            Self::Down => state == Liveness::Down,
            Self::Suspect => matches!(state, Liveness::Suspect | Liveness::Down),
        }
    }
}

/// Raw counts at one level.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LevelTally {
    /// Detection time of every detected crash.
    pub detection: Vec<Duration>,
    /// Crashes never suspected to the end of their window.
    pub undetected: u64,
    /// Mistakes.
    pub mistakes: u64,
    /// Their total duration.
    pub mistake_time: Duration,
}

/// Raw counts over many runs, for one detector setting.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Total reachable time.
    pub reachable: Duration,
    /// Crashes.
    pub crashes: u64,
    /// At the `suspect` level.
    pub suspect: LevelTally,
    /// At the `down` level.
    pub down: LevelTally,
}

impl Tally {
    /// Adds one run: every transition of every client, the ground truth per client, and the
    /// end of the run.
    pub fn add_run(&mut self, transitions: &[Transition], truth: &[ClientTruth], end: Duration) {
        for (i, t) in truth.iter().enumerate() {
            let mine: Vec<&Transition> = transitions.iter().filter(|x| x.client == i).collect();
            self.reachable += t.reachable.iter().map(|p| p.to - p.from).sum::<Duration>();
            self.crashes += t.crashes.len() as u64;
            for (level, tally) in [
                (Level::Suspect, &mut self.suspect),
                (Level::Down, &mut self.down),
            ] {
                let suspected = suspicions(&mine, level, end);
                tally_level(tally, &suspected, t);
            }
        }
    }

    /// Adds another tally's counts to this one.
    pub fn merge(&mut self, other: Self) {
        self.reachable += other.reachable;
        self.crashes += other.crashes;
        for (mine, theirs) in [
            (&mut self.suspect, other.suspect),
            (&mut self.down, other.down),
        ] {
            mine.detection.extend(theirs.detection);
            mine.undetected += theirs.undetected;
            mine.mistakes += theirs.mistakes;
            mine.mistake_time += theirs.mistake_time;
        }
    }

    /// The metrics.
    pub fn summary(&self) -> Summary {
        Summary {
            crashes: self.crashes,
            reachable: self.reachable,
            suspect: level_summary(&self.suspect, self.reachable),
            down: level_summary(&self.down, self.reachable),
        }
    }
}

/// The periods in which a client was suspected at `level`, in order.
fn suspicions(transitions: &[&Transition], level: Level, end: Duration) -> Vec<Period> {
    let mut out = Vec::new();
    let mut since: Option<Duration> = None;
    for t in transitions {
        match (since, level.holds(t.to)) {
            (None, true) => since = Some(t.at),
            (Some(from), false) => {
                out.push(Period { from, to: t.at });
                since = None;
            }
            _ => {}
        }
    }
    if let Some(from) = since {
        out.push(Period {
            from,
            to: end.max(from),
        });
    }
    out
}

fn tally_level(tally: &mut LevelTally, suspected: &[Period], truth: &ClientTruth) {
    let mut r = 0;
    for s in suspected {
        while r < truth.reachable.len() && truth.reachable[r].to <= s.from {
            r += 1;
        }
        if let Some(p) = truth.reachable.get(r).filter(|p| p.from <= s.from) {
            tally.mistakes += 1;
            tally.mistake_time += s.to.min(p.to) - s.from;
        }
    }
    for c in &truth.crashes {
        match suspected
            .iter()
            .find(|s| s.from < c.until && s.to >= c.until)
        {
            Some(s) => tally.detection.push(s.from.saturating_sub(c.at)),
            None => tally.undetected += 1,
        }
    }
}

/// The metrics at one level.
#[derive(Clone, Debug, PartialEq)]
pub struct LevelSummary {
    /// Detected crashes.
    pub detected: u64,
    /// Mean detection time.
    pub detection_mean: Option<Duration>,
    /// 99th percentile (nearest rank) of the detection time.
    pub detection_p99: Option<Duration>,
    /// Largest detection time.
    pub detection_max: Option<Duration>,
    /// Crashes not detected.
    pub undetected: u64,
    /// Mistakes.
    pub mistakes: u64,
    /// Mistakes per hour of reachable time (λ_M).
    pub mistakes_per_hour: Option<f64>,
    /// Mean mistake duration (T_M).
    pub mistake_mean: Option<Duration>,
    /// Mean mistake recurrence time, reachable time per mistake (E(T_MR) = 1 / λ_M).
    pub recurrence_mean: Option<Duration>,
    /// Query accuracy probability (P_A).
    pub accuracy: Option<f64>,
}

/// The metrics of one detector setting.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// Crashes.
    pub crashes: u64,
    /// Reachable time.
    pub reachable: Duration,
    /// At the `suspect` level.
    pub suspect: LevelSummary,
    /// At the `down` level.
    pub down: LevelSummary,
}

fn level_summary(t: &LevelTally, reachable: Duration) -> LevelSummary {
    let mut d = t.detection.clone();
    d.sort_unstable();
    let n = d.len();
    let mean = (n > 0).then(|| {
        let total: u128 = d.iter().map(Duration::as_nanos).sum();
        Duration::from_nanos((total / n as u128) as u64)
    });
    let p99 = (n > 0).then(|| d[(n * 99).div_ceil(100).max(1) - 1]);
    let hours = reachable.as_secs_f64() / 3600.0;
    LevelSummary {
        detected: n as u64,
        detection_mean: mean,
        detection_p99: p99,
        detection_max: d.last().copied(),
        undetected: t.undetected,
        mistakes: t.mistakes,
        mistakes_per_hour: (hours > 0.0).then(|| t.mistakes as f64 / hours),
        mistake_mean: (t.mistakes > 0).then(|| t.mistake_time / t.mistakes as u32),
        recurrence_mean: (t.mistakes > 0).then(|| reachable / t.mistakes as u32),
        accuracy: (!reachable.is_zero())
            .then(|| 1.0 - t.mistake_time.as_secs_f64() / reachable.as_secs_f64()),
    }
}

/// Milliseconds with three decimals, as a JSON number (or null).
pub(crate) fn ms_value(d: Option<Duration>) -> Value {
    d.map_or(Value::Null, |d| json!(d.as_micros() as f64 / 1000.0))
}

/// A float rounded to `decimals`, as a JSON number (or null).
pub(crate) fn round_value(x: Option<f64>, decimals: i32) -> Value {
    x.map_or(Value::Null, |x| {
        let k = 10f64.powi(decimals);
        json!((x * k).round() / k)
    })
}

impl LevelSummary {
    /// As a JSON object; times in milliseconds.
    pub fn to_json(&self) -> Value {
        json!({
            "detected": self.detected,
            "detection_mean_ms": ms_value(self.detection_mean),
            "detection_p99_ms": ms_value(self.detection_p99),
            "detection_max_ms": ms_value(self.detection_max),
            "undetected": self.undetected,
            "mistakes": self.mistakes,
            "mistakes_per_hour": round_value(self.mistakes_per_hour, 3),
            "mistake_mean_ms": ms_value(self.mistake_mean),
            "recurrence_mean_ms": ms_value(self.recurrence_mean),
            "query_accuracy": round_value(self.accuracy, 9),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qos::engine::Crash;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn tr(at: u64, from: Liveness, to: Liveness) -> Transition {
        Transition {
            at: ms(at),
            client: 0,
            from,
            to,
        }
    }

    use Liveness::{Down, Suspect, Up};

    /// Reachable in each `[from, to)` of `reachable` (ms), crashed at `crash.0` until
    /// `crash.1`.
    fn truth(reachable: &[(u64, u64)], crash: (u64, u64)) -> ClientTruth {
        ClientTruth {
            reachable: reachable
                .iter()
                .map(|&(from, to)| Period {
                    from: ms(from),
                    to: ms(to),
                })
                .collect(),
            crashes: vec![Crash {
                at: ms(crash.0),
                until: ms(crash.1),
            }],
        }
    }

    #[test]
    fn mistakes_inside_reachable_periods_and_detection_after_crashes() {
        // Reachable 0..10 s, crash at 10 s, back at 20 s, reachable to the end (30 s).
        let truth = truth(&[(0, 10_000), (20_000, 30_000)], (10_000, 20_000));
        let transitions = [
            // A mistake at the suspect level only: 1 s to 1.2 s.
            tr(1_000, Up, Suspect),
            tr(1_200, Suspect, Up),
            // A mistake at both levels: 2 s to 2.5 s (down 2.1 s to 2.5 s).
            tr(2_000, Up, Suspect),
            tr(2_100, Suspect, Down),
            tr(2_500, Down, Up),
            // The crash: suspect at 10.2 s, down at 10.3 s, up again at 20 s.
            tr(10_200, Up, Suspect),
            tr(10_300, Suspect, Down),
            tr(20_000, Down, Up),
            // A mistake open at the end: 29 s to 30 s.
            tr(29_000, Up, Suspect),
            tr(29_000, Suspect, Down),
        ];
        let mut t = Tally::default();
        t.add_run(&transitions, &[truth], ms(30_000));
        assert_eq!(t.reachable, ms(20_000));
        assert_eq!(t.crashes, 1);
        assert_eq!(t.suspect.detection, vec![ms(200)]);
        assert_eq!(t.down.detection, vec![ms(300)]);
        assert_eq!((t.suspect.mistakes, t.suspect.mistake_time), (3, ms(1_700)));
        assert_eq!((t.down.mistakes, t.down.mistake_time), (2, ms(1_400)));
        let s = t.summary();
        assert_eq!(s.down.mistakes_per_hour, Some(2.0 / (20.0 / 3600.0)));
        assert_eq!(s.down.mistake_mean, Some(ms(700)));
        assert_eq!(s.down.recurrence_mean, Some(ms(10_000)));
        assert_eq!(s.down.accuracy, Some(1.0 - 1.4 / 20.0));
    }

    #[test]
    fn a_suspicion_lifted_before_the_window_ends_is_no_detection() {
        let truth = truth(&[(0, 5_000)], (5_000, 9_000));
        // Down, then a heartbeat still in flight at the crash brings it back up: not detected.
        let transitions = [
            tr(5_300, Up, Suspect),
            tr(5_400, Suspect, Down),
            tr(5_450, Down, Up),
        ];
        let mut t = Tally::default();
        t.add_run(&transitions, std::slice::from_ref(&truth), ms(9_000));
        assert_eq!((t.down.undetected, t.down.mistakes), (1, 0));
        // A mistake that runs into the crash: T_D is 0 and the mistake stops at the crash.
        let transitions = [tr(4_000, Up, Suspect), tr(4_500, Suspect, Down)];
        let mut t = Tally::default();
        t.add_run(&transitions, &[truth], ms(9_000));
        assert_eq!(t.down.detection, vec![Duration::ZERO]);
        assert_eq!((t.down.mistakes, t.down.mistake_time), (1, ms(500)));
    }

    #[test]
    fn p99_is_the_nearest_rank() {
        let t = LevelTally {
            detection: (1..=200).map(ms).collect(),
            ..LevelTally::default()
        };
        let s = level_summary(&t, ms(1000));
        assert_eq!(s.detection_p99, Some(ms(198)));
        assert_eq!(s.detection_max, Some(ms(200)));
        assert_eq!(s.detection_mean, Some(Duration::from_micros(100_500)));
        let one = LevelTally {
            detection: vec![ms(7)],
            ..LevelTally::default()
        };
        assert_eq!(level_summary(&one, ms(1)).detection_p99, Some(ms(7)));
    }
}
