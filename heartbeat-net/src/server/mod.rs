//! The `heartbeat-server` application: its flags, its set-up, and the loop that logs and prints
//! what the core reports. The binary is a thin `main` calling [`main`]; each concern of the
//! application (log lines, refusals, and what operators add: metrics, hooks, state) is a module
//! here.

pub mod http;
mod log;
pub mod metrics;
mod refusals;
pub mod state;

pub use log::log_event;
pub use refusals::log_refusal;

use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{CommandFactory, Parser};
use heartbeat_core::config::ServerConfig;
use heartbeat_core::server::{Event, Server};
use heartbeat_core::{AuthConfig, Now, fmt_ms};

use crate::app;
use crate::cli::{self, DetectorArgs, trust_warning};
use crate::driver::ControlReceiver;
use crate::tls::{self, TlsListener};
use crate::{
    Clock as _, Listener, LogSummary, NetError, ServerApp, ServerControl, ServerOptions,
    SystemClock, TcpListener, keys, run_server_app,
};
use state::{Saver, StateDir};

/// Receive heartbeats from clients over TCP and analyse them: delay, missed heartbeats, bursts,
/// clients going away. Many clients at once, v1 (acknowledged) or the legacy text format.
///
/// Stop it with Ctrl-C or SIGTERM: it prints a per-client summary and exits 0.
#[derive(Debug, Parser)]
#[command(name = "heartbeat-server", version)]
pub struct Opt {
    /// TCP port to listen on, 0 to 65535; 0 picks a free port (logged at startup).
    #[arg(short, long, default_value_t = 6510, allow_negative_numbers = true,
          value_parser = cli::int::<u16>(0, 65_535))]
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
    #[arg(long, default_value_t = 65_536, allow_negative_numbers = true,
          value_parser = cli::int::<u32>(1, u32::MAX.into()))]
    max_connections: u32,

    /// Most connections open at once from one IP address, so one host cannot take every slot;
    /// one beyond it is closed at once. Default: a quarter of --max-connections.
    #[arg(long, allow_negative_numbers = true, value_parser = cli::int::<u32>(1, u32::MAX.into()))]
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
    #[arg(long, default_value_t = 32_768, allow_negative_numbers = true,
          value_parser = cli::int::<usize>(0, u32::MAX.into()))]
    send_buffer: usize,

    /// Self-protection: when the server itself was stalled (suspended VM, overload) for longer
    /// than this, it declares nobody down on that evidence alone (Cassandra's 5 s guard).
    /// A number with a unit: ms, s or min.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pause_guard: std::time::Duration,

    /// Clients remembered at most (their analysis and detector). Beyond it a new client evicts
    /// the disconnected client heard from longest ago; connected clients are never evicted.
    #[arg(long, default_value_t = 100_000, allow_negative_numbers = true,
          value_parser = cli::int::<u32>(1, u32::MAX.into()))]
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

    /// Remember the clients across restarts in DIR (created if missing, mode 0700; one server
    /// per directory): their counters, sessions and liveness are saved every --state-interval
    /// and at shutdown, and what changed in between is journaled as it happens, so a restart
    /// (even after kill -9) goes on counting where the old server stopped. Off by default: a
    /// restarted server counts each client from its first heartbeat.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,

    /// With --state-dir: time between full saves of the state (the journal takes every change
    /// in between). A number with a unit: ms, s or min.
    #[arg(long, default_value = "10s", value_parser = parse_duration, requires = "state_dir")]
    state_interval: std::time::Duration,

    /// Serve Prometheus metrics at http://ADDR/metrics and the live per-client report as JSON
    /// at http://ADDR/clients, e.g. 127.0.0.1:9464 (port 0 picks one, logged). Off by default.
    #[arg(long, value_name = "ADDR:PORT")]
    metrics_addr: Option<SocketAddr>,

    /// Forget a client gone (disconnected, not heard from) this long: it leaves reports and
    /// its metrics series disappear, so both stay bounded. A number with a unit: ms, s, min
    /// or h.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    forget_after: std::time::Duration,

    #[command(flatten)]
    detector: DetectorArgs,
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let (n, per_ms) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix("min") {
        (n, 60_000.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3_600_000.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return Err("expected a number with a unit, e.g. 500ms, 5s, 10min or 24h".into());
    };
    match n.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v * per_ms < 1e12 => Ok(
            std::time::Duration::from_micros((v * per_ms * 1000.0).round() as u64),
        ),
        _ => Err(format!("{s:?} is not a positive duration")),
    }
}

