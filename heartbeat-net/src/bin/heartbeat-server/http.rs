//! The HTTP endpoint of `--metrics-addr`: `GET /metrics` (the Prometheus text exposition, see
//! [`metrics`]), `GET /clients` (the live per-client report as JSON, the fields of the
//! `--json` summary), and the status page, `GET /` and `GET /status.json` (see
//! [`statuspage`]). Anything else is 404; a method other than GET or HEAD, 405.
//!
//! It runs on a thread of its own with its own small runtime, so parsing requests, encoding
//! ten thousand clients' series and writing them out never runs on the monitor's loop: the
//! loop only copies a snapshot out when asked ([`ServerControl::inspect`], bounded and timed
//! out; a server that does not answer in time gets a 503, not a stuck scrape). The report
//! behind `/clients` costs more per client (percentiles), so it is taken a page of clients
//! (`REPORT_PAGE`) at a time, the loop going on with its work between pages: each client's
//! row is consistent, the rows are a few milliseconds apart.
//!
//! # A listener is a listener
//! The endpoint is held to the rule of the heartbeat port (the same code, `ConnectionLimits`
//! in `limits.rs`): at most `MAX_CONNECTIONS` connections, a quarter of them from one address, each
//! given `HEADER_TIMEOUT` (2 s) to send a request's headers (a kept-alive connection too,
//! between requests). A connection beyond a limit is answered `503 Service Unavailable` with
//! `Retry-After` once its request is read (`MAX_REFUSING` such answers at once; beyond them it
//! is closed at once), and the refusal is logged through the [`LogSummary`]. So a host that
//! opens idle connections in a loop holds its own share and no more: a scraper from another
//! address is served.
//!
//! # One encoding for many scrapers
//! The encoded exposition is kept and served again for `CACHE_AGE` (1 s) unless a liveness
//! changed or a client came or went ([`Changes`]), and at least `CACHE_MIN_AGE` (100 ms)
//! whatever changed. Scrapes that come while it is being encoded wait for that encoding, so
//! twenty scrapers in a loop cost the monitor's loop about one snapshot a second, not twenty
//! at a time. Counters may then be up to a second old, which a Prometheus rate does not
//! notice. `/clients` is not kept: it is the report now.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::server::conn::http1;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tracing::Level;

use heartbeat_core::server::Event;
use heartbeat_core::{ClientSummary, Report};

use super::AppCounters;
use super::metrics::{self, Snapshot};
use super::statuspage::{self, SharedHistory};
use heartbeat_net::driver::sleep_until_opt;
use heartbeat_net::limits::{ConnectionLimits, Refusal, default_share};
use heartbeat_net::logsummary::PeerLine;
use heartbeat_net::{LogSummary, ServerControl, mono_now};

/// Clients per request to the server task while building `/clients`.
const REPORT_PAGE: usize = 256;

/// How long a request waits for the server task's answer before it gets a 503.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// HTTP connections served at once, from every address together (a few kilobytes each, an
/// answer being written shares the kept exposition; a Prometheus server uses one). One address
/// may hold a quarter of them ([`default_share`], the heartbeat port's rule): 32.
const MAX_CONNECTIONS: usize = 128;

/// Connections beyond a limit being answered 503 at once (each for at most
/// [`HEADER_TIMEOUT`]); one more is closed without an answer.
const MAX_REFUSING: usize = 64;

/// How long a connection may take to send a request's headers: from its accept, and on a
/// kept-alive connection from the end of the previous answer. An idle connection is closed
/// then.
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// The `Retry-After` of a 503, in seconds: a slot frees within [`HEADER_TIMEOUT`] of an idle
/// connection's accept.
const RETRY_AFTER_SECS: &str = "2";

/// How long an encoded exposition is served again while nothing changed ([`Changes`]).
const CACHE_AGE: Duration = Duration::from_secs(1);

