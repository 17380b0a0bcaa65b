//! Everything the other crates need to know per detector, in one place beside [`DetectorKind`]
//! and matched exhaustively: which parameters each kind takes ([`DetectorKind::params`]), how a
//! set of parameter values becomes a configuration ([`ParamValues::config`]), and the grids the
//! QoS lab and `tune` try ([`DetectorConfig::qos_grid`], [`DetectorKind::tune_grid`]).
//!
//! A fifth detector does not compile until each match here (and in `mod.rs`) names it; no other
//! crate matches on [`DetectorKind`], so none of them can miss it. CONTRIBUTING.md lists the steps.

use std::time::Duration;

use super::{ChenConfig, DetectorConfig, DetectorKind, FixedConfig, PhiConfig, PhiExpConfig, Span};
use crate::error::ConfigError;

/// A detector parameter, as the flags (`--threshold`) and scenario files (`threshold = 8`)
/// name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Param {
    /// `acceptable-pause` (phi): pause tolerated on top of the mean interval.
    AcceptablePause,
    /// `alpha` (chen): the safety margin added to the expected arrival.
    Alpha,
    /// `first-heartbeat-estimate` (phi): the interval assumed before any was measured.
    FirstHeartbeatEstimate,
    /// `grace` (fixed): silence tolerated after a missed interval.
    Grace,
    /// `initial-interval` (phi-exp): initial and largest learned interval.
    InitialInterval,
    /// `min-std-deviation` (phi): lower bound of the inter-arrival standard deviation.
    MinStdDeviation,
    /// `threshold` (phi, phi-exp): the phi value at which a client is down.
    Threshold,
    /// `window` (phi, phi-exp, chen): inter-arrival samples kept per client.
    Window,
}

impl Param {
    /// Every parameter, in alphabetical order.
    pub const ALL: [Self; 8] = [
        Self::AcceptablePause,
        Self::Alpha,
        Self::FirstHeartbeatEstimate,
        Self::Grace,
        Self::InitialInterval,
        Self::MinStdDeviation,
        Self::Threshold,
        Self::Window,
    ];

    /// The name of its flag (without `--`) and of its scenario file field.
    pub fn name(self) -> &'static str {
        match self {
            Self::AcceptablePause => "acceptable-pause",
            Self::Alpha => "alpha",
            Self::FirstHeartbeatEstimate => "first-heartbeat-estimate",
            Self::Grace => "grace",
            Self::InitialInterval => "initial-interval",
            Self::MinStdDeviation => "min-std-deviation",
            Self::Threshold => "threshold",
            Self::Window => "window",
        }
    }
}

impl DetectorKind {
    /// The parameters this kind takes.
    pub fn params(self) -> &'static [Param] {
        use Param as P;
        match self {
            Self::Chen => &[P::Alpha, P::Window],
            Self::Fixed => &[P::Grace],
            Self::Phi => &[
                P::AcceptablePause,
                P::FirstHeartbeatEstimate,
                P::MinStdDeviation,
                P::Threshold,
                P::Window,
            ],
            Self::PhiExp => &[P::InitialInterval, P::Threshold, P::Window],
        }
    }

    /// Whether this kind takes `param`.
    pub fn takes(self, param: Param) -> bool {
        self.params().contains(&param)
    }

    /// The settings `heartbeat-sim tune` replays for this kind: multiples of the client's
    /// interval where the parameter scales with it, then absolute durations, which suit a
    /// fleet of mixed intervals (one setting, the same silence tolerated by every client):
    ///
    /// - `chen`: α 0.5, 1 (default), 2, 5 and 10 intervals; α 250 ms, 500 ms, 1 s, 2 s and 5 s;
    /// - `fixed`: grace 1, 2 (default), 5, 10 and 20 intervals; grace 1 s, 2 s, 3 s, 5 s and
    ///   10 s;
    /// - `phi`: acceptable pause 0, 1 and 5 intervals at threshold 8, pause 1 interval at
    ///   threshold 12, and the defaults (threshold 8, pause 3 s, meant for 1 s heartbeats);
    ///   pause 500 ms, 1 s, 2 s and 5 s at threshold 8;
    /// - `phi-exp`: threshold 2, 4, 8 (default) and 12.
    pub fn tune_grid(self) -> Vec<DetectorConfig> {
        let x = Span::Intervals;
        let ms = |n: u64| Span::Fixed(Duration::from_millis(n));
        match self {
            Self::Chen => [0.5, 1.0, 2.0, 5.0, 10.0]
                .map(x)
                .into_iter()
                .chain([250, 500, 1_000, 2_000, 5_000].map(ms))
                .filter_map(|a| ChenConfig::default().alpha(a).ok().map(Into::into))
                .collect(),
            Self::Fixed => [1.0, 2.0, 5.0, 10.0, 20.0]
                .map(x)
                .into_iter()
                .chain([1_000, 2_000, 3_000, 5_000, 10_000].map(ms))
                .filter_map(|g| FixedConfig::default().grace(g).ok().map(Into::into))
                .collect(),
            Self::Phi => [(8.0, 0.0), (8.0, 1.0), (12.0, 1.0), (8.0, 5.0)]
                .into_iter()
                .filter_map(|(threshold, pause)| {
                    let c = PhiConfig::default().acceptable_pause(x(pause));
                    c.and_then(|c| c.threshold(threshold)).ok().map(Into::into)
                })
                .chain([PhiConfig::default().into()])
                .chain(
                    [500, 1_000, 2_000, 5_000]
                        .into_iter()
                        .filter_map(|p| PhiConfig::default().acceptable_pause(ms(p)).ok())
                        .map(Into::into),
                )
                .collect(),
            Self::PhiExp => [2.0, 4.0, 8.0, 12.0]
                .into_iter()
                .filter_map(|t| PhiExpConfig::default().threshold(t).ok().map(Into::into))
                .collect(),
        }
    }
}

