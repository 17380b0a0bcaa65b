//! Deterministic fault simulation of heartbeat clients and a server under turmoil.
//!
//! The same `heartbeat-core` machines the real binaries run, driven over `turmoil::net`
//! streams ([`net::SimListener`], [`net::SimConnector`]), on a simulated network whose faults
//! are named, seeded, replayable [scenarios](scenario). Every run checks
//! [oracles](oracle) against the ground truth the simulation records (what each client really
//! wrote), and renders the server's own analysis report.
//!
//! # Determinism
//! One `u64` seed fixes turmoil's RNG (latencies), the schedule RNG (fault times) and every
//! client's session nonce and backoff jitter; the wall clock starts at a fixed epoch; hosts are
//! registered in a fixed order; every `select!` is `biased;`; nothing rendered iterates a
//! `HashMap`. Same seed, same build: byte-identical output.
#![forbid(unsafe_code)]

mod host;
pub mod log;
pub mod net;
pub mod oracle;
pub mod qos;
pub mod render;
pub mod scenario;
pub mod sweep;
pub mod world;

pub use scenario::{Latency, Params, SCENARIOS, Scenario};
pub use world::{Outcome, run};
