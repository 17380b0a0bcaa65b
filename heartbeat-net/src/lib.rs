//! The tokio driver of the heartbeat core and the production binaries.
//!
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

pub mod app;
pub mod cli;
pub mod driver;
mod error;
pub mod keys;
mod limits;
pub mod listener;
pub mod load;
pub mod logsummary;
pub mod server;
pub mod tls;

pub use driver::{
    Clock, Connector, Listener, OnEvent, ServerApp, ServerOptions, SystemClock, mono_now,
    run_client, run_server, run_server_app,
};
pub use error::NetError;
pub use listener::{TcpConnector, TcpListener};
pub use logsummary::LogSummary;

#[doc(no_inline)]
pub use heartbeat_core::DisconnectReason;
