//! `heartbeat-client`: sends heartbeats to a `heartbeat-server` on a fixed, drift-free schedule.

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{CommandFactory as _, Parser};
use heartbeat_core::client::{Client, Event, Exit, Failure};
use heartbeat_core::config::{Backoff, ClientConfig, keeps_connection};
use heartbeat_core::{ClientId, DisconnectReason, MAX_CLIENT_ID_LEN, Now, Secret, fmt_ms};
use heartbeat_net::cli;
use heartbeat_net::tls::{self, TlsConnector};
use heartbeat_net::{Clock as _, Connector, NetError, SystemClock, TcpConnector, keys, run_client};

/// Send periodic heartbeats (sequence number and timestamp) to a heartbeat server over TCP.
///
/// Exits 0 after --count heartbeats or on Ctrl-C / SIGTERM, and 1 when the server cannot be
/// reached or goes away (unless --reconnect).
#[derive(Debug, Parser)]
#[command(name = "heartbeat-client", version)]
struct Opt {
    /// IP address or host name of the server (local or remote). The seed's `-ho` spelling is
    /// accepted too.
    #[arg(short = 'H', long, default_value = "localhost")]
    host: String,

    /// TCP port of the server, 0 to 65535.
    #[arg(short, long, default_value_t = 6510, allow_negative_numbers = true,
          value_parser = cli::int::<u16>(0, 65_535))]
    port: u16,

    /// Time between heartbeats in milliseconds, a positive integer (at most one day).
    #[arg(short, long, default_value_t = 1000, allow_negative_numbers = true,
          value_parser = cli::int::<u64>(1, 86_400_000))]
    interval: u64,

    /// This client's identity, kept across reconnects: 1 to 64 characters of A-Z a-z 0-9 . _ -
    /// : @ /. Default: the host name and the process id, e.g. web-01-4242.
    #[arg(long, value_parser = parse_id)]
    id: Option<ClientId>,

    /// Send this many heartbeats, then say goodbye and exit 0. Default: send until stopped.
    #[arg(long, allow_negative_numbers = true, value_parser = cli::int::<u64>(1, u64::MAX.into()))]
    count: Option<u64>,

    /// Reconnect when the server cannot be reached or goes away, with exponential backoff from
    /// 100 ms to 10 s (with jitter), keeping the identity and the sequence numbering. Off by
    /// default: the client then exits 1, as the seed did.
    #[arg(long)]
    reconnect: bool,

    /// Speak the seed's text format and expect no acknowledgements (for the seed's server.py).
    /// Off by default.
    #[arg(long)]
    legacy: bool,

    /// The server's --max-idle, in seconds (default 600, the server's default). A connection
    /// idle that long is dropped by the server, so when the interval does not fit twice in it
    /// the client connects for each heartbeat: connect, HELLO, BEAT, close once acknowledged
    /// (without BYE: it is not leaving), and connect again when the next one is due.
    #[arg(long, default_value_t = 600, allow_negative_numbers = true,
          value_parser = cli::int::<u64>(1, u64::MAX.into()))]
    server_max_idle: u64,

    /// Log round-trip times and lateness at debug level. Off by default; ignored when RUST_LOG
    /// is set.
    #[arg(short, long)]
    debug: bool,

    /// Authenticate with the secret in FILE (alone on one line; the server lists it for this
    /// --id in its --auth-keys), and refuse a server that does not ask for it (exit 1). The
    /// file must not be writable by others. Off by default.
    #[arg(long, value_name = "FILE", conflicts_with = "legacy")]
    auth_key_file: Option<PathBuf>,

    /// Connect with TLS, trusting only the CA certificate(s) of --tls-ca. Off by default.
    #[arg(long, requires = "tls_ca")]
    tls: bool,

    /// With --tls: PEM file of the CA certificate(s) the server's certificate must chain to.
    #[arg(long, value_name = "FILE", requires = "tls")]
    tls_ca: Option<PathBuf>,

    /// With --tls: the name the server's certificate must carry (a DNS name or an IP
    /// address). Default: the --host value.
    #[arg(long, value_name = "NAME", requires = "tls")]
    tls_server_name: Option<String>,
}

