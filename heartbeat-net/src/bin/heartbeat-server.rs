//! `heartbeat-server`: receives heartbeats from many clients, acknowledges them and reports who
//! is late, what was missed and who went away.

use std::future::Future;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{CommandFactory, Parser};
use heartbeat_core::config::ServerConfig;
use heartbeat_core::liveness::Liveness;
use heartbeat_core::server::{Event, Server};
use heartbeat_core::{AuthConfig, DisconnectReason, Now, fmt_ms, fmt_signed_ms};
use heartbeat_net::cli::{DetectorArgs, trust_warning};
use heartbeat_net::refusals::RefusalLog;
use heartbeat_net::tls::{self, TlsListener};
use heartbeat_net::{
    Listener, LogSummary, NetError, ServerOptions, SystemClock, TcpListener, keys, run_server,
};
use tracing::Level;

mod common;

/// Receive heartbeats from clients over TCP and analyse them: delay, missed heartbeats, bursts,
/// clients going away. Many clients at once, v1 (acknowledged) or the legacy text format.
///
/// Stop it with Ctrl-C or SIGTERM: it prints a per-client summary and exits 0.
#[derive(Debug, Parser)]
#[command(name = "heartbeat-server", version)]
struct Opt {
    /// TCP port to listen on, 0 to 65535; 0 picks a free port (logged at startup).
    #[arg(short, long, default_value_t = 6510)]
    port: u16,

    /// Log each heartbeat's timing (one-way delay, time since the previous one) at debug level.
    /// Off by default; ignored when RUST_LOG is set.
    #[arg(short, long)]
    debug: bool,

    /// Address or host name to listen on. The default serves this machine only; use 0.0.0.0 or
    /// :: to serve remote clients.
    #[arg(long, default_value = "localhost")]
    bind: String,

    /// Print every event as one JSON object per line on stdout, and a final
    /// {"event":"summary","clients":[...]} line on shutdown. Off by default.
    #[arg(long)]
    json: bool,

    /// Most connections open at once; one accepted beyond it is closed at once.
    #[arg(long, default_value_t = 65_536, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,

    /// Most connections open at once from one IP address, so one host cannot take every slot;
    /// one beyond it is closed at once. Default: a quarter of --max-connections.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections_per_ip: Option<u32>,

    /// Shortest heartbeat interval a client may declare in its HELLO; a shorter one is refused
    /// with ERROR. Heartbeats faster than the declared interval (legacy clients: than this)
    /// drop the connection. A number with a unit: ms, s or min.
    #[arg(long, default_value = "10ms", value_parser = parse_duration)]
    min_interval: std::time::Duration,

    /// Ceiling of the idle timeout (10 x the client's interval, at least 5 s): a connection
    /// silent this long is dropped, whatever interval it declared. Clients whose interval does
    /// not fit twice in it connect for each heartbeat. A number with a unit: ms, s or min.
    #[arg(long, default_value = "10min", value_parser = parse_duration)]
    max_idle: std::time::Duration,

    /// A client whose clock is off by more than this is reported (clock_skew) and its delays
    /// are measured from its estimated offset. Stamps more than a day off are refused. A number
    /// with a unit: ms, s or min.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    max_clock_skew: std::time::Duration,

    /// A connection whose acknowledgements cannot be written for this long (the peer does not
    /// read them) is dropped as "not reading acknowledgements". A number with a unit: ms, s or
    /// min.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    write_timeout: std::time::Duration,

    /// Kernel send buffer of each connection, in bytes (SO_SNDBUF; Linux doubles it). Bounds
    /// the kernel memory a peer that does not read can hold, and how soon the server's writes
    /// to it block (see --write-timeout). 0 leaves the system's autotuning (up to megabytes).
    #[arg(long, default_value_t = 32_768)]
    send_buffer: usize,

    /// Self-protection: when the server itself was stalled (suspended VM, overload) for longer
    /// than this, it declares nobody down on that evidence alone (Cassandra's 5 s guard).
    /// A number with a unit: ms, s or min.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pause_guard: std::time::Duration,

    /// Clients remembered at most (their analysis and detector). Beyond it a new client evicts
    /// the disconnected client heard from longest ago; connected clients are never evicted.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..))]
    max_clients: u32,

