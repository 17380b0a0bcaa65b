//! The turmoil harness: a [`Scenario`](crate::Scenario) run on turmoil's simulated network by
//! the very loops the real binaries run.
//!
//! [`world`] builds the simulation and steps it (fault phase, heal-and-drain, report); each
//! host (the server's and one per client) drives a `heartbeat-core` machine through
//! `heartbeat_net::driver` over [`net`]'s turmoil streams; everything they observe goes to the
//! run's [`log`]. [`kernel`] models what Linux's TCP does that turmoil does not (retransmission
//! after a partition, connects that wait, machines that stop without a word). The crate root re-exports the three (`heartbeat_sim::world`, `::net`,
//! `::log`).

mod host;
pub mod kernel;
pub mod log;
pub mod net;
pub mod world;
