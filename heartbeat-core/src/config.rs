//! Validated configuration for the client and the server.

use std::time::Duration;

use rand::Rng;

use crate::auth::{AuthConfig, Secret};
use crate::detector::{DetectorConfig, DetectorKind, QosTarget};
use crate::error::ConfigError;
use crate::frame::{MAX_INTERVAL_MS, Protocol};
use crate::ids::ClientId;
use crate::liveness::FlapControl;

/// Exponential backoff with jitter for reconnect attempts.
///
/// Attempt `n` (0-based) waits a delay drawn uniformly from `[d/2, d]`, where
/// `d = min(max, initial * 2^n)` ("equal jitter"): never less than half the nominal delay, so a
/// fleet that lost its server at once does not reconnect in lock-step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
}

impl Backoff {
    /// Checks `0 < initial <= max`.
    pub fn new(initial: Duration, max: Duration) -> Result<Self, ConfigError> {
        if initial.is_zero() || max < initial {
            return Err(ConfigError::Backoff { initial, max });
        }
        Ok(Self { initial, max })
    }

    /// The first nominal delay.
    pub fn initial(&self) -> Duration {
        self.initial
    }

    /// The largest nominal delay.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The nominal (jitter-free) delay before attempt `attempt`.
    pub fn nominal(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The delay before attempt `attempt`, with jitter drawn from `rng`.
    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let d = self.nominal(attempt);
        let half = d / 2;
        let extra = rng.random_range(0..=u64::try_from(half.as_nanos()).unwrap_or(u64::MAX));
        half + Duration::from_nanos(extra)
    }
}

impl Default for Backoff {
    /// 100 ms doubling up to 10 s.
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
        }
    }
}

/// `value`, unless it is zero (its type's default): a count, a multiplier or a duration that
/// must be positive.
fn nonzero<T: Default + PartialEq>(value: T, name: &'static str) -> Result<T, ConfigError> {
    if value == T::default() {
        return Err(ConfigError::Zero { name });
    }
    Ok(value)
}

fn check_interval(interval: Duration) -> Result<(), ConfigError> {
    let ms = interval.as_millis();
    if interval < Duration::from_millis(1)
        || ms > u128::from(MAX_INTERVAL_MS)
        || interval.subsec_nanos() % 1_000_000 != 0
    {
        return Err(ConfigError::Interval {
            got: interval,
            max_ms: MAX_INTERVAL_MS,
        });
    }
    Ok(())
}

/// True when a connection carrying heartbeats every `interval` stays open on a server whose
/// idle timeout is capped at `server_max_idle` (`ServerConfig::max_idle`): the cap must hold
/// two intervals, so one late heartbeat does not cost the connection. A client whose interval
/// does not fit connects for each heartbeat ([`ClientConfig::connect_per_beat`]).
pub fn keeps_connection(interval: Duration, server_max_idle: Duration) -> bool {
    interval.saturating_mul(2) <= server_max_idle
}

/// How long one connect attempt may take before a driver gives up on it: 10 s. The one value
/// for `heartbeat-net`'s `TcpConnector`, the simulator's turmoil connector and the in-memory
/// network's links.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Client configuration.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub(crate) id: ClientId,
    pub(crate) interval: Duration,
    pub(crate) protocol: Protocol,
    pub(crate) count: Option<u64>,
    pub(crate) reconnect: Option<Backoff>,
    pub(crate) ack_timeout: Duration,
    pub(crate) silence_intervals: u32,
    pub(crate) session: u64,
    pub(crate) rng_seed: u64,
    pub(crate) auth_key: Option<Secret>,
    pub(crate) connect_per_beat: bool,
    pub(crate) id_patience: Duration,
    pub(crate) follow_advice: Option<(Duration, Duration)>,
}