    /// Authenticate clients with the shared secrets in FILE: one `<client-id> <secret>` per
    /// line, or `* <secret>` for one secret for every id without its own line; `#` comments.
    /// Every v1 client must then prove its id (challenge-response; the secret never crosses the
    /// wire) and legacy clients are refused (see --allow-legacy). The file must not be writable
    /// by others. Off by default: client ids are taken on trust.
    #[arg(long, value_name = "FILE")]
    auth_keys: Option<PathBuf>,

    /// With --auth-keys: let legacy clients in unauthenticated (they are keyed by their address,
    /// so they cannot pose as a v1 client). Off by default.
    #[arg(long, requires = "auth_keys")]
    allow_legacy: bool,

    /// Serve TLS (1.2 or 1.3) with the PEM certificate chain in FILE, leaf first; needs
    /// --tls-key. Off by default: plaintext.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert. The file must not be writable by others.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    #[command(flatten)]
    detector: DetectorArgs,
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let (n, per_ms) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix("min") {
        (n, 60_000.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return Err("expected a number with a unit, e.g. 500ms, 5s or 10min".into());
    };
    match n.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v * per_ms < 1e12 => Ok(
            std::time::Duration::from_micros((v * per_ms * 1000.0).round() as u64),
        ),
        _ => Err(format!("{s:?} is not a positive duration")),
    }
}

