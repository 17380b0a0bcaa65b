//! Sans-IO heartbeat monitoring: the client and server state machines, the wire codec, the
//! failure detectors and the per-client liveness machine, and the per-client analysis.
//!
//! # The contract
//! Nothing in this crate does I/O, spawns, sleeps, reads a clock or draws from a global RNG.
//! Drivers (the tokio adapter in `heartbeat-net`, the simulator in `heartbeat-sim`, the tests)
//! hand in:
//! - bytes received and stream events ([`Server::accept`], `handle_input`, `handle_eof`,
//!   [`Client::handle_connected`], `handle_connect_failed`);
//! - the time, as [`Now`]: a monotonic `Instant` for timers and a [`UnixTime`] for stamps;
//! - randomness, as RNG seeds in the configuration ([`ClientConfig`] for backoff jitter,
//!   [`AuthConfig`] for challenge nonces).
//!
//! and carry out what comes back: bytes to write, connections to open or close, events to log.
//!
//! # The calling rule
//! After every `handle_*` call or command on a [`Server`] or [`Client`] (and after
//! [`Client::new`]), drain `poll_output()` until it returns `None`, carrying out each output in
//! order (a write before a later close of the same connection), then read `poll_timeout()` and
//! call `handle_timeout` once that instant has passed. Calling `handle_timeout` early does
//! nothing. The same inputs always give the same outputs, which is what makes simulation and
//! snapshot tests exact.
//!
//! # Modules
//! - [`server`]: many connections, protocol detection, acks, one analysis and one liveness
//!   watch per client, and the limits a connection is held to (pace, plausible sequence
//!   numbers and stamps, clock skew: a broken one is a [`Violation`]); its
//!   [`Event`](ServerEvent)s (text and derived JSON); and its memory across restarts
//!   ([`server::State`]: [`Server::persist`], [`Server::restore`]), which a driver saves.
//! - [`client`]: a drift-free fixed-rate sender with acks, RTT, silence detection and backoff.
//! - [`auth`]: client authentication (shared secrets, challenge nonces, HMAC-SHA256 answers
//!   compared in constant time), used by both machines when configured.
//! - [`config`]: the validated client and server configurations (parse, don't validate).
//! - [`frame`]: the v1 line protocol and the seed's legacy text format (see `PROTOCOL.md`).
//! - [`detector`]: the failure detectors (`fixed`, `phi`, `phi-exp`, `chen`): how suspicious a
//!   client's silence is, and when it will reach a level.
//! - [`liveness`]: the per-client machine that turns a detector's suspicion into
//!   [`Liveness`] (`up`, `suspect`, `down`, `left`), shared by the server and the simulator.
//! - [`analysis`]: the value types of the analysis: missed ranges, delay statistics, and the
//!   [`Report`] with its text and JSON renderings.
//!
//! The main types are re-exported here; the two `Event` and `Output` enums as
//! `ServerEvent`/`ServerOutput` and `ClientEvent`/`ClientOutput`.
//!
//! # Example
//! A client and a server, wired by hand: the caller carries the bytes and owns the clock (here a
//! made-up one), so nothing here needs a network or a runtime. `heartbeat-net` does the same
//! over TCP.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::{Duration, Instant};
//!
//! use heartbeat_core::{
//!     Client, ClientConfig, ClientId, ClientOutput, Now, Server, ServerConfig, ServerEvent,
//!     ServerOutput, UnixTime,
//! };
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let now = Now {
//!     mono: Instant::now(),
//!     unix: UnixTime::from_duration(Duration::from_secs(1_700_000_000)),
//! };
//! let mut server = Server::new(Arc::new(ServerConfig::default()));
//! let config = ClientConfig::new(ClientId::new("web-01")?, Duration::from_secs(1))?;
//! let mut client = Client::new(config, now);
//!
//! assert_eq!(client.poll_output(), Some(ClientOutput::Connect));
//! let conn = server.accept(now, "127.0.0.1:40000".parse()?);
//! client.handle_connected(now);
//! // HELLO and the first BEAT, to the server.
//! while let Some(out) = client.poll_output() {
//!     if let ClientOutput::Transmit(bytes) = out {
//!         server.handle_input(now, conn, &bytes);
//!     }
//! }
//! // WELCOME and the ACK, back to the client; the server's events, for the application.
//! let mut events = Vec::new();
//! while let Some(out) = server.poll_output() {
//!     match out {
//!         ServerOutput::Transmit { bytes, .. } => client.handle_input(now, &bytes),
//!         ServerOutput::Event(e) => events.push(e),
//!         ServerOutput::Disconnect { .. } => unreachable!("nothing went wrong"),
//!     }
//! }
//! assert!(matches!(events[..], [ServerEvent::Connected { .. }, ServerEvent::Heartbeat { .. }]));
//! assert_eq!((client.sent(), client.acked()), (1, 1));
//! // The next heartbeat is due one interval later: sleep until then, then `handle_timeout`.
//! assert_eq!(client.poll_timeout(), Some(now.mono + Duration::from_secs(1)));
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

pub mod analysis;
pub mod auth;
pub mod client;
pub mod config;
pub mod detector;
mod error;
pub mod frame;
mod ids;
pub mod liveness;
pub mod server;
mod time;
pub mod timeline;
mod timer;
pub mod units;

pub use analysis::{ClientSummary, Report};
pub use auth::{AuthConfig, AuthKeys, Secret};
pub use client::{Client, Event as ClientEvent, Exit, Output as ClientOutput};
pub use config::{Backoff, ClientConfig, ServerConfig};
pub use detector::{DetectorConfig, DetectorKind};
pub use error::{ConfigError, DecodeError, DisconnectReason, MAX_STAMP_OFFSET, Violation};
pub use ids::{ClientId, ClientKey, ConnId, MAX_CLIENT_ID_LEN, Seq};
pub use liveness::{FlapControl, Liveness};
pub use server::{ClientView, Event as ServerEvent, Output as ServerOutput, Server};
pub use time::{Now, UnixTime, fmt_ms, fmt_signed_ms};
pub use units::{DurationError, parse_duration, parse_duration_or_secs};
