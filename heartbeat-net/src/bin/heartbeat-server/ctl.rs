//! `heartbeat-server ctl`: maintenance and decommissioning on a running server, over a local
//! control socket.
//!
//! ```text
//! heartbeat-server ctl silence web-2 --until 14:00   # a maintenance window (silence.rs)
//! heartbeat-server ctl unsilence web-2               # ended early
//! heartbeat-server ctl forget web-2                  # decommissioned: gone now
//! heartbeat-server ctl list                          # the silences and their ends
//! ```
//!
//! # The socket
//! A Unix stream socket, `--control-socket PATH`, by default `control.sock` in `--state-dir`
//! (without either the server has none). Its directory is checked as the state directory is
//! (this user's or root's, writable by no one else); the socket is made mode 0600 and each
//! connection's peer must run as the server's user or as root (`SO_PEERCRED`). A socket file
//! left by a server that died is replaced; one another server answers on is an error (exit 2).
//! The file is removed at a clean stop.
//!
//! # The protocol
//! One JSON request line, one JSON answer line, then the server closes:
//! `{"op":"silence","client":"web-2","until":1765000000.0}` (Unix seconds), `{"op":"unsilence",
//! "client":"web-2"}`, `{"op":"forget","client":"web-2"}`, `{"op":"list"}`; the answer is
//! `{"ok":true,"message":"...","silences":[{"client":"web-2","until":1765000000.0}]}`. The
//! server reads at most [`MAX_REQUEST`] bytes for at most [`IO_TIMEOUT`], serves
//! [`MAX_AT_ONCE`] connections at once (one more is closed at once), and carries each request
//! out as one request to its loop ([`ServerControl::update`]): nothing here waits on the loop
//! or holds it up.
//!
//! `ctl` exits 0 when the server did it, 1 when it refused (an unknown client, a client still
//! expected...), 2 for a usage error or when it cannot reach the server; each with one line.

use std::io::{self, BufRead as _, BufReader, Write as _};
use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::os::unix::net::UnixStream as StdStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Local, LocalResult, NaiveTime, TimeZone as _};
use heartbeat_core::server::ForgetError;
use heartbeat_core::units::{fmt_duration, parse_duration};
use heartbeat_core::{ClientId, ClientKey, Liveness, Now, UnixTime};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tracing::Level;

use super::silence::{self, MAX_SILENCE, Saved, Silences, fmt_time, local};
use heartbeat_net::keys::{self, KeyFileError};
use heartbeat_net::logsummary::PeerLine;
use heartbeat_net::{Clock as _, LogSummary, ServerControl, SystemClock, mono_now};

/// The socket's name in the state directory.
pub(crate) const SOCKET: &str = "control.sock";

/// The longest request line the server reads.
pub(crate) const MAX_REQUEST: usize = 4096;

/// How long the server waits for a request line, and for its answer to be taken.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// Connections served at once.
pub(crate) const MAX_AT_ONCE: usize = 4;

/// How long a request waits for the server's loop.
const LOOP_TIMEOUT: Duration = Duration::from_secs(5);

/// How long `ctl` waits for the server's answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);

/// The longest answer `ctl` reads (`list` of many silences).
const MAX_ANSWER: u64 = 16 << 20;

// ---- the command ----

/// Maintenance and decommissioning on a running server, through its control socket (the
/// server's --control-socket, by default control.sock in its --state-dir). Run it as the
/// server's user or as root. Exit 0 done, 1 refused, 2 usage error or no server to talk to.
#[derive(Debug, clap::Args)]
pub(crate) struct CtlArgs {
    /// The server's control socket (its --control-socket). Default: control.sock in
    /// --state-dir.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,

    /// The server's --state-dir, whose control.sock to use (the Debian package's is
    /// /var/lib/heartbeat).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/var/lib/heartbeat",
        conflicts_with = "socket"
    )]
    state_dir: PathBuf,

    #[command(subcommand)]
    what: CtlCommand,
}

