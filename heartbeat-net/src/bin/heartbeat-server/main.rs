//! `heartbeat-server`: receives heartbeats from many clients, acknowledges them and reports who
//! is late, what was missed and who went away.
//!
//! The application, in the binary's own modules (heartbeat-net's library is the driver and the
//! embedding): its flags, its set-up, and the loop that logs and prints what the core reports;
//! each concern of the application (log lines, refusals, and what operators add: metrics,
//! hooks, state) is a module here.
//!
//! - `log` and `refusals` (private): the log lines ([`log_event`], [`log_refusal`]).
//! - [`output`]: stderr and stdout written off the loop, through bounded queues.
//! - [`hooks`]: `--on-transition` and `--webhook`.
//! - [`expect`]: the `--expect` file.
//! - [`signals`]: SIGHUP (reload) and SIGUSR1 (report), through the driver's control channel.
//! - [`ctl`] and [`silence`]: `heartbeat-server ctl` and its control socket (maintenance
//!   windows, decommissioning).
//!
//! # Counters for `/metrics`
//! [`AppCounters`] reads what the application's side channels did (the server's own state is
//! read through the control channel, [`heartbeat_net::ServerControl`]): [`HookCounts`] for
//! `heartbeat_hook_runs_total{result}` and `heartbeat_hook_dropped_total`, and one
//! [`OutputCounts`] per stream for `heartbeat_output_dropped_lines_total{stream}`; [`http`]
//! adds them to each scrape's [`metrics::Snapshot`].

mod conffile;
mod ctl;
mod expect;
mod hooks;
mod http;
mod log;
mod metrics;
mod output;
mod refusals;
mod settings;
mod signals;
mod silence;
mod state;
mod statuspage;
mod unidentified;

use hooks::{HookCounter, HookCounts, HookOptions, Hooks, Webhook};
use log::log_event;
use output::{Output, OutputCounts};
use refusals::log_refusal;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{CommandFactory, Parser};
use heartbeat_core::analysis::Report;
use heartbeat_core::config::ServerConfig;
use heartbeat_core::detector::ClientDetectors;
use heartbeat_core::liveness::FlapControl;
use heartbeat_core::server::{Event, Expected, Server, unix_seconds};
use heartbeat_core::{AuthConfig, Now, UnixTime, fmt_ms};

use ctl::{ControlSocket, Ctl, CtlArgs};
use heartbeat_net::MakeListener;
use heartbeat_net::app;
use heartbeat_net::cli::{self, DetectorArgs, TargetArgs, trust_warning};
use heartbeat_net::driver::ControlReceiver;
use heartbeat_net::tls::{self, TlsListener};
use heartbeat_net::{
    Clock as _, Listener, LogSummary, NetError, Refusal, ServerApp, ServerControl, ServerOptions,
    SystemClock, TcpListener, keys, run_server_threads,
};
use silence::Silences;
use state::{Saver, SideFile, StateDir, StateDirError};
use unidentified::Unidentified;

/// At exit, how long each output stream gets to write what is queued (a reader that never
/// drains it does not hold up the exit).
const EXIT_FLUSH: Duration = Duration::from_secs(2);

/// Receive heartbeats from clients over TCP and analyse them: delay, missed heartbeats, bursts,
/// clients going away. Many clients at once, v1 (acknowledged) or the legacy text format.
///
/// Stop it with Ctrl-C or SIGTERM: it prints a per-client summary and exits 0. SIGHUP reloads
/// --expect, --auth-keys and the TLS certificate; SIGUSR1 prints the summary and goes on.
#[derive(Debug, Parser)]
#[command(
    name = "heartbeat-server",
    version,
    args_conflicts_with_subcommands = true
)]
pub(crate) struct Opt {
    #[command(subcommand)]
    command: Option<Command>,

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
    /// drop the connection. A duration: 250ms, 1.5s, 10m, 2h, 7d.
    #[arg(long, default_value = "10ms", value_parser = cli::duration)]
    min_interval: std::time::Duration,

