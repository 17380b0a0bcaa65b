//! Client liveness: the per-client machine that turns a failure detector's suspicion into
//! `up`, `suspect`, `down` and `left`.

use std::fmt;
use std::time::{Duration, Instant};

use crate::detector::{Detector, DetectorConfig, DetectorKind};
use crate::ids::Seq;
use crate::timer::DeadlineQueue;

/// A client's liveness, as its failure detector sees it.
///
/// `Up` until the detector's suspicion reaches its suspect level, `Suspect` until it reaches its
/// down level, then `Down` (declared dead). Any heartbeat brings a client back `Up`. `Left` is a
/// clean goodbye (`BYE`): not a failure, and not watched any more.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Liveness {
    /// Declared dead.
    Down,
    /// Said goodbye.
    Left,
    /// Late beyond the suspect level.
    Suspect,
    /// Heard from in time.
    Up,
}

impl Liveness {
    /// `"down"`, `"left"`, `"suspect"` or `"up"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Down => "down",
            Self::Left => "left",
            Self::Suspect => "suspect",
            Self::Up => "up",
        }
    }
}

impl fmt::Display for Liveness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A change of one client's [`Liveness`], as [`Watches`] reports it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Change {
    /// The client, by the index its owner watches it under.
    pub client: usize,
    /// The state before.
    pub from: Liveness,
    /// The state after.
    pub to: Liveness,
    /// Time since the client's last heartbeat before this change (`None` before the first).
    pub since_last: Option<Duration>,
    /// The detector's suspicion when it changed (for `Up`, just before the heartbeat; 0 for a
    /// client without a detector yet).
    pub suspicion: f64,
    /// Which detector decided.
    pub detector: DetectorKind,
}

/// The liveness of many clients: one machine per client (its state, its failure detector and
/// its next check) and one queue of those checks, ordered by instant and then client index.
///
/// This is the liveness rule, in one place, for the server and for the simulator's replay of
/// recorded arrivals (`heartbeat-sim`'s `qos::replay`), which must reach the very same
/// decisions:
/// - [`observe`](Self::observe): an arrival feeds its heartbeats to the client's detector
///   (built at the first arrival whose interval is known, or again after a
///   [`reset`](Self::reset)); a client that was not `Up` is `Up` again;
/// - after either, the next check is armed: at `reaches(suspect)` when `Up`, at `reaches(down)`
///   when `Suspect`, none when `Down` or `Left`; an earlier queued check is kept (it re-arms
///   when it is due, so moving a check later costs nothing);
/// - [`handle_timeout`](Self::handle_timeout): a due check moves `Up` to `Suspect` and
///   `Suspect` to `Down` as far as the suspicion allows, and tells the detector
///   `set_available(false)` on `Down`;
/// - [`leave`](Self::leave) (a goodbye) makes the client `Left` and drops its check;
///   [`start`](Self::start) forgets a client altogether;
/// - [`restore`](Self::restore) watches a client again after its owner restarted, with no
///   history: a silent client is convicted the detector's grace after the restore.
///
/// Clients are dense indices chosen by the owner (the server's record slots, the simulator's
/// client numbers). Sans-IO: every call that depends on time takes `now`.
#[derive(Debug)]
pub struct Watches {
    detector: DetectorConfig,
    watches: Vec<Watch>,
    checks: DeadlineQueue<usize>,
}

/// One client's machine.
#[derive(Debug)]
struct Watch {
    state: Liveness,
    /// Built at the first heartbeat whose interval is known.
    detector: Option<Box<dyn Detector>>,
    /// The check this client has in the queue (older entries in the queue are stale).
    check_at: Option<Instant>,
    /// The detector was primed by [`Watches::restore`], not by a heartbeat: the first real
    /// arrival replaces it.
    primed: bool,
}

impl Watch {
    fn new() -> Self {
        Self {
            state: Liveness::Up,
            detector: None,
            check_at: None,
            primed: false,
        }
    }
}

impl Watches {
    /// No clients yet; each client's detector will be built from `detector`.
    pub fn new(detector: DetectorConfig) -> Self {
        Self {
            detector,
            watches: Vec::new(),
            checks: DeadlineQueue::new(),
        }
    }

    // ---- getters ----

    /// Client `client`'s liveness. `Up` for a client that was never started or observed.
    pub fn state(&self, client: usize) -> Liveness {
        self.watches.get(client).map_or(Liveness::Up, |w| w.state)
    }

