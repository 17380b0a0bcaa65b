//! `heartbeat-load`: the load generator that measures a heartbeat server, and the sink to
//! compare it with (as redis-benchmark and wrk are for their servers).
//!
//! - [`run_load`]: N connections (v1 ids `load-0..N`, or the legacy format), each sending on
//!   its own drift-free grid, phases spread evenly over the interval; reports offered and
//!   achieved heartbeats/s, acks, ack round trips and the CPU time and memory of watched
//!   processes over the measured window ([`LoadReport`](report::LoadReport)).
//! - [`run_sink`]: a bare read-and-discard server that counts heartbeats by their boundaries
//!   ([`BeatCounter`](count::BeatCounter)), the floor for "server CPU per heartbeat".
//! - [`schedule`]: when each connection connects and sends. `/proc` readings and the open-file
//!   limit are the library's ([`heartbeat_net::process`]), which the server reads too.

mod ack;
mod count;
mod generator;
mod report;
mod schedule;
mod sink;

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, CommandFactory as _, Parser, Subcommand};
use heartbeat_net::cli;
use heartbeat_net::process::NofileLimit;
use heartbeat_net::{SystemClock, TcpListener};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use generator::{LoadConfig, LoadError, Phase, Progress, run_load};
use sink::{SinkCount, SinkReason, run_sink};

/// Generate heartbeat load against a heartbeat server and measure it: N connections, each
/// sending on a drift-free grid (phases spread evenly over the interval), for a measured window
/// that starts after every connection is set up.
///
/// Reports offered and achieved heartbeats/s, acks and their round trip (p50, p99, p99.9, max),
/// connect failures, disconnects and errors, and for each --watch-pid process its CPU time per
/// heartbeat and its memory. A progress line runs on stderr (on a terminal); the report goes to
/// stdout.
///
/// `heartbeat-load sink` runs the floor to compare the server with.
///
/// Exit status: 0 when the run completed, 1 when it could not start (no connection at all, a
/// process to watch is missing), 2 for a usage error, 130 when stopped by Ctrl-C or SIGTERM
/// (the report so far is printed when the window had opened).
#[derive(Debug, Parser)]
#[command(
    name = "heartbeat-load",
    version,
    args_conflicts_with_subcommands = true
)]
struct Opt {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    load: LoadArgs,

    /// Print the man page or a shell's completions (man, bash, zsh, fish) and exit: what the
    /// Debian package installs (deploy/debian/build.sh).
    #[arg(long, value_name = "WHAT", hide = true, exclusive = true)]
    generate: Option<cli::Generate>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the sink, the floor to measure heartbeat-server against.
    ///
    /// A bare read-and-discard server: it counts heartbeats (message boundaries of either
    /// format, no parsing beyond that) and acks nothing. It reports its count on stderr every
    /// --every seconds (when it changed) and when the last open connection closes, and the final
    /// count on stdout when stopped by Ctrl-C or SIGTERM (exit 0).
    Sink(SinkArgs),
}

#[derive(Debug, Args)]
struct LoadArgs {
    /// IP address or host name of the server.
    #[arg(short = 'H', long, default_value = "localhost")]
    host: String,

