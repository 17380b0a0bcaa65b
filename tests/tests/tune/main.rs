//! `heartbeat-sim tune` on traces made by the real binaries (`heartbeat-server --json` with a
//! client that is paused and resumed) and by the simulator, where the ground truth is known and
//! the QoS engine measures the same detection time from real crashes.
//!
//! The real binaries are heartbeat-net's, next to this test's executable: `cargo test
//! --workspace` builds them (heartbeat-net's own end-to-end tests need them); the tuner is
//! called as a library, exactly as `heartbeat-sim tune --json` calls it.

mod advice;
mod real;
mod sim;

use std::path::PathBuf;

/// The path of workspace binary `name`, built by this `cargo test` run.
pub(crate) fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("a test executable lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace's binaries first (cargo test --workspace or \
         cargo build --workspace --bins)",
        path.display()
    );
    path
}