/// How long an encoded exposition is served again whatever changed: at most ten encodings a
/// second, however many scrapers and however many changes.
const CACHE_MIN_AGE: Duration = Duration::from_millis(100);

/// Binds `addr` now (so a bad address or a port in use is an error at start) and serves the
/// endpoint on a new thread, asking the server task through `control`. Returns the bound
/// address (port 0 picks one). `counters` are the application's, read at each scrape;
/// `changes` tells when a kept exposition is out of date; refusals are logged through `log`;
/// `history` is what the status page draws.
pub(crate) fn start(
    addr: SocketAddr,
    control: ServerControl,
    counters: AppCounters,
    changes: Changes,
    log: LogSummary,
    history: SharedHistory,
) -> io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let endpoint = Arc::new(Endpoint {
        control,
        counters,
        changes,
        log,
        limits: Mutex::new(ConnectionLimits::new(
            MAX_CONNECTIONS,
            default_share(MAX_CONNECTIONS),
        )),
        refusing: Arc::new(Semaphore::new(MAX_REFUSING)),
        exposition: tokio::sync::Mutex::new(None),
        history,
    });
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || runtime.block_on(serve(listener, endpoint)))?;
    Ok(bound)
}

/// A count of the events that change what `/metrics` shows beyond its counters: a liveness
/// (`transition`), or the set of clients (`connected`, which may be a new client; `forgotten`;
/// `evicted`). A kept exposition is not served again once it moved (see the module docs).
/// Clones share the count.
#[derive(Clone, Debug, Default)]
pub(crate) struct Changes(Arc<AtomicU64>);

impl Changes {
    /// Counts `e` if it is one of the changes.
    pub(crate) fn note(&self, e: &Event) {
        if matches!(
            e,
            Event::Connected { .. }
                | Event::Evicted { .. }
                | Event::Forgotten { .. }
                | Event::Transition { .. }
        ) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn current(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// What every connection task of the endpoint shares.
struct Endpoint {
    control: ServerControl,
    counters: AppCounters,
    changes: Changes,
    log: LogSummary,
    /// Connections served, keyed by their number on this endpoint.
    limits: Mutex<ConnectionLimits<u64>>,
    /// Permits for answering 503.
    refusing: Arc<Semaphore>,
    /// The last encoded exposition; locked while one is being made, so concurrent scrapes
    /// wait for it.
    exposition: tokio::sync::Mutex<Option<Encoded>>,
    /// The clients' last hour, for the status page.
    history: SharedHistory,
}

/// An encoded exposition and what it was made from.
struct Encoded {
    /// When its snapshot was asked for.
    at: Instant,
    /// [`Changes`] then.
    changes: u64,
    text: Bytes,
}

impl Encoded {
    /// Whether it may be served again at `now`, [`Changes`] being at `changes`.
    fn is_fresh(&self, now: Instant, changes: u64) -> bool {
        let age = now.saturating_duration_since(self.at);
        age < CACHE_MIN_AGE || (age < CACHE_AGE && changes == self.changes)
    }
}

/// A connection's place under [`MAX_CONNECTIONS`]; given back when dropped.
struct Slot {
    endpoint: Arc<Endpoint>,
    id: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.endpoint.lock_limits().closed(self.id);
    }
}

impl Endpoint {
    fn lock_limits(&self) -> std::sync::MutexGuard<'_, ConnectionLimits<u64>> {
        // Only counts are behind the lock: a panic while holding it leaves them usable.
        self.limits.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for connection `id` from `peer`, or why there is none.
    fn admit(self: &Arc<Self>, id: u64, peer: SocketAddr) -> Result<Slot, Refusal> {
        let mut limits = self.lock_limits();
        limits.check(peer)?;
        limits.opened(id, peer);
        Ok(Slot {
            endpoint: Arc::clone(self),
            id,
        })
    }

    /// Answers `stream` 503 with `Retry-After` once its request is read (or closes it at once
    /// when [`MAX_REFUSING`] are being answered), and logs it through the summary.
    fn refuse(&self, stream: TcpStream, peer: SocketAddr, refusal: Refusal) {
        let limit = match refusal {
            Refusal::Total => MAX_CONNECTIONS,
            Refusal::PerIp => default_share(MAX_CONNECTIONS),
        };
        let what = match refusal {
            Refusal::Total => "connections",
            Refusal::PerIp => "connections from one address",
        };
        let answer = match Arc::clone(&self.refusing).try_acquire_owned() {
            Ok(permit) => {
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(|_req| async { Ok::<_, Infallible>(busy()) });
                    let served = builder(false)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                    if let Err(e) = served {
                        tracing::debug!("metrics endpoint: refused connection from {peer}: {e}");
                    }
                    drop(permit);
                });
                "answering 503"
            }
            Err(_) => {
                drop(stream);
                "closing it without an answer (too many refusals at once)"
            }
        };
        self.log.peer(
            mono_now(),
            Level::WARN,
            PeerLine::HttpRefused,
            format_args!(
                "metrics endpoint: {limit} {what} open (the most it serves); {answer} to {peer}"
            ),
        );
    }

