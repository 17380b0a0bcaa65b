//! Command-line pieces shared by `heartbeat-server` and `heartbeat-sim`.

use std::net::SocketAddr;

use heartbeat_core::ConfigError;
use heartbeat_core::detector::{
    ChenConfig, DetectorConfig, DetectorKind, FixedConfig, PhiConfig, PhiExpConfig, Span,
};

/// The failure detector and its parameters, as flags.
///
/// Durations are a number with a unit (`ns`, `us`, `ms`, `s`) or a multiple of the client's
/// interval (`2x`). A parameter that the chosen detector does not have is an error.
#[derive(Clone, Debug, clap::Args)]
pub struct DetectorArgs {
    /// Failure detector: fixed (dead after interval + grace of silence), phi (phi accrual, Akka's
    /// defaults), phi-exp (Cassandra's exponential phi) or chen (Chen-Toueg-Aguilera expected
    /// arrival + alpha). A client is "suspect" at half the detector's down level and "down" at it.
    #[arg(long, default_value = "phi", value_parser = parse_kind)]
    pub detector: DetectorKind,

    /// The detector's parameters.
    #[command(flatten)]
    pub params: DetectorParams,
}

impl DetectorArgs {
    /// The validated detector configuration.
    pub fn config(&self) -> Result<DetectorConfig, ConfigError> {
        self.params.config(self.detector)
    }
}

/// The parameters of all detectors, as flags; each applies to the detectors that have it.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct DetectorParams {
    /// phi, phi-exp: the phi value at which a client is declared down [default: 8]. Suspect at
    /// half of it.
    #[arg(long)]
    pub threshold: Option<f64>,

    /// phi: lower bound of the inter-arrival standard deviation [default: 100ms].
    #[arg(long, value_parser = parse_span)]
    pub min_std_deviation: Option<Span>,

    /// phi: pause tolerated on top of the mean interval (GC, network hiccups) [default: 3s].
    #[arg(long, value_parser = parse_span)]
    pub acceptable_pause: Option<Span>,

    /// phi: the interval assumed before any was measured [default: 1x, the declared interval].
    #[arg(long, value_parser = parse_span)]
    pub first_heartbeat_estimate: Option<Span>,

    /// phi-exp: initial and largest learned interval [default: 2x].
    #[arg(long, value_parser = parse_span)]
    pub initial_interval: Option<Span>,

    /// chen: safety margin added to the expected arrival [default: 1x]. Suspect at the
    /// expected arrival + alpha, down one alpha later.
    #[arg(long, value_parser = parse_span)]
    pub alpha: Option<Span>,

    /// fixed: silence tolerated after a missed interval [default: 2x]. Suspect halfway.
    #[arg(long, value_parser = parse_span)]
    pub grace: Option<Span>,

    /// phi, phi-exp, chen: inter-arrival samples kept per client [default: 128].
    #[arg(long)]
    pub window: Option<usize>,
}

fn parse_kind(s: &str) -> Result<DetectorKind, String> {
    s.parse().map_err(|e: ConfigError| e.to_string())
}

fn parse_span(s: &str) -> Result<Span, String> {
    s.parse().map_err(|e: ConfigError| e.to_string())
}

impl DetectorParams {
    /// True if detector `kind` has the parameter named `flag` (without its `--`).
    pub fn applies(kind: DetectorKind, flag: &str) -> bool {
        use DetectorKind as K;
        match flag {
            "threshold" => matches!(kind, K::Phi | K::PhiExp),
            "min-std-deviation" | "acceptable-pause" | "first-heartbeat-estimate" => kind == K::Phi,
            "initial-interval" => kind == K::PhiExp,
            "alpha" => kind == K::Chen,
            "grace" => kind == K::Fixed,
            "window" => matches!(kind, K::Phi | K::PhiExp | K::Chen),
            _ => false,
        }
    }

    /// The flags given, by name.
    fn given(&self) -> [(&'static str, bool); 8] {
        [
            ("threshold", self.threshold.is_some()),
            ("min-std-deviation", self.min_std_deviation.is_some()),
            ("acceptable-pause", self.acceptable_pause.is_some()),
            (
                "first-heartbeat-estimate",
                self.first_heartbeat_estimate.is_some(),
            ),
            ("initial-interval", self.initial_interval.is_some()),
            ("alpha", self.alpha.is_some()),
            ("grace", self.grace.is_some()),
            ("window", self.window.is_some()),
        ]
    }

    /// The first flag given that none of `kinds` has.
    pub fn unused_by(&self, kinds: &[DetectorKind]) -> Option<&'static str> {
        let unused = |&(flag, given): &(&'static str, bool)| {
            given && !kinds.iter().any(|&k| Self::applies(k, flag))
        };
        self.given().into_iter().find(unused).map(|(flag, _)| flag)
    }

    /// Only the parameters that detector `kind` has.
    pub fn for_kind(&self, kind: DetectorKind) -> Self {
        let keep = |flag: &str| Self::applies(kind, flag);
        Self {
            threshold: self.threshold.filter(|_| keep("threshold")),
            min_std_deviation: self.min_std_deviation.filter(|_| keep("min-std-deviation")),
            acceptable_pause: self.acceptable_pause.filter(|_| keep("acceptable-pause")),
            first_heartbeat_estimate: self
                .first_heartbeat_estimate
                .filter(|_| keep("first-heartbeat-estimate")),
            initial_interval: self.initial_interval.filter(|_| keep("initial-interval")),
            alpha: self.alpha.filter(|_| keep("alpha")),
            grace: self.grace.filter(|_| keep("grace")),
            window: self.window.filter(|_| keep("window")),
        }
    }