impl DetectorConfig {
    /// The QoS lab's `--grid` around this configuration: varied along its main parameters (φ:
    /// threshold 4, 8, 12 and acceptable pause 0 s, 1 s; φ-exp: threshold 4, 8, 12; chen: α 0.5,
    /// 1, 2 intervals; fixed: grace 1, 2, 4 intervals).
    pub fn qos_grid(&self) -> Vec<Self> {
        match self {
            Self::Phi(c) => {
                let mut v: Vec<Self> = [4.0, 8.0, 12.0]
                    .into_iter()
                    .filter_map(|t| (*c).threshold(t).ok().map(Into::into))
                    .collect();
                v.extend(
                    [
                        Span::Fixed(Duration::ZERO),
                        Span::Fixed(Duration::from_secs(1)),
                    ]
                    .into_iter()
                    .filter_map(|p| (*c).acceptable_pause(p).ok().map(Into::into)),
                );
                v
            }
            Self::PhiExp(c) => [4.0, 8.0, 12.0]
                .into_iter()
                .filter_map(|t| (*c).threshold(t).ok().map(Into::into))
                .collect(),
            Self::Chen(c) => [0.5, 1.0, 2.0]
                .into_iter()
                .filter_map(|a| (*c).alpha(Span::Intervals(a)).ok().map(Into::into))
                .collect(),
            Self::Fixed(c) => [1.0, 2.0, 4.0]
                .into_iter()
                .filter_map(|g| (*c).grace(Span::Intervals(g)).ok().map(Into::into))
                .collect(),
        }
    }
}

/// Values for any detector's parameters, each given or not; each applies to the kinds that
/// take it ([`DetectorKind::takes`]). What the flags and scenario files read, before a kind is
/// chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ParamValues {
    /// [`Param::Threshold`].
    pub threshold: Option<f64>,
    /// [`Param::MinStdDeviation`].
    pub min_std_deviation: Option<Span>,
    /// [`Param::AcceptablePause`].
    pub acceptable_pause: Option<Span>,
    /// [`Param::FirstHeartbeatEstimate`].
    pub first_heartbeat_estimate: Option<Span>,
    /// [`Param::InitialInterval`].
    pub initial_interval: Option<Span>,
    /// [`Param::Alpha`].
    pub alpha: Option<Span>,
    /// [`Param::Grace`].
    pub grace: Option<Span>,
    /// [`Param::Window`].
    pub window: Option<usize>,
}

impl ParamValues {
    /// Whether a value for `param` was given.
    pub fn is_given(&self, param: Param) -> bool {
        match param {
            Param::AcceptablePause => self.acceptable_pause.is_some(),
            Param::Alpha => self.alpha.is_some(),
            Param::FirstHeartbeatEstimate => self.first_heartbeat_estimate.is_some(),
            Param::Grace => self.grace.is_some(),
            Param::InitialInterval => self.initial_interval.is_some(),
            Param::MinStdDeviation => self.min_std_deviation.is_some(),
            Param::Threshold => self.threshold.is_some(),
            Param::Window => self.window.is_some(),
        }
    }

    /// The first parameter given (in [`Param::ALL`]'s order) that none of `kinds` takes.
    pub fn unused_by(&self, kinds: &[DetectorKind]) -> Option<Param> {
        Param::ALL
            .into_iter()
            .find(|&p| self.is_given(p) && !kinds.iter().any(|k| k.takes(p)))
    }

    /// Only the values that `kind` takes.
    pub fn for_kind(&self, kind: DetectorKind) -> Self {
        let keep = |p| kind.takes(p);
        Self {
            threshold: self.threshold.filter(|_| keep(Param::Threshold)),
            min_std_deviation: self
                .min_std_deviation
                .filter(|_| keep(Param::MinStdDeviation)),
            acceptable_pause: self
                .acceptable_pause
                .filter(|_| keep(Param::AcceptablePause)),
            first_heartbeat_estimate: self
                .first_heartbeat_estimate
                .filter(|_| keep(Param::FirstHeartbeatEstimate)),
            initial_interval: self
                .initial_interval
                .filter(|_| keep(Param::InitialInterval)),
            alpha: self.alpha.filter(|_| keep(Param::Alpha)),
            grace: self.grace.filter(|_| keep(Param::Grace)),
            window: self.window.filter(|_| keep(Param::Window)),
        }
    }

