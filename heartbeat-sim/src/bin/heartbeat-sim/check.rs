//! `heartbeat-sim check`: the command line.

use std::ops::Range;

use clap::Args;

/// Run a scenario file over its seeds and compare the reports with its snapshot.
#[derive(Args, Debug)]
pub(crate) struct CheckArgs {
    /// The scenario file; its snapshot is the file beside it, `.snap` instead of `.toml`.
    pub(crate) file: String,
    /// Seeds to run, `A..B` (B excluded) [default: the file's `seeds`, else 1..5].
    #[arg(long, value_parser = heartbeat_sim::flags::parse_seeds)]
    pub(crate) seeds: Option<Range<u64>>,
    /// Record the reports as the snapshot (and remove a pending `.snap.new`).
    #[arg(long)]
    pub(crate) accept: bool,
    /// Threads (default: available parallelism).
    #[arg(long)]
    pub(crate) jobs: Option<usize>,
}

impl From<CheckArgs> for heartbeat_sim::check::CheckArgs {
    fn from(a: CheckArgs) -> Self {
        Self {
            file: a.file,
            seeds: a.seeds,
            accept: a.accept,
            jobs: a.jobs,
        }
    }
}
