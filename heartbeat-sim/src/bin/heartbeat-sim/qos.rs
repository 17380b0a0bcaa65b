//! `heartbeat-sim qos`: the command line.

use std::ops::Range;
use std::time::Duration;

use clap::{Args, ValueEnum};

use heartbeat_memnet::Latency;
use heartbeat_net::cli::{DetectorParams, TargetArgs};
use heartbeat_sim::flags::{parse_duration, parse_seeds};
use heartbeat_sim::qos::EngineKind;

/// How the detectors are run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum EngineArg {
    /// One full client+server simulation per seed and setting.
    Machine,
    /// One full simulation per seed; its arrivals replayed into every setting's detector
    /// (same results, faster).
    Replay,
}

/// Measure the failure detectors' quality of service against the simulation's ground truth.
#[derive(Args, Debug)]
pub(crate) struct QosArgs {
    /// The QoS scenario: steady-jitter (no failures), crash (clients crash silently and
    /// restart), partition (links cut and repaired), or all.
    #[arg(long, default_value = "all")]
    pub(crate) scenario: String,
    /// Seeds to run, `A..B` (B excluded).
    #[arg(long, default_value = "1..11", value_parser = parse_seeds)]
    pub(crate) seeds: Range<u64>,
    /// Simulated time per seed: a number with a unit (`600s`, `10m`, `1h`, `7d`, `90000ms`;
    /// seconds without one).
    #[arg(long, default_value = "600s", value_parser = parse_duration)]
    pub(crate) duration: Duration,
    /// Heartbeat interval of every client, in ms (100 = 10 Hz, as in the phi paper).
    #[arg(long, default_value_t = 100)]
    pub(crate) interval: u64,
    /// Number of clients [default: the scenario's: steady-jitter 1, crash 4, partition 2].
    #[arg(long)]
    pub(crate) clients: Option<usize>,
    /// Link latency: fixed (`10ms`) or a range drawn per message (`1ms..50ms`); bare milliseconds
    /// (`10`, `1-50`) read the same.
    #[arg(long, default_value = "1ms..50ms", value_parser = Latency::parse)]
    pub(crate) latency: Latency,
    /// Detectors to compare: chen, fixed, phi, phi-exp, or all; repeat the flag or separate
    /// with commas [default: all]. The parameter flags below apply to every chosen detector
    /// that has the parameter; durations take a unit (ns, us, ms, s) or a multiple of the
    /// interval (2x).
    #[arg(long, value_delimiter = ',')]
    pub(crate) detector: Vec<String>,
    /// Also run a small grid around each detector's parameters: phi threshold 4/8/12 and
    /// acceptable pause 0s/1s, phi-exp threshold 4/8/12, chen alpha 0.5x/1x/2x, fixed grace
    /// 1x/2x/4x.
    #[arg(long)]
    pub(crate) grid: bool,
    /// Detector parameters; each applies to the chosen detectors that have it.
    #[command(flatten)]
    pub(crate) params: DetectorParams,
    /// Print one JSON object per scenario instead of the table.
    #[arg(long, conflicts_with = "csv")]
    pub(crate) json: bool,
    /// Print CSV instead of the table.
    #[arg(long)]
    pub(crate) csv: bool,
    /// Threads (default: available parallelism).
    #[arg(long)]
    pub(crate) jobs: Option<usize>,
    /// How to run the detectors.
    #[arg(long, value_enum, default_value = "replay")]
    pub(crate) engine: EngineArg,
    /// A quality-of-service target instead of detectors: `chen` with each client's margin set
    /// by the server from the target and its measured loss and delay variance (run on the
    /// machine engine).
    #[command(flatten)]
    pub(crate) target: TargetArgs,
}

impl TryFrom<QosArgs> for heartbeat_sim::qos::cli::QosArgs {
    type Error = String;

    fn try_from(a: QosArgs) -> Result<Self, String> {
        let target = a.target.target().map_err(|e| e.to_string())?;
        Ok(Self {
            scenario: a.scenario,
            seeds: a.seeds,
            duration: a.duration,
            interval: a.interval,
            clients: a.clients,
            latency: a.latency,
            detector: a.detector,
            grid: a.grid,
            params: a.params,
            json: a.json,
            csv: a.csv,
            jobs: a.jobs,
            engine: match a.engine {
                EngineArg::Machine => EngineKind::Machine,
                EngineArg::Replay => EngineKind::Replay,
            },
            target,
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
        qos: QosArgs,
    }

    fn labels(args: &[&str]) -> Result<Vec<String>, String> {
        let t = T::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        Ok(heartbeat_sim::qos::cli::QosArgs::try_from(t.qos)?
            .settings()?
            .iter()
            .map(heartbeat_sim::qos::label)
            .collect())
    }

    #[test]
    fn detectors_and_their_flags() {
        assert_eq!(labels(&[]).unwrap(), ["chen", "fixed", "phi", "phi-exp"]);
        assert_eq!(
            labels(&["--detector", "phi,chen", "--detector", "phi"]).unwrap(),
            ["phi", "chen"]
        );
        // A flag applies to every chosen detector that has it.
        assert_eq!(
            labels(&["--threshold", "12", "--alpha", "2x"]).unwrap(),
            [
                "chen alpha=2x",
                "fixed",
                "phi threshold=12",
                "phi-exp threshold=12"
            ]
        );
        assert_eq!(
            labels(&["--detector", "fixed", "--grid"]).unwrap(),
            ["fixed grace=1x", "fixed", "fixed grace=4x"]
        );
        let err = labels(&["--detector", "fixed", "--threshold", "3"]).unwrap_err();
        assert!(err.contains("--threshold"), "{err}");
        assert!(labels(&["--detector", "nope"]).is_err());
        assert!(labels(&["--threshold", "-1"]).is_err());
    }
}
