//! Core scenarios without I/O: the real state machines over the `Pair` harness.

mod faults;
mod liveness;

use std::time::Duration;

use heartbeat_core::ClientId;
use heartbeat_core::config::{Backoff, ClientConfig};

pub(crate) fn client(name: &str, interval_ms: u64) -> ClientConfig {
    ClientConfig::new(
        ClientId::new(name).unwrap(),
        Duration::from_millis(interval_ms),
    )
    .unwrap()
}

pub(crate) fn reconnecting(name: &str, interval_ms: u64) -> ClientConfig {
    let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2)).unwrap();
    client(name, interval_ms)
        .reconnect(Some(backoff))
        .rng_seed(1)
        .session(0x5eed)
}

pub(crate) fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}
