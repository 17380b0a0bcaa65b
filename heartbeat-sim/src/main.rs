//! `heartbeat-sim`: run named fault scenarios against the real heartbeat client and server
//! machines on a deterministic simulated network.

use std::io::Write as _;
use std::ops::Range;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use heartbeat_sim::scenario::{Latency, Params, SCENARIOS, Scenario};
use heartbeat_sim::{oracle, render, sweep, world};

/// Deterministic fault simulation of heartbeat clients and a server (turmoil).
#[derive(Parser, Debug)]
#[command(version)]
struct Opt {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List the scenarios, one line each.
    List,
    /// Run one scenario once: timeline, the server's report, the oracle verdict. Exits 1 when
    /// an oracle fails.
    Run {
        /// The scenario (see `list`).
        scenario: String,
        /// Seed of everything random in the run (latencies, fault times, nonces, jitter).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[command(flatten)]
        shape: Shape,
        /// Print JSON lines (the server's events, the summary, the verdict) instead of text.
        #[arg(long)]
        json: bool,
        /// Also draw the run's timeline (lanes, faults as bands) as an SVG picture to this file.
        #[arg(long)]
        svg: Option<String>,
    },
    /// Run many seeds of a scenario (or `all`), one simulation per thread; list the failing
    /// seeds with the commands that replay them. Exits 1 when any seed fails.
    Sweep {
        /// The scenario (see `list`), or `all`.
        scenario: String,
        /// Seeds to run, `A..B` (B excluded).
        #[arg(long, value_parser = heartbeat_sim::qos::cli::parse_seeds)]
        seeds: Range<u64>,
        /// Threads (default: available parallelism).
        #[arg(long)]
        jobs: Option<usize>,
        #[command(flatten)]
        shape: Shape,
    },
    /// Measure the failure detectors' quality of service (Chen's metrics: detection time,
    /// mistake rate and duration, query accuracy) against the simulation's ground truth, over
    /// many seeds, with the event-driven engine. Progress on stderr.
    Qos(heartbeat_sim::qos::cli::QosArgs),
    /// Tune the failure detector on a real server's log (`heartbeat-server --json`): every
    /// client's arrivals replayed into a grid of detector settings; detection time (Chen's
    /// method) against mistakes, and the fastest settings without mistakes, as server flags.
    Tune(heartbeat_sim::tune::cli::TuneArgs),
    /// Draw a real server's log (`heartbeat-server --json`) as a timeline: one lane per client,
    /// heartbeats, missed gaps, bursts, suspect and down periods, connections (SVG).
    Timeline(heartbeat_sim::timeline::cli::TimelineArgs),
}

#[derive(Args, Debug)]
struct Shape {
    /// Length of the fault phase, in seconds (`90`, `90s`) or milliseconds (`90000ms`); default
    /// 60 s. The heal-and-drain phase comes after it.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Number of clients (default: the scenario's).
    #[arg(long)]
    clients: Option<usize>,
    /// Link latency in ms: fixed (`10`) or a range drawn per message (`1-50`).
    #[arg(long, default_value = "1-50", value_parser = Latency::parse)]
    latency: Latency,
}

impl Shape {
    fn params(&self, seed: u64) -> Params {
        Params {
            seed,
            duration: self.duration,
            clients: self.clients,
            latency: self.latency,
        }
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?}: expected seconds (90, 90s) or 90000ms");
    if let Some(ms) = s.strip_suffix("ms") {
        return ms.parse().map(Duration::from_millis).map_err(|_| bad());
    }
    let secs = s.strip_suffix('s').unwrap_or(s);
    secs.parse().map(Duration::from_secs).map_err(|_| bad())
}