impl ClientConfig {
    /// A v1 client sending every `interval` (whole milliseconds, 1 ms to 1 day), forever, not
    /// reconnecting, with an ack timeout of `max(5 * interval, 2 s)`.
    pub fn new(id: ClientId, interval: Duration) -> Result<Self, ConfigError> {
        check_interval(interval)?;
        Ok(Self {
            id,
            interval,
            protocol: Protocol::V1,
            count: None,
            reconnect: None,
            ack_timeout: (interval * 5).max(Duration::from_secs(2)),
            silence_intervals: 3,
            session: 0,
            rng_seed: 0,
            auth_key: None,
            connect_per_beat: false,
            id_patience: ServerConfig::default().idle_timeout_for(Some(interval)),
            follow_advice: None,
        })
    }

    /// Ask the server for interval advice and follow it within `min..=max` (`PROTOCOL.md`,
    /// "Advice (negotiated)"): the `HELLO` asks with the advice token, and an advised interval,
    /// clamped into the range, is adopted on the drift-free schedule from the next heartbeat
    /// on. The range must hold the interval and be wider than it (otherwise advice could
    /// change nothing); an error for a legacy client, which cannot negotiate.
    pub fn follow_advice(mut self, min: Duration, max: Duration) -> Result<Self, ConfigError> {
        check_interval(min)?;
        check_interval(max)?;
        if self.protocol == Protocol::Legacy {
            return Err(ConfigError::LegacyAdvice);
        }
        if !(min <= self.interval && self.interval <= max) || min == max {
            return Err(ConfigError::AdviceRange {
                min,
                interval: self.interval,
                max,
            });
        }
        self.follow_advice = Some((min, max));
        Ok(self)
    }

    /// The server's `max_idle` ([`ServerConfig::max_idle`]), if not the default 10 min. The
    /// client needs it for one thing: how long a refusal under the identity rule may be its own
    /// previous run's half-open connection, which the server drops after its idle timeout for
    /// this interval. A reconnecting client retries a refusal that long, then gives up
    /// ([`Failure::IdInUse`](crate::client::Failure::IdInUse)).
    pub fn server_max_idle(mut self, max_idle: Duration) -> Result<Self, ConfigError> {
        let server = ServerConfig::default().max_idle(max_idle)?;
        self.id_patience = server.idle_timeout_for(Some(self.interval));
        Ok(self)
    }

    /// Speak the seed's legacy text format (no `HELLO`, no acks, so no ack timeout). The
    /// legacy format cannot authenticate: an error with a key set.
    pub fn legacy(mut self, legacy: bool) -> Result<Self, ConfigError> {
        if legacy && self.auth_key.is_some() {
            return Err(ConfigError::LegacyAuth);
        }
        if legacy && self.follow_advice.is_some() {
            return Err(ConfigError::LegacyAdvice);
        }
        self.protocol = if legacy {
            Protocol::Legacy
        } else {
            Protocol::V1
        };
        Ok(self)
    }

    /// Authenticate with this secret: answer the server's challenge, and refuse a server that
    /// does not challenge (no silent downgrade). An error for a legacy client.
    pub fn auth_key(mut self, key: Option<Secret>) -> Result<Self, ConfigError> {
        if key.is_some() && self.protocol == Protocol::Legacy {
            return Err(ConfigError::LegacyAuth);
        }
        self.auth_key = key;
        Ok(self)
    }

    /// Send `count` heartbeats, then say goodbye and finish.
    pub fn count(mut self, count: Option<u64>) -> Result<Self, ConfigError> {
        self.count = count.map(|n| nonzero(n, "count")).transpose()?;
        Ok(self)
    }

    /// Reconnect with this backoff when the connection fails or ends, instead of finishing.
    pub fn reconnect(mut self, backoff: Option<Backoff>) -> Self {
        self.reconnect = backoff;
        self
    }