/// What `ctl` asks the server.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum CtlCommand {
    /// Silence client ID until WHEN (a maintenance window): it stays monitored and shown
    /// (/clients silenced_until, /metrics heartbeat_client_silenced 1), its transitions run no
    /// hook and no webhook, and the shipped alert rules leave it alone. If it is down when the
    /// silence ends, that is announced then, once. Kept across restarts with --state-dir.
    Silence {
        /// The client's id.
        #[arg(value_parser = client_id)]
        id: ClientId,
        /// When the silence ends: a duration from now (2h, 90m), a local time today (14:00
        /// or 14:00:30; tomorrow if it has passed), or an RFC 3339 time
        /// (2026-12-05T14:00:00+01:00). At most a year and a day ahead.
        #[arg(long, value_name = "WHEN")]
        until: String,
    },
    /// End client ID's silence now; if it is down, that is announced (one hook run).
    Unsilence {
        /// The client's id.
        #[arg(value_parser = client_id)]
        id: ClientId,
    },
    /// Forget client ID now (a decommissioned machine): gone from /clients, its /metrics
    /// series disappear (counted in heartbeat_clients_forgotten_total), and from the state; if
    /// it sends again it is a new client. Refused while it is connected, or listed in
    /// --expect (remove it there and reload the server first).
    Forget {
        /// The client's id.
        #[arg(value_parser = client_id)]
        id: ClientId,
    },
    /// List the silences and their ends.
    List,
}

fn client_id(s: &str) -> Result<ClientId, String> {
    ClientId::new(s).map_err(|e| e.to_string())
}

/// Runs `heartbeat-server ctl`; the exit code.
pub(crate) fn run(args: CtlArgs) -> ExitCode {
    let fail = |code: u8, line: &dyn std::fmt::Display| {
        eprintln!("heartbeat-server ctl: {line}");
        ExitCode::from(code)
    };
    let request = match &args.what {
        CtlCommand::Silence { id, until } => match parse_when(until, SystemClock.unix()) {
            Ok(t) => Request::Silence {
                client: id.to_string(),
                until: silence::secs(t),
            },
            Err(e) => return fail(2, &format!("--until {until:?}: {e}")),
        },
        CtlCommand::Unsilence { id } => Request::Unsilence {
            client: id.to_string(),
        },
        CtlCommand::Forget { id } => Request::Forget {
            client: id.to_string(),
        },
        CtlCommand::List => Request::List,
    };
    let path = args
        .socket
        .clone()
        .unwrap_or_else(|| args.state_dir.join(SOCKET));
    match ask(&path, &request) {
        Ok(answer) if answer.ok => {
            println!("{}", answer.message);
            ExitCode::SUCCESS
        }
        Ok(answer) => fail(1, &answer.message),
        Err(e) => fail(2, &e),
    }
}

/// Sends `request` to the socket at `path` and reads the answer; `Err` is the line to print.
fn ask(path: &Path, request: &Request) -> Result<Answer, String> {
    let show = path.display();
    let mut stream = StdStream::connect(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => format!(
            "no control socket at {show}: is heartbeat-server running with that --state-dir (or \
             --control-socket)?"
        ),
        io::ErrorKind::ConnectionRefused => {
            format!("nothing answers on {show}: the server that made it is not running")
        }
        io::ErrorKind::PermissionDenied => format!(
            "cannot connect to {show}: permission denied; run as the server's user or as root"
        ),
        _ => format!("cannot connect to {show}: {e}"),
    })?;
    let talk = |stream: &mut StdStream| -> io::Result<Vec<u8>> {
        stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
        stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
        let mut line = serde_json::to_vec(request).map_err(io::Error::other)?;
        line.push(b'\n');
        // A server that refuses this peer (its credentials) answers and closes at once,
        // perhaps before the request is written: the write then fails, but the answer is
        // already here to be read.
        if let Err(e) = stream.write_all(&line) {
            if !matches!(
                e.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ) {
                return Err(e);
            }
        }
        let mut answer = Vec::new();
        BufReader::new(io::Read::take(&mut *stream, MAX_ANSWER)).read_until(b'\n', &mut answer)?;
        Ok(answer)
    };
    let answer = talk(&mut stream).map_err(|e| format!("talking to the server on {show}: {e}"))?;
    if answer.is_empty() {
        return Err(format!(
            "the server on {show} closed without an answer (see its log)"
        ));
    }
    serde_json::from_slice(&answer)
        .map_err(|e| format!("the answer on {show} is not one ({e}): is it a heartbeat-server?"))
}