    /// The validated configuration of detector `kind` with these parameters; a parameter
    /// `kind` does not have is an error.
    pub fn config(&self, kind: DetectorKind) -> Result<DetectorConfig, ConfigError> {
        if let Some(name) = self.unused_by(&[kind]) {
            return Err(ConfigError::Detector {
                name,
                why: "not a parameter of the chosen detector",
            });
        }
        use DetectorKind as K;
        Ok(match kind {
            K::Fixed => FixedConfig::default()
                .flag(self.grace, FixedConfig::grace)?
                .into(),
            K::Phi => PhiConfig::default()
                .flag(self.threshold, PhiConfig::threshold)?
                .flag(self.min_std_deviation, PhiConfig::min_std_deviation)?
                .flag(self.acceptable_pause, PhiConfig::acceptable_pause)?
                .flag(
                    self.first_heartbeat_estimate,
                    PhiConfig::first_heartbeat_estimate,
                )?
                .flag(self.window, PhiConfig::window)?
                .into(),
            K::PhiExp => PhiExpConfig::default()
                .flag(self.threshold, PhiExpConfig::threshold)?
                .flag(self.initial_interval, PhiExpConfig::initial_interval)?
                .flag(self.window, PhiExpConfig::window)?
                .into(),
            K::Chen => ChenConfig::default()
                .flag(self.alpha, ChenConfig::alpha)?
                .flag(self.window, ChenConfig::window)?
                .into(),
            _ => DetectorConfig::new(kind),
        })
    }
}

/// The warning a server listening on `addr` logs at start when it does not authenticate
/// clients and can be reached from other machines: client ids are then taken on trust.
pub fn trust_warning(addr: SocketAddr, authenticated: bool) -> Option<String> {
    (!authenticated && !addr.ip().is_loopback()).then(|| {
        format!(
            "Listening on {addr} without --auth-keys: client ids are taken on trust, so anyone \
             who can reach this port can pose as any client or hide its death (see the README, \
             \"Running on an untrusted network\")"
        )
    })
}

/// A detector configuration builder step taken only for a flag that was given.
trait Flag: Sized {
    /// `set(self, value)` when the flag was given, `self` unchanged otherwise.
    fn flag<T>(
        self,
        value: Option<T>,
        set: impl FnOnce(Self, T) -> Result<Self, ConfigError>,
    ) -> Result<Self, ConfigError> {
        match value {
            Some(v) => set(self, v),
            None => Ok(self),
        }
    }
}

impl<C> Flag for C {}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct T {
        #[command(flatten)]
        d: DetectorArgs,
    }

    fn config(args: &[&str]) -> Result<String, String> {
        let t = T::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        t.d.config()
            .map(|c| c.to_string())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn ids_are_taken_on_trust_only_off_loopback_and_without_keys() {
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        for addr in ["0.0.0.0:6510", "[::]:6510", "192.0.2.1:6510"] {
            let w = trust_warning(at(addr), false).unwrap();
            assert!(w.contains("taken on trust") && w.contains(addr), "{w}");
            assert_eq!(trust_warning(at(addr), true), None);
        }
        for addr in ["127.0.0.1:6510", "[::1]:6510", "127.0.0.2:1"] {
            assert_eq!(trust_warning(at(addr), false), None);
        }
    }

    #[test]
    fn defaults_and_parameters() {
        assert!(config(&[]).unwrap().starts_with("phi threshold=8"));
        assert!(
            config(&["--detector", "chen", "--alpha", "250ms"])
                .unwrap()
                .contains("alpha=250ms")
        );
        assert!(
            config(&["--detector", "fixed", "--grace", "3x"])
                .unwrap()
                .contains("grace=3x")
        );
        assert!(
            config(&["--detector", "phi-exp", "--threshold", "12"])
                .unwrap()
                .contains("threshold=12")
        );
        assert!(
            config(&["--detector", "fixed", "--threshold", "3"])
                .unwrap_err()
                .contains("threshold")
        );
        assert!(config(&["--detector", "nope"]).is_err());
        assert!(config(&["--alpha", "1s"]).is_err());
        assert!(config(&["--threshold", "-1"]).is_err());
    }

    #[test]
    fn every_flag_reaches_its_parameter() {
        let phi = [
            "--threshold",
            "9",
            "--min-std-deviation",
            "7ms",
            "--acceptable-pause",
            "4s",
            "--first-heartbeat-estimate",
            "3x",
            "--window",
            "17",
        ];
        assert_eq!(
            config(&phi).unwrap(),
            "phi threshold=9 min-std-deviation=7ms acceptable-pause=4s window=17 \
             first-heartbeat-estimate=3x"
        );
        assert_eq!(
            config(&[
                "--detector",
                "phi-exp",
                "--threshold",
                "11",
                "--initial-interval",
                "5x",
                "--window",
                "19"
            ])
            .unwrap(),
            "phi-exp threshold=11 window=19 initial-interval=5x"
        );
        assert_eq!(
            config(&["--detector", "chen", "--alpha", "6ms", "--window", "23"]).unwrap(),
            "chen alpha=6ms window=23"
        );
        assert_eq!(
            config(&["--detector", "fixed", "--grace", "8ms"]).unwrap(),
            "fixed grace=8ms"
        );
    }
}
