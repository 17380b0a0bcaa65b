//! Client liveness: the per-client machine that turns a failure detector's suspicion into
//! `up`, `suspect`, `down` and `left` (and `unknown` for an expected client not heard from
//! yet), with flap control.

use std::fmt;
use std::time::{Duration, Instant};

use crate::detector::{Detector, DetectorConfig, DetectorKind};
use crate::error::ConfigError;
use crate::ids::Seq;
use crate::timer::DeadlineQueue;

/// A client's liveness, as its failure detector sees it.
///
/// `Up` until the detector's suspicion reaches its suspect level, `Suspect` until it reaches its
/// down level (and, with [`FlapControl`], stays there long enough), then `Down` (declared
/// dead). Any heartbeat brings a `Suspect` client back `Up`; a `Down` one after
/// [`FlapControl::up_after`] arrivals. `Left` is a clean goodbye (`BYE`): not a failure, and
/// not watched any more. `Unknown` is an expected client (the server's `--expect`) not heard
/// from yet: `Down` ("never seen") when its grace ends, `Up` (silently: nothing was announced)
/// at its `HELLO` or its first heartbeat.
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
    /// Expected, never heard from, its grace still running.
    Unknown,
    /// Heard from in time.
    Up,
}

impl Liveness {
    /// `"down"`, `"left"`, `"suspect"`, `"unknown"` or `"up"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Down => "down",
            Self::Left => "left",
            Self::Suspect => "suspect",
            Self::Unknown => "unknown",
            Self::Up => "up",
        }
    }
}

impl fmt::Display for Liveness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Flap control: how long the evidence must hold before a client is declared down, and how
/// many arrivals bring a client that was declared down back up (Consul's
/// `failures_before_critical` / `success_before_passing`, in detector terms).
///
/// A *period* is the client's interval: the one it declared in `HELLO`, or for a legacy client
/// the latest estimate from its send stamps.
///
/// - `down_after = N`: a `Suspect` client is declared `Down` only once its detector has been at
///   the down level for `N - 1` further periods with nothing heard from it, that is at
///   `reaches(down) + (N - 1) × interval`. Any arrival meanwhile ends it (the client is `Up`
///   again, as for any suspect client).
/// - `up_after = M`: a `Down` client is `Up` again at its `M`-th arrival in a row, each before
///   the detector reached its down level again since the one before (a check at that level
///   starts the count over). An arrival is one read of the server's: held heartbeats that
///   arrive together in a burst are one sign of life, and count once. A `Suspect` client is
///   still `Up` at its first arrival.
///
/// Both default to 1: down as soon as the detector says so, up at the first arrival.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlapControl {
    down_after: u32,
    up_after: u32,
}

impl FlapControl {
    /// Checks that both are at least 1.
    pub fn new(down_after: u32, up_after: u32) -> Result<Self, ConfigError> {
        if down_after == 0 {
            return Err(ConfigError::Zero { name: "down after" });
        }
        if up_after == 0 {
            return Err(ConfigError::Zero { name: "up after" });
        }
        Ok(Self {
            down_after,
            up_after,
        })
    }

    /// Periods at the down level before a client is declared down (at least 1).
    pub fn down_after(&self) -> u32 {
        self.down_after
    }

    /// Arrivals in a row before a client declared down is up again (at least 1).
    pub fn up_after(&self) -> u32 {
        self.up_after
    }

    /// How long a conviction waits after the detector reached its down level: `N - 1` periods.
    fn hold(&self, period: Option<Duration>) -> Duration {
        period.map_or(Duration::ZERO, |p| p.saturating_mul(self.down_after - 1))
    }
}

impl Default for FlapControl {
    /// 1 and 1: no flap control.
    fn default() -> Self {
        Self {
            down_after: 1,
            up_after: 1,
        }
    }
}

