//! `heartbeat-sim tune`: the command line.

use std::io::Write as _;
use std::process::ExitCode;

use heartbeat_core::detector::DetectorConfig;
use heartbeat_net::cli::DetectorParams;

use super::render::{self, Input};
use super::synthetic::{self, Spec};
use super::{Study, grid};
use crate::qos::cli::chosen_kinds;
use crate::qos::metrics::Level;
use crate::serverlog::ServerLog;

/// What `heartbeat-sim tune` is asked: the log (or a synthetic one to print), the detectors
/// and how to print the result.
#[derive(Clone, Debug)]
pub struct TuneArgs {
    /// What `heartbeat-server --json` printed (one JSON object per line), or `-` for standard
    /// input.
    pub events: Option<String>,
    /// Detectors to try: chen, fixed, phi, phi-exp, or all; repeat the flag or separate with
    /// commas [default: all].
    pub detector: Vec<String>,
    /// Detector parameters: given any, exactly these settings are tried (one per chosen
    /// detector that has them) instead of the tuning grid.
    pub params: DetectorParams,
    /// Tune these clients only (by name as logged); repeat the flag [default: every client].
    pub client: Vec<String>,
    /// Crash points per client at most: a client with more arrivals gets a seeded random sample
    /// of this size (about); 0 uses every arrival.
    pub crash_points: usize,
    /// Seed of the crash-point sample (and of the synthetic trace).
    pub seed: u64,
    /// Threads (default: available parallelism).
    pub jobs: Option<usize>,
    /// The level a recommended setting makes no mistake at, and whose detection time ranks
    /// it: `down` or `suspect`.
    pub level: Level,
    /// Print one JSON object instead of the table.
    pub json: bool,
    /// Print CSV instead of the table.
    pub csv: bool,
    /// Print a synthetic server log instead of tuning: DURATION@RATE, e.g. 7d@10Hz (one client,
    /// the simulator's 1-50 ms latencies, link stalls of 0.2 to 1.5 s every 5 to 60 minutes).
    pub synthetic: Option<Spec>,
}

/// Reads `--level`: `down` or `suspect`.
pub fn parse_level(s: &str) -> Result<Level, String> {
    match s {
        "down" => Ok(Level::Down),
        "suspect" => Ok(Level::Suspect),
        _ => Err(format!("{s:?} is not a level: down or suspect")),
    }
}

impl TuneArgs {
    /// The settings to try: the tuning grid of the chosen detectors, or exactly the given
    /// parameters.
    pub fn settings(&self) -> Result<Vec<DetectorConfig>, String> {
        let kinds = chosen_kinds(&self.detector, &self.params)?;
        if self.params.unused_by(&[]).is_none() {
            return Ok(grid(&kinds));
        }
        kinds
            .iter()
            .map(|&k| {
                // Each detector takes the flags it has; the validation is heartbeat-server's.
                self.params
                    .for_kind(k)
                    .config(k)
                    .map_err(|e| format!("{k}: {e}"))
            })
            .collect()
    }
}

/// Runs `heartbeat-sim tune`: 0 on success, 1 when the log cannot be read, 2 on bad arguments
/// or a log with nothing to tune.
pub fn main(args: TuneArgs) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    if let Some(spec) = args.synthetic {
        let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout);
        let ok = synthetic::write(spec, args.seed, &mut out).and_then(|()| out.flush());
        return if ok.is_ok() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    let settings = match args.settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let file = args.events.as_deref().unwrap_or("-");
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZero::get))
        .max(1);
    // Wall time is read at the binary's edge only, to report speed on stderr.
    #[allow(clippy::disallowed_methods)]
    let started = std::time::Instant::now();
    let log = match ServerLog::open(file, jobs) {
        Ok(log) => log,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let read = started.elapsed();
    for (line, why) in &log.stats.errors {
        eprintln!("warning: {file}:{line}: malformed, skipped: {why}");
    }
    let unreported = log.stats.malformed - log.stats.errors.len() as u64;
    if unreported > 0 {
        eprintln!("warning: {file}: {unreported} more malformed lines skipped");
    }
    let study = Study {
        settings,
        clients: args.client.clone(),
        crash_points: args.crash_points,
        seed: args.seed,
        jobs,
        level: args.level,
    };
    let outcome = match super::run(&log, &study) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {file}: {e}");
            return ExitCode::from(2);
        }
    };
    eprintln!(
        "tune: {} lines read in {:.2} s, {} arrivals x {} settings replayed in {:.2} s, on {jobs} \
         threads",
        log.stats.lines,
        read.as_secs_f64(),
        outcome.arrivals(),
        study.settings.len(),
        (started.elapsed() - read).as_secs_f64(),
    );
    let input = Input {
        file,
        stats: &log.stats,
        seed: args.seed,
    };
    let text = if args.json {
        format!("{}\n", render::json(&outcome, &input))
    } else if args.csv {
        render::csv(&outcome, &input)
    } else {
        render::text(&outcome, &input)
    };
    if stdout.write_all(text.as_bytes()).is_err() {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