    /// Drop the connection (and reconnect or fail) when no ack came for this long. Must exceed
    /// the interval.
    pub fn ack_timeout(mut self, timeout: Duration) -> Result<Self, ConfigError> {
        if timeout <= self.interval {
            return Err(ConfigError::TimeoutNotAboveInterval {
                name: "ack timeout",
                timeout,
                interval: self.interval,
            });
        }
        self.ack_timeout = timeout;
        Ok(self)
    }

    /// Warn once the server has been silent for this many intervals (default 3, and never before
    /// 1 s).
    pub fn silence_intervals(mut self, n: u32) -> Result<Self, ConfigError> {
        self.silence_intervals = nonzero(n, "silence intervals")?;
        Ok(self)
    }

    /// The session nonce sent in `HELLO`: pick a fresh random one per process start.
    pub fn session(mut self, session: u64) -> Self {
        self.session = session;
        self
    }

    /// Connect for each heartbeat instead of keeping one connection: connect, `HELLO`, `BEAT`,
    /// and close (without `BYE`: the client is not leaving) once it is acknowledged; connect
    /// again when the next heartbeat is due. For intervals too long for a server to keep an
    /// idle connection open (see [`keeps_connection`]). Off by default.
    pub fn connect_per_beat(mut self, on: bool) -> Self {
        self.connect_per_beat = on;
        self
    }

    /// Seed of the RNG used for backoff jitter.
    pub fn rng_seed(mut self, seed: u64) -> Self {
        self.rng_seed = seed;
        self
    }

    /// The client's identity.
    pub fn id(&self) -> &ClientId {
        &self.id
    }

    /// The heartbeat interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The wire format.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The ack timeout.
    pub fn ack_timeout_value(&self) -> Duration {
        self.ack_timeout
    }

    /// The session nonce sent in `HELLO` (0 unless [`session`](Self::session) set one).
    pub fn session_value(&self) -> u64 {
        self.session
    }

    /// The seed of the backoff jitter (0 unless [`rng_seed`](Self::rng_seed) set one).
    pub fn rng_seed_value(&self) -> u64 {
        self.rng_seed
    }

    /// The reconnect backoff, if reconnecting.
    pub fn backoff(&self) -> Option<Backoff> {
        self.reconnect
    }

    /// True when the client authenticates.
    pub fn is_authenticating(&self) -> bool {
        self.auth_key.is_some()
    }

    /// The range of intervals the client follows advice within, when it asks for advice.
    pub fn advice_range(&self) -> Option<(Duration, Duration)> {
        self.follow_advice
    }
}

/// Server configuration.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub(crate) hello_timeout: Duration,
    pub(crate) idle_intervals: u32,
    pub(crate) min_idle_timeout: Duration,
    pub(crate) legacy_idle_timeout: Duration,
    pub(crate) burst_gap_intervals: u32,
    pub(crate) max_missed_ranges: usize,
    pub(crate) max_clients: usize,
    pub(crate) detector: DetectorConfig,
    pub(crate) flap: FlapControl,
    pub(crate) pause_guard: Duration,
    pub(crate) auth: Option<AuthConfig>,
    pub(crate) min_interval: Duration,
    pub(crate) max_idle: Duration,
    pub(crate) max_clock_skew: Duration,
    pub(crate) forget_after: Duration,
    pub(crate) left_grace: Duration,
    pub(crate) target: Option<QosTarget>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            hello_timeout: Duration::from_secs(10),
            idle_intervals: 10,
            min_idle_timeout: Duration::from_secs(5),
            legacy_idle_timeout: Duration::from_secs(60),
            burst_gap_intervals: 2,
            max_missed_ranges: 64,
            max_clients: 100_000,
            detector: DetectorConfig::default(),
            flap: FlapControl::default(),
            pause_guard: Duration::from_secs(5),
            auth: None,
            min_interval: Duration::from_millis(10),
            max_idle: Duration::from_secs(600),
            max_clock_skew: Duration::from_secs(1),
            forget_after: Duration::from_secs(24 * 3600),
            left_grace: Duration::from_secs(3600),
            target: None,
        }
    }
}