impl fmt::Display for FlapControl {
    /// `down-after=N up-after=M`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "down-after={} up-after={}",
            self.down_after, self.up_after
        )
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
    /// client without a detector yet, such as one never heard from).
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
///   [`reset`](Self::reset)); a `Suspect` client is `Up` again, a `Down` one once
///   [`FlapControl::up_after`] arrivals came in a row, an `Unknown` one silently;
/// - after either, the next check is armed: at `reaches(suspect)` when `Up`, at
///   `reaches(down)` plus flap control's hold when `Suspect`, at `reaches(down)` while a `Down`
///   client is coming back, none otherwise; an earlier queued check is kept (it re-arms when it
///   is due, so moving a check later costs nothing);
/// - [`handle_timeout`](Self::handle_timeout): a due check moves `Up` to `Suspect` and
///   `Suspect` to `Down` as far as the suspicion (and the hold) allows, and tells the detector
///   `set_available(false)` on `Down`; it moves an `Unknown` client whose grace is over to
///   `Down`;
/// - [`leave`](Self::leave) (a goodbye) makes the client `Left` and drops its check;
///   [`start`](Self::start) forgets a client altogether; [`expect`](Self::expect) makes it
///   `Unknown` with a grace;
/// - [`restore`](Self::restore) watches a client again after its owner restarted, with no
///   history: a silent client is convicted the detector's grace after the restore;
///   [`hello`](Self::hello) watches a new client (or session) from its `HELLO` the same way
///   (an `Unknown` one is `Up` silently, as at a first heartbeat).
///
/// Clients are dense indices chosen by the owner (the server's record slots, the simulator's
/// client numbers). Sans-IO: every call that depends on time takes `now`.
#[derive(Debug)]
pub struct Watches {
    detector: DetectorConfig,
    flap: FlapControl,
    watches: Vec<Watch>,
    checks: DeadlineQueue<usize>,
}

/// One client's machine.
#[derive(Debug)]
struct Watch {
    state: Liveness,
    /// Built at the first heartbeat whose interval is known, or primed (see `primed`).
    detector: Option<Box<dyn Detector>>,
    /// The check this client has in the queue (older entries in the queue are stale).
    check_at: Option<Instant>,
    /// The client's latest known interval: flap control's period.
    period: Option<Duration>,
    /// While `Down`: arrivals in a row since it was declared down (towards `up_after`).
    recovering: u32,
    /// While `Unknown`: when it is declared down, never seen; while `Left` and expected back
    /// ([`Watches::expect_back`]): when it is declared down, not back.
    expected_by: Option<Instant>,
    /// The detector was primed by [`Watches::restore`] or [`Watches::hello`], not by a
    /// heartbeat: the first real arrival replaces it.
    primed: bool,
    /// This client's own detector configuration ([`Watches::configure`]); `None`: the
    /// default one.
    config: Option<DetectorConfig>,
}

impl Watch {
    fn new() -> Self {
        Self {
            state: Liveness::Up,
            detector: None,
            check_at: None,
            period: None,
            recovering: 0,
            expected_by: None,
            primed: false,
            config: None,
        }
    }

    /// When the checks would move this client to `Down` from `state` (`Up` or `Suspect`) if
    /// nothing more were heard: the detector's down level plus the hold, and never before the
    /// suspect level (a check moves a client as far as its suspicion allows).
    fn convicts_at(&self, det: &dyn Detector, flap: FlapControl) -> Option<Instant> {
        let levels = det.levels();
        let down = det
            .reaches(levels.down)?
            .checked_add(flap.hold(self.period))?;
        match self.state {
            Liveness::Up => det.reaches(levels.suspect).map(|s| s.max(down)),
            Liveness::Suspect => Some(down),
            _ => None,
        }
    }
}

impl Watches {
    /// No clients yet; each client's detector will be built from `detector`; no flap control.
    pub fn new(detector: DetectorConfig) -> Self {
        Self::with_flap(detector, FlapControl::default())
    }

    /// No clients yet, with flap control.
    pub fn with_flap(detector: DetectorConfig, flap: FlapControl) -> Self {
        Self {
            detector,
            flap,
            watches: Vec::new(),
            checks: DeadlineQueue::new(),
        }
    }

    // ---- getters ----

    /// Client `client`'s liveness. `Up` for a client that was never started or observed.
    pub fn state(&self, client: usize) -> Liveness {
        self.watches.get(client).map_or(Liveness::Up, |w| w.state)
    }

