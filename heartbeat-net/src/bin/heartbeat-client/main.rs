//! `heartbeat-client`: sends heartbeats to a `heartbeat-server` on a fixed, drift-free schedule.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use clap::{CommandFactory as _, Parser};
use heartbeat_core::client::{Client, Event, Exit, Failure};
use heartbeat_core::config::{Backoff, ClientConfig, keeps_connection};
use heartbeat_core::frame::AUTH_FAILED_MESSAGE;
use heartbeat_core::{ClientId, DisconnectReason, MAX_CLIENT_ID_LEN, Now, Secret, fmt_ms};
use heartbeat_net::cli;
use heartbeat_net::tls::{self, TlsConnector};
use heartbeat_net::{Clock as _, Connector, SystemClock, TcpConnector, keys, run_client};

/// Send periodic heartbeats (sequence number and timestamp) to a heartbeat server over TCP.
///
/// Exits 0 after --count heartbeats, the last one acknowledged, or on Ctrl-C / SIGTERM; 1 when
/// the last of --count is not acknowledged in time, when authentication fails, when the server
/// and this client disagree on --tls (the line says which to add or drop), when the server
/// cannot be reached or goes away (unless --reconnect), or refuses this client's --id because
/// another client holds it. With several --server, it keeps going while one is reachable and
/// exits 1 only when every server failed.
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

    /// Ask the server for interval advice and follow it: the server may advise an interval
    /// (from its --client-settings, or what its --target-detection needs), and the client
    /// switches to it, clamped into --interval-min..--interval-max, from its next heartbeat on,
    /// telling the server. Needs --interval-min or --interval-max. A server without advice is
    /// asked once, then not again (one warning). Off by default: the interval never changes.
    #[arg(long, conflicts_with = "legacy")]
    follow_advice: bool,

    /// With --follow-advice: the shortest interval to follow, in milliseconds like --interval
    /// (1 to 86400000). Default: --interval.
    #[arg(long, allow_negative_numbers = true, requires = "follow_advice",
          value_parser = cli::int::<u64>(1, 86_400_000))]
    interval_min: Option<u64>,

    /// With --follow-advice: the longest interval to follow, in milliseconds like --interval
    /// (1 to 86400000). Default: --interval.
    #[arg(long, allow_negative_numbers = true, requires = "follow_advice",
          value_parser = cli::int::<u64>(1, 86_400_000))]
    interval_max: Option<u64>,

    /// Heartbeat to this server as well, HOST:PORT (an IPv6 address within square brackets);
    /// give it once per server, instead of --host and --port. Every server gets the same heartbeats
    /// (same id, same numbering), each over its own connection, acknowledged by each; the
    /// client logs which servers it lost and regained, and keeps going while any server is
    /// left: it exits 1 only when every one has failed. Default: --host and --port, one server.
    #[arg(long = "server", value_name = "HOST:PORT", value_parser = parse_server,
          conflicts_with_all = ["host", "port"])]
    server: Vec<Server>,

    /// This client's identity, kept across reconnects and restarts: 1 to 64 characters of
    /// A-Z a-z 0-9 . _ - : @ /. Default: the host name, e.g. web-01 (each run of the process
    /// has its own session, so the server tells restarts apart). Two clients on one host need
    /// an --id each: the server refuses a second live client with the same id, and the client
    /// then exits 1 saying so.
    #[arg(long, value_parser = parse_id)]
    id: Option<ClientId>,

    /// Send this many heartbeats, wait for the verdict on the last one (at most the ack
    /// timeout), then say goodbye and exit 0 once it is acknowledged, or 1 when it is not (or the
    /// server refused this client). Default: send until stopped.
    #[arg(long, allow_negative_numbers = true, value_parser = cli::int::<u64>(1, u64::MAX.into()))]
    count: Option<u64>,

    /// Reconnect when the server cannot be reached or goes away, with exponential backoff from
    /// 100 ms to 10 s (with jitter), keeping the identity and the sequence numbering. Off by
    /// default: the client then exits 1, as the seed did.
    #[arg(long)]
    reconnect: bool,

    /// Drop the connection when no acknowledgement came for this long (then reconnect with
    /// --reconnect, or exit 1), e.g. 30s or 1500ms; it must exceed --interval. Default: 5
    /// intervals, at least 2 s.
    #[arg(long, value_name = "DURATION", value_parser = cli::duration)]
    ack_timeout: Option<Duration>,

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

    /// Print the man page or a shell's completions (man, bash, zsh, fish) and exit: what the
    /// Debian package installs (deploy/debian/build.sh).
    #[arg(long, value_name = "WHAT", hide = true, exclusive = true)]
    generate: Option<cli::Generate>,
}

