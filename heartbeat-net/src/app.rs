//! What the binaries share: logging setup, the runtime, the shutdown signal, and fresh
//! randomness (which the embedding API uses too).

use std::future::Future;
use std::io::IsTerminal as _;

use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

/// Logs to stderr: the level comes from `RUST_LOG` when it is set, else info (debug with `-d`).
pub fn init_tracing(debug: bool) {
    init_tracing_to(debug, std::io::stderr);
}

/// [`init_tracing`], writing through `writer` (the server's non-blocking stderr queue); colours
/// when stderr is a terminal.
pub fn init_tracing_to<W>(debug: bool, writer: W)
where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = match std::env::var_os("RUST_LOG") {
        Some(_) => EnvFilter::from_default_env(),
        None => EnvFilter::new(if debug { "debug" } else { "info" }),
    };
    tracing_subscriber::fmt()
        .with_writer(writer)
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// The single-threaded runtime both binaries run on (one task owns each core machine); `None`,
/// logged, when it cannot start.
pub fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            None
        }
    }
}

/// Completes on the first SIGINT or SIGTERM. The handlers are installed now, before the caller
/// goes on (so a signal that comes right after startup is never the default, fatal one).
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    let install = |kind, name| {
        signal(kind).map_err(|e| {
            std::io::Error::new(e.kind(), format!("installing the {name} handler: {e}"))
        })
    };
    let mut int = install(SignalKind::interrupt(), "SIGINT")?;
    let mut term = install(SignalKind::terminate(), "SIGTERM")?;
    Ok(async move {
        let name = tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        };
        tracing::info!("Received {name}, shutting down");
    })
}

/// A fresh random number from the operating system: for a client's session nonce (which the
/// identity rule relies on being unguessable) and its jitter seed, where reproducibility is not
/// wanted.
pub fn random_u64() -> Result<u64, getrandom::Error> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes)?;
    Ok(u64::from_ne_bytes(bytes))
}
