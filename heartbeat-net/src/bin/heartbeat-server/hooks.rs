//! Alerts: on every liveness transition, run a command (`--on-transition`) and POST a webhook
//! (`--webhook`), without ever holding up the monitor.
//!
//! The server's loop only queues an alert ([`Hooks::notify`], `try_send` on a bounded queue of
//! `--hook-queue` alerts); a task of its own takes them in order and runs at most
//! `--hook-concurrency` hooks at once, each for at most `--hook-timeout`. A command that takes
//! longer is killed with its whole process group (it runs in a group of its own, so a shell's
//! children go too); a webhook that takes longer is abandoned. When the queue is full the alert
//! is dropped. Failures, timeouts and drops are logged through the [`LogSummary`] (a line a
//! second per kind, then a count), and counted ([`HookCounts`], for `/metrics`).
//!
//! At shutdown ([`Hooks::shutdown`]) the queue drains for at most `--hook-timeout`; then the
//! runs still going are killed or abandoned (counted as timed out), the alerts still queued are
//! counted as dropped, and one line says how many were not delivered.
//!
//! # What a hook gets
//! The alert is the `transition` event exactly as `--json` prints it, e.g.
//! `{"client":"web-01","detector":"phi","event":"transition","from":"suspect","peer":"10.0.0.7:50312","since_last_ms":4512.3,"suspicion":8.012,"time":1752356183.576912,"to":"down"}`:
//! - the command (`sh -c CMD`) has each field in its environment as `HEARTBEAT_<FIELD>`:
//!   `HEARTBEAT_CLIENT`, `HEARTBEAT_FROM`, `HEARTBEAT_TO`, `HEARTBEAT_TIME` (Unix seconds),
//!   `HEARTBEAT_SINCE_LAST_MS`, `HEARTBEAT_DETECTOR`, `HEARTBEAT_SUSPICION`, `HEARTBEAT_PEER`
//!   and `HEARTBEAT_EVENT` (`transition`); a `null` is empty (`HEARTBEAT_FROM=unknown` with an
//!   empty `HEARTBEAT_SINCE_LAST_MS` is an expected client never seen). Its standard input and
//!   output are `/dev/null`; the start of its standard error is logged if it fails;
//! - a silenced client's transitions run no hook; when its silence ends while it is down, the
//!   hooks get one `transition` from `down` to `down` with `"silence_ended":true`
//!   (`HEARTBEAT_SILENCE_ENDED=true`), see `silence.rs`;
//! - the webhook gets the object as the body of a `POST` (`Content-Type: application/json`);
//!   a 2xx answer is success. `https://` is checked against the system's CA certificates
//!   (`SSL_CERT_FILE` and `SSL_CERT_DIR` are honoured).

use std::fmt;
use std::process::Stdio;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use heartbeat_core::Now;
use heartbeat_core::server::Event;
use http_body_util::Full;
use hyper::Uri;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tracing::Level;

use heartbeat_net::{LogSummary, mono_now};

/// How much of a failed command's standard error is kept for the log.
const STDERR_KEPT: usize = 512;

/// What the hooks did so far: for `/metrics`, `heartbeat_hook_runs_total{result="ok"|"failed"|
/// "timeout"}` (one run per command and per webhook call) and `heartbeat_hook_dropped_total`
/// (alerts dropped because the queue was full or the server was shutting down: each would have
/// run every configured hook).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct HookCounts {
    /// Runs that succeeded: exit status 0, or a 2xx answer.
    pub(crate) ok: u64,
    /// Runs that failed: another exit status, a command that could not start, a webhook that
    /// could not connect or answered otherwise.
    pub(crate) failed: u64,
    /// Runs killed or abandoned at the timeout (or at shutdown).
    pub(crate) timed_out: u64,
    /// Alerts dropped: the queue was full, or they were still queued when the shutdown's
    /// `--hook-timeout` ended.
    pub(crate) dropped: u64,
}

/// The hooks' settings, from the flags.
#[derive(Clone, Debug)]
pub(crate) struct HookOptions {
    /// `--on-transition`: run through `sh -c`.
    pub(crate) command: Option<String>,
    /// `--webhook`.
    pub(crate) webhook: Option<Webhook>,
    /// `--hook-concurrency`: hooks running at once at most.
    pub(crate) concurrency: usize,
    /// `--hook-queue`: alerts waiting at most.
    pub(crate) queue: usize,
    /// `--hook-timeout`: how long one run may take.
    pub(crate) timeout: Duration,
}