    /// The validated configuration of detector `kind` with these values over its defaults; a
    /// value for a parameter `kind` does not take is an error.
    pub fn config(&self, kind: DetectorKind) -> Result<DetectorConfig, ConfigError> {
        if let Some(p) = self.unused_by(&[kind]) {
            return Err(ConfigError::Detector {
                name: p.name(),
                why: "not a parameter of the chosen detector",
            });
        }
        Ok(match kind {
            DetectorKind::Fixed => {
                set(FixedConfig::default(), self.grace, FixedConfig::grace)?.into()
            }
            DetectorKind::Phi => {
                let c = set(PhiConfig::default(), self.threshold, PhiConfig::threshold)?;
                let c = set(c, self.min_std_deviation, PhiConfig::min_std_deviation)?;
                let c = set(c, self.acceptable_pause, PhiConfig::acceptable_pause)?;
                let c = set(
                    c,
                    self.first_heartbeat_estimate,
                    PhiConfig::first_heartbeat_estimate,
                )?;
                set(c, self.window, PhiConfig::window)?.into()
            }
            DetectorKind::PhiExp => {
                let c = set(
                    PhiExpConfig::default(),
                    self.threshold,
                    PhiExpConfig::threshold,
                )?;
                let c = set(c, self.initial_interval, PhiExpConfig::initial_interval)?;
                set(c, self.window, PhiExpConfig::window)?.into()
            }
            DetectorKind::Chen => {
                let c = set(ChenConfig::default(), self.alpha, ChenConfig::alpha)?;
                set(c, self.window, ChenConfig::window)?.into()
            }
        })
    }
}

/// `with(config, value)` when `value` was given, `config` unchanged otherwise.
fn set<C, T>(
    config: C,
    value: Option<T>,
    with: impl FnOnce(C, T) -> Result<C, ConfigError>,
) -> Result<C, ConfigError> {
    match value {
        Some(v) => with(config, v),
        None => Ok(config),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind is in `DetectorKind::ALL` at its place, and every parameter is taken by some
    /// kind: a fifth kind fails to compile here until it is given its place in `ALL`.
    #[test]
    fn every_kind_and_parameter_is_listed() {
        for (i, kind) in DetectorKind::ALL.into_iter().enumerate() {
            let place = match kind {
                DetectorKind::Chen => 0,
                DetectorKind::Fixed => 1,
                DetectorKind::Phi => 2,
                DetectorKind::PhiExp => 3,
            };
            assert_eq!(place, i, "{kind}");
            assert!(!kind.tune_grid().is_empty(), "{kind}");
            assert!(!DetectorConfig::new(kind).qos_grid().is_empty(), "{kind}");
        }
        for p in Param::ALL {
            assert!(
                DetectorKind::ALL.iter().any(|k| k.takes(p)),
                "{} is taken by no detector",
                p.name()
            );
        }
    }

    /// The tuning grid holds absolute settings beside the multiples of the interval (a fleet of
    /// mixed intervals needs one silence for all), and no setting twice.
    #[test]
    fn the_tune_grid_has_absolute_settings_and_no_duplicates() {
        let grid: Vec<String> = DetectorKind::ALL
            .into_iter()
            .flat_map(DetectorKind::tune_grid)
            .map(|c| c.to_string())
            .collect();
        for absolute in [
            "chen alpha=500ms",
            "fixed grace=1s",
            "fixed grace=10s",
            "acceptable-pause=500ms",
            "acceptable-pause=5s",
        ] {
            assert!(
                grid.iter().any(|c| c.contains(absolute)),
                "{absolute} in {grid:?}"
            );
        }
        let mut unique = grid.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), grid.len(), "{grid:?}");
        assert_eq!(grid.len(), 33);
    }

    #[test]
    fn values_become_a_configuration_of_the_kinds_that_take_them() {
        let v = ParamValues {
            threshold: Some(12.0),
            grace: Some(Span::Intervals(3.0)),
            ..ParamValues::default()
        };
        assert_eq!(v.unused_by(&[DetectorKind::Phi]), Some(Param::Grace));
        assert_eq!(v.unused_by(&[DetectorKind::Phi, DetectorKind::Fixed]), None);
        let err = v.config(DetectorKind::Phi).unwrap_err();
        assert!(err.to_string().contains("grace"), "{err}");
        let phi = v
            .for_kind(DetectorKind::Phi)
            .config(DetectorKind::Phi)
            .unwrap();
        assert_eq!(phi.to_string().split(' ').nth(1), Some("threshold=12"));
        let fixed = v
            .for_kind(DetectorKind::Fixed)
            .config(DetectorKind::Fixed)
            .unwrap();
        assert_eq!(fixed.to_string(), "fixed grace=3x");
    }
}