impl ServerConfig {
    /// A connection must identify itself (first bytes of either protocol, and `HELLO` for v1)
    /// within this time. Default 10 s.
    pub fn hello_timeout(mut self, d: Duration) -> Result<Self, ConfigError> {
        self.hello_timeout = nonzero(d, "hello timeout")?;
        Ok(self)
    }

    /// A live connection silent for `max(n * interval, min)` is presumed dead (half-open) and
    /// dropped. Defaults 10 and 5 s.
    pub fn idle_timeout(mut self, n: u32, min: Duration) -> Result<Self, ConfigError> {
        if n < 2 {
            return Err(ConfigError::Zero {
                name: "idle intervals (at least 2)",
            });
        }
        self.idle_intervals = n;
        self.min_idle_timeout = min;
        Ok(self)
    }

    /// Idle timeout of a legacy connection before its interval is known. Default 60 s.
    pub fn legacy_idle_timeout(mut self, d: Duration) -> Result<Self, ConfigError> {
        self.legacy_idle_timeout = nonzero(d, "legacy idle timeout")?;
        Ok(self)
    }

    /// An arrival of several heartbeats after a silence of at least this many intervals is a
    /// burst (a released firewall, a stalled path). Default 2.
    pub fn burst_gap_intervals(mut self, n: u32) -> Result<Self, ConfigError> {
        self.burst_gap_intervals = nonzero(n, "burst gap intervals")?;
        Ok(self)
    }

    /// How many missed ranges each client keeps for the report (counts stay exact). Default 64.
    pub fn max_missed_ranges(mut self, n: usize) -> Self {
        self.max_missed_ranges = n.max(1);
        self
    }

    /// How many clients the server remembers (default 100,000). Beyond it, a new client
    /// evicts the disconnected client heard from longest ago, so hostile or churning identities
    /// (or legacy clients, one per peer port) cannot grow memory without bound. Connected
    /// clients are never evicted.
    pub fn max_clients(mut self, n: usize) -> Self {
        self.max_clients = n.max(1);
        self
    }

    /// The failure detector run for every client (default: phi accrual with Akka's defaults).
    pub fn detector(mut self, detector: DetectorConfig) -> Self {
        self.detector = detector;
        self
    }

    /// The configured failure detector.
    pub fn detector_config(&self) -> &DetectorConfig {
        &self.detector
    }

    /// Configures every client's detection by its quality of service (Chen, Toueg and
    /// Aguilera; see [`crate::detector::target`]): the detector becomes `chen` (its defaults,
    /// replacing any [`detector`](Self::detector) set before), and each client's margin is
    /// set from the target, its interval and its own measured loss and delay variance, and set
    /// again as the measurements settle (every ten heartbeats). `None` (the default): no
    /// target, the configured detector as it is.
    pub fn qos_target(mut self, target: Option<QosTarget>) -> Self {
        if target.is_some() {
            self.detector = DetectorConfig::new(DetectorKind::Chen);
        }
        self.target = target;
        self
    }

    /// The quality-of-service target, if any.
    pub fn qos_target_value(&self) -> Option<&QosTarget> {
        self.target.as_ref()
    }

    /// Flap control (see [`FlapControl`]): how long a conviction must hold before a client is
    /// declared down, and how many arrivals bring it back up. Default: none (1 and 1).
    pub fn flap_control(mut self, flap: FlapControl) -> Self {
        self.flap = flap;
        self
    }

    /// The flap control in force.
    pub fn flap_control_value(&self) -> FlapControl {
        self.flap
    }

    /// Self-protection against the monitor's own stalls (a GC-like pause, a suspended VM): when
    /// the server is woken this much later than its earliest timer, it convicts nobody and drops
    /// no connection on that evidence alone, and looks again a second later, after reading what
    /// arrived meanwhile. Default 5 s, as Cassandra's `max_local_pause_in_ms`.
    pub fn pause_guard(mut self, d: Duration) -> Result<Self, ConfigError> {
        self.pause_guard = nonzero(d, "pause guard")?;
        Ok(self)
    }