impl HookOptions {
    /// True when there is a hook to run.
    pub(crate) fn any(&self) -> bool {
        self.command.is_some() || self.webhook.is_some()
    }
}

/// A webhook URL: `http://` or `https://`, a host, an optional port and path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Webhook {
    uri: Uri,
    tls: bool,
    host: String,
    port: u16,
}

impl FromStr for Webhook {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let uri: Uri = s.parse().map_err(|e| format!("{s:?} is not a URL: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(format!("{s:?}: a webhook is an http:// or https:// URL")),
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("{s:?}: no host"))?;
        // A bracketed IPv6 address connects without its brackets.
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        Ok(Self {
            uri,
            tls,
            host,
            port,
        })
    }
}

impl fmt::Display for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.uri.fmt(f)
    }
}

/// One alert: the event's JSON line and the command's environment, made once.
#[derive(Debug)]
struct Alert {
    /// For log lines: `web-01 up->suspect`.
    what: String,
    json: String,
    env: Vec<(String, String)>,
}

impl Alert {
    fn new(json: &serde_json::Value) -> Self {
        let field = |k: &str| json[k].as_str().unwrap_or("-").to_owned();
        let env = json
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| {
                let value = match v {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Null => String::new(),
                    other => other.to_string(),
                };
                (format!("HEARTBEAT_{}", k.to_ascii_uppercase()), value)
            })
            .collect();
        Self {
            what: format!("{} {}->{}", field("client"), field("from"), field("to")),
            json: json.to_string(),
            env,
        }
    }
}

/// Reads the hooks' counts ([`Hooks::counter`]); clones share them.
#[derive(Clone, Debug)]
pub(crate) struct HookCounter(Arc<Counters>);