    /// Client `client`'s failure detector, once its interval is known.
    pub fn detector(&self, client: usize) -> Option<&dyn Detector> {
        self.watches.get(client)?.detector.as_deref()
    }

    /// When the earliest check is due, `None` without any. May be a stale check (a client
    /// re-armed later); running it early is harmless.
    pub fn next_check(&self) -> Option<Instant> {
        self.checks.next()
    }

    /// When the checks would move client `client` to `state` (`Suspect` or `Down`) if nothing
    /// more were heard from it: the rule read ahead, without running it. `None` for any other
    /// `state`, for a client without a detector or already in `state` or past it (`Down`,
    /// `Left`), and when the detector never reaches the level.
    ///
    /// The checks run at `reaches(suspect)` and then at `reaches(down)`, and a check moves the
    /// client as far as its suspicion allows, so a silent `Up` client is `Suspect` at the first
    /// and `Down` at the later of the two. Checks moved by [`defer_due`](Self::defer_due) run
    /// later than this. A replay uses it for Chen, Toueg and Aguilera's detection time of a
    /// crash right after the last arrival.
    pub fn convicts_at(&self, client: usize, state: Liveness) -> Option<Instant> {
        let w = self.watches.get(client)?;
        let det = w.detector.as_ref()?;
        let levels = det.levels();
        match (w.state, state) {
            (Liveness::Up, Liveness::Suspect) => det.reaches(levels.suspect),
            (Liveness::Up, Liveness::Down) => {
                let suspect = det.reaches(levels.suspect)?;
                det.reaches(levels.down).map(|down| down.max(suspect))
            }
            (Liveness::Suspect, Liveness::Down) => det.reaches(levels.down),
            _ => None,
        }
    }

    // ---- inputs ----

    /// Watches client `client` afresh: `Up`, no detector, no check. For a new client, and for
    /// a slot reused after its client was forgotten.
    pub fn start(&mut self, client: usize) {
        if client >= self.watches.len() {
            self.watches.resize_with(client + 1, Watch::new);
        }
        if let Some(at) = self.watches[client].check_at.take() {
            self.checks.remove(at, &client);
        }
        self.watches[client] = Watch::new();
    }

    /// Forgets client `client`'s timing history: a new session of the client process. Its
    /// next arrival builds a new detector; its state stays until then.
    pub fn reset(&mut self, client: usize) {
        if let Some(w) = self.watches.get_mut(client) {
            w.detector = None;
            w.primed = false;
        }
    }

    /// Watches client `client` again after the owner restarted at `now`, in the `state` it
    /// had when the owner saved it; nothing of its timing history is known.
    ///
    /// `Left` and `Down` stay as they were, unwatched until the client is heard from. `Up` and
    /// `Suspect` become `Up`, with (when `interval` is known) a detector primed by one arrival
    /// at `now`: a client that stays silent is suspected and convicted as one last heard at the
    /// restore would be, after the detector's usual grace. Its first real arrival replaces the
    /// primed detector with a fresh one, so the restore's instant is never learned as an
    /// interval (nor, for `chen`, as a point of the sender's schedule).
    pub fn restore(
        &mut self,
        now: Instant,
        client: usize,
        state: Liveness,
        interval: Option<Duration>,
    ) {
        self.start(client);
        let w = &mut self.watches[client];
        match state {
            Liveness::Down | Liveness::Left => w.state = state,
            Liveness::Suspect | Liveness::Up => {
                if let Some(interval) = interval {
                    let mut det = self.detector.build(interval);
                    det.heartbeat(now, Seq(0));
                    w.detector = Some(det);
                    w.primed = true;
                    self.arm(client);
                }
            }
        }
    }