    /// Authenticate clients (see [`crate::auth`]): every v1 connection must answer a challenge
    /// with its id's secret, and legacy connections are refused unless the configuration allows
    /// them. Default: off, ids are taken on trust and only the identity rule protects a live
    /// client (see `PROTOCOL.md`).
    pub fn auth(mut self, auth: Option<AuthConfig>) -> Self {
        self.auth = auth;
        self
    }

    /// The authentication settings, when on.
    pub fn auth_config(&self) -> Option<&AuthConfig> {
        self.auth.as_ref()
    }

    /// The shortest interval a `HELLO` may declare (default 10 ms): a shorter one is refused
    /// with `ERROR`. Also the pace a legacy connection, which declares none, is held to.
    pub fn min_interval(mut self, d: Duration) -> Result<Self, ConfigError> {
        self.min_interval = nonzero(d, "min interval")?;
        Ok(self)
    }

    /// The ceiling of the idle timeout (default 10 min), so that a declared long interval
    /// cannot hold a connection for days. A client whose interval does not fit twice in it
    /// connects for each heartbeat instead (`ClientConfig::connect_per_beat`).
    pub fn max_idle(mut self, d: Duration) -> Result<Self, ConfigError> {
        self.max_idle = nonzero(d, "max idle")?;
        Ok(self)
    }

    /// How far a client's clock may be from the server's before it is reported as skewed
    /// (default 1 s); see `Event::ClockSkew`.
    pub fn max_clock_skew(mut self, d: Duration) -> Result<Self, ConfigError> {
        self.max_clock_skew = nonzero(d, "max clock skew")?;
        Ok(self)
    }

    /// How long a client may be gone (disconnected, not heard from) before the server forgets
    /// it (`Event::Forgotten`): its record, its liveness and its line in reports go, so memory
    /// and exported metrics stay bounded under churn. Default 24 h.
    pub fn forget_after(mut self, d: Duration) -> Result<Self, ConfigError> {
        self.forget_after = nonzero(d, "forget after")?;
        Ok(self)
    }

    /// The forget-after.
    pub fn forget_after_value(&self) -> Duration {
        self.forget_after
    }

    /// How long an expected client (`Server::set_expected`) that said goodbye may stay away:
    /// not back by then, it is `Down` (from `Left`), so a machine that shut down cleanly and
    /// never came back is announced once. Default 1 h. A client not expected stays `Left`.
    pub fn left_grace(mut self, d: Duration) -> Result<Self, ConfigError> {
        self.left_grace = nonzero(d, "left grace")?;
        Ok(self)
    }

    /// The left grace.
    pub fn left_grace_value(&self) -> Duration {
        self.left_grace
    }

    /// The minimum declared interval.
    pub fn min_interval_value(&self) -> Duration {
        self.min_interval
    }

