//! `heartbeat-sim timeline`: the command line.

use clap::Args;

/// Draw a real server's log as a timeline picture.
#[derive(Args, Debug)]
pub(crate) struct TimelineArgs {
    /// What `heartbeat-server --json` printed (one JSON object per line), or `-` for standard
    /// input.
    pub(crate) events: String,
    /// Where to write the SVG picture.
    #[arg(long)]
    pub(crate) svg: String,
}