    /// The exposition, encoded now or kept from a recent scrape (see the module docs).
    async fn metrics(&self) -> Response<Full<Bytes>> {
        let mut kept = self.exposition.lock().await;
        let at = mono_now();
        let changes = self.changes.current();
        if let Some(e) = kept.as_ref().filter(|e| e.is_fresh(at, changes)) {
            return reply(StatusCode::OK, metrics::CONTENT_TYPE, e.text.clone());
        }
        let mut snapshot = match self.control.inspect(ANSWER_TIMEOUT, Snapshot::of).await {
            Ok(s) => s,
            Err(e) => return unavailable(e),
        };
        snapshot.app = self.counters.counts();
        self.counters.silences.mark(&mut snapshot.clients);
        let mut text = String::new();
        if metrics::encode(snapshot, &mut text).is_err() {
            return reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", "");
        }
        let text = Bytes::from(text);
        *kept = Some(Encoded {
            at,
            changes,
            text: text.clone(),
        });
        reply(StatusCode::OK, metrics::CONTENT_TYPE, text)
    }
}

/// The HTTP/1 connection settings: the header timeout, and keep-alive or not.
fn builder(keep_alive: bool) -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(keep_alive);
    b
}

async fn serve(listener: std::net::TcpListener, endpoint: Arc<Endpoint>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("metrics endpoint: {e}"); // not caused by a peer: at start
            return;
        }
    };
    let mut next_id = 0u64;
    loop {
        // Refusals are logged here, so the summary of those left out is due from here too
        // (the server's loop, which also flushes it, may be asleep).
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = sleep_until_opt(endpoint.log.next_flush()) => {
                endpoint.log.flush(mono_now());
                continue;
            }
        };
        let (stream, peer) = match accepted {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!("metrics endpoint: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        next_id += 1;
        let slot = match endpoint.admit(next_id, peer) {
            Ok(slot) => slot,
            Err(refusal) => {
                endpoint.refuse(stream, peer, refusal);
                continue;
            }
        };
        let this = Arc::clone(&endpoint);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let this = Arc::clone(&this);
                async move { respond(req, &this).await }
            });
            let served = builder(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!("metrics endpoint: connection from {peer}: {e}");
            }
            drop(slot);
        });
    }
}

