//! Sans-IO heartbeat monitoring: the client and server state machines, the wire codec, the
//! per-client analysis and (later) the failure detectors.
//!
//! # The contract
//! Nothing in this crate does I/O, spawns, sleeps, reads a clock or draws from a global RNG.
//! Drivers (the tokio adapter in `heartbeat-net`, the simulator in `heartbeat-sim`, the tests)
//! hand in:
//! - bytes received and stream events (`accept`, `handle_input`, `handle_eof`, `handle_connected`);
//! - the time, as [`Now`]: a monotonic `Instant` for timers and a [`UnixTime`] for stamps;
//! - randomness, as an RNG seed in the configuration.
//!
//! and carry out what comes back from `poll_output()` (bytes to write, connections to open or
//! close, events to log), then sleep until `poll_timeout()` and call `handle_timeout`. The same
//! inputs always give the same outputs, which is what makes simulation and snapshot tests exact.
//!
//! # Modules
//! - [`frame`]: the v1 line protocol and the seed's legacy text format (see `PROTOCOL.md`).
//! - [`client`]: a drift-free fixed-rate sender with acks, RTT, silence detection and backoff.
//! - [`server`]: many connections, protocol detection, acks, one analysis per client.
//! - [`analysis`]: per-client counts, missed ranges and delay statistics; text and JSON reports.
#![warn(missing_docs)]

pub mod analysis;
pub mod client;
pub mod config;
pub mod detector;
mod error;
pub mod frame;
mod ids;
pub mod liveness;
pub mod server;
mod time;
mod timer;

pub use error::{ConfigError, DecodeError, DisconnectReason};
pub use ids::{ClientId, ClientKey, ConnId, MAX_CLIENT_ID_LEN, Seq};
pub use time::{Now, UnixTime, fmt_ms, fmt_signed_ms};
