//! `heartbeat-sim real` and `heartbeat-sim compare`: scenarios on real kernel TCP in network
//! namespaces (`heartbeat_sim::real`).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use heartbeat_sim::real::{self, compare, run};
use heartbeat_sim::{oracle, render};

use super::{Shape, Which};

/// `real`'s flags.
#[derive(Args, Debug)]
pub(crate) struct RealArgs {
    #[command(flatten)]
    which: Which,
    /// Seed of the fault schedule (fault times and lengths), as `run --seed`.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[command(flatten)]
    shape: Shape,
    /// Where heartbeat-server and heartbeat-client are [default: beside heartbeat-sim].
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    /// Print JSON lines (the server's events, the summary, the verdict) instead of text, as
    /// `run --json` does.
    #[arg(long)]
    json: bool,
    /// Also draw the run's timeline as an SVG picture to this file, as `run --svg` does.
    #[arg(long, value_name = "FILE")]
    svg: Option<String>,
}

/// `compare`'s flags.
#[derive(Args, Debug)]
pub(crate) struct CompareArgs {
    #[command(flatten)]
    which: Which,
    /// Seed of the fault schedule and of the simulated run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[command(flatten)]
    shape: Shape,
    /// Real runs to make, each compared with the one simulated run.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    runs: u32,
    /// Also draw the simulated and the (first) real timeline, one above the other, as SVG.
    #[arg(long, value_name = "FILE")]
    svg: Option<String>,
    /// Where heartbeat-server and heartbeat-client are [default: beside heartbeat-sim].
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
}

/// What both commands need before running: the scenario, the options and the interrupt flag;
/// `Err` with the exit code once the reason is printed.
fn prepare(
    which: &Which,
    shape: &Shape,
    seed: u64,
    bin_dir: Option<PathBuf>,
) -> Result<
    (
        heartbeat_sim::Scenario,
        run::Options,
        std::sync::Arc<std::sync::atomic::AtomicBool>,
    ),
    ExitCode,
> {
    if !real::netns::is_root() {
        eprintln!("error: {}", run::RealError::NotRoot);
        return Err(ExitCode::from(2));
    }
    let spec = match which.specs() {
        Ok(specs) if specs.len() == 1 => specs.into_iter().next().ok_or(ExitCode::from(2))?,
        Ok(_) => {
            eprintln!("error: a real run takes one scenario, not all");
            return Err(ExitCode::from(2));
        }
        Err(e) => {
            eprintln!("error: {e}");
            return Err(ExitCode::from(2));
        }
    };
    let scenario = spec.expand(&shape.params(seed)).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })?;
    for w in scenario.late_warnings() {
        eprintln!("warning: {w}");
    }
    let Some(bin_dir) = bin_dir.or_else(real::procs::default_bin_dir) else {
        eprintln!("error: cannot tell where heartbeat-sim is: give --bin-dir");
        return Err(ExitCode::from(2));
    };
    let Some(stop) = real::interrupt_flag() else {
        eprintln!("error: cannot install the SIGINT/SIGTERM handlers");
        return Err(ExitCode::from(2));
    };
    Ok((scenario, run::Options { bin_dir }, stop))
}

/// The exit code of a real run that failed: 130 when interrupted, 2 otherwise.
fn failed(e: &run::RealError) -> ExitCode {
    eprintln!("error: {e}");
    match e {
        run::RealError::Interrupted => ExitCode::from(130),
        _ => ExitCode::from(2),
    }
}

/// `heartbeat-sim real`.
pub(crate) fn main_real(args: RealArgs) -> ExitCode {
    let (scenario, opts, stop) = match prepare(&args.which, &args.shape, args.seed, args.bin_dir) {
        Ok(p) => p,
        Err(code) => return code,
    };
    for s in run::unrealisable(&scenario) {
        eprintln!("notice: not realised: {s}");
    }
    let real = match run::run(&scenario, &opts, &stop) {
        Ok(r) => r,
        Err(e) => return failed(&e),
    };
    let verdict = oracle::check(&real.outcome);
    if let Some(Err(e)) = args
        .svg
        .map(|path| heartbeat_sim::timeline::cli::write_run(&real.outcome, &path))
    {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let text = if args.json {
        render::json_lines(&real.outcome, &verdict)
    } else {
        format!(
            "real run on kernel TCP (network namespaces, binaries from {}); times are real \
             seconds\n{}",
            opts.bin_dir.display(),
            render::text(&real.outcome, &verdict)
        )
    };
    let mut stdout = std::io::stdout().lock();
    if stdout.write_all(text.as_bytes()).is_err() {
        return ExitCode::FAILURE;
    }
    if verdict.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `heartbeat-sim compare`.
pub(crate) fn main_compare(args: CompareArgs) -> ExitCode {
    let (scenario, opts, stop) = match prepare(&args.which, &args.shape, args.seed, args.bin_dir) {
        Ok(p) => p,
        Err(code) => return code,
    };
    if let Err(why) = run::comparable(&scenario) {
        eprintln!("error: {why}");
        return ExitCode::from(2);
    }
    for s in run::unrealisable(&scenario) {
        eprintln!("notice: not realised: {s}");
    }
    let sim = match heartbeat_sim::world::run(&scenario) {
        Ok(out) => out,
        Err(e) => {
            eprintln!("error: the simulation failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut reals = Vec::new();
    for k in 0..args.runs {
        eprintln!("real run {}/{}", k + 1, args.runs);
        match run::run(&scenario, &opts, &stop) {
            Ok(r) => {
                // The oracles' verdict on each real run, for information: compare judges the
                // differences.
                let verdict = oracle::check(&r.outcome);
                match verdict.failures().next() {
                    None => eprintln!("real run {}: oracles ok", k + 1),
                    Some(first) => eprintln!("real run {}: oracle failed: {first}", k + 1),
                }
                reals.push(r.outcome);
            }
            Err(e) => return failed(&e),
        }
    }
    let cmp = compare::compare(&sim, &reals);
    if let Some(path) = &args.svg {
        if let Err(e) = compare::write_svg(&sim, &reals[0], path) {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    }
    let mut stdout = std::io::stdout().lock();
    if stdout.write_all(cmp.text().as_bytes()).is_err() {
        return ExitCode::FAILURE;
    }
    if cmp.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
