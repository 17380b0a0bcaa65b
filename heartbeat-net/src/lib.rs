//! The tokio driver of the heartbeat core and the production binaries.