/// The time `when` says, seen at `now`: a duration from now, a local time today (tomorrow if
/// it has passed), or an RFC 3339 time.
pub(crate) fn parse_when(when: &str, now: UnixTime) -> Result<UnixTime, String> {
    let when = when.trim();
    if let Ok(d) = parse_duration(when) {
        return Ok(now.saturating_add(d));
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(when) {
        return to_unix(t.timestamp(), t.timestamp_subsec_nanos());
    }
    let time = NaiveTime::parse_from_str(when, "%H:%M")
        .or_else(|_| NaiveTime::parse_from_str(when, "%H:%M:%S"))
        .map_err(|_| {
            "expected a duration from now (2h, 90m), a local time today (14:00) or an RFC 3339 \
             time (2026-12-05T14:00:00+01:00)"
                .to_owned()
        })?;
    let now_local = local(now).ok_or("the time now is out of range")?;
    let mut day = now_local.date_naive();
    for _ in 0..3 {
        let at = match Local.from_local_datetime(&day.and_time(time)) {
            LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => Some(t),
            LocalResult::None => None, // skipped by a clock change: try the next day
        };
        if let Some(at) = at.filter(|at| at.timestamp() > now_local.timestamp()) {
            return to_unix(at.timestamp(), 0);
        }
        day = day.succ_opt().ok_or("the date is out of range")?;
    }
    Err("no such local time in the next days".to_owned())
}

fn to_unix(secs: i64, nanos: u32) -> Result<UnixTime, String> {
    let secs = u64::try_from(secs).map_err(|_| "a time before 1970")?;
    Ok(UnixTime::from_duration(Duration::new(secs, nanos)))
}

// ---- the protocol ----

/// One request line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum Request {
    Silence { client: String, until: f64 },
    Unsilence { client: String },
    Forget { client: String },
    List,
}

/// One answer line.
#[derive(Debug, Serialize, Deserialize)]
struct Answer {
    ok: bool,
    message: String,
    #[serde(default)]
    silences: Vec<Saved>,
}

impl Answer {
    fn done(message: String) -> Self {
        Self {
            ok: true,
            message,
            silences: Vec::new(),
        }
    }

    fn refused(message: String) -> Self {
        Self {
            ok: false,
            message,
            silences: Vec::new(),
        }
    }
}

// ---- the server's side ----

/// Why the control socket cannot be made (the server exits 2).
#[derive(Debug, thiserror::Error)]
pub(crate) enum BindError {
    /// Its directory is someone else's, or writable by others.
    #[error("--control-socket: {0}")]
    Unsafe(KeyFileError),
    /// Another server answers on it.
    #[error(
        "--control-socket {0}: another heartbeat-server answers on it; give each server its own"
    )]
    Live(PathBuf),
    /// Something else is at that path.
    #[error(
        "--control-socket {0}: it exists and is not a socket; remove it or choose another path"
    )]
    NotSocket(PathBuf),
    /// The system said no.
    #[error("--control-socket {path}: {what}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The error.
        source: io::Error,
    },
}

