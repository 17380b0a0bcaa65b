//! The HTTP endpoint of `--metrics-addr`: `GET /metrics` (the Prometheus text exposition, see
//! [`metrics`]) and `GET /clients` (the live per-client report as JSON, the fields of the
//! `--json` summary). Anything else is 404; a method other than GET or HEAD, 405.
//!
//! It runs on a thread of its own with its own small runtime, so parsing requests, encoding
//! ten thousand clients' series and writing them out never runs on the monitor's loop: the
//! loop only copies a snapshot out when asked ([`ServerControl::inspect`], bounded and timed
//! out; a server that does not answer in time gets a 503, not a stuck scrape). The report
//! behind `/clients` costs more per client (percentiles), so it is taken a page of clients
//! (`REPORT_PAGE`) at a time, the loop going on with its work between pages: each client's
//! row is consistent, the rows are a few milliseconds apart.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;

use heartbeat_core::{ClientSummary, Report};

use super::AppCounters;
use super::metrics::{self, Snapshot};
use crate::ServerControl;

/// Clients per request to the server task while building `/clients`.
const REPORT_PAGE: usize = 256;

/// How long a request waits for the server task's answer before it gets a 503.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// HTTP connections served at once; one more is closed at once (Prometheus uses one).
const MAX_CONNECTIONS: usize = 16;

/// How long a connection may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds `addr` now (so a bad address or a port in use is an error at start) and serves the
/// endpoint on a new thread, asking the server task through `control`. Returns the bound
/// address (port 0 picks one). `counters` are the application's, read at each scrape.
pub fn start(
    addr: SocketAddr,
    control: ServerControl,
    counters: AppCounters,
) -> io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || runtime.block_on(serve(listener, control, counters)))?;
    Ok(bound)
}

async fn serve(listener: std::net::TcpListener, control: ServerControl, counters: AppCounters) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("metrics endpoint: {e}");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!("metrics endpoint: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!("metrics endpoint: {MAX_CONNECTIONS} connections open; closing {peer}");
            continue;
        };
        let (control, counters) = (control.clone(), counters.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                respond(req, control.clone(), counters.clone())
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
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
    control: ServerControl,
    counters: AppCounters,
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
        "/metrics" => match control.inspect(ANSWER_TIMEOUT, Snapshot::of).await {
            Ok(mut snapshot) => {
                snapshot.app = counters.counts();
                let mut text = String::new();
                match metrics::encode(snapshot, &mut text) {
                    Ok(()) => reply(StatusCode::OK, metrics::CONTENT_TYPE, text),
                    Err(_) => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", ""),
                }
            }
            Err(e) => unavailable(e),
        },
        "/clients" => match report(&control).await {
            // Straight from the report's derived serialisation, without the intermediate
            // `serde_json::Value` of `Report::to_json` (ten times the work at 10,000 clients);
            // the same fields, in declaration order.
            Ok(report) => match serde_json::to_string(&report) {
                Ok(json) => reply(StatusCode::OK, "application/json", json + "\n"),
                Err(_) => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", ""),
            },
            Err(e) => unavailable(e),
        },
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics or /clients\n",
        ),
    };
    if head {
        *response.body_mut() = Full::new(Bytes::new());
    }
    Ok(response)
}

/// The report of every client, [`REPORT_PAGE`] clients per request to the server task.
async fn report(control: &ServerControl) -> Result<Report, crate::ControlError> {
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

fn unavailable(e: crate::ControlError) -> Response<Full<Bytes>> {
    reply(
        StatusCode::SERVICE_UNAVAILABLE,
        "text/plain",
        format!("{e}\n"),
    )
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

    use super::*;
    use crate::driver::{Control, DriverStats};

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
}