    /// Ceiling of the idle timeout (10 x the client's interval, at least 5 s): a connection
    /// silent this long is dropped, whatever interval it declared. Clients whose interval does
    /// not fit twice in it connect for each heartbeat. A duration: 250ms, 1.5s, 10m, 2h, 7d.
    #[arg(long, default_value = "10min", value_parser = cli::duration)]
    max_idle: std::time::Duration,

    /// A client whose clock is off by more than this is reported (clock_skew) and its delays
    /// are measured from its estimated offset. Stamps more than a day off are refused.
    /// A duration: 250ms, 1.5s, 10m, 2h, 7d.
    #[arg(long, default_value = "1s", value_parser = cli::duration)]
    max_clock_skew: std::time::Duration,

    /// A connection whose acknowledgements cannot be written for this long (the peer does not
    /// read them) is dropped as "not reading acknowledgements". A duration: 250ms, 1.5s, 10m, 2h, 7d.
    #[arg(long, default_value = "10s", value_parser = cli::duration)]
    write_timeout: std::time::Duration,

    /// Kernel send buffer of each connection, in bytes (SO_SNDBUF; Linux doubles it). Bounds
    /// the kernel memory a peer that does not read can hold, and how soon the server's writes
    /// to it block (see --write-timeout). 0 leaves the system's autotuning (up to megabytes).
    #[arg(long, default_value_t = 32_768, allow_negative_numbers = true,
          value_parser = cli::int::<usize>(0, u32::MAX.into()))]
    send_buffer: usize,

    /// Server threads: connections are spread across N threads by the kernel (SO_REUSEPORT;
    /// which also lets another process of this user bind the port), each reading and
    /// acknowledging its own, with one shared core (one report, one /metrics, one state).
    /// Default 1: one thread serves 1,000 clients x 10 ms on a fraction of a core, and a second
    /// thread pays for the shared core's lock; use more only when one core is not enough
    /// (BENCHMARKS.md, "More than one core").
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    threads: u32,

    /// Measure the time the server threads hold the shared core's lock, logged at exit (a
    /// benchmarking aid: it costs two clock reads per lock).
    #[arg(long, hide = true)]
    measure_lock: bool,

    /// Self-protection: when the server itself was stalled (suspended VM, overload) for longer
    /// than this, it declares nobody down on that evidence alone (Cassandra's 5 s guard).
    /// A duration: 250ms, 1.5s, 10m, 2h, 7d.
    #[arg(long, default_value = "5s", value_parser = cli::duration)]
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

    /// Flap control: a client is declared down only once its detector has been at the down
    /// level for N-1 further periods with nothing heard (a period is the client's interval).
    /// 1: down as soon as the detector says so.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    down_after: u32,

    /// Flap control: a client declared down is up again at its M-th arrival in a row (a burst
    /// of held heartbeats is one arrival). 1: up at the first.
    #[arg(long, value_name = "M", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    up_after: u32,

    /// Run CMD (through sh -c) on every liveness transition, with HEARTBEAT_CLIENT,
    /// HEARTBEAT_FROM, HEARTBEAT_TO, HEARTBEAT_TIME (Unix seconds), HEARTBEAT_SINCE_LAST_MS,
    /// HEARTBEAT_DETECTOR, HEARTBEAT_SUSPICION and HEARTBEAT_PEER in its environment. Never
    /// holds up the monitor (see --hook-queue, --hook-concurrency, --hook-timeout).
    #[arg(long, value_name = "CMD")]
    on_transition: Option<String>,

    /// POST every liveness transition as JSON (the --json transition event) to URL, http:// or
    /// https:// (checked against the system's CA certificates). Like --on-transition, never
    /// holds up the monitor.
    #[arg(long, value_name = "URL", value_parser = parse_webhook)]
    webhook: Option<Webhook>,

    /// Hooks (--on-transition runs, --webhook calls) running at once at most.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    hook_concurrency: u32,

    /// Alerts waiting for a hook at most; beyond it alerts are dropped, counted and logged.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    hook_queue: u32,

    /// How long a hook may run: a command still running then is killed with its whole process
    /// group, a webhook call is abandoned. Also how long the alerts queued at shutdown get to
    /// run; those left are counted as dropped and logged. A duration: 250ms, 1.5s, 10m, 2h, 7d.
    #[arg(long, default_value = "10s", value_parser = cli::duration)]
    hook_timeout: Duration,

    /// The clients that should be there: one id a line, optionally with the interval it
    /// promises (`web-01 1000ms`; default 1s); `#` comments. One not heard from within its
    /// grace is down ("never seen"). SIGHUP reloads the file.
    #[arg(long, value_name = "FILE")]
    expect: Option<PathBuf>,

    /// Detector settings per client: a TOML file of `[[client]]` entries, each a `match` (an
    /// exact id or a glob with * and ?; the first match wins) and detector flags without `--`
    /// (`detector = "fixed"`, `grace = "3200ms"`), as `heartbeat-sim tune` prints them. A
    /// client no entry matches gets --detector. A bad file exits 2 naming the line; SIGHUP
    /// reloads it (a bad one then keeps the settings in force). Off by default. Not with
    /// --target-detection, which configures every client's detector from its own measurements.
    #[arg(long, value_name = "FILE", conflicts_with = "target_detection")]
    client_settings: Option<PathBuf>,

    /// With --expect: how long after the server starts (or a reload adds it) an expected client
    /// may take to be heard from. Default: what the detector needs to declare a client of its
    /// interval down. A duration: 250ms, 1.5s, 10m, 2h, 7d.
    #[arg(long, requires = "expect", value_parser = cli::duration)]
    expect_grace: Option<Duration>,

    /// Remember the clients across restarts in DIR (created if missing, mode 0700; one server
    /// per directory; refused unless it is this user's or root's and writable by no one else,
    /// as key files are; a link in it is never followed): their counters, sessions and liveness are saved every --state-interval
    /// and at shutdown, and what changed in between is journaled as it happens, so a restart
    /// (even after kill -9) goes on counting where the old server stopped. Off by default: a
    /// restarted server counts each client from its first heartbeat.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,

    /// Take `heartbeat-server ctl` requests (silence, unsilence, forget, list) on the Unix
    /// socket PATH, mode 0600, for this user and root only; its directory must be this user's
    /// or root's and writable by no one else. Default: control.sock in --state-dir (which also
    /// keeps the silences across restarts); without either, no socket.
    #[arg(long, value_name = "PATH")]
    control_socket: Option<PathBuf>,

    /// With --state-dir: time between full saves of the state (the journal takes every change
    /// in between). A duration: 250ms, 1.5s, 10m, 2h, 7d.
    #[arg(long, default_value = "10s", value_parser = cli::duration, requires = "state_dir")]
    state_interval: std::time::Duration,

    /// Serve Prometheus metrics at http://ADDR/metrics and the live per-client report as JSON
    /// at http://ADDR/clients, e.g. 127.0.0.1:9464 (port 0 picks one, logged). Off by default.
    /// At most 128 connections, 32 per address, each closed after 2 s without a request; one
    /// beyond is answered 503 with Retry-After. /metrics is encoded at most once a second
    /// while no liveness changes.
    #[arg(long, value_name = "ADDR:PORT")]
    metrics_addr: Option<SocketAddr>,

    /// Forget a client gone (disconnected, not heard from) this long: it leaves reports and
    /// its metrics series disappear, so both stay bounded. A duration: 250ms, 1.5s, 10m, 2h,
    /// 7d.
    #[arg(long, default_value = "24h", value_parser = cli::duration)]
    forget_after: std::time::Duration,

    /// With --expect: an expected client that said goodbye (left) and has not come back this
    /// long after is down (a transition from left, so hooks and alerts page once): a machine
    /// that shut down cleanly and never returned is not silent for ever. Counted from when it
    /// left, across restarts (--state-dir). A client not in --expect stays left. A duration:
    /// 250ms, 1.5s, 10m, 2h, 7d.
    #[arg(long, default_value = "1h", value_parser = cli::duration)]
    left_grace: std::time::Duration,

    #[command(flatten)]
    detector: DetectorArgs,

    #[command(flatten)]
    target: TargetArgs,

    /// Print the man page or a shell's completions (man, bash, zsh, fish) and exit: what the
    /// Debian package installs (deploy/debian/build.sh).
    #[arg(long, value_name = "WHAT", hide = true, exclusive = true)]
    generate: Option<cli::Generate>,
}

