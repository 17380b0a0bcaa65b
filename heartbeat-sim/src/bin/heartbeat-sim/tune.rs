//! `heartbeat-sim tune`: the command line.

use clap::Args;

use heartbeat_net::cli::DetectorParams;
use heartbeat_sim::qos::metrics::Level;
use heartbeat_sim::tune::CRASH_POINTS;
use heartbeat_sim::tune::cli::parse_level;
use heartbeat_sim::tune::synthetic::Spec;

/// Tune the failure detector on a real server's log.
#[derive(Args, Debug)]
pub(crate) struct TuneArgs {
    /// What `heartbeat-server --json` printed (one JSON object per line), or `-` for standard
    /// input.
    #[arg(required_unless_present = "synthetic")]
    pub(crate) events: Option<String>,
    /// Detectors to try: chen, fixed, phi, phi-exp, or all; repeat the flag or separate with
    /// commas [default: all].
    #[arg(long, value_delimiter = ',')]
    pub(crate) detector: Vec<String>,
    /// Detector parameters: given any, exactly these settings are tried (one per chosen
    /// detector that has them) instead of the tuning grid.
    #[command(flatten)]
    pub(crate) params: DetectorParams,
    /// Tune these clients only (by name as logged); repeat the flag [default: every client].
    #[arg(long)]
    pub(crate) client: Vec<String>,
    /// Crash points per client at most: a client with more arrivals gets a seeded random sample
    /// of this size (about); 0 uses every arrival.
    #[arg(long, default_value_t = CRASH_POINTS)]
    pub(crate) crash_points: usize,
    /// Seed of the crash-point sample (and of the synthetic trace).
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    /// Threads (default: available parallelism).
    #[arg(long)]
    pub(crate) jobs: Option<usize>,
    /// The level a recommended setting must make no mistake at, and whose detection time
    /// ranks it: down (declared dead) or suspect (suspected or worse); both levels' mistakes
    /// are shown.
    #[arg(long, default_value = "down", value_parser = parse_level)]
    pub(crate) level: Level,
    /// Print one JSON object instead of the table.
    #[arg(long, conflicts_with = "csv")]
    pub(crate) json: bool,
    /// Print CSV instead of the table.
    #[arg(long)]
    pub(crate) csv: bool,
    /// Print a synthetic server log instead of tuning: DURATION@RATE, e.g. 7d@10Hz (one client,
    /// the simulator's 1-50 ms latencies, link stalls of 0.2 to 1.5 s every 5 to 60 minutes).
    #[arg(long, value_parser = Spec::parse, conflicts_with_all = ["events", "json", "csv"])]
    pub(crate) synthetic: Option<Spec>,
}

impl From<TuneArgs> for heartbeat_sim::tune::cli::TuneArgs {
    fn from(a: TuneArgs) -> Self {
        Self {
            events: a.events,
            detector: a.detector,
            params: a.params,
            client: a.client,
            crash_points: a.crash_points,
            seed: a.seed,
            jobs: a.jobs,
            level: a.level,
            json: a.json,
            csv: a.csv,
            synthetic: a.synthetic,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use heartbeat_sim::qos::label;

    #[derive(Debug, Parser)]
    struct T {
        #[command(flatten)]
        tune: TuneArgs,
    }

    fn parse(args: &[&str]) -> Result<heartbeat_sim::tune::cli::TuneArgs, String> {
        T::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
            .map(|t| t.tune.into())
            .map_err(|e| e.to_string())
    }

    fn labels(args: &[&str]) -> Result<Vec<String>, String> {
        Ok(parse(args)?.settings()?.iter().map(label).collect())
    }

    #[test]
    fn the_grid_unless_parameters_are_given() {
        assert_eq!(labels(&["f"]).unwrap().len(), 33);
        assert_eq!(
            labels(&["f", "--detector", "fixed"]).unwrap(),
            [
                "fixed grace=1x",
                "fixed",
                "fixed grace=5x",
                "fixed grace=10x",
                "fixed grace=20x",
                "fixed grace=1s",
                "fixed grace=2s",
                "fixed grace=3s",
                "fixed grace=5s",
                "fixed grace=10s"
            ]
        );
        assert_eq!(
            labels(&[
                "f",
                "--detector",
                "chen,phi",
                "--alpha",
                "3x",
                "--threshold",
                "9"
            ])
            .unwrap(),
            ["chen alpha=3x", "phi threshold=9"]
        );
        assert!(labels(&["f", "--detector", "fixed", "--alpha", "3x"]).is_err());
        assert!(parse(&[]).is_err(), "a log or --synthetic is required");
        let synthetic = parse(&["--synthetic", "1h@10Hz"]).unwrap();
        assert_eq!(synthetic.synthetic.unwrap().heartbeats(), 36_000);
        assert!(parse(&["f", "--synthetic", "1h@10Hz"]).is_err());
        assert!(parse(&["--synthetic", "1h@10Hz", "--json"]).is_err());
    }
}
