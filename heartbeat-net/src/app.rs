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
    let colours = std::io::stderr().is_terminal();
    // Exactly one sanitiser of terminal controls is on. With colours (a person at a terminal),
    // tracing's, which escapes character by character and leaves its own colour codes alone.
    // Without (a file, the journal, a pipe: a fleet's server), `Sanitized` over the finished
    // line's bytes: the same escapes, a single scan when there is nothing to escape. tracing's
    // costs half the server's instructions per heartbeat at a thousand lines a second.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(colours);
    if colours {
        builder.with_writer(writer).init();
    } else {
        builder
            .with_ansi_sanitization(false)
            .with_writer(Sanitized(writer))
            .init();
    }
}

/// A log writer that escapes terminal controls in each finished line, as tracing-subscriber's
/// own sanitiser escapes them in messages and fields: ESC, BEL, BS, FF and DEL as `\x1b`,
/// `\x07`, `\x08`, `\x0c`, `\x7f`, and the C1 controls (U+0080 to U+009F) as `\u{9b}`.
/// Nothing else a line holds (its time, its level) can contain one.
pub struct Sanitized<W>(pub W);

impl<'a, W: tracing_subscriber::fmt::MakeWriter<'a>> tracing_subscriber::fmt::MakeWriter<'a>
    for Sanitized<W>
{
    type Writer = Sanitized<W::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        Sanitized(self.0.make_writer())
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        Sanitized(self.0.make_writer_for(meta))
    }
}

impl<W: std::io::Write> std::io::Write for Sanitized<W> {
    /// Takes all of `bytes` (tracing writes each line whole, so a C1 control's two bytes
    /// never straddle two calls).
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if bytes
            .iter()
            .any(|&b| matches!(b, 0x07 | 0x08 | 0x0c | 0x1b | 0x7f | 0xc2))
        {
            self.0.write_all(&sanitize(bytes))?;
        } else {
            self.0.write_all(bytes)?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// `bytes` with the controls [`Sanitized`] names escaped.
fn sanitize(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 16);
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            0x07 | 0x08 | 0x0c | 0x1b | 0x7f => {
                out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
            }
            // U+0080 to U+009F, two bytes in UTF-8.
            0xc2 if bytes.get(i + 1).is_some_and(|c| (0x80..=0x9f).contains(c)) => {
                out.extend_from_slice(format!("\\u{{{:x}}}", bytes[i + 1]).as_bytes());
                i += 1;
            }
            _ => out.push(b),
        }
        i += 1;
    }
    out
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    /// Collects what a subscriber writes.
    #[derive(Clone, Default)]
    struct Collect(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Collect {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Collect {
        type Writer = Self;
        fn make_writer(&'a self) -> Self {
            self.clone()
        }
    }

    /// The line `text` is logged as, by tracing's sanitiser or by [`Sanitized`].
    fn logged(text: &str, ours: bool) -> String {
        let out = Collect::default();
        let builder = tracing_subscriber::fmt()
            .with_ansi(false)
            .without_time()
            .with_target(false);
        let dispatch = if ours {
            tracing::Dispatch::new(
                builder
                    .with_ansi_sanitization(false)
                    .with_writer(Sanitized(out.clone()))
                    .finish(),
            )
        } else {
            tracing::Dispatch::new(builder.with_writer(out.clone()).finish())
        };
        tracing::dispatcher::with_default(&dispatch, || {
            tracing::warn!("{text}");
            tracing::info!(field = text, "with a field");
        });
        String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn the_line_sanitiser_escapes_exactly_what_tracing_escapes() {
        // Every C0 control, DEL, every C1 control, their neighbours, and text around them.
        let mut hostile: String = (0u32..0x100).filter_map(char::from_u32).collect();
        hostile.push_str(" \u{1b}[31m red \u{9b}2J é ✓ \\x1b end");
        let theirs = logged(&hostile, false);
        assert!(
            theirs.contains("\\x1b") && theirs.contains("\\u{9b}"),
            "{theirs:?}"
        );
        assert_eq!(logged(&hostile, true), theirs);
        assert!(!logged(&hostile, true).contains('\u{1b}'));
        // Nothing to escape: written as it is.
        assert_eq!(logged("plain line", true), logged("plain line", false));
    }
}