fn parse_id(s: &str) -> Result<ClientId, String> {
    ClientId::new(s).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let opt = Opt::parse_from(seed_args(std::env::args_os()));
    if let Some(what) = opt.generate {
        return cli::print_generated(Opt::command(), what);
    }
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
    let hosts: Vec<&str> = if opt.server.is_empty() {
        vec![&opt.host]
    } else {
        opt.server.iter().map(|s| s.host.as_str()).collect()
    };
    for host in hosts {
        let server_name = opt.tls_server_name.as_deref().unwrap_or(host);
        if tls.is_some() && rustls::pki_types::ServerName::try_from(server_name).is_err() {
            usage_error(format!(
                "invalid TLS server name {server_name:?}: expected a DNS name or an IP address"
            ));
        }
    }
    let Some(runtime) = heartbeat_net::app::runtime() else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(run(opt, key, tls)) {
        Ok(code) => code,
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
) -> anyhow::Result<ExitCode> {
    let stop = heartbeat_net::app::shutdown_signal()?;
    let id = match opt.id {
        Some(id) => id,
        None => default_id()?,
    };
    let interval = Duration::from_millis(opt.interval);
    let server_max_idle = Duration::from_secs(opt.server_max_idle);
    let per_beat = !keeps_connection(interval, server_max_idle);
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
        .server_max_idle(server_max_idle)?
        .session(random_u64()?);
    let config = match opt.ack_timeout {
        // The core's rule (above the interval), said as a bad flag value (exit 2).
        Some(timeout) => config
            .ack_timeout(timeout)
            .unwrap_or_else(|e| usage_error(format!("--ack-timeout: {e}"))),
        None => config,
    };
    let config = if opt.follow_advice {
        let min = Duration::from_millis(opt.interval_min.unwrap_or(opt.interval));
        let max = Duration::from_millis(opt.interval_max.unwrap_or(opt.interval));
        config.follow_advice(min, max)?
    } else {
        config
    };
    let servers = if opt.server.is_empty() {
        vec![Server {
            host: opt.host,
            port: opt.port,
        }]
    } else {
        opt.server
    };
    let several = servers.len() > 1;
    // One schedule for every server: the same heartbeat number at the same time on each.
    let origin = SystemClock.now();
    let status = Rc::new(RefCell::new(Reach::new(servers.len())));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let local = tokio::task::LocalSet::new();
    let mut runs = tokio::task::JoinSet::new();
    for (index, server) in servers.iter().enumerate() {
        let mut client = Client::new(config.clone().rng_seed(random_u64()?), origin);
        if several {
            client.start_schedule(origin.mono);
        }
        let mut stop = stop_rx.clone();
        let stopped = async move {
            let _ = stop.wait_for(|&s| s).await;
        };
        let log = Logger {
            server: server.clone(),
            index,
            several,
            status: status.clone(),
            acked: Cell::new(false),
            legacy: opt.legacy,
        };
        let tcp = TcpConnector::new(server.host.clone(), server.port);
        match &tls {
            Some(tls) => {
                let name = opt.tls_server_name.as_deref().unwrap_or(&server.host);
                let connector = TlsConnector::new(tcp, tls.clone(), name)?;
                runs.spawn_local_on(run_with(connector, client, stopped, log), &local);
            }
            None => {
                runs.spawn_local_on(run_with(tcp, client, stopped, log), &local);
            }
        }
    }
    let exits = local
        .run_until(async move {
            let mut stop = std::pin::pin!(stop);
            let mut stopping = false;
            let mut exits = Vec::new();
            loop {
                tokio::select! {
                    () = &mut stop, if !stopping => {
                        stopping = true;
                        let _ = stop_tx.send(true);
                    }
                    done = runs.join_next() => match done {
                        Some(done) => exits.push(done??),
                        None => break,
                    },
                }
            }
            anyhow::Ok(exits)
        })
        .await?;
    Ok(exit_code(&servers, exits))
}

/// A server to heartbeat to, from `--server HOST:PORT` or `--host` and `--port`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Server {
    host: String,
    port: u16,
}

