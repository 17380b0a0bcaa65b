//! `heartbeat-sim qos`: the command line.

use std::io::Write as _;
use std::ops::Range;
use std::process::ExitCode;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use heartbeat_core::detector::{DetectorConfig, DetectorKind, QosTarget};
use heartbeat_net::cli::DetectorParams;

pub use crate::flags::{parse_duration, parse_seeds};

use super::{EngineKind, QOS_SCENARIOS, QosParams, Study, grid, table};
use heartbeat_memnet::Latency;

/// What `heartbeat-sim qos` is asked: the study to run and how to print it.
#[derive(Clone, Debug)]
pub struct QosArgs {
    /// The QoS scenario: steady-jitter (no failures), crash (clients crash silently and
    /// restart), partition (links cut and repaired), or all.
    pub scenario: String,
    /// Seeds to run, `A..B` (B excluded).
    pub seeds: Range<u64>,
    /// Simulated time per seed: a number with a unit (`600s`, `10m`, `1h`, `7d`, `90000ms`;
    /// seconds without one).
    pub duration: Duration,
    /// Heartbeat interval of every client, in ms (100 = 10 Hz, as in the phi paper).
    pub interval: u64,
    /// Number of clients [default: the scenario's: steady-jitter 1, crash 4, partition 2].
    pub clients: Option<usize>,
    /// Link latency: fixed (`10ms`) or a range drawn per message (`1ms..50ms`); bare milliseconds
    /// (`10`, `1-50`) read the same.
    pub latency: Latency,
    /// Detectors to compare: chen, fixed, phi, phi-exp, or all; repeat the flag or separate
    /// with commas [default: all]. The parameter flags below apply to every chosen detector
    /// that has the parameter; durations take a unit (ns, us, ms, s) or a multiple of the
    /// interval (2x).
    pub detector: Vec<String>,
    /// Also run a small grid around each detector's parameters: phi threshold 4/8/12 and
    /// acceptable pause 0s/1s, phi-exp threshold 4/8/12, chen alpha 0.5x/1x/2x, fixed grace
    /// 1x/2x/4x.
    pub grid: bool,
    /// Detector parameters; each applies to the chosen detectors that have it.
    pub params: DetectorParams,
    /// Print one JSON object per scenario instead of the table.
    pub json: bool,
    /// Print CSV instead of the table.
    pub csv: bool,
    /// Threads (default: available parallelism).
    pub jobs: Option<usize>,
    /// How to run the detectors.
    pub engine: EngineKind,
    /// A quality-of-service target (`--target-detection`, `--target-mistake-every`): the one
    /// setting is then `chen` with each client's margin set from the target by the server
    /// (its measured loss and delay variance), run on the `machine` engine.
    pub target: Option<QosTarget>,
}

/// The detectors named by repeated `--detector` flags (`all`, the default, for every one), in
/// the order given, each once; an error for an unknown name, or for a parameter flag that none
/// of them takes. One reading for `qos` and `tune`.
pub(crate) fn chosen_kinds(
    names: &[String],
    params: &DetectorParams,
) -> Result<Vec<DetectorKind>, String> {
    let mut kinds: Vec<DetectorKind> = Vec::new();
    let names: Vec<&str> = if names.is_empty() {
        vec!["all"]
    } else {
        names.iter().map(String::as_str).collect()
    };
    for name in names {
        let add: Vec<DetectorKind> = if name == "all" {
            DetectorKind::ALL.to_vec()
        } else {
            vec![
                name.parse()
                    .map_err(|e: heartbeat_core::ConfigError| e.to_string())?,
            ]
        };
        for k in add {
            if !kinds.contains(&k) {
                kinds.push(k);
            }
        }
    }
    if let Some(flag) = params.unused_by(&kinds) {
        return Err(format!(
            "--{flag} is not a parameter of any chosen detector"
        ));
    }
    Ok(kinds)
}

impl QosArgs {
    /// The detector settings to compare, in the table's order.
    pub fn settings(&self) -> Result<Vec<DetectorConfig>, String> {
        if self.target.is_some() {
            if self.grid {
                return Err("--grid does not apply with --target-detection".into());
            }
            return Ok(vec![DetectorConfig::new(DetectorKind::Chen)]);
        }
        let kinds = chosen_kinds(&self.detector, &self.params)?;
        let mut settings = Vec::new();
        for &k in &kinds {
            // Each detector takes the flags it has; the validation is heartbeat-server's.
            let config = self.params.for_kind(k).config(k);
            settings.push(config.map_err(|e| format!("{k}: {e}"))?);
        }
        Ok(if self.grid { grid(&settings) } else { settings })
    }
}

/// Runs `heartbeat-sim qos`: 0 on success, 2 on bad arguments or a failed simulation.
pub fn main(args: QosArgs) -> ExitCode {
    let settings = match args.settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let names: Vec<&str> = if args.scenario == "all" {
        QOS_SCENARIOS.iter().map(|(n, _)| *n).collect()
    } else {
        vec![args.scenario.as_str()]
    };
    let interval = match heartbeat_core::config::ClientConfig::new(
        heartbeat_core::ClientId::new("c1").expect("a valid id"),
        Duration::from_millis(args.interval),
    ) {
        Ok(c) => c.interval(),
        Err(e) => {
            eprintln!("error: --interval: {e}");
            return ExitCode::from(2);
        }
    };
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZero::get));
    let mut stdout = std::io::stdout().lock();
    if args.csv && stdout.write_all(table::csv_header().as_bytes()).is_err() {
        return ExitCode::FAILURE;
    }
    for (k, name) in names.iter().enumerate() {
        if let Some(t) = &args.target {
            eprintln!(
                "qos {name}: detection configured by its QoS target ({t}): chen, each client's \
                 margin from its measured loss and delay variance, engine machine"
            );
        }
        let study = Study {
            scenario: (*name).to_owned(),
            seeds: args.seeds.clone(),
            params: QosParams {
                seed: args.seeds.start,
                duration: args.duration,
                interval,
                clients: args.clients,
                latency: args.latency,
            },
            settings: settings.clone(),
            // The replay engine feeds plain detectors: a target needs the server's estimates.
            engine: if args.target.is_some() {
                EngineKind::Machine
            } else {
                args.engine
            },
            jobs,
        };
        let bar = ProgressBar::new(1);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:30}] {percent}% of simulated time ({elapsed})",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix((*name).to_owned());
        // Wall time is read at the binary's edge only, to report speed on stderr; nothing
        // simulated reads it.
        #[allow(clippy::disallowed_methods)]
        let started = std::time::Instant::now();
        let target = args.target;
        let configure = move |d: &DetectorConfig| super::server_config(d).qos_target(target);
        let result = super::run_configured(&study, &configure, |done, total| {
            bar.set_length(total.max(1));
            bar.set_position(done);
        });
        bar.finish_and_clear();
        let outcome = match result {
            Ok(o) => o,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        };
        let wall = started.elapsed();
        eprintln!(
            "qos {name}: {} heartbeats x {} settings in {:.2} s wall on {jobs} threads",
            outcome.heartbeats,
            settings.len(),
            wall.as_secs_f64()
        );
        let text = if args.json {
            format!("{}\n", table::json(&outcome))
        } else if args.csv {
            table::csv_rows(&outcome)
        } else if k + 1 < names.len() {
            format!("{}\n", table::text(&outcome))
        } else {
            table::text(&outcome)
        };
        if stdout.write_all(text.as_bytes()).is_err() {
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
