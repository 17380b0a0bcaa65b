//! The tokio driver of the heartbeat core, the embedding API and the production binaries.
//!
//! - [`embed`]: heartbeats from inside a Rust service, on its own runtime: a
//!   [`Builder`](embed::Builder), and a [`Handle`](embed::Handle) to read the counters, pause and resume the heartbeats (tied to the service's
//!   health) and shut the client down.
//! - [`driver`]: `run_client` and `run_server`, generic over [`Listener`] and [`Connector`] so
//!   the simulator (`heartbeat-sim`) runs exactly the same loops over turmoil's network.
//! - [`listener`]: the tokio implementations, [`TcpListener`] and [`TcpConnector`].
//! - [`load`]: the load generator and sink behind `heartbeat-load`.
//! - [`keys`]: key files (`--auth-keys`, `--auth-key-file`, `--tls-key`), read and checked the
//!   way ssh checks private keys.
//! - [`server`]: the `heartbeat-server` application (flags, set-up, log lines, refusals); the
//!   binary only calls [`server::main`].
//! - [`app`]: what the binaries share: logging set-up, the runtime, the shutdown signal.
//! - [`tls`]: optional TLS (rustls): a [`Listener`] that handshakes in each connection's own
//!   task, and a [`Connector`] that checks the server's certificate.
//! - [`logsummary`]: bounded logging under attack, shared by the driver and the binaries.
//!
//! The binaries `heartbeat-server`, `heartbeat-client` and `heartbeat-load` are thin: parse
//! flags, set up logging, build the core's configuration, call the driver, print what it
//! reports.
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
pub mod embed;
mod error;
pub mod keys;
mod limits;
pub mod listener;
pub mod load;
pub mod logsummary;
pub mod server;
pub mod tls;

pub use driver::{
    Clock, Connector, Control, ControlError, DriverStats, Listener, OnEvent, ServerApp,
    ServerControl, ServerOptions, SystemClock, mono_now, run_client, run_server, run_server_app,
    run_server_with_control,
};
pub use error::NetError;
pub use limits::Refusal;
pub use listener::{LISTEN_BACKLOG, TcpConnector, TcpListener};
pub use logsummary::LogSummary;

#[doc(no_inline)]
pub use heartbeat_core::DisconnectReason;