fn main() -> ExitCode {
    let opt = Opt::parse();
    // Parse, don't validate: a detector parameter out of range is a usage error (exit 2).
    let config = opt.detector.config().and_then(|d| {
        ServerConfig::default()
            .detector(d)
            .max_clients(opt.max_clients as usize)
            .pause_guard(opt.pause_guard)?
            .min_interval(opt.min_interval)?
            .max_idle(opt.max_idle)?
            .max_clock_skew(opt.max_clock_skew)
    });
    let config = match config {
        Ok(c) => c,
        Err(e) => usage_error(e),
    };
    common::init_tracing(opt.debug);
    let mut seed = [0u8; 32];
    if let Err(e) = getrandom::fill(&mut seed) {
        tracing::error!("cannot read randomness for the challenge nonces: {e}");
        return ExitCode::FAILURE;
    }
    // A key, certificate or key file that cannot be used is a bad flag value too (exit 2).
    let auth = match load_auth(&opt, seed) {
        Ok(auth) => auth,
        Err(e) => usage_error(e),
    };
    let config = config.auth(auth);
    let tls = match (&opt.tls_cert, &opt.tls_key) {
        (Some(cert), Some(key)) => match tls::server_config(cert, key) {
            Ok((tls, warnings)) => {
                warnings.iter().for_each(|w| tracing::warn!("{w}"));
                Some(tls)
            }
            Err(e) => usage_error(e),
        },
        _ => None,
    };
    let Some(runtime) = common::runtime() else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(serve(opt, config, tls)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Exits 2 with clap's usage error.
fn usage_error(e: impl std::fmt::Display) -> ! {
    Opt::command()
        .error(clap::error::ErrorKind::ValueValidation, e)
        .exit()
}

/// The authentication settings from --auth-keys; `seed` (from the operating system) seeds the
/// challenge nonces.
fn load_auth(opt: &Opt, seed: [u8; 32]) -> Result<Option<AuthConfig>, keys::KeyFileError> {
    let Some(path) = &opt.auth_keys else {
        return Ok(None);
    };
    let loaded = keys::load_auth_keys(path)?;
    loaded.warnings.iter().for_each(|w| tracing::warn!("{w}"));
    let keys = loaded.value;
    tracing::info!(
        "Authentication on: {} client key(s){}; legacy clients {}",
        keys.len(),
        if keys.has_fleet() {
            " and a fleet-wide key"
        } else {
            ""
        },
        if opt.allow_legacy {
            "allowed"
        } else {
            "refused"
        },
    );
    Ok(Some(
        AuthConfig::new(keys, seed).allow_legacy(opt.allow_legacy),
    ))
}

async fn serve(
    opt: Opt,
    config: ServerConfig,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> anyhow::Result<()> {
    let stop = common::shutdown_signal()?;
    let listener = TcpListener::bind(&opt.bind, opt.port)
        .await?
        .send_buffer((opt.send_buffer > 0).then_some(opt.send_buffer));
    let addr = listener.local_addr().context("reading the bound address")?;
    tracing::info!("Awaiting connection from client on port {}...", addr.port());
    tracing::info!("Failure detector: {}", config.detector_config());
    if let Some(warning) = trust_warning(addr, config.auth_config().is_some()) {
        tracing::warn!("{warning}");
    }

    let log = LogSummary::default();
    let mut options = ServerOptions::default();
    options.max_connections = opt.max_connections as usize;
    options.max_connections_per_ip = opt.max_connections_per_ip.map(|n| n as usize);
    options.write_timeout = opt.write_timeout;
    options.log = log.clone();
    tracing::info!(
        "Limits: {} connections ({} per IP address), intervals from {}, idle at most {}, clock \
         skew {}, writes blocked at most {}, send buffer {} bytes",
        options.max_connections,
        options.max_connections_per_ip_value(),
        fmt_ms(opt.min_interval),
        fmt_ms(opt.max_idle),
        fmt_ms(opt.max_clock_skew),
        fmt_ms(opt.write_timeout),
        opt.send_buffer,
    );
    let server = Server::new(Arc::new(config));
    let json = opt.json;
    let server = match tls {
        Some(tls) => {
            tracing::info!("TLS on");
            let listener = TlsListener::new(listener, tls);
            serve_on(listener, server, options, stop, json, &log).await?
        }
        None => serve_on(listener, server, options, stop, json, &log).await?,
    };

    let report = server.report();
    eprintln!("{report}");
    if json {
        let clients = report.to_json()["clients"].take();
        print_line(&format!("{{\"event\":\"summary\",\"clients\":{clients}}}"));
    }
    Ok(())
}

/// Runs the server on `listener` (plaintext or TLS), logging events and, with `json`, printing
/// them; refused connections go to a summarising log.
async fn serve_on<L: Listener>(
    listener: L,
    server: Server,
    options: ServerOptions,
    stop: impl Future<Output = ()>,
    json: bool,
    log: &LogSummary,
) -> Result<Server, NetError> {
    let mut refusals = RefusalLog::new();
    let server = run_server(listener, server, options, SystemClock, stop, |e, now| {
        if !refusals.on_event(e, now.mono) {
            log_event(log, e, now);
        }
        if json {
            print_line(&e.to_json().to_string());
        }
    })
    .await?;
    refusals.finish();
    Ok(server)
}

/// One line on stdout. A closed stdout (the reader went away) is not worth dying for.
fn print_line(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
}

/// Per-heartbeat log lines written per second, from all clients together; beyond it they are
/// counted and summarised (the JSON events still carry every heartbeat).
const HEARTBEAT_LINES: u32 = 1000;

/// The seed's log lines, kept recognisable, plus what the seed could not see. Every line goes
/// through the log summary, so a hostile peer cannot flood the log: per kind, a few lines a
/// second (heartbeats: [`HEARTBEAT_LINES`]), then one line with how many were left out.
fn log_event(log: &LogSummary, e: &Event, now: Now) {
    let line = |level: Level, kind: &'static str, text: std::fmt::Arguments<'_>| {
        log.log(now.mono, level, kind, text);
    };
    match e {
        Event::Connected {
            conn,
            client,
            peer,
            protocol,
            interval,
            resumed,
        } => {
            let interval = interval.map_or_else(|| "unknown".to_owned(), fmt_ms);
            let again = if *resumed { ", seen before" } else { "" };
            line(
                Level::INFO,
                "clients identified",
                format_args!(
                    "Client {client} identified on {conn} from {peer} (protocol {protocol}, interval {interval}{again})"
                ),
            );
        }
        Event::Heartbeat {
            client,
            seq,
            sent,
            received,
            delay_ns,
            inter_arrival,
            recovered,
            ..
        } => {
            // One per heartbeat, as the seed logged, up to HEARTBEAT_LINES a second in all (a
            // client is held to its declared pace, but a flood of new connections is not).
            log.log_up_to(
                now.mono,
                Level::INFO,
                "heartbeat lines",
                HEARTBEAT_LINES,
                format_args!(
                    "Received data at {}: 'Sequence #{seq}: Sending heartbeat at {}.' from {client}",
                    received.display_secs(4),
                    sent.display_secs(4),
                ),
            );
            let gap = inter_arrival.map_or_else(|| "-".to_owned(), fmt_ms);
            let late = if *recovered {
                " (late: was reported missed)"
            } else {
                ""
            };
            tracing::debug!(
                "Heartbeat #{seq} from {client}: delay {}, since previous {gap}{late}",
                fmt_signed_ms(*delay_ns)
            );
        }
        Event::Missed { client, range, .. } => line(
            Level::WARN,
            "missed heartbeats",
            format_args!(
                "Missed {} heartbeat(s) from {client}: #{range}",
                range.count()
            ),
        ),
        Event::Burst {
            client,
            first,
            last,
            count,
            silence,
            ..
        } => {
            let silence = silence.map_or_else(|| "-".to_owned(), fmt_ms);
            line(
                Level::WARN,
                "bursts",
                format_args!(
                    "{count} heartbeats from {client} (#{first}-#{last}) arrived at once after {silence} of silence"
                ),
            );
        }
        Event::Duplicate { client, seq, .. } => line(
            Level::WARN,
            "duplicate heartbeats",
            format_args!("Duplicate heartbeat #{seq} from {client}"),
        ),
        Event::Restarted {
            client, previous, ..
        } => line(
            Level::WARN,
            "restarts",
            format_args!(
                "Client {client} restarted (its previous run reached #{previous}); counting anew"
            ),
        ),
        Event::ClockSkew {
            client,
            offset_ns,
            skewed,
            ..
        } => {
            let (level, text) = if *skewed {
                (
                    Level::WARN,
                    "its delays are measured from that offset from now on",
                )
            } else {
                (Level::INFO, "back in sync")
            };
            line(
                level,
                "clock skew",
                format_args!(
                    "Clock of client {client} is off by {} ({})",
                    fmt_signed_ms(*offset_ns),
                    text
                ),
            );
        }
        Event::Disconnected {
            conn,
            client,
            peer,
            reason,
        } => {
            let (level, kind) = disconnect_kind(reason);
            match client {
                Some(client) => line(
                    level,
                    kind,
                    format_args!("Client {client} at {peer} went away ({conn}: {reason})"),
                ),
                None => line(
                    level,
                    kind,
                    format_args!("Connection from {peer} closed ({conn}: {reason})"),
                ),
            }
        }
        Event::Transition {
            client,
            from,
            to,
            since_last,
            suspicion,
            detector,
        } => {
            let since = since_last.map_or_else(|| "-".to_owned(), fmt_ms);
            let (level, kind) = match to {
                Liveness::Down => (Level::ERROR, "clients down"),
                Liveness::Suspect => (Level::WARN, "clients suspect"),
                _ => (Level::INFO, "clients back or left"),
            };
            line(
                level,
                kind,
                format_args!(
                    "Client {client} is {to} (was {from}): last heartbeat {since} ago, {detector} {suspicion:.2}"
                ),
            );
        }
        Event::Evicted { client } => line(
            Level::WARN,
            "clients forgotten",
            format_args!("Forgot client {client}: the --max-clients limit was reached"),
        ),
        Event::Stalled { late } => line(
            Level::WARN,
            "server stalls",
            format_args!(
                "The server itself was stalled for {}: nobody is declared down on that evidence",
                fmt_ms(*late)
            ),
        ),
        other => line(Level::INFO, "other events", format_args!("{other}")),
    }
}

/// The level and log kind of a disconnect: ordinary ends are information, the server's own
/// drops are warnings, one kind per cause.
fn disconnect_kind(reason: &DisconnectReason) -> (Level, &'static str) {
    match reason {
        DisconnectReason::Protocol(_) => (Level::WARN, "connections dropped: protocol error"),
        DisconnectReason::NotReadingAcks => (
            Level::WARN,
            "connections dropped: not reading acknowledgements",
        ),
        DisconnectReason::HelloTimeout(_)
        | DisconnectReason::IncompleteHello(_)
        | DisconnectReason::IdleTimeout(_) => (Level::WARN, "connections dropped: timeout"),
        _ => (Level::INFO, "connections closed"),
    }
}