/// The bound control socket; its file is removed when this is dropped (a clean stop).
#[derive(Debug)]
pub(crate) struct ControlSocket {
    listener: Option<std::os::unix::net::UnixListener>,
    path: PathBuf,
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl ControlSocket {
    /// Binds the socket at `path`: its directory checked, a stale socket replaced, mode 0600.
    pub(crate) fn bind(path: &Path) -> Result<Self, BindError> {
        let io = |what| {
            move |source| BindError::Io {
                path: path.to_owned(),
                what,
                source,
            }
        };
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let meta = std::fs::File::open(dir)
            .and_then(|d| d.metadata())
            .map_err(io("cannot read its directory"))?;
        keys::check_private_dir(dir, &meta).map_err(BindError::Unsafe)?;
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => match StdStream::connect(path) {
                Ok(_) => return Err(BindError::Live(path.to_owned())),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    // not caused by a peer: at start
                    tracing::info!(
                        "Control socket {}: replacing the one a stopped server left",
                        path.display()
                    );
                    std::fs::remove_file(path).map_err(io("cannot remove the stale socket"))?;
                }
                Err(e) => return Err(io("cannot tell whether a server answers on it")(e)),
            },
            Ok(_) => return Err(BindError::NotSocket(path.to_owned())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("cannot look at it")(e)),
        }
        let listener =
            std::os::unix::net::UnixListener::bind(path).map_err(io("cannot bind it"))?;
        let this = Self {
            listener: Some(listener),
            path: path.to_owned(),
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(io("cannot make it mode 0600"))?;
        if let Some(l) = &this.listener {
            l.set_nonblocking(true).map_err(io("cannot set it up"))?;
        }
        Ok(this)
    }

    /// Its path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// What the control socket's requests work with.
#[derive(Debug)]
pub(crate) struct Ctl {
    /// Requests to the server's loop.
    pub(crate) control: ServerControl,
    /// The silences, and where they are kept.
    pub(crate) silences: Silences,
    /// The `--expect` file, for the refusal to forget an expected client.
    pub(crate) expect: Option<PathBuf>,
    /// The log.
    pub(crate) log: LogSummary,
    /// The server's user.
    uid: u32,
}

impl Ctl {
    /// What requests work with.
    pub(crate) fn new(
        control: ServerControl,
        silences: Silences,
        expect: Option<PathBuf>,
        log: LogSummary,
    ) -> Self {
        Self {
            control,
            silences,
            expect,
            log,
            uid: rustix::process::getuid().as_raw(),
        }
    }
}

/// Serves `socket` on the current runtime until the task is aborted (then the socket's file
/// is removed).
pub(crate) async fn serve(mut socket: ControlSocket, ctl: Arc<Ctl>) {
    let Some(listener) = socket.listener.take() else {
        return;
    };
    let listener = match UnixListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            // not caused by a peer: at start
            tracing::error!("control socket {}: {e}", socket.path().display());
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(MAX_AT_ONCE));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                ctl.line(
                    Level::WARN,
                    format_args!("control socket: accept failed: {e}"),
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            ctl.line(
                Level::WARN,
                format_args!(
                    "control socket: {MAX_AT_ONCE} requests at once already; closed another"
                ),
            );
            continue;
        };
        let ctl = Arc::clone(&ctl);
        tokio::spawn(async move {
            ctl.handle(stream).await;
            drop(slot);
        });
    }
}

impl Ctl {
    /// One log line of the control socket, through the summary (a local user can send many).
    fn line(&self, level: Level, text: std::fmt::Arguments<'_>) {
        self.log.peer(mono_now(), level, PeerLine::Control, text);
    }

    /// One connection: its peer checked, one request read, carried out and answered.
    async fn handle(&self, mut stream: UnixStream) {
        let answer = match stream.peer_cred() {
            Ok(cred) if cred.uid() == self.uid || cred.uid() == 0 => {
                match tokio::time::timeout(IO_TIMEOUT, read_request(&mut stream)).await {
                    Ok(Ok(line)) => match serde_json::from_slice::<Request>(&line) {
                        Ok(request) => self.execute(request).await,
                        Err(e) => {
                            self.line(
                                Level::WARN,
                                format_args!("control socket: not a request ({e}); refused"),
                            );
                            Answer::refused(format!("not a request: {e}"))
                        }
                    },
                    Ok(Err(e)) => {
                        self.line(Level::WARN, format_args!("control socket: {e}; refused"));
                        Answer::refused(e.to_string())
                    }
                    Err(_) => {
                        self.line(
                            Level::WARN,
                            format_args!(
                                "control socket: no request within {IO_TIMEOUT:?}; closed"
                            ),
                        );
                        return;
                    }
                }
            }
            Ok(cred) => {
                self.line(
                    Level::WARN,
                    format_args!(
                        "control socket: uid {} is neither the server's ({}) nor root; refused",
                        cred.uid(),
                        self.uid
                    ),
                );
                Answer::refused("only the server's user or root may use this socket".into())
            }
            Err(e) => {
                self.line(
                    Level::WARN,
                    format_args!("control socket: cannot read the peer's credentials: {e}"),
                );
                return;
            }
        };
        let mut line = serde_json::to_vec(&answer).unwrap_or_default();
        line.push(b'\n');
        let _ = tokio::time::timeout(IO_TIMEOUT, stream.write_all(&line)).await;
    }