    /// The flap control in force.
    pub fn flap(&self) -> FlapControl {
        self.flap
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
    /// `state`, for a client without a detector (unless it is `Unknown`, whose grace ends at a
    /// known instant) or already in `state` or past it (`Down`, `Left`), and when the detector
    /// never reaches the level.
    ///
    /// The checks run at `reaches(suspect)` and then at `reaches(down)` plus flap control's
    /// hold, and a check moves the client as far as its suspicion allows, so a silent `Up`
    /// client is `Suspect` at the first and `Down` at the later of the two. Checks moved by
    /// [`defer_due`](Self::defer_due) run later than this. A replay uses it for Chen, Toueg and
    /// Aguilera's detection time of a crash right after the last arrival.
    pub fn convicts_at(&self, client: usize, state: Liveness) -> Option<Instant> {
        let w = self.watches.get(client)?;
        if w.state == Liveness::Unknown {
            return w.expected_by.filter(|_| state == Liveness::Down);
        }
        let det = w.detector.as_deref()?;
        match (w.state, state) {
            (Liveness::Up, Liveness::Suspect) => det.reaches(det.levels().suspect),
            (Liveness::Up | Liveness::Suspect, Liveness::Down) => w.convicts_at(det, self.flap),
            _ => None,
        }
    }

    /// How long the rule needs to declare down a client of `interval` heard from once, at
    /// `now`, and never again: the detector's bootstrap estimate (its reading of a first
    /// heartbeat) plus flap control's hold. The default grace of an expected client. `None`
    /// when the detector would never declare it down.
    pub fn time_to_down(&self, now: Instant, interval: Duration) -> Option<Duration> {
        let mut det = self.detector.build(interval);
        det.heartbeat(now, Seq(1));
        let w = Watch {
            period: Some(interval),
            ..Watch::new()
        };
        w.convicts_at(det.as_ref(), self.flap)
            .map(|at| at.saturating_duration_since(now))
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

    /// Watches client `client` afresh as an expected client never heard from: `Unknown`, and
    /// `Down` at `by` (its grace over) unless it is heard from before.
    pub fn expect(&mut self, client: usize, by: Instant) {
        self.start(client);
        let w = &mut self.watches[client];
        w.state = Liveness::Unknown;
        w.expected_by = Some(by);
        w.check_at = Some(by);
        self.checks.push(by, client);
    }

    /// Client `client` is no longer expected, or was heard from: if it was still `Unknown`, it
    /// is an ordinary client not heard from yet (`Up`, no check); if it had left, it is no
    /// longer expected back ([`expect_back`](Self::expect_back)). Any other state stays.
    pub fn unexpect(&mut self, client: usize) {
        let Some(w) = self.watches.get_mut(client) else {
            return;
        };
        match w.state {
            Liveness::Unknown => w.state = Liveness::Up,
            Liveness::Left if w.expected_by.is_some() => {}
            _ => return,
        }
        w.expected_by = None;
        if let Some(at) = w.check_at.take() {
            self.checks.remove(at, &client);
        }
    }

    /// Client `client`, which left (a goodbye), is expected back by `by`: unless it is heard
    /// from before, it is `Down` then (a transition from `Left`), so a machine that shut down
    /// and never came back is announced once. Nothing for a client that is not `Left`.
    pub fn expect_back(&mut self, client: usize, by: Instant) {
        let Some(w) = self.watches.get_mut(client) else {
            return;
        };
        if w.state != Liveness::Left {
            return;
        }
        if let Some(at) = w.check_at.take() {
            self.checks.remove(at, &client);
        }
        w.expected_by = Some(by);
        w.check_at = Some(by);
        self.checks.push(by, client);
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
        if interval.is_some() {
            w.period = interval;
        }
        match state {
            Liveness::Down | Liveness::Left => w.state = state,
            // Expected and never heard from: an ordinary client not heard from yet (as
            // `unexpect` leaves one); the owner's expected list, set again after the restore,
            // gives it a fresh grace.
            Liveness::Unknown => {}
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

    /// Client `client`'s detectors are built from `config` from now on (`None`, or the default
    /// configuration itself: the default one given at [`new`](Self::new)); it lasts until
    /// [`start`](Self::start) watches the slot afresh. Returns whether that changed what its
    /// detectors are built from.
    ///
    /// When it did, an `Up` or `Suspect` client's detector is replaced at once by one of the
    /// new configuration primed by its last heartbeat (or `now`, without one), as
    /// [`restore`](Self::restore) primes one: a silent client is judged by the new rule from
    /// its last sign of life, its check is re-armed accordingly (the owner reads its next
    /// timeout again), and its next arrival starts the new detector's history. A `Down` or
    /// `Left` client's detector is dropped: its next arrival builds a new one. Its state does
    /// not change here: a looser rule does not clear a suspicion, only a heartbeat does.
    pub fn configure(
        &mut self,
        now: Instant,
        client: usize,
        config: Option<DetectorConfig>,
    ) -> bool {
        if client >= self.watches.len() {
            self.start(client);
        }
        let config = config.filter(|c| *c != self.detector);
        let w = &mut self.watches[client];
        if w.config == config {
            return false;
        }
        w.config = config;
        let Some(old) = w.detector.take() else {
            return true;
        };
        w.primed = false;
        if let Some(at) = w.check_at.take() {
            self.checks.remove(at, &client);
        }
        let Some(interval) = w.period else {
            return true;
        };
        if !matches!(w.state, Liveness::Up | Liveness::Suspect) {
            return true;
        }
        let mut det = w.config.as_ref().unwrap_or(&self.detector).build(interval);
        det.heartbeat(old.last_heartbeat().unwrap_or(now), Seq(0));
        w.detector = Some(det);
        w.primed = true;
        self.arm(client);
        true
    }

    /// Client `client` changed its interval to `interval` at `now` (an `INTERVAL` frame: the
    /// heartbeat after it is the first sent under the new interval). It is judged by the new
    /// interval from now on: an `Up` or `Suspect` client's detector is replaced by one built for
    /// `interval` and primed at `now`, the announcement being its sign of life (as at
    /// [`hello`](Self::hello)); its next arrival starts the new detector's history, so nothing
    /// learned at the old interval is held against the new one. A `Down` or `Left` client's
    /// detector is dropped: its next arrival builds one for the new interval. Its state does
    /// not change here. Read the owner's next timeout again afterwards.
    pub fn reinterval(&mut self, now: Instant, client: usize, interval: Duration) {
        if client >= self.watches.len() {
            self.start(client);
        }
        let w = &mut self.watches[client];
        w.period = Some(interval);
        if w.detector.take().is_none() {
            return;
        }
        w.primed = false;
        if let Some(at) = w.check_at.take() {
            self.checks.remove(at, &client);
        }
        if !matches!(w.state, Liveness::Up | Liveness::Suspect) {
            return;
        }
        let mut det = w.config.as_ref().unwrap_or(&self.detector).build(interval);
        det.heartbeat(now, Seq(0));
        w.detector = Some(det);
        w.primed = true;
        self.arm(client);
    }

    /// The configuration client `client`'s detectors are built from: its own
    /// ([`configure`](Self::configure)) or the default one.
    pub fn config(&self, client: usize) -> &DetectorConfig {
        self.watches
            .get(client)
            .and_then(|w| w.config.as_ref())
            .unwrap_or(&self.detector)
    }

    /// Client `client` said `HELLO` at `now`, declaring `interval`: its first sign of life.
    ///
    /// An `Up` (or `Suspect`) client without a detector (a new client, or a new session after
    /// [`reset`](Self::reset)) gets one primed by that sign of life, as a restored one does
    /// ([`restore`](Self::restore)): if nothing follows, it is suspected and convicted as one
    /// last heard at the `HELLO` would be, after the detector's usual grace. Its first heartbeat
    /// replaces the primed detector with a fresh one, so the first heartbeat stays the baseline
    /// of its history. An `Unknown` client (expected, never heard from) has been heard from: it
    /// is `Up` without a change, as at a first heartbeat, and primed the same way; its grace no
    /// longer applies. Any other client is left as it is: a detector already watching it goes
    /// on, and only a heartbeat brings a `Down` or `Left` one back.
    pub fn hello(&mut self, now: Instant, client: usize, interval: Duration) {
        if client >= self.watches.len() {
            self.start(client);
        }
        self.unexpect(client);
        let w = &mut self.watches[client];
        if !matches!(w.state, Liveness::Up | Liveness::Suspect) || w.detector.is_some() {
            return;
        }
        w.period = Some(interval);
        let mut det = w.config.as_ref().unwrap_or(&self.detector).build(interval);
        det.heartbeat(now, Seq(0));
        w.detector = Some(det);
        w.primed = true;
        self.arm(client);
    }

    /// One arrival of heartbeats from client `client` at `now`: they are fed to its detector in
    /// order, and a client that was not `Up` may be `Up` again (the returned change; see
    /// [`FlapControl`] for a `Down` one; an `Unknown` one is `Up` without a change, since
    /// nothing was announced about it). `interval` is the client's declared or estimated
    /// interval; while it is unknown there is no detector and nothing else changes.
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
        let up_after = self.flap.up_after;
        // Heard from: an expected client is an ordinary one now.
        self.unexpect(client);
        let w = &mut self.watches[client];
        if interval.is_some() {
            w.period = interval;
        }
        let config = w.config.as_ref().unwrap_or(&self.detector);
        if w.detector.is_none() {
            w.detector = interval.map(|i| config.build(i));
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
            // Primed at a restore or a HELLO: the first real arrival starts the history.
            if let Some(interval) = interval {
                *det = config.build(interval);
            }
        }
        for seq in seqs {
            det.heartbeat(now, seq);
        }
        let mut change = None;
        if let Some(back_up) = back_up {
            if w.state == Liveness::Down {
                w.recovering = w.recovering.saturating_add(1);
            }
            if w.state != Liveness::Down || w.recovering >= up_after {
                w.state = Liveness::Up;
                w.recovering = 0;
                change = Some(back_up);
            }
        }
        self.arm(client);
        change
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
            detector: w.config.as_ref().unwrap_or(&self.detector).kind(),
        };
        w.state = Liveness::Left;
        w.recovering = 0;
        w.expected_by = None;
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
        let flap = self.flap;
        let w = &mut self.watches[client];
        let kind = w.config.as_ref().unwrap_or(&self.detector).kind();
        if matches!(w.state, Liveness::Unknown | Liveness::Left) {
            // Never heard from, or gone with a goodbye: no detector at work, only the grace.
            match w.expected_by {
                Some(by) if now >= by => {
                    let det = w.detector.as_deref();
                    on_change(Change {
                        client,
                        from: w.state,
                        to: Liveness::Down,
                        since_last: det.and_then(|d| since_last(d, now)),
                        suspicion: det.map_or(0.0, |d| d.suspicion(now)),
                        detector: kind,
                    });
                    w.state = Liveness::Down;
                    w.expected_by = None;
                }
                Some(by) => {
                    w.check_at = Some(by);
                    self.checks.push(by, client);
                }
                None => {}
            }
            return;
        }
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
        let hold = flap.hold(w.period);
        // Without a hold this is the detector's word alone, exactly as without flap control.
        let held = hold.is_zero()
            || det
                .reaches(levels.down)
                .and_then(|at| at.checked_add(hold))
                .is_some_and(|at| now >= at);
        if w.state == Liveness::Suspect && suspicion >= levels.down && held {
            on_change(change(Liveness::Suspect, Liveness::Down));
            w.state = Liveness::Down;
            w.recovering = 0;
            // Akka: what is measured while a client is down is not learned as an interval.
            det.set_available(false);
        }
        if w.state == Liveness::Down && w.recovering > 0 && suspicion >= levels.down {
            // Silent again before it was back: the recovery starts over.
            w.recovering = 0;
        }
        self.arm(client);
    }

    /// Client `client`'s detector declares it down `margin` after the expected arrival of its
    /// next heartbeat (a quality-of-service target: [`crate::detector::target`]), and its check
    /// is re-armed. Only the `chen` detector takes a margin. A detector built later (a new
    /// session, a restore) starts from its configured margin: the server sets it again after
    /// every arrival, so that the margin costs the per-client record nothing.
    pub fn set_margin(&mut self, client: usize, margin: Duration) {
        let Some(w) = self.watches.get_mut(client) else {
            return;
        };
        if let Some(det) = w.detector.as_mut() {
            if det.set_margin(margin) {
                self.arm(client);
            }
        }
    }

    /// Queues `client`'s next check: when its detector reaches the next level.
    fn arm(&mut self, client: usize) {
        let w = &mut self.watches[client];
        let Some(det) = w.detector.as_ref() else {
            return;
        };
        let levels = det.levels();
        let at = match w.state {
            Liveness::Up => det.reaches(levels.suspect),
            Liveness::Suspect => det
                .reaches(levels.down)
                .and_then(|at| at.checked_add(self.flap.hold(w.period))),
            Liveness::Down if w.recovering > 0 => det.reaches(levels.down),
            Liveness::Down | Liveness::Left | Liveness::Unknown => return,
        };
        let Some(at) = at else {
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

    /// A client's own configuration: its detector is rebuilt from the last heartbeat, so the
    /// silence is judged by the new rule at once (both ways), the other clients keep the
    /// default, and a `Down` client's detector waits for its next arrival.
    #[test]
    fn a_client_configured_alone_is_judged_by_its_own_rule() {
        use crate::detector::{FixedConfig, Span};
        use Liveness::{Down, Suspect, Up};
        let t0 = origin();
        let loose: DetectorConfig = FixedConfig::default()
            .grace(Span::Fixed(10 * SECOND))
            .unwrap()
            .into();
        let mut w = fixed();
        for client in [0, 1] {
            w.start(client);
            w.observe(t0, client, Some(SECOND), [Seq(1)]);
        }
        // Down 3 s after the last heartbeat by default; 11 s with a 10 s grace.
        assert!(w.configure(t0 + SECOND, 0, Some(loose.clone())));
        assert!(
            !w.configure(t0 + SECOND, 0, Some(loose.clone())),
            "no change"
        );
        assert_eq!(w.config(0), &loose);
        assert_eq!(w.convicts_at(0, Down), Some(t0 + 11 * SECOND));
        assert_eq!(w.convicts_at(1, Down), Some(t0 + 3 * SECOND));
        assert_eq!(
            changes(&mut w, t0 + 3 * SECOND),
            [(1, Up, Suspect), (1, Suspect, Down)]
        );
        assert_eq!(w.state(0), Up);
        // Back to the default (given as the default itself): judged from the last heartbeat
        // again, at once.
        assert!(w.configure(
            t0 + 4 * SECOND,
            0,
            Some(DetectorConfig::new(DetectorKind::Fixed))
        ));
        assert_eq!(w.convicts_at(0, Down), Some(t0 + 3 * SECOND));
        assert_eq!(
            changes(&mut w, t0 + 4 * SECOND),
            [(0, Up, Suspect), (0, Suspect, Down)]
        );
        // Down: the detector is dropped, and the next arrival builds the configured one.
        assert!(w.configure(t0 + 5 * SECOND, 1, Some(loose.clone())));
        assert!(w.detector(1).is_none());
        let back = w
            .observe(t0 + 6 * SECOND, 1, Some(SECOND), [Seq(7)])
            .unwrap();
        assert_eq!((back.from, back.to), (Down, Up));
        assert_eq!(w.convicts_at(1, Down), Some(t0 + 17 * SECOND));
        // A new watch of the slot forgets the configuration.
        w.start(1);
        assert_eq!(w.config(1), &DetectorConfig::new(DetectorKind::Fixed));
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
        let flaps = [FlapControl::default(), FlapControl::new(4, 1).unwrap()];
        for (kind, flap) in DetectorKind::ALL
            .into_iter()
            .flat_map(|k| flaps.map(|f| (k, f)))
        {
            let mut w = Watches::with_flap(DetectorConfig::new(kind), flap);
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
            if flap.down_after() > 1 {
                assert!(down >= suspect + ms(300), "{kind}: three periods of hold");
            }
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

    /// A `HELLO` primes a client without a detector, as a restore does: the fixed detector
    /// suspects it 2 s and convicts it 3 s after the `HELLO`. An expected one is `Up` without a
    /// word; one already watched, `Down` or `Left` stays as it was; a first heartbeat starts
    /// the history afresh.
    #[test]
    fn a_hello_watches_a_silent_client_from_it() {
        use Liveness::{Down, Left, Suspect, Unknown, Up};
        let t0 = origin();
        let mut w = fixed();
        w.hello(t0, 0, SECOND);
        w.expect(1, t0 + 60 * SECOND);
        w.hello(t0, 1, SECOND);
        assert_eq!(
            (w.state(1), w.convicts_at(1, Down)),
            (Up, Some(t0 + 3 * SECOND))
        );
        // Watched already: its detector goes on from its last heartbeat.
        w.start(2);
        w.observe(t0, 2, Some(SECOND), [Seq(1)]);
        w.hello(t0 + SECOND, 2, SECOND);
        assert_eq!(w.convicts_at(2, Down), Some(t0 + 3 * SECOND));
        // Announced down, or gone: only a heartbeat brings it back.
        w.restore(t0, 3, Down, Some(SECOND));
        w.hello(t0, 3, SECOND);
        w.restore(t0, 4, Left, Some(SECOND));
        w.hello(t0, 4, SECOND);
        // Heard from 1.5 s after its HELLO: its history starts there.
        w.hello(t0, 5, SECOND);
        w.observe(t0 + 1500 * SECOND / 1000, 5, Some(SECOND), [Seq(1)]);
        assert_eq!(w.convicts_at(5, Down), Some(t0 + 4500 * SECOND / 1000));
        assert_eq!(
            changes(&mut w, t0 + 3 * SECOND),
            [
                (0, Up, Suspect),
                (0, Suspect, Down),
                (1, Up, Suspect),
                (1, Suspect, Down),
                (2, Up, Suspect),
                (2, Suspect, Down)
            ]
        );
        assert_eq!((w.state(3), w.state(4), w.state(5)), (Down, Left, Up));
        assert_ne!(w.state(1), Unknown);
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

    fn flapping(down_after: u32, up_after: u32) -> Watches {
        Watches::with_flap(
            DetectorConfig::new(DetectorKind::Fixed),
            FlapControl::new(down_after, up_after).unwrap(),
        )
    }

    #[test]
    fn flap_control_needs_positive_counts() {
        assert!(FlapControl::new(0, 1).is_err());
        assert!(FlapControl::new(1, 0).is_err());
        assert_eq!(FlapControl::new(1, 1).unwrap(), FlapControl::default());
        assert_eq!(
            FlapControl::new(3, 2).unwrap().to_string(),
            "down-after=3 up-after=2"
        );
    }

    /// `--down-after 3`: the fixed detector is at its down level 3 s after the last heartbeat;
    /// the client is declared down two periods (2 s) later, not a nanosecond earlier.
    #[test]
    fn down_after_holds_the_conviction_for_n_minus_1_periods() {
        use Liveness::{Down, Suspect, Up};
        let t0 = origin();
        let mut w = flapping(3, 1);
        w.start(0);
        w.observe(t0, 0, Some(SECOND), [Seq(1)]);
        assert_eq!(changes(&mut w, t0 + 2 * SECOND), [(0, Up, Suspect)]);
        assert_eq!(w.next_check(), Some(t0 + 5 * SECOND));
        assert_eq!(w.convicts_at(0, Down), Some(t0 + 5 * SECOND));
        let just_before = t0 + 5 * SECOND - Duration::from_nanos(1);
        assert_eq!(changes(&mut w, just_before), []);
        assert_eq!(w.state(0), Suspect, "the detector said down 2 s ago; held");
        assert_eq!(changes(&mut w, t0 + 5 * SECOND), [(0, Suspect, Down)]);
        // A heartbeat during the hold ends it: up at once, as for any suspect client.
        let mut w = flapping(3, 1);
        w.start(0);
        w.observe(t0, 0, Some(SECOND), [Seq(1)]);
        w.handle_timeout(t0 + 4 * SECOND, |_| {});
        assert_eq!(w.state(0), Suspect);
        let back = w
            .observe(t0 + 4 * SECOND, 0, Some(SECOND), [Seq(5)])
            .unwrap();
        assert_eq!((back.from, back.to), (Suspect, Up));
        // A late check convicts in one go once the hold is over.
        let mut w = flapping(3, 1);
        w.start(0);
        w.observe(t0, 0, Some(SECOND), [Seq(1)]);
        assert_eq!(
            changes(&mut w, t0 + 9 * SECOND),
            [(0, Up, Suspect), (0, Suspect, Down)]
        );
    }

    /// `--up-after 3`: three arrivals in a row bring a down client back; a held burst is one
    /// arrival; a silence that reaches the down level again starts the count over.
    #[test]
    fn up_after_needs_m_arrivals_in_a_row() {
        use Liveness::{Down, Up};
        let t0 = origin();
        let mut w = flapping(1, 3);
        w.start(0);
        w.observe(t0, 0, Some(SECOND), [Seq(1)]);
        w.handle_timeout(t0 + 3 * SECOND, |_| {});
        assert_eq!(w.state(0), Down);
        // A burst of held heartbeats: one sign of life.
        let t = t0 + 10 * SECOND;
        assert_eq!(
            w.observe(t, 0, Some(SECOND), [Seq(2), Seq(3), Seq(4)]),
            None
        );
        assert_eq!(w.observe(t + SECOND, 0, Some(SECOND), [Seq(5)]), None);
        assert_eq!(w.state(0), Down);
        // Silent until the detector is at its down level again: the count starts over.
        assert_eq!(
            changes(&mut w, t + 4 * SECOND),
            [],
            "still down, nothing to say"
        );
        let t = t + 10 * SECOND;
        assert_eq!(w.observe(t, 0, Some(SECOND), [Seq(20)]), None);
        assert_eq!(w.observe(t + SECOND, 0, Some(SECOND), [Seq(21)]), None);
        let back = w
            .observe(t + 2 * SECOND, 0, Some(SECOND), [Seq(22)])
            .unwrap();
        assert_eq!((back.from, back.to), (Down, Up));
        assert_eq!(back.since_last, Some(SECOND));
        assert_eq!(w.state(0), Up);
    }

    /// With both at 1, flap control is no flap control: the same changes at the same instants
    /// as a machine without it, for every detector, over a history with silences of every
    /// length.
    #[test]
    fn flap_control_at_one_changes_nothing() {
        let t0 = origin();
        let ms = Duration::from_millis;
        for kind in DetectorKind::ALL {
            let config = DetectorConfig::new(kind);
            let mut plain = Watches::new(config.clone());
            let mut one = Watches::with_flap(config, FlapControl::new(1, 1).unwrap());
            let mut seen = [Vec::new(), Vec::new()];
            let mut t = t0;
            for (i, gap) in [0, 100, 90, 2500, 110, 100, 30_000, 100, 105, 95, 8000, 100]
                .into_iter()
                .enumerate()
            {
                t += ms(gap);
                for (w, seen) in [&mut plain, &mut one].into_iter().zip(&mut seen) {
                    while let Some(at) = w.next_check().filter(|&at| at <= t) {
                        w.handle_timeout(at, |c| seen.push((at, c)));
                    }
                    if let Some(c) = w.observe(t, 0, Some(ms(100)), [Seq(i as u64 + 1)]) {
                        seen.push((t, c));
                    }
                }
            }
            assert!(seen[0].len() > 4, "{kind}: {:?}", seen[0]);
            assert_eq!(seen[0], seen[1], "{kind}");
        }
    }

    /// An expected client never heard from is down exactly when its grace ends, and the
    /// default grace is what the rule needs for a client of that interval heard from once: for
    /// every detector, with and without flap control.
    #[test]
    fn never_seen_is_down_exactly_at_the_detectors_grace() {
        use Liveness::{Down, Unknown};
        let t0 = origin();
        let interval = Duration::from_millis(1000);
        for flap in [FlapControl::default(), FlapControl::new(3, 2).unwrap()] {
            for kind in DetectorKind::ALL {
                let mut w = Watches::with_flap(DetectorConfig::new(kind), flap);
                let grace = w.time_to_down(t0, interval).unwrap();
                // The same client heard from once at t0 is convicted at t0 + grace.
                w.start(1);
                w.observe(t0, 1, Some(interval), [Seq(1)]);
                assert_eq!(w.convicts_at(1, Down), Some(t0 + grace), "{kind} {flap}");
                w.expect(0, t0 + grace);
                assert_eq!(
                    (w.state(0), w.convicts_at(0, Down)),
                    (Unknown, Some(t0 + grace))
                );
                let mut seen = Vec::new();
                w.handle_timeout(t0 + grace - Duration::from_nanos(1), |c| {
                    seen.push((c.client, c.from, c.to));
                });
                assert!(!seen.iter().any(|c| c.2 == Down), "{kind} {flap}: {seen:?}");
                assert_eq!(w.state(0), Unknown, "{kind} {flap}: not a nanosecond early");
                w.handle_timeout(t0 + grace, |c| {
                    if c.client == 0 {
                        assert_eq!((c.since_last, c.suspicion, c.detector), (None, 0.0, kind));
                    }
                    seen.push((c.client, c.from, c.to));
                });
                assert!(
                    seen.contains(&(0, Unknown, Down)),
                    "{kind} {flap}: {seen:?}"
                );
                assert_eq!(w.state(1), Down, "{kind} {flap}: the heard-from twin too");
                // Heard from at last: down -> up as for any down client (after up_after).
                let mut back = None;
                for i in 0..flap.up_after() {
                    let t = t0 + grace + interval * (i + 1);
                    back = w.observe(t, 0, Some(interval), [Seq(u64::from(i) + 1)]);
                }
                let back = back.unwrap();
                assert_eq!((back.from, back.to), (Down, Liveness::Up), "{kind} {flap}");
            }
        }
        // The documented figures: fixed 3 s and chen 3 s for a 1 s interval.
        let fixed = Watches::new(DetectorConfig::new(DetectorKind::Fixed));
        assert_eq!(fixed.time_to_down(t0, interval), Some(3 * SECOND));
        let chen = Watches::new(DetectorConfig::new(DetectorKind::Chen));
        assert_eq!(chen.time_to_down(t0, interval), Some(3 * SECOND));
        let held = Watches::with_flap(
            DetectorConfig::new(DetectorKind::Fixed),
            FlapControl::new(3, 1).unwrap(),
        );
        assert_eq!(held.time_to_down(t0, interval), Some(5 * SECOND));
    }

    #[test]
    fn an_expected_client_heard_in_time_is_up_without_a_word() {
        let t0 = origin();
        let mut w = fixed();
        w.expect(0, t0 + 5 * SECOND);
        assert_eq!(w.state(0), Liveness::Unknown);
        assert_eq!(w.observe(t0 + SECOND, 0, Some(SECOND), [Seq(1)]), None);
        assert_eq!(w.state(0), Liveness::Up);
        // Its grace no longer applies: the detector's checks do.
        assert_eq!(w.next_check(), Some(t0 + 3 * SECOND));
        assert_eq!(
            changes(&mut w, t0 + 5 * SECOND).len(),
            2,
            "up -> suspect -> down"
        );
        // Not expected any more: an ordinary client not heard from yet.
        w.expect(1, t0 + 5 * SECOND);
        w.unexpect(1);
        assert_eq!(
            (w.state(1), w.convicts_at(1, Liveness::Down)),
            (Liveness::Up, None)
        );
        assert_eq!(changes(&mut w, t0 + 60 * SECOND), []);
        // A goodbye before the first heartbeat.
        w.expect(2, t0 + 100 * SECOND);
        let left = w.leave(t0 + 61 * SECOND, 2).unwrap();
        assert_eq!((left.from, left.to), (Liveness::Unknown, Liveness::Left));
        assert_eq!(w.next_check(), None);
    }
}
