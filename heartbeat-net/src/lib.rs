//! The tokio driver of the heartbeat core and the production binaries.
//!
//! - [`driver`]: `run_client` and `run_server`, generic over [`Listener`] and [`Connector`] so
//!   the simulator (`heartbeat-sim`) runs exactly the same loops over turmoil's network.
//! - [`listener`]: the tokio implementations, [`TcpListener`] and [`TcpConnector`].
//! - [`logsummary`]: bounded logging under attack, shared by the driver and the binaries.
//!
//! The binaries `heartbeat-server` and `heartbeat-client` are thin: parse flags, set up logging,
//! build the core's configuration, call the driver, print what it reports.

pub mod cli;
pub mod driver;
mod error;
mod limits;
pub mod listener;
pub mod logsummary;

pub use driver::{
    Clock, Connector, Listener, ServerOptions, SystemClock, mono_now, run_client, run_server,
};
pub use error::NetError;
pub use listener::{TcpConnector, TcpListener};
pub use logsummary::LogSummary;

#[doc(no_inline)]
pub use heartbeat_core::DisconnectReason;