impl std::fmt::Display for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// `HOST:PORT`, `[IPV6]:PORT`; the port as every numeric flag is read.
fn parse_server(s: &str) -> Result<Server, String> {
    let (host, port) = s
        .trim()
        .rsplit_once(':')
        .ok_or("expected HOST:PORT, e.g. monitor.example.net:6510 or [::1]:6510")?;
    let host = match host.strip_prefix('[') {
        Some(v6) => v6
            .strip_suffix(']')
            .ok_or("an IPv6 address needs its closing ]")?,
        None if host.contains(':') => {
            return Err("write an IPv6 address in brackets: [::1]:6510".into());
        }
        None => host,
    };
    if host.is_empty() {
        return Err("the host is empty".into());
    }
    let port = cli::int::<u16>(0, 65_535)(port).map_err(|e| format!("port: {e}"))?;
    Ok(Server {
        host: host.to_owned(),
        port,
    })
}

/// The exit code from how each server's client ended: with one server, 0 for a success and 1
/// for a failure (saying why); with several, 1 only when every one of them failed.
fn exit_code(servers: &[Server], exits: Vec<(usize, Exit)>) -> ExitCode {
    let mut failures = 0;
    for (index, exit) in &exits {
        let Exit::Failed(failure) = exit else {
            continue;
        };
        failures += 1;
        let prefix = if servers.len() > 1 {
            format!("[{}] ", servers[*index])
        } else {
            String::new()
        };
        tracing::error!("{prefix}{failure}");
        if let Some(hint) = hint(failure) {
            tracing::error!("{prefix}{hint}");
        }
    }
    if failures == exits.len() && failures > 0 {
        if servers.len() > 1 {
            tracing::error!("Every server is gone");
        }
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// What to do about a failure, when the failure's own line does not say it.
fn hint(failure: &Failure) -> Option<&'static str> {
    match failure {
        Failure::Lost(DisconnectReason::AuthRequired) => {
            Some("Start the client with --auth-key-file FILE to authenticate")
        }
        Failure::Lost(DisconnectReason::ServerError(m)) if m == AUTH_FAILED_MESSAGE => Some(
            "Authentication failed: the key in --auth-key-file is not the one the server's \
             --auth-keys lists for this --id",
        ),
        _ => None,
    }
}

/// Runs one server's client over `connector` (plaintext or TLS), logging its events; returns
/// the server's index with how the client ended.
async fn run_with<C: Connector>(
    connector: C,
    client: Client,
    stop: impl Future<Output = ()>,
    log: Logger,
) -> anyhow::Result<(usize, Exit)> {
    let index = log.index;
    let exit = run_client(connector, client, SystemClock, stop, |e, now| {
        log.event(e, now)
    })
    .await?;
    Ok((index, exit))
}

/// The host name, cut down to the identity's character set and length: stable across restarts
/// of the client (its session nonce tells the runs apart), so a restarted client is the same
/// client to the server.
fn default_id() -> anyhow::Result<ClientId> {
    let uname = rustix::system::uname();
    let host = uname.nodename().to_string_lossy();
    Ok(ClientId::new(&id_from_host(&host))?)
}

fn id_from_host(host: &str) -> String {
    let name: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '@' | '/') {
                c
            } else {
                '-'
            }
        })
        .take(MAX_CLIENT_ID_LEN)
        .collect();
    if name.is_empty() {
        "client".to_owned()
    } else {
        name
    }
}