impl HookCounter {
    /// What the hooks did so far.
    pub(crate) fn counts(&self) -> HookCounts {
        let c = &self.0;
        HookCounts {
            ok: c.ok.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            timed_out: c.timed_out.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    ok: AtomicU64,
    failed: AtomicU64,
    timed_out: AtomicU64,
    dropped: AtomicU64,
}

/// The running hooks: a queue and the task that empties it. See the module docs.
#[derive(Debug)]
pub(crate) struct Hooks {
    tx: mpsc::Sender<Arc<Alert>>,
    counters: Arc<Counters>,
    log: LogSummary,
    queue: usize,
    /// `--hook-timeout`: also how long the queue drains at shutdown.
    timeout: Duration,
    abort: watch::Sender<bool>,
    dispatcher: tokio::task::JoinHandle<()>,
}

impl Hooks {
    /// Starts the hooks' task on the current runtime.
    pub(crate) fn start(options: HookOptions, log: LogSummary) -> Self {
        let (tx, rx) = mpsc::channel(options.queue.max(1));
        let (abort, aborted) = watch::channel(false);
        let counters = Arc::new(Counters::default());
        let tls = options
            .webhook
            .as_ref()
            .filter(|w| w.tls)
            .map(|_| webhook_tls());
        let runner = Runner {
            options: Arc::new(options.clone()),
            counters: Arc::clone(&counters),
            log: log.clone(),
            aborted,
            tls,
            flush_scheduled: std::sync::atomic::AtomicBool::new(false),
        };
        let dispatcher = tokio::spawn(runner.dispatch(rx));
        Self {
            tx,
            counters,
            log,
            queue: options.queue,
            timeout: options.timeout,
            abort,
            dispatcher,
        }
    }

    /// Queues the hooks of `event` if it is a transition; never waits. `now` is when it
    /// happened (its `time`).
    pub(crate) fn notify(&self, event: &Event, now: Now) {
        if !matches!(event, Event::Transition { .. }) {
            return;
        }
        self.notify_json(&event.to_json_at(now.unix), now);
    }

    /// Queues the hooks of an alert made already (the end of a silence while the client is
    /// down, see `silence.rs`: a `transition` object); never waits.
    pub(crate) fn notify_json(&self, json: &serde_json::Value, now: Now) {
        let alert = Alert::new(json);
        if let Err(e) = self.tx.try_send(Arc::new(alert)) {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            let alert = match &e {
                mpsc::error::TrySendError::Full(a) | mpsc::error::TrySendError::Closed(a) => a,
            };
            self.log.log_up_to(
                now.mono,
                Level::WARN,
                "hook alerts dropped (queue full)",
                1,
                format_args!(
                    "Hook queue full ({} alerts, --hook-queue): dropped the alert for {}",
                    self.queue, alert.what
                ),
            );
        }
    }

    /// A handle that reads the counts, for whoever publishes them.
    pub(crate) fn counter(&self) -> HookCounter {
        HookCounter(Arc::clone(&self.counters))
    }

    /// Stops taking alerts; what is queued or running gets `--hook-timeout` to finish. Then
    /// the runs still going are killed or abandoned (counted as timed out) and the alerts still
    /// queued are counted as dropped; one line says how many (a warning when some were not
    /// delivered). Returns the final counts.
    pub(crate) async fn shutdown(self) -> HookCounts {
        let Self {
            tx,
            counters,
            timeout,
            abort,
            mut dispatcher,
            ..
        } = self;
        let counter = HookCounter(counters);
        drop(tx);
        let (mut left, mut abandoned) = (0, 0);
        if tokio::time::timeout(timeout, &mut dispatcher)
            .await
            .is_err()
        {
            let before = counter.counts();
            let _ = abort.send(true);
            // The dispatcher counts what is queued as soon as it sees the abort; the runs it
            // waits for end at once (commands are killed, webhook calls abandoned).
            let _ = tokio::time::timeout(Duration::from_secs(1), dispatcher).await;
            let after = counter.counts();
            left = after.dropped - before.dropped;
            abandoned = after.timed_out - before.timed_out;
        }
        let c = counter.counts();
        let totals = format!(
            "hooks: {} ok, {} failed, {} timed out, {} alerts dropped",
            c.ok, c.failed, c.timed_out, c.dropped
        );
        if left > 0 || abandoned > 0 {
            tracing::warn!(
                "shutdown: {left} alerts not delivered within --hook-timeout {timeout:?}; counted \
                 in heartbeat_hook_dropped_total ({abandoned} runs still going abandoned, counted \
                 as timed out; {totals})"
            );
        } else {
            tracing::info!("shutdown: every queued alert was run ({totals})");
        }
        c
    }
}

/// What the hooks' task needs.
struct Runner {
    options: Arc<HookOptions>,
    counters: Arc<Counters>,
    log: LogSummary,
    aborted: watch::Receiver<bool>,
    tls: Option<tokio_rustls::TlsConnector>,
    /// A task will write the log summary when its window ends.
    flush_scheduled: std::sync::atomic::AtomicBool,
}

/// How one run ended.
#[derive(Debug)]
enum Outcome {
    Ok,
    Failed(String),
    TimedOut,
}

#[derive(Clone, Copy, Debug)]
enum Hook {
    Command,
    Webhook,
}

impl Runner {
    /// Takes alerts in order and runs each configured hook of each, at most `concurrency` at
    /// once; returns when the queue is closed and empty and every run has ended. On abort (the
    /// end of the shutdown's grace) it takes no more: what is queued, and an alert whose hooks
    /// had not all started, is counted as dropped.
    async fn dispatch(self, mut rx: mpsc::Receiver<Arc<Alert>>) {
        let this = Arc::new(self);
        let permits = Arc::new(Semaphore::new(this.options.concurrency.max(1)));
        let hooks: Vec<Hook> = [
            this.options.command.as_ref().map(|_| Hook::Command),
            this.options.webhook.as_ref().map(|_| Hook::Webhook),
        ]
        .into_iter()
        .flatten()
        .collect();
        let mut running = JoinSet::new();
        let mut aborted = this.aborted.clone();
        // Alerts not run (in full) when the abort came.
        let mut left = 0;
        'alerts: loop {
            // `biased`: once aborted, nothing more is taken even if alerts are ready.
            let alert = tokio::select! {
                biased;
                _ = aborted.wait_for(|a| *a) => break,
                alert = rx.recv() => match alert {
                    Some(alert) => alert,
                    None => break,
                },
            };
            for &hook in &hooks {
                let permit = tokio::select! {
                    biased;
                    _ = aborted.wait_for(|a| *a) => None,
                    permit = Arc::clone(&permits).acquire_owned() => permit.ok(),
                };
                let Some(permit) = permit else {
                    left += 1;
                    break 'alerts;
                };
                let (this, alert) = (Arc::clone(&this), Arc::clone(&alert));
                running.spawn(async move {
                    let outcome = this.run(hook, &alert).await;
                    this.record(hook, &alert, outcome);
                    drop(permit);
                });
                // Reap what has finished, so the set stays as small as the concurrency.
                while running.try_join_next().is_some() {}
            }
        }
        rx.close();
        while rx.try_recv().is_ok() {
            left += 1;
        }
        this.counters.dropped.fetch_add(left, Ordering::Relaxed);
        while running.join_next().await.is_some() {}
    }

    async fn run(&self, hook: Hook, alert: &Alert) -> Outcome {
        let timeout = self.options.timeout;
        match hook {
            Hook::Command => {
                let command = self.options.command.as_deref().unwrap_or_default();
                run_command(command, alert, timeout, self.aborted.clone()).await
            }
            Hook::Webhook => {
                let Some(webhook) = &self.options.webhook else {
                    return Outcome::Ok;
                };
                let mut aborted = self.aborted.clone();
                let post = post(webhook, self.tls.as_ref(), alert.json.clone());
                tokio::select! {
                    r = tokio::time::timeout(timeout, post) => match r {
                        Ok(Ok(())) => Outcome::Ok,
                        Ok(Err(why)) => Outcome::Failed(why),
                        Err(_) => Outcome::TimedOut,
                    },
                    _ = aborted.wait_for(|a| *a) => Outcome::TimedOut,
                }
            }
        }
    }

    /// Logs `line` of `kind` through the summary; when it is left out, makes sure the
    /// summary comes out when the window ends (the server's loop, which otherwise flushes it,
    /// may be asleep).
    fn log(self: &Arc<Self>, kind: &'static str, line: std::fmt::Arguments<'_>) {
        if self.log.log_up_to(mono_now(), Level::WARN, kind, 1, line) {
            return;
        }
        if self.flush_scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            if let Some(at) = this.log.next_flush() {
                tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
                this.log.flush(mono_now());
            }
            this.flush_scheduled.store(false, Ordering::Release);
        });
    }

    fn record(self: &Arc<Self>, hook: Hook, alert: &Alert, outcome: Outcome) {
        let name = match hook {
            Hook::Command => "--on-transition",
            Hook::Webhook => "--webhook",
        };
        let c = &self.counters;
        match outcome {
            Outcome::Ok => {
                c.ok.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("{name} for {}: ok", alert.what);
            }
            Outcome::Failed(why) => {
                c.failed.fetch_add(1, Ordering::Relaxed);
                self.log(
                    "hook failures",
                    format_args!("Hook {name} for {} failed: {why}", alert.what),
                );
            }
            Outcome::TimedOut => {
                c.timed_out.fetch_add(1, Ordering::Relaxed);
                self.log(
                    "hook timeouts",
                    format_args!(
                        "Hook {name} for {} did not finish within {:?} (--hook-timeout); killed",
                        alert.what, self.options.timeout
                    ),
                );
            }
        }
    }
}

