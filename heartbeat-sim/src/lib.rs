//! Deterministic fault simulation of heartbeat clients and a server under turmoil 0.7.2.
//!
//! The same `heartbeat-core` machines the real binaries run, driven by the very same loops
//! (`heartbeat_net::driver::{run_client, run_server}`) over `turmoil::net` streams
//! ([`net::SimListener`], [`net::SimConnector`]), on a simulated network whose faults are
//! named, seeded, replayable [scenarios](scenario). Every run checks the [oracles](oracle)
//! against the ground truth the simulation records (what each client really wrote to its
//! stream, and what its core says it sent and skipped), and renders the server's own analysis
//! report.
//!
//! ```text
//! heartbeat-sim list
//! heartbeat-sim show partition
//! heartbeat-sim run partition --seed 7 [--latency 1ms..50ms] [--duration 60] [--clients 3] [--json]
//! heartbeat-sim run steady --duration 3600 --tick 5   # a coarser tick: faster, less exact
//! heartbeat-sim run --file my.toml --seed 7
//! heartbeat-sim sweep all --seeds 0..200 [--jobs 2]
//! heartbeat-sim sweep --file my.toml --seeds 0..200
//! heartbeat-sim check my.toml [--seeds 1..5] [--accept]
//! heartbeat-sim qos [--scenario crash] [--seeds 1..101] [--grid] [--json|--csv]
//! heartbeat-sim run firewall --svg firewall.svg
//! heartbeat-sim tune events.jsonl [--detector chen] [--json|--csv]
//! heartbeat-sim timeline events.jsonl --svg events.svg
//! sudo heartbeat-sim real partition --duration 20s    # on kernel TCP, in network namespaces
//! sudo heartbeat-sim compare partition --duration 20s --runs 5 --svg both.svg
//! ```
//!
//! Scenarios are [files](scenario::file) (`SCENARIOS.md` documents the format); the built-in
//! ones are embedded ([`scenario::builtin`]). [`check`] keeps a snapshot of a file's reports
//! beside it, in insta's format.
//!
//! [`qos`] measures the failure detectors' quality of service (Chen's metrics) on an
//! event-driven engine over the same machines and scenarios, fast enough for simulated weeks.
//! Its network is [`heartbeat_memnet`], the one in-memory model of a TCP link (latency, hold, cut,
//! crash, and the one rule for what happens first at one instant), which the core-level tests'
//! `Pair` harness runs on too.
//!
//! [`real`] runs the same scenarios with the real binaries on kernel TCP, in network
//! namespaces, and compares them with the simulation.
//!
//! A real server's log (`heartbeat-server --json`) is read by [`serverlog`]: [`tune`] replays it
//! into detector settings through the QoS replay, and [`timeline`] draws it (or a run) as SVG.
//!
//! # A run
//! 1. [`scenario::file::Spec::expand`] expands a scenario file and [`Params`] into clients and
//!    timed actions ([`Scenario::build`] for a built-in one, by name).
//! 2. [`world::run`] registers the server host and one host per client, then steps turmoil
//!    one tick at a time: the fault phase (actions at their times), then heal-and-drain (every
//!    link released and repaired, a crashed server restarted, run for [`Scenario::drain`]),
//!    then stops the server to read its report.
//! 3. [`oracle::check`] returns the [`oracle::Verdict`]; [`render`] prints text or JSON lines.
//!
//! # Determinism
//! One `u64` seed fixes turmoil's RNG (latencies), the schedule RNG (fault times) and every
//! client's session nonce and backoff jitter; the wall clock starts at a fixed epoch; hosts are
//! registered in a fixed order; every `select!` (here and in the driver) is `biased;`; nothing
//! rendered iterates a `HashMap`. Same seed, same build: byte-identical output (checked by
//! `tests/tests/sim`). No `--cfg tokio_unstable` is needed.
//!
//! # Example
//! The built-in `partition` scenario with seed 7: run, judged, and rendered as the `run`
//! command prints it.
//!
//! ```
//! use heartbeat_sim::{Params, Scenario, oracle, render, world};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let scenario = Scenario::build("partition", &Params::seed(7))?;
//! let outcome = world::run(&scenario)?;
//! let verdict = oracle::check(&outcome);
//! assert!(verdict.ok(), "{}", render::text(&outcome, &verdict));
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod check;
pub mod flags;
pub mod harness;
pub mod oracle;
pub mod qos;
pub mod real;
pub mod render;
pub mod scenario;
pub mod serverlog;
pub mod sweep;
pub mod timeline;
pub mod tune;

pub use harness::{log, net, world};

pub use heartbeat_memnet::Latency;
pub use scenario::{Params, Scenario};
pub use world::{Outcome, run};