/// [`heartbeat_net::app::random_u64`], as an error that says what failed.
fn random_u64() -> anyhow::Result<u64> {
    heartbeat_net::app::random_u64().map_err(|e| anyhow::anyhow!("cannot read randomness: {e}"))
}

/// Which servers are connected, for the lost and regained lines.
#[derive(Debug)]
struct Reach {
    connected: Vec<bool>,
    /// Connected at least once, so that a connect after a loss is a regain.
    ever: Vec<bool>,
}

impl Reach {
    fn new(servers: usize) -> Self {
        Self {
            connected: vec![false; servers],
            ever: vec![false; servers],
        }
    }

    fn reachable(&self) -> String {
        let up = self.connected.iter().filter(|&&c| c).count();
        format!("{up} of {} servers reachable", self.connected.len())
    }
}

/// The log of one server's client: the seed's lines, kept recognisable, plus what the seed
/// could not see; prefixed with `[HOST:PORT]` when there are several servers.
struct Logger {
    server: Server,
    index: usize,
    several: bool,
    status: Rc<RefCell<Reach>>,
    /// A heartbeat was acknowledged on the current connection.
    acked: Cell<bool>,
    /// The legacy format: no acks come.
    legacy: bool,
}

/// What the server did wrong, in words for the log, when a connection ended by a fault of the
/// server that the seed's line ("Server may have abruptly closed the connection (REASON)")
/// does not name plainly; `acked` tells whether the connection carried an acknowledged
/// heartbeat (always true in the legacy format, which has no acks). Until a connection has
/// carried acknowledged heartbeats for an ack timeout, every loss of it makes the next reconnect
/// wait longer.
fn server_fault(reason: &DisconnectReason, acked: bool) -> Option<String> {
    match reason {
        DisconnectReason::Protocol(e) => Some(format!("The server broke the protocol: {e}")),
        DisconnectReason::AckTimeout(d) => Some(format!(
            "The server acknowledged no heartbeat for {} (it is not reading them, or it is stuck \
             or unreachable)",
            fmt_ms(*d)
        )),
        DisconnectReason::ClosedByPeer if !acked => {
            Some("The server closed the connection before it acknowledged any heartbeat".to_owned())
        }
        _ => None,
    }
}

