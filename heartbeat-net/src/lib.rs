//! The tokio driver of the heartbeat core, the embedding API and the production binaries.
//!
//! - [`embed`]: heartbeats from inside a Rust service, on its own runtime: a
//!   [`Builder`](embed::Builder), and a [`Handle`](embed::Handle) to read the counters, pause and resume the heartbeats (tied to the service's
//!   health) and shut the client down.
//! - [`driver`]: `run_client` and `run_server`, generic over [`Listener`] and [`Connector`] so
//!   the simulator (`heartbeat-sim`) runs exactly the same loops over turmoil's network;
//!   [`run_server_threads`] runs the server loop on several threads sharing one core
//!   (`heartbeat-server --threads`).
//! - [`listener`]: the tokio implementations, [`TcpListener`] and [`TcpConnector`].
//! - [`limits`]: the per-address share and total of a listener's connections, for the
//!   heartbeat port and the metrics endpoint alike.
//! - [`process`]: `/proc` readings (CPU time, memory) and the open-file limit, which
//!   `heartbeat-load` measures with and `heartbeat-server` exports.
//! - [`keys`]: key files (`--auth-keys`, `--auth-key-file`, `--tls-key`), read and checked the
//!   way ssh checks private keys.
//! - [`app`]: what the binaries share: logging set-up, the runtime, the shutdown signal.
//! - [`tls`]: optional TLS (rustls): a [`Listener`] that handshakes in each connection's own
//!   task, and a [`Connector`] that checks the server's certificate.
//! - [`logsummary`]: bounded logging under attack, shared by the driver and the binaries.
//!
//! The applications `heartbeat-server`, `heartbeat-client` and `heartbeat-load` live in their
//! binaries (`src/bin/NAME/`), each with its own modules: flags, set-up, log lines, and what
//! each adds (the server's metrics, hooks and state; the load generator's measurements). They
//! use this library as any embedder would.
//!
//! # Example
//! A service that heartbeats to a `heartbeat-server` for as long as it runs (the
//! [`embed`] docs show how to stop the heartbeats when the service hangs):
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use heartbeat_net::embed::{Backoff, Builder, ClientConfig, ClientId};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let config = ClientConfig::new(ClientId::new("orders-1")?, Duration::from_secs(1))?
//!         .reconnect(Some(Backoff::default()));
//!     let heartbeat = Builder::new(config, "localhost", 6510).spawn();
//!     tokio::signal::ctrl_c().await?; // the service's work goes here
//!     println!("{:?}", heartbeat.stats());
//!     heartbeat.shutdown().await;
//!     Ok(())
//! }
//! ```

#![warn(missing_docs)]

pub mod app;
pub mod cli;
pub mod driver;
mod driver_api;
pub mod embed;
mod error;
pub mod keys;
pub mod limits;
pub mod listener;
pub mod logsummary;
pub mod process;
mod shard;
pub mod tls;

pub use driver::{
    Clock, Connector, Control, ControlError, DriverStats, Listener, OnEvent, ServerApp,
    ServerControl, ServerOptions, SystemClock, mono_now, run_client, run_server, run_server_app,
    run_server_with_control,
};
pub use driver::{MakeListener, run_server_threads};
pub use error::NetError;
pub use limits::Refusal;
pub use listener::{LISTEN_BACKLOG, ListenerShard, TcpConnector, TcpListener};
pub use logsummary::LogSummary;

#[doc(no_inline)]
pub use heartbeat_core::DisconnectReason;
