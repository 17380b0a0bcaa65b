//! Command-line pieces shared by `heartbeat-server` and `heartbeat-sim`.

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

    /// phi, phi-exp, chen: inter-arrival samples kept per client [default: 1000].
    #[arg(long)]
    pub window: Option<usize>,
}

fn parse_kind(s: &str) -> Result<DetectorKind, String> {
    s.parse().map_err(|e: ConfigError| e.to_string())
}

fn parse_span(s: &str) -> Result<Span, String> {
    s.parse().map_err(|e: ConfigError| e.to_string())
}

impl DetectorArgs {
    /// The validated detector configuration.
    pub fn config(&self) -> Result<DetectorConfig, ConfigError> {
        let misplaced = |name: &'static str, present: bool| {
            if present {
                Err(ConfigError::Detector {
                    name,
                    why: "not a parameter of the chosen detector",
                })
            } else {
                Ok(())
            }
        };
        let kind = self.detector;
        use DetectorKind as K;
        let phi_like = matches!(kind, K::Phi | K::PhiExp);
        misplaced("threshold", self.threshold.is_some() && !phi_like)?;
        misplaced(
            "min-std-deviation",
            self.min_std_deviation.is_some() && kind != K::Phi,
        )?;
        misplaced(
            "acceptable-pause",
            self.acceptable_pause.is_some() && kind != K::Phi,
        )?;
        misplaced(
            "first-heartbeat-estimate",
            self.first_heartbeat_estimate.is_some() && kind != K::Phi,
        )?;
        misplaced(
            "initial-interval",
            self.initial_interval.is_some() && kind != K::PhiExp,
        )?;
        misplaced("alpha", self.alpha.is_some() && kind != K::Chen)?;
        misplaced("grace", self.grace.is_some() && kind != K::Fixed)?;
        misplaced("window", self.window.is_some() && kind == K::Fixed)?;
        Ok(match kind {
            K::Fixed => {
                let mut c = FixedConfig::default();
                if let Some(g) = self.grace {
                    c = c.grace(g)?;
                }
                c.into()
            }
            K::Phi => {
                let mut c = PhiConfig::default();
                if let Some(t) = self.threshold {
                    c = c.threshold(t)?;
                }
                if let Some(s) = self.min_std_deviation {
                    c = c.min_std_deviation(s)?;
                }
                if let Some(p) = self.acceptable_pause {
                    c = c.acceptable_pause(p)?;
                }
                if let Some(e) = self.first_heartbeat_estimate {
                    c = c.first_heartbeat_estimate(e)?;
                }
                if let Some(w) = self.window {
                    c = c.window(w)?;
                }
                c.into()
            }
            K::PhiExp => {
                let mut c = PhiExpConfig::default();
                if let Some(t) = self.threshold {
                    c = c.threshold(t)?;
                }
                if let Some(i) = self.initial_interval {
                    c = c.initial_interval(i)?;
                }
                if let Some(w) = self.window {
                    c = c.window(w)?;
                }
                c.into()
            }
            K::Chen => {
                let mut c = ChenConfig::default();
                if let Some(a) = self.alpha {
                    c = c.alpha(a)?;
                }
                if let Some(w) = self.window {
                    c = c.window(w)?;
                }
                c.into()
            }
            _ => DetectorConfig::new(kind),
        })
    }
}

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
}
