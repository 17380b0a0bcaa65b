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
        .with_timer(LogTime::default())
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

/// The stamp at the head of each log line, as tracing-subscriber's default `SystemTime` writes it
/// (`2026-12-05T08:21:57.969669Z`, UTC, microseconds), with the part up to the second formatted
/// once a second rather than for every line: a server writes up to a thousand a second, and
/// the calendar arithmetic was a third of each line's cost.
#[derive(Debug, Default)]
pub struct LogTime {
    /// The last second formatted: its Unix second and `YYYY-MM-DDTHH:MM:SS`.
    second: std::sync::Mutex<Option<(i64, String)>>,
}

impl tracing_subscriber::fmt::time::FormatTime for LogTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        use crate::driver::Clock as _;
        self.write(crate::SystemClock.unix().as_duration(), w)
    }
}

impl LogTime {
    /// Writes the stamp of `since_epoch`.
    fn write(
        &self,
        since_epoch: std::time::Duration,
        w: &mut impl std::fmt::Write,
    ) -> std::fmt::Result {
        let secs = i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX);
        let micros = since_epoch.subsec_micros();
        let mut second = self
            .second
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if second.as_ref().is_none_or(|(s, _)| *s != secs) {
            let text = chrono::DateTime::from_timestamp(secs, 0)
                .map(|t| t.format("%Y-%m-%dT%H:%M:%S").to_string())
                .unwrap_or_default();
            *second = Some((secs, text));
        }
        if let Some((_, text)) = second.as_ref() {
            w.write_str(text)?;
        }
        drop(second);
        let mut digits = *b".000000Z";
        let mut rest = micros;
        for d in digits[1..7].iter_mut().rev() {
            *d = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        // ASCII digits and punctuation.
        w.write_str(std::str::from_utf8(&digits).unwrap_or(".000000Z"))
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
        if bytes.iter().any(|&b| is_control(b) || b == C1_LEAD) {
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

/// ESC, BEL, BS, FF or DEL: the one-byte controls [`Sanitized`] escapes.
fn is_control(b: u8) -> bool {
    matches!(b, 0x07 | 0x08 | 0x0c | 0x1b | 0x7f)
}

/// The first byte of U+0080 to U+00BF in UTF-8, the C1 controls among them.
const C1_LEAD: u8 = 0xc2;

/// `bytes` with the controls [`Sanitized`] names escaped.
fn sanitize(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 16);
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            _ if is_control(b) => {
                out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
            }
            // U+0080 to U+009F, two bytes in UTF-8.
            C1_LEAD if bytes.get(i + 1).is_some_and(|c| (0x80..=0x9f).contains(c)) => {
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
    fn the_log_stamp_is_tracing_s_own_format() {
        let stamp = |nanos: u64| {
            let mut out = String::new();
            let t = LogTime::default();
            t.write(std::time::Duration::from_nanos(nanos), &mut out)
                .unwrap();
            out
        };
        assert_eq!(
            stamp(1_796_458_917_969_669_123),
            "2026-12-05T08:21:57.969669Z"
        );
        assert_eq!(stamp(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            stamp(951_782_400_000_001_000),
            "2000-02-29T00:00:00.000001Z"
        );
        // One formatter across a second's edge, forwards and back: each second its own.
        let t = LogTime::default();
        let mut out = String::new();
        for nanos in [
            1_796_458_917_999_999_999,
            1_796_458_918_000_000_000,
            1_796_458_917_500_000_000,
        ] {
            t.write(std::time::Duration::from_nanos(nanos), &mut out)
                .unwrap();
            out.push(' ');
        }
        assert_eq!(
            out,
            "2026-12-05T08:21:57.999999Z 2026-12-05T08:21:58.000000Z 2026-12-05T08:21:57.500000Z "
        );
    }

    /// The same as tracing-subscriber's `SystemTime` stamp, read off a real line: its length
    /// and shape (the default stamp is what the seed's tooling and our log reader parse).
    #[test]
    fn a_logged_line_starts_with_the_stamp_tracing_would_write() {
        let out = Collect::default();
        let dispatch = tracing::Dispatch::new(
            tracing_subscriber::fmt()
                .with_ansi(false)
                .with_timer(LogTime::default())
                .with_writer(out.clone())
                .finish(),
        );
        let theirs = Collect::default();
        let reference = tracing::Dispatch::new(
            tracing_subscriber::fmt()
                .with_ansi(false)
                .with_writer(theirs.clone())
                .finish(),
        );
        tracing::dispatcher::with_default(&dispatch, || tracing::info!("x"));
        tracing::dispatcher::with_default(&reference, || tracing::info!("x"));
        let ours = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let theirs = String::from_utf8(theirs.0.lock().unwrap().clone()).unwrap();
        let shape = |line: &str| -> String {
            line.chars()
                .map(|c| if c.is_ascii_digit() { '9' } else { c })
                .collect()
        };
        assert_eq!(shape(&ours), shape(&theirs), "{ours:?} against {theirs:?}");
        // Written a moment apart: the same time, within a second.
        let at = |line: &str| chrono::DateTime::parse_from_rfc3339(&line[..27]).unwrap();
        let apart = (at(&theirs) - at(&ours)).num_milliseconds();
        assert!((0..1000).contains(&apart), "{ours:?} against {theirs:?}");
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