/// The subcommands; without one, the server runs.
#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Talk to a running server through its control socket: silence a client until a time (a
    /// maintenance window), end a silence, forget a client now (decommissioned), list the
    /// silences.
    Ctl(CtlArgs),
}

impl Opt {
    fn hook_options(&self) -> HookOptions {
        HookOptions {
            command: self.on_transition.clone(),
            webhook: self.webhook.clone(),
            concurrency: self.hook_concurrency as usize,
            queue: self.hook_queue as usize,
            timeout: self.hook_timeout,
        }
    }
}

fn parse_webhook(s: &str) -> Result<Webhook, String> {
    s.parse()
}

/// Runs `heartbeat-server` with the process's arguments; the exit code to return.
pub(crate) fn main() -> ExitCode {
    let mut opt = Opt::parse();
    if let Some(Command::Ctl(args)) = opt.command.take() {
        return ctl::run(args);
    }
    if let Some(what) = opt.generate {
        return cli::print_generated(Opt::command(), what);
    }
    // Parse, don't validate: a detector parameter out of range is a usage error (exit 2).
    let config = opt.detector.config().and_then(|d| {
        ServerConfig::default()
            .detector(d)
            .flap_control(FlapControl::new(opt.down_after, opt.up_after)?)
            .max_clients(opt.max_clients as usize)
            .pause_guard(opt.pause_guard)?
            .min_interval(opt.min_interval)?
            .max_idle(opt.max_idle)?
            .max_clock_skew(opt.max_clock_skew)?
            .forget_after(opt.forget_after)?
            .left_grace(opt.left_grace)
            .and_then(|c| Ok(c.qos_target(opt.target.target()?)))
    });
    let config = match config {
        Ok(c) => c,
        Err(e) => usage_error(e),
    };
    // Logs and events go through queues of their own from here on: writing them never waits.
    let output = match Output::start() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("heartbeat-server: cannot start the output threads: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stderr = output.stderr.clone();
    app::init_tracing_to(opt.debug, move || stderr.event_writer());
    let code = run(opt, config, &output);
    output.flush(EXIT_FLUSH);
    code
}

/// Everything after the output is set up; the exit code.
fn run(opt: Opt, config: ServerConfig, output: &Output) -> ExitCode {
    let usage = |e: &dyn std::fmt::Display| -> ! {
        output.flush(EXIT_FLUSH);
        usage_error(e)
    };
    let mut seed = [0u8; 32];
    if let Err(e) = getrandom::fill(&mut seed) {
        tracing::error!("cannot read randomness for the challenge nonces: {e}");
        return ExitCode::FAILURE;
    }
    // A key, certificate or key file that cannot be used is a bad flag value too (exit 2).
    let auth = match load_auth(&opt, seed) {
        Ok(auth) => auth,
        Err(e) => usage(&e),
    };
    let config = config.auth(auth);
    let tls = match (&opt.tls_cert, &opt.tls_key) {
        (Some(cert), Some(key)) => match tls::server_config(cert, key) {
            Ok((tls, warnings)) => {
                warnings.iter().for_each(|w| tracing::warn!("{w}"));
                Some(tls)
            }
            Err(e) => usage(&e),
        },
        _ => None,
    };
    // So is an expect file.
    let expected = match &opt.expect {
        Some(path) => match expect::load(path, opt.expect_grace) {
            Ok(list) => Some(list),
            Err(e) => usage(&e),
        },
        None => None,
    };
    // So is a bad --client-settings file.
    let client_settings = match &opt.client_settings {
        Some(path) => match settings::load(path) {
            Ok(rules) => Some(rules),
            Err(e) => usage(&e),
        },
        None => None,
    };
    // So is a state directory someone else could write in; one in use (or that cannot be
    // created or locked) exits 1. It is locked before the server says it listens.
    let state_dir = match &opt.state_dir {
        Some(dir) => match StateDir::open(dir, SystemClock.unix()) {
            Ok(state_dir) => Some(state_dir),
            Err(e @ StateDirError::Unsafe(_)) => usage(&e),
            Err(e) => {
                tracing::error!("{e}");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    // The control socket: a bad place for it, or one another server answers on, exits 2.
    let socket_path = opt
        .control_socket
        .clone()
        .or_else(|| state_dir.as_ref().map(|d| d.path().join(ctl::SOCKET)));
    let socket = match socket_path.as_deref().map(ControlSocket::bind) {
        Some(Ok(socket)) => Some(socket),
        Some(Err(e @ ctl::BindError::Io { .. })) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
        Some(Err(e)) => usage(&e),
        None => None,
    };
    let silences_file = match state_dir.as_ref().map(|d| d.side_file(silence::FILE)) {
        Some(Ok(file)) => Some(file),
        Some(Err(e)) => {
            tracing::error!("state directory: cannot open it again for the silences: {e}");
            return ExitCode::FAILURE;
        }
        None => None,
    };
    let Some(runtime) = app::runtime() else {
        return ExitCode::FAILURE;
    };
    let served = serve(
        opt,
        config,
        tls,
        (expected, client_settings),
        (state_dir, silences_file),
        socket,
        output.clone(),
    );
    match runtime.block_on(served) {
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

/// What the application's side channels did: for `/metrics` (see the module docs) and the
/// SIGUSR1 report. Clones share the counts.
#[derive(Clone, Debug)]
pub(crate) struct AppCounters {
    hooks: Option<HookCounter>,
    output: Output,
    /// The silences, for `/metrics` and `/clients`.
    pub(crate) silences: Silences,
}

/// The counts at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct AppCounts {
    /// The hooks (all zero without hooks).
    pub(crate) hooks: HookCounts,
    /// The log.
    pub(crate) stderr: OutputCounts,
    /// The `--json` events.
    pub(crate) stdout: OutputCounts,
}

impl AppCounters {
    /// The counts now.
    pub(crate) fn counts(&self) -> AppCounts {
        AppCounts {
            hooks: self
                .hooks
                .as_ref()
                .map(HookCounter::counts)
                .unwrap_or_default(),
            stderr: self.output.stderr.counts(),
            stdout: self.output.stdout.counts(),
        }
    }
}

/// The `summary` line of `--json`: `final` at shutdown, not on SIGUSR1.
fn summary_line(report: &Report, time: UnixTime, is_final: bool) -> String {
    let clients = report.to_json()["clients"].take();
    format!(
        "{{\"event\":\"summary\",\"final\":{is_final},\"time\":{},\"clients\":{clients}}}",
        unix_seconds(time)
    )
}

async fn serve(
    opt: Opt,
    config: ServerConfig,
    tls: Option<Arc<rustls::ServerConfig>>,
    (expected, client_settings): (Option<Vec<Expected>>, Option<ClientDetectors>),
    (state_dir, silences_file): (Option<StateDir>, Option<SideFile>),
    socket: Option<ControlSocket>,
    output: Output,
) -> anyhow::Result<()> {
    let stop = app::shutdown_signal()?;
    let signals = signals::Signals::install()?;
    let send_buffer = (opt.send_buffer > 0).then_some(opt.send_buffer);
    let (listener, shards) =
        TcpListener::bind_shards(&opt.bind, opt.port, opt.threads as usize).await?;
    let listener = listener.send_buffer(send_buffer);
    let addr = listener.local_addr().context("reading the bound address")?;
    // The state is loaded before the server says it listens.
    let mut server = Server::new(Arc::new(config));
    if let Some(rules) = client_settings {
        // Before the state is restored: a restored client is watched by its rule at once.
        server.set_client_detectors(SystemClock.now(), rules);
        tracing::info!(
            "Client settings (--client-settings): {}",
            settings::describe(server.client_detectors())
        );
    }
    let mut saver = match state_dir {
        Some(dir) => Some(open_state(dir, &mut server, opt.state_interval)?),
        None => None,
    };
    tracing::info!("Awaiting connection from client on port {}...", addr.port());
    match server.config().qos_target_value() {
        Some(target) => tracing::info!(
            "Failure detector: chen, each client's margin set from the quality-of-service target {target}"
        ),
        None => tracing::info!("Failure detector: {}", server.config().detector_config()),
    }
    let flap = server.config().flap_control_value();
    if flap != FlapControl::default() {
        tracing::info!("Flap control: {flap}");
    }
    if let Some(warning) = trust_warning(addr, server.config().auth_config().is_some()) {
        tracing::warn!("{warning}");
    }

    let log = LogSummary::default();
    let options = driver_options(&opt, &log);
    let hooks = start_hooks(&opt, &log);
    let silences = Silences::new(silences_file);
    let counters = AppCounters {
        hooks: hooks.as_ref().map(Hooks::counter),
        output: output.clone(),
        silences: silences.clone(),
    };

    // Requests to the server task (metrics snapshots, reports) go through `control`.
    let (control, control_rx) = ServerControl::channel();
    let changes = http::Changes::default();
    // The status page's history, kept only when there is a page to show it.
    let history = opt
        .metrics_addr
        .map(|_| statuspage::SharedHistory::default());
    if let (Some(addr), Some(history)) = (opt.metrics_addr, &history) {
        let bound = http::start(
            addr,
            control.clone(),
            counters.clone(),
            changes.clone(),
            log.clone(),
            history.clone(),
        )
        .with_context(|| format!("serving metrics on {addr}"))?;
        tracing::info!(
            "Serving metrics on http://{bound}/metrics and clients on http://{bound}/clients; \
             the status page on http://{bound}/"
        );
    }
    if let Some(list) = expected {
        let changes = server.set_expected(SystemClock.now(), &list);
        tracing::info!(
            "Expecting {} client(s) (--expect); each is down if not heard from within {}",
            changes.added.len(),
            opt.expect_grace.map_or_else(
                || "what the detector needs for its interval".to_owned(),
                fmt_ms
            ),
        );
    }
    // The silences kept in the state directory, once the clients they name are known.
    silences.restore(&server, SystemClock.now());
    let ctl = socket.map(|socket| {
        tracing::info!(
            "Control socket on {} (heartbeat-server ctl)",
            socket.path().display()
        );
        let ctl = Ctl::new(
            control.clone(),
            silences.clone(),
            opt.expect.clone(),
            log.clone(),
        );
        tokio::spawn(ctl::serve(socket, Arc::new(ctl)))
    });
    let json = opt.json;
    let mut reload = signals::Reload {
        expect: opt.expect.clone().map(|p| (p, opt.expect_grace)),
        auth_keys: opt.auth_keys.clone(),
        tls: None,
        client_settings: opt.client_settings.clone(),
    };
    // The loop also stops when stdout fails: the --json reader went away. Both are watched by a
    // task of their own: the loop polls its stop on every wake, and polling two signal streams
    // and a Notify there cost 1.6k instructions a wake, a oneshot a few dozen.
    let stdout = output.stdout.clone();
    let (stopped, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        tokio::select! {
            () = stop => {}
            () = stdout.failed() => {}
        }
        let _ = stopped.send(());
    });
    // Dropped unsent only when the runtime shuts down: a stop too.
    let stop = async move {
        let _ = stop_rx.await;
    };
    let app = App {
        log: log.clone(),
        json,
        output: output.clone(),
        hooks,
        saver: saver.take(),
        unidentified: Unidentified::default(),
        changes,
        silences,
        detector: server.config().detector_config().kind(),
        history,
    };
    let signals =
        |reload| tokio::spawn(signals.run(control, reload, output.clone(), json, counters));
    let served = match tls {
        Some(tls) => {
            tracing::info!("TLS on");
            let listener = TlsListener::new(listener, tls);
            let handle = listener.reload_handle();
            if let (Some(cert), Some(key)) = (&opt.tls_cert, &opt.tls_key) {
                reload.tls = Some((cert.clone(), key.clone(), handle.clone()));
            }
            // Every thread's listener shares the configuration, so a reload reaches all.
            let more = shards
                .into_iter()
                .map(|shard| {
                    let handle = handle.clone();
                    Box::new(move || {
                        let l = shard.into_listener(send_buffer)?;
                        Ok(TlsListener::with_reload(l, handle))
                    }) as MakeListener<_>
                })
                .collect();
            let signals = signals(reload);
            let served = serve_on(listener, more, server, options, control_rx, stop, app).await;
            signals.abort();
            served
        }
        None => {
            let more = shards
                .into_iter()
                .map(|shard| Box::new(move || shard.into_listener(send_buffer)) as MakeListener<_>)
                .collect();
            let signals = signals(reload);
            let served = serve_on(listener, more, server, options, control_rx, stop, app).await;
            signals.abort();
            served
        }
    };
    // A clean stop: no more requests, and the socket's file is removed.
    if let Some(ctl) = ctl {
        ctl.abort();
        let _ = ctl.await;
    }
    let (server, app) = served?;
    finish(
        server,
        json,
        &output,
        app.unidentified,
        app.hooks,
        app.saver,
    )
    .await
}

/// The driver's limits from the flags, logged once.
fn driver_options(opt: &Opt, log: &LogSummary) -> ServerOptions {
    let mut options = ServerOptions::default();
    options.max_connections = opt.max_connections as usize;
    options.max_connections_per_ip = opt.max_connections_per_ip.map(|n| n as usize);
    options.write_timeout = opt.write_timeout;
    options.log = log.clone();
    options.measure_lock = opt.measure_lock;
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
    options
}

/// The hooks of `--on-transition` and `--webhook`, started and logged once; `None` without
/// either.
fn start_hooks(opt: &Opt, log: &LogSummary) -> Option<Hooks> {
    let hook_options = opt.hook_options();
    hook_options.any().then(|| {
        tracing::info!(
            "Hooks on every transition:{}{}; {} at once, {} queued at most, {} each at most",
            hook_options
                .command
                .as_ref()
                .map_or_else(String::new, |c| format!(" run {c:?}")),
            hook_options
                .webhook
                .as_ref()
                .map_or_else(String::new, |w| format!(" POST to {w}")),
            hook_options.concurrency,
            hook_options.queue,
            fmt_ms(hook_options.timeout),
        );
        Hooks::start(hook_options, log.clone())
    })
}

/// After the loop: the last unidentified counts, the hooks drained (what was not delivered is
/// logged and counted before the report), the state saved, then the final report and summary.
async fn finish(
    mut server: Server,
    json: bool,
    output: &Output,
    mut unidentified: Unidentified,
    hooks: Option<Hooks>,
    saver: Option<Saver>,
) -> anyhow::Result<()> {
    if json {
        for (e, time) in unidentified.flush_all(SystemClock.now()) {
            output.stdout.line(e.to_json_at(time).to_string());
        }
    }
    if let Some(hooks) = hooks {
        hooks.shutdown().await;
    }
    if let Some(saver) = saver {
        saver.finish(&mut server, SystemClock.now());
    }
    let report = server.report();
    output.stderr.line(report.to_string());
    if let Some(e) = output.stdout.error() {
        anyhow::bail!(
            "cannot write to stdout ({e}): the reader of --json went away; exiting 1 so that a \
             supervisor restarts the server with one"
        );
    }
    if json {
        output
            .stdout
            .line(summary_line(&report, SystemClock.unix(), true));
    }
    Ok(())
}

/// Restores what the state directory holds into the fresh `server` and starts the writer. A
/// file in it that cannot be used is set aside and the server starts without it; a writer that
/// cannot start is an error (exit 1).
fn open_state(
    state_dir: StateDir,
    server: &mut Server,
    interval: std::time::Duration,
) -> anyhow::Result<Saver> {
    let dir = state_dir.path().to_owned();
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
        .start_saving(loaded.generation, interval, server.persist(), now.unix)
        .with_context(|| format!("starting to save the state in {}", dir.display()))
}

/// The application in the server loop: logs events (every line through the summarising log),
/// hands transitions to the hooks and, with `--json`, prints events (those of connections that
/// never identified summed up per kind and second), none of it waiting; with `--state-dir`,
/// keeps the state; tells `/metrics` what changed and the status page's history what happened.
///
/// It owns its parts (the loop may run on several threads, `--threads`) and is handed back
/// when the loop ends, for [`finish`].
struct App {
    log: LogSummary,
    json: bool,
    output: Output,
    hooks: Option<Hooks>,
    saver: Option<Saver>,
    unidentified: Unidentified,
    changes: http::Changes,
    silences: Silences,
    /// The detector's kind, for the announcement of a silence's end.
    detector: heartbeat_core::DetectorKind,
    history: Option<statuspage::SharedHistory>,
}

impl App {
    /// Prints `e` (with `--json`), with `time` as its time.
    fn print(&self, e: &Event, time: UnixTime) {
        self.output.stdout.line(e.to_json_at(time).to_string());
    }

    /// Counts a connection that never identified under `kind` (with `--json`), printing the
    /// kind's previous window if it ended.
    fn count_unidentified(&mut self, kind: &'static str, now: Now) {
        if let Some((e, time)) = self.unidentified.count(kind, now) {
            self.print(&e, time);
        }
    }
}

impl ServerApp for App {
    fn on_event(&mut self, e: &Event, now: Now) {
        if !log_refusal(&self.log, e, now.mono) {
            log_event(&self.log, e, now);
        }
        let silenced = match e {
            Event::Transition { client, .. } => self.silences.until(client),
            Event::Forgotten { client, .. } | Event::Evicted { client } => {
                self.silences.forget(client);
                None
            }
            _ => None,
        };
        match (&self.hooks, silenced) {
            (Some(hooks), None) => hooks.notify(e, now),
            (_, Some(until)) => silence::log_silenced(&self.log, e, until, now),
            (None, None) => {}
        }
        if self.json {
            match e {
                Event::Disconnected {
                    client: None,
                    reason,
                    ..
                } => self.count_unidentified(reason.label(), now),
                _ if silenced.is_some() => {
                    let mut json = e.to_json_at(now.unix);
                    json["silenced_until"] = silenced.map(silence::secs).into();
                    self.output.stdout.line(json.to_string());
                }
                _ => self.print(e, now.unix),
            }
        }
        self.changes.note(e);
        if let Some(history) = &self.history {
            history.lock().handle_event(e, now);
        }
    }

    fn on_refused(&mut self, refusal: Refusal, _peer: SocketAddr, now: Now) {
        if self.json {
            self.count_unidentified(refusal.label(), now);
        }
    }

    fn next_wake(&self) -> Option<std::time::Instant> {
        let saver = self.saver.as_ref().and_then(|s| s.next_wake());
        let unidentified = self.unidentified.next_flush();
        let silence = self.silences.next_end();
        saver.into_iter().chain(unidentified).chain(silence).min()
    }

    fn on_wake(&mut self, server: &mut Server, now: Now) {
        if let Some(saver) = self.saver.as_mut() {
            saver.on_wake(server, now);
        }
        for (e, time) in self.unidentified.flush(now) {
            self.print(&e, time);
        }
        let ended = self.silences.take_ended(now);
        if !ended.is_empty() {
            // Kept ended: a restart must not announce them again.
            self.silences.save_soon();
        }
        for client in ended {
            let Some(json) = silence::ended(server, &client, self.detector, &self.log, now) else {
                continue;
            };
            if let Some(hooks) = &self.hooks {
                hooks.notify_json(&json, now);
            }
            if self.json {
                self.output.stdout.line(json.to_string());
            }
        }
    }
}

/// Runs the server on `listener` (plaintext or TLS) and the listeners `more` makes, one more
/// thread each (`--threads`), with `app` in its loop; hands back the server and the app.
async fn serve_on<L: Listener + 'static>(
    listener: L,
    more: Vec<MakeListener<L>>,
    server: Server,
    options: ServerOptions,
    control: ControlReceiver,
    stop: impl Future<Output = ()>,
    app: App,
) -> Result<(Server, App), NetError> {
    run_server_threads(
        listener,
        more,
        server,
        options,
        control,
        SystemClock,
        stop,
        app,
    )
    .await
}