async fn respond(
    req: Request<Incoming>,
    endpoint: &Endpoint,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let head = req.method() == Method::HEAD;
    if req.method() != Method::GET && !head {
        let mut response = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET or HEAD\n",
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Ok(response);
    }
    let mut response = match req.uri().path() {
        "/metrics" => endpoint.metrics().await,
        "/clients" => match report(&endpoint.control).await {
            // Straight from the report's derived serialisation, without the intermediate
            // `serde_json::Value` of `Report::to_json` (ten times the work at 10,000 clients);
            // the same fields, in declaration order.
            Ok(report) => match endpoint.counters.silences.report_json(&report) {
                Ok(json) => reply(StatusCode::OK, "application/json", json + "\n"),
                Err(_) => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", ""),
            },
            Err(e) => unavailable(e),
        },
        "/" => reply(StatusCode::OK, "text/html; charset=utf-8", statuspage::HTML),
        "/status.json" => {
            let query = statuspage::Query::parse(req.uri().query());
            match statuspage::status(
                &endpoint.control,
                &endpoint.history,
                &endpoint.counters.silences,
                query,
                ANSWER_TIMEOUT,
            )
            .await
            {
                Ok(status) => match serde_json::to_string(&status) {
                    Ok(json) => reply(StatusCode::OK, "application/json", json + "\n"),
                    Err(_) => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", ""),
                },
                Err(e) => unavailable(e),
            }
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /, /metrics or /clients\n",
        ),
    };
    if head {
        *response.body_mut() = Full::new(Bytes::new());
    }
    Ok(response)
}

/// The report of every client, [`REPORT_PAGE`] clients per request to the server task.
async fn report(control: &ServerControl) -> Result<Report, heartbeat_net::ControlError> {
    let mut clients: Vec<ClientSummary> = Vec::new();
    loop {
        let after = clients.last().map(|c| c.client.clone());
        let page = control
            .inspect(ANSWER_TIMEOUT, move |s, _, _| {
                let page = s.clients_after(after.as_ref()).take(REPORT_PAGE);
                page.map(|c| c.summary()).collect::<Vec<_>>()
            })
            .await?;
        let last = page.len() < REPORT_PAGE;
        clients.extend(page);
        if last {
            return Ok(Report { clients });
        }
    }
}

fn unavailable(e: heartbeat_net::ControlError) -> Response<Full<Bytes>> {
    let mut response = reply(
        StatusCode::SERVICE_UNAVAILABLE,
        "text/plain",
        format!("{e}\n"),
    );
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
    response
}

/// The answer to a connection beyond a limit.
fn busy() -> Response<Full<Bytes>> {
    let mut response = reply(
        StatusCode::SERVICE_UNAVAILABLE,
        "text/plain",
        "too many connections to the metrics endpoint; retry later\n",
    );
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
    response
}

fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use heartbeat_core::config::ServerConfig;
    use heartbeat_core::{Now, Server, UnixTime};

    use http_body_util::BodyExt as _;

    use super::*;
    use heartbeat_net::driver::{Control, DriverStats};

    /// `/clients`, taken a page at a time, is the report the server would print: every client
    /// once, in order, across page boundaries (two full pages and one more).
    #[tokio::test]
    async fn the_paged_report_is_the_whole_report() {
        #[allow(clippy::disallowed_methods)] // an arbitrary origin; only offsets matter
        let now = Now {
            mono: std::time::Instant::now(),
            unix: UnixTime::from_duration(Duration::from_secs(1_700_000_000)),
        };
        let mut server = Server::new(Arc::new(ServerConfig::default()));
        for i in 0..2 * REPORT_PAGE + 1 {
            let peer = SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 4000));
            let conn = server.accept(now, peer);
            server.handle_input(now, conn, format!("HELLO 1 c{i} 1000\n").as_bytes());
        }
        // The server task's part (the server is not `Send`: on this thread), answering every
        // request until the test ends.
        let server = std::rc::Rc::new(server);
        let requests = std::rc::Rc::new(std::cell::Cell::new(0));
        let (control, mut rx) = ServerControl::channel();
        let local = tokio::task::LocalSet::new();
        local.spawn_local({
            let (server, requests) = (server.clone(), requests.clone());
            async move {
                loop {
                    if let Control::Inspect(f) = rx.recv().await {
                        f(&server, &DriverStats::default(), now);
                        requests.set(requests.get() + 1);
                    }
                }
            }
        });
        let paged = local.run_until(report(&control)).await.unwrap();
        assert_eq!(requests.get(), 3);
        assert_eq!(paged.clients.len(), 2 * REPORT_PAGE + 1);
        assert_eq!(paged, server.report());
    }

    /// Twenty scrapes at once wait for one encoding; the exposition is served again for
    /// `CACHE_AGE` while nothing changed, and for `CACHE_MIN_AGE` whatever changed.
    #[tokio::test(start_paused = true)]
    async fn many_scrapes_cost_one_snapshot() {
        let now = Now {
            mono: mono_now(),
            unix: UnixTime::from_duration(Duration::from_secs(1_700_000_000)),
        };
        let mut server = Server::new(Arc::new(ServerConfig::default()));
        let conn = server.accept(now, SocketAddr::from(([10, 0, 0, 1], 4000)));
        server.handle_input(now, conn, b"HELLO 1 c 1000\n");
        let snapshots = std::rc::Rc::new(std::cell::Cell::new(0));
        let (control, mut rx) = ServerControl::channel();
        let sink = || {
            super::super::output::Stream::spawn("test", 1, io::sink(), |_, _| Vec::new()).unwrap()
        };
        let changes = Changes::default();
        let endpoint = Arc::new(Endpoint {
            control,
            counters: AppCounters {
                hooks: None,
                output: super::super::Output {
                    stderr: sink(),
                    stdout: sink(),
                },
                silences: super::super::Silences::default(),
            },
            changes: changes.clone(),
            log: LogSummary::default(),
            limits: Mutex::new(ConnectionLimits::new(1, 1)),
            refusing: Arc::new(Semaphore::new(1)),
            exposition: tokio::sync::Mutex::new(None),
            history: SharedHistory::default(),
        });
        let local = tokio::task::LocalSet::new();
        local.spawn_local({
            let snapshots = snapshots.clone();
            async move {
                loop {
                    if let Control::Inspect(f) = rx.recv().await {
                        f(&server, &DriverStats::default(), now);
                        snapshots.set(snapshots.get() + 1);
                    }
                }
            }
        });
        local
            .run_until(async {
                let scrape = || {
                    let endpoint = Arc::clone(&endpoint);
                    tokio::task::spawn_local(async move {
                        let response = endpoint.metrics().await;
                        assert_eq!(response.status(), StatusCode::OK);
                        response.into_body().collect().await.unwrap().to_bytes()
                    })
                };
                let at_once: Vec<_> = (0..20).map(|_| scrape()).collect();
                let mut bodies = Vec::new();
                for s in at_once {
                    bodies.push(s.await.unwrap());
                }
                assert_eq!(snapshots.get(), 1);
                assert!(bodies.iter().all(|b| *b == bodies[0]));
                assert!(String::from_utf8_lossy(&bodies[0]).contains("client=\"c\""));
                let ms = Duration::from_millis;
                tokio::time::advance(CACHE_AGE - ms(1)).await;
                scrape().await.unwrap();
                assert_eq!(snapshots.get(), 1, "nothing changed: kept");
                tokio::time::advance(ms(1)).await;
                scrape().await.unwrap();
                assert_eq!(snapshots.get(), 2, "aged out");
                changes.note(&Event::Forgotten {
                    client: heartbeat_core::ClientKey::Id(
                        heartbeat_core::ClientId::new("gone").unwrap(),
                    ),
                    gone_for: Duration::from_secs(1),
                    requested: false,
                });
                tokio::time::advance(CACHE_MIN_AGE - ms(1)).await;
                scrape().await.unwrap();
                assert_eq!(
                    snapshots.get(),
                    2,
                    "changed, but younger than the least age"
                );
                tokio::time::advance(ms(1)).await;
                scrape().await.unwrap();
                assert_eq!(snapshots.get(), 3, "changed");
            })
            .await;
    }
}