/// Runs `sh -c command` with the alert in its environment, in a process group of its own; at
/// the timeout (or on abort) the whole group is killed.
async fn run_command(
    command: &str,
    alert: &Alert,
    timeout: Duration,
    mut aborted: watch::Receiver<bool>,
) -> Outcome {
    let mut child = match tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .envs(alert.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(e) => return Outcome::Failed(format!("cannot start /bin/sh: {e}")),
    };
    let group = child.id();
    let mut stderr = child.stderr.take();
    let mut kept = Vec::new();
    let work = async {
        let mut chunk = [0u8; 512];
        let wait = child.wait();
        tokio::pin!(wait);
        loop {
            tokio::select! {
                status = &mut wait => break status,
                n = read_opt(&mut stderr, &mut chunk) => match n {
                    Ok(n) if n > 0 => {
                        let room = STDERR_KEPT.saturating_sub(kept.len());
                        kept.extend_from_slice(&chunk[..n.min(room)]);
                    }
                    _ => stderr = None,
                },
            }
        }
    };
    let status = tokio::select! {
        r = tokio::time::timeout(timeout, work) => r.ok(),
        _ = aborted.wait_for(|a| *a) => None,
    };
    match status {
        Some(Ok(status)) if status.success() => Outcome::Ok,
        Some(Ok(status)) => {
            let err = String::from_utf8_lossy(&kept);
            let first = err.lines().next().unwrap_or_default().trim();
            if first.is_empty() {
                Outcome::Failed(format!("{status}"))
            } else {
                Outcome::Failed(format!("{status}: {first}"))
            }
        }
        Some(Err(e)) => Outcome::Failed(format!("waiting for it: {e}")),
        None => {
            if let Some(pid) = group.and_then(|p| i32::try_from(p).ok()) {
                kill_group(pid);
            }
            let _ = child.wait().await;
            Outcome::TimedOut
        }
    }
}