    /// TCP port of the server, 0 to 65535.
    #[arg(short, long, default_value_t = 6510, allow_negative_numbers = true,
          value_parser = cli::int::<u16>(0, 65_535))]
    port: u16,

    /// Connections to open, one client each (v1 ids load-0, load-1, and so on), 1 to 1,000,000.
    /// Each needs an open file here and one in the server: see --source-addrs beyond about
    /// 28,000.
    #[arg(short, long, default_value_t = 100, allow_negative_numbers = true,
          value_parser = cli::int::<u32>(1, 1_000_000))]
    clients: u32,

    /// Time between one client's heartbeats in milliseconds, 1 to 86,400,000.
    #[arg(short, long, default_value_t = 1000, allow_negative_numbers = true,
          value_parser = cli::int::<u64>(1, 86_400_000))]
    interval: u64,

    /// Length of the measured window in seconds (decimals allowed), more than 0.
    #[arg(long, default_value = "10", allow_negative_numbers = true, value_parser = cli::secs(false))]
    duration: Duration,

    /// Seconds (decimals allowed) over which the connections are opened, evenly; 0 opens them
    /// all at once. The measured window opens after it, once every connect attempt has ended.
    #[arg(long, default_value = "0", allow_negative_numbers = true, value_parser = cli::secs(true))]
    ramp: Duration,

    /// Speak the seed's legacy text format (no HELLO, no acks) instead of v1. Off by default.
    #[arg(long)]
    legacy: bool,

    /// Spread the connections over the loopback source addresses 127.0.0.1 to 127.0.0.K
    /// (round robin, each socket bound before connecting), 1 to 254. Each address has its own
    /// ephemeral ports (about 28,000 with Linux's default range), so K addresses allow K times
    /// as many connections to one server port. Binding searches for a free port, which gets
    /// slow (seconds for 19,000 sockets) while earlier runs' sockets sit in TIME_WAIT (60 s).
    /// Default 1: no binding, the kernel picks the source.
    #[arg(long, value_name = "K", default_value_t = 1, allow_negative_numbers = true,
          value_parser = cli::int::<u8>(1, 254))]
    source_addrs: u8,

    /// Measure this process over the window: its CPU time (user + system) per heartbeat sent,
    /// in microseconds, and its current and peak resident memory. Repeat for several. Linux
    /// only (/proc). None by default; this process itself is always measured.
    #[arg(long, value_name = "PID", allow_negative_numbers = true,
          value_parser = cli::int::<u32>(1, u32::MAX.into()))]
    watch_pid: Vec<u32>,

    /// Print the report as one JSON object on stdout instead of text. Off by default.
    #[arg(long)]
    json: bool,

    /// Seconds (decimals allowed) one connect attempt may take before it counts as a connect
    /// failure.
    #[arg(long, default_value = "10", allow_negative_numbers = true, value_parser = cli::secs(false))]
    connect_timeout: Duration,

    /// Seconds (decimals allowed) a v1 connection waits for its outstanding acks after its
    /// last heartbeat, before it says BYE and closes. Only where the server answered HELLO with
    /// WELCOME: against the sink, connections close at once.
    #[arg(long, default_value = "5", allow_negative_numbers = true, value_parser = cli::secs(true))]
    drain_timeout: Duration,
}

#[derive(Debug, Args)]
struct SinkArgs {
    /// TCP port to listen on, 0 to 65535; 0 picks a free port (logged at startup).
    #[arg(short, long, default_value_t = 6510, allow_negative_numbers = true,
          value_parser = cli::int::<u16>(0, 65_535))]
    port: u16,

    /// Address or host name to listen on.
    #[arg(long, default_value = "localhost")]
    bind: String,

    /// Seconds (decimals allowed) between count reports; a report is skipped when nothing
    /// changed.
    #[arg(long, default_value = "1", allow_negative_numbers = true, value_parser = cli::secs(false))]
    every: Duration,

    /// Print every count as one JSON object per line on stdout, e.g.
    /// {"event":"idle","heartbeats":120,"connections":3,"open":0,"bytes":4567}, and a final
    /// {"event":"summary",...} on exit. Off by default: text on stderr, the final count on
    /// stdout.
    #[arg(long)]
    json: bool,

    /// Answer as a server must: WELCOME to each v1 HELLO and one ACK per heartbeat (the acks of
    /// one read in one write), stamped with the read's wall-clock time, and nothing else. The
    /// floor of a server that acknowledges; legacy clients get no bytes back.
    #[arg(long)]
    ack: bool,
}