    /// One arrival of heartbeats from client `client` at `now`: they are fed to its detector in
    /// order, and a client that was not `Up` is `Up` again (the returned change). `interval`
    /// is the client's declared or estimated interval; while it is unknown there is no
    /// detector and nothing changes.
    pub fn observe(
        &mut self,
        now: Instant,
        client: usize,
        interval: Option<Duration>,
        seqs: impl IntoIterator<Item = Seq>,
    ) -> Option<Change> {
        if client >= self.watches.len() {
            self.start(client);
        }
        let w = &mut self.watches[client];
        if w.detector.is_none() {
            w.detector = interval.map(|i| self.detector.build(i));
        }
        let det = w.detector.as_mut()?;
        // What the change back to up reports is read before the heartbeats move the detector
        // (and only then: most heartbeats find the client up).
        let back_up = (w.state != Liveness::Up).then(|| Change {
            client,
            from: w.state,
            to: Liveness::Up,
            since_last: since_last(det.as_ref(), now),
            suspicion: det.suspicion(now),
            detector: det.kind(),
        });
        if std::mem::take(&mut w.primed) {
            // Primed at a restore: the first real arrival starts the history.
            if let Some(interval) = interval {
                *det = self.detector.build(interval);
            }
        }
        for seq in seqs {
            det.heartbeat(now, seq);
        }
        if back_up.is_some() {
            w.state = Liveness::Up;
        }
        self.arm(client);
        back_up
    }

    /// Client `client` said goodbye at `now`: it is `Left` (the returned change, unless it
    /// already was) and not watched until it is heard from again.
    pub fn leave(&mut self, now: Instant, client: usize) -> Option<Change> {
        let w = self.watches.get_mut(client)?;
        if w.state == Liveness::Left {
            return None;
        }
        let det = w.detector.as_deref();
        let change = Change {
            client,
            from: w.state,
            to: Liveness::Left,
            since_last: det.and_then(|d| since_last(d, now)),
            suspicion: det.map_or(0.0, |d| d.suspicion(now)),
            detector: self.detector.kind(),
        };
        w.state = Liveness::Left;
        if let Some(at) = w.check_at.take() {
            self.checks.remove(at, &client);
        }
        Some(change)
    }

    /// Runs every check due at or before `now`, judging each client at `now`, in the queue's
    /// order; `on_change` gets each change as it happens (a check can make two: `Up` to
    /// `Suspect` to `Down`). An early call does nothing.
    pub fn handle_timeout(&mut self, now: Instant, mut on_change: impl FnMut(Change)) {
        while let Some((at, client)) = self.checks.pop_due(now) {
            if self.watches[client].check_at == Some(at) {
                self.watches[client].check_at = None;
                self.evaluate(now, client, &mut on_change);
            }
        }
    }

    /// Moves every check due at or before `now` to `until` (later than `now`) without running
    /// it: the owner was stalled, so what is due now would be judged on stale evidence.
    pub fn defer_due(&mut self, now: Instant, until: Instant) {
        debug_assert!(until > now, "a deferred check must move past now");
        if until <= now {
            return;
        }
        while let Some((at, client)) = self.checks.pop_due(now) {
            let w = &mut self.watches[client];
            if w.check_at == Some(at) {
                w.check_at = Some(until);
                self.checks.push(until, client);
            }
        }
    }

    // ---- internals ----

    /// Moves `client` along its states as far as its detector says at `now`, then re-arms.
    fn evaluate(&mut self, now: Instant, client: usize, on_change: &mut impl FnMut(Change)) {
        let w = &mut self.watches[client];
        let Some(det) = w.detector.as_mut() else {
            return;
        };
        let levels = det.levels();
        let suspicion = det.suspicion(now);
        let change = |from, to| Change {
            client,
            from,
            to,
            since_last: since_last(det.as_ref(), now),
            suspicion,
            detector: det.kind(),
        };
        if w.state == Liveness::Up && suspicion >= levels.suspect {
            on_change(change(Liveness::Up, Liveness::Suspect));
            w.state = Liveness::Suspect;
        }
        if w.state == Liveness::Suspect && suspicion >= levels.down {
            on_change(change(Liveness::Suspect, Liveness::Down));
            w.state = Liveness::Down;
            // Akka: what is measured while a client is down is not learned as an interval.
            det.set_available(false);
        }
        self.arm(client);
    }

    /// Queues `client`'s next check: when its detector reaches the next level.
    fn arm(&mut self, client: usize) {
        let w = &mut self.watches[client];
        let Some(det) = w.detector.as_ref() else {
            return;
        };
        let levels = det.levels();
        let level = match w.state {
            Liveness::Up => levels.suspect,
            Liveness::Suspect => levels.down,
            Liveness::Down | Liveness::Left => return,
        };
        let Some(at) = det.reaches(level) else {
            return;
        };
        // An earlier check, even a stale one, re-arms when it is due.
        if w.check_at.is_some_and(|queued| queued <= at) {
            return;
        }
        w.check_at = Some(at);
        self.checks.push(at, client);
    }
}

