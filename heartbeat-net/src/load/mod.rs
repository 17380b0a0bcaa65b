//! `heartbeat-load`'s library side: a load generator that measures, and the sink it is compared
//! with.
//!
//! - [`run_load`]: N connections (v1 ids `load-0..N`, or the legacy format), each sending on
//!   its own drift-free grid, phases spread evenly over the interval; reports offered and
//!   achieved heartbeats/s, acks, ack round trips and the CPU time and memory of watched
//!   processes over the measured window ([`LoadReport`]).
//! - [`run_sink`]: a bare read-and-discard server that counts heartbeats by their boundaries
//!   ([`BeatCounter`]), the floor for "server CPU per heartbeat".
//! - [`schedule`]: when each connection connects and sends. [`process`]: `/proc` readings and
//!   the open-file limit.

mod count;
mod generator;
pub mod process;
mod report;
pub mod schedule;
mod sink;

pub use count::BeatCounter;
pub use generator::{LoadConfig, LoadError, Phase, Progress, run_load};
pub use report::{LoadReport, ProcUsage, RttSummary};
pub use sink::{SinkCount, SinkReason, run_sink};
