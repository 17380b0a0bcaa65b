//! `heartbeat-sim`: run named fault scenarios against the real heartbeat client and server
//! machines on a deterministic simulated network.

use std::io::Write as _;
use std::ops::Range;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use heartbeat_sim::flags::parse_duration;
use heartbeat_sim::scenario::file::Spec;
use heartbeat_sim::scenario::{self, Latency, Params, builtin};
use heartbeat_sim::{oracle, render, sweep, world};

mod check;
mod qos;
mod real;
mod timeline;
mod tune;

/// Deterministic fault simulation of heartbeat clients and a server (turmoil).
#[derive(Parser, Debug)]
#[command(version)]
struct Opt {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List the built-in scenarios, one line each.
    List,
    /// Print a built-in scenario's file, a starting point for one of your own (see
    /// SCENARIOS.md).
    Show {
        /// The scenario (see `list`).
        scenario: String,
    },
    /// Run one scenario once: timeline, the server's report, the oracle verdict. Exits 1 when
    /// an oracle fails, 2 on a bad scenario file.
    Run {
        #[command(flatten)]
        which: Which,
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
    /// Run many seeds of a scenario (or `all` the built-in ones), one simulation per thread;
    /// list the failing seeds with the commands that replay them. Exits 1 when any seed fails.
    Sweep {
        #[command(flatten)]
        which: Which,
        /// Seeds to run, `A..B` (B excluded).
        #[arg(long, value_parser = heartbeat_sim::flags::parse_seeds)]
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
    Qos(qos::QosArgs),
    /// Run a scenario file over its seeds and compare the reports with the snapshot beside it
    /// (`my.snap`, insta's format): exits 1 with a diff (and writes `my.snap.new`) when they
    /// differ or when an oracle fails, 2 on a bad file.
    Check(check::CheckArgs),
    /// Tune the failure detector on a real server's log (`heartbeat-server --json`): every
    /// client's arrivals replayed into a grid of detector settings; detection time (Chen's
    /// method) against mistakes, and the fastest settings without mistakes, as server flags.
    Tune(tune::TuneArgs),
    /// Draw a real server's log (`heartbeat-server --json`) as a timeline: one lane per client,
    /// heartbeats, missed gaps, bursts, suspect and down periods, connections (SVG).
    Timeline(timeline::TimelineArgs),
    /// Run one scenario on real kernel TCP: the heartbeat-server and heartbeat-client binaries
    /// in network namespaces this command makes and removes, faults made with `ip` rules in a
    /// router namespace, times in real seconds; the same oracles and report as `run`. Needs
    /// root (exits 2 without it); faults the kernel cannot make are listed and skipped. Exits 1
    /// when an oracle fails, 130 when interrupted (after cleaning up).
    Real(real::RealArgs),
    /// The simulated run and real runs of one scenario side by side: per client, each
    /// transition's time, reconnects, missed heartbeats and bursts, with the differences and
    /// whether each is inside its tolerance (SCENARIOS.md, "Real runs"). Exits 1 when one is
    /// not. Needs root.
    Compare(real::CompareArgs),
}

/// Which scenario: a built-in one by name, or a file of your own.
#[derive(Args, Debug)]
struct Which {
    /// The built-in scenario (see `list`; `sweep` also takes `all`).
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    scenario: Option<String>,
    /// A scenario file of your own instead (see SCENARIOS.md).
    #[arg(long, value_name = "PATH")]
    file: Option<String>,
}

impl Which {
    /// The scenarios it names, read (`all`: every built-in one).
    fn specs(&self) -> Result<Vec<Spec>, String> {
        match (&self.file, self.scenario.as_deref()) {
            (Some(path), _) => Ok(vec![Spec::from_file(path)?]),
            (None, Some("all")) => builtin::names().map(builtin::spec).collect(),
            (None, Some(name)) => Ok(vec![builtin::spec(name)?]),
            (None, None) => Err("name a scenario or give --file".into()),
        }
    }
}

#[derive(Args, Debug)]
struct Shape {
    /// Length of the fault phase: a duration (`90s`, `90000ms`, `10m`, `1h`; a bare number is
    /// seconds); default 60 s. The heal-and-drain phase comes after it.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Number of clients (default: the scenario's).
    #[arg(long)]
    clients: Option<usize>,
    /// Link latency: fixed (`10ms`) or a range drawn per message (`1ms..50ms`), as in scenario
    /// files; bare milliseconds (`10`, `1-50`) read the same [default: the scenario's,
    /// 1ms..50ms unless its file says otherwise]. Clients with their own latency keep it.
    #[arg(long, value_parser = Latency::parse)]
    latency: Option<Latency>,
    /// Simulation tick in ms, 1 to 10 [default: 1]. The run's cost is per tick, so a tick of 5
    /// runs about five times faster, but every message is delivered on the tick grid: latencies
    /// are rounded up to it, and faults take effect at the next tick. For quick exploration:
    /// replay a failure at the default tick before believing it. The replay command of a run
    /// repeats its tick.
    #[arg(long, value_name = "MS", value_parser = parse_tick)]
    tick: Option<Duration>,
}

impl Shape {
    fn params(&self, seed: u64) -> Params {
        Params {
            seed,
            duration: self.duration,
            clients: self.clients,
            latency: self.latency,
            tick: self.tick,
        }
    }
}

fn parse_tick(s: &str) -> Result<Duration, String> {
    let ms: u64 = s
        .parse()
        .map_err(|_| format!("invalid tick {s:?}: expected whole milliseconds"))?;
    scenario::check_tick(Duration::from_millis(ms))
}

fn main() -> ExitCode {
    let opt = Opt::parse();
    match opt.command {
        Command::List => {
            let summaries = builtin::summaries();
            let width = summaries.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
            for (name, summary) in summaries {
                println!("{name:<width$}  {summary}");
            }
            ExitCode::SUCCESS
        }
        Command::Show { scenario } => match builtin::text(&scenario) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Run {
            which,
            seed,
            shape,
            json,
            svg,
        } => match which.specs() {
            Ok(specs) if specs.len() == 1 => {
                run(&specs[0], &shape.params(seed), json, svg.as_deref())
            }
            Ok(_) => {
                eprintln!("error: run takes one scenario, not all");
                ExitCode::from(2)
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Qos(args) => match args.try_into() {
            Ok(args) => heartbeat_sim::qos::cli::main(args),
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Check(args) => heartbeat_sim::check::main(&args.into()),
        Command::Tune(args) => heartbeat_sim::tune::cli::main(args.into()),
        Command::Timeline(args) => heartbeat_sim::timeline::cli::main(&args.events, &args.svg),
        Command::Real(args) => real::main_real(args),
        Command::Compare(args) => real::main_compare(args),
        Command::Sweep {
            which,
            seeds,
            jobs,
            shape,
        } => {
            let jobs = jobs.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
            });
            let specs = match which.specs() {
                Ok(specs) => specs,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let mut failed = false;
            for spec in &specs {
                match sweep_one(spec, &shape.params(0), seeds.clone(), jobs) {
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

fn run(spec: &Spec, params: &Params, json: bool, svg: Option<&str>) -> ExitCode {
    let scenario = match spec.expand(params) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    for w in scenario.late_warnings() {
        eprintln!("warning: {w}");
    }
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
fn sweep_one(spec: &Spec, base: &Params, seeds: Range<u64>, jobs: usize) -> Result<bool, String> {
    // Fail fast on a bad shape, before starting threads.
    let probe = spec.expand(base)?;
    for w in probe.late_warnings() {
        eprintln!("warning: seed {}: {w}", base.seed);
    }
    let name = &spec.name;
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
    let results = sweep::sweep(spec, base, seeds.clone(), jobs, |r| {
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
        probe.latency,
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
