//! Deterministic simulation of the heartbeat core under turmoil.