    /// Carries out `request`.
    async fn execute(&self, request: Request) -> Answer {
        let answer = match request {
            Request::Silence { client, until } => self.silence(&client, until).await,
            Request::Unsilence { client } => self.unsilence(&client).await,
            Request::Forget { client } => self.forget(&client).await,
            Request::List => {
                let known = self.silences.clone();
                let pruned = self
                    .control
                    .update(LOOP_TIMEOUT, move |server, _| known.retain_known(server))
                    .await;
                if let Err(e) = pruned {
                    return Answer::refused(format!("the server did not carry it out: {e}"));
                }
                let now = SystemClock.unix();
                let silences = self.silences.list();
                let lines: Vec<String> = silences
                    .iter()
                    .map(|s| {
                        let until = silence::from_secs(s.until).unwrap_or(now);
                        format!("{} silenced until {}", s.client, fmt_time(until, now))
                    })
                    .collect();
                let message = if lines.is_empty() {
                    "No client is silenced.".to_owned()
                } else {
                    lines.join("\n")
                };
                return Answer {
                    ok: true,
                    message,
                    silences,
                };
            }
        };
        let level = if answer.ok { Level::INFO } else { Level::WARN };
        let verdict = if answer.ok { "done" } else { "refused" };
        self.line(
            level,
            format_args!("Control socket: {verdict}: {}", answer.message),
        );
        answer
    }

    async fn silence(&self, client: &str, until: f64) -> Answer {
        let id = match ClientId::new(client) {
            Ok(id) => id,
            Err(e) => return Answer::refused(format!("client id {client:?}: {e}")),
        };
        let Some(until) = silence::from_secs(until) else {
            return Answer::refused(format!("until {until}: not a time"));
        };
        let silences = self.silences.clone();
        let done = self
            .control
            .update(LOOP_TIMEOUT, move |server, now: Now| {
                let key = ClientKey::Id(id.clone());
                let Some(view) = server.client(&key) else {
                    return Err(unknown(&id));
                };
                if until <= now.unix {
                    return Err(format!(
                        "{} has passed: a silence ends in the future",
                        fmt_time(until, now.unix)
                    ));
                }
                if until.as_duration().saturating_sub(now.unix.as_duration()) > MAX_SILENCE {
                    return Err(format!(
                        "{}: a silence lasts a year and a day at most",
                        fmt_time(until, now.unix)
                    ));
                }
                let state = view.state();
                silences.silence(id.clone(), until, now);
                Ok(format!(
                    "{id} silenced until {}: monitored and shown, no hook or webhook for it \
                     until then (it is {state} now)",
                    fmt_time(until, now.unix)
                ))
            })
            .await;
        self.finish(done).await
    }

    async fn unsilence(&self, client: &str) -> Answer {
        let id = match ClientId::new(client) {
            Ok(id) => id,
            Err(e) => return Answer::refused(format!("client id {client:?}: {e}")),
        };
        let silences = self.silences.clone();
        let done = self
            .control
            .update(LOOP_TIMEOUT, move |server, _now| {
                let Some(_) = silences.unsilence(&id) else {
                    return Err(format!("{id} is not silenced"));
                };
                let state = server.client(&ClientKey::Id(id.clone())).map(|v| v.state());
                Ok(match state {
                    Some(Liveness::Down) => {
                        format!("{id} unsilenced; it is down: announced now (hooks run once)")
                    }
                    Some(state) => format!("{id} unsilenced; it is {state}"),
                    None => format!("{id} unsilenced"),
                })
            })
            .await;
        self.finish(done).await
    }