fn main() -> ExitCode {
    let opt = Opt::parse();
    if let Some(what) = opt.generate {
        return cli::print_generated(Opt::command(), what);
    }
    heartbeat_net::app::init_tracing(false);
    let Some(runtime) = heartbeat_net::app::runtime() else {
        return ExitCode::FAILURE;
    };
    let result = match opt.command {
        Some(Command::Sink(args)) => runtime.block_on(sink(args)),
        None => runtime.block_on(load(opt.load)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Raises the open-file limit to the hard limit and says what came of it.
fn raise_nofile_limit(fds: u64) {
    match NofileLimit::raise() {
        Ok(limit) => {
            if limit.now != limit.before {
                tracing::info!(
                    "Open-file limit raised from {} to {}",
                    fmt_limit(limit.before),
                    fmt_limit(limit.now)
                );
            }
            if !limit.fits(fds) {
                tracing::warn!(
                    "{fds} connections need as many open files, but the limit is {} (hard limit \
                     {}): expect failures; raise the hard limit (ulimit -Hn, as root)",
                    fmt_limit(limit.now),
                    fmt_limit(limit.hard)
                );
            }
        }
        Err(e) => tracing::warn!("Cannot raise the open-file limit: {e}"),
    }
}

fn fmt_limit(l: Option<u64>) -> String {
    l.map_or_else(|| "unlimited".to_owned(), |n| n.to_string())
}

async fn load(args: LoadArgs) -> anyhow::Result<ExitCode> {
    let stop = heartbeat_net::app::shutdown_signal()?;
    raise_nofile_limit(u64::from(args.clients));
    let target = resolve(&args.host, args.port).await?;
    let source_addrs = if args.source_addrs > 1 {
        LoadConfig::loopback_sources(args.source_addrs)
    } else {
        Vec::new()
    };
    let config = LoadConfig {
        target,
        clients: args.clients as usize,
        interval: Duration::from_millis(args.interval),
        duration: args.duration,
        ramp: args.ramp,
        legacy: args.legacy,
        source_addrs,
        connect_timeout: args.connect_timeout,
        drain_timeout: args.drain_timeout,
        watch: args.watch_pid,
    };
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("a valid template"));
    let mut rate = Rate::default();
    let result = run_load(config, SystemClock, stop, |p| {
        bar.set_message(progress_line(p, &mut rate));
        bar.tick();
    })
    .await;
    bar.finish_and_clear();
    let report = match result {
        Ok(r) => r,
        Err(LoadError::Interrupted) => {
            tracing::warn!("Stopped before the measured window opened");
            return Ok(ExitCode::from(130));
        }
        Err(e) => return Err(e.into()),
    };
    let text = if args.json {
        format!("{}\n", report.to_json())
    } else {
        report.to_string()
    };
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
    Ok(if report.interrupted {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    })
}

/// The server's address, IPv4 first (so `localhost` means 127.0.0.1, as for the server).
async fn resolve(host: &str, port: u16) -> anyhow::Result<SocketAddr> {
    let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .with_context(|| format!("cannot resolve {host}"))?
        .collect();
    addrs.sort_by_key(SocketAddr::is_ipv6);
    addrs
        .first()
        .copied()
        .with_context(|| format!("{host} has no addresses"))
}

/// Heartbeats per second over the last half second or so (before that, since the window opened).
#[derive(Default)]
struct Rate {
    last: Option<(Duration, u64)>,
    per_s: f64,
}

impl Rate {
    fn update(&mut self, elapsed: Duration, sent: u64) -> f64 {
        if let Some((t, n)) = self.last {
            let dt = elapsed.saturating_sub(t).as_secs_f64();
            if dt >= 0.5 {
                self.per_s = sent.saturating_sub(n) as f64 / dt;
                self.last = Some((elapsed, sent));
            }
        } else {
            // Until half a second has passed: the average since the window opened.
            self.per_s = sent as f64 / elapsed.as_secs_f64().max(1e-3);
            if elapsed.as_secs_f64() >= 0.5 {
                self.last = Some((elapsed, sent));
            }
        }
        self.per_s
    }
}

fn progress_line(p: &Progress, rate: &mut Rate) -> String {
    let trouble = format!(
        "{} connect failures, {} disconnects, {} errors",
        p.connect_failures, p.disconnects, p.errors
    );
    match p.phase {
        Phase::Connecting => format!(
            "connecting: {}/{} open after {:.1} s; {trouble}",
            p.connected,
            p.clients,
            p.elapsed.as_secs_f64()
        ),
        Phase::Measuring => format!(
            "measuring {:.1} s: {:.0} heartbeats/s, {} sent, {} acked, rtt p99 {:.3} ms; \
             {trouble}",
            p.elapsed.as_secs_f64(),
            rate.update(p.elapsed, p.sent),
            p.sent,
            p.acks,
            p.rtt_p99_us as f64 / 1e3
        ),
        Phase::Draining => format!(
            "waiting for the last acks: {}/{} connections done, {} sent, {} acked",
            p.finished, p.clients, p.sent, p.acks
        ),
    }
}

async fn sink(args: SinkArgs) -> anyhow::Result<ExitCode> {
    let stop = heartbeat_net::app::shutdown_signal()?;
    // The sink holds as many connections as the server it stands in for.
    raise_nofile_limit(0);
    let listener = TcpListener::bind(&args.bind, args.port).await?;
    let port = listener
        .local_addr()
        .context("reading the bound address")?
        .port();
    // The server's wording, so whatever waits for the server's port finds the sink's too.
    tracing::info!("Sink, counting only. Awaiting connection from client on port {port}...");
    let json = args.json;
    let report = |c: SinkCount, event: &str| {
        if json {
            let mut v = serde_json::to_value(c).expect("counts serialise");
            v["event"] = event.into();
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{v}");
            let _ = out.flush();
        } else {
            tracing::info!(
                "{event}: {} heartbeats from {} connections ({} open), {} bytes",
                c.heartbeats,
                c.connections,
                c.open,
                c.bytes
            );
        }
    };
    let last = run_sink(listener, args.every, args.ack, stop, |c, why| {
        report(
            c,
            match why {
                SinkReason::Idle => "idle",
                SinkReason::Periodic => "count",
            },
        );
    })
    .await;
    if json {
        report(last, "summary");
    } else {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "heartbeats {} connections {} bytes {}",
            last.heartbeats, last.connections, last.bytes
        );
    }
    Ok(ExitCode::SUCCESS)
}