/// SIGKILL to the process group `pgid` (a hook's own: its leader's pid).
fn kill_group(pgid: i32) {
    // Never group 0 or 1 (the caller's own group, or every process).
    let Some(pid) = rustix::process::Pid::from_raw(pgid).filter(|p| !p.is_init()) else {
        return;
    };
    if let Err(e) = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL) {
        tracing::debug!("killing hook process group {pgid}: {e}");
    }
}

async fn read_opt<R: AsyncRead + Unpin>(
    r: &mut Option<R>,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    match r {
        Some(r) => r.read(buf).await,
        None => std::future::pending().await,
    }
}

/// The client side of TLS for `https://` webhooks: the system's CA certificates.
fn webhook_tls() -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::warn!("--webhook: reading the system's CA certificates: {e}");
    }
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        tracing::warn!("--webhook: no CA certificate found; https:// webhooks will fail");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// POSTs `body` to the webhook: one connection, HTTP/1.1 through hyper. `Ok` on a 2xx answer.
async fn post(
    webhook: &Webhook,
    tls: Option<&tokio_rustls::TlsConnector>,
    body: String,
) -> Result<(), String> {
    let tcp = tokio::net::TcpStream::connect((webhook.host.as_str(), webhook.port))
        .await
        .map_err(|e| format!("connecting to {}:{}: {e}", webhook.host, webhook.port))?;
    match tls {
        Some(tls) => {
            let name = ServerName::try_from(webhook.host.clone())
                .map_err(|e| format!("server name {:?}: {e}", webhook.host))?;
            let stream = tls
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS with {}: {e}", webhook.host))?;
            exchange(webhook, stream, body).await
        }
        None => exchange(webhook, tcp, body).await,
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    webhook: &Webhook,
    stream: S,
    body: String,
) -> Result<(), String> {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let conn = tokio::spawn(conn);
    let path = webhook
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let authority = webhook
        .uri
        .authority()
        .map_or_else(|| webhook.host.clone(), |a| a.as_str().to_owned());
    let request = hyper::Request::post(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(
            hyper::header::USER_AGENT,
            concat!("heartbeat-server/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("building the request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("HTTP: {e}"));
    conn.abort();
    let status = response?.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("answered {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls() {
        let w: Webhook = "http://127.0.0.1:8080/alert?x=1".parse().unwrap();
        assert_eq!((w.host.as_str(), w.port, w.tls), ("127.0.0.1", 8080, false));
        let w: Webhook = "https://hooks.example.net/T/B".parse().unwrap();
        assert_eq!(
            (w.host.as_str(), w.port, w.tls),
            ("hooks.example.net", 443, true)
        );
        let w: Webhook = "http://[::1]/".parse().unwrap();
        assert_eq!((w.host.as_str(), w.port), ("::1", 80));
        for bad in ["ftp://x/", "localhost:80", "http://", "not a url"] {
            assert!(bad.parse::<Webhook>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_environment_is_the_json_fields() {
        let json = serde_json::json!({
            "event": "transition", "client": "web-01", "from": "unknown", "to": "down",
            "since_last_ms": null, "suspicion": 0.0, "time": 1_700_000_000.25,
            "detector": "phi", "peer": null,
        });
        let alert = Alert::new(&json);
        let env: std::collections::BTreeMap<&str, &str> = alert
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(env["HEARTBEAT_CLIENT"], "web-01");
        assert_eq!(env["HEARTBEAT_FROM"], "unknown");
        assert_eq!(env["HEARTBEAT_SINCE_LAST_MS"], "");
        assert_eq!(env["HEARTBEAT_SUSPICION"], "0.0");
        assert_eq!(env["HEARTBEAT_TIME"], "1700000000.25");
        assert_eq!(env["HEARTBEAT_EVENT"], "transition");
        assert_eq!(env.len(), 9);
        assert_eq!(alert.what, "web-01 unknown->down");
    }
}