    /// The idle timeout for a connection whose interval is `interval` (declared or estimated):
    /// `max(n * interval, min)`, or the legacy idle timeout while the interval is unknown, and
    /// never more than the max idle.
    pub fn idle_timeout_for(&self, interval: Option<Duration>) -> Duration {
        let idle = match interval {
            Some(i) => i
                .saturating_mul(self.idle_intervals)
                .max(self.min_idle_timeout),
            None => self.legacy_idle_timeout,
        };
        idle.min(self.max_idle)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    use super::*;

    #[test]
    fn interval_is_parsed_not_validated() {
        let id = ClientId::new("a").unwrap();
        assert!(ClientConfig::new(id.clone(), Duration::ZERO).is_err());
        assert!(ClientConfig::new(id.clone(), Duration::from_micros(1500)).is_err());
        assert!(ClientConfig::new(id.clone(), Duration::from_secs(86_401)).is_err());
        let c = ClientConfig::new(id, Duration::from_millis(10)).unwrap();
        assert_eq!(c.ack_timeout, Duration::from_secs(2));
        assert!(c.clone().ack_timeout(Duration::from_millis(10)).is_err());
        assert!(c.clone().count(Some(0)).is_err());
    }

    #[test]
    fn zero_counts_and_durations_are_rejected_by_name() {
        let zero = |r: Result<ServerConfig, ConfigError>| match r {
            Err(ConfigError::Zero { name }) => name,
            other => panic!("{other:?}"),
        };
        let s = ServerConfig::default;
        assert_eq!(zero(s().hello_timeout(Duration::ZERO)), "hello timeout");
        assert_eq!(
            zero(s().legacy_idle_timeout(Duration::ZERO)),
            "legacy idle timeout"
        );
        assert_eq!(zero(s().burst_gap_intervals(0)), "burst gap intervals");
        assert_eq!(zero(s().pause_guard(Duration::ZERO)), "pause guard");
        assert_eq!(zero(s().min_interval(Duration::ZERO)), "min interval");
        assert_eq!(zero(s().max_idle(Duration::ZERO)), "max idle");
        assert_eq!(zero(s().max_clock_skew(Duration::ZERO)), "max clock skew");
        assert_eq!(zero(s().forget_after(Duration::ZERO)), "forget after");
        assert!(s().pause_guard(Duration::from_millis(1)).is_ok());
        let c = ClientConfig::new(ClientId::new("a").unwrap(), Duration::from_secs(1)).unwrap();
        assert!(c.clone().silence_intervals(0).is_err());
        assert!(c.clone().count(None).is_ok());
        assert_eq!(c.clone().count(Some(3)).unwrap().count, Some(3));
        let key = || Some(Secret::new("0123456789abcdef").unwrap());
        assert_eq!(
            c.clone().legacy(true).unwrap().auth_key(key()).err(),
            Some(ConfigError::LegacyAuth)
        );
        assert_eq!(
            c.clone().auth_key(key()).unwrap().legacy(true).err(),
            Some(ConfigError::LegacyAuth)
        );
        assert!(c.auth_key(key()).unwrap().legacy(false).is_ok());
    }

    #[test]
    fn the_idle_timeout_is_ten_intervals_at_least_5s_at_most_max_idle() {
        let s = ServerConfig::default();
        let ms = Duration::from_millis;
        assert_eq!(s.idle_timeout_for(Some(ms(10))), Duration::from_secs(5));
        assert_eq!(s.idle_timeout_for(Some(ms(1000))), Duration::from_secs(10));
        assert_eq!(
            s.idle_timeout_for(Some(ms(86_400_000))),
            Duration::from_secs(600)
        );
        assert_eq!(s.idle_timeout_for(None), Duration::from_secs(60));
        let s = s.max_idle(Duration::from_secs(2)).unwrap();
        assert_eq!(s.idle_timeout_for(None), Duration::from_secs(2));
    }

    #[test]
    fn backoff_doubles_caps_and_jitters_within_half() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).unwrap();
        assert_eq!(b.nominal(0), Duration::from_millis(100));
        assert_eq!(b.nominal(3), Duration::from_millis(800));
        assert_eq!(b.nominal(4), Duration::from_secs(1));
        assert_eq!(b.nominal(u32::MAX), Duration::from_secs(1));
        let mut rng = SmallRng::seed_from_u64(1);
        for attempt in 0..40 {
            let d = b.delay(attempt, &mut rng);
            assert!(
                d >= b.nominal(attempt) / 2 && d <= b.nominal(attempt),
                "{d:?}"
            );
        }
        assert!(Backoff::new(Duration::ZERO, Duration::from_secs(1)).is_err());
        assert!(Backoff::new(Duration::from_secs(2), Duration::from_secs(1)).is_err());
    }
}