    async fn forget(&self, client: &str) -> Answer {
        let id = match ClientId::new(client) {
            Ok(id) => id,
            Err(e) => return Answer::refused(format!("client id {client:?}: {e}")),
        };
        let silences = self.silences.clone();
        let expect = self.expect.clone();
        let done = self
            .control
            .update(LOOP_TIMEOUT, move |server, now| {
                let key = ClientKey::Id(id.clone());
                match server.forget(now, &key) {
                    Ok(gone_for) => {
                        silences.forget(&key);
                        Ok(format!(
                            "Forgot {id} (gone for {}): gone from /clients, /metrics and the \
                             state; if it sends again it is a new client",
                            fmt_duration(Duration::from_secs(gone_for.as_secs()))
                        ))
                    }
                    Err(ForgetError::Expected(_)) => Err(format!(
                        "{id} is expected: remove it from the --expect file{}, reload the server \
                         (systemctl reload heartbeat-server, or kill -HUP its pid), then forget it",
                        expect
                            .as_ref()
                            .map_or_else(String::new, |p| format!(" ({})", p.display()))
                    )),
                    Err(ForgetError::Connected(_)) => Err(format!(
                        "{id} is connected: stop its heartbeat-client first (forgotten now, it \
                         would be back at once as a new client)"
                    )),
                    Err(ForgetError::Unknown(_)) => Err(unknown(&id)),
                    Err(e) => Err(e.to_string()),
                }
            })
            .await;
        self.finish(done).await
    }

    /// The answer to a request the loop carried out (or not); a change saved first.
    async fn finish(
        &self,
        done: Result<Result<String, String>, heartbeat_net::ControlError>,
    ) -> Answer {
        match done {
            Ok(Ok(message)) => match self.silences.save().await {
                Ok(()) => Answer::done(message),
                Err(e) => Answer::done(format!(
                    "{message} (but it could not be saved, so a restart would lose it: {e})"
                )),
            },
            Ok(Err(why)) => Answer::refused(why),
            Err(e) => Answer::refused(format!("the server did not carry it out: {e}")),
        }
    }
}

/// The refusal for a client the server does not know.
fn unknown(id: &ClientId) -> String {
    format!(
        "no client {id} is known to this server (a typo? GET /clients lists them); nothing done"
    )
}

/// Reads one request line: at most [`MAX_REQUEST`] bytes, up to a newline or the end.
async fn read_request(stream: &mut UnixStream) -> io::Result<Vec<u8>> {
    let mut line = Vec::with_capacity(256);
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(line);
        }
        line.extend_from_slice(&buf[..n]);
        if let Some(end) = line.iter().position(|&b| b == b'\n') {
            line.truncate(end);
            return Ok(line);
        }
        if line.len() > MAX_REQUEST {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a request longer than {MAX_REQUEST} bytes"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn when_is_a_duration_a_local_time_or_rfc_3339() {
        let now = UnixTime::from_duration(Duration::from_secs(1_765_000_000));
        let at = |s: &str| parse_when(s, now).map(|t| t.as_duration().as_secs());
        assert_eq!(at("2h"), Ok(1_765_000_000 + 7200));
        assert_eq!(at("90m"), Ok(1_765_000_000 + 5400));
        assert_eq!(at("2025-12-06T06:00:00Z"), Ok(1_765_000_800));
        assert_eq!(at("2025-12-06T07:00:00+01:00"), Ok(1_765_000_800));
        // A local time: within the next day, whatever the zone.
        for s in ["14:00", "00:00", "23:59:59"] {
            let t = at(s).unwrap();
            assert!(
                t > 1_765_000_000 && t <= 1_765_000_000 + 86_400 + 3600,
                "{s}: {t}"
            );
        }
        assert!(at("25:00").is_err());
        assert!(at("soon").unwrap_err().contains("a duration from now"));
        assert!(at("-1h").is_err());
    }
}
