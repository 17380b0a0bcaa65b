//! Many seeds of one scenario, one simulation per OS thread (a turmoil `Sim` lives and dies
//! inside the thread that built it).

use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use crate::oracle;
use crate::scenario::{Params, Scenario};
use crate::world;

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
pub fn run_seed(name: &str, params: &Params) -> SeedResult {
    let scenario = match Scenario::build(name, params) {
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
    let result = catch_unwind(AssertUnwindSafe(|| world::run(&scenario)));
    let (failures, simulated) = match result {
        Ok(Ok(out)) => {
            let verdict = oracle::check(&out);
            (verdict.failures().collect(), out.end)
        }
        Ok(Err(e)) => (vec![format!("simulation failed: {e}")], Duration::ZERO),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "unknown panic".to_owned());
            (vec![format!("simulation panicked: {msg}")], Duration::ZERO)
        }
    };
    SeedResult {
        seed: params.seed,
        replay,
        failures,
        simulated,
    }
}

/// Runs `seeds` of scenario `name` on `jobs` threads; `progress` is called on the calling
/// thread after each seed. Results come back sorted by seed.
pub fn sweep(
    name: &str,
    base: &Params,
    seeds: Range<u64>,
    jobs: usize,
    mut progress: impl FnMut(&SeedResult),
) -> Vec<SeedResult> {
    let next = AtomicU64::new(seeds.start);
    let (tx, rx) = mpsc::channel();
    let mut results = Vec::new();
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            let tx = tx.clone();
            let next = &next;
            scope.spawn(move || {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= seeds.end {
                        break;
                    }
                    let params = Params {
                        seed,
                        ..base.clone()
                    };
                    if tx.send(run_seed(name, &params)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        for r in rx {
            progress(&r);
            results.push(r);
        }
    });
    results.sort_by_key(|r| r.seed);
    results
}