/// Time since the detector's last heartbeat, `None` before the first.
fn since_last(det: &dyn Detector, now: Instant) -> Option<Duration> {
    det.last_heartbeat()
        .map(|t| now.saturating_duration_since(t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detector::DetectorKind;

    const SECOND: Duration = Duration::from_secs(1);

    fn origin() -> Instant {
        crate::Now::test_origin().mono
    }

    /// The fixed detector: with a 1 s interval and its default 2 s grace, suspect 2 s and
    /// down 3 s after the last heartbeat.
    fn fixed() -> Watches {
        Watches::new(DetectorConfig::new(DetectorKind::Fixed))
    }

    fn changes(w: &mut Watches, now: Instant) -> Vec<(usize, Liveness, Liveness)> {
        let mut v = Vec::new();
        w.handle_timeout(now, |c| v.push((c.client, c.from, c.to)));
        v
    }

    #[test]
    fn silence_makes_a_client_suspect_then_down_and_a_heartbeat_brings_it_back() {
        use Liveness::{Down, Suspect, Up};
        let t0 = origin();
        let mut w = fixed();
        w.start(0);
        assert_eq!(w.observe(t0, 0, Some(SECOND), [Seq(1)]), None);
        assert_eq!(w.next_check(), Some(t0 + 2 * SECOND));
        assert_eq!(
            changes(&mut w, t0 + SECOND),
            [],
            "an early call does nothing"
        );
        assert_eq!(changes(&mut w, t0 + 2 * SECOND), [(0, Up, Suspect)]);
        assert_eq!(w.next_check(), Some(t0 + 3 * SECOND));
        assert_eq!(changes(&mut w, t0 + 3 * SECOND), [(0, Suspect, Down)]);
        assert_eq!((w.state(0), w.next_check()), (Down, None));
        let back = w
            .observe(t0 + 9 * SECOND, 0, Some(SECOND), [Seq(10)])
            .unwrap();
        assert_eq!((back.from, back.to), (Down, Up));
        assert_eq!(back.since_last, Some(9 * SECOND));
        assert_eq!(back.detector, DetectorKind::Fixed);
        assert_eq!(w.next_check(), Some(t0 + 11 * SECOND));
    }

    #[test]
    fn a_late_check_convicts_in_one_go_in_order() {
        use Liveness::{Down, Suspect, Up};
        let t0 = origin();
        let mut w = fixed();
        for client in [1, 0] {
            w.start(client);
            w.observe(t0, client, Some(SECOND), [Seq(1)]);
        }
        // Same instant: by client index, each up -> suspect -> down at once.
        assert_eq!(
            changes(&mut w, t0 + 5 * SECOND),
            [
                (0, Up, Suspect),
                (0, Suspect, Down),
                (1, Up, Suspect),
                (1, Suspect, Down)
            ]
        );
    }

    #[test]
    fn a_goodbye_drops_the_check_and_start_forgets() {
        let t0 = origin();
        let mut w = fixed();
        w.start(0);
        w.observe(t0, 0, Some(SECOND), [Seq(1), Seq(2)]);
        let left = w.leave(t0 + SECOND, 0).unwrap();
        assert_eq!((left.from, left.to), (Liveness::Up, Liveness::Left));
        assert_eq!(left.since_last, Some(SECOND));
        assert_eq!(w.next_check(), None, "a client that left is not watched");
        assert_eq!(w.leave(t0 + SECOND, 0), None, "once");
        w.start(0);
        assert_eq!((w.state(0), w.next_check()), (Liveness::Up, None));
    }

    #[test]
    fn without_an_interval_there_is_no_detector_and_no_check() {
        let t0 = origin();
        let mut w = fixed();
        w.start(0);
        assert_eq!(w.observe(t0, 0, None, [Seq(1)]), None);
        assert_eq!(w.next_check(), None);
        // A reset forgets the detector; the next arrival builds a new one.
        w.observe(t0, 0, Some(SECOND), [Seq(2)]);
        w.reset(0);
        assert_eq!(
            changes(&mut w, t0 + 9 * SECOND),
            [],
            "no detector, no verdict"
        );
        w.observe(t0 + 9 * SECOND, 0, Some(SECOND), [Seq(1)]);
        assert_eq!(w.next_check(), Some(t0 + 11 * SECOND));
    }

    /// `convicts_at` reads the rule ahead: for every detector, after a jittery history, the
    /// checks move a silent client exactly when it says, and not a nanosecond earlier.
    #[test]
    fn convicts_at_is_when_the_checks_convict() {
        use Liveness::{Down, Suspect, Up};
        let t0 = origin();
        let ms = Duration::from_millis;
        for kind in DetectorKind::ALL {
            let mut w = Watches::new(DetectorConfig::new(kind));
            w.start(0);
            assert_eq!(w.convicts_at(0, Down), None, "{kind}: no detector yet");
            let mut t = t0;
            for (i, gap) in [0, 90, 130, 95, 110, 70, 150, 100].into_iter().enumerate() {
                t += ms(gap);
                w.observe(t, 0, Some(ms(100)), [Seq(i as u64 + 1)]);
            }
            let suspect = w.convicts_at(0, Suspect).unwrap();
            let down = w.convicts_at(0, Down).unwrap();
            assert!(t < suspect && suspect <= down, "{kind}");
            assert_eq!(w.convicts_at(0, Up), None);
            let before = |at: Instant| at - Duration::from_nanos(1);
            assert_eq!(changes(&mut w, before(suspect)), [], "{kind}");
            assert_eq!(w.state(0), Up);
            w.handle_timeout(suspect, |_| {});
            assert_eq!(w.state(0), if down == suspect { Down } else { Suspect });
            if down > suspect {
                assert_eq!(w.convicts_at(0, Down), Some(down), "{kind}: once suspect");
                assert_eq!(w.convicts_at(0, Suspect), None);
                assert_eq!(changes(&mut w, before(down)), [], "{kind}");
                assert_eq!(changes(&mut w, down), [(0, Suspect, Down)], "{kind}");
            }
            assert_eq!(w.convicts_at(0, Down), None, "{kind}: down already");
        }
    }

    #[test]
    fn a_restored_client_is_convicted_a_grace_after_the_restore_unless_heard() {
        use Liveness::{Down, Left, Suspect, Up};
        let t0 = origin();
        let mut w = fixed();
        w.restore(t0, 0, Suspect, Some(SECOND));
        w.restore(t0, 1, Left, Some(SECOND));
        w.restore(t0, 2, Down, Some(SECOND));
        w.restore(t0, 3, Up, Some(SECOND));
        assert_eq!((w.state(0), w.state(1), w.state(2)), (Up, Left, Down));
        // The fixed detector: suspect 2 s and down 3 s after the (primed) last arrival.
        assert_eq!(w.next_check(), Some(t0 + 2 * SECOND));
        let heard = w.observe(t0 + 1500 * SECOND / 1000, 3, Some(SECOND), [Seq(500)]);
        assert_eq!(heard, None, "client 3 was up");
        assert_eq!(
            changes(&mut w, t0 + 3 * SECOND),
            [(0, Up, Suspect), (0, Suspect, Down)]
        );
        // Client 3's history starts at its first real heartbeat, 1.5 s after the restore.
        assert_eq!(w.convicts_at(3, Down), Some(t0 + 4500 * SECOND / 1000));
        // A down client comes back on its next heartbeat, as before the restart.
        let back = w
            .observe(t0 + 9 * SECOND, 2, Some(SECOND), [Seq(90)])
            .unwrap();
        assert_eq!((back.from, back.to), (Down, Up));
        assert_eq!(
            w.observe(t0 + 9 * SECOND, 1, Some(SECOND), [Seq(90)])
                .map(|c| c.to),
            Some(Up)
        );
    }

    #[test]
    fn deferred_checks_wait_and_are_judged_then() {
        let t0 = origin();
        let mut w = fixed();
        w.start(0);
        w.observe(t0, 0, Some(SECOND), [Seq(1)]);
        w.defer_due(t0 + 30 * SECOND, t0 + 31 * SECOND);
        assert_eq!(w.next_check(), Some(t0 + 31 * SECOND));
        w.observe(t0 + 30 * SECOND, 0, Some(SECOND), [Seq(30)]);
        assert_eq!(changes(&mut w, t0 + 31 * SECOND), []);
        assert_eq!(w.state(0), Liveness::Up);
    }
}
