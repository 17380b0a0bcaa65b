//! Scenarios on real kernel TCP: `heartbeat-sim real` and `heartbeat-sim compare`.
//!
//! The same scenario files, run with the real `heartbeat-server` and `heartbeat-client`
//! binaries in network namespaces this process creates and removes ([`netns`]: one per client,
//! one for the server, a router between them where the faults are made with `ip` rules), the
//! processes started and killed as the scenario says ([`procs`]). [`run`] reads what they
//! printed back into the simulated run's [`Outcome`](crate::Outcome), so the same oracles judge
//! it; [`compare`] holds a simulated run and real runs of one scenario side by side, within the
//! tolerances SCENARIOS.md ("Real runs") states.
//!
//! Needs root. Faults this kernel cannot make (no `netem`: latency, loss, reordering) are
//! listed and skipped, never faked. Namespaces are named `hbsim-PID-...`; every run first
//! removes those of dead processes, and removes its own on any exit: an error, a failing oracle,
//! a panic (drop guards) or SIGINT/SIGTERM ([`interrupt_flag`]).

pub mod compare;
pub mod netns;
pub mod procs;
pub mod run;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A flag raised by the first SIGINT or SIGTERM (a second one of either ends the process at
/// once); a real run checks it between its steps, stops, and cleans up. The handlers are
/// installed on a thread of their own; `None` when they cannot be.
pub fn interrupt_flag() -> Option<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    let raised = flag.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        rt.block_on(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut int), Ok(mut term)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                let _ = ready_tx.send(false);
                return;
            };
            let _ = ready_tx.send(true);
            for _ in 0..2 {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
                if raised.swap(true, Ordering::SeqCst) {
                    std::process::exit(130);
                }
            }
        });
    });
    match ready_rx.recv() {
        Ok(true) => Some(flag),
        _ => None,
    }
}