impl Logger {
    fn event(&self, e: &Event, _now: Now) {
        let server = &self.server;
        let p = if self.several {
            format!("[{server}] ")
        } else {
            String::new()
        };
        match e {
            Event::Connected { attempt } => {
                self.acked.set(false);
                tracing::info!("{p}Successfully connected to {server}");
                if *attempt > 0 {
                    tracing::debug!("{p}after {attempt} failed attempt(s)");
                }
                let mut reach = self.status.borrow_mut();
                let again = reach.ever[self.index];
                reach.connected[self.index] = true;
                reach.ever[self.index] = true;
                if self.several && again {
                    tracing::info!("{p}Regained server {server}: {}", reach.reachable());
                }
            }
            Event::Sent { seq, at, late } => {
                tracing::info!(
                    "{p}Sequence #{seq}: Sending heartbeat at {}.",
                    at.display_secs(4)
                );
                tracing::debug!(
                    "{p}Heartbeat #{seq} went out {} after its slot",
                    fmt_ms(*late)
                );
            }
            Event::Acked { seq, rtt, received } => {
                self.acked.set(true);
                tracing::debug!(
                    "{p}Heartbeat #{seq} acknowledged: RTT {} (server received it at {})",
                    fmt_ms(*rtt),
                    received.display_secs(4)
                )
            }
            Event::Welcomed => tracing::debug!("{p}Server accepted the HELLO"),
            Event::AdviceRefused { message } => tracing::warn!(
                "{p}Server gives no advice; following none (it refused the request: {message})"
            ),
            Event::Advised { interval, adopt } if interval == adopt => {
                tracing::info!("{p}Server advises an interval of {}", fmt_ms(*interval))
            }
            Event::Advised { interval, adopt } => tracing::info!(
                "{p}Server advises an interval of {}; following {} (--interval-min/--interval-max)",
                fmt_ms(*interval),
                fmt_ms(*adopt)
            ),
            Event::IntervalChanged { from, to, seq } => tracing::info!(
                "{p}Sending every {} from heartbeat #{seq} on (was {}), as the server advised",
                fmt_ms(*to),
                fmt_ms(*from)
            ),
            Event::ServerSilent { silence } => tracing::warn!(
                "{p}Server silent: no acknowledgement for {}; it may be down or unreachable",
                fmt_ms(*silence)
            ),
            Event::Stalled { late } => tracing::warn!(
                "{p}This client was stalled for {:.1} s (its process did not run: stopped, \
                 suspended, or starved of CPU); the server's silence is counted from now",
                late.as_secs_f64()
            ),
            Event::Skipped { first, last } => tracing::warn!(
                "{p}Heartbeats #{first}-#{last} were not sent (disconnected, or this process was \
                 stalled)"
            ),
            Event::ConnectFailed {
                reason,
                retry_in: Some(d),
                ..
            } => tracing::warn!(
                "{p}Failed to connect to server: {reason}; retrying in {}",
                fmt_ms(*d)
            ),
            Event::Disconnected {
                reason: DisconnectReason::UntilNextBeat,
                retry_in: Some(d),
            } => tracing::info!(
                "{p}Heartbeat acknowledged; connection closed until the next one, due in {}",
                fmt_ms(*d)
            ),
            Event::Disconnected { reason, retry_in } => {
                if let Some(fault) = server_fault(reason, self.legacy || self.acked.get()) {
                    tracing::warn!("{p}{fault}");
                }
                let mut reach = self.status.borrow_mut();
                reach.connected[self.index] = false;
                match retry_in {
                    Some(d) => tracing::warn!(
                        "{p}Server may have abruptly closed the connection ({reason}); \
                         reconnecting in {}",
                        fmt_ms(*d)
                    ),
                    // Giving up: the exit status line says why.
                    None => tracing::debug!("{p}{e}"),
                }
                if self.several {
                    let then = match retry_in {
                        Some(_) => "reconnecting",
                        None => "giving up on it",
                    };
                    tracing::warn!(
                        "{p}Lost server {server} ({reason}); {then}: {}",
                        reach.reachable()
                    );
                }
            }
            Event::ConnectFailed { retry_in: None, .. } => tracing::debug!("{p}{e}"),
            Event::Finished { sent, acked } => {
                tracing::info!("{p}Done: sent {sent} heartbeat(s), {acked} acknowledged")
            }
            other => tracing::info!("{p}{other}"),
        }
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
    fn the_default_id_is_the_host_name_made_valid() {
        assert_eq!(id_from_host("web-01\n"), "web-01");
        assert_eq!(id_from_host("host name+x"), "host-name-x");
        assert_eq!(id_from_host(""), "client");
        assert_eq!(id_from_host(&"h".repeat(100)).len(), MAX_CLIENT_ID_LEN);
        assert!(default_id().is_ok());
    }

    #[test]
    fn servers_are_host_and_port() {
        let s = |text: &str| parse_server(text).map(|s| s.to_string());
        assert_eq!(s("a.example:6510").unwrap(), "a.example:6510");
        assert_eq!(s("[::1]:7").unwrap(), "[::1]:7");
        assert_eq!(s(" 127.0.0.1:+7 ").unwrap(), "127.0.0.1:7");
        assert!(s("::1:7").unwrap_err().contains("brackets"));
        assert!(s("nohost").is_err());
        assert!(s(":7").is_err());
        assert!(s("a:70000").unwrap_err().contains("at most 65535"));
        let opt = Opt::try_parse_from(["c", "--server", "a:1", "--server", "b:2"]).unwrap();
        assert_eq!(opt.server.len(), 2);
        assert!(Opt::try_parse_from(["c", "--server", "a:1", "-p", "7"]).is_err());
    }
}