fn parse_id(s: &str) -> Result<ClientId, String> {
    ClientId::new(s).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let opt = Opt::parse_from(seed_args(std::env::args_os()));
    heartbeat_net::app::init_tracing(opt.debug);
    // A key or CA file that cannot be used is a bad flag value (exit 2).
    let key = match &opt.auth_key_file {
        Some(path) => match keys::load_client_key(path) {
            Ok(loaded) => {
                loaded.warnings.iter().for_each(|w| tracing::warn!("{w}"));
                Some(loaded.value)
            }
            Err(e) => usage_error(e),
        },
        None => None,
    };
    let tls = match (&opt.tls_ca, opt.tls) {
        (Some(ca), true) => match tls::client_config(ca) {
            Ok(config) => Some(config),
            Err(e) => usage_error(e),
        },
        _ => None,
    };
    let server_name = opt.tls_server_name.as_deref().unwrap_or(&opt.host);
    if tls.is_some() && rustls::pki_types::ServerName::try_from(server_name).is_err() {
        usage_error(format!(
            "invalid TLS server name {server_name:?}: expected a DNS name or an IP address"
        ));
    }
    let Some(runtime) = heartbeat_net::app::runtime() else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(run(opt, key, tls)) {
        Ok(Exit::Failed(failure)) => {
            tracing::error!("{failure}");
            if failure == Failure::Lost(DisconnectReason::AuthRequired) {
                tracing::error!("Start the client with --auth-key-file FILE to authenticate");
            }
            ExitCode::FAILURE
        }
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Rewrites the seed's two-letter `-ho` (which clap would read as `-h -o`) into `--host`.
fn seed_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut out = Vec::new();
    let mut rest = false;
    for arg in args {
        if rest {
            out.push(arg);
            continue;
        }
        match arg.to_str() {
            Some("--") => {
                rest = true;
                out.push(arg);
            }
            Some("-ho") => out.push("--host".into()),
            Some(s) if s.starts_with("-ho=") => out.push(format!("--host={}", &s[4..]).into()),
            _ => out.push(arg),
        }
    }
    out
}

/// Exits 2 with clap's usage error.
fn usage_error(e: impl std::fmt::Display) -> ! {
    Opt::command()
        .error(clap::error::ErrorKind::ValueValidation, e)
        .exit()
}

async fn run(
    opt: Opt,
    key: Option<Secret>,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> anyhow::Result<Exit> {
    let stop = heartbeat_net::app::shutdown_signal()?;
    let id = match opt.id {
        Some(id) => id,
        None => default_id()?,
    };
    let interval = Duration::from_millis(opt.interval);
    let per_beat = !keeps_connection(interval, Duration::from_secs(opt.server_max_idle));
    if per_beat {
        tracing::info!(
            "The interval does not fit twice in the server's idle limit ({} s): connecting for \
             each heartbeat",
            opt.server_max_idle
        );
    }
    let config = ClientConfig::new(id, interval)?
        .connect_per_beat(per_beat)
        .legacy(opt.legacy)?
        .auth_key(key)?
        .count(opt.count)?
        .reconnect(opt.reconnect.then(Backoff::default))
        .session(random_u64()?)
        .rng_seed(random_u64()?);
    let client = Client::new(config, SystemClock.now());
    let (host, port) = (opt.host, opt.port);
    let tcp = TcpConnector::new(host.clone(), port);
    let exit = match tls {
        Some(tls) => {
            let name = opt.tls_server_name.as_deref().unwrap_or(&host);
            let connector = TlsConnector::new(tcp, tls, name)?;
            run_with(connector, client, stop, &host, port).await?
        }
        None => run_with(tcp, client, stop, &host, port).await?,
    };
    Ok(exit)
}

/// Runs the client over `connector` (plaintext or TLS), logging its events.
async fn run_with<C: Connector>(
    connector: C,
    client: Client,
    stop: impl Future<Output = ()>,
    host: &str,
    port: u16,
) -> Result<Exit, NetError> {
    run_client(connector, client, SystemClock, stop, |e, now| {
        log_event(e, now, host, port)
    })
    .await
}

/// `HOSTNAME-PID`, the host name cut down to the identity's character set and length.
fn default_id() -> anyhow::Result<ClientId> {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .unwrap_or_default();
    let pid = std::process::id().to_string();
    let mut name: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '@' | '/') {
                c
            } else {
                '-'
            }
        })
        .take(MAX_CLIENT_ID_LEN - pid.len() - 1)
        .collect();
    if name.is_empty() {
        name.push_str("client");
    }
    Ok(ClientId::new(&format!("{name}-{pid}"))?)
}