fn main() -> ExitCode {
    let opt = Opt::parse();
    match opt.command {
        Command::List => {
            let width = SCENARIOS.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
            for (name, summary) in SCENARIOS {
                println!("{name:<width$}  {summary}");
            }
            ExitCode::SUCCESS
        }
        Command::Run {
            scenario,
            seed,
            shape,
            json,
            svg,
        } => run(&scenario, &shape.params(seed), json, svg.as_deref()),
        Command::Qos(args) => heartbeat_sim::qos::cli::main(args),
        Command::Tune(args) => heartbeat_sim::tune::cli::main(args),
        Command::Timeline(args) => heartbeat_sim::timeline::cli::main(args),
        Command::Sweep {
            scenario,
            seeds,
            jobs,
            shape,
        } => {
            let jobs = jobs.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
            });
            let names: Vec<&str> = if scenario == "all" {
                SCENARIOS.iter().map(|(n, _)| *n).collect()
            } else {
                vec![scenario.as_str()]
            };
            let mut failed = false;
            for name in names {
                match sweep_one(name, &shape.params(0), seeds.clone(), jobs) {
                    Ok(ok) => failed |= !ok,
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::from(2);
                    }
                }
            }
            if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
    }
}

fn run(name: &str, params: &Params, json: bool, svg: Option<&str>) -> ExitCode {
    let scenario = match Scenario::build(name, params) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let out = match world::run(&scenario) {
        Ok(out) => out,
        Err(e) => {
            eprintln!("error: the simulation failed: {e}");
            eprintln!("replay: {}", scenario.replay_command());
            return ExitCode::FAILURE;
        }
    };
    let verdict = oracle::check(&out);
    if let Some(Err(e)) = svg.map(|path| heartbeat_sim::timeline::cli::write_run(&out, path)) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let text = if json {
        render::json_lines(&out, &verdict)
    } else {
        render::text(&out, &verdict)
    };
    let mut stdout = std::io::stdout().lock();
    if stdout.write_all(text.as_bytes()).is_err() {
        return ExitCode::FAILURE;
    }
    if verdict.ok() {
        ExitCode::SUCCESS
    } else {
        if json {
            eprintln!("oracle failed; replay: {}", scenario.replay_command());
        }
        ExitCode::FAILURE
    }
}

/// Sweeps one scenario; `Ok(true)` when every seed passed.
fn sweep_one(name: &str, base: &Params, seeds: Range<u64>, jobs: usize) -> Result<bool, String> {
    // Fail fast on a bad name or shape, before starting threads.
    Scenario::build(name, base)?;
    let bar = ProgressBar::new(seeds.end - seeds.start);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} seeds, {msg} ({elapsed})")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(name.to_owned());
    // Wall time is measured at the binary's edge only, to report speed; nothing simulated
    // reads it.
    #[allow(clippy::disallowed_methods)]
    let started = std::time::Instant::now();
    let mut failures = 0u64;
    let results = sweep::sweep(name, base, seeds.clone(), jobs, |r| {
        if !r.failures.is_empty() {
            failures += 1;
        }
        bar.set_message(format!("{failures} failed"));
        bar.inc(1);
    });
    bar.finish_and_clear();
    let wall = started.elapsed();
    let simulated: Duration = results.iter().map(|r| r.simulated).sum();
    let failed: Vec<_> = results.iter().filter(|r| !r.failures.is_empty()).collect();
    println!(
        "sweep {name} seeds {}..{} latency {}: {} runs, {} failed; {:.0} s simulated in {:.1} s \
         wall on {jobs} threads ({:.0}x real time)",
        seeds.start,
        seeds.end,
        base.latency,
        results.len(),
        failed.len(),
        simulated.as_secs_f64(),
        wall.as_secs_f64(),
        simulated.as_secs_f64() / wall.as_secs_f64().max(1e-9),
    );
    for r in &failed {
        println!("  seed {}: {}", r.seed, r.failures[0]);
        if r.failures.len() > 1 {
            println!("    (+{} more failures)", r.failures.len() - 1);
        }
        println!("    replay: {}", r.replay);
    }
    Ok(failed.is_empty())
}
