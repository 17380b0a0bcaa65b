//! The tokio driver of the heartbeat core and the production binaries.
//!
//! - [`driver`]: `run_client` and `run_server`, generic over [`Listener`] and [`Connector`] so
//!   the simulator (`heartbeat-sim`) runs exactly the same loops over turmoil's network.
//! - [`listener`]: the tokio implementations, [`TcpListener`] and [`TcpConnector`].
//! - [`load`]: the load generator and sink behind `heartbeat-load`.
//!
//! The binaries `heartbeat-server`, `heartbeat-client` and `heartbeat-load` are thin: parse
//! flags, set up logging, build the core's configuration, call the driver, print what it
//! reports.

pub mod cli;
pub mod driver;
mod error;
pub mod listener;
pub mod load;

pub use driver::{
    Clock, Connector, Listener, ServerOptions, SystemClock, mono_now, run_client, run_server,
};
pub use error::NetError;
pub use listener::{TcpConnector, TcpListener};

#[doc(no_inline)]
pub use heartbeat_core::DisconnectReason;
