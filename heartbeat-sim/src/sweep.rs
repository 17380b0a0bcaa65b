//! Many seeds of one scenario, one simulation per OS thread (a turmoil `Sim` lives and dies
//! inside the thread that built it).

use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use crate::harness::world;
use crate::oracle;
use crate::scenario::Params;
use crate::scenario::file::Spec;

/// The result of one seed.
#[derive(Clone, Debug)]
pub struct SeedResult {
    /// The seed.
    pub seed: u64,
    /// The replay command.
    pub replay: String,
    /// Failures (oracle failures, or the simulation's own error or panic); empty when ok.
    pub failures: Vec<String>,
    /// Simulated time of the run.
    pub simulated: Duration,
}

/// Runs one seed, turning a panic into a failure.
pub fn run_seed(spec: &Spec, params: &Params) -> SeedResult {
    let scenario = match spec.expand(params) {
        Ok(s) => s,
        Err(e) => {
            return SeedResult {
                seed: params.seed,
                replay: String::new(),
                failures: vec![e],
                simulated: Duration::ZERO,
            };
        }
    };
    let replay = scenario.replay_command();
    let (failures, simulated) = match unpanic(|| world::run(&scenario)) {
        Ok(Ok(out)) => {
            let verdict = oracle::check(&out);
            (verdict.failures().collect(), out.end)
        }
        Ok(Err(e)) => (vec![format!("simulation failed: {e}")], Duration::ZERO),
        Err(msg) => (vec![format!("simulation panicked: {msg}")], Duration::ZERO),
    };
    SeedResult {
        seed: params.seed,
        replay,
        failures,
        simulated,
    }
}

/// Runs `f`, turning a panic into `Err` with its message.
pub fn unpanic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|panic| {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "unknown panic".to_owned())
    })
}

/// Runs `seeds` of scenario `spec` on `jobs` threads; `progress` is called on the calling
/// thread after each seed. Results come back sorted by seed.
pub fn sweep(
    spec: &Spec,
    base: &Params,
    seeds: Range<u64>,
    jobs: usize,
    progress: impl FnMut(&SeedResult),
) -> Vec<SeedResult> {
    let run = |seed| {
        let params = Params {
            seed,
            ..base.clone()
        };
        run_seed(spec, &params)
    };
    per_seed(seeds, jobs, run, progress)
}

/// `work(seed)` for every seed of `seeds`, on `jobs` threads (each builds and drops its own
/// simulations: a turmoil `Sim` lives and dies in one thread); `progress` is called on the
/// calling thread as each finishes. Results come back in seed order.
pub fn per_seed<T: Send>(
    seeds: Range<u64>,
    jobs: usize,
    work: impl Fn(u64) -> T + Sync,
    mut progress: impl FnMut(&T),
) -> Vec<T> {
    let next = AtomicU64::new(seeds.start);
    let (tx, rx) = mpsc::channel();
    let mut results = Vec::new();
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            let tx = tx.clone();
            let (next, work, end) = (&next, &work, seeds.end);
            scope.spawn(move || {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= end {
                        break;
                    }
                    if tx.send((seed, work(seed))).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        for (seed, r) in rx {
            progress(&r);
            results.push((seed, r));
        }
    });
    results.sort_by_key(|(seed, _)| *seed);
    results.into_iter().map(|(_, r)| r).collect()
}