/// Runs `heartbeat-server` with the process's arguments; the exit code to return.
pub fn main() -> ExitCode {
    let opt = Opt::parse();
    // Parse, don't validate: a detector parameter out of range is a usage error (exit 2).
    let config = opt.detector.config().and_then(|d| {
        ServerConfig::default()
            .detector(d)
            .max_clients(opt.max_clients as usize)
            .pause_guard(opt.pause_guard)?
            .min_interval(opt.min_interval)?
            .max_idle(opt.max_idle)?
            .max_clock_skew(opt.max_clock_skew)?
            .forget_after(opt.forget_after)
    });
    let config = match config {
        Ok(c) => c,
        Err(e) => usage_error(e),
    };
    app::init_tracing(opt.debug);
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
    let Some(runtime) = app::runtime() else {
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
    let stop = app::shutdown_signal()?;
    let listener = TcpListener::bind(&opt.bind, opt.port)
        .await?
        .send_buffer((opt.send_buffer > 0).then_some(opt.send_buffer));
    let addr = listener.local_addr().context("reading the bound address")?;
    // The state is loaded (and its directory locked) before the server says it listens.
    let mut server = Server::new(Arc::new(config));
    let mut saver = match &opt.state_dir {
        Some(dir) => Some(open_state(dir, &mut server, opt.state_interval)?),
        None => None,
    };
    tracing::info!("Awaiting connection from client on port {}...", addr.port());
    tracing::info!("Failure detector: {}", server.config().detector_config());
    if let Some(warning) = trust_warning(addr, server.config().auth_config().is_some()) {
        tracing::warn!("{warning}");
    }

    let log = LogSummary::default();
    let options = ServerOptions {
        max_connections: opt.max_connections as usize,
        max_connections_per_ip: opt.max_connections_per_ip.map(|n| n as usize),
        write_timeout: opt.write_timeout,
        log: log.clone(),
        ..ServerOptions::default()
    };
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
    // Requests to the server task (metrics snapshots, reports) go through `control`.
    let (control, control_rx) = ServerControl::channel();
    if let Some(addr) = opt.metrics_addr {
        let bound = http::start(addr, control.clone())
            .with_context(|| format!("serving metrics on {addr}"))?;
        tracing::info!(
            "Serving metrics on http://{bound}/metrics and clients on http://{bound}/clients"
        );
    }
    drop(control);
    let app = App {
        log: &log,
        json: opt.json,
        saver: saver.as_mut(),
    };
    let mut server = match tls {
        Some(tls) => {
            tracing::info!("TLS on");
            let listener = TlsListener::new(listener, tls);
            serve_on(listener, server, options, control_rx, stop, app).await?
        }
        None => serve_on(listener, server, options, control_rx, stop, app).await?,
    };
    if let Some(saver) = saver {
        saver.finish(&mut server, SystemClock.now());
    }

    let report = server.report();
    eprintln!("{report}");
    if opt.json {
        let clients = report.to_json()["clients"].take();
        print_line(&format!("{{\"event\":\"summary\",\"clients\":{clients}}}"));
    }
    Ok(())
}

/// Opens the state directory, restores what it holds into the fresh `server` and starts the
/// writer. A directory that cannot be used at all is an error (exit 1); a file in it that
/// cannot be used is set aside and the server starts without it.
fn open_state(
    dir: &std::path::Path,
    server: &mut Server,
    interval: std::time::Duration,
) -> anyhow::Result<Saver> {
    let state_dir = StateDir::open(dir)?;
    let now = SystemClock.now();
    let loaded = state_dir.load(now.unix);
    match loaded.state {
        Some(state) => match server.restore(state, now) {
            Ok(restored) => {
                let ago = loaded.saved_at.map_or_else(
                    || "-".to_owned(),
                    |at| fmt_ms(now.unix.as_duration().saturating_sub(at.as_duration())),
                );
                let dropped = if restored.dropped > 0 {
                    format!(
                        "; {} more left out beyond --max-clients (the longest silent)",
                        restored.dropped
                    )
                } else {
                    String::new()
                };
                tracing::info!(
                    "State: {} client(s) restored from {} (last full save {ago} ago, {} journal \
                     line(s) after it){dropped}",
                    restored.clients,
                    dir.display(),
                    loaded.journal_lines,
                );
            }
            Err(e) => state_dir.refused(now.unix, &e.to_string()),
        },
        None => tracing::info!(
            "State: nothing saved in {} yet; starting with no clients",
            dir.display()
        ),
    }
    state_dir
        .start_saving(loaded.generation, interval, server.persist())
        .with_context(|| format!("starting to save the state in {}", dir.display()))
}

/// The application in the server loop: logs events (refused connections through the
/// summarising log) and, with `--json`, prints them; with `--state-dir`, keeps the state.
struct App<'a> {
    log: &'a LogSummary,
    json: bool,
    saver: Option<&'a mut Saver>,
}

impl ServerApp for App<'_> {
    fn on_event(&mut self, e: &Event, now: Now) {
        if !log_refusal(self.log, e, now.mono) {
            log_event(self.log, e, now);
        }
        if self.json {
            print_line(&e.to_json().to_string());
        }
    }

    fn next_wake(&self) -> Option<std::time::Instant> {
        self.saver.as_ref().and_then(|s| s.next_wake())
    }

    fn on_wake(&mut self, server: &mut Server, now: Now) {
        if let Some(saver) = self.saver.as_mut() {
            saver.on_wake(server, now);
        }
    }
}

/// Runs the server on `listener` (plaintext or TLS) with `app` in its loop.
async fn serve_on<L: Listener>(
    listener: L,
    server: Server,
    options: ServerOptions,
    control: ControlReceiver,
    stop: impl Future<Output = ()>,
    app: App<'_>,
) -> Result<Server, NetError> {
    run_server_app(listener, server, options, control, SystemClock, stop, app).await
}

/// One line on stdout. A closed stdout (the reader went away) is not worth dying for.
fn print_line(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
}