/// A fresh random number from the operating system: for the session nonce (which the identity
/// rule relies on being unguessable) and the jitter seed, where reproducibility is not wanted.
fn random_u64() -> anyhow::Result<u64> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("cannot read randomness: {e}"))?;
    Ok(u64::from_ne_bytes(bytes))
}

/// The seed's log lines, kept recognisable, plus what the seed could not see.
fn log_event(e: &Event, _now: Now, host: &str, port: u16) {
    match e {
        Event::Connected { attempt } => {
            tracing::info!("Successfully connected to {host}:{port}");
            if *attempt > 0 {
                tracing::debug!("after {attempt} failed attempt(s)");
            }
        }
        Event::Sent { seq, at, late } => {
            tracing::info!(
                "Sequence #{seq}: Sending heartbeat at {}.",
                at.display_secs(4)
            );
            tracing::debug!("Heartbeat #{seq} went out {} after its slot", fmt_ms(*late));
        }
        Event::Acked { seq, rtt, received } => tracing::debug!(
            "Heartbeat #{seq} acknowledged: RTT {} (server received it at {})",
            fmt_ms(*rtt),
            received.display_secs(4)
        ),
        Event::Welcomed => tracing::debug!("Server accepted the HELLO"),
        Event::ServerSilent { silence } => tracing::warn!(
            "Server silent: no acknowledgement for {}; it may be down or unreachable",
            fmt_ms(*silence)
        ),
        Event::Skipped { first, last } => tracing::warn!(
            "Heartbeats #{first}-#{last} were not sent (disconnected, or this process was stalled)"
        ),
        Event::ConnectFailed {
            reason,
            retry_in: Some(d),
            ..
        } => tracing::warn!(
            "Failed to connect to server: {reason}; retrying in {}",
            fmt_ms(*d)
        ),
        Event::Disconnected {
            reason: DisconnectReason::UntilNextBeat,
            retry_in: Some(d),
        } => tracing::info!(
            "Heartbeat acknowledged; connection closed until the next one, due in {}",
            fmt_ms(*d)
        ),
        Event::Disconnected {
            reason,
            retry_in: Some(d),
        } => tracing::warn!(
            "Server may have abruptly closed the connection ({reason}); reconnecting in {}",
            fmt_ms(*d)
        ),
        // Giving up: the exit status line says why.
        Event::ConnectFailed { retry_in: None, .. }
        | Event::Disconnected { retry_in: None, .. } => {
            tracing::debug!("{e}")
        }
        Event::Finished { sent, acked } => {
            tracing::info!("Done: sent {sent} heartbeat(s), {acked} acknowledged")
        }
        other => tracing::info!("{other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_spelling_of_host_is_rewritten() {
        let args = ["heartbeat-client", "-ho", "127.0.0.1", "-ho=x", "--", "-ho"];
        let out = seed_args(args.iter().map(Into::into));
        assert_eq!(
            out,
            [
                "heartbeat-client",
                "--host",
                "127.0.0.1",
                "--host=x",
                "--",
                "-ho"
            ]
        );
        let opt = Opt::parse_from(seed_args(
            ["c", "-ho", "127.0.0.1", "-p", "7"].iter().map(Into::into),
        ));
        assert_eq!((opt.host.as_str(), opt.port), ("127.0.0.1", 7));
    }

    #[test]
    fn default_id_is_valid() {
        let id = default_id().unwrap();
        assert!(id.as_str().ends_with(&format!("-{}", std::process::id())));
    }
}
